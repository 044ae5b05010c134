/**
 * Worker tasks (pbs-formats §11): every long operation (GC, verify, prune, later backup and
 * reader sessions) runs as a task with a UPID, a log file `$LOG_DIR/tasks/<HH>/<UPID>` written
 * line by line as it goes, an entry in the `active` list while it runs and in `archive` once it
 * has ended, and a final `TASK ...` line. The files are those PBS writes, so the same readers
 * understand both.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { appendFile, mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic-write.js';
import { systemClock, type Clock } from '../lib/clock.js';
import type { BurrowDirs } from '../lib/dirs.js';
import { tasksDir } from '../lib/dirs.js';
import { BurrowError } from '../lib/errors.js';
import { formatUpid, parseUpid, taskLogRelativePath, type Upid } from '../format/upid.js';
import { isValidNodeName, localNodeName, ownProcessStartTime, processRunning } from './proc.js';
import {
  finalLogText,
  finalStateOfLog,
  parseTaskListLine,
  renderTaskListLine,
  stateFromLogTail,
  statusText,
  type TaskListLine,
  type TaskState,
} from './task-state.js';
import { flockLocker, type TaskListLocker } from './task-list-lock.js';
import { formatLocalRfc3339 } from './time.js';

/** What an operation gets from the task it runs in (the seed's `worker: &dyn TaskState`). */
export interface TaskContext {
  readonly upid: string;
  /** An info line in the task log. A message with line breaks becomes several lines. */
  log(line: string): void;
  /** A warning line (`WARN: <line>`); each call counts towards `TASK WARNINGS: <n>`. */
  warn(line: string): void;
  /** Throws BurrowError('TASK_ABORTED') once an abort was requested. */
  checkAbort(): void;
  /** Aborted (with the TASK_ABORTED error as reason) when an abort is requested. */
  readonly signal: AbortSignal;
  /** Progress for a CLI bar; `fraction` in 0..1. Not written to the log. */
  progress?(fraction: number, text: string): void;
}

export interface TaskRunOptions {
  /** Each log message as written (without the timestamp), including the final `TASK ...` line. */
  onLine?: (line: string) => void;
  /** Receives TaskContext.progress calls. */
  onProgress?: (fraction: number, text: string) => void;
  /** Called with the UPID once the task is registered, before the work starts (for APIs that answer with the UPID). */
  onStart?: (upid: string) => void;
}

export type TaskRunState = 'running' | 'ok' | 'warning' | 'error' | 'unknown';

/** A task as the lists and the status call report it: the UPID, its fields, and how it ended. */
export interface TaskListEntry extends Upid {
  /** The UPID text. */
  readonly upid: string;
  readonly state: TaskRunState;
  /** PBS's status text: `OK`, `WARNINGS: <n>`, the error message or `unknown`; absent while running. */
  readonly status?: string;
  /** Epoch seconds; absent while running. */
  readonly endtime?: number;
}

export interface TaskManagerOptions {
  dirs: BurrowDirs;
  clock?: Clock;
  /** The UPID node name; default: the host name up to the first '.'. */
  node?: string;
  /** How `.active.lock` is taken; default flock(2) through the native helper, 15 s timeout. */
  lock?: TaskListLocker;
}

const ABORT_MESSAGE = 'abort requested - aborting task';
/** PBS reads at most this much of a log's end to find its final state. */
const LOG_TAIL_BYTES = 8192;

/**
 * Task ids count per process, not per TaskManager: pid, pstart and task id together make a UPID
 * unique, so two managers in one process must not hand out the same id.
 */
let nextTaskId = 0n;

/** The tasks of this process that have not ended, by UPID text; abort() looks here. */
const runningTasks = new Map<string, RunningTask>();

class RunningTask {
  warnings = 0;
  abortRequested = false;
  readonly controller = new AbortController();
  #fd: number | undefined;

  constructor(
    readonly upid: string,
    fd: number,
    private readonly clock: Clock,
    private readonly options: TaskRunOptions,
  ) {
    this.#fd = fd;
  }

  write(message: string): void {
    const fd = this.#fd;
    // A worker that keeps logging after its task ended must not write into a reused descriptor.
    if (fd === undefined) return;
    for (const line of message.split(/\r?\n/)) {
      const bytes = Buffer.from(`${formatLocalRfc3339(this.clock.nowSeconds())}: ${line}\n`);
      try {
        let done = 0;
        while (done < bytes.length) done += writeSync(fd, bytes, done);
      } catch {
        // As in PBS, a log that cannot be written (disk full) does not fail the operation.
      }
      if (this.options.onLine !== undefined) {
        try {
          this.options.onLine(line);
        } catch {
          // A display callback must not change the outcome of the task.
        }
      }
    }
  }

  abortError(): BurrowError {
    return new BurrowError('TASK_ABORTED', ABORT_MESSAGE, { details: { upid: this.upid } });
  }

  requestAbort(): void {
    if (this.abortRequested) return;
    this.abortRequested = true;
    this.write('received abort request ...');
    this.controller.abort(this.abortError());
  }

  /** Write the final line and close the log. */
  finish(state: TaskState): void {
    this.write(`TASK ${finalLogText(state)}`);
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd === undefined) return;
    try {
      closeSync(fd);
    } catch {
      // The lines are written; a failing close must not keep the task from being recorded.
    }
  }

  context(): TaskContext {
    return {
      upid: this.upid,
      log: (line) => this.write(line),
      warn: (line) => {
        this.warnings++;
        this.write(`WARN: ${line}`);
      },
      checkAbort: () => {
        if (this.abortRequested) throw this.abortError();
      },
      signal: this.controller.signal,
      progress: (fraction, text) => {
        if (!Number.isFinite(fraction) || this.options.onProgress === undefined) return;
        try {
          this.options.onProgress(Math.min(1, Math.max(0, fraction)), text);
        } catch {
          // See onLine.
        }
      },
    };
  }
}

/** The message of a failure as one non-empty line (it ends up in a one-line status). */
function errorMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const line = text.replace(/\s*\r?\n\s*/g, ' ').trim();
  return line === '' ? 'unknown error' : line;
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

function tryParseUpid(text: string): Upid | undefined {
  try {
    return parseUpid(text);
  } catch {
    return undefined;
  }
}

function entryOf(upid: string, fields: Upid, state: TaskState | undefined): TaskListEntry {
  if (state === undefined) return { ...fields, upid, state: 'running' };
  return { ...fields, upid, state: state.kind, status: statusText(state), endtime: state.endtime };
}

interface ParsedListLine extends TaskListLine {
  readonly fields: Upid;
}

/** A task list file; lines that do not parse (or name no valid UPID) are skipped, as PBS does. */
async function readTaskList(path: string): Promise<ParsedListLine[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (isNotFound(error)) return [];
    throw new BurrowError('IO_ERROR', `cannot read task list ${path}: ${errorMessage(error)}`, {
      details: { path },
      cause: error,
    });
  }
  const lines: ParsedListLine[] = [];
  for (const raw of text.split('\n')) {
    const line = parseTaskListLine(raw);
    const fields = line === undefined ? undefined : tryParseUpid(line.upid);
    if (line !== undefined && fields !== undefined) lines.push({ ...line, fields });
  }
  return lines;
}

export class TaskManager {
  readonly #dirs: BurrowDirs;
  readonly #clock: Clock;
  readonly #node: string | undefined;
  readonly #lock: TaskListLocker;

  constructor(options: TaskManagerOptions) {
    if (options.node !== undefined && !isValidNodeName(options.node)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `node name ${JSON.stringify(options.node)} is not a host name label`,
        { details: { node: options.node } },
      );
    }
    this.#dirs = options.dirs;
    this.#clock = options.clock ?? systemClock;
    this.#node = options.node;
    this.#lock = options.lock ?? flockLocker();
  }

  get #tasksDir(): string {
    return tasksDir(this.#dirs);
  }

  #path(name: string): string {
    return join(this.#tasksDir, name);
  }

  /** The log file of a UPID (validated). */
  logPath(upid: string | Upid): string {
    return join(this.#dirs.logDir, taskLogRelativePath(upid));
  }

  /**
   * Run `work` as a task. The UPID is registered in `active` before the work starts; the final
   * state line is written and the task moved to `archive` however the work ends. The work's
   * error is rethrown after `TASK ERROR: <message>` is logged.
   */
  async run<T>(
    workerType: string,
    workerId: string | undefined,
    authId: string,
    work: (task: TaskContext) => Promise<T>,
    opts: TaskRunOptions = {},
  ): Promise<{ upid: string; result: T }> {
    const fields: Upid = {
      node: this.#node ?? localNodeName(),
      pid: process.pid,
      pstart: ownProcessStartTime(),
      taskId: nextTaskId++,
      startTime: this.#clock.nowSeconds(),
      workerType,
      authId,
      ...(workerId === undefined ? {} : { workerId }),
    };
    // Round trip so the text is the canonical one that taskLogRelativePath and parsers produce.
    const upid = formatUpid(parseUpid(formatUpid(fields)));
    const logPath = this.logPath(upid);

    await mkdir(this.#tasksDir, { recursive: true, mode: 0o755 });
    await mkdir(dirname(logPath), { recursive: true, mode: 0o755 });
    let fd: number;
    try {
      fd = openSync(logPath, 'wx', 0o644);
    } catch (error) {
      throw new BurrowError(
        'IO_ERROR',
        `cannot create task log ${logPath}: ${errorMessage(error)}`,
        {
          details: { path: logPath, upid },
          cause: error,
        },
      );
    }
    const task = new RunningTask(upid, fd, this.#clock, opts);
    runningTasks.set(upid, task);
    try {
      await this.#updateActive(upid, new Map());
    } catch (error) {
      task.finish({
        kind: 'error',
        message: errorMessage(error),
        endtime: this.#clock.nowSeconds(),
      });
      runningTasks.delete(upid);
      throw error;
    }

    let failed = false;
    let failure: unknown;
    let result: T | undefined;
    try {
      opts.onStart?.(upid);
      result = await work(task.context());
    } catch (error) {
      failed = true;
      failure = error;
    }
    const endtime = this.#clock.nowSeconds();
    const state: TaskState = failed
      ? { kind: 'error', message: errorMessage(failure), endtime }
      : task.warnings > 0
        ? { kind: 'warning', count: task.warnings, endtime }
        : { kind: 'ok', endtime };
    task.finish(state);
    runningTasks.delete(upid);
    try {
      await this.#updateActive(undefined, new Map([[upid, state]]));
    } catch {
      // The log already holds the final state, and the next update of the lists (any task start
      // or end, any listing) finds this task no longer running and archives it from its log.
    }
    if (failed) throw failure;
    return { upid, result: result as T };
  }

  /** Whether the task a list line names still runs. */
  #isActive(fields: Upid): boolean {
    if (fields.pid === process.pid && fields.pstart === ownProcessStartTime()) {
      return runningTasks.has(formatUpid(fields));
    }
    return processRunning(fields.pid, fields.pstart);
  }

  /** The end of a task log, or undefined when there is no log. */
  async #readLogTail(fields: Upid): Promise<string | undefined> {
    let handle;
    try {
      handle = await open(this.logPath(fields), 'r');
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    try {
      const { size } = await handle.stat();
      const start = Math.max(0, size - LOG_TAIL_BYTES);
      const buffer = Buffer.alloc(size - start);
      let done = 0;
      while (done < buffer.length) {
        const { bytesRead } = await handle.read(buffer, done, buffer.length - done, start + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      let text = buffer.subarray(0, done).toString('utf8');
      // A tail that starts mid-line would offer a fragment as a line.
      if (start > 0) text = text.slice(text.indexOf('\n') + 1);
      return text;
    } finally {
      await handle.close();
    }
  }

  /**
   * Under the exclusive list lock: move every task of `active` that has ended (its state is
   * known from `finished`, or its process is gone) to `archive`, and append `add`. Ended tasks
   * are archived at once, as PBS does, so `active` holds only running tasks.
   */
  async #updateActive(add: string | undefined, finished: Map<string, TaskState>): Promise<void> {
    await mkdir(this.#tasksDir, { recursive: true, mode: 0o755 });
    const lock = await this.#lock(this.#path('.active.lock'), true);
    try {
      const keep: TaskListLine[] = [];
      const ended: ParsedListLine[] = [];
      for (const line of await readTaskList(this.#path('active'))) {
        const known = finished.get(formatUpid(line.fields));
        if (line.state !== undefined) {
          ended.push(line);
        } else if (known !== undefined) {
          ended.push({ ...line, state: known });
        } else if (this.#isActive(line.fields)) {
          keep.push(line);
        } else {
          const tail = await this.#readLogTail(line.fields);
          const state =
            tail === undefined
              ? { kind: 'unknown' as const, endtime: this.#clock.nowSeconds() }
              : stateFromLogTail(tail, line.fields.startTime);
          ended.push({ ...line, state });
        }
      }
      if (add !== undefined) keep.push({ upid: add });
      await writeFileAtomic(this.#path('active'), keep.map(renderTaskListLine).join(''), {
        mode: 0o660,
      });
      if (ended.length > 0) {
        ended.sort(
          (a, b) =>
            (a.state?.endtime ?? 0) - (b.state?.endtime ?? 0) ||
            a.fields.startTime - b.fields.startTime,
        );
        await appendFile(this.#path('archive'), ended.map(renderTaskListLine).join(''), {
          mode: 0o660,
        });
      }
    } finally {
      await lock.release();
    }
  }

  /**
   * Tasks from `active` (running ones) and then `archive`, `archive.1`, ... (ended ones), each
   * newest first, as PBS lists them. Ended tasks still in `active` are archived first.
   * `limit` 0 or absent means all.
   */
  async list(options: { running?: boolean; limit?: number } = {}): Promise<TaskListEntry[]> {
    try {
      await stat(this.#tasksDir);
    } catch (error) {
      if (isNotFound(error)) return [];
      throw error;
    }
    const lockPath = this.#path('.active.lock');
    let active = await this.#readActiveLocked(lockPath);
    if (active.some((line) => line.state !== undefined || !this.#isActive(line.fields))) {
      await this.#updateActive(undefined, new Map());
      active = await this.#readActiveLocked(lockPath);
    }
    const entries = active.reverse().map((line) => entryOf(line.upid, line.fields, line.state));
    if (!options.running) {
      for (const name of await this.#archiveFiles()) {
        const lines = await readTaskList(this.#path(name));
        for (const line of lines.reverse())
          entries.push(entryOf(line.upid, line.fields, line.state));
      }
    }
    const shown = options.running ? entries.filter((e) => e.state === 'running') : entries;
    const limit = options.limit ?? 0;
    return limit > 0 ? shown.slice(0, limit) : shown;
  }

  async #readActiveLocked(lockPath: string): Promise<ParsedListLine[]> {
    const lock = await this.#lock(lockPath, false);
    try {
      return await readTaskList(this.#path('active'));
    } finally {
      await lock.release();
    }
  }

  /** `archive`, then the rotated plain-text `archive.1`, `archive.2`, ... while they exist. */
  async #archiveFiles(): Promise<string[]> {
    const names = ['archive'];
    for (let n = 1; ; n++) {
      try {
        await stat(this.#path(`archive.${n}`));
      } catch {
        return names;
      }
      names.push(`archive.${n}`);
    }
  }

  /**
   * The state of one task: running while it is registered in this process (or, for another
   * process, while that process lives and the log has no final line), else what its log says.
   * Throws INVALID_UPID for a malformed UPID and NOT_FOUND when the task has no log.
   */
  async status(upid: string): Promise<TaskListEntry> {
    const fields = parseUpid(upid);
    const text = formatUpid(fields);
    if (runningTasks.has(text)) return entryOf(text, fields, undefined);
    const tail = await this.#readLogTail(fields);
    if (tail === undefined) {
      throw new BurrowError('NOT_FOUND', `task ${text} has no log at ${this.logPath(fields)}`, {
        details: { upid: text, path: this.logPath(fields) },
      });
    }
    const final = finalStateOfLog(tail);
    if (final !== undefined) return entryOf(text, fields, final);
    const ownProcess = fields.pid === process.pid && fields.pstart === ownProcessStartTime();
    if (!ownProcess && processRunning(fields.pid, fields.pstart)) {
      return entryOf(text, fields, undefined);
    }
    return entryOf(text, fields, stateFromLogTail(tail, fields.startTime));
  }

  /** The lines of a task's log (without line ends). INVALID_UPID / NOT_FOUND as status(). */
  async readLog(upid: string): Promise<string[]> {
    const path = this.logPath(upid);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if (isNotFound(error)) {
        throw new BurrowError('NOT_FOUND', `task ${upid} has no log at ${path}`, {
          details: { upid, path },
        });
      }
      throw new BurrowError('IO_ERROR', `cannot read task log ${path}: ${errorMessage(error)}`, {
        details: { upid, path },
        cause: error,
      });
    }
    const lines = text.split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    return lines;
  }

  /**
   * Request the abort of a running task of this process: it logs `received abort request ...`,
   * its signal fires and checkAbort() throws from then on. False when no such task runs here.
   */
  abort(upid: string): boolean {
    const task = runningTasks.get(formatUpid(parseUpid(upid)));
    if (task === undefined) return false;
    task.requestAbort();
    return true;
  }
}
