/**
 * Every magic number of the PBS on-disk formats, in one frozen place (ARCHITECTURE.md principle 3).
 * Each is the first 8 bytes of SHA-256 over an ASCII string (pbs-formats §3.1); the strings are kept
 * beside the bytes so a test can re-derive them. A new format gets a new constant, never an edit.
 */

// Typed arrays cannot be frozen; treat these as read-only (callers compare, never write).
const magic = (...bytes: number[]): Uint8Array => Uint8Array.from(bytes);

export const MAGIC_SOURCES = Object.freeze({
  UNCOMPRESSED_BLOB: 'Proxmox Backup uncompressed blob v1.0',
  COMPRESSED_BLOB: 'Proxmox Backup zstd compressed blob v1.0',
  ENCRYPTED_BLOB: 'Proxmox Backup encrypted blob v1.0',
  ENCR_COMPR_BLOB: 'Proxmox Backup zstd compressed encrypted blob v1.0',
  FIXED_INDEX: 'Proxmox Backup fixed sized chunk index v1.0',
  DYNAMIC_INDEX: 'Proxmox Backup dynamic sized chunk index v1.0',
  CATALOG: 'Proxmox Backup Catalog file v1.0',
});

/** Plain DataBlob: header 12 bytes (magic, crc32). */
export const UNCOMPRESSED_BLOB_MAGIC = magic(66, 171, 56, 7, 190, 131, 112, 161);
/** zstd DataBlob: header 12 bytes. */
export const COMPRESSED_BLOB_MAGIC = magic(49, 185, 88, 66, 111, 182, 163, 127);
/** AES-256-GCM DataBlob: header 44 bytes (magic, crc32, iv[16], tag[16]). */
export const ENCRYPTED_BLOB_MAGIC = magic(123, 103, 133, 190, 34, 45, 76, 240);
/** zstd then AES-256-GCM DataBlob: header 44 bytes. */
export const ENCR_COMPR_BLOB_MAGIC = magic(230, 89, 27, 191, 11, 191, 216, 11);
/** `.fidx` fixed index. */
export const FIXED_INDEX_MAGIC = magic(47, 127, 65, 237, 145, 253, 15, 205);
/** `.didx` dynamic index. */
export const DYNAMIC_INDEX_MAGIC = magic(28, 145, 78, 165, 25, 186, 179, 205);
/** `catalog.pcat1` file catalog. */
export const CATALOG_MAGIC = magic(145, 253, 96, 249, 196, 103, 88, 213);

export const MAGIC_BYTES = Object.freeze({
  UNCOMPRESSED_BLOB: UNCOMPRESSED_BLOB_MAGIC,
  COMPRESSED_BLOB: COMPRESSED_BLOB_MAGIC,
  ENCRYPTED_BLOB: ENCRYPTED_BLOB_MAGIC,
  ENCR_COMPR_BLOB: ENCR_COMPR_BLOB_MAGIC,
  FIXED_INDEX: FIXED_INDEX_MAGIC,
  DYNAMIC_INDEX: DYNAMIC_INDEX_MAGIC,
  CATALOG: CATALOG_MAGIC,
});

/** Header sizes of the DataBlob kinds (pbs-formats §3.2). */
export const BLOB_HEADER_SIZE = 12;
export const ENCRYPTED_BLOB_HEADER_SIZE = 44;

/** Index files start with a 4096-byte header (pbs-formats §4). */
export const INDEX_HEADER_SIZE = 4096;
/** Fixed index entry: a 32-byte digest. */
export const FIXED_INDEX_ENTRY_SIZE = 32;
/** Dynamic index entry: u64 LE end offset + 32-byte digest. */
export const DYNAMIC_INDEX_ENTRY_SIZE = 40;
/** The chunk size PBS writers always use for fixed indexes. */
export const FIXED_CHUNK_SIZE = 4 * 1024 * 1024;

/** DataBlob::encode refuses plaintext larger than this (pbs-formats §3.4). */
export const MAX_BLOB_SIZE = 128 * 1024 * 1024;
/** Upload limits of the backup protocol: decoded chunk size, and encoded chunk/blob body size. */
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
export const MAX_ENCODED_CHUNK_SIZE = MAX_CHUNK_SIZE + ENCRYPTED_BLOB_HEADER_SIZE;

/** zstd level PBS uses for blobs. */
export const BLOB_ZSTD_LEVEL = 1;

/**
 * zstd level Burrow's backup client uses for chunks by default. Level 3 stores 4.4% less than
 * level 1 on the benchmark dataset for about 10% more compression time, spent on worker threads
 * that wait for the reader anyway (docs/design.md, "Backup and restore speed"). A reader cannot
 * tell: any level is a valid frame (pbs-formats §3.4).
 */
export const CHUNK_ZSTD_LEVEL = 3;

/** The zstd levels a user may choose for chunks (zstd's own range without the negative ones). */
export const MIN_ZSTD_LEVEL = 1;
export const MAX_ZSTD_LEVEL = 19;
