import { createCipheriv, createHash, generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rm,
  symlink,
  link,
  truncate,
  writeFile,
  open,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { codeOf, rejectionCodeOf } from '../../test/helpers/error-code.js';
import { type StoreFixture, makeStore } from '../../test/helpers/store-fixture.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { unwrapKeyWithMasterKey } from '../crypto/master-key.js';
import { decryptKeyConfig } from '../crypto/key-config.js';
import type { DataStore } from '../datastore/datastore.js';
import { CatalogReader } from '../format/catalog.js';
import { blobKindOf, decodeBlob } from '../format/data-blob.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import type { BackupManifest } from '../format/manifest.js';
import { parseManifest, verifyManifest } from '../format/manifest.js';
import { toHex } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import { PxarDecoder } from '../pxar/decoder.js';
import { bytesRandomAccess } from '../pxar/random-access.js';
import { parseAuthid } from '../types/auth.js';
import type { BackupDir, BackupGroup } from '../types/backup.js';
import { ROOT_NAMESPACE, backupGroup } from '../types/backup.js';
import type { BackupOptions, BackupProgress, BackupSummary } from './backup.js';
import { parseArchiveSpec, runBackup } from './backup.js';
import type { BackupReader, BackupWriter } from './backup-writer.js';
import { ChunkWorkerPool } from './chunk-pipeline.js';
import { openLocalBackupReader, openLocalBackupWriter } from './local-repository.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ROOT = parseAuthid('root@pam');
/** The smallest average PBS allows: small test trees still make several chunks. */
const SMALL_CHUNKS = 64 * KiB;
/** pbs-protocol §11 vector 5's key. */
const SPEC_ENC_KEY = Buffer.from(
  '28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e',
  'hex',
);

let fx: StoreFixture;
let store: DataStore;
let pool: ChunkWorkerPool;
let tmp: string;
/** A 3072-bit master key pair, generated in the background while the store is made. */
let masterKey: Promise<{ publicKey: string; privateKey: string }>;

beforeAll(async () => {
  masterKey = promisify(generateKeyPair)('rsa', {
    modulusLength: 3072,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  fx = await makeStore({ name: 'backupstore' });
  store = fx.store;
  pool = ChunkWorkerPool.create(2);
});

afterAll(async () => {
  await pool?.close();
  await fx?.cleanup();
});

afterEach(async () => {
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  tmp = await mkdtemp(join(tmpdir(), 'burrow-backup-'));
  return tmp;
}

let groupSeq = 0;
const nextGroup = (): BackupGroup => backupGroup(ROOT_NAMESPACE, 'host', `bk${++groupSeq}`);
const T0 = 1_700_000_000;

/** Deterministic incompressible bytes (AES-CTR keystream), independent of the code under test. */
function pseudoRandom(size: number, seed: number): Uint8Array {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]));
}

/** A small tree: text, incompressible files over several chunks, subdirs, a symlink, a hardlink. */
async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'dir/sub'), { recursive: true });
  await mkdir(join(root, 'dir/empty'));
  await writeFile(join(root, 'a.txt'), 'hello world\n');
  await writeFile(join(root, 'big.bin'), pseudoRandom(700 * KiB, 1));
  await writeFile(join(root, 'dir/b.txt'), 'b'.repeat(5000));
  await writeFile(join(root, 'dir/sub/c.bin'), pseudoRandom(300 * KiB, 2));
  for (let i = 0; i < 20; i++)
    await writeFile(
      join(root, `dir/small-${String(i).padStart(2, '0')}`),
      pseudoRandom(9000, 100 + i),
    );
  await symlink('a.txt', join(root, 'link'));
  await link(join(root, 'dir/b.txt'), join(root, 'hard'));
}

type Node =
  | { type: 'dir' }
  | { type: 'file'; sha: string; size: number }
  | { type: 'symlink'; target: string };

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** The tree as read with plain fs calls (the independent side of every comparison). */
async function fsTree(root: string): Promise<Map<string, Node>> {
  const out = new Map<string, Node>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const r = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(path);
      if (st.isDirectory()) {
        out.set(r, { type: 'dir' });
        await walk(path, r);
      } else if (st.isSymbolicLink()) {
        out.set(r, { type: 'symlink', target: await readlink(path) });
      } else {
        const data = await readFile(path);
        out.set(r, { type: 'file', sha: sha(data), size: data.byteLength });
      }
    }
  };
  await walk(root, '');
  return out;
}

/** The tree as a pxar archive decodes (hardlinks resolved to their target's content). */
async function pxarTree(archive: Uint8Array, payload?: Uint8Array): Promise<Map<string, Node>> {
  const decoder = new PxarDecoder(
    (async function* () {
      yield await Promise.resolve(archive);
    })(),
    payload === undefined ? {} : { payload: bytesRandomAccess(payload) },
  );
  const out = new Map<string, Node>();
  const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');
  for (;;) {
    const event = await decoder.next();
    if (event === undefined) break;
    if (event.type !== 'entry' || event.entry.path.length === 0) continue;
    const path = text(event.entry.path);
    const body = event.entry.body;
    if (body.kind === 'directory') out.set(path, { type: 'dir' });
    else if (body.kind === 'symlink') out.set(path, { type: 'symlink', target: text(body.target) });
    else if (body.kind === 'hardlink') out.set(path, out.get(text(body.target))!);
    else if (body.kind === 'file') {
      const parts: Uint8Array[] = [];
      for await (const piece of decoder.contents()) parts.push(piece.slice());
      const data = Buffer.concat(parts);
      out.set(path, { type: 'file', sha: sha(data), size: data.byteLength });
    } else out.set(path, { type: 'dir' }); // no special files in these trees
  }
  return out;
}

interface Snapshot {
  dir: BackupDir;
  reader: BackupReader;
  manifest: BackupManifest;
}

async function openSnapshot(dir: BackupDir): Promise<Snapshot> {
  const reader = await openLocalBackupReader(store, dir);
  const manifest = parseManifest(decodeBlob(await reader.download('index.json.blob')));
  return { dir, reader, manifest };
}

/** A dynamic index archive reassembled from its chunks (each checked against its digest). */
async function readDynamic(s: Snapshot, name: string, crypt?: CryptConfig): Promise<Uint8Array> {
  const index = DynamicIndex.parse(await s.reader.download(name));
  const entry = s.manifest.files.find((f) => f.filename === name)!;
  expect(entry.size).toBe(index.size);
  expect(entry.csum).toBe(toHex(index.computeCsum()));
  const parts: Uint8Array[] = [];
  for (const chunk of index) {
    const data = decodeBlob(await s.reader.chunk(chunk.digest), {
      ...(crypt === undefined ? {} : { crypt }),
      expectedDigest: chunk.digest,
    });
    expect(data.byteLength).toBe(chunk.end - chunk.start);
    parts.push(data.slice());
  }
  return Buffer.concat(parts);
}

interface Run {
  summary: BackupSummary;
  dir: BackupDir;
  warnings: string[];
}

async function backup(
  group: BackupGroup,
  time: number,
  options: Omit<BackupOptions, 'writer'>,
  wrap?: (w: BackupWriter) => BackupWriter,
): Promise<Run> {
  const writer = await openLocalBackupWriter(store, {
    ns: ROOT_NAMESPACE,
    group,
    backupTime: time,
    authId: ROOT,
    // As the CLI opens it: the pipeline's workers write new chunks' files themselves.
    trustChunks: true,
  });
  const warnings: string[] = [];
  try {
    const summary = await runBackup({
      pool,
      chunkSize: SMALL_CHUNKS,
      onWarning: (m) => warnings.push(m),
      openPreviousReader: (dir) => openLocalBackupReader(store, dir),
      ...options,
      writer: wrap === undefined ? writer : wrap(writer),
    });
    return { summary, dir: writer.snapshot, warnings };
  } finally {
    await writer.close();
  }
}

describe('parseArchiveSpec', () => {
  it('splits PBS archive specs', () => {
    expect(parseArchiveSpec('root.pxar:/')).toEqual({ name: 'root.pxar', kind: 'pxar', path: '/' });
    expect(parseArchiveSpec('disk_0.img:/dev/sda')).toEqual({
      name: 'disk_0.img',
      kind: 'img',
      path: '/dev/sda',
    });
    expect(parseArchiveSpec('vm.conf:./a:b')).toEqual({
      name: 'vm.conf',
      kind: 'conf',
      path: './a:b',
    });
    expect(parseArchiveSpec('x.y-z.log:l')).toEqual({ name: 'x.y-z.log', kind: 'log', path: 'l' });
  });

  it('rejects bad names, unknown kinds and missing paths', () => {
    for (const bad of [
      'root.pxar',
      'root.pxar:',
      '.root.pxar:/',
      '-a.img:/x',
      'a b.pxar:/',
      'a.tar:/',
      'a.didx:/',
      ':/',
    ])
      expect(codeOf(() => parseArchiveSpec(bad))).toBe('INVALID_ARGUMENT');
  });
});

describe('runBackup, legacy pxar', () => {
  it('writes the pxar archive and the catalog; reading them back gives the tree', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    const group = nextGroup();
    const { summary, dir } = await backup(group, T0, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
    });
    expect(summary.dryRun).toBe(false);
    expect(summary.archives.map((a) => a.name)).toEqual(['root.pxar.didx', 'catalog.pcat1.didx']);
    expect(summary.chunksNew).toBeGreaterThan(5);
    expect(summary.bytesRead).toBe(700 * KiB + 5000 + 300 * KiB + 20 * 9000 + 12);

    const s = await openSnapshot(dir);
    try {
      expect(s.manifest.files.map((f) => [f.filename, f.cryptMode])).toEqual([
        ['root.pxar.didx', 'none'],
        ['catalog.pcat1.didx', 'none'],
      ]);
      expect(s.manifest.signature).toBeNull();
      const pxar = await readDynamic(s, 'root.pxar.didx');
      expect(await pxarTree(pxar)).toEqual(await fsTree(src));

      const catalog = CatalogReader.fromBytes(await readDynamic(s, 'catalog.pcat1.didx'));
      const listed: string[] = [];
      for await (const item of catalog.dump()) listed.push(Buffer.from(item.path).toString());
      const expected = [...(await fsTree(src)).keys()].map((p) => `root.pxar.didx/${p}`);
      expect(listed.sort()).toEqual(['root.pxar.didx', ...expected].sort());
    } finally {
      await s.reader.close();
    }
  });

  it('a second backup of the same tree reuses every chunk', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    const group = nextGroup();
    const first = await backup(group, T0, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
    });
    const second = await backup(group, T0 + 1, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
    });
    expect(second.summary.chunksNew).toBe(0);
    expect(second.summary.bytesStored).toBe(0);
    // Earlier tests stored some of these chunks already: the first backup found them there.
    expect(second.summary.chunksReused).toBe(first.summary.chunksNew + first.summary.chunksReused);
    const [a, b] = [await openSnapshot(first.dir), await openSnapshot(second.dir)];
    try {
      expect(b.manifest.files).toEqual(a.manifest.files);
    } finally {
      await a.reader.close();
      await b.reader.close();
    }
  });

  it('a first backup into a new group references the chunks another group stored', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await writeFile(join(src, 'one.bin'), pseudoRandom(900 * KiB, 901));
    await writeFile(join(src, 'two.txt'), 'text that compresses well\n'.repeat(20_000));
    const first = await backup(nextGroup(), T0, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
    });
    expect(first.summary.chunksNew).toBeGreaterThan(3);
    // No previous snapshot in this group, but every chunk is in the store already.
    const other = await backup(nextGroup(), T0, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
    });
    expect(other.summary.chunksNew).toBe(0);
    expect(other.summary.bytesStored).toBe(0);
    expect(other.summary.chunksReused).toBe(first.summary.chunksNew);
    const s = await openSnapshot(other.dir);
    try {
      expect(await pxarTree(await readDynamic(s, 'root.pxar.didx'))).toEqual(await fsTree(src));
      // Counted as the store counts an upload of a chunk it has: a duplicate.
      expect(s.manifest.unprotected['chunk_upload_stats']).toMatchObject({
        duplicates: other.summary.chunksReused,
      });
    } finally {
      await s.reader.close();
    }
  });

  it('does not trust a previous index that does not match its manifest entry', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await writeFile(join(src, 'f'), pseudoRandom(300 * KiB, 8));
    const group = nextGroup();
    const archives = [parseArchiveSpec(`root.pxar:${src}`)];
    await backup(group, T0, { archives, cryptMode: 'none' });
    const tampered = await backup(group, T0 + 1, { archives, cryptMode: 'none' }, (w) => ({
      snapshot: w.snapshot,
      previousBackupTime: () => w.previousBackupTime(),
      createIndex: (...a) => w.createIndex(...a),
      uploadChunk: (...a) => w.uploadChunk(...a),
      appendIndex: (...a) => w.appendIndex(...a),
      closeIndex: (...a) => w.closeIndex(...a),
      uploadBlob: (...a) => w.uploadBlob(...a),
      finish: () => w.finish(),
      close: () => w.close(),
      downloadPrevious: async (name) => {
        const raw = await w.downloadPrevious(name);
        if (raw === undefined || name !== 'root.pxar.didx') return raw;
        const copy = raw.slice();
        copy[4096 + 8] = copy[4096 + 8]! ^ 1; // first digest of the index body
        return copy;
      },
    }));
    expect(tampered.warnings.join('\n')).toMatch(/not reusing the previous root\.pxar\.didx/);
    expect(tampered.summary.archives[0]!.reusedChunks).toBe(0);
  });

  it('excludes patterns and stores .pxarexclude-cli', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    const { dir } = await backup(nextGroup(), T0, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
      excludePatterns: ['dir/small-*', '*.bin'],
    });
    const s = await openSnapshot(dir);
    try {
      const tree = await pxarTree(await readDynamic(s, 'root.pxar.didx'));
      expect([...tree.keys()].sort()).toEqual(
        [
          '.pxarexclude-cli',
          'a.txt',
          'dir',
          'dir/b.txt',
          'dir/empty',
          'dir/sub',
          'hard',
          'link',
        ].sort(),
      );
    } finally {
      await s.reader.close();
    }
  });
  it('two directories: two archives, one catalog with a top directory for each', async () => {
    const base = await tempDir();
    await mkdir(join(base, 'one/x'), { recursive: true });
    await mkdir(join(base, 'two'));
    await writeFile(join(base, 'one/x/f'), 'f');
    await writeFile(join(base, 'two/g'), 'gg');
    const { dir } = await backup(nextGroup(), T0, {
      archives: [
        parseArchiveSpec(`one.pxar:${join(base, 'one')}`),
        parseArchiveSpec(`two.pxar:${join(base, 'two')}`),
      ],
      cryptMode: 'none',
    });
    const s = await openSnapshot(dir);
    try {
      expect(s.manifest.files.map((f) => f.filename)).toEqual([
        'one.pxar.didx',
        'two.pxar.didx',
        'catalog.pcat1.didx',
      ]);
      const catalog = CatalogReader.fromBytes(await readDynamic(s, 'catalog.pcat1.didx'));
      const lines: string[] = [];
      for await (const item of catalog.dump()) lines.push(Buffer.from(item.path).toString());
      expect(lines).toEqual([
        'one.pxar.didx',
        'one.pxar.didx/x',
        'one.pxar.didx/x/f',
        'two.pxar.didx',
        'two.pxar.didx/g',
      ]);
    } finally {
      await s.reader.close();
    }
  });

  it('refuses an --include-dev path that does not exist', async () => {
    const base = await tempDir();
    expect(
      await rejectionCodeOf(
        backup(nextGroup(), T0, {
          archives: [parseArchiveSpec(`root.pxar:${base}`)],
          cryptMode: 'none',
          includeDevices: [join(base, 'missing')],
        }),
      ),
    ).toBe('INVALID_ARGUMENT');
  });
});

describe('runBackup, split archives', () => {
  it('data mode writes mpxar + ppxar and no catalog; they decode to the tree', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    const { summary, dir } = await backup(nextGroup(), T0, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
      changeDetectionMode: 'data',
    });
    expect(summary.archives.map((a) => a.name)).toEqual(['root.ppxar.didx', 'root.mpxar.didx']);
    const s = await openSnapshot(dir);
    try {
      expect(s.manifest.files.map((f) => f.filename)).toEqual([
        'root.ppxar.didx',
        'root.mpxar.didx',
      ]);
      const meta = await readDynamic(s, 'root.mpxar.didx');
      const payload = await readDynamic(s, 'root.ppxar.didx');
      expect(await pxarTree(meta, payload)).toEqual(await fsTree(src));
      // Suggested boundaries: the big file's payload starts a chunk of the payload index.
      const index = DynamicIndex.parse(await s.reader.download('root.ppxar.didx'));
      expect(index.count).toBeGreaterThan(3);
    } finally {
      await s.reader.close();
    }
  });

  it('metadata mode reuses unchanged files and re-reads changed ones', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    const group = nextGroup();
    const archives = [parseArchiveSpec(`root.pxar:${src}`)];
    const first = await backup(group, T0, {
      archives,
      cryptMode: 'none',
      changeDetectionMode: 'metadata',
    });
    // Nothing to compare with yet: written as in data mode, and said so.
    expect(first.summary.notes.join('\n')).toMatch(/no usable previous snapshot/);

    const before = await fsTree(src);
    const second = await backup(group, T0 + 1, {
      archives,
      cryptMode: 'none',
      changeDetectionMode: 'metadata',
    });
    const payload2 = second.summary.archives.find((a) => a.name === 'root.ppxar.didx')!;
    // Every regular file but the second name of the hardlink (a HARDLINK item) is reused.
    expect(payload2.reusedFiles).toBe(24);
    expect(second.summary.bytesRead).toBe(0);
    // Only the start and tail markers (16 bytes each) can be new payload chunks.
    expect(payload2.storedBytes).toBeLessThan(200);

    // Change one small file in the middle and one big file; add a file.
    await writeFile(join(src, 'dir/small-10'), pseudoRandom(9000, 999));
    await writeFile(join(src, 'big.bin'), pseudoRandom(700 * KiB, 77));
    await writeFile(join(src, 'dir/new'), 'new file');
    const third = await backup(group, T0 + 2, {
      archives,
      cryptMode: 'none',
      changeDetectionMode: 'metadata',
    });
    const payload3 = third.summary.archives.find((a) => a.name === 'root.ppxar.didx')!;
    expect(payload3.reusedFiles).toBeGreaterThan(10);
    expect(third.summary.bytesRead).toBeGreaterThanOrEqual(700 * KiB + 9000 + 8);
    expect(third.summary.bytesRead).toBeLessThan(900 * KiB + 9000 + 8);

    for (const run of [second, third]) {
      const s = await openSnapshot(run.dir);
      try {
        const meta = await readDynamic(s, 'root.mpxar.didx');
        const payload = await readDynamic(s, 'root.ppxar.didx');
        const tree = await pxarTree(meta, payload);
        expect(tree).toEqual(run === third ? await fsTree(src) : before);
      } finally {
        await s.reader.close();
      }
    }
  });
});

describe('runBackup, encryption', () => {
  it('encrypt mode: encrypted chunks and blobs, a signed manifest, the RSA-wrapped key', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    await writeFile(join(tmp, 'vm.conf'), 'memory: 512\ncores: 2\n');
    const crypt = new CryptConfig(SPEC_ENC_KEY);
    const { publicKey, privateKey } = await masterKey;
    const group = nextGroup();
    const { dir } = await backup(group, T0, {
      archives: [
        parseArchiveSpec(`root.pxar:${src}`),
        parseArchiveSpec(`vm.conf:${join(tmp, 'vm.conf')}`),
      ],
      cryptMode: 'encrypt',
      crypt,
      masterPublicKey: publicKey,
    });
    const s = await openSnapshot(dir);
    try {
      const m = s.manifest;
      expect(m.files.map((f) => [f.filename, f.cryptMode])).toEqual([
        ['root.pxar.didx', 'encrypt'],
        ['vm.conf.blob', 'encrypt'],
        ['catalog.pcat1.didx', 'encrypt'],
        ['rsa-encrypted.key.blob', 'encrypt'],
      ]);
      expect(m.unprotected['key-fingerprint']).toBe(
        '12:b9:b7:74:bb:3d:89:95:2b:97:cb:c2:82:f0:0c:14:2b:83:ba:7f:96:62:6a:a1:5a:44:9a:63:e8:91:fe:25',
      );
      expect(verifyManifest(m, crypt)).toMatchObject({ signed: true, verified: true });
      expect(codeOf(() => verifyManifest(m, new CryptConfig(Buffer.alloc(32, 7))))).toBe(
        'MANIFEST_WRONG_KEY',
      );

      const index = DynamicIndex.parse(await s.reader.download('root.pxar.didx'));
      const first = index.digest(0);
      expect(blobKindOf(await s.reader.chunk(first))).toMatch(/encrypted/);
      expect(await pxarTree(await readDynamic(s, 'root.pxar.didx', crypt))).toEqual(
        await fsTree(src),
      );

      const conf = await s.reader.download('vm.conf.blob');
      expect(blobKindOf(conf)).toMatch(/encrypted/);
      expect(Buffer.from(decodeBlob(conf, { crypt })).toString()).toBe('memory: 512\ncores: 2\n');

      const wrapped = await s.reader.download('rsa-encrypted.key.blob');
      expect(blobKindOf(wrapped)).toBe('plain');
      const config = unwrapKeyWithMasterKey(decodeBlob(wrapped), privateKey);
      expect(config.kdf).toBeNull();
      expect(Buffer.from((await decryptKeyConfig(config)).key)).toEqual(SPEC_ENC_KEY);
    } finally {
      await s.reader.close();
    }

    // The same tree again: everything known from the previous (same key) snapshot.
    const again = await backup(group, T0 + 1, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'encrypt',
      crypt,
    });
    expect(again.summary.chunksNew).toBe(0);
  });

  it('sign-only: plain chunks, signed manifest; a different key gets no reuse', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await writeFile(join(src, 'f'), pseudoRandom(200 * KiB, 5));
    const crypt = new CryptConfig(SPEC_ENC_KEY);
    const group = nextGroup();
    const { dir, summary } = await backup(group, T0, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'sign-only',
      crypt,
    });
    const s = await openSnapshot(dir);
    try {
      expect(s.manifest.files.every((f) => f.cryptMode === 'sign-only')).toBe(true);
      expect(verifyManifest(s.manifest, crypt)).toMatchObject({ signed: true, verified: true });
      const index = DynamicIndex.parse(await s.reader.download('root.pxar.didx'));
      const raw = await s.reader.chunk(index.digest(0));
      expect(['plain', 'zstd']).toContain(blobKindOf(raw));
      // Plain SHA-256 digests, as in mode none.
      expect(toHex(index.digest(0))).toBe(sha(decodeBlob(raw)));
    } finally {
      await s.reader.close();
    }
    const other = new CryptConfig(Buffer.alloc(32, 9));
    const second = await backup(group, T0 + 1, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'sign-only',
      crypt: other,
    });
    expect(second.warnings.join('\n')).toMatch(/cannot reuse the previous snapshot/);
    // Nothing is known from the previous snapshot, but the store still has the chunks: a local
    // backup references them there instead of encoding and uploading them again.
    expect(second.summary.chunksNew).toBe(0);
    expect(second.summary.bytesStored).toBe(0);
    expect(second.summary.chunksReused).toBe(summary.chunksNew + summary.chunksReused);
  });

  it('refuses encrypt and sign-only without a key', async () => {
    for (const cryptMode of ['encrypt', 'sign-only'] as const)
      expect(
        await rejectionCodeOf(
          runBackup({
            writer: {} as BackupWriter,
            archives: [parseArchiveSpec('a.conf:/x')],
            cryptMode,
          }),
        ),
      ).toBe('INVALID_ARGUMENT');
  });
});

describe('runBackup, images and blobs', () => {
  it('backs up a sparse image with holes and zero runs; stored size is a fraction', async () => {
    const dirPath = await tempDir();
    const path = join(dirPath, 'disk.raw');
    const size = 6 * 4 * MiB + 12345;
    const data0 = pseudoRandom(4 * MiB, 11);
    const data4 = pseudoRandom(MiB, 12);
    await writeFile(path, '');
    await truncate(path, size);
    const fh = await open(path, 'r+');
    try {
      await fh.write(data0, 0, data0.length, 0); // chunk 0: data
      // chunks 1, 2: hole; chunk 3: written zeros (a zero run, not a hole)
      await fh.write(new Uint8Array(4 * MiB), 0, 4 * MiB, 3 * 4 * MiB);
      await fh.write(data4, 0, data4.length, 4 * 4 * MiB + 2 * MiB); // chunk 4: half hole, half data
      // chunk 5 and the 12345-byte tail: hole
    } finally {
      await fh.close();
    }
    const progress: BackupProgress[] = [];
    const { summary, dir } = await backup(nextGroup(), T0, {
      archives: [parseArchiveSpec(`disk.img:${path}`)],
      cryptMode: 'none',
      onProgress: (p) => progress.push({ ...p }),
    });
    const phases = progress.map((p) => p.phase).filter((p, i, a) => a[i - 1] !== p);
    expect(phases).toEqual(['previous', 'archive', 'manifest', 'finish', 'done']);
    const reading = progress.filter((p) => p.phase === 'archive');
    expect(reading.every((p) => p.archive === 'disk.img' && p.totalBytes === size)).toBe(true);
    expect(reading.map((p) => p.bytesRead)).toEqual(
      [1, 2, 3, 4, 5, 6].map((n) => n * 4 * MiB).concat(size),
    );
    expect(progress.at(-1)).toMatchObject({ chunksNew: 4, chunksReused: 3 });
    const img = summary.archives[0]!;
    expect(img).toMatchObject({ name: 'disk.img.fidx', kind: 'img', size, chunks: 7 });
    // Distinct chunk contents: data0, the 4 MiB zero chunk (4 times), chunk 4, the zero tail.
    expect(img.newChunks).toBe(4);
    expect(img.reusedChunks).toBe(3);
    expect(summary.bytesStored).toBeLessThan(4 * MiB + MiB + 64 * KiB);

    const s = await openSnapshot(dir);
    try {
      const index = FixedIndex.parse(await s.reader.download('disk.img.fidx'));
      expect(index.size).toBe(size);
      expect(s.manifest.files[0]).toMatchObject({
        filename: 'disk.img.fidx',
        size,
        csum: toHex(index.computeCsum()),
      });
      const expected = await readFile(path);
      for (const chunk of index) {
        const got = decodeBlob(await s.reader.chunk(chunk.digest), {
          expectedDigest: chunk.digest,
        });
        expect(Buffer.compare(got, expected.subarray(chunk.start, chunk.end))).toBe(0);
      }
      expect(toHex(index.digest(1))).toBe(
        'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8',
      );
    } finally {
      await s.reader.close();
    }
  });

  it('stores conf and log files as blobs: size and csum of the encoded bytes', async () => {
    const dirPath = await tempDir();
    const conf = join(dirPath, 'qemu.conf');
    const text = 'boot: order=scsi0\n'.repeat(200);
    await writeFile(conf, text);
    await writeFile(join(dirPath, 'x.log'), '');
    const { summary, dir } = await backup(nextGroup(), T0, {
      // runBackup makes (and closes) its own worker pool without one.
      pool: undefined,
      archives: [
        parseArchiveSpec(`qemu-server.conf:${conf}`),
        parseArchiveSpec(`x.log:${join(dirPath, 'x.log')}`),
      ],
      cryptMode: 'none',
    });
    expect(summary.archives.map((a) => a.name)).toEqual(['qemu-server.conf.blob', 'x.log.blob']);
    const s = await openSnapshot(dir);
    try {
      const raw = await readFile(store.archivePath(dir, 'qemu-server.conf.blob'));
      expect(s.manifest.files[0]).toEqual({
        filename: 'qemu-server.conf.blob',
        cryptMode: 'none',
        size: raw.byteLength,
        csum: sha(raw),
      });
      expect(blobKindOf(raw)).toBe('zstd');
      expect(raw.byteLength).toBeLessThan(text.length);
      expect(Buffer.from(decodeBlob(raw)).toString()).toBe(text);
      expect(decodeBlob(await s.reader.download('x.log.blob')).byteLength).toBe(0);
    } finally {
      await s.reader.close();
    }
  });

  it('refuses a directory as a conf file and a missing image', async () => {
    const dirPath = await tempDir();
    expect(
      await rejectionCodeOf(
        backup(nextGroup(), T0, {
          archives: [parseArchiveSpec(`a.conf:${dirPath}`)],
          cryptMode: 'none',
        }),
      ),
    ).toBe('INVALID_ARGUMENT');
    expect(
      await rejectionCodeOf(
        backup(nextGroup(), T0, {
          archives: [parseArchiveSpec(`a.img:${join(dirPath, 'nope')}`)],
          cryptMode: 'none',
        }),
      ),
    ).toBe('NOT_FOUND');
  });
});

describe('runBackup, dry run and failures', () => {
  /** Records which writer calls happened. */
  function spy(
    calls: string[],
    failOn?: { call: string; after: number },
  ): (w: BackupWriter) => BackupWriter {
    return (w) => {
      const count = new Map<string, number>();
      const hit = (name: string): void => {
        calls.push(name);
        const n = (count.get(name) ?? 0) + 1;
        count.set(name, n);
        if (failOn?.call === name && n > failOn.after)
          throw new BurrowError('IO_ERROR', `injected ${name} failure`);
      };
      return {
        snapshot: w.snapshot,
        previousBackupTime: () => w.previousBackupTime(),
        downloadPrevious: (n) => w.downloadPrevious(n),
        createIndex: async (k, n, s) => (hit('createIndex'), w.createIndex(k, n, s)),
        uploadChunk: async (...a) => (hit('uploadChunk'), w.uploadChunk(...a)),
        appendIndex: async (...a) => (hit('appendIndex'), w.appendIndex(...a)),
        closeIndex: async (...a) => (hit('closeIndex'), w.closeIndex(...a)),
        uploadBlob: async (...a) => (hit('uploadBlob'), w.uploadBlob(...a)),
        finish: async () => (hit('finish'), w.finish()),
        close: () => w.close(),
      };
    };
  }

  it('dry run reads and chunks everything but writes nothing', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    const calls: string[] = [];
    const group = nextGroup();
    const { summary, dir } = await backup(
      group,
      T0,
      { archives: [parseArchiveSpec(`root.pxar:${src}`)], cryptMode: 'none', dryRun: true },
      spy(calls),
    );
    expect(summary.dryRun).toBe(true);
    expect(summary.chunksNew).toBeGreaterThan(5);
    expect(summary.bytesRead).toBeGreaterThan(MiB);
    expect(calls).toEqual([]);
    expect(existsSync(store.snapshotPath(dir))).toBe(false);
    expect(await store.listSnapshots(group).catch(() => [])).toEqual([]);
  });

  it('a dry run counts the chunks the store holds as reused, as the real run would, and changes nothing', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await writeFile(join(src, 'one.bin'), pseudoRandom(700 * KiB, 911));
    await writeFile(join(src, 'two.txt'), 'dry run reuse\n'.repeat(30_000));
    const archives = [parseArchiveSpec(`root.pxar:${src}`)];
    const real = await backup(nextGroup(), T0, { archives, cryptMode: 'none' });
    expect(real.summary.chunksNew).toBeGreaterThan(3);
    const index = await store.openIndex(real.dir, 'root.pxar.didx');
    const digests = [...index.index].map((c) => c.digest);
    const chunkFiles = async (): Promise<Map<string, bigint>> => {
      const out = new Map<string, bigint>();
      for (const d of digests) {
        const st = await lstat(store.chunkStore.chunkPath(d), { bigint: true });
        out.set(toHex(d), st.mtimeNs);
      }
      return out;
    };
    const before = await chunkFiles();
    // Another group, no previous snapshot: only the store can tell that nothing is new.
    const group = nextGroup();
    const dry = await backup(group, T0, { archives, cryptMode: 'none', dryRun: true });
    expect(dry.summary.dryRun).toBe(true);
    expect(dry.summary.chunksNew).toBe(0);
    expect(dry.summary.bytesStored).toBe(0);
    expect(dry.summary.chunksReused).toBe(real.summary.chunksNew);
    expect(await chunkFiles()).toEqual(before);
    expect(existsSync(store.snapshotPath(dry.dir))).toBe(false);
    expect(await store.listSnapshots(group).catch(() => [])).toEqual([]);
  });

  it('an upload failure mid-backup rejects and leaves no snapshot', async () => {
    const src = join(await tempDir(), 'src');
    await mkdir(src);
    await makeTree(src);
    const group = nextGroup();
    const calls: string[] = [];
    const writerCalls = spy(calls, { call: 'uploadChunk', after: 3 });
    let dir: BackupDir | undefined;
    const error = await backup(
      group,
      T0,
      { archives: [parseArchiveSpec(`root.pxar:${src}`)], cryptMode: 'none' },
      (w) => {
        dir = w.snapshot;
        return writerCalls(w);
      },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BurrowError);
    expect((error as BurrowError).message).toMatch(/injected uploadChunk failure/);
    expect(calls).not.toContain('finish');
    expect(existsSync(store.snapshotPath(dir!))).toBe(false);
    // The group is usable again right away (locks released by close).
    const ok = await backup(group, T0 + 5, {
      archives: [parseArchiveSpec(`root.pxar:${src}`)],
      cryptMode: 'none',
    });
    expect(existsSync(join(store.snapshotPath(ok.dir), 'index.json.blob'))).toBe(true);
  });

  it('a missing source directory fails with NOT_FOUND', async () => {
    const dirPath = await tempDir();
    expect(
      await rejectionCodeOf(
        backup(nextGroup(), T0, {
          archives: [parseArchiveSpec(`root.pxar:${join(dirPath, 'missing')}`)],
          cryptMode: 'none',
        }),
      ),
    ).toBe('NOT_FOUND');
  });

  it('an abort signal stops the backup with TASK_ABORTED', async () => {
    const dirPath = await tempDir();
    const path = join(dirPath, 'disk.raw');
    await writeFile(path, pseudoRandom(3 * 4 * MiB, 3));
    const controller = new AbortController();
    const code = await rejectionCodeOf(
      backup(nextGroup(), T0, {
        archives: [parseArchiveSpec(`disk.img:${path}`)],
        cryptMode: 'none',
        signal: controller.signal,
        onProgress: (p) => {
          if (p.phase === 'archive' && p.bytesRead > 0) controller.abort();
        },
      }),
    );
    expect(code).toBe('TASK_ABORTED');
  });

  it('rejects duplicate archive names', async () => {
    expect(
      await rejectionCodeOf(
        runBackup({
          writer: {} as BackupWriter,
          archives: [parseArchiveSpec('a.conf:/x'), parseArchiveSpec('a.conf:/y')],
          cryptMode: 'none',
        }),
      ),
    ).toBe('INVALID_ARGUMENT');
  });
});
