/**
 * Local mode: BackupWriter / BackupReader straight over the datastore's BackupSession and
 * ReaderSession, the same objects the server will drive from HTTP/2 requests. These adapters only
 * translate shapes (one createIndex for both kinds, "no previous file" as undefined); every check
 * and every message stays in the sessions, so local and remote backups behave alike.
 */
import { BackupSession } from '../datastore/backup-session.js';
import type { DataStore } from '../datastore/datastore.js';
import { ReaderSession } from '../datastore/reader-session.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import type { TaskManager } from '../tasks/index.js';
import type { Authid } from '../types/auth.js';
import type { BackupDir, BackupGroup, BackupNamespace } from '../types/backup.js';
import type { BackupReader, BackupWriter, IndexKind } from './backup-writer.js';

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
