/**
 * `burrow status`: how full the repository's file system is (statfs of the datastore directory,
 * as PBS computes total, used and available) and how many groups and snapshots it holds, per
 * backup type, in every namespace.
 */
import type { Command } from 'commander';
import type { TypeCounts } from '../../types/api.js';
import { BACKUP_TYPES, type BackupType } from '../../types/backup.js';
import { clientContext } from '../client-context.js';
import { humanBytes, renderKeyValues } from '../output.js';
import { outputFormatOption } from '../run.js';

export interface StatusResult {
  repository: string;
  store: string;
  /** The datastore directory, when the client sees it (local mode). */
  path?: string;
  /** Bytes of the file system. */
  total: number;
  /** Bytes in use (total minus free blocks). */
  used: number;
  /** Bytes available to unprivileged users. */
  avail: number;
  counts: Record<BackupType, TypeCounts>;
}

/** "123 B (45 %)" the way PBS's client shows each figure: rounded percent of the total. */
function withPercent(value: number, total: number): string {
  const percent = total > 0 ? Math.round((value * 100) / total) : 0;
  return `${humanBytes(value)} (${percent} %)`;
}

export function renderStatus(s: StatusResult): string {
  const rows: Array<[string, string | number]> = [
    ['repository', s.repository],
    ...(s.path === undefined ? [] : [['path', s.path] as [string, string]]),
    ['total', humanBytes(s.total)],
    ['used', withPercent(s.used, s.total)],
    ['avail', withPercent(s.avail, s.total)],
  ];
  for (const type of BACKUP_TYPES) {
    const c = s.counts[type];
    rows.push([type, `${c.groups} groups, ${c.snapshots} snapshots`]);
  }
  return renderKeyValues(rows);
}

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('show the usage of the repository file system and the number of backups')
    .addOption(outputFormatOption())
    .action(async (options: { outputFormat: string }, command: Command) => {
      const ctx = clientContext(command, options);
      const repo = await ctx.repository();
      const status = await repo.status();
      const counts = Object.fromEntries(
        BACKUP_TYPES.map((t) => [t, status.counts?.[t] ?? { groups: 0, snapshots: 0 }]),
      ) as Record<BackupType, TypeCounts>;
      const result: StatusResult = {
        repository: repo.display,
        store: repo.storeName,
        ...(repo.path === undefined ? {} : { path: repo.path }),
        total: status.total,
        used: status.used,
        avail: status.avail,
        counts,
      };
      ctx.printer.result(result, renderStatus);
    });
}
