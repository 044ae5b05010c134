import {
  closeSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isBurrowError } from './errors.js';
import {
  fcntlSetLock,
  flockNonBlocking,
  forceNativeFallback,
  getFsFlags,
  getProjectId,
  lGetXattr,
  lListXattr,
  lSetXattr,
  mknod,
  nativeAvailable,
  nativeBuzhashKernel,
  nativeBuzhashScan,
  nativePxarHash,
  nativeUnavailableReason,
  setFsFlags,
  setProjectId,
  setTimesNs,
  syncfs,
  syncfsAsync,
  touchAtime,
} from './native-fs.js';

const dir = mkdtempSync(join(tmpdir(), 'burrow-native-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => forceNativeFallback(false));

/** 2001-09-09: far enough back that any touch is visible. */
const OLD = 1_000_000_000;
let counter = 0;

function oldFile(): string {
  const path = join(dir, `f${counter++}`);
  writeFileSync(path, 'x');
  utimesSync(path, OLD, OLD + 12.345678);
  return path;
}

function expectCode(fn: () => unknown, code: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(isBurrowError(thrown), String(thrown)).toBe(true);
  expect((thrown as { code: string }).code).toBe(code);
}

function touchCases(): void {
  it('sets atime to now and keeps mtime', () => {
    const path = oldFile();
    const before = statSync(path, { bigint: true });
    const start = Date.now();
    expect(touchAtime(path)).toBe(true);
    const after = statSync(path, { bigint: true });
    expect(after.atimeMs).toBeGreaterThanOrEqual(BigInt(Math.floor(start / 1000) * 1000 - 1000));
    // The addon leaves mtime untouched to the nanosecond; the fallback writes back what it read (µs).
    const drift = after.mtimeNs - before.mtimeNs;
    expect(drift < 0n ? -drift : drift).toBeLessThanOrEqual(nativeAvailable() ? 0n : 1000n);
    expect(after.mtimeMs).toBe(BigInt(OLD * 1000 + 12345));
  });

  it('returns false for a missing file', () => {
    expect(touchAtime(join(dir, 'missing'))).toBe(false);
  });

  it('does not follow symlinks', () => {
    const target = oldFile();
    const link = join(dir, `link${counter++}`);
    symlinkSync(target, link);
    expect(touchAtime(link)).toBe(true);
    expect(statSync(target).atimeMs).toBe(OLD * 1000);
    expect(lstatSync(link).atimeMs).toBeGreaterThan(OLD * 1000 + 1000);
  });

  it('a dangling symlink is touched itself, not reported missing', () => {
    const link = join(dir, `dangling${counter++}`);
    symlinkSync(join(dir, 'nowhere'), link);
    expect(touchAtime(link)).toBe(true);
  });

  it('other errors are IO_ERROR with errno and path', () => {
    const file = oldFile();
    const bad = join(file, 'child'); // ENOTDIR
    expectCode(() => touchAtime(bad), 'IO_ERROR');
    try {
      touchAtime(bad);
    } catch (error) {
      expect((error as { details: Record<string, unknown> }).details).toMatchObject({
        errno: 20,
        path: bad,
      });
    }
  });

  it('syncfs and syncfsAsync flush through an fd', async () => {
    const fd = openSync(oldFile(), 'r');
    try {
      syncfs(fd);
      await syncfsAsync(fd);
    } finally {
      closeSync(fd);
    }
  });

  it('syncfs on a bad fd is IO_ERROR', async () => {
    expectCode(() => syncfs(1_000_000), 'IO_ERROR');
    await expect(syncfsAsync(1_000_000)).rejects.toMatchObject({ code: 'IO_ERROR' });
  });
}

describe('native addon', () => {
  it('is built and loaded', () => {
    expect(nativeUnavailableReason()).toBeUndefined();
    expect(nativeAvailable()).toBe(true);
  });

  touchCases();

  it('flock follows open file descriptions: two fds of one file exclude each other', () => {
    const path = oldFile();
    const a = openSync(path, 'r');
    const b = openSync(path, 'r');
    try {
      expect(flockNonBlocking(a, 'exclusive')).toBe(true);
      expect(flockNonBlocking(b, 'shared')).toBe(false);
      expect(flockNonBlocking(a, 'shared')).toBe(true); // conversion on the holder
      expect(flockNonBlocking(b, 'shared')).toBe(true);
      expect(flockNonBlocking(b, 'exclusive')).toBe(false);
      expect(flockNonBlocking(a, 'unlock')).toBe(true);
      expect(flockNonBlocking(b, 'exclusive')).toBe(true);
    } finally {
      closeSync(a);
      closeSync(b);
    }
  });

  it('fcntl locks belong to the process: two fds of one file do not conflict', () => {
    const path = oldFile();
    const a = openSync(path, 'r+');
    const b = openSync(path, 'r+');
    try {
      expect(fcntlSetLock(a, 'read')).toBe(true);
      expect(fcntlSetLock(b, 'write')).toBe(true);
      expect(fcntlSetLock(a, 'unlock')).toBe(true);
    } finally {
      closeSync(a);
      closeSync(b);
    }
  });

  it('lock calls on a bad fd are IO_ERROR, not "would block"', () => {
    expectCode(() => fcntlSetLock(1_000_000, 'read'), 'IO_ERROR');
    expectCode(() => flockNonBlocking(1_000_000, 'shared'), 'IO_ERROR');
  });

  it('a write lock needs an fd open for writing (EBADF)', () => {
    const fd = openSync(oldFile(), 'r');
    try {
      expectCode(() => fcntlSetLock(fd, 'write'), 'IO_ERROR');
    } finally {
      closeSync(fd);
    }
  });
});

describe('fallback without the addon', () => {
  it('BURROW_NATIVE=off at load selects the fallback', async () => {
    vi.stubEnv('BURROW_NATIVE', 'off');
    vi.resetModules();
    try {
      const fresh = await import('./native-fs.js');
      expect(fresh.nativeAvailable()).toBe(false);
      expect(fresh.nativeUnavailableReason()).toMatch(/BURROW_NATIVE=off/);
      expect(() => fresh.flockNonBlocking(0, 'shared')).toThrow(/native helper/);
    } finally {
      vi.unstubAllEnvs();
      vi.resetModules();
    }
  });

  describe('forced off (forceNativeFallback)', () => {
    beforeEach(() => forceNativeFallback(true));

    it('reports it', () => {
      expect(nativeAvailable()).toBe(false);
      expect(nativeUnavailableReason()).toMatch(/forced off/);
    });

    it('locks throw NATIVE_UNAVAILABLE instead of pretending', () => {
      const fd = openSync(oldFile(), 'r+');
      try {
        expectCode(() => fcntlSetLock(fd, 'read'), 'NATIVE_UNAVAILABLE');
        expectCode(() => flockNonBlocking(fd, 'exclusive'), 'NATIVE_UNAVAILABLE');
      } finally {
        closeSync(fd);
      }
    });

    // touch (lstat + lutimes) and syncfs (fsync) must keep the same contract.
    touchCases();
  });
});

// ---------------------------------------------------------------------------------------------
// File metadata calls for pxar (xattrs, chattr flags, project ids, mknod, nanosecond times).
// ---------------------------------------------------------------------------------------------

const isRoot = process.getuid?.() === 0;

function errorOf(fn: () => unknown): { code: string; details: Record<string, unknown> } {
  try {
    fn();
  } catch (error) {
    expect(isBurrowError(error), String(error)).toBe(true);
    return error as { code: string; details: Record<string, unknown> };
  }
  throw new Error('expected a throw');
}

const hexSorted = (names: Buffer[]): string[] => names.map((n) => n.toString('hex')).sort();

describe('file metadata calls (addon)', () => {
  let meta: string;
  beforeEach(() => {
    meta = mkdtempSync(join(tmpdir(), 'burrow-meta-'));
  });
  afterEach(() => rmSync(meta, { recursive: true, force: true }));

  const file = (name = 'f'): string => {
    const p = join(meta, name);
    writeFileSync(p, 'data');
    return p;
  };

  describe('xattrs', () => {
    it('round-trips binary names and values, and lists them as raw bytes', () => {
      const p = file();
      expect(lListXattr(p)).toEqual([]);
      // Names are bytes after the namespace prefix: non-UTF-8, control bytes.
      const a = Buffer.concat([Buffer.from('user.'), Buffer.from([0xff, 0xfe, 0x01, 0x7f])]);
      const b = Buffer.from('user.plain');
      const c = Buffer.from('user.empty');
      const va = Buffer.from([0, 1, 2, 0, 255, 0]);
      const vb = Buffer.alloc(3000, 0xab); // beyond the inode, in an xattr block
      lSetXattr(p, a, va);
      lSetXattr(p, b, vb);
      lSetXattr(p, c, new Uint8Array(0));
      expect(hexSorted(lListXattr(p))).toEqual(hexSorted([a, b, c]));
      expect(lGetXattr(p, a)?.equals(va)).toBe(true);
      expect(lGetXattr(p, b)?.equals(vb)).toBe(true);
      expect(lGetXattr(p, c)?.length).toBe(0);
      // flags 0: an existing value is replaced.
      lSetXattr(p, a, Buffer.from('new'));
      expect(lGetXattr(p, a)?.toString()).toBe('new');
    });

    it('a missing attribute is null (ENODATA), a missing file is IO_ERROR ENOENT', () => {
      const p = file();
      expect(lGetXattr(p, Buffer.from('user.absent'))).toBeNull();
      const missing = join(meta, 'missing');
      const e = errorOf(() => lGetXattr(missing, Buffer.from('user.x')));
      expect(e.code).toBe('IO_ERROR');
      expect(e.details).toMatchObject({
        syscall: 'lgetxattr',
        errno: 2,
        errnoName: 'ENOENT',
        path: missing,
      });
      expect(errorOf(() => lListXattr(missing)).details).toMatchObject({
        syscall: 'llistxattr',
        errnoName: 'ENOENT',
        path: missing,
      });
    });

    it('does not follow symlinks', () => {
      const target = file('target');
      lSetXattr(target, Buffer.from('user.t'), Buffer.from('v'));
      const link = join(meta, 'link');
      symlinkSync('target', link);
      expect(lListXattr(link).map((n) => n.toString())).not.toContain('user.t');
      expect(lGetXattr(link, Buffer.from('user.t'))).toBeNull();
      // The kernel refuses user.* on a symlink itself: proof the call reached the link.
      const e = errorOf(() => lSetXattr(link, Buffer.from('user.t'), Buffer.from('w')));
      expect(e.details.errnoName).toBe('EPERM');
      expect(lGetXattr(target, Buffer.from('user.t'))?.toString()).toBe('v');
    });

    it('takes paths as raw bytes (a non-UTF-8 file name)', () => {
      const raw = Buffer.concat([Buffer.from(meta + '/'), Buffer.from([0x66, 0xff, 0x80])]);
      writeFileSync(raw, 'x');
      expect(readdirSync(meta, { encoding: 'buffer' })[0]?.equals(raw.subarray(-3))).toBe(true);
      lSetXattr(raw, Buffer.from('user.k'), Buffer.from([7]));
      expect(lGetXattr(raw, Buffer.from('user.k'))?.[0]).toBe(7);
      expect(lListXattr(raw).map((n) => n.toString())).toEqual(['user.k']);
    });

    it('a filesystem without xattr support reports ENOTSUP as IO_ERROR', () => {
      // procfs has no user xattrs at all.
      const e = errorOf(() => lGetXattr('/proc/self/status', Buffer.from('user.x')));
      expect(e.code).toBe('IO_ERROR');
      expect(e.details.errnoName).toBe('ENOTSUP');
    });

    it('rejects NUL bytes in paths and names before any system call', () => {
      const p = file();
      expect(errorOf(() => lListXattr(p + '\0x')).code).toBe('INVALID_ARGUMENT');
      expect(errorOf(() => lListXattr(Buffer.from(p + '\0x'))).code).toBe('INVALID_ARGUMENT');
      expect(errorOf(() => lGetXattr(p, Buffer.from('user.a\0b'))).code).toBe('INVALID_ARGUMENT');
      expect(errorOf(() => lSetXattr(p, Buffer.from('user.\0'), Buffer.from('v'))).code).toBe(
        'INVALID_ARGUMENT',
      );
      expect(lListXattr(p)).toEqual([]);
    });
  });

  describe('chattr flags and project id', () => {
    const FS_NODUMP_FL = 0x40;

    it('sets and clears FS_NODUMP_FL (chattr +d)', () => {
      const fd = openSync(file(), 'r');
      try {
        const before = getFsFlags(fd);
        expect(before & FS_NODUMP_FL).toBe(0);
        setFsFlags(fd, before | FS_NODUMP_FL);
        expect(getFsFlags(fd)).toBe(before | FS_NODUMP_FL);
        setFsFlags(fd, before);
        expect(getFsFlags(fd)).toBe(before);
      } finally {
        closeSync(fd);
      }
    });

    it('an fd without flags support is ENOTTY; a bad fd is EBADF', () => {
      const fd = openSync('/dev/null', 'r');
      try {
        expect(errorOf(() => getFsFlags(fd)).details).toMatchObject({
          syscall: 'ioctl(FS_IOC_GETFLAGS)',
          errnoName: 'ENOTTY',
          fd,
        });
        expect(errorOf(() => getProjectId(fd)).details.errnoName).toBe('ENOTTY');
      } finally {
        closeSync(fd);
      }
      expect(errorOf(() => getFsFlags(1_000_000)).details.errnoName).toBe('EBADF');
      expect(errorOf(() => setFsFlags(-1, 0)).code).toBe('INVALID_ARGUMENT');
      expect(errorOf(() => setFsFlags(0, 2 ** 32)).code).toBe('INVALID_ARGUMENT');
    });

    it('reads the project id; setting it works or fails with a telling errno', () => {
      const fd = openSync(file(), 'r');
      try {
        const projid = getProjectId(fd);
        expect(Number.isInteger(projid) && projid >= 0).toBe(true);
        let setError: { code: string; details: Record<string, unknown> } | undefined;
        try {
          setProjectId(fd, 4242);
        } catch (error) {
          setError = error as typeof setError;
        }
        if (setError === undefined) {
          expect(getProjectId(fd)).toBe(4242);
          setProjectId(fd, projid);
          expect(getProjectId(fd)).toBe(projid);
        } else {
          // ext4 without the "project" feature: EOPNOTSUPP (== ENOTSUP); non-root: EPERM.
          expect(setError.code).toBe('IO_ERROR');
          expect(['ENOTSUP', 'EPERM']).toContain(setError.details.errnoName);
          expect(getProjectId(fd)).toBe(projid);
        }
      } finally {
        closeSync(fd);
      }
    });
  });

  describe('mknod', () => {
    const S_IFIFO = 0o010000;
    const S_IFCHR = 0o020000;
    /** glibc's makedev, written out (12 bits of major and 8 of minor low, the rest above). */
    const glibcMakedev = (major: bigint, minor: bigint): bigint =>
      ((major & 0xfffn) << 8n) |
      ((major & ~0xfffn) << 32n) |
      (minor & 0xffn) |
      ((minor & ~0xffn) << 12n);

    it('makes a fifo', () => {
      const p = join(meta, 'fifo');
      mknod(p, S_IFIFO | 0o600, 0, 0);
      const st = lstatSync(p);
      expect(st.isFIFO()).toBe(true);
      expect(st.mode & 0o7777).toBe(0o600);
      expect(errorOf(() => mknod(p, S_IFIFO | 0o600, 0, 0)).details).toMatchObject({
        syscall: 'mknod',
        errnoName: 'EEXIST',
        path: p,
      });
    });

    it('makes character devices as root (rdev the glibc way), EPERM otherwise', () => {
      const p = join(meta, 'null');
      const big = join(meta, 'big');
      if (!isRoot) {
        expect(errorOf(() => mknod(p, S_IFCHR | 0o600, 1, 3)).details.errnoName).toBe('EPERM');
        return;
      }
      mknod(p, S_IFCHR | 0o600, 1, 3);
      const st = lstatSync(p, { bigint: true });
      expect(st.isCharacterDevice()).toBe(true);
      expect(st.rdev).toBe(glibcMakedev(1n, 3n));
      expect(st.rdev).toBe(259n);
      // The kernel keeps 12 bits of major and 20 of minor; a minor past 8 bits tests the split.
      mknod(big, S_IFCHR | 0o600, 0x123, 0x45678);
      expect(lstatSync(big, { bigint: true }).rdev).toBe(glibcMakedev(0x123n, 0x45678n));
    });
  });

  describe('setTimesNs', () => {
    it('sets atime and mtime to the nanosecond', () => {
      const p = file();
      setTimesNs(p, { secs: 1_500_000_000, nanos: 1 }, { secs: 1_234_567_890, nanos: 123_456_789 });
      const st = lstatSync(p, { bigint: true });
      expect(st.mtimeNs).toBe(1_234_567_890_123_456_789n);
      expect(st.atimeNs).toBe(1_500_000_000_000_000_001n);
    });

    it('before 1970 too', () => {
      const p = file();
      setTimesNs(p, { secs: 0, nanos: 0 }, { secs: -100, nanos: 999_999_999 });
      expect(lstatSync(p, { bigint: true }).mtimeNs).toBe(-100_000_000_000n + 999_999_999n);
    });

    it('changes a symlink itself unless asked to follow it', () => {
      const target = file('target');
      const link = join(meta, 'link');
      symlinkSync('target', link);
      const targetBefore = lstatSync(target, { bigint: true }).mtimeNs;
      setTimesNs(link, { secs: 10, nanos: 20 }, { secs: 1_000_000_000, nanos: 987_654_321 });
      expect(lstatSync(link, { bigint: true }).mtimeNs).toBe(1_000_000_000_987_654_321n);
      expect(lstatSync(target, { bigint: true }).mtimeNs).toBe(targetBefore);
      setTimesNs(link, { secs: 10, nanos: 20 }, { secs: 2_000_000_000, nanos: 5 }, true);
      expect(lstatSync(target, { bigint: true }).mtimeNs).toBe(2_000_000_000_000_000_005n);
      expect(lstatSync(link, { bigint: true }).mtimeNs).toBe(1_000_000_000_987_654_321n);
    });

    it('rejects out-of-range nanoseconds and reports missing files', () => {
      const p = file();
      for (const bad of [
        { secs: 1, nanos: 1_000_000_000 },
        { secs: 1, nanos: -1 },
        { secs: 1.5, nanos: 0 },
      ]) {
        expect(errorOf(() => setTimesNs(p, bad, { secs: 1, nanos: 0 })).code).toBe(
          'INVALID_ARGUMENT',
        );
      }
      const missing = join(meta, 'missing');
      expect(
        errorOf(() => setTimesNs(missing, { secs: 1, nanos: 0 }, { secs: 1, nanos: 0 })).details,
      ).toMatchObject({
        syscall: 'utimensat',
        errnoName: 'ENOENT',
        path: missing,
      });
    });
  });

  describe('without the addon', () => {
    beforeEach(() => forceNativeFallback(true));

    it('xattrs, flags, project ids and mknod throw NATIVE_UNAVAILABLE', () => {
      const p = file();
      const fd = openSync(p, 'r');
      try {
        for (const call of [
          () => lListXattr(p),
          () => lGetXattr(p, Buffer.from('user.a')),
          () => lSetXattr(p, Buffer.from('user.a'), Buffer.from('v')),
          () => getFsFlags(fd),
          () => setFsFlags(fd, 0),
          () => getProjectId(fd),
          () => setProjectId(fd, 0),
          () => mknod(join(meta, 'fifo'), 0o010600, 0, 0),
        ]) {
          expect(errorOf(call).code).toBe('NATIVE_UNAVAILABLE');
        }
      } finally {
        closeSync(fd);
      }
      expect(nativeBuzhashScan()).toBeUndefined();
      expect(nativeBuzhashKernel()).toBeUndefined();
      expect(nativePxarHash()).toBeUndefined();
    });

    it('setTimesNs falls back to lutimes/utimes with microsecond precision', () => {
      const target = file('target');
      const link = join(meta, 'link');
      symlinkSync('target', link);
      const targetBefore = lstatSync(target, { bigint: true }).mtimeNs;
      setTimesNs(link, { secs: 10, nanos: 0 }, { secs: 1_234_567_890, nanos: 123_456_789 });
      const got = lstatSync(link, { bigint: true }).mtimeNs;
      const drift = got - 1_234_567_890_123_456_789n;
      expect(drift < 0n ? -drift : drift).toBeLessThan(1000n);
      expect(lstatSync(target, { bigint: true }).mtimeNs).toBe(targetBefore);
      setTimesNs(link, { secs: 10, nanos: 0 }, { secs: 1_000_000_000, nanos: 0 }, true);
      expect(lstatSync(target, { bigint: true }).mtimeNs).toBe(1_000_000_000_000_000_000n);
      const missing = join(meta, 'missing');
      expect(
        errorOf(() => setTimesNs(missing, { secs: 1, nanos: 0 }, { secs: 1, nanos: 0 })).details,
      ).toMatchObject({
        errnoName: 'ENOENT',
        path: missing,
      });
    });
  });
});
