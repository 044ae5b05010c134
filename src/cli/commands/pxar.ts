/**
 * `burrow pxar create|extract|list`: PBS's `pxar` tool, so archives can be made, listed and
 * restored without a datastore. Options and their names follow `pxar` (docs/cli.md).
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { BurrowError } from '../../lib/errors.js';
import { NewFileWriter } from '../../lib/new-file-writer.js';
import {
  DEFAULT_ENTRY_LIMIT,
  createArchive,
  excludePrelude,
  readRootMetadata,
  type ArchiveStats,
} from '../../pxar/archiver.js';
import { PxarDecoder } from '../../pxar/decoder.js';
import { PxarEncoder } from '../../pxar/encoder.js';
import {
  displayArchivePath,
  extractArchive,
  type ExtractStats,
  type OverwriteKind,
} from '../../pxar/extractor.js';
import { S_IFMT, type Entry } from '../../pxar/format.js';
import { parsePattern, parsePatternFile, type MatchPattern } from '../../pxar/pattern.js';
import { openFileRandomAccess, type FileRandomAccess } from '../../pxar/random-access.js';
import { createActivityDisplay, formatDuration, formatRate } from '../activity-display.js';
import { formatEpoch, humanBytes, renderKeyValues } from '../output.js';
import { outputFormatOption, printerFor } from '../run.js';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

function parseCount(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `expected a non-negative integer, got ${JSON.stringify(value)}`,
    );
  return n;
}

interface FeatureOptions {
  xattrs: boolean;
  fcaps: boolean;
  acls: boolean;
  deviceNodes: boolean;
  fifos: boolean;
  sockets: boolean;
}

/** The `--no-xattrs` ... `--no-sockets` switches both create and extract have. */
function addFeatureOptions(command: Command): Command {
  return command
    .option('--no-xattrs', 'ignore extended attributes')
    .option('--no-fcaps', 'ignore file capabilities')
    .option('--no-acls', 'ignore POSIX access control lists')
    .option('--no-device-nodes', 'ignore block and character devices')
    .option('--no-fifos', 'ignore FIFOs')
    .option('--no-sockets', 'ignore sockets');
}

function featureFlags(options: FeatureOptions): {
  noXattrs: boolean;
  noFcaps: boolean;
  noAcls: boolean;
  noDevices: boolean;
  noFifos: boolean;
  noSockets: boolean;
} {
  return {
    noXattrs: !options.xattrs,
    noFcaps: !options.fcaps,
    noAcls: !options.acls,
    noDevices: !options.deviceNodes,
    noFifos: !options.fifos,
    noSockets: !options.sockets,
  };
}

// ---------------------------------------------------------------------------------------------
// create

interface CreateOptions extends FeatureOptions {
  outputFormat: string;
  payloadOutput?: string;
  exclude?: string[];
  allFileSystems?: boolean;
  entriesMax: number;
}

export interface CreateSummary {
  archive: string;
  payloadOutput?: string;
  formatVersion: 1 | 2;
  entries: ArchiveStats['entries'];
  excluded: number;
  mountPointsSkipped: number;
  warnings: number;
  bytesRead: number;
  archiveBytes: number;
  payloadBytes?: number;
  seconds: number;
}

async function createCommand(
  archive: string,
  source: string,
  options: CreateOptions,
): Promise<void> {
  const printer = printerFor(options);
  const excludes: MatchPattern[] = (options.exclude ?? []).map((p) => parsePattern(p, 'exclude'));
  const display = createActivityDisplay();
  const warn = (message: string): void => display.line(`warning: ${message}`);
  const started = performance.now();

  const output = await NewFileWriter.create(archive);
  let payload: NewFileWriter | undefined;
  try {
    if (options.payloadOutput !== undefined)
      payload = await NewFileWriter.create(options.payloadOutput);
    const rootMetadata = await readRootMetadata(source, (message) => warn(message));
    const encoder = await PxarEncoder.begin(rootMetadata, {
      output,
      ...(payload !== undefined
        ? { payloadOutput: payload, prelude: excludePrelude(excludes) }
        : {}),
    });
    const stats = await createArchive(source, encoder, {
      excludePatterns: excludes,
      allFileSystems: options.allFileSystems === true,
      entryLimit: options.entriesMax,
      ...featureFlags(options),
      onWarning: (message) => warn(message),
      onProgress: (p) => display.update({ bytes: p.bytes, entries: p.entries, path: p.path }),
    });
    await encoder.finish();
    await output.commit();
    if (payload !== undefined) await payload.commit();
    display.stop();
    const summary: CreateSummary = {
      archive,
      ...(options.payloadOutput !== undefined ? { payloadOutput: options.payloadOutput } : {}),
      formatVersion: encoder.formatVersion,
      entries: stats.entries,
      excluded: stats.excluded,
      mountPointsSkipped: stats.mountPointsSkipped,
      warnings: stats.warnings,
      bytesRead: stats.bytes,
      archiveBytes: output.bytesWritten,
      ...(payload !== undefined ? { payloadBytes: payload.bytesWritten } : {}),
      seconds: (performance.now() - started) / 1000,
    };
    printer.result(summary, renderCreateSummary);
  } catch (error) {
    display.stop();
    await output.abort();
    await payload?.abort();
    throw error;
  }
}

const PLURALS: Record<string, string> = {
  directory: 'directories',
  file: 'files',
  symlink: 'symlinks',
  hardlink: 'hardlinks',
  'block-device': 'block devices',
  'char-device': 'char devices',
  fifo: 'fifos',
  socket: 'sockets',
};

/** "1 file", "2 files". */
function counted(n: number, singular: string): string {
  return `${n} ${n === 1 ? singular : (PLURALS[singular] ?? `${singular}s`)}`;
}

function countEntries(entries: Record<string, number>): number {
  return Object.values(entries).reduce((a, b) => a + b, 0);
}

export function renderCreateSummary(s: CreateSummary): string {
  const kinds = Object.entries(s.entries)
    .filter(([, n]) => n > 0)
    .map(([kind, n]) => counted(n, kind))
    .join(', ');
  const rows: Array<[string, string | number]> = [
    ['archive', `${s.archive} (${humanBytes(s.archiveBytes)}, pxar v${s.formatVersion})`],
  ];
  if (s.payloadOutput !== undefined)
    rows.push(['payload', `${s.payloadOutput} (${humanBytes(s.payloadBytes ?? 0)})`]);
  rows.push(['entries', `${countEntries(s.entries)}${kinds ? ` (${kinds})` : ''}`]);
  if (s.excluded > 0) rows.push(['excluded', s.excluded]);
  if (s.mountPointsSkipped > 0) rows.push(['mount points not descended', s.mountPointsSkipped]);
  rows.push([
    'read',
    `${humanBytes(s.bytesRead)} in ${formatDuration(s.seconds)} (${formatRate(s.bytesRead / Math.max(s.seconds, 1e-3))})`,
  ]);
  if (s.warnings > 0) rows.push(['warnings', s.warnings]);
  return renderKeyValues(rows);
}

// ---------------------------------------------------------------------------------------------
// extract and list share how an archive is opened

interface OpenedArchive {
  decoder: PxarDecoder;
  /** Archive bytes consumed so far, for progress. */
  consumed: () => number;
  totalBytes?: number;
  close(): Promise<void>;
}

async function openArchive(
  archive: string,
  payloadInput: string | undefined,
): Promise<OpenedArchive> {
  let payload: FileRandomAccess | undefined;
  if (payloadInput !== undefined) payload = await openFileRandomAccess(payloadInput);
  let consumed = 0;
  const counting = async function* (source: AsyncIterable<Buffer>): AsyncIterable<Uint8Array> {
    for await (const piece of source) {
      consumed += piece.length;
      yield piece;
    }
  };
  const fromStdin = archive === '-';
  const totalBytes = fromStdin ? undefined : (await stat(archive)).size;
  const stream = fromStdin
    ? process.stdin
    : createReadStream(archive, { highWaterMark: 1024 * 1024 });
  const decoder = new PxarDecoder(counting(stream as AsyncIterable<Buffer>), {
    name: fromStdin ? 'standard input' : archive,
    ...(payload !== undefined ? { payload: payload } : {}),
  });
  return {
    decoder,
    consumed: () => consumed,
    ...(totalBytes !== undefined ? { totalBytes } : {}),
    async close() {
      if (!fromStdin) (stream as ReturnType<typeof createReadStream>).destroy();
      await payload?.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// extract

interface ExtractCommandOptions extends FeatureOptions {
  outputFormat: string;
  payloadInput?: string;
  pattern?: string[];
  filesFrom?: string;
  allowExistingDirs?: boolean;
  overwrite?: boolean;
  overwriteFiles?: boolean;
  overwriteSymlinks?: boolean;
  overwriteHardlinks?: boolean;
  strict?: boolean;
}

export interface ExtractSummary extends ExtractStats {
  archive: string;
  target: string;
  seconds: number;
}

async function extractCommand(
  archive: string,
  target: string | undefined,
  options: ExtractCommandOptions,
): Promise<void> {
  const printer = printerFor(options);
  const patterns: MatchPattern[] = [];
  if (options.filesFrom !== undefined)
    patterns.push(
      ...parsePatternFile(await readFile(options.filesFrom), options.filesFrom, {
        defaultType: 'include',
      }),
    );
  for (const p of options.pattern ?? []) patterns.push(parsePattern(p, 'include'));
  const overwrite: OverwriteKind[] = [];
  if (options.overwriteFiles === true) overwrite.push('files');
  if (options.overwriteSymlinks === true) overwrite.push('symlinks');
  if (options.overwriteHardlinks === true) overwrite.push('hardlinks');

  const destination = target ?? '.';
  const opened = await openArchive(archive, options.payloadInput);
  const display = createActivityDisplay();
  const started = performance.now();
  try {
    const stats = await extractArchive(opened.decoder, destination, {
      ...(patterns.length > 0 ? { patterns } : {}),
      overwrite: options.overwrite === true ? 'all' : overwrite,
      allowExistingDirs: options.allowExistingDirs === true,
      strict: options.strict === true,
      ...featureFlags(options),
      onWarning: (warning) => display.line(`warning: ${warning.message}`),
      onProgress: (p) =>
        display.update({
          bytes: opened.consumed(),
          ...(opened.totalBytes !== undefined ? { totalBytes: opened.totalBytes } : {}),
          entries: p.entries,
          path: p.path,
        }),
    });
    display.stop();
    const summary: ExtractSummary = {
      archive,
      target: destination,
      ...stats,
      seconds: (performance.now() - started) / 1000,
    };
    printer.result(summary, renderExtractSummary);
  } finally {
    display.stop();
    await opened.close();
  }
}

export function renderExtractSummary(s: ExtractSummary): string {
  const kinds: Array<[string, number]> = [
    ['directory', s.directories],
    ['file', s.files],
    ['symlink', s.symlinks],
    ['hardlink', s.hardlinks],
    ['device', s.devices],
    ['fifo', s.fifos],
    ['socket', s.sockets],
  ];
  const listed = kinds
    .filter(([, n]) => n > 0)
    .map(([k, n]) => counted(n, k))
    .join(', ');
  const rows: Array<[string, string | number]> = [
    ['restored to', s.target],
    ['entries', `${s.entries}${listed ? ` (${listed})` : ''}`],
    [
      'written',
      `${humanBytes(s.bytes)} in ${formatDuration(s.seconds)} (${formatRate(s.bytes / Math.max(s.seconds, 1e-3))})`,
    ],
  ];
  if (s.skipped > 0) rows.push(['skipped', s.skipped]);
  if (s.ownershipSkipped > 0) rows.push(['owner not restored (not root)', s.ownershipSkipped]);
  if (s.warnings > 0) rows.push(['warnings', s.warnings + s.suppressedWarnings]);
  return renderKeyValues(rows);
}

// ---------------------------------------------------------------------------------------------
// list

interface ListOptions {
  outputFormat: string;
  payloadInput?: string;
  verbose?: boolean;
}

export interface ListedEntry {
  path: string;
  type: string;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: string;
  target?: string;
  major?: number;
  minor?: number;
}

const TYPE_CHAR: Record<string, string> = {
  directory: 'd',
  file: '-',
  symlink: 'l',
  'block-device': 'b',
  'char-device': 'c',
  fifo: 'p',
  socket: 's',
  hardlink: 'h',
};

/** `rwxr-x---` with setuid/setgid/sticky shown the way ls does. */
export function modeString(mode: number): string {
  const bits = 'rwxrwxrwx'.split('').map((c, i) => ((mode >> (8 - i)) & 1 ? c : '-'));
  const special = (index: number, flag: number, set: string, unset: string): void => {
    if ((mode & flag) !== 0) bits[index] = bits[index] === '-' ? unset : set;
  };
  special(2, 0o4000, 's', 'S');
  special(5, 0o2000, 's', 'S');
  special(8, 0o1000, 't', 'T');
  return bits.join('');
}

function listedEntry(entry: Entry): ListedEntry {
  const path = `/${displayArchivePath(entry.path).replace(/^\/$/, '')}`;
  const body = entry.body;
  const out: ListedEntry = { path, type: body.kind };
  const meta = entry.metadata;
  if (meta !== undefined) {
    out.mode = meta.stat.mode & ~S_IFMT;
    out.uid = meta.stat.uid;
    out.gid = meta.stat.gid;
    const ms = meta.stat.mtime;
    out.mtime = `${formatEpoch(ms.secs).replace(/Z$/, '')}.${String(ms.nanos).padStart(9, '0')}Z`;
  }
  if (body.kind === 'file') out.size = body.size;
  if (body.kind === 'symlink' || body.kind === 'hardlink')
    out.target = displayArchivePath(body.target);
  if (body.kind === 'block-device' || body.kind === 'char-device') {
    out.major = body.major;
    out.minor = body.minor;
  }
  return out;
}

export function renderListedEntry(e: ListedEntry, verbose: boolean): string {
  if (!verbose) return e.path;
  const type = TYPE_CHAR[e.type] ?? '?';
  const mode = e.mode !== undefined ? modeString(e.mode) : '---------';
  const owner = e.uid !== undefined ? `${e.uid}/${e.gid ?? 0}` : '-';
  const size =
    e.major !== undefined
      ? `${e.major},${e.minor ?? 0}`
      : e.size !== undefined
        ? String(e.size)
        : '0';
  const when = e.mtime !== undefined ? e.mtime.replace('T', ' ').replace(/\.\d+Z$/, '') : '-';
  const suffix =
    e.type === 'symlink'
      ? ` -> ${e.target ?? ''}`
      : e.type === 'hardlink'
        ? ` link to /${e.target ?? ''}`
        : '';
  return `${type}${mode} ${owner.padStart(11)} ${size.padStart(12)} ${when} ${e.path}${suffix}`;
}

async function listCommand(archive: string, options: ListOptions): Promise<void> {
  const printer = printerFor(options);
  const opened = await openArchive(archive, options.payloadInput);
  const verbose = options.verbose === true;
  try {
    if (printer.format === 'text') {
      // Stream: an archive may list millions of entries.
      for (let event = await opened.decoder.next(); event; event = await opened.decoder.next())
        if (event.type === 'entry')
          process.stdout.write(`${renderListedEntry(listedEntry(event.entry), verbose)}\n`);
      return;
    }
    const entries: ListedEntry[] = [];
    for (let event = await opened.decoder.next(); event; event = await opened.decoder.next())
      if (event.type === 'entry') entries.push(listedEntry(event.entry));
    printer.result(entries, () => '');
  } finally {
    await opened.close();
  }
}

// ---------------------------------------------------------------------------------------------

export function registerPxarCommands(program: Command): void {
  const pxar = program
    .command('pxar')
    .description('create, extract and list pxar archives without a datastore (like PBS `pxar`)');

  addFeatureOptions(
    pxar
      .command('create')
      .description('archive a directory tree into a new pxar file (never overwrites one)')
      .argument('<archive>', 'the archive to create (.pxar; .mpxar with --payload-output)')
      .argument('<source>', 'the directory to archive')
      .option(
        '--payload-output <file>',
        'write a split (v2) archive: file contents go to this .ppxar',
      )
      .option('--exclude <pattern>', 'leave out paths matching this pattern (repeatable)', collect)
      .option('--all-file-systems', 'descend into other mounted file systems')
      .addOption(
        new Option('--entries-max <n>', 'most directory entries held open at once')
          .argParser(parseCount)
          .default(DEFAULT_ENTRY_LIMIT),
      )
      .addOption(outputFormatOption()),
  ).action((archive: string, source: string, options: CreateOptions) =>
    createCommand(archive, source, options),
  );

  addFeatureOptions(
    pxar
      .command('extract')
      .description('restore an archive (or `-` for standard input) into a directory')
      .argument('<archive>', 'the archive to read, or - for standard input')
      .argument('[target]', 'the directory to restore into (default: the current directory)')
      .option('--payload-input <file>', 'the .ppxar payload of a split archive')
      .option(
        '--pattern <pattern>',
        'restore only paths matching this pattern (repeatable)',
        collect,
      )
      .option('--files-from <file>', 'read patterns from this file, one per line')
      .option('--allow-existing-dirs', 'restore into directories that exist already')
      .option('--overwrite', 'replace existing files, symlinks and hardlinks')
      .option('--overwrite-files', 'replace existing files')
      .option('--overwrite-symlinks', 'replace existing entries with the archive symlinks')
      .option('--overwrite-hardlinks', 'replace existing entries with the archive hardlinks')
      .option('--strict', 'stop at the first problem instead of warning and going on')
      .addOption(outputFormatOption()),
  ).action((archive: string, target: string | undefined, options: ExtractCommandOptions) =>
    extractCommand(archive, target, options),
  );

  pxar
    .command('list')
    .description('list the entries of an archive')
    .argument('<archive>', 'the archive to read, or - for standard input')
    .option('--payload-input <file>', 'the .ppxar payload of a split archive (not needed to list)')
    .option('-v, --verbose', 'show type, mode, owner, size and time like ls -l')
    .addOption(outputFormatOption())
    .action((archive: string, options: ListOptions) => listCommand(archive, options));
}
