/**
 * The chunk store (pbs-formats §1, §2): `<base>/.chunks/<4 hex>/<64 hex>` DataBlob files, the
 * `.lock` file, and the rules for inserting, touching, listing and retiring chunks exactly as
 * PBS applies them, so a store is shared between Burrow and PBS without conversion.
 *
 * What this module owns and why it is shaped this way:
 * - Chunks are content-addressed and never modified in place: a new chunk is written to
 *   `<hex>.tmp_XXXXXX` beside its final name and renamed over it, so readers and other processes
 *   see either no file or a complete one (§2.3). Cross-process safety rests on that rename.
 * - Within the process, every operation that looks at a chunk file and then acts on what it saw
 *   (insert, rename to `.bad`, the GC sweep through withChunkLock) runs under a mutex for that
 *   chunk path. PBS holds one mutex per store; two operations on different digests never touch
 *   the same file, so one mutex per digest gives the same guarantees without making every
 *   insert of a busy store wait for unrelated ones.
 * - The disk may hold anything: a directory or symlink where a chunk should be, a truncated file,
 *   a missing prefix directory. Each becomes a BurrowError naming the path, never a crash.
 */
import {
  constants as fsConstants,
  chmodSync,
  closeSync,
  fsyncSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import type { Stats } from 'node:fs';
import { chmod, lchown, lstat, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { fsyncDirectory, tempPathFor, writeFileAtomic } from '../lib/atomic-write.js';
import { allocUninitialized } from '../lib/bytes.js';
import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { syncfsAsync, touchAtime } from '../lib/native-fs.js';
import {
  blobKindOf,
  encodeBlob,
  type BlobKind,
  isCompressedKind,
  isEncryptedKind,
  parseBlobHeader,
} from '../format/data-blob.js';
import { SYNC_LEVELS } from '../format/datastore-config.js';
import type { SyncLevel } from '../format/datastore-config.js';
import { FIXED_CHUNK_SIZE, MAX_ENCODED_CHUNK_SIZE } from '../format/magic.js';
import { DIGEST_SIZE, digestToHex, parseDigestHex } from '../types/digest.js';
import {
  CHUNK_FILE_MODE,
  CHUNK_OPEN_FLAGS,
  CHUNK_TEMP_FLAGS,
  checkChunkStat,
  chunkOpenError,
  chunkTempError,
  describeType,
  errnoCode,
  fsError,
  invalid,
  writeChunkTempFileSync,
} from './chunk-file.js';
import type { ChunkFileTarget, WrittenChunk } from './chunk-file.js';
import { chownHandle, datastoreFileOwner, mkdirOwned } from './file-owner.js';
import type { FileOwner } from './file-owner.js';
import { ProcessLocker } from './process-locker.js';
import type { ProcessLockGuard } from './process-locker.js';

export type { SyncLevel };
export type { ProcessLockGuard };

/** Number of prefix directories under `.chunks`: one per value of the first two digest bytes. */
export const PREFIX_DIR_COUNT = 0x10000;

/** Modes PBS gives the store (§1, §2.1); a reused store must have exactly these (§2.1 step 5). */
export const BASE_DIR_MODE = 0o755;
export const CHUNK_DIR_MODE = 0o750;
export const LOCK_FILE_MODE = 0o644;
export { CHUNK_FILE_MODE };
export type { ChunkFileTarget, WrittenChunk };

/** SHA-256 of 4 MiB of zero bytes: the chunk the atime safety check inserts (§3.5, §7.6). */
export const ZERO_CHUNK_DIGEST_HEX =
  'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8';

/** Name suffixes of retired copies of a corrupt chunk: `.0.bad` … `.9.bad` (§2.7). */
export const MAX_BAD_COPIES = 10;

/**
 * At sync level `filesystem`, a syncfs is started in the background after this many bytes of new
 * chunk files, so the disk writes them while the backup goes on instead of all at the final
 * syncfs (the kernel alone would start only after 30 s or a tenth of the memory).
 */
export const EARLY_SYNC_BYTES = 32 * 1024 * 1024;

/**
 * The loops over all 65536 prefix directories (create, reuse check, iteration) make synchronous
 * calls and yield to the event loop once per time slice. Measured here, synchronous mkdir /
 * readdir in a loop were 2-5x faster than the same calls through the libuv thread pool, however
 * many were kept in flight (each call is a few microseconds of kernel work and a thread-pool
 * hand-off costs more; mkdirs in one parent also serialise on its directory lock). The slice
 * bounds how long other work (a running backup session) waits: about SLICE_MS plus one call.
 */
const SLICE_MS = 10;

class TimeSlice {
  #start = performance.now();
  /** True when the current slice is used up; then `await pause()`. */
  due(): boolean {
    return performance.now() - this.#start >= SLICE_MS;
  }
  async pause(): Promise<void> {
    await new Promise<void>((done) => setImmediate(done));
    this.#start = performance.now();
  }
}

export interface InsertResult {
  /** True when a chunk file was already there and was kept (and touched); nothing was written. */
  duplicate: boolean;
  /** Size of the chunk file now stored: the existing file's size for a duplicate. */
  encodedSize: number;
}

export interface ChunkEntry {
  /**
   * The directory entry's name: `<64 hex>` or `<64 hex>.<n>.bad` (or any other 6-char suffix,
   * §2.5). Only the name was looked at: the entry may be a directory or a symlink, so GC must
   * check statChunkFile().isFile before acting on it.
   */
  name: string;
  path: string;
  /** The first 64 characters of the name, lowercased. */
  digestHex: string;
  bad: boolean;
  /**
   * A temporary file of an insert (`<64 hex>.tmp_XXXXXX`, §2.3), yielded only when asked for
   * (`withTempFiles`): one that a killed writer left behind stays until GC removes it.
   */
  temp: boolean;
}

export interface ChunkFileStat {
  /** Whole seconds, as `st_atime` (GC compares these with its cutoff, §7.2). */
  atimeSeconds: number;
  size: number;
  /** A regular file (not following symlinks); GC skips everything else. */
  isFile: boolean;
}

export interface ChunkStoreOptions {
  /** Default `filesystem`, PBS's default (§10.3). */
  syncLevel?: SyncLevel;
  /** The clock of the `.lock` ProcessLocker (oldest-writer times). */
  clock?: Clock;
  /** Receives warnings such as an empty chunk file being overwritten (§2.3); default: dropped. */
  onWarning?: (message: string) => void;
  /** The pause of the atime safety check (§7.6); injectable so tests need not sleep 1 s. */
  sleep?: (ms: number) => Promise<void>;
  /** syncfs(2) on an fd of the store's filesystem; injectable so tests can see and fail it. */
  syncfs?: (fd: number) => Promise<void>;
  /**
   * Write new chunk files with blocking system calls on the calling thread instead of through
   * libuv's thread pool (default false). Same steps and guarantees; a backup client, which has
   * nothing else to serve, spends about half the CPU per chunk that way (six thread-pool round
   * trips per chunk cost more than the calls). A server keeps the default: a slow disk must not
   * stall every connection.
   */
  blockingWrites?: boolean;
}

export interface ChunkStoreCreateOptions extends ChunkStoreOptions {
  /** Adopt an existing store after checking its layout and modes, instead of creating one. */
  reuse?: boolean;
  /** Percent (1..99) of prefix directories created, or checked when reusing. */
  onProgress?: (percent: number) => void;
}

export interface AtimeCheckOptions {
  sleep?: (ms: number) => Promise<void>;
}

/** `.chunks/xxxx` for prefix number `at` (0..0xffff). */
export function prefixDirName(at: number): string {
  return at.toString(16).padStart(4, '0');
}

let prefixNames: readonly string[] | undefined;

/** `<chunkDir>/0000` … `<chunkDir>/ffff` (chunkDir normalised, so plain concatenation is a join). */
function prefixDirPaths(chunkDir: string): string[] {
  prefixNames ??= Array.from({ length: PREFIX_DIR_COUNT }, (_, at) => prefixDirName(at));
  return prefixNames.map((name) => `${chunkDir}/${name}`);
}

const PREFIX_NAME_RE = /^[0-9a-f]{4}$/;
const CHUNK_NAME_RE = /^[0-9a-fA-F]{64}(?:.{6})?$/s;
/** An insert's temporary file: the chunk's name, `.tmp_` and mkstemp's six characters. */
const CHUNK_TEMP_NAME_RE = /^[0-9a-fA-F]{64}\.tmp_[0-9A-Za-z]{6}$/;

/** The name filter of the chunk iterator (§2.5): 64 hex characters, optionally 6 more. */
export function isChunkFileName(name: string): boolean {
  return CHUNK_NAME_RE.test(name);
}

// ---------------------------------------------------------------------------------------------
// Error helpers

function modeString(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}

function checkDigest(digest: Uint8Array): void {
  if (!(digest instanceof Uint8Array) || digest.byteLength !== DIGEST_SIZE) {
    throw new BurrowError(
      'INVALID_DIGEST',
      `a chunk digest has ${DIGEST_SIZE} bytes, got ${digest instanceof Uint8Array ? digest.byteLength : typeof digest}`,
    );
  }
}

function checkAbsolute(base: string): string {
  if (typeof base !== 'string' || base.length === 0 || !isAbsolute(base)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `a chunk store path must be absolute, got ${JSON.stringify(base)}`,
      {
        details: { path: base },
      },
    );
  }
  return resolve(base);
}

function checkSyncLevel(level: SyncLevel): SyncLevel {
  if (!SYNC_LEVELS.includes(level)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `sync level must be one of ${SYNC_LEVELS.join(', ')}, got ${JSON.stringify(level)}`,
    );
  }
  return level;
}

/** lstat, with ENOENT as undefined and every other failure as IO_ERROR. */
function lstatIfExistsSync(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw fsError(error, 'stat', path);
  }
}

/**
 * The first 8 bytes of a chunk file, or fewer (none) when it is shorter or gone: only a
 * recognised magic counts, so a short or vanished file simply does not match.
 */
function readMagicSync(path: string): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT' || errnoCode(error) === 'ELOOP') return new Uint8Array(0);
    throw fsError(error, 'open chunk', path);
  }
  try {
    const magic = new Uint8Array(8);
    const got = readSync(fd, magic, 0, magic.byteLength, 0);
    return magic.subarray(0, got);
  } catch (error) {
    throw fsError(error, 'read chunk', path);
  } finally {
    closeSync(fd);
  }
}

/** fsync(2) of a file or directory by path, with blocking calls. */
function fsyncFileSync(path: string): void {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function lstatIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw fsError(error, 'stat', path);
  }
}

/** Calls `report` with each new whole percent 1..99 as `done` of `total` advances (as PBS logs it). */
function percentReporter(
  total: number,
  report: ((percent: number) => void) | undefined,
): (done: number) => void {
  let last = 0;
  return (done) => {
    if (report === undefined) return;
    const percent = Math.floor((done * 100) / total);
    if (percent !== last) {
      last = percent;
      report(percent);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Per-chunk mutex, shared by every ChunkStore instance of the process (keyed by chunk path).

const chunkLocks = new Map<string, Promise<void>>();

async function withPathLock<T>(key: string, work: () => Promise<T>): Promise<T> {
  const previous = chunkLocks.get(key);
  let release!: () => void;
  const mine = new Promise<void>((done) => (release = done));
  const tail = previous === undefined ? mine : previous.then(() => mine);
  chunkLocks.set(key, tail);
  try {
    if (previous !== undefined) await previous;
    return await work();
  } finally {
    release();
    if (chunkLocks.get(key) === tail) chunkLocks.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------
// Layout checks

/** stat (following symlinks, as PBS does) and require a directory or a regular file. */
async function requireEntry(
  path: string,
  what: string,
  kind: 'directory' | 'file',
): Promise<Stats> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw invalid(
        `not a chunk store: ${what} ${path} does not exist`,
        path,
        { errno: code },
        error,
      );
    }
    throw fsError(error, `stat ${what}`, path);
  }
  if (kind === 'directory' ? !st.isDirectory() : !st.isFile()) {
    throw invalid(
      `not a chunk store: ${what} ${path} is ${describeType(st)}, not ${kind === 'directory' ? 'a directory' : 'a regular file'}`,
      path,
    );
  }
  return st;
}

const requireDir = (path: string, what: string) => requireEntry(path, what, 'directory');
const requireFile = (path: string, what: string) => requireEntry(path, what, 'file');

function requireMode(st: Stats, expected: number, path: string): void {
  if ((st.mode & 0o777) !== expected) {
    throw invalid(
      `cannot reuse chunk store: ${path} has mode ${modeString(st.mode)}, expected ${modeString(expected)}`,
      path,
      { mode: modeString(st.mode), expectedMode: modeString(expected) },
    );
  }
}

/** The owner check of a reused store; skipped when Burrow chowns nothing (file-owner.ts). */
function requireOwner(st: Stats, owner: FileOwner | undefined, path: string): void {
  if (owner === undefined || (st.uid === owner.uid && st.gid === owner.gid)) return;
  throw invalid(
    `cannot reuse chunk store: ${path} is owned by ${st.uid}:${st.gid}, expected the datastore user ${owner.uid}:${owner.gid} (chown -R the store, or see BURROW_DATASTORE_USER)`,
    path,
    { uid: st.uid, gid: st.gid, expectedUid: owner.uid, expectedGid: owner.gid },
  );
}

function requireModeAndOwner(
  st: Stats,
  mode: number,
  owner: FileOwner | undefined,
  path: string,
): void {
  requireMode(st, mode, path);
  requireOwner(st, owner, path);
}

/**
 * The check PBS 4 makes before adopting an existing store (§2.1 step 5): base 0755, `.chunks` and
 * all 65536 prefix directories 0750, `.lock` 0644 (following symlinks, as PBS's stat does), and
 * all of them owned by the datastore user when Burrow has one (PBS: always backup:backup; a
 * Burrow that chowns nothing, e.g. not run as root, accepts any owner).
 */
async function verifyLayout(
  base: string,
  owner: FileOwner | undefined,
  onProgress?: (percent: number) => void,
): Promise<void> {
  const baseStat = await requireDir(base, 'datastore directory');
  const chunkDir = join(base, '.chunks');
  // A directory that is no store at all says so before its mode or owner is held against it.
  const chunkDirStat = await requireDir(chunkDir, 'chunk directory');
  requireModeAndOwner(baseStat, BASE_DIR_MODE, owner, base);
  requireModeAndOwner(chunkDirStat, CHUNK_DIR_MODE, owner, chunkDir);
  const progress = percentReporter(PREFIX_DIR_COUNT, onProgress);
  const slice = new TimeSlice();
  const paths = prefixDirPaths(chunkDir);
  for (let at = 0; at < PREFIX_DIR_COUNT; at++) {
    if (slice.due()) await slice.pause();
    const path = paths[at] as string;
    let st: Stats;
    try {
      st = statSync(path);
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') {
        throw invalid(
          `cannot reuse chunk store: prefix directory ${path} is missing`,
          path,
          {},
          error,
        );
      }
      throw fsError(error, 'stat prefix directory', path);
    }
    if (!st.isDirectory()) {
      throw invalid(
        `cannot reuse chunk store: prefix directory ${path} is ${describeType(st)}`,
        path,
      );
    }
    requireModeAndOwner(st, CHUNK_DIR_MODE, owner, path);
    progress(at);
  }
  const lockPath = join(base, '.lock');
  requireModeAndOwner(await requireFile(lockPath, 'lock file'), LOCK_FILE_MODE, owner, lockPath);
}

/**
 * mkdir `.chunks/0000` … `.chunks/ffff` in ascending order, so `ffff` exists only once all the
 * others do (open() relies on that to recognise an interrupted creation). Each is handed to
 * `owner` right after its mkdir, so `ffff` existing also means every directory has its owner.
 */
async function makePrefixDirs(
  chunkDir: string,
  fixMode: boolean,
  owner: FileOwner | undefined,
  onProgress?: (percent: number) => void,
): Promise<void> {
  const progress = percentReporter(PREFIX_DIR_COUNT, onProgress);
  const slice = new TimeSlice();
  const paths = prefixDirPaths(chunkDir);
  for (let at = 0; at < PREFIX_DIR_COUNT; at++) {
    if (slice.due()) await slice.pause();
    const path = paths[at] as string;
    try {
      mkdirSync(path, CHUNK_DIR_MODE);
      if (owner !== undefined) lchownSync(path, owner.uid, owner.gid);
      if (fixMode) chmodSync(path, CHUNK_DIR_MODE);
    } catch (error) {
      throw fsError(error, 'create prefix directory', path);
    }
    progress(at);
  }
}

// ---------------------------------------------------------------------------------------------

let zeroChunkBlob: Uint8Array | undefined;

/** The 4 MiB zero chunk, compressed and unencrypted, as the atime check stores it (§7.6). */
function zeroChunk(): Uint8Array {
  zeroChunkBlob ??= encodeBlob(new Uint8Array(FIXED_CHUNK_SIZE), { compress: true });
  return zeroChunkBlob;
}

export class ChunkStore {
  /** Absolute, normalised base directory. */
  readonly base: string;
  /** `<base>/.chunks`. */
  readonly chunkDir: string;
  readonly syncLevel: SyncLevel;
  /** New chunk bytes since the last background syncfs started, the one running, its failure. */
  #unsynced = 0;
  #earlySync: Promise<void> | undefined;
  #earlySyncError: Error | undefined;
  /**
   * Owner of everything created in the store (chunks here; the DataStore uses it for the rest),
   * resolved when the store is opened; undefined = files belong to whoever runs Burrow.
   */
  readonly fileOwner: FileOwner | undefined;
  readonly #locker: ProcessLocker;
  readonly #onWarning: (message: string) => void;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #syncfsCall: (fd: number) => Promise<void>;
  readonly #blockingWrites: boolean;

  private constructor(
    base: string,
    locker: ProcessLocker,
    owner: FileOwner | undefined,
    options: ChunkStoreOptions,
  ) {
    this.base = base;
    this.chunkDir = join(base, '.chunks');
    this.syncLevel = options.syncLevel ?? 'filesystem';
    this.fileOwner = owner;
    this.#locker = locker;
    this.#onWarning = options.onWarning ?? (() => {});
    this.#sleep = options.sleep ?? ((ms) => sleepMs(ms));
    this.#syncfsCall = options.syncfs ?? syncfsAsync;
    this.#blockingWrites = options.blockingWrites === true;
  }

  /**
   * Create a store (§2.1): absolute `base` (missing parents are made), refused when it holds
   * entries other than dot-names and `lost+found`; `.chunks` 0750 (ALREADY_EXISTS when there),
   * empty `.lock` 0644 written atomically, then the 65536 prefix directories 0750. With
   * `reuse: true` an existing store is checked (verifyLayout) and opened instead. The atime safety
   * check is not run here: the caller decides (tuning `gc-atime-safety-check`). The base (made or
   * already there), `.chunks`, `.lock` and the prefix directories get the datastore owner
   * (file-owner.ts) when there is one; missing parents of the base stay the creator's, as in PBS.
   */
  static async create(base: string, options: ChunkStoreCreateOptions = {}): Promise<ChunkStore> {
    const root = checkAbsolute(base);
    checkSyncLevel(options.syncLevel ?? 'filesystem');
    const owner = datastoreFileOwner();
    if (options.reuse === true) {
      await verifyLayout(root, owner, options.onProgress);
      return ChunkStore.open(root, options);
    }

    let entries: string[] = [];
    try {
      entries = await readdir(root);
    } catch (error) {
      const code = errnoCode(error);
      if (code === 'ENOTDIR')
        throw invalid(`cannot create a chunk store in ${root}: not a directory`, root, {}, error);
      if (code !== 'ENOENT') throw fsError(error, 'list', root);
    }
    const foreign = entries.filter((name) => !name.startsWith('.') && name !== 'lost+found');
    if (foreign.length > 0) {
      throw invalid(
        `datastore path not empty: ${root} (found ${foreign
          .slice(0, 3)
          .map((n) => JSON.stringify(n))
          .join(', ')}${foreign.length > 3 ? ', …' : ''})`,
        root,
        {
          entries: foreign.slice(0, 20),
        },
      );
    }

    let madeBase: string | undefined;
    try {
      madeBase = await mkdir(root, { recursive: true, mode: BASE_DIR_MODE });
    } catch (error) {
      throw fsError(error, 'create datastore directory', root);
    }
    // mkdir modes pass through the umask; what we create gets exactly PBS's modes so that a
    // later `reuse` check (which compares modes exactly) accepts the store.
    if (madeBase !== undefined) await chmod(root, BASE_DIR_MODE);

    const chunkDir = join(root, '.chunks');
    try {
      await mkdirOwned(chunkDir, owner, { mode: CHUNK_DIR_MODE });
    } catch (error) {
      if (errnoCode(error) === 'EEXIST') {
        throw new BurrowError(
          'ALREADY_EXISTS',
          `a chunk store exists already at ${root} (${chunkDir} is there); reuse it instead`,
          {
            details: { path: chunkDir },
            cause: error,
          },
        );
      }
      throw fsError(error, 'create chunk directory', chunkDir);
    }
    const fixMode = ((await stat(chunkDir)).mode & 0o777) !== CHUNK_DIR_MODE;
    if (fixMode) await chmod(chunkDir, CHUNK_DIR_MODE);
    // The base is handed over even when it existed before (as PBS does), but only once `.chunks`
    // proved that no store is there: a refused create changes nothing.
    if (owner !== undefined) {
      try {
        await lchown(root, owner.uid, owner.gid);
      } catch (error) {
        throw fsError(error, 'chown datastore directory', root);
      }
    }

    const lockPath = join(root, '.lock');
    try {
      await writeFileAtomic(lockPath, new Uint8Array(0), {
        fsync: false,
        mode: LOCK_FILE_MODE,
        owner,
      });
      if (fixMode) await chmod(lockPath, LOCK_FILE_MODE);
    } catch (error) {
      throw fsError(error, 'write lock file', lockPath);
    }

    await makePrefixDirs(chunkDir, fixMode, owner, options.onProgress);

    const store = await ChunkStore.open(root, options);
    // PBS syncs nothing here; with `file` (durable per operation) the new directories are
    // flushed too. `filesystem` syncs when a backup finishes, not on create.
    if (store.syncLevel === 'file') {
      try {
        await fsyncDirectory(chunkDir);
        await fsyncDirectory(root);
      } catch (error) {
        throw fsError(error, 'fsync', chunkDir);
      }
    }
    return store;
  }

  /**
   * Open an existing store. Checked: `base` and `.chunks` are directories, `.lock` a regular file,
   * and the prefix directories `0000` and `ffff` exist (creation makes `ffff` last, so this
   * catches an interrupted create cheaply; PBS 4 checks only `.chunks`). Then the `.lock`
   * ProcessLocker is opened (one per lock file per process).
   */
  static async open(base: string, options: ChunkStoreOptions = {}): Promise<ChunkStore> {
    const root = checkAbsolute(base);
    checkSyncLevel(options.syncLevel ?? 'filesystem');
    await requireDir(root, 'datastore directory');
    const chunkDir = join(root, '.chunks');
    await requireDir(chunkDir, 'chunk directory');
    const lockPath = join(root, '.lock');
    await requireFile(lockPath, 'lock file');
    for (const at of [0, PREFIX_DIR_COUNT - 1]) {
      const path = join(chunkDir, prefixDirName(at));
      try {
        await requireDir(path, 'prefix directory');
      } catch (error) {
        if (isBurrowError(error, 'DATASTORE_INVALID')) {
          throw invalid(
            `incomplete chunk store at ${root}: ${error.message.replace(/^not a chunk store: /, '')}`,
            path,
            {},
            error,
          );
        }
        throw error;
      }
    }
    const owner = datastoreFileOwner();
    const locker = await ProcessLocker.open(lockPath, options.clock ?? systemClock);
    return new ChunkStore(root, locker, owner, options);
  }

  /** `<base>/.chunks/<first 4 hex>/<64 hex>` (§2.2). */
  chunkPath(digest: Uint8Array): string {
    checkDigest(digest);
    const hex = digestToHex(digest);
    return join(this.chunkDir, hex.slice(0, 4), hex);
  }

  /**
   * Run `work` while holding the in-process mutex of one chunk (by digest or 64-char hex), the
   * same one insertChunk and renameCorruptChunk hold. GC's sweep stats and unlinks under it, so a
   * concurrent insert cannot touch a chunk between the sweep's stat and its unlink (§7.2).
   */
  withChunkLock<T>(digest: Uint8Array | string, work: () => Promise<T>): Promise<T> {
    const path =
      typeof digest === 'string'
        ? this.chunkPath(parseDigestHex(digest.toLowerCase()))
        : this.chunkPath(digest);
    return withPathLock(path, work);
  }

  /** Store an encoded chunk under its digest with PBS's rules (§2.3). */
  async insertChunk(blob: Uint8Array, digest: Uint8Array): Promise<InsertResult> {
    const path = this.chunkPath(digest);
    // A valid header is the least a chunk must have; the kind decides the replacement rules.
    const { kind } = parseBlobHeader(blob);
    if (blob.byteLength > MAX_ENCODED_CHUNK_SIZE) {
      // loadChunk refuses such a file, so storing it would only make an unreadable chunk.
      throw new BurrowError(
        'BLOB_TOO_LARGE',
        `chunk ${digestToHex(digest)} is ${blob.byteLength} bytes encoded, more than the ${MAX_ENCODED_CHUNK_SIZE}-byte limit`,
        { details: { size: blob.byteLength, limit: MAX_ENCODED_CHUNK_SIZE } },
      );
    }
    return withPathLock(path, () =>
      this.#insertLocked(path, blob.byteLength, kind, () =>
        this.#blockingWrites && this.syncLevel !== 'file'
          ? this.#writeChunkBlocking(path, blob)
          : this.#writeChunk(path, blob),
      ),
    );
  }

  /**
   * Where a backup's worker thread may write new chunks' temporary files itself
   * (writeChunkTempFileSync) for insertChunkFile to put in place, so that the copy of every new
   * chunk into the page cache leaves the thread that reads and chunks the input. Undefined at
   * sync level `file`, whose fsync per chunk stays with insertChunk.
   */
  chunkFileTarget(): ChunkFileTarget | undefined {
    if (this.syncLevel === 'file') return undefined;
    return { chunkDir: this.chunkDir, owner: this.fileOwner };
  }

  /**
   * insertChunk for a chunk already written to a temporary file beside its final name (from
   * chunkFileTarget): the same rules (§2.3), with the rename of `written.temp` as the write. The
   * temporary file is gone afterwards whatever happened: renamed over the chunk's name, or
   * removed when the stored copy stays (a duplicate) or on an error. `kind` is the blob's.
   */
  async insertChunkFile(
    written: WrittenChunk,
    kind: BlobKind,
    digest: Uint8Array,
  ): Promise<InsertResult> {
    const path = this.chunkPath(digest);
    const { temp, size } = written;
    try {
      if (dirname(temp) !== dirname(path) || !basename(temp).startsWith(`${basename(path)}.tmp_`))
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `${temp} is not a temporary file of chunk ${path}`,
          { details: { temp, path } },
        );
      if (size > MAX_ENCODED_CHUNK_SIZE) {
        throw new BurrowError(
          'BLOB_TOO_LARGE',
          `chunk ${digestToHex(digest)} is ${size} bytes encoded, more than the ${MAX_ENCODED_CHUNK_SIZE}-byte limit`,
          { details: { size, limit: MAX_ENCODED_CHUNK_SIZE } },
        );
      }
      const result = await withPathLock(path, () =>
        this.#insertLocked(path, size, kind, () => this.#putTempFile(temp, path)),
      );
      if (result.duplicate) rmSync(temp, { force: true });
      return result;
    } catch (error) {
      rmSync(temp, { force: true });
      throw error;
    }
  }

  /**
   * Whether the store already holds a usable chunk under `digest`, so that a local backup can
   * reference it without encoding and inserting it first. Usable: a regular file that is not
   * empty and whose blob magic is of the same family (`encrypted` or not) as the caller's
   * chunks; insertChunk would replace an empty file and refuses to let the two families share a
   * digest, so for those the caller must insert. A usable chunk is touched as insertChunk
   * touches a duplicate, under the same lock, so that a running GC keeps it (§7.2). Returns its
   * file size, or undefined (the caller then inserts as usual).
   */
  async touchIfStored(digest: Uint8Array, encrypted: boolean): Promise<number | undefined> {
    const path = this.chunkPath(digest);
    return withPathLock(path, async () => {
      const size = await this.#usableChunkSize(path, encrypted);
      return size !== undefined && touchAtime(path) ? size : undefined;
    });
  }

  /**
   * touchIfStored's check alone, changing nothing (no touch, no lock): the file size of a usable
   * stored copy, else undefined. For questions that must not modify the store (a dry-run
   * backup's "would this chunk be reused?"); a chunk to be referenced is touched with
   * touchIfStored instead, or GC could take it.
   */
  async storedChunkSize(digest: Uint8Array, encrypted: boolean): Promise<number | undefined> {
    return this.#usableChunkSize(this.chunkPath(digest), encrypted);
  }

  /** A regular, non-empty chunk file whose magic is of the wanted family: its size. */
  async #usableChunkSize(path: string, encrypted: boolean): Promise<number | undefined> {
    const existing = this.#blockingWrites ? lstatIfExistsSync(path) : await lstatIfExists(path);
    if (existing === undefined || !existing.isFile() || existing.size === 0) return undefined;
    // Eight bytes: not worth a thread-pool round trip. A file too short for a magic is for
    // insertChunk (and verify) to deal with, not a match.
    const kind = blobKindOf(readMagicSync(path));
    if (kind === undefined || isEncryptedKind(kind) !== encrypted) return undefined;
    return existing.size;
  }

  /**
   * The rules of §2.3 for a new chunk of `newSize` bytes and blob kind `kind` at `path`, run
   * under the chunk's lock: a duplicate that stays, or `write` (which puts the new copy there).
   */
  async #insertLocked(
    path: string,
    newSize: number,
    kind: BlobKind,
    write: () => void | Promise<void>,
  ): Promise<InsertResult> {
    const encrypted = isEncryptedKind(kind);
    const compressed = isCompressedKind(kind);
    const existing = this.#blockingWrites ? lstatIfExistsSync(path) : await lstatIfExists(path);
    if (existing !== undefined) {
      // lstat, not stat: a symlink here is damage (or an attack), not a chunk. PBS follows it.
      if (!existing.isFile()) {
        throw invalid(`chunk path ${path} is ${describeType(existing)}, not a regular file`, path, {
          digest: path.slice(-64),
        });
      }
      const oldSize = existing.size;
      let keep: boolean;
      if (oldSize === newSize) {
        keep = true;
      } else if (oldSize === 0) {
        this.#onWarning(`found empty chunk ${path.slice(-64)} in store ${this.base}, overwriting`);
        keep = false;
      } else if (encrypted) {
        const magic = await this.#readMagic(path);
        if (magic === undefined) {
          keep = false; // vanished since the lstat: write ours
        } else {
          const oldKind = blobKindOf(magic);
          if (oldKind === 'plain' || oldKind === 'zstd') {
            // The digest of an encrypted chunk is keyed with the id key, so a plain chunk can
            // never legitimately share it: refuse rather than let either copy win.
            throw new BurrowError(
              'CHUNK_CONFLICT',
              `refusing to replace unencrypted chunk ${path} with an encrypted chunk of the same digest`,
              { details: { path, existingKind: oldKind, existingSize: oldSize, newSize } },
            );
          }
          if (oldKind === 'encrypted' && !compressed) {
            // Same key, same data, no compression: the sizes must match, so one copy is bad.
            throw new BurrowError(
              'CHUNK_CONFLICT',
              `refusing to replace encrypted chunk ${path} (${oldSize} bytes) with another uncompressed encrypted chunk of a different size (${newSize} bytes)`,
              { details: { path, existingKind: oldKind, existingSize: oldSize, newSize } },
            );
          }
          // zstd output differs between versions, so neither copy is provably wrong: the first
          // one stays (verify finds bit rot).
          keep = true;
        }
      } else {
        // Unencrypted: the smaller copy stays.
        keep = oldSize < newSize;
      }
      if (keep) {
        if (touchAtime(path)) return { duplicate: true, encodedSize: oldSize };
        // Removed between our lstat and the touch: storing ours gives the state an insert
        // after the removal would have given.
      }
    }
    await write();
    this.#wrote(newSize);
    return { duplicate: false, encodedSize: newSize };
  }

  /** Counts new chunk bytes; starts a background syncfs every EARLY_SYNC_BYTES (see there). */
  #wrote(bytes: number): void {
    if (this.syncLevel !== 'filesystem') return;
    this.#unsynced += bytes;
    if (this.#unsynced < EARLY_SYNC_BYTES || this.#earlySync !== undefined) return;
    this.#unsynced = 0;
    this.#earlySync = this.#syncfs()
      // Kept for the next syncFilesystem(): a syncfs on a handle opened after a writeback error
      // would not report it (errseq), so it must not be lost here.
      .catch((error: unknown) => {
        this.#earlySyncError ??= error instanceof Error ? error : new Error(String(error));
      })
      .finally(() => {
        this.#earlySync = undefined;
      });
  }

  /** #writeChunk's steps with blocking calls (blockingWrites; no fsync at this sync level). */
  #writeChunkBlocking(path: string, blob: Uint8Array): void {
    this.#putTempFile(writeChunkTempFileSync(path, blob, this.fileOwner), path);
  }

  /**
   * Renames a chunk's complete temporary file over its name; at sync level `file` the file is
   * synced first and the prefix directory after, as #writeChunk does. Removes it on failure.
   */
  #putTempFile(temp: string, path: string): void {
    try {
      if (this.syncLevel === 'file') fsyncFileSync(temp);
      renameSync(temp, path);
    } catch (error) {
      rmSync(temp, { force: true });
      throw fsError(error, 'insert chunk', path, { temp });
    }
    if (this.syncLevel === 'file') {
      try {
        fsyncFileSync(dirname(path));
      } catch (error) {
        throw fsError(error, 'fsync prefix directory', dirname(path));
      }
    }
  }

  /** The first 8 bytes of an existing chunk file, or undefined if it vanished. */
  async #readMagic(path: string): Promise<Uint8Array | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return undefined;
      if (errnoCode(error) === 'ELOOP')
        throw invalid(`chunk path ${path} is a symbolic link`, path, {}, error);
      throw fsError(error, 'open chunk', path);
    }
    try {
      const magic = new Uint8Array(8);
      let got = 0;
      while (got < magic.byteLength) {
        const { bytesRead } = await handle.read(magic, got, magic.byteLength - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got < magic.byteLength) {
        // PBS fails here too (its read of the magic runs short): a truncated chunk is for verify
        // to retire, not for an upload to paper over.
        throw invalid(
          `existing chunk file ${path} is ${got} bytes long, too short for a blob magic number`,
          path,
          {
            size: got,
          },
        );
      }
      return magic;
    } catch (error) {
      throw fsError(error, 'read chunk', path);
    } finally {
      await handle.close();
    }
  }

  async #writeChunk(path: string, blob: Uint8Array): Promise<void> {
    const dir = dirname(path);
    let handle: FileHandle | undefined;
    let temp = '';
    for (let attempt = 0; handle === undefined; attempt++) {
      temp = tempPathFor(path);
      try {
        handle = await open(temp, CHUNK_TEMP_FLAGS, CHUNK_FILE_MODE);
      } catch (error) {
        const code = errnoCode(error);
        if (code === 'EEXIST' && attempt < 10) continue;
        throw chunkTempError(error, path, temp);
      }
    }
    try {
      try {
        // Owner first (PBS 4 chowns the temp file, §2.3 step 3): the chunk never appears under
        // its name with another owner. Then the exact mode whatever the umask, as PBS sets it.
        await chownHandle(handle, this.fileOwner);
        await handle.chmod(CHUNK_FILE_MODE);
        await handle.writeFile(blob);
        if (this.syncLevel === 'file') await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, path);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => {});
      throw fsError(error, 'insert chunk', path, { temp });
    }
    if (this.syncLevel === 'file') {
      try {
        await fsyncDirectory(dir);
      } catch (error) {
        throw fsError(error, 'fsync prefix directory', dir);
      }
    }
  }

  /** The raw blob bytes of a chunk (not decoded or checked). NOT_FOUND names the path. */
  async loadChunk(digest: Uint8Array): Promise<Uint8Array> {
    const path = this.chunkPath(digest);
    let handle: FileHandle;
    try {
      handle = await open(path, CHUNK_OPEN_FLAGS);
    } catch (error) {
      throw chunkOpenError(error, path);
    }
    try {
      const st = await handle.stat();
      checkChunkStat(st, path);
      const out = allocUninitialized(st.size);
      let got = 0;
      while (got < out.byteLength) {
        const { bytesRead } = await handle.read(out, got, out.byteLength - got, got);
        if (bytesRead === 0) break; // shrank under us; the blob decoder reports the truncation
        got += bytesRead;
      }
      return got === out.byteLength ? out : out.subarray(0, got);
    } catch (error) {
      throw fsError(error, 'read chunk', path);
    } finally {
      await handle.close();
    }
  }

  /** Set the chunk's atime to now, keeping its mtime (§2.4); false when the chunk does not exist. */
  touchChunk(digest: Uint8Array): Promise<boolean> {
    // touchAtime is one short synchronous syscall; the executor turns its errors into rejections.
    return new Promise((done) => done(touchAtime(this.chunkPath(digest))));
  }

  /**
   * Every chunk file name in prefix order (§2.5). Names of 64 hex characters (either case),
   * optionally followed by 6 more characters, are yielded; `.bad` marks retired copies; temp
   * files (yielded with `temp` only when `withTempFiles`) and everything else are skipped. A
   * missing prefix directory is skipped; any other failure ends the iteration with a BurrowError.
   * `onProgress` gets 1..99 as the prefixes pass.
   */
  async *chunkIterator(
    onProgress?: (percent: number) => void,
    options: { withTempFiles?: boolean } = {},
  ): AsyncGenerator<ChunkEntry, void, undefined> {
    const withTempFiles = options.withTempFiles === true;
    // One listing of `.chunks` says which prefix directories exist, so a damaged store with many
    // missing ones does not cost a failed readdir (and a thrown error) for each.
    const present = new Uint8Array(PREFIX_DIR_COUNT);
    try {
      for (const name of readdirSync(this.chunkDir)) {
        if (PREFIX_NAME_RE.test(name)) present[parseInt(name, 16)] = 1;
      }
    } catch (error) {
      const code = errnoCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw invalid(
          `not a chunk store: chunk directory ${this.chunkDir} does not exist or is no directory`,
          this.chunkDir,
          { errno: code },
          error,
        );
      }
      throw fsError(error, 'list chunk directory', this.chunkDir);
    }
    const progress = percentReporter(PREFIX_DIR_COUNT, onProgress);
    const slice = new TimeSlice();
    for (let at = 0; at < PREFIX_DIR_COUNT; at++) {
      if (slice.due()) await slice.pause();
      progress(at);
      if (present[at] === 0) continue;
      const dir = `${this.chunkDir}/${prefixDirName(at)}`;
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch (error) {
        const code = errnoCode(error);
        if (code === 'ENOENT') continue;
        if (code === 'ENOTDIR') {
          throw invalid(`prefix directory ${dir} is not a directory`, dir, { errno: code }, error);
        }
        throw fsError(error, 'read prefix directory', dir);
      }
      for (const name of names) {
        const temp = !isChunkFileName(name);
        if (temp && !(withTempFiles && CHUNK_TEMP_NAME_RE.test(name))) continue;
        yield {
          name,
          path: `${dir}/${name}`,
          digestHex: name.slice(0, 64).toLowerCase(),
          bad: !temp && name.endsWith('.bad'),
          temp,
        };
      }
    }
  }

  /**
   * Retire a corrupt chunk (§2.7): rename `<hex>` to `<hex>.<n>.bad` with the smallest free n in
   * 0..8, else `.9.bad` (overwritten). Returns the new path, or undefined when the chunk is gone.
   */
  renameCorruptChunk(digest: Uint8Array): Promise<string | undefined> {
    const path = this.chunkPath(digest);
    return withPathLock(path, async () => {
      const st = await lstatIfExists(path);
      if (st === undefined) return undefined;
      if (st.isDirectory())
        throw invalid(`chunk path ${path} is a directory, not a chunk file`, path);
      let target = `${path}.${MAX_BAD_COPIES - 1}.bad`;
      for (let n = 0; n < MAX_BAD_COPIES - 1; n++) {
        const candidate = `${path}.${n}.bad`;
        if ((await lstatIfExists(candidate)) === undefined) {
          target = candidate;
          break;
        }
      }
      try {
        await rename(path, target);
      } catch (error) {
        if (errnoCode(error) === 'ENOENT') return undefined;
        throw fsError(error, 'rename corrupt chunk', path, { target });
      }
      return target;
    });
  }

  /** lstat of a chunk file for GC's sweep; undefined when it does not exist (any more). */
  async statChunkFile(path: string): Promise<ChunkFileStat | undefined> {
    let st;
    try {
      // bigint: atime seconds must be exact, and a double of nanosecond epoch times is not.
      st = await lstat(path, { bigint: true });
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return undefined;
      throw fsError(error, 'stat chunk', path);
    }
    const ns = st.atimeNs;
    const seconds = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
    return { atimeSeconds: Number(seconds), size: Number(st.size), isFile: st.isFile() };
  }

  /** Shared `.lock` guard for a writer (§2.6); LOCKED when another process holds it exclusively. */
  tryShared(): ProcessLockGuard {
    return this.#locker.tryShared();
  }

  /** Exclusive `.lock` guard for GC (§2.6); LOCKED when another process holds any lock. */
  tryExclusive(): ProcessLockGuard {
    return this.#locker.tryExclusive();
  }

  /** Oldest acquisition time (epoch seconds) of this process's live shared guards. */
  oldestWriter(): number | undefined {
    return this.#locker.oldestWriter();
  }

  /**
   * `syncfs(2)` on the store's filesystem when the sync level is `filesystem` (§10.3); a failure
   * of a background syncfs since the last call is thrown here.
   */
  async syncFilesystem(): Promise<void> {
    if (this.syncLevel !== 'filesystem') return;
    await this.#earlySync;
    const early = this.#earlySyncError;
    if (early !== undefined) {
      this.#earlySyncError = undefined;
      throw early;
    }
    await this.#syncfs();
  }

  async #syncfs(): Promise<void> {
    let handle: FileHandle;
    try {
      handle = await open(this.base, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    } catch (error) {
      throw fsError(error, 'open', this.base);
    }
    try {
      await this.#syncfsCall(handle.fd);
    } finally {
      await handle.close();
    }
  }

  /**
   * The atime safety check (§7.6): insert (or touch) the 4 MiB zero chunk, wait a second for the
   * kernel's timestamp granularity, then stat, touch, stat. GC_ATIME_CHECK_FAILED unless the
   * atime advanced; a file replaced between the two stats is checked once more.
   */
  async atimeSafetyCheck(options: AtimeCheckOptions = {}): Promise<void> {
    const sleep = options.sleep ?? this.#sleep;
    const digest = parseDigestHex(ZERO_CHUNK_DIGEST_HEX);
    const path = this.chunkPath(digest);
    for (let attempt = 0; ; attempt++) {
      const { duplicate } = await this.insertChunk(zeroChunk(), digest);
      await sleep(1000);
      const before = await lstatIfExistsBig(path);
      const touched = touchAtime(path);
      const after = await lstatIfExistsBig(path);
      const changed =
        before === undefined || after === undefined || !touched || before.ino !== after.ino;
      if (changed) {
        if (attempt === 0) continue;
        throw new BurrowError(
          'GC_ATIME_CHECK_FAILED',
          `access time safety check: chunk ${path} changed twice during the check, cannot proceed`,
          { details: { path } },
        );
      }
      if (!before.isFile()) {
        throw invalid(`chunk path ${path} is not a regular file`, path);
      }
      if (after.atimeNs <= before.atimeNs) {
        throw new BurrowError(
          'GC_ATIME_CHECK_FAILED',
          `access time safety check using ${duplicate ? 'pre-existing' : 'newly inserted'} chunk ${path} failed: ` +
            `its atime did not advance when set (before ${formatNs(before.atimeNs)}, after ${formatNs(after.atimeNs)}); ` +
            'this filesystem does not keep access times, so garbage collection would be unsafe',
          {
            details: {
              path,
              preExisting: duplicate,
              atimeBefore: formatNs(before.atimeNs),
              atimeAfter: formatNs(after.atimeNs),
              mtimeBefore: formatNs(before.mtimeNs),
              mtimeAfter: formatNs(after.mtimeNs),
            },
          },
        );
      }
      return;
    }
  }
}

async function lstatIfExistsBig(path: string) {
  try {
    return await lstat(path, { bigint: true });
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw fsError(error, 'stat', path);
  }
}

/** Epoch nanoseconds as an ISO time with nanoseconds, for messages. */
function formatNs(ns: bigint): string {
  const ms = ns / 1_000_000n;
  const frac = (((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n)
    .toString()
    .padStart(9, '0');
  const iso = new Date(Number(ms)).toISOString();
  return `${iso.slice(0, 19)}.${frac}Z`;
}
