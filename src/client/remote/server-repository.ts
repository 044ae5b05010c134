/**
 * Remote mode: a datastore on a Burrow or PBS server, reached through PBS's REST API for lists,
 * notes, protection, prune, GC and status (pbs-protocol §8) and through the backup and reader
 * protocols for snapshots (§5, §6). It implements the same Repository interface as local mode,
 * so every `burrow` command runs unchanged against a server; the server checks permissions and
 * ownership, and its messages come back as the command's errors.
 */
import { randomBytes } from 'node:crypto';
import type { GcStatusData } from '../../datastore/gc-status.js';
import { KEEP_OPTIONS, type KeepOptions } from '../../datastore/prune.js';
import { BurrowError } from '../../lib/errors.js';
import type {
  BackupContent,
  DatastoreStatus,
  GroupListItem,
  PruneListItem,
  SnapshotListItem,
} from '../../types/api.js';
import type { Authid } from '../../types/auth.js';
import {
  ROOT_NAMESPACE,
  namespaceToString,
  type BackupDir,
  type BackupGroup,
  type BackupNamespace,
} from '../../types/backup.js';
import type { BackupReader, BackupWriter } from '../backup-writer.js';
import type {
  PruneOutcome,
  Repository,
  RepositorySpec,
  TaskObserver,
  WriterTarget,
} from '../repository.js';
import type { PbsHttpClient } from './http-client.js';
import { openRemoteBackupReader, openRemoteBackupWriter } from './remote-repository.js';
import type { QueryParams } from './remote-errors.js';

/** The body of one speed-test upload, as PBS's client sends it. */
const SPEEDTEST_BODY_SIZE = 4 * 1024 * 1024;

/** How often a running task's log is fetched while the client follows it. */
const TASK_POLL_MS = 500;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function nsParam(ns: BackupNamespace): { ns?: string } {
  const text = namespaceToString(ns);
  return text === '' ? {} : { ns: text };
}

function groupParams(group: BackupGroup): QueryParams {
  return { ...nsParam(group.ns), 'backup-type': group.type, 'backup-id': group.id };
}

function dirParams(dir: BackupDir): QueryParams {
  return { ...groupParams(dir.group), 'backup-time': dir.time };
}

function unexpected(path: string, what: string): BurrowError {
  return new BurrowError('REMOTE_ERROR', `the server's answer to ${path} is not ${what}`, {
    details: { path },
  });
}

function asArray<T>(value: unknown, path: string): T[] {
  if (!Array.isArray(value)) throw unexpected(path, 'a list');
  return value as T[];
}

function asObject<T>(value: unknown, path: string): T {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw unexpected(path, 'an object');
  return value as T;
}

interface TaskStatusAnswer {
  status: 'running' | 'stopped';
  exitstatus?: string;
}

export class ServerRepository implements Repository {
  readonly spec: RepositorySpec;
  readonly storeName: string;
  readonly authId: Authid;
  readonly display: string;
  readonly #client: PbsHttpClient;

  constructor(spec: RepositorySpec, store: string, authId: Authid, client: PbsHttpClient) {
    this.spec = spec;
    this.storeName = store;
    this.authId = authId;
    this.display = spec.text;
    this.#client = client;
  }

  /** Ends the connection pool; sessions close on their own. */
  close(): void {
    this.#client.close();
  }

  #path(tail: string): string {
    return `/api2/json/admin/datastore/${encodeURIComponent(this.storeName)}/${tail}`;
  }

  openWriter(target: WriterTarget): Promise<BackupWriter> {
    return openRemoteBackupWriter(this.#client, {
      store: this.storeName,
      ns: target.ns,
      group: target.group,
      backupTime: target.backupTime,
      // PBS's CLI asks for the verbose session log too.
      debug: true,
    });
  }

  openReader(dir: BackupDir): Promise<BackupReader> {
    return openRemoteBackupReader(this.#client, { store: this.storeName, dir });
  }

  async listGroups(ns: BackupNamespace): Promise<GroupListItem[]> {
    const path = this.#path('groups');
    return asArray<GroupListItem>(await this.#client.get(path, nsParam(ns)), path);
  }

  async listSnapshots(ns: BackupNamespace, group?: BackupGroup): Promise<SnapshotListItem[]> {
    const path = this.#path('snapshots');
    const params = group === undefined ? nsParam(ns) : groupParams(group);
    const items = asArray<SnapshotListItem>(await this.#client.get(path, params), path);
    // PBS lists newest first within a group; Burrow shows every list oldest first.
    return [...items].sort(
      (a, b) =>
        a['backup-type'].localeCompare(b['backup-type']) ||
        a['backup-id'].localeCompare(b['backup-id']) ||
        a['backup-time'] - b['backup-time'],
    );
  }

  async snapshotFiles(dir: BackupDir): Promise<BackupContent[]> {
    const path = this.#path('files');
    return asArray<BackupContent>(await this.#client.get(path, dirParams(dir)), path);
  }

  async forgetSnapshot(dir: BackupDir): Promise<void> {
    await this.#client.delete(this.#path('snapshots'), dirParams(dir));
  }

  async snapshotNotes(dir: BackupDir): Promise<string> {
    const value = await this.#client.get(this.#path('notes'), dirParams(dir));
    return typeof value === 'string' ? value : '';
  }

  async setSnapshotNotes(dir: BackupDir, notes: string): Promise<void> {
    await this.#client.put(this.#path('notes'), { ...dirParams(dir), notes });
  }

  async isProtected(dir: BackupDir): Promise<boolean> {
    return (await this.#client.get(this.#path('protected'), dirParams(dir))) === true;
  }

  async setProtected(dir: BackupDir, value: boolean): Promise<void> {
    await this.#client.put(this.#path('protected'), { ...dirParams(dir), protected: value });
  }

  async prune(
    group: BackupGroup,
    keep: KeepOptions,
    options: { dryRun: boolean; observer?: TaskObserver },
  ): Promise<PruneOutcome> {
    const params: Record<string, unknown> = { ...groupParams(group), 'dry-run': options.dryRun };
    for (const { name, key } of KEEP_OPTIONS) {
      const value = keep[key];
      if (value !== undefined) params[name] = value;
    }
    const path = this.#path('prune');
    // Like PBS's client: the prune call answers with the list once the snapshots are removed.
    return { items: asArray<PruneListItem>(await this.#client.post(path, params), path) };
  }

  async garbageCollect(observer?: TaskObserver): Promise<{ upid: string; status: GcStatusData }> {
    const path = this.#path('gc');
    const upid = await this.#client.post(path, {});
    if (typeof upid !== 'string') throw unexpected(path, 'a task id');
    observer?.onStart?.(upid);
    await this.followTask(upid, observer);
    const status = asObject<GcStatusData>(await this.#client.get(path), path);
    return { upid, status };
  }

  async status(): Promise<DatastoreStatus> {
    const path = this.#path('status');
    return asObject<DatastoreStatus>(await this.#client.get(path, { verbose: true }), path);
  }

  /**
   * PBS's TLS upload test: a `host/benchmark` backup session (removed by the server when it ends)
   * receiving 4 MiB bodies at `/speedtest` for `seconds`; bytes per second.
   */
  async uploadSpeed(seconds: number): Promise<number> {
    const writer = await openRemoteBackupWriter(this.#client, {
      store: this.storeName,
      group: { ns: ROOT_NAMESPACE, type: 'host', id: 'benchmark' },
      backupTime: Math.floor(Date.now() / 1000),
      benchmark: true,
    });
    try {
      const body = randomBytes(SPEEDTEST_BODY_SIZE);
      const start = performance.now();
      let sent = 0;
      let elapsed = 0;
      do {
        await writer.session.upload('/speedtest', {}, body);
        sent += body.byteLength;
        elapsed = (performance.now() - start) / 1000;
      } while (elapsed < seconds);
      return sent / elapsed;
    } finally {
      await writer.close();
    }
  }

  /**
   * Show a server task's log lines as they are written until it stops (as PBS's client follows
   * a task); a task that ended in an error or was aborted rejects with its message.
   */
  async followTask(upid: string, observer?: TaskObserver): Promise<void> {
    const base = `/api2/json/nodes/localhost/tasks/${encodeURIComponent(upid)}`;
    let next = 0;
    const showNewLines = async (): Promise<void> => {
      const lines = asArray<{ n: number; t: string }>(
        await this.#client.get(`${base}/log`, { start: next, limit: 0 }),
        `${base}/log`,
      );
      for (const line of lines) observer?.onLine?.(line.t);
      next += lines.length;
    };
    let status: TaskStatusAnswer;
    for (;;) {
      // The status first: lines written before it said "stopped" are all fetched after it.
      status = asObject<TaskStatusAnswer>(await this.#client.get(`${base}/status`), base);
      await showNewLines();
      if (status.status === 'stopped') break;
      await sleep(TASK_POLL_MS);
    }
    const exit = status.exitstatus ?? 'unknown';
    if (exit !== 'OK' && !exit.startsWith('WARNINGS')) {
      throw new BurrowError('REMOTE_ERROR', `task ${upid} failed: ${exit}`, {
        details: { upid, exitstatus: exit },
      });
    }
  }
}
