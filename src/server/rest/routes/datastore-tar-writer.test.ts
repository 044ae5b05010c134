import { describe, expect, it } from 'vitest';
import {
  collectBytes,
  hasPythonModule,
  readTar,
  runPythonOn,
} from '../../../../test/helpers/archive-readers.js';
import { tarStream, type TarEntry } from './datastore-tar-writer.js';

const enc = new TextEncoder();

function tarBytes(entries: TarEntry[]): Promise<Buffer> {
  return collectBytes(tarStream(entries));
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
    const parsed = readTar(tar);
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

  it.skipIf(!hasPythonModule('tarfile'))('is read by Python tarfile', async () => {
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
    const out = runPythonOn(
      tar,
      'x.tar',
      'import sys,tarfile\nt=tarfile.open(sys.argv[1])\nm=t.getmembers()\nprint([(x.name,x.type.decode(),x.size) for x in m])\nprint(t.extractfile(m[1]).read().decode())',
    );
    expect(out.stderr).toBe('');
    expect(out.stdout.trim().split('\n')).toEqual([
      `[('d', '5', 0), ('d/${'n'.repeat(200)}', '0', 2), ('d/l', '2', 0)]`,
      'hi',
    ]);
  });
});
