import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import binding from 'zstd-napi/binding.js';
import { CryptConfig } from '../crypto/crypt-config.js';
import { concatBytes, fromHex, toHex } from '../lib/bytes.js';
import { BurrowError, isBurrowError, type ErrorCode } from '../lib/errors.js';
import {
  BLOB_KINDS,
  type BlobKind,
  blobCrc,
  blobHeaderSize,
  blobKindOf,
  blobMagic,
  computeChunkDigest,
  decodeBlob,
  encodeBlob,
  encodeBlobPieces,
  encodeChunk,
  parseBlobHeader,
  plainBlobDigest,
  verifyBlobCrc,
  verifyUnencrypted,
} from './data-blob.js';
import { MAGIC_SOURCES, MAX_BLOB_SIZE } from './magic.js';

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const sha256 = (data: Uint8Array): Uint8Array =>
  new Uint8Array(createHash('sha256').update(data).digest());

/** Deterministic bytes that zstd cannot shrink: a SHA-256 counter stream. */
function incompressible(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0, block = 0; i < length; i += 32, block++) {
    out.set(sha256(ascii(`${seed}:${block}`)).subarray(0, Math.min(32, length - i)), i);
  }
  return out;
}

/** Key #5 of pbs-protocol §11: scrypt("test", empty salt, N=65536, r=8, p=1), given as bytes. */
const KEY5 = new CryptConfig(
  fromHex('28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e'),
);
const KEY_ONES = new CryptConfig(new Uint8Array(32).fill(1));
const OTHER_KEY = new CryptConfig(new Uint8Array(32).fill(2));

/** Byte equality without vitest's element-by-element diff, which takes seconds on megabytes. */
function expectBytes(actual: Uint8Array, expected: Uint8Array): void {
  const same = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected);
  if (!same)
    expect(toHex(actual.subarray(0, 64)) + `..(${actual.byteLength})`).toBe(
      toHex(expected.subarray(0, 64)) + `..(${expected.byteLength})`,
    );
  expect(same).toBe(true);
}

function expectBurrowError(fn: () => unknown, code?: ErrorCode): BurrowError {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, 'expected a BurrowError to be thrown').toBeInstanceOf(BurrowError);
  if (code !== undefined) expect((thrown as BurrowError).code).toBe(code);
  return thrown as BurrowError;
}

/** A zstd-kind blob around an arbitrary payload, with a correct CRC. */
function zstdBlobOf(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + payload.byteLength);
  out.set(blobMagic('zstd'));
  new DataView(out.buffer).setUint32(8, crc32(payload), true);
  out.set(payload, 12);
  return out;
}

/** A zstd frame without content size, as PBS's streaming encoder writes for unencrypted blobs. */
function frameWithoutContentSize(data: Uint8Array): Uint8Array {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, 1);
  cctx.setParameter(binding.CParameter.contentSizeFlag, 0);
  const out = new Uint8Array(binding.compressBound(data.byteLength));
  return out.slice(0, cctx.compress2(out, data));
}

/**
 * A hand-made zstd frame (RFC 8878) of `total` copies of one byte in RLE blocks of 128 KiB: a few
 * bytes per 128 KiB of output, and no content size in the header unless `declared` is given.
 */
function rleFrame(total: number, declared?: bigint): Uint8Array {
  const block = 128 * 1024;
  const parts: number[] = [0x28, 0xb5, 0x2f, 0xfd];
  parts.push(declared === undefined ? 0x00 : 0xc0); // FHD: no FCS / 8-byte FCS, not single-segment
  parts.push((17 - 10) << 3); // window descriptor: 2^17 bytes
  if (declared !== undefined)
    for (let i = 0n; i < 8n; i++) parts.push(Number((declared >> (8n * i)) & 0xffn));
  for (let done = 0; done < total; done += block) {
    const size = Math.min(block, total - done);
    const last = done + block >= total ? 1 : 0;
    const header = last | (1 << 1) | (size << 3);
    parts.push(header & 0xff, (header >>> 8) & 0xff, (header >>> 16) & 0xff, 0x61);
  }
  return Uint8Array.from(parts);
}

describe('magic numbers', () => {
  const sources: Record<BlobKind, string> = {
    plain: MAGIC_SOURCES.UNCOMPRESSED_BLOB,
    zstd: MAGIC_SOURCES.COMPRESSED_BLOB,
    encrypted: MAGIC_SOURCES.ENCRYPTED_BLOB,
    'zstd-encrypted': MAGIC_SOURCES.ENCR_COMPR_BLOB,
  };
  it.each(BLOB_KINDS)('%s magic is SHA-256(source string)[0..8]', (kind) => {
    expect(toHex(blobMagic(kind))).toBe(toHex(sha256(ascii(sources[kind])).subarray(0, 8)));
    expect(blobKindOf(blobMagic(kind))).toBe(kind);
  });

  it('has the hex values of pbs-formats §3.1 and the header sizes of §3.2', () => {
    expect(toHex(blobMagic('plain'))).toBe('42ab3807be8370a1');
    expect(toHex(blobMagic('zstd'))).toBe('31b958426fb6a37f');
    expect(toHex(blobMagic('encrypted'))).toBe('7b6785be222d4cf0');
    expect(toHex(blobMagic('zstd-encrypted'))).toBe('e6591bbf0bbfd80b');
    expect(BLOB_KINDS.map(blobHeaderSize)).toEqual([12, 12, 44, 44]);
    expect(blobKindOf(fromHex('2f7f41ed91fd0fcd'))).toBeUndefined(); // the fixed index magic
    expect(blobKindOf(fromHex('42ab3807be8370'))).toBeUndefined(); // too short
  });
});

describe('known answers', () => {
  it('"hello" as an uncompressed blob (pbs-formats §3.3, §12)', () => {
    const expected = '42ab3807be8370a186a6103668656c6c6f';
    const blob = encodeBlob(ascii('hello'), { compress: false });
    expect(toHex(blob)).toBe(expected);
    // zstd cannot shrink 5 bytes, so the default (compress) gives the same bytes.
    expect(toHex(encodeBlob(ascii('hello')))).toBe(expected);
    expect(toHex(sha256(blob))).toBe(
      '9c5944aba3379b450612203cafb5bf60c2358103550b7f799d197f4668f169d5',
    );
    expect(parseBlobHeader(blob)).toEqual({ kind: 'plain', crc: 0x3610a686, headerSize: 12 });
    expectBytes(decodeBlob(fromHex(expected)), ascii('hello'));
  });

  it('"hello world" as a plain blob (pbs-protocol §11 #7)', () => {
    const data = ascii('hello world');
    const blob = encodeBlob(data);
    expect(toHex(blob)).toBe('42ab3807be8370a1' + '85114a0d' + '68656c6c6f20776f726c64');
    const digest = 'b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9';
    expect(toHex(computeChunkDigest(data))).toBe(digest);
    expectBytes(decodeBlob(blob, { expectedDigest: fromHex(digest), expectedSize: 11 }), data);
  });

  it('"hello world" encrypted with key #5 and IV 00..0f (pbs-protocol §11 #5, #6)', () => {
    expect(toHex(KEY5.idKey)).toBe(
      '758495a21c31047f543f46d694700e02d168568bab37bb0ceece947b591f5100',
    );
    const data = ascii('hello world');
    const iv = Uint8Array.from({ length: 16 }, (_, i) => i);
    const expected =
      '7b6785be222d4cf0' +
      '6a2c46ba' +
      '000102030405060708090a0b0c0d0e0f' +
      '6d2d3858258d5ad96ead35c094e32455' +
      '51539fb580570d51aea8df';
    expect(toHex(encodeBlob(data, { crypt: KEY5, iv, compress: false }))).toBe(expected);
    expect(toHex(encodeBlob(data, { crypt: KEY5, iv }))).toBe(expected);
    const digest = 'e42969791f6be2979d8edfb1b9c16f480285a05238251e749a377cf215508034';
    expect(toHex(computeChunkDigest(data, KEY5))).toBe(digest);
    const blob = fromHex(expected);
    const header = parseBlobHeader(blob);
    expect(header.kind).toBe('encrypted');
    expect(header.crc).toBe(0xba462c6a);
    expect(toHex(header.iv!)).toBe('000102030405060708090a0b0c0d0e0f');
    expect(toHex(header.tag!)).toBe('6d2d3858258d5ad96ead35c094e32455');
    expectBytes(
      decodeBlob(blob, { crypt: KEY5, expectedDigest: fromHex(digest), expectedSize: 11 }),
      data,
    );
  });

  it('the blob_writer test data: data[i] = i % 255, 100000 bytes (pbs-formats §12)', () => {
    const data = Uint8Array.from({ length: 100000 }, (_, i) => i % 255);
    const plain = '539a60c3a7cc268ecce082c9184702bc829bb106a2643dee26db3ff0bf8457ee';
    const keyed = '32a2bf5dff84090e7f175c27f666f5cc8268046ab6efda0e501196bceffdc675';
    expect(toHex(computeChunkDigest(data))).toBe(plain);
    expect(toHex(computeChunkDigest(data, KEY_ONES))).toBe(keyed);
    const cases: [BlobKind, Uint8Array, CryptConfig | undefined, string][] = [
      ['plain', encodeBlob(data, { compress: false }), undefined, plain],
      ['zstd', encodeBlob(data), undefined, plain],
      ['encrypted', encodeBlob(data, { compress: false, crypt: KEY_ONES }), KEY_ONES, keyed],
      ['zstd-encrypted', encodeBlob(data, { crypt: KEY_ONES }), KEY_ONES, keyed],
    ];
    for (const [kind, blob, crypt, digest] of cases) {
      expect(parseBlobHeader(blob).kind).toBe(kind);
      const out = decodeBlob(blob, {
        crypt,
        expectedDigest: fromHex(digest),
        expectedSize: data.byteLength,
      });
      expectBytes(out, data);
    }
    expect(toHex(encodeChunk(data, { crypt: KEY_ONES }).digest)).toBe(keyed);
    expect(toHex(encodeChunk(data).digest)).toBe(plain);
  });

  it('4 MiB of zeros (pbs-protocol §11 #8, pbs-formats §3.5)', () => {
    const zeros = new Uint8Array(4 * 1024 * 1024);
    const digest = 'bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8';
    const chunk = encodeChunk(zeros);
    expect(toHex(chunk.digest)).toBe(digest);
    expect(parseBlobHeader(chunk.blob).kind).toBe('zstd');
    expect(chunk.blob.byteLength).toBeLessThan(4096);
    expectBytes(
      decodeBlob(chunk.blob, { expectedDigest: fromHex(digest), expectedSize: zeros.byteLength }),
      zeros,
    );
    verifyUnencrypted(chunk.blob, zeros.byteLength, fromHex(digest));
  });
});

describe('encoding rules', () => {
  it('uses the plain magic for empty and incompressible data, zstd for compressible data', () => {
    for (const crypt of [undefined, KEY_ONES]) {
      const enc = crypt === undefined ? '' : 'encrypted';
      const kindOf = (data: Uint8Array): BlobKind =>
        parseBlobHeader(encodeBlob(data, { crypt })).kind;
      expect(kindOf(new Uint8Array(0))).toBe(enc || 'plain');
      expect(kindOf(incompressible(5000))).toBe(enc || 'plain');
      expect(kindOf(new Uint8Array(5000).fill(7))).toBe(crypt ? 'zstd-encrypted' : 'zstd');
      expect(
        parseBlobHeader(encodeBlob(new Uint8Array(5000), { crypt, compress: false })).kind,
      ).toBe(enc || 'plain');
    }
    expect(toHex(encodeBlob(new Uint8Array(0)))).toBe('42ab3807be8370a1' + '00000000');
  });

  it('puts a fresh random IV in every encrypted blob and covers only the ciphertext with the CRC', () => {
    const data = incompressible(1000);
    const a = encodeBlob(data, { crypt: KEY_ONES });
    const b = encodeBlob(data, { crypt: KEY_ONES });
    expect(toHex(parseBlobHeader(a).iv!)).not.toBe(toHex(parseBlobHeader(b).iv!));
    expect(a.byteLength).toBe(44 + 1000);
    expect(parseBlobHeader(a).crc).toBe(crc32(a.subarray(44)));
  });

  it('stores the zstd payload after a 12-byte header, as one frame of the data', () => {
    const data = new Uint8Array(10000).fill(1);
    const blob = encodeBlob(data);
    expect(parseBlobHeader(blob).crc).toBe(crc32(blob.subarray(12)));
    const frame = blob.subarray(12);
    const out = new Uint8Array(data.byteLength);
    expect(binding.decompress(out, frame)).toBe(data.byteLength);
    expectBytes(out, data);
  });

  it('refuses more than 128 MiB, and bad IV arguments', () => {
    expectBurrowError(() => encodeBlob(new Uint8Array(MAX_BLOB_SIZE + 1)), 'BLOB_TOO_LARGE');
    expectBurrowError(
      () => encodeBlob(new Uint8Array(1), { crypt: KEY_ONES, iv: new Uint8Array(12) }),
      'INVALID_ARGUMENT',
    );
    expectBurrowError(
      () => encodeBlob(new Uint8Array(1), { iv: new Uint8Array(16) }),
      'INVALID_ARGUMENT',
    );
  });

  it('returns plain Uint8Arrays, also for Buffer input', () => {
    const data = new Uint8Array(3000).fill(1);
    for (const [compress, crypt] of [
      [false, undefined],
      [true, undefined],
      [false, KEY_ONES],
      [true, KEY_ONES],
    ] as const) {
      const blob = encodeBlob(data, { compress, crypt });
      expect(Buffer.isBuffer(blob)).toBe(false);
      const out = decodeBlob(Buffer.from(blob), { crypt });
      expect(Buffer.isBuffer(out)).toBe(false);
      expectBytes(out, data);
      const header = parseBlobHeader(Buffer.from(blob));
      if (crypt) expect(Buffer.isBuffer(header.iv)).toBe(false);
    }
  });

  it('compresses at the level asked for; every level decodes to the same data', () => {
    // Text with near repeats: higher levels find more of them.
    const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'];
    const data = new TextEncoder().encode(
      Array.from({ length: 20_000 }, (_, i) => words[(i * 7 + (i >> 3)) % words.length]).join(' '),
    );
    const sizes = [1, 3, 19].map((level) => {
      for (const crypt of [undefined, KEY_ONES]) {
        const blob = encodeBlob(data, { level, crypt });
        expect(parseBlobHeader(blob).kind).toBe(crypt ? 'zstd-encrypted' : 'zstd');
        expectBytes(decodeBlob(blob, { crypt }), data);
      }
      return encodeBlob(data, { level }).byteLength;
    });
    expect(sizes[0]).toBe(encodeBlob(data).byteLength); // the default is level 1
    expect(sizes[1]).toBeLessThan(sizes[0]!);
    expect(sizes[2]).toBeLessThan(sizes[1]!);
  });

  it('never aliases the input', () => {
    const data = incompressible(100);
    const blob = encodeBlob(data, { compress: false });
    data[0] = data[0]! ^ 0xff;
    expect(() => decodeBlob(blob)).not.toThrow();
  });
});

describe('header and CRC', () => {
  it('reports truncated headers and unknown magics with typed errors', () => {
    const enc = encodeBlob(ascii('x'), { crypt: KEY_ONES });
    for (let len = 0; len < 8; len++)
      expectBurrowError(() => parseBlobHeader(enc.subarray(0, len)), 'BLOB_TRUNCATED');
    for (let len = 8; len < 44; len++)
      expectBurrowError(() => parseBlobHeader(enc.subarray(0, len)), 'BLOB_TRUNCATED');
    const plain = encodeBlob(ascii('x'));
    for (let len = 8; len < 12; len++)
      expectBurrowError(() => parseBlobHeader(plain.subarray(0, len)), 'BLOB_TRUNCATED');
    const err = expectBurrowError(
      () => parseBlobHeader(fromHex('2f7f41ed91fd0fcd00000000')),
      'BLOB_BAD_MAGIC',
    );
    expect(err.message).toContain('2f7f41ed91fd0fcd');
  });

  it('computes and verifies the CRC', () => {
    const blob = encodeBlob(ascii('hello'));
    expect(blobCrc(blob)).toEqual({ stored: 0x3610a686, computed: 0x3610a686 });
    verifyBlobCrc(blob);
    const bad = blob.slice();
    bad[16] = 0;
    expect(blobCrc(bad).stored).toBe(0x3610a686);
    expect(blobCrc(bad).computed).not.toBe(0x3610a686);
    expectBurrowError(() => verifyBlobCrc(bad), 'BLOB_CRC_MISMATCH');
    expectBurrowError(() => decodeBlob(bad), 'BLOB_CRC_MISMATCH');
    // Without the CRC check the (damaged) plain payload comes back as is.
    expectBytes(decodeBlob(bad, { checkCrc: false }), ascii('hell\0'));
  });
});

describe('decoding checks', () => {
  it('needs the key for encrypted blobs and rejects a wrong key', () => {
    for (const compress of [false, true]) {
      const blob = encodeBlob(new Uint8Array(3000).fill(9), { crypt: KEY_ONES, compress });
      expectBurrowError(() => decodeBlob(blob), 'BLOB_KEY_REQUIRED');
      expectBurrowError(() => decodeBlob(blob, { crypt: OTHER_KEY }), 'BLOB_DECRYPT_FAILED');
      expectBurrowError(
        () => decodeBlob(blob, { crypt: OTHER_KEY, checkCrc: false }),
        'BLOB_DECRYPT_FAILED',
      );
    }
  });

  it('checks digest and size', () => {
    const data = new Uint8Array(3000).fill(5);
    const digest = sha256(data);
    for (const crypt of [undefined, KEY_ONES]) {
      const blob = encodeBlob(data, { crypt });
      const right = computeChunkDigest(data, crypt);
      expectBytes(decodeBlob(blob, { crypt, expectedDigest: right, expectedSize: 3000 }), data);
      expectBurrowError(() => decodeBlob(blob, { crypt, expectedSize: 2999 }), 'SIZE_MISMATCH');
      expectBurrowError(() => decodeBlob(blob, { crypt, expectedSize: 3001 }), 'SIZE_MISMATCH');
      expectBurrowError(
        () => decodeBlob(blob, { crypt, expectedDigest: new Uint8Array(32) }),
        'DIGEST_MISMATCH',
      );
    }
    // An encrypted blob's digest is keyed: the plain SHA-256 does not match it.
    expectBurrowError(
      () =>
        decodeBlob(encodeBlob(data, { crypt: KEY_ONES }), {
          crypt: KEY_ONES,
          expectedDigest: digest,
        }),
      'DIGEST_MISMATCH',
    );
    // Sign-only data: key at hand, blob unencrypted: the plain SHA-256 applies.
    expectBytes(decodeBlob(encodeBlob(data), { crypt: KEY_ONES, expectedDigest: digest }), data);
  });

  it('verifyUnencrypted checks size and digest of unencrypted blobs only', () => {
    const data = new Uint8Array(2000).fill(3);
    const digest = sha256(data);
    verifyUnencrypted(encodeBlob(data), 2000, digest);
    verifyUnencrypted(encodeBlob(data, { compress: false }), 2000, digest);
    expectBurrowError(() => verifyUnencrypted(encodeBlob(data), 1999, digest), 'SIZE_MISMATCH');
    expectBurrowError(
      () => verifyUnencrypted(encodeBlob(data), 2000, new Uint8Array(32)),
      'DIGEST_MISMATCH',
    );
    verifyUnencrypted(encodeBlob(data, { crypt: KEY_ONES }), 1, new Uint8Array(32));
    const damaged = encodeBlob(data, { crypt: KEY_ONES });
    damaged[50] = damaged[50]! ^ 1;
    expectBurrowError(() => verifyUnencrypted(damaged, 2000, digest), 'BLOB_CRC_MISMATCH');
  });

  it('verifyUnencrypted without the CRC check still checks size and digest', () => {
    const data = new Uint8Array(3000).fill(9);
    for (const compress of [true, false]) {
      const blob = encodeBlob(data, { compress });
      blob[8] = blob[8]! ^ 1; // the CRC field
      expectBurrowError(() => verifyUnencrypted(blob, 3000, sha256(data)), 'BLOB_CRC_MISMATCH');
      verifyUnencrypted(blob, 3000, sha256(data), { checkCrc: false });
      expectBurrowError(
        () => verifyUnencrypted(blob, 3000, new Uint8Array(32), { checkCrc: false }),
        'DIGEST_MISMATCH',
      );
    }
    const encrypted = encodeBlob(data, { crypt: KEY_ONES });
    encrypted[8] = encrypted[8]! ^ 1;
    verifyUnencrypted(encrypted, 1, new Uint8Array(32), { checkCrc: false });
  });

  it('plainBlobDigest gives the digest and length of the data, whatever the encoding', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 30000 }), fc.uint8Array({ max: 1, maxLength: 30000 })),
        fc.boolean(),
        (data, compress) => {
          const blob = encodeBlob(data, { compress });
          const result = plainBlobDigest(blob);
          expect(toHex(result.digest)).toBe(toHex(sha256(data)));
          expect(result.size).toBe(data.byteLength);
          // Hashing in reused memory must not disturb the next result.
          const again = plainBlobDigest(encodeBlob(data.slice().reverse(), { compress }), {
            expectedSize: data.byteLength,
          });
          expect(toHex(again.digest)).toBe(toHex(sha256(data.slice().reverse())));
        },
      ),
      { numRuns: 40 },
    );
  });

  it('encodeBlobPieces hold the bytes of encodeBlob in order, for every kind', () => {
    const iv = new Uint8Array(16).fill(9);
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 30000 }), fc.uint8Array({ max: 1, maxLength: 30000 })),
        fc.boolean(),
        fc.boolean(),
        (data, compress, encrypt) => {
          const options = encrypt ? { compress, crypt: KEY_ONES, iv } : { compress };
          const pieces = encodeBlobPieces(data, options);
          // Gathered before the next compression, which may reuse the payload's memory.
          const gathered = concatBytes(...pieces);
          expect(pieces.length).toBe(encrypt ? 1 : 2);
          expect(toHex(gathered)).toBe(toHex(encodeBlob(data, options)));
          expect(blobKindOf(pieces[0]!)).toBe(blobKindOf(gathered));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('plainBlobDigest refuses encrypted, damaged and oversized blobs', () => {
    const data = new Uint8Array(5000).fill(4);
    expectBurrowError(
      () => plainBlobDigest(encodeBlob(data, { crypt: KEY_ONES })),
      'BLOB_KEY_REQUIRED',
    );
    const damaged = encodeBlob(data);
    damaged[damaged.byteLength - 1] = damaged[damaged.byteLength - 1]! ^ 0xff;
    expectBurrowError(() => plainBlobDigest(damaged), 'BLOB_CRC_MISMATCH');
    expect(() => plainBlobDigest(damaged, { checkCrc: false })).toThrow(BurrowError);
    expectBurrowError(
      () => plainBlobDigest(encodeBlob(data), { maxSize: 4999 }),
      'BLOB_DECOMPRESS_FAILED',
    );
    expectBurrowError(
      () => plainBlobDigest(encodeBlob(data, { compress: false }), { maxSize: 4999 }),
      'BLOB_TOO_LARGE',
    );
    expectBurrowError(() => plainBlobDigest(encodeBlob(data).subarray(0, 5)), 'BLOB_TRUNCATED');
  });

  it('refuses plain data above maxSize', () => {
    expectBurrowError(
      () => decodeBlob(encodeBlob(new Uint8Array(100), { compress: false }), { maxSize: 99 }),
      'BLOB_TOO_LARGE',
    );
    expect(
      decodeBlob(encodeBlob(new Uint8Array(100), { compress: false }), { maxSize: 100 }).byteLength,
    ).toBe(100);
  });

  it('checks its size arguments', () => {
    const blob = encodeBlob(new Uint8Array(100));
    for (const bad of [-1, 1.5, Number.NaN, Infinity]) {
      expectBurrowError(() => decodeBlob(blob, { maxSize: bad }), 'INVALID_ARGUMENT');
      expectBurrowError(() => decodeBlob(blob, { expectedSize: bad }), 'INVALID_ARGUMENT');
    }
  });
});

describe('zstd payloads from other writers', () => {
  const data = concatBytes(
    new Uint8Array(200000).fill(4),
    incompressible(50000),
    ascii('tail'.repeat(5000)),
  );

  it('decodes frames without a content size, with and without a size hint', () => {
    const frame = frameWithoutContentSize(data);
    expect(binding.getFrameContentSize(frame)).toBeNull();
    const blob = zstdBlobOf(frame);
    expectBytes(decodeBlob(blob), data);
    expectBytes(
      decodeBlob(blob, { expectedSize: data.byteLength, expectedDigest: sha256(data) }),
      data,
    );
    expectBurrowError(
      () => decodeBlob(blob, { expectedSize: data.byteLength - 1 }),
      'SIZE_MISMATCH',
    );
    expectBurrowError(
      () => decodeBlob(blob, { expectedSize: data.byteLength + 1 }),
      'SIZE_MISMATCH',
    );
  });

  it('decodes several concatenated frames, rejects trailing garbage and cut frames', () => {
    const a = frameWithoutContentSize(data.subarray(0, 1000));
    const b = encodeBlob(data.subarray(1000)).subarray(12);
    expectBytes(decodeBlob(zstdBlobOf(concatBytes(a, b))), data);
    expectBytes(
      decodeBlob(zstdBlobOf(concatBytes(b, a))),
      concatBytes(data.subarray(1000), data.subarray(0, 1000)),
    );
    expectBurrowError(
      () => decodeBlob(zstdBlobOf(concatBytes(b, ascii('junk')))),
      'BLOB_DECOMPRESS_FAILED',
    );
    expectBurrowError(
      () => decodeBlob(zstdBlobOf(concatBytes(a, ascii('junk')))),
      'BLOB_DECOMPRESS_FAILED',
    );
    for (const frame of [a, b]) {
      for (const cut of [0, 1, 4, 5, 6, 10, frame.byteLength >> 1, frame.byteLength - 1]) {
        expectBurrowError(
          () => decodeBlob(zstdBlobOf(frame.subarray(0, cut))),
          'BLOB_DECOMPRESS_FAILED',
        );
      }
    }
  });

  it('refuses zstd bombs: frames that expand beyond maxSize', () => {
    // Without a content size: the output is cut off at the limit while streaming.
    const bomb = zstdBlobOf(rleFrame(4 * 1024 * 1024));
    expect(bomb.byteLength).toBeLessThan(200);
    expect(decodeBlob(bomb, { maxSize: 4 * 1024 * 1024 }).byteLength).toBe(4 * 1024 * 1024);
    expectBurrowError(
      () => decodeBlob(bomb, { maxSize: 4 * 1024 * 1024 - 1 }),
      'BLOB_DECOMPRESS_FAILED',
    );
    expectBurrowError(
      () => decodeBlob(bomb, { maxSize: 64 * 1024, expectedSize: 64 * 1024 }),
      'BLOB_DECOMPRESS_FAILED',
    );
    // Encrypted bombs are refused the same way after authentication.
    const zeros = encodeBlob(new Uint8Array(1024 * 1024), { crypt: KEY_ONES });
    expect(parseBlobHeader(zeros).kind).toBe('zstd-encrypted');
    expectBurrowError(
      () => decodeBlob(zeros, { crypt: KEY_ONES, maxSize: 1000 }),
      'BLOB_DECOMPRESS_FAILED',
    );
    // A declared content size above the limit is refused before anything is allocated.
    const liar = zstdBlobOf(rleFrame(10, 1n << 40n));
    expectBurrowError(() => decodeBlob(liar), 'BLOB_DECOMPRESS_FAILED');
    // And one declaring less than it holds is damaged.
    expectBurrowError(
      () => decodeBlob(zstdBlobOf(rleFrame(300000, 10n))),
      'BLOB_DECOMPRESS_FAILED',
    );
  });

  it('refuses a 129 MiB bomb at the default 128 MiB limit', () => {
    const bomb = zstdBlobOf(rleFrame(MAX_BLOB_SIZE + 1024 * 1024));
    expect(bomb.byteLength).toBeLessThan(5000);
    const err = expectBurrowError(() => decodeBlob(bomb), 'BLOB_DECOMPRESS_FAILED');
    expect(err.message).toContain(String(MAX_BLOB_SIZE));
  });
});

describe('properties', () => {
  const crypts = [undefined, KEY_ONES] as const;

  it('decode(encode(x)) == x for every kind and option', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 3000 }),
          fc.uint8Array({ min: 0, max: 3, maxLength: 3000 }),
        ),
        fc.boolean(),
        fc.constantFrom(...crypts),
        (data, compress, crypt) => {
          const blob = encodeBlob(data, { compress, crypt });
          const kind = parseBlobHeader(blob).kind;
          if (!compress) expect(kind).toBe(crypt ? 'encrypted' : 'plain');
          if (crypt) expect(kind.endsWith('encrypted')).toBe(true);
          // Compression only when it makes the payload smaller.
          expect(blob.byteLength).toBeLessThanOrEqual(blobHeaderSize(kind) + data.byteLength);
          expectBytes(
            decodeBlob(blob, {
              crypt,
              expectedSize: data.byteLength,
              expectedDigest: computeChunkDigest(data, crypt),
            }),
            data,
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  /** One sample blob of every kind, made from `data` (compressible) and its incompressible twin. */
  function samples(data: Uint8Array): [BlobKind, Uint8Array][] {
    const noise = incompressible(data.byteLength, data[0]);
    const repeated = concatBytes(data, data, data, data);
    return [
      ['plain', encodeBlob(noise)],
      ['zstd', encodeBlob(repeated)],
      ['encrypted', encodeBlob(noise, { crypt: KEY_ONES })],
      ['zstd-encrypted', encodeBlob(repeated, { crypt: KEY_ONES })],
    ];
  }

  it('any single changed byte gives a BurrowError, never data', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 20, maxLength: 80 }),
        fc.integer({ min: 1, max: 255 }),
        (data, xor) => {
          for (const [kind, blob] of samples(data)) {
            expect(parseBlobHeader(blob).kind).toBe(kind);
            for (let pos = 0; pos < blob.byteLength; pos++) {
              const bad = blob.slice();
              bad[pos] = bad[pos]! ^ xor;
              expectBurrowError(() => decodeBlob(bad, { crypt: KEY_ONES }));
            }
          }
        },
      ),
      { numRuns: 15 },
    );
  });

  it('every truncation gives a BurrowError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 20, maxLength: 80 }), (data) => {
        for (const [, blob] of samples(data)) {
          for (let len = 0; len < blob.byteLength; len++) {
            expectBurrowError(() => decodeBlob(blob.subarray(0, len), { crypt: KEY_ONES }));
          }
        }
      }),
      { numRuns: 15 },
    );
  });

  it('a wrong key is always BLOB_DECRYPT_FAILED', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 500 }), fc.boolean(), (data, compress) => {
        const blob = encodeBlob(data, { crypt: KEY_ONES, compress });
        expectBurrowError(() => decodeBlob(blob, { crypt: OTHER_KEY }), 'BLOB_DECRYPT_FAILED');
      }),
      { numRuns: 50 },
    );
  });

  it('hostile bytes after a valid magic never escape as a non-BurrowError', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...BLOB_KINDS),
        fc.uint8Array({ maxLength: 120 }),
        fc.boolean(),
        (kind, rest, checkCrc) => {
          const raw = concatBytes(blobMagic(kind), rest);
          try {
            decodeBlob(raw, { crypt: KEY_ONES, checkCrc, maxSize: 1 << 20 });
          } catch (error) {
            expect(isBurrowError(error), String(error)).toBe(true);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
