/**
 * `burrow-manager verify <store>`: verify a whole datastore or a namespace subtree as a task
 * (`verify`, id = `<store>` or `<store>:<ns>`), as `proxmox-backup-manager verify` does. Like
 * PBS's verify task it fails when any snapshot fails; the CLI then exits with status 4.
 */
import type { Command } from 'commander';
import { DataStore } from '../../datastore/datastore.js';
import { VerifyWorker, verifyStore } from '../../datastore/verify.js';
import { BurrowError } from '../../lib/errors.js';
import {
  MAX_NAMESPACE_DEPTH,
  formatSnapshot,
  isRootNamespace,
  namespaceToString,
  type BackupDir,
} from '../../types/backup.js';
import {
  integerOption,
  managerContext,
  namespaceOption,
  parseBooleanText,
} from '../manager-context.js';
import { outputFormatOption } from '../run.js';
import { runForegroundTask } from '../task-display.js';

interface VerifyCliOptions {
  outputFormat: string;
  ns?: string;
  maxDepth?: number;
  ignoreVerified: boolean;
  outdatedAfter?: number;
}

export interface VerifyResult {
  upid: string | undefined;
  ok: boolean;
  /** Snapshot paths (`[ns/..]type/id/time`) that failed. */
  failed: string[];
}

function renderVerifyResult(result: VerifyResult): string {
  const lines = result.ok
    ? ['verification successful']
    : [
        `verification failed for ${result.failed.length} snapshot(s):`,
        ...result.failed.map((s) => `  ${s}`),
      ];
  if (result.upid !== undefined) lines.push(`UPID: ${result.upid}`);
  return lines.join('\n');
}

export function registerVerifyCommand(program: Command): void {
  program
    .command('verify')
    .description('verify the snapshots of a datastore (all chunks read and checked)')
    .argument('<store>', 'datastore name')
    .option('--ns <namespace>', 'verify only this namespace and the ones below it')
    .option(
      '--max-depth <n>',
      `how many namespace levels below --ns to include (0..${MAX_NAMESPACE_DEPTH}; default all)`,
      integerOption('--max-depth'),
    )
    .option(
      '--ignore-verified <bool>',
      'skip snapshots verified before (see --outdated-after)',
      (v: string) => parseBooleanText('--ignore-verified', v),
      true,
    )
    .option(
      '--outdated-after <days>',
      'with --ignore-verified: verify again when the last verification is older than <days>',
      integerOption('--outdated-after'),
    )
    .addOption(outputFormatOption())
    .action(async (name: string, options: VerifyCliOptions, command: Command) => {
      const ctx = managerContext(command, options);
      const ns = namespaceOption(options.ns);
      if (options.maxDepth !== undefined && options.maxDepth > MAX_NAMESPACE_DEPTH) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `--max-depth must be at most ${MAX_NAMESPACE_DEPTH}, got ${options.maxDepth}`,
        );
      }
      const store = await DataStore.lookup(name, { dirs: ctx.dirs, operation: 'read' });
      const workerId = isRootNamespace(ns) ? name : `${name}:${namespaceToString(ns)}`;
      let failed: BackupDir[] = [];
      let upid: string | undefined;
      let failure: BurrowError | undefined;
      try {
        ({ upid } = await runForegroundTask(
          ctx.tasks,
          ctx.printer,
          'verify',
          workerId,
          async (task) => {
            upid = task.upid;
            const worker = new VerifyWorker(store, task, {
              ignoreVerified: options.ignoreVerified,
              ...(options.outdatedAfter === undefined
                ? {}
                : { outdatedAfterDays: options.outdatedAfter }),
            });
            failed = await verifyStore(worker, {
              ns,
              ...(options.maxDepth === undefined ? {} : { maxDepth: options.maxDepth }),
            });
            if (failed.length > 0) {
              task.log('Failed to verify the following snapshots/groups:');
              for (const dir of failed) task.log(`\t${formatSnapshot(dir)}`);
              throw new BurrowError(
                'VERIFY_FAILED',
                'verification failed - please check the log for details',
                { details: { failed: failed.map(formatSnapshot) } },
              );
            }
          },
          { upidOnError: false },
        ));
      } catch (error) {
        // Only the verdict is reported as a result; anything else (a lock, a missing store) is an error.
        if (!(error instanceof BurrowError && error.code === 'VERIFY_FAILED')) {
          if (upid !== undefined) ctx.printer.info(`UPID: ${upid}`);
          throw error;
        }
        failure = error;
      }
      const result: VerifyResult = {
        upid,
        ok: failed.length === 0,
        failed: failed.map(formatSnapshot),
      };
      ctx.printer.result(result, renderVerifyResult);
      if (failure !== undefined) throw failure;
    });
}
