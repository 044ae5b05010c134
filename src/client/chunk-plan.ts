/**
 * What a restore asks of one decoded chunk of a split archive's payload stream when the chunk is
 * decoded off the main thread (ChunkWorkerPool 'write' jobs): compare some of its bytes with
 * what must be there (the PAYLOAD headers of the files it holds) and write ranges of it into
 * files the main thread has created, at their positions in those files. The thread that decoded
 * the chunk does this itself, so file contents never cross threads and the main thread goes on
 * with the next entries (pxar/extractor.ts, ExtractOptions.contentWriter).
 *
 * Writes leave holes: a 4 KiB block of the file (aligned in the file) whose bytes in this chunk
 * are all zero is not written. A block split between two chunks is written by each chunk only
 * where its part is not zero; the file is new and empty and gets its size at the end, so unwritten
 * bytes read as zeros either way.
 */
import { writeSync } from 'node:fs';
import type { CryptConfig } from '../crypto/crypt-config.js';
import { decodeBlob } from '../format/data-blob.js';
import { BurrowError } from '../lib/errors.js';

/**
 * A restored chunk's plaintext, decoded only against the digest and size its index gives: a
 * restore relies on this check, on a worker thread as on the calling thread, so a chunk job
 * without them is refused (`what` names the job).
 */
export function decodeCheckedChunk(
  blob: Uint8Array,
  check: { crypt?: CryptConfig; expectedDigest?: Uint8Array; expectedSize?: number },
  what: string,
): Uint8Array {
  if (check.expectedDigest === undefined || check.expectedSize === undefined)
    throw new BurrowError('INTERNAL', `${what} without a digest to check`);
  return decodeBlob(blob, {
    crypt: check.crypt,
    expectedDigest: check.expectedDigest,
    expectedSize: check.expectedSize,
    checkCrc: false,
  });
}

/** Bytes [from, to) of the chunk must equal `expected`. */
export interface ChunkCheck {
  readonly from: number;
  readonly to: number;
  readonly expected: Uint8Array;
}

/** Bytes [from, to) of the chunk go to file descriptor `fd` at `position`. */
export interface ChunkWrite {
  readonly fd: number;
  readonly from: number;
  readonly to: number;
  readonly position: number;
}

export interface ChunkPlan {
  readonly checks: readonly ChunkCheck[];
  readonly writes: readonly ChunkWrite[];
}

const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

function writeAll(fd: number, data: Buffer, from: number, to: number, position: number): void {
  let done = from;
  while (done < to) done += writeSync(fd, data, done, to - done, position + (done - from));
}

/** Writes data[from, to) at `position`, skipping the all-zero parts of 4 KiB file blocks. */
function writeSparse(fd: number, data: Buffer, from: number, to: number, position: number): void {
  let runStart = -1;
  let at = from;
  while (at < to) {
    // The end of the file block holding file offset position + (at - from).
    const fileAt = position + (at - from);
    const end = Math.min(to, at + (BLOCK - (fileAt % BLOCK)));
    const zero = ZERO_BLOCK.compare(data, at, end, 0, end - at) === 0;
    if (!zero && runStart < 0) runStart = at;
    if (zero && runStart >= 0) {
      writeAll(fd, data, runStart, at, position + (runStart - from));
      runStart = -1;
    }
    at = end;
  }
  if (runStart >= 0) writeAll(fd, data, runStart, to, position + (runStart - from));
}

/**
 * Applies `plan` to the decoded chunk `data`: every check first (a mismatch is PXAR_BAD_PAYLOAD,
 * nothing written), then the writes. A write error is thrown as the system error it is.
 */
export function applyChunkPlan(data: Uint8Array, plan: ChunkPlan): void {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (const [index, check] of plan.checks.entries()) {
    if (
      check.from < 0 ||
      check.to > bytes.length ||
      check.to - check.from !== check.expected.byteLength ||
      Buffer.compare(bytes.subarray(check.from, check.to), check.expected) !== 0
    )
      throw new BurrowError(
        'PXAR_BAD_PAYLOAD',
        `the payload stream does not hold the expected PAYLOAD header at chunk bytes ${check.from}-${check.to}`,
        // `check` lets the caller name the file whose header this is.
        { details: { chunkOffset: check.from, check: index } },
      );
  }
  for (const w of plan.writes) {
    if (w.from < 0 || w.to > bytes.length || w.from > w.to)
      throw new BurrowError('INTERNAL', `chunk write ${w.from}-${w.to} outside the chunk`);
    try {
      writeSparse(w.fd, bytes, w.from, w.to, w.position);
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      // `fd` lets the caller name the file; the errno says what to do (ENOSPC: free space).
      throw new BurrowError('IO_ERROR', `write failed: ${e.code ?? e.message}`, {
        details: {
          fd: w.fd,
          syscall: e.syscall,
          errno: e.errno === undefined ? undefined : Math.abs(e.errno),
          errnoName: e.code,
        },
        cause: error,
      });
    }
  }
}
