/**
 * In-process REST tests: the routes under test behind createRestHandler on a plain node:http
 * server on 127.0.0.1 (TLS is the listener's business), a real TaskManager in temp dirs and a
 * small AccessControl of the test's making (TestAccess), so route tests do not depend on the
 * real access module.
 *
 * Credentials: `Authorization: Test <authid>` authenticates as a registered auth id
 * (`access.addUser('alice@pbs')`); anything else is AUTH_FAILED.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import type { Clock } from '../../src/lib/clock.js';
import type { BurrowDirs } from '../../src/lib/dirs.js';
import { BurrowError } from '../../src/lib/errors.js';
import { createRestHandler, type RestHandlerOptions } from '../../src/server/rest/router.js';
import type { Route } from '../../src/server/rest/route.js';
import {
  PRIVILEGES,
  type AccessControl,
  type Privilege,
  type RequestCredentials,
  type ServerDeps,
} from '../../src/server/server-types.js';
import { TaskManager } from '../../src/tasks/index.js';
import { formatAuthid, parseAuthid, type Authid } from '../../src/types/auth.js';

/** ACL paths as PBS compares them: `/a/b` is below `/a`. */
function isAtOrBelow(path: string, base: string): boolean {
  if (base === '/') return true;
  return path === base || path.startsWith(`${base}/`);
}

/**
 * A tiny ACL: privileges granted on a path hold on it and everything below it (propagate), the
 * most specific grant wins, root@pam has everything. Tokens are looked up by their own id only.
 */
export class TestAccess implements AccessControl {
  readonly #users = new Set<string>();
  readonly #grants = new Map<string, Map<string, ReadonlySet<Privilege>>>();
  /** Every authenticate() call, for tests that check when authentication happens. */
  readonly calls: RequestCredentials[] = [];

  addUser(authId: string): this {
    this.#users.add(formatAuthid(parseAuthid(authId)));
    return this;
  }

  grant(authId: string, path: string, privileges: readonly Privilege[]): this {
    const key = formatAuthid(parseAuthid(authId));
    let grants = this.#grants.get(key);
    if (grants === undefined)
      this.#grants.set(key, (grants = new Map<string, ReadonlySet<Privilege>>()));
    grants.set(path, new Set(privileges));
    return this;
  }

  authenticate(request: RequestCredentials): Promise<Authid> {
    this.calls.push(request);
    const header = request.headers.authorization;
    const match = header === undefined ? null : /^Test (.+)$/.exec(header);
    if (match === null) {
      return Promise.reject(
        new BurrowError('AUTH_FAILED', 'no authentication credentials provided.'),
      );
    }
    const id = match[1] as string;
    if (!this.#users.has(id)) {
      return Promise.reject(new BurrowError('AUTH_FAILED', `no such user '${id}'`));
    }
    return Promise.resolve(parseAuthid(id));
  }

  privileges(authId: Authid, path: string): Promise<ReadonlySet<Privilege>> {
    const key = formatAuthid(authId);
    if (key === 'root@pam') return Promise.resolve(new Set(PRIVILEGES));
    let best: { path: string; privileges: ReadonlySet<Privilege> } | undefined;
    for (const [base, privileges] of this.#grants.get(key) ?? []) {
      if (isAtOrBelow(path, base) && (best === undefined || base.length > best.path.length)) {
        best = { path: base, privileges };
      }
    }
    return Promise.resolve(best?.privileges ?? new Set());
  }

  async anyPrivilegeBelow(authId: Authid, path: string): Promise<boolean> {
    const key = formatAuthid(authId);
    if (key === 'root@pam') return true;
    if ((await this.privileges(authId, path)).size > 0) return true;
    for (const [base, privileges] of this.#grants.get(key) ?? []) {
      if (isAtOrBelow(base, path) && privileges.size > 0) return true;
    }
    return false;
  }
}

export interface RestHarness {
  readonly base: string;
  readonly dirs: BurrowDirs;
  readonly deps: ServerDeps;
  readonly access: TestAccess;
  readonly tasks: TaskManager;
  /** Lines the router logged (pino objects). */
  readonly logLines: Array<Record<string, unknown>>;
  request(
    method: string,
    path: string,
    options?: { auth?: string; body?: string | Uint8Array; headers?: Record<string, string> },
  ): Promise<Response>;
  close(): Promise<void>;
}

export interface RestHarnessOptions extends RestHandlerOptions {
  /** The TaskManager's node name; default `testnode`. */
  node?: string;
  access?: TestAccess;
  /** The TaskManager's clock; default the system clock. */
  clock?: Clock;
  now?: () => number;
}

/** Start the routes on 127.0.0.1 (random port) with fresh temp dirs. Call close() in afterEach. */
export async function startRestHarness(
  routes: readonly Route[] | ((deps: ServerDeps) => readonly Route[]),
  options: RestHarnessOptions = {},
): Promise<RestHarness> {
  const root = await mkdtemp(join(tmpdir(), 'burrow-rest-'));
  const dirs: BurrowDirs = {
    configDir: join(root, 'etc'),
    runDir: join(root, 'run'),
    logDir: join(root, 'log'),
  };
  const access = options.access ?? new TestAccess();
  const tasks = new TaskManager({
    dirs,
    node: options.node ?? 'testnode',
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
  const logLines: Array<Record<string, unknown>> = [];
  const log: Logger = pino(
    { level: 'debug' },
    {
      write(line: string) {
        logLines.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  const deps: ServerDeps = {
    dirs,
    access,
    tasks,
    log,
    now: options.now ?? (() => Math.floor(Date.now() / 1000)),
  };
  const list = typeof routes === 'function' ? routes(deps) : routes;
  const server: Server = createServer(createRestHandler(deps, list, options));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    dirs,
    deps,
    access,
    tasks,
    logLines,
    request(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.auth !== undefined) headers.authorization = `Test ${opts.auth}`;
      return fetch(`${base}${path}`, {
        method,
        headers,
        ...(opts.body === undefined ? {} : { body: opts.body }),
      });
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(root, { recursive: true, force: true });
    },
  };
}
