import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DynamicIndex, encodeDynamicIndex } from '../format/dynamic-index.js';
import { toHex } from '../lib/bytes.js';
import { PxarAccessor } from '../pxar/accessor.js';
import { bytesRandomAccess } from '../pxar/random-access.js';
import { buildArchive, type TreeNode } from '../../test/helpers/pxar-builder.js';
import type { PxarEncoder } from '../pxar/encoder.js';
import { EMPTY_ACL, metadataOf } from '../pxar/format.js';
import type { Metadata } from '../pxar/format.js';
import type { BackupWriter } from './backup-writer.js';
import { ChunkingSink } from './backup-streams.js';
import { InjectingWriter, PayloadReuser, PreviousTree, metadataEqual } from './payload-reuse.js';

const digest = (n: number): Uint8Array => new Uint8Array(32).fill(n);

interface Recorded {
  appends: { digests: string[]; offsets: number[] }[];
  closed?: { count: number; size: number; csum: string };
}

function fakeWriter(rec: Recorded): BackupWriter {
  const fail = (): never => {
    throw new Error('not expected');
  };
  return {
    snapshot: { group: { ns: { components: [] }, type: 'host', id: 'x' }, time: 1 },
    previousBackupTime: fail,
    downloadPrevious: fail,
    createIndex: fail,
    uploadChunk: fail,
    uploadBlob: fail,
    finish: fail,
    close: fail,
    appendIndex: (_wid, _kind, digests, offsets) => {
      rec.appends.push({
        digests: digests.map((d) => toHex(d).slice(0, 2)),
        offsets: [...offsets],
      });
      return Promise.resolve();
    },
    closeIndex: (_wid, _kind, count, size, csum) => {
      rec.closed = { count, size, csum: toHex(csum) };
      return Promise.resolve();
    },
  };
}

/** The dynamic csum over (end u64 LE || digest) entries, computed here independently. */
function csumOf(entries: [end: number, d: number][]): string {
  const h = createHash('sha256');
  for (const [end, d] of entries) {
    const e = Buffer.alloc(40);
    e.writeBigUInt64LE(BigInt(end));
    e.fill(d, 8);
    h.update(e);
  }
  return h.digest('hex');
}

describe('InjectingWriter', () => {
  it('places injected chunks at their data offsets and closes with the real index', async () => {
    const rec: Recorded = { appends: [] };
    const w = new InjectingWriter(fakeWriter(rec), 7);
    // Data chunks (data offsets): A [0,10) B [10,30) C [30,35); injections: X,Y (100+50 bytes)
    // at data offset 10 (between A and B), Z (7 bytes) at data offset 35 (the end).
    w.inject(10, [digest(0xaa)], [100]);
    w.inject(10, [digest(0xbb)], [50]);
    w.inject(35, [digest(0xcc)], [7]);
    await w.appendIndex(7, 'dynamic', [digest(1)], [0]);
    await w.appendIndex(7, 'dynamic', [digest(2), digest(3)], [10, 30]);
    await w.closeIndex(7, 'dynamic', 3, 35, new Uint8Array(32));
    expect(rec.appends).toEqual([
      { digests: ['01'], offsets: [0] },
      { digests: ['aa', 'bb', '02', '03'], offsets: [10, 110, 160, 180] },
      { digests: ['cc'], offsets: [185] },
    ]);
    expect(rec.closed).toEqual({
      count: 6,
      size: 192,
      csum: csumOf([
        [10, 1],
        [110, 0xaa],
        [160, 0xbb],
        [180, 2],
        [185, 3],
        [192, 0xcc],
      ]),
    });
    expect(w.result).toMatchObject({ size: 192, chunkCount: 6 });
    expect([w.injectedChunks, w.injectedBytes]).toEqual([3, 157]);
  });

  it('handles injections before any data chunk and passes other writers through', async () => {
    const rec: Recorded = { appends: [] };
    const w = new InjectingWriter(fakeWriter(rec), 1);
    w.inject(0, [digest(9)], [40]);
    await w.appendIndex(1, 'dynamic', [digest(1)], [0]);
    await w.appendIndex(2, 'dynamic', [digest(5)], [123]);
    await w.closeIndex(1, 'dynamic', 1, 16, new Uint8Array(32));
    expect(rec.appends).toEqual([
      { digests: ['09', '01'], offsets: [0, 40] },
      { digests: ['05'], offsets: [123] },
    ]);
    expect(rec.closed).toEqual({
      count: 2,
      size: 56,
      csum: csumOf([
        [40, 9],
        [56, 1],
      ]),
    });
  });
});

describe('metadataEqual', () => {
  const base: Metadata = {
    stat: { mode: 0o100644, flags: 0, uid: 1, gid: 2, mtime: { secs: 5, nanos: 6 } },
    xattrs: [
      { name: Buffer.from('user.a'), value: Buffer.from('1') },
      { name: Buffer.from('user.b'), value: Buffer.from('2') },
    ],
    acl: { ...EMPTY_ACL, users: [{ id: 7, permissions: 4 }] },
    fcaps: new Uint8Array([1, 2]),
    quotaProjectId: 3,
  };
  it('is true only when every stored field matches', () => {
    expect(metadataEqual(base, { ...base, xattrs: [...base.xattrs] })).toBe(true);
    const changes: Metadata[] = [
      { ...base, stat: { ...base.stat, mtime: { secs: 5, nanos: 7 } } },
      { ...base, stat: { ...base.stat, mode: 0o100600 } },
      { ...base, stat: { ...base.stat, uid: 9 } },
      { ...base, xattrs: [base.xattrs[1]!, base.xattrs[0]!] },
      { ...base, acl: EMPTY_ACL },
      { ...base, acl: { ...base.acl, default: { userObj: 7 } } },
      { ...base, fcaps: new Uint8Array([1, 3]) },
      { stat: base.stat, xattrs: base.xattrs, acl: base.acl, quotaProjectId: 3 },
      { ...base, quotaProjectId: 4 },
    ];
    for (const m of changes) expect(metadataEqual(base, m)).toBe(false);
  });
});

describe('PayloadReuser', () => {
  const meta = metadataOf({
    mode: 0o100644,
    flags: 0,
    uid: 0,
    gid: 0,
    mtime: { secs: 1, nanos: 0 },
  });
  // Previous payload stream: chunks [0,200) [200,350) [350,500) [500,1100), the first one
  // starting with the 16-byte start marker. Old files (PAYLOAD header offset, size):
  // f1 ends at 200, f2 fills [200,350), f3 [350,386), f4 [386,500), f5 [500,1100).
  const old = new Map<string, [offset: number, size: number]>([
    ['f1', [16, 168]],
    ['f2', [200, 134]],
    ['f3', [350, 20]],
    ['f4', [386, 98]],
    ['f5', [500, 584]],
  ]);
  const index = DynamicIndex.parse(
    encodeDynamicIndex({
      uuid: new Uint8Array(16),
      ctime: 0,
      entries: [200, 350, 500, 1100].map((end, i) => ({ end, digest: digest(0x10 + i) })),
    }),
  );

  function setup(): {
    reuser: PayloadReuser;
    sink: ChunkingSink;
    injector: InjectingWriter;
    encoder: { position: number };
    file: (name: string, size?: number) => { path: Uint8Array; metadata: Metadata; size: number };
  } {
    // The old files all lie in the root directory; the reuser lists it once.
    const root = { name: new Uint8Array(0), path: new Uint8Array(0), body: { kind: 'directory' } };
    let listings = 0;
    const accessor = {
      root: () => root,
      readDirectory: (dir: unknown) => {
        expect(dir).toBe(root);
        expect(++listings).toBe(1);
        return Promise.resolve(
          [...old].map(([name, [payloadOffset, size]]) => ({
            name: Buffer.from(name),
            path: Buffer.from(name),
            body: { kind: 'file', payloadOffset, size },
            metadata: meta,
          })),
        );
      },
    } as unknown as PxarAccessor;
    const sink = new ChunkingSink('test', 64 * 1024, 100);
    const injector = new InjectingWriter(fakeWriter({ appends: [] }), 1);
    const encoder = { position: 16 };
    const reuser = new PayloadReuser({
      previous: accessor,
      previousPayload: index,
      sink,
      injector,
    });
    reuser.attach({
      payloadPosition: () => encoder.position,
      advancePayloadPosition: (n: number) => void (encoder.position += n),
    } as unknown as PxarEncoder);
    return {
      reuser,
      sink,
      injector,
      encoder,
      file: (name, size) => ({
        path: Buffer.from(name),
        metadata: meta,
        size: size ?? old.get(name)![1],
      }),
    };
  }

  it('reuses a contiguous run, injecting each old chunk once', async () => {
    const { reuser, encoder, file } = setup();
    // The new stream has the 16-byte start marker; the first old chunk goes right after it.
    // f1's run starts with 16 bytes of padding (the old start marker): 8 % of the chunk.
    expect(await reuser.decide(file('f1'))).toBe(16 + 16);
    expect(await reuser.decide(file('f2'))).toBe(16 + 200);
    expect(await reuser.decide(file('f3'))).toBe(16 + 350);
    expect(await reuser.decide(file('f4'))).toBe(16 + 386);
    expect(encoder.position).toBe(16 + 500);
    expect(reuser.stats).toMatchObject({ files: 4, chunks: 3, chunkBytes: 500, reencoded: 0 });
  });

  it('re-encodes a file whose run would start with too much padding, and resumes at a chunk start', async () => {
    const { reuser, encoder, file } = setup();
    expect(await reuser.decide(file('f2'))).toBe(16);
    // A changed file is written in between: the run is broken.
    encoder.position += 500;
    // f4 starts 36 bytes into the old chunk [350,500): 36 > 10 % of 150.
    expect(await reuser.decide(file('f4'))).toBeUndefined();
    encoder.position += 114;
    // f5 starts its chunk: no padding.
    expect(await reuser.decide(file('f5'))).toBe(16 + 150 + 500 + 114);
    expect(reuser.stats).toMatchObject({ files: 2, reencoded: 1, chunks: 2 });
  });

  it('does not reuse files with other metadata, another size or no old entry', async () => {
    const { reuser, file } = setup();
    expect(
      await reuser.decide({
        ...file('f1'),
        metadata: { ...meta, acl: { ...EMPTY_ACL, groupObj: 5 } },
      }),
    ).toBeUndefined();
    expect(await reuser.decide(file('f1', 69))).toBeUndefined();
    expect(await reuser.decide(file('nope', 3))).toBeUndefined();
    expect(reuser.stats.files).toBe(0);
  });

  it('cuts the pending payload bytes before injecting', async () => {
    const { reuser, sink, injector, encoder, file } = setup();
    await sink.write(new Uint8Array(16)); // the start marker, pending in the splitter
    encoder.position = 16;
    expect(await reuser.decide(file('f1'))).toBe(32);
    expect(sink.queuedBytes).toBe(16);
    expect(sink.streamOffset).toBe(216);
    await injector.appendIndex(1, 'dynamic', [digest(1)], [0]);
    await injector.closeIndex(1, 'dynamic', 1, 16, new Uint8Array(32));
    expect(injector.result).toMatchObject({ size: 216, chunkCount: 2 });
  });
});

describe('PreviousTree', () => {
  const data = (s: string): Uint8Array => new TextEncoder().encode(s);
  const tree: TreeNode[] = [
    { kind: 'file', name: 'a', data: data('a') },
    {
      kind: 'dir',
      name: 'd',
      children: [
        {
          kind: 'dir',
          name: 'e',
          children: [{ kind: 'file', name: 'y', data: data('yy') }],
        },
        { kind: 'file', name: 'x', data: data('xxx') },
        { kind: 'file', name: 'z', data: data('zzzz') },
      ],
    },
    { kind: 'file', name: 'f', data: data('fffff') },
    { kind: 'dir', name: 'g', children: [{ kind: 'file', name: 'w', data: data('w') }] },
  ];

  it('answers like lookup, listing each directory once for a walk in archive order', async () => {
    const built = buildArchive(tree, { version: 2 });
    const accessor = await PxarAccessor.open(bytesRandomAccess(built.archive), {
      payload: bytesRandomAccess(built.payload!),
    });
    const listed: string[] = [];
    const readDirectory = accessor.readDirectory.bind(accessor);
    accessor.readDirectory = (dir) => {
      listed.push(Buffer.from(dir.path).toString());
      return readDirectory(dir);
    };
    const previous = new PreviousTree(accessor);
    // Depth first in archive order, with paths that are missing or lead through a file.
    const walk = ['a', 'd/e/y', 'd/e/nope', 'd/x', 'd/z', 'd/nope/q', 'a/b', 'f', 'g/w', 'nope'];
    for (const path of walk) {
      const got = await previous.entry(Buffer.from(path));
      const expected = await accessor.lookup(path);
      expect(got?.fileNameOffset, path).toBe(expected?.fileNameOffset);
      expect(got?.body, path).toEqual(expected?.body);
    }
    expect(listed).toEqual(['', 'd', 'd/e', 'g']);
    expect(await previous.entry(new Uint8Array(0))).toBe(accessor.root());
  });
});
