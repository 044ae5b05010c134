/**
 * `burrow restore <snapshot> <archive-name> <target>`: proxmox-backup-client's restore from a
 * local repository. The snapshot may be a group (`host/web1`) for its newest finished snapshot.
 * pxar archives go to a directory; images and blobs to a file or, with `-`, to standard output,
 * in which case nothing else is printed there.
 */
import type { Command } from 'commander';
import {
  workerChunkDecoder,
  workerChunkFileDecoder,
  workerChunkPlanRunner,
} from '../../client/chunk-reader.js';
import { restoreArchive } from '../../client/restore.js';
import { ChunkWorkerPool } from '../../client/worker-pool.js';
import { archiveTypeOf, serverArchiveName } from '../../format/manifest.js';
import type { OverwriteKind } from '../../pxar/extractor.js';
import { formatSnapshot } from '../../types/backup.js';
import { createActivityDisplay, formatDuration, formatRate } from '../activity-display.js';
import {
  InterruptedError,
  addKeyfileOption,
  addNamespaceOption,
  clientContext,
  collect,
  readerCrypt,
  resolveSnapshot,
  watchInterrupts,
} from '../client-context.js';
import { humanBytes, renderKeyValues } from '../output.js';
import { outputFormatOption } from '../run.js';

interface RestoreCliOptions {
  outputFormat: string;
  ns?: string;
  keyfile?: string;
  pattern?: string[];
  allowExistingDirs?: boolean;
  overwrite?: boolean;
  overwriteFiles?: boolean;
  overwriteSymlinks?: boolean;
  overwriteHardlinks?: boolean;
  ignoreAcls?: boolean;
  ignoreXattrs?: boolean;
  ignoreFcaps?: boolean;
}

export interface RestoreResult {
  snapshot: string;
  archive: string;
  target: string;
  bytes: number;
  entries?: number;
  seconds: number;
  warnings: number;
}

export function renderRestoreSummary(r: RestoreResult): string {
  const rows: Array<[string, string | number]> = [
    ['snapshot', r.snapshot],
    ['archive', r.archive],
    ['target', r.target],
  ];
  if (r.entries !== undefined) rows.push(['entries', r.entries]);
  rows.push([
    'restored',
    `${humanBytes(r.bytes)} in ${formatDuration(r.seconds)} (${formatRate(r.bytes / Math.max(r.seconds, 1e-3))})`,
  ]);
  if (r.warnings > 0) rows.push(['warnings', r.warnings]);
  return renderKeyValues(rows);
}

async function restoreCommand(
  snapshotText: string,
  archiveName: string,
  target: string,
  options: RestoreCliOptions,
  command: Command,
): Promise<void> {
  const ctx = clientContext(command, options);
  const repo = await ctx.repository();
  const dir = await resolveSnapshot(repo, snapshotText, options.ns);
  const crypt = await readerCrypt(options);
  const overwrite: OverwriteKind[] = [];
  if (options.overwriteFiles === true) overwrite.push('files');
  if (options.overwriteSymlinks === true) overwrite.push('symlinks');
  if (options.overwriteHardlinks === true) overwrite.push('hardlinks');

  const display = createActivityDisplay();
  const interrupts = watchInterrupts((name) =>
    display.line(`${name} received: stopping the restore (again to quit at once)`),
  );
  let stats;
  // Chunks are checked and decoded on worker threads, beside the main thread's file writes.
  const pool = ChunkWorkerPool.create();
  // Threads load while the indexes are read; a blob needs none.
  if (isChunkedArchive(archiveName)) pool.startThreads();
  try {
    const reader = await repo.openReader(dir);
    try {
      stats = await restoreArchive({
        reader,
        decodeChunk: workerChunkDecoder(pool),
        decodeChunkFile: workerChunkFileDecoder(pool),
        runChunkPlan: workerChunkPlanRunner(pool),
        signal: interrupts.signal,
        ...(crypt === undefined ? {} : { crypt }),
        archiveName,
        target,
        ...(options.pattern === undefined ? {} : { patterns: options.pattern }),
        extract: {
          allowExistingDirs: options.allowExistingDirs === true,
          overwrite: options.overwrite === true ? 'all' : overwrite,
          noAcls: options.ignoreAcls === true,
          noXattrs: options.ignoreXattrs === true,
          noFcaps: options.ignoreFcaps === true,
        },
        onWarning: (message) => display.line(`warning: ${message}`),
        onProgress: (p) =>
          // pxar: the archive read so far against its size gives the bar and the ETA.
          display.update({
            bytes: p.archiveBytes ?? p.bytes,
            ...((p.archiveSize ?? p.totalBytes) === undefined
              ? {}
              : { totalBytes: p.archiveSize ?? p.totalBytes }),
            entries: p.entries ?? 0,
            ...(p.path === undefined ? {} : { path: p.path }),
          }),
      });
    } finally {
      await reader.close();
    }
  } catch (error) {
    const signalName = interrupts.received();
    if (signalName === undefined) throw error;
    // A partly written image or blob file is removed; a directory keeps what was restored.
    throw new InterruptedError(
      signalName,
      `restore interrupted by ${signalName}: ${target === '-' ? 'the output is incomplete' : `${target} may hold part of the archive`}`,
      error,
    );
  } finally {
    display.stop();
    interrupts.dispose();
    await pool.close();
  }
  // Standard output carries the data itself; a summary there would corrupt it.
  if (target === '-') return;
  const result: RestoreResult = {
    snapshot: formatSnapshot(dir),
    archive: archiveName,
    target,
    bytes: stats.bytes,
    ...(stats.entries === undefined ? {} : { entries: stats.entries }),
    seconds: stats.seconds,
    warnings: stats.warnings,
  };
  ctx.printer.result(result, renderRestoreSummary);
}

export function registerRestoreCommand(program: Command): void {
  const command = program
    .command('restore')
    .description('restore an archive of a snapshot to a directory, a file or standard output (-)')
    .argument('<snapshot>', 'snapshot <type>/<id>/<time>, or a group <type>/<id> for its newest')
    .argument('<archive-name>', 'archive: root.pxar, disk.img, vm.conf, index.json, ...')
    .argument('<target>', 'directory (pxar), file, or - for standard output (images, blobs)');
  addKeyfileOption(addNamespaceOption(command))
    .option('--pattern <pattern>', 'restore only matching paths (pxar; repeatable)', collect)
    .option('--allow-existing-dirs', 'restore into directories that exist already')
    .option('--overwrite', 'replace existing files, symlinks and hardlinks')
    .option('--overwrite-files', 'replace existing regular files')
    .option('--overwrite-symlinks', 'replace existing symlinks')
    .option('--overwrite-hardlinks', 'replace existing hardlinks')
    .option('--ignore-acls', 'do not restore POSIX ACLs')
    .option('--ignore-xattrs', 'do not restore extended attributes')
    .option('--ignore-fcaps', 'do not restore file capabilities')
    .addOption(outputFormatOption())
    .action(restoreCommand);
}

/** Whether `archiveName` names an index (whose chunks the workers decode); a bad name is not. */
function isChunkedArchive(archiveName: string): boolean {
  try {
    return archiveTypeOf(serverArchiveName(archiveName)) !== 'blob';
  } catch {
    return false; // restoreArchive reports the bad name
  }
}
