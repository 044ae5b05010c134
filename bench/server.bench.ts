/**
 * `npm run bench:server [-- --scale F] [--reps N] [--keep]`: what the network path costs. The same
 * client (dist/cli/burrow.js) backs up the shared benchmark dataset (../shared/bench/gen-dataset.py,
 * default --scale 0.1) and restores it in full, once in local mode (the datastore by name, no
 * server) and once in remote mode through `burrow-manager serve` on 127.0.0.1 (PBS_REPOSITORY
 * root@pam@127.0.0.1:PORT:STORE, HTTPS + HTTP/2), in the same run, each step N times (default 3;
 * the best run counts, since the machine is shared and noisy). Every backup goes into a fresh,
 * empty datastore, so every run writes every chunk.
 *
 * Printed per step: wall seconds, MB/s of the dataset's apparent size, the client's CPU seconds
 * (user + sys of the process and its threads, from GNU time) and, in remote mode, the server's
 * (from /proc/<pid>/stat before and after); then remote throughput as a share of local, and
 * whether the issue's goal holds: the network path costs under 15% of local-mode throughput.
 * Last, the floors of that path (bench/transport-floor.ts): the CPU seconds that bare TLS on
 * loopback and the server's upload check take for the same chunks, and the same over Node's HTTP/2
 * one request per chunk, next to the CPU seconds remote mode spends over local mode; and from the
 * HTTP/2 floor, the best share of local throughput a remote backup could reach on this machine's
 * cores, shared by client and server, if it added nothing else to local mode's work and kept every
 * core busy from start to end.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  processCpuSeconds,
  startServerProcess,
  summarizeLog,
  type ServerProcess,
} from '../test/helpers/load-server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GEN = resolve(ROOT, '../shared/bench/gen-dataset.py');
const node = process.execPath;
const burrowBin = join(ROOT, 'dist/cli/burrow.js');
const managerBin = join(ROOT, 'dist/cli/burrow-manager.js');
/** The issue's goal: remote mode keeps at least this share of local-mode throughput. */
const GOAL_SHARE = 0.85;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const scale = arg('scale', '0.1');
const reps = Math.max(1, Number(arg('reps', '3')));
const keep = process.argv.includes('--keep');
const work = arg('dir', join(tmpdir(), 'burrow-bench-server'));
const data = join(work, 'data');

interface Run {
  wall: number;
  clientCpu: number;
  serverCpu: number;
  rssKiB: number;
}

type Mode = 'local' | 'remote';
type StepName = 'backup' | 'restore';

/** A command under GNU time, asynchronously (the server's log pipe must keep flowing). */
function timed(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ wall: number; cpu: number; rssKiB: number }> {
  const timeFile = join(work, 'time.txt');
  return new Promise((resolveRun, reject) => {
    const start = performance.now();
    const child = spawn('/usr/bin/time', ['-o', timeFile, '-f', '%e %U %S %M', node, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => {
      const wall = (performance.now() - start) / 1000;
      if (status !== 0) {
        reject(
          new Error(`burrow ${args.slice(1).join(' ')} failed (${status}): ${stderr.slice(-2000)}`),
        );
        return;
      }
      const [, user, sys, rss] = readFileSync(timeFile, 'utf8')
        .trim()
        .split('\n')
        .pop()!
        .split(' ')
        .map(Number);
      resolveRun({ wall, cpu: user! + sys!, rssKiB: rss! });
    });
  });
}

function sh(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.toString().slice(-2000)}`);
  return r.stdout.toString();
}

function dirEnv(base: string): NodeJS.ProcessEnv {
  return {
    BURROW_CONFIG_DIR: join(base, 'etc'),
    BURROW_RUN_DIR: join(base, 'run'),
    BURROW_LOG_DIR: join(base, 'log'),
  };
}

type FloorTransport = 'tls' | 'http2';

interface Floor {
  transport: FloorTransport;
  sender: number;
  receiver: number;
  chunks: number;
  bytes: number;
  cipher: string;
}

type JsonLine = Record<string, unknown>;

/**
 * A child's standard output as JSON lines: each call resolves with the next line, or rejects once
 * the child has ended without printing one.
 */
function jsonLines(child: ChildProcess, what: string): () => Promise<JsonLine> {
  const lines: JsonLine[] = [];
  const waiting: { resolve: (line: JsonLine) => void; reject: (error: Error) => void }[] = [];
  let failure: Error | undefined;
  let text = '';
  child.stdout!.on('data', (d: Buffer) => {
    text += d.toString();
    for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n')) {
      const line = JSON.parse(text.slice(0, end)) as JsonLine;
      text = text.slice(end + 1);
      const waiter = waiting.shift();
      if (waiter === undefined) lines.push(line);
      else waiter.resolve(line);
    }
  });
  const fail = (error: Error): void => {
    failure = error;
    for (const waiter of waiting.splice(0)) waiter.reject(error);
  };
  child.on('error', fail);
  // 'close' comes after the last output, so every line printed has been taken by then.
  child.on('close', (status) => fail(new Error(`${what} ended (${String(status)})`)));
  return () => {
    const line = lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (failure !== undefined) return Promise.reject(failure);
    return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  };
}

/** bench/transport-floor.ts's two roles, in processes of their own, once. */
async function measureFloor(
  transport: FloorTransport,
  chunkDir: string,
  cert: string,
  key: string,
): Promise<Floor> {
  const script = join(ROOT, 'bench', 'transport-floor.ts');
  // process.execArgv carries tsx's loader, so the children run the TypeScript file as this does.
  const start = (args: string[]): ChildProcess =>
    spawn(node, [...process.execArgv, script, ...args, transport], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
  const fromReceiver = jsonLines(start(['receive', cert, key]), "the floor's receiver");
  const { port } = await fromReceiver();
  const sent = await jsonLines(start(['send', String(port), chunkDir]), "the floor's sender")();
  const received = await fromReceiver();
  return {
    transport,
    sender: Number(sent.cpu),
    receiver: Number(received.cpu),
    chunks: Number(received.chunks),
    bytes: Number(received.bytes),
    cipher: String(sent.cipher),
  };
}

const snapshotOf = (time: number): string =>
  `host/bench/${new Date(time * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')}`;

const median = (values: readonly number[]): number => {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  if (!existsSync(burrowBin)) throw new Error('run `npm run build` first (dist/ is missing)');
  // Nothing is deleted between timed steps. On ext4 without a journal (this machine's disk),
  // creating a file skips, one by one, every inode freed in the last minutes whose inode table
  // block is still cached (after a few thousand deletions, 5,000 small files took 3.2 s to create
  // instead of 0.2 s): a restore right after another restore's files were removed pays for that.
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  console.log(`dataset: gen-dataset.py --scale ${scale} into ${data}`);
  sh('python3', [GEN, 'gen', '--scale', scale, data]);
  const apparent = Number(sh('du', ['-sb', '--apparent-size', data]).split('\t')[0]);
  const mib = apparent / 2 ** 20;
  console.log(
    `dataset size ${mib.toFixed(1)} MiB apparent; ${cpus().length} CPUs; ${reps} run(s) per step, best counts; load average before ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );

  const localBase = join(work, 'local');
  const serverBase = join(work, 'server');
  const localEnv = dirEnv(localBase);
  const serverEnv = dirEnv(serverBase);
  // One fresh datastore per run and mode, made before anything is timed.
  for (let r = 1; r <= reps; r++) {
    sh(
      node,
      [managerBin, 'datastore', 'create', `local${r}`, join(work, `store-local${r}`)],
      localEnv,
    );
    sh(
      node,
      [managerBin, 'datastore', 'create', `remote${r}`, join(work, `store-remote${r}`)],
      serverEnv,
    );
  }
  let server: ServerProcess | undefined;
  try {
    server = await startServerProcess({
      command: [node, managerBin],
      dirArgs: [
        '--config-dir',
        serverEnv.BURROW_CONFIG_DIR!,
        '--run-dir',
        serverEnv.BURROW_RUN_DIR!,
        '--log-dir',
        serverEnv.BURROW_LOG_DIR!,
      ],
      cwd: ROOT,
    });
    const password = readFileSync(join(serverBase, 'etc', 'initial-root-password'), 'utf8').trim();
    const clientBase = join(work, 'client');
    const remoteEnv = (store: string): NodeJS.ProcessEnv => ({
      ...dirEnv(clientBase),
      PBS_REPOSITORY: `root@pam@127.0.0.1:${server!.port}:${store}`,
      PBS_PASSWORD: password,
      PBS_FINGERPRINT: server!.fingerprint,
      XDG_CONFIG_HOME: join(clientBase, 'xdg'),
      HOME: join(clientBase, 'home'),
    });

    const runs: Record<Mode, Record<StepName, Run[]>> = {
      local: { backup: [], restore: [] },
      remote: { backup: [], restore: [] },
    };
    const time = 1_700_000_000;
    for (let r = 1; r <= reps; r++) {
      // Alternate the order so neither mode always runs on a warmer (or busier) machine.
      const order: Mode[] = r % 2 === 1 ? ['local', 'remote'] : ['remote', 'local'];
      for (const mode of order) {
        const store = `${mode}${r}`;
        const env = mode === 'local' ? localEnv : remoteEnv(store);
        const repo = mode === 'local' ? ['--repository', store] : [];
        // A target of its own, removed only at the end: see the deletion note in main.
        const target = join(work, `restored-${mode}${r}`);
        for (const step of ['backup', 'restore'] as const) {
          const args =
            step === 'backup'
              ? [
                  burrowBin,
                  'backup',
                  `root.pxar:${data}`,
                  ...repo,
                  '--backup-id',
                  'bench',
                  '--backup-time',
                  String(time),
                ]
              : [burrowBin, 'restore', snapshotOf(time), 'root.pxar', target, ...repo];
          // Dirty pages of the step before are written out first, not during this one.
          sh('sync', []);
          const cpu0 = processCpuSeconds(server.pid);
          const t = await timed(args, env);
          const serverCpu = mode === 'remote' ? processCpuSeconds(server.pid) - cpu0 : 0;
          runs[mode][step].push({ wall: t.wall, clientCpu: t.cpu, serverCpu, rssKiB: t.rssKiB });
          console.log(
            `  run ${r} ${mode.padEnd(6)} ${step.padEnd(7)} ${t.wall.toFixed(2)} s  ${(mib / t.wall).toFixed(1)} MB/s  client cpu ${t.cpu.toFixed(2)} s${mode === 'remote' ? `  server cpu ${serverCpu.toFixed(2)} s` : ''}`,
          );
        }
      }
    }

    const best = (list: readonly Run[]): Run => list.reduce((a, b) => (b.wall < a.wall ? b : a));
    const cpuOf = (r: Run): number => r.clientCpu + r.serverCpu;
    const medianCpu = (list: readonly Run[]): number => median(list.map(cpuOf));
    console.log(
      `\n${`best of ${reps}`.padEnd(20)}${'wall s'.padStart(8)}${'MB/s'.padStart(8)}${'client cpu s'.padStart(14)}${'server cpu s'.padStart(14)}${'median wall s'.padStart(15)}${'median cpu s'.padStart(14)}`,
    );
    for (const step of ['backup', 'restore'] as const) {
      for (const mode of ['local', 'remote'] as const) {
        const list = runs[mode][step];
        const b = best(list);
        console.log(
          `  ${`${mode} ${step}`.padEnd(18)}${b.wall.toFixed(2).padStart(8)}${(mib / b.wall).toFixed(1).padStart(8)}${b.clientCpu.toFixed(2).padStart(14)}${(mode === 'remote' ? b.serverCpu.toFixed(2) : '-').padStart(14)}${median(
            list.map((x) => x.wall),
          )
            .toFixed(2)
            .padStart(15)}${medianCpu(list).toFixed(2).padStart(14)}`,
        );
      }
    }
    console.log(
      `\nremote throughput as a share of local, best runs (goal: at least ${(GOAL_SHARE * 100).toFixed(0)}%, i.e. the network path costs under ${((1 - GOAL_SHARE) * 100).toFixed(0)}%)`,
    );
    let met = true;
    for (const step of ['backup', 'restore'] as const) {
      const share = best(runs.local[step]).wall / best(runs.remote[step]).wall;
      const ok = share >= GOAL_SHARE;
      met &&= ok;
      // Client and server share this machine's cores: the CPU both spend bounds the throughput.
      const cpuShare = medianCpu(runs.local[step]) / medianCpu(runs.remote[step]);
      console.log(
        `  ${step.padEnd(8)} ${(share * 100).toFixed(0)}% (the network path costs ${((1 - share) * 100).toFixed(0)}%): ${ok ? 'goal met' : 'goal NOT met'}; CPU: local needs ${(cpuShare * 100).toFixed(0)}% of what client + server need remotely (medians)`,
      );
    }
    console.log(`goal ${met ? 'met' : 'NOT met'} on this run`);

    // The floors: what any implementation pays for the network path of the same backup, and what
    // one on Node's HTTP/2 pays at least.
    const floors: Floor[] = [];
    for (let r = 0; r < reps; r++) {
      for (const transport of ['tls', 'http2'] as const) {
        floors.push(
          await measureFloor(
            transport,
            join(work, 'store-local1', '.chunks'),
            join(serverBase, 'etc', 'proxy.pem'),
            join(serverBase, 'etc', 'proxy.key'),
          ),
        );
      }
    }
    const localCpu = medianCpu(runs.local.backup);
    const extraCpu = medianCpu(runs.remote.backup) - localCpu;
    const f0 = floors[0]!;
    console.log(
      `\nfloors of the backup's network path (bench/transport-floor.ts: ${f0.chunks} encoded chunks, ${(f0.bytes / 2 ** 20).toFixed(1)} MiB over ${f0.cipher} on loopback, each decoded and hashed by the receiver; medians of ${reps}):`,
    );
    const floorCpu: Record<FloorTransport, number> = { tls: 0, http2: 0 };
    for (const transport of ['tls', 'http2'] as const) {
      const mine = floors.filter((f) => f.transport === transport);
      floorCpu[transport] = median(mine.map((f) => f.sender + f.receiver));
      const what =
        transport === 'tls'
          ? 'bare TLS, a length before each chunk'
          : "Node's HTTP/2, a POST per chunk, 8 in flight";
      console.log(
        `  ${what.padEnd(45)} sender ${median(mine.map((f) => f.sender)).toFixed(2)} + receiver ${median(mine.map((f) => f.receiver)).toFixed(2)} = ${floorCpu[transport].toFixed(2)} CPU-s`,
      );
    }
    console.log(
      `  remote backup spends ${extraCpu.toFixed(2)} CPU-s more than local (client + server, medians)`,
    );
    // Client and server share the cores, so a remote backup cannot end before its CPU seconds, at
    // least those of local mode plus the HTTP/2 floor, spread over every core.
    const cores = cpus().length;
    const fastLocal = best(runs.local.backup);
    const localCores = fastLocal.clientCpu / fastLocal.wall;
    const leastCpu = fastLocal.clientCpu + floorCpu.http2;
    const goalWall = fastLocal.wall / GOAL_SHARE;
    const shareAt = (busyCores: number): string =>
      `${(leastCpu / busyCores).toFixed(2)} s (${((fastLocal.wall / (leastCpu / busyCores)) * 100).toFixed(0)}%)`;
    console.log(
      `  the fastest local backup: ${fastLocal.wall.toFixed(2)} s and ${fastLocal.clientCpu.toFixed(2)} CPU-s, ${localCores.toFixed(2)} cores busy on average`,
    );
    console.log(
      `  through a server on Node's HTTP/2 it needs at least ${fastLocal.clientCpu.toFixed(2)} + ${floorCpu.http2.toFixed(2)} = ${leastCpu.toFixed(2)} CPU-s; to keep ${(GOAL_SHARE * 100).toFixed(0)}% it must end within ${goalWall.toFixed(2)} s, with ${(leastCpu / goalWall).toFixed(2)} of ${cores} cores busy from start to end and no work above the floor; with every core busy it would take ${shareAt(cores)}, as busy as local mode ${shareAt(localCores)}`,
    );
    const log = summarizeLog(server.logLines());
    if (log.errors.length > 0 || log.other.length > 0)
      console.log(
        `server log: ${log.errors.length} error lines, ${log.other.length} other lines:\n${[...log.errors, ...log.other].slice(0, 10).join('\n')}`,
      );
    console.log(
      `load average after ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    await server?.stop();
    if (!keep) rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
