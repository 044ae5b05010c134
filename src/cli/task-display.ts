/**
 * How a task looks while `burrow-manager` runs it in the foreground: every task log line as it is
 * written (as PBS's CLI shows a worker's log), plus a progress bar when standard error is a
 * terminal. Piped output gets the plain lines only, so logs and scripts see no control codes.
 */
import type CliProgress from 'cli-progress';
import { createRequire } from 'node:module';
import type { TaskObserver } from '../client/repository.js';
import type { TaskContext, TaskManager } from '../tasks/index.js';
import { formatAuthid, type Authid } from '../types/auth.js';
import { LOCAL_ADMIN_AUTHID } from './manager-context.js';
import type { Printer } from './output.js';

export interface TaskDisplay {
  line(line: string): void;
  progress(fraction: number, text: string): void;
  stop(): void;
}

/** Log lines that only report a percentage (GC, datastore creation, verify). */
const PROGRESS_LINE_RE = /^(?:processed \d+% \(|Chunkstore create: \d+%$|percentage done: )/;

/** A display for one task; `tty` defaults to whether standard error is a terminal. */
export function createTaskDisplay(printer: Printer, tty = process.stderr.isTTY): TaskDisplay {
  if (!tty) {
    return {
      line: (line) => printer.info(line),
      progress: () => {},
      stop: () => {},
    };
  }
  // Loaded only for a terminal: 19 modules that piped and scripted runs never need.
  const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof CliProgress;
  const multi = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      format: ' {bar} {percentage}% {text}',
      hideCursor: true,
      clearOnComplete: true,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let bar: CliProgress.SingleBar | undefined;
  let stopped = false;
  return {
    // While the bar shows, lines go through its buffer so they scroll above it instead of tearing
    // it; before the first bar (and after the end) they go straight out. Percentage lines say
    // what the bar shows; the task log keeps them.
    line: (line) => {
      if (bar === undefined || stopped) process.stderr.write(`${line}\n`);
      else if (!PROGRESS_LINE_RE.test(line)) multi.log(`${line}\n`);
    },
    progress: (fraction, text) => {
      if (stopped) return;
      const value = Math.round(fraction * 1000);
      if (bar === undefined) bar = multi.create(1000, value, { text });
      else bar.update(value, { text });
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      if (bar === undefined) return;
      // cli-progress writes buffered lines only when it redraws, and not on stop.
      multi.update();
      multi.stop();
    },
  };
}

/**
 * Run `work` as a task of `root@pam` in the foreground, showing its log and progress. The UPID
 * of a failed task is printed (to standard error in JSON mode) unless the caller reports the
 * failure itself, so its log can be found again with `task log`; on success the caller prints it
 * with the result.
 */
export async function runForegroundTask<T>(
  tasks: TaskManager,
  printer: Printer,
  workerType: string,
  workerId: string | undefined,
  work: (task: TaskContext) => Promise<T>,
  options: { upidOnError?: boolean; authId?: Authid } = {},
): Promise<{ upid: string; result: T }> {
  const display = createTaskDisplay(printer);
  let upid: string | undefined;
  try {
    // The task is recorded as the user who runs it (burrow's local user); admin commands run as root@pam.
    const authId = options.authId === undefined ? LOCAL_ADMIN_AUTHID : formatAuthid(options.authId);
    return await tasks.run(workerType, workerId, authId, work, {
      onLine: (line) => display.line(line),
      onProgress: (fraction, text) => display.progress(fraction, text),
      onStart: (started) => (upid = started),
    });
  } catch (error) {
    display.stop();
    if (upid !== undefined && options.upidOnError !== false) printer.info(`UPID: ${upid}`);
    throw error;
  } finally {
    display.stop();
  }
}

/**
 * Show a task that a repository runs (locally, or on a server whose log the client follows) the
 * way runForegroundTask shows one: its log lines and progress, and its UPID when it fails.
 */
export async function observeTask<T>(
  printer: Printer,
  work: (observer: TaskObserver) => Promise<T>,
): Promise<T> {
  const display = createTaskDisplay(printer);
  let upid: string | undefined;
  try {
    return await work({
      onLine: (line) => display.line(line),
      onProgress: (fraction, text) => display.progress(fraction, text),
      onStart: (started) => (upid = started),
    });
  } catch (error) {
    display.stop();
    if (upid !== undefined) printer.info(`UPID: ${upid}`);
    throw error;
  } finally {
    display.stop();
  }
}
