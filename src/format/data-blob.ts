/**
 * DataBlob: the container of every chunk and `.blob` file (pbs-formats §3, pbs-protocol §7.1).
 *
 *   plain / zstd:              magic(8) crc32(4, LE) payload
 *   encrypted / zstd-encrypted: magic(8) crc32(4, LE) iv(16) tag(16) ciphertext
 *
 * The CRC covers only the bytes after the header. Compression (zstd level 1) is kept only when it
 * makes the payload smaller; encryption (AES-256-GCM, 16-byte IV, empty AAD) runs after it.
 *
 * Speed notes (see bench/formats.bench.ts): AES-GCM output is produced in 256 KiB pieces written
 * straight into the blob, and the CRC of each piece is taken while it is still in cache. One
 * `cipher.update()` over 4 MiB followed by a copy into the blob was 10-40% slower here, mostly from
 * faulting in two fresh 4 MiB buffers per blob instead of one. CryptConfig.encrypt/decrypt copy
 * their output once more, so this module drives the cipher itself with CryptConfig's key.
 */
import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { BurrowError } from '../lib/errors.js';
import { allocUninitialized, asBuffer, toHex } from '../lib/bytes.js';
import type { CryptConfig } from '../crypto/crypt-config.js';
import { GCM_IV_SIZE, GCM_TAG_SIZE } from '../crypto/crypt-config.js';
import type { Digest } from '../types/digest.js';
import {
  BLOB_HEADER_SIZE,
  BLOB_ZSTD_LEVEL,
  COMPRESSED_BLOB_MAGIC,
  ENCR_COMPR_BLOB_MAGIC,
  ENCRYPTED_BLOB_HEADER_SIZE,
  ENCRYPTED_BLOB_MAGIC,
  MAX_BLOB_SIZE,
  UNCOMPRESSED_BLOB_MAGIC,
} from './magic.js';
import { zstdCompressToScratch, zstdDecompress } from './zstd.js';

export type BlobKind = 'plain' | 'zstd' | 'encrypted' | 'zstd-encrypted';

export const BLOB_KINDS: readonly BlobKind[] = Object.freeze([
  'plain',
  'zstd',
  'encrypted',
  'zstd-encrypted',
]);

const MAGIC_OF_KIND: Readonly<Record<BlobKind, Uint8Array>> = Object.freeze({
  plain: UNCOMPRESSED_BLOB_MAGIC,
  zstd: COMPRESSED_BLOB_MAGIC,
  encrypted: ENCRYPTED_BLOB_MAGIC,
  'zstd-encrypted': ENCR_COMPR_BLOB_MAGIC,
});

const MAGIC_SIZE = 8;
const CRC_OFFSET = 8;
const IV_OFFSET = 12;
const TAG_OFFSET = IV_OFFSET + GCM_IV_SIZE;

/** The 8 magic bytes of a kind (a shared array: do not modify). */
export function blobMagic(kind: BlobKind): Uint8Array {
  return MAGIC_OF_KIND[kind];
}

export function isEncryptedKind(kind: BlobKind): boolean {
  return kind === 'encrypted' || kind === 'zstd-encrypted';
}

export function isCompressedKind(kind: BlobKind): boolean {
  return kind === 'zstd' || kind === 'zstd-encrypted';
}

/** 12 for the unencrypted kinds, 44 for the encrypted ones. */
export function blobHeaderSize(kind: BlobKind): number {
  return isEncryptedKind(kind) ? ENCRYPTED_BLOB_HEADER_SIZE : BLOB_HEADER_SIZE;
}

function magicEquals(bytes: Uint8Array, magic: Uint8Array): boolean {
  for (let i = 0; i < MAGIC_SIZE; i++) if (bytes[i] !== magic[i]) return false;
  return true;
}

/** The kind named by the first 8 bytes of `magic`, or undefined when they are no blob magic. */
export function blobKindOf(magic: Uint8Array): BlobKind | undefined {
  if (magic.byteLength < MAGIC_SIZE) return undefined;
  for (const kind of BLOB_KINDS) if (magicEquals(magic, MAGIC_OF_KIND[kind])) return kind;
  return undefined;
}

export interface BlobHeader {
  kind: BlobKind;
  /** The CRC32 stored at offset 8. */
  crc: number;
  headerSize: number;
  /** Views into the blob (encrypted kinds only). */
  iv?: Uint8Array;
  tag?: Uint8Array;
}

/** Read and check the header; the payload is `raw.subarray(headerSize)`. */
export function parseBlobHeader(raw: Uint8Array): BlobHeader {
  if (raw.byteLength < MAGIC_SIZE) {
    throw new BurrowError(
      'BLOB_TRUNCATED',
      `blob is ${raw.byteLength} bytes long, too short for its 8-byte magic number`,
      { details: { size: raw.byteLength, needed: MAGIC_SIZE } },
    );
  }
  const kind = blobKindOf(raw);
  if (kind === undefined) {
    throw new BurrowError(
      'BLOB_BAD_MAGIC',
      `blob starts with ${toHex(raw.subarray(0, MAGIC_SIZE))}, which is no DataBlob magic number`,
      {
        details: { offset: 0, magic: toHex(raw.subarray(0, MAGIC_SIZE)) },
      },
    );
  }
  const headerSize = blobHeaderSize(kind);
  if (raw.byteLength < headerSize) {
    throw new BurrowError(
      'BLOB_TRUNCATED',
      `${kind} blob is ${raw.byteLength} bytes long, shorter than its ${headerSize}-byte header`,
      { details: { kind, size: raw.byteLength, needed: headerSize } },
    );
  }
  const crc = readU32LE(raw, CRC_OFFSET);
  if (headerSize === BLOB_HEADER_SIZE) return { kind, crc, headerSize };
  return {
    kind,
    crc,
    headerSize,
    iv: view(raw, IV_OFFSET, IV_OFFSET + GCM_IV_SIZE),
    tag: view(raw, TAG_OFFSET, TAG_OFFSET + GCM_TAG_SIZE),
  };
}

/** A plain Uint8Array view (no copy), also when `bytes` is a Buffer, whose slice() would differ. */
function view(bytes: Uint8Array, start: number, end: number = bytes.byteLength): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset + start, end - start);
}

function readU32LE(bytes: Uint8Array, offset: number): number {
  return (
    (bytes[offset]! |
      (bytes[offset + 1]! << 8) |
      (bytes[offset + 2]! << 16) |
      (bytes[offset + 3]! << 24)) >>>
    0
  );
}

function writeU32LE(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value & 0xff;
  bytes[offset + 1] = (value >>> 8) & 0xff;
  bytes[offset + 2] = (value >>> 16) & 0xff;
  bytes[offset + 3] = value >>> 24;
}

/** The stored CRC and the CRC of the bytes after the header. */
export function blobCrc(raw: Uint8Array): { stored: number; computed: number } {
  const header = parseBlobHeader(raw);
  return { stored: header.crc, computed: crc32(raw.subarray(header.headerSize)) };
}

function crcMismatch(stored: number, computed: number, headerSize: number): BurrowError {
  const hex = (n: number): string => n.toString(16).padStart(8, '0');
  return new BurrowError(
    'BLOB_CRC_MISMATCH',
    `blob CRC32 mismatch: stored ${hex(stored)} (offset ${CRC_OFFSET}), computed ${hex(computed)} over bytes ${headerSize}..`,
    { details: { stored, computed, offset: CRC_OFFSET } },
  );
}

/** Throws BLOB_CRC_MISMATCH (or a header error) unless the stored CRC matches. */
export function verifyBlobCrc(raw: Uint8Array): void {
  const header = parseBlobHeader(raw);
  const computed = crc32(raw.subarray(header.headerSize));
  if (computed !== header.crc) throw crcMismatch(header.crc, computed, header.headerSize);
}

// ---------------------------------------------------------------------------------------------
// AES-256-GCM runs in CryptConfig, straight into (or out of) the blob buffer; the CRC is
// taken piece by piece on the way, while each piece is in cache.

/** Encrypt `src` into `out` at `offset`; returns the tag and the CRC32 of the ciphertext. */
function encryptInto(
  crypt: CryptConfig,
  iv: Uint8Array,
  src: Uint8Array,
  out: Uint8Array,
  offset: number,
): { tag: Uint8Array; crc: number } {
  let crc = 0;
  const tag = crypt.encryptInto(iv, src, out, offset, (piece) => {
    crc = crc32(piece, crc);
  });
  return { tag, crc };
}

/**
 * Decrypt `ciphertext` into `out` (which has room for it) and authenticate it. With `checkCrc`, a
 * CRC mismatch wins over a GCM failure, exactly as if the CRC had been checked first.
 */
function decryptInto(
  crypt: CryptConfig,
  header: BlobHeader,
  ciphertext: Uint8Array,
  out: Uint8Array,
  checkCrc: boolean,
): void {
  let crc = 0;
  let authFailure: BurrowError | undefined;
  try {
    // (CryptConfig never passes an empty piece, so the zlib.crc32 quirk noted there cannot bite.)
    crypt.decryptInto(
      header.iv!,
      header.tag!,
      ciphertext,
      out,
      checkCrc ? (piece) => (crc = crc32(piece, crc)) : undefined,
    );
  } catch (error) {
    authFailure =
      error instanceof BurrowError
        ? error
        : new BurrowError('BLOB_DECRYPT_FAILED', 'AES-GCM decryption failed', { cause: error });
  }
  if (checkCrc && crc !== header.crc) throw crcMismatch(header.crc, crc, header.headerSize);
  if (authFailure !== undefined) throw authFailure;
}

/** Decrypted zstd frames are consumed at once; keeping their buffer avoids faulting in fresh pages. */
const FRAME_SCRATCH_KEEP_LIMIT = 16 * 1024 * 1024 + 4096;
let frameScratch: Uint8Array | undefined;

function frameScratchFor(size: number): Uint8Array {
  if (frameScratch !== undefined && frameScratch.byteLength >= size)
    return frameScratch.subarray(0, size);
  const buf = allocUninitialized(size);
  if (size <= FRAME_SCRATCH_KEEP_LIMIT) frameScratch = buf;
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Encoding

export interface EncodeBlobOptions {
  /** Try zstd and keep it when smaller (default true). */
  compress?: boolean;
  /**
   * The zstd level (default BLOB_ZSTD_LEVEL, 1, the reference encoder's). Any level gives a frame
   * every reader accepts (§3.4); the backup client compresses chunks harder (CHUNK_ZSTD_LEVEL).
   */
  level?: number;
  /** Encrypt with this key (AES-256-GCM). */
  crypt?: CryptConfig;
  /** Fixed IV for known-answer tests only; never reuse an IV with the same key in real data. */
  iv?: Uint8Array;
}

function writeHeader(out: Uint8Array, kind: BlobKind, crc: number): void {
  out.set(MAGIC_OF_KIND[kind], 0);
  writeU32LE(out, CRC_OFFSET, crc);
}

/** Build a DataBlob from `data` (pbs-formats §3.4). The result never aliases `data`. */
export function encodeBlob(data: Uint8Array, options: EncodeBlobOptions = {}): Uint8Array {
  const pieces = encodeBlobPieces(data, options);
  if (pieces.length === 1) return pieces[0]!;
  const [header, payload] = pieces as [Uint8Array, Uint8Array];
  const out = allocUninitialized(header.byteLength + payload.byteLength);
  out.set(header, 0);
  out.set(payload, header.byteLength);
  return out;
}

/**
 * encodeBlob's bytes without gathering them into one buffer: one piece (an encrypted blob) or two
 * (the 12-byte header, then the payload). The payload may be `data` itself or a view of this
 * thread's zstd scratch memory, so the pieces are only valid until the next compression on this
 * thread and must be used at once (written to a file). Spares a writer that only writes the blob
 * a fresh buffer per chunk, whose pages the C library hands back and takes again every time.
 */
export function encodeBlobPieces(data: Uint8Array, options: EncodeBlobOptions = {}): Uint8Array[] {
  const { compress = true, crypt, iv, level = BLOB_ZSTD_LEVEL } = options;
  if (data.byteLength > MAX_BLOB_SIZE) {
    throw new BurrowError(
      'BLOB_TOO_LARGE',
      `blob data is ${data.byteLength} bytes, more than the ${MAX_BLOB_SIZE}-byte limit`,
      {
        details: { size: data.byteLength, limit: MAX_BLOB_SIZE },
      },
    );
  }
  if (iv !== undefined && crypt === undefined) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'an IV was given for a blob without an encryption key',
    );
  }
  const frame = compress ? zstdCompressToScratch(data, level) : undefined;
  const compressed = frame !== undefined && frame.byteLength < data.byteLength;

  if (crypt === undefined) {
    const payload = compressed ? frame : data;
    const header = new Uint8Array(BLOB_HEADER_SIZE);
    writeHeader(header, compressed ? 'zstd' : 'plain', crc32(payload));
    return [header, payload];
  }

  const blobIv = iv ?? randomBytes(GCM_IV_SIZE);
  const plaintext = compressed ? frame : data;
  const out = allocUninitialized(ENCRYPTED_BLOB_HEADER_SIZE + plaintext.byteLength);
  const { tag, crc } = encryptInto(crypt, blobIv, plaintext, out, ENCRYPTED_BLOB_HEADER_SIZE);
  writeHeader(out, compressed ? 'zstd-encrypted' : 'encrypted', crc);
  out.set(blobIv, IV_OFFSET);
  out.set(tag, TAG_OFFSET);
  return [out];
}

// ---------------------------------------------------------------------------------------------
// Digests

/** SHA-256 of `data`, keyed with the id key (appended) when `crypt` is given (pbs-formats §3.5). */
export function computeChunkDigest(data: Uint8Array, crypt?: CryptConfig): Digest {
  if (crypt !== undefined) return crypt.computeDigest(data);
  return new Uint8Array(createHash('sha256').update(data).digest());
}

/** A chunk ready to store or upload: its identity and its encoded bytes. */
export interface EncodedChunk {
  digest: Digest;
  blob: Uint8Array;
}

export function encodeChunk(
  data: Uint8Array,
  options: { compress?: boolean; crypt?: CryptConfig } = {},
): EncodedChunk {
  const blob = encodeBlob(data, options);
  return { digest: computeChunkDigest(data, options.crypt), blob };
}

// ---------------------------------------------------------------------------------------------
// Decoding

export interface DecodeBlobOptions {
  /** Key for encrypted blobs; without it they fail with BLOB_KEY_REQUIRED. */
  crypt?: CryptConfig;
  /** Check the CRC32 first (default true). */
  checkCrc?: boolean;
  /**
   * Require this digest of the decoded data: SHA-256 for unencrypted blobs, SHA-256(data || id_key)
   * for encrypted ones.
   */
  expectedDigest?: Digest;
  /** Require this decoded length; also sizes the zstd output buffer. */
  expectedSize?: number;
  /** Refuse decoded data longer than this (default 128 MiB): guards against zstd bombs. */
  maxSize?: number;
}

/**
 * Decode a DataBlob to its data. For plain blobs the result is a view into `raw` (no copy): copy it
 * before changing `raw`.
 */
export function decodeBlob(raw: Uint8Array, options: DecodeBlobOptions = {}): Uint8Array {
  const { crypt, checkCrc = true, expectedDigest, expectedSize, maxSize = MAX_BLOB_SIZE } = options;
  checkSize('maxSize', maxSize);
  if (expectedSize !== undefined) checkSize('expectedSize', expectedSize);
  const header = parseBlobHeader(raw);
  const payload = view(raw, header.headerSize);
  const encrypted = isEncryptedKind(header.kind);
  let data: Uint8Array;

  if (!encrypted) {
    if (checkCrc) verifyPayloadCrc(header, payload);
    data = header.kind === 'zstd' ? decompressPayload(payload, maxSize, expectedSize) : payload;
  } else {
    if (crypt === undefined) {
      if (checkCrc) verifyPayloadCrc(header, payload);
      throw new BurrowError(
        'BLOB_KEY_REQUIRED',
        `the blob is encrypted (${header.kind}) and no key was given`,
        {
          details: { kind: header.kind },
        },
      );
    }
    if (header.kind === 'encrypted') {
      data = allocUninitialized(payload.byteLength);
      decryptInto(crypt, header, payload, data, checkCrc);
    } else {
      const frame = frameScratchFor(payload.byteLength);
      decryptInto(crypt, header, payload, frame, checkCrc);
      data = decompressPayload(frame, maxSize, expectedSize);
    }
  }

  checkDataLimit(data.byteLength, maxSize);
  if (expectedSize !== undefined) checkDataSize(data.byteLength, expectedSize);
  if (expectedDigest !== undefined) {
    checkDataDigest(computeChunkDigest(data, encrypted ? crypt : undefined), expectedDigest);
  }
  return data;
}

/** Decoded data above the caller's limit: BLOB_TOO_LARGE. */
function checkDataLimit(size: number, maxSize: number): void {
  if (size > maxSize) {
    throw new BurrowError(
      'BLOB_TOO_LARGE',
      `blob data is ${size} bytes, more than the limit of ${maxSize}`,
      { details: { size, limit: maxSize } },
    );
  }
}

function checkDataSize(size: number, expected: number): void {
  if (size !== expected) {
    throw new BurrowError('SIZE_MISMATCH', `blob data is ${size} bytes, expected ${expected}`, {
      details: { size, expected },
    });
  }
}

function checkDataDigest(digest: Uint8Array, expected: Uint8Array): void {
  if (!asBuffer(digest).equals(asBuffer(expected))) {
    throw new BurrowError(
      'DIGEST_MISMATCH',
      `blob data has digest ${toHex(digest)}, expected ${toHex(expected)}`,
      { details: { digest: toHex(digest), expected: toHex(expected) } },
    );
  }
}

function checkSize(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${name} must be a non-negative integer, got ${value}`,
    );
  }
}

function verifyPayloadCrc(header: BlobHeader, payload: Uint8Array): void {
  const computed = crc32(payload);
  if (computed !== header.crc) throw crcMismatch(header.crc, computed, header.headerSize);
}

function decompressPayload(
  frame: Uint8Array,
  maxSize: number,
  expectedSize: number | undefined,
): Uint8Array {
  return zstdDecompress(
    frame,
    maxSize,
    expectedSize === undefined ? {} : { sizeHint: expectedSize },
  );
}

/**
 * The SHA-256 and length of an unencrypted blob's data, for checks that look at the data only to
 * hash it (a server checking an upload). The data is decoded into memory reused from call to
 * call (zstd's `scratch`), so checking thousands of chunks allocates nothing per chunk. The same
 * errors as decodeBlob; an encrypted blob is BLOB_KEY_REQUIRED, since its digest needs the key.
 */
export function plainBlobDigest(
  raw: Uint8Array,
  options: Pick<DecodeBlobOptions, 'checkCrc' | 'expectedSize' | 'maxSize'> = {},
): { digest: Digest; size: number } {
  const { checkCrc = true, expectedSize, maxSize = MAX_BLOB_SIZE } = options;
  checkSize('maxSize', maxSize);
  if (expectedSize !== undefined) checkSize('expectedSize', expectedSize);
  const header = parseBlobHeader(raw);
  const payload = view(raw, header.headerSize);
  if (checkCrc) verifyPayloadCrc(header, payload);
  if (isEncryptedKind(header.kind)) {
    throw new BurrowError(
      'BLOB_KEY_REQUIRED',
      `the blob is encrypted (${header.kind}); its digest cannot be computed without the key`,
      { details: { kind: header.kind } },
    );
  }
  const data =
    header.kind === 'zstd'
      ? zstdDecompress(payload, maxSize, {
          scratch: true,
          ...(expectedSize === undefined ? {} : { sizeHint: expectedSize }),
        })
      : payload;
  checkDataLimit(data.byteLength, maxSize);
  return { digest: computeChunkDigest(data), size: data.byteLength };
}

/**
 * The server-side check of an uploaded chunk (pbs-formats §3.6): header and CRC for every kind;
 * for unencrypted blobs also the decoded size and SHA-256. Encrypted content cannot be checked
 * without the key, so it is accepted as is. `checkCrc: false` skips the CRC (a caller that
 * checked it already). The decoded data is not kept (plainBlobDigest).
 */
export function verifyUnencrypted(
  raw: Uint8Array,
  expectedSize: number,
  expectedDigest: Digest,
  options: { checkCrc?: boolean } = {},
): void {
  const checkCrc = options.checkCrc ?? true;
  const header = parseBlobHeader(raw);
  if (isEncryptedKind(header.kind)) {
    if (checkCrc) verifyPayloadCrc(header, raw.subarray(header.headerSize));
    return;
  }
  const { digest, size } = plainBlobDigest(raw, { checkCrc, expectedSize });
  checkDataSize(size, expectedSize);
  checkDataDigest(digest, expectedDigest);
}
