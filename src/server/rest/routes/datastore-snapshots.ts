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
import { BACKUP_TYPES, backupGroup, formatGroup, type BackupGroup } from '../../../types/backup.js';
import type { Route, RouteContext } from '../route.js';
import {
  BACKUP_ID_PARAM,
  BACKUP_TYPE_PARAM,
  GROUP_PARAMS,
  SNAPSHOT_PARAMS,
  STORE_NS_PARAMS,
  booleanParam,
  callerOf,
  checkNsPrivs,
  checkPrivsAndOpenStore,
  groupParam,
  namespaceParam,
  openStore,
  optionalString,
  permissionDenied,
  snapshotParam,
  stringParam,
} from './datastore-common.js';
import {
  allSnapshotFiles,
  groupListItem,
  snapshotListItem,
} from '../../../datastore/api-listing.js';
import type { GroupListItem, SnapshotListItem } from '../../../types/api.js';

const BASE = '/admin/datastore/{store}';

/** The group's owner, or undefined (logged) when it cannot be read: PBS skips such groups. */
async function ownerOrSkip(
  ctx: RouteContext,
  store: DataStore,
  group: BackupGroup,
): Promise<Authid | undefined> {
  try {
    return await store.getOwner(group);
  } catch (error) {
    ctx.deps.log.warn(
      `Failed to get owner of group '${formatGroup(group)}' in datastore '${store.name}' - ${error instanceof Error ? error.message : String(error)}`,
    );
    return undefined;
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
    const caller = callerOf(ctx);
    const name = stringParam(ctx, 'store');
    const ns = namespaceParam(ctx);
    const ownedOnly = await checkNsPrivs(ctx, name, ns, ['Datastore.Audit'], ['Datastore.Backup']);
    const store = await openStore(ctx.deps, name);
    const items: GroupListItem[] = [];
    for (const group of await store.listGroups(ns)) {
      const owner = await ownerOrSkip(ctx, store, group);
      if (owner === undefined) continue;
      if (ownedOnly && !mayActAsOwner(caller, owner)) continue;
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
  permission: {
    kind: 'handler',
    why: 'Datastore.Modify, or Datastore.Prune and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx) {
    const group = groupParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      group.ns,
      ['Datastore.Modify'],
      ['Datastore.Prune'],
      group,
    );
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
async function groupsToList(ctx: RouteContext, store: DataStore): Promise<BackupGroup[]> {
  const ns = namespaceParam(ctx);
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
    const caller = callerOf(ctx);
    const name = stringParam(ctx, 'store');
    const ns = namespaceParam(ctx);
    const ownedOnly = await checkNsPrivs(ctx, name, ns, ['Datastore.Audit'], ['Datastore.Backup']);
    const store = await openStore(ctx.deps, name);
    const items: SnapshotListItem[] = [];
    for (const group of await groupsToList(ctx, store)) {
      const owner = await ownerOrSkip(ctx, store, group);
      if (owner === undefined) continue;
      if (ownedOnly && !mayActAsOwner(caller, owner)) continue;
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
  permission: {
    kind: 'handler',
    why: 'Datastore.Modify, or Datastore.Prune and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx) {
    const dir = snapshotParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      dir.group.ns,
      ['Datastore.Modify'],
      ['Datastore.Prune'],
      dir.group,
    );
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
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit or Datastore.Read, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx) {
    const dir = snapshotParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      dir.group.ns,
      ['Datastore.Audit', 'Datastore.Read'],
      ['Datastore.Backup'],
      dir.group,
    );
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
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx): Promise<string> {
    const dir = snapshotParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      dir.group.ns,
      ['Datastore.Audit'],
      ['Datastore.Backup'],
      dir.group,
    );
    return store.getSnapshotNotes(dir);
  },
};

const setNotes: Route = {
  method: 'PUT',
  path: `${BASE}/notes`,
  description: 'Set "notes" for a specific backup',
  parameters: { ...SNAPSHOT_PARAMS, notes: NOTES_PARAM },
  permission: {
    kind: 'handler',
    why: 'Datastore.Modify, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx) {
    const dir = snapshotParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      dir.group.ns,
      ['Datastore.Modify'],
      ['Datastore.Backup'],
      dir.group,
    );
    await store.setSnapshotNotes(dir, stringParam(ctx, 'notes'));
    return null;
  },
};

const getGroupNotes: Route = {
  method: 'GET',
  path: `${BASE}/group-notes`,
  description: 'Get "notes" for a backup group',
  parameters: GROUP_PARAMS,
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx): Promise<string> {
    const group = groupParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      group.ns,
      ['Datastore.Audit'],
      ['Datastore.Backup'],
      group,
    );
    return store.getGroupNotes(group);
  },
};

const setGroupNotes: Route = {
  method: 'PUT',
  path: `${BASE}/group-notes`,
  description: 'Set "notes" for a backup group',
  parameters: { ...GROUP_PARAMS, notes: NOTES_PARAM },
  permission: {
    kind: 'handler',
    why: 'Datastore.Modify, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx) {
    const group = groupParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      group.ns,
      ['Datastore.Modify'],
      ['Datastore.Backup'],
      group,
    );
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
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx): Promise<boolean> {
    const dir = snapshotParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      dir.group.ns,
      ['Datastore.Audit'],
      ['Datastore.Backup'],
      dir.group,
    );
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
  permission: {
    kind: 'handler',
    why: 'Datastore.Modify, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx) {
    const dir = snapshotParam(ctx);
    const store = await checkPrivsAndOpenStore(
      ctx,
      stringParam(ctx, 'store'),
      dir.group.ns,
      ['Datastore.Modify'],
      ['Datastore.Backup'],
      dir.group,
    );
    const wanted = ctx.params['protected'];
    if (typeof wanted !== 'boolean') {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        "parameter verification failed - 'protected': property is missing and it is not optional",
      );
    }
    await store.setProtected(dir, wanted);
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
    const store = await openStore(ctx.deps, name);
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
