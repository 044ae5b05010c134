/**
 * Key files on disk (KeyConfig JSON, pbs-formats §11.3). Reading asks for a passphrase only when
 * the key is protected; the caller supplies how to ask, so the CLI can prompt and tests can pass one.
 */
import { readFile } from 'node:fs/promises';
import { CryptConfig } from '../crypto/crypt-config.js';
import {
  decryptKeyConfig,
  parseKeyConfig,
  serializeKeyConfig,
  type KeyConfig,
} from '../crypto/key-config.js';
import { BurrowError, withFile } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/atomic-write.js';

/** Key files hold secrets: written 0600, atomically, as PBS writes them. */
export const KEY_FILE_MODE = 0o600;

export async function readKeyConfigFile(path: string): Promise<KeyConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    throw new BurrowError(
      errno === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
      `cannot read key file ${path}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  try {
    return parseKeyConfig(text);
  } catch (error) {
    throw withFile(error, path);
  }
}

export async function writeKeyConfigFile(path: string, config: KeyConfig): Promise<void> {
  await writeFileAtomic(path, serializeKeyConfig(config), { mode: KEY_FILE_MODE, fsync: true });
}

/** Load a key file and unlock it; `askPassphrase` is called only for a protected key. */
export async function loadCryptConfig(
  path: string,
  askPassphrase: () => Promise<string>,
): Promise<CryptConfig> {
  const config = await readKeyConfigFile(path);
  const passphrase = config.kdf === null ? undefined : await askPassphrase();
  try {
    const { key } = await decryptKeyConfig(config, passphrase);
    return new CryptConfig(key);
  } catch (error) {
    throw withFile(error, path);
  }
}
