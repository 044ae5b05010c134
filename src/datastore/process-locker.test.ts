import { linkSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LockHolder } from '../../test/helpers/lock-holder-client.js';
import { FakeClock } from '../lib/clock.js';
import { isBurrowError } from '../lib/errors.js';
import { forceNativeFallback } from '../lib/native-fs.js';
import { ProcessLocker } from './process-locker.js';

const dir = mkdtempSync(join(tmpdir(), 'burrow-plock-'));
let child: LockHolder;
let counter = 0;
const freshPath = (): string => join(dir, `store${counter++}.lock`);

beforeAll(async () => {
  child = await LockHolder.start();
});
afterAll(async () => {
  await child.stop();
  rmSync(dir, { recursive: true, force: true });
});
afterEach(() => forceNativeFallback(false));

function expectLocked(fn: () => unknown): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(isBurrowError(thrown, 'LOCKED'), `expected LOCKED, got ${String(thrown)}`).toBe(true);
}

describe('ProcessLocker registry', () => {
  it('creates the lock file and returns one instance per path', async () => {
    const path = freshPath();
    const a = await ProcessLocker.open(path);
    const b = await ProcessLocker.open(join(dir, '.', `x/../${path.slice(dir.length + 1)}`));
    expect(b).toBe(a);
    expect(statSync(path).isFile()).toBe(true);
  });

  it('concurrent opens share one instance', async () => {
    const path = freshPath();
    const [a, b] = await Promise.all([ProcessLocker.open(path), ProcessLocker.open(path)]);
    expect(b).toBe(a);
  });

  it('another name of the same inode (hard link) gets the same instance', async () => {
    const path = freshPath();
    const a = await ProcessLocker.open(path);
    const other = `${path}.hardlink`;
    linkSync(path, other);
    expect(await ProcessLocker.open(other)).toBe(a);
  });

  it('a lock file removed and created again gets a new locker that other processes see', async () => {
    const path = freshPath();
    const old = await ProcessLocker.open(path);
    rmSync(path);
    const renewed = await ProcessLocker.open(path);
    expect(renewed).not.toBe(old);
    const guard = renewed.tryShared();
    // The child opens the new file: our shared lock must keep its exclusive attempt out.
    expect(await child.send(`exclusive ${path}`)).toBe('err LOCKED');
    guard.release();
  });

  it('a missing directory is NOT_FOUND', async () => {
    await expect(ProcessLocker.open(join(dir, 'no', 'such', '.lock'))).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });
});

describe('ProcessLocker within one process', () => {
  it('shared and exclusive guards coexist (fcntl locks are per process)', async () => {
    const locker = await ProcessLocker.open(freshPath());
    const s1 = locker.tryShared();
    const s2 = locker.tryShared();
    const x = locker.tryExclusive();
    const s3 = locker.tryShared();
    expectLocked(() => locker.tryExclusive()); // one exclusive guard at a time
    x.release();
    for (const g of [s1, s2, s3]) g.release();
  });

  it('oldestWriter is the earliest live shared guard, in clock seconds', async () => {
    const clock = new FakeClock(1_700_000_000);
    const locker = await ProcessLocker.open(freshPath(), clock);
    expect(locker.oldestWriter()).toBeUndefined();
    const a = locker.tryShared();
    clock.advance(10);
    const b = locker.tryShared();
    clock.advance(10);
    const x = locker.tryExclusive(); // the exclusive guard is not a writer
    expect(locker.oldestWriter()).toBe(1_700_000_000);
    a.release();
    expect(locker.oldestWriter()).toBe(1_700_000_010);
    a.release(); // idempotent: must not disturb the count
    expect(locker.oldestWriter()).toBe(1_700_000_010);
    b.release();
    expect(locker.oldestWriter()).toBeUndefined();
    x.release();
  });
});

describe('ProcessLocker across two processes', () => {
  it('exclusive is refused while another process holds shared; shared is not', async () => {
    const path = freshPath();
    const locker = await ProcessLocker.open(path);
    const id = await child.take('shared', path);
    expectLocked(() => locker.tryExclusive());
    const s = locker.tryShared();
    expectLocked(() => locker.tryExclusive()); // upgrading our own shared lock does not help
    await child.release(id);
    const x = locker.tryExclusive(); // now the upgrade succeeds
    x.release();
    s.release();
  });

  it('shared is refused while another process holds exclusive', async () => {
    const path = freshPath();
    const locker = await ProcessLocker.open(path);
    const id = await child.take('exclusive', path);
    expectLocked(() => locker.tryShared());
    expectLocked(() => locker.tryExclusive());
    await child.release(id);
    locker.tryShared().release();
  });

  it('the other process is refused while we hold locks, and released locks are gone', async () => {
    const path = freshPath();
    const locker = await ProcessLocker.open(path);
    const s = locker.tryShared();
    expect(await child.send(`exclusive ${path}`)).toBe('err LOCKED');
    const childShared = await child.take('shared', path);
    await child.release(childShared);
    s.release();
    const childX = await child.take('exclusive', path);
    await child.release(childX);
  });

  it('releasing the exclusive guard downgrades to shared while shared guards remain', async () => {
    const path = freshPath();
    const locker = await ProcessLocker.open(path);
    const s = locker.tryShared();
    const x = locker.tryExclusive();
    expect(await child.send(`shared ${path}`)).toBe('err LOCKED'); // we hold F_WRLCK
    x.release();
    // Downgraded to F_RDLCK: others may read-lock, not write-lock.
    const childShared = await child.take('shared', path);
    await child.release(childShared);
    expect(await child.send(`exclusive ${path}`)).toBe('err LOCKED');
    s.release(); // last guard: F_UNLCK
    const childX = await child.take('exclusive', path);
    await child.release(childX);
  });

  it('releasing the exclusive guard with no shared guards unlocks', async () => {
    const path = freshPath();
    const locker = await ProcessLocker.open(path);
    const x = locker.tryExclusive();
    x.release();
    const childX = await child.take('exclusive', path);
    await child.release(childX);
  });

  it('locks of a process that exits are gone', async () => {
    const path = freshPath();
    const locker = await ProcessLocker.open(path);
    const other = await LockHolder.start();
    try {
      await other.take('shared', path);
      expectLocked(() => locker.tryExclusive());
    } finally {
      other.kill();
      await other.exited;
    }
    locker.tryExclusive().release();
  });
});

describe('ProcessLocker without the native helper', () => {
  it('throws NATIVE_UNAVAILABLE rather than pretending to lock', async () => {
    const locker = await ProcessLocker.open(freshPath());
    forceNativeFallback(true);
    expect(() => locker.tryShared()).toThrow(
      expect.objectContaining({ code: 'NATIVE_UNAVAILABLE' }),
    );
    expect(() => locker.tryExclusive()).toThrow(
      expect.objectContaining({ code: 'NATIVE_UNAVAILABLE' }),
    );
    expect(locker.oldestWriter()).toBeUndefined(); // a failed attempt leaves no guard behind
  });
});
