/**
 * Prune selection (pbs-formats §9): which snapshots of one group a set of `keep-*` options keeps.
 * A pure function over values so that `--dry-run` and the real prune share one plan and tests
 * can check the plan directly; deleting snapshots is the caller's job.
 *
 * Period keys are computed in a named IANA time zone through Intl rather than through the
 * process's TZ, so a caller (or a test) can ask for any zone; the default is the zone the
 * process runs in, which is what PBS uses (`localtime`).
 */
import { BurrowError } from '../lib/errors.js';
import { MAX_BACKUP_TIME, MIN_BACKUP_TIME } from '../types/backup.js';

/** The retention options of §9.1. Each is an integer ≥ 1 when present. */
export interface KeepOptions {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
}

export type KeepOptionKey = keyof KeepOptions;
export type KeepOptionName =
  'keep-last' | 'keep-hourly' | 'keep-daily' | 'keep-weekly' | 'keep-monthly' | 'keep-yearly';

/** Every option with its CLI/config name, in the order the rules run (and PBS prints them). */
export const KEEP_OPTIONS: readonly {
  readonly key: KeepOptionKey;
  readonly name: KeepOptionName;
}[] = [
  { key: 'keepLast', name: 'keep-last' },
  { key: 'keepHourly', name: 'keep-hourly' },
  { key: 'keepDaily', name: 'keep-daily' },
  { key: 'keepWeekly', name: 'keep-weekly' },
  { key: 'keepMonthly', name: 'keep-monthly' },
  { key: 'keepYearly', name: 'keep-yearly' },
];

export type PruneMark = 'keep' | 'keep-partial' | 'protected' | 'remove';

/** What the selection needs to know about a snapshot. */
export interface PruneCandidate {
  /** Backup time, epoch seconds. */
  time: number;
  /** The snapshot has its manifest (`index.json.blob`). */
  finished: boolean;
  /** The snapshot has a `.protected` marker. */
  protected: boolean;
}

export interface PruneEntry<T> {
  snapshot: T;
  mark: PruneMark;
}

/** True for the marks that leave the snapshot in place. */
export function isKeptMark(mark: PruneMark): boolean {
  return mark !== 'remove';
}

// ---------------------------------------------------------------------------------------------
// Options

function invalidOption(name: string, value: unknown, reason: string): BurrowError {
  let shown: string;
  try {
    shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  } catch {
    shown = typeof value;
  }
  return new BurrowError('INVALID_ARGUMENT', `${name}: ${reason}, got ${shown}`, {
    details: { option: name, value: typeof value === 'object' ? null : value },
  });
}

/** A count from a number or from decimal digits (CLI arguments and config values arrive as text). */
function parseCount(name: string, value: unknown): number {
  let n: number;
  if (typeof value === 'number') {
    n = value;
  } else if (typeof value === 'string' && /^[0-9]+$/.test(value)) {
    n = Number(value);
  } else {
    throw invalidOption(name, value, 'expected an integer ≥ 1');
  }
  if (!Number.isSafeInteger(n) || n < 1) {
    throw invalidOption(name, value, 'expected an integer ≥ 1');
  }
  return n;
}

/**
 * Read the keep options from an options object as a CLI, the API or a config section gives it.
 * Each option may be spelled in kebab case (`keep-daily`) or camel case (`keepDaily`); values
 * are numbers or decimal strings. Other keys are ignored so a whole job section can be passed.
 * `undefined` and `null` mean "not given".
 */
export function parseKeepOptions(raw: Readonly<Record<string, unknown>>): KeepOptions {
  const result: KeepOptions = {};
  for (const { key, name } of KEEP_OPTIONS) {
    const kebab = raw[name];
    const camel = raw[key];
    const kebabGiven = kebab !== undefined && kebab !== null;
    const camelGiven = camel !== undefined && camel !== null;
    if (kebabGiven && camelGiven) {
      const a = parseCount(name, kebab);
      const b = parseCount(name, camel);
      if (a !== b) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `${name}: given twice with different values (${a} as ${name}, ${b} as ${key})`,
          { details: { option: name } },
        );
      }
      result[key] = a;
    } else if (kebabGiven) {
      result[key] = parseCount(name, kebab);
    } else if (camelGiven) {
      result[key] = parseCount(name, camel);
    }
  }
  return result;
}

/** Throw INVALID_ARGUMENT unless every given option is an integer ≥ 1. */
export function checkKeepOptions(keep: KeepOptions): void {
  for (const { key, name } of KEEP_OPTIONS) {
    const value = keep[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
      throw invalidOption(name, value, 'expected an integer ≥ 1');
    }
  }
}

/** Whether any rule is set. Without one, prune keeps everything (§9.1). */
export function hasKeepOptions(keep: KeepOptions): boolean {
  return KEEP_OPTIONS.some(({ key }) => (keep[key] ?? 0) > 0);
}

/** `['--keep-last', '3', '--keep-daily', '7']`, in rule order: for command lines and task logs. */
export function keepOptionsToArgs(keep: KeepOptions): string[] {
  const args: string[] = [];
  for (const { key, name } of KEEP_OPTIONS) {
    const value = keep[key];
    if (value !== undefined) args.push(`--${name}`, String(value));
  }
  return args;
}

/** `{ 'keep-last': 3, 'keep-daily': 7 }`: the spelling of config sections and API parameters. */
export function keepOptionsToRecord(keep: KeepOptions): Partial<Record<KeepOptionName, number>> {
  const record: Partial<Record<KeepOptionName, number>> = {};
  for (const { key, name } of KEEP_OPTIONS) {
    const value = keep[key];
    if (value !== undefined) record[name] = value;
  }
  return record;
}

// ---------------------------------------------------------------------------------------------
// Local time and period keys

interface LocalFields {
  year: number;
  month: number;
  day: number;
  hour: number;
}

// The Gregorian calendar and Latin digits are forced so the parts are plain numbers whatever
// the host's default locale is.
const FORMAT_LOCALE = 'en-US-u-ca-gregory-nu-latn';
const formatters = new Map<string, Intl.DateTimeFormat>();

function defaultTimeZone(): string {
  return new Intl.DateTimeFormat().resolvedOptions().timeZone;
}

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (formatter === undefined) {
    try {
      formatter = new Intl.DateTimeFormat(FORMAT_LOCALE, {
        timeZone,
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        hourCycle: 'h23',
      });
    } catch (error) {
      throw new BurrowError('INVALID_ARGUMENT', `unknown time zone ${JSON.stringify(timeZone)}`, {
        details: { timeZone },
        cause: error,
      });
    }
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

function checkTime(time: unknown): number {
  if (
    typeof time !== 'number' ||
    !Number.isInteger(time) ||
    time < MIN_BACKUP_TIME ||
    time > MAX_BACKUP_TIME
  ) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `snapshot time ${String(time)} is not a backup time (whole epoch seconds from ${MIN_BACKUP_TIME} to ${MAX_BACKUP_TIME})`,
      { details: { time: typeof time === 'number' ? time : null } },
    );
  }
  return time;
}

function localFields(time: number, formatter: Intl.DateTimeFormat): LocalFields {
  const fields: LocalFields = { year: NaN, month: NaN, day: NaN, hour: NaN };
  for (const part of formatter.formatToParts(time * 1000)) {
    const value = Number(part.value);
    if (part.type === 'year') fields.year = value;
    else if (part.type === 'month') fields.month = value;
    else if (part.type === 'day') fields.day = value;
    else if (part.type === 'hour') fields.hour = value;
  }
  // Some ICU versions print midnight as hour 24 even in h23; it is hour 0 of the same day.
  if (fields.hour === 24) fields.hour = 0;
  if (![fields.year, fields.month, fields.day, fields.hour].every(Number.isInteger)) {
    throw new BurrowError(
      'INTERNAL',
      `Intl returned unexpected date parts for ${time} in ${formatter.resolvedOptions().timeZone}`,
    );
  }
  return fields;
}

const DAY_MS = 86_400_000;

/** Milliseconds of a Gregorian calendar date at 00:00 UTC (years 0–99 taken literally). */
function utcDateMs(year: number, month: number, day: number): number {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return date.getTime();
}

/** ISO 8601 week-numbering year and week (what strftime's %G and %V print). */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const ms = utcDateMs(year, month, day);
  const weekday = ((new Date(ms).getUTCDay() + 6) % 7) + 1; // Monday 1 … Sunday 7
  // A week belongs to the year that holds its Thursday.
  const thursday = ms + (4 - weekday) * DAY_MS;
  const weekYear = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - utcDateMs(weekYear, 1, 1)) / DAY_MS / 7) + 1;
  return { year: weekYear, week };
}

export type PruneRule = 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';

const RULES: readonly { readonly rule: PruneRule; readonly key: KeepOptionKey }[] = [
  { rule: 'last', key: 'keepLast' },
  { rule: 'hourly', key: 'keepHourly' },
  { rule: 'daily', key: 'keepDaily' },
  { rule: 'weekly', key: 'keepWeekly' },
  { rule: 'monthly', key: 'keepMonthly' },
  { rule: 'yearly', key: 'keepYearly' },
];

const pad2 = (n: number): string => String(n).padStart(2, '0');

function keyOf(rule: PruneRule, time: number, local: () => LocalFields): string {
  switch (rule) {
    case 'last':
      return String(time);
    case 'hourly': {
      const f = local();
      return `${f.year}/${pad2(f.month)}/${pad2(f.day)}/${pad2(f.hour)}`;
    }
    case 'daily': {
      const f = local();
      return `${f.year}/${pad2(f.month)}/${pad2(f.day)}`;
    }
    case 'weekly': {
      const f = local();
      const w = isoWeek(f.year, f.month, f.day);
      return `${w.year}/${pad2(w.week)}`;
    }
    case 'monthly': {
      const f = local();
      return `${f.year}/${pad2(f.month)}`;
    }
    case 'yearly':
      return String(local().year);
  }
}

/**
 * The period a snapshot falls in under one rule, as strftime would print it in `timeZone`:
 * hourly "%Y/%m/%d/%H", daily "%Y/%m/%d", weekly "%G/%V", monthly "%Y/%m", yearly "%Y"; for
 * `last` the time itself, which is unique per snapshot. Two snapshots share a period exactly
 * when their keys are equal.
 */
export function periodKey(rule: PruneRule, time: number, timeZone?: string): string {
  const formatter = formatterFor(timeZone ?? defaultTimeZone());
  const t = checkTime(time);
  return keyOf(rule, t, () => localFields(t, formatter));
}

// ---------------------------------------------------------------------------------------------
// The selection

/**
 * Mark every snapshot of one group (§9.2). The result holds each input snapshot once, newest
 * first (snapshots with equal times keep their input order). With no keep option at all,
 * everything is kept: protected snapshots are marked `protected`, the rest `keep`.
 */
export function computePruneInfo<T extends PruneCandidate>(
  snapshots: readonly T[],
  keep: KeepOptions,
  timeZone?: string,
): PruneEntry<T>[] {
  checkKeepOptions(keep);
  for (const s of snapshots) checkTime(s.time);
  const list = snapshots
    .map((snapshot, index) => ({ snapshot, index }))
    .sort((a, b) => b.snapshot.time - a.snapshot.time || a.index - b.index)
    .map(({ snapshot }) => snapshot);

  const formatter = formatterFor(timeZone ?? defaultTimeZone());

  if (!hasKeepOptions(keep)) {
    return list.map((snapshot) => ({
      snapshot,
      mark: snapshot.protected ? 'protected' : 'keep',
    }));
  }

  const localCache: (LocalFields | undefined)[] = new Array<LocalFields | undefined>(list.length);
  const local = (i: number): LocalFields => {
    let fields = localCache[i];
    if (fields === undefined) {
      fields = localFields(list[i]!.time, formatter);
      localCache[i] = fields;
    }
    return fields;
  };

  const marks: (PruneMark | undefined)[] = new Array<PruneMark | undefined>(list.length);

  // Incomplete snapshots are decided before any rule, so they never use up a keep-* slot. Only
  // an incomplete snapshot newer than every finished one (a backup that may still be running)
  // survives, and only the first such one.
  let keepUnfinished = true;
  list.forEach((s, i) => {
    if (s.finished) {
      keepUnfinished = false;
    } else {
      marks[i] = keepUnfinished ? 'keep-partial' : 'remove';
      keepUnfinished = false;
    }
  });

  for (const { rule, key } of RULES) {
    const n = keep[key];
    if (n === undefined) continue;
    const keyAt = (i: number): string => keyOf(rule, list[i]!.time, () => local(i));

    // Periods an earlier rule already keeps a snapshot of: this rule spends no slot on them and
    // leaves their other snapshots unmarked, for later rules.
    const already = new Set<string>();
    for (let i = 0; i < list.length; i++) {
      if (marks[i] === 'keep') already.add(keyAt(i));
    }

    const included = new Set<string>();
    for (let i = 0; i < list.length; i++) {
      if (marks[i] !== undefined) continue;
      if (list[i]!.protected) {
        marks[i] = 'protected';
        continue;
      }
      const period = keyAt(i);
      if (already.has(period)) continue;
      if (!included.has(period)) {
        if (included.size >= n) break;
        included.add(period);
        marks[i] = 'keep';
      } else {
        // An older snapshot of a period this rule already keeps: it is gone for good, a later
        // rule cannot pick it up.
        marks[i] = 'remove';
      }
    }
  }

  return list.map((snapshot, i) => ({
    snapshot,
    mark: snapshot.protected ? 'protected' : (marks[i] ?? 'remove'),
  }));
}

export interface PrunePlan<T> {
  /** Snapshots that stay (keep, keep-partial, protected), in the order of the info. */
  keep: T[];
  /** Snapshots to delete, oldest first: the order PBS removes them in. */
  remove: T[];
}

/** Split a computed selection into what stays and what goes. */
export function prunePlan<T extends PruneCandidate>(info: readonly PruneEntry<T>[]): PrunePlan<T> {
  const keep: T[] = [];
  const remove: { snapshot: T; index: number }[] = [];
  info.forEach(({ snapshot, mark }, index) => {
    if (isKeptMark(mark)) keep.push(snapshot);
    else remove.push({ snapshot, index });
  });
  // Oldest first; equal times in reverse info order, i.e. the reverse of the newest-first list.
  remove.sort((a, b) => a.snapshot.time - b.snapshot.time || b.index - a.index);
  return { keep, remove: remove.map(({ snapshot }) => snapshot) };
}
