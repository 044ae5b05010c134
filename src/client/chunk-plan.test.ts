import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { CryptConfig } from '../crypto/crypt-config.js';
import { computeChunkDigest, encodeBlob } from '../format/data-blob.js';
import { isBurrowError } from '../lib/errors.js';
import { applyChunkPlan, decodeCheckedChunk } from './chunk-plan.js';

const work = mkdtempSync(join(tmpdir(), 'burrow-chunk-plan-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let files = 0;
const newFile = (): { path: string; fd: number } => {
  const path = join(work, `f${files++}`);
  return { path, fd: openSync(path, 'wx+') };
};

const BLOCK = 4096;

/** File content of `blocks` 4 KiB blocks, each all zero or not as `zero` says (partly random). */
function content(zero: boolean[], seed: number, tail: number): Uint8Array {
  const out = new Uint8Array(zero.length * BLOCK + tail);
  let x = seed | 1;
  zero.forEach((z, b) => {
    if (z) return;
    // One non-zero byte somewhere in the block is enough to make it data.
    x = (x * 1103515245 + 12345) >>> 0;
    out[b * BLOCK + (x % BLOCK)] = 1 + (x % 255);
  });
  for (let i = zero.length * BLOCK; i < out.length; i++) out[i] = 7;
  return out;
}

describe('applyChunkPlan', () => {
  it('writes pieces cut anywhere into the file, leaving all-zero blocks as holes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { minLength: 1, maxLength: 24 }),
        fc.integer({ min: 0, max: BLOCK - 1 }),
        fc.array(fc.integer({ min: 1, max: 3 * BLOCK }), { minLength: 1, maxLength: 40 }),
        fc.integer(),
        (zero, tail, cuts, seed) => {
          const data = content(zero, seed, tail);
          const { path, fd } = newFile();
          try {
            // The file's bytes arrive in pieces, each at some offset of its own "chunk".
            let at = 0;
            for (let i = 0; at < data.length; i++) {
              const length = Math.min(cuts[i % cuts.length]!, data.length - at);
              const pad = i % 3;
              const chunk = new Uint8Array(pad + length + 2).fill(9);
              chunk.set(data.subarray(at, at + length), pad);
              applyChunkPlan(chunk, {
                checks: [],
                writes: [{ fd, from: pad, to: pad + length, position: at }],
              });
              at += length;
            }
            ftruncateSync(fd, data.length);
            expect(Buffer.compare(readFileSync(path), data)).toBe(0);
            // Only blocks with data take space (a whole-block hole stays one).
            const dataBlocks = zero.filter((z) => !z).length + (tail > 0 ? 1 : 0);
            expect(fstatSync(fd).blocks * 512).toBeLessThanOrEqual(dataBlocks * BLOCK);
          } finally {
            closeSync(fd);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('checks bytes first: a mismatch is PXAR_BAD_PAYLOAD naming the check, nothing written', () => {
    const chunk = new Uint8Array(100).map((_, i) => i);
    const { path, fd } = newFile();
    try {
      let error: unknown;
      try {
        applyChunkPlan(chunk, {
          checks: [
            { from: 0, to: 4, expected: new Uint8Array([0, 1, 2, 3]) },
            { from: 10, to: 12, expected: new Uint8Array([10, 99]) },
          ],
          writes: [{ fd, from: 20, to: 80, position: 0 }],
        });
      } catch (e) {
        error = e;
      }
      expect(isBurrowError(error, 'PXAR_BAD_PAYLOAD')).toBe(true);
      expect((error as { details: Record<string, unknown> }).details['check']).toBe(1);
      expect(readFileSync(path).length).toBe(0);
      // The same plan with the right bytes writes.
      applyChunkPlan(chunk, {
        checks: [{ from: 10, to: 12, expected: new Uint8Array([10, 11]) }],
        writes: [{ fd, from: 20, to: 80, position: 0 }],
      });
      expect([...readFileSync(path)]).toEqual([...chunk.subarray(20, 80)]);
    } finally {
      closeSync(fd);
    }
  });

  it('reports a failed write as IO_ERROR with the descriptor and errno', () => {
    const { path } = newFile();
    const readOnly = openSync(path, 'r');
    try {
      let error: unknown;
      try {
        applyChunkPlan(new Uint8Array(10).fill(1), {
          checks: [],
          writes: [{ fd: readOnly, from: 0, to: 10, position: 0 }],
        });
      } catch (e) {
        error = e;
      }
      expect(isBurrowError(error, 'IO_ERROR')).toBe(true);
      const details = (error as { details: Record<string, unknown> }).details;
      expect(details['fd']).toBe(readOnly);
      expect(details['errnoName']).toBe('EBADF');
    } finally {
      closeSync(readOnly);
    }
  });
});

describe('decodeCheckedChunk', () => {
  const data = new Uint8Array(5000).map((_, i) => (i * 7) % 251);
  const codeOf = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (error) {
      return isBurrowError(error) ? error.code : 'not a BurrowError';
    }
    return undefined;
  };

  it('decodes plain and encrypted chunks against the index digest and size', () => {
    const plain = encodeBlob(data);
    const digest = new Uint8Array(createHash('sha256').update(data).digest());
    expect(
      decodeCheckedChunk(plain, { expectedDigest: digest, expectedSize: 5000 }, 'job'),
    ).toEqual(data);
    const crypt = new CryptConfig(new Uint8Array(32).fill(3));
    const sealed = encodeBlob(data, { crypt });
    const keyed = computeChunkDigest(data, crypt);
    expect(
      decodeCheckedChunk(sealed, { crypt, expectedDigest: keyed, expectedSize: 5000 }, 'job'),
    ).toEqual(data);
  });

  it('refuses a chunk that is not the one the index names, and a job without the check', () => {
    const blob = encodeBlob(data);
    const digest = new Uint8Array(createHash('sha256').update(data).digest());
    const other = new Uint8Array(digest);
    other[0]! ^= 1;
    expect(
      codeOf(() => decodeCheckedChunk(blob, { expectedDigest: other, expectedSize: 5000 }, 'j')),
    ).toBe('DIGEST_MISMATCH');
    expect(
      codeOf(() => decodeCheckedChunk(blob, { expectedDigest: digest, expectedSize: 4999 }, 'j')),
    ).toMatch(/MISMATCH/);
    expect(codeOf(() => decodeCheckedChunk(blob, { expectedSize: 5000 }, 'job 7'))).toBe(
      'INTERNAL',
    );
    expect(codeOf(() => decodeCheckedChunk(blob, { expectedDigest: digest }, 'job 7'))).toBe(
      'INTERNAL',
    );
  });
});
