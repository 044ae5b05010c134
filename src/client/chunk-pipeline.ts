/**
 * The upload half of the backup data path (ARCHITECTURE.md, pbs-protocol §5.4): cut chunks in,
 * a closed index out, with the CPU work spread over worker threads.
 *
 *   main thread: pull chunk ─► submit to pool ─┐            ┌─► in stream order: csum, batch,
 *                (window full? wait)           ▼            │   appendIndex, progress; closeIndex
 *   workers:                          digest ─► main decides: known → drop
 *                                                           new → encode ─► uploadChunk ─► known
 *
 * - Decisions are made as digests arrive, in any order, so a new chunk is compressed and encrypted
 *   (and uploaded) as soon as possible; only the appends wait for stream order. The first chunk to
 *   reach a digest uploads it; every other chunk with that digest, earlier or later in the stream,
 *   waits for that upload and is then appended as known, so each digest is uploaded once.
 * - A digest that is not known is offered to the writer's reuseStoredChunk first, where there is
 *   one (local mode): a chunk the store already holds is referenced, not encoded and uploaded.
 * - While most recent chunks were new (a first backup), a chunk is digested and encoded in one
 *   worker job and the blob of a chunk found known is dropped; while most were known, the digest
 *   comes first and only new chunks are encoded (#speculate).
 * - When the writer offers it (a local datastore: BackupWriter.chunkFileTarget), the worker that
 *   encodes a new chunk (either way) also writes its temporary file into the store, and the
 *   writer's uploadChunkFile puts it in place: the blob never comes back to this thread, nor does
 *   the copy into the page cache run on it. A temporary file of a chunk that turns out not to be
 *   needed is removed here.
 * - Memory is bounded by `window`: at most that many chunks between "pulled from the source" and
 *   "appended"; the source is not read further until the oldest chunk is appended.
 * - Appends are batched: a batch is sent once it holds 64 entries, and before close. PBS's client
 *   batches only consecutive known chunks and gives each uploaded chunk an append of its own; an
 *   uploaded chunk is known to the server once its upload was answered, so Burrow batches it like
 *   a known one. Over a network that saves one request and round trip per new chunk (a PBS server
 *   accepts any list of digests known in the session).
 * - The index csum is kept as the appends go: dynamic, SHA-256 over (end offset u64 LE || digest)
 *   per chunk; fixed, over the digests alone (pbs-protocol §5.4 item 5).
 * - Fixed indexes (images): an all-zero 4 MiB chunk is recognised with one memcmp against a zero
 *   buffer and takes a digest computed once per key (the unencrypted one is a constant), so zeros
 *   are never hashed again and, with a `known` set shared by the session, uploaded once.
 * - On the first failure (source, worker, upload, append, progress callback) nothing more is
 *   appended or uploaded; the call rejects with that error once every chunk in flight has settled
 *   and the source iterator was closed. The pool stays usable.
 */
import { rmSync } from 'node:fs';
import type { CryptConfig } from '../crypto/crypt-config.js';
import type { ChunkFileTarget } from '../datastore/chunk-file.js';
import { computeChunkDigest } from '../format/data-blob.js';
import { IndexCsumBuilder } from '../format/index-common.js';
import {
  FIXED_CHUNK_SIZE,
  MAX_CHUNK_SIZE,
  MAX_ZSTD_LEVEL,
  MIN_ZSTD_LEVEL,
} from '../format/magic.js';
import { asBuffer, fromHex, toHex } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import type { BackupWriter, IndexKind } from './backup-writer.js';
import type { WrittenBlob } from './chunk-worker.js';
import type { ChunkJob, ChunkWorkerPool } from './worker-pool.js';

export { ChunkWorkerPool } from './worker-pool.js';
export type { ChunkJob, JobOptions, ProcessedChunk } from './worker-pool.js';

/** PBS's client sends a batch of known chunks once it holds this many entries. */
export const APPEND_BATCH_SIZE = 64;

/** SHA-256 of 4 MiB of zeros (pbs-protocol §11 vector 8): the unencrypted all-zero image chunk. */
export const ZERO_CHUNK_DIGEST_HEX =
  'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8';

export interface UploadProgress {
  /** Stream bytes appended so far. */
  bytes: number;
  chunks: number;
  reusedChunks: number;
  /** Encoded bytes uploaded so far. */
  uploadedBytes: number;
}

export interface UploadOptions {
  writer: BackupWriter;
  wid: number;
  kind: IndexKind;
  /** Encrypt mode: digests keyed with the id key, blobs encrypted. */
  crypt?: CryptConfig;
  /** zstd when that is smaller (default true). */
  compress?: boolean;
  /** The zstd level when compressing (default BLOB_ZSTD_LEVEL, 1). */
  level?: number;
  /**
   * Hex digests the server knows in this session (from downloadPrevious of the same archive, or
   * shared by all archives of the session): reused without upload. New uploads are added.
   */
  known: Set<string>;
  pool: ChunkWorkerPool;
  onProgress?: (p: UploadProgress) => void;
  /** At most this many chunks in flight (default 2 × pool threads + 4). */
  window?: number;
  /**
   * The pipeline owns the chunks it pulls (default true): a chunk that is the whole of its
   * ArrayBuffer is moved to a worker and left detached (length 0) for the caller; views into a
   * bigger buffer are copied. false: every chunk is copied and stays intact.
   */
  transferChunks?: boolean;
  /** Abort: the upload fails with TASK_ABORTED (or the signal's BurrowError reason). */
  signal?: AbortSignal;
}

export interface UploadResult {
  /** Stream length (the index `size`). */
  size: number;
  chunkCount: number;
  /** The index csum sent to closeIndex. */
  csum: Uint8Array;
  /** Chunks appended without an upload by this call (known, or a repeat within the stream). */
  reusedChunks: number;
  uploadedChunks: number;
  /** Encoded bytes uploaded. */
  uploadedBytes: number;
  /** Fixed indexes: all-zero 4 MiB chunks seen. */
  zeroChunks?: number;
}

/** Dynamic or fixed per `options.kind`: `chunks` are already cut, in stream order. Appends in stream order, closes the index. */
export async function uploadChunks(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: UploadOptions,
): Promise<UploadResult> {
  return new ChunkUpload(options).run(chunks);
}

/** An image into a fixed index: `chunks` are 4 MiB pieces in order, only the last may be shorter. */
export function uploadFixed(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: Omit<UploadOptions, 'kind'>,
): Promise<UploadResult> {
  return uploadChunks(chunks, { ...options, kind: 'fixed' });
}

// ---------------------------------------------------------------------------------------------

let zeroChunk: Uint8Array | undefined;
const zeroDigests = new WeakMap<CryptConfig, Uint8Array>();
let plainZeroDigest: Uint8Array | undefined;

function isZeroChunk(chunk: Uint8Array): boolean {
  if (chunk.byteLength !== FIXED_CHUNK_SIZE) return false;
  // Cheap early exits before the memcmp; random data fails on the first byte.
  if (chunk[0] !== 0 || chunk[FIXED_CHUNK_SIZE - 1] !== 0) return false;
  zeroChunk ??= new Uint8Array(FIXED_CHUNK_SIZE);
  return asBuffer(chunk).equals(asBuffer(zeroChunk));
}

/** The digest of a 4 MiB zero chunk under `crypt`, hashed at most once per key. */
export function zeroChunkDigest(crypt?: CryptConfig): Uint8Array {
  if (crypt === undefined) return (plainZeroDigest ??= fromHex(ZERO_CHUNK_DIGEST_HEX));
  let digest = zeroDigests.get(crypt);
  if (digest === undefined) {
    zeroChunk ??= new Uint8Array(FIXED_CHUNK_SIZE);
    digest = computeChunkDigest(zeroChunk, crypt);
    zeroDigests.set(crypt, digest);
  }
  return digest;
}

interface Outcome {
  digest: Uint8Array;
  uploaded: boolean;
  encodedSize: number;
}

interface Slot {
  offset: number;
  size: number;
  outcome: Promise<Outcome>;
}

const noop = (): void => {};

function checkOptions(o: UploadOptions): void {
  if (!Number.isSafeInteger(o.wid) || o.wid < 1) {
    throw new BurrowError('INVALID_ARGUMENT', `writer id must be a positive integer, got ${o.wid}`);
  }
  if (o.kind !== 'dynamic' && o.kind !== 'fixed') {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `index kind must be dynamic or fixed, got ${String(o.kind)}`,
    );
  }
  if (o.window !== undefined && (!Number.isSafeInteger(o.window) || o.window < 1)) {
    throw new BurrowError('INVALID_ARGUMENT', `window must be a positive integer, got ${o.window}`);
  }
  if (
    o.level !== undefined &&
    (!Number.isSafeInteger(o.level) || o.level < MIN_ZSTD_LEVEL || o.level > MAX_ZSTD_LEVEL)
  ) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `zstd level must be an integer from ${MIN_ZSTD_LEVEL} to ${MAX_ZSTD_LEVEL}, got ${o.level}`,
    );
  }
  if (!(o.known instanceof Set)) {
    throw new BurrowError('INVALID_ARGUMENT', 'known must be a Set of hex digests');
  }
  if (o.pool.closed) throw new BurrowError('INVALID_ARGUMENT', 'the chunk worker pool is closed');
}

function abortError(signal: AbortSignal): BurrowError {
  const reason: unknown = signal.reason;
  if (reason instanceof BurrowError) return reason;
  return new BurrowError('TASK_ABORTED', 'chunk upload aborted', { cause: reason });
}

class ChunkUpload {
  readonly #o: UploadOptions;
  readonly #window: number;
  readonly #compress: boolean;
  readonly #transfer: boolean;
  /** Where workers write new chunks' files themselves (local mode), else undefined. */
  readonly #chunkFiles: ChunkFileTarget | undefined;
  /** Chunks pulled and not yet appended, in stream order. */
  readonly #slots: Slot[] = [];
  /** Uploads by digest hex while they run: later chunks with that digest wait for them. */
  readonly #uploading = new Map<string, Promise<number | undefined>>();
  #failed = false;
  #failure: unknown;
  #producerDone = false;
  #wakeProducer: (() => void) | undefined;
  #wakeConsumer: (() => void) | undefined;

  // Consumer state, in stream order.
  readonly #csum = new IndexCsumBuilder();
  readonly #entry = new Uint8Array(40);
  readonly #entryView = new DataView(this.#entry.buffer);
  #batchDigests: Uint8Array[] = [];
  #batchOffsets: number[] = [];
  #size = 0;
  #chunkCount = 0;
  #reused = 0;
  #uploaded = 0;
  #uploadedBytes = 0;
  #zeroChunks = 0;

  constructor(options: UploadOptions) {
    checkOptions(options);
    this.#o = options;
    this.#window = options.window ?? options.pool.threads * 2 + 4;
    this.#compress = options.compress ?? true;
    this.#transfer = options.transferChunks ?? true;
    this.#chunkFiles =
      options.writer.uploadChunkFile === undefined ? undefined : options.writer.chunkFileTarget?.();
    // Nothing known yet (a first backup, a new archive): expect new chunks.
    this.#newShare = options.known.size === 0 ? 1 : 0;
  }

  async run(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<UploadResult> {
    const signal = this.#o.signal;
    const onAbort = (): void => this.#fail(abortError(signal!));
    if (signal !== undefined) {
      if (signal.aborted) throw abortError(signal);
      signal.addEventListener('abort', onAbort, { once: true });
    }
    try {
      const producer = this.#produce(chunks);
      await this.#consume();
      await producer;
      if (this.#failed) {
        await Promise.allSettled(this.#slots.map((s) => s.outcome));
        throw this.#failure;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    const result: UploadResult = {
      size: this.#size,
      chunkCount: this.#chunkCount,
      csum: this.#csumPeek(),
      reusedChunks: this.#reused,
      uploadedChunks: this.#uploaded,
      uploadedBytes: this.#uploadedBytes,
    };
    if (this.#o.kind === 'fixed') result.zeroChunks = this.#zeroChunks;
    return result;
  }

  #fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#failure = error;
    this.#wake();
  }

  #wake(): void {
    const p = this.#wakeProducer;
    const c = this.#wakeConsumer;
    this.#wakeProducer = undefined;
    this.#wakeConsumer = undefined;
    p?.();
    c?.();
  }

  // -- producer ----------------------------------------------------------------------------------

  async #produce(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    const fixed = this.#o.kind === 'fixed';
    let offset = 0;
    let shortChunkAt: number | undefined;
    try {
      for await (const chunk of chunks) {
        if (this.#failed) break;
        if (!(chunk instanceof Uint8Array)) {
          throw new BurrowError(
            'INVALID_ARGUMENT',
            `chunk at stream offset ${offset} is not a Uint8Array`,
            { details: { offset } },
          );
        }
        const size = chunk.byteLength;
        // Empty chunks (a forced cut right at a boundary) carry nothing and are skipped.
        if (size === 0) continue;
        if (fixed) {
          if (shortChunkAt !== undefined) {
            throw new BurrowError(
              'INVALID_ARGUMENT',
              `fixed index: the chunk at offset ${shortChunkAt} is shorter than ${FIXED_CHUNK_SIZE} bytes but is not the last`,
              { details: { offset: shortChunkAt, expected: FIXED_CHUNK_SIZE } },
            );
          }
          if (size > FIXED_CHUNK_SIZE) {
            throw new BurrowError(
              'INVALID_ARGUMENT',
              `fixed index: chunk at offset ${offset} has ${size} bytes, more than ${FIXED_CHUNK_SIZE}`,
              { details: { offset, expected: FIXED_CHUNK_SIZE, actual: size } },
            );
          }
          if (size < FIXED_CHUNK_SIZE) shortChunkAt = offset;
        } else if (size > MAX_CHUNK_SIZE) {
          throw new BurrowError(
            'INVALID_ARGUMENT',
            `chunk at offset ${offset} has ${size} bytes, more than the ${MAX_CHUNK_SIZE}-byte limit`,
            { details: { offset, expected: MAX_CHUNK_SIZE, actual: size } },
          );
        }
        while (this.#slots.length >= this.#window && !this.#failed) {
          await new Promise<void>((resolve) => (this.#wakeProducer = resolve));
        }
        if (this.#failed) break;
        const zero = fixed && isZeroChunk(chunk);
        if (zero) this.#zeroChunks++;
        const outcome = this.#process(chunk, size, zero);
        outcome.catch(noop); // observed by the consumer, or settled on failure
        this.#slots.push({ offset, size, outcome });
        offset += size;
        this.#wakeConsumer?.();
      }
    } catch (error) {
      this.#fail(error);
    } finally {
      this.#producerDone = true;
      this.#wakeConsumer?.();
    }
  }

  /**
   * Whether the next chunk is digested and encoded in one go: while most recent chunks were new
   * (a first backup), asking the worker for the digest, deciding and then asking for the blob
   * costs a round trip through this thread per chunk, during which the worker idles whenever
   * this thread is busy reading and chunking. While most were known (an unchanged backup), the
   * two steps save compressing chunks that are then dropped.
   */
  #speculate(): boolean {
    return this.#newShare >= 0.5;
  }

  /** Moving share of new chunks among the recent decisions (1: all new). */
  #newShare: number;

  #noteDecision(isNew: boolean): void {
    this.#newShare = this.#newShare * 0.875 + (isNew ? 0.125 : 0);
  }

  /** Digest, dedup decision, encode and upload of one chunk; resolves when it may be appended. */
  async #process(chunk: Uint8Array, size: number, zero: boolean): Promise<Outcome> {
    const o = this.#o;
    let job: ChunkJob | undefined;
    // A worker's temporary chunk file, until it is handed to the writer (which then owns it).
    let written: WrittenBlob | undefined;
    const jobOptions = {
      crypt: o.crypt,
      compress: this.#compress,
      ...(o.level === undefined ? {} : { level: o.level }),
      transfer: this.#transfer,
    };
    try {
      let digest: Uint8Array;
      let encoded: Uint8Array | undefined;
      if (zero) {
        digest = zeroChunkDigest(o.crypt);
      } else if (this.#speculate()) {
        ({ digest, encoded, written } = await o.pool.digestAndEncode(chunk, {
          ...jobOptions,
          chunkFiles: this.#chunkFiles,
        }));
      } else {
        job = o.pool.submit(chunk, jobOptions);
        digest = await job.digest;
      }
      this.#checkNotFailed();
      const hex = toHex(digest);
      if (o.known.has(hex)) {
        if (!zero) this.#noteDecision(false);
        return { digest, uploaded: false, encodedSize: 0 };
      }
      const running = this.#uploading.get(hex);
      if (running !== undefined) {
        if (!zero) this.#noteDecision(false);
        await running;
        return { digest, uploaded: false, encodedSize: 0 };
      }
      const encodeJob = job;
      job = undefined;
      const source = written ?? encoded ?? encodeJob;
      written = undefined;
      const upload = this.#upload(source, chunk, digest, hex, size, zero);
      this.#uploading.set(hex, upload);
      const clear = (): void => void this.#uploading.delete(hex);
      upload.then(clear, clear);
      const encodedSize = await upload;
      return encodedSize === undefined
        ? { digest, uploaded: false, encodedSize: 0 }
        : { digest, uploaded: true, encodedSize };
    } finally {
      job?.drop();
      // Known after all (a repeat in the stream), or a failure: the file is not needed.
      if (written !== undefined) rmSync(written.temp, { force: true });
    }
  }

  /**
   * A chunk not known to the session: referenced as stored when the repository finds it in its
   * chunk store (undefined; local mode, see BackupWriter.reuseStoredChunk), else encoded (unless
   * `source` is the blob already, or its file) and uploaded (the encoded size).
   */
  async #upload(
    source: ChunkJob | Uint8Array | WrittenBlob | undefined,
    chunk: Uint8Array,
    digest: Uint8Array,
    hex: string,
    size: number,
    zero: boolean,
  ): Promise<number | undefined> {
    const o = this.#o;
    if (source !== undefined && 'temp' in source) {
      // The worker found no file of this digest in the store a moment ago and wrote one; the
      // writer's insert rules settle any race with another backup.
      this.#noteDecision(true);
      return this.#uploadFile(source, digest, hex, size);
    }
    // A stat per new chunk, against compressing (and writing) one the store has: a first backup
    // into a new group, say, of data that other groups hold.
    if (o.writer.reuseStoredChunk !== undefined) {
      // A worker holding the chunk for an encode that is not needed lets go of it.
      const dropSource = (): void => {
        if (source !== undefined && !(source instanceof Uint8Array)) source.drop();
      };
      let stored: boolean;
      try {
        stored = await o.writer.reuseStoredChunk(
          o.wid,
          o.kind,
          digest,
          size,
          o.crypt !== undefined,
        );
      } catch (error) {
        dropSource();
        throw error;
      }
      if (stored) {
        dropSource();
        if (!zero) this.#noteDecision(false);
        o.known.add(hex);
        return undefined;
      }
    }
    if (!zero) this.#noteDecision(true);
    let encoded: Uint8Array;
    if (source instanceof Uint8Array) {
      encoded = source;
    } else if (source !== undefined && this.#chunkFiles !== undefined) {
      // The new chunks of an incremental backup go into the store from the worker too.
      const result = await source.encodeToFile(this.#chunkFiles);
      if (result.written !== undefined) return this.#uploadFile(result.written, digest, hex, size);
      encoded = result.encoded;
    } else if (source !== undefined) {
      encoded = await source.encode();
    } else {
      encoded = await o.pool.encodeOnly(chunk, {
        crypt: o.crypt,
        compress: this.#compress,
        ...(o.level === undefined ? {} : { level: o.level }),
        transfer: this.#transfer,
      });
    }
    this.#checkNotFailed();
    await o.writer.uploadChunk(o.wid, o.kind, digest, size, encoded);
    o.known.add(hex);
    return encoded.byteLength;
  }

  /** A new chunk a worker wrote to a temporary file in the store: put in place by the writer. */
  async #uploadFile(
    written: WrittenBlob,
    digest: Uint8Array,
    hex: string,
    size: number,
  ): Promise<number> {
    const o = this.#o;
    try {
      this.#checkNotFailed();
      await o.writer.uploadChunkFile!(o.wid, o.kind, digest, size, written, written.kind);
    } catch (error) {
      // The writer removes it; a wrapper that failed before passing it on may not have.
      rmSync(written.temp, { force: true });
      throw error;
    }
    o.known.add(hex);
    return written.size;
  }

  #checkNotFailed(): void {
    if (this.#failed) {
      throw new BurrowError('INTERNAL', 'chunk upload stopped after an earlier failure');
    }
  }

  // -- consumer ----------------------------------------------------------------------------------

  async #consume(): Promise<void> {
    const o = this.#o;
    try {
      for (;;) {
        if (this.#failed) return;
        const slot = this.#slots[0];
        if (slot === undefined) {
          if (this.#producerDone) break;
          await new Promise<void>((resolve) => (this.#wakeConsumer = resolve));
          continue;
        }
        const outcome = await slot.outcome;
        if (this.#failed) return;
        this.#slots.shift();
        this.#wakeProducer?.();
        await this.#append(slot, outcome);
        o.onProgress?.({
          bytes: this.#size,
          chunks: this.#chunkCount,
          reusedChunks: this.#reused,
          uploadedBytes: this.#uploadedBytes,
        });
      }
      await this.#flush();
      if (this.#failed) return;
      await o.writer.closeIndex(o.wid, o.kind, this.#chunkCount, this.#size, this.#csumPeek());
    } catch (error) {
      this.#fail(error);
    }
  }

  #closedCsum: Uint8Array | undefined;

  /** The csum for closeIndex; run() returns the same value. */
  #csumPeek(): Uint8Array {
    this.#closedCsum ??= this.#csum.digest();
    return this.#closedCsum;
  }

  async #append(slot: Slot, outcome: Outcome): Promise<void> {
    const end = slot.offset + slot.size;
    if (this.#o.kind === 'dynamic') {
      this.#entryView.setBigUint64(0, BigInt(end), true);
      this.#entry.set(outcome.digest, 8);
      this.#csum.update(this.#entry);
    } else {
      this.#csum.update(outcome.digest);
    }
    this.#size = end;
    this.#chunkCount++;
    if (outcome.uploaded) {
      this.#uploaded++;
      this.#uploadedBytes += outcome.encodedSize;
    } else {
      this.#reused++;
    }
    // An uploaded chunk's upload has been answered by now, so the server knows it as it knows a
    // reused one: both go into the same batch.
    this.#batchDigests.push(outcome.digest);
    this.#batchOffsets.push(slot.offset);
    if (this.#batchDigests.length >= APPEND_BATCH_SIZE) await this.#flush();
  }

  async #flush(): Promise<void> {
    if (this.#batchDigests.length === 0 || this.#failed) return;
    const digests = this.#batchDigests;
    const offsets = this.#batchOffsets;
    this.#batchDigests = [];
    this.#batchOffsets = [];
    await this.#o.writer.appendIndex(this.#o.wid, this.#o.kind, digests, offsets);
  }
}
