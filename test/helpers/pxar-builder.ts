/**
 * A small, independent pxar writer for decoder tests: builds archive bytes straight from
 * pxar-format.md (§2–§9) so tests do not depend on src/pxar/encoder.ts, and exposes the item-level
 * helpers that hand-built corrupt archives need. It writes exactly what the spec says and nothing
 * clever; tests that need broken bytes build or patch them with these helpers.
 */
import { PXAR, goodbyeTreeOrder, pxarHash } from '../../src/pxar/format.js';

const enc = new TextEncoder();

export function bytesOf(s: string | Uint8Array): Uint8Array {
  return typeof s === 'string' ? enc.encode(s) : s;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function u64(value: number | bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(value)), true);
  return out;
}

export function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0, true);
  return out;
}

export function i64(value: number | bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, BigInt(value), true);
  return out;
}

/** An item: type, full_size = 16 + content length, content. */
export function item(type: bigint, content: Uint8Array = new Uint8Array(0)): Uint8Array {
  return concat([u64(type), u64(16 + content.length), content]);
}

/** An item header with an arbitrary full_size (for lying headers). */
export function header(type: bigint, fullSize: number | bigint): Uint8Array {
  return concat([u64(type), u64(fullSize)]);
}

export function nul(s: string | Uint8Array): Uint8Array {
  return concat([bytesOf(s), new Uint8Array([0])]);
}

export interface StatSpec {
  mode: number;
  flags?: number;
  uid?: number;
  gid?: number;
  secs?: number;
  nanos?: number;
}

/** ENTRY (v2 stat, 40 bytes content). */
export function entryItem(s: StatSpec): Uint8Array {
  return item(
    PXAR.ENTRY,
    concat([
      u64(s.mode),
      u64(s.flags ?? 0),
      u32(s.uid ?? 0),
      u32(s.gid ?? 0),
      i64(s.secs ?? 0),
      u32(s.nanos ?? 0),
      u32(0),
    ]),
  );
}

/** Legacy ENTRY_V1 with a nanosecond mtime. */
export function entryV1Item(s: {
  mode: number;
  flags?: number;
  uid?: number;
  gid?: number;
  ns: bigint;
}): Uint8Array {
  return item(
    PXAR.ENTRY_V1,
    concat([u64(s.mode), u64(s.flags ?? 0), u32(s.uid ?? 0), u32(s.gid ?? 0), u64(s.ns)]),
  );
}

export const filenameItem = (name: string | Uint8Array): Uint8Array =>
  item(PXAR.FILENAME, nul(name));
export const symlinkItem = (target: string | Uint8Array): Uint8Array =>
  item(PXAR.SYMLINK, nul(target));
export const payloadItem = (data: Uint8Array): Uint8Array => item(PXAR.PAYLOAD, data);
export const payloadRefItem = (offset: number, size: number): Uint8Array =>
  item(PXAR.PAYLOAD_REF, concat([u64(offset), u64(size)]));
export const deviceItem = (major: number, minor: number): Uint8Array =>
  item(PXAR.DEVICE, concat([u64(major), u64(minor)]));
export const hardlinkItem = (offset: number | bigint, target: string | Uint8Array): Uint8Array =>
  item(PXAR.HARDLINK, concat([u64(offset), nul(target)]));
export const xattrItem = (name: string | Uint8Array, value: string | Uint8Array): Uint8Array =>
  item(PXAR.XATTR, concat([nul(name), bytesOf(value)]));
export const versionItem = (v: number): Uint8Array => item(PXAR.FORMAT_VERSION, u64(v));

export interface GoodbyeChild {
  name: Uint8Array;
  /** Absolute FILENAME position. */
  start: number;
  size: number;
}

/** A GOODBYE item at `goodbyeStart` for the given children, in §7.3 tree order, with its tail. */
export function goodbyeItem(
  goodbyeStart: number,
  entryStart: number,
  children: readonly GoodbyeChild[],
): Uint8Array {
  const sorted = children
    .map((c) => ({ hash: pxarHash(c.name), offset: goodbyeStart - c.start, size: c.size }))
    .sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  const order = goodbyeTreeOrder(sorted.length);
  const fullSize = 16 + 24 * (sorted.length + 1);
  const parts = [header(PXAR.GOODBYE, fullSize)];
  for (const slot of order) {
    const c = sorted[slot]!;
    parts.push(u64(c.hash), u64(c.offset), u64(c.size));
  }
  parts.push(u64(PXAR.GOODBYE_TAIL_MARKER), u64(goodbyeStart - entryStart), u64(fullSize));
  return concat(parts);
}

// ---------------------------------------------------------------------------------------------
// Tree builder

export interface AttrSpec {
  xattrs?: [string | Uint8Array, string | Uint8Array][];
  aclUsers?: [number, number][];
  aclGroups?: [number, number][];
  aclGroupObj?: number;
  /** user_obj, group_obj, other, mask; undefined = NO_MASK. */
  aclDefault?: [number | undefined, number | undefined, number | undefined, number | undefined];
  aclDefaultUsers?: [number, number][];
  aclDefaultGroups?: [number, number][];
  fcaps?: Uint8Array;
  projid?: number;
}

export type TreeNode =
  | ({ kind: 'dir'; name: string | Uint8Array; stat?: StatSpec; children: TreeNode[] } & AttrSpec)
  | ({ kind: 'file'; name: string | Uint8Array; stat?: StatSpec; data: Uint8Array } & AttrSpec)
  | ({ kind: 'symlink'; name: string | Uint8Array; stat?: StatSpec; target: string } & AttrSpec)
  | ({
      kind: 'device';
      name: string | Uint8Array;
      stat: StatSpec;
      major: number;
      minor: number;
    } & AttrSpec)
  | ({ kind: 'fifo' | 'socket'; name: string | Uint8Array; stat?: StatSpec } & AttrSpec)
  | { kind: 'hardlink'; name: string | Uint8Array; target: string };

export interface BuildOptions {
  version?: 1 | 2;
  prelude?: Uint8Array;
  rootStat?: StatSpec;
  rootAttrs?: AttrSpec;
  /** v2: goodbye size of files includes the file size (PBS "new content" path, §7.4). Default true. */
  v2SizeQuirk?: boolean;
}

export interface Built {
  archive: Uint8Array;
  /** v2 only: START marker, PAYLOAD items, TAIL marker. */
  payload?: Uint8Array;
  /** FILENAME position of every entry by path. */
  positions: Map<string, number>;
}

const NO_MASK = 0xffffffffffffffffn;

function attrItems(a: AttrSpec): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const [n, v] of a.xattrs ?? []) out.push(xattrItem(n, v));
  for (const [id, p] of a.aclUsers ?? []) out.push(item(PXAR.ACL_USER, concat([u64(id), u64(p)])));
  for (const [id, p] of a.aclGroups ?? [])
    out.push(item(PXAR.ACL_GROUP, concat([u64(id), u64(p)])));
  if (a.aclGroupObj !== undefined) out.push(item(PXAR.ACL_GROUP_OBJ, u64(a.aclGroupObj)));
  if (a.aclDefault !== undefined)
    out.push(item(PXAR.ACL_DEFAULT, concat(a.aclDefault.map((v) => u64(v ?? NO_MASK)))));
  for (const [id, p] of a.aclDefaultUsers ?? [])
    out.push(item(PXAR.ACL_DEFAULT_USER, concat([u64(id), u64(p)])));
  for (const [id, p] of a.aclDefaultGroups ?? [])
    out.push(item(PXAR.ACL_DEFAULT_GROUP, concat([u64(id), u64(p)])));
  if (a.fcaps !== undefined) out.push(item(PXAR.FCAPS, a.fcaps));
  if (a.projid !== undefined) out.push(item(PXAR.QUOTA_PROJID, u64(a.projid)));
  return out;
}

const DEFAULT_MODES = {
  dir: 0o40755,
  file: 0o100644,
  symlink: 0o120777,
  fifo: 0o10644,
  socket: 0o140755,
} as const;

/** Encodes a tree (children in the given order) per the spec. Recursion is fine at test depths. */
export function buildArchive(children: TreeNode[], options: BuildOptions = {}): Built {
  const version = options.version ?? 1;
  const quirk = options.v2SizeQuirk ?? true;
  const parts: Uint8Array[] = [];
  const payloadParts: Uint8Array[] = [];
  let pos = 0;
  let payloadPos = 0;
  const positions = new Map<string, number>();
  const put = (b: Uint8Array): void => {
    parts.push(b);
    pos += b.length;
  };
  if (version === 2) {
    put(versionItem(2));
    if (options.prelude !== undefined) put(item(PXAR.PRELUDE, options.prelude));
    const start = header(PXAR.PAYLOAD_START_MARKER, 16);
    payloadParts.push(start);
    payloadPos += 16;
  }

  const writeDir = (
    path: string,
    entryStart: number,
    stat: StatSpec,
    attrs: AttrSpec,
    kids: TreeNode[],
    tailEntryStart: number,
  ): void => {
    void entryStart;
    put(entryItem(stat));
    for (const a of attrItems(attrs)) put(a);
    const records: GoodbyeChild[] = [];
    for (const child of kids) {
      const start = pos;
      const name = bytesOf(child.name);
      const childPath =
        path === '' ? new TextDecoder().decode(name) : `${path}/${new TextDecoder().decode(name)}`;
      positions.set(childPath, start);
      put(filenameItem(name));
      let extra = 0;
      switch (child.kind) {
        case 'hardlink': {
          const target = positions.get(child.target);
          if (target === undefined)
            throw new Error(`builder: hardlink target ${child.target} not written yet`);
          put(hardlinkItem(start - target, child.target));
          break;
        }
        case 'dir': {
          const entryPos = pos;
          writeDir(
            childPath,
            entryPos,
            child.stat ?? { mode: DEFAULT_MODES.dir },
            child,
            child.children,
            entryPos,
          );
          break;
        }
        case 'file':
          put(entryItem(child.stat ?? { mode: DEFAULT_MODES.file }));
          for (const a of attrItems(child)) put(a);
          if (version === 1) put(payloadItem(child.data));
          else {
            put(payloadRefItem(payloadPos, child.data.length));
            const p = payloadItem(child.data);
            payloadParts.push(p);
            payloadPos += p.length;
            if (quirk) extra = child.data.length;
          }
          break;
        case 'symlink':
          put(entryItem(child.stat ?? { mode: DEFAULT_MODES.symlink }));
          for (const a of attrItems(child)) put(a);
          put(symlinkItem(child.target));
          break;
        case 'device':
          put(entryItem(child.stat));
          for (const a of attrItems(child)) put(a);
          put(deviceItem(child.major, child.minor));
          break;
        case 'fifo':
        case 'socket':
          put(entryItem(child.stat ?? { mode: DEFAULT_MODES[child.kind] }));
          for (const a of attrItems(child)) put(a);
          break;
      }
      records.push({ name, start, size: pos - start + extra });
    }
    put(goodbyeItem(pos, tailEntryStart, records));
  };

  writeDir(
    '',
    pos,
    options.rootStat ?? { mode: DEFAULT_MODES.dir },
    options.rootAttrs ?? {},
    children,
    0,
  );
  if (version === 2) payloadParts.push(header(PXAR.PAYLOAD_TAIL_MARKER, 16));
  return {
    archive: concat(parts),
    ...(version === 2 ? { payload: concat(payloadParts) } : {}),
    positions,
  };
}

/** Feeds bytes to a decoder in pieces of `size` bytes (or cycling through `sizes`). */
// An async source without real I/O: nothing to await.
// eslint-disable-next-line @typescript-eslint/require-await
export async function* pieces(
  bytes: Uint8Array,
  sizes: number | readonly number[] = 65536,
): AsyncGenerator<Uint8Array> {
  const list = typeof sizes === 'number' ? [sizes] : sizes;
  let i = 0;
  for (let at = 0; at < bytes.length;) {
    const n = Math.max(1, list[i++ % list.length]!);
    yield bytes.subarray(at, at + n);
    at += n;
  }
}
