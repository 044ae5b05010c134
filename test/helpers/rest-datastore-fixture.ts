/**
 * The /admin/datastore route tests' world: a real datastore in a temp dir, a real TaskManager,
 * an AccessControl written here (callers named by an `x-test-user` header, fixed ACL entries
 * with PBS's "most specific path wins" rule) and the real REST router on a node:http server on
 * 127.0.0.1, plus a small fetch helper.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inflateRawSync } from 'node:zlib';
import { pino } from 'pino';
import { BurrowError } from '../../src/lib/errors.js';
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
import { makeStore, type StoreFixture } from './store-fixture.js';

export interface AclEntry {
  authId: string;
  path: string;
  privs: readonly Privilege[];
}

/** PBS's roles, as far as the tests need them. */
export const ROLES = {
  audit: ['Datastore.Audit'],
  admin: [
    'Datastore.Audit',
    'Datastore.Modify',
    'Datastore.Read',
    'Datastore.Verify',
    'Datastore.Backup',
    'Datastore.Prune',
  ],
  backup: ['Datastore.Backup'],
  reader: ['Datastore.Read'],
  powerUser: ['Datastore.Backup', 'Datastore.Prune'],
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

// ---------------------------------------------------------------------------------------------
// Archive readers for the download tests, written from APPNOTE and POSIX (not from our writers).

export interface ZipMember {
  name: string;
  method: number;
  crc: number;
  compressed: number;
  uncompressed: number;
  externalAttrs: number;
  offset: number;
  data: Buffer;
}

/** Members of a ZIP file (no ZIP64): end record, central directory, local headers, inflate. */
export function readZip(zip: Buffer): ZipMember[] {
  const eocd = zip.length - 22;
  if (zip.readUInt32LE(eocd) !== 0x06054b50) throw new Error('no end of central directory');
  const count = zip.readUInt16LE(eocd + 10);
  const cdOffset = zip.readUInt32LE(eocd + 16);
  const members: ZipMember[] = [];
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error(`bad central header at ${p}`);
    const method = zip.readUInt16LE(p + 10);
    const crc = zip.readUInt32LE(p + 16);
    const compressed = zip.readUInt32LE(p + 20);
    const uncompressed = zip.readUInt32LE(p + 24);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const externalAttrs = zip.readUInt32LE(p + 38);
    const offset = zip.readUInt32LE(p + 42);
    const name = zip.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    p += 46 + nameLen + extraLen + commentLen;
    if (zip.readUInt32LE(offset) !== 0x04034b50) throw new Error(`bad local header at ${offset}`);
    const start = offset + 30 + zip.readUInt16LE(offset + 26) + zip.readUInt16LE(offset + 28);
    const raw = zip.subarray(start, start + compressed);
    const data = method === 8 ? inflateRawSync(raw) : Buffer.from(raw);
    members.push({ name, method, crc, compressed, uncompressed, externalAttrs, offset, data });
  }
  return members;
}

export interface TarMember {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkName: string;
  data: Buffer;
}

const cstr = (b: Buffer): string => {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
};
const octal = (b: Buffer): number => parseInt(cstr(b).trim() || '0', 8);

/** Members of a ustar archive with pax headers (`path`, `linkpath`, `size`, `mtime`, ids). */
export function readTar(tar: Buffer): TarMember[] {
  const out: TarMember[] = [];
  let pax: Record<string, string> = {};
  let p = 0;
  while (p + 512 <= tar.length) {
    const h = tar.subarray(p, p + 512);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : (h[i] as number);
    if (octal(h.subarray(148, 156)) !== sum) throw new Error(`bad tar checksum at ${p}`);
    const type = String.fromCharCode(h[156] as number);
    const headerSize = octal(h.subarray(124, 136));
    const prefix = cstr(h.subarray(345, 500));
    const name = (prefix === '' ? '' : `${prefix}/`) + cstr(h.subarray(0, 100));
    const dataStart = p + 512;
    if (type === 'x') {
      const body = tar.subarray(dataStart, dataStart + headerSize).toString('utf8');
      pax = {};
      for (let at = 0; at < body.length;) {
        const space = body.indexOf(' ', at);
        const len = Number(body.slice(at, space));
        const record = body.slice(space + 1, at + len - 1);
        const eq = record.indexOf('=');
        pax[record.slice(0, eq)] = record.slice(eq + 1);
        at += len;
      }
      p = dataStart + Math.ceil(headerSize / 512) * 512;
      continue;
    }
    const num = (key: string, value: number): number =>
      pax[key] !== undefined ? Number(pax[key]) : value;
    const size = num('size', headerSize);
    out.push({
      name: pax['path'] ?? name,
      type,
      mode: octal(h.subarray(100, 108)),
      uid: num('uid', octal(h.subarray(108, 116))),
      gid: num('gid', octal(h.subarray(116, 124))),
      mtime: num('mtime', octal(h.subarray(136, 148))),
      linkName: pax['linkpath'] ?? cstr(h.subarray(157, 257)),
      data: Buffer.from(tar.subarray(dataStart, dataStart + size)),
    });
    pax = {};
    p = dataStart + Math.ceil(size / 512) * 512;
  }
  return out;
}
