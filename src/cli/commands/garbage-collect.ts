/**
 * `burrow garbage-collect`: proxmox-backup-client's garbage-collect. PBS's two-phase GC runs as a
 * `garbage_collection` task (id = the store name), in this process for a local repository or on
 * the server; its log lines show as they are written, with a progress bar on a terminal, and the
 * counters are printed at the end.
 */
import type { Command } from 'commander';
import { clientContext } from '../client-context.js';
import { outputFormatOption } from '../run.js';
import { observeTask } from '../task-display.js';
import { renderGcStatus } from './garbage-collection.js';

export function registerGarbageCollectCommand(program: Command): void {
  program
    .command('garbage-collect')
    .description('remove the chunks no snapshot uses any more (runs until done)')
    .addOption(outputFormatOption())
    .action(async (options: { outputFormat: string }, command: Command) => {
      const ctx = clientContext(command, options);
      const repo = await ctx.repository();
      const { upid, status } = await observeTask(ctx.printer, (observer) =>
        repo.garbageCollect(observer),
      );
      ctx.printer.result({ ...status, upid }, renderGcStatus);
    });
}
