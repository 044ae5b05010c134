/**
 * User and API-token identities (pbs-formats §6.9): `Userid` = `name@realm`, `Authid` = a Userid
 * or `name@realm!token`. Group owners are Authids; so are the auth IDs inside UPIDs.
 */
import { BurrowError } from '../lib/errors.js';

export interface Userid {
  readonly name: string;
  readonly realm: string;
}

export interface Authid extends Userid {
  /** Present only for API tokens. */
  readonly tokenName?: string;
}

const SAFE_ID_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
/** No whitespace (Unicode White_Space, as Rust's `\s`), ':', '/' or ASCII control characters. */
// eslint-disable-next-line no-control-regex -- PBS excludes exactly the ASCII control characters
const USER_NAME_RE = /^[^\p{White_Space}:/\x00-\x1f\x7f]+$/u;
const MIN_ID_LENGTH = 3;
const MAX_ID_LENGTH = 64;
const MIN_REALM_LENGTH = 2;
const MAX_REALM_LENGTH = 32;

/** Length in characters (code points), as the PBS schema counts. */
const charLength = (text: string): number => {
  let n = 0;
  for (const _ of text) n++;
  return n;
};

/** Why `text` is not a Userid, or undefined when it is one. */
function useridProblem(text: string): string | undefined {
  const at = text.lastIndexOf('@');
  if (at < 0) return "no '@' between user name and realm";
  const name = text.slice(0, at);
  const realm = text.slice(at + 1);
  if (!USER_NAME_RE.test(name)) {
    return "the user name must be at least one character without whitespace, ':', '/' or control characters";
  }
  if (!SAFE_ID_RE.test(realm)) return `the realm ${JSON.stringify(realm)} is not a safe ID`;
  const realmLength = charLength(realm);
  if (realmLength < MIN_REALM_LENGTH || realmLength > MAX_REALM_LENGTH) {
    return `the realm must have ${MIN_REALM_LENGTH}..${MAX_REALM_LENGTH} characters`;
  }
  return undefined;
}

function lengthProblem(text: string): string | undefined {
  const length = charLength(text);
  if (length < MIN_ID_LENGTH || length > MAX_ID_LENGTH) {
    return `it must have ${MIN_ID_LENGTH}..${MAX_ID_LENGTH} characters, not ${length}`;
  }
  return undefined;
}

function shown(text: string): string {
  return JSON.stringify(text.slice(0, 100));
}

/** Parse `name@realm`, splitting at the last '@'. */
export function parseUserid(text: string): Userid {
  const problem = lengthProblem(text) ?? useridProblem(text);
  if (problem !== undefined) {
    throw new BurrowError('INVALID_USERID', `invalid user ID ${shown(text)}: ${problem}`, {
      details: { value: text },
    });
  }
  const at = text.lastIndexOf('@');
  return Object.freeze({ name: text.slice(0, at), realm: text.slice(at + 1) });
}

/**
 * Parse a Userid or `userid!tokenname`. The token separator is the last '!' that comes after
 * the last '@'; a '!' before the '@' belongs to the user name.
 */
export function parseAuthid(text: string): Authid {
  const fail = (problem: string): BurrowError =>
    new BurrowError('INVALID_AUTHID', `invalid auth ID ${shown(text)}: ${problem}`, {
      details: { value: text },
    });
  const whole = lengthProblem(text);
  if (whole !== undefined) throw fail(whole);
  const at = text.lastIndexOf('@');
  if (at < 0) throw fail("no '@' between user name and realm");
  const bang = text.lastIndexOf('!');
  const userEnd = bang > at ? bang : text.length;
  const userText = text.slice(0, userEnd);
  const problem = useridProblem(userText);
  if (problem !== undefined) throw fail(problem);
  const name = userText.slice(0, at);
  const realm = userText.slice(at + 1);
  if (userEnd === text.length) return Object.freeze({ name, realm });
  const tokenName = text.slice(userEnd + 1);
  if (tokenName === '') throw fail('empty token name after "!"');
  if (!SAFE_ID_RE.test(tokenName))
    throw fail(`the token name ${JSON.stringify(tokenName)} is not a safe ID`);
  return Object.freeze({ name, realm, tokenName });
}

export function isValidAuthid(text: string): boolean {
  try {
    parseAuthid(text);
    return true;
  } catch {
    return false;
  }
}

export function formatUserid(user: Userid): string {
  return `${user.name}@${user.realm}`;
}

/** `name@realm` or `name@realm!token`. */
export function formatAuthid(auth: Authid): string {
  return auth.tokenName === undefined
    ? formatUserid(auth)
    : `${formatUserid(auth)}!${auth.tokenName}`;
}

export function isToken(auth: Authid): boolean {
  return auth.tokenName !== undefined;
}

/** The user an Authid belongs to (itself, for a plain user). */
export function userOf(auth: Authid): Userid {
  return Object.freeze({ name: auth.name, realm: auth.realm });
}

export function authidEquals(a: Authid, b: Authid): boolean {
  return a.name === b.name && a.realm === b.realm && a.tokenName === b.tokenName;
}

/**
 * The group owner check of pbs-formats §6.5: the caller may act on a group if it is the owner,
 * or if the owner is an API token of the caller's own user. A token may not act for its user.
 */
export function mayActAsOwner(caller: Authid, owner: Authid): boolean {
  if (authidEquals(caller, owner)) return true;
  return (
    isToken(owner) && !isToken(caller) && caller.name === owner.name && caller.realm === owner.realm
  );
}
