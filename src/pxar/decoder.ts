/**
 * Streaming pxar decoder (pxar-format.md §5, §7, §8, §9): reads an archive from an async byte
 * stream in one pass and reports its entries depth-first. It never seeks and never holds more than
 * one item's bounded content at a time; file data is handed out in pieces as it streams past.
 *
 * Everything it reads is treated as hostile. Each item's size is checked against the §2 maxima
 * before anything is buffered, every directory's goodbye table is checked against the children
 * actually seen (count, hashes, tree order, offsets, sizes, tail), names and link targets are
 * validated, hardlinks may only point backwards into the archive, v2 payload references must
 * increase and match the payload stream. Failures are BurrowErrors with a PXAR_* code whose message
 * names the archive and the byte offset. Nesting is tracked on an explicit stack with a depth cap,
 * so a hostile archive cannot overflow the JS stack.
 *
 * The item-level parsers below are shared with the random-access reader (accessor.ts).
 */
import { BurrowError, type ErrorCode } from '../lib/errors.js';
import {
  ACL_NO_MASK,
  EMPTY_ACL,
  ENTRY_SIZE,
  ENTRY_V1_SIZE,
  GOODBYE_ITEM_SIZE,
  ITEM_HEADER_SIZE,
  MAX_CONTENT_SIZE,
  MAX_NAME_LENGTH,
  MAX_XATTR_NAME_LENGTH,
  PXAR,
  fileNameProblem,
  goodbyeTreeOrder,
  itemTypeName,
  joinPath,
  kindOfMode,
  printableName,
  pxarHash,
  type Acl,
  type AclDefault,
  type AclEntry,
  type Entry,
  type EntryKind,
  type FileKind,
  type Metadata,
  type RandomAccess,
  type Stat,
  type Xattr,
} from './format.js';

/** Deepest directory nesting accepted below the root; deeper archives are rejected, not recursed. */
export const MAX_DIRECTORY_DEPTH = 2048;
/**
 * Longest entry path accepted. Every entry carries its full path, so without a cap a hostile
 * archive of deeply nested long names would cost time quadratic in its size.
 */
export const MAX_PATH_LENGTH = 65536;
/** Largest PRELUDE kept in memory (PBS writes a small JSON object there). */
export const MAX_PRELUDE_SIZE = 16 * 1024 * 1024;
/** File contents are handed out in pieces of at most this many bytes. */
export const CONTENT_PIECE_SIZE = 1024 * 1024;

const EMPTY = new Uint8Array(0);
const SLASH = 0x2f;
const DOT = 0x2e;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

// ---------------------------------------------------------------------------------------------
// Errors

/** A PXAR_* error that names the archive (when known) and the absolute byte offset. */
export function pxarError(
  code: ErrorCode,
  source: string | undefined,
  offset: number,
  message: string,
  details: Record<string, unknown> = {},
): BurrowError {
  const where = source ?? 'pxar archive';
  return new BurrowError(code, `${where}: ${message} (at byte ${offset})`, {
    details: { ...(source === undefined ? {} : { archive: source }), ...details, offset },
  });
}

function asError(error: unknown): Error {
  return error instanceof Error
    ? error
    : new BurrowError('INTERNAL', `non-error thrown: ${String(error)}`);
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Item headers (§2)

export interface ItemHeader {
  readonly type: bigint;
  /** Absolute position of the header. */
  readonly position: number;
  readonly fullSize: number;
  readonly contentSize: number;
  /** Position just after the item. */
  readonly end: number;
}

// GOODBYE_TAIL_MARKER is a hash value inside goodbye tables, never an item type.
const KNOWN_TYPES: ReadonlySet<bigint> = new Set(
  Object.values(PXAR).filter((t) => t !== PXAR.GOODBYE_TAIL_MARKER),
);

/** Parses and sanity-checks a 16-byte item header found at `position`. */
function u32le(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** A u64 field as a number; values from 2^53 on (never real offsets or sizes) become Infinity. */
function u64number(b: Uint8Array, at: number): number {
  const high = u32le(b, at + 4);
  return high < 0x200000 ? high * 0x100000000 + u32le(b, at) : Number.POSITIVE_INFINITY;
}

function hex64(high: number, low: number): string {
  return `0x${high.toString(16).padStart(8, '0')}${low.toString(16).padStart(8, '0')}`;
}

const TAIL_HI = Number(PXAR.GOODBYE_TAIL_MARKER >> 32n);
const TAIL_LO = Number(PXAR.GOODBYE_TAIL_MARKER & 0xffffffffn);

/**
 * The known types keyed by their upper 32 bits (distinct for every constant), with their content
 * maximum: a header is then recognised without allocating a BigInt, which matters at millions of
 * items.
 */
const TYPE_BY_HIGH = new Map<
  number,
  { readonly low: number; readonly type: bigint; readonly max: number }
>();
for (const type of KNOWN_TYPES)
  TYPE_BY_HIGH.set(Number(type >> 32n), {
    low: Number(type & 0xffffffffn),
    type,
    max: MAX_CONTENT_SIZE.get(type) ?? Number.MAX_SAFE_INTEGER,
  });
if (TYPE_BY_HIGH.size !== KNOWN_TYPES.size)
  throw new Error('pxar type constants share their upper 32 bits');

/** Parses and sanity-checks a 16-byte item header found at `position`. */
export function decodeHeader(
  bytes: Uint8Array,
  position: number,
  source: string | undefined,
): ItemHeader {
  const known = TYPE_BY_HIGH.get(u32le(bytes, 4));
  if (known === undefined || known.low !== u32le(bytes, 0)) {
    const type = view(bytes).getBigUint64(0, true);
    throw pxarError('PXAR_BAD_ITEM', source, position, `unknown item type ${itemTypeName(type)}`, {
      type: itemTypeName(type),
    });
  }
  const type = known.type;
  const sizeLow = u32le(bytes, 8);
  const sizeHigh = u32le(bytes, 12);
  // 2^21 * 2^32 = 2^53: anything from there on cannot be a real size.
  const full = sizeHigh < 0x200000 ? sizeHigh * 0x100000000 + sizeLow : Number.POSITIVE_INFINITY;
  if (full < ITEM_HEADER_SIZE)
    throw pxarError(
      'PXAR_BAD_ITEM',
      source,
      position,
      `${itemTypeName(type)} item has full_size ${full}, less than its 16-byte header`,
      { type: itemTypeName(type), fullSize: full },
    );
  if (full - 16 > known.max)
    throw pxarError(
      'PXAR_BAD_ITEM',
      source,
      position,
      `${itemTypeName(type)} item has ${full === Number.POSITIVE_INFINITY ? view(bytes).getBigUint64(8, true) - 16n : full - 16} content bytes, more than the ${known.max} allowed`,
      { type: itemTypeName(type), max: known.max },
    );
  if (full > Number.MAX_SAFE_INTEGER - position)
    throw pxarError(
      'PXAR_BAD_ITEM',
      source,
      position,
      `${itemTypeName(type)} item size ${view(bytes).getBigUint64(8, true)} is too large`,
      { type: itemTypeName(type), fullSize: view(bytes).getBigUint64(8, true).toString() },
    );
  return { type, position, fullSize: full, contentSize: full - 16, end: position + full };
}

function requireContentSize(h: ItemHeader, size: number, source: string | undefined): void {
  if (h.contentSize !== size)
    throw pxarError(
      'PXAR_BAD_ITEM',
      source,
      h.position,
      `${itemTypeName(h.type)} item has ${h.contentSize} content bytes, expected ${size}`,
      { type: itemTypeName(h.type), expected: size, actual: h.contentSize },
    );
}

/** A u64 field of an item's content as a number; values beyond 2^53 cannot be real. */
function u64(
  c: Uint8Array,
  at: number,
  h: ItemHeader,
  what: string,
  source: string | undefined,
  code: ErrorCode = 'PXAR_BAD_ITEM',
): number {
  const value = view(c).getBigUint64(at, true);
  if (value > MAX_SAFE)
    throw pxarError(code, source, h.position + 16 + at, `${what} ${value} is too large`, {
      value: value.toString(),
    });
  return Number(value);
}

// ---------------------------------------------------------------------------------------------
// Item contents (§4)

export function isEntryType(type: bigint): boolean {
  return type === PXAR.ENTRY || type === PXAR.ENTRY_V1;
}

/** ENTRY (v2, 40 bytes) or the legacy ENTRY_V1 (32 bytes, mtime in nanoseconds). */
export function parseStat(h: ItemHeader, c: Uint8Array, source: string | undefined): Stat {
  const v1 = h.type === PXAR.ENTRY_V1;
  requireContentSize(h, v1 ? ENTRY_V1_SIZE : ENTRY_SIZE, source);
  const v = view(c);
  const modeBig = v.getBigUint64(0, true);
  if (modeBig > 0xffffffffn)
    throw pxarError(
      'PXAR_BAD_ITEM',
      source,
      h.position + 16,
      `mode 0x${modeBig.toString(16)} is not a valid file mode`,
    );
  const mode = Number(modeBig);
  if (kindOfMode(mode) === undefined)
    throw pxarError(
      'PXAR_BAD_ITEM',
      source,
      h.position + 16,
      `mode 0o${mode.toString(8)} has an unknown file type`,
      { mode },
    );
  const flags = u64(c, 8, h, 'entry flags', source);
  const uid = v.getUint32(16, true);
  const gid = v.getUint32(20, true);
  let secs: number;
  let nanos: number;
  if (v1) {
    const ns = v.getBigUint64(24, true);
    secs = Number(ns / 1_000_000_000n);
    nanos = Number(ns % 1_000_000_000n);
  } else {
    const s = v.getBigInt64(24, true);
    if (s > MAX_SAFE || s < -MAX_SAFE)
      throw pxarError(
        'PXAR_BAD_ITEM',
        source,
        h.position + 16 + 24,
        `mtime ${s} s is out of range`,
      );
    secs = Number(s);
    nanos = v.getUint32(32, true);
    if (nanos >= 1_000_000_000)
      throw pxarError(
        'PXAR_BAD_ITEM',
        source,
        h.position + 16 + 32,
        `mtime nanoseconds ${nanos} are not below 10^9`,
      );
  }
  return { mode, flags, uid, gid, mtime: { secs, nanos } };
}

export function isAttributeType(type: bigint): boolean {
  return (
    type === PXAR.XATTR ||
    type === PXAR.ACL_USER ||
    type === PXAR.ACL_GROUP ||
    type === PXAR.ACL_GROUP_OBJ ||
    type === PXAR.ACL_DEFAULT ||
    type === PXAR.ACL_DEFAULT_USER ||
    type === PXAR.ACL_DEFAULT_GROUP ||
    type === PXAR.FCAPS ||
    type === PXAR.QUOTA_PROJID
  );
}

/**
 * Gathers the attribute items that follow an ENTRY. Like the reference decoder it accepts them
 * in any order but refuses a second ACL_GROUP_OBJ, ACL_DEFAULT, FCAPS or QUOTA_PROJID, since
 * there is no sensible way to merge two.
 */
export class MetadataCollector {
  readonly #source: string | undefined;
  readonly #xattrs: Xattr[] = [];
  readonly #users: AclEntry[] = [];
  readonly #groups: AclEntry[] = [];
  readonly #defaultUsers: AclEntry[] = [];
  readonly #defaultGroups: AclEntry[] = [];
  #groupObj: number | undefined;
  #default: AclDefault | undefined;
  #fcaps: Uint8Array | undefined;
  #projid: number | undefined;

  constructor(source: string | undefined) {
    this.#source = source;
  }

  #duplicate(h: ItemHeader): BurrowError {
    return pxarError(
      'PXAR_BAD_ITEM',
      this.#source,
      h.position,
      `second ${itemTypeName(h.type)} item for one entry`,
      { type: itemTypeName(h.type) },
    );
  }

  add(h: ItemHeader, c: Uint8Array): void {
    const source = this.#source;
    switch (h.type) {
      case PXAR.XATTR: {
        const nul = c.indexOf(0);
        if (nul < 0)
          throw pxarError(
            'PXAR_BAD_ITEM',
            source,
            h.position,
            'XATTR item has no NUL after the attribute name',
          );
        if (nul === 0)
          throw pxarError(
            'PXAR_BAD_ITEM',
            source,
            h.position,
            'XATTR item has an empty attribute name',
          );
        if (nul > MAX_XATTR_NAME_LENGTH)
          throw pxarError(
            'PXAR_BAD_ITEM',
            source,
            h.position,
            `XATTR name of ${nul} bytes is longer than ${MAX_XATTR_NAME_LENGTH}`,
          );
        this.#xattrs.push({ name: c.slice(0, nul), value: c.slice(nul + 1) });
        return;
      }
      case PXAR.ACL_USER:
      case PXAR.ACL_GROUP:
      case PXAR.ACL_DEFAULT_USER:
      case PXAR.ACL_DEFAULT_GROUP: {
        requireContentSize(h, 16, source);
        const entry: AclEntry = {
          id: u64(c, 0, h, 'ACL id', source),
          permissions: u64(c, 8, h, 'ACL permissions', source),
        };
        const list =
          h.type === PXAR.ACL_USER
            ? this.#users
            : h.type === PXAR.ACL_GROUP
              ? this.#groups
              : h.type === PXAR.ACL_DEFAULT_USER
                ? this.#defaultUsers
                : this.#defaultGroups;
        list.push(entry);
        return;
      }
      case PXAR.ACL_GROUP_OBJ:
        requireContentSize(h, 8, source);
        if (this.#groupObj !== undefined) throw this.#duplicate(h);
        this.#groupObj = u64(c, 0, h, 'ACL group_obj permissions', source);
        return;
      case PXAR.ACL_DEFAULT: {
        requireContentSize(h, 32, source);
        if (this.#default !== undefined) throw this.#duplicate(h);
        const v = view(c);
        const field = (at: number, what: string): number | undefined =>
          v.getBigUint64(at, true) === ACL_NO_MASK ? undefined : u64(c, at, h, what, source);
        const userObj = field(0, 'ACL default user_obj permissions');
        const groupObj = field(8, 'ACL default group_obj permissions');
        const other = field(16, 'ACL default other permissions');
        const mask = field(24, 'ACL default mask permissions');
        this.#default = {
          ...(userObj === undefined ? {} : { userObj }),
          ...(groupObj === undefined ? {} : { groupObj }),
          ...(other === undefined ? {} : { other }),
          ...(mask === undefined ? {} : { mask }),
        };
        return;
      }
      case PXAR.FCAPS:
        if (this.#fcaps !== undefined) throw this.#duplicate(h);
        this.#fcaps = c.slice();
        return;
      case PXAR.QUOTA_PROJID:
        requireContentSize(h, 8, source);
        if (this.#projid !== undefined) throw this.#duplicate(h);
        this.#projid = u64(c, 0, h, 'quota project id', source);
        return;
      default:
        throw pxarError(
          'PXAR_BAD_ITEM',
          source,
          h.position,
          `${itemTypeName(h.type)} is not an attribute item`,
        );
    }
  }

  finish(stat: Stat): Metadata {
    const hasAcl =
      this.#users.length > 0 ||
      this.#groups.length > 0 ||
      this.#defaultUsers.length > 0 ||
      this.#defaultGroups.length > 0 ||
      this.#groupObj !== undefined ||
      this.#default !== undefined;
    const acl: Acl = hasAcl
      ? {
          users: this.#users,
          groups: this.#groups,
          ...(this.#groupObj === undefined ? {} : { groupObj: this.#groupObj }),
          ...(this.#default === undefined ? {} : { default: this.#default }),
          defaultUsers: this.#defaultUsers,
          defaultGroups: this.#defaultGroups,
        }
      : EMPTY_ACL;
    return {
      stat,
      xattrs: this.#xattrs,
      acl,
      ...(this.#fcaps === undefined ? {} : { fcaps: this.#fcaps }),
      ...(this.#projid === undefined ? {} : { quotaProjectId: this.#projid }),
    };
  }
}

/** FILENAME content: a valid name plus its NUL (§5). Returns a copy. */
export function parseFileName(
  h: ItemHeader,
  c: Uint8Array,
  source: string | undefined,
): Uint8Array {
  if (c.length === 0 || c[c.length - 1] !== 0)
    throw pxarError('PXAR_BAD_NAME', source, h.position, 'file name is not NUL-terminated');
  const name = c.subarray(0, c.length - 1);
  const problem = fileNameProblem(name);
  if (problem !== undefined)
    throw pxarError(
      'PXAR_BAD_NAME',
      source,
      h.position,
      `invalid file name ${printableName(name)}: ${problem}`,
      {
        name: printableName(name),
      },
    );
  return name.slice();
}

/** SYMLINK content: a non-empty target without NULs, plus its NUL. Returns a copy. */
export function parseSymlink(h: ItemHeader, c: Uint8Array, source: string | undefined): Uint8Array {
  if (c.length === 0 || c[c.length - 1] !== 0)
    throw pxarError('PXAR_BAD_NAME', source, h.position, 'symlink target is not NUL-terminated');
  const target = c.subarray(0, c.length - 1);
  if (target.length === 0)
    throw pxarError('PXAR_BAD_NAME', source, h.position, 'symlink target is empty');
  if (target.includes(0))
    throw pxarError('PXAR_BAD_NAME', source, h.position, 'symlink target contains a NUL byte');
  return target.slice();
}

/** Why `path` is not a plain relative archive path (a/b/c), or undefined when it is. */
export function relativePathProblem(path: Uint8Array): string | undefined {
  if (path.length === 0) return 'the path is empty';
  if (path[0] === SLASH) return 'the path is absolute';
  if (path.includes(0)) return 'the path contains a NUL byte';
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i < path.length && path[i] !== SLASH) continue;
    const len = i - start;
    if (len === 0) return 'the path has an empty component';
    if (path[start] === DOT && (len === 1 || (len === 2 && path[start + 1] === DOT)))
      return "the path has a '.' or '..' component";
    if (len > MAX_NAME_LENGTH) return `a path component is longer than ${MAX_NAME_LENGTH} bytes`;
    start = i + 1;
  }
  return undefined;
}

export interface HardlinkInfo {
  readonly offset: number;
  readonly target: Uint8Array;
  /** Position of the target's FILENAME header. */
  readonly targetPosition: number;
}

/**
 * HARDLINK content (§8). `fileNamePosition` is the link's own FILENAME header; the target must lie
 * strictly before it and not before `firstChildPosition` (the earliest place a FILENAME can be).
 * The target path must already be normal (no '.', '..', empty components or leading '/'):
 * extractors join it under the restore root, so anything else is refused rather than cleaned up.
 */
export function parseHardlink(
  h: ItemHeader,
  c: Uint8Array,
  fileNamePosition: number,
  firstChildPosition: number,
  source: string | undefined,
): HardlinkInfo {
  if (c.length < 9)
    throw pxarError(
      'PXAR_BAD_ITEM',
      source,
      h.position,
      `HARDLINK item has only ${c.length} content bytes`,
    );
  const offsetBig = view(c).getBigUint64(0, true);
  if (offsetBig === 0n)
    throw pxarError(
      'PXAR_BAD_HARDLINK',
      source,
      h.position,
      'hardlink offset is 0 (a link to itself)',
    );
  if (offsetBig > BigInt(fileNamePosition - firstChildPosition))
    throw pxarError(
      'PXAR_BAD_HARDLINK',
      source,
      h.position,
      `hardlink offset ${offsetBig} points before the first entry of the archive (at byte ${firstChildPosition})`,
      { hardlinkOffset: offsetBig.toString(), firstEntry: firstChildPosition },
    );
  const offset = Number(offsetBig);
  if (c[c.length - 1] !== 0)
    throw pxarError('PXAR_BAD_NAME', source, h.position, 'hardlink target is not NUL-terminated');
  const target = c.subarray(8, c.length - 1);
  const problem = relativePathProblem(target);
  if (problem !== undefined)
    throw pxarError(
      'PXAR_BAD_HARDLINK',
      source,
      h.position,
      `hardlink target ${printableName(target)} is not a relative archive path: ${problem}`,
      { target: printableName(target) },
    );
  return { offset, target: target.slice(), targetPosition: fileNamePosition - offset };
}

export function parseDevice(
  h: ItemHeader,
  c: Uint8Array,
  source: string | undefined,
): { major: number; minor: number } {
  requireContentSize(h, 16, source);
  return {
    major: u64(c, 0, h, 'device major', source),
    minor: u64(c, 8, h, 'device minor', source),
  };
}

export function parsePayloadRef(
  h: ItemHeader,
  c: Uint8Array,
  source: string | undefined,
): { offset: number; size: number } {
  requireContentSize(h, 16, source);
  return {
    offset: u64(c, 0, h, 'payload offset', source, 'PXAR_BAD_PAYLOAD'),
    size: u64(c, 8, h, 'payload size', source, 'PXAR_BAD_PAYLOAD'),
  };
}

/** The body item a non-directory of `kind` must have, for messages. */
export function bodyItemOf(kind: FileKind, version: 1 | 2): string {
  switch (kind) {
    case 'file':
      return version === 2 ? 'PAYLOAD_REF' : 'PAYLOAD';
    case 'symlink':
      return 'SYMLINK';
    case 'block-device':
    case 'char-device':
      return 'DEVICE';
    case 'directory':
    case 'fifo':
    case 'socket':
      return 'FILENAME or GOODBYE';
  }
}

/** Checks that a PAYLOAD_REF lies inside the payload stream and that a PAYLOAD header is there (§9.1). */
export async function checkPayloadHeader(
  payload: RandomAccess,
  offset: number,
  size: number,
  source: string | undefined,
  refPosition: number,
): Promise<void> {
  if (offset + 16 + size > payload.size)
    throw pxarError(
      'PXAR_BAD_PAYLOAD',
      source,
      refPosition,
      `payload reference (offset ${offset}, size ${size}) reaches past the end of the payload stream (${payload.size} bytes)`,
      { payloadOffset: offset, size, payloadSize: payload.size },
    );
  const header = await payload.readAt(offset, 16);
  if (header.length < 16)
    throw pxarError(
      'PXAR_TRUNCATED',
      source,
      refPosition,
      `payload stream is short at byte ${offset}`,
      {
        stream: 'payload',
        payloadOffset: offset,
        expected: 'a PAYLOAD header',
      },
    );
  const v = view(header);
  const type = v.getBigUint64(0, true);
  const fullSize = v.getBigUint64(8, true);
  if (type !== PXAR.PAYLOAD)
    throw pxarError(
      'PXAR_BAD_PAYLOAD',
      source,
      refPosition,
      `payload stream has ${itemTypeName(type)} at byte ${offset}, expected a PAYLOAD header`,
      { payloadOffset: offset, actual: itemTypeName(type) },
    );
  if (fullSize !== BigInt(16 + size))
    throw pxarError(
      'PXAR_BAD_PAYLOAD',
      source,
      refPosition,
      `PAYLOAD header at payload byte ${offset} has full_size ${fullSize}, expected ${16 + size}`,
      { payloadOffset: offset, expected: 16 + size, actual: fullSize.toString() },
    );
}

/** Checks that a payload stream starts with PAYLOAD_START_MARKER (§9.4). */
export async function checkPayloadStart(
  payload: RandomAccess,
  source: string | undefined,
): Promise<void> {
  const head = payload.size >= 16 ? await payload.readAt(0, 16) : EMPTY;
  const where = source === undefined ? 'payload stream' : `payload stream of ${source}`;
  if (head.length < 16)
    throw new BurrowError(
      'PXAR_BAD_PAYLOAD',
      `${where} is shorter than its start marker (at byte 0)`,
      {
        details: { offset: 0, stream: 'payload', expected: 'PAYLOAD_START_MARKER' },
      },
    );
  const v = view(head);
  if (v.getBigUint64(0, true) !== PXAR.PAYLOAD_START_MARKER || v.getBigUint64(8, true) !== 16n)
    throw new BurrowError(
      'PXAR_BAD_PAYLOAD',
      `${where} does not start with PAYLOAD_START_MARKER (at byte 0)`,
      {
        details: { offset: 0, stream: 'payload', expected: 'PAYLOAD_START_MARKER' },
      },
    );
}

/** Reads file data from a payload stream in pieces of at most CONTENT_PIECE_SIZE. */
export async function* readPayloadRange(
  payload: RandomAccess,
  start: number,
  length: number,
  source: string | undefined,
  refPosition: number,
  beforeRead?: () => void,
): AsyncGenerator<Uint8Array> {
  let pos = start;
  const end = start + length;
  while (pos < end) {
    beforeRead?.();
    const want = Math.min(CONTENT_PIECE_SIZE, end - pos);
    // Up to the end of the source's piece (a chunk): a view, no copy across chunks.
    const piece =
      payload.readPiece !== undefined
        ? await payload.readPiece(pos, want)
        : await payload.readAt(pos, want);
    if (piece.length === 0 || (payload.readPiece === undefined && piece.length < want))
      throw pxarError(
        'PXAR_TRUNCATED',
        source,
        refPosition,
        `payload stream ends at byte ${pos + piece.length}`,
        {
          stream: 'payload',
          payloadOffset: pos + piece.length,
          expected: `${end - pos - piece.length} more bytes of file data`,
        },
      );
    pos += piece.length;
    yield piece;
  }
}

// ---------------------------------------------------------------------------------------------
// The byte stream

/** Pulls bytes from an async iterable. Reads return views of the source's chunks where possible. */
class StreamReader {
  readonly #iterator: AsyncIterator<Uint8Array>;
  readonly #source: string | undefined;
  #chunk: Uint8Array = EMPTY;
  #at = 0;
  #eof = false;
  /** Absolute position of the next unread byte. */
  position = 0;

  constructor(input: AsyncIterable<Uint8Array>, source: string | undefined) {
    this.#iterator = input[Symbol.asyncIterator]();
    this.#source = source;
  }

  #truncated(expected: string): BurrowError {
    return pxarError(
      'PXAR_TRUNCATED',
      this.#source,
      this.position,
      `archive ends early: expected ${expected}`,
      { expected },
    );
  }

  /** Ensures at least one unread byte is buffered; false at the end of the stream. */
  async #more(): Promise<boolean> {
    while (this.#at >= this.#chunk.length) {
      if (this.#eof) return false;
      const next = await this.#iterator.next();
      if (next.done === true) {
        this.#eof = true;
        this.#chunk = EMPTY;
        this.#at = 0;
        return false;
      }
      if (!(next.value instanceof Uint8Array))
        throw new BurrowError(
          'INVALID_ARGUMENT',
          'pxar decoder input yielded something other than bytes',
        );
      this.#chunk = next.value;
      this.#at = 0;
    }
    return true;
  }

  /** `n` bytes if the current chunk has them (no await), else undefined. */
  take(n: number): Uint8Array | undefined {
    if (this.#chunk.length - this.#at < n) return undefined;
    const out = this.#chunk.subarray(this.#at, this.#at + n);
    this.#at += n;
    this.position += n;
    return out;
  }

  /** `expected` describes what was being read, for the truncation error (built only then). */
  async read(n: number, expected: () => string): Promise<Uint8Array> {
    const fast = this.take(n);
    if (fast !== undefined) return fast;
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (!(await this.#more())) throw this.#truncated(expected());
      const k = Math.min(this.#chunk.length - this.#at, n - filled);
      out.set(this.#chunk.subarray(this.#at, this.#at + k), filled);
      this.#at += k;
      this.position += k;
      filled += k;
    }
    return out;
  }

  async skip(n: number, expected: () => string): Promise<void> {
    let left = n;
    while (left > 0) {
      if (!(await this.#more())) throw this.#truncated(expected());
      const k = Math.min(this.#chunk.length - this.#at, left);
      this.#at += k;
      this.position += k;
      left -= k;
    }
  }

  /** Between 1 and `max` bytes, as a view of the source chunk. */
  async piece(max: number, expected: () => string): Promise<Uint8Array> {
    if (!(await this.#more())) throw this.#truncated(expected());
    const k = Math.min(this.#chunk.length - this.#at, max);
    const out = this.#chunk.subarray(this.#at, this.#at + k);
    this.#at += k;
    this.position += k;
    return out;
  }

  async atEnd(): Promise<boolean> {
    return !(await this.#more());
  }

  async close(): Promise<void> {
    await this.#iterator.return?.();
  }
}

// ---------------------------------------------------------------------------------------------
// The decoder

export type DecoderEvent =
  { type: 'entry'; entry: Entry } | { type: 'directory-end'; path: Uint8Array };

export interface DecoderOptions {
  /** The v2 payload stream (.ppxar); needed only to read file contents of split archives. */
  payload?: RandomAccess;
  /** Names the archive in error messages, e.g. its file path. */
  name?: string;
}

/** What the goodbye check needs to know about one child (§7.4). */
interface ChildRecord {
  /** The name hash as unsigned 32-bit halves (no BigInt in the per-item loops). */
  readonly hashHi: number;
  readonly hashLo: number;
  readonly start: number;
  /** Bytes from the FILENAME header to the end of the child's encoding. */
  readonly length: number;
  /**
   * Directories: the goodbye size must equal `length`. Anything else: it is only an upper bound
   * (§7.4, §12), because v2 writers add the file size for new content but not for reused payload.
   */
  readonly exact: boolean;
}

interface DirFrame {
  readonly path: Uint8Array;
  readonly hashHi: number;
  readonly hashLo: number;
  /** Position of the FILENAME header (the root has none: 0). */
  readonly fileNameStart: number;
  /** Where the goodbye tail's offset must point: the ENTRY header, or 0 for the root (§7.3). */
  readonly entryStart: number;
  readonly children: ChildRecord[];
  /** Names seen so far, keyed by the low half of their hash, to refuse duplicates. */
  readonly names: Map<number, Uint8Array[]>;
}

/** The child being decoded, for #leaf and #entryEvent. */
interface ChildContext {
  readonly frame: DirFrame;
  readonly name: Uint8Array;
  readonly hashHi: number;
  readonly hashLo: number;
  readonly start: number;
  readonly path: Uint8Array;
}

type ContentState =
  | { kind: 'inline'; path: Uint8Array; remaining: number; taken: boolean; cut: boolean }
  | {
      kind: 'ref';
      path: Uint8Array;
      offset: number;
      size: number;
      refPosition: number;
      taken: boolean;
    };

export class PxarDecoder {
  readonly #reader: StreamReader;
  readonly #payload: RandomAccess | undefined;
  readonly #source: string | undefined;
  readonly #stack: DirFrame[] = [];
  #version: 1 | 2 | undefined;
  #prelude: Uint8Array | undefined;
  #started = false;
  #finished = false;
  #busy = false;
  #failure: Error | undefined;
  /** A header already read that starts the next step (after a directory's or FIFO's attributes). */
  #pending: ItemHeader | undefined;
  #firstChildPosition = 0;
  #lastPayloadRef = -1;
  #content: ContentState | undefined;
  /** Bumped by every next(), so content iterators of earlier entries can tell they are stale. */
  #token = 0;

  constructor(archive: AsyncIterable<Uint8Array>, options: DecoderOptions = {}) {
    this.#source = options.name;
    this.#payload = options.payload;
    this.#reader = new StreamReader(archive, options.name);
  }

  formatVersion(): 1 | 2 | undefined {
    return this.#version;
  }

  prelude(): Uint8Array | undefined {
    return this.#prelude;
  }

  /**
   * Root directory entry first (path ''), then depth-first entries; 'directory-end' after each
   * directory's children (including the root's); then undefined. After an error every further
   * call throws the same error.
   */
  async next(): Promise<DecoderEvent | undefined> {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#busy)
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'PxarDecoder.next() called while another read is in progress',
      );
    this.#busy = true;
    try {
      return await this.#step();
    } catch (error) {
      this.#failure = asError(error);
      await this.#reader.close().catch(() => undefined);
      throw error;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Content of the current 'file' entry, in pieces of at most 1 MiB (views that stay valid).
   * Skipped automatically if not read before next(). v2 needs options.payload.
   */
  contents(): AsyncIterable<Uint8Array> {
    const state = this.#content;
    const token = this.#token;
    return { [Symbol.asyncIterator]: () => this.#pieces(state, token) };
  }

  async *#pieces(state: ContentState | undefined, token: number): AsyncGenerator<Uint8Array> {
    if (state === undefined || token !== this.#token)
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'contents(): the current entry is not a regular file',
      );
    if (state.taken)
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'contents(): the contents of this entry were already read',
      );
    state.taken = true;
    const check = (): void => {
      if (this.#failure !== undefined) throw this.#failure;
      if (token !== this.#token)
        throw new BurrowError(
          'INVALID_ARGUMENT',
          'contents(): next() was called; these contents are gone',
        );
      if (this.#busy)
        throw new BurrowError('INVALID_ARGUMENT', 'contents(): read while next() is in progress');
    };
    if (state.kind === 'inline') {
      // A skip by next() also empties `remaining`; `cut` keeps that from looking like the end.
      while (state.remaining > 0 || state.cut) {
        check();
        this.#busy = true;
        let piece: Uint8Array;
        try {
          piece = await this.#reader.piece(
            Math.min(state.remaining, CONTENT_PIECE_SIZE),
            () => `${state.remaining} more bytes of file data of ${printableName(state.path)}`,
          );
        } catch (error) {
          this.#failure = asError(error);
          throw error;
        } finally {
          this.#busy = false;
        }
        state.remaining -= piece.length;
        yield piece;
      }
      return;
    }
    const payload = this.#payload;
    if (payload === undefined)
      throw new BurrowError(
        'PXAR_PAYLOAD_REQUIRED',
        `${this.#source ?? 'pxar archive'}: ${printableName(state.path)} is in the payload stream (.ppxar), which was not given`,
        {
          details: {
            path: printableName(state.path),
            ...(this.#source === undefined ? {} : { archive: this.#source }),
          },
        },
      );
    check();
    await checkPayloadHeader(payload, state.offset, state.size, this.#source, state.refPosition);
    yield* readPayloadRange(
      payload,
      state.offset + 16,
      state.size,
      this.#source,
      state.refPosition,
      check,
    );
  }

  // -------------------------------------------------------------------------------------------

  // These two answer synchronously when the bytes are already buffered (the common case), so
  // callers can skip an await: a microtask per item adds up over millions of items.

  #header(expected: () => string): ItemHeader | Promise<ItemHeader> {
    const position = this.#reader.position;
    const bytes = this.#reader.take(16);
    if (bytes !== undefined) return decodeHeader(bytes, position, this.#source);
    return this.#reader.read(16, expected).then((b) => decodeHeader(b, position, this.#source));
  }

  #contentOf(h: ItemHeader): Uint8Array | Promise<Uint8Array> {
    return (
      this.#reader.take(h.contentSize) ??
      this.#reader.read(
        h.contentSize,
        () =>
          `${h.contentSize} content bytes of the ${itemTypeName(h.type)} item at byte ${h.position}`,
      )
    );
  }

  #badItem(h: ItemHeader, message: string): BurrowError {
    return pxarError('PXAR_BAD_ITEM', this.#source, h.position, message, {
      type: itemTypeName(h.type),
    });
  }

  async #step(): Promise<DecoderEvent | undefined> {
    this.#token++;
    const content = this.#content;
    this.#content = undefined;
    if (content?.kind === 'inline' && content.remaining > 0) {
      const remaining = content.remaining;
      content.remaining = 0;
      content.cut = true;
      await this.#reader.skip(
        remaining,
        () => `the rest of the file data of ${printableName(content.path)}`,
      );
    }
    if (!this.#started) {
      this.#started = true;
      return this.#start();
    }
    if (this.#finished) return undefined;
    const frame = this.#stack.at(-1);
    if (frame === undefined) {
      if (!(await this.#reader.atEnd()))
        throw pxarError(
          'PXAR_BAD_ITEM',
          this.#source,
          this.#reader.position,
          "data after the root directory's GOODBYE",
        );
      this.#finished = true;
      return undefined;
    }
    let h: ItemHeader | Promise<ItemHeader> =
      this.#pending ??
      this.#header(() => `a FILENAME or GOODBYE item in directory ${printableName(frame.path)}`);
    if (h instanceof Promise) h = await h;
    this.#pending = undefined;
    if (h.type === PXAR.FILENAME) return this.#child(frame, h);
    if (h.type === PXAR.GOODBYE) return this.#goodbye(frame, h);
    throw this.#badItem(h, `${itemTypeName(h.type)} item where a FILENAME or GOODBYE was expected`);
  }

  async #start(): Promise<DecoderEvent> {
    let h = await this.#header(() => 'the first item header');
    if (h.type === PXAR.FORMAT_VERSION) {
      requireContentSize(h, 8, this.#source);
      const version = view(await this.#contentOf(h)).getBigUint64(0, true);
      if (version !== 1n && version !== 2n)
        throw this.#badItem(h, `unsupported format version ${version}`);
      this.#version = version === 2n ? 2 : 1;
      h = await this.#header(() => 'the item after FORMAT_VERSION');
      if (h.type === PXAR.PRELUDE) {
        if (h.contentSize > MAX_PRELUDE_SIZE)
          throw this.#badItem(
            h,
            `PRELUDE of ${h.contentSize} bytes is larger than ${MAX_PRELUDE_SIZE}`,
          );
        this.#prelude = (await this.#contentOf(h)).slice();
        h = await this.#header(() => 'the root ENTRY');
      }
    } else {
      this.#version = 1;
    }
    if (this.#version === 2 && this.#payload !== undefined)
      await checkPayloadStart(this.#payload, this.#source);
    if (!isEntryType(h.type))
      throw this.#badItem(
        h,
        `${itemTypeName(h.type)} item where the root directory's ENTRY was expected`,
      );
    const stat = parseStat(h, await this.#contentOf(h), this.#source);
    const { metadata, next } = await this.#attributes(stat);
    if (kindOfMode(stat.mode) !== 'directory')
      throw pxarError(
        'PXAR_BAD_ITEM',
        this.#source,
        h.position,
        `the root entry is a ${kindOfMode(stat.mode)}, not a directory`,
      );
    if (next.type !== PXAR.FILENAME && next.type !== PXAR.GOODBYE)
      throw this.#badItem(
        next,
        `${itemTypeName(next.type)} item after the root directory's metadata`,
      );
    this.#firstChildPosition = next.position;
    this.#pending = next;
    this.#stack.push({
      path: EMPTY,
      hashHi: 0,
      hashLo: 0,
      fileNameStart: 0,
      entryStart: 0,
      children: [],
      names: new Map(),
    });
    return {
      type: 'entry',
      entry: { path: EMPTY, name: EMPTY, body: { kind: 'directory' }, metadata, fileNameOffset: 0 },
    };
  }

  /** Reads the attribute items after an ENTRY; returns the metadata and the first other header. */
  async #attributes(stat: Stat): Promise<{ metadata: Metadata; next: ItemHeader }> {
    const collector = new MetadataCollector(this.#source);
    for (;;) {
      const hp = this.#header(() => 'the item after an ENTRY or attribute');
      const h = hp instanceof Promise ? await hp : hp;
      if (!isAttributeType(h.type)) return { metadata: collector.finish(stat), next: h };
      const cp = this.#contentOf(h);
      collector.add(h, cp instanceof Promise ? await cp : cp);
    }
  }

  /** Records a finished non-directory child for the goodbye check and makes its event. */
  #leaf(c: ChildContext, end: number, body: EntryKind, metadata?: Metadata): DecoderEvent {
    c.frame.children.push({
      hashHi: c.hashHi,
      hashLo: c.hashLo,
      start: c.start,
      length: end - c.start,
      exact: false,
    });
    return this.#entryEvent(c, body, metadata);
  }

  #entryEvent(c: ChildContext, body: EntryKind, metadata?: Metadata): DecoderEvent {
    const entry: Entry =
      metadata === undefined
        ? { path: c.path, name: c.name, body, fileNameOffset: c.start }
        : { path: c.path, name: c.name, body, metadata, fileNameOffset: c.start };
    return { type: 'entry', entry };
  }

  #mismatch(next: ItemHeader, path: Uint8Array, kind: FileKind): BurrowError {
    return this.#badItem(
      next,
      `${itemTypeName(next.type)} item follows the metadata of ${printableName(path)}, whose mode says ${kind} (expected ${bodyItemOf(kind, this.#version ?? 1)})`,
    );
  }

  #checkNewName(frame: DirFrame, name: Uint8Array, hashLo: number, start: number): void {
    const same = frame.names.get(hashLo);
    if (same === undefined) {
      frame.names.set(hashLo, [name]);
      return;
    }
    for (const other of same)
      if (Buffer.compare(other, name) === 0)
        throw pxarError(
          'PXAR_BAD_NAME',
          this.#source,
          start,
          `duplicate name ${printableName(name)} in directory ${printableName(frame.path)}`,
        );
    same.push(name);
  }

  async #child(frame: DirFrame, fn: ItemHeader): Promise<DecoderEvent> {
    const source = this.#source;
    const start = fn.position;
    const np = this.#contentOf(fn);
    const name = parseFileName(fn, np instanceof Promise ? await np : np, source);
    const hash = pxarHash(name);
    const hashHi = Number(hash >> 32n);
    const hashLo = Number(hash & 0xffffffffn);
    this.#checkNewName(frame, name, hashLo, start);
    const path = joinPath(frame.path, name);
    if (path.length > MAX_PATH_LENGTH)
      throw pxarError(
        'PXAR_BAD_NAME',
        source,
        start,
        `path is longer than ${MAX_PATH_LENGTH} bytes`,
      );
    const c: ChildContext = { frame, name, hashHi, hashLo, start, path };

    const hp = this.#header(() => `the ENTRY or HARDLINK of ${printableName(path)}`);
    const h = hp instanceof Promise ? await hp : hp;
    if (h.type === PXAR.HARDLINK) {
      const link = parseHardlink(
        h,
        await this.#contentOf(h),
        start,
        this.#firstChildPosition,
        source,
      );
      return this.#leaf(c, h.end, { kind: 'hardlink', target: link.target, offset: link.offset });
    }
    if (!isEntryType(h.type))
      throw this.#badItem(
        h,
        `${itemTypeName(h.type)} item after FILENAME ${printableName(name)}; expected ENTRY or HARDLINK`,
      );
    const sp = this.#contentOf(h);
    const stat = parseStat(h, sp instanceof Promise ? await sp : sp, source);
    const kind = kindOfMode(stat.mode) as FileKind;
    const { metadata, next } = await this.#attributes(stat);
    const version = this.#version ?? 1;

    switch (next.type) {
      case PXAR.PAYLOAD: {
        if (kind !== 'file') throw this.#mismatch(next, path, kind);
        if (version === 2) throw this.#badItem(next, 'inline PAYLOAD item in a split (v2) archive');
        this.#content = {
          kind: 'inline',
          path,
          remaining: next.contentSize,
          taken: false,
          cut: false,
        };
        return this.#leaf(
          c,
          next.end,
          { kind: 'file', size: next.contentSize, payloadOffset: next.position },
          metadata,
        );
      }
      case PXAR.PAYLOAD_REF: {
        if (kind !== 'file') throw this.#mismatch(next, path, kind);
        if (version !== 2)
          throw this.#badItem(next, 'PAYLOAD_REF item in an archive without FORMAT_VERSION 2');
        const rp = this.#contentOf(next);
        const ref = parsePayloadRef(next, rp instanceof Promise ? await rp : rp, source);
        if (ref.offset <= this.#lastPayloadRef)
          throw pxarError(
            'PXAR_BAD_PAYLOAD',
            source,
            next.position,
            `payload offset ${ref.offset} is not after the previous one (${this.#lastPayloadRef})`,
            { payloadOffset: ref.offset, previous: this.#lastPayloadRef },
          );
        if (this.#payload !== undefined && ref.offset + 16 + ref.size > this.#payload.size)
          throw pxarError(
            'PXAR_BAD_PAYLOAD',
            source,
            next.position,
            `payload reference (offset ${ref.offset}, size ${ref.size}) reaches past the end of the payload stream (${this.#payload.size} bytes)`,
            { payloadOffset: ref.offset, size: ref.size, payloadSize: this.#payload.size },
          );
        this.#lastPayloadRef = ref.offset;
        this.#content = {
          kind: 'ref',
          path,
          offset: ref.offset,
          size: ref.size,
          refPosition: next.position,
          taken: false,
        };
        return this.#leaf(
          c,
          next.end,
          { kind: 'file', size: ref.size, payloadOffset: ref.offset },
          metadata,
        );
      }
      case PXAR.SYMLINK: {
        if (kind !== 'symlink') throw this.#mismatch(next, path, kind);
        const target = parseSymlink(next, await this.#contentOf(next), source);
        return this.#leaf(c, next.end, { kind: 'symlink', target }, metadata);
      }
      case PXAR.DEVICE: {
        if (kind !== 'block-device' && kind !== 'char-device')
          throw this.#mismatch(next, path, kind);
        const dev = parseDevice(next, await this.#contentOf(next), source);
        return this.#leaf(c, next.end, { kind, major: dev.major, minor: dev.minor }, metadata);
      }
      case PXAR.FILENAME:
      case PXAR.GOODBYE: {
        // §5: these start the next sibling or close the parent for a FIFO or socket, and start a
        // directory's children (or close it) for a directory.
        this.#pending = next;
        if (kind === 'fifo' || kind === 'socket')
          return this.#leaf(c, next.position, { kind }, metadata);
        if (kind !== 'directory') throw this.#mismatch(next, path, kind);
        if (this.#stack.length > MAX_DIRECTORY_DEPTH)
          throw pxarError(
            'PXAR_BAD_ITEM',
            source,
            start,
            `directories are nested more than ${MAX_DIRECTORY_DEPTH} deep`,
            { maxDepth: MAX_DIRECTORY_DEPTH },
          );
        this.#stack.push({
          path,
          hashHi,
          hashLo,
          fileNameStart: start,
          entryStart: h.position,
          children: [],
          names: new Map(),
        });
        return this.#entryEvent(c, { kind: 'directory' }, metadata);
      }
      default:
        throw this.#badItem(
          next,
          `${itemTypeName(next.type)} item follows the metadata of ${printableName(path)}`,
        );
    }
  }

  /** Checks a directory's goodbye table against the children seen (§7.2–§7.4), then closes it. */
  async #goodbye(frame: DirFrame, h: ItemHeader): Promise<DecoderEvent> {
    const source = this.#source;
    const children = frame.children;
    const n = children.length;
    const dir = (): string => printableName(frame.path);
    const expectedSize = 16 + GOODBYE_ITEM_SIZE * (n + 1);
    if (h.fullSize !== expectedSize)
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        h.position,
        `GOODBYE of directory ${dir()} is ${h.fullSize} bytes; with ${n} children it must be ${expectedSize}`,
        { expected: expectedSize, actual: h.fullSize, children: n },
      );
    // Children by hash (unsigned), then in §7.3 tree order: what each slot must hold.
    const sorted = Array.from({ length: n }, (_, i) => i).sort(
      (a, b) =>
        children[a]!.hashHi - children[b]!.hashHi || children[a]!.hashLo - children[b]!.hashLo,
    );
    const order = goodbyeTreeOrder(n);
    const byStart = new Map<number, number>();
    for (let i = 0; i < n; i++) byStart.set(children[i]!.start, i);
    const used = new Uint8Array(n);
    const goodbyeStart = h.position;
    for (let slot = 0; slot <= n; slot++) {
      const at = this.#reader.position;
      const bytes =
        this.#reader.take(GOODBYE_ITEM_SIZE) ??
        (await this.#reader.read(
          GOODBYE_ITEM_SIZE,
          () => `goodbye item ${slot} of directory ${dir()}`,
        ));
      const hashLo = u32le(bytes, 0);
      const hashHi = u32le(bytes, 4);
      const offset = u64number(bytes, 8);
      const size = u64number(bytes, 16);
      const raw = (at8: number): string => view(bytes).getBigUint64(at8, true).toString();
      if (slot === n) {
        const tailOffset = goodbyeStart - frame.entryStart;
        if (
          hashHi !== TAIL_HI ||
          hashLo !== TAIL_LO ||
          offset !== tailOffset ||
          size !== h.fullSize
        )
          throw pxarError(
            'PXAR_BAD_GOODBYE',
            source,
            at,
            `goodbye tail of directory ${dir()} is {hash ${hex64(hashHi, hashLo)}, offset ${raw(8)}, size ${raw(16)}}; expected {GOODBYE_TAIL_MARKER, offset ${tailOffset}, size ${h.fullSize}}`,
            {
              expected: { offset: tailOffset, size: h.fullSize },
              actual: { offset: raw(8), size: raw(16) },
            },
          );
        break;
      }
      const want = children[sorted[order[slot]!]!]!;
      if (hashHi !== want.hashHi || hashLo !== want.hashLo)
        throw pxarError(
          'PXAR_BAD_GOODBYE',
          source,
          at,
          `goodbye item ${slot} of directory ${dir()} has hash ${hex64(hashHi, hashLo)}; the children sorted into tree order need ${hex64(want.hashHi, want.hashLo)}`,
          { slot, expected: hex64(want.hashHi, want.hashLo), actual: hex64(hashHi, hashLo) },
        );
      const index = offset <= goodbyeStart ? byStart.get(goodbyeStart - offset) : undefined;
      const child = index === undefined ? undefined : children[index];
      if (
        index === undefined ||
        child === undefined ||
        used[index] === 1 ||
        child.hashHi !== hashHi ||
        child.hashLo !== hashLo
      )
        throw pxarError(
          'PXAR_BAD_GOODBYE',
          source,
          at,
          `goodbye item ${slot} of directory ${dir()} has offset ${raw(8)}, which does not lead to an unlisted child with its hash`,
          { slot, goodbyeOffset: raw(8) },
        );
      used[index] = 1;
      if (size < child.length || (child.exact && size !== child.length))
        throw pxarError(
          'PXAR_BAD_GOODBYE',
          source,
          at,
          `goodbye item ${slot} of directory ${dir()} gives size ${raw(16)} for the child at byte ${child.start}, whose encoding is ${child.length} bytes${child.exact ? '' : ' (more is allowed, less is not)'}`,
          { slot, expected: child.length, actual: raw(16) },
        );
    }
    this.#stack.pop();
    const parent = this.#stack.at(-1);
    if (parent !== undefined)
      parent.children.push({
        hashHi: frame.hashHi,
        hashLo: frame.hashLo,
        start: frame.fileNameStart,
        length: h.end - frame.fileNameStart,
        exact: true,
      });
    return { type: 'directory-end', path: frame.path };
  }
}
