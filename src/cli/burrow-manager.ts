#!/usr/bin/env node
/** `burrow-manager`: the admin CLI, mirroring proxmox-backup-manager. */
import { Command } from 'commander';
import { registerVersionsCommand } from './commands/versions.js';
import { configureProgram, runProgram } from './run.js';
import { BURROW_VERSION } from './version.js';

export function buildManagerProgram(): Command {
  const program = configureProgram(new Command('burrow-manager'))
    .description('Burrow administration (compatible with proxmox-backup-manager)')
    .version(BURROW_VERSION);
  registerVersionsCommand(program);
  return program;
}

await runProgram(buildManagerProgram());
