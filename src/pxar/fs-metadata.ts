/**
 * Reads what pxar stores about an entry from the disk (pxar-format.md §4, §10 items 2–4): the
 * stat (with exact nanosecond mtimes, also before 1970), the chattr flags, the kept xattrs, the
 * POSIX ACLs, file capabilities and the quota project id.
 *
 * Like PBS, only regular files and directories get more than a stat: PBS opens every other kind
 * with O_PATH, on which xattr and ioctl calls fail, so their archives never carry xattrs, ACLs or
 * flags for symlinks, devices, FIFOs or sockets; doing the same keeps archives comparable.
 *
 * Nothing here is fatal. What cannot be read goes to the warning callback and is left out of the
 * metadata. A filesystem that lacks a feature altogether (no xattrs, no chattr ioctl) is reported
 * once per device rather than once per file, because there is nothing per file to report.
 */
import { closeSync, constants as fsConstants, lstatSync, openSync, statfsSync } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { isBurrowError } from '../lib/errors.js';
import {
  getFsFlags,
  getProjectId,
  lGetXattr,
  lListXattr,
  nativeAvailable,
  nativeUnavailableReason,
} from '../lib/native-fs.js';
import {
  EMPTY_ACL,
  MAX_XATTR_NAME_LENGTH,
  MAX_XATTR_VALUE_LENGTH,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  pxarFlagsFromLinux,
} from './format.js';
import type { Acl, Metadata, PxarTime, Stat, Xattr } from './format.js';
import { ACL_ACCESS_XATTR, ACL_DEFAULT_XATTR, aclFromXattrs } from './posix-acl.js';

export type WarningCallback = (message: string, path: string) => void;

/** statfs f_type values of the filesystems PBS reads project ids on (§10 item 4). */
export const FS_MAGIC = Object.freeze({
  EXT4: 0xef53,
  XFS: 0x58465342,
  ZFS: 0x2fc12fc1,
  FUSE: 0x65735546,
});

const PROJECT_ID_FILESYSTEMS: ReadonlySet<number> = new Set(Object.values(FS_MAGIC));

const CAPABILITY_XATTR = 'security.capability';
const NTACL_XATTR = 'security.NTACL';

const NS_PER_SEC = 1_000_000_000n;

/** A struct-stat time from a nanosecond count: secs rounded down, so nanos is never negative. */
export function timeFromNanoseconds(ns: bigint): PxarTime {
  let secs = ns / NS_PER_SEC;
  let nanos = ns % NS_PER_SEC;
  if (nanos < 0n) {
    secs -= 1n;
    nanos += NS_PER_SEC;
  }
  return { secs: Number(secs), nanos: Number(nanos) };
}

/** The ENTRY stat of an lstat result (with `{ bigint: true }`, which keeps nanoseconds exact). */
export function statFromStats(stats: BigIntStats, flags = 0): Stat {
  return {
    mode: Number(stats.mode),
    flags,
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    mtime: timeFromNanoseconds(stats.mtimeNs),
  };
}

/** major/minor of a device number, split the glibc way (§10 item 7). */
export function splitDeviceNumber(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

/** Whether pxar keeps an xattr of this name as an XATTR item (§10 item 2). */
export function isArchivedXattrName(name: Uint8Array): boolean {
  if (name.length === 0 || name.length > MAX_XATTR_NAME_LENGTH) return false;
  const text = Buffer.from(name).toString('latin1');
  return text.startsWith('user.') || text.startsWith('trusted.') || text === NTACL_XATTR;
}

/** A path for messages: UTF-8 where it decodes, other bytes as \xNN. */
export function displayPath(path: string | Uint8Array): string {
  if (typeof path === 'string') return path;
  const text = new TextDecoder('utf-8', { fatal: false }).decode(path);
  if (!text.includes('\ufffd')) return text;
  return Array.from(path, (b) =>
    b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`,
  ).join('');
}

const ERRNO = { ENOTTY: 25, ENOSYS: 38, ENOTSUP: 95 };

/** Errors meaning "this filesystem has no such feature" rather than "this file could not be read". */
const UNSUPPORTED_ERRNOS: ReadonlySet<number> = new Set([
  ERRNO.ENOTTY,
  ERRNO.ENOSYS,
  ERRNO.ENOTSUP,
]);

function errnoOf(error: unknown): number | undefined {
  if (isBurrowError(error)) {
    const errno = error.details.errno;
    return typeof errno === 'number' ? errno : undefined;
  }
  const errno = (error as NodeJS.ErrnoException | undefined)?.errno;
  return typeof errno === 'number' ? Math.abs(errno) : undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The native calls the reader makes; tests replace some to reach paths a test machine lacks. */
export interface FsMetadataCalls {
  lListXattr: typeof lListXattr;
  lGetXattr: typeof lGetXattr;
  getFsFlags: typeof getFsFlags;
  getProjectId: typeof getProjectId;
}

export interface FsMetadataReaderOptions {
  onWarning: WarningCallback;
  /** Leave these out (PBS `--no-xattrs`, `--no-acls`, `--no-fcaps`): they are not even read. */
  skip?: { xattrs?: boolean; acls?: boolean; fcaps?: boolean };
  /** For tests only: replacements for the native calls. */
  calls?: Partial<FsMetadataCalls>;
}

type Feature = 'xattrs' | 'chattr flags' | 'project ids';

/**
 * Reads pxar metadata from the disk. One reader serves a whole backup: it remembers the
 * filesystems already reported as lacking a feature and the filesystem type of each device.
 */
export class FsMetadataReader {
  private readonly warn: WarningCallback;
  private readonly fsTypes = new Map<bigint, number | undefined>();
  private readonly unsupported = new Set<string>();
  private nativeWarned = false;
  private readonly calls: FsMetadataCalls;

  private readonly skipXattrs: boolean;
  private readonly skipAcls: boolean;
  private readonly skipFcaps: boolean;

  constructor(options: FsMetadataReaderOptions) {
    this.warn = options.onWarning;
    this.calls = { lListXattr, lGetXattr, getFsFlags, getProjectId, ...options.calls };
    this.skipXattrs = options.skip?.xattrs === true;
    this.skipAcls = options.skip?.acls === true;
    this.skipFcaps = options.skip?.fcaps === true;
  }

  /**
   * Metadata of the entry at `path`, whose lstat (bigint) is `stats`. `fd`, when given, is open on
   * the same regular file or directory and is used for the flag and project id ioctls; otherwise
   * the entry is opened here (O_RDONLY | O_NOFOLLOW | O_NONBLOCK) for them.
   */
  read(path: string | Buffer, stats: BigIntStats, fd?: number): Metadata {
    const type = Number(stats.mode) & S_IFMT;
    if (type !== S_IFREG && type !== S_IFDIR)
      return { stat: statFromStats(stats), xattrs: [], acl: EMPTY_ACL };
    if (!nativeAvailable()) {
      if (!this.nativeWarned) {
        this.nativeWarned = true;
        this.warn(
          `xattrs, ACLs, file capabilities, chattr flags and quota project ids are not archived: ${nativeUnavailableReason() ?? 'the native helper is unavailable'}`,
          displayPath(path),
        );
      }
      return { stat: statFromStats(stats), xattrs: [], acl: EMPTY_ACL };
    }

    const { xattrs, acl, fcaps } =
      this.skipXattrs && this.skipAcls && this.skipFcaps
        ? { xattrs: [], acl: EMPTY_ACL, fcaps: undefined }
        : this.readXattrs(path, stats);
    let flags = 0;
    let quotaProjectId: number | undefined;
    const ownFd = fd === undefined ? this.openForIoctl(path) : undefined;
    const ioctlFd = fd ?? ownFd;
    if (ioctlFd !== undefined) {
      try {
        flags = this.readFlags(ioctlFd, path, stats);
        quotaProjectId = this.readProjectId(ioctlFd, path, stats);
      } finally {
        if (ownFd !== undefined) closeSync(ownFd);
      }
    }
    const metadata: {
      stat: Stat;
      xattrs: Xattr[];
      acl: Acl;
      fcaps?: Uint8Array;
      quotaProjectId?: number;
    } = { stat: statFromStats(stats, flags), xattrs, acl };
    if (fcaps !== undefined) metadata.fcaps = fcaps;
    if (quotaProjectId !== undefined) metadata.quotaProjectId = quotaProjectId;
    return metadata;
  }

  private readXattrs(
    path: string | Buffer,
    stats: BigIntStats,
  ): { xattrs: Xattr[]; acl: Acl; fcaps?: Uint8Array } {
    const xattrs: Xattr[] = [];
    let fcaps: Uint8Array | undefined;
    let access: Buffer | null = null;
    let deflt: Buffer | null = null;
    let names: Buffer[];
    try {
      names = this.calls.lListXattr(path);
    } catch (error) {
      this.failed('xattrs', 'cannot list xattrs', error, path, stats);
      return { xattrs, acl: EMPTY_ACL };
    }
    const get = (name: Buffer): Buffer | null => {
      try {
        // null: removed since the listing, so there is nothing to keep.
        return this.calls.lGetXattr(path, name);
      } catch (error) {
        this.failed('xattrs', `cannot read xattr ${displayPath(name)}`, error, path, stats);
        return null;
      }
    };
    for (const name of names) {
      const text = name.toString('latin1');
      if (text === ACL_ACCESS_XATTR) {
        if (!this.skipAcls) access = get(name);
      } else if (text === ACL_DEFAULT_XATTR) {
        if (!this.skipAcls) deflt = get(name);
      } else if (text === CAPABILITY_XATTR) {
        if (!this.skipFcaps) fcaps = get(name) ?? undefined;
      } else if (!this.skipXattrs && isArchivedXattrName(name)) {
        const value = get(name);
        if (value === null) continue;
        if (value.length > MAX_XATTR_VALUE_LENGTH) {
          this.warn(
            `xattr ${displayPath(name)} is not archived: its value of ${value.length} bytes exceeds ${MAX_XATTR_VALUE_LENGTH}`,
            displayPath(path),
          );
          continue;
        }
        xattrs.push({ name: new Uint8Array(name), value: new Uint8Array(value) });
      }
    }
    if (fcaps !== undefined && fcaps.length > MAX_XATTR_VALUE_LENGTH) {
      this.warn(`file capabilities of ${fcaps.length} bytes are not archived`, displayPath(path));
      fcaps = undefined;
    }
    let acl: Acl = EMPTY_ACL;
    if (access !== null || deflt !== null) {
      try {
        acl = aclFromXattrs(access, deflt, Number(stats.mode));
      } catch (error) {
        this.warn(`ACL is not archived: ${messageOf(error)}`, displayPath(path));
      }
    }
    return fcaps === undefined ? { xattrs, acl } : { xattrs, acl, fcaps: new Uint8Array(fcaps) };
  }

  private openForIoctl(path: string | Buffer): number | undefined {
    try {
      return openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    } catch (error) {
      this.warn(
        `chattr flags and quota project id are not archived: cannot open: ${messageOf(error)}`,
        displayPath(path),
      );
      return undefined;
    }
  }

  private readFlags(fd: number, path: string | Buffer, stats: BigIntStats): number {
    try {
      // FAT attributes are not read: Burrow's flags come from chattr only.
      return pxarFlagsFromLinux(this.calls.getFsFlags(fd));
    } catch (error) {
      this.failed('chattr flags', 'cannot read chattr flags', error, path, stats);
      return 0;
    }
  }

  private readProjectId(fd: number, path: string | Buffer, stats: BigIntStats): number | undefined {
    const fsType = this.fsType(path, stats.dev);
    if (fsType === undefined || !PROJECT_ID_FILESYSTEMS.has(fsType)) return undefined;
    try {
      const projid = this.calls.getProjectId(fd);
      return projid === 0 ? undefined : projid;
    } catch (error) {
      this.failed('project ids', 'cannot read the quota project id', error, path, stats);
      return undefined;
    }
  }

  /** statfs f_type of the filesystem holding `path`, cached per device. */
  private fsType(path: string | Buffer, dev: bigint): number | undefined {
    if (this.fsTypes.has(dev)) return this.fsTypes.get(dev);
    let type: number | undefined;
    try {
      type = Number(statfsSync(path, { bigint: true }).type);
    } catch (error) {
      this.warn(
        `quota project ids are not archived from this filesystem: statfs failed: ${messageOf(error)}`,
        displayPath(path),
      );
    }
    this.fsTypes.set(dev, type);
    return type;
  }

  /** Warns about a failed read: once per device for a missing feature, else per entry. */
  private failed(
    feature: Feature,
    what: string,
    error: unknown,
    path: string | Buffer,
    stats: BigIntStats,
  ): void {
    const errno = errnoOf(error);
    if (errno !== undefined && UNSUPPORTED_ERRNOS.has(errno)) {
      const key = `${feature}\0${stats.dev}`;
      if (this.unsupported.has(key)) return;
      this.unsupported.add(key);
      this.warn(
        `the filesystem (device ${stats.dev}) does not support ${feature}; none are archived from it (${messageOf(error)})`,
        displayPath(path),
      );
      return;
    }
    this.warn(`${what}: ${messageOf(error)}`, displayPath(path));
  }
}

/** Convenience for one entry: lstat (not following symlinks) and read its metadata. */
export function readEntryMetadata(path: string | Buffer, onWarning: WarningCallback): Metadata {
  return new FsMetadataReader({ onWarning }).read(path, lstatSync(path, { bigint: true }));
}
