/**
 * The manifest side of a backup (pbs-protocol §5.4, §5.5, §9.5; pbs-formats §5.3–§5.5): the
 * previous snapshot's manifest as the source of known chunks, the previous version of an index
 * archive checked against it, and the new manifest with its signature and the RSA-wrapped key.
 *
 * Reuse is an optimisation, so nothing about the previous snapshot fails a backup: a manifest
 * that does not parse, was written with another key or fails its signature, and an index that does
 * not match its manifest entry, only mean "no known chunks" (with a warning), as in PBS's client.
 */
import type { CryptConfig } from '../crypto/crypt-config.js';
import { wrapKeyWithMasterKey } from '../crypto/master-key.js';
import { plainKeyConfig } from '../crypto/key-config.js';
import { decodeBlob, encodeBlob } from '../format/data-blob.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import type { BackupManifest, FileInfo } from '../format/manifest.js';
import {
  ENCRYPTED_KEY_BLOB_NAME,
  MANIFEST_BLOB_NAME,
  archiveTypeOf,
  newManifest,
  parseManifest,
  serializeManifestBytes,
  signManifest,
  verifyFile,
  verifyManifest,
} from '../format/manifest.js';
import { toHex } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import type { BackupDir } from '../types/backup.js';
import type { CryptMode } from '../types/crypt-mode.js';
import type { BackupWriter } from './backup-writer.js';

export type Warn = (message: string) => void;

const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);

/**
 * The previous snapshot's manifest when it may serve for reuse: it exists, parses, and passes
 * PBS's key check for the current key (`crypt`, undefined without a key): a recorded fingerprint
 * must be the current key's, and a signature must verify. Otherwise undefined, with a warning
 * when there was a manifest that could not be used.
 */
export async function loadPreviousManifest(
  writer: BackupWriter,
  crypt: CryptConfig | undefined,
  warn: Warn,
): Promise<BackupManifest | undefined> {
  try {
    const raw = await writer.downloadPrevious(MANIFEST_BLOB_NAME);
    if (raw === undefined) return undefined;
    const manifest = parseManifest(decodeBlob(raw));
    verifyManifest(manifest, crypt);
    return manifest;
  } catch (error) {
    warn(`cannot reuse the previous snapshot's chunks: ${messageOf(error)}`);
    return undefined;
  }
}

/** Whether chunks of an archive written in `previous` mode may stand in for chunks of `current` mode. */
export function cryptModesCompatible(previous: CryptMode, current: CryptMode): boolean {
  // The manifest's crypt mode says which kind of chunks an index references (pbs-formats §5.3):
  // encrypted for `encrypt`, plain for `none` and `sign-only`.
  return (previous === 'encrypt') === (current === 'encrypt');
}

/** A previous index archive, checked against the previous manifest. */
export type PreviousIndex =
  { kind: 'dynamic'; index: DynamicIndex } | { kind: 'fixed'; index: FixedIndex };

/**
 * Downloads the previous version of index archive `name` through the writer (which registers its
 * chunks as known in the session, pbs-protocol §5.4), checks its size and csum against the
 * previous manifest (the index header is not trusted), and adds its digests to `known`.
 * undefined when there is nothing usable.
 */
export async function downloadPreviousIndex(
  writer: BackupWriter,
  previous: BackupManifest | undefined,
  name: string,
  cryptMode: CryptMode,
  known: Set<string>,
  warn: Warn,
): Promise<PreviousIndex | undefined> {
  if (previous === undefined) return undefined;
  const entry = previous.files.find((f) => f.filename === name);
  if (entry === undefined || !cryptModesCompatible(entry.cryptMode, cryptMode)) return undefined;
  const type = archiveTypeOf(name);
  if (type === 'blob') return undefined;
  let raw: Uint8Array | undefined;
  try {
    raw = await writer.downloadPrevious(name);
  } catch (error) {
    warn(`cannot download the previous ${name}: ${messageOf(error)}`);
    return undefined;
  }
  if (raw === undefined) return undefined;
  try {
    const parsed: PreviousIndex =
      type === 'dynamic'
        ? { kind: 'dynamic', index: DynamicIndex.parse(raw) }
        : { kind: 'fixed', index: FixedIndex.parse(raw) };
    verifyFile(previous, name, parsed.index.size, parsed.index.computeCsum());
    for (const chunk of parsed.index) known.add(toHex(chunk.digest));
    return parsed;
  } catch (error) {
    warn(`not reusing the previous ${name}: ${messageOf(error)}`);
    return undefined;
  }
}

export interface ManifestResult {
  manifest: BackupManifest;
  /** The encoded `index.json.blob`: compressed, never encrypted. */
  blob: Uint8Array;
}

/**
 * The manifest of a new snapshot: `files` in upload order; signed (and carrying the key
 * fingerprint) in encrypt and sign-only mode, which need `crypt`.
 */
export function buildManifest(
  snapshot: BackupDir,
  files: readonly FileInfo[],
  cryptMode: CryptMode,
  crypt: CryptConfig | undefined,
): ManifestResult {
  let manifest = newManifest(snapshot.group.type, snapshot.group.id, snapshot.time);
  manifest.files = files.map((f) => ({ ...f }));
  if (cryptMode !== 'none') {
    if (crypt === undefined)
      throw new BurrowError('INVALID_ARGUMENT', `crypt mode ${cryptMode} needs a key`);
    manifest = signManifest(manifest, crypt);
  }
  return { manifest, blob: encodeBlob(serializeManifestBytes(manifest), { compress: true }) };
}

/**
 * `rsa-encrypted.key.blob`: the key as a plain KeyConfig (kdf null), RSA-encrypted to the master
 * public key, in an uncompressed unencrypted blob (pbs-protocol §7.2). `created` keeps the key
 * file's creation time, as PBS does; without it the wrapped copy is dated now.
 */
export async function encryptedKeyBlob(
  crypt: CryptConfig,
  masterPublicKeyPem: string,
  created?: number | string,
): Promise<{ name: string; blob: Uint8Array }> {
  const config = await plainKeyConfig(crypt.encKey, created === undefined ? {} : { created });
  const wrapped = wrapKeyWithMasterKey(config, masterPublicKeyPem);
  return { name: ENCRYPTED_KEY_BLOB_NAME, blob: encodeBlob(wrapped, { compress: false }) };
}
