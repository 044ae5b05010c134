/**
 * The process facts a UPID carries (pbs-formats §11.1): the node name, and the process start
 * time from /proc, which together with the pid tells a live task owner from a recycled pid.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { BurrowError } from '../lib/errors.js';

/**
 * Field 22 (`starttime`, clock ticks since boot) of a /proc/<pid>/stat text. The second field is
 * the command name in parentheses and may itself contain spaces and ')', so the fields are
 * counted from the last ')'. Undefined when the text does not have that shape.
 */
export function parseProcStatStartTime(stat: string): number | undefined {
  const close = stat.lastIndexOf(')');
  if (close < 0) return undefined;
  // After ") " come fields 3 (state), 4 (ppid), ...: field 22 is the 20th of them.
  const rest = stat
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const field = rest[19];
  if (field === undefined || !/^\d+$/.test(field)) return undefined;
  const value = Number(field);
  return Number.isSafeInteger(value) ? value : undefined;
}

/** The start time of process `pid`, or undefined when it does not exist (or /proc cannot tell). */
export function readProcessStartTime(pid: number | 'self'): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  return parseProcStatStartTime(text);
}

let ownStartTime: number | undefined;

/** The pstart of this process, read once. */
export function ownProcessStartTime(): number {
  if (ownStartTime === undefined) {
    const value = readProcessStartTime('self');
    if (value === undefined) {
      throw new BurrowError(
        'IO_ERROR',
        'cannot read the process start time from /proc/self/stat (field 22); tasks need Linux /proc',
        { details: { path: '/proc/self/stat' } },
      );
    }
    ownStartTime = value;
  }
  return ownStartTime;
}

/**
 * Whether the process that a UPID names still runs: the pid exists and its start time matches,
 * so a pid that the kernel handed to a new process does not count.
 */
export function processRunning(pid: number, pstart: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: it exists but belongs to someone else; anything else (ESRCH): it is gone.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const start = readProcessStartTime(pid);
  return start === pstart;
}

const NODE_RE = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$/;

/**
 * The UPID node name: the host name up to the first '.'. A host name that is not a valid label
 * (PBS would refuse to start) gets its stray characters replaced by '-', so tasks still run.
 */
export function nodeNameFromHostname(name: string): string {
  const label = name.split('.')[0] ?? '';
  if (NODE_RE.test(label)) return label;
  const cleaned = label.replace(/[^a-zA-Z0-9-]/g, '-').replace(/^-+|-+$/g, '');
  return cleaned === '' ? 'localhost' : cleaned;
}

export function localNodeName(): string {
  return nodeNameFromHostname(hostname());
}

export function isValidNodeName(name: string): boolean {
  return NODE_RE.test(name);
}
