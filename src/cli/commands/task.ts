/** `burrow-manager task list|log|status`: the task lists and logs under $BURROW_LOG_DIR/tasks. */
import type { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TaskListEntry } from '../../tasks/index.js';
import { integerOption, managerContext } from '../manager-context.js';
import { formatEpoch, renderKeyValues, renderTable } from '../output.js';
import { outputFormatOption } from '../run.js';

/** A task in the shape of PBS's task API (`/nodes/<node>/tasks`), so scripts can share parsers. */
export interface TaskItem {
  upid: string;
  node: string;
  pid: number;
  pstart: number;
  starttime: number;
  worker_type: string;
  worker_id?: string;
  user: string;
  endtime?: number;
  status?: string;
}

export function taskItem(entry: TaskListEntry): TaskItem {
  return {
    upid: entry.upid,
    node: entry.node,
    pid: entry.pid,
    pstart: entry.pstart,
    starttime: entry.startTime,
    worker_type: entry.workerType,
    ...(entry.workerId === undefined ? {} : { worker_id: entry.workerId }),
    user: entry.authId,
    ...(entry.endtime === undefined ? {} : { endtime: entry.endtime }),
    ...(entry.status === undefined ? {} : { status: entry.status }),
  };
}

function renderTaskList(items: readonly TaskItem[]): string {
  return renderTable(
    [
      { header: 'starttime', value: (t: TaskItem) => formatEpoch(t.starttime) },
      { header: 'endtime', value: (t) => (t.endtime === undefined ? '' : formatEpoch(t.endtime)) },
      { header: 'status', value: (t) => t.status ?? 'running' },
      { header: 'upid', value: (t) => t.upid },
    ],
    items,
  );
}

/** PBS's task status reply: running or stopped, with the exit status once stopped. */
export interface TaskStatusItem extends TaskItem {
  state: 'running' | 'stopped';
  exitstatus?: string;
}

function statusItem(entry: TaskListEntry): TaskStatusItem {
  const item = taskItem(entry);
  return entry.state === 'running'
    ? { ...item, state: 'running' }
    : { ...item, state: 'stopped', exitstatus: entry.status ?? 'unknown' };
}

interface ListOptions {
  outputFormat: string;
  limit: number;
  running?: boolean;
  all?: boolean;
}

interface LogOptions {
  outputFormat: string;
  follow: boolean;
}

/** How often `task log` looks for new lines of a task that runs in another process. */
const FOLLOW_POLL_MS = 500;

export function registerTaskCommands(program: Command): void {
  const task = program.command('task').description('list tasks and show their logs');

  task
    .command('list')
    .description('list tasks, running ones first, then ended ones, newest first')
    .option('--limit <n>', 'show at most <n> tasks (0: all)', integerOption('--limit'), 50)
    .option('--running', 'only tasks that are still running')
    .option(
      '--all',
      'running and ended tasks (the default; for proxmox-backup-manager compatibility)',
    )
    .addOption(outputFormatOption())
    .action(async (options: ListOptions, command: Command) => {
      const { tasks, printer } = managerContext(command, options);
      const entries = await tasks.list({ running: options.running === true, limit: options.limit });
      printer.result(entries.map(taskItem), renderTaskList);
    });

  task
    .command('status')
    .description('show whether a task runs, and how it ended')
    .argument('<upid>', 'the task ID')
    .addOption(outputFormatOption())
    .action(async (upid: string, options: { outputFormat: string }, command: Command) => {
      const { tasks, printer } = managerContext(command, options);
      printer.result(statusItem(await tasks.status(upid)), (s) =>
        renderKeyValues([
          ['upid', s.upid],
          ['type', s.worker_type],
          ['id', s.worker_id ?? ''],
          ['user', s.user],
          ['starttime', formatEpoch(s.starttime)],
          ['state', s.state],
          ...(s.endtime === undefined ? [] : [['endtime', formatEpoch(s.endtime)] as const]),
          ...(s.exitstatus === undefined ? [] : [['exitstatus', s.exitstatus] as const]),
        ]),
      );
    });

  task
    .command('log')
    .description("print a task's log; follows a task that is still running")
    .argument('<upid>', 'the task ID')
    .option('--no-follow', 'print what is there and stop, even if the task still runs')
    .addOption(outputFormatOption())
    .action(async (upid: string, options: LogOptions, command: Command) => {
      const { tasks, printer } = managerContext(command, options);
      let lines = await tasks.readLog(upid);
      if (printer.format === 'text') {
        let shown = 0;
        for (;;) {
          for (; shown < lines.length; shown++) process.stdout.write(`${lines[shown]}\n`);
          if (!options.follow || (await tasks.status(upid)).state !== 'running') break;
          await sleep(FOLLOW_POLL_MS);
          lines = await tasks.readLog(upid);
        }
        // Lines written between the last read and the end of the task.
        lines = await tasks.readLog(upid);
        for (; shown < lines.length; shown++) process.stdout.write(`${lines[shown]}\n`);
        return;
      }
      if (options.follow) {
        while ((await tasks.status(upid)).state === 'running') await sleep(FOLLOW_POLL_MS);
        lines = await tasks.readLog(upid);
      }
      // PBS's read_task_log shape: line number and text.
      printer.result(
        lines.map((t, i) => ({ n: i + 1, t })),
        () => '',
      );
    });
}
