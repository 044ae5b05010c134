/**
 * Reading one `.didx`/`.fidx` archive of a snapshot through a BackupReader, the restore half of
 * the data path (pbs-protocol §6.2 steps 2 and 3): the index is downloaded and its recomputed
 * csum and size must equal the manifest entry (the index header alone proves nothing), then
 * chunks are fetched by digest, decoded (decrypted when the archive is encrypted) and their
 * digest and length checked before a single byte is handed out.
 *
 * Two ways to read:
 * - `readAt(offset, length)` (RandomAccess) for the pxar accessor and the payload stream of split
 *   archives: chunks sit in a small LRU cache keyed by digest, and reads that walk forwards start
 *   fetching the next chunks ahead of need;
 * - `stream()` / `chunks()` for sequential restores: a window of chunks in flight, so fetching
 *   (file or network I/O) overlaps decoding and whatever the consumer does with the bytes.
 *
 * Every failure about the data names the snapshot, the archive and the archive byte offset of
 * the chunk (message and details), so a damaged chunk can be traced to what it breaks.
 */
import { toHex } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import type { CryptConfig } from '../crypto/crypt-config.js';
import { computeChunkDigest, decodeBlob } from '../format/data-blob.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import type { IndexKind } from '../format/index-common.js';
import type { BackupManifest, FileInfo } from '../format/manifest.js';
import { archiveTypeOf, lookupFile, serverArchiveName } from '../format/manifest.js';
import type { RandomAccess } from '../pxar/format.js';
import { formatSnapshot } from '../types/backup.js';
import type { CryptMode } from '../types/crypt-mode.js';
import type { BackupReader } from './backup-writer.js';
import type { ChunkPlan } from './chunk-plan.js';
import type { ChunkWorkerPool } from './worker-pool.js';

/** Decoded chunks kept for random access: eight PBS-sized (4 MiB) chunks. */
export const DEFAULT_CACHE_BYTES = 8 * 4 * 1024 * 1024;
/** Chunks fetched ahead of the one being consumed, from a local datastore. */
export const DEFAULT_PREFETCH = 4;
/**
 * The same for a sequential walk over a network (a reader without chunk files): each fetch waits
 * for the server to read the chunk and send it, so more must be under way to keep the decoding
 * threads fed. A full restore of the bench:server dataset from a server on this machine took
 * 1.79-1.90 s with 12 against 1.92-2.02 s with 4 (to tmpfs, three alternating runs).
 */
export const REMOTE_PREFETCH = 12;
/**
 * Bytes of chunk data the sequential read-ahead may have under way beside the chunk being
 * consumed, whatever the chunk count: twelve maximal (16 MiB) chunks would be 192 MiB.
 */
export const PREFETCH_BYTES = 48 * 1024 * 1024;

const EMPTY = new Uint8Array(0);

/**
 * Decodes a stored chunk (a DataBlob) and checks it: CRC, decryption with `crypt`, then the
 * decoded length and digest, with decodeBlob's error codes. The default runs decodeBlob on this
 * thread; a worker pool can supply one that runs elsewhere, so decoding overlaps the restore.
 */
export type ChunkDecoder = (
  raw: Uint8Array,
  options: { crypt?: CryptConfig; expectedDigest: Uint8Array; expectedSize: number },
) => Uint8Array | Promise<Uint8Array>;

/**
 * decodeBlob without the CRC pass: the digest of the decoded data (and for encrypted chunks the
 * GCM tag) proves every byte that matters, so the CRC would only add a second pass over the
 * encoded chunk (about a tenth of the decoding time) to name the same damage differently.
 */
export const decodeChunkHere: ChunkDecoder = (raw, options) =>
  decodeBlob(raw, { ...options, checkCrc: false });

/**
 * A ChunkDecoder that decodes on `pool`'s worker threads (the same checks as decodeChunkHere),
 * so a restore's digest and zstd work overlaps its reading and writing. `raw` is moved to the
 * worker when it owns its whole buffer: the readers hand each stored chunk out once.
 */
export function workerChunkDecoder(pool: ChunkWorkerPool): ChunkDecoder {
  return (raw, options) =>
    pool.decode(
      raw,
      {
        crypt: options.crypt,
        expectedDigest: options.expectedDigest,
        expectedSize: options.expectedSize,
      },
      true,
    );
}

/**
 * ChunkDecoder's work on a chunk file it reads itself (BackupReader.chunkFile), with the read
 * errors of ChunkStore.loadChunk.
 */
export type ChunkFileDecoder = (
  path: string,
  options: Parameters<ChunkDecoder>[1],
) => Promise<Uint8Array>;

/**
 * A ChunkFileDecoder that reads and decodes on `pool`'s worker threads: on a local datastore the
 * main thread then neither reads chunk files nor allocates their bytes.
 */
export function workerChunkFileDecoder(pool: ChunkWorkerPool): ChunkFileDecoder {
  return (path, options) =>
    pool.decodeFile(path, {
      crypt: options.crypt,
      expectedDigest: options.expectedDigest,
      expectedSize: options.expectedSize,
    });
}

/**
 * Decodes a stored chunk (a chunk file, or raw bytes fetched) with the checks of ChunkDecoder and
 * carries out a ChunkPlan with it where it was decoded (chunk-plan.ts).
 */
export type ChunkPlanRunner = (
  source: { chunkFile: string } | Uint8Array,
  options: { crypt?: CryptConfig; expectedDigest: Uint8Array; expectedSize: number },
  plan: ChunkPlan,
) => Promise<void>;

/** A ChunkPlanRunner on `pool`'s threads; fetched raw bytes are moved there. */
export function workerChunkPlanRunner(pool: ChunkWorkerPool): ChunkPlanRunner {
  return (source, options, plan) => pool.decodeAndWrite(source, options, plan, true);
}

export interface ArchiveReaderOptions {
  /** Bytes of decoded chunks the random-access cache may hold (default 32 MiB). */
  cacheBytes?: number;
  /**
   * Chunks in flight ahead of the consumer (default DEFAULT_PREFETCH; for the sequential walk of
   * chunks() from a reader without chunk files, REMOTE_PREFETCH; 0 disables read-ahead).
   */
  prefetch?: number;
  /** Bytes of chunk data the sequential read-ahead may have under way (default PREFETCH_BYTES). */
  prefetchBytes?: number;
  /** How chunks are decoded (default decodeChunkHere). */
  decode?: ChunkDecoder;
  /** Used instead of reader.chunk() and `decode` when the reader names chunk files (local). */
  decodeFile?: ChunkFileDecoder;
  /** Enables ArchiveReader.writeFromChunk (restores that write file contents off this thread). */
  runPlan?: ChunkPlanRunner;
}

/** One chunk of the index: where it lies in the archive and what it must hash to. */
export interface ArchiveChunk {
  readonly position: number;
  /** Archive byte range [start, end). */
  readonly start: number;
  readonly end: number;
  readonly digest: Uint8Array;
}

/** A chunk as the sequential reader hands it out. */
export interface ArchiveChunkData extends ArchiveChunk {
  /** Decoded, checked content; undefined for a skipped all-zero chunk (see `skipZero`). */
  readonly data: Uint8Array | undefined;
}

export interface ChunkIterationOptions {
  /** First byte to cover (default 0); the first chunk is the one holding it. */
  start?: number;
  /** End of the range (default the archive size). */
  end?: number;
  /**
   * Do not fetch chunks whose digest is that of all zeros of their length (the digest proves the
   * content, so nothing is lost); they come out with `data: undefined`. For sparse image restores;
   * fixed indexes only (ignored for dynamic ones).
   */
  skipZero?: boolean;
}

export interface ArchiveReader extends RandomAccess {
  /** `ns/.../type/id/time`, for messages. */
  readonly snapshot: string;
  /** The server-side name, e.g. `root.pxar.didx`. */
  readonly archiveName: string;
  readonly kind: IndexKind;
  readonly cryptMode: CryptMode;
  /** Archive (stream or image) size in bytes, as the manifest states and the index proves. */
  readonly size: number;
  readonly chunkCount: number;
  /** Fixed indexes: the chunk size (4 MiB from PBS writers); dynamic: undefined. */
  readonly chunkSize: number | undefined;
  /**
   * Up to `length` bytes from `offset`; short only at the end of the archive. The result may be a
   * view of a cached chunk: do not modify it.
   */
  readAt(offset: number, length: number): Promise<Uint8Array>;
  /** Up to `maxLength` bytes from `offset`, ending at the end of the chunk holding `offset`. */
  readPiece(offset: number, maxLength: number): Promise<Uint8Array>;
  /** The archive bytes in order, one decoded chunk (or part of one, at the range edges) at a time. */
  stream(options?: Omit<ChunkIterationOptions, 'skipZero'>): AsyncIterable<Uint8Array>;
  /** The chunks covering a range in order, with a window of fetches ahead of the consumer. */
  chunks(options?: ChunkIterationOptions): AsyncIterable<ArchiveChunkData>;
  chunk(position: number): ArchiveChunk;
  /** The position of the chunk holding archive byte `offset` (0 <= offset < size). */
  positionOf(offset: number): number;
  /** Whether chunk `position`'s digest is the one of all zero bytes of its length. */
  isZeroChunk(position: number): boolean;
  /** Decoded, checked content of one chunk (through the cache). */
  readChunk(position: number): Promise<Uint8Array>;
  /** Whether writeFromChunk() can be used (the reader was given a runPlan). */
  readonly writesFromChunks: boolean;
  /**
   * Fetches chunk `position` and has it decoded, checked and `plan` carried out where the
   * runPlan option does that (a worker thread); nothing of the chunk comes back here. Failures
   * name the archive offset, as reads do. Not cached: each call decodes the chunk.
   */
  writeFromChunk(position: number, plan: ChunkPlan): Promise<void>;
}

interface IndexView {
  readonly kind: IndexKind;
  readonly count: number;
  readonly size: number;
  readonly chunkSize: number | undefined;
  range(position: number): { start: number; end: number };
  digest(position: number): Uint8Array;
  positionOf(offset: number): number;
}

function where(snapshot: string, archive: string): string {
  return `snapshot ${snapshot}, archive ${archive}`;
}

/**
 * An error about `archive` of `snapshot`, keeping the original code and details; `offset` (when
 * given) is the archive byte offset and replaces an offset the original had inside a blob or
 * an index file, which survives as `innerOffset`.
 */
export function archiveError(
  error: unknown,
  snapshot: string,
  archive: string,
  context: { what?: string; offset?: number; extra?: Record<string, unknown> } = {},
): BurrowError {
  const prefix =
    `${where(snapshot, archive)}` +
    (context.what !== undefined ? `: ${context.what}` : '') +
    (context.offset !== undefined ? ` at byte offset ${context.offset}` : '');
  if (isBurrowError(error)) {
    const inner = error.details;
    return new BurrowError(error.code, `${prefix}: ${error.message}`, {
      details: {
        ...inner,
        ...(context.offset !== undefined && inner['offset'] !== undefined
          ? { innerOffset: inner['offset'] }
          : {}),
        snapshot,
        archive,
        ...(context.offset !== undefined ? { offset: context.offset } : {}),
        ...context.extra,
      },
      cause: error.cause ?? error,
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new BurrowError('IO_ERROR', `${prefix}: ${message}`, {
    details: {
      snapshot,
      archive,
      ...(context.offset !== undefined ? { offset: context.offset } : {}),
      ...context.extra,
    },
    cause: error,
  });
}

/** The manifest entry of an index archive; INVALID_ARCHIVE_NAME for a blob, NOT_FOUND when absent. */
export function indexArchiveInfo(manifest: BackupManifest, archiveName: string): FileInfo {
  const name = serverArchiveName(archiveName);
  if (archiveTypeOf(name) === 'blob') {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `${name} is a blob, not a chunked archive (.didx or .fidx)`,
      { details: { filename: name } },
    );
  }
  return lookupFile(manifest, name);
}

/**
 * Download and check the index of `archiveName` (pbs-protocol §6.2 step 2): it must parse, and
 * its recomputed csum and size must match the manifest. Registers its chunks with the reader.
 */
async function loadIndex(
  reader: BackupReader,
  info: FileInfo,
  snapshot: string,
): Promise<IndexView> {
  const name = info.filename;
  let raw: Uint8Array;
  try {
    raw = await reader.download(name);
  } catch (error) {
    throw archiveError(error, snapshot, name, { what: 'cannot download the index' });
  }
  const kind: IndexKind = archiveTypeOf(name) === 'fixed' ? 'fixed' : 'dynamic';
  let view: IndexView;
  let csum: Uint8Array;
  try {
    if (kind === 'fixed') {
      const index = FixedIndex.parse(raw);
      csum = index.computeCsum();
      view = {
        kind,
        count: index.count,
        size: index.size,
        chunkSize: index.chunkSize,
        range: (p) => index.chunkRange(p),
        digest: (p) => index.digest(p),
        positionOf: (o) => index.chunkForOffset(o),
      };
    } else {
      const index = DynamicIndex.parse(raw);
      csum = index.computeCsum();
      view = {
        kind,
        count: index.count,
        size: index.size,
        chunkSize: undefined,
        range: (p) => index.chunkRange(p),
        digest: (p) => index.digest(p),
        positionOf: (o) => index.chunkForOffset(o),
      };
    }
  } catch (error) {
    throw archiveError(error, snapshot, name, { what: 'invalid index' });
  }
  if (view.size !== info.size) {
    throw new BurrowError(
      'SIZE_MISMATCH',
      `${where(snapshot, name)}: the index covers ${view.size} bytes, the manifest says ${info.size}`,
      { details: { snapshot, archive: name, expected: info.size, actual: view.size } },
    );
  }
  const actual = toHex(csum);
  if (actual !== info.csum) {
    throw new BurrowError(
      'DIGEST_MISMATCH',
      `${where(snapshot, name)}: the index checksum ${actual} does not match the manifest (${info.csum})`,
      { details: { snapshot, archive: name, expected: info.csum, actual } },
    );
  }
  return view;
}

interface CacheEntry {
  readonly promise: Promise<Uint8Array>;
  readonly size: number;
}

/** Chunks by digest, least recently used first; holds promises so concurrent readers share a fetch. */
class ChunkCache {
  readonly #entries = new Map<string, CacheEntry>();
  #bytes = 0;

  constructor(readonly capacity: number) {}

  get(key: string): Promise<Uint8Array> | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.promise;
  }

  set(key: string, promise: Promise<Uint8Array>, size: number): void {
    if (this.capacity <= 0) return;
    this.delete(key);
    this.#entries.set(key, { promise, size });
    this.#bytes += size;
    // The newest entry stays even when it alone exceeds the capacity: it is about to be used.
    for (const [oldKey, old] of this.#entries) {
      if (this.#bytes <= this.capacity || oldKey === key) break;
      this.#entries.delete(oldKey);
      this.#bytes -= old.size;
    }
  }

  delete(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= entry.size;
  }
}

function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${name} must be a non-negative integer, got ${String(value)}`,
    );
  }
}

const noop = (): void => {};

class ChunkedArchiveReader implements ArchiveReader {
  readonly snapshot: string;
  readonly archiveName: string;
  readonly kind: IndexKind;
  readonly cryptMode: CryptMode;
  readonly size: number;
  readonly chunkCount: number;
  readonly chunkSize: number | undefined;
  readonly #reader: BackupReader;
  readonly #index: IndexView;
  readonly #crypt: CryptConfig | undefined;
  readonly #cache: ChunkCache;
  readonly #prefetch: number;
  /** The read-ahead of chunks(), the sequential walk. */
  readonly #walkPrefetch: number;
  readonly #prefetchBytes: number;
  readonly #decode: ChunkDecoder;
  readonly #decodeFile: ChunkFileDecoder | undefined;
  readonly #runPlan: ChunkPlanRunner | undefined;
  readonly #zeroDigests = new Map<number, string>();
  /** Last chunk a readAt touched, to notice forward walks. */
  #lastPosition = -1;

  constructor(
    reader: BackupReader,
    info: FileInfo,
    index: IndexView,
    snapshot: string,
    crypt: CryptConfig | undefined,
    options: ArchiveReaderOptions,
  ) {
    this.#reader = reader;
    this.#index = index;
    this.snapshot = snapshot;
    this.archiveName = info.filename;
    this.cryptMode = info.cryptMode;
    this.kind = index.kind;
    this.size = index.size;
    this.chunkCount = index.count;
    this.chunkSize = index.chunkSize;
    // Digests of sign-only and plain archives are unkeyed, whatever key the caller holds.
    this.#crypt = info.cryptMode === 'encrypt' ? crypt : undefined;
    this.#cache = new ChunkCache(options.cacheBytes ?? DEFAULT_CACHE_BYTES);
    this.#prefetch = options.prefetch ?? DEFAULT_PREFETCH;
    // Only a sequential walk fetches further ahead from a server: the read-ahead of readAt also
    // serves single files picked through the goodbye tables, where it would fetch chunks in vain.
    this.#walkPrefetch =
      options.prefetch ?? (reader.chunkFile !== undefined ? DEFAULT_PREFETCH : REMOTE_PREFETCH);
    this.#prefetchBytes = options.prefetchBytes ?? PREFETCH_BYTES;
    this.#decode = options.decode ?? decodeChunkHere;
    this.#decodeFile = reader.chunkFile !== undefined ? options.decodeFile : undefined;
    this.#runPlan = options.runPlan;
  }

  get writesFromChunks(): boolean {
    return this.#runPlan !== undefined;
  }

  async writeFromChunk(position: number, plan: ChunkPlan): Promise<void> {
    const runPlan = this.#runPlan;
    if (runPlan === undefined)
      throw new BurrowError('INTERNAL', `${this.archiveName}: writeFromChunk without runPlan`);
    const chunk = this.chunk(position);
    const check = {
      ...(this.#crypt !== undefined ? { crypt: this.#crypt } : {}),
      expectedDigest: chunk.digest,
      expectedSize: chunk.end - chunk.start,
    };
    try {
      const reader = this.#reader;
      await runPlan(
        reader.chunkFile !== undefined
          ? { chunkFile: reader.chunkFile(chunk.digest) }
          : await reader.chunk(chunk.digest),
        check,
        plan,
      );
    } catch (error) {
      throw archiveError(error, this.snapshot, this.archiveName, this.#context(chunk));
    }
  }

  #context(chunk: ArchiveChunk): {
    what: string;
    offset: number;
    extra: Record<string, unknown>;
  } {
    const hex = toHex(chunk.digest);
    return {
      what: `chunk ${chunk.position} (${hex})`,
      offset: chunk.start,
      extra: { chunk: chunk.position, digest: hex, chunkEnd: chunk.end },
    };
  }

  chunk(position: number): ArchiveChunk {
    const { start, end } = this.#index.range(position);
    return { position, start, end, digest: this.#index.digest(position) };
  }

  positionOf(offset: number): number {
    return this.#index.positionOf(offset);
  }

  isZeroChunk(position: number): boolean {
    const { start, end } = this.#index.range(position);
    const length = end - start;
    let zero = this.#zeroDigests.get(length);
    if (zero === undefined) {
      zero = toHex(computeChunkDigest(new Uint8Array(length), this.#crypt));
      this.#zeroDigests.set(length, zero);
    }
    return toHex(this.#index.digest(position)) === zero;
  }

  /** Fetch, decode and check one chunk; every failure names the archive offset. */
  async #fetch(chunk: ArchiveChunk): Promise<Uint8Array> {
    const context = this.#context(chunk);
    const check = {
      ...(this.#crypt !== undefined ? { crypt: this.#crypt } : {}),
      expectedDigest: chunk.digest,
      expectedSize: chunk.end - chunk.start,
    };
    try {
      if (this.#decodeFile !== undefined)
        return await this.#decodeFile(this.#reader.chunkFile!(chunk.digest), check);
      return await this.#decode(await this.#reader.chunk(chunk.digest), check);
    } catch (error) {
      throw archiveError(error, this.snapshot, this.archiveName, context);
    }
  }

  #cached(position: number): Promise<Uint8Array> {
    const chunk = this.chunk(position);
    const key = toHex(chunk.digest);
    const hit = this.#cache.get(key);
    if (hit !== undefined) return hit;
    const promise = this.#fetch(chunk);
    // A failed fetch is not remembered: the next reader retries (and fails the same way).
    promise.catch(() => this.#cache.delete(key));
    this.#cache.set(key, promise, chunk.end - chunk.start);
    return promise;
  }

  readChunk(position: number): Promise<Uint8Array> {
    return this.#cached(position);
  }

  async readPiece(offset: number, maxLength: number): Promise<Uint8Array> {
    checkCount('read offset', offset);
    checkCount('read length', maxLength);
    if (maxLength === 0 || offset >= this.size) return EMPTY;
    const position = this.#index.positionOf(offset);
    const range = this.#index.range(position);
    const data = this.#cached(position);
    this.#readAhead(position, position);
    const end = Math.min(range.end, offset + maxLength);
    return (await data).subarray(offset - range.start, end - range.start);
  }

  async readAt(offset: number, length: number): Promise<Uint8Array> {
    checkCount('read offset', offset);
    checkCount('read length', length);
    if (length === 0 || offset >= this.size) return EMPTY;
    const end = Math.min(this.size, offset + length);
    let position = this.#index.positionOf(offset);
    const first = this.#index.range(position);
    const firstData = this.#cached(position);
    if (end <= first.end) {
      this.#readAhead(position, position);
      return (await firstData).subarray(offset - first.start, end - first.start);
    }
    const out = new Uint8Array(end - offset);
    const pending: Array<{ data: Promise<Uint8Array>; start: number }> = [
      { data: firstData, start: first.start },
    ];
    for (let at = first.end; at < end;) {
      position++;
      const range = this.#index.range(position);
      pending.push({ data: this.#cached(position), start: range.start });
      at = range.end;
    }
    for (const p of pending) p.data.catch(noop);
    this.#readAhead(this.#index.positionOf(offset), position);
    for (const p of pending) {
      const data = await p.data;
      const from = Math.max(offset, p.start);
      const to = Math.min(end, p.start + data.byteLength);
      out.set(data.subarray(from - p.start, to - p.start), from - offset);
    }
    return out;
  }

  /**
   * When a read enters the chunk after the last one read (a forward walk, as the payload reads of
   * a split restore make), start fetching the following chunks. Only on entering: reads within
   * one chunk must not ask again, since chunks evicted meanwhile would be fetched twice. And only
   * as many as the cache holds beside the current chunk, or read-ahead would evict itself.
   */
  #readAhead(first: number, last: number): void {
    const movedOn = first <= this.#lastPosition + 1 && last > this.#lastPosition;
    const fresh = this.#lastPosition < 0 && first === 0;
    this.#lastPosition = last;
    if (!movedOn && !fresh) return;
    const { start, end } = this.#index.range(last);
    let budget = this.#cache.capacity - (end - start);
    const stop = Math.min(this.chunkCount - 1, last + this.#prefetch);
    for (let p = last + 1; p <= stop; p++) {
      const range = this.#index.range(p);
      budget -= range.end - range.start;
      if (budget < 0) break;
      this.#cached(p).catch(noop);
    }
  }

  async *chunks(options: ChunkIterationOptions = {}): AsyncGenerator<ArchiveChunkData> {
    const start = options.start ?? 0;
    const end = Math.min(options.end ?? this.size, this.size);
    checkCount('start', start);
    checkCount('end', end);
    if (start >= end) return;
    const first = this.#index.positionOf(start);
    const last = this.#index.positionOf(end - 1);
    const window = Math.max(1, this.#walkPrefetch + 1);
    // Dynamic chunks all differ in length, so each would cost a digest of zeros of its own.
    const skipZero = options.skipZero === true && this.kind === 'fixed';
    const queue: Array<{ chunk: ArchiveChunk; data: Promise<Uint8Array> | undefined }> = [];
    let next = first;
    let queuedBytes = 0;
    const fill = (): void => {
      while (
        next <= last &&
        queue.length < window &&
        (queue.length === 0 || queuedBytes < this.#prefetchBytes)
      ) {
        const chunk = this.chunk(next);
        queuedBytes += chunk.end - chunk.start;
        let data: Promise<Uint8Array> | undefined;
        if (!skipZero || !this.isZeroChunk(next)) {
          const key = toHex(chunk.digest);
          data = this.#cache.get(key) ?? this.#fetch(chunk);
          // Consumers that stop early leave fetches behind: they must not become unhandled.
          data.catch(noop);
        }
        queue.push({ chunk, data });
        next++;
      }
    };
    fill();
    while (queue.length > 0) {
      const item = queue.shift()!;
      queuedBytes -= item.chunk.end - item.chunk.start;
      const data = item.data === undefined ? undefined : await item.data;
      fill();
      yield { ...item.chunk, data };
    }
  }

  async *stream(options: Omit<ChunkIterationOptions, 'skipZero'> = {}): AsyncGenerator<Uint8Array> {
    const start = options.start ?? 0;
    const end = Math.min(options.end ?? this.size, this.size);
    for await (const chunk of this.chunks({ start, end })) {
      const data = chunk.data!;
      const from = Math.max(start, chunk.start) - chunk.start;
      const to = Math.min(end, chunk.end) - chunk.start;
      yield from === 0 && to === data.byteLength ? data : data.subarray(from, to);
    }
  }
}

/**
 * Open `archiveName` (server name `x.pxar.didx`, or a client name `x.pxar`/`x.img`) of the
 * snapshot `reader` reads, checked against `manifest` (which readSnapshotManifest verified).
 * An archive of crypt mode `encrypt` needs `crypt`: BLOB_KEY_REQUIRED otherwise.
 */
export async function openArchiveReader(
  reader: BackupReader,
  manifest: BackupManifest,
  archiveName: string,
  crypt?: CryptConfig,
  options: ArchiveReaderOptions = {},
): Promise<ArchiveReader> {
  if (options.cacheBytes !== undefined) checkCount('cacheBytes', options.cacheBytes);
  if (options.prefetch !== undefined) checkCount('prefetch', options.prefetch);
  if (options.prefetchBytes !== undefined) checkCount('prefetchBytes', options.prefetchBytes);
  const snapshot = formatSnapshot(reader.snapshot);
  const info = indexArchiveInfo(manifest, archiveName);
  if (info.cryptMode === 'encrypt' && crypt === undefined) {
    throw new BurrowError(
      'BLOB_KEY_REQUIRED',
      `${where(snapshot, info.filename)}: the archive is encrypted; give its key (--keyfile)`,
      { details: { snapshot, archive: info.filename } },
    );
  }
  const index = await loadIndex(reader, info, snapshot);
  return new ChunkedArchiveReader(reader, info, index, snapshot, crypt, options);
}
