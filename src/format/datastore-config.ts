/**
 * /etc/proxmox-backup/datastore.cfg (pbs-formats §10.1–§10.3): the `datastore` section type and
 * the property strings inside it (`tuning`, `notify`, `maintenance-mode`, `backend`), with typed
 * accessors. Property-string values are kept as their exact text so a file PBS wrote in
 * canonical form is written back byte for byte; the accessors parse them on demand.
 */
import { BurrowError } from '../lib/errors.js';
import { parseUserid } from '../types/auth.js';
import {
  formatPropertyString,
  parsePropertyString,
  type PropertyStringSchema,
} from './property-string.js';
import {
  parseSectionConfig,
  writeSectionConfig,
  type SectionConfigSchema,
  type SectionTypeSchema,
} from './section-config.js';

const SAFE_ID_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

// ---------------------------------------------------------------------------------------------
// Property-string schemas. Key order = PBS's struct field order, which is the order it writes.

export const CHUNK_ORDERS = ['none', 'inode'] as const;
export type ChunkOrder = (typeof CHUNK_ORDERS)[number];
export const SYNC_LEVELS = ['none', 'file', 'filesystem'] as const;
export type SyncLevel = (typeof SYNC_LEVELS)[number];

/** `tuning` (§10.3). */
export const TUNING_SCHEMA: PropertyStringSchema = {
  name: 'tuning',
  properties: {
    'chunk-order': { kind: 'enum', values: CHUNK_ORDERS, optional: true },
    'sync-level': { kind: 'enum', values: SYNC_LEVELS, optional: true },
    'gc-atime-safety-check': { kind: 'boolean', optional: true },
    'gc-atime-cutoff': { kind: 'integer', min: 1, max: 2880, optional: true },
    'gc-cache-capacity': { kind: 'integer', min: 0, max: 8_388_608, optional: true },
    'default-verification-workers': { kind: 'integer', min: 1, max: 32, optional: true },
    'default-verification-readers': { kind: 'integer', min: 1, max: 32, optional: true },
  },
};

export const NOTIFY_VALUES = ['always', 'error', 'never'] as const;
export type NotifyWhen = (typeof NOTIFY_VALUES)[number];

/** `notify`: per job kind, when to send legacy e-mail notifications. */
export const NOTIFY_SCHEMA: PropertyStringSchema = {
  name: 'notify',
  properties: {
    gc: { kind: 'enum', values: NOTIFY_VALUES, optional: true },
    verify: { kind: 'enum', values: NOTIFY_VALUES, optional: true },
    sync: { kind: 'enum', values: NOTIFY_VALUES, optional: true },
    prune: { kind: 'enum', values: NOTIFY_VALUES, optional: true },
  },
};

export const MAINTENANCE_TYPES = [
  'read-only',
  'offline',
  'delete',
  'unmount',
  's3-refresh',
] as const;
export type MaintenanceType = (typeof MAINTENANCE_TYPES)[number];

/** `maintenance-mode`: `type=<t>[,message=<m>]`, `type` being the default key. */
export const MAINTENANCE_MODE_SCHEMA: PropertyStringSchema = {
  name: 'maintenance-mode',
  defaultKey: 'type',
  properties: {
    type: { kind: 'enum', values: MAINTENANCE_TYPES },
    message: { kind: 'string', maxLength: 64, optional: true },
  },
};

export const BACKEND_TYPES = ['filesystem', 's3'] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

/** `backend` [4.x]: `client` and `bucket` are required for s3 and forbidden for filesystem. */
export const BACKEND_SCHEMA: PropertyStringSchema = {
  name: 'backend',
  defaultKey: 'type',
  properties: {
    type: { kind: 'enum', values: BACKEND_TYPES, optional: true },
    client: { kind: 'string', pattern: SAFE_ID_RE, optional: true },
    bucket: { kind: 'string', minLength: 1, optional: true },
    // A byte size, plain or with a unit (HumanByte); kept as text.
    'max-cache-size': { kind: 'string', minLength: 1, optional: true },
  },
  check: (values) => {
    const type = values['type'] ?? 'filesystem';
    if (type === 's3') {
      if (values['client'] === undefined) return 'backend type s3 needs client';
      if (values['bucket'] === undefined) return 'backend type s3 needs bucket';
    } else {
      for (const key of ['client', 'bucket', 'max-cache-size']) {
        if (values[key] !== undefined) return `${key} is not allowed for backend type filesystem`;
      }
    }
    return undefined;
  },
};

// ---------------------------------------------------------------------------------------------
// The datastore section

const nonEmpty = { kind: 'string', minLength: 1, optional: true } as const;
const keep = { kind: 'integer', min: 1, optional: true } as const;

export const DATASTORE_SECTION: SectionTypeSchema = {
  type: 'datastore',
  id: { kind: 'string', minLength: 3, maxLength: 32, pattern: SAFE_ID_RE },
  properties: {
    path: { kind: 'string', minLength: 1, maxLength: 4096 },
    comment: { kind: 'string', maxLength: 128, optional: true },
    // Calendar events are kept as text; their grammar is checked where schedules are evaluated.
    'gc-schedule': nonEmpty,
    'prune-schedule': nonEmpty,
    'keep-last': keep,
    'keep-hourly': keep,
    'keep-daily': keep,
    'keep-weekly': keep,
    'keep-monthly': keep,
    'keep-yearly': keep,
    'verify-new': { kind: 'boolean', optional: true },
    'notify-user': {
      kind: 'string',
      optional: true,
      check: (value) => {
        try {
          parseUserid(value);
          return undefined;
        } catch (error) {
          return error instanceof Error ? error.message : String(error);
        }
      },
    },
    notify: { kind: 'property-string', schema: NOTIFY_SCHEMA, optional: true },
    'notification-mode': {
      kind: 'enum',
      values: ['legacy-sendmail', 'notification-system'],
      optional: true,
    },
    tuning: { kind: 'property-string', schema: TUNING_SCHEMA, optional: true },
    'maintenance-mode': {
      kind: 'property-string',
      schema: MAINTENANCE_MODE_SCHEMA,
      optional: true,
    },
    'gc-on-unmount': { kind: 'boolean', optional: true },
    'backing-device': { kind: 'string', pattern: UUID_RE, optional: true },
    backend: { kind: 'property-string', schema: BACKEND_SCHEMA, optional: true },
    // [4.x] S3 request counter thresholds: a property string we do not interpret; kept as text.
    'notification-thresholds': nonEmpty,
    'counter-reset-schedule': nonEmpty,
  },
};

export const DATASTORE_CONFIG_SCHEMA: SectionConfigSchema = { types: [DATASTORE_SECTION] };

/** The properties of one datastore, keyed as in the file. Property strings are their text. */
export type DatastoreProps = {
  readonly path: string;
  readonly comment?: string;
  readonly 'gc-schedule'?: string;
  readonly 'prune-schedule'?: string;
  readonly 'keep-last'?: number;
  readonly 'keep-hourly'?: number;
  readonly 'keep-daily'?: number;
  readonly 'keep-weekly'?: number;
  readonly 'keep-monthly'?: number;
  readonly 'keep-yearly'?: number;
  readonly 'verify-new'?: boolean;
  readonly 'notify-user'?: string;
  readonly notify?: string;
  readonly 'notification-mode'?: 'legacy-sendmail' | 'notification-system';
  readonly tuning?: string;
  readonly 'maintenance-mode'?: string;
  readonly 'gc-on-unmount'?: boolean;
  readonly 'backing-device'?: string;
  readonly backend?: string;
  readonly 'notification-thresholds'?: string;
  readonly 'counter-reset-schedule'?: string;
};

export interface DatastoreConfigEntry {
  /** The datastore name: a safe ID of 3..32 characters (the section ID). */
  readonly name: string;
  readonly props: DatastoreProps;
}

/** Parse datastore.cfg into its datastores, in file order. */
export function parseDatastoreConfig(content: string | Uint8Array): DatastoreConfigEntry[] {
  return parseSectionConfig(DATASTORE_CONFIG_SCHEMA, content).map((section) => ({
    name: section.id,
    // The section schema validated every key and value type against DatastoreProps.
    props: section.props as DatastoreProps,
  }));
}

/** Write datastore.cfg in canonical form (sorted keys, TAB indentation). */
export function writeDatastoreConfig(entries: readonly DatastoreConfigEntry[]): string {
  return writeSectionConfig(
    DATASTORE_CONFIG_SCHEMA,
    entries.map((entry) => ({
      type: 'datastore',
      id: entry.name,
      props: entry.props,
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// Typed accessors

export interface DatastoreTuning {
  readonly chunkOrder: ChunkOrder;
  readonly syncLevel: SyncLevel;
  readonly gcAtimeSafetyCheck: boolean;
  /** Minutes; chunks with an older atime are swept by GC phase 2. */
  readonly gcAtimeCutoff: number;
  /** Entries of the GC digest LRU; 0 disables it. */
  readonly gcCacheCapacity: number;
  readonly defaultVerificationWorkers?: number;
  readonly defaultVerificationReaders?: number;
}

export const DEFAULT_TUNING: DatastoreTuning = Object.freeze({
  chunkOrder: 'inode',
  syncLevel: 'filesystem',
  gcAtimeSafetyCheck: true,
  gcAtimeCutoff: 24 * 60 + 5,
  gcCacheCapacity: 1_048_576,
});

/** Parse a `tuning` value; unset keys take their defaults. */
export function parseTuning(text: string | undefined): DatastoreTuning {
  if (text === undefined) return DEFAULT_TUNING;
  const v = parsePropertyString(TUNING_SCHEMA, text);
  const tuning: {
    -readonly [K in keyof DatastoreTuning]: DatastoreTuning[K];
  } = {
    chunkOrder: (v['chunk-order'] as ChunkOrder | undefined) ?? DEFAULT_TUNING.chunkOrder,
    syncLevel: (v['sync-level'] as SyncLevel | undefined) ?? DEFAULT_TUNING.syncLevel,
    gcAtimeSafetyCheck:
      (v['gc-atime-safety-check'] as boolean | undefined) ?? DEFAULT_TUNING.gcAtimeSafetyCheck,
    gcAtimeCutoff: (v['gc-atime-cutoff'] as number | undefined) ?? DEFAULT_TUNING.gcAtimeCutoff,
    gcCacheCapacity:
      (v['gc-cache-capacity'] as number | undefined) ?? DEFAULT_TUNING.gcCacheCapacity,
  };
  const workers = v['default-verification-workers'];
  const readers = v['default-verification-readers'];
  if (typeof workers === 'number') tuning.defaultVerificationWorkers = workers;
  if (typeof readers === 'number') tuning.defaultVerificationReaders = readers;
  return Object.freeze(tuning);
}

/** The datastore's tuning with defaults filled in. */
export function datastoreTuning(props: DatastoreProps): DatastoreTuning {
  return parseTuning(props.tuning);
}

export interface TuningOptions {
  readonly chunkOrder?: ChunkOrder;
  readonly syncLevel?: SyncLevel;
  readonly gcAtimeSafetyCheck?: boolean;
  readonly gcAtimeCutoff?: number;
  readonly gcCacheCapacity?: number;
  readonly defaultVerificationWorkers?: number;
  readonly defaultVerificationReaders?: number;
}

/** A `tuning` value holding just the options given (PBS omits unset options). */
export function formatTuning(options: TuningOptions): string {
  return formatPropertyString(TUNING_SCHEMA, {
    'chunk-order': options.chunkOrder,
    'sync-level': options.syncLevel,
    'gc-atime-safety-check': options.gcAtimeSafetyCheck,
    'gc-atime-cutoff': options.gcAtimeCutoff,
    'gc-cache-capacity': options.gcCacheCapacity,
    'default-verification-workers': options.defaultVerificationWorkers,
    'default-verification-readers': options.defaultVerificationReaders,
  });
}

export interface MaintenanceMode {
  readonly type: MaintenanceType;
  /** The message as shown to users (percent-decoded). */
  readonly message?: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Percent-decoding as PBS applies it to maintenance messages: valid `%XX` become bytes, anything
 * else stays literal; bytes that are not UTF-8 give an empty message (as PBS does).
 */
function percentDecode(text: string): string {
  const hex = (c: number | undefined): number => {
    if (c === undefined) return -1;
    if (c >= 0x30 && c <= 0x39) return c - 0x30;
    if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
    if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
    return -1;
  };
  const bytes = new TextEncoder().encode(text);
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i] ?? 0;
    const high = c === 0x25 ? hex(bytes[i + 1]) : -1;
    const low = c === 0x25 ? hex(bytes[i + 2]) : -1;
    if (high >= 0 && low >= 0) {
      out.push(high * 16 + low);
      i += 2;
    } else {
      out.push(c);
    }
  }
  try {
    return utf8.decode(new Uint8Array(out));
  } catch {
    return '';
  }
}

/** Parse a `maintenance-mode` value. */
export function parseMaintenanceMode(text: string): MaintenanceMode {
  const v = parsePropertyString(MAINTENANCE_MODE_SCHEMA, text);
  const type = v['type'] as MaintenanceType;
  const message = v['message'];
  return typeof message === 'string' ? { type, message: percentDecode(message) } : { type };
}

export function datastoreMaintenanceMode(props: DatastoreProps): MaintenanceMode | undefined {
  return props['maintenance-mode'] === undefined
    ? undefined
    : parseMaintenanceMode(props['maintenance-mode']);
}

/**
 * A `maintenance-mode` value. Only '%' is percent-encoded (as %25): that is all PBS's decoder
 * needs to give the message back unchanged, and it keeps the stored text, which is limited to 64
 * characters, short. Control characters are refused.
 */
export function formatMaintenanceMode(mode: MaintenanceMode): string {
  const message = mode.message;
  if (message !== undefined && /\p{Cc}/u.test(message)) {
    throw new BurrowError(
      'PROPERTY_STRING_INVALID',
      'maintenance-mode: the message must not contain control characters',
    );
  }
  return formatPropertyString(MAINTENANCE_MODE_SCHEMA, {
    type: mode.type,
    message: message === undefined || message === '' ? undefined : message.replaceAll('%', '%25'),
  });
}

export interface DatastoreBackend {
  readonly type: BackendType;
  readonly client?: string;
  readonly bucket?: string;
  readonly maxCacheSize?: string;
}

/** The datastore's backend; a missing `backend` (or type) is the local filesystem. */
export function datastoreBackend(props: DatastoreProps): DatastoreBackend {
  if (props.backend === undefined) return { type: 'filesystem' };
  const v = parsePropertyString(BACKEND_SCHEMA, props.backend);
  const result: { -readonly [K in keyof DatastoreBackend]: DatastoreBackend[K] } = {
    type: (v['type'] as BackendType | undefined) ?? 'filesystem',
  };
  if (typeof v['client'] === 'string') result.client = v['client'];
  if (typeof v['bucket'] === 'string') result.bucket = v['bucket'];
  if (typeof v['max-cache-size'] === 'string') result.maxCacheSize = v['max-cache-size'];
  return result;
}

export type DatastoreNotify = Partial<Record<'gc' | 'verify' | 'sync' | 'prune', NotifyWhen>>;

/** The legacy `notify` settings (unset job kinds are absent). */
export function datastoreNotify(props: DatastoreProps): DatastoreNotify {
  if (props.notify === undefined) return {};
  return parsePropertyString(NOTIFY_SCHEMA, props.notify);
}
