/**
 * Match patterns as PBS uses them (its `pathpatterns` crate): `--exclude` and `.pxarexclude`
 * when archiving, `--pattern` when extracting or restoring, and `find` globs over a catalog.
 * The user-facing rules and every place we differ from PBS on purpose are written down in
 * docs (pattern section); the short form:
 *
 * - A line is a glob over path bytes. A leading `!` flips the list's default type (exclusion
 *   lists: exclude → include; restore lists: include → exclude). Trailing `/`s make the pattern
 *   match directories only.
 * - `*` and `?` never match `/`; `**` bounded by `/` or the pattern's ends matches across
 *   components (`a/**\/b` also matches `a/b`); elsewhere `**` is just `*`. `[...]` is a byte
 *   class (`!` or `^` negates, ranges, `[:alpha:]`-style names); classes never match `/`.
 *   `\` escapes the next byte. Everything is bytewise: `?` is one byte, not one character.
 * - A path is matched as "/" + path. A pattern starting with `/` must match all of that (it is
 *   anchored at the list's base directory); any other pattern may match any suffix that starts
 *   at a component boundary, so `b/c` matches `x/b/c` too (PBS does this, git does not).
 * - In a list the last matching pattern decides.
 *
 * Matching is a Thompson-style NFA simulation over the bytes, so its cost is at most
 * (pattern nodes × path bytes), whatever the pattern: no backtracking blow-up on `*a*a*a…`.
 */
import { BurrowError } from '../lib/errors.js';

export type MatchType = 'include' | 'exclude';

/** A path relative to the match base: components joined by '/', no leading or trailing '/'. */
export type PathInput = Uint8Array | string;

const SLASH = 0x2f;
const BACKSLASH = 0x5c;
const STAR = 0x2a;
const QUESTION = 0x3f;
const BANG = 0x21;
const CARET = 0x5e;
const OPEN = 0x5b;
const CLOSE = 0x5d;
const COLON = 0x3a;
const DASH = 0x2d;
const HASH = 0x23;
const NEWLINE = 0x0a;

// NFA node kinds. The accepting state is the index one past the last node.
const K_BYTE = 0; // consume args[i]
const K_ANY = 1; // consume one byte that is not '/'
const K_CLASS = 2; // consume one byte in classes[args[i]]
const K_STAR = 3; // ε → i+1; consume a non-'/' byte and stay
const K_STARSTAR = 4; // ε → i+1; consume any byte and stay
const K_DIRS = 5; // `**/`: ε → i+1 (the loop) and ε → i+2 (matched nothing)
const K_DIRS_LOOP = 6; // consume any byte and stay; on '/' also go to i+1

const utf8 = new TextEncoder();
const lossy = new TextDecoder('utf-8', { fatal: false });

function toBytes(value: PathInput): Uint8Array {
  return typeof value === 'string' ? utf8.encode(value) : value;
}

function invalid(source: string, message: string, offset: number): BurrowError {
  return new BurrowError(
    'PATTERN_INVALID',
    `invalid pattern ${JSON.stringify(source)}: ${message} at byte ${offset}`,
    { details: { pattern: source, offset } },
  );
}

// POSIX bracket names, ASCII only (paths are bytes; locales play no part).
const NAMED_CLASSES: Readonly<Record<string, (b: number) => boolean>> = {
  alnum: (b) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a),
  alpha: (b) => (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a),
  blank: (b) => b === 0x20 || b === 0x09,
  cntrl: (b) => b < 0x20 || b === 0x7f,
  digit: (b) => b >= 0x30 && b <= 0x39,
  graph: (b) => b >= 0x21 && b <= 0x7e,
  lower: (b) => b >= 0x61 && b <= 0x7a,
  print: (b) => b >= 0x20 && b <= 0x7e,
  punct: (b) =>
    (b >= 0x21 && b <= 0x2f) ||
    (b >= 0x3a && b <= 0x40) ||
    (b >= 0x5b && b <= 0x60) ||
    (b >= 0x7b && b <= 0x7e),
  space: (b) => b === 0x20 || (b >= 0x09 && b <= 0x0d),
  upper: (b) => b >= 0x41 && b <= 0x5a,
  xdigit: (b) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66),
};

/**
 * A compiled glob over a whole byte string (no suffix search, no leading-'/' convention).
 * MatchPattern builds on it; it is public for callers that need plain whole-string globbing.
 */
export class Glob {
  readonly source: string;
  /** The node program; see the K_* kinds. */
  private readonly kinds: Uint8Array;
  private readonly args: Int32Array;
  private readonly classes: readonly Uint8Array[];
  /** Whether some node can consume a '/'. If not, only a path's last component can match. */
  readonly spansSlash: boolean;
  /** Whether the pattern starts with a literal '/'. */
  readonly startsWithSlash: boolean;
  /** Literal bytes every match must end with (a cheap filter before the NFA). */
  private readonly tail: Uint8Array;
  /** Literal bytes every match must contain (when that is worth checking). */
  private readonly inner: Uint8Array | undefined;
  // Scratch state for one run; JS is single-threaded and runs never nest.
  private readonly mark: Int32Array;
  private readonly listA: Int32Array;
  private readonly listB: Int32Array;
  private readonly stack: Int32Array;
  private gen = 0;

  /**
   * @param pattern the glob bytes (no `!`, trailing slashes already removed by the caller).
   * @param source the text to name in errors, and `offsetBase` is added to error positions so
   *   they point into that text.
   */
  constructor(pattern: PathInput, source?: string, offsetBase = 0) {
    const bytes = toBytes(pattern);
    this.source = source ?? (typeof pattern === 'string' ? pattern : lossy.decode(pattern));
    const kinds: number[] = [];
    const args: number[] = [];
    const classes: Uint8Array[] = [];
    const fail = (message: string, at: number): never => {
      throw invalid(this.source, message, at + offsetBase);
    };
    if (bytes.length === 0) fail('empty pattern', 0);

    // Whether the glob so far ends at a component boundary (start, a literal '/', or `**/`).
    const atBoundary = (): boolean => {
      const last = kinds.length - 1;
      return (
        last < 0 || kinds[last] === K_DIRS_LOOP || (kinds[last] === K_BYTE && args[last] === SLASH)
      );
    };

    let i = 0;
    while (i < bytes.length) {
      const c = bytes[i]!;
      if (c === 0) fail('NUL byte', i);
      if (c === BACKSLASH) {
        if (i + 1 >= bytes.length) fail('trailing backslash', i);
        const lit = bytes[i + 1]!;
        if (lit === 0) fail('NUL byte', i + 1);
        kinds.push(K_BYTE);
        args.push(lit);
        i += 2;
      } else if (c === QUESTION) {
        kinds.push(K_ANY);
        args.push(0);
        i++;
      } else if (c === STAR) {
        let end = i;
        while (end < bytes.length && bytes[end] === STAR) end++;
        const atEnd = end === bytes.length;
        const slashNext =
          !atEnd &&
          (bytes[end] === SLASH || (bytes[end] === BACKSLASH && bytes[end + 1] === SLASH));
        // `**` counts only as a whole component; git and PBS read `a**b` as `a*b`.
        const double = end - i >= 2 && atBoundary() && (atEnd || slashNext);
        if (double && atEnd) {
          kinds.push(K_STARSTAR);
          args.push(0);
          i = end;
        } else if (double) {
          // Fold the following '/' in: `**/` is "nothing, or anything ending in '/'".
          kinds.push(K_DIRS, K_DIRS_LOOP);
          args.push(0, 0);
          i = end + (bytes[end] === SLASH ? 1 : 2);
        } else {
          if (kinds[kinds.length - 1] !== K_STAR) {
            kinds.push(K_STAR);
            args.push(0);
          }
          i = end;
        }
      } else if (c === OPEN) {
        const [table, next] = parseClass(bytes, i, fail);
        kinds.push(K_CLASS);
        args.push(classes.length);
        classes.push(table);
        i = next;
      } else {
        kinds.push(K_BYTE);
        args.push(c);
        i++;
      }
    }

    this.kinds = Uint8Array.from(kinds);
    this.args = Int32Array.from(args);
    this.classes = classes;
    this.spansSlash = kinds.some(
      (k, n) => k === K_STARSTAR || k === K_DIRS || (k === K_BYTE && args[n] === SLASH),
    );
    this.startsWithSlash = kinds[0] === K_BYTE && args[0] === SLASH;
    let t = kinds.length;
    while (t > 0 && kinds[t - 1] === K_BYTE) t--;
    this.tail = Uint8Array.from(args.slice(t));
    // The longest literal run must occur somewhere: rejects most paths for `**/x/**`-like globs.
    let best: [number, number] = [0, 0];
    for (let a = 0; a < kinds.length;) {
      let z = a;
      while (z < kinds.length && kinds[z] === K_BYTE) z++;
      if (z - a > best[1] - best[0]) best = [a, z];
      a = z + 1;
    }
    this.inner =
      best[1] - best[0] >= 2 && best[1] !== kinds.length
        ? Uint8Array.from(args.slice(...best))
        : undefined;
    const states = kinds.length + 1;
    this.mark = new Int32Array(states);
    this.listA = new Int32Array(states);
    this.listB = new Int32Array(states);
    this.stack = new Int32Array(states);
  }

  /** Whether the glob matches all of `text`. */
  matches(text: PathInput): boolean {
    const bytes = toBytes(text);
    return this.run(bytes, 0, false, false);
  }

  /**
   * Run over the virtual text ("/" if `leadingSlash`) + bytes[start..]. With `suffixes`, a match
   * may also begin right after any '/' of that text: all suffix candidates in one pass.
   * @internal
   */
  run(bytes: Uint8Array, start: number, leadingSlash: boolean, suffixes: boolean): boolean {
    if (!this.endsWithTail(bytes, start, leadingSlash)) return false;
    if (this.inner !== undefined && !contains(bytes, start, leadingSlash, this.inner)) return false;
    const kinds = this.kinds;
    const args = this.args;
    const accept = kinds.length;
    let cur = this.listA;
    let next = this.listB;
    let curLen = 0;
    let nextLen = 0;

    this.bumpGen();
    curLen = this.addClosure(0, cur, curLen);
    const total = bytes.length - start + (leadingSlash ? 1 : 0);
    for (let p = 0; p < total; p++) {
      if (curLen === 0 && !suffixes) return false;
      const c = leadingSlash ? (p === 0 ? SLASH : bytes[start + p - 1]!) : bytes[start + p]!;
      this.bumpGen();
      nextLen = 0;
      for (let n = 0; n < curLen; n++) {
        const s = cur[n]!;
        if (s === accept) continue;
        switch (kinds[s]!) {
          case K_BYTE:
            if (c === args[s]) nextLen = this.addClosure(s + 1, next, nextLen);
            break;
          case K_ANY:
            if (c !== SLASH) nextLen = this.addClosure(s + 1, next, nextLen);
            break;
          case K_CLASS:
            if (this.classes[args[s]!]![c] === 1) nextLen = this.addClosure(s + 1, next, nextLen);
            break;
          case K_STAR:
            if (c !== SLASH) nextLen = this.addClosure(s, next, nextLen);
            break;
          case K_STARSTAR:
            nextLen = this.addClosure(s, next, nextLen);
            break;
          case K_DIRS_LOOP:
            nextLen = this.addClosure(s, next, nextLen);
            if (c === SLASH) nextLen = this.addClosure(s + 1, next, nextLen);
            break;
          default:
            // K_DIRS only has ε-edges, already followed by addClosure.
            break;
        }
      }
      if (suffixes && c === SLASH) nextLen = this.addClosure(0, next, nextLen);
      const swap = cur;
      cur = next;
      next = swap;
      curLen = nextLen;
    }
    for (let n = 0; n < curLen; n++) if (cur[n] === accept) return true;
    return false;
  }

  private bumpGen(): void {
    if (this.gen >= 0x3fffffff) {
      this.mark.fill(0);
      this.gen = 0;
    }
    this.gen++;
  }

  /** Add `state` and everything reachable by ε-edges to `list` (deduplicated by generation). */
  private addClosure(state: number, list: Int32Array, length: number): number {
    const kinds = this.kinds;
    const mark = this.mark;
    const gen = this.gen;
    const stack = this.stack;
    let sp = 0;
    let len = length;
    if (mark[state] === gen) return len;
    mark[state] = gen;
    stack[sp++] = state;
    while (sp > 0) {
      const s = stack[--sp]!;
      list[len++] = s;
      const k = s < kinds.length ? kinds[s] : -1;
      if (k === K_STAR || k === K_STARSTAR || k === K_DIRS) {
        if (mark[s + 1] !== gen) {
          mark[s + 1] = gen;
          stack[sp++] = s + 1;
        }
      }
      if (k === K_DIRS && mark[s + 2] !== gen) {
        mark[s + 2] = gen;
        stack[sp++] = s + 2;
      }
    }
    return len;
  }

  private endsWithTail(bytes: Uint8Array, start: number, leadingSlash: boolean): boolean {
    const tail = this.tail;
    const length = bytes.length - start + (leadingSlash ? 1 : 0);
    if (tail.length > length) return false;
    for (let k = 1; k <= tail.length; k++) {
      const pos = bytes.length - k;
      const b = pos >= start ? bytes[pos] : SLASH; // only reachable with leadingSlash
      if (b !== tail[tail.length - k]) return false;
    }
    return true;
  }
}

/** Whether the virtual text ("/" if `leadingSlash`) + bytes[start..] contains `needle`. */
function contains(
  bytes: Uint8Array,
  start: number,
  leadingSlash: boolean,
  needle: Uint8Array,
): boolean {
  const first = needle[0]!;
  let from = start;
  if (leadingSlash && first === SLASH) {
    // The needle may begin on the virtual '/'.
    let k = 1;
    while (k < needle.length && start + k - 1 < bytes.length && bytes[start + k - 1] === needle[k])
      k++;
    if (k === needle.length) return true;
  }
  for (;;) {
    const at = bytes.indexOf(first, from);
    if (at < 0 || at + needle.length > bytes.length) return false;
    let k = 1;
    while (k < needle.length && bytes[at + k] === needle[k]) k++;
    if (k === needle.length) return true;
    from = at + 1;
  }
}

/** Parse `[...]` starting at `open`; returns the 256-entry membership table and the next index. */
function parseClass(
  bytes: Uint8Array,
  open: number,
  fail: (message: string, at: number) => never,
): [Uint8Array, number] {
  const table = new Uint8Array(256);
  let i = open + 1;
  let negated = false;
  if (bytes[i] === BANG || bytes[i] === CARET) {
    negated = true;
    i++;
  }
  const readMember = (): number => {
    const b = bytes[i];
    if (b === undefined) return fail('unterminated character class', open);
    if (b === 0) return fail('NUL byte', i);
    if (b === BACKSLASH) {
      const lit = bytes[i + 1];
      if (lit === undefined) return fail('trailing backslash', i);
      if (lit === 0) return fail('NUL byte', i + 1);
      i += 2;
      return lit;
    }
    i++;
    return b;
  };
  let first = true;
  for (;;) {
    const b = bytes[i];
    if (b === undefined) fail('unterminated character class', open);
    // A ']' right after '[' (or '[!') is a member, as in POSIX and git.
    if (b === CLOSE && !first) {
      i++;
      break;
    }
    first = false;
    if (b === OPEN && bytes[i + 1] === COLON) {
      let end = i + 2;
      while (end + 1 < bytes.length && !(bytes[end] === COLON && bytes[end + 1] === CLOSE)) end++;
      if (end + 1 >= bytes.length) fail('unterminated character class name', i);
      const name = String.fromCharCode(...bytes.subarray(i + 2, end));
      const test = Object.hasOwn(NAMED_CLASSES, name) ? NAMED_CLASSES[name] : undefined;
      if (test === undefined) fail(`unknown character class name [:${name}:]`, i);
      for (let v = 0; v < 256; v++) if (test(v)) table[v] = 1;
      i = end + 2;
      continue;
    }
    const lo = readMember();
    // 'a-z' is a range unless the '-' is the last member ("[a-]" holds 'a' and '-').
    if (bytes[i] === DASH && bytes[i + 1] !== undefined && bytes[i + 1] !== CLOSE) {
      i++;
      const hi = readMember();
      // PBS accepts reversed ranges as if they were written the right way round.
      const from = Math.min(lo, hi);
      const to = Math.max(lo, hi);
      for (let v = from; v <= to; v++) table[v] = 1;
    } else {
      table[lo] = 1;
    }
  }
  if (negated) for (let v = 0; v < 256; v++) table[v] = 1 - table[v]!;
  // A class stands for one byte of a file name, which can never be '/'.
  table[SLASH] = 0;
  return [table, i];
}

/** One parsed pattern line. Build it with parsePattern or parsePatternFile. */
export class MatchPattern {
  /** What a match means. */
  readonly type: MatchType;
  /** The line as given, for messages (invalid UTF-8 shown as U+FFFD). */
  readonly source: string;
  /** The line as given, bytes. */
  readonly bytes: Uint8Array;
  /** The glob part: without the leading `!` and the trailing slashes. */
  readonly glob: Glob;
  readonly globBytes: Uint8Array;
  /** Matches directories only (the line ended in `/`). */
  readonly dirOnly: boolean;
  /** Must match the whole path from the list's base directory (the glob starts with `/`). */
  readonly anchored: boolean;

  private constructor(
    type: MatchType,
    bytes: Uint8Array,
    source: string,
    globBytes: Uint8Array,
    glob: Glob,
    dirOnly: boolean,
  ) {
    this.type = type;
    this.bytes = bytes;
    this.source = source;
    this.globBytes = globBytes;
    this.glob = glob;
    this.dirOnly = dirOnly;
    this.anchored = glob.startsWithSlash;
  }

  /** @internal use parsePattern */
  static parse(line: PathInput, defaultType: MatchType): MatchPattern {
    const bytes = toBytes(line);
    const source = typeof line === 'string' ? line : lossy.decode(line);
    let type = defaultType;
    let body = bytes;
    let offset = 0;
    if (body[0] === BANG) {
      type = defaultType === 'include' ? 'exclude' : 'include';
      body = body.subarray(1);
      offset = 1;
    }
    if (body.length === 0) throw invalid(source, 'empty pattern', offset);
    let end = body.length;
    while (end > 0 && body[end - 1] === SLASH) end--;
    const dirOnly = end < body.length;
    // A line of only slashes keeps one: it then names the base directory itself.
    const globBytes = end === 0 ? body.subarray(0, 1) : body.subarray(0, end);
    const glob = new Glob(globBytes, source, offset);
    return new MatchPattern(type, bytes, source, globBytes, glob, dirOnly);
  }

  /** Does this pattern match `path` (relative to the list's base directory)? */
  matches(path: PathInput, isDir: boolean): boolean {
    const bytes = checkPath(path);
    return this.matchesFrom(bytes, 0, isDir);
  }

  /**
   * Match the part of `bytes` from `start` on (a path below the base directory).
   * @internal used by MatchList and MatchStack, which have checked the path.
   */
  matchesFrom(bytes: Uint8Array, start: number, isDir: boolean): boolean {
    if (this.dirOnly && !isDir) return false;
    if (start >= bytes.length) return false; // the base directory itself is never matched
    const glob = this.glob;
    if (glob.spansSlash) return glob.run(bytes, start, true, !glob.startsWithSlash);
    // A glob that cannot consume '/' can only match the last component.
    let base = bytes.lastIndexOf(SLASH);
    base = base < start ? start : base + 1;
    return glob.run(bytes, base, false, false);
  }

  /**
   * The line as PBS writes it into `.pxarexclude-cli`: `!` for include, the glob, `/` when
   * directory-only. (Exclusion-list convention; for restore lists the `!` means the opposite.)
   */
  toExcludeLine(): Uint8Array {
    const parts: number[] = [];
    if (this.type === 'include') parts.push(BANG);
    parts.push(...this.globBytes);
    if (this.dirOnly && parts[parts.length - 1] !== SLASH) parts.push(SLASH);
    return Uint8Array.from(parts);
  }
}

function checkPath(path: PathInput): Uint8Array {
  const bytes = toBytes(path);
  if (bytes[0] === SLASH || bytes[bytes.length - 1] === SLASH) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `match path must be relative, without leading or trailing '/': ${JSON.stringify(lossy.decode(bytes))}`,
    );
  }
  return bytes;
}

/**
 * Parse one pattern line. A leading `!` flips `defaultType`: use 'exclude' for `--exclude` and
 * exclusion files, 'include' for restore `--pattern` and catalog `find`. The line is not trimmed.
 * Throws PATTERN_INVALID (details: pattern, offset) on bad syntax.
 */
export function parsePattern(line: PathInput, defaultType: MatchType = 'exclude'): MatchPattern {
  return MatchPattern.parse(line, defaultType);
}

export interface PatternFileOptions {
  /** Default 'exclude' (a `.pxarexclude`); 'include' for a restore `--files-from` list. */
  readonly defaultType?: MatchType;
  /**
   * Called for each bad line, which is then skipped (PBS logs and skips bad `.pxarexclude`
   * lines). Without it the first bad line throws.
   */
  readonly onError?: (error: BurrowError) => void;
}

// Rust's is_ascii_whitespace, which PBS trims with: no vertical tab.
const isTrimmed = (b: number): boolean =>
  b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0c || b === 0x0d;

/**
 * Parse a pattern file such as `.pxarexclude`: one pattern per '\n'-separated line, each line
 * trimmed of ASCII whitespace at both ends; empty lines and lines starting with `#` are skipped.
 * Errors are PATTERN_INVALID naming the file and the 1-based line (details: file, line, offset).
 */
export function parsePatternFile(
  content: Uint8Array,
  fileName: string,
  options: PatternFileOptions = {},
): MatchPattern[] {
  const defaultType = options.defaultType ?? 'exclude';
  const patterns: MatchPattern[] = [];
  let lineStart = 0;
  let lineNo = 0;
  while (lineStart <= content.length) {
    let lineEnd = content.indexOf(NEWLINE, lineStart);
    if (lineEnd < 0) lineEnd = content.length;
    lineNo++;
    let s = lineStart;
    let e = lineEnd;
    while (s < e && isTrimmed(content[s]!)) s++;
    while (e > s && isTrimmed(content[e - 1]!)) e--;
    if (e > s && content[s] !== HASH) {
      try {
        patterns.push(MatchPattern.parse(content.subarray(s, e), defaultType));
      } catch (error) {
        if (!(error instanceof BurrowError)) throw error;
        const wrapped = new BurrowError(
          'PATTERN_INVALID',
          `${fileName} line ${lineNo}: ${error.message}`,
          {
            details: { ...error.details, file: fileName, line: lineNo },
            cause: error,
          },
        );
        if (options.onError === undefined) throw wrapped;
        options.onError(wrapped);
      }
    }
    lineStart = lineEnd + 1;
  }
  return patterns;
}

/** The `.pxarexclude-cli` content for a list of exclusion patterns: one line each, '\n' ended. */
export function formatExcludeLines(patterns: readonly MatchPattern[]): Uint8Array {
  const lines = patterns.map((p) => p.toExcludeLine());
  const out = new Uint8Array(lines.reduce((sum, l) => sum + l.length + 1, 0));
  let at = 0;
  for (const line of lines) {
    out.set(line, at);
    at += line.length;
    out[at++] = NEWLINE;
  }
  return out;
}

function matchLast(
  patterns: readonly MatchPattern[],
  bytes: Uint8Array,
  start: number,
  isDir: boolean,
): MatchType | undefined {
  for (let i = patterns.length - 1; i >= 0; i--) {
    const p = patterns[i]!;
    if (p.matchesFrom(bytes, start, isDir)) return p.type;
  }
  return undefined;
}

/** An ordered pattern list where the last matching pattern decides. */
export class MatchList {
  readonly patterns: readonly MatchPattern[];

  constructor(patterns: readonly MatchPattern[] = []) {
    this.patterns = [...patterns];
  }

  get length(): number {
    return this.patterns.length;
  }

  /** The type of the last pattern matching `path`; undefined when none matches. */
  match(path: PathInput, isDir: boolean): MatchType | undefined {
    return matchLast(this.patterns, checkPath(path), 0, isDir);
  }
}

interface StackLevel {
  readonly dir: Uint8Array;
  readonly patterns: readonly MatchPattern[];
}

/**
 * The archiver's view of exclusion lists: the command-line list at the root, then one level
 * per directory entered, holding that directory's `.pxarexclude` (or nothing). A level's
 * patterns see paths relative to its directory (so its `/x` means `<dir>/x`) and apply only
 * below it. Deeper levels come later, so they win: the last matching pattern of the deepest
 * level that has a match decides.
 */
export class MatchStack {
  private readonly levels: StackLevel[];

  constructor(rootPatterns: readonly MatchPattern[] = []) {
    this.levels = [{ dir: new Uint8Array(0), patterns: [...rootPatterns] }];
  }

  /** Number of levels pushed (the root list does not count). */
  get depth(): number {
    return this.levels.length - 1;
  }

  /** Enter `dir` (relative to the root; '' for the root itself) with its own patterns. */
  push(dir: PathInput, patterns: readonly MatchPattern[]): void {
    const bytes = checkPath(dir);
    this.levels.push({ dir: Uint8Array.from(bytes), patterns: [...patterns] });
  }

  pop(): void {
    if (this.levels.length <= 1) {
      throw new BurrowError('INVALID_ARGUMENT', 'MatchStack.pop() without a matching push()');
    }
    this.levels.pop();
  }

  match(path: PathInput, isDir: boolean): MatchType | undefined {
    const bytes = checkPath(path);
    for (let l = this.levels.length - 1; l >= 0; l--) {
      const level = this.levels[l]!;
      const start = below(level.dir, bytes);
      if (start < 0) continue;
      const result = matchLast(level.patterns, bytes, start, isDir);
      if (result !== undefined) return result;
    }
    return undefined;
  }
}

/** Where the part of `path` below `dir` starts, or -1 when `path` is not below `dir`. */
function below(dir: Uint8Array, path: Uint8Array): number {
  if (dir.length === 0) return 0;
  if (path.length <= dir.length + 1 || path[dir.length] !== SLASH) return -1;
  for (let i = 0; i < dir.length; i++) if (path[i] !== dir[i]) return -1;
  return dir.length + 1;
}

/** One extraction decision; see ExtractSelector. */
export interface ExtractDecision {
  /** Extract this entry (for a directory: its metadata, whenever it gets created). */
  readonly selected: boolean;
  /** What the list said about this very entry (undefined: no pattern matched). */
  readonly match: MatchType | undefined;
  /**
   * Directories only: create it right away. Otherwise PBS creates it lazily, only when
   * something inside it is extracted.
   */
  readonly createNow: boolean;
}

/**
 * PBS's extraction rule for `--pattern` lists (patterns parsed with default type 'include'):
 * an entry matched by the list takes the match's type; an unmatched entry inherits the decision
 * of its parent directory; at the root the decision is "extract" only when the list is empty.
 * The walk always descends, so an `include` deeper down can pick files out of an excluded or
 * unselected directory. Call select() for each entry; for a directory call enter(decision)
 * before its children and leave() after them.
 */
export class ExtractSelector {
  private readonly list: MatchList;
  private current: boolean;
  private readonly stack: boolean[] = [];

  constructor(patterns: readonly MatchPattern[]) {
    this.list = new MatchList(patterns);
    this.current = patterns.length === 0;
  }

  select(path: PathInput, isDir: boolean): ExtractDecision {
    const match = this.list.match(path, isDir);
    const selected = match === undefined ? this.current : match === 'include';
    return { selected, match, createNow: isDir && this.current && match !== 'exclude' };
  }

  enter(decision: ExtractDecision): void {
    this.stack.push(this.current);
    this.current = decision.selected;
  }

  leave(): void {
    const previous = this.stack.pop();
    if (previous === undefined) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'ExtractSelector.leave() without a matching enter()',
      );
    }
    this.current = previous;
  }
}
