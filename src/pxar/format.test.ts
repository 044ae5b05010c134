import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import {
  PXAR,
  PXAR_TYPE_SOURCES,
  checkFileName,
  fileNameProblem,
  goodbyeTreeOrder,
  joinPath,
  linuxFlagsFromPxar,
  pxarFlagsFromLinux,
  pxarHash,
  pxarHashTs,
  splitPath,
} from './format.js';
import { nativePxarHash } from '../lib/native-fs.js';
import { codeOf } from '../../test/helpers/error-code.js';

const enc = new TextEncoder();

/** An independent SipHash-2-4 on BigInt, straight from the reference description. */
function sipHashReference(k0: bigint, k1: bigint, data: Uint8Array): bigint {
  const M = (1n << 64n) - 1n;
  const rotl = (x: bigint, b: bigint): bigint => ((x << b) | (x >> (64n - b))) & M;
  let v0 = k0 ^ 0x736f6d6570736575n;
  let v1 = k1 ^ 0x646f72616e646f6dn;
  let v2 = k0 ^ 0x6c7967656e657261n;
  let v3 = k1 ^ 0x7465646279746573n;
  const round = (): void => {
    v0 = (v0 + v1) & M;
    v1 = rotl(v1, 13n) ^ v0;
    v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & M;
    v3 = rotl(v3, 16n) ^ v2;
    v0 = (v0 + v3) & M;
    v3 = rotl(v3, 21n) ^ v0;
    v2 = (v2 + v1) & M;
    v1 = rotl(v1, 17n) ^ v2;
    v2 = rotl(v2, 32n);
  };
  const padded = new Uint8Array(Math.floor(data.length / 8) * 8 + 8);
  padded.set(data);
  padded[padded.length - 1] = data.length & 0xff;
  const view = new DataView(padded.buffer);
  for (let i = 0; i < padded.length; i += 8) {
    const m = view.getBigUint64(i, true);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  v2 ^= 0xffn;
  for (let i = 0; i < 4; i++) round();
  return v0 ^ v1 ^ v2 ^ v3;
}

describe('pxar type constants (§3)', () => {
  it('are SipHash-2-4 of their strings under the filename key', () => {
    for (const [name, source] of Object.entries(PXAR_TYPE_SOURCES)) {
      expect(pxarHash(enc.encode(source)), name).toBe(PXAR[name as keyof typeof PXAR]);
    }
  });

  it('the key is the first 16 bytes of SHA-1("PROXMOX ARCHIVE FORMAT") (§7.1)', () => {
    const sha1 = createHash('sha1').update('PROXMOX ARCHIVE FORMAT').digest('hex');
    expect(sha1.slice(0, 32)).toBe('83ac3f1cfbb450dbaa4f1b6879369fbd');
  });
});

const nativeHash = nativePxarHash();

describe('filename hash (§7.1)', () => {
  it("pxarHash is the addon's, which is loaded here", () => {
    expect(nativeHash).toBeDefined();
    // Both give the same hashes, so a value cannot tell them apart: only the addon checks its
    // argument (the TypeScript fallback hashes a string's characters without complaint).
    expect(() => pxarHash('hello.txt' as unknown as Uint8Array)).toThrow(TypeError);
  });

  const paths: [string, (data: Uint8Array) => bigint][] = [
    ['pxarHash', pxarHash],
    ['the TypeScript fallback', pxarHashTs],
    ['the addon', (data) => nativeHash!(data)],
  ];

  describe.each(paths)('%s', (_name, hash) => {
    it('matches the spec vectors', () => {
      expect(hash(enc.encode('a'))).toBe(0x0c26e9067c2c7bcfn);
      expect(hash(enc.encode('hello.txt'))).toBe(0x9b1ee0b84c66190cn);
      expect(hash(enc.encode('etc'))).toBe(0xd0c229edbd411e9an);
      expect(hash(enc.encode('.pxarexclude-cli'))).toBe(0x046975ce672e09ebn);
      expect(hash(Uint8Array.of(0xc3, 0xa4))).toBe(0x26b1ec6690696abfn);
      expect(hash(enc.encode('a.txt'))).toBe(0xdc392d66b611aa72n);
    });

    it('equals a BigInt reference SipHash for any input length', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 300 }), (data) => {
          expect(hash(data)).toBe(sipHashReference(0x83ac3f1cfbb450dbn, 0xaa4f1b6879369fbdn, data));
        }),
        { numRuns: 500 },
      );
    });

    it('hashes a view by its own bytes, not its buffer', () => {
      const buffer = enc.encode('xxhello.txtyy');
      expect(hash(buffer.subarray(2, 11))).toBe(0x9b1ee0b84c66190cn);
      expect(hash(buffer.subarray(5, 5))).toBe(hash(new Uint8Array(0)));
    });
  });

  it('the addon refuses what is not bytes', () => {
    expect(() => nativeHash!('hello.txt' as unknown as Uint8Array)).toThrow(TypeError);
  });
});

describe('goodbye tree order (§7.3)', () => {
  const table: Record<number, number[]> = {
    1: [0],
    2: [1, 0],
    3: [1, 0, 2],
    4: [2, 1, 3, 0],
    5: [3, 1, 4, 0, 2],
    6: [3, 1, 5, 0, 2, 4],
    7: [3, 1, 5, 0, 2, 4, 6],
    8: [4, 2, 6, 1, 3, 5, 7, 0],
    9: [5, 3, 7, 1, 4, 6, 8, 0, 2],
    10: [6, 3, 8, 1, 5, 7, 9, 0, 2, 4],
    11: [7, 3, 9, 1, 5, 8, 10, 0, 2, 4, 6],
    12: [7, 3, 10, 1, 5, 9, 11, 0, 2, 4, 6, 8],
    13: [7, 3, 11, 1, 5, 9, 12, 0, 2, 4, 6, 8, 10],
    14: [7, 3, 11, 1, 5, 9, 13, 0, 2, 4, 6, 8, 10, 12],
    15: [7, 3, 11, 1, 5, 9, 13, 0, 2, 4, 6, 8, 10, 12, 14],
    16: [8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0],
    17: [9, 5, 13, 3, 7, 11, 15, 1, 4, 6, 8, 10, 12, 14, 16, 0, 2],
  };
  it('matches the upstream permutation table', () => {
    for (const [n, perm] of Object.entries(table))
      expect(goodbyeTreeOrder(Number(n))).toEqual(perm);
  });

  it('is a search tree over sorted input for any size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), (n) => {
        const order = goodbyeTreeOrder(n);
        expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
        // Every slot's left subtree holds smaller sorted indexes, its right subtree larger ones.
        const check = (slot: number, lo: number, hi: number): void => {
          if (slot >= n) return;
          const v = order[slot]!;
          expect(v).toBeGreaterThanOrEqual(lo);
          expect(v).toBeLessThan(hi);
          check(2 * slot + 1, lo, v);
          check(2 * slot + 2, v + 1, hi);
        };
        check(0, 0, n);
      }),
      { numRuns: 200 },
    );
  });
});

describe('file names (§5)', () => {
  it('rejects empty, slash, NUL, . and .., overlong', () => {
    for (const bad of ['', 'a/b', '/', '.', '..', 'x'.repeat(4097)]) {
      expect(fileNameProblem(enc.encode(bad)), bad).toBeDefined();
      expect(codeOf(() => checkFileName(enc.encode(bad)))).toBe('PXAR_BAD_NAME');
    }
    expect(fileNameProblem(Uint8Array.of(0x61, 0, 0x62))).toBeDefined();
    for (const good of ['a', '...', '.a', '..a', 'x'.repeat(4096), 'ä b'])
      expect(fileNameProblem(enc.encode(good)), good).toBeUndefined();
    expect(fileNameProblem(Uint8Array.of(0xff, 0xfe))).toBeUndefined();
  });

  it('joins and splits paths', () => {
    const p = joinPath(joinPath(new Uint8Array(), enc.encode('a')), enc.encode('b'));
    expect(Buffer.from(p).toString()).toBe('a/b');
    expect(splitPath(enc.encode('/a//b/')).map((x) => Buffer.from(x).toString())).toEqual([
      'a',
      'b',
    ]);
  });
});

describe('attribute flags (§4)', () => {
  it('map Linux chattr bits to pxar bits and back', () => {
    expect(pxarFlagsFromLinux(0x40)).toBe(0x100000); // nodump
    expect(pxarFlagsFromLinux(0x10 | 0x20)).toBe(0x400000 | 0x10000); // immutable | append
    expect(linuxFlagsFromPxar(0x2000000)).toBe(0x20000000); // projinherit
    expect(pxarFlagsFromLinux(0x80000)).toBe(0); // FS_EXTENT_FL has no pxar bit
  });
});
