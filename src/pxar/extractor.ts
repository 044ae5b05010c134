/**
 * Restoring a pxar stream to a directory (`pxar extract`, `proxmox-backup-client restore`).
 *
 * Safety: nothing is ever written outside `target`, whatever the archive says.
 * - Every entry is created inside the directory on top of our stack, reached through that
 *   directory's fd (/proc/self/fd/N/name), never through a path that could pass a symlink; the
 *   name must be one valid component and the entry's path must be the stack's path plus it.
 * - Directories are made with mkdir and then opened O_DIRECTORY|O_NOFOLLOW: an existing symlink
 *   where a directory goes is refused, never entered. Files are created O_CREAT|O_EXCL|O_NOFOLLOW
 *   (after unlinking what is there when overwriting is allowed), symlinks and device nodes by
 *   calls that never follow the last component. Directories are never removed.
 * - Hardlink targets are walked component by component from the restore root with
 *   O_DIRECTORY|O_NOFOLLOW and must end at a regular file.
 * - A symlink's target text is restored as it is (it may point anywhere: that is archive
 *   content), but nothing the extractor does ever goes through a symlink.
 *
 * Metadata (fs-apply.ts) goes on after the content; for directories when the decoder reports
 * the directory's end (post-order), so creating children does not disturb the directory's mtime
 * and read-only directories can be filled. The restore root gets the archive root's metadata.
 */
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  ftruncateSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  type BigIntStats,
} from 'node:fs';
import { EventLoopTurns } from '../lib/event-loop-turns.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { getFsFlags, mknod, setFsFlags } from '../lib/native-fs.js';
import type { DecoderEvent, PxarDecoder } from './decoder.js';
import { compareNames, fileNameProblem, joinPath, type Entry, type Metadata } from './format.js';
import {
  errnoOf,
  initialSpecialMode,
  ioFailure,
  kindOfStats,
  MetadataApplier,
  procFdAvailable,
  procFdPath,
  type ExtractWarning,
} from './fs-apply.js';
import { ExtractSelector, MatchList, type MatchPattern } from './pattern.js';

export type { ExtractWarning, WarningKind } from './fs-apply.js';

/** The events the extractor reads (PxarDecoder's). */
export type ExtractEvent = DecoderEvent;

/**
 * What extractArchive needs of a decoder: a PxarDecoder, or anything with its next() and
 * contents() (tests feed hostile event sequences a real decoder would refuse).
 */
export type ExtractSource = Pick<PxarDecoder, 'next' | 'contents'>;

/** Which existing entries the archive's entries may replace (PBS --overwrite-*). */
export type OverwriteKind = 'files' | 'symlinks' | 'hardlinks';

export interface ExtractOptions {
  /**
   * Restore only what these patterns select (PBS `--pattern`, default type include): matching
   * entries, everything below a matching directory, and the directories on the way to them.
   */
  readonly patterns?: MatchList | readonly MatchPattern[];
  /**
   * Replace existing non-directory entries by archive entries of these kinds ('all' = the
   * three; PBS --overwrite). Default 'none': an existing entry is an ALREADY_EXISTS error.
   * Directories are never replaced; device nodes, FIFOs and sockets never replace anything.
   */
  readonly overwrite?: 'none' | 'all' | readonly OverwriteKind[];
  /** Restore into directories that exist already (merge); without it they are ALREADY_EXISTS. */
  readonly allowExistingDirs?: boolean;
  readonly noXattrs?: boolean;
  readonly noAcls?: boolean;
  readonly noFcaps?: boolean;
  /** Skip block and character devices. */
  readonly noDevices?: boolean;
  readonly noFifos?: boolean;
  readonly noSockets?: boolean;
  /** Turn every warning into an error that stops the restore. */
  readonly strict?: boolean;
  /** Metadata or entries that could not be restored; the restore goes on. */
  readonly onWarning?: (warning: ExtractWarning) => void;
  /** After each restored entry, and after each piece of file content. */
  readonly onProgress?: (progress: ExtractProgress) => void;
  /** Stops the restore with TASK_ABORTED between two steps. */
  readonly signal?: AbortSignal;
  /**
   * Whether ownership can be restored; default: running as root. For tests of the
   * unprivileged policy (see docs); leave unset otherwise.
   */
  readonly privileged?: boolean;
  /**
   * Split archives only (a decoder of FORMAT_VERSION 2, whose file entries are PAYLOAD_REFs):
   * file contents are written by this writer into the files the extractor creates, instead of
   * being read through the decoder. The extractor goes on with the next entries meanwhile; a
   * file's metadata is applied, and its directory's, once its contents are written.
   */
  readonly contentWriter?: FileContentWriter;
}

/**
 * Writes the contents of a split archive's files (ExtractOptions.contentWriter): the PAYLOAD at
 * `payloadOffset` of the payload stream (its header must say `size`) goes into `fd` from
 * position 0, leaving holes for zero blocks. `fd` (a new, empty file) stays open until the promise
 * settles; its size is set afterwards. Work may be gathered until a later write() or flush().
 */
export interface FileContentWriter {
  write(fd: number, payloadOffset: number, size: number, display: string): Promise<void>;
  /** Starts everything gathered so far. */
  flush(): void;
  /** Whether work was started that has not finished. */
  readonly busy: boolean;
  /** Resolves when some started work finishes (at once when none is started). */
  progress(): Promise<void>;
}

/**
 * Files whose contents a FileContentWriter may be writing at one time: a quarter of the soft
 * limit of open files (each holds an fd), at most 4096, at least 64. The more, the further the
 * extractor gets ahead of a run of large files (creating the small ones that follow) while the
 * workers write them.
 */
export function pendingFileLimit(): number {
  let soft: number | undefined;
  try {
    const line = readFileSync('/proc/self/limits', 'latin1')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const value = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    soft = value === 'unlimited' ? Infinity : Number(value);
  } catch {
    soft = undefined; // no /proc: assume the common 1024
  }
  const quarter = Math.floor((soft !== undefined && soft > 0 ? soft : 1024) / 4);
  return Math.max(64, Math.min(4096, Number.isFinite(quarter) ? quarter : 4096));
}

export interface ExtractProgress {
  /** Entries restored so far (the root not counted). */
  readonly entries: number;
  /** File content bytes written so far. */
  readonly bytes: number;
  /** The archive path being restored, for display. */
  readonly path: string;
}

export interface ExtractStats {
  /** Entries created below the root (directories included). */
  entries: number;
  directories: number;
  files: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  fifos: number;
  sockets: number;
  /** File content bytes restored (holes included). */
  bytes: number;
  /** Non-directory entries not restored: not selected by the patterns, or excluded by a no* option, or not creatable (warned). */
  skipped: number;
  /** Warnings reported through onWarning. */
  warnings: number;
  /** Repeats of once-per-restore warnings that were counted but not reported again. */
  suppressedWarnings: number;
  /** Entries whose owner could not be restored because we are not root. */
  ownershipSkipped: number;
}

const SLASH = Buffer.from('/');
const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);
const O_DIR_NOFOLLOW = fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW;
const O_NEW_FILE =
  fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

interface DirState {
  /** Archive path ('' for the root). */
  readonly path: Uint8Array;
  readonly display: string;
  readonly name: Uint8Array;
  readonly metadata: Metadata;
  /** Real path, used only when /proc is not available (and for the root). */
  readonly real: Buffer;
  /** Open while the directory exists on disk (created or merged); undefined = not (yet) created. */
  fd: number | undefined;
  /** The directory it is in (undefined for the root). */
  readonly parent: DirState | undefined;
  /**
   * Files inside whose contents are still being written, and subdirectories waiting for theirs:
   * the directory's metadata (and its close) waits until none is left.
   */
  pending: number;
  /** Its end was reached while `pending` was not 0. */
  left: boolean;
}

/** A path for messages and progress: UTF-8 where it decodes, other bytes as \xNN; '/' for the root. */
export function displayArchivePath(path: Uint8Array): string {
  if (path.length === 0) return '/';
  const text = new TextDecoder('utf-8', { fatal: false }).decode(path);
  if (!text.includes('\ufffd')) return text;
  return Array.from(path, (b) =>
    b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`,
  ).join('');
}

function unsafe(
  display: string,
  message: string,
  details: Record<string, unknown> = {},
): BurrowError {
  return new BurrowError('PXAR_UNSAFE_PATH', `${display}: ${message}`, {
    details: { path: display, ...details },
  });
}

function alreadyExists(display: string, what: string): BurrowError {
  return new BurrowError(
    'ALREADY_EXISTS',
    `${display}: ${what} exists already in the restore target`,
    {
      details: { path: display },
    },
  );
}

function overwriteSet(option: ExtractOptions['overwrite']): ReadonlySet<OverwriteKind> {
  if (option === undefined || option === 'none') return new Set();
  if (option === 'all') return new Set(['files', 'symlinks', 'hardlinks']);
  for (const kind of option)
    if (kind !== 'files' && kind !== 'symlinks' && kind !== 'hardlinks')
      throw new BurrowError('INVALID_ARGUMENT', `unknown overwrite kind ${JSON.stringify(kind)}`);
  return new Set(option);
}

/**
 * Writes file content, leaving holes for 4 KiB blocks (aligned in the file) that are all zero.
 * A block split across two content pieces is carried over, so piece boundaries do not matter.
 * Synchronous writes, as everything else here: a file costs a few system calls, which as
 * promises each went through libuv's thread pool and back (most of a restore of small files).
 */
class SparseWriter {
  /** Bytes of content consumed. */
  position = 0;
  /** End of the last byte range written. */
  private written = 0;
  private carry: Buffer | undefined;

  constructor(private readonly fd: number) {}

  write(piece: Uint8Array): void {
    let data = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    let start = this.position;
    this.position += piece.byteLength;
    if (this.carry !== undefined) {
      // Complete the carried block from the front of this piece (pieces end anywhere, at chunk
      // ends): copying 4 KiB, not the whole piece, keeps the rest block-aligned in place.
      const carry = this.carry;
      const need = BLOCK - carry.length;
      if (data.length < need) {
        this.carry = Buffer.concat([carry, data]);
        return;
      }
      this.carry = undefined;
      const blockStart = start - carry.length;
      const block = Buffer.concat([carry, data.subarray(0, need)]);
      if (!block.equals(ZERO_BLOCK)) this.writeAll(block, blockStart);
      data = data.subarray(need);
      start = blockStart + BLOCK;
    }
    // `start` is block-aligned except for the first piece of a file not starting at 0 (never).
    const whole = data.length - (data.length % BLOCK);
    let runStart = -1;
    for (let at = 0; at < whole; at += BLOCK) {
      // compare() with ranges: no Buffer object per block (a 4 GiB file has a million blocks).
      const zero = ZERO_BLOCK.compare(data, at, at + BLOCK) === 0;
      if (!zero && runStart < 0) runStart = at;
      if (zero && runStart >= 0) {
        this.writeAll(data.subarray(runStart, at), start + runStart);
        runStart = -1;
      }
    }
    if (runStart >= 0) this.writeAll(data.subarray(runStart, whole), start + runStart);
    // The remainder is copied: the decoder may reuse its buffer for the next piece.
    if (whole < data.length) this.carry = Buffer.from(data.subarray(whole));
  }

  finish(size: number): void {
    if (this.carry !== undefined && !this.carry.equals(ZERO_BLOCK.subarray(0, this.carry.length)))
      this.writeAll(this.carry, this.position - this.carry.length);
    this.carry = undefined;
    // Trailing holes exist only once the size is set (the file was created empty).
    if (this.written !== size) ftruncateSync(this.fd, size);
  }

  private writeAll(data: Buffer, position: number): void {
    let done = 0;
    while (done < data.length)
      done += writeSync(this.fd, data, done, data.length - done, position + done);
    this.written = position + data.length;
  }
}

/**
 * Restores the archive `decoder` reads into the directory `target` (created if missing, mode
 * 0700 until the archive root's metadata is applied at the end). Resolves with what was done;
 * rejects on a corrupt archive, an unsafe entry, an existing entry in the way or an I/O error,
 * after closing everything it opened.
 */
export async function extractArchive(
  decoder: ExtractSource,
  target: string,
  options: ExtractOptions = {},
): Promise<ExtractStats> {
  const extractor = new Extractor(decoder, target, options);
  try {
    return await extractor.run();
  } finally {
    extractor.closeAll();
  }
}

class Extractor {
  private readonly stats: ExtractStats = {
    entries: 0,
    directories: 0,
    files: 0,
    symlinks: 0,
    hardlinks: 0,
    devices: 0,
    fifos: 0,
    sockets: 0,
    bytes: 0,
    skipped: 0,
    warnings: 0,
    suppressedWarnings: 0,
    ownershipSkipped: 0,
  };
  private readonly stack: DirState[] = [];
  /** Directories left while files inside were still being written (still open). */
  private readonly waitingDirs = new Set<DirState>();
  /** Files whose contents the contentWriter is writing, and who waits for one to finish. */
  private pendingFiles = 0;
  private readonly pendingLimit = pendingFileLimit();
  /** Turns of the event loop for the workers' replies (see EventLoopTurns). */
  private readonly turns = new EventLoopTurns();
  private fileWaiters: Array<() => void> = [];
  /** The first failure of a file written in the background, thrown at the next step. */
  private failure: BurrowError | undefined;
  private readonly applier: MetadataApplier;
  private readonly selector: ExtractSelector;
  private readonly overwrite: ReadonlySet<OverwriteKind>;
  private readonly useProc = procFdAvailable();

  constructor(
    private readonly decoder: ExtractSource,
    private readonly target: string,
    private readonly options: ExtractOptions,
  ) {
    this.overwrite = overwriteSet(options.overwrite);
    const patterns =
      options.patterns instanceof MatchList ? options.patterns.patterns : (options.patterns ?? []);
    this.selector = new ExtractSelector(patterns);
    this.applier = new MetadataApplier({
      xattrs: options.noXattrs !== true,
      acls: options.noAcls !== true,
      fcaps: options.noFcaps !== true,
      strict: options.strict === true,
      ...(options.onWarning === undefined ? {} : { onWarning: options.onWarning }),
      ...(options.privileged === undefined ? {} : { privileged: options.privileged }),
    });
  }

  closeAll(): void {
    for (const dir of [...this.stack, ...this.waitingDirs]) {
      if (dir.fd !== undefined) {
        try {
          closeSync(dir.fd);
        } catch {
          // Nothing useful to do: the restore is failing already.
        }
        dir.fd = undefined;
      }
    }
    this.stack.length = 0;
    this.waitingDirs.clear();
  }

  async run(): Promise<ExtractStats> {
    const first = await this.nextEvent();
    if (
      first?.type !== 'entry' ||
      first.entry.body.kind !== 'directory' ||
      first.entry.path.length !== 0
    )
      throw new BurrowError('PXAR_BAD_ITEM', 'the archive does not start with its root directory', {
        details: { first: first?.type === 'entry' ? first.entry.body.kind : first?.type },
      });
    this.openRoot(requireMetadata(first.entry));
    try {
      await this.extractAll();
      await this.drain();
      this.throwIfFailed();
    } catch (error) {
      await this.drain();
      throw error;
    }
    this.stats.warnings = this.applier.counters.warnings;
    this.stats.suppressedWarnings = this.applier.counters.suppressedWarnings;
    this.stats.ownershipSkipped = this.applier.counters.ownershipSkipped;
    return { ...this.stats };
  }

  private async extractAll(): Promise<void> {
    for (;;) {
      this.throwIfFailed();
      const event = await this.nextEvent();
      if (event === undefined)
        throw new BurrowError(
          'PXAR_TRUNCATED',
          'the archive ended before its root directory was closed',
          {
            details: { open: this.stack.map((d) => d.display) },
          },
        );
      if (event.type === 'directory-end') {
        this.leaveDirectory(event.path);
        if (this.stack.length === 0) break;
      } else {
        await this.extractEntry(event.entry);
      }
    }
    const after = await this.nextEvent();
    if (after !== undefined)
      throw new BurrowError(
        'PXAR_BAD_ITEM',
        'the archive has entries after its root directory was closed',
      );
  }

  private async nextEvent(): Promise<ExtractEvent | undefined> {
    this.checkAbort();
    return this.decoder.next();
  }

  private checkAbort(): void {
    if (this.options.signal?.aborted === true)
      throw new BurrowError('TASK_ABORTED', 'the restore was aborted', {
        details: { reason: String(this.options.signal.reason) },
      });
  }

  private progress(path: string): void {
    this.options.onProgress?.({ entries: this.stats.entries, bytes: this.stats.bytes, path });
  }

  // --- directories -----------------------------------------------------------------------

  private openRoot(metadata: Metadata): void {
    try {
      mkdirSync(this.target, { recursive: true, mode: 0o700 });
      const real = Buffer.from(realpathSync(this.target));
      const fd = openSync(real, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
      this.stack.push({
        path: new Uint8Array(0),
        display: '/',
        name: new Uint8Array(0),
        metadata,
        real,
        fd,
        parent: undefined,
        pending: 0,
        left: false,
      });
    } catch (error) {
      throw ioFailure('opening the restore target', this.target, error);
    }
  }

  private top(): DirState {
    const dir = this.stack[this.stack.length - 1];
    if (dir === undefined)
      throw new BurrowError('PXAR_BAD_ITEM', 'an entry follows the end of the root directory');
    return dir;
  }

  /** Where a child of `dir` is reached: through the directory's fd when /proc allows. */
  private childPath(dir: DirState, name: Uint8Array): Buffer {
    if (dir.fd === undefined) throw new BurrowError('INTERNAL', `${dir.display} is not open`);
    const base = this.useProc ? procFdPath(dir.fd) : dir.real;
    return Buffer.concat([base, SLASH, name]);
  }

  /** Creates (or, when allowed, opens existing) directories of the stack not yet on disk. */
  private ensureDirectories(): DirState {
    for (let i = 1; i < this.stack.length; i++) {
      const dir = this.stack[i]!;
      if (dir.fd === undefined) dir.fd = this.createDirectory(this.stack[i - 1]!, dir);
    }
    return this.top();
  }

  private createDirectory(parent: DirState, dir: DirState): number {
    const path = this.childPath(parent, dir.name);
    let created = true;
    try {
      // Owner-only until its metadata is applied at its end: others must not see it half-filled.
      mkdirSync(path, 0o700);
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw ioFailure('mkdir', dir.display, error);
      created = false;
    }
    let fd: number;
    try {
      fd = openSync(path, O_DIR_NOFOLLOW);
    } catch (error) {
      throw this.notADirectory(path, dir.display, error);
    }
    if (!created && this.options.allowExistingDirs !== true) {
      closeSync(fd);
      throw alreadyExists(dir.display, 'a directory');
    }
    if (created) {
      this.stats.directories++;
      this.stats.entries++;
      this.progress(dir.display);
    }
    return fd;
  }

  /** Why an existing entry could not be opened as a directory. */
  private notADirectory(path: Buffer, display: string, error: unknown): BurrowError {
    let stats: BigIntStats | undefined;
    try {
      stats = lstatSync(path, { bigint: true });
    } catch {
      stats = undefined;
    }
    if (stats?.isSymbolicLink() === true)
      return unsafe(display, 'a symlink is in the place of a directory; it is not followed', {
        found: 'symlink',
      });
    if (stats !== undefined && !stats.isDirectory())
      return new BurrowError(
        'ALREADY_EXISTS',
        `${display}: a ${kindOfStats(stats) ?? 'file'} is in the place of a directory`,
        {
          details: { path: display, found: kindOfStats(stats) },
        },
      );
    return ioFailure('opening directory', display, error);
  }

  private enterDirectory(entry: Entry): void {
    const parent = this.top();
    const decision = this.selector.select(entry.path, true);
    this.stack.push({
      path: entry.path,
      display: displayArchivePath(entry.path),
      name: entry.name,
      metadata: requireMetadata(entry),
      real: Buffer.concat([parent.real, SLASH, entry.name]),
      fd: undefined,
      parent,
      pending: 0,
      left: false,
    });
    this.selector.enter(decision);
    // PBS creates an included directory only once something inside it is extracted, so an
    // included empty directory would be lost; we create every selected directory.
    if (decision.selected) this.ensureDirectories();
  }

  private leaveDirectory(path: Uint8Array): void {
    const dir = this.stack[this.stack.length - 1];
    if (dir === undefined || compareNames(dir.path, path) !== 0)
      throw new BurrowError(
        'PXAR_BAD_ITEM',
        `end of directory ${displayArchivePath(path)} does not match the open directory ${dir?.display ?? '(none)'}`,
        {
          details: { path: displayArchivePath(path), open: dir?.display },
        },
      );
    if (dir.fd !== undefined) {
      if (dir.pending > 0) {
        // Files inside are still being written: metadata and close when they are done. The
        // parent stays open meanwhile (its fd names this directory's path).
        dir.left = true;
        this.waitingDirs.add(dir);
        if (dir.parent !== undefined) dir.parent.pending++;
      } else {
        this.finishDirectory(dir);
      }
    }
    this.stack.pop();
    if (this.stack.length > 0) this.selector.leave();
  }

  /** Applies a directory's metadata and closes it (post-order: everything inside is done). */
  private finishDirectory(dir: DirState): void {
    const fd = dir.fd!;
    const parent = dir.parent;
    const refPath = parent === undefined ? dir.real : this.childPath(parent, dir.name);
    try {
      this.applier.apply(
        { path: refPath, fd, kind: 'directory', display: dir.display },
        dir.metadata,
      );
    } finally {
      closeSync(fd);
      dir.fd = undefined;
    }
  }

  /** One file or subdirectory of `dir` is done; a directory left meanwhile is finished now. */
  private release(dir: DirState): void {
    dir.pending--;
    if (dir.pending > 0 || !dir.left) return;
    this.waitingDirs.delete(dir);
    try {
      this.finishDirectory(dir);
    } catch (error) {
      this.failure ??= ioFailure('applying the metadata of', dir.display, error);
    }
    if (dir.parent !== undefined) this.release(dir.parent);
  }

  /**
   * Waits until fewer than pendingFileLimit() files are being written. Gathered work is started
   * early only when nothing else is under way: a chunk started with some of its files would be
   * decoded again for the others.
   */
  private async waitForRoom(writer: FileContentWriter): Promise<void> {
    while (this.pendingFiles >= this.pendingLimit) {
      if (writer.busy) {
        await writer.progress();
        // Let the files of the finished work complete before counting again.
        await new Promise<void>((resolve) => setImmediate(resolve));
      } else {
        writer.flush();
        await this.fileSettled();
      }
    }
  }

  private fileSettled(): Promise<void> {
    return new Promise((resolve) => this.fileWaiters.push(resolve));
  }

  /**
   * Waits for every file being written (they never fail this promise): before the end, and before
   * a failure leaves run(), since closing directories under pending files would misdirect them.
   */
  private async drain(): Promise<void> {
    while (this.pendingFiles > 0) {
      this.options.contentWriter?.flush();
      await this.fileSettled();
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  // --- entries ---------------------------------------------------------------------------

  private checkEntryPath(entry: Entry): string {
    const parent = this.top();
    const display = displayArchivePath(entry.path);
    const problem = fileNameProblem(entry.name);
    if (problem !== undefined) throw unsafe(display, `invalid file name: ${problem}`);
    if (compareNames(joinPath(parent.path, entry.name), entry.path) !== 0)
      throw unsafe(
        display,
        `the entry's path is not its name inside the current directory ${parent.display}`,
      );
    return display;
  }

  private async extractEntry(entry: Entry): Promise<void> {
    const display = this.checkEntryPath(entry);
    const body = entry.body;
    if (body.kind === 'directory') {
      this.enterDirectory(entry);
      return;
    }
    if (!this.selector.select(entry.path, false).selected || this.excludedKind(body.kind)) {
      this.stats.skipped++;
      return;
    }
    const dir = this.ensureDirectories();
    const path = this.childPath(dir, entry.name);
    let done: boolean;
    switch (body.kind) {
      case 'file':
        await this.extractFile(path, entry, body.size, display);
        done = true;
        break;
      case 'symlink':
        done = this.extractSymlink(path, entry, body.target, display);
        break;
      case 'hardlink':
        // Its target must be complete first: a failed write removes a file, not its links.
        await this.drain();
        this.throwIfFailed();
        done = this.extractHardlink(path, body.target, display);
        break;
      case 'block-device':
      case 'char-device':
        done = this.extractSpecial(path, entry, body.major, body.minor, display);
        break;
      case 'fifo':
      case 'socket':
        done = this.extractSpecial(path, entry, 0, 0, display);
        break;
    }
    if (done) {
      this.stats.entries++;
      this.progress(display);
    } else {
      this.stats.skipped++;
    }
  }

  private excludedKind(kind: Entry['body']['kind']): boolean {
    switch (kind) {
      case 'block-device':
      case 'char-device':
        return this.options.noDevices === true;
      case 'fifo':
        return this.options.noFifos === true;
      case 'socket':
        return this.options.noSockets === true;
      case 'directory':
      case 'file':
      case 'symlink':
      case 'hardlink':
        return false;
    }
  }

  /**
   * Runs `create`; if the name is taken and `kind` may overwrite, removes what is there (never a
   * directory) and runs it once more.
   */
  private createReplacing<T>(
    path: Buffer,
    display: string,
    kind: OverwriteKind | undefined,
    what: string,
    create: () => T,
  ): T {
    try {
      return create();
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw ioFailure(`creating ${what}`, display, error);
    }
    this.removeExisting(path, display, kind);
    try {
      return create();
    } catch (error) {
      throw ioFailure(`creating ${what}`, display, error);
    }
  }

  /** Removes the non-directory entry at `path` when `kind` may overwrite, else ALREADY_EXISTS. */
  private removeExisting(path: Buffer, display: string, kind: OverwriteKind | undefined): void {
    if (kind === undefined || !this.overwrite.has(kind)) throw alreadyExists(display, 'an entry');
    let stats: BigIntStats;
    try {
      stats = lstatSync(path, { bigint: true });
    } catch (error) {
      throw ioFailure('lstat', display, error);
    }
    if (stats.isDirectory()) throw alreadyExists(display, 'a directory (never replaced)');
    try {
      unlinkSync(path);
    } catch (error) {
      throw ioFailure('removing the existing entry', display, error);
    }
  }

  private async extractFile(
    path: Buffer,
    entry: Entry,
    size: number,
    display: string,
  ): Promise<void> {
    const metadata = requireMetadata(entry);
    const writer = this.options.contentWriter;
    if (writer !== undefined && entry.body.kind === 'file') {
      await this.waitForRoom(writer);
      await this.turns.maybeYield();
      this.throwIfFailed();
    }
    // A replaced file is unlinked, not truncated: other hardlinks to it in the target keep their
    // content, and none of its old xattrs or ACLs survive.
    const fd = this.createReplacing(path, display, 'files', 'file', () =>
      openSync(path, O_NEW_FILE, 0o600),
    );
    if (writer !== undefined && entry.body.kind === 'file') {
      this.writeInBackground(writer, fd, path, entry.body.payloadOffset, size, metadata, display);
      return;
    }
    let complete = false;
    try {
      this.applier.applyInitialFlags(fd, metadata, display);
      const writer = new SparseWriter(fd);
      for await (const piece of this.decoder.contents()) {
        this.checkAbort();
        if (writer.position + piece.byteLength > size)
          throw new BurrowError(
            'PXAR_BAD_PAYLOAD',
            `${display}: the content is longer than the file's size ${size}`,
            {
              details: {
                path: display,
                expected: size,
                actual: writer.position + piece.byteLength,
              },
            },
          );
        writer.write(piece);
        this.stats.bytes += piece.byteLength;
        this.progress(display);
      }
      if (writer.position !== size)
        throw new BurrowError(
          'PXAR_TRUNCATED',
          `${display}: the content has ${writer.position} of ${size} bytes`,
          {
            details: { path: display, expected: size, actual: writer.position },
          },
        );
      writer.finish(size);
      this.applier.apply({ path, fd, kind: 'file', display }, metadata);
      complete = true;
      this.stats.files++;
    } catch (error) {
      throw isBurrowError(error) ? error : ioFailure('writing', display, error);
    } finally {
      closeSync(fd);
      // A half-written file under the real name would pass for a restored one.
      if (!complete) unlinkQuietly(path);
    }
  }

  /**
   * The rest of a file whose contents `writer` writes: its initial flags now, then (once written)
   * its size, metadata and close, as extractFile does in line. The directory it is in waits.
   */
  private writeInBackground(
    writer: FileContentWriter,
    fd: number,
    path: Buffer,
    payloadOffset: number,
    size: number,
    metadata: Metadata,
    display: string,
  ): void {
    try {
      this.applier.applyInitialFlags(fd, metadata, display);
    } catch (error) {
      closeQuietly(fd);
      unlinkQuietly(path);
      throw error;
    }
    const dir = this.top();
    dir.pending++;
    this.pendingFiles++;
    void (async (): Promise<void> => {
      let complete = false;
      try {
        await writer.write(fd, payloadOffset, size, display);
        // Trailing holes exist only once the size is set (the file was created empty).
        ftruncateSync(fd, size);
        this.applier.apply({ path, fd, kind: 'file', display }, metadata);
        complete = true;
        this.stats.files++;
        this.stats.bytes += size;
        this.progress(display);
      } catch (error) {
        this.failure ??= isBurrowError(error) ? error : ioFailure('writing', display, error);
      } finally {
        closeQuietly(fd);
        // A half-written file under the real name would pass for a restored one.
        if (!complete) unlinkQuietly(path);
        this.release(dir);
        this.pendingFiles--;
        const waiters = this.fileWaiters;
        this.fileWaiters = [];
        for (const wake of waiters) wake();
      }
    })();
  }

  private extractSymlink(path: Buffer, entry: Entry, target: Uint8Array, display: string): boolean {
    const metadata = requireMetadata(entry);
    if (target.length === 0 || target.includes(0))
      throw new BurrowError(
        'PXAR_BAD_NAME',
        `${display}: symlink target is empty or contains a NUL byte`,
        {
          details: { path: display },
        },
      );
    this.createReplacing(path, display, 'symlinks', 'symlink', () =>
      symlinkSync(Buffer.from(target), path),
    );
    this.applier.apply({ path, kind: 'symlink', display }, metadata);
    this.stats.symlinks++;
    return true;
  }

  private extractHardlink(path: Buffer, target: Uint8Array, display: string): boolean {
    const source = this.resolveHardlinkTarget(target, display);
    if (source === undefined) return false;
    try {
      // Already the same file (restoring over an earlier restore): nothing to do.
      const existing = lstatSync(path, { bigint: true, throwIfNoEntry: false });
      if (
        existing !== undefined &&
        existing.ino === source.stats.ino &&
        existing.dev === source.stats.dev
      ) {
        this.stats.hardlinks++;
        return true;
      }
      // link(2) does not follow a symlink at the source; the walk made sure there is none.
      this.createReplacing(path, display, 'hardlinks', 'hardlink', () =>
        linkToFile(source.path, path),
      );
    } finally {
      for (const fd of source.fds) closeQuietly(fd);
    }
    this.stats.hardlinks++;
    return true;
  }

  /**
   * Walks a hardlink target (relative to the restore root) without following any symlink and
   * checks it ends at a regular file. undefined (with a warning) when it does not exist, which
   * happens when patterns left the first occurrence out.
   */
  private resolveHardlinkTarget(
    target: Uint8Array,
    display: string,
  ): { path: Buffer; stats: BigIntStats; fds: number[] } | undefined {
    const targetDisplay = displayArchivePath(target);
    const parts: Uint8Array[] = [];
    let start = 0;
    for (let i = 0; i <= target.length; i++) {
      if (i === target.length || target[i] === 0x2f) {
        parts.push(target.subarray(start, i));
        start = i + 1;
      }
    }
    for (const part of parts) {
      const problem = fileNameProblem(part);
      if (problem !== undefined)
        throw unsafe(
          display,
          `hardlink target ${targetDisplay} is not a plain relative path (${problem})`,
          {
            target: targetDisplay,
          },
        );
    }
    const root = this.stack[0]!;
    const fds: number[] = [];
    const base = (fd: number | undefined, real: Buffer): Buffer =>
      this.useProc && fd !== undefined ? procFdPath(fd) : real;
    let dirFd = root.fd;
    let real = root.real;
    try {
      for (const part of parts.slice(0, -1)) {
        const next = Buffer.concat([base(dirFd, real), SLASH, part]);
        let fd: number;
        try {
          fd = openSync(next, O_DIR_NOFOLLOW);
        } catch (error) {
          if (errnoOf(error) === 'ENOENT')
            return this.missingHardlinkTarget(display, targetDisplay);
          const stats = lstatSync(next, { bigint: true, throwIfNoEntry: false });
          throw unsafe(
            display,
            `hardlink target ${targetDisplay} passes through a ${stats === undefined ? 'missing entry' : (kindOfStats(stats) ?? 'non-directory')}`,
            {
              target: targetDisplay,
            },
          );
        }
        fds.push(fd);
        dirFd = fd;
        real = Buffer.concat([real, SLASH, part]);
      }
      const path = Buffer.concat([base(dirFd, real), SLASH, parts[parts.length - 1]!]);
      const stats = lstatSync(path, { bigint: true, throwIfNoEntry: false });
      if (stats === undefined) return this.missingHardlinkTarget(display, targetDisplay);
      if (stats.isSymbolicLink())
        throw unsafe(display, `hardlink target ${targetDisplay} is a symlink`, {
          target: targetDisplay,
        });
      if (!stats.isFile())
        throw new BurrowError(
          'PXAR_BAD_HARDLINK',
          `${display}: hardlink target ${targetDisplay} is not a regular file`,
          {
            details: { path: display, target: targetDisplay, found: kindOfStats(stats) },
          },
        );
      const result = { path, stats, fds: [...fds] };
      fds.length = 0;
      return result;
    } finally {
      for (const fd of fds) closeQuietly(fd);
    }
  }

  private missingHardlinkTarget(display: string, targetDisplay: string): undefined {
    this.applier.warn(
      'hardlink',
      display,
      `hardlink not restored: its target ${targetDisplay} was not restored`,
      {
        code: 'NOT_FOUND',
      },
    );
    return undefined;
  }

  private extractSpecial(
    path: Buffer,
    entry: Entry,
    major: number,
    minor: number,
    display: string,
  ): boolean {
    const metadata = requireMetadata(entry);
    const kind = entry.body.kind as 'block-device' | 'char-device' | 'fifo' | 'socket';
    const warnKind = kind === 'fifo' ? 'fifo' : kind === 'socket' ? 'socket' : 'device';
    try {
      mknod(path, initialSpecialMode(metadata.stat.mode), major, minor);
    } catch (error) {
      const errno = errnoOf(error);
      if (errno === 'EEXIST') throw alreadyExists(display, 'an entry');
      if (isBurrowError(error, 'NATIVE_UNAVAILABLE')) {
        this.applier.warn(
          warnKind,
          display,
          `${kind} not restored: ${error.message} (reported once)`,
          {
            error,
            onceKey: 'special:native',
          },
        );
        return false;
      }
      if (errno === 'EPERM' || errno === 'EACCES') {
        this.applier.warn(
          warnKind,
          display,
          `${kind} not restored: ${errno} (device nodes need root)`,
          {
            error,
            code: 'PERMISSION_DENIED',
          },
        );
        return false;
      }
      throw ioFailure(`creating ${kind}`, display, error);
    }
    this.applier.apply({ path, kind, display }, metadata);
    if (kind === 'fifo') this.stats.fifos++;
    else if (kind === 'socket') this.stats.sockets++;
    else this.stats.devices++;
    return true;
  }
}

function requireMetadata(entry: Entry): Metadata {
  if (entry.metadata === undefined)
    throw new BurrowError(
      'PXAR_BAD_ITEM',
      `${displayArchivePath(entry.path)}: the ${entry.body.kind} has no metadata`,
      {
        details: { path: displayArchivePath(entry.path) },
      },
    );
  return entry.metadata;
}

/** Immutable and append-only chattr bits: link(2) refuses a source that has either. */
const NO_LINK_FLAGS = 0x10 | 0x20;

/**
 * link(2), also to a file restored immutable or append-only a moment ago (its flags are set
 * with the rest of its metadata, before later hardlinks to it arrive): those bits are lifted
 * for the link and put back. Without the privilege to do so the original EPERM stands.
 */
function linkToFile(source: Buffer, path: Buffer): void {
  try {
    linkSync(source, path);
    return;
  } catch (error) {
    if (errnoOf(error) !== 'EPERM') throw error;
    let fd: number;
    try {
      fd = openSync(source, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    } catch {
      throw error;
    }
    try {
      let flags: number;
      try {
        flags = getFsFlags(fd);
      } catch {
        throw error;
      }
      if ((flags & NO_LINK_FLAGS) === 0 || !fstatSync(fd).isFile()) throw error;
      try {
        setFsFlags(fd, (flags & ~NO_LINK_FLAGS) >>> 0);
      } catch {
        throw error;
      }
      try {
        linkSync(source, path);
      } finally {
        setFsFlags(fd, flags);
      }
    } finally {
      closeSync(fd);
    }
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Already closed or never valid: nothing to release.
  }
}

function unlinkQuietly(path: Buffer): void {
  try {
    unlinkSync(path);
  } catch {
    // Best effort: the restore is failing already and reports the real cause.
  }
}
