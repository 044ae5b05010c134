/**
 * CryptConfig: everything derived from one 32-byte encryption key (pbs-formats §3.4, §3.5, §5.4,
 * §5.5). The id key (PBKDF2 of the encryption key) keys chunk digests, the manifest HMAC and the
 * fingerprint, so data under different keys never shares digests.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  pbkdf2Sync,
  randomBytes,
} from 'node:crypto';
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
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `an encryption key has ${KEY_SIZE} bytes, got ${encKey.byteLength}`,
      );
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
    const ciphertext = new Uint8Array(plaintext.byteLength);
    const tag = this.encryptInto(iv, plaintext, ciphertext, 0);
    return { iv: new Uint8Array(iv), tag, ciphertext };
  }

  /** Decrypt and authenticate; a wrong key or any changed byte is BLOB_DECRYPT_FAILED. */
  decrypt(payload: EncryptedPayload): Uint8Array {
    const out = new Uint8Array(payload.ciphertext.byteLength);
    this.decryptInto(payload.iv, payload.tag, payload.ciphertext, out);
    return out;
  }

  /**
   * Encrypt `plaintext` into `out` at `offset` (GCM keeps the length) and return the tag. The
   * cipher runs in pieces written straight into `out`, so a blob is built without extra copies;
   * `onPiece` sees each ciphertext piece while it is in cache (the blob codec takes its CRC there).
   */
  encryptInto(
    iv: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
    offset: number,
    onPiece?: (ciphertextPiece: Uint8Array) => void,
  ): Uint8Array {
    checkIv(iv);
    const cipher = createCipheriv('aes-256-gcm', this.#encKey, iv, { authTagLength: GCM_TAG_SIZE });
    let pos = offset;
    const emit = (piece: Buffer): void => {
      // Empty pieces (GCM's final()) are skipped: node's zlib.crc32(empty, crc) returns 0 instead
      // of crc when crc >= 2^31, which would silently zero a running CRC.
      if (piece.byteLength === 0) return;
      out.set(piece, pos);
      onPiece?.(piece);
      pos += piece.byteLength;
    };
    for (let start = 0; start < plaintext.byteLength; start += CIPHER_PIECE) {
      emit(cipher.update(asBuffer(plaintext.subarray(start, start + CIPHER_PIECE))));
    }
    emit(cipher.final());
    return new Uint8Array(cipher.getAuthTag());
  }

  /**
   * Decrypt `ciphertext` into `out` (room for the same length) and authenticate it against `tag`.
   * `onPiece` sees each ciphertext piece before it is decrypted. Throws BLOB_DECRYPT_FAILED when
   * the tag does not match; `out` then holds unauthenticated bytes and must not be used.
   */
  decryptInto(
    iv: Uint8Array,
    tag: Uint8Array,
    ciphertext: Uint8Array,
    out: Uint8Array,
    onPiece?: (ciphertextPiece: Uint8Array) => void,
  ): void {
    checkIv(iv);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#encKey, iv, {
        authTagLength: GCM_TAG_SIZE,
      });
      decipher.setAuthTag(asBuffer(tag));
      let pos = 0;
      for (let start = 0; start < ciphertext.byteLength; start += CIPHER_PIECE) {
        const input = ciphertext.subarray(start, start + CIPHER_PIECE);
        onPiece?.(input);
        const piece = decipher.update(asBuffer(input));
        out.set(piece, pos);
        pos += piece.byteLength;
      }
      out.set(decipher.final(), pos);
    } catch (cause) {
      throw new BurrowError(
        'BLOB_DECRYPT_FAILED',
        'AES-GCM authentication failed: wrong key or damaged data',
        { cause },
      );
    }
  }
}

/** Cipher input is fed in pieces of this size so each piece's output is still in cache for the CRC. */
const CIPHER_PIECE = 256 * 1024;

function checkIv(iv: Uint8Array): void {
  if (iv.byteLength !== GCM_IV_SIZE) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `an AES-GCM IV here has ${GCM_IV_SIZE} bytes, got ${iv.byteLength}`,
    );
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
    throw new BurrowError(
      'INVALID_FINGERPRINT',
      `not a key fingerprint (32 colon-separated hex bytes): ${JSON.stringify(text)}`,
    );
  }
  return fromHex(hex.toLowerCase());
}
