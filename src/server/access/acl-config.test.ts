import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { codeOf } from '../../../test/helpers/error-code.js';
import { AclTree, checkAclPath, splitAclPath } from './acl-config.js';
import { ROLE_NAMES, type RoleName } from './roles.js';

const privs = (tree: AclTree, ugid: string, path: string): string[] =>
  [...tree.privileges(ugid, splitAclPath(path)).privileges].sort();

const roles = (tree: AclTree, ugid: string, path: string): string[] =>
  [...tree.roles(ugid, splitAclPath(path)).keys()].sort();

describe('acl.cfg syntax', () => {
  it("reads PBS's documented example", () => {
    const tree = AclTree.parse(
      'acl:1:/:root@pam!test:Admin\nacl:1:/datastore/store1:user1@pbs:DatastoreAdmin\n',
    );
    expect(tree.list()).toEqual([
      { path: '/', ugid: 'root@pam!test', ugid_type: 'user', propagate: true, roleid: 'Admin' },
      {
        path: '/datastore/store1',
        ugid: 'user1@pbs',
        ugid_type: 'user',
        propagate: true,
        roleid: 'DatastoreAdmin',
      },
    ]);
  });

  it('writes auth IDs holding the same roles on one line, propagate=0 lines first', () => {
    const tree = AclTree.parse(
      [
        'acl:0:/datastore/store2:user1@pbs:Admin',
        'acl:0:/datastore/store2:user2@pbs:Admin',
        'acl:0:/datastore/store2:user1@pbs:DatastoreBackup',
        'acl:0:/datastore/store2:user2@pbs:DatastoreBackup',
        'acl:1:/datastore/store2:user3@pbs:Audit',
        'acl:1:/:user3@pbs:Audit',
        '',
      ].join('\n'),
    );
    expect(tree.render()).toBe(
      [
        'acl:1:/:user3@pbs:Audit',
        'acl:0:/datastore/store2:user1@pbs,user2@pbs:Admin,DatastoreBackup',
        'acl:1:/datastore/store2:user3@pbs:Audit',
        '',
      ].join('\n'),
    );
  });

  it('NoAccess and other roles exclude each other per node: the later one wins', () => {
    const tree = AclTree.parse(
      'acl:1:/datastore:u@pbs:DatastoreAdmin\nacl:0:/datastore:u@pbs:NoAccess\n',
    );
    expect(tree.render()).toBe('acl:0:/datastore:u@pbs:NoAccess\n');
    tree.insert('/datastore', 'u@pbs', 'Audit', true);
    expect(tree.render()).toBe('acl:1:/datastore:u@pbs:Audit\n');
  });

  it('does not write root@pam entries (root has everything) but does write its tokens', () => {
    const tree = AclTree.parse('acl:1:/:root@pam:Admin\nacl:1:/:root@pam!t:Audit\n');
    expect(tree.render()).toBe('acl:1:/:root@pam!t:Audit\n');
  });

  it('skips blank lines, trims lines and list items', () => {
    const tree = AclTree.parse('\n  acl:1:/datastore:a@pbs, b@pbs:Audit , DatastoreReader  \n\n');
    expect(tree.render()).toBe('acl:1:/datastore:a@pbs,b@pbs:Audit,DatastoreReader\n');
  });

  it('refuses malformed lines, naming the line', () => {
    const cases = [
      'acl:1:/:a@pbs',
      'acx:1:/:a@pbs:Admin',
      'acl:2:/:a@pbs:Admin',
      'acl:1:/nowhere:a@pbs:Admin',
      'acl:1:/:a@pbs:Superuser',
      'acl:1:/:nobody:Admin',
      'acl:1:/::Admin',
      'acl:1:/datastore//x:a@pbs:Admin',
    ];
    for (const line of cases) {
      expect(codeOf(() => AclTree.parse(`\n${line}\n`))).toMatch(/^INVALID_/);
      try {
        AclTree.parse(`\n${line}\n`);
      } catch (error) {
        expect((error as Error).message).toMatch(/^acl\.cfg line 2: /);
      }
    }
  });

  it('keeps @group entries (PBS has no groups yet; they grant nothing)', () => {
    const tree = AclTree.parse('acl:1:/:@admins:Admin\n');
    expect(tree.list()[0]).toMatchObject({ ugid: '@admins', ugid_type: 'group' });
    expect(tree.render()).toBe('acl:1:/:@admins:Admin\n');
  });
});

describe('ACL paths', () => {
  it('accepts the object paths PBS knows', () => {
    for (const path of [
      '/',
      '/access',
      '/access/users',
      '/access/acl',
      '/datastore',
      '/datastore/store1',
      '/datastore/store1/a/b/c/d/e/f/g',
      '/remote',
      '/remote/r1/store1/ns1',
      '/system',
      '/system/network/interfaces/eth0',
      '/system/services/proxmox-backup',
      '/tape/pool/p1',
    ]) {
      expect(codeOf(() => checkAclPath(path))).toBeUndefined();
    }
  });

  it('refuses bad syntax and unknown objects', () => {
    for (const path of [
      '',
      'datastore',
      '/datastore/',
      '//',
      '/datastore/s1/a/b/c/d/e/f/g/h',
      '/access/users/alice',
      '/system/unknown',
      '/other',
      `/datastore/${'x'.repeat(130)}`,
      '/datastore/bad name',
    ]) {
      expect(codeOf(() => checkAclPath(path))).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('permission resolution (PBS semantics)', () => {
  it('a propagating role holds below its path; a non-propagating one only on it', () => {
    const tree = AclTree.parse(
      'acl:1:/datastore:prop@pbs:DatastoreAudit\nacl:0:/datastore:flat@pbs:DatastoreAudit\n',
    );
    expect(privs(tree, 'prop@pbs', '/datastore')).toEqual(['Datastore.Audit']);
    expect(privs(tree, 'prop@pbs', '/datastore/s1/ns1')).toEqual(['Datastore.Audit']);
    expect(privs(tree, 'flat@pbs', '/datastore')).toEqual(['Datastore.Audit']);
    expect(privs(tree, 'flat@pbs', '/datastore/s1')).toEqual([]);
    expect(privs(tree, 'prop@pbs', '/')).toEqual([]);
  });

  it('the most specific path with entries wins; roles on one path are unioned', () => {
    const tree = AclTree.parse(
      [
        'acl:1:/:u@pbs:Audit',
        'acl:1:/datastore/s1:u@pbs:DatastoreBackup',
        'acl:1:/datastore/s1:u@pbs:DatastoreAudit',
      ].join('\n'),
    );
    expect(privs(tree, 'u@pbs', '/datastore/s2')).toEqual(['Datastore.Audit', 'Sys.Audit']);
    expect(privs(tree, 'u@pbs', '/datastore/s1')).toEqual(['Datastore.Audit', 'Datastore.Backup']);
    expect(privs(tree, 'u@pbs', '/datastore/s1/ns')).toEqual([
      'Datastore.Audit',
      'Datastore.Backup',
    ]);
  });

  it('NoAccess on a more specific path removes what is inherited', () => {
    const tree = AclTree.parse('acl:1:/:u@pbs:Admin\nacl:1:/datastore/secret:u@pbs:NoAccess\n');
    expect(privs(tree, 'u@pbs', '/datastore/other')).toHaveLength(17);
    expect(privs(tree, 'u@pbs', '/datastore/secret')).toEqual([]);
    expect(privs(tree, 'u@pbs', '/datastore/secret/ns1')).toEqual([]);
    expect(roles(tree, 'u@pbs', '/datastore/secret')).toEqual(['NoAccess']);
  });

  it('a non-propagating NoAccess blocks its own path only', () => {
    const tree = AclTree.parse('acl:1:/:u@pbs:Audit\nacl:0:/datastore:u@pbs:NoAccess\n');
    expect(privs(tree, 'u@pbs', '/datastore')).toEqual([]);
    expect(privs(tree, 'u@pbs', '/datastore/s1')).toEqual(['Datastore.Audit', 'Sys.Audit']);
  });

  it('a node whose roles do not count for the path does not override', () => {
    // /datastore has only a non-propagating role: below it, / still applies.
    const tree = AclTree.parse(
      'acl:1:/:u@pbs:DatastoreReader\nacl:0:/datastore:u@pbs:DatastoreAudit\n',
    );
    expect(privs(tree, 'u@pbs', '/datastore/s1')).toEqual([
      'Datastore.Audit',
      'Datastore.Read',
      'Datastore.Verify',
    ]);
  });

  it("entries of one auth ID do not affect another, and a token's are its own", () => {
    const tree = AclTree.parse('acl:1:/:u@pbs:Admin\nacl:1:/datastore:u@pbs!t:DatastoreAudit\n');
    expect(privs(tree, 'other@pbs', '/')).toEqual([]);
    expect(privs(tree, 'u@pbs!t', '/datastore/x')).toEqual(['Datastore.Audit']);
    expect(privs(tree, 'u@pbs!t', '/')).toEqual([]);
  });

  it('reports which privileges come from propagating roles', () => {
    const tree = AclTree.parse(
      'acl:1:/datastore/s1:u@pbs:DatastoreBackup\nacl:0:/datastore/s1:u@pbs:DatastoreAudit\n',
    );
    const details = tree.privileges('u@pbs', ['datastore', 's1']);
    expect([...details.privileges].sort()).toEqual(['Datastore.Audit', 'Datastore.Backup']);
    expect([...details.propagated]).toEqual(['Datastore.Backup']);
  });

  it('role table: the documented privilege sets', () => {
    const tree = new AclTree();
    const expected: Partial<Record<RoleName, string[]>> = {
      Audit: ['Datastore.Audit', 'Sys.Audit'],
      DatastoreAdmin: [
        'Datastore.Audit',
        'Datastore.Backup',
        'Datastore.Modify',
        'Datastore.Prune',
        'Datastore.Read',
        'Datastore.Verify',
      ],
      DatastoreReader: ['Datastore.Audit', 'Datastore.Read', 'Datastore.Verify'],
      DatastoreBackup: ['Datastore.Backup'],
      DatastorePowerUser: ['Datastore.Backup', 'Datastore.Prune'],
      DatastoreAudit: ['Datastore.Audit'],
      RemoteAdmin: ['Remote.Audit', 'Remote.Modify', 'Remote.Read'],
      RemoteSyncOperator: ['Remote.Audit', 'Remote.Read'],
      NoAccess: [],
      TapeAdmin: [],
    };
    for (const [role, list] of Object.entries(expected)) {
      tree.insert('/', `${role}@pbs`, role as RoleName, true);
      expect(privs(tree, `${role}@pbs`, '/')).toEqual(list);
    }
  });
});

describe('pathsCoveringSubtree', () => {
  it('finds a privilege granted only deep below', () => {
    const tree = AclTree.parse('acl:0:/datastore/s1/ns1:u@pbs:DatastoreBackup\n');
    const covering = tree.pathsCoveringSubtree(['datastore']);
    const any = covering.some((c) => tree.privileges('u@pbs', c).privileges.size > 0);
    expect(any).toBe(true);
    const none = tree
      .pathsCoveringSubtree(['datastore', 's2'])
      .some((c) => tree.privileges('u@pbs', c).privileges.size > 0);
    expect(none).toBe(false);
  });

  it('property: covers every path of the subtree (brute force over a small universe)', () => {
    const components = ['a', 'b'];
    const universe: string[][] = [[]];
    for (let depth = 0; depth < 3; depth++) {
      for (const path of [...universe]) {
        if (path.length === depth) for (const c of components) universe.push([...path, c]);
      }
    }
    const entry = fc.record({
      path: fc.constantFrom(...universe),
      ugid: fc.constantFrom('u@pbs', 'v@pbs'),
      role: fc.constantFrom<RoleName>('NoAccess', 'DatastoreAudit', 'DatastoreBackup', 'Audit'),
      propagate: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.array(entry, { maxLength: 8 }),
        fc.constantFrom(...universe),
        (entries, base) => {
          const tree = new AclTree();
          for (const e of entries)
            tree.insert(`/${['datastore', ...e.path].join('/')}`, e.ugid, e.role, e.propagate);
          const prefix = ['datastore', ...base];
          const covering = tree.pathsCoveringSubtree(prefix);
          const bound = new Set(
            covering.flatMap((c) => [...tree.privileges('u@pbs', c).privileges]),
          );
          for (const path of universe) {
            if (path.length < base.length || base.some((c, i) => path[i] !== c)) continue;
            for (const p of tree.privileges('u@pbs', ['datastore', ...path, 'x']).privileges) {
              expect(bound.has(p)).toBe(true);
            }
            for (const p of tree.privileges('u@pbs', ['datastore', ...path]).privileges) {
              expect(bound.has(p)).toBe(true);
            }
          }
        },
      ),
    );
  });
});

describe('acl.cfg round trip (property)', () => {
  const pathArb = fc.constantFrom(
    '/',
    '/access',
    '/access/users',
    '/datastore',
    '/datastore/store1',
    '/datastore/store1/ns1/ns2',
    '/datastore/store_2',
    '/remote/r1',
    '/system',
  );
  const ugidArb = fc.constantFrom(
    'alice@pbs',
    'bob@pbs',
    'carol@pam',
    'alice@pbs!tok',
    'root@pam!backup',
    'user.name@pbs',
  );
  const opArb = fc.record({
    path: pathArb,
    ugid: ugidArb,
    role: fc.constantFrom(...ROLE_NAMES),
    propagate: fc.boolean(),
    remove: fc.boolean(),
  });

  it('render → parse gives the same entries, and rendering again the same text', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 30 }), (ops) => {
        const tree = new AclTree();
        for (const op of ops) {
          if (op.remove) tree.remove(op.path, op.ugid, op.role);
          else tree.insert(op.path, op.ugid, op.role, op.propagate);
        }
        const text = tree.render();
        const again = AclTree.parse(text);
        expect(again.list()).toEqual(tree.list());
        expect(again.render()).toBe(text);
        for (const line of text.split('\n').filter((l) => l !== '')) {
          expect(line).toMatch(/^acl:[01]:\/[^:]*:[^:]+:[A-Za-z,]+$/);
        }
      }),
    );
  });

  it('removeUgids drops exactly the selected auth IDs', () => {
    const tree = AclTree.parse(
      'acl:1:/:alice@pbs,bob@pbs:Audit\nacl:1:/datastore:alice@pbs!t:DatastoreBackup\n',
    );
    expect(tree.removeUgids((u) => u === 'alice@pbs' || u.startsWith('alice@pbs!'))).toBe(true);
    expect(tree.render()).toBe('acl:1:/:bob@pbs:Audit\n');
    expect(tree.removeUgids(() => false)).toBe(false);
  });
});
