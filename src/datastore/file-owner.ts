/**
 * Who owns what Burrow creates in a datastore (pbs-formats §1, §2.1, §2.3, §6.7). PBS's daemon
 * runs as the system user `backup` and, when PBS itself runs as root, hands everything it creates
 * in a store over to backup:backup. A store Burrow made as root must be just as usable by that
 * daemon, so Burrow does the same, with one owner resolved once per process:
 *
 * - `BURROW_DATASTORE_USER` unset: when running as root and `/etc/passwd` has a user `backup`,
 *   that user, with the gid of the group `backup` (else the user's primary group). Otherwise
 *   nothing is chowned and files belong to whoever runs Burrow.
 * - `BURROW_DATASTORE_USER=<name>`: that user (group of the same name, else its primary group),
 *   whatever uid Burrow runs as; chowning to another user needs root or CAP_CHOWN. An unknown
 *   name is INVALID_ARGUMENT, so a typo never silently leaves a store root-owned.
 * - `BURROW_DATASTORE_USER=-` or empty: never chown.
 *
 * The files are read directly rather than through NSS (getpwnam): Node has no binding for it,
 * and the system account a daemon runs as is always a local one.
 *
 * Ownership is given where a file or directory comes into being: fchown on the open descriptor
 * of a new (temp) file before it is written and renamed, lchown on a directory right after its
 * mkdir. Two existing things are handed over too: the base directory of a new store (PBS does
 * that), and a lock file with another owner (lockFile fixes a lock file's mode the same way).
 */
import { readFileSync } from 'node:fs';
import { lchown, mkdir } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { FileOwner } from '../lib/atomic-write.js';
import { BurrowError } from '../lib/errors.js';

export type { FileOwner };

/** The environment variable that overrides the datastore user. */
export const DATASTORE_USER_ENV = 'BURROW_DATASTORE_USER';
/** The user (and group) PBS's daemon runs as, looked up by name as PBS does. */
export const DEFAULT_DATASTORE_USER = 'backup';

const PASSWD_PATH = '/etc/passwd';
const GROUP_PATH = '/etc/group';

interface PasswdEntry {
  uid: number;
  gid: number;
}

function parseId(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,10}$/.test(text)) return undefined;
  const id = Number(text);
  // 2^32-1 is (uid_t)-1, "no change" to chown: never an owner.
  return id < 0xffffffff ? id : undefined;
}

/** `name:password:uid:gid:...` lines; comments, NIS `+`/`-` entries and malformed lines are skipped. */
export function parsePasswd(text: string): Map<string, PasswdEntry> {
  const users = new Map<string, PasswdEntry>();
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    const name = fields[0] ?? '';
    if (name === '' || /^[#+-]/.test(name) || users.has(name)) continue;
    const uid = parseId(fields[2]);
    const gid = parseId(fields[3]);
    if (uid !== undefined && gid !== undefined) users.set(name, { uid, gid });
  }
  return users;
}

/** `name:password:gid:members` lines, name → gid; the first entry of a name counts, as for getgrnam. */
export function parseGroup(text: string): Map<string, number> {
  const groups = new Map<string, number>();
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    const name = fields[0] ?? '';
    if (name === '' || /^[#+-]/.test(name) || groups.has(name)) continue;
    const gid = parseId(fields[2]);
    if (gid !== undefined) groups.set(name, gid);
  }
  return groups;
}

export interface FileOwnerInputs {
  /** The process's uid (undefined on platforms without one). */
  uid: number | undefined;
  /** The override (BURROW_DATASTORE_USER); undefined when not set. */
  user: string | undefined;
  /** Contents of /etc/passwd and /etc/group; undefined when unreadable. */
  passwd: string | undefined;
  group: string | undefined;
}

/**
 * The owner for new datastore files, from explicit inputs (pure; see the module comment for
 * the rules). INVALID_ARGUMENT when the override names a user that does not exist.
 */
export function resolveFileOwner(inputs: FileOwnerInputs): FileOwner | undefined {
  const override = inputs.user?.trim();
  if (override === '' || override === '-') return undefined;
  if (override === undefined && inputs.uid !== 0) return undefined;
  const name = override ?? DEFAULT_DATASTORE_USER;
  const user = parsePasswd(inputs.passwd ?? '').get(name);
  if (user === undefined) {
    if (override === undefined) return undefined; // no `backup` account: nobody to hand over to
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${DATASTORE_USER_ENV}=${JSON.stringify(override)}: no such user in ${PASSWD_PATH} (use '-' to keep files owned by the user running Burrow)`,
      { details: { user: override } },
    );
  }
  const gid = parseGroup(inputs.group ?? '').get(name) ?? user.gid;
  return { uid: user.uid, gid };
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The override set by setDatastoreUser; undefined = use the environment. */
let userOverride: string | undefined;
let resolved: { owner: FileOwner | undefined } | undefined;

/**
 * The owner to give new datastore files and directories, resolved on first use and then cached
 * for the process; undefined = do not chown. Throws INVALID_ARGUMENT for an unknown override
 * user (not cached, so a fixed environment is picked up).
 */
export function datastoreFileOwner(): FileOwner | undefined {
  if (resolved === undefined) {
    const owner = resolveFileOwner({
      uid: process.getuid?.(),
      user: userOverride ?? process.env[DATASTORE_USER_ENV],
      passwd: readOrUndefined(PASSWD_PATH),
      group: readOrUndefined(GROUP_PATH),
    });
    resolved = { owner };
  }
  return resolved.owner;
}

/**
 * Override BURROW_DATASTORE_USER for this process (tests, embedders): a user name, or `-` / ''
 * for "do not chown"; `undefined` goes back to the environment and the default. Stores opened
 * before keep the owner they resolved when they were opened.
 */
export function setDatastoreUser(user: string | undefined): void {
  userOverride = user;
  resolved = undefined;
}

/** fchown a freshly created file to `owner` (nothing when undefined). */
export async function chownHandle(handle: FileHandle, owner: FileOwner | undefined): Promise<void> {
  if (owner !== undefined) await handle.chown(owner.uid, owner.gid);
}

export interface MkdirOwnedOptions {
  /** Mode for mkdir (the umask still applies, as with mkdir). */
  mode?: number;
  /** Create missing parents too; every directory this call creates gets the owner. */
  recursive?: boolean;
}

/**
 * mkdir, then lchown each directory this call created to `owner`. Without `recursive` it fails
 * like mkdir (EEXIST, ENOENT). Returns whether `path` itself was created. lchown, not chown:
 * should a directory be swapped for a symlink in between, the link is changed, not its target.
 */
export async function mkdirOwned(
  path: string,
  owner: FileOwner | undefined,
  options: MkdirOwnedOptions = {},
): Promise<boolean> {
  const target = resolve(path);
  if (options.recursive !== true) {
    await mkdir(target, options.mode);
    if (owner !== undefined) await lchown(target, owner.uid, owner.gid);
    return true;
  }
  const first = await mkdir(target, {
    recursive: true,
    ...(options.mode !== undefined ? { mode: options.mode } : {}),
  });
  if (first === undefined) return false;
  if (owner !== undefined) {
    // mkdir -p made `first` and everything between it and `target`: hand each over, top down.
    const made: string[] = [];
    for (let dir = target; ; dir = dirname(dir)) {
      made.push(dir);
      if (dir === first || dirname(dir) === dir) break;
    }
    for (const dir of made.reverse()) await lchown(dir, owner.uid, owner.gid);
  }
  return true;
}
