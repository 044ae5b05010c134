/**
 * The /access routes through the real router and the real ServerAccess on a temp config dir,
 * over loopback HTTP (TLS is the listener's business).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BurrowDirs } from '../../../lib/dirs.js';
import { TaskManager } from '../../../tasks/index.js';
import { ServerAccess } from '../../access/server-access.js';
import type { ServerDeps } from '../../server-types.js';
import { createRestHandler } from '../router.js';
import { accessRoutes } from './access.js';

let root: string;
let dirs: BurrowDirs;
let server: Server;
let base: string;
let access: ServerAccess;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'burrow-access-routes-'));
  dirs = { configDir: join(root, 'etc'), runDir: join(root, 'run'), logDir: join(root, 'log') };
  access = await ServerAccess.open(dirs);
  const deps: ServerDeps = {
    dirs,
    access,
    tasks: new TaskManager({ dirs, node: 'testnode' }),
    log: pino({ level: 'silent' }),
    now: () => Math.floor(Date.now() / 1000),
  };
  server = createServer(
    createRestHandler(deps, accessRoutes(access), { authFailureDelayMs: 0, permissionDelayMs: 0 }),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api2/json`;
  await access.setPassword('root@pam', 'rootpass');
  await access.createUser({ userid: 'alice@pbs' }, 'alicepass');
  await access.createUser({ userid: 'bob@pbs' }, 'bobpass');
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(root, { recursive: true, force: true });
});

type Credentials = { ticket: string; csrf: string } | { token: string } | undefined;

interface Answer {
  status: number;
  text: string;
  json: { data?: unknown; digest?: string } | undefined;
}

async function call(
  method: string,
  path: string,
  who?: Credentials,
  params?: Record<string, unknown>,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (who !== undefined && 'ticket' in who) {
    headers.cookie = `PBSAuthCookie=${encodeURIComponent(who.ticket)}`;
    headers.csrfpreventiontoken = who.csrf;
  }
  if (who !== undefined && 'token' in who) headers.authorization = `PBSAPIToken ${who.token}`;
  let url = `${base}${path}`;
  let body: string | undefined;
  if (params !== undefined && (method === 'GET' || method === 'DELETE')) {
    url += `?${new URLSearchParams(params as Record<string, string>).toString()}`;
  } else if (params !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(params);
  }
  const res = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  let json: Answer['json'];
  try {
    json = JSON.parse(text) as Answer['json'];
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

async function login(
  username: string,
  password: string,
): Promise<{ ticket: string; csrf: string }> {
  const answer = await call('POST', '/access/ticket', undefined, { username, password });
  expect(answer.status).toBe(200);
  const data = answer.json?.data as { ticket: string; CSRFPreventionToken: string };
  return { ticket: data.ticket, csrf: data.CSRFPreventionToken };
}

describe('POST/DELETE /access/ticket', () => {
  it('answers {username, ticket, CSRFPreventionToken}; a wrong password is 401', async () => {
    const answer = await call('POST', '/access/ticket', undefined, {
      username: 'alice@pbs',
      password: 'alicepass',
    });
    expect(answer.status).toBe(200);
    const data = answer.json?.data as Record<string, string>;
    expect(Object.keys(data).sort()).toEqual(['CSRFPreventionToken', 'ticket', 'username']);
    expect(data.username).toBe('alice@pbs');
    expect(data.ticket).toMatch(/^PBS:alice@pbs:[0-9A-F]{8}::/);
    const wrong = await call('POST', '/access/ticket', undefined, {
      username: 'alice@pbs',
      password: 'nope!',
    });
    expect(wrong).toMatchObject({ status: 401, text: 'permission check failed.' });
    const tfa = await call('POST', '/access/ticket', undefined, {
      username: 'alice@pbs',
      password: 'alicepass',
      'tfa-challenge': 'x',
    });
    expect(tfa.status).toBe(401);
  });

  it('takes a form body too, and renews with the ticket as password', async () => {
    const res = await fetch(`${base}/access/ticket`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'username=alice%40pbs&password=alicepass',
    });
    expect(res.status).toBe(200);
    const { ticket } = ((await res.json()) as { data: { ticket: string } }).data;
    const renewed = await call('POST', '/access/ticket', undefined, {
      username: 'alice@pbs',
      password: ticket,
    });
    expect(renewed.status).toBe(200);
  });

  it('logout answers null', async () => {
    expect(await call('DELETE', '/access/ticket')).toMatchObject({
      status: 200,
      json: { data: null },
    });
  });
});

describe('users', () => {
  it('root lists everyone; a plain user sees only itself', async () => {
    const rootAuth = await login('root@pam', 'rootpass');
    const all = await call('GET', '/access/users', rootAuth);
    expect(all.status).toBe(200);
    expect((all.json?.data as Array<{ userid: string }>).map((u) => u.userid)).toEqual([
      'alice@pbs',
      'bob@pbs',
      'root@pam',
    ]);
    expect(all.json?.digest).toMatch(/^[0-9a-f]{64}$/);
    const alice = await login('alice@pbs', 'alicepass');
    const own = await call('GET', '/access/users', alice);
    expect(own.json?.data).toEqual([{ userid: 'alice@pbs' }]);
    expect((await call('GET', '/access/users/alice@pbs', alice)).status).toBe(200);
    expect((await call('GET', '/access/users/bob@pbs', alice)).status).toBe(403);
  });

  it('creating needs Permissions.Modify on /access/users; pam passwords only root', async () => {
    const alice = await login('alice@pbs', 'alicepass');
    const create = { userid: 'carol@pbs', password: 'carolpass', comment: 'new' };
    expect((await call('POST', '/access/users', alice, create)).status).toBe(403);
    await access.updateAcl({ path: '/access/users', role: 'Admin', authId: 'alice@pbs' });
    expect((await call('POST', '/access/users', alice, create)).status).toBe(200);
    expect((await access.getUser('carol@pbs')).user.comment).toBe('new');
    const pam = await call('POST', '/access/users', alice, {
      userid: 'dave@pam',
      password: 'davepass',
    });
    expect(pam).toMatchObject({ status: 403, text: 'only superuser can edit pam credentials!' });
    const rootAuth = await login('root@pam', 'rootpass');
    expect(
      (await call('POST', '/access/users', rootAuth, { userid: 'dave@pam', password: 'davepass' }))
        .status,
    ).toBe(200);
    expect((await call('POST', '/access/users', rootAuth, create)).status).toBe(409);
    const bad = await call('POST', '/access/users', rootAuth, { userid: 'eve@pbs', bogus: 1 });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain("'bogus'");
  });

  it('a user may edit itself but not its enable/expire; others need Permissions.Modify', async () => {
    const alice = await login('alice@pbs', 'alicepass');
    expect(
      (await call('PUT', '/access/users/alice@pbs', alice, { email: 'a@example.org' })).status,
    ).toBe(200);
    expect((await call('PUT', '/access/users/alice@pbs', alice, { expire: 0 })).status).toBe(403);
    expect((await call('PUT', '/access/users/bob@pbs', alice, { comment: 'x' })).status).toBe(403);
    expect((await call('DELETE', '/access/users/bob@pbs', alice)).status).toBe(403);
    const rootAuth = await login('root@pam', 'rootpass');
    expect((await call('PUT', '/access/users/bob@pbs', rootAuth, { enable: false })).status).toBe(
      200,
    );
    expect(
      (
        await call('POST', '/access/ticket', undefined, {
          username: 'bob@pbs',
          password: 'bobpass',
        })
      ).status,
    ).toBe(401);
    expect((await call('DELETE', '/access/users/bob@pbs', rootAuth)).status).toBe(200);
    expect((await call('GET', '/access/users/bob@pbs', rootAuth)).status).toBe(404);
  });
});

describe('tokens', () => {
  it('a user manages its own tokens; the secret is shown once and authenticates', async () => {
    const alice = await login('alice@pbs', 'alicepass');
    const created = await call('POST', '/access/users/alice@pbs/token/backup', alice, {
      comment: 'c',
    });
    expect(created.status).toBe(200);
    const { tokenid, value } = created.json?.data as { tokenid: string; value: string };
    expect(tokenid).toBe('alice@pbs!backup');
    const list = await call('GET', '/access/users/alice@pbs/token', alice);
    expect(list.json?.data).toEqual([{ tokenid: 'alice@pbs!backup', comment: 'c' }]);
    expect(JSON.stringify(list.json)).not.toContain(value);
    expect((await call('POST', '/access/users/bob@pbs/token/x', alice)).status).toBe(403);

    const token = { token: `${tokenid}:${value}` };
    const perms = await call('GET', '/access/permissions', token);
    expect(perms).toMatchObject({ status: 200, json: { data: {} } });
    // A token is not its user: it may not manage its user's tokens.
    expect((await call('POST', '/access/users/alice@pbs/token/more', token)).status).toBe(403);
    expect(
      (await call('PUT', '/access/users/alice@pbs/token/backup', alice, { enable: false })).status,
    ).toBe(200);
    expect((await call('GET', '/access/permissions', token)).status).toBe(401);
    expect((await call('DELETE', '/access/users/alice@pbs/token/backup', alice)).status).toBe(200);
    expect((await call('GET', '/access/users/alice@pbs/token/backup', alice)).status).toBe(404);
  });
});

describe('ACL and permissions', () => {
  it('an unprivileged user sets ACL entries for its own tokens only', async () => {
    const alice = await login('alice@pbs', 'alicepass');
    await access.generateToken('alice@pbs', 't');
    await access.generateToken('bob@pbs', 't');
    const put = (authId: string) =>
      call('PUT', '/access/acl', alice, {
        path: '/datastore',
        role: 'DatastoreBackup',
        'auth-id': authId,
      });
    expect((await put('alice@pbs!t')).status).toBe(200);
    expect(await put('alice@pbs')).toMatchObject({
      status: 403,
      text: 'Unprivileged users can only set ACL items for API tokens.',
    });
    expect((await put('bob@pbs!t')).status).toBe(403);
    const rootAuth = await login('root@pam', 'rootpass');
    expect(
      (
        await call('PUT', '/access/acl', rootAuth, {
          path: '/',
          role: 'Audit',
          'auth-id': 'bob@pbs',
        })
      ).status,
    ).toBe(200);
    const visible = await call('GET', '/access/acl', alice);
    expect(visible.json?.data).toEqual([
      {
        path: '/datastore',
        ugid: 'alice@pbs!t',
        ugid_type: 'user',
        propagate: true,
        roleid: 'DatastoreBackup',
      },
    ]);
    const everything = await call('GET', '/access/acl', rootAuth);
    expect((everything.json?.data as unknown[]).length).toBe(2);
    const exact = await call('GET', '/access/acl', rootAuth, { path: '/', exact: 'true' });
    expect((exact.json?.data as Array<{ ugid: string }>).map((e) => e.ugid)).toEqual(['bob@pbs']);
    expect(
      (
        await call('PUT', '/access/acl', rootAuth, {
          path: '/x',
          role: 'Audit',
          'auth-id': 'bob@pbs',
        })
      ).status,
    ).toBe(400);
  });

  it('permissions of others need Sys.Audit on /access', async () => {
    await access.updateAcl({ path: '/datastore/s1', role: 'DatastoreReader', authId: 'bob@pbs' });
    const alice = await login('alice@pbs', 'alicepass');
    expect((await call('GET', '/access/permissions', alice, { 'auth-id': 'bob@pbs' })).status).toBe(
      403,
    );
    await access.updateAcl({ path: '/access', role: 'Audit', authId: 'alice@pbs' });
    const bob = await call('GET', '/access/permissions', alice, { 'auth-id': 'bob@pbs' });
    expect(bob.json?.data).toEqual({
      '/datastore/s1': {
        'Datastore.Audit': true,
        'Datastore.Read': true,
        'Datastore.Verify': true,
      },
    });
  });
});

describe('PUT /access/password', () => {
  it('self, root, or Permissions.Modify on / for non-pam users', async () => {
    const alice = await login('alice@pbs', 'alicepass');
    expect(
      (await call('PUT', '/access/password', alice, { userid: 'alice@pbs', password: 'newpass' }))
        .status,
    ).toBe(200);
    expect(
      (
        await call('POST', '/access/ticket', undefined, {
          username: 'alice@pbs',
          password: 'newpass',
        })
      ).status,
    ).toBe(200);
    expect(
      (await call('PUT', '/access/password', alice, { userid: 'bob@pbs', password: 'newpass' }))
        .status,
    ).toBe(403);
    const rootAuth = await login('root@pam', 'rootpass');
    expect(
      (await call('PUT', '/access/password', rootAuth, { userid: 'bob@pbs', password: 'bobnew' }))
        .status,
    ).toBe(200);
    expect(
      (await call('PUT', '/access/password', alice, { userid: 'alice@pbs', password: 'x' })).status,
    ).toBe(400);
    const wrongConfirmation = await call('PUT', '/access/password', alice, {
      userid: 'alice@pbs',
      password: 'another',
      'confirmation-password': 'wrong',
    });
    expect(wrongConfirmation.status).toBe(401);
  });
});
