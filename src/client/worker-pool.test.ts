import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf, rejectionCodeOf } from '../../test/helpers/error-code.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { blobKindOf, decodeBlob } from '../format/data-blob.js';
import { MAX_BLOB_SIZE } from '../format/magic.js';
import { fromHex, toHex } from '../lib/bytes.js';
import { ChunkArena, ChunkWorkerPool } from './worker-pool.js';

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

const sha256 = (d: Uint8Array): string => createHash('sha256').update(d).digest('hex');
/** pbs-protocol §11 vectors #5 (key, id key), #6 and #7 (`hello world` digests). */
const SPEC_ENC_KEY = fromHex('28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e');
const HELLO = new TextEncoder().encode('hello world');
const HELLO_PLAIN_DIGEST = 'b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9';
const HELLO_KEYED_DIGEST = 'e42969791f6be2979d8edfb1b9c16f480285a05238251e749a377cf215508034';

let pool: ChunkWorkerPool;
beforeAll(() => {
  // No inline budget: every job below runs on a worker thread.
  pool = ChunkWorkerPool.create(2, 0);
});
afterAll(async () => {
  await pool.close();
});

describe('ChunkWorkerPool', () => {
  it('digests and encodes in a worker (spec vectors #6, #7)', async () => {
    const plain = await pool.process(HELLO, undefined, false);
    expect(toHex(plain.digest)).toBe(HELLO_PLAIN_DIGEST);
    // Vector #7: the plain blob of `hello world`, byte for byte.
    expect(toHex(plain.encoded)).toBe('42ab3807be8370a185114a0d68656c6c6f20776f726c64');

    const crypt = new CryptConfig(SPEC_ENC_KEY);
    const enc = await pool.process(HELLO, crypt);
    expect(toHex(enc.digest)).toBe(HELLO_KEYED_DIGEST);
    expect(blobKindOf(enc.encoded)).toBe('encrypted');
    expect(new TextDecoder().decode(decodeBlob(enc.encoded, { crypt }))).toBe('hello world');
    // The input stays usable: process() copies unless told to transfer.
    expect(HELLO.byteLength).toBe(11);
  });

  it('spreads jobs over the workers and returns each result to its caller', async () => {
    const inputs = Array.from({ length: 24 }, (_, i) => new Uint8Array(50_000 + i).fill(i));
    const results = await Promise.all(inputs.map((d) => pool.process(d)));
    results.forEach((r, i) => {
      expect(toHex(r.digest)).toBe(sha256(inputs[i]!));
      expect(decodeBlob(r.encoded).byteLength).toBe(inputs[i]!.byteLength);
    });
    expect(pool.pendingJobs).toBe(0);
  });

  it('two-step jobs: digest first, then encode or drop', async () => {
    const a = new Uint8Array(10_000).fill(1);
    const b = new Uint8Array(10_000).fill(2);
    const ja = pool.submit(a, { transfer: true });
    const jb = pool.submit(b);
    expect(a.byteLength).toBe(0); // moved to the worker
    expect(b.byteLength).toBe(10_000); // copied
    expect(sha256(b)).toBe(toHex(await jb.digest));
    expect(toHex(await ja.digest)).toBe(sha256(new Uint8Array(10_000).fill(1)));
    jb.drop();
    const blob = await ja.encode();
    expect(blobKindOf(blob)).toBe('zstd');
    expect(decodeBlob(blob)).toEqual(new Uint8Array(10_000).fill(1));
    ja.drop(); // harmless after encode
    expect(pool.pendingJobs).toBe(0);
  });

  it('encode() before the digest is an INTERNAL error; a job error comes back typed', async () => {
    const job = pool.submit(new Uint8Array(100));
    expect(await rejectionCodeOf(job.encode())).toBe('INTERNAL');
    await job.digest.catch(() => undefined);
    job.drop();
    // BLOB_TOO_LARGE is thrown inside the worker and rebuilt here with its code.
    const huge = new Uint8Array(MAX_BLOB_SIZE + 1);
    expect(await rejectionCodeOf(pool.encodeOnly(huge, { transfer: true }))).toBe('BLOB_TOO_LARGE');
    expect(toHex((await pool.process(HELLO)).digest)).toBe(HELLO_PLAIN_DIGEST);
  });

  it('a crashed worker fails its jobs and is replaced', async () => {
    const job = pool.submit(new Uint8Array(1000).fill(9));
    await job.digest; // held by the first worker
    pool.crashWorkerForTesting();
    expect(await rejectionCodeOf(job.encode())).toBe('INTERNAL');
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => pool.process(new Uint8Array(1000).fill(i))),
    );
    expect(results.map((r) => toHex(r.digest))).toEqual(
      Array.from({ length: 6 }, (_, i) => sha256(new Uint8Array(1000).fill(i))),
    );
    expect(pool.pendingJobs).toBe(0);
  });

  it('close() fails pending jobs, refuses new ones and is idempotent', async () => {
    const p = ChunkWorkerPool.create(1, 0);
    const jobs = Array.from({ length: 5 }, () =>
      rejectionCodeOf(p.process(new Uint8Array(1 << 20))),
    );
    await p.close();
    expect(await Promise.all(jobs)).toEqual(Array(5).fill('INTERNAL'));
    expect(p.closed).toBe(true);
    expect(codeOf(() => p.submit(HELLO))).toBe('INTERNAL');
    await p.close();
  });

  it('reads chunks in arena slots in place and frees each slot once the worker is done', async () => {
    const arena = new ChunkArena(64 * 1024, 3);
    const fill = (v: number, n: number): Uint8Array => {
      const slot = arena.take()!;
      slot.fill(v, 0, n);
      return slot.subarray(0, n);
    };
    const a = fill(1, 5000);
    const b = fill(2, 6000);
    const c = fill(3, 7000);
    expect(arena.take()).toBeUndefined(); // all three slots are out
    const ja = pool.submit(a, { transfer: true });
    const jb = pool.submit(b, { transfer: true });
    expect(a.byteLength).toBe(5000); // shared, not moved
    expect(toHex(await ja.digest)).toBe(sha256(new Uint8Array(5000).fill(1)));
    expect(toHex(await jb.digest)).toBe(sha256(new Uint8Array(6000).fill(2)));
    expect(arena.inUse).toBe(3);
    ja.drop(); // a dropped job's slot is free at once
    expect(arena.inUse).toBe(2);
    expect(await rejectionCodeOf(ja.encode())).toBe('INTERNAL'); // not a promise that hangs
    const blob = await jb.encode(); // an encoded job's slot is free when the blob arrives
    expect(arena.inUse).toBe(1);
    expect(decodeBlob(blob)).toEqual(new Uint8Array(6000).fill(2));
    // Without `transfer` the chunk is copied and its slot stays the caller's.
    const jc = pool.submit(c, { transfer: false });
    await jc.digest;
    jc.drop();
    expect(arena.inUse).toBe(1);
    // The freed slots are handed out again, and the worker reads their new contents.
    const d = fill(4, 3000);
    expect(toHex(await pool.submit(d, { transfer: true }).digest)).toBe(
      sha256(new Uint8Array(3000).fill(4)),
    );
  });

  it('decodes and checks stored chunks on a worker (decode jobs)', async () => {
    const data = new Uint8Array(200_000).map((_, i) => i % 7);
    const crypt = new CryptConfig(SPEC_ENC_KEY);
    for (const key of [undefined, crypt]) {
      const { digest, encoded } = await pool.process(data, key);
      const decoded = await pool.decode(encoded, {
        crypt: key,
        expectedDigest: digest,
        expectedSize: data.byteLength,
      });
      expect(decoded).toEqual(data);
      // A wrong digest or length is refused with decodeBlob's codes.
      const wrong = new Uint8Array(digest);
      wrong[0]! ^= 1;
      expect(
        await rejectionCodeOf(
          pool.decode(encoded, {
            crypt: key,
            expectedDigest: wrong,
            expectedSize: data.byteLength,
          }),
        ),
      ).toBe('DIGEST_MISMATCH');
      expect(
        await rejectionCodeOf(
          pool.decode(encoded, { crypt: key, expectedDigest: digest, expectedSize: 5 }),
        ),
      ).toBe('SIZE_MISMATCH');
    }
    // With `transfer`, a raw chunk that owns its buffer moves to the worker.
    const { digest, encoded } = await pool.process(data, undefined, true, false);
    const moved = new Uint8Array(encoded);
    expect(
      await pool.decode(moved, { expectedDigest: digest, expectedSize: data.byteLength }, true),
    ).toEqual(data);
    expect(moved.byteLength).toBe(0);
  });

  it("reads chunk files itself for decodeFile jobs, with loadChunk's errors", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'burrow-decode-file-'));
    try {
      const data = new Uint8Array(100_000).map((_, i) => i % 11);
      const { digest, encoded } = await pool.process(data);
      const path = join(dir, toHex(digest));
      await writeFile(path, encoded);
      const check = { expectedDigest: digest, expectedSize: data.byteLength };
      expect(await pool.decodeFile(path, check)).toEqual(data);

      const missing = join(dir, 'ab'.repeat(32));
      const notFound = await pool.decodeFile(missing, check).catch((e: unknown) => e);
      expect(notFound).toMatchObject({ code: 'NOT_FOUND' });
      expect((notFound as Error).message).toBe(`chunk ${'ab'.repeat(32)} not found: ${missing}`);

      const link = join(dir, 'cd'.repeat(32));
      await symlink(path, link);
      expect(await rejectionCodeOf(pool.decodeFile(link, check))).toBe('DATASTORE_INVALID');
      expect(await rejectionCodeOf(pool.decodeFile(dir, check))).toBe('DATASTORE_INVALID');

      // Damage is caught by the checks after the read, as for decode().
      const plain = await pool.process(data, undefined, false);
      const bad = plain.encoded.slice();
      bad[bad.length - 1]! ^= 1;
      await writeFile(path, bad);
      expect(await rejectionCodeOf(pool.decodeFile(path, check))).toBe('DIGEST_MISMATCH');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad thread counts', () => {
    expect(codeOf(() => ChunkWorkerPool.create(0))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => ChunkWorkerPool.create(1.5))).toBe('INVALID_ARGUMENT');
  });
});

describe('ChunkWorkerPool: jobs on the calling thread while the inline budget lasts', () => {
  it("gives the workers' results without starting a thread (spec vectors #6, #7)", async () => {
    const here = ChunkWorkerPool.create(2, 1 << 30);
    try {
      const plain = await here.process(HELLO, undefined, false);
      expect(toHex(plain.digest)).toBe(HELLO_PLAIN_DIGEST);
      expect(toHex(plain.encoded)).toBe('42ab3807be8370a185114a0d68656c6c6f20776f726c64');
      const crypt = new CryptConfig(SPEC_ENC_KEY);
      const enc = await here.process(HELLO, crypt);
      expect(toHex(enc.digest)).toBe(HELLO_KEYED_DIGEST);
      expect(new TextDecoder().decode(decodeBlob(enc.encoded, { crypt }))).toBe('hello world');

      // Two-step jobs, with chunks in arena slots: a slot is free once dropped or encoded.
      const arena = new ChunkArena(64 * 1024, 2);
      const a = arena.take()!.fill(1, 0, 5000).subarray(0, 5000);
      const b = arena.take()!.fill(2, 0, 6000).subarray(0, 6000);
      const ja = here.submit(a, { transfer: true });
      const jb = here.submit(b, { transfer: true });
      expect(toHex(await ja.digest)).toBe(sha256(new Uint8Array(5000).fill(1)));
      expect(toHex(await jb.digest)).toBe(sha256(new Uint8Array(6000).fill(2)));
      expect(arena.inUse).toBe(2);
      ja.drop();
      expect(arena.inUse).toBe(1);
      expect(decodeBlob(await jb.encode())).toEqual(new Uint8Array(6000).fill(2));
      expect(arena.inUse).toBe(0);
      // encode() twice, or after drop(), is refused as on a worker.
      expect(await rejectionCodeOf(ja.encode())).toBe('INTERNAL');

      // Decode jobs keep their checks.
      const data = new Uint8Array(200_000).map((_, i) => i % 7);
      const { digest, encoded } = await here.process(data, crypt);
      const check = { crypt, expectedDigest: digest, expectedSize: data.byteLength };
      expect(await here.decode(encoded, check)).toEqual(data);
      const wrong = new Uint8Array(digest);
      wrong[0]! ^= 1;
      expect(await rejectionCodeOf(here.decode(encoded, { ...check, expectedDigest: wrong }))).toBe(
        'DIGEST_MISMATCH',
      );
      expect(await rejectionCodeOf(here.decode(encoded, { ...check, expectedSize: 5 }))).toBe(
        'SIZE_MISMATCH',
      );
      const missing = join(tmpdir(), 'burrow-no-such-chunk-' + 'ab'.repeat(32));
      expect(await rejectionCodeOf(here.decodeFile(missing, check))).toBe('NOT_FOUND');
      expect(here.runningThreads).toBe(0);
      expect(here.pendingJobs).toBe(0);
    } finally {
      await here.close();
    }
  });

  it('starts threads once the budget is spent, or all at once with startThreads()', async () => {
    const small = ChunkWorkerPool.create(2, 100_000);
    const later = ChunkWorkerPool.create(2);
    try {
      const first = await small.process(new Uint8Array(60_000).fill(1));
      expect(small.runningThreads).toBe(0);
      expect(toHex(first.digest)).toBe(sha256(new Uint8Array(60_000).fill(1)));
      // 60,000 of 100,000 bytes spent: this job still runs here, and spends the rest.
      await small.process(new Uint8Array(60_000).fill(2));
      expect(small.runningThreads).toBe(0);
      const inputs = Array.from({ length: 6 }, (_, i) => new Uint8Array(30_000).fill(i));
      const results = await Promise.all(inputs.map((d) => small.process(d)));
      expect(small.runningThreads).toBeGreaterThan(0);
      results.forEach((r, i) => expect(toHex(r.digest)).toBe(sha256(inputs[i]!)));

      later.startThreads();
      expect(later.runningThreads).toBe(2);
      expect(toHex((await later.process(HELLO, undefined, false)).digest)).toBe(HELLO_PLAIN_DIGEST);
    } finally {
      await small.close();
      await later.close();
    }
  });

  it('refuses a bad budget', () => {
    expect(codeOf(() => ChunkWorkerPool.create(1, -1))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => ChunkWorkerPool.create(1, 0.5))).toBe('INVALID_ARGUMENT');
  });
});

describe('ChunkWorkerPool in a plain process (node --import tsx)', () => {
  // The script imports the TypeScript source: the worker must start from chunk-worker.ts, and an
  // idle pool, closed or not, must not keep the process alive.
  const script = (close: boolean): string => `
    import { ChunkWorkerPool } from ${JSON.stringify(new URL('./worker-pool.ts', import.meta.url).href)};
    const pool = ChunkWorkerPool.create(2, 0);
    const r = await pool.process(new TextEncoder().encode('hello world'), undefined, false);
    console.log(Buffer.from(r.digest).toString('hex'));
    ${close ? 'await pool.close();' : ''}
  `;

  for (const close of [true, false]) {
    it(`runs and exits by itself (${close ? 'closed' : 'never closed'})`, async () => {
      const { stdout } = await run(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script(close)],
        { cwd: repoRoot, timeout: 30_000 },
      );
      expect(stdout.trim()).toBe(HELLO_PLAIN_DIGEST);
    });
  }
});
