/**
 * Regenerates the upstream PBS fixtures (pxar-format.md §11.1, fixtures README) byte for byte
 * from the tree they describe: a v2 data-mode archive with its payload stream, and the same tree
 * re-encoded in metadata mode with every file reused.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PxarEncoder } from './encoder.js';
import { metadataOf } from './format.js';
import type { Metadata } from './format.js';
import { DynamicIndex, encodeDynamicIndex } from '../format/dynamic-index.js';
import { ChunkSplitter } from '../chunker/index.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHARED_FIXTURES = path.resolve(REPO_ROOT, '../shared/fixtures/pbs-upstream');
const LOCAL_FIXTURES = path.resolve(REPO_ROOT, 'test/fixtures/pbs-upstream');

/** A fixture from the shared directory (or the repo's copy): a missing one fails the test loudly. */
function fixture(name: string): Buffer {
  for (const dir of [SHARED_FIXTURES, LOCAL_FIXTURES]) {
    const file = path.join(dir, name);
    if (existsSync(file)) return readFileSync(file);
  }
  throw new Error(
    `fixture ${name} is missing: expected it in ${SHARED_FIXTURES} (the shared checkout next to the repo) or ${LOCAL_FIXTURES}`,
  );
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const te = new TextEncoder();
const MiB = 1024 * 1024;
/** One payload entry: PAYLOAD header + 1 MiB of zeros. */
const ENTRY = 16 + MiB;

/** §11.1: everything uid/gid 1000, mtime 0, flags 0, no xattrs or ACLs. */
function stat(mode: number): Metadata {
  return metadataOf({ mode, flags: 0, uid: 1000, gid: 1000, mtime: { secs: 0, nanos: 0 } });
}
const DIR = stat(0o40777);
const FILE = stat(0o100777);
const ZEROS = new Uint8Array(MiB);

class Collect {
  readonly pieces: Uint8Array[] = [];
  readonly write = (bytes: Uint8Array): void => {
    this.pieces.push(bytes.slice());
  };
  bytes(): Buffer {
    return Buffer.concat(this.pieces);
  }
}

/**
 * The payload sink for the data archive: too large to keep, so it hashes the stream in slices
 * ending at `ends` (the chunk ends of the upstream index) as the bytes go by.
 */
class SlicingHasher {
  readonly digests: string[] = [];
  size = 0;
  #hash = createHash('sha256');
  #slice = 0;
  constructor(private readonly ends: readonly number[]) {}
  readonly write = (bytes: Uint8Array): void => {
    let rest = bytes;
    while (rest.length > 0) {
      const end = this.ends[this.#slice] ?? Number.POSITIVE_INFINITY;
      const take = Math.min(rest.length, end - this.size);
      this.#hash.update(rest.subarray(0, take));
      this.size += take;
      rest = rest.subarray(take);
      if (this.size === end) {
        this.digests.push(this.#hash.digest('hex'));
        this.#hash = createHash('sha256');
        this.#slice++;
      }
    }
  };
}

/** Walks the fixture tree in PBS order (names sorted by bytes: folder_0..9, file_0..9). */
async function encodeTree(
  encoder: PxarEncoder,
  file: (encoder: PxarEncoder, name: Uint8Array, k: number) => Promise<unknown>,
): Promise<void> {
  let k = 0;
  for (let f = 0; f < 10; f++) {
    await encoder.enterDirectory(te.encode(`folder_${f}`), DIR);
    for (let i = 0; i < 10; i++) await file(encoder, te.encode(`file_${i}`), k++);
    await encoder.leaveDirectory();
  }
}

const didx = DynamicIndex.parse(fixture('backup-client-pxar-data.ppxar.didx'));
const didxEnds = Array.from({ length: didx.count }, (_, i) => didx.end(i));
const didxDigests = Array.from({ length: didx.count }, (_, i) =>
  Buffer.from(didx.digest(i)).toString('hex'),
);

describe('upstream fixture backup-client-pxar-data (data mode)', () => {
  it('the index describes the stream the spec says (100 chunks, one per file, tail in the last)', () => {
    expect(didx.count).toBe(100);
    expect(Buffer.from(didx.indexCsum).toString('hex')).toBe(
      'e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20',
    );
    didx.verifyCsum();
    // START(16) + 100 entries + TAIL(16); the first chunk holds the start marker too.
    expect(didxEnds[0]).toBe(16 + ENTRY);
    expect(didxEnds[99]).toBe(16 + 100 * ENTRY + 16);
    expect(didxEnds[99]).toBe(104859232);
  });

  it('regenerates the .mpxar byte for byte and the payload stream chunk by chunk', async () => {
    const archive = new Collect();
    const payload = new SlicingHasher(didxEnds);
    const headers: number[] = [];
    const encoder = await PxarEncoder.begin(DIR, {
      output: archive,
      payloadOutput: payload,
      onPayloadHeader: (offset) => headers.push(offset),
    });
    expect(encoder.formatVersion).toBe(2);
    await encodeTree(encoder, (e, name) => e.addFile(name, FILE, MiB, [ZEROS]));
    await encoder.finish();

    const bytes = archive.bytes();
    expect(bytes.length).toBe(15070);
    expect(sha256(bytes)).toBe('7c446fc024044bae50124deeac4aa111e11c29aa636f33cfa112dfc0a1b0efa8');
    expect(bytes.equals(fixture('backup-client-pxar-data.mpxar'))).toBe(true);
    expect(encoder.position()).toBe(15070);

    expect(payload.size).toBe(104859232);
    expect(encoder.payloadPosition()).toBe(104859232);
    // §11.1: PAYLOAD_REF offsets 16 + k·1048592; the chunker is told each of them.
    expect(headers).toEqual(Array.from({ length: 100 }, (_, k) => 16 + k * ENTRY));
    expect(payload.digests).toEqual(didxDigests);

    // The very index upstream wrote, from our chunk digests at its end offsets.
    const rebuilt = encodeDynamicIndex({
      uuid: didx.uuid,
      ctime: didx.ctime,
      entries: payload.digests.map((digest, i) => ({
        end: didxEnds[i]!,
        digest: Buffer.from(digest, 'hex'),
      })),
    });
    expect(Buffer.from(rebuilt).equals(fixture('backup-client-pxar-data.ppxar.didx'))).toBe(true);
  });

  it('the buzhash chunker (avg 4 MiB) with the suggested boundaries cuts the payload stream exactly as upstream did', async () => {
    const splitter = new ChunkSplitter(4 * MiB);
    const ends: number[] = [];
    const digests: Uint8Array[] = [];
    let offset = 0;
    const take = (chunk: Uint8Array | undefined): void => {
      if (chunk === undefined) return;
      offset += chunk.length;
      ends.push(offset);
      digests.push(createHash('sha256').update(chunk).digest());
    };
    const encoder = await PxarEncoder.begin(DIR, {
      output: { write: () => undefined },
      payloadOutput: { write: (bytes) => splitter.push(bytes).forEach(take) },
      onPayloadHeader: (at) => splitter.suggestBoundary(at),
    });
    await encodeTree(encoder, (e, name) => e.addFile(name, FILE, MiB, [ZEROS]));
    await encoder.finish();
    take(splitter.finish());

    expect(ends).toEqual(didxEnds);
    const index = encodeDynamicIndex({
      uuid: didx.uuid,
      ctime: didx.ctime,
      entries: digests.map((digest, i) => ({ end: ends[i]!, digest })),
    });
    expect(Buffer.from(DynamicIndex.parse(index).indexCsum).toString('hex')).toBe(
      'e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20',
    );
  });
});

describe('upstream fixture backup-client-pxar-expected (metadata mode, all files reused)', () => {
  /**
   * The new payload stream: our START marker (16), then the old stream's chunks injected whole
   * (the first still holds the old start marker, so old offset o lands at 16 + o), then TAIL.
   */
  const refOffset = (k: number): number => 16 + (16 + k * ENTRY);
  const EXPECTED_SHA = 'c4fb679353ab79412517ecda6b2a51c55413a4a360b1b422d50d31f7f6035b0d';

  async function regenerate(
    order: 'inject-then-reference' | 'reference-then-inject',
  ): Promise<{ bytes: Buffer; payload: Buffer; encoder: PxarEncoder }> {
    const archive = new Collect();
    const payload = new Collect();
    const headers: number[] = [];
    const encoder = await PxarEncoder.begin(DIR, {
      output: archive,
      payloadOutput: payload,
      prelude: new Uint8Array(0),
      onPayloadHeader: (offset) => headers.push(offset),
    });
    if (order === 'inject-then-reference') encoder.advancePayloadPosition(didx.size);
    await encodeTree(encoder, async (e, name, k) => {
      expect(await e.addPayloadRef(name, FILE, MiB, refOffset(k))).toBeGreaterThan(0);
      // Upstream's order: reference the files of a run, then inject the chunks holding them
      // (here one old chunk per file, the sizes from the old index).
      if (order === 'reference-then-inject') {
        const range = didx.chunkRange(k);
        e.advancePayloadPosition(range.end - range.start);
      }
    });
    await encoder.finish();
    expect(headers).toEqual([]);
    return { bytes: archive.bytes(), payload: payload.bytes(), encoder };
  }

  for (const order of ['inject-then-reference', 'reference-then-inject'] as const) {
    it(`regenerates the .mpxar byte for byte (${order})`, async () => {
      const { bytes, payload, encoder } = await regenerate(order);
      expect(bytes.length).toBe(15086);
      expect(sha256(bytes)).toBe(EXPECTED_SHA);
      expect(bytes.equals(fixture('backup-client-pxar-expected.mpxar'))).toBe(true);
      // The encoder itself wrote only the two markers; the reused bytes were accounted for.
      expect(payload.length).toBe(32);
      expect(payload.readBigUInt64LE(0)).toBe(0x834c68c2194a4ed2n);
      expect(payload.readBigUInt64LE(16)).toBe(0x6c72b78b984c81b5n);
      expect(encoder.payloadPosition()).toBe(16 + 104859232 + 16);
    });
  }
});
