import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BurrowDirs } from '../lib/dirs.js';
import { TaskManager } from '../tasks/index.js';
import { peerFingerprint } from '../../test/helpers/daemon.js';
import { codeOf } from '../../test/helpers/error-code.js';
import type { ServerParts, ServerPartsDeps } from './build-server.js';
import {
  generateSelfSignedCertificate,
  serverCertificatePaths,
  writeCertificateFiles,
} from './certificate.js';
import { createLogger } from './logger.js';
import { parseListenAddress, runServer, startServer, type RunningServer } from './run-server.js';

const quietLog = (): ReturnType<typeof createLogger> => createLogger({ level: 'silent' });

function get(host: string, port: number, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    https
      .get({ host, port, path: '/api2/json/version', ca }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

describe('parseListenAddress', () => {
  it('accepts host:port, [ipv6]:port, a host alone and a port alone', () => {
    expect(parseListenAddress('127.0.0.1:8008')).toEqual({ host: '127.0.0.1', port: 8008 });
    expect(parseListenAddress('0.0.0.0:0')).toEqual({ host: '0.0.0.0', port: 0 });
    expect(parseListenAddress('[::]:8007')).toEqual({ host: '::', port: 8007 });
    expect(parseListenAddress('[::1]')).toEqual({ host: '::1', port: 8007 });
    expect(parseListenAddress('[fe80::1%eth0]:9')).toEqual({ host: 'fe80::1%eth0', port: 9 });
    expect(parseListenAddress('localhost')).toEqual({ host: 'localhost', port: 8007 });
    expect(parseListenAddress('9000')).toEqual({ host: '::', port: 9000 });
    expect(parseListenAddress(':9001')).toEqual({ host: '::', port: 9001 });
  });

  it('refuses the rest with INVALID_ARGUMENT', () => {
    for (const bad of ['', '::1:8007', 'host:abc', '1.2.3.4:65536', '[::1]x', 'h:123456'])
      expect(
        codeOf(() => parseListenAddress(bad)),
        bad,
      ).toBe('INVALID_ARGUMENT');
  });
});

describe('startServer / runServer', () => {
  let root: string;
  let dirs: BurrowDirs;
  const running: RunningServer[] = [];
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'burrow-serve-'));
    dirs = { configDir: join(root, 'etc'), runDir: join(root, 'run'), logDir: join(root, 'log') };
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((r) => r.close({ graceMs: 0 })));
    await rm(root, { recursive: true, force: true });
  });

  it('creates the certificate, hands its parts the deps and serves through them', async () => {
    let seen: ServerPartsDeps | undefined;
    let partsClosed = false;
    const server = await startServer({
      dirs,
      listen: '127.0.0.1:0',
      log: quietLog(),
      buildParts: (deps): Promise<ServerParts> => {
        seen = deps;
        return Promise.resolve({
          onRequest: (req, res) => {
            res.end(`parts answer ${req.url}`);
          },
          onUpgrade: (_req, socket) => {
            socket.destroy();
          },
          close: () => {
            partsClosed = true;
            return Promise.resolve();
          },
        });
      },
    });
    running.push(server);
    expect(seen?.dirs).toEqual(dirs);
    expect(seen?.tasks).toBeInstanceOf(TaskManager);
    expect(Math.abs((seen?.now() ?? 0) - Date.now() / 1000)).toBeLessThan(5);
    expect(server.url).toBe(`https://127.0.0.1:${server.address.port}`);

    const { certPath, keyPath } = serverCertificatePaths(dirs);
    expect((await stat(keyPath)).mode & 0o777).toBe(0o600);
    expect(await peerFingerprint(server.address.port, '127.0.0.1')).toBe(server.fingerprint);
    const { readFile } = await import('node:fs/promises');
    const reply = await get('127.0.0.1', server.address.port, await readFile(certPath, 'utf8'));
    expect(reply).toEqual({ status: 200, body: 'parts answer /api2/json/version' });

    await server.close();
    expect(partsClosed).toBe(true);
  });

  it('reloads the certificate files on request', async () => {
    const server = await startServer({ dirs, listen: '127.0.0.1:0', log: quietLog() });
    running.push(server);
    const before = server.fingerprint;
    const next = await generateSelfSignedCertificate({ hostname: 'next' });
    await writeCertificateFiles(serverCertificatePaths(dirs), next, { replace: true });
    expect(await server.reloadCertificate()).toBe(next.fingerprint);
    expect(server.fingerprint).toBe(next.fingerprint);
    expect(next.fingerprint).not.toBe(before);
    expect(await peerFingerprint(server.address.port, '127.0.0.1')).toBe(next.fingerprint);
  });

  it('uses named certificate files and creates none', async () => {
    const named = await generateSelfSignedCertificate({ hostname: 'named' });
    const certPath = join(root, 'server.crt');
    const keyPath = join(root, 'server.key');
    await writeFile(certPath, named.certPem);
    await writeFile(keyPath, named.keyPem);
    const server = await startServer({
      dirs,
      listen: '127.0.0.1:0',
      certPath,
      keyPath,
      log: quietLog(),
    });
    running.push(server);
    expect(server.fingerprint).toBe(named.fingerprint);
    expect(await peerFingerprint(server.address.port, '127.0.0.1')).toBe(named.fingerprint);
    await expect(stat(serverCertificatePaths(dirs).certPath)).rejects.toThrow(/ENOENT/);
  });

  it('listens on IPv6 loopback', async () => {
    const server = await startServer({ dirs, listen: '[::1]:0', log: quietLog() });
    running.push(server);
    expect(server.address.host).toBe('::1');
    expect(server.url).toBe(`https://[::1]:${server.address.port}`);
    expect(await peerFingerprint(server.address.port, '::1')).toBe(server.fingerprint);
  });

  it('runServer prints the address, reloads on SIGHUP and stops on SIGTERM', async () => {
    let out = '';
    const stdout = new Writable({
      write(chunk: Buffer, _enc, done) {
        out += chunk.toString();
        done();
      },
    });
    const listenersBefore = process.listenerCount('SIGTERM');
    let finished = false;
    const run = runServer({
      dirs,
      listen: '127.0.0.1:0',
      log: quietLog(),
      stdout,
      graceMs: 1000,
    }).then(() => (finished = true));
    const until = Date.now() + 5000;
    while (!out.includes('fingerprint')) {
      if (Date.now() > until) throw new Error(`no listening line: ${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const match =
      /^listening on https:\/\/127\.0\.0\.1:(\d+)\nfingerprint \(sha256\): ([0-9a-f:]{95})\n$/.exec(
        out,
      );
    expect(match).not.toBeNull();
    const port = Number(match?.[1]);
    expect(await peerFingerprint(port, '127.0.0.1')).toBe(match?.[2]);
    expect(process.listenerCount('SIGTERM')).toBe(listenersBefore + 1);

    const next = await generateSelfSignedCertificate({ hostname: 'hup' });
    await writeCertificateFiles(serverCertificatePaths(dirs), next, { replace: true });
    process.emit('SIGHUP', 'SIGHUP');
    const hupUntil = Date.now() + 5000;
    while ((await peerFingerprint(port, '127.0.0.1')) !== next.fingerprint) {
      if (Date.now() > hupUntil) throw new Error('certificate not reloaded');
      await new Promise((r) => setTimeout(r, 20));
    }

    expect(finished).toBe(false);
    process.emit('SIGTERM', 'SIGTERM');
    await run;
    expect(process.listenerCount('SIGTERM')).toBe(listenersBefore);
    await expect(peerFingerprint(port, '127.0.0.1')).rejects.toThrow(/ECONNREFUSED/);
  });
});
