/**
 * acl.cfg (PBS's access control list) and the permission walk over it. One line per grant:
 *
 *     acl:<propagate 0|1>:<path>:<auth ids, comma-separated>:<roles, comma-separated>
 *
 * The file is read into a tree of path components; each node maps an auth ID (or `@group`) to
 * its roles there, each with its own propagate flag. Writing is canonical, as PBS writes it:
 * nodes depth first with children sorted; per node first the propagate=0 lines, then the
 * propagate=1 lines; auth IDs that hold exactly the same roles share one line; lists sorted.
 * `root@pam` lines are not written (root has every privilege anyway), as in PBS.
 *
 * Roles for an auth ID on a path (PBS semantics): walk from `/` towards the path. On every node
 * before the last only propagating roles count, on the last node all roles do. A node where
 * the auth ID has roles that count replaces what the walk collected so far (the most specific
 * path wins; roles on one node are unioned). A NoAccess role that counts makes that node's
 * result NoAccess alone, which clears inherited privileges.
 */
import { BurrowError } from '../../lib/errors.js';
import { formatAuthid, parseAuthid } from '../../types/auth.js';
import { MAX_NAMESPACE_DEPTH } from '../../types/backup.js';
import type { Privilege } from '../server-types.js';
import { NO_ACCESS, isRoleName, rolePrivileges, type RoleName } from './roles.js';

/** PBS's ACL path schema: `/` or `/`-separated safe IDs, at most 128 characters. */
const ACL_PATH_RE = /^(?:\/|(?:\/[A-Za-z0-9_][A-Za-z0-9._-]*)+)$/;
export const ACL_PATH_MAX_LENGTH = 128;
const GROUP_RE = /^@[A-Za-z0-9_][A-Za-z0-9._-]*$/;

const SYSTEM_LEAVES = new Set([
  'certificates',
  'disks',
  'log',
  'notifications',
  'status',
  'tasks',
  'time',
]);

/** The components of an ACL path, without checking its shape. */
export function splitAclPath(path: string): string[] {
  return path.split('/').filter((c) => c !== '');
}

export function joinAclPath(components: readonly string[]): string {
  return `/${components.join('/')}`;
}

/** Which ACL paths exist (PBS's check): the object tree of the API, namespaces included. */
function knownShape(c: readonly string[]): boolean {
  const n = c.length;
  if (n === 0) return true;
  const top: string = c[0] ?? '';
  switch (top) {
    case 'access':
      if (n === 1) return true;
      if (c[1] === 'acl' || c[1] === 'users' || c[1] === 'domains') return n === 2;
      return c[1] === 'openid' && n <= 3;
    case 'datastore':
      // /datastore/{store}/{ns component}...
      return n <= 2 + MAX_NAMESPACE_DEPTH;
    case 'remote':
      // /remote/{remote}/{store}/{ns component}...
      return n <= 3 + MAX_NAMESPACE_DEPTH;
    case 'system':
      if (n === 1) return true;
      if (SYSTEM_LEAVES.has(c[1] ?? '')) return n === 2;
      if (c[1] === 'services') return n <= 3;
      if (c[1] === 'network') {
        if (n === 2) return true;
        if (c[2] === 'dns') return n === 3;
        return c[2] === 'interfaces' && n <= 4;
      }
      return false;
    case 'tape':
      if (n === 1) return true;
      return (c[1] === 'device' || c[1] === 'pool' || c[1] === 'job') && n <= 3;
    default:
      return false;
  }
}

/** Check an ACL path as PBS does (syntax and known object paths); returns its components. */
export function checkAclPath(path: string): string[] {
  if (path.length > ACL_PATH_MAX_LENGTH || !ACL_PATH_RE.test(path)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `invalid acl path ${JSON.stringify(path.slice(0, 200))}: expected '/' or '/'-separated safe IDs, at most ${ACL_PATH_MAX_LENGTH} characters`,
      { details: { path } },
    );
  }
  const components = splitAclPath(path);
  if (!knownShape(components)) {
    throw new BurrowError('INVALID_ARGUMENT', `invalid acl path '${path}'.`, {
      details: { path },
    });
  }
  return components;
}

export function checkRoleName(text: string): RoleName {
  if (!isRoleName(text)) {
    throw new BurrowError('INVALID_ARGUMENT', `unknown role '${text.slice(0, 100)}'`, {
      details: { role: text },
    });
  }
  return text;
}

/** An auth ID in canonical text, or `@group`; throws INVALID_AUTHID otherwise. */
export function checkUgid(text: string): string {
  if (text.startsWith('@')) {
    if (!GROUP_RE.test(text)) {
      throw new BurrowError('INVALID_AUTHID', `invalid group name ${JSON.stringify(text)}`, {
        details: { value: text },
      });
    }
    return text;
  }
  return formatAuthid(parseAuthid(text));
}

/** One grant, as GET /access/acl lists it. */
export interface AclListItem {
  path: string;
  ugid: string;
  ugid_type: 'user' | 'group';
  propagate: boolean;
  roleid: RoleName;
}

interface AclNode {
  /** auth ID (or `@group`) → role → propagate. */
  readonly entries: Map<string, Map<RoleName, boolean>>;
  readonly children: Map<string, AclNode>;
}

const newNode = (): AclNode => ({ entries: new Map(), children: new Map() });

const compareBytewise = (a: string, b: string): number =>
  Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

const ROOT_USER = 'root@pam';

/** Privileges with the subset that comes from propagating roles (PBS's "propagate" flag per privilege). */
export interface PrivilegeDetails {
  readonly privileges: ReadonlySet<Privilege>;
  readonly propagated: ReadonlySet<Privilege>;
}

function lineError(line: number, message: string, cause?: unknown): BurrowError {
  const why = cause instanceof Error ? `: ${cause.message}` : '';
  return new BurrowError('INVALID_ARGUMENT', `acl.cfg line ${line}: ${message}${why}`, {
    details: { line },
    ...(cause === undefined ? {} : { cause }),
  });
}

export class AclTree {
  readonly #root: AclNode = newNode();

  /** Parse acl.cfg. Blank lines are skipped; anything else must be a valid `acl:` line. */
  static parse(text: string): AclTree {
    const tree = new AclTree();
    text.split('\n').forEach((raw, index) => {
      const lineNo = index + 1;
      const line = raw.trim();
      if (line === '') return;
      const items = line.split(':');
      if (items.length !== 5) throw lineError(lineNo, 'expected acl:<0|1>:<path>:<ids>:<roles>');
      const [tag, flag, path, ugids, roles] = items as [string, string, string, string, string];
      if (tag !== 'acl') throw lineError(lineNo, "the line does not start with 'acl'");
      if (flag !== '0' && flag !== '1') {
        throw lineError(lineNo, "expected '0' or '1' for the propagate flag");
      }
      let parsedPath: string[];
      let parsedUgids: string[];
      let parsedRoles: RoleName[];
      try {
        parsedPath = checkAclPath(path);
        parsedUgids = ugids.split(',').map((u) => checkUgid(u.trim()));
        parsedRoles = roles.split(',').map((r) => checkRoleName(r.trim()));
      } catch (error) {
        throw lineError(lineNo, 'invalid entry', error);
      }
      for (const ugid of parsedUgids) {
        for (const role of parsedRoles) tree.#insert(parsedPath, ugid, role, flag === '1');
      }
    });
    return tree;
  }

  #node(components: readonly string[], create: boolean): AclNode | undefined {
    let node = this.#root;
    for (const component of components) {
      let child = node.children.get(component);
      if (child === undefined) {
        if (!create) return undefined;
        child = newNode();
        node.children.set(component, child);
      }
      node = child;
    }
    return node;
  }

  #insert(components: readonly string[], ugid: string, role: RoleName, propagate: boolean): void {
    const node = this.#node(components, true) as AclNode;
    let roles = node.entries.get(ugid);
    if (roles === undefined) {
      roles = new Map();
      node.entries.set(ugid, roles);
    }
    // NoAccess and the other roles exclude each other on one node: the newer one wins.
    if (role === NO_ACCESS) roles.clear();
    else roles.delete(NO_ACCESS);
    roles.set(role, propagate);
  }

  /** Grant `role` to `ugid` on `path` (checked), replacing the role's earlier propagate flag. */
  insert(path: string, ugid: string, role: RoleName, propagate: boolean): void {
    this.#insert(checkAclPath(path), checkUgid(ugid), role, propagate);
  }

  /** Take `role` away from `ugid` on `path`; nothing happens when it was not granted. */
  remove(path: string, ugid: string, role: RoleName): void {
    const node = this.#node(splitAclPath(path), false);
    const roles = node?.entries.get(ugid);
    if (node === undefined || roles === undefined) return;
    roles.delete(role);
    if (roles.size === 0) node.entries.delete(ugid);
  }

  /** Remove every grant of the auth IDs `matches` selects (a deleted user and its tokens). */
  removeUgids(matches: (ugid: string) => boolean): boolean {
    let changed = false;
    const visit = (node: AclNode): void => {
      for (const ugid of [...node.entries.keys()]) {
        if (matches(ugid)) {
          node.entries.delete(ugid);
          changed = true;
        }
      }
      for (const child of node.children.values()) visit(child);
    };
    visit(this.#root);
    return changed;
  }

  /** Every grant, in file order (paths depth first, then auth ID, then role). */
  list(): AclListItem[] {
    const out: AclListItem[] = [];
    const visit = (node: AclNode, components: string[]): void => {
      const path = joinAclPath(components);
      for (const ugid of [...node.entries.keys()].sort(compareBytewise)) {
        const roles = node.entries.get(ugid) as Map<RoleName, boolean>;
        for (const role of [...roles.keys()].sort(compareBytewise)) {
          out.push({
            path,
            ugid,
            ugid_type: ugid.startsWith('@') ? 'group' : 'user',
            propagate: roles.get(role) as boolean,
            roleid: role,
          });
        }
      }
      for (const name of [...node.children.keys()].sort(compareBytewise)) {
        visit(node.children.get(name) as AclNode, [...components, name]);
      }
    };
    visit(this.#root, []);
    return out;
  }

  /** The canonical file text (see the module comment). */
  render(): string {
    let out = '';
    const visit = (node: AclNode, components: string[]): void => {
      const path = joinAclPath(components);
      for (const propagate of [false, true]) {
        // role → the auth IDs holding it with this flag
        const holders = new Map<RoleName, string[]>();
        for (const [ugid, roles] of node.entries) {
          if (ugid === ROOT_USER) continue;
          for (const [role, flag] of roles) {
            if (flag !== propagate) continue;
            const list = holders.get(role) ?? [];
            list.push(ugid);
            holders.set(role, list);
          }
        }
        // joined auth ID list → the roles held by exactly that list
        const lines = new Map<string, RoleName[]>();
        for (const [role, ugids] of holders) {
          const key = ugids.sort(compareBytewise).join(',');
          const roles = lines.get(key) ?? [];
          roles.push(role);
          lines.set(key, roles);
        }
        for (const key of [...lines.keys()].sort(compareBytewise)) {
          const roles = (lines.get(key) as RoleName[]).sort(compareBytewise);
          const roleText = roles.includes(NO_ACCESS) ? NO_ACCESS : roles.join(',');
          out += `acl:${propagate ? 1 : 0}:${path}:${key}:${roleText}\n`;
        }
      }
      for (const name of [...node.children.keys()].sort(compareBytewise)) {
        visit(node.children.get(name) as AclNode, [...components, name]);
      }
    };
    visit(this.#root, []);
    return out;
  }

  /** The roles that count for `ugid` on one node: all on the target node, propagating ones above it. */
  static #counting(node: AclNode, ugid: string, leaf: boolean): Map<RoleName, boolean> {
    const out = new Map<RoleName, boolean>();
    const roles = node.entries.get(ugid);
    if (roles === undefined) return out;
    for (const [role, propagate] of roles) {
      if (!propagate && !leaf) continue;
      if (role === NO_ACCESS) return new Map([[NO_ACCESS, false]]);
      out.set(role, propagate);
    }
    return out;
  }

  /**
   * The roles of `ugid` on the path given by `components` (see the module comment), each with
   * its propagate flag. A component that is not in the tree ends the walk.
   */
  roles(ugid: string, components: readonly string[]): Map<RoleName, boolean> {
    let node = this.#root;
    let result = AclTree.#counting(node, ugid, components.length === 0);
    for (let i = 0; i < components.length; i++) {
      const child = node.children.get(components[i] as string);
      if (child === undefined) return result;
      node = child;
      const here = AclTree.#counting(node, ugid, i === components.length - 1);
      if (here.size > 0) result = here;
    }
    return result;
  }

  /** Privileges of `ugid` on a path, from its roles there (no user/token rules: see ServerAccess). */
  privileges(ugid: string, components: readonly string[]): PrivilegeDetails {
    const privileges = new Set<Privilege>();
    const propagated = new Set<Privilege>();
    for (const [role, propagate] of this.roles(ugid, components)) {
      for (const privilege of rolePrivileges(role)) {
        privileges.add(privilege);
        if (propagate) propagated.add(privilege);
      }
    }
    return { privileges, propagated };
  }

  /**
   * Paths whose privileges, together, bound those of every path at or below `components`:
   * the path itself, each tree node below it, and for each of those nodes a path just below it
   * that is not in the tree (there only the node's propagating roles count). The walk gives
   * any other path below the same result as one of these.
   */
  pathsCoveringSubtree(components: readonly string[]): string[][] {
    const out: string[][] = [[...components]];
    const start = this.#node(components, false);
    if (start === undefined) return out;
    // '' is never a component of a real path, so it stands for "a child not in the tree".
    const visit = (node: AclNode, path: string[]): void => {
      out.push([...path, '']);
      for (const [name, child] of node.children) {
        out.push([...path, name]);
        visit(child, [...path, name]);
      }
    };
    visit(start, [...components]);
    return out;
  }

  /** Every auth ID or group that has at least one grant. */
  ugids(): Set<string> {
    const out = new Set<string>();
    const visit = (node: AclNode): void => {
      for (const ugid of node.entries.keys()) out.add(ugid);
      for (const child of node.children.values()) visit(child);
    };
    visit(this.#root);
    return out;
  }

  /** The paths where `ugid` has a grant. */
  pathsOf(ugid: string): string[] {
    return [
      ...new Set(
        this.list()
          .filter((e) => e.ugid === ugid)
          .map((e) => e.path),
      ),
    ];
  }
}
