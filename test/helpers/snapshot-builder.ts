/**
 * Finished snapshots written into a real datastore with the datastore's own APIs, the way a
 * backup lays them out (chunks inserted as DataBlobs, indexes through the index writers, blobs
 * and the manifest through the store), for the restore tests: pxar archives made from a directory
 * by the real archiver (v1 with a catalog, or split), images, blobs, optionally encrypted and
 * with a signed manifest. Plus the local-mode BackupReader, so tests read snapshots the way
 * local restores do.
 */
import { ChunkSplitter } from '../../src/chunker/index.js';
import type { CryptConfig } from '../../src/crypto/crypt-config.js';
import { CatalogWriter } from '../../src/format/catalog.js';
import { computeChunkDigest, encodeBlob } from '../../src/format/data-blob.js';
import type { BackupManifest, FileInfo } from '../../src/format/manifest.js';
import {
  MANIFEST_BLOB_NAME,
  blobFileInfo,
  indexFileInfo,
  newManifest,
  serializeManifestBytes,
  signManifest,
} from '../../src/format/manifest.js';
import type { DataStore, LockGuard } from '../../src/datastore/datastore.js';
import { FixedIndexWriter } from '../../src/datastore/index-writer.js';
import { createArchive, readRootMetadata } from '../../src/pxar/archiver.js';
import { PxarEncoder } from '../../src/pxar/encoder.js';
import type { ByteSink } from '../../src/pxar/format.js';
import type { BackupReader } from '../../src/client/backup-writer.js';
import { openLocalBackupReader } from '../../src/client/local-repository.js';
import { parseAuthid } from '../../src/types/auth.js';
import type { BackupDir } from '../../src/types/backup.js';
import type { CryptMode } from '../../src/types/crypt-mode.js';

/** Collects what an encoder or catalog writer emits. */
export class MemorySink implements ByteSink {
  readonly parts: Uint8Array[] = [];
  write(bytes: Uint8Array): void {
    this.parts.push(Uint8Array.from(bytes));
  }
  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.parts));
  }
}

export interface StoredStream {
  info: FileInfo;
  /** The stream's bytes (what a restore must give back). */
  bytes: Uint8Array;
  /** [start, end) of each chunk, in order. */
  chunks: Array<{ start: number; end: number; digest: Uint8Array }>;
}

export class SnapshotBuilder {
  readonly files: FileInfo[] = [];
  readonly #store: DataStore;
  readonly dir: BackupDir;
  readonly crypt: CryptConfig | undefined;
  readonly cryptMode: CryptMode;
  readonly #guards: LockGuard[];

  private constructor(
    store: DataStore,
    dir: BackupDir,
    crypt: CryptConfig | undefined,
    cryptMode: CryptMode,
    guards: LockGuard[],
  ) {
    this.#store = store;
    this.dir = dir;
    this.crypt = crypt;
    this.cryptMode = cryptMode;
    this.#guards = guards;
  }

  /**
   * Start a snapshot (group created if needed, owner root@pam). `cryptMode` defaults to
   * 'encrypt' with a key and 'none' without; 'sign-only' keeps the data plain.
   */
  static async start(
    store: DataStore,
    dir: BackupDir,
    options: { crypt?: CryptConfig; cryptMode?: CryptMode } = {},
  ): Promise<SnapshotBuilder> {
    const { guard: groupGuard } = await store.createLockedBackupGroup(
      dir.group,
      parseAuthid('root@pam'),
    );
    const { guard } = await store.createLockedBackupDir(dir);
    const cryptMode = options.cryptMode ?? (options.crypt !== undefined ? 'encrypt' : 'none');
    return new SnapshotBuilder(store, dir, options.crypt, cryptMode, [guard, groupGuard]);
  }

  /** The key that encrypts chunks and blobs (only in encrypt mode). */
  get #dataKey(): CryptConfig | undefined {
    return this.cryptMode === 'encrypt' ? this.crypt : undefined;
  }

  async #storeChunk(data: Uint8Array): Promise<Uint8Array> {
    const key = this.#dataKey;
    const blob = encodeBlob(data, { compress: true, ...(key !== undefined ? { crypt: key } : {}) });
    const digest = computeChunkDigest(data, key);
    await this.#store.insertChunk(blob, digest);
    return digest;
  }

  /** A `.didx` of `bytes`, cut by the buzhash chunker with average `avg` (default 64 KiB). */
  async addStream(name: string, bytes: Uint8Array, avg = 64 * 1024): Promise<StoredStream> {
    const splitter = new ChunkSplitter(avg);
    const pieces = [...splitter.push(bytes)];
    const last = splitter.finish();
    if (last !== undefined) pieces.push(last);
    const writer = await this.#store.createDynamicWriter(this.dir, name);
    const chunks: StoredStream['chunks'] = [];
    let end = 0;
    for (const piece of pieces) {
      const digest = await this.#storeChunk(piece);
      chunks.push({ start: end, end: end + piece.byteLength, digest });
      end += piece.byteLength;
      await writer.append(end, digest);
    }
    const result = await writer.close();
    const info = indexFileInfo(name, { size: result.size, csum: result.csum }, this.cryptMode);
    this.files.push(info);
    return { info, bytes, chunks };
  }

  /** A `.fidx` of `bytes` in `chunkSize` slices. */
  async addImage(name: string, bytes: Uint8Array, chunkSize: number): Promise<StoredStream> {
    // The store's writer always uses PBS's 4 MiB; smaller slices keep tests small.
    const writer = await FixedIndexWriter.create(this.#store.archivePath(this.dir, name), {
      size: bytes.byteLength,
      chunkSize,
      syncLevel: 'none',
    });
    const chunks: StoredStream['chunks'] = [];
    const size = writer.chunkSize;
    for (let start = 0; start < bytes.byteLength; start += size) {
      const piece = bytes.subarray(start, Math.min(start + size, bytes.byteLength));
      const digest = await this.#storeChunk(piece);
      chunks.push({ start, end: start + piece.byteLength, digest });
      await writer.addChunk(start + piece.byteLength, piece.byteLength, digest);
    }
    const result = await writer.close();
    const info = indexFileInfo(name, { size: result.size, csum: result.csum }, this.cryptMode);
    this.files.push(info);
    return { info, bytes, chunks };
  }

  /** A `.blob` of `data` (encrypted in encrypt mode unless `plain`); returns the encoded file. */
  async addBlob(
    name: string,
    data: Uint8Array,
    options: { plain?: boolean } = {},
  ): Promise<Uint8Array> {
    const key = options.plain === true ? undefined : this.#dataKey;
    const raw = encodeBlob(data, { compress: true, ...(key !== undefined ? { crypt: key } : {}) });
    await this.#store.writeBlob(this.dir, name, raw);
    this.files.push(blobFileInfo(name, raw, this.cryptMode));
    return raw;
  }

  /**
   * `source` archived by the real archiver: v1 (`<base>.pxar.didx`, and its part of the
   * catalog when `catalog` is given) or split (`<base>.mpxar.didx` + `<base>.ppxar.didx`).
   */
  async addPxar(
    base: string,
    source: string,
    options: { split?: boolean; catalog?: CatalogWriter; avg?: number } = {},
  ): Promise<{ archive: StoredStream; payload?: StoredStream }> {
    const output = new MemorySink();
    const payload = options.split === true ? new MemorySink() : undefined;
    const encoder = await PxarEncoder.begin(await readRootMetadata(source), {
      output,
      ...(payload !== undefined ? { payloadOutput: payload } : {}),
    });
    const archiveName = `${base}.${payload !== undefined ? 'mpxar' : 'pxar'}.didx`;
    options.catalog?.startDirectory(new TextEncoder().encode(archiveName));
    await createArchive(source, encoder, {
      ...(options.catalog !== undefined ? { catalog: options.catalog } : {}),
    });
    await encoder.finish();
    if (options.catalog !== undefined) await options.catalog.endDirectory();
    const archive = await this.addStream(archiveName, output.bytes(), options.avg);
    if (payload === undefined) return { archive };
    return {
      archive,
      payload: await this.addStream(`${base}.ppxar.didx`, payload.bytes(), options.avg),
    };
  }

  /** Write the manifest (signed when there is a key) and release the locks. */
  async finish(
    options: { sign?: boolean; edit?: (m: BackupManifest) => void } = {},
  ): Promise<BackupManifest> {
    try {
      let manifest = newManifest(this.dir.group.type, this.dir.group.id, this.dir.time);
      manifest.files = [...this.files];
      options.edit?.(manifest);
      if (this.crypt !== undefined && options.sign !== false)
        manifest = signManifest(manifest, this.crypt);
      await this.#store.writeBlob(
        this.dir,
        MANIFEST_BLOB_NAME,
        encodeBlob(serializeManifestBytes(manifest)),
      );
      return manifest;
    } finally {
      for (const guard of this.#guards) await guard.release();
    }
  }
}

/** A new catalog writer with its sink. */
export function newCatalog(): { writer: CatalogWriter; sink: MemorySink } {
  const sink = new MemorySink();
  return { writer: new CatalogWriter(sink), sink };
}

/** The local-mode BackupReader (a ReaderSession underneath): what local restores use. */
export function openReader(store: DataStore, dir: BackupDir): Promise<BackupReader> {
  return openLocalBackupReader(store, dir);
}

/** A reader that counts chunk fetches and may change chunk bytes on the way. */
export function countingReader(
  inner: BackupReader,
  tamper?: (digestHex: string, raw: Uint8Array) => Uint8Array,
): BackupReader & { chunkFetches: string[] } {
  const chunkFetches: string[] = [];
  return {
    snapshot: inner.snapshot,
    chunkFetches,
    download: (name) => inner.download(name),
    async chunk(digest) {
      const hex = Buffer.from(digest).toString('hex');
      chunkFetches.push(hex);
      const raw = await inner.chunk(digest);
      return tamper === undefined ? raw : tamper(hex, raw);
    },
    close: () => inner.close(),
  };
}
