import { describe, expect, it } from 'vitest';
import { parseVerifyState, shouldVerify, verifyDecision } from './verify-filter.js';

// The example UPID of pbs-formats §11.1; its start time field is 5CA78B83.
const UPID = 'UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection:store1:root@pam:';
const START = 0x5ca78b83;
const DAY = 86_400;
const ok = { state: 'ok', upid: UPID };
const failed = { state: 'failed', upid: UPID };

describe('parseVerifyState', () => {
  it('reads state and UPID', () => {
    const parsed = parseVerifyState(ok);
    expect(parsed?.state).toBe('ok');
    expect(parsed?.upid.startTime).toBe(START);
    expect(parsed?.upid.node).toBe('elsa');
    expect(parseVerifyState({ ...failed, extra: 1 })?.state).toBe('failed');
  });
  it('absent or null means never verified', () => {
    expect(parseVerifyState(undefined)).toBeUndefined();
    expect(parseVerifyState(null)).toBeUndefined();
  });
  it.each([
    ['a string', 'ok'],
    ['an array', [ok]],
    ['a bad state', { state: 'good', upid: UPID }],
    ['no state', { upid: UPID }],
    ['no upid', { state: 'ok' }],
    ['a numeric upid', { state: 'ok', upid: 5 }],
    ['a malformed upid', { state: 'ok', upid: 'UPID:x' }],
  ])('rejects %s with MANIFEST_INVALID', (_name, value) => {
    expect(() => parseVerifyState(value)).toThrow(
      expect.objectContaining({ code: 'MANIFEST_INVALID' }),
    );
  });
});

describe('shouldVerify (pbs-formats §8.3)', () => {
  const now = START + 10 * DAY + 500;

  it('verifies everything when ignore-verified is false', () => {
    expect(verifyDecision({ verifyState: ok, ignoreVerified: false, nowSeconds: now })).toEqual({
      verify: true,
      reason: 'not-ignoring-verified',
    });
    expect(
      shouldVerify({
        verifyState: ok,
        ignoreVerified: false,
        outdatedAfterDays: 30,
        nowSeconds: now,
      }),
    ).toBe(true);
  });

  it('ignore-verified defaults to true', () => {
    expect(shouldVerify({ verifyState: ok, nowSeconds: now })).toBe(false);
  });

  it('verifies a snapshot that was never verified', () => {
    for (const verifyState of [undefined, null]) {
      const d = verifyDecision({ verifyState, outdatedAfterDays: 100, nowSeconds: now });
      expect(d.verify).toBe(true);
      expect(d.reason).toBe('never-verified');
    }
  });

  it('verifies when verify_state cannot be read, and says why', () => {
    const d = verifyDecision({ verifyState: { state: 'ok', upid: 'garbage' }, nowSeconds: now });
    expect(d.verify).toBe(true);
    expect(d.reason).toBe('unreadable-state');
    expect(d.error?.code).toBe('MANIFEST_INVALID');
    expect(shouldVerify({ verifyState: 42, nowSeconds: now })).toBe(true);
  });

  it('never re-verifies without outdated-after, whatever the earlier result', () => {
    expect(verifyDecision({ verifyState: ok, nowSeconds: START + 10_000 * DAY }).reason).toBe(
      'verified',
    );
    expect(shouldVerify({ verifyState: ok, nowSeconds: START + 10_000 * DAY })).toBe(false);
    expect(shouldVerify({ verifyState: failed, nowSeconds: START + 10_000 * DAY })).toBe(false);
  });

  it('re-verifies only when the whole days since the last verify exceed outdated-after', () => {
    const at = (seconds: number, outdatedAfterDays: number) =>
      verifyDecision({ verifyState: ok, outdatedAfterDays, nowSeconds: START + seconds });
    // 7 days and 23:59:59 → 7 whole days, not more than 7.
    expect(at(8 * DAY - 1, 7)).toMatchObject({
      verify: false,
      reason: 'recently-verified',
      days: 7,
    });
    // Exactly 8 days → 8 > 7.
    expect(at(8 * DAY, 7)).toMatchObject({ verify: true, reason: 'outdated', days: 8 });
    expect(at(3 * DAY, 7).verify).toBe(false);
    // A failed verify is treated by its age too.
    expect(
      shouldVerify({ verifyState: failed, outdatedAfterDays: 7, nowSeconds: START + 3 * DAY }),
    ).toBe(false);
  });

  it('outdated-after 0 re-verifies after one whole day', () => {
    const d = (seconds: number) =>
      shouldVerify({ verifyState: ok, outdatedAfterDays: 0, nowSeconds: START + seconds });
    expect(d(0)).toBe(false);
    expect(d(DAY - 1)).toBe(false);
    expect(d(DAY)).toBe(true);
  });

  it('a last verify in the future is not outdated', () => {
    expect(
      shouldVerify({ verifyState: ok, outdatedAfterDays: 0, nowSeconds: START - 5 * DAY }),
    ).toBe(false);
  });

  it('rejects a bad outdated-after or now', () => {
    for (const outdatedAfterDays of [-1, 1.5, Number.NaN]) {
      expect(() => shouldVerify({ verifyState: ok, outdatedAfterDays, nowSeconds: now })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
    }
    expect(() => shouldVerify({ verifyState: ok, nowSeconds: Number.NaN })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });
});
