import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../../../lib/clock.js';
import type { TaskContext } from '../../../tasks/index.js';
import { startRestHarness, type RestHarness } from '../../../../test/helpers/rest-harness.js';
import { taskRoutes } from './tasks.js';

// 2024-01-15T12:00:00Z
const T0 = 1705320000;

interface Fixture {
  h: RestHarness;
  gc: string; // alice, garbage_collection store1, ok
  prune: string; // bob, prune store1:ns1, 1 warning
  verify: string; // alice, verify store2, error after 5 lines
  tokenBackup: string; // bob@pbs!tok, backup store1:host/x, ok
  running: string; // alice, create-datastore, runs until aborted
  runningEnded: Promise<unknown>;
}

let fx: Fixture;

async function finishedTask(
  h: RestHarness,
  clock: FakeClock,
  type: string,
  id: string | undefined,
  authId: string,
  work: (task: TaskContext) => void,
): Promise<string> {
  const { upid } = await h.tasks.run(type, id, authId, (task) => {
    work(task);
    clock.advance(10);
    return Promise.resolve();
  });
  return upid;
}

beforeEach(async () => {
  const clock = new FakeClock(T0);
  const h = await startRestHarness(taskRoutes({ nodeName: 'testnode' }), {
    clock,
    authFailureDelayMs: 0,
    permissionDelayMs: 0,
  });
  for (const user of ['alice@pbs', 'bob@pbs', 'bob@pbs!tok', 'carol@pbs', 'dave@pbs', 'root@pam']) {
    h.access.addUser(user);
  }
  const gc = await finishedTask(h, clock, 'garbage_collection', 'store1', 'alice@pbs', (t) =>
    t.log('gc done'),
  );
  clock.advance(90); // T0+100
  const prune = await finishedTask(h, clock, 'prune', 'store1:ns1', 'bob@pbs', (t) =>
    t.warn('something odd'),
  );
  clock.advance(90); // T0+200
  let verify = '';
  await h.tasks
    .run('verify', 'store2', 'alice@pbs', (task) => {
      verify = task.upid;
      for (let i = 1; i <= 5; i++) task.log(`line ${i}`);
      clock.advance(10);
      return Promise.reject(new Error('boom'));
    })
    .catch(() => undefined);
  clock.advance(90); // T0+300
  const tokenBackup = await finishedTask(
    h,
    clock,
    'backup',
    'store1:host/x',
    'bob@pbs!tok',
    () => {},
  );
  clock.advance(90); // T0+400
  let runningEnded: Promise<unknown> = Promise.resolve();
  const running = await new Promise<string>((resolve) => {
    runningEnded = h.tasks
      .run(
        'create-datastore',
        undefined,
        'alice@pbs',
        (task) =>
          new Promise((_, reject) => {
            task.signal.addEventListener('abort', () => reject(task.signal.reason as Error));
          }),
        { onStart: resolve },
      )
      .catch(() => undefined);
  });
  fx = { h, gc, prune, verify, tokenBackup, running, runningEnded };
});

afterEach(async () => {
  fx.h.tasks.abort(fx.running);
  // The aborted task writes its end (log, task lists) before the temp dir goes.
  await fx.runningEnded;
  await fx.h.close();
});

type Item = Record<string, unknown>;

async function list(query: string, auth = 'root@pam') {
  const res = await fx.h.request('GET', `/api2/json/nodes/localhost/tasks${query}`, { auth });
  expect(res.status).toBe(200);
  return (await res.json()) as { data: Item[]; total: number };
}

const upids = (items: Item[]) => items.map((i) => i.upid);

describe('GET /nodes/{node}/tasks', () => {
  it('lists running tasks first, then ended ones, newest first, with PBS fields', async () => {
    const { data, total } = await list('');
    expect(upids(data)).toEqual([fx.running, fx.tokenBackup, fx.verify, fx.prune, fx.gc]);
    expect(total).toBe(5);
    const byUpid = new Map(data.map((i) => [i.upid, i]));
    expect(byUpid.get(fx.running)).toEqual({
      upid: fx.running,
      node: 'localhost',
      pid: process.pid,
      pstart: expect.any(Number) as unknown,
      starttime: T0 + 400,
      worker_type: 'create-datastore',
      user: 'alice@pbs',
    });
    expect(byUpid.get(fx.gc)).toMatchObject({
      worker_type: 'garbage_collection',
      worker_id: 'store1',
      user: 'alice@pbs',
      starttime: T0,
      endtime: T0 + 10,
      status: 'OK',
    });
    expect(byUpid.get(fx.prune)).toMatchObject({ status: 'WARNINGS: 1', worker_id: 'store1:ns1' });
    expect(byUpid.get(fx.verify)).toMatchObject({ status: 'boom', endtime: T0 + 210 });
    expect(byUpid.get(fx.tokenBackup)).toMatchObject({ user: 'bob@pbs!tok' });
  });

  it('users see their own tasks and their tokens’ tasks', async () => {
    expect(upids((await list('', 'alice@pbs')).data)).toEqual([fx.running, fx.verify, fx.gc]);
    expect(upids((await list('', 'bob@pbs')).data)).toEqual([fx.tokenBackup, fx.prune]);
    // a token sees only its own
    expect(upids((await list('', 'bob@pbs!tok')).data)).toEqual([fx.tokenBackup]);
    expect(upids((await list('', 'dave@pbs')).data)).toEqual([]);
  });

  it('Sys.Audit on /system/tasks sees everything; job privileges show job tasks', async () => {
    fx.h.access.grant('dave@pbs', '/system/tasks', ['Sys.Audit']);
    expect((await list('', 'dave@pbs')).data.length).toBe(5);
    // Datastore.Modify on the store shows its GC and prune tasks (PBS's check_job_privs)
    fx.h.access.grant('carol@pbs', '/datastore/store1', ['Datastore.Modify']);
    expect(upids((await list('', 'carol@pbs')).data)).toEqual([fx.prune, fx.gc]);
  });

  it('filters: running, errors, statusfilter, typefilter, userfilter, store', async () => {
    expect(upids((await list('?running=1')).data)).toEqual([fx.running]);
    expect(upids((await list('?errors=true')).data)).toEqual([fx.running, fx.verify, fx.prune]);
    expect(upids((await list('?statusfilter=error&statusfilter=warning')).data)).toEqual([
      fx.verify,
      fx.prune,
    ]);
    expect(upids((await list('?statusfilter=ok')).data)).toEqual([fx.tokenBackup, fx.gc]);
    expect(upids((await list('?typefilter=prun')).data)).toEqual([fx.prune]);
    expect(upids((await list('?userfilter=bob')).data)).toEqual([fx.tokenBackup, fx.prune]);
    expect(upids((await list('?store=store1')).data)).toEqual([fx.tokenBackup, fx.prune, fx.gc]);
    expect(upids((await list('?store=store2')).data)).toEqual([fx.verify]);
  });

  it('filters by time: since stops at the first task that ended before it, until skips later starts', async () => {
    expect(upids((await list(`?since=${T0 + 200}`)).data)).toEqual([
      fx.running,
      fx.tokenBackup,
      fx.verify,
    ]);
    expect(upids((await list(`?until=${T0 + 150}`)).data)).toEqual([fx.prune, fx.gc]);
  });

  it('pages with start/limit; total counts a virtual entry while a page is full', async () => {
    const page = await list('?start=1&limit=2');
    expect(upids(page.data)).toEqual([fx.tokenBackup, fx.verify]);
    expect(page.total).toBe(4);
    const last = await list('?start=4&limit=2');
    expect(upids(last.data)).toEqual([fx.gc]);
    expect(last.total).toBe(5);
    const all = await list('?limit=0');
    expect(all.data.length).toBe(5);
    expect(all.total).toBe(5);
  });

  it('checks its parameters', async () => {
    const res = await fx.h.request('GET', '/api2/json/nodes/localhost/tasks?statusfilter=bad', {
      auth: 'root@pam',
    });
    expect(res.status).toBe(400);
    expect(await res.text()).toBe(
      "parameter verification failed - 'statusfilter': value 'bad' is not defined in the enumeration.",
    );
  });

  it('{node} is localhost or this node', async () => {
    expect(
      (await fx.h.request('GET', '/api2/json/nodes/testnode/tasks', { auth: 'root@pam' })).status,
    ).toBe(200);
    const other = await fx.h.request('GET', '/api2/json/nodes/othernode/tasks', {
      auth: 'root@pam',
    });
    expect(other.status).toBe(404);
  });
});

const taskPath = (upid: string, rest = '') =>
  `/api2/json/nodes/localhost/tasks/${encodeURIComponent(upid)}${rest}`;

describe('GET /nodes/{node}/tasks/{upid}/status', () => {
  async function status(upid: string, auth = 'root@pam') {
    return fx.h.request('GET', taskPath(upid, '/status'), { auth });
  }

  it('a running task', async () => {
    const res = await status(fx.running, 'alice@pbs');
    const { data } = (await res.json()) as { data: Item };
    expect(data).toEqual({
      upid: fx.running,
      node: 'testnode',
      pid: process.pid,
      pstart: expect.any(Number) as unknown,
      starttime: T0 + 400,
      type: 'create-datastore',
      id: null,
      user: 'alice@pbs',
      status: 'running',
    });
  });

  it('ended tasks: stopped with their exit status', async () => {
    const ok = ((await (await status(fx.gc)).json()) as { data: Item }).data;
    expect(ok).toMatchObject({
      status: 'stopped',
      exitstatus: 'OK',
      type: 'garbage_collection',
      id: 'store1',
      endtime: T0 + 10,
    });
    expect(((await (await status(fx.prune)).json()) as { data: Item }).data.exitstatus).toBe(
      'WARNINGS: 1',
    );
    expect(((await (await status(fx.verify)).json()) as { data: Item }).data.exitstatus).toBe(
      'boom',
    );
  });

  it('a token task names the user and the token separately', async () => {
    const { data } = (await (await status(fx.tokenBackup, 'bob@pbs')).json()) as { data: Item };
    expect(data).toMatchObject({ user: 'bob@pbs', tokenid: 'tok', id: 'store1:host/x' });
  });

  it('others need Sys.Audit (or a job privilege)', async () => {
    const denied = await status(fx.verify, 'bob@pbs');
    expect(denied.status).toBe(403);
    expect(await denied.text()).toBe('task access not allowed');
    fx.h.access.grant('bob@pbs', '/system/tasks', ['Sys.Audit']);
    expect((await status(fx.verify, 'bob@pbs')).status).toBe(200);
  });

  it('a malformed UPID is a parameter error; an unknown one is stopped/unknown', async () => {
    const bad = await status('UPID:nope');
    expect(bad.status).toBe(400);
    expect(await bad.text()).toMatch(/^parameter verification failed - 'upid': /);
    const ghost = 'UPID:testnode:00000001:00000001:00000001:65A51B80:gc:x:root@pam:';
    const { data } = (await (await status(ghost)).json()) as { data: Item };
    expect(data).toMatchObject({ status: 'stopped', exitstatus: 'unknown' });
  });
});

describe('GET /nodes/{node}/tasks/{upid}/log', () => {
  type LogBody = {
    data: Array<{ n: number; t: string }>;
    total: number;
    success: number;
    active?: boolean;
  };
  async function log(upid: string, query = '', auth = 'root@pam') {
    const res = await fx.h.request('GET', taskPath(upid, `/log${query}`), { auth });
    return res;
  }

  it('its own envelope: numbered lines, total, success', async () => {
    const res = await log(fx.verify);
    expect(res.status).toBe(200);
    const body = (await res.json()) as LogBody;
    expect(body.total).toBe(6);
    expect(body.success).toBe(1);
    expect(body.active).toBeUndefined();
    expect(body.data.map((l) => l.n)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(body.data[0]?.t).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d: line 1$/);
    expect(body.data[5]?.t).toMatch(/: TASK ERROR: boom$/);
  });

  it('pages like PBS: start is compared with the 1-based line number, limit 0 is all', async () => {
    const page = (await (await log(fx.verify, '?start=3&limit=2')).json()) as LogBody;
    expect(page.data.map((l) => l.n)).toEqual([3, 4]);
    expect(page.total).toBe(6);
    const fromOne = (await (await log(fx.verify, '?start=1&limit=1')).json()) as LogBody;
    const fromZero = (await (await log(fx.verify, '?start=0&limit=1')).json()) as LogBody;
    expect(fromOne.data).toEqual(fromZero.data);
    const all = (await (await log(fx.verify, '?limit=0&start=2')).json()) as LogBody;
    expect(all.data.map((l) => l.n)).toEqual([2, 3, 4, 5, 6]);
    const past = (await (await log(fx.verify, '?start=99')).json()) as LogBody;
    expect(past).toEqual({ data: [], total: 6, success: 1 });
  });

  it('test-status adds active', async () => {
    expect(((await (await log(fx.verify, '?test-status=1')).json()) as LogBody).active).toBe(false);
    expect(
      ((await (await log(fx.running, '?test-status=1', 'alice@pbs')).json()) as LogBody).active,
    ).toBe(true);
  });

  it('download=1 sends the file as text/plain, alone', async () => {
    const res = await log(fx.verify, '?download=1');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain');
    expect(res.headers.get('content-disposition')).toBe(
      'attachment; filename=task-testnode-verify-2024-01-15T12:03:20Z.log',
    );
    expect(await res.text()).toBe(readFileSync(fx.h.tasks.logPath(fx.verify), 'utf8'));
    const mixed = await log(fx.verify, '?download=1&limit=5');
    expect(mixed.status).toBe(400);
    expect(await mixed.text()).toBe("Parameter 'download' cannot be used with other parameters");
  });

  it('same access rule as status; a missing log is 404', async () => {
    expect((await log(fx.verify, '', 'bob@pbs')).status).toBe(403);
    const ghost = 'UPID:testnode:00000001:00000001:00000001:65A51B80:gc:x:root@pam:';
    expect((await log(ghost)).status).toBe(404);
  });
});

describe('DELETE /nodes/{node}/tasks/{upid}', () => {
  async function waitEnded(upid: string) {
    for (let i = 0; i < 100; i++) {
      const s = await fx.h.tasks.status(upid);
      if (s.state !== 'running') return s;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('task did not end');
  }

  it('the owner stops a running task', async () => {
    const res = await fx.h.request('DELETE', taskPath(fx.running), { auth: 'alice@pbs' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ data: null });
    const ended = await waitEnded(fx.running);
    expect(ended.status).toBe('abort requested - aborting task');
    const lines = await fx.h.tasks.readLog(fx.running);
    expect(lines.some((l) => l.endsWith(': received abort request ...'))).toBe(true);
  });

  it('others need Sys.Modify on /system/tasks', async () => {
    const denied = await fx.h.request('DELETE', taskPath(fx.running), { auth: 'bob@pbs' });
    expect(denied.status).toBe(403);
    expect(await denied.text()).toBe('permission check failed');
    expect((await fx.h.tasks.status(fx.running)).state).toBe('running');
    // Sys.Audit is not enough
    fx.h.access.grant('bob@pbs', '/system/tasks', ['Sys.Audit']);
    expect((await fx.h.request('DELETE', taskPath(fx.running), { auth: 'bob@pbs' })).status).toBe(
      403,
    );
    fx.h.access.grant('bob@pbs', '/system/tasks', ['Sys.Modify']);
    expect((await fx.h.request('DELETE', taskPath(fx.running), { auth: 'bob@pbs' })).status).toBe(
      200,
    );
    expect((await waitEnded(fx.running)).state).toBe('error');
  });

  it('stopping an ended task is a no-op', async () => {
    const res = await fx.h.request('DELETE', taskPath(fx.gc), { auth: 'alice@pbs' });
    expect(res.status).toBe(200);
    expect((await fx.h.tasks.status(fx.gc)).status).toBe('OK');
  });
});

describe('GET /nodes/{node}/tasks/{upid}', () => {
  it('lists the subdirectories', async () => {
    const res = await fx.h.request('GET', taskPath(fx.gc), { auth: 'alice@pbs' });
    expect(await res.json()).toEqual({ data: [{ subdir: 'log' }, { subdir: 'status' }] });
  });
});
