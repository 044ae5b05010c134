/**
 * Backup orchestration (pbs-protocol §5.4, §5.5, §9): turns archive specs into one snapshot
 * through a BackupWriter, the same way over the local datastore and (later) the PBS protocol.
 *
 * - Directories (`.pxar`): in `legacy` mode one pxar v1 stream `<name>.pxar.didx` chunked with
 *   buzhash (avg BACKUP_AVG_CHUNK_SIZE, 512 KiB, or `chunkSize`), plus the catalog
 *   `catalog.pcat1.didx` (avg 512 KiB) on its own writer, written while the archives are walked
 *   and closed last. In `data` mode a split archive `<name>.mpxar.didx` + `<name>.ppxar.didx` on
 *   two writers, the payload stream cut at file starts where the chunker allows (suggested
 *   boundaries), no catalog. `metadata` mode is `data` plus reuse of unchanged files' payload
 *   chunks from the previous snapshot (payload-reuse.ts); without a usable previous split archive
 *   it behaves like `data`.
 * - Images (`.img`): `<name>.img.fidx`, fixed 4 MiB chunks, holes of sparse files not read
 *   (image-reader.ts).
 * - Config and log files (`.conf`, `.log`): `<name>.blob`, compressed (and encrypted in encrypt
 *   mode); the manifest lists the encoded size and SHA-256 of the encoded bytes.
 * - Dedup: the previous snapshot's manifest (if its key matches) names the previous version of
 *   each archive; downloading it registers its chunks in the session and seeds the `known` set, so
 *   those chunks are appended without upload. One `known` set serves the whole session, since the
 *   server's known-chunk map is per session too.
 * - Then `rsa-encrypted.key.blob` (with a master key), the manifest `index.json.blob` (signed in
 *   encrypt and sign-only mode), and `writer.finish()`.
 *
 * Every stream runs producer and uploader concurrently; a failure anywhere stops the others,
 * waits until nothing runs any more, and rejects with the root cause. runBackup never calls
 * writer.close(): the caller does, in a finally, which removes an unfinished snapshot.
 * With `dryRun` everything is read, chunked, hashed, compressed and encrypted, but the writer only
 * serves previous-snapshot downloads (for the reuse figures): nothing is uploaded or finished.
 */
import { lstat, readFile, stat } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { CATALOG_AVG_CHUNK_SIZE, chunkerParams } from '../chunker/buzhash.js';
import type { CryptConfig } from '../crypto/crypt-config.js';
import { CatalogWriter } from '../format/catalog.js';
import { encodeBlob } from '../format/data-blob.js';
import {
  CHUNK_ZSTD_LEVEL,
  MAX_ENCODED_CHUNK_SIZE,
  MAX_ZSTD_LEVEL,
  MIN_ZSTD_LEVEL,
} from '../format/magic.js';
import type { BackupManifest, FileInfo } from '../format/manifest.js';
import {
  CATALOG_NAME,
  MANIFEST_BLOB_NAME,
  blobFileInfo,
  indexFileInfo,
  serverArchiveName,
} from '../format/manifest.js';
import { toHex } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { PxarAccessor } from '../pxar/accessor.js';
import type { ArchiveOptions, ArchiveStats } from '../pxar/archiver.js';
import { createArchive, excludePrelude, readRootMetadata } from '../pxar/archiver.js';
import { PxarEncoder } from '../pxar/encoder.js';
import type { BackupDir } from '../types/backup.js';
import { backupDir, formatSnapshot } from '../types/backup.js';
import type { CryptMode } from '../types/crypt-mode.js';
import type { BackupReader, BackupWriter, IndexKind } from './backup-writer.js';
import { ChunkingSink, StreamAborted, rootCause } from './backup-streams.js';
import type { UploadProgress, UploadResult } from './chunk-pipeline.js';
import { ChunkWorkerPool, uploadChunks } from './chunk-pipeline.js';
import { openImage, readImageChunks } from './image-reader.js';
import type { Warn } from './manifest-builder.js';
import {
  buildManifest,
  downloadPreviousIndex,
  encryptedKeyBlob,
  loadPreviousManifest,
} from './manifest-builder.js';
import { InjectingWriter, PayloadReuser, openPreviousDynamicArchive } from './payload-reuse.js';
import type { DynamicIndex } from '../format/dynamic-index.js';

export type ArchiveKind = 'pxar' | 'img' | 'conf' | 'log';

export interface ArchiveSpec {
  /** Client archive name with its kind: 'root.pxar', 'disk.img', 'vm.conf'. */
  readonly name: string;
  readonly kind: ArchiveKind;
  readonly path: string;
}

const SPEC_RE = /^([A-Za-z0-9_][A-Za-z0-9._-]*)\.(pxar|img|conf|log):(.+)$/s;

/** PBS's `<name>.<pxar|img|conf|log>:<path>` (name: [A-Za-z0-9_][A-Za-z0-9._-]*); INVALID_ARGUMENT otherwise. */
export function parseArchiveSpec(spec: string): ArchiveSpec {
  const m = typeof spec === 'string' ? SPEC_RE.exec(spec) : null;
  if (m === null)
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `invalid backup source ${JSON.stringify(spec)}: expected <name>.<pxar|img|conf|log>:<path> (name: letters, digits, '_', '.', '-', not starting with '.' or '-')`,
      { details: { spec } },
    );
  return { name: `${m[1]!}.${m[2]!}`, kind: m[2] as ArchiveKind, path: m[3]! };
}

export type ChangeDetectionMode = 'legacy' | 'data' | 'metadata';

/**
 * Burrow's default average chunk size for pxar streams: 512 KiB, where PBS's client uses 4 MiB
 * (docs/design.md). A change costs at least a whole chunk, so small scattered
 * changes store about 8x less; metadata mode re-reads at most a chunk's worth around each
 * changed file. The price is 8x more chunks per byte. `--chunk-size 4096` gives PBS's layout;
 * PBS reads either.
 */
export const BACKUP_AVG_CHUNK_SIZE = 512 * 1024;

/**
 * Progress as data. `bytesRead`/`totalBytes`/`entries`/`path` are about the current archive
 * (`totalBytes` known for images and blobs only); `chunksReused`, `chunksNew` and `bytesStored`
 * (encoded bytes uploaded) are totals of the whole backup so far.
 */
export interface BackupProgress {
  phase: 'previous' | 'archive' | 'catalog' | 'manifest' | 'finish' | 'done';
  archive?: string;
  bytesRead: number;
  totalBytes?: number;
  entries?: number;
  chunksReused: number;
  chunksNew: number;
  bytesStored: number;
  path?: string;
}

export interface BackupOptions {
  writer: BackupWriter;
  archives: readonly ArchiveSpec[];
  cryptMode: CryptMode;
  /** Required for encrypt and sign-only. */
  crypt?: CryptConfig;
  /** PEM; with a key: write rsa-encrypted.key.blob. */
  masterPublicKey?: string;
  /** The key file's `created` (kept in the RSA-wrapped copy, as PBS does); default now. */
  keyCreated?: number | string;
  /** Default legacy. */
  changeDetectionMode?: ChangeDetectionMode;
  /** For metadata mode: opens a reader on the previous snapshot (local: openLocalBackupReader). */
  openPreviousReader?: (previous: BackupDir) => Promise<BackupReader>;
  excludePatterns?: readonly string[];
  /** Mount point paths whose devices are included. */
  includeDevices?: readonly string[];
  allFileSystems?: boolean;
  entriesMax?: number;
  /** Average chunk size in bytes for pxar streams (--chunk-size KiB * 1024). */
  chunkSize?: number;
  /** zstd level for chunks and blobs (default CHUNK_ZSTD_LEVEL, 3; PBS's client uses 1). */
  compressionLevel?: number;
  /** Read + chunk + hash everything, upload nothing, write no snapshot. */
  dryRun?: boolean;
  pool?: ChunkWorkerPool;
  onProgress?: (p: BackupProgress) => void;
  onWarning?: (message: string) => void;
  signal?: AbortSignal;
}

export interface ArchiveSummary {
  /** Server name, e.g. root.pxar.didx. */
  name: string;
  kind: ArchiveKind;
  /** Stream length (index) or encoded length (blob). */
  size: number;
  chunks: number;
  reusedChunks: number;
  newChunks: number;
  /** Encoded bytes uploaded. */
  storedBytes: number;
  csum: string;
  /** Split archives in metadata mode: files taken over from the previous snapshot. */
  reusedFiles?: number;
}

export interface BackupSummary {
  snapshot: string;
  archives: ArchiveSummary[];
  /** Source bytes read: file contents, image bytes (holes included), config files. */
  bytesRead: number;
  /** Encoded bytes uploaded (new chunks and blobs, after dedup and compression). */
  bytesStored: number;
  chunksReused: number;
  chunksNew: number;
  seconds: number;
  warnings: number;
  dryRun: boolean;
  /** Notes about how the backup ran (mode fallbacks, unusable previous snapshot). */
  notes: string[];
}

/** The largest blob body an upload accepts (pbs-protocol §5.3: encoded-size ≤ 16 MiB + 44). */
const MAX_UPLOAD_BLOB = MAX_ENCODED_CHUNK_SIZE;

const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);

/** Uploads every archive (+ catalog in legacy pxar mode), the manifest (signed with a key), calls writer.finish(). Never calls writer.close(): the caller does (finally). */
export async function runBackup(options: BackupOptions): Promise<BackupSummary> {
  const plan = checkOptions(options);
  const pool = options.pool ?? ChunkWorkerPool.create();
  try {
    return await new Backup(options, plan, pool).run();
  } finally {
    if (options.pool === undefined) await pool.close();
  }
}

interface Plan {
  mode: ChangeDetectionMode;
  avg: number;
  /** zstd level of chunks and blobs. */
  level: number;
  /** Key for chunk and blob encryption (encrypt mode only). */
  encryptWith: CryptConfig | undefined;
  /** Key for the manifest signature and the reuse check (encrypt and sign-only). */
  key: CryptConfig | undefined;
}

function checkOptions(o: BackupOptions): Plan {
  if (typeof o !== 'object' || o === null || typeof o.writer !== 'object' || o.writer === null)
    throw new BurrowError('INVALID_ARGUMENT', 'runBackup needs a writer');
  const archives: readonly ArchiveSpec[] = o.archives;
  if (!Array.isArray(archives) || archives.length === 0)
    throw new BurrowError('INVALID_ARGUMENT', 'nothing to back up: give at least one archive');
  if (!['none', 'encrypt', 'sign-only'].includes(o.cryptMode))
    throw new BurrowError('INVALID_ARGUMENT', `unknown crypt mode ${String(o.cryptMode)}`);
  if (o.cryptMode !== 'none' && o.crypt === undefined)
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `crypt mode ${o.cryptMode} needs a key: give --keyfile or use --crypt-mode none`,
    );
  const mode = o.changeDetectionMode ?? 'legacy';
  if (!['legacy', 'data', 'metadata'].includes(mode))
    throw new BurrowError('INVALID_ARGUMENT', `unknown change detection mode ${String(mode)}`);
  const avg = o.chunkSize ?? BACKUP_AVG_CHUNK_SIZE;
  chunkerParams(avg);
  const names = new Set<string>();
  for (const archive of o.archives) {
    if (
      !['pxar', 'img', 'conf', 'log'].includes(archive.kind) ||
      !archive.name.endsWith(`.${archive.kind}`)
    )
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `archive ${JSON.stringify(archive.name)} does not end in its kind .${String(archive.kind)}`,
      );
    for (const name of serverNames(archive, mode)) {
      if (names.has(name))
        throw new BurrowError('INVALID_ARGUMENT', `archive name ${name} is used twice`, {
          details: { name },
        });
      names.add(name);
    }
  }
  const key = o.cryptMode === 'none' ? undefined : o.crypt;
  const level = o.compressionLevel ?? CHUNK_ZSTD_LEVEL;
  if (!Number.isSafeInteger(level) || level < MIN_ZSTD_LEVEL || level > MAX_ZSTD_LEVEL)
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `compression level must be an integer from ${MIN_ZSTD_LEVEL} to ${MAX_ZSTD_LEVEL}, got ${String(level)}`,
    );
  return {
    mode,
    avg,
    level,
    key,
    encryptWith: o.cryptMode === 'encrypt' ? o.crypt : undefined,
  };
}

function serverNames(archive: ArchiveSpec, mode: ChangeDetectionMode): string[] {
  if (archive.kind === 'pxar' && mode !== 'legacy') {
    const base = archive.name.slice(0, -'.pxar'.length);
    return [serverArchiveName(`${base}.mpxar`), serverArchiveName(`${base}.ppxar`)];
  }
  return [serverArchiveName(archive.name)];
}

/**
 * A writer that uploads nothing: dry runs still read the previous snapshot for reuse figures, and
 * ask a local store (read-only) which chunks it holds, as the real run would reuse them.
 */
function dryRunWriter(real: BackupWriter): BackupWriter {
  let nextWid = 1;
  const nothing = (): Promise<void> => Promise.resolve();
  const hasStoredChunk = real.hasStoredChunk?.bind(real);
  return {
    snapshot: real.snapshot,
    previousBackupTime: () => real.previousBackupTime(),
    downloadPrevious: (name) => real.downloadPrevious(name),
    createIndex: () => Promise.resolve(nextWid++),
    ...(hasStoredChunk === undefined
      ? {}
      : {
          reuseStoredChunk: (_wid, _kind, digest, _size, encrypted) =>
            hasStoredChunk(digest, encrypted),
        }),
    uploadChunk: nothing,
    appendIndex: nothing,
    closeIndex: nothing,
    uploadBlob: nothing,
    finish: nothing,
    close: nothing,
  };
}

/** Totals over every upload pipeline, finished or running. */
class Counters {
  bytesRead = 0;
  private readonly finished = { reused: 0, fresh: 0, stored: 0 };
  private readonly running = new Map<number, UploadProgress>();
  private nextId = 1;

  track(): { id: number; update: (p: UploadProgress) => void; done: (r: UploadResult) => void } {
    const id = this.nextId++;
    return {
      id,
      update: (p) => this.running.set(id, p),
      done: (r) => {
        this.running.delete(id);
        this.finished.reused += r.reusedChunks;
        this.finished.fresh += r.uploadedChunks;
        this.finished.stored += r.uploadedBytes;
      },
    };
  }

  addStored(bytes: number): void {
    this.finished.stored += bytes;
  }

  /** Chunks appended without passing through a pipeline (injected in metadata mode). */
  addReused(chunks: number): void {
    this.finished.reused += chunks;
  }

  totals(): { chunksReused: number; chunksNew: number; bytesStored: number } {
    let { reused, fresh, stored } = this.finished;
    for (const p of this.running.values()) {
      reused += p.reusedChunks;
      fresh += p.chunks - p.reusedChunks;
      stored += p.uploadedBytes;
    }
    return { chunksReused: reused, chunksNew: fresh, bytesStored: stored };
  }
}

/**
 * Runs `producer` and the uploads fed by `queues` concurrently; when one fails, the others are
 * stopped (queues failed or aborted) and awaited, and the root cause is thrown.
 */
async function runTogether<T>(
  producer: () => Promise<void>,
  streams: readonly { sink: ChunkingSink; upload: Promise<T> }[],
): Promise<T[]> {
  const failures: unknown[] = [];
  const reasons = (results: PromiseSettledResult<unknown>[]): unknown[] =>
    results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  const stopAll = (error: unknown): void => {
    failures.push(error);
    for (const s of streams) {
      s.sink.queue.fail(error);
      s.sink.queue.abort(error);
    }
  };
  const uploads = streams.map((s) =>
    s.upload.catch((error: unknown) => {
      stopAll(error);
      throw error;
    }),
  );
  const produced = (async () => {
    try {
      await producer();
      for (const s of streams) await s.sink.finish();
    } catch (error) {
      stopAll(error);
      throw error;
    }
  })();
  const settled = await Promise.allSettled([produced, ...uploads]);
  if (failures.length > 0 || settled.some((s) => s.status === 'rejected')) {
    const errors = [...failures, ...reasons(settled)];
    const primary = errors.find((e) => !(e instanceof StreamAborted)) ?? errors[0];
    throw rootCause(primary);
  }
  return settled.slice(1).map((s) => (s as PromiseFulfilledResult<T>).value);
}

interface CatalogState {
  writer: CatalogWriter;
  sink: ChunkingSink;
  upload: Promise<UploadResult>;
  /** The first failed write: the catalog writer does not await its sink, so failures wait here. */
  failure: { error: unknown } | undefined;
}

/** What metadata mode reads from the previous snapshot. */
interface ReuseSource {
  accessor: PxarAccessor;
  payloadIndex: DynamicIndex;
  reader: BackupReader;
}

interface PxarResult {
  summaries: ArchiveSummary[];
  files: FileInfo[];
}

class Backup {
  readonly #o: BackupOptions;
  readonly #plan: Plan;
  readonly #writer: BackupWriter;
  readonly #pool: ChunkWorkerPool;
  readonly #known = new Set<string>();
  readonly #counters = new Counters();
  readonly #files: FileInfo[] = [];
  readonly #summaries: ArchiveSummary[] = [];
  readonly #notes: string[] = [];
  readonly #started = performance.now();
  #warnings = 0;
  #previous: BackupManifest | undefined;
  #phase: BackupProgress['phase'] = 'previous';
  #archive: string | undefined;
  #catalog: CatalogState | undefined;

  constructor(options: BackupOptions, plan: Plan, pool: ChunkWorkerPool) {
    this.#o = options;
    this.#plan = plan;
    this.#writer = options.dryRun === true ? dryRunWriter(options.writer) : options.writer;
    this.#pool = pool;
  }

  readonly #warn: Warn = (message) => {
    this.#warnings++;
    this.#o.onWarning?.(message);
  };

  #note(message: string): void {
    this.#notes.push(message);
    this.#warn(message);
  }

  #progress(extra: Partial<BackupProgress> & { bytesRead: number }): void {
    const cb = this.#o.onProgress;
    if (cb === undefined) return;
    cb({
      phase: this.#phase,
      ...(this.#archive === undefined ? {} : { archive: this.#archive }),
      ...this.#counters.totals(),
      ...extra,
    });
  }

  #checkAborted(): void {
    const signal = this.#o.signal;
    if (signal?.aborted !== true) return;
    const reason: unknown = signal.reason;
    throw reason instanceof BurrowError
      ? reason
      : new BurrowError('TASK_ABORTED', 'backup aborted', { cause: reason });
  }

  async run(): Promise<BackupSummary> {
    const o = this.#o;
    this.#progress({ bytesRead: 0 });
    this.#previous = await loadPreviousManifest(this.#writer, this.#plan.key, this.#warn);
    try {
      for (const archive of o.archives) {
        this.#checkAborted();
        this.#phase = 'archive';
        this.#archive = archive.name;
        switch (archive.kind) {
          case 'pxar':
            await this.#pxar(archive);
            break;
          case 'img':
            await this.#image(archive);
            break;
          case 'conf':
          case 'log':
            await this.#blob(archive);
            break;
        }
      }
      if (this.#catalog !== undefined) {
        this.#phase = 'catalog';
        this.#archive = CATALOG_NAME;
        await this.#finishCatalog();
      }
    } catch (error) {
      await this.#abortCatalog(error);
      throw error;
    }
    this.#checkAborted();

    this.#phase = 'manifest';
    this.#archive = undefined;
    this.#progress({ bytesRead: this.#counters.bytesRead });
    const key = this.#plan.key;
    if (key !== undefined && o.masterPublicKey !== undefined) {
      const { name, blob } = await encryptedKeyBlob(key, o.masterPublicKey, o.keyCreated);
      await this.#writer.uploadBlob(name, blob);
      this.#files.push(blobFileInfo(name, blob, o.cryptMode));
      this.#counters.addStored(blob.byteLength);
    }
    const { blob } = buildManifest(this.#writer.snapshot, this.#files, o.cryptMode, key);
    this.#checkAborted();
    await this.#writer.uploadBlob(MANIFEST_BLOB_NAME, blob);
    this.#phase = 'finish';
    this.#progress({ bytesRead: this.#counters.bytesRead });
    await this.#writer.finish();

    this.#phase = 'done';
    this.#progress({ bytesRead: this.#counters.bytesRead });
    const totals = this.#counters.totals();
    if (o.dryRun === true) this.#notes.push('dry run: nothing was uploaded');
    return {
      snapshot: formatSnapshot(this.#writer.snapshot),
      archives: this.#summaries,
      bytesRead: this.#counters.bytesRead,
      bytesStored: totals.bytesStored,
      chunksReused: totals.chunksReused,
      chunksNew: totals.chunksNew,
      seconds: (performance.now() - this.#started) / 1000,
      warnings: this.#warnings,
      dryRun: o.dryRun === true,
      notes: this.#notes,
    };
  }

  // -- uploads -----------------------------------------------------------------------------------

  /** Seeds `known` from the previous version of index `name`. */
  async #seed(name: string): Promise<void> {
    await downloadPreviousIndex(
      this.#writer,
      this.#previous,
      name,
      this.#o.cryptMode,
      this.#known,
      this.#warn,
    );
  }

  /** Creates a dynamic index, known chunks seeded from its previous version. */
  async #createDynamic(name: string): Promise<number> {
    await this.#seed(name);
    return this.#writer.createIndex('dynamic', name);
  }

  #upload(
    chunks: AsyncIterable<Uint8Array>,
    wid: number,
    kind: IndexKind,
    writer: BackupWriter = this.#writer,
  ): Promise<UploadResult> {
    const tracker = this.#counters.track();
    return uploadChunks(chunks, {
      writer,
      wid,
      kind,
      ...(this.#plan.encryptWith === undefined ? {} : { crypt: this.#plan.encryptWith }),
      compress: true,
      level: this.#plan.level,
      known: this.#known,
      pool: this.#pool,
      onProgress: (p) => tracker.update(p),
      ...(this.#o.signal === undefined ? {} : { signal: this.#o.signal }),
    }).then((result) => {
      tracker.done(result);
      return result;
    });
  }

  #indexSummary(name: string, kind: ArchiveKind, r: UploadResult): ArchiveSummary {
    return {
      name,
      kind,
      size: r.size,
      chunks: r.chunkCount,
      reusedChunks: r.reusedChunks,
      newChunks: r.uploadedChunks,
      storedBytes: r.uploadedBytes,
      csum: toHex(r.csum),
    };
  }

  #addIndex(name: string, kind: ArchiveKind, r: UploadResult): void {
    this.#files.push(indexFileInfo(name, { size: r.size, csum: r.csum }, this.#o.cryptMode));
    this.#summaries.push(this.#indexSummary(name, kind, r));
  }

  // -- catalog -----------------------------------------------------------------------------------

  async #startCatalog(): Promise<CatalogState> {
    if (this.#catalog !== undefined) return this.#catalog;
    const sink = new ChunkingSink(CATALOG_NAME, CATALOG_AVG_CHUNK_SIZE);
    const wid = await this.#createDynamic(CATALOG_NAME);
    const upload = this.#upload(sink.queue, wid, 'dynamic');
    // Observed in #finishCatalog/#abortCatalog; a failure must also stop the archive feeding it.
    upload.catch((error: unknown) => sink.queue.abort(error));
    const state: CatalogState = {
      sink,
      upload,
      failure: undefined,
      writer: new CatalogWriter({
        write: (bytes) =>
          sink.write(bytes).catch((error: unknown) => {
            state.failure ??= { error };
          }),
      }),
    };
    this.#catalog = state;
    return state;
  }

  /** Throws the catalog's first write failure, if any. */
  #checkCatalog(catalog: CatalogState): void {
    if (catalog.failure !== undefined) throw catalog.failure.error;
  }

  async #finishCatalog(): Promise<void> {
    const catalog = this.#catalog!;
    const result = await runTogether(async () => {
      await catalog.writer.finish();
      this.#checkCatalog(catalog);
    }, [{ sink: catalog.sink, upload: catalog.upload }]);
    this.#addIndex(CATALOG_NAME, 'pxar', result[0]!);
    this.#catalog = undefined;
  }

  async #abortCatalog(error: unknown): Promise<void> {
    const catalog = this.#catalog;
    if (catalog === undefined) return;
    this.#catalog = undefined;
    catalog.sink.queue.fail(error);
    await catalog.upload.catch(() => undefined);
  }

  // -- pxar --------------------------------------------------------------------------------------

  async #archiveOptions(
    onProgress: (bytes: number, entries: number, path: string) => void,
  ): Promise<ArchiveOptions> {
    const o = this.#o;
    const includeDevices: bigint[] = [];
    for (const path of o.includeDevices ?? []) {
      try {
        includeDevices.push((await lstat(path, { bigint: true })).dev);
      } catch (error) {
        throw new BurrowError('INVALID_ARGUMENT', `--include-dev ${path}: ${messageOf(error)}`, {
          details: { path },
          cause: error,
        });
      }
    }
    return {
      ...(o.excludePatterns === undefined ? {} : { excludePatterns: o.excludePatterns }),
      includeDevices,
      ...(o.allFileSystems === undefined ? {} : { allFileSystems: o.allFileSystems }),
      ...(o.entriesMax === undefined ? {} : { entryLimit: o.entriesMax }),
      onWarning: (message, path) => this.#warn(`${path}: ${message}`),
      onProgress: (p) => onProgress(p.bytes, p.entries, p.path),
    };
  }

  async #pxar(archive: ArchiveSpec): Promise<void> {
    const mode = this.#plan.mode;
    let result: PxarResult;
    let stats: ArchiveStats;
    if (mode === 'legacy') ({ result, stats } = await this.#legacyPxar(archive));
    else ({ result, stats } = await this.#splitPxar(archive, mode === 'metadata'));
    this.#counters.bytesRead += stats.bytes;
    this.#files.push(...result.files);
    this.#summaries.push(...result.summaries);
  }

  async #legacyPxar(archive: ArchiveSpec): Promise<{ result: PxarResult; stats: ArchiveStats }> {
    const name = serverArchiveName(archive.name);
    const options = await this.#archiveOptions((bytes, entries, path) =>
      this.#progress({ bytesRead: bytes, entries, path }),
    );
    const catalog = await this.#startCatalog();
    const sink = new ChunkingSink(name, this.#plan.avg);
    const wid = await this.#createDynamic(name);
    const upload = this.#upload(sink.queue, wid, 'dynamic');
    let stats: ArchiveStats | undefined;
    const [r] = await runTogether(async () => {
      const root = await readRootMetadata(archive.path, (m, p) => this.#warn(`${p}: ${m}`));
      const encoder = await PxarEncoder.begin(root, { output: sink });
      catalog.writer.startDirectory(Buffer.from(name));
      stats = await createArchive(archive.path, encoder, {
        ...options,
        catalog: catalog.writer,
        reuseReadBuffer: true,
      });
      await encoder.finish();
      await catalog.writer.endDirectory();
      this.#checkCatalog(catalog);
    }, [{ sink, upload }]);
    return {
      result: {
        files: [indexFileInfo(name, { size: r!.size, csum: r!.csum }, this.#o.cryptMode)],
        summaries: [this.#indexSummary(name, 'pxar', r!)],
      },
      stats: stats!,
    };
  }

  async #splitPxar(
    archive: ArchiveSpec,
    metadataMode: boolean,
  ): Promise<{ result: PxarResult; stats: ArchiveStats }> {
    const base = archive.name.slice(0, -'.pxar'.length);
    const metaName = serverArchiveName(`${base}.mpxar`);
    const payloadName = serverArchiveName(`${base}.ppxar`);
    const options = await this.#archiveOptions((bytes, entries, path) =>
      this.#progress({ bytesRead: bytes, entries, path }),
    );
    const source = metadataMode
      ? await this.#prepareReuse(archive, metaName, payloadName)
      : undefined;
    try {
      // With reuse, #prepareReuse has downloaded the previous payload index already.
      if (source === undefined) await this.#seed(payloadName);
      const payloadWid = await this.#writer.createIndex('dynamic', payloadName);
      const metaWid = await this.#createDynamic(metaName);

      const metaSink = new ChunkingSink(metaName, this.#plan.avg);
      const payloadSink = new ChunkingSink(payloadName, this.#plan.avg);
      const injector =
        source === undefined ? undefined : new InjectingWriter(this.#writer, payloadWid);
      const reuser =
        source === undefined
          ? undefined
          : new PayloadReuser({
              previous: source.accessor,
              previousPayload: source.payloadIndex,
              sink: payloadSink,
              injector: injector!,
            });
      const payloadUpload = this.#upload(payloadSink.queue, payloadWid, 'dynamic', injector);
      const metaUpload = this.#upload(metaSink.queue, metaWid, 'dynamic');

      let stats: ArchiveStats | undefined;
      const [payloadResult, metaResult] = await runTogether(async () => {
        const root = await readRootMetadata(archive.path, (m, p) => this.#warn(`${p}: ${m}`));
        const prelude = excludePrelude(this.#o.excludePatterns);
        const encoder = await PxarEncoder.begin(root, {
          output: metaSink,
          payloadOutput: payloadSink,
          ...(prelude === undefined ? {} : { prelude }),
          onPayloadHeader: (offset) => payloadSink.suggestBoundary(offset),
        });
        reuser?.attach(encoder);
        stats = await createArchive(archive.path, encoder, {
          ...options,
          reuseReadBuffer: true,
          ...(reuser === undefined ? {} : { reusePayload: (f) => reuser.decide(f) }),
        });
        await encoder.finish();
      }, [
        { sink: payloadSink, upload: payloadUpload },
        { sink: metaSink, upload: metaUpload },
      ]);

      let payload = payloadResult!;
      if (injector !== undefined) {
        const closed = injector.result!;
        // The pipeline saw only the data chunks; the index also holds the injected ones.
        payload = {
          ...payload,
          size: closed.size,
          chunkCount: closed.chunkCount,
          csum: closed.csum,
          reusedChunks: payload.reusedChunks + injector.injectedChunks,
        };
        this.#counters.addReused(injector.injectedChunks);
      }
      const payloadSummary = this.#indexSummary(payloadName, 'pxar', payload);
      if (reuser !== undefined) payloadSummary.reusedFiles = reuser.stats.files;
      const meta = metaResult!;
      return {
        result: {
          files: [
            indexFileInfo(
              payloadName,
              { size: payload.size, csum: payload.csum },
              this.#o.cryptMode,
            ),
            indexFileInfo(metaName, { size: meta.size, csum: meta.csum }, this.#o.cryptMode),
          ],
          summaries: [payloadSummary, this.#indexSummary(metaName, 'pxar', meta)],
        },
        stats: stats!,
      };
    } finally {
      await source?.reader.close().catch(() => undefined);
    }
  }

  /**
   * Metadata mode's inputs: the previous split archive pair from the manifest (payload chunks
   * registered through the writer, metadata archive read through a reader session). undefined,
   * with a note, when the archive is to be written as in data mode.
   */
  async #prepareReuse(
    archive: ArchiveSpec,
    metaName: string,
    payloadName: string,
  ): Promise<ReuseSource | undefined> {
    const previous = this.#previous;
    const fallback = (why: string): undefined => {
      this.#note(`${archive.name}: ${why}; reading every file (as in data mode)`);
      return undefined;
    };
    if (previous === undefined) return fallback('no usable previous snapshot');
    const meta = previous.files.find((f) => f.filename === metaName);
    const payloadInfo = previous.files.find((f) => f.filename === payloadName);
    if (meta === undefined || payloadInfo === undefined)
      return fallback(`the previous snapshot has no ${metaName} + ${payloadName}`);
    if (payloadInfo.cryptMode !== this.#o.cryptMode)
      return fallback('the previous snapshot was written in another crypt mode');
    if (this.#o.openPreviousReader === undefined)
      return fallback('no reader for the previous snapshot was provided');
    const previousPayload = await downloadPreviousIndex(
      this.#writer,
      previous,
      payloadName,
      this.#o.cryptMode,
      this.#known,
      this.#warn,
    );
    if (previousPayload === undefined || previousPayload.kind !== 'dynamic')
      return fallback(`the previous ${payloadName} cannot be used`);
    let reader: BackupReader;
    try {
      reader = await this.#o.openPreviousReader(
        backupDir(this.#writer.snapshot.group, previous.backupTime),
      );
    } catch (error) {
      return fallback(`cannot open the previous snapshot: ${messageOf(error)}`);
    }
    try {
      const ra = await openPreviousDynamicArchive(
        reader,
        previous,
        metaName,
        this.#plan.encryptWith,
      );
      const accessor = await PxarAccessor.open(ra, { name: `previous ${metaName}` });
      if (accessor.formatVersion() !== 2)
        throw new BurrowError('PXAR_BAD_ITEM', 'it is not a split (v2) archive');
      return { accessor, payloadIndex: previousPayload.index, reader };
    } catch (error) {
      await reader.close().catch(() => undefined);
      return fallback(`cannot read the previous ${metaName}: ${messageOf(error)}`);
    }
  }

  // -- images and blobs --------------------------------------------------------------------------

  async #image(archive: ArchiveSpec): Promise<void> {
    const name = serverArchiveName(archive.name);
    const image = await openImage(archive.path);
    try {
      if (image.size === 0)
        throw new BurrowError('INVALID_ARGUMENT', `image ${archive.path} is empty`, {
          details: { path: archive.path },
        });
      await downloadPreviousIndex(
        this.#writer,
        this.#previous,
        name,
        this.#o.cryptMode,
        this.#known,
        this.#warn,
      );
      const wid = await this.#writer.createIndex('fixed', name, image.size);
      const chunks = readImageChunks(image, {
        ...(this.#o.signal === undefined ? {} : { signal: this.#o.signal }),
        onProgress: ({ position }) =>
          this.#progress({ bytesRead: position, totalBytes: image.size }),
      });
      const result = await this.#upload(chunks, wid, 'fixed');
      this.#counters.bytesRead += image.size;
      this.#addIndex(name, 'img', result);
    } finally {
      await image.close();
    }
  }

  async #blob(archive: ArchiveSpec): Promise<void> {
    const name = serverArchiveName(archive.name);
    let data: Uint8Array;
    try {
      // Followed, as PBS does: a symlink to a config file backs up the file.
      const stats = await stat(archive.path);
      if (!stats.isFile())
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `${archive.path} is not a regular file, so it cannot be backed up as ${archive.name}`,
          { details: { path: archive.path } },
        );
      if (stats.size > MAX_UPLOAD_BLOB)
        throw new BurrowError(
          'BLOB_TOO_LARGE',
          `${archive.path} has ${stats.size} bytes; ${archive.kind} files are uploaded as one blob of at most ${MAX_UPLOAD_BLOB} bytes`,
          { details: { path: archive.path, size: stats.size, limit: MAX_UPLOAD_BLOB } },
        );
      data = await readFile(archive.path);
    } catch (error) {
      if (isBurrowError(error)) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      throw new BurrowError(
        code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
        `cannot read ${archive.path}: ${messageOf(error)}`,
        { details: { path: archive.path, errnoName: code }, cause: error },
      );
    }
    const encoded = encodeBlob(data, {
      compress: true,
      level: this.#plan.level,
      ...(this.#plan.encryptWith === undefined ? {} : { crypt: this.#plan.encryptWith }),
    });
    if (encoded.byteLength > MAX_UPLOAD_BLOB)
      throw new BurrowError(
        'BLOB_TOO_LARGE',
        `${archive.path} encodes to ${encoded.byteLength} bytes, more than the ${MAX_UPLOAD_BLOB}-byte blob upload limit`,
        { details: { path: archive.path, size: encoded.byteLength, limit: MAX_UPLOAD_BLOB } },
      );
    await this.#writer.uploadBlob(name, encoded);
    const info = blobFileInfo(name, encoded, this.#o.cryptMode);
    this.#files.push(info);
    this.#counters.bytesRead += data.byteLength;
    this.#counters.addStored(encoded.byteLength);
    this.#summaries.push({
      name,
      kind: archive.kind,
      size: info.size,
      chunks: 0,
      reusedChunks: 0,
      newChunks: 0,
      storedBytes: encoded.byteLength,
      csum: info.csum,
    });
    this.#progress({ bytesRead: data.byteLength, totalBytes: data.byteLength });
  }
}
