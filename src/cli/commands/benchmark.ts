/**
 * `burrow benchmark`: how fast this machine does the CPU work of a backup, as
 * proxmox-backup-client's benchmark measures it: SHA-256, zstd level 1 compression and
 * decompression, chunk verification (decode + digest) and AES-256-GCM encryption over 1 MiB of
 * the same pseudo-random bytes, each for a fixed time, shown with the percentage of PBS's 2020
 * reference machine (AMD Ryzen 7 2700X). Burrow adds the content-defined chunker. With a remote
 * repository (`--repository` or PBS_REPOSITORY naming a server) it also measures the upload
 * speed to the server through a backup session, as PBS's TLS test does; otherwise that row shows
 * "not tested".
 */
import type { Command } from 'commander';
import { createHash, randomBytes } from 'node:crypto';
import { Chunker, DEFAULT_AVG_CHUNK_SIZE } from '../../chunker/buzhash.js';
import { CryptConfig } from '../../crypto/crypt-config.js';
import { computeChunkDigest, encodeBlob, verifyUnencrypted } from '../../format/data-blob.js';
import { zstdCompress, zstdDecompress } from '../../format/zstd.js';
import { BurrowError } from '../../lib/errors.js';
import { renderTable } from '../output.js';
import { REPOSITORY_ENV, parseRepository } from '../../client/repository.js';
import { clientContext } from '../client-context.js';
import { outputFormatOption } from '../run.js';

/** One measurement: bytes per second (absent when not tested) and the reference's speed. */
export interface Speed {
  speed?: number;
  top?: number;
}

export interface BenchmarkResult {
  tls: Speed;
  sha256: Speed;
  compress: Speed;
  decompress: Speed;
  verify: Speed;
  aes256_gcm: Speed;
  chunker: Speed;
}

/** PBS's reference figures (bytes per second) from its benchmark, AMD Ryzen 7 2700X, 2020. */
export const PBS_REFERENCE_2020 = {
  tls: 1235e6,
  sha256: 2022e6,
  compress: 752e6,
  decompress: 1198e6,
  aes256_gcm: 3645e6,
  verify: 758e6,
} as const;

const ROWS: ReadonlyArray<readonly [keyof BenchmarkResult, string]> = [
  ['tls', 'TLS (maximal backup upload speed)'],
  ['sha256', 'SHA256 checksum computation speed'],
  ['compress', 'ZStd level 1 compression speed'],
  ['decompress', 'ZStd level 1 decompression speed'],
  ['verify', 'Chunk verification speed'],
  ['aes256_gcm', 'AES256 GCM encryption speed'],
  ['chunker', 'Chunker (buzhash) speed'],
];

/** The input PBS uses: 1 MiB of consecutive little-endian u32 counters. */
export function benchmarkData(): Uint8Array {
  const data = new Uint8Array(1024 * 1024);
  const view = new DataView(data.buffer);
  for (let i = 0; i < data.length / 4; i++) view.setUint32(i * 4, i, true);
  return data;
}

/** Run `step` (which handles `bytes` bytes) until `seconds` have passed; bytes per second. */
function measure(seconds: number, bytes: number, step: () => void): number {
  const start = performance.now();
  let done = 0;
  let elapsed = 0;
  do {
    step();
    done += bytes;
    elapsed = (performance.now() - start) / 1000;
  } while (elapsed < seconds);
  return done / elapsed;
}

export function runBenchmark(seconds: number): BenchmarkResult {
  const data = benchmarkData();
  const n = data.byteLength;
  const result: BenchmarkResult = {
    tls: { top: PBS_REFERENCE_2020.tls },
    sha256: { top: PBS_REFERENCE_2020.sha256 },
    compress: { top: PBS_REFERENCE_2020.compress },
    decompress: { top: PBS_REFERENCE_2020.decompress },
    verify: { top: PBS_REFERENCE_2020.verify },
    aes256_gcm: { top: PBS_REFERENCE_2020.aes256_gcm },
    chunker: {},
  };
  result.sha256.speed = measure(seconds, n, () => createHash('sha256').update(data).digest());
  // PBS gives compression three times as long as the others.
  result.compress.speed = measure(seconds * 3, n, () => zstdCompress(data, 1));
  const compressed = zstdCompress(data, 1);
  result.decompress.speed = measure(seconds, n, () => zstdDecompress(compressed));
  const chunk = encodeBlob(data, { compress: true });
  const digest = computeChunkDigest(data);
  result.verify.speed = measure(seconds, n, () => verifyUnencrypted(chunk, n, digest));
  const crypt = new CryptConfig(randomBytes(32));
  result.aes256_gcm.speed = measure(seconds, n, () => encodeBlob(data, { compress: false, crypt }));
  const chunker = new Chunker(DEFAULT_AVG_CHUNK_SIZE);
  result.chunker.speed = measure(seconds, n, () => {
    let start = 0;
    while (start < n) {
      const end = chunker.scanFrom(data, start);
      if (end < 0) break;
      start = end;
    }
  });
  return result;
}

/** "1854.29 MB/s (92%)" as PBS prints a speed (decimal megabytes). */
export function renderSpeed(s: Speed): string {
  if (s.speed === undefined) return 'not tested';
  const mb = `${(s.speed / 1e6).toFixed(2)} MB/s`;
  return s.top === undefined ? mb : `${mb} (${Math.round((s.speed * 100) / s.top)}%)`;
}

export function renderBenchmark(r: BenchmarkResult): string {
  return renderTable(
    [
      { header: 'Name', value: (row: readonly [keyof BenchmarkResult, string]) => row[1] },
      { header: 'Value', value: (row) => renderSpeed(r[row[0]]) },
    ],
    ROWS,
  );
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !(n > 0) || n > 60) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `--duration must be a number of seconds in (0, 60], got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

export function registerBenchmarkCommand(program: Command): void {
  program
    .command('benchmark')
    .description('measure hashing, compression, verification, encryption and chunking speed')
    .option(
      '--duration <seconds>',
      'time for each test (compression gets three times this); default 1 as PBS',
      parseSeconds,
      1,
    )
    .addOption(outputFormatOption())
    .action(async (options: { duration: number; outputFormat: string }, command: Command) => {
      const ctx = clientContext(command, options);
      const result = runBenchmark(options.duration);
      const { repository } = command.optsWithGlobals<{ repository?: string }>();
      const text = repository ?? process.env[REPOSITORY_ENV];
      if (text !== undefined && text !== '' && parseRepository(text).kind === 'remote') {
        const repo = await ctx.repository();
        // PBS measures the upload for 5 seconds; --duration scales it like the other tests.
        if (repo.uploadSpeed !== undefined)
          result.tls.speed = await repo.uploadSpeed(options.duration * 5);
      }
      ctx.printer.result(result, renderBenchmark);
    });
}
