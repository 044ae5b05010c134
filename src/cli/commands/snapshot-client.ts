/**
 * `burrow snapshot list|files|forget|notes|protected`: proxmox-backup-client's snapshot commands
 * on a local repository. Reading is for everyone who can read the store; changing a snapshot is
 * for its group's owner (or root), as PBS allows its owner.
 */
import type { Command } from 'commander';
import { snapshotIsFinished } from '../../datastore/api-listing.js';
import type { BackupContent, SnapshotListItem as ApiSnapshotListItem } from '../../types/api.js';
import { formatSnapshot, type BackupNamespace, type BackupType } from '../../types/backup.js';
import { addNamespaceOption, clientContext, namespaceOf } from '../client-context.js';
import { groupArgument, parseBooleanText, snapshotArgument } from '../manager-context.js';
import {
  humanBytes,
  renderKeyValues,
  renderTable,
  snapshotIdentity,
  type SnapshotIdentity,
} from '../output.js';
import { outputFormatOption } from '../run.js';

export type { BackupContent } from '../../types/api.js';

/** PBS's SnapshotListItem, plus the snapshot path and whether it finished. */
export interface SnapshotListItem extends SnapshotIdentity, ApiSnapshotListItem {
  finished: boolean;
}

export function snapshotDisplayItem(
  ns: BackupNamespace,
  item: ApiSnapshotListItem,
): SnapshotListItem {
  const dir = {
    group: { ns, type: item['backup-type'] as BackupType, id: item['backup-id'] },
    time: item['backup-time'],
  };
  return { ...snapshotIdentity(dir), finished: snapshotIsFinished(item), ...item };
}

const stripExtension = (name: string): string => name.replace(/\.(blob|didx|fidx)$/, '');

function stateOf(s: SnapshotListItem): string {
  if (!s.finished) return 'unfinished';
  return s.verification?.state ?? '';
}

export function renderSnapshotList(items: readonly SnapshotListItem[]): string {
  return renderTable(
    [
      { header: 'snapshot', value: (s: SnapshotListItem) => s.snapshot },
      {
        header: 'size',
        value: (s) => (s.size === undefined ? '' : humanBytes(s.size)),
        align: 'right',
      },
      { header: 'protected', value: (s) => (s.protected ? 'yes' : '') },
      { header: 'state', value: stateOf },
      {
        header: 'files',
        value: (s) => s.files.map((f) => stripExtension(f.filename)).join(' '),
      },
      { header: 'comment', value: (s) => s.comment ?? '' },
    ],
    items,
  );
}

type NsOptions = { outputFormat: string; ns?: string };

/** A command with `--ns` and `--output-format`. */
const withCommon = (command: Command): Command =>
  addNamespaceOption(command).addOption(outputFormatOption());

export function registerClientSnapshotCommands(program: Command): void {
  const snapshot = program
    .command('snapshot')
    .description('list, inspect and change the snapshots of the repository');

  withCommon(
    snapshot
      .command('list')
      .description('list the snapshots of one group, or of every group in the namespace')
      .argument('[group]', 'backup group <type>/<id> (default: all groups)'),
  ).action(async (groupText: string | undefined, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const repo = await ctx.repository();
    const group = groupText === undefined ? undefined : groupArgument(groupText, options.ns);
    const ns = group?.ns ?? namespaceOf(options);
    const items = (await repo.listSnapshots(ns, group)).map((item) =>
      snapshotDisplayItem(ns, item),
    );
    ctx.printer.result(items, renderSnapshotList);
  });

  withCommon(
    snapshot
      .command('files')
      .description('list the files of a snapshot with size and crypt mode')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    const files = await repo.snapshotFiles(dir);
    ctx.printer.result(files, (list) =>
      renderTable(
        [
          { header: 'filename', value: (f: BackupContent) => f.filename },
          {
            header: 'size',
            value: (f) => (f.size === undefined ? '' : String(f.size)),
            align: 'right',
          },
          { header: 'crypt-mode', value: (f) => f['crypt-mode'] ?? '' },
        ],
        list,
      ),
    );
  });

  withCommon(
    snapshot
      .command('forget')
      .description('remove a snapshot (refused when it is protected)')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    await repo.forgetSnapshot(dir);
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), removed: true },
      (r) => `removed snapshot ${r.snapshot}`,
    );
  });

  const notes = snapshot.command('notes').description("show or change a snapshot's notes");
  withCommon(
    notes
      .command('show')
      .description("print a snapshot's notes")
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    const value = await repo.snapshotNotes(dir);
    ctx.printer.result({ snapshot: formatSnapshot(dir), notes: value }, (r) => r.notes);
  });
  withCommon(
    notes
      .command('update')
      .description("replace a snapshot's notes (an empty text removes them)")
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>')
      .argument('<notes>', 'the new notes'),
  ).action(async (text: string, value: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    await repo.setSnapshotNotes(dir, value);
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), notes: await repo.snapshotNotes(dir) },
      (r) => `updated the notes of ${r.snapshot}`,
    );
  });

  const prot = snapshot
    .command('protected')
    .description('show or change whether a snapshot is protected from prune and forget');
  const renderProtected = (r: { snapshot: string; protected: boolean }): string =>
    renderKeyValues([
      ['snapshot', r.snapshot],
      ['protected', r.protected],
    ]);
  withCommon(
    prot
      .command('show')
      .description('show whether a snapshot is protected')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), protected: await repo.isProtected(dir) },
      renderProtected,
    );
  });
  withCommon(
    prot
      .command('update')
      .description('protect (true) or unprotect (false) a snapshot')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>')
      .argument('<protected>', 'true or false'),
  ).action(async (text: string, value: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const wanted = parseBooleanText('protected', value);
    const repo = await ctx.repository();
    await repo.setProtected(dir, wanted);
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), protected: await repo.isProtected(dir) },
      renderProtected,
    );
  });
}
