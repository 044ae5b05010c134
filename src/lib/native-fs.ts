/**
 * The Linux file calls Node lacks and PBS compatibility needs (pbs-formats §2.4, §2.6, §6.7):
 * POSIX record locks (fcntl F_SETLK), flock(2), an atime-only touch (utimensat with UTIME_NOW /
 * UTIME_OMIT, not following symlinks) and syncfs(2); for pxar, xattrs (l*xattr), chattr flags
 * and project ids (ioctl), mknod(2) and utimensat with nanoseconds; and the buzhash chunker's scan
 * loop. They come from a small N-API addon, native/*.c, that `npm ci` builds with node-gyp into
 * build/Release/burrow_fs.node (by hand: node-gyp rebuild; npm's bundled copy is at
 * $(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js, with --nodedir=/usr offline).
 *
 * When the addon cannot be loaded (not built, `npm ci --ignore-scripts`, or BURROW_NATIVE=off
 * in the environment when this module loads), the functions fall back as follows:
 * - touchAtime: lstat, then lutimes(path, now, the mtime just read). For chunk files this is
 *   faithful: their mtime never changes after the rename that created them, so writing it back
 *   keeps it (to about a microsecond, the precision of a double). A file whose mtime changes
 *   between the lstat and the lutimes would lose that change.
 * - syncfs / syncfsAsync: fsync of the given fd only. That is weaker: it flushes that one file
 *   (or directory), not every dirty file of the filesystem, so `sync-level=filesystem` degrades
 *   to roughly `file` for whatever the caller did not fsync itself.
 * - fcntlSetLock / flockNonBlocking: no faithful emulation exists in Node (a lock that other
 *   processes cannot see is no lock), so they throw BurrowError('NATIVE_UNAVAILABLE').
 * - setTimesNs: lutimes/utimes with a double, about a microsecond of precision.
 * - xattrs, chattr flags, project ids, mknod: NATIVE_UNAVAILABLE (no Node equivalent).
 * - seekData / seekHole / blockDeviceSize: NATIVE_UNAVAILABLE; sparseSeekAvailable() tells the
 *   image reader to read holes as data and to take a block device's size from sysfs instead.
 * - the chunker's scan: its TypeScript loop (nativeBuzhashScan() returns undefined).
 * - pxar's filename hash: its TypeScript function (nativePxarHash() returns undefined).
 * nativeAvailable() says which path is in use.
 */
import { fsync, fsyncSync, lstatSync, lutimesSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';
import { BurrowError } from './errors.js';

/** The addon's exports; every call returns an errno (0 = success). */
interface NativeBinding {
  readonly abiVersion: number;
  fcntlSetLock(fd: number, type: number): number;
  flockNonBlocking(fd: number, op: number): number;
  touchAtime(path: string): number;
  syncfs(fd: number): number;
  syncfsAsync(fd: number, callback: (errno: number) => void): void;
  lListXattr(path: string | Uint8Array): Buffer | number;
  lGetXattr(path: string | Uint8Array, name: Uint8Array): Buffer | number;
  lSetXattr(path: string | Uint8Array, name: Uint8Array, value: Uint8Array): number;
  /** Flags (>= 0) or -errno. */
  getFsFlags(fd: number): number;
  setFsFlags(fd: number, flags: number): number;
  /** Project id (>= 0) or -errno. */
  getProjectId(fd: number): number;
  setProjectId(fd: number, projid: number): number;
  mknod(path: string | Uint8Array, mode: number, major: number, minor: number): number;
  setTimesNs(
    path: string | Uint8Array,
    atimeSecs: number,
    atimeNanos: number,
    mtimeSecs: number,
    mtimeNanos: number,
    follow: boolean,
  ): number;
  /** lseek SEEK_DATA / SEEK_HOLE: the offset (>= 0) or -errno. */
  seekData(fd: number, offset: number): number;
  seekHole(fd: number, offset: number): number;
  /** ioctl BLKGETSIZE64: bytes (>= 0) or -errno. */
  blockDeviceSize(fd: number): number;
  /** See native/buzhash.c: index just after the cut, or -1. */
  buzhashScan(this: void, state: Int32Array, data: Uint8Array, start: number): number;
  buzhashKernel(mode?: boolean): string;
  /** See native/pxarhash.c: SipHash-2-4 under pxar's key. */
  pxarHash(this: void, name: Uint8Array): bigint;
  /** memmove; returns length. Ranges are checked (RangeError). */
  copyBytes(
    this: void,
    dst: Uint8Array,
    dstOffset: number,
    src: Uint8Array,
    srcOffset: number,
    length: number,
  ): number;
}

/** Bumped together with the `abiVersion` export of native/burrow_fs.c; a stale build is not used. */
const EXPECTED_ABI = 5;

// This file sits two levels below the package root both as src/lib/native-fs.ts (tsx, vitest)
// and as dist/lib/native-fs.js, so one relative path finds the node-gyp output from either.
const ADDON_PATH = fileURLToPath(new URL('../../build/Release/burrow_fs.node', import.meta.url));

function loadBinding(): { binding?: NativeBinding; reason?: string } {
  if (process.env.BURROW_NATIVE === 'off') return { reason: 'disabled by BURROW_NATIVE=off' };
  try {
    const require = createRequire(import.meta.url);
    const binding = require(ADDON_PATH) as NativeBinding;
    if (binding.abiVersion !== EXPECTED_ABI) {
      return {
        reason: `${ADDON_PATH} is a stale build (abi ${binding.abiVersion}, want ${EXPECTED_ABI}); run npm ci`,
      };
    }
    return { binding };
  } catch (error) {
    return {
      reason: `cannot load ${ADDON_PATH}: ${error instanceof Error ? error.message : String(error)}`,
    };
  }
}

const loaded = loadBinding();
let binding: NativeBinding | undefined = loaded.binding;
let unavailableReason: string | undefined = loaded.reason;

/** True when the addon is loaded; false means the documented fallbacks are in use. */
export function nativeAvailable(): boolean {
  return binding !== undefined;
}

/** Why the addon is not in use (undefined when it is); for diagnostics and error details. */
export function nativeUnavailableReason(): string | undefined {
  return unavailableReason;
}

/**
 * For tests only: switch to the fallbacks (true) or back to the addon if it loaded (false), as
 * BURROW_NATIVE=off does at load time.
 */
export function forceNativeFallback(off: boolean): void {
  if (off) {
    binding = undefined;
    unavailableReason = 'forced off by forceNativeFallback()';
  } else {
    binding = loaded.binding;
    unavailableReason = loaded.reason;
  }
}

const ENOENT = 2;
const EAGAIN = 11; // == EWOULDBLOCK on Linux
const EACCES = 13;

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}

function ioError(syscall: string, errno: number, details: Record<string, unknown>): BurrowError {
  const target =
    typeof details.path === 'string' ? ` ${details.path}` : ` fd ${String(details.fd)}`;
  return new BurrowError('IO_ERROR', `${syscall}${target} failed: ${errnoName(errno)}`, {
    details: { syscall, errno, errnoName: errnoName(errno), ...details },
  });
}

function requireBinding(what: string): NativeBinding {
  if (binding === undefined) {
    throw new BurrowError(
      'NATIVE_UNAVAILABLE',
      `${what} needs Burrow's native helper, which is not available: ${unavailableReason ?? 'unknown reason'}`,
      {
        details: { reason: unavailableReason, addon: ADDON_PATH },
      },
    );
  }
  return binding;
}

const FCNTL_TYPES = { read: 0, write: 1, unlock: 2 } as const;
const FLOCK_OPS = { shared: 0, exclusive: 1, unlock: 2 } as const;

/** Non-blocking POSIX record lock (fcntl F_SETLK, whole file). false = another process holds a conflicting lock. */
export function fcntlSetLock(fd: number, kind: 'read' | 'write' | 'unlock'): boolean {
  const type = FCNTL_TYPES[kind] as number | undefined;
  if (type === undefined)
    throw new BurrowError('INVALID_ARGUMENT', `fcntlSetLock: unknown lock kind ${String(kind)}`);
  const errno = requireBinding('fcntl record locking').fcntlSetLock(fd, type);
  if (errno === 0) return true;
  if (errno === EACCES || errno === EAGAIN) return false;
  throw ioError(`fcntl(F_SETLK, ${kind})`, errno, { fd });
}

/** Non-blocking flock(2). false = would block. */
export function flockNonBlocking(fd: number, kind: 'shared' | 'exclusive' | 'unlock'): boolean {
  const op = FLOCK_OPS[kind] as number | undefined;
  if (op === undefined)
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `flockNonBlocking: unknown lock kind ${String(kind)}`,
    );
  const errno = requireBinding('flock').flockNonBlocking(fd, op);
  if (errno === 0) return true;
  if (errno === EAGAIN) return false;
  throw ioError(`flock(${kind})`, errno, { fd });
}

/**
 * utimensat(path, atime=UTIME_NOW, mtime=UTIME_OMIT, AT_SYMLINK_NOFOLLOW). false on ENOENT;
 * other errors throw BurrowError('IO_ERROR', ..., {details:{errno, path}}).
 */
export function touchAtime(path: string): boolean {
  if (binding !== undefined) {
    const errno = binding.touchAtime(path);
    if (errno === 0) return true;
    if (errno === ENOENT) return false;
    throw ioError('utimensat', errno, { path });
  }
  return touchAtimeFallback(path);
}

function touchAtimeFallback(path: string): boolean {
  try {
    const st = lstatSync(path);
    lutimesSync(path, Date.now() / 1000, st.mtimeMs / 1000);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    const errno = Math.abs((error as NodeJS.ErrnoException).errno ?? 0);
    throw new BurrowError('IO_ERROR', `touch ${path} failed: ${code ?? String(error)}`, {
      details: { syscall: 'lutimes', errno, errnoName: code, path },
      cause: error,
    });
  }
}

/** syncfs(2) on the filesystem holding fd (blocks the calling thread until the flush is done). */
export function syncfs(fd: number): void {
  if (binding !== undefined) {
    const errno = binding.syncfs(fd);
    if (errno !== 0) throw ioError('syncfs', errno, { fd });
    return;
  }
  try {
    fsyncSync(fd);
  } catch (error) {
    throw fallbackSyncError(fd, error);
  }
}

/** syncfs(2) on the libuv thread pool, so a long flush does not stall the event loop. */
export function syncfsAsync(fd: number): Promise<void> {
  const native = binding;
  return new Promise((resolve, reject) => {
    if (native !== undefined) {
      native.syncfsAsync(fd, (errno) =>
        errno === 0 ? resolve() : reject(ioError('syncfs', errno, { fd })),
      );
    } else {
      fsync(fd, (error) => (error ? reject(fallbackSyncError(fd, error)) : resolve()));
    }
  });
}

function fallbackSyncError(fd: number, error: unknown): BurrowError {
  const e = error as NodeJS.ErrnoException;
  return new BurrowError('IO_ERROR', `fsync fd ${fd} failed: ${e.code ?? String(error)}`, {
    details: { syscall: 'fsync', errno: Math.abs(e.errno ?? 0), errnoName: e.code, fd },
    cause: error,
  });
}

// ---------------------------------------------------------------------------------------------
// File metadata for the pxar archiver and extractor: xattrs, chattr flags, quota project ids,
// device nodes and nanosecond timestamps. Without the addon only setTimesNs has a fallback; the
// others throw NATIVE_UNAVAILABLE, because silently dropping metadata would make a wrong archive.
// ---------------------------------------------------------------------------------------------

const ENODATA = 61;
const UINT32_MAX = 0xffff_ffff;

/** Paths and names as given, for messages and details (bytes shown as UTF-8, lossy). */
function display(value: string | Uint8Array): string {
  return typeof value === 'string' ? value : Buffer.from(value).toString('utf8');
}

/** Strings and byte arrays reach C as NUL-terminated names: an inner NUL would name another file. */
function checkName(value: string | Uint8Array, what: string, fn: string): void {
  const ok =
    typeof value === 'string'
      ? !value.includes('\0')
      : value instanceof Uint8Array && !value.includes(0);
  if (!ok) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${fn}: ${what} must be a string or Buffer without NUL bytes`,
      {
        details: {
          [what]:
            typeof value === 'string' || value instanceof Uint8Array
              ? display(value)
              : String(value),
        },
      },
    );
  }
}

function checkUint(value: number, what: string, fn: string, max: number = UINT32_MAX): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${fn}: ${what} must be an integer from 0 to ${max}, got ${String(value)}`,
      { details: { [what]: value } },
    );
  }
}

const checkFd = (fd: number, fn: string): void => checkUint(fd, 'fd', fn, 0x7fff_ffff);

function pathError(
  syscall: string,
  errno: number,
  path: string | Uint8Array,
  extra: Record<string, unknown> = {},
): BurrowError {
  return ioError(syscall, errno, { path: display(path), ...extra });
}

/** llistxattr (no symlink follow). Names as raw bytes. [] when the fs has none. Throws BurrowError IO_ERROR with details {syscall, errno, errnoName, path} (ENOTSUP/EOPNOTSUPP included: caller decides to warn). */
export function lListXattr(path: string | Buffer): Buffer[] {
  checkName(path, 'path', 'lListXattr');
  const result = requireBinding('llistxattr').lListXattr(path);
  if (typeof result === 'number') throw pathError('llistxattr', result, path);
  // The kernel's list is "name\0name\0...": every name, the last included, ends in a NUL.
  const names: Buffer[] = [];
  let from = 0;
  for (let i = 0; i < result.length; i++) {
    if (result[i] === 0) {
      if (i > from) names.push(result.subarray(from, i));
      from = i + 1;
    }
  }
  return names;
}

/** lgetxattr; null when the attribute does not exist (ENODATA). Other errors as above. */
export function lGetXattr(path: string | Buffer, name: Buffer): Buffer | null {
  checkName(path, 'path', 'lGetXattr');
  checkName(name, 'name', 'lGetXattr');
  const result = requireBinding('lgetxattr').lGetXattr(path, name);
  if (typeof result !== 'number') return result;
  if (result === ENODATA) return null;
  throw pathError('lgetxattr', result, path, { name: display(name) });
}

/** lsetxattr (flags 0 = create or replace). */
export function lSetXattr(path: string | Buffer, name: Buffer, value: Uint8Array): void {
  checkName(path, 'path', 'lSetXattr');
  checkName(name, 'name', 'lSetXattr');
  if (!(value instanceof Uint8Array))
    throw new BurrowError('INVALID_ARGUMENT', 'lSetXattr: value must be a Uint8Array');
  const errno = requireBinding('lsetxattr').lSetXattr(path, name, value);
  if (errno !== 0) throw pathError('lsetxattr', errno, path, { name: display(name) });
}

/** ioctl FS_IOC_GETFLAGS / FS_IOC_SETFLAGS on an open fd (chattr flags, Linux FS_*_FL values). */
export function getFsFlags(fd: number): number {
  checkFd(fd, 'getFsFlags');
  const result = requireBinding('FS_IOC_GETFLAGS').getFsFlags(fd);
  if (result < 0) throw ioError('ioctl(FS_IOC_GETFLAGS)', -result, { fd });
  return result;
}

export function setFsFlags(fd: number, flags: number): void {
  checkFd(fd, 'setFsFlags');
  checkUint(flags, 'flags', 'setFsFlags');
  const errno = requireBinding('FS_IOC_SETFLAGS').setFsFlags(fd, flags);
  if (errno !== 0) throw ioError('ioctl(FS_IOC_SETFLAGS)', errno, { fd, flags });
}

/** ioctl FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR: the quota project id (fsx_projid). setter keeps the other fsxattr fields. */
export function getProjectId(fd: number): number {
  checkFd(fd, 'getProjectId');
  const result = requireBinding('FS_IOC_FSGETXATTR').getProjectId(fd);
  if (result < 0) throw ioError('ioctl(FS_IOC_FSGETXATTR)', -result, { fd });
  return result;
}

export function setProjectId(fd: number, projid: number): void {
  checkFd(fd, 'setProjectId');
  checkUint(projid, 'projid', 'setProjectId');
  const errno = requireBinding('FS_IOC_FSSETXATTR').setProjectId(fd, projid);
  if (errno !== 0) throw ioError('ioctl(FS_IOC_FSSETXATTR)', errno, { fd, projid });
}

/** mknod(2): mode includes the file type bits (S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK); dev = makedev(major, minor) the glibc way. */
export function mknod(path: string | Buffer, mode: number, major: number, minor: number): void {
  checkName(path, 'path', 'mknod');
  checkUint(mode, 'mode', 'mknod');
  checkUint(major, 'major', 'mknod');
  checkUint(minor, 'minor', 'mknod');
  const errno = requireBinding('mknod').mknod(path, mode, major, minor);
  if (errno !== 0) throw pathError('mknod', errno, path, { mode, major, minor });
}

function checkTime(t: { secs: number; nanos: number }, what: string): void {
  if (
    !Number.isSafeInteger(t.secs) ||
    !Number.isInteger(t.nanos) ||
    t.nanos < 0 ||
    t.nanos > 999_999_999
  ) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `setTimesNs: ${what} must be {secs: integer, nanos: 0..999999999}, got ${JSON.stringify(t)}`,
      { details: { [what]: t } },
    );
  }
}

/**
 * utimensat(AT_FDCWD, path, ..., followSymlinks ? 0 : AT_SYMLINK_NOFOLLOW) with exact seconds+nanoseconds (Node's utimes loses ns precision).
 *
 * Fallback without the addon: fs.lutimesSync / fs.utimesSync with `secs + nanos / 1e9` as a
 * double. That keeps about a microsecond for present-day times; the nanoseconds below it are lost.
 */
export function setTimesNs(
  path: string | Buffer,
  atime: { secs: number; nanos: number },
  mtime: { secs: number; nanos: number },
  followSymlinks = false,
): void {
  checkName(path, 'path', 'setTimesNs');
  checkTime(atime, 'atime');
  checkTime(mtime, 'mtime');
  if (binding !== undefined) {
    const errno = binding.setTimesNs(
      path,
      atime.secs,
      atime.nanos,
      mtime.secs,
      mtime.nanos,
      followSymlinks,
    );
    if (errno !== 0) throw pathError('utimensat', errno, path);
    return;
  }
  const a = atime.secs + atime.nanos / 1e9;
  const m = mtime.secs + mtime.nanos / 1e9;
  try {
    if (followSymlinks) utimesSync(path, a, m);
    else lutimesSync(path, a, m);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new BurrowError(
      'IO_ERROR',
      `utimes ${display(path)} failed: ${e.code ?? String(error)}`,
      {
        details: {
          syscall: followSymlinks ? 'utimes' : 'lutimes',
          errno: Math.abs(e.errno ?? 0),
          errnoName: e.code,
          path: display(path),
        },
        cause: error,
      },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Sparse files and block devices, for image backups: holes are found without reading them, and a
// block device's size comes from the kernel (fstat reports 0 for it). Without the addon the
// callers read everything and take a block device's size from sysfs.
// ---------------------------------------------------------------------------------------------

const ENXIO = 6;

/** True when seekData/seekHole/blockDeviceSize can run (the addon is loaded). */
export function sparseSeekAvailable(): boolean {
  return binding !== undefined;
}

function checkOffset(offset: number, fn: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${fn}: offset must be a non-negative safe integer, got ${String(offset)}`,
      { details: { offset } },
    );
  }
}

function seek(fd: number, offset: number, which: 'SEEK_DATA' | 'SEEK_HOLE'): number | undefined {
  const fn = which === 'SEEK_DATA' ? 'seekData' : 'seekHole';
  checkFd(fd, fn);
  checkOffset(offset, fn);
  const native = requireBinding(`lseek(${which})`);
  const result = which === 'SEEK_DATA' ? native.seekData(fd, offset) : native.seekHole(fd, offset);
  if (result >= 0) return result;
  if (-result === ENXIO) return undefined;
  throw ioError(`lseek(${which})`, -result, { fd, offset });
}

/**
 * lseek(fd, offset, SEEK_DATA): the start of the first data byte at or after `offset`, or
 * undefined when there is none (only a hole up to the end, or `offset` at/after the end).
 * File systems without hole tracking report all of the file as data. Moves the fd's position.
 */
export function seekData(fd: number, offset: number): number | undefined {
  return seek(fd, offset, 'SEEK_DATA');
}

/**
 * lseek(fd, offset, SEEK_HOLE): the start of the first hole at or after `offset` (the end of the
 * file counts as one), or undefined when `offset` is at/after the end. Moves the fd's position.
 */
export function seekHole(fd: number, offset: number): number | undefined {
  return seek(fd, offset, 'SEEK_HOLE');
}

/** ioctl(fd, BLKGETSIZE64): the size in bytes of the block device open as `fd`. */
export function blockDeviceSize(fd: number): number {
  checkFd(fd, 'blockDeviceSize');
  const result = requireBinding('ioctl(BLKGETSIZE64)').blockDeviceSize(fd);
  if (result < 0) throw ioError('ioctl(BLKGETSIZE64)', -result, { fd });
  return result;
}

/**
 * The chunker's native scan loop (native/buzhash.c), or undefined when the addon is not in use
 * (the chunker then runs its TypeScript loop). Looked up on every call so forceNativeFallback
 * switches the chunker too.
 */
export function nativeBuzhashScan():
  ((state: Int32Array, data: Uint8Array, start: number) => number) | undefined {
  return binding?.buzhashScan;
}

/** pxar's filename hash (native/pxarhash.c), or undefined without the addon. */
export function nativePxarHash(): ((name: Uint8Array) => bigint) | undefined {
  return binding?.pxarHash;
}

/**
 * Native memmove (native/burrow_fs.c copyBytes), or undefined without the addon. For copies into
 * or out of a SharedArrayBuffer, which V8 does with relaxed atomics, byte by byte when the two
 * sides are not equally aligned.
 */
export function nativeCopyBytes():
  | ((
      dst: Uint8Array,
      dstOffset: number,
      src: Uint8Array,
      srcOffset: number,
      length: number,
    ) => number)
  | undefined {
  return binding?.copyBytes;
}

/**
 * Which native scan kernel runs: 'avx512' (AVX-512 VBMI CPUs) or 'scalar'; undefined without
 * the addon. `prefer` false forces the scalar kernel, true restores the best available, so tests
 * and benchmarks can cover every path.
 */
export function nativeBuzhashKernel(prefer?: boolean): 'avx512' | 'scalar' | undefined {
  if (binding === undefined) return undefined;
  return binding.buzhashKernel(prefer) === 'avx512' ? 'avx512' : 'scalar';
}
