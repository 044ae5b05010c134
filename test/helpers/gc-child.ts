/**
 * Runs one garbage collection in a separate process, for the tests that need another process (a
 * GC that must be refused while the test process has a writer) or another user (a GC that must
 * meet real permission errors, which root never does).
 *
 *   node --import tsx test/helpers/gc-child.ts '<json>'
 *     json: { base, dirs: { configDir, runDir, logDir }, nowSeconds?: number }
 *
 * Prints one JSON line: { ok: true, status, lines } or { ok: false, code, message, lines }.
 */
import { FakeClock, systemClock } from '../../src/lib/clock.js';
import type { BurrowDirs } from '../../src/lib/dirs.js';
import { DataStore } from '../../src/datastore/datastore.js';
import { garbageCollection } from '../../src/datastore/gc.js';
import type { TaskContext } from '../../src/tasks/index.js';

interface ChildInput {
  base: string;
  dirs: BurrowDirs;
  nowSeconds?: number;
}

const input = JSON.parse(process.argv[2] ?? '{}') as ChildInput;
const clock = input.nowSeconds === undefined ? systemClock : new FakeClock(input.nowSeconds);
const lines: string[] = [];
const task: TaskContext = {
  upid: `UPID:child:${process.pid.toString(16).toUpperCase().padStart(8, '0')}:00000000:00000000:00000000:garbage_collection:test:root@pam:`,
  log: (line) => lines.push(line),
  warn: (line) => lines.push(`WARN: ${line}`),
  checkAbort: () => {},
  signal: new AbortController().signal,
};

try {
  const store = await DataStore.openPath(input.base, { dirs: input.dirs, clock });
  const status = await garbageCollection(store, task, { clock, sleep: async () => {} });
  process.stdout.write(`${JSON.stringify({ ok: true, status, lines })}\n`);
} catch (error) {
  const code = (error as { code?: unknown }).code;
  process.stdout.write(
    `${JSON.stringify({
      ok: false,
      code: typeof code === 'string' ? code : 'UNKNOWN',
      message: error instanceof Error ? error.message : String(error),
      lines,
    })}\n`,
  );
}
