/**
 * Writing pxar metadata onto restored entries (the extractor's half of the metadata model; the
 * archiver reads it in fs-metadata.ts). The order is fixed by what each step undoes:
 *
 *   ownership → xattrs → ACLs → fcaps → quota project id → mode → times → chattr flags
 *
 * chown clears set-uid/set-gid bits and `security.capability`, so it comes first and fcaps and
 * the mode after it; the mode comes after the ACL because setting an access ACL rewrites the
 * group bits; times come after everything that changes the inode; immutable/append-only flags
 * come last because they forbid every change after them (including the times). Content has been
 * written before any of this: a write clears fcaps and set-uid bits too.
 *
 * Every step that fails is a warning (onWarning), never a silent loss and never fatal unless
 * `strict`. A step is attempted only through a path that cannot follow a symlink at its last
 * component (l* calls, AT_SYMLINK_NOFOLLOW) or through an fd we opened with O_NOFOLLOW, and the
 * parent directory is pinned by an fd (/proc/self/fd/N/name), so metadata can never land on
 * something outside the restore target. See /docs (extractor section) for the full rules.
 */
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  existsSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  lchownSync,
  lstatSync,
  openSync,
  type BigIntStats,
} from 'node:fs';
import { BurrowError, isBurrowError, type ErrorCode } from '../lib/errors.js';
import {
  getFsFlags,
  lSetXattr,
  nativeAvailable,
  setFsFlags,
  setProjectId,
  setTimesNs,
} from '../lib/native-fs.js';
import {
  aclIsEmpty,
  LINUX_FS_FLAGS,
  linuxFlagsFromPxar,
  S_IFMT,
  type FileKind,
  type Metadata,
  type PxarTime,
} from './format.js';
import { aclToXattrs, ACL_ACCESS_XATTR, ACL_DEFAULT_XATTR } from './posix-acl.js';

// ---------------------------------------------------------------------------------------------
// Warnings

/** What could not be restored. */
export type WarningKind =
  | 'ownership'
  | 'xattr'
  | 'acl'
  | 'fcaps'
  | 'projid'
  | 'mode'
  | 'times'
  | 'flags'
  | 'device'
  | 'fifo'
  | 'socket'
  | 'hardlink';

export interface ExtractWarning {
  /** The entry's archive path for display ('/' for the root), UTF-8 with other bytes as \xNN. */
  readonly path: string;
  readonly kind: WarningKind;
  readonly message: string;
  /** The code `strict` mode throws this warning as. */
  readonly code: ErrorCode;
  /** The errno name behind it (EPERM, ENOTSUP, ...), when there is one. */
  readonly errno?: string;
}

export interface ApplyOptions {
  readonly xattrs: boolean;
  readonly acls: boolean;
  readonly fcaps: boolean;
  /** Throw the first warning as an error instead of reporting it. */
  readonly strict: boolean;
  readonly onWarning?: (warning: ExtractWarning) => void;
  /**
   * Whether ownership can be restored (default: effective uid 0). Injectable so tests running
   * as root can check the unprivileged policy too.
   */
  readonly privileged?: boolean;
}

/** How to reach one restored entry. */
export interface EntryRef {
  /**
   * A path to the entry whose parent is pinned (/proc/self/fd/N/name) or, without /proc, the
   * plain path; every call made on it leaves a symlink at the last component alone.
   */
  readonly path: Buffer;
  /** An fd of the entry itself when we hold one (regular files, directories). */
  readonly fd?: number;
  readonly kind: FileKind;
  /** The archive path, for messages. */
  readonly display: string;
}

/** Counters the applier keeps; the extractor copies them into its stats. */
export interface ApplyCounters {
  warnings: number;
  suppressedWarnings: number;
  ownershipSkipped: number;
}

// Errnos that mean "this filesystem (or this kind of file) does not have the feature": the
// warning then says so once per restore instead of once per file.
const UNSUPPORTED = new Set(['ENOTSUP', 'EOPNOTSUPP', 'ENOTTY', 'ENOSYS']);

/** Linux O_PATH (the generic value, as on x86-64 and arm64); Node does not export it. */
const O_PATH = 0o10000000;

/** Every chattr bit pxar knows; bits outside it are left as the filesystem set them. */
const KNOWN_FS_FLAGS = LINUX_FS_FLAGS.reduce((all, [linux]) => all | linux, 0) >>> 0;
/**
 * Flags that only take effect on an empty file (NOCOW, compression) or that must be there
 * before data arrives; PBS sets the same set right after creating a file.
 */
const INITIAL_FS_FLAGS = (0x80 | 0x4 | 0x800000 | 0x400 | 0x20000000) >>> 0;

const XATTR_FCAPS = 'security.capability';

// ---------------------------------------------------------------------------------------------
// /proc/self/fd: Node has no *at() calls, so a directory fd's /proc path stands in for them.

let procFdState: boolean | undefined;
let procFdForcedOff = false;

/** Whether /proc/self/fd can pin parent directories (checked once). */
export function procFdAvailable(): boolean {
  if (procFdForcedOff) return false;
  procFdState ??= existsSync('/proc/self/fd');
  return procFdState;
}

/** For tests only: act as if /proc were not mounted (true) or back to normal (false). */
export function forceProcFdFallback(off: boolean): void {
  procFdForcedOff = off;
}

/** The path that reaches directory `fd` itself, for building child paths. */
export function procFdPath(fd: number): Buffer {
  return Buffer.from(`/proc/self/fd/${fd}`);
}

// ---------------------------------------------------------------------------------------------
// Small helpers

export function errnoOf(error: unknown): string | undefined {
  if (isBurrowError(error)) {
    const name = error.details.errnoName;
    return typeof name === 'string' ? name : undefined;
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A Node fs error as BurrowError IO_ERROR naming the archive path and the syscall. */
export function ioFailure(what: string, display: string, error: unknown): BurrowError {
  if (isBurrowError(error)) return error;
  const e = error as NodeJS.ErrnoException;
  return new BurrowError('IO_ERROR', `${what} ${display} failed: ${e.code ?? messageOf(error)}`, {
    details: {
      path: display,
      syscall: e.syscall,
      errno: e.errno === undefined ? undefined : Math.abs(e.errno),
      errnoName: e.code,
    },
    cause: error,
  });
}

function timeFromNs(ns: bigint): PxarTime {
  let secs = ns / 1_000_000_000n;
  let nanos = ns % 1_000_000_000n;
  if (nanos < 0n) {
    secs -= 1n;
    nanos += 1_000_000_000n;
  }
  return { secs: Number(secs), nanos: Number(nanos) };
}

const KIND_OF_STATS: ReadonlyArray<[(s: BigIntStats) => boolean, FileKind]> = [
  [(s) => s.isDirectory(), 'directory'],
  [(s) => s.isFile(), 'file'],
  [(s) => s.isSymbolicLink(), 'symlink'],
  [(s) => s.isBlockDevice(), 'block-device'],
  [(s) => s.isCharacterDevice(), 'char-device'],
  [(s) => s.isFIFO(), 'fifo'],
  [(s) => s.isSocket(), 'socket'],
];

export function kindOfStats(stats: BigIntStats): FileKind | undefined {
  return KIND_OF_STATS.find(([test]) => test(stats))?.[1];
}

// ---------------------------------------------------------------------------------------------

/**
 * Applies metadata to restored entries and routes everything that cannot be applied to
 * onWarning (or throws it when strict). One instance per restore: it remembers which
 * "the environment cannot do this" warnings it has already given.
 */
export class MetadataApplier {
  readonly counters: ApplyCounters = { warnings: 0, suppressedWarnings: 0, ownershipSkipped: 0 };
  private readonly options: ApplyOptions;
  private readonly privileged: boolean;
  private readonly euid: number;
  private readonly reportedOnce = new Set<string>();

  constructor(options: ApplyOptions) {
    this.options = options;
    this.euid = process.geteuid?.() ?? -1;
    this.privileged = options.privileged ?? this.euid === 0;
  }

  /**
   * Reports a warning, or throws it in strict mode. With `onceKey`, only the first warning of
   * that key is reported; the rest are counted in suppressedWarnings.
   */
  warn(
    kind: WarningKind,
    display: string,
    message: string,
    options: { code?: ErrorCode; error?: unknown; onceKey?: string } = {},
  ): void {
    const errno = options.error === undefined ? undefined : errnoOf(options.error);
    const code: ErrorCode =
      options.code ?? (isBurrowError(options.error) ? options.error.code : 'IO_ERROR');
    if (this.options.strict) {
      throw new BurrowError(code, `${display}: ${message}`, {
        details: { path: display, kind, errnoName: errno },
        cause: options.error,
      });
    }
    if (options.onceKey !== undefined) {
      if (this.reportedOnce.has(options.onceKey)) {
        this.counters.suppressedWarnings++;
        return;
      }
      this.reportedOnce.add(options.onceKey);
    }
    this.counters.warnings++;
    const warning: ExtractWarning =
      errno === undefined
        ? { path: display, kind, message, code }
        : { path: display, kind, message, code, errno };
    this.options.onWarning?.(warning);
  }

  /** A failed step: environmental errnos are reported once per kind, others per entry. */
  private stepFailed(kind: WarningKind, display: string, what: string, error: unknown): void {
    const errno = errnoOf(error);
    if (isBurrowError(error, 'NATIVE_UNAVAILABLE')) {
      this.warn(kind, display, `${what}: ${error.message} (reported once)`, {
        error,
        onceKey: `${kind}:native`,
      });
    } else if (errno !== undefined && UNSUPPORTED.has(errno)) {
      this.warn(
        kind,
        display,
        `${what}: not supported by the target filesystem (${errno}; reported once)`,
        { error, onceKey: `${kind}:${errno}` },
      );
    } else {
      this.warn(kind, display, `${what}: ${messageOf(error)}`, { error });
    }
  }

  /**
   * chattr flags that must be set while the file is still empty (NOCOW, compression, ...).
   * Call right after creating a regular file, before writing its content.
   */
  applyInitialFlags(fd: number, metadata: Metadata, display: string): void {
    const wanted = linuxFlagsFromPxar(metadata.stat.flags) & INITIAL_FS_FLAGS;
    if (wanted !== 0) this.applyFlags(fd, wanted, INITIAL_FS_FLAGS, display);
  }

  /** Everything of `metadata` onto the entry, in the order the module comment explains. */
  apply(ref: EntryRef, metadata: Metadata): void {
    const stats = this.statOf(ref);
    this.applyOwnership(ref, metadata, stats);
    if (ref.kind !== 'symlink') {
      if (this.options.xattrs) this.applyXattrs(ref, metadata);
      if (this.options.acls && !aclIsEmpty(metadata.acl)) this.applyAcl(ref, metadata);
      if (this.options.fcaps && metadata.fcaps !== undefined)
        this.setXattr(ref, 'fcaps', XATTR_FCAPS, metadata.fcaps);
      if (metadata.quotaProjectId !== undefined) this.applyProjectId(ref, metadata.quotaProjectId);
      this.applyMode(ref, metadata);
    } else if (metadata.xattrs.length > 0 && this.options.xattrs) {
      // Linux refuses user.* xattrs on symlinks; PBS never stores any. Try, and warn if refused.
      this.applyXattrs(ref, metadata);
    }
    this.applyTimes(ref, metadata, stats);
    const flags = linuxFlagsFromPxar(metadata.stat.flags);
    if (flags !== 0 && ref.fd !== undefined)
      this.applyFlags(ref.fd, flags, KNOWN_FS_FLAGS, ref.display);
    // chattr flags on symlinks and special files: the ioctl needs an fd opened for I/O, which
    // these cannot give safely; PBS skips them the same way and no filesystem sets them there.
  }

  /** The entry's current stat, checking it is still the kind we created. */
  private statOf(ref: EntryRef): BigIntStats {
    let stats: BigIntStats;
    try {
      stats =
        ref.fd !== undefined
          ? fstatSync(ref.fd, { bigint: true })
          : lstatSync(ref.path, { bigint: true });
    } catch (error) {
      throw ioFailure('stat', ref.display, error);
    }
    const kind = kindOfStats(stats);
    if (kind !== ref.kind)
      throw new BurrowError(
        'PXAR_UNSAFE_PATH',
        `${ref.display}: expected the ${ref.kind} just restored, found a ${kind ?? 'unknown file type'}; it was replaced while restoring`,
        { details: { path: ref.display, expected: ref.kind, actual: kind } },
      );
    return stats;
  }

  private applyOwnership(ref: EntryRef, metadata: Metadata, stats: BigIntStats): void {
    const { uid, gid } = metadata.stat;
    if (BigInt(uid) === stats.uid && BigInt(gid) === stats.gid) return;
    // Unprivileged, a file can only be given away to ourselves (and a group we belong to);
    // everything else is one warning per restore, not one per file.
    if (!this.privileged && BigInt(uid) !== BigInt(this.euid)) {
      this.counters.ownershipSkipped++;
      this.warn(
        'ownership',
        ref.display,
        `ownership ${uid}:${gid} not restored: not running as root (reported once; see ownershipSkipped)`,
        { code: 'PERMISSION_DENIED', onceKey: 'ownership:unprivileged' },
      );
      return;
    }
    try {
      if (ref.fd !== undefined) fchownSync(ref.fd, uid, gid);
      else lchownSync(ref.path, uid, gid);
    } catch (error) {
      if (!this.privileged && errnoOf(error) === 'EPERM') {
        this.counters.ownershipSkipped++;
        this.warn(
          'ownership',
          ref.display,
          `group ${gid} not restored: not running as root and not a member (reported once; see ownershipSkipped)`,
          { code: 'PERMISSION_DENIED', error, onceKey: 'ownership:unprivileged-group' },
        );
        return;
      }
      this.stepFailed('ownership', ref.display, `ownership ${uid}:${gid} not restored`, error);
    }
  }

  private applyXattrs(ref: EntryRef, metadata: Metadata): void {
    for (const xattr of metadata.xattrs) {
      const name = Buffer.from(xattr.name);
      const text = name.toString('latin1');
      if (text === XATTR_FCAPS) {
        // Only the FCAPS item should carry capabilities, but honour --no-fcaps either way.
        if (this.options.fcaps) this.setXattr(ref, 'fcaps', XATTR_FCAPS, xattr.value);
        continue;
      }
      // The namespaces PBS stores and restores. system.* would bypass the ACL rules and other
      // security.* names (SELinux labels) are policy of the restoring host, not archive data.
      if (!(text.startsWith('user.') || text.startsWith('trusted.') || text === 'security.NTACL')) {
        this.warn(
          'xattr',
          ref.display,
          `xattr ${JSON.stringify(name.toString('utf8'))} not restored: namespace not allowed`,
          {
            code: 'PXAR_BAD_ITEM',
          },
        );
        continue;
      }
      if (!this.setXattr(ref, 'xattr', name, xattr.value)) return;
    }
  }

  /** One xattr; false when the filesystem does not support xattrs (stop trying this entry). */
  private setXattr(
    ref: EntryRef,
    kind: WarningKind,
    name: Buffer | string,
    value: Uint8Array,
  ): boolean {
    const nameBytes = typeof name === 'string' ? Buffer.from(name) : name;
    try {
      lSetXattr(ref.path, nameBytes, value);
      return true;
    } catch (error) {
      this.stepFailed(
        kind,
        ref.display,
        `xattr ${JSON.stringify(nameBytes.toString('utf8'))} not restored`,
        error,
      );
      const errno = errnoOf(error);
      return !(
        isBurrowError(error, 'NATIVE_UNAVAILABLE') ||
        (errno !== undefined && UNSUPPORTED.has(errno))
      );
    }
  }

  private applyAcl(ref: EntryRef, metadata: Metadata): void {
    let values: { access?: Uint8Array; default?: Uint8Array };
    try {
      values = aclToXattrs(metadata.acl, metadata.stat.mode);
    } catch (error) {
      this.warn('acl', ref.display, `ACL not restored: ${messageOf(error)}`, {
        error,
        code: 'PXAR_BAD_ITEM',
      });
      return;
    }
    if (values.access !== undefined && !this.setXattr(ref, 'acl', ACL_ACCESS_XATTR, values.access))
      return;
    if (values.default !== undefined) this.setXattr(ref, 'acl', ACL_DEFAULT_XATTR, values.default);
  }

  private applyProjectId(ref: EntryRef, projid: number): void {
    if (ref.fd === undefined) {
      // PBS stores project ids only for files and directories.
      this.warn('projid', ref.display, `quota project id ${projid} not restored on a ${ref.kind}`, {
        code: 'PXAR_BAD_ITEM',
      });
      return;
    }
    try {
      setProjectId(ref.fd, projid);
    } catch (error) {
      this.stepFailed('projid', ref.display, `quota project id ${projid} not restored`, error);
    }
  }

  private applyMode(ref: EntryRef, metadata: Metadata): void {
    const mode = metadata.stat.mode & 0o7777;
    try {
      if (ref.fd !== undefined) {
        fchmodSync(ref.fd, mode);
      } else {
        // chmod(2) follows symlinks and Linux has no lchmod: reach the node through an O_PATH
        // fd opened without following, and check it is still what we created.
        chmodNoFollow(ref, mode);
      }
    } catch (error) {
      if (isBurrowError(error, 'PXAR_UNSAFE_PATH')) throw error;
      this.stepFailed('mode', ref.display, `mode ${mode.toString(8)} not restored`, error);
    }
  }

  private applyTimes(ref: EntryRef, metadata: Metadata, stats: BigIntStats): void {
    // PBS leaves the access time alone (UTIME_OMIT); writing back the one the entry has now
    // does the same without needing UTIME_OMIT.
    const atime = timeFromNs(stats.atimeNs);
    if (!nativeAvailable())
      this.warn(
        'times',
        ref.display,
        'native helper unavailable: modification times restored to about a microsecond, not the nanosecond (reported once)',
        { code: 'NATIVE_UNAVAILABLE', onceKey: 'times:native' },
      );
    try {
      setTimesNs(ref.path, atime, metadata.stat.mtime, false);
    } catch (error) {
      this.stepFailed('times', ref.display, 'modification time not restored', error);
    }
  }

  /** Sets the `mask` bits of the chattr flags to `wanted`, keeping the others. */
  private applyFlags(fd: number, wanted: number, mask: number, display: string): void {
    try {
      const current = getFsFlags(fd);
      const next = ((current & ~mask) | (wanted & mask)) >>> 0;
      if (next !== current) setFsFlags(fd, next);
    } catch (error) {
      this.stepFailed(
        'flags',
        display,
        `file attributes (chattr 0x${wanted.toString(16)}) not restored`,
        error,
      );
    }
  }
}

/** chmod of a node we cannot open for I/O (device, FIFO, socket) without following symlinks. */
function chmodNoFollow(ref: EntryRef, mode: number): void {
  if (!procFdAvailable()) {
    const stats = lstatSync(ref.path, { bigint: true });
    if (kindOfStats(stats) !== ref.kind) throw unsafeReplaced(ref);
    chmodSync(ref.path, mode);
    return;
  }
  const fd = openSync(ref.path, O_PATH | fsConstants.O_NOFOLLOW);
  try {
    if (kindOfStats(fstatSync(fd, { bigint: true })) !== ref.kind) throw unsafeReplaced(ref);
    chmodSync(procFdPath(fd), mode);
  } finally {
    closeSync(fd);
  }
}

function unsafeReplaced(ref: EntryRef): BurrowError {
  return new BurrowError(
    'PXAR_UNSAFE_PATH',
    `${ref.display}: the ${ref.kind} just restored was replaced while restoring`,
    { details: { path: ref.display, expected: ref.kind } },
  );
}

/** The mode bits mknod needs for a special file: its type, permissions restricted to the owner until metadata is applied. */
export function initialSpecialMode(mode: number): number {
  return (mode & S_IFMT) | 0o600;
}
