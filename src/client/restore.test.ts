import { createHash } from 'node:crypto';
import {
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  chmodSync,
  existsSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CryptConfig } from '../crypto/crypt-config.js';
import { decodeBlob, encodeBlob } from '../format/data-blob.js';
import type { BackupManifest } from '../format/manifest.js';
import { MANIFEST_BLOB_NAME, parseManifest, serializeManifestBytes } from '../format/manifest.js';
import { isBurrowError, type BurrowError } from '../lib/errors.js';
import { backupDir, backupGroup, ROOT_NAMESPACE, type BackupDir } from '../types/backup.js';
import { makeStore, type StoreFixture } from '../../test/helpers/store-fixture.js';
import {
  SnapshotBuilder,
  countingReader,
  newCatalog,
  openReader,
  type StoredStream,
} from '../../test/helpers/snapshot-builder.js';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import type { BackupReader } from './backup-writer.js';
import { workerChunkFileDecoder, workerChunkPlanRunner } from './chunk-reader.js';
import { ChunkWorkerPool } from './worker-pool.js';
import {
  readSnapshotManifest,
  resolveArchive,
  restoreArchive,
  snapshotCatalog,
  type OutputStream,
  type RestoreOptions,
} from './restore.js';

const group = backupGroup(ROOT_NAMESPACE, 'host', 'restore');
const LEGACY = backupDir(group, 1_700_000_000);
const SPLIT = backupDir(group, 1_700_000_100);
const CRYPT = backupDir(group, 1_700_000_200);
const MTIME = 1_600_000_000; // 2020-09-13T12:26:40Z
const MTIME_TEXT = '2020-09-13T12:26:40Z';
const key = new CryptConfig(new Uint8Array(32).fill(3));
const otherKey = new CryptConfig(new Uint8Array(32).fill(4));

function patterned(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

let fixture: StoreFixture;
let work: string;
let source: string;
const BIG = 2_000_000;
let legacyPxar: StoredStream;
let splitMeta: StoredStream;
let splitPayload: StoredStream;
const conf = new TextEncoder().encode('memory: 2048\ncores: 2\n');
const image = new Uint8Array(8 * 1024 * 1024 - 1000);
const IMAGE_CHUNK = 1024 * 1024;

/**
 * The tree backed up: files in sorted order as PBS walks them, a hardlink (dir/hard is the
 * second name of dir/b.bin), a symlink, an empty directory, fixed mtimes for the catalog lines.
 */
function makeTree(root: string, seed: number): void {
  mkdirSync(join(root, 'dir', 'sub'), { recursive: true });
  mkdirSync(join(root, 'dir', 'empty'));
  writeFileSync(join(root, 'a.txt'), 'hello\n');
  writeFileSync(join(root, 'dir', 'b.bin'), patterned(BIG, seed));
  linkSync(join(root, 'dir', 'b.bin'), join(root, 'dir', 'hard'));
  writeFileSync(join(root, 'dir', 'sub', 'c.txt'), 'sea\n');
  chmodSync(join(root, 'dir', 'sub', 'c.txt'), 0o640);
  symlinkSync('a.txt', join(root, 'link'));
  for (const p of ['a.txt', 'dir/b.bin', 'dir/sub/c.txt', 'dir/sub', 'dir/empty', 'dir', '.']) {
    utimesSync(join(root, p), MTIME, MTIME);
  }
}

beforeAll(async () => {
  fixture = await makeStore();
  work = mkdtempSync(join(tmpdir(), 'burrow-restore-'));
  source = join(work, 'source');
  mkdirSync(source);
  makeTree(source, 1);
  image.set(patterned(IMAGE_CHUNK, 5), 0);
  image.set(patterned(IMAGE_CHUNK / 2, 6), 6 * IMAGE_CHUNK + IMAGE_CHUNK / 2);
  image.set(patterned(500, 7), image.byteLength - 500);

  const legacy = await SnapshotBuilder.start(fixture.store, LEGACY);
  const catalog = newCatalog();
  legacyPxar = (await legacy.addPxar('root', source, { catalog: catalog.writer })).archive;
  await catalog.writer.finish();
  await legacy.addStream('catalog.pcat1.didx', catalog.sink.bytes());
  await legacy.addImage('disk.img.fidx', image, IMAGE_CHUNK);
  await legacy.addBlob('vm.conf.blob', conf);
  await legacy.finish();

  const split = await SnapshotBuilder.start(fixture.store, SPLIT);
  const parts = await split.addPxar('root', source, { split: true });
  splitMeta = parts.archive;
  splitPayload = parts.payload!;
  await split.finish();

  const crypt = await SnapshotBuilder.start(fixture.store, CRYPT, { crypt: key });
  await crypt.addPxar('root', source);
  await crypt.addBlob('vm.conf.blob', conf);
  await crypt.addBlob('rsa-encrypted.key.blob', new TextEncoder().encode('wrapped'), {
    plain: true,
  });
  await crypt.finish();
}, 60_000);

afterAll(async () => {
  await fixture.cleanup();
  rmSync(work, { recursive: true, force: true });
});

let targets: string[] = [];
function target(name = 'out'): string {
  const dir = mkdtempSync(join(tmpdir(), 'burrow-restore-target-'));
  targets.push(dir);
  return join(dir, name);
}
afterEach(() => {
  for (const t of targets) rmSync(t, { recursive: true, force: true });
  targets = [];
});

async function withReader<T>(dir: BackupDir, fn: (reader: BackupReader) => Promise<T>): Promise<T> {
  const reader = await openReader(fixture.store, dir);
  try {
    return await fn(reader);
  } finally {
    await reader.close();
  }
}

function restore(dir: BackupDir, options: Omit<RestoreOptions, 'reader'>) {
  return withReader(dir, (reader) => restoreArchive({ reader, ...options }));
}

class Capture implements OutputStream {
  readonly parts: Buffer[] = [];
  write(chunk: Uint8Array, callback: (error?: Error | null) => void): boolean {
    this.parts.push(Buffer.from(chunk));
    setImmediate(callback);
    return true;
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

async function failure(promise: Promise<unknown>): Promise<BurrowError> {
  try {
    await promise;
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw error;
  }
  throw new Error('expected a failure');
}

/** Every entry below `root`: type, permissions, mtime (ns), size and content hash or link target. */
function describeTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    const path = rel === '' ? root : join(root, rel);
    const st = lstatSync(path, { bigint: true });
    const mode = (st.mode & 0o7777n).toString(8);
    const key = rel === '' ? '.' : rel;
    if (st.isDirectory()) {
      out.set(key, `dir ${mode} ${st.mtimeNs}`);
      for (const name of readdirSync(path).sort()) walk(rel === '' ? name : `${rel}/${name}`);
    } else if (st.isSymbolicLink()) {
      out.set(key, `symlink ${readlinkSync(path)}`);
    } else {
      const hash = createHash('sha256').update(readFileSync(path)).digest('hex');
      out.set(key, `file ${mode} ${st.mtimeNs} ${st.size} ${hash}`);
    }
  };
  walk('');
  return out;
}

function sameInode(a: string, b: string): boolean {
  return statSync(a).ino === statSync(b).ino;
}

async function lines(iterable: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const line of iterable) out.push(line);
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('readSnapshotManifest', () => {
  it('reads the manifest of the snapshot', async () => {
    const m = await withReader(LEGACY, (r) => readSnapshotManifest(r));
    expect(m.files.map((f) => f.filename).sort()).toEqual([
      'catalog.pcat1.didx',
      'disk.img.fidx',
      'root.pxar.didx',
      'vm.conf.blob',
    ]);
  });

  it('checks the key: the right one verifies, another is MANIFEST_WRONG_KEY', async () => {
    const m = await withReader(CRYPT, (r) => readSnapshotManifest(r, key));
    expect(m.signature).toMatch(/^[0-9a-f]{64}$/);
    const err = await failure(withReader(CRYPT, (r) => readSnapshotManifest(r, otherKey)));
    expect(err.code).toBe('MANIFEST_WRONG_KEY');
    expect(err.message).toContain('host/restore/');
  });

  it('finds a manifest whose signed content was changed', async () => {
    const dir = backupDir(group, 1_700_000_300);
    const b = await SnapshotBuilder.start(fixture.store, dir, { crypt: key });
    await b.addBlob('vm.conf.blob', conf);
    await b.finish();
    const path = fixture.store.archivePath(dir, MANIFEST_BLOB_NAME);
    const m = parseManifest(decodeBlob(new Uint8Array(readFileSync(path))));
    m.files[0] = { ...m.files[0]!, size: m.files[0]!.size + 1 };
    writeFileSync(path, encodeBlob(serializeManifestBytes(m)));
    expect(await rejectionCodeOf(withReader(dir, (r) => readSnapshotManifest(r, key)))).toBe(
      'MANIFEST_SIGNATURE_MISMATCH',
    );
  });

  it('refuses a manifest that describes another snapshot', async () => {
    const dir = backupDir(group, 1_700_000_400);
    const b = await SnapshotBuilder.start(fixture.store, dir);
    await b.finish();
    const raw = readFileSync(fixture.store.archivePath(LEGACY, MANIFEST_BLOB_NAME));
    writeFileSync(fixture.store.archivePath(dir, MANIFEST_BLOB_NAME), raw);
    expect(await rejectionCodeOf(withReader(dir, (r) => readSnapshotManifest(r)))).toBe(
      'MANIFEST_INVALID',
    );
  });
});

describe('resolveArchive', () => {
  const manifestOf = (names: string[]): BackupManifest => ({
    backupType: 'host',
    backupId: 'x',
    backupTime: 1,
    files: names.map((filename) => ({
      filename,
      cryptMode: 'none',
      size: 1,
      csum: '00'.repeat(32),
    })),
    signature: null,
    unprotected: {},
  });

  it('maps client names like PBS', () => {
    const m = manifestOf([
      'root.pxar.didx',
      'data.mpxar.didx',
      'data.ppxar.didx',
      'disk.img.fidx',
      'vm.conf.blob',
      'catalog.pcat1.didx',
    ]);
    expect(resolveArchive(m, 'root.pxar')).toEqual({ kind: 'pxar', name: 'root.pxar.didx' });
    expect(resolveArchive(m, 'root.pxar.didx')).toEqual({ kind: 'pxar', name: 'root.pxar.didx' });
    const split = { kind: 'split-pxar', metadata: 'data.mpxar.didx', payload: 'data.ppxar.didx' };
    expect(resolveArchive(m, 'data.pxar')).toEqual(split);
    expect(resolveArchive(m, 'data.mpxar')).toEqual(split);
    expect(resolveArchive(m, 'data.ppxar.didx')).toEqual(split);
    expect(resolveArchive(m, 'disk.img')).toEqual({ kind: 'image', name: 'disk.img.fidx' });
    expect(resolveArchive(m, 'vm.conf')).toEqual({ kind: 'blob', name: 'vm.conf.blob' });
    expect(resolveArchive(m, 'catalog.pcat1')).toEqual({
      kind: 'dynamic',
      name: 'catalog.pcat1.didx',
    });
    expect(resolveArchive(m, 'index.json.blob')).toEqual({
      kind: 'manifest',
      name: 'index.json.blob',
    });
  });

  it('lists what there is when a name is unknown', () => {
    const m = manifestOf(['root.pxar.didx', 'vm.conf.blob']);
    for (const name of ['other.pxar', 'disk.img', 'root.txt', 'root']) {
      let error: unknown;
      try {
        resolveArchive(m, name);
      } catch (e) {
        error = e;
      }
      expect(isBurrowError(error, 'NOT_FOUND')).toBe(true);
      expect((error as Error).message).toContain('root.pxar.didx, vm.conf.blob');
    }
    expect(() => resolveArchive(m, '../etc/passwd')).toThrow(/invalid archive name/);
  });
});

describe('pxar restore', () => {
  it('restores a legacy archive tree byte for byte with its metadata', async () => {
    const out = target();
    const progress: number[] = [];
    const result = await restore(LEGACY, {
      archiveName: 'root.pxar',
      target: out,
      onProgress: (p) => progress.push(p.entries ?? -1),
    });
    expect(describeTree(out)).toEqual(describeTree(source));
    expect(sameInode(join(out, 'dir', 'b.bin'), join(out, 'dir', 'hard'))).toBe(true);
    expect(result.entries).toBe(8);
    expect(result.bytes).toBe(6 + BIG + 4);
    expect(result.warnings).toBe(0);
    expect(progress.length).toBeGreaterThan(0);
  });

  it('restores a split archive from its two streams', async () => {
    const out = target();
    await restore(SPLIT, { archiveName: 'root.pxar', target: out });
    expect(describeTree(out)).toEqual(describeTree(source));
    expect(sameInode(join(out, 'dir', 'b.bin'), join(out, 'dir', 'hard'))).toBe(true);
  });

  for (const [label, inlineBytes] of [
    ['worker threads', 0],
    ['the calling thread', 1 << 30],
  ] as const) {
    it(`restores a split archive with the contents written on ${label}`, async () => {
      const pool = ChunkWorkerPool.create(2, inlineBytes);
      const runner = workerChunkPlanRunner(pool);
      let plans = 0;
      try {
        const out = target();
        const result = await restore(SPLIT, {
          archiveName: 'root.pxar',
          target: out,
          decodeChunkFile: workerChunkFileDecoder(pool),
          runChunkPlan: (source, check, plan) => {
            plans++;
            return runner(source, check, plan);
          },
        });
        // Every payload chunk with file data went through a plan.
        expect(plans).toBeGreaterThanOrEqual(splitPayload.chunks.length - 1);
        expect(describeTree(out)).toEqual(describeTree(source));
        expect(sameInode(join(out, 'dir', 'b.bin'), join(out, 'dir', 'hard'))).toBe(true);
        expect(result.entries).toBe(8);
        expect(result.bytes).toBe(6 + BIG + 4);
        expect(pool.runningThreads).toBe(inlineBytes === 0 ? 2 : 0);
      } finally {
        await pool.close();
      }
    });
  }

  it('stops at a damaged payload chunk written on a worker, leaving no half-written file', async () => {
    const dir = backupDir(group, 1_700_000_600);
    const src = join(work, 'payload-victim');
    mkdirSync(src);
    makeTree(src, 77);
    const b = await SnapshotBuilder.start(fixture.store, dir);
    const { payload } = await b.addPxar('root', src, { split: true });
    await b.finish();
    // A chunk inside b.bin (noise, stored uncompressed: the damage reaches the digest).
    const victim = payload!.chunks.find((c) => c.start > 100_000)!;
    const path = fixture.store.chunkStore.chunkPath(victim.digest);
    const raw = readFileSync(path);
    raw[20] = raw[20]! ^ 1;
    writeFileSync(path, raw);
    const pool = ChunkWorkerPool.create(2, 0);
    try {
      const out = target();
      const err = await failure(
        restore(dir, {
          archiveName: 'root.pxar',
          target: out,
          decodeChunkFile: workerChunkFileDecoder(pool),
          runChunkPlan: workerChunkPlanRunner(pool),
        }),
      );
      expect(err.code).toBe('DIGEST_MISMATCH');
      expect(err.message).toContain('root.ppxar.didx');
      expect(err.message).toContain(`byte offset ${victim.start}`);
      expect(err.details['offset']).toBe(victim.start);
      // The file the chunk belongs to is not left behind under its name, nor its hardlink.
      expect(existsSync(join(out, 'dir', 'b.bin'))).toBe(false);
      expect(existsSync(join(out, 'dir', 'hard'))).toBe(false);
      expect(readFileSync(join(out, 'a.txt'), 'utf8')).toBe('hello\n');
    } finally {
      await pool.close();
    }
  });

  it('restores an encrypted archive with its key', async () => {
    const out = target();
    await restore(CRYPT, { archiveName: 'root.pxar.didx', target: out, crypt: key });
    expect(describeTree(out)).toEqual(describeTree(source));
  });

  it('refuses encrypted archives without the key or with another one', async () => {
    const noKey = await failure(restore(CRYPT, { archiveName: 'root.pxar', target: target() }));
    expect(noKey.code).toBe('BLOB_KEY_REQUIRED');
    expect(noKey.message).toContain('root.pxar.didx');
    expect(
      await rejectionCodeOf(
        restore(CRYPT, { archiveName: 'root.pxar', target: target(), crypt: otherKey }),
      ),
    ).toBe('MANIFEST_WRONG_KEY');
  });

  for (const dir of [LEGACY, SPLIT]) {
    const label = dir === LEGACY ? 'legacy' : 'split';

    it(`restores one file through the goodbye tables, fetching few chunks (${label})`, async () => {
      const out = target();
      const fetched = await withReader(dir, async (inner) => {
        const reader = countingReader(inner);
        await restoreArchive({
          reader,
          archiveName: 'root.pxar',
          target: out,
          patterns: ['/dir/sub/c.txt'],
        });
        return reader.chunkFetches.length;
      });
      const all = describeTree(source);
      const got = describeTree(out);
      expect([...got.keys()].sort()).toEqual(['.', 'dir', 'dir/sub', 'dir/sub/c.txt']);
      expect(got.get('dir/sub/c.txt')).toBe(all.get('dir/sub/c.txt'));
      const total =
        dir === LEGACY
          ? legacyPxar.chunks.length
          : splitMeta.chunks.length + splitPayload.chunks.length;
      expect(total).toBeGreaterThan(20);
      // The metadata on the way and the file (plus a little read-ahead), not the archive.
      expect(fetched).toBeLessThanOrEqual(10);

      // The same selection as a glob goes through the streaming decoder: same result.
      const viaStream = target();
      await restore(dir, {
        archiveName: 'root.pxar',
        target: viaStream,
        patterns: ['/dir/sub/c.tx[t]'],
      });
      expect(describeTree(viaStream)).toEqual(got);
    });

    it(`restores what glob patterns select (${label})`, async () => {
      const out = target();
      await restore(dir, { archiveName: 'root.pxar', target: out, patterns: ['*.txt'] });
      expect([...describeTree(out).keys()].sort()).toEqual([
        '.',
        'a.txt',
        'dir',
        'dir/sub',
        'dir/sub/c.txt',
      ]);
    });

    it(`restores a whole directory named by a plain path (${label})`, async () => {
      const out = target();
      await restore(dir, { archiveName: 'root.pxar', target: out, patterns: ['/dir'] });
      const want = [...describeTree(source).entries()].filter(
        ([k]) => k === '.' || k.startsWith('dir'),
      );
      const got = describeTree(out);
      got.delete('.');
      expect([...got.entries()]).toEqual(want.filter(([k]) => k !== '.'));
    });
  }

  it('writes the raw v1 stream to standard output', async () => {
    const capture = new Capture();
    const result = await restore(LEGACY, {
      archiveName: 'root.pxar',
      target: '-',
      stdout: capture,
    });
    expect(Buffer.compare(capture.bytes(), legacyPxar.bytes)).toBe(0);
    expect(result.bytes).toBe(legacyPxar.bytes.byteLength);
  });

  it('refuses a split archive on standard output unless one stream is named', async () => {
    const err = await failure(
      restore(SPLIT, { archiveName: 'root.pxar', target: '-', stdout: new Capture() }),
    );
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(/split archive/);
    const capture = new Capture();
    await restore(SPLIT, { archiveName: 'root.mpxar.didx', target: '-', stdout: capture });
    expect(Buffer.compare(capture.bytes(), splitMeta.bytes)).toBe(0);
  });

  it('refuses patterns where they cannot apply', async () => {
    expect(
      await rejectionCodeOf(
        restore(LEGACY, { archiveName: 'disk.img', target: target(), patterns: ['/x'] }),
      ),
    ).toBe('INVALID_ARGUMENT');
  });

  it('stops at a damaged chunk, naming snapshot, archive and offset', async () => {
    const dir = backupDir(group, 1_700_000_500);
    const src = join(work, 'victim');
    mkdirSync(src);
    makeTree(src, 99);
    const b = await SnapshotBuilder.start(fixture.store, dir);
    const { archive } = await b.addPxar('root', src);
    await b.finish();
    const victim = archive.chunks[5]!;
    const path = fixture.store.chunkStore.chunkPath(victim.digest);
    const raw = readFileSync(path);
    raw[20] = raw[20]! ^ 1;
    writeFileSync(path, raw);
    const err = await failure(restore(dir, { archiveName: 'root.pxar', target: target() }));
    // b.bin is noise: its chunks are stored uncompressed, so the damage reaches the digest.
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain('host/restore/2023-11-14T22:21:40Z');
    expect(err.message).toContain('root.pxar.didx');
    expect(err.message).toContain(`byte offset ${victim.start}`);
    expect(err.details['offset']).toBe(victim.start);
  });
});

describe('image restore', () => {
  it('writes a sparse file with the image bytes', async () => {
    const out = target('disk.raw');
    const result = await restore(LEGACY, { archiveName: 'disk.img', target: out });
    expect(result.bytes).toBe(image.byteLength);
    expect(Buffer.compare(readFileSync(out), image)).toBe(0);
    const st = statSync(out);
    expect(st.size).toBe(image.byteLength);
    // Data: 1 MiB + 512 KiB + 500 bytes; the 5 zero chunks and zero halves are holes.
    expect(st.blocks * 512).toBeLessThanOrEqual(IMAGE_CHUNK + IMAGE_CHUNK / 2 + 64 * 1024);
    expect(readdirSync(join(out, '..'))).toEqual(['disk.raw']);
  });

  it('writes every byte to standard output', async () => {
    const capture = new Capture();
    await restore(LEGACY, { archiveName: 'disk.img.fidx', target: '-', stdout: capture });
    expect(Buffer.compare(capture.bytes(), image)).toBe(0);
  });

  it('writes every byte in place to an existing device', async () => {
    const result = await restore(LEGACY, { archiveName: 'disk.img', target: '/dev/null' });
    expect(result.bytes).toBe(image.byteLength);
  });

  it('wants a file name, not a directory', async () => {
    const dir = target('somedir');
    mkdirSync(dir);
    const err = await failure(restore(LEGACY, { archiveName: 'disk.img', target: dir }));
    expect(err.code).toBe('ALREADY_EXISTS');
    expect(err.message).toMatch(/is a directory/);
  });

  it('does not replace an existing file unless allowed', async () => {
    const out = target('disk.raw');
    writeFileSync(out, 'old');
    expect(await rejectionCodeOf(restore(LEGACY, { archiveName: 'disk.img', target: out }))).toBe(
      'ALREADY_EXISTS',
    );
    expect(readFileSync(out, 'utf8')).toBe('old');
    await restore(LEGACY, { archiveName: 'disk.img', target: out, extract: { overwrite: 'all' } });
    expect(Buffer.compare(readFileSync(out), image)).toBe(0);
  });
});

describe('blob restore', () => {
  it('writes the decoded content to a file and to standard output', async () => {
    const out = target('vm.conf');
    await restore(LEGACY, { archiveName: 'vm.conf', target: out });
    expect(Buffer.compare(readFileSync(out), conf)).toBe(0);
    const capture = new Capture();
    await restore(LEGACY, { archiveName: 'vm.conf.blob', target: '-', stdout: capture });
    expect(Buffer.compare(capture.bytes(), conf)).toBe(0);
  });

  it('decrypts with the key; without it only plain blobs come out', async () => {
    const out = target('vm.conf');
    await restore(CRYPT, { archiveName: 'vm.conf', target: out, crypt: key });
    expect(Buffer.compare(readFileSync(out), conf)).toBe(0);
    expect(
      await rejectionCodeOf(restore(CRYPT, { archiveName: 'vm.conf', target: target() })),
    ).toBe('BLOB_KEY_REQUIRED');
    // The wrapped key is needed exactly when the key is lost.
    const capture = new Capture();
    await restore(CRYPT, {
      archiveName: 'rsa-encrypted.key.blob',
      target: '-',
      stdout: capture,
    });
    expect(capture.bytes().toString()).toBe('wrapped');
  });

  it('gives the manifest JSON for index.json.blob', async () => {
    const capture = new Capture();
    await restore(LEGACY, { archiveName: 'index.json.blob', target: '-', stdout: capture });
    const json = JSON.parse(capture.bytes().toString()) as { 'backup-id': string };
    expect(json['backup-id']).toBe('restore');
  });

  it('refuses a blob file that is not the one the manifest names', async () => {
    const dir = backupDir(group, 1_700_000_600);
    const b = await SnapshotBuilder.start(fixture.store, dir);
    await b.addBlob('vm.conf.blob', conf);
    await b.finish();
    writeFileSync(
      fixture.store.archivePath(dir, 'vm.conf.blob'),
      encodeBlob(new TextEncoder().encode('memory: 9999\ncores: 2\n'), { compress: false }),
    );
    const err = await failure(restore(dir, { archiveName: 'vm.conf', target: target() }));
    expect(['DIGEST_MISMATCH', 'SIZE_MISMATCH']).toContain(err.code);
    expect(err.message).toContain('vm.conf.blob');
  });
});

describe('snapshotCatalog', () => {
  const entries = (prefix: string): string[] => [
    `f "./${prefix}/a.txt" 6 ${MTIME_TEXT}`,
    `d "./${prefix}/dir"`,
    `f "./${prefix}/dir/b.bin" ${BIG} ${MTIME_TEXT}`,
    `d "./${prefix}/dir/empty"`,
    `h "./${prefix}/dir/hard"`,
    `d "./${prefix}/dir/sub"`,
    `f "./${prefix}/dir/sub/c.txt" 4 ${MTIME_TEXT}`,
    `l "./${prefix}/link"`,
  ];

  it('dumps the legacy catalog', async () => {
    await withReader(LEGACY, async (reader) => {
      const catalog = await snapshotCatalog(reader, await readSnapshotManifest(reader));
      expect(catalog.source).toBe('catalog');
      expect(await lines(catalog.dump())).toEqual([
        'd "./root.pxar.didx"',
        ...entries('root.pxar.didx'),
      ]);
    });
  });

  it('dumps a split snapshot from its metadata archive, in the same format', async () => {
    await withReader(SPLIT, async (inner) => {
      const reader = countingReader(inner);
      const catalog = await snapshotCatalog(reader, await readSnapshotManifest(reader));
      expect(catalog.source).toBe('metadata-archives');
      expect(await lines(catalog.dump())).toEqual(entries('root.mpxar.didx'));
      // Only the metadata stream was read.
      const payload = new Set(
        splitPayload.chunks.map((c) => Buffer.from(c.digest).toString('hex')),
      );
      expect(reader.chunkFetches.some((d) => payload.has(d))).toBe(false);
    });
  });

  for (const dir of [LEGACY, SPLIT]) {
    const prefix = dir === LEGACY ? 'root.pxar.didx' : 'root.mpxar.didx';
    it(`finds entries by pattern (${prefix})`, async () => {
      await withReader(dir, async (reader) => {
        const catalog = await snapshotCatalog(reader, await readSnapshotManifest(reader));
        expect(await lines(catalog.find('*.txt'))).toEqual([
          `f "./${prefix}/a.txt" 6 ${MTIME_TEXT}`,
          `f "./${prefix}/dir/sub/c.txt" 4 ${MTIME_TEXT}`,
        ]);
        expect(await lines(catalog.find('/dir/*'))).toEqual([
          `f "./${prefix}/dir/b.bin" ${BIG} ${MTIME_TEXT}`,
          `d "./${prefix}/dir/empty"`,
          `h "./${prefix}/dir/hard"`,
          `d "./${prefix}/dir/sub"`,
        ]);
        // An excluded directory is not walked: nothing below it can be included.
        expect(await lines(catalog.find(['*', '!/dir']))).toEqual([
          `f "./${prefix}/a.txt" 6 ${MTIME_TEXT}`,
          `l "./${prefix}/link"`,
        ]);
        expect(() => catalog.find('[')).toThrow(/invalid pattern/);
      });
    });
  }

  it('needs a catalog or split archives', async () => {
    const dir = backupDir(group, 1_700_000_700);
    const b = await SnapshotBuilder.start(fixture.store, dir);
    await b.addBlob('vm.conf.blob', conf);
    await b.finish();
    await withReader(dir, async (reader) => {
      expect(
        await rejectionCodeOf(snapshotCatalog(reader, await readSnapshotManifest(reader))),
      ).toBe('NOT_FOUND');
    });
    expect(existsSync(source)).toBe(true);
  });
});
