import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isBurrowError } from '../lib/errors.js';
import {
  computePruneInfo,
  hasKeepOptions,
  isoWeek,
  keepOptionsToArgs,
  keepOptionsToRecord,
  parseKeepOptions,
  periodKey,
  prunePlan,
  type KeepOptions,
  type PruneCandidate,
  type PruneMark,
} from './prune.js';

interface Snap extends PruneCandidate {
  name: string;
}

const at = (iso: string): number => {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) throw new Error(`bad test time ${iso}`);
  return ms / 1000;
};

function snap(iso: string, opts: { finished?: boolean; protected?: boolean } = {}): Snap {
  return {
    name: iso,
    time: at(iso),
    finished: opts.finished ?? true,
    protected: opts.protected ?? false,
  };
}

/** Names of the snapshots that stay, sorted. */
function kept(snaps: readonly Snap[], keep: KeepOptions, tz = 'UTC'): string[] {
  return computePruneInfo(snaps, keep, tz)
    .filter((e) => e.mark !== 'remove')
    .map((e) => e.snapshot.name)
    .sort();
}

function marks(snaps: readonly Snap[], keep: KeepOptions, tz = 'UTC'): Record<string, PruneMark> {
  const out: Record<string, PruneMark> = {};
  for (const e of computePruneInfo(snaps, keep, tz)) out[e.snapshot.name] = e.mark;
  return out;
}

function expectInvalid(fn: () => unknown, text: string): void {
  try {
    fn();
  } catch (error) {
    expect(isBurrowError(error)).toBe(true);
    if (isBurrowError(error)) {
      expect(error.code).toBe('INVALID_ARGUMENT');
      expect(error.message).toContain(text);
    }
    return;
  }
  throw new Error('expected INVALID_ARGUMENT');
}

// pbs-formats §9.2: the upstream list, all at 11:59:15Z.
const SPEC_LIST = [
  '2018-11-15',
  '2019-11-15',
  '2019-11-21',
  '2019-11-22',
  '2019-11-29',
  '2019-12-01',
  '2019-12-02',
  '2019-12-03',
  '2019-12-04',
].map((d) => snap(`${d}T11:59:15Z`));
const T = (d: string): string => `${d}T11:59:15Z`;

describe('computePruneInfo: the examples of pbs-formats §9.2', () => {
  it('daily=1 keeps the newest day', () => {
    expect(kept(SPEC_LIST, { keepDaily: 1 })).toEqual([T('2019-12-04')]);
  });
  it('last=1, daily=1', () => {
    expect(kept(SPEC_LIST, { keepLast: 1, keepDaily: 1 })).toEqual([
      T('2019-12-03'),
      T('2019-12-04'),
    ]);
  });
  it('daily=1, weekly=1', () => {
    expect(kept(SPEC_LIST, { keepDaily: 1, keepWeekly: 1 })).toEqual([
      T('2019-12-01'),
      T('2019-12-04'),
    ]);
  });
  it('daily=1, weekly=1, monthly=1', () => {
    expect(kept(SPEC_LIST, { keepDaily: 1, keepWeekly: 1, keepMonthly: 1 })).toEqual([
      T('2019-11-22'),
      T('2019-12-01'),
      T('2019-12-04'),
    ]);
  });
  it('monthly=1, yearly=1', () => {
    expect(kept(SPEC_LIST, { keepMonthly: 1, keepYearly: 1 })).toEqual([
      T('2018-11-15'),
      T('2019-12-04'),
    ]);
  });
  it('the time zone does not matter for them (11:59:15Z is the same day from UTC-11 to UTC+12)', () => {
    for (const tz of ['Pacific/Pago_Pago', 'America/New_York', 'Europe/Vienna', 'Asia/Tokyo']) {
      expect(kept(SPEC_LIST, { keepDaily: 1, keepWeekly: 1, keepMonthly: 1 }, tz)).toEqual([
        T('2019-11-22'),
        T('2019-12-01'),
        T('2019-12-04'),
      ]);
    }
  });
  it('protected snapshots are never removed and do not count', () => {
    const list = [
      snap('2019-12-04T09:39:15Z', { protected: true }),
      snap('2019-12-04T10:39:15Z'),
      snap('2019-12-04T10:49:15Z'),
      snap('2019-12-04T10:59:15Z', { protected: true }),
    ];
    expect(marks(list, { keepLast: 1 })).toEqual({
      '2019-12-04T09:39:15Z': 'protected',
      '2019-12-04T10:39:15Z': 'remove',
      '2019-12-04T10:49:15Z': 'keep',
      '2019-12-04T10:59:15Z': 'protected',
    });
  });
  it('returns the entries newest first whatever the input order', () => {
    const shuffled = [3, 0, 8, 5, 1, 7, 2, 6, 4].map((i) => SPEC_LIST[i]!);
    const info = computePruneInfo(shuffled, { keepDaily: 1 }, 'UTC');
    expect(info.map((e) => e.snapshot.name)).toEqual(SPEC_LIST.map((s) => s.name).reverse());
  });
});

describe('computePruneInfo: incomplete snapshots', () => {
  it('keeps the newest incomplete one only when no finished snapshot is newer', () => {
    const list = [
      snap('2019-12-04T12:00:00Z', { finished: false }),
      snap('2019-12-03T12:00:00Z'),
      snap('2019-12-02T12:00:00Z', { finished: false }),
      snap('2019-12-01T12:00:00Z'),
      snap('2019-11-30T12:00:00Z', { finished: false }),
    ];
    expect(marks(list, { keepLast: 2 })).toEqual({
      '2019-12-04T12:00:00Z': 'keep-partial',
      '2019-12-03T12:00:00Z': 'keep',
      '2019-12-02T12:00:00Z': 'remove',
      '2019-12-01T12:00:00Z': 'keep',
      '2019-11-30T12:00:00Z': 'remove',
    });
    // Incomplete snapshots do not take a keep-last slot: with 1 slot the older finished goes.
    expect(marks(list, { keepLast: 1 })['2019-12-01T12:00:00Z']).toBe('remove');
  });

  it('removes an incomplete snapshot older than a finished one', () => {
    const list = [snap('2019-12-04T12:00:00Z'), snap('2019-12-04T11:00:00Z', { finished: false })];
    expect(marks(list, { keepLast: 5 })).toEqual({
      '2019-12-04T12:00:00Z': 'keep',
      '2019-12-04T11:00:00Z': 'remove',
    });
  });

  it('only the first incomplete snapshot met can be keep-partial', () => {
    const list = [
      snap('2019-12-04T12:00:00Z', { finished: false }),
      snap('2019-12-04T11:00:00Z', { finished: false }),
      snap('2019-12-04T10:00:00Z'),
    ];
    expect(marks(list, { keepLast: 5 })).toEqual({
      '2019-12-04T12:00:00Z': 'keep-partial',
      '2019-12-04T11:00:00Z': 'remove',
      '2019-12-04T10:00:00Z': 'keep',
    });
  });

  it('a keep-partial snapshot does not claim its period for the rules', () => {
    // If keep-partial counted as kept, the daily rule would see 12/04 as taken and skip the
    // finished snapshot of the same day, which would then end up removed.
    const list = [
      snap('2019-12-04T13:00:00Z', { finished: false }),
      snap('2019-12-04T12:00:00Z'),
      snap('2019-12-03T12:00:00Z'),
    ];
    expect(marks(list, { keepDaily: 1 })).toEqual({
      '2019-12-04T13:00:00Z': 'keep-partial',
      '2019-12-04T12:00:00Z': 'keep',
      '2019-12-03T12:00:00Z': 'remove',
    });
  });

  it('only incomplete snapshots: the newest is kept partial, the rest removed', () => {
    const list = [
      snap('2019-12-02T12:00:00Z', { finished: false }),
      snap('2019-12-03T12:00:00Z', { finished: false }),
    ];
    expect(marks(list, { keepLast: 3 })).toEqual({
      '2019-12-03T12:00:00Z': 'keep-partial',
      '2019-12-02T12:00:00Z': 'remove',
    });
  });

  it('a protected incomplete snapshot stays protected', () => {
    const list = [
      snap('2019-12-04T12:00:00Z'),
      snap('2019-12-03T12:00:00Z', { finished: false, protected: true }),
    ];
    expect(marks(list, { keepLast: 1 })['2019-12-03T12:00:00Z']).toBe('protected');
  });
});

describe('computePruneInfo: rules', () => {
  const day = [
    snap('2019-12-04T10:05:00Z'),
    snap('2019-12-04T10:40:00Z'),
    snap('2019-12-04T11:10:00Z'),
    snap('2019-12-04T11:50:00Z'),
    snap('2019-12-04T12:30:00Z'),
  ];

  it('hourly keeps the newest snapshot of each of the last N hours', () => {
    expect(marks(day, { keepHourly: 2 })).toEqual({
      '2019-12-04T12:30:00Z': 'keep',
      '2019-12-04T11:50:00Z': 'keep',
      '2019-12-04T11:10:00Z': 'remove',
      '2019-12-04T10:40:00Z': 'remove',
      '2019-12-04T10:05:00Z': 'remove',
    });
    expect(kept(day, { keepHourly: 3 })).toEqual([
      '2019-12-04T10:40:00Z',
      '2019-12-04T11:50:00Z',
      '2019-12-04T12:30:00Z',
    ]);
  });

  it('a later rule does not spend slots on periods an earlier rule kept', () => {
    // hourly=1 keeps 12:30; daily then sees 12/04 as taken, so its 2 slots go to 12/03 and
    // stop there (no older day).
    const list = [...day, snap('2019-12-03T23:30:00Z'), snap('2019-12-03T20:00:00Z')];
    expect(kept(list, { keepHourly: 1, keepDaily: 2 })).toEqual([
      '2019-12-03T23:30:00Z',
      '2019-12-04T12:30:00Z',
    ]);
  });

  it('a rule that stops leaves the rest unmarked for later rules', () => {
    // daily=1 stops at 12/03; weekly=1 then takes 12/01 (week 48); 11-29 shares week 48 → remove.
    const m = marks(SPEC_LIST, { keepDaily: 1, keepWeekly: 1 });
    expect(m[T('2019-12-03')]).toBe('remove');
    expect(m[T('2019-12-01')]).toBe('keep');
    expect(m[T('2019-11-29')]).toBe('remove');
  });

  it('a snapshot skipped for an already-kept period can still be kept by a later rule', () => {
    // 11-30 (Sat) and 12-01 (Sun) share ISO week 2019/48 but not the month. daily keeps 12-01;
    // weekly finds week 48 taken and leaves 11-30 unmarked; monthly then keeps it for 2019/11.
    const list = [snap('2019-11-30T12:00:00Z'), snap('2019-12-01T12:00:00Z')];
    expect(kept(list, { keepDaily: 1, keepWeekly: 1, keepMonthly: 1 })).toEqual([
      '2019-11-30T12:00:00Z',
      '2019-12-01T12:00:00Z',
    ]);
  });

  it('a snapshot removed as an older one of a kept period is not picked up by a later rule', () => {
    // 2019-12-31 and 2020-01-01 are both in ISO week 2020/01 but in different years.
    const list = [snap('2019-12-31T12:00:00Z'), snap('2020-01-01T12:00:00Z')];
    // weekly keeps 01-01 and removes 12-31 straight away: yearly cannot keep it for 2019.
    expect(marks(list, { keepWeekly: 1, keepYearly: 1 })).toEqual({
      '2020-01-01T12:00:00Z': 'keep',
      '2019-12-31T12:00:00Z': 'remove',
    });
    // With daily first, weekly only skips 12-31 (week taken by daily's keep) and yearly keeps it.
    expect(kept(list, { keepDaily: 1, keepWeekly: 1, keepYearly: 1 })).toEqual([
      '2019-12-31T12:00:00Z',
      '2020-01-01T12:00:00Z',
    ]);
  });

  it('keep-last larger than the number of snapshots keeps every finished one', () => {
    const list = [
      snap('2019-12-01T00:00:00Z'),
      snap('2019-12-02T00:00:00Z'),
      snap('2019-12-03T00:00:00Z', { protected: true }),
      snap('2019-11-30T00:00:00Z', { finished: false }),
    ];
    expect(marks(list, { keepLast: 10 })).toEqual({
      '2019-12-03T00:00:00Z': 'protected',
      '2019-12-02T00:00:00Z': 'keep',
      '2019-12-01T00:00:00Z': 'keep',
      '2019-11-30T00:00:00Z': 'remove',
    });
  });

  it('no keep option keeps everything', () => {
    const list = [
      snap('2019-12-01T00:00:00Z'),
      snap('2019-12-02T00:00:00Z', { protected: true }),
      snap('2019-11-30T00:00:00Z', { finished: false }),
    ];
    expect(marks(list, {})).toEqual({
      '2019-12-02T00:00:00Z': 'protected',
      '2019-12-01T00:00:00Z': 'keep',
      '2019-11-30T00:00:00Z': 'keep',
    });
    expect(computePruneInfo([], {})).toEqual([]);
  });

  it('an empty group gives an empty result', () => {
    expect(computePruneInfo([], { keepDaily: 3 }, 'UTC')).toEqual([]);
  });
});

describe('ISO weeks', () => {
  it('isoWeek agrees with the ISO 8601 calendar at year ends', () => {
    expect(isoWeek(2020, 12, 31)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2021, 1, 1)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2021, 1, 3)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2021, 1, 4)).toEqual({ year: 2021, week: 1 });
    expect(isoWeek(2019, 12, 29)).toEqual({ year: 2019, week: 52 });
    expect(isoWeek(2019, 12, 30)).toEqual({ year: 2020, week: 1 });
    expect(isoWeek(2018, 12, 31)).toEqual({ year: 2019, week: 1 });
    expect(isoWeek(2026, 1, 1)).toEqual({ year: 2026, week: 1 });
    expect(isoWeek(2027, 1, 1)).toEqual({ year: 2026, week: 53 });
    expect(isoWeek(2019, 12, 1)).toEqual({ year: 2019, week: 48 });
    expect(isoWeek(2019, 12, 2)).toEqual({ year: 2019, week: 49 });
  });

  it('period keys print like strftime', () => {
    const t = at('2019-12-30T08:05:00Z');
    expect(periodKey('hourly', t, 'UTC')).toBe('2019/12/30/08');
    expect(periodKey('daily', t, 'UTC')).toBe('2019/12/30');
    expect(periodKey('weekly', t, 'UTC')).toBe('2020/01');
    expect(periodKey('monthly', t, 'UTC')).toBe('2019/12');
    expect(periodKey('yearly', t, 'UTC')).toBe('2019');
    expect(periodKey('weekly', at('2021-01-01T00:00:00Z'), 'UTC')).toBe('2020/53');
    expect(periodKey('hourly', at('2019-12-30T00:00:00Z'), 'UTC')).toBe('2019/12/30/00');
  });

  it('weekly groups across the calendar year boundary', () => {
    const list = [
      snap('2019-12-29T12:00:00Z'), // 2019/52
      snap('2019-12-30T12:00:00Z'), // 2020/01
      snap('2020-12-31T12:00:00Z'), // 2020/53
      snap('2021-01-01T12:00:00Z'), // 2020/53
      snap('2021-01-04T12:00:00Z'), // 2021/01
    ];
    expect(marks(list, { keepWeekly: 3 })).toEqual({
      '2021-01-04T12:00:00Z': 'keep',
      '2021-01-01T12:00:00Z': 'keep',
      '2020-12-31T12:00:00Z': 'remove',
      '2019-12-30T12:00:00Z': 'keep',
      '2019-12-29T12:00:00Z': 'remove',
    });
    expect(kept(list, { keepWeekly: 4 })).toContain('2019-12-29T12:00:00Z');
  });
});

describe('time zones', () => {
  // A: 12/04 09:00Z, B: 12/04 06:00Z, C: 12/03 20:00Z.
  // UTC days: 12/04, 12/04, 12/03. Los Angeles (UTC-8): 12/04 01:00, 12/03 22:00, 12/03 12:00.
  // Auckland (NZDT, UTC+13): 12/04 22:00, 12/04 19:00, 12/04 09:00.
  const list = [
    snap('2019-12-04T09:00:00Z'),
    snap('2019-12-04T06:00:00Z'),
    snap('2019-12-03T20:00:00Z'),
  ];

  it('daily periods follow the local date', () => {
    expect(kept(list, { keepDaily: 2 }, 'UTC')).toEqual([
      '2019-12-03T20:00:00Z',
      '2019-12-04T09:00:00Z',
    ]);
    expect(kept(list, { keepDaily: 2 }, 'America/Los_Angeles')).toEqual([
      '2019-12-04T06:00:00Z',
      '2019-12-04T09:00:00Z',
    ]);
    expect(kept(list, { keepDaily: 2 }, 'Pacific/Auckland')).toEqual(['2019-12-04T09:00:00Z']);
  });

  it('weekly periods follow the local date (the spec list seen from Auckland)', () => {
    // 2019-12-01T11:59:15Z is Sunday in UTC (week 48) but Monday 00:59 in Auckland (week 49).
    expect(kept(SPEC_LIST, { keepDaily: 1, keepWeekly: 1 }, 'Pacific/Auckland')).toEqual([
      T('2019-11-29'),
      T('2019-12-04'),
    ]);
  });

  it('hourly uses local wall-clock hours: the repeated hour at the end of DST is one period', () => {
    // New York, 2019-11-03: 01:30 EDT = 05:30Z and 01:30 EST = 06:30Z; 00:30 EDT = 04:30Z.
    const fallBack = [
      snap('2019-11-03T04:30:00Z'),
      snap('2019-11-03T05:30:00Z'),
      snap('2019-11-03T06:30:00Z'),
    ];
    expect(kept(fallBack, { keepHourly: 2 }, 'America/New_York')).toEqual([
      '2019-11-03T04:30:00Z',
      '2019-11-03T06:30:00Z',
    ]);
    expect(kept(fallBack, { keepHourly: 2 }, 'UTC')).toEqual([
      '2019-11-03T05:30:00Z',
      '2019-11-03T06:30:00Z',
    ]);
  });

  it('defaults to the zone of the process', () => {
    const zone = new Intl.DateTimeFormat().resolvedOptions().timeZone;
    const keep = { keepHourly: 1, keepDaily: 2, keepWeekly: 2 };
    expect(computePruneInfo(list, keep)).toEqual(computePruneInfo(list, keep, zone));
  });

  it('rejects an unknown zone', () => {
    expectInvalid(() => computePruneInfo(list, { keepDaily: 1 }, 'Mars/Olympus_Mons'), 'time zone');
    expectInvalid(() => periodKey('daily', list[0]!.time, 'Nowhere/Else'), 'time zone');
  });
});

describe('input validation', () => {
  it('rejects bad keep values and times', () => {
    expectInvalid(() => computePruneInfo([], { keepDaily: 0 }), 'keep-daily');
    expectInvalid(() => computePruneInfo([], { keepLast: 1.5 }), 'keep-last');
    expectInvalid(() => computePruneInfo([], { keepYearly: -1 }), 'keep-yearly');
    expectInvalid(
      () =>
        computePruneInfo([{ time: Number.NaN, finished: true, protected: false }], { keepLast: 1 }),
      'snapshot time',
    );
    expectInvalid(
      () => computePruneInfo([{ time: 1e15, finished: true, protected: false }], { keepLast: 1 }),
      'snapshot time',
    );
  });
});

describe('keep options', () => {
  it('parses kebab-case and camel-case numbers and digit strings', () => {
    expect(
      parseKeepOptions({ 'keep-last': 3, keepDaily: '7', 'keep-weekly': '04', other: 'x' }),
    ).toEqual({ keepLast: 3, keepDaily: 7, keepWeekly: 4 });
    expect(parseKeepOptions({ 'keep-hourly': undefined, 'keep-monthly': null })).toEqual({});
    expect(parseKeepOptions({ 'keep-yearly': 2, keepYearly: 2 })).toEqual({ keepYearly: 2 });
  });

  it('rejects values that are not integers ≥ 1, naming the option', () => {
    expectInvalid(() => parseKeepOptions({ 'keep-daily': 0 }), 'keep-daily');
    expectInvalid(() => parseKeepOptions({ keepHourly: -2 }), 'keep-hourly');
    expectInvalid(() => parseKeepOptions({ 'keep-weekly': 1.5 }), 'keep-weekly');
    expectInvalid(() => parseKeepOptions({ 'keep-monthly': '1e3' }), 'keep-monthly');
    expectInvalid(() => parseKeepOptions({ 'keep-monthly': '' }), 'keep-monthly');
    expectInvalid(() => parseKeepOptions({ 'keep-last': ' 3' }), 'keep-last');
    expectInvalid(() => parseKeepOptions({ 'keep-last': true }), 'keep-last');
    expectInvalid(() => parseKeepOptions({ 'keep-last': Number.POSITIVE_INFINITY }), 'keep-last');
    expectInvalid(() => parseKeepOptions({ 'keep-last': '99999999999999999999' }), 'keep-last');
    expectInvalid(() => parseKeepOptions({ 'keep-last': 2, keepLast: 3 }), 'keep-last');
  });

  it('writes options back for CLIs and configs', () => {
    const keep: KeepOptions = { keepYearly: 1, keepLast: 3, keepDaily: 7 };
    expect(keepOptionsToArgs(keep)).toEqual([
      '--keep-last',
      '3',
      '--keep-daily',
      '7',
      '--keep-yearly',
      '1',
    ]);
    expect(keepOptionsToRecord(keep)).toEqual({
      'keep-last': 3,
      'keep-daily': 7,
      'keep-yearly': 1,
    });
    expect(parseKeepOptions(keepOptionsToRecord(keep))).toEqual(keep);
    expect(keepOptionsToArgs({})).toEqual([]);
  });

  it('hasKeepOptions', () => {
    expect(hasKeepOptions({})).toBe(false);
    expect(hasKeepOptions({ keepLast: undefined })).toBe(false);
    expect(hasKeepOptions({ keepMonthly: 1 })).toBe(true);
  });
});

describe('prunePlan', () => {
  it('splits kept from removed, removing oldest first', () => {
    const info = computePruneInfo(SPEC_LIST, { keepDaily: 1, keepWeekly: 1 }, 'UTC');
    const plan = prunePlan(info);
    expect(plan.keep.map((s) => s.name)).toEqual([T('2019-12-04'), T('2019-12-01')]);
    expect(plan.remove.map((s) => s.name)).toEqual([
      T('2018-11-15'),
      T('2019-11-15'),
      T('2019-11-21'),
      T('2019-11-22'),
      T('2019-11-29'),
      T('2019-12-02'),
      T('2019-12-03'),
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const ZONES = ['UTC', 'America/Los_Angeles', 'Pacific/Auckland', 'Europe/Berlin', 'Asia/Kolkata'];
const BASE = at('2019-01-01T00:00:00Z');

const snapsArb = fc
  .uniqueArray(
    fc.record({
      time: fc.integer({ min: BASE, max: BASE + 3 * 366 * 86_400 }),
      finished: fc.integer({ min: 0, max: 4 }).map((n) => n !== 0),
      protected: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
    }),
    { selector: (s) => s.time, maxLength: 40 },
  )
  .map((list) => list.map((s, i) => ({ ...s, name: String(i) })));

const count = fc.option(fc.integer({ min: 1, max: 8 }), { nil: undefined });
const keepArb = fc.record({
  keepLast: count,
  keepHourly: count,
  keepDaily: count,
  keepWeekly: count,
  keepMonthly: count,
  keepYearly: count,
});

describe('period key properties', () => {
  const timeArb = fc.integer({ min: 1, max: at('2200-01-01T00:00:00Z') });

  it('in UTC the keys are the fields of the ISO date text', () => {
    fc.assert(
      fc.property(timeArb, (t) => {
        const iso = new Date(t * 1000).toISOString(); // YYYY-MM-DDTHH:...
        const [y, m, d, h] = [
          iso.slice(0, 4),
          iso.slice(5, 7),
          iso.slice(8, 10),
          iso.slice(11, 13),
        ];
        expect(periodKey('hourly', t, 'UTC')).toBe(`${y}/${m}/${d}/${h}`);
        expect(periodKey('daily', t, 'UTC')).toBe(`${y}/${m}/${d}`);
        expect(periodKey('monthly', t, 'UTC')).toBe(`${y}/${m}`);
        expect(periodKey('yearly', t, 'UTC')).toBe(y);
      }),
      { numRuns: 200 },
    );
  });

  it('an ISO week is Monday to Sunday, numbered from the week holding 4 January', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 80_000 }), (n) => {
        const monday = at('1970-01-05T00:00:00Z') + n * 7 * 86_400; // 1970-01-05 was a Monday
        const key = (t: number) => {
          const date = new Date(t * 1000);
          return isoWeek(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate());
        };
        const week = key(monday);
        for (let i = 1; i < 7; i++) expect(key(monday + i * 86_400)).toEqual(week);
        // The week's Thursday lies in its week-year.
        expect(new Date((monday + 3 * 86_400) * 1000).getUTCFullYear()).toBe(week.year);
        // Week 1 is the week that holds 4 January.
        const jan4 = at(`${String(week.year).padStart(4, '0')}-01-04T00:00:00Z`);
        const jan4Weekday = (new Date(jan4 * 1000).getUTCDay() + 6) % 7; // Monday 0
        const week1Monday = jan4 - jan4Weekday * 86_400;
        expect(week.week).toBe((monday - week1Monday) / (7 * 86_400) + 1);
      }),
      { numRuns: 200 },
    );
  });
});

describe('properties', () => {
  it('every snapshot gets exactly one mark; protected ⇔ "protected"; keeps bounded by N', () => {
    fc.assert(
      fc.property(snapsArb, keepArb, fc.constantFrom(...ZONES), (snaps, keep, tz) => {
        const info = computePruneInfo(snaps, keep, tz);
        expect(info).toHaveLength(snaps.length);
        expect(new Set(info.map((e) => e.snapshot)).size).toBe(snaps.length);
        for (const s of snaps) expect(info.some((e) => e.snapshot === s)).toBe(true);
        for (let i = 1; i < info.length; i++) {
          expect(info[i - 1]!.snapshot.time).toBeGreaterThan(info[i]!.snapshot.time);
        }
        for (const { snapshot, mark } of info) {
          expect(mark === 'protected').toBe(snapshot.protected);
          if (mark === 'keep' && hasKeepOptions(keep)) expect(snapshot.finished).toBe(true);
          if (mark === 'keep-partial') expect(snapshot.finished).toBe(false);
        }
        const partial = info.filter((e) => e.mark === 'keep-partial');
        expect(partial.length).toBeLessThanOrEqual(1);
        if (partial.length === 1) {
          const t = partial[0]!.snapshot.time;
          expect(snaps.some((s) => s.finished && s.time > t)).toBe(false);
        }
        if (hasKeepOptions(keep)) {
          const budget = Object.values(keep).reduce((a: number, n) => a + (n ?? 0), 0);
          expect(info.filter((e) => e.mark === 'keep').length).toBeLessThanOrEqual(budget);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('with only keep-last=N the N newest finished unprotected snapshots are kept', () => {
    fc.assert(
      fc.property(snapsArb, fc.integer({ min: 1, max: 12 }), (snaps, n) => {
        const info = computePruneInfo(snaps, { keepLast: n }, 'UTC');
        const expected = snaps
          .filter((s) => s.finished && !s.protected)
          .sort((a, b) => b.time - a.time)
          .slice(0, n)
          .map((s) => s.name)
          .sort();
        const got = info
          .filter((e) => e.mark === 'keep')
          .map((e) => e.snapshot.name)
          .sort();
        expect(got).toEqual(expected);
      }),
      { numRuns: 150 },
    );
  });

  it('no options ⇒ everything is kept', () => {
    fc.assert(
      fc.property(snapsArb, (snaps) => {
        const info = computePruneInfo(snaps, {}, 'UTC');
        expect(info.every((e) => e.mark === (e.snapshot.protected ? 'protected' : 'keep'))).toBe(
          true,
        );
        expect(prunePlan(info).remove).toEqual([]);
      }),
      { numRuns: 50 },
    );
  });

  it('does not depend on the input order, and the plan partitions the snapshots', () => {
    fc.assert(
      fc.property(
        snapsArb.chain((s) =>
          fc.tuple(fc.constant(s), fc.shuffledSubarray(s, { minLength: s.length })),
        ),
        keepArb,
        ([snaps, shuffled], keep) => {
          const a = computePruneInfo(snaps, keep, 'Europe/Berlin');
          const b = computePruneInfo(shuffled, keep, 'Europe/Berlin');
          expect(b).toEqual(a);
          const plan = prunePlan(a);
          expect(plan.keep.length + plan.remove.length).toBe(snaps.length);
          for (let i = 1; i < plan.remove.length; i++) {
            expect(plan.remove[i - 1]!.time).toBeLessThan(plan.remove[i]!.time);
          }
        },
      ),
      { numRuns: 100 },
    );
  });
});
