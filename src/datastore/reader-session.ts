/**
 * The reader side of the PBS protocols (pbs-protocol §6), once, for both transports: local
 * restores call a ReaderSession directly, and the server's reader protocol will map its HTTP/2
 * requests onto the same object. A session holds the snapshot's lock shared for its whole life,
 * so the snapshot cannot be removed while it is read, and it hands out only chunks that an index
 * downloaded in this session references (the allowed-chunks rule), which is what keeps a reader
 * of one snapshot from fetching arbitrary chunks of the store by guessing digests.
 *
 * readArchiveFile is shared with the backup session's `previous` download.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import { indexKindOfMagic } from '../format/index-common.js';
import { ENCRYPTED_BLOB_HEADER_SIZE, MAX_BLOB_SIZE } from '../format/magic.js';
import { archiveTypeOf, isArchiveName } from '../format/manifest.js';
import type { TaskContext, TaskManager, TaskRunOptions } from '../tasks/index.js';
import type { Authid } from '../types/auth.js';
import { formatAuthid, parseAuthid } from '../types/auth.js';
import type { BackupDir } from '../types/backup.js';
import { formatSnapshot } from '../types/backup.js';
import { DIGEST_SIZE, digestToHex } from '../types/digest.js';
import { errnoOf, fsError, isDirectory } from './backup-info.js';
import type { DataStore, LockGuard } from './datastore.js';
import { MAX_INDEX_FILE_SIZE } from './index-file.js';

/** The biggest blob file there can be: the biggest payload plus the biggest header. */
const MAX_BLOB_FILE_SIZE = MAX_BLOB_SIZE + ENCRYPTED_BLOB_HEADER_SIZE;

/** Who a session's task runs as when the caller names nobody (local mode run by the admin). */
const DEFAULT_AUTHID = 'root@pam';

/** Non-Errors (never thrown on purpose) become INTERNAL errors, so only Errors propagate. */
export function asError(error: unknown): Error {
  return error instanceof Error ? error : new BurrowError('INTERNAL', String(error));
}

/** One chunk an index references: its digest and its length in the archive stream. */
export interface IndexChunkRef {
  digest: Uint8Array;
  size: number;
}

export interface ArchiveFile {
  /** The file's bytes exactly as stored. */
  raw: Uint8Array;
  /** For `.fidx`/`.didx`: the chunks it references, in index order. */
  chunks?: IndexChunkRef[];
}

/**
 * Read an archive file (`*.blob`, `*.fidx`, `*.didx`) of a snapshot raw, as the protocols send
 * it. Indexes are parsed (magic, header, entry order; the csum is the client's to check) and
 * their chunks returned, so a caller can register them. Refused: a name that is not an archive
 * name (INVALID_ARCHIVE_NAME: temp files and markers are not for download), a missing file
 * (NOT_FOUND), anything but a regular file, and files larger than the biggest valid one.
 */
export async function readArchiveFile(
  store: DataStore,
  dir: BackupDir,
  name: string,
): Promise<ArchiveFile> {
  if (typeof name !== 'string' || !isArchiveName(name)) {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `invalid archive name ${JSON.stringify(String(name).slice(0, 120))}: expected a safe ID ending in .blob, .fidx or .didx`,
      { details: { filename: name } },
    );
  }
  const type = archiveTypeOf(name);
  const path = store.archivePath(dir, name);
  const limit = type === 'blob' ? MAX_BLOB_FILE_SIZE : MAX_INDEX_FILE_SIZE;
  let handle;
  try {
    // O_NONBLOCK: a FIFO planted under an archive name must not hang the session.
    handle = await open(
      path,
      fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK,
    );
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') {
      throw new BurrowError(
        'NOT_FOUND',
        `file '${name}' does not exist in snapshot ${formatSnapshot(dir)}`,
        { details: { filename: name, snapshot: formatSnapshot(dir), path } },
      );
    }
    throw fsError(error, 'open', path);
  }
  let raw: Uint8Array;
  try {
    const st = await handle.stat();
    if (!st.isFile()) {
      throw new BurrowError('IO_ERROR', `${path}: not a regular file`, { details: { path } });
    }
    if (st.size > limit) {
      throw new BurrowError(
        type === 'blob' ? 'BLOB_TOO_LARGE' : 'INDEX_BAD_SIZE',
        `${path}: ${st.size} bytes, more than the ${limit}-byte limit of a ${type === 'blob' ? 'blob' : 'index'} file`,
        { details: { path, size: st.size, limit } },
      );
    }
    raw = new Uint8Array(await handle.readFile());
  } catch (error) {
    throw fsError(error, 'read', path);
  } finally {
    await handle.close().catch(() => undefined);
  }
  if (type === 'blob') return { raw };
  try {
    return { raw, chunks: indexChunks(raw, type) };
  } catch (error) {
    if (isBurrowError(error)) {
      throw new BurrowError(error.code, `${path}: ${error.message}`, {
        details: { ...error.details, path },
        cause: error.cause,
      });
    }
    throw error;
  }
}

function indexChunks(raw: Uint8Array, type: 'fixed' | 'dynamic'): IndexChunkRef[] {
  const kind = indexKindOfMagic(raw);
  if (kind !== type) {
    throw new BurrowError(
      'INDEX_BAD_MAGIC',
      `not a ${type} index: ${kind === undefined ? 'unknown magic' : `it has the magic of a ${kind} index`}`,
      { details: { offset: 0, expected: type, actual: kind ?? null } },
    );
  }
  const chunks: IndexChunkRef[] = [];
  const index = type === 'fixed' ? FixedIndex.parse(raw) : DynamicIndex.parse(raw);
  for (const chunk of index) chunks.push({ digest: chunk.digest, size: chunk.end - chunk.start });
  return chunks;
}

/** `<store>:<type>/<id>/<backup time as 8 upper-case hex digits>`, PBS's reader worker id. */
export function readerWorkerId(store: DataStore, dir: BackupDir): string {
  const time = dir.time.toString(16).toUpperCase().padStart(8, '0');
  return `${store.name}:${dir.group.type}/${dir.group.id}/${time}`;
}

/**
 * A task that lives as long as a session: started by `start`, which resolves once the task is
 * registered, and ended by `end` with the session's outcome. Shared by both session kinds.
 */
export class SessionTask {
  readonly upid: string;
  readonly context: TaskContext;
  readonly #finish: (error: unknown) => void;
  readonly #done: Promise<unknown>;
  #ended = false;

  private constructor(
    upid: string,
    context: TaskContext,
    finish: (error: unknown) => void,
    done: Promise<unknown>,
  ) {
    this.upid = upid;
    this.context = context;
    this.#finish = finish;
    this.#done = done;
  }

  static async start(
    tasks: TaskManager,
    workerType: string,
    workerId: string,
    authId: string,
    options: TaskRunOptions = {},
  ): Promise<SessionTask> {
    let finish!: (error: unknown) => void;
    const outcome = new Promise<void>((resolve, reject) => {
      finish = (error) => (error === undefined ? resolve() : reject(asError(error)));
    });
    let upid: string | undefined;
    return new Promise<SessionTask>((resolve, reject) => {
      const done = tasks.run(
        workerType,
        workerId,
        authId,
        (context) => {
          resolve(new SessionTask(upid ?? context.upid, context, finish, done));
          return outcome;
        },
        {
          ...options,
          onStart: (started) => {
            upid = started;
            options.onStart?.(started);
          },
        },
      );
      // Before the work ran, this is the reason the task could not start; later it is the
      // session's own outcome, which `end` reports.
      done.catch(reject);
    });
  }

  log(line: string): void {
    this.context.log(line);
  }

  /** End the task: OK without `error`, failed with its message otherwise. Idempotent. */
  async end(error?: unknown): Promise<void> {
    if (!this.#ended) {
      this.#ended = true;
      this.#finish(error);
    }
    await this.#done.catch(() => undefined);
  }
}

export interface ReaderSessionOptions {
  store: DataStore;
  dir: BackupDir;
  /** Who reads; names the task's user (default root@pam). Permission checks are the caller's. */
  authId?: Authid;
  /** When given, the session runs as a worker task `reader` (pbs-protocol §6.1). */
  tasks?: TaskManager;
  /** Passed to TaskManager.run (onLine, onStart, ...). */
  taskOptions?: TaskRunOptions;
  /** PBS's `debug` parameter: a log line per chunk download. */
  debug?: boolean;
}

/** A restore session on one snapshot (pbs-protocol §6). */
export class ReaderSession {
  readonly store: DataStore;
  readonly dir: BackupDir;
  readonly #lock: LockGuard;
  readonly #task: SessionTask | undefined;
  readonly #debug: boolean;
  readonly #allowed = new Set<string>();
  #closing: Promise<void> | undefined;

  private constructor(
    store: DataStore,
    dir: BackupDir,
    lock: LockGuard,
    task: SessionTask | undefined,
    debug: boolean,
  ) {
    this.store = store;
    this.dir = dir;
    this.#lock = lock;
    this.#task = task;
    this.#debug = debug;
  }

  /**
   * Open a reader: the snapshot must exist (NOT_FOUND) and not be locked exclusively, e.g. by
   * the backup still writing it or a removal (LOCKED); its lock is then held shared until close.
   */
  static async open(options: ReaderSessionOptions): Promise<ReaderSession> {
    const { store, dir } = options;
    const path = store.snapshotPath(dir);
    if (!(await isDirectory(path))) {
      throw new BurrowError('NOT_FOUND', `snapshot ${formatSnapshot(dir)} does not exist.`, {
        details: { snapshot: formatSnapshot(dir), store: store.name },
      });
    }
    const lock = await store.lockSnapshot(dir, false);
    let task: SessionTask | undefined;
    try {
      // A removal may have finished between the check and the lock: a lock on a snapshot that
      // is gone guards nothing.
      if (!(await isDirectory(path))) {
        throw new BurrowError('NOT_FOUND', `snapshot ${formatSnapshot(dir)} does not exist.`, {
          details: { snapshot: formatSnapshot(dir), store: store.name },
        });
      }
      if (options.tasks !== undefined) {
        const authId = formatAuthid(options.authId ?? parseAuthid(DEFAULT_AUTHID));
        task = await SessionTask.start(
          options.tasks,
          'reader',
          readerWorkerId(store, dir),
          authId,
          options.taskOptions,
        );
        task.log(`starting new backup reader datastore '${store.name}': ${JSON.stringify(path)}`);
      }
    } catch (error) {
      await lock.release();
      throw error;
    }
    const session = new ReaderSession(store, dir, lock, task, options.debug === true);
    task?.context.signal.addEventListener('abort', () => void session.close(), { once: true });
    return session;
  }

  /** The task's UPID, when the session runs as a task. */
  get upid(): string | undefined {
    return this.#task?.upid;
  }

  #requireOpen(): void {
    if (this.#closing !== undefined) {
      throw new BurrowError(
        'BACKUP_SESSION_INVALID',
        `reader session on ${formatSnapshot(this.dir)} is closed`,
        { details: { snapshot: formatSnapshot(this.dir) } },
      );
    }
  }

  /** Raw file bytes; an index file adds its digests to the allowed set. Missing → NOT_FOUND. */
  async download(fileName: string): Promise<Uint8Array> {
    this.#requireOpen();
    const file = await readArchiveFile(this.store, this.dir, fileName);
    if (file.chunks !== undefined) {
      this.#task?.log(`register chunks in '${fileName}' as downloadable.`);
      for (const chunk of file.chunks) this.#allowed.add(digestToHex(chunk.digest));
    }
    this.#task?.log(`download ${JSON.stringify(this.store.archivePath(this.dir, fileName))}`);
    return file.raw;
  }

  /** Whether `digest` is in the allowed set (an index downloaded in this session references it). */
  isAllowed(digest: Uint8Array): boolean {
    return this.#allowed.has(digestToHex(digest));
  }

  /** Raw stored chunk (DataBlob as on disk). Not allowed → CHUNK_NOT_ALLOWED. */
  async chunk(digest: Uint8Array): Promise<Uint8Array> {
    this.chunkFile(digest);
    return this.store.loadChunk(digest);
  }

  /**
   * The path of an allowed chunk's file, with chunk()'s checks and log line, for a caller that
   * reads it itself (a worker thread of the local client). Not allowed → CHUNK_NOT_ALLOWED.
   */
  chunkFile(digest: Uint8Array): string {
    this.#requireOpen();
    if (!(digest instanceof Uint8Array) || digest.byteLength !== DIGEST_SIZE) {
      throw new BurrowError('INVALID_DIGEST', 'a chunk digest must be 32 bytes');
    }
    const hex = digestToHex(digest);
    if (!this.#allowed.has(hex)) {
      throw new BurrowError('CHUNK_NOT_ALLOWED', `download chunk ${hex} not allowed`, {
        details: { digest: hex },
      });
    }
    const path = this.store.chunkStore.chunkPath(digest);
    if (this.#debug) this.#task?.log(`download chunk ${JSON.stringify(path)}`);
    return path;
  }

  /** Release the snapshot lock and end the task (OK). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await this.#lock.release();
      } finally {
        if (this.#task !== undefined) {
          const aborted = this.#task.context.signal.aborted;
          if (!aborted) this.#task.log('reader finished successfully');
          await this.#task.end(aborted ? this.#task.context.signal.reason : undefined);
        }
      }
    })();
    return this.#closing;
  }
}
