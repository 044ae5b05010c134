import { existsSync, mkdtempSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LockHolder } from '../../test/helpers/lock-holder-client.js';
import { forceNativeFallback } from '../lib/native-fs.js';
import { LOCK_FILE_MODE, lockFile } from './lock-file.js';

const dir = mkdtempSync(join(tmpdir(), 'burrow-flock-'));
let child: LockHolder;
let counter = 0;
const freshPath = (): string => join(dir, `store${counter}`, 'vm', `lock${counter++}`);

const ex = (timeoutMs = 0) => ({ exclusive: true, timeoutMs, what: 'test lock' });
const sh = (timeoutMs = 0) => ({ exclusive: false, timeoutMs, what: 'test lock' });

beforeAll(async () => {
  child = await LockHolder.start();
});
afterAll(async () => {
  await child.stop();
  rmSync(dir, { recursive: true, force: true });
});
afterEach(() => forceNativeFallback(false));

describe('lockFile', () => {
  it('creates parent directories and the file with mode 0660; release keeps the file', async () => {
    const path = freshPath();
    const guard = await lockFile(path, ex());
    expect(guard.path).toBe(path);
    expect(statSync(path).mode & 0o7777).toBe(LOCK_FILE_MODE);
    expect(LOCK_FILE_MODE).toBe(0o660);
    await guard.release();
    await guard.release(); // idempotent
    expect(existsSync(path)).toBe(true);
  });

  it('flock is per open file: two locks in one process exclude each other too', async () => {
    const path = freshPath();
    const a = await lockFile(path, ex());
    await expect(lockFile(path, sh())).rejects.toMatchObject({ code: 'LOCKED' });
    await a.release();
    const s1 = await lockFile(path, sh());
    const s2 = await lockFile(path, sh());
    await expect(lockFile(path, ex())).rejects.toMatchObject({ code: 'LOCKED' });
    await s1.release();
    await s2.release();
    await (await lockFile(path, ex())).release();
  });

  it('the LOCKED message starts with `what` and names the path', async () => {
    const path = freshPath();
    const a = await lockFile(path, ex());
    try {
      await expect(
        lockFile(path, { exclusive: true, timeoutMs: 0, what: 'backup group vm/100' }),
      ).rejects.toThrow(
        new RegExp(`^backup group vm/100: .*${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`),
      );
    } finally {
      await a.release();
    }
  });

  it('waits for a holder that lets go, and picks up a replaced lock file', async () => {
    const path = freshPath();
    const a = await lockFile(path, ex());
    const waiting = lockFile(path, ex(3000));
    await sleep(100);
    // The owner deletes the object with its lock file, then lets go: the waiter's flock then
    // succeeds on a deleted inode and must retry with a new file.
    unlinkSync(path);
    await a.release();
    const b = await waiting;
    expect(existsSync(path)).toBe(true);
    // b holds the lock on the file now at the path.
    await expect(lockFile(path, sh())).rejects.toMatchObject({ code: 'LOCKED' });
    await b.release();
  });
});

describe('lockFile errors', () => {
  it('a lock directory that cannot be created is IO_ERROR, not LOCKED', async () => {
    const file = freshPath();
    await (await lockFile(file, ex())).release();
    await expect(lockFile(join(file, 'sub', 'x'), ex())).rejects.toMatchObject({
      code: 'IO_ERROR',
    });
  });
});

describe('lockFile across two processes', () => {
  it('exclusive times out with LOCKED after about timeoutMs while another process holds it', async () => {
    const path = freshPath();
    const id = await child.take('flock-exclusive', path);
    const start = Date.now();
    await expect(lockFile(path, ex(300))).rejects.toMatchObject({
      code: 'LOCKED',
      details: { path, timeoutMs: 300 },
    });
    const elapsed = Date.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(1500);
    // timeout 0: one try, no waiting.
    const t0 = Date.now();
    await expect(lockFile(path, sh())).rejects.toMatchObject({ code: 'LOCKED' });
    expect(Date.now() - t0).toBeLessThan(200);
    await child.release(id);
  });

  it('shared locks of two processes coexist; exclusive is refused', async () => {
    const path = freshPath();
    const id = await child.take('flock-shared', path);
    const s = await lockFile(path, sh());
    await expect(lockFile(path, ex(50))).rejects.toMatchObject({ code: 'LOCKED' });
    await s.release();
    await child.release(id);
  });

  it('the other process is refused while we hold the lock', async () => {
    const path = freshPath();
    const g = await lockFile(path, ex());
    expect(await child.send(`flock-shared ${path}`)).toBe('err LOCKED');
    await g.release();
    await child.release(await child.take('flock-exclusive', path));
  });

  it('a waiting lock succeeds once the other process releases', async () => {
    const path = freshPath();
    const id = await child.take('flock-exclusive', path);
    const start = Date.now();
    const waiting = lockFile(path, ex(5000));
    await sleep(200);
    await child.release(id);
    const g = await waiting;
    const elapsed = Date.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual(190);
    expect(elapsed).toBeLessThan(2000);
    await g.release();
  });

  it('a waiting lock succeeds once the other process dies', async () => {
    const path = freshPath();
    const other = await LockHolder.start();
    await other.take('flock-exclusive', path);
    const waiting = lockFile(path, ex(5000));
    await sleep(100);
    other.kill();
    await other.exited;
    await (await waiting).release();
  });
});

describe('lockFile without the native helper', () => {
  it('throws NATIVE_UNAVAILABLE rather than pretending to lock', async () => {
    forceNativeFallback(true);
    await expect(lockFile(freshPath(), ex(100))).rejects.toMatchObject({
      code: 'NATIVE_UNAVAILABLE',
    });
  });
});
