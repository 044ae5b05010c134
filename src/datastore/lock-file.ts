/**
 * flock'ed lock files, the PBS 4 scheme of pbs-formats §6.7: group, snapshot and manifest locks
 * (and other runtime locks) are flock(2) locks on small files under `$BURROW_RUN_DIR/locks`,
 * created with mode 0660 (and, for a datastore's locks, its owner: file-owner.ts). flock locks belong to the open file description, so two lockFile()
 * calls in one process exclude each other just as two processes do.
 *
 * Waiting is polling with short sleeps around a non-blocking flock: the event loop never blocks.
 * After locking, the inode of the locked descriptor must still be the file at the path: the owner
 * of a group or snapshot deletes its lock file along with it, and a lock on a deleted file guards
 * nothing. Then we retry with the new file. The lock file itself is deleted by that owner (the
 * datastore), never by release().
 */
import { close, constants, fchmod, fchown, fstat, open } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { BurrowError } from '../lib/errors.js';
import { flockNonBlocking, nativeAvailable, nativeUnavailableReason } from '../lib/native-fs.js';
import { mkdirOwned } from './file-owner.js';
import type { FileOwner } from './file-owner.js';

export interface LockGuard {
  readonly path: string;
  release(): Promise<void>;
}

export interface LockFileOptions {
  exclusive: boolean;
  /** How long to wait for a conflicting holder, in ms; 0 = try once. */
  timeoutMs: number;
  /** What is being locked, for the error message ("backup group vm/100", ...). */
  what: string;
  /**
   * Owner for the lock file and the directories made for it (PBS: backup:backup, §6.7), so the
   * datastore user can lock what a root process created; default: whoever runs the process.
   */
  owner?: FileOwner;
}

/** Mode of lock files, as PBS creates them (group read/write so the API and proxy users can share them). */
export const LOCK_FILE_MODE = 0o660;

const openFd = promisify(open);
const closeFd = promisify(close);
const fstatFd = promisify(fstat);
const fchmodFd = promisify(fchmod);
const fchownFd = promisify(fchown);

/** First poll interval; doubles up to POLL_MAX_MS so a short wait stays short and a long one stays cheap. */
const POLL_START_MS = 5;
const POLL_MAX_MS = 100;
/**
 * How often a lock file may turn out to be replaced before we give up. Each retry means some
 * other holder deleted the file while we waited, which is not contention, so it does not count
 * against the timeout; a bound keeps a pathological loop from spinning forever.
 */
const MAX_REPLACED_RETRIES = 10;

/**
 * Create parent dirs as needed (given to `owner`), open/create the file mode 0660 (and `owner`),
 * flock shared/exclusive, polling
 * until timeoutMs (0 = try once), then check the locked fd's inode equals the inode now at the
 * path (else retry). Timeout → BurrowError('LOCKED', `<what>: ...`).
 */
export async function lockFile(path: string, options: LockFileOptions): Promise<LockGuard> {
  const { exclusive, timeoutMs, what, owner } = options;
  if (!nativeAvailable()) {
    throw new BurrowError(
      'NATIVE_UNAVAILABLE',
      `${what}: cannot lock ${path} without Burrow's native helper: ${nativeUnavailableReason() ?? 'unknown reason'}`,
      {
        details: { path },
      },
    );
  }
  const deadline = Date.now() + Math.max(0, timeoutMs);
  const mode = exclusive ? 'exclusive' : 'shared';

  for (let attempt = 0; ; attempt++) {
    // Inside the loop: whoever deleted a replaced lock file may have removed its directory too.
    await mkdirOwned(dirname(path), owner, { recursive: true }).catch((error: unknown) => {
      const code = (error as NodeJS.ErrnoException).code;
      throw new BurrowError(
        'IO_ERROR',
        `${what}: cannot create lock directory ${dirname(path)}: ${code ?? String(error)}`,
        {
          details: { path, errnoName: code },
          cause: error,
        },
      );
    });
    const fd = await openLockFile(path, what, owner);
    let keep = false;
    try {
      await flockUntil(fd, mode, deadline, path, what, timeoutMs);
      if (await sameInode(fd, path)) {
        keep = true;
        return makeGuard(path, fd);
      }
      if (attempt >= MAX_REPLACED_RETRIES) {
        throw new BurrowError(
          'LOCKED',
          `${what}: lock file ${path} keeps being replaced while locking`,
          {
            details: { path, mode },
          },
        );
      }
    } finally {
      // Closing drops the flock too, so a lock on a replaced file is let go here.
      if (!keep) await closeFd(fd).catch(() => undefined);
    }
  }
}

async function openLockFile(
  path: string,
  what: string,
  owner: FileOwner | undefined,
): Promise<number> {
  let fd: number;
  try {
    fd = await openFd(path, constants.O_RDWR | constants.O_CREAT, LOCK_FILE_MODE);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new BurrowError(
      'IO_ERROR',
      `${what}: cannot open lock file ${path}: ${e.code ?? String(error)}`,
      {
        details: { path, errnoName: e.code },
        cause: error,
      },
    );
  }
  // A lock file created by another user (e.g. PBS as backup:backup) may refuse fchown and
  // fchmod (EPERM); the lock still works, and its owner and mode are not ours to decide.
  const unlessNotPermitted = (error: unknown): void => {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
  };
  try {
    const st = await fstatFd(fd);
    // Owner before mode: a chown may clear mode bits, never set them.
    if (owner !== undefined && (st.uid !== owner.uid || st.gid !== owner.gid)) {
      await fchownFd(fd, owner.uid, owner.gid).catch(unlessNotPermitted);
    }
    // The umask narrows the create mode; PBS sets 0660 explicitly, so do we.
    if ((st.mode & 0o7777) !== LOCK_FILE_MODE) {
      await fchmodFd(fd, LOCK_FILE_MODE).catch(unlessNotPermitted);
    }
  } catch (error) {
    await closeFd(fd).catch(() => undefined);
    throw error;
  }
  return fd;
}

async function flockUntil(
  fd: number,
  mode: 'shared' | 'exclusive',
  deadline: number,
  path: string,
  what: string,
  timeoutMs: number,
): Promise<void> {
  let interval = POLL_START_MS;
  for (;;) {
    if (flockNonBlocking(fd, mode)) return;
    const left = deadline - Date.now();
    if (left <= 0) {
      const waited = timeoutMs > 0 ? ` (waited ${timeoutMs} ms)` : '';
      throw new BurrowError(
        'LOCKED',
        `${what}: ${path} is locked by another task or process${waited}`,
        {
          details: { path, mode, timeoutMs },
        },
      );
    }
    await sleep(Math.min(interval, left));
    interval = Math.min(interval * 2, POLL_MAX_MS);
  }
}

async function sameInode(fd: number, path: string): Promise<boolean> {
  const locked = await fstatFd(fd);
  try {
    const now = await stat(path);
    return now.ino === locked.ino && now.dev === locked.dev;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

function makeGuard(path: string, fd: number): LockGuard {
  let released: Promise<void> | undefined;
  return {
    path,
    release(): Promise<void> {
      released ??= (async () => {
        // Unlock explicitly before closing, so the lock goes even if the descriptor was ever duplicated.
        try {
          flockNonBlocking(fd, 'unlock');
        } finally {
          await closeFd(fd);
        }
      })();
      return released;
    },
  };
}
