// Regenerates the code table of docs/errors.md from src/lib/errors.ts (`npm run docs:errors`).
// src/lib/errors.test.ts fails when the two drift apart.
import { readFileSync, writeFileSync } from 'node:fs';
import { renderErrorTable } from '../src/lib/errors-doc.js';

const path = new URL('../docs/errors.md', import.meta.url);
const doc = readFileSync(path, 'utf8');
const begin = '<!-- error-table:begin -->';
const end = '<!-- error-table:end -->';
const start = doc.indexOf(begin);
const stop = doc.indexOf(end);
if (start < 0 || stop < start) throw new Error('docs/errors.md lacks the error-table markers');
writeFileSync(
  path,
  `${doc.slice(0, start + begin.length)}\n${renderErrorTable()}\n${doc.slice(stop)}`,
);
