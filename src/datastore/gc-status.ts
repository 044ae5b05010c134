/**
 * `<base>/.gc-status` (pbs-formats §2.8, §7.4): the last garbage collection's counters as compact
 * JSON with kebab-case keys. Reading is forgiving in one direction only: missing counters read
 * as 0 (older writers had fewer keys), but a value of the wrong type makes the whole file invalid
 * and the caller falls back to the defaults, as PBS does with a status it cannot parse.
 */
import { BurrowError } from '../lib/errors.js';

export interface GcCacheStats {
  hits: number;
  misses: number;
}

export interface GcStatusData {
  upid: string | null;
  'index-file-count': number;
  'index-data-bytes': number;
  'disk-bytes': number;
  'disk-chunks': number;
  'removed-bytes': number;
  'removed-chunks': number;
  'pending-bytes': number;
  'pending-chunks': number;
  'removed-bad': number;
  'still-bad': number;
  /** [4.x] only; omitted when absent. */
  'cache-stats'?: GcCacheStats;
}

/** The counters, in the order PBS's struct declares (and serde writes) them. */
export const GC_STATUS_COUNTERS = [
  'index-file-count',
  'index-data-bytes',
  'disk-bytes',
  'disk-chunks',
  'removed-bytes',
  'removed-chunks',
  'pending-bytes',
  'pending-chunks',
  'removed-bad',
  'still-bad',
] as const;

export function defaultGcStatus(): GcStatusData {
  return {
    upid: null,
    'index-file-count': 0,
    'index-data-bytes': 0,
    'disk-bytes': 0,
    'disk-chunks': 0,
    'removed-bytes': 0,
    'removed-chunks': 0,
    'pending-bytes': 0,
    'pending-chunks': 0,
    'removed-bad': 0,
    'still-bad': 0,
  };
}

const isCount = (value: unknown): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

function invalid(message: string): BurrowError {
  return new BurrowError('INVALID_ARGUMENT', `invalid GC status: ${message}`);
}

/** Parse `.gc-status` content. Throws INVALID_ARGUMENT for anything that is not a status. */
export function parseGcStatus(text: string): GcStatusData {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw invalid(`not JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw invalid('expected a JSON object');
  }
  const obj = json as Record<string, unknown>;
  const status = defaultGcStatus();
  const upid = obj['upid'];
  if (upid !== undefined && upid !== null) {
    if (typeof upid !== 'string') throw invalid('upid must be a string or null');
    status.upid = upid;
  }
  for (const key of GC_STATUS_COUNTERS) {
    const value = obj[key];
    if (value === undefined) continue;
    if (!isCount(value)) throw invalid(`${key} must be a non-negative integer`);
    status[key] = value;
  }
  const cache = obj['cache-stats'];
  if (cache !== undefined && cache !== null) {
    if (typeof cache !== 'object' || Array.isArray(cache)) {
      throw invalid('cache-stats must be an object');
    }
    const { hits, misses } = cache as Record<string, unknown>;
    if (!isCount(hits) || !isCount(misses)) {
      throw invalid('cache-stats needs non-negative integer hits and misses');
    }
    status['cache-stats'] = { hits, misses };
  }
  return status;
}

/** Compact JSON in PBS's key order (upid, the counters, then cache-stats when present). */
export function serializeGcStatus(status: GcStatusData): string {
  const out: Record<string, unknown> = { upid: status.upid };
  for (const key of GC_STATUS_COUNTERS) out[key] = status[key];
  const cache = status['cache-stats'];
  if (cache !== undefined) out['cache-stats'] = { hits: cache.hits, misses: cache.misses };
  return JSON.stringify(out);
}
