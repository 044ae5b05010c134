/**
 * Writers for `.fidx` and `.didx` files (pbs-formats §4.1, §4.2). Each writes a temp file beside
 * the target (`x.img.fidx` is built as `x.img.tmp_fidx`), header first with a zero csum, and on
 * close stores the csum, syncs per sync level and renames onto the final name. A reader therefore
 * never sees a half-written index under its real name, and a crashed writer leaves only a
 * `.tmp_*` file behind. Taking the chunk-store shared lock (§2.6) is the caller's job.
 */
import { randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fsyncDirectory } from '../lib/atomic-write.js';
import type { FileOwner } from '../lib/atomic-write.js';
import { fromHex } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { encodeDynamicIndexHeader, writeDynamicEntry } from '../format/dynamic-index.js';
import { encodeFixedIndexHeader, fixedIndexLayout } from '../format/fixed-index.js';
import {
  INDEX_CSUM_OFFSET,
  INDEX_CSUM_SIZE,
  INDEX_KIND_LABEL,
  IndexCsumBuilder,
  checkDigest,
  indexKindOfFile,
} from '../format/index-common.js';
import type { IndexKind } from '../format/index-common.js';
import { SYNC_LEVELS } from '../format/datastore-config.js';
import type { SyncLevel } from '../format/datastore-config.js';
import {
  DYNAMIC_INDEX_ENTRY_SIZE,
  FIXED_CHUNK_SIZE,
  FIXED_INDEX_ENTRY_SIZE,
  INDEX_HEADER_SIZE,
} from '../format/magic.js';
import { chownHandle } from './file-owner.js';
import { MAX_INDEX_FILE_SIZE } from './index-file.js';

/**
 * Datastore `sync-level` (pbs-formats §10.3), re-exported for writer callers. Only `file` makes an
 * index writer fsync (the file, then its directory after the rename); `filesystem` is a syncfs
 * when the backup finishes, done by the caller, and `none` never syncs.
 */
export type { SyncLevel };

export interface IndexWriterOptions {
  /** 16 bytes; default a fresh random (v4) UUID. */
  uuid?: Uint8Array;
  /** Epoch seconds; default now. */
  ctime?: number;
  /** Default `filesystem`, the datastore default: no fsync in the writer. */
  syncLevel?: SyncLevel;
  /**
   * Owner of the new index (the datastore's, file-owner.ts), given to the temp file before
   * anything is written; default: whoever runs the process.
   */
  owner?: FileOwner;
}

export interface FixedIndexWriterOptions extends IndexWriterOptions {
  /** Image size in bytes, > 0. */
  size: number;
  /** A power of two; default 4 MiB, the only size PBS writers use. */
  chunkSize?: number;
}

export interface IndexCloseResult {
  /** The index csum now stored at offset 32. */
  csum: Uint8Array;
  /** Image size (fixed) or stream size, the last end offset (dynamic). */
  size: number;
  /** Number of chunks. */
  count: number;
}

/** Write through this much of the digest area or entry stream at once. */
const BUFFER_BYTES = 1024 * 1024;

/**
 * The temp name PBS uses while an index is written: the final extension replaced by
 * `tmp_fidx`/`tmp_didx`. The final name must carry the extension of its kind, because readers
 * decide the kind by that extension (§5.1).
 */
export function indexTempPath(path: string, kind: IndexKind): string {
  const name = basename(path);
  if (indexKindOfFile(name) !== kind) {
    const ext = kind === 'fixed' ? '.fidx' : '.didx';
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `a ${INDEX_KIND_LABEL[kind]} must be named *${ext}, got ${JSON.stringify(name)}`,
    );
  }
  return join(
    dirname(path),
    `${name.slice(0, name.lastIndexOf('.'))}.tmp_${kind === 'fixed' ? 'fidx' : 'didx'}`,
  );
}

function newUuid(): Uint8Array {
  return fromHex(randomUUID().replaceAll('-', ''));
}

function ioError(error: unknown, action: string, path: string): BurrowError {
  if (isBurrowError(error)) return error;
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  const reason = error instanceof Error ? error.message : String(error);
  return new BurrowError(
    errno === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
    `cannot ${action} ${path}: ${reason}`,
    {
      details: { path, errno },
      cause: error,
    },
  );
}

function checkSyncLevel(level: SyncLevel): void {
  if (!SYNC_LEVELS.includes(level)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `sync level must be one of ${SYNC_LEVELS.join(', ')}, got ${JSON.stringify(level)}`,
    );
  }
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(
      bytes,
      done,
      bytes.byteLength - done,
      position + done,
    );
    if (bytesWritten === 0)
      throw new BurrowError('IO_ERROR', `write made no progress at offset ${position + done}`);
    done += bytesWritten;
  }
}

export type IndexWriterState = 'open' | 'closed' | 'aborted';

/**
 * Temp file handling, state and operation ordering shared by both writers. Every public method
 * runs through one queue, so calls that were not awaited still happen in call order, and a
 * state check sees the effect of every call made before it.
 */
abstract class IndexWriterBase {
  readonly path: string;
  readonly tempPath: string;
  readonly #kind: IndexKind;
  readonly #syncLevel: SyncLevel;
  #handle: FileHandle | undefined;
  #state: IndexWriterState = 'open';
  #queue: Promise<unknown> = Promise.resolve();

  protected constructor(
    kind: IndexKind,
    path: string,
    tempPath: string,
    handle: FileHandle,
    syncLevel: SyncLevel,
  ) {
    this.#kind = kind;
    this.path = path;
    this.tempPath = tempPath;
    this.#handle = handle;
    this.#syncLevel = syncLevel;
  }

  /** Create+truncate the temp file, chown it, write the header; on failure nothing is left behind. */
  protected static async openTemp(
    tempPath: string,
    header: Uint8Array,
    fileSize: number,
    owner: FileOwner | undefined,
  ): Promise<FileHandle> {
    let handle: FileHandle | undefined;
    try {
      // O_NOFOLLOW: a planted symlink at the temp name must not redirect our write elsewhere.
      const flags =
        fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW;
      handle = await open(tempPath, flags, 0o644);
      await chownHandle(handle, owner);
      await writeFully(handle, header, 0);
      if (fileSize > header.byteLength) await handle.truncate(fileSize);
      return handle;
    } catch (error) {
      await handle?.close().catch(() => undefined);
      await rm(tempPath, { force: true }).catch(() => undefined);
      throw ioError(error, 'create index temp file', tempPath);
    }
  }

  get state(): IndexWriterState {
    return this.#state;
  }

  protected get handle(): FileHandle {
    if (this.#handle === undefined)
      throw new BurrowError('INTERNAL', 'index writer has no open file');
    return this.#handle;
  }

  /**
   * Run `fn` after every earlier call. It sees an open writer or fails with INDEX_WRITER_STATE.
   * An I/O failure aborts the writer (a half-written temp file is worthless) and is rethrown.
   */
  protected run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(async () => {
      this.requireOpen(what);
      try {
        return await fn();
      } catch (error) {
        if (isBurrowError(error) && error.code !== 'IO_ERROR' && error.code !== 'NOT_FOUND')
          throw error;
        // Once renamed (only a directory fsync failed) the index is published; keep it.
        if (this.#state === 'open') await this.#discard();
        throw ioError(error, `write ${INDEX_KIND_LABEL[this.#kind]}`, this.tempPath);
      }
    });
    this.#queue = result.catch(() => undefined);
    return result;
  }

  protected requireOpen(what: string): void {
    if (this.#state !== 'open') {
      throw new BurrowError(
        'INDEX_WRITER_STATE',
        `cannot ${what}: the ${INDEX_KIND_LABEL[this.#kind]} writer for ${this.path} is already ${this.#state}`,
        {
          details: { path: this.path, state: this.#state },
        },
      );
    }
  }

  async #discard(): Promise<void> {
    this.#state = 'aborted';
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }

  /** Refuse to publish an index without chunks: drop the temp file and fail with INDEX_EMPTY. */
  protected async refuseEmpty(): Promise<never> {
    await this.#discard();
    throw new BurrowError(
      'INDEX_EMPTY',
      `refusing to write ${this.path}: the ${INDEX_KIND_LABEL[this.#kind]} has no chunks`,
      {
        details: { path: this.path },
      },
    );
  }

  /** Store the csum, sync per level, rename onto the final name. */
  protected async publish(csum: Uint8Array): Promise<void> {
    const handle = this.handle;
    await writeFully(handle, csum, INDEX_CSUM_OFFSET);
    if (this.#syncLevel === 'file') await handle.sync();
    this.#handle = undefined;
    await handle.close();
    await rename(this.tempPath, this.path);
    this.#state = 'closed';
    if (this.#syncLevel === 'file') await fsyncDirectory(dirname(this.path));
  }

  /**
   * Drop the index: remove the temp file. A no-op once aborted; after a successful close the
   * index is published and cannot be taken back (INDEX_WRITER_STATE).
   */
  abort(): Promise<void> {
    const result = this.#queue.then(async () => {
      if (this.#state === 'aborted') return;
      this.requireOpen('abort');
      await this.#discard();
    });
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** `await using` support: a writer left without close() is aborted. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#queue;
    if (this.#state === 'open') await this.abort();
  }
}

/**
 * Builds a `.fidx`. Positions may be filled in any order and overwritten; each is written to the
 * file as it arrives (contiguous runs are batched), so memory stays at one bit per chunk plus
 * one buffer, not the whole digest area.
 */
export class FixedIndexWriter extends IndexWriterBase {
  readonly size: number;
  readonly chunkSize: number;
  readonly count: number;
  readonly #filled: Uint8Array;
  #filledCount = 0;
  // A run of consecutive positions not yet written to the file.
  readonly #run: Uint8Array;
  #runStart = 0;
  #runLength = 0;

  private constructor(
    path: string,
    tempPath: string,
    handle: FileHandle,
    syncLevel: SyncLevel,
    size: number,
    chunkSize: number,
  ) {
    super('fixed', path, tempPath, handle, syncLevel);
    this.size = size;
    this.chunkSize = chunkSize;
    this.count = fixedIndexLayout(size, chunkSize).count;
    this.#filled = new Uint8Array(Math.ceil(this.count / 8));
    this.#run = new Uint8Array(
      Math.min(this.count, BUFFER_BYTES / FIXED_INDEX_ENTRY_SIZE) * FIXED_INDEX_ENTRY_SIZE,
    );
  }

  static async create(path: string, options: FixedIndexWriterOptions): Promise<FixedIndexWriter> {
    const syncLevel = options.syncLevel ?? 'filesystem';
    checkSyncLevel(syncLevel);
    const chunkSize = options.chunkSize ?? FIXED_CHUNK_SIZE;
    const tempPath = indexTempPath(path, 'fixed');
    // Validates size, chunk size, uuid and ctime before any file is created.
    const header = encodeFixedIndexHeader({
      uuid: options.uuid ?? newUuid(),
      ctime: options.ctime ?? Math.floor(Date.now() / 1000),
      indexCsum: new Uint8Array(INDEX_CSUM_SIZE),
      size: options.size,
      chunkSize,
    });
    const { fileSize } = fixedIndexLayout(options.size, chunkSize);
    if (fileSize > MAX_INDEX_FILE_SIZE) {
      // readIndexFile would refuse the result, and the fill bitmap would be absurd.
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `a fixed index of ${options.size} bytes in ${chunkSize}-byte chunks would be ${fileSize} bytes, more than the ${MAX_INDEX_FILE_SIZE}-byte index limit`,
        { details: { size: options.size, chunkSize, fileSize } },
      );
    }
    const handle = await IndexWriterBase.openTemp(tempPath, header, fileSize, options.owner);
    return new FixedIndexWriter(path, tempPath, handle, syncLevel, options.size, chunkSize);
  }

  /**
   * Record the chunk that ends at `endOffset` and is `length` bytes long, checked the way the PBS
   * server checks uploads (§4.1 step 4): it must start on a chunk boundary and be a full chunk,
   * except the last one, which ends at the image size. Returns the chunk position.
   */
  addChunk(endOffset: number, length: number, digest: Uint8Array): Promise<number> {
    return this.run('add a chunk', async () => {
      const position = this.#positionOf(endOffset, length);
      await this.#put(position, digest);
      return position;
    });
  }

  /** Set the digest at `position` directly (e.g. to copy a previous index in incremental mode). */
  setDigest(position: number, digest: Uint8Array): Promise<void> {
    return this.run('set a digest', async () => {
      if (!Number.isSafeInteger(position) || position < 0 || position >= this.count) {
        throw new BurrowError(
          'INDEX_OUT_OF_RANGE',
          `chunk position ${String(position)} lies outside the fixed index (${this.count} chunks)`,
          {
            details: { position, count: this.count },
          },
        );
      }
      await this.#put(position, digest);
    });
  }

  /** Whether `position` has been given a digest. */
  isFilled(position: number): boolean {
    return ((this.#filled[position >>> 3] ?? 0) & (1 << (position & 7))) !== 0;
  }

  /** How many positions have a digest so far. */
  get filledCount(): number {
    return this.#filledCount;
  }

  /**
   * Finish: every position must be filled (otherwise INDEX_WRITER_STATE and the writer stays
   * open, so the caller can fill the gaps or abort); none filled is INDEX_EMPTY and drops the file.
   */
  close(): Promise<IndexCloseResult> {
    return this.run('close', async () => {
      await this.#flushRun();
      if (this.#filledCount === 0) return this.refuseEmpty();
      if (this.#filledCount < this.count) {
        let missing = 0;
        while (this.isFilled(missing)) missing++;
        throw new BurrowError(
          'INDEX_WRITER_STATE',
          `cannot close ${this.path}: ${this.count - this.#filledCount} of ${this.count} chunk positions have no digest (first: ${missing})`,
          {
            details: {
              path: this.path,
              missing: this.count - this.#filledCount,
              firstMissing: missing,
            },
          },
        );
      }
      const csum = await this.#csumFromFile();
      await this.publish(csum);
      return { csum, size: this.size, count: this.count };
    });
  }

  #positionOf(endOffset: number, length: number): number {
    const fail = (why: string): never => {
      throw new BurrowError(
        'INDEX_WRITER_STATE',
        `fixed index chunk ending at ${String(endOffset)} with length ${String(length)}: ${why}`,
        {
          details: { endOffset, length, size: this.size, chunkSize: this.chunkSize },
        },
      );
    };
    if (!Number.isSafeInteger(endOffset) || !Number.isSafeInteger(length))
      fail('offsets must be integers');
    if (length <= 0 || length > this.chunkSize) fail(`length must be 1..${this.chunkSize}`);
    if (endOffset > this.size || endOffset < length)
      fail(`the chunk lies outside the image of ${this.size} bytes`);
    const start = endOffset - length;
    if (start % this.chunkSize !== 0)
      fail(`start ${start} is not a multiple of the chunk size ${this.chunkSize}`);
    if (length !== this.chunkSize && endOffset !== this.size)
      fail(`only the last chunk (ending at ${this.size}) may be shorter than ${this.chunkSize}`);
    return start / this.chunkSize;
  }

  async #put(position: number, digest: Uint8Array): Promise<void> {
    checkDigest(digest, `digest for fixed index position ${position}`);
    const capacity = this.#run.byteLength / FIXED_INDEX_ENTRY_SIZE;
    const runEnd = this.#runStart + this.#runLength;
    if (this.#runLength > 0 && position >= this.#runStart && position < runEnd) {
      this.#run.set(digest, (position - this.#runStart) * FIXED_INDEX_ENTRY_SIZE);
    } else if (this.#runLength > 0 && position === runEnd && this.#runLength < capacity) {
      this.#run.set(digest, this.#runLength * FIXED_INDEX_ENTRY_SIZE);
      this.#runLength++;
    } else {
      await this.#flushRun();
      this.#runStart = position;
      this.#runLength = 1;
      this.#run.set(digest, 0);
    }
    const bit = 1 << (position & 7);
    const byte = this.#filled[position >>> 3] ?? 0;
    if ((byte & bit) === 0) {
      this.#filled[position >>> 3] = byte | bit;
      this.#filledCount++;
    }
  }

  async #flushRun(): Promise<void> {
    if (this.#runLength === 0) return;
    const bytes = this.#run.subarray(0, this.#runLength * FIXED_INDEX_ENTRY_SIZE);
    await writeFully(
      this.handle,
      bytes,
      INDEX_HEADER_SIZE + this.#runStart * FIXED_INDEX_ENTRY_SIZE,
    );
    this.#runLength = 0;
  }

  /** Hash the digest area back from the file: positions arrive in any order, so no running hash. */
  async #csumFromFile(): Promise<Uint8Array> {
    const csum = new IndexCsumBuilder();
    const buffer = new Uint8Array(Math.min(BUFFER_BYTES, this.count * FIXED_INDEX_ENTRY_SIZE));
    const end = INDEX_HEADER_SIZE + this.count * FIXED_INDEX_ENTRY_SIZE;
    let position = INDEX_HEADER_SIZE;
    while (position < end) {
      const want = Math.min(buffer.byteLength, end - position);
      const { bytesRead } = await this.handle.read(buffer, 0, want, position);
      if (bytesRead === 0) {
        throw new BurrowError(
          'IO_ERROR',
          `${this.tempPath} shrank while it was written: no data at offset ${position}`,
        );
      }
      csum.update(buffer.subarray(0, bytesRead));
      position += bytesRead;
    }
    return csum.digest();
  }
}

/**
 * Builds a `.didx` from entries in stream order. Entries go through a ~1 MiB buffer and the csum
 * is hashed as they pass, so memory does not grow with the number of chunks.
 */
export class DynamicIndexWriter extends IndexWriterBase {
  readonly #buffer = new Uint8Array(
    Math.floor(BUFFER_BYTES / DYNAMIC_INDEX_ENTRY_SIZE) * DYNAMIC_INDEX_ENTRY_SIZE,
  );
  #buffered = 0;
  #fileOffset = INDEX_HEADER_SIZE;
  readonly #csum = new IndexCsumBuilder();
  #count = 0;
  #lastEnd = 0;

  private constructor(path: string, tempPath: string, handle: FileHandle, syncLevel: SyncLevel) {
    super('dynamic', path, tempPath, handle, syncLevel);
  }

  static async create(path: string, options: IndexWriterOptions = {}): Promise<DynamicIndexWriter> {
    const syncLevel = options.syncLevel ?? 'filesystem';
    checkSyncLevel(syncLevel);
    const tempPath = indexTempPath(path, 'dynamic');
    const header = encodeDynamicIndexHeader({
      uuid: options.uuid ?? newUuid(),
      ctime: options.ctime ?? Math.floor(Date.now() / 1000),
      indexCsum: new Uint8Array(INDEX_CSUM_SIZE),
    });
    const handle = await IndexWriterBase.openTemp(
      tempPath,
      header,
      header.byteLength,
      options.owner,
    );
    return new DynamicIndexWriter(path, tempPath, handle, syncLevel);
  }

  /** Entries appended so far. */
  get count(): number {
    return this.#count;
  }

  /** Stream size so far: the last end offset. */
  get size(): number {
    return this.#lastEnd;
  }

  /** Append the next chunk: its exclusive end offset in the stream (strictly increasing) and digest. */
  append(endOffset: number, digest: Uint8Array): Promise<void> {
    return this.run('append a chunk', async () => {
      if (!Number.isSafeInteger(endOffset) || endOffset <= this.#lastEnd) {
        throw new BurrowError(
          'INDEX_WRITER_STATE',
          `dynamic index entry ${this.#count}: end offset ${String(endOffset)} must be an integer greater than the previous end ${this.#lastEnd}`,
          { details: { endOffset, previous: this.#lastEnd, entry: this.#count } },
        );
      }
      checkDigest(digest, `digest of dynamic index entry ${this.#count}`);
      writeDynamicEntry(this.#buffer, this.#buffered, endOffset, digest);
      this.#buffered += DYNAMIC_INDEX_ENTRY_SIZE;
      this.#count++;
      this.#lastEnd = endOffset;
      if (this.#buffered === this.#buffer.byteLength) await this.#flush();
    });
  }

  /** Finish: store the csum and rename. No entries is INDEX_EMPTY and drops the file. */
  close(): Promise<IndexCloseResult> {
    return this.run('close', async () => {
      if (this.#count === 0) return this.refuseEmpty();
      await this.#flush();
      const csum = this.#csum.digest();
      await this.publish(csum);
      return { csum, size: this.#lastEnd, count: this.#count };
    });
  }

  async #flush(): Promise<void> {
    if (this.#buffered === 0) return;
    const bytes = this.#buffer.subarray(0, this.#buffered);
    this.#csum.update(bytes);
    await writeFully(this.handle, bytes, this.#fileOffset);
    this.#fileOffset += this.#buffered;
    this.#buffered = 0;
  }
}
