/**
 * The `burrow` client as a user runs it against a local datastore made with `burrow-manager`:
 * back up a tree, change it, back it up again, list, restore each snapshot and compare the trees
 * (contents and metadata); encrypted and signed backups with key files and a master key; images
 * and config blobs; dry runs; prune and GC after forgetting a snapshot; interrupted backups
 * (SIGINT, SIGKILL) and what they leave; verify after a chunk is damaged on disk. Every step is a
 * real process. The steps build on each other, so they run in order.
 */
import { spawn } from 'node:child_process';
import { generateKeyPair, randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamicIndex } from '../../src/format/dynamic-index.js';
import { lSetXattr, mknod, nativeAvailable, setTimesNs } from '../../src/lib/native-fs.js';
import { fixtureTmpDir } from '../helpers/store-fixture.js';
import { treeOf } from '../helpers/tree-state.js';
import { REPO_ROOT, runCli, type CliResult } from './run-cli.js';

const STORE = 'e2e';
// 2024-01-01T00:00:00Z and an hour later: fixed times give fixed snapshot names.
const T1 = 1_704_067_200;
const T2 = T1 + 3600;
const S1 = 'host/e2e/2024-01-01T00:00:00Z';
const S2 = 'host/e2e/2024-01-01T01:00:00Z';
const utcSeconds = (epoch: number): string =>
  new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

let base: string;
let storeBase: string;
let storePath: string;
let src: string;
let baseEnv: Record<string, string | undefined>;
/** A passphrase-protected master key pair in the form PBS's create-master-key writes (made early: it takes a while). */
let masterKeyPair: Promise<{ publicKey: string; privateKey: string }>;

function burrow(
  args: readonly string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<CliResult> {
  return runCli('burrow', args, {
    env: { ...baseEnv, ...options.env },
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
}

function manager(args: readonly string[]): Promise<CliResult> {
  return runCli('burrow-manager', args, { env: baseEnv });
}

function ok(result: CliResult, what: string): CliResult {
  if (result.status !== 0)
    throw new Error(`${what} failed (${result.status}):\n${result.stderr}\n${result.stdout}`);
  return result;
}

async function json<T>(
  args: readonly string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<T> {
  const result = ok(await burrow([...args, '--output-format', 'json'], options), args.join(' '));
  return JSON.parse(result.stdout) as T;
}

interface BackupJson {
  snapshot: string;
  archives: Array<{
    name: string;
    size: number;
    chunks: number;
    reusedChunks: number;
    newChunks: number;
  }>;
  bytesRead: number;
  bytesStored: number;
  chunksReused: number;
  chunksNew: number;
  dryRun: boolean;
  'crypt-mode': string;
}

interface FileJson {
  filename: string;
  size?: number;
  'crypt-mode'?: string;
}

/** Every chunk file of the store (hex names). */
function chunkFiles(): Set<string> {
  const chunks = join(storePath, '.chunks');
  const out = new Set<string>();
  for (const prefix of readdirSync(chunks)) {
    for (const name of readdirSync(join(chunks, prefix)))
      if (/^[0-9a-f]{64}$/.test(name)) out.add(name);
  }
  return out;
}

const chunkPath = (hex: string): string => join(storePath, '.chunks', hex.slice(0, 4), hex);

/** Age every chunk, so GC may remove those no index references (its cutoff is 24 h 5 min back). */
function ageChunks(): void {
  const old = Math.floor(Date.now() / 1000) - 2 * 86_400;
  for (const hex of chunkFiles()) utimesSync(chunkPath(hex), old, statSync(chunkPath(hex)).mtime);
}

function indexDigests(snapshotDir: string, name: string): Set<string> {
  const index = DynamicIndex.parse(readFileSync(join(storePath, snapshotDir, name)));
  const out = new Set<string>();
  for (let i = 0; i < index.count; i++) out.add(Buffer.from(index.digest(i)).toString('hex'));
  return out;
}

/** Processes started by spawnBurrow that have not ended: a failed test must not leave them behind. */
const running = new Set<number>();

/** A burrow process that the test can signal; resolves with its exit status (or signal). */
function spawnBurrow(args: readonly string[]): {
  pid: number;
  done: Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>;
} {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', `${REPO_ROOT}/src/cli/burrow.ts`, ...args],
    { cwd: REPO_ROOT, env: { ...process.env, ...baseEnv }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const err: Buffer[] = [];
  child.stdout.resume();
  child.stderr.on('data', (d: Buffer) => err.push(d));
  const done = new Promise<{
    status: number | null;
    signal: NodeJS.Signals | null;
    stderr: string;
  }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status, signal) => {
      if (child.pid !== undefined) running.delete(child.pid);
      resolve({ status, signal, stderr: Buffer.concat(err).toString() });
    });
  });
  if (child.pid === undefined) throw new Error('spawn failed');
  running.add(child.pid);
  return { pid: child.pid, done };
}

/** Bytes the process has read so far (read(2) and friends), from /proc/<pid>/io. */
function bytesReadBy(pid: number): number {
  try {
    const match = /^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return match === null ? 0 : Number(match[1]);
  } catch {
    return 0;
  }
}

/**
 * Wait until the backup into `groupDir` is mid-stream: its snapshot directory holds the pxar
 * index being written and the process has read 32 MiB of the source. The upload pipeline keeps
 * at most 2 x threads + 4 chunks between reading and appending, at most 256 KiB each with
 * `--chunk-size 64`, so by then chunks have been stored and appended. Returns the snapshot
 * directory name.
 */
async function waitMidStream(pid: number, groupDir: string): Promise<string> {
  const started = Date.now();
  for (;;) {
    const dir = join(storePath, groupDir);
    const snapshot = existsSync(dir)
      ? readdirSync(dir).find((name) => existsSync(join(dir, name, 'root.pxar.tmp_didx')))
      : undefined;
    if (snapshot !== undefined && bytesReadBy(pid) >= 32 * 1024 * 1024) return snapshot;
    if (Date.now() - started > 45_000) throw new Error(`no backup progress in ${groupDir}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'burrow-client-e2e-'));
  // The store on tmpfs when there is one: its 65536 chunk directories are made much faster there.
  storeBase = mkdtempSync(join(fixtureTmpDir(), 'burrow-client-e2e-store-'));
  storePath = join(storeBase, 'store');
  for (const d of ['etc', 'run', 'log', 'xdg', 'home']) mkdirSync(join(base, d));
  baseEnv = {
    BURROW_CONFIG_DIR: join(base, 'etc'),
    BURROW_RUN_DIR: join(base, 'run'),
    BURROW_LOG_DIR: join(base, 'log'),
    // No default key of whoever runs the tests, and none made by one test for the next.
    XDG_CONFIG_HOME: join(base, 'xdg'),
    HOME: join(base, 'home'),
    PBS_REPOSITORY: STORE,
    PBS_ENCRYPTION_PASSWORD: undefined,
    BURROW_DEBUG: undefined,
  };
  masterKeyPair = new Promise((resolve, reject) =>
    generateKeyPair(
      'rsa',
      {
        modulusLength: 3072,
        publicKeyEncoding: { type: 'spki', format: 'pem' },
        privateKeyEncoding: {
          type: 'pkcs8',
          format: 'pem',
          cipher: 'aes-256-cbc',
          passphrase: 'master-pass',
        },
      },
      (error, publicKey, privateKey) =>
        error === null ? resolve({ publicKey, privateKey }) : reject(error),
    ),
  );
  masterKeyPair.catch(() => {}); // awaited (and reported) by the test that uses it
  ok(await manager(['datastore', 'create', STORE, storePath]), 'datastore create');

  src = join(base, 'src');
  mkdirSync(join(src, 'data', 'sub'), { recursive: true });
  writeFileSync(join(src, 'hello.txt'), 'hello\n');
  chmodSync(join(src, 'hello.txt'), 0o640);
  writeFileSync(join(src, 'data', 'a.bin'), randomBytes(1536 * 1024));
  writeFileSync(join(src, 'data', 'b.bin'), randomBytes(800 * 1024));
  writeFileSync(join(src, 'data', 'sub', 'empty'), '');
  writeFileSync(join(src, 'data', 'skip.tmp'), 'left out by --exclude');
  symlinkSync('../hello.txt', join(src, 'data', 'link'));
  linkSync(join(src, 'hello.txt'), join(src, 'data', 'hard'));
  mknod(join(src, 'fifo'), 0o010600, 0, 0);
  if (nativeAvailable())
    lSetXattr(join(src, 'data', 'b.bin'), Buffer.from('user.tag'), Buffer.from('v1'));
  setTimesNs(
    join(src, 'data', 'a.bin'),
    { secs: 1_600_000_000, nanos: 0 },
    { secs: 1_600_000_000, nanos: 123_456_789 },
  );
});

afterAll(() => {
  for (const pid of running) process.kill(pid, 'SIGKILL');
  rmSync(base, { recursive: true, force: true });
  rmSync(storeBase, { recursive: true, force: true });
});

const pxarArgs = ['--backup-id', 'e2e', '--chunk-size', '64', '--exclude', '*.tmp'];
let tree1: Map<string, string>;
let tree2: Map<string, string>;

describe('backup, change, backup again, restore both', () => {
  it('backs up a tree and dedups the second backup against the first', async () => {
    tree1 = treeOf(src, ['data/skip.tmp']);
    const first = await json<BackupJson>([
      'backup',
      `root.pxar:${src}`,
      ...pxarArgs,
      '--backup-time',
      String(T1),
    ]);
    expect(first.snapshot).toBe(S1);
    expect(first.dryRun).toBe(false);
    expect(first['crypt-mode']).toBe('none');
    expect(first.archives.map((a) => a.name).sort()).toEqual([
      'catalog.pcat1.didx',
      'root.pxar.didx',
    ]);
    expect(first.chunksNew).toBeGreaterThan(10); // 2.3 MiB at a 64 KiB average
    expect(first.bytesRead).toBe(1536 * 1024 + 800 * 1024 + 6);

    // Change a few bytes in the middle of a.bin (same mtime), add a file, remove one.
    const a = readFileSync(join(src, 'data', 'a.bin'));
    a.fill(7, 700_000, 700_010);
    writeFileSync(join(src, 'data', 'a.bin'), a);
    writeFileSync(join(src, 'new.txt'), 'new file\n');
    rmSync(join(src, 'data', 'sub', 'empty'));
    tree2 = treeOf(src, ['data/skip.tmp']);

    const second = await json<BackupJson>([
      'backup',
      `root.pxar:${src}`,
      ...pxarArgs,
      '--backup-time',
      String(T2),
    ]);
    expect(second.snapshot).toBe(S2);
    const pxar = second.archives.find((x) => x.name === 'root.pxar.didx');
    expect(pxar?.reusedChunks).toBeGreaterThan(pxar!.chunks / 2);
    expect(second.bytesStored).toBeLessThan(second.bytesRead / 4);
  });

  it('lists, refuses an older backup time, restores each snapshot with its metadata', async () => {
    const out1 = join(base, 'out1');
    const out2 = join(base, 'out2');
    const outPattern = join(base, 'out-pattern');
    const [older, groups, snapshots, r1, r2, rPattern] = await Promise.all([
      burrow(['backup', `root.pxar:${src}`, ...pxarArgs, '--backup-time', String(T1 + 60)]),
      json<Array<Record<string, unknown>>>(['list']),
      json<Array<{ snapshot: string; finished: boolean; files: FileJson[] }>>([
        'snapshot',
        'list',
        'host/e2e',
      ]),
      burrow(['restore', S1, 'root.pxar', out1]),
      // A group stands for its newest snapshot.
      burrow(['restore', 'host/e2e', 'root.pxar', out2, '--output-format', 'json']),
      burrow(['restore', S2, 'root.pxar', outPattern, '--pattern', '/data/b.bin']),
    ]);
    expect(older.status).toBe(6);
    expect(older.stderr).toMatch(/older than last backup|not newer/i);
    expect(groups).toContainEqual(
      expect.objectContaining({
        group: 'host/e2e',
        'backup-count': 2,
        'last-backup': T2,
        owner: 'root@pam',
      }),
    );
    expect(snapshots.map((s) => [s.snapshot, s.finished])).toEqual([
      [S1, true],
      [S2, true],
    ]);
    expect(snapshots[1]!.files.map((f) => f.filename).sort()).toEqual([
      'catalog.pcat1.didx',
      'index.json.blob',
      'root.pxar.didx',
    ]);

    ok(r1, 'restore S1');
    ok(r2, 'restore S2');
    expect(JSON.parse(r2.stdout)).toMatchObject({ snapshot: S2, archive: 'root.pxar' });
    // --exclude patterns are stored in the archive as .pxarexclude-cli, as PBS does.
    expect(readFileSync(join(out1, '.pxarexclude-cli'), 'utf8')).toContain('*.tmp');
    expect(treeOf(out1, ['.pxarexclude-cli'])).toEqual(tree1);
    expect(treeOf(out2, ['.pxarexclude-cli'])).toEqual(tree2);

    ok(rPattern, 'restore with --pattern');
    expect(readdirSync(outPattern)).toEqual(['data']);
    expect(readdirSync(join(outPattern, 'data'))).toEqual(['b.bin']);
    expect(readFileSync(join(outPattern, 'data', 'b.bin'))).toEqual(
      readFileSync(join(src, 'data', 'b.bin')),
    );
  });

  it('dumps the catalog, finds entries, keeps notes and protection', async () => {
    const [dump, found] = await Promise.all([
      burrow(['catalog', 'dump', S2]),
      json<string[]>(['catalog', 'find', S2, '*.txt']),
      burrow(['snapshot', 'notes', 'update', S1, 'first backup\nmore']),
      burrow(['snapshot', 'protected', 'update', S1, 'true']),
    ]);
    ok(dump, 'catalog dump');
    const lines = dump.stdout.trim().split('\n');
    const bMtime = Math.floor(statSync(join(src, 'data', 'b.bin')).mtimeMs / 1000);
    expect(lines).toContain(`f "./root.pxar.didx/data/b.bin" ${800 * 1024} ${utcSeconds(bMtime)}`);
    expect(lines).toContain('l "./root.pxar.didx/data/link"');
    expect(lines.some((l) => l.includes('skip.tmp'))).toBe(false);
    expect(lines.some((l) => l.includes('sub/empty'))).toBe(false);
    // hello.txt has a second name that comes first (data/hard), so it is listed as a hardlink.
    expect(found.map((l) => l.replace(/^[fh] "(.*?)".*$/, '$1')).sort()).toEqual([
      './root.pxar.didx/hello.txt',
      './root.pxar.didx/new.txt',
    ]);

    const [notes, prot, forget, list] = await Promise.all([
      json<{ notes: string }>(['snapshot', 'notes', 'show', S1]),
      json<{ protected: boolean }>(['snapshot', 'protected', 'show', S1]),
      burrow(['snapshot', 'forget', S1]),
      json<Array<{ snapshot: string; comment?: string; protected: boolean }>>([
        'snapshot',
        'list',
        'host/e2e',
      ]),
    ]);
    expect(notes.notes).toBe('first backup\nmore');
    expect(prot.protected).toBe(true);
    expect(forget.status).toBe(6);
    expect(forget.stderr).toMatch(/protected/);
    expect(list[0]).toMatchObject({ snapshot: S1, comment: 'first backup', protected: true });
    ok(await burrow(['snapshot', 'protected', 'update', S1, 'false']), 'unprotect');
  });
});

describe('keys: encrypted and signed backups', () => {
  const pw = { PBS_ENCRYPTION_PASSWORD: 'e2e-passphrase' };

  it('encrypts with a key file and a master key, signs with sign-only, restores with the key only', async () => {
    const keyPath = join(base, 'key.json');
    const otherKey = join(base, 'other.json');
    const masterDir = join(base, 'master');
    mkdirSync(masterDir);
    const pair = await masterKeyPair;
    writeFileSync(join(masterDir, 'master-public.pem'), pair.publicKey);
    writeFileSync(join(masterDir, 'master-private.pem'), pair.privateKey);

    const [created, plain, noPass] = await Promise.all([
      // PBKDF2 here and scrypt (the default) below: scrypt costs 64 MiB and a moment per use.
      json<{ kdf: string; fingerprint: string; hint?: string }>(
        ['key', 'create', keyPath, '--kdf', 'pbkdf2', '--hint', 'the usual'],
        { env: pw },
      ),
      json<{ kdf: string }>(['key', 'create', otherKey, '--kdf', 'none']),
      burrow(['key', 'create', join(base, 'nopass.json')]),
    ]);
    expect(created).toMatchObject({ kdf: 'pbkdf2', hint: 'the usual' });
    expect(created.fingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    expect(plain.kdf).toBe('none');
    expect((statSync(keyPath).mode & 0o777).toString(8)).toBe('600');
    // No passphrase and no terminal: a clear error naming the variable, and no file.
    expect(noPass.status).toBe(2);
    expect(noPass.stderr).toContain('PBS_ENCRYPTION_PASSWORD');
    expect(existsSync(join(base, 'nopass.json'))).toBe(false);

    const withKey = (id: string, extra: string[]): string[] => [
      'backup',
      `root.pxar:${src}`,
      '--backup-id',
      id,
      '--exclude',
      '*.tmp',
      '--keyfile',
      keyPath,
      ...extra,
    ];
    const [enc, signed, again] = await Promise.all([
      json<BackupJson>(
        withKey('enc', ['--master-pubkey-file', join(masterDir, 'master-public.pem')]),
        { env: pw },
      ),
      json<BackupJson>(withKey('signed', ['--crypt-mode', 'sign-only']), { env: pw }),
      burrow(['key', 'create', otherKey, '--kdf', 'none']),
    ]);
    expect(enc['crypt-mode']).toBe('encrypt');
    expect(signed['crypt-mode']).toBe('sign-only');
    expect(again.status).toBe(6); // a key file is never overwritten

    const outEnc = join(base, 'out-enc');
    const outSigned = join(base, 'out-signed');
    const rsaBlob = join(base, 'rsa.bin');
    const [encFiles, signedFiles, noKey, encRestore, signedRestore, wrongKey, rsa, shown] =
      await Promise.all([
        json<FileJson[]>(['snapshot', 'files', enc.snapshot]),
        json<FileJson[]>(['snapshot', 'files', signed.snapshot]),
        burrow(['restore', enc.snapshot, 'root.pxar', join(base, 'out-nokey')]),
        burrow(['restore', enc.snapshot, 'root.pxar', outEnc, '--keyfile', keyPath], { env: pw }),
        burrow(['restore', signed.snapshot, 'root.pxar', outSigned]),
        burrow([
          'restore',
          signed.snapshot,
          'root.pxar',
          join(base, 'out-wrong'),
          '--keyfile',
          otherKey,
        ]),
        burrow(['restore', enc.snapshot, 'rsa-encrypted.key.blob', rsaBlob]),
        json<{ fingerprint: string }>(['key', 'show', keyPath]),
      ]);
    const modes = (files: FileJson[]): Record<string, string | undefined> =>
      Object.fromEntries(files.map((f) => [f.filename, f['crypt-mode']]));
    expect(modes(encFiles)).toEqual({
      'index.json.blob': 'sign-only',
      'root.pxar.didx': 'encrypt',
      'catalog.pcat1.didx': 'encrypt',
      'rsa-encrypted.key.blob': 'encrypt',
    });
    expect(modes(signedFiles)).toEqual({
      'index.json.blob': 'sign-only',
      'root.pxar.didx': 'sign-only',
      'catalog.pcat1.didx': 'sign-only',
    });
    expect(noKey.status).toBe(5);
    expect(noKey.stderr).toContain('--keyfile');
    ok(encRestore, 'encrypted restore');
    ok(signedRestore, 'signed restore without key');
    expect(wrongKey.status).toBe(5);
    expect(wrongKey.stderr).toMatch(/key/);
    expect(treeOf(outEnc, ['.pxarexclude-cli'])).toEqual(tree2);
    expect(treeOf(outSigned, ['.pxarexclude-cli'])).toEqual(tree2);
    ok(rsa, 'restore rsa-encrypted.key.blob');
    expect(shown.fingerprint).toBe(created.fingerprint);

    // The master private key recovers the key; the passphrase of the original can change.
    const recovered = join(base, 'recovered.json');
    const [imported, changed] = await Promise.all([
      json<{ fingerprint: string; kdf: string }>(
        [
          'key',
          'import-with-master-key',
          recovered,
          join(masterDir, 'master-private.pem'),
          rsaBlob,
          '--kdf',
          'none',
        ],
        { env: { BURROW_MASTER_KEY_PASSWORD: 'master-pass' } },
      ),
      json<{ kdf: string; fingerprint: string }>(['key', 'change-passphrase', keyPath], {
        env: { ...pw, BURROW_NEW_ENCRYPTION_PASSWORD: 'second-passphrase' },
      }),
    ]);
    expect(imported).toMatchObject({ kdf: 'none', fingerprint: created.fingerprint });
    expect(changed).toMatchObject({ kdf: 'scrypt', fingerprint: created.fingerprint });
    expect(changed).not.toHaveProperty('hint');

    const outRecovered = join(base, 'out-recovered');
    const [fromRecovered, newPass] = await Promise.all([
      burrow(['restore', enc.snapshot, 'root.pxar', outRecovered, '--keyfile', recovered]),
      json<string[]>(['catalog', 'find', enc.snapshot, '/hello.txt', '--keyfile', keyPath], {
        env: { PBS_ENCRYPTION_PASSWORD: 'second-passphrase' },
      }),
    ]);
    ok(fromRecovered, 'restore with the recovered key');
    expect(treeOf(outRecovered, ['.pxarexclude-cli'])).toEqual(tree2);
    expect(newPass).toHaveLength(1);
  });
});

describe('images, blobs and dry runs', () => {
  it('backs up an image and a config file and restores them to a file and to stdout', async () => {
    const disk = join(base, 'disk.raw');
    const size = 9 * 1024 * 1024 + 1234;
    writeFileSync(disk, '');
    truncateSync(disk, size);
    const fh = await open(disk, 'r+');
    await fh.write(randomBytes(100_000), 0, 100_000, 5 * 1024 * 1024);
    await fh.write(Buffer.from('tail'), 0, 4, size - 4);
    await fh.close();
    const conf = join(base, 'vm.conf');
    writeFileSync(conf, 'memory: 2048\ncores: 2\n');

    const [image, dry] = await Promise.all([
      json<BackupJson>([
        'backup',
        `disk.img:${disk}`,
        `vm.conf:${conf}`,
        '--backup-type',
        'vm',
        '--backup-id',
        '100',
      ]),
      json<BackupJson>(['backup', `root.pxar:${src}`, '--backup-id', 'dry', '--dry-run']),
    ]);
    expect(image.archives.find((a) => a.name === 'disk.img.fidx')).toMatchObject({
      size,
      chunks: 3,
    });
    expect(dry.dryRun).toBe(true);

    const restored = join(base, 'disk.out');
    const [toFile, toStdout, groups] = await Promise.all([
      burrow(['restore', 'vm/100', 'disk.img', restored]),
      burrow(['restore', 'vm/100', 'vm.conf', '-']),
      json<Array<{ group: string }>>(['list']),
    ]);
    ok(toFile, 'restore image');
    ok(toStdout, 'restore blob to stdout');
    expect(readFileSync(restored).equals(readFileSync(disk))).toBe(true);
    expect(toStdout.stdout).toBe('memory: 2048\ncores: 2\n');
    // The dry run stored nothing: no group, no snapshot.
    expect(groups.map((g) => g.group)).not.toContain('host/dry');
    expect(existsSync(join(storePath, 'host', 'dry'))).toBe(false);
  });

  it('compresses at the --compression-level given (1..19) and restores the same bytes', async () => {
    // Text with near repeats, different for each level's group so nothing is deduplicated.
    const words = ['north', 'south', 'east', 'west', 'up', 'down', 'left', 'right', 'in', 'out'];
    const textFor = (salt: number): string =>
      Array.from({ length: 60_000 }, (_, i) => words[(i * 7 + (i >> 4) + salt) % words.length])
        .join(' ')
        .concat(`\n${salt}\n`);
    const stored: number[] = [];
    for (const level of [1, 19]) {
      const file = join(base, `words-${level}.conf`);
      writeFileSync(file, textFor(level));
      const dir = join(base, `words-${level}`);
      mkdirSync(dir);
      writeFileSync(join(dir, 'words.txt'), textFor(level + 100));
      const result = await json<BackupJson>([
        'backup',
        `words.conf:${file}`,
        `root.pxar:${dir}`,
        // A type of its own: later tests count the host and vm groups.
        '--backup-type',
        'ct',
        '--backup-id',
        `level-${level}`,
        '--compression-level',
        String(level),
      ]);
      stored.push(result.bytesStored);
      const out = join(base, `words-${level}.out`);
      ok(await burrow(['restore', `ct/level-${level}`, 'root.pxar', out]), 'restore');
      expect(readFileSync(join(out, 'words.txt'), 'utf8')).toBe(textFor(level + 100));
      const blob = await burrow(['restore', `ct/level-${level}`, 'words.conf', '-']);
      expect(blob.stdout).toBe(textFor(level));
    }
    expect(stored[1]).toBeLessThan(stored[0]!);
    const bad = await burrow([
      'backup',
      `words.conf:${join(base, 'words-1.conf')}`,
      '--compression-level',
      '20',
    ]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--compression-level must be an integer from 1 to 19, got "20"');
  });
});

describe('metadata change detection', () => {
  it('does not read unchanged files again; both snapshots restore whole, sparse and with metadata', async () => {
    const dir = join(base, 'meta-src');
    mkdirSync(join(dir, 'many'), { recursive: true });
    // Many small files share each payload chunk; a large file spans several; one has a hole.
    for (let i = 0; i < 150; i++)
      writeFileSync(
        join(dir, 'many', `f${String(i).padStart(3, '0')}.txt`),
        `file ${i}\n`.repeat(i),
      );
    writeFileSync(join(dir, 'big.bin'), randomBytes(700 * 1024));
    const sparse = Buffer.alloc(2 * 1024 * 1024);
    randomBytes(8192).copy(sparse, 0);
    randomBytes(8192).copy(sparse, sparse.length - 8192);
    writeFileSync(join(dir, 'sparse.img'), sparse);
    linkSync(join(dir, 'big.bin'), join(dir, 'many', 'hard'));
    symlinkSync('big.bin', join(dir, 'link'));
    chmodSync(join(dir, 'many', 'f007.txt'), 0o600);
    const args = [
      '--backup-type',
      'ct',
      '--backup-id',
      'meta',
      '--change-detection-mode',
      'metadata',
      '--chunk-size',
      '64',
    ];
    const treeA = treeOf(dir);
    const first = await json<BackupJson>([
      'backup',
      `root.pxar:${dir}`,
      ...args,
      '--backup-time',
      String(T1),
    ]);
    expect(first.archives.map((a) => a.name).sort()).toEqual([
      'root.mpxar.didx',
      'root.ppxar.didx',
    ]);

    writeFileSync(join(dir, 'many', 'f100.txt'), 'changed\n');
    writeFileSync(join(dir, 'added.txt'), 'added\n');
    const treeB = treeOf(dir);
    const second = await json<BackupJson>([
      'backup',
      `root.pxar:${dir}`,
      ...args,
      '--backup-time',
      String(T1 + 60),
    ]);
    // Only the changed and the new file are read (and files re-read around them in a chunk).
    expect(second.bytesRead).toBeLessThan(first.bytesRead / 4);

    const outA = join(base, 'meta-out-a');
    const outB = join(base, 'meta-out-b');
    ok(await burrow(['restore', `ct/meta/${utcSeconds(T1)}`, 'root.pxar', outA]), 'restore A');
    ok(await burrow(['restore', `ct/meta/${utcSeconds(T1 + 60)}`, 'root.pxar', outB]), 'restore B');
    expect(treeOf(outA)).toEqual(treeA);
    expect(treeOf(outB)).toEqual(treeB);
    expect(statSync(join(outB, 'many', 'hard')).ino).toBe(statSync(join(outB, 'big.bin')).ino);
    // The zero middle of sparse.img is a hole again.
    expect(statSync(join(outB, 'sparse.img')).blocks * 512).toBeLessThan(sparse.length / 2);
  });
});

describe('repositories, status, benchmark', () => {
  it('takes a path, reports an unreachable server and a missing repository, status and a prune plan', async () => {
    const [byPath, remote, none, status, bench, plan, pubkey] = await Promise.all([
      json<Array<{ group: string }>>(['list', '--repository', storePath]),
      // Nothing listens on port 1: the remote form is tried and the refusal reported.
      burrow(['list', '--repository', 'root@pam@127.0.0.1:1:store1'], {
        env: { PBS_PASSWORD: 'x' },
      }),
      burrow(['list'], { env: { PBS_REPOSITORY: undefined } }),
      json<{
        total: number;
        used: number;
        avail: number;
        counts: Record<string, { groups: number; snapshots: number }>;
      }>(['status']),
      json<Record<string, { speed?: number; top?: number }>>(['benchmark', '--duration', '0.02']),
      json<{ 'dry-run': boolean; snapshots: Array<{ snapshot: string; keep: boolean }> }>([
        'prune',
        'host/e2e',
        '--keep-last',
        '1',
        '--dry-run',
      ]),
      json<{ path: string }>([
        'key',
        'import-master-pubkey',
        join(base, 'master', 'master-public.pem'),
      ]),
    ]);
    expect(byPath.map((g) => g.group)).toContain('host/e2e');
    expect(remote.status).toBe(1);
    expect(remote.stderr).toContain('ECONNREFUSED');
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('PBS_REPOSITORY');
    expect(status.total).toBeGreaterThan(0);
    expect(status.used + status.avail).toBeLessThanOrEqual(status.total);
    expect(status.counts['host']).toEqual({ groups: 3, snapshots: 4 });
    expect(status.counts['vm']).toEqual({ groups: 1, snapshots: 1 });
    for (const name of ['sha256', 'compress', 'decompress', 'verify', 'aes256_gcm', 'chunker'])
      expect(bench[name]?.speed, name).toBeGreaterThan(0);
    expect(bench['tls']?.speed).toBeUndefined();
    expect(plan['dry-run']).toBe(true);
    expect(plan.snapshots.map((s) => [s.snapshot, s.keep])).toEqual([
      [S1, false],
      [S2, true],
    ]);
    expect(existsSync(join(storePath, S1))).toBe(true);
    expect(pubkey.path).toBe(join(base, 'xdg', 'proxmox-backup', 'master-public.pem'));
    expect(readFileSync(pubkey.path, 'utf8')).toBe(
      readFileSync(join(base, 'master', 'master-public.pem'), 'utf8'),
    );
  });
});

describe('maintenance modes on a local datastore', () => {
  it('read-only refuses backups, forgets and GC but lists and restores; offline refuses all', async () => {
    const setMode = async (args: string[]) =>
      ok(await manager(['datastore', 'update', STORE, ...args]), 'datastore update');
    const conf = join(base, 'maint.conf');
    writeFileSync(conf, 'x: 1\n');
    await setMode(['--maintenance-mode', 'read-only,message=disk swap']);
    try {
      const [backup, forget, gc, managerForget, list, restore] = await Promise.all([
        burrow(['backup', `m.conf:${conf}`, '--backup-id', 'maint']),
        burrow(['snapshot', 'forget', S1]),
        manager(['garbage-collection', 'start', STORE]),
        manager(['snapshot', 'forget', STORE, S1]),
        json<Array<{ group: string }>>(['list']),
        burrow(['restore', S2, 'root.pxar', join(base, 'maint-restore')]),
      ]);
      for (const refused of [backup, forget, gc, managerForget]) {
        expect(refused.status).toBe(6);
        expect(refused.stderr).toContain('read-only maintenance mode: disk swap');
      }
      expect(list.map((g) => g.group)).toContain('host/e2e');
      ok(restore, 'restore from a read-only store');
      expect(existsSync(join(storePath, 'host', 'maint'))).toBe(false);
      expect(existsSync(join(storePath, S1))).toBe(true);

      await setMode(['--maintenance-mode', 'offline']);
      const offline = await burrow(['list']);
      expect(offline.status).toBe(6);
      expect(offline.stderr).toContain('offline maintenance mode');
    } finally {
      await setMode(['--delete', 'maintenance-mode']);
    }
    ok(await burrow(['list']), 'list after maintenance');
  });
});

describe('prune and garbage collection', () => {
  it('forget + GC removes the chunks only the forgotten snapshot had', async () => {
    const s1 = indexDigests(S1, 'root.pxar.didx');
    const s2 = indexDigests(S2, 'root.pxar.didx');
    const onlyS1 = [...s1].filter(
      (d) => !s2.has(d) && !indexDigests(signedSnapshotDir(), 'root.pxar.didx').has(d),
    );
    expect(onlyS1.length).toBeGreaterThan(0);
    ok(await burrow(['snapshot', 'forget', S1]), 'forget');
    expect(existsSync(join(storePath, S1))).toBe(false);
    ageChunks();
    const gc = await json<{ 'removed-chunks': number; upid: string }>(['garbage-collect']);
    expect(gc['removed-chunks']).toBeGreaterThanOrEqual(onlyS1.length);
    for (const d of onlyS1) expect(existsSync(chunkPath(d)), d).toBe(false);
    for (const d of s2) expect(existsSync(chunkPath(d)), d).toBe(true);
    const out = join(base, 'out-after-gc');
    ok(await burrow(['restore', S2, 'root.pxar', out]), 'restore after GC');
    expect(treeOf(out, ['.pxarexclude-cli'])).toEqual(tree2);
  });
});

/** The signed snapshot shares its chunks with host/e2e (sign-only chunks are plain). */
function signedSnapshotDir(): string {
  const dir = join(storePath, 'host', 'signed');
  const times = readdirSync(dir).filter((n) => n !== 'owner' && !n.startsWith('.'));
  return `host/signed/${times[0]}`;
}

describe('interrupted backups', () => {
  const small64 = ['--chunk-size', '64'];
  let bigSrc: string;
  let before: Set<string>;
  beforeAll(() => {
    before = chunkFiles();
    // A 1 GiB sparse file: cheap on disk, long enough to read that the backup is caught mid-stream.
    bigSrc = join(base, 'big');
    mkdirSync(bigSrc);
    writeFileSync(join(bigSrc, 'sparse'), '');
    truncateSync(join(bigSrc, 'sparse'), 1024 * 1024 * 1024);
  });

  it('SIGINT aborts the backup, removes the unfinished snapshot and exits 130', async () => {
    const child = spawnBurrow(['backup', `root.pxar:${bigSrc}`, '--backup-id', 'intr', ...small64]);
    await waitMidStream(child.pid, 'host/intr');
    process.kill(child.pid, 'SIGINT');
    const end = await child.done;
    expect(end.status).toBe(130);
    expect(end.stderr).toContain('interrupted by SIGINT');
    // A group made by the aborted backup goes with it; the chunks it stored are GC's.
    expect(existsSync(join(storePath, 'host', 'intr'))).toBe(false);
    ageChunks();
    ok(await burrow(['garbage-collect']), 'gc after SIGINT');
    expect([...chunkFiles()].filter((c) => !before.has(c))).toEqual([]);
  });

  it('SIGKILL leaves an unfinished snapshot that restore skips and prune and GC remove', async () => {
    before = chunkFiles();
    const child = spawnBurrow([
      'backup',
      `root.pxar:${bigSrc}`,
      '--backup-id',
      'killed',
      ...small64,
    ]);
    const killedTime = await waitMidStream(child.pid, 'host/killed');
    process.kill(child.pid, 'SIGKILL');
    const end = await child.done;
    expect(end.signal).toBe('SIGKILL');
    const added = [...chunkFiles()].filter((c) => !before.has(c));
    expect(added.length).toBeGreaterThan(0);

    const killed = `host/killed/${killedTime}`;
    const [list, restore] = await Promise.all([
      json<Array<{ snapshot: string; finished: boolean }>>(['snapshot', 'list', 'host/killed']),
      burrow(['restore', 'host/killed', 'root.pxar', join(base, 'out-killed')]),
    ]);
    expect(list).toEqual([expect.objectContaining({ snapshot: killed, finished: false })]);
    // The group has no finished snapshot to restore.
    expect(restore.status).toBe(3);

    // A finished backup after it makes the unfinished one prunable (PBS keeps the newest
    // unfinished snapshot, which may still be running).
    const small = join(base, 'small');
    mkdirSync(small);
    writeFileSync(join(small, 'f'), randomBytes(1000));
    const after = await json<BackupJson>(['backup', `root.pxar:${small}`, '--backup-id', 'killed']);
    const pruned = await json<{ snapshots: Array<{ snapshot: string; removed?: boolean }> }>([
      'prune',
      'host/killed',
      '--keep-last',
      '1',
    ]);
    expect(pruned.snapshots).toContainEqual(
      expect.objectContaining({ snapshot: killed, removed: true }),
    );
    expect(existsSync(join(storePath, killed))).toBe(false);
    ageChunks();
    ok(await burrow(['garbage-collect']), 'gc after kill');
    // What the interrupted backups stored is gone; only the last backup's chunks are new.
    const kept = new Set([
      ...indexDigests(after.snapshot, 'root.pxar.didx'),
      ...indexDigests(after.snapshot, 'catalog.pcat1.didx'),
    ]);
    const left = [...chunkFiles()].filter((c) => !before.has(c));
    expect(left.filter((c) => !kept.has(c))).toEqual([]);
  });
});

describe('damage', () => {
  it('verify reports a corrupted chunk and restore names snapshot, archive and offset', async () => {
    const digests = [...indexDigests(S2, 'root.pxar.didx')];
    const victim = chunkPath(digests[1]!);
    const bytes = readFileSync(victim);
    const at = bytes.length - 5;
    bytes[at] = bytes[at]! ^ 0xff;
    writeFileSync(victim, bytes);
    // Restore first: verify renames a corrupt chunk to <digest>.0.bad, as PBS does.
    const restore = await burrow(['restore', S2, 'root.pxar', join(base, 'out-damaged')]);
    const verify = await manager(['verify', STORE, '--output-format', 'json']);
    expect(verify.status).toBe(4);
    const verdict = JSON.parse(verify.stdout) as { ok: boolean; failed: string[] };
    expect(verdict.ok).toBe(false);
    expect(verdict.failed).toContain(S2);
    expect(restore.status).toBe(4);
    expect(restore.stderr).toContain(S2);
    expect(restore.stderr).toContain('root.pxar');
    expect(restore.stderr).toMatch(/offset/);
  });
});
