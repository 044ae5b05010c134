/**
 * The task layer: worker tasks with PBS's UPIDs, task log files under `$LOG_DIR/tasks/<HH>/`,
 * the `active`/`archive` lists guarded by `.active.lock`, warning counts, abort and the final
 * state line (pbs-formats §11.1, §11.2). Operations receive a TaskContext; the CLI and the
 * server read tasks back through TaskManager.list/status/readLog.
 */
export {
  TaskManager,
  type TaskContext,
  type TaskListEntry,
  type TaskManagerOptions,
  type TaskRunOptions,
  type TaskRunState,
} from './task-manager.js';
export {
  flockLocker,
  TASK_LIST_LOCK_TIMEOUT_MS,
  type TaskListLock,
  type TaskListLocker,
} from './task-list-lock.js';
export { statusText, type TaskState } from './task-state.js';
export { formatLocalRfc3339, parseRfc3339 } from './time.js';
