/**
 * DataBlob codec speed next to the raw primitives it is built from, measured in the same run on the
 * same data (`npm run bench:formats`).
 *
 * Data: 4 MiB chunks of deterministic mixed content (random runs, log lines, zero runs, binary
 * records, source-like text), plus a few all-random chunks, so zstd keeps some chunks and gives up
 * on others. Every figure is MB/s of plaintext (10^6 bytes).
 *
 * Method: every codec operation is paired with the "raw pipeline" it cannot avoid: the same
 * primitives (zstd-napi's high-level compress/decompress, node:crypto AES-256-GCM, zlib crc32)
 * called one after the other on the same chunk, following the path the codec takes on that chunk,
 * without building a blob. The two run back to back on each chunk, alternating which goes first;
 * the time per (operation, chunk) is the best over all rounds, which filters out most of the noise
 * of a shared machine for both sides alike. BENCH_ROUNDS=n changes the number of rounds.
 */
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { compress as rawZstdCompress, decompress as rawZstdDecompress } from 'zstd-napi';
import binding from 'zstd-napi/binding.js';
import { CryptConfig } from '../src/crypto/crypt-config.js';
import {
  type BlobKind,
  blobMagic,
  computeChunkDigest,
  decodeBlob,
  encodeBlob,
  parseBlobHeader,
} from '../src/format/data-blob.js';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;
const MIXED_CHUNKS = 6;
const RANDOM_CHUNKS = 2;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 12);

// ---------------------------------------------------------------------------------------------
// Deterministic data

/** splitmix32: small, fast, seeded. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Incompressible bytes from AES-256-CTR over zeros with a fixed key: deterministic and fast. */
function randomStream(seed: number, length: number): Uint8Array {
  const key = createHash('sha256').update(`bench key ${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return new Uint8Array(cipher.update(Buffer.alloc(length)));
}

const WORDS =
  'alpha beta gamma delta request response user session cache miss hit error warning info debug token block chunk index store write read sync flush'.split(
    ' ',
  );

function mixedChunk(seed: number): Uint8Array {
  const rnd = prng(seed);
  const noise = randomStream(seed, CHUNK);
  const out = new Uint8Array(CHUNK);
  const enc = new TextEncoder();
  let pos = 0;
  let clock = 1_700_000_000 + seed * 1000;
  while (pos < CHUNK) {
    const len = Math.min(CHUNK - pos, 4096 + (rnd() % (60 * 1024)));
    const end = pos + len;
    switch (rnd() % 6) {
      case 0: // random (already compressed media, encrypted files)
      case 1:
        out.set(noise.subarray(pos, end), pos);
        break;
      case 2: {
        // log lines with unique timestamps
        while (pos < end) {
          clock += 1 + (rnd() % 3);
          const n = 3 + (rnd() % 8);
          let line = `${new Date(clock * 1000).toISOString()} host-${rnd() % 16} app[${rnd() % 65536}]:`;
          for (let i = 0; i < n; i++) line += ` ${WORDS[rnd() % WORDS.length]}`;
          const bytes = enc.encode(`${line} id=${rnd().toString(16)}\n`);
          out.set(bytes.subarray(0, end - pos), pos);
          pos += bytes.byteLength;
        }
        break;
      }
      case 3: // zero run (sparse files, padding); out is already zero
        break;
      case 4: {
        // binary records: counters, small ints, a few random bytes
        const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
        for (let p = pos; p + 16 <= end; p += 16) {
          view.setUint32(p, p >>> 4, true);
          view.setUint32(p + 4, rnd() % 1000, true);
          view.setUint32(p + 8, 0x2a, true);
          view.setUint32(p + 12, rnd() & 0xff, true);
        }
        break;
      }
      default: {
        // source-like text
        while (pos < end) {
          const indent = ' '.repeat(2 * (rnd() % 4));
          const bytes = enc.encode(
            `${indent}const ${WORDS[rnd() % WORDS.length]}${rnd() % 100} = ${WORDS[rnd() % WORDS.length]}(${rnd() % 4096});\n`,
          );
          out.set(bytes.subarray(0, end - pos), pos);
          pos += bytes.byteLength;
        }
      }
    }
    pos = end;
  }
  return out;
}

const chunks: Uint8Array[] = [];
for (let i = 0; i < MIXED_CHUNKS; i++) chunks.push(mixedChunk(i + 1));
for (let i = 0; i < RANDOM_CHUNKS; i++) chunks.push(randomStream(1000 + i, CHUNK));
const totalBytes = chunks.reduce((sum, c) => sum + c.byteLength, 0);

const crypt = new CryptConfig(createHash('sha256').update('bench key').digest());
const key = crypt.encKey;
const iv = new Uint8Array(16).fill(7);

// ---------------------------------------------------------------------------------------------
// Inputs for the decoders and the raw pipelines

const asBuf = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const frames = chunks.map(
  (c) => new Uint8Array(rawZstdCompress(asBuf(c), { compressionLevel: 1 })),
);
const compressedWins = frames.map((f, i) => f.byteLength < chunks[i]!.byteLength);

function gcmEncrypt(data: Uint8Array): { ct: Buffer; tag: Buffer } {
  const c = createCipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
  const ct = c.update(data);
  c.final();
  return { ct, tag: c.getAuthTag() };
}
function gcmDecrypt(sealed: { ct: Uint8Array; tag: Buffer }): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
  d.setAuthTag(sealed.tag);
  const out = d.update(sealed.ct);
  d.final();
  return out;
}
function copyWithHeader(data: Uint8Array, header: number): Uint8Array {
  const out = Buffer.allocUnsafeSlow(header + data.byteLength);
  out.set(data, header);
  return out;
}
/** Frames as PBS's streaming encoder writes them for unencrypted blobs: no content size. */
const streamCctx = new binding.CCtx();
streamCctx.setParameter(binding.CParameter.compressionLevel, 1);
streamCctx.setParameter(binding.CParameter.contentSizeFlag, 0);
const pbsFrames = chunks.map((c) => {
  const out = new Uint8Array(binding.compressBound(c.byteLength));
  return out.slice(0, streamCctx.compress2(out, c));
});
const pbsBlobs = pbsFrames.map((frame) => {
  const blob = new Uint8Array(12 + frame.byteLength);
  blob.set(blobMagic('zstd'));
  new DataView(blob.buffer).setUint32(8, crc32(frame), true);
  blob.set(frame, 12);
  return blob;
});
const sealedPlain = chunks.map(gcmEncrypt);
const sealedFrames = frames.map(gcmEncrypt);

const KINDS = [
  'plain',
  'zstd',
  'encrypted',
  'zstd-encrypted',
] as const satisfies readonly BlobKind[];
const blobs: Record<BlobKind, Uint8Array[]> = {
  plain: chunks.map((c) => encodeBlob(c, { compress: false })),
  zstd: chunks.map((c) => encodeBlob(c)),
  encrypted: chunks.map((c) => encodeBlob(c, { compress: false, crypt })),
  'zstd-encrypted': chunks.map((c) => encodeBlob(c, { crypt })),
};

// Sanity: the codec decodes what it encoded and took the path the raw pipelines assume.
for (let i = 0; i < chunks.length; i++) {
  for (const kind of KINDS) {
    const blob = blobs[kind][i]!;
    if (!asBuf(decodeBlob(blob, { crypt })).equals(chunks[i]!))
      throw new Error(`round trip failed: ${kind} chunk ${i}`);
    const got = parseBlobHeader(blob).kind;
    if ((kind === 'zstd' || kind === 'zstd-encrypted') && (got === kind) !== compressedWins[i]) {
      throw new Error(`unexpected kind ${got} for chunk ${i}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// What is measured

type Op = (i: number) => unknown;

const primitives: [string, Op][] = [
  ['crc32 (zlib)', (i) => crc32(chunks[i]!)],
  ['sha256', (i) => createHash('sha256').update(chunks[i]!).digest()],
  ['memcpy into new buffer', (i) => copyWithHeader(chunks[i]!, 0)],
  ['aes-256-gcm encrypt', (i) => gcmEncrypt(chunks[i]!)],
  ['aes-256-gcm decrypt', (i) => gcmDecrypt(sealedPlain[i]!)],
  ['zstd -1 compress', (i) => rawZstdCompress(asBuf(chunks[i]!), { compressionLevel: 1 })],
  ['zstd decompress', (i) => rawZstdDecompress(asBuf(frames[i]!))],
];

/**
 * Each codec operation next to the raw pipeline it cannot avoid: the same primitives run one after
 * the other on the same chunk, following the path the codec takes there, without assembling a blob.
 */
const pairs: { name: string; raw: string; ours: Op; rawOp: Op }[] = [
  {
    name: 'encode plain',
    raw: 'copy + crc32',
    ours: (i) => encodeBlob(chunks[i]!, { compress: false }),
    rawOp: (i) => [copyWithHeader(chunks[i]!, 12), crc32(chunks[i]!)],
  },
  {
    name: 'decode plain',
    raw: 'crc32',
    ours: (i) => decodeBlob(blobs.plain[i]!),
    rawOp: (i) => crc32(chunks[i]!),
  },
  {
    name: 'encode zstd',
    raw: 'zstd -1 + crc32',
    ours: (i) => encodeBlob(chunks[i]!),
    rawOp: (i) => {
      const frame = rawZstdCompress(asBuf(chunks[i]!), { compressionLevel: 1 });
      return frame.byteLength < chunks[i]!.byteLength
        ? crc32(frame)
        : [copyWithHeader(chunks[i]!, 12), crc32(chunks[i]!)];
    },
  },
  {
    name: 'decode zstd',
    raw: 'crc32 + unzstd',
    ours: (i) => decodeBlob(blobs.zstd[i]!),
    rawOp: (i) =>
      compressedWins[i]
        ? [crc32(frames[i]!), rawZstdDecompress(asBuf(frames[i]!))]
        : crc32(chunks[i]!),
  },
  {
    name: 'decode zstd, PBS frame',
    raw: 'crc32 + unzstd (streaming)',
    ours: (i) => decodeBlob(pbsBlobs[i]!),
    rawOp: (i) => [crc32(pbsFrames[i]!), rawZstdDecompress(asBuf(pbsFrames[i]!))],
  },
  {
    name: '  same, size known',
    raw: 'crc32 + unzstd (streaming)',
    ours: (i) => decodeBlob(pbsBlobs[i]!, { expectedSize: chunks[i]!.byteLength }),
    rawOp: (i) => [crc32(pbsFrames[i]!), rawZstdDecompress(asBuf(pbsFrames[i]!))],
  },
  {
    name: 'encode encrypted',
    raw: 'gcm + crc32',
    ours: (i) => encodeBlob(chunks[i]!, { compress: false, crypt }),
    rawOp: (i) => crc32(gcmEncrypt(chunks[i]!).ct),
  },
  {
    name: 'decode encrypted',
    raw: 'crc32 + gcm',
    ours: (i) => decodeBlob(blobs.encrypted[i]!, { crypt }),
    rawOp: (i) => [crc32(sealedPlain[i]!.ct), gcmDecrypt(sealedPlain[i]!)],
  },
  {
    name: 'encode zstd-encrypted',
    raw: 'zstd -1 + gcm + crc32',
    ours: (i) => encodeBlob(chunks[i]!, { crypt }),
    rawOp: (i) => {
      const frame = rawZstdCompress(asBuf(chunks[i]!), { compressionLevel: 1 });
      return crc32(gcmEncrypt(frame.byteLength < chunks[i]!.byteLength ? frame : chunks[i]!).ct);
    },
  },
  {
    name: 'decode zstd-encrypted',
    raw: 'crc32 + gcm + unzstd',
    ours: (i) => decodeBlob(blobs['zstd-encrypted'][i]!, { crypt }),
    rawOp: (i) => {
      const sealed = compressedWins[i] ? sealedFrames[i]! : sealedPlain[i]!;
      crc32(sealed.ct);
      const plain = gcmDecrypt(sealed);
      return compressedWins[i] ? rawZstdDecompress(plain) : plain;
    },
  },
  {
    name: 'digest (SHA-256)',
    raw: 'sha256',
    ours: (i) => computeChunkDigest(chunks[i]!),
    rawOp: (i) => createHash('sha256').update(chunks[i]!).digest(),
  },
  {
    name: 'digest (keyed)',
    raw: 'sha256(data || id_key)',
    ours: (i) => computeChunkDigest(chunks[i]!, crypt),
    rawOp: (i) => createHash('sha256').update(chunks[i]!).update(crypt.idKey).digest(),
  },
];

// ---------------------------------------------------------------------------------------------
// Timing: best time per (operation, chunk) over all rounds

function timed(op: Op, i: number): number {
  const t0 = performance.now();
  op(i);
  return performance.now() - t0;
}

const bestOf = new Map<string, Float64Array>();
function record(key: string, i: number, ms: number): void {
  let times = bestOf.get(key);
  if (times === undefined)
    bestOf.set(key, (times = new Float64Array(chunks.length).fill(Infinity)));
  if (ms < times[i]!) times[i] = ms;
}
const totalMs = (key: string): number => bestOf.get(key)!.reduce((a, b) => a + b, 0);
const mbps = (ms: number): number => totalBytes / 1e6 / (ms / 1000);

const started = performance.now();
for (const [, op] of primitives) for (let i = 0; i < chunks.length; i++) op(i); // warm-up
for (const p of pairs) {
  for (let i = 0; i < chunks.length; i++) {
    p.ours(i);
    p.rawOp(i);
  }
}

for (let round = 0; round < ROUNDS; round++) {
  for (const [name, op] of primitives)
    for (let i = 0; i < chunks.length; i++) record(`prim:${name}`, i, timed(op, i));
  for (const p of pairs) {
    for (let i = 0; i < chunks.length; i++) {
      // Back to back on the same chunk, alternating who goes first, so both see the same machine.
      if (round % 2 === 0) {
        record(`ours:${p.name}`, i, timed(p.ours, i));
        record(`raw:${p.name}`, i, timed(p.rawOp, i));
      } else {
        record(`raw:${p.name}`, i, timed(p.rawOp, i));
        record(`ours:${p.name}`, i, timed(p.ours, i));
      }
    }
  }
}
const elapsed = (performance.now() - started) / 1000;

// ---------------------------------------------------------------------------------------------
// Report

const frameBytes = frames.reduce((s, f) => s + f.byteLength, 0);
const fmt = (n: number, width: number): string => n.toFixed(0).padStart(width);
console.log(
  `DataBlob benchmark: ${chunks.length} chunks x 4 MiB (${MIXED_CHUNKS} mixed, ${RANDOM_CHUNKS} random); ` +
    `zstd -1 ratio ${(frameBytes / totalBytes).toFixed(3)}, compression kept for ${compressedWins.filter(Boolean).length}/${chunks.length} chunks`,
);
console.log(
  `Node ${process.version}; best of ${ROUNDS} rounds per chunk; MB/s of plaintext (1 MB = 10^6 bytes)\n`,
);
console.log('Raw primitives');
for (const [name] of primitives)
  console.log(`  ${name.padEnd(24)} ${fmt(mbps(totalMs(`prim:${name}`)), 7)} MB/s`);
console.log('\nCodec vs raw pipeline');
console.log(
  `  ${'operation'.padEnd(24)} ${'ours'.padStart(7)} ${'raw'.padStart(7)} ${'ours/raw'.padStart(9)}   raw pipeline`,
);
for (const p of pairs) {
  const ours = totalMs(`ours:${p.name}`);
  const raw = totalMs(`raw:${p.name}`);
  console.log(
    `  ${p.name.padEnd(24)} ${fmt(mbps(ours), 7)} ${fmt(mbps(raw), 7)} ${((raw / ours) * 100).toFixed(0).padStart(8)}%   ${p.raw}`,
  );
}
console.log(
  `\nours/raw is raw time divided by our time: 100% = no overhead, above 100% = faster than the naive pipeline.`,
);
console.log(`(${elapsed.toFixed(1)} s)`);
