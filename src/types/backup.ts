/**
 * The backup hierarchy's names (pbs-formats §6.1–§6.4): backup types, IDs, backup times,
 * namespaces, groups and snapshots, with their printed and on-disk path forms. Everything here
 * is pure: paths are relative to the datastore base directory.
 */
import { BurrowError } from '../lib/errors.js';

// ---------------------------------------------------------------------------------------------
// Safe IDs and backup types

/** The "safe ID" pattern shared by backup IDs, namespace components, archive names and realms. */
export const SAFE_ID_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

export function isSafeId(text: string): boolean {
  return SAFE_ID_RE.test(text);
}

export const BACKUP_TYPES = ['vm', 'ct', 'host'] as const;
export type BackupType = (typeof BACKUP_TYPES)[number];

/** Listing order: ct < host < vm (PBS kept the alphabetical order from when types were strings). */
const BACKUP_TYPE_ORDER: Readonly<Record<BackupType, number>> = { ct: 0, host: 1, vm: 2 };

export function isBackupType(value: unknown): value is BackupType {
  return typeof value === 'string' && (BACKUP_TYPES as readonly string[]).includes(value);
}

export function parseBackupType(text: string): BackupType {
  if (!isBackupType(text)) {
    throw new BurrowError(
      'INVALID_BACKUP_TYPE',
      `invalid backup type ${JSON.stringify(text)} (expected vm, ct or host)`,
      { details: { value: text } },
    );
  }
  return text;
}

export function compareBackupTypes(a: BackupType, b: BackupType): number {
  return BACKUP_TYPE_ORDER[a] - BACKUP_TYPE_ORDER[b];
}

/** A backup ID: a safe ID. The schema sets no length limit; the filesystem's name limit applies. */
export function parseBackupId(text: string): string {
  if (!SAFE_ID_RE.test(text)) {
    throw new BurrowError(
      'INVALID_BACKUP_ID',
      `invalid backup ID ${JSON.stringify(text.slice(0, 80))} (expected ${String(SAFE_ID_RE)})`,
      { details: { value: text } },
    );
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Backup time (RFC 3339 in UTC, whole seconds)

const SECONDS_PER_DAY = 86_400;
/** 0000-01-01T00:00:00Z, the earliest instant with a four-digit year. */
export const RFC3339_MIN_EPOCH = -62_167_219_200;
/** 9999-12-31T23:59:59Z, the latest instant with a four-digit year. */
export const RFC3339_MAX_EPOCH = 253_402_300_799;
/** Backup times are whole seconds, at least 1 (pbs-formats §6.3). */
export const MIN_BACKUP_TIME = 1;
export const MAX_BACKUP_TIME = RFC3339_MAX_EPOCH;

/**
 * Days since 1970-01-01 of a proleptic Gregorian date. Integer-only (no Date), so years 0..99
 * are not remapped to 19xx. Eras are 400-year cycles of exactly 146097 days.
 */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const shiftedMonth = month > 2 ? month - 3 : month + 9; // March = 0
  const dayOfYear = Math.floor((153 * shiftedMonth + 2) / 5) + day - 1;
  const dayOfEra =
    yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

function civilFromDays(days: number): { year: number; month: number; day: number } {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor(
    (dayOfEra -
      Math.floor(dayOfEra / 1460) +
      Math.floor(dayOfEra / 36_524) -
      Math.floor(dayOfEra / 146_096)) /
      365,
  );
  const dayOfYear =
    dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const shiftedMonth = Math.floor((5 * dayOfYear + 2) / 153);
  const day = dayOfYear - Math.floor((153 * shiftedMonth + 2) / 5) + 1;
  const month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9;
  const year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  return { year, month, day };
}

function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return isLeapYear(year) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

const pad = (value: number, width: number): string => String(value).padStart(width, '0');

/**
 * `YYYY-MM-DDTHH:MM:SSZ` for any whole-second instant with a four-digit year (0000..9999).
 * Task logs and other non-snapshot timestamps use this; snapshot names use formatBackupTime.
 */
export function formatRfc3339Utc(epochSeconds: number): string {
  if (
    !Number.isInteger(epochSeconds) ||
    epochSeconds < RFC3339_MIN_EPOCH ||
    epochSeconds > RFC3339_MAX_EPOCH
  ) {
    throw new BurrowError(
      'INVALID_BACKUP_TIME',
      `time ${String(epochSeconds)} is not a whole number of seconds in years 0000..9999`,
      { details: { value: epochSeconds } },
    );
  }
  const days = Math.floor(epochSeconds / SECONDS_PER_DAY);
  const secondOfDay = epochSeconds - days * SECONDS_PER_DAY;
  const { year, month, day } = civilFromDays(days);
  const hour = Math.floor(secondOfDay / 3600);
  const minute = Math.floor((secondOfDay % 3600) / 60);
  const second = secondOfDay % 60;
  return `${pad(year, 4)}-${pad(month, 2)}-${pad(day, 2)}T${pad(hour, 2)}:${pad(minute, 2)}:${pad(second, 2)}Z`;
}

/** The snapshot directory name of a backup time: `YYYY-MM-DDTHH:MM:SSZ` in UTC, time ≥ 1. */
export function formatBackupTime(epochSeconds: number): string {
  checkBackupTimeRange(epochSeconds);
  return formatRfc3339Utc(epochSeconds);
}

function checkBackupTimeRange(epochSeconds: number, text?: string): void {
  if (
    !Number.isInteger(epochSeconds) ||
    epochSeconds < MIN_BACKUP_TIME ||
    epochSeconds > MAX_BACKUP_TIME
  ) {
    const what =
      text === undefined ? String(epochSeconds) : `${JSON.stringify(text)} (${epochSeconds})`;
    throw new BurrowError(
      'INVALID_BACKUP_TIME',
      `backup time ${what} is out of range: it must be whole seconds from 1 (1970-01-01T00:00:01Z) to ${MAX_BACKUP_TIME} (9999-12-31T23:59:59Z)`,
      { details: { value: text ?? epochSeconds } },
    );
  }
}

function badTime(text: string, reason: string): BurrowError {
  return new BurrowError(
    'INVALID_BACKUP_TIME',
    `invalid timestamp ${JSON.stringify(text.slice(0, 40))}: ${reason} (expected YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DDTHH:MM:SS±HH:MM)`,
    { details: { value: text } },
  );
}

/**
 * Parse an RFC 3339 timestamp in the two shapes PBS accepts: `…Z` (20 characters) or `…±HH:MM`
 * (25 characters). Fractional seconds, lowercase `t`/`z`, impossible dates (Feb 30) and
 * out-of-range fields are rejected. PBS itself lets its C library normalise Feb 30 into March
 * and accepts a leap second `:60`; we refuse both, so every accepted string names exactly one
 * instant and formats back to itself (for the `Z` form).
 */
export function parseRfc3339(text: string): number {
  if (text.length !== 20 && text.length !== 25) throw badTime(text, 'wrong length');
  const digitsAt = (start: number, count: number): number => {
    let value = 0;
    for (let i = start; i < start + count; i++) {
      const c = text.charCodeAt(i);
      if (c < 0x30 || c > 0x39) throw badTime(text, `expected a digit at position ${i}`);
      value = value * 10 + (c - 0x30);
    }
    return value;
  };
  const expectChar = (pos: number, ch: string): void => {
    if (text[pos] !== ch) throw badTime(text, `expected '${ch}' at position ${pos}`);
  };
  const year = digitsAt(0, 4);
  expectChar(4, '-');
  const month = digitsAt(5, 2);
  expectChar(7, '-');
  const day = digitsAt(8, 2);
  expectChar(10, 'T');
  const hour = digitsAt(11, 2);
  expectChar(13, ':');
  const minute = digitsAt(14, 2);
  expectChar(16, ':');
  const second = digitsAt(17, 2);
  const zone = text[19];
  let offsetSeconds = 0;
  if (zone === 'Z') {
    if (text.length !== 20) throw badTime(text, 'unexpected characters after Z');
  } else if (zone === '+' || zone === '-') {
    if (text.length !== 25) throw badTime(text, 'a ±HH:MM offset needs 25 characters in all');
    const offsetHours = digitsAt(20, 2);
    expectChar(22, ':');
    const offsetMinutes = digitsAt(23, 2);
    if (offsetHours > 23) throw badTime(text, `offset hour ${offsetHours} > 23`);
    if (offsetMinutes > 59) throw badTime(text, `offset minute ${offsetMinutes} > 59`);
    offsetSeconds = (offsetHours * 3600 + offsetMinutes * 60) * (zone === '+' ? 1 : -1);
  } else {
    throw badTime(text, 'expected Z, + or - at position 19');
  }
  if (month < 1 || month > 12) throw badTime(text, `month ${month} is not 1..12`);
  const monthDays = daysInMonth(year, month);
  if (day < 1 || day > monthDays)
    throw badTime(text, `day ${day} is not 1..${monthDays} for that month`);
  if (hour > 23) throw badTime(text, `hour ${hour} > 23`);
  if (minute > 59) throw badTime(text, `minute ${minute} > 59`);
  if (second > 59) throw badTime(text, `second ${second} > 59`);
  const local =
    daysFromCivil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second;
  return local - offsetSeconds;
}

/** Parse a backup time (either accepted RFC 3339 shape); the instant must be ≥ 1 and ≤ 9999-12-31T23:59:59Z. */
export function parseBackupTime(text: string): number {
  const epoch = parseRfc3339(text);
  checkBackupTimeRange(epoch, text);
  return epoch;
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/** Maximum depth below the root (the root is depth 0, so 8 levels in all). */
export const MAX_NAMESPACE_DEPTH = 7;
/** Maximum length of the namespace name (components joined by '/'). */
export const MAX_NAMESPACE_LENGTH = 256;

/** A namespace: its components from the root down. The root has none. */
export interface BackupNamespace {
  readonly components: readonly string[];
}

export const ROOT_NAMESPACE: BackupNamespace = Object.freeze({ components: Object.freeze([]) });

function badNamespace(text: string, reason: string): BurrowError {
  return new BurrowError(
    'INVALID_NAMESPACE',
    `invalid namespace ${JSON.stringify(text.slice(0, 300))}: ${reason}`,
    { details: { value: text } },
  );
}

/**
 * Validate components exactly as PBS builds a namespace one push at a time: each push checks
 * depth, then `current length + component + 1 ≤ 256` (PBS charges the separator even for the
 * first component, so a one-component namespace may have at most 255 characters), then the
 * safe-ID pattern.
 */
export function namespaceFromComponents(components: readonly string[]): BackupNamespace {
  const shown = components.join('/');
  let length = 0;
  components.forEach((component, index) => {
    if (index >= MAX_NAMESPACE_DEPTH) {
      throw badNamespace(shown, `deeper than ${MAX_NAMESPACE_DEPTH} levels`);
    }
    if (component.includes('/'))
      throw badNamespace(shown, `component ${JSON.stringify(component)} contains '/'`);
    if (length + component.length + 1 > MAX_NAMESPACE_LENGTH) {
      throw badNamespace(shown, `longer than ${MAX_NAMESPACE_LENGTH} characters`);
    }
    if (!SAFE_ID_RE.test(component)) {
      throw badNamespace(
        shown,
        `component ${JSON.stringify(component.slice(0, 80))} is not a safe ID (${String(SAFE_ID_RE)})`,
      );
    }
    length += (index === 0 ? 0 : 1) + component.length;
  });
  return Object.freeze({ components: Object.freeze([...components]) });
}

/** Parse `a/b/c`; the empty string is the root namespace. */
export function parseNamespace(text: string): BackupNamespace {
  if (text === '') return ROOT_NAMESPACE;
  return namespaceFromComponents(text.split('/'));
}

export function namespaceToString(ns: BackupNamespace): string {
  return ns.components.join('/');
}

/** The namespace's directory relative to the datastore base: `ns/a/ns/b` ('' for the root). */
export function namespacePath(ns: BackupNamespace): string {
  return ns.components.map((c) => `ns/${c}`).join('/');
}

/** Inverse of namespacePath: `ns/a/ns/b` → a/b; '' → root. */
export function parseNamespacePath(path: string): BackupNamespace {
  if (path === '') return ROOT_NAMESPACE;
  const parts = path.split('/');
  if (parts.length % 2 !== 0) {
    throw badNamespace(path, 'a namespace path is ns/<name> pairs (ns/a/ns/b)');
  }
  const components: string[] = [];
  for (let i = 0; i < parts.length; i += 2) {
    if (parts[i] !== 'ns') {
      throw badNamespace(
        path,
        `expected 'ns' at path component ${i + 1}, found ${JSON.stringify(parts[i])}`,
      );
    }
    components.push(parts[i + 1] ?? '');
  }
  return namespaceFromComponents(components);
}

export function namespaceDepth(ns: BackupNamespace): number {
  return ns.components.length;
}

export function isRootNamespace(ns: BackupNamespace): boolean {
  return ns.components.length === 0;
}

/** The parent namespace; the root is its own parent. */
export function namespaceParent(ns: BackupNamespace): BackupNamespace {
  if (ns.components.length === 0) return ROOT_NAMESPACE;
  return Object.freeze({ components: Object.freeze(ns.components.slice(0, -1)) });
}

/** A direct child namespace; `name` is one component (no '/'). */
export function namespaceChild(ns: BackupNamespace, name: string): BackupNamespace {
  return namespaceFromComponents([...ns.components, name]);
}

export function namespaceEquals(a: BackupNamespace, b: BackupNamespace): boolean {
  return (
    a.components.length === b.components.length &&
    a.components.every((c, i) => c === b.components[i])
  );
}

/** If `inner` is `outer` or below it, how many levels below; otherwise undefined. */
export function namespaceContains(
  outer: BackupNamespace,
  inner: BackupNamespace,
): number | undefined {
  if (inner.components.length < outer.components.length) return undefined;
  for (let i = 0; i < outer.components.length; i++) {
    if (outer.components[i] !== inner.components[i]) return undefined;
  }
  return inner.components.length - outer.components.length;
}

// ---------------------------------------------------------------------------------------------
// Groups and snapshots

export interface BackupGroup {
  readonly ns: BackupNamespace;
  readonly type: BackupType;
  readonly id: string;
}

export interface BackupDir {
  readonly group: BackupGroup;
  /** Backup time, epoch seconds (≥ 1). */
  readonly time: number;
}

/** Build a validated group. */
export function backupGroup(ns: BackupNamespace, type: string, id: string): BackupGroup {
  return { ns, type: parseBackupType(type), id: parseBackupId(id) };
}

/** Build a validated snapshot. */
export function backupDir(group: BackupGroup, time: number): BackupDir {
  checkBackupTimeRange(time);
  return { group, time };
}

const joinPath = (...parts: string[]): string => parts.filter((p) => p !== '').join('/');

/** `ns/a/ns/b/vm/100`, or `vm/100` in the root: the group's directory relative to the base. */
export function groupPath(group: BackupGroup): string {
  return joinPath(namespacePath(group.ns), group.type, group.id);
}

/** `ns/a/vm/100/2024-01-01T00:00:00Z`: the snapshot's directory relative to the base. */
export function snapshotPath(dir: BackupDir): string {
  return `${groupPath(dir.group)}/${formatBackupTime(dir.time)}`;
}

/** The printed form of a group (the same text as its relative path). */
export const formatGroup = groupPath;
/** The printed form of a snapshot (the same text as its relative path). */
export const formatSnapshot = snapshotPath;

function badPath(text: string, reason: string, cause?: unknown): BurrowError {
  return new BurrowError(
    'INVALID_SNAPSHOT_PATH',
    `invalid backup path ${JSON.stringify(text.slice(0, 400))}: ${reason}`,
    { details: { value: text }, cause },
  );
}

/**
 * Split at the `count`-th '/' from the right: the last `count` parts are the group or snapshot,
 * the rest is the namespace path ('' for the root). Namespace components cannot contain '/', so
 * this split is unambiguous.
 */
function parseWithNamespace<T>(
  text: string,
  count: number,
  what: string,
  build: (ns: BackupNamespace, tail: string[]) => T,
): T {
  const parts = text.split('/');
  const prefix = parts.slice(0, -count).join('/');
  // Too few parts, or a leading '/' (an empty namespace path that is not the root).
  if (parts.length < count || (parts.length > count && prefix === '')) {
    throw badPath(text, `expected [ns/<a>/...]${what}`);
  }
  try {
    return build(parseNamespacePath(prefix), parts.slice(-count));
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw badPath(text, reason, error);
  }
}

/** Parse `[ns/<a>/ns/<b>/]<type>/<id>`: split at the second '/' from the right. */
export function parseGroupPath(text: string): BackupGroup {
  return parseWithNamespace(text, 2, '<type>/<id>', (ns, [type = '', id = '']) =>
    backupGroup(ns, type, id),
  );
}

/** Parse `[ns/<a>/ns/<b>/]<type>/<id>/<time>`: split at the third '/' from the right. */
export function parseSnapshotPath(text: string): BackupDir {
  return parseWithNamespace(
    text,
    3,
    '<type>/<id>/<time>',
    (ns, [type = '', id = '', time = '']) => {
      const group = backupGroup(ns, type, id);
      // Snapshot paths always carry the Z form; an offset form would name a directory that cannot exist.
      if (time.length !== 20) throw badTime(time, 'a snapshot directory name ends in Z');
      return { group, time: parseBackupTime(time) };
    },
  );
}

const U64_MAX = (1n << 64n) - 1n;

/** The ID as an unsigned 64-bit number when it is all decimal digits and fits, else undefined. */
function idAsU64(id: string): bigint | undefined {
  if (!/^[0-9]+$/.test(id)) return undefined;
  const value = BigInt(id);
  return value <= U64_MAX ? value : undefined;
}

const compareStrings = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Group listing order: by type (ct < host < vm), then by ID: numeric IDs numerically and before
 * non-numeric ones, other IDs as strings. PBS stops there (and calls `100` and `0100` equal); we
 * break the remaining ties by the ID text and then the namespace so sorting is total.
 */
export function compareGroups(a: BackupGroup, b: BackupGroup): number {
  const byType = compareBackupTypes(a.type, b.type);
  if (byType !== 0) return byType;
  const na = idAsU64(a.id);
  const nb = idAsU64(b.id);
  if (na !== undefined && nb !== undefined && na !== nb) return na < nb ? -1 : 1;
  if (na !== undefined && nb === undefined) return -1;
  if (na === undefined && nb !== undefined) return 1;
  const byId = compareStrings(a.id, b.id);
  if (byId !== 0) return byId;
  return compareStrings(namespaceToString(a.ns), namespaceToString(b.ns));
}

/** Snapshots sort by backup time; ties (different groups) fall back to group order. */
export function compareSnapshots(a: BackupDir, b: BackupDir): number {
  if (a.time !== b.time) return a.time < b.time ? -1 : 1;
  return compareGroups(a.group, b.group);
}

export function groupEquals(a: BackupGroup, b: BackupGroup): boolean {
  return a.type === b.type && a.id === b.id && namespaceEquals(a.ns, b.ns);
}
