/**
 * ArchiveOptions.reusePayload, the archiver's hook for metadata change detection: a file the
 * callback claims becomes a PAYLOAD_REF to where the callback put its payload, and is not read.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createArchive, readRootMetadata } from './archiver.js';
import type { ReusableFile } from './archiver.js';
import { PxarDecoder } from './decoder.js';
import { PxarEncoder } from './encoder.js';
import { ITEM_HEADER_SIZE, PXAR } from './format.js';
import { bytesRandomAccess } from './random-access.js';

let tmp: string | undefined;
afterEach(() => {
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
});

function tree(): string {
  tmp = mkdtempSync(join(tmpdir(), 'burrow-reuse-'));
  mkdirSync(join(tmp, 'd'));
  writeFileSync(join(tmp, 'a'), 'aaaa');
  writeFileSync(join(tmp, 'd/b'), 'bbbbbbbb');
  writeFileSync(join(tmp, 'd/c'), 'cc');
  linkSync(join(tmp, 'd/b'), join(tmp, 'e'));
  return tmp;
}

/** A PAYLOAD item with `content`, as the payload stream holds it (pxar-format §9.2). */
function payloadItem(content: Uint8Array): Uint8Array {
  const item = new Uint8Array(ITEM_HEADER_SIZE + content.length);
  const view = new DataView(item.buffer);
  view.setBigUint64(0, PXAR.PAYLOAD, true);
  view.setBigUint64(8, BigInt(item.length), true);
  item.set(content, ITEM_HEADER_SIZE);
  return item;
}

async function decode(archive: Uint8Array, payload: Uint8Array): Promise<Map<string, string>> {
  const decoder = new PxarDecoder(
    (async function* () {
      yield await Promise.resolve(archive);
    })(),
    { payload: bytesRandomAccess(payload) },
  );
  const out = new Map<string, string>();
  for (;;) {
    const event = await decoder.next();
    if (event === undefined) break;
    if (event.type !== 'entry') continue;
    const path = Buffer.from(event.entry.path).toString();
    const body = event.entry.body;
    if (body.kind === 'file') {
      const parts: Uint8Array[] = [];
      for await (const piece of decoder.contents()) parts.push(piece.slice());
      out.set(path, Buffer.concat(parts).toString());
    } else if (body.kind === 'hardlink') {
      out.set(path, `-> ${Buffer.from(body.target).toString()}`);
    }
  }
  return out;
}

describe('createArchive reusePayload', () => {
  it('turns claimed files into payload references without reading them', async () => {
    const src = tree();
    const archive: Uint8Array[] = [];
    const payload: Uint8Array[] = [];
    const encoder = await PxarEncoder.begin(await readRootMetadata(src), {
      output: { write: (b) => void archive.push(b.slice()) },
      payloadOutput: { write: (b) => void payload.push(b.slice()) },
    });
    const asked: string[] = [];
    const read: string[] = [];
    const reuse = (file: ReusableFile): number | undefined => {
      const path = Buffer.from(file.path).toString();
      asked.push(`${path}:${file.size}:${file.metadata.stat.mode.toString(8)}`);
      if (path !== 'd/b' && path !== 'a') return undefined;
      // Stand-in content of the same size shows that the file on disk was not read.
      const offset = encoder.payloadPosition();
      const item = payloadItem(new Uint8Array(file.size).fill(0x52));
      payload.push(item);
      encoder.advancePayloadPosition(item.length);
      return offset;
    };
    const stats = await createArchive(src, encoder, {
      reusePayload: reuse,
      beforeFileRead: (p) => void read.push(p),
    });
    await encoder.finish();
    expect(asked).toEqual(['a:4:100644', 'd/b:8:100644', 'd/c:2:100644']);
    expect(read).toEqual([join(src, 'd/c')]);
    expect(stats.entries.file).toBe(3);
    expect(stats.entries.hardlink).toBe(1);
    expect(stats.bytes).toBe(2);
    const decoded = await decode(Buffer.concat(archive), Buffer.concat(payload));
    expect(decoded).toEqual(
      new Map([
        ['a', 'RRRR'],
        ['d/b', 'RRRRRRRR'],
        ['d/c', 'cc'],
        ['e', '-> d/b'],
      ]),
    );
  });

  it('is not asked for unified (v1) archives', async () => {
    const src = tree();
    const encoder = await PxarEncoder.begin(await readRootMetadata(src), {
      output: { write: () => undefined },
    });
    let asked = 0;
    await createArchive(src, encoder, {
      reusePayload: () => {
        asked++;
        return 0;
      },
    });
    await encoder.finish();
    expect(asked).toBe(0);
  });
});
