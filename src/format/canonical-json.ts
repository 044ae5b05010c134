/**
 * The two JSON writers PBS compatibility needs (pbs-formats §5.3, §5.4):
 *
 * - `canonicalJson`: the exact bytes the manifest signature is computed over. Keys sorted by
 *   UTF-8 byte order, no whitespace, serde_json escaping, `null` refused.
 * - `prettyJsonSorted`: the way PBS writes a manifest (serde_json's pretty printer over a
 *   BTreeMap-backed value, so keys come out sorted at every level, 2-space indentation).
 *
 * JSON.stringify escapes strings exactly as serde_json does (`"`, `\`, `\b \f \n \r \t`, other
 * controls below 0x20 as lowercase `\u00xx`; `/`, DEL and non-ASCII left alone), so strings go
 * through it. What differs is key order and number handling, which is why these are hand-written.
 */
import { BurrowError } from '../lib/errors.js';

/**
 * Compare two strings by Unicode code point, which is the same as comparing their UTF-8 bytes
 * (Rust's `str` order). JS `<` compares UTF-16 code units, which puts U+E000..U+FFFF after
 * astral characters (surrogates 0xD800..0xDFFF) and so disagrees with Rust for those.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n) {
    const ca = a.codePointAt(i) ?? 0;
    const cb = b.codePointAt(i) ?? 0;
    if (ca !== cb) return ca < cb ? -1 : 1;
    // Equal code points have equal UTF-16 lengths, so both strings advance in step.
    i += ca > 0xffff ? 2 : 1;
  }
  if (a.length === b.length) return 0;
  return a.length < b.length ? -1 : 1;
}

const LONE_SURROGATE = /\p{Cs}/u;

function writeString(value: string, path: string): string {
  // A Rust String cannot hold a lone surrogate, and UTF-8 encoding would silently replace it
  // with U+FFFD, so the bytes would not be the ones the value describes.
  if (LONE_SURROGATE.test(value)) {
    throw new BurrowError(
      'CANONICAL_JSON_INVALID',
      `${path}: string contains a lone UTF-16 surrogate`,
      {
        details: { path },
      },
    );
  }
  return JSON.stringify(value);
}

function sortedKeys(obj: object): string[] {
  return Object.keys(obj).sort(compareUtf8);
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return typeof value;
}

function noJsonForm(value: unknown, path: string): BurrowError {
  return new BurrowError(
    'CANONICAL_JSON_INVALID',
    `${path}: a ${describe(value)} has no JSON form`,
    {
      details: { path },
    },
  );
}

/** Integers PBS can hold (u64 or i64), in plain decimal. */
function writeInteger(value: number | bigint, path: string): string {
  if (typeof value === 'bigint') {
    if (value < -(2n ** 63n) || value >= 2n ** 64n) {
      throw new BurrowError(
        'CANONICAL_JSON_INVALID',
        `${path}: integer ${value} does not fit in 64 bits`,
        {
          details: { path },
        },
      );
    }
    return value.toString();
  }
  // Only safe integers: beyond 2^53 a JS number no longer says which integer it is.
  if (!Number.isSafeInteger(value)) {
    throw new BurrowError('CANONICAL_JSON_INVALID', `${path}: ${value} is not a safe integer`, {
      details: { path },
    });
  }
  return Object.is(value, -0) ? '0' : String(value);
}

function canonical(value: unknown, path: string, out: string[]): void {
  switch (typeof value) {
    case 'string':
      out.push(writeString(value, path));
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'number':
    case 'bigint':
      // PBS manifests carry only integers (sizes, times); serde_json would print floats in its
      // own shortest form, which we have no reason to reproduce, so floats are refused.
      out.push(writeInteger(value, path));
      return;
    case 'object': {
      if (value === null) {
        throw new BurrowError(
          'CANONICAL_JSON_INVALID',
          `${path}: null is not allowed in canonical JSON`,
          {
            details: { path },
          },
        );
      }
      if (Array.isArray(value)) {
        out.push('[');
        (value as unknown[]).forEach((item, index) => {
          if (index > 0) out.push(',');
          canonical(item, `${path}[${index}]`, out);
        });
        out.push(']');
        return;
      }
      if (!isPlainObject(value)) break;
      out.push('{');
      let first = true;
      for (const key of sortedKeys(value)) {
        if (!first) out.push(',');
        first = false;
        const childPath = `${path}.${key}`;
        out.push(writeString(key, childPath), ':');
        canonical(value[key], childPath, out);
      }
      out.push('}');
      return;
    }
    case 'undefined':
    case 'function':
    case 'symbol':
      break;
  }
  throw noJsonForm(value, path);
}

/**
 * Canonical JSON text of `value` (pbs-formats §5.4). Throws CANONICAL_JSON_INVALID for null,
 * non-integer or unsafe numbers, lone surrogates and anything that is not JSON data.
 */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  canonical(value, '$', out);
  return out.join('');
}

/** `canonicalJson` as UTF-8 bytes, the input of the manifest HMAC. */
export function canonicalJsonBytes(value: unknown): Uint8Array {
  return new Uint8Array(Buffer.from(canonicalJson(value), 'utf8'));
}

function prettyNumber(value: number | bigint, path: string): string {
  if (typeof value === 'bigint') return writeInteger(value, path);
  if (!Number.isFinite(value)) {
    throw new BurrowError('CANONICAL_JSON_INVALID', `${path}: ${value} has no JSON form`, {
      details: { path },
    });
  }
  // Free-form `unprotected` content may hold floats; serde_json's shortest form equals JS's
  // except for exponents (`1e21` vs `1e+21`), which readers parse the same. Integers up to
  // 1e21 come out in plain decimal, as serde_json writes u64/i64.
  return JSON.stringify(value);
}

function pretty(value: unknown, indent: string, path: string, out: string[]): void {
  switch (typeof value) {
    case 'string':
      out.push(writeString(value, path));
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'number':
    case 'bigint':
      out.push(prettyNumber(value, path));
      return;
    case 'object': {
      if (value === null) {
        out.push('null');
        return;
      }
      const inner = indent + '  ';
      if (Array.isArray(value)) {
        const items = value as unknown[];
        // serde_json's pretty printer writes empty containers without a line break.
        if (items.length === 0) {
          out.push('[]');
          return;
        }
        out.push('[');
        items.forEach((item, index) => {
          out.push(index > 0 ? ',\n' : '\n', inner);
          pretty(item, inner, `${path}[${index}]`, out);
        });
        out.push('\n', indent, ']');
        return;
      }
      if (!isPlainObject(value)) break;
      const keys = sortedKeys(value);
      if (keys.length === 0) {
        out.push('{}');
        return;
      }
      out.push('{');
      keys.forEach((key, index) => {
        const childPath = `${path}.${key}`;
        out.push(index > 0 ? ',\n' : '\n', inner, writeString(key, childPath), ': ');
        pretty(value[key], inner, childPath, out);
      });
      out.push('\n', indent, '}');
      return;
    }
    case 'undefined':
    case 'function':
    case 'symbol':
      break;
  }
  throw noJsonForm(value, path);
}

/**
 * serde_json's `to_string_pretty` output for a value whose maps are sorted (PBS's manifest
 * writer): 2-space indentation, `"key": value`, `{}` and `[]` for empty containers, no trailing
 * newline. Unlike canonical JSON, `null` and floats are allowed (unprotected data may hold them).
 */
export function prettyJsonSorted(value: unknown): string {
  const out: string[] = [];
  pretty(value, '', '$', out);
  return out.join('');
}
