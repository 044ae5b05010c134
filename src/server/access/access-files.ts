/**
 * The access-control files in the config directory, with PBS's names:
 *
 * | file            | content                                   | mode |
 * |-----------------|-------------------------------------------|------|
 * | `user.cfg`      | users and API tokens (section config)     | 0640 |
 * | `shadow.json`   | `{ "<userid>": "<SHA-crypt hash>" }`      | 0600 |
 * | `token.shadow`  | `{ "<userid>!<token>": "<SHA-crypt hash>" }` | 0600 |
 * | `acl.cfg`       | `acl:<0|1>:<path>:<ids>:<roles>` lines    | 0640 |
 * | `authkey.key`   | ticket signing secret                     | 0600 |
 * | `csrf.key`      | CSRF token secret                         | 0600 |
 *
 * Writers hold `.user.lck` (user.cfg, shadow.json, token.shadow) or `.acl.lck` (acl.cfg), and
 * take them in that order when they need both. Every file is replaced atomically (temp file,
 * fsync, rename), so readers take no lock. A missing file is an empty one. The 0640 files get the
 * datastore user's group, as PBS gives them group `backup`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../lib/atomic-write.js';
import type { BurrowDirs } from '../../lib/dirs.js';
import { BurrowError, isBurrowError, withFile } from '../../lib/errors.js';
import { datastoreFileOwner } from '../../datastore/file-owner.js';
import { lockFile, type LockGuard } from '../../datastore/lock-file.js';
import { sectionConfigDigest } from '../../format/section-config.js';
import { writeNewFile } from '../new-file.js';
import { AclTree } from './acl-config.js';
import { parseUserConfig, writeUserConfig, type UserConfigEntry } from './user-config.js';

export const USER_CFG = 'user.cfg';
export const SHADOW_JSON = 'shadow.json';
export const TOKEN_SHADOW = 'token.shadow';
export const ACL_CFG = 'acl.cfg';
export const AUTHKEY = 'authkey.key';
export const CSRF_KEY = 'csrf.key';
export const INITIAL_ROOT_PASSWORD = 'initial-root-password';
export const USER_LOCK = '.user.lck';
export const ACL_LOCK = '.acl.lck';

export const CONFIG_MODE = 0o640;
export const SECRET_MODE = 0o600;
/** PBS's default wait for a config lock. */
export const ACCESS_LOCK_TIMEOUT_MS = 10_000;
/** Bytes of randomness in a new authkey.key or csrf.key. */
const KEY_BYTES = 32;

export const accessPath = (dirs: BurrowDirs, name: string): string => join(dirs.configDir, name);

function ioError(action: string, path: string, error: unknown): BurrowError {
  const code = (error as NodeJS.ErrnoException).code;
  return new BurrowError('IO_ERROR', `cannot ${action} ${path}: ${code ?? String(error)}`, {
    details: { path, errnoName: code },
    cause: error,
  });
}

/** The file's bytes, or undefined when it does not exist. */
async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', path, error);
  }
}

/**
 * What identifies one version of a file: inode, size, mtime and ctime in ns. Every write is a
 * rename of a new inode, so a changed file never keeps its stamp.
 */
export async function fileStamp(path: string): Promise<string> {
  try {
    const st = await stat(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw ioError('stat', path, error);
  }
}

export interface UserFile {
  readonly entries: UserConfigEntry[];
  /** SHA-256 hex of the raw file (of '' when missing), for the API's `digest`. */
  readonly digest: string;
}

export async function readUserFile(dirs: BurrowDirs): Promise<UserFile> {
  const path = accessPath(dirs, USER_CFG);
  const raw = (await readOptional(path)) ?? Buffer.alloc(0);
  try {
    return { entries: parseUserConfig(raw), digest: sectionConfigDigest(raw) };
  } catch (error) {
    throw withFile(error, path);
  }
}

export interface AclFile {
  readonly tree: AclTree;
  readonly digest: string;
}

export async function readAclFile(dirs: BurrowDirs): Promise<AclFile> {
  const path = accessPath(dirs, ACL_CFG);
  const raw = (await readOptional(path)) ?? Buffer.alloc(0);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch (cause) {
    throw new BurrowError('INVALID_ARGUMENT', `${path}: not valid UTF-8`, {
      details: { file: path },
      cause,
    });
  }
  try {
    return { tree: AclTree.parse(text), digest: sectionConfigDigest(raw) };
  } catch (error) {
    throw withFile(error, path);
  }
}

/** shadow.json or token.shadow: a JSON object of strings. */
export async function readHashFile(dirs: BurrowDirs, name: string): Promise<Map<string, string>> {
  const path = accessPath(dirs, name);
  const raw = await readOptional(path);
  if (raw === undefined || raw.toString('utf8').trim() === '') return new Map();
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch (cause) {
    throw new BurrowError('INVALID_ARGUMENT', `${path}: not valid JSON`, {
      details: { file: path },
      cause,
    });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new BurrowError('INVALID_ARGUMENT', `${path}: expected a JSON object`, {
      details: { file: path },
    });
  }
  const out = new Map<string, string>();
  for (const [key, hash] of Object.entries(value)) {
    if (typeof hash !== 'string') {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${path}: the value of ${JSON.stringify(key)} is not a string`,
        { details: { file: path, key } },
      );
    }
    out.set(key, hash);
  }
  return out;
}

async function writeAtomic(path: string, data: string, mode: number, group: boolean) {
  const gid = group ? datastoreFileOwner()?.gid : undefined;
  try {
    await writeFileAtomic(path, data, {
      fsync: true,
      mode,
      // uid -1: chown leaves the owner as it is.
      owner: gid === undefined ? undefined : { uid: -1, gid },
    });
  } catch (error) {
    throw ioError('write', path, error);
  }
}

export async function writeUserFile(
  dirs: BurrowDirs,
  entries: readonly UserConfigEntry[],
): Promise<string> {
  const text = writeUserConfig(entries);
  await writeAtomic(accessPath(dirs, USER_CFG), text, CONFIG_MODE, true);
  return sectionConfigDigest(text);
}

export async function writeAclFile(dirs: BurrowDirs, tree: AclTree): Promise<string> {
  const text = tree.render();
  await writeAtomic(accessPath(dirs, ACL_CFG), text, CONFIG_MODE, true);
  return sectionConfigDigest(text);
}

export async function writeHashFile(
  dirs: BurrowDirs,
  name: string,
  hashes: ReadonlyMap<string, string>,
): Promise<void> {
  const sorted = Object.fromEntries([...hashes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  await writeAtomic(
    accessPath(dirs, name),
    `${JSON.stringify(sorted, null, 2)}\n`,
    SECRET_MODE,
    false,
  );
}

export function lockUsers(dirs: BurrowDirs, exclusive = true): Promise<LockGuard> {
  return lockFile(accessPath(dirs, USER_LOCK), {
    exclusive,
    timeoutMs: ACCESS_LOCK_TIMEOUT_MS,
    what: 'user config',
  });
}

export function lockAcl(dirs: BurrowDirs): Promise<LockGuard> {
  return lockFile(accessPath(dirs, ACL_LOCK), {
    exclusive: true,
    timeoutMs: ACCESS_LOCK_TIMEOUT_MS,
    what: 'ACL config',
  });
}

/** Run `fn` holding the lock; the lock is released whatever happens. */
export async function withLock<T>(lock: Promise<LockGuard>, fn: () => Promise<T>): Promise<T> {
  const guard = await lock;
  try {
    return await fn();
  } finally {
    await guard.release();
  }
}

/** A new secret file (mode 0600) that never replaces an existing one (see writeNewFile). */
export function createSecretFile(path: string, data: string | Uint8Array): Promise<void> {
  return writeNewFile(path, data, SECRET_MODE);
}

/**
 * A random secret kept in the config directory (authkey.key, csrf.key): read it, or create it
 * (32 random bytes, base64, mode 0600) when it does not exist. Two processes creating it at once
 * agree: the loser of the exclusive create reads the winner's file. The whole file is the key.
 */
export async function loadOrCreateKey(dirs: BurrowDirs, name: string): Promise<Buffer> {
  const path = accessPath(dirs, name);
  const existing = await readOptional(path);
  if (existing === undefined) {
    try {
      await mkdir(dirs.configDir, { recursive: true, mode: 0o755 });
      await createSecretFile(path, `${randomBytes(KEY_BYTES).toString('base64')}\n`);
    } catch (error) {
      if (!isBurrowError(error, 'ALREADY_EXISTS')) throw ioError('create', path, error);
    }
    return loadOrCreateKey(dirs, name);
  }
  if (existing.length < 16) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${path}: the key file is too short (${existing.length} bytes); remove it to get a new one`,
      { details: { file: path } },
    );
  }
  return existing;
}
