#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS BURROW_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node
/**
 * `burrow-manager`: the admin CLI, mirroring proxmox-backup-manager. Like `burrow`, the bin moves
 * NODE_EXTRA_CA_CERTS to BURROW_EXTRA_CA_CERTS, so that Node does not parse that file at every
 * start; only Burrow's HTTP client reads it, when it connects to a server
 * (client/remote/extra-ca.ts). The manager's own commands make no TLS client connections.
 */
import { Command } from 'commander';
import { registerAclCommands } from './commands/acl.js';
import { registerCertCommands } from './commands/cert.js';
import { registerDatastoreCommands } from './commands/datastore.js';
import { registerGarbageCollectionCommands } from './commands/garbage-collection.js';
import { registerNamespaceCommands } from './commands/namespace.js';
import { registerPruneCommand } from './commands/prune.js';
import { registerServeCommand } from './commands/serve.js';
import { registerSnapshotCommands } from './commands/snapshot.js';
import { registerTaskCommands } from './commands/task.js';
import { registerUserCommands } from './commands/user.js';
import { registerVerifyCommand } from './commands/verify.js';
import { registerVersionsCommand } from './commands/versions.js';
import { addDirectoryOptions } from './manager-context.js';
import { configureProgram, runProgram } from './run.js';
import { BURROW_VERSION } from './version.js';

export function buildManagerProgram(): Command {
  const program = addDirectoryOptions(
    configureProgram(new Command('burrow-manager'))
      .description('Burrow administration (compatible with proxmox-backup-manager)')
      .version(BURROW_VERSION),
  );
  registerDatastoreCommands(program);
  registerGarbageCollectionCommands(program);
  registerVerifyCommand(program);
  registerPruneCommand(program);
  registerNamespaceCommands(program);
  registerSnapshotCommands(program);
  registerTaskCommands(program);
  registerVersionsCommand(program);
  registerUserCommands(program);
  registerAclCommands(program);
  registerCertCommands(program);
  registerServeCommand(program);
  return program;
}

await runProgram(buildManagerProgram());
