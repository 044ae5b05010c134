/**
 * The client's view of a repository: one backup session to write a snapshot, one reader session
 * to read one. Local mode implements them over the datastore's BackupSession / ReaderSession
 * (local-repository.ts); remote mode will implement them over the PBS HTTP/2 protocols. Both carry
 * the same semantics (pbs-protocol §5.3, §5.4, §6), so the backup and restore code above them does
 * not know which transport it talks to.
 */
import type { ChunkFileTarget, WrittenChunk } from '../datastore/chunk-file.js';
import type { BlobKind } from '../format/data-blob.js';
import type { BackupDir } from '../types/backup.js';

export type IndexKind = 'dynamic' | 'fixed';

export interface BackupWriter {
  readonly snapshot: BackupDir;
  previousBackupTime(): Promise<number | undefined>;
  /** undefined when there is no previous snapshot or it lacks the file (NO_PREVIOUS_BACKUP / NOT_FOUND mapped to undefined). */
  downloadPrevious(archiveName: string): Promise<Uint8Array | undefined>;
  createIndex(kind: IndexKind, archiveName: string, size?: number): Promise<number>;
  uploadChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encoded: Uint8Array,
  ): Promise<void>;
  /**
   * Repositories that can see their chunk store (local mode; the PBS protocol has no such call):
   * references a chunk the store already holds, touched for GC, instead of an upload, so the
   * client need not encode a chunk it did not know from the previous snapshot. false: upload it.
   */
  reuseStoredChunk?(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encrypted: boolean,
  ): Promise<boolean>;
  /**
   * Repositories whose chunk store is a directory this process can write (local mode): where a
   * worker thread may write a new chunk's temporary file (writeChunkTempFileSync) for
   * uploadChunkFile, so the chunk's bytes never come back to the thread that reads the input.
   * undefined: upload the blob with uploadChunk.
   */
  chunkFileTarget?(): ChunkFileTarget | undefined;
  /**
   * uploadChunk for a chunk written to a temporary file in the store (chunkFileTarget), of blob
   * kind `blobKind`: put in place with the store's insert rules. The temporary file is gone once
   * this settles, whatever the outcome.
   */
  uploadChunkFile?(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    written: WrittenChunk,
    blobKind: BlobKind,
  ): Promise<void>;
  /**
   * reuseStoredChunk's question alone, changing nothing: whether the store holds a usable copy.
   * A dry run asks it, so that its figures count such chunks as reused, as the real run would.
   */
  hasStoredChunk?(digest: Uint8Array, encrypted: boolean): Promise<boolean>;
  appendIndex(
    wid: number,
    kind: IndexKind,
    digests: readonly Uint8Array[],
    offsets: readonly number[],
  ): Promise<void>;
  closeIndex(
    wid: number,
    kind: IndexKind,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<void>;
  uploadBlob(fileName: string, encoded: Uint8Array): Promise<void>;
  finish(): Promise<void>;
  /** Always call (finally): removes an unfinished snapshot, releases locks. */
  close(): Promise<void>;
}

export interface BackupReader {
  readonly snapshot: BackupDir;
  download(fileName: string): Promise<Uint8Array>;
  /** The raw stored DataBlob of a chunk. */
  chunk(digest: Uint8Array): Promise<Uint8Array>;
  /**
   * Readers of a local datastore: the path of a chunk's file, after the checks chunk() makes, so
   * a worker thread can read and decode it without the bytes passing through this thread.
   */
  chunkFile?(digest: Uint8Array): string;
  close(): Promise<void>;
}
