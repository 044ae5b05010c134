/**
 * `burrow-manager` as an administrator runs it: a real process per command, temp config/run/log
 * directories given by the global options, a real datastore with 65536 chunk directories, and
 * snapshots written with the same codecs and writers a backup uses. The steps build on each
 * other (create → snapshots → prune → GC → verify → remove), so they run in order.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataStore } from '../../src/datastore/datastore.js';
import { encodeBlob } from '../../src/format/data-blob.js';
import type { BurrowDirs } from '../../src/lib/dirs.js';
import {
  backupDir,
  backupGroup,
  formatBackupTime,
  parseNamespace,
  ROOT_NAMESPACE,
} from '../../src/types/backup.js';
import { digestToHex } from '../../src/types/digest.js';
import { bytesOf, makeChunk, writeSnapshot, type TestChunk } from '../helpers/store-fixture.js';
import { REPO_ROOT, runCli, type CliResult } from './run-cli.js';

let root: string;
let dirs: BurrowDirs;
let dsPath: string;

function mgr(...args: string[]): Promise<CliResult> {
  return runCli('burrow-manager', [
    '--config-dir',
    dirs.configDir,
    '--run-dir',
    dirs.runDir,
    '--log-dir',
    dirs.logDir,
    ...args,
  ]);
}

/** Run and parse the JSON on stdout, failing with the command's stderr when it did not succeed. */
async function mgrJson<T>(...args: string[]): Promise<T> {
  const result = await mgr(...args, '--output-format', 'json');
  if (result.status !== 0)
    throw new Error(`${args.join(' ')} failed (${result.status}): ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

const UPID_RE = (type: string, id: string): RegExp =>
  new RegExp(
    `^UPID:[^:]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8,}:[0-9A-F]{8}:${type}:${id}:root@pam:$`,
  );

// 2024-01-01T00:00:00Z and the two days after it.
const T1 = 1_704_067_200;
const T2 = T1 + 86_400;
const T3 = T2 + 86_400;
const snap = (time: number): string => `vm/100/${formatBackupTime(time)}`;

// Chunk A is in every snapshot of vm/100; B1..B3 each in one; C in the namespace's snapshot.
const A = makeChunk(bytesOf(1, 5000));
const B: Record<number, TestChunk> = {
  [T1]: makeChunk(bytesOf(2, 3000)),
  [T2]: makeChunk(bytesOf(3, 3000)),
  [T3]: makeChunk(bytesOf(4, 3000)),
};
const C = makeChunk(bytesOf(5, 4000));

function chunkFile(chunk: TestChunk): string {
  const hex = digestToHex(chunk.digest);
  return join(dsPath, '.chunks', hex.slice(0, 4), hex);
}

interface SnapshotItem {
  snapshot: string;
  'backup-time': number;
  protected: boolean;
  finished: boolean;
  files: string[];
  size?: number;
  comment?: string;
  owner?: string;
  verification?: { state: string; upid: string };
}

const upids = { gc: '', prune: '', verifyOk: '', verifyFailed: '' };

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'burrow-manager-'));
  dirs = { configDir: join(root, 'etc'), runDir: join(root, 'run'), logDir: join(root, 'log') };
  dsPath = join(root, 'ds');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

// Creating (and destroying) 65536 chunk directories and starting a Node process per command take
// tens of seconds on a busy two-core machine.
describe('burrow-manager', { timeout: 180_000 }, () => {
  it('creates a datastore, refuses a non-empty directory, and adopts an existing one', async () => {
    const full = join(root, 'full');
    await mkdir(full);
    await writeFile(join(full, 'somebody.txt'), 'not a datastore');
    const refused = await mgr('datastore', 'create', 'store0', full);
    expect(refused.status).toBe(4);
    expect(refused.stderr).toMatch(/^Error: datastore path not empty: .*full/m);
    expect(await readFile(join(full, 'somebody.txt'), 'utf8')).toBe('not a datastore');

    const created = await mgrJson<{ name: string; path: string; upid: string }>(
      'datastore',
      'create',
      'store1',
      dsPath,
      '--comment',
      'first store',
    );
    expect(created).toMatchObject({ name: 'store1', path: dsPath, comment: 'first store' });
    expect(created.upid).toMatch(UPID_RE('create-datastore', 'store1'));
    for (const entry of ['.chunks/0000', '.chunks/ffff', '.lock'])
      expect(existsSync(join(dsPath, entry))).toBe(true);

    const again = await mgr('datastore', 'create', 'store1', join(root, 'other'));
    expect(again.status).toBe(6);
    expect(again.stderr).toContain("datastore 'store1' already exists");

    // Removing keeps the data; --reuse-datastore adopts it again as it is.
    const removed = await mgr('datastore', 'remove', 'store1');
    expect(removed.status).toBe(0);
    expect(removed.stdout).toContain('data kept');
    expect(existsSync(join(dsPath, '.chunks', 'abcd'))).toBe(true);
    expect(await mgrJson<unknown[]>('datastore', 'list')).toEqual([]);

    const reused = await mgr('datastore', 'create', 'store1', dsPath, '--reuse-datastore');
    expect(reused.status, reused.stderr).toBe(0);
    expect(reused.stdout).toMatch(/^UPID: UPID:.*:create-datastore:store1:root@pam:$/m);
    expect(reused.stdout).toContain('TASK OK');
  });

  it('lists, shows and updates datastores', async () => {
    const [list, show, text] = await Promise.all([
      mgrJson<unknown[]>('datastore', 'list'),
      mgrJson<unknown>('datastore', 'show', 'store1'),
      mgr('datastore', 'list'),
    ]);
    expect(list).toEqual([{ name: 'store1', path: dsPath }]);
    expect(show).toEqual({ name: 'store1', path: dsPath });
    expect(text.stdout.split('\n')[0]).toMatch(/^name\s+path\s+comment$/);
    expect(text.stdout).toMatch(new RegExp(`^store1\\s+${dsPath}$`, 'm'));

    expect(
      await mgrJson('datastore', 'update', 'store1', '--comment', 'main', '--keep-last', '3'),
    ).toEqual({ name: 'store1', path: dsPath, comment: 'main', 'keep-last': 3 });
    expect(
      await mgrJson('datastore', 'update', 'store1', '--delete', 'comment', 'keep-last'),
    ).toEqual({
      name: 'store1',
      path: dsPath,
    });
    const [bad, badTuning] = await Promise.all([
      mgr('datastore', 'update', 'store1', '--keep-last', '0'),
      mgr('datastore', 'update', 'store1', '--tuning', 'sync-level=sometimes'),
    ]);
    expect(bad.status).toBe(2);
    expect(badTuning.status).toBe(2);
    const cfg = await readFile(join(dirs.configDir, 'datastore.cfg'), 'utf8');
    expect(cfg).toBe(`datastore: store1\n\tpath ${dsPath}\n`);
  });

  it('creates and lists namespaces', async () => {
    const [created, orphan] = await Promise.all([
      mgr('namespace', 'create', 'store1', 'a'),
      mgr('namespace', 'create', 'store1', 'x/y'),
    ]);
    expect(created.status).toBe(0);
    expect((await mgr('namespace', 'create', 'store1', 'a/b')).status).toBe(0);
    expect(orphan.status).not.toBe(0);
    expect(orphan.stderr).toMatch(/^Error: .*x/m);
    const [all, below, text] = await Promise.all([
      mgrJson<unknown[]>('namespace', 'list', 'store1'),
      mgrJson<unknown[]>('namespace', 'list', 'store1', 'a', '--max-depth', '0'),
      mgr('namespace', 'list', 'store1'),
    ]);
    expect(all).toEqual([{ ns: '' }, { ns: 'a' }, { ns: 'a/b' }]);
    expect(below).toEqual([{ ns: 'a' }]);
    expect(text.stdout).toBe('namespace\n(root)\na\na/b\n');
  });

  it('lists the snapshots and groups a backup wrote', async () => {
    const store = await DataStore.lookup('store1', { dirs });
    const group = backupGroup(ROOT_NAMESPACE, 'vm', '100');
    for (const time of [T1, T2, T3]) {
      const b = B[time]!;
      await writeSnapshot(store, backupDir(group, time), [
        { kind: 'didx', name: 'drive-scsi0.img.didx', chunks: [A, b] },
        {
          kind: 'blob',
          name: 'qemu-server.conf.blob',
          raw: encodeBlob(Buffer.from(`boot: ${time}\n`)),
        },
      ]);
    }
    await writeSnapshot(store, backupDir(backupGroup(parseNamespace('a'), 'host', 'web'), T1), [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [C] },
    ]);

    const list = await mgrJson<SnapshotItem[]>('snapshot', 'list', 'store1', 'vm/100');
    expect(list.map((s) => s.snapshot)).toEqual([snap(T1), snap(T2), snap(T3)]);
    expect(list[0]).toMatchObject({
      'backup-time': T1,
      finished: true,
      protected: false,
      owner: 'root@pam',
      files: ['drive-scsi0.img.didx', 'index.json.blob', 'qemu-server.conf.blob'],
    });
    expect(list[0]!.size).toBeGreaterThan(8000);

    const [text, inNs, groups] = await Promise.all([
      mgr('snapshot', 'list', 'store1'),
      mgrJson<SnapshotItem[]>('snapshot', 'list', 'store1', '--ns', 'a'),
      mgrJson<Array<Record<string, unknown>>>('group', 'list', 'store1'),
    ]);
    expect(text.stdout.split('\n')[0]).toMatch(
      /^snapshot\s+size\s+protected\s+verify\s+comment\s+files$/,
    );
    expect(text.stdout).toContain('vm/100/2024-01-02T00:00:00Z');
    expect(text.stdout).toMatch(
      /vm\/100\/2024-01-03T00:00:00Z\s+[\d.]+ KiB\s+-\s+drive-scsi0\.img qemu-server\.conf/,
    );
    expect(inNs.map((s) => s.snapshot)).toEqual([`ns/a/host/web/${formatBackupTime(T1)}`]);
    expect(groups).toEqual([
      {
        group: 'vm/100',
        'backup-type': 'vm',
        'backup-id': '100',
        'last-backup': T3,
        'backup-count': 3,
        files: ['drive-scsi0.img.didx', 'index.json.blob', 'qemu-server.conf.blob'],
        owner: 'root@pam',
      },
    ]);
  });

  it('protects, annotates and forgets snapshots', async () => {
    expect(await mgrJson('snapshot', 'protected', 'store1', snap(T1), 'true')).toEqual({
      snapshot: snap(T1),
      protected: true,
    });
    const shown = await mgr('snapshot', 'protected', 'store1', snap(T1));
    expect(shown.stdout).toMatch(/^protected:\s+true$/m);
    expect(existsSync(join(dsPath, snap(T1), '.protected'))).toBe(true);

    const notes = 'nightly run\nwith a second line';
    expect(await mgrJson('snapshot', 'notes', 'store1', snap(T3), '--set', notes)).toEqual({
      snapshot: snap(T3),
      notes,
    });
    const [read, list, missing, badPath] = await Promise.all([
      mgr('snapshot', 'notes', 'store1', snap(T3)),
      mgrJson<SnapshotItem[]>('snapshot', 'list', 'store1', 'vm/100'),
      mgr('snapshot', 'forget', 'store1', 'vm/100/2023-01-01T00:00:00Z'),
      mgr('snapshot', 'forget', 'store1', 'vm/100'),
    ]);
    expect(read.stdout).toBe(`${notes}\n`);
    expect(list.map((s) => [s.protected, s.comment])).toEqual([
      [true, undefined],
      [false, undefined],
      [false, 'nightly run'],
    ]);

    expect(missing.status).toBe(3);
    expect(badPath.status).toBe(2);
  });

  it('prunes: a dry run changes nothing, the real run keeps protected snapshots', async () => {
    interface Prune {
      upid?: string;
      'dry-run': boolean;
      snapshots: Array<{ snapshot: string; mark: string; removed?: boolean }>;
    }
    // A protected snapshot cannot be forgotten (checked alongside the dry run, which changes nothing).
    const [dry, refused] = await Promise.all([
      mgrJson<Prune>('prune', 'store1', 'vm/100', '--keep-last', '1', '--dry-run'),
      mgr('snapshot', 'forget', 'store1', snap(T1)),
    ]);
    expect(refused.status).toBe(6);
    expect(refused.stderr).toMatch(/^Error: cannot remove protected snapshot/m);
    expect(dry['dry-run']).toBe(true);
    expect(dry.upid).toBeUndefined();
    expect(Object.fromEntries(dry.snapshots.map((s) => [s.snapshot, s.mark]))).toEqual({
      [snap(T1)]: 'protected',
      [snap(T2)]: 'remove',
      [snap(T3)]: 'keep',
    });
    expect(existsSync(join(dsPath, snap(T2)))).toBe(true);

    const text = await mgr('prune', 'store1', 'vm/100', '--keep-last', '1');
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^${snap(T2)}\\s+remove\\s+removed$`, 'm'));
    expect(text.stdout).toMatch(new RegExp(`^${snap(T1)}\\s+protected$`, 'm'));
    expect(text.stdout).toContain('retention options: --keep-last 1');
    const upid = /^UPID: (\S+)$/m.exec(text.stdout)?.[1];
    expect(upid).toMatch(UPID_RE('prune', 'store1\\\\x3avm-100'));
    upids.prune = upid!;
    expect(existsSync(join(dsPath, snap(T2)))).toBe(false);
    expect(existsSync(join(dsPath, snap(T1)))).toBe(true);

    // Once unprotected, it can be forgotten.
    expect((await mgr('snapshot', 'protected', 'store1', snap(T1), 'false')).status).toBe(0);
    expect(await mgrJson('snapshot', 'forget', 'store1', snap(T1))).toEqual({
      snapshot: snap(T1),
      removed: true,
    });
    const left = await mgrJson<SnapshotItem[]>('snapshot', 'list', 'store1', 'vm/100');
    expect(left.map((s) => s.snapshot)).toEqual([snap(T3)]);
  });

  it('collects garbage: referenced chunks stay, freshly unreferenced ones are pending', async () => {
    const gc = await mgr('garbage-collection', 'start', 'store1', '--output-format', 'json');
    expect(gc.status, gc.stderr).toBe(0);
    const status = JSON.parse(gc.stdout) as Record<string, unknown>;
    expect(status.upid).toMatch(UPID_RE('garbage_collection', 'store1'));
    upids.gc = status.upid as string;
    // Task lines go to stderr in JSON mode.
    expect(gc.stderr).toContain('Start GC phase1 (mark used chunks)');
    expect(gc.stderr).toContain('TASK OK');
    // Indexes: vm/100 at T3 and a:host/web. B1 and B2 lost their snapshots moments ago: within the
    // grace period they are pending, not removed (what PBS does). The zero chunk of the atime
    // check is touched by this very GC, so it counts as in use.
    expect(status).toMatchObject({
      'index-file-count': 2,
      'index-data-bytes': 5000 + 3000 + 4000,
      'removed-chunks': 0,
      'removed-bytes': 0,
      'pending-chunks': 2,
      'pending-bytes': B[T1]!.blob.byteLength + B[T2]!.blob.byteLength,
      'disk-chunks': 4,
      'removed-bad': 0,
      'still-bad': 0,
    });
    for (const chunk of [A, B[T1]!, B[T2]!, B[T3]!, C])
      expect(existsSync(chunkFile(chunk))).toBe(true);

    const [persisted, text] = await Promise.all([
      mgrJson<Record<string, unknown>>('garbage-collection', 'status', 'store1'),
      mgr('garbage-collection', 'status', 'store1'),
    ]);
    const { upid: _upid, ...counters } = status;
    expect(persisted).toMatchObject({ ...counters, upid: upids.gc });
    expect(text.stdout).toMatch(/^pending:\s+.* in 2 chunks$/m);
    expect(text.stdout).toMatch(/^on-disk chunks:\s+4$/m);
  });

  it('verifies, and fails with status 4 once a chunk is corrupt, renaming it .0.bad', async () => {
    interface Verify {
      upid: string;
      ok: boolean;
      failed: string[];
    }
    const ok = await mgrJson<Verify>('verify', 'store1');
    expect(ok).toMatchObject({ ok: true, failed: [] });
    expect(ok.upid).toMatch(UPID_RE('verify', 'store1'));
    upids.verifyOk = ok.upid;

    // Flip one payload byte of B3: its CRC no longer matches.
    const path = chunkFile(B[T3]!);
    const bytes = await readFile(path);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
    await writeFile(path, bytes);

    // Verified a moment ago, so skipped unless --ignore-verified false.
    const [list, skipped] = await Promise.all([
      mgrJson<SnapshotItem[]>('snapshot', 'list', 'store1', 'vm/100'),
      mgr('verify', 'store1'),
    ]);
    expect(list[0]!.verification).toEqual({ state: 'ok', upid: ok.upid });
    expect(skipped.status).toBe(0);
    expect(skipped.stdout).toContain('(recently verified)');

    const failed = await mgr('verify', 'store1', '--ignore-verified', 'false');
    expect(failed.status).toBe(4);
    expect(failed.stdout).toMatch(
      /^verification failed for 1 snapshot\(s\):\n {2}vm\/100\/2024-01-03T00:00:00Z$/m,
    );
    expect(failed.stdout).toContain(
      'TASK ERROR: verification failed - please check the log for details',
    );
    expect(failed.stderr).toMatch(
      /^Error: verification failed - please check the log for details$/m,
    );
    upids.verifyFailed = /^UPID: (\S+)$/m.exec(failed.stdout)?.[1] ?? '';
    expect(upids.verifyFailed).toMatch(UPID_RE('verify', 'store1'));
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.0.bad`)).toBe(true);

    const [json, nsOnly] = await Promise.all([
      mgr('verify', 'store1', '--ignore-verified', 'false', '--output-format', 'json'),
      mgrJson<Verify>('verify', 'store1', '--ns', 'a', '--ignore-verified', 'false'),
    ]);
    expect(json.status).toBe(4);
    // The chunk is gone now (renamed): the snapshot fails again, for a missing chunk.
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, failed: [snap(T3)] });
    // The namespace alone is intact.
    expect(nsOnly).toMatchObject({ ok: true, failed: [] });
    expect(nsOnly.upid).toMatch(UPID_RE('verify', 'store1\\\\x3aa'));
  });

  it('refuses garbage collection while another process has a backup writer open', async () => {
    const holder = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(REPO_ROOT, 'test/helpers/writer-holder.ts'),
        JSON.stringify({ name: 'store1', dirs, snapshot: 'host/writer/2024-02-01T00:00:00Z' }),
      ],
      { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const exited = new Promise((resolve) => holder.on('exit', resolve));
    try {
      const first = await new Promise<string>((resolve) =>
        createInterface({ input: holder.stdout }).once('line', resolve),
      );
      expect(first).toBe('ready');

      const refused = await mgr('garbage-collection', 'start', 'store1');
      expect(refused.status).toBe(6);
      expect(refused.stderr).toContain(`unable to get exclusive lock on ${join(dsPath, '.lock')}`);
      expect(refused.stdout).toMatch(/^TASK ERROR: unable to get exclusive lock/m);
      // Text mode: the task's lines and its UPID on stdout, the error on stderr.
      expect(refused.stdout).toMatch(/^UPID: UPID:.*:garbage_collection:store1:root@pam:$/m);
    } finally {
      holder.stdin.end();
      await exited;
    }
    // With the writer gone, GC runs again.
    const again = await mgr('garbage-collection', 'start', 'store1');
    expect(again.status, again.stderr).toBe(0);
  });

  it('lists tasks and shows their logs and status', async () => {
    const [tasks, running, two, log, status, text, unknown, malformed] = await Promise.all([
      mgrJson<Array<Record<string, unknown>>>('task', 'list', '--limit', '0'),
      mgrJson<unknown[]>('task', 'list', '--running'),
      mgrJson<unknown[]>('task', 'list', '--limit', '2'),
      mgr('task', 'log', upids.gc),
      mgrJson<Record<string, unknown>>('task', 'status', upids.verifyFailed),
      mgr('task', 'list'),
      mgr('task', 'log', 'UPID:nohost:00000001:00000001:00000000:65000000:verify:x:root@pam:'),
      mgr('task', 'status', 'not-a-upid'),
    ]);
    const byUpid = new Map(tasks.map((t) => [t.upid as string, t]));
    expect(byUpid.get(upids.gc)).toMatchObject({
      worker_type: 'garbage_collection',
      worker_id: 'store1',
      user: 'root@pam',
      status: 'OK',
    });
    expect(byUpid.get(upids.prune)).toMatchObject({ worker_type: 'prune', status: 'OK' });
    expect(byUpid.get(upids.verifyFailed)).toMatchObject({
      worker_type: 'verify',
      status: 'verification failed - please check the log for details',
    });
    const types = new Set(tasks.map((t) => t.worker_type));
    for (const type of [
      'create-datastore',
      'delete-datastore',
      'garbage_collection',
      'verify',
      'prune',
    ])
      expect(types).toContain(type);
    expect(running).toEqual([]);
    expect(two).toHaveLength(2);
    expect(log.status).toBe(0);
    expect(log.stdout).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d: Start GC phase2 \(sweep unused chunks\)$/m,
    );
    expect(log.stdout).toMatch(/: TASK OK\n$/);
    expect(status).toMatchObject({
      upid: upids.verifyFailed,
      state: 'stopped',
      exitstatus: 'verification failed - please check the log for details',
    });
    expect(text.stdout.split('\n')[0]).toMatch(/^starttime\s+endtime\s+status\s+upid$/);
    expect(text.stdout).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+OK\s+UPID:/m,
    );

    expect(unknown.status).toBe(3);
    expect(malformed.status).toBe(2);
  });

  it('removes namespaces and, with --destroy-data, a datastore and its directory', async () => {
    const notEmpty = await mgr('namespace', 'remove', 'store1', 'a');
    expect(notEmpty.status).toBe(6);
    expect(notEmpty.stderr).toContain('--delete-groups');
    expect((await mgr('namespace', 'remove', 'store1', 'a', '--delete-groups')).status).toBe(0);
    expect(await mgrJson('namespace', 'list', 'store1')).toEqual([{ ns: '' }]);

    // A file that is not the datastore's survives --destroy-data, and so does the directory.
    await writeFile(join(dsPath, 'keep-me.txt'), 'mine');
    const destroyed = await mgr('datastore', 'remove', 'store1', '--destroy-data');
    expect(destroyed.status, destroyed.stderr).toBe(0);
    expect(destroyed.stdout).toContain('WARN: kept');
    expect(existsSync(join(dsPath, '.chunks'))).toBe(false);
    expect(existsSync(join(dsPath, 'vm'))).toBe(false);
    expect(existsSync(join(dsPath, '.lock'))).toBe(false);
    expect(await readFile(join(dsPath, 'keep-me.txt'), 'utf8')).toBe('mine');
    expect((await stat(dsPath)).isDirectory()).toBe(true);
    expect(await mgrJson('datastore', 'list')).toEqual([]);
  });

  it('reports unknown names and bad arguments with the documented statuses', async () => {
    const [show, gc, verify, format, ns] = await Promise.all([
      mgr('datastore', 'show', 'nostore'),
      mgr('garbage-collection', 'start', 'nostore'),
      mgr('verify', 'nostore', '--outdated-after', 'soon'),
      mgr('datastore', 'list', '--output-format', 'yaml'),
      mgr('snapshot', 'list', 'nostore', '--ns', 'bad//ns'),
    ]);
    expect(show.status).toBe(3);
    expect(show.stderr).toBe("Error: datastore 'nostore' does not exist\n");
    expect(gc.status).toBe(3);
    expect(verify.status).toBe(2);
    expect(format.status).toBe(2);
    expect(ns.status).toBe(2);
  });
});
