/**
 * The joint between a producer that pushes bytes (the pxar encoder, the catalog writer) and the
 * upload pipeline, which pulls chunks: a ChunkSplitter cuts the pushed bytes and a small bounded
 * queue hands the chunks over. A full queue makes the producer's write wait (backpressure), so
 * memory stays at a few chunks whatever the archive size.
 *
 * Failure runs both ways. If the producer fails, `fail(error)` makes the consumer's iteration
 * throw. If the consumer stops (the pipeline failed and closed its iterator, or `abort` was called)
 * the next write rejects with StreamAborted, which carries the consumer's error when known, so the
 * producer stops instead of waiting forever.
 */
import { ChunkSplitter } from '../chunker/buzhash.js';
import { BurrowError } from '../lib/errors.js';
import type { ByteSink } from '../pxar/format.js';

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
 * A ByteSink that cuts what it is given into chunks with a buzhash ChunkSplitter and queues them.
 * Pieces written must not be modified afterwards (chunks may be views of them).
 */
export class ChunkingSink implements ByteSink {
  readonly queue: ChunkQueue;
  readonly splitter: ChunkSplitter;
  /** Bytes of all chunks queued so far (the stream offset where the next queued chunk starts). */
  queuedBytes = 0;

  constructor(what: string, avgChunkSize: number, queueLimit = 2) {
    this.queue = new ChunkQueue(what, queueLimit);
    this.splitter = new ChunkSplitter(avgChunkSize);
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (const chunk of this.splitter.push(bytes)) await this.pushChunk(chunk);
  }

  async pushChunk(chunk: Uint8Array): Promise<void> {
    if (chunk.byteLength === 0) return;
    this.queuedBytes += chunk.byteLength;
    await this.queue.push(chunk);
  }

  /** Cuts the pending bytes into a last chunk and closes the stream. */
  async finish(): Promise<void> {
    const last = this.splitter.finish();
    if (last !== undefined) await this.pushChunk(last);
    this.queue.close();
  }
}
