/**
 * V8 heap tuning for the server process (`burrow-manager serve`).
 *
 * The server's JavaScript heap is small, about 10 MB, while every backup and restore moves hundreds
 * of megabytes through buffers outside it: TLS records, upload bodies, chunk files read for
 * downloads. V8 as Node 20 ships it counts memory allocated outside the heap since the last full
 * collection against the old generation's limit, and sets that limit at about twice the live heap.
 * So every ~9 MB of chunk traffic started a full mark-compact: 10-14 per 155 MiB backup, each one
 * marking the whole heap again on V8's helper threads, on cores the server shares with its
 * clients. Letting the heap grow to four times its live size before the next collection (V8's
 * `--heap-growing-percent`) brought that down to one or two and the server's CPU per backup down
 * by a fifth (docs/design.md, "The server's heap"). The heap itself stays small; only the point at
 * which V8 collects it moves.
 */
import v8 from 'node:v8';
import { BurrowError } from '../lib/errors.js';

/** The old generation may grow to 1 + 300 % = 4 times its live size before a full collection. */
export const SERVER_HEAP_GROWING_PERCENT = 300;

const FLAG = '--heap-growing-percent';

/**
 * Applies `percent` (default SERVER_HEAP_GROWING_PERCENT) unless the process was started with its
 * own `--heap-growing-percent` (an operator's choice wins). Returns whether it applied it. V8 reads
 * the flag each time it recomputes its limits, so setting it after start-up takes effect.
 */
export function tuneServerHeap(
  options: { execArgv?: readonly string[]; percent?: number } = {},
): boolean {
  const execArgv = options.execArgv ?? process.execArgv;
  if (execArgv.some((arg) => arg === FLAG || arg.startsWith(`${FLAG}=`))) return false;
  const percent = options.percent ?? SERVER_HEAP_GROWING_PERCENT;
  if (!Number.isSafeInteger(percent) || percent <= 0) {
    throw new BurrowError('INVALID_ARGUMENT', `percent must be a positive integer, got ${percent}`);
  }
  v8.setFlagsFromString(`${FLAG}=${percent}`);
  return true;
}
