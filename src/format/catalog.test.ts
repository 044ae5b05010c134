import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isBurrowError } from '../lib/errors.js';
import type { BurrowError } from '../lib/errors.js';
import { codeOf, rejectionCodeOf } from '../../test/helpers/error-code.js';
import {
  CatalogReader,
  CatalogWriter,
  formatCatalogDumpLine,
  formatCatalogMtime,
  quoteCatalogPath,
} from './catalog.js';
import type { CatalogDirEntry, CatalogEntry, CatalogEntryType, CatalogSource } from './catalog.js';
import { CATALOG_MAGIC } from './magic.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

/** pxar-format §10a worked example: root.pxar.didx with a.txt (3 bytes), empty dir d, symlink l. */
const SPEC_EXAMPLE = hex(
  '91fd60f9c46758d5010015036605612e74787403d8ff8daa05640164026c016c1201640e726f6f742e707861722e64696478162000000000000000',
);
const SPEC_MAGIC = hex('91fd60f9c46758d5');
const MTIME = 1430487000;

async function collect<T>(gen: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of gen) out.push(x);
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<BurrowError> {
  try {
    await promise;
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

/** Collects what a writer emits, one array per sink write. */
function collector(): { chunks: Uint8Array[]; bytes(): Uint8Array; writer: CatalogWriter } {
  const chunks: Uint8Array[] = [];
  const writer = new CatalogWriter({ write: (b) => void chunks.push(b) });
  return { chunks, bytes: () => new Uint8Array(Buffer.concat(chunks)), writer };
}

async function writeSpecExample(writer: CatalogWriter): Promise<void> {
  writer.startDirectory(utf8('root.pxar.didx'));
  writer.addFile(utf8('a.txt'), 3, MTIME);
  writer.startDirectory(utf8('d'));
  await writer.endDirectory();
  writer.addSymlink(utf8('l'));
  await writer.endDirectory();
  await writer.finish();
}

// --- hand-built catalogs, encoded without the code under test ---------------------------------

/** varint by hand: 7-bit groups, low first, high bit on all but the last. */
function v(n: number): number[] {
  const out: number[] = [];
  let d = n;
  for (;;) {
    const low = d % 128;
    d = Math.floor(d / 128);
    if (d === 0) return [...out, low];
    out.push(low | 0x80);
  }
}
const nameBytes = (name: string | Uint8Array): number[] => [
  ...(typeof name === 'string' ? utf8(name) : name),
];
const leaf = (type: string, name: string | Uint8Array): number[] => {
  const n = nameBytes(name);
  return [type.charCodeAt(0), ...v(n.length), ...n];
};
const dirEntry = (name: string | Uint8Array, back: number): number[] => [
  ...leaf('d', name),
  ...v(back),
];
const fileEntry = (name: string, size: number, mtime: number[]): number[] => [
  ...leaf('f', name),
  ...v(size),
  ...mtime,
];
const table = (...entries: number[][]): number[] => {
  const body = [...v(entries.length), ...entries.flat()];
  return [...v(body.length), ...body];
};

class Layout {
  readonly bytes: number[] = [...SPEC_MAGIC];
  /** Where the next table will start. */
  here(): number {
    return this.bytes.length;
  }
  add(raw: number[]): number {
    const pos = this.here();
    this.bytes.push(...raw);
    return pos;
  }
  finish(rootPos: number): Uint8Array {
    const trailer = new Uint8Array(8);
    new DataView(trailer.buffer).setBigUint64(0, BigInt(rootPos), true);
    return Uint8Array.from([...this.bytes, ...trailer]);
  }
}

/** magic, one archive 'r' whose directory holds `entries`, root table last. */
function oneArchive(...entries: number[][]): Uint8Array {
  const layout = new Layout();
  const dir = layout.add(table(...entries));
  const root = layout.add(table(dirEntry('r', layout.here() - dir)));
  return layout.finish(root);
}

function withTrailer(bytes: Uint8Array, rootPos: bigint): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setBigUint64(out.byteLength - 8, rootPos, true);
  return out;
}

/** Reads everything a client might: archives, every entry, every directory, every path. */
async function consumeAll(reader: CatalogReader): Promise<number> {
  await reader.root();
  let n = 0;
  for await (const item of reader.dump()) {
    n++;
    if (item.entry.type === 'd') await reader.listDirectory(item.entry as CatalogDirEntry);
    // Damaged catalogs may hold duplicate names, so a lookup may find another entry (or none).
    await reader.lookup(item.path);
  }
  return n;
}

async function expectInvalid(promise: Promise<unknown>): Promise<BurrowError> {
  const error = await rejection(promise);
  expect(error.code).toBe('CATALOG_INVALID');
  expect(typeof error.details.offset).toBe('number');
  return error;
}

// --- model trees for property tests -----------------------------------------------------------

type Leaf =
  { kind: 'f'; size: number; mtime: number } | { kind: Exclude<CatalogEntryType, 'd' | 'f'> };
interface Dir {
  kind: 'd';
  children: [Uint8Array, Node][];
}
type Node = Leaf | Dir;

const validName = fc
  .uint8Array({ minLength: 1, maxLength: 12 })
  .filter((n) => !n.includes(0x2f) && !n.includes(0) && text(n) !== '.' && text(n) !== '..');

const leafArb: fc.Arbitrary<Leaf> = fc.oneof(
  fc.record({ kind: fc.constant('f' as const), size: fc.maxSafeNat(), mtime: fc.maxSafeInteger() }),
  fc.record({
    kind: fc.constantFrom(
      'l' as const,
      'h' as const,
      'b' as const,
      'c' as const,
      'p' as const,
      's' as const,
    ),
  }),
);

const treeArb = fc.letrec<{ node: Node; dir: Dir }>((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, leafArb, tie('dir')),
  dir: fc.record({
    kind: fc.constant('d' as const),
    children: fc.uniqueArray(fc.tuple(validName, tie('node')), {
      maxLength: 5,
      selector: ([name]) => toHex(name),
    }),
  }),
}));

const snapshotArb = fc.uniqueArray(fc.tuple(validName, treeArb.dir), {
  maxLength: 3,
  selector: ([name]) => toHex(name),
});

async function feed(writer: CatalogWriter, name: Uint8Array, node: Node): Promise<void> {
  switch (node.kind) {
    case 'd':
      writer.startDirectory(name);
      for (const [childName, child] of node.children) await feed(writer, childName, child);
      await writer.endDirectory();
      return;
    case 'f':
      return writer.addFile(name, node.size, node.mtime);
    case 'l':
      return writer.addSymlink(name);
    case 'h':
      return writer.addHardlink(name);
    case 'b':
      return writer.addBlockDevice(name);
    case 'c':
      return writer.addCharDevice(name);
    case 'p':
      return writer.addFifo(name);
    case 's':
      return writer.addSocket(name);
  }
}

async function writeSnapshot(archives: [Uint8Array, Dir][]): Promise<Uint8Array> {
  const c = collector();
  for (const [name, dir] of archives) await feed(c.writer, name, dir);
  await c.writer.finish();
  return c.bytes();
}

/** The model as plain data, in the shape the reader reports. */
function expected(node: Node): unknown {
  if (node.kind === 'd') {
    return node.children.map(([name, child]) => [toHex(name), expected(child)]);
  }
  return node;
}
async function actual(reader: CatalogReader, entry: CatalogEntry): Promise<unknown> {
  if (entry.type !== 'd') {
    return entry.type === 'f'
      ? { kind: 'f', size: entry.size, mtime: entry.mtime }
      : { kind: entry.type };
  }
  const entries = await reader.listDirectory(entry as CatalogDirEntry);
  const out: unknown[] = [];
  for (const e of entries) out.push([toHex(e.name), await actual(reader, e)]);
  return out;
}

/** Paths in depth-first pre-order, as '/'-joined latin1 text. */
function modelPaths(archives: [Uint8Array, Dir][]): string[] {
  const out: string[] = [];
  const visit = (prefix: string, node: Node): void => {
    if (node.kind !== 'd') return;
    for (const [name, child] of node.children) {
      const path = `${prefix}/${text(name)}`;
      out.push(path);
      visit(path, child);
    }
  };
  for (const [name, dir] of archives) {
    out.push(text(name));
    visit(text(name), dir);
  }
  return out;
}

// --- tests --------------------------------------------------------------------------------------

describe('catalog magic', () => {
  it('is the first 8 bytes of SHA-256 of the format string, as in the spec example', () => {
    const digest = createHash('sha256').update('Proxmox Backup Catalog file v1.0').digest();
    expect(toHex(CATALOG_MAGIC)).toBe(toHex(digest.subarray(0, 8)));
    expect(toHex(CATALOG_MAGIC)).toBe(toHex(SPEC_MAGIC));
  });
});

describe('CatalogWriter', () => {
  it('writes the spec worked example byte for byte', async () => {
    const c = collector();
    await writeSpecExample(c.writer);
    expect(toHex(c.bytes())).toBe(toHex(SPEC_EXAMPLE));
    expect(c.writer.bytesWritten()).toBe(SPEC_EXAMPLE.byteLength);
  });

  it('streams: a table reaches the sink when its directory closes', async () => {
    const c = collector();
    c.writer.startDirectory(utf8('a'));
    c.writer.startDirectory(utf8('b'));
    c.writer.addFile(utf8('x'), 1, 2);
    expect(c.chunks).toHaveLength(0);
    await c.writer.endDirectory();
    // magic, then b's table: len 6, count 1, f "x" size 1 mtime 2.
    expect(toHex(c.bytes())).toBe(`${toHex(SPEC_MAGIC)}06016601780102`);
    expect(c.writer.bytesWritten()).toBe(15);
  });

  it('holds back only the root table until finish on a large tree', async () => {
    const c = collector();
    c.writer.startDirectory(utf8('big.pxar.didx'));
    for (let d = 0; d < 100; d++) {
      c.writer.startDirectory(utf8(`dir${d}`));
      for (let f = 0; f < 200; f++) c.writer.addFile(utf8(`file${f}`), f, f);
      await c.writer.endDirectory();
    }
    await c.writer.endDirectory();
    const beforeFinish = c.bytes().byteLength;
    await c.writer.finish();
    const total = c.bytes().byteLength;
    // The root table here: len, count, d, 1-byte name length, 13-byte name, 2-byte back offset.
    expect(total - beforeFinish).toBe(1 + 1 + 1 + 1 + 13 + 2 + 8);
    const reader = CatalogReader.fromBytes(c.bytes());
    expect((await reader.listDirectory('big.pxar.didx/dir99')).length).toBe(200);
    expect(await reader.lookup('big.pxar.didx/dir42/file199')).toEqual({
      type: 'f',
      name: utf8('file199'),
      size: 199,
      mtime: 199,
    });
  });

  it('keeps byte order with an async sink and calls that are not awaited one by one', async () => {
    const chunks: Uint8Array[] = [];
    const writer = new CatalogWriter({
      write: async (b) => {
        // Later writes settle first unless the writer serialises them.
        await new Promise((resolve) => setTimeout(resolve, b.byteLength === 8 ? 1 : 10));
        chunks.push(b);
      },
    });
    writer.startDirectory(utf8('root.pxar.didx'));
    writer.addFile(utf8('a.txt'), 3, MTIME);
    writer.startDirectory(utf8('d'));
    const first = writer.endDirectory();
    writer.addSymlink(utf8('l'));
    const second = writer.endDirectory();
    await Promise.all([first, second, writer.finish()]);
    expect(toHex(Buffer.concat(chunks))).toBe(toHex(SPEC_EXAMPLE));
  });

  it('copies names, so callers may reuse their buffers', async () => {
    const c = collector();
    const buf = utf8('archive');
    c.writer.startDirectory(buf);
    buf.set(utf8('XXXXXXX'));
    const name = Buffer.from('file');
    c.writer.addFile(name, 0, 0);
    name.write('zzzz');
    await c.writer.endDirectory();
    await c.writer.finish();
    expect((await CatalogReader.fromBytes(c.bytes()).lookup('archive/file'))?.type).toBe('f');
  });

  it('reports a failing sink to the caller and every later flush', async () => {
    const boom = new Error('disk full');
    const writer = new CatalogWriter({
      write: () => {
        throw boom;
      },
    });
    writer.startDirectory(utf8('a'));
    await expect(writer.endDirectory()).rejects.toBe(boom);
    await expect(writer.finish()).rejects.toBe(boom);
  });

  it('writes an empty catalog (no archives)', async () => {
    const c = collector();
    await c.writer.finish();
    expect(toHex(c.bytes())).toBe(`${toHex(SPEC_MAGIC)}0100${'0800000000000000'}`);
    expect(await CatalogReader.fromBytes(c.bytes()).root()).toEqual([]);
  });

  it('refuses misuse with INVALID_ARGUMENT', async () => {
    const w = new CatalogWriter({ write: () => undefined });
    expect(await rejectionCodeOf(w.endDirectory())).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => w.addFile(utf8('top'), 1, 1))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => w.addSymlink(utf8('top')))).toBe('INVALID_ARGUMENT');
    w.startDirectory(utf8('a.pxar.didx'));
    for (const bad of ['', '.', '..', 'x/y', 'a\0b', 'n'.repeat(4096)]) {
      expect(
        codeOf(() => w.addFifo(utf8(bad))),
        JSON.stringify(bad.slice(0, 5)),
      ).toBe('INVALID_ARGUMENT');
      expect(codeOf(() => w.startDirectory(utf8(bad)))).toBe('INVALID_ARGUMENT');
    }
    expect(codeOf(() => w.addSocket(utf8('n'.repeat(4095))))).toBeUndefined();
    expect(codeOf(() => w.addFile(utf8('f1'), -1, 0))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => w.addFile(utf8('f2'), 1.5, 0))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => w.addFile(utf8('f3'), 2 ** 53, 0))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => w.addFile(utf8('f4'), 0, 0.5))).toBe('INVALID_ARGUMENT');
    w.addCharDevice(utf8('dup'));
    expect(codeOf(() => w.addBlockDevice(utf8('dup')))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => w.startDirectory(utf8('dup')))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(w.finish())).toBe('INVALID_ARGUMENT');
    await w.endDirectory();
    expect(codeOf(() => w.startDirectory(utf8('a.pxar.didx')))).toBe('INVALID_ARGUMENT');
    await w.finish();
    expect(codeOf(() => w.startDirectory(utf8('late')))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(w.finish())).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(w.endDirectory())).toBe('INVALID_ARGUMENT');
  });
});

describe('CatalogReader on the spec example', () => {
  const reader = (): CatalogReader => CatalogReader.fromBytes(SPEC_EXAMPLE, 'catalog.pcat1');

  it('lists the archives and their directories', async () => {
    const r = reader();
    expect(await r.root()).toEqual([{ type: 'd', name: utf8('root.pxar.didx'), tablePos: 10 }]);
    const [archive] = await r.root();
    expect(await r.listDirectory(archive!)).toEqual([
      { type: 'f', name: utf8('a.txt'), size: 3, mtime: MTIME },
      { type: 'd', name: utf8('d'), tablePos: 8 },
      { type: 'l', name: utf8('l') },
    ]);
    expect(await r.listDirectory('root.pxar.didx/d')).toEqual([]);
    expect(await r.listDirectory('/')).toEqual(await r.root());
  });

  it('looks up paths given as text, bytes or components', async () => {
    const r = reader();
    const file = { type: 'f', name: utf8('a.txt'), size: 3, mtime: MTIME };
    expect(await r.lookup('root.pxar.didx/a.txt')).toEqual(file);
    expect(await r.lookup('/root.pxar.didx//a.txt/')).toEqual(file);
    expect(await r.lookup(utf8('root.pxar.didx/a.txt'))).toEqual(file);
    expect(await r.lookup([utf8('root.pxar.didx'), utf8('a.txt')])).toEqual(file);
    expect(await r.lookup('root.pxar.didx/d')).toEqual({ type: 'd', name: utf8('d'), tablePos: 8 });
    expect(await r.lookup('/')).toEqual({ type: 'd', name: new Uint8Array(0), tablePos: 32 });
    expect(await r.lookup('root.pxar.didx/missing')).toBeUndefined();
    expect(await r.lookup('other.pxar.didx')).toBeUndefined();
    expect(await r.lookup('root.pxar.didx/a.txt/below-a-file')).toBeUndefined();
    expect(await r.lookup('root.pxar.didx/d/..')).toBeUndefined();
  });

  it('refuses to list what is missing or not a directory', async () => {
    const r = reader();
    expect(await rejectionCodeOf(r.listDirectory('root.pxar.didx/nope'))).toBe('NOT_FOUND');
    expect(await rejectionCodeOf(r.listDirectory('root.pxar.didx/a.txt'))).toBe('INVALID_ARGUMENT');
    const file = { type: 'f' as const, name: utf8('a.txt'), size: 3, mtime: 1 };
    expect(await rejectionCodeOf(r.listDirectory(file as unknown as CatalogDirEntry))).toBe(
      'INVALID_ARGUMENT',
    );
  });

  it('dumps every entry the way `catalog dump` prints it', async () => {
    const items = await collect(reader().dump());
    expect(items.map((i) => i.line)).toEqual([
      'd "./root.pxar.didx"',
      'f "./root.pxar.didx/a.txt" 3 2015-05-01T13:30:00Z',
      'd "./root.pxar.didx/d"',
      'l "./root.pxar.didx/l"',
    ]);
    expect(items.map((i) => text(i.path))).toEqual([
      'root.pxar.didx',
      'root.pxar.didx/a.txt',
      'root.pxar.didx/d',
      'root.pxar.didx/l',
    ]);
  });

  it('finds what the matcher accepts', async () => {
    const found = await collect(reader().find((_path, entry) => entry.type !== 'd'));
    expect(found.map((f) => [text(f.path), f.entry.type])).toEqual([
      ['root.pxar.didx/a.txt', 'f'],
      ['root.pxar.didx/l', 'l'],
    ]);
  });
});

describe('CatalogReader.find', () => {
  it('walks depth-first, a directory before its contents, and prunes on "exclude"', async () => {
    const c = collector();
    c.writer.startDirectory(utf8('a.pxar.didx'));
    c.writer.startDirectory(utf8('x'));
    c.writer.startDirectory(utf8('deep'));
    c.writer.addHardlink(utf8('h'));
    await c.writer.endDirectory();
    c.writer.addFile(utf8('y'), 10, -5);
    await c.writer.endDirectory();
    c.writer.addFile(utf8('z'), 1, 1);
    await c.writer.endDirectory();
    c.writer.startDirectory(utf8('b.pxar.didx'));
    c.writer.addFifo(utf8('p'));
    await c.writer.endDirectory();
    await c.writer.finish();
    const reader = CatalogReader.fromBytes(c.bytes());

    const all = await collect(reader.find(() => true));
    expect(all.map((f) => text(f.path))).toEqual([
      'a.pxar.didx',
      'a.pxar.didx/x',
      'a.pxar.didx/x/deep',
      'a.pxar.didx/x/deep/h',
      'a.pxar.didx/x/y',
      'a.pxar.didx/z',
      'b.pxar.didx',
      'b.pxar.didx/p',
    ]);
    expect(all[4]?.entry).toEqual({ type: 'f', name: utf8('y'), size: 10, mtime: -5 });

    const seen: string[] = [];
    const pruned = await collect(
      reader.find((path) => {
        seen.push(text(path));
        return text(path) === 'a.pxar.didx/x' ? 'exclude' : true;
      }),
    );
    expect(pruned.map((f) => text(f.path))).toEqual([
      'a.pxar.didx',
      'a.pxar.didx/z',
      'b.pxar.didx',
      'b.pxar.didx/p',
    ]);
    expect(seen).toEqual([
      'a.pxar.didx',
      'a.pxar.didx/x',
      'a.pxar.didx/z',
      'b.pxar.didx',
      'b.pxar.didx/p',
    ]);
  });
});

describe('dump line format', () => {
  it('quotes paths like PBS (Rust Debug) and keeps every name on one line', () => {
    const path = Uint8Array.from([
      ...utf8('r/a"b\\c\nd\te\r'),
      0xff,
      ...utf8('f\u00e4g\u001b\u007fh\u0000i'),
      0xc3,
    ]);
    expect(quoteCatalogPath(path)).toBe(
      '"r/a\\"b\\\\c\\nd\\te\\r\\xFFf\u00e4g\\u{1b}\\u{7f}h\\0i\\xC3"',
    );
    // 3- and 4-byte characters pass; C1 controls are escaped; an encoded surrogate is not UTF-8.
    const wide = Uint8Array.from([
      0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xc2, 0x85, 0xed, 0xa0, 0x80,
    ]);
    expect(quoteCatalogPath(wide)).toBe('"\u20ac\u{1f600}\\u{85}\\xED\\xA0\\x80"');
    expect(formatCatalogDumpLine(utf8("r/it's"), { type: 's', name: utf8("it's") })).toBe(
      `s "./r/it's"`,
    );
  });

  it('prints mtimes in UTC, or the number when the year is out of range', () => {
    expect(formatCatalogMtime(0)).toBe('1970-01-01T00:00:00Z');
    expect(formatCatalogMtime(-1)).toBe('1969-12-31T23:59:59Z');
    expect(formatCatalogMtime(MTIME)).toBe('2015-05-01T13:30:00Z');
    // 253402300800 is 10000-01-01T00:00:00Z.
    expect(formatCatalogMtime(253402300799)).toBe('9999-12-31T23:59:59Z');
    expect(formatCatalogMtime(253402300800)).toBe('253402300800');
    expect(formatCatalogMtime(-(2 ** 52))).toBe(String(-(2 ** 52)));
  });
});

describe('round trip of generated trees', () => {
  it('reader returns exactly what the writer was fed', async () => {
    await fc.assert(
      fc.asyncProperty(snapshotArb, async (archives) => {
        const bytes = await writeSnapshot(archives);
        const reader = CatalogReader.fromBytes(bytes);
        const roots = await reader.root();
        expect(roots.map((r) => toHex(r.name))).toEqual(archives.map(([n]) => toHex(n)));
        for (const [i, [, dir]] of archives.entries()) {
          expect(await actual(reader, roots[i]!)).toEqual(expected(dir));
        }
        const found = await collect(reader.find(() => true));
        expect(found.map((f) => text(f.path))).toEqual(modelPaths(archives));
        for (const f of found) expect(await reader.lookup(f.path)).toEqual(f.entry);
      }),
      { numRuns: 150 },
    );
  });
});

describe('hostile catalogs', () => {
  it('rejects a wrong magic', async () => {
    const bad = SPEC_EXAMPLE.slice();
    bad[3] = (bad[3] ?? 0) ^ 1;
    const error = await expectInvalid(CatalogReader.fromBytes(bad).root());
    expect(error.details.offset).toBe(0);
  });

  it('rejects every truncation of a valid catalog', async () => {
    for (let n = 0; n < SPEC_EXAMPLE.byteLength; n++) {
      await expectInvalid(consumeAll(CatalogReader.fromBytes(SPEC_EXAMPLE.subarray(0, n))));
    }
  });

  it('rejects a root offset outside the tables', async () => {
    for (const pos of [0n, 7n, 51n, 59n, 2n ** 53n, 2n ** 64n - 1n]) {
      const error = await expectInvalid(
        CatalogReader.fromBytes(withTrailer(SPEC_EXAMPLE, pos)).root(),
      );
      expect(error.details.offset).toBe(51);
    }
  });

  it('rejects a root offset that lands on a non-root table or mid-table', async () => {
    // 10 is root.pxar.didx's table: it holds a file, which the root may not.
    await expectInvalid(CatalogReader.fromBytes(withTrailer(SPEC_EXAMPLE, 10n)).root());
    await expectInvalid(consumeAll(CatalogReader.fromBytes(withTrailer(SPEC_EXAMPLE, 33n))));
    // 8 is a well-formed empty table: a catalog without archives, not an error.
    expect(await CatalogReader.fromBytes(withTrailer(SPEC_EXAMPLE, 8n)).root()).toEqual([]);
  });

  it('rejects directories whose table is not before the parent table', async () => {
    // Self-reference (back offset 0): the simplest loop.
    const self = new Layout();
    const selfPos = self.add(table(dirEntry('r', 0)));
    await expectInvalid(CatalogReader.fromBytes(self.finish(selfPos)).root());
    // Back offsets that land inside the magic or before the file.
    for (const back of [3, 9, 1000]) {
      const l = new Layout();
      const empty = l.add(table());
      const rootPos = l.add(table(dirEntry('r', back)));
      expect(empty).toBe(8);
      await expectInvalid(CatalogReader.fromBytes(l.finish(rootPos)).root());
    }
  });

  it('rejects a child table that runs into its parent table', async () => {
    // A child table at 8 claiming 3 bytes (01 00 + one byte of the parent's table).
    const l = new Layout();
    l.add([0x03, 0x00]);
    const parent = l.add(table(dirEntry('a', l.here() - 8)));
    const root = l.add(table(dirEntry('r', l.here() - parent)));
    const reader = CatalogReader.fromBytes(l.finish(root));
    await expectInvalid(reader.lookup('r/a/x'));
    await expectInvalid(collect(reader.dump()));
  });

  it('rejects tables shared by two directories when walking', async () => {
    const l = new Layout();
    const empty = l.add(table());
    const archive = l.here();
    l.add(table(dirEntry('a', archive - empty), dirEntry('b', archive - empty)));
    const root = l.add(table(dirEntry('r', l.here() - archive)));
    const reader = CatalogReader.fromBytes(l.finish(root));
    expect(await reader.listDirectory('r/a')).toEqual([]);
    expect(await reader.listDirectory('r/b')).toEqual([]);
    const error = await expectInvalid(collect(reader.dump()));
    expect(error.details.offset).toBe(empty);
  });

  it('does not blow up on a chain of tables each referenced twice (2^40 paths)', async () => {
    const l = new Layout();
    let previous = l.add(table());
    for (let i = 0; i < 40; i++) {
      const here = l.here();
      previous = l.add(table(dirEntry('a', here - previous), dirEntry('b', here - previous)));
    }
    const root = l.add(table(dirEntry('r', l.here() - previous)));
    const reader = CatalogReader.fromBytes(l.finish(root));
    const started = Date.now();
    await expectInvalid(collect(reader.dump()));
    await expectInvalid(collect(reader.find(() => false)));
    expect(Date.now() - started).toBeLessThan(2000);
    // A single path through it is fine.
    expect((await reader.lookup(['r', ...Array<string>(40).fill('b')].join('/')))?.type).toBe('d');
  });

  it('rejects bad table lengths and counts', async () => {
    const cases: [string, number[]][] = [
      ['overlong length varint', [...Array<number>(10).fill(0xff), 0x01]],
      ['length beyond the file', [0x64, 0x00]],
      ['zero length', [0x00, 0x00]],
      ['count larger than the bytes allow', [0x04, 0x05, 0x00, 0x00, 0x00]],
      ['entry runs past the table', [0x03, 0x01, 0x6c, 0x01]],
      ['bytes left after the entries', [0x03, 0x00, 0x00, 0x00]],
      ['unknown type byte', [0x04, 0x01, 0x78, 0x01, 0x61]],
    ];
    for (const [what, raw] of cases) {
      const l = new Layout();
      const pos = l.add(raw);
      const error = await rejection(CatalogReader.fromBytes(l.finish(pos)).root());
      expect(error.code, what).toBe('CATALOG_INVALID');
      expect(typeof error.details.offset, what).toBe('number');
    }
  });

  it('rejects bad names', async () => {
    const bad: (string | Uint8Array)[] = [
      '',
      '.',
      '..',
      'a/b',
      Uint8Array.of(0x61, 0, 0x62),
      'n'.repeat(4096),
    ];
    for (const name of bad) {
      await expectInvalid(CatalogReader.fromBytes(oneArchive(leaf('l', name))).listDirectory('r'));
      // The same rules hold for archive names in the root table.
      const l = new Layout();
      const empty = l.add(table());
      const root = l.add(table(dirEntry(name, l.here() - empty)));
      await expectInvalid(CatalogReader.fromBytes(l.finish(root)).root());
    }
    const longest = 'n'.repeat(4095);
    const ok = CatalogReader.fromBytes(oneArchive(leaf('l', longest)));
    expect((await ok.lookup(`r/${longest}`))?.type).toBe('l');
  });

  it('rejects file sizes and mtimes beyond the safe-integer range', async () => {
    const hugeSize = oneArchive([
      ...leaf('f', 'x'),
      ...[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10],
      0x00,
    ]);
    await expectInvalid(CatalogReader.fromBytes(hugeSize).listDirectory('r'));
    const hugeMtime = oneArchive(
      fileEntry('x', 1, [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x90, 0x00]),
    );
    await expectInvalid(CatalogReader.fromBytes(hugeMtime).listDirectory('r'));
    const fine = oneArchive(fileEntry('x', 1, [0x81, 0x00]));
    expect(await CatalogReader.fromBytes(fine).lookup('r/x')).toEqual({
      type: 'f',
      name: utf8('x'),
      size: 1,
      mtime: -1,
    });
  });

  it('rejects short reads from the source', async () => {
    const source: CatalogSource = {
      size: SPEC_EXAMPLE.byteLength + 10,
      readAt: (offset, length) => Promise.resolve(SPEC_EXAMPLE.subarray(offset, offset + length)),
    };
    await expectInvalid(new CatalogReader(source).root());
  });

  it('only ever accepts or reports CATALOG_INVALID on random mutations (fuzz)', async () => {
    const archives: [Uint8Array, Dir][] = [
      [
        utf8('root.pxar.didx'),
        {
          kind: 'd',
          children: [
            [
              utf8('etc'),
              { kind: 'd', children: [[utf8('hosts'), { kind: 'f', size: 220, mtime: MTIME }]] },
            ],
            [utf8('bin'), { kind: 'l' }],
            [
              utf8('home'),
              {
                kind: 'd',
                children: [
                  [
                    utf8('u'),
                    {
                      kind: 'd',
                      children: [[utf8('.bashrc'), { kind: 'f', size: 3771, mtime: -20 }]],
                    },
                  ],
                  [utf8('empty'), { kind: 'd', children: [] }],
                  [utf8('sock'), { kind: 's' }],
                ],
              },
            ],
          ],
        },
      ],
      [utf8('data.pxar.didx'), { kind: 'd', children: [[utf8('x'), { kind: 'h' }]] }],
    ];
    const valid = await writeSnapshot(archives);
    const mutation = fc.oneof(
      fc.record({
        op: fc.constant('set' as const),
        at: fc.nat(),
        byte: fc.integer({ min: 0, max: 255 }),
      }),
      fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
      fc.record({
        op: fc.constant('insert' as const),
        at: fc.nat(),
        bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }),
      }),
      fc.record({
        op: fc.constant('delete' as const),
        at: fc.nat(),
        count: fc.integer({ min: 1, max: 4 }),
      }),
      fc.record({ op: fc.constant('root' as const), pos: fc.bigInt({ min: 0n, max: 200n }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (mutations) => {
        let bytes: Uint8Array = valid.slice();
        for (const m of mutations) {
          const at = bytes.byteLength === 0 ? 0 : 'at' in m ? m.at % bytes.byteLength : 0;
          if (m.op === 'set' && bytes.byteLength > 0) bytes[at] = m.byte;
          else if (m.op === 'truncate') bytes = bytes.slice(0, at);
          else if (m.op === 'insert')
            bytes = Uint8Array.from([...bytes.subarray(0, at), ...m.bytes, ...bytes.subarray(at)]);
          else if (m.op === 'delete')
            bytes = Uint8Array.from([...bytes.subarray(0, at), ...bytes.subarray(at + m.count)]);
          else if (m.op === 'root' && bytes.byteLength >= 8) bytes = withTrailer(bytes, m.pos);
        }
        try {
          const n = await consumeAll(CatalogReader.fromBytes(bytes));
          // Each entry takes at least 3 bytes, so a valid result is bounded by the file size.
          expect(n).toBeLessThanOrEqual(bytes.byteLength / 3);
        } catch (error) {
          if (!isBurrowError(error) || error.code !== 'CATALOG_INVALID') throw error;
        }
      }),
      { numRuns: 600 },
    );
  });
});
