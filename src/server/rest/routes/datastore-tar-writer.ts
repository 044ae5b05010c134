/**
 * A streaming tar writer (POSIX ustar with pax extended headers) for `pxar-file-download` with
 * `tar=1`, whose output the route compresses with zstd. A name, link target, size, id or time
 * that does not fit its ustar field goes into a pax header before the entry, so any path length,
 * file size and pre-1970 time survives. Content is streamed; only headers are built in memory.
 */
import { BurrowError } from '../../../lib/errors.js';

export type TarEntryKind =
  'file' | 'directory' | 'symlink' | 'hardlink' | 'char-device' | 'block-device' | 'fifo';

export interface TarEntry {
  /** Path inside the archive: '/'-separated, relative, no trailing '/'. */
  readonly path: Uint8Array;
  readonly kind: TarEntryKind;
  /** Permission bits (and setuid/setgid/sticky). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Epoch seconds; may be negative. */
  readonly mtime: number;
  /** Files: content length (checked against what `content` yields). */
  readonly size?: number;
  readonly content?: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  /** Symlinks: the target; hardlinks: the archive path of the earlier entry. */
  readonly linkTarget?: Uint8Array;
  readonly devMajor?: number;
  readonly devMinor?: number;
}

const BLOCK = 512;
const TYPE_FLAGS: Readonly<Record<TarEntryKind, string>> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  'char-device': '3',
  'block-device': '4',
  directory: '5',
  fifo: '6',
};
const PAX_TYPE = 'x';
const enc = new TextEncoder();

/** Largest value of an octal field of `digits` digits. */
const octalMax = (digits: number): number => 8 ** digits - 1;

function writeOctal(header: Uint8Array, offset: number, width: number, value: number): void {
  // width - 1 digits and a NUL.
  const text = Math.trunc(value)
    .toString(8)
    .padStart(width - 1, '0');
  header.set(enc.encode(text), offset);
  header[offset + width - 1] = 0;
}

function fits(value: number, digits: number): boolean {
  return Number.isSafeInteger(value) && value >= 0 && value <= octalMax(digits);
}

/** One pax record, `<len> <key>=<value>\n`, where `<len>` counts the whole record. */
function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = Buffer.concat([enc.encode(` ${key}=`), value, enc.encode('\n')]);
  let length = body.byteLength + 1;
  while (String(length).length + body.byteLength !== length) length++;
  return new Uint8Array(Buffer.concat([enc.encode(String(length)), body]));
}

/** Split a path into ustar `prefix` and `name`, or undefined when it cannot be. */
function splitUstarName(path: Uint8Array): { prefix: Uint8Array; name: Uint8Array } | undefined {
  if (path.byteLength <= 100) return { prefix: new Uint8Array(0), name: path };
  if (path.byteLength > 256) return undefined;
  for (let i = Math.min(155, path.byteLength - 1); i > 0; i--) {
    if (path[i] !== 0x2f) continue;
    const name = path.subarray(i + 1);
    if (name.byteLength === 0 || name.byteLength > 100) return undefined;
    return { prefix: path.subarray(0, i), name };
  }
  return undefined;
}

interface HeaderFields {
  name: Uint8Array;
  prefix: Uint8Array;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  type: string;
  linkName: Uint8Array;
  devMajor: number;
  devMinor: number;
}

function header(fields: HeaderFields): Uint8Array {
  const h = new Uint8Array(BLOCK);
  h.set(fields.name.subarray(0, 100), 0);
  writeOctal(h, 100, 8, fields.mode);
  writeOctal(h, 108, 8, fields.uid);
  writeOctal(h, 116, 8, fields.gid);
  writeOctal(h, 124, 12, fields.size);
  writeOctal(h, 136, 12, fields.mtime);
  h.fill(0x20, 148, 156); // checksum field counts as spaces while summing
  h[156] = fields.type.charCodeAt(0);
  h.set(fields.linkName.subarray(0, 100), 157);
  h.set(enc.encode('ustar\0'), 257);
  h.set(enc.encode('00'), 263);
  writeOctal(h, 329, 8, fields.devMajor);
  writeOctal(h, 337, 8, fields.devMinor);
  h.set(fields.prefix.subarray(0, 155), 345);
  let sum = 0;
  for (const b of h) sum += b;
  h.set(enc.encode(sum.toString(8).padStart(6, '0')), 148);
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

function padding(size: number): Uint8Array {
  const rest = size % BLOCK;
  return new Uint8Array(rest === 0 ? 0 : BLOCK - rest);
}

function entryHeaders(entry: TarEntry, size: number): Uint8Array[] {
  const pax: Uint8Array[] = [];
  const path =
    entry.kind === 'directory' ? Buffer.concat([entry.path, Uint8Array.of(0x2f)]) : entry.path;
  let split = splitUstarName(path);
  if (split === undefined) {
    pax.push(paxRecord('path', path));
    split = { prefix: new Uint8Array(0), name: path.subarray(0, 100) };
  }
  let linkName = entry.linkTarget ?? new Uint8Array(0);
  if (linkName.byteLength > 100) {
    pax.push(paxRecord('linkpath', linkName));
    linkName = linkName.subarray(0, 100);
  }
  const numeric = (key: string, value: number, digits: number): number => {
    if (fits(value, digits)) return value;
    pax.push(paxRecord(key, enc.encode(String(Math.trunc(value)))));
    return 0;
  };
  const fields: HeaderFields = {
    name: split.name,
    prefix: split.prefix,
    mode: entry.mode & 0o7777,
    uid: numeric('uid', entry.uid, 7),
    gid: numeric('gid', entry.gid, 7),
    size: numeric('size', size, 11),
    mtime: numeric('mtime', entry.mtime, 11),
    type: TYPE_FLAGS[entry.kind],
    linkName,
    devMajor: entry.devMajor !== undefined && fits(entry.devMajor, 7) ? entry.devMajor : 0,
    devMinor: entry.devMinor !== undefined && fits(entry.devMinor, 7) ? entry.devMinor : 0,
  };
  const out: Uint8Array[] = [];
  if (pax.length > 0) {
    const body = new Uint8Array(Buffer.concat(pax));
    const base = path.subarray(path.lastIndexOf(0x2f, path.byteLength - 2) + 1);
    out.push(
      header({
        name: Buffer.concat([enc.encode('PaxHeaders/'), base]).subarray(0, 100),
        prefix: new Uint8Array(0),
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: body.byteLength,
        mtime: 0,
        type: PAX_TYPE,
        linkName: new Uint8Array(0),
        devMajor: 0,
        devMinor: 0,
      }),
      body,
      padding(body.byteLength),
    );
  }
  out.push(header(fields));
  return out;
}

/** The tar archive of `entries`, ending with the two zero blocks. */
export async function* tarStream(
  entries: AsyncIterable<TarEntry> | Iterable<TarEntry>,
): AsyncGenerator<Uint8Array> {
  for await (const entry of entries) {
    if (entry.path.byteLength === 0 || entry.path[0] === 0x2f || entry.path.includes(0)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `tar entry path ${JSON.stringify(Buffer.from(entry.path).toString('utf8'))} is empty, absolute or contains NUL`,
      );
    }
    const size = entry.kind === 'file' ? (entry.size ?? 0) : 0;
    for (const part of entryHeaders(entry, size)) if (part.byteLength > 0) yield part;
    if (entry.kind !== 'file') continue;
    let written = 0;
    for await (const piece of entry.content ?? []) {
      written += piece.byteLength;
      if (written > size) break;
      if (piece.byteLength > 0) yield piece;
    }
    if (written !== size) {
      throw new BurrowError(
        'SIZE_MISMATCH',
        `tar entry ${JSON.stringify(Buffer.from(entry.path).toString('utf8'))}: content has ${written > size ? 'more than ' : ''}${written} bytes, ${size} declared`,
        { details: { expected: size, actual: written } },
      );
    }
    const pad = padding(size);
    if (pad.byteLength > 0) yield pad;
  }
  yield new Uint8Array(2 * BLOCK);
}
