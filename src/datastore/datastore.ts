/**
 * The DataStore (PBS's `DataStore`, pbs-formats §1, §5, §6, §9): a chunk store plus the backup tree
 * of namespaces, groups and snapshots beside it, with owners, notes, protection, manifests,
 * index writers and readers, the PBS 4 lock files and prune execution.
 *
 * Locks follow the PBS 4 scheme (§6.7) so that Burrow and PBS exclude each other on one store:
 * flock'ed files under `$BURROW_RUN_DIR/locks/<store>/`. They only work between processes that
 * use the same run directory and the same store name, which is why a store opened by path takes
 * the name it has in datastore.cfg when it is configured (see `openPath`).
 *
 * Instances are cached per process by config directory and name and renewed when the store's
 * configuration changes, so every caller in one process shares one gc-status and one chunk store.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { lstat, open, readFile, readdir, realpath, rm, rmdir } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../lib/atomic-write.js';
import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import type { BurrowDirs } from '../lib/dirs.js';
import { locksDir } from '../lib/dirs.js';
import { BurrowError, withFile } from '../lib/errors.js';
import { encodeBlob, decodeBlob, verifyBlobCrc, type BlobKind } from '../format/data-blob.js';
import type {
  DatastoreConfigEntry,
  DatastoreProps,
  DatastoreTuning,
  SyncLevel,
} from '../format/datastore-config.js';
import {
  DEFAULT_TUNING,
  datastoreBackend,
  datastoreMaintenanceMode,
  datastoreTuning,
  parseTuning,
  writeDatastoreConfig,
} from '../format/datastore-config.js';
import { ENCRYPTED_BLOB_HEADER_SIZE, MAX_BLOB_SIZE } from '../format/magic.js';
import type { BackupManifest } from '../format/manifest.js';
import {
  CLIENT_LOG_BLOB_NAME,
  MANIFEST_BLOB_NAME,
  archiveTypeOf,
  isArchiveName,
  parseManifest,
  serializeManifest,
} from '../format/manifest.js';
import { lockFileRelativePath } from '../format/systemd-escape.js';
import type { Authid } from '../types/auth.js';
import { formatAuthid, mayActAsOwner, parseAuthid } from '../types/auth.js';
import type { BackupDir, BackupGroup, BackupNamespace } from '../types/backup.js';
import {
  MAX_NAMESPACE_DEPTH,
  SAFE_ID_RE,
  backupDir as makeBackupDir,
  backupGroup as makeBackupGroup,
  formatBackupTime,
  formatGroup,
  formatSnapshot,
  groupPath,
  isRootNamespace,
  namespaceFromComponents,
  namespaceParent,
  namespacePath,
  namespaceToString,
  snapshotPath as relativeSnapshotPath,
} from '../types/backup.js';
import {
  GROUP_NOTES_FILE,
  OWNER_FILE,
  PROTECTED_MARKER,
  compareNamespaces,
  errnoOf,
  fsError,
  isDirectory,
  listChildNamespaces,
  listGroupsIn,
  listSnapshotInfos,
  listSnapshotTimes,
  pathExists,
  readSnapshotInfo,
} from './backup-info.js';
import type { SnapshotInfo } from './backup-info.js';
import type { ChunkFileTarget, InsertResult, WrittenChunk } from './chunk-store.js';
import { ChunkStore } from './chunk-store.js';
import {
  checkDatastoreName,
  readDatastoreConfig,
  updateDatastoreConfig,
} from './datastore-config-store.js';
import type { GcStatusData } from './gc-status.js';
import { chownHandle, mkdirOwned } from './file-owner.js';
import type { FileOwner } from './file-owner.js';
import { defaultGcStatus, parseGcStatus, serializeGcStatus } from './gc-status.js';
import type { IndexFile } from './index-file.js';
import { readIndexFile } from './index-file.js';
import { DynamicIndexWriter, FixedIndexWriter } from './index-writer.js';
import type { LockGuard } from './lock-file.js';
import { lockFile } from './lock-file.js';
import type { ProcessLockGuard } from './process-locker.js';
import type { KeepOptions, PruneMark } from './prune.js';
import { computePruneInfo, hasKeepOptions, keepOptionsToArgs } from './prune.js';

export type { SnapshotInfo } from './backup-info.js';
export type { GcStatusData } from './gc-status.js';
export type { LockGuard } from './lock-file.js';

export interface DataStoreContext {
  dirs: BurrowDirs;
  /** Index ctimes and the chunk store's oldest-writer times; default the system clock. */
  clock?: Clock;
  /** Info and warning lines (removals, a corrupt .gc-status, ...); default: dropped. */
  log?: (line: string) => void;
  /** The chunk store writes chunk files with blocking calls (ChunkStoreOptions.blockingWrites). */
  blockingChunkWrites?: boolean;
  /**
   * What the caller is about to do (PBS's lookup_datastore operation): checkMaintenance runs at
   * lookup. Undefined: no check (reading the configuration only, or checks made later).
   */
  operation?: 'read' | 'write';
}

export interface DataStoreCreateOptions {
  /** Adopt an existing chunk store at the path (`--reuse-datastore`) instead of creating one. */
  reuse?: boolean;
  comment?: string;
  /** The `tuning` property string, e.g. `sync-level=file,gc-atime-safety-check=false`. */
  tuning?: string;
  /** Percent of the 65536 chunk directories created (or checked when reusing). */
  onProgress?: (pct: number) => void;
  /** The pause of the atime safety check (§7.6); injectable for tests. */
  sleep?: (ms: number) => Promise<void>;
}

export interface PruneResultEntry {
  dir: BackupDir;
  mark: PruneMark;
  removed: boolean;
  error?: string;
}

export interface PruneGroupOptions {
  dryRun: boolean;
  /** IANA zone for the period keys; default the process's zone (PBS uses localtime). */
  timeZone?: string;
  log?: (line: string) => void;
  /** Warning lines (a failed removal); default `log` with a `WARN: ` prefix. */
  warn?: (line: string) => void;
}

export interface RemoveGroupResult {
  /** The whole group is gone (directory, owner, notes, lock file). */
  removedAll: boolean;
  removedSnapshots: number;
  /** Snapshots left because they are protected (or could not be read). */
  keptSnapshots: number;
}

/** Manifest lock wait (§6.7). */
export const MANIFEST_LOCK_TIMEOUT_MS = 5000;
/** Prefix of the name a store opened by an unconfigured path gets; ':' is never in a configured name. */
export const PATH_STORE_NAME_PREFIX = 'path:';

const GC_STATUS_FILE = '.gc-status';
/** Bytes of `owner` read: far more than the longest Authid line. */
const OWNER_READ_LIMIT = 4096;
const MANIFEST_LOCK_NAME = '.index.json.lck';
const FILE_MODE = 0o644;
/** Largest blob file we read into memory: the biggest payload plus the biggest header. */
const MAX_BLOB_FILE_SIZE = MAX_BLOB_SIZE + ENCRYPTED_BLOB_HEADER_SIZE;

const cache = new Map<string, { key: string; store: Promise<DataStore> }>();

function checkNamespace(ns: BackupNamespace): BackupNamespace {
  return namespaceFromComponents(ns.components);
}

function checkGroup(group: BackupGroup): BackupGroup {
  return makeBackupGroup(checkNamespace(group.ns), group.type, group.id);
}

function checkDir(dir: BackupDir): BackupDir {
  return makeBackupDir(checkGroup(dir.group), dir.time);
}

function nsLabel(ns: BackupNamespace): string {
  return isRootNamespace(ns)
    ? 'the root namespace'
    : `namespace ${JSON.stringify(namespaceToString(ns))}`;
}

function checkArchive(name: string, kinds: readonly ('blob' | 'fixed' | 'dynamic')[]): void {
  const exts = kinds.map((k) => (k === 'blob' ? '.blob' : k === 'fixed' ? '.fidx' : '.didx'));
  if (!isArchiveName(name) || !kinds.includes(archiveTypeOf(name))) {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `invalid archive name ${JSON.stringify(name.slice(0, 120))}: expected a safe ID ending in ${exts.join(' or ')}`,
      { details: { filename: name } },
    );
  }
}

async function rmIfExists(path: string): Promise<void> {
  try {
    await rm(path);
  } catch (error) {
    if (errnoOf(error) !== 'ENOENT') throw fsError(error, 'remove', path);
  }
}

/** Read a blob file (regular file, size-capped) and check its CRC. Errors name the file. */
async function readBlobFile(path: string): Promise<Uint8Array> {
  let handle;
  try {
    handle = await open(
      path,
      fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK,
    );
  } catch (error) {
    throw fsError(error, 'open', path);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile())
      throw new BurrowError('IO_ERROR', `${path}: not a regular file`, { details: { path } });
    if (st.size > MAX_BLOB_FILE_SIZE) {
      throw new BurrowError(
        'BLOB_TOO_LARGE',
        `${path}: ${st.size} bytes, more than the ${MAX_BLOB_FILE_SIZE}-byte limit of a blob file`,
        { details: { path, size: st.size } },
      );
    }
    const raw = new Uint8Array(await handle.readFile());
    try {
      verifyBlobCrc(raw);
    } catch (error) {
      throw withFile(error, path);
    }
    return raw;
  } catch (error) {
    throw fsError(error, 'read', path);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The `.tmp_XXXXXX` temp name PBS uses for a replaced file: the last extension swapped. */
function replaceTempPath(path: string): string {
  const dot = path.lastIndexOf('.');
  const stem = dot > path.lastIndexOf(sep) ? path.slice(0, dot) : path;
  return `${stem}.tmp_${randomBytes(3).toString('hex')}`;
}

function isInside(inner: string, outer: string): boolean {
  if (inner === outer) return true;
  const prefix = outer.endsWith(sep) ? outer : outer + sep;
  return inner.startsWith(prefix);
}

async function realpathOrResolved(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/**
 * Make index-writer methods release the chunk-store shared guard once the writer is no longer
 * open (closed, aborted, or aborted by an I/O failure), whichever method got it there.
 */
function bindGuard<W extends FixedIndexWriter | DynamicIndexWriter>(
  writer: W,
  guard: ProcessLockGuard,
): W {
  let released = false;
  const releaseIfDone = (): void => {
    if (!released && writer.state !== 'open') {
      released = true;
      guard.release();
    }
  };
  const target = writer as unknown as Record<PropertyKey, unknown>;
  const methods: PropertyKey[] = [
    'close',
    'abort',
    'append',
    'addChunk',
    'setDigest',
    Symbol.asyncDispose,
  ];
  for (const method of methods) {
    const original = target[method];
    if (typeof original !== 'function') continue;
    const fn = original as (...args: unknown[]) => Promise<unknown>;
    Object.defineProperty(writer, method, {
      configurable: true,
      writable: true,
      value: (...args: unknown[]): Promise<unknown> =>
        fn.apply(writer, args).finally(releaseIfDone),
    });
  }
  return writer;
}

export class DataStore {
  /** The store's name: its datastore.cfg name, or `path:<16 hex>` for an unconfigured path. */
  readonly name: string;
  /** Absolute base directory. */
  readonly base: string;
  readonly chunkStore: ChunkStore;
  readonly tuning: DatastoreTuning;
  /** The datastore.cfg properties; undefined for a store opened by an unconfigured path. */
  readonly config: DatastoreProps | undefined;
  readonly dirs: BurrowDirs;
  readonly #clock: Clock;
  readonly #log: (line: string) => void;
  #gcStatus: GcStatusData;

  private constructor(
    name: string,
    chunkStore: ChunkStore,
    tuning: DatastoreTuning,
    config: DatastoreProps | undefined,
    ctx: DataStoreContext,
    gcStatus: GcStatusData,
  ) {
    this.name = name;
    this.base = chunkStore.base;
    this.chunkStore = chunkStore;
    this.tuning = tuning;
    this.config = config;
    this.dirs = ctx.dirs;
    this.#clock = ctx.clock ?? systemClock;
    this.#log = ctx.log ?? (() => {});
    this.#gcStatus = gcStatus;
  }

  /**
   * Owner of every file and directory created in the store and of its lock files (file-owner.ts;
   * PBS: backup:backup), resolved when the chunk store was opened; undefined = the creator's.
   */
  get fileOwner(): FileOwner | undefined {
    return this.chunkStore.fileOwner;
  }

  static async #open(
    name: string,
    path: string,
    config: DatastoreProps | undefined,
    ctx: DataStoreContext,
  ): Promise<DataStore> {
    if (config !== undefined) {
      if (datastoreBackend(config).type !== 'filesystem') {
        throw new BurrowError(
          'DATASTORE_INVALID',
          `datastore '${name}': the S3 backend is not supported`,
          {
            details: { name },
          },
        );
      }
      if (!isAbsolute(config.path)) {
        throw new BurrowError(
          'DATASTORE_INVALID',
          `datastore '${name}': path ${JSON.stringify(config.path)} is not absolute (removable datastores are not supported)`,
          { details: { name, path: config.path } },
        );
      }
    }
    const tuning = config === undefined ? DEFAULT_TUNING : datastoreTuning(config);
    const log = ctx.log ?? (() => {});
    const chunkStore = await ChunkStore.open(path, {
      syncLevel: tuning.syncLevel,
      clock: ctx.clock ?? systemClock,
      onWarning: log,
      blockingWrites: ctx.blockingChunkWrites === true,
    });
    const gcStatus = await DataStore.#loadGcStatus(chunkStore.base, log);
    return new DataStore(name, chunkStore, tuning, config, ctx, gcStatus);
  }

  static async #loadGcStatus(base: string, log: (line: string) => void): Promise<GcStatusData> {
    const path = join(base, GC_STATUS_FILE);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if (errnoOf(error) !== 'ENOENT') {
        log(`WARN: cannot read ${path}: ${errnoOf(error) ?? String(error)} - using defaults`);
      }
      return defaultGcStatus();
    }
    try {
      return parseGcStatus(text);
    } catch (error) {
      log(
        `WARN: ${path}: ${error instanceof Error ? error.message : String(error)} - using defaults`,
      );
      return defaultGcStatus();
    }
  }

  /**
   * Create a datastore: a new chunk store at `path` (or, with `reuse`, an existing one checked
   * and adopted), the atime safety check unless tuning turns it off, then its section in
   * datastore.cfg, all under the config lock. Refused: an invalid name (INVALID_ARGUMENT), a
   * taken name (ALREADY_EXISTS), a relative path, and a path equal to, inside or containing
   * another configured store's path (INVALID_ARGUMENT).
   */
  static async create(
    name: string,
    path: string,
    ctx: DataStoreContext & DataStoreCreateOptions,
  ): Promise<DataStore> {
    checkDatastoreName(name);
    if (!isAbsolute(path)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `datastore path must be absolute: ${JSON.stringify(path)}`,
        {
          details: { path },
        },
      );
    }
    const base = resolve(path);
    const tuning = parseTuning(ctx.tuning);
    const props: DatastoreProps = {
      path: base,
      ...(ctx.comment !== undefined ? { comment: ctx.comment } : {}),
      ...(ctx.tuning !== undefined ? { tuning: ctx.tuning } : {}),
    };
    const log = ctx.log ?? (() => {});
    let created: DataStore | undefined;
    await updateDatastoreConfig(ctx.dirs, async ({ entries }) => {
      if (entries.some((entry) => entry.name === name)) {
        throw new BurrowError('ALREADY_EXISTS', `datastore '${name}' already exists`, {
          details: { name },
        });
      }
      const real = await realpathOrResolved(base);
      for (const entry of entries) {
        const other = await realpathOrResolved(entry.props.path);
        if (isInside(real, other) || isInside(other, real)) {
          throw new BurrowError(
            'INVALID_ARGUMENT',
            `nested datastores not allowed: '${name}' at ${base} overlaps datastore '${entry.name}' at ${entry.props.path}`,
            { details: { name, path: base, other: entry.name, otherPath: entry.props.path } },
          );
        }
      }
      const next: DatastoreConfigEntry[] = [...entries, { name, props }];
      // Validate the section before anything is created on disk.
      writeDatastoreConfig(next);

      const chunkStore = await ChunkStore.create(base, {
        reuse: ctx.reuse === true,
        syncLevel: tuning.syncLevel,
        clock: ctx.clock ?? systemClock,
        onWarning: log,
        ...(ctx.onProgress !== undefined ? { onProgress: ctx.onProgress } : {}),
        ...(ctx.sleep !== undefined ? { sleep: ctx.sleep } : {}),
      });
      if (tuning.gcAtimeSafetyCheck) {
        try {
          await chunkStore.atimeSafetyCheck();
          log('Access time update check successful.');
        } catch (error) {
          if (ctx.reuse !== true) {
            // Undo what we made so the same command can be repeated (e.g. with the check off).
            await rm(join(base, '.chunks'), { recursive: true, force: true }).catch(
              () => undefined,
            );
            await rm(join(base, '.lock'), { force: true }).catch(() => undefined);
          }
          throw error;
        }
      }
      const gcStatus = await DataStore.#loadGcStatus(chunkStore.base, log);
      created = new DataStore(name, chunkStore, tuning, props, ctx, gcStatus);
      return next;
    });
    if (created === undefined)
      throw new BurrowError('INTERNAL', 'datastore creation produced no store');
    const store = created;
    cache.set(DataStore.#cacheKey(ctx.dirs, name), {
      key: DataStore.#propsKey(props),
      store: Promise.resolve(store),
    });
    return store;
  }

  static #cacheKey(dirs: BurrowDirs, name: string): string {
    return `${resolve(dirs.configDir)}\0${resolve(dirs.runDir)}\0${name}`;
  }

  static #propsKey(props: DatastoreProps): string {
    const record = props as Record<string, unknown>;
    return JSON.stringify(
      Object.keys(record)
        .sort()
        .map((k) => [k, record[k]]),
    );
  }

  /**
   * The datastore named `name` in datastore.cfg. Instances are cached per process (keyed by
   * config and run directory and name) and renewed when the store's section changes; a renewed
   * instance re-reads `.gc-status`. The cached instance keeps the clock, log and
   * `blockingChunkWrites` of the lookup that made it: the point of the cache is one instance
   * (one GC status, one view of the store) per store and process, and a process is either a
   * client (blocking chunk writes) or a server, never both. NOT_FOUND names the store.
   */
  static async lookup(name: string, ctx: DataStoreContext): Promise<DataStore> {
    const { entries } = await readDatastoreConfig(ctx.dirs);
    const entry = entries.find((e) => e.name === name);
    if (entry === undefined) {
      throw new BurrowError('NOT_FOUND', `datastore '${name}' does not exist`, {
        details: { name },
      });
    }
    const cacheKey = DataStore.#cacheKey(ctx.dirs, name);
    const key = DataStore.#propsKey(entry.props);
    const cached = cache.get(cacheKey);
    let opening = cached !== undefined && cached.key === key ? cached.store : undefined;
    if (opening === undefined) {
      const store = DataStore.#open(name, entry.props.path, entry.props, ctx);
      cache.set(cacheKey, { key, store });
      store.catch(() => {
        if (cache.get(cacheKey)?.store === store) cache.delete(cacheKey);
      });
      opening = store;
    }
    // On every lookup, cached or not: the same instance serves reads and writes.
    const store = await opening;
    if (ctx.operation !== undefined) store.checkMaintenance(ctx.operation);
    return store;
  }

  /**
   * A store given by its path (local repositories `/x` or `./x`; relative paths resolve against
   * the working directory). When datastore.cfg configures a store at the same real path, this is
   * that store (its name, so lock files are shared with everyone using the name, and its
   * tuning). Otherwise the store gets the name `path:<first 16 hex of SHA-256 of the real path>`,
   * stable for the directory and never equal to a configured name, and default tuning.
   */
  static async openPath(path: string, ctx: DataStoreContext): Promise<DataStore> {
    const real = await realpathOrResolved(resolve(path));
    const { entries } = await readDatastoreConfig(ctx.dirs);
    for (const entry of entries) {
      if (!isAbsolute(entry.props.path)) continue;
      if ((await realpathOrResolved(entry.props.path)) === real)
        return DataStore.lookup(entry.name, ctx);
    }
    // Unconfigured: no maintenance mode to check.
    const name =
      PATH_STORE_NAME_PREFIX + createHash('sha256').update(real).digest('hex').slice(0, 16);
    return DataStore.#open(name, real, undefined, ctx);
  }

  /** Forget cached instances (tests; a CLI that rewrote datastore.cfg need not call it). */
  static clearCache(): void {
    cache.clear();
  }

  // -------------------------------------------------------------------------------------------
  // GC status

  /** The last GC's status, as read when the store was opened or last saved. */
  gcStatus(): GcStatusData {
    return structuredClone(this.#gcStatus);
  }

  /** Persist `.gc-status` (compact JSON, atomic, 0644). Write errors are logged, not thrown (§2.8). */
  async saveGcStatus(status: GcStatusData): Promise<void> {
    this.#gcStatus = structuredClone(status);
    const path = join(this.base, GC_STATUS_FILE);
    try {
      await writeFileAtomic(path, serializeGcStatus(status), {
        fsync: false,
        mode: FILE_MODE,
        owner: this.fileOwner,
      });
    } catch (error) {
      this.#log(`WARN: cannot write ${path}: ${errnoOf(error) ?? String(error)}`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Paths

  /** Absolute directory of a namespace. */
  namespacePath(ns: BackupNamespace): string {
    return join(this.base, namespacePath(checkNamespace(ns)));
  }

  /** Absolute directory of a group. */
  groupPath(group: BackupGroup): string {
    return join(this.base, groupPath(checkGroup(group)));
  }

  /** Absolute directory of a snapshot. */
  snapshotPath(dir: BackupDir): string {
    return join(this.base, relativeSnapshotPath(checkDir(dir)));
  }

  /** Absolute path of an archive (or other file named by a safe ID) inside a snapshot. */
  archivePath(dir: BackupDir, name: string): string {
    if (!SAFE_ID_RE.test(name)) {
      throw new BurrowError(
        'INVALID_ARCHIVE_NAME',
        `invalid file name ${JSON.stringify(name.slice(0, 120))}`,
        {
          details: { filename: name },
        },
      );
    }
    return join(this.snapshotPath(dir), name);
  }

  /** `$RUN_DIR/locks/<store>`: the root of this store's lock files. */
  get lockRoot(): string {
    return join(locksDir(this.dirs), this.name);
  }

  groupLockPath(group: BackupGroup): string {
    const g = checkGroup(group);
    return join(this.lockRoot, lockFileRelativePath(g.ns, `${g.type}/${g.id}`));
  }

  snapshotLockPath(dir: BackupDir): string {
    const d = checkDir(dir);
    return join(
      this.lockRoot,
      lockFileRelativePath(d.group.ns, `${d.group.type}/${d.group.id}/${formatBackupTime(d.time)}`),
    );
  }

  manifestLockPath(dir: BackupDir): string {
    const d = checkDir(dir);
    return join(
      this.lockRoot,
      lockFileRelativePath(
        d.group.ns,
        `${d.group.type}/${d.group.id}/${formatBackupTime(d.time)}/${MANIFEST_LOCK_NAME}`,
      ),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Locks (§6.7, PBS 4 lock files)

  /** Group lock, non-blocking: LOCKED when another task or process holds it. */
  lockGroup(group: BackupGroup, exclusive: boolean): Promise<LockGuard> {
    return lockFile(this.groupLockPath(group), {
      exclusive,
      timeoutMs: 0,
      what: `backup group ${formatGroup(group)}`,
      owner: this.fileOwner,
    });
  }

  /** Snapshot lock, non-blocking: LOCKED when the snapshot is in use. */
  lockSnapshot(dir: BackupDir, exclusive: boolean): Promise<LockGuard> {
    return lockFile(this.snapshotLockPath(dir), {
      exclusive,
      timeoutMs: 0,
      what: `backup snapshot ${formatSnapshot(dir)}`,
      owner: this.fileOwner,
    });
  }

  /** Manifest lock: exclusive, waiting up to 5 s. */
  lockManifest(dir: BackupDir): Promise<LockGuard> {
    return lockFile(this.manifestLockPath(dir), {
      exclusive: true,
      timeoutMs: MANIFEST_LOCK_TIMEOUT_MS,
      what: `manifest of ${formatSnapshot(dir)}`,
      owner: this.fileOwner,
    });
  }

  // -------------------------------------------------------------------------------------------
  // Namespaces (§6.4)

  async namespaceExists(ns: BackupNamespace): Promise<boolean> {
    return isDirectory(this.namespacePath(ns));
  }

  async #requireNamespace(ns: BackupNamespace): Promise<void> {
    if (!(await this.namespaceExists(ns))) {
      throw new BurrowError(
        'NOT_FOUND',
        `${nsLabel(ns)} does not exist in datastore '${this.name}'`,
        {
          details: { ns: namespaceToString(ns), store: this.name },
        },
      );
    }
  }

  /**
   * Create a namespace; its parent must exist (NOT_FOUND), and the namespace itself must not
   * (ALREADY_EXISTS; PBS's create-dir-all would accept it silently). Depth and name rules are
   * those of namespaceFromComponents (INVALID_NAMESPACE).
   */
  async createNamespace(ns: BackupNamespace): Promise<void> {
    const checked = checkNamespace(ns);
    if (isRootNamespace(checked)) {
      throw new BurrowError('ALREADY_EXISTS', 'the root namespace always exists');
    }
    const parent = namespaceParent(checked);
    if (!(await this.namespaceExists(parent))) {
      throw new BurrowError(
        'NOT_FOUND',
        `cannot create namespace ${JSON.stringify(namespaceToString(checked))}: parent ${nsLabel(parent)} does not exist`,
        { details: { ns: namespaceToString(checked), parent: namespaceToString(parent) } },
      );
    }
    const path = this.namespacePath(checked);
    try {
      await mkdirOwned(join(this.namespacePath(parent), 'ns'), this.fileOwner, { recursive: true });
      await mkdirOwned(path, this.fileOwner);
    } catch (error) {
      if (errnoOf(error) === 'EEXIST') {
        throw new BurrowError('ALREADY_EXISTS', `${nsLabel(checked)} already exists`, {
          details: { ns: namespaceToString(checked) },
        });
      }
      throw fsError(error, 'create namespace directory', path);
    }
  }

  /**
   * `parent` and every namespace below it down to `maxDepth` levels (default and maximum 7),
   * in tree order (parents first, siblings by name). NOT_FOUND when `parent` does not exist.
   */
  async listNamespaces(
    parent: BackupNamespace,
    maxDepth: number = MAX_NAMESPACE_DEPTH,
  ): Promise<BackupNamespace[]> {
    const root = checkNamespace(parent);
    if (!Number.isSafeInteger(maxDepth) || maxDepth < 0 || maxDepth > MAX_NAMESPACE_DEPTH) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `max-depth must be 0..${MAX_NAMESPACE_DEPTH}, got ${String(maxDepth)}`,
        {
          details: { maxDepth },
        },
      );
    }
    await this.#requireNamespace(root);
    const result: BackupNamespace[] = [root];
    const walk = async (ns: BackupNamespace, depth: number): Promise<void> => {
      if (depth >= maxDepth) return;
      for (const child of await listChildNamespaces(this.base, ns)) {
        result.push(child);
        await walk(child, depth + 1);
      }
    };
    await walk(root, 0);
    return result.sort(compareNamespaces);
  }

  /**
   * Remove a namespace (not the root) and, with `deleteGroups`, every group in and below it
   * (protected snapshots stay). Directories are removed bottom-up with rmdir, so anything still
   * in them (groups when `deleteGroups` is false, protected snapshots) keeps them. `removedAll`
   * tells whether the namespace is gone.
   */
  async removeNamespace(
    ns: BackupNamespace,
    opts: { deleteGroups: boolean },
  ): Promise<{ removedAll: boolean }> {
    const checked = checkNamespace(ns);
    if (isRootNamespace(checked)) {
      throw new BurrowError('INVALID_ARGUMENT', 'the root namespace cannot be removed');
    }
    await this.#requireNamespace(checked);
    const all = await this.listNamespaces(checked, MAX_NAMESPACE_DEPTH - checked.components.length);
    if (opts.deleteGroups) {
      this.#log(
        `removing whole namespace recursively below ${this.name}:/${namespaceToString(checked)}`,
      );
      for (const each of all) {
        let groupsGone = true;
        for (const group of await listGroupsIn(this.base, each)) {
          const { removedAll } = await this.removeBackupGroup(group);
          if (!removedAll) groupsGone = false;
        }
        if (groupsGone) {
          for (const type of ['vm', 'ct', 'host'])
            await this.#rmdirQuiet(join(this.namespacePath(each), type));
        }
      }
    } else {
      this.#log(
        `pruning empty namespace recursively below ${this.name}:/${namespaceToString(checked)}`,
      );
    }
    const bottomUp = [...all].sort((a, b) => b.components.length - a.components.length);
    for (const each of bottomUp) {
      await this.#rmdirQuiet(join(this.namespacePath(each), 'ns'));
      await this.#rmdirQuiet(this.namespacePath(each));
    }
    return { removedAll: !(await this.namespaceExists(checked)) };
  }

  /** rmdir that accepts "missing" and "not empty" silently and logs anything else. */
  async #rmdirQuiet(path: string): Promise<boolean> {
    try {
      await rmdir(path);
      return true;
    } catch (error) {
      const code = errnoOf(error);
      if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST') {
        this.#log(`WARN: cannot remove directory ${path}: ${code ?? String(error)}`);
      }
      return false;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Groups and snapshots (§6.5, §6.6)

  /** The groups of one namespace, sorted (compareGroups). NOT_FOUND for a missing namespace. */
  async listGroups(ns: BackupNamespace): Promise<BackupGroup[]> {
    const checked = checkNamespace(ns);
    await this.#requireNamespace(checked);
    return listGroupsIn(this.base, checked);
  }

  async #requireGroup(group: BackupGroup): Promise<string> {
    const path = this.groupPath(group);
    if (!(await isDirectory(path))) {
      throw new BurrowError(
        'NOT_FOUND',
        `backup group ${formatGroup(group)} does not exist in datastore '${this.name}'`,
        {
          details: { group: formatGroup(group), store: this.name },
        },
      );
    }
    return path;
  }

  async #requireSnapshot(dir: BackupDir): Promise<string> {
    const path = this.snapshotPath(dir);
    if (!(await isDirectory(path))) {
      throw new BurrowError(
        'NOT_FOUND',
        `snapshot ${formatSnapshot(dir)} does not exist in datastore '${this.name}'`,
        {
          details: { snapshot: formatSnapshot(dir), store: this.name },
        },
      );
    }
    return path;
  }

  /** The group's snapshots, oldest first. NOT_FOUND for a missing group. */
  async listSnapshots(group: BackupGroup): Promise<SnapshotInfo[]> {
    const checked = checkGroup(group);
    const infos = await listSnapshotInfos(this.base, checked);
    if (infos === undefined) await this.#requireGroup(checked);
    return infos ?? [];
  }

  async snapshotInfo(dir: BackupDir): Promise<SnapshotInfo> {
    return readSnapshotInfo(this.base, checkDir(dir));
  }

  /** Time of the newest finished snapshot, or undefined (also for a missing group). */
  async lastSuccessfulBackup(group: BackupGroup): Promise<number | undefined> {
    const checked = checkGroup(group);
    const times = await listSnapshotTimes(this.base, checked);
    if (times === undefined) return undefined;
    let newest: number | undefined;
    for (const time of times) {
      if (newest !== undefined && time <= newest) continue;
      const manifest = join(
        this.base,
        relativeSnapshotPath({ group: checked, time }),
        MANIFEST_BLOB_NAME,
      );
      try {
        if ((await lstat(manifest)).isFile()) newest = time;
      } catch {
        // unfinished (or vanished) snapshot
      }
    }
    return newest;
  }

  // -------------------------------------------------------------------------------------------
  // Owners (§6.5)

  /** The group's owner: the first line of `owner`, trailing whitespace trimmed. */
  async getOwner(group: BackupGroup): Promise<Authid> {
    const path = join(this.groupPath(group), OWNER_FILE);
    let text: string;
    let handle;
    try {
      handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
      // An Authid has at most 64 characters: the head of the file is all that can matter.
      const head = new Uint8Array(OWNER_READ_LIMIT);
      const { bytesRead } = await handle.read(head, 0, head.byteLength, 0);
      text = Buffer.from(head.subarray(0, bytesRead)).toString('utf8');
    } catch (error) {
      throw fsError(error, 'read owner file', path);
    } finally {
      await handle?.close().catch(() => undefined);
    }
    const first = (text.split('\n', 1)[0] ?? '').trimEnd();
    try {
      return parseAuthid(first);
    } catch (error) {
      throw withFile(error, path);
    }
  }

  /**
   * Write the group's owner. Without `force` the owner file must not exist yet (created with
   * O_CREAT|O_EXCL; ALREADY_EXISTS otherwise); with `force` it is replaced.
   */
  async setOwner(group: BackupGroup, owner: Authid, force: boolean): Promise<void> {
    const dir = await this.#requireGroup(group);
    const path = join(dir, OWNER_FILE);
    const text = `${formatAuthid(owner)}\n`;
    const fsync = this.tuning.syncLevel === 'file';
    if (force) {
      try {
        await writeFileAtomic(path, text, { fsync, mode: FILE_MODE, owner: this.fileOwner });
      } catch (error) {
        throw fsError(error, 'write owner file', path);
      }
      return;
    }
    let handle;
    try {
      handle = await open(path, 'wx', FILE_MODE);
    } catch (error) {
      if (errnoOf(error) === 'EEXIST') {
        throw new BurrowError(
          'ALREADY_EXISTS',
          `backup group ${formatGroup(group)} has an owner already (${path})`,
          {
            details: { path, group: formatGroup(group) },
          },
        );
      }
      throw fsError(error, 'create owner file', path);
    }
    try {
      await chownHandle(handle, this.fileOwner);
      await handle.writeFile(text);
      if (fsync) await handle.sync();
    } catch (error) {
      throw fsError(error, 'write owner file', path);
    } finally {
      await handle.close();
    }
  }

  /**
   * Create the group if needed and lock it exclusively (§6.5, §6.8): a new group gets `owner`
   * as its owner; an existing group must be writable by `owner` (mayActAsOwner), otherwise
   * PERMISSION_DENIED. The namespace must exist. Returns the group's owner and the lock.
   */
  async createLockedBackupGroup(
    group: BackupGroup,
    owner: Authid,
  ): Promise<{ owner: Authid; guard: LockGuard }> {
    const checked = checkGroup(group);
    await this.#requireNamespace(checked.ns);
    const path = this.groupPath(checked);
    const typeDir = join(this.namespacePath(checked.ns), checked.type);
    let created: boolean;
    try {
      await mkdirOwned(typeDir, this.fileOwner, { recursive: true });
      await mkdirOwned(path, this.fileOwner);
      created = true;
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw fsError(error, 'create backup group', path);
      created = false;
    }
    let guard: LockGuard;
    try {
      guard = await this.lockGroup(checked, true);
    } catch (error) {
      // A group we just made but could not lock would be left without an owner file, and every
      // later session on it would fail reading the owner: take the empty directory back.
      if (created) await rmdir(path).catch(() => undefined);
      throw error;
    }
    try {
      if (created) await this.setOwner(checked, owner, false);
      const actual = await this.getOwner(checked);
      if (!mayActAsOwner(owner, actual)) {
        throw new BurrowError(
          'PERMISSION_DENIED',
          `backup owner check failed (${formatAuthid(owner)} != ${formatAuthid(actual)})`,
          {
            details: {
              group: formatGroup(checked),
              caller: formatAuthid(owner),
              owner: formatAuthid(actual),
            },
          },
        );
      }
      return { owner: actual, guard };
    } catch (error) {
      await guard.release();
      throw error;
    }
  }

  /**
   * Create a snapshot directory and lock it exclusively, as PBS's create_locked_backup_dir:
   * `isNew` is false when the directory existed already (a backup session refuses that with
   * "backup directory already exists"; sync may continue it). LOCKED when someone holds it;
   * NOT_FOUND when its group does not exist. `path` is absolute.
   */
  async createLockedBackupDir(
    dir: BackupDir,
  ): Promise<{ path: string; isNew: boolean; guard: LockGuard }> {
    const checked = checkDir(dir);
    await this.#requireGroup(checked.group);
    const path = this.snapshotPath(checked);
    let isNew = true;
    try {
      await mkdirOwned(path, this.fileOwner);
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw fsError(error, 'create snapshot directory', path);
      isNew = false;
    }
    try {
      return { path, isNew, guard: await this.lockSnapshot(checked, true) };
    } catch (error) {
      // Someone holds the lock of a snapshot that did not exist a moment ago (a removal that
      // has not let go yet): leave no empty directory behind.
      if (isNew) await rmdir(path).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Remove a group (§6.5): under its exclusive lock, every snapshot that is not protected (each
   * under its own locks; a locked one fails the removal with LOCKED), then, if nothing is left,
   * `notes`, `owner`, the directory and the group lock file.
   */
  async removeBackupGroup(group: BackupGroup): Promise<RemoveGroupResult> {
    const checked = checkGroup(group);
    const path = await this.#requireGroup(checked);
    const guard = await this.lockGroup(checked, true);
    try {
      this.#log(`removing backup group ${path}`);
      let removedSnapshots = 0;
      let keptSnapshots = 0;
      for (const snap of await this.listSnapshots(checked)) {
        if (snap.protected || snap.error !== undefined) {
          keptSnapshots++;
          continue;
        }
        await this.removeBackupDir(snap.dir, false);
        removedSnapshots++;
      }
      const removedAll = keptSnapshots === 0 && (await this.#removeGroupDir(checked));
      return { removedAll, removedSnapshots, keptSnapshots };
    } finally {
      await guard.release();
    }
  }

  /**
   * Remove the files and directory of a group without snapshots; the caller holds the group
   * lock. Anything unexpected left in the directory keeps it (logged), rather than an owner-less
   * group.
   */
  async #removeGroupDir(group: BackupGroup): Promise<boolean> {
    const path = this.groupPath(group);
    let names: string[];
    try {
      names = await readdir(path);
    } catch (error) {
      this.#log(`WARN: cannot list ${path}: ${errnoOf(error) ?? String(error)}`);
      return false;
    }
    const other = names.filter((n) => n !== OWNER_FILE && n !== GROUP_NOTES_FILE);
    if (other.length > 0) {
      this.#log(
        `WARN: keeping backup group directory ${path}: it still holds ${other
          .slice(0, 3)
          .map((n) => JSON.stringify(n))
          .join(', ')}${other.length > 3 ? ', …' : ''}`,
      );
      return false;
    }
    try {
      await rmIfExists(join(path, GROUP_NOTES_FILE));
      await rmIfExists(join(path, OWNER_FILE));
      await rmdir(path);
    } catch (error) {
      this.#log(
        `WARN: removing backup group directory ${path} failed: ${error instanceof Error ? error.message : String(error)}`,
      );
      return false;
    }
    await rmIfExists(this.groupLockPath(group)).catch(() => undefined);
    return true;
  }

  /**
   * Remove a snapshot (§6.6): exclusive snapshot lock and manifest lock (both skipped with
   * `force`, which a failed backup session uses on its own directory), PROTECTED when protected
   * (force or not), then `rm -rf` and the two lock files. If the group is then empty and can be
   * locked, it goes too.
   */
  async removeBackupDir(dir: BackupDir, force: boolean): Promise<void> {
    const checked = checkDir(dir);
    const path = await this.#requireSnapshot(checked);
    const guards: LockGuard[] = [];
    try {
      if (!force) {
        guards.push(await this.lockSnapshot(checked, true));
        guards.push(await this.lockManifest(checked));
      }
      if (await pathExists(join(path, PROTECTED_MARKER))) {
        throw new BurrowError(
          'PROTECTED',
          `cannot remove protected snapshot ${formatSnapshot(checked)}`,
          {
            details: { snapshot: formatSnapshot(checked) },
          },
        );
      }
      this.#log(`removing backup snapshot ${path}`);
      try {
        await rm(path, { recursive: true });
      } catch (error) {
        throw fsError(error, 'remove backup snapshot', path);
      }
      await rmIfExists(this.manifestLockPath(checked)).catch(() => undefined);
      await rmIfExists(this.snapshotLockPath(checked)).catch(() => undefined);
    } finally {
      for (const guard of guards.reverse()) await guard.release();
    }
    await this.#removeGroupIfEmpty(checked.group);
  }

  async #removeGroupIfEmpty(group: BackupGroup): Promise<void> {
    let guard: LockGuard;
    try {
      guard = await this.lockGroup(group, true);
    } catch {
      return; // in use: whoever holds it (a backup, a group removal) takes care of the group
    }
    try {
      const times = await listSnapshotTimes(this.base, group);
      if (times !== undefined && times.length === 0) await this.#removeGroupDir(group);
    } finally {
      await guard.release();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Protection and notes

  async isProtected(dir: BackupDir): Promise<boolean> {
    return pathExists(join(this.snapshotPath(dir), PROTECTED_MARKER));
  }

  /** Set or clear `.protected` under the exclusive snapshot lock. */
  async setProtected(dir: BackupDir, value: boolean): Promise<void> {
    const checked = checkDir(dir);
    const path = await this.#requireSnapshot(checked);
    const guard = await this.lockSnapshot(checked, true);
    const marker = join(path, PROTECTED_MARKER);
    try {
      if (value) {
        const handle = await open(marker, 'w', FILE_MODE);
        try {
          await chownHandle(handle, this.fileOwner);
        } finally {
          await handle.close();
        }
      } else {
        await rmIfExists(marker);
      }
    } catch (error) {
      throw fsError(error, value ? 'create' : 'remove', marker);
    } finally {
      await guard.release();
    }
  }

  /** The group's notes ('' when there are none). NOT_FOUND for a missing group. */
  async getGroupNotes(group: BackupGroup): Promise<string> {
    const path = join(await this.#requireGroup(group), GROUP_NOTES_FILE);
    try {
      return await readFile(path, 'utf8');
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') return '';
      throw fsError(error, 'read', path);
    }
  }

  async setGroupNotes(group: BackupGroup, notes: string): Promise<void> {
    const path = join(await this.#requireGroup(group), GROUP_NOTES_FILE);
    try {
      await writeFileAtomic(path, notes, {
        fsync: this.tuning.syncLevel === 'file',
        mode: FILE_MODE,
        owner: this.fileOwner,
      });
    } catch (error) {
      throw fsError(error, 'write', path);
    }
  }

  /** `unprotected.notes` of the manifest ('' when absent or not a string). */
  async getSnapshotNotes(dir: BackupDir): Promise<string> {
    const { manifest } = await this.loadManifest(dir);
    const notes = manifest.unprotected['notes'];
    return typeof notes === 'string' ? notes : '';
  }

  async setSnapshotNotes(dir: BackupDir, notes: string): Promise<void> {
    await this.updateManifest(dir, (m) => {
      m.unprotected['notes'] = notes;
    });
  }

  /**
   * Remove the regular files of a snapshot directory that the manifest does not name, other
   * than the manifest itself, `client.log.blob` and `.protected` (PBS would remove the marker
   * too; a cleanup must never unprotect a snapshot). Returns the removed names.
   */
  async cleanupBackupDir(dir: BackupDir, manifest: BackupManifest): Promise<string[]> {
    const path = await this.#requireSnapshot(checkDir(dir));
    const wanted = new Set([MANIFEST_BLOB_NAME, CLIENT_LOG_BLOB_NAME, PROTECTED_MARKER]);
    for (const file of manifest.files) wanted.add(file.filename);
    const removed: string[] = [];
    let entries;
    try {
      entries = await readdir(path, { withFileTypes: true });
    } catch (error) {
      throw fsError(error, 'list', path);
    }
    for (const entry of entries) {
      if (!entry.isFile() || wanted.has(entry.name)) continue;
      this.#log(`remove unused file ${JSON.stringify(entry.name)}`);
      try {
        await rm(join(path, entry.name));
        removed.push(entry.name);
      } catch (error) {
        this.#log(
          `WARN: cannot remove ${join(path, entry.name)}: ${errnoOf(error) ?? String(error)}`,
        );
      }
    }
    return removed.sort();
  }

  // -------------------------------------------------------------------------------------------
  // Archives

  /**
   * A `.fidx` writer for `name` in the snapshot, holding a chunk-store shared guard (§2.6)
   * until it is closed or aborted; LOCKED when another process runs GC.
   */
  async createFixedWriter(dir: BackupDir, name: string, size: number): Promise<FixedIndexWriter> {
    checkArchive(name, ['fixed']);
    return this.#guardedWriter((options) =>
      FixedIndexWriter.create(this.archivePath(dir, name), { ...options, size }),
    );
  }

  /** A `.didx` writer, with the same chunk-store guard as createFixedWriter. */
  async createDynamicWriter(dir: BackupDir, name: string): Promise<DynamicIndexWriter> {
    checkArchive(name, ['dynamic']);
    return this.#guardedWriter((options) =>
      DynamicIndexWriter.create(this.archivePath(dir, name), options),
    );
  }

  /** Create a writer under a chunk-store shared guard that lives until it closes or aborts. */
  async #guardedWriter<W extends FixedIndexWriter | DynamicIndexWriter>(
    create: (options: {
      syncLevel: SyncLevel;
      ctime: number;
      owner: FileOwner | undefined;
    }) => Promise<W>,
  ): Promise<W> {
    const guard = this.chunkStore.tryShared();
    try {
      const writer = await create({
        syncLevel: this.tuning.syncLevel,
        ctime: this.#clock.nowSeconds(),
        owner: this.fileOwner,
      });
      return bindGuard(writer, guard);
    } catch (error) {
      guard.release();
      throw error;
    }
  }

  /** Read a `.fidx`/`.didx` of the snapshot. Errors name the file. */
  async openIndex(dir: BackupDir, name: string): Promise<IndexFile> {
    checkArchive(name, ['fixed', 'dynamic']);
    return readIndexFile(this.archivePath(dir, name));
  }

  /** The raw bytes of a `.blob` of the snapshot, CRC checked. Errors name the file. */
  async loadBlob(dir: BackupDir, name: string): Promise<Uint8Array> {
    checkArchive(name, ['blob']);
    return readBlobFile(this.archivePath(dir, name));
  }

  /** Write a `.blob` (raw DataBlob bytes, CRC checked first) atomically into the snapshot. */
  async writeBlob(dir: BackupDir, name: string, raw: Uint8Array): Promise<void> {
    checkArchive(name, ['blob']);
    const path = this.archivePath(dir, name);
    try {
      verifyBlobCrc(raw);
    } catch (error) {
      throw withFile(error, path);
    }
    const fsync = this.tuning.syncLevel === 'file';
    try {
      await writeFileAtomic(path, raw, {
        fsync,
        fsyncDir: fsync,
        mode: FILE_MODE,
        tempPath: replaceTempPath(path),
        owner: this.fileOwner,
      });
    } catch (error) {
      throw fsError(error, 'write', path);
    }
  }

  /** The manifest and its raw blob bytes. Errors name the file. */
  async loadManifest(dir: BackupDir): Promise<{ manifest: BackupManifest; raw: Uint8Array }> {
    const path = this.archivePath(dir, MANIFEST_BLOB_NAME);
    const raw = await readBlobFile(path);
    try {
      return { manifest: parseManifest(decodeBlob(raw)), raw };
    } catch (error) {
      throw withFile(error, path);
    }
  }

  /**
   * Change the manifest (§5.3): under the manifest lock, re-read it, apply `update`, serialize
   * (sorted keys, pretty), encode as an unencrypted blob with compression allowed and replace
   * the file atomically (temp `index.json.tmp_XXXXXX`). The signature and every field `update`
   * leaves alone are kept. Returns the new manifest.
   */
  async updateManifest(
    dir: BackupDir,
    update: (m: BackupManifest) => void | Promise<void>,
  ): Promise<BackupManifest> {
    const checked = checkDir(dir);
    // Checked first so that no lock file is left behind for a snapshot that does not exist.
    await this.#requireSnapshot(checked);
    const path = this.archivePath(checked, MANIFEST_BLOB_NAME);
    const guard = await this.lockManifest(checked);
    try {
      const { manifest } = await this.loadManifest(checked);
      await update(manifest);
      const blob = encodeBlob(Buffer.from(serializeManifest(manifest), 'utf8'), { compress: true });
      const fsync = this.tuning.syncLevel === 'file';
      try {
        await writeFileAtomic(path, blob, {
          fsync,
          fsyncDir: fsync,
          mode: FILE_MODE,
          tempPath: replaceTempPath(path),
          owner: this.fileOwner,
        });
      } catch (error) {
        throw fsError(error, 'write', path);
      }
      return manifest;
    } finally {
      await guard.release();
    }
  }

  insertChunk(blob: Uint8Array, digest: Uint8Array): Promise<InsertResult> {
    return this.chunkStore.insertChunk(blob, digest);
  }

  /** ChunkStore.insertChunkFile: a chunk a worker thread wrote to a temporary file. */
  insertChunkFile(
    written: WrittenChunk,
    kind: BlobKind,
    digest: Uint8Array,
  ): Promise<InsertResult> {
    return this.chunkStore.insertChunkFile(written, kind, digest);
  }

  /** ChunkStore.chunkFileTarget: where other threads may write chunks' temporary files. */
  chunkFileTarget(): ChunkFileTarget | undefined {
    return this.chunkStore.chunkFileTarget();
  }

  /** ChunkStore.touchIfStored: the stored chunk's file size when it can be referenced as is. */
  touchIfStored(digest: Uint8Array, encrypted: boolean): Promise<number | undefined> {
    return this.chunkStore.touchIfStored(digest, encrypted);
  }

  /** ChunkStore.storedChunkSize: the same check, read-only. */
  storedChunkSize(digest: Uint8Array, encrypted: boolean): Promise<number | undefined> {
    return this.chunkStore.storedChunkSize(digest, encrypted);
  }

  /**
   * PBS's maintenance-mode check at datastore lookup, for an operation that reads or writes the
   * store: `delete` and `unmount` block everything, `offline` (and `s3-refresh`) block reads and
   * writes, `read-only` blocks writes. MAINTENANCE_MODE names the mode and its message.
   */
  checkMaintenance(operation: 'read' | 'write'): void {
    const mode = this.config === undefined ? undefined : datastoreMaintenanceMode(this.config);
    if (mode === undefined) return;
    const message = mode.message ?? '';
    const refuse = (text: string): never => {
      throw new BurrowError('MAINTENANCE_MODE', text, {
        details: { store: this.name, maintenance: mode.type, operation },
      });
    };
    switch (mode.type) {
      case 'delete':
        return refuse('datastore is being deleted');
      case 'unmount':
        return refuse('datastore is being unmounted');
      case 'offline':
        return refuse(`offline maintenance mode: ${message}`);
      case 's3-refresh':
        return refuse(`S3 refresh maintenance mode: ${message}`);
      case 'read-only':
        if (operation === 'write') refuse(`read-only maintenance mode: ${message}`);
        return;
    }
  }

  loadChunk(digest: Uint8Array): Promise<Uint8Array> {
    return this.chunkStore.loadChunk(digest);
  }

  // -------------------------------------------------------------------------------------------
  // Prune (§9)

  /**
   * Prune one group: select with computePruneInfo, then (unless `dryRun`) remove the snapshots
   * marked `remove`, oldest first, each under its locks. A removal that fails (a snapshot in
   * use) is logged and recorded, and the others go on. A snapshot whose directory cannot be
   * read is treated as protected. Entries come back oldest first, in the order they were logged.
   */
  async pruneGroup(
    group: BackupGroup,
    keep: KeepOptions,
    opts: PruneGroupOptions,
  ): Promise<PruneResultEntry[]> {
    const checked = checkGroup(group);
    const log = opts.log ?? this.#log;
    const warn = opts.warn ?? ((line: string) => log(`WARN: ${line}`));
    const infos = await this.listSnapshots(checked);
    const candidates = infos.map((info) => {
      if (info.error !== undefined)
        warn(`${formatSnapshot(info.dir)}: ${info.error} - leaving it alone`);
      return {
        info,
        time: info.dir.time,
        finished: info.finished,
        protected: info.protected || info.error !== undefined,
      };
    });
    const selection = computePruneInfo(candidates, keep, opts.timeZone);
    if (!hasKeepOptions(keep)) {
      log('No prune selection - keeping all files.');
    } else {
      const args = isRootNamespace(checked.ns) ? [] : ['--ns', namespaceToString(checked.ns)];
      log(`retention options: ${[...args, ...keepOptionsToArgs(keep)].join(' ')}`);
      const where = isRootNamespace(checked.ns)
        ? `datastore '${this.name}'`
        : `datastore '${this.name}', namespace '${namespaceToString(checked.ns)}'`;
      log(`Starting prune on ${where} group "${checked.type}/${checked.id}"`);
    }
    const results: PruneResultEntry[] = [];
    // computePruneInfo lists newest first; PBS removes (and logs) oldest first.
    for (const { snapshot, mark } of [...selection].reverse()) {
      const dir = snapshot.info.dir;
      log(`${checked.type}/${checked.id}/${formatBackupTime(dir.time)} ${mark}`);
      const entry: PruneResultEntry = { dir, mark, removed: false };
      if (mark === 'remove' && !opts.dryRun) {
        try {
          await this.removeBackupDir(dir, false);
          entry.removed = true;
        } catch (error) {
          entry.error = error instanceof Error ? error.message : String(error);
          warn(`failed to remove dir ${JSON.stringify(relativeSnapshotPath(dir))}: ${entry.error}`);
        }
      }
      results.push(entry);
    }
    return results;
  }
}
