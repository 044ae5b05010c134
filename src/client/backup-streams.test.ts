import { createCipheriv } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { splitIntoChunks } from '../chunker/buzhash.js';
import { BurrowError } from '../lib/errors.js';
import { ChunkQueue, ChunkingSink, StreamAborted, rootCause } from './backup-streams.js';

function pseudoRandom(size: number, seed: number): Uint8Array {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]));
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('ChunkingSink', () => {
  it('queues the chunks of the bytes written, whatever the write sizes', async () => {
    const data = pseudoRandom(700 * 1024, 1);
    const expected = [...splitIntoChunks([data], 64 * 1024)].map((c) => c.byteLength);
    const sink = new ChunkingSink('test', 64 * 1024, 1000);
    for (let at = 0; at < data.length; at += 7777) await sink.write(data.subarray(at, at + 7777));
    await sink.finish();
    const got: number[] = [];
    for await (const chunk of sink.queue) got.push(chunk.byteLength);
    expect(got).toEqual(expected);
    expect(sink.queuedBytes).toBe(data.length);
  });
});

describe('ChunkQueue', () => {
  it('makes the producer wait while the queue is full', async () => {
    const q = new ChunkQueue('q', 2);
    await q.push(new Uint8Array(1));
    await q.push(new Uint8Array(2));
    let third = false;
    const pushing = q.push(new Uint8Array(3)).then(() => (third = true));
    await tick();
    expect(third).toBe(false);
    const it = q[Symbol.asyncIterator]();
    expect((await it.next()).value).toHaveLength(1);
    await pushing;
    expect(third).toBe(true);
    q.close();
    expect((await it.next()).value).toHaveLength(2);
    expect((await it.next()).value).toHaveLength(3);
    expect((await it.next()).done).toBe(true);
  });

  it('throws the producer failure into the consumer', async () => {
    const q = new ChunkQueue('q');
    await q.push(new Uint8Array(1));
    const failure = new BurrowError('IO_ERROR', 'disk gone');
    q.fail(failure);
    const seen: number[] = [];
    const error = await (async () => {
      for await (const chunk of q) seen.push(chunk.byteLength);
    })().catch((e: unknown) => e);
    expect(seen).toEqual([1]);
    expect(error).toBe(failure);
  });

  it('rejects pushes once the consumer quit, carrying its error', async () => {
    const q = new ChunkQueue('q', 1);
    await q.push(new Uint8Array(1));
    for await (const _ of q) break;
    const quit = await q.push(new Uint8Array(1)).catch((e: unknown) => e);
    expect(quit).toBeInstanceOf(StreamAborted);

    const q2 = new ChunkQueue('q2', 1);
    await q2.push(new Uint8Array(1));
    const waiting = q2.push(new Uint8Array(1)).catch((e: unknown) => e);
    const cause = new BurrowError('CHUNK_CONFLICT', 'upload refused');
    q2.abort(cause);
    const error = await waiting;
    expect(error).toBeInstanceOf(StreamAborted);
    expect((error as BurrowError).code).toBe('CHUNK_CONFLICT');
    expect(rootCause(error)).toBe(cause);
  });
});
