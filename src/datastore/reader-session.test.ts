import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type StoreFixture,
  type TestChunk,
  bytesOf,
  makeChunk,
  makeStore,
  writeSnapshot,
} from '../../test/helpers/store-fixture.js';
import { isBurrowError } from '../lib/errors.js';
import { encodeBlob } from '../format/data-blob.js';
import { MANIFEST_BLOB_NAME } from '../format/manifest.js';
import { parseUpid } from '../format/upid.js';
import { TaskManager } from '../tasks/index.js';
import { parseAuthid } from '../types/auth.js';
import type { BackupDir } from '../types/backup.js';
import { ROOT_NAMESPACE, backupDir, backupGroup, formatBackupTime } from '../types/backup.js';
import { digestToHex } from '../types/digest.js';
import { BackupSession } from './backup-session.js';
import type { DataStore } from './datastore.js';
import { ReaderSession, readArchiveFile, readerWorkerId } from './reader-session.js';

let fx: StoreFixture;
let store: DataStore;
let tasks: TaskManager;

beforeAll(async () => {
  fx = await makeStore({ name: 'readstore' });
  store = fx.store;
  tasks = new TaskManager({ dirs: fx.dirs, node: 'testnode' });
});

afterAll(async () => {
  await fx?.cleanup();
});

let seed = 5000;
const fresh = (length: number): TestChunk => makeChunk(bytesOf(++seed, length));
let seq = 0;
const nextDir = (time = 0x65a0b2c0): BackupDir =>
  backupDir(backupGroup(ROOT_NAMESPACE, 'host', `r${++seq}`), time);

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
  if (typeof message === 'string') expect((caught as Error).message).toBe(message);
  else if (message !== undefined) expect((caught as Error).message).toMatch(message);
}

const fileBytes = (path: string): Uint8Array => new Uint8Array(readFileSync(path));

interface Snapshot {
  dir: BackupDir;
  didx: TestChunk[];
  fidx: TestChunk[];
  conf: Uint8Array;
}

async function snapshot(): Promise<Snapshot> {
  const dir = nextDir();
  const didx = [fresh(100), fresh(200)];
  const fidx = [fresh(64), fresh(64)];
  const conf = encodeBlob(Buffer.from('x=1\n'), { compress: false });
  await writeSnapshot(store, dir, [
    { kind: 'didx', name: 'root.pxar.didx', chunks: didx },
    { kind: 'fidx', name: 'disk.img.fidx', chunks: fidx, chunkSize: 64 },
    { kind: 'blob', name: 'app.conf.blob', raw: conf },
  ]);
  return { dir, didx, fidx, conf };
}

describe('opening', () => {
  it('needs an existing snapshot', async () => {
    const dir = nextDir();
    await expectCode(
      ReaderSession.open({ store, dir }),
      'NOT_FOUND',
      `snapshot host/${dir.group.id}/${formatBackupTime(dir.time)} does not exist.`,
    );
  });

  it('is refused while a backup writes the snapshot (exclusive lock)', async () => {
    const dir = nextDir();
    const session = await BackupSession.start({
      store,
      ns: ROOT_NAMESPACE,
      group: dir.group,
      backupTime: dir.time,
      authId: parseAuthid('root@pam'),
    });
    try {
      await expectCode(ReaderSession.open({ store, dir }), 'LOCKED');
    } finally {
      await session.close();
    }
  });

  it('holds the snapshot lock shared until close: removal (prune) waits, readers do not', async () => {
    const { dir } = await snapshot();
    const reader = await ReaderSession.open({ store, dir });
    const second = await ReaderSession.open({ store, dir });
    await expectCode(store.removeBackupDir(dir, false), 'LOCKED');
    await reader.close();
    await expectCode(store.removeBackupDir(dir, false), 'LOCKED');
    await second.close();
    await Promise.all([second.close(), second.close()]);
    await store.removeBackupDir(dir, false);
    await expectCode(reader.download(MANIFEST_BLOB_NAME), 'BACKUP_SESSION_INVALID', /is closed/);
    await expectCode(reader.chunk(new Uint8Array(32)), 'BACKUP_SESSION_INVALID');
  });
});

describe('the allowed-chunks rule (§6.2)', () => {
  it('hands out only chunks of indexes downloaded in this session', async () => {
    const snap = await snapshot();
    const stranger = fresh(50);
    await store.insertChunk(stranger.blob, stranger.digest);
    const reader = await ReaderSession.open({ store, dir: snap.dir });
    try {
      const a = snap.didx[0]!;
      await expectCode(
        reader.chunk(a.digest),
        'CHUNK_NOT_ALLOWED',
        `download chunk ${digestToHex(a.digest)} not allowed`,
      );
      // Blobs register nothing.
      expect(await reader.download(MANIFEST_BLOB_NAME)).toEqual(
        fileBytes(store.archivePath(snap.dir, MANIFEST_BLOB_NAME)),
      );
      expect(await reader.download('app.conf.blob')).toEqual(snap.conf);
      await expectCode(reader.chunk(a.digest), 'CHUNK_NOT_ALLOWED');

      expect(await reader.download('root.pxar.didx')).toEqual(
        fileBytes(store.archivePath(snap.dir, 'root.pxar.didx')),
      );
      for (const c of snap.didx) {
        expect(reader.isAllowed(c.digest)).toBe(true);
        // The raw stored blob, exactly as on disk.
        expect(await reader.chunk(c.digest)).toEqual(
          fileBytes(store.chunkStore.chunkPath(c.digest)),
        );
        expect(await reader.chunk(c.digest)).toEqual(c.blob);
      }
      await expectCode(reader.chunk(snap.fidx[0]!.digest), 'CHUNK_NOT_ALLOWED');
      await reader.download('disk.img.fidx');
      expect(await reader.chunk(snap.fidx[1]!.digest)).toEqual(snap.fidx[1]!.blob);
      // In the store, but referenced by nothing this session downloaded.
      await expectCode(reader.chunk(stranger.digest), 'CHUNK_NOT_ALLOWED');
      await expectCode(reader.chunk(new Uint8Array(31)), 'INVALID_DIGEST');
      // chunkFile (a worker reads the file itself) follows the same rule.
      expect(reader.chunkFile(snap.didx[0]!.digest)).toBe(
        store.chunkStore.chunkPath(snap.didx[0]!.digest),
      );
      await expectCode(
        Promise.resolve().then(() => reader.chunkFile(stranger.digest)),
        'CHUNK_NOT_ALLOWED',
      );
    } finally {
      await reader.close();
    }
    // A new session starts with an empty allowed set.
    const again = await ReaderSession.open({ store, dir: snap.dir });
    try {
      await expectCode(again.chunk(snap.didx[0]!.digest), 'CHUNK_NOT_ALLOWED');
    } finally {
      await again.close();
    }
  });

  it('an allowed chunk missing from the store is NOT_FOUND', async () => {
    const snap = await snapshot();
    rmSync(store.chunkStore.chunkPath(snap.didx[1]!.digest));
    const reader = await ReaderSession.open({ store, dir: snap.dir });
    try {
      await reader.download('root.pxar.didx');
      await expectCode(reader.chunk(snap.didx[1]!.digest), 'NOT_FOUND');
    } finally {
      await reader.close();
    }
  });
});

describe('download', () => {
  it('refuses missing files, non-archive names, damaged indexes and non-files', async () => {
    const snap = await snapshot();
    const dir = store.snapshotPath(snap.dir);
    writeFileSync(`${dir}/bad.didx`, Buffer.alloc(5000, 7));
    writeFileSync(`${dir}/swapped.didx`, readFileSync(`${dir}/disk.img.fidx`));
    mkdirSync(`${dir}/folder.blob`);
    writeFileSync(`${dir}/x.tmp_didx`, 'partial');
    const reader = await ReaderSession.open({ store, dir: snap.dir });
    try {
      await expectCode(reader.download('missing.blob'), 'NOT_FOUND');
      for (const name of ['../x.blob', 'x.tmp_didx', '.protected', 'owner', '']) {
        await expectCode(reader.download(name), 'INVALID_ARCHIVE_NAME');
      }
      await expectCode(reader.download('bad.didx'), 'INDEX_BAD_MAGIC');
      await expectCode(reader.download('swapped.didx'), 'INDEX_BAD_MAGIC');
      await expectCode(reader.download('folder.blob'), 'IO_ERROR');
      // A refused index registered nothing.
      await expectCode(reader.chunk(snap.fidx[0]!.digest), 'CHUNK_NOT_ALLOWED');
    } finally {
      await reader.close();
    }
  });

  it('readArchiveFile returns an index with its chunk lengths', async () => {
    const snap = await snapshot();
    const file = await readArchiveFile(store, snap.dir, 'root.pxar.didx');
    expect(file.chunks?.map((c) => [digestToHex(c.digest), c.size])).toEqual(
      snap.didx.map((c) => [digestToHex(c.digest), c.data.length]),
    );
    const blob = await readArchiveFile(store, snap.dir, 'app.conf.blob');
    expect(blob.chunks).toBeUndefined();
  });
});

describe('tasks', () => {
  it('runs as a reader task with the PBS worker id and ends OK at close', async () => {
    const snap = await snapshot();
    const lines: string[] = [];
    const reader = await ReaderSession.open({
      store,
      dir: snap.dir,
      tasks,
      authId: parseAuthid('alice@pbs'),
      taskOptions: { onLine: (l) => lines.push(l) },
    });
    const upid = reader.upid ?? '';
    const fields = parseUpid(upid);
    expect(fields.workerType).toBe('reader');
    expect(fields.workerId).toBe(`readstore:host/${snap.dir.group.id}/65A0B2C0`);
    expect(readerWorkerId(store, snap.dir)).toBe(fields.workerId);
    expect(upid).toContain(`:reader:readstore\\x3ahost-${snap.dir.group.id}-65A0B2C0:alice@pbs:`);
    expect((await tasks.status(upid)).state).toBe('running');
    await reader.download('root.pxar.didx');
    await reader.close();
    expect((await tasks.status(upid)).state).toBe('ok');
    expect(lines[0]).toBe(
      `starting new backup reader datastore 'readstore': ${JSON.stringify(store.snapshotPath(snap.dir))}`,
    );
    expect(lines).toContain("register chunks in 'root.pxar.didx' as downloadable.");
    expect(lines).toContain('reader finished successfully');
    expect(lines.at(-1)).toBe('TASK OK');
  });

  it('an aborted reader task closes the session', async () => {
    const snap = await snapshot();
    const reader = await ReaderSession.open({ store, dir: snap.dir, tasks });
    expect(tasks.abort(reader.upid ?? '')).toBe(true);
    await reader.close();
    expect(await tasks.status(reader.upid ?? '')).toMatchObject({
      state: 'error',
      status: 'abort requested - aborting task',
    });
    await store.removeBackupDir(snap.dir, false);
  });
});
