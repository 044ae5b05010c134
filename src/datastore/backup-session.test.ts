import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import { LockHolder } from '../../test/helpers/lock-holder-client.js';
import {
  type StoreFixture,
  type TestChunk,
  bytesOf,
  makeChunk,
  makeStore,
} from '../../test/helpers/store-fixture.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { isBurrowError } from '../lib/errors.js';
import { decodeBlob, encodeBlob, verifyBlobCrc } from '../format/data-blob.js';
import type { FileInfo } from '../format/manifest.js';
import {
  MANIFEST_BLOB_NAME,
  blobFileInfo,
  indexFileInfo,
  newManifest,
  parseManifest,
  serializeManifestBytes,
} from '../format/manifest.js';
import { parseUpid } from '../format/upid.js';
import { TaskManager } from '../tasks/index.js';
import { parseAuthid } from '../types/auth.js';
import type { BackupDir, BackupGroup } from '../types/backup.js';
import {
  ROOT_NAMESPACE,
  backupDir,
  backupGroup,
  formatBackupTime,
  parseNamespace,
} from '../types/backup.js';
import { digestToHex } from '../types/digest.js';
import { BackupSession, type BackupSessionOptions, MAX_WRITER_ID } from './backup-session.js';
import { updateDatastoreConfig } from './datastore-config-store.js';
import { DataStore } from './datastore.js';
import { ReaderSession } from './reader-session.js';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;
const ROOT = parseAuthid('root@pam');

let fx: StoreFixture;
let store: DataStore;
let tasks: TaskManager;

beforeAll(async () => {
  fx = await makeStore({ name: 'sessstore' });
  store = fx.store;
  tasks = new TaskManager({ dirs: fx.dirs, node: 'testnode' });
});

afterAll(async () => {
  await fx?.cleanup();
});

let seq = 0;
const nextGroup = (type: 'host' | 'vm' | 'ct' = 'host'): BackupGroup =>
  backupGroup(ROOT_NAMESPACE, type, `g${++seq}`);

/** Data no other test uses, so duplicate counts are this test's own. */
let seed = 1000;
const fresh = (length: number, options: { compress?: boolean } = {}): TestChunk =>
  makeChunk(bytesOf(++seed, length), options);

function start(
  group: BackupGroup,
  time: number,
  extra: Partial<BackupSessionOptions> = {},
): Promise<BackupSession> {
  return BackupSession.start({
    store,
    ns: group.ns,
    group,
    backupTime: time,
    authId: ROOT,
    ...extra,
  });
}

function sha256(...parts: Uint8Array[]): Uint8Array {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return new Uint8Array(hash.digest());
}

function u64le(value: number): Uint8Array {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt(value));
  return out;
}

/** §5.3 dynamic csum: SHA-256 over (end offset u64 LE, digest) per entry. */
function dynamicCsum(chunks: readonly { data: Uint8Array; digest: Uint8Array }[]): Uint8Array {
  let end = 0;
  const parts: Uint8Array[] = [];
  for (const c of chunks) {
    end += c.data.byteLength;
    parts.push(u64le(end), c.digest);
  }
  return sha256(...parts);
}

/** Start offsets of chunks laid end to end. */
function startsOf(chunks: readonly { data: Uint8Array }[]): number[] {
  const out: number[] = [];
  let at = 0;
  for (const c of chunks) {
    out.push(at);
    at += c.data.byteLength;
  }
  return out;
}

const totalSize = (chunks: readonly { data: Uint8Array }[]): number =>
  chunks.reduce((sum, c) => sum + c.data.byteLength, 0);

function manifestBlob(dir: BackupDir, files: FileInfo[] = []): Uint8Array {
  const m = newManifest(dir.group.type, dir.group.id, dir.time);
  m.files = files;
  return encodeBlob(serializeManifestBytes(m));
}

/** Byte equality without vitest's element-by-element diffing (slow on 4 MiB arrays). */
function expectBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.byteLength).toBe(expected.byteLength);
  expect(Buffer.compare(actual, expected)).toBe(0);
}

async function expectCode(
  promise: Promise<unknown>,
  code: string,
  message?: string | RegExp,
): Promise<void> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected ${code}`).toBeDefined();
  expect(isBurrowError(caught) ? caught.code : caught).toBe(code);
  if (message !== undefined) {
    const text = (caught as Error).message;
    if (typeof message === 'string') expect(text).toBe(message);
    else expect(text).toMatch(message);
  }
}

/** Upload and append `chunks` as one dynamic archive, then close it. */
async function writeDynamic(
  s: BackupSession,
  name: string,
  chunks: TestChunk[],
): Promise<FileInfo> {
  const wid = await s.createDynamicIndex(name);
  for (const c of chunks) await s.uploadChunk(wid, 'dynamic', c.digest, c.data.length, c.blob);
  await s.appendIndex(
    wid,
    'dynamic',
    chunks.map((c) => c.digest),
    startsOf(chunks),
  );
  const csum = dynamicCsum(chunks);
  await s.closeIndex(wid, 'dynamic', chunks.length, totalSize(chunks), csum);
  return indexFileInfo(name, { size: totalSize(chunks), csum }, 'none');
}

/** A finished snapshot with one dynamic archive, written through a session. */
async function backupDynamic(
  group: BackupGroup,
  time: number,
  name: string,
  chunks: TestChunk[],
): Promise<BackupDir> {
  const s = await start(group, time);
  try {
    const info = await writeDynamic(s, name, chunks);
    await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir, [info]));
    await s.finish();
    return s.dir;
  } finally {
    await s.close();
  }
}

/** Whether the group lock can be taken now (then it is released again). */
async function groupFree(group: BackupGroup): Promise<boolean> {
  try {
    const guard = await store.lockGroup(group, true);
    await guard.release();
    return true;
  } catch {
    return false;
  }
}

async function snapshotFree(dir: BackupDir): Promise<boolean> {
  try {
    const guard = await store.lockSnapshot(dir, true);
    await guard.release();
    return true;
  } catch {
    return false;
  }
}

async function someUpid(): Promise<string> {
  const { upid } = await tasks.run('verify', undefined, 'root@pam', async () => {});
  return upid;
}

describe('a full session', () => {
  it('dynamic + fixed + blob + manifest + finish gives a readable snapshot with upload stats', async () => {
    const group = nextGroup();
    const s = await start(group, 1_700_000_000);
    expect(s.previous).toBeUndefined();
    expect(s.previousBackupTime()).toBeUndefined();
    expect(s.dir).toEqual(backupDir(group, 1_700_000_000));
    expect(existsSync(store.snapshotPath(s.dir))).toBe(true);

    const didx = [fresh(1000), fresh(5000, { compress: true }), fresh(77)];
    const full = fresh(CHUNK);
    const tail = fresh(12345);
    const conf = encodeBlob(Buffer.from('a = 1\n'), { compress: false });
    try {
      // Writer ids: one counter for both kinds, from 1.
      const dwid = await s.createDynamicIndex('root.pxar.didx');
      const fwid = await s.createFixedIndex('disk.img.fidx', CHUNK + 12345);
      expect([dwid, fwid]).toEqual([1, 2]);

      for (const c of didx) {
        expect(await s.uploadChunk(dwid, 'dynamic', c.digest, c.data.length, c.blob)).toBe(
          digestToHex(c.digest),
        );
      }
      // Appends may come in several batches.
      await s.appendIndex(dwid, 'dynamic', [didx[0]!.digest], [0]);
      await s.appendIndex(dwid, 'dynamic', [didx[1]!.digest, didx[2]!.digest], [1000, 6000]);
      await s.closeIndex(dwid, 'dynamic', 3, 6077, dynamicCsum(didx));

      await s.uploadChunk(fwid, 'fixed', tail.digest, tail.data.length, tail.blob);
      await s.uploadChunk(fwid, 'fixed', full.digest, full.data.length, full.blob);
      // Slots are addressed directly: any order.
      await s.appendIndex(fwid, 'fixed', [tail.digest], [CHUNK]);
      await s.appendIndex(fwid, 'fixed', [full.digest], [0]);
      const fcsum = sha256(full.digest, tail.digest);
      await s.closeIndex(fwid, 'fixed', 2, CHUNK + 12345, fcsum);

      await s.uploadBlob('app.conf.blob', conf);
      const files = [
        indexFileInfo('root.pxar.didx', { size: 6077, csum: dynamicCsum(didx) }, 'none'),
        indexFileInfo('disk.img.fidx', { size: CHUNK + 12345, csum: fcsum }, 'none'),
        blobFileInfo('app.conf.blob', conf, 'none'),
      ];
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir, files));
      await s.finish();
    } finally {
      await s.close();
    }

    const chunks = [...didx, full, tail];
    const expectedStats = {
      count: 5,
      size: totalSize(chunks),
      compressedSize: chunks.reduce((sum, c) => sum + c.blob.byteLength, 0),
      duplicates: 0,
    };
    expect(s.stats()).toEqual(expectedStats);

    // The snapshot is finished and listed with exactly its files.
    const [info] = await store.listSnapshots(group);
    expect(info?.finished).toBe(true);
    expect(info?.files).toEqual(
      ['app.conf.blob', 'disk.img.fidx', MANIFEST_BLOB_NAME, 'root.pxar.didx'].sort(),
    );
    expect(readdirSync(store.snapshotPath(s.dir)).sort()).toEqual(info?.files);
    expect(await store.getOwner(group)).toEqual(ROOT);

    const dyn = await store.openIndex(s.dir, 'root.pxar.didx');
    if (dyn.kind !== 'dynamic') throw new Error('expected a dynamic index');
    dyn.index.verifyCsum();
    expect(dyn.index.indexCsum).toEqual(dynamicCsum(didx));
    expect([0, 1, 2].map((i) => dyn.index.end(i))).toEqual([1000, 6000, 6077]);
    expect([0, 1, 2].map((i) => digestToHex(dyn.index.digest(i)))).toEqual(
      didx.map((c) => digestToHex(c.digest)),
    );

    const fix = await store.openIndex(s.dir, 'disk.img.fidx');
    if (fix.kind !== 'fixed') throw new Error('expected a fixed index');
    fix.index.verifyCsum();
    expect(fix.index.size).toBe(CHUNK + 12345);
    expect(fix.index.chunkSize).toBe(CHUNK);
    expect(fix.index.indexCsum).toEqual(sha256(full.digest, tail.digest));

    // Chunks are stored as uploaded (their CRCs were right).
    for (const c of chunks) expectBytes(await store.loadChunk(c.digest), c.blob);
    expect(new Uint8Array(readFileSync(store.archivePath(s.dir, 'app.conf.blob')))).toEqual(conf);

    const { manifest } = await store.loadManifest(s.dir);
    expect(manifest.files.map((f) => f.filename)).toEqual([
      'root.pxar.didx',
      'disk.img.fidx',
      'app.conf.blob',
    ]);
    expect(manifest.unprotected['chunk_upload_stats']).toEqual({
      count: expectedStats.count,
      size: expectedStats.size,
      compressed_size: expectedStats.compressedSize,
      duplicates: 0,
    });

    // Every lock is released, and the snapshot reads back through a reader session.
    expect(await groupFree(group)).toBe(true);
    expect(await snapshotFree(s.dir)).toBe(true);
    const reader = await ReaderSession.open({ store, dir: s.dir });
    try {
      await reader.download('root.pxar.didx');
      expect(decodeBlob(await reader.chunk(didx[1]!.digest))).toEqual(didx[1]!.data);
    } finally {
      await reader.close();
    }
  });

  it('counts server-side duplicates and client-side reuse separately', async () => {
    const group = nextGroup();
    const a = fresh(300);
    const s = await start(group, 1000);
    try {
      const wid = await s.createDynamicIndex('a.didx');
      await s.uploadChunk(wid, 'dynamic', a.digest, 300, a.blob);
      // Uploaded again: the store already has it.
      await s.uploadChunk(wid, 'dynamic', a.digest, 300, a.blob);
      // Appended twice (the second time reused by the client without an upload).
      await s.appendIndex(wid, 'dynamic', [a.digest, a.digest, a.digest], [0, 300, 600]);
      await s.closeIndex(wid, 'dynamic', 3, 900, dynamicCsum([a, a, a]));
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      await s.finish();
    } finally {
      await s.close();
    }
    expect(s.stats()).toEqual({
      count: 2,
      size: 600,
      compressedSize: 2 * a.blob.byteLength,
      duplicates: 1,
    });
  });

  it('reuseStoredChunk: a chunk the store holds counts as a duplicate upload, a missing one as nothing', async () => {
    const stored = fresh(400);
    await store.insertChunk(stored.blob, stored.digest);
    const missing = fresh(500);
    const s = await start(nextGroup(), 1000);
    try {
      const wid = await s.createDynamicIndex('a.didx');
      expect(await s.reuseStoredChunk(wid, 'dynamic', stored.digest, 400, false)).toBe(true);
      // Not the family of the stored blob: the client must upload.
      expect(await s.reuseStoredChunk(wid, 'dynamic', stored.digest, 400, true)).toBe(false);
      expect(await s.reuseStoredChunk(wid, 'dynamic', missing.digest, 500, false)).toBe(false);
      expect(existsSync(store.chunkStore.chunkPath(missing.digest))).toBe(false);
      await expectCode(
        s.reuseStoredChunk(wid, 'dynamic', stored.digest, 0, false),
        'INVALID_ARGUMENT',
      );
      await expectCode(
        s.reuseStoredChunk(wid + 1, 'dynamic', stored.digest, 400, false),
        'BACKUP_SESSION_INVALID',
      );
      // Known now, as after an upload; the missing one is not.
      await expectCode(
        s.appendIndex(wid, 'dynamic', [missing.digest], [0]),
        'BACKUP_SESSION_INVALID',
      );
      await s.appendIndex(wid, 'dynamic', [stored.digest], [0]);
      await s.closeIndex(wid, 'dynamic', 1, 400, dynamicCsum([stored]));
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      await s.finish();
    } finally {
      await s.close();
    }
    expect(s.stats()).toEqual({
      count: 1,
      size: 400,
      compressedSize: stored.blob.byteLength,
      duplicates: 1,
    });
  });
});

describe('start: checks 4-10 of §5.1', () => {
  it('refuses a missing namespace and leaves nothing behind', async () => {
    const ns = parseNamespace('nope');
    const group = backupGroup(ns, 'host', 'x');
    await expectCode(
      BackupSession.start({ store, ns, group, backupTime: 10, authId: ROOT }),
      'NOT_FOUND',
      'namespace not found',
    );
    expect(existsSync(store.namespacePath(ns))).toBe(false);
  });

  it("refuses a group whose namespace is not the session's", async () => {
    await store.createNamespace(parseNamespace('other'));
    const group = backupGroup(parseNamespace('other'), 'host', 'x');
    await expectCode(
      BackupSession.start({ store, ns: ROOT_NAMESPACE, group, backupTime: 10, authId: ROOT }),
      'INVALID_ARGUMENT',
    );
  });

  it('works in a namespace', async () => {
    const ns = parseNamespace('sessns');
    await store.createNamespace(ns);
    const group = backupGroup(ns, 'vm', '100');
    const dir = await backupDynamic(group, 50, 'x.didx', [fresh(10)]);
    expect(existsSync(join(store.base, 'ns/sessns/vm/100', formatBackupTime(50)))).toBe(true);
    expect((await store.listSnapshots(group)).map((i) => i.dir)).toEqual([dir]);
  });

  it('ties the benchmark flag to host/benchmark', async () => {
    const bench = backupGroup(ROOT_NAMESPACE, 'host', 'benchmark');
    await expectCode(
      start(bench, 10),
      'INVALID_ARGUMENT',
      'unable to run benchmark without --benchmark flags',
    );
    await expectCode(
      start(nextGroup(), 10, { benchmark: true }),
      'INVALID_ARGUMENT',
      "benchmark flags is only allowed on 'host/benchmark'",
    );
    expect(existsSync(store.groupPath(bench))).toBe(false);

    // A benchmark runs as a 'benchmark' task and its data is deleted at the end, finished or not.
    const s = await start(bench, 10, { benchmark: true, tasks });
    expect(parseUpid(s.upid ?? '').workerType).toBe('benchmark');
    const wid = await s.createDynamicIndex('speed.didx');
    const c = fresh(100);
    await s.uploadChunk(wid, 'dynamic', c.digest, 100, c.blob);
    await s.close();
    expect(existsSync(store.snapshotPath(s.dir))).toBe(false);
    expect((await tasks.status(s.upid ?? '')).state).toBe('ok');
    expect(
      (await tasks.readLog(s.upid ?? '')).some((l) =>
        l.endsWith('benchmark finished successfully'),
      ),
    ).toBe(true);
  });

  it('creates a new group owned by the caller and checks the owner of an existing one', async () => {
    const user = parseAuthid('alice@pbs');
    const token = parseAuthid('alice@pbs!tok');
    const byUser = nextGroup();
    let s = await start(byUser, 10, { authId: user });
    await s.close();
    // The failed first backup took its group away again; a finished one keeps it.
    expect(existsSync(store.groupPath(byUser))).toBe(false);
    s = await start(byUser, 10, { authId: user });
    await writeDynamic(s, 'x.didx', [fresh(10)]);
    await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
    await s.finish();
    await s.close();
    expect(await store.getOwner(byUser)).toEqual(user);

    // A token cannot write to its user's group.
    await expectCode(
      start(byUser, 20, { authId: token }),
      'BACKUP_OWNER_MISMATCH',
      'backup owner check failed (alice@pbs!tok != alice@pbs)',
    );
    await expectCode(start(byUser, 20, { authId: ROOT }), 'BACKUP_OWNER_MISMATCH');
    expect(await groupFree(byUser)).toBe(true);
    expect(existsSync(store.snapshotPath(backupDir(byUser, 20)))).toBe(false);

    // The user can write to a group its token owns.
    const byToken = nextGroup();
    s = await start(byToken, 10, { authId: token });
    await writeDynamic(s, 'x.didx', [fresh(10)]);
    await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
    await s.finish();
    await s.close();
    expect(await store.getOwner(byToken)).toEqual(token);
    s = await start(byToken, 20, { authId: user });
    expect(await store.getOwner(byToken)).toEqual(token);
    await s.close();
    await expectCode(
      start(byToken, 20, { authId: parseAuthid('alice@pbs!other') }),
      'BACKUP_OWNER_MISMATCH',
    );
  });

  it('locks the group: a second session on it is LOCKED, in this process and in another', async () => {
    const group = nextGroup();
    await backupDynamic(group, 50, 'x.didx', [fresh(10)]);
    const first = await start(group, 100);
    try {
      await expectCode(start(group, 200), 'LOCKED');
      const holder = await LockHolder.start();
      try {
        expect(await holder.send(`flock-exclusive ${store.groupLockPath(group)}`)).toBe(
          'err LOCKED',
        );
      } finally {
        await holder.stop();
      }
    } finally {
      await first.close();
    }
    // The other way round: a group locked by another process refuses a session.
    const holder = await LockHolder.start();
    try {
      const id = await holder.take('flock-exclusive', store.groupLockPath(group));
      await expectCode(start(group, 300), 'LOCKED');
      await holder.release(id);
      const s = await start(group, 300);
      await s.close();
    } finally {
      await holder.stop();
    }
    expect(existsSync(store.snapshotPath(backupDir(group, 300)))).toBe(false);
    expect(await store.getOwner(group)).toEqual(ROOT);
  });

  it('uses the newest finished snapshot as previous and requires a newer time', async () => {
    const group = nextGroup();
    await backupDynamic(group, 1000, 'x.didx', [fresh(10)]);
    const s2 = await backupDynamic(group, 2000, 'x.didx', [fresh(10)]);
    // An unfinished newer snapshot (no manifest), as a crashed backup leaves it, is no base.
    const unfinishedDir = backupDir(group, 3000);
    const { guard: g } = await store.createLockedBackupGroup(group, ROOT);
    const { guard: d } = await store.createLockedBackupDir(unfinishedDir);
    await d.release();
    await g.release();

    for (const time of [1500, 2000]) {
      await expectCode(
        start(group, time),
        'BACKUP_TIME_NOT_NEWER',
        'backup timestamp is older than last backup.',
      );
    }
    await expectCode(start(group, 3000), 'ALREADY_EXISTS', 'backup directory already exists.');
    expect(await groupFree(group)).toBe(true);
    expect(await snapshotFree(s2)).toBe(true);
    // Newer than the base but older than the unfinished one: fine.
    const s = await start(group, 2500);
    try {
      expect(s.previous).toEqual(s2);
      expect(s.previousBackupTime()).toBe(2000);
    } finally {
      await s.close();
    }
  });

  it('has no previous snapshot when the newest failed verification, and does not fall back', async () => {
    const group = nextGroup();
    await backupDynamic(group, 1000, 'x.didx', [fresh(10)]);
    const newest = await backupDynamic(group, 2000, 'x.didx', [fresh(10)]);
    const upid = await someUpid();

    // Only a verify state that parses counts: without a UPID it is treated as valid.
    await store.updateManifest(newest, (m) => {
      m.unprotected['verify_state'] = { state: 'failed' };
    });
    await expectCode(start(group, 1500), 'BACKUP_TIME_NOT_NEWER');

    await store.updateManifest(newest, (m) => {
      m.unprotected['verify_state'] = { state: 'ok', upid };
    });
    await expectCode(start(group, 1500), 'BACKUP_TIME_NOT_NEWER');

    await store.updateManifest(newest, (m) => {
      m.unprotected['verify_state'] = { state: 'failed', upid };
    });
    // No base at all (not the older snapshot at 1000), so no time check either.
    const s = await start(group, 1500);
    try {
      expect(s.previous).toBeUndefined();
      expect(s.previousBackupTime()).toBeUndefined();
      await expectCode(
        s.downloadPrevious('x.didx'),
        'NO_PREVIOUS_BACKUP',
        'no valid previous backup',
      );
      // The snapshot that failed verification is not locked by the session.
      expect(await snapshotFree(newest)).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('locks the previous snapshot shared, so that it cannot be removed (pruned) meanwhile', async () => {
    const group = nextGroup();
    const older = await backupDynamic(group, 1000, 'x.didx', [fresh(10)]);
    const prev = await backupDynamic(group, 2000, 'x.didx', [fresh(10)]);
    const s = await start(group, 3000);
    try {
      expect(s.previous).toEqual(prev);
      // Prune removes each snapshot with removeBackupDir(dir, false): the base is refused.
      await expectCode(store.removeBackupDir(prev, false), 'LOCKED');
      // Readers (shared) are fine; the older snapshot is not locked.
      const reader = await ReaderSession.open({ store, dir: prev });
      await reader.close();
      await store.removeBackupDir(older, false);
    } finally {
      await s.close();
    }
    await store.removeBackupDir(prev, false);
  });

  it('refuses a previous snapshot locked exclusively by someone else', async () => {
    const group = nextGroup();
    const prev = await backupDynamic(group, 1000, 'x.didx', [fresh(10)]);
    const guard = await store.lockSnapshot(prev, true);
    try {
      await expectCode(
        start(group, 2000),
        'LOCKED',
        'base snapshot is already locked by another operation',
      );
    } finally {
      await guard.release();
    }
    expect(await groupFree(group)).toBe(true);
    expect(existsSync(store.snapshotPath(backupDir(group, 2000)))).toBe(false);
  });

  it('refuses a bad backup time', async () => {
    await expectCode(start(nextGroup(), 0), 'INVALID_BACKUP_TIME');
  });
});

describe('known chunks (§5.4)', () => {
  it('only chunks uploaded in the session or registered by downloadPrevious can be appended', async () => {
    const group = nextGroup();
    const a = fresh(100);
    const b = fresh(200);
    const prev = await backupDynamic(group, 1000, 'data.didx', [a, b]);
    const cfg = encodeBlob(Buffer.from('x'), { compress: false });

    const s = await start(group, 2000);
    try {
      const wid = await s.createDynamicIndex('data.didx');
      // Stored in the datastore, but not known to this session.
      await expectCode(
        s.appendIndex(wid, 'dynamic', [a.digest], [0]),
        'BACKUP_SESSION_INVALID',
        `no such chunk ${digestToHex(a.digest)}`,
      );
      await expectCode(s.downloadPrevious('missing.didx'), 'NOT_FOUND');
      await expectCode(s.downloadPrevious('../x.didx'), 'INVALID_ARCHIVE_NAME');

      const raw = await s.downloadPrevious('data.didx');
      expect(raw).toEqual(new Uint8Array(readFileSync(store.archivePath(prev, 'data.didx'))));
      const manifestRaw = await s.downloadPrevious(MANIFEST_BLOB_NAME);
      expect(manifestRaw).toEqual((await store.loadManifest(prev)).raw);

      // Lengths come from the previous index: b starts right after a's 100 bytes.
      await expectCode(
        s.appendIndex(wid, 'dynamic', [a.digest, b.digest], [0, 99]),
        'BACKUP_SESSION_INVALID',
        "dynamic writer 'data.didx' append chunk failed - got strange chunk offset (100 != 99)",
      );
      // The pair before the refused one stayed appended, as in PBS.
      await s.appendIndex(wid, 'dynamic', [b.digest], [100]);
      await s.closeIndex(wid, 'dynamic', 2, 300, dynamicCsum([a, b]));
      await s.uploadBlob('c.blob', cfg);
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      await s.finish();
    } finally {
      await s.close();
    }
    // Nothing was uploaded.
    expect(s.stats()).toEqual({ count: 0, size: 0, compressedSize: 0, duplicates: 0 });
    const idx = await store.openIndex(s.dir, 'data.didx');
    expect(idx.index.indexCsum).toEqual(dynamicCsum([a, b]));
  });

  it('a fixed index registers its chunk lengths, the last one short', async () => {
    const group = nextGroup();
    const full = fresh(CHUNK);
    const tail = fresh(10);
    let s = await start(group, 1000);
    let fcsum: Uint8Array;
    try {
      const wid = await s.createFixedIndex('d.img.fidx', CHUNK + 10);
      await s.uploadChunk(wid, 'fixed', full.digest, CHUNK, full.blob);
      await s.uploadChunk(wid, 'fixed', tail.digest, 10, tail.blob);
      await s.appendIndex(wid, 'fixed', [full.digest, tail.digest], [0, CHUNK]);
      fcsum = sha256(full.digest, tail.digest);
      await s.closeIndex(wid, 'fixed', 2, CHUNK + 10, fcsum);
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      await s.finish();
    } finally {
      await s.close();
    }
    s = await start(group, 2000);
    try {
      await s.downloadPrevious('d.img.fidx');
      // The same chunks into a dynamic index: their lengths are the ones the fixed index gives.
      const wid = await s.createDynamicIndex('same.didx');
      await s.appendIndex(wid, 'dynamic', [full.digest, tail.digest], [0, CHUNK]);
      await s.closeIndex(wid, 'dynamic', 2, CHUNK + 10, dynamicCsum([full, tail]));
    } finally {
      await s.close();
    }
  });
});

describe('chunk uploads', () => {
  it('checks digest and size of unencrypted chunks and stores nothing when they are wrong', async () => {
    const s = await start(nextGroup(), 10);
    try {
      const wid = await s.createDynamicIndex('x.didx');
      const c = fresh(500, { compress: true });
      const other = fresh(500);
      await expectCode(
        s.uploadChunk(wid, 'dynamic', other.digest, 500, c.blob),
        'DIGEST_MISMATCH',
        'detected chunk with wrong digest.',
      );
      expect(existsSync(store.chunkStore.chunkPath(other.digest))).toBe(false);
      await expectCode(
        s.uploadChunk(wid, 'dynamic', c.digest, 499, c.blob),
        'SIZE_MISMATCH',
        'detected chunk with wrong length (500 != 499)',
      );
      expect(existsSync(store.chunkStore.chunkPath(c.digest))).toBe(false);
      const garbage = new Uint8Array(c.blob);
      garbage[0] = garbage[0]! ^ 0xff;
      await expectCode(s.uploadChunk(wid, 'dynamic', c.digest, 500, garbage), 'BLOB_BAD_MAGIC');
      await expectCode(
        s.uploadChunk(wid, 'dynamic', c.digest, 500, c.blob.subarray(0, 5)),
        'BLOB_TRUNCATED',
      );
      await expectCode(s.uploadChunk(wid, 'dynamic', c.digest, 0, c.blob), 'INVALID_ARGUMENT');
      await expectCode(
        s.uploadChunk(wid, 'dynamic', c.digest.subarray(1), 500, c.blob),
        'INVALID_DIGEST',
      );
      // Refused uploads are not known.
      await expectCode(s.appendIndex(wid, 'dynamic', [c.digest], [0]), 'BACKUP_SESSION_INVALID');
    } finally {
      await s.close();
    }
  });

  it('with trustedClient (local mode, own pipeline) stores chunks as given without decoding them', async () => {
    const s = await start(nextGroup(), 10, { trustedClient: true });
    try {
      const wid = await s.createDynamicIndex('x.didx');
      const c = fresh(700, { compress: true });
      await s.uploadChunk(wid, 'dynamic', c.digest, 700, c.blob);
      // Stored byte for byte: no re-encoding, and the pipeline's CRC is kept.
      expectBytes(readFileSync(store.chunkStore.chunkPath(c.digest)), c.blob);
      // The trust covers content checks only; the protocol rules still apply.
      await expectCode(s.uploadChunk(wid, 'dynamic', c.digest, 0, c.blob), 'INVALID_ARGUMENT');
      await s.appendIndex(wid, 'dynamic', [c.digest], [0]);
      await expectCode(s.appendIndex(wid, 'dynamic', [c.digest], [0]), 'BACKUP_SESSION_INVALID');
    } finally {
      await s.close();
    }
  });

  it('ignores the uploaded CRC and stores the chunk with a correct one', async () => {
    const s = await start(nextGroup(), 10);
    try {
      const wid = await s.createDynamicIndex('x.didx');
      const c = fresh(64);
      const badCrc = new Uint8Array(c.blob);
      badCrc[8] = badCrc[8]! ^ 0x5a;
      expect(() => verifyBlobCrc(badCrc)).toThrow();
      await s.uploadChunk(wid, 'dynamic', c.digest, 64, badCrc);
      const stored = await store.loadChunk(c.digest);
      expect(stored).toEqual(c.blob);
      expect(Buffer.from(stored.subarray(8, 12)).readUInt32LE()).toBe(crc32(c.blob.subarray(12)));
    } finally {
      await s.close();
    }
  });

  it('trusts encrypted chunks: they cannot be checked without the key', async () => {
    const crypt = new CryptConfig(randomBytes(32));
    const s = await start(nextGroup(), 10);
    try {
      const wid = await s.createDynamicIndex('x.didx');
      const c = makeChunk(bytesOf(++seed, 300), { crypt });
      expect(await s.uploadChunk(wid, 'dynamic', c.digest, 300, c.blob)).toBe(
        digestToHex(c.digest),
      );
      expect(await store.loadChunk(c.digest)).toEqual(c.blob);
      // Even with a size that is not the plaintext's: the server cannot tell.
      const d = makeChunk(bytesOf(++seed, 300), { crypt });
      await s.uploadChunk(wid, 'dynamic', d.digest, 1234, d.blob);
      await s.appendIndex(wid, 'dynamic', [c.digest, d.digest], [0, 300]);
      await s.closeIndex(
        wid,
        'dynamic',
        2,
        1534,
        dynamicCsum([c, { ...d, data: new Uint8Array(1234) }]),
      );
    } finally {
      await s.close();
    }
  });

  it('refuses unknown, wrongly typed and out-of-range writer ids', async () => {
    const s = await start(nextGroup(), 10);
    try {
      const c = fresh(10);
      await expectCode(
        s.uploadChunk(1, 'dynamic', c.digest, 10, c.blob),
        'BACKUP_SESSION_INVALID',
        "dynamic writer '1' not registered",
      );
      const wid = await s.createDynamicIndex('x.didx');
      await expectCode(
        s.uploadChunk(wid, 'fixed', c.digest, 10, c.blob),
        'BACKUP_SESSION_INVALID',
        "fixed writer '1' not registered",
      );
      for (const bad of [0, 257, 1.5, -1]) {
        await expectCode(s.uploadChunk(bad, 'dynamic', c.digest, 10, c.blob), 'INVALID_ARGUMENT');
      }
    } finally {
      await s.close();
    }
  });

  it('fixed writers take chunks of at most 4 MiB and one shorter end chunk', async () => {
    const s = await start(nextGroup(), 10);
    try {
      const wid = await s.createFixedIndex('d.img.fidx', 3 * CHUNK);
      const big = fresh(CHUNK + 1);
      await expectCode(
        s.uploadChunk(wid, 'fixed', big.digest, CHUNK + 1, big.blob),
        'BACKUP_SESSION_INVALID',
        `fixed writer 'd.img.fidx' - got large chunk (${CHUNK + 1} > ${CHUNK})`,
      );
      // A refused first end chunk does not count.
      const e0 = fresh(99);
      await expectCode(s.uploadChunk(wid, 'fixed', e0.digest, 98, e0.blob), 'SIZE_MISMATCH');
      const e1 = fresh(100);
      const e2 = fresh(200);
      await s.uploadChunk(wid, 'fixed', e1.digest, 100, e1.blob);
      await expectCode(
        s.uploadChunk(wid, 'fixed', e2.digest, 200, e2.blob),
        'BACKUP_SESSION_INVALID',
        "fixed writer 'd.img.fidx' - detected multiple end chunks (chunk size too small)",
      );
      // A dynamic writer has no such rule.
      const dwid = await s.createDynamicIndex('x.didx');
      await s.uploadChunk(dwid, 'dynamic', e2.digest, 200, e2.blob);
      await s.uploadChunk(dwid, 'dynamic', e0.digest, 99, e0.blob);
    } finally {
      await s.close();
    }
  });
});

describe('dynamic writers', () => {
  it('checks list lengths, offsets and the close parameters; a failed close drops the writer', async () => {
    const s = await start(nextGroup(), 10);
    const chunks = [fresh(10), fresh(20)];
    try {
      const wid = await s.createDynamicIndex('x.didx');
      for (const c of chunks) await s.uploadChunk(wid, 'dynamic', c.digest, c.data.length, c.blob);
      await expectCode(
        s.appendIndex(wid, 'dynamic', [chunks[0]!.digest], [0, 10]),
        'BACKUP_SESSION_INVALID',
        'offset list has wrong length (2 != 1)',
      );
      await expectCode(
        s.appendIndex(wid, 'dynamic', [chunks[0]!.digest], [5]),
        'BACKUP_SESSION_INVALID',
        "dynamic writer 'x.didx' append chunk failed - got strange chunk offset (0 != 5)",
      );
      await s.appendIndex(wid, 'dynamic', [chunks[0]!.digest], [0]);
      await s.appendIndex(wid, 'dynamic', [chunks[1]!.digest], [10]);
      await expectCode(
        s.closeIndex(wid, 'dynamic', 0, 30, dynamicCsum(chunks)),
        'INVALID_ARGUMENT',
      );
      // Schema-level refusals leave the writer open.
      await s.closeIndex(wid, 'dynamic', 2, 30, dynamicCsum(chunks));
      await expectCode(
        s.appendIndex(wid, 'dynamic', [chunks[0]!.digest], [30]),
        'BACKUP_SESSION_INVALID',
        "dynamic writer '1' (x.didx) already closed",
      );
      await expectCode(
        s.closeIndex(wid, 'dynamic', 2, 30, dynamicCsum(chunks)),
        'BACKUP_SESSION_INVALID',
        /already closed/,
      );

      const cases: [string, number, number, Uint8Array, string][] = [
        ['c1.didx', 3, 30, dynamicCsum(chunks), 'unexpected chunk count (2 != 3)'],
        ['c2.didx', 2, 31, dynamicCsum(chunks), 'unexpected file size (30 != 31)'],
        ['c3.didx', 2, 30, dynamicCsum([chunks[1]!, chunks[0]!]), 'got unexpected checksum'],
      ];
      for (const [name, count, size, csum, message] of cases) {
        const w = await s.createDynamicIndex(name);
        await s.appendIndex(
          w,
          'dynamic',
          chunks.map((c) => c.digest),
          [0, 10],
        );
        await expectCode(
          s.closeIndex(w, 'dynamic', count, size, csum),
          'BACKUP_SESSION_INVALID',
          `dynamic writer '${name}' close failed - ${message}`,
        );
        // Neither the index nor its temp file is left; the id is used up.
        expect(existsSync(store.archivePath(s.dir, name))).toBe(false);
        expect(readdirSync(store.snapshotPath(s.dir)).filter((n) => n.includes('tmp'))).toEqual([]);
        await expectCode(
          s.appendIndex(w, 'dynamic', [], []),
          'BACKUP_SESSION_INVALID',
          /already closed/,
        );
      }
      // A name whose writer failed can be written again.
      await writeDynamic(s, 'c1.didx', chunks);
    } finally {
      await s.close();
    }
  });

  it('refuses wrong archive names and a second writer for the same archive', async () => {
    const s = await start(nextGroup(), 10);
    try {
      await expectCode(
        s.createDynamicIndex('x.fidx'),
        'INVALID_ARCHIVE_NAME',
        "wrong archive extension: 'x.fidx'",
      );
      await expectCode(s.createDynamicIndex('../x.didx'), 'INVALID_ARCHIVE_NAME');
      await expectCode(
        s.createFixedIndex('x.didx', 10),
        'INVALID_ARCHIVE_NAME',
        "wrong archive extension: 'x.didx'",
      );
      await expectCode(s.createFixedIndex('x.blob', 10), 'INVALID_ARCHIVE_NAME');
      const wid = await s.createDynamicIndex('x.didx');
      expect(wid).toBe(1);
      await expectCode(s.createDynamicIndex('x.didx'), 'BACKUP_SESSION_INVALID');
      expect(await s.createFixedIndex('y.fidx', 10)).toBe(2);
    } finally {
      await s.close();
    }
  });

  it('hands out writer ids 1..256 and no more', async () => {
    const s = await start(nextGroup(), 10);
    try {
      const wids: number[] = [];
      for (let i = 0; i < MAX_WRITER_ID; i++) {
        wids.push(
          await (i % 2 === 0
            ? s.createDynamicIndex(`a${i}.didx`)
            : s.createFixedIndex(`a${i}.fidx`, 1)),
        );
      }
      expect(wids).toEqual(Array.from({ length: 256 }, (_, i) => i + 1));
      await expectCode(s.createDynamicIndex('more.didx'), 'BACKUP_SESSION_INVALID');
    } finally {
      await s.close();
    }
  });
});

describe('fixed writers', () => {
  it('checks alignment, lengths and size, addresses slots, and checks the close', async () => {
    const s = await start(nextGroup(), 10);
    const full = fresh(CHUNK);
    const tail = fresh(100);
    const size = 2 * CHUNK + 100;
    try {
      const wid = await s.createFixedIndex('d.img.fidx', size);
      await s.uploadChunk(wid, 'fixed', full.digest, CHUNK, full.blob);
      await s.uploadChunk(wid, 'fixed', tail.digest, 100, tail.blob);
      await expectCode(
        s.appendIndex(wid, 'fixed', [full.digest], [100]),
        'BACKUP_SESSION_INVALID',
        "fixed writer 'd.img.fidx' - got unaligned chunk (pos = 100)",
      );
      await expectCode(
        s.appendIndex(wid, 'fixed', [tail.digest], [0]),
        'BACKUP_SESSION_INVALID',
        `fixed writer 'd.img.fidx' - chunk with unexpected length (100 != ${CHUNK})`,
      );
      await expectCode(
        s.appendIndex(wid, 'fixed', [full.digest], [2 * CHUNK]),
        'BACKUP_SESSION_INVALID',
        `fixed writer 'd.img.fidx' - chunk data exceeds size (${3 * CHUNK} > ${size})`,
      );
      // The same full chunk in two slots, out of order, then the end chunk.
      await s.appendIndex(
        wid,
        'fixed',
        [tail.digest, full.digest, full.digest],
        [2 * CHUNK, CHUNK, 0],
      );
      const csum = sha256(full.digest, full.digest, tail.digest);
      await expectCode(
        s.closeIndex(wid, 'fixed', 3, size, sha256(full.digest, tail.digest, full.digest)),
        'BACKUP_SESSION_INVALID',
        "fixed writer 'd.img.fidx' close failed - got unexpected checksum",
      );
      // A wrong checksum takes the index back.
      expect(existsSync(store.archivePath(s.dir, 'd.img.fidx'))).toBe(false);

      const w2 = await s.createFixedIndex('d.img.fidx', size);
      await s.appendIndex(
        w2,
        'fixed',
        [full.digest, full.digest, tail.digest],
        [0, CHUNK, 2 * CHUNK],
      );
      await expectCode(
        s.closeIndex(w2, 'fixed', 2, size, csum),
        'BACKUP_SESSION_INVALID',
        "fixed writer 'd.img.fidx' close failed - received wrong number of chunk (3 != 2)",
      );
      const w3 = await s.createFixedIndex('d.img.fidx', size);
      await s.appendIndex(
        w3,
        'fixed',
        [full.digest, full.digest, tail.digest],
        [0, CHUNK, 2 * CHUNK],
      );
      await expectCode(
        s.closeIndex(w3, 'fixed', 3, size + 1, csum),
        'BACKUP_SESSION_INVALID',
        `fixed writer 'd.img.fidx' close failed - unexpected file size (${size} != ${size + 1})`,
      );
      const w4 = await s.createFixedIndex('d.img.fidx', size);
      await s.appendIndex(w4, 'fixed', [full.digest, tail.digest], [0, 2 * CHUNK]);
      await expectCode(
        s.closeIndex(w4, 'fixed', 2, size, csum),
        'BACKUP_SESSION_INVALID',
        "fixed writer 'd.img.fidx' close failed - unexpected chunk count (3 != 2)",
      );
      const w5 = await s.createFixedIndex('d.img.fidx', size);
      await s.appendIndex(
        w5,
        'fixed',
        [full.digest, full.digest, tail.digest],
        [0, CHUNK, 2 * CHUNK],
      );
      await s.closeIndex(w5, 'fixed', 3, size, csum);
      const idx = await store.openIndex(s.dir, 'd.img.fidx');
      expect(idx.index.indexCsum).toEqual(csum);
      expect(idx.kind === 'fixed' && idx.index.size).toBe(size);
    } finally {
      await s.close();
    }
  });

  it('without a size grows as chunks arrive until the first short chunk fixes it [4.x]', async () => {
    const s = await start(nextGroup(), 10);
    const a = fresh(CHUNK);
    const b = fresh(CHUNK);
    const end = fresh(4321);
    const size = 2 * CHUNK + 4321;
    try {
      const wid = await s.createFixedIndex('stream.img.fidx');
      // The size-less writer holds a chunk-store guard like any index writer.
      expect(store.chunkStore.oldestWriter()).toBeDefined();
      for (const c of [a, b, end])
        await s.uploadChunk(wid, 'fixed', c.digest, c.data.length, c.blob);
      await s.appendIndex(wid, 'fixed', [b.digest, a.digest], [CHUNK, 0]);
      // The end chunk may not lie before data already appended.
      await expectCode(
        s.appendIndex(wid, 'fixed', [end.digest], [0]),
        'BACKUP_SESSION_INVALID',
        /chunk data exceeds size/,
      );
      await s.appendIndex(wid, 'fixed', [end.digest], [2 * CHUNK]);
      await expectCode(
        s.appendIndex(wid, 'fixed', [a.digest], [3 * CHUNK]),
        'BACKUP_SESSION_INVALID',
        `fixed writer 'stream.img.fidx' - chunk data exceeds size (${4 * CHUNK} > ${size})`,
      );
      await expectCode(
        s.closeIndex(wid, 'fixed', 3, size - 1, sha256(a.digest, b.digest, end.digest)),
        'BACKUP_SESSION_INVALID',
        /unexpected file size/,
      );

      const w2 = await s.createFixedIndex('stream.img.fidx');
      await s.appendIndex(w2, 'fixed', [a.digest, b.digest, end.digest], [0, CHUNK, 2 * CHUNK]);
      await s.closeIndex(w2, 'fixed', 3, size, sha256(a.digest, b.digest, end.digest));
      const idx = await store.openIndex(s.dir, 'stream.img.fidx');
      if (idx.kind !== 'fixed') throw new Error('expected a fixed index');
      expect(idx.index.size).toBe(size);
      expect(idx.index.count).toBe(3);
      expect(idx.index.indexCsum).toEqual(sha256(a.digest, b.digest, end.digest));

      // Nothing appended: nothing to store.
      const w3 = await s.createFixedIndex('empty.img.fidx');
      await expectCode(s.closeIndex(w3, 'fixed', 0, 0, sha256()), 'INDEX_EMPTY');
    } finally {
      await s.close();
    }
  });

  it('reuse-csum clones the previous index and takes only the changed slots', async () => {
    const group = nextGroup('vm');
    const a = fresh(CHUNK);
    const b = fresh(1000);
    const c = fresh(1000);
    const size = CHUNK + 1000;
    const name = 'drive-scsi0.img.fidx';

    let s = await start(group, 1000);
    try {
      await expectCode(
        s.createFixedIndex(name, size, sha256()),
        'NO_PREVIOUS_BACKUP',
        'cannot reuse index - no valid previous backup exists',
      );
      const wid = await s.createFixedIndex(name, size);
      await s.uploadChunk(wid, 'fixed', a.digest, CHUNK, a.blob);
      await s.uploadChunk(wid, 'fixed', b.digest, 1000, b.blob);
      await s.appendIndex(wid, 'fixed', [a.digest, b.digest], [0, CHUNK]);
      await s.closeIndex(wid, 'fixed', 2, size, sha256(a.digest, b.digest));
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      await s.finish();
    } finally {
      await s.close();
    }

    s = await start(group, 2000);
    try {
      const wrong = sha256(b.digest, a.digest);
      await expectCode(
        s.createFixedIndex(name, size, wrong),
        'BACKUP_SESSION_INVALID',
        `expected csum (${digestToHex(wrong)}) doesn't match last backup's (${digestToHex(sha256(a.digest, b.digest))}), cannot do incremental backup`,
      );
      const old = sha256(a.digest, b.digest);
      await expectCode(s.createFixedIndex(name, undefined, old), 'INVALID_ARGUMENT');
      await expectCode(
        s.createFixedIndex('other.img.fidx', size, old),
        'NO_PREVIOUS_BACKUP',
        'cannot reuse index - no previous backup exists for archive',
      );
      await expectCode(
        s.createFixedIndex(name, 3 * CHUNK, old),
        'BACKUP_SESSION_INVALID',
        /different size\/count/,
      );

      const wid = await s.createFixedIndex(name, size, old);
      await s.uploadChunk(wid, 'fixed', c.digest, 1000, c.blob);
      await s.appendIndex(wid, 'fixed', [c.digest], [CHUNK]);
      // chunk-count counts only what was appended in this session.
      await expectCode(
        s.closeIndex(wid, 'fixed', 2, size, sha256(a.digest, c.digest)),
        'BACKUP_SESSION_INVALID',
        /wrong number of chunk \(1 != 2\)/,
      );
      const w2 = await s.createFixedIndex(name, size, old);
      await s.appendIndex(w2, 'fixed', [c.digest], [CHUNK]);
      await s.closeIndex(w2, 'fixed', 1, size, sha256(a.digest, c.digest));
      const idx = await store.openIndex(s.dir, name);
      if (idx.kind !== 'fixed') throw new Error('expected a fixed index');
      expect(digestToHex(idx.index.digest(0))).toBe(digestToHex(a.digest));
      expect(digestToHex(idx.index.digest(1))).toBe(digestToHex(c.digest));
    } finally {
      await s.close();
    }
  });
});

describe('blobs', () => {
  it('checks the name and the CRC, and replaces a blob atomically', async () => {
    const s = await start(nextGroup(), 10);
    try {
      const blob = encodeBlob(Buffer.from('hello'), { compress: false });
      await expectCode(
        s.uploadBlob('x.didx', blob),
        'INVALID_ARCHIVE_NAME',
        "wrong blob file extension: 'x.didx'",
      );
      await expectCode(s.uploadBlob('../x.blob', blob), 'INVALID_ARCHIVE_NAME');
      const bad = new Uint8Array(blob);
      bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
      await expectCode(
        s.uploadBlob('x.blob', bad),
        'BLOB_CRC_MISMATCH',
        'Data blob has wrong CRC checksum.',
      );
      await expectCode(s.uploadBlob('x.blob', new Uint8Array(4)), 'BLOB_TRUNCATED');
      expect(existsSync(store.archivePath(s.dir, 'x.blob'))).toBe(false);
      await s.uploadBlob('x.blob', blob);
      const second = encodeBlob(Buffer.from('hello again'), { compress: false });
      await s.uploadBlob('x.blob', second);
      expect(new Uint8Array(readFileSync(store.archivePath(s.dir, 'x.blob')))).toEqual(second);
      expect(readdirSync(store.snapshotPath(s.dir))).toEqual(['x.blob']);
    } finally {
      await s.close();
    }
  });
});

describe('finish', () => {
  it('needs closed writers, a stored file and a manifest that parses', async () => {
    const s = await start(nextGroup(), 10);
    try {
      await expectCode(
        s.finish(),
        'BACKUP_SESSION_INVALID',
        'backup does not contain valid files (file count == 0)',
      );
      const wid = await s.createDynamicIndex('x.didx');
      await expectCode(
        s.finish(),
        'BACKUP_SESSION_INVALID',
        'found open index writer - unable to finish backup',
      );
      const c = fresh(10);
      await s.uploadChunk(wid, 'dynamic', c.digest, 10, c.blob);
      await s.appendIndex(wid, 'dynamic', [c.digest], [0]);
      await s.closeIndex(wid, 'dynamic', 1, 10, dynamicCsum([c]));
      await expectCode(s.finish(), 'BACKUP_SESSION_INVALID', /^unable to update manifest blob - /);
      await s.uploadBlob(MANIFEST_BLOB_NAME, encodeBlob(Buffer.from('{"not":"a manifest"}')));
      await expectCode(
        s.finish(),
        'BACKUP_SESSION_INVALID',
        /^unable to update manifest blob - .*manifest/,
      );
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));

      // While finishing and afterwards every call is refused.
      const finishing = s.finish();
      await expectCode(
        s.uploadBlob('late.blob', encodeBlob(Buffer.from('x'))),
        'BACKUP_SESSION_INVALID',
        'backup is already in the process of finishing.',
      );
      await finishing;
      await expectCode(
        s.createDynamicIndex('y.didx'),
        'BACKUP_SESSION_INVALID',
        'backup already marked as finished.',
      );
      await expectCode(s.finish(), 'BACKUP_SESSION_INVALID', 'backup already marked as finished.');
      await expectCode(s.downloadPrevious(MANIFEST_BLOB_NAME), 'BACKUP_SESSION_INVALID');
    } finally {
      await s.close();
    }
    // Finished: close keeps it.
    const { manifest } = await store.loadManifest(s.dir);
    expect(manifest.unprotected['chunk_upload_stats']).toEqual({
      count: 1,
      size: 10,
      compressed_size: 22,
      duplicates: 0,
    });
    expect(parseManifest(decodeBlob((await store.loadManifest(s.dir)).raw)).backupTime).toBe(10);
  });

  it('fails when the base snapshot was removed during the backup', async () => {
    const group = nextGroup();
    const prev = await backupDynamic(group, 1000, 'x.didx', [fresh(10)]);
    const s = await start(group, 2000);
    try {
      await writeDynamic(s, 'y.didx', [fresh(10)]);
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      // Only a forced removal gets past the shared lock.
      await store.removeBackupDir(prev, true);
      await expectCode(
        s.finish(),
        'BACKUP_SESSION_INVALID',
        `base snapshot host/${group.id}/${formatBackupTime(1000)} was removed during backup, cannot finish as chunks might be missing`,
      );
    } finally {
      await s.close();
    }
    expect(existsSync(store.snapshotPath(s.dir))).toBe(false);
  });
});

describe('close without finish', () => {
  it('removes the snapshot with its temp files, and a group the session created', async () => {
    const group = nextGroup();
    const s = await start(group, 10);
    const wid = await s.createDynamicIndex('x.didx');
    await s.createFixedIndex('y.img.fidx', 100);
    const c = fresh(10);
    await s.uploadChunk(wid, 'dynamic', c.digest, 10, c.blob);
    await s.appendIndex(wid, 'dynamic', [c.digest], [0]);
    await s.uploadBlob('z.blob', encodeBlob(Buffer.from('z')));
    expect(readdirSync(store.snapshotPath(s.dir)).sort()).toEqual([
      'x.tmp_didx',
      'y.img.tmp_fidx',
      'z.blob',
    ]);
    await Promise.all([s.close(), s.close()]);
    await s.close();
    expect(existsSync(store.snapshotPath(s.dir))).toBe(false);
    expect(existsSync(store.groupPath(group))).toBe(false);
    expect(existsSync(store.snapshotLockPath(s.dir))).toBe(false);
    expect(await groupFree(group)).toBe(true);
    // The chunk stays in the store for GC to decide about.
    expect(existsSync(store.chunkStore.chunkPath(c.digest))).toBe(true);
    await expectCode(
      s.uploadBlob('z.blob', encodeBlob(Buffer.from('z'))),
      'BACKUP_SESSION_INVALID',
      /is closed/,
    );
  });

  it('keeps an existing group and its other snapshots', async () => {
    const group = nextGroup();
    const prev = await backupDynamic(group, 1000, 'x.didx', [fresh(10)]);
    const s = await start(group, 2000);
    await writeDynamic(s, 'x.didx', [fresh(10)]);
    await s.close();
    expect(existsSync(store.snapshotPath(s.dir))).toBe(false);
    expect((await store.listSnapshots(group)).map((i) => i.dir)).toEqual([prev]);
    expect(await store.getOwner(group)).toEqual(ROOT);
    expect(await snapshotFree(prev)).toBe(true);
  });

  it('waits for calls in flight', async () => {
    const s = await start(nextGroup(), 10);
    const wid = await s.createDynamicIndex('x.didx');
    const c = fresh(CHUNK);
    const upload = s.uploadChunk(wid, 'dynamic', c.digest, CHUNK, c.blob);
    const closed = s.close();
    await expect(upload).resolves.toBe(digestToHex(c.digest));
    await closed;
    expect(existsSync(store.snapshotPath(s.dir))).toBe(false);
  });
});

describe('tasks', () => {
  it('runs a session as a backup task with PBS-like log lines', async () => {
    const group = nextGroup();
    const lines: string[] = [];
    const s = await start(group, 0x65a0b2c0, {
      tasks,
      debug: true,
      taskOptions: { onLine: (l) => lines.push(l) },
    });
    const upid = s.upid ?? '';
    const fields = parseUpid(upid);
    expect(fields.workerType).toBe('backup');
    expect(fields.workerId).toBe(`sessstore:host/${group.id}`);
    expect(upid).toContain(`:backup:sessstore\\x3ahost-${group.id}:root@pam:`);
    expect((await tasks.status(upid)).state).toBe('running');
    const c = fresh(10);
    try {
      await writeDynamic(s, 'x.didx', [c]);
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      await s.finish();
    } finally {
      await s.close();
    }
    expect((await tasks.status(upid)).state).toBe('ok');
    const log = await tasks.readLog(upid);
    expect(lines[0]).toBe(
      `starting new backup on datastore 'sessstore': "host/${group.id}/${formatBackupTime(0x65a0b2c0)}"`,
    );
    expect(lines).toContain(
      `created new dynamic index 1 ("host/${group.id}/${formatBackupTime(0x65a0b2c0)}/x.didx")`,
    );
    expect(lines).toContain(`upload_chunk done: 10 bytes, ${digestToHex(c.digest)}`);
    expect(lines).toContain("Upload statistics for 'x.didx'");
    expect(lines).toContain('Chunk count: 1');
    expect(lines).toContain('backup finished successfully');
    expect(lines.at(-1)).toBe('TASK OK');
    expect(log.some((l) => l.endsWith('backup finished successfully'))).toBe(true);
  });

  it('ends the task with an error when the session ends without finish', async () => {
    const s1 = await start(nextGroup(), 10, { tasks });
    await s1.close();
    expect(await tasks.status(s1.upid ?? '')).toMatchObject({
      state: 'error',
      status: 'backup ended but finished flag is not set.',
    });
    const log1 = await tasks.readLog(s1.upid ?? '');
    expect(
      log1.some((l) =>
        l.endsWith('backup ended and finish failed: backup ended but finished flag is not set.'),
      ),
    ).toBe(true);
    expect(log1.some((l) => l.endsWith('removing unfinished backup'))).toBe(true);

    const s2 = await start(nextGroup(), 10, { tasks });
    await s2.close(new Error('connection reset'));
    expect(await tasks.status(s2.upid ?? '')).toMatchObject({
      state: 'error',
      status: 'connection reset',
    });
    const log2 = await tasks.readLog(s2.upid ?? '');
    expect(log2.some((l) => l.endsWith('backup failed: connection reset'))).toBe(true);
    expect(log2.some((l) => l.endsWith('removing failed backup'))).toBe(true);
  });

  it('an aborted task ends the session and removes the snapshot', async () => {
    const group = nextGroup();
    const s = await start(group, 10, { tasks });
    await s.createDynamicIndex('x.didx');
    expect(tasks.abort(s.upid ?? '')).toBe(true);
    await s.close();
    expect(existsSync(store.snapshotPath(s.dir))).toBe(false);
    expect(await groupFree(group)).toBe(true);
    expect(await tasks.status(s.upid ?? '')).toMatchObject({
      state: 'error',
      status: 'abort requested - aborting task',
    });
    expect(await rejectionCodeOf(s.createDynamicIndex('y.didx'))).toBe('BACKUP_SESSION_INVALID');
  });

  it('with verify-new, finish starts a verify task for the new snapshot and close waits for it', async () => {
    const setVerifyNew = (value: boolean): Promise<unknown> =>
      updateDatastoreConfig(fx.dirs, ({ entries }) =>
        entries.map((e) => {
          if (e.name !== store.name) return e;
          const { 'verify-new': _old, ...props } = e.props;
          return { name: e.name, props: value ? { ...props, 'verify-new': true } : props };
        }),
      );
    await setVerifyNew(true);
    try {
      const verifying = await DataStore.lookup(store.name, { dirs: fx.dirs });
      expect(verifying.config?.['verify-new']).toBe(true);
      const group = nextGroup();
      const s = await BackupSession.start({
        store: verifying,
        ns: ROOT_NAMESPACE,
        group,
        backupTime: 10,
        authId: ROOT,
        tasks,
      });
      try {
        await writeDynamic(s, 'x.didx', [fresh(10), fresh(20)]);
        await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
        await s.finish();
      } finally {
        await s.close();
      }
      const verifies = (await tasks.list()).filter(
        (t) => t.workerType === 'verify' && t.workerId === `sessstore:host/${group.id}/0000000A`,
      );
      expect(verifies).toHaveLength(1);
      expect(verifies[0]?.state).toBe('ok');
      const { manifest } = await store.loadManifest(s.dir);
      expect(manifest.unprotected['verify_state']).toEqual({
        state: 'ok',
        upid: verifies[0]?.upid,
      });
      expect(manifest.unprotected['chunk_upload_stats']).toMatchObject({ count: 2 });
    } finally {
      await setVerifyNew(false);
    }
  });
});

describe('concurrent calls', () => {
  it('uploads may overlap; appends keep their order', async () => {
    const s = await start(nextGroup(), 10);
    const chunks = Array.from({ length: 20 }, (_, i) => fresh(100 + i, { compress: i % 2 === 0 }));
    try {
      const wid = await s.createDynamicIndex('x.didx');
      await Promise.all(
        chunks.map((c) => s.uploadChunk(wid, 'dynamic', c.digest, c.data.length, c.blob)),
      );
      const starts = startsOf(chunks);
      await Promise.all(
        chunks.map((c, i) => s.appendIndex(wid, 'dynamic', [c.digest], [starts[i]!])),
      );
      await s.closeIndex(wid, 'dynamic', 20, totalSize(chunks), dynamicCsum(chunks));
      await s.uploadBlob(MANIFEST_BLOB_NAME, manifestBlob(s.dir));
      await s.finish();
    } finally {
      await s.close();
    }
    const idx = await store.openIndex(s.dir, 'x.didx');
    expect(idx.index.indexCsum).toEqual(dynamicCsum(chunks));
  });
});
