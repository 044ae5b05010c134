// tsc does not keep the executable bit; the bins in package.json must be runnable
// directly (npx burrow, ./node_modules/.bin/burrow) after `npm ci` builds them.
import { chmodSync, readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
for (const bin of Object.values(pkg.bin)) {
  chmodSync(new URL(`../${bin}`, import.meta.url), 0o755);
}
