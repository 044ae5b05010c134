/**
 * Datastore speed next to the raw filesystem figures of this machine, measured in the same run on
 * the same files (`npm run bench:datastore`).
 *
 * - chunk insert: 100,000 new 4 KiB chunks, then 20,000 of them again (duplicates: a stat and a
 *   touch each), 4 inserts in flight as a backup session has; raw: write temp file + rename (new)
 *   and lstat + utimensat (duplicate) on 20,000 files of the same size, same concurrency.
 * - GC: 50 snapshots, each a `.didx` of 4,000 chunks (consecutive snapshots share half of them, so
 *   every chunk is referenced twice: 200,000 index entries, 100,000 chunks). Mark and sweep are
 *   timed from the task log; raw: utimensat on the 100,000 chunk files (mark) and readdir of the
 *   65536 prefix directories plus lstat of every chunk file (sweep).
 * - verify: the whole store (100,000 small chunks); one snapshot each with read ahead 0, 4, 16;
 *   then 32 chunks of 4 MiB with read ahead 0 and 16; raw: read + SHA-256 of the same files.
 *
 * Ratios are ours / raw in time (1.00 = as fast as the bare syscalls; the goal for GC is ≤ 2).
 * BENCH_DIR=<dir> puts the store elsewhere (default: the OS temp dir, i.e. the real disk).
 */
import { createCipheriv, createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, readdirSync, utimesSync } from 'node:fs';
import { lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { systemClock } from '../src/lib/clock.js';
import type { BurrowDirs } from '../src/lib/dirs.js';
import { nativeAvailable, touchAtime } from '../src/lib/native-fs.js';
import { computeChunkDigest, encodeBlob } from '../src/format/data-blob.js';
import { formatUpid } from '../src/format/upid.js';
import { DataStore } from '../src/datastore/datastore.js';
import { garbageCollection } from '../src/datastore/gc.js';
import { VerifyWorker, verifyGroup, verifySnapshot, verifyStore } from '../src/datastore/verify.js';
import type { TaskContext } from '../src/tasks/index.js';
import { ROOT_NAMESPACE, backupDir, backupGroup } from '../src/types/backup.js';
import { digestToHex } from '../src/types/digest.js';
import { type TestChunk, writeSnapshot } from '../test/helpers/store-fixture.js';

const CHUNKS = Number(process.env.BENCH_CHUNKS ?? 100_000);
const CHUNK_SIZE = 4096;
const SNAPSHOTS = 50;
const BIG_CHUNKS = 32;
const BIG_CHUNK_SIZE = 4 * 1024 * 1024;
const IN_FLIGHT = 4;
const MB = 1e6;

const results: Array<[string, string]> = [];
const report = (name: string, value: string): void => {
  results.push([name, value]);
  console.log(`${name.padEnd(58)} ${value}`);
};
const rate = (count: number, ms: number): string =>
  `${Math.round((count * 1000) / ms).toLocaleString('en-US')}/s`;
const mbps = (bytes: number, ms: number): string =>
  `${(((bytes / MB) * 1000) / ms).toFixed(1)} MB/s`;
const ratio = (ours: number, raw: number): string => `${(ours / raw).toFixed(2)}x raw time`;

/** `count` chunks of random bytes from AES-CTR (seeded by `batch`): fast and deterministic. */
function makeChunks(batch: number, count: number, size: number): TestChunk[] {
  const key = createHash('sha256').update(`datastore bench ${batch}`).digest();
  const stream = createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(
    Buffer.alloc(count * size),
  );
  const out: TestChunk[] = [];
  for (let i = 0; i < count; i++) {
    const data = new Uint8Array(stream.buffer, stream.byteOffset + i * size, size);
    out.push({
      data,
      digest: computeChunkDigest(data),
      blob: encodeBlob(data, { compress: false }),
    });
  }
  return out;
}

/** Run `work` over `items` with `inFlight` calls at a time. */
async function pool<T>(
  items: readonly T[],
  inFlight: number,
  work: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) await work(items[i] as T);
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
}

function benchTask(lines: Array<{ t: number; line: string }>): TaskContext {
  const upid = formatUpid({
    node: 'bench',
    pid: process.pid,
    pstart: 0,
    taskId: 0n,
    startTime: systemClock.nowSeconds(),
    workerType: 'bench',
    authId: 'root@pam',
  });
  return {
    upid,
    log: (line) => lines.push({ t: performance.now(), line }),
    warn: (line) => lines.push({ t: performance.now(), line: `WARN: ${line}` }),
    checkAbort: () => {},
    signal: new AbortController().signal,
  };
}

async function main(): Promise<void> {
  const parent = process.env.BENCH_DIR ?? tmpdir();
  const root = mkdtempSync(join(parent, 'burrow-bench-'));
  const dirs: BurrowDirs = {
    configDir: join(root, 'config'),
    runDir: join(root, 'run'),
    logDir: join(root, 'log'),
  };
  await mkdir(dirs.configDir, { recursive: true });
  console.log(
    `datastore benchmark in ${root} (native helper: ${nativeAvailable() ? 'yes' : 'no, fallbacks'})`,
  );
  try {
    let t = performance.now();
    const store = await DataStore.create('bench', join(root, 'store'), {
      dirs,
      tuning: 'gc-atime-safety-check=false,sync-level=none',
    });
    report('create store (65536 prefix dirs)', `${(performance.now() - t).toFixed(0)} ms`);

    // ---- chunk insert -------------------------------------------------------------------------
    // All chunks are inserted (the GC and verify parts need them); duplicates and the raw loops
    // run on a subset and are scaled, to keep the run short.
    const BATCH = 10_000;
    const SUBSET = Math.min(20_000, CHUNKS);
    const digests: Uint8Array[] = [];
    let insertMs = 0;
    let dupMs = 0;
    let dupCount = 0;
    for (let b = 0; b * BATCH < CHUNKS; b++) {
      const chunks = makeChunks(b, Math.min(BATCH, CHUNKS - b * BATCH), CHUNK_SIZE);
      t = performance.now();
      await pool(chunks, IN_FLIGHT, (c) => store.insertChunk(c.blob, c.digest));
      insertMs += performance.now() - t;
      if (dupCount < SUBSET) {
        t = performance.now();
        await pool(chunks, IN_FLIGHT, (c) => store.insertChunk(c.blob, c.digest));
        dupMs += performance.now() - t;
        dupCount += chunks.length;
      }
      for (const c of chunks) digests.push(c.digest);
    }
    const encoded = CHUNK_SIZE + 12;
    // Raw: the syscalls of an insert (new: write a temp file, rename; duplicate: lstat, touch).
    const rawDir = join(root, 'raw');
    await mkdir(rawDir);
    const rawChunks = makeChunks(9999, SUBSET, CHUNK_SIZE);
    t = performance.now();
    await pool(rawChunks, IN_FLIGHT, async (c) => {
      const name = join(rawDir, digestToHex(c.digest));
      await writeFile(`${name}.tmp_x`, c.blob);
      await rename(`${name}.tmp_x`, name);
    });
    const rawNewMs = performance.now() - t;
    t = performance.now();
    await pool(rawChunks, IN_FLIGHT, async (c) => {
      const name = join(rawDir, digestToHex(c.digest));
      await lstat(name);
      touchAtime(name);
    });
    const rawDupMs = performance.now() - t;
    report(
      `insert ${CHUNKS} new 4 KiB chunks (${IN_FLIGHT} in flight)`,
      `${rate(CHUNKS, insertMs)}  ${mbps(CHUNKS * encoded, insertMs)}`,
    );
    report(
      '  raw write+rename, same size and concurrency',
      `${rate(SUBSET, rawNewMs)}  -> ${ratio(insertMs / CHUNKS, rawNewMs / SUBSET)}`,
    );
    report(`insert ${dupCount} of them again (duplicates)`, rate(dupCount, dupMs));
    report(
      '  raw lstat+utimensat',
      `${rate(SUBSET, rawDupMs)}  -> ${ratio(dupMs / dupCount, rawDupMs / SUBSET)}`,
    );
    await rm(rawDir, { recursive: true, force: true });

    // ---- snapshots ------------------------------------------------------------------------------
    const perSnapshot = Math.min(CHUNKS, (2 * CHUNKS) / SNAPSHOTS);
    const step = CHUNKS / SNAPSHOTS;
    const fake = (digest: Uint8Array): TestChunk => ({
      data: new Uint8Array(CHUNK_SIZE),
      digest,
      blob: new Uint8Array(0),
    });
    t = performance.now();
    for (let s = 0; s < SNAPSHOTS; s++) {
      const list: TestChunk[] = [];
      for (let i = 0; i < perSnapshot; i++)
        list.push(fake(digests[(s * step + i) % CHUNKS] as Uint8Array));
      await writeSnapshot(
        store,
        backupDir(backupGroup(ROOT_NAMESPACE, 'host', `h${s % 5}`), 1_700_000_000 + s * 3600),
        [{ kind: 'didx', name: 'root.pxar.didx', chunks: list, insert: false }],
      );
    }
    report(
      `write ${SNAPSHOTS} snapshots x ${perSnapshot} index entries`,
      `${(performance.now() - t).toFixed(0)} ms`,
    );

    // ---- GC ---------------------------------------------------------------------------------------
    const paths = digests.map((d) => store.chunkStore.chunkPath(d));
    const chunkDir = join(store.base, '.chunks');
    // Two rounds, GC and the raw loops alternating, best time of each: the machine may be shared.
    let gcMs = Infinity;
    let markMs = Infinity;
    let sweepMs = Infinity;
    let rawTouchMs = Infinity;
    let rawLstatMs = Infinity;
    let rawAsyncLstatMs = Infinity;
    let rawSweepMs = Infinity;
    let seen = 0;
    // Every timed touch must really move an atime: a filesystem like ext4 dirties (journals) an
    // inode whose atime changes, and a second touch in the same second is cheaper. So before the
    // GC and before the raw loop the chunks' atimes are set back two days (untimed).
    const ageAtimes = (): void => {
      const old = Date.now() / 1000 - 2 * 86400;
      for (const p of paths) utimesSync(p, old, old);
    };
    for (let round = 0; round < 2; round++) {
      const lines: Array<{ t: number; line: string }> = [];
      ageAtimes();
      const gcStart = performance.now();
      const status = await garbageCollection(store, benchTask(lines), {});
      const gcEnd = performance.now();
      if (status['disk-chunks'] !== CHUNKS || status['removed-chunks'] !== 0) {
        throw new Error(`unexpected GC result: ${JSON.stringify(status)}`);
      }
      const at = (text: string): number => lines.find((l) => l.line === text)?.t ?? Number.NaN;
      const phase2 = at('Start GC phase2 (sweep unused chunks)');
      gcMs = Math.min(gcMs, gcEnd - gcStart);
      markMs = Math.min(markMs, phase2 - at('Start GC phase1 (mark used chunks)'));
      sweepMs = Math.min(sweepMs, gcEnd - phase2);

      ageAtimes();
      t = performance.now();
      for (const p of paths) touchAtime(p);
      rawTouchMs = Math.min(rawTouchMs, performance.now() - t);
      t = performance.now();
      for (const p of paths) lstatSync(p);
      rawLstatMs = Math.min(rawLstatMs, performance.now() - t);
      t = performance.now();
      await pool(paths, 1, (p) => lstat(p, { bigint: true }));
      rawAsyncLstatMs = Math.min(rawAsyncLstatMs, performance.now() - t);
      t = performance.now();
      seen = 0;
      for (let i = 0; i < 0x10000; i++) {
        const dir = join(chunkDir, i.toString(16).padStart(4, '0'));
        for (const name of readdirSync(dir)) {
          lstatSync(join(dir, name));
          seen++;
        }
      }
      rawSweepMs = Math.min(rawSweepMs, performance.now() - t);
    }

    const entries = SNAPSHOTS * perSnapshot;
    report(
      `GC total (${SNAPSHOTS} snapshots, ${CHUNKS} chunks)`,
      `${gcMs.toFixed(0)} ms (best of 2)`,
    );
    report(
      `GC mark: ${CHUNKS} chunks, ${entries} index entries`,
      `${rate(CHUNKS, markMs)} chunks, ${rate(entries, markMs)} entries`,
    );
    report(
      '  raw utimensat on the same chunk files',
      `${rate(CHUNKS, rawTouchMs)}  -> ${ratio(markMs, rawTouchMs)}`,
    );
    report(`GC sweep: ${CHUNKS} chunks in 65536 prefix dirs`, rate(CHUNKS, sweepMs));
    report(
      '  raw readdir of all prefix dirs + lstat each file',
      `${rate(seen, rawSweepMs)}  -> ${ratio(sweepMs, rawSweepMs)}`,
    );
    report(
      '  raw lstat alone (sync / async, one at a time)',
      `${rate(CHUNKS, rawLstatMs)} / ${rate(CHUNKS, rawAsyncLstatMs)}`,
    );

    // ---- verify ---------------------------------------------------------------------------------
    const timed = async (
      readAhead: number,
      work: (w: VerifyWorker) => Promise<unknown[]>,
    ): Promise<{ ms: number; bytes: number; chunks: number }> => {
      const worker = new VerifyWorker(store, benchTask([]), { ignoreVerified: false, readAhead });
      const start = performance.now();
      const failed = await work(worker);
      if (failed.length > 0) throw new Error(`verify failed for ${failed.length} snapshots`);
      const ms = performance.now() - start;
      return { ms, bytes: worker.stats.readBytes, chunks: worker.stats.chunksRead };
    };
    const all = await timed(16, (w) => verifyStore(w, {}));
    t = performance.now();
    let rawBytes = 0;
    for (const p of paths) {
      const raw = readFileSync(p);
      rawBytes += raw.byteLength;
      createHash('sha256').update(raw.subarray(12)).digest();
    }
    const rawSmallMs = performance.now() - t;
    report(
      `verify the store: ${all.chunks} chunks of 4 KiB`,
      `${mbps(all.bytes, all.ms)}  ${rate(all.chunks, all.ms)}`,
    );
    report(
      '  raw read + SHA-256 of the same files',
      `${mbps(rawBytes, rawSmallMs)}  -> ${ratio(all.ms, rawSmallMs)}`,
    );
    // Read ahead: one snapshot (4,000 chunks) each, so every run reads the same amount.
    const h0 = backupGroup(ROOT_NAMESPACE, 'host', 'h0');
    const snapshots = (await store.listSnapshots(h0)).map((i) => i.dir);
    for (const [i, readAhead] of [0, 4, 16].entries()) {
      const dir = snapshots[i];
      if (dir === undefined) break;
      const one = await timed(readAhead, async (w) =>
        (await verifySnapshot(w, dir)) ? [] : [dir],
      );
      report(
        `  one snapshot, read ahead ${readAhead}${readAhead === 16 ? ' (default)' : ''}`,
        `${mbps(one.bytes, one.ms)}  ${rate(one.chunks, one.ms)}`,
      );
    }

    const big = makeChunks(777, BIG_CHUNKS, BIG_CHUNK_SIZE);
    for (const c of big) await store.insertChunk(c.blob, c.digest);
    const bigDir = backupDir(backupGroup(ROOT_NAMESPACE, 'vm', '4242'), 1_700_000_000);
    await writeSnapshot(store, bigDir, [
      { kind: 'didx', name: 'disk.pxar.didx', chunks: big, insert: false },
    ]);
    const big0 = await timed(0, (w) => verifyGroup(w, bigDir.group));
    const big16 = await timed(16, (w) => verifyGroup(w, bigDir.group));
    t = performance.now();
    let rawBig = 0;
    for (const c of big) {
      const raw = await readFile(store.chunkStore.chunkPath(c.digest));
      rawBig += raw.byteLength;
      createHash('sha256').update(raw.subarray(12)).digest();
    }
    const rawBigMs = performance.now() - t;
    report(`verify ${BIG_CHUNKS} chunks of 4 MiB, read ahead 0`, mbps(big0.bytes, big0.ms));
    report('  read ahead 16 (default)', mbps(big16.bytes, big16.ms));
    report(
      '  raw read + SHA-256 of the same files',
      `${mbps(rawBig, rawBigMs)}  -> ${ratio(big16.ms, rawBigMs)}`,
    );
  } finally {
    const t = performance.now();
    await rm(root, { recursive: true, force: true });
    console.log(`(cleanup ${(performance.now() - t).toFixed(0)} ms)`);
  }
}

await main();
