/**
 * Login tickets and CSRF prevention tokens (pbs-protocol §3.1). Pure: keys and the time are
 * passed in.
 *
 * Ticket: `PBS:<userid>:<HEX8>::<signature>`. HEX8 is the creation time (epoch seconds, 8
 * uppercase hex digits); the signature is base64 without padding of HMAC-SHA256, keyed with
 * authkey.key, over `PBS:<userid>:<HEX8>`. Tickets are opaque to clients, so the scheme is ours
 * (PBS signs with an EC or RSA key); the shape is PBS's, so clients that read the user ID from
 * a ticket keep working. In the user ID, control characters, ':' and '%' are percent-encoded;
 * PBS encodes the first two only, and '%' is added so that decoding can never turn one user's
 * ticket into another user's.
 *
 * CSRF token: `<HEX8>:<base64-no-pad(HMAC-SHA3-256(csrf key, "<HEX8>:<userid>:"))>`; the legacy
 * form `base64-no-pad(SHA-256("<HEX8>:<userid>:" + csrf key))` is accepted too.
 *
 * Both are valid from 300 s before their time (clock skew) to 7200 s after it.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { BurrowError } from '../../lib/errors.js';

export const TICKET_PREFIX = 'PBS';
/** Seconds a ticket or CSRF token is valid after its creation (PBS's TICKET_LIFETIME). */
export const TICKET_LIFETIME = 7200;
/** How far in the future a ticket's time may lie (clock skew between cluster nodes, in PBS). */
export const TICKET_MAX_SKEW = 300;

const HEX8_RE = /^[0-9A-F]{8}$/;

/** Epoch seconds as 8 uppercase hex digits. */
export function hex8(time: number): string {
  if (!Number.isSafeInteger(time) || time < 0 || time > 0xffffffff) {
    throw new BurrowError('INVALID_ARGUMENT', `time ${time} does not fit 8 hex digits`);
  }
  return time.toString(16).toUpperCase().padStart(8, '0');
}

function base64NoPad(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64').replace(/=+$/, '');
}

function fail(reason: string): BurrowError {
  return new BurrowError('AUTH_FAILED', 'authentication failed', { details: { reason } });
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  if (x.length !== y.length) {
    timingSafeEqual(x, x);
    return false;
  }
  return timingSafeEqual(x, y);
}

// eslint-disable-next-line no-control-regex -- control characters are exactly what is encoded
const ENCODE_RE = /[\x00-\x1f\x7f:%]/g;

export function encodeTicketData(text: string): string {
  return text.replace(
    ENCODE_RE,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
  );
}

/** The inverse of encodeTicketData; undefined unless `text` is exactly what it would produce. */
export function decodeTicketData(text: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    return undefined;
  }
  return encodeTicketData(decoded) === text ? decoded : undefined;
}

function checkAge(time: number, now: number, what: string): void {
  const age = now - time;
  if (age < -TICKET_MAX_SKEW) throw fail(`${what} timestamp is newer than expected`);
  if (age > TICKET_LIFETIME) throw fail(`${what} expired`);
}

function ticketSignature(signed: string, key: Uint8Array): string {
  return base64NoPad(createHmac('sha256', key).update(signed, 'utf8').digest());
}

export function createTicket(userid: string, key: Uint8Array, now: number): string {
  const signed = `${TICKET_PREFIX}:${encodeTicketData(userid)}:${hex8(now)}`;
  return `${signed}::${ticketSignature(signed, key)}`;
}

/**
 * Check a ticket's signature and age; returns the user ID it was issued to. Throws
 * AUTH_FAILED (message "authentication failed", the reason in details) otherwise.
 */
export function verifyTicket(ticket: string, key: Uint8Array, now: number): string {
  const split = ticket.lastIndexOf('::');
  if (split < 0) throw fail('ticket without signature');
  const signed = ticket.slice(0, split);
  const signature = ticket.slice(split + 2);
  const parts = signed.split(':');
  if (parts.length !== 3 || parts[0] !== TICKET_PREFIX) throw fail('malformed ticket');
  const [, data, time] = parts as [string, string, string];
  if (!HEX8_RE.test(time)) throw fail('malformed ticket time');
  if (!sameText(signature, ticketSignature(signed, key))) throw fail('invalid ticket signature');
  checkAge(parseInt(time, 16), now, 'ticket');
  const userid = decodeTicketData(data);
  if (userid === undefined || userid === '') throw fail('malformed ticket data');
  return userid;
}

function csrfDigest(message: string, secret: Uint8Array): string {
  return base64NoPad(createHmac('sha3-256', secret).update(message, 'utf8').digest());
}

function legacyCsrfDigest(message: string, secret: Uint8Array): string {
  return base64NoPad(createHash('sha256').update(message, 'utf8').update(secret).digest());
}

export function createCsrfToken(userid: string, secret: Uint8Array, now: number): string {
  const time = hex8(now);
  return `${time}:${csrfDigest(`${time}:${userid}:`, secret)}`;
}

/** Throws AUTH_FAILED unless `token` is a valid CSRF prevention token of `userid` now. */
export function verifyCsrfToken(
  token: string,
  userid: string,
  secret: Uint8Array,
  now: number,
): void {
  const colon = token.indexOf(':');
  if (colon < 0) throw fail('malformed CSRF token');
  const time = token.slice(0, colon);
  const digest = token.slice(colon + 1);
  if (!HEX8_RE.test(time)) throw fail('malformed CSRF token time');
  const message = `${time}:${userid}:`;
  // Both forms are compared, so the time taken does not tell which one was close.
  const modern = sameText(digest, csrfDigest(message, secret));
  const legacy = sameText(digest, legacyCsrfDigest(message, secret));
  if (!modern && !legacy) throw fail('invalid CSRF token');
  checkAge(parseInt(time, 16), now, 'CSRF token');
}
