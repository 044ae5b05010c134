/**
 * File contents of a split archive (pxar-format §9) written where the payload chunks are decoded:
 * the extractor creates each file and hands over its descriptor with the file's PAYLOAD_REF
 * (ExtractOptions.contentWriter); this writer plans, per payload chunk, which bytes must be the
 * files' PAYLOAD headers and which bytes go to which file at which position (chunk-plan.ts), and
 * has the chunk decoded, checked and written in one job on a worker (ArchiveReader.writeFromChunk).
 *
 * Why: in a restore the main thread decodes the metadata stream, creates files and applies
 * metadata, and the workers decode chunks; when the contents also went through the main thread,
 * a run of large files kept it waiting for decoded chunks and then a run of small files kept the
 * workers waiting for it. Now a large file is handed over at once and the main thread goes on.
 *
 * The payload offsets of a split archive increase strictly (the decoder checks it), so the files
 * of one chunk arrive one after the other: a chunk's job starts as soon as a file reaches past
 * the chunk's end, or at flush(). Files are planned a chunk at a time while fewer than PLAN_AHEAD
 * chunk jobs are planned or running, so a huge file does not plan all its chunks at once. A
 * file's promise settles when every chunk it lies in is done.
 */
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { PXAR } from '../pxar/format.js';
import type { FileContentWriter } from '../pxar/extractor.js';
import type { ChunkCheck, ChunkWrite } from './chunk-plan.js';
import type { ArchiveChunk, ArchiveReader } from './chunk-reader.js';

const HEADER_SIZE = 16;

/**
 * Chunk jobs started and not done. Enough to keep the workers busy (each holds two); it bounds
 * the memory of a remote restore, where each job's chunk is fetched first.
 */
export const MAX_CHUNKS_IN_FLIGHT = 8;
/** Chunk batches planned ahead, running or waiting: what bounds the memory of a large file's plan. */
export const PLAN_AHEAD = 2 * MAX_CHUNKS_IN_FLIGHT;

/** A file handed over by write(), planned chunk by chunk as there is room. */
interface FileTask {
  readonly fd: number;
  readonly display: string;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
  readonly header: Uint8Array;
  /** The next payload offset to plan. */
  at: number;
  /** Batches holding part of this file that have not settled. */
  unsettled: number;
  /** The first failure of one of its batches; the file is rejected once none is left running. */
  error: Error | undefined;
  resolve(): void;
  reject(error: Error): void;
}

interface Batch {
  readonly chunk: ArchiveChunk;
  readonly checks: ChunkCheck[];
  readonly writes: ChunkWrite[];
  /** Names of the files written, by descriptor, and of the files checked, by check, for errors. */
  readonly names: Map<number, string>;
  readonly checkNames: string[];
  readonly tasks: FileTask[];
}

/** The PAYLOAD header a file of `size` bytes has in the payload stream. */
function payloadHeader(size: number): Uint8Array {
  const header = new Uint8Array(HEADER_SIZE);
  const view = new DataView(header.buffer);
  view.setBigUint64(0, PXAR.PAYLOAD, true);
  view.setBigUint64(8, BigInt(HEADER_SIZE + size), true);
  return header;
}

export class PayloadContentWriter implements FileContentWriter {
  readonly #payload: ArchiveReader;
  readonly #onChunkDone: ((bytes: number) => void) | undefined;
  /** Files not planned to their end yet, in order. */
  readonly #tasks: FileTask[] = [];
  #open: Batch | undefined;
  /** flush() was asked for: start the open batch once every file is planned. */
  #flushing = false;
  /** Complete batches waiting for one of the MAX_CHUNKS_IN_FLIGHT places. */
  readonly #ready: Batch[] = [];
  #inFlight = 0;
  #progressWaiters: Array<() => void> = [];

  /** `onChunkDone` hears of each chunk written (its decoded size), for progress. */
  constructor(payload: ArchiveReader, onChunkDone?: (bytes: number) => void) {
    if (!payload.writesFromChunks)
      throw new BurrowError('INTERNAL', `${payload.archiveName}: the reader cannot write chunks`);
    this.#payload = payload;
    this.#onChunkDone = onChunkDone;
  }

  write(fd: number, payloadOffset: number, size: number, display: string): Promise<void> {
    const payload = this.#payload;
    const start = payloadOffset;
    const contentStart = start + HEADER_SIZE;
    const end = contentStart + size;
    if (!Number.isSafeInteger(end) || start < 0 || end > payload.size)
      return Promise.reject(
        new BurrowError(
          'PXAR_BAD_PAYLOAD',
          `${display}: payload reference (offset ${start}, size ${size}) reaches past the end of the payload stream (${payload.size} bytes)`,
          { details: { path: display, payloadOffset: start, size, payloadSize: payload.size } },
        ),
      );
    return new Promise<void>((resolve, reject) => {
      this.#tasks.push({
        fd,
        display,
        start,
        contentStart,
        end,
        header: payloadHeader(size),
        at: start,
        unsettled: 0,
        error: undefined,
        resolve,
        reject,
      });
      this.#plan();
    });
  }

  flush(): void {
    this.#flushing = true;
    this.#plan();
  }

  get busy(): boolean {
    return this.#inFlight > 0 || this.#ready.length > 0;
  }

  /** Complete batches not started yet (at most PLAN_AHEAD with those in flight). */
  get queuedChunks(): number {
    return this.#ready.length;
  }

  progress(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    return new Promise((resolve) => this.#progressWaiters.push(resolve));
  }

  /**
   * Plans the files in order, a chunk at a time, while fewer than PLAN_AHEAD batches are planned
   * or running: a file of any size costs memory for the chunks in reach only.
   */
  #plan(): void {
    while (this.#inFlight + this.#ready.length < PLAN_AHEAD) {
      const task = this.#tasks[0];
      if (task === undefined) {
        if (this.#flushing && this.#open !== undefined) this.#start(this.#open);
        this.#flushing = false;
        return;
      }
      const batch = this.#batchAt(this.#payload.positionOf(task.at));
      const { chunk } = batch;
      const { at, start, contentStart, end } = task;
      const to = Math.min(end, chunk.end);
      const headerTo = Math.min(to, contentStart);
      if (at < headerTo) {
        batch.checkNames.push(task.display);
        batch.checks.push({
          from: at - chunk.start,
          to: headerTo - chunk.start,
          expected: task.header.subarray(at - start, headerTo - start),
        });
      }
      const from = Math.max(at, contentStart);
      if (from < to)
        batch.writes.push({
          fd: task.fd,
          from: from - chunk.start,
          to: to - chunk.start,
          position: from - contentStart,
        });
      batch.names.set(task.fd, task.display);
      batch.tasks.push(task);
      task.unsettled++;
      task.at = to;
      if (to >= end) this.#tasks.shift();
      // Later files start after this one ends: a chunk this file reaches past is complete.
      else this.#start(batch);
    }
  }

  /** The batch of chunk `position`: the open one, or a new one (starting the open one). */
  #batchAt(position: number): Batch {
    const open = this.#open;
    if (open !== undefined && open.chunk.position === position) return open;
    if (open !== undefined) this.#start(open);
    const batch: Batch = {
      chunk: this.#payload.chunk(position),
      checks: [],
      writes: [],
      names: new Map(),
      checkNames: [],
      tasks: [],
    };
    this.#open = batch;
    return batch;
  }

  /** A batch is complete: it starts when there is room. */
  #start(batch: Batch): void {
    if (this.#open === batch) this.#open = undefined;
    this.#ready.push(batch);
    this.#pump();
  }

  #pump(): void {
    while (this.#inFlight < MAX_CHUNKS_IN_FLIGHT && this.#ready.length > 0) {
      const batch = this.#ready.shift()!;
      const { chunk } = batch;
      this.#inFlight++;
      this.#payload
        .writeFromChunk(chunk.position, { checks: batch.checks, writes: batch.writes })
        .then(
          () => {
            this.#onChunkDone?.(chunk.end - chunk.start);
            this.#settle(batch);
          },
          (error: unknown) => this.#settle(batch, this.#named(batch, error)),
        )
        .finally(() => {
          this.#inFlight--;
          this.#pump();
          this.#plan();
          const waiters = this.#progressWaiters;
          this.#progressWaiters = [];
          for (const wake of waiters) wake();
        });
    }
  }

  /**
   * A file is done when it is planned to its end and its last batch is. A failed file is planned
   * no further and rejected once none of its batches runs any more: the caller closes its
   * descriptor then, and a write still on its way could otherwise land in whatever file gets
   * that descriptor number next.
   */
  #settle(batch: Batch, error?: Error): void {
    for (const task of batch.tasks) {
      task.unsettled--;
      if (error !== undefined && task.error === undefined) {
        task.error = error;
        const at = this.#tasks.indexOf(task);
        if (at >= 0) this.#tasks.splice(at, 1);
      }
      if (task.unsettled > 0) continue;
      if (task.error !== undefined) task.reject(task.error);
      else if (task.at >= task.end) task.resolve();
    }
  }

  /** An error names the file it is about (the worker knows only descriptors and check numbers). */
  #named(batch: Batch, error: unknown): Error {
    if (!isBurrowError(error)) return error instanceof Error ? error : new Error(String(error));
    const { fd, check } = error.details;
    const name =
      typeof fd === 'number'
        ? batch.names.get(fd)
        : typeof check === 'number'
          ? batch.checkNames[check]
          : undefined;
    if (name === undefined) return error;
    return new BurrowError(error.code, `${name}: ${error.message}`, {
      details: { ...error.details, path: name },
      cause: error,
    });
  }
}
