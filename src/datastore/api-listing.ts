/**
 * The datastore's contents in the shapes of PBS's API (src/types/api.ts), built as PBS builds
 * them: a snapshot's files from its manifest (plus whatever else lies in the directory), the
 * snapshot list item with comment, verify state, key fingerprint, size, owner and protection,
 * the group list item, and the store's usage and counts. The server's datastore routes answer
 * with these, and the client's local mode shows the same values, so both print alike.
 */
import { statfs } from 'node:fs/promises';
import {
  KEY_FINGERPRINT_KEY,
  MANIFEST_BLOB_NAME,
  type BackupManifest,
} from '../format/manifest.js';
import { formatUpid } from '../format/upid.js';
import type {
  BackupContent,
  DatastoreCounts,
  DatastoreStatus,
  GroupListItem,
  SnapshotListItem,
  TypeCounts,
} from '../types/api.js';
import { formatAuthid, type Authid } from '../types/auth.js';
import { ROOT_NAMESPACE, type BackupDir, type BackupGroup } from '../types/backup.js';
import type { SnapshotInfo } from './backup-info.js';
import type { DataStore } from './datastore.js';
import { parseVerifyState } from './verify-filter.js';

/** The group's owner, or undefined when its owner file is missing or unreadable. */
export async function readOwner(store: DataStore, group: BackupGroup): Promise<Authid | undefined> {
  try {
    return await store.getOwner(group);
  } catch {
    return undefined;
  }
}

/**
 * PBS's read_backup_index: the manifest and the files it lists, then the manifest itself
 * (sign-only when the manifest is signed). Errors name the manifest file.
 */
export async function readBackupIndex(
  store: DataStore,
  dir: BackupDir,
): Promise<{ manifest: BackupManifest; files: BackupContent[] }> {
  const { manifest, raw } = await store.loadManifest(dir);
  const files: BackupContent[] = manifest.files.map((f) => ({
    filename: f.filename,
    'crypt-mode': f.cryptMode,
    size: f.size,
  }));
  files.push({
    filename: MANIFEST_BLOB_NAME,
    'crypt-mode': manifest.signature === null ? 'none' : 'sign-only',
    size: raw.byteLength,
  });
  return { manifest, files };
}

/** PBS's get_all_snapshot_files: the manifest's list plus other archive files in the directory. */
export async function allSnapshotFiles(
  store: DataStore,
  info: SnapshotInfo,
): Promise<{ manifest: BackupManifest; files: BackupContent[] }> {
  const { manifest, files } = await readBackupIndex(store, info.dir);
  const listed = new Set(files.map((f) => f.filename));
  for (const name of info.files) if (!listed.has(name)) files.push({ filename: name });
  return { manifest, files };
}

const FINGERPRINT_RE = /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}$/;

function firstLine(text: string): string | undefined {
  // Rust's str::lines: no line at all for "", otherwise up to the first '\n' (a '\r' before it
  // belongs to the line end).
  if (text === '') return undefined;
  const line = text.split('\n', 1)[0] ?? '';
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

/**
 * The snapshot list item. A snapshot whose manifest cannot be read (unfinished, damaged) is
 * still listed, with the files found in its directory and nothing from the manifest.
 */
export async function snapshotListItem(
  store: DataStore,
  info: SnapshotInfo,
  owner: Authid | undefined,
): Promise<SnapshotListItem> {
  const identity = {
    'backup-type': info.dir.group.type,
    'backup-id': info.dir.group.id,
    'backup-time': info.dir.time,
  };
  const ownerText = owner === undefined ? {} : { owner: formatAuthid(owner) };
  let manifest: BackupManifest;
  let files: BackupContent[];
  try {
    ({ manifest, files } = await allSnapshotFiles(store, info));
  } catch {
    return {
      ...identity,
      files: info.files.map((filename) => ({ filename })),
      ...ownerText,
      protected: info.protected,
    };
  }
  const notes = manifest.unprotected['notes'];
  const comment = typeof notes === 'string' ? firstLine(notes) : undefined;
  let verification: SnapshotListItem['verification'];
  try {
    const state = parseVerifyState(manifest.unprotected['verify_state']);
    if (state !== undefined) verification = { state: state.state, upid: formatUpid(state.upid) };
  } catch {
    // PBS lists the snapshot without a verify state when it cannot parse it.
  }
  const fp = manifest.unprotected[KEY_FINGERPRINT_KEY];
  const fingerprint =
    typeof fp === 'string' && FINGERPRINT_RE.test(fp) ? fp.toLowerCase() : undefined;
  return {
    ...identity,
    ...(comment === undefined ? {} : { comment }),
    ...(verification === undefined ? {} : { verification }),
    ...(fingerprint === undefined ? {} : { fingerprint }),
    files,
    size: files.reduce((sum, f) => sum + (f.size ?? 0), 0),
    ...ownerText,
    protected: info.protected,
  };
}

/**
 * The group list item: the newest finished snapshot gives `last-backup` and `files` (a group
 * with a single snapshot uses that one, finished or not); `comment` is the first line of the
 * group notes.
 */
export async function groupListItem(
  store: DataStore,
  group: BackupGroup,
  owner: Authid | undefined,
): Promise<GroupListItem> {
  const snapshots = await store.listSnapshots(group);
  const last =
    snapshots.length === 1
      ? snapshots[0]
      : [...snapshots].reverse().find((s) => s.finished && s.error === undefined);
  let notes = '';
  try {
    notes = await store.getGroupNotes(group);
  } catch {
    // Notes are decoration: a group whose notes cannot be read is listed without them.
  }
  const comment = firstLine(notes);
  return {
    'backup-type': group.type,
    'backup-id': group.id,
    'last-backup': last?.dir.time ?? 0,
    'backup-count': snapshots.length,
    files: last === undefined ? [] : [...last.files],
    ...(owner === undefined ? {} : { owner: formatAuthid(owner) }),
    ...(comment === undefined ? {} : { comment }),
  };
}

/** The snapshots of one group, oldest first. */
export async function groupSnapshotList(
  store: DataStore,
  group: BackupGroup,
): Promise<SnapshotListItem[]> {
  const owner = await readOwner(store, group);
  const items: SnapshotListItem[] = [];
  for (const info of await store.listSnapshots(group))
    items.push(await snapshotListItem(store, info, owner));
  return items;
}

/** A snapshot's files (PBS's files call): the manifest's list plus the directory's other files. */
export async function snapshotFiles(store: DataStore, dir: BackupDir): Promise<BackupContent[]> {
  return (await allSnapshotFiles(store, await store.snapshotInfo(dir))).files;
}

/**
 * Whether a snapshot list item came from a readable manifest, i.e. the snapshot is finished:
 * only then does it carry a size (PBS's list and Burrow's alike).
 */
export function snapshotIsFinished(item: SnapshotListItem): boolean {
  return item.size !== undefined;
}

/**
 * Usage of the store's file system (statfs, as PBS computes total, used and available) and, when
 * asked, the number of groups and snapshots per type in every namespace.
 */
export async function datastoreStatus(
  store: DataStore,
  options: { counts: boolean },
): Promise<DatastoreStatus> {
  const fs = await statfs(store.base);
  const total = fs.blocks * fs.bsize;
  const status: DatastoreStatus = {
    total,
    used: total - fs.bfree * fs.bsize,
    avail: fs.bavail * fs.bsize,
  };
  if (!options.counts) return status;
  const counts: DatastoreCounts = {};
  for (const ns of await store.listNamespaces(ROOT_NAMESPACE)) {
    for (const group of await store.listGroups(ns)) {
      const c: TypeCounts = (counts[group.type] ??= { groups: 0, snapshots: 0 });
      c.groups++;
      c.snapshots += (await store.listSnapshots(group)).length;
    }
  }
  status.counts = counts;
  return status;
}
