/**
 * `burrow-manager serve` as a real daemon process for end-to-end tests: started on 127.0.0.1 with
 * a free port (read from its `listening on` line) and its certificate fingerprint, killed by
 * stopDaemons() if a test left it running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as tls from 'node:tls';
import { REPO_ROOT } from '../e2e/run-cli.js';

export interface Daemon {
  child: ChildProcess;
  port: number;
  fingerprint: string;
  stderr: () => string;
  exit: Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
}

const daemons = new Set<ChildProcess>();

/** Start `serve` with the directory options; resolves once it printed address and fingerprint. */
export function startDaemon(
  dirArgs: readonly string[],
  args: readonly string[],
  env: Record<string, string | undefined> = {},
): Promise<Daemon> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', `${REPO_ROOT}/src/cli/burrow-manager.ts`, ...dirArgs, 'serve', ...args],
    {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, BURROW_LOG_LEVEL: 'info', ...env },
    },
  );
  daemons.add(child);
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (status, signal) => {
      daemons.delete(child);
      resolve({ status, signal });
    }),
  );
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m =
        /listening on https:\/\/127\.0\.0\.1:(\d+)\nfingerprint \(sha256\): ([0-9a-f:]+)\n/.exec(
          out,
        );
      if (m !== null)
        resolve({ child, port: Number(m[1]), fingerprint: m[2] ?? '', stderr: () => err, exit });
    });
    void exit.then(({ status }) => reject(new Error(`serve exited (${status}): ${err}`)));
  });
}

/** Kill every daemon still running (afterAll). */
export function stopDaemons(): void {
  for (const child of daemons) child.kill('SIGKILL');
}

/** The SHA-256 fingerprint of the certificate a TLS server presents, as colon hex. */
export function peerFingerprint(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, rejectUnauthorized: false }, () => {
      const raw = socket.getPeerX509Certificate()?.raw;
      socket.destroy();
      if (raw === undefined) reject(new Error('no certificate'));
      else
        resolve(
          createHash('sha256')
            .update(raw)
            .digest('hex')
            .replace(/(..)(?!$)/g, '$1:'),
        );
    });
    socket.on('error', reject);
  });
}
