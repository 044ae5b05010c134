/**
 * chunker/: cutting byte streams into chunks, nothing more. It owns PBS's buzhash content-defined
 * chunker (`.didx` streams: pxar archives, catalogs) and the fixed 4 MiB chunker (`.fidx` images),
 * both pure streaming transforms with no idea where the bytes come from or where chunks go.
 * Hashing, compression, encryption and upload of the chunks belong to the layers above.
 */
export {
  BUZHASH_TABLE,
  BUZHASH_WINDOW_SIZE,
  CATALOG_AVG_CHUNK_SIZE,
  DEFAULT_AVG_CHUNK_SIZE,
  MAX_AVG_CHUNK_SIZE,
  MIN_AVG_CHUNK_SIZE,
  Chunker,
  ChunkSplitter,
  type ChunkerParams,
  chunkBoundaries,
  chunkerParams,
  splitIntoChunks,
  splitIntoChunksAsync,
} from './buzhash.js';
export {
  FixedChunkSplitter,
  fixedChunkCount,
  splitFixedChunks,
  splitFixedChunksAsync,
} from './fixed.js';
