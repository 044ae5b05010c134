/**
 * The seams between the server's modules: who the caller is and what they may do (AccessControl,
 * implemented in access/), and what every part of the server is given to work with (ServerDeps).
 * The REST routes and the backup/reader protocol depend on these interfaces only, so each can be
 * built and tested on its own and assembled by buildServer.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from 'pino';
import type { BurrowDirs } from '../lib/dirs.js';
import type { TaskManager } from '../tasks/index.js';
import type { Authid } from '../types/auth.js';

/** PBS's privilege names, as they appear in roles, ACLs and permission checks. */
export const PRIVILEGES = [
  'Sys.Audit',
  'Sys.Modify',
  'Sys.PowerManagement',
  'Sys.Console',
  'Permissions.Modify',
  'Datastore.Audit',
  'Datastore.Allocate',
  'Datastore.Modify',
  'Datastore.Read',
  'Datastore.Verify',
  'Datastore.Backup',
  'Datastore.Prune',
  'Realm.Allocate',
  'Remote.Audit',
  'Remote.Modify',
  'Remote.Read',
  'Remote.Prune',
] as const;

export type Privilege = (typeof PRIVILEGES)[number];

/** What authentication looks at: the method decides whether a CSRF token is required. */
export interface RequestCredentials {
  readonly method: string;
  readonly headers: IncomingHttpHeaders;
}

export interface AccessControl {
  /**
   * The caller of a request: a ticket cookie (plus the CSRFPreventionToken header for methods
   * other than GET and HEAD) or a `PBSAPIToken` authorization header (pbs-protocol §3). Throws
   * BurrowError AUTH_FAILED for missing, wrong, expired or disabled credentials.
   */
  authenticate(request: RequestCredentials): Promise<Authid>;
  /**
   * Effective privileges of `authId` on an ACL path such as `/datastore/store1/ns1`; the empty
   * set when it has none. `root@pam` has every privilege everywhere.
   */
  privileges(authId: Authid, path: string): Promise<ReadonlySet<Privilege>>;
  /** Whether `authId` has any privilege on `path` or on any path below it. */
  anyPrivilegeBelow(authId: Authid, path: string): Promise<boolean>;
}

/** What the server's parts are given; buildServer assembles one and passes it down. */
export interface ServerDeps {
  readonly dirs: BurrowDirs;
  readonly access: AccessControl;
  readonly tasks: TaskManager;
  readonly log: Logger;
  /** Seconds since the epoch; injectable so ticket ages and task times can be tested. */
  readonly now: () => number;
}
