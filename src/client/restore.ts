/**
 * Restore (pbs-protocol §6.2): the manifest first, checked against the key (fingerprint, then
 * signature); then one archive, found by PBS's name rules, each of its files checked against the
 * manifest before use and each chunk against its digest (chunk-reader.ts).
 *
 * - pxar archives (`x.pxar.didx`, or the split pair `x.mpxar.didx` + `x.ppxar.didx`) are
 *   extracted into a directory by the pxar extractor. Patterns that name plain paths
 *   (`/etc/hosts`) are served through the archive's goodbye tables (PxarAccessor), so only the
 *   chunks on the way to those entries and their contents are fetched; other patterns stream
 *   the whole archive. A v1 archive restored to `-` is written out as the raw pxar stream, as
 *   PBS does; a split archive has no single stream and is refused there.
 * - images (`.fidx`) go to a file, sparse: all-zero chunks (known by their digest, so they are
 *   not even fetched) and zero 4 KiB blocks are skipped and the size set at the end; or to a
 *   block device, or to `-`, byte for byte.
 * - blobs are checked against the manifest (size, SHA-256 of the encoded file), decoded and
 *   written out; `index.json.blob` gives the manifest JSON itself.
 *
 * Files are written under a temporary name beside the target and appear only when complete.
 */
import { createHash, randomBytes } from 'node:crypto';
import { link, lstat, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { fsyncDirectory } from '../lib/atomic-write.js';
import type { CryptConfig } from '../crypto/crypt-config.js';
import { decodeBlob } from '../format/data-blob.js';
import type { BackupManifest } from '../format/manifest.js';
import {
  MANIFEST_BLOB_NAME,
  archiveTypeOf,
  lookupFile,
  parseManifest,
  serverArchiveName,
  verifyManifest,
} from '../format/manifest.js';
import { PxarAccessor, type AccessorEntry } from '../pxar/accessor.js';
import { PxarDecoder, type DecoderEvent } from '../pxar/decoder.js';
import {
  extractArchive,
  type ExtractOptions,
  type ExtractSource,
  type ExtractWarning,
} from '../pxar/extractor.js';
import type { RandomAccess } from '../pxar/format.js';
import { parsePattern, type MatchPattern } from '../pxar/pattern.js';
import { SAFE_ID_RE, formatSnapshot } from '../types/backup.js';
import type { BackupReader } from './backup-writer.js';
import {
  archiveError,
  openArchiveReader,
  type ArchiveReader,
  type ArchiveReaderOptions,
  type ChunkDecoder,
  type ChunkFileDecoder,
  type ChunkPlanRunner,
} from './chunk-reader.js';
import { PayloadContentWriter } from './payload-content-writer.js';

export { snapshotCatalog, type SnapshotCatalog } from './snapshot-catalog.js';

// ---------------------------------------------------------------------------------------------
// Manifest

/**
 * Download and decode `index.json.blob` of the reader's snapshot. It must describe that very
 * snapshot (a manifest copied from elsewhere is MANIFEST_INVALID). With `crypt`, a recorded key
 * fingerprint must be the key's (MANIFEST_WRONG_KEY) and a signature must verify
 * (MANIFEST_SIGNATURE_MISMATCH). Without a key the manifest is returned unverified, as PBS does:
 * encrypted archives are then refused where they are opened (BLOB_KEY_REQUIRED), while plain
 * files stay readable, notably `rsa-encrypted.key.blob`, which recovering a lost key needs.
 */
export async function readSnapshotManifest(
  reader: BackupReader,
  crypt?: CryptConfig,
): Promise<BackupManifest> {
  const snapshot = formatSnapshot(reader.snapshot);
  let manifest: BackupManifest;
  try {
    const raw = await reader.download(MANIFEST_BLOB_NAME);
    manifest = parseManifest(decodeBlob(raw));
  } catch (error) {
    throw archiveError(error, snapshot, MANIFEST_BLOB_NAME);
  }
  const dir = reader.snapshot;
  if (
    manifest.backupType !== dir.group.type ||
    manifest.backupId !== dir.group.id ||
    manifest.backupTime !== dir.time
  ) {
    const described = `${manifest.backupType}/${manifest.backupId} at ${manifest.backupTime}`;
    throw new BurrowError(
      'MANIFEST_INVALID',
      `snapshot ${snapshot}: its manifest describes another snapshot (${described})`,
      {
        details: {
          snapshot,
          archive: MANIFEST_BLOB_NAME,
          manifestType: manifest.backupType,
          manifestId: manifest.backupId,
          manifestTime: manifest.backupTime,
        },
      },
    );
  }
  if (crypt !== undefined) {
    try {
      verifyManifest(manifest, crypt);
    } catch (error) {
      throw archiveError(error, snapshot, MANIFEST_BLOB_NAME);
    }
  }
  return manifest;
}

// ---------------------------------------------------------------------------------------------
// Archive names

export type ResolvedArchive =
  | { readonly kind: 'pxar'; readonly name: string }
  | { readonly kind: 'split-pxar'; readonly metadata: string; readonly payload: string }
  | { readonly kind: 'image'; readonly name: string }
  /** A `.didx` that is not a pxar archive (e.g. the catalog): restored as its raw stream. */
  | { readonly kind: 'dynamic'; readonly name: string }
  | { readonly kind: 'blob'; readonly name: string }
  | { readonly kind: 'manifest'; readonly name: typeof MANIFEST_BLOB_NAME };

const PXAR_NAME_RE = /^(.+)\.(pxar|mpxar|ppxar)(?:\.didx)?$/;

function notFound(manifest: BackupManifest, snapshot: string, name: string): BurrowError {
  const available = [...manifest.files.map((f) => f.filename), MANIFEST_BLOB_NAME].sort();
  return new BurrowError(
    'NOT_FOUND',
    `snapshot ${snapshot} has no archive ${JSON.stringify(name)}; it has: ${available.join(', ')}`,
    { details: { snapshot, archive: name, available } },
  );
}

/**
 * Find an archive as PBS's client does: `root.pxar` (or `root.pxar.didx`) is the v1 archive
 * `root.pxar.didx` or else the split pair `root.mpxar.didx` + `root.ppxar.didx` (which
 * `root.mpxar`/`root.ppxar` name too); `disk.img` is `disk.img.fidx`; `vm.conf` is
 * `vm.conf.blob`; a server name is taken as it is. NOT_FOUND lists what the snapshot has.
 */
export function resolveArchive(
  manifest: BackupManifest,
  archiveName: string,
  snapshot = `${manifest.backupType}/${manifest.backupId}`,
): ResolvedArchive {
  if (typeof archiveName !== 'string' || !SAFE_ID_RE.test(archiveName)) {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `invalid archive name ${JSON.stringify(String(archiveName).slice(0, 120))}: expected a name like root.pxar, disk.img or vm.conf`,
      { details: { archive: archiveName } },
    );
  }
  if (archiveName === MANIFEST_BLOB_NAME || archiveName === 'index.json') {
    return { kind: 'manifest', name: MANIFEST_BLOB_NAME };
  }
  const files = new Set(manifest.files.map((f) => f.filename));
  const pxar = PXAR_NAME_RE.exec(archiveName);
  if (pxar !== null) {
    const base = pxar[1]!;
    if (pxar[2] === 'pxar' && files.has(`${base}.pxar.didx`)) {
      return { kind: 'pxar', name: `${base}.pxar.didx` };
    }
    const metadata = `${base}.mpxar.didx`;
    const payload = `${base}.ppxar.didx`;
    if (files.has(metadata) && files.has(payload)) return { kind: 'split-pxar', metadata, payload };
    throw notFound(manifest, snapshot, archiveName);
  }
  let server: string;
  try {
    server = serverArchiveName(archiveName);
  } catch (error) {
    if (isBurrowError(error, 'INVALID_ARCHIVE_NAME'))
      throw notFound(manifest, snapshot, archiveName);
    throw error;
  }
  if (!files.has(server)) throw notFound(manifest, snapshot, archiveName);
  const type = archiveTypeOf(server);
  if (type === 'fixed') return { kind: 'image', name: server };
  if (type === 'blob') return { kind: 'blob', name: server };
  return { kind: 'dynamic', name: server };
}

// ---------------------------------------------------------------------------------------------
// Options and results

export interface RestoreProgress {
  /** Bytes written to the target (pxar: file contents). */
  bytes: number;
  /** Known for images and blobs. */
  totalBytes?: number;
  /** pxar: entries restored. */
  entries?: number;
  /** pxar: the archive path being restored. */
  path?: string;
  /** pxar: archive bytes read so far (metadata stream plus payload), for a rate or an ETA. */
  archiveBytes?: number;
  /** pxar: size of the archive (both streams of a split archive). */
  archiveSize?: number;
}

/** Where `-` writes: process.stdout unless the caller gives another stream. */
export interface OutputStream {
  write(chunk: Uint8Array, callback: (error?: Error | null) => void): boolean;
}

export interface RestoreOptions {
  reader: BackupReader;
  crypt?: CryptConfig;
  /** 'root.pxar' or 'root.pxar.didx', 'disk.img', 'vm.conf', 'index.json.blob'. */
  archiveName: string;
  /** A directory for pxar, a file (or block device) for images and blobs, or '-' for stdout. */
  target: string;
  /** pxar only: restore only what these select (PBS `--pattern`, default type include). */
  patterns?: readonly string[];
  /** pxar only: allowExistingDirs, overwrite, noXattrs, ... Images and blobs honour `overwrite`. */
  extract?: Partial<ExtractOptions>;
  /** The manifest, when the caller read it already with readSnapshotManifest (same key). */
  manifest?: BackupManifest;
  /** The stream `-` writes to (default process.stdout). */
  stdout?: OutputStream;
  /** How chunks are decoded, e.g. on worker threads (default: on this thread). */
  decodeChunk?: ChunkDecoder;
  /** How chunk files are read and decoded when the reader names them (a local datastore). */
  decodeChunkFile?: ChunkFileDecoder;
  /**
   * Split archives: decodes payload chunks and writes the files' contents where it decodes them
   * (workerChunkPlanRunner), so the contents never pass through this thread.
   */
  runChunkPlan?: ChunkPlanRunner;
  signal?: AbortSignal;
  onProgress?: (p: RestoreProgress) => void;
  onWarning?: (message: string) => void;
}

export interface RestoreResult {
  bytes: number;
  entries?: number;
  seconds: number;
  warnings: number;
}

// ---------------------------------------------------------------------------------------------
// Output helpers

function writeOut(out: OutputStream, data: Uint8Array): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    out.write(data, (error) => {
      if (error) {
        reject(
          new BurrowError('IO_ERROR', `cannot write to standard output: ${error.message}`, {
            details: { errnoName: (error as NodeJS.ErrnoException).code },
            cause: error,
          }),
        );
      } else resolve();
    });
  });
}

function ioError(error: unknown, action: string, path: string): BurrowError {
  if (isBurrowError(error)) return error;
  const err = error as NodeJS.ErrnoException;
  return new BurrowError(
    err?.code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
    `cannot ${action} ${path}: ${err?.message ?? String(error)}`,
    { details: { path, errnoName: err?.code }, cause: error },
  );
}

function allowsOverwrite(extract: Partial<ExtractOptions> | undefined): boolean {
  const o = extract?.overwrite;
  return o === 'all' || (Array.isArray(o) && (o as readonly string[]).includes('files'));
}

/**
 * A restored file: written under `<target>.tmp_XXXXXX` beside it and linked into place at the
 * end (or renamed over an existing file when overwriting is allowed), so a failed restore never
 * leaves a half-written file under the target's name. An existing block or character device is
 * written in place instead (restoring an image onto a disk).
 */
class TargetFile {
  private constructor(
    readonly path: string,
    readonly tempPath: string | undefined,
    readonly handle: FileHandle,
    readonly overwrite: boolean,
  ) {}

  /** True when writing to a device: every byte must be written, no holes, no truncation. */
  get isDevice(): boolean {
    return this.tempPath === undefined;
  }

  static async create(path: string, overwrite: boolean): Promise<TargetFile> {
    let existing: Awaited<ReturnType<typeof lstat>> | undefined;
    try {
      existing = await lstat(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(error, 'stat', path);
    }
    if (existing !== undefined) {
      if (existing.isBlockDevice() || existing.isCharacterDevice()) {
        try {
          return new TargetFile(path, undefined, await open(path, 'r+'), overwrite);
        } catch (error) {
          throw ioError(error, 'open', path);
        }
      }
      if (!existing.isFile() || !overwrite) {
        throw new BurrowError(
          'ALREADY_EXISTS',
          existing.isDirectory()
            ? `restore target ${path} is a directory: name the file to create`
            : `restore target ${path} exists already${existing.isFile() ? ' (allow overwriting files to replace it)' : ''}`,
          { details: { path } },
        );
      }
    }
    const tempPath = join(
      dirname(path),
      `${basename(path)}.tmp_${randomBytes(6).toString('base64url')}`,
    );
    let handle: FileHandle;
    try {
      handle = await open(tempPath, 'wx', 0o644);
    } catch (error) {
      throw ioError(error, 'create', tempPath);
    }
    return new TargetFile(path, tempPath, handle, overwrite);
  }

  async writeAt(data: Uint8Array, position: number): Promise<void> {
    let done = 0;
    try {
      while (done < data.byteLength) {
        const { bytesWritten } = await this.handle.write(
          data,
          done,
          data.byteLength - done,
          position + done,
        );
        done += bytesWritten;
      }
    } catch (error) {
      throw ioError(error, 'write', this.tempPath ?? this.path);
    }
  }

  async commit(size: number | undefined): Promise<void> {
    const current = this.tempPath ?? this.path;
    try {
      if (size !== undefined && !this.isDevice) await this.handle.truncate(size);
      await this.handle.sync().catch((error: NodeJS.ErrnoException) => {
        // Character devices (a tape, /dev/null) cannot be synced; block devices and files can.
        if (!(this.isDevice && error.code === 'EINVAL')) throw error;
      });
      await this.handle.close();
    } catch (error) {
      throw ioError(error, 'finish', current);
    }
    if (this.tempPath === undefined) return;
    try {
      if (this.overwrite) {
        await rename(this.tempPath, this.path);
      } else {
        // link(2) never replaces: a file that appeared meanwhile is not clobbered.
        await link(this.tempPath, this.path);
        await rm(this.tempPath, { force: true });
      }
    } catch (error) {
      await rm(this.tempPath, { force: true });
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new BurrowError('ALREADY_EXISTS', `restore target ${this.path} exists already`, {
          details: { path: this.path },
        });
      }
      throw ioError(error, 'create', this.path);
    }
    await fsyncDirectory(dirname(this.path)).catch(() => undefined);
  }

  async abort(): Promise<void> {
    await this.handle.close().catch(() => undefined);
    if (this.tempPath !== undefined) await rm(this.tempPath, { force: true });
  }
}

const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** Write `data` at `position`, leaving holes for whole 4 KiB blocks of zeros. */
async function writeSparse(file: TargetFile, data: Uint8Array, position: number): Promise<void> {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let runStart = -1;
  for (let at = 0; at < buf.length; at += BLOCK) {
    const end = Math.min(at + BLOCK, buf.length);
    const zero =
      end - at === BLOCK
        ? buf.subarray(at, end).equals(ZERO_BLOCK)
        : buf.subarray(at, end).equals(ZERO_BLOCK.subarray(0, end - at));
    if (!zero && runStart < 0) runStart = at;
    if (zero && runStart >= 0) {
      await file.writeAt(buf.subarray(runStart, at), position + runStart);
      runStart = -1;
    }
  }
  if (runStart >= 0) await file.writeAt(buf.subarray(runStart), position + runStart);
}

function readerOptions(options: RestoreOptions): ArchiveReaderOptions {
  return {
    ...(options.decodeChunk !== undefined ? { decode: options.decodeChunk } : {}),
    ...(options.decodeChunkFile !== undefined ? { decodeFile: options.decodeChunkFile } : {}),
    ...(options.runChunkPlan !== undefined ? { runPlan: options.runChunkPlan } : {}),
  };
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) {
    throw new BurrowError('TASK_ABORTED', 'the restore was aborted', {
      details: { reason: String(signal.reason) },
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Images, raw streams and blobs

async function restoreImage(
  archive: ArchiveReader,
  options: RestoreOptions,
  stdout: OutputStream,
): Promise<number> {
  const total = archive.size;
  let bytes = 0;
  const report = (): void => options.onProgress?.({ bytes, totalBytes: total });
  if (options.target === '-') {
    for await (const data of archive.stream()) {
      checkAbort(options.signal);
      await writeOut(stdout, data);
      bytes += data.byteLength;
      report();
    }
    return bytes;
  }
  const file = await TargetFile.create(options.target, allowsOverwrite(options.extract));
  try {
    // A device must get every byte; a new file gets holes where the image is zero.
    for await (const chunk of archive.chunks({ skipZero: !file.isDevice })) {
      checkAbort(options.signal);
      if (chunk.data === undefined) {
        // nothing to write: the hole is made by the final truncate
      } else if (file.isDevice) {
        await file.writeAt(chunk.data, chunk.start);
      } else {
        await writeSparse(file, chunk.data, chunk.start);
      }
      bytes += chunk.end - chunk.start;
      report();
    }
    await file.commit(total);
  } catch (error) {
    await file.abort();
    throw error;
  }
  return bytes;
}

/** A `.didx` written out as its raw stream (a pxar to `-`, or a non-pxar dynamic archive). */
async function restoreRawStream(
  archive: ArchiveReader,
  options: RestoreOptions,
  stdout: OutputStream,
): Promise<number> {
  let bytes = 0;
  const total = archive.size;
  if (options.target === '-') {
    for await (const data of archive.stream()) {
      checkAbort(options.signal);
      await writeOut(stdout, data);
      bytes += data.byteLength;
      options.onProgress?.({ bytes, totalBytes: total });
    }
    return bytes;
  }
  const file = await TargetFile.create(options.target, allowsOverwrite(options.extract));
  try {
    for await (const data of archive.stream()) {
      checkAbort(options.signal);
      await file.writeAt(data, bytes);
      bytes += data.byteLength;
      options.onProgress?.({ bytes, totalBytes: total });
    }
    await file.commit(total);
  } catch (error) {
    await file.abort();
    throw error;
  }
  return bytes;
}

async function writeWhole(
  data: Uint8Array,
  options: RestoreOptions,
  stdout: OutputStream,
): Promise<void> {
  if (options.target === '-') {
    await writeOut(stdout, data);
    return;
  }
  const file = await TargetFile.create(options.target, allowsOverwrite(options.extract));
  try {
    await file.writeAt(data, 0);
    await file.commit(data.byteLength);
  } catch (error) {
    await file.abort();
    throw error;
  }
}

/**
 * A blob's content: the encoded file must have the manifest's size and SHA-256 (pbs-protocol
 * §6.2 step 2) before it is decoded (decrypted when it is encrypted: BLOB_KEY_REQUIRED without
 * a key).
 */
export async function readBlobArchive(
  reader: BackupReader,
  manifest: BackupManifest,
  name: string,
  crypt?: CryptConfig,
): Promise<Uint8Array> {
  const snapshot = formatSnapshot(reader.snapshot);
  const info = lookupFile(manifest, name);
  let raw: Uint8Array;
  try {
    raw = await reader.download(name);
  } catch (error) {
    throw archiveError(error, snapshot, name, { what: 'cannot download' });
  }
  if (raw.byteLength !== info.size) {
    throw new BurrowError(
      'SIZE_MISMATCH',
      `snapshot ${snapshot}, archive ${name}: the blob is ${raw.byteLength} bytes, the manifest says ${info.size}`,
      { details: { snapshot, archive: name, expected: info.size, actual: raw.byteLength } },
    );
  }
  const csum = createHash('sha256').update(raw).digest('hex');
  if (csum !== info.csum) {
    throw new BurrowError(
      'DIGEST_MISMATCH',
      `snapshot ${snapshot}, archive ${name}: the blob's SHA-256 ${csum} does not match the manifest (${info.csum})`,
      { details: { snapshot, archive: name, expected: info.csum, actual: csum } },
    );
  }
  try {
    return decodeBlob(raw, crypt === undefined ? {} : { crypt });
  } catch (error) {
    if (isBurrowError(error, 'BLOB_KEY_REQUIRED')) {
      throw new BurrowError(
        'BLOB_KEY_REQUIRED',
        `snapshot ${snapshot}, archive ${name}: the blob is encrypted; give its key (--keyfile)`,
        { details: { snapshot, archive: name }, cause: error },
      );
    }
    throw archiveError(error, snapshot, name, { what: 'cannot decode the blob' });
  }
}

// ---------------------------------------------------------------------------------------------
// pxar

/** The paths of patterns that each name one archive path exactly, or undefined. */
export function plainPatternPaths(
  patterns: readonly MatchPattern[],
): Array<{ path: Uint8Array; dirOnly: boolean }> | undefined {
  if (patterns.length === 0) return undefined;
  const out: Array<{ path: Uint8Array; dirOnly: boolean }> = [];
  for (const p of patterns) {
    if (p.type !== 'include' || !p.anchored) return undefined;
    const glob = p.globBytes;
    // `*`, `?`, `[` and `\` make a glob; anything else matches itself.
    if (glob.some((b) => b === 0x2a || b === 0x3f || b === 0x5b || b === 0x5c)) return undefined;
    const parts = Buffer.from(glob).toString('latin1').split('/').slice(1);
    if (parts.length === 0 || parts.some((c) => c === '' || c === '.' || c === '..'))
      return undefined;
    out.push({ path: glob.subarray(1), dirOnly: p.dirOnly });
  }
  return out;
}

interface PlanNode {
  readonly entry: AccessorEntry;
  /** Selected by a pattern: the whole subtree goes out. */
  full: boolean;
  readonly children: Map<number, PlanNode>;
}

/**
 * Decoder events for a few paths of an archive, produced from its goodbye tables: the root, the
 * directories on the way (in archive order) and each selected entry with its whole subtree. The
 * extractor applies the patterns to these as it would to the full stream, so the result is the
 * same; only what is not selected is never read.
 */
class AccessorSource implements ExtractSource {
  readonly #accessor: PxarAccessor;
  readonly #events: AsyncGenerator<DecoderEvent>;
  #current: AccessorEntry | undefined;

  constructor(accessor: PxarAccessor, root: PlanNode) {
    this.#accessor = accessor;
    this.#events = this.#walk(root);
  }

  static async plan(
    accessor: PxarAccessor,
    paths: ReadonlyArray<{ path: Uint8Array; dirOnly: boolean }>,
  ): Promise<PlanNode> {
    const root: PlanNode = { entry: accessor.root(), full: false, children: new Map() };
    for (const { path, dirOnly } of paths) {
      const chain: AccessorEntry[] = [];
      let missing = false;
      for (let i = 1; i <= path.byteLength; i++) {
        if (i < path.byteLength && path[i] !== 0x2f) continue;
        const entry = await accessor.lookup(path.subarray(0, i));
        if (entry === undefined) {
          missing = true;
          break;
        }
        chain.push(entry);
      }
      const target = chain[chain.length - 1];
      if (missing || target === undefined) continue;
      if (dirOnly && target.body.kind !== 'directory') continue;
      let node = root;
      for (const entry of chain) {
        let child = node.children.get(entry.fileNameOffset);
        if (child === undefined) {
          child = { entry, full: false, children: new Map() };
          node.children.set(entry.fileNameOffset, child);
        }
        node = child;
      }
      node.full = true;
    }
    return root;
  }

  async *#walk(root: PlanNode): AsyncGenerator<DecoderEvent> {
    yield { type: 'entry', entry: root.entry };
    yield* this.#children(root);
    yield { type: 'directory-end', path: root.entry.path };
  }

  async *#children(node: PlanNode): AsyncGenerator<DecoderEvent> {
    const children = [...node.children.values()].sort(
      (a, b) => a.entry.fileNameOffset - b.entry.fileNameOffset,
    );
    for (const child of children) {
      if (child.full) {
        yield* this.#subtree(child.entry);
        continue;
      }
      this.#current = child.entry;
      yield { type: 'entry', entry: child.entry };
      yield* this.#children(child);
      yield { type: 'directory-end', path: child.entry.path };
    }
  }

  /** An entry and, for a directory, everything below it, depth first in archive order. */
  async *#subtree(top: AccessorEntry): AsyncGenerator<DecoderEvent> {
    const stack: Array<{ dir: AccessorEntry; children: AccessorEntry[]; next: number }> = [];
    const enter = async (entry: AccessorEntry): Promise<void> => {
      stack.push({ dir: entry, children: await this.#accessor.readDirectory(entry), next: 0 });
    };
    this.#current = top;
    yield { type: 'entry', entry: top };
    if (top.body.kind !== 'directory') return;
    await enter(top);
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      const child = frame.children[frame.next++];
      if (child === undefined) {
        stack.pop();
        yield { type: 'directory-end', path: frame.dir.path };
        continue;
      }
      this.#current = child;
      yield { type: 'entry', entry: child };
      if (child.body.kind === 'directory') await enter(child);
    }
  }

  async next(): Promise<DecoderEvent | undefined> {
    this.#current = undefined;
    const result = await this.#events.next();
    return result.done === true ? undefined : result.value;
  }

  contents(): AsyncIterable<Uint8Array> {
    const entry = this.#current;
    if (entry === undefined || entry.body.kind !== 'file') {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'contents(): the current entry is not a regular file',
      );
    }
    return this.#accessor.readFile(entry);
  }
}

/** Counts the bytes of a stream as they pass. */
async function* counted(
  source: AsyncIterable<Uint8Array>,
  onBytes: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  for await (const piece of source) {
    onBytes(piece.byteLength);
    yield piece;
  }
}

/** A RandomAccess that counts the bytes read through it. */
function countedAccess(inner: RandomAccess, onBytes: (n: number) => void): RandomAccess {
  const counted: RandomAccess = {
    size: inner.size,
    async readAt(offset: number, length: number): Promise<Uint8Array> {
      const data = await inner.readAt(offset, length);
      onBytes(data.byteLength);
      return data;
    },
  };
  const readPiece = inner.readPiece?.bind(inner);
  if (readPiece !== undefined)
    counted.readPiece = async (offset: number, maxLength: number): Promise<Uint8Array> => {
      const data = await readPiece(offset, maxLength);
      onBytes(data.byteLength);
      return data;
    };
  return counted;
}

function warningText(w: ExtractWarning): string {
  return `${w.path}: ${w.message}`;
}

async function restorePxar(
  reader: BackupReader,
  manifest: BackupManifest,
  resolved: Extract<ResolvedArchive, { kind: 'pxar' | 'split-pxar' }>,
  options: RestoreOptions,
  patterns: readonly MatchPattern[],
): Promise<{ bytes: number; entries: number; warnings: number }> {
  const snapshot = formatSnapshot(reader.snapshot);
  const { crypt } = options;
  const metaName = resolved.kind === 'pxar' ? resolved.name : resolved.metadata;
  const archive = await openArchiveReader(
    reader,
    manifest,
    metaName,
    crypt,
    readerOptions(options),
  );
  const payload =
    resolved.kind === 'split-pxar'
      ? await openArchiveReader(reader, manifest, resolved.payload, crypt, readerOptions(options))
      : undefined;
  const archiveSize = archive.size + (payload?.size ?? 0);
  let archiveBytes = 0;
  const addRead = (n: number): void => {
    archiveBytes += n;
  };
  const name = `snapshot ${snapshot}, archive ${metaName}`;
  const countedPayload = payload === undefined ? undefined : countedAccess(payload, addRead);

  let source: ExtractSource;
  let contentWriter: PayloadContentWriter | undefined;
  const plain = plainPatternPaths(patterns);
  if (plain !== undefined) {
    const accessor = await PxarAccessor.open(countedAccess(archive, addRead), {
      name,
      ...(countedPayload !== undefined ? { payload: countedPayload } : {}),
    });
    source = new AccessorSource(accessor, await AccessorSource.plan(accessor, plain));
  } else {
    source = new PxarDecoder(counted(archive.stream(), addRead), {
      name,
      ...(countedPayload !== undefined ? { payload: countedPayload } : {}),
    });
    // Whole-tree restores of split archives: contents are written on the workers.
    if (payload?.writesFromChunks === true)
      contentWriter = new PayloadContentWriter(payload, addRead);
  }
  const onWarning = options.onWarning;
  const onProgress = options.onProgress;
  const stats = await extractArchive(source, options.target, {
    ...options.extract,
    ...(contentWriter !== undefined ? { contentWriter } : {}),
    patterns,
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
    onWarning: (w) => {
      options.extract?.onWarning?.(w);
      onWarning?.(warningText(w));
    },
    onProgress: (p) => {
      options.extract?.onProgress?.(p);
      onProgress?.({
        bytes: p.bytes,
        entries: p.entries,
        path: p.path,
        archiveBytes,
        archiveSize,
      });
    },
  });
  return { bytes: stats.bytes, entries: stats.entries, warnings: stats.warnings };
}

// ---------------------------------------------------------------------------------------------
// Entry point

/**
 * Restore one archive of the reader's snapshot to `target` (see the module comment). Resolves
 * with the bytes written (file contents for pxar), the entries restored (pxar), the duration
 * and the number of warnings.
 */
export async function restoreArchive(options: RestoreOptions): Promise<RestoreResult> {
  const started = performance.now();
  const { reader, crypt } = options;
  if (typeof options.target !== 'string' || options.target === '') {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'a restore target is required (a path, or - for standard output)',
    );
  }
  const patterns = (options.patterns ?? []).map((p) => parsePattern(p, 'include'));
  const snapshot = formatSnapshot(reader.snapshot);
  const manifest = options.manifest ?? (await readSnapshotManifest(reader, crypt));
  const resolved = resolveArchive(manifest, options.archiveName, snapshot);
  const stdout: OutputStream = options.stdout ?? process.stdout;
  const isPxarDir =
    (resolved.kind === 'pxar' || resolved.kind === 'split-pxar') && options.target !== '-';
  if (patterns.length > 0 && !isPxarDir) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'patterns select paths inside a pxar archive restored to a directory; they cannot apply here',
      { details: { archive: options.archiveName, target: options.target } },
    );
  }
  const done = (
    bytes: number,
    extra: { entries?: number; warnings?: number } = {},
  ): RestoreResult => ({
    bytes,
    ...(extra.entries !== undefined ? { entries: extra.entries } : {}),
    seconds: (performance.now() - started) / 1000,
    warnings: extra.warnings ?? 0,
  });

  switch (resolved.kind) {
    case 'manifest': {
      const raw = await reader.download(MANIFEST_BLOB_NAME);
      const json = decodeBlob(raw);
      await writeWhole(json, options, stdout);
      options.onProgress?.({ bytes: json.byteLength, totalBytes: json.byteLength });
      return done(json.byteLength);
    }
    case 'blob': {
      const data = await readBlobArchive(reader, manifest, resolved.name, crypt);
      await writeWhole(data, options, stdout);
      options.onProgress?.({ bytes: data.byteLength, totalBytes: data.byteLength });
      return done(data.byteLength);
    }
    case 'image': {
      const archive = await openArchiveReader(
        reader,
        manifest,
        resolved.name,
        crypt,
        readerOptions(options),
      );
      return done(await restoreImage(archive, options, stdout));
    }
    case 'dynamic': {
      const archive = await openArchiveReader(
        reader,
        manifest,
        resolved.name,
        crypt,
        readerOptions(options),
      );
      return done(await restoreRawStream(archive, options, stdout));
    }
    case 'pxar':
    case 'split-pxar': {
      if (options.target === '-') {
        if (resolved.kind === 'split-pxar') {
          // A server name picks one stream of the pair, which can be dumped as it is.
          const explicit = /\.(?:mpxar|ppxar)\.didx$/.test(options.archiveName)
            ? options.archiveName
            : undefined;
          if (explicit === undefined) {
            throw new BurrowError(
              'INVALID_ARGUMENT',
              `snapshot ${snapshot}: ${options.archiveName} is a split archive (${resolved.metadata} + ${resolved.payload}), which has no single pxar stream for standard output; restore it to a directory, or name ${resolved.metadata} or ${resolved.payload} to dump that stream`,
              { details: { snapshot, archive: options.archiveName } },
            );
          }
          const archive = await openArchiveReader(
            reader,
            manifest,
            explicit,
            crypt,
            readerOptions(options),
          );
          return done(await restoreRawStream(archive, options, stdout));
        }
        const archive = await openArchiveReader(
          reader,
          manifest,
          resolved.name,
          crypt,
          readerOptions(options),
        );
        return done(await restoreRawStream(archive, options, stdout));
      }
      const result = await restorePxar(reader, manifest, resolved, options, patterns);
      return done(result.bytes, result);
    }
  }
}
