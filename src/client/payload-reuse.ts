/**
 * Metadata change detection (pbs-protocol §9.4, pxar-format §9.3): files whose metadata did not
 * change since the previous snapshot are not read again; the chunks of the previous payload
 * stream (.ppxar) that hold their payload are put into the new payload stream by reference
 * ("injected" as known chunks, never uploaded), and the new metadata archive points into them.
 *
 * The previous archive is read a directory at a time: the listings of the directories on the
 * current path are kept (PreviousTree), so judging a file is a map lookup and the old archive is
 * read sequentially, once. (A lookup from the root per file re-read a 64 KiB window for every
 * path component: 5,000 files cost 1.5 GB of copying and most of an unchanged backup's time.)
 *
 * How a file is judged (PayloadReuser.decide, called by the archiver before it reads a file):
 * - reusable: the previous metadata archive has a regular file at the same path whose metadata is
 *   completely equal (stat with mtime nanoseconds, flags, xattrs in order, ACLs, fcaps, project
 *   id; not ctime or inode) and whose size is the same;
 * - a reusable file whose old payload continues the current run of injected chunks (nothing was
 *   written to the payload stream since, and the old range lies at or after the last reused one
 *   and starts inside or right at the end of the injected range) is referenced there, injecting
 *   further chunks if it reaches past them;
 * - otherwise a new run starts at the chunk holding the file's old PAYLOAD header. The bytes of
 *   that chunk before the header are padding; when they are more than 10 % of the injected range
 *   needed for the file, the file is encoded again instead (so a changed file in the middle of a
 *   chunk costs re-reading the rest of that chunk, and reuse resumes at the next chunk boundary).
 *
 * This is PBS's padding rule applied as the walk goes: PBS holds a look-ahead cache of entries
 * and judges a whole run's padding (head, holes and tail) at its end; here only the head of a run
 * is judged before committing, holes inside a run are accepted because those chunks are already
 * injected, and the tail of a run's last chunk is not counted (the next files usually continue
 * the run; when they do not, at most part of one chunk per run is padding). An unchanged tree
 * therefore reuses every file, as in PBS.
 *
 * Injection mechanics: the payload ChunkingSink is cut at the current position (forceBoundary),
 * the run is recorded in the InjectingWriter at that point of the data stream, the sink and
 * the encoder are advanced by the injected length (skipBytes / advancePayloadPosition). The upload
 * pipeline sees only the data chunks; InjectingWriter, a BackupWriter wrapper for the payload
 * index, merges the injected (known) chunks into its appends at the recorded points, rewrites
 * offsets into stream offsets and recomputes the index size, count and csum for closeIndex.
 */
import type { CryptConfig } from '../crypto/crypt-config.js';
import { decodeBlob } from '../format/data-blob.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { IndexCsumBuilder } from '../format/index-common.js';
import type { BackupManifest } from '../format/manifest.js';
import { verifyFile } from '../format/manifest.js';
import { bytesEqual } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import type { AccessorEntry, PxarAccessor } from '../pxar/accessor.js';
import type { ReusableFile } from '../pxar/archiver.js';
import type { PxarEncoder } from '../pxar/encoder.js';
import { ITEM_HEADER_SIZE } from '../pxar/format.js';
import { splitPath } from '../pxar/format.js';
import type { Acl, AclEntry, Metadata, RandomAccess } from '../pxar/format.js';
import type { BackupReader, BackupWriter, IndexKind } from './backup-writer.js';
import type { ChunkingSink } from './backup-streams.js';

/** PBS's limit: padding above this share of an injected range makes the files be re-encoded. */
export const MAX_PADDING_RATIO = 0.1;

// ---------------------------------------------------------------------------------------------
// Metadata equality

function entriesEqual(a: readonly AclEntry[], b: readonly AclEntry[]): boolean {
  return (
    a.length === b.length &&
    a.every((e, i) => e.id === b[i]!.id && e.permissions === b[i]!.permissions)
  );
}

function aclEqual(a: Acl, b: Acl): boolean {
  const da = a.default;
  const db = b.default;
  return (
    entriesEqual(a.users, b.users) &&
    entriesEqual(a.groups, b.groups) &&
    a.groupObj === b.groupObj &&
    (da === undefined
      ? db === undefined
      : db !== undefined &&
        da.userObj === db.userObj &&
        da.groupObj === db.groupObj &&
        da.other === db.other &&
        da.mask === db.mask) &&
    entriesEqual(a.defaultUsers, b.defaultUsers) &&
    entriesEqual(a.defaultGroups, b.defaultGroups)
  );
}

/** Everything pxar stores about an entry is equal (xattrs in the same order). */
export function metadataEqual(a: Metadata, b: Metadata): boolean {
  const sa = a.stat;
  const sb = b.stat;
  return (
    sa.mode === sb.mode &&
    sa.flags === sb.flags &&
    sa.uid === sb.uid &&
    sa.gid === sb.gid &&
    sa.mtime.secs === sb.mtime.secs &&
    sa.mtime.nanos === sb.mtime.nanos &&
    a.xattrs.length === b.xattrs.length &&
    a.xattrs.every(
      (x, i) => bytesEqual(x.name, b.xattrs[i]!.name) && bytesEqual(x.value, b.xattrs[i]!.value),
    ) &&
    aclEqual(a.acl, b.acl) &&
    (a.fcaps === undefined
      ? b.fcaps === undefined
      : b.fcaps !== undefined && bytesEqual(a.fcaps, b.fcaps)) &&
    a.quotaProjectId === b.quotaProjectId
  );
}

// ---------------------------------------------------------------------------------------------
// Reading an index archive of the previous snapshot

/**
 * Random access over a dynamic index of a snapshot read through a BackupReader: chunks are
 * fetched by digest, decoded (digest and size checked) and the last few kept.
 */
export async function openPreviousDynamicArchive(
  reader: BackupReader,
  manifest: BackupManifest,
  name: string,
  crypt: CryptConfig | undefined,
): Promise<RandomAccess> {
  const index = DynamicIndex.parse(await reader.download(name));
  verifyFile(manifest, name, index.size, index.computeCsum());
  const cache = new Map<number, Promise<Uint8Array>>();
  const CACHE_CHUNKS = 8;
  const chunk = (position: number): Promise<Uint8Array> => {
    let data = cache.get(position);
    if (data !== undefined) {
      cache.delete(position);
      cache.set(position, data);
      return data;
    }
    const range = index.chunkRange(position);
    const digest = index.digest(position);
    data = reader.chunk(digest).then((raw) =>
      decodeBlob(raw, {
        ...(crypt === undefined ? {} : { crypt }),
        expectedDigest: digest,
        expectedSize: range.end - range.start,
      }),
    );
    data.catch(() => cache.delete(position));
    cache.set(position, data);
    if (cache.size > CACHE_CHUNKS) cache.delete(cache.keys().next().value!);
    return data;
  };
  return {
    size: index.size,
    async readAt(offset: number, length: number): Promise<Uint8Array> {
      if (
        !Number.isSafeInteger(offset) ||
        offset < 0 ||
        !Number.isSafeInteger(length) ||
        length < 0
      )
        throw new BurrowError('INVALID_ARGUMENT', `bad read range ${offset}+${length} in ${name}`, {
          details: { offset, length },
        });
      const end = Math.min(offset + length, index.size);
      if (offset >= end) return new Uint8Array(0);
      const out = new Uint8Array(end - offset);
      let at = offset;
      while (at < end) {
        const position = index.chunkForOffset(at);
        const range = index.chunkRange(position);
        let data: Uint8Array;
        try {
          data = await chunk(position);
        } catch (error) {
          throw new BurrowError(
            error instanceof BurrowError ? error.code : 'IO_ERROR',
            `${name} of the previous snapshot, chunk at offset ${range.start}: ${error instanceof Error ? error.message : String(error)}`,
            { details: { archive: name, offset: range.start }, cause: error },
          );
        }
        const to = Math.min(end, range.end);
        out.set(data.subarray(at - range.start, to - range.start), at - offset);
        at = to;
      }
      return out;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Injecting known chunks into an uploaded dynamic index

interface Injection {
  /** Data-stream offset (bytes of data chunks before it) where the injected chunks go. */
  dataOffset: number;
  digests: Uint8Array[];
  sizes: number[];
}

/**
 * A BackupWriter for one dynamic index whose data chunks come from the upload pipeline and whose
 * injected chunks come from `inject`. The pipeline's offsets count data chunks only; this wrapper
 * turns them into stream offsets, places the injected chunks, and closes the index with the real
 * count, size and csum. Other calls go to the wrapped writer unchanged.
 */
export class InjectingWriter implements BackupWriter {
  readonly #inner: BackupWriter;
  readonly #wid: number;
  readonly #queue: Injection[] = [];
  readonly #csum = new IndexCsumBuilder();
  readonly #entry = new Uint8Array(40);
  readonly #view = new DataView(this.#entry.buffer);
  /** Stream end of everything accounted so far (the pending data chunk excluded). */
  #end = 0;
  #count = 0;
  /** The last data chunk appended, whose size is known once the next entry (or close) comes. */
  #pending: { digest: Uint8Array; dataOffset: number } | undefined;
  #injectedChunks = 0;
  #injectedBytes = 0;
  #result: { size: number; chunkCount: number; csum: Uint8Array } | undefined;

  // The optional calls of local mode, passed on where the wrapped writer has them: a chunk of
  // this writer's stream is stored as the wrapped writer stores any other.
  readonly chunkFileTarget: BackupWriter['chunkFileTarget'];
  readonly uploadChunkFile: BackupWriter['uploadChunkFile'];
  readonly reuseStoredChunk: BackupWriter['reuseStoredChunk'];
  readonly hasStoredChunk: BackupWriter['hasStoredChunk'];

  constructor(inner: BackupWriter, wid: number) {
    this.#inner = inner;
    this.#wid = wid;
    this.chunkFileTarget = inner.chunkFileTarget?.bind(inner);
    this.uploadChunkFile = inner.uploadChunkFile?.bind(inner);
    this.reuseStoredChunk = inner.reuseStoredChunk?.bind(inner);
    this.hasStoredChunk = inner.hasStoredChunk?.bind(inner);
  }

  get snapshot(): BackupWriter['snapshot'] {
    return this.#inner.snapshot;
  }

  get injectedChunks(): number {
    return this.#injectedChunks;
  }

  get injectedBytes(): number {
    return this.#injectedBytes;
  }

  /** The index as closed (after closeIndex). */
  get result(): { size: number; chunkCount: number; csum: Uint8Array } | undefined {
    return this.#result;
  }

  /** Known chunks to place at data offset `dataOffset`, after everything injected there before. */
  inject(dataOffset: number, digests: Uint8Array[], sizes: number[]): void {
    const last = this.#queue[this.#queue.length - 1];
    if (last !== undefined && last.dataOffset === dataOffset) {
      last.digests.push(...digests);
      last.sizes.push(...sizes);
    } else {
      this.#queue.push({ dataOffset, digests: [...digests], sizes: [...sizes] });
    }
  }

  previousBackupTime(): Promise<number | undefined> {
    return this.#inner.previousBackupTime();
  }
  downloadPrevious(archiveName: string): Promise<Uint8Array | undefined> {
    return this.#inner.downloadPrevious(archiveName);
  }
  createIndex(kind: IndexKind, archiveName: string, size?: number): Promise<number> {
    return this.#inner.createIndex(kind, archiveName, size);
  }
  uploadChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encoded: Uint8Array,
  ): Promise<void> {
    return this.#inner.uploadChunk(wid, kind, digest, size, encoded);
  }
  uploadBlob(fileName: string, encoded: Uint8Array): Promise<void> {
    return this.#inner.uploadBlob(fileName, encoded);
  }

  finish(): Promise<void> {
    return this.#inner.finish();
  }
  close(): Promise<void> {
    return this.#inner.close();
  }

  async appendIndex(
    wid: number,
    kind: IndexKind,
    digests: readonly Uint8Array[],
    offsets: readonly number[],
  ): Promise<void> {
    if (wid !== this.#wid) return this.#inner.appendIndex(wid, kind, digests, offsets);
    const outDigests: Uint8Array[] = [];
    const outOffsets: number[] = [];
    for (let i = 0; i < digests.length; i++) {
      const dataOffset = offsets[i]!;
      this.#placeInjections(dataOffset, outDigests, outOffsets);
      this.#settlePending(dataOffset);
      outDigests.push(digests[i]!);
      outOffsets.push(this.#end);
      this.#pending = { digest: digests[i]!, dataOffset };
    }
    if (outDigests.length > 0) await this.#inner.appendIndex(wid, kind, outDigests, outOffsets);
  }

  async closeIndex(
    wid: number,
    kind: IndexKind,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<void> {
    if (wid !== this.#wid) return this.#inner.closeIndex(wid, kind, chunkCount, size, csum);
    const outDigests: Uint8Array[] = [];
    const outOffsets: number[] = [];
    this.#placeInjections(Number.POSITIVE_INFINITY, outDigests, outOffsets);
    this.#settlePending(size);
    if (outDigests.length > 0) await this.#inner.appendIndex(wid, kind, outDigests, outOffsets);
    const result = { size: this.#end, chunkCount: this.#count, csum: this.#csum.digest() };
    await this.#inner.closeIndex(wid, kind, result.chunkCount, result.size, result.csum);
    this.#result = result;
  }

  /** Injections due before data offset `upTo` (inclusive), in order. */
  #placeInjections(upTo: number, digests: Uint8Array[], offsets: number[]): void {
    while (this.#queue.length > 0 && this.#queue[0]!.dataOffset <= upTo) {
      const injection = this.#queue.shift()!;
      this.#settlePending(injection.dataOffset);
      for (let i = 0; i < injection.digests.length; i++) {
        digests.push(injection.digests[i]!);
        offsets.push(this.#end);
        this.#account(injection.digests[i]!, injection.sizes[i]!);
        this.#injectedChunks++;
        this.#injectedBytes += injection.sizes[i]!;
      }
    }
  }

  /** The pending data chunk ends at data offset `dataEnd`. */
  #settlePending(dataEnd: number): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    this.#pending = undefined;
    const size = dataEnd - pending.dataOffset;
    if (!(size > 0))
      throw new BurrowError(
        'INTERNAL',
        `payload index: data chunk at data offset ${pending.dataOffset} would end at ${dataEnd}`,
        { details: { offset: pending.dataOffset, end: dataEnd } },
      );
    this.#account(pending.digest, size);
  }

  #account(digest: Uint8Array, size: number): void {
    this.#end += size;
    this.#count++;
    this.#view.setBigUint64(0, BigInt(this.#end), true);
    this.#entry.set(digest, 8);
    this.#csum.update(this.#entry);
  }
}

// ---------------------------------------------------------------------------------------------
// The previous archive, a directory at a time

const SLASH = 0x2f;

/** A name as a map key: one char per byte, read in place (Buffer.from(array) would copy it). */
const keyOf = (name: Uint8Array): string =>
  Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1');

interface Listing {
  /** Path components of the directory. */
  readonly components: string[];
  readonly children: Map<string, AccessorEntry>;
}

/**
 * Entries of the previous archive by path, for a walk in archive order: the listings of the
 * directories on the path last asked about are kept (root first), so the directories of a
 * depth-first walk are each listed once and memory stays at the open directories' children.
 */
export class PreviousTree {
  readonly #accessor: PxarAccessor;
  #stack: Listing[] | undefined;
  /** The parent path (raw bytes) of the last lookup and its listing: files come a directory at a time. */
  #lastParent: Uint8Array | undefined;
  #lastDir: Listing | undefined;

  constructor(accessor: PxarAccessor) {
    this.#accessor = accessor;
  }

  /** The previous entry at `path` (relative, '/'-separated), or undefined. */
  async entry(path: Uint8Array): Promise<AccessorEntry | undefined> {
    const slash = path.lastIndexOf(SLASH);
    const parent = path.subarray(0, Math.max(slash, 0));
    const last = path.subarray(slash + 1);
    if (last.length > 0 && this.#lastParent !== undefined && bytesEqual(parent, this.#lastParent))
      return this.#lastDir?.children.get(keyOf(last));
    const components = splitPath(path).map(keyOf);
    const name = components.pop();
    if (name === undefined) return this.#accessor.root();
    const dir = await this.#listing(components);
    if (last.length > 0) {
      this.#lastParent = parent.slice();
      this.#lastDir = dir;
    }
    return dir?.children.get(name);
  }

  async #listing(components: string[]): Promise<Listing | undefined> {
    this.#stack ??= [await this.#list(this.#accessor.root(), [])];
    const stack = this.#stack;
    // Keep the listings of the directories that lead to this one.
    let depth = 1;
    while (
      depth < stack.length &&
      depth <= components.length &&
      stack[depth]!.components[depth - 1] === components[depth - 1]
    )
      depth++;
    stack.length = depth;
    for (let i = depth - 1; i < components.length; i++) {
      const child = stack[i]!.children.get(components[i]!);
      if (child === undefined || child.body.kind !== 'directory') return undefined;
      stack.push(await this.#list(child, components.slice(0, i + 1)));
    }
    return stack[components.length];
  }

  async #list(dir: AccessorEntry, components: string[]): Promise<Listing> {
    const children = new Map<string, AccessorEntry>();
    for (const child of await this.#accessor.readDirectory(dir))
      children.set(keyOf(child.name), child);
    return { components, children };
  }
}

// ---------------------------------------------------------------------------------------------
// The reuse decision

export interface ReuseStats {
  /** Files referenced in injected chunks instead of being read. */
  files: number;
  /** Their payload bytes. */
  bytes: number;
  /** Reusable files encoded again because of the padding rule. */
  reencoded: number;
  /** Injected chunks and their bytes. */
  chunks: number;
  chunkBytes: number;
}

interface Run {
  /** Old stream range of the injected chunks. */
  oldStart: number;
  oldEnd: number;
  /** New stream offset of oldStart. */
  newStart: number;
  /** Old end of the last file referenced in the run. */
  lastFileEnd: number;
}

export interface PayloadReuserOptions {
  /** The previous metadata archive. */
  previous: PxarAccessor;
  /** The previous payload index (its chunks registered as known in the session). */
  previousPayload: DynamicIndex;
  /** The new payload stream's sink and the wrapper of its index. */
  sink: ChunkingSink;
  injector: InjectingWriter;
  maxPaddingRatio?: number;
}

export class PayloadReuser {
  readonly #o: PayloadReuserOptions;
  readonly #maxPadding: number;
  readonly #previous: PreviousTree;
  #encoder: PxarEncoder | undefined;
  #run: Run | undefined;
  readonly stats: ReuseStats = { files: 0, bytes: 0, reencoded: 0, chunks: 0, chunkBytes: 0 };

  constructor(options: PayloadReuserOptions) {
    this.#o = options;
    this.#maxPadding = options.maxPaddingRatio ?? MAX_PADDING_RATIO;
    this.#previous = new PreviousTree(options.previous);
  }

  /** The encoder of the new archive (begun after the reuser was made). */
  attach(encoder: PxarEncoder): void {
    this.#encoder = encoder;
  }

  /** ArchiveOptions.reusePayload: the new payload offset of the file, or undefined to encode it. */
  async decide(file: ReusableFile): Promise<number | undefined> {
    const encoder = this.#encoder;
    if (encoder === undefined) return undefined;
    const old = await this.#previous.entry(file.path);
    if (
      old === undefined ||
      old.body.kind !== 'file' ||
      old.body.size !== file.size ||
      old.metadata === undefined ||
      !metadataEqual(old.metadata, file.metadata)
    )
      return undefined;
    const index = this.#o.previousPayload;
    const fileStart = old.body.payloadOffset;
    const fileEnd = fileStart + ITEM_HEADER_SIZE + file.size;
    if (!Number.isSafeInteger(fileEnd) || fileEnd > index.size) return undefined;

    const run = this.#run;
    const position = encoder.payloadPosition();
    if (
      run !== undefined &&
      position === run.newStart + (run.oldEnd - run.oldStart) &&
      fileStart >= run.lastFileEnd &&
      fileStart <= run.oldEnd
    ) {
      if (fileEnd > run.oldEnd) this.#inject(run, fileEnd);
      run.lastFileEnd = fileEnd;
      return this.#reused(file, run.newStart + (fileStart - run.oldStart));
    }

    const first = index.chunkForOffset(fileStart);
    const chunkStart = index.chunkRange(first).start;
    const padding = fileStart - chunkStart;
    const needed = index.chunkRange(index.chunkForOffset(fileEnd - 1)).end - chunkStart;
    if (padding > this.#maxPadding * needed) {
      this.stats.reencoded++;
      return undefined;
    }
    await this.#o.sink.forceBoundary();
    const fresh: Run = {
      oldStart: chunkStart,
      oldEnd: chunkStart,
      newStart: encoder.payloadPosition(),
      lastFileEnd: fileEnd,
    };
    this.#inject(fresh, fileEnd);
    this.#run = fresh;
    return this.#reused(file, fresh.newStart + (fileStart - chunkStart));
  }

  #reused(file: ReusableFile, offset: number): number {
    this.stats.files++;
    this.stats.bytes += file.size;
    return offset;
  }

  /** Injects the old chunks from run.oldEnd (a chunk boundary) on until `oldEnd` is covered. */
  #inject(run: Run, oldEnd: number): void {
    const index = this.#o.previousPayload;
    const digests: Uint8Array[] = [];
    const sizes: number[] = [];
    let at = run.oldEnd;
    for (let p = index.chunkForOffset(at); at < oldEnd; p++) {
      const range = index.chunkRange(p);
      digests.push(index.digest(p));
      sizes.push(range.end - range.start);
      at = range.end;
    }
    const length = at - run.oldEnd;
    const sink = this.#o.sink;
    // Nothing is pending in the sink here: a new run was cut just before, and a continued run
    // means nothing was written since its last injection.
    this.#o.injector.inject(sink.queuedBytes, digests, sizes);
    sink.skipBytes(length);
    this.#encoder!.advancePayloadPosition(length);
    run.oldEnd = at;
    this.stats.chunks += digests.length;
    this.stats.chunkBytes += length;
  }
}
