/**
 * `burrow prune <group> --keep-... [--dry-run]`: proxmox-backup-client's prune on a local
 * repository. The selection is src/datastore/prune.ts (an unfinished snapshot newer than every
 * finished one is kept, as it may still be running; older unfinished ones are removed); a real
 * prune runs as a `prune` task with id `<store>:<group>`, a dry run only shows the plan.
 */
import type { Command } from 'commander';
import { KEEP_OPTIONS, checkKeepOptions, type KeepOptions } from '../../datastore/prune.js';
import { formatGroup } from '../../types/backup.js';
import { addNamespaceOption, checkGroupOwner, clientContext } from '../client-context.js';
import { groupArgument, integerOption } from '../manager-context.js';
import { renderTable } from '../output.js';
import { pruneItem, type PruneItem } from './prune.js';
import { outputFormatOption } from '../run.js';
import { runForegroundTask } from '../task-display.js';

export interface PruneCommandResult {
  'dry-run': boolean;
  upid?: string;
  snapshots: PruneItem[];
}

export function renderPruneResult(r: PruneCommandResult): string {
  const table = renderTable(
    [
      { header: 'snapshot', value: (i: PruneItem) => i.snapshot },
      { header: 'action', value: (i) => (i.keep ? i.mark : 'remove') },
      ...(r['dry-run']
        ? []
        : [
            {
              header: 'result',
              value: (i: PruneItem) =>
                i.error !== undefined ? `error: ${i.error}` : i.removed === true ? 'removed' : '',
            },
          ]),
    ],
    r.snapshots,
  );
  return `${table}${r['dry-run'] ? '\n(dry run: nothing was removed)' : ''}`;
}

type PruneCliOptions = KeepOptions & { outputFormat: string; ns?: string; dryRun?: boolean };

export function registerClientPruneCommand(program: Command): void {
  const prune = program
    .command('prune')
    .description('remove the snapshots of a group that the keep options do not select')
    .argument('<group>', 'backup group <type>/<id>');
  addNamespaceOption(prune);
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
    .action(async (groupText: string, options: PruneCliOptions, command: Command) => {
      const ctx = clientContext(command, options);
      const group = groupArgument(groupText, options.ns);
      const keep: KeepOptions = {};
      for (const { key } of KEEP_OPTIONS) {
        const value = options[key];
        if (value !== undefined) keep[key] = value;
      }
      checkKeepOptions(keep);
      const repo = await ctx.repository();
      const store = repo.store;
      // A missing group fails before anything starts.
      await store.listSnapshots(group);
      if (options.dryRun === true) {
        const plan = await store.pruneGroup(group, keep, { dryRun: true });
        ctx.printer.result(
          { 'dry-run': true, snapshots: plan.map((e) => pruneItem(e, true)) },
          renderPruneResult,
        );
        return;
      }
      await checkGroupOwner(repo, group);
      const { upid, result } = await runForegroundTask(
        ctx.tasks,
        ctx.printer,
        'prune',
        `${store.name}:${formatGroup(group)}`,
        (task) =>
          store.pruneGroup(group, keep, {
            dryRun: false,
            log: (line) => task.log(line),
            warn: (line) => task.warn(line),
          }),
        { authId: repo.authId },
      );
      ctx.printer.result(
        { 'dry-run': false, upid, snapshots: result.map((e) => pruneItem(e, false)) },
        renderPruneResult,
      );
    });
}
