import { statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { updateDatastoreConfig } from '../../../datastore/datastore-config-store.js';
import { encodeBlob } from '../../../format/data-blob.js';
import { MANIFEST_BLOB_NAME } from '../../../format/manifest.js';
import { parseAuthid } from '../../../types/auth.js';
import {
  ROOT_NAMESPACE,
  backupDir,
  backupGroup,
  parseNamespace,
  type BackupDir,
} from '../../../types/backup.js';
import { bytesOf, makeChunk } from '../../../../test/helpers/store-fixture.js';
import {
  ROLES,
  addSnapshot,
  api,
  startRestWorld,
  type RestWorld,
} from '../../../../test/helpers/rest-datastore-fixture.js';
import { mayChangeOwner } from './datastore-snapshots.js';

const T1 = 1_700_000_000;
const T2 = 1_700_003_600;
const vm100 = backupGroup(ROOT_NAMESPACE, 'vm', '100');
const mine = backupGroup(ROOT_NAMESPACE, 'host', 'mine');
const tokGroup = backupGroup(ROOT_NAMESPACE, 'ct', '200');
const nsGroup = backupGroup(parseNamespace('ns1'), 'host', 'deep');
const conf = encodeBlob(new TextEncoder().encode('cores: 2\n'));
const chunks = [makeChunk(bytesOf(1, 1000)), makeChunk(bytesOf(2, 700))];

let world: RestWorld;

const snapshot = (dir: BackupDir, owner?: string): Promise<void> =>
  addSnapshot(
    world,
    dir,
    [
      { kind: 'blob', name: 'a.conf.blob', raw: conf },
      { kind: 'didx', name: 'root.pxar.didx', chunks },
    ],
    owner,
  );

const manifestSize = (dir: BackupDir): number =>
  statSync(world.store.archivePath(dir, MANIFEST_BLOB_NAME)).size;

beforeAll(async () => {
  world = await startRestWorld();
  world.access
    .allow('audit@pbs', '/datastore/store1', ROLES.audit)
    .allow('backup@pbs', '/datastore/store1', ROLES.backup)
    .allow('backup@pbs!tok', '/datastore/store1', ROLES.backup)
    .allow('power@pbs', '/datastore/store1', ROLES.powerUser)
    .allow('admin@pbs', '/datastore/store1', ROLES.admin)
    .allow('ns@pbs', '/datastore/store1/ns1', ROLES.backup)
    .allow('reader@pbs', '/datastore/store1', ROLES.reader);
  await snapshot(backupDir(vm100, T1));
  await snapshot(backupDir(vm100, T2));
  await snapshot(backupDir(mine, T1), 'backup@pbs');
  await snapshot(backupDir(tokGroup, T1), 'backup@pbs!tok');
  await world.store.createNamespace(parseNamespace('ns1'));
  await snapshot(backupDir(nsGroup, T1), 'ns@pbs');
  const fp = Array.from({ length: 32 }, (_, i) => (i * 7).toString(16).padStart(2, '0')).join(':');
  await world.store.updateManifest(backupDir(vm100, T2), (m) => {
    m.unprotected['notes'] = 'first line\nsecond line';
    m.unprotected['key-fingerprint'] = fp.toUpperCase();
    m.unprotected['verify_state'] = {
      state: 'ok',
      upid: 'UPID:pbs:000004D2:00ABCDEF:00000001:6790A1B2:verify:store1:root@pam:',
    };
  });
}, 60_000);

afterAll(async () => {
  await world.close();
});

describe('GET groups', () => {
  it('lists every group for Datastore.Audit, in PBS shape', async () => {
    const r = await api(world, 'GET', '/admin/datastore/store1/groups', 'audit@pbs');
    expect(r.status).toBe(200);
    const items = r.data as Array<Record<string, unknown>>;
    expect(items.map((g) => `${String(g['backup-type'])}/${String(g['backup-id'])}`)).toEqual([
      'ct/200',
      'host/mine',
      'vm/100',
    ]);
    expect(items.find((g) => g['backup-id'] === '100')).toEqual({
      'backup-type': 'vm',
      'backup-id': '100',
      'last-backup': T2,
      'backup-count': 2,
      files: ['a.conf.blob', 'index.json.blob', 'root.pxar.didx'],
      owner: 'root@pam',
    });
  });

  it('shows only owned groups (and the groups of its tokens) to Datastore.Backup', async () => {
    const user = await api(world, 'GET', '/admin/datastore/store1/groups', 'backup@pbs');
    expect((user.data as Array<{ 'backup-id': string }>).map((g) => g['backup-id'])).toEqual([
      '200',
      'mine',
    ]);
    const token = await api(world, 'GET', '/admin/datastore/store1/groups', 'backup@pbs!tok');
    expect((token.data as Array<{ 'backup-id': string }>).map((g) => g['backup-id'])).toEqual([
      '200',
    ]);
  });

  it('refuses callers without privileges, with the missing privileges and path', async () => {
    const r = await api(world, 'GET', '/admin/datastore/store1/groups', 'nobody@pbs');
    expect(r.status).toBe(403);
    expect(r.text).toBe(
      'permission check failed - missing Datastore.Audit|Datastore.Backup on /datastore/store1',
    );
    // Privileges on a namespace only count there.
    expect((await api(world, 'GET', '/admin/datastore/store1/groups', 'ns@pbs')).status).toBe(403);
    const ns = await api(world, 'GET', '/admin/datastore/store1/groups', 'ns@pbs', { ns: 'ns1' });
    expect(ns.status).toBe(200);
    expect((ns.data as Array<{ 'backup-id': string }>).map((g) => g['backup-id'])).toEqual([
      'deep',
    ]);
  });

  it('answers 401 without credentials and 404 for an unknown store', async () => {
    expect((await api(world, 'GET', '/admin/datastore/store1/groups', undefined)).status).toBe(401);
    const r = await api(world, 'GET', '/admin/datastore/nostore/groups', 'root@pam');
    expect(r.status).toBe(404);
    expect(r.text).toContain("datastore 'nostore' does not exist");
  });
});

describe('GET snapshots', () => {
  it('returns PBS snapshot list items', async () => {
    const r = await api(world, 'GET', '/admin/datastore/store1/snapshots', 'audit@pbs', {
      'backup-type': 'vm',
      'backup-id': '100',
    });
    expect(r.status).toBe(200);
    const items = r.data as Array<Record<string, unknown>>;
    const chunkBytes = 1000 + 700;
    const files = (dir: BackupDir) => [
      { filename: 'a.conf.blob', 'crypt-mode': 'none', size: conf.byteLength },
      { filename: 'root.pxar.didx', 'crypt-mode': 'none', size: chunkBytes },
      { filename: 'index.json.blob', 'crypt-mode': 'none', size: manifestSize(dir) },
    ];
    const d1 = backupDir(vm100, T1);
    const d2 = backupDir(vm100, T2);
    expect(items).toEqual([
      {
        'backup-type': 'vm',
        'backup-id': '100',
        'backup-time': T1,
        files: files(d1),
        size: conf.byteLength + chunkBytes + manifestSize(d1),
        owner: 'root@pam',
        protected: false,
      },
      {
        'backup-type': 'vm',
        'backup-id': '100',
        'backup-time': T2,
        comment: 'first line',
        verification: {
          state: 'ok',
          upid: 'UPID:pbs:000004D2:00ABCDEF:00000001:6790A1B2:verify:store1:root@pam:',
        },
        fingerprint: Array.from({ length: 32 }, (_, i) =>
          (i * 7).toString(16).padStart(2, '0'),
        ).join(':'),
        files: files(d2),
        size: conf.byteLength + chunkBytes + manifestSize(d2),
        owner: 'root@pam',
        protected: false,
      },
    ]);
  });

  it('filters by type or id and by owner', async () => {
    const byType = await api(world, 'GET', '/admin/datastore/store1/snapshots', 'audit@pbs', {
      'backup-type': 'host',
    });
    expect((byType.data as Array<{ 'backup-id': string }>).map((s) => s['backup-id'])).toEqual([
      'mine',
    ]);
    const byId = await api(world, 'GET', '/admin/datastore/store1/snapshots', 'audit@pbs', {
      'backup-id': '200',
    });
    expect((byId.data as Array<{ 'backup-type': string }>).map((s) => s['backup-type'])).toEqual([
      'ct',
    ]);
    const owned = await api(world, 'GET', '/admin/datastore/store1/snapshots', 'backup@pbs');
    expect(
      (owned.data as Array<{ 'backup-id': string; owner: string }>).map((s) => [
        s['backup-id'],
        s.owner,
      ]),
    ).toEqual([
      ['200', 'backup@pbs!tok'],
      ['mine', 'backup@pbs'],
    ]);
  });

  it('lists an unfinished snapshot with the files in its directory only', async () => {
    const dir = backupDir(backupGroup(ROOT_NAMESPACE, 'host', 'partial'), T1);
    const { guard: g } = await world.store.createLockedBackupGroup(
      dir.group,
      parseAuthid('root@pam'),
    );
    const { guard } = await world.store.createLockedBackupDir(dir);
    await world.store.writeBlob(dir, 'x.conf.blob', conf);
    await guard.release();
    await g.release();
    const r = await api(world, 'GET', '/admin/datastore/store1/snapshots', 'root@pam', {
      'backup-type': 'host',
      'backup-id': 'partial',
    });
    expect(r.data).toEqual([
      {
        'backup-type': 'host',
        'backup-id': 'partial',
        'backup-time': T1,
        files: [{ filename: 'x.conf.blob' }],
        owner: 'root@pam',
        protected: false,
      },
    ]);
    await world.store.removeBackupGroup(dir.group);
  });
});

describe('files, notes, protection', () => {
  const q = (dir: BackupDir) => ({
    'backup-type': dir.group.type,
    'backup-id': dir.group.id,
    'backup-time': dir.time,
  });

  it('lists the files of a snapshot for Datastore.Read, and for the owner', async () => {
    const dir = backupDir(mine, T1);
    const r = await api(world, 'GET', '/admin/datastore/store1/files', 'reader@pbs', q(dir));
    expect(r.status).toBe(200);
    expect((r.data as Array<{ filename: string }>).map((f) => f.filename)).toEqual([
      'a.conf.blob',
      'root.pxar.didx',
      'index.json.blob',
    ]);
    expect(
      (await api(world, 'GET', '/admin/datastore/store1/files', 'backup@pbs', q(dir))).status,
    ).toBe(200);
    const other = await api(
      world,
      'GET',
      '/admin/datastore/store1/files',
      'backup@pbs',
      q(backupDir(vm100, T1)),
    );
    expect(other.status).toBe(400);
    expect(other.text).toBe('backup owner check failed (backup@pbs != root@pam)');
  });

  it('reads and writes snapshot notes', async () => {
    const dir = backupDir(mine, T1);
    expect(
      (await api(world, 'GET', '/admin/datastore/store1/notes', 'backup@pbs', q(dir))).data,
    ).toBe('');
    const put = await api(world, 'PUT', '/admin/datastore/store1/notes', 'backup@pbs', {
      ...q(dir),
      notes: 'hello\nworld',
    });
    expect(put.status).toBe(200);
    expect(put.json).toEqual({ data: null });
    expect(
      (await api(world, 'GET', '/admin/datastore/store1/notes', 'audit@pbs', q(dir))).data,
    ).toBe('hello\nworld');
    // Audit may read but not write.
    const denied = await api(world, 'PUT', '/admin/datastore/store1/notes', 'audit@pbs', {
      ...q(dir),
      notes: 'x',
    });
    expect(denied.status).toBe(403);
    expect(denied.text).toBe(
      'permission check failed - missing Datastore.Modify|Datastore.Backup on /datastore/store1',
    );
  });

  it('reads and writes group notes; the first line is the group comment', async () => {
    const g = { 'backup-type': 'host', 'backup-id': 'mine' };
    expect(
      (
        await api(world, 'PUT', '/admin/datastore/store1/group-notes', 'backup@pbs', {
          ...g,
          notes: 'grp\nmore',
        })
      ).status,
    ).toBe(200);
    expect(
      (await api(world, 'GET', '/admin/datastore/store1/group-notes', 'backup@pbs', g)).data,
    ).toBe('grp\nmore');
    const groups = await api(world, 'GET', '/admin/datastore/store1/groups', 'backup@pbs');
    expect(
      (groups.data as Array<{ 'backup-id': string; comment?: string }>).find(
        (x) => x['backup-id'] === 'mine',
      )?.comment,
    ).toBe('grp');
  });

  it('protects a snapshot; a protected snapshot cannot be deleted', async () => {
    const dir = backupDir(vm100, T1);
    expect(
      (await api(world, 'GET', '/admin/datastore/store1/protected', 'audit@pbs', q(dir))).data,
    ).toBe(false);
    expect(
      (
        await api(world, 'PUT', '/admin/datastore/store1/protected', 'admin@pbs', {
          ...q(dir),
          protected: true,
        })
      ).status,
    ).toBe(200);
    expect(
      (await api(world, 'GET', '/admin/datastore/store1/protected', 'audit@pbs', q(dir))).data,
    ).toBe(true);
    const del = await api(
      world,
      'DELETE',
      '/admin/datastore/store1/snapshots',
      'admin@pbs',
      q(dir),
    );
    expect(del.status).toBe(409);
    expect(del.text).toBe(
      'failed to delete snapshot - cannot remove protected snapshot vm/100/2023-11-14T22:13:20Z',
    );
    const list = await api(world, 'GET', '/admin/datastore/store1/snapshots', 'audit@pbs', {
      'backup-type': 'vm',
    });
    expect((list.data as Array<{ protected: boolean }>)[0]?.protected).toBe(true);
    expect(
      (
        await api(world, 'PUT', '/admin/datastore/store1/protected', 'admin@pbs', {
          ...q(dir),
          protected: false,
        })
      ).status,
    ).toBe(200);
  });
});

describe('deleting', () => {
  it('needs Datastore.Modify, or Datastore.Prune and ownership', async () => {
    const g = backupGroup(ROOT_NAMESPACE, 'host', 'del');
    await snapshot(backupDir(g, T1));
    await snapshot(backupDir(g, T2), 'power@pbs');
    const q1 = { 'backup-type': 'host', 'backup-id': 'del', 'backup-time': T1 };
    // Datastore.Backup alone is not enough to delete, even for the owner.
    const backup = await api(
      world,
      'DELETE',
      '/admin/datastore/store1/snapshots',
      'backup@pbs',
      q1,
    );
    expect(backup.status).toBe(403);
    expect(backup.text).toBe(
      'permission check failed - missing Datastore.Modify|Datastore.Prune on /datastore/store1',
    );
    const r = await api(world, 'DELETE', '/admin/datastore/store1/snapshots', 'power@pbs', q1);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ data: null });
    expect((await world.store.listSnapshots(g)).map((x) => x.dir.time)).toEqual([T2]);
    // Not the owner any more.
    await world.store.setOwner(g, parseAuthid('root@pam'), true);
    const notOwner = await api(world, 'DELETE', '/admin/datastore/store1/groups', 'power@pbs', {
      'backup-type': 'host',
      'backup-id': 'del',
    });
    expect(notOwner.status).toBe(400);
    const gone = await api(world, 'DELETE', '/admin/datastore/store1/groups', 'admin@pbs', {
      'backup-type': 'host',
      'backup-id': 'del',
    });
    expect(gone.data).toEqual({
      'removed-groups': 1,
      'protected-snapshots': 0,
      'removed-snapshots': 1,
    });
  });

  it('keeps protected snapshots of a deleted group and reports them', async () => {
    const g = backupGroup(ROOT_NAMESPACE, 'host', 'prot');
    await snapshot(backupDir(g, T1));
    await snapshot(backupDir(g, T2));
    await world.store.setProtected(backupDir(g, T1), true);
    const params = { 'backup-type': 'host', 'backup-id': 'prot' };
    const err = await api(world, 'DELETE', '/admin/datastore/store1/groups', 'admin@pbs', params);
    expect(err.status).toBe(409);
    expect(err.text).toBe('group only partially deleted due to protected snapshots');
    await snapshot(backupDir(g, T2 + 10));
    const ok = await api(world, 'DELETE', '/admin/datastore/store1/groups', 'admin@pbs', {
      ...params,
      'error-on-protected': false,
    });
    expect(ok.data).toEqual({
      'removed-groups': 0,
      'protected-snapshots': 1,
      'removed-snapshots': 1,
    });
  });
});

describe('change-owner', () => {
  it('lets Datastore.Modify give a group to anyone', async () => {
    const g = backupGroup(ROOT_NAMESPACE, 'host', 'own');
    await snapshot(backupDir(g, T1), 'backup@pbs');
    const params = { 'backup-type': 'host', 'backup-id': 'own' };
    const r = await api(world, 'POST', '/admin/datastore/store1/change-owner', 'admin@pbs', {
      ...params,
      'new-owner': 'other@pbs',
    });
    expect(r.status).toBe(200);
    expect(await world.store.getOwner(g)).toEqual(parseAuthid('other@pbs'));
  });

  it('lets an owner with Datastore.Backup move a group between itself and its tokens only', async () => {
    const g = backupGroup(ROOT_NAMESPACE, 'host', 'own2');
    await snapshot(backupDir(g, T1), 'backup@pbs');
    const params = { 'backup-type': 'host', 'backup-id': 'own2' };
    const toToken = await api(world, 'POST', '/admin/datastore/store1/change-owner', 'backup@pbs', {
      ...params,
      'new-owner': 'backup@pbs!tok',
    });
    expect(toToken.status).toBe(200);
    expect(await world.store.getOwner(g)).toEqual(parseAuthid('backup@pbs!tok'));
    const toOther = await api(world, 'POST', '/admin/datastore/store1/change-owner', 'backup@pbs', {
      ...params,
      'new-owner': 'other@pbs',
    });
    expect(toOther.status).toBe(403);
    expect(toOther.text).toBe(
      "backup@pbs does not have permission to change owner of backup group 'host/own2' to other@pbs",
    );
    const back = await api(world, 'POST', '/admin/datastore/store1/change-owner', 'backup@pbs', {
      ...params,
      'new-owner': 'backup@pbs',
    });
    expect(back.status).toBe(200);
  });

  it('follows PBS rules for every owner/new-owner combination', () => {
    const a = (t: string) => parseAuthid(t);
    expect(mayChangeOwner(a('u@pbs'), a('u@pbs!a'), a('u@pbs!b'))).toBe(true);
    expect(mayChangeOwner(a('u@pbs!a'), a('u@pbs!a'), a('u@pbs!b'))).toBe(false);
    expect(mayChangeOwner(a('u@pbs'), a('u@pbs!a'), a('u@pbs'))).toBe(true);
    expect(mayChangeOwner(a('u@pbs'), a('v@pbs!a'), a('u@pbs'))).toBe(false);
    expect(mayChangeOwner(a('u@pbs'), a('u@pbs'), a('u@pbs!x'))).toBe(true);
    expect(mayChangeOwner(a('u@pbs'), a('u@pbs'), a('w@pbs!x'))).toBe(false);
    expect(mayChangeOwner(a('u@pbs'), a('u@pbs'), a('w@pbs'))).toBe(false);
  });
});

describe('maintenance modes (PBS checks them when a route looks the store up)', () => {
  const setMode = (mode: string | undefined) =>
    updateDatastoreConfig(world.dirs, ({ entries }) =>
      entries.map((e) => {
        if (e.name !== 'store1') return e;
        const { 'maintenance-mode': _old, ...props } = e.props;
        return {
          name: e.name,
          props: mode === undefined ? props : { ...props, 'maintenance-mode': mode },
        };
      }),
    );
  const snapshotParams = { 'backup-type': 'vm', 'backup-id': '100', 'backup-time': T1 };

  it('read-only refuses every change and keeps reads working; offline refuses reads too', async () => {
    const writes = () =>
      Promise.all([
        api(world, 'DELETE', '/admin/datastore/store1/snapshots', 'admin@pbs', snapshotParams),
        api(world, 'PUT', '/admin/datastore/store1/notes', 'admin@pbs', {
          ...snapshotParams,
          notes: 'changed',
        }),
        api(world, 'PUT', '/admin/datastore/store1/protected', 'admin@pbs', {
          ...snapshotParams,
          protected: true,
        }),
        api(world, 'POST', '/admin/datastore/store1/prune', 'admin@pbs', {
          'backup-type': 'vm',
          'backup-id': '100',
          'keep-last': 1,
        }),
        api(world, 'POST', '/admin/datastore/store1/gc', 'root@pam'),
        api(world, 'POST', '/admin/datastore/store1/namespace', 'admin@pbs', { name: 'new' }),
      ]);
    const reads = () =>
      Promise.all([
        api(world, 'GET', '/admin/datastore/store1/groups', 'audit@pbs'),
        api(world, 'GET', '/admin/datastore/store1/snapshots', 'audit@pbs'),
        api(world, 'GET', '/admin/datastore/store1/notes', 'audit@pbs', snapshotParams),
        api(world, 'GET', '/admin/datastore/store1/namespace', 'audit@pbs'),
      ]);
    try {
      await setMode('read-only,message=disk swap');
      for (const r of await writes()) {
        expect([r.status, r.text]).toEqual([
          400,
          expect.stringContaining('read-only maintenance mode: disk swap'),
        ]);
      }
      for (const r of await reads()) expect(r.status).toBe(200);
      // Nothing changed: the snapshot, its notes and the group are all still there.
      const notes = await api(
        world,
        'GET',
        '/admin/datastore/store1/notes',
        'audit@pbs',
        snapshotParams,
      );
      expect(notes.data).toBe('');
      expect(await world.store.listSnapshots(vm100)).toHaveLength(2);

      await setMode('offline');
      for (const r of [...(await reads()), ...(await writes())]) {
        expect([r.status, r.text]).toEqual([
          400,
          expect.stringContaining('offline maintenance mode'),
        ]);
      }
    } finally {
      await setMode(undefined);
    }
    expect((await api(world, 'GET', '/admin/datastore/store1/groups', 'audit@pbs')).status).toBe(
      200,
    );
  });
});
