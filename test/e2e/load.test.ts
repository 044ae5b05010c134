/**
 * The bounded load test (scripts/load-test.ts, `npm run test:load`) with small counts, as CI runs
 * it: a real `burrow-manager serve`, 4 clients backing up and restoring 2 rounds each at once. It
 * must end by itself with status 0 and its PASS line: every backup and restore done, every restore
 * equal to its source, verify clean, no error in the server's log.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './run-cli.js';

function runLoadTest(args: readonly string[]): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', `${REPO_ROOT}/scripts/load-test.ts`, ...args],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, out }));
  });
}

describe('load test', () => {
  it('4 clients x 2 rounds x 4 MiB against a real server: no errors, no lost data', async () => {
    const clients = 4;
    const rounds = 2;
    const { status, out } = await runLoadTest([
      '--clients',
      String(clients),
      '--rounds',
      String(rounds),
      '--size',
      '4',
      '--timeout',
      '150',
    ]);
    const lines = out.trim().split('\n');
    const verdict = lines.at(-1) ?? '';
    expect(verdict, out).toMatch(
      new RegExp(
        `^load test: PASS: ${clients * rounds} backups, ${clients * rounds} restores, errors 0, lost 0, backup [0-9.]+ MiB/s, restore [0-9.]+ MiB/s, dedup [0-9.]+$`,
      ),
    );
    expect(status, out).toBe(0);
    expect(out).toContain('verify ok');
    expect(out).toMatch(
      new RegExp(`sessions: ${clients * rounds} backup \\+ ${clients * rounds} reader tasks`),
    );
    // The shared file and image chunk are stored once although every backup has them.
    const dedup = Number(/dedup ([0-9.]+)$/.exec(verdict)?.[1]);
    expect(dedup).toBeGreaterThan(1.5);
  }, 180_000);
});
