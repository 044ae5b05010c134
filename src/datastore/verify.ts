/**
 * Verify (pbs-formats §8): check snapshots against their manifests and every chunk they reference
 * against its digest, retire corrupt chunks as `.N.bad`, and record the outcome in the manifest's
 * `unprotected.verify_state`.
 *
 * A VerifyWorker belongs to one task. It remembers which chunks it has verified and which it found
 * corrupt, so a chunk shared by many snapshots (the normal case with deduplication) is read once
 * per task; a chunk known corrupt counts as an error for every index that references it, without
 * being read again.
 *
 * Reading and checking overlap: while a chunk is decoded and hashed on the main thread, the next
 * few are already being read on libuv's thread pool, which keeps both cores busy on a two-core
 * machine without a worker-thread pool (see bench/datastore.bench.ts for the figures).
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import type { TaskContext, TaskManager, TaskRunOptions } from '../tasks/index.js';
import {
  decodeBlob,
  isEncryptedKind,
  parseBlobHeader,
  verifyBlobCrc,
  verifyUnencrypted,
} from '../format/data-blob.js';
import type { BackupManifest, FileInfo } from '../format/manifest.js';
import { archiveTypeOf } from '../format/manifest.js';
import {
  MAX_NAMESPACE_DEPTH,
  ROOT_NAMESPACE,
  compareGroups,
  formatGroup,
  formatSnapshot,
  namespaceToString,
} from '../types/backup.js';
import type { BackupDir, BackupGroup, BackupNamespace } from '../types/backup.js';
import { digestToHex } from '../types/digest.js';
import type { DataStore } from './datastore.js';
import type { IndexFile } from './index-file.js';
import { verifyDecision } from './verify-filter.js';

export interface VerifyOptions {
  /** Skip snapshots that were verified before (default true, pbs-formats §8.3). */
  ignoreVerified?: boolean;
  /** With ignoreVerified: verify again once the last verify is more than this many days old. */
  outdatedAfterDays?: number;
  /** "Now" for outdatedAfterDays (default: the system clock). */
  clock?: Clock;
  /**
   * Chunk reads in flight ahead of the one being checked (default 16; 0 reads one at a time),
   * and never more than READ_AHEAD_BYTES of chunk data.
   */
  readAhead?: number;
}

/** Totals over the worker's life, for summaries and benchmarks. */
export interface VerifyStats {
  /** Chunks read from disk. */
  chunksRead: number;
  /** Encoded bytes read from chunk files. */
  readBytes: number;
  /** Decoded bytes these chunks stand for (their spans in the indexes). */
  decodedBytes: number;
}

/** Expected chunk kind of an index: `encrypt` for encrypted chunks, `none` for all others. */
type ChunkCryptMode = 'encrypt' | 'none';

/**
 * Measured in bench/datastore.bench.ts: for 4 KiB chunks 0 → 4 → 16 reads ahead went from about
 * 24 to 41 to 43–49 MB/s (each read is several thread-pool round trips); for 4 MiB chunks 4 already
 * reaches the raw read + SHA-256 rate.
 */
const DEFAULT_READ_AHEAD = 16;
/** Upper bound of decoded chunk bytes being read ahead (by the chunks' spans in the index). */
const READ_AHEAD_BYTES = 64 * 1024 * 1024;
const MiB = 1024 * 1024;

/** The verify state of one task: which chunks are known good or corrupt, shared by all snapshots. */
export class VerifyWorker {
  readonly store: DataStore;
  readonly task: TaskContext;
  readonly ignoreVerified: boolean;
  readonly outdatedAfterDays: number | undefined;
  readonly clock: Clock;
  readonly readAhead: number;
  /** Hex digests verified in this task. */
  readonly verifiedChunks = new Set<string>();
  /** Hex digests found corrupt in this task. */
  readonly corruptChunks = new Set<string>();
  readonly stats: VerifyStats = { chunksRead: 0, readBytes: 0, decodedBytes: 0 };

  constructor(store: DataStore, task: TaskContext, opts: VerifyOptions = {}) {
    this.store = store;
    this.task = task;
    this.ignoreVerified = opts.ignoreVerified ?? true;
    this.outdatedAfterDays = opts.outdatedAfterDays;
    this.clock = opts.clock ?? systemClock;
    const readAhead = opts.readAhead ?? DEFAULT_READ_AHEAD;
    if (!Number.isSafeInteger(readAhead) || readAhead < 0) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `readAhead must be an integer ≥ 0, got ${readAhead}`,
      );
    }
    this.readAhead = readAhead;
    if (
      opts.outdatedAfterDays !== undefined &&
      (!Number.isSafeInteger(opts.outdatedAfterDays) || opts.outdatedAfterDays < 0)
    ) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `outdated-after: expected an integer ≥ 0 (days), got ${opts.outdatedAfterDays}`,
      );
    }
  }

  /** `<store>:<snapshot path>`, as verify log lines name a snapshot. */
  label(dir: BackupDir): string {
    return `${this.store.name}:${formatSnapshot(dir)}`;
  }
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function rethrowAbort(error: unknown): void {
  if (isBurrowError(error, 'TASK_ABORTED')) throw error;
}

// ---------------------------------------------------------------------------------------------
// Blobs and indexes

async function verifyBlob(w: VerifyWorker, dir: BackupDir, info: FileInfo): Promise<void> {
  const raw = await w.store.loadBlob(dir, info.filename);
  if (raw.byteLength !== info.size) {
    throw new BurrowError('SIZE_MISMATCH', `wrong size (${info.size} != ${raw.byteLength})`, {
      details: { filename: info.filename, expected: info.size, actual: raw.byteLength },
    });
  }
  const csum = createHash('sha256').update(raw).digest('hex');
  if (csum !== info.csum) {
    throw new BurrowError('DIGEST_MISMATCH', 'wrong index checksum', {
      details: { filename: info.filename, expected: info.csum, actual: csum },
    });
  }
  // Without the key an encrypted blob cannot be opened; its checksum above is all we can check.
  if (!isEncryptedKind(parseBlobHeader(raw).kind)) decodeBlob(raw);
}

async function verifyIndex(w: VerifyWorker, dir: BackupDir, info: FileInfo): Promise<void> {
  const index = await w.store.openIndex(dir, info.filename);
  const size = index.index.size;
  if (size !== info.size) {
    throw new BurrowError('SIZE_MISMATCH', `wrong size (${info.size} != ${size})`, {
      details: { filename: info.filename, expected: info.size, actual: size },
    });
  }
  const csum = digestToHex(index.index.computeCsum());
  if (csum !== info.csum) {
    throw new BurrowError('INDEX_CSUM_MISMATCH', 'wrong index checksum', {
      details: { filename: info.filename, expected: info.csum, actual: csum },
    });
  }
  await verifyIndexChunks(w, index, info.cryptMode === 'encrypt' ? 'encrypt' : 'none');
}

interface PlannedChunk {
  readonly digest: Uint8Array;
  readonly hex: string;
  /** The chunk's span in the index: its decoded length. */
  readonly size: number;
}

type Loaded = { raw: Uint8Array } | { error: unknown };

/**
 * PBS's chunk order: by inode number, chunks that cannot be stat'ed last (tuning chunk-order).
 * The stats are synchronous (a few microseconds each; the asynchronous ones, even 16 in flight,
 * took four times as long in bench/datastore.bench.ts), with a turn for the event loop every
 * 1024 chunks.
 */
async function sortByInode(w: VerifyWorker, list: PlannedChunk[]): Promise<PlannedChunk[]> {
  const chunkStore = w.store.chunkStore;
  const unknown = 1n << 64n;
  const inodes = new Array<bigint>(list.length);
  for (let i = 0; i < list.length; i++) {
    if ((i & 1023) === 1023) {
      w.task.checkAbort();
      await new Promise((done) => setImmediate(done));
    }
    const item = list[i] as PlannedChunk;
    try {
      inodes[i] = statSync(chunkStore.chunkPath(item.digest), { bigint: true }).ino;
    } catch {
      inodes[i] = unknown;
    }
  }
  const order = list.map((_, i) => i);
  // Stable: chunks of equal inode (unknown ones) keep index order.
  order.sort((a, b) => {
    const ia = inodes[a] as bigint;
    const ib = inodes[b] as bigint;
    return ia < ib ? -1 : ia > ib ? 1 : 0;
  });
  return order.map((i) => list[i] as PlannedChunk);
}

async function retire(w: VerifyWorker, item: PlannedChunk): Promise<void> {
  try {
    const renamed = await w.store.chunkStore.renameCorruptChunk(item.digest);
    if (renamed !== undefined) w.task.log(`corrupted chunk renamed to ${JSON.stringify(renamed)}`);
  } catch (error) {
    w.task.log(
      `could not rename corrupted chunk ${JSON.stringify(w.store.chunkStore.chunkPath(item.digest))} - ${message(error)}`,
    );
  }
}

async function verifyIndexChunks(
  w: VerifyWorker,
  index: IndexFile,
  expected: ChunkCryptMode,
): Promise<void> {
  const { task, store } = w;
  const start = performance.now();
  let errors = 0;
  let readBytes = 0;
  let decodedBytes = 0;

  const skip = (hex: string): boolean => {
    if (w.verifiedChunks.has(hex)) return true;
    if (w.corruptChunks.has(hex)) {
      task.log(`chunk ${hex} was marked as corrupt`);
      errors += 1;
      return true;
    }
    return false;
  };

  // Each digest once per index: an index that repeats a chunk (zero blocks of an image) must not
  // read it again.
  const seen = new Set<string>();
  let list: PlannedChunk[] = [];
  const idx = index.index;
  for (let pos = 0; pos < idx.count; pos++) {
    if ((pos & 1023) === 0) task.checkAbort();
    const digest = idx.digest(pos);
    const hex = digestToHex(digest);
    if (skip(hex)) continue;
    if (seen.has(hex)) continue;
    seen.add(hex);
    const range = idx.chunkRange(pos);
    list.push({ digest, hex, size: range.end - range.start });
  }
  if (store.tuning.chunkOrder === 'inode') list = await sortByInode(w, list);

  const loads: Array<Promise<Loaded>> = [];
  const load = (item: PlannedChunk): Promise<Loaded> =>
    store.chunkStore.loadChunk(item.digest).then(
      (raw) => ({ raw }),
      (error: unknown) => ({ error }),
    );
  let nextLoad = 0;
  let aheadBytes = 0;
  for (let i = 0; i < list.length; i++) {
    task.checkAbort();
    // Always the current chunk; then more while both limits allow.
    while (
      nextLoad < list.length &&
      (nextLoad === i || (nextLoad <= i + w.readAhead && aheadBytes < READ_AHEAD_BYTES))
    ) {
      const next = list[nextLoad] as PlannedChunk;
      loads.push(load(next));
      aheadBytes += next.size;
      nextLoad++;
    }
    const item = list[i] as PlannedChunk;
    const loaded = await (loads.shift() as Promise<Loaded>);
    aheadBytes -= item.size;
    if (skip(item.hex)) continue;

    let raw: Uint8Array;
    try {
      if ('error' in loaded) throw loaded.error;
      raw = loaded.raw;
      verifyBlobCrc(raw);
    } catch (error) {
      w.corruptChunks.add(item.hex);
      task.log(`can't verify chunk, load failed - ${message(error)}`);
      errors += 1;
      await retire(w, item);
      continue;
    }
    readBytes += raw.byteLength;
    decodedBytes += item.size;
    w.stats.chunksRead += 1;

    const encrypted = isEncryptedKind(parseBlobHeader(raw).kind);
    const mode: ChunkCryptMode = encrypted ? 'encrypt' : 'none';
    if (mode !== expected) {
      // A chunk of the wrong kind is reported but not retired: its bytes may be perfectly fine.
      task.log(`chunk CryptMode ${mode} does not match index CryptMode ${expected}`);
      errors += 1;
    }
    if (encrypted) {
      // Without the key, the CRC (checked above) is all that can be checked.
      w.verifiedChunks.add(item.hex);
      continue;
    }
    try {
      // The content is only hashed, in reused memory (plainBlobDigest).
      verifyUnencrypted(raw, item.size, item.digest, { checkCrc: false });
    } catch (error) {
      w.corruptChunks.add(item.hex);
      task.log(`chunk ${item.hex}: ${message(error)}`);
      errors += 1;
      await retire(w, item);
      continue;
    }
    w.verifiedChunks.add(item.hex);
  }
  w.stats.readBytes += readBytes;
  w.stats.decodedBytes += decodedBytes;

  const elapsed = Math.max((performance.now() - start) / 1000, 1e-9);
  const readMiB = readBytes / MiB;
  const decodedMiB = decodedBytes / MiB;
  task.log(
    `  verified ${readMiB.toFixed(2)}/${decodedMiB.toFixed(2)} MiB in ${elapsed.toFixed(2)} seconds, ` +
      `speed ${(readMiB / elapsed).toFixed(2)}/${(decodedMiB / elapsed).toFixed(2)} MiB/s (${errors} errors)`,
  );
  if (errors > 0) {
    throw new BurrowError('DIGEST_MISMATCH', 'chunks could not be verified', {
      details: { errors },
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Snapshots, groups, stores

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

/**
 * Verify one snapshot (§8.1). Returns false when something failed (the manifest could not be
 * loaded, a file or chunk is bad, or the verify state could not be written), true when all is
 * well or the snapshot was skipped (vanished, locked by someone else, recently verified).
 * An abort of the task is thrown, not reported as a failure.
 */
export async function verifySnapshot(w: VerifyWorker, dir: BackupDir): Promise<boolean> {
  const { store, task } = w;
  const label = w.label(dir);
  if (!(await exists(resolve(store.base, store.snapshotPath(dir))))) {
    task.log(`SKIPPED: verify ${label} - snapshot does not exist (anymore).`);
    return true;
  }
  let lock;
  try {
    lock = await store.lockSnapshot(dir, false);
  } catch (error) {
    task.log(`SKIPPED: verify ${label} - could not acquire snapshot lock: ${message(error)}`);
    return true;
  }
  try {
    return await verifyLocked(w, dir, label);
  } finally {
    await lock.release();
  }
}

async function verifyLocked(w: VerifyWorker, dir: BackupDir, label: string): Promise<boolean> {
  const { store, task } = w;
  let manifest: BackupManifest;
  try {
    manifest = (await store.loadManifest(dir)).manifest;
  } catch (error) {
    rethrowAbort(error);
    task.log(`verify ${label} - manifest load error: ${message(error)}`);
    return false;
  }

  const decision = verifyDecision({
    verifyState: manifest.unprotected.verify_state,
    ignoreVerified: w.ignoreVerified,
    outdatedAfterDays: w.outdatedAfterDays,
    nowSeconds: w.clock.nowSeconds(),
  });
  if (decision.error !== undefined) task.warn(`error reading manifest: ${decision.error.message}`);
  if (!decision.verify) {
    task.log(`SKIPPED: verify ${label} (recently verified)`);
    return true;
  }

  task.log(`verify ${label}`);
  let failures = 0;
  for (const info of manifest.files) {
    try {
      task.log(`  check ${info.filename}`);
      if (archiveTypeOf(info.filename) === 'blob') await verifyBlob(w, dir, info);
      else await verifyIndex(w, dir, info);
    } catch (error) {
      rethrowAbort(error);
      task.log(`verify ${label}/${info.filename} failed: ${message(error)}`);
      failures += 1;
    }
    task.checkAbort();
  }

  const state = failures === 0 ? 'ok' : 'failed';
  try {
    await store.updateManifest(dir, (m) => {
      m.unprotected.verify_state = { state, upid: task.upid };
    });
  } catch (error) {
    rethrowAbort(error);
    task.log(`verify ${label} - manifest update error: ${message(error)}`);
    return false;
  }
  return failures === 0;
}

/** Progress of a store or group verify, logged after each snapshot. */
class Progress {
  doneGroups = 0;
  doneSnapshots = 0;
  groupSnapshots = 0;
  constructor(readonly totalGroups: number) {}

  toString(): string {
    const groupShare = this.groupSnapshots > 0 ? this.doneSnapshots / this.groupSnapshots : 0;
    const percent =
      this.totalGroups > 0 ? ((this.doneGroups + groupShare) * 100) / this.totalGroups : 100;
    return (
      `${percent.toFixed(2)}% (${this.doneGroups}/${this.totalGroups} groups, ` +
      `${this.doneSnapshots}/${this.groupSnapshots} snapshots in group #${this.doneGroups + 1})`
    );
  }
}

async function verifyGroupWith(
  w: VerifyWorker,
  group: BackupGroup,
  progress: Progress,
): Promise<BackupDir[]> {
  const { store, task } = w;
  const failed: BackupDir[] = [];
  let snapshots;
  try {
    snapshots = await store.listSnapshots(group);
  } catch (error) {
    rethrowAbort(error);
    task.log(
      `verify ${store.name}:${namespaceToString(group.ns) || '/'}, group ${formatGroup(group)} - unable to list backups: ${message(error)}`,
    );
    return failed;
  }
  task.log(`verify group ${store.name}:${formatGroup(group)} (${snapshots.length} snapshots)`);
  progress.groupSnapshots = snapshots.length;
  // Newest first: the snapshot a new backup would build on is checked soonest.
  for (let i = snapshots.length - 1, done = 1; i >= 0; i--, done++) {
    const snapshot = snapshots[i];
    if (snapshot === undefined) continue;
    if (!(await verifySnapshot(w, snapshot.dir))) failed.push(snapshot.dir);
    progress.doneSnapshots = done;
    task.log(`percentage done: ${progress.toString()}`);
    task.progress?.(
      progress.totalGroups > 0
        ? (progress.doneGroups + done / snapshots.length) / progress.totalGroups
        : 1,
      `verified ${done} of ${snapshots.length} snapshots of ${formatGroup(group)}`,
    );
  }
  return failed;
}

/** Verify every snapshot of a group, newest first; returns the snapshots that failed. */
export function verifyGroup(w: VerifyWorker, group: BackupGroup): Promise<BackupDir[]> {
  return verifyGroupWith(w, group, new Progress(1));
}

/**
 * Verify a namespace and the namespaces below it down to `maxDepth` levels (default: all), or
 * the whole store: groups sorted as PBS sorts them, `host/benchmark` skipped. Returns the
 * snapshots that failed.
 */
export async function verifyStore(
  w: VerifyWorker,
  opts: { ns?: BackupNamespace; maxDepth?: number } = {},
): Promise<BackupDir[]> {
  const { store, task } = w;
  task.log(`verify datastore ${store.name}`);
  const namespaces = await store.listNamespaces(
    opts.ns ?? ROOT_NAMESPACE,
    opts.maxDepth ?? MAX_NAMESPACE_DEPTH,
  );
  const groups: BackupGroup[] = [];
  for (const ns of namespaces) {
    try {
      groups.push(...(await store.listGroups(ns)));
    } catch (error) {
      rethrowAbort(error);
      task.warn(`error on iterating groups in ns '${namespaceToString(ns)}' - ${message(error)}`);
    }
  }
  const list = groups
    .filter((g) => !(g.type === 'host' && g.id === 'benchmark'))
    .sort(compareGroups);
  task.log(`found ${list.length} groups`);
  const progress = new Progress(list.length);
  const failed: BackupDir[] = [];
  for (const [pos, group] of list.entries()) {
    progress.doneGroups = pos;
    progress.doneSnapshots = 0;
    progress.groupSnapshots = 0;
    failed.push(...(await verifyGroupWith(w, group, progress)));
  }
  return failed;
}

// ---------------------------------------------------------------------------------------------
// verify-new: the snapshot a backup has just finished

/**
 * The worker id of the verify that follows a backup: `<store>:<type>/<id>/<time as 8 upper-case
 * hex digits>`, as PBS forms it for this task. PBS leaves the namespace out here, so snapshots
 * of the same group and time in different namespaces share the id; the UPID still differs.
 */
export function verifyNewWorkerId(store: DataStore, dir: BackupDir): string {
  const time = dir.time.toString(16).toUpperCase().padStart(8, '0');
  return `${store.name}:${dir.group.type}/${dir.group.id}/${time}`;
}

/**
 * What a backup session calls right after a successful finish (pbs-formats §6.8 step 7): when
 * the store's datastore.cfg section has `verify-new true`, verify exactly that snapshot in a task
 * of type `verify` (worker id from verifyNewWorkerId) with a fresh VerifyWorker that ignores any
 * earlier verify state, and return the task's UPID and the verdict. Without `verify-new` nothing
 * happens and the result is undefined.
 *
 * The caller must have released its exclusive snapshot lock. The shared lock is taken before the
 * task starts, as PBS does, and held until it ends: a snapshot that someone else locked or
 * removed in the meantime is an error of this call (LOCKED / NOT_FOUND, no task), which the
 * backup logs as "starting the requested verify task failed", rather than a silently skipped
 * verify. A failed verification ends the task with an error, as in PBS, and gives `ok: false`;
 * any other error of the task (an abort, a task log that cannot be written) is thrown.
 */
export async function verifyNewSnapshot(
  store: DataStore,
  dir: BackupDir,
  tasks: TaskManager,
  authId: string,
  opts: TaskRunOptions & Pick<VerifyOptions, 'readAhead'> = {},
): Promise<{ upid: string; ok: boolean } | undefined> {
  if (store.config?.['verify-new'] !== true) return undefined;
  const path = resolve(store.base, store.snapshotPath(dir));
  if (!(await exists(path))) {
    throw new BurrowError(
      'NOT_FOUND',
      `cannot verify new snapshot ${formatSnapshot(dir)}: ${path} does not exist`,
      { details: { path } },
    );
  }
  const lock = await store.lockSnapshot(dir, false);
  const { readAhead, onStart, ...runOptions } = opts;
  let upid: string | undefined;
  let verdict: boolean | undefined;
  try {
    await tasks.run(
      'verify',
      verifyNewWorkerId(store, dir),
      authId,
      async (task) => {
        task.log('Automatically verifying newly added snapshot');
        const worker = new VerifyWorker(store, task, {
          ignoreVerified: false,
          ...(readAhead === undefined ? {} : { readAhead }),
        });
        verdict = await verifyLocked(worker, dir, worker.label(dir));
        if (!verdict) {
          throw new BurrowError(
            'VERIFY_FAILED',
            'verification failed - please check the log for details',
            { details: { snapshot: formatSnapshot(dir) } },
          );
        }
      },
      {
        ...runOptions,
        onStart: (started) => {
          upid = started;
          onStart?.(started);
        },
      },
    );
  } catch (error) {
    // Only the verdict is a result; everything else the task ended with is the caller's error.
    if (verdict !== false) throw error;
  } finally {
    await lock.release();
  }
  if (upid === undefined || verdict === undefined) {
    throw new BurrowError('INTERNAL', 'verify-new task ended without a verdict');
  }
  return { upid, ok: verdict };
}
