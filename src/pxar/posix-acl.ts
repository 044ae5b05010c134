/**
 * Linux POSIX ACL xattrs (`system.posix_acl_access`, `system.posix_acl_default`) to and from the
 * pxar Acl model (pxar-format.md §4, §10 item 3).
 *
 * The xattr value is a u32 LE version (2) followed by 8-byte entries: u16 tag, u16 permissions,
 * u32 id. The owner, group-owner, mask and other entries carry no id (0xffffffff on the wire).
 *
 * pxar stores only what the mode bits do not already hold: for the access ACL the named users and
 * groups, and the group-owner bits when a mask exists (the mode's group bits are then the mask);
 * for the default ACL every entry, since the mode says nothing about it. Rebuilding an access ACL
 * therefore needs the entry's mode.
 */
import { BurrowError } from '../lib/errors.js';
import { S_IFDIR, S_IFMT } from './format.js';
import type { Acl, AclDefault, AclEntry } from './format.js';

export const POSIX_ACL_XATTR_VERSION = 2;
export const ACL_ACCESS_XATTR = 'system.posix_acl_access';
export const ACL_DEFAULT_XATTR = 'system.posix_acl_default';

/** Entry tags of the xattr format (linux/posix_acl.h). */
export const ACL_TAG = Object.freeze({
  USER_OBJ: 0x01,
  USER: 0x02,
  GROUP_OBJ: 0x04,
  GROUP: 0x08,
  MASK: 0x10,
  OTHER: 0x20,
});

/** The id written for entries that have none. */
export const ACL_UNDEFINED_ID = 0xffffffff;

const HEADER_SIZE = 4;
const ENTRY_SIZE = 8;

/** One raw entry of an ACL xattr. */
export interface PosixAclEntry {
  readonly tag: number;
  readonly permissions: number;
  readonly id: number;
}

type Which = 'access' | 'default';

function xattrName(which: Which): string {
  return which === 'access' ? ACL_ACCESS_XATTR : ACL_DEFAULT_XATTR;
}

function invalid(which: Which, message: string, details: Record<string, unknown>): BurrowError {
  return new BurrowError('INVALID_ARGUMENT', `${xattrName(which)}: ${message}`, {
    details: { xattr: xattrName(which), ...details },
  });
}

function tagName(tag: number): string {
  for (const [name, value] of Object.entries(ACL_TAG)) if (value === tag) return name;
  return `0x${tag.toString(16)}`;
}

/**
 * Parses an ACL xattr value into its entries and checks it the way the kernel does when the value
 * is set: owner, named users, group owner, named groups, mask, other, in that order; exactly one
 * owner, group owner and other; a mask whenever there are named entries; permissions within rwx.
 * A value with a header and no entries means "no ACL" (the kernel treats it so) and gives [].
 */
export function parsePosixAcl(value: Uint8Array, which: Which = 'access'): PosixAclEntry[] {
  if (value.length < HEADER_SIZE)
    throw invalid(which, `value of ${value.length} bytes is shorter than the 4-byte header`, {
      offset: 0,
      expected: HEADER_SIZE,
      actual: value.length,
    });
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const version = view.getUint32(0, true);
  if (version !== POSIX_ACL_XATTR_VERSION)
    throw invalid(which, `version ${version} at offset 0, expected ${POSIX_ACL_XATTR_VERSION}`, {
      offset: 0,
      expected: POSIX_ACL_XATTR_VERSION,
      actual: version,
    });
  if ((value.length - HEADER_SIZE) % ENTRY_SIZE !== 0)
    throw invalid(
      which,
      `value of ${value.length} bytes is not a 4-byte header plus whole 8-byte entries`,
      { offset: value.length - ((value.length - HEADER_SIZE) % ENTRY_SIZE), size: value.length },
    );
  const entries: PosixAclEntry[] = [];
  for (let at = HEADER_SIZE; at < value.length; at += ENTRY_SIZE) {
    entries.push({
      tag: view.getUint16(at, true),
      permissions: view.getUint16(at + 2, true),
      id: view.getUint32(at + 4, true),
    });
  }
  if (entries.length > 0) checkOrder(entries, which);
  return entries;
}

/** The kernel's validity rule (posix_acl_valid) as a state machine over the tags. */
function checkOrder(entries: readonly PosixAclEntry[], which: Which): void {
  // 0 expects USER_OBJ, 1 USER* or GROUP_OBJ, 2 GROUP* / MASK / OTHER, 3 OTHER, 4 done.
  let state = 0;
  let named = false;
  entries.forEach((entry, index) => {
    const offset = HEADER_SIZE + index * ENTRY_SIZE;
    const bad = (why: string): BurrowError =>
      invalid(which, `entry ${index} (${tagName(entry.tag)}) at offset ${offset}: ${why}`, {
        offset,
        entry: index,
        tag: entry.tag,
      });
    if (entry.permissions > 7) throw bad(`permissions 0x${entry.permissions.toString(16)} > 7`);
    switch (entry.tag) {
      case ACL_TAG.USER_OBJ:
        if (state !== 0) throw bad('out of order or repeated');
        state = 1;
        break;
      case ACL_TAG.USER:
        if (state !== 1) throw bad('out of order');
        named = true;
        break;
      case ACL_TAG.GROUP_OBJ:
        if (state !== 1) throw bad('out of order or repeated');
        state = 2;
        break;
      case ACL_TAG.GROUP:
        if (state !== 2) throw bad('out of order');
        named = true;
        break;
      case ACL_TAG.MASK:
        if (state !== 2) throw bad('out of order or repeated');
        state = 3;
        break;
      case ACL_TAG.OTHER:
        if (state === 3 || (state === 2 && !named)) state = 4;
        else if (state === 2) throw bad('named entries need a mask entry before other');
        else throw bad('out of order or repeated');
        break;
      default:
        throw bad('unknown tag');
    }
    if (state === 4 && index !== entries.length - 1)
      throw invalid(which, `entries follow the OTHER entry at offset ${offset}`, {
        offset: offset + ENTRY_SIZE,
      });
  });
  if (state !== 4)
    throw invalid(which, 'the ACL lacks its owner, group-owner or other entry', {
      offset: HEADER_SIZE + entries.length * ENTRY_SIZE,
    });
}

/** Builds an xattr value from entries given in kernel order (see parsePosixAcl). */
export function buildPosixAcl(entries: readonly PosixAclEntry[]): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + entries.length * ENTRY_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(0, POSIX_ACL_XATTR_VERSION, true);
  entries.forEach((entry, index) => {
    const at = HEADER_SIZE + index * ENTRY_SIZE;
    view.setUint16(at, entry.tag, true);
    view.setUint16(at + 2, entry.permissions, true);
    view.setUint32(at + 4, entry.id, true);
  });
  return out;
}

/** Named entries in the order pxar stores them (§10 item 3): by id, then permissions. */
export function sortAclEntries(entries: readonly AclEntry[]): AclEntry[] {
  return [...entries].sort((a, b) => a.id - b.id || a.permissions - b.permissions);
}

function named(entries: readonly PosixAclEntry[], tag: number): AclEntry[] {
  return sortAclEntries(
    entries.filter((e) => e.tag === tag).map((e) => ({ id: e.id, permissions: e.permissions })),
  );
}

function single(entries: readonly PosixAclEntry[], tag: number): number | undefined {
  return entries.find((e) => e.tag === tag)?.permissions;
}

/**
 * The pxar Acl of an entry from the raw values of its two ACL xattrs (null when absent). Throws
 * INVALID_ARGUMENT for a malformed value; the caller decides whether that is only a warning.
 * `statMode` is accepted for symmetry with aclToXattrs; the mode adds nothing when reading.
 */
export function aclFromXattrs(
  access: Uint8Array | null,
  deflt: Uint8Array | null,
  _statMode?: number,
): Acl {
  const a = access === null ? [] : parsePosixAcl(access, 'access');
  const d = deflt === null ? [] : parsePosixAcl(deflt, 'default');
  const acl: {
    users: AclEntry[];
    groups: AclEntry[];
    groupObj?: number;
    default?: AclDefault;
    defaultUsers: AclEntry[];
    defaultGroups: AclEntry[];
  } = {
    users: named(a, ACL_TAG.USER),
    groups: named(a, ACL_TAG.GROUP),
    defaultUsers: named(d, ACL_TAG.USER),
    defaultGroups: named(d, ACL_TAG.GROUP),
  };
  // Without a mask the group-owner bits are the mode's group bits: nothing to add.
  if (single(a, ACL_TAG.MASK) !== undefined) acl.groupObj = single(a, ACL_TAG.GROUP_OBJ);
  if (d.length > 0) {
    const def: { userObj?: number; groupObj?: number; other?: number; mask?: number } = {};
    const userObj = single(d, ACL_TAG.USER_OBJ);
    const groupObj = single(d, ACL_TAG.GROUP_OBJ);
    const other = single(d, ACL_TAG.OTHER);
    const mask = single(d, ACL_TAG.MASK);
    if (userObj !== undefined) def.userObj = userObj;
    if (groupObj !== undefined) def.groupObj = groupObj;
    if (other !== undefined) def.other = other;
    if (mask !== undefined) def.mask = mask;
    acl.default = def;
  }
  return acl;
}

function checkPermissions(which: Which, what: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > 7)
    throw invalid(which, `${what} permissions ${value} are not within 0..7`, {
      what,
      permissions: value,
    });
  return value;
}

/** Named entries sorted by id as the kernel order wants, rejecting ids it would refuse. */
function namedEntries(which: Which, tag: number, entries: readonly AclEntry[]): PosixAclEntry[] {
  const what = tag === ACL_TAG.USER ? 'user' : 'group';
  const sorted = [...entries].sort((x, y) => x.id - y.id);
  return sorted.map((entry, index) => {
    if (!Number.isInteger(entry.id) || entry.id < 0 || entry.id >= ACL_UNDEFINED_ID)
      throw invalid(which, `named ${what} id ${entry.id} is not a valid 32-bit id`, {
        id: entry.id,
      });
    if (index > 0 && sorted[index - 1]!.id === entry.id)
      throw invalid(which, `named ${what} id ${entry.id} appears more than once`, {
        id: entry.id,
      });
    return {
      tag,
      id: entry.id,
      permissions: checkPermissions(which, `${what} ${entry.id}`, entry.permissions),
    };
  });
}

/** The union of the group-class permissions, the mask setfacl computes when none is given. */
function unionMask(groupObj: number, namedEntries: readonly PosixAclEntry[]): number {
  return namedEntries.reduce((m, e) => m | e.permissions, groupObj);
}

function objEntry(tag: number, permissions: number): PosixAclEntry {
  return { tag, permissions, id: ACL_UNDEFINED_ID };
}

/**
 * The xattr values that restore `acl` on an entry whose full st_mode is `statMode`; a value is
 * absent when the entry needs no such ACL (an access ACL equal to the mode bits, no default ACL).
 * Throws INVALID_ARGUMENT for an Acl the kernel would refuse (bad ids or permissions, duplicate
 * ids, a default ACL without owner/group-owner/other, a default ACL on a non-directory).
 *
 * A mask missing where named entries need one (never written by PBS, but possible in other
 * archives) is computed as setfacl does, from the group-class entries.
 */
export function aclToXattrs(
  acl: Acl,
  statMode: number,
): { access?: Uint8Array; default?: Uint8Array } {
  const result: { access?: Uint8Array; default?: Uint8Array } = {};
  const groupBits = (statMode >> 3) & 7;

  if (acl.users.length > 0 || acl.groups.length > 0 || acl.groupObj !== undefined) {
    const users = namedEntries('access', ACL_TAG.USER, acl.users);
    const groups = namedEntries('access', ACL_TAG.GROUP, acl.groups);
    // With group_obj stored, the mode's group bits are the mask; without it they are the
    // group-owner bits and the mask has to be derived.
    const groupObj =
      acl.groupObj === undefined
        ? groupBits
        : checkPermissions('access', 'group owner', acl.groupObj);
    const mask =
      acl.groupObj === undefined ? unionMask(groupObj, [...users, ...groups]) : groupBits;
    result.access = buildPosixAcl([
      objEntry(ACL_TAG.USER_OBJ, (statMode >> 6) & 7),
      ...users,
      objEntry(ACL_TAG.GROUP_OBJ, groupObj),
      ...groups,
      objEntry(ACL_TAG.MASK, mask),
      objEntry(ACL_TAG.OTHER, statMode & 7),
    ]);
  }

  const def = acl.default;
  if (def !== undefined || acl.defaultUsers.length > 0 || acl.defaultGroups.length > 0) {
    if ((statMode & S_IFMT) !== S_IFDIR)
      throw invalid('default', 'only directories can have a default ACL', { mode: statMode });
    const missing = (['userObj', 'groupObj', 'other'] as const).filter(
      (k) => def?.[k] === undefined,
    );
    if (def === undefined || missing.length > 0)
      throw invalid('default', `the default ACL lacks its ${missing.join(', ')} entry`, {
        missing,
      });
    const users = namedEntries('default', ACL_TAG.USER, acl.defaultUsers);
    const groups = namedEntries('default', ACL_TAG.GROUP, acl.defaultGroups);
    const groupObj = checkPermissions('default', 'group owner', def.groupObj!);
    const entries: PosixAclEntry[] = [
      objEntry(ACL_TAG.USER_OBJ, checkPermissions('default', 'owner', def.userObj!)),
      ...users,
      objEntry(ACL_TAG.GROUP_OBJ, groupObj),
      ...groups,
    ];
    if (def.mask !== undefined)
      entries.push(objEntry(ACL_TAG.MASK, checkPermissions('default', 'mask', def.mask)));
    else if (users.length > 0 || groups.length > 0)
      entries.push(objEntry(ACL_TAG.MASK, unionMask(groupObj, [...users, ...groups])));
    entries.push(objEntry(ACL_TAG.OTHER, checkPermissions('default', 'other', def.other!)));
    result.default = buildPosixAcl(entries);
  }
  return result;
}
