/** The markdown table of error codes in docs/errors.md, rendered from ERROR_CODES. */
import { ERROR_CODES } from './errors.js';

export function renderErrorTable(): string {
  const rows = Object.entries(ERROR_CODES).map(
    ([code, info]) => `| \`${code}\` | ${info.exit} | ${info.http} | ${info.summary} |`,
  );
  return ['| code | exit status | HTTP status | meaning |', '|---|---|---|---|', ...rows].join(
    '\n',
  );
}
