/**
 * The listener on real TLS over 127.0.0.1: requests, keep-alive, ALPN, errors, the upgrade to
 * HTTP/2 on the same socket (pbs-protocol §5.2, §10), and graceful shutdown.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import { Writable } from 'node:stream';
import * as tls from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import { generateSelfSignedCertificate, type GeneratedCertificate } from './certificate.js';
import {
  startHttpsServer,
  type HttpsServerHandle,
  type HttpsServerOptions,
} from './https-server.js';
import { createLogger } from './logger.js';

const WINDOW = 32 * 1024 * 1024;
const MAX_FRAME = 4 * 1024 * 1024;

let cert: GeneratedCertificate;
beforeAll(async () => {
  cert = await generateSelfSignedCertificate({ hostname: 'burrow.test' });
});

/** Log lines as parsed JSON objects. */
function captureLog(): {
  lines: Array<Record<string, unknown>>;
  log: ReturnType<typeof createLogger>;
} {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n'))
        if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, log: createLogger({ level: 'debug', destination }) };
}

const handles: HttpsServerHandle[] = [];
afterEach(async () => {
  await Promise.all(handles.splice(0).map((h) => h.close({ graceMs: 0 })));
});

async function start(
  overrides: Partial<HttpsServerOptions> = {},
): Promise<{ handle: HttpsServerHandle; lines: Array<Record<string, unknown>> }> {
  const { lines, log } = captureLog();
  const handle = await startHttpsServer({
    host: '127.0.0.1',
    port: 0,
    certPem: cert.certPem,
    keyPem: cert.keyPem,
    log,
    onRequest: (_req, res) => {
      res.end('hello');
    },
    onUpgrade: (_req, socket) => {
      socket.destroy();
    },
    ...overrides,
  });
  handles.push(handle);
  return { handle, lines };
}

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  remotePort: number | undefined;
}

function get(port: number, options: https.RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: '/', ca: cert.certPem, ...options },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
            remotePort: res.socket?.localPort,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const colonFingerprint = (der: Buffer): string =>
  createHash('sha256')
    .update(der)
    .digest('hex')
    .replace(/(..)(?!$)/g, '$1:');

function peerFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const peer = socket.getPeerX509Certificate();
      socket.destroy();
      if (peer === undefined) reject(new Error('no peer certificate'));
      else resolve(colonFingerprint(peer.raw));
    });
    socket.on('error', reject);
  });
}

// ------------------------------------------------------------------------------------------
// The upgrade as the protocol module does it (see /tmp/burrow-docs/H2_UPGRADE_NOTES.md).

function upgradeToHttp2(
  socket: TLSSocket,
  head: Buffer,
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): void {
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: proxmox-backup-protocol-v1\r\n\r\n',
    (error) => {
      if (error) {
        socket.destroy();
        return;
      }
      const h2 = http2.createServer({
        settings: { initialWindowSize: WINDOW, maxFrameSize: MAX_FRAME },
      });
      h2.on('session', (session) => {
        session.setLocalWindowSize(WINDOW);
        session.on('error', () => undefined);
      });
      h2.on('sessionError', () => undefined);
      h2.on('stream', onStream);
      Object.defineProperty(socket, 'alpnProtocol', { value: 'h2', configurable: true });
      if (head.length > 0) socket.unshift(head);
      h2.emit('connection', socket);
    },
  );
}

function clientUpgrade(
  port: number,
): Promise<{ session: http2.ClientHttp2Session; socket: TLSSocket }> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      port,
      path: '/api2/json/backup?store=s',
      ca: cert.certPem,
      headers: { connection: 'upgrade', upgrade: 'proxmox-backup-protocol-v1' },
    });
    req.on('upgrade', (res, socket: TLSSocket, head: Buffer) => {
      expect(res.statusCode).toBe(101);
      if (head.length > 0) socket.unshift(head);
      const session = http2.connect('https://localhost:8007', { createConnection: () => socket });
      session.on('error', () => undefined);
      resolve({ session, socket });
    });
    req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
    req.on('error', reject);
    req.end();
  });
}

function h2Request(
  session: http2.ClientHttp2Session,
  path: string,
  body?: Buffer,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path, ':method': body ? 'POST' : 'GET' });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString() }));
    stream.on('error', reject);
    stream.end(body);
  });
}

const waitFor = async (check: () => boolean, ms = 3000): Promise<void> => {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('startHttpsServer: requests', () => {
  it('serves HTTPS on a free port with the given certificate', async () => {
    const { handle, lines } = await start();
    expect(handle.address.host).toBe('127.0.0.1');
    expect(handle.address.port).toBeGreaterThan(0);
    // The client checks the chain against the certificate itself and 127.0.0.1 against its IP SAN.
    const reply = await get(handle.address.port);
    expect(reply).toMatchObject({ status: 200, body: 'hello' });
    expect(await peerFingerprint(handle.address.port)).toBe(cert.fingerprint);
    await waitFor(() => lines.some((l) => l.msg === 'request'));
    expect(lines.find((l) => l.msg === 'request')).toMatchObject({
      level: 'info',
      method: 'GET',
      url: '/',
      status: 200,
      remote: '127.0.0.1',
    });
  });

  it('negotiates http/1.1 only and keeps connections alive', async () => {
    const { handle } = await start();
    const alpn = await new Promise<string | false | undefined>((resolve, reject) => {
      const s = tls.connect(
        {
          host: '127.0.0.1',
          port: handle.address.port,
          ca: cert.certPem,
          ALPNProtocols: ['h2', 'http/1.1'],
        },
        () => {
          resolve(s.alpnProtocol ?? undefined);
          s.destroy();
        },
      );
      s.on('error', reject);
    });
    expect(alpn).toBe('http/1.1');

    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const a = await get(handle.address.port, { agent });
      const b = await get(handle.address.port, { agent });
      expect(a.headers.connection).toBe('keep-alive');
      expect(b.remotePort).toBe(a.remotePort);
    } finally {
      agent.destroy();
    }
  });

  it('answers 500 when a handler throws or rejects, and keeps serving', async () => {
    const { handle, lines } = await start({
      onRequest: (req: IncomingMessage, res: ServerResponse) => {
        if (req.url === '/sync') throw new Error('boom');
        if (req.url === '/async') return Promise.reject(new Error('later boom'));
        res.end('fine');
        return undefined;
      },
    });
    const port = handle.address.port;
    expect((await get(port, { path: '/sync' })).status).toBe(500);
    expect((await get(port, { path: '/async' })).status).toBe(500);
    expect(await get(port, { path: '/ok' })).toMatchObject({ status: 200, body: 'fine' });
    const failures = lines.filter((l) => l.msg === 'request handler failed');
    expect(failures.map((l) => (l.err as { message: string }).message)).toEqual([
      'boom',
      'later boom',
    ]);
  });

  it('survives clients that refuse the certificate', async () => {
    const { handle } = await start();
    const refused = await new Promise<string>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: handle.address.port }, () =>
        resolve('connected'),
      );
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
    expect((await get(handle.address.port)).status).toBe(200);
  });

  it('presents a new certificate to new connections after setCertificate', async () => {
    const { handle } = await start();
    const next = await generateSelfSignedCertificate({ hostname: 'next.test' });
    handle.setCertificate(next.certPem, next.keyPem);
    expect(await peerFingerprint(handle.address.port)).toBe(next.fingerprint);
    expect(next.fingerprint).not.toBe(cert.fingerprint);
  });

  it('fails with IO_ERROR naming the address when the port is taken', async () => {
    const { handle } = await start();
    const second = startHttpsServer({
      host: '127.0.0.1',
      port: handle.address.port,
      certPem: cert.certPem,
      keyPem: cert.keyPem,
      log: captureLog().log,
      onRequest: () => undefined,
      onUpgrade: () => undefined,
    });
    await expect(second).rejects.toThrow(
      `cannot listen on 127.0.0.1:${handle.address.port}: EADDRINUSE`,
    );
    expect(await rejectionCodeOf(second)).toBe('IO_ERROR');
  });
});

describe('startHttpsServer: upgrade to HTTP/2 on the TLS socket', () => {
  it('runs an HTTP/2 server session after a 101, with 32 MiB windows and 4 MiB frames', async () => {
    let serverSocket: TLSSocket | undefined;
    const { handle } = await start({
      onUpgrade: (req, socket, head) => {
        expect(req.headers.upgrade).toBe('proxmox-backup-protocol-v1');
        serverSocket = socket;
        upgradeToHttp2(socket, head, (stream, headers) => {
          const hash = createHash('sha256');
          let bytes = 0;
          stream.on('data', (d: Buffer) => {
            bytes += d.length;
            hash.update(d);
          });
          stream.on('end', () => {
            stream.respond({ ':status': 200, 'content-type': 'application/json' });
            stream.end(
              JSON.stringify({
                data: { path: headers[':path'], bytes, sha256: hash.digest('hex') },
              }),
            );
          });
        });
      },
    });
    const { session } = await clientUpgrade(handle.address.port);
    const settings = await new Promise<http2.Settings>((resolve) =>
      session.once('remoteSettings', resolve),
    );
    expect(settings.initialWindowSize).toBe(WINDOW);
    expect(settings.maxFrameSize).toBe(MAX_FRAME);

    // The connection window is 32 MiB too (WINDOW_UPDATE after setLocalWindowSize).
    await waitFor(() => session.state.remoteWindowSize === WINDOW);
    const small = await h2Request(session, '/dynamic_chunk?wid=1');
    expect(small.status).toBe(200);
    expect(JSON.parse(small.body)).toEqual({
      data: { path: '/dynamic_chunk?wid=1', bytes: 0, sha256: createHash('sha256').digest('hex') },
    });
    // More than the 64 KiB default windows and more than one 4 MiB frame, on concurrent streams.
    const big = Buffer.alloc(5 * 1024 * 1024 + 3, 7);
    const replies = await Promise.all([
      h2Request(session, '/a', big),
      h2Request(session, '/b', big),
    ]);
    for (const reply of replies)
      expect((JSON.parse(reply.body) as { data: unknown }).data).toMatchObject({
        bytes: big.length,
        sha256: createHash('sha256').update(big).digest('hex'),
      });
    expect(handle.upgradedConnections).toBe(1);

    session.close();
    await waitFor(() => serverSocket?.destroyed === true);
    await waitFor(() => handle.upgradedConnections === 0);
  });

  it('hands early bytes (the client preface sent with the request) to the HTTP/2 session', async () => {
    const { handle } = await start({
      onUpgrade: (_req, socket, head) => {
        expect(head.length).toBe(24 + 9);
        upgradeToHttp2(socket, head, () => undefined);
      },
    });
    // Request, connection preface and an empty SETTINGS frame in one write.
    const acked = await new Promise<boolean>((resolve, reject) => {
      const s = tls.connect(
        { host: '127.0.0.1', port: handle.address.port, ca: cert.certPem },
        () => {
          s.write(
            Buffer.concat([
              Buffer.from(
                'GET /x HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: proxmox-backup-protocol-v1\r\n\r\n' +
                  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
              ),
              Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
            ]),
          );
        },
      );
      let buffer = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buffer = Buffer.concat([buffer, d]);
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        expect(buffer.subarray(0, 12).toString()).toBe('HTTP/1.1 101');
        // Walk the frames after the 101: a SETTINGS frame (type 4) with the ACK flag answers ours.
        for (let off = end + 4; off + 9 <= buffer.length;) {
          const length = buffer.readUIntBE(off, 3);
          if (buffer[off + 3] === 4 && ((buffer[off + 4] ?? 0) & 1) === 1) {
            s.destroy();
            resolve(true);
            return;
          }
          off += 9 + length;
        }
      });
      s.on('error', reject);
      setTimeout(() => resolve(false), 3000).unref();
    });
    expect(acked).toBe(true);
  });

  it('closes the socket when the upgrade handler fails', async () => {
    const { handle, lines } = await start({
      onUpgrade: () => Promise.reject(new Error('nope')),
    });
    await expect(clientUpgrade(handle.address.port)).rejects.toThrow(/socket hang up|ECONNRESET/);
    await waitFor(() => lines.some((l) => l.msg === 'upgrade handler failed'));
    await waitFor(() => handle.upgradedConnections === 0);
  });
});

describe('startHttpsServer: graceful shutdown', () => {
  it('closes idle keep-alive connections at once and refuses new ones', async () => {
    const { handle } = await start();
    const port = handle.address.port;
    const agent = new https.Agent({ keepAlive: true });
    try {
      await get(port, { agent });
      const started = Date.now();
      await handle.close({ graceMs: 10_000 });
      expect(Date.now() - started).toBeLessThan(2000);
      await expect(get(port)).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      agent.destroy();
    }
  });

  it('lets a running request finish and closes its connection afterwards', async () => {
    let release: (() => void) | undefined;
    const { handle } = await start({
      onRequest: async (_req, res) => {
        await new Promise<void>((r) => (release = r));
        res.end('finished');
      },
    });
    const reply = get(handle.address.port);
    await waitFor(() => release !== undefined);
    let closed = false;
    const closing = handle.close({ graceMs: 10_000 }).then(() => (closed = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).toBe(false);
    release?.();
    expect(await reply).toMatchObject({ status: 200, body: 'finished' });
    expect((await reply).headers.connection).toBe('close');
    await closing;
  });

  it('waits for an upgraded session that ends within the grace period', async () => {
    const { handle, lines } = await start({
      onUpgrade: (_req, socket, head) => upgradeToHttp2(socket, head, () => undefined),
    });
    const { session } = await clientUpgrade(handle.address.port);
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    const started = Date.now();
    const closing = handle.close({ graceMs: 10_000 });
    setTimeout(() => session.close(), 200);
    await closing;
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(
      lines.some((l) => l.msg === 'grace period over: closing the remaining connections'),
    ).toBe(false);
  });

  it('destroys upgraded sessions still open when the grace period ends', async () => {
    let serverSocketClosed = false;
    const { handle, lines } = await start({
      onUpgrade: (_req, socket, head) => {
        socket.on('close', () => (serverSocketClosed = true));
        upgradeToHttp2(socket, head, () => undefined);
      },
    });
    const { session } = await clientUpgrade(handle.address.port);
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    const clientClosed = new Promise((resolve) => session.once('close', resolve));
    const started = Date.now();
    await handle.close({ graceMs: 300 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(serverSocketClosed).toBe(true);
    expect(handle.upgradedConnections).toBe(0);
    await clientClosed;
    expect(
      lines.find((l) => l.msg === 'grace period over: closing the remaining connections'),
    ).toMatchObject({
      level: 'warn',
      sessions: 1,
    });
  });

  it('a second close joins the first and can end the grace period early', async () => {
    const { handle } = await start({
      onUpgrade: (_req, socket, head) => upgradeToHttp2(socket, head, () => undefined),
    });
    const { session } = await clientUpgrade(handle.address.port);
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    const started = Date.now();
    const first = handle.close({ graceMs: 60_000 });
    const second = handle.close({ graceMs: 0 });
    await Promise.all([first, second]);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
