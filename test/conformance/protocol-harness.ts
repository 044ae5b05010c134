/**
 * A real HTTPS server on 127.0.0.1 for the protocol conformance tests, and a client that speaks
 * the protocols the raw way: HTTP/1.1 written by hand over node:tls, then node:http2 on the same
 * socket. Nothing of Burrow's own client is used, so these tests pin the wire behaviour itself.
 *
 * The server has a real datastore in a temp dir, a real TaskManager and a small AccessControl of
 * its own (fixed API tokens, a fixed privilege table), since the real one lives elsewhere.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { BurrowError } from '../../src/lib/errors.js';
import { handleProtocolUpgrade } from '../../src/server/protocol/index.js';
import type { AccessControl, Privilege, ServerDeps } from '../../src/server/server-types.js';
import { PRIVILEGES } from '../../src/server/server-types.js';
import { TaskManager } from '../../src/tasks/index.js';
import type { Authid } from '../../src/types/auth.js';
import { formatAuthid, parseAuthid } from '../../src/types/auth.js';
import { type StoreFixture, makeStore } from '../helpers/store-fixture.js';

export const STORE = 'conf';

/** API tokens: `<authid>` → secret. The user part decides the privileges. */
export const USERS = {
  root: 'root@pam!t',
  alice: 'alice@pbs!t',
  carol: 'carol@pbs!t',
  reader: 'reader@pbs!t',
  bob: 'bob@pbs!t',
} as const;
export type User = keyof typeof USERS;

const secretOf = (authid: string): string => `secret-of-${authid}`;

/** Privileges per user on an ACL path and everything below it (propagating). */
const ACL: Record<string, Record<string, readonly Privilege[]>> = {
  'alice@pbs': { [`/datastore/${STORE}`]: ['Datastore.Backup'] },
  'carol@pbs': { [`/datastore/${STORE}`]: ['Datastore.Backup'] },
  'reader@pbs': { [`/datastore/${STORE}`]: ['Datastore.Read', 'Datastore.Audit'] },
  'bob@pbs': { '/datastore/other': ['Datastore.Backup'] },
};

export class TestAccess implements AccessControl {
  authenticate(request: { headers: IncomingHttpHeaders }): Promise<Authid> {
    const header = request.headers.authorization;
    const match = /^PBSAPIToken[ =]([^:]+):(.*)$/.exec(header ?? '');
    if (match === null || match[1] === undefined || secretOf(match[1]) !== match[2]) {
      return Promise.reject(new BurrowError('AUTH_FAILED', 'no valid API token'));
    }
    return Promise.resolve(parseAuthid(match[1]));
  }

  privileges(authId: Authid, path: string): Promise<ReadonlySet<Privilege>> {
    const user = formatAuthid({ name: authId.name, realm: authId.realm });
    if (user === 'root@pam') return Promise.resolve(new Set(PRIVILEGES));
    let best: string | undefined;
    for (const entry of Object.keys(ACL[user] ?? {})) {
      if ((path === entry || path.startsWith(`${entry}/`)) && entry.length > (best?.length ?? -1)) {
        best = entry;
      }
    }
    return Promise.resolve(new Set(best === undefined ? [] : (ACL[user]?.[best] ?? [])));
  }

  anyPrivilegeBelow(): Promise<boolean> {
    return Promise.resolve(false);
  }
}

export interface ProtocolServer {
  port: number;
  fx: StoreFixture;
  tasks: TaskManager;
  /** Settles once the server side of the session whose client used `localPort` has ended. */
  ended(localPort: number): Promise<void>;
  close(): Promise<void>;
}

/** The auth-failure delay the tests configure (PBS: 3 s), so that it can be measured cheaply. */
export const TEST_AUTH_DELAY_MS = 250;

export async function startServer(): Promise<ProtocolServer> {
  const certDir = mkdtempSync(join(tmpdir(), 'burrow-conf-cert-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      join(certDir, 'key.pem'),
      '-out',
      join(certDir, 'cert.pem'),
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
    ],
    { stdio: 'ignore' },
  );
  const key = readFileSync(join(certDir, 'key.pem'));
  const cert = readFileSync(join(certDir, 'cert.pem'));
  rmSync(certDir, { recursive: true, force: true });

  const fx = await makeStore({ name: STORE });
  const tasks = new TaskManager({ dirs: fx.dirs, node: 'testnode' });
  const deps: ServerDeps = {
    dirs: fx.dirs,
    access: new TestAccess(),
    tasks,
    log: pino({ level: 'silent' }),
    now: () => Math.floor(Date.now() / 1000),
  };
  const endedByPort = new Map<number, Promise<void>>();
  // As Burrow's listener does: ALPN offers HTTP/1.1 only (HTTP/2 exists only after the upgrade).
  const server = https.createServer({ key, cert, ALPNProtocols: ['http/1.1'] });
  server.on('request', (_req, res) => {
    res.writeHead(404).end();
  });
  server.on('upgrade', (req, socket: TLSSocket, head: Buffer) => {
    const port = socket.remotePort ?? 0;
    handleProtocolUpgrade(deps, req, socket, head, {
      authFailureDelayMs: TEST_AUTH_DELAY_MS,
      onSession: (ended) => endedByPort.set(port, ended),
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    fx,
    tasks,
    ended: async (localPort) => {
      for (let i = 0; i < 200 && !endedByPort.has(localPort); i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const ended = endedByPort.get(localPort);
      if (ended === undefined) throw new Error(`no session for client port ${localPort}`);
      await ended;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fx.cleanup();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Client

export interface RawResponse {
  status: number;
  statusLine: string;
  /** Header names lower-cased. */
  headers: Record<string, string>;
  body: string;
}

export interface Upgraded {
  response: RawResponse;
  socket: TLSSocket;
  session: ClientHttp2Session;
  localPort: number;
}

export interface UpgradeRequest {
  path: string;
  /** The Upgrade header value; omitted with `null`. */
  protocol: string | null;
  user?: User;
  method?: string;
  extraHeaders?: string[];
}

export function requestText(port: number, request: UpgradeRequest): string {
  const lines = [
    `${request.method ?? 'GET'} ${request.path} HTTP/1.1`,
    `Host: localhost:${port}`,
    'Connection: upgrade',
  ];
  if (request.protocol !== null) lines.push(`UPGRADE: ${request.protocol}`);
  if (request.user !== undefined) {
    const authid = USERS[request.user];
    lines.push(`Authorization: PBSAPIToken ${authid}:${secretOf(authid)}`);
  }
  lines.push(...(request.extraHeaders ?? []));
  return `${lines.join('\r\n')}\r\n\r\n`;
}

function parseHead(text: string): Omit<RawResponse, 'body'> {
  const [statusLine = '', ...headerLines] = text.split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? NaN);
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, statusLine, headers };
}

/** Read the response head; the bytes after it stay in the socket. */
export function readHead(socket: TLSSocket): Promise<Omit<RawResponse, 'body'>> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const cleanup = (): void => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onEnd);
    };
    const onData = (chunk: Buffer): void => {
      buffer = Buffer.concat([buffer, chunk]);
      const at = buffer.indexOf('\r\n\r\n');
      if (at < 0) return;
      cleanup();
      socket.pause();
      const rest = buffer.subarray(at + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve(parseHead(buffer.subarray(0, at).toString('latin1')));
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`connection closed before a response head: ${buffer.toString('latin1')}`));
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onEnd);
  });
}

/** Read `length` body bytes, then wait until the server closes the connection. */
function readBodyAndClose(socket: TLSSocket, length: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', reject);
    socket.once('close', () => {
      const body = Buffer.concat(chunks);
      if (body.length !== length) {
        reject(new Error(`body has ${body.length} bytes, content-length said ${length}`));
      } else {
        resolve(body.toString('utf8'));
      }
    });
    socket.resume();
  });
}

export function connectTls(port: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/**
 * Send an upgrade request. A refusal resolves with the response (the server must close the
 * connection after it); a 101 gives an HTTP/2 client session on the same socket.
 */
export async function upgrade(
  port: number,
  request: UpgradeRequest,
): Promise<{ refused: RawResponse } | { upgraded: Upgraded }> {
  const socket = await connectTls(port);
  socket.write(requestText(port, request));
  const head = await readHead(socket);
  if (head.status !== 101) {
    const body = await readBodyAndClose(socket, Number(head.headers['content-length'] ?? 0));
    return { refused: { ...head, body } };
  }
  const session = http2.connect(`https://localhost:${port}`, {
    createConnection: () => socket,
    settings: { initialWindowSize: 32 * 1024 * 1024 },
  });
  session.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  return {
    upgraded: {
      response: { ...head, body: '' },
      socket,
      session,
      localPort: socket.localPort ?? 0,
    },
  };
}

export async function expectRefused(port: number, request: UpgradeRequest): Promise<RawResponse> {
  const result = await upgrade(port, request);
  if ('upgraded' in result) {
    result.upgraded.session.destroy();
    throw new Error(`expected a refusal, got ${result.upgraded.response.statusLine}`);
  }
  return result.refused;
}

export async function expectUpgraded(port: number, request: UpgradeRequest): Promise<Upgraded> {
  const result = await upgrade(port, request);
  if ('refused' in result) {
    throw new Error(`upgrade refused: ${result.refused.statusLine}: ${result.refused.body}`);
  }
  return result.upgraded;
}

export interface H2Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  /** The RST_STREAM code the server closed the stream with, 0 for none or NO_ERROR. */
  rstCode: number;
}

export interface H2Request {
  body?: Uint8Array | string;
  contentType?: string;
  /** Send a content-length header for the body. */
  contentLength?: boolean;
  /** Called with the request stream instead of sending `body` (for slow or partial bodies). */
  write?: (stream: http2.ClientHttp2Stream) => void;
}

export function h2(
  session: ClientHttp2Session,
  method: string,
  path: string,
  options: H2Request = {},
): Promise<H2Response> {
  return new Promise<H2Response>((resolve, reject) => {
    const body =
      typeof options.body === 'string' ? Buffer.from(options.body, 'utf8') : options.body;
    const headers: Record<string, string | number> = { ':method': method, ':path': path };
    if (options.contentType !== undefined) headers['content-type'] = options.contentType;
    if (options.contentLength === true && body !== undefined) {
      headers['content-length'] = body.byteLength;
    }
    const hasBody = body !== undefined || options.write !== undefined;
    const stream = session.request(headers, { endStream: !hasBody });
    let status: number | undefined;
    let responseHeaders: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (): void => {
      if (settled) return;
      if (status === undefined) {
        settled = true;
        reject(
          new Error(`${method} ${path}: stream closed (code ${stream.rstCode}) without a response`),
        );
        return;
      }
      settled = true;
      const data = Buffer.concat(chunks);
      resolve({
        status,
        headers: responseHeaders,
        body: data,
        text: data.toString('utf8'),
        rstCode: stream.rstCode ?? 0,
      });
    };
    stream.on('response', (h) => {
      responseHeaders = h;
      status = Number(h[':status']);
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', done);
    stream.on('close', done);
    stream.on('error', () => undefined);
    if (options.write !== undefined) options.write(stream);
    else if (body !== undefined) stream.end(body);
  });
}

/** The `data` of a 200 JSON answer; anything else fails with the status and message. */
export function dataOf(response: H2Response): unknown {
  if (response.status !== 200) {
    throw new Error(`status ${response.status}: ${response.text}`);
  }
  const parsed = JSON.parse(response.text) as { data: unknown };
  return parsed.data;
}

export const FORM = 'application/x-www-form-urlencoded';
export const JSON_TYPE = 'application/json';

/** A normal POST as the reference client sends it: parameters in the query, empty form body. */
export function post(session: ClientHttp2Session, path: string): Promise<H2Response> {
  return h2(session, 'POST', path, { contentType: FORM, body: '' });
}

export function putJson(
  session: ClientHttp2Session,
  path: string,
  value: unknown,
): Promise<H2Response> {
  return h2(session, 'PUT', path, { contentType: JSON_TYPE, body: JSON.stringify(value) });
}

export function upload(
  session: ClientHttp2Session,
  path: string,
  body: Uint8Array,
  contentLength = false,
): Promise<H2Response> {
  return h2(session, 'POST', path, {
    contentType: 'application/octet-stream',
    body,
    contentLength,
  });
}

/** Close the client session and wait until the server side of it has ended. */
export async function closeSession(server: ProtocolServer, upgraded: Upgraded): Promise<void> {
  await new Promise<void>((resolve) => {
    upgraded.session.close(() => resolve());
  });
  upgraded.socket.destroy();
  await server.ended(upgraded.localPort);
}

/** Drop the connection without any goodbye and wait until the server side has ended. */
export async function killSession(server: ProtocolServer, upgraded: Upgraded): Promise<void> {
  upgraded.socket.destroy();
  await server.ended(upgraded.localPort);
}
