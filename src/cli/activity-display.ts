/**
 * Progress for long client work (archive creation, extraction): one status line on standard
 * error that redraws in place on a terminal, with a bar, rate and ETA when the total is known.
 * Piped output gets nothing from here, so logs and scripts see only results and warnings.
 * Warnings go through `line()` so they scroll above the status line instead of tearing it.
 */
import { humanBytes } from './output.js';

export interface ActivityStatus {
  /** Work done so far in bytes (read for create, archive bytes consumed for extract). */
  readonly bytes: number;
  /** The total in bytes when known in advance; enables the bar and the ETA. */
  readonly totalBytes?: number;
  readonly entries: number;
  /** The path being worked on, shortened to fit. */
  readonly path?: string;
}

export interface ActivityDisplay {
  update(status: ActivityStatus): void;
  /** A line for people (a warning), printed above the status line. */
  line(text: string): void;
  stop(): void;
}

const REDRAW_MS = 100;
const BAR_WIDTH = 24;

export function formatRate(bytesPerSecond: number): string {
  return `${humanBytes(Math.round(bytesPerSecond))}/s`;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, '0')}m`
    : m > 0
      ? `${m}m${String(rest).padStart(2, '0')}s`
      : `${rest}s`;
}

/** The status line's text, without control codes (pure, for tests). */
export function renderActivity(
  status: ActivityStatus,
  elapsedSeconds: number,
  width = 100,
): string {
  const rate = elapsedSeconds > 0 ? status.bytes / elapsedSeconds : 0;
  const parts: string[] = [];
  if (status.totalBytes !== undefined && status.totalBytes > 0) {
    const fraction = Math.min(1, status.bytes / status.totalBytes);
    const filled = Math.round(fraction * BAR_WIDTH);
    parts.push(
      `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`,
    );
    parts.push(`${humanBytes(status.bytes)} of ${humanBytes(status.totalBytes)}`);
  } else {
    parts.push(humanBytes(status.bytes));
  }
  parts.push(`${status.entries} entries`, formatRate(rate));
  if (status.totalBytes !== undefined && rate > 0 && status.bytes < status.totalBytes)
    parts.push(`ETA ${formatDuration((status.totalBytes - status.bytes) / rate)}`);
  let text = parts.join(', ');
  if (status.path !== undefined && text.length + 3 < width) {
    const room = width - text.length - 3;
    const path =
      status.path.length > room
        ? `…${status.path.slice(status.path.length - room + 1)}`
        : status.path;
    text = `${text}   ${path}`;
  }
  return text.length > width ? text.slice(0, width) : text;
}

/** A display on `stream`; `tty` defaults to whether it is a terminal. */
export function createActivityDisplay(
  stream: NodeJS.WriteStream = process.stderr,
  tty = stream.isTTY,
  now: () => number = () => performance.now(),
): ActivityDisplay {
  const started = now();
  let lastDraw = -Infinity;
  let shown = false;
  let latest: ActivityStatus | undefined;
  const clear = (): void => {
    if (shown) stream.write('\r\x1b[2K');
    shown = false;
  };
  const draw = (): void => {
    if (latest === undefined) return;
    const width = Math.max(40, (stream.columns || 100) - 1);
    stream.write(`\r\x1b[2K${renderActivity(latest, (now() - started) / 1000, width)}`);
    shown = true;
    lastDraw = now();
  };
  return {
    update(status) {
      latest = status;
      if (tty && now() - lastDraw >= REDRAW_MS) draw();
    },
    line(text) {
      if (tty) {
        clear();
        stream.write(`${text}\n`);
        draw();
      } else {
        stream.write(`${text}\n`);
      }
    },
    stop() {
      if (tty) clear();
    },
  };
}
