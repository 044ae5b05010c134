/**
 * Injectable time (ARCHITECTURE.md principle 5): GC cutoffs, lock ages, prune periods and task
 * times read a Clock, so tests move a fake clock instead of sleeping.
 */
export interface Clock {
  /** Epoch seconds (whole). */
  nowSeconds(): number;
  /** Epoch milliseconds. */
  nowMs(): number;
}

export const systemClock: Clock = {
  nowSeconds: () => Math.floor(Date.now() / 1000),
  nowMs: () => Date.now(),
};

/** A clock that stands still until moved; for tests. */
export class FakeClock implements Clock {
  #ms: number;
  constructor(startSeconds: number) {
    this.#ms = startSeconds * 1000;
  }
  nowSeconds(): number {
    return Math.floor(this.#ms / 1000);
  }
  nowMs(): number {
    return this.#ms;
  }
  advance(seconds: number): void {
    this.#ms += seconds * 1000;
  }
  set(seconds: number): void {
    this.#ms = seconds * 1000;
  }
}
