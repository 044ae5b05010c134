/**
 * Burrow as a library: the public face of each layer. Anything not exported here is internal and
 * may change without notice.
 */
export { BurrowError, ERROR_CODES, EXIT, isBurrowError, type ErrorCode } from './lib/errors.js';

// Formats (pure codecs)
export * from './format/magic.js';
export {
  encodeBlob,
  decodeBlob,
  encodeChunk,
  computeChunkDigest,
  parseBlobHeader,
  verifyBlobCrc,
  verifyUnencrypted,
  type BlobKind,
} from './format/data-blob.js';
export { FixedIndex, encodeFixedIndex } from './format/fixed-index.js';
export { DynamicIndex, encodeDynamicIndex } from './format/dynamic-index.js';
export * from './format/manifest.js';
export { canonicalJson, prettyJsonSorted } from './format/canonical-json.js';
export { formatUpid, parseUpid, type Upid } from './format/upid.js';
export {
  parseDatastoreConfig,
  writeDatastoreConfig,
  datastoreTuning,
} from './format/datastore-config.js';
export { parseSectionConfig, writeSectionConfig } from './format/section-config.js';
export { parsePropertyString, formatPropertyString } from './format/property-string.js';

export {
  CatalogWriter,
  CatalogReader,
  formatCatalogDumpLine,
  type CatalogEntry,
  type CatalogEntryType,
} from './format/catalog.js';

// Chunkers
export * from './chunker/index.js';

// pxar archives
export * from './pxar/format.js';
export { PxarEncoder, type EncoderOptions } from './pxar/encoder.js';
export { PxarDecoder, type DecoderEvent, type DecoderOptions } from './pxar/decoder.js';
export { PxarAccessor, type AccessorEntry } from './pxar/accessor.js';
export { bytesRandomAccess, openFileRandomAccess } from './pxar/random-access.js';
export {
  createArchive,
  readRootMetadata,
  excludePrelude,
  type ArchiveOptions,
  type ArchiveStats,
} from './pxar/archiver.js';
export { extractArchive, type ExtractOptions, type ExtractStats } from './pxar/extractor.js';
export {
  parsePattern,
  parsePatternFile,
  MatchList,
  MatchPattern,
  type MatchType,
} from './pxar/pattern.js';

// Crypto
export { CryptConfig, formatFingerprint, parseFingerprint } from './crypto/crypt-config.js';
export {
  createKeyConfig,
  decryptKeyConfig,
  changePassphrase,
  parseKeyConfig,
  serializeKeyConfig,
  generateKey,
  type KeyConfig,
} from './crypto/key-config.js';
export {
  createMasterKeyPair,
  wrapKeyWithMasterKey,
  unwrapKeyWithMasterKey,
} from './crypto/master-key.js';

// Names and identifiers
export * from './types/backup.js';
export * from './types/auth.js';
export * from './types/digest.js';
export * from './types/crypt-mode.js';

// Files on disk
export { FixedIndexWriter, DynamicIndexWriter } from './datastore/index-writer.js';
export { readIndexFile } from './datastore/index-file.js';
export { inspectFile, inspectChunk } from './datastore/inspect.js';
export { loadCryptConfig, readKeyConfigFile, writeKeyConfigFile } from './client/key-file.js';

// The datastore
export { resolveDirs, type BurrowDirs } from './lib/dirs.js';
export { systemClock, FakeClock, type Clock } from './lib/clock.js';
export { DataStore } from './datastore/datastore.js';
export { ChunkStore } from './datastore/chunk-store.js';
export { garbageCollection } from './datastore/gc.js';
export { VerifyWorker, verifySnapshot, verifyGroup, verifyStore } from './datastore/verify.js';
export {
  computePruneInfo,
  prunePlan,
  parseKeepOptions,
  type KeepOptions,
} from './datastore/prune.js';
export { TaskManager, type TaskContext } from './tasks/index.js';
