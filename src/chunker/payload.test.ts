/**
 * The payload-chunker features of ChunkSplitter (pbs-protocol §9.1 [4.x]): suggested boundaries,
 * forced boundaries and skipped (injected) stretches.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { codeOf } from '../../test/helpers/error-code.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { toHex } from '../lib/bytes.js';
import { ChunkSplitter, chunkBoundaries } from './buzhash.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const FIXTURE = fileURLToPath(
  new URL(
    '../../../shared/fixtures/pbs-upstream/backup-client-pxar-data.ppxar.didx',
    import.meta.url,
  ),
);

/** A pxar-style 16-byte header: u64 LE type, u64 LE full size. */
function header(type: bigint, size: number): Uint8Array {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(type, 0);
  b.writeBigUInt64LE(BigInt(size), 8);
  return b;
}

const PAYLOAD_START_MARKER = 0x834c68c2194a4ed2n;
const PAYLOAD = 0x28147a1b0b7c1a25n;
const PAYLOAD_TAIL_MARKER = 0x6c72b78b984c81b5n;

/** Pushes pieces, collecting [end offset, chunk] pairs. */
class Collector {
  readonly ends: number[] = [];
  readonly chunks: Uint8Array[] = [];
  private offset = 0;
  constructor(readonly splitter: ChunkSplitter) {}
  push(piece: Uint8Array): void {
    for (const c of this.splitter.push(piece)) this.add(c);
  }
  add(chunk: Uint8Array | undefined): void {
    if (chunk === undefined) return;
    this.offset += chunk.length;
    this.ends.push(this.offset);
    this.chunks.push(chunk);
  }
  skip(length: number): void {
    this.splitter.skipBytes(length);
    this.offset += length;
  }
  finish(): number[] {
    this.add(this.splitter.finish());
    return this.ends;
  }
}

const zeros = (n: number): Uint8Array => new Uint8Array(n);
const sha = (d: Uint8Array): string => createHash('sha256').update(d).digest('hex');

describe('the payload stream of the upstream fixture (backup-client-pxar-data.ppxar.didx)', () => {
  const index = DynamicIndex.parse(readFileSync(FIXTURE));
  const fileBody = zeros(MiB);
  const ENTRY = 16 + MiB;

  /**
   * The .ppxar stream: start marker, 100 × (PAYLOAD header + 1 MiB of zeros), tail marker, with a
   * suggested boundary at every PAYLOAD header; `mode` varies when suggestions arrive and how the
   * bytes are cut into pieces.
   */
  function chunkStream(mode: 'just-in-time' | 'up-front' | 'odd-pieces'): Collector {
    const out = new Collector(new ChunkSplitter(4 * MiB));
    const headerAt = (k: number): number => 16 + k * ENTRY;
    if (mode !== 'just-in-time')
      for (let k = 0; k < 100; k++) out.splitter.suggestBoundary(headerAt(k));
    const pieces: Uint8Array[] = [header(PAYLOAD_START_MARKER, 16)];
    for (let k = 0; k < 100; k++) pieces.push(header(PAYLOAD, 16 + MiB), fileBody);
    pieces.push(header(PAYLOAD_TAIL_MARKER, 16));
    if (mode === 'odd-pieces') {
      const all = Buffer.concat(pieces);
      for (let off = 0; off < all.length; off += 77_777) out.push(all.subarray(off, off + 77_777));
    } else {
      for (const [i, piece] of pieces.entries()) {
        // The encoder reports each PAYLOAD header's offset just before writing it.
        if (mode === 'just-in-time' && i % 2 === 1 && i < pieces.length - 1) {
          expect(out.splitter.streamOffset).toBe(headerAt((i - 1) / 2));
          out.splitter.suggestBoundary(out.splitter.streamOffset);
        }
        out.push(piece);
      }
    }
    out.finish();
    return out;
  }

  it('the fixture has the shape the test assumes', () => {
    expect(index.count).toBe(100);
    expect(index.size).toBe(104859232);
  });

  it.each(['just-in-time', 'up-front', 'odd-pieces'] as const)(
    'suggestions at every header cut where PBS cut (%s)',
    (mode) => {
      const out = chunkStream(mode);
      const expected = [1048608];
      for (let k = 1; k < 99; k++) expected.push(expected[k - 1]! + 1048592);
      expected.push(104859232);
      expect(out.ends).toEqual(expected);
      expect(out.ends).toEqual(Array.from({ length: 100 }, (_, i) => index.end(i)));
      expect(out.chunks.map(sha)).toEqual(
        Array.from({ length: 100 }, (_, i) => toHex(index.digest(i))),
      );
    },
  );

  it('without suggestions the same stream cuts elsewhere (the suggestions did it)', () => {
    const pieces: Uint8Array[] = [header(PAYLOAD_START_MARKER, 16)];
    for (let k = 0; k < 100; k++) pieces.push(header(PAYLOAD, 16 + MiB), fileBody);
    pieces.push(header(PAYLOAD_TAIL_MARKER, 16));
    const ends = [...chunkBoundaries(pieces, 4 * MiB)];
    expect(ends[0]).not.toBe(1048608);
  });
});

describe('suggested boundaries: each rule (avg 64 KiB: min 16 KiB, max 256 KiB)', () => {
  // All zeros: a window of zeros hashes to 0, so no content-defined cut interferes.
  const min = 16 * KiB;
  const max = 256 * KiB;
  const split = (suggest: number[], pieces: number[]): number[] => {
    const out = new Collector(new ChunkSplitter(64 * KiB));
    for (const s of suggest) out.splitter.suggestBoundary(s);
    for (const n of pieces) out.push(zeros(n));
    return out.finish();
  };

  it('with no suggestion, zeros cut at max only', () => {
    expect(split([], [600_000])).toEqual([max, 2 * max, 600_000]);
  });

  it('cuts exactly at a suggestion between min and max, min and max included', () => {
    expect(split([100_000], [300_000])).toEqual([100_000, 300_000]);
    expect(split([min], [300_000])).toEqual([min, min + max, 300_000]);
    expect(split([max], [300_000])).toEqual([max, 300_000]);
  });

  it('drops a suggestion closer than min to the chunk start', () => {
    expect(split([min - 1], [300_000])).toEqual([max, 300_000]);
    // ... and measures min from the start of the current chunk, not of the stream.
    expect(split([100_000, 100_000 + min - 1, 100_000 + min], [300_000])).toEqual([
      100_000,
      100_000 + min,
      300_000,
    ]);
  });

  it('does a normal scan while a suggestion is beyond max, then cuts at it once in range', () => {
    // 300 000 - 0 > max: cut at max; then 300 000 - max = 37 856 is within [min, max].
    expect(split([300_000], [400_000])).toEqual([max, 300_000, 400_000]);
    expect(split([max + 1], [300_000])).toEqual([max, 300_000]);
  });

  it('drops a suggestion that lies before the current position', () => {
    const out = new Collector(new ChunkSplitter(64 * KiB));
    out.push(zeros(20_000));
    out.splitter.suggestBoundary(18_000); // ≥ min from the chunk start, but already scanned
    out.push(zeros(100_000));
    expect(out.finish()).toEqual([120_000]);
  });

  it('a suggestion at exactly the current position closes the pending chunk', () => {
    const out = new Collector(new ChunkSplitter(64 * KiB));
    out.push(zeros(20_000));
    out.splitter.suggestBoundary(20_000);
    expect(out.ends).toEqual([]);
    out.push(zeros(10));
    expect(out.ends).toEqual([20_000]);
    // Too short a chunk: dropped, as a suggestion below min anywhere.
    out.push(zeros(1000));
    out.splitter.suggestBoundary(21_010);
    out.push(zeros(10));
    expect(out.finish()).toEqual([20_000, 21_020]);
  });

  it('an empty push decides a suggestion at the current position too', () => {
    const out = new Collector(new ChunkSplitter(64 * KiB));
    out.push(zeros(50_000));
    out.splitter.suggestBoundary(50_000);
    out.push(new Uint8Array(0));
    expect(out.ends).toEqual([50_000]);
    expect(out.splitter.pendingLength).toBe(0);
  });

  it('several suggestions inside one piece, in order', () => {
    expect(split([20_000, 30_000, 60_000, 61_000, 200_000, 500_000], [250_000, 400_000])).toEqual([
      20_000, 60_000, 200_000, 462_144, 500_000, 650_000,
    ]);
  });

  it('a suggestion beyond the pushed bytes lets a content-defined cut come first', () => {
    const data = new Uint8Array(600_000);
    randomFillSync(data);
    const natural = [...chunkBoundaries([data], 64 * KiB)];
    const c = natural[0]!; // content-defined, between min and max
    expect(c).toBeGreaterThanOrEqual(min);
    expect(c).toBeLessThan(max - 100);
    const b = c + 50; // suggested a little after the content boundary
    // The piece ends before b: undecided, the normal scan cuts at c first; b is then too close.
    const inPieces = new Collector(new ChunkSplitter(64 * KiB));
    inPieces.splitter.suggestBoundary(b);
    inPieces.push(data.subarray(0, c + 10));
    inPieces.push(data.subarray(c + 10));
    expect(inPieces.finish()).toEqual(natural);
    // One piece reaching b: the suggestion is decided first and wins over c.
    const whole = new Collector(new ChunkSplitter(64 * KiB));
    whole.splitter.suggestBoundary(b);
    whole.push(data);
    const ends = whole.finish();
    expect(ends[0]).toBe(b);
    // After a suggested cut the hash restarts: the rest chunks as a fresh stream from b.
    expect(ends.slice(1)).toEqual(
      [...chunkBoundaries([data.subarray(b)], 64 * KiB)].map((e) => e + b),
    );
  });

  it('suggestions must not decrease', () => {
    const s = new ChunkSplitter(64 * KiB);
    s.suggestBoundary(100);
    s.suggestBoundary(100);
    expect(codeOf(() => s.suggestBoundary(99))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => s.suggestBoundary(Number.NaN))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => s.suggestBoundary(1.5))).toBe('INVALID_ARGUMENT');
  });
});

describe('forced boundaries and skipped stretches', () => {
  const data = new Uint8Array(700_000);
  randomFillSync(data);

  it('forceBoundary returns the pending bytes as a chunk and restarts the hash', () => {
    const out = new Collector(new ChunkSplitter(64 * KiB));
    out.push(data.subarray(0, 1000));
    out.push(data.subarray(1000, 5000));
    const forced = out.splitter.forceBoundary();
    expect(Buffer.from(forced!).equals(Buffer.from(data.subarray(0, 5000)))).toBe(true);
    out.add(forced);
    expect(out.splitter.forceBoundary()).toBeUndefined(); // nothing pending: no empty chunk
    out.push(data.subarray(5000));
    const ends = out.finish();
    expect(ends).toEqual([
      5000,
      ...[...chunkBoundaries([data.subarray(5000)], 64 * KiB)].map((e) => e + 5000),
    ]);
    // The chunks rebuild the stream.
    expect(Buffer.concat(out.chunks).equals(Buffer.from(data))).toBe(true);
  });

  it('skipBytes moves the stream offset on at a boundary; suggestions count it', () => {
    const out = new Collector(new ChunkSplitter(64 * KiB));
    out.push(zeros(30_000));
    expect(codeOf(() => out.splitter.skipBytes(10))).toBe('INVALID_ARGUMENT');
    out.add(out.splitter.forceBoundary());
    out.splitter.suggestBoundary(40_000); // inside the skipped stretch: dropped
    out.splitter.suggestBoundary(1_030_000 + 20_000);
    out.skip(1_000_000); // reused chunks, injected by reference
    expect(out.splitter.streamOffset).toBe(1_030_000);
    out.push(zeros(50_000));
    expect(out.finish()).toEqual([30_000, 1_030_000 + 20_000, 1_080_000]);
    expect(codeOf(() => out.splitter.skipBytes(-1))).toBe('INVALID_ARGUMENT');
  });
});
