/**
 * HTTP/2 on an upgraded TLS connection (pbs-protocol §5.2, §10) and the request plumbing shared
 * by the backup and reader protocols: endpoint lookup, PBS's parameter passing (raw endpoints from
 * the query string only, the others from query plus form body or from a JSON body), body limits
 * enforced while the body arrives, `{"data":...}` envelopes and plain-text errors.
 *
 * Node's http2 module has no way to accept an HTTP/1.1 Upgrade to a custom token, so the upgraded
 * socket is handed to a private `http2.createServer()` as if it were a new connection (the four
 * steps are explained at `startHttp2`). One such server serves exactly one session.
 */
import http2 from 'node:http2';
import type { Http2Session, Http2Stream, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { STATUS_CODES } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { BurrowError } from '../../lib/errors.js';
import type { TaskContext } from '../../tasks/index.js';
import { readParameters } from '../rest/parameters.js';
import type { ParamSchema } from '../rest/route.js';

/** Stream and connection window, and the largest frame (pbs-protocol §5.2). */
export const SESSION_WINDOW_SIZE = 32 * 1024 * 1024;
export const SESSION_MAX_FRAME_SIZE = 4 * 1024 * 1024;
/** The body limit of the endpoints that take form or JSON bodies (pbs-protocol §4.1). */
export const MAX_PARAMETER_BODY = 512 * 1024;

/** Idle time before TCP keep-alive probes start on a session's connection. */
const KEEPALIVE_DELAY_MS = 60_000;

export const JSON_CONTENT_TYPE = 'application/json;charset=UTF-8';
const OCTET_STREAM = 'application/octet-stream';

export type EndpointReply =
  | { readonly kind: 'data'; readonly data: unknown }
  | { readonly kind: 'raw'; readonly body: Uint8Array };

export const dataReply = (data: unknown): EndpointReply => ({ kind: 'data', data });
export const rawReply = (body: Uint8Array): EndpointReply => ({ kind: 'raw', body });

/**
 * How an upload's body is checked while it arrives: it must be exactly `expected` bytes. A body
 * that grows beyond that is refused at once (nothing more is read or kept), a shorter one when it
 * ends. The messages are PBS's.
 */
export interface UploadLimit {
  readonly expected: number;
  /** The refusal of a body larger than announced; `length` is its content-length, if sent. */
  tooLarge(length: number | undefined): string;
  /** The refusal of a body of another size than announced. */
  wrongSize(length: number): string;
}

export interface Endpoint<S> {
  readonly method: 'GET' | 'POST' | 'PUT';
  /** The session-relative path without its leading `/`: `dynamic_chunk`. */
  readonly path: string;
  readonly parameters: ParamSchema;
  /**
   * `normal`: parameters from the query plus a form body, or from a JSON body (PBS's API
   * handlers); `upload`: query only, the body is the data, checked against `upload`; `download`:
   * query only, a body is ignored; `discard`: query only, the body is read and dropped.
   */
  readonly kind: 'normal' | 'upload' | 'download' | 'discard';
  /**
   * Calls that must reach the session in the order their streams were opened (appends, closes):
   * each is dispatched only after every earlier ordered stream of the connection was dispatched
   * or gave up, whatever order their bodies complete in.
   */
  readonly ordered?: boolean;
  readonly upload?: (params: Readonly<Record<string, unknown>>) => UploadLimit;
  /** A status other than the default mapping for this endpoint's errors. */
  readonly statusOf?: (error: unknown) => number | undefined;
  /** Called synchronously at dispatch: checks that depend on call order must run before any await. */
  handler(
    session: S,
    params: Readonly<Record<string, unknown>>,
    body: Uint8Array | undefined,
  ): Promise<EndpointReply>;
}

/**
 * The status of an error as PBS answers it inside a session: 401, 403 and 404 stay, an internal
 * error is 500, and everything else is a plain `bail!`, which PBS answers with 400 (so the
 * datastore's 409 for a lock or 413 for a large blob become 400 here).
 */
export function sessionStatusOf(error: unknown): number {
  if (!(error instanceof BurrowError)) return 500;
  const status = error.httpStatus;
  if (status === 401 || status === 403 || status === 404 || status === 414) return status;
  if (error.code === 'INTERNAL') return 500;
  return 400;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** An error answered with a chosen status (protocol-level refusals). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** PBS's path normalisation: empty components dropped; one starting with `.` is refused. */
export function normalizePath(path: string): { path: string; components: string[] } | undefined {
  const components = path.split('/').filter((c) => c !== '');
  if (components.some((c) => c.startsWith('.'))) return undefined;
  return { path: `/${components.join('/')}`, components };
}

/** Calls dispatched in stream order (see Endpoint.ordered). */
class OrderedDispatch {
  readonly #slots: Array<{ run?: () => void; dropped: boolean }> = [];

  take(): { dispatch(run: () => void): void; drop(): void } {
    const slot: { run?: () => void; dropped: boolean } = { dropped: false };
    this.#slots.push(slot);
    return {
      dispatch: (run) => {
        slot.run = run;
        this.#pump();
      },
      drop: () => {
        slot.dropped = true;
        this.#pump();
      },
    };
  }

  #pump(): void {
    for (;;) {
      const head = this.#slots[0];
      if (head === undefined || (!head.dropped && head.run === undefined)) return;
      this.#slots.shift();
      if (!head.dropped) head.run?.();
    }
  }
}

export interface ServeOptions<S> {
  readonly socket: TLSSocket;
  /** Bytes the HTTP/1.1 server read past the upgrade request (an early HTTP/2 preface). */
  readonly head: Buffer;
  /** The HTTP/1.1 response that switches protocols, written before HTTP/2 starts. */
  readonly switchResponse: string;
  readonly session: S;
  readonly endpoints: readonly Endpoint<S>[];
  readonly log: Logger;
  /** The session's task: failed requests are logged there as PBS logs them. */
  readonly task: () => TaskContext | undefined;
  readonly debug: boolean;
  /**
   * The connection is gone (closed by either side, reset, or never started): `reason` is the
   * connection's error, undefined for an orderly close.
   */
  readonly onClose: (reason: Error | undefined) => void;
}

export interface ServedConnection {
  /** End the connection now (a task abort, a server shutdown). */
  destroy(reason?: Error): void;
}

/**
 * Write the 101 and run HTTP/2 on the socket. Steps, each needed on Node 20 (found by helper TLS,
 * /tmp/burrow-docs/H2_UPGRADE_NOTES.md): the session starts only from the write callback of the
 * 101 (starting while that write is still queued in the TLS layer aborts the process natively);
 * the socket's `alpnProtocol` is overridden to `h2`, because the HTTP/2 connection listener hands
 * sockets that negotiated `http/1.1` or nothing to its HTTP/1 fallback; bytes the HTTP/1.1 parser
 * already read are unshifted, and the session picks them up from the socket's buffer; the
 * connection window is raised with setLocalWindowSize, since SETTINGS only set stream windows.
 */
export function serveHttp2<S>(options: ServeOptions<S>): ServedConnection {
  const { socket, log } = options;
  let h2session: Http2Session | undefined;
  let closed = false;
  let failure: Error | undefined;
  const finish = (): void => {
    if (closed) return;
    closed = true;
    options.onClose(failure);
  };
  const fail = (error: unknown): void => {
    failure ??= error instanceof Error ? error : new Error(String(error));
  };

  socket.on('error', fail);
  // A peer that vanished without a word would otherwise hold the session's locks forever.
  socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
  // An idle timeout the HTTPS server set for HTTP/1.1 does not apply to a session, which may
  // legitimately sit idle (PBS has none either).
  socket.setTimeout(0);
  socket.once('close', () => {
    // The HTTP/2 session notices the socket's end itself; this covers a socket that died
    // before the session started.
    if (h2session === undefined) finish();
  });

  if (socket.destroyed) {
    // The client gave up while the session was being set up.
    fail(new BurrowError('CONNECTION_FAILED', 'connection closed before the session started'));
    queueMicrotask(finish);
    return { destroy: () => undefined };
  }
  socket.write(options.switchResponse, (error) => {
    if ((error !== undefined && error !== null) || socket.destroyed) {
      fail(error ?? new BurrowError('CONNECTION_FAILED', 'connection closed during the upgrade'));
      socket.destroy();
      finish();
      return;
    }
    const server = http2.createServer({
      settings: {
        initialWindowSize: SESSION_WINDOW_SIZE,
        maxFrameSize: SESSION_MAX_FRAME_SIZE,
      },
      // Node's default (10 MB) counts buffered outgoing data too; a few concurrent 4 MiB chunk
      // uploads and a download would exceed it and get new streams refused.
      maxSessionMemory: 256,
    });
    server.on('sessionError', fail);
    server.on('session', (session) => {
      h2session = session;
      session.on('error', fail);
      session.once('close', finish);
      try {
        session.setLocalWindowSize(SESSION_WINDOW_SIZE);
      } catch (setError) {
        log.warn({ err: setError }, 'cannot raise the HTTP/2 connection window');
      }
      const ordered = new OrderedDispatch();
      session.on('stream', (stream, headers) => {
        handleStream(options, ordered, stream, headers);
      });
    });
    Object.defineProperty(socket, 'alpnProtocol', {
      value: 'h2',
      configurable: true,
      writable: true,
    });
    if (options.head.length > 0) socket.unshift(options.head);
    server.emit('connection', socket);
    if (h2session === undefined) {
      log.error('HTTP/2 session did not start on the upgraded connection');
      socket.destroy();
    }
  });

  return {
    destroy: (reason) => {
      if (reason !== undefined) fail(reason);
      if (h2session !== undefined) h2session.destroy();
      else socket.destroy();
    },
  };
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function handleStream<S>(
  options: ServeOptions<S>,
  ordered: OrderedDispatch,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
): void {
  // A peer that resets a stream makes it emit 'error'; that concerns this stream only.
  stream.on('error', () => undefined);
  const method = headerValue(headers, ':method') ?? '';
  const rawPath = headerValue(headers, ':path') ?? '/';
  const queryAt = rawPath.indexOf('?');
  const path = queryAt < 0 ? rawPath : rawPath.slice(0, queryAt);
  const query = queryAt < 0 ? '' : rawPath.slice(queryAt + 1);
  const task = options.task();
  if (options.debug) task?.log(`${method} ${path}`);

  const reply = (status: number, contentType: string, body: Uint8Array): void => {
    if (stream.destroyed || stream.closed) return;
    stream.respond({
      ':status': status,
      'content-type': contentType,
      'content-length': body.byteLength,
    });
    stream.end(body);
    // Answered before the request body was all read (a refused upload): tell the client to stop
    // sending, without error (RFC 9113 §8.1), so nothing more arrives or is kept.
    if (!stream.endAfterHeaders && !stream.readableEnded) {
      stream.close(http2.constants.NGHTTP2_NO_ERROR);
    }
  };
  const replyError = (status: number, message: string): void => {
    const reason = STATUS_CODES[status] ?? 'unknown reason';
    task?.log(`${method} ${path}: ${status} ${reason}: ${message}`);
    reply(status, JSON_CONTENT_TYPE, Buffer.from(message, 'utf8'));
  };

  const normalized = normalizePath(path);
  if (normalized === undefined) {
    replyError(400, 'Path contains illegal components.');
    return;
  }
  if (normalized.components.length === 0) {
    if (method === 'GET') {
      const subdirs = [...new Set(options.endpoints.map((e) => e.path))].sort();
      const body = JSON.stringify({ data: subdirs.map((subdir) => ({ subdir })) });
      reply(200, JSON_CONTENT_TYPE, Buffer.from(body, 'utf8'));
    } else {
      replyError(404, `Path '${normalized.path}' not found.`);
    }
    return;
  }
  const name = normalized.components.join('/');
  const endpoint = options.endpoints.find((e) => e.path === name && e.method === method);
  if (endpoint === undefined) {
    replyError(404, `Path '${normalized.path}' not found.`);
    return;
  }

  const slot = endpoint.ordered === true ? ordered.take() : undefined;
  void (async () => {
    let dispatched = false;
    try {
      const contentType = headerValue(headers, 'content-type');
      const declared = contentLengthOf(headers);
      let body: Uint8Array | undefined;
      let params: Record<string, unknown>;
      if (endpoint.kind === 'normal') {
        if (declared !== undefined && declared > MAX_PARAMETER_BODY) {
          throw new HttpError(400, 'Request body too large');
        }
        body = await readBody(stream, MAX_PARAMETER_BODY, () => 'Request body too large');
        params = await readParameters(endpoint.parameters, {
          method,
          query,
          contentType,
          body,
          raw: false,
          pathParams: {},
        });
        body = undefined;
      } else {
        params = await readParameters(endpoint.parameters, {
          method,
          query,
          contentType,
          body: undefined,
          raw: true,
          pathParams: {},
        });
        if (endpoint.kind === 'upload') {
          const limit = endpoint.upload?.(params);
          if (limit === undefined) throw new BurrowError('INTERNAL', 'upload without a limit');
          if (declared !== undefined && declared > limit.expected) {
            throw new HttpError(400, limit.tooLarge(declared));
          }
          body = await readBody(stream, limit.expected, () => limit.tooLarge(declared));
          if (body.byteLength !== limit.expected) {
            throw new HttpError(400, limit.wrongSize(body.byteLength));
          }
        } else if (endpoint.kind === 'discard') {
          await drainBody(stream);
        }
      }
      const result = await new Promise<EndpointReply>((resolve, reject) => {
        const run = (): void => {
          dispatched = true;
          endpoint.handler(options.session, params, body).then(resolve, reject);
        };
        if (slot === undefined) run();
        else slot.dispatch(run);
      });
      if (result.kind === 'raw') {
        reply(200, OCTET_STREAM, result.body);
      } else {
        const text = JSON.stringify({ data: result.data ?? null });
        reply(200, JSON_CONTENT_TYPE, Buffer.from(text, 'utf8'));
      }
    } catch (error) {
      if (!dispatched) slot?.drop();
      const status =
        error instanceof HttpError
          ? error.status
          : (endpoint.statusOf?.(error) ?? sessionStatusOf(error));
      if (status >= 500) {
        options.log.error({ err: error, method, path }, 'protocol request failed');
      }
      replyError(status, messageOf(error));
    }
  })();
}

function contentLengthOf(headers: IncomingHttpHeaders): number | undefined {
  const text = headerValue(headers, 'content-length');
  if (text === undefined || !/^[0-9]+$/.test(text.trim())) return undefined;
  return Number(text.trim());
}

/**
 * The request body, at most `limit` bytes: one more byte refuses it at once (with the message
 * `tooLarge` gives), before it is kept. A stream that ends early (reset, connection gone) rejects.
 */
function readBody(stream: Http2Stream, limit: number, tooLarge: () => string): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    if (stream.readableEnded) {
      resolve(Buffer.alloc(0));
      return;
    }
    const parts: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.byteLength;
      if (size > limit) {
        cleanup();
        stream.pause();
        parts.length = 0;
        reject(new HttpError(400, tooLarge()));
        return;
      }
      parts.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts, size));
    };
    const onClose = (): void => {
      cleanup();
      reject(new BurrowError('CONNECTION_FAILED', 'request stream closed before its body ended'));
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onClose);
  });
}

/** Read and drop a body (the upload speed test). */
function drainBody(stream: Http2Stream): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    if (stream.readableEnded) {
      resolve(0);
      return;
    }
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.byteLength;
    };
    const onEnd = (): void => {
      stream.off('close', onClose);
      resolve(size);
    };
    const onClose = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      reject(new BurrowError('CONNECTION_FAILED', 'request stream closed before its body ended'));
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onClose);
  });
}
