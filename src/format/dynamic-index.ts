/**
 * The dynamic index (`.didx`, pbs-formats §4.2): a 4096-byte header, then 40-byte entries
 * (u64 LE end offset, 32-byte digest), one per content-defined chunk of a stream, in stream order.
 * Pure: parses and builds bytes, no file I/O.
 */
import { BurrowError } from '../lib/errors.js';
import { DYNAMIC_INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE } from './magic.js';
import {
  INDEX_CSUM_SIZE,
  checkDigest,
  checkIndexCsum,
  checkLookupOffset,
  checkPosition,
  computeIndexCsum,
  decodeCommonHeader,
  encodeCommonHeader,
  readU64,
  viewOf,
  writeU64,
} from './index-common.js';
import type { ChunkRange, IndexChunk, IndexHeaderCommon } from './index-common.js';

/** Where the digest sits inside an entry, after the u64 end offset. */
const ENTRY_DIGEST_OFFSET = 8;

export type DynamicIndexHeader = IndexHeaderCommon;

export interface DynamicIndexEntry {
  /** Exclusive end offset of the chunk in the stream (cumulative). */
  readonly end: number;
  readonly digest: Uint8Array;
}

/** The 4096-byte header, reserved bytes zero. Writers pass an all-zero csum until they close. */
export function encodeDynamicIndexHeader(header: DynamicIndexHeader): Uint8Array {
  return encodeCommonHeader('dynamic', header);
}

/**
 * Read and validate the header from the first 4096 (or more) bytes of a `.didx`. Reserved bytes
 * are not checked, as PBS does not check them either.
 */
export function decodeDynamicIndexHeader(
  bytes: Uint8Array,
  fileSize = bytes.byteLength,
): DynamicIndexHeader {
  return decodeCommonHeader('dynamic', bytes, fileSize);
}

/** The entry count a file of `fileSize` bytes holds, or INDEX_BAD_SIZE when it is not whole entries. */
export function dynamicIndexCount(fileSize: number): number {
  const bodySize = fileSize - INDEX_HEADER_SIZE;
  if (bodySize < 0 || bodySize % DYNAMIC_INDEX_ENTRY_SIZE !== 0) {
    throw new BurrowError(
      'INDEX_BAD_SIZE',
      `dynamic index is ${fileSize} bytes: after the ${INDEX_HEADER_SIZE}-byte header that is not a whole number of ${DYNAMIC_INDEX_ENTRY_SIZE}-byte entries (${bodySize % DYNAMIC_INDEX_ENTRY_SIZE} bytes left over)`,
      { details: { size: fileSize } },
    );
  }
  return bodySize / DYNAMIC_INDEX_ENTRY_SIZE;
}

/** Encode one 40-byte entry into `target` at `offset` (validated by the caller). */
export function writeDynamicEntry(
  target: Uint8Array,
  offset: number,
  end: number,
  digest: Uint8Array,
): void {
  writeU64(viewOf(target), offset, end);
  target.set(digest, offset + ENTRY_DIGEST_OFFSET);
}

export interface DynamicIndexInit {
  readonly uuid: Uint8Array;
  readonly ctime: number;
  /** In stream order; ends strictly increasing from > 0. May be empty (PBS cannot open that). */
  readonly entries: readonly DynamicIndexEntry[];
}

/** A complete `.didx` with its csum computed, byte for byte what a writer produces. */
export function encodeDynamicIndex(init: DynamicIndexInit): Uint8Array {
  const bytes = new Uint8Array(INDEX_HEADER_SIZE + DYNAMIC_INDEX_ENTRY_SIZE * init.entries.length);
  let previous = 0;
  init.entries.forEach((entry, i) => {
    if (!Number.isSafeInteger(entry.end) || entry.end <= previous) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `dynamic index entry ${i}: end offset ${String(entry.end)} must be an integer greater than the previous end ${previous}`,
      );
    }
    checkDigest(entry.digest, `dynamic index entry ${i} digest`);
    writeDynamicEntry(
      bytes,
      INDEX_HEADER_SIZE + i * DYNAMIC_INDEX_ENTRY_SIZE,
      entry.end,
      entry.digest,
    );
    previous = entry.end;
  });
  const indexCsum = computeIndexCsum(bytes.subarray(INDEX_HEADER_SIZE));
  bytes.set(encodeDynamicIndexHeader({ uuid: init.uuid, ctime: init.ctime, indexCsum }));
  return bytes;
}

/** A parsed `.didx`. It views the bytes it was given: do not modify them afterwards. */
export class DynamicIndex implements DynamicIndexHeader {
  readonly uuid: Uint8Array;
  /** From the header (PBS's own reader reports "now" instead; the header value is the real one). */
  readonly ctime: number;
  readonly indexCsum: Uint8Array;
  readonly count: number;
  /** Total stream size: the end of the last chunk, 0 for an index without entries. */
  readonly size: number;
  readonly #bytes: Uint8Array;
  readonly #view: DataView;

  private constructor(bytes: Uint8Array, header: DynamicIndexHeader, count: number) {
    this.#bytes = bytes;
    this.#view = viewOf(bytes);
    this.uuid = header.uuid;
    this.ctime = header.ctime;
    this.indexCsum = header.indexCsum;
    this.count = count;
    this.size = count === 0 ? 0 : this.#endAt(count - 1);
  }

  /**
   * Validate magic, header, length, and that the end offsets rise strictly from above 0 and fit a
   * JS number; a hostile index that breaks this would make lookups lie. The csum is not checked
   * here; call verifyCsum() when the content must be trusted.
   */
  static parse(bytes: Uint8Array): DynamicIndex {
    const header = decodeDynamicIndexHeader(bytes);
    const count = dynamicIndexCount(bytes.byteLength);
    const view = viewOf(bytes);
    let previous = 0;
    for (let i = 0; i < count; i++) {
      const at = INDEX_HEADER_SIZE + i * DYNAMIC_INDEX_ENTRY_SIZE;
      const end = readU64(view, at);
      if (end === undefined) {
        throw new BurrowError(
          'INDEX_BAD_ENTRY',
          `dynamic index entry ${i} (offset ${at}): end offset exceeds 2^53-1`,
          {
            details: { entry: i, offset: at },
          },
        );
      }
      if (end <= previous) {
        throw new BurrowError(
          'INDEX_BAD_ENTRY',
          `dynamic index entry ${i} (offset ${at}): end offset ${end} is not greater than the previous end ${previous}`,
          { details: { entry: i, offset: at, end, previous } },
        );
      }
      previous = end;
    }
    return new DynamicIndex(bytes, header, count);
  }

  #endAt(position: number): number {
    // parse() proved every end is a safe integer.
    return (
      readU64(this.#view, INDEX_HEADER_SIZE + position * DYNAMIC_INDEX_ENTRY_SIZE) ?? Number.NaN
    );
  }

  /** The entries, i.e. the bytes the csum covers. */
  get body(): Uint8Array {
    return this.#bytes.subarray(INDEX_HEADER_SIZE);
  }

  computeCsum(): Uint8Array {
    return computeIndexCsum(this.body);
  }

  /** Throw INDEX_CSUM_MISMATCH unless the stored csum matches the entries. */
  verifyCsum(): void {
    checkIndexCsum('dynamic', this.indexCsum, this.computeCsum());
  }

  /** Exclusive end offset of chunk `position`. */
  end(position: number): number {
    checkPosition('dynamic', position, this.count);
    return this.#endAt(position);
  }

  digest(position: number): Uint8Array {
    checkPosition('dynamic', position, this.count);
    const at = INDEX_HEADER_SIZE + position * DYNAMIC_INDEX_ENTRY_SIZE + ENTRY_DIGEST_OFFSET;
    // A copy of its own: the index bytes may be a Buffer, whose slice() is a view that would pin
    // (and, posted to a worker, copy) the whole index.
    return new Uint8Array(this.#bytes.subarray(at, at + INDEX_CSUM_SIZE));
  }

  chunkRange(position: number): ChunkRange {
    checkPosition('dynamic', position, this.count);
    return { start: position === 0 ? 0 : this.#endAt(position - 1), end: this.#endAt(position) };
  }

  /** The chunk position holding byte `offset` of the stream: the first chunk whose end is above it. */
  chunkForOffset(offset: number): number {
    checkLookupOffset('dynamic', offset, this.size);
    let lo = 0;
    let hi = this.count - 1;
    // Invariant: the answer lies in [lo, hi]; the last end exceeds offset, so hi always qualifies.
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#endAt(mid) > offset) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  *[Symbol.iterator](): IterableIterator<IndexChunk> {
    let start = 0;
    for (let position = 0; position < this.count; position++) {
      const end = this.#endAt(position);
      yield { position, start, end, digest: this.digest(position) };
      start = end;
    }
  }
}
