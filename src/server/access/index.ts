/**
 * Access control for the Burrow server: users, API tokens, passwords (SHA-crypt), PBS's roles
 * and ACL (acl.cfg), tickets and CSRF tokens, and request authentication. ServerAccess is the
 * AccessControl the server uses; the REST routes (rest/routes/access.ts) and `burrow-manager
 * user|acl` call its operations. The files live in the config directory (access-files.ts).
 */
export {
  ServerAccess,
  ROOT_USERID,
  REALMS,
  ticketFromCookies,
  tokenIdOf,
  type AclUpdate,
  type DigestOption,
  type LoginResult,
  type PermissionMap,
  type ServerAccessOptions,
  type TokenUpdate,
  type UserDeletable,
  type UserInfo,
  type UserUpdate,
} from './server-access.js';
export { ensureInitialAdmin, randomPassword } from './initial-admin.js';
export { ROLES, ROLE_NAMES, isRoleName, type RoleName } from './roles.js';
export { AclTree, checkAclPath, type AclListItem, type PrivilegeDetails } from './acl-config.js';
export type { TokenEntry, TokenProps, UserEntry, UserProps } from './user-config.js';
export { hashPassword, shaCrypt, verifyPassword } from './sha-crypt.js';
