/**
 * Reading the backup tree of a datastore (pbs-formats §1, §6.4–§6.6): child namespaces, groups,
 * snapshots and what a snapshot directory holds. The tree may hold anything (names that do not
 * parse, a file where a directory belongs, a directory that cannot be read), and none of that may
 * break a listing: entries starting with '.' and `lost+found` are ignored, entries of the wrong
 * kind or with names that do not parse are skipped, and a snapshot whose directory cannot be read
 * is still listed, with the reason in `error`.
 */
import type { Dirent } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BurrowError } from '../lib/errors.js';
import { MANIFEST_BLOB_NAME } from '../format/manifest.js';
import type { BackupDir, BackupGroup, BackupNamespace } from '../types/backup.js';
import {
  BACKUP_TYPES,
  SAFE_ID_RE,
  compareGroups,
  formatSnapshot,
  groupPath,
  namespaceChild,
  namespacePath,
  parseBackupTime,
  snapshotPath,
} from '../types/backup.js';

/** What a snapshot directory holds (PBS's BackupInfo). */
export interface SnapshotInfo {
  dir: BackupDir;
  /** Absolute path of the snapshot directory. */
  path: string;
  /** The snapshot has its manifest `index.json.blob` (a regular file): the backup finished. */
  finished: boolean;
  /** `.protected` exists in the snapshot directory. */
  protected: boolean;
  /** Regular files named `*.fidx`, `*.didx` or `*.blob` (manifest included), sorted. */
  files: string[];
  /**
   * Set when the directory could not be read: `files` is then empty and `finished`/`protected`
   * are what could be seen without listing it. Prune leaves such a snapshot alone.
   */
  error?: string;
}

/** The empty marker file of a protected snapshot. */
export const PROTECTED_MARKER = '.protected';
/** `<group>/owner`: the owning Authid and a newline. */
export const OWNER_FILE = 'owner';
/** `<group>/notes`: optional plain-text group notes. */
export const GROUP_NOTES_FILE = 'notes';

const ARCHIVE_FILE_RE = /^.*\.(?:[fd]idx|blob)$/s;

/** Whether a snapshot-directory entry counts as an archive file in listings (§6.6). */
export function isArchiveFileName(name: string): boolean {
  return ARCHIVE_FILE_RE.test(name);
}

export function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

export function fsError(error: unknown, action: string, path: string): BurrowError {
  if (error instanceof BurrowError) return error;
  const code = errnoOf(error);
  const reason = code ?? (error instanceof Error ? error.message : String(error));
  return new BurrowError(
    code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
    `cannot ${action} ${path}: ${reason}`,
    {
      details: { path, errnoName: code },
      cause: error,
    },
  );
}

/** Whether `path` exists (without following a final symlink). Errors other than ENOENT throw. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return false;
    throw fsError(error, 'stat', path);
  }
}

/** Whether `path` is a directory (not following a final symlink). */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return false;
    throw fsError(error, 'stat', path);
  }
}

/** Directory entries, or undefined when the directory is missing. Other errors throw. */
async function entriesOf(path: string): Promise<Dirent[] | undefined> {
  try {
    return await readdir(path, { withFileTypes: true });
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return undefined;
    throw fsError(error, 'list', path);
  }
}

const isHidden = (name: string): boolean => name.startsWith('.') || name === 'lost+found';

/** The backup time a snapshot directory name stands for, or undefined if it is not one. */
export function snapshotTimeOfName(name: string): number | undefined {
  if (name.length !== 20 || !name.endsWith('Z')) return undefined;
  try {
    return parseBackupTime(name);
  } catch {
    return undefined;
  }
}

const compareComponents = (a: BackupNamespace, b: BackupNamespace): number => {
  const n = Math.min(a.components.length, b.components.length);
  for (let i = 0; i < n; i++) {
    const x = a.components[i] ?? '';
    const y = b.components[i] ?? '';
    if (x !== y) return x < y ? -1 : 1;
  }
  return a.components.length - b.components.length;
};

/** Namespace order for listings: depth-first tree order, parents before their children. */
export function compareNamespaces(a: BackupNamespace, b: BackupNamespace): number {
  return compareComponents(a, b);
}

/**
 * The direct child namespaces of `ns` (directories `<ns>/ns/<name>` whose names are valid
 * components and keep the namespace within depth and length limits), sorted.
 */
export async function listChildNamespaces(
  base: string,
  ns: BackupNamespace,
): Promise<BackupNamespace[]> {
  const dir = join(base, namespacePath(ns), 'ns');
  const entries = (await entriesOf(dir)) ?? [];
  const children: BackupNamespace[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory() || isHidden(entry.name)) continue;
    try {
      children.push(namespaceChild(ns, entry.name));
    } catch {
      // Not a namespace we could name (bad component, too deep, too long): not part of the tree.
    }
  }
  return children.sort(compareNamespaces);
}

/** The groups of one namespace (not recursive), sorted as PBS lists them (compareGroups). */
export async function listGroupsIn(base: string, ns: BackupNamespace): Promise<BackupGroup[]> {
  const nsDir = join(base, namespacePath(ns));
  const groups: BackupGroup[] = [];
  for (const type of BACKUP_TYPES) {
    const entries = await entriesOf(join(nsDir, type));
    if (entries === undefined) continue;
    for (const entry of entries) {
      if (!entry.isDirectory() || isHidden(entry.name) || !SAFE_ID_RE.test(entry.name)) continue;
      groups.push({ ns, type, id: entry.name });
    }
  }
  return groups.sort(compareGroups);
}

/** The snapshot times present in a group directory (directories with valid time names), unsorted. */
export async function listSnapshotTimes(
  base: string,
  group: BackupGroup,
): Promise<number[] | undefined> {
  const entries = await entriesOf(join(base, groupPath(group)));
  if (entries === undefined) return undefined;
  const times: number[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory()) continue;
    const time = snapshotTimeOfName(entry.name);
    if (time !== undefined) times.push(time);
  }
  return times;
}

/** Best-effort existence check for listings: an error reads as "not there". */
async function seen(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Read one snapshot directory. NOT_FOUND when it does not exist (or is not a directory); a
 * directory that exists but cannot be listed gives an info with `error` set.
 */
export async function readSnapshotInfo(base: string, dir: BackupDir): Promise<SnapshotInfo> {
  const path = join(base, snapshotPath(dir));
  let entries: Dirent[];
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch (error) {
    const code = errnoOf(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new BurrowError(
        'NOT_FOUND',
        `snapshot ${formatSnapshot(dir)} does not exist (${path})`,
        {
          details: { path, snapshot: formatSnapshot(dir) },
          cause: error,
        },
      );
    }
    return {
      dir,
      path,
      finished: await seen(join(path, MANIFEST_BLOB_NAME)),
      protected: await seen(join(path, PROTECTED_MARKER)),
      files: [],
      error: fsError(error, 'list snapshot directory', path).message,
    };
  }
  const files: string[] = [];
  let isProtected = false;
  for (const entry of entries) {
    if (entry.name === PROTECTED_MARKER) isProtected = true;
    else if (entry.isFile() && isArchiveFileName(entry.name)) files.push(entry.name);
  }
  files.sort();
  return { dir, path, finished: files.includes(MANIFEST_BLOB_NAME), protected: isProtected, files };
}

/**
 * Every snapshot of a group, oldest first; undefined when the group directory does not exist.
 * A snapshot removed while we list it is left out.
 */
export async function listSnapshotInfos(
  base: string,
  group: BackupGroup,
): Promise<SnapshotInfo[] | undefined> {
  const times = await listSnapshotTimes(base, group);
  if (times === undefined) return undefined;
  times.sort((a, b) => a - b);
  const infos: SnapshotInfo[] = [];
  for (const time of times) {
    try {
      infos.push(await readSnapshotInfo(base, { group, time }));
    } catch (error) {
      if (error instanceof BurrowError && error.code === 'NOT_FOUND') continue;
      throw error;
    }
  }
  return infos;
}
