import {
  closeSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  constants as fsConstants,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { codeOf } from '../../test/helpers/error-code.js';
import { getFsFlags, lGetXattr, mknod, setFsFlags } from '../lib/native-fs.js';
import { EMPTY_ACL, PXAR_FLAGS, nameBytes, type Acl, type Metadata } from './format.js';
import {
  forceProcFdFallback,
  MetadataApplier,
  procFdPath,
  type ApplyOptions,
  type EntryRef,
  type ExtractWarning,
} from './fs-apply.js';

const isRoot = process.geteuid?.() === 0;
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'burrow-fs-apply-'));
});
afterEach(() => {
  forceProcFdFallback(false);
  rmSync(dir, { recursive: true, force: true });
});

function md(
  mode: number,
  extra: Partial<Metadata['stat']> & {
    xattrs?: Array<[string, string]>;
    acl?: Partial<Acl>;
    fcaps?: Uint8Array;
  } = {},
): Metadata {
  const { xattrs = [], acl = {}, fcaps, ...stat } = extra;
  const metadata: {
    stat: Metadata['stat'];
    xattrs: Metadata['xattrs'];
    acl: Acl;
    fcaps?: Uint8Array;
  } = {
    stat: {
      mode,
      flags: 0,
      uid: process.geteuid?.() ?? 0,
      gid: process.getegid?.() ?? 0,
      mtime: { secs: 1_000_000, nanos: 5 },
      ...stat,
    },
    xattrs: xattrs.map(([name, value]) => ({ name: nameBytes(name), value: nameBytes(value) })),
    acl: { ...EMPTY_ACL, ...acl },
  };
  if (fcaps !== undefined) metadata.fcaps = fcaps;
  return metadata;
}

function applier(options: Partial<ApplyOptions> = {}): {
  applier: MetadataApplier;
  warnings: ExtractWarning[];
} {
  const warnings: ExtractWarning[] = [];
  return {
    applier: new MetadataApplier({
      xattrs: true,
      acls: true,
      fcaps: true,
      strict: false,
      onWarning: (w) => warnings.push(w),
      ...options,
    }),
    warnings,
  };
}

/** The entry `name` of `dir` the way the extractor reaches it: through the directory's fd. */
function withParent<T>(name: string, fn: (path: Buffer) => T): T {
  const fd = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    return fn(Buffer.concat([procFdPath(fd), Buffer.from(`/${name}`)]));
  } finally {
    closeSync(fd);
  }
}

function withFile<T>(name: string, fn: (fd: number) => T): T {
  const fd = openSync(join(dir, name), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

describe('MetadataApplier', () => {
  it('changes a symlink itself, never what it points to', () => {
    writeFileSync(join(dir, 'target'), 't');
    utimesSync(join(dir, 'target'), 100, 100);
    symlinkSync(join(dir, 'target'), join(dir, 'link'));
    const { applier: a, warnings } = applier();
    withParent('link', (path) =>
      a.apply(
        { path, kind: 'symlink', display: 'link' },
        md(0o120777, {
          uid: isRoot ? 4321 : (process.geteuid?.() ?? 0),
          mtime: { secs: 2_000_000_000, nanos: 7 },
        }),
      ),
    );
    expect(warnings).toEqual([]);
    const link = lstatSync(join(dir, 'link'), { bigint: true });
    const target = lstatSync(join(dir, 'target'), { bigint: true });
    expect(link.mtimeNs).toBe(2_000_000_000_000_000_007n);
    expect(target.mtimeNs).toBe(100_000_000_000n);
    if (isRoot) {
      expect(link.uid).toBe(4321n);
      expect(target.uid).toBe(0n);
    }
    expect(Number(target.mode) & 0o7777).toBe(0o644 & ~process.umask());
  });

  it('chmods device nodes and FIFOs through an O_PATH fd, and through the path without /proc', () => {
    for (const fallback of [false, true]) {
      forceProcFdFallback(fallback);
      const name = `fifo-${fallback}`;
      mknod(join(dir, name), 0o10600, 0, 0);
      const { applier: a, warnings } = applier();
      withParent(name, (path) =>
        a.apply(
          { path: fallback ? Buffer.from(join(dir, name)) : path, kind: 'fifo', display: name },
          md(0o10641),
        ),
      );
      expect(warnings).toEqual([]);
      const st = lstatSync(join(dir, name), { bigint: true });
      expect([Number(st.mode), st.mtimeNs]).toEqual([0o10641, 1_000_000_000_000_005n]);
    }
  });

  it('refuses to touch an entry that is not the kind it was told to expect', () => {
    writeFileSync(join(dir, 'f'), 'x');
    symlinkSync('/', join(dir, 's'));
    const { applier: a } = applier();
    expect(
      withParent('f', (path) =>
        codeOf(() => a.apply({ path, kind: 'fifo', display: 'f' }, md(0o10600))),
      ),
    ).toBe('PXAR_UNSAFE_PATH');
    expect(
      withParent('s', (path) =>
        codeOf(() => a.apply({ path, kind: 'directory', display: 's' }, md(0o40700))),
      ),
    ).toBe('PXAR_UNSAFE_PATH');
    expect(lstatSync('/').mode & 0o7777).not.toBe(0o700);
  });

  it('sets only the chattr bits pxar knows, and leaves them alone when the archive has none', () => {
    writeFileSync(join(dir, 'f'), 'x');
    const before = withFile('f', (fd) => {
      setFsFlags(fd, getFsFlags(fd) | 0x40); // NODUMP
      return getFsFlags(fd);
    });
    const { applier: a, warnings } = applier();
    const apply = (flags: number) =>
      withFile('f', (fd) =>
        withParent('f', (path) =>
          a.apply({ path, fd, kind: 'file', display: 'f' }, md(0o100644, { flags })),
        ),
      );
    apply(0);
    expect(withFile('f', getFsFlags)).toBe(before);
    apply(PXAR_FLAGS.NOATIME);
    // NODUMP (known, not archived) cleared, NOATIME set, the filesystem's own bits (extents) kept.
    expect(withFile('f', getFsFlags)).toBe(((before & ~0x40) | 0x80) >>> 0);
    expect(warnings).toEqual([]);
  });

  it('sets the empty-file flags first and leaves the rest for the end', () => {
    writeFileSync(join(dir, 'f'), '');
    const { applier: a } = applier();
    const flags = withFile('f', (fd) => {
      const before = getFsFlags(fd);
      a.applyInitialFlags(fd, md(0o100644, { flags: PXAR_FLAGS.NOATIME | PXAR_FLAGS.NODUMP }), 'f');
      return [before, getFsFlags(fd)] as const;
    });
    expect(flags[1]).toBe((flags[0] | 0x80) >>> 0);
  });

  it('restores only xattr namespaces PBS restores, and capabilities only with fcaps on', () => {
    writeFileSync(join(dir, 'f'), 'x');
    const cap = Buffer.alloc(20);
    cap.writeUInt32LE(0x02000001, 0);
    const metadata = md(0o100644, {
      xattrs: [
        ['user.a', '1'],
        ['system.posix_acl_access', 'junk'],
        ['security.selinux', 'x'],
      ],
    });
    const withCap: Metadata = {
      ...metadata,
      xattrs: [...metadata.xattrs, { name: nameBytes('security.capability'), value: cap }],
    };
    const { applier: a, warnings } = applier({ fcaps: false });
    withFile('f', (fd) =>
      withParent('f', (path) => a.apply({ path, fd, kind: 'file', display: 'f' }, withCap)),
    );
    expect(lGetXattr(join(dir, 'f'), Buffer.from('user.a'))?.toString()).toBe('1');
    expect(lGetXattr(join(dir, 'f'), Buffer.from('security.capability'))).toBeNull();
    expect(lGetXattr(join(dir, 'f'), Buffer.from('system.posix_acl_access'))).toBeNull();
    expect(warnings.map((w) => [w.kind, w.code])).toEqual([
      ['xattr', 'PXAR_BAD_ITEM'],
      ['xattr', 'PXAR_BAD_ITEM'],
    ]);
  });

  it('warns about an ACL the kernel would refuse instead of failing the restore', () => {
    writeFileSync(join(dir, 'f'), 'x');
    const { applier: a, warnings } = applier();
    const bad = md(0o100644, { acl: { default: { userObj: 7, groupObj: 5, other: 5 } } });
    withFile('f', (fd) =>
      withParent('f', (path) => a.apply({ path, fd, kind: 'file', display: 'f' }, bad)),
    );
    expect(warnings.map((w) => [w.kind, w.path, w.code])).toEqual([['acl', 'f', 'PXAR_BAD_ITEM']]);
    expect(lstatSync(join(dir, 'f'), { bigint: true }).mtimeNs).toBe(1_000_000_000_000_005n);
  });

  it('reports once-keyed warnings once and counts the rest; strict throws the first', () => {
    const { applier: a, warnings } = applier();
    a.warn('projid', 'a', 'x', { onceKey: 'k', code: 'IO_ERROR' });
    a.warn('projid', 'b', 'x', { onceKey: 'k', code: 'IO_ERROR' });
    a.warn('hardlink', 'c', 'y', { code: 'NOT_FOUND' });
    expect(warnings.map((w) => w.path)).toEqual(['a', 'c']);
    expect(a.counters).toEqual({ warnings: 2, suppressedWarnings: 1, ownershipSkipped: 0 });
    const strict = new MetadataApplier({ xattrs: true, acls: true, fcaps: true, strict: true });
    expect(codeOf(() => strict.warn('hardlink', 'c', 'y', { code: 'NOT_FOUND' }))).toBe(
      'NOT_FOUND',
    );
  });

  it('unprivileged: never gives files away, one warning for all', () => {
    mkdirSync(join(dir, 'd'));
    writeFileSync(join(dir, 'f'), 'x');
    const { applier: a, warnings } = applier({ privileged: false });
    const uid = (process.geteuid?.() ?? 0) + 1;
    withFile('f', (fd) =>
      withParent('f', (path) =>
        a.apply({ path, fd, kind: 'file', display: 'f' }, md(0o100600, { uid })),
      ),
    );
    withFile('d', (fd) =>
      withParent('d', (path) =>
        a.apply({ path, fd, kind: 'directory', display: 'd' }, md(0o40700, { uid })),
      ),
    );
    expect(warnings.map((w) => [w.kind, w.path, w.code])).toEqual([
      ['ownership', 'f', 'PERMISSION_DENIED'],
    ]);
    expect(a.counters.ownershipSkipped).toBe(2);
    expect(lstatSync(join(dir, 'f')).uid).toBe(process.geteuid?.());
    // Everything else is still applied.
    expect(lstatSync(join(dir, 'd'), { bigint: true }).mtimeNs).toBe(1_000_000_000_000_005n);
  });

  it('EntryRef paths work for the restore root given as a plain path', () => {
    mkdirSync(join(dir, 'root'));
    const { applier: a, warnings } = applier();
    const fd = openSync(join(dir, 'root'), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try {
      const ref: EntryRef = {
        path: Buffer.from(join(dir, 'root')),
        fd,
        kind: 'directory',
        display: '/',
      };
      a.apply(ref, md(0o40711, { xattrs: [['user.r', 'v']] }));
    } finally {
      closeSync(fd);
    }
    expect(warnings).toEqual([]);
    expect(Number(lstatSync(join(dir, 'root')).mode)).toBe(0o40711);
    expect(lGetXattr(join(dir, 'root'), Buffer.from('user.r'))?.toString()).toBe('v');
  });
});
