/**
 * `burrow-manager user|acl` as an administrator runs them: a real process per command on temp
 * config/run/log directories. What the CLI writes is then checked the way the server reads it
 * (ServerAccess in this process): passwords log in, token secrets authenticate, ACL entries give
 * the privileges. The steps build on each other, so they run in order.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BurrowDirs } from '../../src/lib/dirs.js';
import { EXIT } from '../../src/lib/errors.js';
import { ServerAccess } from '../../src/server/access/index.js';
import { parseAuthid } from '../../src/types/auth.js';
import { runCli, type CliResult } from './run-cli.js';

let root: string;
let dirs: BurrowDirs;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'burrow-access-cli-'));
  dirs = { configDir: join(root, 'etc'), runDir: join(root, 'run'), logDir: join(root, 'log') };
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function mgr(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return runCli(
    'burrow-manager',
    ['--config-dir', dirs.configDir, '--run-dir', dirs.runDir, '--log-dir', dirs.logDir, ...args],
    { env: { BURROW_USER_PASSWORD: undefined, ...env } },
  );
}

async function mgrJson<T>(...args: string[]): Promise<T> {
  const result = await mgr([...args, '--output-format', 'json']);
  if (result.status !== 0)
    throw new Error(`${args.join(' ')} failed (${result.status}): ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

const configFile = (name: string) => join(dirs.configDir, name);

/** `burrow-manager acl update <args>`; its exit status. */
async function aclUpdate(...args: string[]): Promise<number | null> {
  return (await mgr(['acl', 'update', ...args])).status;
}

describe('burrow-manager user and acl', { timeout: 180_000 }, () => {
  let tokenSecret = '';

  it('creates users: a password from --password or $BURROW_USER_PASSWORD, else none', async () => {
    const alice = await mgr([
      'user',
      'create',
      'alice@pbs',
      '--password',
      'alice-secret',
      '--comment',
      'Backups',
    ]);
    expect(alice).toMatchObject({ status: 0, stdout: "created user 'alice@pbs'\n" });
    const bob = await mgr(['user', 'create', 'bob@pbs', '--email', 'bob@example.org'], {
      BURROW_USER_PASSWORD: 'bob-secret',
    });
    expect(bob.status).toBe(0);
    // stdin is a pipe here: no prompt, no password.
    const carol = await mgr(['user', 'create', 'carol@pam', '--enable', 'false']);
    expect(carol.stdout).toBe("created user 'carol@pam' (no password)\n");

    expect(await readFile(configFile('user.cfg'), 'utf8')).toBe(
      [
        'user: alice@pbs',
        '\tcomment Backups',
        '',
        'user: bob@pbs',
        '\temail bob@example.org',
        '',
        'user: carol@pam',
        '\tenable false',
        '',
      ].join('\n'),
    );
    expect((await stat(configFile('user.cfg'))).mode & 0o777).toBe(0o640);
    expect((await stat(configFile('shadow.json'))).mode & 0o777).toBe(0o600);

    const access = await ServerAccess.open(dirs);
    expect((await access.login('alice@pbs', 'alice-secret')).username).toBe('alice@pbs');
    expect((await access.login('bob@pbs', 'bob-secret')).username).toBe('bob@pbs');
    await expect(access.login('carol@pam', '')).rejects.toMatchObject({ code: 'AUTH_FAILED' });
  });

  it('lists users as a table and as JSON', async () => {
    const text = await mgr(['user', 'list']);
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^userid\s+enable\s+expire\s+firstname\s+lastname\s+email\s+comment$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual([
      'alice@pbs',
      'bob@pbs',
      'carol@pam',
      'root@pam',
    ]);
    expect(lines.find((l) => l.startsWith('carol@pam'))).toMatch(/^carol@pam\s+0\s+never/);
    const json = await mgrJson<Array<Record<string, unknown>>>('user', 'list');
    expect(json).toContainEqual({ userid: 'alice@pbs', comment: 'Backups' });
    expect(json).toContainEqual({ userid: 'root@pam', comment: 'Superuser' });
  });

  it('updates a user: given options change, --delete removes, the rest stays', async () => {
    const updated = await mgrJson<Record<string, unknown>>(
      'user',
      'update',
      'bob@pbs',
      '--firstname',
      'Bob',
      '--delete',
      'email',
      '--expire',
      '4102444800',
    );
    expect(updated).toEqual({ userid: 'bob@pbs', firstname: 'Bob', expire: 4102444800 });
    const table = await mgr(['user', 'list']);
    expect(table.stdout).toMatch(/bob@pbs\s+1\s+2100-01-01T00:00:00Z\s+Bob/);
  });

  it('generates an API token whose secret is shown once and authenticates', async () => {
    const text = await mgr(['user', 'generate-token', 'alice@pbs', 'nightly', '--comment', 'job']);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/^tokenid: +alice@pbs!nightly\nsecret: +[0-9a-f-]{36}\n/);
    expect(text.stdout).toContain('shown only now');
    tokenSecret = /secret: +([0-9a-f-]{36})/.exec(text.stdout)?.[1] ?? '';
    const json = await mgrJson<{ tokenid: string; value: string }>(
      'user',
      'generate-token',
      'alice@pbs',
      'other',
    );
    expect(json.tokenid).toBe('alice@pbs!other');
    expect(json.value).toMatch(/^[0-9a-f-]{36}$/);
    const stored = await readFile(configFile('token.shadow'), 'utf8');
    expect(stored).not.toContain(tokenSecret);
    expect((await stat(configFile('token.shadow'))).mode & 0o777).toBe(0o600);

    const access = await ServerAccess.open(dirs);
    const authId = await access.authenticate({
      method: 'POST',
      headers: { authorization: `PBSAPIToken alice@pbs!nightly:${tokenSecret}` },
    });
    expect(authId).toEqual(parseAuthid('alice@pbs!nightly'));

    const tokens = await mgrJson<Array<{ tokenid: string }>>('user', 'list-tokens', 'alice@pbs');
    expect(tokens.map((t) => t.tokenid)).toEqual(['alice@pbs!nightly', 'alice@pbs!other']);
    expect(await mgr(['user', 'delete-token', 'alice@pbs', 'other'])).toMatchObject({ status: 0 });
  });

  it('grants roles; acl.cfg is in PBS format and the privileges follow', async () => {
    expect(await aclUpdate('/datastore/store1', 'DatastoreBackup', '--auth-id', 'alice@pbs')).toBe(
      0,
    );
    expect(
      await aclUpdate(
        '/datastore/store1',
        'DatastoreBackup',
        '--auth-id',
        'alice@pbs!nightly',
        '--propagate',
        'false',
      ),
    ).toBe(0);
    expect(await aclUpdate('/', 'Audit', '--auth-id', 'bob@pbs')).toBe(0);
    expect(await readFile(configFile('acl.cfg'), 'utf8')).toBe(
      [
        'acl:1:/:bob@pbs:Audit',
        'acl:0:/datastore/store1:alice@pbs!nightly:DatastoreBackup',
        'acl:1:/datastore/store1:alice@pbs:DatastoreBackup',
        '',
      ].join('\n'),
    );
    const list = await mgr(['acl', 'list']);
    expect(list.stdout.split('\n')[0]).toMatch(/^ugid\s+path\s+propagate\s+roleid$/);
    expect(list.stdout).toMatch(/alice@pbs!nightly\s+\/datastore\/store1\s+0\s+DatastoreBackup/);

    const perms = await mgr(['user', 'permissions', 'alice@pbs']);
    expect(perms.stdout).toBe(
      'Privileges with (*) have the propagate flag set\n\nPath: /datastore/store1\n- Datastore.Backup (*)\n',
    );
    const tokenPerms = await mgrJson<Record<string, unknown>>(
      'user',
      'permissions',
      'alice@pbs!nightly',
      '--path',
      '/datastore/store1/ns1',
    );
    expect(tokenPerms).toEqual({});

    const access = await ServerAccess.open(dirs);
    expect([
      ...(await access.privileges(parseAuthid('alice@pbs!nightly'), '/datastore/store1')),
    ]).toEqual(['Datastore.Backup']);
    expect(
      await aclUpdate('/datastore/store1', 'DatastoreBackup', '--auth-id', 'alice@pbs', '--delete'),
    ).toBe(0);
    expect(
      (await access.privileges(parseAuthid('alice@pbs!nightly'), '/datastore/store1')).size,
    ).toBe(0);
  });

  it('removes a user with its tokens and ACL entries', async () => {
    expect(await mgr(['user', 'remove', 'alice@pbs'])).toMatchObject({
      status: 0,
      stdout: "removed user 'alice@pbs'\n",
    });
    expect(await readFile(configFile('acl.cfg'), 'utf8')).toBe('acl:1:/:bob@pbs:Audit\n');
    expect(await readFile(configFile('user.cfg'), 'utf8')).not.toContain('alice');
    expect(await readFile(configFile('token.shadow'), 'utf8')).not.toContain('alice');
  });

  it('reports bad input with the documented exit statuses', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['user', 'create', 'nobody'], EXIT.usage, /invalid user ID/],
      [['user', 'create', 'x@ldap'], EXIT.usage, /unknown realm 'ldap'/],
      [['user', 'create', 'bob@pbs'], EXIT.conflict, /user 'bob@pbs' already exists/],
      [
        ['user', 'create', 'dan@pbs', '--password', 'abc'],
        EXIT.usage,
        /password must have 5\.\.64/,
      ],
      [['user', 'update', 'ghost@pbs', '--comment', 'x'], EXIT.notFound, /does not exist/],
      [['user', 'remove', 'root@pam'], EXIT.usage, /cannot be removed/],
      [['user', 'generate-token', 'ghost@pbs', 't'], EXIT.notFound, /does not exist/],
      [
        ['user', 'delete-token', 'bob@pbs', 'none'],
        EXIT.notFound,
        /token 'none' of user 'bob@pbs'/,
      ],
      [['user', 'permissions', 'ghost@pbs'], EXIT.notFound, /does not exist/],
      [
        ['acl', 'update', '/nowhere', 'Audit', '--auth-id', 'bob@pbs'],
        EXIT.usage,
        /invalid acl path/,
      ],
      [['acl', 'update', '/', 'Boss', '--auth-id', 'bob@pbs'], EXIT.usage, /unknown role 'Boss'/],
      [['acl', 'update', '/', 'Audit', '--auth-id', 'ghost@pbs'], EXIT.notFound, /does not exist/],
      [['acl', 'update', '/', 'Audit'], EXIT.usage, /--auth-id/],
      [['user', 'update', 'bob@pbs', '--delete', 'enable'], EXIT.usage, /--delete: 'enable'/],
    ];
    for (const [args, status, message] of cases) {
      const result = await mgr(args);
      expect({ args, status: result.status }).toEqual({ args, status });
      expect(result.stderr).toMatch(message);
    }
  });
});
