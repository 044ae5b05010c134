/**
 * PBS's content-defined chunker (pbs-protocol §9.1): a 64-byte buzhash rolling window with the
 * boundary rule `(h & mask) >= mask - 2`, cut sizes clamped to [avg/4, avg*4]. Boundaries depend only
 * on the byte sequence, never on how the stream is split into reads, so state lives across `scan`
 * calls.
 *
 * Speed: the hash of a full window is a function of the window's 64 bytes alone (each byte's
 * contribution is rotated by its age, and a rotation by 64 is the identity, which is exactly why
 * the outgoing term needs no rotation). No boundary can be tested before `min` bytes, so the
 * chunker skips the first `min - 64` bytes of each chunk without hashing them and starts the hash
 * from zero over the 64 bytes that end at `min`. The result is bit-for-bit the hash PBS would have
 * rolled all the way from the chunk start.
 */
import { BurrowError } from '../lib/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Window of the rolling hash, in bytes. */
export const BUZHASH_WINDOW_SIZE = 64;
/** The default average chunk size for file archives. */
export const DEFAULT_AVG_CHUNK_SIZE = 4 * MiB;
/** The average PBS uses for `catalog.pcat1`. */
export const CATALOG_AVG_CHUNK_SIZE = 512 * KiB;
/** The smallest and largest averages PBS's client accepts (`--chunk-size` 64 .. 4096 KiB). */
export const MIN_AVG_CHUNK_SIZE = 64 * KiB;
export const MAX_AVG_CHUNK_SIZE = 4 * MiB;

/** PBS's buzhash table, in index order (pbs-protocol §9.1). */
export const BUZHASH_TABLE: Uint32Array = Uint32Array.from([
  0x458be752, 0xc10748cc, 0xfbbcdbb8, 0x6ded5b68, 0xb10a82b5, 0x20d75648, 0xdfc5665f, 0xa8428801,
  0x7ebf5191, 0x841135c7, 0x65cc53b3, 0x280a597c, 0x16f60255, 0xc78cbc3e, 0x294415f5, 0xb938d494,
  0xec85c4e6, 0xb7d33edc, 0xe549b544, 0xfdeda5aa, 0x882bf287, 0x3116737c, 0x05569956, 0xe8cc1f68,
  0x0806ac5e, 0x22a14443, 0x15297e10, 0x50d090e7, 0x4ba60f6f, 0xefd9f1a7, 0x5c5c885c, 0x82482f93,
  0x9bfd7c64, 0x0b3e7276, 0xf2688e77, 0x8fad8abc, 0xb0509568, 0xf1ada29f, 0xa53efdfe, 0xcb2b1d00,
  0xf2a9e986, 0x6463432b, 0x95094051, 0x5a223ad2, 0x9be8401b, 0x61e579cb, 0x1a556a14, 0x5840fdc2,
  0x9261ddf6, 0xcde002bb, 0x52432bb0, 0xbf17373e, 0x7b7c222f, 0x2955ed16, 0x9f10ca59, 0xe840c4c9,
  0xccabd806, 0x14543f34, 0x1462417a, 0x0d4a1f9c, 0x087ed925, 0xd7f8f24c, 0x7338c425, 0xcf86c8f5,
  0xb19165cd, 0x9891c393, 0x325384ac, 0x0308459d, 0x86141d7e, 0xc922116a, 0xe2ffa6b6, 0x53f52aed,
  0x2cd86197, 0xf5b9f498, 0xbf319c8f, 0xe0411fae, 0x977eb18c, 0xd8770976, 0x9833466a, 0xc674df7f,
  0x8c297d45, 0x8ca48d26, 0xc49ed8e2, 0x7344f874, 0x556f79c7, 0x6b25eaed, 0xa03e2b42, 0xf68f66a4,
  0x8e8b09a2, 0xf2e0e62a, 0x0d3a9806, 0x9729e493, 0x8c72b0fc, 0x160b94f6, 0x450e4d3d, 0x7a320e85,
  0xbef8f0e1, 0x21d73653, 0x4e3d977a, 0x1e7b3929, 0x1cc6c719, 0xbe478d53, 0x8d752809, 0xe6d8c2c6,
  0x275f0892, 0xc8acc273, 0x4cc21580, 0xecc4a617, 0xf5f7be70, 0xe795248a, 0x375a2fe9, 0x425570b6,
  0x8898dcf8, 0xdc2d97c4, 0x0106114b, 0x364dc22f, 0x1e0cad1f, 0xbe63803c, 0x5f69fac2, 0x4d5afa6f,
  0x1bc0dfb5, 0xfb273589, 0x0ea47f7b, 0x3c1c2b50, 0x21b2a932, 0x6b1223fd, 0x2fe706a8, 0xf9bd6ce2,
  0xa268e64e, 0xe987f486, 0x3eacf563, 0x1ca2018c, 0x65e18228, 0x2207360a, 0x57cf1715, 0x34c37d2b,
  0x1f8f3cde, 0x93b657cf, 0x31a019fd, 0xe69eb729, 0x8bca7b9b, 0x4c9d5bed, 0x277ebeaf, 0xe0d8f8ae,
  0xd150821c, 0x31381871, 0xafc3f1b0, 0x927db328, 0xe95effac, 0x305a47bd, 0x426ba35b, 0x1233af3f,
  0x686a5b83, 0x50e072e5, 0xd9d3bb2a, 0x8befc475, 0x487f0de6, 0xc88dff89, 0xbd664d5e, 0x971b5d18,
  0x63b14847, 0xd7d3c1ce, 0x7f583cf3, 0x72cbcb09, 0xc0d0a81c, 0x7fa3429b, 0xe9158a1b, 0x225ea19a,
  0xd8ca9ea3, 0xc763b282, 0xbb0c6341, 0x020b8293, 0xd4cd299d, 0x58cfa7f8, 0x91b4ee53, 0x37e4d140,
  0x95ec764c, 0x30f76b06, 0x5ee68d24, 0x679c8661, 0xa41979c2, 0xf2b61284, 0x4fac1475, 0x0adb49f9,
  0x19727a23, 0x15a7e374, 0xc43a18d5, 0x3fb1aa73, 0x342fc615, 0x924c0793, 0xbee2d7f0, 0x8a279de9,
  0x4aa2d70c, 0xe24dd37f, 0xbe862c0b, 0x177c22c2, 0x5388e5ee, 0xcd8a7510, 0xf901b4fd, 0xdbc13dbc,
  0x6c0bae5b, 0x64efe8c7, 0x48b02079, 0x80331a49, 0xca3d8ae6, 0xf3546190, 0xfed7108b, 0xc49b941b,
  0x32baf4a9, 0xeb833a4a, 0x88a3f1a5, 0x3a91ce0a, 0x3cc27da1, 0x7112e684, 0x4a3096b1, 0x3794574c,
  0xa3c8b6f3, 0x1d213941, 0x6e0a2e00, 0x233479f1, 0x0f4cd82f, 0x6093edd2, 0x5d7d209e, 0x464fe319,
  0xd4dcac9e, 0x0db845cb, 0xfb5e4bc3, 0xe0256ce1, 0x09fb4ed1, 0x0914be1e, 0xa5bdb2c3, 0xc6eb57bb,
  0x30320350, 0x3f397e91, 0xa67791bc, 0x86bc0e2c, 0xefa0a7e2, 0xe9ff7543, 0xe733612c, 0xd185897b,
  0x329e5388, 0x91dd236b, 0x2ecb0d93, 0xf4d82a3d, 0x35b5c03f, 0xe4e606f0, 0x05b21843, 0x37b45964,
  0x5eff22f4, 0x6027f4cc, 0x77178b3c, 0xae507131, 0x7bf7cabc, 0xf9c18d66, 0x593ade65, 0xd95ddf11,
]);

// The same bits as int32: V8 keeps int32 loads as small integers, while u32 values above 2^31
// become heap numbers in the hot loop. XOR and AND give the same low 32 bits either way.
const TABLE_I32 = new Int32Array(BUZHASH_TABLE.buffer, BUZHASH_TABLE.byteOffset, 256);

/** The size limits and mask derived from an average chunk size. */
export interface ChunkerParams {
  readonly avg: number;
  readonly min: number;
  readonly max: number;
  readonly mask: number;
  readonly threshold: number;
}

/**
 * Checks `avg` (a power of two from 64 KiB to 4 MiB, the values PBS's client accepts) and derives
 * the limits from it. Throws INVALID_ARGUMENT otherwise.
 */
export function chunkerParams(avg: number = DEFAULT_AVG_CHUNK_SIZE): ChunkerParams {
  if (
    !Number.isSafeInteger(avg) ||
    avg < MIN_AVG_CHUNK_SIZE ||
    avg > MAX_AVG_CHUNK_SIZE ||
    (avg & (avg - 1)) !== 0
  ) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `average chunk size must be a power of two from ${MIN_AVG_CHUNK_SIZE} to ${MAX_AVG_CHUNK_SIZE} bytes, got ${String(avg)}`,
      { details: { avg } },
    );
  }
  const mask = 2 * avg - 1;
  return { avg, min: avg / 4, max: avg * 4, mask, threshold: mask - 2 };
}

/**
 * The streaming buzhash chunker. Feed consecutive pieces of one stream to `scan`; each call
 * returns how many bytes of its `data` complete the current chunk (the boundary lies after
 * `data[ret - 1]`), or 0 when the chunk goes on past the end of `data`. After a non-zero return a
 * new chunk has begun: call `scan` again with `data.subarray(ret)`. Whatever is left at the end
 * of the stream forms the last chunk.
 */
export class Chunker {
  readonly avg: number;
  readonly min: number;
  readonly max: number;
  readonly mask: number;
  readonly threshold: number;

  /** Rolling hash (int32 bits); meaningful once the chunk has reached `min - 64` bytes. */
  private h = 0;
  /** Bytes in the current chunk so far. */
  private chunkLen = 0;
  /** The last up-to-64 bytes handed to earlier `scan` calls; chunk position p sits in slot p & 63. */
  private readonly ring = new Uint8Array(BUZHASH_WINDOW_SIZE);

  constructor(avgChunkSize: number = DEFAULT_AVG_CHUNK_SIZE) {
    const p = chunkerParams(avgChunkSize);
    this.avg = p.avg;
    this.min = p.min;
    this.max = p.max;
    this.mask = p.mask;
    this.threshold = p.threshold;
  }

  /** Bytes of the current chunk not yet cut. */
  get pendingLength(): number {
    return this.chunkLen;
  }

  /** Starts a new chunk at the next byte, as after a cut (forced boundary, pbs-protocol §9.1). */
  reset(): void {
    this.h = 0;
    this.chunkLen = 0;
  }

  /**
   * Scans `data`, the next bytes of the stream. Returns the number of bytes up to and including
   * the next boundary (1..data.length), or 0 if the current chunk does not end within `data`.
   */
  scan(data: Uint8Array): number {
    const n = data.length;
    const min = this.min;
    const max = this.max;
    const mask = this.mask;
    const threshold = this.threshold;
    const T = TABLE_I32;
    const hashStart = min - BUZHASH_WINDOW_SIZE;
    let len = this.chunkLen;
    let h = this.h;
    let pos = 0;

    // Bytes before `min - 64` cannot influence any boundary test: skip them unhashed.
    if (len < hashStart) {
      pos = Math.min(hashStart - len, n);
      len += pos;
      if (len < hashStart) return this.suspend(data, len, 0);
      h = 0;
    }

    // Fill the window with the 64 bytes that end at `min`; nothing leaves it yet.
    if (len < min) {
      const take = Math.min(min - len, n - pos);
      const fillEnd = pos + take;
      for (; pos < fillEnd; pos++) h = ((h << 1) | (h >>> 31)) ^ T[data[pos]!]!;
      len += take;
      if (len < min) return this.suspend(data, len, h);
      // The first boundary test, right after byte number `min`.
      if ((h & mask) >= threshold) return this.cut(pos);
    }

    const end = Math.min(n, pos + (max - len));
    // Outgoing bytes that were handed to an earlier call come from the ring.
    const ring = this.ring;
    const ringEnd = Math.min(end, BUZHASH_WINDOW_SIZE);
    for (; pos < ringEnd; pos++) {
      h = ((h << 1) | (h >>> 31)) ^ T[ring[len & 63]!]! ^ T[data[pos]!]!;
      len++;
      if ((h & mask) >= threshold) return this.cut(pos + 1);
    }
    // The hot loop: the outgoing byte is 64 bytes back in `data`.
    const start = pos;
    for (; pos < end; pos++) {
      h = ((h << 1) | (h >>> 31)) ^ T[data[pos - 64]!]! ^ T[data[pos]!]!;
      if ((h & mask) >= threshold) return this.cut(pos + 1);
    }
    len += end - start;
    if (len >= max) return this.cut(end);
    return this.suspend(data, len, h);
  }

  private cut(consumed: number): number {
    this.h = 0;
    this.chunkLen = 0;
    return consumed;
  }

  /** All of `data` was consumed without a boundary; the chunk now holds `len` bytes. */
  private suspend(data: Uint8Array, len: number, h: number): number {
    const n = data.length;
    const ring = this.ring;
    const from = n > BUZHASH_WINDOW_SIZE ? n - BUZHASH_WINDOW_SIZE : 0;
    let p = len - (n - from);
    for (let i = from; i < n; i++, p++) ring[p & 63] = data[i]!;
    this.chunkLen = len;
    this.h = h;
    return 0;
  }
}

/**
 * Push-style splitter over one stream: `push` returns the chunks completed by a piece, `finish`
 * the last one. Chunks may be views of the pushed pieces (no copy when a chunk lies within one
 * piece), so pieces must not be modified after they are pushed.
 */
export class ChunkSplitter {
  private readonly chunker: Chunker;
  private parts: Uint8Array[] = [];
  private partsLength = 0;

  constructor(avgChunkSize: number = DEFAULT_AVG_CHUNK_SIZE) {
    this.chunker = new Chunker(avgChunkSize);
  }

  push(piece: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let rest = piece;
    while (rest.length > 0) {
      const k = this.chunker.scan(rest);
      if (k === 0) {
        this.parts.push(rest);
        this.partsLength += rest.length;
        break;
      }
      const head = rest.subarray(0, k);
      if (this.parts.length === 0) {
        out.push(head);
      } else {
        this.parts.push(head);
        out.push(this.take(this.partsLength + k));
      }
      rest = rest.subarray(k);
    }
    return out;
  }

  /** The last chunk (shorter than `min` possibly), or undefined if nothing is pending. */
  finish(): Uint8Array | undefined {
    if (this.partsLength === 0) return undefined;
    const last = this.take(this.partsLength);
    this.chunker.reset();
    return last;
  }

  private take(total: number): Uint8Array {
    const parts = this.parts;
    this.parts = [];
    this.partsLength = 0;
    if (parts.length === 1) return parts[0]!;
    const chunk = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      chunk.set(p, off);
      off += p.length;
    }
    return chunk;
  }
}

/** Yields the end offset (in the whole stream) of every chunk, the last one included. */
export function* chunkBoundaries(
  stream: Iterable<Uint8Array>,
  avgChunkSize: number = DEFAULT_AVG_CHUNK_SIZE,
): Generator<number, void, undefined> {
  const chunker = new Chunker(avgChunkSize);
  let offset = 0;
  for (const piece of stream) {
    let rest = piece;
    while (rest.length > 0) {
      const k = chunker.scan(rest);
      if (k === 0) {
        offset += rest.length;
        break;
      }
      offset += k;
      yield offset;
      rest = rest.subarray(k);
    }
  }
  if (chunker.pendingLength > 0) yield offset;
}

/** Cuts a stream into its chunks (see ChunkSplitter for aliasing of the input). */
export function* splitIntoChunks(
  stream: Iterable<Uint8Array>,
  avgChunkSize: number = DEFAULT_AVG_CHUNK_SIZE,
): Generator<Uint8Array, void, undefined> {
  const splitter = new ChunkSplitter(avgChunkSize);
  for (const piece of stream) yield* splitter.push(piece);
  const last = splitter.finish();
  if (last !== undefined) yield last;
}

/** splitIntoChunks over an async stream (a Node Readable, a file handle's stream, ...). */
export async function* splitIntoChunksAsync(
  stream: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  avgChunkSize: number = DEFAULT_AVG_CHUNK_SIZE,
): AsyncGenerator<Uint8Array, void, undefined> {
  const splitter = new ChunkSplitter(avgChunkSize);
  for await (const piece of stream) yield* splitter.push(piece);
  const last = splitter.finish();
  if (last !== undefined) yield last;
}
