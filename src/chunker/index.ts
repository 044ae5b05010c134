/**
 * chunker/: cutting byte streams into chunks, nothing more. It owns PBS's buzhash content-defined
 * chunker (`.didx` streams: pxar archives, catalogs) and the fixed 4 MiB chunker (`.fidx` images),
 * both pure streaming transforms with no idea where the bytes come from or where chunks go.
 * Hashing, compression, encryption and upload of the chunks belong to the layers above.
 *
 * Dynamic chunking, pull style: `new Chunker(avg).scan(data)` (bytes up to the next boundary, 0 if
 * none) or `scanFrom(data, start)` (index after the boundary, -1 if none, no subarray needed).
 * Push style: `new ChunkSplitter(avg)`, `push(piece) -> Uint8Array[]` (completed chunks, possibly
 * views of the pieces), `finish() -> Uint8Array | undefined` (the last one).
 *
 * Payload chunker for split pxar archives (pbs-protocol §9.1 [4.x]), on ChunkSplitter; offsets
 * are stream offsets (bytes pushed or skipped since the splitter was made):
 * - `streamOffset: number` the offset of the next byte; `pendingLength: number` bytes pushed but
 *   not yet returned in a chunk.
 * - `suggestBoundary(streamOffset: number): void` a suggested cut (a file's PAYLOAD header), in
 *   non-decreasing order (else INVALID_ARGUMENT). When the pushed bytes reach it: dropped if before
 *   the current position or closer than `min` to the chunk start; a cut exactly there if at most
 *   `max` from the chunk start (hash restarted); otherwise a normal scan. One at exactly the current
 *   position closes the pending chunk at the next `push` (an empty piece will do).
 * - `forceBoundary(): Uint8Array | undefined` cuts at the current position: the pending bytes as a
 *   chunk (undefined when none, never an empty chunk), hash restarted.
 * - `skipBytes(length: number): void` advances the stream offset past bytes that do not pass
 *   through (reused chunks injected by reference); only with nothing pending (after
 *   `forceBoundary`), else INVALID_ARGUMENT.
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
