/**
 * How a PBS server's answers become BurrowErrors, in one place for REST calls and for requests
 * inside backup and reader sessions: the status decides the code, the plain-text body (PBS sends
 * error messages as text even on /api2/json, pbs-protocol §4.2) is the message.
 */
import { BurrowError, type ErrorCode } from '../../lib/errors.js';

/** The longest error body kept as a message; PBS messages are one line. */
export const MAX_ERROR_MESSAGE = 8192;

/** A query string in PBS's conventions (§4.1): repeated keys for arrays, booleans as true/false. */
export type ParamValue = string | number | boolean | readonly (string | number | boolean)[];
export type QueryParams = Readonly<Record<string, ParamValue | undefined>>;

export function encodeQuery(params: QueryParams | undefined): string {
  if (params === undefined) return '';
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined) continue;
    const values = Array.isArray(value)
      ? (value as readonly (string | number | boolean)[])
      : [value];
    for (const v of values) search.append(key, String(v));
  }
  return search.toString();
}

export function withQuery(path: string, params: QueryParams | undefined): string {
  const query = encodeQuery(params);
  return query === '' ? path : `${path}?${query}`;
}

export function statusCode(status: number): ErrorCode {
  switch (status) {
    case 401:
      return 'AUTH_FAILED';
    case 403:
      return 'PERMISSION_DENIED';
    case 404:
      return 'NOT_FOUND';
    default:
      return 'REMOTE_ERROR';
  }
}

/** The message of an error body: its text, trimmed; a stand-in when the server sent none. */
export function errorMessage(status: number, body: Uint8Array): string {
  const text = Buffer.from(
    body.buffer,
    body.byteOffset,
    Math.min(body.byteLength, MAX_ERROR_MESSAGE),
  )
    .toString('utf8')
    .trim();
  return text === '' ? `HTTP status ${status}` : text;
}

/** The error for an answer with status ≥ 400 (or any other status that is not the expected one). */
export function remoteError(
  status: number,
  body: Uint8Array,
  path: string,
  code?: ErrorCode,
): BurrowError {
  const message = errorMessage(status, body);
  return new BurrowError(code ?? knownMessageCode(status, message) ?? statusCode(status), message, {
    details: { status, path },
  });
}

/**
 * PBS answers several refusals with a plain 400; their messages are stable, so the client gives
 * them the same codes (and exit statuses) as the local datastore does for the same refusal.
 */
const KNOWN_MESSAGES: ReadonlyArray<readonly [string, ErrorCode]> = [
  ['backup owner check failed', 'BACKUP_OWNER_MISMATCH'],
  ['backup timestamp is older than last backup', 'BACKUP_TIME_NOT_NEWER'],
];

function knownMessageCode(status: number, message: string): ErrorCode | undefined {
  if (status !== 400) return undefined;
  return KNOWN_MESSAGES.find(([prefix]) => message.startsWith(prefix))?.[1];
}

/** A broken or refused connection, unless the failure is one of ours already. */
export function connectionError(error: unknown, what: string): BurrowError {
  if (error instanceof BurrowError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  return new BurrowError('CONNECTION_FAILED', `${what}: ${message}`, {
    cause: error,
    details: errno === undefined ? {} : { errno },
  });
}

/** Parse a `{"data": …}` envelope (§4.2). */
export function parseEnvelope(body: Uint8Array, path: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(
      Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'),
    );
  } catch (error) {
    throw new BurrowError('REMOTE_ERROR', `the answer to ${path} is not valid JSON`, {
      cause: error,
      details: { path },
    });
  }
  if (typeof parsed !== 'object' || parsed === null || !('data' in parsed)) {
    throw new BurrowError('REMOTE_ERROR', `the answer to ${path} has no "data" member`, {
      details: { path },
    });
  }
  return parsed.data;
}
