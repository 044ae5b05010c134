import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CryptConfig } from '../crypto/crypt-config.js';
import { encodeBlob } from '../format/data-blob.js';
import type { BackupManifest } from '../format/manifest.js';
import { isBurrowError, type BurrowError } from '../lib/errors.js';
import { backupDir, backupGroup, ROOT_NAMESPACE } from '../types/backup.js';
import { makeStore, type StoreFixture } from '../../test/helpers/store-fixture.js';
import {
  SnapshotBuilder,
  countingReader,
  openReader,
  type StoredStream,
} from '../../test/helpers/snapshot-builder.js';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import type { BackupReader } from './backup-writer.js';
import {
  DEFAULT_PREFETCH,
  REMOTE_PREFETCH,
  openArchiveReader,
  workerChunkFileDecoder,
} from './chunk-reader.js';
import { ChunkWorkerPool } from './worker-pool.js';

const group = backupGroup(ROOT_NAMESPACE, 'host', 'reader');
const PLAIN_TIME = 1_700_000_000;
const CRYPT_TIME = 1_700_000_100;

/** Deterministic bytes with some structure, so zstd has something (but not everything) to do. */
function patterned(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = i % 7 === 0 ? 0 : x & 0xff;
  }
  return out;
}

let fixture: StoreFixture;
let manifest: BackupManifest;
let stream: StoredStream;
let cryptManifest: BackupManifest;
let cryptStream: StoredStream;
const key = new CryptConfig(new Uint8Array(32).fill(7));
const imageBytes = new Uint8Array(5 * 65536 + 1000);

beforeAll(async () => {
  fixture = await makeStore();
  const b = await SnapshotBuilder.start(fixture.store, backupDir(group, PLAIN_TIME));
  stream = await b.addStream('data.pxar.didx', patterned(700_000, 1), 64 * 1024);
  imageBytes.set(patterned(65536, 2), 65536);
  imageBytes.set(patterned(1000, 3), 5 * 65536);
  await b.addImage('disk.img.fidx', imageBytes, 65536);
  manifest = await b.finish();

  const c = await SnapshotBuilder.start(fixture.store, backupDir(group, CRYPT_TIME), {
    crypt: key,
  });
  cryptStream = await c.addStream('data.pxar.didx', patterned(300_000, 4), 64 * 1024);
  cryptManifest = await c.finish();
}, 60_000);

afterAll(async () => {
  await fixture.cleanup();
});

async function withReader<T>(time: number, fn: (reader: BackupReader) => Promise<T>): Promise<T> {
  const reader = await openReader(fixture.store, backupDir(group, time));
  try {
    return await fn(reader);
  } finally {
    await reader.close();
  }
}

async function collect(iterable: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const part of iterable) parts.push(Uint8Array.from(part));
  return new Uint8Array(Buffer.concat(parts));
}

async function failure(promise: Promise<unknown>): Promise<BurrowError> {
  try {
    await promise;
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw error;
  }
  throw new Error('expected a failure');
}

function chunkFile(digest: Uint8Array): string {
  return fixture.store.chunkStore.chunkPath(digest);
}

describe('openArchiveReader on a dynamic index', () => {
  it('has several chunks and the manifest size', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx');
      expect(archive.size).toBe(700_000);
      expect(archive.kind).toBe('dynamic');
      expect(archive.chunkCount).toBe(stream.chunks.length);
      expect(stream.chunks.length).toBeGreaterThan(3);
    });
  });

  it('streams the original bytes, whole and in ranges', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      const archive = await openArchiveReader(reader, manifest, 'data.pxar');
      expect(Buffer.compare(await collect(archive.stream()), stream.bytes)).toBe(0);
      const range = await collect(archive.stream({ start: 100_001, end: 450_123 }));
      expect(Buffer.compare(range, stream.bytes.subarray(100_001, 450_123))).toBe(0);
      expect((await collect(archive.stream({ start: 5, end: 5 }))).byteLength).toBe(0);
    });
  });

  it('reads any range like a byte array (short only at the end)', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, {
        cacheBytes: 3 * 65536,
      });
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 720_000 }),
          fc.integer({ min: 0, max: 300_000 }),
          async (offset, length) => {
            const got = await archive.readAt(offset, length);
            const want = stream.bytes.subarray(
              Math.min(offset, 700_000),
              Math.min(offset + length, 700_000),
            );
            expect(Buffer.compare(got, want)).toBe(0);
          },
        ),
        { numRuns: 60 },
      );
    });
  });

  it('reads pieces that end at the end of their chunk, without copying', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx');
      const ends = new Set(stream.chunks.map((c) => c.end));
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 699_999 }),
          fc.integer({ min: 1, max: 300_000 }),
          async (offset, maxLength) => {
            const piece = await archive.readPiece(offset, maxLength);
            expect(piece.byteLength).toBeGreaterThan(0);
            expect(piece.byteLength).toBeLessThanOrEqual(maxLength);
            const end = offset + piece.byteLength;
            // Short of maxLength only at a chunk end (the archive's end is one).
            if (piece.byteLength < maxLength) expect(ends.has(end)).toBe(true);
            expect(Buffer.compare(piece, stream.bytes.subarray(offset, end))).toBe(0);
          },
        ),
        { numRuns: 60 },
      );
      // Pieces one after another give the archive.
      const pieces: Uint8Array[] = [];
      for (let at = 0; at < archive.size;) {
        const piece = await archive.readPiece(at, 1 << 20);
        pieces.push(piece);
        at += piece.byteLength;
      }
      expect(pieces).toHaveLength(stream.chunks.length);
      expect(Buffer.compare(Buffer.concat(pieces), stream.bytes)).toBe(0);
      expect((await archive.readPiece(700_000, 10)).byteLength).toBe(0);
      expect((await archive.readPiece(5, 0)).byteLength).toBe(0);
    });
  });

  it('caches decoded chunks: a second read of the same chunk fetches nothing', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      const reader = countingReader(inner);
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, {
        prefetch: 0,
      });
      const first = stream.chunks[2]!;
      await archive.readAt(first.start + 10, 100);
      expect(reader.chunkFetches).toHaveLength(1);
      await archive.readAt(first.start + 500, 100);
      expect(reader.chunkFetches).toHaveLength(1);
    });
  });

  it('keeps the cache bounded', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      const reader = countingReader(inner);
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, {
        prefetch: 0,
        cacheBytes: 1,
      });
      const [a, b] = [stream.chunks[0]!, stream.chunks[1]!];
      await archive.readAt(a.start, 1);
      await archive.readAt(b.start, 1);
      await archive.readAt(a.start, 1);
      expect(reader.chunkFetches).toHaveLength(3);
    });
  });

  it('reads ahead when reads move forwards', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      const reader = countingReader(inner);
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, {
        prefetch: 2,
      });
      await archive.readAt(stream.chunks[0]!.start, 10);
      await archive.readAt(stream.chunks[1]!.start, 10);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const hex = (i: number): string => Buffer.from(stream.chunks[i]!.digest).toString('hex');
      expect(reader.chunkFetches).toEqual(expect.arrayContaining([hex(2), hex(3)]));
      const before = reader.chunkFetches.length;
      await archive.readAt(stream.chunks[2]!.start, 10);
      await archive.readAt(stream.chunks[3]!.start, 10);
      // Chunks 2 and 3 came from the read-ahead; only new read-ahead may have been started.
      expect(reader.chunkFetches.slice(before)).not.toContain(hex(2));
    });
  });
});

describe('read-ahead', () => {
  it('fetches each chunk once when small reads walk the archive, even with a small cache', async () => {
    for (const cacheBytes of [1, 3 * 65536, 64 * 1024 * 1024]) {
      await withReader(PLAIN_TIME, async (inner) => {
        const reader = countingReader(inner);
        const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, {
          cacheBytes,
          prefetch: 4,
        });
        const parts: Uint8Array[] = [];
        for (let at = 0; at < archive.size; at += 5000) {
          parts.push(Uint8Array.from(await archive.readAt(at, 5000)));
        }
        expect(Buffer.compare(Buffer.concat(parts), stream.bytes)).toBe(0);
        expect(reader.chunkFetches).toHaveLength(stream.chunks.length);
        expect(new Set(reader.chunkFetches).size).toBe(stream.chunks.length);
      });
    }
  });
});

describe('sequential read-ahead', () => {
  /** Chunk fetches under way once the first chunk of a sequential walk has been handed out. */
  async function fetchesAfterFirst(
    reader: BackupReader & { chunkFetches: string[] },
    options: { prefetch?: number; prefetchBytes?: number } = {},
  ): Promise<string[]> {
    const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, options);
    const walk = archive.chunks()[Symbol.asyncIterator]();
    await walk.next();
    const fetched = [...reader.chunkFetches];
    await walk.return?.(undefined);
    return fetched;
  }

  it('fetches further ahead from a reader without chunk files (a server) than from a local one', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      expect(typeof inner.chunkFile).toBe('function');
      const n = stream.chunks.length;
      expect(n).toBeGreaterThan(DEFAULT_PREFETCH + 2);
      // The window, plus the one chunk refilled after the first was taken.
      const local = countingReader(inner);
      const localFetches = await fetchesAfterFirst({
        ...local,
        chunkFile: (d) => inner.chunkFile!(d),
      });
      expect(localFetches).toHaveLength(Math.min(n, DEFAULT_PREFETCH + 2));
      const remoteFetches = await fetchesAfterFirst(countingReader(inner));
      expect(remoteFetches).toHaveLength(Math.min(n, REMOTE_PREFETCH + 2));
      expect(remoteFetches.length).toBeGreaterThan(localFetches.length);
    });
  });

  it('keeps the bytes under way within prefetchBytes, however many chunks it may fetch', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      const budget = 3 * 65536;
      const fetched = await fetchesAfterFirst(countingReader(inner), {
        prefetch: 50,
        prefetchBytes: budget,
      });
      const sizeOf = new Map(
        stream.chunks.map((c) => [Buffer.from(c.digest).toString('hex'), c.end - c.start]),
      );
      expect(fetched.length).toBeGreaterThan(2);
      expect(fetched.length).toBeLessThan(stream.chunks.length);
      // Beside the chunk handed out, every fetch but the last began below the budget.
      const beside = fetched.slice(1, -1).reduce((sum, hex) => sum + sizeOf.get(hex)!, 0);
      expect(beside).toBeLessThan(budget);
      expect(beside + sizeOf.get(fetched.at(-1)!)!).toBeGreaterThanOrEqual(budget);
    });
  });

  it('refuses a bad prefetchBytes', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      await expect(
        openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, { prefetchBytes: -1 }),
      ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    });
  });
});

describe('openArchiveReader on a fixed index', () => {
  it('maps offsets to fixed slots and reads across them', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      const archive = await openArchiveReader(reader, manifest, 'disk.img');
      expect(archive.kind).toBe('fixed');
      expect(archive.chunkSize).toBe(65536);
      expect(archive.chunkCount).toBe(6);
      const got = await archive.readAt(65536 - 10, 65536 + 20);
      expect(Buffer.compare(got, imageBytes.subarray(65536 - 10, 2 * 65536 + 10))).toBe(0);
      const tail = await archive.readAt(5 * 65536 + 900, 5000);
      expect(Buffer.compare(tail, imageBytes.subarray(5 * 65536 + 900))).toBe(0);
    });
  });

  it('knows zero chunks by digest and does not fetch them when asked to skip', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      const reader = countingReader(inner);
      const archive = await openArchiveReader(reader, manifest, 'disk.img.fidx');
      expect([0, 1, 2, 3, 4, 5].map((p) => archive.isZeroChunk(p))).toEqual([
        true,
        false,
        true,
        true,
        true,
        false,
      ]);
      const seen: Array<[number, boolean]> = [];
      for await (const chunk of archive.chunks({ skipZero: true })) {
        seen.push([chunk.position, chunk.data !== undefined]);
      }
      expect(seen).toEqual([
        [0, false],
        [1, true],
        [2, false],
        [3, false],
        [4, false],
        [5, true],
      ]);
      expect(reader.chunkFetches).toHaveLength(2);
      expect(Buffer.compare(await collect(archive.stream()), imageBytes)).toBe(0);
    });
  });
});

describe('checks against the manifest and the digests', () => {
  it('refuses an index whose csum or size the manifest does not state', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      const wrongCsum: BackupManifest = {
        ...manifest,
        files: manifest.files.map((f) =>
          f.filename === 'data.pxar.didx' ? { ...f, csum: '00'.repeat(32) } : f,
        ),
      };
      const err = await failure(openArchiveReader(reader, wrongCsum, 'data.pxar.didx'));
      expect(err.code).toBe('DIGEST_MISMATCH');
      expect(err.message).toContain('host/reader/2023-11-14T22:13:20Z');
      expect(err.message).toContain('data.pxar.didx');
      const wrongSize: BackupManifest = {
        ...manifest,
        files: manifest.files.map((f) =>
          f.filename === 'disk.img.fidx' ? { ...f, size: f.size + 1 } : f,
        ),
      };
      expect(await rejectionCodeOf(openArchiveReader(reader, wrongSize, 'disk.img'))).toBe(
        'SIZE_MISMATCH',
      );
    });
  });

  it('refuses an index changed on disk even though its own header csum was updated', async () => {
    const b = await SnapshotBuilder.start(fixture.store, backupDir(group, PLAIN_TIME + 1));
    await b.addStream('x.pxar.didx', patterned(200_000, 9), 64 * 1024);
    const m = await b.finish();
    const path = fixture.store.archivePath(backupDir(group, PLAIN_TIME + 1), 'x.pxar.didx');
    const raw = new Uint8Array(readFileSync(path));
    // Swap the first digest for another and fix the header csum, as a forger would.
    raw.set(randomBytes(32), 4096 + 8);
    raw.set(createHash('sha256').update(raw.subarray(4096)).digest(), 32);
    writeFileSync(path, raw);
    await withReader(PLAIN_TIME + 1, async (reader) => {
      const err = await failure(openArchiveReader(reader, m, 'x.pxar.didx'));
      expect(err.code).toBe('DIGEST_MISMATCH');
    });
  });

  it('names snapshot, archive and byte offset when a chunk file is damaged', async () => {
    const b = await SnapshotBuilder.start(fixture.store, backupDir(group, PLAIN_TIME + 2));
    // Incompressible, so the chunks are plain blobs and a flipped byte reaches the digest check.
    const s = await b.addStream('bad.pxar.didx', randomBytes(400_000), 64 * 1024);
    const m = await b.finish();
    const victim = s.chunks[3]!;
    const path = chunkFile(victim.digest);
    const raw = new Uint8Array(readFileSync(path));
    raw[raw.byteLength - 1]! ^= 0x40;
    writeFileSync(path, raw);
    await withReader(PLAIN_TIME + 2, async (reader) => {
      const archive = await openArchiveReader(reader, m, 'bad.pxar.didx');
      const err = await failure(collect(archive.stream()));
      expect(err.code).toBe('DIGEST_MISMATCH');
      expect(err.message).toContain('host/reader/2023-11-14T22:13:22Z');
      expect(err.message).toContain('bad.pxar.didx');
      expect(err.message).toContain(`byte offset ${victim.start}`);
      expect(err.details).toMatchObject({
        archive: 'bad.pxar.didx',
        offset: victim.start,
        chunk: 3,
        digest: Buffer.from(victim.digest).toString('hex'),
      });
      // Random access to the same place fails the same way; elsewhere it still works.
      expect(await rejectionCodeOf(archive.readAt(victim.start + 5, 1))).toBe('DIGEST_MISMATCH');
      const ok = await archive.readAt(s.chunks[1]!.start, 10);
      expect(
        Buffer.compare(ok, s.bytes.subarray(s.chunks[1]!.start, s.chunks[1]!.start + 10)),
      ).toBe(0);
    });
  });

  it('stops at a damaged compressed chunk with a typed error naming the offset', async () => {
    const b = await SnapshotBuilder.start(fixture.store, backupDir(group, PLAIN_TIME + 4));
    const s = await b.addStream('z.pxar.didx', patterned(300_000, 21), 64 * 1024);
    const m = await b.finish();
    const victim = s.chunks[1]!;
    const path = chunkFile(victim.digest);
    const raw = new Uint8Array(readFileSync(path));
    expect(Buffer.from(raw.subarray(0, 8)).toString('hex')).toBe('31b958426fb6a37f');
    raw[raw.byteLength >> 1]! ^= 0x10;
    writeFileSync(path, raw);
    await withReader(PLAIN_TIME + 4, async (reader) => {
      const archive = await openArchiveReader(reader, m, 'z.pxar.didx');
      const err = await failure(collect(archive.stream()));
      expect(['DIGEST_MISMATCH', 'BLOB_DECOMPRESS_FAILED', 'SIZE_MISMATCH']).toContain(err.code);
      expect(err.details['offset']).toBe(victim.start);
      expect(err.message).toContain(`z.pxar.didx: chunk 1`);
    });
  });

  it('detects a chunk whose blob is valid but holds other data (DIGEST_MISMATCH)', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      const victim = Buffer.from(stream.chunks[1]!.digest).toString('hex');
      const reader = countingReader(inner, (hex, raw) =>
        hex === victim
          ? encodeBlob(new Uint8Array(stream.chunks[1]!.end - stream.chunks[1]!.start))
          : raw,
      );
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx');
      const err = await failure(archive.readAt(stream.chunks[1]!.start, 1));
      expect(err.code).toBe('DIGEST_MISMATCH');
      expect(err.details['offset']).toBe(stream.chunks[1]!.start);
    });
  });

  it('reports a missing chunk as NOT_FOUND at its offset', async () => {
    const b = await SnapshotBuilder.start(fixture.store, backupDir(group, PLAIN_TIME + 3));
    const s = await b.addStream('gone.pxar.didx', patterned(300_000, 13), 64 * 1024);
    const m = await b.finish();
    unlinkSync(chunkFile(s.chunks[2]!.digest));
    await withReader(PLAIN_TIME + 3, async (reader) => {
      const archive = await openArchiveReader(reader, m, 'gone.pxar.didx');
      const err = await failure(collect(archive.stream()));
      expect(err.code).toBe('NOT_FOUND');
      expect(err.details['offset']).toBe(s.chunks[2]!.start);
      expect(err.message).toContain('gone.pxar.didx');
    });
  });
});

describe('chunk files read and decoded on worker threads (decodeFile)', () => {
  let pool: ChunkWorkerPool;
  beforeAll(() => {
    pool = ChunkWorkerPool.create(2);
  });
  afterAll(async () => {
    await pool.close();
  });

  it('gives the same bytes without fetching chunks through this thread', async () => {
    await withReader(PLAIN_TIME, async (inner) => {
      const files: string[] = [];
      const reader = {
        ...countingReader(inner),
        chunkFile: (digest: Uint8Array): string => {
          const path = inner.chunkFile!(digest);
          files.push(path);
          return path;
        },
      };
      const archive = await openArchiveReader(reader, manifest, 'data.pxar.didx', undefined, {
        decodeFile: workerChunkFileDecoder(pool),
      });
      expect(Buffer.compare(await collect(archive.stream()), stream.bytes)).toBe(0);
      expect(reader.chunkFetches).toEqual([]);
      expect(files).toHaveLength(stream.chunks.length);
      // A reader that cannot name files (a remote one) is read as before.
      const remoteLike = countingReader(inner);
      const plain = await openArchiveReader(remoteLike, manifest, 'data.pxar.didx', undefined, {
        decodeFile: workerChunkFileDecoder(pool),
      });
      expect(Buffer.compare(await collect(plain.stream()), stream.bytes)).toBe(0);
      expect(remoteLike.chunkFetches).toHaveLength(stream.chunks.length);
    });
  });

  it('decrypts with the key', async () => {
    await withReader(CRYPT_TIME, async (reader) => {
      const archive = await openArchiveReader(reader, cryptManifest, 'data.pxar.didx', key, {
        decodeFile: workerChunkFileDecoder(pool),
      });
      expect(Buffer.compare(await collect(archive.stream()), cryptStream.bytes)).toBe(0);
    });
  });

  it('names snapshot, archive and offset for a damaged or missing chunk file', async () => {
    const b = await SnapshotBuilder.start(fixture.store, backupDir(group, PLAIN_TIME + 5));
    const s = await b.addStream('w.pxar.didx', randomBytes(400_000), 64 * 1024);
    const m = await b.finish();
    const damaged = s.chunks[2]!;
    const raw = new Uint8Array(readFileSync(chunkFile(damaged.digest)));
    raw[raw.byteLength - 1]! ^= 0x40;
    writeFileSync(chunkFile(damaged.digest), raw);
    const missing = s.chunks[4]!;
    unlinkSync(chunkFile(missing.digest));
    await withReader(PLAIN_TIME + 5, async (reader) => {
      const archive = await openArchiveReader(reader, m, 'w.pxar.didx', undefined, {
        decodeFile: workerChunkFileDecoder(pool),
      });
      const bad = await failure(archive.readAt(damaged.start, 1));
      expect(bad.code).toBe('DIGEST_MISMATCH');
      expect(bad.message).toContain('w.pxar.didx');
      expect(bad.details['offset']).toBe(damaged.start);
      const gone = await failure(archive.readAt(missing.start, 1));
      expect(gone.code).toBe('NOT_FOUND');
      expect(gone.details['offset']).toBe(missing.start);
    });
  });
});

describe('encrypted archives', () => {
  it('need the key', async () => {
    await withReader(CRYPT_TIME, async (reader) => {
      const err = await failure(openArchiveReader(reader, cryptManifest, 'data.pxar.didx'));
      expect(err.code).toBe('BLOB_KEY_REQUIRED');
      expect(err.message).toContain('data.pxar.didx');
    });
  });

  it('decrypt with the key and check keyed digests', async () => {
    await withReader(CRYPT_TIME, async (reader) => {
      const archive = await openArchiveReader(reader, cryptManifest, 'data.pxar.didx', key);
      expect(Buffer.compare(await collect(archive.stream()), cryptStream.bytes)).toBe(0);
    });
  });

  it('fail authentication with another key, naming the offset', async () => {
    await withReader(CRYPT_TIME, async (reader) => {
      const other = new CryptConfig(new Uint8Array(32).fill(8));
      const archive = await openArchiveReader(reader, cryptManifest, 'data.pxar.didx', other);
      const err = await failure(archive.readAt(0, 10));
      expect(err.code).toBe('BLOB_DECRYPT_FAILED');
      expect(err.details['offset']).toBe(0);
    });
  });
});

describe('archive names', () => {
  it('refuses blobs and unknown names', async () => {
    await withReader(PLAIN_TIME, async (reader) => {
      expect(await rejectionCodeOf(openArchiveReader(reader, manifest, 'nope.pxar'))).toBe(
        'NOT_FOUND',
      );
      expect(await rejectionCodeOf(openArchiveReader(reader, manifest, 'x.conf'))).toBe(
        'INVALID_ARCHIVE_NAME',
      );
    });
  });
});
