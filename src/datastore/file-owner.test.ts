import { lstatSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { codeOf } from '../../test/helpers/error-code.js';
import { bytesOf, fixtureTmpDir, makeChunk } from '../../test/helpers/store-fixture.js';
import type { StoreFixture } from '../../test/helpers/store-fixture.js';
import { encodeBlob } from '../format/data-blob.js';
import { MANIFEST_BLOB_NAME, newManifest, serializeManifestBytes } from '../format/manifest.js';
import { isBurrowError } from '../lib/errors.js';
import { parseAuthid } from '../types/auth.js';
import type { BackupDir, BackupGroup } from '../types/backup.js';
import { parseNamespace } from '../types/backup.js';
import { ChunkStore } from './chunk-store.js';
import { DataStore } from './datastore.js';
import { defaultGcStatus } from './gc-status.js';
import {
  DATASTORE_USER_ENV,
  datastoreFileOwner,
  mkdirOwned,
  parseGroup,
  parsePasswd,
  resolveFileOwner,
  setDatastoreUser,
} from './file-owner.js';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/bash',
  '# a comment:x:1:1',
  'backup:x:34:34:backup:/var/backups:/usr/sbin/nologin',
  'other:x:1000:1000::/home/other:/bin/sh',
  'grouped:x:1001:100::/home/grouped:/bin/sh',
  'broken:x:abc:1::/:/bin/false',
  '+nisuser::::::',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  '',
].join('\n');
const GROUP = ['root:x:0:', 'backup:x:40:', 'grouped:x:2000:', 'users:x:100:', ''].join('\n');

describe('parsePasswd / parseGroup', () => {
  it('read name, uid and gid and skip comments, NIS entries and malformed lines', () => {
    const users = parsePasswd(PASSWD);
    expect(users.get('backup')).toEqual({ uid: 34, gid: 34 });
    expect(users.get('nobody')).toEqual({ uid: 65534, gid: 65534 });
    expect(users.has('broken')).toBe(false);
    expect(users.has('+nisuser')).toBe(false);
    expect(users.has('# a comment')).toBe(false);
    expect([...users.keys()]).toEqual(['root', 'backup', 'other', 'grouped', 'nobody']);
    expect(parseGroup(GROUP)).toEqual(
      new Map([
        ['root', 0],
        ['backup', 40],
        ['grouped', 2000],
        ['users', 100],
      ]),
    );
  });

  it('keep the first entry of a duplicated name and refuse (uid_t)-1', () => {
    expect(parsePasswd('a:x:1:1\na:x:2:2\n').get('a')).toEqual({ uid: 1, gid: 1 });
    expect(parsePasswd('a:x:4294967295:1\n').has('a')).toBe(false);
    expect(parseGroup('g:x:7:\ng:x:8:\n').get('g')).toBe(7);
  });
});

describe('resolveFileOwner', () => {
  const inputs = { passwd: PASSWD, group: GROUP };

  it('as root hands files to the user backup, with the gid of the group backup', () => {
    expect(resolveFileOwner({ ...inputs, uid: 0, user: undefined })).toEqual({ uid: 34, gid: 40 });
  });

  it("falls back to the user's primary group when there is no group of its name", () => {
    expect(resolveFileOwner({ uid: 0, user: undefined, passwd: PASSWD, group: '' })).toEqual({
      uid: 34,
      gid: 34,
    });
    expect(resolveFileOwner({ ...inputs, uid: 0, user: 'other' })).toEqual({
      uid: 1000,
      gid: 1000,
    });
    expect(resolveFileOwner({ ...inputs, uid: 0, user: 'grouped' })).toEqual({
      uid: 1001,
      gid: 2000,
    });
  });

  it('chowns nothing when not root, or when there is no backup user', () => {
    expect(resolveFileOwner({ ...inputs, uid: 1000, user: undefined })).toBeUndefined();
    expect(resolveFileOwner({ ...inputs, uid: undefined, user: undefined })).toBeUndefined();
    const withoutBackup = PASSWD.replace(/^backup:.*$/m, '');
    expect(
      resolveFileOwner({ uid: 0, user: undefined, passwd: withoutBackup, group: GROUP }),
    ).toBeUndefined();
    expect(
      resolveFileOwner({ uid: 0, user: undefined, passwd: undefined, group: undefined }),
    ).toBeUndefined();
  });

  it("honours the override: a user (whatever uid runs Burrow), or '-' / '' for none", () => {
    expect(resolveFileOwner({ ...inputs, uid: 1000, user: 'nobody' })).toEqual({
      uid: 65534,
      gid: 65534,
    });
    expect(resolveFileOwner({ ...inputs, uid: 0, user: ' nobody ' })).toEqual({
      uid: 65534,
      gid: 65534,
    });
    expect(resolveFileOwner({ ...inputs, uid: 0, user: '-' })).toBeUndefined();
    expect(resolveFileOwner({ ...inputs, uid: 0, user: '' })).toBeUndefined();
  });

  it('refuses an override naming no user', () => {
    expect(codeOf(() => resolveFileOwner({ ...inputs, uid: 0, user: 'nosuchuser' }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(codeOf(() => resolveFileOwner({ ...inputs, uid: 0, user: 'broken' }))).toBe(
      'INVALID_ARGUMENT',
    );
  });
});

describe('datastoreFileOwner', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    setDatastoreUser(undefined);
  });

  it('reads BURROW_DATASTORE_USER unless a setter override is in place, re-resolving after a set', () => {
    vi.stubEnv(DATASTORE_USER_ENV, '-');
    setDatastoreUser(undefined);
    expect(datastoreFileOwner()).toBeUndefined();
    vi.stubEnv(DATASTORE_USER_ENV, 'no-such-user-here');
    // Cached: the environment is read once per process (or after a setDatastoreUser).
    expect(datastoreFileOwner()).toBeUndefined();
    setDatastoreUser(undefined);
    expect(codeOf(() => datastoreFileOwner())).toBe('INVALID_ARGUMENT');
    setDatastoreUser('-');
    expect(datastoreFileOwner()).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// On disk. Only root may give files away, so these run as root (as CI does) and are skipped
// otherwise; the user is an existing unprivileged account, never one created here.

const asRoot = process.getuid?.() === 0;

/** An existing non-root user of this system and the owner it should give: `nobody` by preference. */
function testAccount(): { name: string; uid: number; gid: number } | undefined {
  const lines = readFileSync('/etc/passwd', 'utf8').split('\n');
  const groups = readFileSync('/etc/group', 'utf8').split('\n');
  const users = lines
    .map((line) => line.split(':'))
    .filter((f) => f.length >= 4 && /^\d+$/.test(f[2] ?? '') && f[2] !== '0');
  const pick = users.find((f) => f[0] === 'nobody') ?? users[0];
  if (pick === undefined) return undefined;
  const name = pick[0] ?? '';
  const sameName = groups.map((line) => line.split(':')).find((f) => f[0] === name);
  return { name, uid: Number(pick[2]), gid: Number(sameName?.[2] ?? pick[3]) };
}

function ownerOf(path: string): string {
  const st = lstatSync(path);
  return `${st.uid}:${st.gid}`;
}

const OWNER = parseAuthid('root@pam');

interface Populated {
  /** What was made, by description, and where. */
  paths: Record<string, string>;
  /** Owner (uid:gid) of an index writer's temp file while the writer was still open. */
  tempOwner: string;
}

/** Every kind of thing a backup makes, through the DataStore API, with the paths to check. */
async function populate(store: DataStore): Promise<Populated> {
  const ns = parseNamespace('owned/inner');
  await store.createNamespace(parseNamespace('owned'));
  await store.createNamespace(ns);
  const group: BackupGroup = { ns, type: 'vm', id: '100' };
  const dir: BackupDir = { group, time: 1_700_000_000 };
  const chunk = makeChunk(bytesOf(1, 4096));
  await store.insertChunk(chunk.blob, chunk.digest);

  let tempOwner = '';
  const { guard: groupGuard } = await store.createLockedBackupGroup(group, OWNER);
  try {
    const { guard } = await store.createLockedBackupDir(dir);
    try {
      const didx = await store.createDynamicWriter(dir, 'root.pxar.didx');
      // The temp file has its owner before anything is in it, long before the rename.
      tempOwner = ownerOf(didx.tempPath);
      await didx.append(4096, chunk.digest);
      await didx.close();
      const fidx = await store.createFixedWriter(dir, 'drive-scsi0.img.fidx', 4096);
      await fidx.addChunk(4096, 4096, chunk.digest);
      await fidx.close();
      await store.writeBlob(dir, 'qemu-server.conf.blob', encodeBlob(new Uint8Array([1, 2, 3])));
      const manifest = newManifest('vm', '100', dir.time);
      await store.writeBlob(dir, MANIFEST_BLOB_NAME, encodeBlob(serializeManifestBytes(manifest)));
    } finally {
      await guard.release();
    }
  } finally {
    await groupGuard.release();
  }
  // Replacing the manifest (a new file) takes the manifest lock; then notes, protection, GC status.
  await store.setSnapshotNotes(dir, 'owned');
  await store.setGroupNotes(group, 'group notes');
  await store.setProtected(dir, true);
  await store.saveGcStatus(defaultGcStatus());

  const snapshot = store.snapshotPath(dir);
  const lockDir = join(store.dirs.runDir, 'locks', store.name);
  const paths = {
    base: store.base,
    '.chunks': join(store.base, '.chunks'),
    'prefix dir 0000': join(store.base, '.chunks', '0000'),
    'prefix dir ffff': join(store.base, '.chunks', 'ffff'),
    '.lock': join(store.base, '.lock'),
    chunk: store.chunkStore.chunkPath(chunk.digest),
    'ns dir': join(store.base, 'ns'),
    'namespace dir': store.namespacePath(ns),
    'type dir': join(store.namespacePath(ns), 'vm'),
    'group dir': store.groupPath(group),
    owner: join(store.groupPath(group), 'owner'),
    notes: join(store.groupPath(group), 'notes'),
    'snapshot dir': snapshot,
    didx: join(snapshot, 'root.pxar.didx'),
    fidx: join(snapshot, 'drive-scsi0.img.fidx'),
    blob: join(snapshot, 'qemu-server.conf.blob'),
    manifest: join(snapshot, MANIFEST_BLOB_NAME),
    '.protected': join(snapshot, '.protected'),
    '.gc-status': join(store.base, '.gc-status'),
    'group lock file': store.groupLockPath(group),
    'snapshot lock file': store.snapshotLockPath(dir),
    'manifest lock file': store.manifestLockPath(dir),
    'lock dir of the store': lockDir,
    'lock dir of the namespace': join(lockDir, 'owned:inner'),
  };
  // Only what is listed: no temp file left behind.
  expect(readdirSync(snapshot).sort()).toEqual([
    '.protected',
    'drive-scsi0.img.fidx',
    'index.json.blob',
    'qemu-server.conf.blob',
    'root.pxar.didx',
  ]);
  return { paths, tempOwner };
}

/** Owner of each path, and the same description → expected owner map, for one toEqual. */
function owners(paths: Record<string, string>, want: string) {
  return {
    got: Object.fromEntries(Object.entries(paths).map(([what, path]) => [what, ownerOf(path)])),
    want: Object.fromEntries(Object.keys(paths).map((what) => [what, want])),
  };
}

/** A configured datastore at `<root>/deep/er/store`: two missing parents, made by create. */
async function nestedStore(name: string): Promise<StoreFixture> {
  const root = mkdtempSync(join(fixtureTmpDir(), 'burrow-owner-'));
  const dirs = {
    configDir: join(root, 'config'),
    runDir: join(root, 'run'),
    logDir: join(root, 'log'),
  };
  await mkdir(dirs.configDir);
  const store = await DataStore.create(name, join(root, 'deep', 'er', 'store'), {
    dirs,
    tuning: 'gc-atime-safety-check=false',
  });
  return { root, dirs, store, cleanup: () => rm(root, { recursive: true, force: true }) };
}

describe.skipIf(!asRoot)('files created in a datastore as root', () => {
  const account = testAccount();
  const want = `${account?.uid}:${account?.gid}`;
  let fixture: StoreFixture;
  let made: Populated;

  beforeAll(async () => {
    setDatastoreUser(account?.name);
    fixture = await nestedStore('owned');
    made = await populate(fixture.store);
  });

  afterAll(async () => {
    setDatastoreUser(undefined);
    DataStore.clearCache();
    await fixture?.cleanup();
  });

  it('belong to BURROW_DATASTORE_USER (here an existing unprivileged user)', () => {
    expect(account).toBeDefined();
    expect(fixture.store.fileOwner).toEqual({ uid: account?.uid, gid: account?.gid });
    const { got, want: expected } = owners(made.paths, want);
    expect(got).toEqual(expected);
    expect(made.tempOwner).toBe(want);
  });

  it('except the missing parents of the base, which keep their creator as in PBS', () => {
    expect(ownerOf(join(fixture.root, 'deep'))).toBe('0:0');
    expect(ownerOf(join(fixture.root, 'deep', 'er'))).toBe('0:0');
  });

  it('and datastore.cfg, which stays root-owned with the datastore group, mode 0640', () => {
    const st = lstatSync(join(fixture.dirs.configDir, 'datastore.cfg'));
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([0, account?.gid, 0o640]);
  });

  it('reuse checks the owner when there is one', async () => {
    const base = fixture.store.base;
    await expect(ChunkStore.create(base, { reuse: true })).resolves.toBeInstanceOf(ChunkStore);
    setDatastoreUser('root');
    try {
      const error: unknown = await ChunkStore.create(base, { reuse: true }).catch(
        (e: unknown) => e,
      );
      expect(isBurrowError(error, 'DATASTORE_INVALID'), String(error)).toBe(true);
      expect((error as Error).message).toBe(
        `cannot reuse chunk store: ${base} is owned by ${want}, expected the datastore user 0:0 (chown -R the store, or see BURROW_DATASTORE_USER)`,
      );
      setDatastoreUser('-');
      await expect(ChunkStore.create(base, { reuse: true })).resolves.toBeInstanceOf(ChunkStore);
    } finally {
      setDatastoreUser(account?.name);
    }
  });

  it("with BURROW_DATASTORE_USER '-' nothing is chowned", async () => {
    setDatastoreUser('-');
    const plain = await nestedStore('plain');
    try {
      expect(plain.store.fileOwner).toBeUndefined();
      const { paths, tempOwner } = await populate(plain.store);
      const me = `${process.getuid?.()}:${process.getgid?.()}`;
      const { got, want: expected } = owners(
        { ...paths, 'datastore.cfg': join(plain.dirs.configDir, 'datastore.cfg') },
        me,
      );
      expect(got).toEqual(expected);
      expect(tempOwner).toBe(me);
    } finally {
      setDatastoreUser(account?.name);
      await plain.cleanup();
    }
  });
});

describe.skipIf(!asRoot)('mkdirOwned', () => {
  const owner = { uid: 65534, gid: 65534 };
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(fixtureTmpDir(), 'burrow-mkdir-owned-'));
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('gives every directory a recursive call made, and only those, to the owner', async () => {
    await mkdir(join(root, 'a'));
    expect(await mkdirOwned(join(root, 'a', 'b', 'c'), owner, { recursive: true })).toBe(true);
    expect(ownerOf(join(root, 'a'))).toBe('0:0');
    expect(ownerOf(join(root, 'a', 'b'))).toBe('65534:65534');
    expect(ownerOf(join(root, 'a', 'b', 'c'))).toBe('65534:65534');
    // Already there: nothing made, nothing changed.
    expect(await mkdirOwned(join(root, 'a'), owner, { recursive: true })).toBe(false);
    expect(ownerOf(join(root, 'a'))).toBe('0:0');
  });

  it('fails like mkdir without recursive, and chowns nothing without an owner', async () => {
    await expect(mkdirOwned(join(root, 'a'), owner)).rejects.toMatchObject({ code: 'EEXIST' });
    await mkdirOwned(join(root, 'plain'), undefined);
    expect(ownerOf(join(root, 'plain'))).toBe('0:0');
  });
});
