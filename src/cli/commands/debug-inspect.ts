/** `burrow debug inspect file|chunk`: mirrors `proxmox-backup-debug inspect`. */
import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { loadCryptConfig } from '../../client/key-file.js';
import type { CryptConfig } from '../../crypto/crypt-config.js';
import {
  damageOf,
  inspectChunk,
  inspectFile,
  type ChunkReport,
  type FileReport,
} from '../../datastore/inspect.js';
import { BurrowError } from '../../lib/errors.js';
import { humanBytes, renderKeyValues } from '../output.js';
import { readPassphrase } from '../passphrase.js';
import { outputFormatOption, printerFor } from '../run.js';

interface InspectOptions {
  outputFormat: string;
  keyfile?: string;
  decode?: string;
}

const BLOB_KIND_LABEL = {
  plain: 'uncompressed, unencrypted',
  zstd: 'zstd compressed, unencrypted',
  encrypted: 'uncompressed, encrypted',
  'zstd-encrypted': 'zstd compressed, encrypted',
} as const;

const check = (ok: boolean): string => (ok ? 'ok' : 'MISMATCH');

export function renderReport(report: FileReport | ChunkReport): string {
  const rows: Array<[string, string | number]> = [['file', report.path]];
  if (report.kind === 'blob') {
    rows.push(['type', `blob (${BLOB_KIND_LABEL[report.blobKind]})`]);
    rows.push(['encoded size', `${report.encodedSize} (${humanBytes(report.encodedSize)})`]);
    rows.push([
      'crc',
      `${report.crc.stored} (${check(report.crc.ok)}${report.crc.ok ? '' : `, computed ${report.crc.computed}`})`,
    ]);
    if (report.decodedSize !== undefined)
      rows.push(['decoded size', `${report.decodedSize} (${humanBytes(report.decodedSize)})`]);
    if (report.decodeError) rows.push(['decoded', `not decoded: ${report.decodeError.message}`]);
    const digest = (report as ChunkReport).digest;
    if (digest)
      rows.push([
        'digest',
        `${digest.computed} (${digest.ok ? 'matches name' : `MISMATCH, name says ${digest.stored}`})`,
      ]);
  } else {
    rows.push([
      'type',
      report.kind === 'fixed-index' ? 'fixed index (.fidx)' : 'dynamic index (.didx)',
    ]);
    rows.push(['uuid', report.uuid]);
    rows.push(['ctime', `${report.ctimeText} (${report.ctime})`]);
    rows.push(['size', `${report.size} (${humanBytes(report.size)})`]);
    if (report.chunkSize !== undefined)
      rows.push(['chunk size', `${report.chunkSize} (${humanBytes(report.chunkSize)})`]);
    rows.push(['chunks', report.chunkCount]);
    rows.push([
      'index csum',
      `${report.csum.stored} (${check(report.csum.ok)}${report.csum.ok ? '' : `, computed ${report.csum.computed}`})`,
    ]);
  }
  return renderKeyValues(rows);
}

async function cryptFor(options: InspectOptions): Promise<CryptConfig | undefined> {
  if (options.keyfile === undefined) return undefined;
  return loadCryptConfig(options.keyfile, () => readPassphrase('Encryption Key Password'));
}

async function writeDecoded(
  target: string,
  report: FileReport | ChunkReport,
  decoded: Uint8Array | undefined,
): Promise<void> {
  if (report.kind !== 'blob') {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      '--decode applies to blobs and chunks; an index holds only digests',
    );
  }
  if (decoded === undefined) {
    throw new BurrowError(
      report.decodeError?.code === 'BLOB_KEY_REQUIRED' ? 'BLOB_KEY_REQUIRED' : 'BLOB_CRC_MISMATCH',
      `${report.path}: cannot decode: ${report.decodeError?.message ?? 'CRC mismatch'}${report.decodeError?.code === 'BLOB_KEY_REQUIRED' ? ' (pass --keyfile)' : ''}`,
    );
  }
  if (target === '-') {
    await new Promise<void>((resolve, reject) =>
      process.stdout.write(decoded, (e) => (e ? reject(e) : resolve())),
    );
  } else {
    await writeFile(target, decoded);
  }
}

async function runInspect(
  kind: 'file' | 'chunk',
  path: string,
  options: InspectOptions,
): Promise<void> {
  const printer = printerFor(options);
  const crypt = await cryptFor(options);
  const { report, decoded } =
    kind === 'file' ? await inspectFile(path, { crypt }) : await inspectChunk(path, { crypt });
  // Decoded bytes on stdout and a report on stdout would mix: with `--decode -` the report goes to stderr.
  if (options.decode === '-') process.stderr.write(`${renderReport(report)}\n`);
  else printer.result(report, renderReport);
  const damage = damageOf(report);
  if (damage) throw damage;
  if (options.decode !== undefined) await writeDecoded(options.decode, report, decoded);
}

export function registerDebugCommands(program: Command): void {
  const debug = program
    .command('debug')
    .description('inspect datastore files (like proxmox-backup-debug)');
  const inspect = debug
    .command('inspect')
    .description('show what a datastore file holds and whether it is intact');
  inspect
    .command('file')
    .description('inspect a .blob, .fidx or .didx file')
    .argument('<path>', 'the file')
    .option('--decode <out>', 'write the decoded blob content to <out> ("-" for standard output)')
    .option('--keyfile <file>', 'encryption key file, to decode encrypted blobs')
    .addOption(outputFormatOption())
    .action((path: string, options: InspectOptions) => runInspect('file', path, options));
  inspect
    .command('chunk')
    .description('inspect a chunk file and check its digest against its name')
    .argument('<path>', 'the chunk file (.chunks/xxxx/<digest>)')
    .option('--decode <out>', 'write the decoded chunk to <out> ("-" for standard output)')
    .option('--keyfile <file>', 'encryption key file, to decode and check encrypted chunks')
    .addOption(outputFormatOption())
    .action((path: string, options: InspectOptions) => runInspect('chunk', path, options));
}
