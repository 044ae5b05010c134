/**
 * Small files the server creates once and never replaces: the ticket and CSRF keys, the initial
 * root password, a new certificate pair. NewFileWriter makes them crash-safe (temp file, fsync,
 * link(2), which never replaces); this is its one-shot form, so each of those writers does not
 * carry its own copy of the temp-file dance.
 */
import { NewFileWriter } from '../lib/new-file-writer.js';

/**
 * Write `data` to `path` with `mode`, complete or not at all. ALREADY_EXISTS when `path` exists
 * (also when another process created it a moment earlier): callers that race on purpose read
 * the winner's file then.
 */
export async function writeNewFile(
  path: string,
  data: string | Uint8Array,
  mode: number,
): Promise<void> {
  const writer = await NewFileWriter.create(path, mode);
  try {
    await writer.write(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    await writer.commit();
  } finally {
    // After a commit this does nothing; after a failure it removes the temp file.
    await writer.abort();
  }
}
