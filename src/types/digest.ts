/** A chunk digest: 32 bytes, printed as 64 lowercase hex characters everywhere on disk and wire. */
import { BurrowError } from '../lib/errors.js';

export type Digest = Uint8Array;
export const DIGEST_SIZE = 32;

const DIGEST_HEX_RE = /^[a-f0-9]{64}$/;

export function parseDigestHex(hex: string): Digest {
  if (!DIGEST_HEX_RE.test(hex)) {
    throw new BurrowError(
      'INVALID_DIGEST',
      `not a digest (64 lowercase hex characters): ${JSON.stringify(hex.slice(0, 80))}`,
    );
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

export function digestToHex(digest: Digest): string {
  return Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('hex');
}

export function isDigestHex(text: string): boolean {
  return DIGEST_HEX_RE.test(text);
}
