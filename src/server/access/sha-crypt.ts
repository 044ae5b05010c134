/**
 * SHA-crypt (`$5$` SHA-256, `$6$` SHA-512), the crypt(3) scheme of Ulrich Drepper's
 * "Unix crypt using SHA-256 and SHA-512" specification. PBS keeps password and API-token secret
 * hashes in this form (it writes `$5$`), so Burrow reads PBS's shadow.json and token.shadow, and
 * writes `$6$` itself. Written from the specification; checked against its published vectors
 * and against glibc's crypt().
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { BurrowError } from '../../lib/errors.js';

type Variant = '5' | '6';

const ALGORITHM: Readonly<Record<Variant, 'sha256' | 'sha512'>> = { '5': 'sha256', '6': 'sha512' };

/** The specification's limits and default. */
export const SHA_CRYPT_DEFAULT_ROUNDS = 5000;
export const SHA_CRYPT_MIN_ROUNDS = 1000;
export const SHA_CRYPT_MAX_ROUNDS = 999_999_999;
export const SHA_CRYPT_MAX_SALT = 16;

/** crypt's base64 alphabet: a different order from RFC 4648, and no padding. */
const CRYPT_ALPHABET = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `$<v>$[rounds=<n>$]<salt>[$<hash>]`, as crypt(3) reads its setting. */
const SETTING_RE = /^\$([56])\$(?:rounds=(\d{1,10})\$)?([^$]*)(?:\$(.*))?$/s;

interface Setting {
  readonly variant: Variant;
  /** Whether `rounds=` was given: then it is part of the output, even when it equals 5000. */
  readonly customRounds: boolean;
  readonly rounds: number;
  readonly salt: Buffer;
}

function parseSetting(setting: string): Setting | undefined {
  const match = SETTING_RE.exec(setting);
  if (match === null) return undefined;
  const variant = match[1] as Variant;
  const roundsText = match[2];
  // The salt is at most 16 bytes; longer salts are cut, as the specification says.
  const salt = Buffer.from(match[3] ?? '', 'utf8').subarray(0, SHA_CRYPT_MAX_SALT);
  if (roundsText === undefined) {
    return { variant, customRounds: false, rounds: SHA_CRYPT_DEFAULT_ROUNDS, salt };
  }
  const requested = Number(roundsText);
  const rounds = Math.min(SHA_CRYPT_MAX_ROUNDS, Math.max(SHA_CRYPT_MIN_ROUNDS, requested));
  return { variant, customRounds: true, rounds, salt };
}

/** `source` repeated (and cut) to `length` bytes. */
function stretch(source: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let offset = 0; offset < length; offset += source.length) {
    source.copy(out, offset, 0, Math.min(source.length, length - offset));
  }
  return out;
}

function digest(algorithm: string, ...parts: readonly Buffer[]): Buffer {
  const hash = createHash(algorithm);
  for (const part of parts) hash.update(part);
  return hash.digest();
}

function computeDigest(key: Buffer, salt: Buffer, rounds: number, variant: Variant): Buffer {
  const algorithm = ALGORITHM[variant];
  const b = digest(algorithm, key, salt, key);

  const a = createHash(algorithm);
  a.update(key);
  a.update(salt);
  a.update(stretch(b, key.length));
  // One step per bit of the key length, lowest bit first: B for a 1, the key for a 0.
  for (let n = key.length; n > 0; n >>>= 1) a.update((n & 1) !== 0 ? b : key);
  let current = a.digest();

  const dp = digest(algorithm, ...Array.from({ length: key.length }, () => key));
  const p = stretch(dp, key.length);
  const firstByte = current[0] ?? 0;
  const ds = digest(algorithm, ...Array.from({ length: 16 + firstByte }, () => salt));
  const s = stretch(ds, salt.length);

  // Each round hashes one of 8 layouts of (digest, p, s); the layouts are built once with a
  // slot for the previous digest, so a round is one copy and one hash.
  const size = current.length;
  const layouts = Array.from({ length: 8 }, (_, index) => {
    const odd = (index & 1) !== 0;
    const withS = (index & 2) !== 0;
    const withP = (index & 4) !== 0;
    const parts: Array<Buffer | 'digest'> = [odd ? p : 'digest'];
    if (withS) parts.push(s);
    if (withP) parts.push(p);
    parts.push(odd ? 'digest' : p);
    const buffer = Buffer.concat(parts.map((x) => (x === 'digest' ? Buffer.alloc(size) : x)));
    const slot = odd ? buffer.length - size : 0;
    return { buffer, slot };
  });
  for (let round = 0; round < rounds; round++) {
    const index = (round & 1) | (round % 3 !== 0 ? 2 : 0) | (round % 7 !== 0 ? 4 : 0);
    const layout = layouts[index] as { buffer: Buffer; slot: number };
    current.copy(layout.buffer, layout.slot);
    current = createHash(algorithm).update(layout.buffer).digest();
  }
  return current;
}

/** Up to 24 bits as `count` characters, lowest 6 bits first. */
function encode24(b2: number, b1: number, b0: number, count: number): string {
  let word = (b2 << 16) | (b1 << 8) | b0;
  let out = '';
  for (let i = 0; i < count; i++) {
    out += CRYPT_ALPHABET[word & 0x3f];
    word >>>= 6;
  }
  return out;
}

/**
 * The specification's byte order: the digest is taken in triples of bytes that lie a third of
 * the digest apart, each triple rotated one step further than the one before.
 */
function encodeDigest(d: Buffer, variant: Variant): string {
  const at = (i: number): number => d[i] ?? 0;
  let out = '';
  if (variant === '5') {
    for (let i = 0; i < 10; i++) {
      const [x, y, z] = [at(i), at(i + 10), at(i + 20)];
      if (i % 3 === 0) out += encode24(x, y, z, 4);
      else if (i % 3 === 1) out += encode24(z, x, y, 4);
      else out += encode24(y, z, x, 4);
    }
    return out + encode24(0, at(31), at(30), 3);
  }
  for (let i = 0; i < 21; i++) {
    const [x, y, z] = [at(i), at(i + 21), at(i + 42)];
    if (i % 3 === 0) out += encode24(x, y, z, 4);
    else if (i % 3 === 1) out += encode24(y, z, x, 4);
    else out += encode24(z, x, y, 4);
  }
  return out + encode24(0, 0, at(63), 2);
}

/**
 * crypt(3) for `$5$`/`$6$` settings: `setting` is `$5$salt`, `$6$rounds=N$salt` or a whole
 * stored hash (its hash part is ignored). Throws INVALID_ARGUMENT for any other scheme.
 */
export function shaCrypt(password: string | Uint8Array, setting: string): string {
  const parsed = parseSetting(setting);
  if (parsed === undefined) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'not a SHA-crypt setting (expected $5$ or $6$, optional rounds=N$, then the salt)',
    );
  }
  const key = typeof password === 'string' ? Buffer.from(password, 'utf8') : Buffer.from(password);
  const d = computeDigest(key, parsed.salt, parsed.rounds, parsed.variant);
  const rounds = parsed.customRounds ? `rounds=${parsed.rounds}$` : '';
  return `$${parsed.variant}$${rounds}${parsed.salt.toString('utf8')}$${encodeDigest(d, parsed.variant)}`;
}

/** A random 16-character salt from crypt's alphabet. */
export function randomSalt(): string {
  // 64 is a power of two, so taking 6 bits of each random byte is uniform.
  return Array.from(randomBytes(SHA_CRYPT_MAX_SALT), (byte) => CRYPT_ALPHABET[byte & 0x3f]).join(
    '',
  );
}

/** A new `$6$` hash of `password` with a random salt and the default 5000 rounds. */
export function hashPassword(password: string, options: { rounds?: number } = {}): string {
  const rounds = options.rounds === undefined ? '' : `rounds=${options.rounds}$`;
  return shaCrypt(password, `$6$${rounds}${randomSalt()}`);
}

/** Whether `stored` is a SHA-crypt hash this module can check. */
export function isShaCryptHash(stored: string): boolean {
  const parsed = parseSetting(stored);
  return parsed !== undefined && /^\$[56]\$(?:rounds=\d+\$)?[^$]*\$[./0-9A-Za-z]+$/.test(stored);
}

/**
 * Whether `password` matches the stored hash. The comparison takes the same time wherever the
 * strings differ; an unsupported or malformed hash never matches.
 */
export function verifyPassword(password: string | Uint8Array, stored: string): boolean {
  if (!isShaCryptHash(stored)) return false;
  const computed = Buffer.from(shaCrypt(password, stored), 'utf8');
  const expected = Buffer.from(stored, 'utf8');
  if (computed.length !== expected.length) {
    timingSafeEqual(computed, computed);
    return false;
  }
  return timingSafeEqual(computed, expected);
}
