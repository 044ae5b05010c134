import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startRestHarness, type RestHarness } from '../../../../test/helpers/rest-harness.js';
import { configDatastoreRoutes } from './config-datastore.js';

let h: RestHarness;
let cfgPath: string;

const CONFIG = (base: string) =>
  [
    'datastore: store1',
    '\tcomment first store',
    `\tpath ${base}/store1`,
    '',
    'datastore: store2',
    `\tpath ${base}/store2`,
    '',
  ].join('\n');

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

beforeEach(async () => {
  h = await startRestHarness(configDatastoreRoutes(), {
    authFailureDelayMs: 0,
    permissionDelayMs: 0,
  });
  for (const user of ['alice@pbs', 'bob@pbs', 'root@pam']) h.access.addUser(user);
  mkdirSync(h.dirs.configDir, { recursive: true });
  cfgPath = join(h.dirs.configDir, 'datastore.cfg');
  writeFileSync(cfgPath, CONFIG('/srv'));
});

// A created store has 65536 chunk directories: removing them takes a while on a busy machine.
afterEach(async () => {
  await h.close();
}, 60_000);

const json = (body: unknown) => ({
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

async function waitForTask(upid: string) {
  for (let i = 0; i < 3000; i++) {
    const status = await h.tasks.status(upid);
    if (status.state !== 'running') return status;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`task ${upid} did not end`);
}

describe('GET /config/datastore', () => {
  it('lists the stores with Datastore.Audit, and the config digest', async () => {
    const res = await h.request('GET', '/api2/json/config/datastore', { auth: 'root@pam' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      data: [
        { name: 'store1', path: '/srv/store1', comment: 'first store' },
        { name: 'store2', path: '/srv/store2' },
      ],
      digest: sha256(readFileSync(cfgPath)),
    });
    h.access.grant('alice@pbs', '/datastore/store1', ['Datastore.Audit']);
    h.access.grant('bob@pbs', '/datastore/store2', ['Datastore.Backup']);
    const alice = (await (
      await h.request('GET', '/api2/json/config/datastore', { auth: 'alice@pbs' })
    ).json()) as { data: Array<{ name: string }> };
    expect(alice.data.map((d) => d.name)).toEqual(['store1']);
    const bob = (await (
      await h.request('GET', '/api2/json/config/datastore', { auth: 'bob@pbs' })
    ).json()) as { data: unknown[] };
    expect(bob.data).toEqual([]);
  });

  it('no datastore.cfg is an empty list', async () => {
    writeFileSync(cfgPath, '');
    const res = await h.request('GET', '/api2/json/config/datastore', { auth: 'root@pam' });
    expect(await res.json()).toEqual({ data: [], digest: sha256('') });
  });
});

describe('POST /config/datastore', () => {
  it('creates the store in a create-datastore task and answers with its UPID', async () => {
    const path = join(h.dirs.runDir, '..', 'ds3');
    const res = await h.request('POST', '/api2/json/config/datastore', {
      auth: 'root@pam',
      ...json({
        name: 'store3',
        path,
        comment: 'new',
        tuning: 'gc-atime-safety-check=false',
        'gc-schedule': 'daily',
        'keep-last': 3,
      }),
    });
    expect(res.status).toBe(200);
    const { data: upid } = (await res.json()) as { data: string };
    expect(upid).toMatch(
      /^UPID:testnode:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8,}:[0-9A-F]{8}:create-datastore:store3:root@pam:$/,
    );
    const ended = await waitForTask(upid);
    expect(ended.status).toBe('OK');
    expect(existsSync(join(path, '.chunks'))).toBe(true);
    const cfg = readFileSync(cfgPath, 'utf8');
    expect(cfg).toContain('datastore: store3\n');
    for (const line of [
      '\tcomment new',
      `\tpath ${path}`,
      '\tgc-schedule daily',
      '\tkeep-last 3',
    ]) {
      expect(cfg).toContain(line);
    }
    const log = await h.tasks.readLog(upid);
    expect(log.some((l) => l.endsWith(`: create datastore 'store3' on ${path}`))).toBe(true);
  }, 60_000);

  it('needs Datastore.Allocate on /datastore', async () => {
    h.access.grant('alice@pbs', '/datastore', ['Datastore.Modify', 'Datastore.Audit']);
    const res = await h.request('POST', '/api2/json/config/datastore', {
      auth: 'alice@pbs',
      ...json({ name: 'store9', path: '/srv/store9' }),
    });
    expect(res.status).toBe(403);
  });

  it('refuses a taken name, a relative path, bad properties and unknown parameters before any task', async () => {
    const post = async (body: unknown) => {
      const res = await h.request('POST', '/api2/json/config/datastore', {
        auth: 'root@pam',
        ...json(body),
      });
      return { status: res.status, text: await res.text() };
    };
    expect(await post({ name: 'store1', path: '/srv/x' })).toEqual({
      status: 400,
      text: "parameter verification failed - 'name': datastore 'store1' already exists.",
    });
    expect((await post({ name: 'store9', path: 'relative/dir' })).text).toMatch(
      /^parameter verification failed - 'path': /,
    );
    expect((await post({ name: 'store9', path: '/srv/x', tuning: 'bogus=1' })).status).toBe(400);
    expect(await post({ name: 'store9', path: '/srv/x', 'keep-last': 0 })).toEqual({
      status: 400,
      text: "parameter verification failed - 'keep-last': value must have a minimum value of 1 (got 0)",
    });
    expect(await post({ name: 'st', path: '/srv/x' })).toEqual({
      status: 400,
      text: "parameter verification failed - 'name': value must be at least 3 characters long",
    });
    expect((await post({ name: 'store9', path: '/srv/x', owner: 'x' })).text).toBe(
      "parameter verification failed - 'owner': schema does not allow additional properties",
    );
    expect(await h.tasks.list()).toEqual([]);
  });
});

describe('GET /config/datastore/{name}', () => {
  it('reads one store with the digest; Datastore.Audit on it is needed', async () => {
    const res = await h.request('GET', '/api2/json/config/datastore/store1', { auth: 'root@pam' });
    expect(await res.json()).toEqual({
      data: { name: 'store1', path: '/srv/store1', comment: 'first store' },
      digest: sha256(readFileSync(cfgPath)),
    });
    expect(
      (await h.request('GET', '/api2/json/config/datastore/nostore', { auth: 'root@pam' })).status,
    ).toBe(404);
    h.access.grant('alice@pbs', '/datastore/store1', ['Datastore.Audit']);
    expect(
      (await h.request('GET', '/api2/json/config/datastore/store1', { auth: 'alice@pbs' })).status,
    ).toBe(200);
    expect(
      (await h.request('GET', '/api2/json/config/datastore/store2', { auth: 'alice@pbs' })).status,
    ).toBe(403);
  });
});

describe('PUT /config/datastore/{name}', () => {
  const put = (body: unknown, auth = 'root@pam') =>
    h.request('PUT', '/api2/json/config/datastore/store1', { auth, ...json(body) });
  const section = () => readFileSync(cfgPath, 'utf8').split('\n\n')[0];

  it('sets, trims and deletes properties', async () => {
    expect((await put({ comment: '  new comment  ', 'verify-new': true })).status).toBe(200);
    expect(section()).toBe(
      'datastore: store1\n\tcomment new comment\n\tpath /srv/store1\n\tverify-new true',
    );
    expect((await put({ comment: '' })).status).toBe(200);
    expect(section()).toBe('datastore: store1\n\tpath /srv/store1\n\tverify-new true');
    // form body with a repeated `delete`
    const form = await h.request('PUT', '/api2/json/config/datastore/store1', {
      auth: 'root@pam',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'delete=verify-new&delete=comment&gc-schedule=daily',
    });
    expect(form.status).toBe(200);
    expect(await form.json()).toEqual({ data: null });
    expect(section()).toBe('datastore: store1\n\tgc-schedule daily\n\tpath /srv/store1');
  });

  it('honours the digest', async () => {
    const stale = sha256('something else');
    const res = await put({ comment: 'x', digest: stale });
    expect(res.status).toBe(400);
    expect(await res.text()).toBe(
      'detected modified configuration - file changed by other user? Try again.',
    );
    expect((await put({ comment: 'x', digest: sha256(readFileSync(cfgPath)) })).status).toBe(200);
  });

  it('refuses invalid values, unknown deletes and missing stores', async () => {
    expect((await put({ delete: ['path'] })).status).toBe(400);
    expect((await put({ tuning: 'sync-level=sometimes' })).status).toBe(400);
    expect((await put({ comment: 'line\nbreak' })).status).toBe(400);
    const missing = await h.request('PUT', '/api2/json/config/datastore/nostore', {
      auth: 'root@pam',
      ...json({ comment: 'x' }),
    });
    expect(missing.status).toBe(404);
    // nothing changed
    expect(readFileSync(cfgPath, 'utf8')).toBe(CONFIG('/srv'));
  });

  it('needs Datastore.Modify on the store', async () => {
    h.access.grant('alice@pbs', '/datastore/store1', ['Datastore.Audit']);
    expect((await put({ comment: 'x' }, 'alice@pbs')).status).toBe(403);
    h.access.grant('alice@pbs', '/datastore/store1', ['Datastore.Modify']);
    expect((await put({ comment: 'x' }, 'alice@pbs')).status).toBe(200);
  });
});

describe('DELETE /config/datastore/{name}', () => {
  it('removes the store from the configuration in a delete-datastore task', async () => {
    const res = await h.request('DELETE', '/api2/json/config/datastore/store2', {
      auth: 'root@pam',
    });
    expect(res.status).toBe(200);
    const { data: upid } = (await res.json()) as { data: string };
    expect(upid).toMatch(/:delete-datastore:store2:root@pam:$/);
    expect((await waitForTask(upid)).status).toBe('OK');
    expect(readFileSync(cfgPath, 'utf8')).not.toContain('store2');
    expect(readFileSync(cfgPath, 'utf8')).toContain('datastore: store1');
  });

  it("with destroy-data, deletes the datastore's data too, and keeps what is not its own", async () => {
    const created = async (name: string, path: string) => {
      const res = await h.request('POST', '/api2/json/config/datastore', {
        auth: 'root@pam',
        ...json({ name, path, tuning: 'gc-atime-safety-check=false' }),
      });
      const { data: upid } = (await res.json()) as { data: string };
      expect((await waitForTask(upid)).status).toBe('OK');
    };
    const removed = async (name: string) => {
      const res = await h.request('DELETE', `/api2/json/config/datastore/${name}?destroy-data=1`, {
        auth: 'root@pam',
      });
      expect(res.status).toBe(200);
      const { data: upid } = (await res.json()) as { data: string };
      const ended = await waitForTask(upid);
      return { ended, log: await h.tasks.readLog(upid) };
    };
    const gone = join(h.dirs.runDir, '..', 'ds-gone');
    await created('gone', gone);
    const a = await removed('gone');
    expect(a.ended.status).toBe('OK');
    expect(existsSync(gone)).toBe(false);
    expect(readFileSync(cfgPath, 'utf8')).not.toContain('datastore: gone');

    // A file of the user's in the directory stays, with it the directory, and a warning.
    const kept = join(h.dirs.runDir, '..', 'ds-kept');
    await created('kept', kept);
    writeFileSync(join(kept, 'notes.txt'), 'mine');
    const b = await removed('kept');
    expect(b.ended.status).toBe('WARNINGS: 1');
    expect(readFileSync(join(kept, 'notes.txt'), 'utf8')).toBe('mine');
    expect(existsSync(join(kept, '.chunks'))).toBe(false);
    expect(
      b.log.some((l) => l.includes("it holds entries that are not the datastore's: notes.txt")),
    ).toBe(true);
  }, 120_000);

  it('refuses destroy-data on what is no datastore, missing stores, a stale digest, and callers without Datastore.Allocate', async () => {
    const del = (path: string, auth = 'root@pam') =>
      h.request('DELETE', `/api2/json/config/datastore/${path}`, { auth });
    // /srv/store2 is no datastore: refused before the configuration changes.
    expect((await del('store2?destroy-data=1')).status).toBe(400);
    expect((await del('nostore')).status).toBe(404);
    expect((await del(`store2?digest=${sha256('x')}`)).status).toBe(400);
    h.access.grant('alice@pbs', '/datastore/store2', ['Datastore.Modify']);
    expect((await del('store2', 'alice@pbs')).status).toBe(403);
    expect(readFileSync(cfgPath, 'utf8')).toBe(CONFIG('/srv'));
  });
});
