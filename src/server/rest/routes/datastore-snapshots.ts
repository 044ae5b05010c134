/**
 * /admin/datastore/{store}/groups, /snapshots, /files, /notes, /group-notes, /protected and
 * /change-owner (pbs-protocol §8): listing and changing groups and snapshots, with PBS's
 * privilege rules. Read access is Datastore.Audit (lists, notes, protection; files also with
 * Datastore.Read), changes need Datastore.Modify (removal also with Datastore.Prune); a caller
 * with only Datastore.Backup (or Datastore.Prune for removal) may act on the groups it owns.
 */
import type { DataStore } from '../../../datastore/datastore.js';
import { BurrowError, isBurrowError } from '../../../lib/errors.js';
import type { Authid } from '../../../types/auth.js';
import {
  authidEquals,
  formatAuthid,
  isToken,
  mayActAsOwner,
  parseAuthid,
  userOf,
} from '../../../types/auth.js';
import {
  BACKUP_TYPES,
  backupGroup,
  formatGroup,
  type BackupGroup,
  type BackupNamespace,
} from '../../../types/backup.js';
import {
  booleanParam,
  optionalString,
  requiredBoolean,
  stringParam,
  type Route,
  type RouteContext,
} from '../route.js';
import {
  BACKUP_ID_PARAM,
  BACKUP_TYPE_PARAM,
  GROUP_PARAMS,
  MODIFY_OR_PRUNE_OWNER,
  SNAPSHOT_PARAMS,
  STORE_NS_PARAMS,
  callerOf,
  checkNsPrivs,
  groupParam,
  namespaceParam,
  openCheckedGroup,
  openCheckedSnapshot,
  openStore,
  ownerRulePermission,
  type OwnerRule,
  permissionDenied,
} from './datastore-common.js';
import {
  allSnapshotFiles,
  groupListItem,
  snapshotListItem,
} from '../../../datastore/api-listing.js';
import type { GroupListItem, SnapshotListItem } from '../../../types/api.js';

const BASE = '/admin/datastore/{store}';

/** Reading a group or snapshot: Datastore.Audit, or Datastore.Backup and owning the group. */
const AUDIT_OR_OWNER: OwnerRule = {
  full: ['Datastore.Audit'],
  partial: ['Datastore.Backup'],
  operation: 'read',
};
/** Listing a snapshot's files, which downloading needs: also with Datastore.Read. */
const AUDIT_READ_OR_OWNER: OwnerRule = {
  full: ['Datastore.Audit', 'Datastore.Read'],
  partial: ['Datastore.Backup'],
  operation: 'read',
};
/** Changing notes or protection: Datastore.Modify, or Datastore.Backup and owning the group. */
const MODIFY_OR_OWNER: OwnerRule = {
  full: ['Datastore.Modify'],
  partial: ['Datastore.Backup'],
  operation: 'write',
};

/** A group listing's store, namespace, and whom it is for. */
interface Listing {
  store: DataStore;
  ns: BackupNamespace;
  caller: Authid;
  /** Datastore.Backup without Datastore.Audit: only the caller's own groups show. */
  ownedOnly: boolean;
}

/** PBS's checks for listing groups or snapshots: Datastore.Audit, or Datastore.Backup for owned ones. */
async function openListing(ctx: RouteContext): Promise<Listing> {
  const caller = callerOf(ctx);
  const name = stringParam(ctx, 'store');
  const ns = namespaceParam(ctx);
  const ownedOnly = await checkNsPrivs(ctx, name, ns, ['Datastore.Audit'], ['Datastore.Backup']);
  return { store: await openStore(ctx.deps, name, 'read'), ns, caller, ownedOnly };
}

/**
 * The groups of `groups` the listing shows, each with its owner. A group whose owner cannot be
 * read is left out (logged), as PBS skips it. Owners are read one group at a time, as the caller
 * consumes them.
 */
async function* visibleGroups(
  ctx: RouteContext,
  listing: Listing,
  groups: readonly BackupGroup[],
): AsyncGenerator<{ group: BackupGroup; owner: Authid }> {
  const { store, caller, ownedOnly } = listing;
  for (const group of groups) {
    let owner: Authid;
    try {
      owner = await store.getOwner(group);
    } catch (error) {
      ctx.deps.log.warn(
        `Failed to get owner of group '${formatGroup(group)}' in datastore '${store.name}' - ${error instanceof Error ? error.message : String(error)}`,
      );
      continue;
    }
    if (ownedOnly && !mayActAsOwner(caller, owner)) continue;
    yield { group, owner };
  }
}

/** Keep the error's code (and HTTP status), prefix its message as PBS does. */
function rewrap(error: unknown, prefix: string): unknown {
  if (isBurrowError(error)) {
    return new BurrowError(error.code, `${prefix} - ${error.message}`, {
      details: error.details,
      cause: error,
    });
  }
  return error;
}

const listGroups: Route = {
  method: 'GET',
  path: `${BASE}/groups`,
  description: 'List backup groups.',
  parameters: STORE_NS_PARAMS,
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit for all groups or Datastore.Backup for owned groups on /datastore/{store}[/{ns}]',
  },
  async handler(ctx): Promise<GroupListItem[]> {
    const listing = await openListing(ctx);
    const { store } = listing;
    const items: GroupListItem[] = [];
    for await (const { group, owner } of visibleGroups(
      ctx,
      listing,
      await store.listGroups(listing.ns),
    )) {
      try {
        items.push(await groupListItem(store, group, owner));
      } catch {
        // A group whose snapshots cannot be listed (removed meanwhile) is left out, as in PBS.
      }
    }
    return items;
  },
};

const deleteGroup: Route = {
  method: 'DELETE',
  path: `${BASE}/groups`,
  description: 'Delete backup group including all snapshots.',
  parameters: {
    ...GROUP_PARAMS,
    'error-on-protected': {
      type: 'boolean',
      default: true,
      description: 'Return error when group cannot be deleted because of protected snapshots',
    },
  },
  permission: ownerRulePermission(MODIFY_OR_PRUNE_OWNER),
  async handler(ctx) {
    const { store, group } = await openCheckedGroup(ctx, MODIFY_OR_PRUNE_OWNER);
    const result = await store.removeBackupGroup(group);
    const stats = {
      'removed-groups': result.removedAll ? 1 : 0,
      'protected-snapshots': result.keptSnapshots,
      'removed-snapshots': result.removedSnapshots,
    };
    if (result.keptSnapshots > 0) {
      const message = 'group only partially deleted due to protected snapshots';
      if (booleanParam(ctx, 'error-on-protected', true)) {
        throw new BurrowError('PROTECTED', message, { details: stats });
      }
      ctx.deps.log.warn(message);
    }
    return stats;
  },
};

/** The groups a snapshot listing covers, as PBS picks them from backup-type and backup-id. */
async function groupsToList(
  ctx: RouteContext,
  store: DataStore,
  ns: BackupNamespace,
): Promise<BackupGroup[]> {
  const type = optionalString(ctx, 'backup-type');
  const id = optionalString(ctx, 'backup-id');
  if (type !== undefined && id !== undefined) return [backupGroup(ns, type, id)];
  const all = await store.listGroups(ns);
  if (type !== undefined) return all.filter((g) => g.type === type);
  if (id !== undefined) {
    // PBS looks the id up under vm, ct and host, in that order.
    return BACKUP_TYPES.flatMap((t) => all.filter((g) => g.type === t && g.id === id));
  }
  return all;
}

const listSnapshots: Route = {
  method: 'GET',
  path: `${BASE}/snapshots`,
  description: 'List backup snapshots.',
  parameters: {
    ...STORE_NS_PARAMS,
    'backup-type': { ...BACKUP_TYPE_PARAM, optional: true },
    'backup-id': { ...BACKUP_ID_PARAM, optional: true },
  },
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit for all, or Datastore.Backup for owned groups, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx): Promise<SnapshotListItem[]> {
    const listing = await openListing(ctx);
    const { store } = listing;
    const items: SnapshotListItem[] = [];
    for await (const { group, owner } of visibleGroups(
      ctx,
      listing,
      await groupsToList(ctx, store, listing.ns),
    )) {
      for (const info of await store.listSnapshots(group)) {
        items.push(await snapshotListItem(store, info, owner));
      }
    }
    return items;
  },
};

const deleteSnapshot: Route = {
  method: 'DELETE',
  path: `${BASE}/snapshots`,
  description: 'Delete backup snapshot.',
  parameters: SNAPSHOT_PARAMS,
  permission: ownerRulePermission(MODIFY_OR_PRUNE_OWNER),
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, MODIFY_OR_PRUNE_OWNER);
    try {
      await store.removeBackupDir(dir, false);
    } catch (error) {
      throw rewrap(error, 'failed to delete snapshot');
    }
    return null;
  },
};

const listSnapshotFiles: Route = {
  method: 'GET',
  path: `${BASE}/files`,
  description: 'List snapshot files.',
  parameters: SNAPSHOT_PARAMS,
  permission: ownerRulePermission(AUDIT_READ_OR_OWNER),
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, AUDIT_READ_OR_OWNER);
    const info = await store.snapshotInfo(dir);
    return (await allSnapshotFiles(store, info)).files;
  },
};

const NOTES_PARAM = { type: 'string', description: 'A multiline text.' } as const;

const getNotes: Route = {
  method: 'GET',
  path: `${BASE}/notes`,
  description: 'Get "notes" for a specific backup',
  parameters: SNAPSHOT_PARAMS,
  permission: ownerRulePermission(AUDIT_OR_OWNER),
  async handler(ctx): Promise<string> {
    const { store, dir } = await openCheckedSnapshot(ctx, AUDIT_OR_OWNER);
    return store.getSnapshotNotes(dir);
  },
};

const setNotes: Route = {
  method: 'PUT',
  path: `${BASE}/notes`,
  description: 'Set "notes" for a specific backup',
  parameters: { ...SNAPSHOT_PARAMS, notes: NOTES_PARAM },
  permission: ownerRulePermission(MODIFY_OR_OWNER),
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, MODIFY_OR_OWNER);
    await store.setSnapshotNotes(dir, stringParam(ctx, 'notes'));
    return null;
  },
};

const getGroupNotes: Route = {
  method: 'GET',
  path: `${BASE}/group-notes`,
  description: 'Get "notes" for a backup group',
  parameters: GROUP_PARAMS,
  permission: ownerRulePermission(AUDIT_OR_OWNER),
  async handler(ctx): Promise<string> {
    const { store, group } = await openCheckedGroup(ctx, AUDIT_OR_OWNER);
    return store.getGroupNotes(group);
  },
};

const setGroupNotes: Route = {
  method: 'PUT',
  path: `${BASE}/group-notes`,
  description: 'Set "notes" for a backup group',
  parameters: { ...GROUP_PARAMS, notes: NOTES_PARAM },
  permission: ownerRulePermission(MODIFY_OR_OWNER),
  async handler(ctx) {
    const { store, group } = await openCheckedGroup(ctx, MODIFY_OR_OWNER);
    try {
      await store.setGroupNotes(group, stringParam(ctx, 'notes'));
    } catch (error) {
      throw rewrap(error, 'failed to set group notes');
    }
    return null;
  },
};

const getProtection: Route = {
  method: 'GET',
  path: `${BASE}/protected`,
  description: 'Query protection for a specific backup',
  parameters: SNAPSHOT_PARAMS,
  permission: ownerRulePermission(AUDIT_OR_OWNER),
  async handler(ctx): Promise<boolean> {
    const { store, dir } = await openCheckedSnapshot(ctx, AUDIT_OR_OWNER);
    return (await store.snapshotInfo(dir)).protected;
  },
};

const setProtection: Route = {
  method: 'PUT',
  path: `${BASE}/protected`,
  description: 'En- or disable protection for a specific backup',
  parameters: {
    ...SNAPSHOT_PARAMS,
    protected: { type: 'boolean', description: 'Enable/disable protection.' },
  },
  permission: ownerRulePermission(MODIFY_OR_OWNER),
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, MODIFY_OR_OWNER);
    await store.setProtected(dir, requiredBoolean(ctx, 'protected'));
    return null;
  },
};

/**
 * Whether a caller without Datastore.Modify may hand a group it owns to `newOwner`: only between
 * a user and that user's own tokens (PBS's set_backup_owner rules).
 */
export function mayChangeOwner(caller: Authid, owner: Authid, newOwner: Authid): boolean {
  const asUser = (a: Authid): Authid => userOf(a);
  if (isToken(owner) && isToken(newOwner)) {
    // token to token of the same user, done by that user
    return authidEquals(asUser(owner), asUser(newOwner)) && authidEquals(asUser(owner), caller);
  }
  if (isToken(owner)) {
    // token to its user, done by that user
    return authidEquals(asUser(owner), caller) && authidEquals(newOwner, caller);
  }
  if (isToken(newOwner)) {
    // user to one of the user's tokens, done by that user
    return authidEquals(owner, caller) && authidEquals(asUser(newOwner), caller);
  }
  return false;
}

const changeOwner: Route = {
  method: 'POST',
  path: `${BASE}/change-owner`,
  description: 'Change owner of a backup group',
  parameters: {
    ...GROUP_PARAMS,
    'new-owner': {
      type: 'string',
      minLength: 3,
      maxLength: 64,
      description: 'Authentication ID',
    },
  },
  permission: {
    kind: 'handler',
    why: "Datastore.Modify on the namespace, or changing ownership between a user and the user's token for owned groups with Datastore.Backup",
  },
  async handler(ctx) {
    const caller = callerOf(ctx);
    const group = groupParam(ctx);
    const name = stringParam(ctx, 'store');
    const newOwner = parseAuthid(stringParam(ctx, 'new-owner'));
    const ownerCheck = await checkNsPrivs(
      ctx,
      name,
      group.ns,
      ['Datastore.Modify'],
      ['Datastore.Backup'],
    );
    const store = await openStore(ctx.deps, name, 'write');
    const owner = await store.getOwner(group);
    if (ownerCheck && !mayChangeOwner(caller, owner, newOwner)) {
      throw permissionDenied(
        `${formatAuthid(caller)} does not have permission to change owner of backup group '${group.type}/${group.id}' to ${formatAuthid(newOwner)}`,
      );
    }
    const guard = await store.lockGroup(group, true);
    try {
      if (!authidEquals(owner, await store.getOwner(group))) {
        throw new BurrowError(
          'BACKUP_OWNER_MISMATCH',
          `${formatAuthid(owner)} does not own this group anymore`,
        );
      }
      await store.setOwner(group, newOwner, true);
    } finally {
      await guard.release();
    }
    return null;
  },
};

export function snapshotRoutes(): Route[] {
  return [
    listGroups,
    deleteGroup,
    listSnapshots,
    deleteSnapshot,
    listSnapshotFiles,
    getNotes,
    setNotes,
    getGroupNotes,
    setGroupNotes,
    getProtection,
    setProtection,
    changeOwner,
  ];
}
