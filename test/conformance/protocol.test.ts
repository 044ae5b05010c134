/**
 * Conformance of the backup and reader protocols (pbs-protocol §5, §6) over the wire: raw
 * HTTP/1.1 upgrade requests on TLS, then HTTP/2 on the same socket, against a real HTTPS server
 * with a real datastore. Expected statuses and messages come from the spec (PBS's wording);
 * digests, csums and sizes are computed here independently of the server.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { updateDatastoreConfig } from '../../src/datastore/datastore-config-store.js';
import { decodeBlob, encodeBlob } from '../../src/format/data-blob.js';
import { DynamicIndex } from '../../src/format/dynamic-index.js';
import { FixedIndex } from '../../src/format/fixed-index.js';
import type { FileInfo } from '../../src/format/manifest.js';
import {
  MANIFEST_BLOB_NAME,
  blobFileInfo,
  indexFileInfo,
  newManifest,
  parseManifest,
  serializeManifestBytes,
} from '../../src/format/manifest.js';
import type { BackupDir } from '../../src/types/backup.js';
import {
  ROOT_NAMESPACE,
  backupDir,
  backupGroup,
  formatBackupTime,
  parseNamespace,
} from '../../src/types/backup.js';
import { type TestChunk, bytesOf, makeChunk, writeSnapshot } from '../helpers/store-fixture.js';
import {
  FORM,
  JSON_TYPE,
  type H2Response,
  type ProtocolServer,
  STORE,
  TEST_AUTH_DELAY_MS,
  type UpgradeRequest,
  type Upgraded,
  type User,
  closeSession,
  connectTls,
  dataOf,
  expectRefused,
  expectUpgraded,
  h2,
  killSession,
  post,
  putJson,
  readHead,
  requestText,
  startServer,
  upload,
} from './protocol-harness.js';

const BACKUP_PROTOCOL = 'proxmox-backup-protocol-v1';
const READER_PROTOCOL = 'proxmox-backup-reader-protocol-v1';
const MiB = 1024 * 1024;
const FIXED = 4 * MiB;
const T0 = 1_700_000_000;

let server: ProtocolServer;

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await server?.close();
});

// ---------------------------------------------------------------------------------------------
// Helpers

const store = () => server.fx.store;

let seed = 1;
const fresh = (length: number, compress = false): TestChunk =>
  makeChunk(bytesOf(++seed * 7919, length), { compress });

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

function sha256(...parts: Uint8Array[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

function u64le(value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt(value));
  return out;
}

/** §5.3: SHA-256 over (end offset u64 LE ‖ digest) per chunk. */
function dynamicCsum(chunks: readonly TestChunk[]): Buffer {
  const parts: Uint8Array[] = [];
  let end = 0;
  for (const c of chunks) {
    end += c.data.byteLength;
    parts.push(u64le(end), c.digest);
  }
  return sha256(...parts);
}

/** §5.3: SHA-256 over the slot digests. */
const fixedCsum = (chunks: readonly TestChunk[]): Buffer => sha256(...chunks.map((c) => c.digest));

const totalSize = (chunks: readonly TestChunk[]): number =>
  chunks.reduce((sum, c) => sum + c.data.byteLength, 0);

function query(params: Record<string, string | number | boolean | undefined>): string {
  const pairs: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined) {
      pairs.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
    }
  }
  return pairs.join('&');
}

function backupRequest(
  user: User | undefined,
  id: string,
  time: number,
  extra: Record<string, string | number | boolean | undefined> = {},
  protocol: string | null = BACKUP_PROTOCOL,
): UpgradeRequest {
  return {
    path: `/api2/json/backup?${query({ store: STORE, 'backup-type': 'host', 'backup-id': id, 'backup-time': time, ...extra })}`,
    protocol,
    ...(user === undefined ? {} : { user }),
  };
}

function readerRequest(
  user: User,
  id: string,
  time: number,
  extra: Record<string, string | number | boolean | undefined> = {},
  protocol: string | null = READER_PROTOCOL,
): UpgradeRequest {
  return {
    path: `/api2/json/reader?${query({ store: STORE, 'backup-type': 'host', 'backup-id': id, 'backup-time': time, ...extra })}`,
    protocol,
    user,
  };
}

const startBackup = (user: User, id: string, time: number, extra = {}): Promise<Upgraded> =>
  expectUpgraded(server.port, backupRequest(user, id, time, extra));

function chunkPath(kind: 'dynamic' | 'fixed', wid: number, c: TestChunk, extra = {}): string {
  return `/${kind}_chunk?${query({ wid, digest: hex(c.digest), size: c.data.byteLength, 'encoded-size': c.blob.byteLength, ...extra })}`;
}

function uploadChunk(
  u: Upgraded,
  kind: 'dynamic' | 'fixed',
  wid: number,
  c: TestChunk,
): Promise<H2Response> {
  return upload(u.session, chunkPath(kind, wid, c), c.blob);
}

/** Start offsets of chunks laid end to end, from `from`. */
function startsOf(chunks: readonly TestChunk[], from = 0): number[] {
  const out: number[] = [];
  let at = from;
  for (const c of chunks) {
    out.push(at);
    at += c.data.byteLength;
  }
  return out;
}

function append(
  u: Upgraded,
  kind: 'dynamic' | 'fixed',
  wid: number,
  chunks: readonly TestChunk[],
  offsets: readonly number[],
): Promise<H2Response> {
  return putJson(u.session, `/${kind}_index`, {
    wid,
    'digest-list': chunks.map((c) => hex(c.digest)),
    'offset-list': offsets,
  });
}

function closePath(
  kind: 'dynamic' | 'fixed',
  wid: number,
  count: number,
  size: number,
  csum: Uint8Array,
): string {
  return `/${kind}_close?${query({ wid, 'chunk-count': count, size, csum: hex(csum) })}`;
}

function manifestBlob(id: string, time: number, files: FileInfo[]): Uint8Array {
  const manifest = newManifest('host', id, time);
  manifest.files = files;
  return encodeBlob(serializeManifestBytes(manifest), { compress: true });
}

function blobPath(name: string, blob: Uint8Array, encodedSize = blob.byteLength): string {
  return `/blob?${query({ 'file-name': name, 'encoded-size': encodedSize })}`;
}

/** Upload the manifest and finish, both accepted: how every complete backup ends. */
async function finishWith(session: ClientHttp2Session, manifest: Uint8Array): Promise<void> {
  expect(
    dataOf(await upload(session, blobPath(MANIFEST_BLOB_NAME, manifest), manifest)),
  ).toBeNull();
  expect(dataOf(await post(session, '/finish'))).toBeNull();
}

/** Expect an error answer: status and the exact plain-text message. */
function expectError(response: H2Response, status: number, message: string): void {
  expect({ status: response.status, text: response.text }).toEqual({ status, text: message });
  expect(response.headers['content-type']).toBe('application/json;charset=UTF-8');
}

/**
 * Byte equality that stays fast for megabytes (a deep equal walks every element) and prints
 * lengths and hashes when it fails.
 */
function expectBytes(actual: Uint8Array | undefined, expected: Uint8Array): void {
  const a = actual === undefined ? undefined : Buffer.from(actual);
  const summary = (b: Buffer | undefined) =>
    b === undefined ? 'missing' : `${b.length} bytes, sha256 ${hex(sha256(b))}`;
  expect(summary(a)).toBe(summary(Buffer.from(expected)));
}

const chunkExists = (c: TestChunk): boolean => existsSync(store().chunkStore.chunkPath(c.digest));

const hostDir = (id: string, time: number, ns = ROOT_NAMESPACE): BackupDir =>
  backupDir(backupGroup(ns, 'host', id), time);

async function taskOf(workerType: string, workerId: string) {
  const all = await server.tasks.list({ limit: 1000 });
  const matching = all.filter((t) => t.workerType === workerType && t.workerId === workerId);
  return matching[matching.length - 1];
}

const BACKUP_SUBDIRS = [
  'blob',
  'dynamic_chunk',
  'dynamic_close',
  'dynamic_index',
  'finish',
  'fixed_chunk',
  'fixed_close',
  'fixed_index',
  'previous',
  'previous_backup_time',
  'speedtest',
].map((subdir) => ({ subdir }));

// ---------------------------------------------------------------------------------------------
// A full backup, an incremental one, and a restore

describe('backup and restore', () => {
  const id = 'full';
  const conf = encodeBlob(Buffer.from('name: conformance\nmemory: 512\n'), { compress: true });
  const dyn = [fresh(5000), fresh(7000, true), fresh(3000)];
  const img = [fresh(FIXED), fresh(1000)];
  const imgSize = totalSize(img);

  it('stores a snapshot with a blob, a dynamic and a fixed index, then finishes', async () => {
    const u = await startBackup('root', id, T0);
    expect(u.response.statusLine).toBe('HTTP/1.1 101 Switching Protocols');
    expect(u.response.headers).toEqual({ connection: 'upgrade', upgrade: BACKUP_PROTOCOL });
    const { session } = u;

    expect(dataOf(await h2(session, 'GET', '/'))).toEqual(BACKUP_SUBDIRS);
    expect(dataOf(await h2(session, 'GET', '/previous_backup_time'))).toBeNull();
    expect(dataOf(await upload(session, '/speedtest', randomBytes(100_000)))).toBeNull();

    expect(dataOf(await upload(session, blobPath('qemu.conf.blob', conf), conf))).toBeNull();

    const dwid = dataOf(await post(session, '/dynamic_index?archive-name=root.pxar.didx'));
    expect(dwid).toBe(1);
    // Chunk uploads run concurrently.
    const digests = await Promise.all(dyn.map((c) => uploadChunk(u, 'dynamic', 1, c)));
    expect(digests.map(dataOf)).toEqual(dyn.map((c) => hex(c.digest)));
    // Two appends whose bodies complete in reverse order are still applied in stream order.
    const starts = startsOf(dyn);
    const firstBody = JSON.stringify({
      wid: 1,
      'digest-list': [hex(dyn[0]!.digest)],
      'offset-list': [starts[0]],
    });
    const first = h2(session, 'PUT', '/dynamic_index', {
      contentType: JSON_TYPE,
      write: (stream) => {
        stream.write(firstBody.slice(0, 10));
        setTimeout(() => stream.end(firstBody.slice(10)), 150);
      },
    });
    const second = append(u, 'dynamic', 1, dyn.slice(1), starts.slice(1));
    expect(dataOf(await second)).toBeNull();
    expect(dataOf(await first)).toBeNull();
    expect(
      dataOf(await post(session, closePath('dynamic', 1, 3, totalSize(dyn), dynamicCsum(dyn)))),
    ).toBeNull();

    const fwid = dataOf(
      await post(session, `/fixed_index?archive-name=disk.img.fidx&size=${imgSize}`),
    );
    expect(fwid).toBe(2);
    for (const c of img) expect(dataOf(await uploadChunk(u, 'fixed', 2, c))).toBe(hex(c.digest));
    // Fixed appends address slots: any order will do.
    expect(dataOf(await append(u, 'fixed', 2, [img[1]!], [FIXED]))).toBeNull();
    expect(dataOf(await append(u, 'fixed', 2, [img[0]!], [0]))).toBeNull();
    expect(
      dataOf(await post(session, closePath('fixed', 2, 2, imgSize, fixedCsum(img)))),
    ).toBeNull();

    const manifest = manifestBlob(id, T0, [
      blobFileInfo('qemu.conf.blob', conf, 'none'),
      indexFileInfo('root.pxar.didx', { size: totalSize(dyn), csum: dynamicCsum(dyn) }, 'none'),
      indexFileInfo('disk.img.fidx', { size: imgSize, csum: fixedCsum(img) }, 'none'),
    ]);
    await finishWith(session, manifest);

    // Every mutating call after finish is refused.
    expectError(
      await post(session, '/dynamic_index?archive-name=late.didx'),
      400,
      'backup already marked as finished.',
    );
    await closeSession(server, u);

    const dir = hostDir(id, T0);
    for (const name of ['qemu.conf.blob', 'root.pxar.didx', 'disk.img.fidx', MANIFEST_BLOB_NAME]) {
      expect(existsSync(store().archivePath(dir, name)), name).toBe(true);
    }
    expectBytes(readFileSync(store().archivePath(dir, 'qemu.conf.blob')), conf);
    const stored = parseManifest(
      decodeBlob(readFileSync(store().archivePath(dir, MANIFEST_BLOB_NAME))),
    );
    const all = [...dyn, ...img];
    expect(stored.unprotected['chunk_upload_stats']).toEqual({
      count: all.length,
      size: totalSize(all),
      compressed_size: all.reduce((sum, c) => sum + c.blob.byteLength, 0),
      duplicates: 0,
    });
    const didx = DynamicIndex.parse(readFileSync(store().archivePath(dir, 'root.pxar.didx')));
    expect(hex(didx.computeCsum())).toBe(hex(dynamicCsum(dyn)));
    const task = await taskOf('backup', `${STORE}:host/${id}`);
    expect(task?.state).toBe('ok');
  });

  const dyn2 = [dyn[0]!, dyn[1]!, fresh(4000)];
  const img2 = [img[0]!, fresh(1000)];

  it('reuses the previous snapshot: previous, known chunks and reuse-csum', async () => {
    const u = await startBackup('root', id, T0 + 100);
    const { session } = u;
    const previous = hostDir(id, T0);
    expect(dataOf(await h2(session, 'GET', '/previous_backup_time'))).toBe(T0);

    const prevManifest = await h2(session, 'GET', `/previous?archive-name=${MANIFEST_BLOB_NAME}`);
    expect(prevManifest.status).toBe(200);
    expect(prevManifest.headers['content-type']).toBe('application/octet-stream');
    expectBytes(prevManifest.body, readFileSync(store().archivePath(previous, MANIFEST_BLOB_NAME)));
    expectError(
      await h2(session, 'GET', '/previous?archive-name=nothing.didx'),
      404,
      `file 'nothing.didx' does not exist in snapshot host/${id}/${formatBackupTime(T0)}`,
    );

    const wid = dataOf(await post(session, '/dynamic_index?archive-name=root.pxar.didx')) as number;
    // Known chunks are refused until the previous index was fetched in this session.
    expectError(
      await append(u, 'dynamic', wid, [dyn2[0]!], [0]),
      400,
      `no such chunk ${hex(dyn2[0]!.digest)}`,
    );
    const prevIndex = await h2(session, 'GET', '/previous?archive-name=root.pxar.didx');
    expectBytes(prevIndex.body, readFileSync(store().archivePath(previous, 'root.pxar.didx')));
    expect(dataOf(await uploadChunk(u, 'dynamic', wid, dyn2[2]!))).toBe(hex(dyn2[2]!.digest));
    expect(dataOf(await append(u, 'dynamic', wid, dyn2, startsOf(dyn2)))).toBeNull();
    expect(
      dataOf(await post(session, closePath('dynamic', wid, 3, totalSize(dyn2), dynamicCsum(dyn2)))),
    ).toBeNull();

    const fwid = dataOf(
      await post(
        session,
        `/fixed_index?${query({ 'archive-name': 'disk.img.fidx', size: imgSize, 'reuse-csum': hex(fixedCsum(img)) })}`,
      ),
    ) as number;
    expect(dataOf(await uploadChunk(u, 'fixed', fwid, img2[1]!))).toBe(hex(img2[1]!.digest));
    expect(dataOf(await append(u, 'fixed', fwid, [img2[1]!], [FIXED]))).toBeNull();
    expect(
      dataOf(await post(session, closePath('fixed', fwid, 1, imgSize, fixedCsum(img2)))),
    ).toBeNull();

    expect(dataOf(await upload(session, blobPath('qemu.conf.blob', conf), conf))).toBeNull();
    const manifest = manifestBlob(id, T0 + 100, [
      blobFileInfo('qemu.conf.blob', conf, 'none'),
      indexFileInfo('root.pxar.didx', { size: totalSize(dyn2), csum: dynamicCsum(dyn2) }, 'none'),
      indexFileInfo('disk.img.fidx', { size: imgSize, csum: fixedCsum(img2) }, 'none'),
    ]);
    await finishWith(session, manifest);
    await closeSession(server, u);

    const stored = parseManifest(
      decodeBlob(readFileSync(store().archivePath(hostDir(id, T0 + 100), MANIFEST_BLOB_NAME))),
    );
    expect(stored.unprotected['chunk_upload_stats']).toMatchObject({ count: 2, duplicates: 0 });
  });

  it('restores the incremental snapshot byte for byte through a reader session', async () => {
    const u = await expectUpgraded(server.port, readerRequest('reader', id, T0 + 100));
    expect(u.response.headers).toEqual({ connection: 'upgrade', upgrade: READER_PROTOCOL });
    const { session } = u;
    expect(dataOf(await h2(session, 'GET', '/'))).toEqual([
      { subdir: 'chunk' },
      { subdir: 'download' },
      { subdir: 'speedtest' },
    ]);
    const speed = await h2(session, 'GET', '/speedtest');
    expect(speed.status).toBe(200);
    expectBytes(speed.body, Buffer.alloc(MiB, 'A'));

    // Not referenced by an index downloaded in this session yet.
    expectError(
      await h2(session, 'GET', `/chunk?digest=${hex(dyn2[0]!.digest)}`),
      401,
      `download chunk ${hex(dyn2[0]!.digest)} not allowed`,
    );
    expectError(
      await h2(session, 'GET', '/download?file-name=nope.blob'),
      404,
      `file 'nope.blob' does not exist in snapshot host/${id}/${formatBackupTime(T0 + 100)}`,
    );

    const rawManifest = await h2(session, 'GET', `/download?file-name=${MANIFEST_BLOB_NAME}`);
    expect(rawManifest.headers['content-type']).toBe('application/octet-stream');
    const manifest = parseManifest(decodeBlob(rawManifest.body));
    expect(manifest.files.map((f) => f.filename).sort()).toEqual([
      'disk.img.fidx',
      'qemu.conf.blob',
      'root.pxar.didx',
    ]);

    const restored = new Map<string, Buffer>();
    for (const file of manifest.files) {
      const raw = (await h2(session, 'GET', `/download?file-name=${file.filename}`)).body;
      if (file.filename.endsWith('.blob')) {
        expect(hex(sha256(raw))).toBe(file.csum);
        restored.set(file.filename, raw);
        continue;
      }
      const index = file.filename.endsWith('.didx')
        ? DynamicIndex.parse(raw)
        : FixedIndex.parse(raw);
      expect(hex(index.computeCsum())).toBe(file.csum);
      const parts: Buffer[] = [];
      for (let i = 0; i < index.count; i++) {
        const digest = index.digest(i);
        const chunk = await h2(session, 'GET', `/chunk?digest=${hex(digest)}`);
        expect(chunk.status).toBe(200);
        const data = Buffer.from(decodeBlob(chunk.body));
        expect(hex(sha256(data))).toBe(hex(digest));
        parts.push(data);
      }
      restored.set(file.filename, Buffer.concat(parts));
    }
    expectBytes(restored.get('qemu.conf.blob'), conf);
    expectBytes(restored.get('root.pxar.didx'), Buffer.concat(dyn2.map((c) => c.data)));
    expectBytes(restored.get('disk.img.fidx'), Buffer.concat(img2.map((c) => c.data)));

    expectError(await h2(session, 'GET', '/nope'), 404, "Path '/nope' not found.");
    await closeSession(server, u);
    const time = (T0 + 100).toString(16).toUpperCase().padStart(8, '0');
    expect((await taskOf('reader', `${STORE}:host/${id}/${time}`))?.state).toBe('ok');
  });

  it('checks the reader upgrade: permissions, ownership, protocol, snapshot', async () => {
    let r = await expectRefused(server.port, readerRequest('bob', id, T0));
    expect([r.status, r.body]).toEqual([400, `no permissions on /datastore/${STORE}`]);
    // Datastore.Backup alone reads only one's own groups.
    r = await expectRefused(server.port, readerRequest('carol', id, T0));
    expect([r.status, r.body]).toEqual([400, 'backup owner check failed!']);
    r = await expectRefused(server.port, readerRequest('reader', id, T0, {}, BACKUP_PROTOCOL));
    expect([r.status, r.body]).toEqual([400, 'invalid protocol name']);
    r = await expectRefused(server.port, readerRequest('reader', id, T0 + 1));
    expect([r.status, r.body]).toEqual([
      404,
      `snapshot host/${id}/${formatBackupTime(T0 + 1)} does not exist.`,
    ]);
    // The server still serves after the refusals.
    const u = await expectUpgraded(server.port, readerRequest('root', id, T0));
    await closeSession(server, u);
  });
});

// ---------------------------------------------------------------------------------------------
// Refused upgrades

describe('backup upgrade refusals', () => {
  it('answers 401 without credentials, after the configured delay', async () => {
    const started = Date.now();
    const r = await expectRefused(server.port, backupRequest(undefined, 'x', T0));
    expect([r.status, r.body]).toEqual([401, 'authentication failed']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(TEST_AUTH_DELAY_MS - 5);
  });

  it('answers 403 without Datastore.Backup', async () => {
    const r = await expectRefused(server.port, backupRequest('bob', 'x', T0));
    expect([r.status, r.body]).toEqual([403, 'permission check failed']);
    expect(r.headers['connection']).toBe('close');
    // The refusal happened before anything was created.
    expect(existsSync(store().groupPath(hostDir('x', T0).group))).toBe(false);
  });

  it('needs exactly the protocol name in the Upgrade header', async () => {
    for (const protocol of ['proxmox-backup-protocol-v2', 'Proxmox-Backup-Protocol-V1']) {
      const r = await expectRefused(server.port, backupRequest('root', 'x', T0, {}, protocol));
      expect([r.status, r.body]).toEqual([400, 'invalid protocol name']);
    }
    const r = await expectRefused(server.port, backupRequest('root', 'x', T0, {}, READER_PROTOCOL));
    expect([r.status, r.body]).toEqual([400, 'invalid protocol name']);
  });

  it('checks paths, methods and parameters', async () => {
    let r = await expectRefused(server.port, {
      path: '/api2/json/nothing',
      protocol: BACKUP_PROTOCOL,
      user: 'root',
    });
    expect([r.status, r.body]).toEqual([404, "Path '/api2/json/nothing' not found."]);
    r = await expectRefused(server.port, { ...backupRequest('root', 'x', T0), method: 'POST' });
    expect([r.status, r.body]).toEqual([404, "Path '/api2/json/backup' not found."]);
    r = await expectRefused(
      server.port,
      backupRequest('root', 'x', T0, { 'backup-id': undefined }),
    );
    expect([r.status, r.body]).toEqual([
      400,
      "parameter verification failed - 'backup-id': parameter is missing and it is not optional.",
    ]);
    r = await expectRefused(server.port, backupRequest('root', 'x', T0, { foo: 1 }));
    expect([r.status, r.body]).toEqual([
      400,
      "parameter verification failed - 'foo': schema does not allow additional properties.",
    ]);
    r = await expectRefused(server.port, backupRequest('root', 'x', 0));
    expect([r.status, r.body]).toEqual([
      400,
      "parameter verification failed - 'backup-time': value must have a minimum value of 1 (got 0)",
    ]);
    r = await expectRefused(server.port, {
      path: `/api2/json/backup?${'x'.repeat(3100)}`,
      protocol: BACKUP_PROTOCOL,
      user: 'root',
    });
    expect([r.status, r.body]).toEqual([414, '']);
  });

  it('answers 404 for a missing namespace or datastore', async () => {
    let r = await expectRefused(server.port, backupRequest('root', 'x', T0, { ns: 'nope' }));
    expect([r.status, r.body]).toEqual([404, 'namespace not found']);
    r = await expectRefused(server.port, backupRequest('root', 'x', T0, { store: 'nostore' }));
    expect([r.status, r.body]).toEqual([404, "datastore 'nostore' does not exist"]);
  });

  it('allows the benchmark flag only for host/benchmark', async () => {
    let r = await expectRefused(server.port, backupRequest('root', 'x', T0, { benchmark: true }));
    expect([r.status, r.body]).toEqual([
      400,
      "benchmark flags is only allowed on 'host/benchmark'",
    ]);
    r = await expectRefused(server.port, backupRequest('root', 'benchmark', T0));
    expect([r.status, r.body]).toEqual([400, 'unable to run benchmark without --benchmark flags']);
  });

  it('refuses a second concurrent writer on a group with 400', async () => {
    const u = await startBackup('root', 'busy', T0);
    const group = hostDir('busy', T0).group;
    const r = await expectRefused(server.port, backupRequest('root', 'busy', T0 + 5));
    expect([r.status, r.body]).toEqual([
      400,
      `backup group host/busy: ${store().groupLockPath(group)} is locked by another task or process`,
    ]);
    // The first session is not disturbed.
    expect(dataOf(await h2(u.session, 'GET', '/previous_backup_time'))).toBeNull();
    await closeSession(server, u);
  });

  it('checks the owner and that the time is newer than the last backup', async () => {
    // A group made by carol's token: alice may not add to it.
    const u = await startBackup('carol', 'carols', T0);
    const manifest = manifestBlob('carols', T0, []);
    await finishWith(u.session, manifest);
    await closeSession(server, u);
    let r = await expectRefused(server.port, backupRequest('alice', 'carols', T0 + 10));
    expect([r.status, r.body]).toEqual([
      400,
      'backup owner check failed (alice@pbs!t != carol@pbs!t)',
    ]);
    r = await expectRefused(server.port, backupRequest('carol', 'carols', T0));
    expect([r.status, r.body]).toEqual([400, 'backup timestamp is older than last backup.']);
    r = await expectRefused(server.port, backupRequest('carol', 'carols', T0 - 10));
    expect([r.status, r.body]).toEqual([400, 'backup timestamp is older than last backup.']);
    expect(existsSync(store().snapshotPath(hostDir('carols', T0 - 10)))).toBe(false);

    // A token may not write to its own user's group (the owner rule's asymmetry).
    await writeSnapshot(store(), hostDir('rooted', T0), [
      { kind: 'blob', name: 'a.conf.blob', raw: encodeBlob(Buffer.from('x')) },
    ]);
    r = await expectRefused(server.port, backupRequest('root', 'rooted', T0 + 10));
    expect([r.status, r.body]).toEqual([400, 'backup owner check failed (root@pam!t != root@pam)']);
  });

  it('honours maintenance modes: read-only blocks backups, offline blocks readers too', async () => {
    const setMode = (mode: string | undefined) =>
      updateDatastoreConfig(server.fx.dirs, ({ entries }) =>
        entries.map((e) => {
          if (e.name !== STORE) return e;
          const { 'maintenance-mode': _old, ...props } = e.props;
          return {
            name: e.name,
            props: mode === undefined ? props : { ...props, 'maintenance-mode': mode },
          };
        }),
      );
    try {
      await setMode('read-only,message=disk swap');
      let r = await expectRefused(server.port, backupRequest('root', 'maint', T0));
      expect([r.status, r.body]).toEqual([400, 'read-only maintenance mode: disk swap']);
      const u = await expectUpgraded(server.port, readerRequest('root', 'full', T0));
      await closeSession(server, u);
      await setMode('offline');
      r = await expectRefused(server.port, readerRequest('root', 'full', T0));
      expect([r.status, r.body]).toEqual([400, 'offline maintenance mode: ']);
    } finally {
      await setMode(undefined);
    }
    const u = await startBackup('root', 'maint', T0);
    await closeSession(server, u);
  });
});

// ---------------------------------------------------------------------------------------------
// Errors inside a session

describe('backup session errors', () => {
  let u: Upgraded;
  const id = 'errs';
  /** Writers left open by the tests below, closed (with a failure) before the finish test. */
  const openWriters: number[] = [];

  beforeAll(async () => {
    u = await startBackup('root', id, T0);
  });

  it('answers unknown paths and methods with 404', async () => {
    expectError(await h2(u.session, 'GET', '/nope'), 404, "Path '/nope' not found.");
    expectError(await h2(u.session, 'GET', '/finish'), 404, "Path '/finish' not found.");
    expectError(await post(u.session, '/'), 404, "Path '/' not found.");
    expectError(
      await h2(u.session, 'GET', '/previous'),
      400,
      "parameter verification failed - 'archive-name': parameter is missing and it is not optional.",
    );
  });

  it('refuses previous and finish before there is anything', async () => {
    expectError(
      await h2(u.session, 'GET', `/previous?archive-name=${MANIFEST_BLOB_NAME}`),
      400,
      'no valid previous backup',
    );
    expectError(
      await post(u.session, '/finish'),
      400,
      'backup does not contain valid files (file count == 0)',
    );
  });

  it('takes normal parameters from a form body or a JSON body, with a body limit', async () => {
    const form = await h2(u.session, 'POST', '/dynamic_index', {
      contentType: FORM,
      body: 'archive-name=form.didx',
    });
    openWriters.push(dataOf(form) as number);
    // With a JSON body the query string is ignored.
    const json = await h2(u.session, 'POST', '/dynamic_index?archive-name=ignored.didx', {
      contentType: JSON_TYPE,
      body: JSON.stringify({ 'archive-name': 'json.didx' }),
    });
    openWriters.push(dataOf(json) as number);
    expectError(
      await h2(u.session, 'POST', '/dynamic_index?archive-name=x.didx', {
        contentType: 'text/plain',
        body: 'hello',
      }),
      400,
      'unsupported content type "text/plain"',
    );
    expectError(
      await h2(u.session, 'PUT', '/dynamic_index', {
        contentType: JSON_TYPE,
        body: JSON.stringify({
          wid: 1,
          'digest-list': [],
          'offset-list': [],
          pad: 'x'.repeat(600_000),
        }),
      }),
      400,
      'Request body too large',
    );
    // Raw endpoints read parameters from the query string only.
    expectError(
      await h2(u.session, 'GET', '/previous', {
        contentType: FORM,
        body: 'archive-name=index.json.blob',
      }),
      400,
      "parameter verification failed - 'archive-name': parameter is missing and it is not optional.",
    );
  });

  it('checks chunk uploads: writer, digest, size and body length; nothing is stored', async () => {
    const c = fresh(2000);
    const other = fresh(2000);
    expectError(await uploadChunk(u, 'dynamic', 9, c), 400, "dynamic writer '9' not registered");
    const wid = dataOf(await post(u.session, '/dynamic_index?archive-name=a.didx')) as number;
    openWriters.push(wid);

    const wrongDigest = chunkPath('dynamic', wid, c, { digest: hex(other.digest) });
    expectError(
      await upload(u.session, wrongDigest, c.blob),
      400,
      'detected chunk with wrong digest.',
    );
    const wrongSize = chunkPath('dynamic', wid, c, { size: 2001 });
    expectError(
      await upload(u.session, wrongSize, c.blob),
      400,
      'detected chunk with wrong length (2000 != 2001)',
    );

    const longer = Buffer.concat([c.blob, Buffer.alloc(100)]);
    let r = await upload(u.session, chunkPath('dynamic', wid, c), longer);
    expectError(r, 400, 'uploaded chunk is larger than announced.');
    expect(r.rstCode).toBe(0);
    r = await upload(u.session, chunkPath('dynamic', wid, c), longer, true);
    expectError(r, 400, 'uploaded chunk is larger than announced.');
    const shorter = chunkPath('dynamic', wid, c, { 'encoded-size': c.blob.byteLength + 5 });
    expectError(
      await upload(u.session, shorter, c.blob),
      400,
      'uploaded chunk has unexpected size.',
    );
    // Far more data than announced: refused without waiting for the rest of it.
    r = await h2(u.session, 'POST', chunkPath('dynamic', wid, c), {
      write: (stream) => {
        stream.write(Buffer.alloc(8 * MiB));
        // The rest is never sent: the answer must not depend on it.
      },
    });
    expectError(r, 400, 'uploaded chunk is larger than announced.');
    expectError(
      await upload(
        u.session,
        chunkPath('dynamic', wid, c, { 'encoded-size': 16 * MiB + 45 }),
        c.blob,
      ),
      400,
      "parameter verification failed - 'encoded-size': value must have a maximum value of 16777260 (got 16777261)",
    );
    expect(chunkExists(c)).toBe(false);
    expect(chunkExists(other)).toBe(false);

    // The session still works.
    expect(dataOf(await uploadChunk(u, 'dynamic', wid, c))).toBe(hex(c.digest));
    expect(chunkExists(c)).toBe(true);
  });

  it('checks blob uploads: body length and CRC; nothing is stored', async () => {
    const blob = encodeBlob(Buffer.from('some config\n'), { compress: false });
    const n = blob.byteLength;
    const longer = Buffer.concat([blob, Buffer.alloc(10)]);
    expectError(
      await upload(u.session, blobPath('x.conf.blob', blob), longer, true),
      400,
      `got blob with unexpected length (${n} != ${n + 10})`,
    );
    expectError(
      await upload(u.session, blobPath('x.conf.blob', blob), longer),
      400,
      'uploaded blob is larger than announced.',
    );
    expectError(
      await upload(u.session, blobPath('x.conf.blob', blob, n + 3), blob),
      400,
      `got blob with unexpected length (${n + 3} != ${n})`,
    );
    const damaged = Buffer.from(blob);
    damaged[damaged.length - 1]! ^= 0xff;
    expectError(
      await upload(u.session, blobPath('x.conf.blob', damaged), damaged),
      400,
      'Data blob has wrong CRC checksum.',
    );
    expect(existsSync(store().archivePath(hostDir(id, T0), 'x.conf.blob'))).toBe(false);
  });

  it('checks appends: known chunks, offsets in order, list lengths', async () => {
    const c = fresh(3000);
    const wid = dataOf(await post(u.session, '/dynamic_index?archive-name=b.didx')) as number;
    openWriters.push(wid);
    expectError(await append(u, 'dynamic', wid, [c], [0]), 400, `no such chunk ${hex(c.digest)}`);
    expect(dataOf(await uploadChunk(u, 'dynamic', wid, c))).toBe(hex(c.digest));
    expectError(
      await append(u, 'dynamic', wid, [c], [5]),
      400,
      "dynamic writer 'b.didx' append chunk failed - got strange chunk offset (0 != 5)",
    );
    expectError(
      await putJson(u.session, '/dynamic_index', {
        wid,
        'digest-list': [hex(c.digest)],
        'offset-list': [0, 3000],
      }),
      400,
      'offset list has wrong length (2 != 1)',
    );
    expect(dataOf(await append(u, 'dynamic', wid, [c], [0]))).toBeNull();
    // A second append of the same start offset is out of order now.
    expectError(
      await append(u, 'dynamic', wid, [c], [0]),
      400,
      "dynamic writer 'b.didx' append chunk failed - got strange chunk offset (3000 != 0)",
    );
    expectError(
      await post(u.session, '/finish'),
      400,
      'found open index writer - unable to finish backup',
    );
  });

  it('checks closes: count, size and csum', async () => {
    const chunks = [fresh(1500), fresh(2500)];
    const open = async (name: string): Promise<number> => {
      const wid = dataOf(await post(u.session, `/dynamic_index?archive-name=${name}`)) as number;
      for (const c of chunks)
        expect(dataOf(await uploadChunk(u, 'dynamic', wid, c))).toBe(hex(c.digest));
      expect(dataOf(await append(u, 'dynamic', wid, chunks, startsOf(chunks)))).toBeNull();
      return wid;
    };
    const size = totalSize(chunks);
    const csum = dynamicCsum(chunks);
    let wid = await open('c1.didx');
    expectError(
      await post(u.session, closePath('dynamic', wid, 3, size, csum)),
      400,
      "dynamic writer 'c1.didx' close failed - unexpected chunk count (2 != 3)",
    );
    // A writer whose close failed is gone.
    expectError(
      await append(u, 'dynamic', wid, chunks, startsOf(chunks)),
      400,
      `dynamic writer '${wid}' (c1.didx) already closed`,
    );
    wid = await open('c2.didx');
    expectError(
      await post(u.session, closePath('dynamic', wid, 2, size + 1, csum)),
      400,
      `dynamic writer 'c2.didx' close failed - unexpected file size (${size} != ${size + 1})`,
    );
    wid = await open('c3.didx');
    expectError(
      await post(u.session, closePath('dynamic', wid, 2, size, sha256(Buffer.from('x')))),
      400,
      "dynamic writer 'c3.didx' close failed - got unexpected checksum",
    );

    const end = fresh(1000);
    const fwid = dataOf(
      await post(u.session, '/fixed_index?archive-name=d.img.fidx&size=1000'),
    ) as number;
    expect(dataOf(await uploadChunk(u, 'fixed', fwid, end))).toBe(hex(end.digest));
    expect(dataOf(await append(u, 'fixed', fwid, [end], [0]))).toBeNull();
    expectError(
      await post(u.session, closePath('fixed', fwid, 1, 1000, sha256(Buffer.from('y')))),
      400,
      "fixed writer 'd.img.fidx' close failed - got unexpected checksum",
    );
    const dir = hostDir(id, T0);
    for (const name of ['c1.didx', 'c2.didx', 'c3.didx', 'd.img.fidx']) {
      expect(existsSync(store().archivePath(dir, name)), name).toBe(false);
    }
  });

  it('needs the manifest to finish; a session dropped without finish leaves nothing', async () => {
    // Writers a.didx and b.didx are still open: a failing close drops them.
    const blob = encodeBlob(Buffer.from('cfg'));
    expect(dataOf(await upload(u.session, blobPath('y.conf.blob', blob), blob))).toBeNull();
    expectError(
      await post(u.session, '/finish'),
      400,
      'found open index writer - unable to finish backup',
    );
    for (const wid of openWriters) {
      const r = await post(u.session, closePath('dynamic', wid, 1, 1, sha256()));
      expect(r.status).toBe(400);
    }
    const manifestPath = store().archivePath(hostDir(id, T0), MANIFEST_BLOB_NAME);
    expectError(
      await post(u.session, '/finish'),
      400,
      `unable to update manifest blob - cannot open ${manifestPath}: ENOENT`,
    );
    expect(existsSync(store().snapshotPath(hostDir(id, T0)))).toBe(true);
    await closeSession(server, u);
    expect(existsSync(store().snapshotPath(hostDir(id, T0)))).toBe(false);
    // The group was new: it goes too, owner and all.
    expect(existsSync(store().groupPath(hostDir(id, T0).group))).toBe(false);
    const task = await taskOf('backup', `${STORE}:host/${id}`);
    expect(task?.state).toBe('error');
    expect(task?.status).toBe('backup ended but finished flag is not set.');
  });
});

describe('connection loss', () => {
  it('removes the snapshot of a session killed in the middle of an upload', async () => {
    const u = await startBackup('root', 'killed', T0);
    const c = fresh(FIXED);
    const wid = dataOf(await post(u.session, '/dynamic_index?archive-name=k.didx')) as number;
    const pending = h2(u.session, 'POST', chunkPath('dynamic', wid, c), {
      write: (stream) => stream.write(c.blob.subarray(0, MiB)),
    }).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(existsSync(store().snapshotPath(hostDir('killed', T0)))).toBe(true);
    await killSession(server, u);
    await pending;
    expect(existsSync(store().snapshotPath(hostDir('killed', T0)))).toBe(false);
    expect(existsSync(store().groupPath(hostDir('killed', T0).group))).toBe(false);
    expect(chunkExists(c)).toBe(false);
    expect((await taskOf('backup', `${STORE}:host/killed`))?.state).toBe('error');
  });

  it('ends the connection and removes the snapshot when the task is aborted', async () => {
    const u = await startBackup('root', 'aborted', T0);
    const closed = new Promise<void>((resolve) => u.session.once('close', () => resolve()));
    const running = (await server.tasks.list({ running: true })).find(
      (t) => t.workerId === `${STORE}:host/aborted`,
    );
    expect(running).toBeDefined();
    expect(server.tasks.abort(running!.upid)).toBe(true);
    await closed;
    await server.ended(u.localPort);
    expect(existsSync(store().snapshotPath(hostDir('aborted', T0)))).toBe(false);
    expect((await server.tasks.status(running!.upid)).state).toBe('error');
  });

  it('keeps a finished snapshot when the connection is killed after finish', async () => {
    const u = await startBackup('root', 'kept', T0);
    const manifest = manifestBlob('kept', T0, []);
    await finishWith(u.session, manifest);
    await killSession(server, u);
    expect(existsSync(store().archivePath(hostDir('kept', T0), MANIFEST_BLOB_NAME))).toBe(true);
    expect((await taskOf('backup', `${STORE}:host/kept`))?.state).toBe('ok');
  });
});

describe('HTTP/2 start', () => {
  /** HTTP/2 frames: length (24 bit), type, flags, stream id (31 bit), payload. */
  function frames(
    bytes: Buffer,
  ): { type: number; flags: number; stream: number; payload: Buffer }[] {
    const out = [];
    let at = 0;
    while (at + 9 <= bytes.length) {
      const length = bytes.readUIntBE(at, 3);
      if (at + 9 + length > bytes.length) break;
      out.push({
        type: bytes[at + 3]!,
        flags: bytes[at + 4]!,
        stream: bytes.readUInt32BE(at + 5) & 0x7fffffff,
        payload: bytes.subarray(at + 9, at + 9 + length),
      });
      at += 9 + length;
    }
    return out;
  }

  it('takes a preface sent with the upgrade request and announces the session settings', async () => {
    const socket = await connectTls(server.port);
    const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
    const emptySettings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // Request, client preface and SETTINGS in one write: the preface arrives with the request.
    socket.write(
      Buffer.concat([
        Buffer.from(requestText(server.port, backupRequest('root', 'early', T0)), 'latin1'),
        preface,
        emptySettings,
      ]),
    );
    const head = await readHead(socket);
    expect(head.status).toBe(101);
    let received = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
    });
    socket.resume();
    const SETTINGS = 4;
    const WINDOW_UPDATE = 8;
    const ACK = 1;
    for (let i = 0; i < 100; i++) {
      const seen = frames(received);
      if (seen.some((f) => f.type === SETTINGS && (f.flags & ACK) !== 0)) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const seen = frames(received);
    // The server acknowledged our SETTINGS: it read the bytes that came with the request.
    expect(seen.some((f) => f.type === SETTINGS && f.flags === ACK)).toBe(true);
    const settings = seen.find((f) => f.type === SETTINGS && f.flags === 0);
    const values = new Map<number, number>();
    for (let at = 0; settings !== undefined && at + 6 <= settings.payload.length; at += 6) {
      values.set(settings.payload.readUInt16BE(at), settings.payload.readUInt32BE(at + 2));
    }
    expect(values.get(0x4)).toBe(32 * MiB); // SETTINGS_INITIAL_WINDOW_SIZE
    expect(values.get(0x5)).toBe(4 * MiB); // SETTINGS_MAX_FRAME_SIZE
    // The connection window is raised from 65535 to 32 MiB by a WINDOW_UPDATE on stream 0.
    const update = seen.find((f) => f.type === WINDOW_UPDATE && f.stream === 0);
    expect(update?.payload.readUInt32BE(0)).toBe(32 * MiB - 65535);
    const port = socket.localPort ?? 0;
    socket.destroy();
    await server.ended(port);
    expect(existsSync(store().snapshotPath(hostDir('early', T0)))).toBe(false);
  });
});

describe('namespaces and tokens', () => {
  it('backs up into a namespace as a token with Datastore.Backup, and reads it back', async () => {
    const ns = parseNamespace('team/a');
    await store().createNamespace(parseNamespace('team'));
    await store().createNamespace(ns);
    const u = await startBackup('alice', 'alice', T0, { ns: 'team/a' });
    const conf = encodeBlob(Buffer.from('hello'));
    expect(dataOf(await upload(u.session, blobPath('h.conf.blob', conf), conf))).toBeNull();
    const manifest = manifestBlob('alice', T0, [blobFileInfo('h.conf.blob', conf, 'none')]);
    await finishWith(u.session, manifest);
    await closeSession(server, u);
    const dir = hostDir('alice', T0, ns);
    expect(existsSync(store().archivePath(dir, 'h.conf.blob'))).toBe(true);

    // Datastore.Backup plus ownership is enough to read one's own group.
    const r = await expectUpgraded(
      server.port,
      readerRequest('alice', 'alice', T0, { ns: 'team/a' }),
    );
    const got = await h2(r.session, 'GET', '/download?file-name=h.conf.blob');
    expectBytes(got.body, conf);
    await closeSession(server, r);
  });
});
