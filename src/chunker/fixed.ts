/**
 * Fixed-size chunking for images (pbs-protocol §9.2): a cut every 4 MiB of the stream, whatever
 * the sizes of the reads; only the last chunk may be shorter.
 */
import { FIXED_CHUNK_SIZE } from '../format/magic.js';
import { BurrowError } from '../lib/errors.js';

/**
 * Push-style fixed splitter: `push` returns the chunks a piece completes, `finish` the short tail.
 * Chunks that lie within one piece are views of it (no copy), so pieces must not be modified
 * after they are pushed.
 */
export class FixedChunkSplitter {
  readonly chunkSize: number;
  private pending: Uint8Array | undefined;
  private pendingLength = 0;

  constructor(chunkSize: number = FIXED_CHUNK_SIZE) {
    if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `fixed chunk size must be a positive integer, got ${String(chunkSize)}`,
        {
          details: { chunkSize },
        },
      );
    }
    this.chunkSize = chunkSize;
  }

  push(piece: Uint8Array): Uint8Array[] {
    const size = this.chunkSize;
    const out: Uint8Array[] = [];
    let rest = piece;
    if (this.pendingLength > 0) {
      const take = Math.min(size - this.pendingLength, rest.length);
      this.pending!.set(rest.subarray(0, take), this.pendingLength);
      this.pendingLength += take;
      rest = rest.subarray(take);
      if (this.pendingLength < size) return out;
      out.push(this.pending!);
      this.pending = undefined;
      this.pendingLength = 0;
    }
    while (rest.length >= size) {
      out.push(rest.subarray(0, size));
      rest = rest.subarray(size);
    }
    if (rest.length > 0) {
      // A fresh buffer per partial chunk: earlier chunks handed out must stay intact.
      this.pending = new Uint8Array(size);
      this.pending.set(rest);
      this.pendingLength = rest.length;
    }
    return out;
  }

  /** The last, shorter chunk, or undefined if the stream ended on a chunk boundary (or was empty). */
  finish(): Uint8Array | undefined {
    if (this.pendingLength === 0) return undefined;
    const last = this.pending!.subarray(0, this.pendingLength);
    this.pending = undefined;
    this.pendingLength = 0;
    return last;
  }
}

/** Cuts a stream into fixed-size chunks (4 MiB by default). */
export function* splitFixedChunks(
  stream: Iterable<Uint8Array>,
  chunkSize: number = FIXED_CHUNK_SIZE,
): Generator<Uint8Array, void, undefined> {
  const splitter = new FixedChunkSplitter(chunkSize);
  for (const piece of stream) yield* splitter.push(piece);
  const last = splitter.finish();
  if (last !== undefined) yield last;
}

/** splitFixedChunks over an async stream. */
export async function* splitFixedChunksAsync(
  stream: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  chunkSize: number = FIXED_CHUNK_SIZE,
): AsyncGenerator<Uint8Array, void, undefined> {
  const splitter = new FixedChunkSplitter(chunkSize);
  for await (const piece of stream) yield* splitter.push(piece);
  const last = splitter.finish();
  if (last !== undefined) yield last;
}

/** Number of fixed chunks of an image of `size` bytes (the last one may be shorter). */
export function fixedChunkCount(size: number, chunkSize: number = FIXED_CHUNK_SIZE): number {
  return Math.ceil(size / chunkSize);
}
