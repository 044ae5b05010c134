import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // scrypt with n=65536 and the end-to-end CLI tests take a few seconds each on 2 cores.
    testTimeout: 60_000,
    // Teardown removes datastores (65,536 chunk directories each). On a journal-less ext4 soon
    // after many removals that took 7 s for one store, and creating one 26 s (docs/design.md,
    // "The benchmark removed files between timed steps"); vitest's default of 10 s is too short.
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
