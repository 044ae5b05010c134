/**
 * The error code a call fails with, for tests: undefined when it does not fail, and
 * 'NOT_A_BURROW_ERROR' when it fails with anything but a BurrowError (which is itself a defect).
 */
import { isBurrowError } from '../../src/lib/errors.js';

export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return isBurrowError(error) ? error.code : 'NOT_A_BURROW_ERROR';
  }
  return undefined;
}

export async function rejectionCodeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return isBurrowError(error) ? error.code : 'NOT_A_BURROW_ERROR';
  }
  return undefined;
}
