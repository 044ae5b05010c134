import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { PxarEncoder } from './encoder.js';
import type { EncoderOptions } from './encoder.js';
import {
  ACL_NO_MASK,
  EMPTY_ACL,
  PXAR,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  metadataOf,
  pxarHash,
} from './format.js';
import type { Acl, AclDefault, AclEntry, Metadata, Xattr } from './format.js';
import { codeOf, rejectionCodeOf } from '../../test/helpers/error-code.js';

const te = new TextEncoder();
const b = (s: string): Uint8Array => te.encode(s);
const latin1 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');

function meta(mode: number, id = 0, secs = 0): Metadata {
  return metadataOf({ mode, flags: 0, uid: id, gid: id, mtime: { secs, nanos: 0 } });
}
const DIR = meta(S_IFDIR | 0o755);
const FILE = meta(S_IFREG | 0o644);

/** A sink that keeps copies of everything it is given. */
class Collect {
  readonly pieces: Uint8Array[] = [];
  readonly write = (bytes: Uint8Array): void => {
    this.pieces.push(bytes.slice());
  };
  bytes(): Buffer {
    return Buffer.concat(this.pieces);
  }
}

// ---------------------------------------------------------------------------------------------
// An independent reader for the tests: splits the archive into items by their headers and
// parses the §5 grammar by recursive descent, checking every goodbye table against the
// children it actually found (§7) and the attribute order (§5).

/** Cheap assertions for the hot paths of the parser (expect() is slow per call). */
function need(condition: boolean, what: string): void {
  if (!condition) throw new Error(`archive check failed: ${what}`);
}
function eq(actual: unknown, expected: unknown, what: string): void {
  if (actual !== expected)
    throw new Error(`archive check failed: ${what}: ${String(actual)} !== ${String(expected)}`);
}

interface RawItem {
  readonly type: bigint;
  readonly start: number;
  readonly end: number;
  readonly content: Uint8Array;
}

function splitItems(bytes: Uint8Array): RawItem[] {
  // Plain Uint8Array views, so parsed values compare equal to the model's.
  const archive = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const view = new DataView(archive.buffer, archive.byteOffset, archive.byteLength);
  const items: RawItem[] = [];
  let at = 0;
  while (at < archive.length) {
    need(archive.length - at >= 16, `archive.length - at >= 16`);
    const type = view.getBigUint64(at, true);
    const fullSize = Number(view.getBigUint64(at + 8, true));
    need(fullSize >= 16, `fullSize >= 16`);
    need(at + fullSize <= archive.length, `at + fullSize <= archive.length`);
    items.push({
      type,
      start: at,
      end: at + fullSize,
      content: archive.subarray(at + 16, at + fullSize),
    });
    at += fullSize;
  }
  // Every full_size together covers the archive exactly.
  eq(at, archive.length, `at`);
  return items;
}

const u64 = (bytes: Uint8Array, at: number): number =>
  Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(at, true));

type Parsed =
  | { kind: 'directory'; children: ParsedChild[] }
  | { kind: 'file'; size: number; content?: Uint8Array; payloadRef?: number }
  | { kind: 'symlink'; target: Uint8Array }
  | { kind: 'device'; major: number; minor: number }
  | { kind: 'fifo' | 'socket' }
  | { kind: 'hardlink'; offset: number; target: Uint8Array };

interface ParsedChild {
  readonly name: Uint8Array;
  readonly path: string;
  readonly start: number;
  readonly metadata?: Metadata;
  readonly node: Parsed;
}

interface ParsedArchive {
  readonly version: 1 | 2;
  readonly prelude?: Uint8Array;
  readonly rootMetadata: Metadata;
  readonly root: Extract<Parsed, { kind: 'directory' }>;
}

const ATTR_RANK = new Map<bigint, number>([
  [PXAR.XATTR, 0],
  [PXAR.ACL_USER, 1],
  [PXAR.ACL_GROUP, 2],
  [PXAR.ACL_GROUP_OBJ, 3],
  [PXAR.ACL_DEFAULT, 4],
  [PXAR.ACL_DEFAULT_USER, 5],
  [PXAR.ACL_DEFAULT_GROUP, 6],
  [PXAR.FCAPS, 7],
  [PXAR.QUOTA_PROJID, 8],
]);
const SINGLE_ATTRS = new Set<bigint>([
  PXAR.ACL_GROUP_OBJ,
  PXAR.ACL_DEFAULT,
  PXAR.FCAPS,
  PXAR.QUOTA_PROJID,
]);

/**
 * Parses a whole archive. `isReused(path)` says which v2 files were added as payload references,
 * whose goodbye size leaves out the file size (§7.4).
 */
function parseArchive(
  archive: Uint8Array,
  isReused: (path: string) => boolean = () => false,
): ParsedArchive {
  const items = splitItems(archive);
  let i = 0;
  const next = (): RawItem => {
    const item = items[i++];
    if (item === undefined) throw new Error('archive ends early');
    return item;
  };
  const peek = (): RawItem | undefined => items[i];
  let version: 1 | 2 = 1;
  let prelude: Uint8Array | undefined;
  if (peek()?.type === PXAR.FORMAT_VERSION) {
    const item = next();
    eq(item.content.length, 8, `item.content.length`);
    eq(u64(item.content, 0), 2, `u64(item.content, 0)`);
    version = 2;
    if (peek()?.type === PXAR.PRELUDE) prelude = next().content;
  }

  const parseMetadata = (): Metadata => {
    const entry = next();
    eq(entry.type, PXAR.ENTRY, `entry.type`);
    eq(entry.content.length, 40, `entry.content.length`);
    const v = new DataView(entry.content.buffer, entry.content.byteOffset, 40);
    eq(v.getUint32(36, true), 0, `v.getUint32(36, true)`);
    const stat = {
      mode: Number(v.getBigUint64(0, true)),
      flags: Number(v.getBigUint64(8, true)),
      uid: v.getUint32(16, true),
      gid: v.getUint32(20, true),
      mtime: { secs: Number(v.getBigInt64(24, true)), nanos: v.getUint32(32, true) },
    };
    const xattrs: Xattr[] = [];
    const users: AclEntry[] = [];
    const groups: AclEntry[] = [];
    const defaultUsers: AclEntry[] = [];
    const defaultGroups: AclEntry[] = [];
    let groupObj: number | undefined;
    let def: AclDefault | undefined;
    let fcaps: Uint8Array | undefined;
    let quotaProjectId: number | undefined;
    let rank = -1;
    const seen = new Set<bigint>();
    for (let item = peek(); item !== undefined && ATTR_RANK.has(item.type); item = peek()) {
      next();
      const r = ATTR_RANK.get(item.type)!;
      need(r >= rank, `r >= rank`);
      rank = r;
      if (SINGLE_ATTRS.has(item.type)) {
        eq(seen.has(item.type), false, `seen.has(item.type)`);
        seen.add(item.type);
      }
      const c = item.content;
      const pair = (): AclEntry => {
        eq(c.length, 16, `c.length`);
        return { id: u64(c, 0), permissions: u64(c, 8) };
      };
      switch (item.type) {
        case PXAR.XATTR: {
          const nul = c.indexOf(0);
          need(nul > 0, `nul > 0`);
          xattrs.push({ name: c.subarray(0, nul), value: c.subarray(nul + 1) });
          break;
        }
        case PXAR.ACL_USER:
          users.push(pair());
          break;
        case PXAR.ACL_GROUP:
          groups.push(pair());
          break;
        case PXAR.ACL_DEFAULT_USER:
          defaultUsers.push(pair());
          break;
        case PXAR.ACL_DEFAULT_GROUP:
          defaultGroups.push(pair());
          break;
        case PXAR.ACL_GROUP_OBJ:
          eq(c.length, 8, `c.length`);
          groupObj = u64(c, 0);
          break;
        case PXAR.ACL_DEFAULT: {
          eq(c.length, 32, `c.length`);
          const dv = new DataView(c.buffer, c.byteOffset, 32);
          const field = (at: number): number | undefined => {
            const raw = dv.getBigUint64(at, true);
            return raw === ACL_NO_MASK ? undefined : Number(raw);
          };
          def = { userObj: field(0), groupObj: field(8), other: field(16), mask: field(24) };
          break;
        }
        case PXAR.FCAPS:
          fcaps = c;
          break;
        case PXAR.QUOTA_PROJID:
          eq(c.length, 8, `c.length`);
          quotaProjectId = u64(c, 0);
          break;
      }
    }
    const acl: Acl = { users, groups, defaultUsers, defaultGroups, groupObj, default: def };
    return { stat, xattrs, acl, fcaps, quotaProjectId };
  };

  const zeroTerminated = (c: Uint8Array): Uint8Array => {
    eq(c[c.length - 1], 0, `c[c.length - 1]`);
    return c.subarray(0, c.length - 1);
  };

  /** Children until the GOODBYE, then that GOODBYE checked against them. */
  const parseDirectory = (path: string, entryStart: number): Parsed => {
    const children: ParsedChild[] = [];
    const expected: { hash: bigint; start: number; end: number }[] = [];
    for (;;) {
      const item = peek();
      if (item === undefined) throw new Error(`directory ${path} has no GOODBYE`);
      if (item.type === PXAR.GOODBYE) break;
      const fileName = next();
      eq(fileName.type, PXAR.FILENAME, `fileName.type`);
      const name = zeroTerminated(fileName.content);
      const childPath = path === '' ? latin1(name) : `${path}/${latin1(name)}`;
      let node: Parsed;
      let metadata: Metadata | undefined;
      let goodbyeEnd: number;
      if (peek()?.type === PXAR.HARDLINK) {
        const link = next();
        node = {
          kind: 'hardlink',
          offset: u64(link.content, 0),
          target: zeroTerminated(link.content.subarray(8)),
        };
        goodbyeEnd = link.end;
      } else {
        const entryAt = peek()!.start;
        metadata = parseMetadata();
        const kind = metadata.stat.mode & S_IFMT;
        const body = peek();
        if (kind === S_IFIFO || kind === S_IFSOCK) {
          node = { kind: kind === S_IFIFO ? 'fifo' : 'socket' };
          goodbyeEnd = items[i - 1]!.end;
        } else if (body?.type === PXAR.PAYLOAD) {
          eq(version, 1, `version`);
          next();
          node = { kind: 'file', size: body.content.length, content: body.content };
          goodbyeEnd = body.end;
        } else if (body?.type === PXAR.PAYLOAD_REF) {
          eq(version, 2, `version`);
          next();
          eq(body.content.length, 16, `body.content.length`);
          const size = u64(body.content, 8);
          node = { kind: 'file', size, payloadRef: u64(body.content, 0) };
          goodbyeEnd = body.end + (isReused(childPath) ? 0 : size);
        } else if (body?.type === PXAR.SYMLINK) {
          next();
          node = { kind: 'symlink', target: zeroTerminated(body.content) };
          goodbyeEnd = body.end;
        } else if (body?.type === PXAR.DEVICE) {
          next();
          eq(body.content.length, 16, `body.content.length`);
          node = { kind: 'device', major: u64(body.content, 0), minor: u64(body.content, 8) };
          goodbyeEnd = body.end;
        } else {
          eq(kind, S_IFDIR, `kind`);
          node = parseDirectory(childPath, entryAt);
          goodbyeEnd = items[i - 1]!.end;
        }
      }
      children.push({ name, path: childPath, start: fileName.start, metadata, node });
      expected.push({ hash: pxarHash(name), start: fileName.start, end: goodbyeEnd });
    }
    const goodbye = next();
    const n = expected.length;
    eq(goodbye.end - goodbye.start, 16 + 24 * (n + 1), `goodbye.end - goodbye.start`);
    const table = Array.from({ length: n + 1 }, (_, k) => ({
      hash: new DataView(goodbye.content.buffer, goodbye.content.byteOffset).getBigUint64(
        24 * k,
        true,
      ),
      offset: u64(goodbye.content, 24 * k + 8),
      size: u64(goodbye.content, 24 * k + 16),
    }));
    // The tail: marker, back to the ENTRY (0 for the root, §7.3), the table's own size.
    expect(table[n]).toEqual({
      hash: PXAR.GOODBYE_TAIL_MARKER,
      offset: goodbye.start - entryStart,
      size: 16 + 24 * (n + 1),
    });
    const got = table.slice(0, n).map((t) => ({
      hash: t.hash,
      start: goodbye.start - t.offset,
      end: goodbye.start - t.offset + t.size,
    }));
    const key = (x: { hash: bigint; start: number }): string => `${x.hash}:${x.start}`;
    expect([...got].sort((x, y) => key(x).localeCompare(key(y)))).toEqual(
      [...expected].sort((x, y) => key(x).localeCompare(key(y))),
    );
    // An implicit binary search tree: the in-order walk visits the hashes in ascending order.
    const inOrder: bigint[] = [];
    const walk = (slot: number): void => {
      if (slot >= n) return;
      walk(2 * slot + 1);
      inOrder.push(table[slot]!.hash);
      walk(2 * slot + 2);
    };
    walk(0);
    for (let k = 1; k < n; k++)
      eq(inOrder[k - 1]! <= inOrder[k]!, true, `inOrder[k - 1]! <= inOrder[k]!`);
    // And a lookup by the §7.5 search finds every child.
    for (const child of expected) {
      let found = false;
      const search = (s: number): void => {
        if (s >= n || found) return;
        const h = table[s]!.hash;
        if (child.hash === h && goodbye.start - table[s]!.offset === child.start) found = true;
        else if (child.hash < h) search(2 * s + 1);
        else if (child.hash > h) search(2 * s + 2);
        else {
          search(2 * s + 1);
          search(2 * s + 2);
        }
      };
      search(0);
      eq(found, true, `found`);
    }
    return { kind: 'directory', children };
  };

  const rootEntryAt = peek()!.start;
  eq(
    rootEntryAt,
    version === 1 ? 0 : 24 + (prelude === undefined ? 0 : 16 + prelude.length),
    'root ENTRY position',
  );
  const rootMetadata = parseMetadata();
  eq(rootMetadata.stat.mode & S_IFMT, S_IFDIR, `rootMetadata.stat.mode & S_IFMT`);
  const root = parseDirectory('', 0) as Extract<Parsed, { kind: 'directory' }>;
  eq(i, items.length, `i`);
  return { version, prelude, rootMetadata, root };
}

// ---------------------------------------------------------------------------------------------

describe('the §6 worked example (v1)', () => {
  it('encodes to the 475 bytes and SHA-256 given in the spec', async () => {
    const out = new Collect();
    const encoder = await PxarEncoder.begin(meta(0o40755, 1000, 1430487000), { output: out });
    expect(encoder.formatVersion).toBe(1);
    expect(await encoder.addFile(b('a.txt'), meta(0o100644), 3, [b('hi\n')])).toBe(56);
    expect(await encoder.enterDirectory(b('d'), meta(0o40755))).toBe(153);
    await encoder.leaveDirectory();
    expect(encoder.position()).toBe(267);
    expect(await encoder.addSymlink(b('l'), meta(0o120777), b('a.txt'))).toBe(267);
    await encoder.finish();
    const bytes = out.bytes();
    expect(encoder.position()).toBe(475);
    expect(encoder.payloadPosition()).toBe(0);
    expect(bytes.toString('hex')).toBe(
      [
        'efac88e5746495d53800000000000000ed410000000000000000000000000000',
        'e8030000e8030000d87f4355000000000000000000000000b317390621117016',
        '1600000000000000612e74787400efac88e5746495d53800000000000000a481',
        '0000000000000000000000000000000000000000000000000000000000000000',
        '000000000000251a7c0b1b7a1428130000000000000068690ab3173906211170',
        '1612000000000000006400efac88e5746495d53800000000000000ed41000000',
        '0000000000000000000000000000000000000000000000000000000000000000',
        '0000001d73d542a64fec2f280000000000000055153e755bed5eef3800000000',
        '0000002800000000000000b31739062111701612000000000000006c00efac88',
        'e5746495d53800000000000000ffa10000000000000000000000000000000000',
        '0000000000000000000000000000000000000000005fdcf5dbe771f927160000',
        '0000000000612e747874001d73d542a64fec2f7000000000000000592517c946',
        '04725360000000000000006000000000000000c3472fbc6c1db625d200000000',
        '000000720000000000000072aa11b6662d39dc33010000000000006100000000',
        '00000055153e755bed5eef6b010000000000007000000000000000',
      ].join(''),
    );
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(
      'fd784941932e07a2f96f6783797a545185b76416163bd3bc21a554b4901b3248',
    );
  });

  it('gives the same bytes whatever the sink or the content pieces', async () => {
    const out = new Collect();
    const asyncSink = {
      write: async (bytes: Uint8Array): Promise<void> => {
        await new Promise((resolve) => setImmediate(resolve));
        out.write(bytes);
      },
    };
    async function* pieces(): AsyncGenerator<Uint8Array> {
      yield b('h');
      await Promise.resolve();
      yield new Uint8Array(0);
      yield b('i\n');
    }
    const encoder = await PxarEncoder.begin(meta(0o40755, 1000, 1430487000), {
      output: asyncSink,
    });
    await encoder.addFile(b('a.txt'), meta(0o100644), 3, pieces());
    await encoder.enterDirectory(b('d'), meta(0o40755));
    await encoder.leaveDirectory();
    await encoder.addSymlink(b('l'), meta(0o120777), b('a.txt'));
    await encoder.finish();
    expect(createHash('sha256').update(out.bytes()).digest('hex')).toBe(
      'fd784941932e07a2f96f6783797a545185b76416163bd3bc21a554b4901b3248',
    );
  });
});

describe('streaming', () => {
  it('passes large content pieces through and never writes a whole file at once', async () => {
    const sizes: number[] = [];
    const seen: Uint8Array[] = [];
    const output = {
      write: (bytes: Uint8Array): void => {
        sizes.push(bytes.length);
        seen.push(bytes);
      },
    };
    const piece = new Uint8Array(128 * 1024).fill(7);
    const encoder = await PxarEncoder.begin(DIR, { output });
    await encoder.addFile(b('big'), FILE, 16 * piece.length, Array(16).fill(piece));
    await encoder.finish();
    expect(Math.max(...sizes)).toBeLessThanOrEqual(256 * 1024);
    // The caller's pieces reach the sink as they are, not copied.
    expect(seen.filter((s) => s === piece)).toHaveLength(16);
    expect(sizes.reduce((a, x) => a + x, 0)).toBe(encoder.position());
  });

  it('never changes bytes it handed to a sink, though it goes on filling the same buffer', async () => {
    // One sink keeps the very arrays it is given, the other copies them at once.
    const kept: Uint8Array[] = [];
    const keptPayload: Uint8Array[] = [];
    const copied = new Collect();
    const copiedPayload = new Collect();
    const run = async (output: EncoderOptions['output'], payload: EncoderOptions['output']) => {
      const encoder = await PxarEncoder.begin(DIR, { output, payloadOutput: payload });
      for (let k = 0; k < 400; k++) {
        const content = new Uint8Array(k * 37).fill(k & 0xff);
        await encoder.addFile(b(`f${k}`), FILE, content.length, [content]);
      }
      await encoder.finish();
    };
    await run(
      { write: (bytes) => void kept.push(bytes) },
      { write: (bytes) => void keptPayload.push(bytes) },
    );
    await run(copied, copiedPayload);
    // The split archive seals its payload buffer after every file: many pieces, few buffers.
    expect(keptPayload.length).toBeGreaterThan(400);
    expect(new Set(keptPayload.map((p) => p.buffer)).size).toBeLessThan(20);
    expect(Buffer.concat(kept).equals(copied.bytes())).toBe(true);
    expect(Buffer.concat(keptPayload).equals(copiedPayload.bytes())).toBe(true);
  });

  it('large directories and many small pieces across buffer boundaries parse back', async () => {
    const out = new Collect();
    const encoder = await PxarEncoder.begin(DIR, { output: out });
    const content = new Uint8Array(700_000).map((_, i) => (i * 7) & 0xff);
    const small: Uint8Array[] = [];
    for (let at = 0; at < content.length; at += 1000) small.push(content.subarray(at, at + 1000));
    await encoder.addFile(b('small-pieces'), FILE, content.length, small);
    await encoder.enterDirectory(b('many'), DIR);
    for (let k = 0; k < 3000; k++) await encoder.addFifo(b(`n${k}`), meta(S_IFIFO | 0o644));
    await encoder.leaveDirectory();
    await encoder.finish();
    // Several writes, none of them the whole archive, and all bytes accounted for.
    expect(out.pieces.length).toBeGreaterThan(3);
    const parsed = parseArchive(out.bytes());
    const [file, many] = parsed.root.children;
    expect(Buffer.from((file!.node as { content: Uint8Array }).content).equals(content)).toBe(true);
    expect((many!.node as { children: unknown[] }).children).toHaveLength(3000);
  });

  it('property: contents survive any mix of small and large pieces across write buffers', async () => {
    const fileArb = fc.record({
      size: fc.oneof(fc.nat(3000), fc.integer({ min: 60_000, max: 140_000 })),
      seed: fc.nat(255),
      cuts: fc.array(fc.nat(140_000), { maxLength: 6 }),
      xattr: fc.nat(300),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(fileArb, { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        async (files, split) => {
          const out = new Collect();
          const payload = new Collect();
          const encoder = await PxarEncoder.begin(DIR, {
            output: out,
            ...(split ? { payloadOutput: payload } : {}),
          });
          const contents = files.map((f) =>
            new Uint8Array(f.size).map((_, i) => (i + f.seed) & 0xff),
          );
          for (const [k, f] of files.entries()) {
            const metadata = {
              ...FILE,
              xattrs: [{ name: b('user.x'), value: new Uint8Array(f.xattr) }],
            };
            const content = contents[k]!;
            await encoder.addFile(b(`f${k}`), metadata, f.size, piecesOf(content, f.cuts));
          }
          await encoder.finish();
          const bytes = out.bytes();
          expect(bytes.length).toBe(encoder.position());
          const parsed = parseArchive(bytes);
          const stream = payload.bytes();
          parsed.root.children.forEach((child, k) => {
            const node = child.node as Extract<Parsed, { kind: 'file' }>;
            const data =
              node.payloadRef === undefined
                ? node.content!
                : stream.subarray(node.payloadRef + 16, node.payloadRef + 16 + node.size);
            expect(Buffer.from(data).equals(contents[k]!)).toBe(true);
            expect(child.metadata!.xattrs[0]!.value.length).toBe(files[k]!.xattr);
          });
        },
      ),
      { numRuns: 25 },
    );
  });

  it('awaits the sink: at most one write is outstanding (backpressure)', async () => {
    let outstanding = 0;
    let most = 0;
    let total = 0;
    const output = {
      write: async (bytes: Uint8Array): Promise<void> => {
        outstanding++;
        most = Math.max(most, outstanding);
        await new Promise((resolve) => setTimeout(resolve, 1));
        total += bytes.length;
        outstanding--;
      },
    };
    const payloadOutput = { write: output.write };
    const encoder = await PxarEncoder.begin(DIR, { output, payloadOutput });
    for (let k = 0; k < 4; k++)
      await encoder.addFile(b(`f${k}`), FILE, 300_000, [
        new Uint8Array(100_000),
        new Uint8Array(200_000),
      ]);
    await encoder.finish();
    expect(most).toBe(1);
    expect(total).toBe(encoder.position() + encoder.payloadPosition());
  });

  it('has handed every payload byte of a call to the payload sink when the call settles', async () => {
    const payload = new Collect();
    const encoder = await PxarEncoder.begin(DIR, { output: new Collect(), payloadOutput: payload });
    expect(payload.bytes().length).toBe(16);
    await encoder.addFile(b('x'), FILE, 5, [b('hello')]);
    expect(payload.bytes().length).toBe(encoder.payloadPosition());
    expect(encoder.payloadPosition()).toBe(16 + 16 + 5);
  });

  it('reports each PAYLOAD header offset before the header reaches the payload sink', async () => {
    const payload = new Collect();
    const reported: [number, number][] = [];
    const encoder = await PxarEncoder.begin(DIR, {
      output: new Collect(),
      payloadOutput: payload,
      onPayloadHeader: (offset) => reported.push([offset, payload.bytes().length]),
    });
    await encoder.addFile(b('a'), FILE, 3, [b('abc')]);
    await encoder.addFile(b('b'), FILE, 0, []);
    await encoder.addFile(b('c'), FILE, 1, [b('z')]);
    await encoder.finish();
    expect(reported).toEqual([
      [16, 16],
      [35, 35],
      [51, 51],
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Property tests: random trees, encoded, then read back by the independent parser above.

type ModelNode =
  | { kind: 'dir'; meta: Metadata; children: [Uint8Array, ModelNode][] }
  | {
      kind: 'file';
      meta: Metadata;
      content: Uint8Array;
      cuts: number[];
      reuse: boolean;
      pad: [number, number];
    }
  | { kind: 'symlink'; meta: Metadata; target: Uint8Array }
  | { kind: 'device'; meta: Metadata; major: number; minor: number }
  | { kind: 'fifo' | 'socket'; meta: Metadata }
  | { kind: 'hardlink'; pick: number };

const nameArb = fc
  .uint8Array({ minLength: 1, maxLength: 8, min: 1, max: 255 })
  .map((name) => name.map((x) => (x === 0x2f ? 0x41 : x)))
  .filter((name) => latin1(name) !== '.' && latin1(name) !== '..');

const permArb = fc.integer({ min: 0, max: 7 });
const aclEntriesArb = fc.array(
  fc.record({ id: fc.integer({ min: 0, max: 0xffffffff }), permissions: permArb }),
  { maxLength: 2 },
);

function metaArb(type: number | number[]): fc.Arbitrary<Metadata> {
  const types = Array.isArray(type) ? type : [type];
  return fc
    .record({
      type: fc.constantFrom(...types),
      perm: fc.integer({ min: 0, max: 0o7777 }),
      flags: fc.integer({ min: 0, max: 2 ** 40 }),
      uid: fc.integer({ min: 0, max: 0xffffffff }),
      gid: fc.integer({ min: 0, max: 0xffffffff }),
      secs: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
      nanos: fc.integer({ min: 0, max: 999_999_999 }),
      xattrs: fc.array(
        fc.record({
          name: fc.uint8Array({ minLength: 1, maxLength: 12, min: 1, max: 255 }),
          value: fc.uint8Array({ maxLength: 20 }),
        }),
        { maxLength: 3 },
      ),
      acl: fc.option(
        fc.record({
          users: aclEntriesArb,
          groups: aclEntriesArb,
          groupObj: fc.option(permArb, { nil: undefined }),
          default: fc.option(
            fc.record({
              userObj: fc.option(permArb, { nil: undefined }),
              groupObj: fc.option(permArb, { nil: undefined }),
              other: fc.option(permArb, { nil: undefined }),
              mask: fc.option(permArb, { nil: undefined }),
            }),
            { nil: undefined },
          ),
          defaultUsers: aclEntriesArb,
          defaultGroups: aclEntriesArb,
        }),
        { nil: undefined },
      ),
      fcaps: fc.option(fc.uint8Array({ maxLength: 24 }), { nil: undefined }),
      quotaProjectId: fc.option(fc.integer({ min: 0, max: 2 ** 40 }), { nil: undefined }),
    })
    .map((r) => ({
      stat: {
        mode: r.type | r.perm,
        flags: r.flags,
        uid: r.uid,
        gid: r.gid,
        mtime: { secs: r.secs, nanos: r.nanos },
      },
      xattrs: r.xattrs,
      acl: r.acl ?? EMPTY_ACL,
      fcaps: r.fcaps,
      quotaProjectId: r.quotaProjectId,
    }));
}

const treeArb = fc.letrec<{ dir: ModelNode; node: ModelNode }>((tie) => ({
  dir: fc.record({
    kind: fc.constant('dir' as const),
    meta: metaArb(S_IFDIR),
    children: fc.uniqueArray(fc.tuple(nameArb, tie('node')), {
      maxLength: 6,
      selector: ([name]) => latin1(name),
    }),
  }),
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({
      kind: fc.constant('file' as const),
      meta: metaArb(S_IFREG),
      content: fc.uint8Array({ maxLength: 300 }),
      cuts: fc.array(fc.nat(300), { maxLength: 4 }),
      reuse: fc.boolean(),
      pad: fc.tuple(fc.nat(40), fc.nat(40)),
    }),
    fc.record({
      kind: fc.constant('symlink' as const),
      meta: metaArb(S_IFLNK),
      target: fc.uint8Array({ minLength: 1, maxLength: 30, min: 1, max: 255 }),
    }),
    fc.record({
      kind: fc.constant('device' as const),
      meta: metaArb([S_IFBLK, S_IFCHR]),
      major: fc.integer({ min: 0, max: 0xffffffff }),
      minor: fc.integer({ min: 0, max: 0xffffffff }),
    }),
    fc.record({ kind: fc.constant('fifo' as const), meta: metaArb(S_IFIFO) }),
    fc.record({ kind: fc.constant('socket' as const), meta: metaArb(S_IFSOCK) }),
    fc.record({ kind: fc.constant('hardlink' as const), pick: fc.nat() }),
    tie('dir'),
  ),
}));

function piecesOf(content: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => Math.min(c, content.length)))].sort((x, y) => x - y);
  const pieces: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, content.length]) {
    pieces.push(content.subarray(from, p));
    from = p;
  }
  return pieces;
}

interface Encoded {
  archive: Buffer;
  payload: Buffer;
  reused: Set<string>;
  /** Path -> FILENAME position returned by the encoder. */
  starts: Map<string, number>;
  /** Hardlink path -> resolved target path (hardlinks with no earlier file become FIFOs). */
  links: Map<string, string>;
  reportedHeaders: number[];
}

/** What the generated trees contained, so the properties can show they covered every case. */
const coverage = { maxDepth: 0, kinds: new Set<string>(), reused: 0, links: 0 };

async function encodeModel(
  rootMeta: Metadata,
  root: ModelNode & { kind: 'dir' },
  split: boolean,
  asyncSinks: boolean,
): Promise<Encoded> {
  const archive = new Collect();
  const payload = new Collect();
  const sink = (c: Collect): EncoderOptions['output'] =>
    asyncSinks ? { write: (bytes: Uint8Array) => Promise.resolve().then(() => c.write(bytes)) } : c;
  const reportedHeaders: number[] = [];
  const encoder = await PxarEncoder.begin(rootMeta, {
    output: sink(archive),
    ...(split
      ? { payloadOutput: sink(payload), onPayloadHeader: (o: number) => reportedHeaders.push(o) }
      : {}),
  });
  const reused = new Set<string>();
  const starts = new Map<string, number>();
  const links = new Map<string, string>();
  const files: string[] = [];
  const walk = async (dir: ModelNode & { kind: 'dir' }, path: string, depth = 1): Promise<void> => {
    coverage.maxDepth = Math.max(coverage.maxDepth, depth);
    for (const [name, node] of dir.children) {
      coverage.kinds.add(node.kind);
      const p = path === '' ? latin1(name) : `${path}/${latin1(name)}`;
      let start: number;
      switch (node.kind) {
        case 'dir':
          start = await encoder.enterDirectory(name, node.meta);
          starts.set(p, start);
          await walk(node, p, depth + 1);
          await encoder.leaveDirectory();
          break;
        case 'file':
          if (split && node.reuse) {
            // What metadata mode does: the caller puts old payload bytes into the stream itself
            // (with padding around them), accounts for them, then references them.
            const header = Buffer.alloc(16);
            header.writeBigUInt64LE(PXAR.PAYLOAD, 0);
            header.writeBigUInt64LE(BigInt(16 + node.content.length), 8);
            const injected = Buffer.concat([
              Buffer.alloc(node.pad[0], 0xee),
              header,
              node.content,
              Buffer.alloc(node.pad[1], 0xee),
            ]);
            const offset = encoder.payloadPosition() + node.pad[0];
            payload.write(injected);
            encoder.advancePayloadPosition(injected.length);
            start = await encoder.addPayloadRef(name, node.meta, node.content.length, offset);
            reused.add(p);
            coverage.reused++;
          } else {
            start = await encoder.addFile(
              name,
              node.meta,
              node.content.length,
              piecesOf(node.content, node.cuts),
            );
          }
          files.push(p);
          break;
        case 'symlink':
          start = await encoder.addSymlink(name, node.meta, node.target);
          break;
        case 'device':
          start = await encoder.addDevice(name, node.meta, node.major, node.minor);
          break;
        case 'fifo':
          start = await encoder.addFifo(name, node.meta);
          break;
        case 'socket':
          start = await encoder.addSocket(name, node.meta);
          break;
        case 'hardlink': {
          const target = files[node.pick % Math.max(1, files.length)];
          if (target === undefined) {
            start = await encoder.addFifo(name, meta(S_IFIFO | 0o600));
          } else {
            start = await encoder.addHardlink(name, b(target), starts.get(target)!);
            links.set(p, target);
            coverage.links++;
          }
          break;
        }
      }
      starts.set(p, start);
    }
  };
  await walk(root, '');
  await encoder.finish();
  const archiveBytes = archive.bytes();
  expect(encoder.position()).toBe(archiveBytes.length);
  const payloadBytes = payload.bytes();
  expect(encoder.payloadPosition()).toBe(payloadBytes.length);
  return { archive: archiveBytes, payload: payloadBytes, reused, starts, links, reportedHeaders };
}

/** Compares what the parser found with the model, reading v2 contents from the payload stream. */
function checkAgainstModel(
  parsed: Extract<Parsed, { kind: 'directory' }>,
  model: ModelNode & { kind: 'dir' },
  enc: Encoded,
  refs: { offset: number; reused: boolean }[],
): void {
  expect(parsed.children.map((c) => latin1(c.name))).toEqual(
    model.children.map(([n]) => latin1(n)),
  );
  parsed.children.forEach((child, k) => {
    const node = model.children[k]![1];
    expect(child.start).toBe(enc.starts.get(child.path));
    const link = enc.links.get(child.path);
    if (node.kind === 'hardlink') {
      if (link === undefined) {
        expect(child.node.kind).toBe('fifo');
        return;
      }
      expect(child.node).toEqual({
        kind: 'hardlink',
        target: b(link),
        offset: child.start - enc.starts.get(link)!,
      });
      expect(child.metadata).toBeUndefined();
      return;
    }
    expect(child.metadata).toEqual(node.meta);
    switch (node.kind) {
      case 'dir':
        expect(child.node.kind).toBe('directory');
        checkAgainstModel(child.node as Extract<Parsed, { kind: 'directory' }>, node, enc, refs);
        break;
      case 'file': {
        const f = child.node as Extract<Parsed, { kind: 'file' }>;
        expect(f.kind).toBe('file');
        expect(f.size).toBe(node.content.length);
        if (f.payloadRef === undefined) {
          expect(Buffer.from(f.content!).equals(node.content)).toBe(true);
        } else {
          refs.push({ offset: f.payloadRef, reused: enc.reused.has(child.path) });
          const at = f.payloadRef;
          expect(enc.payload.readBigUInt64LE(at)).toBe(PXAR.PAYLOAD);
          expect(Number(enc.payload.readBigUInt64LE(at + 8))).toBe(16 + f.size);
          expect(enc.payload.subarray(at + 16, at + 16 + f.size).equals(node.content)).toBe(true);
        }
        break;
      }
      case 'symlink':
        expect(child.node).toEqual({ kind: 'symlink', target: node.target });
        break;
      case 'device':
        expect(child.node).toEqual({ kind: 'device', major: node.major, minor: node.minor });
        break;
      case 'fifo':
      case 'socket':
        expect(child.node).toEqual({ kind: node.kind });
        break;
    }
  });
}

describe('properties', () => {
  it('v1: random trees parse back, with exact sizes, goodbye tables and attribute order', async () => {
    await fc.assert(
      fc.asyncProperty(
        metaArb(S_IFDIR),
        treeArb.dir,
        fc.boolean(),
        async (rootMeta, tree, async) => {
          const root = tree as ModelNode & { kind: 'dir' };
          const enc = await encodeModel(rootMeta, root, false, async);
          expect(enc.payload.length).toBe(0);
          const parsed = parseArchive(enc.archive);
          expect(parsed.version).toBe(1);
          expect(parsed.rootMetadata).toEqual(rootMeta);
          checkAgainstModel(parsed.root, root, enc, []);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('v2: metadata archive and payload stream agree, new and reused files mixed', async () => {
    await fc.assert(
      fc.asyncProperty(
        metaArb(S_IFDIR),
        treeArb.dir,
        fc.boolean(),
        async (rootMeta, tree, async) => {
          const root = tree as ModelNode & { kind: 'dir' };
          const enc = await encodeModel(rootMeta, root, true, async);
          const parsed = parseArchive(enc.archive, (p) => enc.reused.has(p));
          expect(parsed.version).toBe(2);
          expect(parsed.prelude).toBeUndefined();
          expect(parsed.rootMetadata).toEqual(rootMeta);
          const refs: { offset: number; reused: boolean }[] = [];
          checkAgainstModel(parsed.root, root, enc, refs);
          // Payload stream framing (§9.2) and strictly increasing references.
          expect(enc.payload.readBigUInt64LE(0)).toBe(PXAR.PAYLOAD_START_MARKER);
          expect(enc.payload.readBigUInt64LE(8)).toBe(16n);
          const tail = enc.payload.length - 16;
          expect(enc.payload.readBigUInt64LE(tail)).toBe(PXAR.PAYLOAD_TAIL_MARKER);
          expect(enc.payload.readBigUInt64LE(tail + 8)).toBe(16n);
          for (let k = 1; k < refs.length; k++)
            expect(refs[k]!.offset).toBeGreaterThan(refs[k - 1]!.offset);
          // Suggested boundaries: exactly the new-content files' PAYLOAD headers.
          expect(enc.reportedHeaders).toEqual(refs.filter((r) => !r.reused).map((r) => r.offset));
        },
      ),
      { numRuns: 100 },
    );
  });

  it('the generated trees covered every kind of entry, nesting, hardlinks and reuse', () => {
    expect([...coverage.kinds].sort()).toEqual(
      ['device', 'dir', 'fifo', 'file', 'hardlink', 'socket', 'symlink'].sort(),
    );
    expect(coverage.maxDepth).toBeGreaterThanOrEqual(3);
    expect(coverage.links).toBeGreaterThan(5);
    expect(coverage.reused).toBeGreaterThan(5);
  });

  it('v2 with a prelude: the root tail still counts back to offset 0', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 64 }), treeArb.dir, async (prelude, tree) => {
        const out = new Collect();
        const encoder = await PxarEncoder.begin(DIR, {
          output: out,
          payloadOutput: new Collect(),
          prelude,
        });
        const root = tree as ModelNode & { kind: 'dir' };
        for (const [name] of root.children) await encoder.addSocket(name, meta(S_IFSOCK | 0o777));
        await encoder.finish();
        const parsed = parseArchive(out.bytes());
        expect(parsed.prelude).toEqual(prelude);
      }),
      { numRuns: 50 },
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('errors', () => {
  const v1 = (): Promise<PxarEncoder> => PxarEncoder.begin(DIR, { output: new Collect() });
  const v2 = (): Promise<PxarEncoder> =>
    PxarEncoder.begin(DIR, { output: new Collect(), payloadOutput: new Collect() });

  it('begin: the root must be a directory; a prelude needs a split archive', async () => {
    expect(await rejectionCodeOf(PxarEncoder.begin(FILE, { output: new Collect() }))).toBe(
      'PXAR_ENCODER_STATE',
    );
    expect(
      await rejectionCodeOf(
        PxarEncoder.begin(DIR, { output: new Collect(), prelude: new Uint8Array(0) }),
      ),
    ).toBe('PXAR_ENCODER_STATE');
    expect(
      await rejectionCodeOf(
        PxarEncoder.begin(DIR, { output: {} as unknown as EncoderOptions['output'] }),
      ),
    ).toBe('INVALID_ARGUMENT');
  });

  it('the mode must match the kind of entry added', async () => {
    const e = await v1();
    const code = (p: Promise<unknown>): Promise<string | undefined> => rejectionCodeOf(p);
    expect(await code(e.addFile(b('x'), DIR, 0, []))).toBe('PXAR_ENCODER_STATE');
    expect(await code(e.enterDirectory(b('x'), FILE))).toBe('PXAR_ENCODER_STATE');
    expect(await code(e.addSymlink(b('x'), FILE, b('t')))).toBe('PXAR_ENCODER_STATE');
    expect(await code(e.addDevice(b('x'), meta(S_IFIFO), 1, 2))).toBe('PXAR_ENCODER_STATE');
    expect(await code(e.addFifo(b('x'), meta(S_IFSOCK)))).toBe('PXAR_ENCODER_STATE');
    expect(await code(e.addSocket(b('x'), meta(S_IFIFO)))).toBe('PXAR_ENCODER_STATE');
    // Nothing was written, so the encoder is still usable.
    await e.addFifo(b('x'), meta(S_IFIFO));
    await e.finish();
  });

  it('duplicate names in one directory, for every kind of entry', async () => {
    const e = await v1();
    const start = await e.addFile(b('a'), FILE, 0, []);
    const dup = (p: Promise<unknown>): Promise<string | undefined> => rejectionCodeOf(p);
    expect(await dup(e.addFile(b('a'), FILE, 0, []))).toBe('PXAR_ENCODER_STATE');
    expect(await dup(e.enterDirectory(b('a'), DIR))).toBe('PXAR_ENCODER_STATE');
    expect(await dup(e.addSymlink(b('a'), meta(S_IFLNK), b('t')))).toBe('PXAR_ENCODER_STATE');
    expect(await dup(e.addDevice(b('a'), meta(S_IFCHR), 1, 3))).toBe('PXAR_ENCODER_STATE');
    expect(await dup(e.addFifo(b('a'), meta(S_IFIFO)))).toBe('PXAR_ENCODER_STATE');
    expect(await dup(e.addSocket(b('a'), meta(S_IFSOCK)))).toBe('PXAR_ENCODER_STATE');
    expect(await dup(e.addHardlink(b('a'), b('a'), start))).toBe('PXAR_ENCODER_STATE');
    await e.enterDirectory(b('d'), DIR);
    expect(await dup(e.enterDirectory(b('d'), DIR))).toBe(undefined); // another directory level
    await e.leaveDirectory();
    await e.leaveDirectory();
    expect(await dup(e.addFifo(b('d'), meta(S_IFIFO)))).toBe('PXAR_ENCODER_STATE');
    // Same bytes, not same text: names differing only in non-UTF-8 bytes are distinct.
    await e.addFifo(Uint8Array.of(0xff), meta(S_IFIFO));
    await e.addFifo(Uint8Array.of(0xfe), meta(S_IFIFO));
    await e.finish();
  });

  it('file content longer or shorter than declared; the encoder then refuses to continue', async () => {
    let e = await v1();
    expect(await rejectionCodeOf(e.addFile(b('x'), FILE, 2, [b('abc')]))).toBe(
      'PXAR_ENCODER_STATE',
    );
    expect(await rejectionCodeOf(e.addFifo(b('y'), meta(S_IFIFO)))).toBe('PXAR_ENCODER_STATE');
    expect(await rejectionCodeOf(e.finish())).toBe('PXAR_ENCODER_STATE');
    e = await v2();
    expect(await rejectionCodeOf(e.addFile(b('x'), FILE, 4, [b('abc')]))).toBe(
      'PXAR_ENCODER_STATE',
    );
    expect(codeOf(() => e.advancePayloadPosition(1))).toBe('PXAR_ENCODER_STATE');
  });

  it('v2-only calls on a v1 encoder', async () => {
    const e = await v1();
    expect(await rejectionCodeOf(e.addPayloadRef(b('x'), FILE, 0, 16))).toBe('PXAR_ENCODER_STATE');
    expect(codeOf(() => e.advancePayloadPosition(10))).toBe('PXAR_ENCODER_STATE');
    await e.finish();
  });

  it('payload references must rise strictly and stay out of payload this encoder wrote', async () => {
    const e = await v2();
    // Inside the START marker.
    expect(await rejectionCodeOf(e.addPayloadRef(b('x'), FILE, 0, 15))).toBe('PXAR_ENCODER_STATE');
    await e.addFile(b('new'), FILE, 4, [b('data')]); // payload [16, 36)
    expect(await rejectionCodeOf(e.addPayloadRef(b('x'), FILE, 0, 20))).toBe('PXAR_ENCODER_STATE');
    e.advancePayloadPosition(100); // [36, 136) injected by the caller
    await e.addPayloadRef(b('r1'), FILE, 10, 40); // [40, 66)
    // Overlapping or going back.
    expect(await rejectionCodeOf(e.addPayloadRef(b('x'), FILE, 0, 40))).toBe('PXAR_ENCODER_STATE');
    expect(await rejectionCodeOf(e.addPayloadRef(b('x'), FILE, 0, 65))).toBe('PXAR_ENCODER_STATE');
    await e.addPayloadRef(b('r2'), FILE, 0, 66);
    // A reference past the accounted range (the caller injects after adding it) is allowed ...
    await e.addPayloadRef(b('r3'), FILE, 50, 136); // [136, 202)
    // ... but new content cannot be written while it is not accounted for, nor the archive finished.
    expect(await rejectionCodeOf(e.addFile(b('x'), FILE, 0, []))).toBe('PXAR_ENCODER_STATE');
    expect(await rejectionCodeOf(e.finish())).toBe('PXAR_ENCODER_STATE');
    e.advancePayloadPosition(66);
    await e.addFile(b('after'), FILE, 1, [b('!')]);
    await e.finish();
    expect(e.payloadPosition()).toBe(202 + 17 + 16);
  });

  it('invalid numbers are INVALID_ARGUMENT', async () => {
    const e = await v2();
    expect(await rejectionCodeOf(e.addPayloadRef(b('x'), FILE, -1, 16))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(e.addPayloadRef(b('x'), FILE, 1, 1.5))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(e.addFile(b('x'), FILE, Number.NaN, []))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => e.advancePayloadPosition(-1))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(e.addDevice(b('x'), meta(S_IFBLK), -1, 0))).toBe(
      'INVALID_ARGUMENT',
    );
    const badStat = (patch: object): Metadata => ({ ...FILE, stat: { ...FILE.stat, ...patch } });
    for (const patch of [
      { uid: 2 ** 32 },
      { gid: -1 },
      { flags: 0.5 },
      { mtime: { secs: 0, nanos: 1e9 } },
      { mtime: { secs: 2 ** 60, nanos: 0 } },
    ])
      expect(await rejectionCodeOf(e.addFile(b('x'), badStat(patch), 0, []))).toBe(
        'INVALID_ARGUMENT',
      );
    const withXattr = (name: Uint8Array, value: Uint8Array): Metadata => ({
      ...FILE,
      xattrs: [{ name, value }],
    });
    expect(
      await rejectionCodeOf(e.addFile(b('x'), withXattr(new Uint8Array(0), b('v')), 0, [])),
    ).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(e.addFile(b('x'), withXattr(b('a\0b'), b('v')), 0, []))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(
      await rejectionCodeOf(
        e.addFile(b('x'), withXattr(new Uint8Array(255).fill(0x61), new Uint8Array(65536)), 0, []),
      ),
    ).toBe('INVALID_ARGUMENT');
    expect(
      await rejectionCodeOf(
        e.addFile(
          b('x'),
          { ...FILE, acl: { ...EMPTY_ACL, users: [{ id: -1, permissions: 7 }] } },
          0,
          [],
        ),
      ),
    ).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(e.addFile(b('x'), { ...FILE, quotaProjectId: -3 }, 0, []))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(await rejectionCodeOf(e.addFile(b('x'), FILE, 1, [[1] as unknown as Uint8Array]))).toBe(
      'INVALID_ARGUMENT',
    );
  });

  it('bad names, link targets and hardlink paths are PXAR_BAD_NAME', async () => {
    const e = await v1();
    for (const name of [
      b(''),
      b('.'),
      b('..'),
      b('a/b'),
      b('a\0'),
      new Uint8Array(4097).fill(0x61),
    ])
      expect(await rejectionCodeOf(e.addFifo(name, meta(S_IFIFO)))).toBe('PXAR_BAD_NAME');
    for (const target of [b(''), b('a\0b'), new Uint8Array(4097).fill(0x61)])
      expect(await rejectionCodeOf(e.addSymlink(b('l'), meta(S_IFLNK), target))).toBe(
        'PXAR_BAD_NAME',
      );
    const start = await e.addFile(b('f'), FILE, 0, []);
    for (const path of [b(''), b('/f'), b('f/'), b('a//f'), b('./f'), b('d/../f'), b('f\0')])
      expect(await rejectionCodeOf(e.addHardlink(b('h'), path, start))).toBe('PXAR_BAD_NAME');
    await e.addSymlink(b('l'), meta(S_IFLNK), new Uint8Array(4096).fill(0x61));
    await e.addHardlink(b('h'), b('f'), start);
    await e.finish();
  });

  it('hardlinks must point backwards at an entry, not at the root metadata or ahead', async () => {
    const e = await v1();
    const start = await e.addFile(b('f'), FILE, 0, []);
    expect(start).toBe(56);
    expect(await rejectionCodeOf(e.addHardlink(b('h'), b('f'), 0))).toBe('PXAR_ENCODER_STATE');
    expect(await rejectionCodeOf(e.addHardlink(b('h'), b('f'), 55))).toBe('PXAR_ENCODER_STATE');
    expect(await rejectionCodeOf(e.addHardlink(b('h'), b('f'), e.position()))).toBe(
      'PXAR_ENCODER_STATE',
    );
    expect(await rejectionCodeOf(e.addHardlink(b('h'), b('f'), -1))).toBe('PXAR_ENCODER_STATE');
    const link = await e.addHardlink(b('h'), b('f'), start);
    expect(link).toBe(e.position() - (16 + 2) - (16 + 8 + 2));
    await e.finish();
  });

  it('unbalanced directories', async () => {
    const e = await v1();
    expect(await rejectionCodeOf(e.leaveDirectory())).toBe('PXAR_ENCODER_STATE');
    await e.enterDirectory(b('d'), DIR);
    await e.enterDirectory(b('e'), DIR);
    expect(await rejectionCodeOf(e.finish())).toBe('PXAR_ENCODER_STATE');
    await e.leaveDirectory();
    expect(await rejectionCodeOf(e.finish())).toBe('PXAR_ENCODER_STATE');
    await e.leaveDirectory();
    expect(await rejectionCodeOf(e.leaveDirectory())).toBe('PXAR_ENCODER_STATE');
    await e.finish();
  });

  it('every call after finish', async () => {
    const e = await v2();
    await e.finish();
    const calls: (() => Promise<unknown>)[] = [
      () => e.addFile(b('x'), FILE, 0, []),
      () => e.addPayloadRef(b('x'), FILE, 0, 100),
      () => e.addSymlink(b('x'), meta(S_IFLNK), b('t')),
      () => e.addDevice(b('x'), meta(S_IFBLK), 1, 1),
      () => e.addFifo(b('x'), meta(S_IFIFO)),
      () => e.addSocket(b('x'), meta(S_IFSOCK)),
      () => e.addHardlink(b('x'), b('t'), 56),
      () => e.enterDirectory(b('x'), DIR),
      () => e.leaveDirectory(),
      () => e.finish(),
    ];
    for (const call of calls) expect(await rejectionCodeOf(call())).toBe('PXAR_ENCODER_STATE');
    expect(codeOf(() => e.advancePayloadPosition(1))).toBe('PXAR_ENCODER_STATE');
  });

  it('overlapping calls (a call before the previous one settled)', async () => {
    const e = await v2();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    async function* slow(): AsyncGenerator<Uint8Array> {
      await gate;
      yield b('x');
    }
    const pending = e.addFile(b('slow'), FILE, 1, slow());
    expect(await rejectionCodeOf(e.addFifo(b('y'), meta(S_IFIFO)))).toBe('PXAR_ENCODER_STATE');
    expect(codeOf(() => e.advancePayloadPosition(1))).toBe('PXAR_ENCODER_STATE');
    release();
    await pending;
    await e.finish();
  });

  it('sink and content failures become IO_ERROR, and the encoder refuses to continue', async () => {
    let fail = false;
    const output = {
      write: (): Promise<void> =>
        fail ? Promise.reject(new Error('disk full')) : Promise.resolve(),
    };
    const e = await PxarEncoder.begin(DIR, { output });
    fail = true;
    // The archive buffer only reaches the sink when it fills or at finish.
    await e.addFifo(b('a'), meta(S_IFIFO));
    expect(await rejectionCodeOf(e.finish())).toBe('IO_ERROR');
    expect(await rejectionCodeOf(e.addFifo(b('b'), meta(S_IFIFO)))).toBe('PXAR_ENCODER_STATE');

    const e2 = await v1();
    async function* broken(): AsyncGenerator<Uint8Array> {
      yield b('');
      await Promise.resolve();
      throw new Error('EIO');
    }
    expect(await rejectionCodeOf(e2.addFile(b('x'), FILE, 1, broken()))).toBe('IO_ERROR');
    expect(await rejectionCodeOf(e2.finish())).toBe('PXAR_ENCODER_STATE');

    const e3 = await PxarEncoder.begin(DIR, {
      output: new Collect(),
      payloadOutput: { write: () => Promise.reject(new Error('gone')) },
    }).catch((error: unknown) => error);
    expect((e3 as { code?: string }).code).toBe('IO_ERROR');
  });
});
