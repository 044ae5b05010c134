/**
 * Local mode: BackupWriter / BackupReader straight over the datastore's BackupSession and
 * ReaderSession, the same objects the server will drive from HTTP/2 requests. These adapters only
 * translate shapes (one createIndex for both kinds, "no previous file" as undefined); every check
 * and every message stays in the sessions, so local and remote backups behave alike.
 */
import {
  datastoreStatus,
  groupSnapshotList,
  groupListItem,
  readOwner,
  snapshotFiles,
} from '../datastore/api-listing.js';
import { BackupSession } from '../datastore/backup-session.js';
import type { ChunkFileTarget, WrittenChunk } from '../datastore/chunk-file.js';
import type { DataStore } from '../datastore/datastore.js';
import type { BlobKind } from '../format/data-blob.js';
import { garbageCollection } from '../datastore/gc.js';
import type { GcStatusData } from '../datastore/gc-status.js';
import type { KeepOptions } from '../datastore/prune.js';
import { ReaderSession } from '../datastore/reader-session.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import type { TaskContext, TaskManager, TaskRunOptions } from '../tasks/index.js';
import type {
  BackupContent,
  DatastoreStatus,
  GroupListItem,
  SnapshotListItem,
} from '../types/api.js';
import { authidEquals, formatAuthid, isToken, mayActAsOwner, type Authid } from '../types/auth.js';
import {
  formatGroup,
  namespaceToString,
  type BackupDir,
  type BackupGroup,
  type BackupNamespace,
} from '../types/backup.js';
import type { BackupReader, BackupWriter, IndexKind } from './backup-writer.js';
import type {
  PruneOutcome,
  Repository,
  RepositorySpec,
  TaskObserver,
  WriterTarget,
} from './repository.js';

export interface LocalBackupWriterOptions {
  ns: BackupNamespace;
  group: BackupGroup;
  backupTime: number;
  authId: Authid;
  /** When given, the session runs as a `backup` worker task, as on a server. */
  tasks?: TaskManager;
  /** `host/benchmark` only: the snapshot is removed at the end. */
  benchmark?: boolean;
  /**
   * Every chunk will come from Burrow's own upload pipeline (chunk-pipeline.ts) in this process,
   * which computed its digest and CRC from the very data it encoded: the session then skips
   * decoding and re-hashing it. Leave unset when uploading chunks made any other way.
   */
  trustChunks?: boolean;
}

export interface LocalBackupReaderOptions {
  authId?: Authid;
  tasks?: TaskManager;
}

export class LocalBackupWriter implements BackupWriter {
  readonly session: BackupSession;
  readonly snapshot: BackupDir;

  constructor(session: BackupSession) {
    this.session = session;
    this.snapshot = session.dir;
  }

  previousBackupTime(): Promise<number | undefined> {
    return Promise.resolve(this.session.previousBackupTime());
  }

  async downloadPrevious(archiveName: string): Promise<Uint8Array | undefined> {
    try {
      return await this.session.downloadPrevious(archiveName);
    } catch (error) {
      if (isBurrowError(error, 'NO_PREVIOUS_BACKUP') || isBurrowError(error, 'NOT_FOUND')) {
        return undefined;
      }
      throw error;
    }
  }

  createIndex(kind: IndexKind, archiveName: string, size?: number): Promise<number> {
    if (kind === 'fixed') return this.session.createFixedIndex(archiveName, size);
    if (size !== undefined) {
      return Promise.reject(
        new BurrowError(
          'INVALID_ARGUMENT',
          `a dynamic index has no declared size (${archiveName})`,
          {
            details: { archiveName, size },
          },
        ),
      );
    }
    return this.session.createDynamicIndex(archiveName);
  }

  async uploadChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encoded: Uint8Array,
  ): Promise<void> {
    await this.session.uploadChunk(wid, kind, digest, size, encoded);
  }

  chunkFileTarget(): ChunkFileTarget | undefined {
    // Only a session that takes the pipeline's chunks unchecked takes them as files.
    return this.session.trustedClient ? this.session.store.chunkFileTarget() : undefined;
  }

  async uploadChunkFile(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    written: WrittenChunk,
    blobKind: BlobKind,
  ): Promise<void> {
    await this.session.uploadChunkFile(wid, kind, digest, size, written, blobKind);
  }

  reuseStoredChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encrypted: boolean,
  ): Promise<boolean> {
    return this.session.reuseStoredChunk(wid, kind, digest, size, encrypted);
  }

  async hasStoredChunk(digest: Uint8Array, encrypted: boolean): Promise<boolean> {
    return (await this.session.store.storedChunkSize(digest, encrypted)) !== undefined;
  }

  appendIndex(
    wid: number,
    kind: IndexKind,
    digests: readonly Uint8Array[],
    offsets: readonly number[],
  ): Promise<void> {
    return this.session.appendIndex(wid, kind, digests, offsets);
  }

  closeIndex(
    wid: number,
    kind: IndexKind,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<void> {
    return this.session.closeIndex(wid, kind, chunkCount, size, csum);
  }

  uploadBlob(fileName: string, encoded: Uint8Array): Promise<void> {
    return this.session.uploadBlob(fileName, encoded);
  }

  finish(): Promise<void> {
    return this.session.finish();
  }

  /** `reason` (an error, an abort) goes to the task log when the backup did not finish. */
  close(reason?: unknown): Promise<void> {
    return this.session.close(reason);
  }
}

export class LocalBackupReader implements BackupReader {
  readonly session: ReaderSession;
  readonly snapshot: BackupDir;

  constructor(session: ReaderSession) {
    this.session = session;
    this.snapshot = session.dir;
  }

  download(fileName: string): Promise<Uint8Array> {
    return this.session.download(fileName);
  }

  chunk(digest: Uint8Array): Promise<Uint8Array> {
    return this.session.chunk(digest);
  }

  chunkFile(digest: Uint8Array): string {
    return this.session.chunkFile(digest);
  }

  close(): Promise<void> {
    return this.session.close();
  }
}

/** Start a backup session on a local datastore (pbs-protocol §5.1 checks run here). */
export async function openLocalBackupWriter(
  store: DataStore,
  o: LocalBackupWriterOptions,
): Promise<LocalBackupWriter> {
  const session = await BackupSession.start({
    store,
    ns: o.ns,
    group: o.group,
    backupTime: o.backupTime,
    authId: o.authId,
    ...(o.tasks !== undefined ? { tasks: o.tasks } : {}),
    ...(o.benchmark !== undefined ? { benchmark: o.benchmark } : {}),
    trustedClient: o.trustChunks === true,
  });
  return new LocalBackupWriter(session);
}

/** Open a reader on a snapshot of a local datastore (shared snapshot lock until close). */
export async function openLocalBackupReader(
  store: DataStore,
  dir: BackupDir,
  o: LocalBackupReaderOptions = {},
): Promise<LocalBackupReader> {
  const session = await ReaderSession.open({
    store,
    dir,
    ...(o.authId !== undefined ? { authId: o.authId } : {}),
    ...(o.tasks !== undefined ? { tasks: o.tasks } : {}),
  });
  return new LocalBackupReader(session);
}

const ROOT_AUTHID: Authid = { name: 'root', realm: 'pam' };

function taskOptions(observer: TaskObserver | undefined): TaskRunOptions {
  if (observer === undefined) return {};
  return {
    ...(observer.onLine === undefined ? {} : { onLine: (line: string) => observer.onLine?.(line) }),
    ...(observer.onProgress === undefined
      ? {}
      : { onProgress: (f: number, t: string) => observer.onProgress?.(f, t) }),
    ...(observer.onStart === undefined ? {} : { onStart: (u: string) => observer.onStart?.(u) }),
  };
}

/**
 * A datastore the client opens directly (no server). There are no ACLs here: whoever can read
 * the directory may list and restore; changing a group (forget, prune, notes, protection) is for
 * its owner, as PBS allows an owner without Datastore.Modify, and for root, the local
 * administrator. Jobs run as tasks of the local user, logged like the server's.
 */
export class LocalRepository implements Repository {
  readonly spec: RepositorySpec;
  readonly store: DataStore;
  readonly authId: Authid;
  readonly display: string;
  readonly storeName: string;
  readonly path: string;
  readonly #tasks: TaskManager | undefined;

  constructor(spec: RepositorySpec, store: DataStore, authId: Authid, tasks?: TaskManager) {
    this.spec = spec;
    this.store = store;
    this.authId = authId;
    this.display = spec.text;
    this.storeName = store.name;
    this.path = store.base;
    this.#tasks = tasks;
  }

  async openWriter(target: WriterTarget): Promise<BackupWriter> {
    this.store.checkMaintenance('write');
    return openLocalBackupWriter(this.store, {
      ...target,
      authId: this.authId,
      ...(this.#tasks === undefined ? {} : { tasks: this.#tasks }),
      // Writers opened here are only fed by runBackup's pipeline.
      trustChunks: true,
    });
  }

  async openReader(dir: BackupDir): Promise<BackupReader> {
    this.store.checkMaintenance('read');
    return openLocalBackupReader(this.store, dir, {
      authId: this.authId,
      ...(this.#tasks === undefined ? {} : { tasks: this.#tasks }),
    });
  }

  async listGroups(ns: BackupNamespace): Promise<GroupListItem[]> {
    this.store.checkMaintenance('read');
    const items: GroupListItem[] = [];
    for (const group of await this.store.listGroups(ns))
      items.push(await groupListItem(this.store, group, await readOwner(this.store, group)));
    return items;
  }

  async listSnapshots(ns: BackupNamespace, group?: BackupGroup): Promise<SnapshotListItem[]> {
    this.store.checkMaintenance('read');
    const groups = group === undefined ? await this.store.listGroups(ns) : [group];
    const items: SnapshotListItem[] = [];
    for (const g of groups) items.push(...(await groupSnapshotList(this.store, g)));
    return items;
  }

  async snapshotFiles(dir: BackupDir): Promise<BackupContent[]> {
    this.store.checkMaintenance('read');
    return snapshotFiles(this.store, dir);
  }

  async forgetSnapshot(dir: BackupDir): Promise<void> {
    this.store.checkMaintenance('write');
    await this.store.snapshotInfo(dir);
    await this.#checkOwner(dir.group);
    await this.store.removeBackupDir(dir, false);
  }

  async snapshotNotes(dir: BackupDir): Promise<string> {
    this.store.checkMaintenance('read');
    return this.store.getSnapshotNotes(dir);
  }

  async setSnapshotNotes(dir: BackupDir, notes: string): Promise<void> {
    this.store.checkMaintenance('write');
    await this.store.snapshotInfo(dir);
    await this.#checkOwner(dir.group);
    await this.store.setSnapshotNotes(dir, notes);
  }

  async isProtected(dir: BackupDir): Promise<boolean> {
    this.store.checkMaintenance('read');
    await this.store.snapshotInfo(dir);
    return this.store.isProtected(dir);
  }

  async setProtected(dir: BackupDir, value: boolean): Promise<void> {
    this.store.checkMaintenance('write');
    await this.store.snapshotInfo(dir);
    await this.#checkOwner(dir.group);
    await this.store.setProtected(dir, value);
  }

  async prune(
    group: BackupGroup,
    keep: KeepOptions,
    options: { dryRun: boolean; observer?: TaskObserver },
  ): Promise<PruneOutcome> {
    // As PBS's prune, a dry run too: the store must be writable.
    this.store.checkMaintenance('write');
    // A missing group fails before anything starts.
    await this.store.listSnapshots(group);
    const ns = namespaceToString(group.ns);
    const toItem = (e: { dir: BackupDir; mark: string }) => ({
      'backup-type': e.dir.group.type,
      'backup-id': e.dir.group.id,
      'backup-time': e.dir.time,
      keep: e.mark !== 'remove',
      protected: e.mark === 'protected',
      ...(ns === '' ? {} : { ns }),
    });
    if (options.dryRun) {
      const plan = await this.store.pruneGroup(group, keep, { dryRun: true });
      return { items: plan.map(toItem) };
    }
    await this.#checkOwner(group);
    const { upid, result } = await this.#run(
      'prune',
      `${this.store.name}:${formatGroup(group)}`,
      options.observer,
      (task) =>
        this.store.pruneGroup(group, keep, {
          dryRun: false,
          log: (line) => task.log(line),
          warn: (line) => task.warn(line),
        }),
    );
    return { upid, items: result.map(toItem) };
  }

  async garbageCollect(observer?: TaskObserver): Promise<{ upid: string; status: GcStatusData }> {
    this.store.checkMaintenance('write');
    const { upid, result } = await this.#run(
      'garbage_collection',
      this.store.name,
      observer,
      (task) => garbageCollection(this.store, task),
    );
    return { upid, status: result };
  }

  async status(): Promise<DatastoreStatus> {
    this.store.checkMaintenance('read');
    return datastoreStatus(this.store, { counts: true });
  }

  #run<T>(
    type: string,
    id: string,
    observer: TaskObserver | undefined,
    work: (task: TaskContext) => Promise<T>,
  ): Promise<{ upid: string; result: T }> {
    if (this.#tasks === undefined) {
      return Promise.reject(
        new BurrowError('INTERNAL', `${type} needs a task manager to run as a task`),
      );
    }
    return this.#tasks.run(type, id, formatAuthid(this.authId), work, taskOptions(observer));
  }

  async #checkOwner(group: BackupGroup): Promise<void> {
    if (authidEquals(this.authId, ROOT_AUTHID) && !isToken(this.authId)) return;
    const owner = await this.store.getOwner(group);
    if (!mayActAsOwner(this.authId, owner)) {
      throw new BurrowError(
        'PERMISSION_DENIED',
        `group ${formatGroup(group)} belongs to ${formatAuthid(owner)}, not to ${formatAuthid(this.authId)}; ask its owner or root`,
        { details: { group: formatGroup(group), owner: formatAuthid(owner) } },
      );
    }
  }
}
