import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../../test/helpers/error-code.js';
import { BurrowError } from '../../lib/errors.js';
import {
  certificateFingerprint,
  defaultFingerprintCachePath,
  fingerprintCacheKey,
  normalizeFingerprint,
  readFingerprintCache,
  rememberFingerprint,
  terminalTrustPrompt,
  type TrustQuestion,
} from './fingerprint-trust.js';
import { DEFERRED_EXTRA_CA_ENV } from './env-names.js';
import { PbsHttpClient, type PbsConnectOptions } from './http-client.js';
import {
  FakePbs,
  makeTestCertificates,
  type TestCertificates,
} from '../../../test/helpers/test-pbs-server.js';

const TOKEN = 'backup@pbs!client';
const SECRET = 'b1a3c1d0-0000-4000-8000-000000000001';

let certs: TestCertificates;
/** openssl's printing, lowercased: an independent derivation of the fingerprint. */
const lower = (fp: string): string => fp.toLowerCase();

beforeAll(() => {
  certs = makeTestCertificates();
});
afterAll(() => certs.cleanup());

let dir: string;
const servers: FakePbs[] = [];
const clients: PbsHttpClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  dir = mkdtempSync(join(tmpdir(), 'burrow-trust-'));
  return dir;
}

async function server(kind: 'self' | 'leaf' | 'other'): Promise<FakePbs> {
  const s = await FakePbs.start({
    key: certs[`${kind}Key`],
    cert: certs[`${kind}Pem`],
    tokens: { [TOKEN]: SECRET },
  });
  servers.push(s);
  return s;
}

async function connect(
  s: FakePbs,
  o: Partial<PbsConnectOptions> & { cachePath: string | false },
): Promise<PbsHttpClient> {
  const client = await PbsHttpClient.connect({
    host: 'localhost',
    port: s.port,
    authId: TOKEN,
    password: SECRET,
    env: {},
    prompt: () => Promise.resolve(undefined),
    ...o,
  });
  clients.push(client);
  return client;
}

describe('fingerprints', () => {
  it('is SHA-256 of the DER certificate, as openssl prints it', () => {
    const der = Buffer.from(
      certs.selfPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''),
      'base64',
    );
    expect(certificateFingerprint(der)).toBe(lower(certs.selfFingerprintOpenssl));
    expect(certificateFingerprint(der)).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
  });

  it('normalizes case and colon-less hex, refuses anything else', () => {
    const fp = lower(certs.selfFingerprintOpenssl);
    expect(normalizeFingerprint(certs.selfFingerprintOpenssl)).toBe(fp);
    expect(normalizeFingerprint(` ${fp.replace(/:/g, '').toUpperCase()} `)).toBe(fp);
    for (const bad of ['', 'ab:cd', `${fp}:00`, fp.replace(/:/g, '-'), `${fp.slice(0, -1)}g`]) {
      expect(() => normalizeFingerprint(bad)).toThrow(BurrowError);
      try {
        normalizeFingerprint(bad);
      } catch (error) {
        expect((error as BurrowError).code).toBe('INVALID_FINGERPRINT');
      }
    }
  });

  it('names servers by host, with the port when it is not 8007', () => {
    expect(fingerprintCacheKey('pbs.example', 8007)).toBe('pbs.example');
    expect(fingerprintCacheKey('pbs.example', 8008)).toBe('pbs.example:8008');
    expect(fingerprintCacheKey('::1', 8008)).toBe('[::1]:8008');
  });

  it('keeps the cache under XDG_CONFIG_HOME, else ~/.config', () => {
    expect(defaultFingerprintCachePath({ XDG_CONFIG_HOME: '/x', HOME: '/h' })).toBe(
      '/x/burrow/fingerprints',
    );
    expect(defaultFingerprintCachePath({ HOME: '/h' })).toBe('/h/.config/burrow/fingerprints');
    expect(defaultFingerprintCachePath({ XDG_CONFIG_HOME: '', HOME: '/h' })).toBe(
      '/h/.config/burrow/fingerprints',
    );
  });

  it('reads and rewrites the cache in PBS line format, skipping damaged lines', async () => {
    const path = join(tempDir(), 'sub', 'fingerprints');
    expect(await readFingerprintCache(path)).toEqual(new Map());
    const a = lower(certs.selfFingerprintOpenssl);
    const b = lower(certs.leafFingerprintOpenssl);
    await rememberFingerprint(path, 'one', a);
    await rememberFingerprint(path, 'two', b);
    await rememberFingerprint(path, 'one', b.toUpperCase());
    expect(readFileSync(path, 'utf8')).toBe(`two ${b}\none ${b}\n`);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    writeFileSync(path, `junk\nthree  ${a}\nfour not-a-fingerprint\n\nfive ${a} extra\n`);
    expect(await readFingerprintCache(path)).toEqual(new Map([['three', a]]));
  });
});

describe('terminal prompt', () => {
  const question: TrustQuestion = { server: 'pbs', fingerprint: 'aa:bb', reason: 'self-signed' };

  it('cannot ask without a terminal', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    expect(await terminalTrustPrompt({ input, output })(question)).toBeUndefined();
  });

  it('asks on a terminal and takes y or n, repeating on anything else', async () => {
    const ask = async (answer: string): Promise<[boolean | undefined, string]> => {
      const input = Object.assign(new PassThrough(), { isTTY: true });
      const output = Object.assign(new PassThrough(), { isTTY: true });
      let shown = '';
      output.on('data', (d: Buffer) => (shown += d.toString()));
      const result = terminalTrustPrompt({ input, output })({ ...question, expected: 'cc:dd' });
      input.write(answer);
      return [await result, shown];
    };
    const [yes, shown] = await ask('y\n');
    expect(yes).toBe(true);
    expect(shown).toContain('aa:bb');
    expect(shown).toContain('cc:dd');
    expect((await ask('no\n'))[0]).toBe(false);
    expect((await ask('maybe\nyes\n'))[0]).toBe(true);
  });
});

describe('certificate trust on connect', () => {
  it('accepts a chain-valid certificate that names the host, without the cache', async () => {
    const s = await server('leaf');
    const cachePath = join(tempDir(), 'fingerprints');
    const client = await connect(s, { ca: certs.caPem, cachePath });
    expect(await client.get('/whoami')).toBe(TOKEN);
    expect(client.lastTrust?.how).toBe('chain');
    expect(existsSync(cachePath)).toBe(false);
  });

  it("trusts a CA from NODE_EXTRA_CA_CERTS that the bin deferred, and only that file's", async () => {
    const s = await server('leaf');
    const caFile = join(certs.dir, 'ca.pem');
    const client = await connect(s, { env: { [DEFERRED_EXTRA_CA_ENV]: caFile }, cachePath: false });
    expect(await client.get('/whoami')).toBe(TOKEN);
    expect(client.lastTrust?.how).toBe('chain');

    // A file that cannot be read leaves Node's roots only: the leaf is not trusted then.
    const warnings: string[] = [];
    const asked: TrustQuestion[] = [];
    const untrusting = await connect(s, {
      env: { [DEFERRED_EXTRA_CA_ENV]: join(certs.dir, 'missing.pem') },
      cachePath: false,
      warn: (m) => warnings.push(m),
      prompt: (q) => (asked.push(q), Promise.resolve(undefined)),
    });
    expect(await rejectionCodeOf(untrusting.get('/whoami'))).toBe('TLS_UNTRUSTED');
    expect(asked).toHaveLength(1);
    expect(warnings.join('\n')).toContain('missing.pem');
  });

  it('does not take a chain-valid certificate for another host name on trust', async () => {
    const s = await server('other');
    const asked: TrustQuestion[] = [];
    const client = await connect(s, {
      ca: certs.caPem,
      cachePath: false,
      prompt: (q) => (asked.push(q), Promise.resolve(undefined)),
    });
    expect(await rejectionCodeOf(client.get('/whoami'))).toBe('TLS_UNTRUSTED');
    expect(asked).toHaveLength(1);
    expect(asked[0]!.fingerprint).toBe(lower(certs.otherFingerprintOpenssl));
    expect(asked[0]!.reason).toContain('localhost');
    // No HTTP request (with its token) reached the server.
    expect(s.requests).toHaveLength(0);
  });

  it('accepts a self-signed certificate by the expected fingerprint and remembers it', async () => {
    const s = await server('self');
    const cachePath = join(tempDir(), 'fingerprints');
    const client = await connect(s, {
      fingerprint: certs.selfFingerprintOpenssl,
      cachePath,
      prompt: () => Promise.reject(new Error('must not ask')),
    });
    expect(await client.get('/whoami')).toBe(TOKEN);
    expect(client.lastTrust).toEqual({
      how: 'fingerprint',
      fingerprint: lower(certs.selfFingerprintOpenssl),
    });
    expect(readFileSync(cachePath, 'utf8')).toBe(
      `localhost:${s.port} ${lower(certs.selfFingerprintOpenssl)}\n`,
    );
  });

  it('takes the expected fingerprint from PBS_FINGERPRINT', async () => {
    const s = await server('self');
    const client = await connect(s, {
      env: { PBS_FINGERPRINT: certs.selfFingerprintOpenssl.replace(/:/g, '') },
      cachePath: false,
    });
    expect(await client.get('/whoami')).toBe(TOKEN);
    expect(client.lastTrust?.how).toBe('fingerprint');
  });

  it('refuses a mismatch with TLS_UNTRUSTED, showing the fingerprint and how to trust it', async () => {
    const s = await server('self');
    const wrong = lower(certs.leafFingerprintOpenssl);
    const client = await connect(s, { fingerprint: wrong, cachePath: false });
    const error = await client.get('/whoami').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BurrowError);
    const e = error as BurrowError;
    expect(e.code).toBe('TLS_UNTRUSTED');
    const fp = lower(certs.selfFingerprintOpenssl);
    expect(e.message).toContain(fp);
    expect(e.message).toContain(wrong);
    expect(e.message).toContain('PBS_FINGERPRINT');
    expect(e.message).toContain('PBS_FINGERPRINT=');
    expect(e.details).toMatchObject({ fingerprint: fp, expected: wrong });
    // Neither a request nor an upgrade (with the token) reached the untrusted server.
    expect(
      await rejectionCodeOf(client.upgrade('/api2/json/backup', {}, 'proxmox-backup-protocol-v1')),
    ).toBe('TLS_UNTRUSTED');
    expect(s.requests).toHaveLength(0);
    expect(s.upgrades).toHaveLength(0);
  });

  it('refuses an unknown certificate when nobody can be asked (no terminal)', async () => {
    const s = await server('self');
    const client = await connect(s, {
      cachePath: join(tempDir(), 'fingerprints'),
      prompt: terminalTrustPrompt({ input: new PassThrough(), output: new PassThrough() }),
    });
    expect(await rejectionCodeOf(client.get('/whoami'))).toBe('TLS_UNTRUSTED');
    expect(existsSync(join(dir, 'fingerprints'))).toBe(false);
  });

  it('refuses when the person says no, and remembers nothing', async () => {
    const s = await server('self');
    const cachePath = join(tempDir(), 'fingerprints');
    const client = await connect(s, { cachePath, prompt: () => Promise.resolve(false) });
    const error = (await client.get('/whoami').catch((e: unknown) => e)) as BurrowError;
    expect(error.code).toBe('TLS_UNTRUSTED');
    expect(error.message).toContain('refused');
    expect(existsSync(cachePath)).toBe(false);
  });

  it('asks once, writes the cache after a yes, and trusts by the cache next time', async () => {
    const s = await server('self');
    const cachePath = join(tempDir(), 'fingerprints');
    const asked: TrustQuestion[] = [];
    const client = await connect(s, {
      cachePath,
      prompt: (q) => (asked.push(q), Promise.resolve(true)),
    });
    expect(await client.get('/whoami')).toBe(TOKEN);
    expect(client.lastTrust?.how).toBe('prompt');
    // A second connection of the same client (an upgrade never reuses a pooled one) is not asked.
    await (
      await client
        .upgrade('/api2/json/nowhere', {}, 'proxmox-backup-protocol-v1')
        .catch(() => undefined)
    )?.close();
    expect(s.upgrades).toHaveLength(1);
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({
      server: `localhost:${s.port}`,
      fingerprint: lower(certs.selfFingerprintOpenssl),
    });
    expect(readFileSync(cachePath, 'utf8')).toBe(
      `localhost:${s.port} ${lower(certs.selfFingerprintOpenssl)}\n`,
    );

    const again = await connect(s, {
      cachePath,
      prompt: () => Promise.reject(new Error('must not ask')),
    });
    expect(await again.get('/whoami')).toBe(TOKEN);
    expect(again.lastTrust?.how).toBe('cache');
  });

  it('does not let a remembered fingerprint of another certificate pass', async () => {
    const s = await server('self');
    const cachePath = join(tempDir(), 'fingerprints');
    writeFileSync(cachePath, `localhost:${s.port} ${lower(certs.leafFingerprintOpenssl)}\n`);
    const client = await connect(s, { cachePath });
    const error = (await client.get('/whoami').catch((e: unknown) => e)) as BurrowError;
    expect(error.code).toBe('TLS_UNTRUSTED');
    expect(error.message).toContain('remembered');
  });
});

describe('connection failures', () => {
  let hold: Server | undefined;
  afterEach(async () => {
    if (hold !== undefined) await new Promise((r) => hold!.close(r));
    hold = undefined;
  });

  it('reports a refused connection as CONNECTION_FAILED', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const client = await PbsHttpClient.connect({
      host: '127.0.0.1',
      port,
      authId: TOKEN,
      password: SECRET,
      env: {},
      cachePath: false,
    });
    clients.push(client);
    expect(await rejectionCodeOf(client.get('/whoami'))).toBe('CONNECTION_FAILED');
  });

  it('gives up on a server that never completes the TLS handshake', async () => {
    const sockets: Socket[] = [];
    hold = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => hold!.listen(0, '127.0.0.1', r));
    const port = (hold.address() as { port: number }).port;
    const client = await PbsHttpClient.connect({
      host: '127.0.0.1',
      port,
      authId: TOKEN,
      password: SECRET,
      env: {},
      cachePath: false,
      connectTimeoutMs: 200,
    });
    clients.push(client);
    const error = (await client.get('/whoami').catch((e: unknown) => e)) as BurrowError;
    expect(error.code).toBe('CONNECTION_FAILED');
    expect(error.message).toContain('no TLS connection');
    for (const s of sockets) s.destroy();
  });
});
