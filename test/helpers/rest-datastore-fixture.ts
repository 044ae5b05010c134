/**
 * The /admin/datastore route tests' world: a real datastore in a temp dir, a real TaskManager,
 * an AccessControl written here (callers named by an `x-test-user` header, fixed ACL entries
 * with PBS's "most specific path wins" rule) and the real REST router on a node:http server on
 * 127.0.0.1, plus a small fetch helper.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { BurrowError } from '../../src/lib/errors.js';
import { rolePrivileges } from '../../src/server/access/roles.js';
import { createRestHandler } from '../../src/server/rest/router.js';
import { datastoreRoutes } from '../../src/server/rest/routes/datastore.js';
import {
  PRIVILEGES,
  type AccessControl,
  type Privilege,
  type ServerDeps,
} from '../../src/server/server-types.js';
import { TaskManager } from '../../src/tasks/index.js';
import { formatAuthid, parseAuthid, type Authid } from '../../src/types/auth.js';
import type { BackupDir } from '../../src/types/backup.js';
import { makeStore, writeSnapshot, type ArchiveSpec, type StoreFixture } from './store-fixture.js';

export interface AclEntry {
  authId: string;
  path: string;
  privs: readonly Privilege[];
}

/**
 * The privilege sets the tests grant: PBS's datastore roles, plus single privileges narrower than
 * any role (`reader`, `verify`), so a test can show exactly which privilege a route needs.
 */
export const ROLES = {
  audit: rolePrivileges('DatastoreAudit'),
  admin: rolePrivileges('DatastoreAdmin'),
  backup: rolePrivileges('DatastoreBackup'),
  reader: ['Datastore.Read'],
  powerUser: rolePrivileges('DatastorePowerUser'),
  verify: ['Datastore.Verify'],
} as const satisfies Record<string, readonly Privilege[]>;

const within = (path: string, base: string): boolean =>
  base === '/' || path === base || path.startsWith(`${base}/`);

/**
 * Callers come from `x-test-user`; root@pam may do anything. An auth id's privileges on a path
 * are those of its most specific ACL entry at or above the path (every entry propagates).
 */
export class TestAccess implements AccessControl {
  readonly acl: AclEntry[] = [];

  allow(authId: string, path: string, privs: readonly Privilege[]): this {
    this.acl.push({ authId, path, privs });
    return this;
  }

  authenticate(request: {
    headers: Record<string, string | string[] | undefined>;
  }): Promise<Authid> {
    const user = request.headers['x-test-user'];
    if (typeof user !== 'string') {
      return Promise.reject(new BurrowError('AUTH_FAILED', 'authentication failed - no ticket'));
    }
    return Promise.resolve(parseAuthid(user));
  }

  privileges(authId: Authid, path: string): Promise<ReadonlySet<Privilege>> {
    const who = formatAuthid(authId);
    if (who === 'root@pam') return Promise.resolve(new Set(PRIVILEGES));
    let best: AclEntry | undefined;
    for (const entry of this.acl) {
      if (entry.authId !== who || !within(path, entry.path)) continue;
      if (best === undefined || entry.path.length > best.path.length) best = entry;
    }
    return Promise.resolve(new Set(best?.privs ?? []));
  }

  async anyPrivilegeBelow(authId: Authid, path: string): Promise<boolean> {
    const who = formatAuthid(authId);
    if (who === 'root@pam') return true;
    if ((await this.privileges(authId, path)).size > 0) return true;
    return this.acl.some((e) => e.authId === who && within(e.path, path) && e.privs.length > 0);
  }
}

export interface RestWorld extends StoreFixture {
  access: TestAccess;
  tasks: TaskManager;
  deps: ServerDeps;
  server: Server;
  base: string;
  close(): Promise<void>;
}

export async function startRestWorld(): Promise<RestWorld> {
  const fixture = await makeStore({ name: 'store1' });
  const access = new TestAccess();
  const tasks = new TaskManager({ dirs: fixture.dirs, node: 'testnode' });
  const deps: ServerDeps = {
    dirs: fixture.dirs,
    access,
    tasks,
    log: pino({ level: 'silent' }),
    now: () => Math.floor(Date.now() / 1000),
  };
  const server = createServer(
    createRestHandler(deps, datastoreRoutes(), { authFailureDelayMs: 0, permissionDelayMs: 0 }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    ...fixture,
    access,
    tasks,
    deps,
    server,
    base: `http://127.0.0.1:${port}/api2/json`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fixture.cleanup();
    },
  };
}

/**
 * Write a snapshot into the world's store and, with `owner`, give its group to that auth id.
 * writeSnapshot writes as root@pam, which may add to a group only while root owns it, so an
 * existing group is handed back to root first.
 */
export async function addSnapshot(
  world: RestWorld,
  dir: BackupDir,
  archives: ArchiveSpec[],
  owner?: string,
): Promise<void> {
  await world.store.setOwner(dir.group, parseAuthid('root@pam'), true).catch(() => undefined);
  await writeSnapshot(world.store, dir, archives);
  if (owner !== undefined) await world.store.setOwner(dir.group, parseAuthid(owner), true);
}

export interface ApiAnswer {
  status: number;
  headers: Headers;
  body: Buffer;
  /** The parsed JSON body (undefined when it is not JSON). */
  json: unknown;
  /** `json.data` for 200 answers. */
  data: unknown;
  text: string;
}

type Query = Record<string, string | number | boolean | undefined>;

/** Call the API as `user` (undefined: without credentials). GET/DELETE put params in the query. */
export async function api(
  world: RestWorld,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  path: string,
  user: string | undefined,
  params: Query = {},
  body?: Uint8Array,
): Promise<ApiAnswer> {
  const url = new URL(`${world.base}${path}`);
  const headers: Record<string, string> = {};
  if (user !== undefined) headers['x-test-user'] = user;
  let payload: Uint8Array | string | undefined;
  const entries = Object.entries(params).filter(
    (e): e is [string, string | number | boolean] => e[1] !== undefined,
  );
  if (body !== undefined || method === 'GET' || method === 'DELETE') {
    for (const [k, v] of entries) url.searchParams.set(k, String(v));
    if (body !== undefined) {
      payload = body;
      headers['content-type'] = 'application/octet-stream';
    }
  } else {
    payload = JSON.stringify(Object.fromEntries(entries));
    headers['content-type'] = 'application/json';
  }
  const response = await fetch(url, {
    method,
    headers,
    ...(payload === undefined ? {} : { body: payload }),
  });
  const buf = Buffer.from(await response.arrayBuffer());
  const text = buf.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  const data =
    response.status === 200 && typeof json === 'object' && json !== null && 'data' in json
      ? json.data
      : undefined;
  return { status: response.status, headers: response.headers, body: buf, json, data, text };
}

/** Wait until a task has ended; its status entry. */
export async function waitTask(world: RestWorld, upid: string, timeoutMs = 20_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const status = await world.tasks.status(upid);
    if (status.state !== 'running') return status;
    if (Date.now() > end) throw new Error(`task ${upid} still running`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
