/**
 * The Linux file calls Node lacks and PBS compatibility needs (pbs-formats §2.4, §2.6, §6.7):
 * POSIX record locks (fcntl F_SETLK), flock(2), an atime-only touch (utimensat with UTIME_NOW /
 * UTIME_OMIT, not following symlinks) and syncfs(2). They come from a small N-API addon,
 * native/burrow_fs.c, that `npm ci` builds with node-gyp into build/Release/burrow_fs.node.
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
 * nativeAvailable() says which path is in use.
 */
import { fsync, fsyncSync, lstatSync, lutimesSync } from 'node:fs';
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
}

/** Bumped together with the `abiVersion` export of native/burrow_fs.c; a stale build is not used. */
const EXPECTED_ABI = 1;

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
