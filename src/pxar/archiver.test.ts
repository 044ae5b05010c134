import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import type { SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  closeSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_ENTRY_LIMIT,
  createArchive,
  excludePrelude,
  readRootMetadata,
} from './archiver.js';
import type { ArchiveOptions, ArchiveStats } from './archiver.js';
import { PxarEncoder } from './encoder.js';
import { PxarDecoder } from './decoder.js';
import { bytesRandomAccess } from './random-access.js';
import { EMPTY_ACL, PXAR_FLAGS } from './format.js';
import type { Acl, Entry } from './format.js';
import { aclToXattrs } from './posix-acl.js';
import { CatalogReader, CatalogWriter } from '../format/catalog.js';
import {
  getFsFlags,
  lSetXattr,
  mknod,
  nativeAvailable,
  setFsFlags,
  setTimesNs,
} from '../lib/native-fs.js';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';

const isRoot = process.getuid?.() === 0;
const native = nativeAvailable();
/** Paths as one char per byte, so that non-UTF-8 names compare exactly. */
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');
const UMLAUT = Buffer.from('ä').toString('latin1');

interface Decoded {
  readonly path: string;
  readonly entry: Entry;
  readonly content?: Buffer;
}

interface Result {
  readonly stats: ArchiveStats;
  readonly warnings: { message: string; path: string }[];
  readonly entries: Decoded[];
  readonly archive: Buffer;
  readonly prelude?: Uint8Array;
}

/** Archives `src` (v1, or v2 with a payload stream) and decodes the result with the decoder. */
async function archive(src: string, options: ArchiveOptions = {}, split = false): Promise<Result> {
  const warnings: { message: string; path: string }[] = [];
  const onWarning = (message: string, path: string): void => {
    warnings.push({ message, path });
  };
  const out: Buffer[] = [];
  const payloadOut: Buffer[] = [];
  const prelude = split ? excludePrelude(options.excludePatterns) : undefined;
  const encoder = await PxarEncoder.begin(await readRootMetadata(src, onWarning), {
    output: { write: (b) => void out.push(Buffer.from(b)) },
    ...(split ? { payloadOutput: { write: (b) => void payloadOut.push(Buffer.from(b)) } } : {}),
    ...(prelude === undefined ? {} : { prelude }),
  });
  const stats = await createArchive(src, encoder, { onWarning, ...options });
  await encoder.finish();
  const bytes = Buffer.concat(out);
  const decoder = new PxarDecoder(
    Readable.from([bytes]),
    split ? { payload: bytesRandomAccess(Buffer.concat(payloadOut)) } : {},
  );
  const entries: Decoded[] = [];
  for (;;) {
    const event = await decoder.next();
    if (event === undefined) break;
    if (event.type !== 'entry') continue;
    const { entry } = event;
    if (entry.body.kind === 'file') {
      const pieces: Buffer[] = [];
      for await (const piece of decoder.contents()) pieces.push(Buffer.from(piece));
      entries.push({ path: text(entry.path), entry, content: Buffer.concat(pieces) });
    } else {
      entries.push({ path: text(entry.path), entry });
    }
  }
  const result: Result = { stats, warnings, entries, archive: bytes };
  return split ? { ...result, prelude: decoder.prelude() } : result;
}

const paths = (r: Result): string[] => r.entries.map((e) => e.path);
const find = (r: Result, path: string): Decoded => {
  const found = r.entries.find((e) => e.path === path);
  if (found === undefined) throw new Error(`${path} is not in the archive: ${paths(r).join(', ')}`);
  return found;
};

let base: string;
let src: string;
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'burrow-archiver-'));
  chmodSync(base, 0o755);
  src = join(base, 'src');
  mkdirSync(src);
});
afterEach(() => {
  for (const m of mounted.splice(0)) spawnSync('umount', [m]);
  // Flags like append-only would stop the cleanup.
  spawnSync('chattr', ['-R', '-ia', base]);
  rmSync(base, { recursive: true, force: true });
});
const mounted: string[] = [];

describe('createArchive: the tree', () => {
  it('archives every kind of entry, sorted by raw name bytes, with contents and metadata', async () => {
    const big = randomBytes(2.5 * 1024 * 1024);
    writeFileSync(join(src, 'a'), 'alpha');
    writeFileSync(join(src, 'B'), '');
    writeFileSync(join(src, '_'), 'x');
    writeFileSync(join(src, '0'), 'zero');
    writeFileSync(join(src, 'Z10'), '10');
    writeFileSync(join(src, 'Z2'), '2');
    writeFileSync(join(src, 'ä'), 'umlaut');
    writeFileSync(Buffer.concat([Buffer.from(src + '/'), Buffer.from([0xff, 0x61])]), 'latin');
    mkdirSync(join(src, 'd', 'e'), { recursive: true });
    writeFileSync(join(src, 'd', 'big'), big);
    writeFileSync(join(src, 'd', 'e', 'deep'), 'deep');
    symlinkSync('../a', join(src, 'd', 'up'));
    linkSync(join(src, 'a'), join(src, 'd', 'e', 'link-to-a'));
    linkSync(join(src, 'd', 'big'), join(src, 'd', 'big2'));
    mknod(join(src, 'fifo'), 0o010640, 0, 0);
    mknod(join(src, 'sock'), 0o140755, 0, 0);
    if (isRoot) {
      mknod(join(src, 'blk'), 0o060600, 8, 1);
      // Numbers above 8 and 12 bits exercise both halves of the glibc split.
      mknod(join(src, 'chr'), 0o020620, 300, 70000);
      execFileSync('chown', ['4321:8765', join(src, 'a')]);
    } else {
      expect(() => mknod(join(src, 'blk'), 0o060600, 8, 1)).toThrow(/EPERM/);
    }
    chmodSync(join(src, 'a'), 0o4750);
    setTimesNs(join(src, 'a'), { secs: 0, nanos: 0 }, { secs: -1, nanos: 250_000_000 });
    setTimesNs(join(src, 'd'), { secs: 0, nanos: 0 }, { secs: 1_600_000_000, nanos: 999_999_999 });

    const r = await archive(src);
    expect(r.warnings).toEqual([]);
    const devices = isRoot ? ['blk', 'chr'] : [];
    expect(paths(r)).toEqual([
      '',
      '0',
      'B',
      'Z10',
      'Z2',
      '_',
      'a',
      ...(isRoot ? ['blk', 'chr'] : []),
      'd',
      'd/big',
      'd/big2',
      'd/e',
      'd/e/deep',
      'd/e/link-to-a',
      'd/up',
      'fifo',
      'sock',
      UMLAUT,
      '\xffa',
    ]);
    expect(find(r, 'a').content!.toString()).toBe('alpha');
    expect(find(r, 'B').content!.length).toBe(0);
    expect(find(r, 'd/big').content!.equals(big)).toBe(true);
    expect(find(r, UMLAUT).content!.toString()).toBe('umlaut');

    const a = find(r, 'a').entry;
    expect(a.metadata!.stat.mode).toBe(0o104750);
    expect(a.metadata!.stat.mtime).toEqual({ secs: -1, nanos: 250_000_000 });
    if (isRoot) expect([a.metadata!.stat.uid, a.metadata!.stat.gid]).toEqual([4321, 8765]);
    expect(find(r, 'd').entry.metadata!.stat.mtime).toEqual({
      secs: 1_600_000_000,
      nanos: 999_999_999,
    });

    // Hardlinks point back at the first occurrence, by path and by FILENAME offset.
    const link = find(r, 'd/e/link-to-a').entry;
    expect(link.body).toMatchObject({ kind: 'hardlink' });
    if (link.body.kind === 'hardlink') {
      expect(text(link.body.target)).toBe('a');
      expect(link.fileNameOffset - link.body.offset).toBe(a.fileNameOffset);
    }
    const big2 = find(r, 'd/big2').entry.body;
    expect(big2.kind === 'hardlink' && text(big2.target)).toBe('d/big');

    const up = find(r, 'd/up').entry;
    expect(up.body.kind === 'symlink' && text(up.body.target)).toBe('../a');
    expect(up.metadata!.stat.mode).toBe(0o120777);
    expect(find(r, 'fifo').entry.metadata!.stat.mode).toBe(0o010640);
    expect(find(r, 'fifo').entry.body.kind).toBe('fifo');
    expect(find(r, 'sock').entry.body.kind).toBe('socket');
    if (isRoot) {
      expect(find(r, 'blk').entry.body).toEqual({ kind: 'block-device', major: 8, minor: 1 });
      expect(find(r, 'chr').entry.body).toEqual({ kind: 'char-device', major: 300, minor: 70000 });
    }

    expect(r.stats.entries).toEqual({
      directory: 2,
      file: 10,
      symlink: 1,
      hardlink: 2,
      'block-device': devices.length > 0 ? 1 : 0,
      'char-device': devices.length > 0 ? 1 : 0,
      fifo: 1,
      socket: 1,
    });
    expect(r.stats.bytes).toBe(5 + 1 + 4 + 2 + 1 + 6 + 5 + big.length + 4);
    expect(r.stats.warnings).toBe(0);
  });

  it('writes the same tree to a split (v2) archive', async () => {
    writeFileSync(join(src, 'f'), 'payload');
    mkdirSync(join(src, 'd'));
    writeFileSync(join(src, 'd', 'g'), 'more');
    const r = await archive(src, {}, true);
    expect(paths(r)).toEqual(['', 'd', 'd/g', 'f']);
    expect(find(r, 'f').content!.toString()).toBe('payload');
    expect(find(r, 'd/g').content!.toString()).toBe('more');
    expect(r.prelude).toBeUndefined();
  });

  it.runIf(native)(
    'archives xattrs, ACLs, fcaps and chattr flags of files, directories and the root',
    async () => {
      const file = join(src, 'f');
      writeFileSync(file, 'x');
      chmodSync(file, 0o640);
      lSetXattr(file, Buffer.from('user.one'), Buffer.from('1'));
      lSetXattr(src, Buffer.from('user.root'), Buffer.from('r'));
      const acl: Acl = { ...EMPTY_ACL, users: [{ id: 1001, permissions: 6 }], groupObj: 4 };
      lSetXattr(file, Buffer.from('system.posix_acl_access'), aclToXattrs(acl, 0o100660).access!);
      const dir = join(src, 'd');
      mkdirSync(dir);
      const dirAcl: Acl = {
        ...EMPTY_ACL,
        default: { userObj: 7, groupObj: 5, other: 0, mask: 7 },
        defaultGroups: [{ id: 50, permissions: 7 }],
      };
      lSetXattr(
        dir,
        Buffer.from('system.posix_acl_default'),
        aclToXattrs(dirAcl, 0o40755).default!,
      );
      for (const p of [file, dir]) {
        const fd = openSync(p, 'r');
        try {
          setFsFlags(fd, getFsFlags(fd) | 0x40); // FS_NODUMP_FL, chattr +d
        } finally {
          closeSync(fd);
        }
      }
      const caps = Buffer.alloc(20);
      caps.writeUInt32LE(0x02000000, 0);
      caps.writeUInt32LE(1 << 10, 4);
      if (isRoot) lSetXattr(file, Buffer.from('security.capability'), caps);

      const r = await archive(src);
      expect(r.warnings).toEqual([]);
      const root = find(r, '').entry.metadata!;
      expect(root.xattrs.map((x) => [text(x.name), text(x.value)])).toEqual([['user.root', 'r']]);
      const f = find(r, 'f').entry.metadata!;
      expect(f.xattrs.map((x) => [text(x.name), text(x.value)])).toEqual([['user.one', '1']]);
      expect(f.acl).toEqual(acl);
      expect(f.stat.flags).toBe(PXAR_FLAGS.NODUMP);
      if (isRoot) expect(Buffer.from(f.fcaps!)).toEqual(caps);
      const d = find(r, 'd').entry.metadata!;
      expect(d.acl).toEqual(dirAcl);
      expect(d.stat.flags).toBe(PXAR_FLAGS.NODUMP);
    },
  );

  it('feeds a catalog with the same tree', async () => {
    writeFileSync(join(src, 'f'), 'abc');
    setTimesNs(join(src, 'f'), { secs: 0, nanos: 0 }, { secs: 1_430_487_000, nanos: 5 });
    mkdirSync(join(src, 'd'));
    symlinkSync('f', join(src, 'd', 'l'));
    linkSync(join(src, 'f'), join(src, 'd', 'h'));
    mknod(join(src, 'p'), 0o010644, 0, 0);
    mknod(join(src, 's'), 0o140644, 0, 0);
    const bytes: Uint8Array[] = [];
    const catalog = new CatalogWriter({ write: (b) => void bytes.push(new Uint8Array(b)) });
    catalog.startDirectory(Buffer.from('root.pxar.didx'));
    await archive(src, { catalog, excludePatterns: ['*.none'] });
    await catalog.endDirectory();
    await catalog.finish();
    const reader = CatalogReader.fromBytes(Buffer.concat(bytes));
    const listing: string[] = [];
    for await (const item of reader.dump()) {
      const e = item.entry;
      listing.push(`${e.type} ${text(item.path)}${e.type === 'f' ? ` ${e.size} ${e.mtime}` : ''}`);
    }
    expect(listing).toEqual([
      'd root.pxar.didx',
      'd root.pxar.didx/d',
      // d/h comes first in the walk, so it is the file and f the hardlink.
      'f root.pxar.didx/d/h 3 1430487000',
      'l root.pxar.didx/d/l',
      'h root.pxar.didx/f',
      'p root.pxar.didx/p',
      's root.pxar.didx/s',
      'f root.pxar.didx/.pxarexclude-cli 7 0',
    ]);
  });
});

describe('createArchive: the --no-* switches', () => {
  it('leave out xattrs, ACLs, fcaps, devices, FIFOs and sockets as asked, and only those', async () => {
    writeFileSync(join(src, 'f'), 'data');
    mknod(join(src, 'fifo'), 0o010644, 0, 0);
    mknod(join(src, 'sock'), 0o140755, 0, 0);
    if (isRoot) mknod(join(src, 'chr'), 0o020600, 1, 3);
    if (native) {
      lSetXattr(join(src, 'f'), Buffer.from('user.note'), Buffer.from('kept?'));
      const acl = aclToXattrs(
        { ...EMPTY_ACL, users: [{ id: 1234, permissions: 4 }] },
        lstatSync(join(src, 'f')).mode,
      );
      lSetXattr(join(src, 'f'), Buffer.from('system.posix_acl_access'), acl.access!);
    }
    const full = await archive(src);
    const fullFile = find(full, 'f').entry.metadata!;
    if (native) {
      expect(fullFile.xattrs.map((x) => Buffer.from(x.name).toString())).toEqual(['user.note']);
      expect(fullFile.acl.users).toEqual([{ id: 1234, permissions: 4 }]);
    }

    const slim = await archive(src, {
      noXattrs: true,
      noAcls: true,
      noDevices: true,
      noFifos: true,
      noSockets: true,
    });
    expect(paths(slim)).toEqual(['', 'f']);
    expect(slim.stats.excluded).toBe(isRoot ? 3 : 2);
    const slimFile = find(slim, 'f').entry.metadata!;
    expect(slimFile.xattrs).toEqual([]);
    expect(slimFile.acl).toEqual(EMPTY_ACL);
    expect(slimFile.stat).toEqual(fullFile.stat);
    expect(find(slim, 'f').content?.toString()).toBe('data');

    const onlyFifos = await archive(src, { noFifos: true });
    expect(paths(onlyFifos)).toEqual(['', ...(isRoot ? ['chr'] : []), 'f', 'sock']);
  });
});

describe('createArchive: exclusion', () => {
  function tree(): void {
    for (const p of [
      'keep.log',
      'drop.log',
      'top-only',
      'cache/x',
      'sub/cache',
      'sub/top-only',
      'sub/a.tmp',
      'sub/important.tmp',
      'sub/x',
      'sub/deeper/x',
      'sub/deeper/b.tmp',
      'sub/deeper/c.tmp',
      'sub/deeper/d.tmp',
      'other/x',
      'other/a.tmp',
    ]) {
      mkdirSync(join(src, p, '..'), { recursive: true });
      writeFileSync(join(src, p), p);
    }
    // A directory-only pattern must not take the file sub/cache.
    writeFileSync(join(src, 'sub', '.pxarexclude'), '# comment\n\n  /x  \n*.tmp\n!important.tmp\n');
    writeFileSync(join(src, 'sub', 'deeper', '.pxarexclude'), '!c.tmp\nd.tmp\n');
  }
  const cli = ['*.log', '!keep.log', '/top-only', 'cache/'];

  it('applies command-line patterns anchored at the root and .pxarexclude files below their directory', async () => {
    tree();
    const r = await archive(src, { excludePatterns: cli });
    expect(r.warnings).toEqual([]);
    expect(paths(r)).toEqual([
      '',
      'keep.log',
      'other',
      'other/a.tmp',
      'other/x',
      'sub',
      'sub/.pxarexclude',
      'sub/cache',
      'sub/deeper',
      'sub/deeper/.pxarexclude',
      'sub/deeper/c.tmp',
      'sub/deeper/x',
      'sub/important.tmp',
      'sub/top-only',
      '.pxarexclude-cli',
    ]);
    // drop.log, top-only, cache/, sub/x, sub/a.tmp, sub/deeper/b.tmp, sub/deeper/d.tmp
    expect(r.stats.excluded).toBe(7);
    const cliFile = find(r, '.pxarexclude-cli');
    expect(cliFile.content!.toString()).toBe('*.log\n!keep.log\n/top-only\ncache/\n');
    const stat = cliFile.entry.metadata!.stat;
    expect(stat.mode).toBe(0o100600);
    expect(stat.mtime).toEqual({ secs: 0, nanos: 0 });
    expect([stat.uid, stat.gid]).toEqual([process.getuid!(), process.getgid!()]);
  });

  it('skips a real root .pxarexclude-cli but archives one further down', async () => {
    writeFileSync(join(src, '.pxarexclude-cli'), 'real');
    mkdirSync(join(src, 'd'));
    writeFileSync(join(src, 'd', '.pxarexclude-cli'), 'nested');
    const plain = await archive(src);
    expect(paths(plain)).toEqual(['', 'd', 'd/.pxarexclude-cli']);
    const withCli = await archive(src, { excludePatterns: ['nothing'] });
    expect(paths(withCli)).toEqual(['', 'd', 'd/.pxarexclude-cli', '.pxarexclude-cli']);
    expect(find(withCli, '.pxarexclude-cli').content!.toString()).toBe('nothing\n');
  });

  it('puts the patterns into the v2 prelude instead of a .pxarexclude-cli file', async () => {
    tree();
    const r = await archive(src, { excludePatterns: cli }, true);
    expect(paths(r)).not.toContain('.pxarexclude-cli');
    expect(paths(r)).toContain('sub/deeper/c.tmp');
    expect(paths(r)).not.toContain('drop.log');
    expect(text(r.prelude!)).toBe(
      '{"exclude-patterns":"*.log\\n!keep.log\\n/top-only\\ncache/\\n"}',
    );
  });

  it('excludePrelude gives nothing without patterns', () => {
    expect(excludePrelude(undefined)).toBeUndefined();
    expect(excludePrelude([])).toBeUndefined();
  });

  it('warns about bad lines in a .pxarexclude and keeps the good ones', async () => {
    writeFileSync(join(src, '.pxarexclude'), 'a[\nb\n');
    writeFileSync(join(src, 'a['), '');
    writeFileSync(join(src, 'b'), '');
    const r = await archive(src);
    expect(paths(r)).toEqual(['', '.pxarexclude', 'a[']);
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]!.message).toMatch(/bad pattern/);
    expect(r.stats.warnings).toBe(1);
  });
});

describe('createArchive: file systems', () => {
  function mountTmpfs(dir: string): void {
    mkdirSync(dir);
    execFileSync('mount', ['-t', 'tmpfs', 'none', dir]);
    mounted.push(dir);
  }

  it.runIf(isRoot)(
    'records other mount points as empty directories unless their device is included',
    async () => {
      mountTmpfs(join(src, 'mnt'));
      chmodSync(join(src, 'mnt'), 0o711);
      writeFileSync(join(src, 'mnt', 'inside'), 'tmpfs');
      writeFileSync(join(src, 'z'), 'after');

      const one = await archive(src);
      expect(paths(one)).toEqual(['', 'mnt', 'z']);
      expect(one.stats.mountPointsSkipped).toBe(1);
      // The directory's metadata is that of the mounted file system's root.
      expect(find(one, 'mnt').entry.metadata!.stat.mode).toBe(0o40711);

      const dev = lstatSync(join(src, 'mnt'), { bigint: true }).dev;
      const included = await archive(src, { includeDevices: [dev] });
      expect(paths(included)).toEqual(['', 'mnt', 'mnt/inside', 'z']);
      expect(find(included, 'mnt/inside').content!.toString()).toBe('tmpfs');

      const all = await archive(src, { allFileSystems: true });
      expect(paths(all)).toEqual(['', 'mnt', 'mnt/inside', 'z']);
      expect(all.stats.mountPointsSkipped).toBe(0);
    },
  );

  it.runIf(isRoot)(
    'never descends into pseudo file systems and refuses one as the source',
    async () => {
      const proc = join(src, 'proc');
      mkdirSync(proc);
      execFileSync('mount', ['-t', 'proc', 'proc', proc]);
      mounted.push(proc);
      const all = await archive(src, { allFileSystems: true });
      expect(paths(all)).toEqual(['', 'proc']);
      expect(all.stats.mountPointsSkipped).toBe(1);
      const encoder = await PxarEncoder.begin(await readRootMetadata(src), {
        output: { write: () => {} },
      });
      expect(await rejectionCodeOf(createArchive(proc, encoder))).toBe('INVALID_ARGUMENT');
    },
  );

  it.runIf(!isRoot)('as non-root, mounting is refused (the mount tests need root)', () => {
    expect(() =>
      execFileSync('mount', ['-t', 'tmpfs', 'none', src], { stdio: 'ignore' }),
    ).toThrow();
  });
});

describe('createArchive: changes during the backup', () => {
  it('pads a file that shrinks while it is read and warns', async () => {
    const file = join(src, 'f');
    writeFileSync(file, Buffer.alloc(100, 7));
    const r = await archive(src, {
      beforeFileRead: (path) => {
        if (path === file) truncateSync(file, 10);
      },
    });
    const content = find(r, 'f').content!;
    expect(content.length).toBe(100);
    expect(content.equals(Buffer.concat([Buffer.alloc(10, 7), Buffer.alloc(90)]))).toBe(true);
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]).toEqual({
      message: expect.stringMatching(/shrank/) as string,
      path: file,
    });
    expect(r.stats.bytes).toBe(10);
  });

  it('cuts a file that grows while it is read at its announced size and warns', async () => {
    const file = join(src, 'f');
    writeFileSync(file, 'start');
    const r = await archive(src, {
      beforeFileRead: () => appendFileSync(file, '-and-more'),
    });
    expect(find(r, 'f').content!.toString()).toBe('start');
    expect(r.warnings.map((w) => w.message)).toEqual([expect.stringMatching(/grew/)]);
  });

  it('finds growth at piece boundaries too, with fresh or reused read buffers', async () => {
    const MiB = 1024 * 1024;
    // Growth shows in the last read (asked one byte more) or, when the size is a whole number
    // of pieces, in a read of one byte after them.
    for (const size of [0, 5, MiB, MiB + 5, 2 * MiB]) {
      for (const reuseReadBuffer of [false, true]) {
        const file = join(src, 'f');
        const content = randomBytes(size);
        writeFileSync(file, content);
        const r = await archive(src, {
          reuseReadBuffer,
          beforeFileRead: () => appendFileSync(file, 'more'),
        });
        expect(find(r, 'f').content!.equals(content), `${size}`).toBe(true);
        expect(r.warnings.map((w) => w.message)).toEqual([expect.stringMatching(/grew/)]);
        expect(r.stats.bytes).toBe(size);
      }
    }
  });

  it('archives the same bytes whether pieces are read into fresh or reused buffers', async () => {
    const MiB = 1024 * 1024;
    const sizes = [0, 1, 4095, 65_536, MiB - 1, MiB, MiB + 1, 3 * MiB + 17];
    sizes.forEach((size, i) => writeFileSync(join(src, `f${i}`), randomBytes(size)));
    const fresh = await archive(src, { reuseReadBuffer: false });
    const reused = await archive(src, { reuseReadBuffer: true });
    expect(reused.archive.equals(fresh.archive)).toBe(true);
    expect(reused.warnings).toEqual([]);
    sizes.forEach((size, i) => expect(find(reused, `f${i}`).content!.length).toBe(size));
  });

  it('warns when the mtime changes while a file is read', async () => {
    const file = join(src, 'f');
    writeFileSync(file, 'same size');
    const r = await archive(src, {
      beforeFileRead: () => setTimesNs(file, { secs: 0, nanos: 0 }, { secs: 12345, nanos: 0 }),
    });
    expect(find(r, 'f').content!.toString()).toBe('same size');
    expect(r.warnings.map((w) => w.message)).toEqual([expect.stringMatching(/changed/)]);
  });

  it('skips files and directories that vanish after the listing, with a warning', async () => {
    writeFileSync(join(src, 'a'), 'a');
    writeFileSync(join(src, 'b'), 'b');
    mkdirSync(join(src, 'c'));
    writeFileSync(join(src, 'c', 'x'), 'x');
    writeFileSync(join(src, 'd'), 'd');
    const seen: string[] = [];
    const r = await archive(src, {
      onProgress: ({ path, entries }) => {
        seen.push(`${entries}:${path}`);
        if (path === 'a') {
          unlinkSync(join(src, 'b'));
          rmSync(join(src, 'c'), { recursive: true });
        }
      },
    });
    expect(paths(r)).toEqual(['', 'a', 'd']);
    expect(r.warnings).toEqual([
      { message: expect.stringMatching(/vanished/) as string, path: join(src, 'b') },
      { message: expect.stringMatching(/vanished/) as string, path: join(src, 'c') },
    ]);
    expect(seen).toEqual(['1:a', '2:b', '3:c', '4:d']);
  });

  it('warns about unreadable files and directories and archives the rest', () => {
    // Root reads everything, so the archiver runs in a child that drops to uid 65534 first.
    writeFileSync(join(src, 'open.txt'), 'open');
    writeFileSync(join(src, 'secret'), 'secret');
    chmodSync(join(src, 'secret'), 0o000);
    mkdirSync(join(src, 'closed'));
    writeFileSync(join(src, 'closed', 'inner'), 'inner');
    chmodSync(join(src, 'closed'), 0o000);
    const here = (name: string): string => new URL(name, import.meta.url).href;
    const script = `
      if (process.getuid() === 0) { process.setgid(65534); process.setuid(65534); }
      const { createArchive, readRootMetadata } = await import(${JSON.stringify(here('archiver.ts'))});
      const { PxarEncoder } = await import(${JSON.stringify(here('encoder.ts'))});
      const { PxarDecoder } = await import(${JSON.stringify(here('decoder.ts'))});
      const src = ${JSON.stringify(src)};
      const out = [];
      const warnings = [];
      const onWarning = (message, path) => warnings.push({ message, path });
      const encoder = await PxarEncoder.begin(await readRootMetadata(src, onWarning), { output: { write: (b) => { out.push(Buffer.from(b)); } } });
      await createArchive(src, encoder, { onWarning });
      await encoder.finish();
      const bytes = Buffer.concat(out);
      const decoder = new PxarDecoder((async function* () { yield bytes; })());
      const paths = [];
      for (let e = await decoder.next(); e; e = await decoder.next())
        if (e.type === 'entry') paths.push(Buffer.from(e.entry.path).toString());
      process.stdout.write(JSON.stringify({ uid: process.getuid(), paths, warnings }));
    `;
    let child: SpawnSyncReturns<string>;
    try {
      child = spawnSync(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        { encoding: 'utf8', cwd: fileURLToPath(new URL('../..', import.meta.url)) },
      );
    } finally {
      // Non-root cleanup needs the permissions back.
      chmodSync(join(src, 'closed'), 0o700);
    }
    expect(child.stderr).toBe('');
    const result = JSON.parse(child.stdout) as {
      uid: number;
      paths: string[];
      warnings: { message: string; path: string }[];
    };
    expect(result.uid).not.toBe(0);
    expect(result.paths).toEqual(['', 'open.txt']);
    expect(result.warnings).toEqual([
      { message: expect.stringMatching(/access denied/) as string, path: join(src, 'closed') },
      { message: expect.stringMatching(/access denied/) as string, path: join(src, 'secret') },
    ]);
  });
});

describe('createArchive: limits and errors', () => {
  it('limits the entries listed in the open directories, as PBS counts them', async () => {
    // root: a, b; a: x, y -> at most 2 + 2 listed at once.
    for (const p of ['a/x', 'a/y', 'b/z']) {
      mkdirSync(join(src, p, '..'), { recursive: true });
      writeFileSync(join(src, p), p);
    }
    const ok = await archive(src, { entryLimit: 4 });
    expect(paths(ok)).toEqual(['', 'a', 'a/x', 'a/y', 'b', 'b/z']);
    const encoder = await PxarEncoder.begin(await readRootMetadata(src), {
      output: { write: () => {} },
    });
    const failure = createArchive(src, encoder, { entryLimit: 3 });
    expect(await rejectionCodeOf(failure)).toBe('INVALID_ARGUMENT');
    expect(DEFAULT_ENTRY_LIMIT).toBe(1_048_576);
  });

  it('refuses a source that is missing or not a directory', async () => {
    const encoder = await PxarEncoder.begin(await readRootMetadata(src), {
      output: { write: () => {} },
    });
    expect(await rejectionCodeOf(createArchive(join(base, 'missing'), encoder))).toBe('NOT_FOUND');
    writeFileSync(join(base, 'file'), '');
    expect(await rejectionCodeOf(createArchive(join(base, 'file'), encoder))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(await rejectionCodeOf(readRootMetadata(join(base, 'file')))).toBe('INVALID_ARGUMENT');
  });

  it('stops when the encoder fails', async () => {
    writeFileSync(join(src, 'f'), Buffer.alloc(300 * 1024));
    let writes = 0;
    const encoder = await PxarEncoder.begin(await readRootMetadata(src), {
      output: {
        write: () => {
          if (++writes > 1) throw new Error('disk full');
        },
      },
    });
    await expect(createArchive(src, encoder)).rejects.toThrow(/disk full/);
  });
});
