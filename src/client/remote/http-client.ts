/**
 * Burrow's client for a PBS server's HTTPS API (pbs-protocol §2–§5.2): TLS with PBS's trust rules
 * (fingerprint-trust.ts), login by ticket or API token, REST calls with PBS's envelope and
 * plain-text errors, raw downloads and uploads, and the upgrade to HTTP/2 that starts backup and
 * reader sessions.
 *
 * Every connection is checked for trust after its handshake and before the HTTP layer may write
 * on it, so credentials never reach a server that was not trusted.
 */
import { once } from 'node:events';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import tls, { type TLSSocket } from 'node:tls';
import { asBuffer } from '../../lib/bytes.js';
import { systemClock, type Clock } from '../../lib/clock.js';
import { BurrowError } from '../../lib/errors.js';
import { isToken, parseAuthid, type Authid } from '../../types/auth.js';
import {
  CertificateTrust,
  DEFAULT_PBS_PORT,
  type TrustDecision,
  type TrustPrompt,
} from './fingerprint-trust.js';
import { PASSWORD_ENV } from './env-names.js';
import { deferredExtraCa } from './extra-ca.js';
import { H2Session, type H2SessionOptions } from './h2-session.js';
import {
  connectionError,
  parseEnvelope,
  remoteError,
  withQuery,
  type QueryParams,
} from './remote-errors.js';

export { DEFAULT_PBS_PORT } from './fingerprint-trust.js';

export { PASSWORD_ENV } from './env-names.js';

export const CONNECT_TIMEOUT_MS = 10_000;
/** Idle time after which a request (not an upgraded session) fails. */
export const REQUEST_TIMEOUT_MS = 120_000;
/** The ticket is renewed when older than this; PBS tickets live two hours. */
export const TICKET_RENEW_AFTER_S = 3600;
/** The largest JSON answer read into memory. */
const MAX_JSON_ANSWER = 256 * 1024 * 1024;

export type UpgradeProtocol = 'proxmox-backup-protocol-v1' | 'proxmox-backup-reader-protocol-v1';

export interface PbsConnectOptions {
  host: string;
  /** Default 8007. */
  port?: number;
  /** `user@realm` (ticket login) or `user@realm!token` (API token, no login). */
  authId: string;
  /** Password or token secret; default PBS_PASSWORD, then `readPassword`. */
  password?: string;
  /** Asked when there is neither `password` nor PBS_PASSWORD (e.g. a hidden terminal prompt). */
  readPassword?: () => Promise<string>;
  /** Expected certificate fingerprint; default PBS_FINGERPRINT. */
  fingerprint?: string;
  /** Asked about an untrusted certificate; default a terminal prompt (refuses without one). */
  prompt?: TrustPrompt;
  /** The fingerprint cache; false: none. */
  cachePath?: string | false;
  /**
   * Trust anchors replacing Node's (a private CA; tests). Default: Node's, plus the file of
   * NODE_EXTRA_CA_CERTS when a bin deferred it (extra-ca.ts).
   */
  ca?: string | Buffer | (string | Buffer)[];
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Non-fatal problems (the fingerprint cache cannot be written). */
  warn?: (message: string) => void;
}

interface Ticket {
  ticket: string;
  csrf: string;
  /** Clock time of the login, ms. */
  at: number;
}

/** Characters PBS's client percent-encodes in the ticket cookie (`:` stays). */
function encodeCookieValue(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out +=
      byte < 0x21 || byte >= 0x7f || ' "#<>`?{}%;,'.includes(ch)
        ? `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
        : ch;
  }
  return out;
}

function hostForUrl(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

async function readBody(res: IncomingMessage, limit: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let length = 0;
  for await (const part of res as AsyncIterable<Buffer>) {
    length += part.length;
    if (length > limit) {
      res.destroy();
      throw new BurrowError('REMOTE_ERROR', `the answer to ${what} is larger than ${limit} bytes`, {
        details: { path: what, limit },
      });
    }
    parts.push(part);
  }
  return Buffer.concat(parts);
}

/** An https.Agent whose connections are made, and trusted, by the client before use. */
class TrustingAgent extends https.Agent {
  readonly #open: () => Promise<TLSSocket>;
  constructor(open: () => Promise<TLSSocket>, keepAlive: boolean) {
    super(keepAlive ? { keepAlive: true, maxSockets: 8 } : { keepAlive: false });
    this.#open = open;
  }
  override createConnection(
    _options: https.RequestOptions,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    this.#open().then(
      (socket) => callback?.(null, socket),
      (error: Error) => callback?.(error, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

type RequestBody = Uint8Array | Readable | undefined;

export class PbsHttpClient {
  readonly host: string;
  readonly port: number;
  readonly authId: Authid;
  readonly authIdText: string;
  readonly trust: CertificateTrust;
  readonly #secret: string;
  readonly #token: boolean;
  readonly #ca: PbsConnectOptions['ca'];
  readonly #clock: Clock;
  readonly #connectTimeout: number;
  readonly #requestTimeout: number;
  readonly #agent: TrustingAgent;
  readonly #upgradeAgent: TrustingAgent;
  #ticket: Ticket | undefined;
  #renewing: Promise<void> | undefined;
  /** The last trust decision (how the server's certificate was accepted). */
  lastTrust: TrustDecision | undefined;

  private constructor(o: PbsConnectOptions, secret: string) {
    this.host = o.host;
    this.port = o.port ?? DEFAULT_PBS_PORT;
    this.authIdText = o.authId;
    this.authId = parseAuthid(o.authId);
    this.#token = isToken(this.authId);
    this.#secret = secret;
    this.#ca = o.ca;
    this.#clock = o.clock ?? systemClock;
    this.#connectTimeout = o.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    this.#requestTimeout = o.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.trust = new CertificateTrust({
      host: o.host,
      port: this.port,
      ...(o.fingerprint === undefined ? {} : { fingerprint: o.fingerprint }),
      ...(o.prompt === undefined ? {} : { prompt: o.prompt }),
      ...(o.cachePath === undefined ? {} : { cachePath: o.cachePath }),
      ...(o.env === undefined ? {} : { env: o.env }),
      ...(o.warn === undefined ? {} : { warn: o.warn }),
    });
    this.#agent = new TrustingAgent(() => this.#openSocket(), true);
    this.#upgradeAgent = new TrustingAgent(() => this.#openSocket(), false);
  }

  /**
   * A client for `host`: an API token is used as is (no call is made); a user logs in at once
   * (POST /access/ticket), which also settles trust in the server's certificate.
   */
  static async connect(options: PbsConnectOptions): Promise<PbsHttpClient> {
    const port = options.port ?? DEFAULT_PBS_PORT;
    if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
      throw new BurrowError('INVALID_ARGUMENT', `port ${port} is not 1..65535`, {
        details: { port },
      });
    }
    if (options.host === '') throw new BurrowError('INVALID_ARGUMENT', 'no server host given');
    const authId = parseAuthid(options.authId);
    const env = options.env ?? process.env;
    let secret = options.password ?? env[PASSWORD_ENV];
    if (secret === undefined) {
      if (options.readPassword === undefined) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `no ${isToken(authId) ? 'API token secret' : 'password'} for ${options.authId}: set ${PASSWORD_ENV}`,
        );
      }
      secret = await options.readPassword();
    }
    // A header value cannot carry control characters; say so instead of failing inside Node.
    if ([...secret].some((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `the ${isToken(authId) ? 'API token secret' : 'password'} contains control characters`,
      );
    }
    const ca =
      options.ca ??
      deferredExtraCa(env, options.warn ?? ((message) => process.emitWarning(message)));
    const client = new PbsHttpClient(
      { ...options, port, ...(ca === undefined ? {} : { ca }) },
      secret,
    );
    if (!client.#token) await client.login();
    return client;
  }

  /** `https://host:port` */
  get origin(): string {
    return `https://${hostForUrl(this.host)}:${this.port}`;
  }

  /** Release pooled connections. Open H2 sessions are closed by their owners. */
  close(): void {
    this.#agent.destroy();
    this.#upgradeAgent.destroy();
  }

  // -- connections ------------------------------------------------------------------------------

  #openSocket(): Promise<TLSSocket> {
    const what = `cannot connect to ${this.host}:${this.port}`;
    return new Promise<TLSSocket>((resolve, reject) => {
      const socket = tls.connect({
        host: this.host,
        port: this.port,
        ...(isIP(this.host) === 0 ? { servername: this.host } : {}),
        ...(this.#ca === undefined ? {} : { ca: this.#ca }),
        // Trust is decided below (chain, then fingerprint), not by Node alone.
        rejectUnauthorized: false,
      });
      let settled = false;
      const fail = (error: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        reject(connectionError(error, what));
      };
      const timer = setTimeout(
        () =>
          fail(
            new BurrowError(
              'CONNECTION_FAILED',
              `${what}: no TLS connection after ${this.#connectTimeout / 1000} s`,
            ),
          ),
        this.#connectTimeout,
      );
      socket.on('error', fail);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.setNoDelay(true);
        this.trust.verify(socket).then(
          (decision) => {
            if (settled) return;
            if (socket.destroyed) {
              fail(
                new BurrowError('CONNECTION_FAILED', `${what}: the server closed the connection`),
              );
              return;
            }
            settled = true;
            this.lastTrust = decision;
            socket.off('error', fail);
            resolve(socket);
          },
          (error: unknown) => fail(error),
        );
      });
    });
  }

  // -- authentication ---------------------------------------------------------------------------

  #authHeaders(method: string): Record<string, string> {
    if (this.#token) return { authorization: `PBSAPIToken ${this.authIdText}:${this.#secret}` };
    const ticket = this.#ticket;
    if (ticket === undefined) return {};
    const headers: Record<string, string> = {
      cookie: `PBSAuthCookie=${encodeCookieValue(ticket.ticket)}`,
    };
    if (method !== 'GET' && method !== 'HEAD') headers.csrfpreventiontoken = ticket.csrf;
    return headers;
  }

  /** POST /access/ticket with the password (or, to renew, the current ticket). */
  async login(): Promise<void> {
    if (this.#token) return;
    await this.#requestTicket(this.#secret);
  }

  async #requestTicket(password: string): Promise<void> {
    const path = '/api2/json/access/ticket';
    const body = Buffer.from(JSON.stringify({ username: this.authIdText, password }), 'utf8');
    const res = await this.#send('POST', path, {}, body, 'application/json');
    const raw = await readBody(res, MAX_JSON_ANSWER, path);
    if (res.statusCode !== 200) {
      const error = remoteError(res.statusCode ?? 0, raw, path);
      throw new BurrowError(error.code, `login as ${this.authIdText} failed: ${error.message}`, {
        details: error.details,
      });
    }
    const data = parseEnvelope(raw, path) as {
      ticket?: unknown;
      CSRFPreventionToken?: unknown;
    } | null;
    const ticket = data?.ticket;
    const csrf = data?.CSRFPreventionToken;
    if (typeof ticket !== 'string' || typeof csrf !== 'string') {
      throw new BurrowError('REMOTE_ERROR', `the login answer of ${this.host} has no ticket`, {
        details: { path },
      });
    }
    if (ticket.includes(':!tfa!') || csrf === 'invalid') {
      throw new BurrowError(
        'AUTH_FAILED',
        `${this.authIdText} has two-factor authentication, which Burrow's client does not support; use an API token`,
        { details: { path } },
      );
    }
    this.#ticket = { ticket, csrf, at: this.#clock.nowMs() };
  }

  /** Renew an old ticket (by posting it as the password); log in again when that fails. */
  async #freshTicket(): Promise<void> {
    if (this.#token) return;
    const ticket = this.#ticket;
    if (ticket !== undefined && this.#clock.nowMs() - ticket.at < TICKET_RENEW_AFTER_S * 1000) {
      return;
    }
    this.#renewing ??= (async () => {
      try {
        if (ticket !== undefined) {
          try {
            await this.#requestTicket(ticket.ticket);
            return;
          } catch {
            // An expired or revoked ticket: the password may still work.
          }
        }
        await this.#requestTicket(this.#secret);
      } finally {
        this.#renewing = undefined;
      }
    })();
    await this.#renewing;
  }

  // -- requests ---------------------------------------------------------------------------------

  #apiPath(path: string): string {
    if (!path.startsWith('/')) path = `/${path}`;
    return path.startsWith('/api2/') ? path : `/api2/json${path}`;
  }

  #send(
    method: string,
    path: string,
    extraHeaders: Record<string, string | number>,
    body: RequestBody,
    contentType?: string,
  ): Promise<IncomingMessage> {
    const headers: Record<string, string | number> = {
      ...this.#authHeaders(method),
      ...extraHeaders,
    };
    if (contentType !== undefined) headers['content-type'] = contentType;
    if (body instanceof Uint8Array) headers['content-length'] = body.byteLength;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = https.request({
        host: this.host,
        port: this.port,
        method,
        path,
        headers,
        agent: this.#agent,
      });
      req.setTimeout(this.#requestTimeout, () => {
        req.destroy(
          new BurrowError(
            'CONNECTION_FAILED',
            `${method} ${path}: no answer from ${this.host} for ${this.#requestTimeout / 1000} s`,
            { details: { path } },
          ),
        );
      });
      req.on('error', (error) => reject(connectionError(error, `${method} ${path}`)));
      req.on('response', resolve);
      if (body instanceof Readable) {
        body.on('error', (error) => req.destroy(error));
        body.pipe(req);
      } else {
        req.end(body === undefined ? undefined : asBuffer(body));
      }
    });
  }

  async #json(
    method: 'GET' | 'POST' | 'PUT' | 'DELETE',
    path: string,
    params: QueryParams | Record<string, unknown> | undefined,
  ): Promise<unknown> {
    await this.#freshTicket();
    const full = this.#apiPath(path);
    const inQuery = method === 'GET' || method === 'DELETE';
    const target = inQuery ? withQuery(full, params as QueryParams | undefined) : full;
    const body = inQuery ? undefined : Buffer.from(JSON.stringify(params ?? {}), 'utf8');
    const res = await this.#send(
      method,
      target,
      {},
      body,
      inQuery ? undefined : 'application/json',
    );
    const raw = await readBody(res, MAX_JSON_ANSWER, full).catch((error: unknown) => {
      throw connectionError(error, `${method} ${full}`);
    });
    if (res.statusCode !== 200) throw remoteError(res.statusCode ?? 0, raw, full);
    return parseEnvelope(raw, full);
  }

  /** GET with the parameters in the query; the envelope's `data`. */
  get(path: string, params?: QueryParams): Promise<unknown> {
    return this.#json('GET', path, params);
  }

  /** POST with the parameters as a JSON body. */
  post(path: string, params?: Record<string, unknown>): Promise<unknown> {
    return this.#json('POST', path, params);
  }

  /** PUT with the parameters as a JSON body. */
  put(path: string, params?: Record<string, unknown>): Promise<unknown> {
    return this.#json('PUT', path, params);
  }

  /** DELETE with the parameters in the query. */
  delete(path: string, params?: QueryParams): Promise<unknown> {
    return this.#json('DELETE', path, params);
  }

  /** A raw download (status 200) as a stream; an error answer is thrown, read as text. */
  async download(path: string, params?: QueryParams): Promise<Readable> {
    await this.#freshTicket();
    const full = this.#apiPath(path);
    const res = await this.#send('GET', withQuery(full, params), {}, undefined);
    if (res.statusCode !== 200) {
      const raw = await readBody(res, MAX_JSON_ANSWER, full).catch(() => Buffer.alloc(0));
      throw remoteError(res.statusCode ?? 0, raw, full);
    }
    return res;
  }

  /** POST a raw body with the parameters in the query (PBS's upload handlers); the `data`. */
  async upload(
    path: string,
    params: QueryParams | undefined,
    body: Uint8Array | Readable,
    contentType = 'application/octet-stream',
  ): Promise<unknown> {
    await this.#freshTicket();
    const full = this.#apiPath(path);
    const res = await this.#send('POST', withQuery(full, params), {}, body, contentType);
    const raw = await readBody(res, MAX_JSON_ANSWER, full).catch((error: unknown) => {
      throw connectionError(error, `POST ${full}`);
    });
    if (res.statusCode !== 200) throw remoteError(res.statusCode ?? 0, raw, full);
    return parseEnvelope(raw, full);
  }

  /**
   * Upgrade a new connection to `protocol` (§5.1, §6.1) and run HTTP/2 on it. A refusal (no 101)
   * is thrown as the server's error.
   */
  async upgrade(
    path: string,
    params: QueryParams | undefined,
    protocol: UpgradeProtocol,
    options: H2SessionOptions = {},
  ): Promise<H2Session> {
    await this.#freshTicket();
    const full = withQuery(this.#apiPath(path), params);
    const what =
      protocol === 'proxmox-backup-protocol-v1' ? 'the backup session' : 'the reader session';
    const { res, socket, head, req } = await new Promise<{
      res: IncomingMessage;
      socket: TLSSocket;
      head: Buffer;
      req: ReturnType<typeof https.request>;
    }>((resolve, reject) => {
      const req = https.request({
        host: this.host,
        port: this.port,
        method: 'GET',
        path: full,
        headers: { ...this.#authHeaders('GET'), connection: 'upgrade', upgrade: protocol },
        // The connection becomes the session's: it must not come from, or go back to, the pool.
        // (`agent: false` would not do: Node then makes a default Agent that ignores
        // `createConnection` and would skip the trust check.)
        agent: this.#upgradeAgent,
      });
      req.setTimeout(this.#requestTimeout, () => {
        req.destroy(
          new BurrowError(
            'CONNECTION_FAILED',
            `GET ${path}: no answer from ${this.host} for ${this.#requestTimeout / 1000} s`,
            { details: { path } },
          ),
        );
      });
      req.on('error', (error) => reject(connectionError(error, `starting ${what}`)));
      req.on('upgrade', (r: IncomingMessage, s: TLSSocket, h: Buffer) =>
        resolve({ res: r, socket: s, head: h, req }),
      );
      req.on('response', (r: IncomingMessage) => {
        readBody(r, MAX_JSON_ANSWER, path).then(
          (raw) => reject(remoteError(r.statusCode ?? 0, raw, this.#apiPath(path))),
          (error: unknown) => reject(connectionError(error, `starting ${what}`)),
        );
      });
      req.end();
    });
    socket.setTimeout(0);
    const answered = String(res.headers.upgrade ?? '').toLowerCase();
    if (res.statusCode !== 101 || answered !== protocol) {
      socket.destroy();
      throw new BurrowError(
        'REMOTE_ERROR',
        `the server answered the upgrade to ${protocol} with ${res.statusCode} ${answered === '' ? 'without an upgrade' : `upgrade: ${answered}`}`,
        { details: { status: res.statusCode, path: this.#apiPath(path) } },
      );
    }
    // The request's last write must be complete before HTTP/2 takes over the TLS stream: Node's
    // http2 would otherwise receive the completion of a write it never made (an abort in Node 20).
    if (!req.writableFinished) await once(req, 'finish');
    return H2Session.start(socket, head, this.origin, what, options);
  }
}
