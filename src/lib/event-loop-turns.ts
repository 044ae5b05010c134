/**
 * A loop that runs on resolved promises (microtasks) never lets the event loop take messages or
 * I/O completions: a worker thread's reply, and with it the worker's next job, waits until the
 * loop blocks. The archiver's walk and the extractor's loop do that while their data is at hand;
 * they call EventLoopTurns.maybeYield() once per entry and give the event loop a turn every
 * couple of milliseconds.
 */
export class EventLoopTurns {
  #last = 0;

  constructor(readonly intervalMs = 2) {}

  /** Resolves at once, or after one turn of the event loop when `intervalMs` have passed. */
  async maybeYield(): Promise<void> {
    if (performance.now() - this.#last < this.intervalMs) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#last = performance.now();
  }
}
