/**
 * The variable-length integers of the catalog (pxar-format §10a): `varint` is little-endian
 * base-128 with the high bit meaning "more follows"; `svarint` writes non-negative values the same
 * way and negative ones as the digits of |v|, all with the high bit set, then a 0x00 terminator.
 *
 * Values are JS numbers, so only the safe-integer range is supported. The format allows u64/i64,
 * but a catalog value beyond 2^53 (a file size or mtime) cannot come from a real file, and rounding
 * it silently would be a wrong result, so the decoders reject it as CATALOG_INVALID.
 */
import { BurrowError } from '../lib/errors.js';

/** Reference decoders stop after this many bytes without an end marker (70 bits). */
export const VARINT_MAX_BYTES = 10;
/** 70 bits plus the sign terminator. */
export const SVARINT_MAX_BYTES = 11;

export interface DecodedInt {
  readonly value: number;
  /** Bytes consumed. */
  readonly length: number;
}

/** Where the bytes being decoded came from, so errors name the file and the absolute offset. */
export interface VarintContext {
  /** Absolute offset of `bytes[0]` in the file. */
  readonly base?: number;
  readonly file?: string;
}

function checkEncodable(value: number, signed: boolean): void {
  if (!Number.isSafeInteger(value) || (!signed && value < 0)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `cannot encode ${String(value)} as a catalog ${signed ? 'svarint' : 'varint'}: ` +
        `it must be a ${signed ? '' : 'non-negative '}safe integer`,
      { details: { value: String(value) } },
    );
  }
}

/** Encoded size of a non-negative safe integer. */
export function varintLength(value: number): number {
  checkEncodable(value, false);
  let n = 1;
  // Division instead of shifts: bitwise operators truncate to 32 bits.
  for (let d = value; d >= 128; d = Math.floor(d / 128)) n++;
  return n;
}

/** Encoded size of a safe integer as svarint. */
export function svarintLength(value: number): number {
  checkEncodable(value, true);
  // The negative form carries one terminator byte more than its magnitude's digits.
  return value < 0 ? varintLength(-value) + 1 : varintLength(value);
}

/** Write `value` at `offset`; returns the offset after it. The caller provides the room. */
export function writeVarint(target: Uint8Array, offset: number, value: number): number {
  checkEncodable(value, false);
  let d = value;
  let pos = offset;
  while (d >= 128) {
    target[pos++] = 0x80 | (d % 128);
    d = Math.floor(d / 128);
  }
  target[pos++] = d;
  return pos;
}

/** Write `value` as svarint at `offset`; returns the offset after it. */
export function writeSvarint(target: Uint8Array, offset: number, value: number): number {
  checkEncodable(value, true);
  if (value >= 0) return writeVarint(target, offset, value);
  let d = -value;
  let pos = offset;
  while (d >= 128) {
    target[pos++] = 0x80 | (d % 128);
    d = Math.floor(d / 128);
  }
  // The last digit keeps its high bit too; the 0x00 that follows is what says "negative".
  target[pos++] = 0x80 | d;
  target[pos++] = 0;
  return pos;
}

export function encodeVarint(value: number): Uint8Array {
  const out = new Uint8Array(varintLength(value));
  writeVarint(out, 0, value);
  return out;
}

export function encodeSvarint(value: number): Uint8Array {
  const out = new Uint8Array(svarintLength(value));
  writeSvarint(out, 0, value);
  return out;
}

function invalid(
  what: string,
  reason: string,
  start: number,
  context: VarintContext,
  extra: Record<string, unknown> = {},
): BurrowError {
  const offset = (context.base ?? 0) + start;
  const prefix = context.file === undefined ? '' : `${context.file}: `;
  return new BurrowError('CATALOG_INVALID', `${prefix}${what} at offset ${offset}: ${reason}`, {
    details: {
      ...(context.file === undefined ? {} : { file: context.file }),
      offset,
      reason,
      ...extra,
    },
  });
}

function tooLarge(what: string, start: number, context: VarintContext): BurrowError {
  return invalid(what, `value exceeds ${Number.MAX_SAFE_INTEGER} (2^53-1)`, start, context, {
    max: Number.MAX_SAFE_INTEGER,
  });
}

/**
 * Decode a varint starting at `bytes[offset]`. Non-minimal encodings (`80 00` for 0) are accepted,
 * as the reference decoder accepts them; more than 10 bytes without an end marker, running off
 * the end of `bytes`, or a value above 2^53-1 are CATALOG_INVALID.
 */
export function decodeVarint(
  bytes: Uint8Array,
  offset = 0,
  context: VarintContext = {},
): DecodedInt {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < VARINT_MAX_BYTES; i++) {
    const b = bytes[offset + i];
    if (b === undefined)
      throw invalid('varint', 'truncated (data ends inside it)', offset, context);
    // Exact while the true value is below 2^53; once it is not, the float sum is >= 2^53 as well,
    // so the range check below still fires (addition rounds monotonically).
    value += (b & 0x7f) * scale;
    if (b < 0x80) {
      if (value > Number.MAX_SAFE_INTEGER) throw tooLarge('varint', offset, context);
      return { value, length: i + 1 };
    }
    scale *= 128;
  }
  throw invalid(
    'varint',
    `overlong (no end marker within ${VARINT_MAX_BYTES} bytes)`,
    offset,
    context,
  );
}

/**
 * Decode an svarint starting at `bytes[offset]`. A 0x00 byte ends the number: negative when digits
 * were collected, else 0. Any other byte below 0x80 ends a positive number (so varint-encoded
 * values decode too). At most 11 bytes.
 */
export function decodeSvarint(
  bytes: Uint8Array,
  offset = 0,
  context: VarintContext = {},
): DecodedInt {
  let magnitude = 0;
  let scale = 1;
  for (let i = 0; i < SVARINT_MAX_BYTES; i++) {
    const b = bytes[offset + i];
    if (b === undefined)
      throw invalid('svarint', 'truncated (data ends inside it)', offset, context);
    magnitude += (b & 0x7f) * scale;
    if (b < 0x80) {
      if (magnitude > Number.MAX_SAFE_INTEGER) throw tooLarge('svarint', offset, context);
      // `80 00` means "no digits" and is 0, never -0.
      const value = b === 0 && magnitude !== 0 ? -magnitude : magnitude;
      return { value, length: i + 1 };
    }
    scale *= 128;
  }
  throw invalid(
    'svarint',
    `overlong (no end marker within ${SVARINT_MAX_BYTES} bytes)`,
    offset,
    context,
  );
}
