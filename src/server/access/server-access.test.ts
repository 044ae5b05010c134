import { mkdtemp, readFile, rm, stat, unlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../../test/helpers/error-code.js';
import type { BurrowDirs } from '../../lib/dirs.js';
import { parseAuthid } from '../../types/auth.js';
import { PRIVILEGES } from '../server-types.js';
import { ensureInitialAdmin } from './initial-admin.js';
import { ServerAccess } from './server-access.js';

const T0 = 1_700_000_000;
let root: string;
let dirs: BurrowDirs;
let now: number;
const clock = () => now;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'burrow-access-'));
  dirs = { configDir: join(root, 'etc'), runDir: join(root, 'run'), logDir: join(root, 'log') };
  now = T0;
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const open = () => ServerAccess.open(dirs, { now: clock });
const id = (text: string) => parseAuthid(text);
const cookie = (ticket: string) => ({ cookie: `PBSAuthCookie=${encodeURIComponent(ticket)}` });
const sorted = (set: ReadonlySet<string>) => [...set].sort();
const mode = async (name: string) => (await stat(join(dirs.configDir, name))).mode & 0o777;

describe('files and formats', () => {
  it('starts without a config directory: root@pam only', async () => {
    const access = await open();
    const { users } = await access.listUsers();
    expect(users).toEqual([{ userid: 'root@pam', comment: 'Superuser' }]);
  });

  it('writes user.cfg in PBS section-config form (0640) and hashes to shadow.json (0600)', async () => {
    const access = await open();
    await access.createUser(
      {
        userid: 'alice@pbs',
        comment: ' Backup operator ',
        email: 'alice@example.com',
        enable: true,
      },
      'secret1',
    );
    await access.createUser({ userid: 'bob@pam', enable: false, expire: 0 });
    await access.generateToken('alice@pbs', 'nightly', { comment: 'job' });
    expect(await readFile(join(dirs.configDir, 'user.cfg'), 'utf8')).toBe(
      [
        'user: alice@pbs',
        '\tcomment Backup operator',
        '\temail alice@example.com',
        '',
        'user: bob@pam',
        '\tenable false',
        '',
        'token: alice@pbs!nightly',
        '\tcomment job',
        '',
      ].join('\n'),
    );
    const shadow = JSON.parse(
      await readFile(join(dirs.configDir, 'shadow.json'), 'utf8'),
    ) as Record<string, string>;
    expect(Object.keys(shadow)).toEqual(['alice@pbs']);
    expect(shadow['alice@pbs']).toMatch(/^\$6\$/);
    const tokens = JSON.parse(
      await readFile(join(dirs.configDir, 'token.shadow'), 'utf8'),
    ) as Record<string, string>;
    expect(Object.keys(tokens)).toEqual(['alice@pbs!nightly']);
    expect(await mode('user.cfg')).toBe(0o640);
    expect(await mode('shadow.json')).toBe(0o600);
    expect(await mode('token.shadow')).toBe(0o600);
  });

  it('refuses bad input before writing anything', async () => {
    const access = await open();
    const code = (p: Promise<unknown>) => rejectionCodeOf(p);
    expect(await code(access.createUser({ userid: 'nope' }))).toBe('INVALID_USERID');
    expect(await code(access.createUser({ userid: 'a@ldap1' }))).toBe('INVALID_ARGUMENT');
    expect(await code(access.createUser({ userid: 'a@pbs', email: 'x' }))).toBe('INVALID_ARGUMENT');
    expect(await code(access.createUser({ userid: 'a@pbs', comment: 'a\nb' }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(await code(access.createUser({ userid: 'a@pbs' }, 'four'))).toBe('INVALID_ARGUMENT');
    expect(await code(access.createUser({ userid: 'root@pam' }))).toBe('ALREADY_EXISTS');
    await access.createUser({ userid: 'a@pbs' });
    expect(await code(access.createUser({ userid: 'a@pbs' }))).toBe('ALREADY_EXISTS');
    expect(await code(access.generateToken('a@pbs', 'bad name'))).toBe('INVALID_AUTHID');
    expect(await code(access.generateToken('ghost@pbs', 't'))).toBe('NOT_FOUND');
    expect(await code(access.deleteUser('root@pam'))).toBe('INVALID_ARGUMENT');
    expect(await code(access.updateUser('root@pam', { enable: false }))).toBe('INVALID_ARGUMENT');
    expect(await code(access.updateUser('ghost@pbs', { comment: 'x' }))).toBe('NOT_FOUND');
  });

  it('update: given properties change, absent ones stay, delete and empty text remove', async () => {
    const access = await open();
    await access.createUser({ userid: 'a@pbs', comment: 'c', firstname: 'Ann', email: 'a@x.org' });
    await access.updateUser('a@pbs', { lastname: 'Lee', comment: '', delete: ['email'] });
    expect((await access.getUser('a@pbs')).user).toEqual({
      userid: 'a@pbs',
      firstname: 'Ann',
      lastname: 'Lee',
    });
    await access.updateUser('a@pbs', { enable: false, expire: T0 + 10 });
    await access.updateUser('a@pbs', { enable: true, expire: 0 });
    expect((await access.getUser('a@pbs')).user).toEqual({
      userid: 'a@pbs',
      firstname: 'Ann',
      lastname: 'Lee',
    });
  });

  it('a stale digest refuses the change', async () => {
    const access = await open();
    const { digest } = await access.listUsers();
    await access.createUser({ userid: 'a@pbs' });
    expect(
      await rejectionCodeOf(access.updateUser('a@pbs', { comment: 'x' }, { expectDigest: digest })),
    ).toBe('INVALID_ARGUMENT');
    const fresh = (await access.listUsers()).digest;
    await access.updateUser('a@pbs', { comment: 'x' }, { expectDigest: fresh });
  });
});

describe('login, tickets and CSRF', () => {
  it('password login gives a ticket and CSRF token that authenticate', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' }, 'secret1');
    const login = await access.login('alice@pbs', 'secret1');
    expect(login.username).toBe('alice@pbs');
    expect(login.ticket).toMatch(/^PBS:alice@pbs:6553F100::[A-Za-z0-9+/]+$/);
    expect(login.csrfToken).toMatch(/^6553F100:[A-Za-z0-9+/]+$/);
    expect(await access.authenticate({ method: 'GET', headers: cookie(login.ticket) })).toEqual(
      id('alice@pbs'),
    );
    // Other methods need the CSRF token too.
    expect(
      await rejectionCodeOf(access.authenticate({ method: 'POST', headers: cookie(login.ticket) })),
    ).toBe('AUTH_FAILED');
    expect(
      await access.authenticate({
        method: 'PUT',
        headers: { ...cookie(login.ticket), csrfpreventiontoken: login.csrfToken },
      }),
    ).toEqual(id('alice@pbs'));
    expect(
      await rejectionCodeOf(
        access.authenticate({
          method: 'DELETE',
          headers: { ...cookie(login.ticket), csrfpreventiontoken: '6553F100:AAAA' },
        }),
      ),
    ).toBe('AUTH_FAILED');
    // A user's tickets and key files persist: a second instance accepts them.
    const again = await open();
    expect(await again.authenticate({ method: 'GET', headers: cookie(login.ticket) })).toEqual(
      id('alice@pbs'),
    );
    expect(await mode('authkey.key')).toBe(0o600);
    expect(await mode('csrf.key')).toBe(0o600);
  });

  it('wrong passwords and unknown users fail alike with "permission check failed."', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' }, 'secret1');
    for (const [user, password] of [
      ['alice@pbs', 'secret2'],
      ['ghost@pbs', 'secret1'],
      ['alice@pam', 'secret1'],
      ['not a user', 'x'],
      ['alice@pbs!token', 'secret1'],
    ] as const) {
      await expect(access.login(user, password)).rejects.toMatchObject({
        code: 'AUTH_FAILED',
        message: 'permission check failed.',
      });
    }
  });

  it('a valid ticket renews; an expired one or another user’s does not', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' }, 'secret1');
    await access.createUser({ userid: 'bob@pbs' }, 'secret2');
    const first = await access.login('alice@pbs', 'secret1');
    now = T0 + 7000;
    const renewed = await access.login('alice@pbs', first.ticket);
    expect(renewed.ticket).not.toBe(first.ticket);
    expect(await rejectionCodeOf(access.login('bob@pbs', first.ticket))).toBe('AUTH_FAILED');
    now = T0 + 7201;
    expect(await rejectionCodeOf(access.login('alice@pbs', first.ticket))).toBe('AUTH_FAILED');
    expect(
      await rejectionCodeOf(access.authenticate({ method: 'GET', headers: cookie(first.ticket) })),
    ).toBe('AUTH_FAILED');
    expect(await access.authenticate({ method: 'GET', headers: cookie(renewed.ticket) })).toEqual(
      id('alice@pbs'),
    );
  });

  it('prefers the __Host- cookie over PBSAuthCookie', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' }, 'secret1');
    const { ticket } = await access.login('alice@pbs', 'secret1');
    const good = encodeURIComponent(ticket);
    const headers = (c: string) => ({ method: 'GET', headers: { cookie: c } });
    expect(
      await access.authenticate(headers(`PBSAuthCookie=junk; __Host-PBSAuthCookie=${good}`)),
    ).toEqual(id('alice@pbs'));
    expect(
      await rejectionCodeOf(
        access.authenticate(headers(`PBSAuthCookie=${good}; __Host-PBSAuthCookie=junk`)),
      ),
    ).toBe('AUTH_FAILED');
    expect(await rejectionCodeOf(access.authenticate(headers('other=1')))).toBe('AUTH_FAILED');
    expect(await rejectionCodeOf(access.authenticate({ method: 'GET', headers: {} }))).toBe(
      'AUTH_FAILED',
    );
  });

  it('disabled or expired users can neither log in nor use their tickets', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs', expire: T0 + 100 }, 'secret1');
    const { ticket } = await access.login('alice@pbs', 'secret1');
    await access.updateUser('alice@pbs', { enable: false });
    expect(await rejectionCodeOf(access.login('alice@pbs', 'secret1'))).toBe('AUTH_FAILED');
    expect(
      await rejectionCodeOf(access.authenticate({ method: 'GET', headers: cookie(ticket) })),
    ).toBe('AUTH_FAILED');
    await access.updateUser('alice@pbs', { enable: true });
    expect(await access.authenticate({ method: 'GET', headers: cookie(ticket) })).toEqual(
      id('alice@pbs'),
    );
    now = T0 + 100; // expire <= now: expired
    expect(await rejectionCodeOf(access.login('alice@pbs', 'secret1'))).toBe('AUTH_FAILED');
    expect(await access.isActive(id('alice@pbs'))).toBe(false);
  });

  it("reads PBS's shadow.json: pbs-realm users keyed by bare name, $5$ hashes", async () => {
    await mkdir(dirs.configDir, { recursive: true });
    await writeFile(
      join(dirs.configDir, 'shadow.json'),
      JSON.stringify({ alice: '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5' }),
    );
    await writeFile(join(dirs.configDir, 'user.cfg'), 'user: alice@pbs\n\nuser: alice@pam\n');
    const access = await open();
    expect((await access.login('alice@pbs', 'Hello world!')).username).toBe('alice@pbs');
    expect(await rejectionCodeOf(access.login('alice@pam', 'Hello world!'))).toBe('AUTH_FAILED');
    // Setting a password moves the user to the <userid> key.
    await access.setPassword('alice@pbs', 'newsecret');
    const shadow = JSON.parse(
      await readFile(join(dirs.configDir, 'shadow.json'), 'utf8'),
    ) as object;
    expect(Object.keys(shadow)).toEqual(['alice@pbs']);
    expect(await rejectionCodeOf(access.login('alice@pbs', 'Hello world!'))).toBe('AUTH_FAILED');
  });
});

describe('initial admin', () => {
  it('creates a random root@pam password once, in a 0600 file, and never overwrites it', async () => {
    const first = await ensureInitialAdmin(dirs);
    expect(first?.passwordFile).toBe(join(dirs.configDir, 'initial-root-password'));
    const file = first?.passwordFile as string;
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const password = (await readFile(file, 'utf8')).trim();
    expect(password.length).toBeGreaterThanOrEqual(20);
    expect(password).toMatch(/^[A-Za-z0-9]+$/);
    const access = await open();
    expect((await access.login('root@pam', password)).username).toBe('root@pam');
    expect(await ensureInitialAdmin(dirs)).toBeUndefined();
    expect((await readFile(file, 'utf8')).trim()).toBe(password);

    // Hash lost but file still there (a crash in between): the file's password is stored again.
    await writeFile(join(dirs.configDir, 'shadow.json'), '{}');
    expect(await ensureInitialAdmin(dirs)).toEqual({ passwordFile: file });
    expect((await readFile(file, 'utf8')).trim()).toBe(password);
    expect((await access.login('root@pam', password)).username).toBe('root@pam');
  });

  it('does nothing when root@pam has a password', async () => {
    const access = await open();
    await access.setPassword('root@pam', 'chosen-password');
    expect(await ensureInitialAdmin(dirs)).toBeUndefined();
    await expect(stat(join(dirs.configDir, 'initial-root-password'))).rejects.toThrow();
  });

  it('two different instances get different passwords', async () => {
    const first = await ensureInitialAdmin(dirs);
    const a = await readFile(first?.passwordFile as string, 'utf8');
    await unlink(first?.passwordFile as string);
    await writeFile(join(dirs.configDir, 'shadow.json'), '{}');
    const second = await ensureInitialAdmin(dirs);
    expect(await readFile(second?.passwordFile as string, 'utf8')).not.toBe(a);
  });
});

describe('API tokens', () => {
  async function setup() {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' }, 'secret1');
    const token = await access.generateToken('alice@pbs', 'job');
    return { access, token };
  }

  it('generate returns the id and a UUID secret; only its hash is stored', async () => {
    const { token } = await setup();
    expect(token.tokenid).toBe('alice@pbs!job');
    expect(token.value).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    const stored = await readFile(join(dirs.configDir, 'token.shadow'), 'utf8');
    expect(stored).not.toContain(token.value);
    expect(stored).toMatch(/"alice@pbs!job": "\$6\$/);
  });

  it('authenticate with a space or "=" after PBSAPIToken; the secret is percent-decoded', async () => {
    const { access, token } = await setup();
    for (const header of [
      `PBSAPIToken ${token.tokenid}:${token.value}`,
      `PBSAPIToken=${token.tokenid}:${token.value}`,
      `PBSAPIToken ${token.tokenid}:${token.value.replace(/-/g, '%2D')}`,
    ]) {
      expect(
        await access.authenticate({ method: 'POST', headers: { authorization: header } }),
      ).toEqual(id('alice@pbs!job'));
    }
    for (const header of [
      `PBSAPIToken ${token.tokenid}:${token.value}x`,
      `PBSAPIToken ${token.tokenid}`,
      `PBSAPIToken alice@pbs:${token.value}`,
      `PBSAPIToken alice@pbs!other:${token.value}`,
      `PBSAPITokenX ${token.tokenid}:${token.value}`,
      `Bearer ${token.value}`,
      `PBSAPIToken ${token.tokenid}:%zz`,
    ]) {
      expect(
        await rejectionCodeOf(
          access.authenticate({ method: 'GET', headers: { authorization: header } }),
        ),
      ).toBe('AUTH_FAILED');
    }
  });

  it('a disabled or expired token, or one of a disabled user, does not authenticate', async () => {
    const { access, token } = await setup();
    const auth = () =>
      access.authenticate({
        method: 'GET',
        headers: { authorization: `PBSAPIToken ${token.tokenid}:${token.value}` },
      });
    await access.updateToken('alice@pbs', 'job', { enable: false });
    expect(await rejectionCodeOf(auth())).toBe('AUTH_FAILED');
    await access.updateToken('alice@pbs', 'job', { enable: true, expire: T0 + 5 });
    expect(await auth()).toEqual(id('alice@pbs!job'));
    now = T0 + 5;
    expect(await rejectionCodeOf(auth())).toBe('AUTH_FAILED');
    now = T0;
    await access.updateUser('alice@pbs', { enable: false });
    expect(await rejectionCodeOf(auth())).toBe('AUTH_FAILED');
    expect(sorted(await access.privileges(id('alice@pbs!job'), '/'))).toEqual([]);
  });

  it('delete removes the token, its secret and its ACL entries', async () => {
    const { access, token } = await setup();
    await access.updateAcl({ path: '/datastore', role: 'DatastoreBackup', authId: token.tokenid });
    await access.deleteToken('alice@pbs', 'job');
    expect((await access.listTokens('alice@pbs')).tokens).toEqual([]);
    expect((await access.readAcl()).entries).toEqual([]);
    expect(await readFile(join(dirs.configDir, 'token.shadow'), 'utf8')).not.toContain('job');
    expect(await rejectionCodeOf(access.deleteToken('alice@pbs', 'job'))).toBe('NOT_FOUND');
  });
});

describe('privileges', () => {
  it('root@pam has every privilege everywhere; its tokens only their own', async () => {
    const access = await open();
    expect(sorted(await access.privileges(id('root@pam'), '/datastore/x/ns'))).toEqual(
      [...PRIVILEGES].sort(),
    );
    expect(await access.anyPrivilegeBelow(id('root@pam'), '/remote')).toBe(true);
    await access.generateToken('root@pam', 'ro');
    await access.updateAcl({ path: '/', role: 'Audit', authId: 'root@pam!ro' });
    expect(sorted(await access.privileges(id('root@pam!ro'), '/datastore'))).toEqual([
      'Datastore.Audit',
      'Sys.Audit',
    ]);
  });

  it("a token's privileges are the intersection of its own and its user's", async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' });
    await access.generateToken('alice@pbs', 't');
    await access.updateAcl({ path: '/datastore', role: 'DatastoreAdmin', authId: 'alice@pbs' });
    await access.updateAcl({ path: '/', role: 'Admin', authId: 'alice@pbs!t' });
    expect(sorted(await access.privileges(id('alice@pbs!t'), '/datastore/s1'))).toEqual(
      sorted(await access.privileges(id('alice@pbs'), '/datastore/s1')),
    );
    expect(sorted(await access.privileges(id('alice@pbs!t'), '/system'))).toEqual([]);
    await access.updateAcl({
      path: '/datastore/s1',
      role: 'DatastoreAudit',
      authId: 'alice@pbs!t',
    });
    expect(sorted(await access.privileges(id('alice@pbs!t'), '/datastore/s1'))).toEqual([
      'Datastore.Audit',
    ]);
    // A token without any grant of its own has nothing, whatever its user has.
    await access.generateToken('alice@pbs', 'bare');
    expect(sorted(await access.privileges(id('alice@pbs!bare'), '/datastore/s1'))).toEqual([]);
  });

  it('unknown, disabled and expired users have no privileges', async () => {
    const access = await open();
    await mkdir(dirs.configDir, { recursive: true });
    await writeFile(join(dirs.configDir, 'acl.cfg'), 'acl:1:/:ghost@pbs,old@pbs,off@pbs:Admin\n');
    await access.createUser({ userid: 'old@pbs', expire: T0 - 1 });
    await access.createUser({ userid: 'off@pbs', enable: false });
    for (const user of ['ghost@pbs', 'old@pbs', 'off@pbs']) {
      expect((await access.privileges(id(user), '/')).size).toBe(0);
      expect(await access.anyPrivilegeBelow(id(user), '/')).toBe(false);
    }
  });

  it('anyPrivilegeBelow sees grants deeper down, and not elsewhere', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' });
    await access.updateAcl({
      path: '/datastore/s1/ns1',
      role: 'DatastoreBackup',
      authId: 'alice@pbs',
      propagate: false,
    });
    expect((await access.privileges(id('alice@pbs'), '/datastore/s1')).size).toBe(0);
    expect(await access.anyPrivilegeBelow(id('alice@pbs'), '/datastore/s1')).toBe(true);
    expect(await access.anyPrivilegeBelow(id('alice@pbs'), '/datastore')).toBe(true);
    expect(await access.anyPrivilegeBelow(id('alice@pbs'), '/datastore/s2')).toBe(false);
    expect(await access.anyPrivilegeBelow(id('alice@pbs'), '/datastore/s1/ns1/deeper')).toBe(false);
  });

  it('permissions(): privileges per path with their propagate flag', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' });
    await access.updateAcl({ path: '/datastore/s1', role: 'DatastoreBackup', authId: 'alice@pbs' });
    await access.updateAcl({
      path: '/datastore/s1',
      role: 'DatastoreAudit',
      authId: 'alice@pbs',
      propagate: false,
    });
    expect(await access.permissions(id('alice@pbs'))).toEqual({
      '/datastore/s1': { 'Datastore.Audit': false, 'Datastore.Backup': true },
    });
    expect(await access.permissions(id('alice@pbs'), '/datastore/s1/ns')).toEqual({
      '/datastore/s1/ns': { 'Datastore.Backup': true },
    });
    expect(await access.permissions(id('alice@pbs'), '/system')).toEqual({});
  });

  it('ACL updates check the path, role and auth ID', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' });
    const code = (p: Promise<unknown>) => rejectionCodeOf(p);
    expect(
      await code(access.updateAcl({ path: '/nowhere', role: 'Audit', authId: 'alice@pbs' })),
    ).toBe('INVALID_ARGUMENT');
    expect(await code(access.updateAcl({ path: '/', role: 'Boss', authId: 'alice@pbs' }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(await code(access.updateAcl({ path: '/', role: 'Audit', authId: 'ghost@pbs' }))).toBe(
      'NOT_FOUND',
    );
    expect(
      await code(access.updateAcl({ path: '/', role: 'Audit', authId: 'alice@pbs!none' })),
    ).toBe('NOT_FOUND');
    expect(await code(access.updateAcl({ path: '/', role: 'Audit', authId: 'root@pam' }))).toBe(
      'INVALID_ARGUMENT',
    );
    await access.updateAcl({ path: '/', role: 'Audit', authId: 'alice@pbs' });
    const { entries, digest } = await access.readAcl();
    expect(entries).toEqual([
      { path: '/', ugid: 'alice@pbs', ugid_type: 'user', propagate: true, roleid: 'Audit' },
    ]);
    expect(await readFile(join(dirs.configDir, 'acl.cfg'), 'utf8')).toBe(
      'acl:1:/:alice@pbs:Audit\n',
    );
    expect(await mode('acl.cfg')).toBe(0o640);
    await access.updateAcl(
      { path: '/', role: 'Audit', authId: 'alice@pbs', delete: true },
      { expectDigest: digest },
    );
    expect((await access.readAcl()).entries).toEqual([]);
  });

  it('deleting a user removes its tokens, secrets and ACL entries', async () => {
    const access = await open();
    await access.createUser({ userid: 'alice@pbs' }, 'secret1');
    await access.createUser({ userid: 'bob@pbs' }, 'secret2');
    await access.generateToken('alice@pbs', 't');
    await access.updateAcl({ path: '/', role: 'Audit', authId: 'alice@pbs' });
    await access.updateAcl({ path: '/', role: 'Audit', authId: 'alice@pbs!t' });
    await access.updateAcl({ path: '/', role: 'Audit', authId: 'bob@pbs' });
    await access.deleteUser('alice@pbs');
    expect((await access.listUsers({ includeTokens: true })).users.map((u) => u.userid)).toEqual([
      'bob@pbs',
      'root@pam',
    ]);
    expect((await access.readAcl()).entries.map((e) => e.ugid)).toEqual(['bob@pbs']);
    const shadow = await readFile(join(dirs.configDir, 'shadow.json'), 'utf8');
    expect(shadow).not.toContain('alice');
    expect(await readFile(join(dirs.configDir, 'token.shadow'), 'utf8')).not.toContain('alice');
    // Recreated, the name gets nothing of the old user's.
    await access.createUser({ userid: 'alice@pbs' });
    expect((await access.privileges(id('alice@pbs'), '/')).size).toBe(0);
    expect(await rejectionCodeOf(access.login('alice@pbs', 'secret1'))).toBe('AUTH_FAILED');
  });
});

describe('changes on disk', () => {
  it('a running instance sees what another process (the CLI) changed', async () => {
    const server = await open();
    const cli = await open();
    await cli.createUser({ userid: 'alice@pbs' }, 'secret1');
    expect((await server.login('alice@pbs', 'secret1')).username).toBe('alice@pbs');
    await cli.updateAcl({ path: '/datastore', role: 'DatastoreAudit', authId: 'alice@pbs' });
    expect(sorted(await server.privileges(id('alice@pbs'), '/datastore/x'))).toEqual([
      'Datastore.Audit',
    ]);
    const { value } = await cli.generateToken('alice@pbs', 't');
    const header = { authorization: `PBSAPIToken alice@pbs!t:${value}` };
    expect(await server.authenticate({ method: 'GET', headers: header })).toEqual(
      id('alice@pbs!t'),
    );
    await cli.deleteToken('alice@pbs', 't');
    expect(await rejectionCodeOf(server.authenticate({ method: 'GET', headers: header }))).toBe(
      'AUTH_FAILED',
    );
  });

  it('a broken file is reported with its name', async () => {
    await mkdir(dirs.configDir, { recursive: true });
    await writeFile(join(dirs.configDir, 'acl.cfg'), 'acl:1:/:alice@pbs:Bogus\n');
    await expect(open()).rejects.toThrow(/acl\.cfg.*line 1/);
    await writeFile(join(dirs.configDir, 'acl.cfg'), '');
    await writeFile(join(dirs.configDir, 'shadow.json'), '[1]');
    await expect(open()).rejects.toThrow(/shadow\.json: expected a JSON object/);
  });
});
