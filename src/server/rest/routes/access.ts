/**
 * The /access routes (PBS's access API): login tickets, the caller's permissions, users, API
 * tokens, the ACL and passwords. The operations are ServerAccess's; this file adds PBS's
 * permission rules:
 *
 * - Listing or reading users and tokens: Sys.Audit on /access/users, or the caller's own user.
 * - Creating users: Permissions.Modify on /access/users. Changing or removing a user and
 *   managing its tokens: Permissions.Modify there, or the caller's own user (a user, not one of
 *   its tokens). Without Permissions.Modify a user may not change its own `enable` or `expire`
 *   (PBS allows it; see docs/design.md).
 * - Passwords of `pam` users are set by root@pam only (or by the user itself).
 * - The ACL: Sys.Audit on /access/acl to read it all, else the entries of the caller's own
 *   tokens; Permissions.Modify on /access/acl to change it, else a user may change the entries
 *   of its own tokens only.
 * - Permissions of other auth IDs: Sys.Audit on /access, or the caller's own tokens.
 */
import { BurrowError } from '../../../lib/errors.js';
import { SAFE_ID_RE } from '../../../types/backup.js';
import {
  formatAuthid,
  formatUserid,
  isToken,
  parseAuthid,
  parseUserid,
  type Authid,
} from '../../../types/auth.js';
import { ROLES, ROLE_NAMES } from '../../access/roles.js';
import {
  LOGIN_PASSWORD_MAX_LENGTH,
  PASSWORD_MAX_LENGTH,
  PASSWORD_MIN_LENGTH,
  ROOT_USERID,
  type ServerAccess,
  type UserDeletable,
} from '../../access/server-access.js';
import type { UserProps } from '../../access/user-config.js';
import {
  dataReply,
  optionalBoolean,
  optionalString,
  stringParam,
  type ParamSchema,
  type ParamSpec,
  type Permission,
  type Route,
  type RouteContext,
} from '../route.js';
import { permissionDenied } from '../router.js';

// ---------------------------------------------------------------------------------------------
// parameters

const USERID: ParamSpec = {
  type: 'string',
  description: 'User ID (name@realm).',
  minLength: 3,
  maxLength: 64,
};
const AUTH_ID: ParamSpec = {
  type: 'string',
  description: 'Authentication ID: a user (name@realm) or an API token (name@realm!token).',
  minLength: 3,
  maxLength: 64,
};
const TOKEN_NAME: ParamSpec = {
  type: 'string',
  description: 'The token ID part of an API token authentication id.',
  pattern: SAFE_ID_RE,
  maxLength: 64,
};
const COMMENT: ParamSpec = {
  type: 'string',
  description: 'Comment.',
  maxLength: 128,
  optional: true,
};
const ENABLE: ParamSpec = {
  type: 'boolean',
  description: "Enable the account (default). You can set this to '0' to disable the account.",
  optional: true,
};
const EXPIRE: ParamSpec = {
  type: 'integer',
  description: "Account expiration date (seconds since epoch). '0' means no expiration date.",
  minimum: 0,
  optional: true,
};
const NAME = (description: string): ParamSpec => ({
  type: 'string',
  description,
  maxLength: 64,
  optional: true,
});
const PASSWORD: ParamSpec = {
  type: 'string',
  description: 'User Password.',
  minLength: PASSWORD_MIN_LENGTH,
  maxLength: PASSWORD_MAX_LENGTH,
};
const DIGEST: ParamSpec = {
  type: 'string',
  description: 'Prevent changes if current configuration file has different SHA256 digest.',
  pattern: /^[a-f0-9]{64}$/,
  optional: true,
};
const ACL_PATH: ParamSpec = {
  type: 'string',
  description: 'Access control path.',
  minLength: 1,
  maxLength: 128,
};

/** A token's settable properties (TOKEN_KEYS); a user has them too. */
const TOKEN_PROPS: ParamSchema = { comment: COMMENT, enable: ENABLE, expire: EXPIRE };

const USER_PROPS: ParamSchema = {
  ...TOKEN_PROPS,
  firstname: NAME('First name.'),
  lastname: NAME('Last name.'),
  email: NAME('E-Mail Address.'),
};

const TOKEN_PARAMS: ParamSchema = { userid: USERID, 'token-name': TOKEN_NAME };

// ---------------------------------------------------------------------------------------------
// helpers

function strings(ctx: RouteContext, name: string): string[] {
  const value = ctx.params[name];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return typeof value === 'string' ? [value] : [];
}

/**
 * Only the properties that were given, so absent ones stay untouched. The router has checked
 * each against its schema, so the types are the schema's.
 */
function given(ctx: RouteContext, keys: readonly string[]): UserProps {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const value = ctx.params[key];
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      out[key] = value;
    }
  }
  return out;
}

function caller(ctx: RouteContext): Authid {
  if (ctx.authId === undefined) throw permissionDenied();
  return ctx.authId;
}

function digestOption(ctx: RouteContext): { expectDigest?: string } {
  const digest = optionalString(ctx, 'digest');
  return digest === undefined ? {} : { expectDigest: digest };
}

function canonicalUserid(text: string): string {
  return formatUserid(parseUserid(text));
}

/** Whether the caller is the user named by the `userid` parameter (a user, not a token: PBS's UserParam). */
function isSelf(ctx: RouteContext): boolean {
  const authId = caller(ctx);
  return !isToken(authId) && formatUserid(authId) === canonicalUserid(stringParam(ctx, 'userid'));
}

async function has(ctx: RouteContext, path: string, privilege: 'Sys.Audit' | 'Permissions.Modify') {
  return (await ctx.privileges(path)).has(privilege);
}

/** The documented permission of a route that requireUserAccess checks. */
function ownUserPermission(privilege: 'Sys.Audit' | 'Permissions.Modify'): Permission {
  return { kind: 'handler', why: `${privilege} on /access/users, or the own user` };
}

/** PBS's `Or(Privilege(/access/users, privilege), UserParam("userid"))`. */
async function requireUserAccess(
  ctx: RouteContext,
  privilege: 'Sys.Audit' | 'Permissions.Modify',
): Promise<void> {
  if (isSelf(ctx)) return;
  if (await has(ctx, '/access/users', privilege)) return;
  throw permissionDenied();
}

function isSuperuser(authId: Authid): boolean {
  return !isToken(authId) && formatUserid(authId) === ROOT_USERID;
}

const USER_KEYS = ['comment', 'enable', 'expire', 'firstname', 'lastname', 'email'] as const;
const TOKEN_KEYS = ['comment', 'enable', 'expire'] as const;
const USER_DELETABLE: readonly UserDeletable[] = ['comment', 'firstname', 'lastname', 'email'];

// ---------------------------------------------------------------------------------------------
// routes

export function accessRoutes(access: ServerAccess): Route[] {
  const createTicket: Route = {
    method: 'POST',
    path: '/access/ticket',
    description: 'Create or verify authentication ticket.',
    parameters: {
      username: { type: 'string', description: 'User name (name@realm).', maxLength: 64 },
      password: {
        type: 'string',
        description: 'The secret password, or a valid ticket (to renew it).',
        minLength: 1,
        maxLength: LOGIN_PASSWORD_MAX_LENGTH,
      },
      'tfa-challenge': {
        type: 'string',
        description: 'The signed TFA challenge string.',
        optional: true,
      },
      path: { type: 'string', description: 'Path for verifying terminal tickets.', optional: true },
      privs: {
        type: 'string',
        description: 'Privilege for verifying terminal tickets.',
        optional: true,
      },
      port: {
        type: 'integer',
        description: 'Port for verifying terminal tickets.',
        optional: true,
      },
      'http-only': {
        type: 'boolean',
        description:
          'Whether the ticket should be set as an HttpOnly cookie (not supported: it is returned in the body).',
        optional: true,
      },
    },
    permission: { kind: 'world' },
    async handler(ctx) {
      // Burrow has no second factors and no terminal tickets: such requests cannot succeed.
      for (const name of ['tfa-challenge', 'path', 'privs', 'port']) {
        if (ctx.params[name] !== undefined) {
          throw new BurrowError('AUTH_FAILED', 'permission check failed.', {
            details: { reason: `'${name}' is not supported` },
          });
        }
      }
      const result = await access.login(stringParam(ctx, 'username'), stringParam(ctx, 'password'));
      return {
        username: result.username,
        ticket: result.ticket,
        CSRFPreventionToken: result.csrfToken,
      };
    },
  };

  const logout: Route = {
    method: 'DELETE',
    path: '/access/ticket',
    description: 'Log out (tickets stay valid until they expire; there is no cookie to clear).',
    parameters: {},
    permission: { kind: 'world' },
    handler: () => Promise.resolve(null),
  };

  const roles: Route = {
    method: 'GET',
    path: '/access/roles',
    description: 'Role list.',
    parameters: {},
    permission: { kind: 'anybody' },
    handler: () =>
      Promise.resolve(
        ROLE_NAMES.map((roleid) => ({
          roleid,
          privs: [...ROLES[roleid].privileges],
          comment: ROLES[roleid].comment,
        })),
      ),
  };

  const permissions: Route = {
    method: 'GET',
    path: '/access/permissions',
    description: 'List permissions of the given or currently authenticated user / API token.',
    parameters: {
      'auth-id': { ...AUTH_ID, optional: true },
      path: { ...ACL_PATH, optional: true },
    },
    permission: { kind: 'anybody' },
    async handler(ctx) {
      const me = caller(ctx);
      const requested = optionalString(ctx, 'auth-id');
      let target = me;
      if (requested !== undefined) {
        target = parseAuthid(requested);
        const same = formatAuthid(target) === formatAuthid(me);
        const ownToken =
          !isToken(me) && isToken(target) && formatUserid(target) === formatUserid(me);
        if (!same && !ownToken && !(await has(ctx, '/access', 'Sys.Audit'))) {
          throw permissionDenied(`not allowed to list permissions of ${requested}`);
        }
      }
      return access.permissions(target, optionalString(ctx, 'path'));
    },
  };

  const listUsers: Route = {
    method: 'GET',
    path: '/access/users',
    description: 'List users (all with Sys.Audit on /access/users, else only the own user).',
    parameters: {
      include_tokens: {
        type: 'boolean',
        description: "Include user's API tokens in returned list.",
        default: false,
      },
    },
    permission: { kind: 'anybody' },
    async handler(ctx) {
      const me = caller(ctx);
      const all = await has(ctx, '/access/users', 'Sys.Audit');
      const { users, digest } = await access.listUsers({
        includeTokens: optionalBoolean(ctx, 'include_tokens') === true,
      });
      const own = formatUserid(me);
      return dataReply(all ? users : users.filter((u) => u.userid === own), { digest });
    },
  };

  const createUser: Route = {
    method: 'POST',
    path: '/access/users',
    description: 'Create new user.',
    parameters: { userid: USERID, ...USER_PROPS, password: { ...PASSWORD, optional: true } },
    permission: { kind: 'privileges', path: '/access/users', privileges: ['Permissions.Modify'] },
    async handler(ctx) {
      const userid = canonicalUserid(stringParam(ctx, 'userid'));
      const password = optionalString(ctx, 'password');
      if (
        password !== undefined &&
        parseUserid(userid).realm === 'pam' &&
        !isSuperuser(caller(ctx))
      ) {
        throw permissionDenied('only superuser can edit pam credentials!');
      }
      await access.createUser({ userid, ...given(ctx, USER_KEYS) }, password);
      return null;
    },
  };

  const readUser: Route = {
    method: 'GET',
    path: '/access/users/{userid}',
    description: 'Read user configuration data.',
    parameters: { userid: USERID },
    permission: ownUserPermission('Sys.Audit'),
    async handler(ctx) {
      await requireUserAccess(ctx, 'Sys.Audit');
      const { user, digest } = await access.getUser(stringParam(ctx, 'userid'));
      return dataReply(user, { digest });
    },
  };

  const updateUser: Route = {
    method: 'PUT',
    path: '/access/users/{userid}',
    description: 'Update user configuration.',
    parameters: {
      userid: USERID,
      ...USER_PROPS,
      password: { ...PASSWORD, optional: true },
      delete: {
        type: 'array',
        description: 'List of properties to delete.',
        items: { type: 'string', enum: USER_DELETABLE },
        optional: true,
      },
      digest: DIGEST,
    },
    permission: ownUserPermission('Permissions.Modify'),
    async handler(ctx) {
      const me = caller(ctx);
      const userid = canonicalUserid(stringParam(ctx, 'userid'));
      const self = isSelf(ctx);
      const privileged = await has(ctx, '/access/users', 'Permissions.Modify');
      if (!self && !privileged) throw permissionDenied();
      const changes = given(ctx, USER_KEYS);
      if (!privileged && (changes.enable !== undefined || changes.expire !== undefined)) {
        throw permissionDenied(
          'changing enable or expire needs Permissions.Modify on /access/users',
        );
      }
      const password = optionalString(ctx, 'password');
      if (
        password !== undefined &&
        !self &&
        parseUserid(userid).realm === 'pam' &&
        !isSuperuser(me)
      ) {
        throw permissionDenied('only superuser can edit pam credentials!');
      }
      await access.updateUser(
        userid,
        {
          ...changes,
          ...(password === undefined ? {} : { password }),
          delete: strings(ctx, 'delete') as UserDeletable[],
        },
        digestOption(ctx),
      );
      return null;
    },
  };

  const deleteUser: Route = {
    method: 'DELETE',
    path: '/access/users/{userid}',
    description: 'Remove a user, with its tokens and ACL entries.',
    parameters: { userid: USERID, digest: DIGEST },
    permission: ownUserPermission('Permissions.Modify'),
    async handler(ctx) {
      await requireUserAccess(ctx, 'Permissions.Modify');
      await access.deleteUser(stringParam(ctx, 'userid'), digestOption(ctx));
      return null;
    },
  };

  const listTokens: Route = {
    method: 'GET',
    path: '/access/users/{userid}/token',
    description: "List user's API tokens.",
    parameters: { userid: USERID },
    permission: ownUserPermission('Sys.Audit'),
    async handler(ctx) {
      await requireUserAccess(ctx, 'Sys.Audit');
      const { tokens, digest } = await access.listTokens(stringParam(ctx, 'userid'));
      return dataReply(tokens, { digest });
    },
  };

  const readToken: Route = {
    method: 'GET',
    path: '/access/users/{userid}/token/{token-name}',
    description: "Read user's API token metadata.",
    parameters: TOKEN_PARAMS,
    permission: ownUserPermission('Sys.Audit'),
    async handler(ctx) {
      await requireUserAccess(ctx, 'Sys.Audit');
      const { token, digest } = await access.getToken(
        stringParam(ctx, 'userid'),
        stringParam(ctx, 'token-name'),
      );
      return dataReply(token, { digest });
    },
  };

  const generateToken: Route = {
    method: 'POST',
    path: '/access/users/{userid}/token/{token-name}',
    description: 'Generate a new API token; its secret is shown only in this answer.',
    parameters: {
      ...TOKEN_PARAMS,
      ...TOKEN_PROPS,
      digest: DIGEST,
    },
    permission: ownUserPermission('Permissions.Modify'),
    async handler(ctx) {
      await requireUserAccess(ctx, 'Permissions.Modify');
      return access.generateToken(
        stringParam(ctx, 'userid'),
        stringParam(ctx, 'token-name'),
        given(ctx, TOKEN_KEYS),
        digestOption(ctx),
      );
    },
  };

  const updateToken: Route = {
    method: 'PUT',
    path: '/access/users/{userid}/token/{token-name}',
    description: "Update user's API token metadata.",
    parameters: {
      ...TOKEN_PARAMS,
      ...TOKEN_PROPS,
      delete: {
        type: 'array',
        description: 'List of properties to delete.',
        items: { type: 'string', enum: ['comment'] },
        optional: true,
      },
      digest: DIGEST,
    },
    permission: ownUserPermission('Permissions.Modify'),
    async handler(ctx) {
      await requireUserAccess(ctx, 'Permissions.Modify');
      await access.updateToken(
        stringParam(ctx, 'userid'),
        stringParam(ctx, 'token-name'),
        { ...given(ctx, TOKEN_KEYS), delete: strings(ctx, 'delete') as 'comment'[] },
        digestOption(ctx),
      );
      return null;
    },
  };

  const deleteToken: Route = {
    method: 'DELETE',
    path: '/access/users/{userid}/token/{token-name}',
    description: "Delete a user's API token (and its ACL entries).",
    parameters: { ...TOKEN_PARAMS, digest: DIGEST },
    permission: ownUserPermission('Permissions.Modify'),
    async handler(ctx) {
      await requireUserAccess(ctx, 'Permissions.Modify');
      await access.deleteToken(
        stringParam(ctx, 'userid'),
        stringParam(ctx, 'token-name'),
        digestOption(ctx),
      );
      return null;
    },
  };

  const readAcl: Route = {
    method: 'GET',
    path: '/access/acl',
    description: 'Read Access Control List (ACLs).',
    parameters: {
      path: { ...ACL_PATH, optional: true },
      exact: {
        type: 'boolean',
        description: 'If set, returns only ACL for the exact path.',
        default: false,
      },
    },
    permission: { kind: 'anybody' },
    async handler(ctx) {
      const me = caller(ctx);
      const path = optionalString(ctx, 'path');
      const { entries, digest } = await access.readAcl({
        ...(path === undefined ? {} : { path }),
        exact: optionalBoolean(ctx, 'exact') === true,
      });
      if (await has(ctx, '/access/acl', 'Sys.Audit')) return dataReply(entries, { digest });
      const own = formatUserid(me);
      const mine = entries.filter((e) => {
        if (e.ugid_type !== 'user') return false;
        const id = parseAuthid(e.ugid);
        return isToken(id) && formatUserid(id) === own;
      });
      return dataReply(mine, { digest });
    },
  };

  const updateAcl: Route = {
    method: 'PUT',
    path: '/access/acl',
    description: 'Update Access Control List (ACLs).',
    parameters: {
      path: ACL_PATH,
      role: { type: 'string', description: 'Role ID.', enum: ROLE_NAMES },
      propagate: {
        type: 'boolean',
        description: 'Allow to propagate (inherit) permissions.',
        default: true,
      },
      'auth-id': { ...AUTH_ID, optional: true },
      group: { type: 'string', description: 'Group ID (not supported).', optional: true },
      delete: {
        type: 'boolean',
        description: 'Remove permissions (instead of adding it).',
        optional: true,
      },
      digest: DIGEST,
    },
    permission: {
      kind: 'handler',
      why: 'Permissions.Modify on /access/acl, or a user for its own tokens',
    },
    async handler(ctx) {
      const me = caller(ctx);
      const authIdText = optionalString(ctx, 'auth-id');
      const privileged = await has(ctx, '/access/acl', 'Permissions.Modify');
      if (optionalString(ctx, 'group') !== undefined) {
        throw new BurrowError('INVALID_ARGUMENT', 'group ACLs are not supported');
      }
      if (authIdText === undefined) {
        throw new BurrowError('INVALID_ARGUMENT', "missing 'auth-id'");
      }
      if (!privileged) {
        const target = parseAuthid(authIdText);
        if (isToken(me)) throw permissionDenied("Unprivileged API tokens can't set ACL items.");
        if (!isToken(target)) {
          throw permissionDenied('Unprivileged users can only set ACL items for API tokens.');
        }
        if (formatUserid(target) !== formatUserid(me)) {
          throw permissionDenied(
            'Unprivileged users can only set ACL items for their own API tokens.',
          );
        }
      }
      await access.updateAcl(
        {
          path: stringParam(ctx, 'path'),
          role: stringParam(ctx, 'role'),
          authId: authIdText,
          propagate: optionalBoolean(ctx, 'propagate') ?? true,
          delete: optionalBoolean(ctx, 'delete') === true,
        },
        digestOption(ctx),
      );
      return null;
    },
  };

  const changePassword: Route = {
    method: 'PUT',
    path: '/access/password',
    description: "Change a user's password.",
    parameters: {
      userid: USERID,
      password: PASSWORD,
      'confirmation-password': {
        type: 'string',
        description: 'The current password of the user making the change.',
        maxLength: LOGIN_PASSWORD_MAX_LENGTH,
        optional: true,
      },
    },
    permission: { kind: 'anybody' },
    async handler(ctx) {
      const me = caller(ctx);
      if (isToken(me)) throw permissionDenied('API tokens cannot access this API endpoint');
      const userid = canonicalUserid(stringParam(ctx, 'userid'));
      const self = formatUserid(me) === userid;
      const allowed =
        self ||
        isSuperuser(me) ||
        (parseUserid(userid).realm !== 'pam' && (await has(ctx, '/', 'Permissions.Modify')));
      if (!allowed) throw permissionDenied('you are not authorized to change the password.');
      const confirmation = optionalString(ctx, 'confirmation-password');
      if (
        confirmation !== undefined &&
        !(await access.checkUserPassword(formatUserid(me), confirmation))
      ) {
        throw new BurrowError(
          'AUTH_FAILED',
          'authentication failed - confirmation password is wrong',
        );
      }
      await access.setPassword(userid, stringParam(ctx, 'password'));
      return null;
    },
  };

  return [
    createTicket,
    logout,
    roles,
    permissions,
    listUsers,
    createUser,
    readUser,
    updateUser,
    deleteUser,
    listTokens,
    readToken,
    generateToken,
    updateToken,
    deleteToken,
    readAcl,
    updateAcl,
    changePassword,
  ];
}
