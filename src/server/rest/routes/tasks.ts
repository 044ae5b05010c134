/**
 * The task API under /nodes/{node}/tasks (pbs-protocol §8): the list with PBS's filters and its
 * `total`, a task's status, its log (own envelope, or the file as text/plain) and stop.
 *
 * Access as in PBS: the task's owner (or the user of the token that started it) may see it;
 * Sys.Audit on /system/tasks sees every task; a job's task is also visible to whoever may run
 * that job on its datastore (GC: Datastore.Modify, prune: Datastore.Modify on the namespace,
 * verify job: Datastore.Verify). Stopping needs the very same auth id as the task, or
 * Sys.Modify on /system/tasks. `{node}` is `localhost` or this node's name.
 */
import { open } from 'node:fs/promises';
import { BurrowError, isBurrowError } from '../../../lib/errors.js';
import { formatUpid, parseUpid, type Upid } from '../../../format/upid.js';
import { localNodeName } from '../../../tasks/proc.js';
import { requestTaskAbort } from '../../../tasks/task-abort.js';
import type { TaskListEntry } from '../../../tasks/index.js';
import { formatAuthid, parseAuthid, type Authid } from '../../../types/auth.js';
import { formatRfc3339Utc } from '../../../types/backup.js';
import type { Privilege } from '../../server-types.js';
import { parameterError } from '../parameters.js';
import {
  dataReply,
  envelopeReply,
  rawReply,
  type ParamSchema,
  type ParamSpec,
  type Route,
  type RouteContext,
} from '../route.js';
import { permissionDenied } from '../router.js';
import { STORE_PARAM } from './datastore-common.js';

export interface TaskRoutesOptions {
  /** The name `{node}` accepts besides `localhost`; default the host name up to its first '.'. */
  nodeName?: string;
}

const NODE_PARAM: ParamSpec = {
  type: 'string',
  pattern: /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)$/,
  description: 'The cluster node name (`localhost` or this node).',
};

const UPID_PARAM: ParamSpec = {
  type: 'string',
  minLength: 'UPID:'.length,
  maxLength: 512,
  description: 'Unique Process/Task Identifier.',
};

const TASK_PARAMS: ParamSchema = { node: NODE_PARAM, upid: UPID_PARAM };

const STATUS_FILTERS = ['ok', 'warning', 'error', 'unknown'] as const;

const LIST_PARAMS: ParamSchema = {
  node: NODE_PARAM,
  start: {
    type: 'integer',
    minimum: 0,
    default: 0,
    description: 'List tasks beginning from this offset.',
  },
  limit: {
    type: 'integer',
    minimum: 0,
    default: 50,
    description: 'Only list this amount of tasks. (0 means no limit)',
  },
  store: { ...STORE_PARAM, optional: true },
  running: {
    type: 'boolean',
    default: false,
    description: 'Only list running tasks.',
  },
  errors: {
    type: 'boolean',
    default: false,
    description: 'Only list erroneous tasks.',
  },
  userfilter: { type: 'string', optional: true, description: 'Only list tasks from this user.' },
  since: {
    type: 'integer',
    optional: true,
    description: 'Only list tasks since this UNIX epoch.',
  },
  until: {
    type: 'integer',
    optional: true,
    description: 'Only list tasks until this UNIX epoch.',
  },
  typefilter: {
    type: 'string',
    optional: true,
    description: 'Only list tasks whose type contains this.',
  },
  statusfilter: {
    type: 'array',
    items: { type: 'string', enum: STATUS_FILTERS },
    optional: true,
    description: 'Only list tasks which have any one of the listed status.',
  },
};

// Without `default`s: `download` may not be combined with them, so the handler must see whether
// they were given.
const LOG_PARAMS: ParamSchema = {
  ...TASK_PARAMS,
  start: {
    type: 'integer',
    minimum: 0,
    optional: true,
    description: 'Start at this line when reading the tasklog (default 0).',
  },
  limit: {
    type: 'integer',
    minimum: 0,
    optional: true,
    description:
      'The amount of lines to read from the tasklog (default 50). 0 returns all lines until the end of the file.',
  },
  download: {
    type: 'boolean',
    optional: true,
    description:
      "Whether the tasklog file should be downloaded. This parameter can't be used in conjunction with other parameters.",
  },
  'test-status': {
    type: 'boolean',
    optional: true,
    description: 'Test task status, and set result attribute "active" accordingly.',
  },
};

// ---------------------------------------------------------------------------------------------
// access

type PrivilegeCache = Map<string, Promise<ReadonlySet<Privilege>>>;

function cachedPrivileges(ctx: RouteContext, cache: PrivilegeCache, path: string) {
  let entry = cache.get(path);
  if (entry === undefined) cache.set(path, (entry = ctx.privileges(path)));
  return entry;
}

function tryParseAuthid(text: string): Authid | undefined {
  try {
    return parseAuthid(text);
  } catch {
    return undefined;
  }
}

function callerOf(ctx: RouteContext): Authid {
  if (ctx.authId === undefined) throw permissionDenied();
  return ctx.authId;
}

/** The caller started the task, or the task ran as one of the caller's tokens. */
function ownsTask(caller: Authid, task: Upid): boolean {
  const owner = tryParseAuthid(task.authId);
  if (owner === undefined) return false;
  if (formatAuthid(owner) === formatAuthid(caller)) return true;
  return (
    owner.tokenName !== undefined &&
    caller.tokenName === undefined &&
    owner.name === caller.name &&
    owner.realm === caller.realm
  );
}

/** The ACL path and privilege under which a job's task is visible (PBS's check_job_privs). */
function jobPrivilege(task: Upid): { path: string; privilege: Privilege } | undefined {
  const id = task.workerId;
  if (id === undefined) return undefined;
  switch (task.workerType) {
    case 'garbage_collection':
      return { path: `/datastore/${id}`, privilege: 'Datastore.Modify' };
    case 'prune':
    case 'prunejob': {
      const parts = id.split(':');
      // store[:ns][:group]: the group is not part of the ACL path
      if (parts.length < 1 || parts.length > 3) return undefined;
      const acl = parts.length === 3 ? parts.slice(0, 2) : parts;
      const path = ['datastore', ...acl.filter((p) => p !== '')].join('/');
      return { path: `/${path}`, privilege: 'Datastore.Modify' };
    }
    case 'verificationjob': {
      const store = /^([^:\s]+):/.exec(id)?.[1];
      return store === undefined
        ? undefined
        : { path: `/datastore/${store}`, privilege: 'Datastore.Verify' };
    }
    default:
      return undefined;
  }
}

async function mayAccessTask(
  ctx: RouteContext,
  caller: Authid,
  task: Upid,
  cache: PrivilegeCache,
): Promise<boolean> {
  if (ownsTask(caller, task)) return true;
  if ((await cachedPrivileges(ctx, cache, '/system/tasks')).has('Sys.Audit')) return true;
  const job = jobPrivilege(task);
  return job !== undefined && (await cachedPrivileges(ctx, cache, job.path)).has(job.privilege);
}

async function checkTaskAccess(ctx: RouteContext, task: Upid): Promise<void> {
  if (!(await mayAccessTask(ctx, callerOf(ctx), task, new Map()))) {
    throw permissionDenied('task access not allowed');
  }
}

/** Whether a task belongs to a datastore (PBS's check_job_store). */
function belongsToStore(task: Upid, store: string): boolean {
  const id = task.workerId;
  if (id === undefined) return false;
  if (task.workerType.startsWith('verif')) {
    const jobStore = /^([^:\s]+):/.exec(id)?.[1];
    return (jobStore ?? id) === store;
  }
  switch (task.workerType) {
    case 'prune':
    case 'prunejob':
    case 'backup':
    case 'garbage_collection':
      return id === store || id.startsWith(`${store}:`);
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// parameters

function checkNode(ctx: RouteContext, nodeName: string): void {
  const node = ctx.params.node as string;
  if (node !== 'localhost' && node !== nodeName) {
    throw new BurrowError('NOT_FOUND', `no such node '${node}'`, { details: { node } });
  }
}

function upidParam(ctx: RouteContext): { text: string; fields: Upid } {
  const text = ctx.params.upid as string;
  try {
    return { text, fields: parseUpid(text) };
  } catch (error) {
    throw parameterError([['upid', isBurrowError(error) ? error.message : String(error)]]);
  }
}

const optionalNumber = (value: unknown): number | undefined =>
  typeof value === 'number' ? value : undefined;

// ---------------------------------------------------------------------------------------------
// handlers

/** A task as PBS's TaskListItem (snake_case keys; node is always `localhost`). */
function listItem(entry: TaskListEntry): Record<string, unknown> {
  return {
    upid: entry.upid,
    node: 'localhost',
    pid: entry.pid,
    pstart: entry.pstart,
    starttime: entry.startTime,
    worker_type: entry.workerType,
    ...(entry.workerId === undefined ? {} : { worker_id: entry.workerId }),
    user: entry.authId,
    ...(entry.endtime === undefined ? {} : { endtime: entry.endtime }),
    ...(entry.status === undefined ? {} : { status: entry.status }),
  };
}

async function listTasks(ctx: RouteContext): Promise<unknown> {
  const caller = callerOf(ctx);
  const p = ctx.params;
  const start = p.start as number;
  const limit = (p.limit as number) > 0 ? (p.limit as number) : Number.POSITIVE_INFINITY;
  const running = p.running as boolean;
  const errors = p.errors as boolean;
  const store = p.store as string | undefined;
  const userfilter = p.userfilter as string | undefined;
  const typefilter = p.typefilter as string | undefined;
  const since = optionalNumber(p.since);
  const until = optionalNumber(p.until);
  const statusfilter = p.statusfilter as readonly string[] | undefined;

  const cache: PrivilegeCache = new Map();
  const listAll = (await cachedPrivileges(ctx, cache, '/system/tasks')).has('Sys.Audit');
  const entries = await ctx.deps.tasks.list({ running });

  let skipped = 0;
  const result: Array<Record<string, unknown>> = [];
  for (const entry of entries) {
    if (until !== undefined && entry.startTime > until) continue;
    if (since !== undefined) {
      // Ended tasks come newest end first: past the first that ended before `since`, none is left.
      if (entry.endtime !== undefined && entry.endtime < since) break;
      if (entry.startTime < since) continue;
    }
    if (!listAll && !(await mayAccessTask(ctx, caller, entry, cache))) continue;
    if (userfilter !== undefined && !entry.authId.includes(userfilter)) continue;
    if (store !== undefined && !belongsToStore(entry, store)) continue;
    if (typefilter !== undefined && !entry.workerType.includes(typefilter)) continue;
    const ended = entry.state !== 'running';
    if (ended && running) continue;
    if (entry.state === 'ok' && errors) continue;
    if (statusfilter !== undefined && (!ended || !statusfilter.includes(entry.state))) continue;
    if (skipped < start) {
      skipped++;
      continue;
    }
    result.push(listItem(entry));
    if (result.length >= limit) break;
  }
  // As PBS: the total is what was skipped and shown, plus one "virtual" entry while a full page
  // suggests more, so a paging UI keeps asking.
  let total = result.length + start;
  if (result.length > 0 && result.length >= limit) total++;
  return dataReply(result, { total });
}

async function taskStatus(ctx: RouteContext, nodeName: string): Promise<unknown> {
  checkNode(ctx, nodeName);
  const { text, fields } = upidParam(ctx);
  await checkTaskAccess(ctx, fields);
  const owner = tryParseAuthid(fields.authId);
  const result: Record<string, unknown> = {
    upid: text,
    node: fields.node,
    pid: fields.pid,
    pstart: fields.pstart,
    starttime: fields.startTime,
    type: fields.workerType,
    id: fields.workerId ?? null,
    user: owner === undefined ? fields.authId : `${owner.name}@${owner.realm}`,
  };
  if (owner?.tokenName !== undefined) result.tokenid = owner.tokenName;
  let entry: TaskListEntry | undefined;
  try {
    entry = await ctx.deps.tasks.status(text);
  } catch (error) {
    // As PBS: a task whose state cannot be read has stopped with an unknown result.
    if (!isBurrowError(error, 'NOT_FOUND')) throw error;
  }
  if (entry?.state === 'running') {
    result.status = 'running';
  } else {
    result.status = 'stopped';
    result.exitstatus = entry?.status ?? 'unknown';
    if (entry?.endtime !== undefined) result.endtime = entry.endtime;
  }
  return result;
}

async function downloadLog(ctx: RouteContext, fields: Upid): Promise<unknown> {
  const path = ctx.deps.tasks.logPath(fields);
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new BurrowError('NOT_FOUND', `task ${formatUpid(fields)} has no log`, {
        details: { upid: formatUpid(fields) },
      });
    }
    throw new BurrowError('IO_ERROR', `cannot open task log: ${code ?? String(error)}`, {
      details: { path },
      cause: error,
    });
  }
  const filename = `task-${fields.node}-${fields.workerType}-${formatRfc3339Utc(fields.startTime)}.log`;
  return rawReply('text/plain', handle.createReadStream(), {
    'content-disposition': `attachment; filename=${filename}`,
  });
}

async function taskLog(ctx: RouteContext, nodeName: string): Promise<unknown> {
  checkNode(ctx, nodeName);
  const { text, fields } = upidParam(ctx);
  await checkTaskAccess(ctx, fields);
  const p = ctx.params;
  if (p.download === true) {
    if (p.start !== undefined || p.limit !== undefined || p['test-status'] !== undefined) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        "Parameter 'download' cannot be used with other parameters",
      );
    }
    return downloadLog(ctx, fields);
  }
  const start = optionalNumber(p.start) ?? 0;
  const limit = optionalNumber(p.limit) ?? 50;
  const lines = await ctx.deps.tasks.readLog(text);
  const data: Array<{ n: number; t: string }> = [];
  // PBS's paging: line numbers are 1-based and `start` is compared with them, so start 0 and 1
  // both begin with line 1; limit 0 means to the end.
  let left = limit;
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    if (n < start) continue;
    if (limit !== 0) {
      if (left === 0) break;
      left--;
    }
    data.push({ n, t: lines[i] as string });
  }
  const body: Record<string, unknown> = { data, total: lines.length, success: 1 };
  if (p['test-status'] === true) {
    let active = false;
    try {
      active = (await ctx.deps.tasks.status(text)).state === 'running';
    } catch (error) {
      if (!isBurrowError(error, 'NOT_FOUND')) throw error;
    }
    body.active = active;
  }
  return envelopeReply(body);
}

async function stopTask(ctx: RouteContext, nodeName: string): Promise<unknown> {
  checkNode(ctx, nodeName);
  const caller = callerOf(ctx);
  const { text, fields } = upidParam(ctx);
  // PBS compares the auth id texts: a user cannot stop his tokens' tasks without Sys.Modify.
  const owner = tryParseAuthid(fields.authId);
  if (owner === undefined || formatAuthid(owner) !== formatAuthid(caller)) {
    await ctx.requirePrivileges('/system/tasks', ['Sys.Modify']);
  }
  const outcome = await requestTaskAbort(ctx.deps.dirs, ctx.deps.tasks, text);
  ctx.deps.log.info({ upid: formatUpid(fields), outcome }, 'task stop requested');
  return null;
}

export function taskRoutes(options: TaskRoutesOptions = {}): Route[] {
  const nodeName = options.nodeName ?? localNodeName();
  const handlerCheck = {
    kind: 'handler',
    why: 'Users can access their own tasks, or need Sys.Audit on /system/tasks.',
  } as const;
  return [
    {
      method: 'GET',
      path: '/nodes/{node}/tasks',
      description: 'List tasks.',
      parameters: LIST_PARAMS,
      permission: {
        kind: 'handler',
        why: 'Users can only see their own tasks, unless they have Sys.Audit on /system/tasks.',
      },
      handler: async (ctx) => {
        checkNode(ctx, nodeName);
        return listTasks(ctx);
      },
    },
    {
      method: 'GET',
      path: '/nodes/{node}/tasks/{upid}/status',
      description: 'Get task status.',
      parameters: TASK_PARAMS,
      permission: handlerCheck,
      handler: (ctx) => taskStatus(ctx, nodeName),
    },
    {
      method: 'GET',
      path: '/nodes/{node}/tasks/{upid}/log',
      description: 'Read the task log.',
      parameters: LOG_PARAMS,
      permission: handlerCheck,
      raw: 'download',
      handler: (ctx) => taskLog(ctx, nodeName),
    },
    {
      method: 'DELETE',
      path: '/nodes/{node}/tasks/{upid}',
      description: 'Try to stop a task.',
      parameters: TASK_PARAMS,
      permission: {
        kind: 'handler',
        why: 'Users can stop their own tasks, or need Sys.Modify on /system/tasks.',
      },
      handler: (ctx) => stopTask(ctx, nodeName),
    },
    {
      method: 'GET',
      path: '/nodes/{node}/tasks/{upid}',
      description: 'Directory index.',
      parameters: TASK_PARAMS,
      permission: { kind: 'anybody' },
      handler: (ctx) => {
        checkNode(ctx, nodeName);
        return Promise.resolve([{ subdir: 'log' }, { subdir: 'status' }]);
      },
    },
  ];
}
