import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NewFileWriter } from './new-file-writer.js';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-newfile-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('NewFileWriter', () => {
  it('shows the file under its name only after commit', async () => {
    const target = join(dir, 'a.pxar');
    const writer = await NewFileWriter.create(target);
    await writer.write(Buffer.from('hello '));
    await writer.write(Buffer.from('world'));
    expect(await readdir(dir)).toEqual([expect.stringMatching(/^a\.pxar\.tmp_/)]);
    await writer.commit();
    expect(await readdir(dir)).toEqual(['a.pxar']);
    expect(await readFile(target, 'utf8')).toBe('hello world');
    expect(writer.bytesWritten).toBe(11);
  });

  it('refuses an existing target up front and at commit, and leaves no temp file', async () => {
    const target = join(dir, 'b.pxar');
    await writeFile(target, 'old');
    expect(await rejectionCodeOf(NewFileWriter.create(target))).toBe('ALREADY_EXISTS');
    await rm(target);
    const writer = await NewFileWriter.create(target);
    await writer.write(Buffer.from('new'));
    await writeFile(target, 'raced');
    expect(await rejectionCodeOf(writer.commit())).toBe('ALREADY_EXISTS');
    expect(await readFile(target, 'utf8')).toBe('raced');
    expect(await readdir(dir)).toEqual(['b.pxar']);
  });

  it('abort removes the temp file', async () => {
    const writer = await NewFileWriter.create(join(dir, 'c'));
    await writer.write(Buffer.from('x'));
    await writer.abort();
    await writer.abort();
    expect(await readdir(dir)).toEqual([]);
  });
});
