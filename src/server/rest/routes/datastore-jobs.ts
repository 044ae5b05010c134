/**
 * The long-running datastore operations (pbs-protocol §8): `prune` of one group (answered at
 * once, or with a task's UPID when `use-task` is set), `prune-datastore`, garbage collection
 * (`gc`: start and status) and `verify`. Every real run is a task of the caller; the routes
 * answer with its UPID while it runs, and its log and state are read through the task API.
 */
import type { SnapshotInfo } from '../../../datastore/backup-info.js';
import type { DataStore } from '../../../datastore/datastore.js';
import { garbageCollection, garbageCollectionRunning } from '../../../datastore/gc.js';
import type { GcStatusData } from '../../../datastore/gc-status.js';
import {
  computePruneInfo,
  hasKeepOptions,
  keepOptionsToArgs,
  type KeepOptions,
  type PruneMark,
} from '../../../datastore/prune.js';
import {
  VerifyWorker,
  verifyGroup,
  verifySnapshot,
  verifyStore,
} from '../../../datastore/verify.js';
import { BurrowError } from '../../../lib/errors.js';
import type { TaskContext } from '../../../tasks/index.js';
import { formatAuthid, type Authid } from '../../../types/auth.js';
import {
  MAX_NAMESPACE_DEPTH,
  compareGroups,
  formatBackupTime,
  formatSnapshot,
  isRootNamespace,
  namespacePath,
  namespaceToString,
  type BackupDir,
  type BackupGroup,
  type BackupNamespace,
} from '../../../types/backup.js';
import type { PruneListItem } from '../../../types/api.js';
import type { ServerDeps } from '../../server-types.js';
import {
  booleanParam,
  optionalInteger,
  optionalString,
  stringParam,
  type ParamSpec,
  type Route,
  type RouteContext,
} from '../route.js';
import {
  BACKUP_ID_PARAM,
  BACKUP_TIME_PARAM,
  BACKUP_TYPE_PARAM,
  GROUP_PARAMS,
  KEEP_PARAMS,
  MAX_DEPTH_PARAM,
  NS_PARAM,
  STORE_NS_PARAMS,
  STORE_PARAM,
  aclPath,
  callerOf,
  checkBackupOwner,
  checkNsPrivs,
  groupParam,
  keepParams,
  listAccessibleGroups,
  MODIFY_OR_PRUNE_OWNER,
  namespaceParam,
  openCheckedGroup,
  openStore,
  ownerRulePermission,
  permissionDenied,
  spawnTask,
  storeAndNs,
} from './datastore-common.js';

const BASE = '/admin/datastore/{store}';

// ---------------------------------------------------------------------------------------------
// prune (one group)

const DRY_RUN_PARAM: ParamSpec = {
  type: 'boolean',
  default: false,
  description: 'Just show what prune would do, but do not delete anything.',
};

/** PBS's prune result item; `ns` only in dry runs outside the root namespace. */
function pruneItem(dir: BackupDir, mark: PruneMark, withNs: boolean): PruneListItem {
  const ns = namespaceToString(dir.group.ns);
  return {
    'backup-type': dir.group.type,
    'backup-id': dir.group.id,
    'backup-time': dir.time,
    keep: mark !== 'remove',
    protected: mark === 'protected',
    ...(withNs && ns !== '' ? { ns } : {}),
  };
}

/**
 * What prune would do to a group's snapshots, oldest first (the order PBS removes and logs
 * them in). A snapshot whose directory cannot be read counts as protected, as in pruneGroup.
 */
function pruneSelection(snapshots: readonly SnapshotInfo[], keep: KeepOptions) {
  return computePruneInfo(
    snapshots.map((s) => ({
      dir: s.dir,
      time: s.dir.time,
      finished: s.finished,
      protected: s.protected || s.error !== undefined,
    })),
    keep,
  ).reverse();
}

async function pruneOneGroup(
  store: DataStore,
  group: BackupGroup,
  keep: KeepOptions,
  task: TaskContext,
): Promise<PruneListItem[]> {
  const entries = await store.pruneGroup(group, keep, {
    dryRun: false,
    log: (line) => task.log(line),
    warn: (line) => task.warn(line),
  });
  return entries.map((e) => pruneItem(e.dir, e.mark, false));
}

const prune: Route = {
  method: 'POST',
  path: `${BASE}/prune`,
  description: 'Prune a group on the datastore',
  parameters: {
    ...GROUP_PARAMS,
    ...KEEP_PARAMS,
    'dry-run': DRY_RUN_PARAM,
    'use-task': {
      type: 'boolean',
      default: false,
      description: 'Spins up an asynchronous task that does the work.',
    },
  },
  permission: ownerRulePermission(MODIFY_OR_PRUNE_OWNER),
  async handler(ctx) {
    const caller = callerOf(ctx);
    const keep = keepParams(ctx);
    const { store, group } = await openCheckedGroup(ctx, MODIFY_OR_PRUNE_OWNER);
    const workerId = `${store.name}:${namespaceToString(group.ns)}:${group.type}/${group.id}`;
    const snapshots = await store.listSnapshots(group);
    if (booleanParam(ctx, 'dry-run', false)) {
      return pruneSelection(snapshots, keep).map((e) => pruneItem(e.snapshot.dir, e.mark, true));
    }
    const work = (task: TaskContext): Promise<PruneListItem[]> =>
      pruneOneGroup(store, group, keep, task);
    if (booleanParam(ctx, 'use-task', false)) {
      return spawnTask(ctx.deps, caller, 'prune', workerId, work);
    }
    const { result } = await ctx.deps.tasks.run('prune', workerId, formatAuthid(caller), work);
    return result;
  },
};

// ---------------------------------------------------------------------------------------------
// prune-datastore

const MARK_TEXT: Readonly<Record<PruneMark, string>> = {
  protected: 'keep protected',
  keep: 'keep',
  'keep-partial': 'keep partial',
  remove: 'remove',
};

interface PruneDatastoreJob {
  store: DataStore;
  ns: BackupNamespace;
  maxDepth: number | undefined;
  keep: KeepOptions;
  dryRun: boolean;
  authId: Authid;
}

/** PBS's prune_datastore: every group the caller may prune, below `ns`, as one task. */
async function pruneDatastore(
  deps: ServerDeps,
  job: PruneDatastoreJob,
  task: TaskContext,
): Promise<void> {
  const { store, ns, keep, dryRun } = job;
  const maxDepth = job.maxDepth ?? MAX_NAMESPACE_DEPTH;
  const depth =
    maxDepth === MAX_NAMESPACE_DEPTH
      ? 'down to full depth'
      : maxDepth > 0
        ? `to depth ${maxDepth}`
        : 'non-recursive';
  task.log(`Starting datastore prune on ${storeAndNs(store.name, ns)}, ${depth}`);
  if (dryRun) task.log('(dry test run)');
  if (!hasKeepOptions(keep)) {
    task.log('No prune selection - keeping all files.');
  } else {
    const opts: string[] = [];
    if (!isRootNamespace(ns)) opts.push(`--ns ${namespaceToString(ns)}`);
    if (job.maxDepth !== undefined) opts.push(`--max-depth ${job.maxDepth}`);
    const args = keepOptionsToArgs(keep);
    for (let i = 0; i < args.length; i += 2) opts.push(`${args[i]} ${args[i + 1]}`);
    task.log(`retention options: ${opts.join(' ')}`);
  }
  const groups = await listAccessibleGroups(deps, store, ns, maxDepth, {
    authId: job.authId,
    override: ['Datastore.Modify'],
    ownerAnd: ['Datastore.Prune'],
  });
  for (const group of groups) {
    task.checkAbort();
    const info = pruneSelection(await store.listSnapshots(group), keep);
    task.log(`Pruning group ${namespaceToString(group.ns)}:"${group.type}/${group.id}"`);
    for (const { snapshot, mark } of info) {
      task.log(
        `${dryRun ? 'would ' : ''}${MARK_TEXT[mark]} ${group.type}/${group.id}/${formatBackupTime(snapshot.time)}`,
      );
      if (mark === 'remove' && !dryRun) {
        try {
          await store.removeBackupDir(snapshot.dir, false);
        } catch (error) {
          task.warn(
            `failed to remove dir ${JSON.stringify(formatSnapshot(snapshot.dir))}: ${error instanceof Error ? error.message : String(error)}`,
          );
        }
      }
    }
  }
}

const pruneDatastoreRoute: Route = {
  method: 'POST',
  path: `${BASE}/prune-datastore`,
  description: 'Prune the datastore',
  parameters: {
    store: STORE_PARAM,
    ns: NS_PARAM,
    'max-depth': MAX_DEPTH_PARAM,
    ...KEEP_PARAMS,
    'dry-run': DRY_RUN_PARAM,
  },
  permission: {
    kind: 'handler',
    why: 'Datastore.Modify or Datastore.Prune on /datastore/{store}[/{ns}]',
  },
  async handler(ctx): Promise<string> {
    const caller = callerOf(ctx);
    const name = stringParam(ctx, 'store');
    const ns = namespaceParam(ctx);
    const path = aclPath(name, ns);
    const privs = await ctx.privileges(path);
    if (!privs.has('Datastore.Modify') && !privs.has('Datastore.Prune')) throw permissionDenied();
    const store = await openStore(ctx.deps, name, 'write');
    const job: PruneDatastoreJob = {
      store,
      ns,
      maxDepth: optionalInteger(ctx, 'max-depth'),
      keep: keepParams(ctx),
      dryRun: booleanParam(ctx, 'dry-run', false),
      authId: caller,
    };
    return spawnTask(ctx.deps, caller, 'prune', `${name}:${namespaceToString(ns)}`, (task) =>
      pruneDatastore(ctx.deps, job, task),
    );
  },
};

// ---------------------------------------------------------------------------------------------
// gc

const startGc: Route = {
  method: 'POST',
  path: `${BASE}/gc`,
  description: 'Start garbage collection.',
  parameters: { store: STORE_PARAM },
  permission: {
    kind: 'privileges',
    path: '/datastore/{store}',
    privileges: ['Datastore.Modify'],
  },
  async handler(ctx): Promise<string> {
    const name = stringParam(ctx, 'store');
    const store = await openStore(ctx.deps, name, 'write');
    if (garbageCollectionRunning(store.base)) {
      throw new BurrowError('LOCKED', 'garbage collection already running', {
        details: { store: name },
      });
    }
    try {
      return await spawnTask(ctx.deps, callerOf(ctx), 'garbage_collection', name, (task) =>
        garbageCollection(store, task),
      );
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new BurrowError(
        error instanceof BurrowError ? error.code : 'INTERNAL',
        `unable to start garbage collection job on datastore ${name} - ${message}`,
        { cause: error },
      );
    }
  },
};

/** PBS's GarbageCollectionJobStatus: the last run's counters plus schedule and last-run facts. */
export type GcJobStatus = { store: string } & GcStatusData & {
    schedule?: string;
    'next-run'?: number;
    'last-run-endtime'?: number;
    'last-run-state'?: string;
    duration?: number;
  };

const gcStatus: Route = {
  method: 'GET',
  path: `${BASE}/gc`,
  description: 'Garbage collection status.',
  parameters: { store: STORE_PARAM },
  permission: {
    kind: 'privileges',
    path: '/datastore/{store}',
    privileges: ['Datastore.Audit'],
  },
  async handler(ctx): Promise<GcJobStatus> {
    const name = stringParam(ctx, 'store');
    const store = await openStore(ctx.deps, name, 'read');
    const status = store.gcStatus();
    const schedule = store.config?.['gc-schedule'];
    const result: GcJobStatus = { store: name, ...status };
    if (schedule !== undefined) result.schedule = schedule;
    if (status.upid !== null) {
      try {
        const task = await ctx.deps.tasks.status(status.upid);
        if (task.endtime !== undefined && task.status !== undefined) {
          result['last-run-endtime'] = task.endtime;
          result['last-run-state'] = task.status;
          result.duration = task.endtime - task.startTime;
        }
      } catch {
        // The task log is gone (rotated away, another host's log dir): no last-run facts.
      }
    }
    return result;
  },
};

// ---------------------------------------------------------------------------------------------
// verify

const hex8 = (time: number): string => time.toString(16).toUpperCase().padStart(8, '0');

const verify: Route = {
  method: 'POST',
  path: `${BASE}/verify`,
  description: 'Verify backups.',
  parameters: {
    ...STORE_NS_PARAMS,
    'backup-type': { ...BACKUP_TYPE_PARAM, optional: true },
    'backup-id': { ...BACKUP_ID_PARAM, optional: true },
    'backup-time': { ...BACKUP_TIME_PARAM, optional: true },
    'ignore-verified': {
      type: 'boolean',
      optional: true,
      description:
        'Do not verify backups that are already verified if their verification is not outdated.',
    },
    'outdated-after': {
      type: 'integer',
      minimum: 0,
      optional: true,
      description: 'Days after that a verification becomes outdated. (0 is deprecated)',
    },
    'max-depth': MAX_DEPTH_PARAM,
    'read-threads': {
      type: 'integer',
      minimum: 1,
      maximum: 32,
      optional: true,
      description: 'The number of threads to use for reading chunks in verify job.',
    },
    'verify-threads': {
      type: 'integer',
      minimum: 1,
      maximum: 32,
      optional: true,
      description: 'The number of threads to use for verifying chunks in verify job.',
    },
  },
  permission: {
    kind: 'handler',
    why: 'Datastore.Verify, or Datastore.Backup and owning the group, on /datastore/{store}[/{ns}]',
  },
  async handler(ctx): Promise<string> {
    const caller = callerOf(ctx);
    const name = stringParam(ctx, 'store');
    const ns = namespaceParam(ctx);
    const ownerCheck = await checkNsPrivs(
      ctx,
      name,
      ns,
      ['Datastore.Verify'],
      ['Datastore.Backup'],
    );
    const store = await openStore(ctx.deps, name, 'read');
    const ignoreVerified = booleanParam(ctx, 'ignore-verified', true);
    const outdatedAfter = optionalInteger(ctx, 'outdated-after');
    const maxDepth = optionalInteger(ctx, 'max-depth');
    const type = optionalString(ctx, 'backup-type');
    const id = optionalString(ctx, 'backup-id');
    const time = optionalInteger(ctx, 'backup-time');
    const nsPath = namespacePath(ns);

    let workerType: string;
    let workerId: string;
    let run: (w: VerifyWorker) => Promise<BackupDir[]>;
    if (type !== undefined && id !== undefined) {
      const group = groupParam(ctx);
      if (ownerCheck) checkBackupOwner(await store.getOwner(group), caller);
      if (time !== undefined) {
        const dir = { group, time } satisfies BackupDir;
        workerType = 'verify_snapshot';
        workerId = `${name}:${nsPath}/${type}/${id}/${hex8(time)}`;
        run = async (w) => ((await verifySnapshot(w, dir)) ? [] : [dir]);
      } else {
        workerType = 'verify_group';
        workerId = `${name}:${nsPath}/${type}/${id}`;
        run = (w) => verifyGroup(w, group);
      }
    } else if (type === undefined && id === undefined && time === undefined) {
      workerType = 'verify';
      workerId = isRootNamespace(ns) ? name : `${name}:${nsPath}`;
      run = ownerCheck
        ? (w) => verifyOwnedGroups(ctx, w, ns, maxDepth ?? MAX_NAMESPACE_DEPTH, caller)
        : (w) => verifyStore(w, { ns, ...(maxDepth === undefined ? {} : { maxDepth }) });
    } else {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'parameters do not specify a backup group or snapshot',
      );
    }

    return spawnTask(ctx.deps, caller, workerType, workerId, async (task) => {
      const worker = new VerifyWorker(store, task, {
        ignoreVerified,
        ...(outdatedAfter === undefined ? {} : { outdatedAfterDays: outdatedAfter }),
      });
      const failed = await run(worker);
      if (failed.length > 0) {
        task.log('Failed to verify the following snapshots/groups:');
        for (const dir of failed) task.log(`\t${formatSnapshot(dir)}`);
        throw new BurrowError(
          'VERIFY_FAILED',
          'verification failed - please check the log for details',
          { details: { failed: failed.map(formatSnapshot) } },
        );
      }
    });
  },
};

/**
 * Verify of a namespace tree for a caller with only Datastore.Backup: the groups it owns in the
 * namespaces where it has Datastore.Backup, and all groups where it has Datastore.Verify.
 */
async function verifyOwnedGroups(
  ctx: RouteContext,
  w: VerifyWorker,
  ns: BackupNamespace,
  maxDepth: number,
  caller: Authid,
): Promise<BackupDir[]> {
  const { store, task } = w;
  task.log(`verify datastore ${store.name}`);
  const groups = (
    await listAccessibleGroups(ctx.deps, store, ns, maxDepth, {
      authId: caller,
      override: ['Datastore.Verify'],
      ownerAnd: ['Datastore.Backup'],
    })
  )
    .filter((g) => !(g.type === 'host' && g.id === 'benchmark'))
    .sort(compareGroups);
  task.log(`found ${groups.length} groups`);
  const failed: BackupDir[] = [];
  for (const group of groups) failed.push(...(await verifyGroup(w, group)));
  return failed;
}

export function jobRoutes(): Route[] {
  return [prune, pruneDatastoreRoute, startGc, gcStatus, verify];
}
