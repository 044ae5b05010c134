/**
 * The chunk store's `.lock` (pbs-formats §2.6): POSIX record locks (fcntl), so that Burrow and
 * PBS see each other's locks on the same datastore. Index writers hold it shared, GC exclusive.
 *
 * fcntl locks belong to the process, not to a file descriptor, and closing *any* descriptor of
 * the file drops all of them. So there is one ProcessLocker per lock file per process (a
 * registry), it opens the file exactly once and never closes it, and in-process guards are
 * counted here: one F_RDLCK stands for all shared guards, F_WRLCK for the one exclusive guard.
 * Within one process shared and exclusive guards coexist (GC and backups in the same daemon);
 * the exclusive lock only keeps out *other* processes whose oldest writer we cannot know.
 *
 * Nothing else may open `.lock` while a process holds guards on it: its close would silently
 * release them. Go through ProcessLocker.open().
 */
import { constants, fstat, open } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import { BurrowError } from '../lib/errors.js';
import { fcntlSetLock } from '../lib/native-fs.js';

export interface ProcessLockGuard {
  release(): void;
}

const openFd = promisify(open);
const fstatFd = promisify(fstat);

/** Lockers by resolved path, and by inode so two spellings of one file share one locker. */
const byPath = new Map<string, Promise<ProcessLocker>>();
const byInode = new Map<string, ProcessLocker>();
/**
 * Descriptors opened for a second path to an inode that already has a locker: closing them
 * would drop that locker's locks, so they stay open for the life of the process.
 */
const strayFds: number[] = [];

export class ProcessLocker {
  readonly path: string;
  readonly #fd: number;
  /** `dev:ino` of the file the fd holds, to notice when the path names another file. */
  readonly #inode: string;
  readonly #clock: Clock;
  /** Live shared guards and the epoch second each was taken (for oldestWriter). */
  readonly #shared = new Map<number, number>();
  #nextGuardId = 1;
  #exclusive = false;

  private constructor(path: string, fd: number, inode: string, clock: Clock) {
    this.path = path;
    this.#fd = fd;
    this.#inode = inode;
    this.#clock = clock;
  }

  /**
   * One instance per lock path per process (a registry), opening the file once (created if
   * missing, mode 0644 before umask, as PBS does). The clock of the first open is kept.
   */
  static async open(lockPath: string, clock: Clock = systemClock): Promise<ProcessLocker> {
    const key = resolve(lockPath);
    const known = byPath.get(key);
    if (known !== undefined) {
      const locker = await known;
      // A store removed and created again at the same path has a new `.lock`; the old locker's
      // fd points at the deleted file, whose locks no other process can see any more.
      if (await locker.#stillAtPath()) return locker;
      if (byPath.get(key) === known) {
        byPath.delete(key);
        byInode.delete(locker.#inode);
      }
      return ProcessLocker.open(lockPath, clock);
    }
    const pending = ProcessLocker.#openNew(key, clock);
    byPath.set(key, pending);
    pending.catch(() => byPath.delete(key));
    return pending;
  }

  async #stillAtPath(): Promise<boolean> {
    try {
      const st = await stat(this.path);
      return `${st.dev}:${st.ino}` === this.#inode;
    } catch {
      return false;
    }
  }

  static async #openNew(path: string, clock: Clock): Promise<ProcessLocker> {
    let fd: number;
    try {
      // libuv adds O_CLOEXEC to every open, so child processes never inherit (and keep) the lock.
      fd = await openFd(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      throw new BurrowError(
        e.code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
        `cannot open lock file ${path}: ${e.code ?? String(error)}`,
        {
          details: { path, errnoName: e.code },
          cause: error,
        },
      );
    }
    const st = await fstatFd(fd);
    const inode = `${st.dev}:${st.ino}`;
    const existing = byInode.get(inode);
    if (existing !== undefined) {
      strayFds.push(fd);
      return existing;
    }
    const locker = new ProcessLocker(path, fd, inode, clock);
    byInode.set(inode, locker);
    return locker;
  }

  /**
   * Shared guard (F_RDLCK); records clock.nowSeconds() for oldestWriter. Throws
   * BurrowError('LOCKED') if another process holds the exclusive lock.
   */
  tryShared(): ProcessLockGuard {
    // While this process holds F_WRLCK or F_RDLCK already, no new fcntl call is needed.
    if (this.#shared.size === 0 && !this.#exclusive && !fcntlSetLock(this.#fd, 'read')) {
      throw new BurrowError(
        'LOCKED',
        `unable to get shared lock on ${this.path}: another process holds it exclusively (garbage collection?)`,
        {
          details: { path: this.path, mode: 'shared' },
        },
      );
    }
    const id = this.#nextGuardId++;
    this.#shared.set(id, this.#clock.nowSeconds());
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#shared.delete(id);
        if (this.#shared.size === 0 && !this.#exclusive) this.#set('unlock');
      },
    };
  }

  /**
   * Exclusive guard (F_WRLCK); throws BurrowError('LOCKED') if any other process holds a lock,
   * or if this process holds the exclusive guard already. Downgrades back to shared on release
   * if in-process shared guards remain.
   */
  tryExclusive(): ProcessLockGuard {
    if (this.#exclusive) {
      throw new BurrowError(
        'LOCKED',
        `unable to get exclusive lock on ${this.path}: this process holds it exclusively already`,
        {
          details: { path: this.path, mode: 'exclusive' },
        },
      );
    }
    // Upgrading our own F_RDLCK is atomic in the kernel and fails only if another process has a lock.
    if (!fcntlSetLock(this.#fd, 'write')) {
      throw new BurrowError(
        'LOCKED',
        `unable to get exclusive lock on ${this.path}: another process holds a lock on it (a running backup or garbage collection?)`,
        {
          details: { path: this.path, mode: 'exclusive' },
        },
      );
    }
    this.#exclusive = true;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#exclusive = false;
        this.#set(this.#shared.size > 0 ? 'read' : 'unlock');
      },
    };
  }

  /** min acquisition time over live shared guards of this process, or undefined. */
  oldestWriter(): number | undefined {
    let oldest: number | undefined;
    for (const time of this.#shared.values())
      if (oldest === undefined || time < oldest) oldest = time;
    return oldest;
  }

  /** Downgrade and unlock never conflict with anyone; a failure means the kernel state is not what we think. */
  #set(kind: 'read' | 'unlock'): void {
    if (!fcntlSetLock(this.#fd, kind)) {
      throw new BurrowError(
        'INTERNAL',
        `fcntl ${kind} on ${this.path} was refused, which cannot happen for a downgrade or unlock`,
        {
          details: { path: this.path },
        },
      );
    }
  }
}
