import { describe, expect, it } from 'vitest';
import { isBurrowError, type BurrowError } from '../lib/errors.js';
import { PxarAccessor, type AccessorEntry } from './accessor.js';
import { PXAR } from './format.js';
import { bytesRandomAccess } from './random-access.js';
import {
  buildArchive,
  concat,
  entryItem,
  filenameItem,
  goodbyeItem,
  u64,
  type TreeNode,
} from '../../test/helpers/pxar-builder.js';
import { pathText, walkAccessor } from '../../test/helpers/pxar-walk.js';

const enc = new TextEncoder();
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

async function failure(promise: Promise<unknown>): Promise<BurrowError> {
  try {
    await promise;
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw error;
  }
  throw new Error('no error');
}

async function drain(it: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p.slice());
  return concat(parts);
}

const open = (bytes: Uint8Array, payload?: Uint8Array): Promise<PxarAccessor> =>
  PxarAccessor.open(bytesRandomAccess(bytes), {
    name: 'test.pxar',
    ...(payload === undefined ? {} : { payload: bytesRandomAccess(payload) }),
  });

function expectError(error: BurrowError, code: string, offset?: number): void {
  expect(error.code).toBe(code);
  expect(error.message).toContain('test.pxar');
  if (offset !== undefined) {
    expect(error.details.offset).toBe(offset);
    expect(error.message).toContain(`byte ${offset}`);
  }
}

function setU64(bytes: Uint8Array, at: number, value: number | bigint): Uint8Array {
  const copy = bytes.slice();
  copy.set(u64(value), at);
  return copy;
}

function readU64(bytes: Uint8Array, at: number): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(at, true));
}

/** Finds the goodbye item for the child at `start` in the table that starts at `goodbyeStart`. */
function slotOf(bytes: Uint8Array, goodbyeStart: number, start: number): number {
  const n = (readU64(bytes, goodbyeStart + 8) - 16) / 24 - 1;
  for (let i = 0; i < n; i++)
    if (goodbyeStart - readU64(bytes, goodbyeStart + 16 + i * 24 + 8) === start) return i;
  throw new Error('child not in table');
}

// A tree with a file, a subdirectory with two children, a symlink and a hardlink.
const TREE: TreeNode[] = [
  { kind: 'file', name: 'a', data: enc.encode('AAA') },
  {
    kind: 'dir',
    name: 'd',
    children: [
      { kind: 'file', name: 'x', data: enc.encode('xx') },
      { kind: 'symlink', name: 'y', target: 'x' },
    ],
  },
  { kind: 'hardlink', name: 'h', target: 'd/x' },
  { kind: 'symlink', name: 's', target: 'a' },
];

describe('PxarAccessor on a well-formed archive', () => {
  it('lists, looks up, reads and resolves (v1 and v2)', async () => {
    for (const version of [1, 2] as const) {
      const built = buildArchive(TREE, { version });
      const accessor = await open(built.archive, built.payload);
      expect(accessor.formatVersion()).toBe(version);
      const walked = await walkAccessor(built.archive, {
        ...(built.payload === undefined ? {} : { payload: bytesRandomAccess(built.payload) }),
      });
      expect(walked.entries.map((e) => pathText(e.path))).toEqual([
        '',
        'a',
        'd',
        'd/x',
        'd/y',
        'h',
        's',
      ]);
      expect(walked.entries.map((e) => e.fileNameOffset)).toEqual([
        0,
        ...['a', 'd', 'd/x', 'd/y', 'h', 's'].map((p) => built.positions.get(p)),
      ]);
      expect(text(walked.contents.get('a')!)).toBe('AAA');
      expect(text(walked.contents.get('d/x')!)).toBe('xx');
      expect(walked.links.get('h')).toBe('d/x');
      const x = await accessor.lookup('d/x');
      expect(x?.entryEnd).toBe(built.positions.get('d/y'));
      const d = await accessor.lookup('d');
      expect(d?.entryEnd).toBe(built.positions.get('h'));
      expect(text(await drain(accessor.readFile(x!, 1)))).toBe('x');
      expect(text(await drain(accessor.readFile(x!, 5)))).toBe('');
      expect(text(await drain(accessor.readFile(x!, 0, 1)))).toBe('x');
      const h = (await accessor.lookup('h'))!;
      expect(h.metadata).toBeUndefined();
      expect((await failure(drain(accessor.readFile(h)))).code).toBe('INVALID_ARGUMENT');
      expect((await failure(drain(accessor.readFile(d!)))).code).toBe('INVALID_ARGUMENT');
      expect((await failure(accessor.readDirectory(x!))).code).toBe('INVALID_ARGUMENT');
      expect((await failure(accessor.resolveHardlink(x!))).code).toBe('INVALID_ARGUMENT');
      expect((await accessor.resolveHardlink(h)).fileNameOffset).toBe(built.positions.get('d/x'));
    }
  });

  it('accepts entries that were copied (it re-derives what it needs from their fields)', async () => {
    const built = buildArchive(TREE);
    const accessor = await open(built.archive);
    const d = (await accessor.lookup('d'))!;
    const copy: AccessorEntry = { ...d };
    const fresh = await open(built.archive);
    expect((await fresh.readDirectory(copy)).map((e) => text(e.name))).toEqual(['x', 'y']);
    const forged: AccessorEntry = { ...d, entryEnd: d.entryEnd - 1 };
    expect((await failure(fresh.readDirectory(forged))).code).toMatch(/^PXAR_/);
  });

  it('finds names whose hashes collide only by checking every candidate', async () => {
    // Many names: some share subtrees; every one must be found, and near-misses must not be.
    const names = Array.from({ length: 40 }, (_, i) => `n${i}`);
    const built = buildArchive(names.map((name) => ({ kind: 'fifo' as const, name })));
    const accessor = await open(built.archive);
    for (const name of names)
      expect((await accessor.lookup(name))?.fileNameOffset).toBe(built.positions.get(name));
    expect(await accessor.lookup('n40')).toBeUndefined();
  });
});

describe('PxarAccessor reads', () => {
  it('lists a directory of small files in a few reads: siblings come with the first', async () => {
    // About 150 KiB of entries: more than one 64 KiB read window.
    const files = Array.from({ length: 1500 }, (_, i) => ({
      kind: 'file' as const,
      name: `file-${String(i).padStart(4, '0')}`,
      stat: { mode: 0o100644, secs: 1_700_000_000 + i },
      data: enc.encode(`contents of ${i}`),
    }));
    for (const version of [1, 2] as const) {
      const built = buildArchive([{ kind: 'dir', name: 'd', children: files }], { version });
      const bytes = bytesRandomAccess(built.archive);
      let reads = 0;
      const counted = {
        size: bytes.size,
        readAt: (offset: number, length: number) => {
          reads++;
          return bytes.readAt(offset, length);
        },
      };
      const accessor = await PxarAccessor.open(counted, {
        name: 'test.pxar',
        ...(built.payload === undefined ? {} : { payload: bytesRandomAccess(built.payload) }),
      });
      const d = (await accessor.lookup('d'))!;
      reads = 0;
      const children = await accessor.readDirectory(d);
      expect(children.map((c) => text(c.name))).toEqual(files.map((f) => f.name));
      expect(children.map((c) => c.metadata?.stat.mtime.secs)).toEqual(
        files.map((f) => f.stat.secs),
      );
      expect(children.map((c) => c.fileNameOffset)).toEqual(
        files.map((f) => built.positions.get(`d/${f.name}`)),
      );
      // The goodbye table, then the children a 64 KiB window at a time, not one read per child.
      expect(reads).toBeLessThanOrEqual(6);
    }
  });
});

describe('PxarAccessor on hostile archives', () => {
  const built = buildArchive(TREE);
  const bytes = built.archive;
  const size = bytes.length;
  const rootGoodbye = size - (16 + 24 * 5);
  const dStart = built.positions.get('d')!;
  const hStart = built.positions.get('h')!;
  // d's goodbye (2 children) ends where h starts.
  const dGoodbye = hStart - (16 + 24 * 3);

  it('refuses an archive that is too short or empty', async () => {
    expect((await failure(open(new Uint8Array(0)))).code).toBe('PXAR_TRUNCATED');
    expect((await failure(open(bytes.subarray(0, 40)))).code).toMatch(/^PXAR_/);
  });

  it('refuses a missing tail marker', async () => {
    expectError(await failure(open(setU64(bytes, size - 24, 1))), 'PXAR_BAD_GOODBYE', size - 24);
  });

  it('refuses a root tail that does not point at byte 0, or with a wrong size', async () => {
    expectError(
      await failure(open(setU64(bytes, size - 16, rootGoodbye - 1))),
      'PXAR_BAD_GOODBYE',
      size - 24,
    );
    expectError(await failure(open(setU64(bytes, size - 8, 16 + 24 * 4))), 'PXAR_BAD_GOODBYE');
    expectError(await failure(open(setU64(bytes, size - 8, 17))), 'PXAR_BAD_GOODBYE', size - 24);
    expectError(
      await failure(open(setU64(bytes, size - 8, 2 ** 62))),
      'PXAR_BAD_GOODBYE',
      size - 24,
    );
  });

  it('refuses a GOODBYE header that does not match the tail', async () => {
    expectError(
      await failure(open(setU64(bytes, rootGoodbye, PXAR.FILENAME))),
      'PXAR_BAD_GOODBYE',
      rootGoodbye,
    );
  });

  it('refuses child offsets outside the directory', async () => {
    const slot = slotOf(bytes, rootGoodbye, dStart);
    const at = rootGoodbye + 16 + slot * 24 + 8;
    // Into the root's metadata, before the first child; past the start of the archive; into the goodbye.
    for (const offset of [rootGoodbye - 40, rootGoodbye + 5, 2 ** 63, 3]) {
      const accessor = await open(setU64(bytes, at, offset));
      expectError(await failure(accessor.lookup('d')), 'PXAR_BAD_GOODBYE', at - 8);
      expectError(
        await failure(accessor.readDirectory(accessor.root())),
        'PXAR_BAD_GOODBYE',
        at - 8,
      );
    }
  });

  it('refuses a child that points at something other than its FILENAME', async () => {
    const slot = slotOf(bytes, rootGoodbye, dStart);
    const at = rootGoodbye + 16 + slot * 24 + 8;
    // 18 bytes later is d's ENTRY header.
    const accessor = await open(setU64(bytes, at, rootGoodbye - dStart - 18));
    expect((await failure(accessor.lookup('d'))).code).toBe('PXAR_BAD_GOODBYE');
  });

  it('refuses a subdirectory that reaches past its parent', async () => {
    const slot = slotOf(bytes, rootGoodbye, dStart);
    const at = rootGoodbye + 16 + slot * 24 + 16;
    const accessor = await open(setU64(bytes, at, rootGoodbye - dStart + 24));
    expectError(await failure(accessor.lookup('d')), 'PXAR_BAD_GOODBYE', dStart);
    const shorter = await open(setU64(bytes, at, hStart - dStart - 1));
    expect((await failure(shorter.lookup('d/x'))).code).toBe('PXAR_BAD_GOODBYE');
  });

  it('refuses a loop: a subdirectory table entry pointing back at its parent', async () => {
    const at = dGoodbye + 16 + 8; // first item of d's table
    for (const target of [dStart, 0, built.positions.get('a')!]) {
      const accessor = await open(setU64(bytes, at, dGoodbye - target));
      const d = (await accessor.lookup('d'))!;
      expect((await failure(accessor.readDirectory(d))).code).toBe('PXAR_BAD_GOODBYE');
    }
  });

  it("refuses a subdirectory tail that does not lead back to the directory's ENTRY", async () => {
    const accessor = await open(setU64(bytes, hStart - 16, hStart - (16 + 24 * 3) - dStart));
    expectError(await failure(accessor.lookup('d')), 'PXAR_BAD_GOODBYE', hStart - 24);
  });

  it('refuses a table that is not a search tree (a lookup could miss)', async () => {
    // Swap the hashes of slots 1 and 2 of the root table (4 children: slots 0..3).
    const copy = bytes.slice();
    const s1 = rootGoodbye + 16 + 24;
    const s2 = rootGoodbye + 16 + 48;
    copy.set(bytes.subarray(s2, s2 + 8), s1);
    copy.set(bytes.subarray(s1, s1 + 8), s2);
    const accessor = await open(copy);
    expect((await failure(accessor.lookup('a'))).code).toBe('PXAR_BAD_GOODBYE');
  });

  it('refuses a table hash that does not belong to the name', async () => {
    // The largest hash sits in the last slot of a 4-item BST ([2,1,3,0]): raising it keeps the order.
    const copy = setU64(bytes, rootGoodbye + 16 + 2 * 24, 0xffffffffffffffffn);
    const accessor = await open(copy);
    expect((await failure(accessor.readDirectory(accessor.root()))).code).toBe('PXAR_BAD_GOODBYE');
  });

  it('refuses a directory whose table leaves out a child (a gap) or lists one twice', async () => {
    const fifo = (name: string): Uint8Array =>
      concat([filenameItem(name), entryItem({ mode: 0o10644 })]);
    const root = entryItem({ mode: 0o40755 });
    const body = concat([root, fifo('a'), fifo('b')]);
    const a = { name: enc.encode('a'), start: 56, size: 74 };
    const b = { name: enc.encode('b'), start: 130, size: 74 };
    const gap = await open(concat([body, goodbyeItem(body.length, 0, [b])]));
    expectError(await failure(gap.readDirectory(gap.root())), 'PXAR_BAD_GOODBYE');
    const missingLast = await open(concat([body, goodbyeItem(body.length, 0, [a])]));
    expectError(
      await failure(missingLast.readDirectory(missingLast.root())),
      'PXAR_BAD_GOODBYE',
      130,
    );
    const twice = await open(concat([body, goodbyeItem(body.length, 0, [a, a, b])]));
    expectError(await failure(twice.readDirectory(twice.root())), 'PXAR_BAD_GOODBYE');
  });

  it('takes non-directory goodbye sizes as upper bounds (§7.4)', async () => {
    const fifo = (name: string): Uint8Array =>
      concat([filenameItem(name), entryItem({ mode: 0o10644 })]);
    const root = entryItem({ mode: 0o40755 });
    const body = concat([root, fifo('a'), fifo('b')]);
    const archive = concat([
      body,
      goodbyeItem(body.length, 0, [
        { name: enc.encode('a'), start: 56, size: 74 + 10 },
        { name: enc.encode('b'), start: 130, size: 74 + 1000 },
      ]),
    ]);
    const walked = await walkAccessor(archive);
    expect(walked.entries.map((e) => [pathText(e.path), e.entryEnd])).toEqual([
      ['', archive.length],
      ['a', 130],
      ['b', 204],
    ]);
  });

  it('refuses a non-directory whose goodbye size is too small', async () => {
    const sStart = built.positions.get('s')!;
    const slot = slotOf(bytes, rootGoodbye, sStart);
    const accessor = await open(setU64(bytes, rootGoodbye + 16 + slot * 24 + 16, 18 + 56 + 10));
    expect((await failure(accessor.lookup('s'))).code).toBe('PXAR_BAD_GOODBYE');
  });

  it('refuses duplicate names in one directory', async () => {
    const fifo = concat([filenameItem('a'), entryItem({ mode: 0o10644 })]);
    const root = entryItem({ mode: 0o40755 });
    const body = concat([root, fifo, fifo]);
    const a1 = { name: enc.encode('a'), start: 56, size: 74 };
    const a2 = { name: enc.encode('a'), start: 130, size: 74 };
    const accessor = await open(concat([body, goodbyeItem(body.length, 0, [a1, a2])]));
    expectError(await failure(accessor.readDirectory(accessor.root())), 'PXAR_BAD_NAME', 130);
  });

  describe('hardlinks', () => {
    const linkItem = hStart + 18; // FILENAME "h\0" is 18 bytes
    const withOffset = (offset: number | bigint): Promise<PxarAccessor> =>
      open(setU64(bytes, linkItem + 16, offset));
    const resolveError = async (accessor: PxarAccessor): Promise<BurrowError> => {
      const h = await accessor.lookup('h');
      return failure(accessor.resolveHardlink(h!));
    };

    it('refuses a link whose offset points at a directory, a symlink or the middle of an entry', async () => {
      for (const target of [
        dStart,
        built.positions.get('d/y')!,
        built.positions.get('d/x')! + 18,
      ]) {
        expectError(
          await resolveError(await withOffset(hStart - target)),
          'PXAR_BAD_HARDLINK',
          hStart,
        );
      }
    });

    it('refuses a link whose path names something else than its offset, or nothing', async () => {
      expectError(
        await resolveError(await withOffset(hStart - built.positions.get('a')!)),
        'PXAR_BAD_HARDLINK',
        hStart,
      );
      // Target path 'd/x' -> 'd/q' (same length, so the layout stays).
      const copy = bytes.slice();
      copy[linkItem + 16 + 8 + 2] = 'q'.charCodeAt(0);
      const accessor = await open(copy);
      expectError(await resolveError(accessor), 'PXAR_BAD_HARDLINK', hStart);
    });

    it('refuses a link to a symlink found by path and offset', async () => {
      const copy = setU64(bytes, linkItem + 16, hStart - built.positions.get('d/y')!);
      copy[linkItem + 16 + 8 + 2] = 'y'.charCodeAt(0);
      expectError(await resolveError(await open(copy)), 'PXAR_BAD_HARDLINK', hStart);
    });

    it('refuses offsets 0, into the root metadata and before the archive when the link is read', async () => {
      for (const offset of [0, hStart - 10, hStart + 10, 2n ** 64n - 1n]) {
        const accessor = await withOffset(offset);
        expectError(await failure(accessor.lookup('h')), 'PXAR_BAD_HARDLINK', linkItem);
      }
    });
  });

  describe('v2 payload', () => {
    const v2 = buildArchive(TREE, { version: 2 });
    const aRef = v2.positions.get('a')! + 18 + 56;

    it('refuses a payload stream without the start marker', async () => {
      const payload = v2.payload!.slice();
      payload[8] = 17;
      expect((await failure(open(v2.archive, payload))).code).toBe('PXAR_BAD_PAYLOAD');
    });

    it('refuses references to a wrong header, a wrong size or past the end', async () => {
      for (const [offset, sz] of [
        [17, 3],
        [16, 4],
        [5000, 3],
        [2 ** 52, 3],
      ] as const) {
        const copy = v2.archive.slice();
        copy.set(concat([u64(offset), u64(sz)]), aRef + 16);
        const accessor = await open(copy, v2.payload);
        const a = await accessor.lookup('a');
        expect((await failure(drain(accessor.readFile(a!)))).code).toBe('PXAR_BAD_PAYLOAD');
      }
    });

    it('needs the payload stream for contents', async () => {
      const accessor = await open(v2.archive);
      const a = await accessor.lookup('a');
      expect(a?.body).toEqual({ kind: 'file', size: 3, payloadOffset: 16 });
      expect((await failure(drain(accessor.readFile(a!)))).code).toBe('PXAR_PAYLOAD_REQUIRED');
    });
  });

  it('refuses a payload stream that lies about its size', async () => {
    const v2 = buildArchive(TREE, { version: 2 });
    const real = bytesRandomAccess(v2.payload!);
    const liar = { size: real.size + 1000, readAt: (o: number, l: number) => real.readAt(o, l) };
    const copy = v2.archive.slice();
    const aRef = v2.positions.get('a')! + 18 + 56;
    copy.set(concat([u64(v2.payload!.length - 16), u64(1000)]), aRef + 16);
    const accessor = await PxarAccessor.open(bytesRandomAccess(copy), { payload: liar });
    const a = await accessor.lookup('a');
    expect((await failure(drain(accessor.readFile(a!)))).code).toMatch(
      /^PXAR_(BAD_PAYLOAD|TRUNCATED)$/,
    );
  });

  it('v1: refuses reading a forged entry whose payload offset is not a PAYLOAD', async () => {
    const accessor = await open(bytes);
    const a = (await accessor.lookup('a'))!;
    const forged: AccessorEntry = {
      ...a,
      body: { kind: 'file', size: 3, payloadOffset: a.fileNameOffset },
    };
    expect((await failure(drain(accessor.readFile(forged)))).code).toBe('PXAR_BAD_ITEM');
    const beyond: AccessorEntry = {
      ...a,
      body: { kind: 'file', size: 3, payloadOffset: size - 4 },
    };
    expect((await failure(drain(accessor.readFile(beyond)))).code).toMatch(/^PXAR_/);
  });

  it('an unknown item type in a child is PXAR_BAD_ITEM', async () => {
    const aStart = built.positions.get('a')!;
    const accessor = await open(setU64(bytes, aStart + 18, 0x1234n));
    expectError(await failure(accessor.lookup('a')), 'PXAR_BAD_ITEM', aStart + 18);
  });
});
