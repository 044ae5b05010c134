/**
 * A streaming ZIP writer for directory downloads (`pxar-file-download` of a directory): entries go
 * out as they come, nothing is buffered beyond one piece of file content, and the size of the
 * archive is unbounded (ZIP64 records are written where a size or offset needs them).
 *
 * Files are deflated and followed by a data descriptor, because their compressed size is known
 * only afterwards. Each content piece is deflated on its own on libuv's thread pool with a sync
 * flush, and the pieces are joined into one deflate stream closed by an empty final block; the
 * window restarts at every piece, which costs a little ratio at 1 MiB pieces and keeps the event
 * loop free. Directories and symlinks are stored with their CRC and sizes in the local header,
 * so streaming readers that cannot handle stored entries with data descriptors read them too.
 */
import { promisify } from 'node:util';
import { constants as zlibConstants, crc32, deflateRaw } from 'node:zlib';
import { BurrowError } from '../../lib/errors.js';

const deflateRawAsync = promisify(deflateRaw);

export interface ZipEntry {
  /** Path inside the archive: '/'-separated, relative (no leading '/'), no trailing '/'. */
  readonly path: Uint8Array;
  readonly kind: 'file' | 'directory' | 'symlink';
  /** Permission bits (and setuid/setgid/sticky); the file type bits come from `kind`. */
  readonly mode: number;
  /** Modification time, epoch seconds. */
  readonly mtime: number;
  /** Files: the number of content bytes `content` yields (checked). */
  readonly size?: number;
  /** Files: the content. Symlinks: the target. Directories: none. */
  readonly content?: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

export interface ZipOptions {
  /** zlib level 0..9 (default 6). */
  level?: number;
}

const LOCAL_HEADER_SIG = 0x04034b50;
const CENTRAL_HEADER_SIG = 0x02014b50;
const DATA_DESCRIPTOR_SIG = 0x08074b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const EOCD_SIG = 0x06054b50;

const FLAG_DATA_DESCRIPTOR = 0x0008;
const FLAG_UTF8 = 0x0800;
const METHOD_STORE = 0;
const METHOD_DEFLATE = 8;
/** "Made by" Unix (3), spec version 6.3: external attributes carry st_mode in the high 16 bits. */
const VERSION_MADE_BY = (3 << 8) | 63;
const VERSION_DEFAULT = 20;
const VERSION_ZIP64 = 45;

const ZIP64_EXTRA_ID = 0x0001;
const TIMESTAMP_EXTRA_ID = 0x5455;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;
/**
 * Files declared at least this large get ZIP64 sizes from the start: deflate may expand data a
 * little, so a file just under 4 GiB could still need 64-bit sizes once compressed.
 */
const ZIP64_FILE_THRESHOLD = 0xff000000;
/** An empty final deflate block (BFINAL=1, fixed Huffman, end-of-block), ending the stream. */
const DEFLATE_END = Uint8Array.of(0x03, 0x00);
/** Content is deflated in pieces of at most this size. */
const PIECE_SIZE = 1024 * 1024;

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const MSDOS_DIRECTORY = 0x10;

interface CentralRecord {
  name: Uint8Array;
  flags: number;
  method: number;
  dosTime: number;
  dosDate: number;
  crc: number;
  compressed: number;
  uncompressed: number;
  offset: number;
  externalAttrs: number;
  mtime: number;
  zip64: boolean;
}

/** A little-endian byte builder for headers. */
class Bytes {
  readonly #buf: Buffer;
  #pos = 0;
  constructor(size: number) {
    this.#buf = Buffer.alloc(size);
  }
  u16(v: number): this {
    this.#pos = this.#buf.writeUInt16LE(v & U16_MAX, this.#pos);
    return this;
  }
  u32(v: number): this {
    this.#pos = this.#buf.writeUInt32LE(v >>> 0, this.#pos);
    return this;
  }
  u64(v: number): this {
    this.#pos = this.#buf.writeBigUInt64LE(BigInt(v), this.#pos);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.#buf.set(b, this.#pos);
    this.#pos += b.byteLength;
    return this;
  }
  done(): Uint8Array {
    if (this.#pos !== this.#buf.byteLength)
      throw new BurrowError('INTERNAL', `zip header size ${this.#pos} != ${this.#buf.byteLength}`);
    return new Uint8Array(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
  }
}

/** MS-DOS date and time (UTC, two-second resolution), clamped to the years 1980..2107. */
export function dosDateTime(epochSeconds: number): { date: number; time: number } {
  const min = Date.UTC(1980, 0, 1) / 1000;
  const max = Date.UTC(2107, 11, 31, 23, 59, 58) / 1000;
  const t = new Date(Math.min(Math.max(epochSeconds, min), max) * 1000);
  return {
    date: ((t.getUTCFullYear() - 1980) << 9) | ((t.getUTCMonth() + 1) << 5) | t.getUTCDate(),
    time: (t.getUTCHours() << 11) | (t.getUTCMinutes() << 5) | (t.getUTCSeconds() >> 1),
  };
}

/** The "UT" extra field with the modification time, when it fits its unsigned 32-bit field. */
function timestampExtra(mtime: number): Uint8Array {
  if (!Number.isInteger(mtime) || mtime < 0 || mtime > U32_MAX) return new Uint8Array(0);
  return new Bytes(9).u16(TIMESTAMP_EXTRA_ID).u16(5).bytes(Uint8Array.of(1)).u32(mtime).done();
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function localHeader(
  record: CentralRecord,
  sizesKnown: boolean,
  extra: readonly Uint8Array[],
): Uint8Array {
  const extras = [...extra];
  let compressed = sizesKnown ? record.compressed : 0;
  let uncompressed = sizesKnown ? record.uncompressed : 0;
  if (record.zip64) {
    extras.unshift(
      new Bytes(20)
        .u16(ZIP64_EXTRA_ID)
        .u16(16)
        .u64(sizesKnown ? record.uncompressed : 0)
        .u64(sizesKnown ? record.compressed : 0)
        .done(),
    );
    compressed = U32_MAX;
    uncompressed = U32_MAX;
  }
  const extraBytes = concat(extras);
  return new Bytes(30 + record.name.byteLength + extraBytes.byteLength)
    .u32(LOCAL_HEADER_SIG)
    .u16(record.zip64 ? VERSION_ZIP64 : VERSION_DEFAULT)
    .u16(record.flags)
    .u16(record.method)
    .u16(record.dosTime)
    .u16(record.dosDate)
    .u32(sizesKnown ? record.crc : 0)
    .u32(compressed)
    .u32(uncompressed)
    .u16(record.name.byteLength)
    .u16(extraBytes.byteLength)
    .bytes(record.name)
    .bytes(extraBytes)
    .done();
}

function centralHeader(record: CentralRecord): Uint8Array {
  const big: number[] = [];
  let uncompressed = record.uncompressed;
  let compressed = record.compressed;
  let offset = record.offset;
  // The ZIP64 extra holds, in this order, exactly the fields whose 32-bit slot says 0xFFFFFFFF.
  if (record.zip64 || uncompressed >= U32_MAX) {
    big.push(uncompressed);
    uncompressed = U32_MAX;
  }
  if (record.zip64 || compressed >= U32_MAX) {
    big.push(compressed);
    compressed = U32_MAX;
  }
  if (offset >= U32_MAX) {
    big.push(offset);
    offset = U32_MAX;
  }
  const extras: Uint8Array[] = [];
  if (big.length > 0) {
    const b = new Bytes(4 + 8 * big.length).u16(ZIP64_EXTRA_ID).u16(8 * big.length);
    for (const v of big) b.u64(v);
    extras.push(b.done());
  }
  extras.push(timestampExtra(record.mtime));
  const extraBytes = concat(extras);
  const needs64 = big.length > 0;
  return new Bytes(46 + record.name.byteLength + extraBytes.byteLength)
    .u32(CENTRAL_HEADER_SIG)
    .u16(VERSION_MADE_BY)
    .u16(needs64 ? VERSION_ZIP64 : VERSION_DEFAULT)
    .u16(record.flags)
    .u16(record.method)
    .u16(record.dosTime)
    .u16(record.dosDate)
    .u32(record.crc)
    .u32(compressed)
    .u32(uncompressed)
    .u16(record.name.byteLength)
    .u16(extraBytes.byteLength)
    .u16(0) // comment length
    .u16(0) // disk number start
    .u16(0) // internal attributes
    .u32(record.externalAttrs)
    .u32(offset)
    .bytes(record.name)
    .bytes(extraBytes)
    .done();
}

function endRecords(count: number, cdOffset: number, cdSize: number): Uint8Array {
  const parts: Uint8Array[] = [];
  const needs64 = count >= U16_MAX || cdOffset >= U32_MAX || cdSize >= U32_MAX;
  if (needs64) {
    const eocd64Offset = cdOffset + cdSize;
    parts.push(
      new Bytes(56)
        .u32(ZIP64_EOCD_SIG)
        .u64(44) // size of the rest of this record
        .u16(VERSION_MADE_BY)
        .u16(VERSION_ZIP64)
        .u32(0) // this disk
        .u32(0) // disk with the central directory
        .u64(count)
        .u64(count)
        .u64(cdSize)
        .u64(cdOffset)
        .done(),
      new Bytes(20).u32(ZIP64_LOCATOR_SIG).u32(0).u64(eocd64Offset).u32(1).done(),
    );
  }
  parts.push(
    new Bytes(22)
      .u32(EOCD_SIG)
      .u16(0)
      .u16(0)
      .u16(needs64 ? U16_MAX : count)
      .u16(needs64 ? U16_MAX : count)
      .u32(needs64 ? U32_MAX : cdSize)
      .u32(needs64 ? U32_MAX : cdOffset)
      .u16(0)
      .done(),
  );
  return concat(parts);
}

/** Cut content into pieces of at most PIECE_SIZE bytes. */
async function* pieces(
  content: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of content) {
    for (let at = 0; at < chunk.byteLength; at += PIECE_SIZE) {
      yield chunk.subarray(at, Math.min(chunk.byteLength, at + PIECE_SIZE));
    }
  }
}

function entryName(entry: ZipEntry): Uint8Array {
  const path = entry.path;
  if (path.byteLength === 0 || path[0] === 0x2f || path.includes(0)) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `zip entry path ${JSON.stringify(Buffer.from(path).toString('utf8'))} is empty, absolute or contains NUL`,
    );
  }
  return entry.kind === 'directory' ? concat([path, Uint8Array.of(0x2f)]) : path;
}

/**
 * The ZIP archive of `entries`, as pieces in order. The consumer pulls: nothing is read from an
 * entry's content before the previous piece was taken.
 */
export async function* zipStream(
  entries: AsyncIterable<ZipEntry> | Iterable<ZipEntry>,
  options: ZipOptions = {},
): AsyncGenerator<Uint8Array> {
  const level = options.level ?? 6;
  const records: CentralRecord[] = [];
  let offset = 0;
  for await (const entry of entries) {
    const name = entryName(entry);
    const { date, time } = dosDateTime(entry.mtime);
    const typeBits =
      entry.kind === 'directory' ? S_IFDIR : entry.kind === 'symlink' ? S_IFLNK : S_IFREG;
    const record: CentralRecord = {
      name,
      flags: FLAG_UTF8,
      method: METHOD_STORE,
      dosTime: time,
      dosDate: date,
      crc: 0,
      compressed: 0,
      uncompressed: 0,
      offset,
      externalAttrs:
        (((typeBits | (entry.mode & 0o7777)) << 16) >>> 0) |
        (entry.kind === 'directory' ? MSDOS_DIRECTORY : 0),
      mtime: entry.mtime,
      zip64: false,
    };
    const timestamp = timestampExtra(entry.mtime);

    if (entry.kind !== 'file') {
      // Stored with everything known up front.
      const data = entry.kind === 'symlink' ? concat([...(await collect(entry.content))]) : null;
      if (data !== null) {
        record.crc = crc32(data);
        record.compressed = data.byteLength;
        record.uncompressed = data.byteLength;
      }
      const header = localHeader(record, true, [timestamp]);
      yield header;
      offset += header.byteLength;
      if (data !== null && data.byteLength > 0) {
        yield data;
        offset += data.byteLength;
      }
      records.push(record);
      continue;
    }

    const declared = entry.size;
    record.method = METHOD_DEFLATE;
    record.flags |= FLAG_DATA_DESCRIPTOR;
    record.zip64 = declared !== undefined && declared >= ZIP64_FILE_THRESHOLD;
    const header = localHeader(record, false, [timestamp]);
    yield header;
    offset += header.byteLength;

    let crc = 0;
    let uncompressed = 0;
    let compressed = 0;
    for await (const piece of pieces(entry.content ?? [])) {
      crc = crc32(piece, crc);
      uncompressed += piece.byteLength;
      const out = await deflateRawAsync(piece, {
        level,
        finishFlush: zlibConstants.Z_SYNC_FLUSH,
      });
      if (out.byteLength > 0) {
        compressed += out.byteLength;
        yield new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      }
    }
    yield DEFLATE_END;
    compressed += DEFLATE_END.byteLength;
    if (declared !== undefined && declared !== uncompressed) {
      throw new BurrowError(
        'SIZE_MISMATCH',
        `zip entry ${JSON.stringify(Buffer.from(name).toString('utf8'))}: ${uncompressed} bytes of content, ${declared} declared`,
        { details: { expected: declared, actual: uncompressed } },
      );
    }
    if (!record.zip64 && (compressed >= U32_MAX || uncompressed >= U32_MAX)) {
      // Only possible without a declared size; the local header promised 32-bit sizes.
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'zip entry of undeclared size reached 4 GiB: declare its size to get ZIP64 sizes',
      );
    }
    offset += compressed;
    record.crc = crc;
    record.compressed = compressed;
    record.uncompressed = uncompressed;
    const descriptor = record.zip64
      ? new Bytes(24).u32(DATA_DESCRIPTOR_SIG).u32(crc).u64(compressed).u64(uncompressed).done()
      : new Bytes(16).u32(DATA_DESCRIPTOR_SIG).u32(crc).u32(compressed).u32(uncompressed).done();
    yield descriptor;
    offset += descriptor.byteLength;
    records.push(record);
  }

  const cdOffset = offset;
  let cdSize = 0;
  for (const record of records) {
    const header = centralHeader(record);
    cdSize += header.byteLength;
    yield header;
  }
  yield endRecords(records.length, cdOffset, cdSize);
}

async function collect(
  content: AsyncIterable<Uint8Array> | Iterable<Uint8Array> | undefined,
): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  if (content === undefined) return out;
  for await (const piece of content) out.push(piece);
  return out;
}
