/**
 * Entry of a chunk worker thread (spawned by ChunkWorkerPool, worker-pool.ts): the CPU-heavy part
 * of the backup data path, chunk digest, zstd and AES-GCM, away from the thread that reads, chunks
 * and appends in order.
 *
 * A 'digest' job keeps its data here until the main thread says whether the chunk is new
 * ('encode') or already known ('drop'): known chunks, the bulk of an incremental backup, are then
 * never compressed or encrypted, and the data crosses threads once. Keys arrive once per worker
 * ('key') and are rebuilt into a CryptConfig here, since class instances do not cross threads.
 */
import { parentPort } from 'node:worker_threads';
import { CryptConfig } from '../crypto/crypt-config.js';
import { computeChunkDigest, encodeBlob } from '../format/data-blob.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';

/** What a job asks for: the digest (then wait), the encoded blob only, or both at once. */
export type JobWant = 'digest' | 'encode' | 'both';

export type ToWorker =
  | { type: 'key'; keyId: number; key: Uint8Array }
  | {
      type: 'job';
      id: number;
      want: JobWant;
      data: Uint8Array;
      /** 0: unencrypted. */
      keyId: number;
      compress: boolean;
    }
  | { type: 'encode'; id: number }
  | { type: 'drop'; id: number }
  /** Test hook: the worker throws outside any job, as a crash would. */
  | { type: 'crash' };

export interface WorkerErrorData {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

export type FromWorker =
  | { type: 'digest'; id: number; digest: Uint8Array }
  | { type: 'encoded'; id: number; encoded: Uint8Array; digest?: Uint8Array }
  | { type: 'error'; id: number; error: WorkerErrorData };

interface Held {
  data: Uint8Array;
  crypt: CryptConfig | undefined;
  compress: boolean;
}

const port = parentPort;
if (port === null) {
  throw new BurrowError('INTERNAL', 'chunk-worker.ts is a worker thread entry, not a module');
}

const keys = new Map<number, CryptConfig>();
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

function postEncoded(id: number, job: Held, withDigest: boolean): void {
  const digest = withDigest ? computeChunkDigest(job.data, job.crypt) : undefined;
  const encoded = ownBytes(encodeBlob(job.data, { compress: job.compress, crypt: job.crypt }));
  const message: FromWorker =
    digest === undefined
      ? { type: 'encoded', id, encoded }
      : { type: 'encoded', id, encoded, digest };
  port!.postMessage(message, transferListOf(encoded));
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
    case 'job': {
      const job: Held = {
        data: message.data,
        crypt: cryptFor(message.keyId),
        compress: message.compress,
      };
      if (message.want === 'digest') {
        const digest = computeChunkDigest(job.data, job.crypt);
        held.set(message.id, job);
        const reply: FromWorker = { type: 'digest', id: message.id, digest };
        port!.postMessage(reply);
      } else {
        postEncoded(message.id, job, message.want === 'both');
      }
      return;
    }
    case 'encode': {
      const job = held.get(message.id);
      if (job === undefined) {
        throw new BurrowError('INTERNAL', `chunk worker: no held job ${message.id} to encode`);
      }
      held.delete(message.id);
      postEncoded(message.id, job, false);
      return;
    }
    case 'drop':
      held.delete(message.id);
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
    if (message.type === 'key') throw error;
    const id = 'id' in message ? message.id : -1;
    held.delete(id);
    const reply: FromWorker = { type: 'error', id, error: errorData(error) };
    port.postMessage(reply);
  }
});
