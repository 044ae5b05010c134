import {
  closeSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  constants as fsConstants,
} from 'node:fs';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import {
  forceNativeFallback,
  getFsFlags,
  getProjectId,
  lGetXattr,
  setFsFlags,
} from '../lib/native-fs.js';
import { PxarDecoder } from './decoder.js';
import { PxarEncoder } from './encoder.js';
import {
  extractArchive,
  type ExtractEvent,
  type ExtractOptions,
  type ExtractSource,
  type ExtractWarning,
} from './extractor.js';
import {
  EMPTY_ACL,
  PXAR,
  PXAR_FLAGS,
  nameBytes,
  type Acl,
  type Entry,
  type EntryKind,
  type Metadata,
  type PxarTime,
} from './format.js';
import { forceProcFdFallback } from './fs-apply.js';
import { parsePattern } from './pattern.js';
import { bytesRandomAccess } from './random-access.js';

const isRoot = process.geteuid?.() === 0;

let work: string;
let target: string;
let outside: string;

beforeEach(() => {
  work = mkdtempSync(join(tmpdir(), 'burrow-extract-'));
  target = join(work, 'target');
  outside = join(work, 'outside');
  mkdirSync(outside);
});

afterEach(() => {
  forceProcFdFallback(false);
  forceNativeFallback(false);
  clearImmutable(work);
  rmSync(work, { recursive: true, force: true });
});

/** Immutable and append-only files cannot be removed: clear those flags before cleanup. */
function clearImmutable(dir: string): void {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (!st.isFile() && !st.isDirectory()) continue;
    const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const flags = getFsFlags(fd);
      if ((flags & 0x30) !== 0) setFsFlags(fd, flags & ~0x30);
    } catch {
      // No flags support: nothing can be immutable then.
    } finally {
      closeSync(fd);
    }
    if (st.isDirectory()) clearImmutable(path);
  }
}

// ---------------------------------------------------------------------------------------------
// Archive building

const n = nameBytes;

interface MetaSpec {
  uid?: number;
  gid?: number;
  mtime?: PxarTime;
  flags?: number;
  xattrs?: Array<[string, string | Uint8Array]>;
  acl?: Partial<Acl>;
  fcaps?: Uint8Array;
  quotaProjectId?: number;
}

function md(mode: number, spec: MetaSpec = {}): Metadata {
  const metadata: {
    stat: Metadata['stat'];
    xattrs: Metadata['xattrs'];
    acl: Acl;
    fcaps?: Uint8Array;
    quotaProjectId?: number;
  } = {
    stat: {
      mode,
      flags: spec.flags ?? 0,
      uid: spec.uid ?? 0,
      gid: spec.gid ?? 0,
      mtime: spec.mtime ?? { secs: 1_600_000_000, nanos: 0 },
    },
    xattrs: (spec.xattrs ?? []).map(([name, value]) => ({
      name: n(name),
      value: typeof value === 'string' ? n(value) : value,
    })),
    acl: { ...EMPTY_ACL, ...spec.acl },
  };
  if (spec.fcaps !== undefined) metadata.fcaps = spec.fcaps;
  if (spec.quotaProjectId !== undefined) metadata.quotaProjectId = spec.quotaProjectId;
  return metadata;
}

const ROOT_MD = md(0o40755);

async function encode(
  build: (e: PxarEncoder) => Promise<void>,
  root: Metadata = ROOT_MD,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const encoder = await PxarEncoder.begin(root, {
    output: { write: (b) => void chunks.push(Uint8Array.from(b)) },
  });
  await build(encoder);
  await encoder.finish();
  return Buffer.concat(chunks);
}

async function encodeSplit(
  build: (e: PxarEncoder) => Promise<void>,
): Promise<{ archive: Uint8Array; payload: Uint8Array }> {
  const archive: Uint8Array[] = [];
  const payload: Uint8Array[] = [];
  const encoder = await PxarEncoder.begin(ROOT_MD, {
    output: { write: (b) => void archive.push(Uint8Array.from(b)) },
    payloadOutput: { write: (b) => void payload.push(Uint8Array.from(b)) },
  });
  await build(encoder);
  await encoder.finish();
  return { archive: Buffer.concat(archive), payload: Buffer.concat(payload) };
}

/** The archive in odd-sized pieces, so nothing depends on item boundaries. */
async function* pieces(bytes: Uint8Array, size = 4093): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size)
    yield await Promise.resolve(bytes.subarray(at, Math.min(at + size, bytes.length)));
}

function decoderOf(bytes: Uint8Array, payload?: Uint8Array): PxarDecoder {
  return new PxarDecoder(
    pieces(bytes),
    payload === undefined ? {} : { payload: bytesRandomAccess(payload) },
  );
}

function restore(bytes: Uint8Array, options: ExtractOptions = {}, to: string = target) {
  return extractArchive(decoderOf(bytes), to, options);
}

function collect(options: ExtractOptions = {}): {
  options: ExtractOptions;
  warnings: ExtractWarning[];
} {
  const warnings: ExtractWarning[] = [];
  return { options: { ...options, onWarning: (w) => warnings.push(w) }, warnings };
}

const nsOf = (t: PxarTime): bigint => BigInt(t.secs) * 1_000_000_000n + BigInt(t.nanos);

/** Everything below `dir`, as relative paths, sorted. */
function tree(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const rel = prefix + name;
    out.push(rel);
    if (lstatSync(join(dir, name)).isDirectory()) out.push(...tree(join(dir, name), `${rel}/`));
  }
  return out;
}

/** An ACL xattr value built by hand from (tag, perm, id) triples, as linux/posix_acl_xattr.h lays it out. */
function aclXattr(entries: Array<[number, number, number]>): Buffer {
  const out = Buffer.alloc(4 + entries.length * 8);
  out.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    out.writeUInt16LE(tag, 4 + i * 8);
    out.writeUInt16LE(perm, 6 + i * 8);
    out.writeUInt32LE(id, 8 + i * 8);
  });
  return out;
}
const NOID = 0xffffffff;

/** A VFS_CAP_REVISION_2 capability with CAP_NET_BIND_SERVICE permitted and effective. */
function netBindCap(): Uint8Array {
  const cap = Buffer.alloc(20);
  cap.writeUInt32LE(0x02000001, 0);
  cap.writeUInt32LE(1 << 10, 4);
  return cap;
}

/** glibc's major/minor split of st_rdev (pxar-format.md §10 item 7). */
function majorMinor(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return [Number(major), Number(minor)];
}

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

// ---------------------------------------------------------------------------------------------

describe('extractArchive: every kind with its metadata', () => {
  const content = Buffer.from(Array.from({ length: 10_000 }, (_, i) => (i * 7) & 0xff));
  const fileTimes = { secs: 1_234_567_890, nanos: 123_456_789 };
  const fileAcl: Partial<Acl> = {
    users: [{ id: 1000, permissions: 6 }],
    groups: [{ id: 2000, permissions: 4 }],
    groupObj: 4,
  };
  const dirAcl: Partial<Acl> = {
    default: { userObj: 7, groupObj: 5, other: 0, mask: 7 },
    defaultUsers: [{ id: 1000, permissions: 7 }],
  };

  const build = async (e: PxarEncoder): Promise<void> => {
    const dataAt = await e.addFile(
      n('data.bin'),
      md(0o104740, {
        uid: 1234,
        gid: 2345,
        mtime: fileTimes,
        flags: PXAR_FLAGS.NODUMP | PXAR_FLAGS.NOATIME,
        xattrs: [
          ['user.one', '1'],
          ['trusted.t', 'tv'],
        ],
        acl: fileAcl,
        fcaps: netBindCap(),
      }),
      content.length,
      [content.subarray(0, 3000), content.subarray(3000)],
    );
    await e.enterDirectory(
      n('dir'),
      md(0o42775, { uid: 1234, gid: 2345, mtime: { secs: 1_000_000_000, nanos: 1 }, acl: dirAcl }),
    );
    await e.addFile(n('inner'), md(0o100600), 2, [n('in')]);
    await e.leaveDirectory();
    await e.enterDirectory(n('ro'), md(0o40555, { mtime: { secs: 1_100_000_000, nanos: 7 } }));
    await e.addFile(n('child'), md(0o100444), 1, [n('c')]);
    await e.leaveDirectory();
    await e.addSymlink(
      n('link'),
      md(0o120777, { uid: 1234, gid: 2345, mtime: { secs: 1_111_111_111, nanos: 222_222_222 } }),
      n('data.bin'),
    );
    await e.addHardlink(n('hard'), n('data.bin'), dataAt);
    await e.addDevice(
      n('null'),
      md(0o20640, { uid: 7, gid: 8, mtime: { secs: 5, nanos: 6 } }),
      1,
      3,
    );
    await e.addDevice(n('loop'), md(0o60660, { mtime: { secs: 9, nanos: 10 } }), 7, 300);
    await e.addFifo(n('fifo'), md(0o10620, { uid: 1234, mtime: { secs: 11, nanos: 12 } }));
    await e.addSocket(n('sock'), md(0o140755, { mtime: { secs: 13, nanos: 14 } }));
    await e.addFile(
      n('imm'),
      md(0o100444, { flags: PXAR_FLAGS.IMMUTABLE, mtime: { secs: 1_300_000_000, nanos: 5 } }),
      6,
      [n('frozen')],
    );
    await e.addFile(n('old'), md(0o100644, { mtime: { secs: -2, nanos: 500_000_000 } }), 0, []);
  };
  const rootMd = md(0o40751, {
    uid: 1001,
    gid: 1002,
    mtime: { secs: 1_500_000_000, nanos: 999_999_999 },
  });

  it('restores content, ownership, mode, ns mtime, xattrs, ACLs, fcaps, flags, devices', async () => {
    const bytes = await encode(build, rootMd);
    const { options, warnings } = collect();
    const stats = await restore(bytes, options);
    const at = (p: string) => lstatSync(join(target, p), { bigint: true });

    expect(tree(target)).toEqual(
      isRoot
        ? [
            'data.bin',
            'dir',
            'dir/inner',
            'fifo',
            'hard',
            'imm',
            'link',
            'loop',
            'null',
            'old',
            'ro',
            'ro/child',
            'sock',
          ]
        : [
            'data.bin',
            'dir',
            'dir/inner',
            'fifo',
            'hard',
            'imm',
            'link',
            'old',
            'ro',
            'ro/child',
            'sock',
          ],
    );
    expect(readFileSync(join(target, 'data.bin'))).toEqual(content);
    expect(readlinkSync(join(target, 'link'))).toBe('data.bin');
    expect(readFileSync(join(target, 'imm'), 'utf8')).toBe('frozen');
    expect(at('old').mtimeNs).toBe(-1_500_000_000n);
    expect(at('data.bin').mtimeNs).toBe(nsOf(fileTimes));
    // Children were created after the directory; its mtime is still the archived one.
    expect(at('dir').mtimeNs).toBe(1_000_000_000_000_000_001n);
    expect(at('ro').mtimeNs).toBe(1_100_000_000_000_000_007n);
    expect(at('link').mtimeNs).toBe(1_111_111_111_222_222_222n);
    expect(at('imm').mtimeNs).toBe(1_300_000_000_000_000_005n);
    expect(at('fifo').mtimeNs).toBe(11_000_000_012n);
    expect(at('sock').mtimeNs).toBe(13_000_000_014n);
    const rootStat = lstatSync(target, { bigint: true });
    expect(rootStat.mtimeNs).toBe(1_500_000_000_999_999_999n);
    expect(Number(rootStat.mode)).toBe(0o40751);
    expect(Number(at('ro').mode)).toBe(0o40555);
    expect(Number(at('fifo').mode)).toBe(0o10620);
    expect(Number(at('sock').mode)).toBe(0o140755);
    expect(at('hard').ino).toBe(at('data.bin').ino);
    expect(at('hard').nlink).toBe(2n);
    expect(lGetXattr(join(target, 'data.bin'), Buffer.from('user.one'))?.toString()).toBe('1');
    expect(getFlags(join(target, 'data.bin')) & 0xc0).toBe(0xc0); // NODUMP | NOATIME

    if (isRoot) {
      expect(warnings.filter((w) => w.kind !== 'projid')).toEqual([]);
      // chown came before chmod: the set-uid bit survived it; fcaps came after it.
      expect(Number(at('data.bin').mode)).toBe(0o104740);
      expect([at('data.bin').uid, at('data.bin').gid]).toEqual([1234n, 2345n]);
      expect([at('link').uid, at('link').gid]).toEqual([1234n, 2345n]);
      expect([rootStat.uid, rootStat.gid]).toEqual([1001n, 1002n]);
      expect(Number(at('dir').mode)).toBe(0o42775);
      expect(lGetXattr(join(target, 'data.bin'), Buffer.from('trusted.t'))?.toString()).toBe('tv');
      expect(lGetXattr(join(target, 'data.bin'), Buffer.from('security.capability'))).toEqual(
        Buffer.from(netBindCap()),
      );
      expect(lGetXattr(join(target, 'data.bin'), Buffer.from('system.posix_acl_access'))).toEqual(
        aclXattr([
          [1, 7, NOID],
          [2, 6, 1000],
          [4, 4, NOID],
          [8, 4, 2000],
          [0x10, 4, NOID],
          [0x20, 0, NOID],
        ]),
      );
      expect(lGetXattr(join(target, 'dir'), Buffer.from('system.posix_acl_default'))).toEqual(
        aclXattr([
          [1, 7, NOID],
          [2, 7, 1000],
          [4, 5, NOID],
          [0x10, 7, NOID],
          [0x20, 0, NOID],
        ]),
      );
      expect(getFlags(join(target, 'imm')) & 0x10).toBe(0x10);
      expect(majorMinor(at('null').rdev)).toEqual([1, 3]);
      expect(at('null').isCharacterDevice()).toBe(true);
      expect(Number(at('null').mode)).toBe(0o20640);
      expect([at('null').uid, at('null').gid]).toEqual([7n, 8n]);
      expect(majorMinor(at('loop').rdev)).toEqual([7, 300]);
      expect(at('loop').isBlockDevice()).toBe(true);
      expect(at('loop').mtimeNs).toBe(9_000_000_010n);
      expect(stats).toMatchObject({
        entries: 13,
        directories: 2,
        files: 5,
        symlinks: 1,
        hardlinks: 1,
        devices: 2,
        fifos: 1,
        sockets: 1,
        bytes: 10_009,
        skipped: 0,
      });
    } else {
      // Unprivileged: the owner, trusted.*, fcaps, the immutable flag and device nodes cannot be restored.
      const kinds = new Set(warnings.map((w) => w.kind));
      for (const kind of ['ownership', 'device', 'fcaps', 'xattr', 'flags'] as const)
        expect(kinds).toContain(kind);
      expect(stats).toMatchObject({ devices: 0, skipped: 2 });
    }
  });

  it('restores the same tree from a split (v2) archive', async () => {
    const { archive, payload } = await encodeSplit(async (e) => {
      await e.addFile(n('a'), md(0o100640, { mtime: fileTimes }), content.length, [content]);
      await e.enterDirectory(n('d'), md(0o40700));
      await e.addFile(n('b'), md(0o100600), 3, [n('xyz')]);
      await e.leaveDirectory();
    });
    const stats = await extractArchive(decoderOf(archive, payload), target);
    expect(readFileSync(join(target, 'a'))).toEqual(content);
    expect(readFileSync(join(target, 'd/b'), 'utf8')).toBe('xyz');
    expect(lstatSync(join(target, 'a'), { bigint: true }).mtimeNs).toBe(nsOf(fileTimes));
    expect(stats).toMatchObject({ files: 2, directories: 1, bytes: content.length + 3 });
  });

  it('reports progress with growing entry and byte counts', async () => {
    const bytes = await encode(build, rootMd);
    const seen: Array<{ entries: number; bytes: number; path: string }> = [];
    const stats = await restore(bytes, {
      onProgress: (p) => seen.push({ ...p }),
      onWarning: () => undefined,
    });
    for (let i = 1; i < seen.length; i++) {
      expect(seen[i]!.entries).toBeGreaterThanOrEqual(seen[i - 1]!.entries);
      expect(seen[i]!.bytes).toBeGreaterThanOrEqual(seen[i - 1]!.bytes);
    }
    expect(seen.at(-1)).toMatchObject({ entries: stats.entries, bytes: stats.bytes });
    expect(seen.map((p) => p.path)).toContain('dir/inner');
  });
});

function getFlags(path: string): number {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    return getFsFlags(fd);
  } finally {
    closeSync(fd);
  }
}

describe('extractArchive: file content', () => {
  it('leaves all-zero 4 KiB blocks as holes and keeps the exact size', async () => {
    const size = 3 * 1024 * 1024 + 123;
    const data = Buffer.alloc(size);
    data.write('abc', 1024 * 1024 + 5000);
    data[size - 1] = 1;
    const zeros = Buffer.alloc(1024 * 1024);
    const pieces = Buffer.alloc(3 * 4096 + 77);
    pieces.fill(9, 4040, 4060); // in the block the first three pieces share
    pieces.fill(5, 3 * 4096); // the tail
    const bytes = await encode(async (e) => {
      // Odd piece sizes, so blocks straddle the pieces the decoder returns.
      await e.addFile(n('sparse'), md(0o100644), size, [
        data.subarray(0, 10_000),
        data.subarray(10_000, 1_500_001),
        data.subarray(1_500_001),
      ]);
      await e.addFile(n('zeros'), md(0o100644), zeros.length, [zeros]);
      // Pieces ending anywhere (chunk ends): a carried partial block is completed by a piece
      // too short to complete it, then by the next one.
      await e.addFile(n('pieces'), md(0o100644), pieces.length, [
        pieces.subarray(0, 4000),
        pieces.subarray(4000, 4050),
        pieces.subarray(4050, 9000),
        pieces.subarray(9000),
      ]);
      await e.addFile(n('tail-zeros'), md(0o100644), 5000, [
        Buffer.concat([Buffer.from('x'), Buffer.alloc(4999)]),
      ]);
    });
    await restore(bytes);
    expect(readFileSync(join(target, 'sparse')).equals(data)).toBe(true);
    expect(readFileSync(join(target, 'zeros')).equals(zeros)).toBe(true);
    expect(readFileSync(join(target, 'pieces')).equals(pieces)).toBe(true);
    // Blocks 0 and 3 hold data; blocks 1 and 2 are holes.
    expect(lstatSync(join(target, 'pieces')).blocks * 512).toBeLessThanOrEqual(2 * 4096);
    expect(
      readFileSync(join(target, 'tail-zeros')).equals(
        Buffer.concat([Buffer.from('x'), Buffer.alloc(4999)]),
      ),
    ).toBe(true);
    const sparse = lstatSync(join(target, 'sparse'));
    expect(sparse.size).toBe(size);
    // Only the two blocks holding data are allocated (ext4 may add an extent block or two).
    expect(sparse.blocks * 512).toBeLessThan(64 * 1024);
    expect(lstatSync(join(target, 'zeros')).blocks).toBe(0);
    expect(lstatSync(join(target, 'tail-zeros')).size).toBe(5000);
  });

  it('refuses content longer or shorter than the file size (defence against a wrong decoder)', async () => {
    for (const [got, code] of [
      [5, 'PXAR_BAD_PAYLOAD'],
      [2, 'PXAR_TRUNCATED'],
    ] as const) {
      const to = join(work, `t${got}`);
      const source = fakeSource(
        [rootEntry(), entry('f', { kind: 'file', size: 3, payloadOffset: 0 }), end('')],
        () => [Buffer.alloc(got, 1)],
      );
      expect(await rejectionCodeOf(extractArchive(source, to))).toBe(code);
      expect(existsSync(join(to, 'f'))).toBe(false);
    }
  });
});

describe('extractArchive: patterns', () => {
  const build = async (e: PxarEncoder): Promise<void> => {
    await e.enterDirectory(n('a'), md(0o40750, { mtime: { secs: 42, nanos: 43 } }));
    await e.enterDirectory(n('b'), md(0o40755));
    const f1 = await e.addFile(n('f1'), md(0o100644), 2, [n('f1')]);
    await e.addFile(n('f2'), md(0o100644), 2, [n('f2')]);
    await e.leaveDirectory();
    await e.enterDirectory(n('empty'), md(0o40711));
    await e.leaveDirectory();
    await e.leaveDirectory();
    const c = await e.addFile(n('c'), md(0o100644), 1, [n('c')]);
    await e.addHardlink(n('hl'), n('a/b/f1'), f1);
    await e.addHardlink(n('hl2'), n('c'), c);
  };

  it('restores only selected entries, the directories leading to them and included empty directories', async () => {
    const bytes = await encode(build);
    const { options, warnings } = collect({
      patterns: ['/a/b/f1', '/a/empty', '/hl', '/hl2'].map((p) => parsePattern(p, 'include')),
    });
    const stats = await restore(bytes, options);
    expect(tree(target)).toEqual(['a', 'a/b', 'a/b/f1', 'a/empty', 'hl']);
    expect(lstatSync(join(target, 'hl')).ino).toBe(lstatSync(join(target, 'a/b/f1')).ino);
    // A directory created only on the way to a selected entry still gets its metadata.
    const a = lstatSync(join(target, 'a'), { bigint: true });
    expect([Number(a.mode), a.mtimeNs]).toEqual([0o40750, 42_000_000_043n]);
    expect(Number(lstatSync(join(target, 'a/empty')).mode)).toBe(0o40711);
    // hl2's first occurrence (c) was not selected, so the link has nothing to point at.
    expect(warnings.map((w) => [w.kind, w.path, w.code])).toEqual([
      ['hardlink', 'hl2', 'NOT_FOUND'],
    ]);
    expect(stats).toMatchObject({ files: 1, hardlinks: 1, skipped: 3 });
  });

  it('takes the last matching pattern: include a directory, exclude one file in it', async () => {
    const bytes = await encode(build);
    await restore(bytes, {
      patterns: [parsePattern('a', 'include'), parsePattern('!a/b/f2', 'include')],
    });
    expect(tree(target)).toEqual(['a', 'a/b', 'a/b/f1', 'a/empty']);
  });
});

describe('extractArchive: existing entries and overwrite', () => {
  const fileArchive = () =>
    encode(async (e) => void (await e.addFile(n('f'), md(0o100644), 3, [n('new')])));

  it('refuses an existing file by default and replaces it (by unlinking) with overwrite files', async () => {
    mkdirSync(target);
    writeFileSync(join(target, 'f'), 'old');
    linkSync(join(target, 'f'), join(target, 'other-link'));
    const bytes = await fileArchive();
    expect(await rejectionCodeOf(restore(bytes))).toBe('ALREADY_EXISTS');
    expect(await rejectionCodeOf(restore(bytes, { overwrite: ['symlinks', 'hardlinks'] }))).toBe(
      'ALREADY_EXISTS',
    );
    expect(readFileSync(join(target, 'f'), 'utf8')).toBe('old');
    await restore(bytes, { overwrite: ['files'] });
    expect(readFileSync(join(target, 'f'), 'utf8')).toBe('new');
    // The other name of the old inode was not written through.
    expect(readFileSync(join(target, 'other-link'), 'utf8')).toBe('old');
  });

  it('replaces an existing entry by a symlink only with overwrite symlinks', async () => {
    mkdirSync(target);
    writeFileSync(join(target, 's'), 'old');
    const bytes = await encode(
      async (e) => void (await e.addSymlink(n('s'), md(0o120777), n('somewhere'))),
    );
    expect(await rejectionCodeOf(restore(bytes, { overwrite: ['files'] }))).toBe('ALREADY_EXISTS');
    await restore(bytes, { overwrite: ['symlinks'] });
    expect(readlinkSync(join(target, 's'))).toBe('somewhere');
  });

  it('replaces an existing entry by a hardlink only with overwrite hardlinks, and re-restores cleanly', async () => {
    const bytes = await encode(async (e) => {
      const at = await e.addFile(n('f'), md(0o100644), 1, [n('1')]);
      await e.addHardlink(n('h'), n('f'), at);
    });
    mkdirSync(target);
    writeFileSync(join(target, 'h'), 'in the way');
    expect(await rejectionCodeOf(restore(bytes))).toBe('ALREADY_EXISTS');
    rmSync(join(target, 'f'));
    expect(await rejectionCodeOf(restore(bytes, { overwrite: ['hardlinks'] }))).toBeUndefined();
    expect(lstatSync(join(target, 'h')).ino).toBe(lstatSync(join(target, 'f')).ino);
    // Everything again over the first restore: the root merges, all three kinds are replaced.
    await restore(bytes, { overwrite: 'all' });
    expect(lstatSync(join(target, 'h')).ino).toBe(lstatSync(join(target, 'f')).ino);
    expect(lstatSync(join(target, 'f')).nlink).toBe(2);
  });

  it('never replaces a directory, and never lets device nodes, FIFOs or sockets replace anything', async () => {
    mkdirSync(join(target, 'f'), { recursive: true });
    writeFileSync(join(target, 'f', 'keep'), 'k');
    expect(
      await rejectionCodeOf(
        restore(await fileArchive(), { overwrite: 'all', allowExistingDirs: true }),
      ),
    ).toBe('ALREADY_EXISTS');
    expect(readFileSync(join(target, 'f', 'keep'), 'utf8')).toBe('k');
    writeFileSync(join(target, 'p'), 'x');
    const fifo = await encode(async (e) => void (await e.addFifo(n('p'), md(0o10644))));
    expect(await rejectionCodeOf(restore(fifo, { overwrite: 'all' }))).toBe('ALREADY_EXISTS');
    expect(readFileSync(join(target, 'p'), 'utf8')).toBe('x');
  });

  it('merges into existing directories only with allowExistingDirs, applying the archive metadata', async () => {
    mkdirSync(join(target, 'sub'), { recursive: true, mode: 0o700 });
    writeFileSync(join(target, 'sub', 'mine'), 'm');
    const bytes = await encode(async (e) => {
      await e.enterDirectory(n('sub'), md(0o40751, { mtime: { secs: 77, nanos: 88 } }));
      await e.addFile(n('theirs'), md(0o100644), 1, [n('t')]);
      await e.leaveDirectory();
    });
    expect(await rejectionCodeOf(restore(bytes))).toBe('ALREADY_EXISTS');
    const stats = await restore(bytes, { allowExistingDirs: true });
    expect(tree(target)).toEqual(['sub', 'sub/mine', 'sub/theirs']);
    const sub = lstatSync(join(target, 'sub'), { bigint: true });
    expect([Number(sub.mode), sub.mtimeNs]).toEqual([0o40751, 77_000_000_088n]);
    expect(stats).toMatchObject({ directories: 0, files: 1 });
  });

  it('rejects an unknown overwrite kind', async () => {
    const bytes = await fileArchive();
    const overwrite = ['everything'] as unknown as ExtractOptions['overwrite'];
    expect(await rejectionCodeOf(restore(bytes, { overwrite }))).toBe('INVALID_ARGUMENT');
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile archives

/** Rewrites the NUL-terminated FILENAME `from` to `to` (same length) wherever it occurs. */
function renameItem(bytes: Uint8Array, from: string, to: string): Uint8Array {
  expect(to.length).toBe(from.length);
  const out = Buffer.from(bytes);
  const header = Buffer.alloc(16);
  header.writeBigUInt64LE(PXAR.FILENAME, 0);
  header.writeBigUInt64LE(BigInt(16 + from.length + 1), 8);
  const needle = Buffer.concat([header, Buffer.from(`${from}\0`)]);
  const at = out.indexOf(needle);
  expect(at).toBeGreaterThanOrEqual(0);
  out.write(to, at + 16, 'latin1');
  return out;
}

/** A decoder stand-in that yields the given events: for what a real decoder would refuse. */
function fakeSource(
  events: ExtractEvent[],
  contents: () => Uint8Array[] = () => [],
): ExtractSource {
  let i = 0;
  return {
    next: () => Promise.resolve(events[i++]),
    contents: async function* () {
      for (const piece of contents()) yield await Promise.resolve(piece);
    },
  };
}

function entry(
  path: string | Uint8Array,
  body: EntryKind,
  metadata?: Metadata,
  name?: Uint8Array,
): ExtractEvent {
  const p = typeof path === 'string' ? n(path) : path;
  const slash = p.lastIndexOf(0x2f);
  const e: Entry = {
    path: p,
    name: name ?? p.subarray(slash + 1),
    body,
    fileNameOffset: 1,
    ...(body.kind === 'hardlink' ? {} : { metadata: metadata ?? md(modeOf(body.kind)) }),
  };
  return { type: 'entry', entry: e };
}

function modeOf(kind: EntryKind['kind']): number {
  return {
    directory: 0o40755,
    file: 0o100644,
    symlink: 0o120777,
    hardlink: 0,
    'block-device': 0o60600,
    'char-device': 0o20600,
    fifo: 0o10600,
    socket: 0o140600,
  }[kind];
}

const rootEntry = (): ExtractEvent => ({
  type: 'entry',
  entry: {
    path: n(''),
    name: n(''),
    body: { kind: 'directory' },
    metadata: ROOT_MD,
    fileNameOffset: 0,
  },
});
const end = (path: string): ExtractEvent => ({ type: 'directory-end', path: n(path) });

describe('extractArchive: hostile archives never write outside the target', () => {
  it('a symlink followed by a directory of the same name (real decoder and bare events)', async () => {
    // Encode symlink x and directory y/f, then rename y to x: the decoder must refuse it...
    const bytes = renameItem(
      await encode(async (e) => {
        await e.addSymlink(n('x'), md(0o120777), n(outside));
        await e.enterDirectory(n('y'), md(0o40755));
        await e.addFile(n('f'), md(0o100644), 4, [n('evil')]);
        await e.leaveDirectory();
      }),
      'y',
      'x',
    );
    const code = await rejectionCodeOf(
      restore(bytes, { allowExistingDirs: true, overwrite: 'all' }),
    );
    expect(code).toMatch(/^PXAR_/);
    expect(readdirSync(outside)).toEqual([]);
    // ...and the extractor refuses it by itself too.
    const source = fakeSource(
      [
        rootEntry(),
        entry('x', { kind: 'symlink', target: n(outside) }),
        entry('x', { kind: 'directory' }),
        entry('x/f', { kind: 'file', size: 4, payloadOffset: 0 }),
        end('x'),
        end(''),
      ],
      () => [n('evil')],
    );
    expect(
      await rejectionCodeOf(
        extractArchive(source, join(work, 't2'), { allowExistingDirs: true, overwrite: 'all' }),
      ),
    ).toBe('PXAR_UNSAFE_PATH');
    expect(readdirSync(outside)).toEqual([]);
    expect(readlinkSync(join(work, 't2', 'x'))).toBe(outside);
  });

  it('a symlink already in the target where the archive has a directory', async () => {
    mkdirSync(target);
    symlinkSync(outside, join(target, 'd'));
    const bytes = await encode(async (e) => {
      await e.enterDirectory(n('d'), md(0o40777));
      await e.addFile(n('f'), md(0o100644), 4, [n('evil')]);
      await e.leaveDirectory();
    });
    for (const options of [{}, { allowExistingDirs: true, overwrite: 'all' as const }]) {
      expect(await rejectionCodeOf(restore(bytes, options))).toBe('PXAR_UNSAFE_PATH');
      expect(readdirSync(outside)).toEqual([]);
      expect(lstatSync(outside).mode & 0o777).not.toBe(0o777);
    }
  });

  it('a symlink already in the target where the archive has a file', async () => {
    mkdirSync(target);
    writeFileSync(join(outside, 'victim'), 'safe');
    symlinkSync(join(outside, 'victim'), join(target, 'f'));
    const bytes = await encode(
      async (e) => void (await e.addFile(n('f'), md(0o100666), 4, [n('evil')])),
    );
    expect(await rejectionCodeOf(restore(bytes))).toBe('ALREADY_EXISTS');
    // Overwriting replaces the link itself, never what it points to.
    await restore(bytes, { overwrite: 'all' });
    expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('safe');
    expect(lstatSync(join(outside, 'victim')).mode & 0o777).not.toBe(0o666);
    expect(lstatSync(join(target, 'f')).isFile()).toBe(true);
    expect(readFileSync(join(target, 'f'), 'utf8')).toBe('evil');
  });

  it('hardlink targets that pass through or are symlinks', async () => {
    writeFileSync(join(outside, 'secret'), 's');
    const viaDir = await encode(async (e) => {
      await e.addSymlink(n('l'), md(0o120777), n(outside));
      const at = await e.addFile(n('f'), md(0o100644), 1, [n('f')]);
      await e.addHardlink(n('h'), n('l/secret'), at);
    });
    expect(await rejectionCodeOf(restore(viaDir))).toBe('PXAR_UNSAFE_PATH');
    const toLink = await encode(async (e) => {
      await e.addSymlink(n('x'), md(0o120777), n(join(outside, 'secret')));
      const at = await e.addFile(n('f'), md(0o100644), 1, [n('f')]);
      await e.addHardlink(n('h'), n('x'), at);
    });
    expect(await rejectionCodeOf(restore(toLink, {}, join(work, 't2')))).toBe('PXAR_UNSAFE_PATH');
    expect(lstatSync(join(outside, 'secret')).nlink).toBe(1);
    expect(existsSync(join(target, 'h'))).toBe(false);
  });

  it('names and paths a decoder should have refused', async () => {
    const cases: Array<[string, ExtractEvent[]]> = [
      ['dot-dot name', [rootEntry(), entry('..', { kind: 'file', size: 0, payloadOffset: 0 })]],
      [
        'slash in name',
        [
          rootEntry(),
          entry(n('a/b'), { kind: 'file', size: 0, payloadOffset: 0 }, undefined, n('a/b')),
        ],
      ],
      [
        'path not under the current directory',
        [
          rootEntry(),
          entry('d', { kind: 'directory' }),
          entry('e/f', { kind: 'file', size: 0, payloadOffset: 0 }),
        ],
      ],
      [
        'absolute path',
        [
          rootEntry(),
          entry(n('/x'), { kind: 'file', size: 0, payloadOffset: 0 }, undefined, n('x')),
        ],
      ],
      [
        'hardlink ..',
        [rootEntry(), entry('h', { kind: 'hardlink', target: n('../outside/secret'), offset: 1 })],
      ],
      [
        'hardlink absolute',
        [rootEntry(), entry('h', { kind: 'hardlink', target: n(`${outside}/secret`), offset: 1 })],
      ],
      [
        'hardlink empty component',
        [rootEntry(), entry('h', { kind: 'hardlink', target: n('a//b'), offset: 1 })],
      ],
    ];
    writeFileSync(join(outside, 'secret'), 's');
    for (const [what, events] of cases) {
      const code = await rejectionCodeOf(
        extractArchive(fakeSource(events), join(work, 'cases', what.replace(/\W/g, '-'))),
      );
      expect([what, code]).toEqual([what, 'PXAR_UNSAFE_PATH']);
    }
    expect(readdirSync(outside)).toEqual(['secret']);
    expect(lstatSync(join(outside, 'secret')).nlink).toBe(1);
    expect(readdirSync(work).sort()).toEqual(['cases', 'outside']);
  });

  it('a symlink entry pointing anywhere is restored as text and never followed', async () => {
    const bytes = await encode(async (e) => {
      await e.addSymlink(n('up'), md(0o120777), n('../../../../../../etc'));
      await e.addSymlink(n('abs'), md(0o120777), n(outside));
    });
    await restore(bytes);
    expect(readlinkSync(join(target, 'up'))).toBe('../../../../../../etc');
    expect(readlinkSync(join(target, 'abs'))).toBe(outside);
    expect(readdirSync(outside)).toEqual([]);
  });
});

describe('extractArchive: corrupt archives', () => {
  it('stops mid-file with the decoder error, closes what it opened and removes the partial file', async () => {
    const big = randomBytes(200_000);
    const bytes = await encode(async (e) => {
      await e.enterDirectory(n('d'), md(0o40755));
      await e.addFile(n('big'), md(0o100644), big.length, [big]);
      await e.leaveDirectory();
      await e.addFile(n('after'), md(0o100644), 1, [n('a')]);
    });
    const before = fdCount();
    const code = await rejectionCodeOf(restore(bytes.subarray(0, 100_000)));
    expect(code).toBe('PXAR_TRUNCATED');
    expect(fdCount()).toBe(before);
    expect(tree(target)).toEqual(['d']);
    expect(readdirSync(work).sort()).toEqual(['outside', 'target']);
  });

  it('stops at a damaged item', async () => {
    const bytes = Buffer.from(
      await encode(async (e) => {
        await e.addFile(n('a'), md(0o100644), 1, [n('a')]);
        await e.addFile(n('b'), md(0o100644), 1, [n('b')]);
      }),
    );
    // Damage the second FILENAME's type.
    const header = Buffer.alloc(8);
    header.writeBigUInt64LE(PXAR.FILENAME);
    const second = bytes.indexOf(header, bytes.indexOf(header) + 1);
    bytes[second] = bytes[second]! ^ 0xff;
    const before = fdCount();
    expect(await rejectionCodeOf(restore(bytes))).toBe('PXAR_BAD_ITEM');
    expect(fdCount()).toBe(before);
    expect(tree(target)).toEqual(['a']);
  });

  it('refuses a stream that does not start with the root directory or ends early', async () => {
    expect(await rejectionCodeOf(extractArchive(fakeSource([]), target))).toBe('PXAR_BAD_ITEM');
    expect(await rejectionCodeOf(extractArchive(fakeSource([rootEntry()]), target))).toBe(
      'PXAR_TRUNCATED',
    );
    expect(
      await rejectionCodeOf(
        extractArchive(fakeSource([rootEntry(), end(''), rootEntry()]), target),
      ),
    ).toBe('PXAR_BAD_ITEM');
    expect(await rejectionCodeOf(extractArchive(fakeSource([rootEntry(), end('x')]), target))).toBe(
      'PXAR_BAD_ITEM',
    );
  });
});

describe('extractArchive: options and warnings', () => {
  const build = async (e: PxarEncoder): Promise<void> => {
    await e.addFile(
      n('f'),
      md(0o100644, {
        xattrs: [['user.x', 'v']],
        acl: { users: [{ id: 1000, permissions: 4 }] },
        fcaps: netBindCap(),
      }),
      1,
      [n('f')],
    );
    await e.addDevice(n('dev'), md(0o20600), 1, 3);
    await e.addFifo(n('fifo'), md(0o10600));
    await e.addSocket(n('sock'), md(0o140600));
  };

  it('noXattrs, noAcls, noFcaps, noDevices, noFifos, noSockets leave those out', async () => {
    const bytes = await encode(build);
    const stats = await restore(bytes, {
      noXattrs: true,
      noAcls: true,
      noFcaps: true,
      noDevices: true,
      noFifos: true,
      noSockets: true,
    });
    expect(tree(target)).toEqual(['f']);
    for (const name of ['user.x', 'system.posix_acl_access', 'security.capability'])
      expect(lGetXattr(join(target, 'f'), Buffer.from(name))).toBeNull();
    expect(stats).toMatchObject({ files: 1, skipped: 3 });
  });

  it('reports metadata it may not apply and turns it into an error when strict', async () => {
    const bytes = await encode(async (e) => {
      await e.addFile(
        n('f'),
        md(0o100644, {
          xattrs: [
            ['security.selinux', 'x'],
            ['user.ok', '1'],
          ],
        }),
        1,
        [n('f')],
      );
    });
    const { options, warnings } = collect();
    await restore(bytes, options);
    expect(warnings.map((w) => [w.kind, w.path, w.code])).toEqual([
      ['xattr', 'f', 'PXAR_BAD_ITEM'],
    ]);
    expect(lGetXattr(join(target, 'f'), Buffer.from('user.ok'))?.toString()).toBe('1');
    expect(lGetXattr(join(target, 'f'), Buffer.from('security.selinux'))?.toString()).not.toBe('x');
    expect(await rejectionCodeOf(restore(bytes, { strict: true }, join(work, 'strict')))).toBe(
      'PXAR_BAD_ITEM',
    );
  });

  it('restores quota project ids where the filesystem allows, else warns once', async () => {
    const bytes = await encode(async (e) => {
      await e.addFile(n('a'), md(0o100644, { quotaProjectId: 42 }), 0, []);
      await e.addFile(n('b'), md(0o100644, { quotaProjectId: 43 }), 0, []);
    });
    const { options, warnings } = collect();
    const stats = await restore(bytes, options);
    const fd = openSync(join(target, 'a'), 'r');
    let projid: number | undefined;
    try {
      projid = getProjectId(fd);
    } finally {
      closeSync(fd);
    }
    if (warnings.length === 0) {
      expect(projid).toBe(42);
    } else {
      // ext4 without the project feature: ENOTSUP, reported once for both files.
      expect(warnings.map((w) => [w.kind, w.errno])).toEqual([['projid', 'ENOTSUP']]);
      expect(stats).toMatchObject({ warnings: 1, suppressedWarnings: 1 });
    }
  });

  it('unprivileged: ownership is skipped with one warning and counted; strict refuses', async () => {
    const bytes = await encode(async (e) => {
      await e.addFile(n('a'), md(0o100644, { uid: 1234, gid: 1234 }), 0, []);
      await e.addSymlink(n('b'), md(0o120777, { uid: 1235 }), n('a'));
    });
    const { options, warnings } = collect({ privileged: false });
    const stats = await restore(bytes, options);
    expect(warnings.map((w) => [w.kind, w.code])).toEqual([['ownership', 'PERMISSION_DENIED']]);
    expect(stats).toMatchObject({ ownershipSkipped: 2, warnings: 1, suppressedWarnings: 1 });
    const me = BigInt(process.geteuid?.() ?? 0);
    expect(lstatSync(join(target, 'a'), { bigint: true }).uid).toBe(me);
    expect(
      await rejectionCodeOf(restore(bytes, { privileged: false, strict: true }, join(work, 's'))),
    ).toBe('PERMISSION_DENIED');
  });

  it('without the native helper: skips special files and keeps times to the microsecond, warning once each', async () => {
    const bytes = await encode(async (e) => {
      await e.addFile(
        n('a'),
        md(0o100644, {
          mtime: { secs: 1_600_000_000, nanos: 123_456_789 },
          xattrs: [['user.x', '1']],
        }),
        0,
        [],
      );
      await e.addFile(n('b'), md(0o100644, { xattrs: [['user.y', '1']] }), 0, []);
      await e.addFifo(n('p'), md(0o10600));
      await e.addSocket(n('s'), md(0o140600));
    });
    forceNativeFallback(true);
    const { options, warnings } = collect();
    const stats = await restore(bytes, options);
    forceNativeFallback(false);
    expect(tree(target)).toEqual(['a', 'b']);
    expect(warnings.map((w) => [w.kind, w.code]).sort()).toEqual([
      ['fifo', 'NATIVE_UNAVAILABLE'],
      ['times', 'NATIVE_UNAVAILABLE'],
      ['xattr', 'NATIVE_UNAVAILABLE'],
    ]);
    const mtime = lstatSync(join(target, 'a'), { bigint: true }).mtimeNs;
    expect(Number(mtime - 1_600_000_000_123_456_789n)).toBeLessThan(1000);
    expect(Number(mtime - 1_600_000_000_123_456_789n)).toBeGreaterThan(-1000);
    expect(stats).toMatchObject({ files: 2, skipped: 2 });
  });

  it('works without /proc (plain paths), and still refuses a symlink in the way', async () => {
    forceProcFdFallback(true);
    const bytes = await encode(async (e) => {
      await e.enterDirectory(n('d'), md(0o40750));
      const at = await e.addFile(n('f'), md(0o100640, { mtime: { secs: 3, nanos: 4 } }), 2, [
        n('hi'),
      ]);
      await e.addFifo(n('p'), md(0o10640));
      await e.leaveDirectory();
      await e.addHardlink(n('h'), n('d/f'), at);
    });
    await restore(bytes);
    expect(tree(target)).toEqual(['d', 'd/f', 'd/p', 'h']);
    expect(Number(lstatSync(join(target, 'd/p')).mode)).toBe(0o10640);
    expect(lstatSync(join(target, 'h')).ino).toBe(lstatSync(join(target, 'd/f')).ino);
    mkdirSync(join(work, 't2'));
    symlinkSync(outside, join(work, 't2', 'd'));
    expect(
      await rejectionCodeOf(restore(bytes, { allowExistingDirs: true }, join(work, 't2'))),
    ).toBe('PXAR_UNSAFE_PATH');
    expect(readdirSync(outside)).toEqual([]);
  });

  it('stops with TASK_ABORTED when the signal fires', async () => {
    const bytes = await encode(async (e) => {
      for (let i = 0; i < 5; i++) await e.addFile(n(`f${i}`), md(0o100644), 1, [n('x')]);
    });
    const controller = new AbortController();
    const code = await rejectionCodeOf(
      restore(bytes, {
        signal: controller.signal,
        onProgress: (p) => p.entries === 2 && controller.abort(),
      }),
    );
    expect(code).toBe('TASK_ABORTED');
    expect(tree(target)).toEqual(['f0', 'f1']);
  });
});

describe('extractArchive: as an unprivileged user (a child process as nobody when we are root)', () => {
  const ROOT = fileURLToPath(new URL('../..', import.meta.url));

  it('fills read-only directories and warns about what needs root', async () => {
    const bytes = await encode(async (e) => {
      await e.enterDirectory(n('ro'), md(0o40555, { mtime: { secs: 8, nanos: 9 } }));
      await e.addFile(n('child'), md(0o100444), 1, [n('c')]);
      await e.leaveDirectory();
      await e.addFile(
        n('x'),
        md(0o100640, {
          uid: 1234,
          gid: 1234,
          xattrs: [
            ['trusted.t', '1'],
            ['user.u', '2'],
          ],
        }),
        0,
        [],
      );
      await e.addDevice(n('dev'), md(0o20600), 1, 3);
      await e.addFifo(n('fifo'), md(0o10640));
    });
    const dir = join(work, 'user');
    mkdirSync(dir);
    if (isRoot) {
      chownSync(dir, 65534, 65534);
      chmodSync(work, 0o711);
    }
    writeFileSync(join(work, 'archive.pxar'), bytes);
    const script = `
      const { readFileSync } = await import('node:fs');
      const { PxarDecoder } = await import(${JSON.stringify(join(ROOT, 'src/pxar/decoder.ts'))});
      const { extractArchive } = await import(${JSON.stringify(join(ROOT, 'src/pxar/extractor.ts'))});
      const bytes = readFileSync(process.env.ARCHIVE);
      const warnings = [];
      const stats = await extractArchive(new PxarDecoder((async function* () { yield bytes; })()), process.env.TARGET, {
        onWarning: (w) => warnings.push(w),
      });
      console.log(JSON.stringify({ uid: process.geteuid(), stats, warnings }));
    `;
    const result = await new Promise<{
      uid: number;
      stats: Record<string, number>;
      warnings: ExtractWarning[];
    }>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '--eval', script],
        {
          cwd: ROOT,
          env: { ...process.env, ARCHIVE: join(work, 'archive.pxar'), TARGET: join(dir, 't') },
          stdio: ['ignore', 'pipe', 'pipe'],
          ...(isRoot ? { uid: 65534, gid: 65534 } : {}),
        },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve(JSON.parse(out) as never) : reject(new Error(`child failed: ${err}`)),
      );
    });
    expect(result.uid).not.toBe(0);
    const t = join(dir, 't');
    expect(tree(t)).toEqual(['fifo', 'ro', 'ro/child', 'x']);
    expect(readFileSync(join(t, 'ro/child'), 'utf8')).toBe('c');
    const ro = lstatSync(join(t, 'ro'), { bigint: true });
    expect([Number(ro.mode), ro.mtimeNs]).toEqual([0o40555, 8_000_000_009n]);
    expect(lGetXattr(join(t, 'x'), Buffer.from('user.u'))?.toString()).toBe('2');
    expect(result.warnings.map((w) => [w.kind, w.path, w.code, w.errno ?? null])).toEqual([
      // Everything in the archive belongs to root: one warning at the first entry restored.
      ['ownership', 'ro/child', 'PERMISSION_DENIED', null],
      ['xattr', 'x', 'IO_ERROR', 'EPERM'],
      ['device', 'dev', 'PERMISSION_DENIED', 'EPERM'],
    ]);
    // ro/child, ro, x, fifo and the root; not the device, which was not created.
    expect(result.stats).toMatchObject({
      files: 2,
      fifos: 1,
      devices: 0,
      skipped: 1,
      ownershipSkipped: 5,
    });
  });
});

describe('extractArchive: hardlinks to immutable files', () => {
  it('links to a file restored immutable a moment ago (root), keeping the flag', async () => {
    const bytes = await encode(async (e) => {
      const at = await e.addFile(n('imm'), md(0o100644, { flags: PXAR_FLAGS.IMMUTABLE }), 1, [
        n('i'),
      ]);
      await e.addHardlink(n('link'), n('imm'), at);
    });
    const { options, warnings } = collect();
    const result = restore(bytes, options);
    if (isRoot) {
      await result;
      expect(warnings).toEqual([]);
      expect(lstatSync(join(target, 'link')).ino).toBe(lstatSync(join(target, 'imm')).ino);
      expect(getFlags(join(target, 'imm')) & 0x10).toBe(0x10);
    } else {
      // Unprivileged the flag cannot be set in the first place: a warning, then a plain link.
      await result;
      expect(warnings.map((w) => w.kind)).toEqual(['flags']);
      expect(lstatSync(join(target, 'link')).ino).toBe(lstatSync(join(target, 'imm')).ino);
    }
  });
});
