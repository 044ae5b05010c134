/**
 * GET /version and GET /ping (pbs-protocol §8). PBS reports its package version split as
 * `version` = major.minor and `release` = the patch level, plus the git commit it was built from
 * (`repoid`), all from package.json (src/lib/package-json.ts), as the CLI's version is.
 */
import { readPackageJson } from '../../../lib/package-json.js';
import type { Route } from '../route.js';

export interface VersionInfo {
  readonly version: string;
  readonly release: string;
  readonly repoid: string;
}

/**
 * `1.2.3-beta.1` → version `1.2`, release `3` (Cargo's major.minor and patch, as PBS reports them). The repoid is npm's `gitHead` when the
 * package has one, else `unknown` (PBS writes its build's commit there).
 */
export function versionInfoOf(pkg: { version?: unknown; gitHead?: unknown }): VersionInfo {
  const text = typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  const match = /^(\d+)\.(\d+)\.(\d+)/.exec(text);
  return {
    version: match === null ? text : `${match[1]}.${match[2]}`,
    release: match === null ? '' : (match[3] as string),
    repoid: typeof pkg.gitHead === 'string' && pkg.gitHead !== '' ? pkg.gitHead : 'unknown',
  };
}

let cached: VersionInfo | undefined;

export function serverVersion(): VersionInfo {
  cached ??= versionInfoOf(readPackageJson());
  return cached;
}

export function versionRoutes(): Route[] {
  return [
    {
      method: 'GET',
      path: '/version',
      description: 'API version details.',
      parameters: {},
      permission: { kind: 'anybody' },
      handler: () => Promise.resolve({ ...serverVersion() }),
    },
    {
      method: 'GET',
      path: '/ping',
      description: 'Dummy method which replies with `{ "pong": true }`.',
      parameters: {},
      permission: { kind: 'world' },
      handler: () => Promise.resolve({ pong: true }),
    },
  ];
}
