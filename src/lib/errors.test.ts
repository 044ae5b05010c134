import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BurrowError, ERROR_CODES, EXIT, isBurrowError, withFile } from './errors.js';

describe('error registry', () => {
  it('docs/errors.md lists exactly the codes of ERROR_CODES with their statuses', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const documented = new Map<string, [number, number]>();
    for (const match of doc.matchAll(/^\| `([A-Z0-9_]+)` \| (\d+) \| (\d+) \|/gm)) {
      documented.set(match[1]!, [Number(match[2]), Number(match[3])]);
    }
    const inCode = new Map(
      Object.entries(ERROR_CODES).map(([c, i]) => [c, [i.exit, i.http] as [number, number]]),
    );
    expect(documented).toEqual(inCode);
  });

  it('uses only the documented exit statuses', () => {
    const statuses = new Set<number>(Object.values(EXIT));
    for (const [code, info] of Object.entries(ERROR_CODES)) {
      expect(statuses.has(info.exit), code).toBe(true);
      expect(info.http >= 400 && info.http < 600, code).toBe(true);
    }
  });

  it('carries code, details and cause, and maps to statuses', () => {
    const cause = new Error('low level');
    const err = new BurrowError('BLOB_CRC_MISMATCH', 'bad crc', { details: { offset: 8 }, cause });
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('BLOB_CRC_MISMATCH');
    expect(err.details).toEqual({ offset: 8 });
    expect(err.cause).toBe(cause);
    expect(err.exitCode).toBe(EXIT.corrupt);
    expect(err.httpStatus).toBe(400);
    expect(isBurrowError(err, 'BLOB_CRC_MISMATCH')).toBe(true);
    expect(isBurrowError(err, 'NOT_FOUND')).toBe(false);
    expect(isBurrowError(new Error('x'))).toBe(false);
    expect(JSON.parse(JSON.stringify(err))).toEqual({
      code: 'BLOB_CRC_MISMATCH',
      message: 'bad crc',
      details: { offset: 8 },
    });
  });

  it('withFile names the file in message and details and keeps the code', () => {
    const err = withFile(
      new BurrowError('INDEX_BAD_MAGIC', 'wrong magic', { details: { offset: 0 } }),
      '/x/a.fidx',
    );
    expect(isBurrowError(err, 'INDEX_BAD_MAGIC')).toBe(true);
    expect((err as BurrowError).message).toBe('/x/a.fidx: wrong magic');
    expect((err as BurrowError).details).toEqual({ offset: 0, file: '/x/a.fidx' });
    const plain = new Error('other');
    expect(withFile(plain, 'f')).toBe(plain);
  });
});
