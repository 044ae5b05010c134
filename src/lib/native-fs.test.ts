import {
  closeSync,
  lstatSync,
  mkdtempSync,
  openSync,
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
  nativeAvailable,
  nativeUnavailableReason,
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
