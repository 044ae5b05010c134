/**
 * user.cfg, PBS's section-config file of users and API tokens:
 *
 *     user: alice@pbs
 *     <TAB>comment Backup operator
 *     <TAB>email alice@example.com
 *     <TAB>enable true
 *     <TAB>expire 0
 *
 *     token: alice@pbs!backup
 *     <TAB>comment nightly job
 *
 * Every property is optional. `enable` defaults to true; `expire` is epoch seconds, 0 meaning
 * never. An account is active unless disabled or `expire > 0 && expire <= now` (PBS's rule).
 * Passwords and token secrets are not here: shadow.json and token.shadow hold their hashes.
 */
import { BurrowError } from '../../lib/errors.js';
import { formatScalar, type ValueKind } from '../../format/property-string.js';
import {
  parseSectionConfig,
  writeSectionConfig,
  type Section,
  type SectionConfigSchema,
  type SectionPropertySpec,
} from '../../format/section-config.js';
import { formatAuthid, formatUserid, isValidAuthid, parseAuthid } from '../../types/auth.js';

/** PBS's single-line comment: no control characters, at most 128 characters. */
const CONTROL_RE = /\p{Cc}/u;

const COMMENT: SectionPropertySpec = { kind: 'string', maxLength: 128, optional: true };
/** First name, last name and e-mail: 2..64 characters, as PBS's schemas say. */
const NAME: SectionPropertySpec = { kind: 'string', minLength: 2, maxLength: 64, optional: true };
const ENABLE: SectionPropertySpec = { kind: 'boolean', optional: true };
const EXPIRE: SectionPropertySpec = { kind: 'integer', min: 0, optional: true };

const USERID_KIND: ValueKind = {
  kind: 'string',
  check: (text) =>
    isValidAuthid(text) && parseAuthid(text).tokenName === undefined
      ? undefined
      : 'is not a user ID (name@realm)',
};

const TOKENID_KIND: ValueKind = {
  kind: 'string',
  check: (text) =>
    isValidAuthid(text) && parseAuthid(text).tokenName !== undefined
      ? undefined
      : 'is not an API token ID (name@realm!token)',
};

export const USER_CONFIG_SCHEMA: SectionConfigSchema = {
  types: [
    {
      type: 'user',
      id: USERID_KIND,
      properties: {
        comment: COMMENT,
        enable: ENABLE,
        expire: EXPIRE,
        firstname: NAME,
        lastname: NAME,
        email: NAME,
      },
    },
    {
      type: 'token',
      id: TOKENID_KIND,
      properties: { comment: COMMENT, enable: ENABLE, expire: EXPIRE },
    },
  ],
};

/** The settable properties of a user, as the API names them. */
export interface UserProps {
  comment?: string;
  enable?: boolean;
  expire?: number;
  firstname?: string;
  lastname?: string;
  email?: string;
}

export interface UserEntry extends UserProps {
  readonly userid: string;
}

export interface TokenProps {
  comment?: string;
  enable?: boolean;
  expire?: number;
}

export interface TokenEntry extends TokenProps {
  readonly tokenid: string;
}

export type UserConfigEntry =
  ({ readonly type: 'user' } & UserEntry) | ({ readonly type: 'token' } & TokenEntry);

export const USER_PROPERTY_KEYS = [
  'comment',
  'enable',
  'expire',
  'firstname',
  'lastname',
  'email',
] as const;
export const TOKEN_PROPERTY_KEYS = ['comment', 'enable', 'expire'] as const;

function pick<K extends string>(
  props: Readonly<Record<string, unknown>>,
  keys: readonly K[],
): Partial<Record<K, unknown>> {
  const out: Partial<Record<K, unknown>> = {};
  for (const key of keys) if (props[key] !== undefined) out[key] = props[key];
  return out;
}

/** Parse user.cfg (in file order). Errors name the line; the caller adds the file name. */
export function parseUserConfig(content: string | Uint8Array): UserConfigEntry[] {
  return parseSectionConfig(USER_CONFIG_SCHEMA, content).map((section): UserConfigEntry => {
    if (section.type === 'user') {
      return {
        type: 'user',
        userid: formatUserid(parseAuthid(section.id)),
        ...(pick(section.props, USER_PROPERTY_KEYS) as UserProps),
      };
    }
    return {
      type: 'token',
      tokenid: formatAuthid(parseAuthid(section.id)),
      ...(pick(section.props, TOKEN_PROPERTY_KEYS) as TokenProps),
    };
  });
}

export function writeUserConfig(entries: readonly UserConfigEntry[]): string {
  const sections = entries.map((entry): Section => {
    if (entry.type === 'user') {
      return {
        type: 'user',
        id: entry.userid,
        props: pick(entry as unknown as Record<string, unknown>, USER_PROPERTY_KEYS) as never,
      };
    }
    return {
      type: 'token',
      id: entry.tokenid,
      props: pick(entry as unknown as Record<string, unknown>, TOKEN_PROPERTY_KEYS) as never,
    };
  });
  return writeSectionConfig(USER_CONFIG_SCHEMA, sections);
}

/** PBS's "active" rule for users and tokens. */
export function isActive(entry: { enable?: boolean; expire?: number }, now: number): boolean {
  if (entry.enable === false) return false;
  return !(entry.expire !== undefined && entry.expire > 0 && entry.expire <= now);
}

/** The user an API token ID belongs to (`alice@pbs!t` → `alice@pbs`). */
export function tokenOwner(tokenid: string): string {
  return formatUserid(parseAuthid(tokenid));
}

/**
 * Check property values the way writing the file will, so bad API or CLI input fails with
 * INVALID_ARGUMENT before anything is written.
 */
export function checkProps(props: UserProps | TokenProps, type: 'user' | 'token'): void {
  const section = USER_CONFIG_SCHEMA.types.find((t) => t.type === type);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined) continue;
    const spec = section?.properties[key];
    if (spec === undefined || spec.kind === 'property-string') {
      throw new BurrowError('INVALID_ARGUMENT', `unknown ${type} property '${key}'`);
    }
    const checked = formatScalar(spec, value);
    if (!checked.ok) {
      throw new BurrowError('INVALID_ARGUMENT', `${key}: the value ${checked.reason}`, {
        details: { key },
      });
    }
    if (CONTROL_RE.test(checked.value) || checked.value !== checked.value.trim()) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${key}: the value must be one line without control characters or surrounding spaces`,
        { details: { key } },
      );
    }
  }
}
