/**
 * The HTTPS listener (pbs-protocol §2): TLS on one port, HTTP/1.1 only (ALPN `http/1.1`; HTTP/2
 * is spoken only inside an upgraded backup/reader connection, §5.2), keep-alive on. It owns the
 * connections, not what is said on them: plain requests go to `onRequest`, `Upgrade` requests to
 * `onUpgrade` with the raw TLS socket.
 *
 * Shutdown is graceful: stop accepting, close idle keep-alive connections, let running requests
 * and upgraded sessions (a backup in progress) finish within a grace period, then destroy what is
 * left. Destroying an upgraded socket is how an unfinished backup session ends; the session code
 * reacts to the socket's `close` (and removes the unfinished snapshot).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { BurrowError } from '../lib/errors.js';

export interface HttpsServerOptions {
  /** Address to listen on: `0.0.0.0`, `::` (all, dual-stack), `127.0.0.1`, ... */
  host: string;
  /** 0 picks a free port (see `address.port`). */
  port: number;
  certPem: string;
  keyPem: string;
  log: Logger;
  onRequest(req: IncomingMessage, res: ServerResponse): void | Promise<void>;
  /**
   * A request with `Connection: upgrade`. The handler answers on the socket itself (an error
   * response, or `101` and then its own protocol). The socket is tracked from here on and
   * destroyed at the end of a shutdown's grace period.
   */
  onUpgrade(req: IncomingMessage, socket: TLSSocket, head: Buffer): void | Promise<void>;
  /** How long an idle keep-alive connection stays open (default 120 s). */
  keepAliveTimeoutMs?: number;
}

export interface CloseOptions {
  /** How long open requests and upgraded sessions may take to finish (default 60 s). */
  graceMs?: number;
}

export interface HttpsServerHandle {
  /** Where the server listens; the real port when 0 was asked for. */
  readonly address: { host: string; port: number };
  /** Upgraded connections that are still open. */
  readonly upgradedConnections: number;
  /** Present a different certificate to new connections (open ones keep theirs). */
  setCertificate(certPem: string, keyPem: string): void;
  /**
   * Graceful shutdown; resolves when every connection is closed. A second call joins the first
   * and can only shorten its grace period (`{ graceMs: 0 }`: close everything now).
   */
  close(options?: CloseOptions): Promise<void>;
}

export const DEFAULT_GRACE_MS = 60_000;
const DEFAULT_KEEP_ALIVE_MS = 120_000;

function plainResponse(status: number, reason: string, message: string): string {
  const body = `${message}\n`;
  return (
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  );
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export async function startHttpsServer(options: HttpsServerOptions): Promise<HttpsServerHandle> {
  const { log } = options;
  const upgraded = new Set<TLSSocket>();
  /** Responses not yet sent: told to close their connection when a shutdown starts. */
  const active = new Set<ServerResponse>();
  let closing = false;
  let closePromise: Promise<void> | undefined;

  const server: Server = createServer({
    cert: options.certPem,
    key: options.keyPem,
    ALPNProtocols: ['http/1.1'],
    minVersion: 'TLSv1.2',
    keepAlive: true,
    noDelay: true,
  });
  server.keepAliveTimeout = options.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_MS;

  server.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
    // Common and harmless: port scanners, and clients that refuse our self-signed certificate.
    log.debug({ err: error, remote: socket.remoteAddress }, 'TLS handshake failed');
  });

  server.on('clientError', (error: Error & { code?: string }, socket: Socket) => {
    log.debug({ err: error, remote: socket.remoteAddress }, 'bad HTTP request');
    if (error.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    socket.end(
      plainResponse(
        status,
        status === 431 ? 'Request Header Fields Too Large' : 'Bad Request',
        'bad request',
      ),
    );
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    // Requests that arrive on a kept-alive connection during shutdown are still answered, but
    // the connection is not kept for another one.
    if (closing) res.setHeader('connection', 'close');
    active.add(res);
    res.once('close', () => active.delete(res));
    res.on('finish', () => {
      log.info(
        {
          method: req.method,
          url: req.url,
          status: res.statusCode,
          ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
          remote: req.socket.remoteAddress,
        },
        'request',
      );
    });
    const fail = (error: unknown): void => {
      log.error({ err: error, method: req.method, url: req.url }, 'request handler failed');
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
        res.end('internal server error\n');
      } else {
        res.destroy();
      }
    };
    try {
      const result = options.onRequest(req, res);
      if (result instanceof Promise) result.catch(fail);
    } catch (error) {
      fail(error);
    }
  });

  server.on('upgrade', (req: IncomingMessage, socket: TLSSocket, head: Buffer) => {
    // The HTTP server no longer listens on this socket: without a listener an 'error' (a
    // client that vanishes) would crash the process.
    socket.on('error', (error: Error) => {
      log.debug({ err: error, url: req.url }, 'upgraded connection error');
    });
    if (closing) {
      socket.end(plainResponse(503, 'Service Unavailable', 'server is shutting down'));
      return;
    }
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    // A keep-alive idle timeout armed before this request must not cut a long session short.
    socket.setTimeout(0);
    log.info({ method: req.method, url: req.url, remote: socket.remoteAddress }, 'upgrade');
    const fail = (error: unknown): void => {
      log.error({ err: error, url: req.url }, 'upgrade handler failed');
      // Nothing is known about what the handler wrote already, so no response: just close.
      socket.destroy();
    };
    try {
      const result = options.onUpgrade(req, socket, head);
      if (result instanceof Promise) result.catch(fail);
    } catch (error) {
      fail(error);
    }
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      reject(
        new BurrowError(
          'IO_ERROR',
          `cannot listen on ${formatHostPort(options.host, options.port)}: ${error.code ?? errorMessage(error)}`,
          {
            details: { host: options.host, port: options.port, errnoName: error.code },
            cause: error,
          },
        ),
      );
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host: options.host, port: options.port });
  });
  server.on('error', (error: Error) => log.error({ err: error }, 'listener error'));

  const bound = server.address() as AddressInfo;
  const address = { host: bound.address, port: bound.port };

  /** Ends the grace period early; set while a close() is waiting. */
  let expireNow: (() => void) | undefined;
  let deadline = Infinity;

  async function close(graceMs: number): Promise<void> {
    closing = true;
    for (const res of active) if (!res.headersSent) res.setHeader('connection', 'close');
    const closed = new Promise<void>((resolve) => {
      // Resolves once every connection, upgraded ones included, has closed.
      server.close(() => resolve());
    }).then(async () => {
      // The listener counts the TCP sockets; the TLS sockets above them close a moment later.
      await Promise.all(
        [...upgraded].map((socket) => new Promise((resolve) => socket.once('close', resolve))),
      );
    });
    // server.close() already drops idle keep-alive connections; connections that become idle
    // later (their last request answered) are dropped by this sweep.
    const sweep = setInterval(() => server.closeIdleConnections(), 250);
    const timers = new Set<NodeJS.Timeout>();
    const expired = new Promise<'expired'>((resolve) => {
      expireNow = () => resolve('expired');
    });
    const shorten = (ms: number): void => {
      if (Date.now() + ms >= deadline) return;
      deadline = Date.now() + ms;
      timers.add(setTimeout(() => expireNow?.(), ms));
    };
    shortenGrace = shorten;
    shorten(graceMs);
    try {
      if (upgraded.size > 0)
        log.info({ sessions: upgraded.size, graceMs }, 'waiting for upgraded sessions to finish');
      const outcome = await Promise.race([closed.then(() => 'closed' as const), expired]);
      if (outcome === 'expired') {
        log.warn(
          { sessions: upgraded.size, graceMs },
          'grace period over: closing the remaining connections',
        );
        for (const socket of upgraded) socket.destroy();
        server.closeAllConnections();
        await closed;
      }
    } finally {
      clearInterval(sweep);
      for (const timer of timers) clearTimeout(timer);
    }
  }
  let shortenGrace: ((ms: number) => void) | undefined;

  return {
    address,
    get upgradedConnections() {
      return upgraded.size;
    },
    setCertificate(certPem: string, keyPem: string) {
      server.setSecureContext({ cert: certPem, key: keyPem });
    },
    close(closeOptions = {}) {
      const graceMs = Math.max(0, closeOptions.graceMs ?? DEFAULT_GRACE_MS);
      if (closePromise === undefined) closePromise = close(graceMs);
      else shortenGrace?.(graceMs);
      return closePromise;
    },
  };
}

/** `host:port`, with IPv6 addresses in brackets: `[::]:8007`. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
