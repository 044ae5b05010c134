/**
 * Task end states and the two text forms they take (pbs-formats §11.2): the final log line
 * `<time>: TASK OK | TASK WARNINGS: <n> | TASK ERROR: <message>`, and the status column of the
 * `active`/`archive` lists, `UPID ENDTIME_HEX8 STATUS` with STATUS `OK`, `WARNINGS: <n>`,
 * `unknown` or the bare error message.
 */
import { parseRfc3339 } from './time.js';

export type TaskState =
  | { readonly kind: 'ok'; readonly endtime: number }
  | { readonly kind: 'warning'; readonly count: number; readonly endtime: number }
  | { readonly kind: 'error'; readonly message: string; readonly endtime: number }
  | { readonly kind: 'unknown'; readonly endtime: number };

/** The status text as PBS shows it (task lists, the API's `exitstatus`). */
export function statusText(state: TaskState): string {
  switch (state.kind) {
    case 'ok':
      return 'OK';
    case 'warning':
      return `WARNINGS: ${state.count}`;
    case 'error':
      return state.message;
    case 'unknown':
      return 'unknown';
  }
}

/** What follows `TASK ` on the final log line. */
export function finalLogText(state: TaskState): string {
  return state.kind === 'error' ? `ERROR: ${state.message}` : statusText(state);
}

/**
 * A status text (from a list line, or the final log line after `TASK `) back to a state; the
 * `ERROR: ` prefix is optional, as in PBS, and anything else non-empty is an error message.
 * Undefined for an empty text or a warning count that is not a number.
 */
export function parseStatusText(endtime: number, text: string): TaskState | undefined {
  if (text === 'unknown') return { kind: 'unknown', endtime };
  if (text === 'OK') return { kind: 'ok', endtime };
  if (text.startsWith('WARNINGS: ')) {
    const digits = text.slice('WARNINGS: '.length);
    if (!/^\d+$/.test(digits)) return undefined;
    const count = Number(digits);
    return Number.isSafeInteger(count) ? { kind: 'warning', count, endtime } : undefined;
  }
  if (text === '') return undefined;
  const message = text.startsWith('ERROR: ') ? text.slice('ERROR: '.length) : text;
  return { kind: 'error', message, endtime };
}

/** One line of `active` or `archive`. */
export interface TaskListLine {
  /** The UPID as written in the file. */
  readonly upid: string;
  /** Undefined while the task runs. */
  readonly state?: TaskState;
}

const hex8 = (value: number): string => value.toString(16).toUpperCase().padStart(8, '0');

export function renderTaskListLine(line: TaskListLine): string {
  if (line.state === undefined) return `${line.upid}\n`;
  return `${line.upid} ${hex8(line.state.endtime)} ${statusText(line.state)}\n`;
}

/**
 * Parse a list line: `UPID` or `UPID ENDTIME_HEX STATUS` (STATUS may contain spaces).
 * Undefined when the line has another shape; UPID validity is the caller's business.
 */
export function parseTaskListLine(text: string): TaskListLine | undefined {
  const first = text.indexOf(' ');
  if (first < 0) return text === '' ? undefined : { upid: text };
  const second = text.indexOf(' ', first + 1);
  if (second < 0) return undefined;
  const upid = text.slice(0, first);
  const endHex = text.slice(first + 1, second);
  if (upid === '' || !/^[0-9A-Fa-f]{1,13}$/.test(endHex)) return undefined;
  const state = parseStatusText(Number.parseInt(endHex, 16), text.slice(second + 1));
  return state === undefined ? undefined : { upid, state };
}

function logLines(text: string): string[] {
  const lines = text.split('\n');
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** Split a log line into its timestamp (epoch seconds) and message, if it has one. */
export function splitLogLine(line: string): { time: number; message: string } | undefined {
  const sep = line.indexOf(': ');
  const time = sep < 0 ? undefined : parseRfc3339(line.slice(0, sep));
  return time === undefined ? undefined : { time, message: line.slice(sep + 2) };
}

/** The final state if the last line of a task log (or of its tail) is a `TASK ...` line. */
export function finalStateOfLog(text: string): TaskState | undefined {
  const last = logLines(text).pop();
  const parsed = last === undefined ? undefined : splitLogLine(last);
  if (parsed === undefined || !parsed.message.startsWith('TASK ')) return undefined;
  return parseStatusText(parsed.time, parsed.message.slice('TASK '.length));
}

/**
 * The state a task log records. Only its last line can hold the final state; a log without one
 * (a task that is still running, or whose process died) gives `unknown`, with the time of the
 * last timestamped line as endtime, or `startTime` when no line has a timestamp.
 */
export function stateFromLogTail(tail: string, startTime: number): TaskState {
  const final = finalStateOfLog(tail);
  if (final !== undefined) return final;
  const lines = logLines(tail);
  for (let i = lines.length - 1; i >= 0; i--) {
    const parsed = splitLogLine(lines[i] ?? '');
    if (parsed !== undefined) return { kind: 'unknown', endtime: parsed.time };
  }
  return { kind: 'unknown', endtime: startTime };
}
