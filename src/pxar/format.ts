/**
 * The pxar format's vocabulary (pxar-format.md §2–§8): the frozen item type constants, the
 * filename hash, the goodbye-table tree order, file-name rules and the metadata model that the
 * encoder writes and the decoder returns. Everything here is pure; the encoder, decoder, accessor,
 * archiver (disk → pxar) and extractor (pxar → disk) all speak in these terms.
 *
 * The type constants are SipHash-2-4 of fixed strings under the filename-hash key (§3); the test
 * recomputes every one, so this table is checked rather than trusted.
 */
import { BurrowError } from '../lib/errors.js';
import { nativePxarHash } from '../lib/native-fs.js';

/** pxar item types (§3). Frozen: a new item type gets a new constant, never an edit. */
export const PXAR = Object.freeze({
  FORMAT_VERSION: 0x730f6c75df16a40dn,
  ENTRY: 0xd5956474e588acefn,
  ENTRY_V1: 0x11da850a1c1cceffn,
  PRELUDE: 0xe309d79d9f7b771bn,
  FILENAME: 0x16701121063917b3n,
  SYMLINK: 0x27f971e7dbf5dc5fn,
  DEVICE: 0x9fc9e906586d5ce9n,
  XATTR: 0x0dab0229b57dcd03n,
  ACL_USER: 0x2ce8540a457d55b8n,
  ACL_GROUP: 0x136e3eceb04c03abn,
  ACL_GROUP_OBJ: 0x10868031e9582876n,
  ACL_DEFAULT: 0xbbbb13415a6896f5n,
  ACL_DEFAULT_USER: 0xc89357b40532cd1fn,
  ACL_DEFAULT_GROUP: 0xf90a8a5816038ffen,
  FCAPS: 0x2da9dd9db5f7fb67n,
  QUOTA_PROJID: 0xe07540e82f7d1cbbn,
  HARDLINK: 0x51269c8422bd7275n,
  PAYLOAD: 0x28147a1b0b7c1a25n,
  PAYLOAD_REF: 0x419d3d6bc4ba977en,
  GOODBYE: 0x2fec4fa642d5731dn,
  GOODBYE_TAIL_MARKER: 0xef5eed5b753e1555n,
  PAYLOAD_START_MARKER: 0x834c68c2194a4ed2n,
  PAYLOAD_TAIL_MARKER: 0x6c72b78b984c81b5n,
});

/** The strings the constants hash (§3), for the known-answer test and for error messages. */
export const PXAR_TYPE_SOURCES: Readonly<Record<keyof typeof PXAR, string>> = Object.freeze({
  FORMAT_VERSION: '__PROXMOX_FORMAT_VERSION__',
  ENTRY: '__PROXMOX_FORMAT_ENTRY_V2__',
  ENTRY_V1: '__PROXMOX_FORMAT_ENTRY__',
  PRELUDE: '__PROXMOX_FORMAT_PRELUDE__',
  FILENAME: '__PROXMOX_FORMAT_FILENAME__',
  SYMLINK: '__PROXMOX_FORMAT_SYMLINK__',
  DEVICE: '__PROXMOX_FORMAT_DEVICE__',
  XATTR: '__PROXMOX_FORMAT_XATTR__',
  ACL_USER: '__PROXMOX_FORMAT_ACL_USER__',
  ACL_GROUP: '__PROXMOX_FORMAT_ACL_GROUP__',
  ACL_GROUP_OBJ: '__PROXMOX_FORMAT_ACL_GROUP_OBJ__',
  ACL_DEFAULT: '__PROXMOX_FORMAT_ACL_DEFAULT__',
  ACL_DEFAULT_USER: '__PROXMOX_FORMAT_ACL_DEFAULT_USER__',
  ACL_DEFAULT_GROUP: '__PROXMOX_FORMAT_ACL_DEFAULT_GROUP__',
  FCAPS: '__PROXMOX_FORMAT_FCAPS__',
  QUOTA_PROJID: '__PROXMOX_FORMAT_QUOTA_PROJID__',
  HARDLINK: '__PROXMOX_FORMAT_HARDLINK__',
  PAYLOAD: '__PROXMOX_FORMAT_PXAR_PAYLOAD__',
  PAYLOAD_REF: '__PROXMOX_FORMAT_PXAR_PAYLOAD_REF__',
  GOODBYE: '__PROXMOX_FORMAT_GOODBYE__',
  GOODBYE_TAIL_MARKER: '__PROXMOX_FORMAT_PXAR_GOODBYE_TAIL_MARKER__',
  PAYLOAD_START_MARKER: '__PROXMOX_FORMAT_PXAR_PAYLOAD_START_MARKER__',
  PAYLOAD_TAIL_MARKER: '__PROXMOX_FORMAT_PXAR_PAYLOAD_TAIL_MARKER__',
});

/** Every item starts with type u64 + full_size u64 (full_size includes these 16 bytes). */
export const ITEM_HEADER_SIZE = 16;
/** One goodbye-table item: hash u64, offset u64, size u64. */
export const GOODBYE_ITEM_SIZE = 24;
/** Content size of ENTRY (v2 stat) and of the legacy ENTRY_V1. */
export const ENTRY_SIZE = 40;
export const ENTRY_V1_SIZE = 32;
/** Longest file name or link target, without its NUL (§2). */
export const MAX_NAME_LENGTH = 4096;
/** Longest xattr name, and the longest xattr/fcaps value (§2: 255 + 65536 content bytes). */
export const MAX_XATTR_NAME_LENGTH = 255;
export const MAX_XATTR_VALUE_LENGTH = 65536;
/** The one FORMAT_VERSION value Burrow writes for split archives. */
export const FORMAT_VERSION_SPLIT = 2;

/**
 * Largest content the reference decoder accepts per item type (§2); types not listed are unbounded
 * (PAYLOAD, GOODBYE, PRELUDE). Decoders enforce these so a hostile size cannot make us buffer GiBs.
 */
export const MAX_CONTENT_SIZE: ReadonlyMap<bigint, number> = new Map([
  [PXAR.FILENAME, MAX_NAME_LENGTH + 1],
  [PXAR.SYMLINK, MAX_NAME_LENGTH + 1],
  [PXAR.HARDLINK, MAX_NAME_LENGTH + 1 + 8],
  [PXAR.XATTR, MAX_XATTR_NAME_LENGTH + MAX_XATTR_VALUE_LENGTH],
  [PXAR.FCAPS, MAX_XATTR_NAME_LENGTH + MAX_XATTR_VALUE_LENGTH],
  [PXAR.DEVICE, 16],
  [PXAR.ENTRY, ENTRY_SIZE],
  [PXAR.ENTRY_V1, ENTRY_V1_SIZE],
  [PXAR.ACL_USER, 16],
  [PXAR.ACL_GROUP, 16],
  [PXAR.ACL_DEFAULT_USER, 16],
  [PXAR.ACL_DEFAULT_GROUP, 16],
  [PXAR.ACL_DEFAULT, 32],
  [PXAR.ACL_GROUP_OBJ, 8],
  [PXAR.QUOTA_PROJID, 8],
  [PXAR.PAYLOAD_REF, 16],
  [PXAR.FORMAT_VERSION, 8],
  [PXAR.PAYLOAD_TAIL_MARKER, 16],
]);

/** Name of a type constant for messages ("GOODBYE"), or its hex when unknown. */
export function itemTypeName(type: bigint): string {
  for (const [name, value] of Object.entries(PXAR)) if (value === type) return name;
  return `0x${type.toString(16).padStart(16, '0')}`;
}

// ---------------------------------------------------------------------------------------------
// Mode bits (§4): the format's values, which are Linux's.

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export type FileKind =
  'directory' | 'file' | 'symlink' | 'block-device' | 'char-device' | 'fifo' | 'socket';

/** The kind a mode's type bits name, or undefined for a type pxar does not know. */
export function kindOfMode(mode: number): FileKind | undefined {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return 'directory';
    case S_IFREG:
      return 'file';
    case S_IFLNK:
      return 'symlink';
    case S_IFBLK:
      return 'block-device';
    case S_IFCHR:
      return 'char-device';
    case S_IFIFO:
      return 'fifo';
    case S_IFSOCK:
      return 'socket';
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The metadata model (§4, §5).

/** A timestamp as struct stat has it: for times before 1970 `secs` is negative, `nanos` in [0, 1e9). */
export interface PxarTime {
  readonly secs: number;
  readonly nanos: number;
}

/** The ENTRY item. `mode` is the full st_mode (type + permission bits); `flags` are §4's bits. */
export interface Stat {
  readonly mode: number;
  readonly flags: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: PxarTime;
}

export interface Xattr {
  readonly name: Uint8Array;
  readonly value: Uint8Array;
}

/** A named-user or named-group ACL entry; `permissions` uses READ 4, WRITE 2, EXECUTE 1. */
export interface AclEntry {
  readonly id: number;
  readonly permissions: number;
}

/** ACL_DEFAULT: each field is undefined when the default ACL has no such entry (NO_MASK on disk). */
export interface AclDefault {
  readonly userObj?: number;
  readonly groupObj?: number;
  readonly other?: number;
  readonly mask?: number;
}

export interface Acl {
  readonly users: readonly AclEntry[];
  readonly groups: readonly AclEntry[];
  /** Written only when the access ACL has a mask; then it holds the real group-owner bits. */
  readonly groupObj?: number;
  readonly default?: AclDefault;
  readonly defaultUsers: readonly AclEntry[];
  readonly defaultGroups: readonly AclEntry[];
}

export const ACL_READ = 4;
export const ACL_WRITE = 2;
export const ACL_EXECUTE = 1;
/** ACL_DEFAULT's "not set" value. */
export const ACL_NO_MASK = 0xffffffffffffffffn;

/** Everything pxar stores about one entry besides its name and body. */
export interface Metadata {
  readonly stat: Stat;
  /** In the order the filesystem listed them (PBS does not sort them). */
  readonly xattrs: readonly Xattr[];
  readonly acl: Acl;
  /** The raw `security.capability` value. */
  readonly fcaps?: Uint8Array;
  readonly quotaProjectId?: number;
}

export const EMPTY_ACL: Acl = Object.freeze({
  users: [],
  groups: [],
  defaultUsers: [],
  defaultGroups: [],
});

/** Metadata with only a stat: no xattrs, ACLs, fcaps or project id. */
export function metadataOf(stat: Stat): Metadata {
  return { stat, xattrs: [], acl: EMPTY_ACL };
}

export function aclIsEmpty(acl: Acl): boolean {
  return (
    acl.users.length === 0 &&
    acl.groups.length === 0 &&
    acl.groupObj === undefined &&
    acl.default === undefined &&
    acl.defaultUsers.length === 0 &&
    acl.defaultGroups.length === 0
  );
}

/** Per-file attribute flags (§4), as stored in ENTRY.flags. */
export const PXAR_FLAGS = Object.freeze({
  HIDDEN: 0x2000,
  SYSTEM: 0x4000,
  ARCHIVE: 0x8000,
  APPEND: 0x10000,
  NOATIME: 0x20000,
  COMPR: 0x40000,
  NOCOW: 0x80000,
  NODUMP: 0x100000,
  DIRSYNC: 0x200000,
  IMMUTABLE: 0x400000,
  SYNC: 0x800000,
  NOCOMP: 0x1000000,
  PROJINHERIT: 0x2000000,
});

/** The Linux FS_*_FL chattr bit for each pxar flag it maps to (§4). */
export const LINUX_FS_FLAGS: ReadonlyArray<readonly [linux: number, pxar: number]> = [
  [0x20, PXAR_FLAGS.APPEND],
  [0x80, PXAR_FLAGS.NOATIME],
  [0x4, PXAR_FLAGS.COMPR],
  [0x800000, PXAR_FLAGS.NOCOW],
  [0x40, PXAR_FLAGS.NODUMP],
  [0x10000, PXAR_FLAGS.DIRSYNC],
  [0x10, PXAR_FLAGS.IMMUTABLE],
  [0x8, PXAR_FLAGS.SYNC],
  [0x400, PXAR_FLAGS.NOCOMP],
  [0x20000000, PXAR_FLAGS.PROJINHERIT],
];

export function pxarFlagsFromLinux(linuxFlags: number): number {
  let flags = 0;
  for (const [linux, pxar] of LINUX_FS_FLAGS) if ((linuxFlags & linux) !== 0) flags |= pxar;
  return flags;
}

export function linuxFlagsFromPxar(pxarFlags: number): number {
  let flags = 0;
  for (const [linux, pxar] of LINUX_FS_FLAGS) if ((pxarFlags & pxar) !== 0) flags |= linux;
  return flags >>> 0;
}

// ---------------------------------------------------------------------------------------------
// What a decoder or accessor reports for one archive entry.

export type EntryKind =
  | { readonly kind: 'directory' }
  /**
   * A regular file. `payloadOffset` is where its PAYLOAD header is: in the archive itself for v1,
   * in the payload stream (.ppxar) for v2 (the PAYLOAD_REF offset).
   */
  | { readonly kind: 'file'; readonly size: number; readonly payloadOffset: number }
  | { readonly kind: 'symlink'; readonly target: Uint8Array }
  /** `target` is the first occurrence's path relative to the archive root; `offset` as in §8. */
  | { readonly kind: 'hardlink'; readonly target: Uint8Array; readonly offset: number }
  | {
      readonly kind: 'block-device' | 'char-device';
      readonly major: number;
      readonly minor: number;
    }
  | { readonly kind: 'fifo' }
  | { readonly kind: 'socket' };

export interface Entry {
  /** Path from the archive root, components joined by '/'; empty for the root directory. */
  readonly path: Uint8Array;
  /** The last path component; empty for the root. */
  readonly name: Uint8Array;
  readonly body: EntryKind;
  /** Absent only for hardlinks, which carry no metadata of their own (§5). */
  readonly metadata?: Metadata;
  /** Archive position of the entry's FILENAME header; 0 for the root. */
  readonly fileNameOffset: number;
}

/** Random access to bytes (a file, a buffer, a chunked index). A short read happens only at EOF. */
export interface RandomAccess {
  readonly size: number;
  readAt(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional: between 1 and `maxLength` bytes from `offset` (fewer only where the source holds
   * its data in pieces, such as chunks, or at the end), as a view that is not copied. Sequential
   * readers take it over readAt to save a copy when a read would cross a piece boundary.
   */
  readPiece?(offset: number, maxLength: number): Promise<Uint8Array>;
}

/** Where encoders and catalog writers put bytes, in order. */
export interface ByteSink {
  write(bytes: Uint8Array): void | Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// File names (§5).

const SLASH = 0x2f;
const DOT = 0x2e;

/** Why `name` is not a valid pxar file name, or undefined when it is. */
export function fileNameProblem(name: Uint8Array): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_NAME_LENGTH) return `the name is longer than ${MAX_NAME_LENGTH} bytes`;
  if (name.includes(SLASH)) return "the name contains '/'";
  if (name.includes(0)) return 'the name contains a NUL byte';
  if (name[0] === DOT && (name.length === 1 || (name.length === 2 && name[1] === DOT)))
    return "the name is '.' or '..'";
  return undefined;
}

/** Throws PXAR_BAD_NAME when `name` cannot be a pxar file name. */
export function checkFileName(name: Uint8Array, details: Record<string, unknown> = {}): void {
  const problem = fileNameProblem(name);
  if (problem !== undefined)
    throw new BurrowError('PXAR_BAD_NAME', `invalid file name ${printableName(name)}: ${problem}`, {
      details: { ...details, name: printableName(name) },
    });
}

/** A name or path for messages: UTF-8 where valid, with other bytes as \xNN. */
export function printableName(bytes: Uint8Array): string {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  if (!text.includes('\ufffd')) return JSON.stringify(text);
  return JSON.stringify(
    Array.from(bytes, (b) =>
      b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`,
    ).join(''),
  );
}

const utf8 = new TextEncoder();

/** Bytes of a name or path given as a string (UTF-8) or already as bytes. */
export function nameBytes(name: string | Uint8Array): Uint8Array {
  return typeof name === 'string' ? utf8.encode(name) : name;
}

/** Joins a parent path and a child name with '/' (the root's path is empty). */
export function joinPath(parent: Uint8Array, name: Uint8Array): Uint8Array {
  if (parent.length === 0) return name;
  const out = new Uint8Array(parent.length + 1 + name.length);
  out.set(parent, 0);
  out[parent.length] = SLASH;
  out.set(name, parent.length + 1);
  return out;
}

/** Splits a path on '/', dropping empty components (so leading, trailing and double slashes are harmless). */
export function splitPath(path: Uint8Array): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === SLASH) {
      if (i > start) parts.push(path.subarray(start, i));
      start = i + 1;
    }
  }
  return parts;
}

/** Byte-wise comparison of names, the order PBS sorts directory entries in (§5). */
export function compareNames(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

// ---------------------------------------------------------------------------------------------
// Filename hash (§7.1): SipHash-2-4 with the key below. The addon's (native/pxarhash.c) when it
// is loaded; otherwise this one, computed on 32-bit halves because a BigInt version costs
// microseconds per name and an archive can hold millions of names.

/** k0, k1 of §7.1 as [low, high] 32-bit halves. */
const HASH_K0_LO = 0xfbb450db;
const HASH_K0_HI = 0x83ac3f1c;
const HASH_K1_LO = 0x79369fbd;
const HASH_K1_HI = 0xaa4f1b68;

// The state v0..v3, each as [lo, hi] at 2i, 2i+1.
const sip = new Uint32Array(8);

function add(a: number, b: number): void {
  const lo = sip[a]! + sip[b]!;
  sip[a + 1] = sip[a + 1]! + sip[b + 1]! + (lo > 0xffffffff ? 1 : 0);
  sip[a] = lo;
}

function rotl(a: number, n: number): void {
  const lo = sip[a]!;
  const hi = sip[a + 1]!;
  if (n === 32) {
    sip[a] = hi;
    sip[a + 1] = lo;
  } else if (n < 32) {
    sip[a] = (lo << n) | (hi >>> (32 - n));
    sip[a + 1] = (hi << n) | (lo >>> (32 - n));
  } else {
    const m = n - 32;
    sip[a] = (hi << m) | (lo >>> (32 - m));
    sip[a + 1] = (lo << m) | (hi >>> (32 - m));
  }
}

function xor(a: number, b: number): void {
  sip[a] = sip[a]! ^ sip[b]!;
  sip[a + 1] = sip[a + 1]! ^ sip[b + 1]!;
}

const V0 = 0;
const V1 = 2;
const V2 = 4;
const V3 = 6;

function sipRound(): void {
  add(V0, V1);
  rotl(V1, 13);
  xor(V1, V0);
  rotl(V0, 32);
  add(V2, V3);
  rotl(V3, 16);
  xor(V3, V2);
  add(V0, V3);
  rotl(V3, 21);
  xor(V3, V0);
  add(V2, V1);
  rotl(V1, 17);
  xor(V1, V2);
  rotl(V2, 32);
}

function absorb(lo: number, hi: number): void {
  sip[V3] = sip[V3]! ^ lo;
  sip[V3 + 1] = sip[V3 + 1]! ^ hi;
  sipRound();
  sipRound();
  sip[V0] = sip[V0]! ^ lo;
  sip[V0 + 1] = sip[V0 + 1]! ^ hi;
}

const nativeHash = nativePxarHash();

/** SipHash-2-4 of `data` under pxar's key (§7.1), as an unsigned 64-bit value. */
export function pxarHash(data: Uint8Array): bigint {
  return nativeHash === undefined ? pxarHashTs(data) : nativeHash(data);
}

/** pxarHash in TypeScript: the fallback without the addon (tested against the same vectors). */
export function pxarHashTs(data: Uint8Array): bigint {
  // "somepseudorandomlygeneratedbytes", split into halves, XORed with the key.
  sip[0] = HASH_K0_LO ^ 0x70736575;
  sip[1] = HASH_K0_HI ^ 0x736f6d65;
  sip[2] = HASH_K1_LO ^ 0x6e646f6d;
  sip[3] = HASH_K1_HI ^ 0x646f7261;
  sip[4] = HASH_K0_LO ^ 0x6e657261;
  sip[5] = HASH_K0_HI ^ 0x6c796765;
  sip[6] = HASH_K1_LO ^ 0x79746573;
  sip[7] = HASH_K1_HI ^ 0x74656462;
  const whole = data.length - (data.length % 8);
  for (let i = 0; i < whole; i += 8) {
    const lo = (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24)) >>> 0;
    const hi =
      (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24)) >>> 0;
    absorb(lo, hi);
  }
  // The last block: the remaining bytes, and the length's low byte in the top byte.
  let lo = 0;
  let hi = (data.length & 0xff) << 24;
  for (let i = whole; i < data.length; i++) {
    const shift = (i - whole) * 8;
    if (shift < 32) lo |= data[i]! << shift;
    else hi |= data[i]! << (shift - 32);
  }
  absorb(lo >>> 0, hi >>> 0);
  sip[V2] = sip[V2] ^ 0xff;
  sipRound();
  sipRound();
  sipRound();
  sipRound();
  const outLo = (sip[0] ^ sip[2] ^ sip[4] ^ sip[6]) >>> 0;
  const outHi = (sip[1] ^ sip[3] ^ sip[5] ^ sip[7]) >>> 0;
  return (BigInt(outHi) << 32n) | BigInt(outLo);
}

// ---------------------------------------------------------------------------------------------
// Goodbye table order (§7.3).

/**
 * The implicit binary-search-tree layout of `n` sorted items: `result[slot]` is the sorted index
 * stored in tree slot `slot` (children of slot i at 2i+1 and 2i+2).
 */
export function goodbyeTreeOrder(n: number): number[] {
  const order = new Array<number>(n).fill(0);
  if (n === 0) return order;
  const place = (count: number, first: number, level: number, slot: number): void => {
    const p = 2 ** level;
    const t = p + Math.floor(p / 2) - 1;
    const m = count > t ? p - 1 : p - 1 - (t - count);
    order[slot] = first + m;
    if (m > 0) place(m, first, level - 1, 2 * slot + 1);
    if (m + 1 < count) place(count - m - 1, first + m + 1, level - 1, 2 * slot + 2);
  };
  place(n, 0, Math.floor(Math.log2(n)), 0);
  return order;
}

/** One goodbye item: the child's name hash, its backwards offset and its size (§7.2). */
export interface GoodbyeItem {
  readonly hash: bigint;
  readonly offset: number;
  readonly size: number;
}

// ---------------------------------------------------------------------------------------------
// Little-endian u64 helpers shared by the codecs. Offsets and sizes stay below 2^53 in any real
// archive; a larger value is corrupt input, not something to round silently.

/** Reads a u64 as a number, or throws `code` when it does not fit exactly. */
export function readSafeU64(
  view: DataView,
  at: number,
  what: string,
  details: Record<string, unknown>,
  code:
    | 'PXAR_BAD_ITEM'
    | 'PXAR_BAD_GOODBYE'
    | 'PXAR_BAD_HARDLINK'
    | 'PXAR_BAD_PAYLOAD' = 'PXAR_BAD_ITEM',
): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw new BurrowError(code, `${what} ${value} is too large`, {
      details: { ...details, value: value.toString() },
    });
  return Number(value);
}

export function writeU64(view: DataView, at: number, value: number | bigint): void {
  view.setBigUint64(at, typeof value === 'bigint' ? value : BigInt(value), true);
}
