/**
 * The fixed index (`.fidx`, pbs-formats §4.1): a 4096-byte header, then one 32-byte digest per
 * `chunkSize` slice of an image of `size` bytes. Pure: parses and builds bytes, no file I/O.
 */
import { BurrowError } from '../lib/errors.js';
import { FIXED_INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE } from './magic.js';
import {
  FIXED_INDEX_CHUNK_SIZE_OFFSET,
  FIXED_INDEX_SIZE_OFFSET,
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

/** Largest power of two that is still a safe integer; chunk sizes beyond it cannot be exact. */
const MAX_CHUNK_SIZE_FIELD = 2 ** 52;

export interface FixedIndexHeader extends IndexHeaderCommon {
  /** Image size in bytes (u64, > 0). */
  readonly size: number;
  /** Bytes per chunk (u64, a power of two; PBS always writes 4 MiB). */
  readonly chunkSize: number;
}

export interface FixedIndexLayout {
  /** Number of digests: ceil(size / chunkSize). */
  readonly count: number;
  /** The exact file size the header implies: 4096 + 32 * count. */
  readonly fileSize: number;
}

function isPowerOfTwo(n: number): boolean {
  // Math.log2 is exact on powers of two; the range check keeps the test on exact integers.
  return (
    Number.isSafeInteger(n) &&
    n > 0 &&
    n <= MAX_CHUNK_SIZE_FIELD &&
    2 ** Math.round(Math.log2(n)) === n
  );
}

/** Entry count and file size implied by a size and chunk size that are already validated. */
export function fixedIndexLayout(size: number, chunkSize: number): FixedIndexLayout {
  // Division by a power of two is exact in floating point, so ceil() is too.
  const count = Math.ceil(size / chunkSize);
  return { count, fileSize: INDEX_HEADER_SIZE + FIXED_INDEX_ENTRY_SIZE * count };
}

function checkGeometry(
  size: number,
  chunkSize: number,
  code: 'INVALID_ARGUMENT' | 'INDEX_BAD_HEADER',
  what: string,
): void {
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new BurrowError(
      code,
      `${what} image size must be a positive integer (at most 2^53-1), got ${String(size)}`,
      {
        details: { size },
      },
    );
  }
  if (!isPowerOfTwo(chunkSize)) {
    throw new BurrowError(
      code,
      `${what} chunk size must be a non-zero power of two, got ${String(chunkSize)}`,
      {
        details: { chunkSize },
      },
    );
  }
}

/** The 4096-byte header, reserved bytes zero. Writers pass an all-zero csum until they close. */
export function encodeFixedIndexHeader(header: FixedIndexHeader): Uint8Array {
  checkGeometry(header.size, header.chunkSize, 'INVALID_ARGUMENT', 'fixed index');
  const bytes = encodeCommonHeader('fixed', header);
  const view = viewOf(bytes);
  writeU64(view, FIXED_INDEX_SIZE_OFFSET, header.size);
  writeU64(view, FIXED_INDEX_CHUNK_SIZE_OFFSET, header.chunkSize);
  return bytes;
}

/**
 * Read and validate the header from the first 4096 (or more) bytes of a `.fidx`. Does not look
 * at the body; callers compare `fileSize` with the real size before reading the rest.
 * Reserved bytes are not checked: PBS ignores them, so a reader that insisted could refuse
 * files PBS accepts.
 */
export function decodeFixedIndexHeader(
  bytes: Uint8Array,
  fileSize = bytes.byteLength,
): FixedIndexHeader & FixedIndexLayout {
  const common = decodeCommonHeader('fixed', bytes, fileSize);
  const view = viewOf(bytes);
  const size = readU64(view, FIXED_INDEX_SIZE_OFFSET);
  const chunkSize = readU64(view, FIXED_INDEX_CHUNK_SIZE_OFFSET);
  if (size === undefined) {
    throw new BurrowError(
      'INDEX_BAD_HEADER',
      `fixed index image size at offset ${FIXED_INDEX_SIZE_OFFSET} exceeds 2^53-1 bytes`,
      {
        details: { offset: FIXED_INDEX_SIZE_OFFSET },
      },
    );
  }
  if (chunkSize === undefined) {
    throw new BurrowError(
      'INDEX_BAD_HEADER',
      `fixed index chunk size at offset ${FIXED_INDEX_CHUNK_SIZE_OFFSET} exceeds 2^53-1 bytes`,
      {
        details: { offset: FIXED_INDEX_CHUNK_SIZE_OFFSET },
      },
    );
  }
  checkGeometry(size, chunkSize, 'INDEX_BAD_HEADER', 'fixed index');
  return { ...common, size, chunkSize, ...fixedIndexLayout(size, chunkSize) };
}

export interface FixedIndexInit {
  readonly uuid: Uint8Array;
  readonly ctime: number;
  readonly size: number;
  readonly chunkSize: number;
  /** Exactly ceil(size / chunkSize) digests of 32 bytes, in image order. */
  readonly digests: readonly Uint8Array[];
}

/** A complete `.fidx` with its csum computed, byte for byte what a writer produces. */
export function encodeFixedIndex(init: FixedIndexInit): Uint8Array {
  checkGeometry(init.size, init.chunkSize, 'INVALID_ARGUMENT', 'fixed index');
  const { count, fileSize } = fixedIndexLayout(init.size, init.chunkSize);
  if (init.digests.length !== count) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `a fixed index of ${init.size} bytes in ${init.chunkSize}-byte chunks needs ${count} digests, got ${init.digests.length}`,
    );
  }
  const bytes = new Uint8Array(fileSize);
  init.digests.forEach((digest, i) => {
    checkDigest(digest, `fixed index digest ${i}`);
    bytes.set(digest, INDEX_HEADER_SIZE + i * FIXED_INDEX_ENTRY_SIZE);
  });
  const indexCsum = computeIndexCsum(bytes.subarray(INDEX_HEADER_SIZE));
  bytes.set(
    encodeFixedIndexHeader({
      uuid: init.uuid,
      ctime: init.ctime,
      indexCsum,
      size: init.size,
      chunkSize: init.chunkSize,
    }),
  );
  return bytes;
}

/** A parsed `.fidx`. It views the bytes it was given: do not modify them afterwards. */
export class FixedIndex implements FixedIndexHeader, FixedIndexLayout {
  readonly uuid: Uint8Array;
  readonly ctime: number;
  readonly indexCsum: Uint8Array;
  readonly size: number;
  readonly chunkSize: number;
  readonly count: number;
  readonly fileSize: number;
  readonly #bytes: Uint8Array;

  private constructor(bytes: Uint8Array, header: FixedIndexHeader & FixedIndexLayout) {
    this.#bytes = bytes;
    this.uuid = header.uuid;
    this.ctime = header.ctime;
    this.indexCsum = header.indexCsum;
    this.size = header.size;
    this.chunkSize = header.chunkSize;
    this.count = header.count;
    this.fileSize = header.fileSize;
  }

  /**
   * Validate magic, header fields and the exact length. The csum is not checked here (it costs
   * a pass over the body); call verifyCsum() when the content must be trusted.
   */
  static parse(bytes: Uint8Array): FixedIndex {
    const header = decodeFixedIndexHeader(bytes);
    if (bytes.byteLength !== header.fileSize) {
      throw new BurrowError(
        'INDEX_BAD_SIZE',
        `fixed index is ${bytes.byteLength} bytes, but its header (size ${header.size}, chunk size ${header.chunkSize}) implies ${header.fileSize} bytes (${header.count} digests)`,
        { details: { actual: bytes.byteLength, expected: header.fileSize } },
      );
    }
    return new FixedIndex(bytes, header);
  }

  /** The digest area, i.e. the bytes the csum covers. */
  get body(): Uint8Array {
    return this.#bytes.subarray(INDEX_HEADER_SIZE);
  }

  computeCsum(): Uint8Array {
    return computeIndexCsum(this.body);
  }

  /** Throw INDEX_CSUM_MISMATCH unless the stored csum matches the digests. */
  verifyCsum(): void {
    checkIndexCsum('fixed', this.indexCsum, this.computeCsum());
  }

  digest(position: number): Uint8Array {
    checkPosition('fixed', position, this.count);
    const at = INDEX_HEADER_SIZE + position * FIXED_INDEX_ENTRY_SIZE;
    // A copy of its own: the index bytes may be a Buffer, whose slice() is a view that would pin
    // (and, posted to a worker, copy) the whole index.
    return new Uint8Array(this.#bytes.subarray(at, at + INDEX_CSUM_SIZE));
  }

  chunkRange(position: number): ChunkRange {
    checkPosition('fixed', position, this.count);
    const start = position * this.chunkSize;
    return { start, end: Math.min(start + this.chunkSize, this.size) };
  }

  /** The chunk position holding byte `offset` of the image. */
  chunkForOffset(offset: number): number {
    checkLookupOffset('fixed', offset, this.size);
    return Math.floor(offset / this.chunkSize);
  }

  *[Symbol.iterator](): IterableIterator<IndexChunk> {
    for (let position = 0; position < this.count; position++) {
      yield { position, ...this.chunkRange(position), digest: this.digest(position) };
    }
  }
}
