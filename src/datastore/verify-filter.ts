/**
 * Whether a verify job looks at a snapshot again (pbs-formats §8.3). Pure: the caller reads
 * `unprotected.verify_state` from the manifest and the clock, this module decides.
 *
 * As in PBS, the outcome of the earlier verify does not matter: a snapshot that failed recently
 * is skipped just like one that passed, since only the age of that verify is looked at.
 */
import { BurrowError } from '../lib/errors.js';
import { parseUpid, type Upid } from '../format/upid.js';

const SECONDS_PER_DAY = 86_400;

export type VerifyStateValue = 'ok' | 'failed';

/** `unprotected.verify_state` of a manifest, parsed. */
export interface SnapshotVerifyState {
  state: VerifyStateValue;
  upid: Upid;
}

/**
 * Parse a `verify_state` value: `undefined` when there is none (absent or JSON null, which
 * is how PBS sees "never verified"), the parsed state otherwise. A value of another shape
 * throws MANIFEST_INVALID; PBS treats that as an error reading the manifest.
 * Keys beyond `state` and `upid` are allowed, as serde allows them.
 */
export function parseVerifyState(value: unknown): SnapshotVerifyState | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new BurrowError('MANIFEST_INVALID', 'verify_state is not an object');
  }
  const { state, upid } = value as { state?: unknown; upid?: unknown };
  if (state !== 'ok' && state !== 'failed') {
    throw new BurrowError(
      'MANIFEST_INVALID',
      `verify_state.state must be "ok" or "failed", got ${showValue(state)}`,
    );
  }
  if (typeof upid !== 'string') {
    throw new BurrowError(
      'MANIFEST_INVALID',
      `verify_state.upid must be a UPID string, got ${showValue(upid)}`,
    );
  }
  let parsed: Upid;
  try {
    parsed = parseUpid(upid);
  } catch (error) {
    throw new BurrowError(
      'MANIFEST_INVALID',
      `verify_state.upid: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  return { state, upid: parsed };
}

function showValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value.slice(0, 100));
  if (value === null) return 'null';
  if (typeof value === 'object') return Array.isArray(value) ? 'an array' : 'an object';
  return typeof value === 'number' || typeof value === 'boolean' ? String(value) : typeof value;
}

export interface VerifyFilterInput {
  /** The manifest's `unprotected.verify_state`, as read from JSON (any shape). */
  verifyState: unknown;
  /** Skip snapshots that were verified before (default true). */
  ignoreVerified?: boolean;
  /** Re-verify a verified snapshot once its last verify is more than this many days old. */
  outdatedAfterDays?: number;
  /** The current time, epoch seconds. */
  nowSeconds: number;
}

export type VerifyReason =
  /** ignore-verified is off: everything is verified. */
  | 'not-ignoring-verified'
  /** No verify_state: never verified. */
  | 'never-verified'
  /** verify_state is there but unreadable: verify (and the caller may warn). */
  | 'unreadable-state'
  /** Verified before and no outdated-after: never again. */
  | 'verified'
  /** Verified before, but more than outdated-after days ago. */
  | 'outdated'
  /** Verified within the last outdated-after days. */
  | 'recently-verified';

export interface VerifyDecision {
  verify: boolean;
  reason: VerifyReason;
  /** For 'unreadable-state': what was wrong, for a task log warning. */
  error?: BurrowError;
  /** Whole days since the last verify started, when that was looked at. */
  days?: number;
  /** The last verify, when it could be read. */
  last?: SnapshotVerifyState;
}

function checkInput(input: VerifyFilterInput): void {
  const { outdatedAfterDays, nowSeconds } = input;
  if (!Number.isSafeInteger(nowSeconds)) {
    throw new BurrowError('INVALID_ARGUMENT', `now must be whole epoch seconds, got ${nowSeconds}`);
  }
  if (
    outdatedAfterDays !== undefined &&
    (!Number.isSafeInteger(outdatedAfterDays) || outdatedAfterDays < 0)
  ) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `outdated-after: expected an integer ≥ 0 (days), got ${outdatedAfterDays}`,
      { details: { option: 'outdated-after', value: outdatedAfterDays } },
    );
  }
}

/** The decision with its reason, for logging. */
export function verifyDecision(input: VerifyFilterInput): VerifyDecision {
  checkInput(input);
  if (!(input.ignoreVerified ?? true)) return { verify: true, reason: 'not-ignoring-verified' };
  let last: SnapshotVerifyState | undefined;
  try {
    last = parseVerifyState(input.verifyState);
  } catch (error) {
    const burrowError =
      error instanceof BurrowError
        ? error
        : new BurrowError('MANIFEST_INVALID', 'verify_state cannot be read', { cause: error });
    return { verify: true, reason: 'unreadable-state', error: burrowError };
  }
  if (last === undefined) return { verify: true, reason: 'never-verified' };
  if (input.outdatedAfterDays === undefined) return { verify: false, reason: 'verified', last };
  // A start time in the future (clock stepped back) gives negative days: not outdated.
  const days = Math.floor((input.nowSeconds - last.upid.startTime) / SECONDS_PER_DAY);
  return days > input.outdatedAfterDays
    ? { verify: true, reason: 'outdated', days, last }
    : { verify: false, reason: 'recently-verified', days, last };
}

/** Whether the snapshot with this verify state should be verified now. */
export function shouldVerify(input: VerifyFilterInput): boolean {
  return verifyDecision(input).verify;
}
