import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  rmSync,
  statfsSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FS_MAGIC,
  FsMetadataReader,
  isArchivedXattrName,
  readEntryMetadata,
  splitDeviceNumber,
  statFromStats,
  timeFromNanoseconds,
} from './fs-metadata.js';
import { EMPTY_ACL, PXAR_FLAGS } from './format.js';
import type { Acl } from './format.js';
import { aclToXattrs } from './posix-acl.js';
import { BurrowError } from '../lib/errors.js';
import { codeOf } from '../../test/helpers/error-code.js';
import {
  forceNativeFallback,
  lListXattr,
  lSetXattr,
  mknod,
  nativeAvailable,
  setTimesNs,
} from '../lib/native-fs.js';

const isRoot = process.getuid?.() === 0;
const native = nativeAvailable();

type Warning = { message: string; path: string };
function collector(): { warnings: Warning[]; onWarning: (m: string, p: string) => void } {
  const warnings: Warning[] = [];
  return { warnings, onWarning: (message, path) => warnings.push({ message, path }) };
}

/** glibc's makedev, written from its documented bit layout, to check the split against. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return (
    ((ma & 0xfffn) << 8n) | ((ma & 0xfffff000n) << 32n) | (mi & 0xffn) | ((mi & 0xffffff00n) << 12n)
  );
}

describe('pure helpers', () => {
  it('converts nanosecond times the struct-stat way (spec §4: -1.5 s = -2 s + 0.5e9 ns)', () => {
    expect(timeFromNanoseconds(-1_500_000_000n)).toEqual({ secs: -2, nanos: 500_000_000 });
    expect(timeFromNanoseconds(-1n)).toEqual({ secs: -1, nanos: 999_999_999 });
    expect(timeFromNanoseconds(0n)).toEqual({ secs: 0, nanos: 0 });
    expect(timeFromNanoseconds(1_430_487_000_123_456_789n)).toEqual({
      secs: 1_430_487_000,
      nanos: 123_456_789,
    });
  });

  it('splits device numbers as glibc does', () => {
    expect(splitDeviceNumber(makedev(1, 3))).toEqual({ major: 1, minor: 3 });
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), (major, minor) => {
        expect(splitDeviceNumber(makedev(major, minor))).toEqual({ major, minor });
      }),
    );
  });

  it('keeps user., trusted. and security.NTACL xattr names up to 255 bytes', () => {
    const b = (s: string): Uint8Array => Buffer.from(s);
    expect(isArchivedXattrName(b('user.x'))).toBe(true);
    expect(isArchivedXattrName(b('trusted.overlay.opaque'))).toBe(true);
    expect(isArchivedXattrName(b('security.NTACL'))).toBe(true);
    expect(isArchivedXattrName(b('security.NTACLx'))).toBe(false);
    expect(isArchivedXattrName(b('security.selinux'))).toBe(false);
    expect(isArchivedXattrName(b('system.posix_acl_access'))).toBe(false);
    expect(isArchivedXattrName(b('user'))).toBe(false);
    expect(isArchivedXattrName(b('user.' + 'a'.repeat(250)))).toBe(true);
    expect(isArchivedXattrName(b('user.' + 'a'.repeat(251)))).toBe(false);
  });
});

describe('FsMetadataReader on real files', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'burrow-fsmeta-'));
  });
  afterEach(() => {
    forceNativeFallback(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads mode, owner and exact nanosecond mtimes, also before 1970', () => {
    const file = join(dir, 'old');
    writeFileSync(file, 'x');
    // chown clears set-id bits, so it comes first.
    if (isRoot) execFileSync('chown', ['1234:5678', file]);
    chmodSync(file, 0o4751);
    setTimesNs(file, { secs: 0, nanos: 0 }, { secs: -2, nanos: 500_000_000 });
    const { warnings, onWarning } = collector();
    const meta = readEntryMetadata(file, onWarning);
    expect(meta.stat.mode).toBe(0o100000 | 0o4751);
    expect(meta.stat.uid).toBe(isRoot ? 1234 : process.getuid!());
    expect(meta.stat.gid).toBe(isRoot ? 5678 : process.getgid!());
    if (native) expect(meta.stat.mtime).toEqual({ secs: -2, nanos: 500_000_000 });
    else expect(meta.stat.mtime.secs).toBe(-2);

    setTimesNs(file, { secs: 0, nanos: 0 }, { secs: 1_700_000_000, nanos: 123_456_789 });
    const exact = readEntryMetadata(file, onWarning).stat.mtime;
    if (native) expect(exact).toEqual({ secs: 1_700_000_000, nanos: 123_456_789 });
    expect(warnings.length).toBe(native ? 0 : 1);
  });

  it.runIf(native)('keeps archived xattrs in listing order and maps fcaps and ACLs', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    chmodSync(file, 0o640);
    const set = (name: string, value: Uint8Array | string): void =>
      lSetXattr(file, Buffer.from(name), typeof value === 'string' ? Buffer.from(value) : value);
    // VFS_CAP_REVISION_2 without the effective bit; CAP_NET_BIND_SERVICE (10) permitted.
    const caps = Buffer.alloc(20);
    caps.writeUInt32LE(0x02000000, 0);
    caps.writeUInt32LE(1 << 10, 4);
    set('user.zeta', 'z');
    if (isRoot) {
      set('security.selinux_like', 'dropped');
      set('trusted.alpha', Buffer.from([0, 1, 2]));
      set('security.NTACL', 'nt');
    } else {
      // Only root may set trusted.* and security.* attributes.
      expect(codeOf(() => set('trusted.alpha', 'x'))).toBe('IO_ERROR');
      expect(codeOf(() => set('security.capability', caps))).toBe('IO_ERROR');
    }
    set('user.empty', '');
    if (isRoot) set('security.capability', caps);
    const acl: Acl = { ...EMPTY_ACL, users: [{ id: 42, permissions: 6 }], groupObj: 4 };
    set('system.posix_acl_access', aclToXattrs(acl, 0o100660).access!);

    const { warnings, onWarning } = collector();
    const meta = readEntryMetadata(file, onWarning);
    expect(warnings).toEqual([]);
    const expectedOrder = lListXattr(file)
      .map(String)
      .filter((n) => n.startsWith('user.') || n.startsWith('trusted.') || n === 'security.NTACL');
    expect(meta.xattrs.map((x) => Buffer.from(x.name).toString())).toEqual(expectedOrder);
    expect(new Set(expectedOrder)).toEqual(
      new Set(
        isRoot
          ? ['user.zeta', 'trusted.alpha', 'security.NTACL', 'user.empty']
          : ['user.zeta', 'user.empty'],
      ),
    );
    const value = (name: string): string =>
      Buffer.from(meta.xattrs.find((x) => Buffer.from(x.name).toString() === name)!.value).toString(
        'hex',
      );
    if (isRoot) expect(value('trusted.alpha')).toBe('000102');
    expect(value('user.zeta')).toBe('7a');
    expect(value('user.empty')).toBe('');
    if (isRoot) expect(Buffer.from(meta.fcaps!)).toEqual(caps);
    else expect(meta.fcaps).toBeUndefined();
    expect(meta.acl).toEqual(acl);
    expect(meta.stat.mode & 0o777).toBe(0o660);
  });

  it.runIf(native)('reads a directory default ACL', () => {
    const sub = join(dir, 'd');
    mkdirSync(sub);
    const acl: Acl = { ...EMPTY_ACL, default: { userObj: 7, groupObj: 5, other: 0 } };
    lSetXattr(sub, Buffer.from('system.posix_acl_default'), aclToXattrs(acl, 0o40755).default!);
    const { warnings, onWarning } = collector();
    expect(readEntryMetadata(sub, onWarning).acl).toEqual(acl);
    expect(warnings).toEqual([]);
  });

  it.runIf(native)('maps chattr flags set by chattr(1) on files and directories', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    const sub = join(dir, 'd');
    mkdirSync(sub);
    execFileSync('chattr', ['+d', file]);
    execFileSync('chattr', ['+dA', sub]);
    const { warnings, onWarning } = collector();
    expect(readEntryMetadata(file, onWarning).stat.flags).toBe(PXAR_FLAGS.NODUMP);
    expect(readEntryMetadata(sub, onWarning).stat.flags).toBe(
      PXAR_FLAGS.NODUMP | PXAR_FLAGS.NOATIME,
    );
    expect(warnings).toEqual([]);
  });

  it.runIf(native)('reads flags through a given fd too', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    execFileSync('chattr', ['+d', file]);
    const fd = openSync(file, 'r');
    try {
      const { warnings, onWarning } = collector();
      const reader = new FsMetadataReader({ onWarning });
      expect(reader.read(file, lstatSync(file, { bigint: true }), fd).stat.flags).toBe(
        PXAR_FLAGS.NODUMP,
      );
      expect(warnings).toEqual([]);
    } finally {
      closeSync(fd);
    }
  });

  it.runIf(native)('gives symlinks and special files a bare stat, as PBS does', () => {
    const link = join(dir, 'l');
    symlinkSync('target', link);
    const fifo = join(dir, 'p');
    mknod(fifo, 0o010644, 0, 0);
    const chr = join(dir, 'c');
    if (isRoot) {
      mknod(chr, 0o020600, 1, 3);
      lSetXattr(fifo, Buffer.from('trusted.x'), Buffer.from('1'));
    } else {
      expect(codeOf(() => mknod(chr, 0o020600, 1, 3))).toBe('IO_ERROR');
    }
    const { warnings, onWarning } = collector();
    for (const p of isRoot ? [link, fifo, chr] : [link, fifo]) {
      const meta = readEntryMetadata(p, onWarning);
      expect(meta.xattrs).toEqual([]);
      expect(meta.acl).toEqual(EMPTY_ACL);
      expect(meta.fcaps).toBeUndefined();
      expect(meta.stat.flags).toBe(0);
      expect(meta.stat.mode).toBe(Number(lstatSync(p).mode));
    }
    if (isRoot)
      expect(splitDeviceNumber(lstatSync(chr, { bigint: true }).rdev)).toEqual({
        major: 1,
        minor: 3,
      });
    expect(warnings).toEqual([]);
  });

  it('records a quota project id only when it is not 0 (ext4 here has no project quota)', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    const { warnings, onWarning } = collector();
    expect(readEntryMetadata(file, onWarning).quotaProjectId).toBeUndefined();
    expect(warnings.length).toBe(native ? 0 : 1);
  });

  it.runIf(native)('records a project id on ext4 when the ioctl reports one', () => {
    expect(Number(statfsSync(dir).type)).toBe(FS_MAGIC.EXT4);
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    const link = join(dir, 'l');
    symlinkSync('f', link);
    const { warnings, onWarning } = collector();
    // The test kernel lacks quota support, so the ioctl's answer is simulated.
    const reader = new FsMetadataReader({ onWarning, calls: { getProjectId: () => 77 } });
    expect(reader.read(file, lstatSync(file, { bigint: true })).quotaProjectId).toBe(77);
    expect(reader.read(dir, lstatSync(dir, { bigint: true })).quotaProjectId).toBe(77);
    expect(reader.read(link, lstatSync(link, { bigint: true })).quotaProjectId).toBeUndefined();
    expect(warnings).toEqual([]);
  });

  it.runIf(native)('does not read project ids on other filesystems (tmpfs)', () => {
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    if (!isRoot) {
      // Mounting needs root; as non-root only the refusal is checked.
      expect(() =>
        execFileSync('mount', ['-t', 'tmpfs', 'none', mnt], { stdio: 'ignore' }),
      ).toThrow();
      return;
    }
    execFileSync('mount', ['-t', 'tmpfs', 'none', mnt]);
    try {
      const file = join(mnt, 'f');
      writeFileSync(file, 'x');
      let calls = 0;
      const reader = new FsMetadataReader({
        onWarning: () => {},
        calls: {
          getProjectId: () => {
            calls++;
            return 5;
          },
        },
      });
      expect(reader.read(file, lstatSync(file, { bigint: true })).quotaProjectId).toBeUndefined();
      expect(calls).toBe(0);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });

  it.runIf(native)('warns once per device when the filesystem lacks chattr flags (procfs)', () => {
    const { warnings, onWarning } = collector();
    const reader = new FsMetadataReader({ onWarning });
    for (const p of ['/proc/self/status', '/proc/self/stat', '/proc/self/cmdline']) {
      expect(reader.read(p, lstatSync(p, { bigint: true })).stat.flags).toBe(0);
    }
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toMatch(/does not support chattr flags/);
    expect(warnings[0]!.path).toBe('/proc/self/status');
  });

  it.runIf(native)('warns per file for xattrs it cannot read and keeps the rest', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    lSetXattr(file, Buffer.from('user.ok'), Buffer.from('1'));
    lSetXattr(file, Buffer.from('user.denied'), Buffer.from('2'));
    const { warnings, onWarning } = collector();
    const reader = new FsMetadataReader({
      onWarning,
      calls: {
        lGetXattr: (path, name) => {
          if (name.toString() === 'user.denied')
            throw new BurrowError('IO_ERROR', 'lgetxattr failed: EPERM', {
              details: { errno: 1, errnoName: 'EPERM' },
            });
          return Buffer.from('1');
        },
      },
    });
    for (let i = 0; i < 2; i++) {
      const meta = reader.read(file, lstatSync(file, { bigint: true }));
      expect(meta.xattrs.map((x) => Buffer.from(x.name).toString())).toEqual(['user.ok']);
    }
    expect(warnings).toHaveLength(2);
    expect(warnings[0]!.message).toMatch(/user\.denied.*EPERM/);
    expect(warnings[0]!.path).toBe(file);
  });

  it.runIf(native)('warns once per device when listing xattrs is not supported', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    const { warnings, onWarning } = collector();
    const reader = new FsMetadataReader({
      onWarning,
      calls: {
        lListXattr: () => {
          throw new BurrowError('IO_ERROR', 'llistxattr failed: ENOTSUP', {
            details: { errno: 95, errnoName: 'ENOTSUP' },
          });
        },
      },
    });
    reader.read(file, lstatSync(file, { bigint: true }));
    reader.read(dir, lstatSync(dir, { bigint: true }));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toMatch(/does not support xattrs/);
  });

  it.runIf(native)('warns about a malformed ACL and archives the rest', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    lSetXattr(file, Buffer.from('user.a'), Buffer.from('1'));
    const { warnings, onWarning } = collector();
    const reader = new FsMetadataReader({
      onWarning,
      calls: {
        lListXattr: () => [Buffer.from('user.a'), Buffer.from('system.posix_acl_access')],
        lGetXattr: (_p, name) =>
          name.toString() === 'user.a' ? Buffer.from('1') : Buffer.from([2, 0, 0, 0, 1]),
      },
    });
    const meta = reader.read(file, lstatSync(file, { bigint: true }));
    expect(meta.acl).toEqual(EMPTY_ACL);
    expect(meta.xattrs).toHaveLength(1);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toMatch(/ACL is not archived.*posix_acl_access/);
  });

  it('warns once and archives a bare stat without the native helper', () => {
    forceNativeFallback(true);
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    const { warnings, onWarning } = collector();
    const reader = new FsMetadataReader({ onWarning });
    const st = lstatSync(file, { bigint: true });
    const meta = reader.read(file, st);
    reader.read(dir, lstatSync(dir, { bigint: true }));
    expect(meta).toEqual({ stat: statFromStats(st), xattrs: [], acl: EMPTY_ACL });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toMatch(/not archived/);
  });

  it.runIf(native)('warns about flags of a file it cannot open (root can open any)', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    chmodSync(file, 0);
    const { warnings, onWarning } = collector();
    readEntryMetadata(file, onWarning);
    if (isRoot) expect(warnings).toEqual([]);
    else expect(warnings.map((w) => w.message)).toEqual([expect.stringMatching(/cannot open/)]);
  });
});
