/**
 * Request parameters as PBS's REST server reads and checks them (pbs-protocol §4.1, §5.2): the
 * query string and form bodies by `application/x-www-form-urlencoded` rules, JSON bodies, path
 * parameters, and the strict schema check whose messages are PBS's own (`parameter
 * verification failed - 'x': ...`). The backup and reader sessions reuse readParameters for their
 * HTTP/2 endpoints.
 *
 * Two sources, two rule sets, as in PBS: values from strings (query, form body, path) are parsed
 * (booleans from `1/0/yes/no/on/off/true/false`, integers from decimal text, arrays from
 * repeated keys); values from a JSON body must already have the schema's JSON type.
 */
import { BurrowError } from '../../lib/errors.js';
import type { ParamSchema, ParamSpec, ParamType } from './route.js';

// ---------------------------------------------------------------------------------------------
// form-urlencoded

/** The query key ExtJS adds to defeat caches; PBS ignores it. */
const CACHE_BUSTER_KEY = '_dc';

const utf8Lossy = new TextDecoder('utf-8', { fatal: false });

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  return -1;
}

/**
 * One form-urlencoded name or value: `+` is a space, `%XX` a byte; a `%` not followed by two hex
 * digits stays as it is, and bytes that are not UTF-8 become U+FFFD (the WHATWG rules PBS's
 * url crate follows).
 */
function decodeFormComponent(text: string): string {
  if (!text.includes('%') && !text.includes('+')) return text;
  const source = Buffer.from(text.replace(/\+/g, ' '), 'utf8');
  const out = Buffer.alloc(source.length);
  let n = 0;
  for (let i = 0; i < source.length; i++) {
    const byte = source[i] as number;
    if (byte === 0x25 && i + 2 < source.length) {
      const high = hexValue(source[i + 1] as number);
      const low = hexValue(source[i + 2] as number);
      if (high >= 0 && low >= 0) {
        out[n++] = high * 16 + low;
        i += 2;
        continue;
      }
    }
    out[n++] = byte;
  }
  return utf8Lossy.decode(out.subarray(0, n));
}

/** The (name, value) pairs of a form-urlencoded text, in order, `_dc` left out. */
function formPairs(text: string): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const piece of text.split('&')) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    const name = decodeFormComponent(eq < 0 ? piece : piece.slice(0, eq));
    const value = eq < 0 ? '' : decodeFormComponent(piece.slice(eq + 1));
    if (name === CACHE_BUSTER_KEY) continue;
    pairs.push([name, value]);
  }
  return pairs;
}

/** Group pairs by name: one occurrence gives a string, repeated ones an array in order. */
function groupPairs(pairs: Iterable<[string, string]>): Record<string, string | string[]> {
  const grouped = new Map<string, string | string[]>();
  for (const [name, value] of pairs) {
    const previous = grouped.get(name);
    if (previous === undefined) grouped.set(name, value);
    else if (Array.isArray(previous)) previous.push(value);
    else grouped.set(name, [previous, value]);
  }
  // fromEntries defines own properties, so a key like `__proto__` stays a plain key.
  return Object.fromEntries(grouped);
}

/**
 * Parse a query string (without the `?`) or form body. Repeated keys build an array, `+` is a
 * space, `_dc` is dropped.
 */
export function parseQueryString(query: string): Record<string, string | string[]> {
  return groupPairs(formPairs(query));
}

// ---------------------------------------------------------------------------------------------
// schema checks

/** One problem with one parameter, worded as PBS words it. */
type Problem = readonly [name: string, reason: string];

class ValueError extends Error {}

function fail(reason: string): never {
  throw new ValueError(reason);
}

/**
 * Run `check`; a ValueError it throws becomes a problem of parameter `name` instead, since PBS
 * reports every bad parameter of a request at once. Whether `check` succeeded.
 */
function noted(problems: Problem[], name: string, check: () => void): boolean {
  try {
    check();
    return true;
  } catch (error) {
    if (!(error instanceof ValueError)) throw error;
    problems.push([name, error.message]);
    return false;
  }
}

/**
 * PBS's combined message: one problem inline, several as a list (proxmox-schema's
 * ParameterError display).
 */
function verificationMessage(problems: readonly Problem[]): string {
  const [first] = problems;
  if (problems.length === 1 && first !== undefined) {
    return `parameter verification failed - '${first[0]}': ${first[1]}`;
  }
  return `parameter verification failed:\n${problems.map(([n, r]) => `- '${n}': ${r}`).join('\n')}`;
}

/**
 * The error for parameter problems: INVALID_ARGUMENT (400) with PBS's message, and
 * `details.errors` ({name: reason}, the first reason per name) for the ExtJS envelope.
 */
export function parameterError(problems: ReadonlyArray<readonly [string, string]>): BurrowError {
  const errors: Record<string, string> = {};
  for (const [name, reason] of problems) {
    if (!Object.hasOwn(errors, name)) put(errors, name, reason);
  }
  return new BurrowError('INVALID_ARGUMENT', verificationMessage(problems), {
    details: { errors },
  });
}

/** Whether an error is a parameter verification error (it carries `details.errors`). */
export function parameterErrorsOf(error: unknown): Record<string, string> | undefined {
  if (!(error instanceof BurrowError) || error.code !== 'INVALID_ARGUMENT') return undefined;
  const errors = error.details.errors;
  if (typeof errors !== 'object' || errors === null || Array.isArray(errors)) return undefined;
  const entries = Object.entries(errors as Record<string, unknown>);
  if (!entries.every(([, v]) => typeof v === 'string')) return undefined;
  return errors as Record<string, string>;
}

/** PBS's booleans (case-insensitive). */
export function parseBooleanParam(text: string): boolean {
  switch (text.toLowerCase()) {
    case '1':
    case 'on':
    case 'yes':
    case 'true':
      return true;
    case '0':
    case 'off':
    case 'no':
    case 'false':
      return false;
    default:
      return fail('Unable to parse boolean option.');
  }
}

const I64_MAX = (1n << 63n) - 1n;
const I64_MIN = -(1n << 63n);

/**
 * A decimal integer as Rust's `str::parse::<isize>` reads it (optional sign, digits only), with
 * its error texts. Values beyond JavaScript's exact integers count as too large/small.
 */
function parseIntegerText(text: string): number {
  if (text === '') fail('cannot parse integer from empty string');
  if (!/^[+-]?[0-9]+$/.test(text)) fail('invalid digit found in string');
  const value = BigInt(text);
  if (value > I64_MAX || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail('number too large to fit in target type');
  }
  if (value < I64_MIN || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    fail('number too small to fit in target type');
  }
  return Number(value);
}

function checkInteger(type: Extract<ParamType, { type: 'integer' }>, value: number): number {
  if (type.minimum !== undefined && value < type.minimum) {
    fail(`value must have a minimum value of ${type.minimum} (got ${value})`);
  }
  if (type.maximum !== undefined && value > type.maximum) {
    fail(`value must have a maximum value of ${type.maximum} (got ${value})`);
  }
  return value;
}

function checkString(type: Extract<ParamType, { type: 'string' }>, value: string): string {
  // PBS counts characters (code points), not bytes or UTF-16 units.
  const length = [...value].length;
  if (type.minLength !== undefined && length < type.minLength) {
    fail(`value must be at least ${type.minLength} characters long`);
  }
  if (type.maxLength !== undefined && length > type.maxLength) {
    fail(`value may only be ${type.maxLength} characters long`);
  }
  if (type.pattern !== undefined) {
    // A global or sticky pattern keeps state between test() calls.
    type.pattern.lastIndex = 0;
    if (!type.pattern.test(value)) fail('value does not match the regex pattern');
  }
  if (type.enum !== undefined && !type.enum.includes(value)) {
    fail(`value '${value}' is not defined in the enumeration.`);
  }
  return value;
}

function checkArrayLength(type: Extract<ParamType, { type: 'array' }>, length: number): void {
  if (type.maxItems !== undefined && length > type.maxItems) {
    fail(`array may only contain ${type.maxItems} elements`);
  }
}

/** A scalar from text (query, form body, path). */
function parseSimpleValue(type: ParamType, text: string): unknown {
  switch (type.type) {
    case 'boolean':
      return parseBooleanParam(text);
    case 'integer':
      return checkInteger(type, parseIntegerText(text));
    case 'string':
      return checkString(type, text);
    case 'array':
      return fail('unable to parse complex (sub) objects.');
  }
}

/** A value of a JSON body: it must already have the schema's type. */
function verifyJsonValue(
  type: ParamType,
  value: unknown,
  name: string,
  problems: Problem[],
): unknown {
  try {
    switch (type.type) {
      case 'boolean':
        if (typeof value !== 'boolean') fail('Expected boolean value.');
        return value;
      case 'integer':
        if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
          fail('Expected integer value.');
        }
        return checkInteger(type, value);
      case 'string':
        if (typeof value !== 'string') fail('Expected string value.');
        return checkString(type, value);
      case 'array': {
        if (!Array.isArray(value)) {
          fail(
            typeof value === 'object' && value !== null
              ? 'Expected array - got object.'
              : 'Expected array - got scalar value.',
          );
        }
        checkArrayLength(type, value.length);
        const before = problems.length;
        const items = value.map((item, i) =>
          verifyJsonValue(type.items, item, `${name}/[${i}]`, problems),
        );
        return problems.length === before ? items : undefined;
      }
    }
  } catch (error) {
    if (!(error instanceof ValueError)) throw error;
    problems.push([name, error.message]);
    return undefined;
  }
}

function specOf(schema: ParamSchema, name: string): ParamSpec | undefined {
  // Own keys only: `toString` or `constructor` must not find Object.prototype's members.
  return Object.hasOwn(schema, name) ? schema[name] : undefined;
}

const isOptional = (spec: ParamSpec): boolean =>
  spec.optional === true || spec.default !== undefined;

/** Set a key on a result object without ever touching its prototype. */
function put(target: Record<string, unknown>, name: string, value: unknown): void {
  Object.defineProperty(target, name, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function applyDefaults(schema: ParamSchema, result: Record<string, unknown>): void {
  for (const [name, spec] of Object.entries(schema)) {
    if (spec.default !== undefined && !Object.hasOwn(result, name)) put(result, name, spec.default);
  }
}

function verifyStrings(
  schema: ParamSchema,
  input: Record<string, unknown>,
): Record<string, unknown> {
  const problems: Problem[] = [];
  const result: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(input)) {
    if (raw === undefined) continue;
    const spec = specOf(schema, name);
    if (spec === undefined) {
      problems.push([name, 'schema does not allow additional properties.']);
      continue;
    }
    const texts = (Array.isArray(raw) ? raw : [raw]).map((v) =>
      typeof v === 'string' ? v : String(v),
    );
    if (spec.type === 'array') {
      const items: unknown[] = [];
      let ok = true;
      for (const text of texts) {
        // Every bad item is reported, not just the first.
        ok = noted(problems, name, () => items.push(parseSimpleValue(spec.items, text))) && ok;
      }
      if (ok && noted(problems, name, () => checkArrayLength(spec, items.length))) {
        put(result, name, items);
      }
      continue;
    }
    const [first, ...rest] = texts;
    if (first === undefined) continue;
    if (!noted(problems, name, () => put(result, name, parseSimpleValue(spec, first)))) continue;
    if (rest.length > 0) problems.push([name, 'duplicate parameter.']);
  }
  // As in PBS, missing parameters are only reported when everything given was fine.
  if (problems.length === 0) {
    for (const [name, spec] of Object.entries(schema)) {
      if (!isOptional(spec) && !Object.hasOwn(result, name)) {
        problems.push([name, 'parameter is missing and it is not optional.']);
      }
    }
  }
  if (problems.length > 0) throw parameterError(problems);
  applyDefaults(schema, result);
  return result;
}

function verifyJson(schema: ParamSchema, input: Record<string, unknown>): Record<string, unknown> {
  const problems: Problem[] = [];
  const result: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(input)) {
    const spec = specOf(schema, name);
    if (spec === undefined) {
      problems.push([name, 'schema does not allow additional properties']);
      continue;
    }
    const before = problems.length;
    const checked = verifyJsonValue(spec, value, name, problems);
    if (problems.length === before) put(result, name, checked);
  }
  for (const [name, spec] of Object.entries(schema)) {
    const given = Object.hasOwn(input, name) ? input[name] : undefined;
    if (!isOptional(spec) && (given === undefined || given === null)) {
      problems.push([name, 'property is missing and it is not optional']);
    }
  }
  if (problems.length > 0) throw parameterError(problems);
  applyDefaults(schema, result);
  return result;
}

/**
 * Check `input` against `schema` strictly, as PBS does: unknown names, missing required ones,
 * types, lengths, patterns, enums and ranges. `strings`: values are strings or arrays of strings
 * (repeated keys) and are parsed; `json`: values must have the schema's JSON type. Returns the
 * typed values with defaults filled in; throws INVALID_ARGUMENT with PBS's message and
 * `details.errors` ({name: reason}).
 */
export function verifyParameters(
  schema: ParamSchema,
  input: Record<string, unknown>,
  source: 'strings' | 'json',
): Record<string, unknown> {
  return source === 'strings' ? verifyStrings(schema, input) : verifyJson(schema, input);
}

// ---------------------------------------------------------------------------------------------
// reading a request's parameters

export interface ParameterSource {
  readonly method: string;
  /** The query string without `?` ('' when there is none). */
  readonly query: string;
  readonly contentType: string | undefined;
  /** The request body, already read (undefined or empty when there is none). */
  readonly body: Uint8Array | undefined;
  /** Raw (upload/download) routes take parameters from the query string only. */
  readonly raw: boolean;
  /** Path parameters, already percent-decoded. */
  readonly pathParams: Readonly<Record<string, string>>;
}

const FORM_CONTENT_TYPE = 'application/x-www-form-urlencoded';
const JSON_CONTENT_TYPE = 'application/json';

/** The media type of a Content-Type header without its parameters, or undefined without one. */
function mediaType(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  return (contentType.split(';')[0] ?? '').trim().toLowerCase();
}

function bodyText(body: Uint8Array | undefined): string {
  if (body === undefined || body.length === 0) return '';
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new BurrowError('INVALID_ARGUMENT', 'Request body not utf8: invalid utf-8 sequence', {
      details: { length: body.length },
    });
  }
}

function jsonBody(text: string): Record<string, unknown> {
  // An empty JSON body is an empty parameter set.
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `invalid JSON body: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  if (Array.isArray(value))
    throw new BurrowError('INVALID_ARGUMENT', 'Expected object - got array.');
  if (typeof value !== 'object' || value === null) {
    throw new BurrowError('INVALID_ARGUMENT', 'Expected object - got scalar value.');
  }
  return value as Record<string, unknown>;
}

function pathPairs(pathParams: Readonly<Record<string, string>>): Array<[string, string]> {
  return Object.entries(pathParams);
}

/**
 * The checked parameters of a request (pbs-protocol §4.1): GET and DELETE (and raw routes) from
 * the query string; POST and PUT from a JSON body (the query string is then ignored) or from a
 * form body plus the query string. Path parameters are merged in. Another content type is
 * refused with 400 `unsupported content type`.
 */
export function readParameters(
  schema: ParamSchema,
  source: ParameterSource,
): Promise<Record<string, unknown>> {
  try {
    return Promise.resolve(readParametersNow(schema, source));
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
}

function readParametersNow(schema: ParamSchema, source: ParameterSource): Record<string, unknown> {
  const method = source.method.toUpperCase();
  const withBody = !source.raw && (method === 'POST' || method === 'PUT');
  if (!withBody) {
    const pairs = [...formPairs(source.query), ...pathPairs(source.pathParams)];
    return verifyParameters(schema, groupPairs(pairs), 'strings');
  }
  const type = mediaType(source.contentType);
  if (type !== undefined && type !== FORM_CONTENT_TYPE && type !== JSON_CONTENT_TYPE) {
    throw new BurrowError(
      'UNSUPPORTED_MEDIA_TYPE',
      `unsupported content type ${JSON.stringify(source.contentType)}`,
      { details: { contentType: source.contentType } },
    );
  }
  const text = bodyText(source.body);
  if (type === JSON_CONTENT_TYPE) {
    const params: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(jsonBody(text))) put(params, name, value);
    // Path parameters are text: parse them by their schema and let them win over the body.
    const problems: Problem[] = [];
    for (const [name, value] of pathPairs(source.pathParams)) {
      const spec = specOf(schema, name);
      if (spec === undefined) continue;
      noted(problems, name, () => put(params, name, parseSimpleValue(spec, value)));
    }
    if (problems.length > 0) throw parameterError(problems);
    return verifyParameters(schema, params, 'json');
  }
  const pairs = [...formPairs(text), ...formPairs(source.query), ...pathPairs(source.pathParams)];
  return verifyParameters(schema, groupPairs(pairs), 'strings');
}
