/**
 * What the /admin/datastore routes share: the parameter schemas of PBS (store, namespace, group
 * and snapshot parameters, keep options), reading them back as typed values, the namespaced
 * privilege check with its owner fallback (PBS's check_ns_privs_full and check_backup_owner),
 * the privilege-aware group iteration (PBS's ListAccessibleBackupGroups), and starting tasks
 * whose UPID the route answers with at once.
 */
import { DataStore } from '../../../datastore/datastore.js';
import { KEEP_OPTIONS, type KeepOptions } from '../../../datastore/prune.js';
import { BurrowError } from '../../../lib/errors.js';
import type { TaskContext } from '../../../tasks/index.js';
import type { Authid } from '../../../types/auth.js';
import { formatAuthid, mayActAsOwner } from '../../../types/auth.js';
import {
  MAX_NAMESPACE_DEPTH,
  ROOT_NAMESPACE,
  SAFE_ID_RE,
  backupDir,
  backupGroup,
  formatGroup,
  namespaceToString,
  parseNamespace,
  type BackupDir,
  type BackupGroup,
  type BackupNamespace,
} from '../../../types/backup.js';
import {
  integerParam,
  optionalInteger,
  optionalString,
  stringParam,
  type ParamSchema,
  type ParamSpec,
  type Permission,
  type RouteContext,
} from '../route.js';
import { permissionDenied } from '../router.js';
import { PRIVILEGES, type Privilege, type ServerDeps } from '../../server-types.js';

// ---------------------------------------------------------------------------------------------
// Parameter schemas (pbs-api-types)

/** PBS's namespace regex: up to eight safe-ID components joined by '/', or empty (the root). */
export const NAMESPACE_RE =
  /^(?:(?:[A-Za-z0-9_][A-Za-z0-9._-]*\/){0,7}[A-Za-z0-9_][A-Za-z0-9._-]*)?$/;

export const STORE_PARAM: ParamSpec = {
  type: 'string',
  pattern: SAFE_ID_RE,
  minLength: 3,
  maxLength: 32,
  description: 'Datastore name.',
};

export const NS_PARAM: ParamSpec = {
  type: 'string',
  pattern: NAMESPACE_RE,
  maxLength: 256,
  optional: true,
  description: 'Namespace.',
};

export const BACKUP_TYPE_PARAM: ParamSpec = {
  type: 'string',
  enum: ['vm', 'ct', 'host'],
  description: 'Backup type.',
};

export const BACKUP_ID_PARAM: ParamSpec = {
  type: 'string',
  pattern: SAFE_ID_RE,
  description: 'Backup ID.',
};

export const BACKUP_TIME_PARAM: ParamSpec = {
  type: 'integer',
  minimum: 1,
  description: 'Backup time (Unix epoch.)',
};

export const ARCHIVE_NAME_PARAM: ParamSpec = {
  type: 'string',
  pattern: SAFE_ID_RE,
  description: 'Backup archive name.',
};

export const MAX_DEPTH_PARAM: ParamSpec = {
  type: 'integer',
  minimum: 0,
  maximum: MAX_NAMESPACE_DEPTH,
  optional: true,
  description: 'How many levels of namespaces should be operated on (0 == no recursion)',
};

/** store + ns */
export const STORE_NS_PARAMS: ParamSchema = { store: STORE_PARAM, ns: NS_PARAM };

/** store, ns, backup-type, backup-id */
export const GROUP_PARAMS: ParamSchema = {
  ...STORE_NS_PARAMS,
  'backup-type': BACKUP_TYPE_PARAM,
  'backup-id': BACKUP_ID_PARAM,
};

/** store, ns, backup-type, backup-id, backup-time */
export const SNAPSHOT_PARAMS: ParamSchema = { ...GROUP_PARAMS, 'backup-time': BACKUP_TIME_PARAM };

const keepDescription: Readonly<Record<string, string>> = {
  'keep-last': 'Number of backups to keep.',
  'keep-hourly': 'Number of hourly backups to keep.',
  'keep-daily': 'Number of daily backups to keep.',
  'keep-weekly': 'Number of weekly backups to keep.',
  'keep-monthly': 'Number of monthly backups to keep.',
  'keep-yearly': 'Number of yearly backups to keep.',
};

/** keep-last ... keep-yearly, each optional and ≥ 1. */
export const KEEP_PARAMS: ParamSchema = Object.fromEntries(
  KEEP_OPTIONS.map(({ name }) => [
    name,
    {
      type: 'integer',
      minimum: 1,
      optional: true,
      description: keepDescription[name] ?? name,
    } satisfies ParamSpec,
  ]),
);

// ---------------------------------------------------------------------------------------------
// Reading the datastore parameters (the plain getters are route.ts's)

/** The namespace in parameter `name` (default `ns`); absent or empty is the root. */
export function namespaceParam(ctx: RouteContext, name = 'ns'): BackupNamespace {
  const text = optionalString(ctx, name);
  return text === undefined ? ROOT_NAMESPACE : parseNamespace(text);
}

export function groupParam(ctx: RouteContext): BackupGroup {
  return backupGroup(
    namespaceParam(ctx),
    stringParam(ctx, 'backup-type'),
    stringParam(ctx, 'backup-id'),
  );
}

export function snapshotParam(ctx: RouteContext): BackupDir {
  return backupDir(groupParam(ctx), integerParam(ctx, 'backup-time'));
}

export function keepParams(ctx: RouteContext): KeepOptions {
  const keep: KeepOptions = {};
  for (const { key, name } of KEEP_OPTIONS) {
    const value = optionalInteger(ctx, name);
    if (value !== undefined) keep[key] = value;
  }
  return keep;
}

// ---------------------------------------------------------------------------------------------
// Callers, privileges and owners

/** The authenticated caller (every datastore route requires one). */
export function callerOf(ctx: RouteContext): Authid {
  if (ctx.authId === undefined) {
    throw new BurrowError('AUTH_FAILED', 'authentication failed');
  }
  return ctx.authId;
}

/** `/datastore/{store}` for the root namespace, `/datastore/{store}/a/b` below it. */
export function aclPath(store: string, ns: BackupNamespace = ROOT_NAMESPACE): string {
  return ['', 'datastore', store, ...ns.components].join('/');
}

/** The names joined by '|', in PBS's privilege order (as its permission messages list them). */
export function privilegeNames(privs: readonly Privilege[]): string {
  return PRIVILEGES.filter((p) => privs.includes(p)).join('|');
}

/** The router's PERMISSION_DENIED error (`permission check failed` unless a message is given). */
export { permissionDenied };

const hasAny = (set: ReadonlySet<Privilege>, privs: readonly Privilege[]): boolean =>
  privs.some((p) => set.has(p));

/**
 * PBS's check_ns_privs_full: the caller needs one of `full` or one of `partial` on the
 * namespace's ACL path. Returns true when only `partial` matched, i.e. when the caller may act
 * on groups it owns only. Refused with PBS's message
 * `permission check failed - missing <privs> on <path>` (403).
 */
export async function checkNsPrivs(
  ctx: RouteContext,
  store: string,
  ns: BackupNamespace,
  full: readonly Privilege[],
  partial: readonly Privilege[] = [],
): Promise<boolean> {
  callerOf(ctx);
  const path = aclPath(store, ns);
  const privs = await ctx.privileges(path);
  if (hasAny(privs, full)) return false;
  if (hasAny(privs, partial)) return true;
  throw permissionDenied(
    `permission check failed - missing ${privilegeNames([...full, ...partial])} on ${path}`,
  );
}

/** PBS's check_backup_owner: the caller is the owner, or the owner is a token of the caller. */
export function checkBackupOwner(owner: Authid, caller: Authid): void {
  if (!mayActAsOwner(caller, owner)) {
    throw new BurrowError(
      'BACKUP_OWNER_MISMATCH',
      `backup owner check failed (${formatAuthid(caller)} != ${formatAuthid(owner)})`,
      { details: { caller: formatAuthid(caller), owner: formatAuthid(owner) } },
    );
  }
}

/**
 * Open a configured datastore (NOT_FOUND for an unknown name) for `operation`, PBS's
 * lookup_datastore with an Operation: a read-only datastore refuses writes, an offline one
 * refuses reads too (DataStore.checkMaintenance).
 */
export function openStore(
  deps: ServerDeps,
  name: string,
  operation: 'read' | 'write',
): Promise<DataStore> {
  return DataStore.lookup(name, { dirs: deps.dirs, log: (line) => deps.log.info(line), operation });
}

/**
 * PBS's check_privs_and_load_store: privileges on the namespace first (so a caller without any
 * learns nothing about the store), then the store, then, for a caller with only the partial
 * privileges, the owner of `group`.
 */
export async function checkPrivsAndOpenStore(
  ctx: RouteContext,
  store: string,
  ns: BackupNamespace,
  rule: OwnerRule,
  group: BackupGroup,
): Promise<DataStore> {
  const limited = await checkNsPrivs(ctx, store, ns, rule.full, rule.partial);
  const ds = await openStore(ctx.deps, store, rule.operation);
  if (limited) checkBackupOwner(await ds.getOwner(group), callerOf(ctx));
  return ds;
}

/**
 * Who may use a route on one group or snapshot (PBS's check_privs_and_load_store): any of `full`
 * on the group's namespace, or any of `partial` there and owning the group. Stated once per
 * route, for both its documented permission and its check.
 */
export interface OwnerRule {
  readonly full: readonly Privilege[];
  readonly partial: readonly Privilege[];
  /** What the route does with the store (the maintenance-mode check). */
  readonly operation: 'read' | 'write';
}

/** Removing or pruning: Datastore.Modify, or Datastore.Prune and owning the group. */
export const MODIFY_OR_PRUNE_OWNER: OwnerRule = {
  full: ['Datastore.Modify'],
  partial: ['Datastore.Prune'],
  operation: 'write',
};

/** The route's `permission` for an OwnerRule: checked by the handler, described for the docs. */
export function ownerRulePermission(rule: OwnerRule): Permission {
  return {
    kind: 'handler',
    why: `${rule.full.join(' or ')}, or ${rule.partial.join(' or ')} and owning the group, on /datastore/{store}[/{ns}]`,
  };
}

/** The group the request names (store, ns, backup-type, backup-id) and its store, checked by `rule`. */
export async function openCheckedGroup(
  ctx: RouteContext,
  rule: OwnerRule,
): Promise<{ store: DataStore; group: BackupGroup }> {
  const group = groupParam(ctx);
  const store = await checkPrivsAndOpenStore(ctx, stringParam(ctx, 'store'), group.ns, rule, group);
  return { store, group };
}

/** The snapshot the request names (SNAPSHOT_PARAMS) and its store, checked by `rule`. */
export async function openCheckedSnapshot(
  ctx: RouteContext,
  rule: OwnerRule,
): Promise<{ store: DataStore; dir: BackupDir }> {
  const dir = snapshotParam(ctx);
  const store = await checkPrivsAndOpenStore(
    ctx,
    stringParam(ctx, 'store'),
    dir.group.ns,
    rule,
    dir.group,
  );
  return { store, dir };
}

/** The privileges that make a namespace visible at all (PBS's NS_PRIVS_OK). */
export const NS_PRIVS_OK: readonly Privilege[] = [
  'Datastore.Modify',
  'Datastore.Read',
  'Datastore.Backup',
  'Datastore.Audit',
];

export interface AccessibleGroupsOptions {
  /** Filter for this caller; undefined lists every group without any check. */
  authId: Authid | undefined;
  /** Any of these on a namespace shows all its groups. */
  override: readonly Privilege[];
  /** Without an override, all of these are needed on the namespace, and then owned groups show. */
  ownerAnd: readonly Privilege[];
}

/**
 * PBS's ListAccessibleBackupGroups: the groups in `ns` and below it (down to `maxDepth`
 * levels) that the caller may see. Namespaces where the caller has none of NS_PRIVS_OK are
 * skipped; with an override privilege all groups of a namespace count, otherwise only owned
 * ones (and only when the caller has all `ownerAnd` privileges there). A group whose owner
 * cannot be read counts as not owned.
 */
export async function listAccessibleGroups(
  deps: ServerDeps,
  store: DataStore,
  ns: BackupNamespace,
  maxDepth: number,
  options: AccessibleGroupsOptions,
): Promise<BackupGroup[]> {
  const result: BackupGroup[] = [];
  for (const each of await store.listNamespaces(ns, maxDepth)) {
    let ownedOnly = false;
    if (options.authId !== undefined) {
      const privs = await deps.access.privileges(options.authId, aclPath(store.name, each));
      if (!hasAny(privs, NS_PRIVS_OK)) continue;
      if (!hasAny(privs, options.override)) {
        if (!options.ownerAnd.every((p) => privs.has(p))) continue;
        ownedOnly = true;
      }
    }
    let groups: BackupGroup[];
    try {
      groups = await store.listGroups(each);
    } catch (error) {
      // A namespace removed while we walk is simply gone.
      if (error instanceof BurrowError && error.code === 'NOT_FOUND') continue;
      throw error;
    }
    for (const group of groups) {
      if (ownedOnly && options.authId !== undefined) {
        try {
          if (!mayActAsOwner(options.authId, await store.getOwner(group))) continue;
        } catch {
          deps.log.warn(`cannot read the owner of ${store.name}:${formatGroup(group)}`);
          continue;
        }
      }
      result.push(group);
    }
  }
  return result;
}

/** `datastore 'x', root namespace` or `datastore 'x', namespace 'a/b'` (PBS's print_store_and_ns). */
export function storeAndNs(store: string, ns: BackupNamespace): string {
  return ns.components.length === 0
    ? `datastore '${store}', root namespace`
    : `datastore '${store}', namespace '${namespaceToString(ns)}'`;
}

// ---------------------------------------------------------------------------------------------
// Tasks

/**
 * Start `work` as a task of the caller and resolve with its UPID as soon as the task is
 * registered, while the work goes on; how it ends is in the task log and status. A failure to
 * start the task at all (the task log cannot be created) rejects.
 */
export function spawnTask(
  deps: ServerDeps,
  authId: Authid,
  workerType: string,
  workerId: string | undefined,
  work: (task: TaskContext) => Promise<unknown>,
): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let started = false;
    deps.tasks
      .run(workerType, workerId, formatAuthid(authId), work, {
        onStart: (upid) => {
          started = true;
          resolve(upid);
        },
      })
      .catch((error: unknown) => {
        if (!started) reject(error instanceof Error ? error : new Error(String(error)));
        // Otherwise the task log already ends with TASK ERROR: the API answered with the UPID.
      });
  });
}
