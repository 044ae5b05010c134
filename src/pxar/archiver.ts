/**
 * The archiver: walks a directory tree on disk into a PxarEncoder the way the PBS client does
 * (pxar-format.md §10): depth-first, each directory's entries sorted by raw name bytes, exclusion
 * patterns from the command line and from `.pxarexclude` files, one file system unless told
 * otherwise, hardlinks as HARDLINK items, and an entry limit.
 *
 * A backup of a live system must not stop for one bad file, so everything that concerns a single
 * entry (it vanished, it is unreadable, it changed while being read, its xattrs cannot be read)
 * becomes a warning and the walk goes on. Fatal are only the errors that break the archive
 * itself: the encoder or the catalog failing, the entry limit, or the source not being a usable
 * directory.
 *
 * A file's size is announced before its contents (the PAYLOAD header), so a file that shrinks
 * while it is read is padded with zeros to the announced size, and one that grows is cut there,
 * as PBS does; both are reported.
 *
 * The file system is read with synchronous calls, as PBS's archiver (a thread of its own) does.
 * An entry costs about ten system calls (lstat, open, fstat, xattrs, two ioctls, reads, close);
 * as promises each went through libuv's thread pool and back, which made a tree of small files
 * cost several times its data (measured: 5,000 files, 1.7 s async against 0.3 s sync). Only the
 * contents of files longer than one 1 MiB piece are read asynchronously, one piece ahead, so
 * that disk reads of a file that is not cached overlap the chunking of the previous piece.
 *
 * The caller owns the encoder's ends: it reads the root's metadata (readRootMetadata), calls
 * PxarEncoder.begin (with excludePrelude(...) for split archives), createArchive, then finish().
 */
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  lstatSync,
  openSync,
  read,
  readFileSync,
  readSync,
  readdirSync,
  readlinkSync,
  statfsSync,
} from 'node:fs';
import type { BigIntStats, Dirent } from 'node:fs';
import { EventLoopTurns } from '../lib/event-loop-turns.js';
import { BurrowError } from '../lib/errors.js';
import type { CatalogWriter } from '../format/catalog.js';
import { S_IFMT, S_IFREG, compareNames, joinPath, kindOfMode } from './format.js';
import type { FileKind, Metadata } from './format.js';
import type { PxarEncoder } from './encoder.js';
import { FsMetadataReader, displayPath, splitDeviceNumber } from './fs-metadata.js';
import { MatchStack, formatExcludeLines, parsePattern, parsePatternFile } from './pattern.js';
import type { MatchPattern } from './pattern.js';

/** PBS's default: at most this many listed entries held at once (§10 item 1). */
export const DEFAULT_ENTRY_LIMIT = 1_048_576;
/** File contents are read and handed to the encoder in pieces of at most this size. */
export const READ_PIECE_SIZE = 1024 * 1024;

export const PXAREXCLUDE = '.pxarexclude';
export const PXAREXCLUDE_CLI = '.pxarexclude-cli';

/** statfs f_type of pseudo file systems whose contents are never archived (PBS's list). */
export const VIRTUAL_FS_MAGICS: ReadonlySet<number> = new Set([
  0x42494e4d, // binfmt_misc
  0x63677270, // cgroup2
  0x27e0eb, // cgroup
  0x62656570, // configfs
  0x64626720, // debugfs
  0x1cd1, // devpts
  0xde5e81e4, // efivarfs
  0x65735543, // fusectl
  0x958458f6, // hugetlbfs
  0x19800202, // mqueue
  0x6e667364, // nfsd
  0x9fa0, // proc
  0x6165676c, // pstore
  0x67596969, // rpc_pipefs
  0x73636673, // securityfs
  0xf97cff8c, // selinuxfs
  0x43415d53, // smackfs
  0x62656572, // sysfs
]);

export type ArchivedKind = FileKind | 'hardlink';

export interface ArchiveProgress {
  /** Entries started so far, this one included. */
  readonly entries: number;
  /** File content bytes read so far. */
  readonly bytes: number;
  /** The entry about to be archived, relative to the archive root. */
  readonly path: string;
}

export interface ArchiveOptions {
  /**
   * Command-line exclusion patterns, anchored at the source directory (strings are parsed with
   * parsePattern(…, 'exclude'): a leading '!' re-includes). In v1 archives they are also stored
   * as the root's `.pxarexclude-cli`; for v2 pass excludePrelude(patterns) to PxarEncoder.begin.
   */
  excludePatterns?: readonly (MatchPattern | string)[];
  /** Device numbers (st_dev) whose mount points are descended besides the source's own. */
  includeDevices?: readonly (bigint | number)[];
  /** Descend into every mounted file system (pseudo file systems such as proc stay empty). */
  allFileSystems?: boolean;
  /**
   * Most entries listed in the directories open at one time (the current directory and its
   * ancestors), as PBS counts; more is an error. Default DEFAULT_ENTRY_LIMIT.
   */
  entryLimit?: number;
  /** Receives the tree as it is walked; the caller starts and ends the archive's own directory. */
  catalog?: CatalogWriter;
  /** Something about one entry could not be archived as it is; `path` is the path on disk. */
  onWarning?: (message: string, path: string) => void;
  onProgress?: (progress: ArchiveProgress) => void;
  /** Leave out extended attributes, ACLs or file capabilities (PBS `--no-xattrs` ...). */
  noXattrs?: boolean;
  noAcls?: boolean;
  noFcaps?: boolean;
  /** Leave out block and character devices, FIFOs or sockets entirely (PBS `--no-device-nodes` ...). */
  noDevices?: boolean;
  noFifos?: boolean;
  noSockets?: boolean;
  /**
   * Split archives only (metadata change detection, pbs-protocol §9.4): asked for each regular
   * file (not for hardlinks to an earlier one) after its metadata is read and before its contents
   * are. A payload offset means "reuse": the callback has made sure the payload stream holds the
   * file's PAYLOAD item at that offset (by injecting old chunks and advancing the encoder's
   * payload position), so the file becomes a PAYLOAD_REF (encoder.addPayloadRef) and is not
   * read. undefined: the file is read and encoded as usual.
   */
  reusePayload?: (file: ReusableFile) => number | undefined | Promise<number | undefined>;
  /**
   * The encoder's sinks copy (or fully consume) every piece before their write() settles, so file
   * contents may be read into one reused buffer instead of fresh memory per 1 MiB piece.
   */
  reuseReadBuffer?: boolean;
  /** For tests only: called between a file's stat and the reading of its contents. */
  beforeFileRead?: (path: string) => void | Promise<void>;
}

/** A regular file offered to ArchiveOptions.reusePayload. */
export interface ReusableFile {
  /** Relative to the archive root, components joined by '/'. */
  readonly path: Uint8Array;
  readonly metadata: Metadata;
  readonly size: number;
}

export interface ArchiveStats {
  /** Archived entries by kind (the root directory not counted). */
  readonly entries: Record<ArchivedKind, number>;
  /** File content bytes read from disk (padding for shrunk files not counted). */
  readonly bytes: number;
  readonly warnings: number;
  /** Entries left out by exclusion patterns. */
  readonly excluded: number;
  /** Directories recorded empty because they are mount points of other (or pseudo) file systems. */
  readonly mountPointsSkipped: number;
}

/**
 * The v2 PRELUDE PBS writes for exclusion patterns: JSON `{"exclude-patterns": "<lines>"}`, or
 * undefined when there are none (then no prelude is written).
 */
export function excludePrelude(
  patterns: readonly (MatchPattern | string)[] | undefined,
): Uint8Array | undefined {
  const parsed = parsePatterns(patterns);
  if (parsed.length === 0) return undefined;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(formatExcludeLines(parsed));
  } catch (error) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'exclusion patterns must be valid UTF-8 to go into a split archive prelude',
      { cause: error },
    );
  }
  return new TextEncoder().encode(JSON.stringify({ 'exclude-patterns': text }));
}

function parsePatterns(patterns: readonly (MatchPattern | string)[] | undefined): MatchPattern[] {
  return (patterns ?? []).map((p) => (typeof p === 'string' ? parsePattern(p, 'exclude') : p));
}

const ERRNO_VANISHED = new Set(['ENOENT']);
const ERRNO_DENIED = new Set(['EACCES', 'EPERM']);
/** The entry is no longer the kind it was listed as (a file replaced by a symlink, ...). */
const ERRNO_CHANGED = new Set(['ELOOP', 'ENOTDIR', 'ENXIO', 'ENODEV', 'EISDIR']);

function codeOf(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const SLASH = Buffer.from('/');
const EXCLUDE_CLI_NAME = Buffer.from(PXAREXCLUDE_CLI);
const PXAREXCLUDE_NAME = Buffer.from(PXAREXCLUDE);
const ZEROS = new Uint8Array(READ_PIECE_SIZE);

interface Listed {
  readonly name: Buffer;
  readonly path: Buffer;
  readonly rel: Uint8Array;
  /**
   * From the directory entry's type. Files and directories are stat'ed once opened (fstat), as
   * they must be anyway, so the listing costs them no lstat; the others carry theirs in `stats`.
   */
  readonly kind: FileKind | undefined;
  readonly stats: BigIntStats | undefined;
}

/** The lstat an entry was listed with: every kind but files and directories has one. */
function listedStats(entry: Listed): BigIntStats {
  if (entry.stats === undefined)
    throw new BurrowError('INTERNAL', `${displayPath(entry.path)} was listed without its stat`);
  return entry.stats;
}

/** The source directory's metadata, for PxarEncoder.begin. */
// eslint-disable-next-line @typescript-eslint/require-await -- callers expect rejections, not throws
export async function readRootMetadata(
  source: string,
  onWarning: (message: string, path: string) => void = () => {},
): Promise<Metadata> {
  const stats = statSource(source);
  const fd = openDirectory(source);
  try {
    return new FsMetadataReader({ onWarning }).read(source, stats, fd);
  } finally {
    closeSync(fd);
  }
}

function statSource(source: string): BigIntStats {
  let stats: BigIntStats;
  try {
    stats = lstatSync(source, { bigint: true });
  } catch (error) {
    throw new BurrowError(
      codeOf(error) === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
      `cannot archive ${source}: ${messageOf(error)}`,
      { details: { path: source, errnoName: codeOf(error) }, cause: error },
    );
  }
  if (!stats.isDirectory())
    throw new BurrowError('INVALID_ARGUMENT', `cannot archive ${source}: not a directory`, {
      details: { path: source },
    });
  return stats;
}

function openDirectory(path: string | Buffer): number {
  return openNoAtime(
    path,
    fsConstants.O_RDONLY |
      fsConstants.O_DIRECTORY |
      fsConstants.O_NOFOLLOW |
      fsConstants.O_NONBLOCK,
  );
}

/** Opens with O_NOATIME, which only the owner (or root) may use; others retry without it. */
function openNoAtime(path: string | Buffer, flags: number): number {
  try {
    return openSync(path, flags | fsConstants.O_NOATIME);
  } catch (error) {
    if (codeOf(error) !== 'EPERM') throw error;
    return openSync(path, flags);
  }
}

/**
 * Archives the contents of `source` into `encoder`, whose root directory the caller has begun
 * with the metadata of `source` (readRootMetadata). Does not call encoder.finish().
 */
export async function createArchive(
  source: string,
  encoder: PxarEncoder,
  options: ArchiveOptions = {},
): Promise<ArchiveStats> {
  const rootStats = statSource(source);
  const limit = options.entryLimit ?? DEFAULT_ENTRY_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 0)
    throw new BurrowError('INVALID_ARGUMENT', `entry limit ${String(limit)} is invalid`, {
      details: { entryLimit: limit },
    });
  let rootFsType: number;
  try {
    rootFsType = Number(statfsSync(source, { bigint: true }).type);
  } catch (error) {
    throw new BurrowError('IO_ERROR', `cannot archive ${source}: statfs: ${messageOf(error)}`, {
      details: { path: source },
      cause: error,
    });
  }
  if (VIRTUAL_FS_MAGICS.has(rootFsType))
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `refusing to archive ${source}: it is on a pseudo file system (type 0x${rootFsType.toString(16)})`,
      { details: { path: source, fsType: rootFsType } },
    );
  const walker = new Walker(source, rootStats, encoder, options, limit);
  await walker.run();
  return walker.result();
}

class Walker {
  private readonly encoder: PxarEncoder;
  private readonly options: ArchiveOptions;
  private readonly limit: number;
  private readonly source: Buffer;
  private readonly cliPatterns: MatchPattern[];
  private readonly matcher: MatchStack;
  private readonly reader: FsMetadataReader;
  private readonly deviceSet: Set<bigint> | undefined;
  private readonly hardlinks = new Map<string, { path: Uint8Array; offset: number }>();
  private currentDev: bigint;
  /** Turns of the event loop for the workers' replies (see EventLoopTurns). */
  private readonly turns = new EventLoopTurns();
  private open = 0;
  private started = 0;
  private bytes = 0;
  private warnings = 0;
  private excluded = 0;
  private mountPointsSkipped = 0;
  private readonly readBuffers: [Buffer | undefined, Buffer | undefined] = [undefined, undefined];
  private readonly counts: Record<ArchivedKind, number> = {
    directory: 0,
    file: 0,
    symlink: 0,
    hardlink: 0,
    'block-device': 0,
    'char-device': 0,
    fifo: 0,
    socket: 0,
  };

  constructor(
    source: string,
    rootStats: BigIntStats,
    encoder: PxarEncoder,
    options: ArchiveOptions,
    limit: number,
  ) {
    this.encoder = encoder;
    this.options = options;
    this.limit = limit;
    this.source = Buffer.from(source);
    this.cliPatterns = parsePatterns(options.excludePatterns);
    this.matcher = new MatchStack(this.cliPatterns);
    this.reader = new FsMetadataReader({
      onWarning: (m, p) => this.warn(m, p),
      skip: { xattrs: options.noXattrs, acls: options.noAcls, fcaps: options.noFcaps },
    });
    this.currentDev = rootStats.dev;
    this.deviceSet = options.allFileSystems
      ? undefined
      : new Set([rootStats.dev, ...(options.includeDevices ?? []).map((d) => BigInt(d))]);
  }

  result(): ArchiveStats {
    return {
      entries: { ...this.counts },
      bytes: this.bytes,
      warnings: this.warnings,
      excluded: this.excluded,
      mountPointsSkipped: this.mountPointsSkipped,
    };
  }

  async run(): Promise<void> {
    await this.directoryContents(this.source, new Uint8Array(0), true);
  }

  private warn(message: string, path: string | Uint8Array): void {
    this.warnings++;
    this.options.onWarning?.(message, displayPath(path));
  }

  /** Archives the children of the directory at `path` (`rel` from the archive root). */
  private async directoryContents(path: Buffer, rel: Uint8Array, isRoot: boolean): Promise<void> {
    const dirents = this.readEntries(path);
    // Only a listed .pxarexclude is read: trying every directory costs an ENOENT error each.
    this.matcher.push(
      rel,
      dirents.some((d) => d.name.equals(PXAREXCLUDE_NAME)) ? this.readExcludeFile(path) : [],
    );
    const openBefore = this.open;
    try {
      const list = this.list(path, rel, isRoot, dirents);
      for (const entry of list) await this.entry(entry);
      if (isRoot && this.cliPatterns.length > 0 && this.encoder.formatVersion === 1)
        await this.addExcludeCli();
    } finally {
      this.open = openBefore;
      this.matcher.pop();
    }
  }

  /** The patterns of the directory's `.pxarexclude`; a file that cannot be read is a warning. */
  private readExcludeFile(dir: Buffer): MatchPattern[] {
    const path = Buffer.concat([dir, SLASH, PXAREXCLUDE_NAME]);
    let content: Buffer;
    try {
      content = readFileSync(path);
    } catch (error) {
      if (codeOf(error) !== 'ENOENT')
        this.warn(`ignoring ${PXAREXCLUDE}: ${messageOf(error)}`, path);
      return [];
    }
    return parsePatternFile(content, displayPath(path), {
      onError: (error) => this.warn(`ignoring a bad pattern: ${error.message}`, path),
    });
  }

  /**
   * The directory's entries with their types (Node lstat()s those whose type the file system
   * does not report); one that cannot be read is archived empty, with a warning.
   */
  private readEntries(path: Buffer): Dirent<Buffer>[] {
    try {
      return readdirSync(path, { encoding: 'buffer', withFileTypes: true });
    } catch (error) {
      this.warn(`cannot read the directory, archived empty: ${messageOf(error)}`, path);
      return [];
    }
  }

  /** The directory's entries that are not excluded, sorted by raw name bytes. */
  private list(
    path: Buffer,
    rel: Uint8Array,
    isRoot: boolean,
    dirents: Dirent<Buffer>[],
  ): Listed[] {
    const listed: Listed[] = [];
    for (const dirent of dirents) {
      const name = dirent.name;
      // A real root .pxarexclude-cli would clash with the one the archiver writes (§10 item 5).
      if (isRoot && name.equals(EXCLUDE_CLI_NAME)) continue;
      const childPath = Buffer.concat([path, SLASH, name]);
      let kind: FileKind | undefined = dirent.isFile()
        ? 'file'
        : dirent.isDirectory()
          ? 'directory'
          : undefined;
      let stats: BigIntStats | undefined;
      if (kind === undefined) {
        try {
          stats = lstatSync(childPath, { bigint: true, throwIfNoEntry: false });
        } catch (error) {
          this.warn(`cannot stat, skipped: ${messageOf(error)}`, childPath);
          continue;
        }
        if (stats === undefined) {
          this.warn('file vanished before it could be archived', childPath);
          continue;
        }
        kind = kindOfMode(Number(stats.mode));
      }
      const childRel = joinPath(rel, name);
      if (this.matcher.match(childRel, kind === 'directory') === 'exclude') {
        this.excluded++;
        continue;
      }
      this.open++;
      if (this.open > this.limit)
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `more than ${this.limit} entries in the open directories at ${displayPath(childPath)}: raise the entry limit`,
          { details: { entryLimit: this.limit, path: displayPath(childPath) } },
        );
      listed.push({ name, path: childPath, rel: childRel, kind, stats });
    }
    return listed.sort((a, b) => compareNames(a.name, b.name));
  }

  private async entry(entry: Listed): Promise<void> {
    await this.turns.maybeYield();
    this.started++;
    this.options.onProgress?.({
      entries: this.started,
      bytes: this.bytes,
      path: displayPath(entry.rel),
    });
    const kind = entry.kind;
    switch (kind) {
      case 'file':
        return this.file(entry);
      case 'directory':
        return this.directory(entry);
      case 'symlink':
        return this.symlink(entry);
      case 'block-device':
      case 'char-device':
      case 'fifo':
      case 'socket':
        if (this.leftOut(kind)) {
          this.excluded++;
          return;
        }
        return this.special(entry, kind);
      case undefined:
        this.warn(
          `unknown file type 0o${(Number(entry.stats?.mode ?? 0) & S_IFMT).toString(8)}, skipped`,
          entry.path,
        );
        return;
    }
  }

  private leftOut(kind: 'block-device' | 'char-device' | 'fifo' | 'socket'): boolean {
    if (kind === 'fifo') return this.options.noFifos === true;
    if (kind === 'socket') return this.options.noSockets === true;
    return this.options.noDevices === true;
  }

  /** Warns about an entry that could not be opened or read; false if the error is not such. */
  private skipped(error: unknown, path: Buffer, what: string): boolean {
    const code = codeOf(error) ?? '';
    if (ERRNO_VANISHED.has(code)) this.warn('file vanished before it could be archived', path);
    else if (ERRNO_DENIED.has(code)) this.warn(`${what}: access denied, skipped`, path);
    else if (ERRNO_CHANGED.has(code))
      this.warn(`${what}: the entry changed its type, skipped`, path);
    else return false;
    return true;
  }

  private async file(entry: Listed): Promise<void> {
    let fd: number;
    try {
      fd = openNoAtime(
        entry.path,
        fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK,
      );
    } catch (error) {
      if (this.skipped(error, entry.path, 'cannot open the file')) return;
      throw ioError('open', entry.path, error);
    }
    try {
      const opened = fstatSync(fd, { bigint: true });
      if ((Number(opened.mode) & S_IFMT) !== S_IFREG) {
        this.warn('the entry is no longer a regular file, skipped', entry.path);
        return;
      }
      const linkKey = opened.nlink > 1n ? `${opened.dev}:${opened.ino}` : undefined;
      const first = linkKey === undefined ? undefined : this.hardlinks.get(linkKey);
      if (first !== undefined) {
        await this.encoder.addHardlink(entry.name, first.path, first.offset);
        this.options.catalog?.addHardlink(entry.name);
        this.counts.hardlink++;
        return;
      }
      const metadata = this.reader.read(entry.path, opened, fd);
      const size = Number(opened.size);
      this.options.catalog?.addFile(entry.name, size, metadata.stat.mtime.secs);
      const reuse =
        this.options.reusePayload !== undefined && this.encoder.formatVersion === 2
          ? await this.options.reusePayload({ path: entry.rel, metadata, size })
          : undefined;
      if (reuse !== undefined) {
        const offset = await this.encoder.addPayloadRef(entry.name, metadata, size, reuse);
        this.counts.file++;
        if (linkKey !== undefined) this.hardlinks.set(linkKey, { path: entry.rel, offset });
        return;
      }
      await this.options.beforeFileRead?.(displayPath(entry.path));
      const reading = { changed: false };
      const offset = await this.encoder.addFile(
        entry.name,
        metadata,
        size,
        this.contents(fd, size, entry.path, reading),
      );
      this.counts.file++;
      if (linkKey !== undefined) this.hardlinks.set(linkKey, { path: entry.rel, offset });
      if (!reading.changed) {
        const after = fstatSync(fd, { bigint: true });
        if (after.mtimeNs !== opened.mtimeNs || after.size !== opened.size)
          this.warn(
            'file changed while it was read; the archived copy may be inconsistent',
            entry.path,
          );
      }
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Where a piece of file content is read to: one of two shared buffers when the sinks copy
   * (two, so that a piece can be read while the previous one is taken), else fresh memory.
   */
  private pieceBuffer(length: number, which: 0 | 1 = 0): Buffer {
    if (this.options.reuseReadBuffer !== true) return Buffer.allocUnsafe(length);
    return (this.readBuffers[which] ??= Buffer.allocUnsafeSlow(READ_PIECE_SIZE + 1));
  }

  /**
   * Exactly `size` bytes of the file: zeros after a premature end or a read error, nothing past
   * `size`. Never throws into the encoder, which would leave a broken item behind. The read that
   * reaches the announced end asks for one byte more, so a file that grew shows without another
   * call. Files of one piece are read synchronously (the encoder then costs no promise per piece);
   * longer ones with one read ahead on libuv's thread pool, so that a file that is not in the
   * page cache is read from the disk while the previous piece is chunked.
   */
  private contents(
    fd: number,
    size: number,
    path: Buffer,
    reading: { changed: boolean },
  ): Iterable<Uint8Array> | AsyncIterable<Uint8Array> {
    return size > READ_PIECE_SIZE
      ? this.contentsAhead(fd, size, path, reading)
      : this.contentsNow(fd, size, path, reading);
  }

  private *contentsNow(
    fd: number,
    size: number,
    path: Buffer,
    reading: { changed: boolean },
  ): Generator<Uint8Array> {
    let position = 0;
    /** The last read asked past `size` and found the end there: no growth check needed. */
    let endSeen = false;
    while (position < size) {
      const left = size - position;
      const want = left < READ_PIECE_SIZE ? left + 1 : READ_PIECE_SIZE;
      const buffer = this.pieceBuffer(want);
      let got: number;
      try {
        got = readSync(fd, buffer, 0, want, position);
      } catch (error) {
        this.readFailed(error, position, size, path, reading);
        break;
      }
      const piece = this.piece(got, want, position, size, path, reading);
      if (piece === undefined) break;
      if (piece.endSeen) endSeen = true;
      position += piece.length;
      yield buffer.subarray(0, piece.length);
    }
    yield* this.contentsEnd(fd, size, position, endSeen, path, reading);
  }

  private async *contentsAhead(
    fd: number,
    size: number,
    path: Buffer,
    reading: { changed: boolean },
  ): AsyncGenerator<Uint8Array> {
    let which: 0 | 1 = 0;
    const request = (at: number): { want: number; buffer: Buffer; done: Promise<number> } => {
      const left = size - at;
      const want = left < READ_PIECE_SIZE ? left + 1 : READ_PIECE_SIZE;
      const buffer = this.pieceBuffer(want, which);
      which = which === 0 ? 1 : 0;
      return { want, buffer, done: readAt(fd, buffer, want, at) };
    };
    let position = 0;
    let endSeen = false;
    let next: ReturnType<typeof request> | undefined = request(0);
    try {
      while (next !== undefined) {
        const current = next;
        next = undefined;
        let got: number;
        try {
          got = await current.done;
        } catch (error) {
          this.readFailed(error, position, size, path, reading);
          break;
        }
        const piece = this.piece(got, current.want, position, size, path, reading);
        if (piece === undefined) break;
        if (piece.endSeen) endSeen = true;
        position += piece.length;
        // The next read goes to the other buffer while the encoder takes this one.
        if (position < size) next = request(position);
        yield current.buffer.subarray(0, piece.length);
      }
    } finally {
      // Never leave a read running on a descriptor the caller is about to close.
      if (next !== undefined) await next.done.catch(() => 0);
    }
    yield* this.contentsEnd(fd, size, position, endSeen, path, reading);
  }

  /** Checks a read of `got` bytes at `position`: the bytes to use, or undefined to stop (warned). */
  private piece(
    got: number,
    want: number,
    position: number,
    size: number,
    path: Buffer,
    reading: { changed: boolean },
  ): { length: number; endSeen: boolean } | undefined {
    const left = size - position;
    if (got === 0) {
      reading.changed = true;
      this.warn(
        `file shrank while it was read (${position} of ${size} bytes), padded with zeros`,
        path,
      );
      return undefined;
    }
    let length = got;
    if (got > left) {
      reading.changed = true;
      this.warn(`file grew while it was read; archived its first ${size} bytes`, path);
      length = left;
    }
    this.bytes += length;
    return { length, endSeen: want > left && got === left };
  }

  private readFailed(
    error: unknown,
    position: number,
    size: number,
    path: Buffer,
    reading: { changed: boolean },
  ): void {
    reading.changed = true;
    this.warn(
      `read error at offset ${position}, padding the remaining ${size - position} bytes with zeros: ${messageOf(error)}`,
      path,
    );
  }

  /** Zeros up to `size` after a premature end, and the check for a file that grew. */
  private *contentsEnd(
    fd: number,
    size: number,
    position: number,
    endSeen: boolean,
    path: Buffer,
    reading: { changed: boolean },
  ): Generator<Uint8Array> {
    for (let at = position; at < size; at += READ_PIECE_SIZE)
      yield ZEROS.subarray(0, Math.min(READ_PIECE_SIZE, size - at));
    if (!reading.changed && !endSeen) {
      try {
        if (readSync(fd, Buffer.alloc(1), 0, 1, size) > 0) {
          reading.changed = true;
          this.warn(`file grew while it was read; archived its first ${size} bytes`, path);
        }
      } catch {
        // The contents up to `size` are complete; whether more followed does not matter then.
      }
    }
  }

  private async directory(entry: Listed): Promise<void> {
    let fd: number;
    try {
      fd = openDirectory(entry.path);
    } catch (error) {
      if (this.skipped(error, entry.path, 'cannot open the directory')) return;
      throw ioError('open', entry.path, error);
    }
    let stats: BigIntStats;
    let metadata: Metadata;
    try {
      stats = fstatSync(fd, { bigint: true });
      metadata = this.reader.read(entry.path, stats, fd);
    } finally {
      closeSync(fd);
    }
    await this.encoder.enterDirectory(entry.name, metadata);
    this.options.catalog?.startDirectory(entry.name);
    this.counts.directory++;
    const outerDev = this.currentDev;
    try {
      if (this.descends(entry.path, stats.dev)) {
        this.currentDev = stats.dev;
        await this.directoryContents(entry.path, entry.rel, false);
      } else {
        this.mountPointsSkipped++;
      }
    } finally {
      this.currentDev = outerDev;
    }
    await this.encoder.leaveDirectory();
    await this.options.catalog?.endDirectory();
  }

  /** Whether to archive a directory's contents: not for mount points outside the device set. */
  private descends(path: Buffer, dev: bigint): boolean {
    if (dev === this.currentDev) return true;
    let fsType: number | undefined;
    try {
      fsType = Number(statfsSync(path, { bigint: true }).type);
    } catch (error) {
      this.warn(`statfs failed: ${messageOf(error)}`, path);
    }
    if (fsType !== undefined && VIRTUAL_FS_MAGICS.has(fsType)) return false;
    return this.deviceSet === undefined || this.deviceSet.has(dev);
  }

  private async symlink(entry: Listed): Promise<void> {
    let target: Buffer;
    try {
      target = readlinkSync(entry.path, { encoding: 'buffer' });
    } catch (error) {
      const code = codeOf(error);
      if (code === 'EINVAL') {
        this.warn('the entry is no longer a symlink, skipped', entry.path);
        return;
      }
      if (this.skipped(error, entry.path, 'cannot read the symlink')) return;
      throw ioError('readlink', entry.path, error);
    }
    const metadata = this.reader.read(entry.path, listedStats(entry));
    await this.encoder.addSymlink(entry.name, metadata, target);
    this.options.catalog?.addSymlink(entry.name);
    this.counts.symlink++;
  }

  private async special(
    entry: Listed,
    kind: 'block-device' | 'char-device' | 'fifo' | 'socket',
  ): Promise<void> {
    const stats = listedStats(entry);
    const metadata = this.reader.read(entry.path, stats);
    const catalog = this.options.catalog;
    switch (kind) {
      case 'block-device':
      case 'char-device': {
        const { major, minor } = splitDeviceNumber(stats.rdev);
        await this.encoder.addDevice(entry.name, metadata, major, minor);
        if (kind === 'block-device') catalog?.addBlockDevice(entry.name);
        else catalog?.addCharDevice(entry.name);
        break;
      }
      case 'fifo':
        await this.encoder.addFifo(entry.name, metadata);
        catalog?.addFifo(entry.name);
        break;
      case 'socket':
        await this.encoder.addSocket(entry.name, metadata);
        catalog?.addSocket(entry.name);
        break;
    }
    this.counts[kind]++;
  }

  /** The v1 root's synthetic `.pxarexclude-cli` (§10 item 5), after the sorted entries as in PBS. */
  private async addExcludeCli(): Promise<void> {
    const content = formatExcludeLines(this.cliPatterns);
    // Owned by the user running the backup, so that user can restore the snapshot.
    const metadata: Metadata = {
      stat: {
        mode: S_IFREG | 0o600,
        flags: 0,
        uid: process.getuid?.() ?? 0,
        gid: process.getgid?.() ?? 0,
        mtime: { secs: 0, nanos: 0 },
      },
      xattrs: [],
      acl: { users: [], groups: [], defaultUsers: [], defaultGroups: [] },
    };
    this.options.catalog?.addFile(EXCLUDE_CLI_NAME, content.length, 0);
    await this.encoder.addFile(EXCLUDE_CLI_NAME, metadata, content.length, [content]);
    this.counts.file++;
  }
}

/** pread on libuv's thread pool. */
function readAt(fd: number, buffer: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buffer, 0, length, position, (error, bytesRead) => {
      if (error) reject(error);
      else resolve(bytesRead);
    });
  });
}

function ioError(syscall: string, path: Buffer, error: unknown): BurrowError {
  return new BurrowError(
    'IO_ERROR',
    `${syscall} ${displayPath(path)} failed: ${messageOf(error)}`,
    {
      details: { syscall, path: displayPath(path), errnoName: codeOf(error) },
      cause: error,
    },
  );
}
