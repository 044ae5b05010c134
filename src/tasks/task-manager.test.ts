import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../lib/clock.js';
import { resolveDirs, type BurrowDirs } from '../lib/dirs.js';
import { BurrowError } from '../lib/errors.js';
import { formatUpid, parseUpid, taskLogRelativePath } from '../format/upid.js';
import { flockLocker, type TaskListLocker } from './task-list-lock.js';
import { TaskManager, type TaskContext } from './task-manager.js';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';

// A zone with a non-zero, non-whole-hour offset, so a wrong offset cannot pass by accident.
const ZONE = 'America/St_Johns';
const originalTz = process.env.TZ;
beforeAll(() => {
  process.env.TZ = ZONE;
});
afterAll(() => {
  if (originalTz === undefined) delete process.env.TZ;
  else process.env.TZ = originalTz;
});

/** The local time of `epoch` in ZONE as RFC 3339 with offset, computed with ICU (Intl). */
function expectedTimestamp(epoch: number): string {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: ZONE,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
    timeZoneName: 'longOffset',
  }).formatToParts(new Date(epoch * 1000));
  const get = (type: string): string => parts.find((p) => p.type === type)?.value ?? '?';
  const zone = get('timeZoneName'); // "GMT-03:30", or "GMT" for a zero offset
  const offset = zone === 'GMT' ? '+00:00' : zone.slice(3);
  return `${get('year')}-${get('month')}-${get('day')}T${get('hour')}:${get('minute')}:${get('second')}${offset}`;
}

const LINE_RE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}): (.*)$/;
const hex8 = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');

/** Field 22 of /proc/self/stat, read here without the code under test. */
function ownPstart(): number {
  const stat = readFileSync(`/proc/${process.pid}/stat`, 'latin1');
  return Number(stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[19]);
}

// 2024-01-15T12:00:00Z
const START = 1705320000;

let base: string;
let dirs: BurrowDirs;
let clock: FakeClock;
let manager: TaskManager;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'burrow-tasks-'));
  dirs = resolveDirs(
    { configDir: join(base, 'etc'), runDir: join(base, 'run'), logDir: join(base, 'log') },
    {},
  );
  clock = new FakeClock(START);
  manager = new TaskManager({ dirs, clock, node: 'testnode' });
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

const tasksPath = (name: string): string => join(dirs.logDir, 'tasks', name);
const readList = (name: string): string[] => {
  const path = tasksPath(name);
  return existsSync(path)
    ? readFileSync(path, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
    : [];
};
const logLines = (upid: string): string[] =>
  readFileSync(join(dirs.logDir, taskLogRelativePath(upid)), 'utf8')
    .split('\n')
    .slice(0, -1);

/** Task work that needs no await, as the async function run() expects. */
function sync<T>(fn: (task: TaskContext) => T): (task: TaskContext) => Promise<T> {
  return (task) => {
    try {
      return Promise.resolve(fn(task));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  };
}

describe('a task that succeeds', () => {
  it('gets a UPID of this process and writes a log ending in TASK OK', async () => {
    const { upid, result } = await manager.run(
      'garbage_collection',
      'store1',
      'root@pam',
      sync((task) => {
        task.log('starting');
        clock.advance(3);
        task.log('done');
        return 42;
      }),
    );
    expect(result).toBe(42);

    const fields = parseUpid(upid);
    expect(fields).toMatchObject({
      node: 'testnode',
      pid: process.pid,
      pstart: ownPstart(),
      startTime: START,
      workerType: 'garbage_collection',
      workerId: 'store1',
      authId: 'root@pam',
    });
    expect(formatUpid(fields)).toBe(upid);
    expect(upid).toBe(
      `UPID:testnode:${hex8(process.pid)}:${hex8(ownPstart())}:${hex8(Number(fields.taskId))}:${hex8(START)}:garbage_collection:store1:root@pam:`,
    );

    // tasks/<pstart & 0xFF in two uppercase hex digits>/<UPID>
    const bucket = (ownPstart() & 0xff).toString(16).toUpperCase().padStart(2, '0');
    const logPath = join(dirs.logDir, 'tasks', bucket, upid);
    expect(join(dirs.logDir, taskLogRelativePath(upid))).toBe(logPath);
    expect(existsSync(logPath)).toBe(true);
    const umask = process.umask();
    expect(statSync(dirname(logPath)).mode & 0o777).toBe(0o755 & ~umask);

    expect(logLines(upid)).toEqual([
      `${expectedTimestamp(START)}: starting`,
      `${expectedTimestamp(START + 3)}: done`,
      `${expectedTimestamp(START + 3)}: TASK OK`,
    ]);
    expect(await manager.readLog(upid)).toEqual(logLines(upid));
    for (const line of logLines(upid)) expect(line).toMatch(LINE_RE);
    expect(expectedTimestamp(START)).toBe('2024-01-15T08:30:00-03:30');

    expect(readList('active')).toEqual([]);
    expect(readList('archive')).toEqual([`${upid} ${hex8(START + 3)} OK`]);
    expect(await manager.status(upid)).toMatchObject({
      upid,
      state: 'ok',
      status: 'OK',
      endtime: START + 3,
      workerType: 'garbage_collection',
      pid: process.pid,
    });
  });

  it('shows the task as running in active while the work runs', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let seen: string | undefined;
    const running = manager.run('verify', undefined, 'root@pam', async () => gate, {
      onStart: (upid) => (seen = upid),
    });
    while (seen === undefined) await new Promise((r) => setTimeout(r, 1));
    const upid = seen;
    expect(readList('active')).toEqual([upid]);
    expect(await manager.status(upid)).toMatchObject({ upid, state: 'running' });
    expect((await manager.status(upid)).status).toBeUndefined();
    const listed = await manager.list({ running: true });
    expect(listed.map((e) => [e.upid, e.state])).toEqual([[upid, 'running']]);
    expect(parseUpid(upid).workerId).toBeUndefined();
    release();
    await running;
    expect(readList('active')).toEqual([]);
    expect(await manager.list({ running: true })).toEqual([]);
  });
});

describe('warnings, errors and abort', () => {
  it('counts warnings and ends with TASK WARNINGS: 2', async () => {
    const { upid } = await manager.run(
      'prune',
      'store1',
      'root@pam',
      sync((task) => {
        task.warn('first problem');
        task.log('between');
        task.warn('second problem');
        return undefined;
      }),
    );
    const t = expectedTimestamp(START);
    expect(logLines(upid)).toEqual([
      `${t}: WARN: first problem`,
      `${t}: between`,
      `${t}: WARN: second problem`,
      `${t}: TASK WARNINGS: 2`,
    ]);
    expect(readList('archive')).toEqual([`${upid} ${hex8(START)} WARNINGS: 2`]);
    expect(await manager.status(upid)).toMatchObject({
      state: 'warning',
      status: 'WARNINGS: 2',
      endtime: START,
    });
  });

  it('logs TASK ERROR and rethrows the very error', async () => {
    const thrown = new BurrowError('NOT_FOUND', 'snapshot vm/100 is gone');
    let upid = '';
    const caught = await manager
      .run(
        'verify',
        'store1:vm/100',
        'admin@pbs!token1',
        sync((task) => {
          task.log('checking');
          clock.advance(2);
          throw thrown;
        }),
        { onStart: (u) => (upid = u) },
      )
      .catch((error: unknown) => error);
    expect(caught).toBe(thrown);
    expect(upid).toContain(':verify:store1\\x3avm-100:admin@pbs!token1:');
    expect(logLines(upid)).toEqual([
      `${expectedTimestamp(START)}: checking`,
      `${expectedTimestamp(START + 2)}: TASK ERROR: snapshot vm/100 is gone`,
    ]);
    expect(readList('archive')).toEqual([`${upid} ${hex8(START + 2)} snapshot vm/100 is gone`]);
    expect(await manager.status(upid)).toMatchObject({
      state: 'error',
      status: 'snapshot vm/100 is gone',
      endtime: START + 2,
    });
  });

  it('keeps the status one line when the error message has line breaks', async () => {
    let upid = '';
    await manager
      .run('x', undefined, 'root@pam', () => Promise.reject(new Error('first\nsecond')), {
        onStart: (u) => (upid = u),
      })
      .catch(() => undefined);
    expect(logLines(upid).at(-1)).toBe(`${expectedTimestamp(START)}: TASK ERROR: first second`);
    expect((await manager.status(upid)).status).toBe('first second');
  });

  it('aborts a running task from another manager of the same process', async () => {
    let upid = '';
    let signalFired = false;
    const run = manager.run(
      'garbage_collection',
      'store1',
      'root@pam',
      async (task: TaskContext) => {
        task.signal.addEventListener('abort', () => (signalFired = true));
        for (;;) {
          task.checkAbort();
          await new Promise((r) => setTimeout(r, 2));
        }
      },
      { onStart: (u) => (upid = u) },
    );
    while (upid === '') await new Promise((r) => setTimeout(r, 1));
    const other = new TaskManager({ dirs, clock, node: 'testnode' });
    expect(other.abort(upid)).toBe(true);
    expect(await rejectionCodeOf(run)).toBe('TASK_ABORTED');
    expect(signalFired).toBe(true);
    const t = expectedTimestamp(START);
    expect(logLines(upid)).toEqual([
      `${t}: received abort request ...`,
      `${t}: TASK ERROR: abort requested - aborting task`,
    ]);
    expect((await manager.status(upid)).state).toBe('error');
    // Ended tasks, unknown tasks: nothing to abort.
    expect(manager.abort(upid)).toBe(false);
    expect(manager.abort('UPID:elsa:00004F37:0039E469:00000000:5CA78B83:gc:store1:root@pam:')).toBe(
      false,
    );
    expect(() => manager.abort('not a upid')).toThrow(/UPID/);
  });

  it('passes progress through and sends each line to onLine', async () => {
    const lines: string[] = [];
    const progress: Array<[number, string]> = [];
    await manager.run(
      'verify',
      undefined,
      'root@pam',
      sync((task) => {
        task.progress?.(0.5, 'half');
        task.progress?.(7, 'clamped');
        task.log('two\nlines');
        return undefined;
      }),
      { onLine: (l) => lines.push(l), onProgress: (f, t) => progress.push([f, t]) },
    );
    expect(progress).toEqual([
      [0.5, 'half'],
      [1, 'clamped'],
    ]);
    expect(lines).toEqual(['two', 'lines', 'TASK OK']);
  });

  it('ignores log calls after the task has ended', async () => {
    let leaked: TaskContext | undefined;
    const { upid } = await manager.run(
      'x',
      undefined,
      'root@pam',
      sync((task) => {
        leaked = task;
        return undefined;
      }),
    );
    leaked?.log('too late');
    expect(logLines(upid).at(-1)).toBe(`${expectedTimestamp(START)}: TASK OK`);
    expect(logLines(upid)).toHaveLength(1);
  });
});

describe('UPIDs', () => {
  it('are distinct across two managers of one process, also when run at the same time', async () => {
    const second = new TaskManager({ dirs, clock, node: 'testnode' });
    const results = await Promise.all([
      manager.run('backup', 'store1:host/a', 'root@pam', () => Promise.resolve(1)),
      second.run('backup', 'store1:host/a', 'root@pam', () => Promise.resolve(2)),
      manager.run('backup', 'store1:host/a', 'root@pam', () => Promise.resolve(3)),
    ]);
    const upids = results.map((r) => r.upid);
    expect(new Set(upids).size).toBe(3);
    const ids = upids.map((u) => parseUpid(u).taskId);
    expect(new Set(ids).size).toBe(3);
    for (const upid of upids) {
      expect(existsSync(join(dirs.logDir, taskLogRelativePath(upid)))).toBe(true);
    }
    expect(
      readList('archive')
        .map((l) => l.split(' ')[0])
        .sort(),
    ).toEqual([...upids].sort());
    expect(readList('active')).toEqual([]);
  });

  it('refuses a bad worker type or auth id before creating anything', async () => {
    expect(
      await rejectionCodeOf(
        manager.run('bad type', undefined, 'root@pam', () => Promise.resolve(0)),
      ),
    ).toBe('INVALID_UPID');
    expect(
      await rejectionCodeOf(manager.run('gc', undefined, 'nobody', () => Promise.resolve(0))),
    ).toBe('INVALID_UPID');
    expect(existsSync(tasksPath(''))).toBe(false);
    expect(() => new TaskManager({ dirs, node: 'bad_node' })).toThrow(/node name/);
  });
});

describe('listing', () => {
  it('lists running tasks, then ended ones, newest first, with limit', async () => {
    const done: string[] = [];
    for (const type of ['one', 'two', 'three']) {
      done.push((await manager.run(type, undefined, 'root@pam', () => Promise.resolve(0))).upid);
      clock.advance(10);
    }
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let runningUpid = '';
    const running = manager.run('four', undefined, 'root@pam', () => gate, {
      onStart: (u) => (runningUpid = u),
    });
    while (runningUpid === '') await new Promise((r) => setTimeout(r, 1));

    const all = await manager.list();
    expect(all.map((e) => e.upid)).toEqual([runningUpid, done[2], done[1], done[0]]);
    expect(all.map((e) => e.state)).toEqual(['running', 'ok', 'ok', 'ok']);
    expect(all[1]).toMatchObject({ workerType: 'three', status: 'OK', endtime: START + 20 });
    expect((await manager.list({ limit: 2 })).map((e) => e.upid)).toEqual([runningUpid, done[2]]);
    release();
    await running;
    expect((await manager.list()).map((e) => e.upid)).toEqual([runningUpid, ...done.reverse()]);
  });

  it('reads rotated archives after the current one', async () => {
    const older =
      'UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection:store1:root@pam:';
    mkdirSync(tasksPath(''), { recursive: true });
    writeFileSync(tasksPath('archive.1'), `${older} 5CA78B90 WARNINGS: 1\n`);
    const { upid } = await manager.run('x', undefined, 'root@pam', () => Promise.resolve(0));
    const all = await manager.list();
    expect(all.map((e) => [e.upid, e.state, e.status])).toEqual([
      [upid, 'ok', 'OK'],
      [older, 'warning', 'WARNINGS: 1'],
    ]);
  });

  it('returns nothing before any task ran', async () => {
    expect(await manager.list()).toEqual([]);
    expect(existsSync(tasksPath(''))).toBe(false);
  });
});

describe('a task whose process died', () => {
  // pid 0x7FFFFF00 is above Linux's largest pid_max (2^22), so no such process exists.
  const deadUpid = `UPID:testnode:7FFFFF00:00001234:00000005:${hex8(START)}:garbage_collection:store1:root@pam:`;

  function writeCrashedTask(logText: string | undefined): void {
    mkdirSync(tasksPath(''), { recursive: true });
    writeFileSync(tasksPath('active'), `${deadUpid}\n`);
    if (logText !== undefined) {
      const path = join(dirs.logDir, taskLogRelativePath(deadUpid));
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, logText);
    }
  }

  it('is unknown, with the last timestamp of its partial log as end time', async () => {
    writeCrashedTask(
      `${expectedTimestamp(START)}: marking chunks\n` +
        `${expectedTimestamp(START + 75)}: processed 50% (20 chunks)\n` +
        expectedTimestamp(START + 80).slice(0, 15), // a write torn inside the timestamp
    );
    const listed = await manager.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({
      upid: deadUpid,
      state: 'unknown',
      status: 'unknown',
      endtime: START + 75,
      pid: 0x7fffff00,
    });
    // The listing moved it from active to archive.
    expect(readList('active')).toEqual([]);
    expect(readList('archive')).toEqual([`${deadUpid} ${hex8(START + 75)} unknown`]);
    expect(await manager.status(deadUpid)).toMatchObject({
      state: 'unknown',
      status: 'unknown',
      endtime: START + 75,
    });
  });

  it('is archived when the next task starts, even without a listing', async () => {
    writeCrashedTask(`${expectedTimestamp(START + 1)}: step\n`);
    const { upid } = await manager.run('x', undefined, 'root@pam', () => Promise.resolve(0));
    expect(readList('archive')).toEqual([
      `${deadUpid} ${hex8(START + 1)} unknown`,
      `${upid} ${hex8(START)} OK`,
    ]);
  });

  it('is unknown with the current time when its log is missing', async () => {
    writeCrashedTask(undefined);
    clock.advance(100);
    const [entry] = await manager.list();
    expect(entry).toMatchObject({ state: 'unknown', endtime: START + 100 });
    expect(await rejectionCodeOf(manager.status(deadUpid))).toBe('NOT_FOUND');
  });

  it('keeps the final state its log recorded', async () => {
    writeCrashedTask(`${expectedTimestamp(START + 9)}: TASK ERROR: out of space\n`);
    const [entry] = await manager.list();
    expect(entry).toMatchObject({ state: 'error', status: 'out of space', endtime: START + 9 });
  });

  it('does not take a recycled pid (same pid, other start time) for the task', async () => {
    const recycled = formatUpid({
      ...parseUpid(deadUpid),
      pid: process.pid,
      pstart: ownPstart() + 1,
    });
    mkdirSync(tasksPath(''), { recursive: true });
    writeFileSync(tasksPath('active'), `${recycled}\n`);
    const [entry] = await manager.list();
    expect(entry).toMatchObject({ upid: recycled, state: 'unknown', endtime: START });
  });

  it('counts a task of another live process as running', async () => {
    const stat = readFileSync(`/proc/${process.ppid}/stat`, 'latin1');
    const parentStart = Number(stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[19]);
    const foreign = formatUpid({ ...parseUpid(deadUpid), pid: process.ppid, pstart: parentStart });
    mkdirSync(tasksPath(''), { recursive: true });
    writeFileSync(tasksPath('active'), `${foreign}\n`);
    const path = join(dirs.logDir, taskLogRelativePath(foreign));
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${expectedTimestamp(START)}: working\n`);
    expect((await manager.list()).map((e) => e.state)).toEqual(['running']);
    expect(readList('active')).toEqual([foreign]);
    expect((await manager.status(foreign)).state).toBe('running');
  });
});

describe('readLog and status', () => {
  it('validate the UPID and report missing logs as NOT_FOUND', async () => {
    expect(await rejectionCodeOf(manager.readLog('UPID:nope'))).toBe('INVALID_UPID');
    expect(await rejectionCodeOf(manager.status('UPID:nope'))).toBe('INVALID_UPID');
    const missing =
      'UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection:store1:root@pam:';
    expect(await rejectionCodeOf(manager.readLog(missing))).toBe('NOT_FOUND');
    expect(await rejectionCodeOf(manager.status(missing))).toBe('NOT_FOUND');
  });

  it('accept lowercase hex in the UPID', async () => {
    const { upid } = await manager.run('x', undefined, 'root@pam', () => Promise.resolve(0));
    const lower = upid.replace(/:([0-9A-F]{8}):/g, (m) => m.toLowerCase());
    expect((await manager.readLog(lower)).at(-1)).toMatch(/: TASK OK$/);
    expect((await manager.status(lower)).upid).toBe(upid);
  });
});

describe('the .active.lock', () => {
  it('is taken exclusively for each update and shared for listing', async () => {
    const calls: Array<[string, boolean]> = [];
    const inner = flockLocker();
    const lock: TaskListLocker = (path, exclusive) => {
      calls.push([path, exclusive]);
      return inner(path, exclusive);
    };
    const locked = new TaskManager({ dirs, clock, node: 'testnode', lock });
    await locked.run('x', undefined, 'root@pam', () => Promise.resolve(0));
    await locked.list();
    const lockPath = tasksPath('.active.lock');
    expect(calls).toEqual([
      [lockPath, true],
      [lockPath, true],
      [lockPath, false],
    ]);
    expect(statSync(lockPath).mode & 0o777).toBe(0o660 & ~process.umask());
  });

  it('times out with LOCKED while another holder keeps it', async () => {
    mkdirSync(tasksPath(''), { recursive: true });
    const holder = await flockLocker(0)(tasksPath('.active.lock'), true);
    try {
      const impatient = new TaskManager({ dirs, clock, node: 'testnode', lock: flockLocker(60) });
      let worked = false;
      let upid = '';
      const started = performance.now();
      const code = await rejectionCodeOf(
        impatient.run('x', undefined, 'root@pam', () => Promise.resolve((worked = true)), {
          onStart: (u) => (upid = u),
        }),
      );
      expect(code).toBe('LOCKED');
      expect(performance.now() - started).toBeGreaterThanOrEqual(50);
      expect(worked).toBe(false);
      expect(upid).toBe('');
      // The log of the task that could not register says why.
      const [bucket] = readdirNames(tasksPath('')).filter((n) => /^[0-9A-F]{2}$/.test(n));
      const [file] = readdirNames(tasksPath(bucket ?? ''));
      const log = readFileSync(join(tasksPath(bucket ?? ''), file ?? ''), 'utf8');
      expect(log).toMatch(/: TASK ERROR: task list lock .*still held/);
      // A shared lock also waits for the exclusive holder.
      expect(await rejectionCodeOf(impatient.list())).toBe('LOCKED');
    } finally {
      await holder.release();
    }
  });
});

function readdirNames(path: string): string[] {
  return existsSync(path) ? readdirSync(path).sort() : [];
}
