/**
 * A short mutation-fuzzing run of the decoder and accessor (a few seconds); scripts/fuzz-pxar.ts
 * runs the same cases for longer. Cases are numbered from a fixed base, so a failure names a seed
 * that reproduces it: `npx tsx scripts/fuzz-pxar.ts --case <seed>`.
 */
import { describe, expect, it } from 'vitest';
import { fuzzCorpus, runFuzzCase, type CaseResult } from '../../test/helpers/pxar-fuzz.js';
import { decodeAll, walkAccessor } from '../../test/helpers/pxar-walk.js';
import { bytesRandomAccess } from './random-access.js';

const BUDGET_MS = 3000;
const MAX_CASES = 5000;
const SEED_BASE = 0x5eed0000;

describe('pxar fuzzing', () => {
  it('the unmutated corpus decodes cleanly both ways', async () => {
    for (const sample of fuzzCorpus()) {
      const options =
        sample.payload === undefined ? {} : { payload: bytesRandomAccess(sample.payload) };
      await decodeAll(sample.archive, options);
      await walkAccessor(sample.archive, options);
    }
  });

  it('mutated archives only ever fail with PXAR_* errors, and never hang', async () => {
    const corpus = fuzzCorpus();
    const started = Date.now();
    const outcomes = new Map<string, number>();
    let cases = 0;
    while (cases < MAX_CASES && Date.now() - started < BUDGET_MS) {
      const result: CaseResult = await runFuzzCase(SEED_BASE + cases, corpus, 5000);
      for (const o of [`decoder:${result.decoder}`, `accessor:${result.accessor}`])
        outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
      cases++;
    }
    expect(cases).toBeGreaterThan(100);
    // The mutations must actually reach the checks: several distinct rejections on each side.
    const codes = (side: string): number =>
      [...outcomes.keys()].filter((k) => k.startsWith(`${side}:PXAR_`)).length;
    expect(codes('decoder')).toBeGreaterThanOrEqual(4);
    expect(codes('accessor')).toBeGreaterThanOrEqual(4);
  });
});
