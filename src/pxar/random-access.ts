/**
 * RandomAccess sources for the pxar accessor and for v2 payload streams: one over bytes already in
 * memory, one over an open file. Both follow format.ts's contract: a read is short only at the end
 * of the data, never in the middle.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { BurrowError } from '../lib/errors.js';
import type { RandomAccess } from './format.js';

function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0)
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `read offset ${offset} is not a non-negative integer`,
    );
  if (!Number.isSafeInteger(length) || length < 0)
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `read length ${length} is not a non-negative integer`,
    );
}

/** Random access to bytes in memory. Reads return views into `bytes`, not copies. */
export function bytesRandomAccess(bytes: Uint8Array): RandomAccess {
  return {
    size: bytes.byteLength,
    // async so that a bad range becomes a rejection, like every other RandomAccess.
    // eslint-disable-next-line @typescript-eslint/require-await
    async readAt(offset: number, length: number): Promise<Uint8Array> {
      checkRange(offset, length);
      const start = Math.min(offset, bytes.byteLength);
      return bytes.subarray(start, Math.min(start + length, bytes.byteLength));
    },
  };
}

/** A RandomAccess that owns an open file and must be closed. */
export interface FileRandomAccess extends RandomAccess {
  close(): Promise<void>;
}

/**
 * Random access to an open file handle whose size is fixed while it is read (`size` is taken
 * once). The handle stays owned by the caller unless `ownsHandle`, in which case close() closes it.
 */
export function fileHandleRandomAccess(
  handle: FileHandle,
  size: number,
  path = '<file>',
  ownsHandle = false,
): FileRandomAccess {
  let closed = false;
  return {
    size,
    async readAt(offset: number, length: number): Promise<Uint8Array> {
      checkRange(offset, length);
      if (closed) throw new BurrowError('INVALID_ARGUMENT', `${path} has been closed`);
      const wanted = Math.max(0, Math.min(length, size - offset));
      const out = Buffer.allocUnsafe(wanted);
      let filled = 0;
      while (filled < wanted) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await handle.read(out, filled, wanted - filled, offset + filled));
        } catch (error) {
          const err = error as NodeJS.ErrnoException;
          throw new BurrowError(
            'IO_ERROR',
            `cannot read ${path} at byte ${offset + filled}: ${err.message}`,
            {
              details: { path, offset: offset + filled, errno: err.errno, errnoName: err.code },
              cause: error,
            },
          );
        }
        // The file shrank under us: report what there is, as a short read at "EOF".
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      return new Uint8Array(out.buffer, out.byteOffset, filled);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      if (ownsHandle) await handle.close();
    },
  };
}

/** Opens `path` read-only for random access; close() releases the file. */
export async function openFileRandomAccess(path: string): Promise<FileRandomAccess> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    throw new BurrowError(
      err.code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
      `cannot open ${path}: ${err.message}`,
      { details: { path, errno: err.errno, errnoName: err.code }, cause: error },
    );
  }
  try {
    const { size } = await handle.stat();
    return fileHandleRandomAccess(handle, size, path, true);
  } catch (error) {
    await handle.close();
    const err = error as NodeJS.ErrnoException;
    throw new BurrowError('IO_ERROR', `cannot stat ${path}: ${err.message}`, {
      details: { path, errno: err.errno, errnoName: err.code },
      cause: error,
    });
  }
}
