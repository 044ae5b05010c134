/**
 * `burrow catalog dump <snapshot>` and `burrow catalog find <snapshot> <pattern>`: the file list
 * of a snapshot's pxar archives without restoring them, from its catalog (or, for split
 * archives, the metadata archive), as proxmox-backup-client's catalog dump and the catalog
 * shell's find.
 */
import type { Command } from 'commander';
import { readSnapshotManifest, snapshotCatalog } from '../../client/restore.js';
import {
  addKeyfileOption,
  addNamespaceOption,
  clientContext,
  readerCrypt,
  resolveSnapshot,
} from '../client-context.js';
import { outputFormatOption } from '../run.js';

type CatalogCliOptions = { outputFormat: string; ns?: string; keyfile?: string };

/**
 * Print the lines as they come for text output (a catalog can be long); JSON output is an array
 * and has to be collected first.
 */
async function emitLines(
  lines: AsyncIterable<string>,
  format: string,
  write: (text: string) => void,
): Promise<number> {
  let count = 0;
  if (format === 'text') {
    for await (const line of lines) {
      write(`${line}\n`);
      count++;
    }
    return count;
  }
  const all: string[] = [];
  for await (const line of lines) all.push(line);
  write(`${JSON.stringify(all, undefined, format === 'json-pretty' ? 2 : undefined)}\n`);
  return all.length;
}

/** Write to stdout, waiting when the pipe is full so a big catalog does not pile up in memory. */
function stdoutWriter(): { write: (text: string) => void; drained: () => Promise<void> } {
  let pending: Promise<void> = Promise.resolve();
  return {
    write(text) {
      if (!process.stdout.write(text)) {
        pending = new Promise((resolve) => process.stdout.once('drain', () => resolve()));
      }
    },
    drained: () => pending,
  };
}

async function withCatalog(
  snapshotText: string,
  options: CatalogCliOptions,
  command: Command,
  use: (catalog: Awaited<ReturnType<typeof snapshotCatalog>>) => AsyncIterable<string>,
): Promise<void> {
  const ctx = clientContext(command, options);
  const repo = await ctx.repository();
  const dir = await resolveSnapshot(repo, snapshotText, options.ns);
  const crypt = await readerCrypt(options);
  const reader = await repo.openReader(dir);
  try {
    const manifest = await readSnapshotManifest(reader, crypt);
    const catalog = await snapshotCatalog(reader, manifest, crypt);
    const out = stdoutWriter();
    const lines = async function* (): AsyncIterable<string> {
      for await (const line of use(catalog)) {
        yield line;
        await out.drained();
      }
    };
    await emitLines(lines(), ctx.printer.format, out.write);
  } finally {
    await reader.close();
  }
}

export function registerCatalogCommands(program: Command): void {
  const catalog = program
    .command('catalog')
    .description('list the files of a snapshot without restoring it');

  addKeyfileOption(
    addNamespaceOption(
      catalog
        .command('dump')
        .description('print every entry of the snapshot: type, path, and for files size and mtime')
        .argument('<snapshot>', 'snapshot <type>/<id>/<time>, or a group for its newest'),
    ),
  )
    .addOption(outputFormatOption())
    .action(async (text: string, options: CatalogCliOptions, command: Command) =>
      withCatalog(text, options, command, (c) => c.dump()),
    );

  addKeyfileOption(
    addNamespaceOption(
      catalog
        .command('find')
        .description('print the entries whose path matches a pattern (as in --exclude/--pattern)')
        .argument('<snapshot>', 'snapshot <type>/<id>/<time>, or a group for its newest')
        .argument('<pattern>', 'match pattern, e.g. "*.conf" or "/etc/**"'),
    ),
  )
    .addOption(outputFormatOption())
    .action(async (text: string, pattern: string, options: CatalogCliOptions, command: Command) =>
      withCatalog(text, options, command, (c) => c.find(pattern)),
    );
}
