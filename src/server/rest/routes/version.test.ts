import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startRestHarness, type RestHarness } from '../../../../test/helpers/rest-harness.js';
import { versionInfoOf, versionRoutes } from './version.js';

let harness: RestHarness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

describe('versionInfoOf', () => {
  it('splits like Cargo: major.minor as version, the patch number as release', () => {
    expect(versionInfoOf({ version: '4.2.3' })).toEqual({
      version: '4.2',
      release: '3',
      repoid: 'unknown',
    });
    expect(versionInfoOf({ version: '1.10.0-beta.1', gitHead: 'abc123' })).toEqual({
      version: '1.10',
      release: '0',
      repoid: 'abc123',
    });
  });
});

describe('GET /version, GET /ping', () => {
  it('/version answers the package version to any authenticated caller', async () => {
    harness = await startRestHarness(versionRoutes());
    harness.access.addUser('alice@pbs');
    const pkg = JSON.parse(
      readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8'),
    ) as { version: string };
    const [major, minor, patch] = pkg.version.split(/[.-]/);
    const res = await harness.request('GET', '/api2/json/version', { auth: 'alice@pbs' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { data: Record<string, unknown> };
    expect(body.data.version).toBe(`${major}.${minor}`);
    expect(body.data.release).toBe(patch);
    expect(typeof body.data.repoid).toBe('string');
  });

  it('/version needs authentication', async () => {
    harness = await startRestHarness(versionRoutes(), { authFailureDelayMs: 0 });
    const res = await harness.request('GET', '/api2/json/version');
    expect(res.status).toBe(401);
  });

  it('/ping needs none', async () => {
    harness = await startRestHarness(versionRoutes());
    const res = await harness.request('GET', '/api2/json/ping');
    expect(await res.json()).toEqual({ data: { pong: true } });
    expect(harness.access.calls).toEqual([]);
  });
});
