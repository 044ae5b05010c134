import { createCipheriv, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChunkSplitter, splitIntoChunks } from '../chunker/buzhash.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { toHex } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import { nativeCopyBytes } from '../lib/native-fs.js';
import {
  ARENA_SLOTS,
  ChunkQueue,
  ChunkingSink,
  StreamAborted,
  rootCause,
} from './backup-streams.js';
import { BACKUP_AVG_CHUNK_SIZE } from './backup.js';

/** PBS's own split-archive payload index (100 files of 1 MiB of zeros, a boundary at each). */
const FIXTURE = fileURLToPath(
  new URL(
    '../../../shared/fixtures/pbs-upstream/backup-client-pxar-data.ppxar.didx',
    import.meta.url,
  ),
);

function pseudoRandom(size: number, seed: number): Uint8Array {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]));
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('ChunkingSink', () => {
  it('queues the chunks of the bytes written, whatever the write sizes', async () => {
    const data = pseudoRandom(700 * 1024, 1);
    const expected = [...splitIntoChunks([data], 64 * 1024)].map((c) => c.byteLength);
    const sink = new ChunkingSink('test', 64 * 1024, 1000);
    for (let at = 0; at < data.length; at += 7777) await sink.write(data.subarray(at, at + 7777));
    await sink.finish();
    const got: number[] = [];
    for await (const chunk of sink.queue) got.push(chunk.byteLength);
    expect(got).toEqual(expected);
    expect(sink.queuedBytes).toBe(data.length);
  });

  it('cuts the same chunks for writes of a megabyte and more, up to the whole stream', async () => {
    // Burrow's default average: chunks of 128 KiB to 2 MiB, several to a write or several writes long.
    const avg = BACKUP_AVG_CHUNK_SIZE;
    const data = pseudoRandom(5 * 1024 * 1024, 9);
    const expected = [...splitIntoChunks([data], avg)];
    expect(expected.length).toBeGreaterThan(4);
    for (const step of [300_000, 1024 * 1024, data.length]) {
      const sink = new ChunkingSink('test', avg, 1000);
      for (let at = 0; at < data.length; at += step) await sink.write(data.subarray(at, at + step));
      await sink.finish();
      const got: Uint8Array[] = [];
      for await (const chunk of sink.queue) got.push(chunk.slice());
      expect(got.map((c) => c.byteLength)).toEqual(expected.map((c) => c.byteLength));
      expect(Buffer.concat(got).equals(data)).toBe(true);
    }
  });
});

describe('ChunkQueue', () => {
  it('makes the producer wait while the queue is full', async () => {
    const q = new ChunkQueue('q', 2);
    await q.push(new Uint8Array(1));
    await q.push(new Uint8Array(2));
    let third = false;
    const pushing = q.push(new Uint8Array(3)).then(() => (third = true));
    await tick();
    expect(third).toBe(false);
    const it = q[Symbol.asyncIterator]();
    expect((await it.next()).value).toHaveLength(1);
    await pushing;
    expect(third).toBe(true);
    q.close();
    expect((await it.next()).value).toHaveLength(2);
    expect((await it.next()).value).toHaveLength(3);
    expect((await it.next()).done).toBe(true);
  });

  it('throws the producer failure into the consumer', async () => {
    const q = new ChunkQueue('q');
    await q.push(new Uint8Array(1));
    const failure = new BurrowError('IO_ERROR', 'disk gone');
    q.fail(failure);
    const seen: number[] = [];
    const error = await (async () => {
      for await (const chunk of q) seen.push(chunk.byteLength);
    })().catch((e: unknown) => e);
    expect(seen).toEqual([1]);
    expect(error).toBe(failure);
  });

  it('rejects pushes once the consumer quit, carrying its error', async () => {
    const q = new ChunkQueue('q', 1);
    await q.push(new Uint8Array(1));
    for await (const _ of q) break;
    const quit = await q.push(new Uint8Array(1)).catch((e: unknown) => e);
    expect(quit).toBeInstanceOf(StreamAborted);

    const q2 = new ChunkQueue('q2', 1);
    await q2.push(new Uint8Array(1));
    const waiting = q2.push(new Uint8Array(1)).catch((e: unknown) => e);
    const cause = new BurrowError('CHUNK_CONFLICT', 'upload refused');
    q2.abort(cause);
    const error = await waiting;
    expect(error).toBeInstanceOf(StreamAborted);
    expect((error as BurrowError).code).toBe('CHUNK_CONFLICT');
    expect(rootCause(error)).toBe(cause);
  });
});

describe('ChunkingSink against ChunkSplitter (the reference for suggestions, cuts and skips)', () => {
  /** What a stream does, in order. */
  type Op =
    | { op: 'write'; size: number }
    | { op: 'suggest'; ahead: number }
    | { op: 'force' }
    | { op: 'skip'; length: number };

  const opArb: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        op: fc.constant('write' as const),
        size: fc.integer({ min: 0, max: 90_000 }),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('suggest' as const),
        ahead: fc.integer({ min: 0, max: 150_000 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('force' as const) }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('skip' as const),
        length: fc.integer({ min: 0, max: 300_000 }),
      }),
    },
  );

  /** Chunk end offsets (stream offsets, skips included) and chunk contents, by both. */
  async function run(
    ops: Op[],
    data: Uint8Array,
  ): Promise<{
    sink: { ends: number[]; bytes: string[] };
    reference: { ends: number[]; bytes: string[] };
  }> {
    const avg = 64 * 1024;
    const splitter = new ChunkSplitter(avg);
    const sink = new ChunkingSink('test', avg, 1_000_000);
    const reference = { ends: [] as number[], bytes: [] as string[] };
    let refOffset = 0;
    const addRef = (c: Uint8Array | undefined): void => {
      if (c === undefined || c.byteLength === 0) return;
      refOffset += c.byteLength;
      reference.ends.push(refOffset);
      reference.bytes.push(Buffer.from(c).toString('base64'));
    };
    // The sink's chunks, in order; their end offsets are rebuilt below with the skips.
    const collected: string[] = [];
    const drain = (async () => {
      for await (const c of sink.queue) collected.push(Buffer.from(c).toString('base64'));
    })();
    let last = 0;
    let at = 0;
    const skips: Array<{ afterChunks: number; length: number }> = [];
    for (const o of ops) {
      if (o.op === 'write') {
        const piece = data.subarray(
          at % (data.length - 90_000),
          (at % (data.length - 90_000)) + o.size,
        );
        at += o.size;
        for (const c of splitter.push(piece)) addRef(c);
        await sink.write(piece);
      } else if (o.op === 'suggest') {
        const b = Math.max(last, splitter.streamOffset + o.ahead);
        last = b;
        splitter.suggestBoundary(b);
        sink.suggestBoundary(b);
      } else if (o.op === 'force') {
        addRef(splitter.forceBoundary());
        await sink.forceBoundary();
      } else {
        addRef(splitter.forceBoundary());
        await sink.forceBoundary();
        splitter.skipBytes(o.length);
        refOffset += o.length;
        sink.skipBytes(o.length);
        skips.push({ afterChunks: reference.ends.length, length: o.length });
        last = Math.max(last, splitter.streamOffset);
      }
      expect(sink.streamOffset).toBe(splitter.streamOffset);
    }
    addRef(splitter.finish());
    await sink.finish();
    await drain;
    // Rebuild the sink's end offsets with the same skips.
    const ends: number[] = [];
    let offset = 0;
    let skip = 0;
    collected.forEach((c, i) => {
      while (skip < skips.length && skips[skip]!.afterChunks === i) offset += skips[skip++]!.length;
      offset += Buffer.from(c, 'base64').byteLength;
      ends.push(offset);
    });
    return { sink: { ends, bytes: collected }, reference };
  }

  it('cuts exactly where ChunkSplitter cuts, for any writes, suggestions, forced cuts and skips', async () => {
    const data = pseudoRandom(1024 * 1024, 7);
    // Runs of zeros make suggestions and the max-size cut matter (no content-defined cut there).
    data.fill(0, 300_000, 700_000);
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 40 }), async (ops) => {
        const { sink, reference } = await run(ops, data);
        expect(sink.bytes).toEqual(reference.bytes);
        expect(sink.ends).toEqual(reference.ends);
      }),
      { numRuns: 150 },
    );
  });

  it('gathers chunks in shared arena slots while slots are free, then in ordinary memory', async () => {
    const data = pseudoRandom(2 * 1024 * 1024, 3);
    const sink = new ChunkingSink('test', 64 * 1024, 1000);
    await sink.write(data);
    await sink.finish();
    const chunks: Uint8Array[] = [];
    for await (const c of sink.queue) chunks.push(c);
    expect(chunks.length).toBeGreaterThan(ARENA_SLOTS);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    const slotSize = 4 * 64 * 1024;
    chunks.forEach((c, i) => {
      if (i < ARENA_SLOTS) {
        // Nobody frees the slots here, so the first ARENA_SLOTS chunks take them all.
        expect(c.buffer).toBeInstanceOf(SharedArrayBuffer);
        expect(c.byteOffset % slotSize).toBe(0);
        expect(sink.arena.slotOf(c)).toBe(i);
      } else {
        expect(c.buffer).toBeInstanceOf(ArrayBuffer);
        expect(c.byteLength).toBe(c.buffer.byteLength);
      }
    });
    // A freed slot is handed out again.
    sink.arena.free(3);
    expect(sink.arena.slotOf(sink.arena.take()!)).toBe(3);
  });

  it('reproduces the chunks PBS cut for its split-archive fixture (suggestions at every file)', async () => {
    const index = DynamicIndex.parse(readFileSync(FIXTURE));
    const MiB = 1024 * 1024;
    const header = (type: bigint, size: number): Uint8Array => {
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(type, 0);
      b.writeBigUInt64LE(BigInt(size), 8);
      return b;
    };
    const sink = new ChunkingSink('fixture', 4 * MiB, 1000);
    const body = new Uint8Array(MiB);
    await sink.write(header(0x834c68c2194a4ed2n, 16));
    for (let k = 0; k < 100; k++) {
      sink.suggestBoundary(sink.streamOffset);
      await sink.write(header(0x28147a1b0b7c1a25n, 16 + MiB));
      await sink.write(body);
    }
    await sink.write(header(0x6c72b78b984c81b5n, 16));
    await sink.finish();
    const digests: string[] = [];
    for await (const c of sink.queue) digests.push(createHash('sha256').update(c).digest('hex'));
    expect(digests).toEqual(Array.from({ length: index.count }, (_, i) => toHex(index.digest(i))));
  });
});

describe('native copyBytes (the sink copies into shared memory with it)', () => {
  const copy = nativeCopyBytes();

  it.runIf(copy !== undefined)(
    'copies into shared memory and refuses ranges outside either array',
    () => {
      const target = new Uint8Array(new SharedArrayBuffer(64));
      const source = Uint8Array.from({ length: 40 }, (_, i) => i + 1);
      expect(copy!(target, 3, source, 5, 30)).toBe(30);
      expect(Array.from(target.subarray(3, 33))).toEqual(Array.from(source.subarray(5, 35)));
      expect(target[2]).toBe(0);
      expect(target[33]).toBe(0);
      // Overlapping ranges of one array behave as memmove.
      const same = Uint8Array.from({ length: 10 }, (_, i) => i);
      copy!(same, 2, same, 0, 8);
      expect(Array.from(same)).toEqual([0, 1, 0, 1, 2, 3, 4, 5, 6, 7]);
      expect(() => copy!(target, 60, source, 0, 5)).toThrow(RangeError);
      expect(() => copy!(target, 0, source, 38, 3)).toThrow(RangeError);
      expect(() => copy!(target, -1, source, 0, 1)).toThrow(RangeError);
    },
  );

  it.runIf(copy === undefined)(
    'without the addon the sink copies with TypedArray.set',
    async () => {
      const sink = new ChunkingSink('test', 64 * 1024, 100);
      const data = pseudoRandom(300_000, 9);
      await sink.write(data);
      await sink.finish();
      const chunks: Uint8Array[] = [];
      for await (const c of sink.queue) chunks.push(c);
      expect(Buffer.concat(chunks).equals(data)).toBe(true);
    },
  );
});
