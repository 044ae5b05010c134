import { createCipheriv, createHash, hash } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import { splitIntoChunks } from '../chunker/buzhash.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { blobKindOf, decodeBlob } from '../format/data-blob.js';
import { decodeDynamicIndexHeader, encodeDynamicIndex } from '../format/dynamic-index.js';
import { decodeFixedIndexHeader, encodeFixedIndex } from '../format/fixed-index.js';
import { fromHex, toHex } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import { ROOT_NAMESPACE, backupDir, backupGroup } from '../types/backup.js';
import type { BackupDir } from '../types/backup.js';
import type { BackupWriter, IndexKind } from './backup-writer.js';
import type { UploadOptions } from './chunk-pipeline.js';
import { APPEND_BATCH_SIZE, ChunkWorkerPool, uploadChunks, uploadFixed } from './chunk-pipeline.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const FIXED = 4 * MiB;

// Independent derivations: node:crypto directly, and the spec's vectors (pbs-protocol §11).
const sha256 = (d: Uint8Array): Uint8Array =>
  new Uint8Array(createHash('sha256').update(d).digest());
/** Vector #5: the encryption key and the id key derived from it. */
const SPEC_ENC_KEY = fromHex('28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e');
const SPEC_ID_KEY = fromHex('758495a21c31047f543f46d694700e02d168568bab37bb0ceece947b591f5100');
const keyedSha256 = (d: Uint8Array): Uint8Array =>
  new Uint8Array(createHash('sha256').update(d).update(SPEC_ID_KEY).digest());
/** Vector #8. */
const ZERO_DIGEST_HEX = 'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8';

/** Deterministic pseudo-random bytes (AES-256-CTR keystream of a seed). */
function pseudoRandom(size: number, seed: number): Uint8Array {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]));
}

interface AppendCall {
  digests: string[];
  offsets: number[];
}

/**
 * An in-memory BackupWriter that records every call and checks what a PBS server checks
 * (pbs-protocol §5.3): appended digests must be known to the session, dynamic appends must start
 * at the current end, and the close must match what was appended.
 */
class RecordingWriter implements BackupWriter {
  readonly snapshot: BackupDir = backupDir(backupGroup(ROOT_NAMESPACE, 'host', 'test'), 1);
  readonly log: string[] = [];
  readonly uploads: { digest: string; size: number; encoded: Uint8Array }[] = [];
  readonly appends: AppendCall[] = [];
  readonly entries: { offset: number; digest: string }[] = [];
  readonly serverKnown = new Map<string, number>();
  closed: { chunkCount: number; size: number; csum: string } | undefined;
  end = 0;
  /** Calls made after the pipeline's promise settled: must stay 0. */
  lateCalls = 0;
  settled = false;
  failUploadAt: number | undefined;
  failAppendAt: number | undefined;
  uploadDelayMs = 0;
  onUpload: ((n: number) => void) | undefined;

  register(digest: Uint8Array, size: number, known: Set<string>): void {
    this.serverKnown.set(toHex(digest), size);
    known.add(toHex(digest));
  }

  #call(what: string): void {
    if (this.settled) this.lateCalls++;
    this.log.push(what);
  }

  previousBackupTime(): Promise<number | undefined> {
    return Promise.resolve(undefined);
  }
  downloadPrevious(): Promise<Uint8Array | undefined> {
    return Promise.resolve(undefined);
  }
  createIndex(): Promise<number> {
    return Promise.resolve(1);
  }
  async uploadChunk(
    wid: number,
    _kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encoded: Uint8Array,
  ): Promise<void> {
    this.#call('upload');
    const n = this.uploads.length;
    this.onUpload?.(n);
    if (this.uploadDelayMs > 0) await new Promise((r) => setTimeout(r, this.uploadDelayMs));
    if (n === this.failUploadAt) throw new BurrowError('IO_ERROR', `upload ${n} failed (test)`);
    expect(wid).toBe(7);
    this.uploads.push({ digest: toHex(digest), size, encoded });
    this.serverKnown.set(toHex(digest), size);
  }
  async appendIndex(
    wid: number,
    kind: IndexKind,
    digests: readonly Uint8Array[],
    offsets: readonly number[],
  ): Promise<void> {
    this.#call('append');
    await Promise.resolve();
    if (this.appends.length === this.failAppendAt) {
      throw new BurrowError('IO_ERROR', `append ${this.appends.length} failed (test)`);
    }
    expect(wid).toBe(7);
    expect(digests.length).toBe(offsets.length);
    this.appends.push({ digests: digests.map(toHex), offsets: [...offsets] });
    digests.forEach((d, i) => {
      const hex = toHex(d);
      const size = this.serverKnown.get(hex);
      if (size === undefined)
        throw new BurrowError('BACKUP_SESSION_INVALID', `no such chunk ${hex}`);
      if (kind === 'dynamic' && offsets[i] !== this.end) {
        throw new BurrowError(
          'BACKUP_SESSION_INVALID',
          `got strange chunk offset (${this.end} != ${offsets[i]})`,
        );
      }
      this.end = offsets[i]! + size;
      this.entries.push({ offset: offsets[i]!, digest: hex });
    });
  }
  closeIndex(
    _wid: number,
    _kind: IndexKind,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<void> {
    this.#call('close');
    this.closed = { chunkCount, size, csum: toHex(csum) };
    return Promise.resolve();
  }
  uploadBlob(): Promise<void> {
    return Promise.resolve();
  }
  finish(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

let pool: ChunkWorkerPool;
beforeAll(() => {
  pool = ChunkWorkerPool.create(2);
});
afterAll(async () => {
  await pool.close();
});

function options(writer: RecordingWriter, extra: Partial<UploadOptions> = {}): UploadOptions {
  return { writer, wid: 7, kind: 'dynamic', known: new Set(), pool, ...extra };
}

/** The dynamic index csum of `chunks` built with the format code, independently of the pipeline. */
function expectedDynamicCsum(chunks: Uint8Array[], digest = sha256): string {
  let end = 0;
  const entries = chunks.map((c) => ({ end: (end += c.byteLength), digest: digest(c) }));
  const bytes = encodeDynamicIndex({ uuid: new Uint8Array(16), ctime: 0, entries });
  return toHex(decodeDynamicIndexHeader(bytes).indexCsum);
}

function expectedFixedCsum(chunks: Uint8Array[], digest = sha256): string {
  const size = chunks.reduce((n, c) => n + c.byteLength, 0);
  const bytes = encodeFixedIndex({
    uuid: new Uint8Array(16),
    ctime: 0,
    size,
    chunkSize: FIXED,
    digests: chunks.map(digest),
  });
  return toHex(decodeFixedIndexHeader(bytes).indexCsum);
}

function startOffsets(chunks: Uint8Array[]): number[] {
  let at = 0;
  return chunks.map((c) => {
    const start = at;
    at += c.byteLength;
    return start;
  });
}

/** Byte equality via memcmp: vitest's deep equality walks typed arrays element by element. */
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

async function* asAsync<T>(items: Iterable<T>): AsyncGenerator<T> {
  for (const item of items) {
    await Promise.resolve();
    yield item;
  }
}

describe('uploadChunks (dynamic)', () => {
  it('uploads every new chunk, appends in stream order and closes with the index csum', async () => {
    const data = pseudoRandom(3 * MiB, 1);
    const chunks = [...splitIntoChunks([data], 64 * KiB)];
    expect(chunks.length).toBeGreaterThan(10);
    const writer = new RecordingWriter();
    const progress: number[] = [];
    const result = await uploadChunks(
      asAsync(chunks.map((c) => c.slice())),
      options(writer, { onProgress: (p) => progress.push(p.bytes) }),
    );
    writer.settled = true;

    const csum = expectedDynamicCsum(chunks);
    expect(writer.closed).toEqual({ chunkCount: chunks.length, size: data.byteLength, csum });
    expect(toHex(result.csum)).toBe(csum);
    expect(result).toMatchObject({
      size: data.byteLength,
      chunkCount: chunks.length,
      reusedChunks: 0,
      uploadedChunks: chunks.length,
    });
    expect(result.zeroChunks).toBeUndefined();
    expect(writer.entries).toEqual(
      chunks.map((c, i) => ({ offset: startOffsets(chunks)[i], digest: toHex(sha256(c)) })),
    );
    // New chunks are appended in batches of 64 once uploaded, the rest before close.
    const sizes = writer.appends.map((a) => a.digests.length);
    expect(sizes.slice(0, -1).every((n) => n === APPEND_BATCH_SIZE)).toBe(true);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(chunks.length);
    // The blobs decode to the chunks: zstd only where it is smaller (random data: plain).
    const byDigest = new Map(chunks.map((c) => [toHex(sha256(c)), c]));
    let encodedTotal = 0;
    for (const u of writer.uploads) {
      const chunk = byDigest.get(u.digest)!;
      expect(u.size).toBe(chunk.byteLength);
      expect(blobKindOf(u.encoded)).toBe('plain');
      expect(sameBytes(decodeBlob(u.encoded, { expectedDigest: fromHex(u.digest) }), chunk)).toBe(
        true,
      );
      encodedTotal += u.encoded.byteLength;
    }
    expect(result.uploadedBytes).toBe(encodedTotal);
    expect(progress).toEqual(chunks.map((_, i) => startOffsets(chunks)[i]! + chunks[i]!.length));
    expect(writer.lateCalls).toBe(0);
  });

  it('compresses on the workers at the level given', async () => {
    const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'];
    const text = new TextEncoder().encode(
      Array.from({ length: 60_000 }, (_, i) => words[(i * 7 + (i >> 3)) % words.length]).join(' '),
    );
    const chunks = [...splitIntoChunks([text], 64 * KiB)];
    const uploaded = async (level: number | undefined): Promise<number> => {
      const writer = new RecordingWriter();
      const result = await uploadChunks(
        chunks.map((c) => c.slice()),
        options(writer, level === undefined ? {} : { level }),
      );
      for (const u of writer.uploads) {
        expect(blobKindOf(u.encoded)).toBe('zstd');
        const chunk = chunks.find((c) => toHex(sha256(c)) === u.digest)!;
        expect(sameBytes(decodeBlob(u.encoded), chunk)).toBe(true);
      }
      return result.uploadedBytes;
    };
    const [byDefault, level1, level19] = [
      await uploaded(undefined),
      await uploaded(1),
      await uploaded(19),
    ];
    expect(byDefault).toBe(level1);
    expect(level19).toBeLessThan(level1);
  });

  it('encodes with the digest while chunks are new, and only after the decision while they are known', async () => {
    const chunks = Array.from({ length: 40 }, (_, i) => pseudoRandom(8 * KiB, 900 + i));
    const digestAndEncode = vi.spyOn(pool, 'digestAndEncode');
    const submit = vi.spyOn(pool, 'submit');
    const encodeOnly = vi.spyOn(pool, 'encodeOnly');
    try {
      // Nothing known (a first backup): one round trip per chunk.
      const first = new RecordingWriter();
      await uploadChunks(
        chunks.map((c) => c.slice()),
        options(first),
      );
      expect(digestAndEncode).toHaveBeenCalledTimes(chunks.length);
      expect(submit).not.toHaveBeenCalled();
      expect(first.uploads).toHaveLength(chunks.length);

      // Everything known (an unchanged backup): digests only, nothing compressed.
      digestAndEncode.mockClear();
      const again = new RecordingWriter();
      const known = new Set<string>();
      for (const c of chunks) again.register(sha256(c), c.byteLength, known);
      const result = await uploadChunks(
        chunks.map((c) => c.slice()),
        options(again, { known }),
      );
      expect(submit).toHaveBeenCalledTimes(chunks.length);
      expect(digestAndEncode).not.toHaveBeenCalled();
      expect(again.uploads).toHaveLength(0);
      expect(result.reusedChunks).toBe(chunks.length);

      // Known at first, then a run of new chunks: switches to one round trip after a few.
      submit.mockClear();
      const mixed = [
        ...chunks,
        ...Array.from({ length: 40 }, (_, i) => pseudoRandom(8 * KiB, 990 + i)),
      ];
      const third = new RecordingWriter();
      for (const c of chunks) third.register(sha256(c), c.byteLength, new Set());
      await uploadChunks(
        mixed.map((c) => c.slice()),
        options(third, { known: new Set(known), window: 1 }),
      );
      expect(third.uploads).toHaveLength(40);
      expect(digestAndEncode.mock.calls.length).toBeGreaterThan(30);
      expect(submit.mock.calls.length).toBeLessThan(50);
      expect(encodeOnly).not.toHaveBeenCalled();
    } finally {
      digestAndEncode.mockRestore();
      submit.mockRestore();
      encodeOnly.mockRestore();
    }
  });

  it('matches the spec vector #3: 40 MiB, 4 MiB average, dynamic_close csum', async () => {
    // Input: SHA-256(u64 LE i) for i = 0, 1, ... concatenated, 40 MiB.
    const data = new Uint8Array(40 * MiB);
    const counter = Buffer.alloc(8);
    for (let i = 0; i < data.byteLength / 32; i++) {
      counter.writeUInt32LE(i, 0);
      data.set(hash('sha256', counter, 'buffer'), i * 32);
    }
    const chunks = [...splitIntoChunks([data])];
    const writer = new RecordingWriter();
    const result = await uploadChunks(chunks, options(writer));
    expect(startOffsets(chunks).map((s, i) => s + chunks[i]!.byteLength)).toEqual([
      1073993, 3754750, 4842168, 6026645, 13156102, 15991607, 18142920, 22423374, 28055516,
      30453676, 32170642, 37989796, 41943040,
    ]);
    expect(writer.entries[0]!.digest).toBe(
      '110f5e12f8ac8881309793e210395a19e45ffdada4b983066016968f2b219e57',
    );
    expect(writer.entries.at(-1)!.digest).toBe(
      'ba4c4708cf5b32b9decd2c89267cc7743d2e78331eb14ec47e3ea9fe2b811f18',
    );
    expect(toHex(result.csum)).toBe(
      '08b174c6a270390f1d87e70d6413ae33ee0ec7a6cc050d369946dc529ee157da',
    );
    expect(writer.closed).toEqual({
      chunkCount: 13,
      size: 41943040,
      csum: '08b174c6a270390f1d87e70d6413ae33ee0ec7a6cc050d369946dc529ee157da',
    });
    // The chunks are views of `data`: copied for the workers, never detached.
    expect(chunks.every((c) => c.byteLength > 0)).toBe(true);
    expect(data.byteLength).toBe(40 * MiB);
  });

  it('does not upload known chunks and batches appends of known and uploaded chunks by 64', async () => {
    const chunks = Array.from({ length: 200 }, (_, i) => pseudoRandom(1000 + i, 1000 + i));
    const writer = new RecordingWriter();
    const known = new Set<string>();
    chunks.forEach((c, i) => {
      if (i !== 100 && i !== 150) writer.register(sha256(c), c.byteLength, known);
    });
    const result = await uploadChunks(
      chunks.map((c) => c.slice()),
      options(writer, { known }),
    );
    expect(writer.uploads.map((u) => u.digest)).toEqual(
      [chunks[100]!, chunks[150]!].map((c) => toHex(sha256(c))),
    );
    // 200 entries in stream order: three full batches of 64 and the last 8 before close.
    expect(writer.appends.map((a) => a.digests.length)).toEqual([64, 64, 64, 8]);
    expect(APPEND_BATCH_SIZE).toBe(64);
    expect(writer.entries.map((e) => e.digest)).toEqual(chunks.map((c) => toHex(sha256(c))));
    expect(writer.entries.map((e) => e.offset)).toEqual(startOffsets(chunks));
    expect(result).toMatchObject({ reusedChunks: 198, uploadedChunks: 2, chunkCount: 200 });
    expect(writer.closed!.csum).toBe(expectedDynamicCsum(chunks));
    // New uploads join the known set.
    expect(known.has(toHex(sha256(chunks[100]!)))).toBe(true);
    expect(known.size).toBe(200);
  });

  it('uploads a chunk repeated within one stream once and references it afterwards', async () => {
    const [a, b, c] = [
      pseudoRandom(70_000, 11),
      pseudoRandom(80_000, 12),
      pseudoRandom(90_000, 13),
    ];
    const stream = [a, b, a, c, b, a, a];
    const writer = new RecordingWriter();
    const result = await uploadChunks(
      stream.map((x) => x.slice()),
      options(writer),
    );
    expect(writer.uploads.map((u) => u.digest).sort()).toEqual(
      [a, b, c].map((x) => toHex(sha256(x))).sort(),
    );
    expect(writer.entries.map((e) => e.digest)).toEqual(stream.map((x) => toHex(sha256(x))));
    expect(result).toMatchObject({ uploadedChunks: 3, reusedChunks: 4, chunkCount: 7 });
    expect(writer.closed!.csum).toBe(expectedDynamicCsum(stream));
  });

  it('encrypt mode: digests keyed with the id key, blobs encrypted and decryptable', async () => {
    const crypt = new CryptConfig(SPEC_ENC_KEY);
    const compressible = new Uint8Array(100_000).fill(0x61);
    const chunks = [pseudoRandom(50_000, 21), compressible, pseudoRandom(60_000, 22)];
    const writer = new RecordingWriter();
    const result = await uploadChunks(
      chunks.map((c) => c.slice()),
      options(writer, { crypt }),
    );
    expect(writer.entries.map((e) => e.digest)).toEqual(chunks.map((c) => toHex(keyedSha256(c))));
    expect(writer.entries.map((e) => e.digest)).not.toContain(toHex(sha256(chunks[0]!)));
    expect(toHex(result.csum)).toBe(expectedDynamicCsum(chunks, keyedSha256));
    const kinds = writer.uploads.map((u) => blobKindOf(u.encoded));
    expect(kinds).toEqual(expect.arrayContaining(['encrypted', 'zstd-encrypted']));
    for (const u of writer.uploads) {
      const plain = decodeBlob(u.encoded, { crypt, expectedDigest: fromHex(u.digest) });
      expect(toHex(keyedSha256(plain))).toBe(u.digest);
      expect(() => decodeBlob(u.encoded)).toThrow(/encrypted/);
    }
    // Without compression, nothing is zstd.
    const plainWriter = new RecordingWriter();
    await uploadChunks([compressible.slice()], options(plainWriter, { crypt, compress: false }));
    expect(blobKindOf(plainWriter.uploads[0]!.encoded)).toBe('encrypted');
  });

  it('compresses when smaller, unencrypted', async () => {
    const writer = new RecordingWriter();
    const chunk = new Uint8Array(200_000).fill(7);
    await uploadChunks([chunk.slice()], options(writer));
    expect(blobKindOf(writer.uploads[0]!.encoded)).toBe('zstd');
    expect(writer.uploads[0]!.encoded.byteLength).toBeLessThan(1000);
    expect(sameBytes(decodeBlob(writer.uploads[0]!.encoded), chunk)).toBe(true);
  });

  it('skips empty chunks and refuses chunks over 16 MiB', async () => {
    const writer = new RecordingWriter();
    const a = pseudoRandom(1000, 31);
    const result = await uploadChunks(
      [new Uint8Array(0), a.slice(), new Uint8Array(0)],
      options(writer),
    );
    expect(result).toMatchObject({ chunkCount: 1, size: 1000 });
    const big = new RecordingWriter();
    const error = await uploadChunks([a, new Uint8Array(16 * MiB + 1)], options(big)).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(BurrowError);
    expect((error as BurrowError).code).toBe('INVALID_ARGUMENT');
    expect((error as BurrowError).details).toMatchObject({ offset: 1000 });
    expect(big.closed).toBeUndefined();
  });

  it('moves chunks that own their buffer to the workers, copies views, keeps them with transferChunks: false', async () => {
    const owned = pseudoRandom(10_000, 41);
    const backing = pseudoRandom(30_000, 42);
    const view = backing.subarray(10_000, 20_000);
    await uploadChunks([owned, view], options(new RecordingWriter()));
    expect(owned.byteLength).toBe(0); // detached: moved to a worker
    expect(view.byteLength).toBe(10_000);
    expect(backing.byteLength).toBe(30_000);

    const kept = pseudoRandom(10_000, 43);
    const writer = new RecordingWriter();
    await uploadChunks([kept], options(writer, { transferChunks: false }));
    expect(kept.byteLength).toBe(10_000);
    expect(writer.entries[0]!.digest).toBe(toHex(sha256(kept)));
  });

  it('keeps at most `window` chunks in flight and reads the source only as chunks are appended', async () => {
    const writer = new RecordingWriter();
    writer.uploadDelayMs = 2;
    const window = 3;
    let pulled = 0;
    let maxAhead = 0;
    // A chunk leaves the pipeline (and its bytes are let go) when it is appended to the batch;
    // progress reports each such step.
    let appended = 0;
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 40; i++) {
        maxAhead = Math.max(maxAhead, pulled - appended);
        pulled++;
        yield pseudoRandom(5000, 500 + i);
        await Promise.resolve();
      }
    }
    const result = await uploadChunks(
      source(),
      options(writer, { window, onProgress: (p) => (appended = p.chunks) }),
    );
    expect(result.chunkCount).toBe(40);
    // `window` chunks in the pipeline, plus the one the source iterator is producing.
    expect(maxAhead).toBeLessThanOrEqual(window + 1);
    expect(maxAhead).toBeGreaterThanOrEqual(window);
  });

  it('property: any chunk sequence with any known set gives the same index as the format code', async () => {
    const alphabet = Array.from({ length: 8 }, (_, i) => pseudoRandom(100 + 37 * i, 700 + i));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: 1, max: 12 }),
        async (picks, knownMask, window) => {
          const stream = picks.map((p) => alphabet[p]!);
          const writer = new RecordingWriter();
          const known = new Set<string>();
          alphabet.forEach((c, i) => {
            if (knownMask[i]) writer.register(sha256(c), c.byteLength, known);
          });
          const result = await uploadChunks(
            stream.map((c) => c.slice()),
            options(writer, { known, window }),
          );
          const distinctNew = new Set(
            picks.filter((p) => !knownMask[p]).map((p) => toHex(sha256(alphabet[p]!))),
          );
          expect(writer.uploads.map((u) => u.digest).sort()).toEqual([...distinctNew].sort());
          expect(writer.entries.map((e) => e.digest)).toEqual(stream.map((c) => toHex(sha256(c))));
          expect(writer.closed!.csum).toBe(expectedDynamicCsum(stream));
          expect(result.reusedChunks + result.uploadedChunks).toBe(stream.length);
          expect(writer.appends.every((a) => a.digests.length <= APPEND_BATCH_SIZE)).toBe(true);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('uploadChunks: failures', () => {
  it('an upload failure rejects, nothing is appended after it, no close, no calls after settling', async () => {
    const chunks = Array.from({ length: 30 }, (_, i) => pseudoRandom(20_000, 100 + i));
    const writer = new RecordingWriter();
    writer.failUploadAt = 5;
    let failedAtLog = -1;
    writer.onUpload = (n) => {
      if (n === 5) failedAtLog = writer.log.length;
    };
    const promise = uploadChunks(chunks, options(writer, { transferChunks: false }));
    const error = await promise.catch((e: unknown) => e);
    writer.settled = true;
    expect(error).toBeInstanceOf(BurrowError);
    expect((error as BurrowError).message).toBe('upload 5 failed (test)');
    expect(writer.closed).toBeUndefined();
    expect(failedAtLog).toBeGreaterThan(0);
    // Appends that had started before the failure may have gone out; none after it was seen.
    expect(writer.entries.length).toBeLessThan(chunks.length);
    await new Promise((r) => setTimeout(r, 50));
    expect(writer.lateCalls).toBe(0);
    // The pool still works.
    const again = await pool.process(chunks[0]!);
    expect(toHex(again.digest)).toBe(toHex(sha256(chunks[0]!)));
    expect(pool.pendingJobs).toBe(0);
  });

  it('an append failure rejects and stops the upload', async () => {
    // Three full batches of appends; the third fails.
    const chunks = Array.from({ length: 3 * APPEND_BATCH_SIZE + 10 }, (_, i) =>
      pseudoRandom(2_000, 200 + i),
    );
    const writer = new RecordingWriter();
    writer.failAppendAt = 2;
    expect(await rejectionCodeOf(uploadChunks(chunks, options(writer)))).toBe('IO_ERROR');
    writer.settled = true;
    expect(writer.appends.length).toBe(2);
    expect(writer.closed).toBeUndefined();
    await new Promise((r) => setTimeout(r, 50));
    expect(writer.lateCalls).toBe(0);
    expect(pool.pendingJobs).toBe(0);
  });

  it('a failing source rejects with its error and closes nothing', async () => {
    const writer = new RecordingWriter();
    async function* source(): AsyncGenerator<Uint8Array> {
      yield pseudoRandom(1000, 301);
      await Promise.resolve();
      yield pseudoRandom(1000, 302);
      throw new BurrowError('IO_ERROR', 'read failed (test)');
    }
    expect(await rejectionCodeOf(uploadChunks(source(), options(writer)))).toBe('IO_ERROR');
    expect(writer.closed).toBeUndefined();
  });

  it('closes the source iterator when the upload fails', async () => {
    const writer = new RecordingWriter();
    writer.failUploadAt = 0;
    let finalized = false;
    function* source(): Generator<Uint8Array> {
      try {
        for (let i = 0; i < 1000; i++) yield pseudoRandom(1000, 400 + i);
      } finally {
        finalized = true;
      }
    }
    expect(await rejectionCodeOf(uploadChunks(source(), options(writer)))).toBe('IO_ERROR');
    expect(finalized).toBe(true);
  });

  it('a throwing progress callback fails the upload', async () => {
    const writer = new RecordingWriter();
    const chunks = [pseudoRandom(1000, 501), pseudoRandom(1000, 502)];
    const promise = uploadChunks(
      chunks,
      options(writer, {
        onProgress: () => {
          throw new BurrowError('TASK_ABORTED', 'stop (test)');
        },
      }),
    );
    expect(await rejectionCodeOf(promise)).toBe('TASK_ABORTED');
    expect(writer.closed).toBeUndefined();
  });

  it('an abort signal stops the upload with TASK_ABORTED', async () => {
    const writer = new RecordingWriter();
    const controller = new AbortController();
    writer.onUpload = (n) => {
      if (n === 2) controller.abort();
    };
    const chunks = Array.from({ length: 20 }, (_, i) => pseudoRandom(5000, 600 + i));
    const promise = uploadChunks(chunks, options(writer, { signal: controller.signal }));
    expect(await rejectionCodeOf(promise)).toBe('TASK_ABORTED');
    expect(writer.closed).toBeUndefined();
    const already = AbortSignal.abort();
    expect(
      await rejectionCodeOf(uploadChunks([chunks[0]!], options(writer, { signal: already }))),
    ).toBe('TASK_ABORTED');
  });

  it('refuses bad options with a rejection, before any call', async () => {
    const writer = new RecordingWriter();
    const badWid = uploadChunks([], options(writer, { wid: 0 }));
    await expect(badWid).rejects.toThrow(/writer id/);
    expect(await rejectionCodeOf(uploadChunks([], options(writer, { window: 0 })))).toBe(
      'INVALID_ARGUMENT',
    );
    for (const level of [0, 20, 2.5])
      expect(await rejectionCodeOf(uploadChunks([], options(writer, { level })))).toBe(
        'INVALID_ARGUMENT',
      );
    expect(writer.log).toEqual([]);
  });
});

describe('uploadFixed (images)', () => {
  const zero = (): Uint8Array => new Uint8Array(FIXED);

  it('recognises all-zero chunks: constant digest, never hashed, uploaded once', async () => {
    const r1 = pseudoRandom(FIXED, 801);
    const r2 = pseudoRandom(FIXED, 802);
    const tail = pseudoRandom(1000, 803);
    const image = [r1, zero(), zero(), r2, zero(), tail];
    const writer = new RecordingWriter();
    const submit = vi.spyOn(pool, 'submit');
    const digestAndEncode = vi.spyOn(pool, 'digestAndEncode');
    const encodeOnly = vi.spyOn(pool, 'encodeOnly');
    const known = new Set<string>();
    const result = await uploadFixed(
      image.map((c) => c.slice()),
      { writer, wid: 7, known, pool },
    );
    // Only the three non-zero chunks went through the digest path; zeros were encoded once.
    expect(submit.mock.calls.length + digestAndEncode.mock.calls.length).toBe(3);
    expect(encodeOnly).toHaveBeenCalledTimes(1);
    submit.mockRestore();
    digestAndEncode.mockRestore();
    encodeOnly.mockRestore();

    expect(writer.entries.map((e) => e.digest)).toEqual(image.map((c) => toHex(sha256(c))));
    expect(writer.entries[1]!.digest).toBe(ZERO_DIGEST_HEX);
    expect(writer.entries.map((e) => e.offset)).toEqual([0, 1, 2, 3, 4, 5].map((i) => i * FIXED));
    expect(writer.uploads.filter((u) => u.digest === ZERO_DIGEST_HEX)).toHaveLength(1);
    const zeroBlob = writer.uploads.find((u) => u.digest === ZERO_DIGEST_HEX)!.encoded;
    expect(sameBytes(decodeBlob(zeroBlob), zero())).toBe(true);
    expect(result).toMatchObject({
      size: 5 * FIXED + 1000,
      chunkCount: 6,
      zeroChunks: 3,
      uploadedChunks: 4,
      reusedChunks: 2,
    });
    expect(writer.closed).toEqual({
      chunkCount: 6,
      size: 5 * FIXED + 1000,
      csum: expectedFixedCsum(image),
    });

    // A second image in the same session (same known set): zeros are not uploaded again.
    const second = new RecordingWriter();
    second.register(fromHex(ZERO_DIGEST_HEX), FIXED, known);
    const again = await uploadFixed([zero(), zero()], { writer: second, wid: 7, known, pool });
    expect(second.uploads).toHaveLength(0);
    expect(again).toMatchObject({ zeroChunks: 2, reusedChunks: 2, uploadedChunks: 0 });
    expect(second.appends.map((a) => a.digests.length)).toEqual([2]);
  });

  it('encrypted zero chunks get the keyed digest', async () => {
    const crypt = new CryptConfig(SPEC_ENC_KEY);
    const writer = new RecordingWriter();
    const image = [zero(), pseudoRandom(FIXED, 811), zero()];
    const result = await uploadFixed(
      image.map((c) => c.slice()),
      { writer, wid: 7, known: new Set(), pool, crypt },
    );
    const zeroKeyed = toHex(keyedSha256(zero()));
    expect(zeroKeyed).not.toBe(ZERO_DIGEST_HEX);
    expect(writer.entries.map((e) => e.digest)).toEqual(image.map((c) => toHex(keyedSha256(c))));
    expect(writer.uploads).toHaveLength(2);
    const zeroBlob = writer.uploads.find((u) => u.digest === zeroKeyed)!.encoded;
    expect(blobKindOf(zeroBlob)).toBe('zstd-encrypted');
    expect(sameBytes(decodeBlob(zeroBlob, { crypt }), zero())).toBe(true);
    expect(toHex(result.csum)).toBe(expectedFixedCsum(image, keyedSha256));
  });

  it('refuses chunks over 4 MiB and a short chunk that is not the last', async () => {
    const w1 = new RecordingWriter();
    const e1 = await uploadFixed([new Uint8Array(FIXED + 1)], {
      writer: w1,
      wid: 7,
      known: new Set(),
      pool,
    }).then(
      () => expect.fail('the upload should have failed'),
      (e: unknown) => e as BurrowError,
    );
    expect(e1.code).toBe('INVALID_ARGUMENT');
    expect(e1.details).toMatchObject({ offset: 0, actual: FIXED + 1 });
    const w2 = new RecordingWriter();
    const e2 = await uploadFixed([pseudoRandom(FIXED, 1), pseudoRandom(100, 2), zero()], {
      writer: w2,
      wid: 7,
      known: new Set(),
      pool,
    }).then(
      () => expect.fail('the upload should have failed'),
      (e: unknown) => e as BurrowError,
    );
    expect(e2.code).toBe('INVALID_ARGUMENT');
    expect(e2.details).toMatchObject({ offset: FIXED });
    expect(w2.closed).toBeUndefined();
  });
});
