/**
 * Reading an archive of a snapshot on the server side, for the decoding downloads and the
 * catalog: the index is read, its recomputed csum and size must match the manifest (the header
 * proves nothing), and chunks are loaded from the store, decoded and checked against their digest
 * and length before any byte is handed out. Encrypted archives are refused before any of this,
 * since the server has no key.
 *
 * Also here: PBS's choice of the archives of a pxar (a `.pxar.didx` name falls back to the split
 * `.mpxar.didx` + `.ppxar.didx` pair) and opening a pxar accessor over them.
 */
import type { DataStore } from '../../../datastore/datastore.js';
import type { IndexFile } from '../../../datastore/index-file.js';
import { BurrowError } from '../../../lib/errors.js';
import { decodeBlob } from '../../../format/data-blob.js';
import { verifyFile, type BackupManifest } from '../../../format/manifest.js';
import { PxarAccessor } from '../../../pxar/accessor.js';
import type { RandomAccess } from '../../../pxar/format.js';
import type { BackupDir } from '../../../types/backup.js';
import { formatSnapshot } from '../../../types/backup.js';
import { digestToHex } from '../../../types/digest.js';
import type { BackupContent } from '../../../types/api.js';

/** Decoded chunks kept for random access (8 PBS-sized chunks at most). */
const CACHE_CHUNKS = 8;
/** Chunks loaded ahead of the one being streamed. */
const READ_AHEAD = 3;

/** PBS's refusal of a file the server cannot decode. */
export function refuseEncrypted(files: readonly BackupContent[], name: string): void {
  if (files.some((f) => f.filename === name && f['crypt-mode'] === 'encrypt')) {
    throw new BurrowError('INVALID_ARGUMENT', `cannot decode '${name}' - is encrypted`, {
      details: { filename: name },
    });
  }
}

/** An index archive of a snapshot: random access (RandomAccess) and a sequential stream. */
export class IndexArchive implements RandomAccess {
  readonly size: number;
  readonly #store: DataStore;
  readonly #file: IndexFile;
  readonly #label: string;
  readonly #cache = new Map<number, Promise<Uint8Array>>();

  private constructor(store: DataStore, file: IndexFile, label: string) {
    this.#store = store;
    this.#file = file;
    this.#label = label;
    this.size = file.index.size;
  }

  /**
   * Open the `.didx`/`.fidx` `name` of `dir` and check it against the manifest entry
   * (SIZE_MISMATCH / DIGEST_MISMATCH, NOT_FOUND when the manifest does not list it).
   */
  static async open(
    store: DataStore,
    dir: BackupDir,
    manifest: BackupManifest,
    name: string,
  ): Promise<IndexArchive> {
    const file = await store.openIndex(dir, name);
    verifyFile(manifest, name, file.index.size, file.index.computeCsum());
    return new IndexArchive(store, file, `${formatSnapshot(dir)}/${name}`);
  }

  get chunkCount(): number {
    return this.#file.index.count;
  }

  async #load(position: number): Promise<Uint8Array> {
    const index = this.#file.index;
    const digest = index.digest(position);
    const { start, end } = index.chunkRange(position);
    let raw: Uint8Array;
    try {
      raw = await this.#store.loadChunk(digest);
      return decodeBlob(raw, { expectedDigest: digest, expectedSize: end - start });
    } catch (error) {
      if (error instanceof BurrowError) {
        throw new BurrowError(
          error.code,
          `${this.#label}: chunk ${digestToHex(digest)} at offset ${start}: ${error.message}`,
          {
            details: { ...error.details, offset: start, digest: digestToHex(digest) },
            cause: error,
          },
        );
      }
      throw error;
    }
  }

  #chunk(position: number): Promise<Uint8Array> {
    const cached = this.#cache.get(position);
    if (cached !== undefined) {
      // Most recently used last.
      this.#cache.delete(position);
      this.#cache.set(position, cached);
      return cached;
    }
    const loading = this.#load(position);
    loading.catch(() => this.#cache.delete(position));
    this.#cache.set(position, loading);
    while (this.#cache.size > CACHE_CHUNKS) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
    return loading;
  }

  async readAt(offset: number, length: number): Promise<Uint8Array> {
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0
    ) {
      throw new BurrowError('INVALID_ARGUMENT', `invalid read of ${length} bytes at ${offset}`);
    }
    const end = Math.min(offset + length, this.size);
    if (offset >= end) return new Uint8Array(0);
    const index = this.#file.index;
    const parts: Uint8Array[] = [];
    let pos = offset;
    while (pos < end) {
      const position = index.chunkForOffset(pos);
      const range = index.chunkRange(position);
      const data = await this.#chunk(position);
      parts.push(data.subarray(pos - range.start, Math.min(end, range.end) - range.start));
      pos = Math.min(end, range.end);
    }
    return parts.length === 1 ? (parts[0] as Uint8Array) : new Uint8Array(Buffer.concat(parts));
  }

  /** The whole stream, chunk by chunk, a few chunks loaded ahead. */
  async *stream(): AsyncGenerator<Uint8Array> {
    const count = this.chunkCount;
    const pending: Promise<Uint8Array>[] = [];
    let next = 0;
    const fill = (): void => {
      while (next < count && pending.length <= READ_AHEAD) {
        const p = this.#load(next++);
        // Errors surface when the chunk is awaited; until then they must not count as unhandled.
        p.catch(() => undefined);
        pending.push(p);
      }
    };
    fill();
    while (pending.length > 0) {
      const data = await (pending.shift() as Promise<Uint8Array>);
      fill();
      yield data;
    }
  }
}

/**
 * PBS's get_pxar_archive_names: the archive to read and, for a split archive, its payload. A
 * name the manifest lists is used as given (an `.mpxar`/`.ppxar` name gives the pair); a
 * `.pxar` name the manifest does not list falls back to the split pair.
 */
export function pxarArchiveNames(
  name: string,
  manifest: BackupManifest,
): { archive: string; payload?: string } {
  const ext = name.endsWith('.didx') ? '.didx' : name.endsWith('.fidx') ? '.fidx' : '.blob';
  const stem = name.slice(0, name.length - ext.length);
  if (manifest.files.some((f) => f.filename === name)) {
    for (const split of ['.mpxar', '.ppxar']) {
      if (stem.endsWith(split)) {
        const base = stem.slice(0, -split.length);
        return { archive: `${base}.mpxar${ext}`, payload: `${base}.ppxar${ext}` };
      }
    }
    return { archive: name };
  }
  if (stem.endsWith('.pxar')) {
    const fallback = `${stem.slice(0, -'.pxar'.length)}.mpxar${ext}`;
    if (manifest.files.some((f) => f.filename === fallback))
      return pxarArchiveNames(fallback, manifest);
  }
  throw new BurrowError('NOT_FOUND', 'archive not found in manifest', {
    details: { filename: name },
  });
}

/** A pxar accessor over the archive (and payload) of a snapshot, each checked against the manifest. */
export async function openPxar(
  store: DataStore,
  dir: BackupDir,
  manifest: BackupManifest,
  names: { archive: string; payload?: string },
  withPayload: boolean,
): Promise<PxarAccessor> {
  const archive = await IndexArchive.open(store, dir, manifest, names.archive);
  const payload =
    withPayload && names.payload !== undefined
      ? await IndexArchive.open(store, dir, manifest, names.payload)
      : undefined;
  return PxarAccessor.open(archive, {
    name: names.archive,
    ...(payload === undefined ? {} : { payload }),
  });
}
