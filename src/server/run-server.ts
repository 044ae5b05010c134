/**
 * The daemon (`burrow-manager serve`, PBS's proxmox-backup-proxy): certificate, logger, tasks,
 * the server's parts (build-server.ts) and the HTTPS listener, plus the process signals:
 * SIGTERM/SIGINT shut down gracefully (a second one stops at once), SIGHUP reloads the
 * certificate files so `cert update --force` takes effect without a restart.
 */
import type { Logger } from 'pino';
import type { BurrowDirs } from '../lib/dirs.js';
import { BurrowError } from '../lib/errors.js';
import { TaskManager } from '../tasks/index.js';
import { buildServerParts, type ServerParts, type ServerPartsDeps } from './build-server.js';
import {
  loadCertificate,
  loadOrCreateServerCertificate,
  type ServerCertificate,
} from './certificate.js';
import {
  DEFAULT_GRACE_MS,
  formatHostPort,
  startHttpsServer,
  type CloseOptions,
  type HttpsServerHandle,
} from './https-server.js';
import { createLogger } from './logger.js';

export const DEFAULT_PORT = 8007;
/** PBS listens on `[::]:8007`: every address, IPv4 included (dual-stack). */
export const DEFAULT_LISTEN = `[::]:${DEFAULT_PORT}`;

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * `host:port`, `[v6]:port`, `host` or `[v6]` (port 8007), or `:port` / a bare port (all
 * addresses). Port 0 asks the system for a free port.
 */
export function parseListenAddress(text: string): ListenAddress {
  const bad = (): BurrowError =>
    new BurrowError(
      'INVALID_ARGUMENT',
      `invalid listen address ${JSON.stringify(text)}: expected host:port, [ipv6]:port or a port`,
      { details: { value: text } },
    );
  const port = (value: string | undefined): number => {
    if (value === undefined || value === '') return DEFAULT_PORT;
    if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) throw bad();
    return Number(value);
  };
  const t = text.trim();
  if (/^\d+$/.test(t)) return { host: '::', port: port(t) };
  const bracketed = /^\[([0-9A-Fa-f:.%\w]+)\](?::(\d*))?$/.exec(t);
  if (bracketed !== null) return { host: bracketed[1] ?? '', port: port(bracketed[2]) };
  const colon = t.lastIndexOf(':');
  if (colon === -1) {
    if (t === '') throw bad();
    return { host: t, port: DEFAULT_PORT };
  }
  const host = t.slice(0, colon);
  // An IPv6 address without brackets is ambiguous with a port: require the brackets.
  if (host.includes(':')) throw bad();
  return { host: host === '' ? '::' : host, port: port(t.slice(colon + 1)) };
}

export interface StartServerOptions {
  dirs: BurrowDirs;
  /** Default `[::]:8007`, falling back to `0.0.0.0:8007` where IPv6 is unavailable. */
  listen?: string;
  /** Certificate and key files to use instead of `<configDir>/proxy.pem` + `proxy.key`. */
  certPath?: string;
  keyPath?: string;
  log?: Logger;
  /** For tests: other parts than buildServerParts' (the integrator's single wiring point). */
  buildParts?: (deps: ServerPartsDeps) => Promise<ServerParts>;
}

export interface RunningServer {
  readonly address: ListenAddress;
  readonly url: string;
  readonly fingerprint: string;
  readonly log: Logger;
  /** Re-read the certificate files and present them to new connections. */
  reloadCertificate(): Promise<string>;
  close(options?: CloseOptions): Promise<void>;
}

function isAddressFamilyError(error: unknown): boolean {
  if (!(error instanceof BurrowError)) return false;
  const errno = error.details.errnoName;
  return errno === 'EAFNOSUPPORT' || errno === 'EADDRNOTAVAIL';
}

/** Start the daemon's listener; the caller decides when to close it. */
export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const log = options.log ?? createLogger();
  const explicit = options.listen !== undefined;
  const listen = parseListenAddress(options.listen ?? DEFAULT_LISTEN);

  let certificate: Omit<ServerCertificate, 'created'> = await loadOrCreateServerCertificate(
    options.dirs,
    {
      ...(options.certPath === undefined ? {} : { certPath: options.certPath }),
      ...(options.keyPath === undefined ? {} : { keyPath: options.keyPath }),
    },
  ).then((cert) => {
    if (cert.created)
      log.info(
        { certPath: cert.certPath, keyPath: cert.keyPath, fingerprint: cert.fingerprint },
        'created a self-signed certificate',
      );
    return cert;
  });

  const tasks = new TaskManager({ dirs: options.dirs });
  const parts = await (options.buildParts ?? buildServerParts)({
    dirs: options.dirs,
    tasks,
    log,
    now: () => Math.floor(Date.now() / 1000),
  });

  const listenOn = (host: string): Promise<HttpsServerHandle> =>
    startHttpsServer({
      host,
      port: listen.port,
      certPem: certificate.certPem,
      keyPem: certificate.keyPem,
      log,
      onRequest: (req, res) => parts.onRequest(req, res),
      onUpgrade: (req, socket, head) => parts.onUpgrade(req, socket, head),
    });
  let server: HttpsServerHandle;
  try {
    server = await listenOn(listen.host);
  } catch (error) {
    if (explicit || listen.host !== '::' || !isAddressFamilyError(error)) throw error;
    log.warn('IPv6 is not available: listening on IPv4 only');
    server = await listenOn('0.0.0.0');
  }
  let closing: Promise<void> | undefined;
  const url = `https://${formatHostPort(server.address.host, server.address.port)}`;
  log.info({ url, fingerprint: certificate.fingerprint }, 'listening');

  return {
    address: server.address,
    url,
    get fingerprint() {
      return certificate.fingerprint;
    },
    log,
    async reloadCertificate() {
      const loaded = await loadCertificate(certificate);
      if (loaded === undefined)
        throw new BurrowError('NOT_FOUND', `certificate file ${certificate.certPath} not found`, {
          details: { path: certificate.certPath },
        });
      server.setCertificate(loaded.certPem, loaded.keyPem);
      certificate = loaded;
      log.info({ fingerprint: loaded.fingerprint }, 'certificate reloaded');
      return loaded.fingerprint;
    },
    close(closeOptions) {
      if (closing !== undefined) {
        // Joins the running shutdown, possibly with a shorter grace period.
        void server.close(closeOptions);
        return closing;
      }
      log.info('shutting down');
      closing = (async () => {
        await server.close(closeOptions);
        await parts.close?.();
        log.info('server stopped');
      })();
      return closing;
    },
  };
}

export interface RunServerOptions extends StartServerOptions {
  /** Where the `listening on` and fingerprint lines go (default stdout). */
  stdout?: NodeJS.WritableStream;
  /** How long a shutdown waits for running requests and sessions (default 60 s). */
  graceMs?: number;
}

/**
 * Run the daemon until SIGTERM or SIGINT, then shut down gracefully and resolve. Prints
 * `listening on https://HOST:PORT` and `fingerprint (sha256): ...` to stdout once it accepts
 * connections (scripts and tests read the port from there when asked for port 0).
 */
export async function runServer(options: RunServerOptions): Promise<void> {
  const running = await startServer(options);
  const out = options.stdout ?? process.stdout;
  out.write(`listening on ${running.url}\nfingerprint (sha256): ${running.fingerprint}\n`);

  await new Promise<void>((resolve, reject) => {
    let stopping: Promise<void> | undefined;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping !== undefined) {
        running.log.warn({ signal }, 'second stop signal: closing all connections now');
        void running.close({ graceMs: 0 });
        return;
      }
      running.log.info({ signal }, 'stop signal received');
      stopping = running.close({ graceMs: options.graceMs ?? DEFAULT_GRACE_MS });
      stopping.then(finish, (error: unknown) => {
        cleanup();
        reject(error instanceof Error ? error : new Error(String(error)));
      });
    };
    const reload = (): void => {
      running.reloadCertificate().catch((error: unknown) => {
        running.log.error({ err: error }, 'certificate reload failed; keeping the old one');
      });
    };
    const cleanup = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      process.off('SIGHUP', reload);
    };
    const finish = (): void => {
      cleanup();
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGHUP', reload);
  });
}
