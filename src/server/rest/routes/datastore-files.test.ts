import {
  chmodSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decompress } from 'zstd-napi';
import { CryptConfig } from '../../../crypto/crypt-config.js';
import { encodeBlob } from '../../../format/data-blob.js';
import { CLIENT_LOG_BLOB_NAME, type BackupManifest } from '../../../format/manifest.js';
import { codeOf } from '../../../../test/helpers/error-code.js';
import { pxarArchiveNames } from './datastore-archive.js';
import { parseAuthid } from '../../../types/auth.js';
import { ROOT_NAMESPACE, backupDir, backupGroup, type BackupDir } from '../../../types/backup.js';
import { SnapshotBuilder, newCatalog } from '../../../../test/helpers/snapshot-builder.js';
import { readTar, readZip } from '../../../../test/helpers/archive-readers.js';
import {
  ROLES,
  api,
  startRestWorld,
  type RestWorld,
} from '../../../../test/helpers/rest-datastore-fixture.js';

const group = backupGroup(ROOT_NAMESPACE, 'host', 'files');
const LEGACY = backupDir(group, 1_700_000_000);
const SPLIT = backupDir(group, 1_700_000_100);
const CRYPT = backupDir(group, 1_700_000_200);
const MTIME = 1_600_000_000;
const BIG = 300_000;
const conf = new TextEncoder().encode('memory: 2048\n');
const image = new Uint8Array(3 * 65536 - 100);

function patterned(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
const big = patterned(BIG, 1);

let world: RestWorld;
let work: string;

const q = (dir: BackupDir, extra: Record<string, string | number | boolean> = {}) => ({
  'backup-type': dir.group.type,
  'backup-id': dir.group.id,
  'backup-time': dir.time,
  ...extra,
});
const b64 = (text: string): string => Buffer.from(text).toString('base64');
/** GET a snapshot route of store1 as `user`, with the snapshot's parameters and `extra`. */
const get = (
  route: string,
  user: string,
  dir: BackupDir,
  extra: Record<string, string | number | boolean> = {},
) => api(world, 'GET', `/admin/datastore/store1/${route}`, user, q(dir, extra));

/** a.txt, dir/b.bin (+ hardlink dir/hard), dir/sub/c.txt (0640), dir/empty/, link -> a.txt */
function makeTree(root: string): void {
  mkdirSync(join(root, 'dir', 'sub'), { recursive: true });
  mkdirSync(join(root, 'dir', 'empty'));
  writeFileSync(join(root, 'a.txt'), 'hello\n');
  writeFileSync(join(root, 'dir', 'b.bin'), big);
  linkSync(join(root, 'dir', 'b.bin'), join(root, 'dir', 'hard'));
  writeFileSync(join(root, 'dir', 'sub', 'c.txt'), 'sea\n');
  chmodSync(join(root, 'dir', 'sub', 'c.txt'), 0o640);
  symlinkSync('a.txt', join(root, 'link'));
  for (const p of ['a.txt', 'dir/b.bin', 'dir/sub/c.txt', 'dir/sub', 'dir/empty', 'dir', '.']) {
    utimesSync(join(root, p), MTIME, MTIME);
  }
}

beforeAll(async () => {
  world = await startRestWorld();
  world.access
    .allow('reader@pbs', '/datastore/store1', ROLES.reader)
    .allow('audit@pbs', '/datastore/store1', ROLES.audit)
    .allow('backup@pbs', '/datastore/store1', ROLES.backup)
    .allow('other@pbs', '/datastore/store1', ROLES.backup);
  work = mkdtempSync(join(tmpdir(), 'burrow-rest-files-'));
  const source = join(work, 'src');
  mkdirSync(source);
  makeTree(source);
  image.set(patterned(image.length, 3));

  const legacy = await SnapshotBuilder.start(world.store, LEGACY);
  const catalog = newCatalog();
  await legacy.addPxar('root', source, { catalog: catalog.writer, avg: 65536 });
  await catalog.writer.finish();
  await legacy.addStream('catalog.pcat1.didx', catalog.sink.bytes());
  await legacy.addImage('disk.img.fidx', image, 65536);
  await legacy.addBlob('vm.conf.blob', conf);
  await legacy.finish();

  const split = await SnapshotBuilder.start(world.store, SPLIT);
  await split.addPxar('root', source, { split: true, avg: 65536 });
  await split.finish();

  const crypt = await SnapshotBuilder.start(world.store, CRYPT, {
    crypt: new CryptConfig(new Uint8Array(32).fill(3)),
  });
  await crypt.addPxar('root', source);
  await crypt.addBlob('vm.conf.blob', conf);
  await crypt.finish();

  await world.store.setOwner(group, parseAuthid('backup@pbs'), true);
}, 60_000);

afterAll(async () => {
  await world.close();
  rmSync(work, { recursive: true, force: true });
});

describe('download', () => {
  it('sends the stored bytes of a file for Datastore.Read and for the owner', async () => {
    const r = await get('download', 'reader@pbs', LEGACY, { 'file-name': 'vm.conf.blob' });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/octet-stream');
    expect(r.body.equals(encodeBlob(conf, { compress: true }))).toBe(true);
    const owner = await get('download', 'backup@pbs', LEGACY, { 'file-name': 'index.json.blob' });
    expect(owner.status).toBe(200);
    const other = await get('download', 'other@pbs', LEGACY, { 'file-name': 'vm.conf.blob' });
    expect(other.status).toBe(400);
    expect(other.text).toBe('backup owner check failed (other@pbs != backup@pbs)');
    const audit = await get('download', 'audit@pbs', LEGACY, { 'file-name': 'vm.conf.blob' });
    expect(audit.status).toBe(403);
    expect(audit.text).toBe(
      'permission check failed - missing Datastore.Read|Datastore.Backup on /datastore/store1',
    );
    const missing = await get('download', 'reader@pbs', LEGACY, { 'file-name': 'nope.blob' });
    expect(missing.status).toBe(404);
    expect(missing.text).toBe('File open failed: ENOENT');
  });
});

describe('download-decoded', () => {
  it('decodes blobs, fixed and dynamic indexes', async () => {
    const blob = await get('download-decoded', 'reader@pbs', LEGACY, {
      'file-name': 'vm.conf.blob',
    });
    expect(Buffer.from(conf).equals(blob.body)).toBe(true);
    const img = await get('download-decoded', 'reader@pbs', LEGACY, {
      'file-name': 'disk.img.fidx',
    });
    expect(img.status).toBe(200);
    expect(img.body.equals(image)).toBe(true);
    const payload = await get('download-decoded', 'reader@pbs', SPLIT, {
      'file-name': 'root.ppxar.didx',
    });
    expect(payload.status).toBe(200);
    // The payload stream holds every file's content; b.bin is its largest part.
    expect(payload.body.includes(Buffer.from(big))).toBe(true);
  });

  it('refuses encrypted files', async () => {
    const r = await get('download-decoded', 'reader@pbs', CRYPT, { 'file-name': 'root.pxar.didx' });
    expect(r.status).toBe(400);
    expect(r.text).toBe("cannot decode 'root.pxar.didx' - is encrypted");
  });
});

describe('catalog', () => {
  it('lists the archives at the root and a directory of the catalog', async () => {
    const root = await get('catalog', 'reader@pbs', LEGACY, { filepath: 'root' });
    expect(root.status).toBe(200);
    expect(root.data).toEqual([
      { filepath: b64('/root.pxar.didx'), text: 'root.pxar.didx', type: 'd', leaf: false },
    ]);
    const top = await get('catalog', 'reader@pbs', LEGACY, { filepath: b64('/root.pxar.didx') });
    expect(top.data).toEqual([
      {
        filepath: b64('root.pxar.didx/a.txt'),
        text: 'a.txt',
        type: 'f',
        leaf: true,
        size: 6,
        mtime: MTIME,
      },
      { filepath: b64('root.pxar.didx/dir'), text: 'dir', type: 'd', leaf: false },
      { filepath: b64('root.pxar.didx/link'), text: 'link', type: 'l', leaf: true },
    ]);
    const missing = await get('catalog', 'reader@pbs', LEGACY, {
      filepath: b64('/root.pxar.didx/nope'),
    });
    expect(missing.status).toBe(404);
    expect(missing.text).toBe('path "/root.pxar.didx/nope" not found in catalog');
  });

  it("reads a split archive's metadata with archive-name (a .pxar name falls back to .mpxar)", async () => {
    const r = await get('catalog', 'reader@pbs', SPLIT, {
      filepath: b64('/dir'),
      'archive-name': 'root.pxar.didx',
    });
    expect(r.status).toBe(200);
    expect(r.data).toEqual([
      {
        filepath: b64('/dir/b.bin'),
        text: 'b.bin',
        type: 'f',
        leaf: true,
        size: BIG,
        mtime: MTIME,
      },
      { filepath: b64('/dir/empty'), text: 'empty', type: 'd', leaf: false },
      { filepath: b64('/dir/hard'), text: 'hard', type: 'h', leaf: true },
      { filepath: b64('/dir/sub'), text: 'sub', type: 'd', leaf: false },
    ]);
  });
});

describe('pxar-file-download', () => {
  it('sends a file, and a hardlink as its target, from legacy and split archives', async () => {
    for (const dir of [LEGACY, SPLIT]) {
      const file = await get('pxar-file-download', 'reader@pbs', dir, {
        filepath: b64('/root.pxar.didx/dir/b.bin'),
      });
      expect(file.status).toBe(200);
      expect(file.body.equals(big)).toBe(true);
      const hard = await get('pxar-file-download', 'reader@pbs', dir, {
        filepath: b64('/dir/hard'),
        'archive-name': 'root.pxar.didx',
      });
      expect(hard.body.equals(big)).toBe(true);
    }
  });

  it('sends a directory as ZIP', async () => {
    const r = await get('pxar-file-download', 'reader@pbs', SPLIT, {
      filepath: b64('/root.pxar.didx/dir'),
    });
    expect(r.status).toBe(200);
    const members = readZip(r.body);
    expect(members.map((m) => m.name)).toEqual([
      'dir/',
      'dir/b.bin',
      'dir/empty/',
      'dir/hard',
      'dir/sub/',
      'dir/sub/c.txt',
    ]);
    const byName = new Map(members.map((m) => [m.name, m]));
    expect(byName.get('dir/b.bin')?.data.equals(big)).toBe(true);
    expect(byName.get('dir/hard')?.data.equals(big)).toBe(true);
    expect(byName.get('dir/sub/c.txt')?.data.toString()).toBe('sea\n');
    expect(byName.get('dir/sub/c.txt')!.externalAttrs >>> 16).toBe(0o100640);
  });

  it('sends a directory as tar.zst with tar=1', async () => {
    const r = await get('pxar-file-download', 'reader@pbs', LEGACY, {
      filepath: b64('/root.pxar.didx/'),
      tar: true,
    });
    expect(r.status).toBe(200);
    const members = readTar(decompress(r.body));
    expect(members.map((m) => [m.name, m.type])).toEqual([
      ['a.txt', '0'],
      ['dir/', '5'],
      ['dir/b.bin', '0'],
      ['dir/empty/', '5'],
      ['dir/hard', '1'],
      ['dir/sub/', '5'],
      ['dir/sub/c.txt', '0'],
      ['link', '2'],
    ]);
    const byName = new Map(members.map((m) => [m.name, m]));
    expect(byName.get('dir/b.bin')?.data.equals(big)).toBe(true);
    expect(byName.get('dir/hard')?.linkName).toBe('dir/b.bin');
    expect(byName.get('link')?.linkName).toBe('a.txt');
    expect(byName.get('a.txt')).toMatchObject({ mode: 0o644, mtime: MTIME });
    expect(byName.get('dir/sub/c.txt')?.mode).toBe(0o640);
  });

  it('refuses encrypted archives, unknown paths and unsupported kinds', async () => {
    const crypt = await get('pxar-file-download', 'reader@pbs', CRYPT, {
      filepath: b64('/root.pxar.didx/a.txt'),
    });
    expect(crypt.status).toBe(400);
    expect(crypt.text).toBe("cannot decode 'root.pxar.didx' - is encrypted");
    const missing = await get('pxar-file-download', 'reader@pbs', LEGACY, {
      filepath: b64('/root.pxar.didx/nope'),
    });
    expect(missing.status).toBe(404);
    const link = await get('pxar-file-download', 'reader@pbs', LEGACY, {
      filepath: b64('/root.pxar.didx/link'),
    });
    expect(link.status).toBe(400);
    expect(link.text).toBe('cannot download file of type symlink');
    const bad64 = await get('pxar-file-download', 'reader@pbs', LEGACY, { filepath: '!!' });
    expect(bad64.status).toBe(400);
  });
});

describe('upload-backup-log', () => {
  it('stores client.log.blob once, for the owner with Datastore.Backup, CRC checked', async () => {
    const log = encodeBlob(new TextEncoder().encode('backup log\n'), { compress: true });
    const path = '/admin/datastore/store1/upload-backup-log';
    const reader = await api(world, 'POST', path, 'reader@pbs', q(LEGACY), log);
    expect(reader.status).toBe(403);
    expect(reader.text).toBe(
      'permission check failed - missing Datastore.Backup on /datastore/store1',
    );
    const other = await api(world, 'POST', path, 'other@pbs', q(LEGACY), log);
    expect(other.status).toBe(400);
    const damaged = Buffer.from(log);
    damaged.writeUInt8(damaged.readUInt8(damaged.length - 1) ^ 1, damaged.length - 1);
    const crc = await api(world, 'POST', path, 'backup@pbs', q(LEGACY), damaged);
    expect(crc.status).toBe(400);
    const ok = await api(world, 'POST', path, 'backup@pbs', q(LEGACY), log);
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ data: null });
    expect(Buffer.from(await world.store.loadBlob(LEGACY, CLIENT_LOG_BLOB_NAME)).equals(log)).toBe(
      true,
    );
    const again = await api(world, 'POST', path, 'backup@pbs', q(LEGACY), log);
    expect(again.status).toBe(409);
    expect(again.text).toBe('backup already contains a log.');
    // The log shows up in the snapshot's files, without size or crypt mode.
    const files = await get('files', 'reader@pbs', LEGACY);
    expect((files.data as Array<Record<string, unknown>>).at(-1)).toEqual({
      filename: CLIENT_LOG_BLOB_NAME,
    });
  });
});

describe('pxarArchiveNames', () => {
  const manifest = (names: string[]) =>
    ({ files: names.map((filename) => ({ filename })) }) as unknown as BackupManifest;
  it('uses listed names, pairs split archives and falls back from .pxar to .mpxar', () => {
    const split = manifest(['root.mpxar.didx', 'root.ppxar.didx']);
    const pair = { archive: 'root.mpxar.didx', payload: 'root.ppxar.didx' };
    expect(pxarArchiveNames('root.pxar.didx', split)).toEqual(pair);
    expect(pxarArchiveNames('root.mpxar.didx', split)).toEqual(pair);
    expect(pxarArchiveNames('root.ppxar.didx', split)).toEqual(pair);
    expect(pxarArchiveNames('root.pxar.didx', manifest(['root.pxar.didx']))).toEqual({
      archive: 'root.pxar.didx',
    });
    expect(codeOf(() => pxarArchiveNames('etc.pxar.didx', split))).toBe('NOT_FOUND');
  });
});

describe('damaged data', () => {
  it('cuts a decoded download short when a chunk is damaged', async () => {
    const index = await world.store.openIndex(LEGACY, 'disk.img.fidx');
    const last = index.index.digest(index.index.count - 1);
    writeFileSync(world.store.chunkStore.chunkPath(last), Buffer.from('garbage'));
    await expect(
      get('download-decoded', 'reader@pbs', LEGACY, { 'file-name': 'disk.img.fidx' }),
    ).rejects.toThrow();
  });
});
