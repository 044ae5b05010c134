/**
 * `npm run test:load -- [--clients N] [--rounds M] [--size MiB] [--chunk-size KiB] [--seed S]
 * [--timeout SECONDS] [--keep]`: a bounded load test of the server on loopback. It stops by itself.
 *
 * A fresh datastore and a real `burrow-manager serve` process (127.0.0.1, free port); an API token
 * with DatastoreBackup made through the admin API (root@pam, initial password); then N clients
 * run at once in this process (library: openRemoteBackupWriter/Reader, runBackup, restoreArchive,
 * one chunk worker pool), M rounds each. A round backs up the client's data of that round into its
 * own group `host/load-<i>` (a directory as `data.pxar`, and `disk.img`), then restores a random
 * snapshot of the client made so far (this round's or an earlier one) and compares it with what
 * was backed up: a SHA-256 over the tree (names, kinds, modes, owners, mtimes, contents, link
 * targets) and over the image.
 *
 * The data of a round: a file identical for every client and round (dedup across clients and
 * against the previous snapshot), a file of the client's that stays the same across its rounds, a
 * random file new in each round, compressible text new in each round, a few small entries; the
 * image's first 4 MiB chunk is the same everywhere, its tail new in each round.
 *
 * At the end: `burrow-manager verify` must succeed; every snapshot must be listed by the server as
 * finished, and no other snapshot may exist on disk; every backup and reader task on the server
 * must have ended OK; the server's log must hold no error line; the server must stop cleanly on
 * SIGTERM. The last line is `load test: PASS ...` (exit 0) or `load test: FAIL ...` (exit 1).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { runBackup, type ArchiveSpec, type BackupSummary } from '../src/client/backup.js';
import { ChunkWorkerPool } from '../src/client/chunk-pipeline.js';
import { PbsHttpClient } from '../src/client/remote/http-client.js';
import {
  openRemoteBackupReader,
  openRemoteBackupWriter,
} from '../src/client/remote/remote-repository.js';
import { restoreArchive } from '../src/client/restore.js';
import type { SnapshotListItem } from '../src/types/api.js';
import { ROOT_NAMESPACE, backupDir, backupGroup, formatSnapshot } from '../src/types/backup.js';
import {
  processCpuSeconds,
  startServerProcess,
  summarizeLog,
  type ServerProcess,
} from '../test/helpers/load-server.js';
import { makeRng } from '../test/helpers/rng.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const STORE = 'load';
const MiB = 1024 * 1024;
const IMAGE_CHUNK = 4 * MiB;
/** The one warning a fresh server logs by design (its initial root@pam password). */
const INITIAL_PASSWORD_WARNING = 'root@pam had no password';

interface Options {
  clients: number;
  rounds: number;
  sizeMiB: number;
  chunkKiB: number;
  seed: number;
  timeoutS: number;
  keep: boolean;
}

function parseOptions(argv: readonly string[]): Options {
  const value = (name: string, fallback: number, min: number, max: number): number => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0) return fallback;
    const n = Number(argv[i + 1]);
    if (!Number.isFinite(n) || n < min || n > max)
      throw new Error(`--${name} must be a number from ${min} to ${max}, got ${argv[i + 1]}`);
    return n;
  };
  return {
    clients: Math.floor(value('clients', 6, 1, 256)),
    rounds: Math.floor(value('rounds', 3, 1, 1000)),
    sizeMiB: value('size', 8, 0.25, 4096),
    // Smaller than PBS's 4 MiB so the few MiB per round make many chunks (requests), and the
    // shared file dedups across clients although it sits at different stream offsets.
    chunkKiB: Math.floor(value('chunk-size', 256, 64, 4096)),
    seed: Math.floor(value('seed', 1, 0, 2 ** 31)),
    timeoutS: value('timeout', 600, 1, 86_400),
    keep: argv.includes('--keep'),
  };
}

// ---------------------------------------------------------------------------------------------
// Deterministic data

/** Deterministic bytes: SHA-256 in counter mode over a label (fast enough for a few MiB). */
function seededBytes(label: string, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let off = 0, n = 0; off < size; off += 32, n++) {
    const block = createHash('sha256').update(`${label}:${n}`).digest();
    block.copy(out, off, 0, Math.min(32, size - off));
  }
  return out;
}

function textBytes(label: string, size: number): Buffer {
  const words = ['backup', 'chunk', 'index', 'restore', 'server', 'client', 'store', 'verify'];
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < size; i++) {
    const line = `${label} line ${i}: ${words[i % words.length]} ${words[(i * 7) % words.length]} ${i * 2654435761}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, size);
}

interface Shared {
  file: Buffer;
  imageChunk: Buffer;
}

/** Writes client `c`'s data for round `r`: a directory and an image file. */
async function writeRoundData(
  base: string,
  c: number,
  r: number,
  o: Options,
  shared: Shared,
): Promise<{ dir: string; image: string }> {
  const dir = join(base, 'data');
  const image = join(base, 'disk.img');
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'text'), { recursive: true });
  await mkdir(join(dir, 'nested', 'deeper'), { recursive: true });
  const quarter = Math.max(1, Math.floor((o.sizeMiB * MiB) / 4));
  await writeFile(join(dir, 'a-shared.bin'), shared.file);
  await writeFile(join(dir, 'b-stable.bin'), seededBytes(`${o.seed}:stable:${c}`, quarter));
  await writeFile(join(dir, 'c-round.bin'), randomBytes(quarter));
  const textFiles = 8;
  const text = textBytes(`client ${c} round ${r}`, quarter);
  const per = Math.ceil(text.length / textFiles);
  for (let i = 0; i < textFiles; i++)
    await writeFile(join(dir, 'text', `log-${i}.txt`), text.subarray(i * per, (i + 1) * per));
  await writeFile(join(dir, 'nested', 'deeper', 'note'), `client ${c} round ${r}\n`, {
    mode: 0o640,
  });
  await writeFile(join(dir, 'empty'), '');
  await symlink('a-shared.bin', join(dir, 'link'));
  const tail = Math.max(4096, Math.floor((o.sizeMiB * MiB) / 8));
  await writeFile(image, Buffer.concat([shared.imageChunk, randomBytes(tail)]));
  return { dir, image };
}

// ---------------------------------------------------------------------------------------------
// What a restore must reproduce

async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const part of createReadStream(path)) hash.update(part as Buffer);
  return hash.digest('hex');
}

/**
 * One SHA-256 over a tree: per entry its path, kind, mode, owner, mtime (ns; not for symlinks,
 * whose times pxar does not restore), size, content hash or link target. Directory sizes are left
 * out: they depend on the file system's history, not on the backup.
 */
async function treeDigest(root: string): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (rel: string): Promise<void> => {
    const path = rel === '' ? root : join(root, rel);
    const st = await lstat(path, { bigint: true });
    let detail = '';
    if (st.isFile()) detail = `${st.size} ${await fileSha256(path)}`;
    else if (st.isSymbolicLink()) detail = await readlink(path);
    const mtime = st.isSymbolicLink() ? '' : String(st.mtimeNs);
    hash.update(`${rel}\0${st.mode}\0${st.uid}\0${st.gid}\0${mtime}\0${detail}\n`);
    if (st.isDirectory()) {
      for (const name of (await readdir(path)).sort())
        await walk(rel === '' ? name : `${rel}/${name}`);
    }
  };
  await walk('');
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Running

interface Expected {
  client: number;
  round: number;
  time: number;
  snapshot: string;
  tree: string;
  image: string;
}

interface Op {
  kind: 'backup' | 'restore';
  start: number;
  end: number;
  /** Source bytes read (backup) or bytes written (restore). */
  bytes: number;
}

interface RunState {
  ops: Op[];
  errors: string[];
  lost: string[];
  expected: Expected[];
  summaries: BackupSummary[];
  restores: number;
}

function message(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}

/** The total time during which at least one operation of `kind` ran (seconds). */
function busySeconds(ops: readonly Op[], kind: Op['kind']): number {
  const spans = ops
    .filter((op) => op.kind === kind)
    .map((op) => [op.start, op.end] as const)
    .sort((a, b) => a[0] - b[0]);
  let total = 0;
  let current: [number, number] | undefined;
  for (const [s, e] of spans) {
    if (current === undefined || s > current[1]) {
      if (current !== undefined) total += current[1] - current[0];
      current = [s, e];
    } else current[1] = Math.max(current[1], e);
  }
  if (current !== undefined) total += current[1] - current[0];
  return total / 1000;
}

async function runClient(
  c: number,
  o: Options,
  ctx: {
    work: string;
    server: ServerProcess;
    token: { tokenid: string; value: string };
    pool: ChunkWorkerPool;
    shared: Shared;
    baseTime: number;
    state: RunState;
  },
): Promise<void> {
  const { state, pool } = ctx;
  const base = join(ctx.work, `client-${c}`);
  await mkdir(base, { recursive: true });
  const random = makeRng(o.seed * 7919 + c);
  const client = await PbsHttpClient.connect({
    host: '127.0.0.1',
    port: ctx.server.port,
    authId: ctx.token.tokenid,
    password: ctx.token.value,
    fingerprint: ctx.server.fingerprint,
    cachePath: false,
  });
  const group = backupGroup(ROOT_NAMESPACE, 'host', `load-${c}`);
  const mine: Expected[] = [];
  try {
    for (let r = 0; r < o.rounds; r++) {
      // Backup.
      const { dir, image } = await writeRoundData(base, c, r, o, ctx.shared);
      const expected: Expected = {
        client: c,
        round: r,
        time: ctx.baseTime + r,
        snapshot: formatSnapshot(backupDir(group, ctx.baseTime + r)),
        tree: await treeDigest(dir),
        image: await fileSha256(image),
      };
      const archives: ArchiveSpec[] = [
        { name: 'data.pxar', kind: 'pxar', path: dir },
        { name: 'disk.img', kind: 'img', path: image },
      ];
      const started = performance.now();
      try {
        const writer = await openRemoteBackupWriter(client, {
          store: STORE,
          group,
          backupTime: expected.time,
        });
        try {
          const summary = await runBackup({
            writer,
            archives,
            cryptMode: 'none',
            chunkSize: o.chunkKiB * 1024,
            pool,
          });
          state.summaries.push(summary);
          state.ops.push({
            kind: 'backup',
            start: started,
            end: performance.now(),
            bytes: summary.bytesRead,
          });
        } finally {
          await writer.close();
        }
        mine.push(expected);
        state.expected.push(expected);
      } catch (error) {
        state.errors.push(`client ${c} round ${r}: backup ${expected.snapshot}: ${message(error)}`);
      }

      // Restore a random snapshot of this client's, made this round or before.
      const pick = mine[Math.floor(random() * mine.length)];
      if (pick === undefined) continue;
      const target = join(base, `restore-${r}`);
      const targetImage = join(base, `restore-${r}.img`);
      const restoreStarted = performance.now();
      try {
        const reader = await openRemoteBackupReader(client, {
          store: STORE,
          dir: backupDir(group, pick.time),
        });
        let bytes = 0;
        try {
          const decodeChunk = (
            raw: Uint8Array,
            d: { expectedDigest: Uint8Array; expectedSize: number },
          ): Promise<Uint8Array> => pool.decode(raw, d);
          bytes += (await restoreArchive({ reader, archiveName: 'data.pxar', target, decodeChunk }))
            .bytes;
          bytes += (
            await restoreArchive({
              reader,
              archiveName: 'disk.img',
              target: targetImage,
              decodeChunk,
            })
          ).bytes;
        } finally {
          await reader.close();
        }
        state.ops.push({ kind: 'restore', start: restoreStarted, end: performance.now(), bytes });
        state.restores++;
        const [tree, img] = await Promise.all([treeDigest(target), fileSha256(targetImage)]);
        if (tree !== pick.tree)
          state.lost.push(`${pick.snapshot} data.pxar: the restored tree differs from the source`);
        if (img !== pick.image)
          state.lost.push(`${pick.snapshot} disk.img: the restored image differs from the source`);
      } catch (error) {
        state.errors.push(`client ${c} round ${r}: restore ${pick.snapshot}: ${message(error)}`);
      } finally {
        await rm(target, { recursive: true, force: true });
        await rm(targetImage, { force: true });
      }
    }
  } finally {
    client.close();
  }
}

interface CliOutcome {
  status: number | null;
  stdout: string;
  stderr: string;
}

function runManager(dirArgs: readonly string[], args: readonly string[]): Promise<CliOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'src/cli/burrow-manager.ts'), ...dirArgs, ...args],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

async function chunkStoreBytes(store: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const chunks = join(store, '.chunks');
  for (const prefix of await readdir(chunks)) {
    const names = await readdir(join(chunks, prefix));
    for (const name of names) {
      if (!/^[0-9a-f]{64}$/.test(name)) continue;
      files++;
      bytes += (await stat(join(chunks, prefix, name))).size;
    }
  }
  return { files, bytes };
}

/** Snapshot directories on disk (`host/<id>/<time>`), finished or not. */
async function snapshotDirs(store: string): Promise<string[]> {
  const out: string[] = [];
  const hostDir = join(store, 'host');
  let ids: string[];
  try {
    ids = await readdir(hostDir);
  } catch {
    return out;
  }
  for (const id of ids) {
    for (const time of await readdir(join(hostDir, id))) {
      if ((await lstat(join(hostDir, id, time))).isDirectory()) out.push(`host/${id}/${time}`);
    }
  }
  return out.sort();
}

const mib = (n: number): string => (n / MiB).toFixed(1);

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const t0 = performance.now();
  const work = await mkdtemp(join(tmpdir(), 'burrow-load-'));
  const dirArgs = [
    '--config-dir',
    join(work, 'etc'),
    '--run-dir',
    join(work, 'run'),
    '--log-dir',
    join(work, 'log'),
  ];
  const storePath = join(work, 'store');
  console.log(
    `load test: ${o.clients} clients x ${o.rounds} rounds x ${o.sizeMiB} MiB (+ image), chunk size ${o.chunkKiB} KiB, ${availableParallelism()} CPUs, work dir ${work}`,
  );
  const state: RunState = {
    ops: [],
    errors: [],
    lost: [],
    expected: [],
    summaries: [],
    restores: 0,
  };
  let server: ServerProcess | undefined;
  let pool: ChunkWorkerPool | undefined;
  let admin: PbsHttpClient | undefined;
  let verdict: string | undefined;
  const watchdog = setTimeout(() => {
    console.error(`load test: FAIL: still running after ${o.timeoutS} s, giving up`);
    void server?.stop(1000);
    process.exit(1);
  }, o.timeoutS * 1000);
  watchdog.unref();
  try {
    // The server looks datastores up per session, so it may start while the 65,536 chunk
    // directories are made (both take seconds on this kind of machine).
    const [created, started] = await Promise.allSettled([
      runManager(dirArgs, ['datastore', 'create', STORE, storePath]),
      startServerProcess({
        command: [process.execPath, '--import', 'tsx', join(ROOT, 'src/cli/burrow-manager.ts')],
        dirArgs,
        cwd: ROOT,
      }),
    ]);
    if (started.status === 'fulfilled') server = started.value;
    if (created.status === 'rejected') throw created.reason;
    if (created.value.status !== 0)
      throw new Error(`datastore create failed: ${created.value.stderr}`);
    if (started.status === 'rejected') throw started.reason;
    server = started.value;
    const rootPassword = (
      await readFile(join(work, 'etc', 'initial-root-password'), 'utf8')
    ).trim();
    admin = await PbsHttpClient.connect({
      host: '127.0.0.1',
      port: server.port,
      authId: 'root@pam',
      password: rootPassword,
      fingerprint: server.fingerprint,
      cachePath: false,
    });
    await admin.post('/access/users', { userid: 'load@pbs', password: 'load-test-password' });
    const token = (await admin.post('/access/users/load@pbs/token/load', {})) as {
      tokenid: string;
      value: string;
    };
    // A token has at most its user's privileges: both get the role (one ACL write at a time).
    for (const authId of ['load@pbs', token.tokenid])
      await admin.put('/access/acl', {
        path: `/datastore/${STORE}`,
        role: 'DatastoreBackup',
        'auth-id': authId,
      });
    const setupSeconds = (performance.now() - t0) / 1000;

    pool = ChunkWorkerPool.create();
    const shared: Shared = {
      file: seededBytes(`${o.seed}:shared`, Math.max(1, Math.floor((o.sizeMiB * MiB) / 4))),
      imageChunk: seededBytes(`${o.seed}:image`, IMAGE_CHUNK),
    };
    const baseTime = Math.floor(Date.now() / 1000) - 3600;
    const serverCpu0 = cpuOf(server.pid);
    const loadStart = performance.now();
    await Promise.all(
      Array.from({ length: o.clients }, (_, c) =>
        runClient(c, o, {
          work,
          server: server!,
          token,
          pool: pool!,
          shared,
          baseTime,
          state,
        }).catch((error: unknown) => {
          state.errors.push(`client ${c}: ${message(error)}`);
        }),
      ),
    );
    const loadSeconds = (performance.now() - loadStart) / 1000;
    const serverCpu = cpuOf(server.pid) - serverCpu0;

    // Every expected snapshot listed by the server as finished; nothing else on disk.
    const listed = (await admin.get(`/admin/datastore/${STORE}/snapshots`)) as SnapshotListItem[];
    const finished = new Set(
      listed
        .filter((s) => s.size !== undefined)
        .map((s) =>
          formatSnapshot(
            backupDir(
              backupGroup(ROOT_NAMESPACE, s['backup-type'], s['backup-id']),
              s['backup-time'],
            ),
          ),
        ),
    );
    for (const e of state.expected)
      if (!finished.has(e.snapshot)) state.lost.push(`${e.snapshot}: not listed as finished`);
    const expectedNames = new Set(state.expected.map((e) => e.snapshot));
    const onDisk = await snapshotDirs(storePath);
    for (const name of onDisk)
      if (!expectedNames.has(name)) state.errors.push(`${name}: unexpected snapshot on disk`);
    for (const e of state.expected)
      if (!onDisk.includes(e.snapshot)) state.lost.push(`${e.snapshot}: missing on disk`);

    // Every session ended OK on the server.
    const tasks = (await admin.get('/nodes/localhost/tasks', { limit: 0 })) as Array<{
      upid: string;
      worker_type: string;
      status?: string;
    }>;
    const sessions = tasks.filter((t) => t.worker_type === 'backup' || t.worker_type === 'reader');
    for (const t of sessions)
      if (t.status !== 'OK') state.errors.push(`task ${t.upid}: ${t.status ?? 'still running'}`);
    const sessionsOk = sessions.every((t) => t.status === 'OK');
    const backupTasks = sessions.filter((t) => t.worker_type === 'backup').length;
    const readerTasks = sessions.length - backupTasks;
    if (backupTasks !== o.clients * o.rounds || readerTasks !== state.restores)
      state.errors.push(
        `the server ran ${backupTasks} backup and ${readerTasks} reader sessions, expected ${o.clients * o.rounds} and ${state.restores}`,
      );

    // Verify every chunk of every snapshot.
    const verifyStart = performance.now();
    const verify = await runManager(dirArgs, ['verify', STORE, '--output-format', 'json']);
    const verifySeconds = (performance.now() - verifyStart) / 1000;
    let verifyText = `exit ${verify.status}`;
    try {
      const v = JSON.parse(verify.stdout) as { ok: boolean; failed: string[] };
      verifyText = v.ok ? 'ok' : `failed: ${v.failed.join(', ')}`;
      if (!v.ok || verify.status !== 0) state.errors.push(`verify: ${verifyText}`);
    } catch {
      state.errors.push(`verify: exit ${verify.status}: ${verify.stderr.trim()}`);
    }

    admin.close();
    admin = undefined;
    const stopped = await server.stop();
    if (stopped.status !== 0)
      state.errors.push(`the server exited with ${stopped.status ?? stopped.signal} on SIGTERM`);
    const log = summarizeLog(server.logLines());
    server = undefined;
    for (const line of log.errors) state.errors.push(`server log: ${line}`);
    for (const line of log.other) state.errors.push(`server stderr: ${line}`);

    // Figures.
    const store = await chunkStoreBytes(storePath);
    const sum = (values: readonly number[]): number => values.reduce((n, v) => n + v, 0);
    const opsOf = (kind: Op['kind']): Op[] => state.ops.filter((op) => op.kind === kind);
    const rate = (bytes: number, seconds: number): string =>
      seconds > 0 ? (bytes / MiB / seconds).toFixed(1) : '-';
    const backupBytes = sum(opsOf('backup').map((op) => op.bytes));
    const restoreBytes = sum(opsOf('restore').map((op) => op.bytes));
    const streamBytes = sum(state.summaries.map((s) => sum(s.archives.map((a) => a.size))));
    const uploaded = sum(state.summaries.map((s) => s.bytesStored));
    const reused = sum(state.summaries.map((s) => s.chunksReused));
    const fresh = sum(state.summaries.map((s) => s.chunksNew));
    const backupBusy = busySeconds(state.ops, 'backup');
    const restoreBusy = busySeconds(state.ops, 'restore');
    const dedup = store.bytes > 0 ? (streamBytes / store.bytes).toFixed(2) : '-';
    const perSession = (kind: Op['kind']): string => {
      const ops = opsOf(kind);
      if (ops.length === 0) return '-';
      return rate(sum(ops.map((op) => op.bytes)), sum(ops.map((op) => (op.end - op.start) / 1000)));
    };
    const planned = o.clients * o.rounds;
    console.log(
      `time:     setup ${setupSeconds.toFixed(1)} s, load ${loadSeconds.toFixed(1)} s, verify ${verifySeconds.toFixed(1)} s`,
    );
    console.log(
      `backups:  ${state.summaries.length} of ${planned}, ${mib(backupBytes)} MiB source: ${rate(backupBytes, backupBusy)} MiB/s aggregate (${backupBusy.toFixed(1)} s with a backup running), ${perSession('backup')} MiB/s per session`,
    );
    console.log(
      `restores: ${state.restores} of ${planned}, ${mib(restoreBytes)} MiB written: ${rate(restoreBytes, restoreBusy)} MiB/s aggregate (${restoreBusy.toFixed(1)} s with a restore running), ${perSession('restore')} MiB/s per session`,
    );
    console.log(
      `sessions: ${backupTasks} backup + ${readerTasks} reader tasks on the server, all OK: ${sessionsOk}; server CPU ${serverCpu.toFixed(1)} s during the load`,
    );
    console.log(
      `dedup:    ${mib(streamBytes)} MiB of archive streams; ${fresh} chunks uploaded (${mib(uploaded)} MiB encoded), ${reused} taken from the previous snapshot; chunk store ${store.files} chunks, ${mib(store.bytes)} MiB: ratio ${dedup} (dedup and compression)`,
    );
    console.log(
      `checks:   verify ${verifyText}; ${state.expected.length} snapshots expected, ${onDisk.length} on disk; server log ${log.total} lines, ${log.errors.length} errors, ${log.warnings.length} warnings`,
    );
    for (const line of log.warnings
      .filter((l) => !l.includes(INITIAL_PASSWORD_WARNING))
      .slice(0, 10))
      console.log(`  server warning: ${line}`);
    for (const e of state.errors.slice(0, 50)) console.log(`  error: ${e}`);
    for (const e of state.lost.slice(0, 50)) console.log(`  lost: ${e}`);
    const pass =
      state.errors.length === 0 &&
      state.lost.length === 0 &&
      state.summaries.length === planned &&
      state.restores === planned;
    verdict = `load test: ${pass ? 'PASS' : 'FAIL'}: ${state.summaries.length} backups, ${state.restores} restores, errors ${state.errors.length}, lost ${state.lost.length}, backup ${rate(backupBytes, backupBusy)} MiB/s, restore ${rate(restoreBytes, restoreBusy)} MiB/s, dedup ${dedup}`;
    return pass ? 0 : 1;
  } finally {
    clearTimeout(watchdog);
    admin?.close();
    await pool?.close();
    await server?.stop(5000);
    if (o.keep) console.log(`kept ${work}`);
    else {
      const cleanup = performance.now();
      await rm(work, { recursive: true, force: true });
      console.log(`cleanup:  ${((performance.now() - cleanup) / 1000).toFixed(1)} s`);
    }
    // The verdict is the last line, after the cleanup.
    if (verdict !== undefined) console.log(verdict);
  }
}

function cpuOf(pid: number): number {
  try {
    return processCpuSeconds(pid);
  } catch {
    return Number.NaN;
  }
}

main().then(
  (status) => process.exit(status),
  (error: unknown) => {
    console.error(error);
    console.log(`load test: FAIL: ${message(error)}`);
    process.exit(1);
  },
);
