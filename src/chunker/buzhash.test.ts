import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isBurrowError } from '../lib/errors.js';
import { toHex } from '../lib/bytes.js';
import {
  forceNativeFallback,
  nativeAvailable,
  nativeBuzhashKernel,
  nativeBuzhashScan,
} from '../lib/native-fs.js';
import {
  BUZHASH_TABLE,
  Chunker,
  ChunkSplitter,
  chunkBoundaries,
  chunkerParams,
  splitIntoChunks,
  splitIntoChunksAsync,
} from './buzhash.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const sha256 = (d: Uint8Array): Uint8Array => createHash('sha256').update(d).digest();
const lengths = (ends: number[]): number[] => ends.map((e, i) => e - (i === 0 ? 0 : ends[i - 1]!));

/** Vector #1/#2 input: u32 LE counter 0..262143 (1 MiB). */
function counterInput(): Uint8Array {
  const u = new Uint32Array(262144);
  for (let i = 0; i < u.length; i++) u[i] = i;
  return new Uint8Array(u.buffer);
}

// SHA-256 of a single short message (< 56 bytes), in JS: node:crypto costs ~3 µs per call, far
// too slow for the 1.3 million digests of vector #3's input. Checked against node:crypto below.
const K = Uint32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const H0 = Uint32Array.from([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const W = new Int32Array(64);
const rotr = (x: number, n: number): number => (x >>> n) | (x << (32 - n));

/** SHA-256 of the 8-byte u64 LE encoding of i (i < 2^32), written to out[off..off+32]. */
function sha256OfU64(i: number, out: Uint8Array, off: number): void {
  // Message block: 8 bytes LE of i, 0x80, zeros, bit length 64 in the last word.
  W[0] =
    ((i & 0xff) << 24) | (((i >>> 8) & 0xff) << 16) | (((i >>> 16) & 0xff) << 8) | (i >>> 24) | 0;
  W[1] = 0;
  W[2] = 0x80000000 | 0;
  for (let t = 3; t < 15; t++) W[t] = 0;
  W[15] = 64;
  for (let t = 16; t < 64; t++) {
    const w15 = W[t - 15]!;
    const w2 = W[t - 2]!;
    const s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >>> 3);
    const s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >>> 10);
    W[t] = (W[t - 16]! + s0 + W[t - 7]! + s1) | 0;
  }
  let a = H0[0]!,
    b = H0[1]!,
    c = H0[2]!,
    d = H0[3]!,
    e = H0[4]!,
    f = H0[5]!,
    g = H0[6]!,
    h = H0[7]!;
  for (let t = 0; t < 64; t++) {
    const S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const ch = (e & f) ^ (~e & g);
    const t1 = (h + S1 + ch + K[t]! + W[t]!) | 0;
    const S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const maj = (a & b) ^ (a & c) ^ (b & c);
    const t2 = (S0 + maj) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  const words = [a, b, c, d, e, f, g, h];
  for (let k = 0; k < 8; k++) {
    const v = (words[k]! + H0[k]!) >>> 0;
    out[off + 4 * k] = v >>> 24;
    out[off + 4 * k + 1] = (v >>> 16) & 0xff;
    out[off + 4 * k + 2] = (v >>> 8) & 0xff;
    out[off + 4 * k + 3] = v & 0xff;
  }
}

/** Vector #3 input: SHA-256(u64 LE i) for i = 0, 1, 2, … concatenated, 40 MiB (built once). */
let vector3: Uint8Array | undefined;
function vector3Input(): Uint8Array {
  if (vector3 !== undefined) return vector3;
  const out = new Uint8Array(40 * MiB);
  for (let i = 0; i < out.length / 32; i++) sha256OfU64(i, out, i * 32);
  vector3 = out;
  return out;
}

/**
 * The scan loop has three implementations that must cut alike: the addon's AVX-512 kernel (CPUs
 * with AVX-512 VBMI), the addon's scalar loop, and the TypeScript fallback. The vector and
 * feeding tests below run against each one this machine has.
 */
type ScanPath = 'avx512' | 'scalar' | 'typescript';
function selectPath(path: ScanPath): boolean {
  if (path === 'typescript') {
    forceNativeFallback(true);
    return true;
  }
  forceNativeFallback(false);
  return nativeBuzhashKernel(path === 'avx512') === path;
}
function restorePaths(): void {
  forceNativeFallback(false);
  nativeBuzhashKernel(true);
}
const PATHS = (['avx512', 'scalar', 'typescript'] as const).filter((p) => {
  const ok = selectPath(p);
  restorePaths();
  return ok;
});
afterAll(restorePaths);

describe('scan paths', () => {
  it('the addon is loaded, so its scalar loop is among the paths tested', () => {
    expect(nativeAvailable()).toBe(true);
    expect(PATHS).toContain('scalar');
    expect(PATHS).toContain('typescript');
    // The AVX-512 kernel runs only where the CPU has AVX-512 VBMI (a fact of the machine).
    const cpuHasIt = PATHS.includes('avx512');
    expect(nativeBuzhashKernel()).toBe(cpuHasIt ? 'avx512' : 'scalar');
  });
});

/** Feeds `data` to a fresh chunker in pieces of the given sizes (cycled), returns end offsets. */
function boundariesInPieces(data: Uint8Array, avg: number, sizes: number[]): number[] {
  const pieces: Uint8Array[] = [];
  for (let off = 0, k = 0; off < data.length; k++) {
    const size = Math.max(1, sizes[k % sizes.length]!);
    pieces.push(data.subarray(off, off + size));
    off += size;
  }
  return [...chunkBoundaries(pieces, avg)];
}

describe('buzhash table and parameters', () => {
  it('is the table of pbs-protocol §9.1 (SHA-256 of the u32 LE serialization)', () => {
    const le = new Uint8Array(1024);
    const dv = new DataView(le.buffer);
    BUZHASH_TABLE.forEach((v, i) => dv.setUint32(i * 4, v, true));
    expect(toHex(sha256(le))).toBe(
      '5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660',
    );
  });

  it('derives min/max/mask/threshold from avg', () => {
    expect(chunkerParams()).toEqual({
      avg: 4 * MiB,
      min: MiB,
      max: 16 * MiB,
      mask: 0x7fffff,
      threshold: 0x7ffffd,
    });
    expect(chunkerParams(64 * KiB)).toMatchObject({ min: 16 * KiB, max: 256 * KiB, mask: 0x1ffff });
  });

  it('accepts exactly the averages PBS allows', () => {
    for (const k of [64, 128, 256, 512, 1024, 2048, 4096])
      expect(() => new Chunker(k * KiB)).not.toThrow();
    for (const bad of [0, -1, 32 * KiB, 8 * MiB, 100 * KiB, 64 * KiB + 0.5, Number.NaN]) {
      let caught: unknown;
      try {
        new Chunker(bad);
      } catch (e) {
        caught = e;
      }
      expect(isBurrowError(caught) && caught.code === 'INVALID_ARGUMENT').toBe(true);
    }
  });
});

describe.each(PATHS)('scan path %s', (path) => {
  beforeEach(() => {
    expect(selectPath(path)).toBe(true);
  });
  afterEach(restorePaths);

  describe('buzhash chunker: spec vectors (pbs-protocol §11)', () => {
    it('#1: avg 64 KiB over the u32 LE counter', () => {
      const ends = [...chunkBoundaries([counterInput()], 64 * KiB)];
      expect(lengths(ends)).toEqual([143377, 262144, 262144, 262144, 118767]);
    });

    it('#2: a fresh chunker started mid-stream cuts after the expected length', () => {
      const data = counterInput();
      const expected: [number, number][] = [
        [32768, 110609],
        [143377, 262144],
        [372753, 32768],
        [405521, 262144],
      ];
      for (const [start, first] of expected) {
        expect(new Chunker(64 * KiB).scan(data.subarray(start))).toBe(first);
      }
    });

    it('scan returns 0 without a boundary, and the stream split keeps the state', () => {
      const data = counterInput();
      const c = new Chunker(64 * KiB);
      expect(c.scan(new Uint8Array(0))).toBe(0);
      expect(c.scan(data.subarray(0, 143376))).toBe(0);
      expect(c.pendingLength).toBe(143376);
      expect(c.scan(data.subarray(143376))).toBe(1);
      expect(c.pendingLength).toBe(0);
    });

    it('the JS SHA-256 used to build vector #3 input agrees with node:crypto', () => {
      const out = new Uint8Array(32);
      for (const i of [0, 1, 255, 256, 65535, 1310719, 0xdeadbeef]) {
        sha256OfU64(i, out, 0);
        const le = Buffer.alloc(8);
        le.writeUInt32LE(i >>> 0, 0);
        expect(toHex(out)).toBe(toHex(sha256(le)));
      }
    });

    it(
      '#3, #3b, #3c: avg 4 MiB over 40 MiB of SHA-256(u64 LE i) (large input)',
      { timeout: 30_000 },
      () => {
        const data = vector3Input();
        const ends = [...chunkBoundaries([data])];
        expect(ends).toEqual([
          1073993, 3754750, 4842168, 6026645, 13156102, 15991607, 18142920, 22423374, 28055516,
          30453676, 32170642, 37989796, 41943040,
        ]);
        const digests = ends.map((end, i) =>
          sha256(data.subarray(i === 0 ? 0 : ends[i - 1]!, end)),
        );
        expect(digests.map((d) => toHex(d).slice(0, 8))).toEqual([
          '110f5e12',
          '48b50eec',
          '61edc181',
          '8e7ea5bb',
          '38356afa',
          '3c4aacbc',
          'a4350a2b',
          '82f87086',
          '41f18d16',
          '2afc9294',
          '97c7227d',
          'a2d09415',
          'ba4c4708',
        ]);
        expect(toHex(digests[0]!)).toBe(
          '110f5e12f8ac8881309793e210395a19e45ffdada4b983066016968f2b219e57',
        );
        expect(toHex(digests.at(-1)!)).toBe(
          'ba4c4708cf5b32b9decd2c89267cc7743d2e78331eb14ec47e3ea9fe2b811f18',
        );
        // dynamic_close csum: SHA-256 over (end u64 LE || digest) per chunk, the .didx body.
        const csum = createHash('sha256');
        ends.forEach((end, i) => {
          const e = Buffer.alloc(8);
          e.writeBigUInt64LE(BigInt(end));
          csum.update(e).update(digests[i]!);
        });
        expect(csum.digest('hex')).toBe(
          '08b174c6a270390f1d87e70d6413ae33ee0ec7a6cc050d369946dc529ee157da',
        );
        // The same boundaries when the stream arrives in 64 KiB reads.
        expect(boundariesInPieces(data, 4 * MiB, [64 * KiB])).toEqual(ends);
      },
    );
  });

  describe('buzhash chunker: feeding in pieces (upstream test_chunker1)', () => {
    // ~1 MiB of random bytes from a fixed seed, so failures reproduce.
    const data = new Uint8Array(MiB + 12345);
    let s = 0x9e3779b9;
    for (let i = 0; i < data.length; i++) {
      s = (s + 0x6d2b79f5) | 0;
      let t = Math.imul(s ^ (s >>> 15), 1 | s);
      t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
      data[i] = (t ^ (t >>> 14)) & 0xff;
    }
    const whole = [...chunkBoundaries([data], 64 * KiB)];

    it('the input has several content-defined boundaries', () => {
      expect(whole.length).toBeGreaterThan(5);
      expect(whole.at(-1)).toBe(data.length);
    });

    it('one byte at a time gives the same boundaries as the whole buffer', () => {
      // The stretch up to just past the third boundary: window refills and cuts, at a million
      // calls less than the whole buffer would take.
      const prefix = data.subarray(0, whole[2]! + 1000);
      const ends = boundariesInPieces(prefix, 64 * KiB, [1]);
      expect(ends).toEqual([...whole.slice(0, 3), prefix.length]);
    });

    it('odd piece sizes give the same boundaries (fast-check)', () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 1, max: 200_000 }), { minLength: 1, maxLength: 20 }),
          (sizes) => {
            expect(boundariesInPieces(data, 64 * KiB, sizes)).toEqual(whole);
          },
        ),
        { numRuns: 30 },
      );
    });

    it('small odd sizes around the window length give the same boundaries', () => {
      for (const sizes of [[63], [64], [65], [3, 61, 127], [7, 1, 64, 200]]) {
        expect(boundariesInPieces(data, 64 * KiB, sizes)).toEqual(whole);
      }
    });

    it('splitIntoChunks (sync, async) and ChunkSplitter rebuild the stream at those boundaries', async () => {
      const pieces = [data.subarray(0, 1000), data.subarray(1000, 300_000), data.subarray(300_000)];
      const sync = [...splitIntoChunks(pieces, 64 * KiB)];
      const asyncChunks: Uint8Array[] = [];
      for await (const c of splitIntoChunksAsync(pieces, 64 * KiB)) asyncChunks.push(c);
      for (const chunks of [sync, asyncChunks]) {
        let off = 0;
        const ends: number[] = [];
        for (const c of chunks) {
          expect(Buffer.from(c).equals(Buffer.from(data.subarray(off, off + c.length)))).toBe(true);
          off += c.length;
          ends.push(off);
        }
        expect(ends).toEqual(whole);
      }
      const sp = new ChunkSplitter(64 * KiB);
      expect(sp.finish()).toBeUndefined();
      expect([...splitIntoChunks([], 64 * KiB)]).toEqual([]);
    });

    it('reset() starts a new chunk at the next byte', () => {
      const c = new Chunker(64 * KiB);
      expect(c.scan(data.subarray(0, 5000))).toBe(0);
      c.reset();
      expect(c.pendingLength).toBe(0);
      expect(c.scan(data.subarray(5000))).toBe(new Chunker(64 * KiB).scan(data.subarray(5000)));
    });
  });
});

describe('buzhash chunker: stability under edits', () => {
  // 8 MiB of random data, avg 64 KiB: about 130 chunks.
  const base = new Uint8Array(8 * MiB);
  for (let off = 0; off < base.length; off += 65536) {
    base.set(createHash('sha512').update(`seed-${off}`).digest().subarray(0, 64), off);
  }
  // Fill cheaply but unpredictably: xorshift over the whole buffer, seeded by the sprinkled hashes.
  let x = 0x12345678;
  for (let i = 0; i < base.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    base[i]! ^= x & 0xff;
  }
  const chunkSet = (d: Uint8Array): string[] =>
    [...splitIntoChunks([d], 64 * KiB)].map((c) => createHash('sha1').update(c).digest('hex'));
  const original = chunkSet(base);
  const originalSet = new Set(original);

  it('an insertion or deletion in the middle changes only the chunks near it', () => {
    let worst = 1;
    fc.assert(
      fc.property(
        fc.integer({ min: 2 * MiB, max: 6 * MiB }),
        fc.boolean(),
        fc.integer({ min: 1, max: 4096 }),
        fc.integer({ min: 0, max: 255 }),
        (at, insert, size, fill) => {
          const edited = insert
            ? Buffer.concat([base.subarray(0, at), Buffer.alloc(size, fill), base.subarray(at)])
            : Buffer.concat([base.subarray(0, at), base.subarray(at + size)]);
          const after = chunkSet(edited);
          const reused = after.filter((d) => originalSet.has(d)).length;
          const fraction = reused / original.length;
          worst = Math.min(worst, fraction);
          // Only the chunk holding the edit and, rarely, a neighbour or two may differ.
          expect(original.length - reused).toBeLessThanOrEqual(4);
          expect(fraction).toBeGreaterThan(0.95);
        },
      ),
      { numRuns: 25 },
    );
    expect(worst).toBeGreaterThan(0.95);
  });
});

/**
 * pbs-protocol §9.1 read literally, one byte at a time (window fill phase, rolling phase, cut
 * tests), with free parameters: the reference the native kernels are held to at small masks,
 * where boundaries are dense and the vector kernel's rarely taken paths (several candidates in
 * one 64-byte block, a cut in the first block) run all the time.
 */
function referenceCuts(
  data: Uint8Array,
  p: { min: number; max: number; mask: number; threshold: number },
): number[] {
  const win = new Uint8Array(64);
  const cuts: number[] = [];
  let h = 0;
  let chunkLen = 0;
  let wfill = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (wfill < 64) {
      win[wfill] = b;
      h = ((h << 1) | (h >>> 31)) ^ BUZHASH_TABLE[b]!;
      wfill++;
      chunkLen++;
      continue;
    }
    const slot = chunkLen % 64;
    h = ((h << 1) | (h >>> 31)) ^ BUZHASH_TABLE[win[slot]!]! ^ BUZHASH_TABLE[b]!;
    win[slot] = b;
    chunkLen++;
    if (chunkLen >= p.max || (chunkLen >= p.min && ((h >>> 0) & p.mask) >>> 0 >= p.threshold)) {
      cuts.push(i + 1);
      h = 0;
      chunkLen = 0;
      wfill = 0;
    }
  }
  return cuts;
}

describe('native kernels against a byte-by-byte reading of pbs-protocol §9.1', () => {
  const kernels = PATHS.filter((p) => p !== 'typescript');
  afterEach(restorePaths);

  /** Runs the addon's scan over pieces with a hand-made state (layout: native/buzhash.c). */
  function nativeCuts(
    data: Uint8Array,
    p: { min: number; max: number; mask: number; threshold: number },
    sizes: number[],
  ): number[] {
    const scan = nativeBuzhashScan();
    if (scan === undefined) throw new Error('addon not loaded');
    const state = new Int32Array(24);
    state[2] = p.min;
    state[3] = p.max;
    state[4] = p.mask | 0;
    state[5] = p.threshold | 0;
    const cuts: number[] = [];
    for (let off = 0, k = 0; off < data.length; k++) {
      const piece = data.subarray(off, off + Math.max(1, sizes[k % sizes.length]!));
      for (let at = scan(state, piece, 0); at >= 0; at = scan(state, piece, at))
        cuts.push(off + at);
      off += piece.length;
    }
    return cuts;
  }

  const dataArb = fc.oneof(
    fc.uint8Array({ minLength: 0, maxLength: 20_000 }),
    // Low entropy: long runs, few distinct bytes (a zero window hashes to 0).
    fc
      .tuple(
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 8 }),
        fc.nat(20_000),
      )
      .map(([alphabet, n]) =>
        Uint8Array.from({ length: n }, (_, i) => alphabet[(i * 7919) % alphabet.length]! * 85),
      ),
  );
  const paramsArb = fc
    .tuple(
      // The kernels need min > 64 (the window); PBS's smallest min is 16 KiB.
      fc.integer({ min: 65, max: 400 }),
      fc.integer({ min: 0, max: 3000 }),
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 0, max: 3 }),
    )
    .map(([min, extra, bits, below]) => {
      const mask = 2 ** bits - 1;
      return { min, max: min + extra, mask, threshold: Math.max(0, mask - below) };
    });

  it.each(kernels)(
    '%s: same cuts as the reference for any data, parameters and feeding',
    (kernel) => {
      expect(selectPath(kernel)).toBe(true);
      fc.assert(
        fc.property(
          dataArb,
          paramsArb,
          fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 6 }),
          (data, params, sizes) => {
            expect(nativeCuts(data, params, sizes)).toEqual(referenceCuts(data, params));
          },
        ),
        { numRuns: 150 },
      );
    },
  );

  it.each(kernels)('%s: a full 32-bit mask and threshold (h must be all ones)', (kernel) => {
    expect(selectPath(kernel)).toBe(true);
    const data = new Uint8Array(300_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    const params = { min: 65, max: 2 ** 30, mask: 0xffffffff, threshold: 0xffffffff };
    expect(nativeCuts(data, params, [100_000])).toEqual(referenceCuts(data, params));
  });

  it('the reference agrees with spec vector #1', () => {
    const p = chunkerParams(64 * KiB);
    const ends = referenceCuts(counterInput(), p);
    expect(lengths(ends)).toEqual([143377, 262144, 262144, 262144]);
  });

  it('rejects a bad start or a corrupt state instead of reading out of bounds', () => {
    const scan = nativeBuzhashScan()!;
    const ok = new Int32Array(24);
    ok.set([0, 0, 64, 1000, 0xff, 0xfd], 0);
    expect(() => scan(ok, new Uint8Array(10), 11)).toThrow(RangeError);
    expect(() => scan(ok, new Uint8Array(10), -1)).toThrow(RangeError);
    const bad = Int32Array.from(ok);
    bad[2] = 10; // min below the window
    expect(() => scan(bad, new Uint8Array(10), 0)).toThrow(RangeError);
    expect(() => scan(new Int32Array(8), new Uint8Array(10), 0)).toThrow(TypeError);
    expect(() => new Chunker(64 * KiB).scanFrom(new Uint8Array(4), 5)).toThrow(/outside/);
  });
});
