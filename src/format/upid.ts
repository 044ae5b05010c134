/**
 * UPID, the task identifier (pbs-formats §11.1, §11.2):
 * `UPID:<node>:<pid>:<pstart>:<task_id>:<starttime>:<worker_type>:<worker_id>:<auth_id>:`
 * with uppercase hex numbers zero-padded to at least 8 digits and the worker ID escaped with
 * systemd unit escaping. The task log of a UPID lives at `tasks/<HH>/<UPID>`.
 */
import { BurrowError } from '../lib/errors.js';
import { formatAuthid, parseAuthid } from '../types/auth.js';
import { escapeUnit, unescapeUnit } from './systemd-escape.js';

export interface Upid {
  /** Host name up to the first '.'. */
  readonly node: string;
  readonly pid: number;
  /** Process start time in clock ticks since boot (field 22 of /proc/<pid>/stat). */
  readonly pstart: number;
  /** Per-process task counter; up to 16 hex digits, hence a bigint. */
  readonly taskId: bigint;
  /** Epoch seconds when the task started. */
  readonly startTime: number;
  readonly workerType: string;
  readonly workerId?: string;
  /** The Authid that started the task, in its text form. */
  readonly authId: string;
}

/** What the field widths allow: pid fits a (non-negative) i32, pstart 9 hex digits, starttime 8. */
const MAX_PID = 0x7fff_ffff;
const MAX_PSTART = 0xf_ffff_ffff;
const MAX_STARTTIME = 0xffff_ffff;
const MAX_TASK_ID = (1n << 64n) - 1n;

const NODE_RE = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$/;
/** A worker type may not contain ':', '/' or whitespace (it ends up in a file name). */
const WORKER_TYPE_RE = /^[^:/\p{White_Space}]+$/u;
const NO_COLON_OR_SPACE_RE = /^[^:\p{White_Space}]*$/u;

function fail(text: string, reason: string, cause?: unknown): BurrowError {
  return new BurrowError(
    'INVALID_UPID',
    `invalid UPID ${JSON.stringify(text.slice(0, 300))}: ${reason}`,
    {
      details: { value: text },
      cause,
    },
  );
}

const hex8 = (value: number | bigint): string => value.toString(16).toUpperCase().padStart(8, '0');

function checkFields(upid: Upid, shown: string): void {
  if (!NODE_RE.test(upid.node))
    throw fail(shown, `node ${JSON.stringify(upid.node)} is not a host name label`);
  if (!Number.isInteger(upid.pid) || upid.pid < 0 || upid.pid > MAX_PID) {
    throw fail(shown, `pid ${upid.pid} is not in 0..${MAX_PID}`);
  }
  if (!Number.isInteger(upid.pstart) || upid.pstart < 0 || upid.pstart > MAX_PSTART) {
    throw fail(shown, `pstart ${upid.pstart} does not fit 9 hex digits`);
  }
  if (typeof upid.taskId !== 'bigint' || upid.taskId < 0n || upid.taskId > MAX_TASK_ID) {
    throw fail(shown, `task id ${String(upid.taskId)} does not fit 16 hex digits`);
  }
  if (!Number.isInteger(upid.startTime) || upid.startTime < 0 || upid.startTime > MAX_STARTTIME) {
    throw fail(shown, `start time ${upid.startTime} does not fit 8 hex digits`);
  }
  if (!WORKER_TYPE_RE.test(upid.workerType)) {
    throw fail(
      shown,
      `worker type ${JSON.stringify(upid.workerType)} is empty or contains ':', '/' or whitespace`,
    );
  }
  try {
    parseAuthid(upid.authId);
  } catch (error) {
    throw fail(shown, error instanceof Error ? error.message : String(error), error);
  }
}

/** The UPID text. Fields are validated so that the result always parses back to `upid`. */
export function formatUpid(upid: Upid): string {
  checkFields(upid, `${upid.node}:${upid.workerType}`);
  const workerId = upid.workerId === undefined ? '' : escapeUnit(upid.workerId, false);
  return `UPID:${upid.node}:${hex8(upid.pid)}:${hex8(upid.pstart)}:${hex8(upid.taskId)}:${hex8(upid.startTime)}:${upid.workerType}:${workerId}:${upid.authId}:`;
}

function parseHex(
  text: string,
  field: string,
  minDigits: number,
  maxDigits: number,
  upid: string,
): bigint {
  if (text.length < minDigits || text.length > maxDigits || !/^[0-9A-Fa-f]+$/.test(text)) {
    const width = minDigits === maxDigits ? `${minDigits}` : `${minDigits}..${maxDigits}`;
    throw fail(upid, `${field} ${JSON.stringify(text)} is not ${width} hex digits`);
  }
  return BigInt(`0x${text}`);
}

/** Parse a UPID (hex digits in either case). An empty worker ID means none. */
export function parseUpid(text: string): Upid {
  const parts = text.split(':');
  if (parts.length !== 10 || parts[0] !== 'UPID' || parts[9] !== '') {
    throw fail(
      text,
      'expected UPID:<node>:<pid>:<pstart>:<task_id>:<starttime>:<type>:<id>:<authid>:',
    );
  }
  const [
    ,
    node = '',
    pidHex = '',
    pstartHex = '',
    taskHex = '',
    startHex = '',
    workerType = '',
    rawWorkerId = '',
    authId = '',
  ] = parts;
  if (!NODE_RE.test(node))
    throw fail(text, `node ${JSON.stringify(node)} is not a host name label`);
  const pid = parseHex(pidHex, 'pid', 8, 8, text);
  if (pid > BigInt(MAX_PID)) throw fail(text, `pid ${pidHex} does not fit a signed 32-bit integer`);
  const pstart = parseHex(pstartHex, 'pstart', 8, 9, text);
  const taskId = parseHex(taskHex, 'task id', 8, 16, text);
  const startTime = parseHex(startHex, 'start time', 8, 8, text);
  if (!WORKER_TYPE_RE.test(workerType)) {
    throw fail(
      text,
      `worker type ${JSON.stringify(workerType)} is empty or contains '/' or whitespace`,
    );
  }
  if (!NO_COLON_OR_SPACE_RE.test(rawWorkerId))
    throw fail(text, 'the worker ID contains whitespace');
  let workerId: string | undefined;
  if (rawWorkerId !== '') {
    try {
      workerId = unescapeUnit(rawWorkerId);
    } catch (error) {
      throw fail(
        text,
        `bad worker ID escaping: ${error instanceof Error ? error.message : String(error)}`,
        error,
      );
    }
  }
  let canonicalAuthId: string;
  try {
    canonicalAuthId = formatAuthid(parseAuthid(authId));
  } catch (error) {
    throw fail(text, error instanceof Error ? error.message : String(error), error);
  }
  const upid: Upid = {
    node,
    pid: Number(pid),
    pstart: Number(pstart),
    taskId,
    startTime: Number(startTime),
    workerType,
    authId: canonicalAuthId,
  };
  return workerId === undefined ? upid : { ...upid, workerId };
}

/**
 * The task log file relative to the log base (`/var/log/proxmox-backup/`): `tasks/<HH>/<UPID>`
 * with HH = pstart & 0xFF as two uppercase hex digits. The file name is the canonical UPID text
 * (formatUpid), which never contains '/'.
 */
export function taskLogRelativePath(upid: Upid | string): string {
  const value = typeof upid === 'string' ? parseUpid(upid) : upid;
  const text = formatUpid(value);
  const bucket = (value.pstart % 256).toString(16).toUpperCase().padStart(2, '0');
  return `tasks/${bucket}/${text}`;
}
