/**
 * The server as a PBS administrator and PBS users meet it, every part a real process on
 * 127.0.0.1: `burrow-manager serve` (certificate made on first start, root@pam's initial password
 * in its file), a datastore, users, an API token and ACLs made with the admin CLI, and `burrow`
 * in remote mode over HTTPS + HTTP/2 pinned by fingerprint. It backs up, lists, restores and
 * compares; refuses a user without the privilege (403), a token that does not own the group, and
 * a second writer on a group; a killed backup leaves no snapshot; and garbage collection while a
 * backup runs keeps the chunks that backup needs.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PbsHttpClient } from '../../src/client/remote/http-client.js';
import {
  openRemoteBackupReader,
  openRemoteBackupWriter,
} from '../../src/client/remote/remote-repository.js';
import { encodeBlob } from '../../src/format/data-blob.js';
import { DynamicIndex } from '../../src/format/dynamic-index.js';
import { indexFileInfo, newManifest, serializeManifestBytes } from '../../src/format/manifest.js';
import { backupGroup, parseNamespace } from '../../src/types/backup.js';
import { startDaemon, stopDaemons, type Daemon } from '../helpers/daemon.js';
import { treeOf } from '../helpers/tree-state.js';
import { REPO_ROOT, runCli, type CliResult } from './run-cli.js';

const STORE = 'store1';
const T1 = 1_704_067_200; // 2024-01-01T00:00:00Z
const snapshotName = (id: string, epoch: number): string =>
  `host/${id}/${new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')}`;

let root: string;
let dirArgs: string[];
let storePath: string;
let src: string;
let daemon: Daemon;
let rootPassword: string;
let backupToken: { tokenid: string; value: string };
let otherToken: { tokenid: string; value: string };

function mgr(...args: string[]): Promise<CliResult> {
  return runCli('burrow-manager', [...dirArgs, ...args]);
}

function ok(result: CliResult, what: string): CliResult {
  if (result.status !== 0)
    throw new Error(`${what} failed (${result.status}):\n${result.stderr}\n${result.stdout}`);
  return result;
}

/** The environment of a `burrow` client acting as `authId` against the test server. */
function clientEnv(authId: string, secret: string): Record<string, string> {
  return {
    PBS_REPOSITORY: `${authId}@127.0.0.1:${daemon.port}:${STORE}`,
    PBS_PASSWORD: secret,
    PBS_FINGERPRINT: daemon.fingerprint,
    XDG_CONFIG_HOME: join(root, 'client', 'xdg'),
    HOME: join(root, 'client', 'home'),
    BURROW_CONFIG_DIR: join(root, 'client', 'etc'),
    BURROW_RUN_DIR: join(root, 'client', 'run'),
    BURROW_LOG_DIR: join(root, 'client', 'log'),
  };
}

function burrow(authId: string, secret: string, args: readonly string[]): Promise<CliResult> {
  return runCli('burrow', args, { env: clientEnv(authId, secret) });
}

async function json<T>(authId: string, secret: string, args: readonly string[]): Promise<T> {
  const result = ok(
    await burrow(authId, secret, [...args, '--output-format', 'json']),
    args.join(' '),
  );
  return JSON.parse(result.stdout) as T;
}

/** A library client, for the sessions a test holds open while the CLI acts. */
function libraryClient(authId: string, secret: string): Promise<PbsHttpClient> {
  return PbsHttpClient.connect({
    host: '127.0.0.1',
    port: daemon.port,
    authId,
    password: secret,
    fingerprint: daemon.fingerprint,
    cachePath: false,
  });
}

async function until(what: string, condition: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function chunkPath(hex: string): string {
  return join(storePath, '.chunks', hex.slice(0, 4), hex);
}

function chunkFiles(): string[] {
  const out: string[] = [];
  const chunks = join(storePath, '.chunks');
  for (const prefix of readdirSync(chunks))
    for (const name of readdirSync(join(chunks, prefix)))
      if (/^[0-9a-f]{64}$/.test(name)) out.push(name);
  return out;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'burrow-e2e-server-'));
  dirArgs = [
    '--config-dir',
    join(root, 'etc'),
    '--run-dir',
    join(root, 'run'),
    '--log-dir',
    join(root, 'log'),
  ];
  storePath = join(root, 'store');
  src = join(root, 'src');
  mkdirSync(join(src, 'sub', 'deeper'), { recursive: true });
  writeFileSync(join(src, 'a.txt'), 'hello from the server test\n'.repeat(1000));
  writeFileSync(join(src, 'random.bin'), randomBytes(3 * 1024 * 1024));
  writeFileSync(join(src, 'empty'), '');
  writeFileSync(join(src, 'sub', 'deeper', 'file'), 'deep\n', { mode: 0o640 });
  symlinkSync('a.txt', join(src, 'link'));
  utimesSync(join(src, 'sub', 'deeper', 'file'), 1_600_000_000, 1_600_000_000);
  mkdirSync(join(root, 'big'));
  for (let i = 0; i < 8; i++) writeFileSync(join(root, 'big', `part-${i}`), randomBytes(8 << 20));

  ok(await mgr('datastore', 'create', STORE, storePath), 'datastore create');
  daemon = await startDaemon(dirArgs, ['--listen', '127.0.0.1:0']);
  rootPassword = readFileSync(join(root, 'etc', 'initial-root-password'), 'utf8').trim();
  const setup = await Promise.all([
    mgr('user', 'create', 'alice@pbs', '--password', 'alice-secret-1'),
    mgr('user', 'create', 'bob@pbs', '--password', 'bob-secret-22'),
  ]);
  setup.forEach((r, i) => ok(r, `user create ${i}`));
  const tokens = await Promise.all(
    ['backup', 'other'].map((name) =>
      mgr('user', 'generate-token', 'alice@pbs', name, '--output-format', 'json'),
    ),
  );
  [backupToken, otherToken] = tokens.map(
    (r) => JSON.parse(ok(r, 'generate-token').stdout) as { tokenid: string; value: string },
  ) as [typeof backupToken, typeof otherToken];
  // One ACL writer at a time: acl.cfg is rewritten under its lock, each call waits its turn.
  for (const authId of ['alice@pbs', backupToken.tokenid, otherToken.tokenid])
    ok(
      await mgr('acl', 'update', `/datastore/${STORE}`, 'DatastoreBackup', '--auth-id', authId),
      `acl update ${authId}`,
    );
}, 120_000);

afterAll(() => {
  stopDaemons();
  rmSync(root, { recursive: true, force: true });
});

describe('burrow in remote mode against burrow-manager serve', () => {
  it('backs up with an API token, lists, and restores with a password login', async () => {
    const token = backupToken.tokenid;
    ok(
      await burrow(token, backupToken.value, [
        'backup',
        `root.pxar:${src}`,
        '--backup-id',
        'e2e',
        '--backup-time',
        String(T1),
      ]),
      'backup',
    );
    const groups = await json<Array<{ group: string; owner?: string; 'backup-count': number }>>(
      token,
      backupToken.value,
      ['list'],
    );
    expect(groups).toEqual([
      expect.objectContaining({ group: 'host/e2e', owner: token, 'backup-count': 1 }),
    ]);
    const snapshots = await json<Array<{ snapshot: string; finished: boolean; files: unknown[] }>>(
      'alice@pbs',
      'alice-secret-1',
      ['snapshot', 'list'],
    );
    expect(snapshots.map((s) => [s.snapshot, s.finished])).toEqual([
      [snapshotName('e2e', T1), true],
    ]);
    const out = join(root, 'restored');
    ok(
      await burrow('alice@pbs', 'alice-secret-1', [
        'restore',
        snapshotName('e2e', T1),
        'root.pxar',
        out,
      ]),
      'restore',
    );
    expect(treeOf(out)).toEqual(treeOf(src));
    // The server ran each session as a task of its caller, with a log the task API serves.
    const admin = await libraryClient('root@pam', rootPassword);
    try {
      const tasks = (await admin.get('/nodes/localhost/tasks', { limit: 0 })) as Array<{
        upid: string;
        worker_type: string;
        user: string;
        status?: string;
      }>;
      const backup = tasks.find((t) => t.worker_type === 'backup' && t.user === token);
      expect(backup?.status).toBe('OK');
      const reader = tasks.find((t) => t.worker_type === 'reader' && t.user === 'alice@pbs');
      expect(reader?.status).toBe('OK');
      const log = (await admin.get(
        `/nodes/localhost/tasks/${encodeURIComponent(backup?.upid ?? '')}/log`,
        { limit: 0 },
      )) as Array<{ n: number; t: string }>;
      expect(log.at(-1)?.t).toMatch(/: TASK OK$/);
    } finally {
      admin.close();
    }
  });

  it('runs the other client commands remotely: files, notes, protection, catalog, prune, status, benchmark', async () => {
    const id = backupToken.tokenid;
    const secret = backupToken.value;
    const snap = snapshotName('e2e', T1);
    const files = await json<Array<{ filename: string; size?: number }>>(id, secret, [
      'snapshot',
      'files',
      snap,
    ]);
    expect(files.map((f) => f.filename).sort()).toEqual([
      'catalog.pcat1.didx',
      'index.json.blob',
      'root.pxar.didx',
    ]);
    ok(
      await burrow(id, secret, ['snapshot', 'notes', 'update', snap, 'first backup\nmore']),
      'notes',
    );
    const notes = await json<{ notes: string }>(id, secret, ['snapshot', 'notes', 'show', snap]);
    expect(notes.notes).toBe('first backup\nmore');
    ok(await burrow(id, secret, ['snapshot', 'protected', 'update', snap, 'true']), 'protect');
    const listed = await json<Array<{ protected: boolean; comment?: string }>>(id, secret, [
      'snapshot',
      'list',
    ]);
    expect(listed[0]).toMatchObject({ protected: true, comment: 'first backup' });
    ok(await burrow(id, secret, ['snapshot', 'protected', 'update', snap, 'false']), 'unprotect');
    const dump = ok(await burrow(id, secret, ['catalog', 'dump', snap]), 'catalog dump');
    expect(dump.stdout).toContain('sub/deeper/file');
    const plan = await json<{
      'dry-run': boolean;
      snapshots: Array<{ snapshot: string; keep: boolean }>;
    }>('root@pam', rootPassword, ['prune', 'host/e2e', '--keep-last', '1', '--dry-run']);
    expect(plan.snapshots).toEqual([expect.objectContaining({ snapshot: snap, keep: true })]);
    const status = await json<{ total: number; counts: Record<string, { groups: number }> }>(
      id,
      secret,
      ['status'],
    );
    expect(status.total).toBeGreaterThan(0);
    expect(status.counts['host']?.groups).toBe(1);
    const bench = await json<{ tls: { speed?: number } }>(id, secret, [
      'benchmark',
      '--duration',
      '0.05',
    ]);
    expect(bench.tls.speed).toBeGreaterThan(0);
    // The benchmark session's snapshot (and its new group) does not stay.
    await until(
      'the benchmark group to go',
      () => !existsSync(join(storePath, 'host', 'benchmark')),
    );
  });

  it('refuses a user without the privilege with 403', async () => {
    const [backup, list] = await Promise.all([
      burrow('bob@pbs', 'bob-secret-22', ['backup', `root.pxar:${src}`, '--backup-id', 'bob']),
      burrow('bob@pbs', 'bob-secret-22', ['list']),
    ]);
    for (const result of [backup, list]) {
      expect(result.status).toBe(7);
      expect(result.stderr).toContain('permission check failed');
    }
    expect(existsSync(join(storePath, 'host', 'bob'))).toBe(false);
  });

  it('refuses a wrong password, and a token that does not own the group', async () => {
    const wrong = await burrow('alice@pbs', 'not-her-password', ['list']);
    expect(wrong.status).toBe(7);
    const other = await burrow(otherToken.tokenid, otherToken.value, [
      'backup',
      `root.pxar:${src}`,
      '--backup-id',
      'e2e',
      '--backup-time',
      String(T1 + 60),
    ]);
    expect(other.status).not.toBe(0);
    expect(other.stderr).toContain('backup owner check failed');
    expect(existsSync(join(storePath, snapshotName('e2e', T1 + 60)))).toBe(false);
  });

  it('refuses a second concurrent backup of the same group', async () => {
    const client = await libraryClient(backupToken.tokenid, backupToken.value);
    const group = backupGroup(parseNamespace(''), 'host', 'e2e');
    const first = await openRemoteBackupWriter(client, {
      store: STORE,
      group,
      backupTime: T1 + 120,
    });
    try {
      const second = await burrow(backupToken.tokenid, backupToken.value, [
        'backup',
        `root.pxar:${src}`,
        '--backup-id',
        'e2e',
        '--backup-time',
        String(T1 + 180),
      ]);
      expect(second.status).not.toBe(0);
      expect(second.stderr).toMatch(/lock/i);
      expect(existsSync(join(storePath, snapshotName('e2e', T1 + 180)))).toBe(false);
    } finally {
      await first.close();
      client.close();
    }
    // The first session ended without finish: its snapshot goes away.
    await until('the unfinished snapshot to be removed', () => {
      return !existsSync(join(storePath, snapshotName('e2e', T1 + 120)));
    });
  });

  it('a backup killed mid-stream leaves no snapshot behind', async () => {
    const time = T1 + 240;
    const dir = join(storePath, snapshotName('killed', time));
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        `${REPO_ROOT}/src/cli/burrow.ts`,
        'backup',
        `big.pxar:${join(root, 'big')}`,
        '--backup-id',
        'killed',
        '--backup-time',
        String(time),
      ],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, ...clientEnv(backupToken.tokenid, backupToken.value) },
        stdio: 'ignore',
      },
    );
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    // Kill it once the server holds the new snapshot and an index is being written.
    await until('the backup to start writing', () => {
      return existsSync(dir) && readdirSync(dir).some((name) => name.includes('didx'));
    });
    expect(existsSync(join(dir, 'index.json.blob'))).toBe(false);
    child.kill('SIGKILL');
    await exited;
    await until('the server to remove the killed backup', () => !existsSync(dir));
    const list = await json<Array<{ snapshot: string }>>(backupToken.tokenid, backupToken.value, [
      'snapshot',
      'list',
    ]);
    expect(list.map((s) => s.snapshot)).not.toContain(snapshotName('killed', time));
  });

  it('garbage collection while a backup runs keeps the chunks that backup uses', async () => {
    // A chunk of the first snapshot, which is then forgotten: only the running backup below
    // will reference it.
    const first = snapshotName('e2e', T1);
    const index = DynamicIndex.parse(readFileSync(join(storePath, first, 'root.pxar.didx')));
    const entry = 0;
    const digest = index.digest(entry);
    const hex = Buffer.from(digest).toString('hex');
    const size = index.end(entry) - (entry === 0 ? 0 : index.end(entry - 1));
    const stored = readFileSync(chunkPath(hex));
    // Forgetting needs Datastore.Modify, or Datastore.Prune as the owner: the token has neither.
    const refused = await burrow(backupToken.tokenid, backupToken.value, [
      'snapshot',
      'forget',
      first,
    ]);
    expect(refused.status).toBe(7);
    ok(await burrow('root@pam', rootPassword, ['snapshot', 'forget', first]), 'forget');
    // Every chunk is now older than GC's cutoff (24 h 5 min).
    const old = Math.floor(Date.now() / 1000) - 2 * 86_400;
    for (const name of chunkFiles())
      utimesSync(chunkPath(name), old, statSync(chunkPath(name)).mtime);
    const unreferenced = chunkFiles().length;

    const client = await libraryClient(backupToken.tokenid, backupToken.value);
    const group = backupGroup(parseNamespace(''), 'host', 'gc-run');
    const time = T1 + 300;
    const writer = await openRemoteBackupWriter(client, { store: STORE, group, backupTime: time });
    try {
      const wid = await writer.createIndex('dynamic', 'data.didx');
      // The chunk exists on the server already: the upload counts as a duplicate and must mark
      // it as in use by this backup.
      await writer.uploadChunk(wid, 'dynamic', digest, size, new Uint8Array(stored));

      const gc = await json<{ 'removed-chunks': number; 'disk-chunks': number }>(
        'root@pam',
        rootPassword,
        ['garbage-collect'],
      );
      expect(gc['removed-chunks']).toBeGreaterThan(0);
      expect(gc['removed-chunks']).toBeLessThan(unreferenced);
      expect(existsSync(chunkPath(hex))).toBe(true);

      await writer.appendIndex(wid, 'dynamic', [digest], [0]);
      const end = Buffer.alloc(8);
      end.writeBigUInt64LE(BigInt(size));
      const csum = createHash('sha256').update(end).update(digest).digest();
      await writer.closeIndex(wid, 'dynamic', 1, size, csum);
      const manifest = newManifest('host', 'gc-run', time);
      manifest.files.push(indexFileInfo('data.didx', { size, csum }, 'none'));
      await writer.uploadBlob(
        'index.json.blob',
        encodeBlob(serializeManifestBytes(manifest), { compress: true }),
      );
      await writer.finish();
    } finally {
      await writer.close();
    }
    // The finished snapshot reads back through a reader session, chunk included.
    const reader = await openRemoteBackupReader(client, {
      store: STORE,
      dir: { group, time },
    });
    try {
      await reader.download('data.didx');
      expect(Buffer.from(await reader.chunk(digest)).equals(stored)).toBe(true);
    } finally {
      await reader.close();
      client.close();
    }
  });
});

describe('split archives through the server', () => {
  it('backs up in metadata mode and restores the tree, contents written on the workers', async () => {
    const token = backupToken.tokenid;
    const backup = (time: number): Promise<CliResult> =>
      burrow(token, backupToken.value, [
        'backup',
        `root.pxar:${src}`,
        '--backup-id',
        'split',
        '--backup-time',
        String(time),
        '--change-detection-mode',
        'metadata',
      ]);
    ok(await backup(T1), 'first backup');
    // The second reuses the first's payload chunks, fetched from the server when restoring.
    ok(await backup(T1 + 60), 'second backup');
    const out = join(root, 'restored-split');
    ok(
      await burrow('alice@pbs', 'alice-secret-1', [
        'restore',
        snapshotName('split', T1 + 60),
        'root.pxar',
        out,
      ]),
      'restore',
    );
    expect(treeOf(out)).toEqual(treeOf(src));
  });
});
