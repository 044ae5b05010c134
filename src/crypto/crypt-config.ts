/**
 * CryptConfig: everything derived from one 32-byte encryption key (pbs-formats §3.4, §3.5, §5.4,
 * §5.5). The id key (PBKDF2 of the encryption key) keys chunk digests, the manifest HMAC and the
 * fingerprint, so data under different keys never shares digests.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { BurrowError } from '../lib/errors.js';
import { asBuffer, fromHex, toHex } from '../lib/bytes.js';

export const KEY_SIZE = 32;
export const GCM_IV_SIZE = 16;
export const GCM_TAG_SIZE = 16;

/** SHA-256("Proxmox Backup Encryption Key Fingerprint"): the data whose keyed digest is the fingerprint. */
export const FINGERPRINT_INPUT: Uint8Array = new Uint8Array(
  createHash('sha256').update('Proxmox Backup Encryption Key Fingerprint', 'ascii').digest(),
);

export interface EncryptedPayload {
  iv: Uint8Array;
  tag: Uint8Array;
  ciphertext: Uint8Array;
}

export class CryptConfig {
  readonly #encKey: Buffer;
  /** PBKDF2-HMAC-SHA256(enc_key, "_id_key", 10 iterations, 32 bytes). */
  readonly idKey: Uint8Array;
  readonly fingerprint: Uint8Array;

  constructor(encKey: Uint8Array) {
    if (encKey.byteLength !== KEY_SIZE) {
      throw new BurrowError('INVALID_ARGUMENT', `an encryption key has ${KEY_SIZE} bytes, got ${encKey.byteLength}`);
    }
    this.#encKey = Buffer.from(encKey);
    this.idKey = new Uint8Array(pbkdf2Sync(this.#encKey, '_id_key', 10, KEY_SIZE, 'sha256'));
    this.fingerprint = this.computeDigest(FINGERPRINT_INPUT);
  }

  /** The raw key, for writing key files. */
  get encKey(): Uint8Array {
    return new Uint8Array(this.#encKey);
  }

  /** Chunk digest of an encrypted chunk: SHA-256(data || id_key). */
  computeDigest(data: Uint8Array): Uint8Array {
    return new Uint8Array(createHash('sha256').update(data).update(this.idKey).digest());
  }

  /** HMAC-SHA256 keyed with the id key (the manifest signature). */
  computeAuthTag(data: Uint8Array): Uint8Array {
    return new Uint8Array(createHmac('sha256', this.idKey).update(data).digest());
  }

  /** AES-256-GCM with a 16-byte IV and empty AAD. `iv` is injectable for known-answer tests only. */
  encrypt(plaintext: Uint8Array, iv: Uint8Array = randomBytes(GCM_IV_SIZE)): EncryptedPayload {
    const cipher = createCipheriv('aes-256-gcm', this.#encKey, iv, { authTagLength: GCM_TAG_SIZE });
    const first = cipher.update(asBuffer(plaintext));
    const last = cipher.final();
    const ciphertext = last.byteLength === 0 ? new Uint8Array(first) : new Uint8Array(Buffer.concat([first, last]));
    return { iv: new Uint8Array(iv), tag: new Uint8Array(cipher.getAuthTag()), ciphertext };
  }

  /** Decrypt and authenticate; a wrong key or any changed byte is BLOB_DECRYPT_FAILED. */
  decrypt(payload: EncryptedPayload): Uint8Array {
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#encKey, payload.iv, { authTagLength: GCM_TAG_SIZE });
      decipher.setAuthTag(asBuffer(payload.tag));
      const first = decipher.update(asBuffer(payload.ciphertext));
      const last = decipher.final();
      return last.byteLength === 0 ? new Uint8Array(first) : new Uint8Array(Buffer.concat([first, last]));
    } catch (cause) {
      throw new BurrowError('BLOB_DECRYPT_FAILED', 'AES-GCM authentication failed: wrong key or damaged data', { cause });
    }
  }
}

/** `aa:bb:...` (32 bytes) as PBS prints fingerprints. */
export function formatFingerprint(fingerprint: Uint8Array): string {
  return toHex(fingerprint).replace(/(..)(?!$)/g, '$1:');
}

/** The short key ID shown in listings: the first 8 bytes in the same style. */
export function formatShortFingerprint(fingerprint: Uint8Array): string {
  return formatFingerprint(fingerprint.subarray(0, 8));
}

export function parseFingerprint(text: string): Uint8Array {
  const hex = text.replace(/:/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new BurrowError('INVALID_FINGERPRINT', `not a key fingerprint (32 colon-separated hex bytes): ${JSON.stringify(text)}`);
  }
  return fromHex(hex.toLowerCase());
}
