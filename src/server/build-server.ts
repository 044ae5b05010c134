/**
 * The one place where the server's parts are put together: access control, the REST routes and
 * the backup/reader protocol upgrade, handed to the HTTPS listener as `ServerParts`. Everything
 * else (run-server.ts, the listener, the CLI) only sees ServerParts, so wiring a new part in
 * changes this file alone.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { BurrowDirs } from '../lib/dirs.js';
import type { TaskManager } from '../tasks/index.js';
import { startAbortListener } from '../tasks/task-abort.js';
import { ensureInitialAdmin } from './access/initial-admin.js';
import { ServerAccess } from './access/server-access.js';
import { handleProtocolUpgrade } from './protocol/index.js';
import type { Route } from './rest/route.js';
import { createRestHandler, type RestHandlerOptions } from './rest/router.js';
import { accessRoutes } from './rest/routes/access.js';
import { configDatastoreRoutes } from './rest/routes/config-datastore.js';
import { datastoreRoutes } from './rest/routes/datastore.js';
import { taskRoutes } from './rest/routes/tasks.js';
import { versionRoutes } from './rest/routes/version.js';
import type { ServerDeps } from './server-types.js';

/** What the HTTPS listener dispatches to. */
export interface ServerParts {
  onRequest(req: IncomingMessage, res: ServerResponse): void | Promise<void>;
  onUpgrade(req: IncomingMessage, socket: TLSSocket, head: Buffer): void | Promise<void>;
  /** Wait for what the parts still run (backup and reader sessions cleaning up) once the
   *  listener has closed. */
  close?(): Promise<void>;
}

/** What the daemon has before the parts exist; access control is made here from `dirs`. */
export interface ServerPartsDeps {
  readonly dirs: BurrowDirs;
  readonly tasks: TaskManager;
  readonly log: Logger;
  /** Seconds since the epoch. */
  readonly now: () => number;
  /** Delays of §3.3 (tests shorten them). */
  readonly delays?: RestHandlerOptions;
}

/** Every REST route of the server, for the router and for the API documentation test. */
export function allRoutes(access: ServerAccess): Route[] {
  return [
    ...versionRoutes(),
    ...accessRoutes(access),
    ...taskRoutes(),
    ...configDatastoreRoutes(),
    ...datastoreRoutes(),
  ];
}

export async function buildServerParts(partsDeps: ServerPartsDeps): Promise<ServerParts> {
  const { dirs, tasks, log, now } = partsDeps;
  const initial = await ensureInitialAdmin(dirs);
  if (initial !== undefined) {
    log.warn(
      { passwordFile: initial.passwordFile },
      `root@pam had no password: a random one was written to ${initial.passwordFile} (change it with burrow-manager user update root@pam --password)`,
    );
  }
  const access = await ServerAccess.open(dirs, { now });
  // Stop requests for this server's tasks may come from other processes (a CLI `task stop`).
  const aborts = await startAbortListener(dirs, tasks, {
    onError: (error) => log.warn({ err: error }, 'task abort listener failed'),
  });
  const deps: ServerDeps = { dirs, access, tasks, log, now };
  const onRequest = createRestHandler(deps, allRoutes(access), partsDeps.delays);
  const sessions = new Set<Promise<void>>();
  const authFailureDelayMs = partsDeps.delays?.authFailureDelayMs;
  return {
    onRequest,
    onUpgrade(req, socket, head) {
      handleProtocolUpgrade(deps, req, socket, head, {
        ...(authFailureDelayMs === undefined ? {} : { authFailureDelayMs }),
        onSession: (ended) => {
          sessions.add(ended);
          void ended.finally(() => sessions.delete(ended));
        },
      });
    },
    async close() {
      await Promise.allSettled([...sessions]);
      aborts.close();
    },
  };
}
