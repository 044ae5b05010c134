import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { dosDateTime, zipStream, type ZipEntry } from './zip-writer.js';

const enc = new TextEncoder();

async function zipBytes(entries: ZipEntry[], level?: number): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const part of zipStream(entries, level === undefined ? {} : { level }))
    parts.push(part);
  return Buffer.concat(parts);
}

interface ParsedEntry {
  name: string;
  method: number;
  crc: number;
  compressed: number;
  uncompressed: number;
  externalAttrs: number;
  offset: number;
  data: Buffer;
}

/**
 * A reader written from APPNOTE for this test: end record, central directory, then each local
 * header, with the data inflated by zlib. ZIP64 is not needed for these small archives.
 */
function parseZip(zip: Buffer): ParsedEntry[] {
  const eocd = zip.length - 22;
  expect(zip.readUInt32LE(eocd)).toBe(0x06054b50);
  const count = zip.readUInt16LE(eocd + 10);
  const cdSize = zip.readUInt32LE(eocd + 12);
  const cdOffset = zip.readUInt32LE(eocd + 16);
  expect(cdOffset + cdSize).toBe(eocd);
  const entries: ParsedEntry[] = [];
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    expect(zip.readUInt32LE(p)).toBe(0x02014b50);
    const method = zip.readUInt16LE(p + 10);
    const crc = zip.readUInt32LE(p + 16);
    const compressed = zip.readUInt32LE(p + 20);
    const uncompressed = zip.readUInt32LE(p + 24);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const externalAttrs = zip.readUInt32LE(p + 38);
    const offset = zip.readUInt32LE(p + 42);
    const name = zip.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    p += 46 + nameLen + extraLen + commentLen;
    expect(zip.readUInt32LE(offset)).toBe(0x04034b50);
    const localNameLen = zip.readUInt16LE(offset + 26);
    const localExtraLen = zip.readUInt16LE(offset + 28);
    expect(zip.subarray(offset + 30, offset + 30 + localNameLen).toString('utf8')).toBe(name);
    const start = offset + 30 + localNameLen + localExtraLen;
    const raw = zip.subarray(start, start + compressed);
    const data = method === 8 ? inflateRawSync(raw) : Buffer.from(raw);
    entries.push({ name, method, crc, compressed, uncompressed, externalAttrs, offset, data });
  }
  return entries;
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
    const parsed = parseZip(zip);
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

  const python = spawnSync('python3', ['-c', 'import zipfile'], { encoding: 'utf8' });
  it.skipIf(python.status !== 0)('is read by Python zipfile (testzip passes)', async () => {
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
    const dir = mkdtempSync(join(tmpdir(), 'burrow-zip-'));
    try {
      const file = join(dir, 'x.zip');
      writeFileSync(file, zip);
      const out = spawnSync(
        'python3',
        [
          '-c',
          'import sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(z.namelist(), z.read("d/f").decode())',
          file,
        ],
        { encoding: 'utf8' },
      );
      expect(out.stderr).toBe('');
      expect(out.stdout.trim()).toBe("['d/', 'd/f'] hello world");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
