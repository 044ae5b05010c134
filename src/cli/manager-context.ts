/**
 * What every `burrow-manager` command needs besides its own arguments: the three directories
 * (global `--config-dir`, `--run-dir`, `--log-dir` over the BURROW_* variables), the printer,
 * and the identity local administration acts as.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { resolveDirs, type BurrowDirs } from '../lib/dirs.js';
import { BurrowError } from '../lib/errors.js';
import { TaskManager } from '../tasks/index.js';
import {
  namespaceToString,
  parseGroupPath,
  parseNamespace,
  parseSnapshotPath,
  ROOT_NAMESPACE,
  type BackupDir,
  type BackupGroup,
  type BackupNamespace,
} from '../types/backup.js';
import type { Printer } from './output.js';
import { printerFor } from './run.js';

/**
 * The Authid of everything `burrow-manager` does on a local store. Whoever can run it can read
 * the configuration and the datastore directories, which is what `root@pam` stands for in PBS;
 * tasks are recorded under this name, and it may act for every owner.
 */
export const LOCAL_ADMIN_AUTHID = 'root@pam';

interface GlobalDirOptions {
  configDir?: string;
  runDir?: string;
  logDir?: string;
}

/** Register the global directory options on the program. */
export function addDirectoryOptions(program: Command): Command {
  return program
    .option(
      '--config-dir <dir>',
      'configuration directory (datastore.cfg); default $BURROW_CONFIG_DIR or /etc/burrow',
    )
    .option(
      '--run-dir <dir>',
      'runtime directory (lock files); default $BURROW_RUN_DIR or /run/burrow',
    )
    .option(
      '--log-dir <dir>',
      'log directory (task logs); default $BURROW_LOG_DIR or /var/log/burrow',
    );
}

/** The directories for a command: its global options, then the environment, then the defaults. */
export function dirsOf(command: Command): BurrowDirs {
  const options = command.optsWithGlobals<GlobalDirOptions>();
  // Absolute paths, so a lock or config path in a message or a task means the same from anywhere.
  const abs = (dir: string | undefined): string | undefined =>
    dir === undefined ? undefined : resolve(dir);
  const dirs = resolveDirs({
    ...(options.configDir === undefined ? {} : { configDir: abs(options.configDir) }),
    ...(options.runDir === undefined ? {} : { runDir: abs(options.runDir) }),
    ...(options.logDir === undefined ? {} : { logDir: abs(options.logDir) }),
  });
  return {
    configDir: resolve(dirs.configDir),
    runDir: resolve(dirs.runDir),
    logDir: resolve(dirs.logDir),
  };
}

export interface ManagerContext {
  readonly dirs: BurrowDirs;
  readonly printer: Printer;
  readonly tasks: TaskManager;
}

export function managerContext(
  command: Command,
  options: { outputFormat?: string },
): ManagerContext {
  const dirs = dirsOf(command);
  return { dirs, printer: printerFor(options), tasks: new TaskManager({ dirs }) };
}

/** `--ns a/b` (or absent: the root namespace). */
export function namespaceOption(text: string | undefined): BackupNamespace {
  return text === undefined || text === '' ? ROOT_NAMESPACE : parseNamespace(text);
}

function namespaceTwice(text: string, ns: BackupNamespace): BurrowError {
  return new BurrowError(
    'INVALID_ARGUMENT',
    `${JSON.stringify(text)} names its namespace already (${namespaceToString(ns)}); drop --ns or the ns/... prefix`,
  );
}

/** A group as `[ns/<a>/...]<type>/<id>`, optionally inside `--ns`. */
export function groupArgument(text: string, ns: string | undefined): BackupGroup {
  const group = parseGroupPath(text);
  if (ns === undefined || ns === '') return group;
  if (group.ns.components.length > 0) throw namespaceTwice(text, group.ns);
  return { ...group, ns: parseNamespace(ns) };
}

/** A snapshot as `[ns/<a>/...]<type>/<id>/<time>`, optionally inside `--ns`. */
export function snapshotArgument(text: string, ns: string | undefined): BackupDir {
  const dir = parseSnapshotPath(text);
  if (ns === undefined || ns === '') return dir;
  if (dir.group.ns.components.length > 0) throw namespaceTwice(text, dir.group.ns);
  return { group: { ...dir.group, ns: parseNamespace(ns) }, time: dir.time };
}

/** A non-negative integer option (commander hands over text). */
export function integerOption(
  name: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${name} must be an integer ${range}, got ${JSON.stringify(value)}`,
      );
    }
    return Number(value);
  };
}

/** `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, as PBS's boolean parser takes them). */
export function parseBooleanText(name: string, value: string): boolean {
  const v = value.toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new BurrowError(
    'INVALID_ARGUMENT',
    `${name} must be true or false, got ${JSON.stringify(value)}`,
  );
}
