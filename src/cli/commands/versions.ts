/** `burrow-manager versions`: what is running, as `proxmox-backup-manager versions` shows it. */
import type { Command } from 'commander';
import { createRequire } from 'node:module';
import { nativeAvailable, nativeUnavailableReason } from '../../lib/native-fs.js';
import { outputFormatOption, printerFor } from '../run.js';
import { BURROW_VERSION } from '../version.js';

interface VersionRow {
  package: string;
  version: string;
}

function zstdVersion(): string {
  // zstd-napi's binding exports the linked libzstd version as a string.
  const binding = createRequire(import.meta.url)('zstd-napi/binding') as {
    versionString?: () => string;
  };
  return binding.versionString?.() ?? 'unknown';
}

export function collectVersions(): VersionRow[] {
  return [
    { package: 'burrow', version: BURROW_VERSION },
    { package: 'node', version: process.versions.node },
    { package: 'openssl', version: process.versions.openssl },
    { package: 'zstd', version: zstdVersion() },
    // The native helper (native/*.c): file locks, xattrs and the fast chunker scan need it.
    {
      package: 'burrow-fs',
      version: nativeAvailable() ? 'loaded' : `not loaded: ${nativeUnavailableReason()}`,
    },
  ];
}

export function registerVersionsCommand(program: Command): void {
  program
    .command('versions')
    .description('show the versions of Burrow and the libraries it runs on')
    .addOption(outputFormatOption())
    .action((options: { outputFormat: string }) => {
      printerFor(options).result(collectVersions(), (rows) =>
        rows.map((r) => `${r.package}: ${r.version}`).join('\n'),
      );
    });
}
