/**
 * Reading a disk image (a regular file or a block device) as the fixed 4 MiB chunks of a `.fidx`
 * archive (pbs-protocol §9.2).
 *
 * - Size: fstat for a regular file; for a block device (fstat says 0) the kernel's
 *   BLKGETSIZE64 through the native addon, else sysfs (`/sys/dev/block/<major>:<minor>/size`,
 *   in 512-byte sectors whatever the device's block size).
 * - Sparse files: holes are found with lseek SEEK_DATA/SEEK_HOLE and never read. A chunk that lies
 *   wholly in a hole is a view of one shared zero buffer, which the upload pipeline recognises as
 *   the all-zero chunk without hashing it; a chunk that is partly hole is read only where there is
 *   data. Without the addon, or on a file system that does not report holes, everything is read.
 * - The image must not change size while it is read: a short read is an IO_ERROR naming the
 *   offset, since a truncated image would be a wrong backup.
 */
import { constants as fsConstants } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { FIXED_CHUNK_SIZE } from '../format/magic.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { blockDeviceSize, seekData, seekHole, sparseSeekAvailable } from '../lib/native-fs.js';
import { splitDeviceNumber } from '../pxar/fs-metadata.js';

export type ImageKind = 'file' | 'block-device';

/** An open image; close() releases it. */
export interface ImageFile {
  readonly path: string;
  readonly kind: ImageKind;
  readonly size: number;
  readonly handle: FileHandle;
  close(): Promise<void>;
}

const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);
const errnoOf = (error: unknown): string | undefined =>
  (error as NodeJS.ErrnoException | undefined)?.code;

function ioError(what: string, path: string, error: unknown, details = {}): BurrowError {
  return new BurrowError('IO_ERROR', `${what} ${path}: ${messageOf(error)}`, {
    details: { path, errnoName: errnoOf(error), ...details },
    cause: error,
  });
}

/** Opens `path` (a regular file or a block device) read-only and determines its size. */
export async function openImage(path: string): Promise<ImageFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOCTTY);
  } catch (error) {
    const code = errnoOf(error);
    throw new BurrowError(
      code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
      `cannot open image ${path}: ${messageOf(error)}`,
      { details: { path, errnoName: code }, cause: error },
    );
  }
  try {
    const stats = await handle.stat({ bigint: true });
    let kind: ImageKind;
    let size: number;
    if (stats.isFile()) {
      kind = 'file';
      size = Number(stats.size);
    } else if (stats.isBlockDevice()) {
      kind = 'block-device';
      size = await blockSize(handle, stats, path);
    } else {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${path} is neither a regular file nor a block device, so it cannot be backed up as an image`,
        { details: { path } },
      );
    }
    if (!Number.isSafeInteger(size))
      throw new BurrowError('INVALID_ARGUMENT', `image ${path} is too large (${size} bytes)`, {
        details: { path, size },
      });
    return {
      path,
      kind,
      size,
      handle,
      close: () => handle.close(),
    };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

async function blockSize(handle: FileHandle, stats: BigIntStats, path: string): Promise<number> {
  if (sparseSeekAvailable()) {
    try {
      return blockDeviceSize(handle.fd);
    } catch (error) {
      if (!isBurrowError(error)) throw error;
      // Fall through to sysfs, which needs nothing but the device number.
    }
  }
  const { major, minor } = splitDeviceNumber(stats.rdev);
  const sysfs = `/sys/dev/block/${major}:${minor}/size`;
  let text: string;
  try {
    text = await readFile(sysfs, 'utf8');
  } catch (error) {
    throw ioError('cannot determine the size of block device', path, error, { sysfs });
  }
  const sectors = Number.parseInt(text.trim(), 10);
  if (!Number.isSafeInteger(sectors) || sectors < 0)
    throw new BurrowError('IO_ERROR', `cannot parse ${sysfs} (${JSON.stringify(text)})`, {
      details: { path, sysfs },
    });
  return sectors * 512;
}

export interface ImageChunkOptions {
  /** Default FIXED_CHUNK_SIZE (the server's fixed-index chunk size); other sizes are for tests. */
  chunkSize?: number;
  /** Skip holes with SEEK_DATA/SEEK_HOLE when available (default true). */
  sparse?: boolean;
  /** Called after each chunk with the image bytes covered so far and the bytes actually read. */
  onProgress?: (p: { position: number; bytesRead: number }) => void;
  signal?: AbortSignal;
}

/** Where data lies at or after an offset; undefined means "unknown, read everything". */
interface DataMap {
  /** [start, end) of the next data region at or after `offset`, or null when only a hole follows. */
  next(offset: number): { start: number; end: number } | null;
}

function sparseMap(handle: FileHandle, size: number): DataMap | undefined {
  const fd = handle.fd;
  const map: DataMap = {
    next(offset) {
      const start = seekData(fd, offset);
      if (start === undefined || start >= size) return null;
      const end = Math.min(seekHole(fd, start) ?? size, size);
      return { start, end: Math.max(end, start) };
    },
  };
  try {
    map.next(0);
    return map;
  } catch (error) {
    // EINVAL / EOPNOTSUPP: the file system (or device) does not report holes.
    if (isBurrowError(error) && error.code === 'IO_ERROR') return undefined;
    throw error;
  }
}

let zeroBuffer: Uint8Array | undefined;

/** A view of shared zeros: never the whole buffer, so the upload pipeline copies before moving it. */
function zeros(length: number): Uint8Array {
  if (zeroBuffer === undefined || zeroBuffer.byteLength <= length)
    zeroBuffer = new Uint8Array(Math.max(length, FIXED_CHUNK_SIZE) + 1);
  return zeroBuffer.subarray(0, length);
}

/**
 * The image in chunks of `chunkSize` (the last one shorter), in order. Data chunks are fresh
 * buffers the consumer may keep or move; hole chunks are shared read-only zero views.
 */
export async function* readImageChunks(
  image: ImageFile,
  options: ImageChunkOptions = {},
): AsyncGenerator<Uint8Array, void, undefined> {
  const chunkSize = options.chunkSize ?? FIXED_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1)
    throw new BurrowError('INVALID_ARGUMENT', `chunk size ${String(chunkSize)} is invalid`, {
      details: { chunkSize },
    });
  const { size, handle, path } = image;
  const map =
    options.sparse !== false && sparseSeekAvailable() ? sparseMap(handle, size) : undefined;
  let region: { start: number; end: number } | null | undefined;
  let bytesRead = 0;

  const read = async (buf: Uint8Array, at: number, from: number, to: number): Promise<void> => {
    let done = 0;
    while (from + done < to) {
      let got: number;
      try {
        ({ bytesRead: got } = await handle.read(buf, at + done, to - from - done, from + done));
      } catch (error) {
        throw ioError('cannot read image', path, error, { offset: from + done });
      }
      if (got === 0)
        throw new BurrowError(
          'IO_ERROR',
          `image ${path} ended at offset ${from + done}, before its size ${size}: it changed while it was read`,
          { details: { path, offset: from + done, expected: size } },
        );
      done += got;
    }
    bytesRead += to - from;
  };

  for (let start = 0; start < size; start += chunkSize) {
    if (options.signal?.aborted === true) {
      const reason: unknown = options.signal.reason;
      throw reason instanceof BurrowError
        ? reason
        : new BurrowError('TASK_ABORTED', `reading image ${path} aborted`, { cause: reason });
    }
    const end = Math.min(start + chunkSize, size);
    let chunk: Uint8Array;
    if (map === undefined) {
      chunk = Buffer.allocUnsafe(end - start);
      await read(chunk, 0, start, end);
    } else {
      let buf: Uint8Array | undefined;
      let at = start;
      while (at < end) {
        if (region === undefined || (region !== null && region.end <= at)) region = map.next(at);
        if (region === null || region.start >= end) break;
        const from = Math.max(region.start, at);
        const to = Math.min(region.end, end);
        // Zero-filled, so the hole parts of a partly sparse chunk need no writes.
        buf ??= Buffer.alloc(end - start);
        await read(buf, from - start, from, to);
        at = to;
      }
      chunk = buf ?? zeros(end - start);
    }
    options.onProgress?.({ position: end, bytesRead });
    yield chunk;
  }
  // A file that shrank after the last data region would otherwise pass as trailing zeros.
  if (image.kind === 'file') {
    let now: number;
    try {
      now = Number((await handle.stat({ bigint: true })).size);
    } catch (error) {
      throw ioError('cannot stat image', path, error);
    }
    if (now !== size)
      throw new BurrowError(
        'IO_ERROR',
        `image ${path} changed its size from ${size} to ${now} bytes while it was read`,
        { details: { path, offset: Math.min(now, size), expected: size, actual: now } },
      );
  }
}
