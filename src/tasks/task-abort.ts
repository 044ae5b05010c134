/**
 * Aborting a task that runs in another process. TaskManager.abort() reaches only the tasks of its
 * own process; PBS sends the abort over the owning daemon's command socket. Burrow drops a
 * request file into `$RUN_DIR/task-abort/` instead, named after the owning process, and every
 * process that runs tasks keeps an abort listener (startAbortListener) that picks up its own
 * requests and aborts the task in-process. A file is small, needs no socket protocol, survives
 * a listener that starts a moment late, and is visible to an administrator.
 *
 * Request file: `<pid 8 hex>-<pstart 8+ hex>-<random>`, content the canonical UPID. The listener
 * reacts to directory events and, as a fallback (events can be missed, e.g. on some network
 * file systems), scans every `pollMs`. Files addressed to processes that no longer exist are
 * removed by any listener.
 */
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { BurrowDirs } from '../lib/dirs.js';
import { BurrowError } from '../lib/errors.js';
import { formatUpid, parseUpid } from '../format/upid.js';
import { ownProcessStartTime, processRunning } from './proc.js';
import type { TaskManager } from './task-manager.js';

/** `$RUN_DIR/task-abort`: pending abort requests. */
export const abortRequestDir = (dirs: BurrowDirs): string => join(dirs.runDir, 'task-abort');

/** What an abort request achieved. */
export type AbortOutcome =
  /** The task runs in this process and was told to abort. */
  | 'aborted'
  /** The task's process runs; the request waits for that process's listener. */
  | 'requested'
  /** No such task runs (it ended, or its process is gone). */
  | 'not-running';

const hex = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');
const processPrefix = (pid: number, pstart: number): string => `${hex(pid)}-${hex(pstart)}-`;

/**
 * Ask the task `upid` to abort, wherever it runs on this host. Throws INVALID_UPID for a
 * malformed UPID and IO_ERROR when the request cannot be written.
 */
export async function requestTaskAbort(
  dirs: BurrowDirs,
  tasks: TaskManager,
  upid: string,
): Promise<AbortOutcome> {
  const fields = parseUpid(upid);
  const canonical = formatUpid(fields);
  if (fields.pid === process.pid && fields.pstart === ownProcessStartTime()) {
    return tasks.abort(canonical) ? 'aborted' : 'not-running';
  }
  if (!processRunning(fields.pid, fields.pstart)) return 'not-running';
  const dir = abortRequestDir(dirs);
  const path = join(dir, `${processPrefix(fields.pid, fields.pstart)}${randomUUID()}`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o770 });
    // Written under a name the listener ignores, then renamed: a listener must never find the
    // request empty (it would take it and lose it).
    const temp = `${path}.tmp`;
    await writeFile(temp, canonical, { mode: 0o660 });
    await rename(temp, path);
  } catch (error) {
    throw new BurrowError(
      'IO_ERROR',
      `cannot write abort request ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
      { details: { path, upid: canonical }, cause: error },
    );
  }
  return 'requested';
}

export interface AbortListener {
  /** Look for requests now (also done on directory events and every pollMs). */
  scan(): Promise<void>;
  close(): void;
}

export interface AbortListenerOptions {
  /** Fallback scan interval; default 1000 ms. */
  pollMs?: number;
  /** Called with failures of a scan (they never throw out of the listener). */
  onError?: (error: unknown) => void;
}

const REQUEST_NAME_RE = /^([0-9A-F]{8,})-([0-9A-F]{8,})-[0-9a-f-]+$/;

/**
 * Serve abort requests addressed to this process: each one aborts its task through `tasks`
 * (any TaskManager of this process reaches all of its tasks) and is deleted. The timers do not
 * keep the process alive.
 */
export async function startAbortListener(
  dirs: BurrowDirs,
  tasks: TaskManager,
  options: AbortListenerOptions = {},
): Promise<AbortListener> {
  const dir = abortRequestDir(dirs);
  await mkdir(dir, { recursive: true, mode: 0o770 });
  const own = processPrefix(process.pid, ownProcessStartTime());
  const report = (error: unknown) => {
    try {
      options.onError?.(error);
    } catch {
      // A failing error callback must not break the listener.
    }
  };

  let scanning: Promise<void> | undefined;
  let again = false;
  const scanOnce = async (): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') report(error);
      return;
    }
    for (const name of names) {
      const match = REQUEST_NAME_RE.exec(name);
      if (match === null) continue;
      const path = join(dir, name);
      if (name.startsWith(own)) {
        try {
          const upid = (await readFile(path, 'utf8')).trim();
          await unlink(path);
          tasks.abort(upid);
        } catch (error) {
          // ENOENT: another scan of this process took it first.
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') report(error);
        }
        continue;
      }
      const pid = Number.parseInt(match[1] as string, 16);
      const pstart = Number.parseInt(match[2] as string, 16);
      if (!processRunning(pid, pstart)) {
        await unlink(path).catch(() => undefined);
      }
    }
  };
  const scan = (): Promise<void> => {
    if (scanning !== undefined) {
      // A request that arrives during a scan may have been missed by it: scan once more after.
      again = true;
      return scanning;
    }
    scanning = (async () => {
      try {
        do {
          again = false;
          await scanOnce();
        } while (again);
      } finally {
        scanning = undefined;
      }
    })();
    return scanning;
  };

  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: false }, () => void scan());
    watcher.on('error', report);
  } catch (error) {
    // Polling still works without events.
    report(error);
  }
  const timer = setInterval(() => void scan(), options.pollMs ?? 1000);
  timer.unref();
  await scan();
  return {
    scan,
    close() {
      clearInterval(timer);
      watcher?.close();
    },
  };
}
