/**
 * TEST SUPPORT ONLY (imported by the remote client's tests, never by Burrow itself): certificates
 * made with the openssl command, and a small PBS-like server on 127.0.0.1 with real TLS, ticket
 * and token authentication, the HTTP/1.1 upgrade and HTTP/2 on the upgraded socket, and an
 * in-memory backup/reader session that checks what pbs-protocol §5.3/§6.2 say a server checks.
 * It is written independently of the client, from the spec, so the tests compare two readings of
 * the protocol rather than the client with itself.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import http2, { type Http2ServerRequest, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { decodeBlob } from '../../src/format/data-blob.js';

// ---------------------------------------------------------------------------------------------
// certificates

export interface TestCertificates {
  dir: string;
  caPem: string;
  /** Self-signed, SAN localhost + 127.0.0.1. */
  selfKey: string;
  selfPem: string;
  /** Signed by the CA, SAN localhost + 127.0.0.1. */
  leafKey: string;
  leafPem: string;
  /** Signed by the CA, SAN other.example only. */
  otherKey: string;
  otherPem: string;
  /** `openssl x509 -fingerprint -sha256` of each, as openssl prints it (uppercase). */
  selfFingerprintOpenssl: string;
  leafFingerprintOpenssl: string;
  otherFingerprintOpenssl: string;
  cleanup(): void;
}

function openssl(args: string[], cwd: string): string {
  return execFileSync('openssl', args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function opensslFingerprint(file: string, cwd: string): string {
  const out = openssl(['x509', '-in', file, '-noout', '-fingerprint', '-sha256'], cwd).trim();
  return out.slice(out.indexOf('=') + 1);
}

export function makeTestCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'burrow-remote-certs-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'self.key',
      '-out',
      'self.pem',
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ],
    dir,
  );
  openssl(
    [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=Burrow Test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  const signed = (name: string, san: string): void => {
    openssl(
      [
        'req',
        '-new',
        ...ec,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.csr`,
        '-subj',
        '/CN=burrow-test',
      ],
      dir,
    );
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`);
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.pem`,
        '-days',
        '2',
        '-extfile',
        `${name}.ext`,
      ],
      dir,
    );
  };
  signed('leaf', 'DNS:localhost,IP:127.0.0.1');
  signed('other', 'DNS:other.example');
  const read = (f: string): string => readFileSync(join(dir, f), 'utf8');
  return {
    dir,
    caPem: read('ca.pem'),
    selfKey: read('self.key'),
    selfPem: read('self.pem'),
    leafKey: read('leaf.key'),
    leafPem: read('leaf.pem'),
    otherKey: read('other.key'),
    otherPem: read('other.pem'),
    selfFingerprintOpenssl: opensslFingerprint('self.pem', dir),
    leafFingerprintOpenssl: opensslFingerprint('leaf.pem', dir),
    otherFingerprintOpenssl: opensslFingerprint('other.pem', dir),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

// ---------------------------------------------------------------------------------------------
// the server

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

export interface SessionRequest {
  session: number;
  method: string;
  path: string;
  query: URLSearchParams;
  contentType: string | undefined;
  bodyLength: number;
}

export interface RouteAnswer {
  status: number;
  body: string | Buffer;
  contentType?: string;
}

export interface FakePbsOptions {
  key: string;
  cert: string;
  /** userid → password */
  users?: Record<string, string>;
  /** token id → secret */
  tokens?: Record<string, string>;
  /** Extra REST routes (after authentication). */
  routes?: (req: RecordedRequest) => RouteAnswer | undefined;
  /** HTTP/2 SETTINGS of the session server; default PBS's (32 MiB windows, 4 MiB frames). */
  h2Settings?: http2.Settings;
  /** Raise the session's connection window to 32 MiB as PBS does (default true). */
  bigConnectionWindow?: boolean;
  /** Send the 101 and the server's first HTTP/2 bytes in one TLS write. */
  coalesce101?: boolean;
  /** Refuse upgrades with this status and message. */
  refuseUpgrade?: RouteAnswer;
}

interface Writer {
  kind: 'dynamic' | 'fixed';
  name: string;
  size: number | undefined;
  entries: { digest: string; end: number }[];
  slots: Map<number, string>;
  end: number;
  closed: boolean;
}

interface StoredIndex {
  kind: 'dynamic' | 'fixed';
  entries: { digest: string; size: number }[];
}

interface Snapshot {
  key: string;
  time: number;
  files: Map<string, Buffer>;
  indexes: Map<string, StoredIndex>;
}

interface SessionState {
  id: number;
  kind: 'backup' | 'reader';
  group: string;
  time: number;
  previous: Snapshot | undefined;
  snapshot: Snapshot;
  known: Map<string, number>;
  writers: Map<number, Writer>;
  nextWid: number;
  finished: boolean;
  allowed: Set<string>;
}

class Http400 extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MiB = 1024 * 1024;
const PBS_SESSION_SETTINGS: http2.Settings = {
  initialWindowSize: 32 * MiB,
  maxFrameSize: 4 * MiB,
};

/** Prefixes the first write with the 101 answer, so both leave in one TLS record. */
class Prefixed101 extends Duplex {
  #prefix: Buffer | undefined;
  constructor(
    readonly inner: TLSSocket,
    prefix: Buffer,
  ) {
    super();
    this.#prefix = prefix;
    inner.on('data', (d: Buffer) => {
      if (!this.push(d)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('close', () => this.destroy());
    inner.on('error', (e: Error) => this.destroy(e));
  }
  override _read(): void {
    this.inner.resume();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (error?: Error | null) => void): void {
    const data = this.#prefix === undefined ? chunk : Buffer.concat([this.#prefix, chunk]);
    this.#prefix = undefined;
    this.inner.write(data, cb);
  }
  override _final(cb: () => void): void {
    this.inner.end(cb);
  }
  override _destroy(error: Error | null, cb: (error: Error | null) => void): void {
    this.inner.destroy();
    cb(error);
  }
}

export class FakePbs {
  readonly requests: RecordedRequest[] = [];
  readonly sessionRequests: SessionRequest[] = [];
  /** Uploaded chunks: digest hex → encoded bytes (the datastore's chunk store). */
  readonly chunks = new Map<string, Buffer>();
  /** Finished snapshots by `type/id` group, oldest first. */
  readonly groups = new Map<string, Snapshot[]>();
  /** Backup sessions that ended without finish (their snapshot was dropped). */
  readonly aborted: string[] = [];
  readonly upgrades: { url: string; headers: IncomingMessage['headers'] }[] = [];
  /** Highest number of session streams open at the same time. */
  maxConcurrentStreams = 0;
  /** Bytes received by POST /speedtest, per request. */
  readonly speedtestBytes: number[] = [];
  readonly #server: https.Server;
  readonly #options: FakePbsOptions;
  readonly #tickets = new Map<string, string>();
  readonly #sockets = new Set<Socket>();
  readonly #barrier: (() => void)[] = [];
  #openStreams = 0;
  #nextSession = 1;
  #nextTicket = 1;
  port = 0;

  private constructor(options: FakePbsOptions) {
    this.#options = options;
    this.#server = https.createServer({ key: options.key, cert: options.cert });
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        const rec: RecordedRequest = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(parts),
        };
        this.requests.push(rec);
        const answer = this.#rest(rec);
        res.writeHead(answer.status, {
          'content-type': answer.contentType ?? 'application/json;charset=UTF-8',
        });
        res.end(answer.body);
      });
    });
    this.#server.on('upgrade', (req: IncomingMessage, socket: TLSSocket, head: Buffer) =>
      this.#upgrade(req, socket, head),
    );
  }

  static async start(options: FakePbsOptions): Promise<FakePbs> {
    const fake = new FakePbs(options);
    await new Promise<void>((resolve) => fake.#server.listen(0, '127.0.0.1', resolve));
    fake.port = (fake.#server.address() as AddressInfo).port;
    return fake;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Every ticket issued so far. */
  get tickets(): string[] {
    return [...this.#tickets.keys()];
  }

  // -- authentication ---------------------------------------------------------------------------

  #authenticate(method: string, headers: IncomingMessage['headers']): string | undefined {
    const auth = headers.authorization;
    if (typeof auth === 'string' && /^PBSAPIToken[ =]/.test(auth)) {
      const rest = auth.slice('PBSAPIToken '.length);
      const colon = rest.indexOf(':');
      const id = rest.slice(0, colon);
      const secret = decodeURIComponent(rest.slice(colon + 1));
      return this.#options.tokens?.[id] === secret ? id : undefined;
    }
    const cookie = /(?:^|;\s*)PBSAuthCookie=([^;]*)/.exec(headers.cookie ?? '');
    if (cookie === null) return undefined;
    const ticket = decodeURIComponent(cookie[1] ?? '');
    const user = this.#tickets.get(ticket);
    if (user === undefined) return undefined;
    if (method !== 'GET' && method !== 'HEAD') {
      if (headers.csrfpreventiontoken !== `csrf-for-${ticket}`) return undefined;
    }
    return user;
  }

  #rest(req: RecordedRequest): RouteAnswer {
    const path = req.url.split('?')[0];
    if (path === '/api2/json/access/ticket' && req.method === 'POST') {
      if (!String(req.headers['content-type']).startsWith('application/json')) {
        return { status: 400, body: 'unsupported content type' };
      }
      const { username, password } = JSON.parse(req.body.toString('utf8')) as {
        username: string;
        password: string;
      };
      const ok =
        this.#options.users?.[username] === password || this.#tickets.get(password) === username;
      if (!ok) return { status: 401, body: 'permission check failed.' };
      // Base64 signatures carry + and /, which the cookie keeps as they are.
      const ticket = `PBS:${username}:${(0x65000000 + this.#nextTicket++).toString(16).toUpperCase()}::s1g+n/ature${this.#nextTicket}`;
      this.#tickets.set(ticket, username);
      return {
        status: 200,
        body: JSON.stringify({
          data: { username, ticket, CSRFPreventionToken: `csrf-for-${ticket}` },
        }),
      };
    }
    const who = this.#authenticate(req.method, req.headers);
    if (who === undefined) return { status: 401, body: 'authentication failed' };
    const custom = this.#options.routes?.(req);
    if (custom !== undefined) return custom;
    if (path === '/api2/json/whoami') {
      return { status: 200, body: JSON.stringify({ data: who }) };
    }
    return { status: 404, body: `Path '${path}' not found.` };
  }

  // -- upgrade ----------------------------------------------------------------------------------

  #upgrade(req: IncomingMessage, socket: TLSSocket, head: Buffer): void {
    this.upgrades.push({ url: req.url ?? '', headers: req.headers });
    const refuse = (status: number, message: string): void => {
      socket.end(
        `HTTP/1.1 ${status} Refused\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(message)}\r\nconnection: close\r\n\r\n${message}`,
      );
    };
    const who = this.#authenticate('GET', req.headers);
    if (who === undefined) return refuse(401, 'authentication failed');
    if (this.#options.refuseUpgrade !== undefined) {
      const r = this.#options.refuseUpgrade;
      return refuse(r.status, String(r.body));
    }
    const url = new URL(req.url ?? '/', 'https://x');
    const protocol = req.headers.upgrade;
    const kind =
      url.pathname === '/api2/json/backup'
        ? 'backup'
        : url.pathname === '/api2/json/reader'
          ? 'reader'
          : undefined;
    if (kind === undefined) return refuse(404, `Path '${url.pathname}' not found.`);
    const expected =
      kind === 'backup' ? 'proxmox-backup-protocol-v1' : 'proxmox-backup-reader-protocol-v1';
    if (protocol !== expected) return refuse(400, 'invalid protocol name');
    let state: SessionState;
    try {
      state = this.#openSession(kind, url.searchParams);
    } catch (error) {
      const e = error as Http400;
      return refuse(e.status ?? 400, e.message);
    }
    const h2 = http2.createServer({
      settings: this.#options.h2Settings ?? PBS_SESSION_SETTINGS,
      maxSessionMemory: 512,
    });
    h2.on('session', (session) => {
      session.on('error', () => {});
      if (this.#options.bigConnectionWindow !== false) {
        session.once('connect', () => session.setLocalWindowSize(32 * MiB));
      }
      session.on('close', () => this.#sessionEnded(state));
    });
    h2.on('request', (r: Http2ServerRequest) => this.#sessionRequest(state, r));
    const answer = `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${expected}\r\n\r\n`;
    if (head.length > 0) socket.unshift(head);
    if (this.#options.coalesce101 === true) {
      h2.emit('connection', new Prefixed101(socket, Buffer.from(answer)));
      return;
    }
    // Node's http2 server refuses TLS sockets not negotiated as h2, and must not take over the
    // socket while the 101's write is still pending (pbs-protocol §10).
    socket.write(answer, () => {
      Object.defineProperty(socket, 'alpnProtocol', { value: 'h2', configurable: true });
      h2.emit('connection', socket);
    });
  }

  #openSession(kind: 'backup' | 'reader', q: URLSearchParams): SessionState {
    for (const name of ['store', 'backup-type', 'backup-id', 'backup-time']) {
      if (q.get(name) === null)
        throw new Http400(
          400,
          `parameter verification failed - '${name}': property is missing and it is not optional`,
        );
    }
    const ns = q.get('ns');
    const group = `${ns === null ? '' : `ns/${ns}/`}${q.get('backup-type')}/${q.get('backup-id')}`;
    const time = Number(q.get('backup-time'));
    const snapshots = this.groups.get(group) ?? [];
    const id = this.#nextSession++;
    if (kind === 'reader') {
      const snap = snapshots.find((s) => s.time === time);
      if (snap === undefined) throw new Http400(400, `snapshot ${group}/${time} does not exist.`);
      return {
        id,
        kind,
        group,
        time,
        previous: undefined,
        snapshot: snap,
        known: new Map(),
        writers: new Map(),
        nextWid: 1,
        finished: true,
        allowed: new Set(),
      };
    }
    const previous = snapshots.at(-1);
    if (previous !== undefined && time <= previous.time) {
      throw new Http400(400, 'backup timestamp is older than last backup.');
    }
    return {
      id,
      kind,
      group,
      time,
      previous,
      snapshot: { key: `${group}/${time}`, time, files: new Map(), indexes: new Map() },
      known: new Map(),
      writers: new Map(),
      nextWid: 1,
      finished: false,
      allowed: new Set(),
    };
  }

  #sessionEnded(state: SessionState): void {
    if (state.kind === 'backup' && !state.finished) this.aborted.push(state.snapshot.key);
  }

  /** Hang up every upgraded connection (the tests' broken network). */
  dropSessions(): void {
    for (const s of this.#sockets) s.destroy();
  }

  // -- session requests -------------------------------------------------------------------------

  #sessionRequest(state: SessionState, r: Http2ServerRequest): void {
    const url = new URL(r.url, 'https://x');
    const stream: ServerHttp2Stream = r.stream;
    this.#openStreams++;
    this.maxConcurrentStreams = Math.max(this.maxConcurrentStreams, this.#openStreams);
    stream.on('close', () => this.#openStreams--);
    const parts: Buffer[] = [];
    let length = 0;
    r.on('data', (d: Buffer) => {
      length += d.length;
      // The speed test discards its body, like PBS; nothing else needs more than a chunk.
      if (url.pathname !== '/speedtest') parts.push(d);
    });
    r.on('end', () => {
      const body = Buffer.concat(parts);
      this.sessionRequests.push({
        session: state.id,
        method: r.method,
        path: url.pathname,
        query: url.searchParams,
        contentType: r.headers['content-type'],
        bodyLength: length,
      });
      const send = (status: number, payload: string | Buffer, type?: string): void => {
        if (stream.destroyed) return;
        stream.respond({
          ':status': status,
          'content-type': type ?? 'application/json;charset=UTF-8',
        });
        stream.end(payload);
      };
      try {
        const type = r.headers['content-type'];
        const result = this.#dispatch(state, r.method, url, type, body, length, send);
        if (result === undefined) return; // answered later
        if (Buffer.isBuffer(result)) send(200, result, 'application/octet-stream');
        else send(200, JSON.stringify({ data: result.data }));
      } catch (error) {
        const e = error as Http400;
        send(e instanceof Http400 ? e.status : 500, e.message, 'text/plain');
      }
    });
  }

  #dispatch(
    state: SessionState,
    method: string,
    url: URL,
    contentType: string | undefined,
    body: Buffer,
    length: number,
    send: (status: number, payload: string | Buffer, type?: string) => void,
  ): { data: unknown } | Buffer | undefined {
    const q = url.searchParams;
    const num = (name: string): number => {
      const v = q.get(name);
      if (v === null || !/^\d+$/.test(v))
        throw new Http400(400, `parameter verification failed - '${name}'`);
      return Number(v);
    };
    const str = (name: string): string => {
      const v = q.get(name);
      if (v === null) throw new Http400(400, `parameter verification failed - '${name}'`);
      return v;
    };
    const route = `${method} ${url.pathname}`;
    // Test-only endpoints.
    if (route === 'POST /speedtest') {
      this.speedtestBytes.push(length);
      return { data: null };
    }
    if (route === 'GET /bytes') return Buffer.alloc(num('size'), 0x41);
    if (route === 'GET /barrier') {
      const n = num('n');
      this.#barrier.push(() => send(200, JSON.stringify({ data: n })));
      if (this.#barrier.length >= n) for (const release of this.#barrier.splice(0)) release();
      return undefined;
    }
    if (route === 'GET /hangup') {
      this.dropSessions();
      return undefined;
    }
    if (state.kind === 'reader') return this.#reader(state, route, str);
    if (state.finished && method !== 'GET')
      throw new Http400(400, 'backup already marked as finished.');
    const writer = (kind: 'dynamic' | 'fixed'): Writer => {
      const wid = num('wid');
      const w = state.writers.get(wid);
      if (w === undefined || w.kind !== kind)
        throw new Http400(400, `${kind} writer '${wid}' not registered`);
      if (w.closed) throw new Http400(400, `${kind} writer '${wid}' already closed`);
      return w;
    };
    switch (route) {
      case 'GET /previous_backup_time':
        return { data: state.previous?.time ?? null };
      case 'GET /previous': {
        const name = str('archive-name');
        if (state.previous === undefined) throw new Http400(400, 'no valid previous backup');
        const file = state.previous.files.get(name);
        if (file === undefined)
          throw new Http400(404, `file '${name}' not found in previous backup`);
        for (const e of state.previous.indexes.get(name)?.entries ?? [])
          state.known.set(e.digest, e.size);
        return file;
      }
      case 'POST /dynamic_index':
      case 'POST /fixed_index': {
        const kind = url.pathname === '/dynamic_index' ? 'dynamic' : 'fixed';
        const name = str('archive-name');
        if (!name.endsWith(kind === 'dynamic' ? '.didx' : '.fidx'))
          throw new Http400(400, 'wrong archive extension');
        const wid = state.nextWid++;
        state.writers.set(wid, {
          kind,
          name,
          size: q.get('size') === null ? undefined : num('size'),
          entries: [],
          slots: new Map(),
          end: 0,
          closed: false,
        });
        return { data: wid };
      }
      case 'POST /dynamic_chunk':
      case 'POST /fixed_chunk': {
        writer(url.pathname === '/dynamic_chunk' ? 'dynamic' : 'fixed');
        const digest = str('digest');
        const size = num('size');
        if (length !== num('encoded-size'))
          throw new Http400(400, 'uploaded chunk has unexpected size.');
        const plain = decodeBlob(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
        if (createHash('sha256').update(plain).digest('hex') !== digest)
          throw new Http400(400, 'detected chunk with wrong digest.');
        if (plain.byteLength !== size) throw new Http400(400, 'detected chunk with wrong length');
        if (!this.chunks.has(digest)) this.chunks.set(digest, Buffer.from(body));
        state.known.set(digest, size);
        return { data: digest };
      }
      case 'PUT /dynamic_index':
      case 'PUT /fixed_index': {
        if (!String(contentType).startsWith('application/json')) {
          throw new Http400(400, 'append expects a JSON body');
        }
        const kind = url.pathname === '/dynamic_index' ? 'dynamic' : 'fixed';
        const p = JSON.parse(body.toString('utf8')) as {
          wid: number;
          'digest-list': string[];
          'offset-list': number[];
        };
        const w = state.writers.get(p.wid);
        if (w === undefined || w.kind !== kind)
          throw new Http400(400, `${kind} writer '${p.wid}' not registered`);
        p['digest-list'].forEach((digest, i) => {
          const size = state.known.get(digest);
          if (size === undefined) throw new Http400(400, `no such chunk ${digest}`);
          const offset = p['offset-list'][i]!;
          if (kind === 'dynamic') {
            if (offset !== w.end)
              throw new Http400(400, `got strange chunk offset (${w.end} != ${offset})`);
            w.end += size;
            w.entries.push({ digest, end: w.end });
          } else {
            w.slots.set(offset / (4 * MiB), digest);
            w.end = Math.max(w.end, offset + size);
          }
        });
        return { data: null };
      }
      case 'POST /dynamic_close':
      case 'POST /fixed_close': {
        const kind = url.pathname === '/dynamic_close' ? 'dynamic' : 'fixed';
        const w = writer(kind);
        const hash = createHash('sha256');
        let count: number;
        const entries: { digest: string; size: number }[] = [];
        if (kind === 'dynamic') {
          count = w.entries.length;
          let start = 0;
          for (const e of w.entries) {
            const end = Buffer.alloc(8);
            end.writeBigUInt64LE(BigInt(e.end));
            hash.update(end).update(Buffer.from(e.digest, 'hex'));
            entries.push({ digest: e.digest, size: e.end - start });
            start = e.end;
          }
        } else {
          count = w.slots.size;
          for (let i = 0; i < w.slots.size; i++) {
            const d = w.slots.get(i);
            if (d === undefined) throw new Http400(400, `missing slot ${i}`);
            hash.update(Buffer.from(d, 'hex'));
            entries.push({ digest: d, size: state.known.get(d)! });
          }
        }
        if (num('chunk-count') !== count) throw new Http400(400, 'unexpected chunk count');
        if (num('size') !== w.end) throw new Http400(400, 'unexpected file size');
        if (str('csum') !== hash.digest('hex')) throw new Http400(400, 'got unexpected checksum');
        w.closed = true;
        // The fake's index file: JSON, opaque to the client, which only carries bytes.
        const file = Buffer.from(JSON.stringify({ kind, entries }));
        state.snapshot.files.set(w.name, file);
        state.snapshot.indexes.set(w.name, { kind, entries });
        return { data: null };
      }
      case 'POST /blob': {
        const name = str('file-name');
        if (length !== num('encoded-size'))
          throw new Http400(400, 'uploaded blob has unexpected size.');
        decodeBlob(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
        state.snapshot.files.set(name, Buffer.from(body));
        return { data: null };
      }
      case 'POST /finish': {
        if ([...state.writers.values()].some((w) => !w.closed)) {
          throw new Http400(400, 'found open index writer - unable to finish backup');
        }
        if (!state.snapshot.files.has('index.json.blob'))
          throw new Http400(400, 'missing index.json.blob');
        state.finished = true;
        const list = this.groups.get(state.group) ?? [];
        list.push(state.snapshot);
        this.groups.set(state.group, list);
        return { data: null };
      }
      default:
        throw new Http400(404, `Path '${url.pathname}' not found.`);
    }
  }

  #reader(
    state: SessionState,
    route: string,
    str: (name: string) => string,
  ): { data: unknown } | Buffer {
    switch (route) {
      case 'GET /download': {
        const name = str('file-name');
        const file = state.snapshot.files.get(name);
        if (file === undefined) throw new Http400(404, `file '${name}' not found`);
        for (const e of state.snapshot.indexes.get(name)?.entries ?? [])
          state.allowed.add(e.digest);
        return file;
      }
      case 'GET /chunk': {
        const digest = str('digest');
        if (!state.allowed.has(digest))
          throw new Http400(401, `download chunk ${digest} not allowed`);
        const chunk = this.chunks.get(digest);
        if (chunk === undefined) throw new Http400(400, `unable to read chunk ${digest}`);
        return chunk;
      }
      default:
        throw new Http400(404, `Path '${route.split(' ')[1]}' not found.`);
    }
  }
}
