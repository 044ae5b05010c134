/**
 * `burrow list`: the backup groups of a namespace with their newest finished snapshot, snapshot
 * count, files and owner (proxmox-backup-client list; the JSON items are PBS's GroupListItem).
 */
import type { Command } from 'commander';
import type { DataStore } from '../../datastore/datastore.js';
import { MANIFEST_BLOB_NAME } from '../../format/manifest.js';
import { formatAuthid } from '../../types/auth.js';
import {
  formatGroup,
  formatBackupTime,
  namespaceToString,
  type BackupGroup,
} from '../../types/backup.js';
import { addNamespaceOption, clientContext, namespaceOf } from '../client-context.js';
import { renderTable } from '../output.js';
import { outputFormatOption } from '../run.js';

export interface GroupListItem {
  group: string;
  ns?: string;
  'backup-type': string;
  'backup-id': string;
  /** Time of the newest finished snapshot. */
  'last-backup'?: number;
  'backup-count': number;
  /** Files of the newest finished snapshot. */
  files: string[];
  owner?: string;
  comment?: string;
}

const stripExtension = (name: string): string => name.replace(/\.(blob|didx|fidx)$/, '');

export async function groupListItem(store: DataStore, group: BackupGroup): Promise<GroupListItem> {
  const snapshots = await store.listSnapshots(group);
  const newest = [...snapshots].reverse().find((s) => s.finished && s.error === undefined);
  let owner: string | undefined;
  try {
    owner = formatAuthid(await store.getOwner(group));
  } catch {
    // A group without a readable owner file is still listed.
  }
  let comment = '';
  try {
    comment = (await store.getGroupNotes(group)).split('\n', 1)[0] ?? '';
  } catch {
    // Notes are decoration.
  }
  const ns = namespaceToString(group.ns);
  return {
    group: formatGroup(group),
    ...(ns === '' ? {} : { ns }),
    'backup-type': group.type,
    'backup-id': group.id,
    ...(newest === undefined ? {} : { 'last-backup': newest.dir.time }),
    'backup-count': snapshots.length,
    files: newest === undefined ? [] : [...newest.files].sort(),
    ...(owner === undefined ? {} : { owner }),
    ...(comment === '' ? {} : { comment }),
  };
}

export function renderGroupList(items: readonly GroupListItem[]): string {
  return renderTable(
    [
      { header: 'group', value: (g: GroupListItem) => g.group },
      {
        header: 'last snapshot',
        value: (g) =>
          g['last-backup'] === undefined
            ? ''
            : `${g['backup-type']}/${g['backup-id']}/${formatBackupTime(g['last-backup'])}`,
      },
      { header: 'count', value: (g) => g['backup-count'], align: 'right' },
      { header: 'owner', value: (g) => g.owner ?? '' },
      {
        header: 'files',
        value: (g) =>
          g.files
            .filter((f) => f !== MANIFEST_BLOB_NAME)
            .map(stripExtension)
            .join(' '),
      },
    ],
    items,
  );
}

export function registerListCommand(program: Command): void {
  addNamespaceOption(
    program.command('list').description('list the backup groups of the repository'),
  )
    .addOption(outputFormatOption())
    .action(async (options: { outputFormat: string; ns?: string }, command: Command) => {
      const ctx = clientContext(command, options);
      const repo = await ctx.repository();
      const items: GroupListItem[] = [];
      for (const group of await repo.store.listGroups(namespaceOf(options)))
        items.push(await groupListItem(repo.store, group));
      ctx.printer.result(items, renderGroupList);
    });
}
