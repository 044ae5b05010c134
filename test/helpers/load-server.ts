/**
 * `burrow-manager serve` as a separate process for the load test and the server benchmark: a free
 * port on 127.0.0.1 (read from its `listening on` line), the certificate fingerprint, its JSON log
 * lines on stderr kept for inspection, its CPU time from /proc, and a graceful stop (SIGTERM).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  readonly fingerprint: string;
  /** Every stderr line so far (pino JSON lines, and anything else the process printed). */
  readonly logLines: () => string[];
  /** SIGTERM, then the exit status (null when it died by a signal). After `ms`: SIGKILL. */
  stop(ms?: number): Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartServerProcessOptions {
  /** The command line that runs burrow-manager, e.g. [node, 'dist/cli/burrow-manager.js']. */
  command: readonly string[];
  /** --config-dir / --run-dir / --log-dir options. */
  dirArgs: readonly string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Give up when it has not printed its address after this long (default 60 s). */
  startTimeoutMs?: number;
}

const LISTENING =
  /listening on https:\/\/127\.0\.0\.1:(\d+)\nfingerprint \(sha256\): ([0-9a-f:]+)\n/;

export function startServerProcess(o: StartServerProcessOptions): Promise<ServerProcess> {
  const [cmd, ...pre] = o.command;
  if (cmd === undefined) throw new Error('no server command');
  const child = spawn(cmd, [...pre, ...o.dirArgs, 'serve', '--listen', '127.0.0.1:0'], {
    cwd: o.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BURROW_LOG_LEVEL: 'info', ...o.env },
  });
  const lines: string[] = [];
  let partial = '';
  child.stderr?.on('data', (d: Buffer) => {
    const parts = (partial + d.toString('utf8')).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
  });
  const exit = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (status, signal) => {
      if (partial !== '') lines.push(partial);
      partial = '';
      resolve({ status, signal });
    }),
  );
  const stop = async (
    ms = 30_000,
  ): Promise<{ status: number | null; signal: NodeJS.Signals | null }> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    try {
      return await exit;
    } finally {
      clearTimeout(timer);
    }
  };
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server did not start within ${o.startTimeoutMs ?? 60_000} ms`));
    }, o.startTimeoutMs ?? 60_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString('utf8');
      const m = LISTENING.exec(out);
      if (m === null) return;
      clearTimeout(timer);
      resolve({
        child,
        pid: child.pid ?? 0,
        port: Number(m[1]),
        fingerprint: m[2] ?? '',
        logLines: () => [...lines],
        stop,
      });
    });
    void exit.then(({ status, signal }) => {
      clearTimeout(timer);
      reject(
        new Error(
          `the server exited (${status ?? signal}) before listening: ${lines.slice(-20).join('\n')}`,
        ),
      );
    });
  });
}

/** Clock ticks per second of /proc times: USER_HZ, 100 on every Linux architecture Node runs on. */
const USER_HZ = 100;

/** user + system CPU seconds of a running process (all its threads), from /proc/<pid>/stat. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; the fields after it are plain numbers.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / USER_HZ;
}

export interface LogSummary {
  errors: string[];
  warnings: string[];
  /** Lines that are not pino JSON (crash traces, Node warnings). */
  other: string[];
  total: number;
}

/** Sorts a server's stderr lines by pino level; non-JSON lines go to `other`. */
export function summarizeLog(lines: readonly string[]): LogSummary {
  const out: LogSummary = { errors: [], warnings: [], other: [], total: 0 };
  for (const line of lines) {
    if (line.trim() === '') continue;
    out.total++;
    let level: unknown;
    try {
      level = (JSON.parse(line) as { level?: unknown }).level;
    } catch {
      out.other.push(line);
      continue;
    }
    if (level === 'error' || level === 'fatal' || level === 50 || level === 60)
      out.errors.push(line);
    else if (level === 'warn' || level === 40) out.warnings.push(line);
  }
  return out;
}
