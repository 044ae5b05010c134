/** Small byte helpers shared by the codecs; Node's Buffer is used only as an implementation detail. */
import { BurrowError } from './errors.js';

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;

/** Decode hex (either case); `what` names the value in the error. */
export function fromHex(hex: string, what = 'hex string'): Uint8Array {
  if (!HEX_RE.test(hex)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${what} is not valid hex: ${JSON.stringify(hex.slice(0, 80))}`,
    );
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.byteLength;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.byteLength;
  }
  return out;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A Buffer view (no copy) of a Uint8Array, for Node APIs that want Buffers. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Standard base64 with padding, as PBS key files use. */
export function toBase64(bytes: Uint8Array): string {
  return asBuffer(bytes).toString('base64');
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function fromBase64(text: string, what = 'base64 value'): Uint8Array {
  if (!BASE64_RE.test(text)) {
    throw new BurrowError('INVALID_ARGUMENT', `${what} is not valid base64`);
  }
  return new Uint8Array(Buffer.from(text, 'base64'));
}

/** `size` bytes of fresh memory without zero-filling it first: for callers that overwrite every byte. */
export function allocUninitialized(size: number): Uint8Array {
  return new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size);
}
