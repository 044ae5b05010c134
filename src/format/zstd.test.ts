import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import binding from 'zstd-napi/binding.js';
import { BurrowError, type ErrorCode } from '../lib/errors.js';
import { MAX_CHUNK_SIZE } from './magic.js';
import { DECODE_SCRATCH_LIMIT, zstdCompress, zstdCompressBound, zstdDecompress } from './zstd.js';

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

function expectCode(fn: () => unknown, code: ErrorCode): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(BurrowError);
  expect((thrown as BurrowError).code).toBe(code);
}

/** A frame as a streaming encoder writes it: no content size in the header. */
function streamingFrame(data: Uint8Array): Uint8Array {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, 1);
  const out = new Uint8Array(binding.compressBound(data.byteLength) + 64);
  let outPos = 0;
  for (let start = 0; start < data.byteLength; start += 10000) {
    const [, produced, consumed] = cctx.compressStream2(
      out.subarray(outPos),
      data.subarray(start, start + 10000),
      binding.EndDirective.continue,
    );
    expect(consumed).toBe(Math.min(10000, data.byteLength - start));
    outPos += produced;
  }
  for (;;) {
    const [remaining, produced] = cctx.compressStream2(
      out.subarray(outPos),
      new Uint8Array(0),
      binding.EndDirective.end,
    );
    outPos += produced;
    if (remaining === 0) break;
  }
  return out.slice(0, outPos);
}

const text = new TextEncoder().encode('the quick brown fox jumps over the lazy dog\n'.repeat(3000));
const noise = Uint8Array.from(
  { length: 40000 },
  (_, i) =>
    createHash('sha256')
      .update(String(i >> 5))
      .digest()[i & 31]!,
);

describe('zstdCompress', () => {
  it('writes one level-1 frame that carries its content size', () => {
    const frame = zstdCompress(text);
    expect(frame.byteLength).toBeLessThan(text.byteLength / 10);
    expect(binding.getFrameContentSize(frame)).toBe(text.byteLength);
    expect(binding.findFrameCompressedSize(frame)).toBe(frame.byteLength);
    const out = new Uint8Array(text.byteLength);
    expect(binding.decompress(out, frame)).toBe(text.byteLength);
    expect(same(out, text)).toBe(true);
    expect(zstdCompress(noise).byteLength).toBeLessThanOrEqual(zstdCompressBound(noise.byteLength));
  });

  it('returns independent buffers across calls', () => {
    const a = zstdCompress(text);
    const copy = a.slice();
    zstdCompress(noise);
    expect(same(a, copy)).toBe(true);
  });
});

describe('zstdDecompress', () => {
  it('round-trips, with or without content size and size hints', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 20000 }), fc.uint8Array({ max: 2, maxLength: 20000 })),
        fc.option(fc.integer({ min: 0, max: 40000 })),
        (data, hint) => {
          const options = hint === null ? {} : { sizeHint: hint };
          expect(same(zstdDecompress(zstdCompress(data), undefined, options), data)).toBe(true);
          expect(same(zstdDecompress(streamingFrame(data), undefined, options), data)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('accepts exactly maxSize bytes and refuses one more, on both paths', () => {
    const withSize = zstdCompress(text);
    const withoutSize = streamingFrame(text);
    expect(binding.getFrameContentSize(withoutSize)).toBeNull();
    for (const frame of [withSize, withoutSize]) {
      for (const hint of [undefined, text.byteLength, 10, text.byteLength * 2]) {
        const options = hint === undefined ? {} : { sizeHint: hint };
        expect(zstdDecompress(frame, text.byteLength, options).byteLength).toBe(text.byteLength);
        expectCode(
          () => zstdDecompress(frame, text.byteLength - 1, options),
          'BLOB_DECOMPRESS_FAILED',
        );
      }
      expectCode(() => zstdDecompress(frame, 0), 'BLOB_DECOMPRESS_FAILED');
    }
  });

  it('rejects empty, garbage, truncated and padded input with BLOB_DECOMPRESS_FAILED', () => {
    expectCode(() => zstdDecompress(new Uint8Array(0)), 'BLOB_DECOMPRESS_FAILED');
    expectCode(
      () => zstdDecompress(new TextEncoder().encode('not zstd at all')),
      'BLOB_DECOMPRESS_FAILED',
    );
    for (const frame of [zstdCompress(text), streamingFrame(text), zstdCompress(noise)]) {
      for (let len = 0; len < frame.byteLength; len += len < 40 ? 1 : 97) {
        expectCode(() => zstdDecompress(frame.subarray(0, len)), 'BLOB_DECOMPRESS_FAILED');
      }
      const padded = new Uint8Array(frame.byteLength + 3);
      padded.set(frame);
      expectCode(() => zstdDecompress(padded), 'BLOB_DECOMPRESS_FAILED');
    }
  });

  it('checks its arguments', () => {
    expectCode(() => zstdDecompress(zstdCompress(text), -1), 'INVALID_ARGUMENT');
    expectCode(() => zstdDecompress(zstdCompress(text), 1.5), 'INVALID_ARGUMENT');
  });

  it('decodes into reused scratch memory when asked, with the same results and limits', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 20000 }), fc.uint8Array({ max: 2, maxLength: 20000 })),
        fc.option(fc.integer({ min: 0, max: 40000 })),
        (data, hint) => {
          const options = { scratch: true, ...(hint === null ? {} : { sizeHint: hint }) };
          for (const frame of [zstdCompress(data), streamingFrame(data)]) {
            expect(same(zstdDecompress(frame, MAX_CHUNK_SIZE, options), data)).toBe(true);
          }
        },
      ),
      { numRuns: 60 },
    );
    for (const frame of [zstdCompress(text), streamingFrame(text)]) {
      const options = { scratch: true };
      expect(zstdDecompress(frame, text.byteLength, options).byteLength).toBe(text.byteLength);
      expectCode(
        () => zstdDecompress(frame, text.byteLength - 1, options),
        'BLOB_DECOMPRESS_FAILED',
      );
    }
  });

  it('hands out the same scratch memory each time, and fresh memory above its limit', () => {
    const first = zstdDecompress(zstdCompress(text), MAX_CHUNK_SIZE, { scratch: true });
    const second = zstdDecompress(streamingFrame(noise), MAX_CHUNK_SIZE, { scratch: true });
    expect(second.buffer).toBe(first.buffer);
    // The first view now shows the second result: it was valid only until the next call.
    expect(same(first.subarray(0, noise.byteLength), noise)).toBe(true);
    expect(same(second, noise)).toBe(true);
    const above = DECODE_SCRATCH_LIMIT; // maxSize + 1 would not fit the scratch
    const fresh = zstdDecompress(zstdCompress(text), above, { scratch: true });
    expect(fresh.buffer).not.toBe(first.buffer);
    expect(same(fresh, text)).toBe(true);
    expect(zstdDecompress(zstdCompress(text), MAX_CHUNK_SIZE).buffer).not.toBe(first.buffer);
  });

  it('never returns a view of its input', () => {
    const frame = zstdCompress(noise);
    const out = zstdDecompress(frame);
    expect(out.buffer).not.toBe(frame.buffer);
  });
});
