import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { toHex } from '../lib/bytes.js';
import { isBurrowError } from '../lib/errors.js';
import type { ErrorCode } from '../lib/errors.js';
import { DynamicIndex, encodeDynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex, encodeFixedIndex } from '../format/fixed-index.js';
import { DynamicIndexWriter, FixedIndexWriter, indexTempPath } from './index-writer.js';

const MiB = 1024 * 1024;
const UUID = Uint8Array.from({ length: 16 }, (_, i) => 0x30 + i);
const CTIME = 1715091951;
const sha256 = (bytes: Uint8Array): Uint8Array =>
  new Uint8Array(createHash('sha256').update(bytes).digest());
const digestOf = (i: number): Uint8Array =>
  sha256(Uint8Array.of(i & 0xff, (i >> 8) & 0xff, (i >> 16) & 0xff));

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  return undefined;
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const error = await rejection(promise);
  expect(isBurrowError(error), `expected BurrowError ${code}, got ${String(error)}`).toBe(true);
  expect((error as { code: string }).code).toBe(code);
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-index-writer-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('indexTempPath', () => {
  it('replaces the final extension, as PBS does', () => {
    expect(indexTempPath('/a/b/drive-scsi0.img.fidx', 'fixed')).toBe(
      '/a/b/drive-scsi0.img.tmp_fidx',
    );
    expect(indexTempPath('root.pxar.didx', 'dynamic')).toBe('root.pxar.tmp_didx');
  });
  it('refuses a name without the extension of its kind', () => {
    expect(() => indexTempPath('/a/root.pxar.didx', 'fixed')).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => indexTempPath('/a/root.pxar', 'dynamic')).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });
});

describe('FixedIndexWriter', () => {
  it('writes under the temp name, publishes on close, byte-identical to the encoder (out-of-order fill)', async () => {
    const path = join(dir, 'drive-scsi0.img.fidx');
    const size = 10 * MiB + 123;
    const digests = [0, 1, 2].map(digestOf);
    const writer = await FixedIndexWriter.create(path, { size, uuid: UUID, ctime: CTIME });
    expect(writer.tempPath).toBe(join(dir, 'drive-scsi0.img.tmp_fidx'));
    expect(await readdir(dir)).toEqual(['drive-scsi0.img.tmp_fidx']);
    expect(writer.count).toBe(3);
    expect(writer.chunkSize).toBe(4 * MiB);

    expect(await writer.addChunk(size, 2 * MiB + 123, digests[2] ?? new Uint8Array())).toBe(2);
    expect(await writer.addChunk(4 * MiB, 4 * MiB, digests[0] ?? new Uint8Array())).toBe(0);
    expect(writer.isFilled(1)).toBe(false);
    await writer.setDigest(1, digests[1] ?? new Uint8Array());
    expect(existsSync(path)).toBe(false);

    const result = await writer.close();
    expect(await readdir(dir)).toEqual(['drive-scsi0.img.fidx']);
    expect(writer.state).toBe('closed');
    const expected = encodeFixedIndex({
      uuid: UUID,
      ctime: CTIME,
      size,
      chunkSize: 4 * MiB,
      digests,
    });
    const written = new Uint8Array(await readFile(path));
    expect(Buffer.compare(written, expected)).toBe(0);
    expect(result.size).toBe(size);
    expect(result.count).toBe(3);
    expect(toHex(result.csum)).toBe(toHex(sha256(expected.subarray(4096))));
    FixedIndex.parse(written).verifyCsum();
  });

  it('fills a random order across several write batches, later digests overwriting earlier ones', async () => {
    const path = join(dir, 'disk.img.fidx');
    const count = 40_000; // more than one 1 MiB run (32768) of 32-byte digests
    const writer = await FixedIndexWriter.create(path, {
      size: count * 2 - 1,
      chunkSize: 2,
      uuid: UUID,
      ctime: CTIME,
      syncLevel: 'file',
    });
    // Forward, then a shuffled tail overwriting some positions, then a backwards stretch.
    for (let i = 0; i < count - 1000; i++) await writer.setDigest(i, digestOf(0));
    const order = Array.from({ length: 600 }, (_, k) => (k * 7919) % count);
    for (const i of order) await writer.setDigest(i, digestOf(i));
    for (let i = count - 1; i >= 0 && !writer.isFilled(i); i--)
      await writer.setDigest(i, digestOf(i));
    for (let i = 0; i < count; i++) if (!writer.isFilled(i)) await writer.setDigest(i, digestOf(i));
    expect(writer.filledCount).toBe(count);
    const { csum } = await writer.close();

    const touched = new Set(order);
    const digests = Array.from({ length: count }, (_, i) =>
      touched.has(i) || i >= count - 1000 ? digestOf(i) : digestOf(0),
    );
    const expected = encodeFixedIndex({
      uuid: UUID,
      ctime: CTIME,
      size: count * 2 - 1,
      chunkSize: 2,
      digests,
    });
    expect(Buffer.compare(new Uint8Array(await readFile(path)), expected)).toBe(0);
    expect(toHex(csum)).toBe(toHex(expected.subarray(32, 64)));
  });

  it('checks chunk alignment like the PBS server', async () => {
    const path = join(dir, 'd.img.fidx');
    const writer = await FixedIndexWriter.create(path, {
      size: 10,
      chunkSize: 4,
      uuid: UUID,
      ctime: CTIME,
    });
    const d = digestOf(1);
    await expectCode(writer.addChunk(5, 4, d), 'INDEX_WRITER_STATE'); // start 1: misaligned
    await expectCode(writer.addChunk(4, 5, d), 'INDEX_WRITER_STATE'); // longer than a chunk
    await expectCode(writer.addChunk(4, 0, d), 'INDEX_WRITER_STATE'); // empty
    await expectCode(writer.addChunk(6, 2, d), 'INDEX_WRITER_STATE'); // short but not the last
    await expectCode(writer.addChunk(12, 4, d), 'INDEX_WRITER_STATE'); // past the image
    await expectCode(writer.addChunk(10, 1, d), 'INDEX_WRITER_STATE'); // ends at size but misaligned start
    await expectCode(writer.addChunk(3, 4, d), 'INDEX_WRITER_STATE'); // would start before 0
    await expectCode(writer.addChunk(4.5, 4, d), 'INDEX_WRITER_STATE');
    await expectCode(writer.addChunk(4, 4, new Uint8Array(31)), 'INVALID_ARGUMENT');
    await expectCode(writer.setDigest(3, d), 'INDEX_OUT_OF_RANGE');
    await expectCode(writer.setDigest(-1, d), 'INDEX_OUT_OF_RANGE');
    // Mistakes leave the writer usable.
    expect(await writer.addChunk(10, 2, d)).toBe(2);
    expect(await writer.addChunk(8, 4, d)).toBe(1);
    expect(await writer.addChunk(4, 4, d)).toBe(0);
    await writer.close();
    expect(FixedIndex.parse(new Uint8Array(await readFile(path))).count).toBe(3);
  });

  it('refuses to close with unfilled positions, and stays open to fill them', async () => {
    const path = join(dir, 'gap.img.fidx');
    const writer = await FixedIndexWriter.create(path, { size: 12, chunkSize: 4 });
    await writer.setDigest(0, digestOf(0));
    await writer.setDigest(2, digestOf(2));
    const error = await rejection(writer.close());
    expect(isBurrowError(error, 'INDEX_WRITER_STATE')).toBe(true);
    expect((error as { details: Record<string, unknown> }).details.firstMissing).toBe(1);
    expect(writer.state).toBe('open');
    await writer.setDigest(1, digestOf(1));
    await writer.close();
    expect(existsSync(path)).toBe(true);
  });

  it('refuses an empty index with INDEX_EMPTY and removes the temp file', async () => {
    const writer = await FixedIndexWriter.create(join(dir, 'e.img.fidx'), { size: 100 });
    await expectCode(writer.close(), 'INDEX_EMPTY');
    expect(await readdir(dir)).toEqual([]);
    expect(writer.state).toBe('aborted');
  });

  it('validates its arguments before creating anything', async () => {
    await expectCode(
      FixedIndexWriter.create(join(dir, 'x.img.fidx'), { size: 0 }),
      'INVALID_ARGUMENT',
    );
    await expectCode(
      FixedIndexWriter.create(join(dir, 'x.img.fidx'), { size: 10, chunkSize: 3 }),
      'INVALID_ARGUMENT',
    );
    await expectCode(
      FixedIndexWriter.create(join(dir, 'x.img.didx'), { size: 10 }),
      'INVALID_ARGUMENT',
    );
    await expectCode(
      FixedIndexWriter.create(join(dir, 'x.img.fidx'), { size: 10, uuid: new Uint8Array(3) }),
      'INVALID_ARGUMENT',
    );
    await expectCode(
      FixedIndexWriter.create(join(dir, 'x.img.fidx'), {
        size: 10,
        syncLevel: 'always' as unknown as 'file',
      }),
      'INVALID_ARGUMENT',
    );
    await expectCode(
      FixedIndexWriter.create(join(dir, 'missing', 'x.img.fidx'), { size: 10 }),
      'NOT_FOUND',
    );
    expect(await readdir(dir)).toEqual([]);
  });

  it('does not follow a symlink planted at the temp name', async () => {
    const victim = join(dir, 'victim');
    await writeFile(victim, 'keep me');
    await symlink(victim, join(dir, 'v.img.tmp_fidx'));
    await expectCode(FixedIndexWriter.create(join(dir, 'v.img.fidx'), { size: 10 }), 'IO_ERROR');
    expect(await readFile(victim, 'utf8')).toBe('keep me');
  });

  it('picks a fresh uuid and the current time when not given', async () => {
    const before = Math.floor(Date.now() / 1000);
    const a = await FixedIndexWriter.create(join(dir, 'a.img.fidx'), { size: 1, chunkSize: 1 });
    const b = await FixedIndexWriter.create(join(dir, 'b.img.fidx'), { size: 1, chunkSize: 1 });
    await a.setDigest(0, digestOf(0));
    await b.setDigest(0, digestOf(0));
    await a.close();
    await b.close();
    const ia = FixedIndex.parse(new Uint8Array(await readFile(join(dir, 'a.img.fidx'))));
    const ib = FixedIndex.parse(new Uint8Array(await readFile(join(dir, 'b.img.fidx'))));
    expect(toHex(ia.uuid)).not.toBe(toHex(ib.uuid));
    expect((ia.uuid[6] ?? 0) >> 4).toBe(4); // RFC 4122 version 4
    expect(ia.ctime).toBeGreaterThanOrEqual(before);
    expect(ia.ctime).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
  });
});

describe('writer lifecycle (both kinds)', () => {
  it('abort removes the temp file; later use fails with INDEX_WRITER_STATE; abort again is a no-op', async () => {
    const writer = await DynamicIndexWriter.create(join(dir, 'root.pxar.didx'));
    await writer.append(100, digestOf(0));
    await writer.abort();
    expect(await readdir(dir)).toEqual([]);
    expect(writer.state).toBe('aborted');
    await expectCode(writer.append(200, digestOf(1)), 'INDEX_WRITER_STATE');
    await expectCode(writer.close(), 'INDEX_WRITER_STATE');
    await writer.abort();
    await writer[Symbol.asyncDispose]();
  });

  it('after close: append, close and abort fail; the published file stays', async () => {
    const path = join(dir, 'root.pxar.didx');
    const writer = await DynamicIndexWriter.create(path);
    await writer.append(100, digestOf(0));
    await writer.close();
    await expectCode(writer.append(200, digestOf(1)), 'INDEX_WRITER_STATE');
    await expectCode(writer.close(), 'INDEX_WRITER_STATE');
    await expectCode(writer.abort(), 'INDEX_WRITER_STATE');
    await writer[Symbol.asyncDispose]();
    expect(await readdir(dir)).toEqual(['root.pxar.didx']);
  });

  it('Symbol.asyncDispose aborts a writer that was never closed', async () => {
    const fixed = await FixedIndexWriter.create(join(dir, 'a.img.fidx'), { size: 8, chunkSize: 4 });
    await fixed.setDigest(0, digestOf(0));
    const dynamic = await DynamicIndexWriter.create(join(dir, 'a.pxar.didx'));
    await dynamic.append(1, digestOf(0));
    expect((await readdir(dir)).sort()).toEqual(['a.img.tmp_fidx', 'a.pxar.tmp_didx']);
    await fixed[Symbol.asyncDispose]();
    await dynamic[Symbol.asyncDispose]();
    expect(await readdir(dir)).toEqual([]);
    expect(fixed.state).toBe('aborted');
  });

  it('calls made without awaiting run in call order', async () => {
    const path = join(dir, 'q.pxar.didx');
    const writer = await DynamicIndexWriter.create(path, { uuid: UUID, ctime: CTIME });
    const entries = Array.from({ length: 50 }, (_, i) => ({
      end: (i + 1) * 10,
      digest: digestOf(i),
    }));
    const appends = entries.map(({ end, digest }) => writer.append(end, digest));
    const closing = writer.close();
    const late = writer.append(10_000, digestOf(99));
    await Promise.all(appends);
    await closing;
    await expectCode(late, 'INDEX_WRITER_STATE');
    expect(
      Buffer.compare(
        new Uint8Array(await readFile(path)),
        encodeDynamicIndex({ uuid: UUID, ctime: CTIME, entries }),
      ),
    ).toBe(0);
  });
});

describe('DynamicIndexWriter', () => {
  it('writes under the temp name, publishes on close, byte-identical to the encoder', async () => {
    const path = join(dir, 'root.pxar.didx');
    const writer = await DynamicIndexWriter.create(path, {
      uuid: UUID,
      ctime: CTIME,
      syncLevel: 'file',
    });
    expect(writer.tempPath).toBe(join(dir, 'root.pxar.tmp_didx'));
    const entries = [
      { end: 65536, digest: digestOf(0) },
      { end: 0x1_0000_0000, digest: digestOf(1) },
      { end: 0x1_0000_0001, digest: digestOf(2) },
    ];
    for (const { end, digest } of entries) await writer.append(end, digest);
    expect(writer.count).toBe(3);
    expect(writer.size).toBe(0x1_0000_0001);
    expect(await readdir(dir)).toEqual(['root.pxar.tmp_didx']);
    const result = await writer.close();
    expect(await readdir(dir)).toEqual(['root.pxar.didx']);
    const expected = encodeDynamicIndex({ uuid: UUID, ctime: CTIME, entries });
    expect(Buffer.compare(new Uint8Array(await readFile(path)), expected)).toBe(0);
    expect(result).toEqual({ csum: expected.subarray(32, 64), size: 0x1_0000_0001, count: 3 });
  });

  it('refuses end offsets that do not rise, and stays usable', async () => {
    const writer = await DynamicIndexWriter.create(join(dir, 'r.pxar.didx'));
    await expectCode(writer.append(0, digestOf(0)), 'INDEX_WRITER_STATE');
    await writer.append(10, digestOf(0));
    await expectCode(writer.append(10, digestOf(1)), 'INDEX_WRITER_STATE');
    await expectCode(writer.append(9, digestOf(1)), 'INDEX_WRITER_STATE');
    await expectCode(writer.append(2 ** 53, digestOf(1)), 'INDEX_WRITER_STATE');
    await expectCode(writer.append(11, new Uint8Array(0)), 'INVALID_ARGUMENT');
    await writer.append(11, digestOf(1));
    const { count, size } = await writer.close();
    expect({ count, size }).toEqual({ count: 2, size: 11 });
  });

  it('refuses an empty index with INDEX_EMPTY and removes the temp file', async () => {
    const writer = await DynamicIndexWriter.create(join(dir, 'catalog.pcat1.didx'));
    await expectCode(writer.close(), 'INDEX_EMPTY');
    expect(await readdir(dir)).toEqual([]);
  });

  it('streams 100k entries through its buffer with a correct csum', async () => {
    const path = join(dir, 'big.pxar.didx');
    const count = 100_000;
    const writer = await DynamicIndexWriter.create(path, { uuid: UUID, ctime: CTIME });
    const digest = new Uint8Array(32);
    const view = new DataView(digest.buffer);
    for (let i = 0; i < count; i++) {
      view.setUint32(0, i, true); // cheap distinct digests; the writer copies them
      await writer.append((i + 1) * 4096 + (i % 7), digest);
    }
    const result = await writer.close();
    const bytes = new Uint8Array(await readFile(path));
    expect(bytes.byteLength).toBe(4096 + 40 * count);
    expect(toHex(result.csum)).toBe(toHex(sha256(bytes.subarray(4096))));
    const index = DynamicIndex.parse(bytes);
    index.verifyCsum();
    expect(index.count).toBe(count);
    expect(index.size).toBe(count * 4096 + ((count - 1) % 7));
    for (const i of [0, 1, 26213, 26214, 26215, 52428, count - 1]) {
      expect(index.end(i)).toBe((i + 1) * 4096 + (i % 7));
      expect(new DataView(index.digest(i).buffer).getUint32(0, true)).toBe(i);
    }
  });
});
