/**
 * Where Burrow keeps things outside datastores, each overridable so Burrow runs without root and
 * tests stay in temp dirs (docs/design.md "Directories"):
 * - configuration (`datastore.cfg`, later users, ACLs, jobs): BURROW_CONFIG_DIR, default /etc/burrow
 * - runtime state (lock files): BURROW_RUN_DIR, default /run/burrow
 * - logs (task logs and task lists): BURROW_LOG_DIR, default /var/log/burrow
 * A command-line option (--config-dir, --run-dir, --log-dir) overrides the variable.
 */
import { join } from 'node:path';

export interface BurrowDirs {
  configDir: string;
  runDir: string;
  logDir: string;
}

export const DEFAULT_DIRS: Readonly<BurrowDirs> = Object.freeze({
  configDir: '/etc/burrow',
  runDir: '/run/burrow',
  logDir: '/var/log/burrow',
});

export function resolveDirs(
  overrides: Partial<BurrowDirs> = {},
  env: NodeJS.ProcessEnv = process.env,
): BurrowDirs {
  return {
    configDir: overrides.configDir ?? env.BURROW_CONFIG_DIR ?? DEFAULT_DIRS.configDir,
    runDir: overrides.runDir ?? env.BURROW_RUN_DIR ?? DEFAULT_DIRS.runDir,
    logDir: overrides.logDir ?? env.BURROW_LOG_DIR ?? DEFAULT_DIRS.logDir,
  };
}

/** `$RUN_DIR/locks`: group, snapshot and manifest lock files (PBS 4 scheme, pbs-formats §6.7). */
export const locksDir = (dirs: BurrowDirs): string => join(dirs.runDir, 'locks');
/** `$LOG_DIR/tasks`: task logs and the active/archive lists (pbs-formats §11.2). */
export const tasksDir = (dirs: BurrowDirs): string => join(dirs.logDir, 'tasks');
/** `$CONFIG_DIR/datastore.cfg`. */
export const datastoreConfigPath = (dirs: BurrowDirs): string =>
  join(dirs.configDir, 'datastore.cfg');
