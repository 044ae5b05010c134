import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { inflateSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { BurrowError } from '../../lib/errors.js';
import { codeOf } from '../../../test/helpers/error-code.js';
import {
  startRestHarness,
  TestAccess,
  type RestHarness,
} from '../../../test/helpers/rest-harness.js';
import type { Route } from './route.js';
import { dataReply, envelopeReply, rawReply } from './route.js';
import { compileRoutes, matchRoute, permissionDenied, substitutePath } from './router.js';

let harness: RestHarness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

const route = (over: Partial<Route> & Pick<Route, 'path' | 'handler'>): Route => ({
  method: 'GET',
  description: 'test route',
  parameters: {},
  permission: { kind: 'anybody' },
  ...over,
});

async function start(routes: Route[], options: Parameters<typeof startRestHarness>[1] = {}) {
  const access = options.access ?? new TestAccess();
  access.addUser('alice@pbs').addUser('bob@pbs').addUser('root@pam');
  harness = await startRestHarness(routes, {
    authFailureDelayMs: 0,
    permissionDelayMs: 0,
    ...options,
    access,
  });
  return harness;
}

/** A raw HTTP exchange (no automatic decompression), for headers and exact bytes. */
function rawExchange(
  base: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: Uint8Array,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    // host/port/path as options: a URL would have `..` resolved before it is sent.
    const { hostname, port } = new URL(base);
    const req = httpRequest({ hostname, port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const JSON_TYPE = 'application/json;charset=UTF-8';

describe('envelopes', () => {
  const routes = [
    route({ path: '/plain', handler: () => Promise.resolve({ a: 1 }) }),
    route({ path: '/nothing', handler: () => Promise.resolve(undefined) }),
    route({
      path: '/with-total',
      handler: () => Promise.resolve(dataReply([1, 2], { total: 7 })),
    }),
    route({
      path: '/own-envelope',
      handler: () =>
        Promise.resolve(envelopeReply({ data: [{ n: 1, t: 'x' }], total: 1, success: 1 })),
    }),
    route({
      path: '/bytes',
      handler: () =>
        Promise.resolve(rawReply('text/plain', Buffer.from('hello'), { 'x-extra': 'yes' })),
    }),
  ];

  it('json: {"data": ...} with PBS content type', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/json/plain', { auth: 'alice@pbs' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(JSON_TYPE);
    expect(await res.text()).toBe('{"data":{"a":1}}');
  });

  it('json: no result is {"data":null}', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/json/nothing', { auth: 'alice@pbs' });
    expect(await res.text()).toBe('{"data":null}');
  });

  it('json and extjs: result attributes beside data', async () => {
    const h = await start(routes);
    const json = await h.request('GET', '/api2/json/with-total', { auth: 'alice@pbs' });
    expect(await json.json()).toEqual({ data: [1, 2], total: 7 });
    const extjs = await h.request('GET', '/api2/extjs/with-total', { auth: 'alice@pbs' });
    expect(extjs.status).toBe(200);
    expect(await extjs.json()).toEqual({ data: [1, 2], total: 7, success: true, status: 200 });
  });

  it('extjs: success and status beside data', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/extjs/plain', { auth: 'alice@pbs' });
    expect(await res.json()).toEqual({ data: { a: 1 }, success: true, status: 200 });
  });

  it('an own envelope is sent as given', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/json/own-envelope', { auth: 'alice@pbs' });
    expect(res.headers.get('content-type')).toBe(JSON_TYPE);
    expect(await res.json()).toEqual({ data: [{ n: 1, t: 'x' }], total: 1, success: 1 });
  });

  it('a raw reply keeps its content type and headers', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/json/bytes', { auth: 'alice@pbs' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain');
    expect(res.headers.get('x-extra')).toBe('yes');
    expect(await res.text()).toBe('hello');
  });
});

describe('errors', () => {
  const routes = [
    route({
      path: '/missing',
      handler: () => Promise.reject(new BurrowError('NOT_FOUND', "datastore 'x' does not exist")),
    }),
    route({
      path: '/conflict',
      handler: () => Promise.reject(new BurrowError('LOCKED', 'locked by another task')),
    }),
    route({ path: '/bug', handler: () => Promise.reject(new TypeError('x is undefined')) }),
    route({
      path: '/throws-string',
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the router must survive it
      handler: () => Promise.reject('a string'),
    }),
    route({
      path: '/sync-throw',
      handler: () => {
        throw new Error('synchronous');
      },
    }),
    route({ path: '/bigint', handler: () => Promise.resolve({ n: 1n }) }),
    route({
      path: '/typed',
      parameters: { n: { type: 'integer', description: 'n', minimum: 1 } },
      handler: (ctx) => Promise.resolve(ctx.params.n),
    }),
  ];

  it('json: the status of the error code and the plain message as body', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/json/missing', { auth: 'alice@pbs' });
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toBe(JSON_TYPE);
    expect(await res.text()).toBe("datastore 'x' does not exist");
    const locked = await h.request('GET', '/api2/json/conflict', { auth: 'alice@pbs' });
    expect(locked.status).toBe(409);
    expect(await locked.text()).toBe('locked by another task');
  });

  it('extjs: 200 with success false, the status and the message', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/extjs/missing', { auth: 'alice@pbs' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(JSON_TYPE);
    expect(await res.json()).toEqual({
      success: false,
      status: 404,
      message: "datastore 'x' does not exist",
      errors: {},
    });
  });

  it('parameter errors: 400 with PBS text (json), the errors map (extjs)', async () => {
    const h = await start(routes);
    const json = await h.request('GET', '/api2/json/typed?n=0&x=1', { auth: 'alice@pbs' });
    expect(json.status).toBe(400);
    expect(await json.text()).toBe(
      "parameter verification failed:\n- 'n': value must have a minimum value of 1 (got 0)\n- 'x': schema does not allow additional properties.",
    );
    const extjs = await h.request('GET', '/api2/extjs/typed?n=0&x=1', { auth: 'alice@pbs' });
    expect(extjs.status).toBe(200);
    expect(await extjs.json()).toEqual({
      success: false,
      status: 400,
      message: 'parameter verification errors',
      errors: {
        n: 'value must have a minimum value of 1 (got 0)',
        x: 'schema does not allow additional properties.',
      },
    });
    const ok = await h.request('GET', '/api2/json/typed?n=2&_dc=12345', { auth: 'alice@pbs' });
    expect(await ok.json()).toEqual({ data: 2 });
  });

  it('a handler failing with anything but a BurrowError is a 500 and a log line, never a crash', async () => {
    const h = await start(routes);
    for (const path of ['/bug', '/throws-string', '/sync-throw', '/bigint']) {
      const res = await h.request('GET', `/api2/json${path}`, { auth: 'alice@pbs' });
      expect(res.status, path).toBe(500);
      expect((await res.text()).length, path).toBeGreaterThan(0);
    }
    const bug = await h.request('GET', '/api2/json/bug', { auth: 'alice@pbs' });
    expect(await bug.text()).toBe('x is undefined');
    expect(h.logLines.filter((l) => l.level === 50).length).toBeGreaterThanOrEqual(4);
    // still serving
    const res = await h.request('GET', '/api2/json/typed?n=3', { auth: 'alice@pbs' });
    expect(await res.json()).toEqual({ data: 3 });
  });
});

describe('paths', () => {
  const routes = [
    route({ path: '/version', handler: () => Promise.resolve('v') }),
    route({
      path: '/nodes/{node}/tasks/{upid}/status',
      parameters: {
        node: { type: 'string', description: 'node' },
        upid: { type: 'string', description: 'upid' },
      },
      handler: (ctx) => Promise.resolve(ctx.params),
    }),
    route({
      path: '/nodes/localhost/special/status',
      handler: () => Promise.resolve('static'),
    }),
    route({
      path: '/nodes/{node}/special/other',
      parameters: { node: { type: 'string', description: 'node' } },
      handler: () => Promise.resolve('param'),
    }),
    route({ method: 'POST', path: '/version', handler: () => Promise.resolve('posted') }),
  ];

  it('binds {param} segments, percent-decoded', async () => {
    const h = await start(routes);
    const upid =
      'UPID:pbs:000004D2:00ABCDEF:00000001:6790A1B2:backup:store1\\x3ahost-myhost:root@pam:';
    const res = await h.request(
      'GET',
      `/api2/json/nodes/localhost/tasks/${encodeURIComponent(upid)}/status`,
      { auth: 'alice@pbs' },
    );
    expect(await res.json()).toEqual({ data: { node: 'localhost', upid } });
  });

  it('prefers static segments, and falls back to a parameter when the static branch fails', async () => {
    const h = await start(routes);
    const staticRes = await h.request('GET', '/api2/json/nodes/localhost/special/status', {
      auth: 'alice@pbs',
    });
    expect(await staticRes.json()).toEqual({ data: 'static' });
    const paramRes = await h.request('GET', '/api2/json/nodes/localhost/special/other', {
      auth: 'alice@pbs',
    });
    expect(await paramRes.json()).toEqual({ data: 'param' });
  });

  it('collapses repeated slashes like PBS', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '//api2//json/version/', { auth: 'alice@pbs' });
    expect(await res.json()).toEqual({ data: 'v' });
  });

  it('404 Path not found for unknown paths and wrong methods (as PBS)', async () => {
    const h = await start(routes);
    const unknown = await h.request('GET', '/api2/json/nope/x?a=1', { auth: 'alice@pbs' });
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toBe("Path '/api2/json/nope/x' not found.");
    const wrongMethod = await h.request('DELETE', '/api2/json/version', { auth: 'alice@pbs' });
    expect(wrongMethod.status).toBe(404);
    expect(await wrongMethod.text()).toBe("Path '/api2/json/version' not found.");
    const extjs = await h.request('GET', '/api2/extjs/nope', { auth: 'alice@pbs' });
    expect(extjs.status).toBe(200);
    expect(await extjs.json()).toEqual({
      success: false,
      status: 404,
      message: "Path '/api2/extjs/nope' not found.",
      errors: {},
    });
    const outside = await h.request('GET', '/index.html');
    expect(outside.status).toBe(404);
  });

  it('authenticates before saying a path does not exist (as PBS)', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/json/nope');
    expect(res.status).toBe(401);
  });

  it('400 for another output format and for . or .. components', async () => {
    const h = await start(routes);
    const format = await h.request('GET', '/api2/xml/version', { auth: 'alice@pbs' });
    expect(format.status).toBe(400);
    expect(await format.text()).toBe("Unsupported output format 'xml'.");
    const dots = await rawExchange(h.base, 'GET', '/api2/json/../json/version', {
      authorization: 'Test alice@pbs',
    });
    expect(dots.status).toBe(400);
  });

  it('414 when path and query exceed 3072 bytes', async () => {
    const h = await start(routes);
    const path = '/api2/json/version';
    const fits = `${path}?_dc=${'1'.repeat(3072 - path.length - 4)}`;
    expect(fits.length - 1).toBe(3072);
    const ok = await h.request('GET', fits, { auth: 'alice@pbs' });
    expect(ok.status).toBe(200);
    const tooLong = await h.request('GET', `${fits}1`, { auth: 'alice@pbs' });
    expect(tooLong.status).toBe(414);
    expect(await tooLong.text()).toBe('');
  });

  it('refuses route tables with duplicates or undeclared path parameters', () => {
    const r = route({ path: '/a', handler: () => Promise.resolve(1) });
    expect(codeOf(() => compileRoutes([r, r]))).toBe('INVALID_ARGUMENT');
    expect(
      codeOf(() => compileRoutes([route({ path: '/a/{x}', handler: () => Promise.resolve(1) })])),
    ).toBe('INVALID_ARGUMENT');
  });

  it('matchRoute: undecodable segments match nothing', () => {
    const table = compileRoutes(routes);
    expect(matchRoute(table, 'GET', ['nodes', '%E0%A4%A', 'tasks', 'x', 'status'])).toBeUndefined();
    expect(matchRoute(table, 'GET', ['version'])?.route.path).toBe('/version');
    expect(matchRoute(table, 'HEAD', ['version'])).toBeUndefined();
  });
});

describe('parameters and bodies', () => {
  const echo = (over: Partial<Route>) =>
    route({
      method: 'POST',
      path: '/echo',
      parameters: {
        text: { type: 'string', description: 'text', optional: true },
        n: { type: 'integer', description: 'n', optional: true },
      },
      handler: (ctx) => Promise.resolve(ctx.params),
      ...over,
    });
  const upload = route({
    method: 'POST',
    path: '/upload',
    raw: 'upload',
    parameters: { name: { type: 'string', description: 'name' } },
    handler: async (ctx) => {
      let length = 0;
      for await (const chunk of ctx.request as AsyncIterable<Buffer>) length += chunk.length;
      return { name: ctx.params.name, length };
    },
  });

  it('POST: JSON body (query ignored) and form body plus query', async () => {
    const h = await start([echo({})]);
    const json = await h.request('POST', '/api2/json/echo?n=1', {
      auth: 'alice@pbs',
      headers: { 'content-type': 'application/json' },
      body: '{"text":"a b","n":2}',
    });
    expect(await json.json()).toEqual({ data: { text: 'a b', n: 2 } });
    const form = await h.request('POST', '/api2/json/echo?n=1', {
      auth: 'alice@pbs',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'text=a+b',
    });
    expect(await form.json()).toEqual({ data: { text: 'a b', n: 1 } });
  });

  it('400 unsupported content type', async () => {
    const h = await start([echo({})]);
    const res = await h.request('POST', '/api2/json/echo', {
      auth: 'alice@pbs',
      headers: { 'content-type': 'text/plain' },
      body: 'x',
    });
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/^unsupported content type/);
  });

  it('body limit 512 KiB: at the limit accepted, above refused with 400', async () => {
    const h = await start([echo({})]);
    const frame = '{"text":""}'.length;
    const atLimit = JSON.stringify({ text: 'a'.repeat(512 * 1024 - frame) });
    expect(atLimit.length).toBe(512 * 1024);
    const ok = await h.request('POST', '/api2/json/echo', {
      auth: 'alice@pbs',
      headers: { 'content-type': 'application/json' },
      body: atLimit,
    });
    expect(ok.status).toBe(200);
    const over = await h.request('POST', '/api2/json/echo', {
      auth: 'alice@pbs',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'a'.repeat(512 * 1024 - frame + 1) }),
    });
    expect(over.status).toBe(400);
    expect(await over.text()).toBe('Request body too large');
  });

  it('body limit also holds for chunked bodies without Content-Length', async () => {
    const h = await start([echo({})]);
    const res = await rawExchange(
      h.base,
      'POST',
      '/api2/json/echo',
      {
        authorization: 'Test alice@pbs',
        'content-type': 'application/json',
        'transfer-encoding': 'chunked',
      },
      Buffer.alloc(600 * 1024, 0x20),
    );
    expect(res.status).toBe(400);
    expect(res.body.toString()).toBe('Request body too large');
  });

  it('survives clients that vanish in the middle of a body', async () => {
    const h = await start([upload, echo({})]);
    const { hostname, port } = new URL(h.base);
    for (const path of ['/api2/json/upload?name=x', '/api2/json/echo']) {
      await new Promise<void>((resolve) => {
        const req = httpRequest({
          hostname,
          port,
          path,
          method: 'POST',
          headers: {
            authorization: 'Test alice@pbs',
            'content-type': 'application/json',
            'content-length': '100000',
          },
        });
        req.on('error', () => resolve());
        req.write('{"text":"');
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 50);
      });
    }
    await new Promise((r) => setTimeout(r, 50));
    const res = await h.request('POST', '/api2/json/echo', {
      auth: 'alice@pbs',
      headers: { 'content-type': 'application/json' },
      body: '{"n":1}',
    });
    expect(await res.json()).toEqual({ data: { n: 1 } });
  });

  it('raw upload routes take the query only and stream an unlimited body', async () => {
    const h = await start([upload]);
    const body = Buffer.alloc(700 * 1024, 7);
    const res = await h.request('POST', '/api2/json/upload?name=x', {
      auth: 'alice@pbs',
      headers: { 'content-type': 'application/octet-stream' },
      body,
    });
    expect(await res.json()).toEqual({ data: { name: 'x', length: body.length } });
  });
});

describe('authentication and permissions', () => {
  const routes = [
    route({
      path: '/ping',
      permission: { kind: 'world' },
      handler: (ctx) =>
        Promise.resolve({
          who: ctx.authId === undefined ? null : `${ctx.authId.name}@${ctx.authId.realm}`,
        }),
    }),
    route({ path: '/anybody', handler: () => Promise.resolve('ok') }),
    route({
      path: '/audit',
      permission: { kind: 'privileges', path: '/system/tasks', privileges: ['Sys.Audit'] },
      handler: () => Promise.resolve('ok'),
    }),
    route({
      path: '/both',
      permission: {
        kind: 'privileges',
        path: '/system',
        privileges: ['Sys.Audit', 'Sys.Modify'],
      },
      handler: () => Promise.resolve('ok'),
    }),
    route({
      path: '/either',
      permission: {
        kind: 'privileges',
        path: '/system',
        privileges: ['Sys.Audit', 'Sys.Modify'],
        any: true,
      },
      handler: () => Promise.resolve('ok'),
    }),
    // The ACL path takes {store} from the path, or from the query when the path has none.
    ...['/store/{store}', '/by-query'].map((path) =>
      route({
        path,
        parameters: { store: { type: 'string', description: 'store' } },
        permission: {
          kind: 'privileges',
          path: '/datastore/{store}',
          privileges: ['Datastore.Audit'],
        },
        handler: () => Promise.resolve('ok'),
      }),
    ),
    route({
      path: '/list',
      permission: {
        kind: 'privileges',
        path: '/datastore',
        privileges: ['Datastore.Audit'],
        partial: true,
      },
      handler: () => Promise.resolve('ok'),
    }),
    route({
      path: '/own-check',
      permission: { kind: 'handler', why: 'test' },
      handler: async (ctx) => {
        await ctx.requirePrivileges('/datastore/a', ['Datastore.Read', 'Datastore.Backup'], {
          any: true,
        });
        return [...(await ctx.privileges('/datastore/a'))];
      },
    }),
    route({
      path: '/custom-denial',
      handler: () => Promise.reject(permissionDenied('Datastore.Read on /x needed')),
    }),
  ];

  it('world routes need no credentials; valid ones still identify the caller', async () => {
    const h = await start(routes);
    expect(await (await h.request('GET', '/api2/json/ping')).json()).toEqual({
      data: { who: null },
    });
    expect(h.access.calls.length).toBe(0);
    expect(await (await h.request('GET', '/api2/json/ping', { auth: 'alice@pbs' })).json()).toEqual(
      { data: { who: 'alice@pbs' } },
    );
    // bad credentials on a world route: anonymous, not refused
    const bad = await h.request('GET', '/api2/json/ping', { auth: 'mallory@pbs' });
    expect(bad.status).toBe(200);
    expect(await bad.json()).toEqual({ data: { who: null } });
  });

  it('401 authentication failed, plain text even for extjs, expiring the ticket cookie', async () => {
    const h = await start(routes);
    for (const path of ['/api2/json/anybody', '/api2/extjs/anybody']) {
      const res = await h.request('GET', path);
      expect(res.status).toBe(401);
      expect(res.headers.get('content-type')).toBe(JSON_TYPE);
      expect(await res.text()).toBe(
        'authentication failed - no authentication credentials provided.',
      );
      expect(res.headers.get('set-cookie')).toMatch(
        /^__Host-PBSAuthCookie=; Expires=Thu, 01 Jan 1970/,
      );
    }
    expect(h.access.calls.map((c) => c.method)).toEqual(['GET', 'GET']);
  });

  it('the 401 is sent authFailureDelayMs after the request started, not after authentication', async () => {
    const access = new TestAccess();
    const slow = access.authenticate.bind(access);
    access.authenticate = async (request) => {
      await new Promise((r) => setTimeout(r, 300));
      return slow(request);
    };
    const h = await start(routes, { access, authFailureDelayMs: 600 });
    const t0 = performance.now();
    const res = await h.request('GET', '/api2/json/anybody', { auth: 'mallory@pbs' });
    const elapsed = performance.now() - t0;
    expect(res.status).toBe(401);
    expect(await res.text()).toBe("authentication failed - no such user 'mallory@pbs'");
    expect(elapsed).toBeGreaterThanOrEqual(595);
    // 300 ms of authentication are part of the 600 ms, not added to them (that would be 900)
    expect(elapsed).toBeLessThan(880);
  });

  it('403 permission check failed, delayed by permissionDelayMs', async () => {
    const h = await start(routes, { permissionDelayMs: 250 });
    const t0 = performance.now();
    const res = await h.request('GET', '/api2/json/audit', { auth: 'alice@pbs' });
    const elapsed = performance.now() - t0;
    expect(res.status).toBe(403);
    expect(await res.text()).toBe('permission check failed');
    expect(elapsed).toBeGreaterThanOrEqual(245);
    const extjs = await h.request('GET', '/api2/extjs/audit', { auth: 'alice@pbs' });
    expect(await extjs.json()).toEqual({
      success: false,
      status: 403,
      message: 'permission check failed',
      errors: {},
    });
  });

  it('a handler denial keeps its own message and gets the same delay', async () => {
    const h = await start(routes, { permissionDelayMs: 150 });
    const t0 = performance.now();
    const res = await h.request('GET', '/api2/json/custom-denial', { auth: 'alice@pbs' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(145);
    expect(res.status).toBe(403);
    expect(await res.text()).toBe('Datastore.Read on /x needed');
  });

  it('privileges: all of them, or any with `any`; inherited from parent paths', async () => {
    const h = await start(routes);
    h.access.grant('alice@pbs', '/system', ['Sys.Audit']);
    h.access.grant('bob@pbs', '/', ['Sys.Audit', 'Sys.Modify']);
    expect((await h.request('GET', '/api2/json/audit', { auth: 'alice@pbs' })).status).toBe(200);
    expect((await h.request('GET', '/api2/json/both', { auth: 'alice@pbs' })).status).toBe(403);
    expect((await h.request('GET', '/api2/json/either', { auth: 'alice@pbs' })).status).toBe(200);
    expect((await h.request('GET', '/api2/json/both', { auth: 'bob@pbs' })).status).toBe(200);
    expect((await h.request('GET', '/api2/json/both', { auth: 'root@pam' })).status).toBe(200);
  });

  it('permission paths take path parameters, and query parameters after parsing', async () => {
    const h = await start(routes);
    h.access.grant('alice@pbs', '/datastore/a', ['Datastore.Audit']);
    expect((await h.request('GET', '/api2/json/store/a', { auth: 'alice@pbs' })).status).toBe(200);
    expect((await h.request('GET', '/api2/json/store/b', { auth: 'alice@pbs' })).status).toBe(403);
    expect(
      (await h.request('GET', '/api2/json/by-query?store=a', { auth: 'alice@pbs' })).status,
    ).toBe(200);
    expect(
      (await h.request('GET', '/api2/json/by-query?store=b', { auth: 'alice@pbs' })).status,
    ).toBe(403);
    // without the parameter, the parameter error comes first
    expect((await h.request('GET', '/api2/json/by-query', { auth: 'alice@pbs' })).status).toBe(400);
  });

  it('the permission check comes before parameter errors when it needs path parameters only', async () => {
    const h = await start(routes);
    const res = await h.request('GET', '/api2/json/store/b?bogus=1', { auth: 'alice@pbs' });
    expect(res.status).toBe(403);
  });

  it('partial: any privilege below the path suffices', async () => {
    const h = await start(routes);
    h.access.grant('alice@pbs', '/datastore/a', ['Datastore.Backup']);
    expect((await h.request('GET', '/api2/json/list', { auth: 'alice@pbs' })).status).toBe(200);
    expect((await h.request('GET', '/api2/json/list', { auth: 'bob@pbs' })).status).toBe(403);
  });

  it('handler permissions: ctx.requirePrivileges and ctx.privileges', async () => {
    const h = await start(routes);
    h.access.grant('alice@pbs', '/datastore', ['Datastore.Backup']);
    const ok = await h.request('GET', '/api2/json/own-check', { auth: 'alice@pbs' });
    expect(await ok.json()).toEqual({ data: ['Datastore.Backup'] });
    const denied = await h.request('GET', '/api2/json/own-check', { auth: 'bob@pbs' });
    expect(denied.status).toBe(403);
    expect(await denied.text()).toBe('permission check failed');
  });
});

describe('deflate and streaming', () => {
  const big = Buffer.from(JSON.stringify(Array.from({ length: 2000 }, (_, i) => ({ i }))));
  const CHUNK = 64 * 1024;
  const TOTAL_CHUNKS = 1024; // 64 MiB if read to the end
  let produced = 0;
  const routes = [
    route({ path: '/json', handler: () => Promise.resolve(JSON.parse(big.toString()) as unknown) }),
    route({
      path: '/stream',
      handler: () => {
        produced = 0;
        let i = 0;
        const source = new Readable({
          read() {
            if (i === TOTAL_CHUNKS) {
              this.push(null);
              return;
            }
            produced += CHUNK;
            this.push(Buffer.alloc(CHUNK, i++ % 256));
          },
        });
        return Promise.resolve(rawReply('application/octet-stream', source));
      },
    }),
    route({
      path: '/small-stream',
      handler: () =>
        Promise.resolve(
          rawReply(
            'application/octet-stream',
            Readable.from([Buffer.from('ab'), Buffer.from('cd')]),
          ),
        ),
    }),
    route({
      path: '/broken-stream',
      handler: () => {
        const source = new Readable({
          read() {
            this.destroy(new Error('disk gone'));
          },
        });
        return Promise.resolve(rawReply('application/octet-stream', source));
      },
    }),
    route({
      path: '/fail',
      handler: () => Promise.reject(new BurrowError('NOT_FOUND', 'no such thing')),
    }),
  ];

  it('deflates JSON answers when the client accepts deflate', async () => {
    const h = await start(routes);
    const res = await rawExchange(h.base, 'GET', '/api2/json/json', {
      authorization: 'Test alice@pbs',
      'accept-encoding': 'gzip, deflate',
    });
    expect(res.headers['content-encoding']).toBe('deflate');
    expect(res.body.length).toBeLessThan(big.length);
    expect(inflateSync(res.body).toString()).toBe(`{"data":${big.toString()}}`);
    const plain = await rawExchange(h.base, 'GET', '/api2/json/json', {
      authorization: 'Test alice@pbs',
      'accept-encoding': 'gzip',
    });
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.body.toString()).toBe(`{"data":${big.toString()}}`);
  });

  it('deflates handler errors and raw streams too', async () => {
    const h = await start(routes);
    const headers = { authorization: 'Test alice@pbs', 'accept-encoding': 'deflate' };
    const err = await rawExchange(h.base, 'GET', '/api2/json/fail', headers);
    expect(err.status).toBe(404);
    expect(inflateSync(err.body).toString()).toBe('no such thing');
    const stream = await rawExchange(h.base, 'GET', '/api2/json/small-stream', headers);
    expect(stream.headers['content-encoding']).toBe('deflate');
    expect(inflateSync(stream.body).toString()).toBe('abcd');
  });

  it('streams raw replies with backpressure', async () => {
    const h = await start(routes);
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest(
        `${h.base}/api2/json/stream`,
        { headers: { authorization: 'Test alice@pbs' } },
        resolve,
      );
      req.on('error', reject);
      req.end();
    });
    res.pause();
    // The client reads nothing for a while: the source must stop far short of the end.
    await new Promise((r) => setTimeout(r, 300));
    expect(produced).toBeGreaterThan(0);
    expect(produced).toBeLessThan(CHUNK * TOTAL_CHUNKS * 0.5);
    let received = 0;
    for await (const chunk of res as AsyncIterable<Buffer>) received += chunk.length;
    expect(received).toBe(CHUNK * TOTAL_CHUNKS);
  });

  it('a stream that fails after the headers cuts the connection', async () => {
    const h = await start(routes);
    await expect(
      rawExchange(h.base, 'GET', '/api2/json/broken-stream', { authorization: 'Test alice@pbs' }),
    ).rejects.toThrow();
    // the server is fine
    const res = await h.request('GET', '/api2/json/small-stream', { auth: 'alice@pbs' });
    expect(await res.text()).toBe('abcd');
  });
});

describe('substitutePath', () => {
  it('fills placeholders from scalar values', () => {
    expect(substitutePath('/datastore/{store}/{ns}', { store: 's1', ns: 'a/b' })).toBe(
      '/datastore/s1/a/b',
    );
    expect(substitutePath('/x/{n}/{b}', { n: 3, b: true })).toBe('/x/3/true');
    expect(substitutePath('/system/tasks', {})).toBe('/system/tasks');
  });

  it('refuses missing or non-scalar values', () => {
    expect(codeOf(() => substitutePath('/datastore/{store}', {}))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => substitutePath('/datastore/{store}', { store: ['a'] }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(codeOf(() => substitutePath('/datastore/{toString}', {}))).toBe('INVALID_ARGUMENT');
  });
});
