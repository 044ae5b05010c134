import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  collectBytes,
  hasPythonModule,
  readZip,
  runPythonOn,
} from '../../../test/helpers/archive-readers.js';
import { dosDateTime, zipStream, type ZipEntry } from './zip-writer.js';

const enc = new TextEncoder();

function zipBytes(entries: ZipEntry[], level?: number): Promise<Buffer> {
  return collectBytes(zipStream(entries, level === undefined ? {} : { level }));
}

describe('zipStream', () => {
  it('writes files, directories and symlinks that an independent reader gets back', async () => {
    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
    const entries: ZipEntry[] = [
      { path: enc.encode('dir'), kind: 'directory', mode: 0o755, mtime: 1_700_000_000 },
      {
        path: enc.encode('dir/small.txt'),
        kind: 'file',
        mode: 0o644,
        mtime: 1_700_000_001,
        size: 5,
        content: [enc.encode('he'), enc.encode('llo')],
      },
      {
        path: enc.encode('dir/big.bin'),
        kind: 'file',
        mode: 0o600,
        mtime: 1_700_000_002,
        size: big.length,
        content: (async function* () {
          yield big.subarray(0, 1000);
          await Promise.resolve();
          yield big.subarray(1000);
        })(),
      },
      {
        path: enc.encode('dir/empty'),
        kind: 'file',
        mode: 0o644,
        mtime: 0,
        size: 0,
        content: [],
      },
      {
        path: enc.encode('dir/link'),
        kind: 'symlink',
        mode: 0o777,
        mtime: 1_700_000_003,
        content: [enc.encode('small.txt')],
      },
    ];
    const zip = await zipBytes(entries);
    const parsed = readZip(zip);
    expect(parsed.map((e) => e.name)).toEqual([
      'dir/',
      'dir/small.txt',
      'dir/big.bin',
      'dir/empty',
      'dir/link',
    ]);
    const byName = new Map(parsed.map((e) => [e.name, e]));
    expect(byName.get('dir/small.txt')?.data.toString()).toBe('hello');
    expect(byName.get('dir/small.txt')?.crc).toBe(crc32('hello'));
    expect(byName.get('dir/big.bin')?.data.equals(big)).toBe(true);
    expect(byName.get('dir/big.bin')?.crc).toBe(crc32(big));
    expect(byName.get('dir/big.bin')?.uncompressed).toBe(big.length);
    expect(byName.get('dir/empty')?.data.length).toBe(0);
    expect(byName.get('dir/link')?.method).toBe(0);
    expect(byName.get('dir/link')?.data.toString()).toBe('small.txt');
    // st_mode in the high 16 bits: S_IFDIR|0755, S_IFREG|0600, S_IFLNK|0777.
    expect(byName.get('dir/')!.externalAttrs >>> 16).toBe(0o40755);
    expect(byName.get('dir/')!.externalAttrs & 0x10).toBe(0x10);
    expect(byName.get('dir/big.bin')!.externalAttrs >>> 16).toBe(0o100600);
    expect(byName.get('dir/link')!.externalAttrs >>> 16).toBe(0o120777);
    // Deflated files carry a data descriptor after their data: signature, CRC, sizes.
    const bigEntry = byName.get('dir/big.bin')!;
    const localNameLen = zip.readUInt16LE(bigEntry.offset + 26);
    const localExtraLen = zip.readUInt16LE(bigEntry.offset + 28);
    expect(zip.readUInt16LE(bigEntry.offset + 6) & 0x0008).toBe(0x0008);
    const desc = bigEntry.offset + 30 + localNameLen + localExtraLen + bigEntry.compressed;
    expect(zip.readUInt32LE(desc)).toBe(0x08074b50);
    expect(zip.readUInt32LE(desc + 4)).toBe(crc32(big));
    expect(zip.readUInt32LE(desc + 8)).toBe(bigEntry.compressed);
    expect(zip.readUInt32LE(desc + 12)).toBe(big.length);
  });

  it('refuses content that does not match the declared size, and bad paths', async () => {
    await expect(
      zipBytes([
        { path: enc.encode('a'), kind: 'file', mode: 0o644, mtime: 0, size: 3, content: [] },
      ]),
    ).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
    await expect(
      zipBytes([{ path: enc.encode('/abs'), kind: 'directory', mode: 0o755, mtime: 0 }]),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('encodes DOS dates in UTC and clamps them to 1980..2107', () => {
    // 2024-02-29T13:45:30Z: date (44 << 9 | 2 << 5 | 29), time (13 << 11 | 45 << 5 | 15).
    expect(dosDateTime(Date.UTC(2024, 1, 29, 13, 45, 30) / 1000)).toEqual({
      date: (44 << 9) | (2 << 5) | 29,
      time: (13 << 11) | (45 << 5) | 15,
    });
    expect(dosDateTime(-1)).toEqual({ date: (1 << 5) | 1, time: 0 });
  });

  it.skipIf(!hasPythonModule('zipfile'))('is read by Python zipfile (testzip passes)', async () => {
    const zip = await zipBytes([
      { path: enc.encode('d'), kind: 'directory', mode: 0o755, mtime: 1_600_000_000 },
      {
        path: enc.encode('d/f'),
        kind: 'file',
        mode: 0o644,
        mtime: 1_600_000_000,
        size: 11,
        content: [enc.encode('hello world')],
      },
    ]);
    const out = runPythonOn(
      zip,
      'x.zip',
      'import sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(z.namelist(), z.read("d/f").decode())',
    );
    expect(out.stderr).toBe('');
    expect(out.stdout.trim()).toBe("['d/', 'd/f'] hello world");
  });
});
