/**
 * `burrow key create|change-passphrase|show|create-master-key|import-master-pubkey|
 * import-with-master-key`: proxmox-backup-client's key management. Key files are PBS's KeyConfig
 * JSON (usable by PBS and back); the default key lives where PBS keeps it
 * (~/.config/proxmox-backup/encryption-key.json). Passphrases come from the environment when set
 * (PBS_ENCRYPTION_PASSWORD; Burrow's own variables for the new and the master passphrase), else
 * from the terminal, where a new one is asked twice.
 */
import { Option, type Command } from 'commander';
import { createPublicKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { readKeyConfigFile, writeKeyConfigFile } from '../../client/key-file.js';
import { formatFingerprint } from '../../crypto/crypt-config.js';
import {
  changePassphrase,
  createKeyConfig,
  decryptKeyConfig,
  generateKey,
  type KdfName,
  type KeyConfig,
} from '../../crypto/key-config.js';
import { createMasterKeyPair, unwrapKeyWithMasterKey } from '../../crypto/master-key.js';
import { blobKindOf, decodeBlob } from '../../format/data-blob.js';
import { writeFileAtomic } from '../../lib/atomic-write.js';
import { BurrowError, withFile } from '../../lib/errors.js';
import { parseRfc3339 } from '../../types/backup.js';
import {
  KEY_PASSWORD_ENV,
  MASTER_KEY_PASSWORD_ENV,
  NEW_KEY_PASSWORD_ENV,
  defaultKeyPath,
  defaultMasterPubkeyPath,
  readNewPassphrase,
} from '../client-context.js';
import { renderKeyValues } from '../output.js';
import { readPassphrase } from '../passphrase.js';
import { outputFormatOption, printerFor } from '../run.js';

const KDF_NAMES = ['scrypt', 'pbkdf2', 'none'] as const;
export const MASTER_PUBLIC_FILE = 'master-public.pem';
export const MASTER_PRIVATE_FILE = 'master-private.pem';

const kdfOption = (description: string): Option =>
  new Option('--kdf <kdf>', description).choices(KDF_NAMES).default('scrypt');

function kdfName(config: KeyConfig): KdfName {
  if (config.kdf === null) return 'none';
  return 'Scrypt' in config.kdf ? 'scrypt' : 'pbkdf2';
}

function refuseExisting(path: string, what: string): void {
  if (existsSync(path)) {
    throw new BurrowError(
      'ALREADY_EXISTS',
      `${what} ${path} exists already; remove or move it first (Burrow never overwrites a key)`,
      { details: { path } },
    );
  }
}

async function readFileOrFail(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new BurrowError(
      code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
      `cannot read ${what} ${path}: ${(error as Error).message}`,
      { cause: error, details: { path } },
    );
  }
}

/** The passphrase of a new key file, unless it is stored without one. */
async function newKeyPassphrase(kdf: KdfName, envVar: string): Promise<string | undefined> {
  return kdf === 'none' ? undefined : readNewPassphrase('Encryption Key Password', envVar);
}

/** Write a key file; the default key's directory is created private, as PBS creates it. */
async function saveKeyFile(path: string, config: KeyConfig): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeKeyConfigFile(path, config);
}

export interface KeyInfo {
  path: string;
  kdf: KdfName;
  created: number;
  modified: number;
  fingerprint: string;
  hint?: string;
}

export async function keyInfo(path: string, config: KeyConfig): Promise<KeyInfo> {
  // The fingerprint is recorded in newer files; older ones need the key, which a plain file has.
  let fingerprint = config.fingerprint;
  if (fingerprint === undefined && config.kdf === null)
    fingerprint = formatFingerprint((await decryptKeyConfig(config)).fingerprint);
  return {
    path,
    kdf: kdfName(config),
    created: parseRfc3339(config.created),
    modified: parseRfc3339(config.modified),
    fingerprint: fingerprint ?? '(not recorded; unlock the key to see it)',
    ...(config.hint === undefined ? {} : { hint: config.hint }),
  };
}

export function renderKeyInfo(k: KeyInfo): string {
  const rows: Array<[string, string]> = [
    ['path', k.path],
    ['kdf', k.kdf],
    ['created', new Date(k.created * 1000).toString()],
    ['modified', new Date(k.modified * 1000).toString()],
    ['fingerprint', k.fingerprint],
  ];
  if (k.hint !== undefined) rows.push(['hint', k.hint]);
  return renderKeyValues(rows);
}

/** The payload of an `rsa-encrypted.key.blob`: the raw RSA block, or the DataBlob holding it. */
function rsaPayload(bytes: Uint8Array, path: string): Uint8Array {
  if (blobKindOf(bytes) === undefined) return bytes;
  try {
    return decodeBlob(bytes);
  } catch (error) {
    throw withFile(error, path);
  }
}

export function registerKeyCommands(program: Command): void {
  const key = program
    .command('key')
    .description('manage encryption keys (PBS key files) and the RSA master key');

  key
    .command('create')
    .description('create a new encryption key file')
    .argument('[path]', 'where to write it (default: ~/.config/proxmox-backup/encryption-key.json)')
    .addOption(kdfOption('protect the key with a passphrase (scrypt, pbkdf2) or not (none)'))
    .option('--hint <text>', 'passphrase hint stored in the key file')
    .addOption(outputFormatOption())
    .action(
      async (
        pathArg: string | undefined,
        options: { kdf: KdfName; hint?: string; outputFormat: string },
      ) => {
        const printer = printerFor(options);
        const path = resolve(pathArg ?? defaultKeyPath());
        refuseExisting(path, 'key file');
        if (options.kdf === 'none' && options.hint !== undefined)
          throw new BurrowError(
            'INVALID_ARGUMENT',
            '--hint needs a passphrase (--kdf scrypt or pbkdf2)',
          );
        const passphrase = await newKeyPassphrase(options.kdf, KEY_PASSWORD_ENV);
        const config = await createKeyConfig(generateKey(), {
          kdf: options.kdf,
          ...(passphrase === undefined ? {} : { passphrase }),
          ...(options.hint === undefined ? {} : { hint: options.hint }),
        });
        await saveKeyFile(path, config);
        printer.result(await keyInfo(path, config), renderKeyInfo);
      },
    );

  key
    .command('change-passphrase')
    .description('protect a key file with a new passphrase (or none)')
    .argument('[path]', 'key file (default: the default key)')
    .addOption(kdfOption('key derivation for the new passphrase, or none to store the key plainly'))
    .option('--hint <text>', 'new passphrase hint')
    .addOption(outputFormatOption())
    .action(
      async (
        pathArg: string | undefined,
        options: { kdf: KdfName; hint?: string; outputFormat: string },
      ) => {
        const printer = printerFor(options);
        const path = resolve(pathArg ?? defaultKeyPath());
        const config = await readKeyConfigFile(path);
        const old =
          config.kdf === null
            ? undefined
            : await readPassphrase('Encryption Key Password', KEY_PASSWORD_ENV);
        const next = await newKeyPassphrase(options.kdf, NEW_KEY_PASSWORD_ENV);
        let changed: KeyConfig;
        try {
          changed = await changePassphrase(config, old, next, {
            kdf: options.kdf,
            ...(options.hint === undefined ? {} : { hint: options.hint }),
          });
        } catch (error) {
          throw withFile(error, path);
        }
        await writeKeyConfigFile(path, changed);
        printer.result(await keyInfo(path, changed), renderKeyInfo);
      },
    );

  key
    .command('show')
    .description('show the kind, times, fingerprint and hint of a key file')
    .argument('[path]', 'key file (default: the default key)')
    .addOption(outputFormatOption())
    .action(async (pathArg: string | undefined, options: { outputFormat: string }) => {
      const printer = printerFor(options);
      const path = resolve(pathArg ?? defaultKeyPath());
      printer.result(await keyInfo(path, await readKeyConfigFile(path)), renderKeyInfo);
    });

  key
    .command('create-master-key')
    .description(
      `create an RSA master key pair in the current directory (${MASTER_PUBLIC_FILE}, ${MASTER_PRIVATE_FILE})`,
    )
    .addOption(outputFormatOption())
    .action(async (options: { outputFormat: string }) => {
      const printer = printerFor(options);
      const publicPath = resolve(MASTER_PUBLIC_FILE);
      const privatePath = resolve(MASTER_PRIVATE_FILE);
      refuseExisting(publicPath, 'master public key');
      refuseExisting(privatePath, 'master private key');
      const passphrase = await readNewPassphrase('Master Key Password', MASTER_KEY_PASSWORD_ENV);
      printer.info('Generating a 4096-bit RSA key pair...');
      const pair = await createMasterKeyPair(4096, passphrase);
      await writeFileAtomic(publicPath, pair.publicPem, { mode: 0o644 });
      await writeFileAtomic(privatePath, pair.privatePem, { mode: 0o600 });
      printer.result({ 'public-key': publicPath, 'private-key': privatePath }, (r) =>
        renderKeyValues([
          ['public key', r['public-key']],
          ['private key', `${r['private-key']} (keep it offline; it can decrypt every backup)`],
        ]),
      );
    });

  key
    .command('import-master-pubkey')
    .description('make a master public key the default for backups with a key')
    .argument('<path>', 'PEM file with the RSA public key')
    .addOption(outputFormatOption())
    .action(async (path: string, options: { outputFormat: string }) => {
      const printer = printerFor(options);
      const pem = await readFileOrFail(path, 'master public key');
      try {
        const key = createPublicKey(pem);
        if (key.asymmetricKeyType !== 'rsa') throw new Error(`a ${key.asymmetricKeyType} key`);
      } catch (error) {
        throw new BurrowError(
          'RSA_KEY_INVALID',
          `${path}: not an RSA public key in PEM form (${(error as Error).message})`,
          { cause: error },
        );
      }
      const target = defaultMasterPubkeyPath();
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      await writeFile(target, pem, { mode: 0o644 });
      printer.result({ path: target }, (r) => `imported the master public key to ${r.path}`);
    });

  key
    .command('import-with-master-key')
    .description(
      'recover a snapshot key from its rsa-encrypted.key.blob with the master private key',
    )
    .argument('<path>', 'where to write the recovered key file')
    .argument('<master-keyfile>', 'the master private key (PEM)')
    .argument(
      '<encrypted-keyfile>',
      'rsa-encrypted.key.blob of a snapshot (as restored, or the raw blob)',
    )
    .addOption(
      kdfOption('protect the recovered key with a passphrase (scrypt, pbkdf2) or not (none)'),
    )
    .option('--hint <text>', 'passphrase hint')
    .addOption(outputFormatOption())
    .action(
      async (
        pathArg: string,
        masterPath: string,
        encryptedPath: string,
        options: { kdf: KdfName; hint?: string; outputFormat: string },
      ) => {
        const printer = printerFor(options);
        const path = resolve(pathArg);
        refuseExisting(path, 'key file');
        const pem = (await readFileOrFail(masterPath, 'master private key')).toString('utf8');
        const encrypted = rsaPayload(
          await readFileOrFail(encryptedPath, 'encrypted key'),
          encryptedPath,
        );
        const masterPassphrase = pem.includes('ENCRYPTED')
          ? await readPassphrase('Master Key Password', MASTER_KEY_PASSWORD_ENV)
          : undefined;
        const plain = unwrapKeyWithMasterKey(encrypted, pem, masterPassphrase);
        const { key: raw, created } = await decryptKeyConfig(plain);
        const passphrase = await newKeyPassphrase(options.kdf, KEY_PASSWORD_ENV);
        const config = await createKeyConfig(raw, {
          kdf: options.kdf,
          created,
          ...(passphrase === undefined ? {} : { passphrase }),
          ...(options.hint === undefined ? {} : { hint: options.hint }),
        });
        await saveKeyFile(path, config);
        printer.result(await keyInfo(path, config), renderKeyInfo);
      },
    );
}
