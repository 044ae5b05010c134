import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../../test/helpers/error-code.js';
import { FakeClock } from '../../lib/clock.js';
import { BurrowError } from '../../lib/errors.js';
import { PbsHttpClient, type PbsConnectOptions } from './http-client.js';
import type { H2Session } from './h2-session.js';
import {
  FakePbs,
  makeTestCertificates,
  type FakePbsOptions,
  type RecordedRequest,
  type TestCertificates,
} from '../../../test/helpers/test-pbs-server.js';

const MiB = 1024 * 1024;
const USER = 'root@pam';
const PASSWORD = 'secret password';
const TOKEN = 'backup@pbs!client';
const SECRET = 'b1a3c1d0-0000-4000-8000-000000000001';

let certs: TestCertificates;
beforeAll(() => {
  certs = makeTestCertificates();
});
afterAll(() => certs.cleanup());

const servers: FakePbs[] = [];
const clients: PbsHttpClient[] = [];
const sessions: H2Session[] = [];
afterEach(async () => {
  for (const h of sessions.splice(0)) await h.close();
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
});

/** Test routes: echo what arrived, and fixed error answers as PBS sends them (plain text). */
function routes(req: RecordedRequest): { status: number; body: string | Buffer } | undefined {
  const url = new URL(req.url, 'https://x');
  const errors: Record<string, [number, string]> = {
    '/api2/json/e400': [
      400,
      "parameter verification failed - 'x': schema does not allow additional properties\n",
    ],
    '/api2/json/e401': [401, 'authentication failed'],
    '/api2/json/e403': [403, 'permission check failed'],
    '/api2/json/e404': [404, "Path '/api2/json/e404' not found."],
    '/api2/json/e500': [500, 'internal error'],
  };
  const e = errors[url.pathname];
  if (e !== undefined) return { status: e[0], body: e[1] };
  if (url.pathname === '/api2/json/echo') {
    return {
      status: 200,
      body: JSON.stringify({
        data: {
          method: req.method,
          query: [...url.searchParams.entries()],
          contentType: req.headers['content-type'] ?? null,
          body: req.body.length > 0 ? (JSON.parse(req.body.toString()) as unknown) : null,
        },
      }),
    };
  }
  if (url.pathname === '/api2/json/raw' && req.method === 'GET') {
    return { status: 200, body: Buffer.alloc(Number(url.searchParams.get('size')), 7) };
  }
  if (url.pathname === '/api2/json/raw' && req.method === 'POST') {
    return {
      status: 200,
      body: JSON.stringify({
        data: {
          query: [...url.searchParams.entries()],
          contentType: req.headers['content-type'],
          sha256: createHash('sha256').update(req.body).digest('hex'),
        },
      }),
    };
  }
  if (url.pathname === '/api2/json/not-json') return { status: 200, body: '<html>' };
  if (url.pathname === '/api2/json/no-data') return { status: 200, body: '{"errors":{}}' };
  return undefined;
}

async function start(extra: Partial<FakePbsOptions> = {}): Promise<FakePbs> {
  const s = await FakePbs.start({
    key: certs.selfKey,
    cert: certs.selfPem,
    users: { [USER]: PASSWORD },
    tokens: { [TOKEN]: SECRET },
    routes,
    ...extra,
  });
  servers.push(s);
  return s;
}

async function connect(s: FakePbs, o: Partial<PbsConnectOptions> = {}): Promise<PbsHttpClient> {
  const client = await PbsHttpClient.connect({
    host: '127.0.0.1',
    port: s.port,
    authId: USER,
    password: PASSWORD,
    fingerprint: certs.selfFingerprintOpenssl,
    cachePath: false,
    env: {},
    ...o,
  });
  clients.push(client);
  return client;
}

describe('login with a ticket', () => {
  it('posts JSON credentials, then sends the cookie, and the CSRF token on all but GET', async () => {
    const s = await start();
    const client = await connect(s);
    const login = s.requests[0]!;
    expect(login.method).toBe('POST');
    expect(login.url).toBe('/api2/json/access/ticket');
    expect(login.headers['content-type']).toBe('application/json');
    expect(JSON.parse(login.body.toString())).toEqual({ username: USER, password: PASSWORD });
    const ticket = s.tickets[0]!;

    expect(await client.get('/echo', { a: 1, list: ['x', 'y'], flag: false })).toEqual({
      method: 'GET',
      query: [
        ['a', '1'],
        ['list', 'x'],
        ['list', 'y'],
        ['flag', 'false'],
      ],
      contentType: null,
      body: null,
    });
    const get = s.requests.at(-1)!;
    expect(get.headers.cookie).toBe(`PBSAuthCookie=${ticket}`);
    expect(get.headers.csrfpreventiontoken).toBeUndefined();
    expect(get.headers.authorization).toBeUndefined();

    expect(await client.post('/echo', { name: 'x', n: 2 })).toEqual({
      method: 'POST',
      query: [],
      contentType: 'application/json',
      body: { name: 'x', n: 2 },
    });
    const post = s.requests.at(-1)!;
    expect(post.headers.cookie).toBe(`PBSAuthCookie=${ticket}`);
    expect(post.headers.csrfpreventiontoken).toBe(`csrf-for-${ticket}`);

    expect(await client.put('/echo', { a: [1, 2] })).toMatchObject({
      method: 'PUT',
      body: { a: [1, 2] },
    });
    expect(await client.delete('/echo', { id: 'z' })).toMatchObject({
      method: 'DELETE',
      query: [['id', 'z']],
      body: null,
    });
    expect(s.requests.at(-1)!.headers.csrfpreventiontoken).toBe(`csrf-for-${ticket}`);
    expect(s.tickets).toHaveLength(1);
  });

  it('fails with AUTH_FAILED and the server message on a wrong password', async () => {
    const s = await start();
    const error = (await connect(s, { password: 'wrong' }).catch((e: unknown) => e)) as BurrowError;
    expect(error.code).toBe('AUTH_FAILED');
    expect(error.message).toContain('permission check failed.');
    expect(error.message).toContain(USER);
  });

  it('takes the password from PBS_PASSWORD, then from readPassword, else refuses', async () => {
    const s = await start();
    await connect(s, { password: undefined, env: { PBS_PASSWORD: PASSWORD } });
    let asked = 0;
    await connect(s, {
      password: undefined,
      readPassword: () => (asked++, Promise.resolve(PASSWORD)),
    });
    expect(asked).toBe(1);
    expect(await rejectionCodeOf(connect(s, { password: undefined }))).toBe('INVALID_ARGUMENT');
    expect(s.tickets).toHaveLength(2);
  });

  it('renews a ticket older than an hour by posting it as the password', async () => {
    const s = await start();
    const clock = new FakeClock(1_700_000_000);
    const client = await connect(s, { clock });
    const first = s.tickets[0]!;
    clock.advance(3000);
    await client.get('/whoami');
    expect(s.tickets).toHaveLength(1);
    clock.advance(700);
    expect(await client.get('/whoami')).toBe(USER);
    const renew = s.requests.filter((r) => r.url === '/api2/json/access/ticket')[1]!;
    expect(JSON.parse(renew.body.toString())).toEqual({ username: USER, password: first });
    const second = s.tickets[1]!;
    expect(s.requests.at(-1)!.headers.cookie).toBe(`PBSAuthCookie=${second}`);
  });
});

describe('API tokens', () => {
  it('sends the PBSAPIToken header and never logs in', async () => {
    const s = await start();
    const client = await connect(s, { authId: TOKEN, password: SECRET });
    expect(s.requests).toHaveLength(0);
    expect(await client.post('/echo', {})).toMatchObject({ method: 'POST', body: {} });
    const req = s.requests[0]!;
    expect(req.headers.authorization).toBe(`PBSAPIToken ${TOKEN}:${SECRET}`);
    expect(req.headers.cookie).toBeUndefined();
    expect(req.headers.csrfpreventiontoken).toBeUndefined();
  });

  it('reports a wrong secret as AUTH_FAILED on the first call', async () => {
    const s = await start();
    const client = await connect(s, { authId: TOKEN, password: 'nope' });
    expect(await rejectionCodeOf(client.get('/whoami'))).toBe('AUTH_FAILED');
  });

  it('refuses secrets and auth ids that cannot be sent', async () => {
    const s = await start();
    expect(await rejectionCodeOf(connect(s, { authId: TOKEN, password: 'a\nb' }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(await rejectionCodeOf(connect(s, { authId: 'no-realm' }))).toBe('INVALID_AUTHID');
  });
});

describe('answers', () => {
  it('maps error statuses to codes with the plain-text message and details', async () => {
    const s = await start();
    const client = await connect(s, { authId: TOKEN, password: SECRET });
    const cases: [string, string, string][] = [
      [
        '/e400',
        'REMOTE_ERROR',
        "parameter verification failed - 'x': schema does not allow additional properties",
      ],
      ['/e401', 'AUTH_FAILED', 'authentication failed'],
      ['/e403', 'PERMISSION_DENIED', 'permission check failed'],
      ['/e404', 'NOT_FOUND', "Path '/api2/json/e404' not found."],
      ['/e500', 'REMOTE_ERROR', 'internal error'],
    ];
    for (const [path, code, message] of cases) {
      const error = (await client.get(path).catch((e: unknown) => e)) as BurrowError;
      expect(error).toBeInstanceOf(BurrowError);
      expect([error.code, error.message]).toEqual([code, message]);
      expect(error.details).toEqual({ status: Number(path.slice(2)), path: `/api2/json${path}` });
    }
  });

  it('refuses answers that are not a {data} envelope', async () => {
    const s = await start();
    const client = await connect(s, { authId: TOKEN, password: SECRET });
    expect(await rejectionCodeOf(client.get('/not-json'))).toBe('REMOTE_ERROR');
    expect(await rejectionCodeOf(client.get('/no-data'))).toBe('REMOTE_ERROR');
  });

  it('downloads raw bytes as a stream and uploads raw bodies with query parameters', async () => {
    const s = await start();
    const client = await connect(s, { authId: TOKEN, password: SECRET });
    const stream = await client.download('/raw', { size: 3 * MiB + 5 });
    const parts: Buffer[] = [];
    for await (const part of stream) parts.push(part as Buffer);
    const got = Buffer.concat(parts);
    expect(got.length).toBe(3 * MiB + 5);
    expect(got.every((b) => b === 7)).toBe(true);
    expect(await rejectionCodeOf(client.download('/e404'))).toBe('NOT_FOUND');

    const body = Buffer.from('raw body bytes');
    expect(
      await client.upload('/raw', { 'file-name': 'x.blob', 'encoded-size': body.length }, body),
    ).toEqual({
      query: [
        ['file-name', 'x.blob'],
        ['encoded-size', String(body.length)],
      ],
      contentType: 'application/octet-stream',
      sha256: createHash('sha256').update(body).digest('hex'),
    });
    const streamed = await client.upload(
      '/raw',
      undefined,
      Readable.from([body, body]),
      'text/plain',
    );
    expect(streamed).toMatchObject({
      contentType: 'text/plain',
      sha256: createHash('sha256')
        .update(Buffer.concat([body, body]))
        .digest('hex'),
    });
  });
});

describe('upgrade to HTTP/2', () => {
  const q = { store: 'store1', 'backup-type': 'host', 'backup-id': 'h', 'backup-time': 1000 };

  async function session(s: FakePbs, user = false): Promise<H2Session> {
    const client = user ? await connect(s) : await connect(s, { authId: TOKEN, password: SECRET });
    const h = await client.upgrade('/api2/json/backup', q, 'proxmox-backup-protocol-v1');
    sessions.push(h);
    return h;
  }

  it('sends Connection/Upgrade with the credentials and runs concurrent streams', async () => {
    const s = await start();
    const h = await session(s);
    const up = s.upgrades[0]!;
    expect(up.headers.connection).toBe('upgrade');
    expect(up.headers.upgrade).toBe('proxmox-backup-protocol-v1');
    expect(up.headers.authorization).toBe(`PBSAPIToken ${TOKEN}:${SECRET}`);
    expect(new URL(up.url, 'https://x').searchParams.get('backup-time')).toBe('1000');
    // The barrier answers only once 6 requests are open at the same time.
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => h.getJson('/barrier', { n: 6 })),
    );
    expect(answers).toEqual([6, 6, 6, 6, 6, 6]);
    expect(s.maxConcurrentStreams).toBeGreaterThanOrEqual(6);
    expect(await h.getJson('/previous_backup_time')).toBeNull();
    // Session requests carry no credentials of their own and are relative to the session.
    expect(s.sessionRequests.map((r) => r.path)).toContain('/previous_backup_time');
  });

  it('upgrades with a ticket (cookie, GET: no CSRF token)', async () => {
    const s = await start();
    await session(s, true);
    const up = s.upgrades[0]!;
    expect(up.headers.cookie).toBe(`PBSAuthCookie=${s.tickets[0]}`);
    expect(up.headers.authorization).toBeUndefined();
  });

  it('moves 16 MiB bodies both ways with PBS windows and with HTTP/2 default windows', async () => {
    for (const extra of [{}, { h2Settings: {}, bigConnectionWindow: false }]) {
      const s = await start(extra);
      const h = await session(s);
      const big = Buffer.alloc(16 * MiB, 0x5a);
      const t0 = Date.now();
      await Promise.all([
        h.upload('/speedtest', {}, big),
        h.upload('/speedtest', {}, big),
        h.download('/bytes', { size: 16 * MiB }).then((b) => expect(b.length).toBe(16 * MiB)),
      ]);
      expect(s.speedtestBytes).toEqual([16 * MiB, 16 * MiB]);
      // A stall would hang until the test timeout; this only bounds a crawl.
      expect(Date.now() - t0).toBeLessThan(20_000);
    }
  });

  it('reads the server bytes that arrived together with the 101', async () => {
    const s = await start({ coalesce101: true });
    const h = await session(s);
    // The server's SETTINGS came in the same TLS record as the 101 and were read past it.
    expect(h.headBytes).toBeGreaterThan(0);
    expect(await h.getJson('/previous_backup_time')).toBeNull();
    expect(await h.download('/bytes', { size: 10 })).toEqual(Buffer.alloc(10, 0x41));
  });

  it('throws the server refusal instead of a session', async () => {
    const s = await start({ refuseUpgrade: { status: 403, body: 'permission check failed' } });
    const client = await connect(s, { authId: TOKEN, password: SECRET });
    const error = (await client
      .upgrade('/api2/json/backup', q, 'proxmox-backup-protocol-v1')
      .catch((e: unknown) => e)) as BurrowError;
    expect([error.code, error.message]).toEqual(['PERMISSION_DENIED', 'permission check failed']);
  });

  it('throws a bad-parameter answer to the upgrade as REMOTE_ERROR with its message', async () => {
    const s = await start();
    const client = await connect(s, { authId: TOKEN, password: SECRET });
    const bad = (await client
      .upgrade('/api2/json/backup', { ...q, store: undefined }, 'proxmox-backup-protocol-v1')
      .catch((e: unknown) => e)) as BurrowError;
    expect(bad.code).toBe('REMOTE_ERROR');
    expect(bad.message).toContain("'store'");
    expect(bad.details).toEqual({ status: 400, path: '/api2/json/backup' });
  });

  it('never lets a download overlap a request that sends data (Node HTTP/2 stall)', async () => {
    const s = await start();
    const h = await session(s);
    const big = Buffer.alloc(16 * MiB, 1);
    const order: string[] = [];
    await Promise.all([
      h.upload('/speedtest', {}, big).then(() => order.push('upload 1')),
      h.download('/bytes', { size: 16 * MiB }).then(() => order.push('download')),
      h.upload('/speedtest', {}, big).then(() => order.push('upload 2')),
    ]);
    // Arrival order is kept: the download waits for the first upload, the second for the download.
    expect(order).toEqual(['upload 1', 'download', 'upload 2']);
    expect(s.sessionRequests.map((r) => r.path)).toEqual(['/speedtest', '/bytes', '/speedtest']);
  });

  it('maps session error answers like REST ones', async () => {
    const s = await start();
    const h = await session(s);
    const error = (await h.postJson('/finish').catch((e: unknown) => e)) as BurrowError;
    expect([error.code, error.message]).toEqual(['REMOTE_ERROR', 'missing index.json.blob']);
    expect(error.details).toEqual({ status: 400, path: '/finish' });
    expect(await rejectionCodeOf(h.getJson('/nowhere'))).toBe('NOT_FOUND');
  });

  it('fails pending and later requests with CONNECTION_FAILED when the connection breaks', async () => {
    const s = await start();
    const h = await session(s);
    const pending = h.getJson('/barrier', { n: 2 });
    const hangup = h.getJson('/hangup');
    expect(await rejectionCodeOf(pending)).toBe('CONNECTION_FAILED');
    expect(await rejectionCodeOf(hangup)).toBe('CONNECTION_FAILED');
    expect(await rejectionCodeOf(h.getJson('/previous_backup_time'))).toBe('CONNECTION_FAILED');
  });

  it('is closed by close(); requests after it fail', async () => {
    const s = await start();
    const h = await session(s);
    await h.close();
    expect(h.closed).toBe(true);
    expect(await rejectionCodeOf(h.getJson('/previous_backup_time'))).toBe('CONNECTION_FAILED');
    await h.close();
  });
});
