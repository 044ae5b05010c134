/**
 * What a REST route is (ARCHITECTURE principle 9): its method and path under /api2/json, the
 * parameters it accepts, the permission it needs and its handler, declared together. The router
 * (router.ts) parses and checks parameters (pbs-protocol §4.1), authenticates, checks the
 * permission, calls the handler and wraps the result in PBS's envelope (§4.2); the backup and
 * reader protocols reuse the parameter parsing for their session endpoints (§5.2). Handlers read
 * the checked parameters back with the typed getters at the end of this file.
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { BurrowError } from '../../lib/errors.js';
import type { Authid } from '../../types/auth.js';
import type { Privilege, ServerDeps } from '../server-types.js';

/** The type of one parameter, as PBS's schema states it; the checks produce PBS's messages. */
export type ParamType =
  | {
      readonly type: 'string';
      readonly pattern?: RegExp;
      readonly minLength?: number;
      readonly maxLength?: number;
      readonly enum?: readonly string[];
    }
  | { readonly type: 'integer'; readonly minimum?: number; readonly maximum?: number }
  | { readonly type: 'boolean' }
  | { readonly type: 'array'; readonly items: ParamType; readonly maxItems?: number };

export type ParamSpec = ParamType & {
  readonly description: string;
  readonly optional?: boolean;
  /** Filled in when the parameter is absent (implies optional). */
  readonly default?: string | number | boolean;
};

/** Parameter name → spec. Names not listed are refused (PBS schemas allow no extra properties). */
export type ParamSchema = Readonly<Record<string, ParamSpec>>;

/** Who may call a route (PBS's `Permission`). */
export type Permission =
  /** No authentication at all (ping, login). */
  | { readonly kind: 'world' }
  /** Any authenticated user or token. */
  | { readonly kind: 'anybody' }
  /**
   * The listed privileges on an ACL path; `{name}` in the path is replaced by that parameter
   * (`/datastore/{store}`). With `any`, one of the privileges suffices; with `partial`, a
   * privilege anywhere below the path suffices (PBS's partial checks for lists).
   */
  | {
      readonly kind: 'privileges';
      readonly path: string;
      readonly privileges: readonly Privilege[];
      readonly any?: boolean;
      readonly partial?: boolean;
    }
  /** Authenticated; the handler checks privileges and ownership itself (PBS does this for the
   *  datastore endpoints, whose rules combine privileges with group ownership). `why` says what. */
  | { readonly kind: 'handler'; readonly why: string };

export interface RouteContext {
  readonly deps: ServerDeps;
  /** The caller; undefined only for `world` routes called without credentials. */
  readonly authId: Authid | undefined;
  /** Checked parameters (path parameters merged in), defaults applied, values typed. */
  readonly params: Readonly<Record<string, unknown>>;
  /** The request; for `raw: 'upload'` routes its body is unread and the handler streams it. */
  readonly request: IncomingMessage;
  /** Throws PERMISSION_DENIED unless the caller has the privileges on `path` (any of them with `any`). */
  requirePrivileges(
    path: string,
    privileges: readonly Privilege[],
    options?: { any?: boolean },
  ): Promise<void>;
  /** The caller's effective privileges on `path`. */
  privileges(path: string): Promise<ReadonlySet<Privilege>>;
}

/** A raw (non-JSON) answer: file downloads and the task log download. */
export interface RawReply {
  readonly kind: 'raw';
  readonly contentType: string;
  readonly body: Uint8Array | Readable;
  readonly headers?: Readonly<Record<string, string>>;
}

/** A JSON answer with its own envelope (the task log's `{data, total, success, active}`). */
export interface EnvelopeReply {
  readonly kind: 'envelope';
  readonly body: Readonly<Record<string, unknown>>;
}

/** `data` plus result attributes beside it (`total` of the task list). */
export interface DataReply {
  readonly kind: 'data';
  readonly data: unknown;
  readonly attributes: Readonly<Record<string, unknown>>;
}

/** A handler returns the `data` value itself, or one of the replies above. */
export type RouteResult = unknown;

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface Route {
  readonly method: HttpMethod;
  /** Under /api2/json, with `{name}` segments bound to parameters: `/admin/datastore/{store}/gc`. */
  readonly path: string;
  readonly description: string;
  readonly parameters: ParamSchema;
  readonly permission: Permission;
  /**
   * `upload`: parameters only from the query string, the body is left for the handler.
   * `download`: parameters only from the query string, the handler returns a RawReply.
   */
  readonly raw?: 'upload' | 'download';
  handler(ctx: RouteContext): Promise<RouteResult>;
}

export function rawReply(
  contentType: string,
  body: Uint8Array | Readable,
  headers?: Readonly<Record<string, string>>,
): RawReply {
  return { kind: 'raw', contentType, body, ...(headers === undefined ? {} : { headers }) };
}

export function envelopeReply(body: Readonly<Record<string, unknown>>): EnvelopeReply {
  return { kind: 'envelope', body };
}

export function dataReply(data: unknown, attributes: Readonly<Record<string, unknown>>): DataReply {
  return { kind: 'data', data, attributes };
}

// ---------------------------------------------------------------------------------------------
// Reading checked parameters in handlers

/** What `typeof` says for each parameter type the getters below read. */
interface ParamValueTypes {
  string: string;
  number: number;
  boolean: boolean;
}

/**
 * A required parameter. The router has checked it against the route's schema already; this is
 * the typed read, which still fails with PBS's message when a schema and a handler disagree.
 */
function requiredParam<K extends keyof ParamValueTypes>(
  ctx: RouteContext,
  name: string,
  type: K,
): ParamValueTypes[K] {
  const value = ctx.params[name];
  if (typeof value !== type) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `parameter verification failed - '${name}': property is missing and it is not optional`,
    );
  }
  return value as ParamValueTypes[K];
}

function optionalParam<K extends keyof ParamValueTypes>(
  ctx: RouteContext,
  name: string,
  type: K,
): ParamValueTypes[K] | undefined {
  const value = ctx.params[name];
  return typeof value === type ? (value as ParamValueTypes[K]) : undefined;
}

export function stringParam(ctx: RouteContext, name: string): string {
  return requiredParam(ctx, name, 'string');
}

export function optionalString(ctx: RouteContext, name: string): string | undefined {
  return optionalParam(ctx, name, 'string');
}

export function integerParam(ctx: RouteContext, name: string): number {
  return requiredParam(ctx, name, 'number');
}

export function optionalInteger(ctx: RouteContext, name: string): number | undefined {
  return optionalParam(ctx, name, 'number');
}

export function requiredBoolean(ctx: RouteContext, name: string): boolean {
  return requiredParam(ctx, name, 'boolean');
}

export function optionalBoolean(ctx: RouteContext, name: string): boolean | undefined {
  return optionalParam(ctx, name, 'boolean');
}

export function booleanParam(ctx: RouteContext, name: string, fallback: boolean): boolean {
  return optionalParam(ctx, name, 'boolean') ?? fallback;
}
