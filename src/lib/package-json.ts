import { readFileSync } from 'node:fs';

/** The fields of Burrow's package.json that the code reports. */
export interface PackageJson {
  readonly version?: unknown;
  readonly gitHead?: unknown;
}

/**
 * package.json sits two levels up from src/lib/ (tsx), from dist/lib/ (the library) and from
 * dist/cli/ (the bundled CLIs of scripts/bundle-bins.mjs), so one relative path serves all three.
 */
const PACKAGE_JSON = new URL('../../package.json', import.meta.url);

let cached: PackageJson | undefined;

export function readPackageJson(): PackageJson {
  cached ??= JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as PackageJson;
  return cached;
}
