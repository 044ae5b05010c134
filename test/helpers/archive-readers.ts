/**
 * Independent readers for the ZIP and tar files the server writes (the writers' unit tests and
 * the download route tests share them), written from APPNOTE and POSIX, not from our writers.
 * They throw on anything a well-formed archive does not have, so every caller checks structure.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';

/** All the bytes of a stream of parts. */
export async function collectBytes(
  parts: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const part of parts) out.push(part);
  return Buffer.concat(out);
}

export interface ZipMember {
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
 * Members of a ZIP file (no ZIP64): end record, central directory (which must end where the end
 * record starts), each local header (whose name must match), data inflated by zlib.
 */
export function readZip(zip: Buffer): ZipMember[] {
  const eocd = zip.length - 22;
  if (zip.readUInt32LE(eocd) !== 0x06054b50) throw new Error('no end of central directory');
  const count = zip.readUInt16LE(eocd + 10);
  const cdSize = zip.readUInt32LE(eocd + 12);
  const cdOffset = zip.readUInt32LE(eocd + 16);
  if (cdOffset + cdSize !== eocd) {
    throw new Error(`central directory ends at ${cdOffset + cdSize}, end record at ${eocd}`);
  }
  const members: ZipMember[] = [];
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error(`bad central header at ${p}`);
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
    if (zip.readUInt32LE(offset) !== 0x04034b50) throw new Error(`bad local header at ${offset}`);
    const localNameLen = zip.readUInt16LE(offset + 26);
    const localName = zip.subarray(offset + 30, offset + 30 + localNameLen).toString('utf8');
    if (localName !== name) throw new Error(`local name ${localName} != central name ${name}`);
    const start = offset + 30 + localNameLen + zip.readUInt16LE(offset + 28);
    const raw = zip.subarray(start, start + compressed);
    const data = method === 8 ? inflateRawSync(raw) : Buffer.from(raw);
    members.push({ name, method, crc, compressed, uncompressed, externalAttrs, offset, data });
  }
  return members;
}

export interface TarMember {
  name: string;
  /** The typeflag: '0' file, '1' hardlink, '2' symlink, '5' directory, ... */
  type: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkName: string;
  /** The pax records that applied to this member (empty without a pax header). */
  pax: Record<string, string>;
  data: Buffer;
}

const cstr = (b: Buffer): string => {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
};
const octal = (b: Buffer): number => parseInt(cstr(b).trim() || '0', 8);

/**
 * Members of a ustar archive with pax headers (`path`, `linkpath`, `size`, `mtime`, ids). Every
 * header needs a good checksum and the `ustar\0` magic; the archive is whole 512-byte blocks
 * and ends with exactly two zero blocks.
 */
export function readTar(tar: Buffer): TarMember[] {
  if (tar.length % 512 !== 0) throw new Error(`tar length ${tar.length} is not a block multiple`);
  const out: TarMember[] = [];
  let pax: Record<string, string> = {};
  let p = 0;
  for (;;) {
    if (p + 512 > tar.length) throw new Error('tar ends without its end-of-archive blocks');
    const h = tar.subarray(p, p + 512);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : (h[i] as number);
    if (octal(h.subarray(148, 156)) !== sum) throw new Error(`bad tar checksum at ${p}`);
    if (h.subarray(257, 263).toString('latin1') !== 'ustar\0') {
      throw new Error(`no ustar magic at ${p}`);
    }
    const type = String.fromCharCode(h[156] as number);
    const headerSize = octal(h.subarray(124, 136));
    const prefix = cstr(h.subarray(345, 500));
    const name = (prefix === '' ? '' : `${prefix}/`) + cstr(h.subarray(0, 100));
    const dataStart = p + 512;
    if (type === 'x') {
      const body = tar.subarray(dataStart, dataStart + headerSize).toString('utf8');
      pax = {};
      for (let at = 0; at < body.length;) {
        const space = body.indexOf(' ', at);
        const len = Number(body.slice(at, space));
        const record = body.slice(space + 1, at + len - 1);
        const eq = record.indexOf('=');
        pax[record.slice(0, eq)] = record.slice(eq + 1);
        at += len;
      }
      p = dataStart + Math.ceil(headerSize / 512) * 512;
      continue;
    }
    const num = (key: string, value: number): number =>
      pax[key] !== undefined ? Number(pax[key]) : value;
    const size = num('size', headerSize);
    out.push({
      name: pax['path'] ?? name,
      type,
      size,
      mode: octal(h.subarray(100, 108)),
      uid: num('uid', octal(h.subarray(108, 116))),
      gid: num('gid', octal(h.subarray(116, 124))),
      mtime: num('mtime', octal(h.subarray(136, 148))),
      linkName: pax['linkpath'] ?? cstr(h.subarray(157, 257)),
      pax,
      data: Buffer.from(tar.subarray(dataStart, dataStart + size)),
    });
    pax = {};
    p = dataStart + Math.ceil(size / 512) * 512;
  }
  if (tar.length - p !== 1024) {
    throw new Error(`${tar.length - p} bytes after the last member, expected two zero blocks`);
  }
  return out;
}

/** Whether python3 with `module` is there, for the tests that let Python read our archives. */
export function hasPythonModule(module: string): boolean {
  return spawnSync('python3', ['-c', `import ${module}`], { encoding: 'utf8' }).status === 0;
}

/** Run a Python `script` with the path of a temp file holding `bytes` as its argument. */
export function runPythonOn(
  bytes: Uint8Array,
  fileName: string,
  script: string,
): { stdout: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'burrow-archive-'));
  try {
    const file = join(dir, fileName);
    writeFileSync(file, bytes);
    const out = spawnSync('python3', ['-c', script, file], { encoding: 'utf8' });
    return { stdout: out.stdout, stderr: out.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
