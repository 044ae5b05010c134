import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rejectionCodeOf, codeOf } from '../../test/helpers/error-code.js';
import { writeKeyConfigFile } from '../client/key-file.js';
import { CryptConfig, formatFingerprint } from '../crypto/crypt-config.js';
import { createKeyConfig, generateKey } from '../crypto/key-config.js';
import {
  cryptParameters,
  defaultKeyDir,
  defaultKeyPath,
  readNewPassphrase,
} from './client-context.js';
import { parseChunkSizeKiB } from './commands/backup.js';
import { benchmarkData, renderSpeed } from './commands/benchmark.js';

let dir: string;
let env: NodeJS.ProcessEnv;

async function plainKey(path: string): Promise<string> {
  const key = generateKey();
  await writeKeyConfigFile(path, await createKeyConfig(key, { kdf: 'none' }));
  return formatFingerprint(new CryptConfig(key).fingerprint);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'burrow-client-context-'));
  env = { XDG_CONFIG_HOME: join(dir, 'xdg'), HOME: join(dir, 'home') };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('default key locations', () => {
  it("are PBS's: $XDG_CONFIG_HOME/proxmox-backup, else ~/.config/proxmox-backup", () => {
    expect(defaultKeyPath({ XDG_CONFIG_HOME: '/x' })).toBe('/x/proxmox-backup/encryption-key.json');
    expect(defaultKeyDir({ HOME: '/home/u' })).toBe('/home/u/.config/proxmox-backup');
    expect(defaultKeyDir({ HOME: '/home/u', XDG_CONFIG_HOME: '' })).toBe(
      '/home/u/.config/proxmox-backup',
    );
  });
});

describe('cryptParameters (the crypt mode table)', () => {
  const fingerprintOf = (crypt: CryptConfig | undefined): string | undefined =>
    crypt === undefined ? undefined : formatFingerprint(crypt.fingerprint);

  it('without a default key: no options is none, a mode needs a key', async () => {
    expect((await cryptParameters({}, env)).mode).toBe('none');
    expect((await cryptParameters({ cryptMode: 'none' }, env)).mode).toBe('none');
    expect(await rejectionCodeOf(cryptParameters({ cryptMode: 'encrypt' }, env))).toBe('NOT_FOUND');
    expect(await rejectionCodeOf(cryptParameters({ cryptMode: 'sign-only' }, env))).toBe(
      'NOT_FOUND',
    );
    expect(
      await rejectionCodeOf(cryptParameters({ masterPubkeyFile: join(dir, 'm.pem') }, env)),
    ).toBe('NOT_FOUND');
  });

  it('a key file alone encrypts; with a mode it takes that mode; with none it is refused', async () => {
    const path = join(dir, 'k.json');
    const fp = await plainKey(path);
    const alone = await cryptParameters({ keyfile: path }, env);
    expect(alone).toMatchObject({ mode: 'encrypt', keyPath: path });
    expect(fingerprintOf(alone.crypt)).toBe(fp);
    expect((await cryptParameters({ keyfile: path, cryptMode: 'sign-only' }, env)).mode).toBe(
      'sign-only',
    );
    expect(await rejectionCodeOf(cryptParameters({ keyfile: path, cryptMode: 'none' }, env))).toBe(
      'INVALID_ARGUMENT',
    );
  });

  it('the default key is used when it exists, and the default master key with it', async () => {
    const keyDir = defaultKeyDir(env);
    mkdirSync(keyDir, { recursive: true });
    const fp = await plainKey(defaultKeyPath(env));
    const noOptions = await cryptParameters({}, env);
    expect(noOptions.mode).toBe('encrypt');
    expect(fingerprintOf(noOptions.crypt)).toBe(fp);
    expect(noOptions.masterPublicKey).toBeUndefined();
    expect(noOptions.notes.join('\n')).toContain('default encryption key');
    // --crypt-mode none still means none, with the default key present.
    expect((await cryptParameters({ cryptMode: 'none' }, env)).crypt).toBeUndefined();

    const { publicKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    writeFileSync(join(keyDir, 'master-public.pem'), publicKey);
    const signOnly = await cryptParameters({ cryptMode: 'sign-only' }, env);
    expect(signOnly.mode).toBe('sign-only');
    expect(signOnly.masterPublicKey).toBe(publicKey);
    expect(signOnly.masterPubkeyPath).toBe(join(keyDir, 'master-public.pem'));
  });

  it('reports a missing key file as NOT_FOUND', async () => {
    expect(await rejectionCodeOf(cryptParameters({ keyfile: join(dir, 'nope.json') }, env))).toBe(
      'NOT_FOUND',
    );
  });
});

describe('readNewPassphrase', () => {
  it('takes the variable when it is set, without asking twice', async () => {
    process.env['BURROW_TEST_NEW_PW'] = 'from-env';
    try {
      expect(await readNewPassphrase('New', 'BURROW_TEST_NEW_PW')).toBe('from-env');
    } finally {
      delete process.env['BURROW_TEST_NEW_PW'];
    }
  });
});

describe('--chunk-size', () => {
  it('takes powers of two from 64 to 4096 KiB only', () => {
    expect([64, 128, 1024, 4096].map((n) => parseChunkSizeKiB(String(n)))).toEqual([
      64, 128, 1024, 4096,
    ]);
    for (const bad of ['32', '8192', '100', '0', '-64', '64.0', 'x', ''])
      expect(
        codeOf(() => parseChunkSizeKiB(bad)),
        bad,
      ).toBe('INVALID_ARGUMENT');
  });
});

describe('benchmark', () => {
  it("uses PBS's input: 1 MiB of little-endian u32 counters", () => {
    const data = benchmarkData();
    expect(data.byteLength).toBe(1024 * 1024);
    expect([...data.subarray(0, 12)]).toEqual([0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
    expect([...data.subarray(4 * 0x1234, 4 * 0x1234 + 4)]).toEqual([0x34, 0x12, 0, 0]);
    expect([...data.subarray(-4)]).toEqual([0xff, 0xff, 0x03, 0]);
  });

  it('renders speeds as MB/s with the percentage of the reference', () => {
    expect(renderSpeed({ speed: 1_854_290_000, top: 2_022_000_000 })).toBe('1854.29 MB/s (92%)');
    expect(renderSpeed({ speed: 5e8 })).toBe('500.00 MB/s');
    expect(renderSpeed({ top: 1 })).toBe('not tested');
  });
});
