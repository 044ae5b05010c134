/**
 * Burrow's typed errors. Every error Burrow throws on purpose is a BurrowError with a stable
 * `code` from ERROR_CODES. The code decides the CLI exit status and the HTTP status, so the
 * mapping lives in exactly one table; docs/errors.md lists the same table and a test keeps both
 * in step. Add a code here (never rename or reuse one), then run `npm run docs:errors`.
 */

/** CLI exit statuses, documented in docs/cli.md. */
export const EXIT = {
  ok: 0,
  /** Something failed that has no more specific status (I/O errors, internal errors). */
  failure: 1,
  /** The command line or an argument is wrong: fix the invocation. */
  usage: 2,
  /** A named thing (file, snapshot, datastore, key) does not exist. */
  notFound: 3,
  /** Data is damaged or not what it claims to be: truncated, wrong magic, CRC or digest mismatch. */
  corrupt: 4,
  /** A key or passphrase problem: missing key, wrong key, wrong passphrase, bad signature. */
  crypto: 5,
  /** A lock or an existing object is in the way; retrying later may help. */
  conflict: 6,
  /** Authentication or permission was refused. */
  denied: 7,
} as const;

interface ErrorCodeInfo {
  readonly exit: number;
  readonly http: number;
  readonly summary: string;
}

const code = (exit: number, http: number, summary: string): ErrorCodeInfo => ({
  exit,
  http,
  summary,
});

export const ERROR_CODES = {
  // General
  INTERNAL: code(EXIT.failure, 500, 'An unexpected internal error (a bug): please report it.'),
  IO_ERROR: code(EXIT.failure, 500, 'A filesystem or network operation failed.'),
  INVALID_ARGUMENT: code(EXIT.usage, 400, 'An argument or option has an invalid value.'),
  NOT_FOUND: code(EXIT.notFound, 404, 'The named file or object does not exist.'),

  // DataBlob (pbs-formats §3)
  BLOB_TRUNCATED: code(EXIT.corrupt, 400, 'A blob is shorter than its header.'),
  BLOB_BAD_MAGIC: code(EXIT.corrupt, 400, 'A blob starts with an unknown magic number.'),
  BLOB_CRC_MISMATCH: code(EXIT.corrupt, 400, 'A blob payload does not match its CRC32.'),
  BLOB_TOO_LARGE: code(EXIT.usage, 413, 'Data exceeds the 128 MiB blob limit or an upload limit.'),
  BLOB_DECOMPRESS_FAILED: code(
    EXIT.corrupt,
    400,
    'The zstd payload of a blob cannot be decompressed.',
  ),
  BLOB_DECRYPT_FAILED: code(
    EXIT.crypto,
    400,
    'AES-GCM authentication of an encrypted blob failed (wrong key or damaged data).',
  ),
  BLOB_KEY_REQUIRED: code(EXIT.crypto, 400, 'The blob is encrypted and no key was given.'),
  DIGEST_MISMATCH: code(EXIT.corrupt, 400, 'Decoded data does not hash to the expected digest.'),
  SIZE_MISMATCH: code(EXIT.corrupt, 400, 'Decoded data does not have the expected size.'),

  // Indexes (pbs-formats §4)
  INDEX_BAD_MAGIC: code(EXIT.corrupt, 400, 'An index file starts with the wrong magic number.'),
  INDEX_BAD_SIZE: code(
    EXIT.corrupt,
    400,
    'An index file size does not match its header or entry size.',
  ),
  INDEX_BAD_HEADER: code(
    EXIT.corrupt,
    400,
    'An index header field is invalid (chunk size, image size).',
  ),
  INDEX_BAD_ENTRY: code(
    EXIT.corrupt,
    400,
    'An index entry is invalid (end offsets not increasing).',
  ),
  INDEX_CSUM_MISMATCH: code(EXIT.corrupt, 400, 'An index checksum does not match its entries.'),
  INDEX_EMPTY: code(
    EXIT.usage,
    400,
    'An index with no chunks cannot be written: PBS cannot open it.',
  ),
  INDEX_OUT_OF_RANGE: code(EXIT.usage, 400, 'An offset or chunk position lies outside the index.'),
  INDEX_WRITER_STATE: code(
    EXIT.usage,
    400,
    'An index writer was used out of order (append after close, gap, misaligned chunk).',
  ),

  // Manifest and signatures (pbs-formats §5)
  MANIFEST_INVALID: code(EXIT.corrupt, 400, 'A manifest is not valid JSON of the expected shape.'),
  MANIFEST_SIGNATURE_MISMATCH: code(
    EXIT.crypto,
    400,
    'The manifest signature does not match its content and the key.',
  ),
  MANIFEST_WRONG_KEY: code(
    EXIT.crypto,
    400,
    'The manifest was written with a different key (fingerprint mismatch).',
  ),
  CANONICAL_JSON_INVALID: code(
    EXIT.usage,
    400,
    'A value cannot be put in canonical JSON (null, non-integer or non-finite number).',
  ),

  // Keys (pbs-formats §11.3)
  KEY_FILE_INVALID: code(EXIT.corrupt, 400, 'A key file is not a valid KeyConfig.'),
  KEY_PASSPHRASE_TOO_SHORT: code(EXIT.usage, 400, 'A passphrase must be at least 5 bytes long.'),
  KEY_PASSPHRASE_WRONG: code(
    EXIT.crypto,
    400,
    'The passphrase does not unlock the key (or the key file is damaged).',
  ),
  KEY_FINGERPRINT_MISMATCH: code(
    EXIT.crypto,
    400,
    'A key does not match the fingerprint stored with it.',
  ),
  RSA_KEY_INVALID: code(
    EXIT.usage,
    400,
    'An RSA master key is not a valid PEM key of the required kind.',
  ),
  RSA_DECRYPT_FAILED: code(
    EXIT.crypto,
    400,
    'The RSA-wrapped key cannot be decrypted with this master key.',
  ),

  // Names and identifiers (pbs-formats §5.1, §6, §11.1)
  INVALID_BACKUP_TIME: code(
    EXIT.usage,
    400,
    'A backup time is not YYYY-MM-DDTHH:MM:SSZ (or out of range).',
  ),
  INVALID_BACKUP_TYPE: code(EXIT.usage, 400, 'A backup type is not one of vm, ct, host.'),
  INVALID_BACKUP_ID: code(EXIT.usage, 400, 'A backup ID does not match the safe-ID pattern.'),
  INVALID_NAMESPACE: code(
    EXIT.usage,
    400,
    'A namespace has a bad component, is deeper than 7 or longer than 256.',
  ),
  INVALID_SNAPSHOT_PATH: code(
    EXIT.usage,
    400,
    'A snapshot or group path is not [ns/<a>/...]<type>/<id>[/<time>].',
  ),
  INVALID_ARCHIVE_NAME: code(
    EXIT.usage,
    400,
    'An archive name is not a safe ID with a known extension.',
  ),
  INVALID_USERID: code(EXIT.usage, 400, 'A user ID is not <name>@<realm>.'),
  INVALID_AUTHID: code(EXIT.usage, 400, 'An auth ID is not <name>@<realm>[!<token>].'),
  INVALID_UPID: code(EXIT.usage, 400, 'A task ID (UPID) does not have the UPID format.'),
  INVALID_DIGEST: code(EXIT.usage, 400, 'A digest is not 64 lowercase hex characters.'),
  INVALID_FINGERPRINT: code(EXIT.usage, 400, 'A fingerprint is not 32 colon-separated hex bytes.'),

  // Datastore, locks and tasks (pbs-formats §1, §2, §6-§9)
  LOCKED: code(
    EXIT.conflict,
    409,
    'A lock is held by another operation or process; retry when it has finished.',
  ),
  MAINTENANCE_MODE: code(
    EXIT.conflict,
    400,
    'The datastore is in a maintenance mode that blocks this operation (read-only, offline); retry once an administrator has ended it.',
  ),
  ALREADY_EXISTS: code(EXIT.conflict, 409, 'The object to create exists already.'),
  DATASTORE_INVALID: code(
    EXIT.corrupt,
    400,
    'A directory is not a valid datastore (layout, permissions) or not empty.',
  ),
  CHUNK_CONFLICT: code(
    EXIT.corrupt,
    400,
    'A chunk upload conflicts with the stored chunk of the same digest (encrypted vs plain).',
  ),
  PROTECTED: code(EXIT.conflict, 409, 'The snapshot is protected and cannot be removed.'),
  PERMISSION_DENIED: code(
    EXIT.denied,
    403,
    'The caller may not do this (owner or privilege check failed).',
  ),
  NOT_EMPTY: code(EXIT.conflict, 409, 'A namespace, group or directory still holds content.'),
  TASK_ABORTED: code(EXIT.failure, 500, 'The task was aborted on request.'),
  VERIFY_FAILED: code(
    EXIT.corrupt,
    500,
    'Verification found damaged snapshots; the task log lists them.',
  ),
  GC_ATIME_CHECK_FAILED: code(
    EXIT.failure,
    500,
    'The filesystem does not keep access times set by utimensat; GC would be unsafe.',
  ),
  NATIVE_UNAVAILABLE: code(
    EXIT.failure,
    500,
    "Burrow's native helper (flock, fcntl, utimensat) is not built; run npm ci.",
  ),

  // Configuration (pbs-formats §10)
  SECTION_CONFIG_SYNTAX: code(
    EXIT.usage,
    400,
    'A section-config file has a syntax error (bad header or property line).',
  ),
  SECTION_CONFIG_INVALID: code(
    EXIT.usage,
    400,
    'A section-config file has an unknown, duplicate, missing or invalid property.',
  ),
  PROPERTY_STRING_INVALID: code(
    EXIT.usage,
    400,
    'A property string (key=value,...) is malformed or has an unknown key.',
  ),

  // pxar archives, the catalog and path patterns (pxar-format.md)
  PXAR_TRUNCATED: code(
    EXIT.corrupt,
    400,
    'A pxar archive ends in the middle of an item or before its root directory is closed.',
  ),
  PXAR_BAD_ITEM: code(
    EXIT.corrupt,
    400,
    'A pxar item has an unknown type, an invalid size or appears where the format does not allow it.',
  ),
  PXAR_BAD_NAME: code(
    EXIT.corrupt,
    400,
    'A pxar file name or link target is empty, too long, lacks its NUL, or contains / or is . or ..',
  ),
  PXAR_BAD_GOODBYE: code(
    EXIT.corrupt,
    400,
    'A pxar goodbye table is malformed or points outside its directory.',
  ),
  PXAR_BAD_HARDLINK: code(
    EXIT.corrupt,
    400,
    'A pxar hardlink points forwards, outside the archive, or at something that is not a regular file.',
  ),
  PXAR_BAD_PAYLOAD: code(
    EXIT.corrupt,
    400,
    'A payload reference does not match the payload stream (wrong header, size or order).',
  ),
  PXAR_PAYLOAD_REQUIRED: code(
    EXIT.usage,
    400,
    'A split (v2) archive needs its payload stream (.ppxar) to read file contents.',
  ),
  PXAR_UNSAFE_PATH: code(
    EXIT.corrupt,
    400,
    'An archive entry would be written outside the restore target; the restore stopped.',
  ),
  PXAR_ENCODER_STATE: code(
    EXIT.usage,
    400,
    'The pxar encoder was used out of order (entry after finish, unbalanced directories, size mismatch).',
  ),
  CATALOG_INVALID: code(
    EXIT.corrupt,
    400,
    'A catalog (.pcat1) has a wrong magic, a bad table or an offset outside the file.',
  ),
  PATTERN_INVALID: code(
    EXIT.usage,
    400,
    'A match pattern (exclude, include or find glob) has invalid syntax.',
  ),

  // Backup and reader sessions (pbs-protocol §5, §6), local or over HTTP/2
  BACKUP_SESSION_INVALID: code(
    EXIT.usage,
    400,
    'A backup session request is invalid: unknown or closed writer, wrong offset, size, digest or checksum, unknown chunk, or a call after finish.',
  ),
  BACKUP_OWNER_MISMATCH: code(
    EXIT.denied,
    400,
    'The backup group belongs to another user or token (backup owner check failed).',
  ),
  BACKUP_TIME_NOT_NEWER: code(
    EXIT.conflict,
    400,
    'The backup time is not newer than the last backup of the group.',
  ),
  NO_PREVIOUS_BACKUP: code(
    EXIT.notFound,
    400,
    'The backup group has no valid previous snapshot to reuse.',
  ),
  CHUNK_NOT_ALLOWED: code(
    EXIT.denied,
    401,
    'A chunk was requested that no index downloaded in this reader session references.',
  ),

  // Server and remote client (pbs-protocol §2-§4)
  AUTH_FAILED: code(
    EXIT.denied,
    401,
    'Authentication failed: no, wrong or expired credentials (password, ticket, CSRF token or API token).',
  ),
  URI_TOO_LONG: code(
    EXIT.usage,
    414,
    'The request path and query are longer than the server accepts (3072 bytes).',
  ),
  UNSUPPORTED_MEDIA_TYPE: code(
    EXIT.usage,
    400,
    'The request body has a content type the endpoint does not accept.',
  ),
  TLS_UNTRUSTED: code(
    EXIT.denied,
    400,
    "The server's certificate is not trusted: its fingerprint does not match the expected or remembered one.",
  ),
  CONNECTION_FAILED: code(
    EXIT.failure,
    500,
    'The server could not be reached, or the connection broke before the request completed.',
  ),
  REMOTE_ERROR: code(
    EXIT.failure,
    500,
    "The server answered a request with an error; the message is the server's.",
  ),
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface BurrowErrorOptions {
  /** Structured facts about the failure (file, offset, expected/actual values) for logs and JSON output. */
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class BurrowError extends Error {
  override readonly name = 'BurrowError';
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: BurrowErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  /** The error as plain data, for `--output-format json` and API error bodies. */
  toJSON(): { code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export function isBurrowError(value: unknown, code?: ErrorCode): value is BurrowError {
  return value instanceof BurrowError && (code === undefined || value.code === code);
}

/**
 * Prefix an error's message with the file it concerns ("<file>: <message>") and record the
 * file in its details. Pure codecs do not know file names; the I/O edge that read the bytes does.
 */
export function withFile(error: unknown, file: string): unknown {
  if (error instanceof BurrowError) {
    return new BurrowError(error.code, `${file}: ${error.message}`, {
      details: { ...error.details, file },
      cause: error.cause,
    });
  }
  return error;
}
