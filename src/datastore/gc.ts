/**
 * Garbage collection of a datastore (pbs-formats §7), the PBS 4 algorithm:
 *
 * - phase 1 (mark) sets the atime of every chunk that any index file references, whether the index
 *   sits where the backup hierarchy expects it or anywhere else under the base directory;
 * - phase 2 (sweep) removes chunk files whose atime is older than a cutoff that lies at least the
 *   grace period (tuning `gc-atime-cutoff`, default 24 h 5 min) before the start of phase 1, and
 *   further back when a backup writer of this process started earlier than that.
 *
 * Why this is safe is argued in docs/design.md ("GC safety"). The rules that argument rests on
 * are enforced here: the mark phase must have seen every index, so any failure to read one (a
 * permission error in the tree walk, an index that does not parse) aborts GC before anything is
 * deleted; GC holds the chunk store's exclusive `.lock` so that no *other* process can have a
 * writer whose start time we do not know; and all times come from one injectable clock, compared
 * with the real atimes the kernel wrote.
 */
import type { Dirent } from 'node:fs';
import { lstatSync, unlinkSync } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import type { ErrorCode } from '../lib/errors.js';
import { touchAtime } from '../lib/native-fs.js';
import type { TaskContext } from '../tasks/index.js';
import { indexKindOfFile } from '../format/index-common.js';
import { ROOT_NAMESPACE, formatRfc3339Utc, groupPath } from '../types/backup.js';
import type { BackupGroup } from '../types/backup.js';
import { DIGEST_SIZE } from '../types/digest.js';
import { DYNAMIC_INDEX_ENTRY_SIZE, FIXED_INDEX_ENTRY_SIZE } from '../format/magic.js';
import { readDatastoreConfig } from './datastore-config-store.js';
import type { DataStore } from './datastore.js';
import { defaultGcStatus } from './gc-status.js';
import type { GcStatusData } from './gc-status.js';
import { readIndexFile } from './index-file.js';
import type { IndexFile } from './index-file.js';
import type { LockGuard } from './lock-file.js';

/** Extra distance below the oldest writer's start (seconds), as PBS keeps it (§7.2 step 3). */
export const OLDEST_WRITER_SAFETY_GAP = 300;

/** Marking of the newest snapshot of a group is retried this often before the group is locked. */
const GROUP_RETRIES = 10;

/** Where the digest sits in a 40-byte dynamic index entry (after the u64 end offset). */
const DYNAMIC_ENTRY_DIGEST_OFFSET = 8;

/** Bad copies of a chunk are `<hex>.0.bad` … `<hex>.9.bad` (§2.7). */
const BAD_COPY_COUNT = 10;

export interface GcOptions {
  /** The clock that gives phase 1 its start time (default: the system clock). */
  clock?: Clock;
  /** The 1 s pause of the atime safety check (§7.6); tests pass a short real delay. */
  sleep?: (ms: number) => Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// One GC per datastore per process

/** Base directories of the stores this process is collecting right now. */
const running = new Set<string>();

/** True while this process runs a GC on the store at `base`. */
export function garbageCollectionRunning(base: string): boolean {
  return running.has(resolve(base));
}

/**
 * Run GC on `store` as part of `task` (worker type `garbage_collection`, id = store name).
 * Refused with LOCKED when this process already collects the store ("Start GC failed - (already
 * running/locked)") or when another process holds the chunk store's `.lock` (a backup writer
 * there, whose start time we cannot know). Returns the status that is also saved to `.gc-status`.
 */
export async function garbageCollection(
  store: DataStore,
  task: TaskContext,
  opts: GcOptions = {},
): Promise<GcStatusData> {
  const key = resolve(store.base);
  if (running.has(key)) {
    throw new BurrowError('LOCKED', 'Start GC failed - (already running/locked)', {
      details: { datastore: store.name, path: store.base },
    });
  }
  running.add(key);
  try {
    // Another process with a writer, or with a GC of its own, makes this throw LOCKED: we cannot
    // know when that process's oldest writer started, so there is no safe cutoff.
    const exclusive = store.chunkStore.tryExclusive();
    try {
      return await collect(store, task, opts);
    } finally {
      exclusive.release();
    }
  } finally {
    running.delete(key);
  }
}

async function collect(
  store: DataStore,
  task: TaskContext,
  opts: GcOptions,
): Promise<GcStatusData> {
  const clock = opts.clock ?? systemClock;
  const chunkStore = store.chunkStore;
  const tuning = store.tuning;

  await refuseNestedStores(store, task);

  const phase1Start = clock.nowSeconds();
  const oldestWriter = chunkStore.oldestWriter() ?? phase1Start;
  const status: GcStatusData = {
    ...defaultGcStatus(),
    upid: task.upid,
    'cache-stats': { hits: 0, misses: 0 },
  };

  if (tuning.gcAtimeSafetyCheck) {
    try {
      await chunkStore.atimeSafetyCheck(opts.sleep === undefined ? {} : { sleep: opts.sleep });
    } catch (error) {
      throw rewrap(error, 'GC_ATIME_CHECK_FAILED', 'atime safety check failed');
    }
    task.log('Access time update check successful, proceeding with GC.');
  } else {
    task.log('Access time update check disabled by datastore tuning options.');
  }

  const cutoff = tuning.gcAtimeCutoff * 60;
  const minAtime = computeMinAtime(phase1Start, oldestWriter, cutoff);
  task.log(
    `Using access time cutoff ${formatTimeSpan(cutoff)}, minimum access time is ${formatTime(phase1Start - cutoff)}`,
  );
  if (minAtime !== phase1Start - cutoff) {
    task.log(
      `Oldest backup writer started at ${formatTime(oldestWriter)}, extending minimum access time to ${formatTime(minAtime)}`,
    );
  }
  if (tuning.gcCacheCapacity !== DEFAULT_CACHE_CAPACITY) {
    task.log(`Using chunk digest cache capacity of ${tuning.gcCacheCapacity}.`);
  }

  task.log('Start GC phase1 (mark used chunks)');
  await markUsedChunks(store, task, status, tuning.gcCacheCapacity);

  task.log('Start GC phase2 (sweep unused chunks)');
  await sweepUnusedChunks(store, task, status, minAtime, oldestWriter);

  for (const line of summaryLines(status)) task.log(line);

  await store.saveGcStatus(status);
  return status;
}

const DEFAULT_CACHE_CAPACITY = 1_048_576;

async function realOrResolved(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

function inside(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer.endsWith(sep) ? outer : outer + sep);
}

/**
 * PBS 4 refuses to collect a store whose directory lies inside another configured store or
 * contains one: the outer store's walk would mark the inner store's indexes, but the outer sweep
 * would never see the inner chunks and vice versa, and two stores sharing chunk directories would
 * each delete the other's chunks. Creation refuses such a layout; this catches an edited config.
 * A store opened by an unconfigured path has no configured siblings to compare with.
 */
async function refuseNestedStores(store: DataStore, task: TaskContext): Promise<void> {
  if (store.config === undefined) return;
  const { entries } = await readDatastoreConfig(store.dirs);
  const own = await realOrResolved(store.base);
  for (const entry of entries) {
    if (entry.name === store.name) continue;
    const other = await realOrResolved(entry.props.path);
    if (inside(own, other) || inside(other, own)) {
      task.log(`Current datastore path: ${store.base}`);
      throw new BurrowError(
        'DATASTORE_INVALID',
        `Aborting GC for safety reasons: datastore '${store.name}' at ${store.base} is nested with datastore '${entry.name}' at ${entry.props.path}`,
        { details: { datastore: store.name, other: entry.name, otherPath: entry.props.path } },
      );
    }
  }
}

/**
 * The sweep cutoff (§7.2 step 3, PBS 4): `start − cutoff`, or `oldestWriter − 300` when a writer
 * of this process started before that. Chunk files with an atime below the result are removed.
 */
export function computeMinAtime(
  phase1Start: number,
  oldestWriter: number,
  cutoffSeconds: number,
): number {
  const minAtime = phase1Start - cutoffSeconds;
  return oldestWriter < minAtime ? oldestWriter - OLDEST_WRITER_SAFETY_GAP : minAtime;
}

export type SweepDecision = 'remove' | 'pending' | 'keep';

/**
 * What the sweep does with a chunk file of this atime (§7.2 step 5): remove it below the cutoff;
 * below the oldest writer (or the start of phase 1 when there is none) it is "pending", i.e. not
 * marked by this run but still inside the grace window; otherwise it is in use.
 */
export function sweepDecision(
  atime: number,
  minAtime: number,
  oldestWriter: number,
): SweepDecision {
  if (atime < minAtime) return 'remove';
  if (atime < oldestWriter) return 'pending';
  return 'keep';
}

function rewrap(error: unknown, fallback: ErrorCode, context: string): BurrowError {
  const message = error instanceof Error ? error.message : String(error);
  const code = isBurrowError(error) ? error.code : fallback;
  return new BurrowError(code, `${context}: ${message}`, {
    details: isBurrowError(error) ? { ...error.details } : {},
    cause: error,
  });
}

function formatTime(epochSeconds: number): string {
  try {
    return formatRfc3339Utc(epochSeconds);
  } catch {
    return `${epochSeconds} (epoch seconds)`;
  }
}

/** `1d 5m`, `45m`, `2h 30s`: a duration in whole seconds for a log line. */
export function formatTimeSpan(seconds: number): string {
  const parts: string[] = [];
  let rest = Math.max(0, Math.floor(seconds));
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
  ] as const) {
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (count > 0) parts.push(`${count}${unit}`);
  }
  if (rest > 0 || parts.length === 0) parts.push(`${rest}s`);
  return parts.join(' ');
}

// ---------------------------------------------------------------------------------------------
// Phase 1a: every index file under the base directory

/** The part of a directory entry the walk looks at (node:fs Dirent has it). */
export type WalkEntry = Pick<Dirent, 'name' | 'isDirectory' | 'isFile' | 'isSymbolicLink'>;

export interface IndexWalkOptions {
  /** Directory listing; injectable so tests can produce errors the current user cannot provoke. */
  readdir?: (path: string) => Promise<WalkEntry[]>;
  /** Receives "ignoring vanished file" notes. */
  log?: (line: string) => void;
}

const defaultReaddir = (path: string): Promise<Dirent[]> => readdir(path, { withFileTypes: true });

function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Every `*.fidx` / `*.didx` below `base`, as absolute paths (§7.2 step 4). Names starting with
 * `.` are skipped (so `.chunks` is never entered) and symbolic links are listed but not followed.
 * A directory that cannot be read because of permissions aborts the walk, since GC must never
 * sweep after missing an index: only `lost+found` directly below the base (where fsck puts a
 * root-only directory) is passed over. A directory that vanished meanwhile is skipped; any other
 * error aborts.
 */
export async function listIndexFiles(
  base: string,
  options: IndexWalkOptions = {},
): Promise<Set<string>> {
  const list = options.readdir ?? defaultReaddir;
  const found = new Set<string>();
  const stack: Array<{ path: string; depth: number }> = [{ path: resolve(base), depth: 0 }];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const { path, depth } = next;
    let entries: WalkEntry[];
    try {
      entries = await list(path);
    } catch (error) {
      const code = errnoOf(error);
      if (code === 'EACCES' || code === 'EPERM') {
        // PBS says depth ≤ 1, which would also pass over an unreadable base directory that
        // happens to be called lost+found, and then sweep everything: only depth 1 here.
        if (depth === 1 && path.endsWith('/lost+found')) continue;
        throw new BurrowError(
          'PERMISSION_DENIED',
          `cannot continue garbage-collection safely, permission denied on: ${path}`,
          { details: { path, errno: code }, cause: error },
        );
      }
      if (code === 'ENOENT') {
        options.log?.(`ignoring vanished file: ${path}`);
        continue;
      }
      throw new BurrowError(
        'IO_ERROR',
        `unexpected error on datastore traversal: ${code ?? String(error)} - ${path}`,
        { details: { path, errno: code }, cause: error },
      );
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const child = join(path, entry.name);
      if (entry.isDirectory()) {
        stack.push({ path: child, depth: depth + 1 });
      } else if (indexKindOfFile(entry.name) !== undefined) {
        // Regular files and symlinks by name, as PBS's walk yields both; everything else
        // (sockets, FIFOs) cannot be an index and would only fail to open.
        if (entry.isFile() || entry.isSymbolicLink()) found.add(child);
      }
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Phase 1b: mark

/**
 * A set of recently touched digests with least-recently-used eviction (tuning
 * `gc-cache-capacity`): a chunk shared by many snapshots is touched once, not once per index.
 * A Map keeps insertion order, so re-inserting on a hit makes the first key the oldest.
 */
export class DigestLru {
  readonly capacity: number;
  readonly #map = new Map<string, true>();

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /** Records `key`; returns true if it was there already (a hit). */
  insert(key: string): boolean {
    if (this.#map.delete(key)) {
      this.#map.set(key, true);
      return true;
    }
    this.#map.set(key, true);
    if (this.#map.size > this.capacity) {
      const oldest = this.#map.keys().next();
      if (oldest.done !== true) this.#map.delete(oldest.value);
    }
    return false;
  }

  get size(): number {
    return this.#map.size;
  }
}

/** Read an index for marking; undefined when it vanished (pruned meanwhile). */
async function openIndexForGc(path: string): Promise<IndexFile | undefined> {
  try {
    return await readIndexFile(path);
  } catch (error) {
    if (isBurrowError(error, 'NOT_FOUND')) return undefined;
    // The reader does not follow symbolic links; PBS opens an index through them, so do we.
    if (isBurrowError(error) && error.details.errno === 'ELOOP') {
      let target: string;
      try {
        target = await realpath(path);
      } catch (inner) {
        if (errnoOf(inner) === 'ENOENT') return undefined;
        throw rewrap(inner, 'IO_ERROR', `can't open index '${path}'`);
      }
      return openIndexForGc(target);
    }
    throw rewrap(error, 'IO_ERROR', 'marking used chunks failed');
  }
}

interface MarkState {
  readonly store: DataStore;
  readonly task: TaskContext;
  readonly status: GcStatusData;
  readonly cache: DigestLru | undefined;
}

/** Index entries marked between two yields to the event loop. */
const MARK_BATCH = 1024;

const yieldToEventLoop = (): Promise<void> => new Promise((done) => setImmediate(done));

/**
 * Touch every chunk `index` references. This is GC's hot loop (one pass per index entry), so it
 * works on the index body directly: the digest's hex (which is both the cache key and the file
 * name) comes from one native call, and the touch is the synchronous utimensat of the native
 * helper on `<chunk dir>/<4 hex>/<64 hex>`, exactly what ChunkStore.touchChunk does, without its
 * two awaits per chunk (which doubled the mark time in bench/datastore.bench.ts). The event loop
 * gets a turn every MARK_BATCH entries, so a server stays responsive during a long mark.
 */
async function markIndex(state: MarkState, index: IndexFile, path: string): Promise<void> {
  const { store, task, status, cache } = state;
  const chunkDir = store.chunkStore.chunkDir;
  const stats = status['cache-stats'];
  status['index-file-count'] += 1;
  status['index-data-bytes'] += index.index.size;
  const body = index.index.body;
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const stride = index.kind === 'fixed' ? FIXED_INDEX_ENTRY_SIZE : DYNAMIC_INDEX_ENTRY_SIZE;
  const digestOffset = index.kind === 'fixed' ? 0 : DYNAMIC_ENTRY_DIGEST_OFFSET;
  const count = index.index.count;
  for (let pos = 0; pos < count; pos++) {
    task.checkAbort();
    if (pos % MARK_BATCH === MARK_BATCH - 1) await yieldToEventLoop();
    const at = pos * stride + digestOffset;
    const hex = bytes.toString('hex', at, at + DIGEST_SIZE);
    if (cache !== undefined) {
      if (cache.insert(hex)) {
        if (stats !== undefined) stats.hits += 1;
        continue;
      }
      if (stats !== undefined) stats.misses += 1;
    }
    const chunkPath = `${chunkDir}/${hex.slice(0, 4)}/${hex}`;
    if (touchAtime(chunkPath)) continue;
    task.warn(
      `warning: unable to access non-existent chunk ${hex}, required by ${JSON.stringify(path)}`,
    );
    // Keep the retired copies while an index still wants this digest: once a good copy is
    // uploaded again, marking touches that one instead and the .bad files age out.
    for (let n = 0; n < BAD_COPY_COUNT; n++) touchAtime(`${chunkPath}.${n}.bad`);
  }
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return false;
    throw error;
  }
}

async function markUsedChunks(
  store: DataStore,
  task: TaskContext,
  status: GcStatusData,
  cacheCapacity: number,
): Promise<void> {
  // Two passes, as PBS 4 does: the walk finds every index wherever it lies; the hierarchy pass
  // marks snapshots newest first (narrowing the race with a prune that follows a new backup);
  // whatever the walk found that the hierarchy did not name is marked last and reported.
  const unprocessed = await listIndexFiles(store.base, { log: (line) => task.log(line) });
  let indexCount = unprocessed.size;
  const state: MarkState = {
    store,
    task,
    status,
    cache: cacheCapacity > 0 ? new DigestLru(cacheCapacity) : undefined,
  };
  let processed = 0;
  let lastPercentage = 0;
  const progress = (): void => {
    processed += 1;
    const percentage = Math.floor((processed * 100) / indexCount);
    if (percentage > lastPercentage) {
      task.log(`marked ${percentage}% (${processed} of ${indexCount} index files)`);
      task.progress?.(
        percentage / 200,
        `GC phase 1: marked ${processed} of ${indexCount} index files`,
      );
      lastPercentage = percentage;
    }
  };

  for (const ns of await store.listNamespaces(ROOT_NAMESPACE)) {
    for (const group of await store.listGroups(ns)) {
      await markGroup(
        state,
        group,
        unprocessed,
        () => {
          indexCount += 1;
        },
        progress,
      );
    }
  }

  let strangePaths = unprocessed.size;
  for (const path of unprocessed) {
    task.checkAbort();
    const index = await openIndexForGc(path);
    if (index === undefined) {
      // A snapshot pruned since the walk is not "outside the scheme".
      strangePaths -= 1;
      continue;
    }
    await markIndex(state, index, path);
    task.warn(`Marked chunks for unexpected index file at ${JSON.stringify(path)}`);
  }
  if (strangePaths > 0) {
    task.warn(`Found ${strangePaths} index files outside of expected directory scheme`);
  }
}

async function markGroup(
  state: MarkState,
  group: BackupGroup,
  unprocessed: Set<string>,
  countNew: () => void,
  progress: () => void,
): Promise<void> {
  const { store, task } = state;
  for (let retry = 0; ;) {
    let lock: LockGuard | undefined;
    if (retry > GROUP_RETRIES) {
      throw new BurrowError(
        'INTERNAL',
        `exhausted retries marking group ${groupPath(group)}: its newest index keeps vanishing while the group is locked`,
      );
    }
    if (retry === GROUP_RETRIES) {
      try {
        lock = await store.lockGroup(group, true);
      } catch (error) {
        throw rewrap(
          error,
          'LOCKED',
          `exhausted retries and failed to lock group ${groupPath(group)}`,
        );
      }
    }
    try {
      let snapshots;
      try {
        snapshots = await store.listSnapshots(group);
      } catch (error) {
        if (await pathExists(join(store.base, groupPath(group)))) {
          throw rewrap(error, 'IO_ERROR', `listing snapshots of ${groupPath(group)} failed`);
        }
        return; // the group was removed meanwhile
      }
      let restart = false;
      // Newest first: if the newest index vanished, a prune may have removed it after a newer
      // backup appeared whose chunks we must see, so the whole group is listed again.
      outer: for (let i = snapshots.length - 1, count = 0; i >= 0; i--, count++) {
        const snapshot = snapshots[i];
        if (snapshot === undefined) continue;
        for (const file of snapshot.files) {
          task.checkAbort();
          if (indexKindOfFile(file) === undefined) continue;
          const path = resolve(snapshot.path, file);
          const index = await openIndexForGc(path);
          if (index === undefined) {
            unprocessed.delete(path);
            if (count === 0) {
              restart = true;
              break outer;
            }
            continue;
          }
          await markIndex(state, index, path);
          if (!unprocessed.delete(path)) {
            task.log(
              `Encountered new index file ${JSON.stringify(path)}, increment total index file count`,
            );
            countNew();
          }
          progress();
        }
      }
      if (!restart) return;
      retry += 1;
    } finally {
      await lock?.release();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Phase 2: sweep

/**
 * lstat of a chunk file for the sweep: atime in whole seconds (exact, from nanoseconds), size,
 * and whether it is a regular file; undefined when it is gone. Synchronous on purpose, as PBS's
 * fstatat is: an asynchronous stat is a thread-pool round trip that made the sweep about three
 * times slower than the bare syscalls (bench/datastore.bench.ts), while one lstat blocks the event
 * loop for microseconds, and the chunk iterator yields between prefix directories anyway.
 */
function statForSweep(
  path: string,
): { atime: number; mtime: number; size: number; isFile: boolean } | undefined {
  let st;
  try {
    st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
  } catch (error) {
    throw new BurrowError(
      'IO_ERROR',
      `cannot stat chunk ${path}: ${errnoOf(error) ?? String(error)}`,
      {
        details: { path, errno: errnoOf(error) },
        cause: error,
      },
    );
  }
  if (st === undefined) return undefined;
  return {
    atime: wholeSeconds(st.atimeNs),
    mtime: wholeSeconds(st.mtimeNs),
    size: Number(st.size),
    isFile: st.isFile(),
  };
}

const NS_PER_S = 1_000_000_000n;

/** Floor division, also for (absurd) times before 1970. */
function wholeSeconds(ns: bigint): number {
  return Number(ns >= 0n ? ns / NS_PER_S : -((-ns + NS_PER_S - 1n) / NS_PER_S));
}

/** The error that stops the sweep when a file it decided to remove cannot be unlinked. */
function unlinkError(error: unknown, what: string, path: string, storeName: string): BurrowError {
  return new BurrowError(
    'IO_ERROR',
    `unlinking ${what} failed on store '${storeName}' - ${errnoOf(error) ?? String(error)}`,
    { details: { path, errno: errnoOf(error) }, cause: error },
  );
}

/**
 * Removes an insert's temporary file that nobody writes any more: one last written before the
 * cutoff. A writer still running writes its temp files after its start, which is at or after the
 * oldest writer's, and the cutoff lies before that (computeMinAtime), so only files of writers
 * that are gone (a backup killed between write and rename) qualify. PBS's sweep skips temp files
 * and leaves them forever (§2.5).
 */
function removeStaleTempFile(
  entry: { name: string; path: string },
  minAtime: number,
  removed: { files: number; bytes: number },
  storeName: string,
): void {
  const st = statForSweep(entry.path);
  if (st === undefined || !st.isFile || st.mtime >= minAtime) return;
  try {
    unlinkSync(entry.path);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return;
    throw unlinkError(error, `temporary chunk file ${entry.name}`, entry.path, storeName);
  }
  removed.files += 1;
  removed.bytes += st.size;
}

async function sweepUnusedChunks(
  store: DataStore,
  task: TaskContext,
  status: GcStatusData,
  minAtime: number,
  oldestWriter: number,
): Promise<void> {
  const chunkStore = store.chunkStore;
  let chunkCount = 0;
  const onProgress = (percent: number): void => {
    task.log(`processed ${percent}% (${chunkCount} chunks)`);
    task.progress?.(0.5 + percent / 200, `GC phase 2: processed ${chunkCount} chunks`);
  };
  const staleTemp = { files: 0, bytes: 0 };
  for await (const entry of chunkStore.chunkIterator(onProgress, { withTempFiles: true })) {
    task.checkAbort();
    if (entry.temp) {
      removeStaleTempFile(entry, minAtime, staleTemp, store.name);
      continue;
    }
    // Under the chunk's mutex: an insert of the same digest cannot touch the file between our
    // stat and our unlink (it would find the file gone and write it again, which is fine).
    await chunkStore.withChunkLock(entry.digestHex, () => {
      const st = statForSweep(entry.path);
      if (st === undefined || !st.isFile) return Promise.resolve();
      chunkCount += 1;
      const decision = sweepDecision(st.atime, minAtime, oldestWriter);
      if (decision === 'remove') {
        try {
          unlinkSync(entry.path);
        } catch (error) {
          // Renamed or removed by another process (a verify there) since the stat: nothing
          // was deleted by us, and its new name, if any, is judged on its own.
          if (errnoOf(error) === 'ENOENT') return Promise.resolve();
          if (entry.bad) status['still-bad'] += 1;
          throw unlinkError(error, `chunk ${entry.name}`, entry.path, store.name);
        }
        if (entry.bad) status['removed-bad'] += 1;
        else status['removed-chunks'] += 1;
        status['removed-bytes'] += st.size;
      } else if (decision === 'pending') {
        if (entry.bad) status['still-bad'] += 1;
        else status['pending-chunks'] += 1;
        status['pending-bytes'] += st.size;
      } else {
        if (!entry.bad) status['disk-chunks'] += 1;
        status['disk-bytes'] += st.size;
      }
      return Promise.resolve();
    });
  }
  if (staleTemp.files > 0) {
    task.log(
      `Removed stale temporary chunk files: ${staleTemp.files} (${formatHumanByte(staleTemp.bytes)})`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Summary

const UNIT_NAMES = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/**
 * A byte count as PBS prints it in task logs (its HumanByte with binary units): the unit is
 * chosen by the number of significant bits (up to 10 bits: B, 11–20: KiB, … 51 and more: PiB),
 * the value is rounded to three decimals and printed without trailing zeros: 1022 → "1022 B",
 * 9000 → "8.789 KiB", 1048576 → "1 MiB".
 */
export function formatHumanByte(bytes: number): string {
  const whole = Math.max(0, Math.floor(bytes));
  // Exact bit length (Math.log2 rounds up just below a power of two).
  const bits = whole === 0 ? 0 : whole.toString(2).length;
  const unitIndex = bits <= 10 ? 0 : Math.min(UNIT_NAMES.length - 1, Math.floor((bits - 1) / 10));
  const value = bytes / 1024 ** unitIndex;
  return `${Math.round(value * 1000) / 1000} ${UNIT_NAMES[unitIndex] ?? 'B'}`;
}

/** The summary lines PBS 4 logs after the sweep (§7.2 step 6), in its order and wording. */
export function summaryLines(status: GcStatusData): string[] {
  const lines: string[] = [];
  const stats = status['cache-stats'];
  if (stats !== undefined && stats.hits + stats.misses > 0) {
    const ratio = (stats.hits * 100) / (stats.hits + stats.misses);
    lines.push(
      `Chunk cache: hits ${stats.hits}, misses ${stats.misses} (hit ratio ${ratio.toFixed(2)}%)`,
    );
  }
  lines.push(`Removed garbage: ${formatHumanByte(status['removed-bytes'])}`);
  lines.push(`Removed chunks: ${status['removed-chunks']}`);
  if (status['pending-bytes'] > 0) {
    lines.push(
      `Pending removals: ${formatHumanByte(status['pending-bytes'])} (in ${status['pending-chunks']} chunks)`,
    );
  }
  if (status['removed-bad'] > 0) lines.push(`Removed bad chunks: ${status['removed-bad']}`);
  if (status['still-bad'] > 0) lines.push(`Leftover bad chunks: ${status['still-bad']}`);
  lines.push(`Original data usage: ${formatHumanByte(status['index-data-bytes'])}`);
  if (status['index-data-bytes'] > 0) {
    const percent = (status['disk-bytes'] * 100) / status['index-data-bytes'];
    lines.push(`On-Disk usage: ${formatHumanByte(status['disk-bytes'])} (${percent.toFixed(2)}%)`);
  }
  lines.push(`On-Disk chunks: ${status['disk-chunks']}`);
  const dedup = status['disk-bytes'] > 0 ? status['index-data-bytes'] / status['disk-bytes'] : 1;
  lines.push(`Deduplication factor: ${dedup.toFixed(2)}`);
  if (status['disk-chunks'] > 0) {
    const average = Math.floor(status['disk-bytes'] / status['disk-chunks']);
    lines.push(`Average chunk size: ${formatHumanByte(average)}`);
  }
  return lines;
}
