/**
 * PBS property strings (pbs-formats §10.2): `key=value,key2="quoted, value"`, the format of
 * config values such as `tuning`, `notify`, `maintenance-mode` and `backend`. Parsing and
 * writing are driven by a small schema. The scalar value kinds here are shared with the
 * section-config codec.
 *
 * Syntax, as PBS reads it:
 * - Items are separated by ','. A trailing ',' is harmless. No whitespace is trimmed.
 * - An item's key is the text before the first '=' (if a '=' comes before the next ','); an item
 *   without '=' is a bare value for the schema's default key.
 * - A value starting with '"' is quoted: it ends at the next unescaped '"', which must be followed
 *   by ',' or the end. Inside quotes the only escapes are `\"`, `\\` and `\n`. An unquoted value
 *   runs to the next ',' and may contain '=' and '"'.
 * - An empty value means "not set" (PBS deserialises it as None); the key still counts as seen.
 * - Unknown keys and repeated keys are errors.
 */
import { BurrowError } from '../lib/errors.js';

export type ValueKind =
  | {
      readonly kind: 'string';
      readonly minLength?: number;
      readonly maxLength?: number;
      readonly pattern?: RegExp;
      /** Extra validation; returns why the value is bad, or undefined. */
      readonly check?: (value: string) => string | undefined;
    }
  | { readonly kind: 'boolean' }
  | { readonly kind: 'integer'; readonly min?: number; readonly max?: number }
  | { readonly kind: 'enum'; readonly values: readonly string[] };

export type ScalarValue = string | number | boolean;

export type FieldSpec = ValueKind & { readonly optional?: boolean };

export interface PropertyStringSchema {
  /** Names the value in error messages, e.g. "tuning". */
  readonly name: string;
  /** Key → kind. The declaration order is the order keys are written in (PBS's field order). */
  readonly properties: Readonly<Record<string, FieldSpec>>;
  /** The key a bare value (one without `key=`) stands for. */
  readonly defaultKey?: string;
  /** Cross-field validation on the parsed values; returns why they are bad, or undefined. */
  readonly check?: (values: Readonly<Record<string, ScalarValue>>) => string | undefined;
}

export type PropertyValues = Record<string, ScalarValue>;

export type Checked<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const charLength = (text: string): number => {
  let n = 0;
  for (const _ of text) n++;
  return n;
};

const TRUE_WORDS = new Set(['1', 'on', 'yes', 'true']);
const FALSE_WORDS = new Set(['0', 'off', 'no', 'false']);

function checkString(
  kind: Extract<ValueKind, { kind: 'string' }>,
  text: string,
): string | undefined {
  const length = charLength(text);
  if (kind.minLength !== undefined && length < kind.minLength) {
    return `must have at least ${kind.minLength} characters`;
  }
  if (kind.maxLength !== undefined && length > kind.maxLength) {
    return `must have at most ${kind.maxLength} characters`;
  }
  if (kind.pattern !== undefined && !kind.pattern.test(text)) {
    return `does not match ${String(kind.pattern)}`;
  }
  return kind.check?.(text);
}

function checkInteger(
  kind: Extract<ValueKind, { kind: 'integer' }>,
  value: number,
): string | undefined {
  if (!Number.isSafeInteger(value)) return 'is not an integer';
  if (kind.min !== undefined && value < kind.min) return `must be at least ${kind.min}`;
  if (kind.max !== undefined && value > kind.max) return `must be at most ${kind.max}`;
  return undefined;
}

/**
 * Read one scalar from its text. Booleans accept 1/on/yes/true and 0/off/no/false in any case;
 * integers are an optional sign and decimal digits.
 */
export function parseScalar(kind: ValueKind, text: string): Checked<ScalarValue> {
  switch (kind.kind) {
    case 'string': {
      const reason = checkString(kind, text);
      return reason === undefined ? { ok: true, value: text } : { ok: false, reason };
    }
    case 'boolean': {
      const word = text.toLowerCase();
      if (TRUE_WORDS.has(word)) return { ok: true, value: true };
      if (FALSE_WORDS.has(word)) return { ok: true, value: false };
      return { ok: false, reason: 'is not a boolean (true/false, yes/no, on/off, 1/0)' };
    }
    case 'integer': {
      if (!/^[+-]?[0-9]+$/.test(text)) return { ok: false, reason: 'is not an integer' };
      const value = Number(text);
      const reason = checkInteger(kind, value);
      return reason === undefined ? { ok: true, value } : { ok: false, reason };
    }
    case 'enum':
      return kind.values.includes(text)
        ? { ok: true, value: text }
        : { ok: false, reason: `is not one of ${kind.values.join(', ')}` };
  }
}

/** The text of one scalar, after checking it has the kind's type and limits. */
export function formatScalar(kind: ValueKind, value: unknown): Checked<string> {
  switch (kind.kind) {
    case 'string': {
      if (typeof value !== 'string') return { ok: false, reason: 'must be a string' };
      const reason = checkString(kind, value);
      return reason === undefined ? { ok: true, value } : { ok: false, reason };
    }
    case 'boolean':
      return typeof value === 'boolean'
        ? { ok: true, value: value ? 'true' : 'false' }
        : { ok: false, reason: 'must be a boolean' };
    case 'integer': {
      if (typeof value !== 'number') return { ok: false, reason: 'must be an integer' };
      const reason = checkInteger(kind, value);
      return reason === undefined ? { ok: true, value: String(value) } : { ok: false, reason };
    }
    case 'enum':
      return typeof value === 'string' && kind.values.includes(value)
        ? { ok: true, value }
        : { ok: false, reason: `must be one of ${kind.values.join(', ')}` };
  }
}

function invalid(
  schema: PropertyStringSchema,
  text: string | undefined,
  reason: string,
): BurrowError {
  const where = text === undefined ? '' : ` ${JSON.stringify(text.slice(0, 200))}`;
  return new BurrowError('PROPERTY_STRING_INVALID', `${schema.name}${where}: ${reason}`, {
    details: { schema: schema.name, ...(text === undefined ? {} : { value: text }) },
  });
}

function fieldOf(schema: PropertyStringSchema, key: string): FieldSpec | undefined {
  return Object.hasOwn(schema.properties, key) ? schema.properties[key] : undefined;
}

interface RawItem {
  readonly key: string | undefined;
  readonly value: string;
}

/** Split a property string into items, following PBS's reader exactly (see the module comment). */
function splitItems(schema: PropertyStringSchema, text: string): RawItem[] {
  const items: RawItem[] = [];
  let pos = 0;
  while (pos < text.length) {
    let key: string | undefined;
    if (text[pos] !== '"') {
      const comma = text.indexOf(',', pos);
      const equals = text.indexOf('=', pos);
      if (equals >= 0 && (comma < 0 || equals < comma)) {
        key = text.slice(pos, equals);
        pos = equals + 1;
      }
      if (text[pos] !== '"') {
        const end = text.indexOf(',', pos);
        items.push({ key, value: text.slice(pos, end < 0 ? text.length : end) });
        pos = end < 0 ? text.length : end + 1;
        continue;
      }
    }
    // A quoted value starts at `pos`.
    let value = '';
    let i = pos + 1;
    let closed = false;
    while (i < text.length) {
      const c = text[i];
      if (c === '"') {
        closed = true;
        i++;
        break;
      }
      if (c === '\\') {
        const next = text[i + 1];
        if (next === '"' || next === '\\') value += next;
        else if (next === 'n') value += '\n';
        else if (next === undefined) break;
        else
          throw invalid(
            schema,
            text,
            `unsupported escape sequence \\${next} at offset ${i} (only \\", \\\\ and \\n)`,
          );
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    if (!closed) throw invalid(schema, text, `unterminated quoted value starting at offset ${pos}`);
    if (i < text.length && text[i] !== ',') {
      throw invalid(schema, text, `unexpected text after the closing quote at offset ${i}`);
    }
    items.push({ key, value });
    pos = i + 1;
  }
  return items;
}

/** Parse a property string against `schema` (PROPERTY_STRING_INVALID on any problem). */
export function parsePropertyString(schema: PropertyStringSchema, text: string): PropertyValues {
  const values: PropertyValues = {};
  const seen = new Set<string>();
  for (const item of splitItems(schema, text)) {
    let key = item.key;
    if (key === undefined) {
      if (schema.defaultKey === undefined) {
        throw invalid(
          schema,
          text,
          `value ${JSON.stringify(item.value)} has no key and there is no default key`,
        );
      }
      key = schema.defaultKey;
    }
    const field = fieldOf(schema, key);
    if (field === undefined) {
      throw invalid(
        schema,
        text,
        `unknown key ${JSON.stringify(key)} (known: ${Object.keys(schema.properties).join(', ')})`,
      );
    }
    if (seen.has(key)) throw invalid(schema, text, `duplicate key ${JSON.stringify(key)}`);
    seen.add(key);
    if (item.value === '') continue;
    const parsed = parseScalar(field, item.value);
    if (!parsed.ok)
      throw invalid(schema, text, `${key}=${JSON.stringify(item.value)} ${parsed.reason}`);
    values[key] = parsed.value;
  }
  for (const [key, field] of Object.entries(schema.properties)) {
    if (field.optional !== true && !Object.hasOwn(values, key)) {
      throw invalid(schema, text, `missing required key ${JSON.stringify(key)}`);
    }
  }
  const problem = schema.check?.(values);
  if (problem !== undefined) throw invalid(schema, text, problem);
  return values;
}

/**
 * Whether a value must be written quoted. PBS quotes exactly the values containing '"', '\' or a
 * newline. We also quote values containing ',' (PBS would write those bare and then misread
 * them), bare default-key values containing '=' (they would read back as `key=value`), and values
 * with leading or trailing whitespace (a section-config line is trimmed, which would eat it).
 * Every value PBS writes and reads back intact therefore comes out byte-identical.
 */
function needsQuotes(value: string, bare: boolean): boolean {
  return (
    /["\\\n,]/.test(value) ||
    (bare && value.includes('=')) ||
    /^\p{White_Space}|\p{White_Space}$/u.test(value)
  );
}

function quote(value: string): string {
  return `"${value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`;
}

/**
 * Write values in the schema's declaration order (PBS writes struct fields in declaration
 * order), the default key as a bare value, quoting only where needed (see needsQuotes). Empty
 * strings cannot be written (they would read back as unset).
 */
export function formatPropertyString(
  schema: PropertyStringSchema,
  values: Readonly<Record<string, unknown>>,
): string {
  for (const key of Object.keys(values)) {
    if (fieldOf(schema, key) === undefined && values[key] !== undefined) {
      throw invalid(schema, undefined, `unknown key ${JSON.stringify(key)}`);
    }
  }
  const parts: string[] = [];
  const present: PropertyValues = {};
  for (const [key, field] of Object.entries(schema.properties)) {
    const value = Object.hasOwn(values, key) ? values[key] : undefined;
    if (value === undefined) {
      if (field.optional !== true)
        throw invalid(schema, undefined, `missing required key ${JSON.stringify(key)}`);
      continue;
    }
    const text = formatScalar(field, value);
    if (!text.ok) throw invalid(schema, undefined, `${key} ${text.reason}`);
    if (text.value === '')
      throw invalid(schema, undefined, `${key} is empty, which reads back as unset`);
    present[key] = value as ScalarValue;
    const bare = key === schema.defaultKey;
    const shown = needsQuotes(text.value, bare) ? quote(text.value) : text.value;
    parts.push(bare ? shown : `${key}=${shown}`);
  }
  const problem = schema.check?.(present);
  if (problem !== undefined) throw invalid(schema, undefined, problem);
  return parts.join(',');
}
