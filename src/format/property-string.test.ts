import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  formatPropertyString,
  parsePropertyString,
  parseScalar,
  type PropertyStringSchema,
} from './property-string.js';
import { codeOf } from '../../test/helpers/error-code.js';

/** A schema with every kind, a default key and a required key. */
const SCHEMA: PropertyStringSchema = {
  name: 'test',
  defaultKey: 'name',
  properties: {
    name: { kind: 'string', minLength: 1 },
    count: { kind: 'integer', min: 0, max: 1000, optional: true },
    flag: { kind: 'boolean', optional: true },
    mode: { kind: 'enum', values: ['fast', 'slow'], optional: true },
    text: { kind: 'string', optional: true },
  },
};

/** Like the tuning schema: no default key, everything optional. */
const FLAT: PropertyStringSchema = {
  name: 'flat',
  properties: {
    a: { kind: 'string', optional: true },
    b: { kind: 'integer', optional: true },
  },
};

describe('parsePropertyString', () => {
  it('reads key=value lists', () => {
    expect(parsePropertyString(SCHEMA, 'name=x,count=3,flag=true,mode=fast')).toEqual({
      name: 'x',
      count: 3,
      flag: true,
      mode: 'fast',
    });
  });

  it('reads a bare value as the default key, in any position', () => {
    expect(parsePropertyString(SCHEMA, 'x,count=3')).toEqual({ name: 'x', count: 3 });
    expect(parsePropertyString(SCHEMA, 'count=3,x')).toEqual({ name: 'x', count: 3 });
    expect(parsePropertyString(SCHEMA, '"quoted bare, value"')).toEqual({
      name: 'quoted bare, value',
    });
  });

  it('reads quoted values with their three escapes', () => {
    expect(
      parsePropertyString(SCHEMA, 'name=a,text="quoted, with \\"escapes\\" \\\\ and \\n"'),
    ).toEqual({
      name: 'a',
      text: 'quoted, with "escapes" \\ and \n',
    });
    expect(parsePropertyString(SCHEMA, 'name=a,text="with = in it"')).toEqual({
      name: 'a',
      text: 'with = in it',
    });
  });

  it('keeps = and " inside unquoted values', () => {
    expect(parsePropertyString(FLAT, 'a=b=c')).toEqual({ a: 'b=c' });
    expect(parsePropertyString(FLAT, 'a=x"y')).toEqual({ a: 'x"y' });
  });

  it('treats an empty value as unset and tolerates a trailing comma', () => {
    expect(parsePropertyString(FLAT, 'a=,b=2,')).toEqual({ b: 2 });
    expect(parsePropertyString(FLAT, 'a=""')).toEqual({});
    expect(parsePropertyString(FLAT, '')).toEqual({});
  });

  it('reads booleans and integers as PBS does', () => {
    for (const word of ['1', 'on', 'YES', 'True'])
      expect(parseScalar({ kind: 'boolean' }, word)).toEqual({ ok: true, value: true });
    for (const word of ['0', 'Off', 'no', 'FALSE'])
      expect(parseScalar({ kind: 'boolean' }, word)).toEqual({ ok: true, value: false });
    expect(parseScalar({ kind: 'boolean' }, 'y').ok).toBe(false);
    expect(parseScalar({ kind: 'integer' }, '+5')).toEqual({ ok: true, value: 5 });
    expect(parseScalar({ kind: 'integer' }, '-5')).toEqual({ ok: true, value: -5 });
    expect(parseScalar({ kind: 'integer' }, '007')).toEqual({ ok: true, value: 7 });
    for (const bad of ['', ' 5', '5 ', '1e3', '0x10', '1.0', '99999999999999999999']) {
      expect(parseScalar({ kind: 'integer' }, bad).ok, bad).toBe(false);
    }
  });

  it('rejects malformed strings with PROPERTY_STRING_INVALID', () => {
    const bad: [PropertyStringSchema, string][] = [
      [SCHEMA, 'name=x,bogus=1'], // unknown key
      [SCHEMA, 'name=x,count=1,count=2'], // duplicate key
      [SCHEMA, 'name=x,count=,count=2'], // duplicate even when the first is empty
      [SCHEMA, 'x,name=y'], // default key given twice
      [SCHEMA, 'name=x,count=1001'],
      [SCHEMA, 'name=x,count=-1'],
      [SCHEMA, 'name=x,count=abc'],
      [SCHEMA, 'name=x,flag=maybe'],
      [SCHEMA, 'name=x,mode=medium'],
      [SCHEMA, 'count=1'], // required name missing
      [SCHEMA, 'name='], // empty is unset, so name is missing
      [SCHEMA, 'name=x,text="open'],
      [SCHEMA, 'name=x,text="bad \\t escape"'],
      [SCHEMA, 'name=x,text="a"b'],
      [SCHEMA, 'name=x,text="trailing backslash\\'],
      [SCHEMA, 'name=x, count=1'], // keys are not trimmed
      [SCHEMA, '=x'],
      [FLAT, 'bare'], // no default key
      [FLAT, ',a=1'],
      [FLAT, 'constructor=1'],
      [FLAT, '__proto__=1'],
    ];
    for (const [schema, text] of bad)
      expect(
        codeOf(() => parsePropertyString(schema, text)),
        text,
      ).toBe('PROPERTY_STRING_INVALID');
  });

  it('runs the cross-field check', () => {
    const schema: PropertyStringSchema = {
      ...FLAT,
      check: (v) => (v['a'] !== undefined && v['b'] === undefined ? 'a needs b' : undefined),
    };
    expect(codeOf(() => parsePropertyString(schema, 'a=1'))).toBe('PROPERTY_STRING_INVALID');
    expect(parsePropertyString(schema, 'a=1,b=2')).toEqual({ a: '1', b: 2 });
  });
});

describe('formatPropertyString', () => {
  it('writes keys in schema order, the default key bare', () => {
    expect(formatPropertyString(SCHEMA, { mode: 'slow', count: 7, name: 'x', flag: false })).toBe(
      'x,count=7,flag=false,mode=slow',
    );
    expect(formatPropertyString(FLAT, { b: 2, a: 'z' })).toBe('a=z,b=2');
    expect(formatPropertyString(FLAT, {})).toBe('');
  });

  it('quotes only values that need it', () => {
    expect(formatPropertyString(FLAT, { a: 'plain-value.1 with space' })).toBe(
      'a=plain-value.1 with space',
    );
    expect(formatPropertyString(FLAT, { a: 'x=y' })).toBe('a=x=y');
    expect(formatPropertyString(FLAT, { a: 'say "hi"' })).toBe('a="say \\"hi\\""');
    expect(formatPropertyString(FLAT, { a: 'back\\slash' })).toBe('a="back\\\\slash"');
    expect(formatPropertyString(FLAT, { a: 'two\nlines' })).toBe('a="two\\nlines"');
    expect(formatPropertyString(FLAT, { a: 'a,b' })).toBe('a="a,b"');
    expect(formatPropertyString(SCHEMA, { name: 'k=v' })).toBe('"k=v"');
    // Surrounding whitespace would be trimmed away inside a section-config line.
    expect(formatPropertyString(FLAT, { a: ' padded ' })).toBe('a=" padded "');
    expect(formatPropertyString(FLAT, { a: 'in side' })).toBe('a=in side');
  });

  it('refuses values it cannot write', () => {
    expect(codeOf(() => formatPropertyString(FLAT, { c: 1 }))).toBe('PROPERTY_STRING_INVALID');
    expect(codeOf(() => formatPropertyString(FLAT, { a: '' }))).toBe('PROPERTY_STRING_INVALID');
    expect(codeOf(() => formatPropertyString(FLAT, { b: '2' }))).toBe('PROPERTY_STRING_INVALID');
    expect(codeOf(() => formatPropertyString(FLAT, { b: 1.5 }))).toBe('PROPERTY_STRING_INVALID');
    expect(codeOf(() => formatPropertyString(SCHEMA, { count: 1 }))).toBe(
      'PROPERTY_STRING_INVALID',
    );
    expect(codeOf(() => formatPropertyString(SCHEMA, { name: 'x', mode: 'medium' }))).toBe(
      'PROPERTY_STRING_INVALID',
    );
  });

  it('round-trips arbitrary values', () => {
    const text = fc.string({ unit: 'binary', minLength: 1, maxLength: 30 });
    const values = fc.record(
      {
        name: text,
        count: fc.integer({ min: 0, max: 1000 }),
        flag: fc.boolean(),
        mode: fc.constantFrom('fast', 'slow'),
        text,
      },
      { requiredKeys: ['name'] },
    );
    fc.assert(
      fc.property(values, (v) => {
        const written = formatPropertyString(SCHEMA, v);
        expect(parsePropertyString(SCHEMA, written)).toEqual(v);
        expect(formatPropertyString(SCHEMA, parsePropertyString(SCHEMA, written))).toBe(written);
      }),
      { numRuns: 500 },
    );
  });
});
