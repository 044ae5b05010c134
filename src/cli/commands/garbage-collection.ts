/**
 * `burrow-manager garbage-collection start|status <store>`: PBS's two-phase GC as a task
 * (`garbage_collection`, id = the store), and the counters of the last run from `.gc-status`.
 */
import type { Command } from 'commander';
import { DataStore } from '../../datastore/datastore.js';
import { garbageCollection } from '../../datastore/gc.js';
import type { GcStatusData } from '../../datastore/gc-status.js';
import { managerContext } from '../manager-context.js';
import { humanBytes, renderKeyValues } from '../output.js';
import { outputFormatOption } from '../run.js';
import { runForegroundTask } from '../task-display.js';

const sized = (bytes: number): string => `${humanBytes(bytes)} (${bytes} bytes)`;

/** The counters for people, in the order of PBS's summary. */
export function renderGcStatus(status: GcStatusData): string {
  const rows: Array<[string, string | number]> = [['last run (UPID)', status.upid ?? 'never']];
  rows.push(['index files', status['index-file-count']]);
  rows.push(['original data', sized(status['index-data-bytes'])]);
  rows.push(['on-disk data', sized(status['disk-bytes'])]);
  rows.push(['on-disk chunks', status['disk-chunks']]);
  rows.push(['removed', `${sized(status['removed-bytes'])} in ${status['removed-chunks']} chunks`]);
  rows.push(['pending', `${sized(status['pending-bytes'])} in ${status['pending-chunks']} chunks`]);
  rows.push(['removed bad', status['removed-bad']]);
  rows.push(['still bad', status['still-bad']]);
  if (status['index-data-bytes'] > 0 && status['disk-bytes'] > 0) {
    rows.push(['deduplication', (status['index-data-bytes'] / status['disk-bytes']).toFixed(2)]);
  }
  const cache = status['cache-stats'];
  if (cache !== undefined) rows.push(['cache hits/misses', `${cache.hits}/${cache.misses}`]);
  return renderKeyValues(rows);
}

export function registerGarbageCollectionCommands(program: Command): void {
  const gc = program
    .command('garbage-collection')
    .description('remove chunks that no index references any more');

  gc.command('start')
    .description('run garbage collection on a datastore now (waits until it has finished)')
    .argument('<store>', 'datastore name')
    .addOption(outputFormatOption())
    .action(async (name: string, options: { outputFormat: string }, command: Command) => {
      const ctx = managerContext(command, options);
      const store = await DataStore.lookup(name, { dirs: ctx.dirs, operation: 'write' });
      const { upid, result } = await runForegroundTask(
        ctx.tasks,
        ctx.printer,
        'garbage_collection',
        name,
        (task) => garbageCollection(store, task),
      );
      ctx.printer.result({ ...result, upid }, renderGcStatus);
    });

  gc.command('status')
    .description('show the counters of the last garbage collection of a datastore')
    .argument('<store>', 'datastore name')
    .addOption(outputFormatOption())
    .action(async (name: string, options: { outputFormat: string }, command: Command) => {
      const { dirs, printer } = managerContext(command, options);
      // A damaged .gc-status is reported (and read as never run), not fatal.
      const store = await DataStore.lookup(name, {
        dirs,
        log: (line) => printer.info(line),
        operation: 'read',
      });
      printer.result(store.gcStatus(), renderGcStatus);
    });
}
