/**
 * Reading one chunk file, and the errors that tell what is wrong with it. ChunkStore.loadChunk
 * reads through the thread pool; readChunkFileSync reads with blocking calls, for a worker
 * thread that decodes the chunk right after (a restore from a local datastore), so the main
 * thread never touches the file. Both refuse the same things with the same errors.
 */
import {
  closeSync,
  fstatSync,
  constants as fsConstants,
  openSync,
  readSync,
  type Stats,
} from 'node:fs';
import { basename } from 'node:path';
import { MAX_ENCODED_CHUNK_SIZE } from '../format/magic.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';

export const CHUNK_OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW;

export function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** An I/O failure as IO_ERROR naming the action and the path (BurrowErrors pass through). */
export function fsError(
  error: unknown,
  action: string,
  path: string,
  details: Record<string, unknown> = {},
): BurrowError {
  if (isBurrowError(error)) return error;
  const code = errnoCode(error);
  const reason = code ?? (error instanceof Error ? error.message : String(error));
  return new BurrowError('IO_ERROR', `cannot ${action} ${path}: ${reason}`, {
    details: { path, errno: code, ...details },
    cause: error,
  });
}

/** Damage to the store's layout: DATASTORE_INVALID naming the path. */
export function invalid(
  message: string,
  path: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): BurrowError {
  return new BurrowError('DATASTORE_INVALID', message, { details: { path, ...details }, cause });
}

export function describeType(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'a special file';
}

/** Why a chunk file could not be opened: missing (NOT_FOUND), a symlink, or an I/O error. */
export function chunkOpenError(error: unknown, path: string): BurrowError {
  const code = errnoCode(error);
  if (code === 'ENOENT') {
    const hex = basename(path);
    return new BurrowError('NOT_FOUND', `chunk ${hex} not found: ${path}`, {
      details: { path, digest: hex },
      cause: error,
    });
  }
  if (code === 'ELOOP') return invalid(`chunk path ${path} is a symbolic link`, path, {}, error);
  return fsError(error, 'open chunk', path);
}

/** Refuses what an open chunk file must not be: not a regular file, or too big for a chunk. */
export function checkChunkStat(st: Stats, path: string): void {
  if (!st.isFile())
    throw invalid(`chunk path ${path} is ${describeType(st)}, not a regular file`, path);
  if (st.size > MAX_ENCODED_CHUNK_SIZE) {
    throw new BurrowError(
      'BLOB_TOO_LARGE',
      `chunk file ${path} is ${st.size} bytes, more than the ${MAX_ENCODED_CHUNK_SIZE}-byte limit of an encoded chunk`,
      { details: { path, size: st.size, limit: MAX_ENCODED_CHUNK_SIZE } },
    );
  }
}

/** The raw blob bytes of the chunk file at `path` (not decoded or checked), read blocking. */
export function readChunkFileSync(path: string): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, CHUNK_OPEN_FLAGS);
  } catch (error) {
    throw chunkOpenError(error, path);
  }
  try {
    const st = fstatSync(fd);
    checkChunkStat(st, path);
    const out = new Uint8Array(st.size);
    let got = 0;
    while (got < out.byteLength) {
      const n = readSync(fd, out, got, out.byteLength - got, got);
      if (n === 0) break; // shrank under us; the blob decoder reports the truncation
      got += n;
    }
    return got === out.byteLength ? out : out.subarray(0, got);
  } catch (error) {
    throw fsError(error, 'read chunk', path);
  } finally {
    closeSync(fd);
  }
}
