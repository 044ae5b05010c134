import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relative } from 'node:path';
import { codeOf, rejectionCodeOf } from '../../test/helpers/error-code.js';
import { makeStore, writeSnapshot, type StoreFixture } from '../../test/helpers/store-fixture.js';
import { MANIFEST_BLOB_NAME } from '../format/manifest.js';
import { formatAuthid, parseAuthid } from '../types/auth.js';
import { backupDir, backupGroup, ROOT_NAMESPACE } from '../types/backup.js';
import {
  localAuthid,
  openRepository,
  parseRepository,
  repositoryFromOptions,
  REPOSITORY_ENV,
} from './repository.js';

describe('parseRepository', () => {
  it('reads a bare safe ID as a configured datastore name', () => {
    expect(parseRepository('store1')).toEqual({ kind: 'name', text: 'store1', store: 'store1' });
    expect(parseRepository('_a.b-c')).toMatchObject({ kind: 'name', store: '_a.b-c' });
  });

  it('reads / and . prefixes as paths, kept as given', () => {
    for (const text of ['/srv/backup', './store', '../x', '.', '/a:b@c']) {
      expect(parseRepository(text)).toEqual({ kind: 'path', text, path: text });
    }
  });

  it("parses PBS's remote form [[user@realm[!token]@]host[:port]:]store", () => {
    expect(parseRepository('backup.example.com:store1')).toEqual({
      kind: 'remote',
      text: 'backup.example.com:store1',
      host: 'backup.example.com',
      store: 'store1',
    });
    expect(parseRepository('root@pam@pbs:8007:s')).toMatchObject({
      authId: 'root@pam',
      host: 'pbs',
      port: 8007,
      store: 's',
    });
    expect(parseRepository('me@pbs!tok@10.0.0.1:store')).toMatchObject({
      authId: 'me@pbs!tok',
      host: '10.0.0.1',
      store: 'store',
    });
    expect(parseRepository('[fe80::1]:8007:st')).toMatchObject({
      host: 'fe80::1',
      port: 8007,
      store: 'st',
    });
    expect(parseRepository('u@pam@[::1]:st')).toMatchObject({ authId: 'u@pam', host: '::1' });
  });

  it('refuses what is none of the forms with INVALID_ARGUMENT', () => {
    for (const text of [
      '',
      'has space',
      '-dash',
      'host:',
      'host:bad store',
      'host:0:store',
      'host:65536:store',
      'host:port:store',
      'ho_st:store',
      '::1:store',
      '[::1:store',
      '[::1]x:store',
      '[nothex]:store',
      'no-realm@host:store',
    ]) {
      expect(
        codeOf(() => parseRepository(text)),
        text,
      ).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('repositoryFromOptions', () => {
  it('takes --repository over PBS_REPOSITORY, and the variable without the option', () => {
    const env = { [REPOSITORY_ENV]: 'fromenv' };
    expect(repositoryFromOptions('fromopt', env)).toMatchObject({ store: 'fromopt' });
    expect(repositoryFromOptions(undefined, env)).toMatchObject({ store: 'fromenv' });
  });

  it('names both ways to give one when neither is set', () => {
    let message = '';
    try {
      repositoryFromOptions(undefined, {});
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain('--repository');
    expect(message).toContain(REPOSITORY_ENV);
    expect(codeOf(() => repositoryFromOptions(undefined, { [REPOSITORY_ENV]: '' }))).toBe(
      'INVALID_ARGUMENT',
    );
  });
});

describe('localAuthid', () => {
  it('is root@pam for uid 0 whatever the login name, <name>@pam otherwise', () => {
    expect(formatAuthid(localAuthid({ uid: 0, username: 'toor' }))).toBe('root@pam');
    expect(formatAuthid(localAuthid({ uid: 1000, username: 'alice' }))).toBe('alice@pam');
  });

  it('refuses a login name that is no user name', () => {
    expect(codeOf(() => localAuthid({ uid: 1000, username: 'a b' }))).toBe('INVALID_ARGUMENT');
  });
});

describe('openRepository', () => {
  let fx: StoreFixture;
  beforeAll(async () => {
    fx = await makeStore({ name: 'repo1' });
  });
  afterAll(async () => {
    await fx.cleanup();
  });

  it('opens a configured store by name and by its path as the same store', async () => {
    const byName = await openRepository(parseRepository('repo1'), { dirs: fx.dirs });
    expect(byName.storeName).toBe('repo1');
    expect(byName.display).toBe('repo1');
    const absolute = await openRepository(parseRepository(fx.store.base), { dirs: fx.dirs });
    expect(absolute.storeName).toBe('repo1');
    // A relative path (./...) resolves against the working directory.
    const rel = relative(process.cwd(), fx.store.base);
    const dotted = rel.startsWith('.') ? rel : `./${rel}`;
    const relativeRepo = await openRepository(parseRepository(dotted), { dirs: fx.dirs });
    expect(relativeRepo.path).toBe(fx.store.base);
  });

  it('reports a missing store as NOT_FOUND; a remote one without a password says how to give it', async () => {
    expect(
      await rejectionCodeOf(openRepository(parseRepository('nosuch'), { dirs: fx.dirs })),
    ).toBe('NOT_FOUND');
    const remote = openRepository(parseRepository('root@pam@pbs:store'), {
      dirs: fx.dirs,
      remote: { env: {} },
    });
    await expect(remote).rejects.toThrow(/no password for root@pam: set PBS_PASSWORD/);
    expect(await rejectionCodeOf(remote)).toBe('INVALID_ARGUMENT');
  });

  it('writes as its Authid: new groups are its own, groups of others are refused', async () => {
    const group = backupGroup(ROOT_NAMESPACE, 'host', 'owned');
    const alice = await openRepository(parseRepository('repo1'), {
      dirs: fx.dirs,
      authId: parseAuthid('alice@pam'),
    });
    const writer = await alice.openWriter({ ns: ROOT_NAMESPACE, group, backupTime: 1_700_000_000 });
    try {
      expect(writer.snapshot).toEqual(backupDir(group, 1_700_000_000));
      expect(formatAuthid(await fx.store.getOwner(group))).toBe('alice@pam');
    } finally {
      await writer.close();
    }
    const rootGroup = backupGroup(ROOT_NAMESPACE, 'host', 'roots');
    await writeSnapshot(fx.store, backupDir(rootGroup, 1_700_000_000), []);
    expect(
      await rejectionCodeOf(
        alice.openWriter({ ns: ROOT_NAMESPACE, group: rootGroup, backupTime: 1_700_000_100 }),
      ),
    ).toBe('BACKUP_OWNER_MISMATCH');
  });

  it('reads a snapshot through a reader session', async () => {
    const dir = backupDir(backupGroup(ROOT_NAMESPACE, 'host', 'readme'), 1_700_000_000);
    await writeSnapshot(fx.store, dir, []);
    const repo = await openRepository(parseRepository('repo1'), { dirs: fx.dirs });
    const reader = await repo.openReader(dir);
    try {
      const raw = await reader.download(MANIFEST_BLOB_NAME);
      expect(raw.byteLength).toBeGreaterThan(12);
    } finally {
      await reader.close();
    }
  });
});
