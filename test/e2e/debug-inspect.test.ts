import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeKeyConfigFile } from '../../src/client/key-file.js';
import { CryptConfig } from '../../src/crypto/crypt-config.js';
import { createKeyConfig, generateKey } from '../../src/crypto/key-config.js';
import { FixedIndexWriter } from '../../src/datastore/index-writer.js';
import { encodeBlob } from '../../src/format/data-blob.js';
import { runCli, SHARED_FIXTURES } from './run-cli.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-inspect-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha256 = (data: Uint8Array | string): string =>
  createHash('sha256').update(data).digest('hex');

describe('burrow debug inspect file', () => {
  it('reads the dynamic index PBS wrote (upstream fixture)', async () => {
    const path = join(SHARED_FIXTURES, 'backup-client-pxar-data.ppxar.didx');
    const text = await runCli('burrow', ['debug', 'inspect', 'file', path]);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/type:\s+dynamic index \(\.didx\)/);
    expect(text.stdout).toMatch(/chunks:\s+100\n/);
    expect(text.stdout).toContain(
      'e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20 (ok)',
    );

    const json = await runCli('burrow', [
      'debug',
      'inspect',
      'file',
      path,
      '--output-format',
      'json',
    ]);
    expect(json.status).toBe(0);
    const report = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({
      kind: 'dynamic-index',
      chunkCount: 100,
      size: 104859232,
      csum: {
        stored: 'e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20',
        ok: true,
      },
    });
  });

  it('reports a blob, decodes it to stdout, and fails with status 4 on a damaged CRC', async () => {
    const path = join(dir, 'hello.blob');
    // The 17-byte plain blob of "hello" from pbs-formats §3.3.
    await writeFile(path, Buffer.from('42ab3807be8370a186a6103668656c6c6f', 'hex'));
    const json = await runCli('burrow', [
      'debug',
      'inspect',
      'file',
      path,
      '--output-format',
      'json',
    ]);
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      kind: 'blob',
      blobKind: 'plain',
      encodedSize: 17,
      decodedSize: 5,
      crc: { stored: '3610a686', computed: '3610a686', ok: true },
    });

    const decoded = await runCli('burrow', ['debug', 'inspect', 'file', path, '--decode', '-']);
    expect(decoded.status).toBe(0);
    expect(decoded.stdout).toBe('hello');
    expect(decoded.stderr).toMatch(/crc:\s+3610a686 \(ok\)/);

    const damaged = join(dir, 'damaged.blob');
    await writeFile(damaged, Buffer.from('42ab3807be8370a186a6103668656c6c6e', 'hex'));
    const bad = await runCli('burrow', ['debug', 'inspect', 'file', damaged]);
    expect(bad.status).toBe(4);
    expect(bad.stdout).toContain('MISMATCH');
    expect(bad.stderr).toMatch(/^Error: .*damaged\.blob: CRC32 mismatch/m);
  });

  it('decodes an encrypted blob only with the key file and its passphrase', async () => {
    const key = generateKey();
    const keyfile = join(dir, 'key.json');
    await writeKeyConfigFile(
      keyfile,
      await createKeyConfig(key, { kdf: 'pbkdf2', passphrase: 'correct horse' }),
    );
    const content = Buffer.from('secret configuration\n');
    const path = join(dir, 'secret.conf.blob');
    await writeFile(path, encodeBlob(content, { crypt: new CryptConfig(key) }));

    const noKey = await runCli('burrow', [
      'debug',
      'inspect',
      'file',
      path,
      '--output-format',
      'json',
    ]);
    expect(noKey.status).toBe(0);
    expect(JSON.parse(noKey.stdout)).toMatchObject({
      encrypted: true,
      crc: { ok: true },
      decodeError: { code: 'BLOB_KEY_REQUIRED' },
    });
    const noKeyDecode = await runCli('burrow', [
      'debug',
      'inspect',
      'file',
      path,
      '--decode',
      join(dir, 'out'),
    ]);
    expect(noKeyDecode.status).toBe(5);
    expect(noKeyDecode.stderr).toContain('--keyfile');

    const out = join(dir, 'secret.out');
    const withKey = await runCli(
      'burrow',
      ['debug', 'inspect', 'file', path, '--keyfile', keyfile, '--decode', out],
      {
        env: { PBS_ENCRYPTION_PASSWORD: 'correct horse' },
      },
    );
    expect(withKey.status).toBe(0);
    expect(await readFile(out)).toEqual(content);

    const wrongPass = await runCli(
      'burrow',
      ['debug', 'inspect', 'file', path, '--keyfile', keyfile],
      {
        env: { PBS_ENCRYPTION_PASSWORD: 'wrong horse' },
      },
    );
    expect(wrongPass.status).toBe(5);
    expect(wrongPass.stderr).toMatch(/^Error: .*key\.json/m);
  });

  it('shows the geometry of a fixed index', async () => {
    const path = join(dir, 'drive-scsi0.img.fidx');
    const zeroDigest = new Uint8Array(
      createHash('sha256')
        .update(Buffer.alloc(4 << 20))
        .digest(),
    );
    const writer = await FixedIndexWriter.create(path, { size: 10 << 20 });
    await writer.setDigest(0, zeroDigest);
    await writer.setDigest(1, zeroDigest);
    await writer.setDigest(2, zeroDigest);
    await writer.close();
    const json = await runCli('burrow', [
      'debug',
      'inspect',
      'file',
      path,
      '--output-format',
      'json-pretty',
    ]);
    expect(json.status).toBe(0);
    const expectedCsum = sha256(Buffer.concat([zeroDigest, zeroDigest, zeroDigest]));
    expect(JSON.parse(json.stdout)).toMatchObject({
      kind: 'fixed-index',
      size: 10 << 20,
      chunkSize: 4 << 20,
      chunkCount: 3,
      csum: { stored: expectedCsum, computed: expectedCsum, ok: true },
    });
  });

  it('fails clearly on files that are neither blob nor index, and on missing files', async () => {
    const path = join(dir, 'notes.txt');
    await writeFile(path, 'just some text, not a PBS file');
    const res = await runCli('burrow', ['debug', 'inspect', 'file', path]);
    expect(res.status).toBe(4);
    expect(res.stderr).toMatch(/^Error: .*notes\.txt: .*magic/m);
    const missing = await runCli('burrow', ['debug', 'inspect', 'file', join(dir, 'missing.blob')]);
    expect(missing.status).toBe(3);
  });
});

describe('burrow debug inspect chunk', () => {
  it('checks the digest against the file name', async () => {
    const data = Buffer.from('chunk content '.repeat(1000));
    const digest = sha256(data);
    const path = join(dir, digest);
    await writeFile(path, encodeBlob(data));
    const ok = await runCli('burrow', [
      'debug',
      'inspect',
      'chunk',
      path,
      '--output-format',
      'json',
    ]);
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({
      blobKind: 'zstd',
      decodedSize: data.length,
      digest: { stored: digest, computed: digest, ok: true },
    });

    const wrongName = join(dir, sha256('something else'));
    await writeFile(wrongName, encodeBlob(data));
    const bad = await runCli('burrow', ['debug', 'inspect', 'chunk', wrongName]);
    expect(bad.status).toBe(4);
    expect(bad.stdout).toMatch(/digest:\s+\S+ \(MISMATCH/);
  });

  it('checks an encrypted chunk with the key (digest keyed with the id key)', async () => {
    const key = generateKey();
    const crypt = new CryptConfig(key);
    const keyfile = join(dir, 'plain-key.json');
    await writeKeyConfigFile(keyfile, await createKeyConfig(key, { kdf: 'none' }));
    const data = Buffer.from('encrypted chunk data');
    const digest = sha256(Buffer.concat([data, crypt.idKey]));
    const path = join(dir, digest);
    await writeFile(path, encodeBlob(data, { crypt }));
    const res = await runCli('burrow', [
      'debug',
      'inspect',
      'chunk',
      path,
      '--keyfile',
      keyfile,
      '--output-format',
      'json',
    ]);
    expect(res.status).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({
      encrypted: true,
      digest: { computed: digest, ok: true },
    });
  });
});

describe('the CLIs', () => {
  it('print help and versions', async () => {
    const help = await runCli('burrow', ['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: burrow');
    const versions = await runCli('burrow-manager', ['versions', '--output-format', 'json']);
    expect(versions.status).toBe(0);
    const rows = JSON.parse(versions.stdout) as Array<{ package: string; version: string }>;
    expect(rows.find((r) => r.package === 'node')?.version).toBe(process.versions.node);
    expect(rows.find((r) => r.package === 'zstd')?.version).toMatch(/^\d+\.\d+\.\d+$/);
    const usage = await runCli('burrow', ['debug', 'inspect', 'file']);
    expect(usage.status).toBe(2);
  });
});
