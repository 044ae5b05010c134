/**
 * The file routes of a snapshot (pbs-protocol §8): `download` (a stored file as it is),
 * `download-decoded` (a blob's data or an index's stream), `catalog` (one directory level of the
 * catalog or of a pxar's metadata), `pxar-file-download` (a file from a pxar archive, or a
 * directory as ZIP or tar.zst) and `upload-backup-log` (the client log, once). Reading needs
 * Datastore.Read, or Datastore.Backup and owning the group; the upload is for the owner with
 * Datastore.Backup only. The server has no keys, so decoding refuses encrypted archives.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { Readable, pipeline } from 'node:stream';
import { CompressStream } from 'zstd-napi';
import { errnoOf, pathExists } from '../../../datastore/backup-info.js';
import type { DataStore } from '../../../datastore/datastore.js';
import { BurrowError } from '../../../lib/errors.js';
import { CatalogReader, isCatalogDir, type CatalogEntry } from '../../../format/catalog.js';
import { decodeBlob } from '../../../format/data-blob.js';
import { ENCRYPTED_BLOB_HEADER_SIZE, MAX_BLOB_SIZE } from '../../../format/magic.js';
import {
  CATALOG_NAME,
  CLIENT_LOG_BLOB_NAME,
  archiveTypeOf,
  isArchiveName,
  serverArchiveName,
} from '../../../format/manifest.js';
import type { PxarAccessor, AccessorEntry } from '../../../pxar/accessor.js';
import type { EntryKind } from '../../../pxar/format.js';
import type { BackupDir } from '../../../types/backup.js';
import { formatSnapshot } from '../../../types/backup.js';
import {
  booleanParam,
  optionalString,
  stringParam,
  rawReply,
  type ParamSchema,
  type Route,
  type RouteContext,
} from '../route.js';
import { zipStream, type ZipEntry } from '../zip-writer.js';
import {
  ARCHIVE_NAME_PARAM,
  SNAPSHOT_PARAMS,
  openCheckedSnapshot,
  ownerRulePermission,
  type OwnerRule,
} from './datastore-common.js';
import { IndexArchive, openPxar, pxarArchiveNames, refuseEncrypted } from './datastore-archive.js';
import { readBackupIndex } from '../../../datastore/api-listing.js';
import { tarStream, type TarEntry } from './datastore-tar-writer.js';

const BASE = '/admin/datastore/{store}';
const OCTET_STREAM = 'application/octet-stream';
/** The largest blob file there can be: the biggest payload plus the biggest header. */
const MAX_BLOB_FILE_SIZE = MAX_BLOB_SIZE + ENCRYPTED_BLOB_HEADER_SIZE;
const SLASH = 0x2f;

/** Reading a snapshot's files: Datastore.Read, or Datastore.Backup and owning the group. */
const READ_OR_OWNER: OwnerRule = {
  full: ['Datastore.Read'],
  partial: ['Datastore.Backup'],
  operation: 'read',
};

/** A byte stream for a raw reply (the iterables yield Uint8Arrays, not objects). */
function byteStream(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Readable {
  return Readable.from(source, { objectMode: false });
}

function logDownload(ctx: RouteContext, store: DataStore, dir: BackupDir, name: string): void {
  ctx.deps.log.info(
    `Download ${name} from datastore '${store.name}' (${formatSnapshot(dir)}/${name})`,
  );
}

/** The client log is the backup's owner's to add, with Datastore.Backup; nobody else's. */
const OWNER_ONLY: OwnerRule = { full: [], partial: ['Datastore.Backup'], operation: 'write' };

/** A snapshot and one of its files, by the name the manifest lists. */
const SNAPSHOT_FILE_PARAMS: ParamSchema = {
  ...SNAPSHOT_PARAMS,
  'file-name': { ...ARCHIVE_NAME_PARAM, description: 'Raw file name.' },
};

const download: Route = {
  method: 'GET',
  path: `${BASE}/download`,
  description: 'Download single raw file from backup snapshot.',
  parameters: SNAPSHOT_FILE_PARAMS,
  permission: ownerRulePermission(READ_OR_OWNER),
  raw: 'download',
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, READ_OR_OWNER);
    const name = stringParam(ctx, 'file-name');
    const path = store.archivePath(dir, name);
    let handle;
    try {
      // O_NONBLOCK: a FIFO planted in the snapshot must not hang the request.
      handle = await open(
        path,
        fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK,
      );
    } catch (error) {
      const code = errnoOf(error);
      throw new BurrowError(
        code === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_ARGUMENT',
        `File open failed: ${code ?? String(error)}`,
        { details: { filename: name, snapshot: formatSnapshot(dir) } },
      );
    }
    try {
      if (!(await handle.stat()).isFile()) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `File open failed: ${name} is not a regular file`,
        );
      }
    } catch (error) {
      await handle.close();
      throw error;
    }
    logDownload(ctx, store, dir, name);
    return rawReply(OCTET_STREAM, handle.createReadStream());
  },
};

const downloadDecoded: Route = {
  method: 'GET',
  path: `${BASE}/download-decoded`,
  description:
    "Download single decoded file from backup snapshot. Only works if it's not encrypted.",
  parameters: SNAPSHOT_FILE_PARAMS,
  permission: ownerRulePermission(READ_OR_OWNER),
  raw: 'download',
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, READ_OR_OWNER);
    const name = stringParam(ctx, 'file-name');
    if (!isArchiveName(name)) archiveTypeOf(name); // throws INVALID_ARCHIVE_NAME
    const { manifest, files } = await readBackupIndex(store, dir);
    refuseEncrypted(files, name);
    logDownload(ctx, store, dir, name);
    if (archiveTypeOf(name) === 'blob') {
      return rawReply(OCTET_STREAM, decodeBlob(await store.loadBlob(dir, name)));
    }
    const archive = await IndexArchive.open(store, dir, manifest, name);
    return rawReply(OCTET_STREAM, byteStream(archive.stream()));
  },
};

/** Base64 (standard alphabet, padding optional) as PBS decodes `filepath`. */
export function decodeBase64Path(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.replace(/=+$/, '').length % 4 === 1) {
    throw new BurrowError('INVALID_ARGUMENT', 'base64 decoding of path failed - invalid input', {
      details: { filepath: text.slice(0, 200) },
    });
  }
  return new Uint8Array(Buffer.from(text, 'base64'));
}

/** The catalog's `filepath`: base64 of a path, or `root` / `/` for the root. */
function decodeCatalogPath(text: string): Uint8Array {
  return text === 'root' || text === '/' ? Uint8Array.of(SLASH) : decodeBase64Path(text);
}

/** PBS's ArchiveEntry. */
export interface ArchiveEntry {
  filepath: string;
  text: string;
  type: string;
  leaf: boolean;
  size?: number;
  mtime?: number;
}

function archiveEntry(
  path: Uint8Array,
  type: CatalogEntry['type'] | 'v',
  file?: { size: number; mtime: number },
): ArchiveEntry {
  const last = path.subarray(path.lastIndexOf(SLASH) + 1);
  return {
    filepath: Buffer.from(path).toString('base64'),
    text: Buffer.from(last).toString('utf8'),
    type,
    leaf: type !== 'd' && type !== 'v',
    ...(file === undefined ? {} : { size: file.size, mtime: file.mtime }),
  };
}

function joinBytes(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** PBS's list_dir_contents over the catalog: one directory level. */
async function listCatalogDir(reader: CatalogReader, path: Uint8Array): Promise<ArchiveEntry[]> {
  const isRoot = path.byteLength === 1 && path[0] === SLASH;
  const dir = await reader.lookup(isRoot ? '' : path);
  if (dir === undefined) {
    throw new BurrowError(
      'NOT_FOUND',
      `path ${JSON.stringify(Buffer.from(path).toString('utf8'))} not found in catalog`,
    );
  }
  if (!isCatalogDir(dir)) {
    throw new BurrowError('INVALID_ARGUMENT', 'parent is not a directory - internal error');
  }
  const prefix = path[0] === SLASH ? path.subarray(1) : path;
  return (await reader.listDirectory(dir)).map((entry) => {
    const full = joinBytes(prefix, Uint8Array.of(SLASH), entry.name);
    return archiveEntry(
      full,
      entry.type,
      entry.type === 'f' ? { size: entry.size ?? 0, mtime: entry.mtime ?? 0 } : undefined,
    );
  });
}

const CATALOG_TYPE: Readonly<Record<EntryKind['kind'], CatalogEntry['type']>> = {
  directory: 'd',
  file: 'f',
  symlink: 'l',
  hardlink: 'h',
  'block-device': 'b',
  'char-device': 'c',
  fifo: 'p',
  socket: 's',
};

/** PBS's pxar_metadata_catalog_lookup: one directory level of a pxar archive. */
async function listPxarDir(accessor: PxarAccessor, path: Uint8Array): Promise<ArchiveEntry[]> {
  const dir = await accessor.lookup(path);
  const shown = JSON.stringify(Buffer.from(path).toString('utf8'));
  if (dir === undefined) {
    throw new BurrowError('NOT_FOUND', `lookup failed - error opening ${shown}`);
  }
  if (dir.body.kind !== 'directory') {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `expected directory entry, got entry kind '${dir.body.kind}'`,
    );
  }
  return (await accessor.readDirectory(dir)).map((entry) => {
    const full = joinBytes(Uint8Array.of(SLASH), entry.path);
    const type = CATALOG_TYPE[entry.body.kind];
    return archiveEntry(
      full,
      type,
      entry.body.kind === 'file'
        ? { size: entry.body.size, mtime: entry.metadata?.stat.mtime.secs ?? 0 }
        : undefined,
    );
  });
}

const catalog: Route = {
  method: 'GET',
  path: `${BASE}/catalog`,
  description: 'Get the entries of the given path of the catalog',
  parameters: {
    ...SNAPSHOT_PARAMS,
    filepath: { type: 'string', description: 'Base64 encoded path.' },
    'archive-name': { ...ARCHIVE_NAME_PARAM, optional: true },
  },
  permission: ownerRulePermission(READ_OR_OWNER),
  async handler(ctx): Promise<ArchiveEntry[]> {
    const { store, dir } = await openCheckedSnapshot(ctx, READ_OR_OWNER);
    const given = optionalString(ctx, 'archive-name');
    const name = given === undefined ? CATALOG_NAME : serverArchiveName(given);
    const { manifest, files } = await readBackupIndex(store, dir);
    refuseEncrypted(files, name);
    const path = decodeCatalogPath(stringParam(ctx, 'filepath'));
    if (given === undefined) {
      const archive = await IndexArchive.open(store, dir, manifest, name);
      return listCatalogDir(new CatalogReader(archive, name), path);
    }
    // Only the metadata is needed: a split archive's payload stays closed.
    const names = pxarArchiveNames(name, manifest);
    refuseEncrypted(files, names.archive);
    const accessor = await openPxar(store, dir, manifest, names, false);
    return listPxarDir(accessor, path);
  },
};

/** The entries below `start` with their paths relative to the parent of `start`. */
async function* walk(accessor: PxarAccessor, dir: AccessorEntry): AsyncGenerator<AccessorEntry> {
  for (const child of await accessor.readDirectory(dir)) {
    yield child;
    if (child.body.kind === 'directory') yield* walk(accessor, child);
  }
}

/**
 * What a directory download holds: the directory itself (unless it is the archive's root, which
 * has no name) and everything below it.
 */
async function* downloadedEntries(
  accessor: PxarAccessor,
  start: AccessorEntry,
): AsyncGenerator<AccessorEntry> {
  if (start.path.byteLength > 0) yield start;
  yield* walk(accessor, start);
}

/** `path` relative to the parent directory of the downloaded directory. */
function relativeTo(prefix: Uint8Array): (path: Uint8Array) => Uint8Array {
  return (path) => (prefix.byteLength === 0 ? path : path.subarray(prefix.byteLength + 1));
}

function parentOf(path: Uint8Array): Uint8Array {
  const slash = path.lastIndexOf(SLASH);
  return slash < 0 ? new Uint8Array(0) : path.subarray(0, slash);
}

/** ZIP entries as PBS's create_zip makes them: directories, files, hardlinks as files, symlinks. */
async function* zipEntries(accessor: PxarAccessor, start: AccessorEntry): AsyncGenerator<ZipEntry> {
  const rel = relativeTo(parentOf(start.path));
  for await (const entry of downloadedEntries(accessor, start)) {
    const path = rel(entry.path);
    const body = entry.body;
    const stat = entry.metadata?.stat;
    if (body.kind === 'directory' && stat !== undefined) {
      yield { path, kind: 'directory', mode: stat.mode, mtime: stat.mtime.secs };
    } else if (body.kind === 'file' && stat !== undefined) {
      yield {
        path,
        kind: 'file',
        mode: stat.mode,
        mtime: stat.mtime.secs,
        size: body.size,
        content: accessor.readFile(entry),
      };
    } else if (body.kind === 'hardlink') {
      const target = await accessor.resolveHardlink(entry);
      const targetStat = target.metadata?.stat;
      if (target.body.kind !== 'file' || targetStat === undefined) continue;
      yield {
        path,
        kind: 'file',
        mode: targetStat.mode,
        mtime: targetStat.mtime.secs,
        size: target.body.size,
        content: accessor.readFile(target),
      };
    } else if (body.kind === 'symlink' && stat !== undefined) {
      yield {
        path,
        kind: 'symlink',
        mode: stat.mode,
        mtime: stat.mtime.secs,
        content: [body.target],
      };
    }
    // Devices, FIFOs and sockets have no place in a ZIP file.
  }
}

function startsWithDir(path: Uint8Array, dir: Uint8Array): boolean {
  if (dir.byteLength === 0) return true;
  return (
    path.byteLength > dir.byteLength &&
    path[dir.byteLength] === SLASH &&
    Buffer.compare(path.subarray(0, dir.byteLength), dir) === 0
  );
}

/**
 * tar entries as PBS's create_tar makes them. A hardlink to a file inside the downloaded
 * directory stays a hardlink; one to a file outside it carries the content the first time and
 * links to that copy afterwards.
 */
async function* tarEntries(accessor: PxarAccessor, start: AccessorEntry): AsyncGenerator<TarEntry> {
  const rel = relativeTo(parentOf(start.path));
  const outside = new Map<string, Uint8Array>();
  for await (const entry of downloadedEntries(accessor, start)) {
    const path = rel(entry.path);
    const body = entry.body;
    const stat = entry.metadata?.stat;
    const meta = (s: { mode: number; uid: number; gid: number; mtime: { secs: number } }) => ({
      mode: s.mode,
      uid: s.uid,
      gid: s.gid,
      mtime: s.mtime.secs,
    });
    if (body.kind === 'hardlink') {
      const target = await accessor.resolveHardlink(entry);
      const targetStat = target.metadata?.stat;
      if (target.body.kind !== 'file' || targetStat === undefined) continue;
      if (startsWithDir(body.target, start.path)) {
        yield { path, kind: 'hardlink', ...meta(targetStat), linkTarget: rel(body.target) };
        continue;
      }
      const key = Buffer.from(body.target).toString('latin1');
      const first = outside.get(key);
      if (first !== undefined) {
        yield { path, kind: 'hardlink', ...meta(targetStat), linkTarget: first };
      } else {
        outside.set(key, path);
        yield {
          path,
          kind: 'file',
          ...meta(targetStat),
          size: target.body.size,
          content: accessor.readFile(target),
        };
      }
      continue;
    }
    if (stat === undefined) continue;
    switch (body.kind) {
      case 'directory':
        yield { path, kind: 'directory', ...meta(stat) };
        break;
      case 'file':
        yield {
          path,
          kind: 'file',
          ...meta(stat),
          size: body.size,
          content: accessor.readFile(entry),
        };
        break;
      case 'symlink':
        if (body.target.byteLength > 0) {
          yield { path, kind: 'symlink', ...meta(stat), linkTarget: body.target };
        }
        break;
      case 'fifo':
        yield { path, kind: 'fifo', ...meta(stat) };
        break;
      case 'block-device':
      case 'char-device':
        yield {
          path,
          kind: body.kind,
          ...meta(stat),
          devMajor: body.major,
          devMinor: body.minor,
        };
        break;
      case 'socket':
        break;
    }
  }
}

const pxarFileDownload: Route = {
  method: 'GET',
  path: `${BASE}/pxar-file-download`,
  description:
    "Download single file from pxar file of a backup snapshot. Only works if it's not encrypted.",
  parameters: {
    ...SNAPSHOT_PARAMS,
    filepath: { type: 'string', description: 'Base64 encoded path' },
    tar: { type: 'boolean', optional: true, description: 'Download as .tar.zst' },
    'archive-name': { ...ARCHIVE_NAME_PARAM, optional: true },
  },
  permission: ownerRulePermission(READ_OR_OWNER),
  raw: 'download',
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, READ_OR_OWNER);
    const decoded = decodeBase64Path(stringParam(ctx, 'filepath'));
    const given = optionalString(ctx, 'archive-name');
    let archiveName: string;
    let filePath: Uint8Array;
    if (given !== undefined) {
      archiveName = given;
      filePath = decoded;
    } else {
      const components = decoded[0] === SLASH ? decoded.subarray(1) : decoded;
      const slash = components.indexOf(SLASH);
      archiveName = Buffer.from(slash < 0 ? components : components.subarray(0, slash)).toString(
        'utf8',
      );
      filePath = slash < 0 ? Uint8Array.of(SLASH) : components.subarray(slash + 1);
    }
    const name = serverArchiveName(archiveName);
    const { manifest, files } = await readBackupIndex(store, dir);
    refuseEncrypted(files, name);
    const names = pxarArchiveNames(name, manifest);
    for (const each of [names.archive, names.payload]) {
      if (each !== undefined) refuseEncrypted(files, each);
    }
    const accessor = await openPxar(store, dir, manifest, names, true);
    const entry = await accessor.lookup(filePath);
    if (entry === undefined) {
      throw new BurrowError(
        'NOT_FOUND',
        `error opening ${JSON.stringify(Buffer.from(filePath).toString('utf8'))}`,
      );
    }
    switch (entry.body.kind) {
      case 'file':
        return rawReply(OCTET_STREAM, byteStream(accessor.readFile(entry)));
      case 'hardlink': {
        const target = await accessor.resolveHardlink(entry);
        return rawReply(OCTET_STREAM, byteStream(accessor.readFile(target)));
      }
      case 'directory': {
        if (booleanParam(ctx, 'tar', false)) {
          const tar = byteStream(tarStream(tarEntries(accessor, entry)));
          const zst = new CompressStream({ compressionLevel: 3 });
          // An error on either side destroys both, so the response ends in an error too.
          pipeline(tar, zst, () => undefined);
          return rawReply(OCTET_STREAM, zst);
        }
        return rawReply(OCTET_STREAM, byteStream(zipStream(zipEntries(accessor, entry))));
      }
      case 'symlink':
      case 'block-device':
      case 'char-device':
      case 'fifo':
      case 'socket':
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `cannot download file of type ${entry.body.kind}`,
        );
    }
  },
};

/** The request body, refused once it grows past `limit` bytes. */
async function readBody(request: IncomingMessage, limit: number): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > limit) {
      request.destroy();
      throw new BurrowError(
        'BLOB_TOO_LARGE',
        `upload is larger than the ${limit}-byte limit of a blob file`,
        { details: { limit } },
      );
    }
    parts.push(chunk);
  }
  return new Uint8Array(Buffer.concat(parts));
}

const uploadBackupLog: Route = {
  method: 'POST',
  path: `${BASE}/upload-backup-log`,
  description: "Upload the client backup log file into a backup snapshot ('client.log.blob').",
  parameters: SNAPSHOT_PARAMS,
  permission: { kind: 'handler', why: 'Only the backup creator/owner is allowed to do this.' },
  raw: 'upload',
  async handler(ctx) {
    const { store, dir } = await openCheckedSnapshot(ctx, OWNER_ONLY);
    await store.snapshotInfo(dir); // NOT_FOUND for a snapshot that does not exist
    if (await pathExists(store.archivePath(dir, CLIENT_LOG_BLOB_NAME))) {
      throw new BurrowError('ALREADY_EXISTS', 'backup already contains a log.');
    }
    ctx.deps.log.info(
      `Upload backup log to datastore '${store.name}' ${formatSnapshot(dir)}/${CLIENT_LOG_BLOB_NAME}`,
    );
    const raw = await readBody(ctx.request, MAX_BLOB_FILE_SIZE);
    // writeBlob checks the blob's header and CRC before anything is written.
    await store.writeBlob(dir, CLIENT_LOG_BLOB_NAME, raw);
    return null;
  },
};

export function fileRoutes(): Route[] {
  return [download, downloadDecoded, catalog, pxarFileDownload, uploadBackupLog];
}
