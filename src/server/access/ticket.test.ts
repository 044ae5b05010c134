import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { codeOf } from '../../../test/helpers/error-code.js';
import {
  createCsrfToken,
  createTicket,
  decodeTicketData,
  encodeTicketData,
  hex8,
  verifyCsrfToken,
  verifyTicket,
} from './ticket.js';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef');
const OTHER_KEY = Buffer.from('fedcba9876543210fedcba9876543210');
const T0 = 1_700_000_000; // 0x6553F100

/** base64 without padding, as the spec describes it (independent of the module). */
const b64 = (bytes: Buffer): string => bytes.toString('base64').replace(/=+$/, '');

describe('hex8', () => {
  it('is 8 uppercase hex digits', () => {
    expect(hex8(T0)).toBe('6553F100');
    expect(hex8(0)).toBe('00000000');
    expect(hex8(0xffffffff)).toBe('FFFFFFFF');
    expect(codeOf(() => hex8(-1))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => hex8(2 ** 32))).toBe('INVALID_ARGUMENT');
  });
});

describe('tickets', () => {
  it('have the shape PBS:<userid>:<HEX8>::<HMAC-SHA256, base64 without padding>', () => {
    const ticket = createTicket('alice@pbs', KEY, T0);
    const signed = 'PBS:alice@pbs:6553F100';
    const signature = b64(createHmac('sha256', KEY).update(signed).digest());
    expect(ticket).toBe(`${signed}::${signature}`);
    expect(signature).not.toContain('=');
  });

  it('round trip, valid from 300 s before to 7200 s after their time', () => {
    const ticket = createTicket('alice@pbs', KEY, T0);
    expect(verifyTicket(ticket, KEY, T0)).toBe('alice@pbs');
    expect(verifyTicket(ticket, KEY, T0 + 7200)).toBe('alice@pbs');
    expect(verifyTicket(ticket, KEY, T0 - 300)).toBe('alice@pbs');
    expect(codeOf(() => verifyTicket(ticket, KEY, T0 + 7201))).toBe('AUTH_FAILED');
    expect(codeOf(() => verifyTicket(ticket, KEY, T0 - 301))).toBe('AUTH_FAILED');
  });

  it('fail with another key or any change', () => {
    const ticket = createTicket('alice@pbs', KEY, T0);
    expect(codeOf(() => verifyTicket(ticket, OTHER_KEY, T0))).toBe('AUTH_FAILED');
    const forged = ticket.replace('alice@pbs', 'root@pam');
    expect(codeOf(() => verifyTicket(forged, KEY, T0))).toBe('AUTH_FAILED');
    const later = ticket.replace('6553F100', '6553F200');
    expect(codeOf(() => verifyTicket(later, KEY, T0))).toBe('AUTH_FAILED');
    for (const bad of [
      '',
      'PBS',
      'PBS:alice@pbs:6553F100',
      'PBS:a:b:c::x',
      'XYZ:alice@pbs:6553F100::sig',
    ]) {
      expect(codeOf(() => verifyTicket(bad, KEY, T0))).toBe('AUTH_FAILED');
    }
  });

  it('the failure message stays generic; the reason is in details', () => {
    try {
      verifyTicket(createTicket('alice@pbs', KEY, T0), KEY, T0 + 10_000);
      expect.unreachable();
    } catch (error) {
      expect(error).toMatchObject({
        code: 'AUTH_FAILED',
        message: 'authentication failed',
        details: { reason: 'ticket expired' },
      });
    }
  });

  it('percent-encode control characters, ":" and "%" in the data, reversibly', () => {
    expect(encodeTicketData('a:b%c\u0001')).toBe('a%3Ab%25c%01');
    expect(decodeTicketData('a%3Ab%25c%01')).toBe('a:b%c\u0001');
    // Non-canonical encodings are refused, so one ticket names exactly one user.
    expect(decodeTicketData('%61lice@pbs')).toBeUndefined();
    expect(decodeTicketData('bad%zz')).toBeUndefined();
    const odd = 'we%ird@pbs';
    const ticket = createTicket(odd, KEY, T0);
    expect(ticket.startsWith('PBS:we%25ird@pbs:')).toBe(true);
    expect(verifyTicket(ticket, KEY, T0)).toBe(odd);
  });

  it('property: any user text round-trips', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40 }), fc.nat(0x7fffffff), (user, time) => {
        expect(verifyTicket(createTicket(user, KEY, time), KEY, time)).toBe(user);
      }),
    );
  });
});

describe('CSRF prevention tokens', () => {
  it('are <HEX8>:<base64-no-pad HMAC-SHA3-256(key, "<HEX8>:<userid>:")>', () => {
    const token = createCsrfToken('alice@pbs', KEY, T0);
    const expected = b64(createHmac('sha3-256', KEY).update('6553F100:alice@pbs:').digest());
    expect(token).toBe(`6553F100:${expected}`);
  });

  it('round trip within the validity window, for the right user only', () => {
    const token = createCsrfToken('alice@pbs', KEY, T0);
    expect(() => verifyCsrfToken(token, 'alice@pbs', KEY, T0 + 7200)).not.toThrow();
    expect(() => verifyCsrfToken(token, 'alice@pbs', KEY, T0 - 300)).not.toThrow();
    expect(codeOf(() => verifyCsrfToken(token, 'alice@pbs', KEY, T0 + 7201))).toBe('AUTH_FAILED');
    expect(codeOf(() => verifyCsrfToken(token, 'alice@pbs', KEY, T0 - 301))).toBe('AUTH_FAILED');
    expect(codeOf(() => verifyCsrfToken(token, 'bob@pbs', KEY, T0))).toBe('AUTH_FAILED');
    expect(codeOf(() => verifyCsrfToken(token, 'alice@pbs', OTHER_KEY, T0))).toBe('AUTH_FAILED');
    for (const bad of ['', 'nocolon', '6553F100:', 'zzzzzzzz:abc', '6553f100:abc']) {
      expect(codeOf(() => verifyCsrfToken(bad, 'alice@pbs', KEY, T0))).toBe('AUTH_FAILED');
    }
  });

  it('accept the legacy form base64-no-pad(SHA-256("<HEX8>:<userid>:" + key))', () => {
    const legacy = b64(createHash('sha256').update('6553F100:alice@pbs:').update(KEY).digest());
    expect(() => verifyCsrfToken(`6553F100:${legacy}`, 'alice@pbs', KEY, T0)).not.toThrow();
    expect(codeOf(() => verifyCsrfToken(`6553F100:${legacy}`, 'bob@pbs', KEY, T0))).toBe(
      'AUTH_FAILED',
    );
  });
});
