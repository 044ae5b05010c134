/**
 * `burrow-manager datastore create|list|show|update|remove`: datastores in datastore.cfg, as
 * `proxmox-backup-manager datastore` manages them. Creating and removing run as tasks
 * (`create-datastore`, `delete-datastore`), as in PBS.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { resolve } from 'node:path';
import type { BurrowDirs } from '../../lib/dirs.js';
import { BurrowError } from '../../lib/errors.js';
import {
  DATASTORE_SECTION,
  parseTuning,
  type DatastoreConfigEntry,
  type DatastoreProps,
} from '../../format/datastore-config.js';
import { DataStore } from '../../datastore/datastore.js';
import { checkDestroyable, destroyDatastoreData } from '../../datastore/destroy.js';
import {
  checkDatastoreName,
  readDatastoreConfig,
  updateDatastoreConfig,
} from '../../datastore/datastore-config-store.js';
import type { TaskContext } from '../../tasks/index.js';
import { integerOption, managerContext, parseBooleanText } from '../manager-context.js';
import { renderKeyValues, renderTable } from '../output.js';
import { outputFormatOption } from '../run.js';
import { runForegroundTask } from '../task-display.js';

/** A datastore as list/show print it: the name, then the properties as in datastore.cfg. */
export type DatastoreItem = { name: string } & DatastoreProps;

const itemOf = (entry: DatastoreConfigEntry): DatastoreItem => ({
  name: entry.name,
  ...entry.props,
});

export async function findDatastore(dirs: BurrowDirs, name: string): Promise<DatastoreConfigEntry> {
  const { entries } = await readDatastoreConfig(dirs);
  const entry = entries.find((e) => e.name === name);
  if (entry === undefined) {
    throw new BurrowError('NOT_FOUND', `datastore '${name}' does not exist`, {
      details: { datastore: name },
    });
  }
  return entry;
}

// ---------------------------------------------------------------------------------------------
// Properties that `update` can set: the datastore section's simple properties, typed from the schema.

/** Options of `update`, as commander names them, with the config key each sets. */
const UPDATABLE = [
  ['comment', 'comment', 'comment (empty: remove it)'],
  ['gcSchedule', 'gc-schedule', 'garbage collection schedule (calendar event)'],
  ['pruneSchedule', 'prune-schedule', 'prune schedule (calendar event)'],
  ['keepLast', 'keep-last', 'number of backups to keep'],
  ['keepHourly', 'keep-hourly', 'number of hourly backups to keep'],
  ['keepDaily', 'keep-daily', 'number of daily backups to keep'],
  ['keepWeekly', 'keep-weekly', 'number of weekly backups to keep'],
  ['keepMonthly', 'keep-monthly', 'number of monthly backups to keep'],
  ['keepYearly', 'keep-yearly', 'number of yearly backups to keep'],
  ['verifyNew', 'verify-new', 'verify new backups right after they finish (true|false)'],
  ['notifyUser', 'notify-user', 'user to notify (<name>@<realm>)'],
  ['notify', 'notify', 'when to notify (property string gc=..,verify=..,sync=..,prune=..)'],
  [
    'tuning',
    'tuning',
    'tuning options (property string, e.g. sync-level=file,gc-atime-cutoff=1445)',
  ],
  ['maintenanceMode', 'maintenance-mode', 'maintenance mode (type=read-only|offline[,message=..])'],
] as const;

type UpdatableKey = (typeof UPDATABLE)[number][1];

/** Turn the text of an option into the value datastore.cfg holds, by the schema's kind. */
function configValue(key: UpdatableKey, text: string): string | number | boolean {
  const spec = DATASTORE_SECTION.properties[key];
  // Everything else (strings, enums, property strings) is stored as text and checked on write.
  if (spec?.kind === 'integer') return integerOption(`--${key}`, 1)(text);
  if (spec?.kind === 'boolean') return parseBooleanText(`--${key}`, text);
  return text;
}

// ---------------------------------------------------------------------------------------------
// create

interface CreateOptions {
  outputFormat: string;
  reuseDatastore?: boolean;
  comment?: string;
  tuning?: string;
}

async function createDatastore(
  ctx: ReturnType<typeof managerContext>,
  name: string,
  path: string,
  options: CreateOptions,
  task: TaskContext,
): Promise<DatastoreItem> {
  const base = resolve(path);
  // Bad tuning fails before anything is created.
  const tuning = parseTuning(options.tuning);
  task.log(`create datastore '${name}' on ${base}`);
  let lastTenth = -1;
  await DataStore.create(name, base, {
    dirs: ctx.dirs,
    log: (line) => task.log(line),
    ...(options.reuseDatastore === true ? { reuse: true } : {}),
    ...(options.comment === undefined ? {} : { comment: options.comment }),
    ...(options.tuning === undefined ? {} : { tuning: options.tuning }),
    onProgress: (percent) => {
      task.progress?.(percent / 100, 'creating chunk directories');
      // Every tenth in the log: enough to see it move, without 100 lines.
      const tenth = Math.floor(percent / 10);
      if (tenth !== lastTenth) {
        lastTenth = tenth;
        task.log(`Chunkstore create: ${percent}%`);
      }
    },
  });
  // DataStore.create runs the atime safety check of §7.6 itself (and logs its success).
  if (!tuning.gcAtimeSafetyCheck) task.log('Access time update check skipped.');
  return itemOf(await findDatastore(ctx.dirs, name));
}

// ---------------------------------------------------------------------------------------------
// remove

// ---------------------------------------------------------------------------------------------

function renderItem(item: DatastoreItem): string {
  return renderKeyValues(
    Object.entries(item)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, v]),
  );
}

export function registerDatastoreCommands(program: Command): void {
  const datastore = program.command('datastore').description('manage datastores (datastore.cfg)');

  datastore
    .command('create')
    .description('create a datastore (or adopt an existing one with --reuse-datastore)')
    .argument('<name>', 'datastore name (3..32 characters: letters, digits, _ . -)')
    .argument('<path>', 'directory of the datastore; must be empty or not exist')
    .option(
      '--reuse-datastore',
      'adopt the existing datastore in <path> as it is (its layout is checked, nothing is recreated)',
    )
    .option('--comment <text>', 'comment')
    .option('--tuning <tuning>', 'tuning options (property string, e.g. sync-level=file)')
    .addOption(outputFormatOption())
    .action(async (name: string, path: string, options: CreateOptions, command: Command) => {
      checkDatastoreName(name);
      const ctx = managerContext(command, options);
      const { upid, result } = await runForegroundTask(
        ctx.tasks,
        ctx.printer,
        'create-datastore',
        name,
        (task) => createDatastore(ctx, name, path, options, task),
      );
      ctx.printer.result({ ...result, upid }, (r) => `${renderItem(result)}\nUPID: ${r.upid}`);
    });

  datastore
    .command('list')
    .description('list the configured datastores')
    .addOption(outputFormatOption())
    .action(async (options: { outputFormat: string }, command: Command) => {
      const { dirs, printer } = managerContext(command, options);
      const { entries } = await readDatastoreConfig(dirs);
      printer.result(entries.map(itemOf), (items) =>
        renderTable(
          [
            { header: 'name', value: (d: DatastoreItem) => d.name },
            { header: 'path', value: (d) => d.path },
            { header: 'comment', value: (d) => d.comment ?? '' },
          ],
          items,
        ),
      );
    });

  datastore
    .command('show')
    .description("show a datastore's configuration")
    .argument('<name>', 'datastore name')
    .addOption(outputFormatOption())
    .action(async (name: string, options: { outputFormat: string }, command: Command) => {
      const { dirs, printer } = managerContext(command, options);
      printer.result(itemOf(await findDatastore(dirs, name)), renderItem);
    });

  const update = datastore
    .command('update')
    .description("change a datastore's configuration")
    .argument('<name>', 'datastore name');
  for (const [, key, help] of UPDATABLE) update.option(`--${key} <value>`, help);
  update
    .addOption(
      new Option('--delete <property...>', 'remove properties (repeatable)').choices(
        UPDATABLE.map(([, key]) => key),
      ),
    )
    .addOption(outputFormatOption())
    .action(async (name: string, options: Record<string, unknown>, command: Command) => {
      const { dirs, printer } = managerContext(command, {
        outputFormat: options.outputFormat as string,
      });
      const deletes = (options.delete as string[] | undefined) ?? [];
      const sets: Array<[UpdatableKey, string | number | boolean]> = [];
      for (const [optionName, key] of UPDATABLE) {
        const text = options[optionName];
        if (typeof text !== 'string') continue;
        if (deletes.includes(key)) {
          throw new BurrowError(
            'INVALID_ARGUMENT',
            `--${key} and --delete ${key} contradict each other`,
          );
        }
        sets.push([key, configValue(key, text)]);
      }
      const updated = await updateDatastoreConfig(dirs, ({ entries }) => {
        const index = entries.findIndex((e) => e.name === name);
        const entry = entries[index];
        if (entry === undefined) {
          throw new BurrowError('NOT_FOUND', `datastore '${name}' does not exist`, {
            details: { datastore: name },
          });
        }
        const props: Record<string, unknown> = { ...entry.props };
        for (const key of deletes) delete props[key];
        for (const [key, value] of sets) {
          // PBS drops an empty comment instead of storing it.
          if (key === 'comment' && value === '') delete props[key];
          else props[key] = value;
        }
        const next = [...entries];
        next[index] = { name, props: props as DatastoreProps };
        return next;
      });
      const entry = updated.entries.find((e) => e.name === name);
      if (entry !== undefined) printer.result(itemOf(entry), renderItem);
    });

  datastore
    .command('remove')
    .description('remove a datastore from the configuration; its data stays unless --destroy-data')
    .argument('<name>', 'datastore name')
    .option(
      '--destroy-data',
      "also delete the datastore's chunks, snapshots and status files, and its directory when nothing else is left in it",
    )
    .addOption(outputFormatOption())
    .action(
      async (
        name: string,
        options: { outputFormat: string; destroyData?: boolean },
        command: Command,
      ) => {
        const ctx = managerContext(command, options);
        const entry = await findDatastore(ctx.dirs, name);
        const { upid } = await runForegroundTask(
          ctx.tasks,
          ctx.printer,
          'delete-datastore',
          name,
          async (task) => {
            // Check the directory before the configuration changes.
            if (options.destroyData === true) await checkDestroyable(entry.props.path);
            await updateDatastoreConfig(ctx.dirs, ({ entries }) => {
              if (!entries.some((e) => e.name === name)) {
                throw new BurrowError('NOT_FOUND', `datastore '${name}' does not exist`, {
                  details: { datastore: name },
                });
              }
              return entries.filter((e) => e.name !== name);
            });
            task.log(`removed datastore '${name}' from the configuration`);
            if (options.destroyData === true) await destroyDatastoreData(entry.props.path, task);
            else task.log(`the data in ${entry.props.path} was kept`);
          },
        );
        ctx.printer.result(
          { name, path: entry.props.path, destroyed: options.destroyData === true, upid },
          (r) =>
            `removed datastore '${r.name}'${r.destroyed ? ` and its data in ${r.path}` : ` (data kept in ${r.path})`}\nUPID: ${r.upid}`,
        );
      },
    );
}
