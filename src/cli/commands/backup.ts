/**
 * `burrow backup <archive-spec>...`: proxmox-backup-client's backup into a local repository. The
 * work is runBackup (src/client/backup.ts) over the repository's BackupWriter; this file turns
 * options into its arguments, shows progress, prints the summary, and makes sure an interrupted
 * backup leaves no snapshot behind: the writer is always closed (which removes an unfinished
 * snapshot), and SIGINT/SIGTERM abort the run and end with 128 + the signal number.
 */
import { Option, type Command } from 'commander';
import { hostname } from 'node:os';
import {
  parseArchiveSpec,
  runBackup,
  type ArchiveSummary,
  type BackupOptions,
  type BackupSummary,
} from '../../client/backup.js';
import type { BackupWriter } from '../../client/backup-writer.js';
import { ChunkWorkerPool } from '../../client/chunk-pipeline.js';
import { formatFingerprint } from '../../crypto/crypt-config.js';
import { CHUNK_ZSTD_LEVEL, MAX_ZSTD_LEVEL, MIN_ZSTD_LEVEL } from '../../format/magic.js';
import { BurrowError } from '../../lib/errors.js';
import { BACKUP_TYPES, backupGroup, formatSnapshot, type BackupDir } from '../../types/backup.js';
import { CRYPT_MODES } from '../../types/crypt-mode.js';
import { createActivityDisplay, formatDuration, formatRate } from '../activity-display.js';
import {
  InterruptedError,
  addNamespaceOption,
  clientContext,
  collect,
  cryptParameters,
  namespaceOf,
  watchInterrupts,
} from '../client-context.js';
import { integerOption } from '../manager-context.js';
import { formatEpoch, humanBytes, renderKeyValues } from '../output.js';
import { outputFormatOption } from '../run.js';

interface BackupCliOptions {
  outputFormat: string;
  ns?: string;
  backupType: string;
  backupId?: string;
  backupTime?: number;
  keyfile?: string;
  cryptMode?: string;
  masterPubkeyFile?: string;
  exclude?: string[];
  includeDev?: string[];
  allFileSystems?: boolean;
  entriesMax?: number;
  chunkSize?: number;
  compressionLevel?: number;
  changeDetectionMode?: 'legacy' | 'data' | 'metadata';
  dryRun?: boolean;
}

/** `--chunk-size` in KiB: a power of two from 64 to 4096 (PBS's range for the average chunk). */
export function parseChunkSizeKiB(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 64 || n > 4096 || (n & (n - 1)) !== 0) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `--chunk-size must be a power of two from 64 to 4096 (KiB), got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

/** The default backup ID: the host name up to its first dot, as PBS's client uses the node name. */
export function defaultBackupId(): string {
  return hostname().split('.')[0] ?? 'localhost';
}

function ignoreBrokenPipe(error: NodeJS.ErrnoException): void {
  if (error.code !== 'EPIPE') throw error;
}

export interface BackupResult extends BackupSummary {
  repository: string;
  'backup-type': string;
  'backup-id': string;
  'backup-time': number;
  'crypt-mode': string;
  'key-fingerprint'?: string;
}

function archiveLine(a: ArchiveSummary): string {
  return `${humanBytes(a.size)}, ${a.chunks} chunks (${a.newChunks} new, ${a.reusedChunks} reused), ${humanBytes(a.storedBytes)} stored`;
}

export function renderBackupSummary(r: BackupResult): string {
  const rows: Array<[string, string | number]> = [
    ['snapshot', r.dryRun ? `${r.snapshot} (dry run: nothing was stored)` : r.snapshot],
  ];
  for (const a of r.archives) rows.push([a.name, archiveLine(a)]);
  const seconds = Math.max(r.seconds, 1e-3);
  rows.push(['read', `${humanBytes(r.bytesRead)} (${formatRate(r.bytesRead / seconds)})`]);
  rows.push(['stored', `${humanBytes(r.bytesStored)} new after deduplication and compression`]);
  rows.push(['chunks', `${r.chunksNew} new, ${r.chunksReused} reused`]);
  rows.push(['duration', formatDuration(r.seconds)]);
  if (r.warnings > 0) rows.push(['warnings', r.warnings]);
  for (const note of r.notes) rows.push(['note', note]);
  return renderKeyValues(rows);
}

async function backupCommand(
  specs: string[],
  options: BackupCliOptions,
  command: Command,
): Promise<void> {
  const ctx = clientContext(command, options);
  const archives = specs.map(parseArchiveSpec);
  const seen = new Set<string>();
  for (const a of archives) {
    if (seen.has(a.name))
      throw new BurrowError('INVALID_ARGUMENT', `archive name ${a.name} is given twice`);
    seen.add(a.name);
  }
  const ns = namespaceOf(options);
  const group = backupGroup(ns, options.backupType, options.backupId ?? defaultBackupId());
  const backupTime = options.backupTime ?? Math.floor(Date.now() / 1000);
  const crypto = await cryptParameters(options);
  const repo = await ctx.repository();
  const dryRun = options.dryRun === true;

  const snapshotName = formatSnapshot({ group, time: backupTime } satisfies BackupDir);
  // A reader that goes away (`| head`) must not kill the backup half-way: the output is only a
  // report, so the backup goes on and finishes (or fails) on its own terms.
  process.stdout.on('error', ignoreBrokenPipe);
  ctx.printer.info(`Starting backup: ${snapshotName}${dryRun ? ' (dry run)' : ''}`);
  ctx.printer.info(`Client name: ${hostname()}`);
  ctx.printer.info(`Starting backup protocol: ${new Date().toString()}`);
  for (const note of crypto.notes) ctx.printer.info(note);

  const display = createActivityDisplay();
  const warn = (message: string): void => display.line(`warning: ${message}`);
  const interrupts = watchInterrupts((name) =>
    display.line(`${name} received: aborting the backup (again to quit at once)`),
  );
  const pool = ChunkWorkerPool.create();
  let writer: BackupWriter | undefined;
  let summary: BackupSummary | undefined;
  let failure: Error | undefined;
  let closeError: Error | undefined;
  const asError = (error: unknown): Error =>
    error instanceof Error ? error : new BurrowError('INTERNAL', String(error));
  try {
    writer = await repo.openWriter({ ns, group, backupTime });
    if (interrupts.signal.aborted) throw interrupts.signal.reason;
    const run: BackupOptions = {
      writer,
      archives,
      cryptMode: crypto.mode,
      ...(crypto.crypt === undefined ? {} : { crypt: crypto.crypt }),
      ...(crypto.masterPublicKey === undefined ? {} : { masterPublicKey: crypto.masterPublicKey }),
      ...(crypto.keyCreated === undefined ? {} : { keyCreated: crypto.keyCreated }),
      changeDetectionMode: options.changeDetectionMode ?? 'legacy',
      openPreviousReader: (previous) => repo.openReader(previous),
      excludePatterns: options.exclude ?? [],
      includeDevices: options.includeDev ?? [],
      allFileSystems: options.allFileSystems === true,
      ...(options.entriesMax === undefined ? {} : { entriesMax: options.entriesMax }),
      ...(options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize * 1024 }),
      ...(options.compressionLevel === undefined
        ? {}
        : { compressionLevel: options.compressionLevel }),
      dryRun,
      pool,
      signal: interrupts.signal,
      onWarning: warn,
      onProgress: (p) =>
        display.update({
          bytes: p.bytesRead,
          ...(p.totalBytes === undefined ? {} : { totalBytes: p.totalBytes }),
          entries: p.entries ?? 0,
          ...(p.path === undefined ? {} : { path: p.path }),
        }),
    };
    summary = await runBackup(run);
  } catch (error) {
    failure = asError(error);
  } finally {
    display.stop();
    // Without a successful finish, close removes the new snapshot directory.
    try {
      await writer?.close();
    } catch (error) {
      closeError = asError(error);
    }
    await pool.close();
    interrupts.dispose();
  }
  const signalName = interrupts.received();
  if (signalName !== undefined && summary === undefined) {
    const left =
      closeError === undefined
        ? `the unfinished snapshot ${snapshotName} was removed`
        : `the unfinished snapshot ${snapshotName} could not be removed (${closeError.message}); prune and garbage-collect remove it`;
    throw new InterruptedError(
      signalName,
      `backup interrupted by ${signalName}: ${left}; run the backup again`,
      failure,
    );
  }
  if (failure !== undefined) throw failure;
  if (closeError !== undefined) throw closeError;
  if (summary === undefined) throw new BurrowError('INTERNAL', 'backup ended without a summary');
  const result: BackupResult = {
    ...summary,
    repository: repo.display,
    'backup-type': group.type,
    'backup-id': group.id,
    'backup-time': backupTime,
    'crypt-mode': crypto.mode,
    ...(crypto.crypt === undefined
      ? {}
      : { 'key-fingerprint': formatFingerprint(crypto.crypt.fingerprint) }),
  };
  ctx.printer.result(result, renderBackupSummary);
  ctx.printer.info(`End Time: ${formatEpoch(Math.floor(Date.now() / 1000))}`);
}

export function registerBackupCommand(program: Command): void {
  const command = program
    .command('backup')
    .description(
      'back up directories (.pxar), images (.img) and files (.conf/.log) as a new snapshot',
    )
    .argument(
      '<archive-spec...>',
      '<name>.pxar:<directory>, <name>.img:<file or block device>, <name>.conf:<file> or <name>.log:<file>',
    )
    .addOption(
      new Option('--backup-type <type>', 'backup type').choices(BACKUP_TYPES).default('host'),
    )
    .option('--backup-id <id>', 'backup ID (default: the host name)')
    .option(
      '--backup-time <epoch>',
      'backup time in seconds since 1970 (default: now)',
      integerOption('--backup-time', 1),
    );
  addNamespaceOption(command)
    .option('--keyfile <path>', 'encrypt or sign with this key file')
    .addOption(
      new Option('--crypt-mode <mode>', 'none, encrypt or sign-only (default: see docs)').choices(
        CRYPT_MODES,
      ),
    )
    .option(
      '--master-pubkey-file <path>',
      'also store the key encrypted with this RSA public key (rsa-encrypted.key.blob)',
    )
    .option('--exclude <pattern>', 'leave out paths matching the pattern (repeatable)', collect)
    .option(
      '--include-dev <path>',
      'also descend into the file system mounted at this path (repeatable)',
      collect,
    )
    .option('--all-file-systems', 'descend into all mounted file systems')
    .option(
      '--entries-max <n>',
      'most entries held in open directories at once',
      integerOption('--entries-max', 1),
    )
    .option(
      '--chunk-size <KiB>',
      'average chunk size of .pxar archives in KiB (64..4096, a power of two; default 512, PBS: 4096)',
      parseChunkSizeKiB,
    )
    .option(
      '--compression-level <n>',
      `zstd level of the stored chunks (${MIN_ZSTD_LEVEL}..${MAX_ZSTD_LEVEL}; default ${CHUNK_ZSTD_LEVEL}, PBS: 1)`,
      integerOption('--compression-level', MIN_ZSTD_LEVEL, MAX_ZSTD_LEVEL),
    )
    .addOption(
      new Option(
        '--change-detection-mode <mode>',
        'legacy (one .pxar), data (split .mpxar/.ppxar) or metadata (split, unchanged files reused)',
      ).choices(['legacy', 'data', 'metadata']),
    )
    .option('--dry-run', 'read, chunk and hash everything but store nothing')
    .addOption(outputFormatOption())
    .action(backupCommand);
}
