/**
 * Random access to a pxar archive through its goodbye tables (pxar-format.md §7.5): open the root
 * from the archive's last 24 bytes, look names up by hash in each directory's table, list a
 * directory's children, read file contents (inline for v1, from the payload stream for v2) and
 * resolve hardlinks.
 *
 * Nothing in a table is trusted. A directory's tail must point back at its own ENTRY and carry the
 * size of its GOODBYE item; child offsets must land inside the directory after its metadata;
 * every subdirectory must lie strictly inside its parent, so walking down always shrinks the range
 * and cannot loop; the table must be a search tree so that a lookup cannot silently miss; and when
 * a directory is listed its children must exactly fill the space between its metadata and its
 * GOODBYE. Entries are decoded with the same item parsers as the streaming decoder, bounded by the
 * goodbye sizes, which are only upper bounds for non-directories (§7.4).
 */
import { BurrowError } from '../lib/errors.js';
import {
  GOODBYE_ITEM_SIZE,
  PXAR,
  fileNameProblem,
  itemTypeName,
  joinPath,
  kindOfMode,
  nameBytes,
  printableName,
  pxarHash,
  splitPath,
  type Entry,
  type EntryKind,
  type FileKind,
  type Metadata,
  type RandomAccess,
} from './format.js';
import {
  CONTENT_PIECE_SIZE,
  MetadataCollector,
  bodyItemOf,
  checkPayloadHeader,
  checkPayloadStart,
  decodeHeader,
  isAttributeType,
  isEntryType,
  parseDevice,
  parseFileName,
  parseHardlink,
  parsePayloadRef,
  parseStat,
  parseSymlink,
  pxarError,
  readPayloadRange,
  relativePathProblem,
  type ItemHeader,
} from './decoder.js';

export interface AccessorEntry extends Entry {
  /** End of the entry's encoding: for directories the end of its GOODBYE. */
  readonly entryEnd: number;
}

export interface AccessorOptions {
  /** The v2 payload stream (.ppxar); needed only to read file contents of split archives. */
  payload?: RandomAccess;
  /** Names the archive in error messages. */
  name?: string;
}

/** Bytes read ahead around metadata reads, so that one entry usually costs one readAt. */
const READ_WINDOW = 64 * 1024;
/** Goodbye tables kept parsed, counted in items. */
const TABLE_CACHE_ITEMS = 1 << 20;
const DIR_CACHE_ENTRIES = 4096;
const EMPTY = new Uint8Array(0);

interface DirInfo {
  /** Position of the directory's ENTRY header. */
  readonly entryPos: number;
  /** End of its metadata: where the first child (or the GOODBYE) starts. */
  readonly attrsEnd: number;
  readonly goodbyeStart: number;
  readonly end: number;
  readonly count: number;
}

/** A parsed goodbye table; hashes split into 32-bit halves to compare without BigInt. */
interface GoodbyeTable {
  readonly count: number;
  readonly hi: Uint32Array;
  readonly lo: Uint32Array;
  /** Absolute FILENAME positions. */
  readonly starts: Float64Array;
  readonly sizes: Float64Array;
}

function compareHash(aHi: number, aLo: number, bHi: number, bLo: number): number {
  if (aHi !== bHi) return aHi < bHi ? -1 : 1;
  if (aLo !== bLo) return aLo < bLo ? -1 : 1;
  return 0;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export class PxarAccessor {
  readonly #archive: RandomAccess;
  readonly #payload: RandomAccess | undefined;
  readonly #source: string | undefined;
  #version: 1 | 2 = 1;
  #root!: AccessorEntry;
  #rootInfo!: DirInfo;
  #firstChildPosition = 0;
  #window: Uint8Array = EMPTY;
  #windowStart = 0;
  readonly #tables = new Map<number, GoodbyeTable>();
  #tableItems = 0;
  readonly #dirs = new Map<number, DirInfo>();

  private constructor(archive: RandomAccess, options: AccessorOptions) {
    this.#archive = archive;
    this.#payload = options.payload;
    this.#source = options.name;
  }

  static async open(archive: RandomAccess, options: AccessorOptions = {}): Promise<PxarAccessor> {
    const accessor = new PxarAccessor(archive, options);
    await accessor.#init();
    return accessor;
  }

  formatVersion(): 1 | 2 {
    return this.#version;
  }

  root(): AccessorEntry {
    return this.#root;
  }

  /** '/'-separated path relative to the root; '' or '/' is the root. Follows goodbye tables only. */
  async lookup(path: Uint8Array | string): Promise<AccessorEntry | undefined> {
    let current = this.#root;
    for (const component of splitPath(nameBytes(path))) {
      if (current.body.kind !== 'directory') return undefined;
      if (fileNameProblem(component) !== undefined) return undefined;
      const found = await this.#find(current, component);
      if (found === undefined) return undefined;
      current = found;
    }
    return current;
  }

  /** The children of `dir` in archive order. */
  async readDirectory(dir: AccessorEntry): Promise<AccessorEntry[]> {
    if (dir.body.kind !== 'directory')
      throw new BurrowError('INVALID_ARGUMENT', `${printableName(dir.path)} is not a directory`);
    const info = await this.#dirInfo(dir);
    const table = await this.#table(info);
    const order = Array.from({ length: table.count }, (_, i) => i).sort(
      (a, b) => table.starts[a]! - table.starts[b]!,
    );
    const children: AccessorEntry[] = [];
    const seen = new Map<string, Uint8Array[]>();
    let expected = info.attrsEnd;
    for (const i of order) {
      const start = table.starts[i]!;
      if (start !== expected)
        throw this.#goodbyeError(
          info,
          i,
          start < expected
            ? `points at byte ${start}, inside the previous child (which ends at ${expected})`
            : `points at byte ${start}, leaving a gap after byte ${expected}`,
        );
      const entry = await this.#decodeChild(
        dir.path,
        start,
        info.goodbyeStart,
        start + table.sizes[i]!,
        [table.hi[i]!, table.lo[i]!],
      );
      const key = `${table.hi[i]}:${table.lo[i]}`;
      const same = seen.get(key);
      if (same?.some((n) => Buffer.compare(n, entry.name) === 0))
        throw pxarError(
          'PXAR_BAD_NAME',
          this.#source,
          start,
          `duplicate name ${printableName(entry.name)} in directory ${printableName(dir.path)}`,
        );
      if (same === undefined) seen.set(key, [entry.name]);
      else same.push(entry.name);
      children.push(entry);
      expected = entry.entryEnd;
    }
    if (expected !== info.goodbyeStart)
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        this.#source,
        expected,
        `the children of directory ${printableName(dir.path)} end at byte ${expected}, but its GOODBYE starts at ${info.goodbyeStart}`,
        { expected: info.goodbyeStart, actual: expected },
      );
    return children;
  }

  /** File content (v1 inline, v2 from the payload stream), in pieces of at most 1 MiB. */
  readFile(file: AccessorEntry, offset = 0, length?: number): AsyncIterable<Uint8Array> {
    return this.#readFile(file, offset, length);
  }

  async *#readFile(
    file: AccessorEntry,
    offset: number,
    length: number | undefined,
  ): AsyncGenerator<Uint8Array> {
    const body = file.body;
    if (body.kind === 'hardlink')
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${printableName(file.path)} is a hardlink: resolve it first`,
      );
    if (body.kind !== 'file')
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${printableName(file.path)} is not a regular file`,
      );
    if (!Number.isSafeInteger(offset) || offset < 0)
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `read offset ${offset} is not a non-negative integer`,
      );
    if (length !== undefined && (!Number.isSafeInteger(length) || length < 0))
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `read length ${length} is not a non-negative integer`,
      );
    const start = Math.min(offset, body.size);
    const count = Math.min(length ?? body.size, body.size - start);
    if (this.#version === 2) {
      const payload = this.#payload;
      if (payload === undefined)
        throw new BurrowError(
          'PXAR_PAYLOAD_REQUIRED',
          `${this.#source ?? 'pxar archive'}: ${printableName(file.path)} is in the payload stream (.ppxar), which was not given`,
          { details: { path: printableName(file.path) } },
        );
      await checkPayloadHeader(
        payload,
        body.payloadOffset,
        body.size,
        this.#source,
        file.fileNameOffset,
      );
      yield* readPayloadRange(
        payload,
        body.payloadOffset + 16 + start,
        count,
        this.#source,
        file.fileNameOffset,
      );
      return;
    }
    const h = await this.#header(body.payloadOffset, this.#archive.size);
    if (h.type !== PXAR.PAYLOAD || h.contentSize !== body.size)
      throw pxarError(
        'PXAR_BAD_ITEM',
        this.#source,
        body.payloadOffset,
        `expected a PAYLOAD of ${body.size} bytes for ${printableName(file.path)}, found ${itemTypeName(h.type)} of ${h.contentSize}`,
      );
    if (h.end > this.#archive.size)
      throw this.#truncated(this.#archive.size, `${body.size} bytes of file data`);
    let pos = h.position + 16 + start;
    const end = pos + count;
    while (pos < end) {
      const want = Math.min(CONTENT_PIECE_SIZE, end - pos);
      const piece = await this.#archive.readAt(pos, want);
      if (piece.length < want)
        throw this.#truncated(
          pos + piece.length,
          `${end - pos - piece.length} more bytes of file data`,
        );
      pos += want;
      yield piece;
    }
  }

  /** The regular file a hardlink refers to; its offset and its path must agree (§8). */
  async resolveHardlink(link: AccessorEntry): Promise<AccessorEntry> {
    const body = link.body;
    if (body.kind !== 'hardlink')
      throw new BurrowError('INVALID_ARGUMENT', `${printableName(link.path)} is not a hardlink`);
    const targetPosition = link.fileNameOffset - body.offset;
    const fail = (message: string): BurrowError =>
      pxarError(
        'PXAR_BAD_HARDLINK',
        this.#source,
        link.fileNameOffset,
        `hardlink ${printableName(link.path)}: ${message}`,
        {
          target: printableName(body.target),
          targetOffset: targetPosition,
        },
      );
    if (!(body.offset > 0) || targetPosition < this.#firstChildPosition)
      throw fail(`offset ${body.offset} does not point backwards into the archive`);
    const problem = relativePathProblem(body.target);
    if (problem !== undefined)
      throw fail(`target ${printableName(body.target)} is not a relative archive path: ${problem}`);
    const target = await this.lookup(body.target);
    if (target === undefined) throw fail(`target ${printableName(body.target)} does not exist`);
    if (target.fileNameOffset !== targetPosition)
      throw fail(
        `target ${printableName(body.target)} has its FILENAME at byte ${target.fileNameOffset}, but the link offset points at byte ${targetPosition}`,
      );
    if (target.body.kind !== 'file')
      throw fail(
        `target ${printableName(body.target)} is a ${target.body.kind}, not a regular file`,
      );
    return target;
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  #truncated(offset: number, expected: string): BurrowError {
    return pxarError(
      'PXAR_TRUNCATED',
      this.#source,
      offset,
      `archive ends at byte ${this.#archive.size}: expected ${expected}`,
      {
        expected,
        archiveSize: this.#archive.size,
      },
    );
  }

  /** `length` bytes at `pos` (a view); reads ahead up to `hint` to serve the next few reads. */
  async #bytes(pos: number, length: number, hint: number): Promise<Uint8Array> {
    if (pos >= this.#windowStart && pos + length <= this.#windowStart + this.#window.length)
      return this.#window.subarray(pos - this.#windowStart, pos - this.#windowStart + length);
    const size = this.#archive.size;
    if (pos + length > size) throw this.#truncated(pos, `${length} bytes at byte ${pos}`);
    const want = Math.max(length, Math.min(READ_WINDOW, Math.min(hint, size) - pos));
    const data = await this.#archive.readAt(pos, want);
    if (data.length < length)
      throw this.#truncated(pos + data.length, `${length} bytes at byte ${pos}`);
    this.#window = data;
    this.#windowStart = pos;
    return data.subarray(0, length);
  }

  /** `length` bytes at `pos` if the read window holds them (no read, no promise), else undefined. */
  #held(pos: number, length: number): Uint8Array | undefined {
    const from = pos - this.#windowStart;
    if (from < 0 || from + length > this.#window.length) return undefined;
    return this.#window.subarray(from, from + length);
  }

  /** The content of item `h` if the read window holds it, else undefined. */
  #heldContent(h: ItemHeader): Uint8Array | undefined {
    return this.#held(h.position + 16, h.contentSize);
  }

  /**
   * The item header at `pos` when the read window holds it and the item ends by `bound`; else
   * undefined, and #header (which reads, and throws the errors) must be asked. Listing a
   * directory decodes a few items per child: with these, a child inside the window costs no
   * promise at all.
   */
  #heldHeader(pos: number, bound: number): ItemHeader | undefined {
    if (pos + 16 > bound) return undefined;
    const bytes = this.#held(pos, 16);
    if (bytes === undefined) return undefined;
    const h = decodeHeader(bytes, pos, this.#source);
    return h.end > bound ? undefined : h;
  }

  /**
   * The item header at `pos`; the whole item must end by `bound` (a goodbye-derived limit).
   * `hint`: how far reading ahead may serve later reads (default `bound`).
   */
  async #header(pos: number, bound: number, hint = bound): Promise<ItemHeader> {
    if (pos + 16 > bound) {
      if (pos + 16 > this.#archive.size) throw this.#truncated(pos, 'an item header');
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        this.#source,
        pos,
        `an item would start at byte ${pos}, past the end (${bound}) given by the goodbye table`,
        {
          bound,
        },
      );
    }
    const h = decodeHeader(await this.#bytes(pos, 16, hint), pos, this.#source);
    if (h.end > bound) {
      if (h.end > this.#archive.size)
        throw this.#truncated(
          pos,
          `the ${h.contentSize} content bytes of a ${itemTypeName(h.type)} item`,
        );
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        this.#source,
        pos,
        `${itemTypeName(h.type)} item ends at byte ${h.end}, past the end (${bound}) given by the goodbye table`,
        { bound, itemEnd: h.end },
      );
    }
    return h;
  }

  async #content(h: ItemHeader, hint: number): Promise<Uint8Array> {
    return this.#bytes(h.position + 16, h.contentSize, hint);
  }

  #goodbyeError(info: DirInfo, slot: number, message: string): BurrowError {
    const at = info.goodbyeStart + 16 + slot * GOODBYE_ITEM_SIZE;
    return pxarError('PXAR_BAD_GOODBYE', this.#source, at, `goodbye item ${slot} ${message}`, {
      slot,
    });
  }

  async #init(): Promise<void> {
    const size = this.#archive.size;
    let h = await this.#header(0, size);
    if (h.type === PXAR.FORMAT_VERSION) {
      if (h.contentSize !== 8)
        throw pxarError(
          'PXAR_BAD_ITEM',
          this.#source,
          0,
          `FORMAT_VERSION has ${h.contentSize} content bytes, expected 8`,
        );
      const version = view(await this.#content(h, size)).getBigUint64(0, true);
      if (version !== 1n && version !== 2n)
        throw pxarError('PXAR_BAD_ITEM', this.#source, 0, `unsupported format version ${version}`);
      this.#version = version === 2n ? 2 : 1;
      h = await this.#header(h.end, size);
      if (h.type === PXAR.PRELUDE) h = await this.#header(h.end, size);
    }
    if (this.#version === 2 && this.#payload !== undefined)
      await checkPayloadStart(this.#payload, this.#source);
    if (!isEntryType(h.type))
      throw pxarError(
        'PXAR_BAD_ITEM',
        this.#source,
        h.position,
        `${itemTypeName(h.type)} item where the root directory's ENTRY was expected`,
      );
    // The root's tail points at byte 0 even when FORMAT_VERSION/PRELUDE precede its ENTRY (§7.3).
    const { info, metadata } = await this.#openDirectory(h, size, 0, size);
    this.#rootInfo = info;
    this.#firstChildPosition = info.attrsEnd;
    this.#root = {
      path: EMPTY,
      name: EMPTY,
      body: { kind: 'directory' },
      metadata,
      fileNameOffset: 0,
      entryEnd: size,
    };
  }

  /**
   * Checks the directory whose ENTRY header is `entry` and whose encoding ends at `end` (§7.5):
   * the tail, the GOODBYE header, and its metadata up to the first child.
   */
  async #openDirectory(
    entry: ItemHeader,
    end: number,
    tailTarget: number,
    limit: number,
  ): Promise<{ info: DirInfo; metadata: Metadata }> {
    const source = this.#source;
    if (end > limit || end - 24 < entry.end)
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        entry.position,
        `directory range ending at byte ${end} cannot hold its metadata and goodbye table`,
        {
          end,
          limit,
        },
      );
    const tailAt = end - 24;
    const tail = view(await this.#bytes(tailAt, 24, end));
    const hash = tail.getBigUint64(0, true);
    const offset = tail.getBigUint64(8, true);
    const tailSize = tail.getBigUint64(16, true);
    if (hash !== PXAR.GOODBYE_TAIL_MARKER)
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        tailAt,
        `no goodbye tail marker at the end of the directory (found 0x${hash.toString(16)})`,
      );
    if (tailSize < 16n + 24n || (tailSize - 16n) % 24n !== 0n || tailSize > BigInt(end - entry.end))
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        tailAt,
        `goodbye tail gives an impossible table size ${tailSize}`,
        {
          size: tailSize.toString(),
        },
      );
    const goodbyeStart = end - Number(tailSize);
    if (offset !== BigInt(goodbyeStart - tailTarget))
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        tailAt,
        `goodbye tail offset ${offset} does not lead back to the directory's start (expected ${goodbyeStart - tailTarget})`,
        { expected: goodbyeStart - tailTarget, actual: offset.toString() },
      );
    const gb = await this.#header(goodbyeStart, end);
    if (gb.type !== PXAR.GOODBYE || gb.end !== end)
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        goodbyeStart,
        `expected a GOODBYE item of ${tailSize} bytes, found ${itemTypeName(gb.type)} of ${gb.fullSize}`,
      );

    const stat = parseStat(entry, await this.#content(entry, goodbyeStart), source);
    if (kindOfMode(stat.mode) !== 'directory')
      throw pxarError(
        'PXAR_BAD_ITEM',
        source,
        entry.position,
        `mode 0o${stat.mode.toString(8)} is not a directory, but the entry has a goodbye table`,
      );
    const collector = new MetadataCollector(source);
    let pos = entry.end;
    while (pos < goodbyeStart) {
      const h = await this.#header(pos, goodbyeStart);
      if (!isAttributeType(h.type)) {
        if (h.type !== PXAR.FILENAME)
          throw pxarError(
            'PXAR_BAD_ITEM',
            source,
            pos,
            `${itemTypeName(h.type)} item after a directory's metadata`,
          );
        break;
      }
      collector.add(h, await this.#content(h, goodbyeStart));
      pos = h.end;
    }
    const info: DirInfo = {
      entryPos: entry.position,
      attrsEnd: pos,
      goodbyeStart,
      end,
      count: Number(tailSize - 16n) / 24 - 1,
    };
    return { info, metadata: collector.finish(stat) };
  }

  async #dirInfo(dir: AccessorEntry): Promise<DirInfo> {
    if (dir.fileNameOffset === 0 && dir.path.length === 0) return this.#rootInfo;
    const cached = this.#dirs.get(dir.fileNameOffset);
    if (cached !== undefined && cached.end === dir.entryEnd) return cached;
    // An entry we did not hand out (or forgot): decode it again, which re-checks everything.
    await this.#decodeChild(EMPTY, dir.fileNameOffset, dir.entryEnd, dir.entryEnd);
    const info = this.#dirs.get(dir.fileNameOffset);
    if (info === undefined || info.end !== dir.entryEnd)
      throw new BurrowError(
        'INVALID_ARGUMENT',
        `${printableName(dir.path)} is not a directory of this archive`,
      );
    return info;
  }

  /** Reads and checks the goodbye table of a directory: positions inside it, search-tree order. */
  async #table(info: DirInfo): Promise<GoodbyeTable> {
    const cached = this.#tables.get(info.goodbyeStart);
    if (cached !== undefined) return cached;
    const count = info.count;
    const raw =
      count === 0
        ? EMPTY
        : await this.#bytes(info.goodbyeStart + 16, count * GOODBYE_ITEM_SIZE, info.end);
    const v = view(raw);
    const table: GoodbyeTable = {
      count,
      hi: new Uint32Array(count),
      lo: new Uint32Array(count),
      starts: new Float64Array(count),
      sizes: new Float64Array(count),
    };
    for (let i = 0; i < count; i++) {
      const at = i * GOODBYE_ITEM_SIZE;
      table.lo[i] = v.getUint32(at, true);
      table.hi[i] = v.getUint32(at + 4, true);
      const offset = v.getBigUint64(at + 8, true);
      const size = v.getBigUint64(at + 16, true);
      // A child starts after the directory's metadata and leaves room for a FILENAME before the GOODBYE.
      if (offset < 16n + 18n || offset > BigInt(info.goodbyeStart - info.attrsEnd))
        throw this.#goodbyeError(
          info,
          i,
          `has offset ${offset}, outside the directory's children (bytes ${info.attrsEnd}..${info.goodbyeStart})`,
        );
      if (size < 18n || size > BigInt(Number.MAX_SAFE_INTEGER))
        throw this.#goodbyeError(info, i, `has an impossible size ${size}`);
      table.starts[i] = info.goodbyeStart - Number(offset);
      table.sizes[i] = Number(size);
    }
    // In-order traversal of the implicit tree must give non-decreasing hashes, or a lookup could
    // walk past an entry that exists.
    let prevHi = 0;
    let prevLo = 0;
    const stack: number[] = [];
    let node = 0;
    while (stack.length > 0 || node < count) {
      if (node < count) {
        stack.push(node);
        node = 2 * node + 1;
        continue;
      }
      const i = stack.pop()!;
      if (compareHash(table.hi[i]!, table.lo[i]!, prevHi, prevLo) < 0)
        throw this.#goodbyeError(info, i, 'breaks the search-tree order of the goodbye table');
      prevHi = table.hi[i]!;
      prevLo = table.lo[i]!;
      node = 2 * i + 2;
    }
    if (this.#tableItems + count > TABLE_CACHE_ITEMS) {
      this.#tables.clear();
      this.#tableItems = 0;
    }
    if (count <= TABLE_CACHE_ITEMS) {
      this.#tables.set(info.goodbyeStart, table);
      this.#tableItems += count;
    }
    return table;
  }

  /** Finds `name` in directory `dir` by hash (§7.5), checking candidates' names for collisions. */
  async #find(dir: AccessorEntry, name: Uint8Array): Promise<AccessorEntry | undefined> {
    const info = await this.#dirInfo(dir);
    const table = await this.#table(info);
    const hash = pxarHash(name);
    const hi = Number(hash >> 32n);
    const lo = Number(hash & 0xffffffffn);
    const pending = [0];
    while (pending.length > 0) {
      const i = pending.pop()!;
      if (i >= table.count) continue;
      const c = compareHash(hi, lo, table.hi[i]!, table.lo[i]!);
      if (c < 0) pending.push(2 * i + 1);
      else if (c > 0) pending.push(2 * i + 2);
      else {
        const start = table.starts[i]!;
        const fn = await this.#header(start, info.goodbyeStart);
        if (fn.type !== PXAR.FILENAME)
          throw this.#goodbyeError(
            info,
            i,
            `points at a ${itemTypeName(fn.type)} item at byte ${start}, not a FILENAME`,
          );
        const candidate = parseFileName(
          fn,
          await this.#content(fn, info.goodbyeStart),
          this.#source,
        );
        if (Buffer.compare(candidate, name) === 0)
          return this.#decodeChild(dir.path, start, info.goodbyeStart, start + table.sizes[i]!, [
            hi,
            lo,
          ]);
        if (pxarHash(candidate) !== hash)
          throw this.#goodbyeError(
            info,
            i,
            `has the hash of ${printableName(name)} but leads to ${printableName(candidate)}`,
          );
        pending.push(2 * i + 1, 2 * i + 2);
      }
    }
    return undefined;
  }

  /**
   * Decodes the child whose FILENAME is at `start`. Its items must end by `limit` (the parent's
   * GOODBYE) and by `sizeBound` (start + goodbye size); a directory must end exactly at `sizeBound`.
   */
  async #decodeChild(
    parentPath: Uint8Array,
    start: number,
    limit: number,
    sizeBound: number,
    expectedHash?: readonly [number, number],
  ): Promise<AccessorEntry> {
    const source = this.#source;
    const bound = Math.min(limit, sizeBound);
    const fn = this.#heldHeader(start, bound) ?? (await this.#header(start, bound, limit));
    if (fn.type !== PXAR.FILENAME)
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        start,
        `goodbye table points at a ${itemTypeName(fn.type)} item, not a FILENAME`,
      );
    const name = parseFileName(
      fn,
      this.#heldContent(fn) ?? (await this.#content(fn, limit)),
      source,
    );
    if (expectedHash !== undefined) {
      const hash = pxarHash(name);
      if (Number(hash >> 32n) !== expectedHash[0] || Number(hash & 0xffffffffn) !== expectedHash[1])
        throw pxarError(
          'PXAR_BAD_GOODBYE',
          source,
          start,
          `goodbye hash does not match the name ${printableName(name)}`,
        );
    }
    const path = joinPath(parentPath, name);
    const make = (body: EntryKind, entryEnd: number, metadata?: Metadata): AccessorEntry => ({
      path,
      name,
      body,
      ...(metadata === undefined ? {} : { metadata }),
      fileNameOffset: start,
      entryEnd,
    });

    const h = this.#heldHeader(fn.end, bound) ?? (await this.#header(fn.end, bound, limit));
    if (h.type === PXAR.HARDLINK) {
      const link = parseHardlink(
        h,
        this.#heldContent(h) ?? (await this.#content(h, limit)),
        start,
        this.#firstChildPosition,
        source,
      );
      return make({ kind: 'hardlink', target: link.target, offset: link.offset }, h.end);
    }
    if (!isEntryType(h.type))
      throw pxarError(
        'PXAR_BAD_ITEM',
        source,
        h.position,
        `${itemTypeName(h.type)} item after FILENAME ${printableName(name)}; expected ENTRY or HARDLINK`,
      );
    const stat = parseStat(h, this.#heldContent(h) ?? (await this.#content(h, limit)), source);
    const kind = kindOfMode(stat.mode) as FileKind;

    if (kind === 'directory') {
      if (sizeBound > limit)
        throw pxarError(
          'PXAR_BAD_GOODBYE',
          source,
          start,
          `directory ${printableName(path)} would end at byte ${sizeBound}, past its parent's GOODBYE at ${limit}`,
        );
      const { info, metadata } = await this.#openDirectory(h, sizeBound, h.position, limit);
      if (this.#dirs.size >= DIR_CACHE_ENTRIES) this.#dirs.clear();
      this.#dirs.set(start, info);
      return make({ kind: 'directory' }, sizeBound, metadata);
    }

    const collector = new MetadataCollector(source);
    let pos = h.end;
    let next: ItemHeader | undefined;
    while (pos < bound) {
      // Read against the parent's limit: a FILENAME/GOODBYE after a FIFO's metadata belongs to
      // the parent and may lie beyond a (legitimately generous) goodbye size. The entry's own
      // items must end within the size.
      const item = this.#heldHeader(pos, limit) ?? (await this.#header(pos, limit));
      if (item.type === PXAR.FILENAME || item.type === PXAR.GOODBYE) {
        next = item;
        break;
      }
      if (item.end > bound) await this.#header(pos, bound); // throws the goodbye-size error
      if (!isAttributeType(item.type)) {
        next = item;
        break;
      }
      collector.add(item, this.#heldContent(item) ?? (await this.#content(item, limit)));
      pos = item.end;
    }
    const metadata = collector.finish(stat);
    if (kind === 'fifo' || kind === 'socket') {
      if (next !== undefined && next.type !== PXAR.FILENAME && next.type !== PXAR.GOODBYE)
        throw pxarError(
          'PXAR_BAD_ITEM',
          source,
          next.position,
          `${itemTypeName(next.type)} item follows the metadata of ${kind} ${printableName(path)}`,
        );
      return make({ kind }, pos, metadata);
    }
    const expected = bodyItemOf(kind, this.#version);
    if (next === undefined)
      throw pxarError(
        'PXAR_BAD_GOODBYE',
        source,
        pos,
        `goodbye size of ${printableName(path)} ends it before its ${expected} item`,
      );
    const body = next;
    const mismatch = (): BurrowError =>
      pxarError(
        'PXAR_BAD_ITEM',
        source,
        body.position,
        `${itemTypeName(body.type)} item follows the metadata of ${printableName(path)}, whose mode says ${kind} (expected ${expected})`,
      );
    switch (kind) {
      case 'file': {
        if (body.type === PXAR.PAYLOAD && this.#version === 1)
          return make(
            { kind: 'file', size: body.contentSize, payloadOffset: body.position },
            body.end,
            metadata,
          );
        if (body.type === PXAR.PAYLOAD_REF && this.#version === 2) {
          const ref = parsePayloadRef(
            body,
            this.#heldContent(body) ?? (await this.#content(body, limit)),
            source,
          );
          return make(
            { kind: 'file', size: ref.size, payloadOffset: ref.offset },
            body.end,
            metadata,
          );
        }
        throw mismatch();
      }
      case 'symlink':
        if (body.type !== PXAR.SYMLINK) throw mismatch();
        return make(
          {
            kind: 'symlink',
            target: parseSymlink(
              body,
              this.#heldContent(body) ?? (await this.#content(body, limit)),
              source,
            ),
          },
          body.end,
          metadata,
        );
      case 'block-device':
      case 'char-device': {
        if (body.type !== PXAR.DEVICE) throw mismatch();
        const dev = parseDevice(
          body,
          this.#heldContent(body) ?? (await this.#content(body, limit)),
          source,
        );
        return make({ kind, major: dev.major, minor: dev.minor }, body.end, metadata);
      }
    }
  }
}
