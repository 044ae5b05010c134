/**
 * What `burrow debug inspect` reports about one datastore file: a blob, a chunk or an index,
 * told apart by magic number rather than by name. Damage is reported as data (crc.ok = false,
 * digest.ok = false) so the caller can print everything it knows before failing.
 */
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import type { CryptConfig } from '../crypto/crypt-config.js';
import {
  blobCrc,
  computeChunkDigest,
  decodeBlob,
  isEncryptedKind,
  parseBlobHeader,
  type BlobKind,
} from '../format/data-blob.js';
import { indexKindOfMagic } from '../format/index-common.js';
import { ENCRYPTED_BLOB_HEADER_SIZE, MAX_BLOB_SIZE } from '../format/magic.js';
import { BurrowError, withFile } from '../lib/errors.js';
import { bytesEqual, toHex } from '../lib/bytes.js';
import { formatBackupTime } from '../types/backup.js';
import { readIndexFile } from './index-file.js';

export interface ChecksumReport {
  stored: string;
  computed: string;
  ok: boolean;
}

export interface BlobReport {
  path: string;
  kind: 'blob';
  blobKind: BlobKind;
  encrypted: boolean;
  encodedSize: number;
  crc: ChecksumReport;
  /** Size of the decoded content, when it could be decoded. */
  decodedSize?: number;
  /** Why the content could not be decoded (no key, wrong key, damaged payload). */
  decodeError?: { code: string; message: string };
}

export interface ChunkReport extends BlobReport {
  /** Digest check against the file name; absent when the content could not be decoded. */
  digest?: ChecksumReport;
}

export interface IndexReport {
  path: string;
  kind: 'fixed-index' | 'dynamic-index';
  uuid: string;
  ctime: number;
  ctimeText: string;
  csum: ChecksumReport;
  chunkCount: number;
  /** Archive size: the image size (fixed) or the end of the last chunk (dynamic). */
  size: number;
  /** Fixed indexes only. */
  chunkSize?: number;
}

export type FileReport = BlobReport | IndexReport;

export interface InspectOptions {
  crypt?: CryptConfig;
}

export interface Inspected<R> {
  report: R;
  /** The decoded blob content, when it could be decoded. */
  decoded?: Uint8Array;
}

const hex32 = (n: number): string => n.toString(16).padStart(8, '0');

async function readHead(path: string, length: number): Promise<Uint8Array> {
  const handle = await open(path, 'r');
  try {
    const buffer = new Uint8Array(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

async function readBlobFile(path: string): Promise<Uint8Array> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    // A blob holds at most 128 MiB of plaintext; stored uncompressed it is that plus a header.
    const limit = MAX_BLOB_SIZE + ENCRYPTED_BLOB_HEADER_SIZE;
    if (size > limit) {
      throw new BurrowError(
        'BLOB_TOO_LARGE',
        `file is ${size} bytes, larger than any DataBlob (${limit} bytes)`,
      );
    }
    const buffer = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await handle.read(buffer, done, size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buffer.subarray(0, done);
  } finally {
    await handle.close();
  }
}

function inspectBlobBytes(
  path: string,
  raw: Uint8Array,
  options: InspectOptions,
): Inspected<BlobReport> {
  const header = parseBlobHeader(raw);
  const crc = blobCrc(raw);
  const report: BlobReport = {
    path,
    kind: 'blob',
    blobKind: header.kind,
    encrypted: isEncryptedKind(header.kind),
    encodedSize: raw.byteLength,
    crc: {
      stored: hex32(crc.stored),
      computed: hex32(crc.computed),
      ok: crc.stored === crc.computed,
    },
  };
  if (!report.crc.ok) return { report };
  try {
    const decoded = decodeBlob(raw, { crypt: options.crypt, checkCrc: false });
    report.decodedSize = decoded.byteLength;
    return { report, decoded };
  } catch (error) {
    if (!(error instanceof BurrowError)) throw error;
    report.decodeError = { code: error.code, message: error.message };
    return { report };
  }
}

/** Inspect a `.blob`, `.fidx` or `.didx` file (the kind comes from the magic number). */
export async function inspectFile(
  path: string,
  options: InspectOptions = {},
): Promise<Inspected<FileReport>> {
  try {
    const head = await readHead(path, 8);
    if (indexKindOfMagic(head) !== undefined) {
      const file = await readIndexFile(path);
      const index = file.index;
      const computed = index.computeCsum();
      const report: IndexReport = {
        path,
        kind: file.kind === 'fixed' ? 'fixed-index' : 'dynamic-index',
        uuid: formatUuid(index.uuid),
        ctime: index.ctime,
        ctimeText: index.ctime >= 1 ? formatBackupTime(index.ctime) : String(index.ctime),
        csum: {
          stored: toHex(index.indexCsum),
          computed: toHex(computed),
          ok: bytesEqual(index.indexCsum, computed),
        },
        chunkCount: index.count,
        size: index.size,
      };
      if (file.kind === 'fixed') report.chunkSize = file.index.chunkSize;
      return { report };
    }
    return inspectBlobBytes(path, await readBlobFile(path), options);
  } catch (error) {
    throw withFile(error, path);
  }
}

/**
 * Inspect a chunk file: a blob whose name is its digest (possibly with a `.N.bad` suffix left by
 * verify). The digest check needs the decoded content, so an encrypted chunk needs the key.
 */
export async function inspectChunk(
  path: string,
  options: InspectOptions = {},
): Promise<Inspected<ChunkReport>> {
  const name = basename(path);
  const match = /^([0-9a-f]{64})(?:\.\d+\.bad)?$/.exec(name);
  if (!match) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `${path}: a chunk file is named after its digest (64 lowercase hex characters), not ${JSON.stringify(name)}`,
    );
  }
  const expected = match[1]!;
  try {
    const { report, decoded } = inspectBlobBytes(path, await readBlobFile(path), options);
    const chunkReport: ChunkReport = report;
    if (decoded !== undefined) {
      const computed = toHex(
        computeChunkDigest(decoded, report.encrypted ? options.crypt : undefined),
      );
      chunkReport.digest = { stored: expected, computed, ok: computed === expected };
    }
    return { report: chunkReport, decoded };
  } catch (error) {
    throw withFile(error, path);
  }
}

function formatUuid(bytes: Uint8Array): string {
  const h = toHex(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The error to end with when a report shows damage (after the report has been printed). */
export function damageOf(report: FileReport | ChunkReport): BurrowError | undefined {
  if (report.kind === 'blob') {
    if (!report.crc.ok) {
      return new BurrowError(
        'BLOB_CRC_MISMATCH',
        `${report.path}: CRC32 mismatch (stored ${report.crc.stored}, computed ${report.crc.computed})`,
      );
    }
    const digest = (report as ChunkReport).digest;
    if (digest && !digest.ok) {
      return new BurrowError(
        'DIGEST_MISMATCH',
        `${report.path}: chunk content hashes to ${digest.computed}, not to its name`,
      );
    }
    return undefined;
  }
  if (!report.csum.ok) {
    return new BurrowError(
      'INDEX_CSUM_MISMATCH',
      `${report.path}: index checksum mismatch (stored ${report.csum.stored}, computed ${report.csum.computed})`,
    );
  }
  return undefined;
}
