import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { concatBytes, toHex } from '../lib/bytes.js';
import { isBurrowError } from '../lib/errors.js';
import type { ErrorCode } from '../lib/errors.js';
import {
  FixedIndex,
  decodeFixedIndexHeader,
  encodeFixedIndex,
  encodeFixedIndexHeader,
} from './fixed-index.js';

const MiB = 1024 * 1024;
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const filled = (n: number, value: number): Uint8Array => new Uint8Array(n).fill(value);
const UUID = Uint8Array.from({ length: 16 }, (_, i) => i + 1);

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

/** Digests distinct per position so order mistakes show. */
const digestsFor = (count: number): Uint8Array[] =>
  Array.from({ length: count }, (_, i) => sha256(Uint8Array.of(i & 0xff, i >> 8)));

describe('fixed index header, byte for byte (pbs-formats §4.1)', () => {
  it('puts magic, uuid, ctime, csum, size and chunk size at their offsets, reserved zero', () => {
    const size = 0x1_0000_0001; // 4 GiB + 1: needs the high u64 word
    const chunkSize = 4 * MiB;
    const count = 1025; // ceil((4 GiB + 1) / 4 MiB)
    const digests = digestsFor(count);
    const bytes = encodeFixedIndex({ uuid: UUID, ctime: 0x663a39ef, size, chunkSize, digests });

    expect(bytes.byteLength).toBe(4096 + 32 * count);
    expect(toHex(bytes.subarray(0, 8))).toBe('2f7f41ed91fd0fcd');
    expect(toHex(bytes.subarray(8, 24))).toBe('0102030405060708090a0b0c0d0e0f10');
    expect(toHex(bytes.subarray(24, 32))).toBe('ef393a6600000000');
    expect(toHex(bytes.subarray(32, 64))).toBe(toHex(sha256(...digests)));
    expect(toHex(bytes.subarray(64, 72))).toBe('0100000001000000');
    expect(toHex(bytes.subarray(72, 80))).toBe('0000400000000000');
    expect(bytes.subarray(80, 4096).every((b) => b === 0)).toBe(true);
    expect(toHex(bytes.subarray(4096))).toBe(toHex(concatBytes(...digests)));
  });

  it('writes a negative ctime as two’s complement i64', () => {
    const header = encodeFixedIndexHeader({
      uuid: UUID,
      ctime: -2,
      indexCsum: filled(32, 0xaa),
      size: 1,
      chunkSize: 1,
    });
    expect(header.byteLength).toBe(4096);
    expect(toHex(header.subarray(24, 32))).toBe('feffffffffffffff');
    expect(toHex(header.subarray(32, 64))).toBe('aa'.repeat(32));
    expect(decodeFixedIndexHeader(header).ctime).toBe(-2);
  });

  it('decodes a header built by hand from the spec layout', () => {
    const header = new Uint8Array(4096);
    header.set(hex('2f7f41ed91fd0fcd'), 0);
    header.set(UUID, 8);
    header.set(hex('00e1f50500000000'), 24); // 100000000
    header.set(filled(32, 7), 32);
    header.set(hex('0000a00000000000'), 64); // 10 MiB
    header.set(hex('0000400000000000'), 72); // 4 MiB
    const decoded = decodeFixedIndexHeader(header);
    expect(decoded.ctime).toBe(100000000);
    expect(decoded.size).toBe(10 * MiB);
    expect(decoded.chunkSize).toBe(4 * MiB);
    expect(decoded.count).toBe(3);
    expect(decoded.fileSize).toBe(4096 + 96);
    expect(toHex(decoded.uuid)).toBe(toHex(UUID));
    expect(toHex(decoded.indexCsum)).toBe('07'.repeat(32));
  });
});

describe('fixed index of zero chunks (pbs-protocol §11 #8)', () => {
  const ZERO_4M = 'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8';

  it('the 4 MiB zero chunk digest matches the spec vector', () => {
    expect(toHex(sha256(new Uint8Array(4 * MiB)))).toBe(ZERO_4M);
  });

  it('a 10 MiB zero image: 4 + 4 + 2 MiB chunks, csum over the three digests', () => {
    const zero2 = sha256(new Uint8Array(2 * MiB));
    const digests = [hex(ZERO_4M), hex(ZERO_4M), zero2];
    const index = FixedIndex.parse(
      encodeFixedIndex({ uuid: UUID, ctime: 1, size: 10 * MiB, chunkSize: 4 * MiB, digests }),
    );
    expect(index.count).toBe(3);
    expect(toHex(index.digest(0))).toBe(ZERO_4M);
    expect(toHex(index.digest(1))).toBe(ZERO_4M);
    expect(toHex(index.digest(2))).toBe(toHex(zero2));
    expect(index.chunkRange(2)).toEqual({ start: 8 * MiB, end: 10 * MiB });
    // Parsed from a Buffer (as read from disk), a digest is still a copy of its own, not a view
    // that would pin the index (or copy all of it when posted to a worker).
    const fromDisk = FixedIndex.parse(
      Buffer.from(
        encodeFixedIndex({ uuid: UUID, ctime: 1, size: 10 * MiB, chunkSize: 4 * MiB, digests }),
      ),
    );
    expect(fromDisk.digest(2).buffer.byteLength).toBe(32);
    expect(toHex(fromDisk.digest(2))).toBe(toHex(zero2));
    expect(toHex(index.indexCsum)).toBe(toHex(sha256(hex(ZERO_4M), hex(ZERO_4M), zero2)));
    index.verifyCsum();
    expect(index.chunkForOffset(4 * MiB - 1)).toBe(0);
    expect(index.chunkForOffset(4 * MiB)).toBe(1);
    expect(index.chunkForOffset(10 * MiB - 1)).toBe(2);
    expectCode(() => index.chunkForOffset(10 * MiB), 'INDEX_OUT_OF_RANGE');
  });
});

describe('FixedIndex.parse rejects bad input', () => {
  const good = encodeFixedIndex({
    uuid: UUID,
    ctime: 5,
    size: 10,
    chunkSize: 4,
    digests: digestsFor(3),
  });

  it('every truncation and one extra byte: INDEX_BAD_SIZE', () => {
    for (let length = 0; length < good.byteLength; length++) {
      expectCode(() => FixedIndex.parse(good.subarray(0, length)), 'INDEX_BAD_SIZE');
    }
    expectCode(() => FixedIndex.parse(concatBytes(good, new Uint8Array(1))), 'INDEX_BAD_SIZE');
    expectCode(() => FixedIndex.parse(concatBytes(good, new Uint8Array(32))), 'INDEX_BAD_SIZE');
  });

  it('wrong magic: INDEX_BAD_MAGIC, naming the other kind when it is a .didx', () => {
    for (let i = 0; i < 8; i++) {
      const bad = good.slice();
      bad[i] = (bad[i] ?? 0) ^ 0x01;
      expectCode(() => FixedIndex.parse(bad), 'INDEX_BAD_MAGIC');
    }
    const didx = good.slice();
    didx.set(hex('1c914ea519bab3cd'), 0);
    const error = thrownBy(() => FixedIndex.parse(didx));
    expect(isBurrowError(error, 'INDEX_BAD_MAGIC')).toBe(true);
    expect(String((error as Error).message)).toMatch(/dynamic index/);
  });

  it('bad geometry: INDEX_BAD_HEADER', () => {
    const withU64 = (offset: number, value: bigint): Uint8Array => {
      const bytes = good.slice();
      new DataView(bytes.buffer).setBigUint64(offset, value, true);
      return bytes;
    };
    expectCode(() => FixedIndex.parse(withU64(64, 0n)), 'INDEX_BAD_HEADER'); // size 0
    expectCode(() => FixedIndex.parse(withU64(64, 2n ** 53n)), 'INDEX_BAD_HEADER');
    expectCode(() => FixedIndex.parse(withU64(64, 2n ** 64n - 1n)), 'INDEX_BAD_HEADER');
    expectCode(() => FixedIndex.parse(withU64(72, 0n)), 'INDEX_BAD_HEADER'); // chunk size 0
    expectCode(() => FixedIndex.parse(withU64(72, 3n)), 'INDEX_BAD_HEADER');
    expectCode(() => FixedIndex.parse(withU64(72, 4n * 1024n * 1024n + 1n)), 'INDEX_BAD_HEADER');
    expectCode(() => FixedIndex.parse(withU64(72, 2n ** 60n)), 'INDEX_BAD_HEADER');
    expectCode(() => FixedIndex.parse(withU64(24, 2n ** 62n)), 'INDEX_BAD_HEADER'); // ctime
    // A valid header whose implied length disagrees with the bytes.
    expectCode(() => FixedIndex.parse(withU64(64, 13n)), 'INDEX_BAD_SIZE');
    expectCode(() => FixedIndex.parse(withU64(72, 1n)), 'INDEX_BAD_SIZE');
  });

  it('checks the csum only on request', () => {
    const index = FixedIndex.parse(good);
    index.verifyCsum();
    const body = good.slice();
    body[4096 + 40] = (body[4096 + 40] ?? 0) ^ 0x80;
    const damaged = FixedIndex.parse(body);
    expectCode(() => damaged.verifyCsum(), 'INDEX_CSUM_MISMATCH');
    const csum = good.slice();
    csum[63] = (csum[63] ?? 0) ^ 1;
    expectCode(() => FixedIndex.parse(csum).verifyCsum(), 'INDEX_CSUM_MISMATCH');
  });

  it('refuses positions and offsets outside the index', () => {
    const index = FixedIndex.parse(good);
    for (const bad of [-1, 3, 1.5, Number.NaN, Infinity]) {
      expectCode(() => index.digest(bad), 'INDEX_OUT_OF_RANGE');
      expectCode(() => index.chunkRange(bad), 'INDEX_OUT_OF_RANGE');
    }
    for (const bad of [-1, 10, 0.5, Number.NaN])
      expectCode(() => index.chunkForOffset(bad), 'INDEX_OUT_OF_RANGE');
  });

  it('refuses bad encode arguments', () => {
    expectCode(
      () =>
        encodeFixedIndex({ uuid: UUID, ctime: 0, size: 10, chunkSize: 4, digests: digestsFor(2) }),
      'INVALID_ARGUMENT',
    );
    expectCode(
      () => encodeFixedIndex({ uuid: UUID, ctime: 0, size: 0, chunkSize: 4, digests: [] }),
      'INVALID_ARGUMENT',
    );
    expectCode(
      () =>
        encodeFixedIndex({ uuid: UUID, ctime: 0, size: 10, chunkSize: 6, digests: digestsFor(2) }),
      'INVALID_ARGUMENT',
    );
    expectCode(
      () =>
        encodeFixedIndex({
          uuid: UUID,
          ctime: 0,
          size: 4,
          chunkSize: 4,
          digests: [new Uint8Array(31)],
        }),
      'INVALID_ARGUMENT',
    );
  });
});

/** A valid fixed index description: chunk size 2^k, 1..40 chunks, last one possibly short. */
const fixedInit = fc
  .record({
    shift: fc.integer({ min: 0, max: 24 }),
    count: fc.integer({ min: 1, max: 40 }),
    tailFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    uuid: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    ctime: fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
  })
  .chain(({ shift, count, tailFraction, uuid, ctime }) => {
    const chunkSize = 2 ** shift;
    const tail = Math.max(1, Math.ceil(tailFraction * chunkSize));
    const size = (count - 1) * chunkSize + tail;
    return fc
      .array(fc.uint8Array({ minLength: 32, maxLength: 32 }), {
        minLength: count,
        maxLength: count,
      })
      .map((digests) => ({ uuid, ctime, size, chunkSize, digests }));
  });

describe('fixed index properties', () => {
  it('parse(encode(x)) gives x back, with a valid csum', () => {
    fc.assert(
      fc.property(fixedInit, (init) => {
        const index = FixedIndex.parse(encodeFixedIndex(init));
        expect(toHex(index.uuid)).toBe(toHex(init.uuid));
        expect(index.ctime).toBe(init.ctime);
        expect(index.size).toBe(init.size);
        expect(index.chunkSize).toBe(init.chunkSize);
        expect(index.count).toBe(init.digests.length);
        expect([...index].map((c) => toHex(c.digest))).toEqual(init.digests.map(toHex));
        expect(toHex(index.indexCsum)).toBe(toHex(sha256(...init.digests)));
        index.verifyCsum();
      }),
      { numRuns: 100 },
    );
  });

  it('chunkForOffset agrees with a linear scan over chunkRange', () => {
    fc.assert(
      fc.property(
        fixedInit,
        fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
        (init, where) => {
          const index = FixedIndex.parse(encodeFixedIndex(init));
          const offset = Math.floor(where * index.size);
          let expected = -1;
          for (let i = 0; i < index.count; i++) {
            const { start, end } = index.chunkRange(i);
            if (start <= offset && offset < end) expected = i;
          }
          expect(index.chunkForOffset(offset)).toBe(expected);
          // Ranges tile the image exactly.
          expect(index.chunkRange(0).start).toBe(0);
          expect(index.chunkRange(index.count - 1).end).toBe(index.size);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('random bytes never crash the parser: a BurrowError or a consistent index', () => {
    const magic = hex('2f7f41ed91fd0fcd');
    const u64 = fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.integer({ min: 0, max: 64 }).map((n) => (n === 64 ? 0n : 2n ** BigInt(n))),
      fc.integer({ min: 0, max: 5000 }).map(BigInt),
    );
    const candidate = fc
      .record({
        withMagic: fc.boolean(),
        size: u64,
        chunkSize: u64,
        ctime: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
        bodyLength: fc.oneof(
          fc.integer({ min: 0, max: 400 }),
          fc.integer({ min: 0, max: 12 }).map((n) => 32 * n),
        ),
        fullHeader: fc.boolean(),
        noise: fc.uint8Array({ maxLength: 200 }),
      })
      .map((c) => {
        if (!c.fullHeader) return concatBytes(c.withMagic ? magic : new Uint8Array(0), c.noise);
        const bytes = new Uint8Array(4096 + c.bodyLength);
        const view = new DataView(bytes.buffer);
        if (c.withMagic) bytes.set(magic, 0);
        view.setBigInt64(24, c.ctime, true);
        view.setBigUint64(64, c.size, true);
        view.setBigUint64(72, c.chunkSize, true);
        bytes.set(c.noise.subarray(0, Math.min(c.noise.byteLength, c.bodyLength)), 4096);
        return bytes;
      });
    fc.assert(
      fc.property(candidate, (bytes) => {
        let index: FixedIndex;
        try {
          index = FixedIndex.parse(bytes);
        } catch (error) {
          expect(isBurrowError(error)).toBe(true);
          return;
        }
        expect(index.fileSize).toBe(bytes.byteLength);
        expect(index.count * 32 + 4096).toBe(bytes.byteLength);
        expect([...index].length).toBe(index.count);
        expect(index.chunkForOffset(index.size - 1)).toBe(index.count - 1);
      }),
      { numRuns: 500 },
    );
  });
});
