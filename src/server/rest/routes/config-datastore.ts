/**
 * /config/datastore: the datastores of datastore.cfg, as PBS's config API manages them and with
 * the library calls `burrow-manager datastore` makes (DataStore.create, updateDatastoreConfig).
 *
 * - GET    /config/datastore         the stores the caller has Datastore.Audit on, `digest` beside
 * - POST   /config/datastore         create (Datastore.Allocate on /datastore): a
 *                                    `create-datastore` task; answers with its UPID
 * - GET    /config/datastore/{name}  one store (Datastore.Audit), `digest` beside
 * - PUT    /config/datastore/{name}  change properties (Datastore.Modify), `delete` list, `digest`
 * - DELETE /config/datastore/{name}  remove from the configuration (Datastore.Allocate): a
 *                                    `delete-datastore` task; answers with its UPID
 */
import { isAbsolute } from 'node:path';
import { DataStore } from '../../../datastore/datastore.js';
import { checkDestroyable, destroyDatastoreData } from '../../../datastore/destroy.js';
import {
  readDatastoreConfig,
  updateDatastoreConfig,
} from '../../../datastore/datastore-config-store.js';
import {
  writeDatastoreConfig,
  type DatastoreConfigEntry,
  type DatastoreProps,
} from '../../../format/datastore-config.js';
import { BurrowError } from '../../../lib/errors.js';
import type { TaskContext } from '../../../tasks/index.js';
import { parameterError } from '../parameters.js';
import {
  dataReply,
  type ParamSchema,
  type ParamSpec,
  type Route,
  type RouteContext,
} from '../route.js';
import { callerOf, spawnTask, STORE_PARAM } from './datastore-common.js';

/** A datastore as PBS's DataStoreConfig serialises it: the name, then its properties. */
export type DatastoreConfigItem = { name: string } & DatastoreProps;

const itemOf = (entry: DatastoreConfigEntry): DatastoreConfigItem => ({
  name: entry.name,
  ...entry.props,
});

// ---------------------------------------------------------------------------------------------
// parameters (pbs-api-types DataStoreConfig)

const optionalText = (description: string, extra: Partial<ParamSpec> = {}): ParamSpec =>
  ({ type: 'string', optional: true, description, ...extra }) as ParamSpec;

const keep = (description: string): ParamSpec => ({
  type: 'integer',
  minimum: 1,
  optional: true,
  description,
});

/** PBS's single-line comment: no control characters, at most 128 characters. */
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const COMMENT_RE = /^[^\x00-\x1F\x7F]*$/;
const DIGEST_RE = /^[a-f0-9]{64}$/;

/** Properties that create and update share, keyed as in datastore.cfg. */
const PROPERTY_PARAMS = {
  comment: optionalText('Comment.', { pattern: COMMENT_RE, maxLength: 128 }),
  'gc-schedule': optionalText('Run garbage collection job at specified schedule.', {
    minLength: 1,
  }),
  'prune-schedule': optionalText('Run prune job at specified schedule.', { minLength: 1 }),
  'keep-last': keep('Number of backups to keep.'),
  'keep-hourly': keep('Number of hourly backups to keep.'),
  'keep-daily': keep('Number of daily backups to keep.'),
  'keep-weekly': keep('Number of weekly backups to keep.'),
  'keep-monthly': keep('Number of monthly backups to keep.'),
  'keep-yearly': keep('Number of yearly backups to keep.'),
  'verify-new': {
    type: 'boolean',
    optional: true,
    description: 'If enabled, all new backups will be verified right after completion.',
  },
  'notify-user': optionalText('User ID to send notifications to.'),
  notify: optionalText('Datastore notification setting (property string gc=..,verify=..).'),
  'notification-mode': {
    type: 'string',
    enum: ['legacy-sendmail', 'notification-system'],
    optional: true,
    description: 'Configure how notifications for this datastore should be sent.',
  },
  tuning: optionalText('Datastore tuning options (property string).'),
  'maintenance-mode': optionalText('Maintenance mode (property string type=..,message=..).'),
} satisfies ParamSchema;

type PropertyKey = keyof typeof PROPERTY_PARAMS;
const PROPERTY_KEYS = Object.keys(PROPERTY_PARAMS) as PropertyKey[];

const CREATE_PARAMS: ParamSchema = {
  name: STORE_PARAM,
  path: {
    type: 'string',
    minLength: 1,
    maxLength: 4096,
    description: 'Directory name (absolute path).',
  },
  ...PROPERTY_PARAMS,
  'reuse-datastore': {
    type: 'boolean',
    optional: true,
    description: 'Re-use existing datastore directory.',
  },
};

const DIGEST_PARAM: ParamSpec = {
  type: 'string',
  pattern: DIGEST_RE,
  optional: true,
  description: 'Prevent changes if current configuration file has different SHA256 digest.',
};

/** What PUT may delete: every settable property (PBS's DeletableProperty). */
const DELETABLE = PROPERTY_KEYS;

const UPDATE_PARAMS: ParamSchema = {
  name: STORE_PARAM,
  ...PROPERTY_PARAMS,
  delete: {
    type: 'array',
    items: { type: 'string', enum: DELETABLE },
    optional: true,
    description: 'List of properties to delete.',
  },
  digest: DIGEST_PARAM,
};

const DELETE_PARAMS: ParamSchema = {
  name: STORE_PARAM,
  'keep-job-configs': {
    type: 'boolean',
    default: false,
    description: 'If enabled, the job configurations related to this datastore will be kept.',
  },
  'destroy-data': {
    type: 'boolean',
    default: false,
    description: "Delete the datastore's underlying contents.",
  },
  digest: DIGEST_PARAM,
};

// ---------------------------------------------------------------------------------------------

function notFound(name: string): BurrowError {
  return new BurrowError('NOT_FOUND', `datastore '${name}' does not exist`, {
    details: { datastore: name },
  });
}

/** The properties among the parameters, typed as datastore.cfg holds them. */
function propertiesOf(
  params: Readonly<Record<string, unknown>>,
): Partial<Record<PropertyKey, unknown>> {
  const props: Partial<Record<PropertyKey, unknown>> = {};
  for (const key of PROPERTY_KEYS) {
    if (params[key] !== undefined) props[key] = params[key];
  }
  return props;
}

/** Check a section as datastore.cfg would store it, before anything is created or changed. */
function checkSection(entry: DatastoreConfigEntry): void {
  writeDatastoreConfig([entry]);
}

async function listDatastores(ctx: RouteContext): Promise<unknown> {
  const { entries, digest } = await readDatastoreConfig(ctx.deps.dirs);
  const visible: DatastoreConfigItem[] = [];
  for (const entry of entries) {
    if ((await ctx.privileges(`/datastore/${entry.name}`)).has('Datastore.Audit')) {
      visible.push(itemOf(entry));
    }
  }
  return dataReply(visible, { digest });
}

async function createDatastore(ctx: RouteContext): Promise<unknown> {
  const caller = callerOf(ctx);
  const name = ctx.params.name as string;
  const path = ctx.params.path as string;
  const reuse = ctx.params['reuse-datastore'] === true;
  const { comment, tuning, ...rest } = propertiesOf(ctx.params) as Partial<DatastoreProps>;
  if (!isAbsolute(path)) {
    throw parameterError([['path', 'expected an absolute path']]);
  }
  const { entries } = await readDatastoreConfig(ctx.deps.dirs);
  if (entries.some((e) => e.name === name)) {
    throw parameterError([['name', `datastore '${name}' already exists.`]]);
  }
  const extra = rest as Record<string, unknown>;
  checkSection({
    name,
    props: {
      path,
      ...(comment === undefined ? {} : { comment }),
      ...(tuning === undefined ? {} : { tuning }),
      ...extra,
    },
  });

  const work = async (task: TaskContext) => {
    task.log(`create datastore '${name}' on ${path}`);
    let lastTenth = -1;
    await DataStore.create(name, path, {
      dirs: ctx.deps.dirs,
      log: (line) => task.log(line),
      ...(reuse ? { reuse: true } : {}),
      ...(comment === undefined ? {} : { comment }),
      ...(tuning === undefined ? {} : { tuning }),
      onProgress: (percent) => {
        const tenth = Math.floor(percent / 10);
        if (tenth !== lastTenth) {
          lastTenth = tenth;
          task.log(`Chunkstore create: ${percent}%`);
        }
      },
    });
    if (Object.keys(extra).length > 0) {
      // DataStore.create writes path, comment and tuning; the rest goes in right after.
      await updateDatastoreConfig(ctx.deps.dirs, ({ entries: current }) =>
        current.map((e) => (e.name === name ? { name, props: { ...e.props, ...extra } } : e)),
      );
    }
  };
  return spawnTask(ctx.deps, caller, 'create-datastore', name, work);
}

async function readDatastore(ctx: RouteContext): Promise<unknown> {
  const name = ctx.params.name as string;
  const { entries, digest } = await readDatastoreConfig(ctx.deps.dirs);
  const entry = entries.find((e) => e.name === name);
  if (entry === undefined) throw notFound(name);
  return dataReply(itemOf(entry), { digest });
}

async function updateDatastore(ctx: RouteContext): Promise<unknown> {
  const name = ctx.params.name as string;
  const deletes = (ctx.params.delete as PropertyKey[] | undefined) ?? [];
  const sets = propertiesOf(ctx.params);
  const digest = ctx.params.digest as string | undefined;
  await updateDatastoreConfig(
    ctx.deps.dirs,
    ({ entries }) => {
      const index = entries.findIndex((e) => e.name === name);
      const entry = entries[index];
      if (entry === undefined) throw notFound(name);
      const props: Record<string, unknown> = { ...entry.props };
      for (const key of deletes) delete props[key];
      for (const [key, value] of Object.entries(sets)) {
        // PBS trims the comment and drops an empty one instead of storing it.
        if (key === 'comment') {
          const text = (value as string).trim();
          if (text === '') delete props.comment;
          else props.comment = text;
        } else {
          props[key] = value;
        }
      }
      const next = [...entries];
      next[index] = { name, props: props as DatastoreProps };
      return next;
    },
    digest === undefined ? {} : { expectDigest: digest },
  );
  return null;
}

async function deleteDatastore(ctx: RouteContext): Promise<unknown> {
  const caller = callerOf(ctx);
  const name = ctx.params.name as string;
  const digest = ctx.params.digest as string | undefined;
  const destroy = ctx.params['destroy-data'] === true;
  const current = await readDatastoreConfig(ctx.deps.dirs);
  if (digest !== undefined && digest !== current.digest) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'detected modified configuration - file changed by other user? Try again.',
      { details: { expected: digest, actual: current.digest } },
    );
  }
  const entry = current.entries.find((e) => e.name === name);
  if (entry === undefined) throw notFound(name);
  // Not a datastore, or a backup or GC running on it: refused before anything changes.
  if (destroy) await checkDestroyable(entry.props.path);
  return spawnTask(ctx.deps, caller, 'delete-datastore', name, async (task) => {
    await updateDatastoreConfig(
      ctx.deps.dirs,
      ({ entries }) => {
        if (!entries.some((e) => e.name === name)) throw notFound(name);
        return entries.filter((e) => e.name !== name);
      },
      digest === undefined ? {} : { expectDigest: digest },
    );
    task.log(`removed datastore '${name}' from the configuration`);
    if (destroy) await destroyDatastoreData(entry.props.path, task);
    else task.log(`the data in ${entry.props.path} was kept`);
  });
}

export function configDatastoreRoutes(): Route[] {
  return [
    {
      method: 'GET',
      path: '/config/datastore',
      description: 'List all datastores (those with Datastore.Audit), with the config digest.',
      parameters: {},
      permission: { kind: 'anybody' },
      handler: listDatastores,
    },
    {
      method: 'POST',
      path: '/config/datastore',
      description: 'Create a new datastore (as a task; returns its UPID).',
      parameters: CREATE_PARAMS,
      permission: { kind: 'privileges', path: '/datastore', privileges: ['Datastore.Allocate'] },
      handler: createDatastore,
    },
    {
      method: 'GET',
      path: '/config/datastore/{name}',
      description: 'Read a datastore configuration.',
      parameters: { name: STORE_PARAM },
      permission: {
        kind: 'privileges',
        path: '/datastore/{name}',
        privileges: ['Datastore.Audit'],
      },
      handler: readDatastore,
    },
    {
      method: 'PUT',
      path: '/config/datastore/{name}',
      description: 'Update datastore config.',
      parameters: UPDATE_PARAMS,
      permission: {
        kind: 'privileges',
        path: '/datastore/{name}',
        privileges: ['Datastore.Modify'],
      },
      handler: updateDatastore,
    },
    {
      method: 'DELETE',
      path: '/config/datastore/{name}',
      description: 'Remove a datastore configuration (as a task; returns its UPID).',
      parameters: DELETE_PARAMS,
      permission: {
        kind: 'privileges',
        path: '/datastore/{name}',
        privileges: ['Datastore.Allocate'],
      },
      handler: deleteDatastore,
    },
  ];
}
