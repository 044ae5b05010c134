import { statfsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { updateDatastoreConfig } from '../../../datastore/datastore-config-store.js';
import { encodeBlob } from '../../../format/data-blob.js';
import {
  ROOT_NAMESPACE,
  backupDir,
  backupGroup,
  parseNamespace,
  type BackupDir,
} from '../../../types/backup.js';
import {
  ROLES,
  addSnapshot,
  api,
  startRestWorld,
  type RestWorld,
} from '../../../../test/helpers/rest-datastore-fixture.js';
import { datastoreRoutes } from './datastore.js';

const T1 = 1_700_000_000;
const conf = encodeBlob(new TextEncoder().encode('x'));
let world: RestWorld;

const snapshot = (dir: BackupDir, owner?: string): Promise<void> =>
  addSnapshot(world, dir, [{ kind: 'blob', name: 'a.conf.blob', raw: conf }], owner);

/** The namespace route of store1, as `user`. */
const namespaceApi = (
  method: 'GET' | 'POST' | 'DELETE',
  user: string,
  params?: Record<string, string | number | boolean>,
) => api(world, method, '/admin/datastore/store1/namespace', user, params);

beforeAll(async () => {
  world = await startRestWorld();
  await updateDatastoreConfig(world.dirs, ({ entries }) =>
    entries.map((e) => ({ ...e, props: { ...e.props, comment: 'main store' } })),
  );
  world.access
    .allow('audit@pbs', '/datastore/store1', ROLES.audit)
    .allow('backup@pbs', '/datastore/store1', ROLES.backup)
    .allow('reader@pbs', '/datastore/store1', ROLES.reader)
    .allow('admin@pbs', '/datastore/store1', ROLES.admin)
    .allow('ns@pbs', '/datastore/store1/a', ROLES.backup)
    .allow('ns@pbs', '/datastore/store1/a/hidden', []);
  await world.store.createNamespace(parseNamespace('a'));
  await world.store.createNamespace(parseNamespace('a/b'));
  await world.store.createNamespace(parseNamespace('a/hidden'));
  await world.store.createNamespace(parseNamespace('z'));
  await snapshot(backupDir(backupGroup(ROOT_NAMESPACE, 'vm', '100'), T1));
  await snapshot(backupDir(backupGroup(ROOT_NAMESPACE, 'vm', '100'), T1 + 1));
  await snapshot(backupDir(backupGroup(ROOT_NAMESPACE, 'host', 'h'), T1), 'backup@pbs');
  await snapshot(backupDir(backupGroup(parseNamespace('a/b'), 'ct', '7'), T1), 'ns@pbs');
  await snapshot(backupDir(backupGroup(parseNamespace('a/b'), 'ct', '8'), T1));
}, 60_000);

afterAll(async () => {
  await world.close();
});

describe('datastoreRoutes', () => {
  it('declares every route of pbs-protocol §8 once', () => {
    const routes = datastoreRoutes().map((r) => `${r.method} ${r.path}`);
    expect(new Set(routes).size).toBe(routes.length);
    const p = '/admin/datastore/{store}';
    expect(routes.sort()).toEqual(
      [
        'GET /admin/datastore',
        `GET ${p}/status`,
        `GET ${p}/groups`,
        `DELETE ${p}/groups`,
        `GET ${p}/snapshots`,
        `DELETE ${p}/snapshots`,
        `GET ${p}/files`,
        `GET ${p}/catalog`,
        `GET ${p}/download`,
        `GET ${p}/download-decoded`,
        `GET ${p}/pxar-file-download`,
        `POST ${p}/upload-backup-log`,
        `POST ${p}/prune`,
        `POST ${p}/prune-datastore`,
        `GET ${p}/gc`,
        `POST ${p}/gc`,
        `POST ${p}/verify`,
        `GET ${p}/notes`,
        `PUT ${p}/notes`,
        `GET ${p}/group-notes`,
        `PUT ${p}/group-notes`,
        `GET ${p}/protected`,
        `PUT ${p}/protected`,
        `POST ${p}/change-owner`,
        `GET ${p}/namespace`,
        `POST ${p}/namespace`,
        `DELETE ${p}/namespace`,
      ].sort(),
    );
  });
});

describe('GET /admin/datastore', () => {
  it('lists the stores a caller may see; the comment only with Audit or Backup', async () => {
    const expected = {
      store: 'store1',
      'mount-status': 'nonremovable',
      'backend-type': 'filesystem',
    };
    expect((await api(world, 'GET', '/admin/datastore', 'audit@pbs')).data).toEqual([
      { ...expected, comment: 'main store' },
    ]);
    // Privileges on a namespace only: the store is listed.
    expect((await api(world, 'GET', '/admin/datastore', 'ns@pbs')).data).toEqual([expected]);
    expect((await api(world, 'GET', '/admin/datastore', 'nobody@pbs')).data).toEqual([]);
  });
});

describe('GET status', () => {
  /** The groups and snapshots beforeAll writes, for a caller who may see them all. */
  const ALL_COUNTS = {
    vm: { groups: 1, snapshots: 2 },
    host: { groups: 1, snapshots: 1 },
    ct: { groups: 2, snapshots: 2 },
  };
  const verboseStatus = (user: string) =>
    api(world, 'GET', '/admin/datastore/store1/status', user, { verbose: true });

  it('gives usage and, verbose, counts and the GC status to Datastore.Audit', async () => {
    const r = await verboseStatus('audit@pbs');
    expect(r.status).toBe(200);
    const data = r.data as Record<string, unknown>;
    const fs = statfsSync(world.store.base);
    expect(data['total']).toBe(fs.blocks * fs.bsize);
    expect(typeof data['used']).toBe('number');
    expect(typeof data['avail']).toBe('number');
    expect(data['backend-type']).toBe('filesystem');
    expect(data['counts']).toEqual(ALL_COUNTS);
    expect(data['gc-status']).toMatchObject({ upid: null, 'index-file-count': 0 });
  });

  it('counts only owned groups for Datastore.Backup, and hides usage from Datastore.Read', async () => {
    const backup = await verboseStatus('backup@pbs');
    expect((backup.data as Record<string, unknown>)['counts']).toEqual({
      host: { groups: 1, snapshots: 1 },
    });
    const reader = await verboseStatus('reader@pbs');
    // Datastore.Read overrides the owner filter but gives no usage figures.
    expect(reader.data).toEqual({
      total: 0,
      used: 0,
      avail: 0,
      counts: ALL_COUNTS,
      'backend-type': 'filesystem',
    });
    const ns = await verboseStatus('ns@pbs');
    expect(ns.data).toEqual({
      total: 0,
      used: 0,
      avail: 0,
      counts: { ct: { groups: 1, snapshots: 1 } },
      'backend-type': 'filesystem',
    });
    const nobody = await api(world, 'GET', '/admin/datastore/store1/status', 'nobody@pbs');
    expect(nobody.status).toBe(403);
    expect(nobody.text).toBe('permission check failed');
  });
});

describe('namespaces', () => {
  it('lists the namespaces a caller may see', async () => {
    const all = await namespaceApi('GET', 'audit@pbs');
    expect(all.data).toEqual([
      { ns: '' },
      { ns: 'a' },
      { ns: 'a/b' },
      { ns: 'a/hidden' },
      { ns: 'z' },
    ]);
    const depth = await namespaceApi('GET', 'audit@pbs', { parent: 'a', 'max-depth': 0 });
    expect(depth.data).toEqual([{ ns: 'a' }]);
    // Only the namespaces with a privilege; the root is not among them.
    const ns = await namespaceApi('GET', 'ns@pbs');
    expect(ns.data).toEqual([{ ns: 'a' }, { ns: 'a/b' }]);
  });

  it('answers 403, not 404, for a missing parent the caller has no access to', async () => {
    const r = await namespaceApi('GET', 'nobody@pbs', { parent: 'missing' });
    expect(r.status).toBe(403);
    expect(r.text).toBe('permission check failed');
    const audit = await namespaceApi('GET', 'audit@pbs', { parent: 'missing' });
    expect(audit.status).toBe(404);
  });

  it('creates a namespace with Datastore.Modify on its parent', async () => {
    const denied = await namespaceApi('POST', 'ns@pbs', { name: 'new', parent: 'a' });
    expect(denied.status).toBe(403);
    expect(denied.text).toBe(
      'permission check failed - missing Datastore.Modify on /datastore/store1/a',
    );
    const r = await namespaceApi('POST', 'admin@pbs', { name: 'new', parent: 'a' });
    expect(r.status).toBe(200);
    expect(r.data).toBe('a/new');
    expect(await world.store.namespaceExists(parseNamespace('a/new'))).toBe(true);
    const again = await namespaceApi('POST', 'admin@pbs', { name: 'new', parent: 'a' });
    expect(again.status).toBe(409);
  });

  it('deletes an empty namespace, and one with groups only with delete-groups', async () => {
    await snapshot(backupDir(backupGroup(parseNamespace('z'), 'vm', '1'), T1));
    const root = await namespaceApi('DELETE', 'admin@pbs', { ns: '' });
    expect(root.status).toBe(400);
    expect(root.text).toBe('Cannot create/delete root namespace!');
    const keep = await namespaceApi('DELETE', 'admin@pbs', { ns: 'z' });
    expect(keep.status).toBe(409);
    expect(keep.text).toBe(
      'only partially deleted due to existing groups but `delete-groups` not true',
    );
    const gone = await namespaceApi('DELETE', 'admin@pbs', { ns: 'z', 'delete-groups': true });
    expect(gone.status).toBe(200);
    expect(gone.data).toEqual({
      'removed-groups': 1,
      'protected-snapshots': 0,
      'removed-snapshots': 1,
    });
    expect(await world.store.namespaceExists(parseNamespace('z'))).toBe(false);
    const denied = await namespaceApi('DELETE', 'audit@pbs', { ns: 'a/new' });
    expect(denied.status).toBe(403);
  });
});
