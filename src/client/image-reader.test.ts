import { execFileSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { openSync, closeSync, readdirSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { codeOf, rejectionCodeOf } from '../../test/helpers/error-code.js';
import { BurrowError } from '../lib/errors.js';
import {
  blockDeviceSize,
  forceNativeFallback,
  nativeAvailable,
  seekData,
  seekHole,
} from '../lib/native-fs.js';
import type { ImageFile } from './image-reader.js';
import { openImage, readImageChunks } from './image-reader.js';

const KiB = 1024;
const CHUNK = 64 * KiB;
const isRoot = process.getuid?.() === 0;

let tmp: string | undefined;
afterEach(async () => {
  forceNativeFallback(false);
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  tmp = undefined;
});

function pseudoRandom(size: number, seed: number): Uint8Array {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]));
}

/** 1 MiB with data at [100 KiB, 150 KiB) and [600 KiB, 601 KiB), holes elsewhere. */
async function sparseFile(): Promise<string> {
  tmp = await mkdtemp(join(tmpdir(), 'burrow-img-'));
  const path = join(tmp, 'sparse.raw');
  await writeFile(path, '');
  await truncate(path, 1024 * KiB);
  const fh = await open(path, 'r+');
  try {
    await fh.write(pseudoRandom(50 * KiB, 1), 0, 50 * KiB, 100 * KiB);
    await fh.write(pseudoRandom(KiB, 2), 0, KiB, 600 * KiB);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  return path;
}

async function readAll(
  image: ImageFile,
  sparse = true,
): Promise<{ chunks: Uint8Array[]; bytesRead: number }> {
  const chunks: Uint8Array[] = [];
  let bytesRead = -1;
  for await (const chunk of readImageChunks(image, {
    chunkSize: CHUNK,
    sparse,
    onProgress: (p) => (bytesRead = p.bytesRead),
  }))
    chunks.push(chunk.slice());
  return { chunks, bytesRead };
}

describe('readImageChunks', () => {
  it('yields the image in fixed chunks and reads only the data regions of a sparse file', async () => {
    const path = await sparseFile();
    const expected = await readFile(path);
    const image = await openImage(path);
    try {
      expect(image).toMatchObject({ kind: 'file', size: 1024 * KiB });
      const { chunks, bytesRead } = await readAll(image);
      expect(chunks.map((c) => c.byteLength)).toEqual(Array(16).fill(CHUNK));
      expect(Buffer.compare(Buffer.concat(chunks), expected)).toBe(0);
      if (nativeAvailable()) {
        // The file system reports data at block granularity around the 51 KiB written.
        expect(bytesRead).toBeGreaterThanOrEqual(51 * KiB);
        expect(bytesRead).toBeLessThan(128 * KiB);
      } else {
        expect(bytesRead).toBe(1024 * KiB);
      }
      const dense = await readAll(image, false);
      expect(dense.bytesRead).toBe(1024 * KiB);
      expect(Buffer.compare(Buffer.concat(dense.chunks), expected)).toBe(0);
    } finally {
      await image.close();
    }
  });

  it('gives holes as views of shared zeros that do not own their buffer', async () => {
    const path = await sparseFile();
    const image = await openImage(path);
    try {
      const seen: Uint8Array[] = [];
      for await (const chunk of readImageChunks(image, { chunkSize: CHUNK })) seen.push(chunk);
      const hole = seen[0]!;
      expect(hole.every((b) => b === 0)).toBe(true);
      if (nativeAvailable()) expect(hole.buffer.byteLength).toBeGreaterThan(hole.byteLength);
      // A data chunk is its own buffer, free to be moved to a worker.
      expect(seen[2]!.some((b) => b !== 0)).toBe(true);
    } finally {
      await image.close();
    }
  });

  it('reads everything without the native addon', async () => {
    const path = await sparseFile();
    const expected = await readFile(path);
    forceNativeFallback(true);
    const image = await openImage(path);
    try {
      const { chunks, bytesRead } = await readAll(image);
      expect(bytesRead).toBe(1024 * KiB);
      expect(Buffer.compare(Buffer.concat(chunks), expected)).toBe(0);
    } finally {
      await image.close();
    }
  });

  it('cuts the last chunk short and handles a file that is all hole', async () => {
    tmp = await mkdtemp(join(tmpdir(), 'burrow-img-'));
    const path = join(tmp, 'hole.raw');
    await writeFile(path, '');
    await truncate(path, 3 * CHUNK + 10);
    const image = await openImage(path);
    try {
      const { chunks } = await readAll(image);
      expect(chunks.map((c) => c.byteLength)).toEqual([CHUNK, CHUNK, CHUNK, 10]);
      expect(chunks.every((c) => c.every((b) => b === 0))).toBe(true);
    } finally {
      await image.close();
    }
  });

  it('fails with IO_ERROR when the image shrinks while it is read', async () => {
    for (const sparse of [true, false]) {
      tmp = await mkdtemp(join(tmpdir(), 'burrow-img-'));
      const path = join(tmp, 'shrink.raw');
      await writeFile(path, pseudoRandom(4 * CHUNK, 3));
      const image = await openImage(path);
      try {
        await truncate(path, CHUNK + 100);
        const error = await readAll(image, sparse).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(BurrowError);
        expect((error as BurrowError).code).toBe('IO_ERROR');
        expect((error as BurrowError).details).toMatchObject({ offset: CHUNK + 100 });
      } finally {
        await image.close();
        await rm(tmp, { recursive: true, force: true });
      }
    }
  });
});

describe('openImage', () => {
  it('refuses what is not a regular file or block device, and missing paths', async () => {
    tmp = await mkdtemp(join(tmpdir(), 'burrow-img-'));
    expect(await rejectionCodeOf(openImage(tmp))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(openImage('/dev/null'))).toBe('INVALID_ARGUMENT');
    expect(await rejectionCodeOf(openImage(join(tmp, 'missing')))).toBe('NOT_FOUND');
  });

  it('sizes a block device through the kernel and through sysfs alike (loop device)', async () => {
    if (!isRoot) {
      // Only root may open these devices; the error must say so, not crash.
      const dev = readdirSync('/dev').find((n) => /^loop\d+$/.test(n));
      if (dev !== undefined)
        expect(await rejectionCodeOf(openImage(`/dev/${dev}`))).toBe('IO_ERROR');
      return;
    }
    tmp = await mkdtemp(join(tmpdir(), 'burrow-img-'));
    const backing = join(tmp, 'loop.raw');
    const content = pseudoRandom(3 * CHUNK + 4096, 4);
    await writeFile(backing, content);
    const dev = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    try {
      const image = await openImage(dev);
      try {
        expect(image).toMatchObject({ kind: 'block-device', size: content.byteLength });
        const { chunks } = await readAll(image);
        expect(Buffer.compare(Buffer.concat(chunks), content)).toBe(0);
      } finally {
        await image.close();
      }
      forceNativeFallback(true);
      const viaSysfs = await openImage(dev);
      await viaSysfs.close();
      expect(viaSysfs.size).toBe(content.byteLength);
    } finally {
      execFileSync('losetup', ['-d', dev]);
    }
  });
});

describe('native seekData / seekHole / blockDeviceSize', () => {
  it('finds data and holes of a sparse file', async () => {
    const path = await sparseFile();
    if (!nativeAvailable()) {
      const fd = openSync(path, 'r');
      try {
        expect(codeOf(() => seekData(fd, 0))).toBe('NATIVE_UNAVAILABLE');
      } finally {
        closeSync(fd);
      }
      return;
    }
    const fd = openSync(path, 'r');
    try {
      const start = seekData(fd, 0)!;
      expect(start).toBeLessThanOrEqual(100 * KiB);
      expect(start).toBeGreaterThan(90 * KiB);
      const end = seekHole(fd, start)!;
      expect(end).toBeGreaterThanOrEqual(150 * KiB);
      expect(end).toBeLessThan(200 * KiB);
      const second = seekData(fd, end)!;
      expect(second).toBeGreaterThan(590 * KiB);
      expect(second).toBeLessThanOrEqual(600 * KiB);
      // Only a hole after the last data: no more data; the end of the file counts as a hole.
      expect(seekData(fd, 700 * KiB)).toBeUndefined();
      expect(seekHole(fd, 700 * KiB)).toBe(700 * KiB);
      expect(seekHole(fd, 1024 * KiB)).toBeUndefined();
      expect(codeOf(() => seekData(fd, -1))).toBe('INVALID_ARGUMENT');
      expect(codeOf(() => seekData(fd, 1.5))).toBe('INVALID_ARGUMENT');
      // Not a block device.
      expect(codeOf(() => blockDeviceSize(fd))).toBe('IO_ERROR');
    } finally {
      closeSync(fd);
    }
  });

  it('reports a closed descriptor as IO_ERROR', () => {
    if (!nativeAvailable())
      return expect(codeOf(() => seekHole(999_999, 0))).toBe('NATIVE_UNAVAILABLE');
    expect(codeOf(() => seekHole(999_999, 0))).toBe('IO_ERROR');
  });
});
