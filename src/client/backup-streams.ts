/**
 * The joint between a producer that pushes bytes (the pxar encoder, the catalog writer) and the
 * upload pipeline, which pulls chunks: the buzhash chunker cuts the pushed bytes and a small
 * bounded queue hands the chunks over. A full queue makes the producer's write wait
 * (backpressure), so memory stays at a few chunks whatever the archive size.
 *
 * Failure runs both ways. If the producer fails, `fail(error)` makes the consumer's iteration
 * throw. If the consumer stops (the pipeline failed and closed its iterator, or `abort` was called)
 * the next write rejects with StreamAborted, which carries the consumer's error when known, so the
 * producer stops instead of waiting forever.
 */
import { Chunker } from '../chunker/buzhash.js';
import { BurrowError } from '../lib/errors.js';
import { nativeCopyBytes } from '../lib/native-fs.js';
import type { ByteSink } from '../pxar/format.js';
import { ChunkArena } from './worker-pool.js';

/**
 * Slots per sink: enough for every chunk a pipeline can hold at once (its window, 2 x threads + 4,
 * plus the queue and the chunk being gathered) on machines with up to four cores. Beyond that,
 * chunks are gathered in ordinary memory.
 */
export const ARENA_SLOTS = 16;

/** Thrown into a producer whose consumer went away; `cause` is the consumer's error if known. */
export class StreamAborted extends BurrowError {
  constructor(what: string, cause?: unknown) {
    super(
      cause instanceof BurrowError ? cause.code : 'INTERNAL',
      `${what}: the upload stopped${cause instanceof Error ? `: ${cause.message}` : ''}`,
      { cause },
    );
  }
}

/** The root cause among errors that may be StreamAborted echoes of each other. */
export function rootCause(error: unknown): unknown {
  let e = error;
  while (e instanceof StreamAborted && e.cause !== undefined) e = e.cause;
  return e;
}

/** A bounded single-producer single-consumer queue of chunks. */
export class ChunkQueue implements AsyncIterable<Uint8Array> {
  readonly #what: string;
  readonly #limit: number;
  readonly #items: Uint8Array[] = [];
  #closed = false;
  #failure: { error: unknown } | undefined;
  #aborted: { error: unknown } | undefined;
  #iterating = false;
  #wakeConsumer: (() => void) | undefined;
  #wakeProducer: (() => void) | undefined;

  constructor(what: string, limit = 2) {
    this.#what = what;
    this.#limit = limit;
  }

  /** Queues a chunk; waits while the queue is full. Rejects once the consumer has gone. */
  async push(chunk: Uint8Array): Promise<void> {
    this.#checkWritable();
    while (this.#items.length >= this.#limit) {
      await new Promise<void>((resolve) => (this.#wakeProducer = resolve));
      this.#checkWritable();
    }
    this.#items.push(chunk);
    this.#wake();
  }

  /** No more chunks: the consumer's iteration ends after the queued ones. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  /** The producer failed: the consumer's iteration throws `error`. */
  fail(error: unknown): void {
    if (this.#failure === undefined && !this.#closed) this.#failure = { error };
    this.#closed = true;
    this.#wake();
  }

  /** The consumer failed or quit: further pushes reject (StreamAborted with `error` as cause). */
  abort(error?: unknown): void {
    if (this.#aborted === undefined || this.#aborted.error === undefined) this.#aborted = { error };
    this.#items.length = 0;
    this.#wake();
  }

  #checkWritable(): void {
    if (this.#aborted !== undefined)
      throw new StreamAborted(this.#what, rootCause(this.#aborted.error));
    if (this.#closed)
      throw new BurrowError('INTERNAL', `${this.#what}: write after the stream was closed`);
  }

  #wake(): void {
    const c = this.#wakeConsumer;
    const p = this.#wakeProducer;
    this.#wakeConsumer = undefined;
    this.#wakeProducer = undefined;
    c?.();
    p?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    if (this.#iterating)
      throw new BurrowError('INTERNAL', `${this.#what}: the chunk stream is read twice`);
    this.#iterating = true;
    try {
      for (;;) {
        const item = this.#items.shift();
        if (item !== undefined) {
          this.#wake();
          yield item;
          continue;
        }
        if (this.#failure !== undefined) throw this.#failure.error;
        if (this.#closed || this.#aborted !== undefined) return;
        await new Promise<void>((resolve) => (this.#wakeConsumer = resolve));
      }
    } finally {
      // The consumer stopped early (its own failure): the producer must not wait for it.
      if (!this.#closed || this.#items.length > 0) this.abort();
    }
  }
}

/**
 * Copies into a chunk buffer. V8 copies into shared memory with relaxed atomics, byte by byte
 * when source and target are not equally aligned (about 1.3 GB/s, most of the main thread's
 * time per byte): the addon's memmove does it at memory speed.
 */
function copyInto(
  target: Uint8Array,
  at: number,
  source: Uint8Array,
  from: number,
  length: number,
): void {
  const native = target.buffer instanceof SharedArrayBuffer ? nativeCopyBytes() : undefined;
  if (native !== undefined) native(target, at, source, from, length);
  else target.set(source.subarray(from, from + length), at);
}

/**
 * A ByteSink that cuts what it is given into chunks with the buzhash chunker and queues them.
 *
 * Each chunk is gathered in a slot of the sink's ChunkArena (shared memory of the chunker's maximum
 * chunk size per slot), which the upload pipeline's workers read in place and free when done; when
 * every slot is out (a consumer that keeps chunks), in ordinary memory instead. Written bytes are
 * copied before write() settles: callers may reuse their buffers right after (the archiver's
 * `reuseReadBuffer`). A slot is freed only by the worker pool, once a worker is done with a chunk
 * handed to it with `transfer` (uploadChunks' default, `transferChunks`); a chunk stays as it is
 * until then, and whoever still needs it afterwards must copy it first.
 *
 * For the payload stream of split archives it takes suggested boundaries (the pxar encoder
 * reports where each file's PAYLOAD header starts), forced cuts and skipped stretches (reused
 * chunks injected in metadata mode), with ChunkSplitter's rules (chunker/buzhash.ts), which the
 * tests check it against: a suggestion `b` is weighed when the bytes written so far (the current
 * piece included) reach it, before any content-defined boundary in that piece; it is dropped when
 * it lies in the past or less than `min` after the chunk start, cut at when the chunk would be at
 * most `max` long, and otherwise left for after the next cut.
 */
export class ChunkingSink implements ByteSink {
  readonly queue: ChunkQueue;
  readonly arena: ChunkArena;
  /** Bytes of all chunks queued so far (the stream offset where the next queued chunk starts). */
  queuedBytes = 0;
  readonly #chunker: Chunker;
  /** The pending chunk's buffer (taken on the first byte), its length, and its stream offset. */
  #buf: Uint8Array | undefined;
  #fill = 0;
  #base = 0;
  #suggestions: number[] = [];
  #suggestionsHead = 0;
  #lastSuggestion = 0;

  constructor(what: string, avgChunkSize: number, queueLimit = 2) {
    this.queue = new ChunkQueue(what, queueLimit);
    this.#chunker = new Chunker(avgChunkSize);
    this.arena = new ChunkArena(this.#chunker.max, ARENA_SLOTS);
  }

  /** Stream offset of the next byte to be written. */
  get streamOffset(): number {
    return this.#base + this.#fill;
  }

  /** Bytes written but not yet cut into a chunk. */
  get pendingLength(): number {
    return this.#fill;
  }

  async write(bytes: Uint8Array): Promise<void> {
    const n = bytes.length;
    let i = 0;
    for (;;) {
      const k = this.#suggestionsHead < this.#suggestions.length ? this.#suggestedCut(n - i) : -1;
      if (k === 0) {
        // A suggestion at the current position closes the pending chunk before these bytes.
        await this.#cut();
        continue;
      }
      if (i === n) break;
      const buf = (this.#buf ??= this.#take());
      if (k > 0) {
        copyInto(buf, this.#fill, bytes, i, k);
        this.#fill += k;
        i += k;
        await this.#cut();
        continue;
      }
      // The buffer holds a maximal chunk, so the chunker cuts before it runs out of room.
      const take = Math.min(n - i, buf.length - this.#fill);
      copyInto(buf, this.#fill, bytes, i, take);
      const end = this.#chunker.scanFrom(buf.subarray(0, this.#fill + take), this.#fill);
      if (end < 0) {
        this.#fill += take;
        i += take;
        // As ChunkSplitter: a suggestion right at the end of the piece waits for the next write.
        if (i === n) break;
        continue;
      }
      // Bytes copied past the boundary are copied again, from `bytes`, into the next buffer.
      i += end - this.#fill;
      this.#fill = end;
      await this.#cut();
    }
  }

  /**
   * Suggests a chunk boundary at stream offset `streamOffset` (ChunkSplitter.suggestBoundary's
   * rules). Offsets must come in non-decreasing order, else INVALID_ARGUMENT.
   */
  suggestBoundary(streamOffset: number): void {
    if (!Number.isSafeInteger(streamOffset) || streamOffset < this.#lastSuggestion) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `suggested boundary ${String(streamOffset)} is not an integer at or after the previous suggestion ${this.#lastSuggestion}`,
        { details: { offset: streamOffset, previous: this.#lastSuggestion } },
      );
    }
    this.#lastSuggestion = streamOffset;
    this.#suggestions.push(streamOffset);
  }

  /** Cuts at the current stream position: the pending bytes (if any) become a chunk. */
  async forceBoundary(): Promise<void> {
    if (this.#fill > 0) await this.#cut();
    this.#chunker.reset();
  }

  /**
   * Moves the stream position `length` bytes on without those bytes passing through (metadata
   * mode injects reused chunks there). Only at a boundary (after forceBoundary), else
   * INVALID_ARGUMENT. Suggestions inside the skipped range are dropped.
   */
  skipBytes(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new BurrowError('INVALID_ARGUMENT', `skipBytes: bad length ${String(length)}`, {
        details: { length },
      });
    }
    if (this.#fill > 0) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `skipBytes at stream offset ${this.streamOffset} with ${this.#fill} pending bytes: call forceBoundary first`,
        { details: { offset: this.streamOffset, pending: this.#fill } },
      );
    }
    this.#base += length;
    this.#chunker.reset();
  }

  /** Cuts the pending bytes into a last chunk and closes the stream. */
  async finish(): Promise<void> {
    if (this.#fill > 0) await this.#cut();
    this.#chunker.reset();
    this.queue.close();
  }

  #take(): Uint8Array {
    const max = this.#chunker.max;
    return this.arena.take() ?? new Uint8Array(Buffer.allocUnsafeSlow(max).buffer, 0, max);
  }

  async #cut(): Promise<void> {
    const buf = this.#buf!;
    // A chunk in ordinary memory gets a buffer of its own, which the pipeline can move, not copy.
    const chunk =
      buf.buffer instanceof SharedArrayBuffer
        ? buf.subarray(0, this.#fill)
        : buf.slice(0, this.#fill);
    this.#base += this.#fill;
    this.#buf = undefined;
    this.#fill = 0;
    this.#chunker.reset();
    this.queuedBytes += chunk.byteLength;
    await this.queue.push(chunk);
  }

  /**
   * Applies the suggestion rules to the next `available` bytes. Returns where to cut, counted
   * from the current position (0: right here, before them), or -1 for a normal scan.
   */
  #suggestedCut(available: number): number {
    const here = this.#base + this.#fill;
    const { min, max } = this.#chunker;
    while (this.#suggestionsHead < this.#suggestions.length) {
      const b = this.#suggestions[this.#suggestionsHead]!;
      if (b > here + available) return -1; // not reached yet: undecided
      if (b >= here) {
        const size = b - this.#base;
        if (size > max) return -1;
        if (size >= min) {
          this.#dropSuggestion();
          return b - here;
        }
      }
      this.#dropSuggestion(); // in the past, or too close to the chunk start
    }
    return -1;
  }

  #dropSuggestion(): void {
    this.#suggestionsHead++;
    if (this.#suggestionsHead === this.#suggestions.length) {
      this.#suggestions = [];
      this.#suggestionsHead = 0;
    } else if (
      this.#suggestionsHead >= 1024 &&
      this.#suggestionsHead * 2 >= this.#suggestions.length
    ) {
      this.#suggestions = this.#suggestions.slice(this.#suggestionsHead);
      this.#suggestionsHead = 0;
    }
  }
}
