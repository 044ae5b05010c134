import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BurrowError } from '../lib/errors.js';
import { REPO_ROOT } from '../../test/e2e/run-cli.js';
import { codeOf } from '../../test/helpers/error-code.js';
import { createLogger, parseLogLevel } from './logger.js';

function capture(): { lines: () => Array<Record<string, unknown>>; destination: Writable } {
  let text = '';
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  return {
    destination,
    lines: () =>
      text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('createLogger', () => {
  it('writes one JSON object per line with a level name and an ISO time', () => {
    const out = capture();
    const log = createLogger({ destination: out.destination, env: {} });
    log.info({ port: 8007 }, 'listening');
    log.debug('not shown at the default level');
    const lines = out.lines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'info', name: 'burrow', port: 8007, msg: 'listening' });
    expect(lines[0]?.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(lines[0]?.pid).toBe(process.pid);
  });

  it('takes the level from BURROW_LOG_LEVEL, and an explicit level over it', () => {
    const out = capture();
    const log = createLogger({ destination: out.destination, env: { BURROW_LOG_LEVEL: 'WARN' } });
    log.info('hidden');
    log.warn('shown');
    expect(out.lines().map((l) => l.msg)).toEqual(['shown']);

    const out2 = capture();
    const debug = createLogger({
      level: 'debug',
      destination: out2.destination,
      env: { BURROW_LOG_LEVEL: 'error' },
    });
    debug.debug('detail');
    expect(out2.lines().map((l) => l.level)).toEqual(['debug']);

    const silent = capture();
    createLogger({ level: 'silent', destination: silent.destination }).fatal('nothing');
    expect(silent.lines()).toEqual([]);
  });

  it('refuses unknown levels with INVALID_ARGUMENT naming where they came from', () => {
    expect(codeOf(() => createLogger({ level: 'verbose' }))).toBe('INVALID_ARGUMENT');
    expect(() => createLogger({ env: { BURROW_LOG_LEVEL: 'loud' } })).toThrow(
      /BURROW_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"/,
    );
    expect(parseLogLevel(' Trace ')).toBe('trace');
  });

  it('serializes errors with their message, type and stack', () => {
    const out = capture();
    const log = createLogger({ destination: out.destination, env: {} });
    log.error({ err: new BurrowError('IO_ERROR', 'disk gone') }, 'failed');
    const err = out.lines()[0]?.err as Record<string, unknown>;
    expect(err).toMatchObject({ type: 'BurrowError', message: 'disk gone', code: 'IO_ERROR' });
    expect(String(err.stack)).toContain('logger.test.ts');
  });

  it('writes to stderr by default, nothing to stdout', () => {
    const child = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        "import { createLogger } from './src/server/logger.ts'; createLogger().info({ a: 1 }, 'to stderr'); process.exit(0);",
      ],
      { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, BURROW_LOG_LEVEL: '' } },
    );
    expect(child.status).toBe(0);
    expect(child.stdout).toBe('');
    // Written synchronously: the line is there although the process exits right away.
    expect(JSON.parse(child.stderr.trim())).toMatchObject({
      level: 'info',
      a: 1,
      msg: 'to stderr',
    });
  });
});
