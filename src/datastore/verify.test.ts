import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type StoreFixture,
  type TestChunk,
  bytesOf,
  exists,
  makeChunk,
  makeStore,
  writeSnapshot,
} from '../../test/helpers/store-fixture.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { FakeClock } from '../lib/clock.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { TaskManager } from '../tasks/index.js';
import type { TaskContext } from '../tasks/index.js';
import { encodeBlob } from '../format/data-blob.js';
import { MANIFEST_BLOB_NAME } from '../format/manifest.js';
import { parseUpid } from '../format/upid.js';
import {
  ROOT_NAMESPACE,
  type BackupDir,
  backupDir,
  backupGroup,
  formatSnapshot,
  parseNamespace,
} from '../types/backup.js';
import { INDEX_HEADER_SIZE } from '../format/magic.js';
import { digestToHex } from '../types/digest.js';
import { updateDatastoreConfig } from './datastore-config-store.js';
import { DataStore } from './datastore.js';
import {
  type VerifyOptions,
  VerifyWorker,
  verifyGroup,
  verifyNewSnapshot,
  verifyNewWorkerId,
  verifySnapshot,
  verifyStore,
} from './verify.js';

const DAY = 86_400;

interface Run<T> {
  result: T;
  upid: string;
  lines: string[];
}

let fixture: StoreFixture;
let store: DataStore;
let seed = 5000;
let time = 1_700_000_000;
const fresh = (size = 300, crypt?: CryptConfig): TestChunk =>
  makeChunk(bytesOf(seed++, size), { compress: true, ...(crypt ? { crypt } : {}) });
const nextDir = (type: 'vm' | 'ct' | 'host', id: string, ns = ROOT_NAMESPACE): BackupDir =>
  backupDir(backupGroup(ns, type, id), (time += 60));

/** Run `work` with a VerifyWorker inside a real task; returns its result and log lines. */
async function runVerify<T>(
  work: (w: VerifyWorker) => Promise<T>,
  opts: VerifyOptions = {},
  wrap?: (task: TaskContext) => TaskContext,
): Promise<Run<T>> {
  const manager = new TaskManager({ dirs: fixture.dirs, node: 'testnode' });
  const lines: string[] = [];
  const { upid, result } = await manager.run(
    'verify',
    store.name,
    'root@pam',
    (task) => work(new VerifyWorker(store, wrap ? wrap(task) : task, opts)),
    { onLine: (line) => lines.push(line) },
  );
  return { result, upid, lines };
}

/** Count chunk loads (by hex digest, in order) while `work` runs. */
async function countingLoads<T>(work: () => Promise<T>): Promise<{ result: T; loads: string[] }> {
  const chunkStore = store.chunkStore;
  const original = chunkStore.loadChunk.bind(chunkStore);
  const loads: string[] = [];
  chunkStore.loadChunk = (digest: Uint8Array) => {
    loads.push(digestToHex(digest));
    return original(digest);
  };
  try {
    return { result: await work(), loads };
  } finally {
    delete (chunkStore as { loadChunk?: unknown }).loadChunk;
  }
}

async function verifyState(dir: BackupDir): Promise<unknown> {
  return (await store.loadManifest(dir)).manifest.unprotected.verify_state;
}

const chunkPath = (c: TestChunk): string => store.chunkStore.chunkPath(c.digest);

beforeAll(async () => {
  fixture = await makeStore();
  store = fixture.store;
});
afterAll(() => fixture.cleanup());

describe('verifySnapshot', () => {
  it('a good snapshot verifies and gets verify_state ok with the task UPID', async () => {
    const dir = nextDir('vm', '100');
    const chunks = [fresh(), fresh(), fresh()];
    await writeSnapshot(store, dir, [
      {
        kind: 'blob',
        name: 'qemu-server.conf.blob',
        raw: encodeBlob(new TextEncoder().encode('cores: 2\n')),
      },
      { kind: 'didx', name: 'root.pxar.didx', chunks },
      {
        kind: 'fidx',
        name: 'drive-scsi0.img.fidx',
        chunks: [fresh(512), fresh(100)],
        chunkSize: 512,
      },
    ]);
    const run = await runVerify((w) => verifySnapshot(w, dir));
    expect(run.result).toBe(true);
    expect(await verifyState(dir)).toEqual({ state: 'ok', upid: run.upid });
    const label = `${store.name}:${formatSnapshot(dir)}`;
    expect(run.lines).toContain(`verify ${label}`);
    expect(run.lines).toContain('  check qemu-server.conf.blob');
    expect(run.lines).toContain('  check root.pxar.didx');
    expect(
      run.lines.filter((l) =>
        /^ {2}verified [\d.]+\/[\d.]+ MiB in [\d.]+ seconds, speed .* \(0 errors\)$/.test(l),
      ),
    ).toHaveLength(2);
  });

  it('a corrupt chunk fails every snapshot using it, is read once per task and renamed to .0.bad', async () => {
    const shared = fresh();
    const first = nextDir('ct', '200');
    const second = nextDir('ct', '200');
    await writeSnapshot(store, first, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh(), shared] },
    ]);
    await writeSnapshot(store, second, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [shared, fresh()] },
    ]);
    const bytes = readFileSync(chunkPath(shared));
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1); // payload damage: the CRC no longer matches
    writeFileSync(chunkPath(shared), bytes);
    const hex = digestToHex(shared.digest);

    const { result: run, loads } = await countingLoads(() =>
      runVerify((w) => verifyGroup(w, first.group)),
    );
    expect(run.result.map((d) => d.time).sort()).toEqual([first.time, second.time]);
    expect(loads.filter((l) => l === hex)).toHaveLength(1);
    expect(exists(chunkPath(shared))).toBe(false);
    expect(readFileSync(`${chunkPath(shared)}.0.bad`)).toEqual(bytes);
    expect(run.lines).toContain(
      `corrupted chunk renamed to ${JSON.stringify(`${chunkPath(shared)}.0.bad`)}`,
    );
    expect(
      run.lines.filter((l) => l.startsWith("can't verify chunk, load failed - ")),
    ).toHaveLength(1);
    // Newest first: the second snapshot met the chunk first; the first found it marked.
    expect(run.lines).toContain(`chunk ${hex} was marked as corrupt`);
    expect(run.lines.indexOf(`verify ${store.name}:${formatSnapshot(second)}`)).toBeLessThan(
      run.lines.indexOf(`verify ${store.name}:${formatSnapshot(first)}`),
    );
    expect(await verifyState(first)).toEqual({ state: 'failed', upid: run.upid });
    expect(await verifyState(second)).toEqual({ state: 'failed', upid: run.upid });
  });

  it('a chunk with a valid blob of other data (digest mismatch) is found and renamed', async () => {
    const good = fresh();
    const dir = nextDir('vm', '101');
    await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [good] }]);
    writeFileSync(chunkPath(good), encodeBlob(bytesOf(999_999, 300)));
    const run = await runVerify((w) => verifySnapshot(w, dir));
    expect(run.result).toBe(false);
    expect(
      run.lines.some((l) =>
        l.startsWith(`chunk ${digestToHex(good.digest)}: blob data has digest `),
      ),
    ).toBe(true);
    expect(exists(`${chunkPath(good)}.0.bad`)).toBe(true);
    expect(await verifyState(dir)).toMatchObject({ state: 'failed' });
  });

  it('a blob that does not match the manifest fails; its chunks are not touched', async () => {
    const dir = nextDir('vm', '102');
    const original = encodeBlob(new TextEncoder().encode('memory: 1024\n'), { compress: false });
    const chunk = fresh();
    await writeSnapshot(store, dir, [
      { kind: 'blob', name: 'qemu-server.conf.blob', raw: original },
      { kind: 'didx', name: 'root.pxar.didx', chunks: [chunk] },
    ]);
    // Same length, valid CRC, other content.
    await store.writeBlob(
      dir,
      'qemu-server.conf.blob',
      encodeBlob(new TextEncoder().encode('memory: 2048\n'), { compress: false }),
    );
    const run = await runVerify((w) => verifySnapshot(w, dir));
    expect(run.result).toBe(false);
    expect(run.lines).toContain(
      `verify ${store.name}:${formatSnapshot(dir)}/qemu-server.conf.blob failed: wrong index checksum`,
    );
    expect(exists(chunkPath(chunk))).toBe(true);

    await store.writeBlob(
      dir,
      'qemu-server.conf.blob',
      encodeBlob(new TextEncoder().encode('memory: 20480\n'), { compress: false }),
    );
    const sized = await runVerify((w) => verifySnapshot(w, dir), { ignoreVerified: false });
    expect(sized.result).toBe(false);
    expect(sized.lines).toContain(
      `verify ${store.name}:${formatSnapshot(dir)}/qemu-server.conf.blob failed: wrong size (${original.byteLength} != ${original.byteLength + 1})`,
    );
  });

  it('encrypted chunks are checked by CRC only', async () => {
    const crypt = new CryptConfig(randomBytes(32));
    const a = fresh(300, crypt);
    const b = fresh(300, crypt);
    const dir = nextDir('vm', '103');
    await writeSnapshot(store, dir, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [a, b], cryptMode: 'encrypt' },
    ]);
    // Tamper with a's ciphertext but give it a matching CRC: without the key this cannot be seen.
    const tampered = readFileSync(chunkPath(a));
    tampered.writeUInt8(tampered.readUInt8(tampered.length - 1) ^ 0x01, tampered.length - 1);
    tampered.writeUInt32LE(crc32(tampered.subarray(44)), 8);
    writeFileSync(chunkPath(a), tampered);
    const ok = await runVerify((w) => verifySnapshot(w, dir), { ignoreVerified: false });
    expect(ok.result).toBe(true);

    // A CRC mismatch is seen, and the chunk retired.
    const broken = readFileSync(chunkPath(b));
    broken.writeUInt8(broken.readUInt8(60) ^ 0x01, 60);
    writeFileSync(chunkPath(b), broken);
    const failed = await runVerify((w) => verifySnapshot(w, dir), { ignoreVerified: false });
    expect(failed.result).toBe(false);
    expect(exists(`${chunkPath(b)}.0.bad`)).toBe(true);
  });

  it('a chunk of the wrong crypt mode is an error but is not renamed', async () => {
    const plain = fresh();
    const dir = nextDir('vm', '104');
    await writeSnapshot(store, dir, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [plain], cryptMode: 'encrypt' },
    ]);
    const run = await runVerify((w) => verifySnapshot(w, dir));
    expect(run.result).toBe(false);
    expect(run.lines).toContain('chunk CryptMode none does not match index CryptMode encrypt');
    expect(exists(chunkPath(plain))).toBe(true);
  });

  it('reads chunks in inode order (tuning chunk-order, default inode)', async () => {
    expect(store.tuning.chunkOrder).toBe('inode');
    const chunks = Array.from({ length: 12 }, () => fresh(100));
    const dir = nextDir('vm', '105');
    await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks }]);
    const { loads } = await countingLoads(() => runVerify((w) => verifySnapshot(w, dir)));
    const byInode = [...chunks]
      .sort((x, y) => statSync(chunkPath(x)).ino - statSync(chunkPath(y)).ino)
      .map((c) => digestToHex(c.digest));
    expect(loads).toEqual(byInode);
  });

  it('skips recently verified snapshots (ignore-verified, outdated-after)', async () => {
    const dir = nextDir('vm', '106');
    await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] }]);
    const first = await runVerify((w) => verifySnapshot(w, dir));
    expect(first.result).toBe(true);
    const label = `${store.name}:${formatSnapshot(dir)}`;

    // Default: verified once, never again.
    const again = await countingLoads(() => runVerify((w) => verifySnapshot(w, dir)));
    expect(again.result.lines).toContain(`SKIPPED: verify ${label} (recently verified)`);
    expect(again.loads).toEqual([]);
    expect(await verifyState(dir)).toEqual({ state: 'ok', upid: first.upid });

    // outdated-after 1 day: skipped now, verified again three days later.
    const start = parseUpid(first.upid).startTime;
    const soon = await runVerify((w) => verifySnapshot(w, dir), {
      outdatedAfterDays: 1,
      clock: new FakeClock(start + 3600),
    });
    expect(soon.lines).toContain(`SKIPPED: verify ${label} (recently verified)`);
    const later = await runVerify((w) => verifySnapshot(w, dir), {
      outdatedAfterDays: 1,
      clock: new FakeClock(start + 3 * DAY),
    });
    expect(later.lines).toContain(`verify ${label}`);
    expect(await verifyState(dir)).toEqual({ state: 'ok', upid: later.upid });

    // ignore-verified off: always.
    const all = await runVerify((w) => verifySnapshot(w, dir), { ignoreVerified: false });
    expect(all.lines).toContain(`verify ${label}`);
  });

  it('skips a snapshot locked by someone else, fails one without a readable manifest', async () => {
    const locked = nextDir('vm', '107');
    await writeSnapshot(store, locked, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] },
    ]);
    const guard = await store.lockSnapshot(locked, true);
    try {
      const run = await runVerify((w) => verifySnapshot(w, locked));
      expect(run.result).toBe(true);
      expect(
        run.lines.some((l) =>
          l.startsWith(
            `SKIPPED: verify ${store.name}:${formatSnapshot(locked)} - could not acquire snapshot lock: `,
          ),
        ),
      ).toBe(true);
      expect(await verifyState(locked)).toBeUndefined();
    } finally {
      await guard.release();
    }

    const broken = nextDir('vm', '108');
    await writeSnapshot(store, broken, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] },
    ]);
    writeFileSync(store.archivePath(broken, MANIFEST_BLOB_NAME), 'not a blob');
    const run = await runVerify((w) => verifySnapshot(w, broken));
    expect(run.result).toBe(false);
    expect(
      run.lines.some((l) =>
        l.startsWith(`verify ${store.name}:${formatSnapshot(broken)} - manifest load error: `),
      ),
    ).toBe(true);

    const gone = await runVerify((w) => verifySnapshot(w, nextDir('vm', '108')));
    expect(gone.result).toBe(true);
    expect(gone.lines.some((l) => l.endsWith('snapshot does not exist (anymore).'))).toBe(true);
  });

  it('an abort is thrown, not reported as a failed snapshot', async () => {
    const dir = nextDir('vm', '109');
    await writeSnapshot(store, dir, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh(), fresh()] },
    ]);
    const withAbort = (task: TaskContext): TaskContext => ({
      ...task,
      checkAbort: () => {
        throw new BurrowError('TASK_ABORTED', 'abort requested - aborting task');
      },
    });
    await expect(runVerify((w) => verifySnapshot(w, dir), {}, withAbort)).rejects.toSatisfy(
      (e: unknown) => isBurrowError(e, 'TASK_ABORTED'),
    );
    expect(await verifyState(dir)).toBeUndefined();
  });
});

describe('verifyStore', () => {
  it('walks namespaces to max-depth, sorts groups, skips host/benchmark, returns the failures', async () => {
    const a = parseNamespace('team');
    const b = parseNamespace('team/sub');
    await store.createNamespace(a);
    await store.createNamespace(b);
    const good = nextDir('vm', '10', a);
    const bad = nextDir('ct', '20', a);
    const deep = nextDir('vm', '30', b);
    const bench = nextDir('host', 'benchmark', a);
    await writeSnapshot(store, good, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] }]);
    const badChunk = fresh();
    await writeSnapshot(store, bad, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [badChunk] }]);
    await writeSnapshot(store, deep, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] }]);
    await writeSnapshot(store, bench, [
      { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] },
    ]);
    writeFileSync(chunkPath(badChunk), 'garbage');

    const shallow = await runVerify((w) => verifyStore(w, { ns: a, maxDepth: 0 }));
    expect(shallow.result).toEqual([bad]);
    expect(shallow.lines).toContain('found 2 groups');
    // ct sorts before vm.
    expect(shallow.lines.filter((l) => l.startsWith('verify group '))).toEqual([
      `verify group ${store.name}:ns/team/ct/20 (1 snapshots)`,
      `verify group ${store.name}:ns/team/vm/10 (1 snapshots)`,
    ]);
    expect(shallow.lines.some((l) => l.includes('benchmark'))).toBe(false);
    expect(shallow.lines).toContain(
      'percentage done: 100.00% (1/2 groups, 1/1 snapshots in group #2)',
    );
    expect(await verifyState(deep)).toBeUndefined();

    const full = await runVerify((w) => verifyStore(w, { ns: a }), { ignoreVerified: false });
    expect(full.result).toEqual([bad]);
    expect(full.lines).toContain('found 3 groups');
    expect(await verifyState(deep)).toMatchObject({ state: 'ok' });
    expect(await verifyState(bench)).toBeUndefined();
  });
});

describe('damaged indexes', () => {
  it('a truncated and a corrupt index fail only their snapshots, naming the files', async () => {
    const truncated = nextDir('vm', '300');
    const flipped = nextDir('vm', '300');
    const good = nextDir('vm', '300');
    const chunks = [fresh(), fresh(), fresh()];
    for (const dir of [truncated, flipped, good]) {
      await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks }]);
    }
    const truncatedPath = store.archivePath(truncated, 'root.pxar.didx');
    const whole = readFileSync(truncatedPath);
    // Half an entry short: no whole number of 40-byte entries after the header.
    writeFileSync(truncatedPath, whole.subarray(0, whole.length - 20));
    const flippedPath = store.archivePath(flipped, 'root.pxar.didx');
    const body = readFileSync(flippedPath);
    // A byte of the second entry's digest: the file still parses, its csum no longer matches.
    const at = INDEX_HEADER_SIZE + 40 + 8 + 3;
    body.writeUInt8(body.readUInt8(at) ^ 0x20, at);
    writeFileSync(flippedPath, body);

    const { result: run, loads } = await countingLoads(() =>
      runVerify((w) => verifyGroup(w, good.group)),
    );
    expect(run.result).toEqual([flipped, truncated]);
    const failed = (dir: BackupDir): string[] =>
      run.lines.filter((l) =>
        l.startsWith(`verify ${store.name}:${formatSnapshot(dir)}/root.pxar.didx failed: `),
      );
    const truncatedLines = failed(truncated);
    expect(truncatedLines).toHaveLength(1);
    expect(truncatedLines[0]).toContain(
      `${truncatedPath}: dynamic index is ${whole.length - 20} bytes`,
    );
    expect(failed(flipped)).toEqual([
      `verify ${store.name}:${formatSnapshot(flipped)}/root.pxar.didx failed: wrong index checksum`,
    ]);
    expect(failed(good)).toEqual([]);
    expect(await verifyState(good)).toEqual({ state: 'ok', upid: run.upid });
    expect(await verifyState(flipped)).toEqual({ state: 'failed', upid: run.upid });
    expect(await verifyState(truncated)).toEqual({ state: 'failed', upid: run.upid });
    // The good snapshot's chunks were read once; the broken indexes led to no chunk reads and
    // no renames (the damage is in the index, not in the chunks).
    expect([...loads].sort()).toEqual(chunks.map((c) => digestToHex(c.digest)).sort());
    for (const c of chunks) expect(exists(chunkPath(c))).toBe(true);
  });
});

describe('verifyNewSnapshot (verify-new)', () => {
  const setVerifyNew = (value: boolean | undefined): Promise<unknown> =>
    updateDatastoreConfig(fixture.dirs, ({ entries }) =>
      entries.map((e) => {
        if (e.name !== store.name) return e;
        const { 'verify-new': _old, ...props } = e.props;
        return {
          name: e.name,
          props: value === undefined ? props : { ...props, 'verify-new': value },
        };
      }),
    );

  it('does nothing without verify-new: no task, no verify state', async () => {
    const manager = new TaskManager({ dirs: fixture.dirs, node: 'testnode' });
    const dir = nextDir('vm', '400');
    await writeSnapshot(store, dir, [{ kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] }]);
    expect(store.config?.['verify-new']).toBeUndefined();
    const before = (await manager.list()).length;
    expect(await verifyNewSnapshot(store, dir, manager, 'root@pam')).toBeUndefined();
    expect((await manager.list()).length).toBe(before);
    expect(await verifyState(dir)).toBeUndefined();

    await setVerifyNew(false);
    try {
      const off = await DataStore.lookup(store.name, { dirs: fixture.dirs });
      expect(off.config?.['verify-new']).toBe(false);
      expect(await verifyNewSnapshot(off, dir, manager, 'root@pam')).toBeUndefined();
      expect((await manager.list()).length).toBe(before);
    } finally {
      await setVerifyNew(undefined);
    }
  });

  it('with verify-new, verifies exactly the new snapshot in a verify task', async () => {
    await setVerifyNew(true);
    try {
      const verifying = await DataStore.lookup(store.name, { dirs: fixture.dirs });
      expect(verifying.config?.['verify-new']).toBe(true);
      const manager = new TaskManager({ dirs: fixture.dirs, node: 'testnode' });

      const older = nextDir('ct', '401');
      const dir = nextDir('ct', '401');
      await writeSnapshot(store, older, [
        { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] },
      ]);
      await writeSnapshot(store, dir, [
        { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh(), fresh()] },
      ]);
      // An earlier verify state does not make the new verify skip it.
      await store.updateManifest(dir, (m) => {
        m.unprotected.verify_state = { state: 'failed', upid: 'x' };
      });
      const lines: string[] = [];
      const result = await verifyNewSnapshot(verifying, dir, manager, 'backup@pbs', {
        onLine: (l) => lines.push(l),
      });
      expect(result?.ok).toBe(true);
      const upid = result?.upid ?? '';
      const fields = parseUpid(upid);
      expect(fields.workerType).toBe('verify');
      const hexTime = dir.time.toString(16).toUpperCase().padStart(8, '0');
      expect(verifyNewWorkerId(verifying, dir)).toBe(`${store.name}:ct/401/${hexTime}`);
      expect(fields.workerId).toBe(`${store.name}:ct/401/${hexTime}`);
      // The task layer escapes it in the UPID text (pbs-formats §11.1).
      expect(upid).toContain(`:verify:${store.name}\\x3act-401-${hexTime}:backup@pbs:`);
      expect(fields.authId).toBe('backup@pbs');
      expect((await manager.status(upid)).state).toBe('ok');
      expect(lines[0]).toBe('Automatically verifying newly added snapshot');
      expect(lines).toContain(`verify ${store.name}:${formatSnapshot(dir)}`);
      expect(lines.filter((l) => l.startsWith('verify '))).toHaveLength(1);
      expect(await verifyState(dir)).toEqual({ state: 'ok', upid });
      expect(await verifyState(older)).toBeUndefined();
      // The shared lock is released when the task ends.
      const guard = await store.lockSnapshot(dir, true);
      await guard.release();
    } finally {
      await setVerifyNew(undefined);
    }
  });

  it('with verify-new, a corrupt chunk gives ok false, a failed task and a .0.bad chunk', async () => {
    await setVerifyNew(true);
    try {
      const verifying = await DataStore.lookup(store.name, { dirs: fixture.dirs });
      const manager = new TaskManager({ dirs: fixture.dirs, node: 'testnode' });
      const bad = fresh();
      const dir = nextDir('vm', '402');
      await writeSnapshot(store, dir, [
        { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh(), bad] },
      ]);
      const bytes = readFileSync(chunkPath(bad));
      bytes.writeUInt8(bytes.readUInt8(20) ^ 0x01, 20);
      writeFileSync(chunkPath(bad), bytes);

      const result = await verifyNewSnapshot(verifying, dir, manager, 'root@pam');
      expect(result?.ok).toBe(false);
      const upid = result?.upid ?? '';
      expect(await manager.status(upid)).toMatchObject({
        state: 'error',
        status: 'verification failed - please check the log for details',
      });
      expect(exists(chunkPath(bad))).toBe(false);
      expect(readFileSync(`${chunkPath(bad)}.0.bad`)).toEqual(bytes);
      expect(await verifyState(dir)).toEqual({ state: 'failed', upid });
      const log = await manager.readLog(upid);
      expect(
        log.some((l) =>
          l.endsWith(`corrupted chunk renamed to ${JSON.stringify(`${chunkPath(bad)}.0.bad`)}`),
        ),
      ).toBe(true);
    } finally {
      await setVerifyNew(undefined);
    }
  });

  it('with verify-new, a snapshot locked by someone else or gone is an error and starts no task', async () => {
    await setVerifyNew(true);
    try {
      const verifying = await DataStore.lookup(store.name, { dirs: fixture.dirs });
      const manager = new TaskManager({ dirs: fixture.dirs, node: 'testnode' });
      const dir = nextDir('vm', '403');
      await writeSnapshot(store, dir, [
        { kind: 'didx', name: 'root.pxar.didx', chunks: [fresh()] },
      ]);
      const before = (await manager.list()).length;
      const guard = await store.lockSnapshot(dir, true);
      try {
        await expect(verifyNewSnapshot(verifying, dir, manager, 'root@pam')).rejects.toSatisfy(
          (e: unknown) => isBurrowError(e, 'LOCKED'),
        );
      } finally {
        await guard.release();
      }
      await expect(
        verifyNewSnapshot(verifying, nextDir('vm', '403'), manager, 'root@pam'),
      ).rejects.toSatisfy((e: unknown) => isBurrowError(e, 'NOT_FOUND'));
      expect((await manager.list()).length).toBe(before);
      expect(await verifyState(dir)).toBeUndefined();
    } finally {
      await setVerifyNew(undefined);
    }
  });
});
