/**
 * `burrow list`: the backup groups of a namespace with their newest finished snapshot, snapshot
 * count, files and owner (proxmox-backup-client list; the JSON items are PBS's GroupListItem).
 */
import type { Command } from 'commander';
import { MANIFEST_BLOB_NAME } from '../../format/manifest.js';
import type { GroupListItem as ApiGroupListItem } from '../../types/api.js';
import {
  formatBackupTime,
  formatGroup,
  namespaceToString,
  type BackupNamespace,
  type BackupType,
} from '../../types/backup.js';
import { addNamespaceOption, clientContext, namespaceOf } from '../client-context.js';
import { renderTable } from '../output.js';
import { outputFormatOption } from '../run.js';

/** PBS's GroupListItem, plus the group path and namespace for people and scripts. */
export interface GroupListItem extends ApiGroupListItem {
  group: string;
  ns?: string;
}

const stripExtension = (name: string): string => name.replace(/\.(blob|didx|fidx)$/, '');

export function groupDisplayItem(ns: BackupNamespace, item: ApiGroupListItem): GroupListItem {
  const nsText = namespaceToString(ns);
  return {
    group: formatGroup({ ns, type: item['backup-type'] as BackupType, id: item['backup-id'] }),
    ...(nsText === '' ? {} : { ns: nsText }),
    ...item,
  };
}

export function renderGroupList(items: readonly GroupListItem[]): string {
  return renderTable(
    [
      { header: 'group', value: (g: GroupListItem) => g.group },
      {
        header: 'last snapshot',
        value: (g) =>
          g['last-backup'] === 0
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
      const ns = namespaceOf(options);
      const items = (await repo.listGroups(ns)).map((item) => groupDisplayItem(ns, item));
      ctx.printer.result(items, renderGroupList);
    });
}
