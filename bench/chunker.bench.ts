/**
 * Chunker speed next to SHA-256 on the same buffer in the same run (`npm run bench:chunker`).
 * SHA-256 is the bar: every chunk is hashed anyway, so a chunker at least as fast never limits a
 * backup. Data: 256 MiB of random bytes (BENCH_MIB=n changes it). Each figure is the best of
 * BENCH_ROUNDS (default 3) passes, MB/s = 10^6 bytes per second. The stream is fed in 1 MiB reads,
 * like a file read loop would; chunks are not copied.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { Chunker } from '../src/chunker/buzhash.js';

const MiB = 1024 * 1024;
const SIZE = Number(process.env.BENCH_MIB ?? 256) * MiB;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const READ = MiB;

const data = new Uint8Array(SIZE);
for (let off = 0; off < SIZE; off += 64 * MiB)
  randomFillSync(data, off, Math.min(64 * MiB, SIZE - off));

function best(fn: () => number): { seconds: number; result: number } {
  let seconds = Infinity;
  let result = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    result = fn();
    seconds = Math.min(seconds, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { seconds, result };
}

function chunkAll(avg: number): number {
  const c = new Chunker(avg);
  let chunks = 0;
  for (let off = 0; off < SIZE; off += READ) {
    let rest = data.subarray(off, Math.min(off + READ, SIZE));
    for (let k = c.scan(rest); k !== 0; k = c.scan(rest)) {
      chunks++;
      rest = rest.subarray(k);
    }
  }
  return c.pendingLength > 0 ? chunks + 1 : chunks;
}

function shaAll(): number {
  const h = createHash('sha256');
  for (let off = 0; off < SIZE; off += READ)
    h.update(data.subarray(off, Math.min(off + READ, SIZE)));
  return h.digest()[0]!;
}

const mbps = (s: number): number => SIZE / 1e6 / s;
const sha = best(shaAll);
console.log(
  `buffer: ${SIZE / MiB} MiB random, ${ROUNDS} rounds, best of each, node ${process.version}`,
);
console.log(`sha256                        ${mbps(sha.seconds).toFixed(0).padStart(6)} MB/s`);
for (const avgKiB of [4096, 512, 64]) {
  const r = best(() => chunkAll(avgKiB * 1024));
  const speed = mbps(r.seconds);
  console.log(
    `buzhash avg ${String(avgKiB).padStart(4)} KiB (${String(r.result).padStart(5)} chunks) ${speed.toFixed(0).padStart(6)} MB/s   ratio chunker/sha256 ${(speed / mbps(sha.seconds)).toFixed(2)}`,
  );
}
