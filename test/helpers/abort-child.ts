/**
 * Runs one task that waits to be aborted, in a separate process with an abort listener, for the
 * cross-process abort test (src/tasks/task-abort.test.ts).
 *
 *   node --import tsx test/helpers/abort-child.ts '<json>'
 *     json: { dirs: { configDir, runDir, logDir } }
 *
 * Prints {"upid": ...} once the task runs, then {"ended": <error message>} when it was aborted.
 * Exits 2 if nothing aborts it within 20 s.
 */
import type { BurrowDirs } from '../../src/lib/dirs.js';
import { TaskManager } from '../../src/tasks/index.js';
import { startAbortListener } from '../../src/tasks/task-abort.js';

const { dirs } = JSON.parse(process.argv[2] ?? '{}') as { dirs: BurrowDirs };
const tasks = new TaskManager({ dirs, node: 'childnode' });
const listener = await startAbortListener(dirs, tasks, { pollMs: 50 });
const guard = setTimeout(() => process.exit(2), 20_000);
try {
  await tasks.run(
    'abort-test',
    undefined,
    'root@pam',
    (task) =>
      new Promise((_, reject) => {
        task.signal.addEventListener('abort', () => reject(task.signal.reason as Error));
      }),
    { onStart: (upid) => console.log(JSON.stringify({ upid })) },
  );
  console.log(JSON.stringify({ ended: null }));
} catch (error) {
  console.log(JSON.stringify({ ended: (error as Error).message }));
} finally {
  clearTimeout(guard);
  listener.close();
}
