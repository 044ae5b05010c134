import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { concatBytes, toHex } from '../lib/bytes.js';
import { isBurrowError } from '../lib/errors.js';
import type { ErrorCode } from '../lib/errors.js';
import { DynamicIndex, decodeDynamicIndexHeader, encodeDynamicIndex } from './dynamic-index.js';
import type { DynamicIndexEntry } from './dynamic-index.js';

// The shared fixtures sit beside the repository (../shared), in CI as on a developer's machine.
const FIXTURE = fileURLToPath(
  new URL(
    '../../../shared/fixtures/pbs-upstream/backup-client-pxar-data.ppxar.didx',
    import.meta.url,
  ),
);

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const UUID = Uint8Array.from({ length: 16 }, (_, i) => 0xf0 - i);

function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

function expectCode(fn: () => unknown, code: ErrorCode): void {
  const error = thrownBy(fn);
  expect(isBurrowError(error), `expected a BurrowError ${code}, got ${String(error)}`).toBe(true);
  expect((error as { code: string }).code).toBe(code);
}

/** A pxar item header (pxar-format §2): u64 htype, u64 full_size, both LE. */
function pxarHeader(htype: bigint, fullSize: number): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, htype, true);
  view.setBigUint64(8, BigInt(fullSize), true);
  return bytes;
}

describe('upstream fixture backup-client-pxar-data.ppxar.didx (pbs-protocol §11 #9)', () => {
  const bytes = new Uint8Array(readFileSync(FIXTURE));
  const index = DynamicIndex.parse(bytes);

  it('has 100 entries, the known csum, and a stored csum that verifies', () => {
    expect(bytes.byteLength).toBe(8096);
    expect(index.count).toBe(100);
    expect(toHex(index.indexCsum)).toBe(
      'e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20',
    );
    expect(toHex(index.computeCsum())).toBe(
      'e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20',
    );
    index.verifyCsum();
    expect(index.size).toBe(104859232);
  });

  it('reads uuid and ctime from the spec offsets', () => {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(toHex(index.uuid)).toBe(toHex(bytes.subarray(8, 24)));
    expect(index.ctime).toBe(Number(view.getBigInt64(24, true)));
    expect(toHex(bytes.subarray(0, 8))).toBe('1c914ea519bab3cd');
  });

  it('ends run 1048608, +1048592 each, and the last chunk also holds the 16-byte tail marker', () => {
    for (let i = 0; i < 99; i++) expect(index.end(i)).toBe(1048608 + i * 1048592);
    expect(index.end(99)).toBe(104859232);
    expect(index.chunkRange(0)).toEqual({ start: 0, end: 1048608 });
    expect(index.chunkRange(1)).toEqual({ start: 1048608, end: 2097200 });
    expect(index.chunkRange(99)).toEqual({ start: 103810624, end: 104859232 });
  });

  it('digests are SHA-256 of the payload stream slices described in pxar-format §11.1', () => {
    const START = pxarHeader(0x834c68c2194a4ed2n, 16);
    const PAYLOAD = pxarHeader(0x28147a1b0b7c1a25n, 16 + 1048576);
    const TAIL = pxarHeader(0x6c72b78b984c81b5n, 16);
    const zeros = new Uint8Array(1048576);
    const first = sha256(START, PAYLOAD, zeros);
    const middle = sha256(PAYLOAD, zeros);
    const last = sha256(PAYLOAD, zeros, TAIL);
    expect(toHex(index.digest(0))).toBe(toHex(first));
    for (let i = 1; i < 99; i++) expect(toHex(index.digest(i))).toBe(toHex(middle));
    expect(toHex(index.digest(99))).toBe(toHex(last));
    // Parsed from the Buffer readFileSync gives, a digest is a copy of its own, not a view that
    // would pin the index (or copy all of it when posted to a worker).
    const fromDisk = DynamicIndex.parse(readFileSync(FIXTURE));
    expect(fromDisk.digest(99).buffer.byteLength).toBe(32);
    expect(toHex(fromDisk.digest(99))).toBe(toHex(last));
  });

  it('looks up offsets at every chunk boundary', () => {
    expect(index.chunkForOffset(0)).toBe(0);
    for (let i = 0; i < 99; i++) {
      const end = index.end(i);
      expect(index.chunkForOffset(end - 1)).toBe(i);
      expect(index.chunkForOffset(end)).toBe(i + 1);
    }
    expect(index.chunkForOffset(104859231)).toBe(99);
    expectCode(() => index.chunkForOffset(104859232), 'INDEX_OUT_OF_RANGE');
    expectCode(() => index.chunkForOffset(-1), 'INDEX_OUT_OF_RANGE');
  });

  it('re-encodes to the identical file from its uuid, ctime and entries', () => {
    const entries = [...index].map(({ end, digest }) => ({ end, digest }));
    const again = encodeDynamicIndex({ uuid: index.uuid, ctime: index.ctime, entries });
    expect(toHex(sha256(again))).toBe(
      'e9b28d2e12925fae074a6526aa8deb05087fc9138ccc46a0b6497633e8f46e0e',
    );
    expect(Buffer.compare(again, bytes)).toBe(0);
  });
});

describe('dynamic index layout, byte for byte (pbs-formats §4.2)', () => {
  it('header fields at their offsets, reserved zero, entries of u64 LE end + digest', () => {
    const d0 = sha256(Uint8Array.of(0));
    const d1 = sha256(Uint8Array.of(1));
    const bytes = encodeDynamicIndex({
      uuid: UUID,
      ctime: 1593179765,
      entries: [
        { end: 0x10000, digest: d0 },
        { end: 0x1_0000_0005, digest: d1 },
      ],
    });
    expect(bytes.byteLength).toBe(4096 + 80);
    expect(toHex(bytes.subarray(0, 8))).toBe('1c914ea519bab3cd');
    expect(toHex(bytes.subarray(8, 24))).toBe(toHex(UUID));
    expect(toHex(bytes.subarray(24, 32))).toBe('75fef55e00000000');
    expect(bytes.subarray(64, 4096).every((b) => b === 0)).toBe(true);
    const body = concatBytes(hex('0000010000000000'), d0, hex('0500000001000000'), d1);
    expect(toHex(bytes.subarray(4096))).toBe(toHex(body));
    expect(toHex(bytes.subarray(32, 64))).toBe(toHex(sha256(body)));
    expect(decodeDynamicIndexHeader(bytes).ctime).toBe(1593179765);
  });

  it('an index without entries parses (count 0, size 0) and has the empty-input csum', () => {
    const bytes = encodeDynamicIndex({ uuid: UUID, ctime: 0, entries: [] });
    expect(bytes.byteLength).toBe(4096);
    const index = DynamicIndex.parse(bytes);
    expect(index.count).toBe(0);
    expect(index.size).toBe(0);
    expect([...index]).toEqual([]);
    expect(toHex(index.indexCsum)).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
    index.verifyCsum();
    expectCode(() => index.chunkForOffset(0), 'INDEX_OUT_OF_RANGE');
    expectCode(() => index.digest(0), 'INDEX_OUT_OF_RANGE');
  });
});

describe('DynamicIndex.parse rejects bad input', () => {
  const entries = [10, 25, 26].map((end, i) => ({ end, digest: sha256(Uint8Array.of(i)) }));
  const good = encodeDynamicIndex({ uuid: UUID, ctime: 7, entries });

  it('every truncation: INDEX_BAD_SIZE, or (at an entry boundary) a csum mismatch', () => {
    for (let length = 0; length < good.byteLength; length++) {
      const cut = good.subarray(0, length);
      const atBoundary = length >= 4096 && (length - 4096) % 40 === 0;
      if (atBoundary) {
        expectCode(() => DynamicIndex.parse(cut).verifyCsum(), 'INDEX_CSUM_MISMATCH');
      } else {
        expectCode(() => DynamicIndex.parse(cut), 'INDEX_BAD_SIZE');
      }
    }
    expectCode(() => DynamicIndex.parse(concatBytes(good, new Uint8Array(1))), 'INDEX_BAD_SIZE');
  });

  it('wrong magic: INDEX_BAD_MAGIC', () => {
    for (let i = 0; i < 8; i++) {
      const bad = good.slice();
      bad[i] = (bad[i] ?? 0) ^ 0x40;
      expectCode(() => DynamicIndex.parse(bad), 'INDEX_BAD_MAGIC');
    }
    const fidx = good.slice();
    fidx.set(hex('2f7f41ed91fd0fcd'), 0);
    expect(String((thrownBy(() => DynamicIndex.parse(fidx)) as Error).message)).toMatch(
      /fixed index/,
    );
  });

  it('end offsets that do not rise strictly from above 0: INDEX_BAD_ENTRY', () => {
    const withEnd = (entry: number, value: bigint): Uint8Array => {
      const bytes = good.slice();
      new DataView(bytes.buffer).setBigUint64(4096 + 40 * entry, value, true);
      return bytes;
    };
    expectCode(() => DynamicIndex.parse(withEnd(0, 0n)), 'INDEX_BAD_ENTRY');
    expectCode(() => DynamicIndex.parse(withEnd(1, 10n)), 'INDEX_BAD_ENTRY'); // equal
    expectCode(() => DynamicIndex.parse(withEnd(2, 24n)), 'INDEX_BAD_ENTRY'); // decreasing
    expectCode(() => DynamicIndex.parse(withEnd(2, 2n ** 53n)), 'INDEX_BAD_ENTRY'); // beyond a JS number
    expectCode(() => DynamicIndex.parse(withEnd(2, 2n ** 64n - 1n)), 'INDEX_BAD_ENTRY');
    expect(DynamicIndex.parse(withEnd(2, 2n ** 53n - 1n)).size).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('checks the csum only on request', () => {
    DynamicIndex.parse(good).verifyCsum();
    const bad = good.slice();
    bad[4096 + 40 + 8] = (bad[4096 + 40 + 8] ?? 0) ^ 1; // a digest byte
    expectCode(() => DynamicIndex.parse(bad).verifyCsum(), 'INDEX_CSUM_MISMATCH');
  });

  it('refuses bad encode arguments', () => {
    const d = sha256(new Uint8Array(0));
    for (const bad of [
      [{ end: 0, digest: d }],
      [
        { end: 5, digest: d },
        { end: 5, digest: d },
      ],
      [{ end: 1.5, digest: d }],
      [{ end: 2 ** 53, digest: d }],
      [{ end: 1, digest: new Uint8Array(33) }],
    ]) {
      expectCode(
        () => encodeDynamicIndex({ uuid: UUID, ctime: 0, entries: bad }),
        'INVALID_ARGUMENT',
      );
    }
  });
});

/** Strictly increasing ends from chunk lengths >= 1. */
const dynamicInit = fc
  .record({
    uuid: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    ctime: fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
    start: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 52 })),
    chunks: fc.array(
      fc.record({
        length: fc.oneof(
          fc.integer({ min: 1, max: 16 }),
          fc.integer({ min: 1, max: 16 * 1024 * 1024 }),
        ),
        digest: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      }),
      { maxLength: 60 },
    ),
  })
  .map(({ uuid, ctime, start, chunks }) => {
    let end = start;
    const entries: DynamicIndexEntry[] = chunks.map(({ length, digest }) => {
      end += length;
      return { end, digest };
    });
    return { uuid, ctime, entries };
  });

describe('dynamic index properties', () => {
  it('parse(encode(x)) gives x back, with a valid csum', () => {
    fc.assert(
      fc.property(dynamicInit, (init) => {
        const bytes = encodeDynamicIndex(init);
        const index = DynamicIndex.parse(bytes);
        expect(toHex(index.uuid)).toBe(toHex(init.uuid));
        expect(index.ctime).toBe(init.ctime);
        expect(index.count).toBe(init.entries.length);
        expect(index.size).toBe(init.entries.at(-1)?.end ?? 0);
        expect([...index].map(({ end, digest }) => ({ end, digest: toHex(digest) }))).toEqual(
          init.entries.map(({ end, digest }) => ({ end, digest: toHex(digest) })),
        );
        expect(toHex(index.indexCsum)).toBe(toHex(sha256(bytes.subarray(4096))));
        index.verifyCsum();
      }),
      { numRuns: 150 },
    );
  });

  it('chunkForOffset agrees with a linear scan over the ends', () => {
    const withOffsets = dynamicInit
      .filter((init) => init.entries.length > 0)
      .chain((init) => {
        const size = init.entries.at(-1)?.end ?? 1;
        const nearEnds = init.entries.flatMap(({ end }) => [end - 1, end].filter((o) => o < size));
        const offset = fc.oneof(
          fc.integer({ min: 0, max: size - 1 }),
          fc.constantFrom(0, ...nearEnds),
        );
        return fc.tuple(fc.constant(init), fc.array(offset, { minLength: 1, maxLength: 10 }));
      });
    fc.assert(
      fc.property(withOffsets, ([init, offsets]) => {
        const index = DynamicIndex.parse(encodeDynamicIndex(init));
        for (const offset of offsets) {
          let expected = 0;
          while ((init.entries[expected]?.end ?? Infinity) <= offset) expected++;
          expect(index.chunkForOffset(offset)).toBe(expected);
          const { start, end } = index.chunkRange(expected);
          expect(start <= offset && offset < end).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('random bytes never crash the parser: a BurrowError or a consistent index', () => {
    const magic = hex('1c914ea519bab3cd');
    const candidate = fc
      .record({
        withMagic: fc.boolean(),
        fullHeader: fc.boolean(),
        body: fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          // Entries with small ends, so some bodies are valid and some just barely not.
          fc
            .array(
              fc.tuple(
                fc.integer({ min: 0, max: 50 }),
                fc.uint8Array({ minLength: 32, maxLength: 32 }),
              ),
              { maxLength: 8 },
            )
            .map((list) => {
              const out = new Uint8Array(40 * list.length);
              const view = new DataView(out.buffer);
              list.forEach(([end, digest], i) => {
                view.setBigUint64(40 * i, BigInt(end), true);
                out.set(digest, 40 * i + 8);
              });
              return out;
            }),
        ),
        ctime: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      })
      .map((c) => {
        if (!c.fullHeader)
          return concatBytes(c.withMagic ? magic : new Uint8Array(0), c.body.subarray(0, 100));
        const header = new Uint8Array(4096);
        if (c.withMagic) header.set(magic, 0);
        new DataView(header.buffer).setBigInt64(24, c.ctime, true);
        return concatBytes(header, c.body);
      });
    fc.assert(
      fc.property(candidate, (bytes) => {
        let index: DynamicIndex;
        try {
          index = DynamicIndex.parse(bytes);
        } catch (error) {
          expect(isBurrowError(error)).toBe(true);
          return;
        }
        expect(index.count * 40 + 4096).toBe(bytes.byteLength);
        let previous = 0;
        for (const chunk of index) {
          expect(chunk.start).toBe(previous);
          expect(chunk.end).toBeGreaterThan(chunk.start);
          expect(index.chunkForOffset(chunk.start)).toBe(chunk.position);
          previous = chunk.end;
        }
        expect(previous).toBe(index.size);
      }),
      { numRuns: 500 },
    );
  });
});
