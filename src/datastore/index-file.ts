/**
 * Reading `.fidx`/`.didx` files. The header is read and checked against the file's real size
 * before the body is read, so a hostile or damaged file cannot make us allocate more than its
 * header justifies (and never more than a fixed ceiling).
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { toHex } from '../lib/bytes.js';
import { BurrowError, withFile } from '../lib/errors.js';
import {
  DynamicIndex,
  decodeDynamicIndexHeader,
  dynamicIndexCount,
} from '../format/dynamic-index.js';
import { FixedIndex, decodeFixedIndexHeader } from '../format/fixed-index.js';
import { INDEX_MAGIC_SIZE, indexKindOfMagic } from '../format/index-common.js';
import { INDEX_HEADER_SIZE } from '../format/magic.js';

export { indexKindOfFile } from '../format/index-common.js';
export type { IndexKind } from '../format/index-common.js';

export type IndexFile =
  { kind: 'fixed'; index: FixedIndex } | { kind: 'dynamic'; index: DynamicIndex };

/**
 * Default ceiling for an index read into memory. 1 GiB of `.fidx` covers a 128 PiB image at
 * 4 MiB chunks; 1 GiB of `.didx` is ~27 million chunks. Anything larger is far more likely
 * damage or hostility than a real archive.
 */
export const MAX_INDEX_FILE_SIZE = 1024 * 1024 * 1024;

export interface ReadIndexOptions {
  /** Refuse files larger than this many bytes (default MAX_INDEX_FILE_SIZE). */
  maxFileSize?: number;
  /** Also check the stored csum against the body (INDEX_CSUM_MISMATCH). Default false. */
  verifyCsum?: boolean;
}

/** Read one piece fully; a short read means the file shrank under us. */
async function readExactly(
  handle: FileHandle,
  target: Uint8Array,
  position: number,
  fileSize: number,
): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const { bytesRead } = await handle.read(
      target,
      done,
      target.byteLength - done,
      position + done,
    );
    if (bytesRead === 0) {
      throw new BurrowError(
        'INDEX_BAD_SIZE',
        `index is truncated: it ended at byte ${position + done} while ${fileSize} bytes were expected`,
        {
          details: { offset: position + done, expected: fileSize },
        },
      );
    }
    done += bytesRead;
  }
}

function ioError(error: unknown, path: string): unknown {
  if (error instanceof BurrowError) return error;
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  const reason = error instanceof Error ? error.message : String(error);
  return new BurrowError(
    errno === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
    `cannot read index: ${reason}`,
    {
      details: { path, errno },
      cause: error,
    },
  );
}

/**
 * Read a `.fidx` or `.didx`, telling them apart by magic. Errors are BurrowErrors whose message
 * starts with the path. The file name's extension is not consulted.
 */
export async function readIndexFile(
  path: string,
  options: ReadIndexOptions = {},
): Promise<IndexFile> {
  const maxFileSize = options.maxFileSize ?? MAX_INDEX_FILE_SIZE;
  let handle: FileHandle | undefined;
  try {
    // O_NONBLOCK: opening a FIFO planted under an index name must not hang; fstat rejects it next.
    handle = await open(
      path,
      fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW,
    );
    const stat = await handle.stat();
    if (!stat.isFile()) {
      throw new BurrowError('IO_ERROR', 'not a regular file', { details: { path } });
    }
    const fileSize = stat.size;
    const header = new Uint8Array(Math.min(fileSize, INDEX_HEADER_SIZE));
    await readExactly(handle, header, 0, fileSize);

    const kind = indexKindOfMagic(header);
    if (kind === undefined) {
      if (header.byteLength < INDEX_MAGIC_SIZE) {
        throw new BurrowError(
          'INDEX_BAD_SIZE',
          `index is truncated: ${fileSize} bytes, too short to hold the 8-byte magic`,
          {
            details: { size: fileSize },
          },
        );
      }
      throw new BurrowError(
        'INDEX_BAD_MAGIC',
        `not an index: magic at offset 0 is ${toHex(header.subarray(0, INDEX_MAGIC_SIZE))}`,
        {
          details: { magic: toHex(header.subarray(0, INDEX_MAGIC_SIZE)) },
        },
      );
    }

    // Check what the header and the real size imply before reading (and allocating for) the body.
    if (kind === 'fixed') {
      const fixed = decodeFixedIndexHeader(header, fileSize);
      if (fixed.fileSize !== fileSize) {
        throw new BurrowError(
          'INDEX_BAD_SIZE',
          `fixed index is ${fileSize} bytes, but its header (size ${fixed.size}, chunk size ${fixed.chunkSize}) implies ${fixed.fileSize} bytes`,
          { details: { actual: fileSize, expected: fixed.fileSize } },
        );
      }
    } else {
      decodeDynamicIndexHeader(header, fileSize);
      dynamicIndexCount(fileSize);
    }
    if (fileSize > maxFileSize) {
      throw new BurrowError(
        'INDEX_BAD_SIZE',
        `index is ${fileSize} bytes, more than the ${maxFileSize}-byte limit for reading an index into memory`,
        {
          details: { size: fileSize, limit: maxFileSize },
        },
      );
    }

    const bytes = new Uint8Array(fileSize);
    bytes.set(header, 0);
    await readExactly(handle, bytes.subarray(INDEX_HEADER_SIZE), INDEX_HEADER_SIZE, fileSize);
    const result: IndexFile =
      kind === 'fixed'
        ? { kind, index: FixedIndex.parse(bytes) }
        : { kind, index: DynamicIndex.parse(bytes) };
    if (options.verifyCsum) result.index.verifyCsum();
    return result;
  } catch (error) {
    throw withFile(ioError(error, path), path);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
