import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockHolder } from '../../test/helpers/lock-holder-client.js';
import { blobKindOf, decodeBlob, encodeBlob, encodeChunk } from '../format/data-blob.js';
import type { BackupManifest } from '../format/manifest.js';
import {
  blobFileInfo,
  indexFileInfo,
  newManifest,
  parseManifest,
  serializeManifest,
  serializeManifestBytes,
} from '../format/manifest.js';
import { FakeClock } from '../lib/clock.js';
import type { BurrowDirs } from '../lib/dirs.js';
import { isBurrowError } from '../lib/errors.js';
import type { ErrorCode } from '../lib/errors.js';
import { parseAuthid } from '../types/auth.js';
import type { BackupDir, BackupGroup, BackupNamespace } from '../types/backup.js';
import {
  ROOT_NAMESPACE,
  formatBackupTime,
  formatGroup,
  namespaceToString,
  parseBackupTime,
  parseNamespace,
} from '../types/backup.js';
import { readDatastoreConfig, updateDatastoreConfig } from './datastore-config-store.js';
import { DataStore, PATH_STORE_NAME_PREFIX } from './datastore.js';
import type { GcStatusData } from './datastore.js';
import { defaultGcStatus, parseGcStatus, serializeGcStatus } from './gc-status.js';

const CLOCK_START = 1_700_000_000;
const clock = new FakeClock(CLOCK_START);
const ROOT_PAM = parseAuthid('root@pam');
const ROOT_TOKEN = parseAuthid('root@pam!tok');
const OTHER = parseAuthid('backup@pbs');
const DAY = 86_400;

let tmp: string;
let dirs: BurrowDirs;
let storePath: string;
let store: DataStore;
const logLines: string[] = [];

async function expectCode(
  promise: Promise<unknown>,
  code: ErrorCode,
  text?: string | RegExp,
): Promise<Error> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isBurrowError(error, code), `expected ${code}, got ${String(error)}`).toBe(true);
  if (text !== undefined) expect((error as Error).message).toMatch(text);
  return error as Error;
}

const group = (ns: BackupNamespace, type: 'vm' | 'ct' | 'host', id: string): BackupGroup => ({
  ns,
  type,
  id,
});
const snap = (g: BackupGroup, time: number | string): BackupDir => ({
  group: g,
  time: typeof time === 'string' ? parseBackupTime(time) : time,
});

/** A minimal directory that ChunkStore.open accepts (it checks `.chunks/0000` and `.chunks/ffff`). */
async function fakeStoreDir(path: string): Promise<string> {
  await mkdir(join(path, '.chunks', '0000'), { recursive: true });
  await mkdir(join(path, '.chunks', 'ffff'), { recursive: true });
  await writeFile(join(path, '.lock'), '');
  return path;
}

async function ensureGroup(g: BackupGroup, owner = ROOT_PAM): Promise<void> {
  const { guard } = await store.createLockedBackupGroup(g, owner);
  await guard.release();
}

/** A real snapshot: a chunk, a fixed index, a config blob and (when finished) the manifest. */
async function makeSnapshot(
  dir: BackupDir,
  opts: { finished?: boolean; protected?: boolean; manifest?: (m: BackupManifest) => void } = {},
): Promise<void> {
  await ensureGroup(dir.group);
  const { guard } = await store.createLockedBackupDir(dir);
  try {
    const data = new Uint8Array(Buffer.from(`chunk of ${formatGroup(dir.group)} at ${dir.time}`));
    const { digest, blob } = encodeChunk(data);
    await store.insertChunk(blob, digest);
    const writer = await store.createFixedWriter(dir, 'drive-scsi0.img.fidx', data.byteLength);
    await writer.addChunk(data.byteLength, data.byteLength, digest);
    const closed = await writer.close();
    const conf = encodeBlob(new Uint8Array(Buffer.from('memory: 512\n')));
    await store.writeBlob(dir, 'qemu-server.conf.blob', conf);
    if (opts.finished ?? true) {
      const m = newManifest(dir.group.type, dir.group.id, dir.time);
      m.files = [
        blobFileInfo('qemu-server.conf.blob', conf, 'none'),
        indexFileInfo('drive-scsi0.img.fidx', closed, 'none'),
      ];
      opts.manifest?.(m);
      await store.writeBlob(dir, 'index.json.blob', encodeBlob(serializeManifestBytes(m)));
    }
  } finally {
    await guard.release();
  }
  if (opts.protected) await store.setProtected(dir, true);
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'burrow-datastore-'));
  dirs = { configDir: join(tmp, 'etc'), runDir: join(tmp, 'run'), logDir: join(tmp, 'log') };
  storePath = join(tmp, 'stores', 'store1');
  // One real store for the whole file: creating 65536 directories is the slow part.
  store = await DataStore.create('store1', storePath, {
    dirs,
    clock,
    log: (line) => logLines.push(line),
    comment: 'main store',
    tuning: 'sync-level=file',
    // The atime check waits 1 s for coarse timestamps; a few ticks of the kernel clock do here.
    sleep: () => sleep(30),
  });
}, 120_000);

afterAll(async () => {
  DataStore.clearCache();
  await rm(tmp, { recursive: true, force: true });
});

describe('create, lookup, openPath', () => {
  it('creates the chunk store and writes its datastore.cfg section (0640)', async () => {
    expect(store.name).toBe('store1');
    expect(store.base).toBe(storePath);
    expect(store.tuning.syncLevel).toBe('file');
    for (const p of ['.lock', '.chunks/0000', '.chunks/ffff']) await stat(join(storePath, p));
    // The atime safety check inserted the 4 MiB zero chunk (pbs-formats §7.6).
    await stat(
      join(
        storePath,
        '.chunks/bb9f/bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8',
      ),
    );
    expect(logLines).toContain('Access time update check successful.');
    const cfg = join(dirs.configDir, 'datastore.cfg');
    expect(await readFile(cfg, 'utf8')).toBe(
      `datastore: store1\n\tcomment main store\n\tpath ${storePath}\n\ttuning sync-level=file\n`,
    );
    expect((await stat(cfg)).mode & 0o777).toBe(0o640);
  });

  it('looks a store up by name and caches the instance', async () => {
    expect(await DataStore.lookup('store1', { dirs })).toBe(store);
    await expectCode(DataStore.lookup('nostore', { dirs }), 'NOT_FOUND', /'nostore'/);
  });

  it('refuses bad names, taken names, relative and nested paths before touching the disk', async () => {
    const ctx = { dirs };
    for (const bad of ['ab', 'a/b', '-abc', 'x'.repeat(33)]) {
      await expectCode(DataStore.create(bad, join(tmp, 'elsewhere'), ctx), 'INVALID_ARGUMENT');
    }
    await expectCode(DataStore.create('store1', join(tmp, 'other'), ctx), 'ALREADY_EXISTS');
    await expectCode(
      DataStore.create('store9', 'relative/path', ctx),
      'INVALID_ARGUMENT',
      /absolute/,
    );
    await expectCode(
      DataStore.create('inner', join(storePath, 'sub'), ctx),
      'INVALID_ARGUMENT',
      /nested/,
    );
    await expectCode(
      DataStore.create('outer', join(tmp, 'stores'), ctx),
      'INVALID_ARGUMENT',
      /nested/,
    );
    await expectCode(
      DataStore.create('same', storePath, { ...ctx, reuse: true }),
      'INVALID_ARGUMENT',
      /nested/,
    );
    await expect(stat(join(storePath, 'sub'))).rejects.toThrow();
    await expect(stat(join(tmp, 'elsewhere'))).rejects.toThrow();
    expect((await readDatastoreConfig(dirs)).entries.map((e) => e.name)).toEqual(['store1']);
  });

  it('reads a missing datastore.cfg as empty', async () => {
    const empty = { ...dirs, configDir: join(tmp, 'no-config') };
    expect((await readDatastoreConfig(empty)).entries).toEqual([]);
    await expectCode(DataStore.lookup('store1', { dirs: empty }), 'NOT_FOUND');
  });

  it('renews the cached instance when the configured path or options change', async () => {
    const own = { ...dirs, configDir: join(tmp, 'etc-cache') };
    const a = await fakeStoreDir(join(tmp, 'fake-a'));
    const b = await fakeStoreDir(join(tmp, 'fake-b'));
    const setStore = (props: { path: string; tuning?: string }) =>
      updateDatastoreConfig(own, () => [{ name: 'cached', props }]);
    await setStore({ path: a });
    const first = await DataStore.lookup('cached', { dirs: own });
    expect(first.base).toBe(a);
    expect(await DataStore.lookup('cached', { dirs: own })).toBe(first);
    await setStore({ path: b });
    const second = await DataStore.lookup('cached', { dirs: own });
    expect(second).not.toBe(first);
    expect(second.base).toBe(b);
    await setStore({ path: b, tuning: 'chunk-order=none' });
    const third = await DataStore.lookup('cached', { dirs: own });
    expect(third).not.toBe(second);
    expect(third.tuning.chunkOrder).toBe('none');
    // An S3 store is not ours to open.
    await updateDatastoreConfig(own, () => [
      { name: 's3store', props: { path: a, backend: 'type=s3,client=c1,bucket=b1' } },
    ]);
    await expectCode(DataStore.lookup('s3store', { dirs: own }), 'DATASTORE_INVALID', /S3/);
  });

  it('checks the maintenance mode at every lookup for an operation, cached instance or not', async () => {
    const own = { ...dirs, configDir: join(tmp, 'etc-maintenance') };
    const path = await fakeStoreDir(join(tmp, 'fake-maintenance'));
    const setMode = (mode?: string) =>
      updateDatastoreConfig(own, () => [
        {
          name: 'maint',
          props: { path, ...(mode === undefined ? {} : { 'maintenance-mode': mode }) },
        },
      ]);
    await setMode('read-only,message=disk swap');
    const read = await DataStore.lookup('maint', { dirs: own, operation: 'read' });
    // The same cached instance, asked for writing, is refused.
    await expectCode(
      DataStore.lookup('maint', { dirs: own, operation: 'write' }),
      'MAINTENANCE_MODE',
      'read-only maintenance mode: disk swap',
    );
    expect(await DataStore.lookup('maint', { dirs: own })).toBe(read);
    expect(() => read.checkMaintenance('write')).toThrow(/read-only maintenance mode/);
    read.checkMaintenance('read');
    await setMode('offline');
    await expectCode(
      DataStore.lookup('maint', { dirs: own, operation: 'read' }),
      'MAINTENANCE_MODE',
      'offline maintenance mode: ',
    );
    await setMode('delete');
    await expectCode(
      DataStore.lookup('maint', { dirs: own, operation: 'read' }),
      'MAINTENANCE_MODE',
      'datastore is being deleted',
    );
    await setMode(undefined);
    (await DataStore.lookup('maint', { dirs: own, operation: 'write' })).checkMaintenance('write');
  });

  it('opens a store by path: the configured name when configured, a stable path name otherwise', async () => {
    expect((await DataStore.openPath(storePath, { dirs })).name).toBe('store1');
    const c = await fakeStoreDir(join(tmp, 'fake-c'));
    const byAbsolute = await DataStore.openPath(c, { dirs });
    const byRelative = await DataStore.openPath(relative(process.cwd(), c), { dirs });
    const expected =
      PATH_STORE_NAME_PREFIX + createHash('sha256').update(c).digest('hex').slice(0, 16);
    expect(byAbsolute.name).toBe(expected);
    expect(byRelative.name).toBe(expected);
    expect(byAbsolute.base).toBe(c);
    expect(byAbsolute.config).toBeUndefined();
    expect(byAbsolute.tuning.syncLevel).toBe('filesystem');
    await expectCode(DataStore.openPath(join(tmp, 'not-a-store'), { dirs }), 'DATASTORE_INVALID');
  });
});

describe('.gc-status', () => {
  it('round-trips compact JSON and falls back to defaults for a corrupt file', async () => {
    const dir = await fakeStoreDir(join(tmp, 'fake-gc'));
    const warnings: string[] = [];
    const ds = await DataStore.openPath(dir, { dirs, log: (l) => warnings.push(l) });
    expect(ds.gcStatus()).toEqual(defaultGcStatus());
    const status: GcStatusData = {
      ...defaultGcStatus(),
      upid: 'UPID:node:00000001:00000002:00000003:65000000:garbage_collection:store1:root@pam:',
      'index-file-count': 2,
      'disk-bytes': 1234,
      'disk-chunks': 3,
      'cache-stats': { hits: 5, misses: 6 },
    };
    await ds.saveGcStatus(status);
    expect(await readFile(join(dir, '.gc-status'), 'utf8')).toBe(
      '{"upid":"UPID:node:00000001:00000002:00000003:65000000:garbage_collection:store1:root@pam:",' +
        '"index-file-count":2,"index-data-bytes":0,"disk-bytes":1234,"disk-chunks":3,"removed-bytes":0,' +
        '"removed-chunks":0,"pending-bytes":0,"pending-chunks":0,"removed-bad":0,"still-bad":0,' +
        '"cache-stats":{"hits":5,"misses":6}}',
    );
    expect((await DataStore.openPath(dir, { dirs })).gcStatus()).toEqual(status);

    await writeFile(join(dir, '.gc-status'), '{"upid": null, "disk-bytes": "lots"');
    const reopened = await DataStore.openPath(dir, { dirs, log: (l) => warnings.push(l) });
    expect(reopened.gcStatus()).toEqual(defaultGcStatus());
    expect(warnings.some((w) => w.startsWith('WARN:') && w.includes('.gc-status'))).toBe(true);
  });

  it('parses what PBS 3 writes (no cache-stats) and refuses wrong types', () => {
    const text = serializeGcStatus(defaultGcStatus());
    expect(text).not.toContain('cache-stats');
    expect(parseGcStatus('{"upid":null,"removed-bad":4}')['removed-bad']).toBe(4);
    expect(() => parseGcStatus('{"disk-chunks":-1}')).toThrow(/disk-chunks/);
    expect(() => parseGcStatus('[]')).toThrow();
  });
});

describe('namespaces', () => {
  const ns = (text: string) => parseNamespace(text);

  it('creates namespaces below existing parents only, up to depth 7', async () => {
    await store.createNamespace(ns('a'));
    await store.createNamespace(ns('a/b'));
    await stat(join(storePath, 'ns/a/ns/b'));
    await expectCode(store.createNamespace(ns('x/y')), 'NOT_FOUND', /parent/);
    await expectCode(store.createNamespace(ns('a')), 'ALREADY_EXISTS');
    await expectCode(store.createNamespace(ROOT_NAMESPACE), 'ALREADY_EXISTS');
    const deep = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7'];
    for (let i = 1; i <= deep.length; i++)
      await store.createNamespace(ns(deep.slice(0, i).join('/')));
    expect(await store.namespaceExists(ns(deep.join('/')))).toBe(true);
    await expectCode(
      store.createNamespace({ components: [...deep, 'd8'] }),
      'INVALID_NAMESPACE',
      /deeper/,
    );
    await expectCode(store.listGroups({ components: ['bad name'] }), 'INVALID_NAMESPACE');
  });

  it('lists recursively in tree order, skipping entries that are no namespace', async () => {
    await store.createNamespace(ns('a/c'));
    await store.createNamespace(ns('a.z'));
    await writeFile(join(storePath, 'ns/a/ns/file'), 'not a dir');
    await mkdir(join(storePath, 'ns/a/ns/bad name!'));
    await mkdir(join(storePath, 'ns/a/ns/.hidden'));
    await mkdir(join(storePath, 'ns/lost+found'));
    const all = (await store.listNamespaces(ROOT_NAMESPACE)).map(namespaceToString);
    expect(all.slice(0, 6)).toEqual(['', 'a', 'a/b', 'a/c', 'a.z', 'd1']);
    expect(all).toContain('d1/d2/d3/d4/d5/d6/d7');
    expect((await store.listNamespaces(ns('a'), 0)).map(namespaceToString)).toEqual(['a']);
    expect((await store.listNamespaces(ROOT_NAMESPACE, 1)).map(namespaceToString)).toEqual([
      '',
      'a',
      'a.z',
      'd1',
    ]);
    await expectCode(store.listNamespaces(ns('missing')), 'NOT_FOUND');
    await expectCode(store.listNamespaces(ROOT_NAMESPACE, 8), 'INVALID_ARGUMENT');
  });

  it('removes namespaces with and without their groups; protected snapshots block full removal', async () => {
    await store.createNamespace(ns('rm'));
    await store.createNamespace(ns('rm/child'));
    await store.createNamespace(ns('rm/child/leaf'));
    const g1 = group(ns('rm'), 'vm', '1');
    const g2 = group(ns('rm/child'), 'ct', '2');
    await makeSnapshot(snap(g1, CLOCK_START));
    await makeSnapshot(snap(g2, CLOCK_START));
    await makeSnapshot(snap(g2, CLOCK_START + 10), { protected: true });

    // Without deleteGroups only empty namespaces go.
    expect(await store.removeNamespace(ns('rm'), { deleteGroups: false })).toEqual({
      removedAll: false,
    });
    expect(await store.namespaceExists(ns('rm/child/leaf'))).toBe(false);
    expect(await store.namespaceExists(ns('rm/child'))).toBe(true);
    expect(await store.listGroups(ns('rm'))).toEqual([g1]);

    // With deleteGroups everything goes except the protected snapshot and the path to it.
    expect(await store.removeNamespace(ns('rm'), { deleteGroups: true })).toEqual({
      removedAll: false,
    });
    expect(await store.listGroups(ns('rm'))).toEqual([]);
    expect((await store.listSnapshots(g2)).map((s) => s.dir.time)).toEqual([CLOCK_START + 10]);

    await store.setProtected(snap(g2, CLOCK_START + 10), false);
    expect(await store.removeNamespace(ns('rm'), { deleteGroups: true })).toEqual({
      removedAll: true,
    });
    expect(await store.namespaceExists(ns('rm'))).toBe(false);
    await expectCode(store.removeNamespace(ns('rm'), { deleteGroups: true }), 'NOT_FOUND');
    await expectCode(
      store.removeNamespace(ROOT_NAMESPACE, { deleteGroups: true }),
      'INVALID_ARGUMENT',
    );
  });
});

describe('groups and snapshots', () => {
  const listNs = parseNamespace('list');
  const vm100 = group(listNs, 'vm', '100');
  const t1 = parseBackupTime('2024-01-01T00:00:00Z');
  const t2 = parseBackupTime('2024-01-02T00:00:00Z');
  const t3 = parseBackupTime('2024-01-03T00:00:00Z');
  const t4 = parseBackupTime('2024-01-04T00:00:00Z');

  beforeAll(async () => {
    await store.createNamespace(listNs);
    for (const [type, id] of [
      ['vm', 'abc'],
      ['vm', '20'],
      ['host', 'foo'],
      ['ct', '5'],
    ] as const) {
      await ensureGroup(group(listNs, type, id));
    }
    await makeSnapshot(snap(vm100, t1));
    await makeSnapshot(snap(vm100, t2), { finished: false });
    await makeSnapshot(snap(vm100, t3));
    await makeSnapshot(snap(vm100, t4), { finished: false });
    const nsDir = join(storePath, 'ns/list');
    // Hostile entries: bad names, files where directories belong, hidden entries.
    await mkdir(join(nsDir, 'vm/bad id'));
    await mkdir(join(nsDir, 'vm/.hidden'));
    await writeFile(join(nsDir, 'vm/999'), 'a file, not a group');
    await mkdir(join(nsDir, 'qq/1'), { recursive: true });
    await mkdir(join(nsDir, 'lost+found'));
    const g = join(nsDir, 'vm/100');
    await mkdir(join(g, 'not-a-time'));
    await mkdir(join(g, '2024-02-30T00:00:00Z'));
    await writeFile(join(g, '2024-03-01T00:00:00Z'), 'a file named like a snapshot');
    // The manifest of t3 is damaged; t4 has a directory where the manifest would be.
    await writeFile(join(g, formatBackupTime(t3), 'index.json.blob'), 'garbage, not a blob at all');
    await mkdir(join(g, formatBackupTime(t4), 'index.json.blob'));
    await writeFile(join(g, formatBackupTime(t1), 'notes.txt'), 'not an archive');
    await writeFile(join(g, formatBackupTime(t1), 'client.log.blob'), 'log');
  });

  it('lists groups sorted as PBS does, skipping what does not parse', async () => {
    expect((await store.listGroups(listNs)).map(formatGroup)).toEqual([
      'ns/list/ct/5',
      'ns/list/host/foo',
      'ns/list/vm/20',
      'ns/list/vm/100',
      'ns/list/vm/abc',
    ]);
    await expectCode(store.listGroups(parseNamespace('nope')), 'NOT_FOUND');
  });

  it('lists snapshots oldest first with finished, protected and files; damage does not break it', async () => {
    const infos = await store.listSnapshots(vm100);
    expect(infos.map((i) => i.dir.time)).toEqual([t1, t2, t3, t4]);
    expect(infos.map((i) => i.finished)).toEqual([true, false, true, false]);
    expect(infos[0]?.files).toEqual([
      'client.log.blob',
      'drive-scsi0.img.fidx',
      'index.json.blob',
      'qemu-server.conf.blob',
    ]);
    expect(infos[3]?.files).toEqual(['drive-scsi0.img.fidx', 'qemu-server.conf.blob']);
    expect(infos[0]?.path).toBe(join(storePath, 'ns/list/vm/100/2024-01-01T00:00:00Z'));
    expect(infos.every((i) => !i.protected && i.error === undefined)).toBe(true);
    expect(await store.lastSuccessfulBackup(vm100)).toBe(t3);
    expect(await store.lastSuccessfulBackup(group(listNs, 'vm', '20'))).toBeUndefined();
    expect(await store.listSnapshots(group(listNs, 'vm', '20'))).toEqual([]);
    await expectCode(store.listSnapshots(group(listNs, 'vm', '404')), 'NOT_FOUND');
    await expectCode(store.snapshotInfo(snap(vm100, t1 + 1)), 'NOT_FOUND');
  });

  it('names the damaged file when reading it fails', async () => {
    const err = await expectCode(store.loadManifest(snap(vm100, t3)), 'BLOB_BAD_MAGIC');
    expect(err.message).toContain(
      join(storePath, 'ns/list/vm/100/2024-01-03T00:00:00Z/index.json.blob'),
    );
    const index = join(storePath, 'ns/list/vm/100/2024-01-02T00:00:00Z/drive-scsi0.img.fidx');
    await writeFile(index, (await readFile(index)).subarray(0, 100));
    const bad = await expectCode(
      store.openIndex(snap(vm100, t2), 'drive-scsi0.img.fidx'),
      'INDEX_BAD_SIZE',
    );
    expect(bad.message).toContain(index);
    const good = await store.openIndex(snap(vm100, t1), 'drive-scsi0.img.fidx');
    expect(good.kind).toBe('fixed');
    expect(good.index.ctime).toBe(CLOCK_START);
  });

  it('lists an unreadable snapshot with its error', async () => {
    // Root reads any directory whatever its mode, so the read happens in a child process that
    // drops to uid 65534 when started as root; the tree it reads must be traversable by it.
    const base = await mkdtemp(join(tmpdir(), 'burrow-unreadable-'));
    try {
      await chmod(base, 0o755);
      const time = formatBackupTime(t1);
      const snapDir = join(base, 'vm/100', time);
      await mkdir(snapDir, { recursive: true, mode: 0o755 });
      await writeFile(join(snapDir, 'index.json.blob'), '');
      await chmod(snapDir, 0o000);
      const child = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          fileURLToPath(new URL('../../test/helpers/read-snapshot-as-nobody.ts', import.meta.url)),
          base,
          'vm',
          '100',
          String(t1),
        ],
        { encoding: 'utf8' },
      );
      expect(child.stderr).toBe('');
      const info = JSON.parse(child.stdout) as { uid: number; error?: string; files: string[] };
      expect(info.uid).not.toBe(0);
      expect(info.error).toMatch(/EACCES/);
      expect(info.error).toContain(snapDir);
      expect(info.files).toEqual([]);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});

describe('damaged indexes', () => {
  const damagedNs = parseNamespace('damaged');
  const vm300 = group(damagedNs, 'vm', '300');
  const [truncated, flipped, good] = [1, 2, 3].map((day) =>
    snap(vm300, `2024-02-0${day}T00:00:00Z`),
  ) as [BackupDir, BackupDir, BackupDir];
  const fidx = 'drive-scsi0.img.fidx';

  beforeAll(async () => {
    await store.createNamespace(damagedNs);
    for (const dir of [truncated, flipped, good]) await makeSnapshot(dir);
    // One chunk: a 4096-byte header and one 32-byte digest. Cut the digest in half...
    const cut = store.archivePath(truncated, fidx);
    await writeFile(cut, (await readFile(cut)).subarray(0, 4096 + 16));
    // ...and, in the other, flip a bit of it: the file still parses, its csum is wrong.
    const flip = store.archivePath(flipped, fidx);
    const bytes = await readFile(flip);
    bytes.writeUInt8(bytes.readUInt8(4096 + 5) ^ 0x10, 4096 + 5);
    await writeFile(flip, bytes);
  });

  it('listing does not read indexes: every snapshot is listed, finished, without error', async () => {
    const expected = (dir: BackupDir) => ({
      dir,
      path: join(storePath, 'ns/damaged/vm/300', formatBackupTime(dir.time)),
      finished: true,
      protected: false,
      files: [fidx, 'index.json.blob', 'qemu-server.conf.blob'],
    });
    expect(await store.listSnapshots(vm300)).toEqual([truncated, flipped, good].map(expected));
    for (const dir of [truncated, flipped, good]) {
      expect(await store.snapshotInfo(dir)).toEqual(expected(dir));
    }
    expect((await store.listGroups(damagedNs)).map(formatGroup)).toEqual(['ns/damaged/vm/300']);
    expect(await store.lastSuccessfulBackup(vm300)).toBe(good.time);
  });

  it('opening the truncated index fails naming the file; the others open', async () => {
    const path = store.archivePath(truncated, fidx);
    const err = await expectCode(store.openIndex(truncated, fidx), 'INDEX_BAD_SIZE');
    expect(err.message).toContain(path);
    expect(err.message).toContain(`fixed index is ${4096 + 16} bytes`);

    // The flipped bit is only visible against the manifest's csum (what verify checks).
    const csumOf = async (dir: BackupDir): Promise<{ actual: string; manifest?: string }> => {
      const index = await store.openIndex(dir, fidx);
      const { manifest } = await store.loadManifest(dir);
      return {
        actual: Buffer.from(index.index.computeCsum()).toString('hex'),
        manifest: manifest.files.find((f) => f.filename === fidx)?.csum,
      };
    };
    const bad = await csumOf(flipped);
    expect(bad.manifest).toMatch(/^[0-9a-f]{64}$/);
    expect(bad.actual).not.toBe(bad.manifest);
    const ok = await csumOf(good);
    expect(ok.actual).toBe(ok.manifest);
  });
});

describe('owners and locked creation', () => {
  const ownNs = parseNamespace('owners');
  beforeAll(() => store.createNamespace(ownNs));

  it('creates a group with its owner file and checks the owner of an existing one', async () => {
    const g = group(ownNs, 'vm', '100');
    const first = await store.createLockedBackupGroup(g, ROOT_PAM);
    expect(first.owner).toEqual(ROOT_PAM);
    expect(await readFile(join(store.groupPath(g), 'owner'), 'utf8')).toBe('root@pam\n');
    // Group locks are exclusive and non-blocking, also within one process.
    await expectCode(store.createLockedBackupGroup(g, ROOT_PAM), 'LOCKED');
    await expectCode(store.lockGroup(g, true), 'LOCKED');
    await first.guard.release();
    const again = await store.createLockedBackupGroup(g, ROOT_PAM);
    await again.guard.release();
    await expectCode(store.createLockedBackupGroup(g, OTHER), 'PERMISSION_DENIED', /root@pam/);
    await expectCode(store.createLockedBackupGroup(g, ROOT_TOKEN), 'PERMISSION_DENIED');
    await expectCode(
      store.createLockedBackupGroup(group(parseNamespace('nope'), 'vm', '1'), ROOT_PAM),
      'NOT_FOUND',
    );
  });

  it('takes back a group directory it created but could not lock, so no ownerless group remains', async () => {
    const g = group(ownNs, 'vm', 'racing');
    // Someone (a removal in progress, another process) holds the lock of a group with no directory.
    const holder = await store.lockGroup(g, true);
    await expectCode(store.createLockedBackupGroup(g, ROOT_PAM), 'LOCKED');
    await expect(stat(store.groupPath(g))).rejects.toMatchObject({ code: 'ENOENT' });
    await holder.release();
    const created = await store.createLockedBackupGroup(g, ROOT_PAM);
    expect(created.owner).toEqual(ROOT_PAM);
    await created.guard.release();
  });

  it('lets a user write to its token’s group, not the reverse', async () => {
    const tokenGroup = group(ownNs, 'ct', 'tok');
    const created = await store.createLockedBackupGroup(tokenGroup, ROOT_TOKEN);
    await created.guard.release();
    const byUser = await store.createLockedBackupGroup(tokenGroup, ROOT_PAM);
    expect(byUser.owner).toEqual(ROOT_TOKEN);
    await byUser.guard.release();
    await expectCode(
      store.createLockedBackupGroup(tokenGroup, parseAuthid('root@pam!other')),
      'PERMISSION_DENIED',
    );
  });

  it('set_owner without force refuses to replace, with force replaces; reading trims the first line', async () => {
    const g = group(ownNs, 'host', 'h1');
    await ensureGroup(g);
    await expectCode(store.setOwner(g, OTHER, false), 'ALREADY_EXISTS');
    await store.setOwner(g, OTHER, true);
    expect(await store.getOwner(g)).toEqual(OTHER);
    await writeFile(join(store.groupPath(g), 'owner'), 'user@pbs \t\r\nsecond line\n');
    expect(await store.getOwner(g)).toEqual(parseAuthid('user@pbs'));
    await writeFile(join(store.groupPath(g), 'owner'), 'no-realm\n');
    const err = await expectCode(store.getOwner(g), 'INVALID_AUTHID');
    expect(err.message).toContain(join(store.groupPath(g), 'owner'));
    await rm(join(store.groupPath(g), 'owner'));
    await expectCode(store.getOwner(g), 'NOT_FOUND');
    await store.setOwner(g, ROOT_PAM, false);
    expect(await store.getOwner(g)).toEqual(ROOT_PAM);
    await expectCode(store.setOwner(group(ownNs, 'host', 'none'), ROOT_PAM, true), 'NOT_FOUND');
  });

  it('creates a snapshot directory once, locked, with lock files at the PBS 4 paths', async () => {
    const abNs = parseNamespace('a/b');
    if (!(await store.namespaceExists(abNs))) {
      await store.createNamespace(parseNamespace('a')).catch(() => undefined);
      await store.createNamespace(abNs);
    }
    const g = group(abNs, 'vm', '100');
    await ensureGroup(g);
    const dir = snap(g, '2022-05-02T08:11:33Z');
    const created = await store.createLockedBackupDir(dir);
    expect(created.isNew).toBe(true);
    expect(created.path).toBe(join(storePath, 'ns/a/ns/b/vm/100/2022-05-02T08:11:33Z'));
    const lockDir = join(dirs.runDir, 'locks', 'store1', 'a:b');
    // Names from pbs-formats §6.7.
    expect(created.guard.path).toBe(join(lockDir, 'vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z'));
    expect(store.groupLockPath(g)).toBe(join(lockDir, 'vm-100'));
    expect(store.manifestLockPath(dir)).toBe(
      join(lockDir, 'vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z-.index.json.lck'),
    );
    expect(store.groupLockPath(group(ROOT_NAMESPACE, 'vm', '100'))).toBe(
      join(dirs.runDir, 'locks', 'store1', 'vm-100'),
    );
    expect((await readdir(lockDir)).sort()).toEqual([
      'vm-100',
      'vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z',
    ]);
    expect((await stat(created.guard.path)).mode & 0o777).toBe(0o660);

    // The directory exists and the first guard holds it.
    await expectCode(store.createLockedBackupDir(dir), 'LOCKED');
    await expectCode(store.lockSnapshot(dir, false), 'LOCKED');
    await expectCode(store.removeBackupDir(dir, false), 'LOCKED');
    await created.guard.release();
    const again = await store.createLockedBackupDir(dir);
    expect(again.isNew).toBe(false);
    expect(again.path).toBe(created.path);
    await again.guard.release();
    const shared1 = await store.lockSnapshot(dir, false);
    const shared2 = await store.lockSnapshot(dir, false);
    await expectCode(store.lockSnapshot(dir, true), 'LOCKED');
    await shared1.release();
    await shared2.release();
    await expectCode(
      store.createLockedBackupDir(snap(group(abNs, 'vm', '404'), CLOCK_START)),
      'NOT_FOUND',
    );
  });
});

describe('protection, removal, notes, manifests', () => {
  const remNs = parseNamespace('removal');
  beforeAll(() => store.createNamespace(remNs));

  it('protected snapshots cannot be removed, with or without force', async () => {
    const g = group(remNs, 'vm', '1');
    const dir = snap(g, CLOCK_START);
    await makeSnapshot(dir, { protected: true });
    expect(await store.isProtected(dir)).toBe(true);
    expect((await store.snapshotInfo(dir)).protected).toBe(true);
    expect((await store.snapshotInfo(dir)).files).not.toContain('.protected');
    await expectCode(store.removeBackupDir(dir, false), 'PROTECTED');
    await expectCode(store.removeBackupDir(dir, true), 'PROTECTED');
    await store.setProtected(dir, false);
    expect(await store.isProtected(dir)).toBe(false);

    // Lock files exist once locks were taken; removal deletes them with the snapshot and the
    // then-empty group (owner, directory, group lock file).
    await (await store.lockManifest(dir)).release();
    await stat(store.snapshotLockPath(dir));
    await stat(store.manifestLockPath(dir));
    await store.removeBackupDir(dir, false);
    await expect(stat(store.snapshotPath(dir))).rejects.toThrow();
    await expect(stat(store.snapshotLockPath(dir))).rejects.toThrow();
    await expect(stat(store.manifestLockPath(dir))).rejects.toThrow();
    await expect(stat(store.groupPath(g))).rejects.toThrow();
    await expect(stat(store.groupLockPath(g))).rejects.toThrow();
    await expectCode(store.removeBackupDir(dir, false), 'NOT_FOUND');
  });

  it('keeps the group when a snapshot removal leaves others, or when the group is locked', async () => {
    const g = group(remNs, 'vm', '2');
    await makeSnapshot(snap(g, CLOCK_START));
    await makeSnapshot(snap(g, CLOCK_START + 1));
    await store.removeBackupDir(snap(g, CLOCK_START), false);
    expect((await store.listSnapshots(g)).length).toBe(1);
    const groupGuard = await store.lockGroup(g, true);
    await store.removeBackupDir(snap(g, CLOCK_START + 1), false);
    await groupGuard.release();
    // The group could not be locked, so it stayed (empty, with its owner).
    expect(await store.getOwner(g)).toEqual(ROOT_PAM);
    expect(await store.removeBackupGroup(g)).toEqual({
      removedAll: true,
      removedSnapshots: 0,
      keptSnapshots: 0,
    });
  });

  it('refuses removal while another process holds the snapshot lock', async () => {
    const g = group(remNs, 'vm', '3');
    const dir = snap(g, CLOCK_START);
    await makeSnapshot(dir);
    const holder = await LockHolder.start();
    try {
      const id = await holder.take('flock-shared', store.snapshotLockPath(dir));
      await expectCode(store.removeBackupDir(dir, false), 'LOCKED');
      await holder.release(id);
      await store.removeBackupDir(dir, false);
    } finally {
      await holder.stop();
    }
  });

  it('removes a group except its protected snapshots', async () => {
    const g = group(remNs, 'ct', '4');
    await makeSnapshot(snap(g, CLOCK_START));
    await makeSnapshot(snap(g, CLOCK_START + 1), { protected: true });
    await makeSnapshot(snap(g, CLOCK_START + 2), { finished: false });
    await store.setGroupNotes(g, 'group notes');
    expect(await store.removeBackupGroup(g)).toEqual({
      removedAll: false,
      removedSnapshots: 2,
      keptSnapshots: 1,
    });
    expect((await store.listSnapshots(g)).map((s) => s.dir.time)).toEqual([CLOCK_START + 1]);
    expect(await store.getGroupNotes(g)).toBe('group notes');
    await store.setProtected(snap(g, CLOCK_START + 1), false);
    expect(await store.removeBackupGroup(g)).toEqual({
      removedAll: true,
      removedSnapshots: 1,
      keptSnapshots: 0,
    });
    await expect(stat(store.groupPath(g))).rejects.toThrow();
    await expectCode(store.removeBackupGroup(g), 'NOT_FOUND');
  });

  it('keeps group and snapshot notes', async () => {
    const g = group(remNs, 'host', 'notes');
    const dir = snap(g, CLOCK_START);
    await makeSnapshot(dir);
    expect(await store.getGroupNotes(g)).toBe('');
    await store.setGroupNotes(g, 'line 1\nline 2\n');
    expect(await readFile(join(store.groupPath(g), 'notes'), 'utf8')).toBe('line 1\nline 2\n');
    expect(await store.getSnapshotNotes(dir)).toBe('');
    await store.setSnapshotNotes(dir, 'first line\nmore');
    expect(await store.getSnapshotNotes(dir)).toBe('first line\nmore');
    await expectCode(store.getGroupNotes(group(remNs, 'host', 'none')), 'NOT_FOUND');
  });

  it('updates the manifest under its lock, keeping the signature and every other field', async () => {
    const g = group(remNs, 'vm', 'manifest');
    const dir = snap(g, CLOCK_START);
    const signature = 'ab'.repeat(32);
    await makeSnapshot(dir, {
      manifest: (m) => {
        m.signature = signature;
        m.unprotected = {
          note: 'kept',
          chunk_upload_stats: { count: 1, size: 2, compressed_size: 3, duplicates: 0 },
        };
        m.extra = { 'future-field': [1, 2] };
      },
    });
    const before = (await store.loadManifest(dir)).manifest;
    const updated = await store.updateManifest(dir, (m) => {
      m.unprotected['verify_state'] = { state: 'ok', upid: 'UPID:x' };
    });
    const { manifest, raw } = await store.loadManifest(dir);
    expect(manifest).toEqual(updated);
    expect(manifest.signature).toBe(signature);
    expect(manifest.files).toEqual(before.files);
    expect(manifest.extra).toEqual({ 'future-field': [1, 2] });
    expect(manifest.unprotected).toEqual({
      ...before.unprotected,
      verify_state: { state: 'ok', upid: 'UPID:x' },
    });
    // Unencrypted blob, PBS's pretty sorted JSON inside.
    expect(['plain', 'zstd']).toContain(blobKindOf(raw.subarray(0, 8)));
    expect(Buffer.from(decodeBlob(raw)).toString('utf8')).toBe(serializeManifest(manifest));
    expect(parseManifest(decodeBlob(raw))).toEqual(manifest);
    expect((await readdir(store.snapshotPath(dir))).filter((n) => n.includes('tmp'))).toEqual([]);

    // The manifest lock is exclusive: an update waits for it (up to 5 s), then proceeds.
    const held = await store.lockManifest(dir);
    const waiting = store.setSnapshotNotes(dir, 'after the lock');
    await sleep(50);
    await held.release();
    await waiting;
    expect(await store.getSnapshotNotes(dir)).toBe('after the lock');

    // A failing update writes nothing.
    await expect(
      store.updateManifest(dir, () => {
        throw new Error('no');
      }),
    ).rejects.toThrow('no');
    expect(await store.getSnapshotNotes(dir)).toBe('after the lock');
    await expectCode(
      store.updateManifest(snap(group(remNs, 'vm', 'x'), 5), () => {}),
      'NOT_FOUND',
    );
  });

  it('cleans up files the manifest does not name', async () => {
    const g = group(remNs, 'vm', 'cleanup');
    const dir = snap(g, CLOCK_START);
    await makeSnapshot(dir, { protected: true });
    const path = store.snapshotPath(dir);
    await writeFile(join(path, 'junk.blob'), 'x');
    await writeFile(join(path, 'drive-scsi1.img.tmp_fidx'), 'x');
    await writeFile(join(path, 'client.log.blob'), 'x');
    await mkdir(join(path, 'subdir'));
    const { manifest } = await store.loadManifest(dir);
    expect(await store.cleanupBackupDir(dir, manifest)).toEqual([
      'drive-scsi1.img.tmp_fidx',
      'junk.blob',
    ]);
    expect((await readdir(path)).sort()).toEqual([
      '.protected',
      'client.log.blob',
      'drive-scsi0.img.fidx',
      'index.json.blob',
      'qemu-server.conf.blob',
      'subdir',
    ]);
  });

  it('loads and writes blobs with CRC checks and safe names', async () => {
    const g = group(remNs, 'vm', 'blobs');
    const dir = snap(g, CLOCK_START);
    await makeSnapshot(dir);
    const raw = encodeBlob(new Uint8Array(Buffer.from('fw config')));
    await store.writeBlob(dir, 'fw.conf.blob', raw);
    expect(await store.loadBlob(dir, 'fw.conf.blob')).toEqual(raw);
    const bad = raw.slice();
    bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 1;
    await expectCode(store.writeBlob(dir, 'bad.conf.blob', bad), 'BLOB_CRC_MISMATCH');
    await writeFile(store.archivePath(dir, 'bad.conf.blob'), bad);
    const err = await expectCode(store.loadBlob(dir, 'bad.conf.blob'), 'BLOB_CRC_MISMATCH');
    expect(err.message).toContain(store.archivePath(dir, 'bad.conf.blob'));
    await expectCode(store.loadBlob(dir, 'missing.blob'), 'NOT_FOUND');
    await expectCode(store.loadBlob(dir, '../x.blob'), 'INVALID_ARCHIVE_NAME');
    await expectCode(store.writeBlob(dir, 'x.fidx', raw), 'INVALID_ARCHIVE_NAME');
    expect(() => store.archivePath(dir, '../../owner')).toThrow(/invalid file name/);
  });
});

describe('index writers', () => {
  it('hold the chunk store shared lock while open, across processes too', async () => {
    const g = group(ROOT_NAMESPACE, 'vm', 'writers');
    await ensureGroup(g);
    const dir = snap(g, CLOCK_START);
    const { guard } = await store.createLockedBackupDir(dir);
    const holder = await LockHolder.start();
    try {
      expect(store.chunkStore.oldestWriter()).toBeUndefined();
      const fixed = await store.createFixedWriter(dir, 'disk.img.fidx', 100);
      expect(store.chunkStore.oldestWriter()).toBe(CLOCK_START);
      // GC in another process cannot start while a writer is open (pbs-formats §2.6).
      await expect(holder.take('exclusive', join(storePath, '.lock'))).rejects.toThrow(/LOCKED/);
      const dynamic = await store.createDynamicWriter(dir, 'root.pxar.didx');
      await fixed.abort();
      expect(store.chunkStore.oldestWriter()).toBe(CLOCK_START);
      const { digest, blob } = encodeChunk(new Uint8Array(10));
      await store.insertChunk(blob, digest);
      await dynamic.append(10, digest);
      const closed = await dynamic.close();
      expect(closed.count).toBe(1);
      expect(store.chunkStore.oldestWriter()).toBeUndefined();
      const id = await holder.take('exclusive', join(storePath, '.lock'));
      await holder.release(id);
      expect(await store.loadChunk(digest)).toEqual(blob);

      // A writer that fails to close for a gap stays open and keeps the lock until aborted.
      const gappy = await store.createFixedWriter(dir, 'gap.img.fidx', 8 * 1024 * 1024);
      await gappy.setDigest(0, digest);
      await expectCode(gappy.close(), 'INDEX_WRITER_STATE');
      expect(store.chunkStore.oldestWriter()).toBe(CLOCK_START);
      await gappy.abort();
      expect(store.chunkStore.oldestWriter()).toBeUndefined();
      await expectCode(store.createFixedWriter(dir, 'disk.img.didx', 100), 'INVALID_ARCHIVE_NAME');
    } finally {
      await holder.stop();
      await guard.release();
    }
  });
});

describe('pruneGroup', () => {
  const pruneNs = parseNamespace('prune');
  const g = group(pruneNs, 'vm', '300');
  const day = (n: number): number => parseBackupTime('2024-03-01T12:00:00Z') + n * DAY;
  const label = (n: number): string => formatBackupTime(day(n));

  beforeAll(async () => {
    await store.createNamespace(pruneNs);
    await makeSnapshot(snap(g, day(0)), { finished: false });
    for (const n of [1, 2, 4, 5]) await makeSnapshot(snap(g, day(n)));
    await makeSnapshot(snap(g, day(3)), { protected: true });
    await makeSnapshot(snap(g, day(6)), { finished: false });
  });

  const expectedMarks = [
    [0, 'remove'],
    [1, 'remove'],
    [2, 'remove'],
    [3, 'protected'],
    [4, 'remove'],
    [5, 'keep'],
    [6, 'keep-partial'],
  ] as const;

  it('dry run returns the marks oldest first and removes nothing', async () => {
    const lines: string[] = [];
    const result = await store.pruneGroup(
      g,
      { keepLast: 1 },
      { dryRun: true, timeZone: 'UTC', log: (l) => lines.push(l) },
    );
    expect(result.map((r) => [r.dir.time, r.mark])).toEqual(
      expectedMarks.map(([n, m]) => [day(n), m]),
    );
    expect(result.every((r) => !r.removed)).toBe(true);
    expect((await store.listSnapshots(g)).length).toBe(7);
    expect(lines).toEqual([
      'retention options: --ns prune --keep-last 1',
      `Starting prune on datastore 'store1', namespace 'prune' group "vm/300"`,
      ...expectedMarks.map(([n, m]) => `vm/300/${label(n)} ${m}`),
    ]);
  });

  it('removes oldest first; a locked snapshot fails alone and is logged', async () => {
    const lines: string[] = [];
    const warnings: string[] = [];
    const held = await store.lockSnapshot(snap(g, day(2)), false);
    let result;
    try {
      result = await store.pruneGroup(
        g,
        { keepLast: 1 },
        {
          dryRun: false,
          timeZone: 'UTC',
          log: (l) => lines.push(l),
          warn: (l) => warnings.push(l),
        },
      );
    } finally {
      await held.release();
    }
    expect(result.map((r) => [r.dir.time, r.removed])).toEqual([
      [day(0), true],
      [day(1), true],
      [day(2), false],
      [day(3), false],
      [day(4), true],
      [day(5), false],
      [day(6), false],
    ]);
    expect(result[2]?.error).toMatch(/locked/);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`failed to remove dir "ns/prune/vm/300/${label(2)}"`);
    expect((await store.listSnapshots(g)).map((s) => s.dir.time)).toEqual([
      day(2),
      day(3),
      day(5),
      day(6),
    ]);
  });

  it('keeps everything without keep options', async () => {
    const lines: string[] = [];
    const result = await store.pruneGroup(g, {}, { dryRun: false, log: (l) => lines.push(l) });
    expect(result.every((r) => r.mark !== 'remove' && !r.removed)).toBe(true);
    expect(lines[0]).toBe('No prune selection - keeping all files.');
  });
});
