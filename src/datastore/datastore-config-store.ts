/**
 * `$BURROW_CONFIG_DIR/datastore.cfg` on disk (pbs-formats §10.1): reading it (a missing file is an
 * empty configuration), and changing it under the config lock `$BURROW_CONFIG_DIR/.datastore.lck`
 * with an atomic replace (mode 0640, fsync), as PBS does with /etc/proxmox-backup. Readers take no
 * lock: the file is only ever replaced by rename, so a reader sees the old or the new content.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic-write.js';
import type { BurrowDirs } from '../lib/dirs.js';
import { datastoreConfigPath } from '../lib/dirs.js';
import { BurrowError, withFile } from '../lib/errors.js';
import type { DatastoreConfigEntry } from '../format/datastore-config.js';
import { parseDatastoreConfig, writeDatastoreConfig } from '../format/datastore-config.js';
import { sectionConfigDigest } from '../format/section-config.js';
import { datastoreFileOwner } from './file-owner.js';
import type { LockGuard } from './lock-file.js';
import { lockFile } from './lock-file.js';

/** The config lock's file name inside the config directory. */
export const DATASTORE_CONFIG_LOCK_NAME = '.datastore.lck';
/** Mode of datastore.cfg (PBS: root:backup 0640). */
export const DATASTORE_CONFIG_MODE = 0o640;
/** How long a writer waits for the config lock (PBS's default lock timeout). */
export const DATASTORE_CONFIG_LOCK_TIMEOUT_MS = 10_000;

/** Datastore names: a safe ID of 3..32 characters (the section ID of datastore.cfg). */
export const DATASTORE_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{2,31}$/;

export function isDatastoreName(name: string): boolean {
  return DATASTORE_NAME_RE.test(name);
}

export function checkDatastoreName(name: string): void {
  if (!isDatastoreName(name)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `invalid datastore name ${JSON.stringify(name.slice(0, 80))}: expected 3..32 characters matching ${DATASTORE_NAME_RE.source.replace('{2,31}', '*')}`,
      { details: { name } },
    );
  }
}

export interface DatastoreConfigSnapshot {
  readonly entries: DatastoreConfigEntry[];
  /** SHA-256 hex of the raw file (of '' when the file is missing): for optimistic concurrency. */
  readonly digest: string;
}

export const datastoreConfigLockPath = (dirs: BurrowDirs): string =>
  join(dirs.configDir, DATASTORE_CONFIG_LOCK_NAME);

/** Read datastore.cfg; a missing file is an empty configuration. Errors name the file. */
export async function readDatastoreConfig(dirs: BurrowDirs): Promise<DatastoreConfigSnapshot> {
  const path = datastoreConfigPath(dirs);
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { entries: [], digest: sectionConfigDigest('') };
    throw new BurrowError('IO_ERROR', `cannot read ${path}: ${code ?? String(error)}`, {
      details: { path, errnoName: code },
      cause: error,
    });
  }
  try {
    return { entries: parseDatastoreConfig(raw), digest: sectionConfigDigest(raw) };
  } catch (error) {
    throw withFile(error, path);
  }
}

/** Take the config lock (exclusive, waiting up to 10 s). */
export function lockDatastoreConfig(dirs: BurrowDirs): Promise<LockGuard> {
  return lockFile(datastoreConfigLockPath(dirs), {
    exclusive: true,
    timeoutMs: DATASTORE_CONFIG_LOCK_TIMEOUT_MS,
    what: 'datastore config',
  });
}

/**
 * Replace datastore.cfg atomically. The caller holds the config lock. The file stays the
 * writer's (root's), with the datastore user's group when there is one, so that user's daemon
 * can read it (PBS: root:backup 0640).
 */
export async function writeDatastoreConfigFile(
  dirs: BurrowDirs,
  entries: readonly DatastoreConfigEntry[],
): Promise<void> {
  const path = datastoreConfigPath(dirs);
  const text = writeDatastoreConfig(entries);
  const group = datastoreFileOwner()?.gid;
  try {
    await writeFileAtomic(path, text, {
      fsync: true,
      mode: DATASTORE_CONFIG_MODE,
      // uid -1: chown leaves the owner as it is.
      owner: group === undefined ? undefined : { uid: -1, gid: group },
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new BurrowError('IO_ERROR', `cannot write ${path}: ${code ?? String(error)}`, {
      details: { path, errnoName: code },
      cause: error,
    });
  }
}

/**
 * Read-modify-write under the config lock. `change` gets the current entries (and digest) and
 * returns the new entries, or undefined to leave the file alone; its result is returned.
 * With `expectDigest`, a file changed since the caller read it fails with INVALID_ARGUMENT
 * before `change` runs, as PBS's API does with its `digest` parameter.
 */
export async function updateDatastoreConfig(
  dirs: BurrowDirs,
  change: (
    current: DatastoreConfigSnapshot,
  ) => DatastoreConfigEntry[] | undefined | Promise<DatastoreConfigEntry[] | undefined>,
  options: { expectDigest?: string } = {},
): Promise<DatastoreConfigSnapshot> {
  const guard = await lockDatastoreConfig(dirs);
  try {
    const current = await readDatastoreConfig(dirs);
    if (options.expectDigest !== undefined && options.expectDigest !== current.digest) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'detected modified configuration - file changed by other user? Try again.',
        { details: { expected: options.expectDigest, actual: current.digest } },
      );
    }
    const next = await change(current);
    if (next === undefined) return current;
    await writeDatastoreConfigFile(dirs, next);
    return { entries: next, digest: sectionConfigDigest(writeDatastoreConfig(next)) };
  } finally {
    await guard.release();
  }
}
