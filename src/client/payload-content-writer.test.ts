import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { PXAR } from '../pxar/format.js';
import { applyChunkPlan, type ChunkPlan } from './chunk-plan.js';
import type { ArchiveChunk, ArchiveReader } from './chunk-reader.js';
import {
  MAX_CHUNKS_IN_FLIGHT,
  PLAN_AHEAD,
  PayloadContentWriter,
} from './payload-content-writer.js';

const work = mkdtempSync(join(tmpdir(), 'burrow-payload-writer-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A payload stream: the start marker, then each file as a PAYLOAD header and its bytes. */
function payloadStream(files: Uint8Array[]): { bytes: Uint8Array; offsets: number[] } {
  const parts: Uint8Array[] = [];
  const offsets: number[] = [];
  const header = (type: bigint, size: number): Uint8Array => {
    const h = new Uint8Array(16);
    const v = new DataView(h.buffer);
    v.setBigUint64(0, type, true);
    v.setBigUint64(8, BigInt(size), true);
    return h;
  };
  parts.push(header(PXAR.PAYLOAD_START_MARKER, 16));
  let at = 16;
  for (const f of files) {
    offsets.push(at);
    parts.push(header(PXAR.PAYLOAD, 16 + f.length), f);
    at += 16 + f.length;
  }
  return { bytes: Buffer.concat(parts), offsets };
}

/**
 * The parts of an ArchiveReader the writer uses, over bytes in memory cut at `ends`: plans are
 * carried out on slices, asynchronously, as a worker would. Counts the chunk jobs at once.
 */
function memoryPayload(bytes: Uint8Array, ends: number[], failAt?: number) {
  let inFlight = 0;
  const stats = { jobs: 0, maxInFlight: 0, inFlight: 0, decoded: new Map<number, number>() };
  const chunk = (position: number): ArchiveChunk => ({
    position,
    start: position === 0 ? 0 : ends[position - 1]!,
    end: ends[position]!,
    digest: new Uint8Array(32),
  });
  const reader = {
    archiveName: 'root.ppxar.didx',
    size: bytes.length,
    writesFromChunks: true,
    chunk,
    positionOf: (offset: number) => ends.findIndex((end) => offset < end),
    async writeFromChunk(position: number, plan: ChunkPlan): Promise<void> {
      stats.jobs++;
      stats.decoded.set(position, (stats.decoded.get(position) ?? 0) + 1);
      inFlight++;
      stats.inFlight = inFlight;
      stats.maxInFlight = Math.max(stats.maxInFlight, inFlight);
      try {
        await new Promise((resolve) => setImmediate(resolve));
        if (position === failAt)
          throw new BurrowError('DIGEST_MISMATCH', `chunk ${position} is damaged`);
        const { start, end } = chunk(position);
        applyChunkPlan(bytes.subarray(start, end), plan);
      } finally {
        inFlight--;
        stats.inFlight = inFlight;
      }
    },
  };
  return { reader: reader as unknown as ArchiveReader, stats };
}

function cutsOf(size: number, lengths: number[]): number[] {
  const ends: number[] = [];
  let at = 0;
  for (let i = 0; at < size; i++) {
    at = Math.min(size, at + lengths[i % lengths.length]!);
    ends.push(at);
  }
  return ends;
}

describe('PayloadContentWriter', () => {
  it('writes every file whole, each chunk decoded once, whatever the chunk cuts', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 3000 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.integer({ min: 1, max: 2000 }), { minLength: 1, maxLength: 10 }),
        async (files, lengths) => {
          const { bytes, offsets } = payloadStream(files);
          const { reader, stats } = memoryPayload(bytes, cutsOf(bytes.length, lengths));
          const writer = new PayloadContentWriter(reader);
          const dir = join(work, `run${run++}`);
          const paths = files.map((_, i) => `${dir}-${i}`);
          const fds = paths.map((p) => openSync(p, 'wx+'));
          try {
            const done = files.map((f, i) => writer.write(fds[i]!, offsets[i]!, f.length, `f${i}`));
            writer.flush();
            await Promise.all(done);
            expect(writer.busy).toBe(false);
            files.forEach((f, i) => {
              ftruncateSync(fds[i]!, f.length);
              expect(Buffer.compare(readFileSync(paths[i]!), f)).toBe(0);
            });
            expect([...stats.decoded.values()].every((n) => n === 1)).toBe(true);
            expect(stats.maxInFlight).toBeLessThanOrEqual(MAX_CHUNKS_IN_FLIGHT);
          } finally {
            for (const fd of fds) closeSync(fd);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it('refuses a wrong PAYLOAD header, naming the file; files in other chunks are written', async () => {
    const files = [new Uint8Array(500).fill(1), new Uint8Array(700).fill(2)];
    const { bytes, offsets } = payloadStream(files);
    bytes[offsets[1]! + 9]! ^= 1; // the size field of the second header
    // The first file fills the first chunk; the second starts the next one.
    const { reader } = memoryPayload(bytes, cutsOf(bytes.length, [offsets[1]!, 300]));
    const writer = new PayloadContentWriter(reader);
    const paths = [join(work, 'h0'), join(work, 'h1')];
    const fds = paths.map((p) => openSync(p, 'wx+'));
    try {
      const first = writer.write(fds[0]!, offsets[0]!, 500, 'dir/first');
      const second = writer.write(fds[1]!, offsets[1]!, 700, 'dir/second');
      writer.flush();
      await first;
      const error = await second.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isBurrowError(error, 'PXAR_BAD_PAYLOAD')).toBe(true);
      expect((error as Error).message).toContain('dir/second');
      expect(Buffer.compare(readFileSync(paths[0]!), files[0]!)).toBe(0);
    } finally {
      for (const fd of fds) closeSync(fd);
    }
  });

  it('plans a file spanning many chunks a few chunks at a time', async () => {
    const big = new Uint8Array(200_000).map((_, i) => (i * 7) % 251);
    const { bytes, offsets } = payloadStream([big]);
    const { reader, stats } = memoryPayload(bytes, cutsOf(bytes.length, [1000]));
    const writer = new PayloadContentWriter(reader);
    const path = join(work, 'spanning');
    const fd = openSync(path, 'wx+');
    try {
      const done = writer.write(fd, offsets[0]!, big.length, 'big');
      // About 200 chunks; only PLAN_AHEAD of them are planned before any finishes.
      expect(writer.queuedChunks + stats.jobs).toBeLessThanOrEqual(PLAN_AHEAD);
      writer.flush();
      await done;
      expect(stats.jobs).toBeGreaterThan(150);
      expect(stats.maxInFlight).toBeLessThanOrEqual(MAX_CHUNKS_IN_FLIGHT);
      expect(Buffer.compare(readFileSync(path), big)).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  it('stops a file at its first damaged chunk and rejects it only once none of its writes runs', async () => {
    const big = new Uint8Array(200_000).map((_, i) => (i * 7) % 251);
    const { bytes, offsets } = payloadStream([big]);
    const { reader, stats } = memoryPayload(bytes, cutsOf(bytes.length, [1000]), 3);
    const writer = new PayloadContentWriter(reader);
    const fd = openSync(join(work, 'damaged'), 'wx+');
    try {
      const done = writer.write(fd, offsets[0]!, big.length, 'big');
      writer.flush();
      const error = await done.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isBurrowError(error, 'DIGEST_MISMATCH')).toBe(true);
      // The caller may close the descriptor now: nothing of the file is written any more.
      expect(stats.inFlight).toBe(0);
      const jobs = stats.jobs;
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(stats.jobs).toBe(jobs);
      expect(jobs).toBeLessThan(PLAN_AHEAD + 4);
      expect(writer.busy).toBe(false);
    } finally {
      closeSync(fd);
    }
  });

  it('refuses a reference past the end of the payload stream', async () => {
    const { bytes, offsets } = payloadStream([new Uint8Array(10)]);
    const { reader } = memoryPayload(bytes, [bytes.length]);
    const writer = new PayloadContentWriter(reader);
    const error = await writer.write(99, offsets[0]!, 11, 'x').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isBurrowError(error, 'PXAR_BAD_PAYLOAD')).toBe(true);
  });
});
