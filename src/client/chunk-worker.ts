/**
 * Entry of a chunk worker thread (spawned by ChunkWorkerPool, worker-pool.ts): the CPU-heavy part
 * of the backup data path, chunk digest, zstd and AES-GCM, away from the thread that reads, chunks
 * and appends in order.
 *
 * A 'digest' job keeps its data here until the main thread says whether the chunk is new
 * ('encode') or already known ('drop'): known chunks, the bulk of an incremental backup, are then
 * never compressed or encrypted, and the data crosses threads once. Keys arrive once per worker
 * ('key') and are rebuilt into a CryptConfig here, since class instances do not cross threads.
 * Chunks in a ChunkArena (shared memory, sent once per worker as 'arena') are read in place; the
 * main thread frees their slot when it has the encoded blob, or when it drops the job.
 *
 * A 'both' job or an 'encode' for a local datastore (`chunkFiles`) also writes a new chunk's
 * temporary file into the store and answers with its name instead of the blob, unless the chunk's
 * file is there already: the copy into the page cache, about a third of what the main thread
 * spent on a first backup, then happens here, and ChunkStore.insertChunkFile only renames (or
 * removes) it.
 *
 * A 'decode' job is the restore direction: a stored chunk in, its checked, decoded data out.
 */
import { existsSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { CryptConfig } from '../crypto/crypt-config.js';
import {
  blobKindOf,
  computeChunkDigest,
  encodeBlob,
  encodeBlobPieces,
  type BlobKind,
} from '../format/data-blob.js';
import {
  chunkPathIn,
  readChunkFileSync,
  writeChunkTempFileSync,
  type ChunkFileTarget,
  type WrittenChunk,
} from '../datastore/chunk-file.js';
import { allocUninitialized, toHex } from '../lib/bytes.js';
import { applyChunkPlan, decodeCheckedChunk, type ChunkPlan } from './chunk-plan.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';

/**
 * What a job asks for: the digest (then wait), the encoded blob only, both at once, or (restore)
 * the decoded and checked data of a stored chunk, or its plan (chunk-plan.ts) carried out here.
 */
export type JobWant = 'digest' | 'encode' | 'both' | 'decode' | 'write';

/** A chunk in a ChunkArena slot, by place. */
export interface ArenaRef {
  arenaId: number;
  offset: number;
  length: number;
}

/** A stored chunk the worker reads itself (decode jobs on a local datastore). */
export interface ChunkFileRef {
  chunkFile: string;
}

export type ToWorker =
  | { type: 'key'; keyId: number; key: Uint8Array }
  | { type: 'arena'; arenaId: number; memory: SharedArrayBuffer }
  | {
      type: 'job';
      id: number;
      want: JobWant;
      data: Uint8Array | ArenaRef | ChunkFileRef;
      /** 0: unencrypted. */
      keyId: number;
      /** zstd level; 0: not compressed. */
      level: number;
      /** Decode and write jobs: what the decoded chunk must hash to and how long it must be. */
      expectedDigest?: Uint8Array;
      expectedSize?: number;
      /** Write jobs: what to check and write of the decoded chunk. */
      plan?: ChunkPlan;
      /** Held jobs to forget first (drops gathered since the last message to this worker). */
      drops?: number[];
      /** 'both' jobs: a new chunk's temporary file goes into this store (see above). */
      chunkFiles?: ChunkFileTarget;
    }
  /** Encode a held job; with `chunkFiles`, a new chunk goes to a temporary file there. */
  | { type: 'encode'; id: number; chunkFiles?: ChunkFileTarget }
  /** Forget held jobs (known chunks); also carried by the next job message (`drops`). */
  | { type: 'drop'; ids: number[] }
  /** Test hook: the worker throws outside any job, as a crash would. */
  | { type: 'crash' };

export interface WorkerErrorData {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

/** A new chunk written to a temporary file in the store, and its blob kind. */
export interface WrittenBlob extends WrittenChunk {
  kind: BlobKind;
}

export type FromWorker =
  | { type: 'digest'; id: number; digest: Uint8Array }
  /**
   * The job's output: the blob, or for decode jobs the data; empty when the blob went to a
   * temporary file instead (`written`).
   */
  | {
      type: 'encoded';
      id: number;
      encoded: Uint8Array;
      digest?: Uint8Array;
      written?: WrittenBlob;
    }
  | { type: 'error'; id: number; error: WorkerErrorData };

interface Held {
  data: Uint8Array;
  crypt: CryptConfig | undefined;
  level: number;
  /** Of a job that was digested first: what an encode into a chunk file needs. */
  digest?: Uint8Array;
}

const port = parentPort;
if (port === null) {
  throw new BurrowError('INTERNAL', 'chunk-worker.ts is a worker thread entry, not a module');
}

const EMPTY = new Uint8Array(0);
const keys = new Map<number, CryptConfig>();
const arenas = new Map<number, SharedArrayBuffer>();

/**
 * Where decode and write jobs read chunk files to: one buffer per worker, kept and grown to the
 * largest chunk file so far (at most MAX_ENCODED_CHUNK_SIZE), so that a restore takes no fresh
 * pages per chunk. What a job decodes from it is copied (postDecoded's ownBytes) or written
 * (write jobs) before the next job reads.
 */
let readScratch: Uint8Array | undefined;
function readBuffer(size: number): Uint8Array {
  if (readScratch === undefined || readScratch.byteLength < size)
    readScratch = allocUninitialized(size);
  return readScratch;
}

/** A job's input; chunk files into readScratch when `scratch` (decode and write jobs only). */
function dataOf(data: Uint8Array | ArenaRef | ChunkFileRef, scratch = false): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if ('chunkFile' in data)
    return readChunkFileSync(data.chunkFile, scratch ? readBuffer : undefined);
  const memory = arenas.get(data.arenaId);
  if (memory === undefined) {
    throw new BurrowError('INTERNAL', `chunk worker: arena ${data.arenaId} was never sent`);
  }
  return new Uint8Array(memory, data.offset, data.length);
}
const held = new Map<number, Held>();

function cryptFor(keyId: number): CryptConfig | undefined {
  if (keyId === 0) return undefined;
  const crypt = keys.get(keyId);
  if (crypt === undefined) {
    throw new BurrowError('INTERNAL', `chunk worker: key ${keyId} was never sent`);
  }
  return crypt;
}

/** Posts `bytes`, moving its memory when it owns all of it (blobs do), copying a view otherwise. */
function transferListOf(...arrays: Uint8Array[]): ArrayBuffer[] {
  const list: ArrayBuffer[] = [];
  for (const a of arrays) {
    if (
      a.buffer instanceof ArrayBuffer &&
      a.byteOffset === 0 &&
      a.byteLength === a.buffer.byteLength
    )
      list.push(a.buffer);
  }
  return list;
}

function ownBytes(a: Uint8Array): Uint8Array {
  if (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength) return a;
  const out = new Uint8Array(Buffer.allocUnsafeSlow(a.byteLength).buffer, 0, a.byteLength);
  out.set(a);
  return out;
}

function postEncoded(
  id: number,
  job: Held,
  withDigest: boolean,
  chunkFiles?: ChunkFileTarget,
): void {
  const digest = withDigest ? computeChunkDigest(job.data, job.crypt) : undefined;
  const options = { compress: job.level > 0, level: job.level, crypt: job.crypt };
  const fileDigest = digest ?? job.digest;
  if (fileDigest !== undefined && chunkFiles !== undefined) {
    const path = chunkPathIn(chunkFiles.chunkDir, toHex(fileDigest));
    // A chunk the store has (a repeat, another group's data) comes back as a blob, for the
    // main thread's insert to find the duplicate: no temporary file to write and remove.
    if (!existsSync(path)) {
      // Written from the pieces: no buffer for the whole blob (see encodeBlobPieces).
      const pieces = encodeBlobPieces(job.data, options);
      const temp = writeChunkTempFileSync(path, pieces, chunkFiles.owner);
      const size = pieces.reduce((sum, piece) => sum + piece.byteLength, 0);
      const written: WrittenBlob = { temp, size, kind: blobKindOf(pieces[0]!)! };
      const reply: FromWorker = { type: 'encoded', id, encoded: EMPTY, written };
      if (digest !== undefined) reply.digest = digest;
      port!.postMessage(reply);
      return;
    }
  }
  const encoded = ownBytes(encodeBlob(job.data, options));
  const message: FromWorker = { type: 'encoded', id, encoded };
  if (digest !== undefined) message.digest = digest;
  port!.postMessage(message, transferListOf(encoded));
}

function decodeChecked(id: number, message: Extract<ToWorker, { type: 'job' }>): Uint8Array {
  return decodeCheckedChunk(
    dataOf(message.data, true),
    {
      crypt: cryptFor(message.keyId),
      expectedDigest: message.expectedDigest,
      expectedSize: message.expectedSize,
    },
    `chunk worker: decode job ${id}`,
  );
}

function postDecoded(id: number, message: Extract<ToWorker, { type: 'job' }>): void {
  const decoded = ownBytes(decodeChecked(id, message));
  const reply: FromWorker = { type: 'encoded', id, encoded: decoded };
  port!.postMessage(reply, transferListOf(decoded));
}

function postWritten(id: number, message: Extract<ToWorker, { type: 'job' }>): void {
  if (message.plan === undefined)
    throw new BurrowError('INTERNAL', `chunk worker: write job ${id} without a plan`);
  applyChunkPlan(decodeChecked(id, message), message.plan);
  const reply: FromWorker = { type: 'encoded', id, encoded: EMPTY };
  port!.postMessage(reply);
}

function errorData(error: unknown): WorkerErrorData {
  if (isBurrowError(error)) {
    return { code: error.code, message: error.message, details: { ...error.details } };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { code: 'INTERNAL', message: `chunk worker: ${message}`, details: {} };
}

function handle(message: ToWorker): void {
  switch (message.type) {
    case 'key':
      keys.set(message.keyId, new CryptConfig(message.key));
      return;
    case 'arena':
      arenas.set(message.arenaId, message.memory);
      return;
    case 'job': {
      if (message.drops !== undefined) for (const id of message.drops) held.delete(id);
      if (message.want === 'decode') {
        postDecoded(message.id, message);
        return;
      }
      if (message.want === 'write') {
        postWritten(message.id, message);
        return;
      }
      const job: Held = {
        data: dataOf(message.data),
        crypt: cryptFor(message.keyId),
        level: message.level,
      };
      if (message.want === 'digest') {
        const digest = computeChunkDigest(job.data, job.crypt);
        job.digest = digest;
        held.set(message.id, job);
        const reply: FromWorker = { type: 'digest', id: message.id, digest };
        port!.postMessage(reply);
      } else {
        postEncoded(message.id, job, message.want === 'both', message.chunkFiles);
      }
      return;
    }
    case 'encode': {
      const job = held.get(message.id);
      if (job === undefined) {
        throw new BurrowError('INTERNAL', `chunk worker: no held job ${message.id} to encode`);
      }
      held.delete(message.id);
      postEncoded(message.id, job, false, message.chunkFiles);
      return;
    }
    case 'drop':
      for (const id of message.ids) held.delete(id);
      return;
    case 'crash':
      return;
  }
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'crash') throw new Error('chunk worker crash requested by a test');
  try {
    handle(message);
  } catch (error) {
    if (message.type === 'key' || message.type === 'arena') throw error;
    const id = 'id' in message ? message.id : -1;
    held.delete(id);
    const reply: FromWorker = { type: 'error', id, error: errorData(error) };
    port.postMessage(reply);
  }
});
