/**
 * PBS's built-in roles (acl.cfg's role names) and the privileges each grants. PBS has no custom
 * roles. Some roles grant privileges Burrow has no use for (tape, and the Remote.Datastore*
 * privileges of push sync); they are listed as PBS names them, so an acl.cfg written by PBS reads,
 * and grant only the privileges of `Privilege` they contain, which for the tape roles is none.
 */
import { PRIVILEGES, type Privilege } from '../server-types.js';

export interface RoleInfo {
  readonly privileges: readonly Privilege[];
  readonly comment: string;
}

const DATASTORE_ADMIN: readonly Privilege[] = [
  'Datastore.Audit',
  'Datastore.Modify',
  'Datastore.Read',
  'Datastore.Verify',
  'Datastore.Backup',
  'Datastore.Prune',
];

/** In PBS's order (the order of its role enum, which `GET /access/roles` lists). */
export const ROLES = {
  Admin: { privileges: PRIVILEGES, comment: 'Administrator' },
  Audit: { privileges: ['Sys.Audit', 'Datastore.Audit'], comment: 'Auditor' },
  NoAccess: { privileges: [], comment: 'Disable Access' },
  DatastoreAdmin: { privileges: DATASTORE_ADMIN, comment: 'Datastore Administrator' },
  DatastoreReader: {
    privileges: ['Datastore.Audit', 'Datastore.Verify', 'Datastore.Read'],
    comment: 'Datastore Reader (inspect datastore content and do restores)',
  },
  DatastoreBackup: {
    privileges: ['Datastore.Backup'],
    comment: 'Datastore Backup (backup and restore owned backups)',
  },
  DatastorePowerUser: {
    privileges: ['Datastore.Prune', 'Datastore.Backup'],
    comment: 'Datastore PowerUser (backup, restore and prune owned backup)',
  },
  DatastoreAudit: { privileges: ['Datastore.Audit'], comment: 'Datastore Auditor' },
  RemoteAudit: { privileges: ['Remote.Audit'], comment: 'Remote Auditor' },
  RemoteAdmin: {
    privileges: ['Remote.Audit', 'Remote.Modify', 'Remote.Read'],
    comment: 'Remote Administrator',
  },
  RemoteSyncOperator: {
    privileges: ['Remote.Audit', 'Remote.Read'],
    comment: 'Synchronization Operator',
  },
  // PBS adds Remote.DatastoreBackup (and Remote.DatastorePrune / Remote.DatastoreModify) to these.
  RemoteSyncPushOperator: {
    privileges: ['Remote.Audit'],
    comment: 'Synchronisation Operator (push direction)',
  },
  RemoteDatastorePowerUser: { privileges: ['Remote.Audit'], comment: 'Remote Datastore Prune' },
  RemoteDatastoreAdmin: { privileges: ['Remote.Audit'], comment: 'Remote Datastore Admin' },
  // PBS's Tape.* privileges: Burrow has no tape support.
  TapeAudit: { privileges: [], comment: 'Tape Auditor' },
  TapeAdmin: { privileges: [], comment: 'Tape Administrator' },
  TapeOperator: { privileges: [], comment: 'Tape Operator' },
  TapeReader: { privileges: [], comment: 'Tape Reader' },
} as const satisfies Record<string, RoleInfo>;

export type RoleName = keyof typeof ROLES;

export const ROLE_NAMES = Object.keys(ROLES) as readonly RoleName[];

/** The role that takes away what a less specific path grants. */
export const NO_ACCESS: RoleName = 'NoAccess';

export function isRoleName(text: string): text is RoleName {
  return Object.hasOwn(ROLES, text);
}

export function rolePrivileges(role: RoleName): readonly Privilege[] {
  return ROLES[role].privileges;
}
