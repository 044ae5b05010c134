/**
 * A second process for the cross-process lock tests. It reads commands from stdin, one per line,
 * and answers each on stdout with one line:
 *   shared <path> | exclusive <path>          ProcessLocker guard on <path>  -> "ok <id>" | "err <code>"
 *   flock-shared <path> | flock-exclusive <path>  lockFile(timeoutMs 0)      -> "ok <id>" | "err <code>"
 *   release <id>                                                         -> "released <id>"
 * It exits when stdin ends (a killed parent or `child.stdin.end()`), so a failed test never
 * leaves it holding locks.
 */
import { createInterface } from 'node:readline';
import { lockFile } from '../../src/datastore/lock-file.js';
import { ProcessLocker } from '../../src/datastore/process-locker.js';

const releases = new Map<number, () => Promise<void> | void>();
let nextId = 1;

async function handle(line: string): Promise<string> {
  const space = line.indexOf(' ');
  const command = space < 0 ? line : line.slice(0, space);
  const arg = space < 0 ? '' : line.slice(space + 1);
  try {
    switch (command) {
      case 'shared':
      case 'exclusive': {
        const locker = await ProcessLocker.open(arg);
        const guard = command === 'shared' ? locker.tryShared() : locker.tryExclusive();
        const id = nextId++;
        releases.set(id, () => guard.release());
        return `ok ${id}`;
      }
      case 'flock-shared':
      case 'flock-exclusive': {
        const guard = await lockFile(arg, {
          exclusive: command === 'flock-exclusive',
          timeoutMs: 0,
          what: 'helper',
        });
        const id = nextId++;
        releases.set(id, () => guard.release());
        return `ok ${id}`;
      }
      case 'release': {
        const id = Number(arg);
        await releases.get(id)?.();
        releases.delete(id);
        return `released ${id}`;
      }
      default:
        return `err BAD_COMMAND`;
    }
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    return `err ${typeof code === 'string' ? code : 'UNKNOWN'}`;
  }
}

const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue.then(async () => {
    process.stdout.write(`${await handle(line.trim())}\n`);
  });
});
lines.on('close', () => {
  void queue.then(() => process.exit(0));
});
process.stdout.write('ready\n');
