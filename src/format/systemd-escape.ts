/**
 * systemd unit-name escaping as PBS uses it (pbs-formats §6.7, §11.1): for the worker ID inside
 * a UPID (non-path mode) and for the names of the [4.x] lock files under
 * `/run/proxmox-backup/locks/<store>/` (path mode). It works on the UTF-8 bytes of the text.
 */
import { createHash } from 'node:crypto';
import { BurrowError } from '../lib/errors.js';
import type { BackupNamespace } from '../types/backup.js';

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

const isPlainByte = (c: number): boolean =>
  c === 0x5f /* _ */ ||
  c === 0x2e /* . */ ||
  (c >= 0x30 && c <= 0x39) ||
  (c >= 0x41 && c <= 0x5a) ||
  (c >= 0x61 && c <= 0x7a);

/**
 * Escape `text` for a unit name: '/' becomes '-'; every byte outside [A-Za-z0-9_.], and a '.'
 * in the first position, becomes `\xNN` (lowercase hex). In path mode, leading slashes are
 * dropped first and an empty remainder becomes "-" (the root). Text with unpaired surrogates
 * has no UTF-8 form and is refused.
 */
export function escapeUnit(text: string, isPath: boolean): string {
  if (/\p{Cs}/u.test(text)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'cannot escape text with an unpaired UTF-16 surrogate',
    );
  }
  let bytes = encoder.encode(text);
  if (isPath) {
    let start = 0;
    while (start < bytes.length && bytes[start] === 0x2f) start++;
    bytes = bytes.subarray(start);
    if (bytes.length === 0) return '-';
  }
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i] ?? 0;
    if (c === 0x2f) out += '-';
    else if ((i === 0 && c === 0x2e) || !isPlainByte(c))
      out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += String.fromCharCode(c);
  }
  return out;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** The bytes an escaped unit name stands for: `\xNN` (either case) → byte, '-' → '/'. */
export function unescapeUnitBytes(text: string): Uint8Array {
  const input = encoder.encode(text);
  const out = new Uint8Array(input.length);
  let n = 0;
  for (let i = 0; i < input.length;) {
    const c = input[i] ?? 0;
    if (c === 0x5c /* \ */) {
      if (i + 4 > input.length) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `truncated escape sequence at byte ${i} of ${JSON.stringify(text.slice(0, 200))}`,
        );
      }
      if (input[i + 1] !== 0x78 /* x */) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `unknown escape sequence at byte ${i} of ${JSON.stringify(text.slice(0, 200))} (only \\xNN exists)`,
        );
      }
      const high = hexValue(input[i + 2] ?? 0);
      const low = hexValue(input[i + 3] ?? 0);
      if (high < 0 || low < 0) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `invalid hex digit in escape sequence at byte ${i} of ${JSON.stringify(text.slice(0, 200))}`,
        );
      }
      out[n++] = (high << 4) | low;
      i += 4;
    } else {
      out[n++] = c === 0x2d /* - */ ? 0x2f : c;
      i += 1;
    }
  }
  return out.slice(0, n);
}

/** Unescape a unit name back to text; the bytes must be valid UTF-8. */
export function unescapeUnit(text: string): string {
  const bytes = unescapeUnitBytes(text);
  try {
    return strictDecoder.decode(bytes);
  } catch (cause) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `unescaped unit name ${JSON.stringify(text.slice(0, 200))} is not valid UTF-8`,
      { cause },
    );
  }
}

/** Escaped names from this length on are shortened and moved to `hashed/` (a 255-byte NAME_MAX). */
export const LOCK_NAME_HASH_THRESHOLD = 255;
const LOCK_NAME_KEEP = 80;

/**
 * The [4.x] lock file name for a path relative to its namespace (`vm/100`,
 * `vm/100/2022-05-02T08:11:33Z`, `vm/100/<time>/.index.json.lck`): the path-mode escaped path,
 * or, when that has 255 characters or more, `hashed/<first 80>...<last 80>-<sha256 hex of the
 * unescaped path>`.
 */
export function lockFileName(relativePath: string): string {
  const escaped = escapeUnit(relativePath, true);
  if (escaped.length < LOCK_NAME_HASH_THRESHOLD) return escaped;
  const digest = createHash('sha256').update(encoder.encode(relativePath)).digest('hex');
  return `hashed/${escaped.slice(0, LOCK_NAME_KEEP)}...${escaped.slice(-LOCK_NAME_KEEP)}-${digest}`;
}

/**
 * The lock file's path below `/run/proxmox-backup/locks/<store>/`: the namespace components
 * joined with ':' as one directory (none for the root), then lockFileName.
 */
export function lockFileRelativePath(ns: BackupNamespace, relativePath: string): string {
  const name = lockFileName(relativePath);
  return ns.components.length === 0 ? name : `${ns.components.join(':')}/${name}`;
}
