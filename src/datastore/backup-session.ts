/**
 * The writer side of the PBS backup protocol (pbs-protocol §5.1 checks 4-10, §5.3, §5.4), once,
 * for both transports: local mode calls a BackupSession directly, and the server will map each
 * HTTP/2 request of a session onto the same method. Every check and message is PBS's, so the
 * server can send an error's message as the response body unchanged.
 *
 * A session holds, from start to end: the group lock (exclusive: one writer per group), the new
 * snapshot's lock (exclusive) and the previous snapshot's lock (shared, so prune cannot remove
 * the base whose chunks the client references without uploading them). Chunks are trusted only
 * once seen in this session: uploaded, or referenced by an index fetched with downloadPrevious.
 *
 * Requests may overlap (the server runs HTTP/2 streams concurrently). Each method does all its
 * checks and state changes synchronously before its first await where order matters (appends,
 * closes), and index writers queue their file writes in call order, so overlapping calls see
 * the state every earlier call left. close() waits for calls in flight before it tears down.
 */
import { rm } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { bytesEqual, toHex } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { isEncryptedKind, parseBlobHeader, plainBlobDigest } from '../format/data-blob.js';
import type { BlobHeader, BlobKind } from '../format/data-blob.js';
import { IndexCsumBuilder } from '../format/index-common.js';
import {
  FIXED_CHUNK_SIZE,
  FIXED_INDEX_ENTRY_SIZE,
  INDEX_HEADER_SIZE,
  MAX_CHUNK_SIZE,
  MAX_ENCODED_CHUNK_SIZE,
} from '../format/magic.js';
import { archiveTypeOf, isArchiveName } from '../format/manifest.js';
import { parseUpid } from '../format/upid.js';
import type { TaskManager, TaskRunOptions } from '../tasks/index.js';
import type { Authid } from '../types/auth.js';
import { formatAuthid } from '../types/auth.js';
import type { BackupDir, BackupGroup, BackupNamespace } from '../types/backup.js';
import {
  backupDir as makeBackupDir,
  backupGroup as makeBackupGroup,
  formatSnapshot,
  namespaceEquals,
  namespaceToString,
} from '../types/backup.js';
import { DIGEST_SIZE, digestToHex } from '../types/digest.js';
import { isDirectory } from './backup-info.js';
import type { InsertResult, WrittenChunk } from './chunk-store.js';
import type { DataStore, LockGuard } from './datastore.js';
import { MAX_INDEX_FILE_SIZE, readIndexFile } from './index-file.js';
import type { DynamicIndexWriter, FixedIndexWriter } from './index-writer.js';
import type { ProcessLockGuard } from './process-locker.js';
import { SessionTask, asError, readArchiveFile } from './reader-session.js';
import { verifyNewSnapshot } from './verify.js';

export interface BackupSessionOptions {
  store: DataStore;
  ns: BackupNamespace;
  /** Its namespace must be `ns`. */
  group: BackupGroup;
  backupTime: number;
  /** The caller: owner of a new group, checked against the owner of an existing one. */
  authId: Authid;
  /** When given, the session runs as a worker task 'backup' (or 'benchmark') and logs to it. */
  tasks?: TaskManager;
  /** Only for (and required by) `host/benchmark`; the snapshot is removed at the end. */
  benchmark?: boolean;
  /** PBS's `debug` parameter: a task log line per chunk upload and append. */
  debug?: boolean;
  /** Where the session comes from (the server's peer address), for the first log line. */
  origin?: string;
  /** Passed to TaskManager.run (onLine, onStart, ...). */
  taskOptions?: TaskRunOptions;
  /**
   * The chunks come from Burrow's own upload pipeline in this very process (local mode): their
   * digest, size and CRC were computed from the data as it was encoded, so decoding and hashing
   * every chunk a second time on the main thread would only repeat that work. Never set for
   * chunks that arrive over the network; the server checks those as PBS does.
   */
  trustedClient?: boolean;
}

export interface ChunkUploadStats {
  count: number;
  size: number;
  compressedSize: number;
  duplicates: number;
}

export type IndexKind = 'dynamic' | 'fixed';

/** Writer ids run from 1 to this (the `wid` schema of pbs-protocol §5.3). */
export const MAX_WRITER_ID = 256;

/** The largest image a `.fidx` may describe: its digest area must stay within the index limit. */
const MAX_FIXED_IMAGE_SIZE =
  Math.floor((MAX_INDEX_FILE_SIZE - INDEX_HEADER_SIZE) / FIXED_INDEX_ENTRY_SIZE) * FIXED_CHUNK_SIZE;

const NOT_FINISHED_MESSAGE = 'backup ended but finished flag is not set.';

type SessionState = 'running' | 'finishing' | 'finished' | 'closed';
type WriterStatus = 'open' | 'closed' | 'failed';

interface WriterCommon {
  readonly wid: number;
  readonly name: string;
  status: WriterStatus;
  /** Entries appended in this session. */
  chunkCount: number;
  readonly stats: ChunkUploadStats;
}

interface DynamicWriterState extends WriterCommon {
  readonly kind: 'dynamic';
  readonly writer: DynamicIndexWriter;
  /** End of the stream so far: where the next append must start. */
  offset: number;
  /** The index csum of the entries so far, checked before the index is published. */
  readonly csum: IndexCsumBuilder;
}

interface FixedWriterState extends WriterCommon {
  readonly kind: 'fixed';
  /** Present from the start when the size is known; a size-less writer gets one at close. */
  writer: FixedIndexWriter | undefined;
  /** The declared size; undefined for a writer that grows as chunks arrive [4.x]. */
  readonly declaredSize: number | undefined;
  /** Image size: the declared one, or how far a size-less writer has grown. */
  size: number;
  /** A size-less writer's size is fixed by its first short chunk. */
  sizeFixed: boolean;
  /** Digests of a size-less writer by slot, written out at close. */
  readonly slots: Map<number, Uint8Array> | undefined;
  /** A size-less writer's chunk-store guard until its index exists (GC safety, §2.6). */
  guard: ProcessLockGuard | undefined;
  /** Pre-filled from the previous snapshot's index (reuse-csum). */
  readonly incremental: boolean;
  /** Uploads shorter than 4 MiB: at most one end chunk per fixed writer. */
  smallChunks: number;
}

type WriterState = DynamicWriterState | FixedWriterState;

function zeroStats(): ChunkUploadStats {
  return { count: 0, size: 0, compressedSize: 0, duplicates: 0 };
}

function invalid(message: string, details: Record<string, unknown> = {}): BurrowError {
  return new BurrowError('BACKUP_SESSION_INVALID', message, { details });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function checkDigestArg(digest: unknown, what: string): asserts digest is Uint8Array {
  if (!(digest instanceof Uint8Array) || digest.byteLength !== DIGEST_SIZE) {
    throw new BurrowError('INVALID_DIGEST', `${what} must be a 32-byte digest`);
  }
}

function checkCount(value: unknown, what: string, min: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${what} must be an integer >= ${min}, got ${String(value)}`,
      { details: { [what]: value } },
    );
  }
}

function checkIndexName(name: unknown, kind: IndexKind): asserts name is string {
  const ok =
    typeof name === 'string' &&
    isArchiveName(name) &&
    archiveTypeOf(name) === (kind === 'fixed' ? 'fixed' : 'dynamic');
  if (!ok) {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `wrong archive extension: '${String(name).slice(0, 120)}'`,
      { details: { filename: name, expected: kind === 'fixed' ? '.fidx' : '.didx' } },
    );
  }
}

/**
 * Whether a manifest's `verify_state` says the last verification failed. Only a state that
 * parses (PBS: `{state: "ok"|"failed", upid: <UPID>}`) counts; anything else counts as valid.
 */
export function verifyStateFailed(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const { state, upid } = value as Record<string, unknown>;
  if (state !== 'failed' || typeof upid !== 'string') return false;
  try {
    parseUpid(upid);
    return true;
  } catch {
    return false;
  }
}

/**
 * The base snapshot of a new backup (§5.1 check 7): the newest snapshot of the group that has
 * its manifest, unless that manifest records a failed verification (then none: PBS does not
 * fall back to older ones). A manifest that cannot be read fails the call, as in PBS.
 */
export async function findPreviousSnapshot(
  store: DataStore,
  group: BackupGroup,
): Promise<BackupDir | undefined> {
  const time = await store.lastSuccessfulBackup(group);
  if (time === undefined) return undefined;
  const dir = makeBackupDir(group, time);
  const { manifest } = await store.loadManifest(dir);
  return verifyStateFailed(manifest.unprotected['verify_state']) ? undefined : dir;
}

/** The blob with the CRC the server computes itself (§5.3: an upload's CRC is not trusted). */
function withComputedCrc(encoded: Uint8Array, header: BlobHeader): Uint8Array {
  const computed = crc32(encoded.subarray(header.headerSize));
  if (computed === header.crc) return encoded;
  const copy = new Uint8Array(encoded);
  new DataView(copy.buffer, copy.byteOffset, copy.byteLength).setUint32(8, computed, true);
  return copy;
}

function percent(part: number, whole: number): number {
  return Math.floor((part * 100) / whole);
}

export class BackupSession {
  readonly store: DataStore;
  /** The new snapshot. */
  readonly dir: BackupDir;
  /** The base snapshot (locked shared for the session), if any. */
  readonly previous: BackupDir | undefined;
  readonly benchmark: boolean;
  readonly #authId: Authid;
  readonly #groupGuard: LockGuard;
  readonly #snapshotGuard: LockGuard;
  readonly #previousGuard: LockGuard | undefined;
  /** The group did not exist before this session: an unfinished session removes it if empty. */
  readonly #groupCreated: boolean;
  readonly #debug: boolean;
  readonly #trustedClient: boolean;
  readonly #tasks: TaskManager | undefined;
  #task: SessionTask | undefined;
  #state: SessionState = 'running';
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();
  /** digest hex → chunk length: the chunks appends may reference (§5.4). */
  readonly #known = new Map<string, number>();
  readonly #writers = new Map<number, WriterState>();
  /** Archive names with a writer that is open or closed successfully, or being created. */
  readonly #names = new Set<string>();
  #nextWid = 1;
  #fileCount = 0;
  readonly #stats = zeroStats();
  #verify: Promise<unknown> | undefined;

  private constructor(init: {
    store: DataStore;
    dir: BackupDir;
    previous: BackupDir | undefined;
    benchmark: boolean;
    authId: Authid;
    groupGuard: LockGuard;
    snapshotGuard: LockGuard;
    previousGuard: LockGuard | undefined;
    groupCreated: boolean;
    debug: boolean;
    tasks: TaskManager | undefined;
    trustedClient: boolean;
  }) {
    this.store = init.store;
    this.dir = init.dir;
    this.previous = init.previous;
    this.benchmark = init.benchmark;
    this.#authId = init.authId;
    this.#groupGuard = init.groupGuard;
    this.#snapshotGuard = init.snapshotGuard;
    this.#previousGuard = init.previousGuard;
    this.#groupCreated = init.groupCreated;
    this.#debug = init.debug;
    this.#tasks = init.tasks;
    this.#trustedClient = init.trustedClient;
  }

  /**
   * Start a session (§5.1 checks 4-10): the namespace exists; the benchmark flag goes with
   * `host/benchmark` and only with it; the group is created (owner = authId) or its owner
   * checked, and locked exclusively; the base snapshot is found, the new time must be newer and
   * the base is locked shared; the new snapshot directory must not exist, and is created and
   * locked; then the task starts. Nothing is left locked when a check fails.
   */
  static async start(options: BackupSessionOptions): Promise<BackupSession> {
    const { store, ns, authId } = options;
    if (!namespaceEquals(options.group.ns, ns)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `the group's namespace ${JSON.stringify(namespaceToString(options.group.ns))} is not the session's namespace ${JSON.stringify(namespaceToString(ns))}`,
      );
    }
    const group = makeBackupGroup(ns, options.group.type, options.group.id);
    const dir = makeBackupDir(group, options.backupTime);

    if (!(await store.namespaceExists(ns))) {
      throw new BurrowError('NOT_FOUND', 'namespace not found', {
        details: { ns: namespaceToString(ns), store: store.name },
      });
    }

    const benchmarkGroup = group.type === 'host' && group.id === 'benchmark';
    const benchmark = options.benchmark === true;
    if (benchmarkGroup && !benchmark) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'unable to run benchmark without --benchmark flags',
      );
    }
    if (!benchmarkGroup && benchmark) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        "benchmark flags is only allowed on 'host/benchmark'",
      );
    }

    const groupCreated = !(await isDirectory(store.groupPath(group)));
    let groupGuard: LockGuard;
    try {
      ({ guard: groupGuard } = await store.createLockedBackupGroup(group, authId));
    } catch (error) {
      if (isBurrowError(error, 'PERMISSION_DENIED')) {
        throw new BurrowError('BACKUP_OWNER_MISMATCH', error.message, {
          details: error.details,
          cause: error,
        });
      }
      throw error;
    }

    const guards: LockGuard[] = [groupGuard];
    let snapshotCreated = false;
    try {
      const previous = await findPreviousSnapshot(store, group);
      let previousGuard: LockGuard | undefined;
      if (previous !== undefined) {
        if (dir.time <= previous.time) {
          throw new BurrowError(
            'BACKUP_TIME_NOT_NEWER',
            'backup timestamp is older than last backup.',
            { details: { backupTime: dir.time, lastBackupTime: previous.time } },
          );
        }
        try {
          previousGuard = await store.lockSnapshot(previous, false);
        } catch (error) {
          if (!isBurrowError(error, 'LOCKED')) throw error;
          throw new BurrowError('LOCKED', 'base snapshot is already locked by another operation', {
            details: { snapshot: formatSnapshot(previous) },
            cause: error,
          });
        }
        guards.push(previousGuard);
      }

      const { isNew, guard: snapshotGuard } = await store.createLockedBackupDir(dir);
      if (!isNew) {
        await snapshotGuard.release();
        throw new BurrowError('ALREADY_EXISTS', 'backup directory already exists.', {
          details: { snapshot: formatSnapshot(dir) },
        });
      }
      guards.push(snapshotGuard);
      snapshotCreated = true;

      const session = new BackupSession({
        store,
        dir,
        previous,
        benchmark,
        authId,
        groupGuard,
        snapshotGuard,
        previousGuard,
        groupCreated,
        debug: options.debug === true,
        trustedClient: options.trustedClient === true,
        tasks: options.tasks,
      });
      if (options.tasks !== undefined) {
        await session.#startTask(
          options.tasks,
          benchmark ? 'benchmark' : 'backup',
          options.origin,
          options.taskOptions,
        );
      }
      return session;
    } catch (error) {
      if (snapshotCreated) {
        if (groupCreated) await groupGuard.release();
        await store.removeBackupDir(dir, true).catch(() => undefined);
      }
      for (const guard of guards.reverse()) await guard.release().catch(() => undefined);
      throw error;
    }
  }

  async #startTask(
    tasks: TaskManager,
    workerType: 'backup' | 'benchmark',
    origin: string | undefined,
    taskOptions: TaskRunOptions | undefined,
  ): Promise<void> {
    const group = this.dir.group;
    const task = await SessionTask.start(
      tasks,
      workerType,
      `${this.store.name}:${group.type}/${group.id}`,
      formatAuthid(this.#authId),
      taskOptions,
    );
    this.#task = task;
    const from = origin === undefined ? '' : ` from ${origin}`;
    task.log(
      `starting new ${workerType} on datastore '${this.store.name}'${from}: ${JSON.stringify(formatSnapshot(this.dir))}`,
    );
    if (this.previous !== undefined) {
      task.log(`base snapshot: ${JSON.stringify(formatSnapshot(this.previous))}`);
    }
    // An aborted task ends the session as a dropped connection does (§5.3 "Session end").
    task.context.signal.addEventListener(
      'abort',
      () => void this.close(task.context.signal.reason),
      { once: true },
    );
  }

  /** The task's UPID, when the session runs as a task. */
  get upid(): string | undefined {
    return this.#task?.upid;
  }

  #log(line: string): void {
    this.#task?.log(line);
  }

  #debugLog(line: string): void {
    if (this.#debug) this.#task?.log(line);
  }

  previousBackupTime(): number | undefined {
    return this.previous?.time;
  }

  /** Chunk upload totals of the closed writers: what finish writes into the manifest. */
  stats(): ChunkUploadStats {
    return { ...this.#stats };
  }

  // -------------------------------------------------------------------------------------------
  // Call bookkeeping

  #requireRunning(): void {
    if (this.#state === 'finishing') {
      throw invalid('backup is already in the process of finishing.');
    }
    if (this.#state === 'finished') throw invalid('backup already marked as finished.');
    if (this.#state === 'closed' || this.#closing !== undefined) {
      throw invalid(`backup session for ${formatSnapshot(this.dir)} is closed`);
    }
  }

  /** Run a call: refused unless the session runs; tracked so that close() can wait for it. */
  #call<T>(fn: () => Promise<T>): Promise<T> {
    let promise: Promise<T>;
    try {
      this.#requireRunning();
      promise = fn();
    } catch (error) {
      return Promise.reject(asError(error));
    }
    this.#inFlight.add(promise);
    const done = (): void => void this.#inFlight.delete(promise);
    promise.then(done, done);
    return promise;
  }

  #writer(wid: number, kind: IndexKind): WriterState {
    if (typeof wid !== 'number' || !Number.isSafeInteger(wid) || wid < 1 || wid > MAX_WRITER_ID) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `wid must be an integer in 1..${MAX_WRITER_ID}, got ${String(wid)}`,
        { details: { wid } },
      );
    }
    const writer = this.#writers.get(wid);
    if (writer === undefined || writer.kind !== kind) {
      throw invalid(`${kind} writer '${wid}' not registered`, { wid, kind });
    }
    if (writer.status !== 'open') {
      throw invalid(`${kind} writer '${wid}' (${writer.name}) already closed`, {
        wid,
        kind,
        name: writer.name,
      });
    }
    return writer;
  }

  #reserveName(name: string): void {
    if (this.#names.has(name)) {
      throw invalid(`archive '${name}' already has an index writer in this session`, {
        filename: name,
      });
    }
    if (this.#nextWid > MAX_WRITER_ID) {
      throw invalid(`too many index writers: a session has at most ${MAX_WRITER_ID}`, {
        limit: MAX_WRITER_ID,
      });
    }
    this.#names.add(name);
  }

  /** Register a writer made by an awaited create: refused if the session moved on meanwhile. */
  async #register(make: (wid: number) => WriterState, undo: () => Promise<void>): Promise<number> {
    if (this.#state !== 'running' || this.#nextWid > MAX_WRITER_ID) {
      await undo();
      this.#requireRunning();
      throw invalid(`too many index writers: a session has at most ${MAX_WRITER_ID}`);
    }
    const wid = this.#nextWid++;
    this.#writers.set(wid, make(wid));
    return wid;
  }

  #relPath(name: string): string {
    return `${formatSnapshot(this.dir)}/${name}`;
  }

  // -------------------------------------------------------------------------------------------
  // §5.3 endpoints

  /**
   * GET /previous: the raw bytes of a file of the base snapshot. An index first registers every
   * chunk it references (digest → length) as known (§5.4). NO_PREVIOUS_BACKUP without a base,
   * NOT_FOUND when the base lacks the file.
   */
  downloadPrevious(archiveName: string): Promise<Uint8Array> {
    return this.#call(async () => {
      const previous = this.previous;
      if (previous === undefined) {
        throw new BurrowError('NO_PREVIOUS_BACKUP', 'no valid previous backup', {
          details: { group: formatSnapshot(this.dir) },
        });
      }
      const file = await readArchiveFile(this.store, previous, archiveName);
      if (file.chunks !== undefined) {
        this.#log(`register chunks in '${archiveName}' from previous backup.`);
        for (const chunk of file.chunks) this.#known.set(digestToHex(chunk.digest), chunk.size);
      }
      this.#log(`download '${archiveName}' from previous backup.`);
      return file.raw;
    });
  }

  /** POST /dynamic_index: a `.didx` writer; returns its wid. */
  createDynamicIndex(archiveName: string): Promise<number> {
    return this.#call(async () => {
      checkIndexName(archiveName, 'dynamic');
      this.#reserveName(archiveName);
      try {
        const writer = await this.store.createDynamicWriter(this.dir, archiveName);
        const wid = await this.#register(
          (id) => ({
            wid: id,
            kind: 'dynamic',
            name: archiveName,
            status: 'open',
            chunkCount: 0,
            stats: zeroStats(),
            writer,
            offset: 0,
            csum: new IndexCsumBuilder(),
          }),
          () => writer.abort(),
        );
        this.#log(
          `created new dynamic index ${wid} (${JSON.stringify(this.#relPath(archiveName))})`,
        );
        return wid;
      } catch (error) {
        this.#names.delete(archiveName);
        throw error;
      }
    });
  }

  /**
   * POST /fixed_index: a `.fidx` writer with 4 MiB slots; returns its wid. Without `size` the
   * image grows as chunks are appended [4.x]. With `reuseCsum` (which needs `size`) the index
   * starts as a copy of the base snapshot's index of the same name, whose digest list must hash
   * to `reuseCsum` and have as many slots; only changed slots are appended then.
   */
  createFixedIndex(archiveName: string, size?: number, reuseCsum?: Uint8Array): Promise<number> {
    return this.#call(async () => {
      checkIndexName(archiveName, 'fixed');
      if (size !== undefined) {
        checkCount(size, 'size', 1);
        if (size > MAX_FIXED_IMAGE_SIZE) {
          throw new BurrowError(
            'INVALID_ARGUMENT',
            `size ${size} is larger than the largest fixed index image (${MAX_FIXED_IMAGE_SIZE} bytes)`,
            { details: { size, limit: MAX_FIXED_IMAGE_SIZE } },
          );
        }
      }
      if (reuseCsum !== undefined) checkDigestArg(reuseCsum, 'reuse-csum');
      this.#reserveName(archiveName);
      try {
        const reuse =
          reuseCsum === undefined ? undefined : await this.#reusable(archiveName, size, reuseCsum);
        let writer: FixedIndexWriter | undefined;
        let guard: ProcessLockGuard | undefined;
        if (size !== undefined) {
          writer = await this.store.createFixedWriter(this.dir, archiveName, size);
          if (reuse !== undefined) {
            const copies: Promise<void>[] = [];
            for (const [position, digest] of reuse.entries()) {
              copies.push(writer.setDigest(position, digest));
            }
            const failed = (await Promise.allSettled(copies)).find((r) => r.status === 'rejected');
            if (failed !== undefined) {
              await writer.abort().catch(() => undefined);
              throw failed.reason;
            }
          }
        } else {
          guard = this.store.chunkStore.tryShared();
        }
        const wid = await this.#register(
          (id) => ({
            wid: id,
            kind: 'fixed',
            name: archiveName,
            status: 'open',
            chunkCount: 0,
            stats: zeroStats(),
            writer,
            declaredSize: size,
            size: size ?? 0,
            sizeFixed: size !== undefined,
            slots: size === undefined ? new Map() : undefined,
            guard,
            incremental: reuse !== undefined,
            smallChunks: 0,
          }),
          async () => {
            guard?.release();
            await writer?.abort();
          },
        );
        this.#log(`created new fixed index ${wid} (${JSON.stringify(this.#relPath(archiveName))})`);
        if (reuse !== undefined) {
          this.#log(`reusing ${reuse.length} chunk digests of the previous backup's index`);
        }
        return wid;
      } catch (error) {
        this.#names.delete(archiveName);
        throw error;
      }
    });
  }

  /** The digest list of the base snapshot's `name`, checked for reuse (§5.3 reuse-csum). */
  async #reusable(
    name: string,
    size: number | undefined,
    reuseCsum: Uint8Array,
  ): Promise<Uint8Array[]> {
    const previous = this.previous;
    if (previous === undefined) {
      throw new BurrowError(
        'NO_PREVIOUS_BACKUP',
        'cannot reuse index - no valid previous backup exists',
      );
    }
    if (size === undefined) {
      throw new BurrowError('INVALID_ARGUMENT', 'cannot reuse index without an image size');
    }
    let old;
    try {
      old = await readIndexFile(this.store.archivePath(previous, name));
    } catch (error) {
      throw new BurrowError(
        'NO_PREVIOUS_BACKUP',
        'cannot reuse index - no previous backup exists for archive',
        { details: { filename: name, snapshot: formatSnapshot(previous) }, cause: error },
      );
    }
    if (old.kind !== 'fixed') {
      throw new BurrowError(
        'NO_PREVIOUS_BACKUP',
        'cannot reuse index - no previous backup exists for archive',
        { details: { filename: name, snapshot: formatSnapshot(previous) } },
      );
    }
    const index = old.index;
    // The digests themselves, not the header's csum: the header is not trusted.
    const oldCsum = index.computeCsum();
    if (!bytesEqual(oldCsum, reuseCsum)) {
      throw invalid(
        `expected csum (${toHex(reuseCsum)}) doesn't match last backup's (${toHex(oldCsum)}), cannot do incremental backup`,
        { expected: toHex(reuseCsum), actual: toHex(oldCsum) },
      );
    }
    const slots = Math.ceil(size / FIXED_CHUNK_SIZE);
    if (index.chunkSize !== FIXED_CHUNK_SIZE || index.count !== slots) {
      throw invalid(
        `can't clone data from index with different size/count (${index.count} chunks of ${index.chunkSize} bytes, need ${slots} of ${FIXED_CHUNK_SIZE})`,
        { oldCount: index.count, oldChunkSize: index.chunkSize, count: slots },
      );
    }
    const digests: Uint8Array[] = [];
    for (let position = 0; position < index.count; position++) {
      digests.push(index.digest(position));
    }
    return digests;
  }

  /**
   * POST /dynamic_chunk, /fixed_chunk: store one chunk. `encoded` is its DataBlob; an
   * unencrypted one must decode to `size` bytes hashing to `digest` (an encrypted one cannot be
   * checked and is trusted). The CRC is the server's own. Stored with the store's insert rules
   * (a duplicate is counted, not rewritten), then known for appends. Returns the digest hex.
   */
  uploadChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encoded: Uint8Array,
  ): Promise<string> {
    return this.#call(async () => {
      if (!(encoded instanceof Uint8Array)) {
        throw new BurrowError('INVALID_ARGUMENT', 'an uploaded chunk must be a byte array');
      }
      return this.#storeChunk(wid, kind, digest, size, encoded.byteLength, async () => {
        const header = parseBlobHeader(encoded);
        if (!this.#trustedClient && !isEncryptedKind(header.kind)) {
          // Decoded into reused memory, only to be hashed: the stored chunk is `encoded`.
          const actual = plainBlobDigest(encoded, {
            checkCrc: false,
            maxSize: MAX_CHUNK_SIZE,
            expectedSize: size,
          });
          if (!bytesEqual(actual.digest, digest)) {
            throw new BurrowError('DIGEST_MISMATCH', 'detected chunk with wrong digest.', {
              details: { expected: digestToHex(digest), actual: toHex(actual.digest) },
            });
          }
          if (actual.size !== size) {
            throw new BurrowError(
              'SIZE_MISMATCH',
              `detected chunk with wrong length (${actual.size} != ${size})`,
              { details: { expected: size, actual: actual.size } },
            );
          }
        }
        return this.store.insertChunk(
          this.#trustedClient ? encoded : withComputedCrc(encoded, header),
          digest,
        );
      });
    });
  }

  /** Whether chunks come from Burrow's own pipeline in this process (SessionOptions.trustedClient). */
  get trustedClient(): boolean {
    return this.#trustedClient;
  }

  /**
   * Local mode only, not a PBS endpoint: uploadChunk for a chunk that the client's worker thread
   * has written to a temporary file in the store (ChunkStore.chunkFileTarget), put in place with
   * the store's insert rules (ChunkStore.insertChunkFile). Trusted sessions only, as the chunk is
   * never read here. The temporary file is gone when this settles, whatever the outcome.
   */
  uploadChunkFile(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    written: WrittenChunk,
    blobKind: BlobKind,
  ): Promise<string> {
    return this.#call(async () => {
      try {
        if (!this.#trustedClient) {
          throw new BurrowError(
            'INTERNAL',
            'a chunk written by the client itself is only taken in local mode',
          );
        }
        return await this.#storeChunk(wid, kind, digest, size, written.size, () =>
          this.store.insertChunkFile(written, blobKind, digest),
        );
      } catch (error) {
        // insertChunkFile removes it on its own failures; this is for the checks that refused
        // the chunk before it got there. On success the file is already renamed or removed.
        await rm(written.temp, { force: true });
        throw error;
      }
    });
  }

  /**
   * What every chunk upload checks (§5.3: the writer, the digest, the sizes, one short chunk per
   * fixed index) around `insert`, which stores it; then the chunk is registered with the writer.
   */
  async #storeChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encodedSize: number,
    insert: () => Promise<InsertResult>,
  ): Promise<string> {
    const writer = this.#writer(wid, kind);
    checkDigestArg(digest, 'digest');
    checkCount(size, 'size', 1);
    if (size > MAX_CHUNK_SIZE) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `size must be at most ${MAX_CHUNK_SIZE}, got ${size}`,
        {
          details: { size, limit: MAX_CHUNK_SIZE },
        },
      );
    }
    if (encodedSize > MAX_ENCODED_CHUNK_SIZE) {
      throw new BurrowError(
        'BLOB_TOO_LARGE',
        `uploaded chunk is ${encodedSize} bytes, more than the ${MAX_ENCODED_CHUNK_SIZE}-byte limit`,
        { details: { size: encodedSize, limit: MAX_ENCODED_CHUNK_SIZE } },
      );
    }
    let small = false;
    if (writer.kind === 'fixed') {
      if (size > FIXED_CHUNK_SIZE) {
        throw invalid(
          `fixed writer '${writer.name}' - got large chunk (${size} > ${FIXED_CHUNK_SIZE})`,
          { size, chunkSize: FIXED_CHUNK_SIZE },
        );
      }
      if (size < FIXED_CHUNK_SIZE) {
        if (writer.smallChunks > 0) {
          throw invalid(
            `fixed writer '${writer.name}' - detected multiple end chunks (chunk size too small)`,
            { size, chunkSize: FIXED_CHUNK_SIZE },
          );
        }
        // Counted now so that a concurrent second end chunk is refused too.
        writer.smallChunks++;
        small = true;
      }
    }
    try {
      const hex = digestToHex(digest);
      const { duplicate, encodedSize: storedSize } = await insert();
      // The writer may have been closed while the chunk was written; then, as in PBS, the
      // chunk is stored but not registered.
      this.#writer(wid, kind);
      this.#registerChunk(writer, hex, size, storedSize, duplicate);
      this.#debugLog(`upload_chunk done: ${size} bytes, ${hex}`);
      return hex;
    } catch (error) {
      if (small && writer.kind === 'fixed') writer.smallChunks--;
      throw error;
    }
  }

  /**
   * Local mode only, not a PBS endpoint: registers a chunk that the store already holds as if the
   * client had uploaded it and the upload had found a duplicate (stats and known chunks alike),
   * so that a client with a digest it did not know from the previous snapshot can skip encoding
   * it. The chunk is touched for GC as such an upload touches it. Resolves false, registering
   * nothing, when the store lacks a usable copy (ChunkStore.touchIfStored); the client then
   * uploads. The server never calls this: a client over the network cannot be taken at its
   * word about what the store holds and how long it is.
   */
  reuseStoredChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encrypted: boolean,
  ): Promise<boolean> {
    return this.#call(async () => {
      const writer = this.#writer(wid, kind);
      checkDigestArg(digest, 'digest');
      checkCount(size, 'size', 1);
      if (size > (writer.kind === 'fixed' ? FIXED_CHUNK_SIZE : MAX_CHUNK_SIZE)) {
        throw invalid(`chunk size ${size} is too large for a ${writer.kind} index`, { size });
      }
      const encodedSize = await this.store.touchIfStored(digest, encrypted);
      if (encodedSize === undefined) return false;
      // As after an upload: a writer closed meanwhile gets nothing registered.
      this.#writer(wid, kind);
      const hex = digestToHex(digest);
      this.#registerChunk(writer, hex, size, encodedSize, true);
      this.#debugLog(`reused stored chunk: ${size} bytes, ${hex}`);
      return true;
    });
  }

  /** A chunk the writer now references: its upload statistics, and known for appends. */
  #registerChunk(
    writer: WriterState,
    hex: string,
    size: number,
    encodedSize: number,
    duplicate: boolean,
  ): void {
    writer.stats.count++;
    writer.stats.size += size;
    writer.stats.compressedSize += encodedSize;
    if (duplicate) writer.stats.duplicates++;
    this.#known.set(hex, size);
  }

  /**
   * PUT /dynamic_index, /fixed_index: append (start offset, digest) pairs, in order. Each digest
   * must be known; its length comes from the known-chunks map. Dynamic: each offset must be the
   * writer's current end. Fixed: 4 MiB aligned, full chunks except the one ending the image,
   * addressed by slot. A refused pair fails the call; the pairs before it stay appended, as in
   * PBS.
   */
  appendIndex(
    wid: number,
    kind: IndexKind,
    digests: readonly Uint8Array[],
    offsets: readonly number[],
  ): Promise<void> {
    return this.#call(async () => {
      const writer = this.#writer(wid, kind);
      const digestList: unknown = digests;
      const offsetList: unknown = offsets;
      if (!Array.isArray(digestList) || !Array.isArray(offsetList)) {
        throw new BurrowError('INVALID_ARGUMENT', 'digest-list and offset-list must be arrays');
      }
      if (offsets.length !== digests.length) {
        throw invalid(`offset list has wrong length (${offsets.length} != ${digests.length})`, {
          offsets: offsets.length,
          digests: digests.length,
        });
      }
      const writes: Promise<unknown>[] = [];
      let refused: unknown;
      try {
        for (let i = 0; i < digests.length; i++) {
          const digest = digests[i];
          const offset = offsets[i];
          checkDigestArg(digest, `digest-list[${i}]`);
          checkCount(offset, `offset-list[${i}]`, 0);
          const hex = digestToHex(digest);
          const size = this.#known.get(hex);
          if (size === undefined) throw invalid(`no such chunk ${hex}`, { digest: hex });
          if (writer.kind === 'dynamic') {
            writes.push(this.#appendDynamic(writer, offset, size, digest));
          } else {
            writes.push(this.#appendFixed(writer, offset, size, digest));
          }
          this.#debugLog(
            `successfully added chunk ${hex} to ${kind} index ${wid} (offset ${offset}, size ${size})`,
          );
        }
      } catch (error) {
        refused = error;
      }
      this.#debugLog(`${kind}_append ${writes.length} chunks`);
      const failed = (await Promise.allSettled(writes)).find((r) => r.status === 'rejected');
      if (failed !== undefined) {
        // An index writer that failed to write is aborted; the archive cannot be closed.
        await this.#dropWriter(writer);
        throw failed.reason;
      }
      if (refused !== undefined) throw asError(refused);
    });
  }

  /** Checks and state changes happen here, synchronously; only the file write is returned. */
  #appendDynamic(
    writer: DynamicWriterState,
    offset: number,
    size: number,
    digest: Uint8Array,
  ): Promise<void> {
    if (writer.offset !== offset) {
      throw invalid(
        `dynamic writer '${writer.name}' append chunk failed - got strange chunk offset (${writer.offset} != ${offset})`,
        { expected: writer.offset, actual: offset },
      );
    }
    const end = offset + size;
    if (!Number.isSafeInteger(end)) {
      throw new BurrowError('INVALID_ARGUMENT', `chunk end ${end} exceeds 2^53-1`);
    }
    const entry = new Uint8Array(8 + DIGEST_SIZE);
    new DataView(entry.buffer).setBigUint64(0, BigInt(end), true);
    entry.set(digest, 8);
    writer.csum.update(entry);
    writer.offset = end;
    writer.chunkCount++;
    return writer.writer.append(end, entry.subarray(8));
  }

  #appendFixed(
    writer: FixedWriterState,
    offset: number,
    size: number,
    digest: Uint8Array,
  ): Promise<void> {
    const fail = (why: string): never => {
      throw invalid(`fixed writer '${writer.name}' - ${why}`, {
        offset,
        size,
        imageSize: writer.size,
      });
    };
    const end = offset + size;
    if (size > FIXED_CHUNK_SIZE || size === 0) {
      fail(`chunk with unexpected length (${size} != ${FIXED_CHUNK_SIZE})`);
    }
    if (offset % FIXED_CHUNK_SIZE !== 0) fail(`got unaligned chunk (pos = ${offset})`);
    if (writer.sizeFixed) {
      if (end > writer.size) fail(`chunk data exceeds size (${end} > ${writer.size})`);
      if (size !== FIXED_CHUNK_SIZE && end !== writer.size) {
        fail(`chunk with unexpected length (${size} != ${FIXED_CHUNK_SIZE})`);
      }
    } else if (end > MAX_FIXED_IMAGE_SIZE) {
      fail(`chunk data exceeds the largest fixed index image (${end} > ${MAX_FIXED_IMAGE_SIZE})`);
    } else if (size < FIXED_CHUNK_SIZE) {
      // The first short chunk ends the image: nothing appended so far may lie beyond it.
      if (end < writer.size) fail(`chunk data exceeds size (${writer.size} > ${end})`);
      writer.size = end;
      writer.sizeFixed = true;
    } else {
      writer.size = Math.max(writer.size, end);
    }
    const position = offset / FIXED_CHUNK_SIZE;
    writer.chunkCount++;
    if (writer.writer !== undefined) return writer.writer.setDigest(position, digest);
    writer.slots?.set(position, digest.slice());
    return Promise.resolve();
  }

  /** Abort a writer's index (its temp file goes) and mark it failed. */
  async #dropWriter(writer: WriterState): Promise<void> {
    writer.status = 'failed';
    this.#names.delete(writer.name);
    if (writer.kind === 'fixed') {
      writer.guard?.release();
      writer.guard = undefined;
    }
    await writer.writer?.abort().catch(() => undefined);
  }

  /**
   * POST /dynamic_close, /fixed_close: check count, size and csum (the definitions of §5.3),
   * then publish the index. A writer whose close fails is dropped (its temp file removed), as in
   * PBS, and its id then refuses further calls.
   */
  closeIndex(
    wid: number,
    kind: IndexKind,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<void> {
    return this.#call(async () => {
      const writer = this.#writer(wid, kind);
      const min = kind === 'dynamic' ? 1 : 0;
      checkCount(chunkCount, 'chunk-count', min);
      checkCount(size, 'size', min);
      checkDigestArg(csum, 'csum');
      // From here on the id is used up, whatever the outcome.
      writer.status = 'closed';
      try {
        const published =
          writer.kind === 'dynamic'
            ? await this.#closeDynamic(writer, chunkCount, size, csum)
            : await this.#closeFixed(writer, chunkCount, size, csum);
        this.#fileCount++;
        for (const key of ['count', 'size', 'compressedSize', 'duplicates'] as const) {
          this.#stats[key] += writer.stats[key];
        }
        this.#logUploadStats(writer.name, published, size, chunkCount, writer.stats);
      } catch (error) {
        await this.#dropWriter(writer);
        throw error;
      }
    });
  }

  async #closeDynamic(
    writer: DynamicWriterState,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<Uint8Array> {
    const prefix = `dynamic writer '${writer.name}' close failed`;
    if (writer.chunkCount !== chunkCount) {
      throw invalid(`${prefix} - unexpected chunk count (${writer.chunkCount} != ${chunkCount})`);
    }
    if (writer.offset !== size) {
      throw invalid(`${prefix} - unexpected file size (${writer.offset} != ${size})`);
    }
    // Checked before the index is published: a wrong index never appears under its name.
    if (!bytesEqual(writer.csum.digest(), csum))
      throw invalid(`${prefix} - got unexpected checksum`);
    return (await writer.writer.close()).csum;
  }

  async #closeFixed(
    writer: FixedWriterState,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<Uint8Array> {
    const prefix = `fixed writer '${writer.name}' close failed`;
    if (writer.chunkCount !== chunkCount) {
      throw invalid(
        `${prefix} - received wrong number of chunk (${writer.chunkCount} != ${chunkCount})`,
      );
    }
    const slots = Math.ceil(writer.size / FIXED_CHUNK_SIZE);
    if (!writer.incremental && chunkCount !== slots) {
      throw invalid(`${prefix} - unexpected chunk count (${slots} != ${chunkCount})`);
    }
    if (size !== writer.size) {
      throw invalid(`${prefix} - unexpected file size (${writer.size} != ${size})`);
    }
    let index = writer.writer;
    if (index === undefined) {
      // A size-less writer: the index is written now that its size is known.
      if (writer.size === 0) {
        throw new BurrowError(
          'INDEX_EMPTY',
          `${prefix} - an image without chunks cannot be stored as a fixed index`,
        );
      }
      index = await this.store.createFixedWriter(this.dir, writer.name, writer.size);
      writer.writer = index;
      const fills: Promise<void>[] = [];
      for (const [position, digest] of writer.slots ?? []) {
        fills.push(index.setDigest(position, digest));
      }
      const failed = (await Promise.allSettled(fills)).find((r) => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    }
    const result = await index.close();
    writer.guard?.release();
    writer.guard = undefined;
    if (!bytesEqual(result.csum, csum)) {
      // Slots arrive in any order, so the csum is known only now: take the index back.
      await rm(this.store.archivePath(this.dir, writer.name), { force: true });
      throw invalid(`${prefix} - got unexpected checksum`);
    }
    return result.csum;
  }

  #logUploadStats(
    name: string,
    csum: Uint8Array,
    size: number,
    chunkCount: number,
    stats: ChunkUploadStats,
  ): void {
    this.#log(`Upload statistics for '${name}'`);
    this.#log(`Checksum: ${toHex(csum)}`);
    this.#log(`Size: ${size}`);
    this.#log(`Chunk count: ${chunkCount}`);
    if (size === 0 || chunkCount === 0) return;
    this.#log(`Upload size: ${stats.size} (${percent(stats.size, size)}%)`);
    // A chunk uploaded but never appended (the zero chunk, say) is no client-side duplicate.
    const clientDuplicates = Math.max(0, chunkCount - stats.count);
    const duplicates = clientDuplicates + stats.duplicates;
    if (duplicates > 0) {
      this.#log(
        `Duplicates: ${clientDuplicates}+${stats.duplicates} (${percent(duplicates, chunkCount)}%)`,
      );
    }
    if (stats.size > 0) {
      this.#log(`Compression: ${percent(stats.compressedSize, stats.size)}%`);
    }
  }

  /**
   * POST /blob: store a `.blob` file (the manifest too). Its CRC must match; it is written
   * atomically, replacing a blob of the same name.
   */
  uploadBlob(fileName: string, encoded: Uint8Array): Promise<void> {
    return this.#call(async () => {
      if (
        typeof fileName !== 'string' ||
        !isArchiveName(fileName) ||
        archiveTypeOf(fileName) !== 'blob'
      ) {
        throw new BurrowError(
          'INVALID_ARCHIVE_NAME',
          `wrong blob file extension: '${String(fileName).slice(0, 120)}'`,
          { details: { filename: fileName } },
        );
      }
      if (!(encoded instanceof Uint8Array)) {
        throw new BurrowError('INVALID_ARGUMENT', 'an uploaded blob must be a byte array');
      }
      if (encoded.byteLength > MAX_ENCODED_CHUNK_SIZE) {
        throw new BurrowError(
          'BLOB_TOO_LARGE',
          `uploaded blob is ${encoded.byteLength} bytes, more than the ${MAX_ENCODED_CHUNK_SIZE}-byte limit`,
          { details: { size: encoded.byteLength, limit: MAX_ENCODED_CHUNK_SIZE } },
        );
      }
      const header = parseBlobHeader(encoded);
      const computed = crc32(encoded.subarray(header.headerSize));
      if (computed !== header.crc) {
        throw new BurrowError('BLOB_CRC_MISMATCH', 'Data blob has wrong CRC checksum.', {
          details: { filename: fileName, stored: header.crc, computed },
        });
      }
      await this.store.writeBlob(this.dir, fileName, encoded);
      this.#fileCount++;
      this.#log(
        `add blob ${JSON.stringify(this.store.archivePath(this.dir, fileName))} (${encoded.byteLength} bytes, comp: ${encoded.byteLength})`,
      );
    });
  }

  /**
   * POST /finish: no writer may be open, at least one file must have been stored, and the
   * manifest must be there and parse: it gets `unprotected.chunk_upload_stats` and is written
   * again. Then the store is synced per its sync level, and the base snapshot must still exist.
   * After that the session releases its locks, ends its task OK and (with `verify-new`) starts
   * the verification of the new snapshot, which close() waits for.
   */
  finish(): Promise<void> {
    return this.#call(async () => {
      this.#state = 'finishing';
      try {
        for (const writer of this.#writers.values()) {
          if (writer.status === 'open') {
            throw invalid('found open index writer - unable to finish backup', {
              wid: writer.wid,
              name: writer.name,
            });
          }
        }
        if (this.#fileCount === 0) {
          throw invalid('backup does not contain valid files (file count == 0)');
        }
        const stats = this.#stats;
        try {
          await this.store.updateManifest(this.dir, (manifest) => {
            manifest.unprotected['chunk_upload_stats'] = {
              count: stats.count,
              size: stats.size,
              compressed_size: stats.compressedSize,
              duplicates: stats.duplicates,
            };
          });
        } catch (error) {
          throw new BurrowError(
            'BACKUP_SESSION_INVALID',
            `unable to update manifest blob - ${messageOf(error)}`,
            {
              details: { code: isBurrowError(error) ? error.code : undefined },
              cause: error,
            },
          );
        }
        await this.store.chunkStore.syncFilesystem();
        const previous = this.previous;
        if (previous !== undefined && !(await isDirectory(this.store.snapshotPath(previous)))) {
          throw invalid(
            `base snapshot ${formatSnapshot(previous)} was removed during backup, cannot finish as chunks might be missing`,
            { snapshot: formatSnapshot(previous) },
          );
        }
      } catch (error) {
        this.#state = 'running';
        throw error;
      }
      this.#state = 'finished';
      await this.#completed();
    });
  }

  /** After a successful finish: what PBS does when the connection of a finished backup ends. */
  async #completed(): Promise<void> {
    if (this.benchmark) {
      this.#log('benchmark finished successfully');
      await this.#removeSnapshot();
      await this.#task?.end();
      return;
    }
    await this.#releaseLocks();
    this.#log('backup finished successfully');
    if (this.#tasks !== undefined) await this.#startVerify(this.#tasks);
    await this.#task?.end();
  }

  /** verify-new (§6.8 step 7): wait until the verify task runs (or could not start), not longer. */
  async #startVerify(tasks: TaskManager): Promise<void> {
    let started!: () => void;
    const running = new Promise<'started'>((resolve) => {
      started = () => resolve('started');
    });
    const verify = verifyNewSnapshot(this.store, this.dir, tasks, formatAuthid(this.#authId), {
      onStart: () => started(),
    });
    const first = await Promise.race([
      running,
      verify.then(
        () => 'done' as const,
        (error: unknown) => ({ error }),
      ),
    ]);
    if (typeof first === 'object') {
      this.#log(
        `backup finished, but starting the requested verify task failed: ${messageOf(first.error)}`,
      );
    }
    // Its failures are in its own task log; the backup's outcome does not depend on them.
    this.#verify = verify.catch(() => undefined);
  }

  async #releaseLocks(): Promise<void> {
    for (const guard of [this.#snapshotGuard, this.#previousGuard, this.#groupGuard]) {
      await guard?.release().catch(() => undefined);
    }
  }

  /**
   * Remove the new snapshot (forced: this session holds its lock). A group this session created
   * is released first, so that the removal can take the group away too when nothing is left in
   * it: a failed first backup leaves no owner behind.
   */
  async #removeSnapshot(): Promise<void> {
    if (this.#groupCreated) await this.#groupGuard.release().catch(() => undefined);
    try {
      await this.store.removeBackupDir(this.dir, true);
    } catch (error) {
      if (!isBurrowError(error, 'NOT_FOUND')) {
        this.#task?.context.warn(
          `removing snapshot ${formatSnapshot(this.dir)} failed: ${messageOf(error)}`,
        );
      }
    }
    await this.#releaseLocks();
  }

  /**
   * End the session. Calls still running are waited for. Without a successful finish the new
   * snapshot directory (index temp files included) is removed and the task ends with `reason`
   * (a dropped connection, an abort) or "backup ended but finished flag is not set."; a
   * benchmark session always ends OK. After a finish this only waits for verify-new. All locks
   * are released either way. Idempotent.
   */
  close(reason?: unknown): Promise<void> {
    this.#closing ??= this.#close(reason);
    return this.#closing;
  }

  async #close(reason: unknown): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    if (this.#state === 'finished') {
      await this.#verify;
      return;
    }
    this.#state = 'closed';
    let failure: unknown;
    if (this.benchmark) {
      this.#log('benchmark finished successfully');
    } else if (reason !== undefined) {
      failure = reason;
      this.#log(`backup failed: ${messageOf(reason)}`);
      this.#log('removing failed backup');
    } else {
      failure = new BurrowError('BACKUP_SESSION_INVALID', NOT_FINISHED_MESSAGE, {
        details: { snapshot: formatSnapshot(this.dir) },
      });
      this.#log(`backup ended and finish failed: ${NOT_FINISHED_MESSAGE}`);
      this.#log('removing unfinished backup');
    }
    for (const writer of this.#writers.values()) {
      if (writer.status === 'open') await this.#dropWriter(writer);
    }
    await this.#removeSnapshot();
    await this.#task?.end(failure);
  }
}
