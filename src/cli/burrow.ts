#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS BURROW_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node --v8-pool-size=1
/**
 * `burrow`: the client CLI, mirroring proxmox-backup-client (and proxmox-backup-debug under
 * `debug`). The bin runs Node with one V8 platform thread instead of four: V8's background
 * compiles and GC then take at most one core, leaving the other to this thread or the chunk
 * workers (backups 5-11 % faster on two cores; docs/design.md, "One V8 platform thread").
 * It also moves NODE_EXTRA_CA_CERTS to BURROW_EXTRA_CA_CERTS, which the HTTP client reads when
 * it connects: Node would otherwise parse that file and build its root store at every start,
 * 60 ms per command on a machine whose variable names the system's bundle
 * (client/remote/extra-ca.ts).
 */
import { Command } from 'commander';
import { registerClientOptions } from './client-context.js';
import { registerBackupCommand } from './commands/backup.js';
import { registerBenchmarkCommand } from './commands/benchmark.js';
import { registerCatalogCommands } from './commands/catalog.js';
import { registerClientPruneCommand } from './commands/client-prune.js';
import { registerDebugCommands } from './commands/debug-inspect.js';
import { registerGarbageCollectCommand } from './commands/garbage-collect.js';
import { registerKeyCommands } from './commands/key.js';
import { registerListCommand } from './commands/list.js';
import { registerPxarCommands } from './commands/pxar.js';
import { registerRestoreCommand } from './commands/restore.js';
import { registerClientSnapshotCommands } from './commands/snapshot-client.js';
import { registerStatusCommand } from './commands/status.js';
import { configureProgram, runProgram } from './run.js';
import { BURROW_VERSION } from './version.js';

export function buildBurrowProgram(): Command {
  const program = configureProgram(new Command('burrow'))
    .description('Burrow backup client (compatible with Proxmox Backup Server)')
    .version(BURROW_VERSION);
  registerClientOptions(program);
  registerBackupCommand(program);
  registerRestoreCommand(program);
  registerListCommand(program);
  registerClientSnapshotCommands(program);
  registerCatalogCommands(program);
  registerClientPruneCommand(program);
  registerGarbageCollectCommand(program);
  registerStatusCommand(program);
  registerKeyCommands(program);
  registerBenchmarkCommand(program);
  registerPxarCommands(program);
  registerDebugCommands(program);
  return program;
}

await runProgram(buildBurrowProgram());
