/**
 * The HTTP/1.1 side of the backup and reader protocols (pbs-protocol §5.1, §6.1): the HTTPS
 * server hands every `Upgrade` request here. The checks run in PBS's order (credentials, path,
 * parameters, privileges, datastore and its maintenance mode, the Upgrade token, then the
 * datastore-side checks of BackupSession.start / ReaderSession.open); a refusal is a normal
 * HTTP/1.1 response with PBS's status and plain-text message, after which the connection closes.
 * On success the answer is `101 Switching Protocols` and the same TLS connection carries HTTP/2,
 * whose requests are the session's endpoints, until either side closes it.
 */
import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { BackupSession } from '../../datastore/backup-session.js';
import { DataStore } from '../../datastore/datastore.js';
import { ReaderSession } from '../../datastore/reader-session.js';
import { isBurrowError } from '../../lib/errors.js';
import type { TaskContext, TaskManager } from '../../tasks/index.js';
import type { Authid } from '../../types/auth.js';
import { mayActAsOwner } from '../../types/auth.js';
import type { BackupNamespace } from '../../types/backup.js';
import { backupDir, backupGroup, parseNamespace } from '../../types/backup.js';
import { parseQueryString, verifyParameters } from '../rest/parameters.js';
import { aclPath } from '../rest/routes/datastore-common.js';
import type { ServerDeps } from '../server-types.js';
import { BACKUP_ENDPOINTS } from './backup-endpoints.js';
import type { Endpoint, ServedConnection } from './http2-session.js';
import {
  JSON_CONTENT_TYPE,
  messageOf,
  normalizePath,
  serveHttp2,
  sessionStatusOf,
} from './http2-session.js';
import { READER_ENDPOINTS } from './reader-endpoints.js';
import { BACKUP_UPGRADE_PARAMS, READER_UPGRADE_PARAMS } from './schemas.js';

/** The Upgrade tokens (pbs-protocol §5.1, §6.1). */
export const BACKUP_PROTOCOL_ID = 'proxmox-backup-protocol-v1';
export const READER_PROTOCOL_ID = 'proxmox-backup-reader-protocol-v1';

/** The upgrade paths. */
export const BACKUP_PATH = '/api2/json/backup';
export const READER_PATH = '/api2/json/reader';

/** PBS refuses a path plus query longer than this with 414. */
export const MAX_URI_QUERY_LENGTH = 3072;

/** PBS answers failed authentication no earlier than this after the request started. */
export const AUTH_FAILURE_DELAY_MS = 3000;

/** How long a refused connection may stay open for the client to read the answer. */
const REFUSED_LINGER_MS = 10_000;

export interface ProtocolUpgradeOptions {
  /** Delay of a 401 from the request's start (default AUTH_FAILURE_DELAY_MS, as PBS). */
  readonly authFailureDelayMs?: number;
  /**
   * Told about every session that started (after the 101), with a promise that settles once the
   * session has ended and cleaned up: an unfinished backup's snapshot removed, the task ended.
   * A server that shuts down destroys the upgraded sockets and then awaits these.
   */
  readonly onSession?: (ended: Promise<void>) => void;
}

/** A refusal with PBS's status and message. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Handle an HTTP/1.1 `Upgrade` request from the HTTPS server's `'upgrade'` event: GET
 * /api2/json/backup (token `proxmox-backup-protocol-v1`) starts a backup session, GET
 * /api2/json/reader (`proxmox-backup-reader-protocol-v1`) a reader session; any other upgrade is
 * answered `404 Path '…' not found.`. Never throws: refusals are HTTP/1.1 responses on the
 * socket, which is then closed; a session runs until the connection ends.
 */
export function handleProtocolUpgrade(
  deps: ServerDeps,
  req: IncomingMessage,
  socket: TLSSocket,
  head: Buffer,
  options: ProtocolUpgradeOptions = {},
): void {
  const started = Date.now();
  // The HTTP server removed its own error handler when it gave the socket up: without one, a
  // reset connection would crash the process.
  socket.on('error', (error) => {
    deps.log.debug({ err: error }, 'upgraded connection error');
  });
  upgrade(deps, req, socket, head, options, started).catch((error: unknown) => {
    deps.log.error({ err: error, url: req.url }, 'protocol upgrade failed');
    refuse(socket, 500, messageOf(error));
  });
}

function refuse(socket: TLSSocket, status: number, message: string): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = Buffer.from(message, 'utf8');
  const head =
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n` +
    `content-type: ${JSON_CONTENT_TYPE}\r\n` +
    `content-length: ${body.byteLength}\r\n` +
    `date: ${new Date().toUTCString()}\r\n` +
    'connection: close\r\n\r\n';
  socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  // The client normally closes once it has read the answer; one that does not is cut off.
  setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
}

function switchResponse(protocol: string): string {
  return `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${protocol}\r\n\r\n`;
}

/**
 * The task manager given to a session, which lets this layer see the session's own task (the
 * first task the session runs; a verify-new task started at finish passes through untouched):
 * failed requests are logged into it as PBS does, and its abort ends the connection.
 */
function watchedTasks(tasks: TaskManager): {
  tasks: TaskManager;
  task: () => TaskContext | undefined;
  onTask: (listener: (context: TaskContext) => void) => void;
} {
  let context: TaskContext | undefined;
  let captured = false;
  let listener: ((context: TaskContext) => void) | undefined;
  const run: TaskManager['run'] = (workerType, workerId, authId, work, opts) => {
    if (captured) return tasks.run(workerType, workerId, authId, work, opts);
    captured = true;
    return tasks.run(
      workerType,
      workerId,
      authId,
      (ctx) => {
        context = ctx;
        listener?.(ctx);
        return work(ctx);
      },
      opts,
    );
  };
  const proxy = new Proxy(tasks, {
    get(target, property) {
      if (property === 'run') return run;
      const value: unknown = Reflect.get(target, property, target);
      // Methods run on the real manager: its private fields do not exist on the proxy.
      return typeof value === 'function'
        ? (value as (...args: unknown[]) => unknown).bind(target)
        : value;
    },
  });
  return {
    tasks: proxy,
    task: () => context,
    onTask: (l) => {
      listener = l;
      if (context !== undefined) l(context);
    },
  };
}

interface CommonParams {
  store: string;
  ns: BackupNamespace;
  type: string;
  id: string;
  time: number;
  debug: boolean;
}

function commonParams(params: Record<string, unknown>): CommonParams {
  return {
    store: params['store'] as string,
    ns: parseNamespace((params['ns'] as string | undefined) ?? ''),
    type: params['backup-type'] as string,
    id: params['backup-id'] as string,
    time: params['backup-time'] as number,
    debug: params['debug'] === true,
  };
}

function checkUpgradeHeader(req: IncomingMessage, protocol: string): void {
  const token = req.headers.upgrade;
  if (token === undefined) throw new Refusal(400, 'missing Upgrade header');
  if (token !== protocol) throw new Refusal(400, 'invalid protocol name');
  if (req.httpVersionMajor >= 2) {
    throw new Refusal(
      400,
      `unexpected http version 'HTTP/${req.httpVersion}' (expected version < 2)`,
    );
  }
}

async function lookupStore(deps: ServerDeps, name: string): Promise<DataStore> {
  return DataStore.lookup(name, {
    dirs: deps.dirs,
    log: (line) => deps.log.info({ store: name }, line),
  });
}

async function upgrade(
  deps: ServerDeps,
  req: IncomingMessage,
  socket: TLSSocket,
  head: Buffer,
  options: ProtocolUpgradeOptions,
  started: number,
): Promise<void> {
  const url = req.url ?? '/';
  const queryAt = url.indexOf('?');
  const rawPath = queryAt < 0 ? url : url.slice(0, queryAt);
  const query = queryAt < 0 ? '' : url.slice(queryAt + 1);
  if (rawPath.length + query.length > MAX_URI_QUERY_LENGTH) {
    refuse(socket, 414, '');
    return;
  }
  const normalized = normalizePath(rawPath);
  if (normalized === undefined) {
    refuse(socket, 400, 'Path contains illegal components.');
    return;
  }

  let authId: Authid;
  try {
    authId = await deps.access.authenticate({ method: req.method ?? 'GET', headers: req.headers });
  } catch (error) {
    if (!isBurrowError(error, 'AUTH_FAILED')) throw error;
    deps.log.info(
      { url: normalized.path, peer: socket.remoteAddress, reason: error.message },
      'authentication failure',
    );
    const delay = options.authFailureDelayMs ?? AUTH_FAILURE_DELAY_MS;
    const wait = started + delay - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    refuse(socket, 401, 'authentication failed');
    return;
  }

  const method = req.method ?? '';
  const kind =
    method !== 'GET'
      ? undefined
      : normalized.path === BACKUP_PATH
        ? 'backup'
        : normalized.path === READER_PATH
          ? 'reader'
          : undefined;
  try {
    if (kind === undefined) throw new Refusal(404, `Path '${normalized.path}' not found.`);
    const request: UpgradeRequest = { deps, req, socket, head, options, authId, query };
    if (kind === 'backup') {
      await startBackup(request);
    } else {
      await startReader(request);
    }
  } catch (error) {
    const status = error instanceof Refusal ? error.status : sessionStatusOf(error);
    if (status >= 500)
      deps.log.error({ err: error, url: normalized.path }, 'protocol upgrade failed');
    refuse(socket, status, messageOf(error));
  }
}

/** An authenticated upgrade request on its way to becoming a session. */
interface UpgradeRequest {
  deps: ServerDeps;
  req: IncomingMessage;
  socket: TLSSocket;
  /** Bytes the client sent after the request head: the start of its HTTP/2 preface. */
  head: Buffer;
  options: ProtocolUpgradeOptions;
  authId: Authid;
  query: string;
}

/** Run a started session on the connection; `close` ends it with the connection's outcome. */
function runSession<S>(
  { deps, socket, head, options }: UpgradeRequest,
  protocol: string,
  session: S,
  endpoints: readonly Endpoint<S>[],
  watched: ReturnType<typeof watchedTasks>,
  debug: boolean,
  close: (reason: Error | undefined) => Promise<void>,
): void {
  let resolveEnded!: () => void;
  const ended = new Promise<void>((resolve) => {
    resolveEnded = resolve;
  });
  options.onSession?.(ended);
  const served: ServedConnection = serveHttp2({
    socket,
    head,
    switchResponse: switchResponse(protocol),
    session,
    endpoints,
    log: deps.log,
    task: watched.task,
    debug,
    onClose: (reason) => {
      close(reason)
        .catch((error: unknown) => {
          deps.log.error({ err: error }, 'ending a protocol session failed');
        })
        .finally(resolveEnded);
    },
  });
  // An aborted task has ended its session; the connection goes with it.
  watched.onTask((context) => {
    const abort = (): void => {
      const reason: unknown = context.signal.reason;
      served.destroy(reason instanceof Error ? reason : new Error('task aborted'));
    };
    if (context.signal.aborted) abort();
    else context.signal.addEventListener('abort', abort, { once: true });
  });
}

async function startBackup(request: UpgradeRequest): Promise<void> {
  const { deps, req, socket, authId, query } = request;
  const params = verifyParameters(BACKUP_UPGRADE_PARAMS, parseQueryString(query), 'strings');
  const common = commonParams(params);
  const group = backupGroup(common.ns, common.type, common.id);
  const privileges = await deps.access.privileges(authId, aclPath(common.store, common.ns));
  if (!privileges.has('Datastore.Backup')) throw new Refusal(403, 'permission check failed');
  const store = await lookupStore(deps, common.store);
  store.checkMaintenance('write');
  checkUpgradeHeader(req, BACKUP_PROTOCOL_ID);

  const watched = watchedTasks(deps.tasks);
  const session = await BackupSession.start({
    store,
    ns: common.ns,
    group,
    backupTime: common.time,
    authId,
    tasks: watched.tasks,
    benchmark: params['benchmark'] === true,
    debug: common.debug,
    ...(socket.remoteAddress === undefined ? {} : { origin: socket.remoteAddress }),
  });
  runSession(
    request,
    BACKUP_PROTOCOL_ID,
    session,
    BACKUP_ENDPOINTS,
    watched,
    common.debug,
    (reason) => session.close(reason),
  );
}

async function startReader(request: UpgradeRequest): Promise<void> {
  const { deps, req, authId, query } = request;
  const params = verifyParameters(READER_UPGRADE_PARAMS, parseQueryString(query), 'strings');
  const common = commonParams(params);
  const path = aclPath(common.store, common.ns);
  const privileges = await deps.access.privileges(authId, path);
  const mayRead = privileges.has('Datastore.Read');
  if (!mayRead && !privileges.has('Datastore.Backup')) {
    throw new Refusal(400, `no permissions on ${path}`);
  }
  const store = await lookupStore(deps, common.store);
  store.checkMaintenance('read');
  checkUpgradeHeader(req, READER_PROTOCOL_ID);
  const dir = backupDir(backupGroup(common.ns, common.type, common.id), common.time);
  if (!mayRead) {
    // Datastore.Backup alone reads only the caller's own groups.
    const owner = await store.getOwner(dir.group);
    if (!mayActAsOwner(authId, owner)) throw new Refusal(400, 'backup owner check failed!');
  }

  const watched = watchedTasks(deps.tasks);
  const session = await ReaderSession.open({
    store,
    dir,
    authId,
    tasks: watched.tasks,
    debug: common.debug,
  });
  runSession(request, READER_PROTOCOL_ID, session, READER_ENDPOINTS, watched, common.debug, () =>
    session.close(),
  );
}
