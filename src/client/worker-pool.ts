/**
 * ChunkWorkerPool: a few worker threads (chunk-worker.ts) that digest, compress and encrypt chunks,
 * so a backup keeps every core busy while the main thread reads, chunks and appends in order.
 *
 * - Each worker holds at most MAX_JOBS_PER_WORKER jobs; further jobs wait here in FIFO order and go
 *   to the least loaded worker. Two per worker keep a worker busy while the main thread answers its
 *   last digest, without letting one slow worker hoard a backlog.
 * - Chunk memory is moved, not copied, when a chunk owns its whole ArrayBuffer and the caller lets
 *   it go (`transfer`); a view into a bigger buffer is copied first, because moving would detach
 *   the caller's other bytes (and structured clone would copy the whole buffer anyway).
 * - Chunks gathered in a ChunkArena (shared memory, the chunking sink's) do not move at all: the
 *   worker reads them in place, and the slot is free again once the worker is done with it (the
 *   chunk dropped or encoded). Moving or allocating a buffer per chunk cost page faults (about a
 *   thousand per fresh 4 MiB) and garbage collections on both threads, since V8 counts every
 *   buffer that arrives as new external memory.
 * - `decode` jobs (restore) check and decode a stored chunk off the main thread.
 * - Workers are unref'd while idle: a pool never keeps the process alive on its own, yet a pending
 *   job does. A worker that dies fails its jobs (INTERNAL) and is replaced on the next job.
 * - Source or compiled: see workerSpec().
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { CryptConfig } from '../crypto/crypt-config.js';
import { readChunkFileSync } from '../datastore/chunk-file.js';
import { computeChunkDigest, encodeBlob } from '../format/data-blob.js';
import { BLOB_ZSTD_LEVEL } from '../format/magic.js';
import type { ErrorCode } from '../lib/errors.js';
import { BurrowError, ERROR_CODES, isBurrowError } from '../lib/errors.js';
import { applyChunkPlan, decodeCheckedChunk, type ChunkPlan } from './chunk-plan.js';
import type {
  ChunkFileRef,
  FromWorker,
  JobWant,
  ToWorker,
  WorkerErrorData,
  WrittenBlob,
} from './chunk-worker.js';
import type { ChunkFileTarget } from '../datastore/chunk-file.js';

export const MAX_JOBS_PER_WORKER = 2;

/**
 * Bytes of chunk data a pool handles on the calling thread before it starts its first worker
 * (ChunkWorkerPool.create's default). An unchanged metadata-mode backup hashes about 1 MiB (its new
 * metadata archive); a thread for that costs a Node isolate and its module loading, about
 * 0.1 CPU-seconds, where the work itself takes a few milliseconds.
 */
export const DEFAULT_INLINE_BYTES = 4 * 1024 * 1024;

/** A chunk in the two-step protocol: the digest first, then encode() if the chunk is new, else drop(). */
export interface ChunkJob {
  readonly digest: Promise<Uint8Array>;
  /** The DataBlob; call once (this or encodeToFile), after the digest resolved. */
  encode(): Promise<Uint8Array>;
  /**
   * encode() for a local datastore: on a worker thread, a chunk whose file is not in the store
   * goes to a temporary file in `chunkFiles` (`written`; the caller must put it in place or
   * remove it) instead of coming back; otherwise, as encode(), the blob.
   */
  encodeToFile(chunkFiles: ChunkFileTarget): Promise<ProcessedBlob>;
  /** Frees the chunk in the worker (a known chunk); harmless after encode() or a failure. */
  drop(): void;
}

let nextArenaId = 1;
const arenas = new WeakMap<SharedArrayBuffer, ChunkArena>();

/**
 * Fixed-size slots of shared memory for chunks on their way to the workers. take() hands out a
 * free slot (undefined when all are out: the caller then uses ordinary memory); a chunk that is a
 * view at the start of a slot is read by the worker in place, and ChunkWorkerPool frees the slot
 * when the worker is done with it. The memory is reserved at the first take(); pages are touched
 * only as far as chunks reach, and the most recently freed slot is reused first.
 */
export class ChunkArena {
  readonly id = nextArenaId++;
  readonly slotSize: number;
  readonly slots: number;
  #memory: SharedArrayBuffer | undefined;
  readonly #free: number[] = [];
  #used = 0;

  constructor(slotSize: number, slots: number) {
    if (
      !Number.isSafeInteger(slotSize) ||
      slotSize < 1 ||
      !Number.isSafeInteger(slots) ||
      slots < 1
    )
      throw new BurrowError('INVALID_ARGUMENT', `bad chunk arena ${slots} x ${slotSize}`);
    this.slotSize = slotSize;
    this.slots = slots;
  }

  /** The arena a chunk's memory belongs to, if any. */
  static of(data: Uint8Array): ChunkArena | undefined {
    return data.buffer instanceof SharedArrayBuffer ? arenas.get(data.buffer) : undefined;
  }

  get memory(): SharedArrayBuffer | undefined {
    return this.#memory;
  }

  /** Slots handed out and not freed yet. */
  get inUse(): number {
    return this.#used - this.#free.length;
  }

  /** A whole free slot, or undefined when every slot is out. */
  take(): Uint8Array | undefined {
    let slot = this.#free.pop();
    if (slot === undefined) {
      if (this.#used === this.slots) return undefined;
      slot = this.#used++;
    }
    if (this.#memory === undefined) {
      this.#memory = new SharedArrayBuffer(this.slotSize * this.slots);
      arenas.set(this.#memory, this);
    }
    return new Uint8Array(this.#memory, slot * this.slotSize, this.slotSize);
  }

  /** The slot a view at the start of a slot lies in, else undefined. */
  slotOf(data: Uint8Array): number | undefined {
    if (data.buffer !== this.#memory || data.byteOffset % this.slotSize !== 0) return undefined;
    if (data.byteLength > this.slotSize) return undefined;
    return data.byteOffset / this.slotSize;
  }

  free(slot: number): void {
    this.#free.push(slot);
  }
}

export interface JobOptions {
  crypt?: CryptConfig | undefined;
  /** zstd when that is smaller (default true). */
  compress?: boolean;
  /** The zstd level when compressing (default BLOB_ZSTD_LEVEL). */
  level?: number;
  /**
   * Move the chunk's memory to the worker when it owns its whole ArrayBuffer; the caller's array
   * is then detached (length 0); a chunk at the start of a ChunkArena slot is read in place and
   * its slot freed when the worker is done. Default false: the chunk is copied and stays usable.
   */
  transfer?: boolean;
  /**
   * digestAndEncode on a worker thread: a new chunk (no file of its digest in the store) goes to a
   * temporary file in this store instead of coming back (ProcessedChunk.written).
   */
  chunkFiles?: ChunkFileTarget | undefined;
}

/** What a decode job checks (decodeBlob's options, CRC left out as in decodeChunkHere). */
export interface DecodeOptions {
  crypt?: CryptConfig | undefined;
  expectedDigest: Uint8Array;
  expectedSize: number;
}

/** An encoded chunk: the blob, or (empty blob) the temporary file it was written to. */
export interface ProcessedBlob {
  encoded: Uint8Array;
  written?: WrittenBlob;
}

export interface ProcessedChunk {
  digest: Uint8Array;
  /** Empty when the blob was written to `written` instead. */
  encoded: Uint8Array;
  /** The blob's temporary file in the store (JobOptions.chunkFiles); the caller must put it in place or remove it. */
  written?: WrittenBlob;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

const noop = (): void => {};

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Callers may legitimately never await one side (a dropped job's encode); never an unhandled rejection.
  promise.catch(noop);
  return { promise, resolve, reject };
}

const droppedError = (job: { id: number }): BurrowError =>
  new BurrowError('INTERNAL', `chunk job ${job.id} was dropped`);

type JobState = 'queued' | 'digesting' | 'held' | 'encoding' | 'done';

interface Job {
  id: number;
  want: JobWant;
  /** Owned by the job (moved or copied at submit), sent with the job, then forgotten here. */
  data: Uint8Array | undefined;
  /** Instead of data: the chunk file the worker reads. */
  file?: ChunkFileRef;
  crypt: CryptConfig | undefined;
  /** zstd level; 0: not compressed. */
  level: number;
  /** The arena slot the data lies in (read in place by the worker). */
  slot: { arena: ChunkArena; index: number } | undefined;
  /** Decode and write jobs. */
  expectedDigest?: Uint8Array;
  expectedSize?: number;
  /** Write jobs. */
  plan?: ChunkPlan;
  /** 'both' jobs: JobOptions.chunkFiles, and what the worker wrote there. */
  chunkFiles?: ChunkFileTarget;
  written?: WrittenBlob;
  state: JobState;
  worker: PoolWorker | undefined;
  digest: Deferred<Uint8Array>;
  encoded: Deferred<Uint8Array>;
  /** A digest job handled on the calling thread: its data, until encode() or drop(). */
  heldHere?: Uint8Array;
  /** Dropped after its digest: encode() now fails (the error is made then, not at every drop). */
  dropped?: true;
}

interface PoolWorker {
  worker: Worker;
  jobs: Map<number, Job>;
  keys: Set<number>;
  /** Arenas whose memory the worker has been sent. */
  arenas: Set<number>;
  dead: boolean;
  /** Held jobs to drop, sent with the next job (#dropLater). */
  drops: number[];
  dropFlush: NodeJS.Immediate | undefined;
}

function arenaSlot(a: Uint8Array): { arena: ChunkArena; index: number } | undefined {
  const arena = ChunkArena.of(a);
  const index = arena?.slotOf(a);
  return index === undefined ? undefined : { arena: arena!, index };
}

function ownsBuffer(a: Uint8Array): boolean {
  return (
    a.buffer instanceof ArrayBuffer && a.byteOffset === 0 && a.byteLength === a.buffer.byteLength
  );
}

/** A copy in its own ArrayBuffer, without zero-filling it first (Buffer#slice would be a view). */
function ownedCopy(a: Uint8Array): Uint8Array {
  const out = new Uint8Array(Buffer.allocUnsafeSlow(a.byteLength).buffer, 0, a.byteLength);
  out.set(a);
  return out;
}

/**
 * A digest that is safe to post: structured cloning a view copies its whole ArrayBuffer, which for
 * a digest read out of an index Buffer was the whole index, once per chunk.
 */
function ownDigest(digest: Uint8Array): Uint8Array {
  return digest.byteLength === digest.buffer.byteLength ? digest : new Uint8Array(digest);
}

function rebuildError(data: WorkerErrorData): BurrowError {
  const code = (data.code in ERROR_CODES ? data.code : 'INTERNAL') as ErrorCode;
  return new BurrowError(code, data.message, { details: data.details });
}

interface WorkerSpec {
  entry: URL | string;
  eval: boolean;
}

let cachedSpec: WorkerSpec | undefined;

/** tsx's ESM register() API (the `import` condition of `tsx/esm/api`, which require.resolve cannot pick). */
function tsxEsmApiUrl(from: string): string {
  const manifestPath = createRequire(from).resolve('tsx/package.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
    exports?: Record<string, { import?: { default?: string } } | string>;
  };
  const target = manifest.exports?.['./esm/api'];
  const relative = typeof target === 'object' ? target.import?.default : undefined;
  if (relative === undefined) {
    throw new BurrowError(
      'INTERNAL',
      `tsx at ${manifestPath} has no ESM register API (tsx/esm/api)`,
    );
  }
  return new URL(relative, pathToFileURL(manifestPath)).href;
}

/**
 * How to start the worker. From compiled dist/*.js: chunk-worker.js, plainly. From src/*.ts (tsx,
 * vitest) the entry is chunk-worker.ts, which plain node cannot load, and `--import tsx` in the
 * worker's execArgv does not help on Node 20 (its hooks are not in place for the entry module).
 * So a tiny bootstrap registers tsx's ESM hooks in the worker and then imports the entry; tsx is
 * resolved from this file, so the working directory does not matter.
 */
function workerSpec(): WorkerSpec {
  if (cachedSpec !== undefined) return cachedSpec;
  const self = import.meta.url;
  if (self.endsWith('.ts')) {
    const tsxApi = tsxEsmApiUrl(self);
    const entry = new URL('./chunk-worker.ts', self).href;
    const code =
      `import(${JSON.stringify(tsxApi)})` +
      `.then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`;
    cachedSpec = { entry: code, eval: true };
  } else {
    cachedSpec = { entry: new URL('./chunk-worker.js', self), eval: false };
  }
  return cachedSpec;
}

export class ChunkWorkerPool {
  readonly threads: number;
  readonly #workers: PoolWorker[] = [];
  readonly #queue: Job[] = [];
  readonly #keyIds = new WeakMap<CryptConfig, number>();
  #nextKeyId = 1;
  #nextJobId = 1;
  #closed = false;
  /** Bytes the calling thread may still handle itself before the first worker starts. */
  #inlineLeft: number;

  private constructor(threads: number, inlineBytes: number) {
    this.threads = threads;
    this.#inlineLeft = inlineBytes;
  }

  /**
   * A pool of `threads` workers (default: os.availableParallelism()), started with the first jobs
   * once the first `inlineBytes` (default DEFAULT_INLINE_BYTES; 0: none) of chunk data have been
   * handled on the calling thread, so that a backup with next to nothing new starts no thread.
   */
  static create(
    threads: number = availableParallelism(),
    inlineBytes: number = DEFAULT_INLINE_BYTES,
  ): ChunkWorkerPool {
    if (!Number.isSafeInteger(threads) || threads < 1 || threads > 256) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `a chunk worker pool has 1 to 256 threads, got ${String(threads)}`,
        { details: { threads } },
      );
    }
    if (!Number.isSafeInteger(inlineBytes) || inlineBytes < 0)
      throw new BurrowError('INVALID_ARGUMENT', `bad inline byte budget ${String(inlineBytes)}`, {
        details: { inlineBytes },
      });
    return new ChunkWorkerPool(threads, inlineBytes);
  }

  /**
   * Starts every thread now instead of with the first jobs, for work that will surely need them
   * (a restore of a chunked archive): a thread takes a few hundred milliseconds to load its
   * modules, which then overlap the caller's own start (reading the indexes). Jobs go to the
   * threads from here on, none is handled on the calling thread.
   */
  startThreads(): void {
    if (this.#closed) return;
    this.#inlineLeft = 0;
    while (this.#workers.length < this.threads) this.#spawn();
  }

  /** Threads started and alive. */
  get runningThreads(): number {
    return this.#workers.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Jobs waiting here plus jobs held by workers: what the pool keeps in memory. */
  get pendingJobs(): number {
    let n = this.#queue.length;
    for (const w of this.#workers) n += w.jobs.size;
    return n;
  }

  /** Digest and encode in one go. */
  process(
    data: Uint8Array,
    crypt?: CryptConfig,
    compress = true,
    transfer = false,
  ): Promise<ProcessedChunk> {
    return this.digestAndEncode(data, { crypt, compress, transfer });
  }

  /** Digest and encode in one go, one message each way. */
  async digestAndEncode(data: Uint8Array, options: JobOptions = {}): Promise<ProcessedChunk> {
    const job = this.#submit('both', data, options);
    const encoded = await job.encoded.promise;
    const digest = await job.digest.promise;
    return job.written === undefined
      ? { digest, encoded }
      : { digest, encoded, written: job.written };
  }

  /**
   * Decode a stored chunk (DataBlob) on a worker and check its digest and length, as
   * decodeChunkHere does here; errors keep decodeBlob's codes. `raw` is copied unless `transfer`.
   */
  decode(raw: Uint8Array, options: DecodeOptions, transfer = false): Promise<Uint8Array> {
    const job = this.#submit('decode', raw, { crypt: options.crypt, transfer }, options);
    return job.encoded.promise;
  }

  /**
   * decode() of the chunk file at `path`, which the worker reads itself: the calling thread
   * neither reads the file nor moves its bytes. Read errors are ChunkStore.loadChunk's.
   */
  decodeFile(path: string, options: DecodeOptions): Promise<Uint8Array> {
    const job = this.#submit('decode', { chunkFile: path }, { crypt: options.crypt }, options);
    return job.encoded.promise;
  }

  /**
   * Decode and check a stored chunk as decode() / decodeFile() do, then carry out `plan` with it
   * on the same thread (chunk-plan.ts: compare bytes, write ranges into open files). Resolves when
   * every write is done; nothing of the chunk comes back. `source` is copied unless `transfer`.
   */
  async decodeAndWrite(
    source: Uint8Array | ChunkFileRef,
    options: DecodeOptions,
    plan: ChunkPlan,
    transfer = false,
  ): Promise<void> {
    const job = this.#submit('write', source, { crypt: options.crypt, transfer }, options, plan);
    await job.encoded.promise;
  }

  /** Encode only, when the digest is already known (the all-zero image chunk). */
  encodeOnly(data: Uint8Array, options: JobOptions = {}): Promise<Uint8Array> {
    return this.#submit('encode', data, options).encoded.promise;
  }

  /** The two-step job: the digest, then encode() or drop(). */
  submit(data: Uint8Array, options: JobOptions = {}): ChunkJob {
    const job = this.#submit('digest', data, options);
    return {
      digest: job.digest.promise,
      encode: () => this.#requestEncode(job),
      encodeToFile: async (chunkFiles) => {
        const encoded = await this.#requestEncode(job, chunkFiles);
        return job.written === undefined ? { encoded } : { encoded, written: job.written };
      },
      drop: () => this.#drop(job),
    };
  }

  /** Test hook: the first worker throws outside any job, as a crashing thread would. */
  crashWorkerForTesting(): void {
    const w = this.#workers[0];
    if (w !== undefined) this.#post(w, { type: 'crash' });
  }

  /** Terminates the workers; jobs not finished yet fail. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const error = (): BurrowError =>
      new BurrowError('INTERNAL', 'the chunk worker pool was closed with jobs pending');
    for (const job of this.#queue.splice(0)) this.#fail(job, error());
    const workers = this.#workers.splice(0);
    for (const w of workers) {
      w.dead = true;
      for (const job of w.jobs.values()) this.#fail(job, error());
      w.jobs.clear();
    }
    await Promise.all(workers.map((w) => w.worker.terminate()));
  }

  #submit(
    want: JobWant,
    source: Uint8Array | ChunkFileRef,
    options: JobOptions,
    check?: DecodeOptions,
    plan?: ChunkPlan,
  ): Job {
    if (this.#closed) throw new BurrowError('INTERNAL', 'the chunk worker pool is closed');
    const data = source instanceof Uint8Array ? source : undefined;
    const slot = options.transfer === true && data !== undefined ? arenaSlot(data) : undefined;
    const job: Job = {
      id: this.#nextJobId++,
      want,
      // A copy now, not at dispatch: the caller may reuse its buffer as soon as we return.
      data:
        data === undefined || slot !== undefined || (options.transfer === true && ownsBuffer(data))
          ? data
          : ownedCopy(data),
      ...(source instanceof Uint8Array ? {} : { file: source }),
      crypt: options.crypt,
      level: options.compress === false ? 0 : (options.level ?? BLOB_ZSTD_LEVEL),
      slot,
      ...(check === undefined
        ? {}
        : { expectedDigest: check.expectedDigest, expectedSize: check.expectedSize }),
      ...(plan === undefined ? {} : { plan }),
      ...(want === 'both' && options.chunkFiles !== undefined
        ? { chunkFiles: options.chunkFiles }
        : {}),
      state: 'queued',
      worker: undefined,
      digest: deferred(),
      encoded: deferred(),
    };
    this.#queue.push(job);
    this.#dispatch();
    return job;
  }

  #requestEncode(job: Job, chunkFiles?: ChunkFileTarget): Promise<Uint8Array> {
    if (job.dropped === true) return Promise.reject(droppedError(job));
    if (job.state === 'held' && job.heldHere !== undefined) {
      const data = job.heldHere;
      job.heldHere = undefined;
      this.#runHere(job, () => this.#encodeHere(job, data));
    } else if (job.state === 'held' && job.worker !== undefined) {
      job.state = 'encoding';
      this.#post(
        job.worker,
        chunkFiles === undefined
          ? { type: 'encode', id: job.id }
          : { type: 'encode', id: job.id, chunkFiles },
      );
    } else if (job.state !== 'done') {
      job.encoded.reject(
        new BurrowError(
          'INTERNAL',
          `chunk job ${job.id}: encode() before its digest (${job.state})`,
        ),
      );
    }
    return job.encoded.promise;
  }

  #drop(job: Job): void {
    if (job.state === 'queued') {
      const at = this.#queue.indexOf(job);
      if (at >= 0) this.#queue.splice(at, 1);
      this.#freeSlot(job);
      this.#fail(job, droppedError(job));
      return;
    }
    if (job.state === 'held' && job.heldHere !== undefined) {
      job.heldHere = undefined;
      this.#freeSlot(job);
      this.#fail(job, droppedError(job));
      return;
    }
    if (job.state === 'done' || job.worker === undefined) return;
    const w = job.worker;
    // A job still digesting is dropped when its digest arrives (the worker holds it then).
    if (job.state === 'held') {
      // The worker reads a held chunk only to encode it, which it will not be asked to do now.
      this.#dropLater(w, job.id);
      this.#freeSlot(job);
      // The digest is in; only a later encode() can still ask for something, and it gets the
      // error then. In an incremental backup nearly every chunk is dropped here: an error (and
      // its stack trace) per drop cost the main thread 16 ms of a 0.85 s unchanged backup.
      job.dropped = true;
      this.#finish(job);
    } else if (job.state === 'digesting') {
      job.state = 'done';
      job.encoded.reject(droppedError(job));
    }
  }

  #spawn(): PoolWorker {
    const spec = workerSpec();
    let worker: Worker;
    try {
      worker = new Worker(spec.entry, { eval: spec.eval });
    } catch (cause) {
      throw new BurrowError(
        'INTERNAL',
        `cannot start a chunk worker thread: ${(cause as Error).message}`,
        { cause },
      );
    }
    const w: PoolWorker = {
      worker,
      jobs: new Map(),
      keys: new Set(),
      arenas: new Set(),
      dead: false,
      drops: [],
      dropFlush: undefined,
    };
    worker.on('message', (message: FromWorker) => this.#onMessage(w, message));
    worker.on('error', (error) => this.#onDeath(w, error));
    worker.on('messageerror', (error) => this.#onDeath(w, error));
    worker.on('exit', (code) => {
      this.#onDeath(w, new Error(`the chunk worker thread exited with code ${code}`));
    });
    // After the listeners: adding a 'message' listener refs the worker's port again.
    worker.unref();
    this.#workers.push(w);
    return w;
  }

  #onDeath(w: PoolWorker, cause: Error): void {
    if (w.dead) return;
    w.dead = true;
    const at = this.#workers.indexOf(w);
    if (at >= 0) this.#workers.splice(at, 1);
    // Slots of a failed worker's jobs are not freed: the thread may not have stopped reading yet.
    for (const job of w.jobs.values()) {
      job.slot = undefined;
      this.#fail(
        job,
        new BurrowError('INTERNAL', `chunk worker thread failed: ${cause.message}`, { cause }),
      );
    }
    w.jobs.clear();
    void w.worker.terminate();
    // Jobs still queued get a fresh worker.
    this.#dispatch();
  }

  #onMessage(w: PoolWorker, message: FromWorker): void {
    const job = w.jobs.get(message.id);
    if (job === undefined) return;
    switch (message.type) {
      case 'digest':
        if (job.state === 'done') {
          // Dropped while it was digesting: the worker holds the data until told.
          this.#dropLater(w, job.id);
          this.#freeSlot(job);
          job.digest.resolve(message.digest);
          this.#release(job);
          return;
        }
        job.state = 'held';
        job.digest.resolve(message.digest);
        return;
      case 'encoded':
        if (message.written !== undefined) job.written = message.written;
        if (message.digest !== undefined) job.digest.resolve(message.digest);
        this.#freeSlot(job);
        job.encoded.resolve(message.encoded);
        this.#finish(job);
        return;
      case 'error':
        // The worker forgets a job that failed.
        this.#freeSlot(job);
        this.#fail(job, rebuildError(message.error));
        return;
    }
  }

  #freeSlot(job: Job): void {
    const slot = job.slot;
    if (slot === undefined) return;
    job.slot = undefined;
    slot.arena.free(slot.index);
  }

  #fail(job: Job, error: BurrowError): void {
    job.digest.reject(error);
    job.encoded.reject(error);
    this.#finish(job);
  }

  #finish(job: Job): void {
    job.state = 'done';
    job.data = undefined;
    this.#release(job);
  }

  #release(job: Job): void {
    const w = job.worker;
    if (w === undefined) return;
    job.worker = undefined;
    if (w.jobs.delete(job.id) && w.jobs.size === 0 && !w.dead) w.worker.unref();
    this.#dispatch();
  }

  /**
   * Tells worker `w` to forget held job `id`, with its next job message or, if none comes first,
   * in one message at the next turn of the event loop. A drop on its own woke the worker for
   * nothing and, on a machine with every core busy, took the CPU from the main thread: in an
   * incremental backup nearly every chunk is known, so that was half the messages.
   */
  #dropLater(w: PoolWorker, id: number): void {
    w.drops.push(id);
    if (w.dropFlush !== undefined) return;
    w.dropFlush = setImmediate(() => {
      w.dropFlush = undefined;
      if (w.drops.length > 0 && !w.dead) this.#post(w, { type: 'drop', ids: w.drops.splice(0) });
    });
  }

  #post(w: PoolWorker, message: ToWorker, transferList: ArrayBuffer[] = []): void {
    w.worker.postMessage(message, transferList);
  }

  #keyIdFor(w: PoolWorker, crypt: CryptConfig | undefined): number {
    if (crypt === undefined) return 0;
    let id = this.#keyIds.get(crypt);
    if (id === undefined) {
      id = this.#nextKeyId++;
      this.#keyIds.set(crypt, id);
    }
    if (!w.keys.has(id)) {
      this.#post(w, { type: 'key', keyId: id, key: crypt.encKey });
      w.keys.add(id);
    }
    return id;
  }

  /**
   * A job done on the calling thread, as a worker would do it (chunk-worker.ts), while the inline
   * budget lasts. Called synchronously from #submit: the caller gets settled promises.
   */
  #handleHere(job: Job): void {
    const data = job.data;
    this.#inlineLeft -= job.data?.byteLength ?? job.expectedSize ?? 0;
    job.data = undefined;
    this.#runHere(job, () => {
      const bytes = data ?? readChunkFileSync(job.file!.chunkFile);
      switch (job.want) {
        case 'decode':
        case 'write': {
          job.state = 'encoding';
          const decoded = decodeCheckedChunk(bytes, job, `decode job ${job.id}`);
          if (job.want === 'write') {
            applyChunkPlan(decoded, job.plan!);
            job.encoded.resolve(new Uint8Array(0));
          } else {
            job.encoded.resolve(decoded);
          }
          this.#finish(job);
          return;
        }
        case 'digest':
          job.digest.resolve(computeChunkDigest(bytes, job.crypt));
          job.state = 'held';
          job.heldHere = bytes;
          return;
        case 'both':
          job.digest.resolve(computeChunkDigest(bytes, job.crypt));
          this.#encodeHere(job, bytes);
          return;
        case 'encode':
          this.#encodeHere(job, bytes);
          return;
      }
    });
  }

  #encodeHere(job: Job, data: Uint8Array): void {
    job.state = 'encoding';
    const encoded = encodeBlob(data, {
      compress: job.level > 0,
      level: job.level,
      crypt: job.crypt,
    });
    this.#freeSlot(job);
    job.encoded.resolve(encoded);
    this.#finish(job);
  }

  /** Runs one inline step; a failure fails the job with the error a worker would have sent. */
  #runHere(job: Job, step: () => void): void {
    try {
      step();
    } catch (error) {
      job.heldHere = undefined;
      this.#freeSlot(job);
      this.#fail(
        job,
        isBurrowError(error)
          ? error
          : new BurrowError('INTERNAL', `chunk job ${job.id}: ${(error as Error).message}`, {
              cause: error,
            }),
      );
    }
  }

  #dispatch(): void {
    if (this.#closed) return;
    while (this.#queue.length > 0) {
      if (this.#workers.length === 0 && this.#inlineLeft > 0) {
        this.#handleHere(this.#queue.shift()!);
        continue;
      }
      // Once a thread runs, every job goes to the threads.
      this.#inlineLeft = 0;
      let best: PoolWorker | undefined;
      for (const w of this.#workers) {
        if (
          w.jobs.size < MAX_JOBS_PER_WORKER &&
          (best === undefined || w.jobs.size < best.jobs.size)
        )
          best = w;
      }
      // One more thread only when every running one is busy.
      if ((best === undefined || best.jobs.size > 0) && this.#workers.length < this.threads) {
        try {
          best = this.#spawn();
        } catch (error) {
          // Called from event handlers too: never throw here. Without any worker, the waiting
          // jobs fail; otherwise the workers there are serve them.
          if (this.#workers.length === 0) {
            for (const job of this.#queue.splice(0)) this.#fail(job, error as BurrowError);
            return;
          }
        }
      }
      if (best === undefined) return;
      const job = this.#queue.shift()!;
      const data = job.data;
      job.worker = best;
      job.state = job.want === 'digest' ? 'digesting' : 'encoding';
      if (best.jobs.size === 0) best.worker.ref();
      best.jobs.set(job.id, job);
      const slot = job.slot;
      if (slot !== undefined && !best.arenas.has(slot.arena.id)) {
        this.#post(best, { type: 'arena', arenaId: slot.arena.id, memory: slot.arena.memory! });
        best.arenas.add(slot.arena.id);
      }
      const message: ToWorker = {
        type: 'job',
        id: job.id,
        want: job.want,
        data:
          data === undefined
            ? job.file!
            : slot === undefined
              ? data
              : { arenaId: slot.arena.id, offset: data.byteOffset, length: data.byteLength },
        keyId: this.#keyIdFor(best, job.crypt),
        level: job.level,
        ...(job.expectedDigest === undefined
          ? {}
          : { expectedDigest: ownDigest(job.expectedDigest), expectedSize: job.expectedSize! }),
        ...(job.plan === undefined ? {} : { plan: job.plan }),
        ...(job.chunkFiles === undefined ? {} : { chunkFiles: job.chunkFiles }),
        ...(best.drops.length === 0 ? {} : { drops: best.drops.splice(0) }),
      };
      job.data = undefined;
      if (data === undefined || slot !== undefined) {
        this.#post(best, message);
        continue;
      }
      try {
        this.#post(best, message, [data.buffer as ArrayBuffer]);
      } catch {
        // An untransferable buffer (Node marks some as such): fall back to a copy.
        this.#post(best, message, []);
      }
    }
  }
}
