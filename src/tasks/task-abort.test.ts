import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BurrowDirs } from '../lib/dirs.js';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import { TaskManager, type TaskContext } from './index.js';
import { abortRequestDir, requestTaskAbort, startAbortListener } from './task-abort.js';

const CHILD = fileURLToPath(new URL('../../test/helpers/abort-child.ts', import.meta.url));

let root: string;
let dirs: BurrowDirs;
let tasks: TaskManager;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'burrow-abort-'));
  dirs = { configDir: join(root, 'etc'), runDir: join(root, 'run'), logDir: join(root, 'log') };
  tasks = new TaskManager({ dirs, node: 'testnode' });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Field 22 of /proc/<pid>/stat, read here without the code under test. */
function pstartOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[19]);
}
const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');

/** A task of this process that waits until it is aborted. */
async function waitingTask(): Promise<{ upid: string; done: Promise<string> }> {
  let resolveUpid: (upid: string) => void = () => {};
  const started = new Promise<string>((r) => (resolveUpid = r));
  const done = tasks
    .run(
      'abort-test',
      undefined,
      'root@pam',
      (task: TaskContext) =>
        new Promise((_, reject) =>
          task.signal.addEventListener('abort', () => reject(task.signal.reason as Error)),
        ),
      { onStart: resolveUpid },
    )
    .then(
      () => 'ended without abort',
      (error: unknown) => (error as Error).message,
    );
  return { upid: await started, done };
}

describe('requestTaskAbort', () => {
  it('aborts a task of this process at once', async () => {
    const { upid, done } = await waitingTask();
    expect(await requestTaskAbort(dirs, tasks, upid)).toBe('aborted');
    expect(await done).toBe('abort requested - aborting task');
    expect(await requestTaskAbort(dirs, tasks, upid)).toBe('not-running');
  });

  it('reports a task whose process is gone as not running, and refuses bad UPIDs', async () => {
    // pid 0x7FFFFFF0 does not exist (pid_max is far lower)
    const ghost = `UPID:testnode:7FFFFFF0:00000001:00000000:65A51B80:gc:x:root@pam:`;
    expect(await requestTaskAbort(dirs, tasks, ghost)).toBe('not-running');
    expect(existsSync(abortRequestDir(dirs))).toBe(false);
    expect(await rejectionCodeOf(requestTaskAbort(dirs, tasks, 'UPID:bad'))).toBe('INVALID_UPID');
  });

  it('reaches a task in another process through its listener', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify({ dirs })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const first = JSON.parse(((await lines.next()).value as string) ?? '{}') as { upid: string };
    expect(first.upid).toMatch(/^UPID:childnode:/);

    expect(await requestTaskAbort(dirs, tasks, first.upid)).toBe('requested');
    const second = JSON.parse((await lines.next()).value as string) as { ended: string };
    expect(second.ended).toBe('abort requested - aborting task');
    expect(await exited).toBe(0);
    // the listener consumed the request
    expect(await readdir(abortRequestDir(dirs))).toEqual([]);
    // and the task's log records it
    const log = await tasks.readLog(first.upid);
    expect(log.some((l) => l.endsWith(': received abort request ...'))).toBe(true);
    expect(log.at(-1)).toMatch(/: TASK ERROR: abort requested - aborting task$/);
  }, 30_000);
});

describe('startAbortListener', () => {
  it('serves requests addressed to this process and removes those of dead processes', async () => {
    const { upid, done } = await waitingTask();
    const dir = abortRequestDir(dirs);
    await mkdir(dir, { recursive: true });
    const ownName = `${hex(process.pid)}-${hex(pstartOf(process.pid))}-0a1b2c3d`;
    const deadName = `7FFFFFF0-00000001-0a1b2c3d`;
    const liveOtherName = `${hex(1)}-${hex(pstartOf(1))}-0a1b2c3d`;
    await writeFile(join(dir, ownName), upid);
    await writeFile(join(dir, deadName), 'UPID:x');
    await writeFile(join(dir, liveOtherName), 'UPID:y');
    await writeFile(join(dir, 'README'), 'not a request');

    const listener = await startAbortListener(dirs, tasks, { pollMs: 60_000 });
    try {
      expect(await done).toBe('abort requested - aborting task');
      expect((await readdir(dir)).sort()).toEqual([liveOtherName, 'README'].sort());
    } finally {
      listener.close();
    }
  });

  it('notices new requests without waiting for the poll', async () => {
    const listener = await startAbortListener(dirs, tasks, { pollMs: 60_000 });
    try {
      const { upid, done } = await waitingTask();
      const name = `${hex(process.pid)}-${hex(pstartOf(process.pid))}-feedbeef`;
      await writeFile(join(abortRequestDir(dirs), name), upid);
      expect(await done).toBe('abort requested - aborting task');
    } finally {
      listener.close();
    }
  });
});
