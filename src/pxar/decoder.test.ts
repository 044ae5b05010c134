import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { PxarAccessor } from './accessor.js';
import { MAX_DIRECTORY_DEPTH, PxarDecoder } from './decoder.js';
import { PXAR, type Entry, type RandomAccess } from './format.js';
import { bytesRandomAccess } from './random-access.js';
import {
  buildArchive,
  concat,
  deviceItem,
  entryItem,
  entryV1Item,
  filenameItem,
  goodbyeItem,
  hardlinkItem,
  header,
  item,
  payloadItem,
  payloadRefItem,
  pieces,
  symlinkItem,
  u64,
  versionItem,
  xattrItem,
  type GoodbyeChild,
} from '../../test/helpers/pxar-builder.js';
import { decodeAll, pathText, walkAccessor } from '../../test/helpers/pxar-walk.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = path.resolve(repoRoot, '../shared/fixtures/pbs-upstream');
const enc = new TextEncoder();
const MiB = 1024 * 1024;

/** pxar-format.md §6: the worked v1 example, 475 bytes. */
const SPEC_EXAMPLE_HEX = `
efac88e5746495d53800000000000000ed410000000000000000000000000000
e8030000e8030000d87f4355000000000000000000000000b317390621117016
1600000000000000612e74787400efac88e5746495d53800000000000000a481
0000000000000000000000000000000000000000000000000000000000000000
000000000000251a7c0b1b7a1428130000000000000068690ab3173906211170
1612000000000000006400efac88e5746495d53800000000000000ed41000000
0000000000000000000000000000000000000000000000000000000000000000
0000001d73d542a64fec2f280000000000000055153e755bed5eef3800000000
0000002800000000000000b31739062111701612000000000000006c00efac88
e5746495d53800000000000000ffa10000000000000000000000000000000000
0000000000000000000000000000000000000000005fdcf5dbe771f927160000
0000000000612e747874001d73d542a64fec2f7000000000000000592517c946
04725360000000000000006000000000000000c3472fbc6c1db625d200000000
000000720000000000000072aa11b6662d39dc33010000000000006100000000
00000055153e755bed5eef6b010000000000007000000000000000`;
export const SPEC_EXAMPLE = new Uint8Array(Buffer.from(SPEC_EXAMPLE_HEX.replace(/\s/g, ''), 'hex'));

const ROOT_MODE = 0o40755;
const ROOT = entryItem({ mode: ROOT_MODE });

async function decodeError(
  bytes: Uint8Array,
  options: Parameters<typeof decodeAll>[1] = {},
): Promise<BurrowError> {
  try {
    await decodeAll(bytes, options);
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw error;
  }
  throw new Error('the archive decoded without an error');
}

async function accessorError(
  bytes: Uint8Array,
  options: Parameters<typeof walkAccessor>[1] = {},
): Promise<BurrowError> {
  try {
    await walkAccessor(bytes, options);
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw error;
  }
  throw new Error('the archive was walked without an error');
}

function expectPxarError(
  error: BurrowError,
  code: string,
  offset?: number,
  name = 'test.pxar',
): void {
  expect(error.code).toBe(code);
  if (offset !== undefined) {
    expect(error.details.offset).toBe(offset);
    expect(error.message).toContain(`byte ${offset}`);
  }
  if (name !== '') expect(error.message).toContain(name);
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

describe('§6 worked example', () => {
  it('the test builder reproduces the spec bytes (so hand-built archives follow the spec)', () => {
    const built = buildArchive(
      [
        { kind: 'file', name: 'a.txt', stat: { mode: 0o100644 }, data: enc.encode('hi\n') },
        { kind: 'dir', name: 'd', stat: { mode: 0o40755 }, children: [] },
        { kind: 'symlink', name: 'l', stat: { mode: 0o120777 }, target: 'a.txt' },
      ],
      { rootStat: { mode: 0o40755, uid: 1000, gid: 1000, secs: 1430487000 } },
    );
    expect(Buffer.from(built.archive).equals(Buffer.from(SPEC_EXAMPLE))).toBe(true);
  });

  for (const chunk of [1, 7, 56, 475]) {
    it(`decodes to the spec's entries, metadata and contents (pieces of ${chunk} bytes)`, async () => {
      const decoded = await decodeAll(SPEC_EXAMPLE, { chunk });
      expect(decoded.version).toBe(1);
      expect(decoded.prelude).toBeUndefined();
      expect(decoded.events).toEqual([
        'entry:',
        'entry:a.txt',
        'entry:d',
        'end:d',
        'entry:l',
        'end:',
      ]);
      const [root, a, d, l] = decoded.entries as [Entry, Entry, Entry, Entry];
      expect(root.body).toEqual({ kind: 'directory' });
      expect(root.fileNameOffset).toBe(0);
      expect(root.metadata?.stat).toEqual({
        mode: 0o40755,
        flags: 0,
        uid: 1000,
        gid: 1000,
        mtime: { secs: 1430487000, nanos: 0 },
      });
      expect(root.metadata?.xattrs).toEqual([]);
      expect(a.fileNameOffset).toBe(56);
      expect(a.body).toEqual({ kind: 'file', size: 3, payloadOffset: 134 });
      expect(a.metadata?.stat).toEqual({
        mode: 0o100644,
        flags: 0,
        uid: 0,
        gid: 0,
        mtime: { secs: 0, nanos: 0 },
      });
      expect(text(decoded.contents.get('a.txt')!)).toBe('hi\n');
      expect(d.fileNameOffset).toBe(153);
      expect(d.body).toEqual({ kind: 'directory' });
      expect(d.metadata?.stat.mode).toBe(0o40755);
      expect(l.fileNameOffset).toBe(267);
      expect(l.body.kind).toBe('symlink');
      expect(l.body.kind === 'symlink' && text(l.body.target)).toBe('a.txt');
      expect(l.metadata?.stat.mode).toBe(0o120777);
    });
  }

  it('gives the same events for any split of the input', async () => {
    const reference = await decodeAll(SPEC_EXAMPLE, { chunk: 475 });
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }),
        async (sizes) => {
          const decoded = await decodeAll(SPEC_EXAMPLE, { chunk: sizes });
          expect(decoded.events).toEqual(reference.events);
          expect(decoded.contents).toEqual(reference.contents);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('accessor: root, lookups of a.txt, d and l, missing names, readDirectory', async () => {
    const accessor = await PxarAccessor.open(bytesRandomAccess(SPEC_EXAMPLE), {
      name: 'test.pxar',
    });
    expect(accessor.formatVersion()).toBe(1);
    const root = accessor.root();
    expect(root.entryEnd).toBe(475);
    expect(root.metadata?.stat.mtime).toEqual({ secs: 1430487000, nanos: 0 });
    const a = await accessor.lookup('a.txt');
    expect(a?.fileNameOffset).toBe(56);
    expect(a?.entryEnd).toBe(153);
    expect(a?.body).toEqual({ kind: 'file', size: 3, payloadOffset: 134 });
    const parts: Uint8Array[] = [];
    for await (const p of accessor.readFile(a!)) parts.push(p);
    expect(text(concat(parts))).toBe('hi\n');
    const middle: Uint8Array[] = [];
    for await (const p of accessor.readFile(a!, 1, 1)) middle.push(p);
    expect(text(concat(middle))).toBe('i');
    const d = await accessor.lookup('/d/');
    expect(d?.fileNameOffset).toBe(153);
    expect(d?.entryEnd).toBe(267);
    expect(await accessor.readDirectory(d!)).toEqual([]);
    const l = await accessor.lookup(enc.encode('l'));
    expect(l?.entryEnd).toBe(363);
    expect(l?.body.kind === 'symlink' && text(l.body.target)).toBe('a.txt');
    expect(await accessor.lookup('')).toBe(root);
    expect(await accessor.lookup('/')).toBe(root);
    for (const missing of ['b', 'a.tx', 'd/x', 'a.txt/x', 'l/a', '..', '.', 'A.TXT'])
      expect(await accessor.lookup(missing)).toBeUndefined();
    const listing = await accessor.readDirectory(root);
    expect(listing.map((e) => text(e.path))).toEqual(['a.txt', 'd', 'l']);
    expect(listing.map((e) => e.fileNameOffset)).toEqual([56, 153, 267]);
  });
});

describe('ENTRY_V1 (legacy) entries', () => {
  it('converts the nanosecond mtime into secs and nanos', async () => {
    const rootEntry = entryV1Item({
      mode: 0o40700,
      uid: 5,
      gid: 6,
      ns: 1_500_000_000_123_456_789n,
    });
    const fileStart = rootEntry.length;
    const fileEntry = entryV1Item({ mode: 0o100600, ns: 999_999_999n });
    const parts = [rootEntry, filenameItem('f'), fileEntry, payloadItem(enc.encode('xy'))];
    const body = concat(parts);
    const archive = concat([
      body,
      goodbyeItem(body.length, 0, [
        { name: enc.encode('f'), start: fileStart, size: body.length - fileStart },
      ]),
    ]);
    const decoded = await decodeAll(archive, { chunk: 3 });
    expect(decoded.entries[0]!.metadata?.stat).toEqual({
      mode: 0o40700,
      flags: 0,
      uid: 5,
      gid: 6,
      mtime: { secs: 1_500_000_000, nanos: 123_456_789 },
    });
    expect(decoded.entries[1]!.metadata?.stat.mtime).toEqual({ secs: 0, nanos: 999_999_999 });
    expect(text(decoded.contents.get('f')!)).toBe('xy');
    const walked = await walkAccessor(archive);
    expect(walked.entries[1]!.metadata?.stat.mtime).toEqual({ secs: 0, nanos: 999_999_999 });
  });
});

describe('upstream PBS fixtures (pxar-format.md §11.1)', () => {
  const fixture = (name: string): Uint8Array => {
    if (!existsSync(FIXTURES))
      throw new Error(
        `the upstream fixtures are missing: expected them in ${FIXTURES} (see pxar-format.md §11.1)`,
      );
    return new Uint8Array(readFileSync(path.join(FIXTURES, name)));
  };

  /** START marker, optional padding, 100 × (PAYLOAD header + 1 MiB of zeros), TAIL marker (§11.1 item 3). */
  const payloadStream = (padding: Uint8Array): Uint8Array => {
    const record = 16 + MiB;
    const out = new Uint8Array(16 + padding.length + 100 * record + 16);
    out.set(header(PXAR.PAYLOAD_START_MARKER, 16), 0);
    out.set(padding, 16);
    for (let k = 0; k < 100; k++)
      out.set(header(PXAR.PAYLOAD, record), 16 + padding.length + k * record);
    out.set(header(PXAR.PAYLOAD_TAIL_MARKER, 16), out.length - 16);
    return out;
  };

  const zeros = Buffer.alloc(MiB);
  const cases = [
    {
      file: 'backup-client-pxar-data.mpxar',
      base: 16,
      padding: new Uint8Array(0),
      prelude: undefined,
    },
    {
      file: 'backup-client-pxar-expected.mpxar',
      base: 32,
      // The reused first chunk still holds the old start marker (§11.1 item 2).
      padding: header(PXAR.PAYLOAD_START_MARKER, 16),
      prelude: new Uint8Array(0),
    },
  ];

  /** A RandomAccess whose readPiece stops at multiples of `pieceSize`, as chunks would. */
  const piecewise = (bytes: Uint8Array, pieceSize: number, size = bytes.length): RandomAccess => ({
    size,
    readAt: (offset, length) => bytesRandomAccess(bytes).readAt(offset, length),
    readPiece: (offset, maxLength) => {
      const end = Math.min(
        bytes.length,
        offset + maxLength,
        (Math.floor(offset / pieceSize) + 1) * pieceSize,
      );
      return Promise.resolve(bytes.subarray(Math.min(offset, end), end));
    },
  });

  for (const c of cases) {
    it(`${c.file}: 111 entries with the documented metadata and contents`, async () => {
      const archive = fixture(c.file);
      const payload = bytesRandomAccess(payloadStream(c.padding));
      const decoded = await decodeAll(archive, { payload, chunk: [4096, 1, 333] });
      expect(decoded.version).toBe(2);
      expect(decoded.prelude).toEqual(c.prelude);
      expect(decoded.entries).toHaveLength(111);
      const expectedPaths = [''];
      for (let f = 0; f < 10; f++) {
        expectedPaths.push(`folder_${f}`);
        for (let i = 0; i < 10; i++) expectedPaths.push(`folder_${f}/file_${i}`);
      }
      expect(decoded.entries.map((e) => pathText(e.path))).toEqual(expectedPaths);
      let k = 0;
      for (const entry of decoded.entries) {
        const stat = entry.metadata!.stat;
        expect(stat.uid).toBe(1000);
        expect(stat.gid).toBe(1000);
        expect(stat.mtime).toEqual({ secs: 0, nanos: 0 });
        expect(stat.flags).toBe(0);
        expect(entry.metadata!.xattrs).toEqual([]);
        expect(entry.metadata!.fcaps).toBeUndefined();
        if (entry.body.kind === 'directory') {
          expect(stat.mode).toBe(0o40777);
        } else {
          expect(stat.mode).toBe(0o100777);
          expect(entry.body).toEqual({
            kind: 'file',
            size: MiB,
            payloadOffset: c.base + k * 1048592,
          });
          const content = decoded.contents.get(pathText(entry.path))!;
          expect(content.length).toBe(MiB);
          expect(zeros.equals(content)).toBe(true);
          k++;
        }
      }
      expect(k).toBe(100);

      // A payload source that hands out pieces (chunks) of its own size gives the same contents.
      const bytes = payloadStream(c.padding);
      const pieces = await decodeAll(archive, { payload: piecewise(bytes, 100_000) });
      expect([...pieces.contents.keys()]).toEqual([...decoded.contents.keys()]);
      for (const [p, content] of pieces.contents) expect(zeros.equals(content), p).toBe(true);
      const cut = await decodeError(archive, {
        // The source claims its whole size but its data stops 1000 bytes early.
        payload: piecewise(bytes.subarray(0, bytes.length - 1000), 100_000, bytes.length),
        name: 'test.pxar',
      });
      expect(cut.code).toBe('PXAR_TRUNCATED');

      const walked = await walkAccessor(archive, { payload });
      expect(walked.version).toBe(2);
      expect(walked.entries.map((e) => pathText(e.path))).toEqual(expectedPaths);
      expect(walked.entries.map((e) => e.body)).toEqual(decoded.entries.map((e) => e.body));
      expect(walked.entries.map((e) => e.metadata)).toEqual(decoded.entries.map((e) => e.metadata));
      expect([...walked.contents.keys()]).toEqual([...decoded.contents.keys()]);
      for (const [p, content] of walked.contents) expect(zeros.equals(content), p).toBe(true);
    });

    it(`${c.file}: without the payload stream, lists everything but refuses contents`, async () => {
      const archive = fixture(c.file);
      const listed = await decodeAll(archive, { readContents: false });
      expect(listed.entries).toHaveLength(111);
      const decoder = new PxarDecoder(pieces(archive), { name: 'fixture.mpxar' });
      let event = await decoder.next();
      while (event !== undefined && !(event.type === 'entry' && event.entry.body.kind === 'file'))
        event = await decoder.next();
      const read = async (): Promise<void> => {
        for await (const _ of decoder.contents()) void _;
      };
      await expect(read()).rejects.toMatchObject({ code: 'PXAR_PAYLOAD_REQUIRED' });
      const accessor = await PxarAccessor.open(bytesRandomAccess(archive));
      const file = await accessor.lookup('folder_9/file_9');
      expect(file?.body).toEqual({ kind: 'file', size: MiB, payloadOffset: c.base + 99 * 1048592 });
      const readAcc = async (): Promise<void> => {
        for await (const _ of accessor.readFile(file!)) void _;
      };
      await expect(readAcc()).rejects.toMatchObject({ code: 'PXAR_PAYLOAD_REQUIRED' });
    });
  }

  it('the payload of one fixture does not fit the other (offsets are checked against PAYLOAD headers)', async () => {
    const archive = fixture('backup-client-pxar-expected.mpxar');
    const payload = bytesRandomAccess(payloadStream(new Uint8Array(0)));
    const error = await decodeError(archive, { payload, name: 'test.pxar' });
    expectPxarError(error, 'PXAR_BAD_PAYLOAD');
    expect((await accessorError(archive, { payload, name: 'test.pxar' })).code).toBe(
      'PXAR_BAD_PAYLOAD',
    );
  });
});

describe('decoder behaviour', () => {
  const smallTree = (): Uint8Array =>
    buildArchive([
      { kind: 'file', name: 'big', data: new Uint8Array(3 * MiB + 5).fill(7) },
      { kind: 'file', name: 'small', data: enc.encode('abc') },
    ]).archive;

  it('hands out contents in pieces of at most 1 MiB and skips unread contents', async () => {
    const archive = smallTree();
    const decoder = new PxarDecoder(pieces(archive, 5 * MiB));
    await decoder.next();
    const big = await decoder.next();
    expect(big?.type === 'entry' && big.entry.body).toMatchObject({
      kind: 'file',
      size: 3 * MiB + 5,
    });
    const sizes: number[] = [];
    for await (const p of decoder.contents()) sizes.push(p.length);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(MiB);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(3 * MiB + 5);

    const skipping = new PxarDecoder(pieces(archive, 1000));
    await skipping.next();
    await skipping.next();
    const small = await skipping.next();
    expect(small?.type === 'entry' && pathText(small.entry.path)).toBe('small');
    const parts: Uint8Array[] = [];
    for await (const p of skipping.contents()) parts.push(p);
    expect(text(concat(parts))).toBe('abc');
    expect((await skipping.next())?.type).toBe('directory-end');
    expect(await skipping.next()).toBeUndefined();
    expect(await skipping.next()).toBeUndefined();
  });

  it('a partly read content iterator is cut off by next()', async () => {
    const decoder = new PxarDecoder(pieces(smallTree(), 4096));
    await decoder.next();
    await decoder.next();
    const iterator = decoder.contents()[Symbol.asyncIterator]();
    expect(((await iterator.next()).value as Uint8Array).length).toBeGreaterThan(0);
    expect((await decoder.next())?.type).toBe('entry');
    await expect(iterator.next()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('contents() of a non-file and a second contents() read are refused', async () => {
    const decoder = new PxarDecoder(pieces(smallTree()));
    await decoder.next();
    const drain = async (it: AsyncIterable<Uint8Array>): Promise<void> => {
      for await (const _ of it) void _;
    };
    await expect(drain(decoder.contents())).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await decoder.next();
    await drain(decoder.contents());
    await expect(drain(decoder.contents())).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('after an error, every further next() gives the same error', async () => {
    const decoder = new PxarDecoder(pieces(SPEC_EXAMPLE.subarray(0, 100)));
    await decoder.next();
    const first = await decoder.next().catch((e: unknown) => e);
    expect(first).toBeInstanceOf(BurrowError);
    await expect(decoder.next()).rejects.toBe(first);
  });

  it('accepts attributes in any order and keeps each kind in the order given', async () => {
    const attrs = [
      item(PXAR.QUOTA_PROJID, u64(77)),
      xattrItem('user.b', 'B'),
      item(PXAR.ACL_DEFAULT_GROUP, concat([u64(9), u64(1)])),
      item(PXAR.FCAPS, new Uint8Array([1, 2, 3])),
      item(PXAR.ACL_USER, concat([u64(1001), u64(6)])),
      xattrItem('user.a', ''),
      item(PXAR.ACL_GROUP_OBJ, u64(5)),
      item(
        PXAR.ACL_DEFAULT,
        concat([u64(7), u64(0xffffffffffffffffn), u64(4), u64(0xffffffffffffffffn)]),
      ),
      item(PXAR.ACL_USER, concat([u64(1000), u64(4)])),
      item(PXAR.ACL_GROUP, concat([u64(50), u64(2)])),
      item(PXAR.ACL_DEFAULT_USER, concat([u64(3), u64(7)])),
    ];
    const head = concat([ROOT, ...attrs]);
    const archive = concat([head, goodbyeItem(head.length, 0, [])]);
    const decoded = await decodeAll(archive, { chunk: 5 });
    const meta = decoded.entries[0]!.metadata!;
    expect(meta.xattrs.map((x) => [text(x.name), text(x.value)])).toEqual([
      ['user.b', 'B'],
      ['user.a', ''],
    ]);
    expect(meta.acl).toEqual({
      users: [
        { id: 1001, permissions: 6 },
        { id: 1000, permissions: 4 },
      ],
      groups: [{ id: 50, permissions: 2 }],
      groupObj: 5,
      default: { userObj: 7, other: 4 },
      defaultUsers: [{ id: 3, permissions: 7 }],
      defaultGroups: [{ id: 9, permissions: 1 }],
    });
    expect(meta.fcaps).toEqual(new Uint8Array([1, 2, 3]));
    expect(meta.quotaProjectId).toBe(77);
    const walked = await walkAccessor(archive);
    expect(walked.entries[0]!.metadata).toEqual(meta);
  });

  it('reads 64-bit ENTRY fields up to ±(2^53 - 1) and refuses what lies beyond', async () => {
    const archiveWith = (stat: { mode: number; secs?: number; flags?: number }): Uint8Array =>
      buildArchive([{ kind: 'file', name: 'f', stat, data: enc.encode('F') }], {}).archive;
    const mtimeOf = async (secs: number): Promise<number | undefined> =>
      (await decodeAll(archiveWith({ mode: 0o100644, secs }))).entries.find(
        (e) => pathText(e.path) === 'f',
      )?.metadata?.stat.mtime.secs;
    const limits = [
      Number.MAX_SAFE_INTEGER,
      -Number.MAX_SAFE_INTEGER,
      2 ** 32,
      2 ** 32 - 1,
      -(2 ** 32),
      -(2 ** 32) - 1,
      -1,
    ];
    for (const secs of limits) expect(await mtimeOf(secs)).toBe(secs);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
        async (secs) => {
          expect(await mtimeOf(secs)).toBe(secs);
        },
      ),
      { numRuns: 200 },
    );
    for (const secs of [2 ** 53, -(2 ** 53), 2 ** 60, -(2 ** 62)]) {
      const error = await decodeError(archiveWith({ mode: 0o100644, secs }));
      expect(error.code).toBe('PXAR_BAD_ITEM');
      expect(error.message).toContain(`mtime ${BigInt(secs)} s is out of range`);
    }
    const flags = await decodeError(archiveWith({ mode: 0o100644, flags: 2 ** 53 }));
    expect(flags.message).toContain(`entry flags ${2n ** 53n} is too large`);
    const mode = await decodeError(archiveWith({ mode: 0o100644 + 2 ** 32 }));
    expect(mode.message).toContain('mode 0x1000081a4 is not a valid file mode');
  });

  it('decodes devices, FIFOs, sockets and hardlinks (v1) and negative mtimes', async () => {
    const built = buildArchive(
      [
        { kind: 'device', name: 'blk', stat: { mode: 0o60660 }, major: 8, minor: 1 },
        { kind: 'device', name: 'chr', stat: { mode: 0o20666 }, major: 1, minor: 3 },
        {
          kind: 'dir',
          name: 'sub',
          children: [
            {
              kind: 'file',
              name: 'f',
              stat: { mode: 0o100600, secs: -2, nanos: 500_000_000 },
              data: enc.encode('F'),
            },
          ],
        },
        { kind: 'fifo', name: 'p' },
        { kind: 'socket', name: 's' },
        { kind: 'hardlink', name: 'z', target: 'sub/f' },
      ],
      {},
    );
    const decoded = await decodeAll(built.archive, { chunk: 2 });
    expect(decoded.events).toEqual([
      'entry:',
      'entry:blk',
      'entry:chr',
      'entry:sub',
      'entry:sub/f',
      'end:sub',
      'entry:p',
      'entry:s',
      'entry:z',
      'end:',
    ]);
    const byPath = new Map(decoded.entries.map((e) => [pathText(e.path), e]));
    expect(byPath.get('blk')!.body).toEqual({ kind: 'block-device', major: 8, minor: 1 });
    expect(byPath.get('chr')!.body).toEqual({ kind: 'char-device', major: 1, minor: 3 });
    expect(byPath.get('p')!.body).toEqual({ kind: 'fifo' });
    expect(byPath.get('s')!.body).toEqual({ kind: 'socket' });
    expect(byPath.get('sub/f')!.metadata!.stat.mtime).toEqual({ secs: -2, nanos: 500_000_000 });
    const link = byPath.get('z')!;
    expect(link.metadata).toBeUndefined();
    expect(link.body).toMatchObject({
      kind: 'hardlink',
      offset: built.positions.get('z')! - built.positions.get('sub/f')!,
    });
    expect(link.body.kind === 'hardlink' && text(link.body.target)).toBe('sub/f');
    const walked = await walkAccessor(built.archive);
    expect(walked.links.get('z')).toBe('sub/f');
    expect(walked.entries.map((e) => pathText(e.path))).toEqual([
      '',
      'blk',
      'chr',
      'sub',
      'sub/f',
      'p',
      's',
      'z',
    ]);
  });

  it(`accepts ${MAX_DIRECTORY_DEPTH} nested directories and refuses 4096 without a stack overflow`, async () => {
    const nested = (depth: number, close: boolean): Uint8Array => {
      const parts: Uint8Array[] = [ROOT];
      let pos = ROOT.length;
      const fnStart: number[] = [];
      const entryStart: number[] = [];
      for (let i = 0; i < depth; i++) {
        fnStart.push(pos);
        const fn = filenameItem('a');
        const e = entryItem({ mode: 0o40700 });
        entryStart.push(pos + fn.length);
        parts.push(fn, e);
        pos += fn.length + e.length;
      }
      if (!close) return concat(parts);
      const ends: number[] = new Array<number>(depth);
      for (let i = depth - 1; i >= -1; i--) {
        const child: GoodbyeChild[] =
          i + 1 < depth
            ? [
                {
                  name: enc.encode('a'),
                  start: fnStart[i + 1]!,
                  size: ends[i + 1]! - fnStart[i + 1]!,
                },
              ]
            : [];
        const gb = goodbyeItem(pos, i >= 0 ? entryStart[i]! : 0, child);
        parts.push(gb);
        pos += gb.length;
        if (i >= 0) ends[i] = pos;
      }
      return concat(parts);
    };
    const ok = nested(MAX_DIRECTORY_DEPTH, true);
    const decoded = await decodeAll(ok);
    expect(decoded.entries).toHaveLength(MAX_DIRECTORY_DEPTH + 1);
    const accessor = await PxarAccessor.open(bytesRandomAccess(ok));
    const deepest = await accessor.lookup(
      Array.from({ length: MAX_DIRECTORY_DEPTH }, () => 'a').join('/'),
    );
    expect(deepest?.body.kind).toBe('directory');

    const deep = nested(4096, false);
    const error = await decodeError(deep, { name: 'test.pxar' });
    // The first FILENAME of the directory one level too deep: root + (FILENAME 18 + ENTRY 56) per level.
    expectPxarError(error, 'PXAR_BAD_ITEM', 56 + MAX_DIRECTORY_DEPTH * 74);
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile input

describe('truncated archives', () => {
  it('every proper prefix of the §6 example is PXAR_TRUNCATED at the cut', async () => {
    for (let cut = 0; cut < SPEC_EXAMPLE.length; cut++) {
      const error = await decodeError(SPEC_EXAMPLE.subarray(0, cut), {
        name: 'test.pxar',
        chunk: 11,
      });
      expectPxarError(error, 'PXAR_TRUNCATED', cut);
      expect(typeof error.details.expected).toBe('string');
    }
  });

  it('truncated file data is reported while reading the contents', async () => {
    const built = buildArchive([{ kind: 'file', name: 'f', data: new Uint8Array(100) }]);
    const cut = built.positions.get('f')! + 18 + 56 + 16 + 40;
    const error = await decodeError(built.archive.subarray(0, cut), { name: 'test.pxar' });
    expectPxarError(error, 'PXAR_TRUNCATED', cut);
  });

  it('the accessor refuses every proper prefix with a PXAR error', async () => {
    for (let cut = 0; cut < SPEC_EXAMPLE.length; cut++) {
      const error = await accessorError(SPEC_EXAMPLE.subarray(0, cut));
      expect(error.code).toMatch(/^PXAR_/);
    }
  });
});

describe('bad items', () => {
  const rootThen = (...rest: Uint8Array[]): Uint8Array => concat([ROOT, ...rest]);

  const cases: [string, Uint8Array, number][] = [
    ['an unknown item type', rootThen(item(0x1234567812345678n, new Uint8Array(4))), 56],
    ['full_size below 16', rootThen(header(PXAR.FILENAME, 15)), 56],
    [
      'a FILENAME above its maximum (header only: nothing is buffered)',
      rootThen(header(PXAR.FILENAME, 16 + 4098)),
      56,
    ],
    ['an XATTR claiming 2^40 bytes', rootThen(header(PXAR.XATTR, 2 ** 40)), 56],
    ['a full_size beyond 2^53', rootThen(header(PXAR.PAYLOAD, 2n ** 60n)), 56],
    ['an ENTRY of 39 bytes', concat([item(PXAR.ENTRY, new Uint8Array(39))]), 0],
    ['a GOODBYE right after a FILENAME', rootThen(filenameItem('x'), goodbyeItem(74, 0, [])), 74],
    ['FORMAT_VERSION in the middle', rootThen(versionItem(2)), 56],
    ['FORMAT_VERSION 3', concat([versionItem(3), ROOT]), 0],
    ['a PRELUDE without FORMAT_VERSION', concat([item(PXAR.PRELUDE), ROOT]), 0],
    [
      'a PAYLOAD_START_MARKER inside an archive',
      rootThen(header(PXAR.PAYLOAD_START_MARKER, 16)),
      56,
    ],
    [
      'a root that is not a directory',
      concat([entryItem({ mode: 0o100644 }), payloadItem(new Uint8Array(1))]),
      0,
    ],
    ['a mode with an unknown file type', concat([entryItem({ mode: 0o170755 })]), 16],
    ['a mode without file type', rootThen(filenameItem('x'), entryItem({ mode: 0o644 })), 74 + 16],
    [
      'a file mode followed by a SYMLINK',
      rootThen(filenameItem('x'), entryItem({ mode: 0o100644 }), symlinkItem('t')),
      130,
    ],
    [
      'a symlink mode followed by a FILENAME',
      rootThen(filenameItem('x'), entryItem({ mode: 0o120777 }), filenameItem('y')),
      130,
    ],
    [
      'a directory mode followed by a DEVICE',
      rootThen(filenameItem('x'), entryItem({ mode: 0o40755 }), deviceItem(1, 2)),
      130,
    ],
    [
      'a PAYLOAD_REF in a v1 archive',
      rootThen(filenameItem('x'), entryItem({ mode: 0o100644 }), payloadRefItem(16, 0)),
      130,
    ],
    [
      'a second ENTRY',
      rootThen(filenameItem('x'), entryItem({ mode: 0o100644 }), entryItem({ mode: 0o100644 })),
      130,
    ],
    [
      'a DEVICE of 8 bytes',
      rootThen(
        filenameItem('x'),
        entryItem({ mode: 0o20644 }),
        item(PXAR.DEVICE, new Uint8Array(8)),
      ),
      130,
    ],
    [
      'mtime nanos of 10^9',
      rootThen(filenameItem('x'), entryItem({ mode: 0o10644, nanos: 1e9 })),
      74 + 16 + 32,
    ],
    ['an XATTR without NUL', rootThen(item(PXAR.XATTR, enc.encode('user.x'))), 56],
    ['an XATTR with an empty name', rootThen(item(PXAR.XATTR, enc.encode('\0v'))), 56],
    [
      'a second ACL_GROUP_OBJ',
      rootThen(item(PXAR.ACL_GROUP_OBJ, u64(1)), item(PXAR.ACL_GROUP_OBJ, u64(2))),
      80,
    ],
    [
      'a second ACL_DEFAULT',
      rootThen(
        item(PXAR.ACL_DEFAULT, new Uint8Array(32)),
        item(PXAR.ACL_DEFAULT, new Uint8Array(32)),
      ),
      104,
    ],
    [
      'a second FCAPS',
      rootThen(item(PXAR.FCAPS, new Uint8Array(4)), item(PXAR.FCAPS, new Uint8Array(4))),
      76,
    ],
    [
      'a second QUOTA_PROJID',
      rootThen(item(PXAR.QUOTA_PROJID, u64(1)), item(PXAR.QUOTA_PROJID, u64(1))),
      80,
    ],
    ['data after the root GOODBYE', concat([SPEC_EXAMPLE, new Uint8Array(1)]), 475],
  ];

  for (const [what, bytes, offset] of cases) {
    it(`refuses ${what}`, async () => {
      expectPxarError(
        await decodeError(bytes, { name: 'test.pxar', chunk: 3 }),
        'PXAR_BAD_ITEM',
        offset,
      );
    });
  }

  it('refuses an inline PAYLOAD in a v2 archive', async () => {
    const head = concat([versionItem(2), ROOT, filenameItem('x'), entryItem({ mode: 0o100644 })]);
    const error = await decodeError(concat([head, payloadItem(new Uint8Array(2))]), {
      name: 'test.pxar',
    });
    expectPxarError(error, 'PXAR_BAD_ITEM', head.length);
  });
});

describe('bad names', () => {
  const withName = (content: Uint8Array): Uint8Array =>
    concat([ROOT, item(PXAR.FILENAME, content)]);
  const cases: [string, Uint8Array][] = [
    ['a name with /', withName(enc.encode('a/b\0'))],
    ['..', withName(enc.encode('..\0'))],
    ['.', withName(enc.encode('.\0'))],
    ['an empty name', withName(enc.encode('\0'))],
    ['a name without NUL', withName(enc.encode('abc'))],
    ['a name with an inner NUL', withName(enc.encode('a\0b\0'))],
    ['an empty FILENAME item', withName(new Uint8Array(0))],
  ];
  for (const [what, bytes] of cases) {
    it(`refuses ${what}`, async () => {
      expectPxarError(await decodeError(bytes, { name: 'test.pxar' }), 'PXAR_BAD_NAME', 56);
    });
  }

  it('refuses an empty symlink target and a target without NUL', async () => {
    const head = concat([ROOT, filenameItem('l'), entryItem({ mode: 0o120777 })]);
    for (const content of [enc.encode('\0'), enc.encode('abc'), enc.encode('a\0b\0')]) {
      const error = await decodeError(concat([head, item(PXAR.SYMLINK, content)]), {
        name: 'test.pxar',
      });
      expectPxarError(error, 'PXAR_BAD_NAME', head.length);
    }
  });

  it('refuses two children with the same name', async () => {
    const fifo = concat([filenameItem('x'), entryItem({ mode: 0o10644 })]);
    const error = await decodeError(concat([ROOT, fifo, fifo, header(PXAR.GOODBYE, 64)]), {
      name: 'test.pxar',
    });
    expectPxarError(error, 'PXAR_BAD_NAME', 56 + fifo.length);
  });
});

describe('bad goodbye tables (streaming decoder)', () => {
  // Root with two FIFOs 'a' (at 56) and 'b' (at 130), goodbye at 204.
  const fifoA = concat([filenameItem('a'), entryItem({ mode: 0o10644 })]);
  const fifoB = concat([filenameItem('b'), entryItem({ mode: 0o10644 })]);
  const body = concat([ROOT, fifoA, fifoB]);
  const children: GoodbyeChild[] = [
    { name: enc.encode('a'), start: 56, size: 74 },
    { name: enc.encode('b'), start: 130, size: 74 },
  ];
  const good = concat([body, goodbyeItem(204, 0, children)]);

  /** The goodbye bytes with item `slot`'s field (0 hash, 1 offset, 2 size) replaced. */
  const patched = (slot: number, field: number, value: bigint | number): Uint8Array => {
    const copy = good.slice();
    copy.set(u64(value), 204 + 16 + slot * 24 + field * 8);
    return copy;
  };

  it('the unpatched archive is fine', async () => {
    expect((await decodeAll(good)).events).toEqual(['entry:', 'entry:a', 'entry:b', 'end:']);
  });

  it('refuses a table with the wrong item count', async () => {
    const error = await decodeError(concat([body, goodbyeItem(204, 0, children.slice(0, 1))]), {
      name: 'test.pxar',
    });
    expectPxarError(error, 'PXAR_BAD_GOODBYE', 204);
  });

  it('refuses items out of tree order', async () => {
    const copy = good.slice();
    const first = good.slice(220, 244);
    copy.set(good.subarray(244, 268), 220);
    copy.set(first, 244);
    expectPxarError(await decodeError(copy, { name: 'test.pxar' }), 'PXAR_BAD_GOODBYE', 220);
  });

  it('refuses a wrong hash, offset, size or tail', async () => {
    expectPxarError(
      await decodeError(patched(0, 0, 12345n), { name: 'test.pxar' }),
      'PXAR_BAD_GOODBYE',
      220,
    );
    expectPxarError(
      await decodeError(patched(1, 1, 1), { name: 'test.pxar' }),
      'PXAR_BAD_GOODBYE',
      244,
    );
    expectPxarError(
      await decodeError(patched(1, 1, 2n ** 63n), { name: 'test.pxar' }),
      'PXAR_BAD_GOODBYE',
      244,
    );
    // Sizes of non-directories are upper bounds (§7.4): more is accepted, less is not.
    expect((await decodeAll(patched(0, 2, 75))).events).toHaveLength(4);
    expectPxarError(
      await decodeError(patched(0, 2, 73), { name: 'test.pxar' }),
      'PXAR_BAD_GOODBYE',
      220,
    );
    expectPxarError(
      await decodeError(patched(2, 0, 1), { name: 'test.pxar' }),
      'PXAR_BAD_GOODBYE',
      268,
    );
    expectPxarError(
      await decodeError(patched(2, 1, 203), { name: 'test.pxar' }),
      'PXAR_BAD_GOODBYE',
      268,
    );
    expectPxarError(
      await decodeError(patched(2, 2, 89), { name: 'test.pxar' }),
      'PXAR_BAD_GOODBYE',
      268,
    );
  });

  it('refuses two items for the same child', async () => {
    const copy = good.slice();
    copy.set(good.subarray(220 + 8, 220 + 16), 244 + 8);
    expectPxarError(await decodeError(copy, { name: 'test.pxar' }), 'PXAR_BAD_GOODBYE', 244);
  });

  it('refuses a directory size that is not exact', async () => {
    for (const delta of [-1, 1]) {
      const copy = SPEC_EXAMPLE.slice();
      // Root goodbye item 1 is 'd' (§6): {hash, offset 210, size 114}.
      copy.set(u64(114 + delta), 363 + 16 + 24 + 16);
      expectPxarError(
        await decodeError(copy, { name: 'test.pxar' }),
        'PXAR_BAD_GOODBYE',
        363 + 16 + 24,
      );
    }
  });

  it('v2: accepts both goodbye size conventions for files and refuses a size below the encoding', async () => {
    for (const quirk of [true, false]) {
      const built = buildArchive([{ kind: 'file', name: 'f', data: new Uint8Array(10) }], {
        version: 2,
        v2SizeQuirk: quirk,
      });
      const decoded = await decodeAll(built.archive, {
        payload: bytesRandomAccess(built.payload!),
      });
      expect(decoded.contents.get('f')).toEqual(new Uint8Array(10));
    }
    const built = buildArchive([{ kind: 'file', name: 'f', data: new Uint8Array(10) }], {
      version: 2,
      v2SizeQuirk: true,
    });
    const gb = built.archive.length - 64;
    const copy = built.archive.slice();
    const view = new DataView(copy.buffer);
    // The quirk size is FILENAME..PAYLOAD_REF plus 10; 11 less is below the encoding itself.
    view.setBigUint64(gb + 16 + 16, view.getBigUint64(gb + 16 + 16, true) - 11n, true);
    expectPxarError(
      await decodeError(copy, { name: 'test.pxar', readContents: false }),
      'PXAR_BAD_GOODBYE',
      gb + 16,
    );
  });
});

describe('bad hardlinks (streaming decoder)', () => {
  const build = (offset: number | bigint, target: string): Uint8Array => {
    const fileA = concat([
      filenameItem('a'),
      entryItem({ mode: 0o100644 }),
      payloadItem(new Uint8Array(1)),
    ]);
    return concat([ROOT, fileA, filenameItem('b'), hardlinkItem(offset, target)]);
  };
  // 'a' is at 56; the link's FILENAME at 56 + 18 + 56 + 17 = 147, its HARDLINK item at 165.
  const linkAt = 147;
  const hardlinkAt = 165;

  it('accepts a link back to a', async () => {
    const bytes = build(linkAt - 56, 'a');
    const error = await decodeError(bytes);
    // No goodbye follows, so the decoder gets past the link and then runs out of input.
    expect(error.code).toBe('PXAR_TRUNCATED');
  });

  const cases: [string, number | bigint, string][] = [
    ['offset 0', 0, 'a'],
    ['an offset into the root metadata', linkAt - 55, 'a'],
    ['an offset before the archive', linkAt + 1, 'a'],
    ['a "forwards" offset (wrapped u64)', 2n ** 64n - 10n, 'a'],
    ['a target with ..', linkAt - 56, '../a'],
    ['a target with . ', linkAt - 56, './a'],
    ['an absolute target', linkAt - 56, '/a'],
    ['a target with an empty component', linkAt - 56, 'x//a'],
    ['a target with a trailing slash', linkAt - 56, 'a/'],
    ['an empty target', linkAt - 56, ''],
  ];
  for (const [what, offset, target] of cases) {
    it(`refuses ${what}`, async () => {
      expectPxarError(
        await decodeError(build(offset, target), { name: 'test.pxar' }),
        'PXAR_BAD_HARDLINK',
        hardlinkAt,
      );
    });
  }
});

describe('v2 payload checks (streaming decoder)', () => {
  const tree = [
    { kind: 'file' as const, name: 'a', data: enc.encode('AAAA') },
    { kind: 'file' as const, name: 'b', data: enc.encode('BB') },
  ];

  it('reads contents and the prelude', async () => {
    const built = buildArchive(tree, { version: 2, prelude: enc.encode('{"x":1}') });
    const decoded = await decodeAll(built.archive, {
      payload: bytesRandomAccess(built.payload!),
      chunk: 1,
    });
    expect(decoded.version).toBe(2);
    expect(text(decoded.prelude!)).toBe('{"x":1}');
    expect(text(decoded.contents.get('a')!)).toBe('AAAA');
    expect(text(decoded.contents.get('b')!)).toBe('BB');
  });

  it('refuses a payload stream without the start marker', async () => {
    const built = buildArchive(tree, { version: 2 });
    const payload = built.payload!.slice();
    payload[0] = payload[0]! ^ 1;
    const error = await decodeError(built.archive, {
      payload: bytesRandomAccess(payload),
      name: 'test.pxar',
    });
    expectPxarError(error, 'PXAR_BAD_PAYLOAD', 0);
    expect((await accessorError(built.archive, { payload: bytesRandomAccess(payload) })).code).toBe(
      'PXAR_BAD_PAYLOAD',
    );
  });

  it('refuses PAYLOAD_REF offsets that do not increase', async () => {
    const refAt = (built: ReturnType<typeof buildArchive>, name: string): number =>
      built.positions.get(name)! + 18 + 56;
    const built = buildArchive(tree, { version: 2 });
    const copy = built.archive.slice();
    // b's reference points at a's payload (offset 16): not after the previous one.
    copy.set(u64(16), refAt(built, 'b') + 16);
    expectPxarError(
      await decodeError(copy, { name: 'test.pxar', readContents: false }),
      'PXAR_BAD_PAYLOAD',
      refAt(built, 'b'),
    );
  });

  it('refuses a reference to a wrong header, a wrong size or past the end of the stream', async () => {
    const built = buildArchive(tree, { version: 2 });
    const refA = built.positions.get('a')! + 18 + 56;
    const withRef = (offset: number, size: number): Uint8Array => {
      const copy = built.archive.slice();
      copy.set(concat([u64(offset), u64(size)]), refA + 16);
      return copy;
    };
    const payload = bytesRandomAccess(built.payload!);
    // Offset 17 is not a header; size 3 does not match the header's full_size; 1000 is past the end.
    for (const [offset, size] of [
      [17, 4],
      [16, 3],
      [1000, 4],
    ] as const) {
      const bytes = withRef(offset, size);
      expectPxarError(
        await decodeError(bytes, { payload, name: 'test.pxar' }),
        'PXAR_BAD_PAYLOAD',
        refA,
      );
    }
  });
});
