import { mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_ENCODED_CHUNK_SIZE } from '../format/magic.js';
import { isBurrowError } from '../lib/errors.js';
import { readChunkFileSync } from './chunk-file.js';

const dir = mkdtempSync(join(tmpdir(), 'burrow-chunk-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function failure(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (error) {
    if (isBurrowError(error)) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error('no error');
}

describe('readChunkFileSync (a worker reading a chunk file)', () => {
  it('returns the bytes of the file', () => {
    const path = join(dir, '11'.repeat(32));
    writeFileSync(path, Buffer.from('0123456789'));
    expect(Buffer.from(readChunkFileSync(path)).toString()).toBe('0123456789');
  });

  it("reads into the caller's buffer when given one, asking for the file's size", () => {
    const path = join(dir, '55'.repeat(32));
    writeFileSync(path, Buffer.from('abcdef'));
    const scratch = new Uint8Array(16).fill(0x7a);
    const asked: number[] = [];
    const bytes = readChunkFileSync(path, (size) => (asked.push(size), scratch));
    expect(asked).toEqual([6]);
    expect(bytes.buffer).toBe(scratch.buffer);
    expect(bytes.byteOffset).toBe(0);
    expect(Buffer.from(bytes).toString()).toBe('abcdef');
    // Only the file's bytes: what lies beyond in the buffer is not part of the result.
    expect(scratch[6]).toBe(0x7a);
    // The next read reuses the buffer (what the first returned is then overwritten).
    writeFileSync(path, Buffer.from('XY'));
    expect(Buffer.from(readChunkFileSync(path, () => scratch)).toString()).toBe('XY');
    expect(Buffer.from(bytes).toString()).toBe('XYcdef');
  });

  it('refuses what loadChunk refuses, with the same errors', () => {
    const missing = join(dir, '22'.repeat(32));
    expect(failure(() => readChunkFileSync(missing))).toEqual({
      code: 'NOT_FOUND',
      message: `chunk ${'22'.repeat(32)} not found: ${missing}`,
    });
    const link = join(dir, '33'.repeat(32));
    symlinkSync(join(dir, '11'.repeat(32)), link);
    expect(failure(() => readChunkFileSync(link))).toEqual({
      code: 'DATASTORE_INVALID',
      message: `chunk path ${link} is a symbolic link`,
    });
    expect(failure(() => readChunkFileSync(dir)).code).toBe('DATASTORE_INVALID');
    const huge = join(dir, '44'.repeat(32));
    writeFileSync(huge, '');
    truncateSync(huge, MAX_ENCODED_CHUNK_SIZE + 1);
    expect(failure(() => readChunkFileSync(huge)).code).toBe('BLOB_TOO_LARGE');
  });
});
