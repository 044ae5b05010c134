import { Command } from 'commander';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { codeOf } from '../../test/helpers/error-code.js';
import {
  addDirectoryOptions,
  dirsOf,
  groupArgument,
  integerOption,
  parseBooleanText,
  snapshotArgument,
} from './manager-context.js';

describe('dirsOf', () => {
  function parsed(args: string[]): Command {
    let seen: Command | undefined;
    const program = addDirectoryOptions(new Command('x').exitOverride());
    program.command('sub').action((_options: unknown, command: Command) => {
      seen = command;
    });
    program.parse(['node', 'x', ...args]);
    if (seen === undefined) throw new Error('action did not run');
    return seen;
  }

  it('takes the global options before or after the subcommand, as absolute paths', () => {
    const before = dirsOf(parsed(['--config-dir', 'etc', 'sub']));
    expect(before.configDir).toBe(resolve('etc'));
    const after = dirsOf(parsed(['sub', '--run-dir', '/r', '--log-dir', '/l']));
    expect(after.runDir).toBe('/r');
    expect(after.logDir).toBe('/l');
  });
});

describe('groupArgument / snapshotArgument', () => {
  it('puts a plain path into --ns', () => {
    expect(groupArgument('vm/100', 'a/b')).toEqual({
      ns: { components: ['a', 'b'] },
      type: 'vm',
      id: '100',
    });
    const dir = snapshotArgument('host/web/2024-01-01T00:00:00Z', 'a');
    expect(dir.time).toBe(1_704_067_200);
    expect(dir.group.ns.components).toEqual(['a']);
  });

  it('takes the namespace from the path when there is no --ns', () => {
    expect(groupArgument('ns/a/ct/7', undefined).ns.components).toEqual(['a']);
  });

  it('refuses a namespace given twice, and malformed paths', () => {
    expect(codeOf(() => groupArgument('ns/a/vm/100', 'b'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => snapshotArgument('ns/a/vm/100/2024-01-01T00:00:00Z', 'b'))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(codeOf(() => snapshotArgument('vm/100', undefined))).toBe('INVALID_SNAPSHOT_PATH');
  });
});

describe('option parsers', () => {
  it('integers', () => {
    expect(integerOption('--n')('12')).toBe(12);
    expect(codeOf(() => integerOption('--n', 1)('0'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => integerOption('--n')('1.5'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => integerOption('--n')('-1'))).toBe('INVALID_ARGUMENT');
    expect(integerOption('--n', 1, 19)('19')).toBe(19);
    expect(() => integerOption('--n', 1, 19)('20')).toThrow(/from 1 to 19, got "20"/);
  });

  it('booleans', () => {
    expect(parseBooleanText('x', 'true')).toBe(true);
    expect(parseBooleanText('x', 'OFF')).toBe(false);
    expect(codeOf(() => parseBooleanText('x', 'maybe'))).toBe('INVALID_ARGUMENT');
  });
});
