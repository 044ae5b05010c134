/**
 * `burrow-manager serve`: run the server (PBS's proxmox-backup-proxy) in the foreground until
 * SIGTERM or SIGINT. Logs are JSON lines on stderr (level: --log-level or BURROW_LOG_LEVEL);
 * stdout gets `listening on https://HOST:PORT` and the certificate fingerprint.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { createLogger } from '../../server/logger.js';
import { tuneServerHeap } from '../../server/heap-tuning.js';
import { DEFAULT_LISTEN, parseListenAddress, runServer } from '../../server/run-server.js';
import { BurrowError } from '../../lib/errors.js';
import { dirsOf, integerOption } from '../manager-context.js';

interface ServeOptions {
  listen?: string;
  cert?: string;
  key?: string;
  logLevel?: string;
  grace?: number;
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description(
      'run the HTTPS API server in the foreground (stops on SIGTERM/SIGINT, reloads the certificate on SIGHUP)',
    )
    .option(
      '--listen <address>',
      `address and port to listen on: host:port, [ipv6]:port or a port (default ${DEFAULT_LISTEN}, all addresses)`,
    )
    .option(
      '--cert <file>',
      'certificate file (PEM) instead of <config-dir>/proxy.pem; needs --key',
    )
    .option(
      '--key <file>',
      'private key file (PEM) instead of <config-dir>/proxy.key; needs --cert',
    )
    .option(
      '--log-level <level>',
      'fatal, error, warn, info, debug, trace or silent (default $BURROW_LOG_LEVEL or info)',
    )
    .option(
      '--grace <seconds>',
      'on shutdown, how long running requests and backup sessions may take to finish (default 60)',
      integerOption('--grace'),
    )
    .action(async (options: ServeOptions, command: Command) => {
      if ((options.cert === undefined) !== (options.key === undefined))
        throw new BurrowError(
          'INVALID_ARGUMENT',
          '--cert and --key go together: give both or neither',
        );
      // Fail on a bad address before anything is created.
      if (options.listen !== undefined) parseListenAddress(options.listen);
      const log = createLogger(options.logLevel === undefined ? {} : { level: options.logLevel });
      // This process is the daemon: its heap is collected less eagerly (heap-tuning.ts).
      tuneServerHeap();
      await runServer({
        dirs: dirsOf(command),
        log,
        ...(options.listen === undefined ? {} : { listen: options.listen }),
        ...(options.cert === undefined ? {} : { certPath: resolve(options.cert) }),
        ...(options.key === undefined ? {} : { keyPath: resolve(options.key) }),
        ...(options.grace === undefined ? {} : { graceMs: options.grace * 1000 }),
      });
    });
}
