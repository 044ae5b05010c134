/**
 * Who a request comes from and what it may do (AccessControl), plus the user, token, password
 * and ACL operations the REST API and `burrow-manager` share. The operations here check no
 * caller privileges: the routes do that (access routes), and the CLI acts as the local admin.
 *
 * State is read from the config directory (access-files.ts) and kept in memory; before each use
 * the files are stat'ed and whatever changed on disk is read again, so a change made by
 * `burrow-manager` applies to a running server at its next request.
 *
 * Rules (PBS's):
 * - `root@pam` always exists, is always active and has every privilege everywhere.
 * - Other users exist when user.cfg lists them; a disabled or expired user, or a token that is
 *   disabled, expired or whose user is inactive, cannot authenticate and has no privileges.
 * - A token's privileges are the intersection of its own ACL privileges and its user's.
 * - Passwords (realms `pbs` and `pam`; Burrow has no PAM, so both live in shadow.json) and
 *   token secrets are SHA-crypt hashes.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { BurrowDirs } from '../../lib/dirs.js';
import { BurrowError } from '../../lib/errors.js';
import {
  formatAuthid,
  formatUserid,
  isToken,
  parseAuthid,
  parseUserid,
  type Authid,
} from '../../types/auth.js';
import {
  PRIVILEGES,
  type AccessControl,
  type Privilege,
  type RequestCredentials,
} from '../server-types.js';
import {
  checkAclPath,
  checkRoleName,
  joinAclPath,
  splitAclPath,
  type AclListItem,
  type AclTree,
  type PrivilegeDetails,
} from './acl-config.js';
import {
  ACL_CFG,
  AUTHKEY,
  CSRF_KEY,
  SHADOW_JSON,
  TOKEN_SHADOW,
  USER_CFG,
  accessPath,
  fileStamp,
  loadOrCreateKey,
  lockAcl,
  lockUsers,
  readAclFile,
  readHashFile,
  readUserFile,
  withLock,
  writeAclFile,
  writeHashFile,
  writeUserFile,
  type UserFile,
} from './access-files.js';
import { hashPassword, verifyPassword } from './sha-crypt.js';
import { createCsrfToken, createTicket, verifyCsrfToken, verifyTicket } from './ticket.js';
import {
  checkProps,
  isActive,
  type TokenEntry,
  type TokenProps,
  type UserConfigEntry,
  type UserEntry,
  type UserProps,
} from './user-config.js';

export const ROOT_USERID = 'root@pam';
/** The realms Burrow authenticates: its own and `pam` (whose passwords it keeps itself). */
export const REALMS = ['pam', 'pbs'] as const;
/** PBS's limits for a password that is being set. */
export const PASSWORD_MIN_LENGTH = 5;
export const PASSWORD_MAX_LENGTH = 64;
/**
 * Longest password or secret that is ever hashed (PBS's login schema). SHA-crypt's work grows
 * with the square of the length, so anything longer is refused before hashing.
 */
export const LOGIN_PASSWORD_MAX_LENGTH = 1024;

export const TICKET_COOKIE = 'PBSAuthCookie';
export const HOST_TICKET_COOKIE = '__Host-PBSAuthCookie';
export const CSRF_HEADER = 'csrfpreventiontoken';

/** Paths `permissions()` reports when asked for no path (PBS's list), plus the ACL's own. */
const DEFAULT_PERMISSION_PATHS = ['/', '/access', '/datastore', '/remote', '/system'];

/** A hash no password matches, checked when there is no hash so both cases take as long. */
let dummyHash: string | undefined;
const DUMMY_HASH = (): string => (dummyHash ??= hashPassword(randomUUID()));

/** Verified token secrets kept: (token, secret digest) → hash it matched. */
const TOKEN_CACHE_SIZE = 256;

export interface ServerAccessOptions {
  /** Epoch seconds; injectable for tests of ticket ages and account expiry. */
  now?: () => number;
}

export interface LoginResult {
  username: string;
  ticket: string;
  csrfToken: string;
}

export interface UserInfo extends UserEntry {
  tokens?: TokenEntry[];
}

export type UserDeletable = 'comment' | 'firstname' | 'lastname' | 'email';

export interface UserUpdate extends UserProps {
  password?: string;
  delete?: readonly UserDeletable[];
}

export interface TokenUpdate extends TokenProps {
  delete?: readonly 'comment'[];
}

export interface AclUpdate {
  path: string;
  role: string;
  authId: string;
  /** Default true, as in PBS. */
  propagate?: boolean;
  delete?: boolean;
}

export interface DigestOption {
  /** Fail unless the file still has this digest (PBS's optimistic `digest` parameter). */
  expectDigest?: string;
}

/** `{ "<path>": { "<privilege>": <propagated> } }`, GET /access/permissions' answer. */
export type PermissionMap = Record<string, Partial<Record<Privilege, boolean>>>;

interface UserState extends UserFile {
  readonly users: ReadonlyMap<string, UserEntry>;
  readonly tokens: ReadonlyMap<string, TokenEntry>;
}

interface Cached<T> {
  readonly stamp: string;
  readonly value: T;
}

/** Working copies of the user files inside a locked change. */
interface UserChange {
  entries: UserConfigEntry[];
  readonly shadow: Map<string, string>;
  readonly tokenShadow: Map<string, string>;
  readonly changed: { users: boolean; shadow: boolean; tokenShadow: boolean };
}

function authFailed(reason: string): BurrowError {
  return new BurrowError('AUTH_FAILED', 'authentication failed', { details: { reason } });
}

function loginFailed(reason: string): BurrowError {
  return new BurrowError('AUTH_FAILED', 'permission check failed.', { details: { reason } });
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The ticket from the Cookie header: `__Host-PBSAuthCookie` first, else `PBSAuthCookie`. */
export function ticketFromCookies(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const cookies = new Map<string, string>();
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    if (!cookies.has(name)) cookies.set(name, part.slice(eq + 1).trim());
  }
  const raw = cookies.get(HOST_TICKET_COOKIE) ?? cookies.get(TICKET_COOKIE);
  if (raw === undefined || raw === '') return undefined;
  try {
    return decodeURIComponent(raw);
  } catch {
    throw authFailed('malformed ticket cookie');
  }
}

function checkPassword(password: string): void {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH || length > PASSWORD_MAX_LENGTH) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `a password must have ${PASSWORD_MIN_LENGTH}..${PASSWORD_MAX_LENGTH} characters`,
    );
  }
}

function canonicalUserid(text: string): string {
  return formatUserid(parseUserid(text));
}

function checkRealm(userid: string): void {
  const realm = parseUserid(userid).realm;
  if (!(REALMS as readonly string[]).includes(realm)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `unknown realm '${realm}': Burrow has the realms ${REALMS.join(' and ')}`,
      { details: { realm } },
    );
  }
}

/** `userid!name`, checked. */
export function tokenIdOf(userid: string, name: string): string {
  return formatAuthid(parseAuthid(`${canonicalUserid(userid)}!${name}`));
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

function intersect(a: ReadonlySet<Privilege>, b: ReadonlySet<Privilege>): Set<Privilege> {
  return new Set([...a].filter((p) => b.has(p)));
}

const ALL: PrivilegeDetails = { privileges: new Set(PRIVILEGES), propagated: new Set(PRIVILEGES) };
const NONE: PrivilegeDetails = { privileges: new Set(), propagated: new Set() };

function digestMismatch(expected: string, actual: string): BurrowError {
  return new BurrowError(
    'INVALID_ARGUMENT',
    'detected modified configuration - file changed by other user? Try again.',
    { details: { expected, actual } },
  );
}

export class ServerAccess implements AccessControl {
  readonly dirs: BurrowDirs;
  readonly #now: () => number;
  #users: Cached<UserState> | undefined;
  #shadow: Cached<Map<string, string>> | undefined;
  #tokenShadow: Cached<Map<string, string>> | undefined;
  #acl: Cached<{ tree: AclTree; digest: string }> | undefined;
  #authKey: Promise<Buffer> | undefined;
  #csrfKey: Promise<Buffer> | undefined;
  readonly #verifiedTokens = new Map<string, { hash: string; secret: Buffer }>();

  private constructor(dirs: BurrowDirs, now: () => number) {
    this.dirs = dirs;
    this.#now = now;
  }

  /** Read the configuration once (so a broken file is reported at start) and keep it current. */
  static async open(dirs: BurrowDirs, options: ServerAccessOptions = {}): Promise<ServerAccess> {
    const access = new ServerAccess(dirs, options.now ?? (() => Math.floor(Date.now() / 1000)));
    await Promise.all([
      access.#userState(),
      access.#shadowHashes(),
      access.#tokenHashes(),
      access.#aclState(),
    ]);
    return access;
  }

  now(): number {
    return this.#now();
  }

  // -------------------------------------------------------------------------------------------
  // Cached file state

  async #cached<T>(
    slot: Cached<T> | undefined,
    name: string,
    load: () => Promise<T>,
    store: (c: Cached<T>) => void,
  ): Promise<T> {
    const stamp = await fileStamp(accessPath(this.dirs, name));
    if (slot !== undefined && slot.stamp === stamp) return slot.value;
    // Stamp first, then read: a change in between shows as a new stamp next time.
    const value = await load();
    store({ stamp, value });
    return value;
  }

  #userState(): Promise<UserState> {
    return this.#cached(
      this.#users,
      USER_CFG,
      async () => {
        const file = await readUserFile(this.dirs);
        const users = new Map<string, UserEntry>();
        const tokens = new Map<string, TokenEntry>();
        for (const entry of file.entries) {
          if (entry.type === 'user') {
            const { type: _type, ...user } = entry;
            users.set(user.userid, user);
          } else {
            const { type: _type, ...token } = entry;
            tokens.set(token.tokenid, token);
          }
        }
        return { ...file, users, tokens };
      },
      (c) => (this.#users = c),
    );
  }

  #shadowHashes(): Promise<Map<string, string>> {
    return this.#cached(
      this.#shadow,
      SHADOW_JSON,
      () => readHashFile(this.dirs, SHADOW_JSON),
      (c) => (this.#shadow = c),
    );
  }

  #tokenHashes(): Promise<Map<string, string>> {
    return this.#cached(
      this.#tokenShadow,
      TOKEN_SHADOW,
      () => readHashFile(this.dirs, TOKEN_SHADOW),
      (c) => (this.#tokenShadow = c),
    );
  }

  #aclState(): Promise<{ tree: AclTree; digest: string }> {
    return this.#cached(
      this.#acl,
      ACL_CFG,
      () => readAclFile(this.dirs),
      (c) => (this.#acl = c),
    );
  }

  #key(which: 'auth' | 'csrf'): Promise<Buffer> {
    // Created on first use; a failed attempt is not cached, so the next request tries again.
    const attempt = (name: string): Promise<Buffer> => {
      const promise = loadOrCreateKey(this.dirs, name);
      promise.catch(() => {
        if (which === 'auth') this.#authKey = undefined;
        else this.#csrfKey = undefined;
      });
      return promise;
    };
    if (which === 'auth') return (this.#authKey ??= attempt(AUTHKEY));
    return (this.#csrfKey ??= attempt(CSRF_KEY));
  }

  // -------------------------------------------------------------------------------------------
  // Activity

  #userActive(state: UserState, userid: string): boolean {
    if (userid === ROOT_USERID) return true;
    const user = state.users.get(userid);
    return user !== undefined && isActive(user, this.#now());
  }

  #authidActive(state: UserState, authId: Authid): boolean {
    if (!this.#userActive(state, formatUserid(authId))) return false;
    if (!isToken(authId)) return true;
    const token = state.tokens.get(formatAuthid(authId));
    return token !== undefined && isActive(token, this.#now());
  }

  /** Whether the user or token exists and may act now (enabled, not expired, user active). */
  async isActive(authId: Authid): Promise<boolean> {
    return this.#authidActive(await this.#userState(), authId);
  }

  isSuperuser(authId: Authid): boolean {
    return !isToken(authId) && formatUserid(authId) === ROOT_USERID;
  }

  // -------------------------------------------------------------------------------------------
  // AccessControl

  async authenticate(request: RequestCredentials): Promise<Authid> {
    const ticket = ticketFromCookies(headerValue(request.headers.cookie));
    if (ticket !== undefined) {
      const userid = verifyTicket(ticket, await this.#key('auth'), this.#now());
      const authId = parseAuthid(userid);
      if (isToken(authId) || !this.#userActive(await this.#userState(), userid)) {
        throw authFailed(`user ${userid} does not exist or is not active`);
      }
      const method = request.method.toUpperCase();
      if (method !== 'GET' && method !== 'HEAD') {
        const csrf = headerValue(request.headers[CSRF_HEADER]);
        if (csrf === undefined) throw authFailed('missing CSRF prevention token');
        verifyCsrfToken(csrf, userid, await this.#key('csrf'), this.#now());
      }
      return authId;
    }
    const authorization = headerValue(request.headers.authorization);
    if (authorization !== undefined && /^PBSAPIToken[ =]/.test(authorization)) {
      return this.#authenticateToken(authorization.slice('PBSAPIToken '.length));
    }
    throw authFailed('no credentials');
  }

  async #authenticateToken(credentials: string): Promise<Authid> {
    const colon = credentials.indexOf(':');
    if (colon < 0) throw authFailed('malformed API token header');
    let authId: Authid;
    let secret: string;
    try {
      authId = parseAuthid(credentials.slice(0, colon));
      secret = decodeURIComponent(credentials.slice(colon + 1));
    } catch {
      throw authFailed('malformed API token header');
    }
    const tokenid = formatAuthid(authId);
    if (!isToken(authId)) throw authFailed(`${tokenid} is not an API token`);
    if (secret.length > LOGIN_PASSWORD_MAX_LENGTH) throw authFailed('API token secret too long');
    const state = await this.#userState();
    const hash = (await this.#tokenHashes()).get(tokenid);
    if (!this.#tokenSecretMatches(tokenid, secret, hash)) {
      throw authFailed(`wrong secret for API token ${tokenid}`);
    }
    if (!this.#authidActive(state, authId)) {
      throw authFailed(`API token ${tokenid} does not exist or is not active`);
    }
    return authId;
  }

  /** SHA-crypt per request would cost milliseconds: a secret once verified is remembered by digest. */
  #tokenSecretMatches(tokenid: string, secret: string, hash: string | undefined): boolean {
    const digest = sha256(`${tokenid}\0${secret}`);
    const known = this.#verifiedTokens.get(tokenid);
    if (hash !== undefined && known !== undefined && known.hash === hash) {
      if (timingSafeEqual(known.secret, digest)) return true;
    }
    const ok = verifyPassword(secret, hash ?? DUMMY_HASH()) && hash !== undefined;
    if (ok && hash !== undefined) {
      if (this.#verifiedTokens.size >= TOKEN_CACHE_SIZE) this.#verifiedTokens.clear();
      this.#verifiedTokens.set(tokenid, { hash, secret: digest });
    }
    return ok;
  }

  /** The privileges of an active auth ID on a path, from one snapshot of the ACL. */
  static #details(tree: AclTree, authId: Authid, components: readonly string[]): PrivilegeDetails {
    const userid = formatUserid(authId);
    const user = userid === ROOT_USERID ? ALL : tree.privileges(userid, components);
    if (!isToken(authId)) return user;
    const token = tree.privileges(formatAuthid(authId), components);
    return {
      privileges: intersect(user.privileges, token.privileges),
      propagated: intersect(user.propagated, token.propagated),
    };
  }

  /** Privileges on `path` with the subset that propagates (for GET /access/permissions). */
  async privilegeDetails(authId: Authid, path: string): Promise<PrivilegeDetails> {
    const state = await this.#userState();
    if (!this.#authidActive(state, authId)) return NONE;
    const { tree } = await this.#aclState();
    return ServerAccess.#details(tree, authId, splitAclPath(path));
  }

  async privileges(authId: Authid, path: string): Promise<ReadonlySet<Privilege>> {
    return (await this.privilegeDetails(authId, path)).privileges;
  }

  async anyPrivilegeBelow(authId: Authid, path: string): Promise<boolean> {
    const state = await this.#userState();
    if (!this.#authidActive(state, authId)) return false;
    if (this.isSuperuser(authId)) return true;
    const { tree } = await this.#aclState();
    return tree
      .pathsCoveringSubtree(splitAclPath(path))
      .some((components) => ServerAccess.#details(tree, authId, components).privileges.size > 0);
  }

  /**
   * Effective privileges per path: for `path` alone (checked like an ACL path), or for PBS's
   * default paths plus every path where the auth ID (or a token's user) has an ACL entry.
   * Paths without privileges are left out.
   */
  async permissions(authId: Authid, path?: string): Promise<PermissionMap> {
    const state = await this.#userState();
    const { tree } = await this.#aclState();
    let paths: string[];
    if (path !== undefined) {
      paths = [joinAclPath(checkAclPath(path))];
    } else {
      const own = new Set([...DEFAULT_PERMISSION_PATHS, ...tree.pathsOf(formatAuthid(authId))]);
      if (isToken(authId)) for (const p of tree.pathsOf(formatUserid(authId))) own.add(p);
      paths = [...own].sort();
    }
    const out: PermissionMap = {};
    if (!this.#authidActive(state, authId)) return out;
    for (const p of paths) {
      const { privileges, propagated } = ServerAccess.#details(tree, authId, splitAclPath(p));
      if (privileges.size === 0) continue;
      const entry: Partial<Record<Privilege, boolean>> = {};
      for (const privilege of PRIVILEGES) {
        if (privileges.has(privilege)) entry[privilege] = propagated.has(privilege);
      }
      out[p] = entry;
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Login

  /** The stored hash of a user's password; PBS keys its own realm's users by name alone. */
  #passwordHash(shadow: ReadonlyMap<string, string>, userid: string): string | undefined {
    const direct = shadow.get(userid);
    if (direct !== undefined) return direct;
    const { name, realm } = parseUserid(userid);
    // A bare key never contains '@', so it cannot be mistaken for another user's full ID.
    return realm === 'pbs' && !name.includes('@') ? shadow.get(name) : undefined;
  }

  /** Whether `password` is the user's password (false for unknown users and other realms). */
  async checkUserPassword(userid: string, password: string): Promise<boolean> {
    if (password.length > LOGIN_PASSWORD_MAX_LENGTH) return false;
    const realm = parseUserid(userid).realm;
    const hash = (REALMS as readonly string[]).includes(realm)
      ? this.#passwordHash(await this.#shadowHashes(), userid)
      : undefined;
    const matches = verifyPassword(password, hash ?? DUMMY_HASH());
    return matches && hash !== undefined;
  }

  /**
   * POST /access/ticket: a password, or a still-valid ticket of the same user (renewal), gives
   * a new ticket and CSRF token. Every failure is AUTH_FAILED "permission check failed." with
   * the reason in details (for the log, not the client).
   */
  async login(username: string, password: string): Promise<LoginResult> {
    let userid: string;
    try {
      userid = canonicalUserid(username);
    } catch {
      throw loginFailed(`invalid user name ${JSON.stringify(username.slice(0, 100))}`);
    }
    const now = this.#now();
    // A valid ticket renews; text that only looks like one is tried as a password, as in PBS.
    const owner = password.startsWith('PBS:')
      ? this.#ticketOwner(password, await this.#key('auth'), now)
      : undefined;
    if (owner !== undefined) {
      if (owner !== userid) throw loginFailed(`ticket of ${owner} presented for ${userid}`);
    } else if (!(await this.checkUserPassword(userid, password))) {
      throw loginFailed(`wrong password or unknown user ${userid}`);
    }
    if (!this.#userActive(await this.#userState(), userid)) {
      throw loginFailed(`user ${userid} does not exist or is not active`);
    }
    return {
      username: userid,
      ticket: createTicket(userid, await this.#key('auth'), now),
      csrfToken: createCsrfToken(userid, await this.#key('csrf'), now),
    };
  }

  #ticketOwner(ticket: string, key: Buffer, now: number): string | undefined {
    try {
      return verifyTicket(ticket, key, now);
    } catch {
      return undefined;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Users

  async #changeUsers<T>(
    change: (files: UserChange) => T | Promise<T>,
    options: DigestOption & { alsoAcl?: (tree: AclTree) => boolean } = {},
  ): Promise<T> {
    return withLock(lockUsers(this.dirs), async () => {
      const file = await readUserFile(this.dirs);
      if (options.expectDigest !== undefined && options.expectDigest !== file.digest) {
        throw digestMismatch(options.expectDigest, file.digest);
      }
      const files: UserChange = {
        entries: [...file.entries],
        shadow: await readHashFile(this.dirs, SHADOW_JSON),
        tokenShadow: await readHashFile(this.dirs, TOKEN_SHADOW),
        changed: { users: false, shadow: false, tokenShadow: false },
      };
      const result = await change(files);
      // Grants go first, then secrets, then the entries: whatever an interruption leaves
      // behind grants less, never more (no stale hash or ACL entry outlives its user).
      if (options.alsoAcl !== undefined) {
        const alsoAcl = options.alsoAcl;
        await withLock(lockAcl(this.dirs), async () => {
          const acl = await readAclFile(this.dirs);
          if (alsoAcl(acl.tree)) await writeAclFile(this.dirs, acl.tree);
        });
      }
      if (files.changed.shadow) await writeHashFile(this.dirs, SHADOW_JSON, files.shadow);
      if (files.changed.tokenShadow) {
        await writeHashFile(this.dirs, TOKEN_SHADOW, files.tokenShadow);
      }
      if (files.changed.users) await writeUserFile(this.dirs, files.entries);
      return result;
    });
  }

  static #rootEntry(): UserEntry {
    return { userid: ROOT_USERID, comment: 'Superuser' };
  }

  /** All users (root@pam always), sorted; with their tokens when asked. Digest of user.cfg. */
  async listUsers(
    options: { includeTokens?: boolean } = {},
  ): Promise<{ users: UserInfo[]; digest: string }> {
    const state = await this.#userState();
    const users = new Map(state.users);
    if (!users.has(ROOT_USERID)) users.set(ROOT_USERID, ServerAccess.#rootEntry());
    const list = [...users.values()]
      .sort((a, b) => (a.userid < b.userid ? -1 : a.userid > b.userid ? 1 : 0))
      .map((user): UserInfo => {
        if (options.includeTokens !== true) return { ...user };
        const tokens = [...state.tokens.values()]
          .filter((t) => formatUserid(parseAuthid(t.tokenid)) === user.userid)
          .sort((a, b) => (a.tokenid < b.tokenid ? -1 : 1));
        return tokens.length === 0 ? { ...user } : { ...user, tokens };
      });
    return { users: list, digest: state.digest };
  }

  async getUser(userid: string): Promise<{ user: UserEntry; digest: string }> {
    const id = canonicalUserid(userid);
    const state = await this.#userState();
    const user =
      state.users.get(id) ?? (id === ROOT_USERID ? ServerAccess.#rootEntry() : undefined);
    if (user === undefined) throw notFoundUser(id);
    return { user: { ...user }, digest: state.digest };
  }

  async userExists(userid: string): Promise<boolean> {
    const id = canonicalUserid(userid);
    return id === ROOT_USERID || (await this.#userState()).users.has(id);
  }

  /** Whether a user (or token) is configured; root@pam always is. */
  async authidExists(authId: Authid): Promise<boolean> {
    const state = await this.#userState();
    const userid = formatUserid(authId);
    if (userid !== ROOT_USERID && !state.users.has(userid)) return false;
    return !isToken(authId) || state.tokens.has(formatAuthid(authId));
  }

  /** Add a user (realm pbs or pam), optionally with a password. ALREADY_EXISTS if it exists. */
  async createUser(user: UserEntry, password?: string): Promise<void> {
    const userid = canonicalUserid(user.userid);
    checkRealm(userid);
    const { userid: _ignored, ...given } = user;
    const props: Record<string, unknown> = {};
    applyProps(props, given);
    checkProps(props, 'user');
    if (userid === ROOT_USERID) throw alreadyExists(userid);
    if (password !== undefined) checkPassword(password);
    await this.#changeUsers((files) => {
      if (files.entries.some((e) => e.type === 'user' && e.userid === userid)) {
        throw alreadyExists(userid);
      }
      files.entries.push({ type: 'user', userid, ...props });
      files.changed.users = true;
      setHash(files, userid, password === undefined ? undefined : hashPassword(password));
    });
  }

  async updateUser(userid: string, update: UserUpdate, options: DigestOption = {}): Promise<void> {
    const id = canonicalUserid(userid);
    const { password, delete: remove = [], ...given } = update;
    const probe: Record<string, unknown> = {};
    applyProps(probe, given);
    checkProps(probe, 'user');
    if (password !== undefined) checkPassword(password);
    if (id === ROOT_USERID && (given.enable === false || (given.expire ?? 0) > 0)) {
      throw new BurrowError('INVALID_ARGUMENT', 'root@pam cannot be disabled or expire');
    }
    await this.#changeUsers((files) => {
      let index = files.entries.findIndex((e) => e.type === 'user' && e.userid === id);
      if (index < 0) {
        if (id !== ROOT_USERID) throw notFoundUser(id);
        files.entries.unshift({ type: 'user', ...ServerAccess.#rootEntry() });
        index = 0;
      }
      const current = files.entries[index] as UserConfigEntry & { type: 'user' };
      const next: Record<string, unknown> = { ...current };
      for (const key of remove) delete next[key];
      applyProps(next, given);
      files.entries[index] = next as unknown as UserConfigEntry;
      files.changed.users = true;
      if (password !== undefined) setHash(files, id, hashPassword(password));
    }, options);
  }

  /** Remove a user with its password, tokens and ACL entries (root@pam cannot be removed). */
  async deleteUser(userid: string, options: DigestOption = {}): Promise<void> {
    const id = canonicalUserid(userid);
    if (id === ROOT_USERID) {
      throw new BurrowError('INVALID_ARGUMENT', 'root@pam cannot be removed');
    }
    const ownedBy = (authid: string): boolean => authid === id || authid.startsWith(`${id}!`);
    await this.#changeUsers(
      (files) => {
        if (!files.entries.some((e) => e.type === 'user' && e.userid === id)) {
          throw notFoundUser(id);
        }
        files.entries = files.entries.filter(
          (e) => !(e.type === 'user' ? e.userid === id : ownedBy(e.tokenid)),
        );
        files.changed.users = true;
        setHash(files, id, undefined);
        for (const tokenid of [...files.tokenShadow.keys()]) {
          if (ownedBy(tokenid) && tokenid !== id) {
            files.tokenShadow.delete(tokenid);
            files.changed.tokenShadow = true;
          }
        }
      },
      { ...options, alsoAcl: (tree) => tree.removeUgids(ownedBy) },
    );
  }

  /** Set (or replace) a user's password; the user must exist. */
  async setPassword(userid: string, password: string): Promise<void> {
    const id = canonicalUserid(userid);
    checkRealm(id);
    checkPassword(password);
    await this.#changeUsers((files) => {
      if (id !== ROOT_USERID && !files.entries.some((e) => e.type === 'user' && e.userid === id)) {
        throw notFoundUser(id);
      }
      setHash(files, id, hashPassword(password));
    });
  }

  // -------------------------------------------------------------------------------------------
  // API tokens

  async listTokens(userid: string): Promise<{ tokens: TokenEntry[]; digest: string }> {
    const id = canonicalUserid(userid);
    const state = await this.#userState();
    if (id !== ROOT_USERID && !state.users.has(id)) throw notFoundUser(id);
    const tokens = [...state.tokens.values()]
      .filter((t) => formatUserid(parseAuthid(t.tokenid)) === id)
      .sort((a, b) => (a.tokenid < b.tokenid ? -1 : 1))
      .map((t) => ({ ...t }));
    return { tokens, digest: state.digest };
  }

  async getToken(userid: string, name: string): Promise<{ token: TokenEntry; digest: string }> {
    const tokenid = tokenIdOf(userid, name);
    const state = await this.#userState();
    const token = state.tokens.get(tokenid);
    if (token === undefined) throw notFoundToken(tokenid);
    return { token: { ...token }, digest: state.digest };
  }

  /**
   * Create an API token; its secret (a random UUID) is returned once and only its hash is
   * kept. NOT_FOUND without the user, ALREADY_EXISTS if the token exists.
   */
  async generateToken(
    userid: string,
    name: string,
    props: TokenProps = {},
    options: DigestOption = {},
  ): Promise<{ tokenid: string; value: string }> {
    const tokenid = tokenIdOf(userid, name);
    const owner = canonicalUserid(userid);
    const normalized: Record<string, unknown> = {};
    applyProps(normalized, props);
    checkProps(normalized, 'token');
    const value = randomUUID();
    await this.#changeUsers((files) => {
      if (
        owner !== ROOT_USERID &&
        !files.entries.some((e) => e.type === 'user' && e.userid === owner)
      ) {
        throw notFoundUser(owner);
      }
      if (files.entries.some((e) => e.type === 'token' && e.tokenid === tokenid)) {
        throw new BurrowError(
          'ALREADY_EXISTS',
          `token '${name}' for user '${owner}' already exists.`,
          { details: { tokenid } },
        );
      }
      files.entries.push({ type: 'token', tokenid, ...normalized });
      files.changed.users = true;
      files.tokenShadow.set(tokenid, hashPassword(value));
      files.changed.tokenShadow = true;
    }, options);
    return { tokenid, value };
  }

  async updateToken(
    userid: string,
    name: string,
    update: TokenUpdate,
    options: DigestOption = {},
  ): Promise<void> {
    const tokenid = tokenIdOf(userid, name);
    const { delete: remove = [], ...given } = update;
    const probe: Record<string, unknown> = {};
    applyProps(probe, given);
    checkProps(probe, 'token');
    await this.#changeUsers((files) => {
      const index = files.entries.findIndex((e) => e.type === 'token' && e.tokenid === tokenid);
      if (index < 0) throw notFoundToken(tokenid);
      const next: Record<string, unknown> = { ...files.entries[index] };
      for (const key of remove) delete next[key];
      applyProps(next, given);
      files.entries[index] = next as unknown as UserConfigEntry;
      files.changed.users = true;
    }, options);
  }

  /** Remove an API token with its secret and its ACL entries. */
  async deleteToken(userid: string, name: string, options: DigestOption = {}): Promise<void> {
    const tokenid = tokenIdOf(userid, name);
    await this.#changeUsers(
      (files) => {
        if (!files.entries.some((e) => e.type === 'token' && e.tokenid === tokenid)) {
          throw notFoundToken(tokenid);
        }
        files.entries = files.entries.filter((e) => !(e.type === 'token' && e.tokenid === tokenid));
        files.changed.users = true;
        if (files.tokenShadow.delete(tokenid)) files.changed.tokenShadow = true;
      },
      { ...options, alsoAcl: (tree) => tree.removeUgids((u) => u === tokenid) },
    );
  }

  // -------------------------------------------------------------------------------------------
  // ACL

  /** ACL entries, all or those on `path` (with `exact`) or at and below it. Digest of acl.cfg. */
  async readAcl(
    options: { path?: string; exact?: boolean } = {},
  ): Promise<{ entries: AclListItem[]; digest: string }> {
    const { tree, digest } = await this.#aclState();
    let entries = tree.list();
    if (options.path !== undefined) {
      const prefix = `/${checkAclPath(options.path).join('/')}`;
      entries = entries.filter((e) =>
        options.exact === true
          ? e.path === prefix
          : prefix === '/' || e.path === prefix || e.path.startsWith(`${prefix}/`),
      );
    }
    return { entries, digest };
  }

  /**
   * Grant (or with `delete`, take away) a role on a path. Granting needs an existing user or
   * token; root@pam needs no grants and gets none.
   */
  async updateAcl(update: AclUpdate, options: DigestOption = {}): Promise<void> {
    const path = `/${checkAclPath(update.path).join('/')}`;
    const role = checkRoleName(update.role);
    const authId = parseAuthid(update.authId);
    const ugid = formatAuthid(authId);
    if (ugid === ROOT_USERID) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'root@pam has every privilege; it takes no ACL entries',
      );
    }
    // The user lock (shared) keeps the auth ID from being removed before the grant is written.
    await withLock(lockUsers(this.dirs, false), async () => {
      if (update.delete !== true) {
        const file = await readUserFile(this.dirs);
        const userid = formatUserid(authId);
        const exists =
          (userid === ROOT_USERID ||
            file.entries.some((e) => e.type === 'user' && e.userid === userid)) &&
          (!isToken(authId) || file.entries.some((e) => e.type === 'token' && e.tokenid === ugid));
        if (!exists) {
          throw new BurrowError('NOT_FOUND', `user '${ugid}' does not exist.`, {
            details: { authId: ugid },
          });
        }
      }
      await withLock(lockAcl(this.dirs), async () => {
        const acl = await readAclFile(this.dirs);
        if (options.expectDigest !== undefined && options.expectDigest !== acl.digest) {
          throw digestMismatch(options.expectDigest, acl.digest);
        }
        if (update.delete === true) acl.tree.remove(path, ugid, role);
        else acl.tree.insert(path, ugid, role, update.propagate ?? true);
        await writeAclFile(this.dirs, acl.tree);
      });
    });
  }
}

function notFoundUser(userid: string): BurrowError {
  return new BurrowError('NOT_FOUND', `user '${userid}' does not exist.`, {
    details: { userid },
  });
}

function notFoundToken(tokenid: string): BurrowError {
  const authId = parseAuthid(tokenid);
  return new BurrowError(
    'NOT_FOUND',
    `token '${authId.tokenName ?? ''}' of user '${formatUserid(authId)}' does not exist.`,
    { details: { tokenid } },
  );
}

function alreadyExists(userid: string): BurrowError {
  return new BurrowError('ALREADY_EXISTS', `user '${userid}' already exists.`, {
    details: { userid },
  });
}

/** Set or clear a user's password hash; the realm-less PBS key of the user goes either way. */
function setHash(files: UserChange, userid: string, hash: string | undefined): void {
  const { name, realm } = parseUserid(userid);
  const legacy = realm === 'pbs' && !name.includes('@') ? name : undefined;
  if (legacy !== undefined && files.shadow.delete(legacy)) files.changed.shadow = true;
  if (hash === undefined) {
    if (files.shadow.delete(userid)) files.changed.shadow = true;
  } else {
    files.shadow.set(userid, hash);
    files.changed.shadow = true;
  }
}

/**
 * Apply the given properties to an entry in PBS's normal form: text is trimmed and empty text
 * removes the property; `enable true` and `expire 0` are the defaults and are not stored.
 * Properties not given (undefined) stay as they are.
 */
function applyProps(target: Record<string, unknown>, given: UserProps | TokenProps): void {
  for (const [key, value] of Object.entries(given) as [string, unknown][]) {
    if (value === undefined) continue;
    let stored: unknown = value;
    if (typeof value === 'string') stored = value.trim() === '' ? undefined : value.trim();
    else if (key === 'enable') stored = value === false ? false : undefined;
    else if (key === 'expire') stored = typeof value === 'number' && value > 0 ? value : undefined;
    if (stored === undefined) delete target[key];
    else target[key] = stored;
  }
}
