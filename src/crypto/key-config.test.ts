import { createDecipheriv, createHash, pbkdf2Sync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isBurrowError } from '../lib/errors.js';
import { parseRfc3339 } from '../types/backup.js';
import { CryptConfig, formatFingerprint } from './crypt-config.js';
import type { KeyConfig } from './key-config.js';
import {
  changePassphrase,
  createKeyConfig,
  decryptKeyConfig,
  deriveKey,
  formatRfc3339Local,
  generateKey,
  parseKeyConfig,
  plainKeyConfig,
  serializeKeyConfig,
} from './key-config.js';

// pbs-protocol §11 #5.
const SPEC_ENC_KEY = '28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e';

const KEY_00_1F = Uint8Array.from({ length: 32 }, (_, i) => i);
/** 2024-01-01T09:00:00Z */
const T0 = 1704099600;

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<unknown> {
  let thrown: unknown;
  try {
    await promise;
  } catch (err) {
    thrown = err;
  }
  expect(isBurrowError(thrown), `expected BurrowError ${code}, got ${String(thrown)}`).toBe(true);
  expect((thrown as { code: string }).code).toBe(code);
  return thrown;
}

function throwsWith(fn: () => unknown, code: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isBurrowError(thrown), `expected BurrowError ${code}, got ${String(thrown)}`).toBe(true);
  expect((thrown as { code: string }).code).toBe(code);
}

describe('key derivation and fingerprint vectors', () => {
  it('scrypt("test", empty salt, N=65536, r=8, p=1) gives the spec key', async () => {
    const key = await deriveKey({ Scrypt: { n: 65536, r: 8, p: 1, salt: '' } }, 'test');
    expect(Buffer.from(key).toString('hex')).toBe(SPEC_ENC_KEY);
  });

  it('fingerprint of key 0x00..0x1f follows §5.5', () => {
    // §5.5 with node:crypto primitives only.
    const idKey = pbkdf2Sync(Buffer.from(KEY_00_1F), '_id_key', 10, 32, 'sha256');
    const input = createHash('sha256')
      .update('Proxmox Backup Encryption Key Fingerprint', 'ascii')
      .digest();
    const expected = createHash('sha256').update(input).update(idKey).digest();
    expect(Array.from(input.subarray(0, 4))).toEqual([110, 208, 239, 119]);
    const formatted = Array.from(expected, (b) => b.toString(16).padStart(2, '0')).join(':');
    expect(formatFingerprint(new CryptConfig(KEY_00_1F).fingerprint)).toBe(formatted);
  });
});

describe('RFC 3339 times', () => {
  it('formats local time with a numeric offset, UTC as +00:00', () => {
    expect(formatRfc3339Local(T0, 60)).toBe('2024-01-01T10:00:00+01:00');
    expect(formatRfc3339Local(T0, 0)).toBe('2024-01-01T09:00:00+00:00');
    expect(formatRfc3339Local(T0, -570)).toBe('2023-12-31T23:30:00-09:30');
    expect(formatRfc3339Local(0, 0)).toBe('1970-01-01T00:00:00+00:00');
  });

  it('is read back by the shared RFC 3339 parser, Z included', () => {
    expect(parseRfc3339('2024-01-01T10:00:00+01:00')).toBe(T0);
    expect(parseRfc3339('2024-01-01T09:00:00Z')).toBe(T0);
    expect(parseRfc3339('2023-12-31T23:30:00-09:30')).toBe(T0);
  });

  it('round trips in the local zone and in any offset (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 253402214400 }),
        fc.option(fc.integer({ min: -1439, max: 1439 }), { nil: undefined }),
        (epoch, offset) => {
          const text = formatRfc3339Local(epoch, offset);
          expect(text).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$/);
          expect(parseRfc3339(text)).toBe(epoch);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('key files', () => {
  it('scrypt: create, decrypt, refuse a wrong passphrase', async () => {
    const key = generateKey();
    const config = await createKeyConfig(key, {
      kdf: 'scrypt',
      passphrase: 'correct horse',
      hint: 'horse',
      now: new Date(T0 * 1000),
      offsetMinutes: 60,
    });
    expect(config.kdf).toMatchObject({ Scrypt: { n: 65536, r: 8, p: 1 } });
    expect(
      Buffer.from((config.kdf as { Scrypt: { salt: string } }).Scrypt.salt, 'base64'),
    ).toHaveLength(32);
    expect(config.created).toBe('2024-01-01T10:00:00+01:00');
    expect(config.modified).toBe(config.created);
    expect(config.fingerprint).toBe(formatFingerprint(new CryptConfig(key).fingerprint));

    const parsed = parseKeyConfig(serializeKeyConfig(config));
    expect(parsed).toEqual(config);
    const opened = await decryptKeyConfig(parsed, 'correct horse');
    expect(opened.key).toEqual(key);
    expect(opened.fingerprint).toEqual(new CryptConfig(key).fingerprint);
    expect(opened.created).toBe(T0);

    const err = await rejectsWith(decryptKeyConfig(parsed, 'wrong horse'), 'KEY_PASSPHRASE_WRONG');
    expect((err as Error).message).toContain('horse');
  });

  it('pbkdf2: stores IV || tag || AES-256-GCM(key) under PBKDF2-HMAC-SHA256 (65535 iterations)', async () => {
    const key = generateKey();
    const config = await createKeyConfig(key, { kdf: 'pbkdf2', passphrase: 'secret1' });
    if (config.kdf === null || !('PBKDF2' in config.kdf)) throw new Error('expected PBKDF2');
    expect(config.kdf.PBKDF2.iter).toBe(65535);

    // Open it by hand with node:crypto, following §11.3.
    const salt = Buffer.from(config.kdf.PBKDF2.salt, 'base64');
    expect(salt).toHaveLength(32);
    const derived = pbkdf2Sync('secret1', salt, 65535, 32, 'sha256');
    const data = Buffer.from(config.data, 'base64');
    expect(data).toHaveLength(64);
    const decipher = createDecipheriv('aes-256-gcm', derived, data.subarray(0, 16), {
      authTagLength: 16,
    });
    decipher.setAuthTag(data.subarray(16, 32));
    expect(
      new Uint8Array(Buffer.concat([decipher.update(data.subarray(32)), decipher.final()])),
    ).toEqual(key);

    expect((await decryptKeyConfig(config, new TextEncoder().encode('secret1'))).key).toEqual(key);
    await rejectsWith(decryptKeyConfig(config, 'secret2'), 'KEY_PASSPHRASE_WRONG');
    await rejectsWith(decryptKeyConfig(config), 'KEY_PASSPHRASE_WRONG');
  });

  it('none: stores the raw key', async () => {
    const config = await plainKeyConfig(KEY_00_1F, {
      created: T0,
      now: new Date((T0 + 60) * 1000),
      offsetMinutes: 0,
    });
    expect(config.kdf).toBeNull();
    expect(Buffer.from(config.data, 'base64')).toEqual(Buffer.from(KEY_00_1F));
    expect(config.created).toBe('2024-01-01T09:00:00+00:00');
    expect(config.modified).toBe('2024-01-01T09:01:00+00:00');
    const opened = await decryptKeyConfig(config);
    expect(opened.key).toEqual(KEY_00_1F);
    expect(opened.created).toBe(T0);
    // A passphrase is ignored for an unprotected key, as PBS never asks for one.
    expect((await decryptKeyConfig(config, 'whatever')).key).toEqual(KEY_00_1F);
  });

  it('refuses passphrases shorter than 5 bytes before deriving anything', async () => {
    const config = await createKeyConfig(generateKey(), { kdf: 'pbkdf2', passphrase: '12345' });
    await rejectsWith(decryptKeyConfig(config, '1234'), 'KEY_PASSPHRASE_TOO_SHORT');
    await rejectsWith(decryptKeyConfig(config, ''), 'KEY_PASSPHRASE_TOO_SHORT');
    await rejectsWith(
      createKeyConfig(generateKey(), { kdf: 'scrypt', passphrase: 'abcd' }),
      'KEY_PASSPHRASE_TOO_SHORT',
    );
    // Bytes count, not characters: two 2-byte characters plus one byte make 5.
    expect(
      (
        await decryptKeyConfig(
          await createKeyConfig(KEY_00_1F, { kdf: 'pbkdf2', passphrase: 'ééa' }),
          'ééa',
        )
      ).key,
    ).toEqual(KEY_00_1F);
  });

  it('rejects a stored fingerprint that is not the key’s', async () => {
    const config = await plainKeyConfig(KEY_00_1F);
    const other = formatFingerprint(new CryptConfig(new Uint8Array(32)).fingerprint);
    await rejectsWith(
      decryptKeyConfig({ ...config, fingerprint: other }),
      'KEY_FINGERPRINT_MISMATCH',
    );
    // Without a stored fingerprint there is nothing to check.
    const { fingerprint: _fp, ...bare } = config;
    expect((await decryptKeyConfig(bare)).key).toEqual(KEY_00_1F);
  });

  it('changePassphrase keeps the key and created, updates modified, drops the old hint', async () => {
    const key = generateKey();
    const original = await createKeyConfig(key, {
      kdf: 'pbkdf2',
      passphrase: 'old passphrase',
      hint: 'old',
      now: new Date(T0 * 1000),
      offsetMinutes: 60,
    });
    const changed = await changePassphrase(original, 'old passphrase', 'new passphrase', {
      now: new Date((T0 + 3600) * 1000),
      offsetMinutes: 60,
    });
    expect(changed.created).toBe(original.created);
    expect(changed.modified).toBe('2024-01-01T11:00:00+01:00');
    expect(changed.hint).toBeUndefined();
    expect(changed.fingerprint).toBe(original.fingerprint);
    expect(changed.kdf && 'PBKDF2' in changed.kdf).toBe(true);
    expect((await decryptKeyConfig(changed, 'new passphrase')).key).toEqual(key);
    await rejectsWith(decryptKeyConfig(changed, 'old passphrase'), 'KEY_PASSPHRASE_WRONG');
    await rejectsWith(
      changePassphrase(original, 'bad passphrase', 'x'.repeat(8)),
      'KEY_PASSPHRASE_WRONG',
    );

    // Removing the protection, then adding PBKDF2 protection back.
    const plain = await changePassphrase(changed, 'new passphrase', undefined, { kdf: 'none' });
    expect(plain.kdf).toBeNull();
    expect(plain.created).toBe(original.created);
    const again = await changePassphrase(plain, undefined, 'third one', {
      kdf: 'pbkdf2',
      hint: 'three',
    });
    expect(again.hint).toBe('three');
    expect((await decryptKeyConfig(again, 'third one')).key).toEqual(key);
  });

  it('checks create options', async () => {
    await rejectsWith(createKeyConfig(new Uint8Array(31), { kdf: 'none' }), 'INVALID_ARGUMENT');
    await rejectsWith(
      createKeyConfig(generateKey(), { kdf: 'none', passphrase: 'abcdef' }),
      'INVALID_ARGUMENT',
    );
    await rejectsWith(createKeyConfig(generateKey(), { kdf: 'pbkdf2' }), 'INVALID_ARGUMENT');
  });
});

describe('KeyConfig JSON', () => {
  const fp = formatFingerprint(new CryptConfig(KEY_00_1F).fingerprint);
  const salt = Buffer.alloc(32, 9).toString('base64');
  const data = Buffer.alloc(64, 1).toString('base64');

  it('serializes compactly in PBS field order, omitting absent fingerprint and hint', () => {
    const config: KeyConfig = {
      hint: 'h',
      fingerprint: fp,
      data,
      modified: '2024-01-02T10:00:00+01:00',
      created: '2024-01-01T10:00:00+01:00',
      kdf: { Scrypt: { salt, p: 1, r: 8, n: 65536 } },
    };
    expect(serializeKeyConfig(config)).toBe(
      `{"kdf":{"Scrypt":{"n":65536,"r":8,"p":1,"salt":"${salt}"}},"created":"2024-01-01T10:00:00+01:00",` +
        `"modified":"2024-01-02T10:00:00+01:00","data":"${data}","fingerprint":"${fp}","hint":"h"}`,
    );
    const bare: KeyConfig = {
      kdf: { PBKDF2: { salt, iter: 65535 } },
      created: 'x',
      modified: 'y',
      data,
    };
    expect(serializeKeyConfig(bare)).toBe(
      `{"kdf":{"PBKDF2":{"iter":65535,"salt":"${salt}"}},"created":"x","modified":"y","data":"${data}"}`,
    );
    expect(serializeKeyConfig({ kdf: null, created: 'x', modified: 'y', data: '' })).toBe(
      '{"kdf":null,"created":"x","modified":"y","data":""}',
    );
  });

  it('reads what PBS writes and writes it back unchanged', () => {
    const text =
      `{"kdf":{"Scrypt":{"n":65536,"r":8,"p":1,"salt":"${salt}"}},"created":"2024-01-01T10:00:00+01:00",` +
      `"modified":"2024-01-01T10:00:00Z","data":"${data}","fingerprint":"${fp}"}`;
    expect(serializeKeyConfig(parseKeyConfig(text))).toBe(text);
    expect(serializeKeyConfig(parseKeyConfig(new TextEncoder().encode(text)))).toBe(text);
  });

  it('treats a missing kdf and null optional fields as absent, and ignores unknown keys', () => {
    const config = parseKeyConfig(
      `{"created":"2024-01-01T10:00:00Z","modified":"2024-01-01T10:00:00Z","data":"${data}","fingerprint":null,"hint":null,"extra":1}`,
    );
    expect(config).toEqual({
      kdf: null,
      created: '2024-01-01T10:00:00Z',
      modified: '2024-01-01T10:00:00Z',
      data,
    });
  });

  const good = (): Record<string, unknown> => ({
    kdf: { PBKDF2: { iter: 65535, salt } },
    created: '2024-01-01T10:00:00+01:00',
    modified: '2024-01-01T10:00:00+01:00',
    data,
  });
  const bad: Array<[string, (j: Record<string, unknown>) => void]> = [
    [
      'kdf with two variants',
      (j) => (j['kdf'] = { PBKDF2: { iter: 1, salt }, Scrypt: { n: 2, r: 1, p: 1, salt } }),
    ],
    ['unknown kdf', (j) => (j['kdf'] = { Argon2: {} })],
    ['kdf string', (j) => (j['kdf'] = 'scrypt')],
    ['iter zero', (j) => (j['kdf'] = { PBKDF2: { iter: 0, salt } })],
    ['iter huge', (j) => (j['kdf'] = { PBKDF2: { iter: 2 ** 40, salt } })],
    ['n not a power of two', (j) => (j['kdf'] = { Scrypt: { n: 65535, r: 8, p: 1, salt } })],
    ['scrypt work too large', (j) => (j['kdf'] = { Scrypt: { n: 2 ** 20, r: 8, p: 16, salt } })],
    ['salt not base64', (j) => (j['kdf'] = { PBKDF2: { iter: 1, salt: 'abc' } })],
    ['created missing', (j) => delete j['created']],
    ['modified bad', (j) => (j['modified'] = '2024-01-01')],
    ['modified without zone', (j) => (j['modified'] = '2024-01-01T10:00:00')],
    ['created with fraction', (j) => (j['created'] = '2024-01-01T10:00:00.5Z')],
    ['created month 13', (j) => (j['created'] = '2024-13-01T10:00:00+01:00')],
    ['data number', (j) => (j['data'] = 5)],
    ['data not base64', (j) => (j['data'] = '%%%%')],
    ['fingerprint bad', (j) => (j['fingerprint'] = 'aa:bb')],
    ['hint number', (j) => (j['hint'] = 1)],
  ];
  it.each(bad)('rejects %s with KEY_FILE_INVALID', (_name, edit) => {
    const json = good();
    edit(json);
    throwsWith(() => parseKeyConfig(JSON.stringify(json)), 'KEY_FILE_INVALID');
  });

  it('rejects non-JSON and wrong data lengths', async () => {
    throwsWith(() => parseKeyConfig('not json'), 'KEY_FILE_INVALID');
    throwsWith(() => parseKeyConfig('[]'), 'KEY_FILE_INVALID');
    const plain = parseKeyConfig(
      JSON.stringify({ ...good(), kdf: null, data: Buffer.alloc(31).toString('base64') }),
    );
    await rejectsWith(decryptKeyConfig(plain), 'KEY_FILE_INVALID');
    const short = parseKeyConfig(
      JSON.stringify({ ...good(), data: Buffer.alloc(63).toString('base64') }),
    );
    await rejectsWith(decryptKeyConfig(short, 'abcdef'), 'KEY_FILE_INVALID');
  });
});
