/**
 * Longer mutation-fuzzing run of the pxar decoder and accessor (the cases of
 * test/helpers/pxar-fuzz.ts, as in src/pxar/fuzz.test.ts).
 *
 *   npx tsx scripts/fuzz-pxar.ts [--seconds 60] [--seed <base>]   run cases base, base+1, ...
 *   npx tsx scripts/fuzz-pxar.ts --case <seed>                     replay one case, print the error
 *
 * The cases run in a child process watched by this one, so even a case stuck in a synchronous
 * loop (which no in-process timer can interrupt) is reported with its seed.
 * Prints cases/s, the outcome counts and every failure with its seed; exits 1 on any failure.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fuzzCorpus, fuzzInput, runFuzzCase } from '../test/helpers/pxar-fuzz.js';

interface Options {
  seconds: number;
  seed: number;
  replay?: number;
}

type Message =
  | { type: 'start'; seed: number }
  | { type: 'failure'; seed: number; message: string }
  | { type: 'progress'; cases: number; outcomes: Record<string, number> }
  | { type: 'done'; cases: number; outcomes: Record<string, number> };

const CASE_TIMEOUT_MS = 10_000;

function parseArgs(argv: string[]): Options {
  const options: Options = { seconds: 60, seed: Date.now() % 1_000_000_000 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = Number(argv[i + 1]);
    if (arg === '--seconds' || arg === '--seed' || arg === '--case') {
      if (!Number.isFinite(value) || value < 0)
        throw new Error(`${arg} needs a non-negative number`);
      i++;
      if (arg === '--seconds') options.seconds = value;
      else if (arg === '--seed') options.seed = Math.floor(value);
      else options.replay = Math.floor(value);
    } else if (arg === '--help' || arg === '-h') {
      console.log('usage: fuzz-pxar.ts [--seconds N] [--seed BASE] | --case SEED');
      process.exit(0);
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  return options;
}

async function workerMain(options: Options): Promise<void> {
  const port = { postMessage: (m: Message): void => void process.send!(m) };
  const corpus = fuzzCorpus();
  const outcomes: Record<string, number> = {};
  const deadline = Date.now() + options.seconds * 1000;
  let cases = 0;
  let lastProgress = Date.now();
  while (Date.now() < deadline) {
    const seed = options.seed + cases;
    port.postMessage({ type: 'start', seed } satisfies Message);
    try {
      const result = await runFuzzCase(seed, corpus, CASE_TIMEOUT_MS);
      for (const key of [`decoder ${result.decoder}`, `accessor ${result.accessor}`])
        outcomes[key] = (outcomes[key] ?? 0) + 1;
    } catch (error) {
      port.postMessage({
        type: 'failure',
        seed,
        message: (error as Error).message,
      } satisfies Message);
    }
    cases++;
    if (Date.now() - lastProgress > 5000) {
      lastProgress = Date.now();
      port.postMessage({ type: 'progress', cases, outcomes } satisfies Message);
    }
  }
  port.postMessage({ type: 'done', cases, outcomes } satisfies Message);
}

async function replay(seed: number): Promise<void> {
  const corpus = fuzzCorpus();
  const input = fuzzInput(seed, corpus);
  console.log(
    `case ${seed}: corpus sample ${input.label}, archive ${input.archive.length} bytes` +
      (input.payload === undefined ? '' : `, payload ${input.payload.length} bytes`) +
      `, pieces ${input.chunks.join('/')}`,
  );
  try {
    const result = await runFuzzCase(seed, corpus, CASE_TIMEOUT_MS);
    console.log(`decoder: ${result.decoder}, accessor: ${result.accessor}`);
  } catch (error) {
    console.error((error as Error).message);
    console.error((error as Error).cause);
    process.exitCode = 1;
  }
}

function mainThread(options: Options): void {
  console.log(`fuzzing pxar for ${options.seconds} s from seed ${options.seed}`);
  const started = Date.now();
  // The child inherits execArgv, so it runs under the same tsx loader as this process.
  const worker = fork(fileURLToPath(import.meta.url), ['--worker', JSON.stringify(options)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const failures: { seed: number; message: string }[] = [];
  let current: { seed: number; since: number } | undefined;
  let finished = false;

  const report = (cases: number, outcomes: Record<string, number>): void => {
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `${cases} cases in ${seconds.toFixed(1)} s (${(cases / seconds).toFixed(0)} cases/s)`,
    );
    for (const [key, count] of Object.entries(outcomes).sort()) console.log(`  ${key}: ${count}`);
  };

  const watchdog = setInterval(() => {
    if (current !== undefined && Date.now() - current.since > CASE_TIMEOUT_MS * 2) {
      console.error(
        `HANG: case seed=${current.seed} has run for ${((Date.now() - current.since) / 1000).toFixed(0)} s`,
      );
      failures.push({ seed: current.seed, message: 'hang (worker terminated)' });
      finished = true;
      clearInterval(watchdog);
      worker.kill('SIGKILL');
    }
  }, 1000);

  worker.on('message', (message: Message) => {
    switch (message.type) {
      case 'start':
        current = { seed: message.seed, since: Date.now() };
        break;
      case 'failure':
        failures.push({ seed: message.seed, message: message.message });
        console.error(`FAIL seed=${message.seed}: ${message.message}`);
        break;
      case 'progress':
        report(message.cases, message.outcomes);
        break;
      case 'done':
        finished = true;
        clearInterval(watchdog);
        report(message.cases, message.outcomes);
        break;
    }
  });
  worker.on('error', (error) => {
    failures.push({
      seed: current?.seed ?? -1,
      message: `cannot run the worker: ${String(error)}`,
    });
  });
  worker.on('exit', (code, signal) => {
    clearInterval(watchdog);
    if (!finished)
      failures.push({
        seed: current?.seed ?? -1,
        message: `the worker process died (exit ${code}, signal ${signal}) during this case`,
      });
    if (failures.length === 0) console.log('no failures');
    else {
      console.error(`${failures.length} failure(s); replay with --case <seed>:`);
      for (const f of failures) console.error(`  seed=${f.seed}: ${f.message}`);
    }
    process.exitCode = failures.length === 0 ? 0 : 1;
  });
}

const args = process.argv.slice(2);
if (args[0] === '--worker') {
  await workerMain(JSON.parse(args[1]!) as Options);
  process.disconnect?.();
} else {
  const options = parseArgs(args);
  if (options.replay !== undefined) await replay(options.replay);
  else mainThread(options);
}
