import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { appendFile, writeFile as writeFileAsync } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockHolder } from '../../test/helpers/lock-holder-client.js';
import {
  type StoreFixture,
  type TestChunk,
  atimeOf,
  bytesOf,
  exists,
  makeChunk,
  makeStore,
  setAtime,
  writeSnapshot,
} from '../../test/helpers/store-fixture.js';
import { FakeClock } from '../lib/clock.js';
import { isBurrowError } from '../lib/errors.js';
import { TaskManager } from '../tasks/index.js';
import { encodeBlob } from '../format/data-blob.js';
import { backupDir, backupGroup, formatRfc3339Utc, ROOT_NAMESPACE } from '../types/backup.js';
import { parseAuthid } from '../types/auth.js';
import { digestToHex } from '../types/digest.js';
import { DataStore, type SnapshotInfo } from './datastore.js';
import { updateDatastoreConfig } from './datastore-config-store.js';
import {
  DigestLru,
  type GcOptions,
  type WalkEntry,
  computeMinAtime,
  formatHumanByte,
  formatTimeSpan,
  garbageCollection,
  listIndexFiles,
  sweepDecision,
} from './gc.js';
import { parseGcStatus, type GcStatusData } from './gc-status.js';

const DAY = 86_400;
const HOUR = 3_600;
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

interface GcRun {
  upid: string;
  lines: string[];
  status?: GcStatusData;
  error?: unknown;
}

/** GC as a real task (log file, UPID), collecting the task's log lines. */
async function runGc(
  fixture: StoreFixture,
  opts: GcOptions = {},
  onLine?: (line: string, abort: () => void) => void,
  store: DataStore = fixture.store,
): Promise<GcRun> {
  const manager = new TaskManager({ dirs: fixture.dirs, node: 'testnode' });
  const lines: string[] = [];
  let upid = '';
  try {
    const run = await manager.run(
      'garbage_collection',
      store.name,
      'root@pam',
      (task) => garbageCollection(store, task, opts),
      {
        onStart: (u) => (upid = u),
        onLine: (line) => {
          lines.push(line);
          onLine?.(line, () => manager.abort(upid));
        },
      },
    );
    return { upid: run.upid, lines, status: run.result };
  } catch (error) {
    return { upid, lines, error };
  }
}

const chunkPath = (store: DataStore, chunk: TestChunk | Uint8Array): string =>
  store.chunkStore.chunkPath(chunk instanceof Uint8Array ? chunk : chunk.digest);

async function insert(store: DataStore, ...chunks: TestChunk[]): Promise<void> {
  for (const chunk of chunks) await store.insertChunk(chunk.blob, chunk.digest);
}

// ---------------------------------------------------------------------------------------------
// Pure parts

describe('GC decisions', () => {
  it('cutoff: start minus the grace period, or 5 min before an older writer (§7.2 step 3)', () => {
    const start = 1_700_000_000;
    // Default gc-atime-cutoff 1445 min = 86700 s.
    expect(computeMinAtime(start, start, 1445 * 60)).toBe(start - 86_700);
    // A writer that started after the cutoff does not move it.
    expect(computeMinAtime(start, start - 1000, 86_700)).toBe(start - 86_700);
    // A writer older than the cutoff pulls it back to its start minus 300 s.
    expect(computeMinAtime(start, start - 2 * DAY, 86_700)).toBe(start - 2 * DAY - 300);
    expect(computeMinAtime(start, start - 60, 60 * 1)).toBe(start - 60);
  });

  it('sweep classification: remove below the cutoff, pending below the oldest writer, else keep', () => {
    expect(sweepDecision(99, 100, 200)).toBe('remove');
    expect(sweepDecision(100, 100, 200)).toBe('pending');
    expect(sweepDecision(199, 100, 200)).toBe('pending');
    expect(sweepDecision(200, 100, 200)).toBe('keep');
  });

  it('formats byte counts as PBS HumanByte does (upstream known answers)', () => {
    // Values from proxmox-human-byte's own tests of binary auto-scaling.
    expect(formatHumanByte(0)).toBe('0 B');
    expect(formatHumanByte(987)).toBe('987 B');
    expect(formatHumanByte(1022)).toBe('1022 B');
    expect(formatHumanByte(9_000)).toBe('8.789 KiB');
    expect(formatHumanByte(10_000_000)).toBe('9.537 MiB');
    expect(formatHumanByte(10_000_000_000)).toBe('9.313 GiB');
    expect(formatHumanByte(10_000_000_000_000)).toBe('9.095 TiB');
    expect(formatHumanByte(1 << 10)).toBe('1 KiB');
    expect(formatHumanByte((1 << 10) * 10)).toBe('10 KiB');
    expect(formatHumanByte(1 << 20)).toBe('1 MiB');
    expect(formatHumanByte(2 ** 30 + 103 * 2 ** 20)).toBe('1.101 GiB');
    expect(formatHumanByte(2 ** 30 + 128 * 2 ** 20)).toBe('1.125 GiB');
    expect(formatHumanByte(2 ** 40 + 128 * 2 ** 30)).toBe('1.125 TiB');
    expect(formatHumanByte(2 * 2 ** 50 + 512 * 2 ** 40)).toBe('2.5 PiB');
  });

  it('formats the cutoff as a time span', () => {
    expect(formatTimeSpan(86_700)).toBe('1d 5m');
    expect(formatTimeSpan(60)).toBe('1m');
    expect(formatTimeSpan(3_601)).toBe('1h 1s');
    expect(formatTimeSpan(0)).toBe('0s');
  });

  it('digest cache: hits refresh recency, the least recently used key is evicted', () => {
    const lru = new DigestLru(2);
    expect(lru.insert('a')).toBe(false);
    expect(lru.insert('b')).toBe(false);
    expect(lru.insert('a')).toBe(true); // a is now newer than b
    expect(lru.insert('c')).toBe(false); // evicts b
    expect(lru.size).toBe(2);
    expect(lru.insert('a')).toBe(true);
    expect(lru.insert('b')).toBe(false);
  });
});

describe('index file walk', () => {
  const dirent = (name: string, kind: 'dir' | 'file' | 'link'): WalkEntry => ({
    name,
    isDirectory: () => kind === 'dir',
    isFile: () => kind === 'file',
    isSymbolicLink: () => kind === 'link',
  });
  const errno = (code: string): Error => Object.assign(new Error(code), { code });

  /** A fake tree: directory path → entries, or the errno its listing fails with. */
  function fakeFs(
    tree: Record<string, WalkEntry[] | string>,
  ): (path: string) => Promise<WalkEntry[]> {
    return (path) => {
      const node = tree[path];
      if (node === undefined) return Promise.reject(errno('ENOENT'));
      if (typeof node === 'string') return Promise.reject(errno(node));
      return Promise.resolve(node);
    };
  }

  it('finds indexes anywhere, skips dot names, lists symlinked indexes without entering them', async () => {
    const readdir = fakeFs({
      '/s': [
        dirent('.chunks', 'dir'),
        dirent('vm', 'dir'),
        dirent('stray.didx', 'file'),
        dirent('x.blob', 'file'),
      ],
      '/s/vm': [dirent('100', 'dir'), dirent('link.fidx', 'link'), dirent('linkdir', 'link')],
      '/s/vm/100': [
        dirent('.hidden.fidx', 'file'),
        dirent('a.fidx', 'file'),
        dirent('b.didx', 'dir'),
      ],
      '/s/vm/100/b.didx': [dirent('c.didx', 'file')],
    });
    const found = await listIndexFiles('/s', { readdir });
    expect([...found].sort()).toEqual([
      '/s/stray.didx',
      '/s/vm/100/a.fidx',
      '/s/vm/100/b.didx/c.didx',
      '/s/vm/link.fidx',
    ]);
  });

  it('EPERM/EACCES abort, except lost+found directly below the base', async () => {
    for (const code of ['EPERM', 'EACCES']) {
      const ok = fakeFs({
        '/s': [dirent('lost+found', 'dir'), dirent('a.didx', 'file')],
        '/s/lost+found': code,
      });
      expect([...(await listIndexFiles('/s', { readdir: ok }))]).toEqual(['/s/a.didx']);

      const deep = fakeFs({
        '/s': [dirent('vm', 'dir')],
        '/s/vm': [dirent('lost+found', 'dir')],
        '/s/vm/lost+found': code,
      });
      await expect(listIndexFiles('/s', { readdir: deep })).rejects.toMatchObject({
        code: 'PERMISSION_DENIED',
        message:
          'cannot continue garbage-collection safely, permission denied on: /s/vm/lost+found',
      });

      const group = fakeFs({
        '/s': [dirent('vm', 'dir')],
        '/s/vm': [dirent('100', 'dir')],
        '/s/vm/100': code,
      });
      await expect(listIndexFiles('/s', { readdir: group })).rejects.toMatchObject({
        code: 'PERMISSION_DENIED',
      });
    }
  });

  it('a vanished directory is skipped and logged; other errors abort', async () => {
    const lines: string[] = [];
    const gone = fakeFs({ '/s': [dirent('vm', 'dir'), dirent('a.didx', 'file')] });
    expect([...(await listIndexFiles('/s', { readdir: gone, log: (l) => lines.push(l) }))]).toEqual(
      ['/s/a.didx'],
    );
    expect(lines).toEqual(['ignoring vanished file: /s/vm']);

    const broken = fakeFs({ '/s': [dirent('vm', 'dir')], '/s/vm': 'EIO' });
    await expect(listIndexFiles('/s', { readdir: broken })).rejects.toMatchObject({
      code: 'IO_ERROR',
      message: 'unexpected error on datastore traversal: EIO - /s/vm',
    });
  });
});

// ---------------------------------------------------------------------------------------------
// All store tests share one store (creating the 65536 chunk directories is what takes time).
// The first test sees it empty; each later one builds and checks its own chunks.

describe('GC on a real store', () => {
  let fixture: StoreFixture;
  let clock: FakeClock;
  let seed = 1000;
  const fresh = (size = 64): TestChunk => makeChunk(bytesOf(seed++, size));
  let time = 1_700_000_000;
  const nextDir = (type: 'vm' | 'ct' | 'host', id: string) =>
    backupDir(backupGroup(ROOT_NAMESPACE, type, id), (time += 60));

  beforeAll(async () => {
    // The store's clock stamps writer start times (oldest writer): it stands at the real time
    // until a test moves it.
    clock = new FakeClock(nowSeconds());
    fixture = await makeStore({ clock });
  });
  afterAll(() => fixture.cleanup());

  it('removes old garbage, keeps what indexes reference, counts everything exactly', async () => {
    const store = fixture.store;
    const now = nowSeconds();
    // Uncompressed chunks: each file is 12 + data bytes.
    const A = makeChunk(bytesOf(1, 100)); // file 112, referenced twice (fidx and didx)
    const B = makeChunk(bytesOf(2, 200)); // file 212, referenced
    const C = makeChunk(bytesOf(3, 256)); // file 268, referenced
    const D = makeChunk(bytesOf(4, 400)); // file 412, unreferenced, 2 days old  -> removed
    const E = makeChunk(bytesOf(5, 500)); // file 512, unreferenced, 2 hours old -> pending
    const F = makeChunk(bytesOf(6, 600)); // file 612, unreferenced, fresh       -> in use
    const G = makeChunk(bytesOf(7, 150)); // referenced but missing: its .0.bad (50 bytes) survives
    const H = makeChunk(bytesOf(8, 10)); //  unreferenced: its .1.bad (70 bytes) is 2 hours old
    await insert(store, A, B, C, D, E, F);

    const vm = backupDir(backupGroup(ROOT_NAMESPACE, 'vm', '100'), 1_700_000_000);
    const ct = backupDir(backupGroup(ROOT_NAMESPACE, 'ct', '200'), 1_700_000_000);
    await writeSnapshot(store, vm, [
      {
        kind: 'blob',
        name: 'qemu-server.conf.blob',
        raw: encodeBlob(new TextEncoder().encode('memory: 512\n')),
      },
      { kind: 'didx', name: 'root.pxar.didx', chunks: [A, B, G], insert: false }, // 450 bytes
    ]);
    await writeSnapshot(store, ct, [
      { kind: 'fidx', name: 'drive-scsi0.img.fidx', chunks: [C, A], chunkSize: 256, insert: false }, // 356
    ]);

    writeFileSync(`${chunkPath(store, A)}.0.bad`, new Uint8Array(1000)); // A is fine now -> removed
    writeFileSync(`${chunkPath(store, G)}.0.bad`, new Uint8Array(50));
    writeFileSync(`${chunkPath(store, H)}.1.bad`, new Uint8Array(70));
    for (const c of [A, B, C, D]) setAtime(chunkPath(store, c), now - 2 * DAY);
    setAtime(chunkPath(store, E), now - 2 * HOUR);
    setAtime(`${chunkPath(store, A)}.0.bad`, now - 2 * DAY);
    setAtime(`${chunkPath(store, G)}.0.bad`, now - 2 * DAY);
    setAtime(`${chunkPath(store, H)}.1.bad`, now - 2 * HOUR);

    // Phase 1 "starts" a minute ago: everything touched or written since is in use.
    const run = await runGc(fixture, { clock: new FakeClock(now - 60) });
    expect(run.error).toBeUndefined();
    const expected: GcStatusData = {
      upid: run.upid,
      'index-file-count': 2,
      'index-data-bytes': 450 + 356,
      'disk-bytes': 112 + 212 + 268 + 612 + 50,
      'disk-chunks': 4,
      'removed-bytes': 412 + 1000,
      'removed-chunks': 1,
      'pending-bytes': 512 + 70,
      'pending-chunks': 1,
      'removed-bad': 1,
      'still-bad': 1,
      // Marked in group order ct/200 then vm/100: C, A (misses), then A (hit), B, G (misses).
      'cache-stats': { hits: 1, misses: 4 },
    };
    expect(run.status).toEqual(expected);
    expect(parseGcStatus(readFileSync(join(store.base, '.gc-status'), 'utf8'))).toEqual(expected);
    expect(store.gcStatus()).toEqual(expected);

    for (const c of [A, B, C, E, F]) expect(exists(chunkPath(store, c))).toBe(true);
    expect(exists(chunkPath(store, D))).toBe(false);
    expect(exists(`${chunkPath(store, A)}.0.bad`)).toBe(false);
    expect(exists(`${chunkPath(store, G)}.0.bad`)).toBe(true);
    expect(exists(`${chunkPath(store, H)}.1.bad`)).toBe(true);
    // Marking set the atime of the referenced chunks (and of G's bad copy) to now.
    for (const path of [
      chunkPath(store, A),
      chunkPath(store, B),
      chunkPath(store, C),
      `${chunkPath(store, G)}.0.bad`,
    ]) {
      expect(atimeOf(path)).toBeGreaterThanOrEqual(now - 5);
    }

    const didxPath = join(store.snapshotPath(vm), 'root.pxar.didx');
    const start = run.lines.indexOf('Start GC phase1 (mark used chunks)');
    expect(start).toBeGreaterThan(0);
    expect(run.lines).toContain('Access time update check disabled by datastore tuning options.');
    expect(run.lines).toContain(
      `Using access time cutoff 1d 5m, minimum access time is ${formatRfc3339Utc(now - 60 - 86_700)}`,
    );
    expect(run.lines.filter((l) => l.startsWith('marked '))).toEqual([
      'marked 50% (1 of 2 index files)',
      'marked 100% (2 of 2 index files)',
    ]);
    expect(run.lines).toContain(
      `WARN: warning: unable to access non-existent chunk ${digestToHex(G.digest)}, required by ${JSON.stringify(didxPath)}`,
    );
    expect(run.lines).toContain('Start GC phase2 (sweep unused chunks)');
    expect(run.lines.filter((l) => l.startsWith('processed ')).length).toBe(99);
    const summary = run.lines.slice(
      run.lines.indexOf('Chunk cache: hits 1, misses 4 (hit ratio 20.00%)'),
    );
    expect(summary.slice(0, 12)).toEqual([
      'Chunk cache: hits 1, misses 4 (hit ratio 20.00%)',
      'Removed garbage: 1.379 KiB', // 1412 / 1024 = 1.3789…
      'Removed chunks: 1',
      'Pending removals: 582 B (in 1 chunks)',
      'Removed bad chunks: 1',
      'Leftover bad chunks: 1',
      'Original data usage: 806 B',
      'On-Disk usage: 1.225 KiB (155.58%)', // 1254 bytes; 1254 * 100 / 806
      'On-Disk chunks: 4',
      'Deduplication factor: 0.64', // 806 / 1254
      'Average chunk size: 313 B', // floor(1254 / 4)
      'TASK WARNINGS: 1',
    ]);
  });

  it('removes temporary chunk files a killed writer left, once older than the cutoff', async () => {
    const store = fixture.store;
    const now = nowSeconds();
    const temp = (chunk: TestChunk, suffix: string, ageSeconds: number, size: number): string => {
      const path = `${chunkPath(store, chunk)}.tmp_${suffix}`;
      writeFileSync(path, new Uint8Array(size));
      utimesSync(path, now - ageSeconds, now - ageSeconds);
      return path;
    };
    const stale = temp(fresh(), 'a1B2c3', 2 * DAY, 1000);
    const young = temp(fresh(), 'd4E5f6', 2 * HOUR, 500); // inside the 24 h 5 min grace period
    const current = temp(fresh(), 'g7H8i9', 0, 300);
    // Not an insert's temp name (and no chunk name either): never touched.
    const other = join(dirname(stale), 'notachunk.tmp_zzzzzz');
    writeFileSync(other, 'x');
    utimesSync(other, now - 2 * DAY, now - 2 * DAY);

    const run = await runGc(fixture, { clock: new FakeClock(now - 60) });
    expect(run.error).toBeUndefined();
    expect(exists(stale)).toBe(false);
    expect(exists(young)).toBe(true);
    expect(exists(current)).toBe(true);
    expect(exists(other)).toBe(true);
    expect(run.lines).toContain('Removed stale temporary chunk files: 1 (1000 B)');
    const again = await runGc(fixture, { clock: new FakeClock(now - 60) });
    expect(again.lines.some((l) => l.startsWith('Removed stale temporary'))).toBe(false);
    for (const path of [young, current, other]) rmSync(path);
  });

  it('is safe while a backup is running: the oldest writer bounds the cutoff', async () => {
    const store = fixture.store;
    clock.set(nowSeconds());
    const start = clock.nowSeconds();
    const A = fresh();
    const B = fresh();
    const O = fresh(); // old, and re-used by the running backup
    const D = fresh(); // old and unreferenced
    await writeSnapshot(store, nextDir('vm', '300'), [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [A, B] },
    ]);
    await insert(store, O, D);
    for (const c of [A, B, O, D]) setAtime(chunkPath(store, c), start - 3 * DAY);

    // A backup starts: its writer takes the chunk store's shared lock at `start` (the store's
    // clock), then uploads chunks into its temp index, which GC does not read.
    const running = nextDir('vm', '300');
    const { guard } = await store.createLockedBackupDir(running);
    const writer = await store.createDynamicWriter(running, 'root.pxar.didx');
    const X = fresh();
    const Y = fresh();
    await insert(store, X, Y, O, A); // O and A exist: the insert only touches them
    let end = 0;
    for (const c of [X, Y, O, A]) await writer.append((end += c.data.byteLength), c.digest);
    // A temp file of an insert under way now stays; one left from before the writer started goes.
    const inFlight = `${chunkPath(store, fresh())}.tmp_Run123`;
    writeFileSync(inFlight, new Uint8Array(10));
    const leftOver = `${chunkPath(store, fresh())}.tmp_Old456`;
    writeFileSync(leftOver, new Uint8Array(20));
    utimesSync(leftOver, start - 3 * DAY, start - 3 * DAY);

    // GC runs with the clock ten days later. Alone, the cutoff would be start + 10 d - 24 h 5 min,
    // far after every atime in the store, and GC would delete everything it did not just touch
    // ... and everything it did touch, too, since those atimes are real (about `start`). But the
    // writer started at `start`, before that cutoff, so the cutoff becomes start - 5 min: every
    // chunk the running backup wrote or touched has an atime >= start and stays, every chunk the
    // finished snapshot references was touched by phase 1 (atime >= start) and stays, and only
    // chunks untouched since before the writer started (D) are older than the cutoff.
    clock.advance(10 * DAY);
    const run = await runGc(fixture, { clock });
    expect(run.error).toBeUndefined();
    expect(run.lines).toContain(
      `Oldest backup writer started at ${formatRfc3339Utc(start)}, extending minimum access time to ${formatRfc3339Utc(start - 300)}`,
    );
    for (const c of [A, B, O, X, Y])
      expect(exists(chunkPath(store, c)), digestToHex(c.digest)).toBe(true);
    expect(exists(chunkPath(store, D))).toBe(false);
    expect(run.status?.['removed-chunks']).toBeGreaterThanOrEqual(1);
    expect(exists(inFlight)).toBe(true);
    expect(exists(leftOver)).toBe(false);
    rmSync(inFlight);

    await writer.close();
    await guard.release();
    clock.set(nowSeconds());
  });

  it('is refused while another process holds the chunk store lock (a writer there)', async () => {
    const store = fixture.store;
    const D = fresh();
    await insert(store, D);
    setAtime(chunkPath(store, D), nowSeconds() - 3 * DAY);
    const child = await LockHolder.start();
    try {
      const id = await child.take('shared', join(store.base, '.lock'));
      const refused = await runGc(fixture, { clock: new FakeClock(nowSeconds()) });
      expect(isBurrowError(refused.error, 'LOCKED'), String(refused.error)).toBe(true);
      expect(refused.lines).not.toContain('Start GC phase1 (mark used chunks)');
      expect(exists(chunkPath(store, D))).toBe(true);

      await child.release(id);
      const run = await runGc(fixture, { clock: new FakeClock(nowSeconds()) });
      expect(run.error).toBeUndefined();
      expect(exists(chunkPath(store, D))).toBe(false);
    } finally {
      await child.stop();
    }
  });

  it('a GC started by another process is refused while this process has a writer', async () => {
    const store = fixture.store;
    const dir = nextDir('host', 'writer');
    const { guard: groupGuard } = await store.createLockedBackupGroup(
      dir.group,
      parseAuthid('root@pam'),
    );
    await groupGuard.release();
    const { guard } = await store.createLockedBackupDir(dir);
    const writer = await store.createDynamicWriter(dir, 'root.pxar.didx');
    try {
      const refused = await gcInChild(fixture);
      expect(refused.ok).toBe(false);
      expect(refused.code).toBe('LOCKED');
      expect(refused.message).toMatch(/another process holds a lock/);
    } finally {
      await writer.abort();
      await guard.release();
    }
    // That a child GC succeeds once nothing holds the lock is shown by the permission test below.
  });

  it('refuses a second GC of the same store in this process', async () => {
    let release!: () => void;
    const gate = new Promise<void>((done) => (release = done));
    // The first GC is held at its first listing of the hierarchy (after taking the lock).
    const store = fixture.store;
    const slowStore = new Proxy(store, {
      get(target, prop) {
        if (prop === 'listNamespaces') {
          return async (...args: Parameters<DataStore['listNamespaces']>) => {
            await gate;
            return target.listNamespaces(...args);
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function'
          ? (value as (...a: unknown[]) => unknown).bind(target)
          : value;
      },
    });
    const first = runGc(fixture, { clock: new FakeClock(nowSeconds()) }, undefined, slowStore);
    await delay(50);
    const second = await runGc(fixture, { clock: new FakeClock(nowSeconds()) });
    expect(isBurrowError(second.error, 'LOCKED')).toBe(true);
    expect((second.error as Error).message).toBe('Start GC failed - (already running/locked)');
    release();
    expect((await first).error).toBeUndefined();
  });

  it('a corrupt index aborts GC before anything is swept', async () => {
    const store = fixture.store;
    const A = fresh();
    const D = fresh();
    const dir = nextDir('vm', '400');
    await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [A] }]);
    await insert(store, D);
    setAtime(chunkPath(store, D), nowSeconds() - 3 * DAY);
    const indexPath = join(store.snapshotPath(dir), 'root.pxar.didx');
    const original = readFileSync(indexPath);
    const before = readFileSync(join(store.base, '.gc-status'), 'utf8');
    try {
      for (const damage of [
        (b: Buffer) => b.subarray(0, b.length - 7), // truncated mid-entry
        (b: Buffer) => Buffer.concat([Buffer.from('notindex'), b.subarray(8)]), // bad magic
      ]) {
        writeFileSync(indexPath, damage(original));
        const run = await runGc(fixture, { clock: new FakeClock(nowSeconds()) });
        expect(isBurrowError(run.error), String(run.error)).toBe(true);
        expect((run.error as Error).message).toContain(indexPath);
        expect(run.lines).toContain('Start GC phase1 (mark used chunks)');
        expect(run.lines).not.toContain('Start GC phase2 (sweep unused chunks)');
        expect(exists(chunkPath(store, D))).toBe(true);
        expect(readFileSync(join(store.base, '.gc-status'), 'utf8')).toBe(before);
      }
    } finally {
      writeFileSync(indexPath, original);
    }
  });

  it('marks indexes outside the expected scheme and reports them; hidden directories are not walked', async () => {
    const store = fixture.store;
    const K = fresh();
    const L = fresh();
    const dir = nextDir('vm', '500');
    await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [K] }]);
    const strayDir = join(store.base, 'stray');
    const hiddenDir = join(store.base, '.hidden');
    mkdirSync(strayDir);
    mkdirSync(hiddenDir);
    const source = readFileSync(join(store.snapshotPath(dir), 'root.pxar.didx'));
    writeFileSync(join(strayDir, 'copy.didx'), source);
    // The hidden copy references L only: as the walk never enters it, L goes.
    const other = nextDir('vm', '501');
    await writeSnapshot(store, other, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [L] }]);
    writeFileSync(
      join(hiddenDir, 'copy.didx'),
      readFileSync(join(store.snapshotPath(other), 'root.pxar.didx')),
    );
    await store.removeBackupGroup(other.group);
    await store.removeBackupGroup(dir.group); // K is now referenced only by the stray copy
    for (const c of [K, L]) setAtime(chunkPath(store, c), nowSeconds() - 3 * DAY);

    const run = await runGc(fixture, { clock: new FakeClock(nowSeconds()) });
    expect(run.error).toBeUndefined();
    expect(exists(chunkPath(store, K))).toBe(true);
    expect(exists(chunkPath(store, L))).toBe(false);
    expect(run.lines).toContain(
      `WARN: Marked chunks for unexpected index file at ${JSON.stringify(join(strayDir, 'copy.didx'))}`,
    );
    expect(run.lines).toContain('WARN: Found 1 index files outside of expected directory scheme');
  });

  it('lists a group again when its newest index vanished during marking', async () => {
    const store = fixture.store;
    const A = fresh();
    const dir = nextDir('ct', '600');
    await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [A] }]);
    setAtime(chunkPath(store, A), nowSeconds() - 3 * DAY);
    let calls = 0;
    const racing = new Proxy(store, {
      get(target, prop) {
        if (prop === 'listSnapshots') {
          return async (group: Parameters<DataStore['listSnapshots']>[0]) => {
            const list = await target.listSnapshots(group);
            if (group.type !== 'ct' || group.id !== '600') return list;
            calls += 1;
            if (calls > 1) return list;
            // The first listing names a newer snapshot that a prune removed before we read it.
            const ghost: SnapshotInfo = {
              dir: backupDir(group, dir.time + 1),
              path: join(target.groupPath(group), 'ghost'),
              finished: true,
              protected: false,
              files: ['index.json.blob', 'root.pxar.didx'],
            };
            return [...list, ghost];
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function'
          ? (value as (...a: unknown[]) => unknown).bind(target)
          : value;
      },
    });
    const run = await runGc(fixture, { clock: new FakeClock(nowSeconds()) }, undefined, racing);
    expect(run.error).toBeUndefined();
    expect(calls).toBe(2);
    expect(exists(chunkPath(store, A))).toBe(true);
    expect(atimeOf(chunkPath(store, A))).toBeGreaterThan(nowSeconds() - 60);
  });

  it('an abort stops the sweep where it is', async () => {
    const store = fixture.store;
    const low: TestChunk[] = [];
    const high: TestChunk[] = [];
    while (low.length < 5 || high.length < 5) {
      const c = fresh();
      if ((c.digest[0] ?? 0) < 0x80) {
        if (low.length < 5) low.push(c);
      } else if (high.length < 5) high.push(c);
    }
    await insert(store, ...low, ...high);
    for (const c of [...low, ...high]) setAtime(chunkPath(store, c), nowSeconds() - 3 * DAY);
    const before = readFileSync(join(store.base, '.gc-status'), 'utf8');
    // Abort as the sweep reaches prefix 8000 (50%): chunks below it were processed already.
    const run = await runGc(fixture, { clock: new FakeClock(nowSeconds()) }, (line, abort) => {
      if (line.startsWith('processed 50% ')) abort();
    });
    expect(isBurrowError(run.error, 'TASK_ABORTED'), String(run.error)).toBe(true);
    for (const c of low) expect(exists(chunkPath(store, c))).toBe(false);
    for (const c of high) expect(exists(chunkPath(store, c))).toBe(true);
    expect(readFileSync(join(store.base, '.gc-status'), 'utf8')).toBe(before);
  });

  it('refuses to run when datastore.cfg nests another store in this one', async () => {
    const store = fixture.store;
    const cfg = join(fixture.dirs.configDir, 'datastore.cfg');
    const original = readFileSync(cfg, 'utf8');
    try {
      await appendFile(cfg, `\ndatastore: inner\n\tpath ${join(store.base, 'inner')}\n`);
      const run = await runGc(fixture, { clock: new FakeClock(nowSeconds()) });
      expect(isBurrowError(run.error, 'DATASTORE_INVALID'), String(run.error)).toBe(true);
      expect((run.error as Error).message).toMatch(/^Aborting GC for safety reasons: /);
      expect(run.lines).not.toContain('Start GC phase1 (mark used chunks)');
    } finally {
      await writeFileAsync(cfg, original);
    }
  });

  // Permission errors must stop GC (it may never delete what it could not prove unused). Root
  // reads every directory whatever its mode, so as root the GC runs in a child process as the
  // unprivileged user `nobody`, on a store handed over to that user; otherwise it runs in a child
  // as the current user. Either way the kernel, not a mock, refuses the directory.
  it('a directory GC cannot read stops it before the sweep; lost+found below the base does not', async () => {
    const store = fixture.store;
    const D = fresh();
    const A = fresh();
    await writeSnapshot(store, nextDir('vm', '700'), [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [A] },
    ]);
    await insert(store, D);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) execFileSync('chown', ['-R', '65534:65534', fixture.root]);
    const groupDir = join(store.base, 'vm', '700');
    const lostFound = join(store.base, 'lost+found');
    mkdirSync(lostFound, { mode: 0o700 });
    if (asRoot) execFileSync('chown', ['65534:65534', lostFound]);
    try {
      setAtime(chunkPath(store, D), nowSeconds() - 3 * DAY);
      setAtime(chunkPath(store, A), nowSeconds() - 3 * DAY);
      chmodSync(groupDir, 0o000);
      const refused = await gcInChild(fixture, asRoot ? 65534 : undefined);
      expect(refused.ok).toBe(false);
      expect(refused.code).toBe('PERMISSION_DENIED');
      expect(refused.message).toBe(
        `cannot continue garbage-collection safely, permission denied on: ${groupDir}`,
      );
      expect(exists(chunkPath(store, D))).toBe(true);
      expect(exists(chunkPath(store, A))).toBe(true);

      chmodSync(groupDir, 0o755);
      chmodSync(lostFound, 0o000);
      const allowed = await gcInChild(fixture, asRoot ? 65534 : undefined);
      expect(allowed.ok, allowed.message).toBe(true);
      expect(exists(chunkPath(store, D))).toBe(false);
      expect(exists(chunkPath(store, A))).toBe(true);
    } finally {
      chmodSync(groupDir, 0o755);
      chmodSync(lostFound, 0o755);
      if (asRoot) execFileSync('chown', ['-R', '0:0', fixture.root]);
    }
  });

  it('with the atime safety check on (tuning changed), runs it first; cache capacity 0 disables the cache', async () => {
    await updateDatastoreConfig(fixture.dirs, ({ entries }) =>
      entries.map((e) =>
        e.name === fixture.store.name
          ? { ...e, props: { ...e.props, tuning: 'gc-cache-capacity=0' } }
          : e,
      ),
    );
    // lookup notices the changed section and opens the store again with the new tuning.
    const store = await DataStore.lookup(fixture.store.name, { dirs: fixture.dirs, clock });
    expect(store).not.toBe(fixture.store);
    expect(store.tuning.gcAtimeSafetyCheck).toBe(true);
    const A = fresh();
    await writeSnapshot(store, nextDir('vm', '800'), [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [A, A] },
    ]);
    // A short real pause stands in for PBS's second: enough for the coarse kernel clock to tick.
    const run = await runGc(
      fixture,
      { clock: new FakeClock(nowSeconds() - 60), sleep: () => delay(20) },
      undefined,
      store,
    );
    expect(run.error).toBeUndefined();
    expect(run.lines).toContain('Access time update check successful, proceeding with GC.');
    expect(run.lines).toContain('Using chunk digest cache capacity of 0.');
    // The 4 MiB zero chunk of the check stays: it was just touched.
    expect(
      exists(
        join(
          store.base,
          '.chunks',
          'bb9f',
          'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8',
        ),
      ),
    ).toBe(true);
    expect(run.status?.['cache-stats']).toEqual({ hits: 0, misses: 0 });
  });
});

// ---------------------------------------------------------------------------------------------

interface ChildResult {
  ok: boolean;
  code?: string;
  message?: string;
  status?: GcStatusData;
  lines: string[];
}

const CHILD = fileURLToPath(new URL('../../test/helpers/gc-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Run one GC of the fixture's store in a separate Node process (optionally as another user). */
function gcInChild(fixture: StoreFixture, uid?: number): Promise<ChildResult> {
  const input = JSON.stringify({
    base: fixture.store.base,
    dirs: fixture.dirs,
    nowSeconds: nowSeconds(),
  });
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, input], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(uid !== undefined ? { uid, gid: uid } : {}),
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as ChildResult);
      } catch {
        reject(new Error(`GC child gave no result: ${out} ${err}`));
      }
    });
  });
}
