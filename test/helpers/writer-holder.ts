/**
 * A second process with an open backup writer on a configured datastore, as a running backup of
 * the server would have: it looks the store up by name, creates a snapshot and a `.didx` writer
 * (which holds the chunk store's shared `.lock`), prints `ready` and keeps the writer open until
 * its stdin ends. Then it aborts the writer and exits, so a failed test never leaves it holding
 * the lock.
 *
 *   node --import tsx test/helpers/writer-holder.ts '<json>'
 *     json: { name, dirs: { configDir, runDir, logDir }, snapshot: "<type>/<id>/<time>" }
 *
 * Prints `ready`, or `err <code> <message>` when it could not open the writer.
 */
import { DataStore } from '../../src/datastore/datastore.js';
import type { BurrowDirs } from '../../src/lib/dirs.js';
import { parseAuthid } from '../../src/types/auth.js';
import { parseSnapshotPath } from '../../src/types/backup.js';

interface HolderInput {
  name: string;
  dirs: BurrowDirs;
  snapshot: string;
}

const input = JSON.parse(process.argv[2] ?? '{}') as HolderInput;

try {
  const store = await DataStore.lookup(input.name, { dirs: input.dirs });
  const dir = parseSnapshotPath(input.snapshot);
  const { guard: groupGuard } = await store.createLockedBackupGroup(
    dir.group,
    parseAuthid('root@pam'),
  );
  const { guard } = await store.createLockedBackupDir(dir);
  const writer = await store.createDynamicWriter(dir, 'held.didx');
  process.stdout.write('ready\n');
  process.stdin.resume();
  process.stdin.on('end', () => {
    void (async () => {
      await writer.abort();
      await guard.release();
      await groupGuard.release();
      process.exit(0);
    })();
  });
} catch (error) {
  const code = (error as { code?: unknown }).code;
  process.stdout.write(
    `err ${typeof code === 'string' ? code : 'UNKNOWN'} ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(1);
}
