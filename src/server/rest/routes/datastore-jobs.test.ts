import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAuthid } from '../../../types/auth.js';
import {
  ROOT_NAMESPACE,
  backupDir,
  backupGroup,
  parseNamespace,
  type BackupDir,
  type BackupGroup,
} from '../../../types/backup.js';
import { bytesOf, makeChunk, writeSnapshot } from '../../../../test/helpers/store-fixture.js';
import {
  ROLES,
  addSnapshot,
  api,
  startRestWorld,
  waitTask,
  type RestWorld,
} from '../../../../test/helpers/rest-datastore-fixture.js';

const H = 3600;
const T = 1_700_000_000; // 2023-11-14T22:13:20Z
let world: RestWorld;
let seed = 100;

const snapshot = (dir: BackupDir, owner?: string): Promise<void> =>
  addSnapshot(
    world,
    dir,
    [{ kind: 'didx', name: 'root.pxar.didx', chunks: [makeChunk(bytesOf(seed++, 500))] }],
    owner,
  );

const times = async (g: BackupGroup): Promise<number[]> =>
  (await world.store.listSnapshots(g)).map((s) => s.dir.time);

beforeAll(async () => {
  world = await startRestWorld();
  world.access
    .allow('audit@pbs', '/datastore/store1', ROLES.audit)
    .allow('admin@pbs', '/datastore/store1', ROLES.admin)
    .allow('backup@pbs', '/datastore/store1', ROLES.backup)
    .allow('power@pbs', '/datastore/store1', ROLES.powerUser)
    .allow('verifier@pbs', '/datastore/store1', ROLES.verify);
}, 60_000);

afterAll(async () => {
  await world.close();
});

describe('prune', () => {
  const group = backupGroup(ROOT_NAMESPACE, 'vm', '300');
  const params = { 'backup-type': 'vm', 'backup-id': '300', 'keep-last': 2 };

  beforeAll(async () => {
    for (const t of [T, T + H, T + 2 * H]) await snapshot(backupDir(group, t), 'power@pbs');
  });

  it('shows the plan in a dry run, oldest first, and removes nothing', async () => {
    const r = await api(world, 'POST', '/admin/datastore/store1/prune', 'power@pbs', {
      ...params,
      'dry-run': true,
    });
    expect(r.status).toBe(200);
    const item = (time: number, keep: boolean) => ({
      'backup-type': 'vm',
      'backup-id': '300',
      'backup-time': time,
      keep,
      protected: false,
    });
    expect(r.data).toEqual([item(T, false), item(T + H, true), item(T + 2 * H, true)]);
    expect(await times(group)).toEqual([T, T + H, T + 2 * H]);
  });

  it('refuses Datastore.Backup alone, and non-owners with Datastore.Prune', async () => {
    const backup = await api(world, 'POST', '/admin/datastore/store1/prune', 'backup@pbs', params);
    expect(backup.status).toBe(403);
    expect(backup.text).toBe(
      'permission check failed - missing Datastore.Modify|Datastore.Prune on /datastore/store1',
    );
    await world.store.setOwner(group, parseAuthid('root@pam'), true);
    const other = await api(world, 'POST', '/admin/datastore/store1/prune', 'power@pbs', params);
    expect(other.status).toBe(400);
    expect(other.text).toBe('backup owner check failed (power@pbs != root@pam)');
    await world.store.setOwner(group, parseAuthid('power@pbs'), true);
  });

  it('prunes in a task and answers with the result', async () => {
    const r = await api(world, 'POST', '/admin/datastore/store1/prune', 'power@pbs', params);
    expect(r.status).toBe(200);
    expect(r.data).toEqual([
      { 'backup-type': 'vm', 'backup-id': '300', 'backup-time': T, keep: false, protected: false },
      {
        'backup-type': 'vm',
        'backup-id': '300',
        'backup-time': T + H,
        keep: true,
        protected: false,
      },
      {
        'backup-type': 'vm',
        'backup-id': '300',
        'backup-time': T + 2 * H,
        keep: true,
        protected: false,
      },
    ]);
    expect(await times(group)).toEqual([T + H, T + 2 * H]);
    const task = (await world.tasks.list()).find((t) => t.workerType === 'prune');
    expect(task).toMatchObject({ workerId: 'store1::vm/300', authId: 'power@pbs', status: 'OK' });
  });

  it('answers with a UPID when use-task is set', async () => {
    const r = await api(world, 'POST', '/admin/datastore/store1/prune', 'power@pbs', {
      ...params,
      'keep-last': 1,
      'use-task': true,
    });
    expect(r.status).toBe(200);
    expect(r.data).toMatch(
      /^UPID:testnode:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8,16}:[0-9A-F]{8}:prune:/,
    );
    const status = await waitTask(world, r.data as string);
    expect(status.status).toBe('OK');
    expect(await times(group)).toEqual([T + 2 * H]);
    const log = await world.tasks.readLog(r.data as string);
    expect(log.some((l) => l.endsWith('vm/300/2023-11-14T23:13:20Z remove'))).toBe(true);
  });
});

describe('prune-datastore', () => {
  it('prunes the groups the caller may prune, below a namespace, in a task', async () => {
    const ns = parseNamespace('pd');
    await world.store.createNamespace(ns);
    const own = backupGroup(ns, 'host', 'own');
    const foreign = backupGroup(ns, 'host', 'foreign');
    for (const t of [T, T + H]) {
      await snapshot(backupDir(own, t), 'power@pbs');
      await snapshot(backupDir(foreign, t));
    }
    const denied = await api(
      world,
      'POST',
      '/admin/datastore/store1/prune-datastore',
      'backup@pbs',
      {
        ns: 'pd',
        'keep-last': 1,
      },
    );
    expect(denied.status).toBe(403);
    const dry = await api(world, 'POST', '/admin/datastore/store1/prune-datastore', 'power@pbs', {
      ns: 'pd',
      'keep-last': 1,
      'dry-run': true,
    });
    expect(dry.status).toBe(200);
    await waitTask(world, dry.data as string);
    const dryLog = (await world.tasks.readLog(dry.data as string)).map((l) =>
      l.replace(/^[^ ]+: /, ''),
    );
    expect(dryLog).toEqual([
      "Starting datastore prune on datastore 'store1', namespace 'pd', down to full depth",
      '(dry test run)',
      'retention options: --ns pd --keep-last 1',
      'Pruning group pd:"host/own"',
      'would remove host/own/2023-11-14T22:13:20Z',
      'would keep host/own/2023-11-14T23:13:20Z',
      'TASK OK',
    ]);
    expect(await times(own)).toEqual([T, T + H]);
    const real = await api(world, 'POST', '/admin/datastore/store1/prune-datastore', 'power@pbs', {
      ns: 'pd',
      'keep-last': 1,
    });
    expect((await waitTask(world, real.data as string)).status).toBe('OK');
    expect(await times(own)).toEqual([T + H]);
    // Not the caller's group: untouched.
    expect(await times(foreign)).toEqual([T, T + H]);
  });
});

describe('gc', () => {
  it('starts GC for Datastore.Modify only and reports the last run', async () => {
    const denied = await api(world, 'POST', '/admin/datastore/store1/gc', 'audit@pbs');
    expect(denied.status).toBe(403);
    expect((await api(world, 'GET', '/admin/datastore/store1/gc', 'backup@pbs')).status).toBe(403);
    const r = await api(world, 'POST', '/admin/datastore/store1/gc', 'admin@pbs');
    expect(r.status).toBe(200);
    const upid = r.data as string;
    expect(upid).toContain(':garbage_collection:store1:admin@pbs:');
    const done = await waitTask(world, upid, 60_000);
    expect(done.status).toBe('OK');
    const status = await api(world, 'GET', '/admin/datastore/store1/gc', 'audit@pbs');
    expect(status.status).toBe(200);
    const data = status.data as Record<string, unknown>;
    expect(data).toMatchObject({
      store: 'store1',
      upid,
      'last-run-state': 'OK',
      'last-run-endtime': done.endtime,
      duration: (done.endtime ?? 0) - done.startTime,
    });
    for (const key of ['index-file-count', 'disk-chunks', 'removed-chunks', 'pending-chunks']) {
      expect(typeof data[key]).toBe('number');
    }
    expect(data['index-file-count']).toBeGreaterThan(0);
  }, 60_000);
});

describe('verify', () => {
  const group = backupGroup(ROOT_NAMESPACE, 'ct', '400');

  beforeAll(async () => {
    await snapshot(backupDir(group, T), 'backup@pbs');
    await snapshot(backupDir(group, T + H), 'backup@pbs');
  });

  it('verifies one snapshot, a group or the store, with PBS worker types and ids', async () => {
    const one = await api(world, 'POST', '/admin/datastore/store1/verify', 'verifier@pbs', {
      'backup-type': 'ct',
      'backup-id': '400',
      'backup-time': T,
    });
    expect(one.status).toBe(200);
    const s1 = await waitTask(world, one.data as string);
    expect(s1).toMatchObject({
      workerType: 'verify_snapshot',
      workerId: 'store1:/ct/400/6553F100',
      status: 'OK',
    });
    const m = await world.store.loadManifest(backupDir(group, T));
    expect(m.manifest.unprotected['verify_state']).toEqual({ state: 'ok', upid: one.data });

    const grp = await api(world, 'POST', '/admin/datastore/store1/verify', 'verifier@pbs', {
      'backup-type': 'ct',
      'backup-id': '400',
    });
    expect(await waitTask(world, grp.data as string)).toMatchObject({
      workerType: 'verify_group',
      workerId: 'store1:/ct/400',
      status: 'OK',
    });
    const all = await api(world, 'POST', '/admin/datastore/store1/verify', 'verifier@pbs');
    expect(await waitTask(world, all.data as string, 60_000)).toMatchObject({
      workerType: 'verify',
      workerId: 'store1',
      status: 'OK',
    });
    const bad = await api(world, 'POST', '/admin/datastore/store1/verify', 'verifier@pbs', {
      'backup-id': '400',
    });
    expect(bad.status).toBe(400);
    expect(bad.text).toBe('parameters do not specify a backup group or snapshot');
  }, 60_000);

  it('lets an owner with Datastore.Backup verify its own groups only', async () => {
    const other = await api(world, 'POST', '/admin/datastore/store1/verify', 'backup@pbs', {
      'backup-type': 'vm',
      'backup-id': '300',
    });
    expect(other.status).toBe(400);
    expect(other.text).toBe('backup owner check failed (backup@pbs != power@pbs)');
    const mine = await api(world, 'POST', '/admin/datastore/store1/verify', 'backup@pbs', {
      'backup-type': 'ct',
      'backup-id': '400',
      'ignore-verified': false,
    });
    expect((await waitTask(world, mine.data as string)).status).toBe('OK');
    const store = await api(world, 'POST', '/admin/datastore/store1/verify', 'backup@pbs');
    await waitTask(world, store.data as string);
    const log = await world.tasks.readLog(store.data as string);
    expect(log.some((l) => l.includes('found 1 groups'))).toBe(true);
    expect((await api(world, 'POST', '/admin/datastore/store1/verify', 'audit@pbs')).status).toBe(
      403,
    );
  });

  it('ends the task with an error when a chunk is damaged', async () => {
    const g = backupGroup(ROOT_NAMESPACE, 'ct', '401');
    const chunk = makeChunk(bytesOf(9999, 800));
    await writeSnapshot(world.store, backupDir(g, T), [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [chunk] },
    ]);
    const damaged = Buffer.from(chunk.blob);
    damaged.writeUInt8(damaged.readUInt8(damaged.length - 1) ^ 0xff, damaged.length - 1);
    writeFileSync(world.store.chunkStore.chunkPath(chunk.digest), damaged);
    const r = await api(world, 'POST', '/admin/datastore/store1/verify', 'admin@pbs', {
      'backup-type': 'ct',
      'backup-id': '401',
    });
    const status = await waitTask(world, r.data as string);
    expect(status.state).toBe('error');
    expect(status.status).toBe('verification failed - please check the log for details');
    const log = await world.tasks.readLog(r.data as string);
    expect(log.some((l) => l.endsWith('\tct/401/2023-11-14T22:13:20Z'))).toBe(true);
  });
});
