/**
 * `burrow prune <group> --keep-... [--dry-run]`: proxmox-backup-client's prune on a local
 * repository. The selection is src/datastore/prune.ts (an unfinished snapshot newer than every
 * finished one is kept, as it may still be running; older unfinished ones are removed); a real
 * prune runs as a `prune` task with id `<store>:<group>`, a dry run only shows the plan.
 */
import type { Command } from 'commander';
import { KEEP_OPTIONS, checkKeepOptions, type KeepOptions } from '../../datastore/prune.js';
import type { PruneListItem } from '../../types/api.js';
import { addNamespaceOption, clientContext } from '../client-context.js';
import { groupArgument, integerOption } from '../manager-context.js';
import { renderTable, snapshotIdentity, type SnapshotIdentity } from '../output.js';
import { outputFormatOption } from '../run.js';
import { observeTask } from '../task-display.js';
import type { BackupGroup } from '../../types/backup.js';

/** PBS's PruneListItem with the snapshot path; after a real prune, whether it was removed. */
export interface PruneItem extends SnapshotIdentity {
  keep: boolean;
  protected: boolean;
  removed?: boolean;
}

export interface PruneCommandResult {
  'dry-run': boolean;
  upid?: string;
  snapshots: PruneItem[];
}

function pruneDisplayItem(group: BackupGroup, item: PruneListItem, dryRun: boolean): PruneItem {
  return {
    ...snapshotIdentity({ group, time: item['backup-time'] }),
    keep: item.keep,
    protected: item.protected,
    ...(dryRun ? {} : { removed: !item.keep }),
  };
}

const actionOf = (i: PruneItem): string => (i.protected ? 'protected' : i.keep ? 'keep' : 'remove');

export function renderPruneResult(r: PruneCommandResult): string {
  const table = renderTable(
    [
      { header: 'snapshot', value: (i: PruneItem) => i.snapshot },
      { header: 'action', value: actionOf },
      ...(r['dry-run']
        ? []
        : [{ header: 'result', value: (i: PruneItem) => (i.removed === true ? 'removed' : '') }]),
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
      const dryRun = options.dryRun === true;
      const { upid, items } = await observeTask(ctx.printer, (observer) =>
        repo.prune(group, keep, { dryRun, observer }),
      );
      ctx.printer.result(
        {
          'dry-run': dryRun,
          ...(upid === undefined ? {} : { upid }),
          snapshots: items.map((item) => pruneDisplayItem(group, item, dryRun)),
        },
        renderPruneResult,
      );
    });
}
