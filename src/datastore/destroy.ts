/**
 * Deleting a datastore's data (`burrow-manager datastore remove --destroy-data`, `DELETE
 * /config/datastore/{name}?destroy-data=1`), after its configuration entry is gone.
 */
import { readdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskContext } from '../tasks/index.js';
import { ChunkStore } from './chunk-store.js';

/** What a datastore directory holds that is Burrow's (and PBS's) to delete. Nothing else is touched. */
const DATASTORE_ENTRIES = ['.chunks', 'vm', 'ct', 'host', 'ns', '.gc-status', '.lock'] as const;

/**
 * Refuses (before anything changes) a directory that is not a datastore or that another process
 * is writing to or collecting garbage in: the caller runs it before removing the configuration,
 * so a refusal leaves everything as it was.
 */
export async function checkDestroyable(base: string): Promise<void> {
  const chunkStore = await ChunkStore.open(base);
  chunkStore.tryExclusive().release();
}

/**
 * Delete the datastore's own entries and then its directory, if that is empty. Anything else in
 * the directory (a user's file, `lost+found`) stays and is reported, so a wrong path cannot
 * cost more than the datastore itself.
 */
export async function destroyDatastoreData(base: string, task: TaskContext): Promise<void> {
  // Only a directory with the datastore layout is destroyed, and only when no other process has
  // a writer or GC on it.
  const chunkStore = await ChunkStore.open(base);
  const guard = chunkStore.tryExclusive();
  try {
    for (const entry of DATASTORE_ENTRIES) {
      if (entry === '.lock') continue;
      task.checkAbort();
      task.log(`removing ${join(base, entry)}`);
      await rm(join(base, entry), { recursive: true, force: true });
    }
  } finally {
    guard.release();
  }
  await rm(join(base, '.lock'), { force: true });
  const left = await readdir(base);
  if (left.length === 0) {
    await rmdir(base);
    task.log(`removed datastore directory ${base}`);
  } else {
    task.warn(
      `kept ${base}: it holds entries that are not the datastore's: ${left.sort().join(', ')}`,
    );
  }
}
