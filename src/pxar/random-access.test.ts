import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import { PxarAccessor } from './accessor.js';
import { bytesRandomAccess, openFileRandomAccess } from './random-access.js';

const enc = new TextEncoder();
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

describe('bytesRandomAccess', () => {
  const ra = bytesRandomAccess(enc.encode('0123456789'));

  it('reads ranges and is short only at the end', async () => {
    expect(ra.size).toBe(10);
    expect(text(await ra.readAt(2, 3))).toBe('234');
    expect(text(await ra.readAt(8, 5))).toBe('89');
    expect(await ra.readAt(10, 5)).toHaveLength(0);
    expect(await ra.readAt(50, 5)).toHaveLength(0);
    expect(await ra.readAt(3, 0)).toHaveLength(0);
  });

  it('refuses negative or fractional ranges', async () => {
    expect(await rejectionCodeOf(ra.readAt(-1, 2))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(ra.readAt(1.5, 2))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(ra.readAt(1, -2))).toBe('INVALID_ARGUMENT');
  });
});

describe('openFileRandomAccess', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'burrow-ra-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads ranges of a file, short only at its end, and closes', async () => {
    const file = path.join(dir, 'f');
    await writeFile(file, 'abcdefghij');
    const ra = await openFileRandomAccess(file);
    expect(ra.size).toBe(10);
    expect(text(await ra.readAt(0, 4))).toBe('abcd');
    expect(text(await ra.readAt(7, 10))).toBe('hij');
    expect(await ra.readAt(12, 1)).toHaveLength(0);
    expect(await rejectionCodeOf(ra.readAt(-1, 1))).toBe('INVALID_ARGUMENT');
    await ra.close();
    await ra.close();
    expect(await rejectionCodeOf(ra.readAt(0, 1))).toBe('INVALID_ARGUMENT');
  });

  it('reports a missing file as NOT_FOUND and a directory as IO_ERROR on read', async () => {
    expect(await rejectionCodeOf(openFileRandomAccess(path.join(dir, 'missing')))).toBe(
      'NOT_FOUND',
    );
    const opened = await openFileRandomAccess(dir).then(
      async (ra) => {
        const code = await rejectionCodeOf(ra.readAt(0, 1));
        await ra.close();
        return code;
      },
      (error: { code?: string }) => error.code,
    );
    expect(opened).toBe('IO_ERROR');
  });

  it('serves the accessor from a file', async () => {
    // The §6 example's first bytes are enough to see that open() reads through the file.
    const file = path.join(dir, 'tiny.pxar');
    await writeFile(file, Buffer.alloc(10));
    const ra = await openFileRandomAccess(file);
    expect(await rejectionCodeOf(PxarAccessor.open(ra, { name: file }))).toBe('PXAR_TRUNCATED');
    await ra.close();
  });
});
