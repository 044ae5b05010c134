import { createCipheriv, createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../../test/helpers/error-code.js';
import { decodeBlob, encodeBlob } from '../../format/data-blob.js';
import type { BurrowError } from '../../lib/errors.js';
import {
  ROOT_NAMESPACE,
  backupDir,
  backupGroup,
  parseNamespace,
  type BackupGroup,
} from '../../types/backup.js';
import { ChunkWorkerPool, uploadChunks, uploadFixed } from '../chunk-pipeline.js';
import { PbsHttpClient } from './http-client.js';
import {
  MAX_APPEND_ENTRIES,
  openRemoteBackupReader,
  openRemoteBackupWriter,
  type RemoteBackupWriter,
} from './remote-repository.js';
import {
  FakePbs,
  makeTestCertificates,
  type TestCertificates,
} from '../../../test/helpers/test-pbs-server.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const TOKEN = 'backup@pbs!client';
const SECRET = 'b1a3c1d0-0000-4000-8000-000000000001';

const sha256 = (d: Uint8Array): Buffer => createHash('sha256').update(d).digest();
const hex = (d: Uint8Array): string => Buffer.from(d).toString('hex');

/** Deterministic pseudo-random bytes (AES-256-CTR keystream of a seed). */
function pseudoRandom(size: number, seed: number): Uint8Array {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]));
}

/** The dynamic index csum of §5.3, computed here from the chunks alone. */
function dynamicCsum(chunks: Uint8Array[]): string {
  const h = createHash('sha256');
  let end = 0;
  for (const c of chunks) {
    end += c.byteLength;
    const le = Buffer.alloc(8);
    le.writeBigUInt64LE(BigInt(end));
    h.update(le).update(sha256(c));
  }
  return h.digest('hex');
}

let certs: TestCertificates;
let pool: ChunkWorkerPool;
beforeAll(() => {
  certs = makeTestCertificates();
  pool = ChunkWorkerPool.create(2);
});
afterAll(async () => {
  certs.cleanup();
  await pool.close();
});

let fake: FakePbs;
let client: PbsHttpClient;
const writers: RemoteBackupWriter[] = [];
afterEach(async () => {
  for (const w of writers.splice(0)) await w.close();
  client?.close();
  await fake?.close();
});

async function setup(): Promise<void> {
  fake = await FakePbs.start({
    key: certs.selfKey,
    cert: certs.selfPem,
    tokens: { [TOKEN]: SECRET },
  });
  client = await PbsHttpClient.connect({
    host: '127.0.0.1',
    port: fake.port,
    authId: TOKEN,
    password: SECRET,
    fingerprint: certs.selfFingerprintOpenssl,
    cachePath: false,
    env: {},
  });
}

const group = (id = 'h1', ns = ROOT_NAMESPACE): BackupGroup => backupGroup(ns, 'host', id);

async function writer(backupTime: number, g = group()): Promise<RemoteBackupWriter> {
  const w = await openRemoteBackupWriter(client, { store: 'store1', group: g, backupTime });
  writers.push(w);
  return w;
}

/** 24 chunks of 8..40 KiB, with chunk 5 repeated at 17 (a repeat inside the stream). */
function makeChunks(seed: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < 24; i++)
    chunks.push(pseudoRandom(8 * KiB + ((i * 7919) % (32 * KiB)), seed * 100 + i));
  chunks[17] = chunks[5]!;
  return chunks;
}

const manifest = (time: number): Uint8Array =>
  encodeBlob(new TextEncoder().encode(JSON.stringify({ 'backup-time': time, files: [] })));

describe('remote backup and restore', () => {
  it('backs up through the pipeline, reuses the previous index, and restores chunks', async () => {
    await setup();
    const chunks = makeChunks(1);
    const w1 = await writer(1000);
    expect(w1.snapshot).toEqual(backupDir(group(), 1000));
    expect(await w1.previousBackupTime()).toBeUndefined();
    expect(await w1.downloadPrevious('index.json.blob')).toBeUndefined();
    const wid = await w1.createIndex('dynamic', 'data.pxar.didx');
    const r1 = await uploadChunks(chunks, {
      writer: w1,
      wid,
      kind: 'dynamic',
      known: new Set(),
      pool,
      transferChunks: false,
    });
    expect(hex(r1.csum)).toBe(dynamicCsum(chunks));
    expect(r1.uploadedChunks).toBe(23);
    // An image: one all-zero 4 MiB chunk and a short tail.
    const image = [new Uint8Array(4 * MiB), pseudoRandom(100 * KiB, 9)];
    const fid = await w1.createIndex('fixed', 'disk.img.fidx', 4 * MiB + 100 * KiB);
    const r2 = await uploadFixed(image, {
      writer: w1,
      wid: fid,
      known: new Set(),
      pool,
      transferChunks: false,
    });
    expect(r2.chunkCount).toBe(2);
    const m1 = manifest(1000);
    await w1.uploadBlob('index.json.blob', m1);
    await w1.finish();
    expect(w1.finished).toBe(true);
    await w1.close();
    expect(fake.aborted).toEqual([]);
    expect(fake.groups.get('host/h1')?.map((s) => s.time)).toEqual([1000]);
    // The server stored exactly the distinct chunks, under their SHA-256.
    const distinct = new Set([...chunks, ...image].map((c) => hex(sha256(c))));
    expect(new Set(fake.chunks.keys())).toEqual(distinct);

    // Incremental: the previous index registers its chunks; only the new chunk is uploaded.
    const w2 = await writer(2000);
    expect(await w2.previousBackupTime()).toBe(1000);
    expect(Buffer.from((await w2.downloadPrevious('index.json.blob'))!)).toEqual(Buffer.from(m1));
    expect(await w2.downloadPrevious('missing.didx')).toBeUndefined();
    const previous = await w2.downloadPrevious('data.pxar.didx');
    expect(previous).toBeInstanceOf(Uint8Array);
    const known = new Set(chunks.map((c) => hex(sha256(c))));
    const next = [...chunks, pseudoRandom(12 * KiB, 77)];
    const wid2 = await w2.createIndex('dynamic', 'data.pxar.didx');
    const r3 = await uploadChunks(next, {
      writer: w2,
      wid: wid2,
      kind: 'dynamic',
      known,
      pool,
      transferChunks: false,
    });
    expect([r3.uploadedChunks, r3.reusedChunks]).toEqual([1, 24]);
    expect(hex(r3.csum)).toBe(dynamicCsum(next));
    await w2.uploadBlob('index.json.blob', manifest(2000));
    await w2.finish();
    await w2.close();
    const session2 = Math.max(...fake.sessionRequests.map((r) => r.session));
    const uploads2 = fake.sessionRequests.filter(
      (r) => r.session === session2 && r.path === '/dynamic_chunk',
    );
    expect(uploads2).toHaveLength(1);
    // Raw uploads carry their parameters in the query, as octet streams.
    expect(uploads2[0]!.contentType).toBe('application/octet-stream');
    expect(uploads2[0]!.query.get('digest')).toBe(hex(sha256(next[24]!)));
    expect(uploads2[0]!.query.get('size')).toBe(String(12 * KiB));
    expect(Number(uploads2[0]!.query.get('encoded-size'))).toBe(uploads2[0]!.bodyLength);

    // Restore: chunks only after an index that references them was downloaded.
    const reader = await openRemoteBackupReader(client, {
      store: 'store1',
      dir: backupDir(group(), 2000),
    });
    try {
      expect(reader.snapshot).toEqual(backupDir(group(), 2000));
      const digest = sha256(next[3]!);
      expect(await rejectionCodeOf(reader.chunk(digest))).toBe('CHUNK_NOT_ALLOWED');
      expect(await rejectionCodeOf(reader.download('nope.blob'))).toBe('NOT_FOUND');
      await reader.download('data.pxar.didx');
      const blobs = await Promise.all(next.map((c) => reader.chunk(sha256(c))));
      // Buffer.equals: vitest's deep equality walks large buffers byte by byte, slowly.
      const restored = blobs.map((b, i) => Buffer.from(decodeBlob(b)).equals(next[i]!));
      expect(restored).toEqual(next.map(() => true));
    } finally {
      await reader.close();
    }
    const readerUpgrade = fake.upgrades.at(-1)!;
    expect(readerUpgrade.headers.upgrade).toBe('proxmox-backup-reader-protocol-v1');
    expect(readerUpgrade.url).toBe(
      '/api2/json/reader?store=store1&backup-type=host&backup-id=h1&backup-time=2000',
    );
  });

  it('leaves nothing behind when closed without finish', async () => {
    await setup();
    const w = await writer(1000);
    await w.uploadBlob('index.json.blob', manifest(1000));
    await w.close();
    for (let i = 0; i < 50 && fake.aborted.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(fake.aborted).toEqual(['host/h1/1000']);
    expect(fake.groups.get('host/h1')).toBeUndefined();
    expect(await rejectionCodeOf(w.finish())).toBe('CONNECTION_FAILED');
  });

  it('sends the upgrade parameters as PBS does', async () => {
    await setup();
    await writer(1000);
    expect(fake.upgrades[0]!.url).toBe(
      '/api2/json/backup?store=store1&backup-type=host&backup-id=h1&backup-time=1000&debug=false&benchmark=false',
    );
    expect(fake.upgrades[0]!.headers.upgrade).toBe('proxmox-backup-protocol-v1');
    await writer(1000, group('h2', parseNamespace('a/b')));
    expect(new URL(fake.upgrades[1]!.url, 'https://x').searchParams.get('ns')).toBe('a/b');
    expect(
      await rejectionCodeOf(
        openRemoteBackupWriter(client, {
          store: 'store1',
          ns: parseNamespace('a'),
          group: group(),
          backupTime: 1,
        }),
      ),
    ).toBe('INVALID_ARGUMENT');
    expect(
      await rejectionCodeOf(
        openRemoteBackupWriter(client, { store: 'store1', group: group(), backupTime: 0 }),
      ),
    ).toBe('INVALID_BACKUP_TIME');
    expect(fake.upgrades).toHaveLength(2);
  });

  it('reports the server refusing a session and failing requests with its messages', async () => {
    await setup();
    const w1 = await writer(1000);
    await w1.uploadBlob('index.json.blob', manifest(1000));
    await w1.finish();
    const old = (await writer(900).catch((e: unknown) => e)) as BurrowError;
    // PBS's stable 400 message gets the code the local datastore gives the same refusal.
    expect([old.code, old.message]).toEqual([
      'BACKUP_TIME_NOT_NEWER',
      'backup timestamp is older than last backup.',
    ]);

    const w = await writer(2000);
    const wid = await w.createIndex('dynamic', 'x.didx');
    const unknown = sha256(new Uint8Array([1]));
    const error = (await w
      .appendIndex(wid, 'dynamic', [unknown], [0])
      .catch((e: unknown) => e)) as BurrowError;
    expect([error.code, error.message]).toEqual(['REMOTE_ERROR', `no such chunk ${hex(unknown)}`]);
    expect(error.details).toEqual({ status: 400, path: '/dynamic_index' });
    expect(await rejectionCodeOf(w.createIndex('dynamic', 'y.didx', 5))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(w.appendIndex(wid, 'dynamic', [unknown], []))).toBe(
      'INVALID_ARGUMENT',
    );
    const data = new Uint8Array(100);
    await w.uploadChunk(wid, 'dynamic', sha256(data), 100, encodeBlob(data));
    const wrong = (await w
      .uploadChunk(wid, 'dynamic', sha256(new Uint8Array(1)), 100, encodeBlob(data))
      .catch((e: unknown) => e)) as BurrowError;
    expect(wrong.message).toBe('detected chunk with wrong digest.');
    await w.appendIndex(wid, 'dynamic', [sha256(data)], [0]);
    const csum = (await w
      .closeIndex(wid, 'dynamic', 1, 100, new Uint8Array(32))
      .catch((e: unknown) => e)) as BurrowError;
    expect(csum.message).toBe('got unexpected checksum');
    const open = (await w.finish().catch((e: unknown) => e)) as BurrowError;
    expect(open.message).toBe('found open index writer - unable to finish backup');
  });

  it('splits long appends into requests of at most MAX_APPEND_ENTRIES, in order', async () => {
    await setup();
    const w = await writer(1000);
    const wid = await w.createIndex('dynamic', 'x.didx');
    const data = pseudoRandom(64, 3);
    const digest = sha256(data);
    await w.uploadChunk(wid, 'dynamic', digest, 64, encodeBlob(data));
    const n = 2 * MAX_APPEND_ENTRIES + 500;
    const offsets = Array.from({ length: n }, (_, i) => i * 64);
    await w.appendIndex(wid, 'dynamic', Array<Uint8Array>(n).fill(digest), offsets);
    await w.closeIndex(
      wid,
      'dynamic',
      n,
      n * 64,
      Buffer.from(dynamicCsum(Array<Uint8Array>(n).fill(data)), 'hex'),
    );
    const puts = fake.sessionRequests.filter((r) => r.method === 'PUT');
    expect(puts).toHaveLength(3);
    expect(puts.every((r) => r.contentType === 'application/json')).toBe(true);
  });
});
