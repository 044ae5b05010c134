/**
 * The snapshot manifest `index.json.blob` (pbs-formats §5): its JSON shape, how PBS writes it,
 * the HMAC signature over its canonical form, and the per-file size/csum rules.
 *
 * The manifest travels as UTF-8 JSON inside an unencrypted DataBlob; this module deals with the
 * JSON only (the blob layer wraps it). Choices made here, beyond the spec:
 * - `csum` is kept as the 64-character lowercase hex string it is on disk: parse and serialize
 *   are then the identity on it, values compare with `===`, and callers holding bytes convert
 *   once with `toHex`. The helpers below accept bytes too.
 * - Unknown keys (top level and inside file entries) are kept in `extra`, written back, and
 *   included in the signed content. PBS checks a signature over the raw JSON it read (only
 *   `signature` and `unprotected` removed), so this is what verifies a manifest from a newer
 *   PBS that signs a field we do not know; dropping them would break such signatures.
 * - Known fields are validated strictly (types, names, hex), so a manifest we accept is one we
 *   can serialize again byte-for-byte in PBS's layout.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { CryptConfig } from '../crypto/crypt-config.js';
import { formatFingerprint, parseFingerprint } from '../crypto/crypt-config.js';
import { bytesEqual, toHex } from '../lib/bytes.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import type { BackupType } from '../types/backup.js';
import { MAX_BACKUP_TIME, MIN_BACKUP_TIME, SAFE_ID_RE, isBackupType } from '../types/backup.js';
import type { CryptMode } from '../types/crypt-mode.js';
import { isCryptMode } from '../types/crypt-mode.js';
import { canonicalJsonBytes, prettyJsonSorted } from './canonical-json.js';

/** The manifest itself; never listed in `files`. */
export const MANIFEST_BLOB_NAME = 'index.json.blob';
/** Client task log uploaded after the backup; never listed in `files`. */
export const CLIENT_LOG_BLOB_NAME = 'client.log.blob';
/** File catalog of file-level backups. */
export const CATALOG_NAME = 'catalog.pcat1.didx';
/** The RSA-wrapped encryption key (crypto/master-key.ts), stored as a plain uncompressed blob. */
export const ENCRYPTED_KEY_BLOB_NAME = 'rsa-encrypted.key.blob';

/** `unprotected` keys PBS itself writes (pbs-formats §5.3). */
export const KEY_FINGERPRINT_KEY = 'key-fingerprint';

export type ArchiveType = 'blob' | 'fixed' | 'dynamic';

export interface FileInfo {
  /** Archive file name including its type extension (`.blob`, `.fidx`, `.didx`). */
  filename: string;
  cryptMode: CryptMode;
  /** Blob: encoded file length. Fixed index: image size. Dynamic index: stream length. */
  size: number;
  /** 64 lowercase hex. Blob: SHA-256 of the encoded file. Index: the header's index csum. */
  csum: string;
  /** Keys of a file entry we do not know, kept verbatim (see the module comment). */
  extra?: Record<string, unknown>;
}

export interface BackupManifest {
  backupType: BackupType;
  backupId: string;
  /** Epoch seconds; matches the snapshot directory name. */
  backupTime: number;
  files: FileInfo[];
  /** 64 lowercase hex HMAC-SHA256, or null when unsigned. */
  signature: string | null;
  /** Not covered by the signature; kept untouched, unknown keys included. */
  unprotected: Record<string, unknown>;
  /** Top-level keys we do not know, kept verbatim and covered by the signature. */
  extra?: Record<string, unknown>;
}

const HEX64_RE = /^[0-9a-f]{64}$/;

const KNOWN_TOP = new Set([
  'backup-type',
  'backup-id',
  'backup-time',
  'files',
  'signature',
  'unprotected',
]);
const KNOWN_FILE = new Set(['filename', 'crypt-mode', 'size', 'csum']);

function invalid(path: string, message: string, cause?: unknown): BurrowError {
  return new BurrowError('MANIFEST_INVALID', `manifest ${path}: ${message}`, {
    details: { path },
    cause,
  });
}

function kind(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function has(obj: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

/** Unknown keys of `obj`, or undefined when there are none (so round trips compare equal). */
function extraKeys(
  obj: Record<string, unknown>,
  known: ReadonlySet<string>,
): Record<string, unknown> | undefined {
  // Object.fromEntries defines own properties, so a key named "__proto__" stays a plain key.
  const entries = Object.entries(obj).filter(([key]) => !known.has(key));
  return entries.length === 0 ? undefined : Object.fromEntries(entries);
}

// ---------------------------------------------------------------------------------------------
// Archive names (pbs-formats §5.1)

/** The archive type from the last extension of a server-side name. */
export function archiveTypeOf(filename: string): ArchiveType {
  const dot = filename.lastIndexOf('.');
  const ext = dot > 0 ? filename.slice(dot + 1) : '';
  if (ext === 'blob') return 'blob';
  if (ext === 'fidx') return 'fixed';
  if (ext === 'didx') return 'dynamic';
  throw new BurrowError(
    'INVALID_ARCHIVE_NAME',
    `not an archive name (must end in .blob, .fidx or .didx): ${JSON.stringify(filename)}`,
    { details: { filename } },
  );
}

/** True when `name` is a safe ID ending in .blob, .fidx or .didx. */
export function isArchiveName(name: string): boolean {
  return SAFE_ID_RE.test(name) && /\.(?:blob|fidx|didx)$/.test(name);
}

function checkArchiveName(name: string): void {
  if (!SAFE_ID_RE.test(name)) {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `archive name must match ${SAFE_ID_RE.source}: ${JSON.stringify(name)}`,
      { details: { filename: name } },
    );
  }
}

const CLIENT_SUFFIXES: ReadonlyArray<readonly [string, string]> = [
  ['.pxar', '.didx'],
  ['.mpxar', '.didx'],
  ['.ppxar', '.didx'],
  ['.pcat1', '.didx'],
  ['.img', '.fidx'],
  ['.conf', '.blob'],
  ['.json', '.blob'],
  ['.key', '.blob'],
  ['.log', '.blob'],
];

/**
 * The server-side name of a client archive name (`root.pxar` → `root.pxar.didx`, `drive.img` →
 * `drive.img.fidx`, `x.conf` → `x.conf.blob`). A name that already ends in a server extension is
 * returned unchanged, so the function is idempotent.
 */
export function serverArchiveName(clientName: string): string {
  checkArchiveName(clientName);
  if (/\.(?:blob|fidx|didx)$/.test(clientName)) return clientName;
  for (const [suffix, serverExt] of CLIENT_SUFFIXES) {
    if (clientName.endsWith(suffix) && clientName.length > suffix.length)
      return clientName + serverExt;
  }
  throw new BurrowError(
    'INVALID_ARCHIVE_NAME',
    `unknown archive type of ${JSON.stringify(clientName)}: expected .pxar, .mpxar, .ppxar, .pcat1, .img, .conf, .json, .key or .log`,
    { details: { filename: clientName } },
  );
}

// ---------------------------------------------------------------------------------------------
// Parsing

function parseFileInfo(value: unknown, path: string): FileInfo {
  if (!isObject(value)) throw invalid(path, `expected an object, got ${kind(value)}`);

  const filename = value['filename'];
  if (typeof filename !== 'string')
    throw invalid(`${path}.filename`, `expected a string, got ${kind(filename)}`);
  if (!isArchiveName(filename)) {
    throw invalid(
      `${path}.filename`,
      `not a safe archive name ending in .blob, .fidx or .didx: ${JSON.stringify(filename)}`,
    );
  }

  // Manifests older than PBS 0.8 have no crypt-mode; they were all unencrypted.
  let cryptMode: CryptMode = 'none';
  if (has(value, 'crypt-mode')) {
    const raw = value['crypt-mode'];
    if (!isCryptMode(raw)) {
      throw invalid(
        `${path}.crypt-mode`,
        `expected "none", "encrypt" or "sign-only", got ${JSON.stringify(raw) ?? kind(raw)}`,
      );
    }
    cryptMode = raw;
  }

  const size = value['size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(
      `${path}.size`,
      `expected a non-negative integer below 2^53, got ${JSON.stringify(size) ?? kind(size)}`,
    );
  }

  const csum = value['csum'];
  if (typeof csum !== 'string' || !HEX64_RE.test(csum)) {
    throw invalid(
      `${path}.csum`,
      `expected 64 lowercase hex characters, got ${JSON.stringify(csum) ?? kind(csum)}`,
    );
  }

  const info: FileInfo = { filename, cryptMode, size, csum };
  const extra = extraKeys(value, KNOWN_FILE);
  if (extra) info.extra = extra;
  return info;
}

/** Validate a parsed JSON value as a manifest. */
export function manifestFromJson(json: unknown): BackupManifest {
  if (!isObject(json)) throw invalid('$', `expected a JSON object, got ${kind(json)}`);

  const backupType = json['backup-type'];
  if (!isBackupType(backupType)) {
    throw invalid(
      'backup-type',
      `expected "vm", "ct" or "host", got ${JSON.stringify(backupType) ?? kind(backupType)}`,
    );
  }

  const backupId = json['backup-id'];
  if (typeof backupId !== 'string' || !SAFE_ID_RE.test(backupId)) {
    throw invalid(
      'backup-id',
      `expected a string matching ${SAFE_ID_RE.source}, got ${JSON.stringify(backupId) ?? kind(backupId)}`,
    );
  }

  const backupTime = json['backup-time'];
  if (
    typeof backupTime !== 'number' ||
    !Number.isSafeInteger(backupTime) ||
    backupTime < MIN_BACKUP_TIME ||
    backupTime > MAX_BACKUP_TIME
  ) {
    throw invalid(
      'backup-time',
      `expected integer epoch seconds in ${MIN_BACKUP_TIME}..${MAX_BACKUP_TIME}, got ${JSON.stringify(backupTime) ?? kind(backupTime)}`,
    );
  }

  const rawFiles = json['files'];
  if (!Array.isArray(rawFiles)) throw invalid('files', `expected an array, got ${kind(rawFiles)}`);
  const files = rawFiles.map((entry, index) => parseFileInfo(entry, `files[${index}]`));

  // PBS's `signature: Option<String>` reads a missing key as unsigned.
  const rawSignature = has(json, 'signature') ? json['signature'] : null;
  if (rawSignature !== null && (typeof rawSignature !== 'string' || !HEX64_RE.test(rawSignature))) {
    throw invalid(
      'signature',
      `expected null or 64 lowercase hex characters, got ${JSON.stringify(rawSignature) ?? kind(rawSignature)}`,
    );
  }

  // Manifests older than PBS 0.8 have no `unprotected`; an explicit null reads the same way.
  const rawUnprotected = has(json, 'unprotected') ? json['unprotected'] : null;
  if (rawUnprotected !== null && !isObject(rawUnprotected)) {
    throw invalid('unprotected', `expected an object, got ${kind(rawUnprotected)}`);
  }

  const manifest: BackupManifest = {
    backupType,
    backupId,
    backupTime,
    files,
    signature: rawSignature,
    unprotected: rawUnprotected ?? {},
  };
  const extra = extraKeys(json, KNOWN_TOP);
  if (extra) manifest.extra = extra;
  return manifest;
}

// Keep a BOM in the text: serde_json refuses one, and so must we.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Parse manifest JSON (text or UTF-8 bytes, e.g. the decoded payload of index.json.blob). */
export function parseManifest(input: Uint8Array | string): BackupManifest {
  let text: string;
  if (typeof input === 'string') {
    text = input;
  } else {
    try {
      text = UTF8.decode(input);
    } catch (cause) {
      throw invalid('$', 'not valid UTF-8', cause);
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw invalid(
      '$',
      `not valid JSON (${cause instanceof Error ? cause.message : String(cause)})`,
      cause,
    );
  }
  return manifestFromJson(json);
}

// ---------------------------------------------------------------------------------------------
// Writing

function fileInfoToJson(info: FileInfo): Record<string, unknown> {
  return {
    ...info.extra,
    'crypt-mode': info.cryptMode,
    csum: info.csum,
    filename: info.filename,
    size: info.size,
  };
}

/** The manifest as the JSON value PBS writes (known fields win over same-named `extra` keys). */
export function manifestToJson(m: BackupManifest): Record<string, unknown> {
  return {
    ...m.extra,
    'backup-id': m.backupId,
    'backup-time': m.backupTime,
    'backup-type': m.backupType,
    files: m.files.map(fileInfoToJson),
    signature: m.signature,
    unprotected: m.unprotected,
  };
}

/**
 * Manifest text as PBS writes it: serde_json pretty printing, keys sorted at every level,
 * `signature` always present (null when unsigned), no trailing newline. The manifest is
 * validated first so we never write something we would refuse to read.
 */
export function serializeManifest(m: BackupManifest): string {
  const json = manifestToJson(m);
  manifestFromJson(json);
  return prettyJsonSorted(json);
}

export function serializeManifestBytes(m: BackupManifest): Uint8Array {
  return new Uint8Array(Buffer.from(serializeManifest(m), 'utf8'));
}

/** An empty, unsigned manifest for a new snapshot. */
export function newManifest(
  backupType: BackupType,
  backupId: string,
  backupTime: number,
): BackupManifest {
  const m: BackupManifest = {
    backupType,
    backupId,
    backupTime,
    files: [],
    signature: null,
    unprotected: {},
  };
  manifestFromJson(manifestToJson(m));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Signature (pbs-formats §5.4)

/** The bytes the signature covers: canonical JSON without `signature` and `unprotected`. */
export function manifestSignedBytes(m: BackupManifest): Uint8Array {
  const { signature: _signature, unprotected: _unprotected, ...signed } = manifestToJson(m);
  return canonicalJsonBytes(signed);
}

/** hex(HMAC-SHA256(id_key, canonical JSON)). */
export function manifestSignature(m: BackupManifest, crypt: CryptConfig): string {
  return toHex(crypt.computeAuthTag(manifestSignedBytes(m)));
}

/** A copy of `m` signed with `crypt`, with the key's fingerprint in `unprotected`. */
export function signManifest(m: BackupManifest, crypt: CryptConfig): BackupManifest {
  return {
    ...m,
    signature: manifestSignature(m, crypt),
    unprotected: { ...m.unprotected, [KEY_FINGERPRINT_KEY]: formatFingerprint(crypt.fingerprint) },
  };
}

/** The fingerprint recorded in `unprotected`, or null. A malformed value is MANIFEST_INVALID. */
export function manifestFingerprint(m: BackupManifest): Uint8Array | null {
  const raw = has(m.unprotected, KEY_FINGERPRINT_KEY) ? m.unprotected[KEY_FINGERPRINT_KEY] : null;
  if (raw === null || raw === undefined) return null;
  if (typeof raw !== 'string') {
    throw invalid(
      `unprotected.${KEY_FINGERPRINT_KEY}`,
      `expected a fingerprint string, got ${kind(raw)}`,
    );
  }
  try {
    return parseFingerprint(raw);
  } catch (cause) {
    if (!isBurrowError(cause)) throw cause;
    throw invalid(`unprotected.${KEY_FINGERPRINT_KEY}`, cause.message, cause);
  }
}

export interface ManifestVerification {
  /** The manifest carries a signature. */
  signed: boolean;
  /** The signature was recomputed with the given key and matched. */
  verified: boolean;
  /** `unprotected.key-fingerprint` in its text form, or null. */
  fingerprint: string | null;
}

/**
 * Check a manifest against a key, in PBS's order (pbs-formats §5.4):
 * 1. a recorded key fingerprint needs a key, and the same key: otherwise MANIFEST_WRONG_KEY
 *    (PBS's `check_fingerprint`; applied whether or not the manifest is signed);
 * 2. with a key and a signature, the recomputed HMAC must match: otherwise
 *    MANIFEST_SIGNATURE_MISMATCH.
 * An unsigned manifest without a fingerprint is accepted with any key or none; a signed one
 * without fingerprint and without a key is accepted unverified (`verified: false`).
 */
export function verifyManifest(m: BackupManifest, crypt?: CryptConfig): ManifestVerification {
  const recorded = manifestFingerprint(m);
  const fingerprint = recorded ? formatFingerprint(recorded) : null;
  if (recorded) {
    if (!crypt) {
      throw new BurrowError(
        'MANIFEST_WRONG_KEY',
        `missing key: the manifest was written with key ${fingerprint}`,
        {
          details: { manifestFingerprint: fingerprint },
        },
      );
    }
    if (!bytesEqual(recorded, crypt.fingerprint)) {
      const given = formatFingerprint(crypt.fingerprint);
      throw new BurrowError(
        'MANIFEST_WRONG_KEY',
        `wrong key: the manifest was written with key ${fingerprint}, the given key is ${given}`,
        { details: { manifestFingerprint: fingerprint, keyFingerprint: given } },
      );
    }
  }
  if (m.signature === null) return { signed: false, verified: false, fingerprint };
  if (!crypt) return { signed: true, verified: false, fingerprint };

  const expected = Buffer.from(manifestSignature(m, crypt), 'utf8');
  const actual = Buffer.from(m.signature, 'utf8');
  if (expected.byteLength !== actual.byteLength || !timingSafeEqual(expected, actual)) {
    throw new BurrowError(
      'MANIFEST_SIGNATURE_MISMATCH',
      'the manifest signature does not match its content and the key',
    );
  }
  return { signed: true, verified: true, fingerprint };
}

// ---------------------------------------------------------------------------------------------
// Per-file entries (pbs-formats §5.3)

function csumHex(csum: Uint8Array | string, what: string): string {
  if (typeof csum === 'string') {
    if (!HEX64_RE.test(csum)) {
      throw new BurrowError(
        'INVALID_DIGEST',
        `${what} is not 64 lowercase hex characters: ${JSON.stringify(csum.slice(0, 80))}`,
      );
    }
    return csum;
  }
  if (csum.byteLength !== 32) {
    throw new BurrowError('INVALID_DIGEST', `${what} must be 32 bytes, got ${csum.byteLength}`);
  }
  return toHex(csum);
}

function checkSize(size: number, what: string): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${what} must be a non-negative integer below 2^53, got ${size}`,
    );
  }
}

/** The entry for a `.blob` archive: size and SHA-256 of the whole encoded blob file, header included. */
export function blobFileInfo(
  filename: string,
  encodedBlobBytes: Uint8Array,
  cryptMode: CryptMode,
): FileInfo {
  checkArchiveName(filename);
  if (archiveTypeOf(filename) !== 'blob') {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `a blob archive name must end in .blob: ${JSON.stringify(filename)}`,
    );
  }
  const csum = createHash('sha256').update(encodedBlobBytes).digest('hex');
  return { filename, cryptMode, size: encodedBlobBytes.byteLength, csum };
}

/**
 * The entry for a `.fidx`/`.didx` archive: `size` is the image size (fixed) or the stream
 * length (dynamic), `csum` the index checksum from the index header.
 */
export function indexFileInfo(
  filename: string,
  index: { size: number; csum: Uint8Array | string },
  cryptMode: CryptMode,
): FileInfo {
  checkArchiveName(filename);
  if (archiveTypeOf(filename) === 'blob') {
    throw new BurrowError(
      'INVALID_ARCHIVE_NAME',
      `an index archive name must end in .fidx or .didx: ${JSON.stringify(filename)}`,
    );
  }
  checkSize(index.size, 'index size');
  return { filename, cryptMode, size: index.size, csum: csumHex(index.csum, 'index csum') };
}

/** The entry named `name` (the first one, as PBS looks it up); NOT_FOUND when absent. */
export function lookupFile(m: BackupManifest, name: string): FileInfo {
  const info = m.files.find((f) => f.filename === name);
  if (!info) {
    throw new BurrowError('NOT_FOUND', `the manifest does not list ${JSON.stringify(name)}`, {
      details: { filename: name },
    });
  }
  return info;
}

/** Check a file against its manifest entry: SIZE_MISMATCH, then DIGEST_MISMATCH. */
export function verifyFile(
  m: BackupManifest,
  name: string,
  size: number,
  csum: Uint8Array | string,
): void {
  const info = lookupFile(m, name);
  if (size !== info.size) {
    throw new BurrowError(
      'SIZE_MISMATCH',
      `${name}: size ${size} does not match the manifest (${info.size})`,
      {
        details: { filename: name, expected: info.size, actual: size },
      },
    );
  }
  const actual = csumHex(csum, `${name} checksum`);
  if (actual !== info.csum) {
    throw new BurrowError('DIGEST_MISMATCH', `${name}: checksum does not match the manifest`, {
      details: { filename: name, expected: info.csum, actual },
    });
  }
}
