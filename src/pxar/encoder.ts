/**
 * The pxar encoder (pxar-format.md §4–§9): turns a depth-first sequence of calls (enter a
 * directory, add a file, leave, ...) into a pxar byte stream, written to a sink as it goes.
 *
 * - v1 (unified) without `payloadOutput`: file contents are inline PAYLOAD items.
 * - v2 (split) with `payloadOutput`: the archive (.mpxar) starts with FORMAT_VERSION 2 and an
 *   optional PRELUDE, files become PAYLOAD_REF items, and contents go to the payload stream
 *   (.ppxar) between a START and a TAIL marker. Files whose payload the caller reuses from an
 *   older stream are added with `addPayloadRef` and accounted with `advancePayloadPosition`.
 *
 * Memory stays O(depth + children of the open directories): per open directory only the goodbye
 * items (hash, FILENAME position, size) and the names of its children are kept. The encoder does
 * not sort; callers add children in the order they want them (PBS sorts by raw name bytes).
 *
 * Sinks: bytes handed to a sink are never modified afterwards, but file content pieces are passed
 * through as they are, so a content source that reuses its buffers needs a sink that consumes or
 * copies each piece before its write() settles. Small items are coalesced into larger writes, so
 * the archive sink lags behind position() until the buffer fills or finish() runs. The payload
 * sink has received every byte of a call when the call settles, which lets a caller inject reused
 * chunks into the same downstream stream right after it.
 */
import { BurrowError } from '../lib/errors.js';
import {
  ACL_NO_MASK,
  GOODBYE_ITEM_SIZE,
  ITEM_HEADER_SIZE,
  MAX_CONTENT_SIZE,
  MAX_NAME_LENGTH,
  MAX_XATTR_NAME_LENGTH,
  PXAR,
  S_IFMT,
  checkFileName,
  fileNameProblem,
  goodbyeTreeOrder,
  joinPath,
  kindOfMode,
  printableName,
  pxarHash,
} from './format.js';
import type { AclEntry, ByteSink, FileKind, Metadata } from './format.js';

export interface EncoderOptions {
  /** The archive (.pxar for v1, .mpxar for v2). */
  output: ByteSink;
  /** Given => split v2 archive: FORMAT_VERSION 2 (+ PRELUDE), PAYLOAD_REF items, payload stream with START/TAIL markers. */
  payloadOutput?: ByteSink;
  /** v2 only; written right after FORMAT_VERSION when given (may be empty). */
  prelude?: Uint8Array;
  /** Called with the payload-stream offset of each PAYLOAD header just before it is written (v2) — the chunker's suggested boundaries. */
  onPayloadHeader?: (payloadOffset: number) => void;
}

/** Small items are gathered into buffers of this size before they go to a sink. */
const WRITE_BUFFER_SIZE = 256 * 1024;
/** Pieces at least this large go to the sink as they are instead of being copied. */
const DIRECT_WRITE_MIN = 64 * 1024;
const TWO_POW_32 = 0x1_0000_0000;
const EMPTY = new Uint8Array(0);
/** ENTRY content: mode u64, flags u64, uid u32, gid u32, mtime secs i64, nanos u32, pad u32. */
const ENTRY_CONTENT_SIZE = 40;
const XATTR_MAX_CONTENT = MAX_CONTENT_SIZE.get(PXAR.XATTR) ?? 0;
const FCAPS_MAX_CONTENT = MAX_CONTENT_SIZE.get(PXAR.FCAPS) ?? 0;

/**
 * A sequential writer that counts what it is given and passes it to a sink in large pieces.
 * Appending is synchronous (the hot path for small items); `drain()` awaits the sink, and the
 * encoder calls it at the end of every operation so that backpressure reaches the caller.
 */
class ItemWriter {
  /** Bytes appended (or accounted for) so far. */
  position = 0;
  #buf: Uint8Array = EMPTY;
  #view: DataView = new DataView(new ArrayBuffer(0));
  #fill = 0;
  /** Bytes of #buf already queued for the sink; they are never written again. */
  #sealed = 0;
  /** Sealed buffers and pass-through pieces waiting for the sink, in order. */
  #pending: Uint8Array[] = [];
  readonly #sink: ByteSink;
  /** What the sink receives, for error messages. */
  readonly #label: string;

  constructor(sink: ByteSink, label: string) {
    this.#sink = sink;
    this.#label = label;
  }

  /**
   * Reserves `n` bytes in the current buffer and returns where they start. A sealed part of the
   * buffer is never written again (the sink may still hold it), but the rest of the buffer is
   * used on: a split archive seals its payload writer after every file, and a fresh 256 KiB buffer
   * per file cost more allocation and garbage collection than everything else per file.
   */
  #room(n: number): number {
    if (this.#fill + n > this.#buf.length) {
      this.seal();
      this.#buf = new Uint8Array(Math.max(n, WRITE_BUFFER_SIZE));
      this.#view = new DataView(this.#buf.buffer);
      this.#fill = 0;
      this.#sealed = 0;
    }
    const at = this.#fill;
    this.#fill += n;
    this.position += n;
    return at;
  }

  /** Queues the filled part of the current buffer for the sink. */
  seal(): void {
    if (this.#fill === this.#sealed) return;
    this.#pending.push(this.#buf.subarray(this.#sealed, this.#fill));
    this.#sealed = this.#fill;
  }

  get hasPending(): boolean {
    return this.#pending.length > 0;
  }

  /** Hands every queued piece to the sink, in order, awaiting each. */
  async drain(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    for (const piece of pending) {
      try {
        await this.#sink.write(piece);
      } catch (error) {
        throw asBurrowError(error, `writing the ${this.#label} failed`, {
          offset: this.position,
        });
      }
    }
  }

  async flush(): Promise<void> {
    this.seal();
    await this.drain();
  }

  /** Counts bytes that reach the stream without passing through this writer. */
  skip(length: number): void {
    this.position += length;
  }

  bytes(data: Uint8Array): void {
    if (data.length === 0) return;
    if (data.length >= DIRECT_WRITE_MIN) {
      this.seal();
      this.#pending.push(data);
      this.position += data.length;
      return;
    }
    // #room may switch buffers, so it must run before this.#buf is read.
    const at = this.#room(data.length);
    copyInto(this.#buf, data, at);
  }

  header(type: bigint, contentSize: number): void {
    const at = this.#room(ITEM_HEADER_SIZE);
    this.#view.setBigUint64(at, type, true);
    this.#setU64(at + 8, ITEM_HEADER_SIZE + contentSize);
  }

  /** A whole item whose content is a sequence of u64 values. */
  u64Item(type: bigint, values: readonly number[]): void {
    this.header(type, 8 * values.length);
    const at = this.#room(8 * values.length);
    for (let i = 0; i < values.length; i++) this.#setU64(at + 8 * i, values[i]!);
  }

  /** A whole item whose content is `data` followed by one NUL byte. */
  zeroTerminatedItem(type: bigint, data: Uint8Array, prefix?: number): void {
    const prefixSize = prefix === undefined ? 0 : 8;
    const contentSize = prefixSize + data.length + 1;
    this.header(type, contentSize);
    const at = this.#room(contentSize);
    if (prefix !== undefined) this.#setU64(at, prefix);
    copyInto(this.#buf, data, at + prefixSize);
    this.#buf[at + contentSize - 1] = 0;
  }

  entry(metadata: Metadata): void {
    const { stat } = metadata;
    this.header(PXAR.ENTRY, ENTRY_CONTENT_SIZE);
    const at = this.#room(ENTRY_CONTENT_SIZE);
    const view = this.#view;
    this.#setU64(at, stat.mode);
    this.#setU64(at + 8, stat.flags);
    view.setUint32(at + 16, stat.uid, true);
    view.setUint32(at + 20, stat.gid, true);
    view.setBigInt64(at + 24, BigInt(stat.mtime.secs), true);
    view.setUint32(at + 32, stat.mtime.nanos, true);
    view.setUint32(at + 36, 0, true);
  }

  xattr(name: Uint8Array, value: Uint8Array): void {
    const contentSize = name.length + 1 + value.length;
    this.header(PXAR.XATTR, contentSize);
    const at = this.#room(contentSize);
    copyInto(this.#buf, name, at);
    this.#buf[at + name.length] = 0;
    copyInto(this.#buf, value, at + name.length + 1);
  }

  /** One ACL_USER/ACL_GROUP/ACL_DEFAULT_USER/ACL_DEFAULT_GROUP item per entry: id, permissions. */
  aclEntries(type: bigint, entries: readonly AclEntry[]): void {
    for (const e of entries) {
      this.header(type, 16);
      const at = this.#room(16);
      this.#setU64(at, e.id);
      this.#setU64(at + 8, e.permissions);
    }
  }

  aclDefault(values: readonly (number | undefined)[]): void {
    this.header(PXAR.ACL_DEFAULT, 32);
    const at = this.#room(32);
    values.forEach((value, i) => {
      if (value === undefined) this.#view.setBigUint64(at + 8 * i, ACL_NO_MASK, true);
      else this.#setU64(at + 8 * i, value);
    });
  }

  /** The GOODBYE item: `items` already in tree order, then the tail. */
  goodbye(hashes: readonly bigint[], offsets: readonly number[], sizes: readonly number[]): void {
    const n = hashes.length;
    const fullSize = ITEM_HEADER_SIZE + GOODBYE_ITEM_SIZE * n;
    this.header(PXAR.GOODBYE, fullSize - ITEM_HEADER_SIZE);
    const at = this.#room(GOODBYE_ITEM_SIZE * n);
    for (let i = 0; i < n; i++) {
      const p = at + GOODBYE_ITEM_SIZE * i;
      this.#view.setBigUint64(p, hashes[i]!, true);
      this.#setU64(p + 8, offsets[i]!);
      this.#setU64(p + 16, sizes[i]!);
    }
  }

  #setU64(at: number, value: number): void {
    const lo = value % TWO_POW_32;
    this.#view.setUint32(at, lo, true);
    this.#view.setUint32(at + 4, (value - lo) / TWO_POW_32, true);
  }
}

/** One open directory: what its GOODBYE table needs, and its children's names. */
interface OpenDirectory {
  /** Empty for the root. */
  readonly name: Uint8Array;
  /** Position of the directory's FILENAME header (0 for the root, which has none). */
  readonly fileNameStart: number;
  /** What the tail item's offset counts back to: the ENTRY header, or 0 for the root (§7.3). */
  readonly entryStart: number;
  readonly hash: bigint;
  readonly hashes: bigint[];
  readonly starts: number[];
  readonly sizes: number[];
  readonly names: Set<string>;
}

function stateError(message: string, details: Record<string, unknown> = {}): BurrowError {
  return new BurrowError('PXAR_ENCODER_STATE', message, { details });
}

function argumentError(message: string, details: Record<string, unknown> = {}): BurrowError {
  return new BurrowError('INVALID_ARGUMENT', message, { details });
}

/** Sink and content-source failures become IO_ERROR; our own errors pass through. */
function asBurrowError(
  error: unknown,
  message: string,
  details: Record<string, unknown>,
): BurrowError {
  if (error instanceof BurrowError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new BurrowError('IO_ERROR', `${message}: ${reason}`, { details, cause: error });
}

function isUint(value: unknown, limit = Number.MAX_SAFE_INTEGER): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= limit;
}

/** Array.isArray without its narrowing of readonly arrays to any[]. */
function isList(value: unknown): boolean {
  return Array.isArray(value);
}

/** A name as a Set key: one UTF-16 unit per byte, so distinct byte strings stay distinct. */
function nameKey(name: Uint8Array): string {
  // Names are at most 4096 bytes (checked before), well within the argument-count limit.
  return String.fromCharCode.apply(null, name as unknown as number[]);
}

/** TypedArray.set has a fixed cost that dominates for the short names and values of metadata. */
function copyInto(target: Uint8Array, data: Uint8Array, at: number): void {
  if (data.length > 32) {
    target.set(data, at);
    return;
  }
  for (let i = 0; i < data.length; i++) target[at + i] = data[i]!;
}

const KIND_LABEL: Record<FileKind, string> = {
  directory: 'a directory',
  file: 'a regular file',
  symlink: 'a symlink',
  'block-device': 'a block device',
  'char-device': 'a character device',
  fifo: 'a FIFO',
  socket: 'a socket',
};

export class PxarEncoder {
  readonly formatVersion: 1 | 2;
  readonly #archive: ItemWriter;
  readonly #payload: ItemWriter | undefined;
  readonly #onPayloadHeader: ((payloadOffset: number) => void) | undefined;
  readonly #stack: OpenDirectory[] = [];
  /** Where the root's first child starts: no hardlink target can lie before it. */
  #firstChildStart = 0;
  /** Lowest payload offset the next PAYLOAD_REF may use: past the last payload written or referenced. */
  #payloadFloor = 0;
  /** End of the last referenced payload entry; the stream must reach it before new bytes are written. */
  #referencedEnd = 0;
  #busy = false;
  #finished = false;
  #failure: unknown = undefined;

  private constructor(options: EncoderOptions) {
    this.#archive = new ItemWriter(options.output, 'archive');
    this.#payload =
      options.payloadOutput === undefined
        ? undefined
        : new ItemWriter(options.payloadOutput, 'payload stream');
    this.formatVersion = this.#payload === undefined ? 1 : 2;
    this.#onPayloadHeader = options.onPayloadHeader;
  }

  /** Writes [FORMAT_VERSION, PRELUDE,] the root ENTRY and its attributes; v2 also the payload START marker. */
  static async begin(rootMetadata: Metadata, options: EncoderOptions): Promise<PxarEncoder> {
    if (typeof options?.output?.write !== 'function')
      throw argumentError('pxar encoder: options.output must be a ByteSink');
    if (options.payloadOutput !== undefined && typeof options.payloadOutput.write !== 'function')
      throw argumentError('pxar encoder: options.payloadOutput must be a ByteSink');
    if (options.prelude !== undefined) {
      if (options.payloadOutput === undefined)
        throw stateError('pxar encoder: a prelude exists only in split (v2) archives');
      if (!(options.prelude instanceof Uint8Array))
        throw argumentError('pxar encoder: the prelude must be a Uint8Array');
    }
    if (options.onPayloadHeader !== undefined && typeof options.onPayloadHeader !== 'function')
      throw argumentError('pxar encoder: onPayloadHeader must be a function');
    const encoder = new PxarEncoder(options);
    encoder.#checkMetadata(rootMetadata, 'directory', EMPTY);
    await encoder.#run('begin', async () => {
      const archive = encoder.#archive;
      const payload = encoder.#payload;
      if (payload !== undefined) {
        payload.header(PXAR.PAYLOAD_START_MARKER, 0);
        encoder.#payloadFloor = payload.position;
        await payload.flush();
        archive.u64Item(PXAR.FORMAT_VERSION, [2]);
        if (options.prelude !== undefined) {
          archive.header(PXAR.PRELUDE, options.prelude.length);
          archive.bytes(options.prelude);
        }
      }
      encoder.#writeMetadata(rootMetadata);
      encoder.#firstChildStart = archive.position;
      // The root's tail offset counts back to the archive start even in v2 (§7.3 step 5).
      encoder.#stack.push(newDirectory(EMPTY, 0, 0, 0n));
      await encoder.#drainArchive();
    });
    return encoder;
  }

  /** Bytes written to the archive so far (= position of the next item). */
  position(): number {
    return this.#archive.position;
  }

  /** Bytes written (or accounted for) in the payload stream so far (v2). */
  payloadPosition(): number {
    return this.#payload?.position ?? 0;
  }

  /** Regular file with its contents; `content` must yield exactly `size` bytes. Returns the FILENAME position. */
  addFile(
    name: Uint8Array,
    metadata: Metadata,
    size: number,
    content: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<number> {
    return this.#run('addFile', async () => {
      const dir = this.#checkChild(name, 'addFile');
      this.#checkMetadata(metadata, 'file', name);
      if (!isUint(size))
        throw argumentError(`addFile ${this.#describe(name)}: size ${String(size)} is invalid`, {
          size,
        });
      if (
        content === null ||
        typeof content !== 'object' ||
        (!(Symbol.asyncIterator in content) && !(Symbol.iterator in content))
      )
        throw argumentError(`addFile ${this.#describe(name)}: content is not iterable`);
      const payload = this.#payload;
      if (payload !== undefined)
        this.#checkReferencesCovered(() => `addFile ${this.#describe(name)}`);

      const archive = this.#archive;
      const start = this.#startChild(dir, name, metadata);
      let sink: ItemWriter;
      if (payload === undefined) {
        archive.header(PXAR.PAYLOAD, size);
        sink = archive;
      } else {
        const payloadOffset = payload.position;
        this.#onPayloadHeader?.(payloadOffset);
        payload.header(PXAR.PAYLOAD, size);
        archive.u64Item(PXAR.PAYLOAD_REF, [payloadOffset, size]);
        sink = payload;
      }
      // The v2 goodbye size counts the file size although the data is elsewhere (§7.4 quirk).
      const goodbyeSize = archive.position - start + size;
      await this.#drainArchive();

      let written = 0;
      const take = (piece: unknown): void => {
        if (!(piece instanceof Uint8Array))
          throw argumentError(
            `addFile ${this.#describe(name)}: content yielded a ${typeof piece}, not a Uint8Array`,
            { offset: written },
          );
        if (written + piece.length > size)
          throw stateError(
            `addFile ${this.#describe(name)}: content is longer than the declared size ${size}`,
            { expected: size, actual: written + piece.length },
          );
        sink.bytes(piece);
        written += piece.length;
      };
      try {
        // A synchronous source (an array of pieces, say) costs no promise per piece.
        if (Symbol.asyncIterator in content) {
          for await (const piece of content) {
            take(piece);
            if (sink.hasPending) await sink.drain();
          }
        } else {
          for (const piece of content) {
            take(piece);
            if (sink.hasPending) await sink.drain();
          }
        }
      } catch (error) {
        throw asBurrowError(error, `addFile ${this.#describe(name)}: reading the content failed`, {
          offset: written,
        });
      }
      if (written !== size)
        throw stateError(
          `addFile ${this.#describe(name)}: content ended after ${written} of ${size} bytes`,
          { expected: size, actual: written },
        );
      if (payload !== undefined) {
        await payload.flush();
        this.#payloadFloor = payload.position;
      }
      this.#addGoodbyeItem(dir, name, start, goodbyeSize);
      return start;
    });
  }

  /** v2 only: a file whose payload is already in the payload stream at `payloadOffset` (reuse); goodbye size excludes the file size (§7.4). */
  addPayloadRef(
    name: Uint8Array,
    metadata: Metadata,
    size: number,
    payloadOffset: number,
  ): Promise<number> {
    return this.#run('addPayloadRef', async () => {
      if (this.#payload === undefined)
        throw stateError('addPayloadRef: payload references exist only in split (v2) archives');
      const dir = this.#checkChild(name, 'addPayloadRef');
      this.#checkMetadata(metadata, 'file', name);
      // Built only for a message: printing the path costs more than the rest of this call.
      const what = (): string => `addPayloadRef ${this.#describe(name)}`;
      if (!isUint(size))
        throw argumentError(`${what()}: size ${String(size)} is invalid`, { size });
      if (!isUint(payloadOffset))
        throw argumentError(`${what()}: payload offset ${String(payloadOffset)} is invalid`, {
          payloadOffset,
        });
      const end = payloadOffset + ITEM_HEADER_SIZE + size;
      if (!Number.isSafeInteger(end))
        throw argumentError(`${what()}: payload offset + size is too large`, {
          payloadOffset,
          size,
        });
      // Offsets must rise strictly and never point into payload bytes this encoder wrote itself
      // (§9.2): they may point into ranges the caller advanced over or will advance over next.
      if (payloadOffset < this.#payloadFloor)
        throw stateError(
          `${what()}: payload offset ${payloadOffset} lies before ${this.#payloadFloor}, the end of the payload already written or referenced`,
          { payloadOffset, minimum: this.#payloadFloor },
        );

      const archive = this.#archive;
      const start = this.#startChild(dir, name, metadata);
      archive.u64Item(PXAR.PAYLOAD_REF, [payloadOffset, size]);
      this.#payloadFloor = end;
      this.#referencedEnd = end;
      this.#addGoodbyeItem(dir, name, start, archive.position - start);
      await this.#drainArchive();
      return start;
    });
  }

  /** v2 only: account `length` payload bytes the caller injects itself (reused chunks) without writing them. */
  advancePayloadPosition(length: number): void {
    this.#checkUsable('advancePayloadPosition');
    if (this.#payload === undefined)
      throw stateError('advancePayloadPosition: only split (v2) archives have a payload stream');
    if (!isUint(length) || !Number.isSafeInteger(this.#payload.position + length))
      throw argumentError(`advancePayloadPosition: length ${String(length)} is invalid`, {
        length,
      });
    this.#payload.skip(length);
  }

  addSymlink(name: Uint8Array, metadata: Metadata, target: Uint8Array): Promise<number> {
    return this.#run('addSymlink', async () => {
      const dir = this.#checkChild(name, 'addSymlink');
      this.#checkMetadata(metadata, 'symlink', name);
      const problem = !(target instanceof Uint8Array)
        ? 'it is not a Uint8Array'
        : target.length === 0
          ? 'it is empty'
          : target.length > MAX_NAME_LENGTH
            ? `it is longer than ${MAX_NAME_LENGTH} bytes`
            : target.includes(0)
              ? 'it contains a NUL byte'
              : undefined;
      if (problem !== undefined)
        throw new BurrowError(
          'PXAR_BAD_NAME',
          `addSymlink ${this.#describe(name)}: invalid link target: ${problem}`,
          { details: { path: this.#pathOf(name) } },
        );
      const start = this.#startChild(dir, name, metadata);
      this.#archive.zeroTerminatedItem(PXAR.SYMLINK, target);
      this.#addGoodbyeItem(dir, name, start, this.#archive.position - start);
      await this.#drainArchive();
      return start;
    });
  }

  /** Block or character device, from metadata.stat.mode. */
  addDevice(name: Uint8Array, metadata: Metadata, major: number, minor: number): Promise<number> {
    return this.#run('addDevice', async () => {
      const dir = this.#checkChild(name, 'addDevice');
      this.#checkMetadata(metadata, 'device', name);
      if (!isUint(major) || !isUint(minor))
        throw argumentError(
          `addDevice ${this.#describe(name)}: device number ${String(major)}:${String(minor)} is invalid`,
          { major, minor },
        );
      const start = this.#startChild(dir, name, metadata);
      this.#archive.u64Item(PXAR.DEVICE, [major, minor]);
      this.#addGoodbyeItem(dir, name, start, this.#archive.position - start);
      await this.#drainArchive();
      return start;
    });
  }

  addFifo(name: Uint8Array, metadata: Metadata): Promise<number> {
    return this.#addBodyless('addFifo', 'fifo', name, metadata);
  }

  addSocket(name: Uint8Array, metadata: Metadata): Promise<number> {
    return this.#addBodyless('addSocket', 'socket', name, metadata);
  }

  /** `targetPath` relative to the archive root; `targetOffset` = FILENAME position returned when the target was added. */
  addHardlink(name: Uint8Array, targetPath: Uint8Array, targetOffset: number): Promise<number> {
    return this.#run('addHardlink', async () => {
      const dir = this.#checkChild(name, 'addHardlink');
      const what = `addHardlink ${this.#describe(name)}`;
      const problem = hardlinkPathProblem(targetPath);
      if (problem !== undefined)
        throw new BurrowError('PXAR_BAD_NAME', `${what}: invalid target path: ${problem}`, {
          details: { path: this.#pathOf(name) },
        });
      const start = this.#archive.position;
      // Only the range is checked: remembering every file position would cost memory per entry.
      if (!isUint(targetOffset) || targetOffset >= start || targetOffset < this.#firstChildStart)
        throw stateError(
          `${what}: target offset ${String(targetOffset)} is not the position of an earlier entry (it must lie in [${this.#firstChildStart}, ${start}))`,
          { targetOffset, position: start },
        );
      this.#archive.zeroTerminatedItem(PXAR.FILENAME, name);
      this.#archive.zeroTerminatedItem(PXAR.HARDLINK, targetPath, start - targetOffset);
      this.#addGoodbyeItem(dir, name, start, this.#archive.position - start);
      await this.#drainArchive();
      return start;
    });
  }

  /** Opens a subdirectory; its children follow until leaveDirectory(). Returns the FILENAME position. */
  enterDirectory(name: Uint8Array, metadata: Metadata): Promise<number> {
    return this.#run('enterDirectory', async () => {
      const parent = this.#checkChild(name, 'enterDirectory');
      this.#checkMetadata(metadata, 'directory', name);
      const archive = this.#archive;
      const start = archive.position;
      archive.zeroTerminatedItem(PXAR.FILENAME, name);
      const entryStart = archive.position;
      this.#writeMetadata(metadata);
      parent.names.add(nameKey(name));
      this.#stack.push(newDirectory(name, start, entryStart, pxarHash(name)));
      await this.#drainArchive();
      return start;
    });
  }

  /** Closes the current subdirectory with its GOODBYE table. */
  leaveDirectory(): Promise<void> {
    return this.#run('leaveDirectory', async () => {
      if (this.#stack.length < 2)
        throw stateError('leaveDirectory: no subdirectory is open (the root is closed by finish)');
      const dir = this.#stack.pop()!;
      this.#writeGoodbye(dir);
      const parent = this.#stack[this.#stack.length - 1]!;
      parent.hashes.push(dir.hash);
      parent.starts.push(dir.fileNameStart);
      parent.sizes.push(this.#archive.position - dir.fileNameStart);
      await this.#drainArchive();
    });
  }

  /** Closes the root directory (all directories must have been left), writes the v2 payload TAIL marker. */
  finish(): Promise<void> {
    return this.#run('finish', async () => {
      if (this.#stack.length !== 1)
        throw stateError(
          `finish: ${this.#stack.length - 1} director${this.#stack.length === 2 ? 'y is' : 'ies are'} still open (innermost ${printableName(this.#pathOf(EMPTY))})`,
          { openDirectories: this.#stack.length - 1 },
        );
      const payload = this.#payload;
      if (payload !== undefined) this.#checkReferencesCovered(() => 'finish');
      this.#writeGoodbye(this.#stack.pop()!);
      await this.#archive.flush();
      if (payload !== undefined) {
        payload.header(PXAR.PAYLOAD_TAIL_MARKER, 0);
        await payload.flush();
      }
      this.#finished = true;
    });
  }

  // -------------------------------------------------------------------------------------------

  /**
   * Runs one operation: refuses overlapping calls, calls after finish and calls after a failure
   * that left a partial item behind. Errors thrown before anything was written (validation)
   * leave the encoder usable.
   */
  async #run<T>(what: string, operation: () => Promise<T>): Promise<T> {
    this.#checkUsable(what);
    this.#busy = true;
    const before = this.#archive.position;
    const payloadBefore = this.#payload?.position;
    try {
      return await operation();
    } catch (error) {
      if (this.#archive.position !== before || this.#payload?.position !== payloadBefore)
        this.#failure = error;
      throw error;
    } finally {
      this.#busy = false;
    }
  }

  #checkUsable(what: string): void {
    if (this.#failure !== undefined)
      throw new BurrowError(
        'PXAR_ENCODER_STATE',
        `${what}: the encoder failed earlier in the middle of an item and cannot continue`,
        { cause: this.#failure },
      );
    if (this.#finished) throw stateError(`${what}: the archive is already finished`);
    if (this.#busy)
      throw stateError(`${what}: another encoder call is still running (await each call)`);
  }

  async #drainArchive(): Promise<void> {
    if (this.#archive.hasPending) await this.#archive.drain();
  }

  /** Validates a child name in the current directory; returns that directory. */
  #checkChild(name: Uint8Array, what: string): OpenDirectory {
    const dir = this.#stack[this.#stack.length - 1];
    if (dir === undefined) throw stateError(`${what}: the encoder has no open directory`);
    if (!(name instanceof Uint8Array))
      throw argumentError(`${what}: the name must be a Uint8Array`);
    if (fileNameProblem(name) !== undefined)
      checkFileName(name, { directory: printableName(this.#pathOf(EMPTY)) });
    if (dir.names.has(nameKey(name)))
      throw stateError(`${what}: duplicate name ${this.#describe(name)}`, {
        path: printableName(this.#pathOf(name)),
      });
    return dir;
  }

  /** Writes FILENAME, ENTRY and attributes of a non-directory child; returns the FILENAME position. */
  #startChild(dir: OpenDirectory, name: Uint8Array, metadata: Metadata): number {
    const start = this.#archive.position;
    this.#archive.zeroTerminatedItem(PXAR.FILENAME, name);
    this.#writeMetadata(metadata);
    return start;
  }

  #addGoodbyeItem(dir: OpenDirectory, name: Uint8Array, start: number, size: number): void {
    dir.names.add(nameKey(name));
    dir.hashes.push(pxarHash(name));
    dir.starts.push(start);
    dir.sizes.push(size);
  }

  /** ENTRY, then the attributes in the reference encoder's order (§5). */
  #writeMetadata(metadata: Metadata): void {
    const archive = this.#archive;
    archive.entry(metadata);
    for (const { name, value } of metadata.xattrs) archive.xattr(name, value);
    const { acl } = metadata;
    archive.aclEntries(PXAR.ACL_USER, acl.users);
    archive.aclEntries(PXAR.ACL_GROUP, acl.groups);
    if (acl.groupObj !== undefined) archive.u64Item(PXAR.ACL_GROUP_OBJ, [acl.groupObj]);
    if (acl.default !== undefined) {
      const d = acl.default;
      archive.aclDefault([d.userObj, d.groupObj, d.other, d.mask]);
    }
    archive.aclEntries(PXAR.ACL_DEFAULT_USER, acl.defaultUsers);
    archive.aclEntries(PXAR.ACL_DEFAULT_GROUP, acl.defaultGroups);
    if (metadata.fcaps !== undefined) {
      archive.header(PXAR.FCAPS, metadata.fcaps.length);
      archive.bytes(metadata.fcaps);
    }
    if (metadata.quotaProjectId !== undefined)
      archive.u64Item(PXAR.QUOTA_PROJID, [metadata.quotaProjectId]);
  }

  /** The GOODBYE item of `dir` at the current position (§7.3). */
  #writeGoodbye(dir: OpenDirectory): void {
    const n = dir.hashes.length;
    const goodbyeStart = this.#archive.position;
    // Stable sort: colliding hashes keep insertion order (the format leaves it open).
    const sorted = Array.from({ length: n }, (_, i) => i).sort((a, b) => {
      const ha = dir.hashes[a]!;
      const hb = dir.hashes[b]!;
      return ha < hb ? -1 : ha > hb ? 1 : 0;
    });
    const tree = goodbyeTreeOrder(n);
    const hashes = new Array<bigint>(n + 1);
    const offsets = new Array<number>(n + 1);
    const sizes = new Array<number>(n + 1);
    for (let slot = 0; slot < n; slot++) {
      const i = sorted[tree[slot]!]!;
      hashes[slot] = dir.hashes[i]!;
      offsets[slot] = goodbyeStart - dir.starts[i]!;
      sizes[slot] = dir.sizes[i]!;
    }
    hashes[n] = PXAR.GOODBYE_TAIL_MARKER;
    offsets[n] = goodbyeStart - dir.entryStart;
    sizes[n] = ITEM_HEADER_SIZE + GOODBYE_ITEM_SIZE * (n + 1);
    this.#archive.goodbye(hashes, offsets, sizes);
  }

  #addBodyless(
    what: string,
    kind: 'fifo' | 'socket',
    name: Uint8Array,
    metadata: Metadata,
  ): Promise<number> {
    return this.#run(what, async () => {
      const dir = this.#checkChild(name, what);
      this.#checkMetadata(metadata, kind, name);
      const start = this.#startChild(dir, name, metadata);
      this.#addGoodbyeItem(dir, name, start, this.#archive.position - start);
      await this.#drainArchive();
      return start;
    });
  }

  /** Referenced payload entries must be in the stream before the encoder writes more into it. */
  #checkReferencesCovered(what: () => string): void {
    const position = this.payloadPosition();
    if (this.#referencedEnd > position)
      throw stateError(
        `${what()}: payload references reach up to ${this.#referencedEnd}, but the payload stream holds only ${position} bytes (advancePayloadPosition over the reused range first)`,
        { referencedEnd: this.#referencedEnd, payloadPosition: position },
      );
  }

  #pathOf(name: Uint8Array): Uint8Array {
    let path: Uint8Array = EMPTY;
    for (const dir of this.#stack) if (dir.name.length > 0) path = joinPath(path, dir.name);
    return name.length > 0 ? joinPath(path, name) : path;
  }

  #describe(name: Uint8Array): string {
    return printableName(this.#pathOf(name));
  }

  /** Every metadata value must fit its on-disk field; the mode must name the expected kind. */
  #checkMetadata(metadata: Metadata, expected: FileKind | 'device', name: Uint8Array): void {
    const problem = metadataProblem(metadata);
    if (problem !== undefined) {
      const path = printableName(this.#pathOf(name));
      throw argumentError(`${path}: invalid metadata: ${problem}`, { path });
    }
    const kind = kindOfMode(metadata.stat.mode);
    const matches =
      expected === 'device' ? kind === 'block-device' || kind === 'char-device' : kind === expected;
    if (!matches) {
      const path = printableName(this.#pathOf(name));
      throw stateError(
        `${path}: the mode 0o${(metadata.stat.mode & S_IFMT).toString(8)} does not describe ${expected === 'device' ? 'a device' : KIND_LABEL[expected]}`,
        { path, mode: metadata.stat.mode },
      );
    }
  }
}

/** Why `metadata` cannot be encoded (a value that does not fit its field), or undefined. */
function metadataProblem(metadata: Metadata): string | undefined {
  if (metadata === null || typeof metadata !== 'object') return 'metadata is missing';
  const { stat } = metadata;
  if (stat === null || typeof stat !== 'object') return 'stat is missing';
  if (!isUint(stat.mode)) return `mode ${String(stat.mode)}`;
  if (!isUint(stat.flags)) return `flags ${String(stat.flags)}`;
  if (!isUint(stat.uid, 0xffffffff)) return `uid ${String(stat.uid)}`;
  if (!isUint(stat.gid, 0xffffffff)) return `gid ${String(stat.gid)}`;
  const { mtime } = stat;
  if (mtime === null || typeof mtime !== 'object') return 'mtime is missing';
  if (!Number.isSafeInteger(mtime.secs)) return `mtime seconds ${String(mtime.secs)}`;
  if (!isUint(mtime.nanos, 999_999_999)) return `mtime nanoseconds ${String(mtime.nanos)}`;
  if (!isList(metadata.xattrs)) return 'xattrs is not an array';
  for (const x of metadata.xattrs) {
    if (!(x?.name instanceof Uint8Array) || !(x.value instanceof Uint8Array))
      return 'an xattr name or value is not a Uint8Array';
    if (x.name.length === 0 || x.name.length > MAX_XATTR_NAME_LENGTH || x.name.includes(0))
      return `xattr name ${printableName(x.name)} is empty, longer than ${MAX_XATTR_NAME_LENGTH} bytes or contains NUL`;
    if (x.name.length + 1 + x.value.length > XATTR_MAX_CONTENT)
      return `xattr ${printableName(x.name)} is too large (${x.value.length} bytes)`;
  }
  const { acl } = metadata;
  if (acl === null || typeof acl !== 'object') return 'acl is missing';
  const entries =
    aclEntriesProblem(acl.users, 'ACL user') ??
    aclEntriesProblem(acl.groups, 'ACL group') ??
    aclEntriesProblem(acl.defaultUsers, 'default ACL user') ??
    aclEntriesProblem(acl.defaultGroups, 'default ACL group');
  if (entries !== undefined) return entries;
  if (acl.groupObj !== undefined && !isUint(acl.groupObj))
    return `ACL group_obj ${String(acl.groupObj)}`;
  const d = acl.default;
  if (d !== undefined) {
    if (d === null || typeof d !== 'object') return 'default ACL is not an object';
    for (const v of [d.userObj, d.groupObj, d.other, d.mask])
      if (v !== undefined && !isUint(v)) return `default ACL permissions ${String(v)}`;
  }
  if (metadata.fcaps !== undefined) {
    if (!(metadata.fcaps instanceof Uint8Array)) return 'fcaps is not a Uint8Array';
    if (metadata.fcaps.length > FCAPS_MAX_CONTENT)
      return `fcaps is too large (${metadata.fcaps.length} bytes)`;
  }
  if (metadata.quotaProjectId !== undefined && !isUint(metadata.quotaProjectId))
    return `quota project id ${String(metadata.quotaProjectId)}`;
  return undefined;
}

function aclEntriesProblem(list: readonly AclEntry[], label: string): string | undefined {
  if (!isList(list)) return `${label} entries are not an array`;
  for (const e of list)
    if (!isUint(e?.id) || !isUint(e.permissions)) return `${label} entry ${JSON.stringify(e)}`;
  return undefined;
}

function newDirectory(
  name: Uint8Array,
  fileNameStart: number,
  entryStart: number,
  hash: bigint,
): OpenDirectory {
  return {
    name,
    fileNameStart,
    entryStart,
    hash,
    hashes: [],
    starts: [],
    sizes: [],
    names: new Set(),
  };
}

/** Why `path` cannot be a hardlink target (a relative path of valid names), or undefined. */
function hardlinkPathProblem(path: unknown): string | undefined {
  if (!(path instanceof Uint8Array)) return 'it is not a Uint8Array';
  if (path.length === 0) return 'it is empty';
  if (path.length > MAX_NAME_LENGTH) return `it is longer than ${MAX_NAME_LENGTH} bytes`;
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === 0x2f) {
      const problem = fileNameProblem(path.subarray(start, i));
      if (problem !== undefined)
        return `component ${printableName(path.subarray(start, i))}: ${problem}`;
      start = i + 1;
    }
  }
  return undefined;
}
