/**
 * A backup that runs out of disk space: the store lives on a small tmpfs, the data does not fit.
 * The backup must fail with a clear message and leave no finished snapshot; the store keeps
 * working (a smaller backup afterwards succeeds, GC runs). Mounting needs root; as another user
 * the test checks that the mount is refused, so it never passes without testing anything.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './run-cli.js';

const isRoot = process.getuid?.() === 0;
let base: string;
let mountPoint: string;
let mounted = false;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'burrow-full-disk-'));
  mountPoint = join(base, 'small');
  mkdirSync(mountPoint);
});

afterAll(() => {
  if (mounted) spawnSync('umount', [mountPoint]);
  rmSync(base, { recursive: true, force: true });
});

describe('a backup into a full datastore', () => {
  it.runIf(!isRoot)('cannot be staged without root (mounting a small tmpfs is refused)', () => {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'none', mountPoint]);
    expect(r.status).not.toBe(0);
  });

  it.runIf(isRoot)(
    'fails cleanly, keeps no snapshot, and the store still works afterwards',
    async () => {
      // 48 MiB of tmpfs: room for the store's 65,536 chunk directories and a small backup,
      // not for 64 MiB of incompressible data.
      const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'none', mountPoint]);
      expect(m.status, m.stderr.toString()).toBe(0);
      mounted = true;
      const env = {
        BURROW_CONFIG_DIR: join(base, 'etc'),
        BURROW_RUN_DIR: join(base, 'run'),
        BURROW_LOG_DIR: join(base, 'log'),
        BURROW_DATASTORE_USER: '-',
        PBS_REPOSITORY: 'small',
      };
      const created = await runCli(
        'burrow-manager',
        ['datastore', 'create', 'small', join(mountPoint, 'store')],
        { env },
      );
      expect(created.status, created.stderr).toBe(0);

      const big = join(base, 'big');
      mkdirSync(big);
      for (let i = 0; i < 4; i++) writeFileSync(join(big, `r${i}`), randomBytes(16 * 1024 * 1024));
      const failed = await runCli(
        'burrow',
        ['backup', `big.pxar:${big}`, '--backup-id', 'full', '--backup-time', '1704067200'],
        { env },
      );
      expect(failed.status).not.toBe(0);
      expect(failed.stderr).toMatch(/ENOSPC|no space/i);
      // No snapshot of the group is left behind (the unfinished one was removed).
      const groupDir = join(mountPoint, 'store', 'host', 'full');
      const left = (() => {
        try {
          return readdirSync(groupDir).filter((n) => /^\d{4}-/.test(n));
        } catch {
          return [];
        }
      })();
      expect(left).toEqual([]);

      // The store works on: GC frees the orphaned chunks, then a small backup fits. They were
      // written just now, inside GC's 24 h grace window, so they are aged first (as a day later).
      const chunks = join(mountPoint, 'store', '.chunks');
      const dayAgo = Math.floor(Date.now() / 1000) - 2 * 86_400;
      for (const prefix of readdirSync(chunks))
        for (const name of readdirSync(join(chunks, prefix)))
          utimesSync(join(chunks, prefix, name), dayAgo, dayAgo);
      const gc = await runCli('burrow', ['garbage-collect'], { env });
      expect(gc.status, gc.stderr).toBe(0);
      const small = join(base, 'smalldata');
      mkdirSync(small);
      writeFileSync(join(small, 'f'), randomBytes(1024 * 1024));
      const okBackup = await runCli(
        'burrow',
        ['backup', `small.pxar:${small}`, '--backup-id', 'full', '--backup-time', '1704070800'],
        { env },
      );
      expect(okBackup.status, okBackup.stderr).toBe(0);
      const list = await runCli('burrow', ['snapshot', 'list', '--output-format', 'json'], { env });
      expect(list.status, list.stderr).toBe(0);
      expect(list.stdout).toContain('2024-01-01T01:00:00Z');
      expect(list.stdout).not.toContain('2024-01-01T00:00:00Z');
    },
    120_000,
  );
});
