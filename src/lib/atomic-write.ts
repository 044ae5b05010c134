/**
 * Crash-safe file replacement (ARCHITECTURE.md principle 6): write a temp file in the same
 * directory, optionally fsync it, rename it over the target, optionally fsync the directory.
 * A crash at any point leaves either the old file or the new one, never a torn mix.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** A numeric owner for new files (see datastore/file-owner.ts for who decides it). */
export interface FileOwner {
  uid: number;
  gid: number;
}

export interface AtomicWriteOptions {
  /** fsync the file before the rename (default true). */
  fsync?: boolean;
  /** fsync the directory after the rename, so the rename itself is durable (default false). */
  fsyncDir?: boolean;
  /** File mode of the new file (default 0o644). */
  mode?: number;
  /**
   * The temp name; default `<name>.tmp_XXXXXX` beside the target, the pattern PBS uses so its
   * cleanup (and ours) recognise leftovers.
   */
  tempPath?: string;
  /**
   * Give the temp file this owner (fchown) before anything is written or renamed, so the target
   * never exists, even for a moment, with the wrong owner. Default: whoever runs the process.
   */
  owner?: FileOwner;
}

export function tempPathFor(path: string): string {
  const suffix = randomBytes(4).toString('hex').slice(0, 6);
  return join(dirname(path), `${basename(path)}.tmp_${suffix}`);
}

export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const temp = options.tempPath ?? tempPathFor(path);
  const handle = await open(temp, 'wx', options.mode ?? 0o644);
  try {
    try {
      if (options.owner !== undefined) await handle.chown(options.owner.uid, options.owner.gid);
      await handle.writeFile(data);
      if (options.fsync ?? true) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  if (options.fsyncDir) await fsyncDirectory(dirname(path));
}

export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
