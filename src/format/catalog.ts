/**
 * The file catalog `catalog.pcat1` (pxar-format §10a): a compact directory tree that the client
 * writes beside legacy `.pxar` archives so snapshots can be browsed and searched without reading
 * the archives. Layout: magic, then one table per directory in post-order (children before their
 * parent), then the root table, then a u64 LE with the root table's offset.
 *
 * Pure codec: the writer streams bytes into a sink, the reader pulls ranges from a random-access
 * source. Neither touches the filesystem.
 */
import { bytesEqual, concatBytes } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import { CATALOG_MAGIC } from './magic.js';
import {
  SVARINT_MAX_BYTES,
  VARINT_MAX_BYTES,
  decodeSvarint,
  decodeVarint,
  writeSvarint,
  writeVarint,
} from './varint.js';
import type { VarintContext } from './varint.js';

export type CatalogEntryType = 'd' | 'f' | 'l' | 'h' | 'b' | 'c' | 'p' | 's';

/** The type bytes, in the order PBS lists them. */
export const CATALOG_ENTRY_TYPES: readonly CatalogEntryType[] = Object.freeze([
  'd',
  'f',
  'l',
  'h',
  'b',
  'c',
  'p',
  's',
]);

/** Names must be shorter than this (the reference reader's buffer is 4096 bytes). */
export const CATALOG_MAX_NAME_LENGTH = 4095;

const MAGIC_SIZE = CATALOG_MAGIC.byteLength;
const TRAILER_SIZE = 8;
/** The smallest catalog: magic, an empty root table (`01 00`) and the trailer. */
const MIN_CATALOG_SIZE = MAGIC_SIZE + 2 + TRAILER_SIZE;
/** Smallest encoded entry: type byte, 1-byte name length, 1-byte name. Bounds `count`. */
const MIN_ENTRY_SIZE = 3;
const SLASH = 0x2f;
const DOT = 0x2e;

export interface CatalogEntry {
  readonly type: CatalogEntryType;
  readonly name: Uint8Array;
  /** Files only. */
  readonly size?: number;
  /** Files only: whole seconds since the epoch, may be negative. */
  readonly mtime?: number;
  /** Directories only: the absolute offset of the directory's table. */
  readonly tablePos?: number;
}

export interface CatalogDirEntry extends CatalogEntry {
  readonly type: 'd';
  readonly tablePos: number;
}

export function isCatalogDir(entry: CatalogEntry): entry is CatalogDirEntry {
  return entry.type === 'd' && entry.tablePos !== undefined;
}

/** Why a name is not a valid catalog entry name, or undefined when it is. */
function nameProblem(name: Uint8Array): string | undefined {
  if (name.byteLength === 0) return 'is empty';
  if (name.byteLength > CATALOG_MAX_NAME_LENGTH) {
    return `is ${name.byteLength} bytes long (must be below ${CATALOG_MAX_NAME_LENGTH + 1})`;
  }
  if (name.includes(SLASH)) return "contains '/'";
  // Names come from C strings upstream, so a NUL cannot be part of a real one.
  if (name.includes(0)) return 'contains a NUL byte';
  if (name[0] === DOT && (name.byteLength === 1 || (name.byteLength === 2 && name[1] === DOT))) {
    return "is '.' or '..'";
  }
  return undefined;
}

const decoder = new TextDecoder('utf-8', { fatal: false });
const encoder = new TextEncoder();

/** A name for messages (lossy UTF-8, shortened). */
function show(name: Uint8Array): string {
  const text = decoder.decode(name.subarray(0, 200));
  return JSON.stringify(name.byteLength > 200 ? `${text}...` : text);
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface CatalogSink {
  write(bytes: Uint8Array): void | Promise<void>;
}

interface PendingEntry {
  readonly type: CatalogEntryType;
  readonly name: Uint8Array;
  readonly size: number;
  readonly mtime: number;
  /** For `d`: where the child's table was written. */
  readonly tablePos: number;
}

interface OpenDirectory {
  readonly name: Uint8Array;
  readonly entries: PendingEntry[];
  /** Names seen, as latin1 strings (one char per byte), to refuse duplicates. */
  readonly names: Set<string>;
}

/** A growable byte buffer for encoding one table. */
class TableBuilder {
  private buf = new Uint8Array(256);
  private len = 0;

  private reserve(extra: number): void {
    if (this.len + extra <= this.buf.byteLength) return;
    let size = this.buf.byteLength * 2;
    while (size < this.len + extra) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  byte(b: number): void {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.byteLength);
    this.buf.set(b, this.len);
    this.len += b.byteLength;
  }

  varint(v: number): void {
    this.reserve(VARINT_MAX_BYTES);
    this.len = writeVarint(this.buf, this.len, v);
  }

  svarint(v: number): void {
    this.reserve(SVARINT_MAX_BYTES);
    this.len = writeSvarint(this.buf, this.len, v);
  }

  /** `varint(L)` followed by the L bytes built so far. */
  framed(): Uint8Array {
    const head = new Uint8Array(VARINT_MAX_BYTES);
    const headLen = writeVarint(head, 0, this.len);
    const out = new Uint8Array(headLen + this.len);
    out.set(head.subarray(0, headLen));
    out.set(this.buf.subarray(0, this.len), headLen);
    return out;
  }
}

function encodeTable(entries: readonly PendingEntry[], tablePos: number): Uint8Array {
  const t = new TableBuilder();
  t.varint(entries.length);
  for (const e of entries) {
    t.byte(e.type.charCodeAt(0));
    t.varint(e.name.byteLength);
    t.bytes(e.name);
    if (e.type === 'd') t.varint(tablePos - e.tablePos);
    else if (e.type === 'f') {
      t.varint(e.size);
      t.svarint(e.mtime);
    }
  }
  return t.framed();
}

/**
 * Streams a catalog while an archive encoder walks its tree. Only the pending entries of the
 * directories that are still open are held; a directory's table goes to the sink when it closes.
 * The implicit root directory (the snapshot) is open from the start and holds one directory per
 * archive; `finish()` writes it.
 */
export class CatalogWriter {
  private readonly sink: CatalogSink;
  /** [root, archive dir, subdir, ...]. */
  private readonly stack: OpenDirectory[] = [
    { name: new Uint8Array(0), entries: [], names: new Set() },
  ];
  /** Bytes emitted so far; the next table starts here. */
  private pos = 0;
  /** Sink writes run one after the other even when callers do not await each call. */
  private chain: Promise<void> = Promise.resolve();
  private finished = false;

  constructor(sink: CatalogSink) {
    this.sink = sink;
  }

  /** Open a directory inside the current one; at the top level, one per archive (server name). */
  startDirectory(name: Uint8Array): void {
    const dir = this.current('startDirectory');
    this.claimName(dir, name);
    // A copy, never a view: callers reuse buffers, and Buffer#slice does not copy.
    this.stack.push({ name: new Uint8Array(name), entries: [], names: new Set() });
  }

  /** Close the innermost directory: write its table and record it in its parent. */
  async endDirectory(): Promise<void> {
    this.checkOpen('endDirectory');
    if (this.stack.length < 2) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        'catalog writer: endDirectory without an open directory',
      );
    }
    const dir = this.stack.pop() as OpenDirectory;
    const parent = this.stack[this.stack.length - 1] as OpenDirectory;
    const tablePos = this.emitTable(dir.entries);
    parent.entries.push({ type: 'd', name: dir.name, size: 0, mtime: 0, tablePos });
    return this.chain;
  }

  addFile(name: Uint8Array, size: number, mtimeSecs: number): void {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `catalog writer: file ${show(name)} has size ${String(size)}, not a non-negative safe integer`,
        { details: { size: String(size) } },
      );
    }
    if (!Number.isSafeInteger(mtimeSecs)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `catalog writer: file ${show(name)} has mtime ${String(mtimeSecs)}, not a safe integer`,
        { details: { mtime: String(mtimeSecs) } },
      );
    }
    this.addLeaf('f', name, size, mtimeSecs);
  }

  addSymlink(name: Uint8Array): void {
    this.addLeaf('l', name);
  }

  addHardlink(name: Uint8Array): void {
    this.addLeaf('h', name);
  }

  addBlockDevice(name: Uint8Array): void {
    this.addLeaf('b', name);
  }

  addCharDevice(name: Uint8Array): void {
    this.addLeaf('c', name);
  }

  addFifo(name: Uint8Array): void {
    this.addLeaf('p', name);
  }

  addSocket(name: Uint8Array): void {
    this.addLeaf('s', name);
  }

  /** Write the root table and the trailing root offset. Every directory must be closed. */
  async finish(): Promise<void> {
    this.checkOpen('finish');
    if (this.stack.length !== 1) {
      const open = this.stack.slice(1).map((d) => show(d.name));
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `catalog writer: finish with ${open.length} directories still open (${open.join(' / ')})`,
        { details: { open: open.length } },
      );
    }
    const root = this.stack[0] as OpenDirectory;
    const rootPos = this.emitTable(root.entries);
    const trailer = new Uint8Array(TRAILER_SIZE);
    new DataView(trailer.buffer).setBigUint64(0, BigInt(rootPos), true);
    this.emit(trailer);
    this.finished = true;
    return this.chain;
  }

  /** Bytes handed (or queued) to the sink so far, magic included. */
  bytesWritten(): number {
    return this.pos;
  }

  private checkOpen(call: string): void {
    if (this.finished) {
      throw new BurrowError('INVALID_ARGUMENT', `catalog writer: ${call} after finish`);
    }
  }

  private current(call: string): OpenDirectory {
    this.checkOpen(call);
    return this.stack[this.stack.length - 1] as OpenDirectory;
  }

  private claimName(dir: OpenDirectory, name: Uint8Array): void {
    const problem = nameProblem(name);
    if (problem !== undefined) {
      throw new BurrowError('INVALID_ARGUMENT', `catalog writer: name ${show(name)} ${problem}`, {
        details: { length: name.byteLength },
      });
    }
    const key = Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1');
    if (dir.names.has(key)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `catalog writer: duplicate name ${show(name)} in directory ${show(dir.name)}`,
      );
    }
    dir.names.add(key);
  }

  private addLeaf(type: CatalogEntryType, name: Uint8Array, size = 0, mtime = 0): void {
    const dir = this.current(`add entry ${show(name)}`);
    if (this.stack.length === 1) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `catalog writer: ${show(name)} added at the top level, which holds only archive directories`,
      );
    }
    this.claimName(dir, name);
    dir.entries.push({ type, name: new Uint8Array(name), size, mtime, tablePos: 0 });
  }

  /** Encode and queue a table; returns its absolute position. */
  private emitTable(entries: readonly PendingEntry[]): number {
    if (this.pos === 0) this.emit(CATALOG_MAGIC.slice());
    const tablePos = this.pos;
    this.emit(encodeTable(entries, tablePos));
    return tablePos;
  }

  private emit(bytes: Uint8Array): void {
    this.pos += bytes.byteLength;
    this.chain = this.chain.then(() => this.sink.write(bytes));
  }
}

// ---------------------------------------------------------------------------------------------
// Reader

export interface CatalogSource {
  readonly size: number;
  readAt(offset: number, length: number): Promise<Uint8Array>;
}

/** A path inside the catalog: components, or '/'-joined bytes/text starting at an archive name. */
export type CatalogPath = string | Uint8Array | readonly Uint8Array[];

/** Returning 'exclude' skips the entry and everything below it. */
export type CatalogMatcher = (path: Uint8Array, entry: CatalogEntry) => boolean | 'exclude';

export interface CatalogFound {
  /** Full path: the archive name, then the components, joined by '/', no leading '/'. */
  readonly path: Uint8Array;
  readonly entry: CatalogEntry;
}

export interface CatalogDumpItem extends CatalogFound {
  /** The line `catalog dump` prints (see formatCatalogDumpLine). */
  readonly line: string;
}

interface ParsedTable {
  readonly entries: CatalogEntry[];
  /** Offset just past the table. */
  readonly end: number;
}

interface WalkFrame {
  readonly entries: readonly CatalogEntry[];
  index: number;
  readonly prefix: Uint8Array;
  /** Tables of the next subdirectory's subtree must start at or after this offset. */
  cursor: number;
  /** This directory's own table offset: everything below it lies before. */
  readonly limit: number;
}

const TYPE_BY_BYTE = new Map<number, CatalogEntryType>(
  CATALOG_ENTRY_TYPES.map((t) => [t.charCodeAt(0), t]),
);

/**
 * Random-access reader. Every offset and length read from the file is checked before it is used;
 * damage surfaces as CATALOG_INVALID with the offset in `details`. Directory tables must lie before
 * the table that refers to them, so walking down always terminates; full walks (`find`, `dump`)
 * also require sibling subtrees to occupy disjoint byte ranges, as post-order writing produces,
 * which stops a crafted file from sharing one table between many parents.
 */
export class CatalogReader {
  private readonly source: CatalogSource;
  private readonly name: string;
  private header: Promise<number> | undefined;

  constructor(source: CatalogSource, name = 'catalog') {
    this.source = source;
    this.name = name;
  }

  static fromBytes(bytes: Uint8Array, name = 'catalog'): CatalogReader {
    const source: CatalogSource = {
      size: bytes.byteLength,
      readAt: (offset, length) =>
        Promise.resolve(bytes.subarray(offset, Math.min(offset + length, bytes.byteLength))),
    };
    return new CatalogReader(source, name);
  }

  /** The archives of the snapshot: one directory per archive, named with its server name. */
  async root(): Promise<CatalogDirEntry[]> {
    const rootPos = await this.rootPos();
    const { entries } = await this.readTable(rootPos, this.tablesEnd());
    return this.checkRootEntries(entries, rootPos);
  }

  /** The entries of a directory, given as an entry from this reader or as a path. */
  async listDirectory(dir: CatalogDirEntry | CatalogPath): Promise<CatalogEntry[]> {
    let entry: CatalogEntry;
    if (typeof dir === 'string' || dir instanceof Uint8Array || Array.isArray(dir)) {
      const found = await this.lookup(dir as CatalogPath);
      if (found === undefined) {
        throw new BurrowError(
          'NOT_FOUND',
          `${this.name}: ${show(joinPath(splitPath(dir as CatalogPath)))} not found in catalog`,
        );
      }
      entry = found;
    } else {
      entry = dir as CatalogDirEntry;
    }
    if (!isCatalogDir(entry)) {
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${this.name}: ${show(entry.name)} is not a directory`,
      );
    }
    const rootPos = await this.rootPos();
    if (entry.tablePos === rootPos) return this.root();
    return (await this.readTable(entry.tablePos, this.tablesEnd())).entries;
  }

  /**
   * The entry at `path` (archive name first; a leading '/' and empty components are ignored), or
   * undefined. The empty path ('/') gives the unnamed root directory.
   */
  async lookup(path: CatalogPath): Promise<CatalogEntry | undefined> {
    const components = splitPath(path);
    const rootPos = await this.rootPos();
    let current: CatalogEntry = { type: 'd', name: new Uint8Array(0), tablePos: rootPos };
    // A child's table must end before its parent's table starts.
    let limit = this.tablesEnd();
    for (const component of components) {
      if (!isCatalogDir(current)) return undefined;
      const entries =
        current.tablePos === rootPos
          ? await this.root()
          : (await this.readTable(current.tablePos, limit)).entries;
      const next = entries.find((e) => bytesEqual(e.name, component));
      if (next === undefined) return undefined;
      limit = current.tablePos;
      current = next;
    }
    return current;
  }

  /**
   * Every entry the matcher accepts, depth-first, a directory before its contents, in table order.
   * The matcher sees every entry; 'exclude' also skips a directory's subtree.
   */
  async *find(matcher: CatalogMatcher): AsyncGenerator<CatalogFound> {
    yield* this.walk(matcher);
  }

  /** Every entry with its full path and its `catalog dump` line. */
  async *dump(): AsyncGenerator<CatalogDumpItem> {
    for await (const found of this.walk(() => true)) {
      yield { ...found, line: formatCatalogDumpLine(found.path, found.entry) };
    }
  }

  private async *walk(matcher: CatalogMatcher): AsyncGenerator<CatalogFound> {
    const rootPos = await this.rootPos();
    const stack: WalkFrame[] = [
      {
        entries: await this.root(),
        index: 0,
        prefix: new Uint8Array(0),
        cursor: MAGIC_SIZE,
        limit: rootPos,
      },
    ];
    // An explicit stack: deep trees must not nest one generator per level.
    while (stack.length > 0) {
      const frame = stack[stack.length - 1] as WalkFrame;
      const entry = frame.entries[frame.index++];
      if (entry === undefined) {
        stack.pop();
        continue;
      }
      const path =
        frame.prefix.byteLength === 0
          ? entry.name
          : concatBytes(frame.prefix, Uint8Array.of(SLASH), entry.name);
      const verdict = matcher(path, entry);
      if (verdict === true) yield { path, entry };
      if (!isCatalogDir(entry)) continue;
      if (entry.tablePos < frame.cursor) {
        throw this.invalid(
          `directory ${show(path)} points to a table at ${entry.tablePos}, inside the range of an ` +
            `earlier sibling or before its own directory's subtree (starting at ${frame.cursor}); ` +
            'tables may not be shared or reordered',
          entry.tablePos,
          { cursor: frame.cursor },
        );
      }
      const lowest = frame.cursor;
      if (verdict === 'exclude') {
        // Not read, so its end is unknown; a later sibling must at least start past it.
        frame.cursor = entry.tablePos + 1;
        continue;
      }
      const child = await this.readTable(entry.tablePos, frame.limit);
      frame.cursor = child.end;
      stack.push({
        entries: child.entries,
        index: 0,
        prefix: path,
        cursor: lowest,
        limit: entry.tablePos,
      });
    }
  }

  private tablesEnd(): number {
    return this.source.size - TRAILER_SIZE;
  }

  private rootPos(): Promise<number> {
    this.header ??= this.readHeader();
    return this.header;
  }

  private async readHeader(): Promise<number> {
    const size = this.source.size;
    if (!Number.isSafeInteger(size) || size < MIN_CATALOG_SIZE) {
      throw this.invalid(
        `${String(size)} bytes is too short for a catalog (at least ${MIN_CATALOG_SIZE}: magic, root table, root offset)`,
        0,
        { size, expected: MIN_CATALOG_SIZE },
      );
    }
    const magic = await this.read(0, MAGIC_SIZE);
    if (!bytesEqual(magic, CATALOG_MAGIC)) {
      throw this.invalid('wrong magic: not a catalog.pcat1 file', 0, {
        expected: Buffer.from(CATALOG_MAGIC).toString('hex'),
        actual: Buffer.from(magic).toString('hex'),
      });
    }
    const trailerAt = size - TRAILER_SIZE;
    const trailer = await this.read(trailerAt, TRAILER_SIZE);
    const view = new DataView(trailer.buffer, trailer.byteOffset, TRAILER_SIZE);
    const rootPos = Number(view.getBigUint64(0, true));
    if (!(rootPos >= MAGIC_SIZE && rootPos < trailerAt)) {
      throw this.invalid(
        `root table offset ${rootPos} lies outside the tables (${MAGIC_SIZE}..${trailerAt - 1})`,
        trailerAt,
        { rootPos, size },
      );
    }
    return rootPos;
  }

  /** Read and parse the table at `pos`; it must end at or before `limit`. */
  private async readTable(pos: number, limit: number): Promise<ParsedTable> {
    if (!Number.isSafeInteger(pos) || pos < MAGIC_SIZE || pos >= limit) {
      throw this.invalid(
        `directory table offset ${String(pos)} lies outside ${MAGIC_SIZE}..${limit - 1}`,
        pos,
        { limit },
      );
    }
    const context: VarintContext = { base: pos, file: this.name };
    const head = await this.read(pos, Math.min(VARINT_MAX_BYTES, limit - pos));
    const { value: length, length: headLen } = decodeVarint(head, 0, context);
    const bodyAt = pos + headLen;
    if (length < 1) {
      throw this.invalid(
        `directory table at ${pos} is empty (it must hold at least the entry count)`,
        pos,
      );
    }
    if (length > limit - bodyAt) {
      throw this.invalid(
        `directory table at ${pos} claims ${length} bytes, but only ${limit - bodyAt} are available before offset ${limit}`,
        pos,
        { length, limit },
      );
    }
    const body = await this.read(bodyAt, length);
    return { entries: this.parseTable(body, bodyAt, pos), end: bodyAt + length };
  }

  private parseTable(body: Uint8Array, bodyAt: number, tablePos: number): CatalogEntry[] {
    const context: VarintContext = { base: bodyAt, file: this.name };
    const count = decodeVarint(body, 0, context);
    let i = count.length;
    if (count.value > (body.byteLength - i) / MIN_ENTRY_SIZE) {
      throw this.invalid(
        `directory table at ${tablePos} claims ${count.value} entries, more than its ${body.byteLength} bytes can hold`,
        bodyAt,
        { count: count.value, length: body.byteLength },
      );
    }
    const entries: CatalogEntry[] = [];
    for (let n = 0; n < count.value; n++) {
      const entryAt = bodyAt + i;
      const typeByte = body[i];
      if (typeByte === undefined) {
        throw this.invalid(
          `directory table at ${tablePos} ends after ${n} of ${count.value} entries`,
          entryAt,
        );
      }
      const type = TYPE_BY_BYTE.get(typeByte);
      if (type === undefined) {
        throw this.invalid(
          `unknown entry type byte 0x${typeByte.toString(16).padStart(2, '0')}`,
          entryAt,
          {
            actual: typeByte,
          },
        );
      }
      i++;
      const nameLen = decodeVarint(body, i, context);
      i += nameLen.length;
      if (nameLen.value > body.byteLength - i) {
        throw this.invalid(
          `entry name of ${nameLen.value} bytes runs past the end of the table at ${tablePos}`,
          entryAt,
          { length: nameLen.value },
        );
      }
      // A plain copy: the source may hand out Buffers or views of a larger array.
      const name = new Uint8Array(body.subarray(i, i + nameLen.value));
      const problem = nameProblem(name);
      if (problem !== undefined) throw this.invalid(`entry name ${show(name)} ${problem}`, entryAt);
      i += nameLen.value;
      if (type === 'd') {
        const back = decodeVarint(body, i, context);
        i += back.length;
        const childPos = tablePos - back.value;
        if (back.value < 1 || childPos < MAGIC_SIZE) {
          throw this.invalid(
            `directory ${show(name)} points to a table at ${childPos}, which is not before its parent's table at ${tablePos} and after the magic`,
            entryAt,
            { tablePos: childPos, parent: tablePos },
          );
        }
        entries.push({ type, name, tablePos: childPos });
      } else if (type === 'f') {
        const size = decodeVarint(body, i, context);
        i += size.length;
        const mtime = decodeSvarint(body, i, context);
        i += mtime.length;
        entries.push({ type, name, size: size.value, mtime: mtime.value });
      } else {
        entries.push({ type, name });
      }
    }
    if (i !== body.byteLength) {
      throw this.invalid(
        `directory table at ${tablePos} has ${body.byteLength - i} bytes left after its ${count.value} entries`,
        bodyAt + i,
      );
    }
    return entries;
  }

  private checkRootEntries(entries: CatalogEntry[], rootPos: number): CatalogDirEntry[] {
    const dirs: CatalogDirEntry[] = [];
    for (const e of entries) {
      if (!isCatalogDir(e)) {
        throw this.invalid(
          `root table holds ${show(e.name)} of type '${e.type}'; it may only hold archive directories`,
          rootPos,
        );
      }
      dirs.push(e);
    }
    return dirs;
  }

  private async read(offset: number, length: number): Promise<Uint8Array> {
    const bytes = await this.source.readAt(offset, length);
    if (bytes.byteLength !== length) {
      throw this.invalid(`short read: ${bytes.byteLength} of ${length} bytes`, offset, {
        expected: length,
        actual: bytes.byteLength,
      });
    }
    return bytes;
  }

  private invalid(
    reason: string,
    offset: number,
    extra: Record<string, unknown> = {},
  ): BurrowError {
    return new BurrowError('CATALOG_INVALID', `${this.name}: offset ${offset}: ${reason}`, {
      details: { file: this.name, offset, ...extra },
    });
  }
}

function splitPath(path: CatalogPath): Uint8Array[] {
  if (Array.isArray(path)) return (path as readonly Uint8Array[]).filter((c) => c.byteLength > 0);
  const bytes = typeof path === 'string' ? encoder.encode(path) : (path as Uint8Array);
  const parts: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= bytes.byteLength; i++) {
    if (i === bytes.byteLength || bytes[i] === SLASH) {
      if (i > start) parts.push(bytes.subarray(start, i));
      start = i + 1;
    }
  }
  return parts;
}

function joinPath(components: readonly Uint8Array[]): Uint8Array {
  const parts: Uint8Array[] = [];
  components.forEach((c, i) => {
    if (i > 0) parts.push(Uint8Array.of(SLASH));
    parts.push(c);
  });
  return concatBytes(...parts);
}

// ---------------------------------------------------------------------------------------------
// Dump formatting

/**
 * Quote a path the way PBS prints paths in `catalog dump` (Rust's Debug form): in double quotes,
 * with `\"`, `\\`, `\n`, `\r`, `\t`, `\0`, other control characters as `\u{..}`, and bytes that are
 * not UTF-8 as `\xNN`. Every name therefore stays on one line.
 */
export function quoteCatalogPath(path: Uint8Array): string {
  let out = '"';
  let i = 0;
  while (i < path.byteLength) {
    const b = path[i] as number;
    const len = utf8SequenceLength(path, i);
    if (len === 0) {
      out += `\\x${b.toString(16).toUpperCase().padStart(2, '0')}`;
      i++;
      continue;
    }
    const cp = codePointAt(path, i, len);
    i += len;
    if (cp === 0x22) out += '\\"';
    else if (cp === 0x5c) out += '\\\\';
    else if (cp === 0x0a) out += '\\n';
    else if (cp === 0x0d) out += '\\r';
    else if (cp === 0x09) out += '\\t';
    else if (cp === 0) out += '\\0';
    else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) out += `\\u{${cp.toString(16)}}`;
    else out += String.fromCodePoint(cp);
  }
  return `${out}"`;
}

/** The code point of the well-formed `len`-byte UTF-8 sequence at `i`. */
function codePointAt(bytes: Uint8Array, i: number, len: number): number {
  const b0 = bytes[i] as number;
  if (len === 1) return b0;
  let cp = b0 & (0xff >> (len + 1));
  for (let k = 1; k < len; k++) cp = (cp << 6) | ((bytes[i + k] as number) & 0x3f);
  return cp;
}

/** Length of the well-formed UTF-8 sequence at `i`, or 0 when the byte there starts none. */
function utf8SequenceLength(bytes: Uint8Array, i: number): number {
  const b0 = bytes[i] as number;
  if (b0 < 0x80) return 1;
  let len: number;
  let min: number;
  let max = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
    min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    // Overlong forms (E0 80..9F) and UTF-16 surrogates (ED A0..BF) are not UTF-8.
    min = b0 === 0xe0 ? 0xa0 : 0x80;
    if (b0 === 0xed) max = 0x9f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    min = b0 === 0xf0 ? 0x90 : 0x80;
    if (b0 === 0xf4) max = 0x8f;
  } else {
    return 0;
  }
  const b1 = bytes[i + 1];
  if (b1 === undefined || b1 < min || b1 > max) return 0;
  for (let k = 2; k < len; k++) {
    const b = bytes[i + k];
    if (b === undefined || b < 0x80 || b > 0xbf) return 0;
  }
  return len;
}

/**
 * An mtime as `YYYY-MM-DDTHH:MM:SSZ` in UTC, or the plain number of seconds when the year falls
 * outside 0..9999 (PBS prints the number when it cannot format the time).
 */
export function formatCatalogMtime(secs: number): string {
  const ms = secs * 1000;
  if (Number.isSafeInteger(ms) && Math.abs(ms) <= 8.64e15) {
    const date = new Date(ms);
    const year = date.getUTCFullYear();
    if (year >= 0 && year <= 9999) return `${date.toISOString().slice(0, 19)}Z`;
  }
  return String(secs);
}

/**
 * One `catalog dump` line: `<type> "./<path>"`, and for files ` <size> <mtime>`, e.g.
 * `f "./root.pxar.didx/etc/hosts" 220 2024-01-02T03:04:05Z`.
 */
export function formatCatalogDumpLine(path: Uint8Array, entry: CatalogEntry): string {
  const quoted = quoteCatalogPath(concatBytes(Uint8Array.of(DOT, SLASH), path));
  if (entry.type === 'f') {
    return `f ${quoted} ${entry.size ?? 0} ${formatCatalogMtime(entry.mtime ?? 0)}`;
  }
  return `${entry.type} ${quoted}`;
}
