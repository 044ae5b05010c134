/**
 * The section-config file format of /etc/proxmox-backup/*.cfg (pbs-formats §10.1), generic over
 * a schema of section types. A file is a list of sections:
 *
 *     <type>: <id>
 *     <TAB><key> <value>
 *     ...
 *     <empty line>
 *
 * Reading follows PBS: lines split at '\n' (a trailing '\r' is dropped); blank lines before a
 * header are skipped; a header starts with an alphabetic character and splits at the first ':'
 * (both halves trimmed); a property line starts with whitespace, then the key, whitespace and
 * the value (the rest of the line, trimmed); a blank line or the end of the file closes a
 * section. There are no comments. Unknown section types, unknown or repeated properties (unless
 * the property is an array), missing required properties and bad values are errors. We are
 * stricter than PBS in two places: control characters in an ID, key or value are refused on
 * reading as well as writing, and a section ID may appear only once.
 *
 * Writing: sections in order separated by one empty line; each section's header, then its
 * properties sorted by key (bytewise), one TAB before each; booleans as true/false; array
 * properties as one line per item. The file ends with a newline (an empty config is empty).
 */
import { createHash } from 'node:crypto';
import { BurrowError } from '../lib/errors.js';
import {
  formatScalar,
  parsePropertyString,
  parseScalar,
  type Checked,
  type PropertyStringSchema,
  type ScalarValue,
  type ValueKind,
} from './property-string.js';

/** A property's kind: a scalar, or a property string that is kept as its text but validated. */
export type SectionValueKind =
  ValueKind | { readonly kind: 'property-string'; readonly schema: PropertyStringSchema };

export type SectionPropertySpec = SectionValueKind & {
  readonly optional?: boolean;
  /** May appear several times; the value is then an array of the items in file order. */
  readonly array?: boolean;
};

export type SectionValue = ScalarValue | readonly ScalarValue[];
/** Property values by key; undefined values are treated as absent when writing. */
export type SectionProps = Readonly<Record<string, SectionValue | undefined>>;

export interface SectionTypeSchema {
  /** The word before ':' in the header, e.g. "datastore". */
  readonly type: string;
  /** Validation of the section ID (the text after ':'). */
  readonly id: ValueKind;
  readonly properties: Readonly<Record<string, SectionPropertySpec>>;
}

export interface SectionConfigSchema {
  readonly types: readonly SectionTypeSchema[];
}

export interface Section {
  readonly type: string;
  readonly id: string;
  readonly props: SectionProps;
}

// PBS (Rust's char::is_control) refuses the Unicode Cc characters: U+0000–U+001F, U+007F–U+009F.
const CONTROL_RE = /\p{Cc}/u;
const LEADING_SPACE_RE = /^\p{White_Space}+/u;
const TRAILING_SPACE_RE = /\p{White_Space}+$/u;
const trim = (text: string): string =>
  text.replace(LEADING_SPACE_RE, '').replace(TRAILING_SPACE_RE, '');

function syntaxError(
  line: number,
  message: string,
  details: Record<string, unknown> = {},
): BurrowError {
  return new BurrowError('SECTION_CONFIG_SYNTAX', `line ${line}: ${message}`, {
    details: { line, ...details },
  });
}

function invalidAt(
  line: number,
  message: string,
  details: Record<string, unknown> = {},
): BurrowError {
  return new BurrowError('SECTION_CONFIG_INVALID', `line ${line}: ${message}`, {
    details: { line, ...details },
  });
}

function invalidWrite(message: string, details: Record<string, unknown> = {}): BurrowError {
  return new BurrowError('SECTION_CONFIG_INVALID', `cannot write config: ${message}`, { details });
}

function findType(schema: SectionConfigSchema, type: string): SectionTypeSchema | undefined {
  return schema.types.find((t) => t.type === type);
}

function propertyOf(type: SectionTypeSchema, key: string): SectionPropertySpec | undefined {
  return Object.hasOwn(type.properties, key) ? type.properties[key] : undefined;
}

function describeControl(text: string): string {
  const match = CONTROL_RE.exec(text);
  const code = match === null ? 0 : (match[0].codePointAt(0) ?? 0);
  return `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Read one property value; property strings stay text once they have been checked. */
function parseValue(spec: SectionPropertySpec, text: string): Checked<ScalarValue> {
  if (spec.kind !== 'property-string') return parseScalar(spec, text);
  try {
    parsePropertyString(spec.schema, text);
    return { ok: true, value: text };
  } catch (error) {
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

function formatValue(spec: SectionPropertySpec, value: unknown): Checked<string> {
  if (spec.kind !== 'property-string') return formatScalar(spec, value);
  if (typeof value !== 'string') return { ok: false, reason: 'must be a property string (text)' };
  try {
    parsePropertyString(spec.schema, value);
    return { ok: true, value };
  } catch (error) {
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** SHA-256 (hex) of the raw file: the config digest PBS uses for optimistic concurrency. */
export function sectionConfigDigest(content: string | Uint8Array): string {
  return createHash('sha256')
    .update(typeof content === 'string' ? Buffer.from(content, 'utf8') : content)
    .digest('hex');
}

interface OpenSection {
  readonly type: SectionTypeSchema;
  readonly id: string;
  readonly headerLine: number;
  readonly props: Record<string, SectionValue>;
}

/** Parse a section-config file. Errors name the 1-based line number. */
export function parseSectionConfig(
  schema: SectionConfigSchema,
  content: string | Uint8Array,
): Section[] {
  let text: string;
  if (typeof content === 'string') {
    text = content;
  } else {
    try {
      text = decoder.decode(content);
    } catch (cause) {
      throw new BurrowError('SECTION_CONFIG_SYNTAX', 'the config file is not valid UTF-8', {
        cause,
      });
    }
  }
  const sections: Section[] = [];
  const ids = new Map<string, number>();
  let current: OpenSection | undefined;

  const close = (): void => {
    if (current === undefined) return;
    for (const [key, spec] of Object.entries(current.type.properties)) {
      if (spec.optional !== true && !Object.hasOwn(current.props, key)) {
        throw invalidAt(
          current.headerLine,
          `${current.type.type} '${current.id}' is missing the required property '${key}'`,
          { section: current.id, key },
        );
      }
    }
    sections.push(
      Object.freeze({
        type: current.type.type,
        id: current.id,
        props: Object.freeze(current.props),
      }),
    );
    current = undefined;
  };

  const lines = text.split('\n');
  // A final newline ends the last line; it does not start another one.
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (trim(line) === '') {
      close();
      return;
    }
    if (current === undefined) {
      if (!/^\p{Alphabetic}/u.test(line)) {
        throw syntaxError(
          lineNo,
          /^\p{White_Space}/u.test(line)
            ? 'a property line before any section header (expected "<type>: <id>")'
            : 'expected a section header "<type>: <id>"',
        );
      }
      const colon = line.indexOf(':');
      if (colon < 0)
        throw syntaxError(lineNo, `expected a section header "<type>: <id>", found no ':'`);
      const typeName = trim(line.slice(0, colon));
      const id = trim(line.slice(colon + 1));
      const type = findType(schema, typeName);
      if (type === undefined) {
        throw syntaxError(
          lineNo,
          `unknown section type '${typeName}' (known: ${schema.types.map((t) => t.type).join(', ')})`,
          { type: typeName },
        );
      }
      if (CONTROL_RE.test(id)) {
        throw syntaxError(lineNo, `control character ${describeControl(id)} in the section ID`);
      }
      const idCheck = parseScalar(type.id, id);
      if (!idCheck.ok) {
        throw invalidAt(
          lineNo,
          `invalid ${type.type} ID ${JSON.stringify(id)}: it ${idCheck.reason}`,
          { section: id },
        );
      }
      const previous = ids.get(id);
      if (previous !== undefined) {
        throw invalidAt(lineNo, `section ID '${id}' already used on line ${previous}`, {
          section: id,
        });
      }
      ids.set(id, lineNo);
      current = { type, id, headerLine: lineNo, props: {} };
      return;
    }
    if (!/^\p{White_Space}/u.test(line)) {
      throw syntaxError(
        lineNo,
        `expected an indented property line or an empty line ending ${current.type.type} '${current.id}'`,
        { section: current.id },
      );
    }
    const body = line.replace(LEADING_SPACE_RE, '');
    const gap = /\p{White_Space}/u.exec(body);
    if (gap === null) {
      throw syntaxError(lineNo, `property '${body}' has no value (expected "<key> <value>")`, {
        section: current.id,
      });
    }
    const key = body.slice(0, gap.index);
    const value = trim(body.slice(gap.index));
    if (CONTROL_RE.test(key) || CONTROL_RE.test(value)) {
      throw syntaxError(
        lineNo,
        `control character ${describeControl(key + value)} in property '${key.replace(CONTROL_RE, '?')}'`,
        { section: current.id },
      );
    }
    const spec = propertyOf(current.type, key);
    if (spec === undefined) {
      throw invalidAt(lineNo, `unknown property '${key}' in ${current.type.type} '${current.id}'`, {
        section: current.id,
        key,
      });
    }
    const parsed = parseValue(spec, value);
    if (!parsed.ok) {
      throw invalidAt(
        lineNo,
        `property '${key}' of ${current.type.type} '${current.id}': value ${JSON.stringify(value)} ${parsed.reason}`,
        {
          section: current.id,
          key,
        },
      );
    }
    const existing = Object.hasOwn(current.props, key) ? current.props[key] : undefined;
    if (spec.array === true) {
      current.props[key] = [
        ...((existing as readonly ScalarValue[] | undefined) ?? []),
        parsed.value,
      ];
    } else if (existing !== undefined) {
      throw invalidAt(
        lineNo,
        `duplicate property '${key}' in ${current.type.type} '${current.id}'`,
        {
          section: current.id,
          key,
        },
      );
    } else {
      current.props[key] = parsed.value;
    }
  });
  close();
  return sections;
}

const compareBytewise = (a: string, b: string): number =>
  Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

function formatLine(
  section: Section,
  key: string,
  spec: SectionPropertySpec,
  value: unknown,
): string {
  const text = formatValue(spec, value);
  if (!text.ok) {
    throw invalidWrite(`property '${key}' of ${section.type} '${section.id}' ${text.reason}`, {
      section: section.id,
      key,
    });
  }
  if (CONTROL_RE.test(text.value)) {
    throw invalidWrite(
      `property '${key}' of ${section.type} '${section.id}' contains control character ${describeControl(text.value)}`,
      {
        section: section.id,
        key,
      },
    );
  }
  if (text.value !== trim(text.value)) {
    throw invalidWrite(
      `property '${key}' of ${section.type} '${section.id}' has leading or trailing whitespace, which the file cannot keep`,
      {
        section: section.id,
        key,
      },
    );
  }
  return `\t${key} ${text.value}\n`;
}

/** Write sections in canonical form (see the module comment). Everything is validated first. */
export function writeSectionConfig(
  schema: SectionConfigSchema,
  sections: readonly Section[],
): string {
  const seen = new Set<string>();
  const blocks: string[] = [];
  for (const section of sections) {
    const type = findType(schema, section.type);
    if (type === undefined) throw invalidWrite(`unknown section type '${section.type}'`);
    if (CONTROL_RE.test(section.id))
      throw invalidWrite(`control character in section ID ${JSON.stringify(section.id)}`);
    const idCheck = parseScalar(type.id, section.id);
    if (!idCheck.ok || section.id !== trim(section.id)) {
      throw invalidWrite(
        `invalid ${type.type} ID ${JSON.stringify(section.id)}: it ${idCheck.ok ? 'has surrounding whitespace' : idCheck.reason}`,
      );
    }
    if (seen.has(section.id)) throw invalidWrite(`section ID '${section.id}' appears twice`);
    seen.add(section.id);
    let block = `${type.type}: ${section.id}\n`;
    const keys = Object.keys(section.props)
      .filter((k) => Object.hasOwn(section.props, k) && section.props[k] !== undefined)
      .sort(compareBytewise);
    for (const key of keys) {
      const spec = propertyOf(type, key);
      if (spec === undefined)
        throw invalidWrite(`unknown property '${key}' in ${type.type} '${section.id}'`, {
          section: section.id,
          key,
        });
      const value = section.props[key];
      if (spec.array === true) {
        if (!Array.isArray(value))
          throw invalidWrite(`property '${key}' of ${type.type} '${section.id}' must be an array`);
        for (const item of value as readonly unknown[])
          block += formatLine(section, key, spec, item);
      } else {
        block += formatLine(section, key, spec, value);
      }
    }
    for (const [key, spec] of Object.entries(type.properties)) {
      if (
        spec.optional !== true &&
        (!Object.hasOwn(section.props, key) || section.props[key] === undefined)
      ) {
        throw invalidWrite(
          `${type.type} '${section.id}' is missing the required property '${key}'`,
          { section: section.id, key },
        );
      }
    }
    blocks.push(block);
  }
  return blocks.join('\n');
}
