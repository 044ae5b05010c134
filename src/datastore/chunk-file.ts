/**
 * One chunk file at a time, with blocking calls, and the errors that tell what is wrong with it.
 * ChunkStore.loadChunk reads through the thread pool; readChunkFileSync reads for a worker thread
 * that decodes the chunk right after (a restore from a local datastore), so the main thread never
 * touches the file. Both refuse the same things with the same errors. writeChunkTempFileSync is
 * the first half of an insert (§2.3 step 3: the temporary file), which ChunkStore runs itself
 * and a backup's worker thread runs for a local store, leaving the rename, and every rule about
 * what is already there, to ChunkStore.insertChunkFile.
 */
import {
  closeSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  constants as fsConstants,
  openSync,
  readSync,
  rmSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MAX_ENCODED_CHUNK_SIZE } from '../format/magic.js';
import { tempPathFor, type FileOwner } from '../lib/atomic-write.js';
import { allocUninitialized } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';

export const CHUNK_OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW;

/** A chunk's temporary file: created new, never through a symlink. */
export const CHUNK_TEMP_FLAGS =
  fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/** The mode of every chunk file, whatever the umask (as PBS sets it). */
export const CHUNK_FILE_MODE = 0o644;

/**
 * Where a thread other than the store's may write new chunks' temporary files: the store's
 * `.chunks` directory and the owner its files get (undefined: whoever runs Burrow).
 */
export interface ChunkFileTarget {
  chunkDir: string;
  owner?: FileOwner | undefined;
}

/** A chunk's temporary file as written by writeChunkTempFileSync, waiting to be put in place. */
export interface WrittenChunk {
  /** Path of the temporary file, beside the chunk's final name. */
  temp: string;
  /** Bytes of the encoded chunk (the file's size). */
  size: number;
}

/** `<chunkDir>/<first four hex digits>/<hex>`: a chunk's path (pbs-formats §1). */
export function chunkPathIn(chunkDir: string, digestHex: string): string {
  return join(chunkDir, digestHex.slice(0, 4), digestHex);
}

/** Why a chunk's temporary file could not be created: a missing prefix directory is damage. */
export function chunkTempError(error: unknown, path: string, temp: string): BurrowError {
  const code = errnoCode(error);
  const dir = dirname(path);
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return invalid(
      `cannot insert chunk: prefix directory ${dir} is missing or not a directory`,
      dir,
      { errno: code },
      error,
    );
  }
  return fsError(error, 'create temporary chunk file', temp);
}

/**
 * Writes `blob` (one buffer, or pieces to write one after the other: encodeBlobPieces) to a new
 * `<hex>.tmp_XXXXXX` beside the chunk path `path`, owned by `owner` (first, so the chunk never
 * appears under its name with another owner; PBS 4 chowns the temp file) and with mode 0644, and
 * returns its path. No fsync: callers at sync level `file` sync it. On failure the temporary
 * file is removed and the error names the chunk.
 */
export function writeChunkTempFileSync(
  path: string,
  blob: Uint8Array | readonly Uint8Array[],
  owner: FileOwner | undefined,
): string {
  let fd: number | undefined;
  let temp = '';
  for (let attempt = 0; fd === undefined; attempt++) {
    temp = tempPathFor(path);
    try {
      fd = openSync(temp, CHUNK_TEMP_FLAGS, CHUNK_FILE_MODE);
    } catch (error) {
      if (errnoCode(error) === 'EEXIST' && attempt < 10) continue;
      throw chunkTempError(error, path, temp);
    }
  }
  try {
    try {
      if (owner !== undefined) fchownSync(fd, owner.uid, owner.gid);
      fchmodSync(fd, CHUNK_FILE_MODE);
      for (const piece of blob instanceof Uint8Array ? [blob] : blob) {
        let done = 0;
        while (done < piece.byteLength) done += writeSync(fd, piece, done, piece.byteLength - done);
      }
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    rmSync(temp, { force: true });
    throw fsError(error, 'insert chunk', path, { temp });
  }
  return temp;
}

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

/**
 * The raw blob bytes of the chunk file at `path` (not decoded or checked), read blocking. With
 * `buffer`, into the memory it gives for the file's size (a scratch buffer the caller reuses; the
 * result is then a view of it), else into fresh memory. Neither is zero-filled first: the read
 * overwrites it, and of a file that shrank meanwhile only what was read is returned.
 */
export function readChunkFileSync(path: string, buffer?: (size: number) => Uint8Array): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, CHUNK_OPEN_FLAGS);
  } catch (error) {
    throw chunkOpenError(error, path);
  }
  try {
    const st = fstatSync(fd);
    checkChunkStat(st, path);
    const out =
      buffer === undefined ? allocUninitialized(st.size) : buffer(st.size).subarray(0, st.size);
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
