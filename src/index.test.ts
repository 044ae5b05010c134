import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeStore } from '../test/helpers/store-fixture.js';
import * as burrow from './index.js';

describe('the library entry', () => {
  it('round-trips a blob and a manifest through the public API alone', () => {
    const data = new TextEncoder().encode('library use');
    const blob = burrow.encodeBlob(data);
    expect(new TextDecoder().decode(burrow.decodeBlob(blob))).toBe('library use');
    const manifest = burrow.parseManifest(
      JSON.stringify({
        'backup-type': 'host',
        'backup-id': 'h1',
        'backup-time': 1700000000,
        files: [],
        signature: null,
        unprotected: {},
      }),
    );
    expect(manifest.backupId).toBe('h1');
    expect(burrow.formatBackupTime(manifest.backupTime)).toBe('2023-11-14T22:13:20Z');
  });
});

describe('the README library example', () => {
  it('looks up a store and runs a GC task through the public API', async () => {
    const fixture = await makeStore({ name: 'demo' });
    try {
      // As in README.md, with the fixture's directories instead of the environment's.
      const dirs = burrow.resolveDirs(fixture.dirs);
      const store = await burrow.DataStore.lookup('demo', { dirs });
      const tasks = new burrow.TaskManager({ dirs });
      const { upid, result } = await tasks.run('garbage_collection', 'demo', 'root@pam', (task) =>
        burrow.garbageCollection(store, task),
      );
      expect(result['removed-bytes']).toBe(0);
      expect((await tasks.readLog(upid)).at(-1)).toMatch(/: TASK OK$/);
    } finally {
      await fixture.cleanup();
    }
  });
});

describe('pxar through the public API', () => {
  it('archives a directory into memory and reads one file back by path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'burrow-lib-pxar-'));
    try {
      mkdirSync(join(dir, 'etc'));
      writeFileSync(join(dir, 'etc', 'hosts'), '127.0.0.1 localhost\n');
      const pieces: Uint8Array[] = [];
      const encoder = await burrow.PxarEncoder.begin(await burrow.readRootMetadata(dir), {
        output: { write: (b) => void pieces.push(Uint8Array.from(b)) },
      });
      const stats = await burrow.createArchive(dir, encoder);
      await encoder.finish();
      expect(stats.entries.file).toBe(1);
      const archive = Buffer.concat(pieces);
      const accessor = await burrow.PxarAccessor.open(burrow.bytesRandomAccess(archive));
      const hosts = await accessor.lookup('etc/hosts');
      expect(hosts?.body.kind).toBe('file');
      const content: Uint8Array[] = [];
      for await (const piece of accessor.readFile(hosts!)) content.push(piece);
      expect(Buffer.concat(content).toString()).toBe('127.0.0.1 localhost\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
