/**
 * `catalog dump` / `catalog find` for one snapshot, as PBS's client does them: from the catalog
 * (`catalog.pcat1.didx`, written beside legacy pxar archives) when the snapshot has one; otherwise
 * from each split archive's metadata stream (`*.mpxar.didx`, in name order), walked through its
 * goodbye tables without the payload stream. Both give the same lines (formatCatalogDumpLine):
 * the catalog's paths start with the archive directory (`./root.pxar.didx/etc/hosts`), the
 * metadata walk's with the `.mpxar.didx` name, as PBS prefixes them.
 *
 * `find` takes a PBS match pattern (default type include, `!` for exclude), matched against the
 * path inside the archive: an entry matched by an include pattern is printed, one matched by an
 * exclude pattern is skipped with everything below it, anything else is walked through.
 */
import { BurrowError } from '../lib/errors.js';
import type { CryptConfig } from '../crypto/crypt-config.js';
import type { CatalogEntry, CatalogEntryType } from '../format/catalog.js';
import { CatalogReader, formatCatalogDumpLine } from '../format/catalog.js';
import type { BackupManifest } from '../format/manifest.js';
import { CATALOG_NAME } from '../format/manifest.js';
import { PxarAccessor, type AccessorEntry } from '../pxar/accessor.js';
import { MatchList, parsePattern } from '../pxar/pattern.js';
import { formatSnapshot } from '../types/backup.js';
import type { BackupReader } from './backup-writer.js';
import { openArchiveReader } from './chunk-reader.js';

export interface SnapshotCatalog {
  /** Where the lines come from. */
  readonly source: 'catalog' | 'metadata-archives';
  /** The archives covered: `[catalog.pcat1.didx]` or the `.mpxar.didx` names. */
  readonly archives: readonly string[];
  dump(): AsyncIterable<string>;
  /**
   * Entries matching a PBS pattern (or a list, where the last matching pattern decides).
   * PATTERN_INVALID is thrown by find() itself, before any iteration.
   */
  find(pattern: string | readonly string[]): AsyncIterable<string>;
}

const SLASH = 0x2f;

type Matcher = (pathInArchive: Uint8Array, isDir: boolean) => boolean | 'exclude';

function matcherOf(patterns: string | readonly string[]): Matcher {
  const lines = typeof patterns === 'string' ? [patterns] : patterns;
  const list = new MatchList(lines.map((p) => parsePattern(p, 'include')));
  return (path, isDir) => {
    const type = list.match(path, isDir);
    if (type === 'include') return true;
    if (type === 'exclude') return 'exclude';
    return false;
  };
}

function join(prefix: Uint8Array, name: Uint8Array): Uint8Array {
  if (prefix.byteLength === 0) return name;
  const out = new Uint8Array(prefix.byteLength + 1 + name.byteLength);
  out.set(prefix);
  out[prefix.byteLength] = SLASH;
  out.set(name, prefix.byteLength + 1);
  return out;
}

const TYPE_OF_KIND: Readonly<Record<string, CatalogEntryType>> = {
  directory: 'd',
  file: 'f',
  symlink: 'l',
  hardlink: 'h',
  'block-device': 'b',
  'char-device': 'c',
  fifo: 'p',
  socket: 's',
};

function catalogEntryOf(entry: AccessorEntry): CatalogEntry {
  const type = TYPE_OF_KIND[entry.body.kind];
  if (type === undefined) {
    throw new BurrowError('INTERNAL', `unknown pxar entry kind ${entry.body.kind}`);
  }
  if (entry.body.kind === 'file') {
    return {
      type,
      name: entry.name,
      size: entry.body.size,
      mtime: entry.metadata?.stat.mtime.secs ?? 0,
    };
  }
  return { type, name: entry.name };
}

/** Lines of the legacy catalog; `match` (when given) sees paths below the archive directory. */
async function* catalogLines(
  catalog: CatalogReader,
  match: Matcher | undefined,
): AsyncGenerator<string> {
  if (match === undefined) {
    for await (const item of catalog.dump()) yield item.line;
    return;
  }
  const found = catalog.find((path, entry) => {
    const slash = path.indexOf(SLASH);
    // The top level holds the archive directories themselves: walk into them, never print them.
    if (slash < 0) return false;
    return match(path.subarray(slash + 1), entry.type === 'd');
  });
  for await (const item of found) yield formatCatalogDumpLine(item.path, item.entry);
}

/** Lines of one split archive's metadata stream, walked depth first in archive order. */
async function* accessorLines(
  accessor: PxarAccessor,
  archiveName: string,
  match: Matcher | undefined,
): AsyncGenerator<string> {
  const prefix = new TextEncoder().encode(archiveName);
  const stack: Array<{ children: AccessorEntry[]; next: number }> = [
    { children: await accessor.readDirectory(accessor.root()), next: 0 },
  ];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    const entry = frame.children[frame.next++];
    if (entry === undefined) {
      stack.pop();
      continue;
    }
    const isDir = entry.body.kind === 'directory';
    const verdict = match === undefined ? true : match(entry.path, isDir);
    if (verdict === true)
      yield formatCatalogDumpLine(join(prefix, entry.path), catalogEntryOf(entry));
    if (isDir && verdict !== 'exclude') {
      stack.push({ children: await accessor.readDirectory(entry), next: 0 });
    }
  }
}

/**
 * The catalog of the reader's snapshot (manifest from readSnapshotManifest). NOT_FOUND when it
 * has neither a catalog nor split archives; encrypted ones need `crypt` (BLOB_KEY_REQUIRED).
 */
export async function snapshotCatalog(
  reader: BackupReader,
  manifest: BackupManifest,
  crypt?: CryptConfig,
): Promise<SnapshotCatalog> {
  const snapshot = formatSnapshot(reader.snapshot);
  if (manifest.files.some((f) => f.filename === CATALOG_NAME)) {
    const archive = await openArchiveReader(reader, manifest, CATALOG_NAME, crypt);
    const catalog = new CatalogReader(archive, `snapshot ${snapshot}, archive ${CATALOG_NAME}`);
    return {
      source: 'catalog',
      archives: [CATALOG_NAME],
      dump: () => catalogLines(catalog, undefined),
      find: (pattern) => catalogLines(catalog, matcherOf(pattern)),
    };
  }
  const names = manifest.files
    .map((f) => f.filename)
    .filter((n) => n.endsWith('.mpxar.didx'))
    .sort();
  if (names.length === 0) {
    throw new BurrowError(
      'NOT_FOUND',
      `snapshot ${snapshot} has no catalog (${CATALOG_NAME}) and no split pxar archive (*.mpxar.didx) to list`,
      { details: { snapshot, archives: manifest.files.map((f) => f.filename) } },
    );
  }
  // Opened lazily and once: a dump touches every archive, a find too, in the same order.
  const accessors = new Map<string, Promise<PxarAccessor>>();
  const accessorOf = (name: string): Promise<PxarAccessor> => {
    let accessor = accessors.get(name);
    if (accessor === undefined) {
      accessor = (async () => {
        const archive = await openArchiveReader(reader, manifest, name, crypt);
        return PxarAccessor.open(archive, { name: `snapshot ${snapshot}, archive ${name}` });
      })();
      accessors.set(name, accessor);
    }
    return accessor;
  };
  async function* lines(match: Matcher | undefined): AsyncGenerator<string> {
    for (const name of names) yield* accessorLines(await accessorOf(name), name, match);
  }
  return {
    source: 'metadata-archives',
    archives: names,
    dump: () => lines(undefined),
    find: (pattern) => lines(matcherOf(pattern)),
  };
}
