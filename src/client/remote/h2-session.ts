/**
 * HTTP/2 over an upgraded HTTPS/1.1 connection (pbs-protocol §5.2): after the server's 101 the
 * client stays the HTTP/2 client and speaks first, on the same TLS stream. Node's http2 client
 * takes such a socket through `createConnection`; unlike Node's http2 server it does not look at
 * the TLS ALPN result, so no `h2` needs to be negotiated.
 *
 * Requests are relative to the session (`/dynamic_chunk?…`), carry no credentials, and may run
 * concurrently on many streams. Windows are raised to the protocol maximum so large chunk
 * uploads and downloads are not throttled by 64 KiB default windows.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { asBuffer } from '../../lib/bytes.js';
import { BurrowError, type ErrorCode } from '../../lib/errors.js';
import {
  connectionError,
  parseEnvelope,
  remoteError,
  statusCode,
  withQuery,
  type QueryParams,
} from './remote-errors.js';

/** RFC 9113's largest window (2^31 − 1). */
export const H2_MAX_WINDOW = 2 ** 31 - 1;
/** Largest frame we accept, as PBS's client: 4 MiB. */
export const H2_MAX_FRAME = 4 * 1024 * 1024;
/** Node's limit for buffered HTTP/2 data per session, in MB (default 10): many 16 MiB chunks in flight. */
const MAX_SESSION_MEMORY_MB = 512;
/** PBS's client refuses longer query strings inside a session. */
export const MAX_SESSION_QUERY = 4096;

export interface H2Response {
  status: number;
  body: Buffer;
}

/** Maps an error answer to a code; the default is the REST mapping (remote-errors.ts). */
export type StatusMapper = (status: number, message: string, path: string) => ErrorCode;

export interface H2SessionOptions {
  /** Stream and connection receive window (default the maximum, as PBS's client). */
  receiveWindow?: number;
  /**
   * Keep GETs (downloads) and requests that send data apart in time (default true). See
   * DirectionGate; turn off only against a server known not to be Node.
   */
  separateDirections?: boolean;
}

type Direction = 'send' | 'receive';

/**
 * Node's HTTP/2 (both ends) stops reading its socket while one of its own writes to it is
 * pending. With large windows both ways, a big upload and a big download at the same time fill
 * the socket buffers in both directions and each side then waits for the other to read: the
 * session hangs for good (seen on loopback from 4 MiB each way, Node 20). Burrow's server is
 * Node, so the client never lets a GET overlap a request that sends data: requests of one kind
 * run together, the other kind waits, in arrival order. Responses to non-GET requests and the
 * requests of GETs are small, so neither side then has a large write while the other has one.
 */
class DirectionGate {
  #active: Direction | undefined;
  #running = 0;
  readonly #queue: { direction: Direction; admit: () => void }[] = [];

  async run<T>(direction: Direction, fn: () => Promise<T>): Promise<T> {
    if ((this.#active === undefined || this.#active === direction) && this.#queue.length === 0) {
      this.#active = direction;
      this.#running++;
    } else {
      await new Promise<void>((admit) => this.#queue.push({ direction, admit }));
    }
    try {
      return await fn();
    } finally {
      this.#leave();
    }
  }

  #leave(): void {
    if (--this.#running > 0) return;
    const head = this.#queue[0];
    this.#active = head?.direction;
    while (head !== undefined && this.#queue[0]?.direction === head.direction) {
      this.#running++;
      this.#queue.shift()!.admit();
    }
  }
}

export type H2Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export class H2Session {
  readonly #session: ClientHttp2Session;
  readonly #socket: Duplex;
  readonly #what: string;
  #failure: BurrowError | undefined;
  readonly #closed: Promise<void>;
  readonly #gate: DirectionGate | undefined;
  /** Bytes the server sent together with the 101 (for diagnostics and tests). */
  readonly headBytes: number;

  private constructor(
    session: ClientHttp2Session,
    socket: Duplex,
    what: string,
    headBytes: number,
    separate: boolean,
  ) {
    this.#session = session;
    this.headBytes = headBytes;
    this.#gate = separate ? new DirectionGate() : undefined;
    this.#socket = socket;
    this.#what = what;
    this.#closed = new Promise((resolve) => {
      if (socket.destroyed && session.destroyed) resolve();
      session.once('close', () => resolve());
    });
  }

  /**
   * Start HTTP/2 on a socket whose 101 was just read; `head` is what the HTTP/1.1 parser read past
   * the 101 (the server's SETTINGS may arrive with it). Resolves once the session is set up.
   */
  static start(
    socket: Duplex,
    head: Uint8Array,
    authority: string,
    what = 'the backup session',
    options: H2SessionOptions = {},
  ): Promise<H2Session> {
    const window = options.receiveWindow ?? H2_MAX_WINDOW;
    // Node's http2 reads bytes already buffered on the socket before the ones still to come.
    if (head.byteLength > 0) socket.unshift(asBuffer(head));
    const session = http2.connect(authority, {
      createConnection: () => socket,
      settings: {
        enablePush: false,
        initialWindowSize: window,
        maxFrameSize: H2_MAX_FRAME,
      },
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
    });
    const h2 = new H2Session(
      session,
      socket,
      what,
      head.byteLength,
      options.separateDirections ?? true,
    );
    session.on('error', (error) => h2.#fail(connectionError(error, `${what} failed`)));
    session.on('goaway', (code) => {
      if (code !== 0) {
        h2.#fail(
          new BurrowError('CONNECTION_FAILED', `the server ended ${what} (HTTP/2 GOAWAY ${code})`),
        );
      }
    });
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (error: unknown): void => {
        if (settled) return;
        settled = true;
        session.destroy();
        socket.destroy();
        reject(connectionError(error, `${what} failed`));
      };
      const onError = (error: unknown): void => fail(error);
      const onClose = (): void => fail(new Error('the connection closed before HTTP/2 started'));
      session.once('error', onError);
      session.once('close', onClose);
      session.once('connect', () => {
        session.off('error', onError);
        session.off('close', onClose);
        try {
          // The connection window is not a SETTINGS value; it has to be raised by WINDOW_UPDATE.
          if (window > 65535) session.setLocalWindowSize(window);
        } catch (error) {
          fail(error);
          return;
        }
        settled = true;
        resolve(h2);
      });
    });
  }

  get closed(): boolean {
    return this.#session.closed || this.#session.destroyed;
  }

  #fail(error: BurrowError): void {
    this.#failure ??= error;
  }

  /**
   * One request; resolves with any status (errors are the caller's to map) and rejects only when
   * the stream or connection breaks (CONNECTION_FAILED).
   */
  request(
    method: H2Method,
    path: string,
    params?: QueryParams,
    body?: Uint8Array,
    contentType?: string,
  ): Promise<H2Response> {
    if (this.#gate === undefined) return this.#send(method, path, params, body, contentType);
    return this.#gate.run(method === 'GET' ? 'receive' : 'send', () =>
      this.#send(method, path, params, body, contentType),
    );
  }

  #send(
    method: H2Method,
    path: string,
    params?: QueryParams,
    body?: Uint8Array,
    contentType?: string,
  ): Promise<H2Response> {
    const full = withQuery(path, params);
    const query = full.length - path.length;
    if (query > MAX_SESSION_QUERY) {
      return Promise.reject(
        new BurrowError(
          'INVALID_ARGUMENT',
          `query string of ${path} too long (${query} > ${MAX_SESSION_QUERY} bytes)`,
          { details: { path, length: query } },
        ),
      );
    }
    if (this.closed) {
      return Promise.reject(
        this.#failure ??
          new BurrowError('CONNECTION_FAILED', `${this.#what} is closed`, { details: { path } }),
      );
    }
    const headers: http2.OutgoingHttpHeaders = { ':method': method, ':path': full };
    // PBS's client sends form-encoded parameters in the query with an empty body (§5.2).
    const type =
      contentType ??
      (body !== undefined
        ? 'application/octet-stream'
        : method === 'POST' || method === 'PUT'
          ? 'application/x-www-form-urlencoded'
          : undefined);
    if (type !== undefined) headers['content-type'] = type;
    if (body !== undefined) headers['content-length'] = body.byteLength;
    let stream: ClientHttp2Stream;
    try {
      stream = this.#session.request(headers, { endStream: body === undefined });
    } catch (error) {
      return Promise.reject(
        this.#failure ?? connectionError(error, `${this.#what}: ${method} ${path}`),
      );
    }
    return new Promise<H2Response>((resolve, reject) => {
      let status = 0;
      const parts: Buffer[] = [];
      let ended = false;
      stream.on('response', (h) => {
        status = Number(h[':status']);
      });
      stream.on('data', (part: Buffer) => parts.push(part));
      stream.on('end', () => {
        ended = true;
      });
      stream.on('error', () => {
        // reported by 'close', which always follows
      });
      stream.on('close', () => {
        if (ended && status !== 0) {
          resolve({ status, body: parts.length === 1 ? parts[0]! : Buffer.concat(parts) });
          return;
        }
        const reason =
          this.#failure?.message ??
          (stream.rstCode !== undefined && stream.rstCode !== 0
            ? `stream reset (HTTP/2 error ${stream.rstCode})`
            : 'the connection closed before the answer was complete');
        reject(
          new BurrowError('CONNECTION_FAILED', `${this.#what}: ${method} ${path}: ${reason}`, {
            details: { path, ...(stream.rstCode ? { rstCode: stream.rstCode } : {}) },
            ...(this.#failure === undefined ? {} : { cause: this.#failure }),
          }),
        );
      });
      if (body !== undefined) stream.end(asBuffer(body));
    });
  }

  /** A request whose answer must be 200; errors mapped by `mapper` (default: the REST mapping). */
  async call(
    method: H2Method,
    path: string,
    params?: QueryParams,
    body?: Uint8Array,
    contentType?: string,
    mapper?: StatusMapper,
  ): Promise<Buffer> {
    const response = await this.request(method, path, params, body, contentType);
    if (response.status !== 200) {
      const error = remoteError(response.status, response.body, path);
      if (mapper !== undefined) {
        const code = mapper(response.status, error.message, path);
        if (code !== error.code) throw remoteError(response.status, response.body, path, code);
      }
      throw error;
    }
    return response.body;
  }

  /** GET with query parameters; the envelope's `data`. */
  async getJson(path: string, params?: QueryParams, mapper?: StatusMapper): Promise<unknown> {
    return parseEnvelope(await this.call('GET', path, params, undefined, undefined, mapper), path);
  }

  /** POST with the parameters in the query and an empty form body (as PBS's client does). */
  async postJson(path: string, params?: QueryParams, mapper?: StatusMapper): Promise<unknown> {
    return parseEnvelope(await this.call('POST', path, params, undefined, undefined, mapper), path);
  }

  /** PUT (or POST) with the parameters as a JSON body. */
  async sendJson(
    method: 'PUT' | 'POST',
    path: string,
    value: unknown,
    mapper?: StatusMapper,
  ): Promise<unknown> {
    const body = Buffer.from(JSON.stringify(value), 'utf8');
    return parseEnvelope(
      await this.call(method, path, undefined, body, 'application/json', mapper),
      path,
    );
  }

  /** POST a raw body with the parameters in the query (upload handlers, §5.3). */
  async upload(
    path: string,
    params: QueryParams,
    body: Uint8Array,
    mapper?: StatusMapper,
  ): Promise<unknown> {
    return parseEnvelope(
      await this.call('POST', path, params, body, 'application/octet-stream', mapper),
      path,
    );
  }

  /** GET raw bytes (download handlers). */
  download(path: string, params?: QueryParams, mapper?: StatusMapper): Promise<Buffer> {
    return this.call('GET', path, params, undefined, undefined, mapper);
  }

  /** Drop the connection at once (PBS's client does so after finish); resolves when it is gone. */
  async close(): Promise<void> {
    if (!this.#session.destroyed) this.#session.destroy();
    this.#socket.destroy();
    await this.#closed;
  }
}

/** The REST mapping, exported for callers that add their own cases in front of it. */
export const restStatusMapper: StatusMapper = (status) => statusCode(status);
