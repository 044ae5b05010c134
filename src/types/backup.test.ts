import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  BACKUP_TYPES,
  MAX_BACKUP_TIME,
  ROOT_NAMESPACE,
  SAFE_ID_RE,
  backupGroup,
  compareBackupTypes,
  compareGroups,
  compareSnapshots,
  formatBackupTime,
  formatRfc3339Utc,
  formatSnapshot,
  groupPath,
  isRootNamespace,
  namespaceChild,
  namespaceContains,
  namespaceDepth,
  namespaceFromComponents,
  namespaceParent,
  namespacePath,
  namespaceToString,
  parseBackupId,
  parseBackupTime,
  parseBackupType,
  parseGroupPath,
  parseNamespace,
  parseNamespacePath,
  parseRfc3339,
  parseSnapshotPath,
  snapshotPath,
  type BackupGroup,
} from './backup.js';
import { codeOf } from '../../test/helpers/error-code.js';

const safeIdArb = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,20}$/);

describe('backup types and IDs', () => {
  it('parses exactly vm, ct and host', () => {
    for (const t of BACKUP_TYPES) expect(parseBackupType(t)).toBe(t);
    for (const bad of ['VM', 'Vm', 'lxc', '', 'host ', 'qemu']) {
      expect(codeOf(() => parseBackupType(bad))).toBe('INVALID_BACKUP_TYPE');
    }
  });

  it('orders types ct < host < vm for listings', () => {
    expect([...BACKUP_TYPES].sort(compareBackupTypes)).toEqual(['ct', 'host', 'vm']);
  });

  it('accepts safe IDs only', () => {
    for (const ok of ['100', 'a', '_x', 'my-host.example_1', '0.-_']) {
      expect(SAFE_ID_RE.test(ok)).toBe(true);
      expect(parseBackupId(ok)).toBe(ok);
    }
    for (const bad of ['', '-a', '.a', 'a b', 'a/b', 'ä', 'a:b', 'a\n']) {
      expect(SAFE_ID_RE.test(bad)).toBe(false);
      expect(codeOf(() => parseBackupId(bad))).toBe('INVALID_BACKUP_ID');
    }
  });
});

describe('backup time', () => {
  it('formats known instants (UTC, zero-padded, Z)', () => {
    expect(formatBackupTime(1)).toBe('1970-01-01T00:00:01Z');
    expect(formatBackupTime(946_684_800)).toBe('2000-01-01T00:00:00Z');
    expect(formatBackupTime(951_782_400)).toBe('2000-02-29T00:00:00Z');
    expect(formatBackupTime(1_704_067_200)).toBe('2024-01-01T00:00:00Z');
    expect(formatBackupTime(253_402_300_799)).toBe('9999-12-31T23:59:59Z');
    expect(formatRfc3339Utc(-62_167_219_200)).toBe('0000-01-01T00:00:00Z');
    expect(formatRfc3339Utc(0)).toBe('1970-01-01T00:00:00Z');
  });

  it('refuses times outside 1..9999-12-31T23:59:59Z and non-integers', () => {
    for (const bad of [0, -1, 253_402_300_800, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(codeOf(() => formatBackupTime(bad))).toBe('INVALID_BACKUP_TIME');
    }
    expect(codeOf(() => formatRfc3339Utc(-62_167_219_201))).toBe('INVALID_BACKUP_TIME');
  });

  it('parses the Z form and the ±HH:MM form', () => {
    expect(parseBackupTime('2000-01-01T00:00:00Z')).toBe(946_684_800);
    expect(parseBackupTime('2024-02-29T00:00:00Z')).toBe(1_709_164_800);
    expect(parseBackupTime('2020-12-30T00:00:00+06:30')).toBe(1_609_263_000);
    expect(parseBackupTime('2020-12-29T12:30:00-05:00')).toBe(1_609_263_000);
    expect(parseBackupTime('2000-01-01T00:00:00+00:00')).toBe(946_684_800);
    expect(parseRfc3339('0000-01-01T00:00:00Z')).toBe(-62_167_219_200);
  });

  it('rejects everything else', () => {
    const bad = [
      '2024-01-01T00:00:00.5Z',
      '2024-01-01T00:00:00.000Z',
      '2024-01-01t00:00:00Z',
      '2024-01-01T00:00:00z',
      '2024-01-01 00:00:00Z',
      '2024-01-01T00:00:00',
      '2024-01-01T00:00:00+0100',
      '2024-01-01T00:00:00+01:00Z',
      ' 2024-01-01T00:00:00Z',
      '2024-1-01T00:00:00Z',
      '2023-02-29T00:00:00Z',
      '2024-02-30T00:00:00Z',
      '2024-04-31T00:00:00Z',
      '2024-13-01T00:00:00Z',
      '2024-00-01T00:00:00Z',
      '2024-01-00T00:00:00Z',
      '2024-01-01T24:00:00Z',
      '2024-01-01T00:60:00Z',
      '2024-01-01T00:00:60Z',
      '2024-01-01T00:00:00+24:00',
      '2024-01-01T00:00:00+01:60',
      '2024-01-01T00:00:00*01:00',
      '１９７０-01-01T00:00:00Z',
      '1970-01-01T00:00:00Z', // time 0: below the minimum of 1
      '1970-01-01T00:59:59+01:00', // also time -1
      '9999-12-31T23:59:59-00:01', // past the last four-digit year
      '',
    ];
    for (const text of bad)
      expect(
        codeOf(() => parseBackupTime(text)),
        text,
      ).toBe('INVALID_BACKUP_TIME');
  });

  it('round-trips every time in 1..253402300799 and agrees with Date', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: BigInt(MAX_BACKUP_TIME) }), (big) => {
        const t = Number(big);
        const text = formatBackupTime(t);
        expect(text).toBe(new Date(t * 1000).toISOString().replace('.000Z', 'Z'));
        expect(parseBackupTime(text)).toBe(t);
      }),
      { numRuns: 2000 },
    );
  });

  it('parses offset forms to the same instant', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 200_000n, max: BigInt(MAX_BACKUP_TIME) - 200_000n }),
        fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 }),
        (big, offsetMinutes) => {
          const t = Number(big);
          const local = new Date((t + offsetMinutes * 60) * 1000).toISOString().slice(0, 19);
          const abs = Math.abs(offsetMinutes);
          const sign = offsetMinutes < 0 ? '-' : '+';
          const zone = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
          expect(parseBackupTime(`${local}${zone}`)).toBe(t);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('namespaces', () => {
  it('parses a/b/c and maps it to ns/a/ns/b/ns/c', () => {
    const ns = parseNamespace('a/b/c');
    expect(ns.components).toEqual(['a', 'b', 'c']);
    expect(namespaceToString(ns)).toBe('a/b/c');
    expect(namespacePath(ns)).toBe('ns/a/ns/b/ns/c');
    expect(namespaceDepth(ns)).toBe(3);
    expect(parseNamespacePath('ns/a/ns/b/ns/c')).toEqual(ns);
  });

  it('treats the empty string as the root', () => {
    expect(parseNamespace('')).toBe(ROOT_NAMESPACE);
    expect(isRootNamespace(ROOT_NAMESPACE)).toBe(true);
    expect(namespacePath(ROOT_NAMESPACE)).toBe('');
    expect(parseNamespacePath('')).toBe(ROOT_NAMESPACE);
    expect(namespaceParent(ROOT_NAMESPACE)).toEqual(ROOT_NAMESPACE);
  });

  it('allows depth 7 and refuses depth 8', () => {
    expect(namespaceDepth(parseNamespace('1/2/3/4/5/6/7'))).toBe(7);
    expect(codeOf(() => parseNamespace('1/2/3/4/5/6/7/8'))).toBe('INVALID_NAMESPACE');
  });

  it('limits the length to 256 (255 for a single component, as PBS counts)', () => {
    const a = 'a'.repeat(127);
    expect(namespaceToString(parseNamespace(`${a}/${'b'.repeat(128)}`))).toHaveLength(256);
    expect(codeOf(() => parseNamespace(`${a}/${'b'.repeat(129)}`))).toBe('INVALID_NAMESPACE');
    expect(namespaceDepth(parseNamespace('c'.repeat(255)))).toBe(1);
    expect(codeOf(() => parseNamespace('c'.repeat(256)))).toBe('INVALID_NAMESPACE');
  });

  it('refuses bad components', () => {
    for (const bad of ['/', 'a/', '/a', 'a//b', '-a', '.a', 'a b', 'ns/ü', 'a:b']) {
      expect(
        codeOf(() => parseNamespace(bad)),
        bad,
      ).toBe('INVALID_NAMESPACE');
    }
    expect(codeOf(() => namespaceFromComponents(['a/b']))).toBe('INVALID_NAMESPACE');
    for (const bad of ['ns', 'ns/a/b', 'x/a', 'ns/a/', 'ns//ns/a']) {
      expect(
        codeOf(() => parseNamespacePath(bad)),
        bad,
      ).toBe('INVALID_NAMESPACE');
    }
  });

  it('navigates parents, children and containment', () => {
    const ab = parseNamespace('a/b');
    expect(namespaceParent(ab)).toEqual(parseNamespace('a'));
    expect(namespaceChild(ab, 'c')).toEqual(parseNamespace('a/b/c'));
    expect(codeOf(() => namespaceChild(ab, 'c/d'))).toBe('INVALID_NAMESPACE');
    expect(namespaceContains(ab, ab)).toBe(0);
    expect(namespaceContains(ab, parseNamespace('a/b/c/d'))).toBe(2);
    expect(namespaceContains(parseNamespace('a/b/c/d'), ab)).toBeUndefined();
    expect(namespaceContains(ab, parseNamespace('x/y'))).toBeUndefined();
    expect(namespaceContains(ROOT_NAMESPACE, ab)).toBe(2);
  });

  it('round-trips valid namespaces through both text forms', () => {
    fc.assert(
      fc.property(fc.array(safeIdArb, { maxLength: 7 }), (components) => {
        const ns = namespaceFromComponents(components);
        expect(parseNamespace(namespaceToString(ns))).toEqual(ns);
        expect(parseNamespacePath(namespacePath(ns))).toEqual(ns);
      }),
      { numRuns: 300 },
    );
  });
});

describe('groups and snapshots', () => {
  const t2024 = 1_704_067_200; // 2024-01-01T00:00:00Z

  it('prints and parses snapshots in the root and in namespaces', () => {
    const root = { group: backupGroup(ROOT_NAMESPACE, 'vm', '100'), time: t2024 };
    expect(formatSnapshot(root)).toBe('vm/100/2024-01-01T00:00:00Z');
    expect(parseSnapshotPath('vm/100/2024-01-01T00:00:00Z')).toEqual(root);

    const nested = { group: backupGroup(parseNamespace('a/b'), 'vm', '100'), time: t2024 };
    expect(snapshotPath(nested)).toBe('ns/a/ns/b/vm/100/2024-01-01T00:00:00Z');
    expect(parseSnapshotPath('ns/a/ns/b/vm/100/2024-01-01T00:00:00Z')).toEqual(nested);

    expect(groupPath(nested.group)).toBe('ns/a/ns/b/vm/100');
    expect(parseGroupPath('ns/a/ns/b/vm/100')).toEqual(nested.group);
    expect(parseGroupPath('host/elsa')).toEqual(backupGroup(ROOT_NAMESPACE, 'host', 'elsa'));
  });

  it('rejects malformed paths with INVALID_SNAPSHOT_PATH', () => {
    const bad = [
      'vm/100',
      '100/2024-01-01T00:00:00Z',
      'xx/100/2024-01-01T00:00:00Z',
      'vm/1 00/2024-01-01T00:00:00Z',
      'vm/100/2024-01-01T00:00:00+00:00',
      'vm/100/2024-13-01T00:00:00Z',
      'a/vm/100/2024-01-01T00:00:00Z',
      'ns/a/b/vm/100/2024-01-01T00:00:00Z',
      '/vm/100/2024-01-01T00:00:00Z',
      'ns//vm/100/2024-01-01T00:00:00Z',
      '',
    ];
    for (const text of bad)
      expect(
        codeOf(() => parseSnapshotPath(text)),
        text,
      ).toBe('INVALID_SNAPSHOT_PATH');
    for (const text of ['vm', '/vm/100', 'vm/100/', 'ns/a/vm', 'vm/-1']) {
      expect(
        codeOf(() => parseGroupPath(text)),
        text,
      ).toBe('INVALID_SNAPSHOT_PATH');
    }
  });

  it('round-trips snapshot paths', () => {
    fc.assert(
      fc.property(
        fc.array(safeIdArb, { maxLength: 7 }),
        fc.constantFrom(...BACKUP_TYPES),
        safeIdArb,
        fc.bigInt({ min: 1n, max: BigInt(MAX_BACKUP_TIME) }),
        (components, type, id, time) => {
          const dir = {
            group: backupGroup(namespaceFromComponents(components), type, id),
            time: Number(time),
          };
          expect(parseSnapshotPath(formatSnapshot(dir))).toEqual(dir);
          expect(parseGroupPath(groupPath(dir.group))).toEqual(dir.group);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('sorts groups by type, then numeric IDs numerically before other IDs', () => {
    const g = (type: string, id: string): BackupGroup => backupGroup(ROOT_NAMESPACE, type, id);
    const groups = [
      g('vm', 'abc'),
      g('vm', '20'),
      g('host', 'elsa'),
      g('vm', '18446744073709551616'), // one past u64::MAX: compared as a string
      g('vm', '100'),
      g('ct', '200'),
      g('vm', '18446744073709551615'),
      g('ct', '1'),
      g('vm', 'Abc'),
    ];
    const sorted = [...groups].sort(compareGroups).map((x) => `${x.type}/${x.id}`);
    expect(sorted).toEqual([
      'ct/1',
      'ct/200',
      'host/elsa',
      'vm/20',
      'vm/100',
      'vm/18446744073709551615',
      'vm/18446744073709551616',
      'vm/Abc',
      'vm/abc',
    ]);
  });

  it('sorts snapshots by time', () => {
    const group = backupGroup(ROOT_NAMESPACE, 'vm', '100');
    const times = [5, 1, 3];
    const sorted = times.map((time) => ({ group, time })).sort(compareSnapshots);
    expect(sorted.map((d) => d.time)).toEqual([1, 3, 5]);
  });
});
