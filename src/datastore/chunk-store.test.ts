import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmod,
  lchown,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  rmdir,
  stat,
  symlink,
  truncate,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { LockHolder } from '../../test/helpers/lock-holder-client.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { blobKindOf, decodeBlob, encodeBlob } from '../format/data-blob.js';
import type { BlobKind } from '../format/data-blob.js';
import { MAX_ENCODED_CHUNK_SIZE } from '../format/magic.js';
import { FakeClock } from '../lib/clock.js';
import { isBurrowError } from '../lib/errors.js';
import type { ErrorCode } from '../lib/errors.js';
import { digestToHex, parseDigestHex } from '../types/digest.js';
import {
  ChunkStore,
  EARLY_SYNC_BYTES,
  PREFIX_DIR_COUNT,
  ZERO_CHUNK_DIGEST_HEX,
  isChunkFileName,
  prefixDirName,
} from './chunk-store.js';
import type { ChunkEntry, WrittenChunk } from './chunk-store.js';
import { chunkPathIn, writeChunkTempFileSync } from './chunk-file.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLOCK_START = 1_700_000_000;

let tmp: string;
let base: string;
let store: ChunkStore;
let createProgress: number[] = [];
const clock = new FakeClock(CLOCK_START);
const crypt = new CryptConfig(new Uint8Array(32).fill(7));

async function expectCode(promise: Promise<unknown>, code: ErrorCode, text?: string | RegExp) {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isBurrowError(error, code), `expected ${code}, got ${String(error)}`).toBe(true);
  if (text !== undefined) expect((error as Error).message).toMatch(text);
  return error as Error;
}

function mode(st: { mode: number }): number {
  return st.mode & 0o777;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh random digest: the store files blobs under whatever digest it is given. */
function newDigest(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

/** Data that zstd shrinks a lot (repetitive) or not at all (random), of `size` bytes. */
function compressible(size: number): Uint8Array {
  return new Uint8Array(size).fill(0x61);
}

function incompressible(size: number): Uint8Array {
  return new Uint8Array(randomBytes(size));
}

function blobOf(kind: BlobKind, size: number): Uint8Array {
  const blob =
    kind === 'plain'
      ? encodeBlob(incompressible(size), { compress: false })
      : kind === 'zstd'
        ? encodeBlob(compressible(size))
        : kind === 'encrypted'
          ? encodeBlob(incompressible(size), { crypt, compress: false })
          : encodeBlob(compressible(size), { crypt });
  expect(blobKindOf(blob)).toBe(kind);
  return blob;
}

async function tempFilesIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.includes('.tmp_'));
}

/** Push a file's atime and mtime into the past so a touch is visible. */
async function agePath(path: string, seconds = 1_000_000_000): Promise<void> {
  await utimes(path, seconds, seconds);
}

/** A cheap store-shaped directory (open() checks only 0000 and ffff), for layout tests. */
async function miniStore(name: string, prefixes: string[] = ['0000', 'ffff']): Promise<string> {
  const dir = join(tmp, name);
  await mkdir(join(dir, '.chunks'), { recursive: true });
  for (const prefix of prefixes) await mkdir(join(dir, '.chunks', prefix));
  await writeFile(join(dir, '.lock'), '');
  return dir;
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'burrow-chunk-store-'));
  base = join(tmp, 'store');
  // Dot-names and lost+found do not make a target "non-empty" (§2.1 step 5).
  await mkdir(join(base, 'lost+found'), { recursive: true });
  await chmod(base, 0o755);
  await writeFile(join(base, '.keep'), 'x');
  createProgress = [];
  store = await ChunkStore.create(base, {
    syncLevel: 'none',
    clock,
    onProgress: (p) => createProgress.push(p),
  });
}, 300_000);

afterAll(async () => {
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
}, 300_000);

describe('create and open', () => {
  it('behaves as the reference test_chunk_store1', async () => {
    await expectCode(ChunkStore.open(join(tmp, 'missing')), 'DATASTORE_INVALID', /missing/);
    // `store` was created in beforeAll; insert twice, then creating again must fail.
    const data = new Uint8Array([0, 1]);
    const blob = encodeBlob(data);
    const digest = new Uint8Array(createHash('sha256').update(data).digest());
    expect(await store.insertChunk(blob, digest)).toEqual({
      duplicate: false,
      encodedSize: blob.byteLength,
    });
    expect(await store.insertChunk(blob, digest)).toEqual({
      duplicate: true,
      encodedSize: blob.byteLength,
    });
    await expectCode(ChunkStore.create(base, { syncLevel: 'none' }), 'ALREADY_EXISTS', /\.chunks/);
  });

  it('lays the store out as PBS does', async () => {
    expect(store.base).toBe(base);
    const chunkDir = join(base, '.chunks');
    expect(mode(await stat(base))).toBe(0o755);
    expect(mode(await stat(chunkDir))).toBe(0o750);
    const lock = await stat(join(base, '.lock'));
    expect(lock.isFile()).toBe(true);
    expect(lock.size).toBe(0);
    expect(mode(lock)).toBe(0o644);
    const names = await readdir(chunkDir);
    expect(names).toHaveLength(PREFIX_DIR_COUNT);
    const expected = Array.from({ length: PREFIX_DIR_COUNT }, (_, i) => prefixDirName(i));
    expect(new Set(names)).toEqual(new Set(expected));
    for (const prefix of ['0000', '00ff', '1234', 'abcd', 'ffff']) {
      const st = await stat(join(chunkDir, prefix));
      expect(st.isDirectory()).toBe(true);
      expect(mode(st)).toBe(0o750);
    }
    // The other entries were left alone.
    expect(await readFile(join(base, '.keep'), 'utf8')).toBe('x');
    // Progress as PBS logs it: each whole percent 1..99 once, in order.
    expect(createProgress).toEqual(Array.from({ length: 99 }, (_, i) => i + 1));
  });

  it('needs an absolute path', async () => {
    await expectCode(ChunkStore.create('relative/store'), 'INVALID_ARGUMENT', /absolute/);
    await expectCode(ChunkStore.open('relative/store'), 'INVALID_ARGUMENT', /absolute/);
    await expectCode(
      ChunkStore.open(base, { syncLevel: 'always' as never }),
      'INVALID_ARGUMENT',
      /sync level/,
    );
  });

  it('refuses a non-empty target without touching it', async () => {
    const target = join(tmp, 'nonempty');
    await mkdir(target);
    await writeFile(join(target, 'vm'), '');
    await expectCode(ChunkStore.create(target), 'DATASTORE_INVALID', /datastore path not empty/);
    expect(await readdir(target)).toEqual(['vm']);
  });

  it('refuses a target that is a file', async () => {
    const target = join(tmp, 'a-file');
    await writeFile(target, '');
    await expectCode(ChunkStore.create(target), 'DATASTORE_INVALID', /not a directory/);
  });

  it('reuses a valid existing store and finds its chunks', async () => {
    const blob = blobOf('zstd', 5000);
    const digest = newDigest();
    await store.insertChunk(blob, digest);
    const progress: number[] = [];
    const reused = await ChunkStore.create(base, {
      reuse: true,
      syncLevel: 'none',
      onProgress: (p) => progress.push(p),
    });
    expect(await reused.loadChunk(digest)).toEqual(blob);
    expect(progress).toHaveLength(99);
  });

  it('refuses to reuse a store whose layout or modes are off', async () => {
    const chunkDir = join(base, '.chunks');
    await chmod(join(chunkDir, '0001'), 0o700);
    try {
      await expectCode(
        ChunkStore.create(base, { reuse: true }),
        'DATASTORE_INVALID',
        /0001 has mode 0700, expected 0750/,
      );
    } finally {
      await chmod(join(chunkDir, '0001'), 0o750);
    }
    await rmdir(join(chunkDir, '0002'));
    try {
      await expectCode(
        ChunkStore.create(base, { reuse: true }),
        'DATASTORE_INVALID',
        /0002 is missing/,
      );
    } finally {
      await mkdir(join(chunkDir, '0002'), 0o750);
      await chmod(join(chunkDir, '0002'), 0o750);
      // Reuse checks owners too (when the store has one): the stand-in must match the others.
      if (store.fileOwner !== undefined) {
        await lchown(join(chunkDir, '0002'), store.fileOwner.uid, store.fileOwner.gid);
      }
    }
    await chmod(join(base, '.lock'), 0o600);
    try {
      await expectCode(
        ChunkStore.create(base, { reuse: true }),
        'DATASTORE_INVALID',
        /\.lock has mode 0600, expected 0644/,
      );
    } finally {
      await chmod(join(base, '.lock'), 0o644);
    }
    const empty = join(tmp, 'empty-for-reuse');
    await mkdir(empty, 0o755);
    await chmod(empty, 0o755);
    await expectCode(ChunkStore.create(empty, { reuse: true }), 'DATASTORE_INVALID', /\.chunks/);
  });

  it('open checks .chunks, .lock and the first and last prefix directories', async () => {
    const ok = await miniStore('mini-ok');
    await expect(ChunkStore.open(ok)).resolves.toBeInstanceOf(ChunkStore);

    const noLock = await miniStore('mini-nolock');
    await unlink(join(noLock, '.lock'));
    await expectCode(ChunkStore.open(noLock), 'DATASTORE_INVALID', /lock file .* does not exist/);

    const dirLock = await miniStore('mini-dirlock');
    await unlink(join(dirLock, '.lock'));
    await mkdir(join(dirLock, '.lock'));
    await expectCode(ChunkStore.open(dirLock), 'DATASTORE_INVALID', /not a regular file/);

    const interrupted = await miniStore('mini-interrupted', ['0000', '0001']);
    await expectCode(
      ChunkStore.open(interrupted),
      'DATASTORE_INVALID',
      /incomplete chunk store.*ffff/,
    );

    const fileChunks = join(tmp, 'mini-filechunks');
    await mkdir(fileChunks);
    await writeFile(join(fileChunks, '.chunks'), '');
    await writeFile(join(fileChunks, '.lock'), '');
    await expectCode(ChunkStore.open(fileChunks), 'DATASTORE_INVALID', /not a directory/);
  });
});

describe('chunk paths', () => {
  it('puts a chunk under the hex of its first two bytes', () => {
    const hex = 'a342e8151cbf' + '0'.repeat(52);
    expect(store.chunkPath(parseDigestHex(hex))).toBe(join(base, '.chunks', 'a342', hex));
  });

  it('rejects digests of the wrong length', async () => {
    expect(() => store.chunkPath(new Uint8Array(31))).toThrow(/32 bytes/);
    await expectCode(store.insertChunk(blobOf('plain', 10), new Uint8Array(33)), 'INVALID_DIGEST');
    await expectCode(store.loadChunk(new Uint8Array(0)), 'INVALID_DIGEST');
    await expectCode(store.touchChunk(new Uint8Array(5)), 'INVALID_DIGEST');
  });
});

describe('insertChunk (§2.3)', () => {
  it('writes a new chunk atomically with mode 0644 and no temp file left', async () => {
    const digest = newDigest();
    const blob = blobOf('plain', 3000);
    expect(await store.insertChunk(blob, digest)).toEqual({ duplicate: false, encodedSize: 3012 });
    const path = store.chunkPath(digest);
    expect(new Uint8Array(await readFile(path))).toEqual(blob);
    expect(mode(await stat(path))).toBe(0o644);
    expect(await tempFilesIn(join(path, '..'))).toEqual([]);
  });

  it('keeps and touches an existing chunk of the same size', async () => {
    const digest = newDigest();
    const first = blobOf('plain', 100);
    const second = blobOf('plain', 100); // same size, other bytes
    await store.insertChunk(first, digest);
    const path = store.chunkPath(digest);
    await agePath(path);
    const before = await stat(path, { bigint: true });
    expect(await store.insertChunk(second, digest)).toEqual({
      duplicate: true,
      encodedSize: first.byteLength,
    });
    const after = await stat(path, { bigint: true });
    expect(new Uint8Array(await readFile(path))).toEqual(first);
    expect(after.atimeNs).toBeGreaterThan(before.atimeNs);
    expect(after.mtimeNs).toBe(before.mtimeNs);
    expect(after.ino).toBe(before.ino);
  });

  it('overwrites an empty chunk file with a warning', async () => {
    const warnings: string[] = [];
    const warned = await ChunkStore.open(base, { onWarning: (w) => warnings.push(w) });
    const digest = newDigest();
    await writeFile(warned.chunkPath(digest), '');
    const blob = blobOf('zstd', 2000);
    expect(await warned.insertChunk(blob, digest)).toEqual({
      duplicate: false,
      encodedSize: blob.byteLength,
    });
    expect(new Uint8Array(await readFile(warned.chunkPath(digest)))).toEqual(blob);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`found empty chunk ${digestToHex(digest)}`);
  });

  it('never replaces an unencrypted chunk with an encrypted one', async () => {
    for (const oldKind of ['plain', 'zstd'] as const) {
      for (const newKind of ['encrypted', 'zstd-encrypted'] as const) {
        const digest = newDigest();
        const old = blobOf(oldKind, 700);
        await store.insertChunk(old, digest);
        const error = await expectCode(
          store.insertChunk(blobOf(newKind, 900), digest),
          'CHUNK_CONFLICT',
          /unencrypted chunk/,
        );
        expect(error.message).toContain(store.chunkPath(digest));
        expect(new Uint8Array(await readFile(store.chunkPath(digest)))).toEqual(old);
      }
    }
  });

  it('refuses two uncompressed encrypted chunks of different sizes', async () => {
    const digest = newDigest();
    const old = blobOf('encrypted', 500);
    await store.insertChunk(old, digest);
    await expectCode(
      store.insertChunk(blobOf('encrypted', 400), digest),
      'CHUNK_CONFLICT',
      /different size/,
    );
    await expectCode(store.insertChunk(blobOf('encrypted', 600), digest), 'CHUNK_CONFLICT');
    expect(new Uint8Array(await readFile(store.chunkPath(digest)))).toEqual(old);
  });

  it('keeps the first encrypted chunk when compression is involved, whatever the sizes', async () => {
    const cases: Array<[BlobKind, BlobKind, number, number]> = [
      ['encrypted', 'zstd-encrypted', 5000, 9000], // new compressed, existing bigger
      ['zstd-encrypted', 'encrypted', 5000, 300], // existing compressed
      ['zstd-encrypted', 'zstd-encrypted', 5000, 90000],
      ['zstd-encrypted', 'zstd-encrypted', 90000, 5000],
    ];
    for (const [oldKind, newKind, oldSize, newSize] of cases) {
      const digest = newDigest();
      const old = blobOf(oldKind, oldSize);
      const incoming = blobOf(newKind, newSize);
      expect(old.byteLength).not.toBe(incoming.byteLength);
      await store.insertChunk(old, digest);
      const path = store.chunkPath(digest);
      await agePath(path);
      expect(await store.insertChunk(incoming, digest)).toEqual({
        duplicate: true,
        encodedSize: old.byteLength,
      });
      expect(new Uint8Array(await readFile(path))).toEqual(old);
      expect((await stat(path)).atimeMs).toBeGreaterThan(Date.now() - 60_000);
    }
  });

  it('keeps an existing encrypted-path file whose magic is unknown (as PBS does)', async () => {
    const digest = newDigest();
    const path = store.chunkPath(digest);
    await writeFile(path, new Uint8Array(randomBytes(200)));
    expect(await store.insertChunk(blobOf('zstd-encrypted', 3000), digest)).toEqual({
      duplicate: true,
      encodedSize: 200,
    });
  });

  it('fails on an existing file too short for a magic when the new chunk is encrypted', async () => {
    const digest = newDigest();
    await writeFile(store.chunkPath(digest), new Uint8Array([1, 2, 3]));
    await expectCode(
      store.insertChunk(blobOf('encrypted', 100), digest),
      'DATASTORE_INVALID',
      /3 bytes long/,
    );
  });

  it('keeps a smaller unencrypted chunk and replaces a bigger one', async () => {
    const small = blobOf('zstd', 10_000);
    const big = blobOf('plain', 10_000);
    expect(small.byteLength).toBeLessThan(big.byteLength);

    const keepDigest = newDigest();
    await store.insertChunk(small, keepDigest);
    expect(await store.insertChunk(big, keepDigest)).toEqual({
      duplicate: true,
      encodedSize: small.byteLength,
    });
    expect(new Uint8Array(await readFile(store.chunkPath(keepDigest)))).toEqual(small);

    const replaceDigest = newDigest();
    await store.insertChunk(big, replaceDigest);
    expect(await store.insertChunk(small, replaceDigest)).toEqual({
      duplicate: false,
      encodedSize: small.byteLength,
    });
    expect(new Uint8Array(await readFile(store.chunkPath(replaceDigest)))).toEqual(small);
    expect(await tempFilesIn(join(store.chunkPath(replaceDigest), '..'))).toEqual([]);
  });

  it('refuses a directory or a symlink where the chunk should be', async () => {
    const dirDigest = newDigest();
    await mkdir(store.chunkPath(dirDigest));
    await expectCode(
      store.insertChunk(blobOf('plain', 10), dirDigest),
      'DATASTORE_INVALID',
      /is a directory/,
    );
    await expectCode(store.loadChunk(dirDigest), 'DATASTORE_INVALID', /is a directory/);

    const linkDigest = newDigest();
    const target = join(tmp, 'symlink-target');
    await writeFile(target, blobOf('plain', 10));
    await symlink(target, store.chunkPath(linkDigest));
    await expectCode(
      store.insertChunk(blobOf('plain', 10), linkDigest),
      'DATASTORE_INVALID',
      /symbolic link/,
    );
    await expectCode(store.loadChunk(linkDigest), 'DATASTORE_INVALID', /symbolic link/);
  });

  it('rejects bytes that are no blob', async () => {
    await expectCode(store.insertChunk(new Uint8Array(3), newDigest()), 'BLOB_TRUNCATED');
    await expectCode(store.insertChunk(new Uint8Array(20), newDigest()), 'BLOB_BAD_MAGIC');
    const huge = new Uint8Array(MAX_ENCODED_CHUNK_SIZE + 1);
    huge.set(blobOf('plain', 1).subarray(0, 12));
    await expectCode(store.insertChunk(huge, newDigest()), 'BLOB_TOO_LARGE');
  });

  it('reports a missing prefix directory as a damaged store', async () => {
    const digest = parseDigestHex('fffe' + '1'.repeat(60));
    const dir = join(base, '.chunks', 'fffe');
    await rmdir(dir);
    try {
      await expectCode(
        store.insertChunk(blobOf('plain', 10), digest),
        'DATASTORE_INVALID',
        /prefix directory .*fffe/,
      );
    } finally {
      await mkdir(dir, 0o750);
      await chmod(dir, 0o750);
    }
  });

  it('is safe under many concurrent inserts of one digest', async () => {
    const digest = newDigest();
    const blob = blobOf('zstd', 50_000);
    const results = await Promise.all(
      Array.from({ length: 40 }, () => store.insertChunk(blob, digest)),
    );
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(results.every((r) => r.encodedSize === blob.byteLength)).toBe(true);
    expect(new Uint8Array(await readFile(store.chunkPath(digest)))).toEqual(blob);
    expect(await tempFilesIn(join(store.chunkPath(digest), '..'))).toEqual([]);
  });

  it('serialises concurrent inserts of one digest with different sizes (smallest wins)', async () => {
    const digest = newDigest();
    const blobs = Array.from({ length: 20 }, (_, i) => blobOf('plain', 1000 + ((i * 7) % 20) * 10));
    await Promise.all(blobs.map((b) => store.insertChunk(b, digest)));
    const smallest = Math.min(...blobs.map((b) => b.byteLength));
    expect((await stat(store.chunkPath(digest))).size).toBe(smallest);
    expect(await tempFilesIn(join(store.chunkPath(digest), '..'))).toEqual([]);
  });

  it('inserts many different digests concurrently', async () => {
    const chunks = Array.from({ length: 200 }, () => ({
      digest: newDigest(),
      blob: blobOf('plain', 64),
    }));
    const results = await Promise.all(chunks.map((c) => store.insertChunk(c.blob, c.digest)));
    expect(results.every((r) => !r.duplicate)).toBe(true);
    for (const c of chunks) expect(await store.loadChunk(c.digest)).toEqual(c.blob);
  });

  it('is safe when two processes insert the same chunks at once', async () => {
    const count = 60;
    const dataOf = (i: number) =>
      new Uint8Array(
        Buffer.concat(
          Array.from({ length: 64 }, () => createHash('sha256').update(`c${i}`).digest()),
        ),
      );
    const script = `
      const { createHash } = await import('node:crypto');
      const { ChunkStore } = await import(${JSON.stringify(join(ROOT, 'src/datastore/chunk-store.ts'))});
      const { encodeBlob } = await import(${JSON.stringify(join(ROOT, 'src/format/data-blob.ts'))});
      const store = await ChunkStore.open(process.env.CS_BASE, { syncLevel: 'none', blockingWrites: process.env.CS_BLOCKING === '1' });
      const dataOf = (i) => new Uint8Array(Buffer.concat(Array.from({ length: 64 }, () => createHash('sha256').update('c' + i).digest())));
      const results = await Promise.all(Array.from({ length: ${count} }, (_, i) => {
        const data = dataOf(i);
        return store.insertChunk(encodeBlob(data, { compress: false }), createHash('sha256').update(data).digest());
      }));
      console.log(JSON.stringify(results.map((r) => r.duplicate)));
    `;
    const run = (blocking: boolean) =>
      new Promise<boolean[]>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          ['--import', 'tsx', '--input-type=module', '--eval', script],
          {
            cwd: ROOT,
            env: { ...process.env, CS_BASE: base, CS_BLOCKING: blocking ? '1' : '0' },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('error', reject);
        child.on('exit', (code) =>
          code === 0
            ? resolve(JSON.parse(out) as boolean[])
            : reject(new Error(`child failed: ${err}`)),
        );
      });
    // One process writes through the thread pool, the other with blocking calls (a client).
    const [a, b] = await Promise.all([run(false), run(true)]);
    expect(a).toHaveLength(count);
    expect(b).toHaveLength(count);
    for (let i = 0; i < count; i++) {
      const data = dataOf(i);
      const digest = new Uint8Array(createHash('sha256').update(data).digest());
      // At least one process wrote each chunk, and what is stored is a whole, valid blob.
      expect(a[i] === false || b[i] === false).toBe(true);
      const raw = await store.loadChunk(digest);
      expect(decodeBlob(raw, { expectedDigest: digest })).toEqual(data);
      expect(await tempFilesIn(join(store.chunkPath(digest), '..'))).toEqual([]);
    }
  }, 60_000);
});

describe('insertChunk with blockingWrites (the client)', () => {
  let blocking: ChunkStore;
  beforeAll(async () => {
    blocking = await ChunkStore.open(base, { syncLevel: 'none', blockingWrites: true });
  });

  it('writes a new chunk atomically with mode 0644 and no temp file left', async () => {
    const digest = newDigest();
    const blob = blobOf('zstd', 3000);
    expect(await blocking.insertChunk(blob, digest)).toEqual({
      duplicate: false,
      encodedSize: blob.byteLength,
    });
    const path = blocking.chunkPath(digest);
    expect(new Uint8Array(await readFile(path))).toEqual(blob);
    expect(mode(await stat(path))).toBe(0o644);
    expect(await tempFilesIn(join(path, '..'))).toEqual([]);
  });

  it('follows the same replacement rules: the smaller unencrypted chunk stays', async () => {
    const small = blobOf('zstd', 10_000);
    const big = blobOf('plain', 10_000);
    const digest = newDigest();
    await blocking.insertChunk(big, digest);
    expect(await blocking.insertChunk(big, digest)).toEqual({
      duplicate: true,
      encodedSize: big.byteLength,
    });
    expect(await blocking.insertChunk(small, digest)).toEqual({
      duplicate: false,
      encodedSize: small.byteLength,
    });
    expect(new Uint8Array(await readFile(blocking.chunkPath(digest)))).toEqual(small);
    expect(await tempFilesIn(join(blocking.chunkPath(digest), '..'))).toEqual([]);
  });

  it('refuses a symlink and reports a missing prefix directory as a damaged store', async () => {
    const linkDigest = newDigest();
    const target = join(tmp, 'blocking-symlink-target');
    await writeFile(target, blobOf('plain', 10));
    await symlink(target, blocking.chunkPath(linkDigest));
    await expectCode(
      blocking.insertChunk(blobOf('plain', 10), linkDigest),
      'DATASTORE_INVALID',
      /symbolic link/,
    );
    const digest = parseDigestHex('fffd' + '2'.repeat(60));
    const dir = join(base, '.chunks', 'fffd');
    await rmdir(dir);
    try {
      await expectCode(
        blocking.insertChunk(blobOf('plain', 10), digest),
        'DATASTORE_INVALID',
        /prefix directory .*fffd/,
      );
    } finally {
      await mkdir(dir, 0o750);
      await chmod(dir, 0o750);
    }
  });

  it('is safe under concurrent inserts of one digest', async () => {
    const digest = newDigest();
    const blob = blobOf('zstd', 50_000);
    const results = await Promise.all(
      Array.from({ length: 20 }, () => blocking.insertChunk(blob, digest)),
    );
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(new Uint8Array(await readFile(blocking.chunkPath(digest)))).toEqual(blob);
  });
});

describe('insertChunkFile: a temporary file written by another thread (the client)', () => {
  /** What a backup's worker thread does: the blob, in pieces, into a temporary file. */
  function written(digest: Uint8Array, blob: Uint8Array, pieces = 2): WrittenChunk {
    const cut = Math.min(12, blob.byteLength);
    const parts = pieces === 1 ? [blob] : [blob.subarray(0, cut), blob.subarray(cut)];
    const target = store.chunkFileTarget()!;
    const path = chunkPathIn(target.chunkDir, digestToHex(digest));
    return { temp: writeChunkTempFileSync(path, parts, target.owner), size: blob.byteLength };
  }

  it('puts a new chunk in place: the bytes of its pieces, mode 0644, no temporary file left', async () => {
    const digest = newDigest();
    const blob = blobOf('zstd', 3000);
    const file = written(digest, blob);
    expect(file.temp).toMatch(new RegExp(`/${digestToHex(digest)}\\.tmp_.{6}$`));
    expect(mode(await stat(file.temp))).toBe(0o644);
    expect(await store.insertChunkFile(file, 'zstd', digest)).toEqual({
      duplicate: false,
      encodedSize: blob.byteLength,
    });
    const path = store.chunkPath(digest);
    expect(new Uint8Array(await readFile(path))).toEqual(blob);
    expect(mode(await stat(path))).toBe(0o644);
    expect(await tempFilesIn(join(path, '..'))).toEqual([]);
  });

  it('follows the rules of insertChunk and removes the temporary file of a copy that is not kept', async () => {
    const small = blobOf('zstd', 10_000);
    const big = blobOf('plain', 10_000);
    const digest = newDigest();
    const dir = join(store.chunkPath(digest), '..');
    await store.insertChunk(small, digest);
    await agePath(store.chunkPath(digest));
    // The same size: a duplicate, touched; the bigger copy: the stored one stays.
    for (const blob of [small, big]) {
      const file = written(digest, blob);
      expect(await store.insertChunkFile(file, blobKindOf(blob)!, digest)).toEqual({
        duplicate: true,
        encodedSize: small.byteLength,
      });
      expect(existsSync(file.temp)).toBe(false);
    }
    expect((await stat(store.chunkPath(digest))).atimeMs).toBeGreaterThan(1_000_000_000_000);
    expect(new Uint8Array(await readFile(store.chunkPath(digest)))).toEqual(small);
    // A smaller copy replaces a bigger one.
    const other = newDigest();
    await store.insertChunk(big, other);
    expect(await store.insertChunkFile(written(other, small, 1), 'zstd', other)).toEqual({
      duplicate: false,
      encodedSize: small.byteLength,
    });
    expect(new Uint8Array(await readFile(store.chunkPath(other)))).toEqual(small);
    expect(await tempFilesIn(dir)).toEqual([]);
    expect(await tempFilesIn(join(store.chunkPath(other), '..'))).toEqual([]);
  });

  it('refuses what insertChunk refuses and leaves no temporary file behind', async () => {
    const digest = newDigest();
    await store.insertChunk(blobOf('zstd', 500), digest);
    const conflict = written(digest, blobOf('encrypted', 300), 1);
    await expectCode(store.insertChunkFile(conflict, 'encrypted', digest), 'CHUNK_CONFLICT');
    expect(existsSync(conflict.temp)).toBe(false);

    const linkDigest = newDigest();
    await symlink(join(tmp, 'nowhere'), store.chunkPath(linkDigest));
    const linked = written(linkDigest, blobOf('plain', 10), 1);
    await expectCode(store.insertChunkFile(linked, 'plain', linkDigest), 'DATASTORE_INVALID');
    expect(existsSync(linked.temp)).toBe(false);

    // A temporary file of another chunk is not taken for this one.
    const a = newDigest();
    const b = newDigest();
    const stray = written(a, blobOf('plain', 10), 1);
    await expectCode(
      store.insertChunkFile(stray, 'plain', b),
      'INVALID_ARGUMENT',
      /not a temporary file/,
    );
    expect(existsSync(stray.temp)).toBe(false);
    expect(existsSync(store.chunkPath(b))).toBe(false);
  });

  it('writeChunkTempFileSync reports a missing prefix directory as a damaged store', async () => {
    const digest = parseDigestHex('fffc' + '3'.repeat(60));
    const dir = join(base, '.chunks', 'fffc');
    await rmdir(dir);
    try {
      const path = chunkPathIn(join(base, '.chunks'), digestToHex(digest));
      let error: unknown;
      try {
        writeChunkTempFileSync(path, [blobOf('plain', 10)], undefined);
      } catch (e) {
        error = e;
      }
      expect(isBurrowError(error, 'DATASTORE_INVALID')).toBe(true);
      expect((error as Error).message).toMatch(/prefix directory .*fffc/);
    } finally {
      await mkdir(dir, 0o750);
      await chmod(dir, 0o750);
    }
  });

  it('is offered below sync level file; at file, the temporary file is synced before the rename', async () => {
    expect(store.chunkFileTarget()).toEqual({
      chunkDir: join(base, '.chunks'),
      owner: store.fileOwner,
    });
    const fileLevel = await ChunkStore.open(base, { syncLevel: 'file' });
    expect(fileLevel.chunkFileTarget()).toBeUndefined();
    // A file written anyway still goes in place with the level's fsyncs.
    const digest = newDigest();
    const blob = blobOf('zstd', 2000);
    const path = fileLevel.chunkPath(digest);
    const file = { temp: writeChunkTempFileSync(path, blob, undefined), size: blob.byteLength };
    expect(await fileLevel.insertChunkFile(file, 'zstd', digest)).toEqual({
      duplicate: false,
      encodedSize: blob.byteLength,
    });
    expect(new Uint8Array(await readFile(path))).toEqual(blob);
  });
});

describe('loadChunk', () => {
  it('returns the raw blob bytes', async () => {
    const digest = newDigest();
    const blob = blobOf('zstd-encrypted', 4000);
    await store.insertChunk(blob, digest);
    expect(await store.loadChunk(digest)).toEqual(blob);
  });

  it('fails with NOT_FOUND naming the chunk path', async () => {
    const digest = newDigest();
    const error = await expectCode(store.loadChunk(digest), 'NOT_FOUND');
    expect(error.message).toContain(store.chunkPath(digest));
  });

  it('returns a truncated file as it is, for the decoder to reject', async () => {
    const digest = newDigest();
    const blob = blobOf('plain', 1000);
    await store.insertChunk(blob, digest);
    await truncate(store.chunkPath(digest), 5);
    const raw = await store.loadChunk(digest);
    expect(raw).toEqual(blob.subarray(0, 5));
    expect(() => decodeBlob(raw)).toThrow(expect.objectContaining({ code: 'BLOB_TRUNCATED' }));
  });

  it('refuses a file larger than any encoded chunk', async () => {
    const digest = newDigest();
    await writeFile(store.chunkPath(digest), '');
    await truncate(store.chunkPath(digest), 17 * 1024 * 1024);
    await expectCode(store.loadChunk(digest), 'BLOB_TOO_LARGE');
  });
});

describe('touchChunk (§2.4)', () => {
  it('advances atime and keeps mtime', async () => {
    const digest = newDigest();
    await store.insertChunk(blobOf('plain', 10), digest);
    const path = store.chunkPath(digest);
    await agePath(path);
    const before = await stat(path, { bigint: true });
    expect(await store.touchChunk(digest)).toBe(true);
    const after = await stat(path, { bigint: true });
    expect(after.atimeNs).toBeGreaterThan(before.atimeNs);
    expect(Number(after.atimeNs / 1_000_000n)).toBeGreaterThan(Date.now() - 60_000);
    expect(after.mtimeNs).toBe(before.mtimeNs);
  });

  it('returns false for a missing chunk', async () => {
    expect(await store.touchChunk(newDigest())).toBe(false);
  });
});

describe('touchIfStored and storedChunkSize (a local backup referencing what the store holds)', () => {
  it('finds a chunk of the same family, touches it for GC and gives its file size', async () => {
    for (const blocking of [false, true]) {
      const s = await ChunkStore.open(base, { syncLevel: 'none', blockingWrites: blocking });
      for (const kind of ['plain', 'zstd', 'encrypted', 'zstd-encrypted'] as const) {
        const digest = newDigest();
        const blob = blobOf(kind, 1000);
        await s.insertChunk(blob, digest);
        const path = s.chunkPath(digest);
        const encrypted = kind === 'encrypted' || kind === 'zstd-encrypted';
        // The other family is not a match (insertChunk refuses or decides). Its read of the
        // magic may move the atime (relatime: it was not after the ctime); a second read within
        // the day does not, so from here on only a touch moves it.
        expect(await s.touchIfStored(digest, !encrypted)).toBeUndefined();
        await sleep(20);
        const before = await stat(path, { bigint: true });
        // storedChunkSize asks the same question and changes nothing.
        expect(await s.storedChunkSize(digest, !encrypted)).toBeUndefined();
        expect(await s.storedChunkSize(digest, encrypted)).toBe(blob.byteLength);
        expect((await stat(path, { bigint: true })).atimeNs).toBe(before.atimeNs);
        expect(await s.touchIfStored(digest, encrypted)).toBe(blob.byteLength);
        const after = await stat(path, { bigint: true });
        expect(after.atimeNs).toBeGreaterThan(before.atimeNs);
        expect(after.mtimeNs).toBe(before.mtimeNs);
      }
    }
  });

  it('leaves absent, empty, short, foreign and non-file entries to insertChunk', async () => {
    const absent = newDigest();
    expect(await store.touchIfStored(absent, false)).toBeUndefined();
    expect(existsSync(store.chunkPath(absent))).toBe(false);

    const empty = newDigest();
    await writeFile(store.chunkPath(empty), '');
    const short = newDigest();
    await writeFile(store.chunkPath(short), 'abc');
    const foreign = newDigest();
    await writeFile(store.chunkPath(foreign), 'not a blob, but long enough');
    const dir = newDigest();
    await mkdir(store.chunkPath(dir));
    const linked = newDigest();
    const target = newDigest();
    await store.insertChunk(blobOf('plain', 10), target);
    await symlink(store.chunkPath(target), store.chunkPath(linked));
    for (const digest of [empty, short, foreign, dir, linked]) {
      expect(await store.touchIfStored(digest, false), digestToHex(digest)).toBeUndefined();
      expect(await store.storedChunkSize(digest, false), digestToHex(digest)).toBeUndefined();
    }
    // An insert then applies its own rules: the empty file is replaced by the chunk.
    const blob = blobOf('plain', 10);
    expect(await store.insertChunk(blob, empty)).toEqual({
      duplicate: false,
      encodedSize: blob.byteLength,
    });
  });
});

describe('chunkIterator (§2.5)', () => {
  const hexA = '0000' + 'a'.repeat(60);
  const hexB = '0000' + 'b'.repeat(60);
  const hexMid = '1234' + 'c'.repeat(60);
  const hexLast = 'ffff' + 'd'.repeat(60);

  it('lists chunk files in prefix order with the name filter and bad flags', async () => {
    const dir = await miniStore('iter', ['0000', '1234', 'ffff']);
    const chunkDir = join(dir, '.chunks');
    const files: Record<string, string[]> = {
      '0000': [
        hexA,
        `${hexA}.0.bad`,
        `${hexA}.9.bad`,
        hexB.toUpperCase(), // either case is accepted
        `${hexA}.tmp_abcdef`, // temp file: 75 characters
        hexA.slice(0, 63),
        `${hexA}0`,
        'g' + hexA.slice(1),
        `${hexA}.12.bad`, // 71 characters
        'README',
      ],
      '1234': [hexMid, `${hexMid}.xyza`], // 69 characters: skipped
      ffff: [hexLast, `${hexLast}.other`], // 70 characters, not .bad: yielded as PBS does
    };
    for (const [prefix, names] of Object.entries(files)) {
      for (const name of names) await writeFile(join(chunkDir, prefix, name), '');
    }
    const chunks = await ChunkStore.open(dir);
    const progress: number[] = [];
    const entries: ChunkEntry[] = [];
    for await (const entry of chunks.chunkIterator((p) => progress.push(p))) entries.push(entry);

    const prefixes = entries.map((e) => e.name.slice(0, 4).toLowerCase());
    expect(prefixes).toEqual([...prefixes].sort());
    const byName = (e: ChunkEntry[]) => e.map((x) => x.name).sort();
    expect(byName(entries)).toEqual(
      [
        hexA,
        `${hexA}.0.bad`,
        `${hexA}.9.bad`,
        hexB.toUpperCase(),
        hexMid,
        hexLast,
        `${hexLast}.other`,
      ].sort(),
    );
    for (const entry of entries) {
      expect(entry.bad).toBe(entry.name.endsWith('.bad'));
      expect(entry.digestHex).toBe(entry.name.slice(0, 64).toLowerCase());
      expect(entry.path).toBe(join(chunkDir, entry.name.slice(0, 4).toLowerCase(), entry.name));
    }
    expect(progress).toEqual(Array.from({ length: 99 }, (_, i) => i + 1));
  });

  it('ends with a typed error when a prefix entry is not a directory', async () => {
    const dir = await miniStore('iter-bad', ['0000', 'ffff']);
    await writeFile(join(dir, '.chunks', '0000', hexA), '');
    await writeFile(join(dir, '.chunks', '0005'), 'not a dir');
    const chunks = await ChunkStore.open(dir);
    const seen: string[] = [];
    const iterate = async () => {
      for await (const entry of chunks.chunkIterator()) seen.push(entry.name);
    };
    await expectCode(iterate(), 'DATASTORE_INVALID', /0005 is not a directory/);
    expect(seen).toEqual([hexA]);
  });

  it('fails when .chunks disappears', async () => {
    const dir = await miniStore('iter-gone');
    const chunks = await ChunkStore.open(dir);
    await rm(join(dir, '.chunks'), { recursive: true });
    const iterate = async () => {
      for await (const entry of chunks.chunkIterator()) expect(entry).toBeUndefined();
    };
    await expectCode(iterate(), 'DATASTORE_INVALID', /does not exist/);
  });

  it('can be abandoned early', async () => {
    let count = 0;
    for await (const entry of store.chunkIterator()) {
      expect(entry.digestHex).toMatch(/^[0-9a-f]{64}$/);
      if (++count === 3) break;
    }
    expect(count).toBe(3);
  });

  it('name filter', () => {
    expect(isChunkFileName('a'.repeat(64))).toBe(true);
    expect(isChunkFileName('A'.repeat(64) + '.3.bad')).toBe(true);
    expect(isChunkFileName('a'.repeat(64) + '.tmp_abcdef')).toBe(false);
    expect(isChunkFileName('a'.repeat(63))).toBe(false);
    expect(isChunkFileName('z'.repeat(64))).toBe(false);
  });
});

describe('renameCorruptChunk (§2.7)', () => {
  it('uses .0.bad to .8.bad in turn, then overwrites .9.bad', async () => {
    const digest = newDigest();
    const path = store.chunkPath(digest);
    const copies: Uint8Array[] = [];
    for (let n = 0; n < 11; n++) {
      const blob = blobOf('plain', 20 + n);
      copies.push(blob);
      await writeFile(path, blob);
      expect(await store.renameCorruptChunk(digest)).toBe(`${path}.${Math.min(n, 9)}.bad`);
      await expect(lstat(path)).rejects.toThrow(/ENOENT/);
    }
    for (let n = 0; n < 9; n++) {
      expect(new Uint8Array(await readFile(`${path}.${n}.bad`))).toEqual(copies[n]);
    }
    expect(new Uint8Array(await readFile(`${path}.9.bad`))).toEqual(copies[10]);
  });

  it('takes the smallest free number', async () => {
    const digest = newDigest();
    const path = store.chunkPath(digest);
    await writeFile(`${path}.0.bad`, '');
    await writeFile(`${path}.2.bad`, '');
    await writeFile(path, 'x');
    expect(await store.renameCorruptChunk(digest)).toBe(`${path}.1.bad`);
  });

  it('ignores a missing chunk and refuses a directory', async () => {
    expect(await store.renameCorruptChunk(newDigest())).toBeUndefined();
    const digest = newDigest();
    await mkdir(store.chunkPath(digest));
    await expectCode(store.renameCorruptChunk(digest), 'DATASTORE_INVALID');
  });
});

describe('statChunkFile', () => {
  it('reports whole atime seconds, size and type without following symlinks', async () => {
    const digest = newDigest();
    const blob = blobOf('plain', 77);
    await store.insertChunk(blob, digest);
    const path = store.chunkPath(digest);
    await utimes(path, 1_600_000_000.999, 1_500_000_000);
    expect(await store.statChunkFile(path)).toEqual({
      atimeSeconds: 1_600_000_000,
      size: blob.byteLength,
      isFile: true,
    });
    expect(await store.statChunkFile(`${path}.missing`)).toBeUndefined();
    const link = `${path}.link`;
    await symlink(path, link);
    expect((await store.statChunkFile(link))?.isFile).toBe(false);
    expect((await store.statChunkFile(join(base, '.chunks', '0000')))?.isFile).toBe(false);
  });
});

describe('process lock (§2.6)', () => {
  it('records the oldest writer from the clock', () => {
    expect(store.oldestWriter()).toBeUndefined();
    const first = store.tryShared();
    clock.advance(100);
    const second = store.tryShared();
    expect(store.oldestWriter()).toBe(CLOCK_START);
    first.release();
    expect(store.oldestWriter()).toBe(CLOCK_START + 100);
    // GC in the same process is not blocked by this process's own writers.
    const gc = store.tryExclusive();
    gc.release();
    second.release();
    expect(store.oldestWriter()).toBeUndefined();
  });

  it('refuses GC while another process has a writer on the store', async () => {
    const holder = await LockHolder.start();
    try {
      const answer = await holder.send(`shared ${join(base, '.lock')}`);
      expect(answer).toMatch(/^ok /);
      expect(() => store.tryExclusive()).toThrow(expect.objectContaining({ code: 'LOCKED' }));
      await holder.send(`release ${answer.split(' ')[1]}`);
      store.tryExclusive().release();
    } finally {
      await holder.stop();
    }
  }, 30_000);
});

describe('sync levels', () => {
  for (const syncLevel of ['none', 'file', 'filesystem'] as const) {
    it(`stores correct chunks with sync-level ${syncLevel}`, async () => {
      const synced = await ChunkStore.open(base, { syncLevel });
      expect(synced.syncLevel).toBe(syncLevel);
      const chunks = Array.from({ length: 5 }, () => ({
        digest: newDigest(),
        blob: blobOf('zstd', 3000),
      }));
      for (const c of chunks) {
        expect((await synced.insertChunk(c.blob, c.digest)).duplicate).toBe(false);
      }
      await synced.syncFilesystem();
      for (const c of chunks) {
        expect(await synced.loadChunk(c.digest)).toEqual(c.blob);
        expect(await tempFilesIn(join(synced.chunkPath(c.digest), '..'))).toEqual([]);
      }
    });
  }

  it('defaults to filesystem', async () => {
    expect((await ChunkStore.open(base)).syncLevel).toBe('filesystem');
  });

  it('starts a syncfs in the background every EARLY_SYNC_BYTES; its failure is not lost', async () => {
    const calls: string[] = [];
    let fail = false;
    const synced = await ChunkStore.open(base, {
      syncLevel: 'filesystem',
      syncfs: async () => {
        calls.push(fail ? 'failed' : 'ok');
        await new Promise((resolve) => setImmediate(resolve));
        if (fail) throw new Error('EIO: a writeback error');
      },
    });
    // 4 MiB blobs of random data: eight of them make one EARLY_SYNC_BYTES.
    const insert = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++)
        await synced.insertChunk(blobOf('plain', EARLY_SYNC_BYTES / 8 - 64), newDigest());
    };
    await insert(7);
    expect(calls).toEqual([]);
    await insert(2);
    await vi.waitFor(() => expect(calls).toEqual(['ok'])); // started without anyone asking
    await synced.syncFilesystem();
    expect(calls).toEqual(['ok', 'ok']);

    fail = true;
    await insert(9);
    await vi.waitFor(() => expect(calls).toEqual(['ok', 'ok', 'failed']));
    fail = false;
    await expect(synced.syncFilesystem()).rejects.toThrow(/a writeback error/);
    expect(calls.length).toBe(3); // reported, not hidden behind a fresh syncfs
    await synced.syncFilesystem();
    expect(calls).toEqual(['ok', 'ok', 'failed', 'ok']);
  });
});

describe('atime safety check (§7.6)', () => {
  const zeroPath = () => store.chunkPath(parseDigestHex(ZERO_CHUNK_DIGEST_HEX));

  it('uses the digest of 4 MiB of zeros', () => {
    const digest = createHash('sha256')
      .update(new Uint8Array(4 * 1024 * 1024))
      .digest('hex');
    expect(digest).toBe(ZERO_CHUNK_DIGEST_HEX);
  });

  it('passes on this filesystem (real one-second pause)', async () => {
    await store.atimeSafetyCheck();
    const raw = await readFile(zeroPath());
    expect(blobKindOf(raw)).toBe('zstd');
    // decodeBlob checks the digest, so this proves the stored chunk is 4 MiB of zeros.
    const data = decodeBlob(raw, { expectedDigest: parseDigestHex(ZERO_CHUNK_DIGEST_HEX) });
    expect(data.byteLength).toBe(4 * 1024 * 1024);
  }, 10_000);

  it('fails when the atime does not advance', async () => {
    // Standing in for a filesystem that drops atime updates: during the pause the atime is moved
    // an hour ahead, so the touch ("now") cannot advance it.
    const future = Date.now() / 1000 + 3600;
    await expectCode(
      store.atimeSafetyCheck({ sleep: () => utimes(zeroPath(), future, future) }),
      'GC_ATIME_CHECK_FAILED',
      /newly inserted|pre-existing/,
    );
  });

  it('retries once when the chunk is replaced during the check, then gives up', async () => {
    let calls = 0;
    await store.atimeSafetyCheck({
      sleep: async () => {
        if (++calls === 1) await unlink(zeroPath());
        else await new Promise((r) => setTimeout(r, 20));
      },
    });
    expect(calls).toBe(2);

    calls = 0;
    await expectCode(
      store.atimeSafetyCheck({
        sleep: async () => {
          calls++;
          await unlink(zeroPath());
        },
      }),
      'GC_ATIME_CHECK_FAILED',
      /changed twice/,
    );
    expect(calls).toBe(2);
  });
});
