/**
 * What the `burrow` client commands share besides their own arguments: the global
 * `--repository` option (over PBS_REPOSITORY) and directory options, the opened repository, the
 * snapshot argument (a snapshot, or a group for its newest finished snapshot), and where keys and
 * passphrases come from, following proxmox-backup-client (docs/cli.md).
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { PASSWORD_ENV } from '../client/remote/env-names.js';
import {
  DEFAULT_REMOTE_AUTHID,
  openRepository,
  repositoryFromOptions,
  type Repository,
} from '../client/repository.js';
import { snapshotIsFinished } from '../datastore/api-listing.js';
import { readKeyConfigFile } from '../client/key-file.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { decryptKeyConfig } from '../crypto/key-config.js';
import { BurrowError, withFile } from '../lib/errors.js';
import type { BurrowDirs } from '../lib/dirs.js';
import { TaskManager } from '../tasks/index.js';
import {
  formatGroup,
  parseGroupPath,
  parseNamespace,
  type BackupDir,
  type BackupNamespace,
} from '../types/backup.js';
import type { CryptMode } from '../types/crypt-mode.js';
import {
  addDirectoryOptions,
  dirsOf,
  namespaceOption,
  snapshotArgument,
} from './manager-context.js';
import type { Printer } from './output.js';
import { readPassphrase } from './passphrase.js';
import { printerFor } from './run.js';

/** The environment variable with the key file passphrase (PBS). */
export const KEY_PASSWORD_ENV = 'PBS_ENCRYPTION_PASSWORD';
/** The new passphrase for `key change-passphrase` without a terminal (Burrow). */
export const NEW_KEY_PASSWORD_ENV = 'BURROW_NEW_ENCRYPTION_PASSWORD';
/** The passphrase of the master private key without a terminal (Burrow). */
export const MASTER_KEY_PASSWORD_ENV = 'BURROW_MASTER_KEY_PASSWORD';

export const DEFAULT_KEY_FILE_NAME = 'encryption-key.json';
export const DEFAULT_MASTER_PUBKEY_FILE_NAME = 'master-public.pem';

/** Register `--repository` and the directory options on the `burrow` program (global options). */
export function registerClientOptions(program: Command): void {
  addDirectoryOptions(program).option(
    '--repository <repository>',
    'datastore name from datastore.cfg, a datastore path starting with / or ., or a server as [[authid@]host[:port]:]datastore (default $PBS_REPOSITORY)',
  );
  program.configureHelp({ showGlobalOptions: true });
}

export interface ClientContext {
  readonly dirs: BurrowDirs;
  readonly printer: Printer;
  readonly tasks: TaskManager;
  /** Open the repository of the command (`--repository` or PBS_REPOSITORY). */
  repository(): Promise<Repository>;
}

export function clientContext(command: Command, options: { outputFormat?: string }): ClientContext {
  const dirs = dirsOf(command);
  const tasks = new TaskManager({ dirs });
  const { repository } = command.optsWithGlobals<{ repository?: string }>();
  return {
    dirs,
    printer: printerFor(options),
    tasks,
    repository: async () => {
      const spec = repositoryFromOptions(repository);
      const authId = spec.kind === 'remote' ? (spec.authId ?? DEFAULT_REMOTE_AUTHID) : '';
      return openRepository(spec, {
        dirs,
        tasks,
        remote: {
          readPassword: () => readPassphrase(`Password for "${authId}"`, PASSWORD_ENV),
          warn: (message) => process.stderr.write(`warning: ${message}\n`),
        },
      });
    },
  };
}

/** `--ns` on a client command. */
export function addNamespaceOption(command: Command): Command {
  return command.option('--ns <namespace>', 'namespace (default: the root namespace)');
}

export function namespaceOf(options: { ns?: string }): BackupNamespace {
  return namespaceOption(options.ns);
}

/**
 * A snapshot argument as PBS's client takes it: `<type>/<id>/<time>` names one snapshot,
 * `<type>/<id>` the group's newest finished one. Both may carry an `ns/...` prefix instead of
 * `--ns`.
 */
export async function resolveSnapshot(
  repo: Repository,
  text: string,
  ns: string | undefined,
): Promise<BackupDir> {
  if (text.split('/').length % 2 === 1) return snapshotArgument(text, ns);
  let group = parseGroupPath(text);
  if (ns !== undefined && ns !== '') {
    if (group.ns.components.length > 0) return snapshotArgument(text, ns); // let it report the clash
    group = { ...group, ns: parseNamespace(ns) };
  }
  const snapshots = await repo.listSnapshots(group.ns, group);
  const newest = [...snapshots].reverse().find(snapshotIsFinished);
  if (newest === undefined) {
    throw new BurrowError('NOT_FOUND', `group ${formatGroup(group)} has no finished snapshot`, {
      details: { group: formatGroup(group) },
    });
  }
  return { group, time: newest['backup-time'] };
}

// ---------------------------------------------------------------------------------------------
// interruptions

/** Signal numbers of the signals that abort a backup: the exit status is 128 + the number. */
const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const;
export type AbortSignalName = keyof typeof SIGNAL_NUMBERS;

/** A backup stopped by SIGINT or SIGTERM; exits 130 or 143 like a shell-killed program. */
export class InterruptedError extends BurrowError {
  readonly signalName: AbortSignalName;
  constructor(signalName: AbortSignalName, message: string, cause?: unknown) {
    super('TASK_ABORTED', message, { details: { signal: signalName }, cause });
    this.signalName = signalName;
  }
  override get exitCode(): number {
    return 128 + SIGNAL_NUMBERS[this.signalName];
  }
}

export interface InterruptWatch {
  readonly signal: AbortSignal;
  received(): AbortSignalName | undefined;
  dispose(): void;
}

/**
 * Turn the first SIGINT/SIGTERM into an abort (so the writer gets closed and the snapshot
 * removed); a second one ends the process at once with the same status, for a cleanup that hangs.
 */
export function watchInterrupts(onFirst: (name: AbortSignalName) => void): InterruptWatch {
  const controller = new AbortController();
  let received: AbortSignalName | undefined;
  const handler = (name: AbortSignalName): void => {
    if (received !== undefined) process.exit(128 + SIGNAL_NUMBERS[name]);
    received = name;
    onFirst(name);
    controller.abort(new BurrowError('TASK_ABORTED', `interrupted by ${name}`));
  };
  const onInt = (): void => handler('SIGINT');
  const onTerm = (): void => handler('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return {
    signal: controller.signal,
    received: () => received,
    dispose() {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// keys

/** PBS's key directory: `$XDG_CONFIG_HOME/proxmox-backup`, else `~/.config/proxmox-backup`. */
export function defaultKeyDir(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== ''
      ? env.XDG_CONFIG_HOME
      : join(env.HOME ?? homedir(), '.config');
  return join(base, 'proxmox-backup');
}

export function defaultKeyPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultKeyDir(env), DEFAULT_KEY_FILE_NAME);
}

export function defaultMasterPubkeyPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultKeyDir(env), DEFAULT_MASTER_PUBKEY_FILE_NAME);
}

/**
 * Unlock a key file, asking for its passphrase (PBS_ENCRYPTION_PASSWORD or the terminal) only
 * when it has one. `created` is the file's creation time, which the RSA-wrapped copy keeps.
 */
export async function unlockKeyFile(
  path: string,
): Promise<{ crypt: CryptConfig; created: string }> {
  const config = await readKeyConfigFile(path);
  const passphrase =
    config.kdf === null
      ? undefined
      : await readPassphrase('Encryption Key Password', KEY_PASSWORD_ENV);
  try {
    const { key } = await decryptKeyConfig(config, passphrase);
    return { crypt: new CryptConfig(key), created: config.created };
  } catch (error) {
    throw withFile(error, path);
  }
}

export async function loadKeyFile(path: string): Promise<CryptConfig> {
  return (await unlockKeyFile(path)).crypt;
}

/**
 * A new passphrase: from `envVar` when set, else asked twice on the terminal (they must match).
 */
export async function readNewPassphrase(prompt: string, envVar: string): Promise<string> {
  const fromEnv = process.env[envVar];
  if (fromEnv !== undefined) return fromEnv;
  const first = await readPassphrase(prompt, envVar);
  const second = await readPassphrase('Verify Password', envVar);
  if (first !== second) throw new BurrowError('INVALID_ARGUMENT', 'the passwords do not match');
  return first;
}

export interface CryptParameters {
  mode: CryptMode;
  crypt?: CryptConfig;
  /** The key file used (given or default). */
  keyPath?: string;
  /** The key file's `created` time (RFC 3339). */
  keyCreated?: string;
  /** PEM of the master public key (given or default) when a key is used. */
  masterPublicKey?: string;
  masterPubkeyPath?: string;
  /** Lines for people: which default was picked. */
  notes: string[];
}

/**
 * PBS's choice of key and crypt mode: `--keyfile` alone encrypts; `--crypt-mode encrypt|sign-only`
 * without a key file uses the default key (and fails without one); neither option uses the
 * default key when it exists and writes unencrypted otherwise; `--crypt-mode none` refuses a
 * key. The default master public key is added whenever a key is used and none is given.
 */
export async function cryptParameters(
  options: { keyfile?: string; cryptMode?: string; masterPubkeyFile?: string },
  env: NodeJS.ProcessEnv = process.env,
): Promise<CryptParameters> {
  const mode = options.cryptMode as CryptMode | undefined;
  const notes: string[] = [];
  if (mode === 'none') {
    if (options.keyfile !== undefined)
      throw new BurrowError('INVALID_ARGUMENT', '--keyfile cannot be used with --crypt-mode none');
    if (options.masterPubkeyFile !== undefined)
      throw new BurrowError(
        'INVALID_ARGUMENT',
        '--master-pubkey-file cannot be used with --crypt-mode none',
      );
    return { mode: 'none', notes };
  }
  let keyPath = options.keyfile;
  if (keyPath === undefined) {
    const fallback = defaultKeyPath(env);
    if (existsSync(fallback)) {
      keyPath = fallback;
      notes.push(`Encrypting with default encryption key ${fallback}`);
    } else if (mode !== undefined) {
      throw new BurrowError(
        'NOT_FOUND',
        `--crypt-mode ${mode} needs a key: give --keyfile, or create the default key ${fallback} with 'burrow key create'`,
      );
    } else if (options.masterPubkeyFile !== undefined) {
      throw new BurrowError(
        'NOT_FOUND',
        `--master-pubkey-file needs an encryption key: give --keyfile or create the default key ${fallback}`,
      );
    } else {
      return { mode: 'none', notes };
    }
  }
  const { crypt, created } = await unlockKeyFile(keyPath);
  let masterPubkeyPath = options.masterPubkeyFile;
  if (masterPubkeyPath === undefined) {
    const fallback = defaultMasterPubkeyPath(env);
    if (existsSync(fallback)) {
      masterPubkeyPath = fallback;
      notes.push(`Using default master public key ${fallback}`);
    }
  }
  const result: CryptParameters = {
    mode: mode ?? 'encrypt',
    crypt,
    keyPath,
    keyCreated: created,
    notes,
  };
  if (masterPubkeyPath !== undefined) {
    try {
      result.masterPublicKey = await readFile(masterPubkeyPath, 'utf8');
    } catch (error) {
      throw new BurrowError(
        (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
        `cannot read master public key ${masterPubkeyPath}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    result.masterPubkeyPath = masterPubkeyPath;
  }
  return result;
}

/** For reading (restore, catalog): `--keyfile`, else the default key when it exists, else none. */
export async function readerCrypt(options: { keyfile?: string }): Promise<CryptConfig | undefined> {
  if (options.keyfile !== undefined) return loadKeyFile(options.keyfile);
  const fallback = defaultKeyPath();
  return existsSync(fallback) ? loadKeyFile(fallback) : undefined;
}

/** `--keyfile` for commands that read snapshots. */
export function addKeyfileOption(command: Command): Command {
  return command.option(
    '--keyfile <path>',
    'key file of encrypted or signed snapshots (default: ~/.config/proxmox-backup/encryption-key.json when it exists)',
  );
}

/** Repeatable options collect into an array. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];
