/**
 * Real datastores in temp dirs for the GC and verify tests (and the datastore benchmark): a store
 * made by DataStore.create with its own BurrowDirs, and snapshots written the way a backup
 * writes them (chunks inserted, indexes through the index writers, blobs and the manifest through
 * the store).
 */
import { mkdtempSync, statSync, utimesSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CryptConfig } from '../../src/crypto/crypt-config.js';
import type { Clock } from '../../src/lib/clock.js';
import type { BurrowDirs } from '../../src/lib/dirs.js';
import { encodeBlob, computeChunkDigest } from '../../src/format/data-blob.js';
import type { BackupManifest, FileInfo } from '../../src/format/manifest.js';
import {
  MANIFEST_BLOB_NAME,
  blobFileInfo,
  indexFileInfo,
  newManifest,
  serializeManifestBytes,
} from '../../src/format/manifest.js';
import { DataStore } from '../../src/datastore/datastore.js';
import { DynamicIndexWriter, FixedIndexWriter } from '../../src/datastore/index-writer.js';
import { parseAuthid } from '../../src/types/auth.js';
import type { BackupDir } from '../../src/types/backup.js';
import type { CryptMode } from '../../src/types/crypt-mode.js';

export interface StoreFixture {
  root: string;
  dirs: BurrowDirs;
  store: DataStore;
  cleanup(): Promise<void>;
}

export interface MakeStoreOptions {
  name?: string;
  /** Default `gc-atime-safety-check=false`, so counters are not disturbed by the check's chunk. */
  tuning?: string;
  clock?: Clock;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Where fixtures live: /dev/shm when there is one. A store has 65536 prefix directories, and on a
 * busy disk creating and removing them takes seconds; tmpfs keeps atimes exactly like ext4 for
 * what these tests do (explicit utimensat), so nothing tested depends on the choice.
 */
export function fixtureTmpDir(): string {
  try {
    if (statSync('/dev/shm').isDirectory()) return '/dev/shm';
  } catch {
    // no tmpfs: the usual temp dir
  }
  return tmpdir();
}

/** A fresh configured datastore `<root>/store` with config, run and log dirs under `<root>`. */
export async function makeStore(options: MakeStoreOptions = {}): Promise<StoreFixture> {
  const root = mkdtempSync(join(fixtureTmpDir(), 'burrow-gcv-'));
  const dirs: BurrowDirs = {
    configDir: join(root, 'config'),
    runDir: join(root, 'run'),
    logDir: join(root, 'log'),
  };
  await mkdir(dirs.configDir, { recursive: true });
  const store = await DataStore.create(options.name ?? 'teststore', join(root, 'store'), {
    dirs,
    tuning: options.tuning ?? 'gc-atime-safety-check=false',
    ...(options.clock !== undefined ? { clock: options.clock } : {}),
    ...(options.sleep !== undefined ? { sleep: options.sleep } : {}),
  });
  return {
    root,
    dirs,
    store,
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

export interface TestChunk {
  data: Uint8Array;
  digest: Uint8Array;
  blob: Uint8Array;
}

/** A chunk of `data`, uncompressed by default so its file size is exactly 12 + data length. */
export function makeChunk(
  data: Uint8Array,
  options: { compress?: boolean; crypt?: CryptConfig } = {},
): TestChunk {
  const blob = encodeBlob(data, {
    compress: options.compress ?? false,
    ...(options.crypt !== undefined ? { crypt: options.crypt } : {}),
  });
  return { data, digest: computeChunkDigest(data, options.crypt), blob };
}

/** `length` bytes derived from `seed` (distinct seeds give distinct chunks). */
export function bytesOf(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761 + 12345) >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

export type ArchiveSpec =
  | { kind: 'didx'; name: string; chunks: TestChunk[]; cryptMode?: CryptMode; insert?: boolean }
  | {
      kind: 'fidx';
      name: string;
      chunks: TestChunk[];
      chunkSize: number;
      cryptMode?: CryptMode;
      insert?: boolean;
    }
  | { kind: 'blob'; name: string; raw: Uint8Array; cryptMode?: CryptMode };

const OWNER = parseAuthid('root@pam');

/**
 * Write a finished snapshot: group (created if needed, owner root@pam), snapshot dir, each
 * archive (its chunks inserted unless `insert: false`), then the manifest listing them.
 */
export async function writeSnapshot(
  store: DataStore,
  dir: BackupDir,
  archives: ArchiveSpec[],
): Promise<BackupManifest> {
  const { guard: groupGuard } = await store.createLockedBackupGroup(dir.group, OWNER);
  try {
    const { guard } = await store.createLockedBackupDir(dir);
    try {
      const files: FileInfo[] = [];
      for (const archive of archives) files.push(await writeArchive(store, dir, archive));
      const manifest = newManifest(dir.group.type, dir.group.id, dir.time);
      manifest.files = files;
      await store.writeBlob(dir, MANIFEST_BLOB_NAME, encodeBlob(serializeManifestBytes(manifest)));
      return manifest;
    } finally {
      await guard.release();
    }
  } finally {
    await groupGuard.release();
  }
}

async function writeArchive(
  store: DataStore,
  dir: BackupDir,
  archive: ArchiveSpec,
): Promise<FileInfo> {
  const cryptMode = archive.cryptMode ?? 'none';
  if (archive.kind === 'blob') {
    await store.writeBlob(dir, archive.name, archive.raw);
    return blobFileInfo(archive.name, archive.raw, cryptMode);
  }
  if (archive.insert !== false) {
    for (const chunk of archive.chunks) await store.insertChunk(chunk.blob, chunk.digest);
  }
  const path = store.archivePath(dir, archive.name);
  let end = 0;
  if (archive.kind === 'didx') {
    const writer = await DynamicIndexWriter.create(path, { syncLevel: 'none' });
    for (const chunk of archive.chunks) {
      end += chunk.data.byteLength;
      await writer.append(end, chunk.digest);
    }
    const result = await writer.close();
    return indexFileInfo(archive.name, { size: result.size, csum: result.csum }, cryptMode);
  }
  const size = archive.chunks.reduce((sum, c) => sum + c.data.byteLength, 0);
  const writer = await FixedIndexWriter.create(path, {
    size,
    chunkSize: archive.chunkSize,
    syncLevel: 'none',
  });
  for (const chunk of archive.chunks) {
    end += chunk.data.byteLength;
    await writer.addChunk(end, chunk.data.byteLength, chunk.digest);
  }
  const result = await writer.close();
  return indexFileInfo(archive.name, { size: result.size, csum: result.csum }, cryptMode);
}

/** Set a file's atime to `atimeSeconds` (epoch), keeping its mtime. */
export function setAtime(path: string, atimeSeconds: number): void {
  const st = statSync(path);
  utimesSync(path, atimeSeconds, st.mtime);
}

/** A file's atime in whole epoch seconds. */
export function atimeOf(path: string): number {
  return Math.floor(Number(statSync(path, { bigint: true }).atimeNs / 1_000_000_000n));
}

export function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}
