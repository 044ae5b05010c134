import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  canonicalJson,
  canonicalJsonBytes,
  compareUtf8,
  prettyJsonSorted,
} from './canonical-json.js';
import { isBurrowError } from '../lib/errors.js';

const HEX64_01 = '01'.repeat(32);
const HEX64_02 = '02'.repeat(32);

/** The spec's literal canonical form (pbs-formats §12, pbs-protocol §11 #4), 0101…01 expanded. */
const SPEC_CANONICAL =
  '{"backup-id":"elsa","backup-time":1593179765,"backup-type":"host","files":[' +
  `{"crypt-mode":"encrypt","csum":"${HEX64_01}","filename":"test1.img.fidx","size":200},` +
  `{"crypt-mode":"none","csum":"${HEX64_02}","filename":"abc.blob","size":200}]}`;

function expectCode(fn: () => unknown, code: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isBurrowError(thrown), `expected a BurrowError ${code}, got ${String(thrown)}`).toBe(true);
  expect((thrown as { code: string }).code).toBe(code);
}

/** Byte order of the UTF-8 encodings: the oracle for Rust's `str` ordering. */
const byteOrder = (a: string, b: string): number =>
  Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/** Any well-formed character, with the interesting ones (controls, quotes, surrogate pairs) frequent. */
const char = fc.oneof(
  fc.constantFrom(
    '\u0000',
    '\b',
    '\t',
    '\n',
    '\f',
    '\r',
    '\u001f',
    '"',
    '\\',
    '/',
    '\u007f',
    '\u2028',
    '\ue000',
    '\uffff',
    'a',
    'é',
  ),
  fc
    .integer({ min: 0, max: 0x10ffff })
    .filter((cp) => cp < 0xd800 || cp > 0xdfff)
    .map((cp) => String.fromCodePoint(cp)),
);
const str = fc.string({ unit: char, maxLength: 12 });

/** JSON values canonical JSON accepts: no null, integers only. */
const canonicalValue = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    str,
    fc.boolean(),
    fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(str, tie('value'), { maxKeys: 5 }),
  ),
})).value;

describe('canonicalJson', () => {
  it('produces the spec literal for the manifest test vector', () => {
    const signed = {
      'backup-type': 'host',
      'backup-time': 1593179765,
      files: [
        { size: 200, filename: 'test1.img.fidx', csum: HEX64_01, 'crypt-mode': 'encrypt' },
        { filename: 'abc.blob', 'crypt-mode': 'none', size: 200, csum: HEX64_02 },
      ],
      'backup-id': 'elsa',
    };
    expect(canonicalJson(signed)).toBe(SPEC_CANONICAL);
    expect(Buffer.from(canonicalJsonBytes(signed)).toString('utf8')).toBe(SPEC_CANONICAL);
  });

  it('escapes exactly the serde_json set: quote, backslash and controls below 0x20', () => {
    const named: Record<number, string> = {
      0x08: '\\b',
      0x09: '\\t',
      0x0a: '\\n',
      0x0c: '\\f',
      0x0d: '\\r',
    };
    for (let c = 0; c < 0x20; c++) {
      const expected = named[c] ?? `\\u00${c.toString(16).padStart(2, '0')}`;
      expect(canonicalJson(String.fromCharCode(c))).toBe(`"${expected}"`);
    }
    expect(canonicalJson('"')).toBe('"\\""');
    expect(canonicalJson('\\')).toBe('"\\\\"');
    // Not escaped: slash, DEL, line/paragraph separators, non-ASCII, astral characters.
    const plain = '/\u007f\u2028\u2029é€😀';
    expect(canonicalJson(plain)).toBe(`"${plain}"`);
    expect(canonicalJson('\u001a')).toBe('"\\u001a"'); // lowercase hex
  });

  it('writes integers in plain decimal and booleans as words, without whitespace', () => {
    expect(canonicalJson({ b: [1, -2, 0, true, false], a: Number.MAX_SAFE_INTEGER })).toBe(
      '{"a":9007199254740991,"b":[1,-2,0,true,false]}',
    );
    expect(canonicalJson(-0)).toBe('0');
    expect(canonicalJson(18446744073709551615n)).toBe('18446744073709551615');
    expect(canonicalJson({})).toBe('{}');
    expect(canonicalJson([])).toBe('[]');
  });

  it('sorts keys by UTF-8 bytes, not UTF-16 code units', () => {
    // U+FF21 (EF BC A1) sorts before U+1F600 (F0 9F 98 80) in UTF-8, after it in UTF-16 (D83D).
    const obj = { '\u{1F600}': 1, '\uFF21': 2, a: 3, B: 4 };
    expect(Object.keys(obj).sort()).toEqual(['B', 'a', '\u{1F600}', '\uFF21']);
    expect(canonicalJson(obj)).toBe('{"B":4,"a":3,"\uFF21":2,"\u{1F600}":1}');
  });

  it('refuses null anywhere, floats, non-finite and unsafe numbers, lone surrogates and non-data', () => {
    for (const bad of [
      null,
      { a: null },
      [1, null],
      { a: { b: [null] } },
      1.5,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      2 ** 53,
      2n ** 64n,
      '\ud800',
      { '\udc00': 1 },
      undefined,
      [undefined],
      () => 1,
      new Date(0),
      new Map(),
      Symbol('x'),
    ]) {
      expectCode(() => canonicalJson(bad), 'CANONICAL_JSON_INVALID');
    }
  });

  it('names the offending path in the error', () => {
    try {
      canonicalJson({ files: [{ size: 1 }, { size: null }] });
      expect.unreachable();
    } catch (err) {
      expect(isBurrowError(err, 'CANONICAL_JSON_INVALID')).toBe(true);
      expect((err as Error).message).toContain('$.files[1].size');
    }
  });

  it('compareUtf8 agrees with UTF-8 byte order (property)', () => {
    fc.assert(
      fc.property(str, str, (a, b) => {
        expect(Math.sign(compareUtf8(a, b))).toBe(Math.sign(byteOrder(a, b)));
      }),
      { numRuns: 500 },
    );
  });

  it('parses back to the same value (property)', () => {
    fc.assert(
      fc.property(canonicalValue, (value) => {
        const text = canonicalJson(value);
        expect(JSON.parse(text)).toEqual(value);
      }),
      { numRuns: 300 },
    );
  });

  it('writes object members in byte order with no whitespace between tokens (property)', () => {
    fc.assert(
      fc.property(fc.dictionary(str, canonicalValue, { maxKeys: 6 }), (obj) => {
        const keys = Object.keys(obj).sort(byteOrder);
        const expected = `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
        expect(canonicalJson(obj)).toBe(expected);
      }),
      { numRuns: 200 },
    );
  });
});

describe('prettyJsonSorted', () => {
  it('matches serde_json pretty style for nested and empty containers', () => {
    const value = { d: 's', c: [1, [2, []], { x: null }], b: {}, a: [], e: { z: { y: [] } } };
    expect(prettyJsonSorted(value)).toBe(
      [
        '{',
        '  "a": [],',
        '  "b": {},',
        '  "c": [',
        '    1,',
        '    [',
        '      2,',
        '      []',
        '    ],',
        '    {',
        '      "x": null',
        '    }',
        '  ],',
        '  "d": "s",',
        '  "e": {',
        '    "z": {',
        '      "y": []',
        '    }',
        '  }',
        '}',
      ].join('\n'),
    );
    expect(prettyJsonSorted([])).toBe('[]');
    expect(prettyJsonSorted({})).toBe('{}');
    expect(prettyJsonSorted('x\ny')).toBe('"x\\ny"');
  });

  it('sorts keys by UTF-8 bytes at every level', () => {
    expect(prettyJsonSorted({ '\u{1F600}': { b: 1, a: 2 }, '\uFF21': 0 })).toBe(
      '{\n  "\uFF21": 0,\n  "\u{1F600}": {\n    "a": 2,\n    "b": 1\n  }\n}',
    );
  });

  it('allows null and finite floats but not NaN or lone surrogates', () => {
    expect(prettyJsonSorted({ a: null, b: 1.5 })).toBe('{\n  "a": null,\n  "b": 1.5\n}');
    expectCode(() => prettyJsonSorted({ a: Number.NaN }), 'CANONICAL_JSON_INVALID');
    expectCode(() => prettyJsonSorted(['\udfff']), 'CANONICAL_JSON_INVALID');
  });

  it('equals JSON.stringify(_, null, 2) of the key-sorted value (property)', () => {
    // Keys are prefixed with a letter: JS objects put integer-like keys first whatever the
    // insertion order, which would defeat the JSON.stringify oracle.
    const key = str.map((s) => `k${s}`);
    const value = fc.letrec<{ value: unknown }>((tie) => ({
      value: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        str,
        fc.boolean(),
        fc.constant(null),
        fc.integer(),
        fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e20, max: 1e20 }),
        fc.array(tie('value'), { maxLength: 4 }),
        fc.dictionary(key, tie('value'), { maxKeys: 5 }),
      ),
    })).value;
    const sortDeep = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.map(sortDeep);
      if (v !== null && typeof v === 'object') {
        const src = v as Record<string, unknown>;
        return Object.fromEntries(
          Object.keys(src)
            .sort(byteOrder)
            .map((k) => [k, sortDeep(src[k])]),
        );
      }
      return v;
    };
    fc.assert(
      fc.property(value, (v) => {
        expect(prettyJsonSorted(v)).toBe(JSON.stringify(sortDeep(v), null, 2));
      }),
      { numRuns: 300 },
    );
  });
});
