/**
 * `burrow-manager prune <store> <group> --keep-... [--dry-run]`: PBS's prune of one group on a
 * local store. The selection is src/datastore/prune.ts; a real prune runs as a task (`prune`, id
 * `<store>:<group path>`), a dry run only computes the plan and changes nothing, as in PBS.
 */
import type { Command } from 'commander';
import { DataStore } from '../../datastore/datastore.js';
import {
  KEEP_OPTIONS,
  checkKeepOptions,
  type KeepOptions,
  type PruneMark,
} from '../../datastore/prune.js';
import { formatGroup, type BackupDir } from '../../types/backup.js';
import { groupArgument, integerOption, managerContext } from '../manager-context.js';
import { renderTable, snapshotIdentity, type SnapshotIdentity } from '../output.js';
import { outputFormatOption } from '../run.js';
import { runForegroundTask } from '../task-display.js';

/** One snapshot of the plan, with the fields of PBS's prune API reply and what happened. */
export interface PruneItem extends SnapshotIdentity {
  mark: PruneMark;
  keep: boolean;
  protected: boolean;
  /** Only after a real prune: whether the snapshot directory is gone. */
  removed?: boolean;
  error?: string;
}

export function pruneItem(
  entry: { dir: BackupDir; mark: PruneMark; removed?: boolean; error?: string },
  dryRun: boolean,
): PruneItem {
  return {
    ...snapshotIdentity(entry.dir),
    mark: entry.mark,
    keep: entry.mark !== 'remove',
    protected: entry.mark === 'protected',
    ...(dryRun ? {} : { removed: entry.removed === true }),
    ...(entry.error === undefined ? {} : { error: entry.error }),
  };
}

interface PruneCliOptions extends KeepOptions {
  outputFormat: string;
  ns?: string;
  dryRun?: boolean;
}

export interface PruneResult {
  upid?: string;
  'dry-run': boolean;
  snapshots: PruneItem[];
}

function renderPrune(result: PruneResult): string {
  const table = renderTable(
    [
      { header: 'snapshot', value: (i: PruneItem) => i.snapshot },
      { header: 'mark', value: (i) => i.mark },
      ...(result['dry-run']
        ? []
        : [
            {
              header: 'result',
              value: (i: PruneItem) =>
                i.error !== undefined ? `error: ${i.error}` : i.removed === true ? 'removed' : '',
            },
          ]),
    ],
    result.snapshots,
  );
  const note = result['dry-run'] ? '\n(dry run: nothing was removed)' : '';
  return `${table}${note}${result.upid === undefined ? '' : `\nUPID: ${result.upid}`}`;
}

export function registerPruneCommand(program: Command): void {
  const prune = program
    .command('prune')
    .description('remove the snapshots of a group that the keep options do not select')
    .argument('<store>', 'datastore name')
    .argument('<group>', 'backup group: [ns/<a>/...]<type>/<id>, e.g. vm/100')
    .option('--ns <namespace>', 'the namespace of the group');
  for (const { name } of KEEP_OPTIONS) {
    prune.option(
      `--${name} <n>`,
      `${name.replace('keep-', 'number of ')} backups to keep`,
      integerOption(`--${name}`, 1),
    );
  }
  prune
    .option('--dry-run', 'only show what would be kept and removed')
    .addOption(outputFormatOption())
    .action(async (name: string, groupText: string, options: PruneCliOptions, command: Command) => {
      const ctx = managerContext(command, options);
      const group = groupArgument(groupText, options.ns);
      const keep: KeepOptions = {};
      for (const { key } of KEEP_OPTIONS) {
        const value = options[key];
        if (value !== undefined) keep[key] = value;
      }
      checkKeepOptions(keep);
      const store = await DataStore.lookup(name, { dirs: ctx.dirs, operation: 'write' });
      const dryRun = options.dryRun === true;
      // A missing group fails here, before a task is started for it (as PBS checks before spawning).
      await store.listSnapshots(group);

      if (dryRun) {
        const plan = await store.pruneGroup(group, keep, { dryRun: true });
        ctx.printer.result(
          { 'dry-run': true, snapshots: plan.map((e) => pruneItem(e, true)) },
          renderPrune,
        );
        return;
      }
      const { upid, result } = await runForegroundTask(
        ctx.tasks,
        ctx.printer,
        'prune',
        `${name}:${formatGroup(group)}`,
        async (task) => {
          const entries = await store.pruneGroup(group, keep, {
            dryRun: false,
            log: (line) => task.log(line),
            warn: (line) => task.warn(line),
          });
          return entries;
        },
      );
      ctx.printer.result(
        { upid, 'dry-run': false, snapshots: result.map((e) => pruneItem(e, false)) },
        renderPrune,
      );
    });
}
