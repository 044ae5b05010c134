/**
 * Runs the CLIs as a user would: a separate Node process, real argv, real stdout/stderr and exit
 * status. The TypeScript sources run through tsx so the tests never see a stale dist/; `bundled`
 * runs the bundles in dist/cli/ instead (test/e2e/bundled-bins.test.ts makes them first).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

export function runCli(
  bin: 'burrow' | 'burrow-manager',
  args: readonly string[],
  options: {
    env?: Record<string, string | undefined>;
    input?: string | Buffer;
    cwd?: string;
    bundled?: boolean;
  } = {},
): Promise<CliResult> {
  // The bundled bins are executed as a user's shell does, so their shebang line counts too.
  const [command, entry] = options.bundled
    ? [`${ROOT}/dist/cli/${bin}.js`, []]
    : [process.execPath, ['--import', 'tsx', `${ROOT}/src/cli/${bin}.ts`]];
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...entry, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (status) => {
      const stdoutBytes = Buffer.concat(out);
      resolve({
        status,
        stdout: stdoutBytes.toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        stdoutBytes,
      });
    });
    child.stdin.end(options.input);
  });
}

export const SHARED_FIXTURES = fileURLToPath(
  new URL('../../../shared/fixtures/pbs-upstream/', import.meta.url),
);
export const REPO_ROOT = ROOT;
