import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatLocalRfc3339, parseRfc3339 } from './time.js';

const originalTz = process.env.TZ;

function useTimeZone(zone: string): void {
  process.env.TZ = zone;
}

afterEach(() => {
  if (originalTz === undefined) delete process.env.TZ;
  else process.env.TZ = originalTz;
});

// 2024-01-15T12:00:00Z: 19723 days from 1970 to 2024 (54·365 + 13 leap days) + 14, times 86400, + 12 h.
const JAN_15_NOON_UTC = (19723 + 14) * 86400 + 12 * 3600;
// 2024-07-15T12:00:00Z: 182 more days (Jan..Jun of a leap year).
const JUL_15_NOON_UTC = JAN_15_NOON_UTC + 182 * 86400;

describe('formatLocalRfc3339', () => {
  it('checks the hand-computed epochs', () => {
    expect(JAN_15_NOON_UTC).toBe(1705320000);
    expect(new Date(JUL_15_NOON_UTC * 1000).toISOString()).toBe('2024-07-15T12:00:00.000Z');
  });

  it('writes +00:00 (not Z) in UTC', () => {
    useTimeZone('UTC');
    expect(formatLocalRfc3339(JAN_15_NOON_UTC)).toBe('2024-01-15T12:00:00+00:00');
  });

  it('follows standard and summer time (Europe/Berlin is UTC+1, UTC+2 in summer)', () => {
    useTimeZone('Europe/Berlin');
    expect(formatLocalRfc3339(JAN_15_NOON_UTC)).toBe('2024-01-15T13:00:00+01:00');
    expect(formatLocalRfc3339(JUL_15_NOON_UTC)).toBe('2024-07-15T14:00:00+02:00');
  });

  it('writes half-hour and negative offsets (Asia/Kolkata UTC+5:30, America/St_Johns UTC-3:30)', () => {
    useTimeZone('Asia/Kolkata');
    expect(formatLocalRfc3339(JAN_15_NOON_UTC)).toBe('2024-01-15T17:30:00+05:30');
    useTimeZone('America/St_Johns');
    expect(formatLocalRfc3339(JAN_15_NOON_UTC)).toBe('2024-01-15T08:30:00-03:30');
    expect(formatLocalRfc3339(JUL_15_NOON_UTC)).toBe('2024-07-15T09:30:00-02:30');
  });

  it('crosses the date line backwards (local date before the UTC date)', () => {
    useTimeZone('America/St_Johns');
    expect(formatLocalRfc3339(JAN_15_NOON_UTC - 12 * 3600)).toBe('2024-01-14T20:30:00-03:30');
  });
});

describe('parseRfc3339', () => {
  it('reads the offset form (PBS proxmox-time test value)', () => {
    expect(parseRfc3339('2020-12-30T00:00:00+06:30')).toBe(1609263000);
    expect(parseRfc3339('2020-12-29T17:30:00Z')).toBe(1609263000);
    expect(parseRfc3339('2020-12-29T14:00:00-03:30')).toBe(1609263000);
  });

  it('refuses other shapes and out-of-range fields', () => {
    for (const bad of [
      '',
      '2020-12-30 00:00:00+06:30',
      '2020-12-30T00:00:00',
      '2020-12-30T00:00:00+0630',
      '2020-12-30T00:00:00.5Z',
      '2020-13-01T00:00:00Z',
      '2020-00-01T00:00:00Z',
      '2020-12-00T00:00:00Z',
      '2020-12-30T24:00:00Z',
      '2020-12-30T00:60:00Z',
      '2020-12-30T00:00:00+24:00',
      '2020-12-30T00:00:00+00:60',
      '2020-12-30T00:00:00z',
      ' 2020-12-30T00:00:00Z',
    ]) {
      expect(parseRfc3339(bad), bad).toBeUndefined();
    }
  });

  it('reads back what formatLocalRfc3339 writes, in any zone', () => {
    for (const zone of ['UTC', 'Europe/Berlin', 'America/St_Johns', 'Pacific/Chatham']) {
      useTimeZone(zone);
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 0xffff_ffff }), (epoch) => {
          expect(parseRfc3339(formatLocalRfc3339(epoch))).toBe(epoch);
        }),
        { numRuns: 200 },
      );
    }
  });
});
