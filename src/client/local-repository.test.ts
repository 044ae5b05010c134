import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import { type StoreFixture, makeStore } from '../../test/helpers/store-fixture.js';
import { splitIntoChunks } from '../chunker/buzhash.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import type { DataStore } from '../datastore/datastore.js';
import { decodeBlob, encodeBlob } from '../format/data-blob.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import type { FileInfo } from '../format/manifest.js';
import {
  MANIFEST_BLOB_NAME,
  indexFileInfo,
  newManifest,
  parseManifest,
  serializeManifestBytes,
} from '../format/manifest.js';
import { toHex } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import { parseAuthid } from '../types/auth.js';
import type { BackupGroup } from '../types/backup.js';
import { ROOT_NAMESPACE, backupGroup } from '../types/backup.js';
import type { BackupReader, BackupWriter } from './backup-writer.js';
import { ChunkWorkerPool, uploadChunks, uploadFixed } from './chunk-pipeline.js';
import { openLocalBackupReader, openLocalBackupWriter } from './local-repository.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const FIXED = 4 * MiB;
const ROOT = parseAuthid('root@pam');
const ZERO_DIGEST_HEX = 'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8';
const SPEC_ENC_KEY = Buffer.from(
  '28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e',
  'hex',
);

let fx: StoreFixture;
let store: DataStore;
let pool: ChunkWorkerPool;

beforeAll(async () => {
  fx = await makeStore({ name: 'uploadstore' });
  store = fx.store;
  pool = ChunkWorkerPool.create(2);
});

afterAll(async () => {
  await pool?.close();
  await fx?.cleanup();
});

let groupSeq = 0;
const nextGroup = (): BackupGroup => backupGroup(ROOT_NAMESPACE, 'host', `up${++groupSeq}`);

function pseudoRandom(size: number, seed: number): Uint8Array {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]));
}

const sha256 = (d: Uint8Array): string => createHash('sha256').update(d).digest('hex');

/** `trustChunks`: as the CLI opens it, the pipeline's workers then write new chunks' files. */
function open(group: BackupGroup, time: number, trustChunks = false): Promise<BackupWriter> {
  return openLocalBackupWriter(store, {
    ns: group.ns,
    group,
    backupTime: time,
    authId: ROOT,
    trustChunks,
  });
}

/** Upload the manifest (required before finish), finish and close. */
async function finishWith(writer: BackupWriter, files: FileInfo[]): Promise<void> {
  const snap = writer.snapshot;
  const manifest = newManifest(snap.group.type, snap.group.id, snap.time);
  manifest.files.push(...files);
  await writer.uploadBlob(MANIFEST_BLOB_NAME, encodeBlob(serializeManifestBytes(manifest)));
  await writer.finish();
}

/** Every chunk of a dynamic index read back through the reader, decoded and concatenated. */
async function restoreDynamic(
  reader: BackupReader,
  name: string,
  crypt?: CryptConfig,
): Promise<Uint8Array> {
  const index = DynamicIndex.parse(await reader.download(name));
  const parts: Uint8Array[] = [];
  for (let i = 0; i < index.count; i++) {
    const digest = index.digest(i);
    parts.push(decodeBlob(await reader.chunk(digest), { crypt, expectedDigest: digest }));
  }
  return Buffer.concat(parts);
}

describe('local BackupWriter/BackupReader with the chunk pipeline', () => {
  it('backs up a stream, reads it back, and reuses the previous snapshot’s chunks', async () => {
    const group = nextGroup();
    const data = pseudoRandom(2 * MiB, 1);
    const chunks = [...splitIntoChunks([data], 64 * KiB)];

    // First backup: no previous snapshot.
    const w1 = await open(group, 100);
    let r1;
    try {
      expect(await w1.previousBackupTime()).toBeUndefined();
      expect(await w1.downloadPrevious('data.pxar.didx')).toBeUndefined();
      const wid = await w1.createIndex('dynamic', 'data.pxar.didx');
      r1 = await uploadChunks(
        chunks.map((c) => c.slice()),
        { writer: w1, wid, kind: 'dynamic', known: new Set(), pool },
      );
      expect(r1).toMatchObject({
        size: data.byteLength,
        chunkCount: chunks.length,
        reusedChunks: 0,
      });
      await finishWith(w1, [indexFileInfo('data.pxar.didx', r1, 'none')]);
    } finally {
      await w1.close();
    }

    const reader = await openLocalBackupReader(store, w1.snapshot);
    try {
      const raw = await reader.download('data.pxar.didx');
      const index = DynamicIndex.parse(raw);
      expect(toHex(index.indexCsum)).toBe(toHex(r1.csum));
      expect(index.size).toBe(data.byteLength);
      expect(sha256(await restoreDynamic(reader, 'data.pxar.didx'))).toBe(sha256(data));
      const manifest = parseManifest(decodeBlob(await reader.download(MANIFEST_BLOB_NAME)));
      expect(manifest.files.map((f) => f.filename)).toEqual(['data.pxar.didx']);
    } finally {
      await reader.close();
    }

    // Second backup of slightly changed data: only the chunks around the change are new.
    const changed = data.slice();
    changed.fill(0x55, MiB, MiB + 100);
    const changedChunks = [...splitIntoChunks([changed], 64 * KiB)];
    const w2 = await open(group, 200);
    let r2;
    try {
      expect(await w2.previousBackupTime()).toBe(100);
      expect(await w2.downloadPrevious('other.pxar.didx')).toBeUndefined();
      const previous = DynamicIndex.parse((await w2.downloadPrevious('data.pxar.didx'))!);
      const known = new Set<string>();
      for (let i = 0; i < previous.count; i++) known.add(toHex(previous.digest(i)));
      const wid = await w2.createIndex('dynamic', 'data.pxar.didx');
      r2 = await uploadChunks(
        changedChunks.map((c) => c.slice()),
        { writer: w2, wid, kind: 'dynamic', known, pool },
      );
      expect(r2.uploadedChunks).toBeGreaterThan(0);
      expect(r2.uploadedChunks).toBeLessThanOrEqual(3);
      expect(r2.reusedChunks).toBe(changedChunks.length - r2.uploadedChunks);
      await finishWith(w2, [indexFileInfo('data.pxar.didx', r2, 'none')]);
    } finally {
      await w2.close();
    }
    const reader2 = await openLocalBackupReader(store, w2.snapshot);
    try {
      expect(sha256(await restoreDynamic(reader2, 'data.pxar.didx'))).toBe(sha256(changed));
      // Chunks of an index not downloaded in this reader session are refused (§6).
      expect(await rejectionCodeOf(reader2.chunk(new Uint8Array(32)))).toBe('CHUNK_NOT_ALLOWED');
    } finally {
      await reader2.close();
    }
  });

  it('backs up an encrypted image with zero chunks into a fixed index', async () => {
    const group = nextGroup();
    const crypt = new CryptConfig(SPEC_ENC_KEY);
    const image = [new Uint8Array(FIXED), pseudoRandom(FIXED, 2), new Uint8Array(FIXED)];
    const tail = pseudoRandom(5000, 3);
    image.push(tail);
    const size = 3 * FIXED + tail.byteLength;
    const w = await open(group, 100);
    let result;
    try {
      const wid = await w.createIndex('fixed', 'disk.img.fidx', size);
      result = await uploadFixed(
        image.map((c) => c.slice()),
        { writer: w, wid, known: new Set(), pool, crypt },
      );
      expect(result).toMatchObject({ size, chunkCount: 4, zeroChunks: 2, uploadedChunks: 3 });
      await finishWith(w, [indexFileInfo('disk.img.fidx', result, 'encrypt')]);
    } finally {
      await w.close();
    }
    const reader = await openLocalBackupReader(store, w.snapshot);
    try {
      const index = FixedIndex.parse(await reader.download('disk.img.fidx'));
      expect(index.size).toBe(size);
      expect(toHex(index.indexCsum)).toBe(toHex(result.csum));
      const digests = Array.from({ length: index.count }, (_, i) => index.digest(i));
      // Encrypted: the zero chunk's digest is keyed, not the plain constant.
      expect(toHex(digests[0]!)).not.toBe(ZERO_DIGEST_HEX);
      expect(toHex(digests[2]!)).toBe(toHex(digests[0]!));
      const restoredBlob = await reader.chunk(digests[1]!);
      const restored: Uint8Array[] = [];
      for (const digest of digests) {
        restored.push(decodeBlob(await reader.chunk(digest), { crypt, expectedDigest: digest }));
      }
      expect(sha256(Buffer.concat(restored))).toBe(sha256(Buffer.concat(image)));
      // Without the key the stored chunks cannot be read.
      expect(() => decodeBlob(restoredBlob)).toThrow(/encrypted/);
    } finally {
      await reader.close();
    }
  });

  it('a failed upload leaves no snapshot behind once the writer is closed', async () => {
    const group = nextGroup();
    const w = await open(group, 100);
    try {
      const wid = await w.createIndex('dynamic', 'x.pxar.didx');
      // A writer id that does not exist: the session's own error comes through the pipeline.
      const promise = uploadChunks([pseudoRandom(1000, 4)], {
        writer: w,
        wid: wid + 1,
        kind: 'dynamic',
        known: new Set(),
        pool,
      });
      expect(await rejectionCodeOf(promise)).toBe('BACKUP_SESSION_INVALID');
      expect(await rejectionCodeOf(w.createIndex('dynamic', 'y.pxar.didx', 5))).toBe(
        'INVALID_ARGUMENT',
      );
    } finally {
      await w.close();
    }
    expect(existsSync(store.snapshotPath(w.snapshot))).toBe(false);
    expect(pool.pendingJobs).toBe(0);
  });
});

describe('chunk files written by the workers (a trusted local session)', () => {
  /** A writer that counts how each new chunk reaches the store. */
  function counting(inner: BackupWriter): { writer: BackupWriter; calls: Map<string, number> } {
    const calls = new Map<string, number>();
    const writer = new Proxy(inner, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          calls.set(String(name), (calls.get(String(name)) ?? 0) + 1);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    return { writer, calls };
  }

  /** Names with `.tmp_` in the prefix directories of these chunks. */
  function tempFilesBeside(chunks: Uint8Array[]): string[] {
    const dirs = new Set(chunks.map((c) => dirname(store.chunkStore.chunkPath(sha256Bytes(c)))));
    return [...dirs].flatMap((dir) => readdirSync(dir).filter((n) => n.includes('.tmp_')));
  }

  /** The snapshot's data.pxar.didx, read back through a reader, is `stream`. */
  async function expectReadsBack(snapshot: BackupWriter['snapshot'], stream: Uint8Array[]) {
    const reader = await openLocalBackupReader(store, snapshot);
    try {
      expect(sha256(await restoreDynamic(reader, 'data.pxar.didx'))).toBe(
        sha256(Buffer.concat(stream)),
      );
    } finally {
      await reader.close();
    }
  }

  const sha256Bytes = (d: Uint8Array): Uint8Array =>
    new Uint8Array(createHash('sha256').update(d).digest());

  /** Uploads copies of `chunks` as a new data.pxar.didx of `writer`. */
  async function uploadStream(
    writer: BackupWriter,
    chunks: Uint8Array[],
    known: Set<string>,
    pool: ChunkWorkerPool,
  ): ReturnType<typeof uploadChunks> {
    const wid = await writer.createIndex('dynamic', 'data.pxar.didx');
    return uploadChunks(
      chunks.map((c) => c.slice()),
      { writer, wid, kind: 'dynamic', known, pool },
    );
  }

  it('stores every new chunk through a worker-written file; repeats and stored chunks write none', async () => {
    // Every job on a worker thread: none handled on this one.
    const workers = ChunkWorkerPool.create(2, 0);
    const group = nextGroup();
    const stored = pseudoRandom(100 * KiB, 70);
    // Another group already holds `stored`.
    const w0 = await open(nextGroup(), 100, true);
    try {
      await uploadStream(w0, [stored], new Set(), workers);
    } finally {
      await w0.close();
    }
    const fresh = Array.from({ length: 24 }, (_, i) => pseudoRandom(64 * KiB + i, 80 + i));
    const stream = [...fresh, fresh[0]!, stored, fresh[5]!];
    const inner = await open(group, 100, true);
    const { writer, calls } = counting(inner);
    try {
      const result = await uploadStream(writer, stream, new Set(), workers);
      expect(result).toMatchObject({ chunkCount: stream.length, uploadedChunks: fresh.length });
      expect(calls.get('uploadChunkFile')).toBe(fresh.length);
      expect(calls.get('uploadChunk')).toBeUndefined();
      await finishWith(writer, [indexFileInfo('data.pxar.didx', result, 'none')]);
    } finally {
      await writer.close();
      await workers.close();
    }
    expect(tempFilesBeside(stream)).toEqual([]);
    for (const chunk of fresh) {
      const path = store.chunkStore.chunkPath(sha256Bytes(chunk));
      expect(statSync(path).mode & 0o777).toBe(0o644);
    }
    await expectReadsBack(inner.snapshot, stream);
  });

  it('writes the new chunks of a mostly known stream through files too (digest first, then encode)', async () => {
    const workers = ChunkWorkerPool.create(2, 0);
    const old = Array.from({ length: 20 }, (_, i) => pseudoRandom(64 * KiB + i, 300 + i));
    const added = Array.from({ length: 5 }, (_, i) => pseudoRandom(64 * KiB + i, 400 + i));
    const stream = [...old.slice(0, 10), ...added, ...old.slice(10)];
    const group = nextGroup();
    const w0 = await open(group, 100, true);
    try {
      const r0 = await uploadStream(w0, old, new Set(), workers);
      await finishWith(w0, [indexFileInfo('data.pxar.didx', r0, 'none')]);
    } finally {
      await w0.close();
    }
    const inner = await open(group, 200, true);
    const { writer, calls } = counting(inner);
    try {
      // What the previous snapshot gives: every old chunk is known, so digests come first.
      const previous = DynamicIndex.parse((await writer.downloadPrevious('data.pxar.didx'))!);
      const known = new Set<string>();
      for (let i = 0; i < previous.count; i++) known.add(toHex(previous.digest(i)));
      expect(known.size).toBe(old.length);
      const result = await uploadStream(writer, stream, known, workers);
      expect(result).toMatchObject({ uploadedChunks: added.length, reusedChunks: old.length });
      expect(calls.get('uploadChunkFile')).toBe(added.length);
      expect(calls.get('uploadChunk')).toBeUndefined();
      await finishWith(writer, [indexFileInfo('data.pxar.didx', result, 'none')]);
    } finally {
      await writer.close();
      await workers.close();
    }
    expect(tempFilesBeside(stream)).toEqual([]);
    await expectReadsBack(inner.snapshot, stream);
  });

  it('an upload that fails midway leaves no temporary file and no snapshot', async () => {
    const workers = ChunkWorkerPool.create(2, 0);
    const chunks = Array.from({ length: 30 }, (_, i) => pseudoRandom(64 * KiB, 200 + i));
    const inner = await open(nextGroup(), 100, true);
    let files = 0;
    // The fourth chunk file fails after the writer took it, as a full disk would.
    const writer = new Proxy(inner, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (name !== 'uploadChunkFile') {
          return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
        }
        return async (...args: Parameters<NonNullable<BackupWriter['uploadChunkFile']>>) => {
          if (++files === 4) throw new BurrowError('IO_ERROR', 'no space left (test)');
          return inner.uploadChunkFile!(...args);
        };
      },
    });
    try {
      expect(await rejectionCodeOf(uploadStream(writer, chunks, new Set(), workers))).toBe(
        'IO_ERROR',
      );
    } finally {
      await writer.close();
      await workers.close();
    }
    expect(files).toBeGreaterThanOrEqual(4);
    expect(tempFilesBeside(chunks)).toEqual([]);
    expect(existsSync(store.snapshotPath(inner.snapshot))).toBe(false);
  });
});
