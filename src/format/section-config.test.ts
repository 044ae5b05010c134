import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { BurrowError } from '../lib/errors.js';
import { isBurrowError } from '../lib/errors.js';
import {
  parseSectionConfig,
  sectionConfigDigest,
  writeSectionConfig,
  type Section,
  type SectionConfigSchema,
} from './section-config.js';

/** Two section types; one array property; a property string. */
const SCHEMA: SectionConfigSchema = {
  types: [
    {
      type: 'user',
      id: { kind: 'string', minLength: 3 },
      properties: {
        email: { kind: 'string' },
        enable: { kind: 'boolean', optional: true },
        expire: { kind: 'integer', min: 0, optional: true },
        group: { kind: 'string', minLength: 1, optional: true, array: true },
        opts: {
          kind: 'property-string',
          optional: true,
          schema: {
            name: 'opts',
            properties: {
              x: { kind: 'integer', optional: true },
              y: { kind: 'string', optional: true },
            },
          },
        },
      },
    },
    {
      type: 'group',
      id: { kind: 'string', minLength: 3, pattern: /^[a-z]+$/ },
      properties: { comment: { kind: 'string', optional: true } },
    },
  ],
};

function errorOf(fn: () => unknown): BurrowError {
  try {
    fn();
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw new Error(`not a BurrowError: ${String(error)}`);
  }
  throw new Error('no error thrown');
}

describe('parseSectionConfig', () => {
  it('reads sections, values and arrays', () => {
    const text = [
      'user: root@pam',
      '\temail root@example.com',
      '\tenable 1',
      '\texpire 0',
      '\tgroup admins',
      '\tgroup ops',
      '\topts x=1,y="a b"',
      '',
      'group: admins',
      '\tcomment  spaced   comment  ',
      '',
    ].join('\n');
    expect(parseSectionConfig(SCHEMA, text)).toEqual([
      {
        type: 'user',
        id: 'root@pam',
        props: {
          email: 'root@example.com',
          enable: true,
          expire: 0,
          group: ['admins', 'ops'],
          opts: 'x=1,y="a b"',
        },
      },
      { type: 'group', id: 'admins', props: { comment: 'spaced   comment' } },
    ]);
  });

  it('is lenient where PBS is: blank lines, CRLF, any indentation, header spacing, no final newline', () => {
    const text = '\n  \r\nuser :   alice@pbs  \r\n    email   a@b\r\n \t \ngroup:abc\n comment x';
    expect(parseSectionConfig(SCHEMA, text)).toEqual([
      { type: 'user', id: 'alice@pbs', props: { email: 'a@b' } },
      { type: 'group', id: 'abc', props: { comment: 'x' } },
    ]);
    expect(parseSectionConfig(SCHEMA, '')).toEqual([]);
    expect(parseSectionConfig(SCHEMA, new TextEncoder().encode('group: abc\n'))).toEqual([
      { type: 'group', id: 'abc', props: {} },
    ]);
  });

  it('names the line of each error', () => {
    const cases: [string, string, number][] = [
      ['\temail x\n', 'SECTION_CONFIG_SYNTAX', 1], // property before any header
      ['\n\nuser root@pam\n', 'SECTION_CONFIG_SYNTAX', 3], // header without ':'
      ['1user: abc\n', 'SECTION_CONFIG_SYNTAX', 1], // header must start with a letter
      ['# comment\n', 'SECTION_CONFIG_SYNTAX', 1], // no comments
      ['host: abc\n', 'SECTION_CONFIG_SYNTAX', 1], // unknown type
      ['user: abc\n\temail x\nfoo bar\n', 'SECTION_CONFIG_SYNTAX', 3], // unindented line inside a section
      ['user: abc\n\temail\n', 'SECTION_CONFIG_SYNTAX', 2], // key without value
      ['user: abc\n\temail x\n\tbogus 1\n', 'SECTION_CONFIG_INVALID', 3], // unknown property
      ['user: abc\n\temail x\n\temail y\n', 'SECTION_CONFIG_INVALID', 3], // duplicate property
      ['user: abc\n\temail x\n\tenable maybe\n', 'SECTION_CONFIG_INVALID', 3],
      ['user: abc\n\temail x\n\texpire -1\n', 'SECTION_CONFIG_INVALID', 3],
      ['user: abc\n\temail x\n\topts z=1\n', 'SECTION_CONFIG_INVALID', 3], // bad property string
      ['user: abc\n\temail a\u0001b\n', 'SECTION_CONFIG_SYNTAX', 2], // control character
      ['user: abc\n\temail a\tb\n', 'SECTION_CONFIG_SYNTAX', 2], // a TAB inside the value
      ['user: abc\n\temail a\u0085b\n', 'SECTION_CONFIG_SYNTAX', 2], // C1 control
      ['user: a\u0007bc\n\temail x\n', 'SECTION_CONFIG_SYNTAX', 1],
      ['user: ab\n\temail x\n', 'SECTION_CONFIG_INVALID', 1], // ID too short
      ['group: ABC\n', 'SECTION_CONFIG_INVALID', 1], // ID pattern
      ['user: abc\n\tenable 1\n\n', 'SECTION_CONFIG_INVALID', 1], // required email missing
      ['group: abc\n\ngroup: abc\n', 'SECTION_CONFIG_INVALID', 3], // duplicate section ID
    ];
    for (const [text, code, line] of cases) {
      const error = errorOf(() => parseSectionConfig(SCHEMA, text));
      expect(error.code, JSON.stringify(text)).toBe(code);
      expect(error.details['line'], JSON.stringify(text)).toBe(line);
      expect(error.message.startsWith(`line ${line}: `), error.message).toBe(true);
    }
  });

  it('refuses bytes that are not UTF-8', () => {
    expect(errorOf(() => parseSectionConfig(SCHEMA, new Uint8Array([0x67, 0xff]))).code).toBe(
      'SECTION_CONFIG_SYNTAX',
    );
  });
});

describe('writeSectionConfig', () => {
  it('writes headers, TAB-indented sorted keys and one empty line between sections', () => {
    const sections: Section[] = [
      {
        type: 'user',
        id: 'root@pam',
        props: { group: ['b', 'a'], enable: false, email: 'r@x', opts: 'y=1' },
      },
      { type: 'group', id: 'abc', props: {} },
    ];
    expect(writeSectionConfig(SCHEMA, sections)).toBe(
      'user: root@pam\n\temail r@x\n\tenable false\n\tgroup b\n\tgroup a\n\topts y=1\n\ngroup: abc\n',
    );
    expect(writeSectionConfig(SCHEMA, [])).toBe('');
  });

  it('skips undefined values', () => {
    expect(
      writeSectionConfig(SCHEMA, [
        { type: 'user', id: 'abc', props: { email: 'e', expire: undefined } },
      ]),
    ).toBe('user: abc\n\temail e\n');
  });

  it('refuses what it cannot write faithfully', () => {
    const bad: Section[][] = [
      [{ type: 'host', id: 'abc', props: {} }],
      [{ type: 'group', id: 'ab', props: {} }],
      [{ type: 'group', id: 'abc', props: { bogus: 'x' } }],
      [{ type: 'group', id: 'abc', props: { comment: 'a\u0001b' } }],
      [{ type: 'group', id: 'abc', props: { comment: 'two\nlines' } }],
      [{ type: 'group', id: 'abc', props: { comment: ' padded' } }],
      [{ type: 'group', id: 'abc', props: { comment: 5 } }],
      [{ type: 'user', id: 'abc', props: {} }], // email missing
      [{ type: 'user', id: 'abc', props: { email: 'e', group: 'not-an-array' } }],
      [{ type: 'user', id: 'abc', props: { email: 'e', opts: 'z=1' } }],
      [
        { type: 'group', id: 'abc', props: {} },
        { type: 'group', id: 'abc', props: {} },
      ],
    ];
    for (const sections of bad) {
      expect(
        errorOf(() => writeSectionConfig(SCHEMA, sections)).code,
        JSON.stringify(sections),
      ).toBe('SECTION_CONFIG_INVALID');
    }
  });

  it('round-trips generated configs', () => {
    const value = fc
      .string({ unit: 'binary', minLength: 1, maxLength: 20 })
      .filter((s) => !/^\p{White_Space}|\p{White_Space}$|\p{Cc}/u.test(s));
    const user = fc.record(
      {
        id: fc.stringMatching(/^[a-z]{3,8}@[a-z]{3}$/),
        email: value,
        enable: fc.option(fc.boolean(), { nil: undefined }),
        expire: fc.option(fc.nat(), { nil: undefined }),
        group: fc.option(fc.array(value, { minLength: 1, maxLength: 3 }), { nil: undefined }),
      },
      { noNullPrototype: true },
    );
    const group = fc.record({
      id: fc.stringMatching(/^[a-z]{3,8}$/),
      comment: fc.option(value, { nil: undefined }),
    });
    const config = fc.tuple(
      fc.uniqueArray(user, { selector: (u) => u.id, maxLength: 4 }),
      fc.uniqueArray(group, { selector: (g) => g.id, maxLength: 4 }),
    );
    fc.assert(
      fc.property(config, ([users, groups]) => {
        const sections: Section[] = [
          ...users.map(({ id, ...props }) => ({ type: 'user', id, props: strip(props) })),
          ...groups.map(({ id, ...props }) => ({ type: 'group', id, props: strip(props) })),
        ];
        const text = writeSectionConfig(SCHEMA, sections);
        expect(parseSectionConfig(SCHEMA, text)).toEqual(sections);
        expect(writeSectionConfig(SCHEMA, parseSectionConfig(SCHEMA, text))).toBe(text);
      }),
      { numRuns: 200 },
    );
  });
});

function strip(
  props: Record<string, unknown>,
): Record<string, string | number | boolean | string[]> {
  return Object.fromEntries(Object.entries(props).filter(([, v]) => v !== undefined)) as Record<
    string,
    string | number | boolean | string[]
  >;
}

describe('sectionConfigDigest', () => {
  it('is the SHA-256 of the raw bytes', () => {
    expect(sectionConfigDigest('')).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
    expect(sectionConfigDigest('abc')).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    expect(sectionConfigDigest(new TextEncoder().encode('abc'))).toBe(sectionConfigDigest('abc'));
  });
});
