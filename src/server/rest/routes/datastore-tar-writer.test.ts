import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tarStream, type TarEntry } from './datastore-tar-writer.js';

const enc = new TextEncoder();

async function tarBytes(entries: TarEntry[]): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const part of tarStream(entries)) parts.push(part);
  return Buffer.concat(parts);
}

interface Parsed {
  name: string;
  type: string;
  size: number;
  mode: number;
  mtime: number;
  linkName: string;
  pax: Record<string, string>;
  data: Buffer;
}

const cstr = (b: Buffer): string => {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
};
const octal = (b: Buffer): number => parseInt(cstr(b).trim() || '0', 8);

/** A ustar/pax reader written from POSIX for this test. */
function parseTar(tar: Buffer): Parsed[] {
  expect(tar.length % 512).toBe(0);
  const out: Parsed[] = [];
  let pax: Record<string, string> = {};
  let p = 0;
  for (;;) {
    const h = tar.subarray(p, p + 512);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : (h[i] as number);
    expect(octal(h.subarray(148, 156))).toBe(sum);
    expect(h.subarray(257, 263).toString('latin1')).toBe('ustar\0');
    const type = String.fromCharCode(h[156] as number);
    const size = octal(h.subarray(124, 136));
    const prefix = cstr(h.subarray(345, 500));
    const name = (prefix === '' ? '' : `${prefix}/`) + cstr(h.subarray(0, 100));
    const dataStart = p + 512;
    if (type === 'x') {
      const body = tar.subarray(dataStart, dataStart + size).toString('utf8');
      pax = {};
      let at = 0;
      while (at < body.length) {
        const space = body.indexOf(' ', at);
        const len = Number(body.slice(at, space));
        const record = body.slice(space + 1, at + len - 1);
        const eq = record.indexOf('=');
        pax[record.slice(0, eq)] = record.slice(eq + 1);
        at += len;
      }
      p = dataStart + Math.ceil(size / 512) * 512;
      continue;
    }
    const realSize = pax['size'] !== undefined ? Number(pax['size']) : size;
    out.push({
      name: pax['path'] ?? name,
      type,
      size: realSize,
      mode: octal(h.subarray(100, 108)),
      mtime: pax['mtime'] !== undefined ? Number(pax['mtime']) : octal(h.subarray(136, 148)),
      linkName: pax['linkpath'] ?? cstr(h.subarray(157, 257)),
      pax,
      data: Buffer.from(tar.subarray(dataStart, dataStart + realSize)),
    });
    pax = {};
    p = dataStart + Math.ceil(realSize / 512) * 512;
  }
  expect(tar.length - p).toBe(1024);
  return out;
}

const base = { uid: 1000, gid: 1000, mtime: 1_700_000_000 };

describe('tarStream', () => {
  it('writes every entry kind; long names and odd times go into pax headers', async () => {
    const longName = `d/${'x'.repeat(150)}/${'y'.repeat(120)}`;
    const longTarget = 'z'.repeat(130);
    const tar = await tarBytes([
      { ...base, path: enc.encode('d'), kind: 'directory', mode: 0o755 },
      {
        ...base,
        path: enc.encode('d/f'),
        kind: 'file',
        mode: 0o640,
        size: 600,
        content: [Buffer.alloc(100, 1), Buffer.alloc(500, 2)],
      },
      {
        ...base,
        path: enc.encode('d/h'),
        kind: 'hardlink',
        mode: 0o640,
        linkTarget: enc.encode('d/f'),
      },
      {
        ...base,
        path: enc.encode('d/s'),
        kind: 'symlink',
        mode: 0o777,
        linkTarget: enc.encode(longTarget),
      },
      {
        ...base,
        path: enc.encode('d/c'),
        kind: 'char-device',
        mode: 0o600,
        devMajor: 1,
        devMinor: 3,
      },
      { ...base, path: enc.encode('d/p'), kind: 'fifo', mode: 0o600 },
      {
        ...base,
        mtime: -86400,
        path: enc.encode(longName),
        kind: 'file',
        mode: 0o644,
        size: 3,
        content: [enc.encode('abc')],
      },
    ]);
    const parsed = parseTar(tar);
    expect(parsed.map((e) => [e.name, e.type])).toEqual([
      ['d/', '5'],
      ['d/f', '0'],
      ['d/h', '1'],
      ['d/s', '2'],
      ['d/c', '3'],
      ['d/p', '6'],
      [longName, '0'],
    ]);
    expect(
      parsed[1]!.data.equals(Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(500, 2)])),
    ).toBe(true);
    expect(parsed[1]!.mode).toBe(0o640);
    expect(parsed[2]!.linkName).toBe('d/f');
    expect(parsed[3]!.linkName).toBe(longTarget);
    expect(parsed[6]!.mtime).toBe(-86400);
    expect(parsed[6]!.data.toString()).toBe('abc');
  });

  it('refuses content of the wrong size', async () => {
    await expect(
      tarBytes([
        {
          ...base,
          path: enc.encode('f'),
          kind: 'file',
          mode: 0o644,
          size: 2,
          content: [enc.encode('abc')],
        },
      ]),
    ).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
  });

  const python = spawnSync('python3', ['-c', 'import tarfile'], { encoding: 'utf8' });
  it.skipIf(python.status !== 0)('is read by Python tarfile', async () => {
    const tar = await tarBytes([
      { ...base, path: enc.encode('d'), kind: 'directory', mode: 0o755 },
      {
        ...base,
        path: enc.encode(`d/${'n'.repeat(200)}`),
        kind: 'file',
        mode: 0o644,
        size: 2,
        content: [enc.encode('hi')],
      },
      {
        ...base,
        path: enc.encode('d/l'),
        kind: 'symlink',
        mode: 0o777,
        linkTarget: enc.encode('x'),
      },
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'burrow-tar-'));
    try {
      const file = join(dir, 'x.tar');
      writeFileSync(file, tar);
      const out = spawnSync(
        'python3',
        [
          '-c',
          'import sys,tarfile\nt=tarfile.open(sys.argv[1])\nm=t.getmembers()\nprint([(x.name,x.type.decode(),x.size) for x in m])\nprint(t.extractfile(m[1]).read().decode())',
          file,
        ],
        { encoding: 'utf8' },
      );
      expect(out.stderr).toBe('');
      expect(out.stdout.trim().split('\n')).toEqual([
        `[('d', '5', 0), ('d/${'n'.repeat(200)}', '0', 2), ('d/l', '2', 0)]`,
        'hi',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
