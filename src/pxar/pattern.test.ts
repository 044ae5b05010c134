import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { codeOf } from '../../test/helpers/error-code.js';
import { BurrowError } from '../lib/errors.js';
import {
  ExtractSelector,
  Glob,
  MatchList,
  MatchStack,
  formatExcludeLines,
  parsePattern,
  parsePatternFile,
  type MatchPattern,
  type MatchType,
} from './pattern.js';

const enc = new TextEncoder();
const bytes = (s: string): Uint8Array => enc.encode(s);
const latin1 = (b: Uint8Array): string => String.fromCharCode(...b);

function errorOf(fn: () => unknown): BurrowError {
  try {
    fn();
  } catch (error) {
    if (error instanceof BurrowError) return error;
    throw error;
  }
  throw new Error('expected a BurrowError');
}

/** Evaluate a list of "line" patterns (exclusion convention) against a path. */
function listMatch(lines: string[], path: string, isDir = false): MatchType | undefined {
  return new MatchList(lines.map((l) => parsePattern(l))).match(path, isDir);
}

const matches = (pattern: string, path: string | Uint8Array, isDir = false): boolean =>
  parsePattern(pattern).matches(path, isDir);

describe('Glob (whole-string matching; vectors from the pathpatterns crate tests)', () => {
  const check = (pattern: string, yes: string[], no: string[]): void => {
    const glob = new Glob(pattern);
    for (const text of yes)
      expect([pattern, text, glob.matches(text)]).toEqual([pattern, text, true]);
    for (const text of no)
      expect([pattern, text, glob.matches(text)]).toEqual([pattern, text, false]);
  };

  it('* stays inside one component', () => {
    check(
      '/hey/*/you',
      ['/hey/asdf/you', '/hey//you'],
      ['/hey/asdf/more/you', '/heyasdf/you', '/heyasdfyou', '/hey/asdfyou', '/hey/you'],
    );
  });

  it('/**/ spans any number of components, including none', () => {
    check(
      '/hey/**/you',
      ['/hey/asdf/you', '/hey/asdf/more/you', '/hey/you', '/hey//you'],
      ['/heyasdf/you', '/heyasdfyou', '/hey/asdfyou'],
    );
  });

  it('classes and negated classes', () => {
    check(
      '/he[yx]/**/you',
      ['/hey/asdf/you', '/hex/asdf/more/you', '/hex/you', '/hex//you'],
      ['/hez/asdf/you', '/hexasdf/you', '/hex/asdfyou', '/hez/you'],
    );
    check(
      '/he[^yx]/**/you',
      ['/hez/asdf/you', '/hez/asdf/more/you', '/hez/you', '/hez//you'],
      ['/hey/asdf/you', '/hex/you', '/hezasdf/you', '/hez/asdfyou', '', '/', '/h', '/hez', '/hez/'],
    );
  });

  it('ranges', () => {
    check('/tes[a-t]', ['/tesa', '/test'], ['/testoolong', '/tes', '/t', '/', '', '/tesu']);
    check(
      '/tes[a-t]/a?a',
      ['/test/aba', '/test/aaa'],
      ['/tesu', '/tesu/aaa', '/test/xax', '/test/a', '/test/ab', '/test/a/a'],
    );
  });

  it('several stars', () => {
    check(
      'a*b*c',
      ['axxbxxc', 'axxbxxbxxc', 'axxbxxbxxcxxc'],
      ['axxbxxcxx', 'axxbxxbxxcxx', 'axxbxxbxxcxxcxx'],
    );
    check('a*b*c*', ['axxbxxc', 'axxbxxcxx', 'axxbxxbxxcxxcxx'], ['axxb', 'bxxc']);
  });

  it('** glued to other characters is a plain *', () => {
    check('a/b**/c', ['a/bxx/c', 'a/b/c'], ['a/bxx/yy/c']);
    check('**.txt', ['a.txt', '.txt'], ['a/b.txt']);
  });

  it('a leading **/ matches nothing or any prefix ending in /', () => {
    check(
      '**/lost+found',
      ['/foo/lost+found', 'foo/lost+found', '/lost+found', '///lost+found', 'lost+found'],
      ['lost+found2', 'lost+found/', 'xlost+found', 'xlost+found/'],
    );
  });

  it('named classes', () => {
    check('a[[:upper:]][[:lower:]][[:digit:]k]', ['aBc3', 'aZzk'], ['abc3', 'aBC3', 'aBcx']);
    check('[[:alpha:][:digit:]_]', ['a', 'Z', '5', '_'], ['-', '/']);
    check('[[:space:]]', [' ', '\t', '\n', '\v', '\f', '\r'], ['x']);
    check('[[:xdigit:]][[:punct:]]', ['f!', 'A~'], ['g!', 'a1']);
    check('[![:digit:]]', ['a'], ['1']);
  });
});

describe('MatchList: the pathpatterns documentation example', () => {
  const list = (entries: Array<[string, MatchType]>): MatchList =>
    new MatchList(entries.map(([p, t]) => parsePattern(t === 'include' ? p : `!${p}`, 'include')));

  it('include/exclude/include with suffix matching', () => {
    const entries: Array<[string, MatchType]> = [
      ['shop', 'include'],
      ['bananas', 'exclude'],
      ['bananas/curved.*', 'include'],
    ];
    const l = list(entries);
    expect(l.match('things', true)).toBeUndefined();
    expect(l.match('things/shop', true)).toBe('include');
    expect(l.match('things/shop/bananas', true)).toBe('exclude');
    expect(l.match('things/shop/bananas/curved.txt', false)).toBe('include');
    expect(l.match('things/shop/bananas/curved.bak', false)).toBe('include');
    const more = list([...entries, ['curved.bak', 'exclude']]);
    expect(more.match('things/shop/bananas/curved.bak', false)).toBe('exclude');
    // Anchored at the base, "curved.bak" names only a top-level entry.
    const anchored = list([...entries, ['/curved.bak', 'exclude']]);
    expect(anchored.match('things/shop/bananas/curved.bak', false)).toBe('include');
    expect(anchored.match('curved.bak', false)).toBe('exclude');
  });

  it('[cfs]* and [cfs]*/**', () => {
    const l = list([['[cfs]*', 'include']]);
    expect(l.match('things', true)).toBeUndefined();
    expect(l.match('things/file1.dat', false)).toBe('include');
    expect(l.match('things/shop', true)).toBe('include');
    expect(l.match('things/shop/info.txt', false)).toBeUndefined();
    expect(l.match('things/shop/apples', true)).toBeUndefined();
    expect(l.match('things/shop/apples/gala.txt', false)).toBeUndefined();
    expect(l.match('things/shop/bananas/straight.txt', false)).toBe('include');
    expect(l.match('things/shop/bananas/curved.txt', false)).toBe('include');
    expect(l.match('shop/bananas/curved.bak', false)).toBe('include');
    expect(l.match('things/shop/bananas/other.txt', false)).toBeUndefined();

    const l2 = list([
      ['[cfs]*', 'include'],
      ['[cfs]*/**', 'include'],
    ]);
    expect(l2.match('things', true)).toBeUndefined();
    for (const p of [
      'things/shop/info.txt',
      'things/shop/apples',
      'things/shop/apples/gala.txt',
      'shop/apples/golden-delicious.txt',
      'things/shop/bananas',
      'shop/bananas/other.txt',
    ]) {
      expect([p, l2.match(p, false)]).toEqual([p, 'include']);
    }
  });
});

describe('syntax elements', () => {
  it('? is one byte, never /', () => {
    expect(matches('a?c', 'abc')).toBe(true);
    expect(matches('a?c', 'ac')).toBe(false);
    expect(matches('a?c', 'abbc')).toBe(false);
    expect(matches('x/a?c', 'x/a/c')).toBe(false);
    // Bytewise: 'ä' is two bytes in UTF-8.
    expect(matches('?', 'ä')).toBe(false);
    expect(matches('??', 'ä')).toBe(true);
  });

  it('* does not cross /, ** does', () => {
    expect(matches('/a*', 'abc')).toBe(true);
    expect(matches('/a*', 'a')).toBe(true);
    expect(matches('/a*', 'a/b')).toBe(false);
    expect(matches('/a/*', 'a/b')).toBe(true);
    expect(matches('/a/*', 'a/b/c')).toBe(false);
    expect(matches('/a/**', 'a/b/c')).toBe(true);
    expect(matches('/a/**', 'a')).toBe(false);
    expect(matches('**', 'any/thing/at/all')).toBe(true);
    expect(matches('/**', 'x')).toBe(true);
    expect(matches('/a/**/z', 'a/z')).toBe(true);
    expect(matches('/a/**/z', 'a/b/c/z')).toBe(true);
    expect(matches('/a/**/z', 'a/bz')).toBe(false);
    expect(matches('/a/**/**/z', 'a/z')).toBe(true);
    expect(matches('**/**/z', 'z')).toBe(true);
    expect(matches('/a**', 'abc')).toBe(true);
    expect(matches('/a**', 'a/b')).toBe(false);
  });

  it('classes: !, ^, ranges, literal ] and -, escapes, never /', () => {
    expect(matches('[!a]', 'b')).toBe(true);
    expect(matches('[!a]', 'a')).toBe(false);
    expect(matches('[^a]', 'b')).toBe(true);
    expect(matches('[^a]', 'a')).toBe(false);
    expect(matches('x[0-9]', 'x5')).toBe(true);
    expect(matches('x[0-9]', 'xa')).toBe(false);
    expect(matches('x[9-0]', 'x5')).toBe(true); // reversed range, as PBS
    expect(matches('[]a]', ']')).toBe(true);
    expect(matches('[]a]', 'a')).toBe(true);
    expect(matches('[!]a]', ']')).toBe(false);
    expect(matches('[!]a]', 'b')).toBe(true);
    expect(matches('[a-]', '-')).toBe(true);
    expect(matches('[-a]', '-')).toBe(true);
    expect(matches('[a-]', 'b')).toBe(false);
    expect(matches('[\\]]', ']')).toBe(true);
    expect(matches('[a\\-z]', '-')).toBe(true);
    expect(matches('[a\\-z]', 'b')).toBe(false);
    expect(matches('/a[!x]b', 'a/b')).toBe(false);
    expect(matches('/a[/]b', 'a/b')).toBe(false);
    expect(matches('[!x]', 'y')).toBe(true);
    expect(matches('[*?]', '*')).toBe(true);
    expect(matches('[*?]', 'a')).toBe(false);
  });

  it('\\ escapes the next byte', () => {
    expect(matches('a\\*', 'a*')).toBe(true);
    expect(matches('a\\*', 'ab')).toBe(false);
    expect(matches('\\?', '?')).toBe(true);
    expect(matches('\\?', 'x')).toBe(false);
    expect(matches('\\[x]', '[x]')).toBe(true);
    expect(matches('\\a', 'a')).toBe(true);
    expect(matches('a\\\\b', 'a\\b')).toBe(true);
    const p = parsePattern('\\!x');
    expect(p.type).toBe('exclude');
    expect(p.matches('!x', false)).toBe(true);
    expect(p.matches('x', false)).toBe(false);
  });
});

describe('anchoring and suffix matching', () => {
  it('a pattern without / matches the name at any depth', () => {
    expect(matches('foo', 'foo')).toBe(true);
    expect(matches('foo', 'a/b/foo')).toBe(true);
    expect(matches('foo', 'a/foo/b')).toBe(false);
    expect(matches('foo', 'xfoo')).toBe(false);
    expect(matches('*.tmp', 'a/b/c.tmp')).toBe(true);
  });

  it('a leading / anchors at the base', () => {
    expect(matches('/foo', 'foo')).toBe(true);
    expect(matches('/foo', 'a/foo')).toBe(false);
    expect(matches('/a/b', 'a/b')).toBe(true);
    expect(matches('/a/b', 'x/a/b')).toBe(false);
    expect(parsePattern('/a').anchored).toBe(true);
    expect(parsePattern('a/b').anchored).toBe(false);
    expect(parsePattern('!/a').anchored).toBe(true);
  });

  it('a pattern with an inner / still matches any component-aligned suffix (as PBS)', () => {
    expect(matches('a/b', 'a/b')).toBe(true);
    expect(matches('a/b', 'x/y/a/b')).toBe(true);
    expect(matches('a/b', 'xa/b')).toBe(false);
    expect(matches('a/b', 'a/b/c')).toBe(false);
    // `*/x` can match with an empty * against the leading '/': top-level x too (PBS does the same).
    expect(matches('*/x', 'x')).toBe(true);
    expect(matches('*/x', 'd/x')).toBe(true);
  });

  it('the base directory itself is never matched', () => {
    expect(matches('**', '', true)).toBe(false);
    expect(matches('/', '', true)).toBe(false);
  });

  it('paths must be relative', () => {
    expect(codeOf(() => matches('a', '/a'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => matches('a', 'a/'))).toBe('INVALID_ARGUMENT');
  });
});

describe('directory-only patterns', () => {
  it('trailing slashes match directories only', () => {
    const p = parsePattern('foo/');
    expect(p.dirOnly).toBe(true);
    expect(p.matches('foo', true)).toBe(true);
    expect(p.matches('foo', false)).toBe(false);
    expect(p.matches('x/foo', true)).toBe(true);
    expect(parsePattern('foo//').dirOnly).toBe(true);
    expect(parsePattern('foo').dirOnly).toBe(false);
    expect(parsePattern('/a/b/').matches('a/b', true)).toBe(true);
    expect(parsePattern('/a/b/').matches('a/b', false)).toBe(false);
  });

  it('a list skips a dir-only pattern for files', () => {
    expect(listMatch(['x', '!x/'], 'x', true)).toBe('include');
    expect(listMatch(['x', '!x/'], 'x', false)).toBe('exclude');
  });
});

describe('lists: last match wins, ! flips the type', () => {
  it('exclusion lists', () => {
    const lines = ['*.log', '!keep.log'];
    expect(listMatch(lines, 'a.log')).toBe('exclude');
    expect(listMatch(lines, 'd/keep.log')).toBe('include');
    expect(listMatch(lines, 'x.txt')).toBeUndefined();
    expect(listMatch(['!keep.log', '*.log'], 'keep.log')).toBe('exclude');
    expect(new MatchList([]).match('a', false)).toBeUndefined();
  });

  it('the default type can be include (restore patterns)', () => {
    expect(parsePattern('etc', 'include').type).toBe('include');
    expect(parsePattern('!etc', 'include').type).toBe('exclude');
    expect(parsePattern('etc').type).toBe('exclude');
    expect(parsePattern('!etc').type).toBe('include');
    // Only one '!' is special.
    const p = parsePattern('!!x');
    expect(p.type).toBe('include');
    expect(p.matches('!x', false)).toBe(true);
  });

  it('property: MatchList equals a right-to-left scan of the patterns', () => {
    const patternArb = fc.constantFrom('a', '!a', 'b/', '!*', '/a/b', '!**/b', 'a/*', '!/a');
    const pathArb = fc
      .array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 4 })
      .map((c) => c.join('/'));
    fc.assert(
      fc.property(
        fc.array(patternArb, { maxLength: 6 }),
        pathArb,
        fc.boolean(),
        (lines, path, isDir) => {
          const parsed = lines.map((l) => parsePattern(l));
          let expected: MatchType | undefined;
          for (const p of parsed) if (p.matches(path, isDir)) expected = p.type;
          expect(new MatchList(parsed).match(path, isDir)).toBe(expected);
        },
      ),
    );
  });
});

describe('invalid patterns', () => {
  const expectInvalid = (pattern: string | Uint8Array, offset: number): void => {
    const error = errorOf(() => parsePattern(pattern));
    expect(error.code).toBe('PATTERN_INVALID');
    expect(error.details.offset).toBe(offset);
    expect(error.message).toContain(`at byte ${offset}`);
    if (typeof pattern === 'string') expect(error.message).toContain(JSON.stringify(pattern));
  };

  it('reports the byte position', () => {
    expectInvalid('foo[', 3);
    expectInvalid('foo[ab', 3);
    expectInvalid('[!', 0);
    expectInvalid('[]', 0);
    expectInvalid('a[b-', 1);
    expectInvalid('foo\\', 3);
    expectInvalid('[a\\', 2);
    expectInvalid('!a[', 2); // positions count the '!'
    expectInvalid('', 0);
    expectInvalid('!', 1);
    expectInvalid('a\0b', 1);
    expectInvalid('[[:nope:]]', 1);
    expectInvalid('[[:alpha]', 1);
  });

  it('a trailing backslash before stripped slashes is still trailing', () => {
    // The trailing '/' is stripped first (as PBS does), which leaves a lone '\'.
    expectInvalid('a\\/', 1);
  });

  it('only slashes is a valid, dir-only pattern', () => {
    const p = parsePattern('//');
    expect(p.dirOnly).toBe(true);
    expect(p.matches('a', true)).toBe(false);
  });
});

describe('non-UTF-8 bytes', () => {
  it('patterns and paths are bytes', () => {
    const p = parsePattern(Uint8Array.of(0xff, 0x2a)); // "\xff*"
    expect(p.matches(Uint8Array.of(0x64, 0x2f, 0xff, 0x41), false)).toBe(true);
    expect(p.matches(Uint8Array.of(0x64, 0x2f, 0xfe, 0x41), false)).toBe(false);
    expect(p.source).toBe('\ufffd*');
    expect(parsePattern('?').matches(Uint8Array.of(0x80), false)).toBe(true);
    // A class of a multi-byte character holds its bytes, each one alone.
    const cls = parsePattern('[ä]');
    expect(cls.matches(Uint8Array.of(0xc3), false)).toBe(true);
    expect(cls.matches(Uint8Array.of(0xa4), false)).toBe(true);
    expect(cls.matches('ä', false)).toBe(false);
    const dir = parsePattern(Uint8Array.of(0x2f, 0xc3, 0x28, 0x2f)); // "/\xc3(/": invalid UTF-8, dir-only
    expect(dir.dirOnly).toBe(true);
    expect(dir.matches(Uint8Array.of(0xc3, 0x28), true)).toBe(true);
  });
});

describe('parsePatternFile (.pxarexclude)', () => {
  it('skips blanks and comments, trims whitespace, splits on \\n', () => {
    const content = bytes(
      '# comment\n\n  *.tmp  \r\n\t!keep.tmp\n   # indented comment\n/abs/\nlast',
    );
    const patterns = parsePatternFile(content, 'dir/.pxarexclude');
    expect(patterns.map((p) => [p.source, p.type, p.dirOnly, p.anchored])).toEqual([
      ['*.tmp', 'exclude', false, false],
      ['!keep.tmp', 'include', false, false],
      ['/abs/', 'exclude', true, true],
      ['last', 'exclude', false, false],
    ]);
    expect(parsePatternFile(new Uint8Array(0), 'x')).toEqual([]);
    expect(parsePatternFile(bytes('\n\n'), 'x')).toEqual([]);
  });

  it('\\# makes a pattern of a name that starts with #', () => {
    const [p] = parsePatternFile(bytes('\\#x\n'), 'f');
    expect(p?.matches('#x', false)).toBe(true);
  });

  it('keeps non-UTF-8 lines', () => {
    const content = Uint8Array.of(0x61, 0x0a, 0xff, 0xfe, 0x0a);
    const patterns = parsePatternFile(content, 'f');
    expect(patterns).toHaveLength(2);
    expect(patterns[1]?.matches(Uint8Array.of(0x78, 0x2f, 0xff, 0xfe), false)).toBe(true);
  });

  it('default type include for restore lists', () => {
    const patterns = parsePatternFile(bytes('etc\n!etc/shadow\n'), 'list', {
      defaultType: 'include',
    });
    expect(patterns.map((p) => p.type)).toEqual(['include', 'exclude']);
  });

  it('errors name the file and the line', () => {
    const error = errorOf(() =>
      parsePatternFile(bytes('ok\n\n# c\n  bad[\nlater\n'), 'sub/.pxarexclude'),
    );
    expect(error.code).toBe('PATTERN_INVALID');
    expect(error.message).toContain('sub/.pxarexclude line 4');
    expect(error.message).toContain('"bad["');
    expect(error.details).toMatchObject({ file: 'sub/.pxarexclude', line: 4, offset: 3 });
  });

  it('onError reports bad lines and skips them, as PBS does', () => {
    const errors: BurrowError[] = [];
    const patterns = parsePatternFile(bytes('a\nb\\\nc\n[\n'), 'f', {
      onError: (e) => errors.push(e),
    });
    expect(patterns.map((p) => p.source)).toEqual(['a', 'c']);
    expect(errors.map((e) => e.details.line)).toEqual([2, 4]);
  });
});

describe('formatExcludeLines (.pxarexclude-cli)', () => {
  it('writes ! for include, the glob, / for dir-only', () => {
    const patterns = ['!a/', 'b//', '/c', '*.tmp', '//', '!x'].map((l) => parsePattern(l));
    expect(new TextDecoder().decode(formatExcludeLines(patterns))).toBe(
      '!a/\nb/\n/c\n*.tmp\n/\n!x\n',
    );
    expect(formatExcludeLines([])).toEqual(new Uint8Array(0));
  });
});

interface TreeDir {
  [name: string]: TreeDir | string;
}

/** A toy archiver walk: reads .pxarexclude per directory, skips excluded entries, never descends into them. */
function archiveWalk(tree: TreeDir, cli: MatchPattern[] = []): string[] {
  const stack = new MatchStack(cli);
  const kept: string[] = [];
  const walk = (dir: string, node: TreeDir): void => {
    const exclude = node['.pxarexclude'];
    const patterns =
      typeof exclude === 'string' ? parsePatternFile(bytes(exclude), `${dir}/.pxarexclude`) : [];
    stack.push(dir, patterns);
    for (const name of Object.keys(node).sort()) {
      const child = node[name]!;
      const path = dir === '' ? name : `${dir}/${name}`;
      const isDir = typeof child !== 'string';
      if (stack.match(path, isDir) === 'exclude') continue;
      kept.push(path);
      if (typeof child !== 'string') walk(path, child);
    }
    stack.pop();
  };
  walk('', tree);
  expect(stack.depth).toBe(0);
  return kept;
}

describe('MatchStack: per-directory .pxarexclude', () => {
  it('the example of the PBS client documentation', () => {
    const tree: TreeDir = {
      '.pxarexclude': '/subfolder0/file1\n/subfolder1/*\n!/subfolder1/file2\n',
      subfolder0: { file0: '', file1: '', file2: '', file3: '', '.pxarexclude': 'file3\n' },
      subfolder1: { file0: '', file1: '', file2: '', file3: '' },
    };
    // The documented restore result: subfolder0 keeps file0, file2, .pxarexclude; subfolder1 only file2.
    expect(archiveWalk(tree)).toEqual([
      '.pxarexclude',
      'subfolder0',
      'subfolder0/.pxarexclude',
      'subfolder0/file0',
      'subfolder0/file2',
      'subfolder1',
      'subfolder1/file2',
    ]);
  });

  it('an excluded directory is not read, so ! patterns for its children cannot bring them back', () => {
    const tree: TreeDir = {
      '.pxarexclude': 'cache/\n!cache/keep\n',
      cache: { keep: '', '.pxarexclude': '!keep\n' },
      other: { keep: '' },
    };
    expect(archiveWalk(tree)).toEqual(['.pxarexclude', 'other', 'other/keep']);
  });

  it('a leading / in a subdirectory list anchors at that directory', () => {
    const tree: TreeDir = {
      x: '',
      sub: { '.pxarexclude': '/x\n', x: '', deeper: { x: '' } },
    };
    expect(archiveWalk(tree)).toEqual([
      'sub',
      'sub/.pxarexclude',
      'sub/deeper',
      'sub/deeper/x',
      'x',
    ]);
  });

  it('patterns from a subdirectory list see paths relative to it', () => {
    const stack = new MatchStack();
    stack.push('a/b', [parsePattern('b/x')]);
    expect(stack.match('a/b/x', false)).toBeUndefined();
    expect(stack.match('a/b/b/x', false)).toBe('exclude');
    expect(stack.match('a/b', true)).toBeUndefined(); // never the directory itself
    expect(stack.match('a/bb/x', false)).toBeUndefined(); // nor a sibling sharing a prefix
    stack.pop();
    expect(stack.match('a/b/b/x', false)).toBeUndefined();
    expect(codeOf(() => stack.pop())).toBe('INVALID_ARGUMENT');
  });

  it('deeper lists win over the command line and the root list', () => {
    const cli = [parsePattern('*.tmp')];
    const tree: TreeDir = {
      'a.tmp': '',
      sub: { '.pxarexclude': '!keep.tmp\n', 'keep.tmp': '', 'b.tmp': '' },
      other: { 'keep.tmp': '' },
    };
    expect(archiveWalk(tree, cli)).toEqual(['other', 'sub', 'sub/.pxarexclude', 'sub/keep.tmp']);
  });
});

/** A toy extraction walk over an archive tree, following the ExtractSelector protocol. */
function extractWalk(tree: TreeDir, lines: string[]): { selected: string[]; eager: string[] } {
  const selector = new ExtractSelector(lines.map((l) => parsePattern(l, 'include')));
  const selected: string[] = [];
  const eager: string[] = [];
  const walk = (dir: string, node: TreeDir): void => {
    for (const name of Object.keys(node).sort()) {
      const child = node[name]!;
      const path = dir === '' ? name : `${dir}/${name}`;
      const isDir = typeof child !== 'string';
      const decision = selector.select(path, isDir);
      if (decision.selected) selected.push(path);
      if (decision.createNow) eager.push(path);
      if (typeof child !== 'string') {
        selector.enter(decision);
        walk(path, child);
        selector.leave();
      }
    }
  };
  walk('', tree);
  return { selected, eager };
}

describe('ExtractSelector: restore --pattern semantics', () => {
  const tree: TreeDir = {
    etc: { 'a.conf': '', secret: { key: '', ok: '' }, sub: { 'b.conf': '' } },
    usr: { 'c.conf': '', x: '' },
  };

  it('no patterns: everything', () => {
    const r = extractWalk(tree, []);
    expect(r.selected).toHaveLength(10);
    expect(r.eager).toEqual(['etc', 'etc/secret', 'etc/sub', 'usr']);
  });

  it('an included directory brings its subtree', () => {
    const r = extractWalk(tree, ['etc']);
    expect(r.selected).toEqual([
      'etc',
      'etc/a.conf',
      'etc/secret',
      'etc/secret/key',
      'etc/secret/ok',
      'etc/sub',
      'etc/sub/b.conf',
    ]);
    // etc itself is created lazily (its parent, the root, is not selected); its subdirs eagerly.
    expect(r.eager).toEqual(['etc/secret', 'etc/sub']);
  });

  it('! excludes, and a later include picks a file out of an excluded directory', () => {
    expect(extractWalk(tree, ['etc', '!etc/secret']).selected).toEqual([
      'etc',
      'etc/a.conf',
      'etc/sub',
      'etc/sub/b.conf',
    ]);
    const r = extractWalk(tree, ['etc', '!etc/secret', 'etc/secret/ok']);
    expect(r.selected).toContain('etc/secret/ok');
    expect(r.selected).not.toContain('etc/secret/key');
    expect(r.eager).not.toContain('etc/secret');
  });

  it('only ! patterns select nothing (the default flips to "nothing" once any pattern is given)', () => {
    expect(extractWalk(tree, ['!usr']).selected).toEqual([]);
  });

  it('globs select files anywhere', () => {
    expect(extractWalk(tree, ['*.conf']).selected).toEqual([
      'etc/a.conf',
      'etc/sub/b.conf',
      'usr/c.conf',
    ]);
    expect(extractWalk(tree, ['/etc/**/*.conf']).selected).toEqual([
      'etc/a.conf',
      'etc/sub/b.conf',
    ]);
  });

  it('leave() without enter() is an error', () => {
    expect(codeOf(() => new ExtractSelector([]).leave())).toBe('INVALID_ARGUMENT');
  });
});

// ---- An independent oracle: patterns built from a structure, rendered both as pattern bytes and as a regex.

type Atom =
  | { t: 'lit'; b: number; escape: boolean }
  | { t: 'any' }
  | { t: 'star' }
  | { t: 'class'; negated: '' | '!' | '^'; members: Array<[number, number]> };
type Segment = { t: 'dstar' } | { t: 'atoms'; atoms: Atom[] };
interface Structure {
  anchored: boolean;
  dirOnly: boolean;
  segments: Segment[];
}

const LIT_BYTES = [0x61, 0x62, 0x2e, 0xe9, 0x2a, 0x3f, 0x5b, 0x21, 0x5d];
const SPECIAL = new Set([0x2a, 0x3f, 0x5b, 0x21, 0x5c]);
const CLASS_BYTES = [0x61, 0x62, 0x63, 0x2e, 0xe9, 0x2f];

const atomArb: fc.Arbitrary<Atom> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('lit' as const),
      b: fc.constantFrom(...LIT_BYTES),
      escape: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ t: 'any' as const }) },
  { weight: 2, arbitrary: fc.constant({ t: 'star' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('class' as const),
      negated: fc.constantFrom('' as const, '!' as const, '^' as const),
      members: fc.array(
        fc
          .tuple(fc.constantFrom(...CLASS_BYTES), fc.constantFrom(...CLASS_BYTES), fc.boolean())
          .map(([a, b, range]): [number, number] => (range ? [a, b] : [a, a])),
        { minLength: 1, maxLength: 3 },
      ),
    }),
  },
);

const segmentArb: fc.Arbitrary<Segment> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ t: 'dstar' as const }) },
  {
    weight: 4,
    arbitrary: fc.array(atomArb, { minLength: 1, maxLength: 4 }).map((atoms): Segment => {
      // Adjacent stars are one star; a segment of stars alone would be read as `**`.
      const merged = atoms.filter((a, i) => !(a.t === 'star' && atoms[i - 1]?.t === 'star'));
      return { t: 'atoms', atoms: merged };
    }),
  },
);

const structureArb: fc.Arbitrary<Structure> = fc.record({
  anchored: fc.boolean(),
  dirOnly: fc.boolean(),
  segments: fc.array(segmentArb, { minLength: 1, maxLength: 4 }),
});

function render(s: Structure): Uint8Array {
  const out: number[] = [];
  if (s.anchored) out.push(0x2f);
  s.segments.forEach((seg, k) => {
    if (k > 0) out.push(0x2f);
    if (seg.t === 'dstar') {
      out.push(0x2a, 0x2a);
      return;
    }
    for (const a of seg.atoms) {
      if (a.t === 'lit') {
        if (a.escape || SPECIAL.has(a.b)) out.push(0x5c);
        out.push(a.b);
      } else if (a.t === 'any') out.push(0x3f);
      else if (a.t === 'star') out.push(0x2a);
      else {
        out.push(0x5b);
        if (a.negated !== '') out.push(a.negated.charCodeAt(0));
        for (const [lo, hi] of a.members) {
          out.push(0x5c, lo);
          if (lo !== hi) out.push(0x2d, 0x5c, hi);
        }
        out.push(0x5d);
      }
    }
  });
  if (s.dirOnly) out.push(0x2f);
  return Uint8Array.from(out);
}

const hex = (b: number): string => `\\x${b.toString(16).padStart(2, '0')}`;

function oracleRegex(s: Structure): RegExp {
  let body = '';
  let afterDirs = false;
  s.segments.forEach((seg, k) => {
    const sep = k === 0 || afterDirs ? '' : '/';
    const last = k === s.segments.length - 1;
    if (seg.t === 'dstar') {
      body += sep + (last ? '[\\s\\S]*' : '(?:[\\s\\S]*/)?');
      afterDirs = !last;
      return;
    }
    afterDirs = false;
    body += sep;
    for (const a of seg.atoms) {
      if (a.t === 'lit') body += hex(a.b);
      else if (a.t === 'any') body += '[^/]';
      else if (a.t === 'star') body += '[^/]*';
      else {
        const set = new Set<number>();
        for (const [lo, hi] of a.members)
          for (let v = Math.min(lo, hi); v <= Math.max(lo, hi); v++) set.add(v);
        set.delete(0x2f);
        const chars = [...set].map(hex).join('');
        if (a.negated !== '') body += `[^${chars}/]`;
        else body += chars === '' ? '(?!)' : `[${chars}]`;
      }
    }
  });
  return new RegExp(s.anchored ? `^/${body}$` : `^(?:[\\s\\S]*/)?${body}$`);
}

const pathArb = fc
  .array(
    fc.array(fc.constantFrom(0x61, 0x62, 0x2e, 0xe9, 0x2a, 0x3f, 0x5b, 0x21, 0x5d, 0x63), {
      minLength: 1,
      maxLength: 3,
    }),
    {
      minLength: 1,
      maxLength: 5,
    },
  )
  .map((comps) => {
    const out: number[] = [];
    comps.forEach((c, i) => {
      if (i > 0) out.push(0x2f);
      out.push(...c);
    });
    return Uint8Array.from(out);
  });

describe('properties', () => {
  it('agrees with a regex built independently from the same structure', () => {
    fc.assert(
      fc.property(
        structureArb,
        fc.array(fc.tuple(pathArb, fc.boolean()), { minLength: 1, maxLength: 8 }),
        (s, paths) => {
          const pattern = parsePattern(render(s));
          const re = oracleRegex(s);
          expect(pattern.anchored).toBe(s.anchored);
          expect(pattern.dirOnly).toBe(s.dirOnly);
          for (const [path, isDir] of paths) {
            const expected = (!s.dirOnly || isDir) && re.test(`/${latin1(path)}`);
            expect([latin1(render(s)), latin1(path), isDir, pattern.matches(path, isDir)]).toEqual([
              latin1(render(s)),
              latin1(path),
              isDir,
              expected,
            ]);
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it('agrees with the oracle on paths built to match (star-heavy, deep)', () => {
    // Paths over a tiny alphabet so that star/double-star patterns actually match often.
    const smallPath = fc
      .array(fc.array(fc.constantFrom(0x61, 0x62), { minLength: 1, maxLength: 3 }), {
        minLength: 1,
        maxLength: 6,
      })
      .map((comps) => Uint8Array.from(comps.flatMap((c, i) => (i > 0 ? [0x2f, ...c] : c))));
    const smallAtom = fc.oneof(
      fc.constantFrom<Atom>(
        { t: 'lit', b: 0x61, escape: false },
        { t: 'lit', b: 0x62, escape: false },
        { t: 'any' },
        { t: 'star' },
      ),
    );
    const smallSegment: fc.Arbitrary<Segment> = fc.oneof(
      fc.constant({ t: 'dstar' as const }),
      fc.array(smallAtom, { minLength: 1, maxLength: 3 }).map((atoms): Segment => ({
        t: 'atoms',
        atoms: atoms.filter((a, i) => !(a.t === 'star' && atoms[i - 1]?.t === 'star')),
      })),
    );
    const smallStructure = fc.record({
      anchored: fc.boolean(),
      dirOnly: fc.constant(false),
      segments: fc.array(smallSegment, { minLength: 1, maxLength: 4 }),
    });
    let hits = 0;
    fc.assert(
      fc.property(
        smallStructure,
        fc.array(smallPath, { minLength: 1, maxLength: 10 }),
        (s, paths) => {
          const pattern = parsePattern(render(s));
          const re = oracleRegex(s);
          for (const path of paths) {
            const expected = re.test(`/${latin1(path)}`);
            if (expected) hits++;
            expect([latin1(render(s)), latin1(path), pattern.matches(path, false)]).toEqual([
              latin1(render(s)),
              latin1(path),
              expected,
            ]);
          }
        },
      ),
      { numRuns: 400 },
    );
    expect(hits).toBeGreaterThan(100);
  });

  it('matching time stays linear on adversarial patterns', () => {
    const longName = 'a'.repeat(4000);
    const deep = Array.from({ length: 400 }, () => 'a').join('/');
    const cases: Array<[string, string]> = [
      [`${'*a'.repeat(40)}b`, longName],
      [`${'**a'.repeat(40)}b`, longName],
      [`${'**/a/'.repeat(30)}b`, deep],
      [`/${'**/'.repeat(50)}b`, deep],
      [`${'a*'.repeat(30)}[!a]`, longName],
      [`${'?'.repeat(50)}*b`, longName],
    ];
    for (const [pattern, path] of cases) {
      const p = parsePattern(pattern);
      const t0 = performance.now();
      expect(p.matches(path, false)).toBe(false);
      expect(performance.now() - t0).toBeLessThan(1000); // backtracking would take far longer
    }
  });

  it('random patterns against random paths terminate fast', () => {
    const piece = fc.constantFrom('*', '**', 'a', 'b', '/', '?', '[ab]', '[!a]');
    const patternArb = fc.array(piece, { minLength: 1, maxLength: 40 }).map((p) => p.join(''));
    const longPath = fc
      .array(fc.array(fc.constantFrom('a', 'b'), { minLength: 1, maxLength: 60 }), {
        minLength: 1,
        maxLength: 20,
      })
      .map((comps) => comps.map((c) => c.join('')).join('/'));
    let worst = 0;
    fc.assert(
      fc.property(patternArb, longPath, (pattern, path) => {
        const p = parsePattern(pattern); // every piece is valid syntax
        const t0 = performance.now();
        p.matches(path, true);
        worst = Math.max(worst, performance.now() - t0);
      }),
      { numRuns: 300 },
    );
    expect(worst).toBeLessThan(1000);
  });
});
