import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // scrypt with n=65536 and the end-to-end CLI tests take a few seconds each on 2 cores.
    testTimeout: 60_000,
    pool: 'forks',
  },
});
