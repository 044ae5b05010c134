import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { toHex } from '../lib/bytes.js';
import { isBurrowError } from '../lib/errors.js';
import type { ErrorCode } from '../lib/errors.js';
import { encodeDynamicIndex } from '../format/dynamic-index.js';
import { encodeFixedIndex, encodeFixedIndexHeader } from '../format/fixed-index.js';
import { indexKindOfFile, readIndexFile } from './index-file.js';

// The shared fixtures sit beside the repository (../shared), in CI as on a developer's machine.
const FIXTURE = fileURLToPath(
  new URL(
    '../../../shared/fixtures/pbs-upstream/backup-client-pxar-data.ppxar.didx',
    import.meta.url,
  ),
);
const UUID = new Uint8Array(16).fill(9);
const sha256 = (bytes: Uint8Array): Uint8Array =>
  new Uint8Array(createHash('sha256').update(bytes).digest());

async function expectFileError(
  promise: Promise<unknown>,
  code: ErrorCode,
  path: string,
  message?: RegExp,
): Promise<void> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  expect(isBurrowError(caught), `expected BurrowError ${code}, got ${String(caught)}`).toBe(true);
  const error = caught as { code: string; message: string; details: Record<string, unknown> };
  expect(error.code).toBe(code);
  expect(error.message.startsWith(`${path}: `)).toBe(true);
  expect(error.details.file).toBe(path);
  if (message) expect(error.message).toMatch(message);
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-index-file-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('readIndexFile', () => {
  it('reads the upstream .didx fixture', async () => {
    const file = await readIndexFile(FIXTURE, { verifyCsum: true });
    expect(file.kind).toBe('dynamic');
    expect(file.index.count).toBe(100);
    expect(file.index.size).toBe(104859232);
    expect(toHex(file.index.indexCsum)).toBe(
      'e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20',
    );
  });

  it('tells the kinds apart by magic, not by name', async () => {
    const fidx = encodeFixedIndex({
      uuid: UUID,
      ctime: 1,
      size: 9,
      chunkSize: 4,
      digests: [1, 2, 3].map((i) => sha256(Uint8Array.of(i))),
    });
    const path = join(dir, 'misnamed.didx');
    await writeFile(path, fidx);
    const file = await readIndexFile(path);
    expect(file.kind).toBe('fixed');
    if (file.kind !== 'fixed') return;
    expect(file.index.chunkSize).toBe(4);
    expect(file.index.count).toBe(3);
  });

  it('prefixes errors with the path: bad magic, wrong length, bad entries, bad csum', async () => {
    const didx = encodeDynamicIndex({
      uuid: UUID,
      ctime: 1,
      entries: [{ end: 5, digest: sha256(new Uint8Array(1)) }],
    });
    const cases: [string, Uint8Array, ErrorCode, boolean?][] = [
      ['empty.didx', new Uint8Array(0), 'INDEX_BAD_SIZE'],
      ['short.didx', didx.subarray(0, 5), 'INDEX_BAD_SIZE'],
      ['header.didx', didx.subarray(0, 100), 'INDEX_BAD_SIZE'],
      ['magic.didx', Uint8Array.from(didx, (b, i) => (i === 0 ? b ^ 1 : b)), 'INDEX_BAD_MAGIC'],
      ['odd.didx', didx.subarray(0, didx.byteLength - 1), 'INDEX_BAD_SIZE'],
      ['entry.didx', Uint8Array.from(didx, (b, i) => (i === 4096 ? 0 : b)), 'INDEX_BAD_ENTRY'],
      [
        'csum.didx',
        Uint8Array.from(didx, (b, i) => (i === 40 ? b ^ 1 : b)),
        'INDEX_CSUM_MISMATCH',
        true,
      ],
      [
        'blob.fidx',
        Uint8Array.from(Buffer.from('42ab3807be8370a185114a0d68656c6c6f20776f726c64', 'hex')),
        'INDEX_BAD_MAGIC',
      ],
    ];
    for (const [name, bytes, code, verifyCsum] of cases) {
      const path = join(dir, name);
      await writeFile(path, bytes);
      await expectFileError(readIndexFile(path, { verifyCsum: verifyCsum ?? false }), code, path);
    }
  });

  it('missing file: NOT_FOUND; a directory: IO_ERROR', async () => {
    const missing = join(dir, 'nope.fidx');
    await expectFileError(readIndexFile(missing), 'NOT_FOUND', missing);
    const sub = join(dir, 'sub.fidx');
    await mkdir(sub);
    await expectFileError(readIndexFile(sub), 'IO_ERROR', sub);
  });

  it('a FIFO under an index name fails at once instead of hanging', async () => {
    const fifo = join(dir, 'pipe.didx');
    execFileSync('mkfifo', [fifo]);
    await expectFileError(readIndexFile(fifo), 'IO_ERROR', fifo);
  });

  it('checks the header against the real size before reading the body (sparse 100 GiB files)', async () => {
    // Header says 3 digests, file is 100 GiB: rejected from the header alone.
    const small = join(dir, 'small-header.fidx');
    await writeFile(
      small,
      encodeFixedIndexHeader({
        uuid: UUID,
        ctime: 1,
        indexCsum: new Uint8Array(32),
        size: 9,
        chunkSize: 4,
      }),
    );
    const handle = await open(small, 'r+');
    await handle.truncate(100 * 1024 ** 3);
    await handle.close();
    await expectFileError(readIndexFile(small), 'INDEX_BAD_SIZE', small, /implies 4192 bytes/);

    // Header consistent with a 100 GiB file: rejected by the in-memory limit, not read.
    const count = (100 * 1024 ** 3 - 4096) / 32;
    const big = join(dir, 'big-header.fidx');
    await writeFile(
      big,
      encodeFixedIndexHeader({
        uuid: UUID,
        ctime: 1,
        indexCsum: new Uint8Array(32),
        size: count * 65536,
        chunkSize: 65536,
      }),
    );
    const bigHandle = await open(big, 'r+');
    await bigHandle.truncate(100 * 1024 ** 3);
    await bigHandle.close();
    await expectFileError(readIndexFile(big), 'INDEX_BAD_SIZE', big, /limit/);

    // Same for a dynamic index of 2^31 entries.
    const dyn = join(dir, 'big.didx');
    await writeFile(dyn, encodeDynamicIndex({ uuid: UUID, ctime: 1, entries: [] }));
    const dynHandle = await open(dyn, 'r+');
    await dynHandle.truncate(4096 + 40 * 2 ** 31);
    await dynHandle.close();
    await expectFileError(readIndexFile(dyn), 'INDEX_BAD_SIZE', dyn, /limit/);
  });

  it('honours a custom size limit', async () => {
    const path = join(dir, 'copy.ppxar.didx');
    await copyFile(FIXTURE, path);
    await expectFileError(readIndexFile(path, { maxFileSize: 8095 }), 'INDEX_BAD_SIZE', path);
    expect((await readIndexFile(path, { maxFileSize: 8096 })).index.count).toBe(100);
  });
});

describe('indexKindOfFile', () => {
  it('is re-exported here', () => {
    expect(indexKindOfFile('drive-scsi0.img.fidx')).toBe('fixed');
    expect(indexKindOfFile('root.pxar.didx')).toBe('dynamic');
    expect(indexKindOfFile('qemu-server.conf.blob')).toBeUndefined();
  });
});
