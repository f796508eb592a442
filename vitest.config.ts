import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores are shared by the brokers and the tests: two test files at a time at most.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
