/**
 * Drives test/helpers/lock-holder.ts from a test: a real second Node process that takes and
 * releases locks on command, so the tests see the kernel's per-process lock semantics.
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = fileURLToPath(new URL('./lock-holder.ts', import.meta.url));

export class LockHolder {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #waiting: Array<(line: string) => void> = [];
  readonly #lines: string[] = [];
  #stderr = '';
  readonly exited: Promise<number | null>;

  private constructor(env: Record<string, string | undefined>) {
    this.#child = spawn(process.execPath, ['--import', 'tsx', SCRIPT], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.#child.stderr.on('data', (data: Buffer) => (this.#stderr += data.toString()));
    createInterface({ input: this.#child.stdout }).on('line', (line) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(line);
      else this.#lines.push(line);
    });
    this.exited = new Promise((resolve) => this.#child.on('exit', (code) => resolve(code)));
  }

  /** Starts the helper and waits until it is ready for commands. */
  static async start(env: Record<string, string | undefined> = {}): Promise<LockHolder> {
    const holder = new LockHolder(env);
    const first = await holder.#next();
    if (first !== 'ready') throw new Error(`lock holder did not start: ${first} ${holder.#stderr}`);
    return holder;
  }

  #next(): Promise<string> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`lock holder gave no answer; stderr: ${this.#stderr}`)),
        20_000,
      );
      this.#waiting.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  }

  /** Sends one command and returns the helper's answer line. */
  async send(command: string): Promise<string> {
    this.#child.stdin.write(`${command}\n`);
    return this.#next();
  }

  /** Takes a lock in the child; returns its id, or throws with the child's error code. */
  async take(
    command: 'shared' | 'exclusive' | 'flock-shared' | 'flock-exclusive',
    path: string,
  ): Promise<number> {
    const answer = await this.send(`${command} ${path}`);
    const match = /^ok (\d+)$/.exec(answer);
    if (!match) throw new Error(`child could not take ${command} ${path}: ${answer}`);
    return Number(match[1]);
  }

  async release(id: number): Promise<void> {
    const answer = await this.send(`release ${id}`);
    if (answer !== `released ${id}`) throw new Error(`child release failed: ${answer}`);
  }

  /** Ends stdin; the helper exits and the kernel drops whatever it still holds. */
  async stop(): Promise<void> {
    this.#child.stdin.end();
    await this.exited;
  }

  kill(): void {
    this.#child.kill('SIGKILL');
  }
}
