// The test command of the README (`npm test`): runs vitest and ends with the plain summary line
// "N passed, N failed[, N skipped]" that CI reads. Extra arguments go to vitest.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'burrow-test-'));
const report = join(dir, 'report.json');
const vitest = spawnSync(
  process.execPath,
  [
    'node_modules/vitest/vitest.mjs',
    'run',
    '--reporter=default',
    '--reporter=json',
    `--outputFile.json=${report}`,
    ...process.argv.slice(2),
  ],
  { stdio: 'inherit' },
);
let status = vitest.status ?? 1;
try {
  const result = JSON.parse(readFileSync(report, 'utf8'));
  const skipped = result.numPendingTests + result.numTodoTests;
  // A file that failed to load (syntax error, throwing import) has no failed test but must count.
  const brokenFiles = result.testResults.filter(
    (file) => file.status === 'failed' && !file.assertionResults.some((t) => t.status === 'failed'),
  ).length;
  const failed = result.numFailedTests + brokenFiles;
  console.log(
    `\nTests: ${result.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`,
  );
  if (result.numTotalTests === 0) {
    console.log('no test ran');
    status = 1;
  }
} catch {
  console.log('\nTests: 0 passed, 1 failed (vitest wrote no report)');
  status = status || 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(status);
