/**
 * The bundled CLIs that package.json's bins run (dist/cli/burrow.js and burrow-manager.js, written
 * by scripts/bundle-bins.mjs), as a user runs them: the other e2e tests run src/ through tsx, so
 * what bundling can break is checked here. That is what the code finds beside its own file
 * (package.json for the version, the native helper, the chunk worker thread), packages left
 * outside the bundle (zstd-napi, pino), CommonJS packages inside it (commander), and the chunk
 * loaded only on a dynamic import (the HTTP client). The bundles are made again first, from the
 * current src/, so they are never stale.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFERRED_EXTRA_CA_ENV } from '../../src/client/remote/env-names.js';
import { nativeAvailable } from '../../src/lib/native-fs.js';
import { startServerProcess, type ServerProcess } from '../helpers/load-server.js';
import { FakePbs, makeTestCertificates } from '../helpers/test-pbs-server.js';
import { treeOf } from '../helpers/tree-state.js';
import { REPO_ROOT, runCli, type CliResult } from './run-cli.js';

const BIN = join(REPO_ROOT, 'dist', 'cli');
const VERSION = (
  JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
    version: string;
  }
).version;

let root: string;
let dirArgs: string[];

function run(
  bin: 'burrow' | 'burrow-manager',
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  return runCli(bin, args, { bundled: true, cwd: root, env });
}

function ok(result: CliResult, what: string): CliResult {
  if (result.status !== 0)
    throw new Error(`${what} failed (${result.status}):\n${result.stderr}\n${result.stdout}`);
  return result;
}

/** A tree with more data than a pool handles inline (4 MiB), so the worker threads start. */
function makeTree(dir: string): void {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'random.bin'), randomBytes(6 * 1024 * 1024));
  writeFileSync(join(dir, 'text.txt'), 'bundled bins\n'.repeat(5000));
  writeFileSync(join(dir, 'sub', 'small'), 'small\n');
}

beforeAll(() => {
  const bundle = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'bundle-bins.mjs')], {
    encoding: 'utf8',
  });
  if (bundle.status !== 0) throw new Error(`bundle-bins.mjs failed:\n${bundle.stderr}`);
  root = mkdtempSync(join(tmpdir(), 'burrow-e2e-bundled-'));
  dirArgs = [
    ...['--config-dir', join(root, 'etc')],
    ...['--run-dir', join(root, 'run')],
    ...['--log-dir', join(root, 'log')],
  ];
}, 60_000);

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('the bundled bins in dist/cli', () => {
  it('report the package version and find the native helper', async () => {
    // The bins are the bundles, not tsc's modules (which import ./commands/*.js one by one).
    for (const bin of ['burrow.js', 'burrow-manager.js']) {
      const source = readFileSync(join(BIN, bin), 'utf8');
      expect(source).toMatch(/from "\.\/bundled-chunk-[A-Z0-9]+\.js"/);
      expect(source).not.toMatch(/from ["']\.\/commands\//);
    }
    // burrow asks for one V8 platform thread and defers NODE_EXTRA_CA_CERTS (the test below);
    // the runs below execute the bins through that line.
    expect(readFileSync(join(BIN, 'burrow.js'), 'utf8').split('\n')[0]).toBe(
      `#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS ${DEFERRED_EXTRA_CA_ENV}=\${NODE_EXTRA_CA_CERTS} node --v8-pool-size=1`,
    );
    expect(readFileSync(join(BIN, 'burrow-manager.js'), 'utf8').split('\n')[0]).toBe(
      `#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS ${DEFERRED_EXTRA_CA_ENV}=\${NODE_EXTRA_CA_CERTS} node`,
    );
    expect(ok(await run('burrow', ['--version']), 'burrow --version').stdout.trim()).toBe(VERSION);
    const rows = JSON.parse(
      ok(await run('burrow-manager', ['versions', '--output-format', 'json']), 'versions').stdout,
    ) as Array<{ package: string; version: string }>;
    expect(rows.find((r) => r.package === 'burrow')?.version).toBe(VERSION);
    expect(rows.find((r) => r.package === 'zstd')?.version).toMatch(/^\d+\.\d+\.\d+$/);
    // The bundle loads the same build/Release addon as the sources do here.
    const native = rows.find((r) => r.package === 'burrow-fs')?.version;
    if (nativeAvailable()) expect(native).toBe('loaded');
    else expect(native).toMatch(/^not loaded: /);
  });

  it('back up to a local datastore on worker threads and restore byte for byte', async () => {
    const src = join(root, 'local-src');
    makeTree(src);
    const store = join(root, 'local-store');
    ok(await run('burrow-manager', [...dirArgs, 'datastore', 'create', 'local', store]), 'create');
    const backup = ok(
      await run('burrow', [
        ...dirArgs,
        'backup',
        `root.pxar:${src}`,
        '--repository',
        store,
        '--backup-id',
        'bundled',
        '--output-format',
        'json',
      ]),
      'backup',
    );
    const summary = JSON.parse(backup.stdout) as { snapshot: string };
    const out = join(root, 'local-restored');
    ok(
      await run('burrow', [
        ...dirArgs,
        'restore',
        summary.snapshot,
        'root.pxar',
        out,
        '--repository',
        store,
      ]),
      'restore',
    );
    expect(treeOf(out)).toEqual(treeOf(src));
  }, 120_000);

  it('trust a server by a CA in NODE_EXTRA_CA_CERTS, read only when connecting', async () => {
    const certs = makeTestCertificates();
    const token = 'backup@pbs!client';
    const secret = 'b1a3c1d0-0000-4000-8000-000000000002';
    const server = await FakePbs.start({
      key: certs.leafKey,
      cert: certs.leafPem,
      tokens: { [token]: secret },
      routes: (req) =>
        req.url.startsWith('/api2/json/admin/datastore/store1/groups')
          ? { status: 200, body: JSON.stringify({ data: [] }) }
          : undefined,
    });
    try {
      // A local command never reads the file. Node itself, run without the bin's line, loads it
      // at start and warns about one it cannot load.
      const missing = { ...process.env, NODE_EXTRA_CA_CERTS: join(root, 'no-such-ca.pem') };
      const plain = spawnSync(process.execPath, [join(BIN, 'burrow.js'), '--version'], {
        env: missing,
        encoding: 'utf8',
      });
      expect(plain.stderr).toContain('no-such-ca.pem');
      const local = ok(
        await runCli('burrow', ['--version'], { bundled: true, cwd: root, env: missing }),
        'burrow --version',
      );
      expect(local.stderr).toBe('');

      const list = (extraCa: string | undefined): Promise<CliResult> =>
        runCli('burrow', ['list', '--output-format', 'json'], {
          bundled: true,
          cwd: root,
          env: {
            PBS_REPOSITORY: `${token}@localhost:${server.port}:store1`,
            PBS_PASSWORD: secret,
            PBS_FINGERPRINT: undefined,
            NODE_EXTRA_CA_CERTS: extraCa,
            HOME: join(root, 'ca-home'),
            XDG_CONFIG_HOME: join(root, 'ca-xdg'),
          },
        });
      // The leaf is signed by the test CA alone: trusted through the variable, by its chain.
      const trusted = ok(await list(join(certs.dir, 'ca.pem')), 'list with the CA');
      expect(JSON.parse(trusted.stdout)).toEqual([]);
      // Without it there is neither chain nor fingerprint, and no terminal to ask.
      const refused = await list(undefined);
      expect(refused.status).not.toBe(0);
      expect(refused.stderr).toMatch(/certificate/i);
      expect(server.requests.filter((r) => r.url.includes('/groups'))).toHaveLength(1);
    } finally {
      await server.close();
      certs.cleanup();
    }
  }, 60_000);

  it('serve, and back up and restore over HTTPS through the lazily loaded HTTP client', async () => {
    const src = join(root, 'remote-src');
    makeTree(src);
    ok(
      await run('burrow-manager', [...dirArgs, 'datastore', 'create', 'remote', join(root, 'rs')]),
      'create',
    );
    let server: ServerProcess | undefined;
    try {
      server = await startServerProcess({
        command: [process.execPath, join(BIN, 'burrow-manager.js')],
        dirArgs,
        cwd: root,
      });
      const password = readFileSync(join(root, 'etc', 'initial-root-password'), 'utf8').trim();
      const env = {
        PBS_REPOSITORY: `root@pam@127.0.0.1:${server.port}:remote`,
        PBS_PASSWORD: password,
        PBS_FINGERPRINT: server.fingerprint,
        HOME: join(root, 'home'),
        XDG_CONFIG_HOME: join(root, 'xdg'),
      };
      const backup = ok(
        await run('burrow', ['backup', `root.pxar:${src}`, '--output-format', 'json'], env),
        'remote backup',
      );
      const { snapshot } = JSON.parse(backup.stdout) as { snapshot: string };
      const out = join(root, 'remote-restored');
      ok(await run('burrow', ['restore', snapshot, 'root.pxar', out], env), 'remote restore');
      expect(treeOf(out)).toEqual(treeOf(src));
      // The server logs through pino (left outside the bundle): a JSON line per protocol upgrade.
      const upgrades = server
        .logLines()
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { msg?: string; url?: string })
        .filter((entry) => entry.msg === 'upgrade')
        .map((entry) => entry.url?.split('?')[0]);
      expect(upgrades).toEqual(['/api2/json/backup', '/api2/json/reader']);
    } finally {
      const stopped = await server?.stop();
      if (server !== undefined) expect(stopped?.status).toBe(0);
    }
  }, 120_000);
});
