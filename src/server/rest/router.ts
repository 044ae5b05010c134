/**
 * The REST request pipeline for `/api2/json/...` and `/api2/extjs/...` (pbs-protocol §3.3, §4),
 * in PBS's order: path limits, route lookup, authentication (401 after a delay counted from the
 * request start), the route's permission (403 after a delay), parameters (§4.1), the handler,
 * and the envelope (§4.2), optionally deflated.
 *
 * API for the other parts of the server:
 *
 * - `createRestHandler(deps, routes, options?)` → `(req, res) => void`, for the HTTPS server's
 *   `'request'` event (not upgrades). It never throws and never rejects: every failure becomes a
 *   response, a non-BurrowError from a handler a 500 and a log line.
 *   Options: `authFailureDelayMs` (default 3000, counted from the request start),
 *   `permissionDelayMs` (default 500).
 * - `substitutePath('/datastore/{store}', params)` → `/datastore/store1`: fills `{name}`
 *   placeholders (ACL paths, UPID-bearing paths); throws INVALID_ARGUMENT for a missing one.
 * - `permissionDenied(message?)`: the PERMISSION_DENIED error PBS answers 403 with
 *   (`permission check failed`); handlers throw it after their own checks.
 * - `compileRoutes(routes)` / `matchRoute(table, method, components)`: the lookup the handler uses
 *   (exported for the protocol module and tests).
 * - Constants: `MAX_URI_QUERY_LENGTH` (3072), `MAX_REQUEST_BODY_BYTES` (512 KiB),
 *   `JSON_CONTENT_TYPE`.
 *
 * Route rules (route.ts holds the types):
 * - A route's `path` is relative to `/api2/json`; `{name}` segments match one path segment
 *   (percent-decoded) and must be declared in `parameters`. Static segments win over `{name}`.
 * - A path that exists with another method answers 404 `Path '…' not found.`, as PBS does.
 * - `world` routes need no credentials (when credentials are sent and valid, `authId` is set);
 *   every other route authenticates first, even for unknown paths (PBS does too).
 * - A `privileges` permission is checked before the parameters are read when its path uses only
 *   path parameters (PBS's order), otherwise right after.
 * - Raw `upload` routes get the request body unread and unlimited; all others have it read into
 *   the parameters, at most 512 KiB.
 * - A handler returns the `data` value, or rawReply / envelopeReply / dataReply (route.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDeflate, deflate } from 'node:zlib';
import { promisify } from 'node:util';
import { BurrowError, isBurrowError } from '../../lib/errors.js';
import type { Authid } from '../../types/auth.js';
import type { Privilege, ServerDeps } from '../server-types.js';
import { parameterErrorsOf, readParameters } from './parameters.js';
import type {
  DataReply,
  EnvelopeReply,
  HttpMethod,
  Permission,
  RawReply,
  Route,
  RouteContext,
} from './route.js';

const deflateAsync = promisify(deflate);

/** PBS refuses requests whose path plus query string are longer (414). */
export const MAX_URI_QUERY_LENGTH = 3072;
/** PBS's limit for a request body that holds parameters. */
export const MAX_REQUEST_BODY_BYTES = 512 * 1024;
/** The content type of every JSON answer, errors included (PBS's exact spelling). */
export const JSON_CONTENT_TYPE = 'application/json;charset=UTF-8';

const DEFAULT_AUTH_FAILURE_DELAY_MS = 3000;
const DEFAULT_PERMISSION_DELAY_MS = 500;
const PERMISSION_MESSAGE = 'permission check failed';
/** [4.x] A failed authentication also expires the HttpOnly ticket cookie. */
const EXPIRE_AUTH_COOKIE =
  '__Host-PBSAuthCookie=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; SameSite=Lax; HttpOnly; Path=/;';

export interface RestHandlerOptions {
  /** 401 answers are sent this long after the request started (PBS: 3 s). */
  authFailureDelayMs?: number;
  /** 403 answers are delayed this long (PBS: 0.5 s). */
  permissionDelayMs?: number;
}

// ---------------------------------------------------------------------------------------------
// helpers for route files

/** The PERMISSION_DENIED error with PBS's text. */
export function permissionDenied(message: string = PERMISSION_MESSAGE): BurrowError {
  return new BurrowError('PERMISSION_DENIED', message);
}

const PLACEHOLDER_RE = /\{([^{}]+)\}/g;

/** The `{name}` placeholders of a path. */
function placeholders(path: string): string[] {
  return [...path.matchAll(PLACEHOLDER_RE)].map((m) => m[1] as string);
}

function substituteOrUndefined(
  path: string,
  params: Readonly<Record<string, unknown>>,
): string | undefined {
  let missing = false;
  const result = path.replace(PLACEHOLDER_RE, (_, name: string) => {
    const value = Object.hasOwn(params, name) ? params[name] : undefined;
    if (typeof value === 'string') return value;
    if (typeof value === 'number' || typeof value === 'boolean') return String(value);
    missing = true;
    return '';
  });
  return missing ? undefined : result;
}

/** Fill `{name}` placeholders from `params`; a missing one is INVALID_ARGUMENT. */
export function substitutePath(path: string, params: Readonly<Record<string, unknown>>): string {
  const result = substituteOrUndefined(path, params);
  if (result === undefined) {
    const missing = placeholders(path).filter((name) => !Object.hasOwn(params, name));
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `cannot fill in ${path}: missing ${missing.join(', ') || 'a scalar value'}`,
      { details: { path, missing } },
    );
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// route table

interface RouteNode {
  readonly statics: Map<string, RouteNode>;
  readonly params: Array<{ name: string; node: RouteNode }>;
  readonly methods: Map<HttpMethod, Route>;
}

export interface RouteTable {
  readonly root: RouteNode;
}

export interface RouteMatch {
  readonly route: Route;
  /** Path parameters, percent-decoded. */
  readonly pathParams: Record<string, string>;
}

const newNode = (): RouteNode => ({ statics: new Map(), params: [], methods: new Map() });

const splitPath = (path: string): string[] => path.split('/').filter((c) => c !== '');

/**
 * Build the lookup tree. A duplicate method + path, or a `{name}` segment the route's parameters
 * do not declare, is a programming error found at startup (INVALID_ARGUMENT).
 */
export function compileRoutes(routes: readonly Route[]): RouteTable {
  const root = newNode();
  for (const route of routes) {
    let node = root;
    for (const segment of splitPath(route.path)) {
      const param = /^\{([^{}]+)\}$/.exec(segment)?.[1];
      if (param === undefined) {
        let next = node.statics.get(segment);
        if (next === undefined) node.statics.set(segment, (next = newNode()));
        node = next;
        continue;
      }
      if (!Object.hasOwn(route.parameters, param)) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `route ${route.method} ${route.path}: path parameter '${param}' is not in its parameters`,
          { details: { path: route.path, param } },
        );
      }
      let entry = node.params.find((p) => p.name === param);
      if (entry === undefined) node.params.push((entry = { name: param, node: newNode() }));
      node = entry.node;
    }
    if (node.methods.has(route.method)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `route ${route.method} ${route.path} is defined twice`,
        { details: { path: route.path, method: route.method } },
      );
    }
    node.methods.set(route.method, route);
  }
  return { root };
}

function decodeSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

/**
 * The route for `method` and the path components after `/api2/<format>` (still
 * percent-encoded), or undefined. Static segments are tried before parameters.
 */
export function matchRoute(
  table: RouteTable,
  method: string,
  components: readonly string[],
): RouteMatch | undefined {
  const decoded: string[] = [];
  for (const c of components) {
    const d = decodeSegment(c);
    if (d === undefined) return undefined;
    decoded.push(d);
  }
  const walk = (
    node: RouteNode,
    i: number,
    params: Record<string, string>,
  ): RouteMatch | undefined => {
    if (i === decoded.length) {
      const route = node.methods.get(method as HttpMethod);
      return route === undefined ? undefined : { route, pathParams: params };
    }
    const segment = decoded[i] as string;
    const next = node.statics.get(segment);
    if (next !== undefined) {
      const found = walk(next, i + 1, params);
      if (found !== undefined) return found;
    }
    for (const { name, node: child } of node.params) {
      const found = walk(child, i + 1, { ...params, [name]: segment });
      if (found !== undefined) return found;
    }
    return undefined;
  };
  return walk(table.root, 0, {});
}

// ---------------------------------------------------------------------------------------------
// responses

type Format = 'json' | 'extjs';

interface Pending {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly start: number;
}

const sleep = (ms: number): Promise<void> =>
  ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();

function wantsDeflate(req: IncomingMessage): boolean {
  const header = req.headers['accept-encoding'];
  if (header === undefined) return false;
  for (const token of header.split(/[, ]+/)) {
    const [name, ...params] = token.split(';').map((s) => s.trim());
    if (name?.toLowerCase() !== 'deflate') continue;
    const q = params.find((p) => p.toLowerCase().startsWith('q='));
    if (q !== undefined && Number(q.slice(2)) === 0) continue;
    return true;
  }
  return false;
}

/** Headers for an answer; a request body left unread means the connection cannot be reused. */
function baseHeaders(req: IncomingMessage): Record<string, string> {
  return req.complete ? {} : { connection: 'close' };
}

async function sendBuffer(
  { req, res }: Pending,
  status: number,
  contentType: string | undefined,
  body: Uint8Array,
  options: { compress?: boolean; headers?: Readonly<Record<string, string>> } = {},
): Promise<void> {
  if (res.headersSent || res.destroyed) return;
  let payload = body;
  const headers: Record<string, string> = { ...baseHeaders(req), ...options.headers };
  if (contentType !== undefined) headers['content-type'] = contentType;
  if (options.compress === true && body.length > 0) {
    payload = await deflateAsync(body);
    headers['content-encoding'] = 'deflate';
  }
  headers['content-length'] = String(payload.length);
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, headers);
  res.end(payload);
}

function sendText(p: Pending, status: number, text: string, extra?: Record<string, string>) {
  return sendBuffer(p, status, JSON_CONTENT_TYPE, Buffer.from(text, 'utf8'), {
    ...(extra === undefined ? {} : { headers: extra }),
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function isRawReply(value: unknown): value is RawReply {
  return (
    isObject(value) &&
    value.kind === 'raw' &&
    typeof value.contentType === 'string' &&
    (value.body instanceof Uint8Array || value.body instanceof Readable)
  );
}

function isEnvelopeReply(value: unknown): value is EnvelopeReply {
  return isObject(value) && value.kind === 'envelope' && isObject(value.body);
}

function isDataReply(value: unknown): value is DataReply {
  return isObject(value) && value.kind === 'data' && 'data' in value && isObject(value.attributes);
}

/** The status and message PBS would answer an error with. */
function errorStatus(error: unknown): { status: number; message: string } {
  if (isBurrowError(error)) return { status: error.httpStatus, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  return { status: 500, message: message === '' ? 'internal error' : message };
}

// ---------------------------------------------------------------------------------------------
// the handler

class BodyTooLarge extends Error {}

/** Read a request body up to `limit` bytes; more is 400 `Request body too large`. */
export async function readRequestBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    throw new BurrowError('INVALID_ARGUMENT', 'Request body too large', {
      details: { limit, length: declared },
    });
  }
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > limit) throw new BodyTooLarge();
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof BodyTooLarge) {
      throw new BurrowError('INVALID_ARGUMENT', 'Request body too large', {
        details: { limit },
      });
    }
    throw new BurrowError('IO_ERROR', 'Problems reading request body', { cause: error });
  }
  return Buffer.concat(chunks);
}

function hasCredentials(req: IncomingMessage): boolean {
  return (
    req.headers.authorization !== undefined || (req.headers.cookie ?? '').includes('PBSAuthCookie=')
  );
}

/** The 401 body: PBS's `authentication failed - <reason>`. */
function authFailureText(error: unknown): string {
  const reason = isBurrowError(error, 'AUTH_FAILED') ? error.message : 'authentication failed';
  return /^authentication failed/i.test(reason) ? reason : `authentication failed - ${reason}`;
}

export function createRestHandler(
  deps: ServerDeps,
  routes: readonly Route[],
  options: RestHandlerOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const table = compileRoutes(routes);
  const authDelay = options.authFailureDelayMs ?? DEFAULT_AUTH_FAILURE_DELAY_MS;
  const permissionDelay = options.permissionDelayMs ?? DEFAULT_PERMISSION_DELAY_MS;
  const log = deps.log;

  const privilegesOf = async (
    authId: Authid | undefined,
    path: string,
  ): Promise<ReadonlySet<Privilege>> =>
    authId === undefined ? new Set() : deps.access.privileges(authId, path);

  const allowed = async (
    authId: Authid | undefined,
    permission: Permission,
    params: Readonly<Record<string, unknown>>,
  ): Promise<boolean> => {
    switch (permission.kind) {
      case 'world':
        return true;
      case 'anybody':
      case 'handler':
        return authId !== undefined;
      case 'privileges': {
        if (authId === undefined) return false;
        const path = substituteOrUndefined(permission.path, params);
        if (path === undefined) return false;
        const have = await deps.access.privileges(authId, path);
        const wanted = permission.privileges;
        const ok =
          permission.any === true
            ? wanted.some((p) => have.has(p))
            : wanted.every((p) => have.has(p));
        if (ok) return true;
        return permission.partial === true && (await deps.access.anyPrivilegeBelow(authId, path));
      }
    }
  };

  /** Answer an error through the format's envelope (not for 401 from authentication). */
  const sendError = async (
    p: Pending,
    format: Format,
    error: unknown,
    compress: boolean,
  ): Promise<void> => {
    const { status } = errorStatus(error);
    let { message } = errorStatus(error);
    if (status === 500 && !isBurrowError(error)) {
      log.error({ err: error, method: p.req.method, url: p.req.url }, 'REST handler failed');
    }
    if (status === 401) await sleep(p.start + authDelay - Date.now());
    if (status === 403) {
      if (!isBurrowError(error) || message === '') message = PERMISSION_MESSAGE;
      await sleep(permissionDelay);
    }
    if (format === 'json') {
      await sendBuffer(p, status, JSON_CONTENT_TYPE, Buffer.from(message, 'utf8'), { compress });
      return;
    }
    const paramErrors = parameterErrorsOf(error);
    const body = {
      message: paramErrors === undefined ? message : 'parameter verification errors',
      errors: paramErrors ?? {},
      success: false,
      status,
    };
    await sendBuffer(p, 200, JSON_CONTENT_TYPE, Buffer.from(JSON.stringify(body)), { compress });
  };

  const sendResult = async (
    p: Pending,
    format: Format,
    result: unknown,
    compress: boolean,
  ): Promise<void> => {
    if (isRawReply(result)) {
      await sendRaw(p, result, compress);
      return;
    }
    let body: Record<string, unknown>;
    if (isEnvelopeReply(result)) {
      body = { ...result.body };
    } else {
      const data = isDataReply(result) ? result.data : result;
      body = { data: data === undefined ? null : data };
      if (format === 'extjs') Object.assign(body, { success: true, status: 200 });
      if (isDataReply(result)) Object.assign(body, result.attributes);
    }
    await sendBuffer(p, 200, JSON_CONTENT_TYPE, Buffer.from(JSON.stringify(body), 'utf8'), {
      compress,
    });
  };

  const sendRaw = async (p: Pending, reply: RawReply, compress: boolean): Promise<void> => {
    if (reply.body instanceof Uint8Array) {
      await sendBuffer(p, 200, reply.contentType, reply.body, {
        compress,
        ...(reply.headers === undefined ? {} : { headers: reply.headers }),
      });
      return;
    }
    const { req, res } = p;
    const source = reply.body;
    if (res.headersSent || res.destroyed) {
      source.destroy();
      return;
    }
    const headers: Record<string, string> = {
      ...baseHeaders(req),
      ...reply.headers,
      'content-type': reply.contentType,
    };
    if (compress) {
      headers['content-encoding'] = 'deflate';
      delete headers['content-length'];
    }
    res.writeHead(200, headers);
    try {
      // pipeline waits for the socket to drain before reading more (backpressure).
      if (compress) await pipeline(source, createDeflate(), res);
      else await pipeline(source, res);
    } catch (error) {
      // The status line is out: all that is left is to cut the connection so the client sees
      // a truncated answer instead of a complete-looking one.
      log.warn({ err: error, url: req.url }, 'REST download aborted');
      res.destroy();
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, start: number) => {
    const p: Pending = { req, res, start };
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    if (rawPath.length + query.length > MAX_URI_QUERY_LENGTH) {
      await sendBuffer(p, 414, undefined, new Uint8Array(0));
      return;
    }
    const components = splitPath(rawPath);
    if (components.some((c) => c === '.' || c === '..')) {
      await sendText(p, 400, 'Path contains illegal components.');
      return;
    }
    const fullPath = `/${components.join('/')}`;
    if (components[0] !== 'api2' || components.length < 2) {
      await sendText(p, 404, `Path '${fullPath}' not found.`);
      return;
    }
    const formatName = components[1] as string;
    if (formatName !== 'json' && formatName !== 'extjs') {
      await sendText(p, 400, `Unsupported output format '${formatName}'.`);
      return;
    }
    const format: Format = formatName;
    const method = (req.method ?? 'GET').toUpperCase();
    const match = matchRoute(table, method, components.slice(2));

    let authId: Authid | undefined;
    if (match === undefined || match.route.permission.kind !== 'world') {
      try {
        authId = await deps.access.authenticate({ method, headers: req.headers });
      } catch (error) {
        if (!isBurrowError(error, 'AUTH_FAILED')) {
          log.error({ err: error, url }, 'authentication failed with an unexpected error');
        } else {
          log.info({ reason: error.message, url }, 'authentication failure');
        }
        await sleep(start + authDelay - Date.now());
        await sendText(p, 401, authFailureText(error), { 'set-cookie': EXPIRE_AUTH_COOKIE });
        return;
      }
    } else if (hasCredentials(req)) {
      try {
        authId = await deps.access.authenticate({ method, headers: req.headers });
      } catch {
        // A world route works without credentials; bad ones simply leave the caller anonymous.
      }
    }

    if (match === undefined) {
      await sendError(
        p,
        format,
        new BurrowError('NOT_FOUND', `Path '${fullPath}' not found.`),
        false,
      );
      return;
    }
    const { route, pathParams } = match;
    const permission = route.permission;
    const checkLate =
      permission.kind === 'privileges' &&
      placeholders(permission.path).some((name) => !Object.hasOwn(pathParams, name));
    if (!checkLate && !(await allowed(authId, permission, pathParams))) {
      await sendError(p, format, permissionDenied(), false);
      return;
    }

    const compress = wantsDeflate(req);
    let params: Record<string, unknown>;
    try {
      const body =
        route.raw === 'upload' ? undefined : await readRequestBody(req, MAX_REQUEST_BODY_BYTES);
      params = await readParameters(route.parameters, {
        method,
        query,
        contentType: req.headers['content-type'],
        body,
        raw: route.raw !== undefined,
        pathParams,
      });
    } catch (error) {
      await sendError(p, format, error, compress);
      return;
    }
    if (checkLate && !(await allowed(authId, permission, params))) {
      await sendError(p, format, permissionDenied(), false);
      return;
    }

    const ctx: RouteContext = {
      deps,
      authId,
      params,
      request: req,
      privileges: (path) => privilegesOf(authId, path),
      requirePrivileges: async (path, privileges, opts) => {
        const have = await privilegesOf(authId, path);
        const ok =
          opts?.any === true
            ? privileges.some((x) => have.has(x))
            : privileges.every((x) => have.has(x));
        if (authId === undefined || !ok) throw permissionDenied();
      },
    };
    let result: unknown;
    try {
      result = await route.handler(ctx);
    } catch (error) {
      await sendError(p, format, error, compress);
      return;
    }
    try {
      await sendResult(p, format, result, compress);
    } catch (error) {
      // Serialising failed (a BigInt, a cycle): nothing has been sent yet.
      await sendError(p, format, error, compress);
    }
  };

  return (req, res) => {
    const start = Date.now();
    res.on('error', (error) => log.debug({ err: error, url: req.url }, 'REST response failed'));
    // A client that goes away mid-body makes the request emit 'error'; unheard, that would
    // crash the process. Whoever reads the body sees the failure through its own read.
    req.on('error', (error) => log.debug({ err: error, url: req.url }, 'REST request failed'));
    handle(req, res, start).catch((error: unknown) => {
      log.error({ err: error, url: req.url }, 'REST request failed');
      try {
        if (!res.headersSent && !res.destroyed) {
          res.writeHead(500, { 'content-type': JSON_CONTENT_TYPE, connection: 'close' });
          res.end('internal error');
        } else {
          res.destroy();
        }
      } catch {
        res.destroy();
      }
    });
  };
}
