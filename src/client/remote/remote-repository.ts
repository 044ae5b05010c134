/**
 * Remote mode: BackupWriter / BackupReader over a PBS server's backup and reader protocols
 * (pbs-protocol §5, §6). Each method is one request inside the upgraded HTTP/2 session; the
 * server runs the same checks as the local datastore session, and its answers are mapped so the
 * code above sees what local mode would show it (no previous file as undefined, a refused chunk
 * as CHUNK_NOT_ALLOWED).
 */
import { toHex } from '../../lib/bytes.js';
import { BurrowError, type ErrorCode } from '../../lib/errors.js';
import {
  backupDir,
  namespaceEquals,
  namespaceToString,
  type BackupDir,
  type BackupGroup,
  type BackupNamespace,
} from '../../types/backup.js';
import type { BackupReader, BackupWriter, IndexKind } from '../backup-writer.js';
import type { H2Session, StatusMapper } from './h2-session.js';
import type { PbsHttpClient } from './http-client.js';
import { statusCode, type QueryParams } from './remote-errors.js';

export const BACKUP_PROTOCOL = 'proxmox-backup-protocol-v1';
export const READER_PROTOCOL = 'proxmox-backup-reader-protocol-v1';

/** Entries per `PUT …_index`: well below PBS's 512 KiB body limit (about 80 bytes each). */
export const MAX_APPEND_ENTRIES = 1024;

/** PBS's message when the group has no usable previous snapshot (§5.3 GET /previous). */
const NO_PREVIOUS_MESSAGE = 'no valid previous backup';

export interface RemoteBackupWriterOptions {
  store: string;
  /** Default `group.ns`; when given it must equal it. */
  ns?: BackupNamespace;
  group: BackupGroup;
  backupTime: number;
  /** Verbose server task log. */
  debug?: boolean;
  /** `host/benchmark` only (§5.1). */
  benchmark?: boolean;
}

export interface RemoteBackupReaderOptions {
  store: string;
  dir: BackupDir;
  debug?: boolean;
}

const writerMapper: StatusMapper = (status, message) =>
  status === 400 && message.startsWith(NO_PREVIOUS_MESSAGE)
    ? 'NO_PREVIOUS_BACKUP'
    : statusCode(status);

// Inside a reader session the connection is authenticated already: 401 is PBS's answer to a chunk
// no downloaded index references (§6.2).
const readerMapper: StatusMapper = (status, _message, path): ErrorCode =>
  status === 401 && path === '/chunk' ? 'CHUNK_NOT_ALLOWED' : statusCode(status);

function snapshotParams(store: string, dir: BackupDir): Record<string, string | number> {
  const ns = namespaceToString(dir.group.ns);
  return {
    store,
    ...(ns === '' ? {} : { ns }),
    'backup-type': dir.group.type,
    'backup-id': dir.group.id,
    'backup-time': dir.time,
  };
}

function indexPath(kind: IndexKind, what: 'index' | 'chunk' | 'close'): string {
  if (kind !== 'dynamic' && kind !== 'fixed') {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `index kind must be dynamic or fixed, got ${String(kind)}`,
    );
  }
  return `/${kind}_${what}`;
}

function unexpected(path: string, value: unknown, expected: string): BurrowError {
  return new BurrowError(
    'REMOTE_ERROR',
    `the server answered ${path} with ${JSON.stringify(value)?.slice(0, 100)}, expected ${expected}`,
    { details: { path } },
  );
}

export class RemoteBackupWriter implements BackupWriter {
  readonly snapshot: BackupDir;
  readonly session: H2Session;
  #finished = false;

  constructor(session: H2Session, snapshot: BackupDir) {
    this.session = session;
    this.snapshot = snapshot;
  }

  get finished(): boolean {
    return this.#finished;
  }

  async previousBackupTime(): Promise<number | undefined> {
    const data = await this.session.getJson('/previous_backup_time', undefined, writerMapper);
    if (data === null || data === undefined) return undefined;
    if (typeof data !== 'number' || !Number.isSafeInteger(data)) {
      throw unexpected('/previous_backup_time', data, 'an epoch time or null');
    }
    return data;
  }

  async downloadPrevious(archiveName: string): Promise<Uint8Array | undefined> {
    try {
      return await this.session.download(
        '/previous',
        { 'archive-name': archiveName },
        writerMapper,
      );
    } catch (error) {
      if (
        error instanceof BurrowError &&
        (error.code === 'NO_PREVIOUS_BACKUP' || error.code === 'NOT_FOUND')
      ) {
        return undefined;
      }
      throw error;
    }
  }

  async createIndex(kind: IndexKind, archiveName: string, size?: number): Promise<number> {
    const params: Record<string, string | number> = { 'archive-name': archiveName };
    if (kind === 'dynamic' && size !== undefined) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `a dynamic index has no declared size (${archiveName})`,
        { details: { archiveName, size } },
      );
    }
    if (size !== undefined) params.size = size;
    const path = indexPath(kind, 'index');
    const wid = await this.session.postJson(path, params, writerMapper);
    if (typeof wid !== 'number' || !Number.isSafeInteger(wid) || wid < 1) {
      throw unexpected(path, wid, 'a writer id');
    }
    return wid;
  }

  async uploadChunk(
    wid: number,
    kind: IndexKind,
    digest: Uint8Array,
    size: number,
    encoded: Uint8Array,
  ): Promise<void> {
    const path = indexPath(kind, 'chunk');
    const hex = toHex(digest);
    const params: QueryParams = {
      wid,
      digest: hex,
      size,
      'encoded-size': encoded.byteLength,
    };
    const answer = await this.session.upload(path, params, encoded, writerMapper);
    if (answer !== hex) throw unexpected(path, answer, `the digest ${hex}`);
  }

  async appendIndex(
    wid: number,
    kind: IndexKind,
    digests: readonly Uint8Array[],
    offsets: readonly number[],
  ): Promise<void> {
    const path = indexPath(kind, 'index');
    if (digests.length !== offsets.length) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `append to writer ${wid}: ${digests.length} digests but ${offsets.length} offsets`,
        { details: { wid, digests: digests.length, offsets: offsets.length } },
      );
    }
    // Appends of one writer must reach the server in order, so the pieces go one after another.
    for (let start = 0; start < digests.length; start += MAX_APPEND_ENTRIES) {
      const end = Math.min(start + MAX_APPEND_ENTRIES, digests.length);
      await this.session.sendJson(
        'PUT',
        path,
        {
          wid,
          'digest-list': digests.slice(start, end).map(toHex),
          'offset-list': offsets.slice(start, end),
        },
        writerMapper,
      );
    }
  }

  async closeIndex(
    wid: number,
    kind: IndexKind,
    chunkCount: number,
    size: number,
    csum: Uint8Array,
  ): Promise<void> {
    await this.session.postJson(
      indexPath(kind, 'close'),
      { wid, 'chunk-count': chunkCount, size, csum: toHex(csum) },
      writerMapper,
    );
  }

  async uploadBlob(fileName: string, encoded: Uint8Array): Promise<void> {
    await this.session.upload(
      '/blob',
      { 'file-name': fileName, 'encoded-size': encoded.byteLength },
      encoded,
      writerMapper,
    );
  }

  async finish(): Promise<void> {
    await this.session.postJson('/finish', undefined, writerMapper);
    this.#finished = true;
  }

  /** Drops the connection; the server removes the snapshot unless finish() succeeded. */
  async close(_reason?: unknown): Promise<void> {
    await this.session.close();
  }
}

export class RemoteBackupReader implements BackupReader {
  readonly snapshot: BackupDir;
  readonly session: H2Session;

  constructor(session: H2Session, snapshot: BackupDir) {
    this.session = session;
    this.snapshot = snapshot;
  }

  download(fileName: string): Promise<Uint8Array> {
    return this.session.download('/download', { 'file-name': fileName }, readerMapper);
  }

  chunk(digest: Uint8Array): Promise<Uint8Array> {
    return this.session.download('/chunk', { digest: toHex(digest) }, readerMapper);
  }

  close(): Promise<void> {
    return this.session.close();
  }
}

/** Start a backup session on the server (§5.1); close() it in a finally. */
export async function openRemoteBackupWriter(
  client: PbsHttpClient,
  o: RemoteBackupWriterOptions,
): Promise<RemoteBackupWriter> {
  if (o.ns !== undefined && !namespaceEquals(o.ns, o.group.ns)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `the group's namespace ${JSON.stringify(namespaceToString(o.group.ns))} is not the session's namespace ${JSON.stringify(namespaceToString(o.ns))}`,
      { details: { ns: namespaceToString(o.ns), groupNs: namespaceToString(o.group.ns) } },
    );
  }
  const dir = backupDir(o.group, o.backupTime);
  const session = await client.upgrade(
    '/api2/json/backup',
    {
      ...snapshotParams(o.store, dir),
      // PBS's client always sends both flags.
      debug: o.debug === true,
      benchmark: o.benchmark === true,
    },
    BACKUP_PROTOCOL,
  );
  return new RemoteBackupWriter(session, dir);
}

/** Open a reader session on a snapshot (§6.1); close() it in a finally. */
export async function openRemoteBackupReader(
  client: PbsHttpClient,
  o: RemoteBackupReaderOptions,
): Promise<RemoteBackupReader> {
  const session = await client.upgrade(
    '/api2/json/reader',
    { ...snapshotParams(o.store, o.dir), ...(o.debug === true ? { debug: true } : {}) },
    READER_PROTOCOL,
  );
  return new RemoteBackupReader(session, o.dir);
}
