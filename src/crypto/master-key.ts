/**
 * The RSA master key (pbs-formats §11.3): a client with a master public key also stores its
 * encryption key in each encrypted snapshot, as `rsa-encrypted.key.blob`, so whoever holds the
 * master private key can recover it. The blob payload is RSA PKCS#1 v1.5 encryption of the
 * compact JSON of a plain (kdf null) KeyConfig; the payload is exactly the modulus size.
 *
 * The caller wraps the result in a plain, uncompressed DataBlob (`encodeBlob(bytes,
 * {compress: false})` of format/data-blob.ts) and lists it in the manifest with the backup's
 * crypt mode; to recover, it decodes that blob and passes the payload here.
 *
 * Node 20 refuses RSA_PKCS1_PADDING in privateDecrypt (CVE-2023-46809, the "Marvin" timing
 * attack; OpenSSL 3.0 lacks implicit rejection). We decrypt with RSA_NO_PADDING and remove the
 * PKCS#1 v1.5 type-2 padding ourselves, scanning every byte without data-dependent branches.
 * Marvin needs an oracle that decrypts attacker-chosen ciphertexts many times; unwrapping is a
 * local, user-started recovery of a blob from one's own datastore, and every failure gives the
 * same error, so the remaining timing difference (the final check, the JSON parse) exposes nothing.
 */
import {
  constants,
  createPrivateKey,
  createPublicKey,
  generateKeyPair,
  privateDecrypt,
  publicEncrypt,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { asBuffer } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import type { KeyConfig, Passphrase } from './key-config.js';
import { MIN_PASSPHRASE_BYTES, parseKeyConfig, serializeKeyConfig } from './key-config.js';

/** PKCS#1 v1.5: 0x00 0x02, at least 8 nonzero padding bytes, 0x00, then the message. */
const PKCS1_OVERHEAD = 11;
/**
 * A fingerprinted plain KeyConfig is at least 255 bytes of JSON, more than a 2048-bit modulus can carry
 * (245), so new master keys have at least 3072 bits. PBS creates 4096-bit ones.
 */
export const MIN_MASTER_KEY_BITS = 3072;
export const MAX_MASTER_KEY_BITS = 16384;

export interface MasterKeyPair {
  /** SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`), as `master-public.pem`. */
  publicPem: string;
  /** PKCS#8 PEM, AES-256-CBC encrypted (`BEGIN ENCRYPTED PRIVATE KEY`) when a passphrase is given. */
  privatePem: string;
}

function pemText(pem: string | Uint8Array): string {
  return typeof pem === 'string' ? pem : Buffer.from(pem).toString('utf8');
}

function passphraseBuffer(passphrase: Passphrase): Buffer {
  return typeof passphrase === 'string' ? Buffer.from(passphrase, 'utf8') : Buffer.from(passphrase);
}

/** Node's key generation takes the PEM passphrase as a string (encoded as UTF-8 for OpenSSL). */
function passphraseText(passphrase: Passphrase): string {
  if (typeof passphrase === 'string') return passphrase;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(passphrase);
  } catch (cause) {
    throw new BurrowError('INVALID_ARGUMENT', 'a master key passphrase must be valid UTF-8', {
      cause,
    });
  }
}

function rsaInvalid(message: string, cause?: unknown): BurrowError {
  return new BurrowError('RSA_KEY_INVALID', message, { cause });
}

function checkRsa(key: KeyObject, what: string): number {
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (key.asymmetricKeyType !== 'rsa' || bits === undefined) {
    throw rsaInvalid(
      `${what} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key, not an RSA key`,
    );
  }
  return Math.ceil(bits / 8);
}

function loadPublicKey(pem: string | Uint8Array): { key: KeyObject; size: number } {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pemText(pem), format: 'pem' });
  } catch (cause) {
    throw rsaInvalid('the master public key is not a readable PEM key', cause);
  }
  return { key, size: checkRsa(key, 'the master public key') };
}

function loadPrivateKey(
  pem: string | Uint8Array,
  passphrase?: Passphrase,
): { key: KeyObject; size: number } {
  const text = pemText(pem);
  let key: KeyObject;
  try {
    key = createPrivateKey({
      key: text,
      format: 'pem',
      ...(passphrase === undefined ? {} : { passphrase: passphraseBuffer(passphrase) }),
    });
  } catch (cause) {
    // PKCS#8 ("ENCRYPTED PRIVATE KEY") and legacy ("Proc-Type: 4,ENCRYPTED") protected PEMs.
    if (/ENCRYPTED/.test(text)) {
      throw new BurrowError(
        'KEY_PASSPHRASE_WRONG',
        passphrase === undefined
          ? 'the master private key is protected by a passphrase and none was given'
          : 'the passphrase does not unlock the master private key',
        { cause },
      );
    }
    throw rsaInvalid('the master private key is not a readable PEM private key', cause);
  }
  return { key, size: checkRsa(key, 'the master private key') };
}

/** Generate a master key pair (async: 4096-bit generation takes seconds). */
export async function createMasterKeyPair(
  bits = 4096,
  passphrase?: Passphrase,
): Promise<MasterKeyPair> {
  if (!Number.isSafeInteger(bits) || bits < MIN_MASTER_KEY_BITS || bits > MAX_MASTER_KEY_BITS) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `master key size must be ${MIN_MASTER_KEY_BITS}..${MAX_MASTER_KEY_BITS} bits, got ${bits}`,
    );
  }
  const pass = passphrase === undefined ? undefined : passphraseText(passphrase);
  if (pass !== undefined && Buffer.byteLength(pass, 'utf8') < MIN_PASSPHRASE_BYTES) {
    throw new BurrowError(
      'KEY_PASSPHRASE_TOO_SHORT',
      `the passphrase must be at least ${MIN_PASSPHRASE_BYTES} bytes long`,
    );
  }
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, publicPem: string, privatePem: string): void =>
      err
        ? reject(
            new BurrowError('INTERNAL', `RSA key generation failed: ${err.message}`, {
              cause: err,
            }),
          )
        : resolve({ publicPem, privatePem });
    if (pass === undefined) {
      generateKeyPair(
        'rsa',
        {
          modulusLength: bits,
          publicExponent: 0x10001,
          publicKeyEncoding: { type: 'spki', format: 'pem' },
          privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
        },
        done,
      );
    } else {
      generateKeyPair(
        'rsa',
        {
          modulusLength: bits,
          publicExponent: 0x10001,
          publicKeyEncoding: { type: 'spki', format: 'pem' },
          privateKeyEncoding: {
            type: 'pkcs8',
            format: 'pem',
            cipher: 'aes-256-cbc',
            passphrase: pass,
          },
        },
        done,
      );
    }
  });
}

/**
 * Encrypt a plain KeyConfig (kdf null) to the master public key. The result has exactly the
 * modulus size and is the payload of `rsa-encrypted.key.blob`.
 */
export function wrapKeyWithMasterKey(
  keyConfigWithoutPassword: KeyConfig,
  publicKeyPem: string | Uint8Array,
): Uint8Array {
  if (keyConfigWithoutPassword.kdf !== null) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'only a KeyConfig without passphrase (kdf null) is wrapped with the master key',
    );
  }
  const { key, size } = loadPublicKey(publicKeyPem);
  const message = Buffer.from(serializeKeyConfig(keyConfigWithoutPassword), 'utf8');
  if (message.byteLength > size - PKCS1_OVERHEAD) {
    throw rsaInvalid(
      `the master key is too small: a ${size * 8}-bit key carries at most ${size - PKCS1_OVERHEAD} bytes, ` +
        `the key config has ${message.byteLength}; use a key of at least ${MIN_MASTER_KEY_BITS} bits`,
    );
  }
  const out = publicEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, message);
  if (out.byteLength !== size) {
    throw new BurrowError(
      'INTERNAL',
      `RSA encryption returned ${out.byteLength} bytes, expected ${size}`,
    );
  }
  return new Uint8Array(out);
}

/**
 * Remove PKCS#1 v1.5 type-2 padding from a decrypted block of the modulus size, or return null.
 * The scan visits every byte and folds the checks with arithmetic, so its running time does not
 * depend on where (or whether) the padding is wrong.
 */
export function unpadPkcs1Type2(block: Uint8Array): Uint8Array | null {
  if (block.byteLength < PKCS1_OVERHEAD) return null;
  let bad = (block[0] ?? 1) | ((block[1] ?? 0) ^ 0x02);
  let separator = 0;
  let found = 0;
  for (let i = 2; i < block.byteLength; i++) {
    const byte = block[i] ?? 0;
    const isZero = ((byte - 1) >>> 31) & 1; // 1 exactly when byte === 0
    const first = isZero & (found ^ 1);
    separator |= -first & i;
    found |= isZero;
  }
  bad |= found ^ 1;
  // The padding string spans bytes 2..separator-1 and must have at least 8 bytes.
  bad |= ((separator - 10) >>> 31) & 1;
  return bad === 0 ? block.slice(separator + 1) : null;
}

/** Recover the KeyConfig from an `rsa-encrypted.key.blob` payload with the master private key. */
export function unwrapKeyWithMasterKey(
  bytes: Uint8Array,
  privateKeyPem: string | Uint8Array,
  passphrase?: Passphrase,
): KeyConfig {
  const { key, size } = loadPrivateKey(privateKeyPem, passphrase);
  const failed = (message: string, cause?: unknown): BurrowError =>
    new BurrowError(
      'RSA_DECRYPT_FAILED',
      `cannot decrypt the wrapped key with this master key: ${message}`,
      { cause },
    );
  if (bytes.byteLength !== size) {
    throw failed(`the payload has ${bytes.byteLength} bytes, a ${size * 8}-bit key needs ${size}`);
  }
  let block: Uint8Array;
  try {
    block = new Uint8Array(
      privateDecrypt({ key, padding: constants.RSA_NO_PADDING }, asBuffer(bytes)),
    );
  } catch (cause) {
    throw failed('RSA decryption failed', cause);
  }
  if (block.byteLength < size) {
    const padded = new Uint8Array(size);
    padded.set(block, size - block.byteLength);
    block = padded;
  }
  const message = unpadPkcs1Type2(block);
  if (message === null) throw failed('wrong key or damaged data');
  try {
    return parseKeyConfig(message);
  } catch (cause) {
    if (!isBurrowError(cause)) throw cause;
    throw failed('the decrypted data is not a key config', cause);
  }
}
