/**
 * The datastore's contents in the shapes of PBS's API (src/types/api.ts): group and snapshot
 * lists, a snapshot's files, the store's usage and counts. The server's datastore routes answer
 * with these, and the client's local mode shows the same values, so both print alike.
 */
import { statfs } from 'node:fs/promises';
import { KEY_FINGERPRINT_KEY, MANIFEST_BLOB_NAME } from '../format/manifest.js';
import { formatUpid } from '../format/upid.js';
import type {
  BackupContent,
  DatastoreCounts,
  DatastoreStatus,
  GroupListItem,
  SnapshotListItem,
  TypeCounts,
} from '../types/api.js';
import { formatAuthid } from '../types/auth.js';
import { ROOT_NAMESPACE, type BackupDir, type BackupGroup } from '../types/backup.js';
import type { CryptMode } from '../types/crypt-mode.js';
import type { SnapshotInfo } from './backup-info.js';
import type { DataStore } from './datastore.js';
import { parseVerifyState } from './verify-filter.js';

/** The group's owner as text, or undefined when its owner file is missing or unreadable. */
export async function ownerText(store: DataStore, group: BackupGroup): Promise<string | undefined> {
  try {
    return formatAuthid(await store.getOwner(group));
  } catch {
    return undefined;
  }
}

const firstLine = (text: string): string => text.split('\n', 1)[0] ?? '';

/** A group with its newest finished snapshot, as PBS's group list shows it. */
export async function groupListItem(store: DataStore, group: BackupGroup): Promise<GroupListItem> {
  const snapshots = await store.listSnapshots(group);
  const newest = [...snapshots].reverse().find((s) => s.finished && s.error === undefined);
  const owner = await ownerText(store, group);
  let comment = '';
  try {
    comment = firstLine(await store.getGroupNotes(group));
  } catch {
    // Notes are decoration: a group whose notes cannot be read is still listed.
  }
  return {
    'backup-type': group.type,
    'backup-id': group.id,
    ...(newest === undefined ? {} : { 'last-backup': newest.dir.time }),
    'backup-count': snapshots.length,
    files: newest === undefined ? [] : [...newest.files].sort(),
    ...(owner === undefined ? {} : { owner }),
    ...(comment === '' ? {} : { comment }),
  };
}

/** PBS shows the manifest as sign-only when it carries a signature. */
const manifestCryptMode = (signature: string | null): CryptMode =>
  signature === null ? 'none' : 'sign-only';

interface ManifestListing {
  files: BackupContent[];
  notes: string;
  verify: unknown;
  fingerprint?: string;
}

/** The files of a finished snapshot from its manifest, the manifest itself first (as PBS). */
async function manifestListing(store: DataStore, dir: BackupDir): Promise<ManifestListing> {
  const { manifest, raw } = await store.loadManifest(dir);
  const files: BackupContent[] = [
    {
      filename: MANIFEST_BLOB_NAME,
      'crypt-mode': manifestCryptMode(manifest.signature),
      size: raw.byteLength,
    },
    ...manifest.files.map((f) => ({
      filename: f.filename,
      'crypt-mode': f.cryptMode,
      size: f.size,
    })),
  ];
  const notes = manifest.unprotected['notes'];
  const fingerprint = manifest.unprotected[KEY_FINGERPRINT_KEY];
  return {
    files,
    notes: typeof notes === 'string' ? notes : '',
    verify: manifest.unprotected['verify_state'],
    ...(typeof fingerprint === 'string' ? { fingerprint } : {}),
  };
}

/**
 * A snapshot as PBS lists it. An unfinished snapshot, or one whose manifest cannot be read, lists
 * the files of its directory without sizes (PBS does the same), so one damaged manifest hides
 * neither the snapshot nor the others; whether a snapshot is finished shows in whether its file
 * list names the manifest.
 */
export async function snapshotListItem(
  store: DataStore,
  info: SnapshotInfo,
  owner: string | undefined,
): Promise<SnapshotListItem> {
  const item: SnapshotListItem = {
    'backup-type': info.dir.group.type,
    'backup-id': info.dir.group.id,
    'backup-time': info.dir.time,
    files: info.files
      .filter((filename) => filename !== MANIFEST_BLOB_NAME)
      .map((filename) => ({ filename })),
    ...(owner === undefined ? {} : { owner }),
    protected: info.protected,
  };
  if (!info.finished || info.error !== undefined) return item;
  let listing: ManifestListing;
  try {
    listing = await manifestListing(store, info.dir);
  } catch {
    return item;
  }
  item.files = listing.files;
  item.size = listing.files.reduce((sum, f) => sum + (f.size ?? 0), 0);
  const comment = firstLine(listing.notes);
  if (comment !== '') item.comment = comment;
  const verify = parseVerifyState(listing.verify);
  if (verify !== undefined)
    item.verification = { state: verify.state, upid: formatUpid(verify.upid) };
  if (listing.fingerprint !== undefined) item.fingerprint = listing.fingerprint;
  return item;
}

/** The snapshots of one group, oldest first. */
export async function groupSnapshotList(
  store: DataStore,
  group: BackupGroup,
): Promise<SnapshotListItem[]> {
  const owner = await ownerText(store, group);
  const items: SnapshotListItem[] = [];
  for (const info of await store.listSnapshots(group))
    items.push(await snapshotListItem(store, info, owner));
  return items;
}

/**
 * A snapshot's files: from the manifest when it is finished (with sizes and crypt modes), else
 * the names in its directory.
 */
export async function snapshotFiles(store: DataStore, dir: BackupDir): Promise<BackupContent[]> {
  const info = await store.snapshotInfo(dir);
  if (info.finished) return (await manifestListing(store, dir)).files;
  return info.files.map((filename) => ({ filename }));
}

/** Whether a snapshot list item came from a readable manifest (the snapshot is finished). */
export function snapshotIsFinished(item: SnapshotListItem): boolean {
  return item.files.some((f) => f.filename === MANIFEST_BLOB_NAME);
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
