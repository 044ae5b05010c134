import { readPackageJson } from '../lib/package-json.js';

/** The package version, from package.json. */
export const BURROW_VERSION: string = String(readPackageJson().version);
