import {
  constants,
  generateKeyPair,
  generateKeyPairSync,
  privateDecrypt,
  publicEncrypt,
} from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { isBurrowError } from '../lib/errors.js';
import { CryptConfig, formatFingerprint } from './crypt-config.js';
import type { KeyConfig } from './key-config.js';
import {
  decryptKeyConfig,
  generateKey,
  parseKeyConfig,
  plainKeyConfig,
  serializeKeyConfig,
} from './key-config.js';
import type { MasterKeyPair } from './master-key.js';
import {
  createMasterKeyPair,
  unpadPkcs1Type2,
  unwrapKeyWithMasterKey,
  wrapKeyWithMasterKey,
} from './master-key.js';

interface PemPair {
  publicKey: string;
  privateKey: string;
}

function generateRsaPem(bits: number): Promise<PemPair> {
  return new Promise((resolve, reject) => {
    generateKeyPair(
      'rsa',
      {
        modulusLength: bits,
        publicKeyEncoding: { type: 'spki', format: 'pem' },
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      },
      (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey })),
    );
  });
}

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}

function throwsWith(fn: () => unknown, code: string): void {
  const err = caught(fn);
  expect(isBurrowError(err), `expected BurrowError ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
}

/** A plain KeyConfig without fingerprint: small enough (143 bytes) for a 2048-bit key. */
const SMALL_CONFIG: KeyConfig = parseKeyConfig(
  JSON.stringify({
    kdf: null,
    created: '2024-01-01T10:00:00+01:00',
    modified: '2024-01-01T10:00:00+01:00',
    data: Buffer.from(Uint8Array.from({ length: 32 }, (_, i) => i)).toString('base64'),
  }),
);

describe('RSA master key', () => {
  let a2048: PemPair;
  let b2048: PemPair;
  let master: MasterKeyPair;

  beforeAll(async () => {
    // Generated once per file, in parallel: RSA key generation dominates this file's run time.
    [a2048, b2048, master] = await Promise.all([
      generateRsaPem(2048),
      generateRsaPem(2048),
      createMasterKeyPair(3072, 'master passphrase'),
    ]);
  });

  it('wraps to exactly the modulus size and unwraps to the same KeyConfig (2048 bits)', () => {
    const wrapped = wrapKeyWithMasterKey(SMALL_CONFIG, a2048.publicKey);
    expect(wrapped.byteLength).toBe(256);
    expect(unwrapKeyWithMasterKey(wrapped, a2048.privateKey)).toEqual(SMALL_CONFIG);
    // Randomized padding: two wraps differ.
    expect(
      Buffer.from(wrapKeyWithMasterKey(SMALL_CONFIG, a2048.publicKey)).equals(Buffer.from(wrapped)),
    ).toBe(false);
  });

  it('uses PKCS#1 v1.5 type 2 padding around the compact KeyConfig JSON', () => {
    const wrapped = wrapKeyWithMasterKey(SMALL_CONFIG, a2048.publicKey);
    // Raw RSA with node:crypto, then the padding layout checked by hand.
    const block = privateDecrypt(
      { key: a2048.privateKey, padding: constants.RSA_NO_PADDING },
      wrapped,
    );
    const message = Buffer.from(serializeKeyConfig(SMALL_CONFIG), 'utf8');
    const sep = block.byteLength - message.byteLength - 1;
    expect(block[0]).toBe(0x00);
    expect(block[1]).toBe(0x02);
    expect(sep).toBeGreaterThanOrEqual(10);
    expect(block.subarray(2, sep).includes(0)).toBe(false);
    expect(block[sep]).toBe(0x00);
    expect(block.subarray(sep + 1).equals(message)).toBe(true);
  });

  it('round trips a PBS-shaped key config through a generated, passphrase-protected 3072-bit key', async () => {
    expect(master.publicPem).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
    expect(master.privatePem).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/);
    const key = generateKey();
    const config = await plainKeyConfig(key, { created: 1704099600 });
    const wrapped = wrapKeyWithMasterKey(config, master.publicPem);
    expect(wrapped.byteLength).toBe(384);
    const unwrapped = unwrapKeyWithMasterKey(wrapped, master.privatePem, 'master passphrase');
    expect(unwrapped).toEqual(config);
    const opened = await decryptKeyConfig(unwrapped);
    expect(opened.key).toEqual(key);
    expect(formatFingerprint(opened.fingerprint)).toBe(
      formatFingerprint(new CryptConfig(key).fingerprint),
    );
    expect(opened.created).toBe(1704099600);
  });

  it('refuses a master key too small for a fingerprinted key config', async () => {
    const config = await plainKeyConfig(generateKey());
    expect(Buffer.byteLength(serializeKeyConfig(config))).toBeGreaterThan(245);
    throwsWith(() => wrapKeyWithMasterKey(config, a2048.publicKey), 'RSA_KEY_INVALID');
  });

  it('fails with RSA_DECRYPT_FAILED under the wrong private key', () => {
    const wrapped = wrapKeyWithMasterKey(SMALL_CONFIG, a2048.publicKey);
    throwsWith(() => unwrapKeyWithMasterKey(wrapped, b2048.privateKey), 'RSA_DECRYPT_FAILED');
    // Different modulus size: caught before decrypting.
    throwsWith(
      () => unwrapKeyWithMasterKey(wrapped, master.privatePem, 'master passphrase'),
      'RSA_DECRYPT_FAILED',
    );
    // Damaged payloads.
    const flipped = Uint8Array.from(wrapped);
    flipped[100] = (flipped[100] ?? 0) ^ 1;
    throwsWith(() => unwrapKeyWithMasterKey(flipped, a2048.privateKey), 'RSA_DECRYPT_FAILED');
    throwsWith(
      () => unwrapKeyWithMasterKey(wrapped.subarray(1), a2048.privateKey),
      'RSA_DECRYPT_FAILED',
    );
    throwsWith(
      () => unwrapKeyWithMasterKey(new Uint8Array(256).fill(0xff), a2048.privateKey),
      'RSA_DECRYPT_FAILED',
    );
  });

  it('fails with RSA_DECRYPT_FAILED when the padded message is not a key config', () => {
    // Correctly padded, but not KeyConfig JSON: what a foreign or garbled blob would give.
    for (const message of ['hello', '{"kdf":null}']) {
      const foreign = publicEncrypt(
        { key: a2048.publicKey, padding: constants.RSA_PKCS1_PADDING },
        Buffer.from(message),
      );
      throwsWith(() => unwrapKeyWithMasterKey(foreign, a2048.privateKey), 'RSA_DECRYPT_FAILED');
    }
  });

  it('rejects unreadable and non-RSA keys with RSA_KEY_INVALID', () => {
    throwsWith(() => wrapKeyWithMasterKey(SMALL_CONFIG, 'not a pem'), 'RSA_KEY_INVALID');
    throwsWith(
      () =>
        wrapKeyWithMasterKey(
          SMALL_CONFIG,
          '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n',
        ),
      'RSA_KEY_INVALID',
    );
    throwsWith(() => unwrapKeyWithMasterKey(new Uint8Array(256), 'not a pem'), 'RSA_KEY_INVALID');
    throwsWith(
      () => unwrapKeyWithMasterKey(new Uint8Array(256), a2048.publicKey),
      'RSA_KEY_INVALID',
    );
    const ec = generateKeyPairSync('ec', {
      namedCurve: 'P-256',
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    throwsWith(() => wrapKeyWithMasterKey(SMALL_CONFIG, ec.publicKey), 'RSA_KEY_INVALID');
    throwsWith(() => unwrapKeyWithMasterKey(new Uint8Array(256), ec.privateKey), 'RSA_KEY_INVALID');
  });

  it('needs the right passphrase for a protected private key', () => {
    const wrapped = new Uint8Array(384);
    throwsWith(() => unwrapKeyWithMasterKey(wrapped, master.privatePem), 'KEY_PASSPHRASE_WRONG');
    throwsWith(
      () => unwrapKeyWithMasterKey(wrapped, master.privatePem, 'wrong passphrase'),
      'KEY_PASSPHRASE_WRONG',
    );
  });

  it('only wraps key configs without passphrase', () => {
    const protectedConfig: KeyConfig = {
      ...SMALL_CONFIG,
      kdf: { PBKDF2: { iter: 65535, salt: '' } },
    };
    throwsWith(() => wrapKeyWithMasterKey(protectedConfig, a2048.publicKey), 'INVALID_ARGUMENT');
  });

  it('checks the size and passphrase of new master keys', async () => {
    let err: unknown;
    try {
      await createMasterKeyPair(2048);
    } catch (e) {
      err = e;
    }
    expect(isBurrowError(err, 'INVALID_ARGUMENT')).toBe(true);
    err = undefined;
    try {
      await createMasterKeyPair(4096, 'abc');
    } catch (e) {
      err = e;
    }
    expect(isBurrowError(err, 'KEY_PASSPHRASE_TOO_SHORT')).toBe(true);
  });
});

describe('unpadPkcs1Type2', () => {
  const block = (ps: number[], message: number[], total = 32): Uint8Array => {
    const out = new Uint8Array(total);
    const body = [0x00, 0x02, ...ps, 0x00, ...message];
    out.set(body.slice(0, total));
    return out;
  };
  const ones = (n: number): number[] => new Array<number>(n).fill(0xa5);

  it('returns the message after the first zero following at least 8 padding bytes', () => {
    expect(unpadPkcs1Type2(block(ones(8), [1, 2, 3], 14))).toEqual(Uint8Array.from([1, 2, 3]));
    expect(unpadPkcs1Type2(block(ones(9), [0, 0], 14))).toEqual(Uint8Array.from([0, 0]));
    expect(unpadPkcs1Type2(block(ones(11), [], 14))).toEqual(new Uint8Array(0));
  });

  it('returns null for any malformed block', () => {
    expect(unpadPkcs1Type2(block(ones(7), [1, 2, 3, 4], 14))).toBeNull(); // padding too short
    const noSep = Uint8Array.from([0x00, 0x02, ...ones(12)]);
    expect(unpadPkcs1Type2(noSep)).toBeNull();
    const b = block(ones(8), [1, 2, 3], 14);
    expect(unpadPkcs1Type2(Uint8Array.from([0x01, ...b.subarray(1)]))).toBeNull();
    expect(unpadPkcs1Type2(Uint8Array.from([0x00, 0x01, ...b.subarray(2)]))).toBeNull();
    expect(unpadPkcs1Type2(new Uint8Array(5))).toBeNull();
  });
});
