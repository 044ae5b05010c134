/**
 * The `.active.lock` of the task lists (pbs-formats §11.2): flock(2), file mode 0660, waiting up
 * to 15 s. The task layer takes it through this small function type rather than importing the
 * datastore's lock files, so a caller can hand in `lockFile` (or a test double) instead.
 */
import { closeSync, constants, openSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { BurrowError } from '../lib/errors.js';
import { flockNonBlocking } from '../lib/native-fs.js';

export interface TaskListLock {
  release(): Promise<void>;
}

/** Take the lock file at `path`, shared (readers of the lists) or exclusive (writers). */
export type TaskListLocker = (path: string, exclusive: boolean) => Promise<TaskListLock>;

/** PBS waits this long for `.active.lock`. */
export const TASK_LIST_LOCK_TIMEOUT_MS = 15_000;

/**
 * A locker built on flock(2) through Burrow's native helper, polling until `timeoutMs` has
 * passed. The wait is measured on the monotonic clock, not the injectable Clock: a fake clock
 * that stands still must not make a lock wait forever.
 */
export function flockLocker(timeoutMs: number = TASK_LIST_LOCK_TIMEOUT_MS): TaskListLocker {
  return async (path, exclusive) => {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o660);
    const kind = exclusive ? 'exclusive' : 'shared';
    const deadline = performance.now() + timeoutMs;
    let pause = 2;
    try {
      while (!flockNonBlocking(fd, kind)) {
        if (performance.now() >= deadline) {
          throw new BurrowError(
            'LOCKED',
            `task list lock ${path}: still held by another task after ${timeoutMs / 1000} s`,
            { details: { path, exclusive, timeoutMs } },
          );
        }
        await sleep(pause);
        pause = Math.min(pause * 2, 100);
      }
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    let released = false;
    return {
      release: () => {
        // Closing the descriptor drops the flock; unlocking first would only add a syscall.
        if (!released) {
          released = true;
          closeSync(fd);
        }
        return Promise.resolve();
      },
    };
  };
}
