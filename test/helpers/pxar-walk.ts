/**
 * Test helpers that read a whole pxar archive: through the streaming decoder (every event, every
 * file's contents) and through the accessor (a full walk of readDirectory from the root, with
 * lookups, contents and hardlink resolution). Both return plain records for comparison.
 */
import { PxarAccessor, type AccessorEntry } from '../../src/pxar/accessor.js';
import { PxarDecoder, type DecoderOptions } from '../../src/pxar/decoder.js';
import type { Entry, RandomAccess } from '../../src/pxar/format.js';
import { bytesRandomAccess } from '../../src/pxar/random-access.js';
import { concat, pieces } from './pxar-builder.js';

export const pathText = (p: Uint8Array): string => Buffer.from(p).toString('latin1');

export interface DecodedArchive {
  version: 1 | 2 | undefined;
  prelude: Uint8Array | undefined;
  /** 'entry:<path>' and 'end:<path>' in event order (paths as latin1 so any bytes survive). */
  events: string[];
  entries: Entry[];
  /** File contents by path (latin1). */
  contents: Map<string, Uint8Array>;
}

/** Decodes everything; reads the contents of every file unless `readContents` is false. */
export async function decodeAll(
  archive: Uint8Array,
  options: DecoderOptions & { chunk?: number | readonly number[]; readContents?: boolean } = {},
): Promise<DecodedArchive> {
  const decoder = new PxarDecoder(pieces(archive, options.chunk ?? 65536), {
    ...(options.payload === undefined ? {} : { payload: options.payload }),
    ...(options.name === undefined ? {} : { name: options.name }),
  });
  const events: string[] = [];
  const entries: Entry[] = [];
  const contents = new Map<string, Uint8Array>();
  for (;;) {
    const event = await decoder.next();
    if (event === undefined) break;
    if (event.type === 'directory-end') {
      events.push(`end:${pathText(event.path)}`);
      continue;
    }
    events.push(`entry:${pathText(event.entry.path)}`);
    entries.push(event.entry);
    if (event.entry.body.kind === 'file' && options.readContents !== false) {
      const parts: Uint8Array[] = [];
      for await (const piece of decoder.contents()) parts.push(piece.slice());
      contents.set(pathText(event.entry.path), concat(parts));
    }
  }
  return {
    version: decoder.formatVersion(),
    prelude: decoder.prelude(),
    events,
    entries,
    contents,
  };
}

export interface WalkedArchive {
  version: 1 | 2;
  entries: AccessorEntry[];
  contents: Map<string, Uint8Array>;
  /** Hardlink path -> resolved target path. */
  links: Map<string, string>;
}

/**
 * Walks the archive depth-first in archive order with readDirectory (iteratively), reading every
 * file, resolving every hardlink and looking every path up again.
 */
export async function walkAccessor(
  archive: Uint8Array | RandomAccess,
  options: { payload?: RandomAccess; name?: string; readContents?: boolean } = {},
): Promise<WalkedArchive> {
  const ra = archive instanceof Uint8Array ? bytesRandomAccess(archive) : archive;
  const accessor = await PxarAccessor.open(ra, options);
  const entries: AccessorEntry[] = [];
  const contents = new Map<string, Uint8Array>();
  const links = new Map<string, string>();
  const stack: AccessorEntry[] = [accessor.root()];
  while (stack.length > 0) {
    const entry = stack.pop()!;
    entries.push(entry);
    const again = await accessor.lookup(entry.path);
    if (again === undefined || again.fileNameOffset !== entry.fileNameOffset)
      throw new Error(`lookup(${pathText(entry.path)}) does not find the listed entry`);
    if (entry.body.kind === 'directory') {
      const children = await accessor.readDirectory(entry);
      for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
    } else if (entry.body.kind === 'file' && options.readContents !== false) {
      const parts: Uint8Array[] = [];
      for await (const piece of accessor.readFile(entry)) parts.push(piece.slice());
      contents.set(pathText(entry.path), concat(parts));
    } else if (entry.body.kind === 'hardlink') {
      const target = await accessor.resolveHardlink(entry);
      links.set(pathText(entry.path), pathText(target.path));
    }
  }
  return { version: accessor.formatVersion(), entries, contents, links };
}
