import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { toHex } from '../lib/bytes.js';
import { isBurrowError } from '../lib/errors.js';
import {
  IndexCsumBuilder,
  computeIndexCsum,
  decodeCommonHeader,
  encodeCommonHeader,
  indexKindOfFile,
  indexKindOfMagic,
  readU64,
  viewOf,
  writeU64,
} from './index-common.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));

describe('indexKindOfFile (pbs-formats §5.1: last extension only)', () => {
  it.each([
    ['drive-scsi0.img.fidx', 'fixed'],
    ['root.pxar.didx', 'dynamic'],
    ['catalog.pcat1.didx', 'dynamic'],
    ['/srv/store/vm/100/2024-01-01T00:00:00Z/drive-efidisk0.img.fidx', 'fixed'],
    ['a.didx/b.fidx', 'fixed'],
    ['index.json.blob', undefined],
    ['x.fidx.blob', undefined],
    ['root.pxar', undefined],
    ['drive-scsi0.img.tmp_fidx', undefined],
    ['.fidx', undefined],
    ['fidx', undefined],
    ['x.FIDX', undefined],
    ['a.fidx/b', undefined],
  ])('%s -> %s', (name, kind) => {
    expect(indexKindOfFile(name)).toBe(kind);
  });
});

describe('indexKindOfMagic', () => {
  it('recognises both magics from the spec and nothing else', () => {
    expect(indexKindOfMagic(hex('2f7f41ed91fd0fcd'))).toBe('fixed');
    expect(indexKindOfMagic(hex('1c914ea519bab3cd00ff'))).toBe('dynamic');
    expect(indexKindOfMagic(hex('1c914ea519bab3'))).toBeUndefined();
    expect(indexKindOfMagic(hex('42ab3807be8370a1'))).toBeUndefined();
  });
});

describe('index csum', () => {
  it('is SHA-256 of the body; the builder gives the same in pieces', () => {
    const body = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
    const expected = createHash('sha256').update(body).digest('hex');
    expect(toHex(computeIndexCsum(body))).toBe(expected);
    const builder = new IndexCsumBuilder();
    builder.update(body.subarray(0, 333));
    builder.update(body.subarray(333));
    expect(toHex(builder.digest())).toBe(expected);
    expect(() => builder.digest()).toThrow();
  });
  it('of an empty body is SHA-256 of nothing', () => {
    expect(toHex(computeIndexCsum(new Uint8Array(0)))).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
  });
});

describe('u64 helpers', () => {
  it('round-trip every safe integer and refuse larger values', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        const bytes = new Uint8Array(8);
        writeU64(viewOf(bytes), 0, n);
        expect(readU64(viewOf(bytes), 0)).toBe(n);
        expect(viewOf(bytes).getBigUint64(0, true)).toBe(BigInt(n));
      }),
    );
    const big = new Uint8Array(8);
    viewOf(big).setBigUint64(0, 2n ** 53n, true);
    expect(readU64(viewOf(big), 0)).toBeUndefined();
    viewOf(big).setBigUint64(0, 2n ** 53n - 1n, true);
    expect(readU64(viewOf(big), 0)).toBe(Number.MAX_SAFE_INTEGER);
  });
});

describe('common header', () => {
  it('rejects a ctime beyond 2^53 as INDEX_BAD_HEADER', () => {
    const header = encodeCommonHeader('dynamic', {
      uuid: new Uint8Array(16),
      ctime: 0,
      indexCsum: new Uint8Array(32),
    });
    viewOf(header).setBigInt64(24, 2n ** 60n, true);
    expect(() => decodeCommonHeader('dynamic', header)).toThrow(
      expect.objectContaining({ code: 'INDEX_BAD_HEADER' }),
    );
    viewOf(header).setBigInt64(24, -(2n ** 60n), true);
    expect(() => decodeCommonHeader('dynamic', header)).toThrow(
      expect.objectContaining({ code: 'INDEX_BAD_HEADER' }),
    );
  });
  it('refuses bad encode arguments', () => {
    const ok = { uuid: new Uint8Array(16), ctime: 0, indexCsum: new Uint8Array(32) };
    for (const bad of [
      { ...ok, uuid: new Uint8Array(15) },
      { ...ok, ctime: 1.5 },
      { ...ok, ctime: Number.NaN },
      { ...ok, indexCsum: new Uint8Array(31) },
    ]) {
      let caught: unknown;
      try {
        encodeCommonHeader('fixed', bad);
      } catch (error) {
        caught = error;
      }
      expect(isBurrowError(caught, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});
