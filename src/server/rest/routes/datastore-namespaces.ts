/**
 * /admin/datastore/{store}/namespace (pbs-protocol §8): list the namespaces a caller may see,
 * create one (Datastore.Modify on its parent), and delete one with or without its groups
 * (Datastore.Modify on its parent). A caller without access to the starting namespace learns
 * nothing from a refusal: a missing namespace and an invisible one both answer 403.
 */
import { BurrowError } from '../../../lib/errors.js';
import {
  MAX_NAMESPACE_DEPTH,
  SAFE_ID_RE,
  isRootNamespace,
  namespaceChild,
  namespaceParent,
  namespaceToString,
  parseNamespace,
  type BackupNamespace,
} from '../../../types/backup.js';
import {
  booleanParam,
  optionalInteger,
  stringParam,
  type Route,
  type RouteContext,
} from '../route.js';
import {
  MAX_DEPTH_PARAM,
  NS_PARAM,
  NS_PRIVS_OK,
  STORE_PARAM,
  aclPath,
  checkNsPrivs,
  namespaceParam,
  openStore,
  permissionDenied,
} from './datastore-common.js';

const PATH = '/admin/datastore/{store}/namespace';

/** PBS's NamespaceListItem (no namespace has a comment yet). */
export interface NamespaceListItem {
  ns: string;
  comment?: string;
}

/** PBS's check_ns_modification_privs: never the root; Datastore.Modify on the parent. */
async function checkModification(
  ctx: RouteContext,
  store: string,
  ns: BackupNamespace,
): Promise<void> {
  if (isRootNamespace(ns)) {
    throw new BurrowError('INVALID_ARGUMENT', 'Cannot create/delete root namespace!');
  }
  await checkNsPrivs(ctx, store, namespaceParent(ns), ['Datastore.Modify']);
}

const listNamespaces: Route = {
  method: 'GET',
  path: PATH,
  description: 'List the namespaces of a datastore.',
  parameters: {
    store: STORE_PARAM,
    parent: { ...NS_PARAM, description: 'To list only namespaces below the passed one.' },
    'max-depth': MAX_DEPTH_PARAM,
  },
  permission: {
    kind: 'handler',
    why: 'Datastore.Audit, Datastore.Modify, Datastore.Read or Datastore.Backup on /datastore/{store}[/{parent}]; only namespaces with one of them are listed',
  },
  async handler(ctx): Promise<NamespaceListItem[]> {
    const name = stringParam(ctx, 'store');
    const parent = namespaceParam(ctx, 'parent');
    let parentAccess = true;
    try {
      await checkNsPrivs(ctx, name, parent, NS_PRIVS_OK);
    } catch {
      parentAccess = false;
    }
    const store = await openStore(ctx.deps, name, 'read');
    let all: BackupNamespace[];
    try {
      all = await store.listNamespaces(
        parent,
        optionalInteger(ctx, 'max-depth') ?? MAX_NAMESPACE_DEPTH,
      );
    } catch (error) {
      // A parent that does not exist, asked for by someone without access to it: no leak.
      if (!parentAccess) throw permissionDenied();
      throw error;
    }
    const items: NamespaceListItem[] = [];
    for (const ns of all) {
      const privs = await ctx.privileges(aclPath(name, ns));
      if (NS_PRIVS_OK.some((p) => privs.has(p))) items.push({ ns: namespaceToString(ns) });
    }
    if (items.length === 0 && !parentAccess) throw permissionDenied();
    return items;
  },
};

const createNamespace: Route = {
  method: 'POST',
  path: PATH,
  description: 'Create a new datastore namespace.',
  parameters: {
    store: STORE_PARAM,
    name: {
      type: 'string',
      pattern: SAFE_ID_RE,
      minLength: 1,
      maxLength: 32,
      description: 'The name of the new namespace to add at the parent.',
    },
    parent: NS_PARAM,
  },
  permission: { kind: 'handler', why: 'Datastore.Modify on /datastore/{store}[/{parent}]' },
  async handler(ctx): Promise<string> {
    const store = stringParam(ctx, 'store');
    const parent = namespaceParam(ctx, 'parent');
    const ns = namespaceChild(parent, stringParam(ctx, 'name'));
    await checkModification(ctx, store, ns);
    await (await openStore(ctx.deps, store, 'write')).createNamespace(ns);
    return namespaceToString(ns);
  },
};

const deleteNamespace: Route = {
  method: 'DELETE',
  path: PATH,
  description: 'Delete a backup namespace including all snapshots.',
  parameters: {
    store: STORE_PARAM,
    ns: { ...NS_PARAM, optional: false },
    'delete-groups': {
      type: 'boolean',
      default: false,
      description:
        'If set, all groups will be destroyed in the whole hierarchy below and including `ns`. If not set, only empty namespaces will be pruned.',
    },
    'error-on-protected': {
      type: 'boolean',
      default: true,
      description: 'Return error when namespace cannot be deleted because of protected snapshots',
    },
  },
  permission: { kind: 'handler', why: 'Datastore.Modify on the parent of the namespace' },
  async handler(ctx) {
    const name = stringParam(ctx, 'store');
    const ns = parseNamespace(stringParam(ctx, 'ns'));
    await checkModification(ctx, name, ns);
    const store = await openStore(ctx.deps, name, 'write');
    const deleteGroups = booleanParam(ctx, 'delete-groups', false);
    const stats = { 'removed-groups': 0, 'protected-snapshots': 0, 'removed-snapshots': 0 };
    if (deleteGroups) {
      const below = MAX_NAMESPACE_DEPTH - ns.components.length;
      for (const each of await store.listNamespaces(ns, below)) {
        for (const group of await store.listGroups(each)) {
          const result = await store.removeBackupGroup(group);
          if (result.removedAll) stats['removed-groups']++;
          stats['protected-snapshots'] += result.keptSnapshots;
          stats['removed-snapshots'] += result.removedSnapshots;
        }
      }
    }
    // With the groups gone, this removes the emptied type and namespace directories bottom-up.
    const { removedAll } = await store.removeNamespace(ns, { deleteGroups });
    if (!removedAll) {
      const message = deleteGroups
        ? 'group only partially deleted due to protected snapshots'
        : 'only partially deleted due to existing groups but `delete-groups` not true';
      if (booleanParam(ctx, 'error-on-protected', true)) {
        throw new BurrowError(deleteGroups ? 'PROTECTED' : 'NOT_EMPTY', message, {
          details: stats,
        });
      }
      ctx.deps.log.warn(message);
    }
    return stats;
  },
};

export function namespaceRoutes(): Route[] {
  return [listNamespaces, createNamespace, deleteNamespace];
}
