/**
 * `burrow garbage-collect`: proxmox-backup-client's garbage-collect on a local repository. PBS's
 * two-phase GC runs as a `garbage_collection` task (id = the store name); its log lines show as
 * they are written, with a progress bar on a terminal, and the counters are printed at the end.
 */
import type { Command } from 'commander';
import { garbageCollection } from '../../datastore/gc.js';
import { clientContext } from '../client-context.js';
import { outputFormatOption } from '../run.js';
import { runForegroundTask } from '../task-display.js';
import { renderGcStatus } from './garbage-collection.js';

export function registerGarbageCollectCommand(program: Command): void {
  program
    .command('garbage-collect')
    .description('remove the chunks no snapshot uses any more (runs until done)')
    .addOption(outputFormatOption())
    .action(async (options: { outputFormat: string }, command: Command) => {
      const ctx = clientContext(command, options);
      const repo = await ctx.repository();
      const { upid, result } = await runForegroundTask(
        ctx.tasks,
        ctx.printer,
        'garbage_collection',
        repo.store.name,
        (task) => garbageCollection(repo.store, task),
        { authId: repo.authId },
      );
      ctx.printer.result({ ...result, upid }, renderGcStatus);
    });
}
