/**
 * Encoder → decoder/accessor round trip over generated trees (every entry kind, every metadata
 * item, non-UTF-8 names, negative times, empty and multi-MiB files, hardlinks), for v1 and v2.
 * The expected side is the generated tree itself, never anything the decoder computed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PxarEncoder } from './encoder.js';
import {
  PXAR_FLAGS,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
  type Acl,
  type Entry,
  type Metadata,
  type Xattr,
} from './format.js';
import { bytesRandomAccess } from './random-access.js';
import { concat } from '../../test/helpers/pxar-builder.js';
import { decodeAll, pathText, walkAccessor } from '../../test/helpers/pxar-walk.js';

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The generated model

type Node =
  | { kind: 'dir'; name: Uint8Array; meta: Metadata; children: Node[] }
  | { kind: 'file'; name: Uint8Array; meta: Metadata; size: number; seed: number }
  | { kind: 'symlink'; name: Uint8Array; meta: Metadata; target: Uint8Array }
  | { kind: 'device'; name: Uint8Array; meta: Metadata; major: number; minor: number }
  | { kind: 'fifo' | 'socket'; name: Uint8Array; meta: Metadata }
  | { kind: 'hardlink'; name: Uint8Array; pick: number };

/** Deterministic file content from a seed (xorshift32), so large files need not live in the model. */
function contentOf(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  const words = new Uint32Array(out.buffer, 0, Math.floor(size / 4));
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < size; i++) out[i] = (seed + i) & 0xff;
  return out;
}

function* piecesOf(data: Uint8Array, piece = 256 * 1024): Generator<Uint8Array> {
  for (let at = 0; at < data.length; at += piece) yield data.subarray(at, at + piece);
}

// Any bytes but NUL and '/', not '.' or '..': many names are not UTF-8.
const nameArb = fc
  .uint8Array({ minLength: 1, maxLength: 12 })
  .map((b) => b.map((x) => (x === 0 || x === 0x2f ? 0x41 : x)))
  .filter((b) => !(b.length <= 2 && b.every((x) => x === 0x2e)));

const nameKey = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

const aclEntryArb = fc.record({ id: fc.nat({ max: 0xffffffff }), permissions: fc.nat({ max: 7 }) });

const aclArb: fc.Arbitrary<Acl> = fc.record(
  {
    users: fc.array(aclEntryArb, { maxLength: 3 }),
    groups: fc.array(aclEntryArb, { maxLength: 3 }),
    groupObj: fc.nat({ max: 7 }),
    default: fc.record(
      {
        userObj: fc.nat({ max: 7 }),
        groupObj: fc.nat({ max: 7 }),
        other: fc.nat({ max: 7 }),
        mask: fc.nat({ max: 7 }),
      },
      { requiredKeys: [] },
    ),
    defaultUsers: fc.array(aclEntryArb, { maxLength: 2 }),
    defaultGroups: fc.array(aclEntryArb, { maxLength: 2 }),
  },
  { requiredKeys: ['users', 'groups', 'defaultUsers', 'defaultGroups'] },
);

const xattrArb: fc.Arbitrary<Xattr> = fc.record({
  name: fc
    .uint8Array({ minLength: 1, maxLength: 20 })
    .map((b) => concat([new TextEncoder().encode('user.'), b.map((x) => (x === 0 ? 1 : x))])),
  value: fc.uint8Array({ maxLength: 48 }),
});

const flagsArb = fc
  .subarray(Object.values(PXAR_FLAGS))
  .map((bits) => bits.reduce((a, b) => a | b, 0));

const metaArb = (type: number | fc.Arbitrary<number>): fc.Arbitrary<Metadata> =>
  fc.record(
    {
      stat: fc.record({
        mode: fc
          .tuple(typeof type === 'number' ? fc.constant(type) : type, fc.nat({ max: 0o7777 }))
          .map(([t, perm]) => t | perm),
        flags: flagsArb,
        uid: fc.nat({ max: 0xffffffff }),
        gid: fc.nat({ max: 0xffffffff }),
        mtime: fc.record({
          secs: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
          nanos: fc.nat({ max: 999_999_999 }),
        }),
      }),
      xattrs: fc.uniqueArray(xattrArb, { maxLength: 3, selector: (x) => nameKey(x.name) }),
      acl: aclArb,
      fcaps: fc.uint8Array({ minLength: 1, maxLength: 24 }),
      quotaProjectId: fc.nat({ max: 0xffffffff }),
    },
    { requiredKeys: ['stat', 'xattrs', 'acl'] },
  );

const sizeArb = fc.oneof(
  { weight: 12, arbitrary: fc.nat({ max: 300 }) },
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 1, arbitrary: fc.integer({ min: MiB, max: 3 * MiB }) },
);

const leafArb: fc.Arbitrary<Node> = fc.oneof(
  fc.record({
    kind: fc.constant('file' as const),
    name: nameArb,
    meta: metaArb(S_IFREG),
    size: sizeArb,
    seed: fc.nat(),
  }),
  fc.record({
    kind: fc.constant('symlink' as const),
    name: nameArb,
    meta: metaArb(S_IFLNK),
    target: fc
      .uint8Array({ minLength: 1, maxLength: 40 })
      .map((b) => b.map((x) => (x === 0 ? 0x2e : x))),
  }),
  fc.record({
    kind: fc.constant('device' as const),
    name: nameArb,
    meta: metaArb(fc.constantFrom(S_IFBLK, S_IFCHR)),
    major: fc.nat({ max: 0xffffffff }),
    minor: fc.nat({ max: 0xffffffff }),
  }),
  fc.record({ kind: fc.constant('fifo' as const), name: nameArb, meta: metaArb(S_IFIFO) }),
  fc.record({ kind: fc.constant('socket' as const), name: nameArb, meta: metaArb(S_IFSOCK) }),
  fc.record({ kind: fc.constant('hardlink' as const), name: nameArb, pick: fc.nat() }),
);

const treeArb = fc.letrec<{ node: Node; dir: Node }>((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, leafArb, leafArb, tie('dir')),
  dir: fc.record({
    kind: fc.constant('dir' as const),
    name: nameArb,
    meta: metaArb(S_IFDIR),
    children: fc.uniqueArray(tie('node'), { maxLength: 5, selector: (n) => nameKey(n.name) }),
  }),
}));

const rootArb = fc.record({
  meta: metaArb(S_IFDIR),
  children: fc.uniqueArray(treeArb.node, { maxLength: 6, selector: (n) => nameKey(n.name) }),
});

// ---------------------------------------------------------------------------------------------
// Encoding the model and describing what must come back

interface Expected {
  path: string;
  kind: string;
  metadata?: Metadata;
  /** Kind-specific fields in a comparable form. */
  detail: unknown;
  content?: Uint8Array;
  /** Hardlinks: the target's path. */
  linkTarget?: string;
}

interface Encoded {
  archive: Uint8Array;
  payload?: Uint8Array;
  expected: Expected[];
  events: string[];
}

const joinText = (parent: string, name: Uint8Array): string =>
  parent === '' ? nameKey(name) : `${parent}/${nameKey(name)}`;
const latin1 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

async function encode(
  root: { meta: Metadata; children: Node[] },
  version: 1 | 2,
): Promise<Encoded> {
  const out: Uint8Array[] = [];
  const payloadOut: Uint8Array[] = [];
  const encoder = await PxarEncoder.begin(root.meta, {
    output: { write: (b) => void out.push(b.slice()) },
    ...(version === 2
      ? { payloadOutput: { write: (b: Uint8Array) => void payloadOut.push(b.slice()) } }
      : {}),
  });
  const expected: Expected[] = [{ path: '', kind: 'directory', metadata: root.meta, detail: null }];
  const events = ['entry:'];
  const files: { path: string; offset: number }[] = [];

  // Iterative walk: a stack of child lists, so the test itself has no recursion on the tree either.
  const stack: { path: string; children: Node[]; next: number }[] = [
    { path: '', children: root.children, next: 0 },
  ];
  while (stack.length > 0) {
    const top = stack.at(-1)!;
    const node = top.children[top.next++];
    if (node === undefined) {
      stack.pop();
      if (stack.length > 0) await encoder.leaveDirectory();
      events.push(`end:${top.path}`);
      continue;
    }
    const path = joinText(top.path, node.name);
    events.push(`entry:${path}`);
    switch (node.kind) {
      case 'dir':
        await encoder.enterDirectory(node.name, node.meta);
        expected.push({ path, kind: 'directory', metadata: node.meta, detail: null });
        stack.push({ path, children: node.children, next: 0 });
        break;
      case 'file': {
        const data = contentOf(node.size, node.seed);
        const offset = await encoder.addFile(node.name, node.meta, node.size, piecesOf(data));
        files.push({ path, offset });
        expected.push({
          path,
          kind: 'file',
          metadata: node.meta,
          detail: { size: node.size },
          content: data,
        });
        break;
      }
      case 'symlink':
        await encoder.addSymlink(node.name, node.meta, node.target);
        expected.push({ path, kind: 'symlink', metadata: node.meta, detail: nameKey(node.target) });
        break;
      case 'device':
        await encoder.addDevice(node.name, node.meta, node.major, node.minor);
        expected.push({
          path,
          kind: (node.meta.stat.mode & 0o170000) === S_IFBLK ? 'block-device' : 'char-device',
          metadata: node.meta,
          detail: { major: node.major, minor: node.minor },
        });
        break;
      case 'fifo':
        await encoder.addFifo(node.name, node.meta);
        expected.push({ path, kind: 'fifo', metadata: node.meta, detail: null });
        break;
      case 'socket':
        await encoder.addSocket(node.name, node.meta);
        expected.push({ path, kind: 'socket', metadata: node.meta, detail: null });
        break;
      case 'hardlink': {
        const target = files[node.pick % Math.max(1, files.length)];
        if (target === undefined) {
          // Nothing to link to yet: an empty FIFO stands in, keeping the name.
          const meta: Metadata = {
            stat: { mode: S_IFIFO, flags: 0, uid: 0, gid: 0, mtime: { secs: 0, nanos: 0 } },
            xattrs: [],
            acl: { users: [], groups: [], defaultUsers: [], defaultGroups: [] },
          };
          await encoder.addFifo(node.name, meta);
          expected.push({ path, kind: 'fifo', metadata: meta, detail: null });
        } else {
          await encoder.addHardlink(node.name, latin1(target.path), target.offset);
          expected.push({ path, kind: 'hardlink', detail: target.path, linkTarget: target.path });
        }
        break;
      }
    }
  }
  await encoder.finish();
  return {
    archive: concat(out),
    ...(version === 2 ? { payload: concat(payloadOut) } : {}),
    expected,
    events,
  };
}

function describeEntry(entry: Entry): Expected {
  const body = entry.body;
  const base = {
    path: pathText(entry.path),
    kind: body.kind,
    ...(entry.metadata === undefined ? {} : { metadata: entry.metadata }),
  };
  switch (body.kind) {
    case 'file':
      return { ...base, detail: { size: body.size } };
    case 'symlink':
      return { ...base, detail: nameKey(body.target) };
    case 'block-device':
    case 'char-device':
      return { ...base, detail: { major: body.major, minor: body.minor } };
    case 'hardlink':
      return { ...base, detail: pathText(body.target) };
    case 'directory':
    case 'fifo':
    case 'socket':
      return { ...base, detail: null };
  }
}

const withoutData = (e: Expected): Expected => {
  const { content: _c, linkTarget: _l, ...rest } = e;
  void _c;
  void _l;
  return rest;
};

async function roundTrip(
  root: { meta: Metadata; children: Node[] },
  version: 1 | 2,
  chunk: number[],
): Promise<void> {
  const encoded = await encode(root, version);
  const payload = encoded.payload === undefined ? undefined : bytesRandomAccess(encoded.payload);
  const options = payload === undefined ? {} : { payload };

  const decoded = await decodeAll(encoded.archive, { ...options, chunk });
  expect(decoded.version).toBe(version);
  expect(decoded.events).toEqual(encoded.events);
  expect(decoded.entries.map(describeEntry)).toEqual(encoded.expected.map(withoutData));
  const byOffset = new Map(decoded.entries.map((e) => [e.fileNameOffset, pathText(e.path)]));
  for (const [i, want] of encoded.expected.entries()) {
    const got = decoded.entries[i]!;
    if (want.content !== undefined)
      expect(Buffer.from(want.content).equals(decoded.contents.get(want.path)!)).toBe(true);
    if (want.linkTarget !== undefined && got.body.kind === 'hardlink')
      expect(byOffset.get(got.fileNameOffset - got.body.offset)).toBe(want.linkTarget);
  }

  const walked = await walkAccessor(encoded.archive, options);
  expect(walked.version).toBe(version);
  expect(walked.entries.map(describeEntry)).toEqual(encoded.expected.map(withoutData));
  for (const want of encoded.expected) {
    if (want.content !== undefined)
      expect(Buffer.from(want.content).equals(walked.contents.get(want.path)!)).toBe(true);
    if (want.linkTarget !== undefined) expect(walked.links.get(want.path)).toBe(want.linkTarget);
  }
}

describe('encoder → decoder / accessor round trip', () => {
  for (const version of [1, 2] as const) {
    it(`v${version}: generated trees come back entry for entry`, async () => {
      await fc.assert(
        fc.asyncProperty(
          rootArb,
          fc.array(fc.integer({ min: 1, max: 70000 }), { minLength: 1, maxLength: 4 }),
          (root, chunk) => roundTrip(root, version, chunk),
        ),
        { numRuns: 25 },
      );
    });

    it(`v${version}: empty and multi-MiB files, deep nesting and hardlinks into subdirectories`, async () => {
      const stat = (mode: number) => ({
        mode,
        flags: 0,
        uid: 1,
        gid: 2,
        mtime: { secs: -1, nanos: 999_999_999 },
      });
      const meta = (mode: number): Metadata => ({
        stat: stat(mode),
        xattrs: [],
        acl: { users: [], groups: [], defaultUsers: [], defaultGroups: [] },
      });
      const enc = new TextEncoder();
      let inner: Node = {
        kind: 'file',
        name: enc.encode('deep'),
        meta: meta(S_IFREG | 0o600),
        size: 5 * MiB + 3,
        seed: 7,
      };
      for (let i = 0; i < 30; i++)
        inner = {
          kind: 'dir',
          name: enc.encode(`d${i}`),
          meta: meta(S_IFDIR | 0o755),
          children: [inner],
        };
      const root = {
        meta: meta(S_IFDIR | 0o700),
        children: [
          inner,
          {
            kind: 'file' as const,
            name: enc.encode('empty'),
            meta: meta(S_IFREG | 0o644),
            size: 0,
            seed: 1,
          },
          { kind: 'hardlink' as const, name: enc.encode('link'), pick: 0 },
          { kind: 'hardlink' as const, name: enc.encode('link2'), pick: 1 },
        ],
      };
      await roundTrip(root, version, [65536, 1, 13]);
    });
  }
});
