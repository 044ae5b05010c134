/**
 * Where a backup goes: PBS's `--repository` / `PBS_REPOSITORY`. Burrow reads three forms:
 * a datastore name from datastore.cfg (`store1`), a datastore directory given by a path that
 * starts with `/` or `.` (`/srv/backup`, `./store`), and PBS's remote form
 * `[[user@realm[!token]@]host[:port]:]store` (a bare name is a local datastore in Burrow, where
 * PBS's client would mean `localhost:<name>`). Both local forms open the datastore directly; the
 * remote form talks to a server (remote/). Either way the commands see one Repository interface.
 */
import { userInfo } from 'node:os';
import { DataStore } from '../datastore/datastore.js';
import type { BurrowDirs } from '../lib/dirs.js';
import { BurrowError } from '../lib/errors.js';
import type { TaskManager } from '../tasks/index.js';
import { parseAuthid, type Authid } from '../types/auth.js';
import {
  SAFE_ID_RE,
  type BackupDir,
  type BackupGroup,
  type BackupNamespace,
} from '../types/backup.js';
import type { GcStatusData } from '../datastore/gc-status.js';
import type { KeepOptions } from '../datastore/prune.js';
import type {
  BackupContent,
  DatastoreStatus,
  GroupListItem,
  PruneListItem,
  SnapshotListItem,
} from '../types/api.js';
import type { BackupReader, BackupWriter } from './backup-writer.js';
import { LocalRepository } from './local-repository.js';
// The HTTP client and the server repository are loaded when a remote repository is opened:
// local commands need neither (nor node:http2 and node:tls), and start faster without them.
import type { PbsConnectOptions } from './remote/http-client.js';

/** The environment variable PBS's client reads the repository from. */
export const REPOSITORY_ENV = 'PBS_REPOSITORY';

export type RepositorySpec =
  /** A datastore configured in datastore.cfg, by name. */
  | { readonly kind: 'name'; readonly text: string; readonly store: string }
  /** A datastore directory (configured or not), by path. */
  | { readonly kind: 'path'; readonly text: string; readonly path: string }
  /** A PBS server (not supported yet). */
  | {
      readonly kind: 'remote';
      readonly text: string;
      readonly authId?: string;
      readonly host: string;
      readonly port?: number;
      readonly store: string;
    };

function invalid(text: string, reason: string): BurrowError {
  return new BurrowError(
    'INVALID_ARGUMENT',
    `invalid repository ${JSON.stringify(text.slice(0, 200))}: ${reason}`,
    { details: { repository: text } },
  );
}

const HOST_NAME_RE =
  /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const IPV6_RE = /^[0-9A-Fa-f:.]+$/;

/** Parse a repository text; throws INVALID_ARGUMENT naming what is wrong. */
export function parseRepository(text: string): RepositorySpec {
  if (text === '') throw invalid(text, 'it is empty');
  if (text.startsWith('/') || text.startsWith('.')) return { kind: 'path', text, path: text };
  const colon = text.lastIndexOf(':');
  if (colon < 0) {
    if (!SAFE_ID_RE.test(text)) {
      throw invalid(
        text,
        'a datastore name is a safe ID ([A-Za-z0-9_][A-Za-z0-9._-]*); a directory must start with / or .',
      );
    }
    return { kind: 'name', text, store: text };
  }
  const store = text.slice(colon + 1);
  if (!SAFE_ID_RE.test(store))
    throw invalid(text, `the datastore name ${JSON.stringify(store)} is not a safe ID`);
  let rest = text.slice(0, colon);
  let authId: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    authId = rest.slice(0, at);
    rest = rest.slice(at + 1);
    try {
      parseAuthid(authId);
    } catch (error) {
      throw invalid(text, error instanceof Error ? error.message : String(error));
    }
  }
  let host: string;
  let portText: string | undefined;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw invalid(text, 'an IPv6 address in [...] is not closed');
    host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (after !== '') {
      if (!after.startsWith(':'))
        throw invalid(text, `unexpected ${JSON.stringify(after)} after the IPv6 address`);
      portText = after.slice(1);
    }
    if (!IPV6_RE.test(host) || !host.includes(':'))
      throw invalid(text, `${JSON.stringify(host)} is not an IPv6 address`);
  } else {
    const parts = rest.split(':');
    if (parts.length > 2) throw invalid(text, 'an IPv6 address must be written in [...]');
    host = parts[0] ?? '';
    portText = parts[1];
    if (!HOST_NAME_RE.test(host))
      throw invalid(text, `${JSON.stringify(host)} is not a host name or address`);
  }
  let port: number | undefined;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535))
      throw invalid(text, `the port ${JSON.stringify(portText)} is not 1..65535`);
  }
  return {
    kind: 'remote',
    text,
    ...(authId === undefined ? {} : { authId }),
    host,
    ...(port === undefined ? {} : { port }),
    store,
  };
}

/** The repository of a command: `--repository` wins over PBS_REPOSITORY; neither is a usage error. */
export function repositoryFromOptions(
  option: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): RepositorySpec {
  const text = option ?? env[REPOSITORY_ENV];
  if (text === undefined || text === '') {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `no repository given: use --repository <datastore name or path> or set ${REPOSITORY_ENV}`,
    );
  }
  return parseRepository(text);
}

/**
 * Who a local backup runs as: `root@pam` for root, `<login name>@pam` otherwise. The datastore
 * records it as the owner of new groups and checks it against existing owners, as the server
 * checks the authenticated user.
 */
export function localAuthid(
  who: { uid: number; username: string } = {
    uid: process.getuid?.() ?? -1,
    username: userInfo().username,
  },
): Authid {
  if (who.uid === 0) return parseAuthid('root@pam');
  try {
    return parseAuthid(`${who.username}@pam`);
  } catch (error) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `the login name ${JSON.stringify(who.username)} cannot be used as a Burrow user (${error instanceof Error ? error.message : String(error)})`,
      { cause: error },
    );
  }
}

export interface WriterTarget {
  ns: BackupNamespace;
  group: BackupGroup;
  backupTime: number;
}

/** How a caller follows a task the repository runs (garbage collection, prune). */
export interface TaskObserver {
  /** The task's UPID, as soon as it exists. */
  onStart?(upid: string): void;
  /** Each task log line, including the final `TASK ...` line. */
  onLine?(line: string): void;
  /** Progress in 0..1 for a bar, when the task reports it. */
  onProgress?(fraction: number, text: string): void;
}

export interface PruneOutcome {
  /** The task of a real prune, when it ran as one. */
  upid?: string;
  /** Every snapshot of the group with its decision, oldest first. */
  items: PruneListItem[];
}

/**
 * A repository opened for a command: a local datastore (local-repository.ts) or a datastore on a
 * server (remote/). The commands only use this interface, so they behave and print alike in both
 * modes; permission and owner checks happen where the data is (the datastore's owner rules
 * locally, the server's ACLs remotely).
 */
export interface Repository {
  readonly spec: RepositorySpec;
  /** The datastore's name (for a path-opened store, `path:<dir>`). */
  readonly storeName: string;
  /** Who acts on the repository (the owner of new groups). */
  readonly authId: Authid;
  /** How the repository is shown to people: the name, or the path as given. */
  readonly display: string;
  /** A backup session for a new snapshot (pbs-protocol §5); close() it in a finally. */
  openWriter(target: WriterTarget): Promise<BackupWriter>;
  /** A reader session on a snapshot (pbs-protocol §6); close() it in a finally. */
  openReader(dir: BackupDir): Promise<BackupReader>;
  listGroups(ns: BackupNamespace): Promise<GroupListItem[]>;
  /** The snapshots of one group, or of every group of the namespace. */
  listSnapshots(ns: BackupNamespace, group?: BackupGroup): Promise<SnapshotListItem[]>;
  snapshotFiles(dir: BackupDir): Promise<BackupContent[]>;
  forgetSnapshot(dir: BackupDir): Promise<void>;
  snapshotNotes(dir: BackupDir): Promise<string>;
  setSnapshotNotes(dir: BackupDir, notes: string): Promise<void>;
  isProtected(dir: BackupDir): Promise<boolean>;
  setProtected(dir: BackupDir, value: boolean): Promise<void>;
  prune(
    group: BackupGroup,
    keep: KeepOptions,
    options: { dryRun: boolean; observer?: TaskObserver },
  ): Promise<PruneOutcome>;
  /** Runs garbage collection to its end; the counters of that run. */
  garbageCollect(observer?: TaskObserver): Promise<{ upid: string; status: GcStatusData }>;
  status(): Promise<DatastoreStatus>;
  /** Where the store lives, when the client can see it (local mode). */
  readonly path?: string;
  /** Upload throughput to the server in bytes per second (remote mode: PBS's TLS benchmark). */
  uploadSpeed?(seconds: number): Promise<number>;
}

export interface OpenRepositoryOptions {
  dirs: BurrowDirs;
  /** Sessions run as worker tasks (`backup`, `reader`) when given, as on a PBS server. */
  tasks?: TaskManager;
  /** Default localAuthid(). */
  authId?: Authid;
  log?: (line: string) => void;
  /** How a remote repository asks for what the environment does not give (terminal prompts). */
  remote?: Pick<PbsConnectOptions, 'readPassword' | 'prompt' | 'fingerprint' | 'env' | 'warn'>;
}

/** PBS's client acts as root@pam when the repository names no user. */
export const DEFAULT_REMOTE_AUTHID = 'root@pam';

export async function openRepository(
  spec: RepositorySpec,
  options: OpenRepositoryOptions,
): Promise<Repository> {
  if (spec.kind === 'remote') {
    const authId = spec.authId ?? DEFAULT_REMOTE_AUTHID;
    const [{ PbsHttpClient }, { ServerRepository }] = await Promise.all([
      import('./remote/http-client.js'),
      import('./remote/server-repository.js'),
    ]);
    const client = await PbsHttpClient.connect({
      host: spec.host,
      ...(spec.port === undefined ? {} : { port: spec.port }),
      authId,
      ...options.remote,
    });
    return new ServerRepository(spec, spec.store, parseAuthid(authId), client);
  }
  const authId = options.authId ?? localAuthid();
  // The client process serves nobody else: chunk files are written with blocking calls.
  const ctx = {
    dirs: options.dirs,
    blockingChunkWrites: true,
    ...(options.log === undefined ? {} : { log: options.log }),
  };
  const store =
    spec.kind === 'name'
      ? await DataStore.lookup(spec.store, ctx)
      : await DataStore.openPath(spec.path, ctx);
  return new LocalRepository(spec, store, authId, options.tasks);
}
