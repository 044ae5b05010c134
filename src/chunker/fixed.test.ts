import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isBurrowError } from '../lib/errors.js';
import {
  FixedChunkSplitter,
  fixedChunkCount,
  splitFixedChunks,
  splitFixedChunksAsync,
} from './fixed.js';

const MiB = 1024 * 1024;

function pieces(data: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0, k = 0; off < data.length; k++) {
    const size = Math.max(1, sizes[k % sizes.length]!);
    out.push(data.subarray(off, off + size));
    off += size;
  }
  return out;
}

describe('fixed chunker', () => {
  it('cuts every 4 MiB and keeps a shorter last chunk', () => {
    const data = new Uint8Array(10 * MiB + 5);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const chunks = [...splitFixedChunks(pieces(data, [1_000_003]))];
    expect(chunks.map((c) => c.length)).toEqual([4 * MiB, 4 * MiB, 2 * MiB + 5]);
    expect(Buffer.concat(chunks).equals(Buffer.from(data))).toBe(true);
    expect(fixedChunkCount(data.length)).toBe(3);
  });

  it('4 MiB of zeros is the chunk of pbs-protocol §9.2 / vector #8', () => {
    const [chunk, ...rest] = [...splitFixedChunks([new Uint8Array(4 * MiB), new Uint8Array(0)])];
    expect(rest).toEqual([]);
    expect(createHash('sha256').update(chunk!).digest('hex')).toBe(
      'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8',
    );
  });

  it('an exact multiple has no short tail, an empty stream no chunk', () => {
    expect([...splitFixedChunks([new Uint8Array(8 * MiB)])].map((c) => c.length)).toEqual([
      4 * MiB,
      4 * MiB,
    ]);
    expect([...splitFixedChunks([])]).toEqual([]);
    expect(new FixedChunkSplitter().finish()).toBeUndefined();
  });

  it('any read sizes give the same chunks (fast-check, small chunk size)', async () => {
    const data = Uint8Array.from({ length: 5000 }, (_, i) => (i * 31 + 7) & 0xff);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 10 }),
        fc.integer({ min: 1, max: 1500 }),
        async (sizes, chunkSize) => {
          let off = 0;
          for await (const c of splitFixedChunksAsync(pieces(data, sizes), chunkSize)) {
            expect(c.length).toBe(Math.min(chunkSize, data.length - off));
            expect(Buffer.from(c).equals(Buffer.from(data.subarray(off, off + c.length)))).toBe(
              true,
            );
            off += c.length;
          }
          expect(off).toBe(data.length);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('rejects a bad chunk size with INVALID_ARGUMENT', () => {
    for (const bad of [0, -4, 1.5, Number.NaN]) {
      let caught: unknown;
      try {
        new FixedChunkSplitter(bad);
      } catch (e) {
        caught = e;
      }
      expect(isBurrowError(caught) && caught.code === 'INVALID_ARGUMENT').toBe(true);
    }
  });
});
