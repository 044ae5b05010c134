/**
 * `burrow-manager serve` and `cert` as an administrator uses them: a real daemon process on
 * 127.0.0.1 with a free port (read from its `listening on` line), the certificate it creates on
 * first start, `cert info` showing the fingerprint the TLS connection presents, `cert update
 * --force` + SIGHUP, and SIGTERM ending it with status 0.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peerFingerprint, startDaemon as startServe, stopDaemons } from '../helpers/daemon.js';
import { runCli, type CliResult } from './run-cli.js';

let root: string;
let dirArgs: string[];

function mgr(...args: string[]): Promise<CliResult> {
  return runCli('burrow-manager', [...dirArgs, ...args]);
}

function fingerprintLine(text: string): string | undefined {
  return /^Fingerprint \(sha256\): ([0-9a-f:]{95})$/m.exec(text)?.[1];
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'burrow-e2e-serve-'));
  dirArgs = [
    '--config-dir',
    join(root, 'etc'),
    '--run-dir',
    join(root, 'run'),
    '--log-dir',
    join(root, 'log'),
  ];
});
afterAll(async () => {
  stopDaemons();
  await rm(root, { recursive: true, force: true });
});

describe('burrow-manager serve and cert', () => {
  it('cert info creates nothing; serve refuses bad options before starting', async () => {
    const [info, noKey, badListen] = await Promise.all([
      mgr('cert', 'info'),
      mgr('serve', '--cert', '/x.pem'),
      mgr('serve', '--listen', '::1:8007'),
    ]);
    expect(info.status).toBe(3);
    expect(info.stderr).toContain(`no certificate at ${join(root, 'etc', 'proxy.pem')}`);
    expect(info.stderr).toMatch(/burrow-manager serve.*burrow-manager cert update/);
    expect(noKey.status).toBe(2);
    expect(noKey.stderr).toContain('--cert and --key go together');
    expect(badListen.status).toBe(2);
    expect(badListen.stderr).toContain('invalid listen address');
  });

  it('serves with the certificate cert info shows, reloads on SIGHUP, stops on SIGTERM', async () => {
    const daemon = await startServe(dirArgs, ['--listen', '127.0.0.1:0']);
    // The fingerprint the TLS connection presents is the one printed and the one cert info shows.
    expect(await peerFingerprint(daemon.port)).toBe(daemon.fingerprint);
    const [text, json, taken, refused] = await Promise.all([
      mgr('cert', 'info'),
      mgr('cert', 'info', '--output-format', 'json'),
      mgr('serve', '--listen', `127.0.0.1:${daemon.port}`),
      mgr('cert', 'update'),
    ]);
    expect(text.status).toBe(0);
    expect(fingerprintLine(text.stdout)).toBe(daemon.fingerprint);
    expect(text.stdout).toMatch(/^Subject: O=Burrow, OU=[0-9A-F]{32}, CN=\S+\n {4}DNS:/);
    expect(text.stdout).toContain('    DNS:localhost\n    IP:127.0.0.1\n    IP:::1\n');
    expect(text.stdout).toMatch(
      /Validity:\n {4}Not Before: \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} GMT\n/,
    );
    const parsed = JSON.parse(json.stdout) as { fingerprint: string; subjectAltNames: string[] };
    expect(parsed.fingerprint).toBe(daemon.fingerprint);
    expect(parsed.subjectAltNames).toContain('IP:127.0.0.1');
    // A second server on the same port fails with the reason.
    expect(taken.status).toBe(1);
    expect(taken.stderr).toContain(`cannot listen on 127.0.0.1:${daemon.port}: EADDRINUSE`);

    // Any HTTP answer proves the request path works end to end (what it is depends on the parts).
    const status = await new Promise<number>((resolve, reject) => {
      https
        .get(
          {
            host: '127.0.0.1',
            port: daemon.port,
            path: '/api2/json/version',
            rejectUnauthorized: false,
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        )
        .on('error', reject);
    });
    expect(status).toBeGreaterThanOrEqual(200);

    // A new certificate: refused without --force, presented after SIGHUP.
    expect(refused.status).toBe(6);
    expect(refused.stderr).toContain('use --force to replace it');
    const updated = await mgr('cert', 'update', '--force', '--hostname', 'backup.example.org');
    expect(updated.status).toBe(0);
    const next = fingerprintLine(updated.stdout);
    expect(next).toBeDefined();
    expect(next).not.toBe(daemon.fingerprint);
    daemon.child.kill('SIGHUP');
    const until = Date.now() + 10_000;
    while ((await peerFingerprint(daemon.port)) !== next) {
      if (Date.now() > until) throw new Error('the server did not reload its certificate');
      await new Promise((r) => setTimeout(r, 50));
    }

    daemon.child.kill('SIGTERM');
    expect(await daemon.exit).toEqual({ status: 0, signal: null });
    const log = daemon
      .stderr()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { msg: string; url?: string; fingerprint?: string });
    expect(log.map((l) => l.msg)).toEqual(
      expect.arrayContaining([
        'created a self-signed certificate',
        'listening',
        'certificate reloaded',
        'stop signal received',
        'server stopped',
      ]),
    );
    expect(log.find((l) => l.msg === 'listening')).toMatchObject({
      url: `https://127.0.0.1:${daemon.port}`,
      fingerprint: daemon.fingerprint,
    });
  });
});
