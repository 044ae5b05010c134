import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { chmodSync, lstatSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aclFromXattrs, aclToXattrs, buildPosixAcl, parsePosixAcl } from './posix-acl.js';
import type { Acl, AclEntry } from './format.js';
import { EMPTY_ACL } from './format.js';
import { lGetXattr, lSetXattr, nativeAvailable } from '../lib/native-fs.js';
import { codeOf } from '../../test/helpers/error-code.js';

/** Bytes from hex written with spaces for readability. */
const hex = (text: string): Uint8Array => Buffer.from(text.replace(/\s+/g, ''), 'hex');

// Hand-assembled values: version 2, then (tag u16, perm u16, id u32) little-endian.
const V2 = '02000000';
const USER_OBJ = (p: number): string => `0100 0${p}00 ffffffff`;
const GROUP_OBJ = (p: number): string => `0400 0${p}00 ffffffff`;
const MASK = (p: number): string => `1000 0${p}00 ffffffff`;
const OTHER = (p: number): string => `2000 0${p}00 ffffffff`;
const USER = (p: number, idLe: string): string => `0200 0${p}00 ${idLe}`;
const GROUP = (p: number, idLe: string): string => `0800 0${p}00 ${idLe}`;

/** `setfacl -m u:1000:rw-,u:7:r--,g:100:r-x` on a 0640 file: mask rwx. */
const ACCESS_NAMED = hex(
  V2 +
    USER_OBJ(6) +
    USER(4, '07000000') +
    USER(6, 'e8030000') +
    GROUP_OBJ(4) +
    GROUP(5, '64000000') +
    MASK(7) +
    OTHER(0),
);

describe('parsePosixAcl / buildPosixAcl', () => {
  it('reads the entries of a hand-assembled value and writes the same bytes back', () => {
    const entries = parsePosixAcl(ACCESS_NAMED);
    expect(entries).toEqual([
      { tag: 1, permissions: 6, id: 0xffffffff },
      { tag: 2, permissions: 4, id: 7 },
      { tag: 2, permissions: 6, id: 1000 },
      { tag: 4, permissions: 4, id: 0xffffffff },
      { tag: 8, permissions: 5, id: 100 },
      { tag: 0x10, permissions: 7, id: 0xffffffff },
      { tag: 0x20, permissions: 0, id: 0xffffffff },
    ]);
    expect(Buffer.from(buildPosixAcl(entries))).toEqual(Buffer.from(ACCESS_NAMED));
  });

  it('treats a header without entries as no ACL, as the kernel does', () => {
    expect(parsePosixAcl(hex(V2))).toEqual([]);
  });

  it.each([
    ['empty value', ''],
    ['short header', '0200'],
    ['version 1', '01000000' + USER_OBJ(6) + GROUP_OBJ(4) + OTHER(4)],
    ['partial entry', V2 + USER_OBJ(6) + GROUP_OBJ(4) + OTHER(4) + '0100'],
    ['unknown tag', V2 + USER_OBJ(6) + '4000 0400 ffffffff' + GROUP_OBJ(4) + OTHER(4)],
    ['permissions above rwx', V2 + USER_OBJ(6) + '0400 0800 ffffffff' + OTHER(4)],
    ['missing other', V2 + USER_OBJ(6) + GROUP_OBJ(4)],
    ['missing owner', V2 + GROUP_OBJ(4) + OTHER(4)],
    ['owner twice', V2 + USER_OBJ(6) + USER_OBJ(6) + GROUP_OBJ(4) + OTHER(4)],
    ['named user without mask', V2 + USER_OBJ(6) + USER(6, '01000000') + GROUP_OBJ(4) + OTHER(4)],
    ['group before user', V2 + GROUP_OBJ(4) + USER_OBJ(6) + OTHER(4)],
    [
      'named user after group owner',
      V2 + USER_OBJ(6) + GROUP_OBJ(4) + USER(6, '01000000') + MASK(6) + OTHER(4),
    ],
    ['entry after other', V2 + USER_OBJ(6) + GROUP_OBJ(4) + OTHER(4) + OTHER(4)],
    ['mask twice', V2 + USER_OBJ(6) + GROUP_OBJ(4) + MASK(4) + MASK(4) + OTHER(4)],
  ])('rejects a malformed value (%s) with INVALID_ARGUMENT', (_why, value) => {
    expect(codeOf(() => parsePosixAcl(hex(value)))).toBe('INVALID_ARGUMENT');
  });

  it('names the xattr and the offset of the problem', () => {
    try {
      parsePosixAcl(hex(V2 + USER_OBJ(6) + '4000 0400 ffffffff' + OTHER(4)), 'default');
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).toContain('system.posix_acl_default');
      expect((error as { details: { offset: number } }).details.offset).toBe(12);
    }
  });

  it('never throws anything but INVALID_ARGUMENT on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const code = codeOf(() => parsePosixAcl(bytes));
        expect(code === undefined || code === 'INVALID_ARGUMENT').toBe(true);
      }),
    );
  });
});

describe('aclFromXattrs', () => {
  it('keeps named entries sorted by (id, permissions) and group_obj only with a mask', () => {
    const acl = aclFromXattrs(ACCESS_NAMED, null, 0o100670);
    expect(acl).toEqual({
      users: [
        { id: 7, permissions: 4 },
        { id: 1000, permissions: 6 },
      ],
      groups: [{ id: 100, permissions: 5 }],
      groupObj: 4,
      defaultUsers: [],
      defaultGroups: [],
    });
  });

  it('sorts named entries given out of id order', () => {
    const value = hex(
      V2 +
        USER_OBJ(7) +
        USER(4, 'e8030000') +
        USER(6, '07000000') +
        GROUP_OBJ(5) +
        MASK(7) +
        OTHER(5),
    );
    expect(aclFromXattrs(value, null).users).toEqual([
      { id: 7, permissions: 6 },
      { id: 1000, permissions: 4 },
    ]);
  });

  it('stores nothing for a minimal access ACL (the mode holds it all)', () => {
    const minimal = hex(V2 + USER_OBJ(6) + GROUP_OBJ(4) + OTHER(4));
    expect(aclFromXattrs(minimal, null)).toEqual(EMPTY_ACL);
    expect(aclFromXattrs(null, null)).toEqual(EMPTY_ACL);
  });

  it('keeps group_obj for a mask-only access ACL', () => {
    const maskOnly = hex(V2 + USER_OBJ(7) + GROUP_OBJ(7) + MASK(5) + OTHER(0));
    expect(aclFromXattrs(maskOnly, null).groupObj).toBe(7);
  });

  it('maps a default ACL with absent mask to undefined (NO_MASK)', () => {
    const deflt = hex(V2 + USER_OBJ(7) + GROUP_OBJ(5) + OTHER(1));
    expect(aclFromXattrs(null, deflt, 0o40755)).toEqual({
      users: [],
      groups: [],
      default: { userObj: 7, groupObj: 5, other: 1 },
      defaultUsers: [],
      defaultGroups: [],
    });
    const withNamed = hex(
      V2 +
        USER_OBJ(7) +
        USER(2, '05000000') +
        GROUP_OBJ(5) +
        GROUP(1, '09000000') +
        MASK(6) +
        OTHER(0),
    );
    expect(aclFromXattrs(null, withNamed, 0o40755)).toEqual({
      users: [],
      groups: [],
      default: { userObj: 7, groupObj: 5, other: 0, mask: 6 },
      defaultUsers: [{ id: 5, permissions: 2 }],
      defaultGroups: [{ id: 9, permissions: 1 }],
    });
  });
});

describe('aclToXattrs', () => {
  it('rebuilds the access ACL bytes from the model and the mode', () => {
    const acl = aclFromXattrs(ACCESS_NAMED, null);
    // Mode 0670: owner rw-, the group bits hold the mask rwx, other ---.
    expect(Buffer.from(aclToXattrs(acl, 0o100670).access!)).toEqual(Buffer.from(ACCESS_NAMED));
    expect(aclToXattrs(acl, 0o100670).default).toBeUndefined();
  });

  it('writes nothing for an empty Acl', () => {
    expect(aclToXattrs(EMPTY_ACL, 0o100644)).toEqual({});
  });

  it('derives the mask from the group class when group_obj is absent', () => {
    const acl: Acl = { ...EMPTY_ACL, users: [{ id: 1, permissions: 2 }] };
    // Group bits r-- are then the group owner; mask = r-- | -w- = rw-.
    const expected = hex(
      V2 + USER_OBJ(6) + USER(2, '01000000') + GROUP_OBJ(4) + MASK(6) + OTHER(0),
    );
    expect(Buffer.from(aclToXattrs(acl, 0o100640).access!)).toEqual(Buffer.from(expected));
  });

  it('writes a default ACL with and without mask', () => {
    const acl: Acl = {
      ...EMPTY_ACL,
      default: { userObj: 7, groupObj: 5, other: 1 },
    };
    expect(Buffer.from(aclToXattrs(acl, 0o40755).default!)).toEqual(
      Buffer.from(hex(V2 + USER_OBJ(7) + GROUP_OBJ(5) + OTHER(1))),
    );
    const named: Acl = {
      ...EMPTY_ACL,
      default: { userObj: 7, groupObj: 5, other: 0, mask: 6 },
      defaultUsers: [{ id: 5, permissions: 2 }],
      defaultGroups: [{ id: 9, permissions: 1 }],
    };
    expect(Buffer.from(aclToXattrs(named, 0o40755).default!)).toEqual(
      Buffer.from(
        hex(
          V2 +
            USER_OBJ(7) +
            USER(2, '05000000') +
            GROUP_OBJ(5) +
            GROUP(1, '09000000') +
            MASK(6) +
            OTHER(0),
        ),
      ),
    );
  });

  it.each<[string, Acl, number]>([
    [
      'duplicate user id',
      {
        ...EMPTY_ACL,
        users: [
          { id: 3, permissions: 1 },
          { id: 3, permissions: 2 },
        ],
      },
      0o100644,
    ],
    ['permissions above 7', { ...EMPTY_ACL, groups: [{ id: 3, permissions: 8 }] }, 0o100644],
    ['undefined id', { ...EMPTY_ACL, users: [{ id: 0xffffffff, permissions: 1 }] }, 0o100644],
    ['id above 32 bits', { ...EMPTY_ACL, users: [{ id: 2 ** 33, permissions: 1 }] }, 0o100644],
    ['default without other', { ...EMPTY_ACL, default: { userObj: 7, groupObj: 5 } }, 0o40755],
    [
      'default users without ACL_DEFAULT',
      { ...EMPTY_ACL, defaultUsers: [{ id: 1, permissions: 7 }] },
      0o40755,
    ],
    [
      'default on a file',
      { ...EMPTY_ACL, default: { userObj: 7, groupObj: 5, other: 5 } },
      0o100644,
    ],
  ])('rejects an Acl the kernel would refuse (%s)', (_why, acl, mode) => {
    expect(codeOf(() => aclToXattrs(acl, mode))).toBe('INVALID_ARGUMENT');
  });

  it('round-trips every valid model through the xattr bytes', () => {
    const perm = fc.integer({ min: 0, max: 7 });
    const named = fc
      .uniqueArray(fc.integer({ min: 0, max: 0xfffffffe }), { maxLength: 5 })
      .chain((ids) =>
        fc.tuple(...ids.map((id) => perm.map((permissions): AclEntry => ({ id, permissions })))),
      );
    const model = fc.record({
      users: named,
      groups: named,
      groupObj: perm,
      mode: fc.integer({ min: 0, max: 0o777 }),
      deflt: fc.option(
        fc.record({
          userObj: perm,
          groupObj: perm,
          other: perm,
          mask: perm,
          users: named,
          groups: named,
        }),
      ),
    });
    fc.assert(
      fc.property(model, (m) => {
        const byId = (a: AclEntry, b: AclEntry): number => a.id - b.id;
        const acl: Acl = {
          users: [...m.users].sort(byId),
          groups: [...m.groups].sort(byId),
          groupObj: m.groupObj,
          defaultUsers: m.deflt === null ? [] : [...m.deflt.users].sort(byId),
          defaultGroups: m.deflt === null ? [] : [...m.deflt.groups].sort(byId),
          ...(m.deflt === null
            ? {}
            : {
                default: {
                  userObj: m.deflt.userObj,
                  groupObj: m.deflt.groupObj,
                  other: m.deflt.other,
                  mask: m.deflt.mask,
                },
              }),
        };
        const mode = 0o40000 | m.mode;
        const x = aclToXattrs(acl, mode);
        expect(aclFromXattrs(x.access ?? null, x.default ?? null, mode)).toEqual(acl);
      }),
    );
  });
});

describe('ACL xattrs on a real filesystem', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'burrow-acl-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it.runIf(nativeAvailable())(
    'the kernel accepts what aclToXattrs builds and returns it unchanged',
    () => {
      const file = join(dir, 'f');
      writeFileSync(file, 'x');
      chmodSync(file, 0o640);
      const acl: Acl = {
        ...EMPTY_ACL,
        users: [
          { id: 7, permissions: 4 },
          { id: 1000, permissions: 6 },
        ],
        groups: [{ id: 100, permissions: 5 }],
        groupObj: 4,
      };
      // Mode 0670: the group bits carry the mask rwx.
      const built = aclToXattrs(acl, 0o100670);
      lSetXattr(file, Buffer.from('system.posix_acl_access'), built.access!);
      // The kernel copies owner, mask and other into the mode.
      expect(lstatSync(file).mode & 0o777).toBe(0o670);
      const back = lGetXattr(file, Buffer.from('system.posix_acl_access'));
      expect(back).not.toBeNull();
      expect(Buffer.from(back!)).toEqual(Buffer.from(ACCESS_NAMED));
      expect(aclFromXattrs(back, null, lstatSync(file).mode)).toEqual(acl);

      const sub = join(dir, 'd');
      mkdirSync(sub);
      const deflt: Acl = {
        ...EMPTY_ACL,
        default: { userObj: 7, groupObj: 5, other: 0, mask: 7 },
        defaultGroups: [{ id: 4, permissions: 7 }],
      };
      const d = aclToXattrs(deflt, lstatSync(sub).mode);
      lSetXattr(sub, Buffer.from('system.posix_acl_default'), d.default!);
      const dback = lGetXattr(sub, Buffer.from('system.posix_acl_default'));
      expect(aclFromXattrs(null, dback, lstatSync(sub).mode)).toEqual(deflt);
    },
  );

  it.runIf(nativeAvailable())('the kernel refuses what parsePosixAcl refuses', () => {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    const bad = hex(V2 + USER_OBJ(6) + USER(6, '01000000') + GROUP_OBJ(4) + OTHER(4));
    expect(codeOf(() => parsePosixAcl(bad))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => lSetXattr(file, Buffer.from('system.posix_acl_access'), bad))).toBe(
      'IO_ERROR',
    );
  });

  it.runIf(!nativeAvailable())('without the native helper the xattr calls are unavailable', () => {
    expect(codeOf(() => lGetXattr(dir, Buffer.from('system.posix_acl_access')))).toBe(
      'NATIVE_UNAVAILABLE',
    );
  });
});
