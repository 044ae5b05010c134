/**
 * zstd for DataBlobs (pbs-formats §3.4), over the low-level zstd-napi binding.
 *
 * One compression and one decompression context live for the whole process (per worker thread):
 * creating a context per call made 2 KB blobs 7x (compress) and 24x (decompress) slower, and 4 MiB
 * blobs 2-13% slower (measured with zstd 1.5.7 on Node 20). Every call here is synchronous, so
 * nothing can interleave on them.
 *
 * Decompression treats the frame as hostile: the output never grows past `maxSize` (plus one probe
 * byte), a declared content size above it is refused before anything is allocated, and the window a
 * frame may demand stays at zstd's default cap (2^27 bytes). Frames without a content size (PBS's
 * streaming encoder writes those for unencrypted blobs) are decoded too.
 */
import binding from 'zstd-napi/binding.js';
import { allocUninitialized } from '../lib/bytes.js';
import { BurrowError } from '../lib/errors.js';
import { BLOB_ZSTD_LEVEL, MAX_BLOB_SIZE, MAX_CHUNK_SIZE } from './magic.js';

let cctx: InstanceType<typeof binding.CCtx> | undefined;
let dctx: InstanceType<typeof binding.DCtx> | undefined;

const compressor = (): InstanceType<typeof binding.CCtx> => (cctx ??= new binding.CCtx());
const decompressor = (): InstanceType<typeof binding.DCtx> => (dctx ??= new binding.DCtx());

/**
 * Scratch output for compression. Reusing it keeps the pages warm (a fresh 4 MiB buffer costs
 * ~1000 page faults); buffers for inputs above 16 MiB are not kept, so the process never holds
 * more than about 16 MiB for it.
 */
const SCRATCH_KEEP_LIMIT = binding.compressBound(16 * 1024 * 1024);
let scratch: Uint8Array | undefined;

function scratchFor(capacity: number): Uint8Array {
  if (scratch !== undefined && scratch.byteLength >= capacity) return scratch;
  const buf = new Uint8Array(Buffer.allocUnsafeSlow(capacity).buffer, 0, capacity);
  if (capacity <= SCRATCH_KEEP_LIMIT) scratch = buf;
  return buf;
}

/** The worst-case frame size for `size` input bytes. */
export function zstdCompressBound(size: number): number {
  return binding.compressBound(size);
}

/**
 * Compress `data` into a scratch buffer and return a view of the frame. The view is only valid
 * until the next compression: consume it at once and never pass it back in as `data`. Blob
 * encoding uses this to avoid an intermediate allocation.
 */
export function zstdCompressToScratch(
  data: Uint8Array,
  level: number = BLOB_ZSTD_LEVEL,
): Uint8Array {
  const out = scratchFor(binding.compressBound(data.byteLength));
  let written: number;
  try {
    written = compressor().compress(out, data, level);
  } catch (cause) {
    // Only an invalid level or an out-of-memory condition gets here; the input cannot cause it.
    throw new BurrowError('INTERNAL', `zstd compression failed: ${reason(cause)}`, { cause });
  }
  return out.subarray(0, written);
}

/** One zstd frame (with its content size) of `data`. */
export function zstdCompress(data: Uint8Array, level: number = BLOB_ZSTD_LEVEL): Uint8Array {
  const frame = zstdCompressToScratch(data, level);
  const out = allocUninitialized(frame.byteLength);
  out.set(frame);
  return out;
}

const failed = (message: string, details: Record<string, unknown>, cause?: unknown): BurrowError =>
  new BurrowError('BLOB_DECOMPRESS_FAILED', message, { details, cause });

const tooLarge = (maxSize: number): BurrowError =>
  failed(`zstd payload expands beyond the limit of ${maxSize} bytes`, { maxSize });

const isDstTooSmall = (error: unknown): boolean =>
  error instanceof Error && error.message === 'Destination buffer is too small';

const reason = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause));

/** A view of the first `length` bytes, copied out when the view would pin much more memory than it shows. */
function fit(buf: Uint8Array, length: number): Uint8Array {
  if (length === buf.byteLength) return buf;
  if (length >= buf.byteLength * 0.75) return buf.subarray(0, length);
  const out = allocUninitialized(length);
  out.set(buf.subarray(0, length));
  return out;
}

export interface ZstdDecompressOptions {
  /**
   * The size the caller expects (for example from an index). Frames without a content size are
   * then decoded in one pass into a buffer of that size instead of the slower streaming path.
   * A wrong hint costs speed, never correctness.
   */
  sizeHint?: number;
  /**
   * Decode into memory this module reuses instead of a fresh buffer: the result is a view that is
   * valid only until the next scratch decompression on this thread. For content that is looked at
   * once and dropped (a digest check of an upload), where a fresh buffer per chunk costs page
   * faults and, through V8's external-memory accounting, full garbage collections. Limits above
   * DECODE_SCRATCH_LIMIT decode into fresh memory as without this option.
   */
  scratch?: boolean;
}

/** The largest output the decode scratch holds: a maximal chunk plus the probe byte. */
export const DECODE_SCRATCH_LIMIT = MAX_CHUNK_SIZE + 1;
let decodeScratch: Uint8Array | undefined;

/** Fresh memory, or (with `scratch`) a view of the reused decode scratch. */
function outputFor(size: number, scratch: boolean): Uint8Array {
  if (!scratch) return allocUninitialized(size);
  if (decodeScratch === undefined || decodeScratch.byteLength < size) {
    // Grown to the limit at once, so a later larger chunk does not allocate again.
    decodeScratch = allocUninitialized(Math.max(size, DECODE_SCRATCH_LIMIT));
  }
  return decodeScratch.subarray(0, size);
}

/**
 * Decompress a zstd payload (one or more frames) of at most `maxSize` decoded bytes. Anything that is
 * not complete, valid zstd within that limit is BLOB_DECOMPRESS_FAILED; the result never aliases
 * `frame`.
 */
export function zstdDecompress(
  frame: Uint8Array,
  maxSize: number = MAX_BLOB_SIZE,
  options: ZstdDecompressOptions = {},
): Uint8Array {
  if (!Number.isSafeInteger(maxSize) || maxSize < 0) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `maxSize must be a non-negative integer, got ${maxSize}`,
    );
  }
  if (frame.byteLength === 0) throw failed('zstd payload is empty (no frame)', { offset: 0 });
  const scratch = options.scratch === true && maxSize + 1 <= DECODE_SCRATCH_LIMIT;

  let declared: number | null;
  try {
    declared = binding.getFrameContentSize(frame);
  } catch (cause) {
    throw failed(
      'zstd payload does not start with a valid zstd frame header',
      { offset: 0 },
      cause,
    );
  }

  if (declared !== null) {
    if (declared > maxSize) {
      throw failed(`zstd frame declares ${declared} bytes, more than the limit of ${maxSize}`, {
        declared,
        maxSize,
      });
    }
    // The common case: a single frame with its size. Decode it in one pass into an exact buffer.
    let frameSize: number;
    try {
      frameSize = binding.findFrameCompressedSize(frame);
    } catch (cause) {
      throw failed(
        `zstd frame is truncated or damaged (${frame.byteLength} bytes)`,
        { size: frame.byteLength },
        cause,
      );
    }
    if (frameSize === frame.byteLength)
      return decompressOnce(frame, declared, maxSize, true, scratch);
  } else if (
    options.sizeHint !== undefined &&
    Number.isSafeInteger(options.sizeHint) &&
    options.sizeHint >= 0 &&
    options.sizeHint <= maxSize
  ) {
    const out = decompressOnce(frame, options.sizeHint, maxSize, false, scratch);
    if (out !== undefined) return out;
  }
  return decompressStreaming(frame, maxSize, options.sizeHint, scratch);
}

/**
 * Decode all of `frame` into a buffer of `capacity` bytes. With `exact`, the frame declared its size
 * and any other outcome is an error; otherwise a too-small buffer returns undefined (try streaming).
 */
function decompressOnce(
  frame: Uint8Array,
  capacity: number,
  maxSize: number,
  exact: true,
  scratch: boolean,
): Uint8Array;
function decompressOnce(
  frame: Uint8Array,
  capacity: number,
  maxSize: number,
  exact: false,
  scratch: boolean,
): Uint8Array | undefined;
function decompressOnce(
  frame: Uint8Array,
  capacity: number,
  maxSize: number,
  exact: boolean,
  scratch: boolean,
): Uint8Array | undefined {
  const out = outputFor(capacity, scratch);
  let produced: number;
  try {
    produced = decompressor().decompress(out, frame);
  } catch (cause) {
    if (!exact && isDstTooSmall(cause)) return undefined;
    throw failed(`zstd payload is damaged: ${reason(cause)}`, { maxSize }, cause);
  }
  if (exact && produced !== capacity) {
    throw failed(`zstd frame declares ${capacity} bytes but decodes to ${produced}`, {
      declared: capacity,
      produced,
    });
  }
  return scratch ? out.subarray(0, produced) : fit(out, produced);
}

const STREAM_MIN_CAPACITY = 128 * 1024;

function decompressStreaming(
  frame: Uint8Array,
  maxSize: number,
  sizeHint: number | undefined,
  scratch: boolean,
): Uint8Array {
  // One byte above the limit lets "exactly maxSize" succeed while anything longer is caught.
  const hardCap = maxSize + 1;
  // The scratch is reused anyway, so it starts at the cap and never grows.
  let capacity = scratch
    ? hardCap
    : Math.min(hardCap, Math.max(STREAM_MIN_CAPACITY, sizeHint ?? frame.byteLength * 4));
  let out = outputFor(capacity, scratch);
  let outPos = 0;
  let inPos = 0;
  const ctx = decompressor();
  try {
    ctx.reset(binding.ResetDirective.sessionOnly);
  } catch (cause) {
    throw new BurrowError('INTERNAL', `zstd context reset failed: ${reason(cause)}`, { cause });
  }
  for (;;) {
    if (outPos === capacity) {
      if (capacity === hardCap) throw tooLarge(maxSize);
      // (Never reached with `scratch`, whose capacity is the cap.)
      capacity = Math.min(hardCap, capacity * 2);
      const grown = allocUninitialized(capacity);
      grown.set(out.subarray(0, outPos));
      out = grown;
    }
    let remaining: number;
    let produced: number;
    let consumed: number;
    try {
      [remaining, produced, consumed] = ctx.decompressStream(
        out.subarray(outPos),
        frame.subarray(inPos),
      );
    } catch (cause) {
      throw failed(
        `zstd payload is damaged near input byte ${inPos}: ${reason(cause)}`,
        { offset: inPos },
        cause,
      );
    }
    outPos += produced;
    inPos += consumed;
    if (outPos > maxSize) throw tooLarge(maxSize);
    if (remaining === 0 && inPos === frame.byteLength) break;
    if (produced === 0 && consumed === 0 && outPos < capacity) {
      // zstd wants more input than there is: the last frame is cut short.
      throw failed(
        `zstd payload is truncated: the frame is incomplete after ${frame.byteLength} bytes`,
        {
          size: frame.byteLength,
        },
      );
    }
  }
  return scratch ? out.subarray(0, outPos) : fit(out, outPos);
}
