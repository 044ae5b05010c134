import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isBurrowError } from '../lib/errors.js';
import { codeOf } from '../../test/helpers/error-code.js';
import {
  decodeSvarint,
  decodeVarint,
  encodeSvarint,
  encodeVarint,
  svarintLength,
  varintLength,
} from './varint.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Independent model: the binary digits of |v| cut into 7-bit groups from the least significant
 * end, written low group first (pxar-format §10a).
 */
function groups(magnitude: bigint): number[] {
  const bits = magnitude.toString(2);
  const out: number[] = [];
  for (let end = bits.length; end > 0; end -= 7) {
    out.push(parseInt(bits.slice(Math.max(0, end - 7), end), 2));
  }
  return out;
}
function modelVarint(v: bigint): string {
  const g = groups(v);
  return toHex(Uint8Array.from(g.map((d, i) => (i < g.length - 1 ? d | 0x80 : d))));
}
function modelSvarint(v: bigint): string {
  if (v >= 0n) return modelVarint(v);
  return toHex(Uint8Array.from([...groups(-v).map((d) => d | 0x80), 0]));
}

function errorOf(fn: () => unknown): { code: string; details: Record<string, unknown> } {
  try {
    fn();
  } catch (error) {
    if (isBurrowError(error)) return { code: error.code, details: { ...error.details } };
    throw error;
  }
  throw new Error('expected an error');
}

describe('varint known answers (pxar-format §10a)', () => {
  it.each([
    [0, '00'],
    [127, '7f'],
    [128, '8001'],
    [300, 'ac02'],
    [1430487000, 'd8ff8daa05'],
  ])('%d <-> %s (varint and svarint)', (value, bytes) => {
    expect(toHex(encodeVarint(value))).toBe(bytes);
    expect(toHex(encodeSvarint(value))).toBe(bytes);
    expect(decodeVarint(hex(bytes))).toEqual({ value, length: bytes.length / 2 });
    expect(decodeSvarint(hex(bytes))).toEqual({ value, length: bytes.length / 2 });
    expect(varintLength(value)).toBe(bytes.length / 2);
  });

  it.each([
    [-1, '8100'],
    [-128, '808100'],
  ])('svarint %d <-> %s', (value, bytes) => {
    expect(toHex(encodeSvarint(value))).toBe(bytes);
    expect(decodeSvarint(hex(bytes))).toEqual({ value, length: bytes.length / 2 });
    expect(svarintLength(value)).toBe(bytes.length / 2);
  });

  it('handles the ends of the safe-integer range', () => {
    // 2^53-1 is seven groups of 127 and a top group of 15.
    const max = 'ffffffffffffff0f';
    expect(toHex(encodeVarint(Number.MAX_SAFE_INTEGER))).toBe(max);
    expect(decodeVarint(hex(max)).value).toBe(Number.MAX_SAFE_INTEGER);
    expect(toHex(encodeSvarint(-Number.MAX_SAFE_INTEGER))).toBe('ffffffffffffff8f00');
    expect(decodeSvarint(hex('ffffffffffffff8f00')).value).toBe(-Number.MAX_SAFE_INTEGER);
  });

  it('decodes at an offset and reports the bytes consumed', () => {
    const bytes = hex('ffff ac02 8100 55');
    expect(decodeVarint(bytes, 2)).toEqual({ value: 300, length: 2 });
    expect(decodeSvarint(bytes, 4)).toEqual({ value: -1, length: 2 });
  });
});

describe('varint decoder limits', () => {
  it('accepts a non-minimal encoding within 10 bytes, as the reference decoder does', () => {
    expect(decodeVarint(hex('80808080808080808000'))).toEqual({ value: 0, length: 10 });
    expect(decodeVarint(hex('8100'))).toEqual({ value: 1, length: 2 });
  });

  it('rejects more than 10 bytes without an end marker', () => {
    expect(codeOf(() => decodeVarint(hex('ffffffffffffffffffff01')))).toBe('CATALOG_INVALID');
    expect(codeOf(() => decodeVarint(hex('8080808080808080808000')))).toBe('CATALOG_INVALID');
  });

  it('accepts up to 11 svarint bytes and rejects a 12th', () => {
    expect(decodeSvarint(hex('8080808080808080808000'))).toEqual({ value: 0, length: 11 });
    expect(codeOf(() => decodeSvarint(hex('808080808080808080808000')))).toBe('CATALOG_INVALID');
    expect(codeOf(() => decodeSvarint(hex('8181818181818181818181')))).toBe('CATALOG_INVALID');
  });

  it('rejects values beyond 2^53-1 instead of rounding them', () => {
    // 2^53: seven zero groups, then 16.
    expect(codeOf(() => decodeVarint(hex('8080808080808010')))).toBe('CATALOG_INVALID');
    expect(codeOf(() => decodeSvarint(hex('8080808080808010')))).toBe('CATALOG_INVALID');
    expect(codeOf(() => decodeSvarint(hex('808080808080809000')))).toBe('CATALOG_INVALID');
    // u64::MAX as the reference writes it.
    expect(codeOf(() => decodeVarint(hex('ffffffffffffffffff01')))).toBe('CATALOG_INVALID');
  });

  it('rejects truncated input', () => {
    expect(codeOf(() => decodeVarint(new Uint8Array(0)))).toBe('CATALOG_INVALID');
    expect(codeOf(() => decodeVarint(hex('80')))).toBe('CATALOG_INVALID');
    expect(codeOf(() => decodeSvarint(hex('8181')))).toBe('CATALOG_INVALID');
  });

  it('names the file and the absolute offset in errors', () => {
    const err = errorOf(() => decodeVarint(hex('00 80'), 1, { base: 100, file: 'x.pcat1' }));
    expect(err.code).toBe('CATALOG_INVALID');
    expect(err.details).toMatchObject({ offset: 101, file: 'x.pcat1' });
  });

  it('refuses to encode what it cannot represent', () => {
    for (const bad of [-1, 1.5, Number.NaN, Infinity, 2 ** 53]) {
      expect(codeOf(() => encodeVarint(bad))).toBe('INVALID_ARGUMENT');
    }
    for (const bad of [0.5, Number.NaN, -(2 ** 53)]) {
      expect(codeOf(() => encodeSvarint(bad))).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('varint properties', () => {
  it('varint matches the model and round-trips over all safe naturals', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (v) => {
        const bytes = encodeVarint(v);
        expect(toHex(bytes)).toBe(modelVarint(BigInt(v)));
        expect(decodeVarint(bytes)).toEqual({ value: v, length: bytes.byteLength });
        expect(varintLength(v)).toBe(bytes.byteLength);
      }),
      { numRuns: 2000 },
    );
  });

  it('svarint matches the model and round-trips over all safe integers', () => {
    fc.assert(
      fc.property(fc.maxSafeInteger(), (v) => {
        const bytes = encodeSvarint(v);
        expect(toHex(bytes)).toBe(modelSvarint(BigInt(v)));
        const decoded = decodeSvarint(bytes);
        expect(decoded.length).toBe(bytes.byteLength);
        expect(Object.is(decoded.value, v === 0 ? 0 : v)).toBe(true);
        expect(svarintLength(v)).toBe(bytes.byteLength);
      }),
      { numRuns: 2000 },
    );
  });

  it('decoders never throw anything but CATALOG_INVALID on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 14 }), (bytes) => {
        for (const decode of [decodeVarint, decodeSvarint]) {
          const code = codeOf(() => decode(bytes));
          expect(code === undefined || code === 'CATALOG_INVALID').toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
