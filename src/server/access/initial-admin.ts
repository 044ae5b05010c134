/**
 * The first password of `root@pam`. Burrow ships no default password: when root@pam has none,
 * the server (on start) makes a random one, stores its hash in shadow.json and writes the plain
 * password to `<configDir>/initial-root-password` (mode 0600), which the administrator reads and
 * then deletes. That file is never overwritten: if it exists (an earlier start stopped before it
 * stored the hash), the password in it is the one stored.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { BurrowDirs } from '../../lib/dirs.js';
import { BurrowError, isBurrowError } from '../../lib/errors.js';
import {
  INITIAL_ROOT_PASSWORD,
  SHADOW_JSON,
  accessPath,
  createSecretFile,
  lockUsers,
  readHashFile,
  withLock,
  writeHashFile,
} from './access-files.js';
import { hashPassword } from './sha-crypt.js';
import { ROOT_USERID } from './server-access.js';

/** Length of a generated password: 24 characters of 62 are about 143 bits. */
export const INITIAL_PASSWORD_LENGTH = 24;
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A random password of letters and digits (rejection sampling keeps every character equally likely). */
export function randomPassword(length = INITIAL_PASSWORD_LENGTH): string {
  let out = '';
  // 248 = 4 × 62: bytes from 248 up would favour the first characters.
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += ALPHANUMERIC[byte % 62];
    }
  }
  return out;
}

/**
 * Give root@pam a password if it has none. Returns the path of the file holding the new
 * password, or undefined when root@pam already had one.
 */
export async function ensureInitialAdmin(
  dirs: BurrowDirs,
): Promise<{ passwordFile: string } | undefined> {
  return withLock(lockUsers(dirs), async () => {
    const shadow = await readHashFile(dirs, SHADOW_JSON);
    if (shadow.has(ROOT_USERID)) return undefined;
    const passwordFile = accessPath(dirs, INITIAL_ROOT_PASSWORD);
    let password = randomPassword();
    try {
      await createSecretFile(passwordFile, `${password}\n`);
    } catch (error) {
      if (!isBurrowError(error, 'ALREADY_EXISTS')) {
        throw new BurrowError(
          'IO_ERROR',
          `cannot create ${passwordFile}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
          { details: { path: passwordFile }, cause: error },
        );
      }
      password = (await readFile(passwordFile, 'utf8')).replace(/\r?\n$/, '');
      if (password.length < 5) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `${passwordFile} exists but holds no usable password; remove it and start again`,
          { details: { path: passwordFile } },
        );
      }
    }
    shadow.set(ROOT_USERID, hashPassword(password));
    await writeHashFile(dirs, SHADOW_JSON, shadow);
    return { passwordFile };
  });
}
