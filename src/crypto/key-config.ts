/**
 * Encryption key files (PBS `KeyConfig`, pbs-formats §11.3): the JSON shape, protecting a
 * 32-byte key with a passphrase (scrypt or PBKDF2, then AES-256-GCM), and unlocking it again.
 * Pure: the caller reads and writes the file (mode 0600, atomically).
 *
 * The KeyConfig value is kept in its JSON form (base64 strings, RFC 3339 text), so reading and
 * writing a file we did not create changes nothing but what was asked.
 */
import { createCipheriv, createDecipheriv, pbkdf2, randomBytes, scrypt } from 'node:crypto';
import type { BinaryLike, ScryptOptions } from 'node:crypto';
import { asBuffer, concatBytes, fromBase64, toBase64 } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { parseRfc3339 } from '../types/backup.js';
import { CryptConfig, KEY_SIZE, formatFingerprint, parseFingerprint } from './crypt-config.js';

export interface ScryptParams {
  n: number;
  r: number;
  p: number;
  /** base64 */
  salt: string;
}

export interface Pbkdf2Params {
  iter: number;
  /** base64 */
  salt: string;
}

/** serde's externally tagged enum: exactly one of the two keys. */
export type KeyDerivation = { Scrypt: ScryptParams } | { PBKDF2: Pbkdf2Params };

export interface KeyConfig {
  /** null: `data` is the raw key. */
  kdf: KeyDerivation | null;
  /** RFC 3339, local time with numeric offset (`Z` accepted when reading). */
  created: string;
  modified: string;
  /** base64: the raw key (kdf null) or IV(16) || tag(16) || AES-256-GCM ciphertext(32). */
  data: string;
  /** Colon form of the key's fingerprint; checked against the key when present. */
  fingerprint?: string;
  /** Passphrase hint. */
  hint?: string;
}

export type KdfName = 'scrypt' | 'pbkdf2' | 'none';
export type Passphrase = string | Uint8Array;

/** PBS's parameters for new key files. */
export const SCRYPT_N = 65536;
export const SCRYPT_R = 8;
export const SCRYPT_P = 1;
export const PBKDF2_ITERATIONS = 65535;
export const KDF_SALT_SIZE = 32;
export const MIN_PASSPHRASE_BYTES = 5;
/** The memory limit PBS hands to OpenSSL; Node's default (32 MiB) is below n=65536, r=8 (64 MiB). */
export const SCRYPT_MAXMEM = 1025 * 1024 * 1024;
/**
 * Sanity bounds for parameters read from a file, so a hostile key file cannot make us spin for
 * hours: 16 times PBS's own work factors. Memory is bounded by SCRYPT_MAXMEM.
 */
const MAX_SCRYPT_WORK = SCRYPT_N * SCRYPT_R * SCRYPT_P * 16;
const MAX_PBKDF2_ITERATIONS = PBKDF2_ITERATIONS * 16;

const IV_SIZE = 16;
const TAG_SIZE = 16;

function invalid(message: string, cause?: unknown): BurrowError {
  return new BurrowError('KEY_FILE_INVALID', `key file: ${message}`, { cause });
}

// ---------------------------------------------------------------------------------------------
// RFC 3339 local time as PBS writes it (reading uses parseRfc3339 of types/backup.ts)

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/**
 * `YYYY-MM-DDTHH:MM:SS+HH:MM` in local time (or at `offsetMinutes` east of UTC). UTC is written
 * `+00:00`, not `Z`, as PBS does.
 */
export function formatRfc3339Local(epochSeconds: number, offsetMinutes?: number): string {
  if (!Number.isSafeInteger(epochSeconds)) {
    throw new BurrowError('INVALID_ARGUMENT', `not an integer epoch time: ${epochSeconds}`);
  }
  // getTimezoneOffset is minutes west of UTC; historic zones may give fractions, which PBS
  // (integer division of tm_gmtoff) also drops.
  const offset = Math.trunc(offsetMinutes ?? -new Date(epochSeconds * 1000).getTimezoneOffset());
  const local = new Date((epochSeconds + offset * 60) * 1000);
  const year = local.getUTCFullYear();
  if (!(year >= 0 && year <= 9999)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `epoch time ${epochSeconds} is outside years 0..9999`,
    );
  }
  const abs = Math.abs(offset);
  return (
    `${pad(year, 4)}-${pad(local.getUTCMonth() + 1, 2)}-${pad(local.getUTCDate(), 2)}` +
    `T${pad(local.getUTCHours(), 2)}:${pad(local.getUTCMinutes(), 2)}:${pad(local.getUTCSeconds(), 2)}` +
    `${offset < 0 ? '-' : '+'}${pad(Math.trunc(abs / 60), 2)}:${pad(abs % 60, 2)}`
  );
}

// ---------------------------------------------------------------------------------------------
// Parsing and serializing

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function positiveInt(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw invalid(`${what} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

function base64Field(value: unknown, what: string): string {
  if (typeof value !== 'string') throw invalid(`${what} must be a base64 string`);
  try {
    fromBase64(value, what);
  } catch (cause) {
    throw invalid(`${what} is not valid base64`, cause);
  }
  return value;
}

function parseKdf(value: unknown): KeyDerivation | null {
  if (value === null || value === undefined) return null;
  if (!isObject(value)) throw invalid('kdf must be null or an object');
  const keys = Object.keys(value);
  if (keys.length !== 1)
    throw invalid(`kdf must have exactly one of Scrypt or PBKDF2, got ${JSON.stringify(keys)}`);
  const params = value[keys[0] ?? ''];
  if (!isObject(params)) throw invalid(`kdf.${keys[0]} must be an object`);
  if (keys[0] === 'Scrypt') {
    const n = positiveInt(params['n'], 'kdf.Scrypt.n');
    const r = positiveInt(params['r'], 'kdf.Scrypt.r');
    const p = positiveInt(params['p'], 'kdf.Scrypt.p');
    if (n < 2 || (n & (n - 1)) !== 0)
      throw invalid(`kdf.Scrypt.n must be a power of two, got ${n}`);
    if (n * r * p > MAX_SCRYPT_WORK)
      throw invalid(`scrypt parameters n=${n} r=${r} p=${p} exceed the work limit`);
    return { Scrypt: { n, r, p, salt: base64Field(params['salt'], 'kdf.Scrypt.salt') } };
  }
  if (keys[0] === 'PBKDF2') {
    const iter = positiveInt(params['iter'], 'kdf.PBKDF2.iter');
    if (iter > MAX_PBKDF2_ITERATIONS)
      throw invalid(`PBKDF2 iteration count ${iter} exceeds the limit ${MAX_PBKDF2_ITERATIONS}`);
    return { PBKDF2: { iter, salt: base64Field(params['salt'], 'kdf.PBKDF2.salt') } };
  }
  throw invalid(`unknown kdf ${JSON.stringify(keys[0])} (expected Scrypt or PBKDF2)`);
}

/**
 * Epoch seconds of a stored time: `YYYY-MM-DDTHH:MM:SS` then `Z` or `±HH:MM` (the parser of
 * types/backup.ts, which unlike PBS also refuses impossible dates and leap seconds; PBS never
 * writes either).
 */
function timeValue(value: unknown, what: string): number {
  if (typeof value !== 'string') throw invalid(`${what} must be an RFC 3339 string`);
  try {
    return parseRfc3339(value);
  } catch (cause) {
    throw invalid(`${what} is not an RFC 3339 time: ${JSON.stringify(value)}`, cause);
  }
}

function timeField(value: unknown, what: string): string {
  timeValue(value, what);
  return value as string;
}

/** Validate a parsed JSON value as a KeyConfig. Unknown keys are ignored, as PBS does. */
export function keyConfigFromJson(json: unknown): KeyConfig {
  if (!isObject(json)) throw invalid('expected a JSON object');
  const config: KeyConfig = {
    kdf: parseKdf(json['kdf']),
    created: timeField(json['created'], 'created'),
    modified: timeField(json['modified'], 'modified'),
    data: base64Field(json['data'], 'data'),
  };
  const fingerprint = json['fingerprint'];
  if (fingerprint !== undefined && fingerprint !== null) {
    if (typeof fingerprint !== 'string') throw invalid('fingerprint must be a string');
    try {
      parseFingerprint(fingerprint);
    } catch (cause) {
      throw invalid(
        `fingerprint is not 32 colon-separated hex bytes: ${JSON.stringify(fingerprint)}`,
        cause,
      );
    }
    config.fingerprint = fingerprint;
  }
  const hint = json['hint'];
  if (hint !== undefined && hint !== null) {
    if (typeof hint !== 'string') throw invalid('hint must be a string');
    config.hint = hint;
  }
  return config;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Parse key file contents (text or bytes). */
export function parseKeyConfig(input: string | Uint8Array): KeyConfig {
  let json: unknown;
  try {
    json = JSON.parse(typeof input === 'string' ? input : UTF8.decode(input));
  } catch (cause) {
    throw invalid(
      `not valid JSON (${cause instanceof Error ? cause.message : String(cause)})`,
      cause,
    );
  }
  return keyConfigFromJson(json);
}

/** Compact JSON in PBS's field order; `fingerprint` and `hint` only when present. */
export function serializeKeyConfig(config: KeyConfig): string {
  let kdf: unknown = null;
  if (config.kdf && 'Scrypt' in config.kdf) {
    const { n, r, p, salt } = config.kdf.Scrypt;
    kdf = { Scrypt: { n, r, p, salt } };
  } else if (config.kdf && 'PBKDF2' in config.kdf) {
    const { iter, salt } = config.kdf.PBKDF2;
    kdf = { PBKDF2: { iter, salt } };
  }
  const out: Record<string, unknown> = {
    kdf,
    created: config.created,
    modified: config.modified,
    data: config.data,
  };
  if (config.fingerprint !== undefined) out['fingerprint'] = config.fingerprint;
  if (config.hint !== undefined) out['hint'] = config.hint;
  return JSON.stringify(out);
}

// ---------------------------------------------------------------------------------------------
// Key derivation and protection

/** 32 fresh random bytes: a new encryption key. */
export function generateKey(): Uint8Array {
  return new Uint8Array(randomBytes(KEY_SIZE));
}

function passphraseBytes(passphrase: Passphrase): Buffer {
  return typeof passphrase === 'string' ? Buffer.from(passphrase, 'utf8') : Buffer.from(passphrase);
}

function checkPassphraseLength(bytes: Uint8Array): void {
  if (bytes.byteLength < MIN_PASSPHRASE_BYTES) {
    throw new BurrowError(
      'KEY_PASSPHRASE_TOO_SHORT',
      `the passphrase must be at least ${MIN_PASSPHRASE_BYTES} bytes long, got ${bytes.byteLength}`,
    );
  }
}

function scryptAsync(
  password: BinaryLike,
  salt: BinaryLike,
  options: ScryptOptions,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEY_SIZE, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function pbkdf2Async(password: BinaryLike, salt: BinaryLike, iterations: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    pbkdf2(password, salt, iterations, KEY_SIZE, 'sha256', (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

/**
 * The 32-byte key a KDF derives from a passphrase. Runs on libuv's thread pool, so a 0.2 s scrypt
 * does not stall the event loop. No length check here: the §12 test vector uses "test".
 */
export async function deriveKey(kdf: KeyDerivation, passphrase: Passphrase): Promise<Uint8Array> {
  const password = passphraseBytes(passphrase);
  try {
    if ('Scrypt' in kdf) {
      const { n, r, p, salt } = kdf.Scrypt;
      const options: ScryptOptions = { N: n, r, p, maxmem: SCRYPT_MAXMEM };
      return new Uint8Array(
        await scryptAsync(password, asBuffer(fromBase64(salt, 'scrypt salt')), options),
      );
    }
    const { iter, salt } = kdf.PBKDF2;
    return new Uint8Array(
      await pbkdf2Async(password, asBuffer(fromBase64(salt, 'PBKDF2 salt')), iter),
    );
  } catch (cause) {
    if (isBurrowError(cause)) throw cause;
    throw invalid(
      `key derivation failed: ${cause instanceof Error ? cause.message : String(cause)}`,
      cause,
    );
  }
}

function newKdf(name: 'scrypt' | 'pbkdf2'): KeyDerivation {
  const salt = toBase64(randomBytes(KDF_SALT_SIZE));
  return name === 'scrypt'
    ? { Scrypt: { n: SCRYPT_N, r: SCRYPT_R, p: SCRYPT_P, salt } }
    : { PBKDF2: { iter: PBKDF2_ITERATIONS, salt } };
}

function checkKey(key: Uint8Array): void {
  if (key.byteLength !== KEY_SIZE) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `an encryption key has ${KEY_SIZE} bytes, got ${key.byteLength}`,
    );
  }
}

export interface CreateKeyConfigOptions {
  kdf: KdfName;
  /** Required for scrypt and pbkdf2, refused for none. At least 5 bytes (UTF-8). */
  passphrase?: Passphrase;
  hint?: string;
  /** Clock injection; also the `modified` time. */
  now?: Date;
  /** Keep an existing creation time (epoch seconds or the stored RFC 3339 text). */
  created?: number | string;
  /** Offset east of UTC for the time strings; the local zone when absent. */
  offsetMinutes?: number;
}

/** Protect `key` as a new KeyConfig (or store it plainly with kdf 'none'). */
export async function createKeyConfig(
  key: Uint8Array,
  options: CreateKeyConfigOptions,
): Promise<KeyConfig> {
  checkKey(key);
  const nowSeconds = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const modified = formatRfc3339Local(nowSeconds, options.offsetMinutes);
  const created =
    typeof options.created === 'string'
      ? timeField(options.created, 'created')
      : options.created !== undefined
        ? formatRfc3339Local(options.created, options.offsetMinutes)
        : modified;
  const fingerprint = formatFingerprint(new CryptConfig(key).fingerprint);

  let kdf: KeyDerivation | null = null;
  let data: Uint8Array;
  if (options.kdf === 'none') {
    if (options.passphrase !== undefined) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'a passphrase was given but the key derivation is "none"',
      );
    }
    data = key;
  } else {
    if (options.passphrase === undefined) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `key derivation "${options.kdf}" needs a passphrase`,
      );
    }
    checkPassphraseLength(passphraseBytes(options.passphrase));
    kdf = newKdf(options.kdf);
    const derived = await deriveKey(kdf, options.passphrase);
    const iv = randomBytes(IV_SIZE);
    const cipher = createCipheriv('aes-256-gcm', derived, iv, { authTagLength: TAG_SIZE });
    const ciphertext = Buffer.concat([cipher.update(asBuffer(key)), cipher.final()]);
    data = concatBytes(iv, cipher.getAuthTag(), ciphertext);
  }

  const config: KeyConfig = { kdf, created, modified, data: toBase64(data), fingerprint };
  if (options.hint !== undefined) config.hint = options.hint;
  return config;
}

export interface DecryptedKey {
  key: Uint8Array;
  fingerprint: Uint8Array;
  /** Creation time in epoch seconds (kept when the key is re-wrapped, e.g. for the master key). */
  created: number;
}

/**
 * Unlock a KeyConfig. A protected key needs a passphrase of at least 5 bytes
 * (KEY_PASSPHRASE_TOO_SHORT); a wrong one is KEY_PASSPHRASE_WRONG; a stored fingerprint that
 * does not belong to the key is KEY_FINGERPRINT_MISMATCH.
 */
export async function decryptKeyConfig(
  config: KeyConfig,
  passphrase?: Passphrase,
): Promise<DecryptedKey> {
  const data = fromBase64(config.data, 'key data');
  let key: Uint8Array;
  if (config.kdf === null) {
    if (data.byteLength !== KEY_SIZE)
      throw invalid(`a plain key has ${KEY_SIZE} bytes, got ${data.byteLength}`);
    key = data;
  } else {
    if (passphrase === undefined) {
      throw new BurrowError(
        'KEY_PASSPHRASE_WRONG',
        'the key is protected by a passphrase and none was given',
      );
    }
    checkPassphraseLength(passphraseBytes(passphrase));
    if (data.byteLength !== IV_SIZE + TAG_SIZE + KEY_SIZE) {
      throw invalid(
        `protected key data has ${IV_SIZE + TAG_SIZE + KEY_SIZE} bytes, got ${data.byteLength}`,
      );
    }
    const derived = await deriveKey(config.kdf, passphrase);
    try {
      const decipher = createDecipheriv('aes-256-gcm', derived, data.subarray(0, IV_SIZE), {
        authTagLength: TAG_SIZE,
      });
      decipher.setAuthTag(data.subarray(IV_SIZE, IV_SIZE + TAG_SIZE));
      key = new Uint8Array(
        Buffer.concat([decipher.update(data.subarray(IV_SIZE + TAG_SIZE)), decipher.final()]),
      );
    } catch (cause) {
      const hint = config.hint === undefined ? '' : ` (passphrase hint: ${config.hint})`;
      throw new BurrowError(
        'KEY_PASSPHRASE_WRONG',
        `unable to decrypt the key: wrong passphrase?${hint}`,
        {
          cause,
          details: config.hint === undefined ? {} : { hint: config.hint },
        },
      );
    }
  }

  const fingerprint = new CryptConfig(key).fingerprint;
  if (config.fingerprint !== undefined) {
    const stored = parseFingerprint(config.fingerprint);
    if (!Buffer.from(stored).equals(Buffer.from(fingerprint))) {
      throw new BurrowError(
        'KEY_FINGERPRINT_MISMATCH',
        `the key file records fingerprint ${formatFingerprint(stored)}, but its key has ${formatFingerprint(fingerprint)}`,
        { details: { stored: formatFingerprint(stored), actual: formatFingerprint(fingerprint) } },
      );
    }
  }
  return { key, fingerprint, created: timeValue(config.created, 'created') };
}

export interface ChangePassphraseOptions {
  /** Defaults to the current KDF kind (scrypt when the key was unprotected and a new passphrase is given). */
  kdf?: KdfName;
  /** The new hint; the old one is dropped (it described the old passphrase). */
  hint?: string;
  now?: Date;
  offsetMinutes?: number;
}

/** Re-protect the same key under a new passphrase, keeping `created` and updating `modified`. */
export async function changePassphrase(
  config: KeyConfig,
  oldPassphrase: Passphrase | undefined,
  newPassphrase: Passphrase | undefined,
  options: ChangePassphraseOptions = {},
): Promise<KeyConfig> {
  const { key } = await decryptKeyConfig(config, oldPassphrase);
  const current: KdfName =
    config.kdf === null ? 'none' : 'Scrypt' in config.kdf ? 'scrypt' : 'pbkdf2';
  const kdf =
    options.kdf ?? (current === 'none' && newPassphrase !== undefined ? 'scrypt' : current);
  const created: CreateKeyConfigOptions = { kdf, created: config.created };
  if (newPassphrase !== undefined) created.passphrase = newPassphrase;
  if (options.hint !== undefined) created.hint = options.hint;
  if (options.now !== undefined) created.now = options.now;
  if (options.offsetMinutes !== undefined) created.offsetMinutes = options.offsetMinutes;
  return createKeyConfig(key, created);
}

/** A plain (kdf null) KeyConfig of `key`, as the client builds it for the RSA master key. */
export async function plainKeyConfig(
  key: Uint8Array,
  options: { created?: number | string; now?: Date; offsetMinutes?: number } = {},
): Promise<KeyConfig> {
  return createKeyConfig(key, { ...options, kdf: 'none' });
}
