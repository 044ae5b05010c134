/**
 * Chunker speed next to SHA-256 on the same buffer in the same run (`npm run bench:chunker`).
 * SHA-256 is the bar: every chunk is hashed anyway, so a chunker at least as fast never limits a
 * backup. Data: 256 MiB of random bytes (BENCH_MIB=n changes it). The stream is fed in 1 MiB
 * reads, like a file read loop would; chunks are not copied.
 *
 * Paths: the addon's AVX-512 kernel (when the CPU has AVX-512 VBMI), the addon's scalar loop, and
 * the TypeScript fallback. Rounds interleave all of them with SHA-256, and each figure is the
 * best of BENCH_ROUNDS (default 5), so a busy machine slows every figure alike. MB/s = 10^6 bytes
 * per second of this process's CPU time (user + system), which a busy machine disturbs less than
 * wall time; the wall-time figure is printed beside it.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { Chunker } from '../src/chunker/buzhash.js';
import { forceNativeFallback, nativeBuzhashKernel } from '../src/lib/native-fs.js';

const MiB = 1024 * 1024;
const SIZE = Number(process.env.BENCH_MIB ?? 256) * MiB;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const READ = MiB;

const data = new Uint8Array(SIZE);
for (let off = 0; off < SIZE; off += 64 * MiB)
  randomFillSync(data, off, Math.min(64 * MiB, SIZE - off));

function chunkAll(avg: number): number {
  const c = new Chunker(avg);
  let chunks = 0;
  for (let off = 0; off < SIZE; off += READ) {
    const piece = data.subarray(off, Math.min(off + READ, SIZE));
    for (let at = c.scanFrom(piece, 0); at >= 0; at = c.scanFrom(piece, at)) chunks++;
  }
  return c.pendingLength > 0 ? chunks + 1 : chunks;
}

function shaAll(): number {
  const h = createHash('sha256');
  for (let off = 0; off < SIZE; off += READ)
    h.update(data.subarray(off, Math.min(off + READ, SIZE)));
  return h.digest()[0]!;
}

type Path = 'avx512' | 'scalar' | 'typescript';

/** Selects a chunker path; false if this machine or build does not have it. */
function select(path: Path): boolean {
  if (path === 'typescript') {
    forceNativeFallback(true);
    return true;
  }
  forceNativeFallback(false);
  return nativeBuzhashKernel(path === 'avx512') === path;
}

interface Case {
  readonly label: string;
  readonly path?: Path;
  readonly run: () => number;
  cpu: number;
  wall: number;
  result: number;
}

const cases: Case[] = [{ label: 'sha256', run: shaAll, cpu: Infinity, wall: Infinity, result: 0 }];
const paths: Path[] = (['avx512', 'scalar', 'typescript'] as const).filter(select);
for (const avgKiB of [4096, 512, 64]) {
  for (const path of paths) {
    cases.push({
      label: `buzhash ${path.padEnd(10)} avg ${String(avgKiB).padStart(4)} KiB`,
      path,
      run: () => chunkAll(avgKiB * 1024),
      cpu: Infinity,
      wall: Infinity,
      result: 0,
    });
  }
}

for (let r = 0; r < ROUNDS; r++) {
  for (const c of cases) {
    if (c.path !== undefined) select(c.path);
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    c.result = c.run();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const used = process.cpuUsage(cpu0);
    c.cpu = Math.min(c.cpu, (used.user + used.system) / 1e6);
    c.wall = Math.min(c.wall, wall);
  }
}
select('avx512');

const mbps = (s: number): number => SIZE / 1e6 / s;
const sha = cases[0]!;
console.log(
  `buffer: ${SIZE / MiB} MiB random, ${ROUNDS} rounds, best of each, node ${process.version}, paths: ${paths.join(', ')}`,
);
for (const c of cases) {
  const chunks = c.path === undefined ? '' : `(${String(c.result).padStart(5)} chunks)`;
  const ratio = c === sha ? '' : `   ratio to sha256 ${(mbps(c.cpu) / mbps(sha.cpu)).toFixed(2)}`;
  console.log(
    `${c.label.padEnd(36)} ${chunks.padEnd(15)} ${mbps(c.cpu).toFixed(0).padStart(6)} MB/s (wall ${mbps(c.wall).toFixed(0).padStart(5)})${ratio}`,
  );
}
