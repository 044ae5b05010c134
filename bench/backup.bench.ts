/**
 * `npm run bench:backup [-- --scale F] [--mode both|legacy|data|metadata] [--runs N]
 * [--chunk-size KiB] [--dir D] [--keep]`: Burrow's client on the shared benchmark dataset
 * (../shared/bench/gen-dataset.py), next to restic and borg when they are installed
 * (`apt-get install restic borgbackup`), all in the same run on the same data:
 *
 *   1. first backup        2. unchanged second backup
 *   3. backup after `gen-dataset.py mutate`                 4. full restore of the last backup
 *
 * Burrow runs in each change detection mode asked for (default both `metadata` and `legacy`):
 * metadata mode is how PBS users get incremental speed (unchanged files are not read, like
 * restic's and borg's file caches), legacy mode reads and chunks everything every time.
 *
 * For each step it prints wall time, MB/s of the dataset's apparent size, CPU time (user + sys of
 * the process and its children, from GNU time), peak RSS, and the bytes of the repository's files
 * after the step (directories not counted); then the ratios of restic's and borg's figures to
 * each Burrow mode's. Every tool runs without encryption and with its default compression
 * (Burrow: zstd level 3 for chunks; restic: auto; borg: lz4), single process.
 *
 * With `--runs N` the whole sequence (fresh repositories, fresh dataset, in a directory of its
 * own; all are removed at the end, see runOnce) runs N times and each figure is the median; the
 * order in which the tools take their turn rotates from run to run, and every timed step starts
 * after a `sync`. Wall times depend on what else the machine does: the load average is printed
 * before and after, and CPU seconds are the steadier comparison.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GEN = resolve(ROOT, '../shared/bench/gen-dataset.py');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const scale = arg('scale', '0.25');
const modeArg = arg('mode', 'both');
const modes = modeArg === 'both' ? ['metadata', 'legacy'] : [modeArg];
const runs = Math.max(1, Number(arg('runs', '1')));
const chunkSize = arg('chunk-size', '');
const keep = process.argv.includes('--keep');
const work = arg('dir', join(tmpdir(), 'burrow-bench-backup'));

for (const m of modes)
  if (!['legacy', 'data', 'metadata'].includes(m)) throw new Error(`unknown --mode ${m}`);

interface Step {
  wall: number;
  cpu: number;
  /** The kernel's part of `cpu` (file creation, page cache copies). */
  sys: number;
  rssKiB: number;
  repoBytes: number;
}

/**
 * Runs a command under GNU time; returns wall seconds, CPU seconds and peak RSS. The page cache
 * is flushed first (sync), so no step pays for the writeback of what ran before it (the dataset
 * generation, another tool's repository or restore).
 */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Omit<Step, 'repoBytes'> {
  spawnSync('sync');
  const timeFile = join(work, 'time.txt');
  const run = spawnSync('/usr/bin/time', ['-o', timeFile, '-f', '%e %U %S %M', cmd, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (run.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(' ')} failed (${String(run.status)}): ${run.stderr.toString().slice(-2000)}`,
    );
  }
  const [wall, user, sys, rss] = readFileSync(timeFile, 'utf8')
    .trim()
    .split('\n')
    .pop()!
    .split(' ')
    .map(Number);
  return { wall: wall!, cpu: user! + sys!, sys: sys!, rssKiB: rss! };
}

/**
 * Bytes of the repository's files. Directories are left out: a PBS datastore starts with 65,536
 * empty chunk directories (256 MiB of directory blocks on ext4) whatever it holds, which would
 * swamp the comparison of what each tool stores for the data.
 */
function repoBytes(path: string): number {
  const out = spawnSync('find', [path, '-type', 'f', '-printf', '%s\n'], {
    maxBuffer: 256 * 1024 * 1024,
  });
  return out.stdout
    .toString()
    .split('\n')
    .filter((l) => l !== '')
    .reduce((sum, l) => sum + Number(l), 0);
}

/**
 * Reads every file of the dataset, so that each backup starts with it in the page cache, as the
 * steps before leave it. borg drops the files it reads from the cache (posix_fadvise
 * DONTNEED), so without this the tool right after a borg backup read the dataset from the disk:
 * a legacy first backup took 2.38-3.32 s right after `borg create`, and 1.50-1.67 s when the
 * files were read once in between (three runs each, docs/design.md, "Figures").
 */
function warmDataset(data: string): void {
  sh('sh', ['-c', 'find "$1" -type f -exec cat {} + > /dev/null', 'warm', data]);
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): void {
  const r = spawnSync(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.toString().slice(-2000)}`);
}

interface Tool {
  name: string;
  setup(): void;
  backup(): Omit<Step, 'repoBytes'>;
  restore(target: string): Omit<Step, 'repoBytes'>;
  repo: string;
}

const node = process.execPath;
const burrowBin = join(ROOT, 'dist/cli/burrow.js');
const managerBin = join(ROOT, 'dist/cli/burrow-manager.js');

function burrowTool(mode: string, dir: string, data: string): Tool {
  const base = join(dir, `burrow-${mode}`);
  const env = {
    BURROW_CONFIG_DIR: join(base, 'etc'),
    BURROW_RUN_DIR: join(base, 'run'),
    BURROW_LOG_DIR: join(base, 'log'),
  };
  const repo = join(base, 'store');
  let time = 1_700_000_000;
  return {
    name: `burrow ${mode}`,
    repo,
    setup() {
      sh(node, [managerBin, 'datastore', 'create', 'bench', repo], env);
    },
    backup() {
      time += 3600;
      // The bin itself, as a user runs it: its shebang line sets Node's options.
      return timed(
        burrowBin,
        [
          'backup',
          `root.pxar:${data}`,
          '--repository',
          'bench',
          '--backup-id',
          'bench',
          '--backup-time',
          String(time),
          '--change-detection-mode',
          mode,
          ...(chunkSize === '' ? [] : ['--chunk-size', chunkSize]),
        ],
        env,
      );
    },
    restore(target) {
      const snapshot = `host/bench/${new Date(time * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')}`;
      return timed(
        burrowBin,
        ['restore', snapshot, 'root.pxar', target, '--repository', 'bench'],
        env,
      );
    },
  };
}

function resticTool(dir: string, data: string): Tool {
  const repo = join(dir, 'restic');
  const env = { RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: join(dir, 'restic-cache') };
  return {
    name: 'restic',
    repo,
    setup() {
      sh('restic', ['init', '--repo', repo], env);
    },
    backup() {
      return timed('restic', ['backup', '--repo', repo, '--quiet', data], env);
    },
    restore(target) {
      return timed(
        'restic',
        ['restore', 'latest', '--repo', repo, '--target', target, '--quiet'],
        env,
      );
    },
  };
}

function borgTool(dir: string, data: string): Tool {
  const repo = join(dir, 'borg');
  const env = {
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
    BORG_BASE_DIR: join(dir, 'borg-base'),
  };
  let n = 0;
  return {
    name: 'borg',
    repo,
    setup() {
      sh('borg', ['init', '--encryption', 'none', repo], env);
    },
    backup() {
      n++;
      return timed('borg', ['create', `${repo}::b${n}`, data], env);
    },
    restore(target) {
      mkdirSync(target, { recursive: true });
      // borg extracts relative to the working directory.
      return timed('sh', ['-c', `cd ${target} && borg extract ${repo}::b${n}`], env);
    },
  };
}

const STEPS = ['first backup', 'unchanged backup', 'after mutate', 'full restore'] as const;

/** The tools of one run: their repositories and the dataset in that run's directory. */
function makeTools(dir: string, data: string): Tool[] {
  return [
    ...modes.map((mode) => burrowTool(mode, dir, data)),
    ...(have('restic') ? [resticTool(dir, data)] : []),
    ...(have('borg') ? [borgTool(dir, data)] : []),
  ];
}

/**
 * One full sequence for every tool on a fresh dataset; steps per tool name. `run` rotates the
 * order in which the tools take each step, reversed in odd runs, so over several runs none is
 * always first or last, nor always after the same tool.
 *
 * Nothing is deleted until every run is done: each run has its own directory (run-N) and each
 * restore its own target. On ext4 without a journal (this machine's disk), creating a file skips
 * every free inode freed in the last minutes whose inode table block is still cached, one by
 * one: after a few runs' deletions, creating 5,000 small files took 3.2 s instead of 0.2 s. A
 * deletion between two timed steps would make the later step pay for it, whichever tool ran it.
 */
function runOnce(run: number): { data: string; results: Map<string, Step[]> } {
  const dir = join(work, `run-${run + 1}`);
  const data = join(dir, 'data');
  mkdirSync(dir, { recursive: true });
  const allTools = makeTools(dir, data);
  const rotated = [
    ...allTools.slice(run % allTools.length),
    ...allTools.slice(0, run % allTools.length),
  ];
  // Every other run goes the other way round (with three tools or more; two just alternate).
  const tools = run % 2 === 1 && rotated.length > 2 ? rotated.reverse() : rotated;
  sh('python3', [GEN, 'gen', '--scale', scale, data]);
  const results = new Map<string, Step[]>();
  for (const tool of tools) tool.setup();
  // Every tool does step 1 and 2 on the base data, then the data is mutated once for all.
  // Each backup starts with the dataset in the page cache (warmDataset).
  const backup = (tool: Tool): Step => {
    warmDataset(data);
    return { ...tool.backup(), repoBytes: repoBytes(tool.repo) };
  };
  for (const tool of tools) {
    const steps: Step[] = [];
    for (let i = 0; i < 2; i++) steps.push(backup(tool));
    results.set(tool.name, steps);
  }
  sh('python3', [GEN, 'mutate', data]);
  for (const tool of tools) {
    const steps = results.get(tool.name)!;
    steps.push(backup(tool));
    const target = join(dir, `restore-${tool.name.replace(/ /g, '-')}`);
    steps.push({ ...tool.restore(target), repoBytes: repoBytes(tool.repo) });
  }
  return { data, results };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const load = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

function main(): void {
  if (!existsSync(burrowBin)) throw new Error('run `npm run build` first (dist/ is missing)');
  // The tool names and their order; each run makes its own tools in its own directory.
  const tools = makeTools(work, join(work, 'data'));
  console.log(
    `dataset: gen-dataset.py --scale ${scale} into ${join(work, 'run-N', 'data')}; burrow modes ${modes.join(', ')}` +
      `${chunkSize === '' ? '' : `, --chunk-size ${chunkSize}`}; ${runs} run(s), medians`,
  );
  if (tools.length === modes.length)
    console.log(
      'restic and borg are not installed: no comparison (apt-get install restic borgbackup)',
    );
  console.log(`load average before: ${load()}`);

  // What an earlier invocation left is removed before anything is timed.
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const all: Map<string, Step[]>[] = [];
  let data = '';
  for (let r = 0; r < runs; r++) {
    const run = runOnce(r);
    all.push(run.results);
    data = run.data;
    // Each run's own figures, in the order the tools took their turn: the medians hide how far
    // runs disagree, and which tool went first.
    console.log(`run ${r + 1}, wall s (cpu s / of it sys s) per step: ${STEPS.join(', ')}`);
    for (const [name, steps] of run.results) {
      const cells = steps.map(
        (s) => `${s.wall.toFixed(2)} (${s.cpu.toFixed(2)}/${s.sys.toFixed(2)})`,
      );
      console.log(`  ${name.padEnd(16)}${cells.join('  ')}`);
    }
  }
  const apparent = Number(
    spawnSync('du', ['-sb', '--apparent-size', data]).stdout.toString().split('\t')[0],
  );
  console.log(`load average after:  ${load()}`);
  console.log(`dataset size ${(apparent / 2 ** 20).toFixed(1)} MiB apparent (after mutate)\n`);

  const results = new Map<string, Step[]>();
  for (const tool of tools) {
    results.set(
      tool.name,
      STEPS.map((_, i) => {
        const at = all.map((run) => run.get(tool.name)![i]!);
        return {
          wall: median(at.map((s) => s.wall)),
          cpu: median(at.map((s) => s.cpu)),
          sys: median(at.map((s) => s.sys)),
          rssKiB: median(at.map((s) => s.rssKiB)),
          repoBytes: median(at.map((s) => s.repoBytes)),
        };
      }),
    );
  }

  const mbps = (s: Step): string => (apparent / 2 ** 20 / s.wall).toFixed(1);
  for (const tool of tools) {
    console.log(`${tool.name}`);
    console.log(
      `  ${'step'.padEnd(18)}${'wall s'.padStart(9)}${'MB/s'.padStart(9)}${'cpu s'.padStart(9)}${'peak RSS MiB'.padStart(14)}${'repo MiB'.padStart(11)}`,
    );
    results.get(tool.name)!.forEach((s, i) => {
      console.log(
        `  ${STEPS[i]!.padEnd(18)}${s.wall.toFixed(2).padStart(9)}${mbps(s).padStart(9)}${s.cpu.toFixed(2).padStart(9)}${(s.rssKiB / 1024).toFixed(0).padStart(14)}${(s.repoBytes / 2 ** 20).toFixed(1).padStart(11)}`,
      );
    });
  }
  for (const mode of modes) {
    const ours = results.get(`burrow ${mode}`)!;
    for (const tool of tools.filter((t) => !t.name.startsWith('burrow'))) {
      console.log(`\n${tool.name} / burrow ${mode} (above 1.00: burrow is faster or smaller)`);
      results.get(tool.name)!.forEach((s, i) => {
        const o = ours[i]!;
        console.log(
          `  ${STEPS[i]!.padEnd(18)} wall ${(s.wall / o.wall).toFixed(2)}  cpu ${(s.cpu / o.cpu).toFixed(2)}  repo ${(s.repoBytes / o.repoBytes).toFixed(2)}`,
        );
      });
    }
  }
  if (!keep) rmSync(work, { recursive: true, force: true });
}

main();
