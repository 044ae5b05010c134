/**
 * `burrow status`: how full the repository's file system is (statfs of the datastore directory,
 * as PBS computes total, used and available) and how many groups and snapshots it holds, per
 * backup type, in every namespace.
 */
import type { Command } from 'commander';
import { statfs } from 'node:fs/promises';
import { BACKUP_TYPES, ROOT_NAMESPACE, type BackupType } from '../../types/backup.js';
import { clientContext } from '../client-context.js';
import { humanBytes, renderKeyValues } from '../output.js';
import { outputFormatOption } from '../run.js';

export interface TypeCounts {
  groups: number;
  snapshots: number;
}

export interface StatusResult {
  repository: string;
  store: string;
  path: string;
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
    ['path', s.path],
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
      const store = repo.store;
      const fs = await statfs(store.base);
      const total = fs.blocks * fs.bsize;
      const counts = Object.fromEntries(
        BACKUP_TYPES.map((t) => [t, { groups: 0, snapshots: 0 }]),
      ) as Record<BackupType, TypeCounts>;
      for (const ns of await store.listNamespaces(ROOT_NAMESPACE)) {
        for (const group of await store.listGroups(ns)) {
          const c = counts[group.type];
          c.groups++;
          c.snapshots += (await store.listSnapshots(group)).length;
        }
      }
      const result: StatusResult = {
        repository: repo.display,
        store: store.name,
        path: store.base,
        total,
        used: total - fs.bfree * fs.bsize,
        avail: fs.bavail * fs.bsize,
        counts,
      };
      ctx.printer.result(result, renderStatus);
    });
}
