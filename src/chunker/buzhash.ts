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
 *
 * The scan loop itself runs in the native addon when it is loaded (native/buzhash.c: a scalar
 * loop, and an AVX-512 VBMI kernel doing 64 bytes per step on CPUs that have it); the TypeScript
 * loop here is the fallback and the reference. All three cut alike (buzhash.test.ts runs every
 * test against each).
 */
import { BurrowError } from '../lib/errors.js';
import { nativeBuzhashScan } from '../lib/native-fs.js';

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

/** Layout of the state shared with native/buzhash.c (Int32Array elements, ring in bytes). */
const ST_H = 0;
const ST_LEN = 1;
const ST_MIN = 2;
const ST_MAX = 3;
const ST_MASK = 4;
const ST_THRESHOLD = 5;
const STATE_INTS = 24;
const RING_OFFSET = 32;

/**
 * The streaming buzhash chunker. Feed consecutive pieces of one stream to `scan`; each call
 * returns how many bytes of its `data` complete the current chunk (the boundary lies after
 * `data[ret - 1]`), or 0 when the chunk goes on past the end of `data`. After a non-zero return a
 * new chunk has begun: call `scan` again with `data.subarray(ret)`. Whatever is left at the end
 * of the stream forms the last chunk.
 *
 * The scan loop runs in the native addon when it is loaded (native/buzhash.c) and in TypeScript
 * otherwise; both give the same boundaries and share one state layout, so a chunker may even
 * switch paths between calls (the tests do).
 */
export class Chunker {
  readonly avg: number;
  readonly min: number;
  readonly max: number;
  readonly mask: number;
  readonly threshold: number;

  /**
   * h (int32 bits, meaningful once the chunk has reached `min - 64` bytes), bytes in the current
   * chunk, the four parameters, and from byte 32 the last up-to-64 bytes handed to earlier calls
   * (chunk position p in slot p & 63). One typed array so the native call allocates nothing.
   */
  private readonly state = new Int32Array(STATE_INTS);
  private readonly ring = new Uint8Array(this.state.buffer, RING_OFFSET, BUZHASH_WINDOW_SIZE);

  constructor(avgChunkSize: number = DEFAULT_AVG_CHUNK_SIZE) {
    const p = chunkerParams(avgChunkSize);
    this.avg = p.avg;
    this.min = p.min;
    this.max = p.max;
    this.mask = p.mask;
    this.threshold = p.threshold;
    this.state[ST_MIN] = p.min;
    this.state[ST_MAX] = p.max;
    this.state[ST_MASK] = p.mask;
    this.state[ST_THRESHOLD] = p.threshold;
  }

  /** Bytes of the current chunk not yet cut. */
  get pendingLength(): number {
    return this.state[ST_LEN]!;
  }

  /** Starts a new chunk at the next byte, as after a cut (forced boundary, pbs-protocol §9.1). */
  reset(): void {
    this.state[ST_H] = 0;
    this.state[ST_LEN] = 0;
  }

  /**
   * Scans `data`, the next bytes of the stream. Returns the number of bytes up to and including
   * the next boundary (1..data.length), or 0 if the current chunk does not end within `data`.
   */
  scan(data: Uint8Array): number {
    const end = this.scanFrom(data, 0);
    return end < 0 ? 0 : end;
  }

  /**
   * `scan` without the subarray: scans `data[start..]`, the next bytes of the stream, and returns
   * the index in `data` just after the next boundary (start < ret <= data.length), or -1 if the
   * current chunk does not end within `data[start..]`.
   */
  scanFrom(data: Uint8Array, start: number): number {
    if (!Number.isInteger(start) || start < 0 || start > data.length) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `Chunker.scanFrom: start ${String(start)} outside 0..${data.length}`,
        { details: { start, length: data.length } },
      );
    }
    const native = nativeBuzhashScan();
    return native !== undefined ? native(this.state, data, start) : this.scanTs(data, start);
  }

  /** The TypeScript scan loop; native/buzhash.c is the same algorithm, step by step. */
  private scanTs(data: Uint8Array, start: number): number {
    const st = this.state;
    const n = data.length;
    const min = this.min;
    const max = this.max;
    const mask = this.mask;
    const threshold = this.threshold;
    const T = TABLE_I32;
    const hashStart = min - BUZHASH_WINDOW_SIZE;
    let len = st[ST_LEN]!;
    let h = st[ST_H]!;
    let pos = start;

    // Bytes before `min - 64` cannot influence any boundary test: skip them unhashed.
    if (len < hashStart) {
      pos = Math.min(start + hashStart - len, n);
      len += pos - start;
      if (len < hashStart) return this.suspend(data, start, len, 0);
      h = 0;
    }

    // Fill the window with the 64 bytes that end at `min`; nothing leaves it yet.
    if (len < min) {
      const take = Math.min(min - len, n - pos);
      const fillEnd = pos + take;
      for (; pos < fillEnd; pos++) h = ((h << 1) | (h >>> 31)) ^ T[data[pos]!]!;
      len += take;
      if (len < min) return this.suspend(data, start, len, h);
      // The first boundary test, right after byte number `min`.
      if ((h & mask) >= threshold) return this.cut(pos);
    }

    const end = Math.min(n, pos + (max - len));
    // Outgoing bytes that were handed to an earlier call come from the ring.
    const ring = this.ring;
    const ringEnd = Math.min(end, start + BUZHASH_WINDOW_SIZE);
    for (; pos < ringEnd; pos++) {
      h = ((h << 1) | (h >>> 31)) ^ T[ring[len & 63]!]! ^ T[data[pos]!]!;
      len++;
      if ((h & mask) >= threshold) return this.cut(pos + 1);
    }
    // The hot loop: the outgoing byte is 64 bytes back in `data`.
    const hotStart = pos;
    for (; pos < end; pos++) {
      h = ((h << 1) | (h >>> 31)) ^ T[data[pos - 64]!]! ^ T[data[pos]!]!;
      if ((h & mask) >= threshold) return this.cut(pos + 1);
    }
    len += end - hotStart;
    if (len >= max) return this.cut(end);
    return this.suspend(data, start, len, h);
  }

  private cut(at: number): number {
    this.state[ST_H] = 0;
    this.state[ST_LEN] = 0;
    return at;
  }

  /** All of `data[start..]` was consumed without a boundary; the chunk now holds `len` bytes. */
  private suspend(data: Uint8Array, start: number, len: number, h: number): number {
    const n = data.length;
    const ring = this.ring;
    const from = n - start > BUZHASH_WINDOW_SIZE ? n - BUZHASH_WINDOW_SIZE : start;
    let p = len - (n - from);
    for (let i = from; i < n; i++, p++) ring[p & 63] = data[i]!;
    this.state[ST_LEN] = len;
    this.state[ST_H] = h;
    return -1;
  }
}

/**
 * Push-style splitter over one stream: `push` returns the chunks completed by a piece, `finish`
 * the last one. Chunks may be views of the pushed pieces (no copy when a chunk lies within one
 * piece), so pieces must not be modified after they are pushed.
 *
 * For the payload stream of split pxar archives (pbs-protocol §9.1, [4.x]) it also takes
 * suggested boundaries (`suggestBoundary`), forced cuts (`forceBoundary`) and stretches of the
 * stream that bypass it as reused chunks (`skipBytes`). Offsets are stream offsets: every byte
 * pushed or skipped since the splitter was made.
 */
export class ChunkSplitter {
  private readonly chunker: Chunker;
  private parts: Uint8Array[] = [];
  private partsLength = 0;
  /** Stream offset of the first byte of the pending chunk. */
  private base = 0;
  /** Pending suggestions, in increasing order, from `suggestionsHead` on. */
  private suggestions: number[] = [];
  private suggestionsHead = 0;
  private lastSuggestion = 0;

  constructor(avgChunkSize: number = DEFAULT_AVG_CHUNK_SIZE) {
    this.chunker = new Chunker(avgChunkSize);
  }

  /** Stream offset of the next byte to be pushed. */
  get streamOffset(): number {
    return this.base + this.partsLength;
  }

  /** Bytes pushed but not yet returned in a chunk. */
  get pendingLength(): number {
    return this.partsLength;
  }

  /**
   * Suggests a chunk boundary at stream offset `streamOffset` (the pxar encoder reports where each
   * file's PAYLOAD header starts). Offsets must come in non-decreasing order, else
   * INVALID_ARGUMENT. With `base` the offset where the pending chunk started, a suggestion `b` is
   * weighed when the bytes pushed so far (the current piece included) reach it, before any
   * content-defined boundary in that piece:
   * - dropped if `b` lies before the current position (the start of the piece being scanned);
   * - left pending, with a normal scan of the piece, if `b` lies beyond the end of the piece;
   * - dropped if `b - base < min`;
   * - a cut exactly at `b` if `b - base <= max` (the hash restarts there);
   * - otherwise left pending with a normal scan (the chunk is too long; a cut at `max` at the
   *   latest brings `b` into range).
   * A suggestion at exactly the current stream position is decided at the next `push` (or
   * `finish`/`forceBoundary`, which cut there anyway): the pending bytes become a chunk then.
   * As upstream, the result depends on when `b` is reached: a content-defined boundary in an
   * earlier piece wins over a suggestion that piece did not reach.
   */
  suggestBoundary(streamOffset: number): void {
    if (!Number.isSafeInteger(streamOffset) || streamOffset < this.lastSuggestion) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `suggested boundary ${String(streamOffset)} is not an integer at or after the previous suggestion ${this.lastSuggestion}`,
        { details: { offset: streamOffset, previous: this.lastSuggestion } },
      );
    }
    this.lastSuggestion = streamOffset;
    this.suggestions.push(streamOffset);
  }

  /**
   * Cuts at the current stream position: returns the pending bytes as a chunk (undefined when
   * there are none) and restarts the hash, so the next byte begins a new chunk.
   */
  forceBoundary(): Uint8Array | undefined {
    const chunk = this.partsLength > 0 ? this.take(this.partsLength) : undefined;
    this.chunker.reset();
    return chunk;
  }

  /**
   * Moves the stream position `length` bytes on without those bytes passing through (metadata
   * mode injects reused chunks there). Only at a boundary: call `forceBoundary` first, else
   * INVALID_ARGUMENT. Suggestions inside the skipped range are dropped.
   */
  skipBytes(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new BurrowError('INVALID_ARGUMENT', `skipBytes: bad length ${String(length)}`, {
        details: { length },
      });
    }
    if (this.partsLength > 0) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `skipBytes at stream offset ${this.streamOffset} with ${this.partsLength} pending bytes: call forceBoundary first`,
        { details: { offset: this.streamOffset, pending: this.partsLength } },
      );
    }
    this.base += length;
    this.chunker.reset();
  }

  push(piece: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    const n = piece.length;
    let start = 0;
    for (;;) {
      const k = this.hasSuggestions() ? this.suggestedCut(n - start) : -1;
      if (k === 0) {
        // A suggestion at the current position closes the pending chunk before this piece.
        out.push(this.take(this.partsLength));
        this.chunker.reset();
        continue;
      }
      if (start === n) break;
      let end: number;
      if (k > 0) {
        end = start + k;
        this.chunker.reset();
      } else {
        end = this.chunker.scanFrom(piece, start);
        if (end < 0) {
          const rest = start === 0 ? piece : piece.subarray(start);
          this.parts.push(rest);
          this.partsLength += rest.length;
          break;
        }
      }
      const head = piece.subarray(start, end);
      if (this.parts.length === 0) {
        out.push(head);
        this.base += head.length;
      } else {
        this.parts.push(head);
        this.partsLength += head.length;
        out.push(this.take(this.partsLength));
      }
      start = end;
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

  private hasSuggestions(): boolean {
    return this.suggestionsHead < this.suggestions.length;
  }

  /**
   * Applies the suggestion rules to the next `available` bytes. Returns where to cut, counted
   * from the current position (0: right here, before them), or -1 for a normal scan.
   */
  private suggestedCut(available: number): number {
    const here = this.base + this.partsLength;
    const min = this.chunker.min;
    const max = this.chunker.max;
    while (this.suggestionsHead < this.suggestions.length) {
      const b = this.suggestions[this.suggestionsHead]!;
      if (b > here + available) return -1; // not reached yet: undecided
      if (b >= here) {
        const size = b - this.base;
        if (size > max) return -1;
        if (size >= min) {
          this.dropSuggestion();
          return b - here;
        }
      }
      this.dropSuggestion(); // in the past, or too close to the chunk start
    }
    return -1;
  }

  private dropSuggestion(): void {
    this.suggestionsHead++;
    if (this.suggestionsHead === this.suggestions.length) {
      this.suggestions = [];
      this.suggestionsHead = 0;
    } else if (
      this.suggestionsHead >= 1024 &&
      this.suggestionsHead * 2 >= this.suggestions.length
    ) {
      this.suggestions = this.suggestions.slice(this.suggestionsHead);
      this.suggestionsHead = 0;
    }
  }

  /** Returns the pending parts as one chunk; the next chunk starts after them. */
  private take(total: number): Uint8Array {
    const parts = this.parts;
    this.parts = [];
    this.partsLength = 0;
    this.base += total;
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
    let start = 0;
    while (start < piece.length) {
      const end = chunker.scanFrom(piece, start);
      if (end < 0) {
        offset += piece.length - start;
        break;
      }
      offset += end - start;
      yield offset;
      start = end;
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
