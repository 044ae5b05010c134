/**
 * What a restore must reproduce of a directory tree, as comparable text per entry: kind and mode,
 * owner, mtime (ns), link count, size, content hash or link target, and the `user.tag` xattr.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { lGetXattr, nativeAvailable } from '../../src/lib/native-fs.js';

export function treeOf(root: string, ignore: readonly string[] = []): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    const path = rel === '' ? root : join(root, rel);
    const st = lstatSync(path, { bigint: true });
    let detail = '';
    if (st.isFile()) detail = createHash('sha256').update(readFileSync(path)).digest('hex');
    else if (st.isSymbolicLink()) detail = readlinkSync(path);
    const xattr =
      nativeAvailable() && !st.isSymbolicLink() ? lGetXattr(path, Buffer.from('user.tag')) : null;
    out.set(
      rel,
      [st.mode, st.uid, st.gid, st.isSymbolicLink() ? '' : st.mtimeNs, st.nlink, st.size, detail]
        .concat(xattr === null ? [] : [xattr.toString()])
        .join(' '),
    );
    if (st.isDirectory()) {
      for (const name of readdirSync(path).sort()) {
        const child = rel === '' ? name : `${rel}/${name}`;
        if (!ignore.includes(child)) walk(child);
      }
    }
  };
  walk('');
  return out;
}
