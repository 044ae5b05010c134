/**
 * The /admin/datastore routes (pbs-protocol §8): this file has the datastore list and a store's
 * status and gathers the routes of the topic files (groups and snapshots, files, jobs,
 * namespaces) into `datastoreRoutes()`.
 *
 * Permissions follow PBS: most routes check privileges themselves (permission kind `handler`),
 * because PBS combines the privileges on `/datastore/{store}[/{ns...}]` with group ownership: a
 * caller with the "full" privilege may act on every group of a namespace, one with only the
 * "partial" privilege (usually Datastore.Backup) on the groups it owns, everyone else gets 403.
 */
import { datastoreStatus } from '../../../datastore/api-listing.js';
import { readDatastoreConfig } from '../../../datastore/datastore-config-store.js';
import { datastoreBackend } from '../../../format/datastore-config.js';
import type { GcStatusData } from '../../../datastore/gc-status.js';
import type { DatastoreStatus } from '../../../types/api.js';
import { MAX_NAMESPACE_DEPTH, ROOT_NAMESPACE } from '../../../types/backup.js';
import { stringParam, booleanParam, type Route } from '../route.js';
import {
  STORE_PARAM,
  aclPath,
  callerOf,
  listAccessibleGroups,
  openStore,
  permissionDenied,
} from './datastore-common.js';
import { fileRoutes } from './datastore-files.js';
import { jobRoutes } from './datastore-jobs.js';
import { namespaceRoutes } from './datastore-namespaces.js';
import { snapshotRoutes } from './datastore-snapshots.js';

/** PBS's DataStoreListItem. */
export interface DataStoreListItem {
  store: string;
  comment?: string;
  maintenance?: string;
  'mount-status': 'mounted' | 'notmounted' | 'nonremovable';
  'backend-type': 'filesystem' | 's3';
}

const listDatastores: Route = {
  method: 'GET',
  path: '/admin/datastore',
  description: 'Datastore list',
  parameters: {},
  permission: { kind: 'anybody' },
  async handler(ctx): Promise<DataStoreListItem[]> {
    const caller = callerOf(ctx);
    const { entries } = await readDatastoreConfig(ctx.deps.dirs);
    const items: DataStoreListItem[] = [];
    for (const { name, props } of entries) {
      const path = aclPath(name);
      const privs = await ctx.privileges(path);
      const allowed = privs.has('Datastore.Audit') || privs.has('Datastore.Backup');
      // Someone with access to a namespace only learns that the store exists, not its comment.
      if (!allowed && !(await ctx.deps.access.anyPrivilegeBelow(caller, path))) continue;
      let backendType: DataStoreListItem['backend-type'] = 'filesystem';
      try {
        backendType = datastoreBackend(props).type;
      } catch {
        // A backend string we cannot read: listed as the default, as PBS does.
      }
      items.push({
        store: name,
        ...(allowed && props.comment !== undefined ? { comment: props.comment } : {}),
        ...(props['maintenance-mode'] !== undefined
          ? { maintenance: props['maintenance-mode'] }
          : {}),
        'mount-status': props['backing-device'] === undefined ? 'nonremovable' : 'notmounted',
        'backend-type': backendType,
      });
    }
    return items;
  },
};

/** PBS's DataStoreStatus: what local mode reports too, plus the GC status and the backend. */
export interface DataStoreStatus extends DatastoreStatus {
  'gc-status'?: GcStatusData;
  'backend-type': 'filesystem' | 's3';
}

const status: Route = {
  method: 'GET',
  path: '/admin/datastore/{store}/status',
  description: 'Get datastore status.',
  parameters: {
    store: STORE_PARAM,
    verbose: {
      type: 'boolean',
      default: false,
      description: 'Include additional information like snapshot counts and GC status.',
    },
  },
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit or Datastore.Backup on /datastore/{store} for the full statistics; counts of accessible groups are always returned, if any',
  },
  async handler(ctx): Promise<DataStoreStatus> {
    const caller = callerOf(ctx);
    const name = stringParam(ctx, 'store');
    const path = aclPath(name);
    const privs = await ctx.privileges(path);
    let storeStats: boolean;
    if (privs.has('Datastore.Audit') || privs.has('Datastore.Backup')) {
      storeStats = true;
    } else if (privs.has('Datastore.Read')) {
      storeStats = false;
    } else {
      // Without any privilege below the store, even its existence stays hidden.
      if (!(await ctx.deps.access.anyPrivilegeBelow(caller, path))) throw permissionDenied();
      storeStats = false;
    }
    const store = await openStore(ctx.deps, name, 'read');
    const result: DataStoreStatus = { total: 0, used: 0, avail: 0, 'backend-type': 'filesystem' };
    if (storeStats) Object.assign(result, await datastoreStatus(store, { counts: false }));
    if (booleanParam(ctx, 'verbose', false)) {
      if (storeStats) result['gc-status'] = store.gcStatus();
      const groups = await listAccessibleGroups(
        ctx.deps,
        store,
        ROOT_NAMESPACE,
        MAX_NAMESPACE_DEPTH,
        {
          authId: privs.has('Datastore.Audit') ? undefined : caller,
          override: ['Datastore.Audit', 'Datastore.Read'],
          ownerAnd: [],
        },
      );
      const counts: NonNullable<DataStoreStatus['counts']> = {};
      for (const group of groups) {
        let snapshots: number;
        try {
          snapshots = (await store.listSnapshots(group)).length;
        } catch {
          continue;
        }
        // Empty groups are not counted: they would only confuse.
        if (snapshots === 0) continue;
        const c = (counts[group.type] ??= { groups: 0, snapshots: 0 });
        c.groups++;
        c.snapshots += snapshots;
      }
      result.counts = counts;
    }
    // backend-type last, as PBS orders the keys.
    const { 'backend-type': backendType, ...rest } = result;
    return { ...rest, 'backend-type': backendType };
  },
};

/** Every /admin/datastore route. */
export function datastoreRoutes(): Route[] {
  return [
    listDatastores,
    status,
    ...snapshotRoutes(),
    ...fileRoutes(),
    ...jobRoutes(),
    ...namespaceRoutes(),
  ];
}
