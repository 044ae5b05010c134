/**
 * What the fixed (`.fidx`) and dynamic (`.didx`) index formats share (pbs-formats §4): the
 * 4096-byte header prefix (magic, uuid, ctime, csum), little-endian u64 fields that must fit a JS
 * number, the index checksum, and how a file name or magic tells the two kinds apart.
 */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { bytesEqual, toHex } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import { DYNAMIC_INDEX_MAGIC, FIXED_INDEX_MAGIC, INDEX_HEADER_SIZE } from './magic.js';

export type IndexKind = 'fixed' | 'dynamic';

export const INDEX_MAGIC_OFFSET = 0;
export const INDEX_MAGIC_SIZE = 8;
export const INDEX_UUID_OFFSET = 8;
export const INDEX_UUID_SIZE = 16;
export const INDEX_CTIME_OFFSET = 24;
export const INDEX_CSUM_OFFSET = 32;
export const INDEX_CSUM_SIZE = 32;
/** Fixed index only: u64 image size and u64 chunk size follow the csum. */
export const FIXED_INDEX_SIZE_OFFSET = 64;
export const FIXED_INDEX_CHUNK_SIZE_OFFSET = 72;

/** The largest value a u64 field may hold for us to use it as an exact JS number. */
const MAX_SAFE_HI = 0x1f_ffff; // 2^53 - 1 = 0x1fffff_ffffffff

/** Human names for messages. */
export const INDEX_KIND_LABEL: Readonly<Record<IndexKind, string>> = Object.freeze({
  fixed: 'fixed index (.fidx)',
  dynamic: 'dynamic index (.didx)',
});

export function indexMagicOf(kind: IndexKind): Uint8Array {
  return kind === 'fixed' ? FIXED_INDEX_MAGIC : DYNAMIC_INDEX_MAGIC;
}

/** The index kind named by the first 8 bytes, or undefined when they are neither magic. */
export function indexKindOfMagic(bytes: Uint8Array): IndexKind | undefined {
  if (bytes.byteLength < INDEX_MAGIC_SIZE) return undefined;
  const head = bytes.subarray(0, INDEX_MAGIC_SIZE);
  if (bytesEqual(head, FIXED_INDEX_MAGIC)) return 'fixed';
  if (bytesEqual(head, DYNAMIC_INDEX_MAGIC)) return 'dynamic';
  return undefined;
}

/**
 * The index kind of an archive file name, from its last extension only (pbs-formats §5.1):
 * `.fidx` is fixed, `.didx` is dynamic; anything else (including `.blob`) is not an index.
 * Accepts a bare name or a path; only the part after the last `/` counts.
 */
export function indexKindOfFile(name: string): IndexKind | undefined {
  const base = name.slice(name.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  // A leading dot starts a hidden name, not an extension (".fidx" alone is not an archive).
  if (dot <= 0) return undefined;
  const ext = base.slice(dot + 1);
  if (ext === 'fidx') return 'fixed';
  if (ext === 'didx') return 'dynamic';
  return undefined;
}

/**
 * The index checksum. For both kinds it is SHA-256 over the whole body, i.e. every byte after
 * the 4096-byte header: the concatenated digests of a fixed index, the (end, digest) entries of a
 * dynamic one (pbs-formats §4.1, §4.2).
 */
export function computeIndexCsum(body: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(body).digest());
}

/** The same checksum built piece by piece, for writers that stream their body. */
export class IndexCsumBuilder {
  readonly #hash: Hash = createHash('sha256');
  #done = false;

  update(bytes: Uint8Array): void {
    if (this.#done) throw new BurrowError('INTERNAL', 'index csum updated after it was finished');
    this.#hash.update(bytes);
  }

  digest(): Uint8Array {
    if (this.#done) throw new BurrowError('INTERNAL', 'index csum finished twice');
    this.#done = true;
    return new Uint8Array(this.#hash.digest());
  }
}

/** Throw INDEX_CSUM_MISMATCH unless `computed` equals the csum stored in the header. */
export function checkIndexCsum(kind: IndexKind, stored: Uint8Array, computed: Uint8Array): void {
  if (!bytesEqual(stored, computed)) {
    throw new BurrowError(
      'INDEX_CSUM_MISMATCH',
      `${INDEX_KIND_LABEL[kind]} checksum mismatch: header (offset ${INDEX_CSUM_OFFSET}) says ${toHex(stored)}, entries hash to ${toHex(computed)}`,
      { details: { stored: toHex(stored), computed: toHex(computed) } },
    );
  }
}

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A u64 LE at `offset`, or undefined when it exceeds Number.MAX_SAFE_INTEGER. */
export function readU64(view: DataView, offset: number): number | undefined {
  const lo = view.getUint32(offset, true);
  const hi = view.getUint32(offset + 4, true);
  if (hi > MAX_SAFE_HI) return undefined;
  return hi * 0x1_0000_0000 + lo;
}

/** Write a non-negative safe integer as u64 LE (callers validate the range). */
export function writeU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value >>> 0, true);
  view.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** The fields both headers carry. */
export interface IndexHeaderCommon {
  /** 16 random bytes chosen when the index was created. */
  readonly uuid: Uint8Array;
  /** Creation time, i64 epoch seconds (kept as a number; parse rejects values beyond ±2^53). */
  readonly ctime: number;
  /** The 32-byte csum stored at offset 32 (all zero while a writer is still open). */
  readonly indexCsum: Uint8Array;
}

export function checkUuid(uuid: Uint8Array): void {
  if (!(uuid instanceof Uint8Array) || uuid.byteLength !== INDEX_UUID_SIZE) {
    throw new BurrowError('INVALID_ARGUMENT', `index uuid must be ${INDEX_UUID_SIZE} bytes`);
  }
}

export function checkCtime(ctime: number): void {
  if (!Number.isSafeInteger(ctime)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `index ctime must be an integer number of epoch seconds, got ${String(ctime)}`,
    );
  }
}

export function checkDigest(digest: Uint8Array, what: string): void {
  if (!(digest instanceof Uint8Array) || digest.byteLength !== INDEX_CSUM_SIZE) {
    throw new BurrowError('INVALID_ARGUMENT', `${what} must be a 32-byte digest`);
  }
}

/**
 * A zeroed 4096-byte header with magic, uuid, ctime and csum filled in; kind-specific fields are
 * written by the caller into the returned bytes. Zeroing first is what keeps reserved bytes 0.
 */
export function encodeCommonHeader(kind: IndexKind, fields: IndexHeaderCommon): Uint8Array {
  checkUuid(fields.uuid);
  checkCtime(fields.ctime);
  checkDigest(fields.indexCsum, 'index csum');
  const header = new Uint8Array(INDEX_HEADER_SIZE);
  const view = viewOf(header);
  header.set(indexMagicOf(kind), INDEX_MAGIC_OFFSET);
  header.set(fields.uuid, INDEX_UUID_OFFSET);
  view.setBigInt64(INDEX_CTIME_OFFSET, BigInt(fields.ctime), true);
  header.set(fields.indexCsum, INDEX_CSUM_OFFSET);
  return header;
}

/**
 * Check length and magic of (the start of) an index and read the shared header fields.
 * `bytes` may be the whole file or just its first 4096 bytes; `fileSize` is the real file size
 * for messages. Copies uuid and csum so they stay valid if the caller reuses its buffer.
 */
export function decodeCommonHeader(
  kind: IndexKind,
  bytes: Uint8Array,
  fileSize = bytes.byteLength,
): IndexHeaderCommon {
  const label = INDEX_KIND_LABEL[kind];
  if (bytes.byteLength < INDEX_MAGIC_SIZE) {
    throw new BurrowError(
      'INDEX_BAD_SIZE',
      `${label} is truncated: ${fileSize} bytes, too short to hold the 8-byte magic`,
      {
        details: { size: fileSize },
      },
    );
  }
  const magic = bytes.subarray(0, INDEX_MAGIC_SIZE);
  if (!bytesEqual(magic, indexMagicOf(kind))) {
    const other = indexKindOfMagic(bytes);
    const hint = other === undefined ? '' : ` (that is the magic of a ${INDEX_KIND_LABEL[other]})`;
    throw new BurrowError(
      'INDEX_BAD_MAGIC',
      `not a ${label}: magic at offset 0 is ${toHex(magic)}, expected ${toHex(indexMagicOf(kind))}${hint}`,
      { details: { magic: toHex(magic) } },
    );
  }
  if (bytes.byteLength < INDEX_HEADER_SIZE) {
    throw new BurrowError(
      'INDEX_BAD_SIZE',
      `${label} is truncated: ${fileSize} bytes, shorter than the ${INDEX_HEADER_SIZE}-byte header`,
      {
        details: { size: fileSize },
      },
    );
  }
  const view = viewOf(bytes);
  const ctimeBig = view.getBigInt64(INDEX_CTIME_OFFSET, true);
  if (ctimeBig > BigInt(Number.MAX_SAFE_INTEGER) || ctimeBig < BigInt(-Number.MAX_SAFE_INTEGER)) {
    throw new BurrowError(
      'INDEX_BAD_HEADER',
      `${label} ctime at offset ${INDEX_CTIME_OFFSET} is out of range: ${ctimeBig} seconds`,
      {
        details: { ctime: ctimeBig.toString() },
      },
    );
  }
  return {
    uuid: bytes.slice(INDEX_UUID_OFFSET, INDEX_UUID_OFFSET + INDEX_UUID_SIZE),
    ctime: Number(ctimeBig),
    indexCsum: bytes.slice(INDEX_CSUM_OFFSET, INDEX_CSUM_OFFSET + INDEX_CSUM_SIZE),
  };
}

/** Validate an offset argument of a lookup: a safe integer in [0, size). */
export function checkLookupOffset(kind: IndexKind, offset: number, size: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= size) {
    throw new BurrowError(
      'INDEX_OUT_OF_RANGE',
      `offset ${String(offset)} lies outside the ${INDEX_KIND_LABEL[kind]} (stream size ${size})`,
      {
        details: { offset, size },
      },
    );
  }
}

/** Validate a chunk position argument: an integer in [0, count). */
export function checkPosition(kind: IndexKind, position: number, count: number): void {
  if (!Number.isSafeInteger(position) || position < 0 || position >= count) {
    throw new BurrowError(
      'INDEX_OUT_OF_RANGE',
      `chunk position ${String(position)} lies outside the ${INDEX_KIND_LABEL[kind]} (${count} chunks)`,
      {
        details: { position, count },
      },
    );
  }
}

/** A chunk's byte range in the image or stream: [start, end). */
export interface ChunkRange {
  readonly start: number;
  readonly end: number;
}

/** One chunk as iteration yields it. */
export interface IndexChunk extends ChunkRange {
  readonly position: number;
  readonly digest: Uint8Array;
}
