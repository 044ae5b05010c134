/**
 * Chunk upload pipeline throughput (`npx tsx bench/pipeline.bench.ts`): how much the worker
 * threads buy over doing digest, zstd and AES-GCM on the main thread.
 *
 * Data: BENCH_MIB (default 1024) MiB of incompressible pseudo-random bytes, fed in 1 MiB pieces
 * through the buzhash chunker (4 MiB average), as a file read would arrive; every chunk is new, so
 * each one is hashed, compressed (zstd gives up on random data, the blob stays plain) and, in
 * encrypt mode, encrypted. The writer discards everything (a null writer), so the figures are the
 * client's CPU path alone: chunking + digest + encode + ordered appends.
 *
 * Configurations, each timed BENCH_ROUNDS (default 2) times, best kept:
 * - inline: one thread, no workers: chunk, computeChunkDigest + encodeBlob, in order.
 * - pool N: uploadChunks with an N-thread ChunkWorkerPool (main thread chunks and appends), the
 *   chunks cut by ChunkSplitter into fresh memory and moved to the workers.
 * - sink N: as a backup does it: 1 MiB pieces read into one reused buffer are written to a
 *   ChunkingSink, which gathers each chunk in a slot of shared memory that the workers read in
 *   place (backup-streams.ts); no chunk buffer is allocated or moved.
 * Reported: MB/s (10^6 bytes), wall seconds, CPU seconds of the process (all threads) and of the
 * main thread alone (Linux), the speedup of each configuration over inline, and peak RSS. On a
 * busy machine wall times mislead (a 3-thread process gets more of the CPU than a 1-thread one);
 * the CPU columns do not: the pool's total CPU over inline's is its overhead, and the main
 * thread's share is what it would leave to the workers on idle cores.
 */
import { createCipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { ChunkSplitter } from '../src/chunker/buzhash.js';
import { ChunkingSink } from '../src/client/backup-streams.js';
import type { BackupWriter } from '../src/client/backup-writer.js';
import { ChunkWorkerPool, uploadChunks, type UploadOptions } from '../src/client/chunk-pipeline.js';
import { CryptConfig } from '../src/crypto/crypt-config.js';
import { computeChunkDigest, encodeBlob } from '../src/format/data-blob.js';
import { IndexCsumBuilder } from '../src/format/index-common.js';
import { backupDir, backupGroup, ROOT_NAMESPACE } from '../src/types/backup.js';

const MiB = 1024 * 1024;
const SIZE = Number(process.env.BENCH_MIB ?? 1024) * MiB;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const PIECE = MiB;

function pseudoRandom(size: number): Uint8Array {
  const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16));
  return new Uint8Array(cipher.update(Buffer.alloc(size)));
}

const data = pseudoRandom(SIZE);

/** The stream as a reader would deliver it, through the chunker; every chunk a fresh copy. */
function* chunks(): Generator<Uint8Array> {
  const splitter = new ChunkSplitter(4 * MiB);
  for (let at = 0; at < SIZE; at += PIECE) {
    // A fresh piece per read, as fs would give; chunks inside one piece are views of it.
    yield* splitter.push(data.slice(at, at + PIECE));
  }
  const last = splitter.finish();
  if (last !== undefined) yield last;
}

class NullWriter implements BackupWriter {
  readonly snapshot = backupDir(backupGroup(ROOT_NAMESPACE, 'host', 'bench'), 1);
  uploaded = 0;
  previousBackupTime = (): Promise<undefined> => Promise.resolve(undefined);
  downloadPrevious = (): Promise<undefined> => Promise.resolve(undefined);
  createIndex = (): Promise<number> => Promise.resolve(1);
  uploadChunk = (
    _w: number,
    _k: unknown,
    _d: Uint8Array,
    _s: number,
    e: Uint8Array,
  ): Promise<void> => {
    this.uploaded += e.byteLength;
    return Promise.resolve();
  };
  appendIndex = (): Promise<void> => Promise.resolve();
  closeIndex = (): Promise<void> => Promise.resolve();
  uploadBlob = (): Promise<void> => Promise.resolve();
  finish = (): Promise<void> => Promise.resolve();
  close = (): Promise<void> => Promise.resolve();
}

interface Figure {
  seconds: number;
  /** CPU seconds of the whole process (all threads). */
  cpu: number;
  /** CPU seconds of the main thread alone (Linux; NaN elsewhere). */
  mainCpu: number;
}

/** utime + stime of the calling thread, from /proc/thread-self/stat (clock ticks of 10 ms). */
function threadCpuSeconds(): number {
  try {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

async function time(fn: () => Promise<void>): Promise<Figure> {
  let best: Figure | undefined;
  for (let r = 0; r < ROUNDS; r++) {
    const cpu0 = process.cpuUsage();
    const main0 = threadCpuSeconds();
    const t0 = process.hrtime.bigint();
    await fn();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu1 = process.cpuUsage(cpu0);
    const figure = {
      seconds,
      cpu: (cpu1.user + cpu1.system) / 1e6,
      mainCpu: threadCpuSeconds() - main0,
    };
    if (best === undefined || figure.seconds < best.seconds) best = figure;
  }
  return best!;
}

/** The single-threaded path: what the pipeline does, in order, on this thread. */
function inline(crypt: CryptConfig | undefined): Promise<void> {
  const csum = new IndexCsumBuilder();
  const known = new Set<string>();
  for (const chunk of chunks()) {
    const digest = computeChunkDigest(chunk, crypt);
    const hex = Buffer.from(digest).toString('hex');
    if (!known.has(hex)) {
      encodeBlob(chunk, { crypt });
      known.add(hex);
    }
    csum.update(digest);
  }
  csum.digest();
  return Promise.resolve();
}

/** One dynamic index into a NullWriter, nothing known. */
function uploadOptions(pool: ChunkWorkerPool, crypt: CryptConfig | undefined): UploadOptions {
  return {
    writer: new NullWriter(),
    wid: 1,
    kind: 'dynamic',
    known: new Set(),
    pool,
    ...(crypt !== undefined ? { crypt } : {}),
  };
}

async function pooled(pool: ChunkWorkerPool, crypt: CryptConfig | undefined): Promise<void> {
  const result = await uploadChunks(chunks(), uploadOptions(pool, crypt));
  if (result.size !== SIZE) throw new Error(`size ${result.size} != ${SIZE}`);
}

/** The backup's path: a reused read buffer, the chunking sink, arena slots. */
async function sunk(pool: ChunkWorkerPool, crypt: CryptConfig | undefined): Promise<void> {
  const sink = new ChunkingSink('bench', 4 * MiB);
  const upload = uploadChunks(sink.queue, uploadOptions(pool, crypt));
  const piece = Buffer.allocUnsafe(PIECE);
  for (let at = 0; at < SIZE; at += PIECE) {
    const n = Math.min(PIECE, SIZE - at);
    piece.set(data.subarray(at, at + n));
    await sink.write(piece.subarray(0, n));
  }
  await sink.finish();
  const result = await upload;
  if (result.size !== SIZE) throw new Error(`size ${result.size} != ${SIZE}`);
}

const mbps = (f: Figure): string => (SIZE / 1e6 / f.seconds).toFixed(0).padStart(6);

async function main(): Promise<void> {
  console.log(
    `pipeline bench: ${SIZE / MiB} MiB random, 4 MiB avg chunks, ${ROUNDS} rounds (best), ` +
      `${availableParallelism()} CPUs, node ${process.version}`,
  );
  const pools = new Map<number, ChunkWorkerPool>();
  for (const n of [1, 2]) {
    const pool = ChunkWorkerPool.create(n);
    // Warm up: start the threads and load their modules before timing.
    await Promise.all(Array.from({ length: n * 2 }, () => pool.process(new Uint8Array(MiB))));
    pools.set(n, pool);
  }
  const crypt = new CryptConfig(new Uint8Array(32).fill(1));
  console.log(
    `load average before: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log('mode        config     MB/s   wall s   cpu s  main s   speedup');
  for (const [mode, c] of [
    ['plain', undefined],
    ['encrypted', crypt],
  ] as const) {
    const base = await time(() => inline(c));
    const row = (name: string, f: Figure): void =>
      console.log(
        [
          mode.padEnd(11),
          name.padEnd(8),
          mbps(f),
          f.seconds.toFixed(2).padStart(8),
          f.cpu.toFixed(2).padStart(7),
          f.mainCpu.toFixed(2).padStart(7),
          `  ${(base.seconds / f.seconds).toFixed(2)}x`,
        ].join(' '),
      );
    row('inline', base);
    for (const [n, pool] of pools) row(`pool ${n}`, await time(() => pooled(pool, c)));
    for (const [n, pool] of pools) row(`sink ${n}`, await time(() => sunk(pool, c)));
  }
  for (const pool of pools.values()) await pool.close();
  console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
}

await main();
