#!/usr/bin/env node
/** `burrow`: the client CLI, mirroring proxmox-backup-client (and proxmox-backup-debug under `debug`). */
import { Command } from 'commander';
import { registerDebugCommands } from './commands/debug-inspect.js';
import { registerPxarCommands } from './commands/pxar.js';
import { configureProgram, runProgram } from './run.js';
import { BURROW_VERSION } from './version.js';

export function buildBurrowProgram(): Command {
  const program = configureProgram(new Command('burrow'))
    .description('Burrow backup client (compatible with Proxmox Backup Server)')
    .version(BURROW_VERSION);
  registerPxarCommands(program);
  registerDebugCommands(program);
  return program;
}

await runProgram(buildBurrowProgram());
