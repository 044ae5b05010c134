import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ROOT_NAMESPACE, parseNamespace } from '../types/backup.js';
import {
  escapeUnit,
  lockFileName,
  lockFileRelativePath,
  unescapeUnit,
  unescapeUnitBytes,
} from './systemd-escape.js';
import { codeOf } from '../../test/helpers/error-code.js';

describe('escapeUnit', () => {
  it('matches the lock file examples of pbs-formats §6.7 (path mode)', () => {
    expect(escapeUnit('vm/100', true)).toBe('vm-100');
    expect(escapeUnit('vm/100/2022-05-02T08:11:33Z', true)).toBe(
      'vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z',
    );
    expect(escapeUnit('vm/100/2022-05-02T08:11:33Z/.index.json.lck', true)).toBe(
      'vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z-.index.json.lck',
    );
  });

  it('matches the worker ID example of §11.1 (non-path mode)', () => {
    expect(escapeUnit('store1:vm/100', false)).toBe('store1\\x3avm-100');
  });

  it('escapes a leading dot only in the first position', () => {
    expect(escapeUnit('.a.b', false)).toBe('\\x2ea.b');
    expect(escapeUnit('a/.b', false)).toBe('a-.b');
  });

  it('strips leading slashes in path mode; the bare root is "-"', () => {
    expect(escapeUnit('///a/b', true)).toBe('a-b');
    expect(escapeUnit('/', true)).toBe('-');
    expect(escapeUnit('', true)).toBe('-');
    expect(escapeUnit('/a', false)).toBe('-a');
    expect(escapeUnit('', false)).toBe('');
  });

  it('escapes UTF-8 bytes one by one, in lowercase hex', () => {
    expect(escapeUnit('ü', false)).toBe('\\xc3\\xbc'); // U+00FC is C3 BC in UTF-8
    expect(escapeUnit('a b\\', false)).toBe('a\\x20b\\x5c');
    expect(escapeUnit('€', false)).toBe('\\xe2\\x82\\xac');
  });

  it('refuses unpaired surrogates', () => {
    expect(codeOf(() => escapeUnit('a\ud800b', false))).toBe('INVALID_ARGUMENT');
  });
});

describe('unescapeUnit', () => {
  it('turns \\xNN (either case) into bytes and - into /', () => {
    expect(unescapeUnit('store1\\x3avm-100')).toBe('store1:vm/100');
    expect(unescapeUnit('a\\x2Db')).toBe('a-b');
    expect(unescapeUnit('\\xc3\\xbc')).toBe('ü');
    expect(unescapeUnitBytes('\\xff')).toEqual(new Uint8Array([0xff]));
  });

  it('rejects broken escapes and invalid UTF-8', () => {
    for (const bad of ['\\x2', '\\', '\\y20', '\\xzz', '\\x-1', '\\xff', 'a\\xc3']) {
      expect(
        codeOf(() => unescapeUnit(bad)),
        bad,
      ).toBe('INVALID_ARGUMENT');
    }
  });

  it('inverts escapeUnit for any Unicode text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (text) => {
        const escaped = escapeUnit(text, false);
        expect(escaped).toMatch(/^[A-Za-z0-9_.\\x-]*$/);
        expect(unescapeUnit(escaped)).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it('inverts path-mode escaping for text without leading slashes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), (text) => {
        fc.pre(!text.startsWith('/'));
        expect(unescapeUnit(escapeUnit(text, true))).toBe(text);
      }),
      { numRuns: 300 },
    );
  });
});

describe('lock file names', () => {
  it('uses the escaped relative path when it is short', () => {
    expect(lockFileName('vm/100')).toBe('vm-100');
    expect(lockFileName('vm/100/2022-05-02T08:11:33Z')).toBe(
      'vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z',
    );
    expect(lockFileRelativePath(ROOT_NAMESPACE, 'vm/100')).toBe('vm-100');
    expect(lockFileRelativePath(parseNamespace('ns1/ns2/ns3'), 'vm/100/2022-05-02T08:11:33Z')).toBe(
      'ns1:ns2:ns3/vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z',
    );
  });

  it('switches to hashed/ at 255 escaped characters', () => {
    const short = `host/${'a'.repeat(249)}`; // escapes to 254 characters
    expect(lockFileName(short)).toBe(`host-${'a'.repeat(249)}`);

    const long = `host/${'a'.repeat(100)}${'b'.repeat(150)}`; // escapes to exactly 255 characters
    const escaped = `host-${'a'.repeat(100)}${'b'.repeat(150)}`;
    expect(escaped).toHaveLength(255);
    const hash = createHash('sha256').update(long).digest('hex');
    expect(lockFileName(long)).toBe(
      `hashed/${escaped.slice(0, 80)}...${escaped.slice(-80)}-${hash}`,
    );
    expect(lockFileRelativePath(parseNamespace('a/b'), long)).toBe(`a:b/${lockFileName(long)}`);
  });

  it('hashes the unescaped path, not the escaped one', () => {
    const path = `host/${'x:'.repeat(60)}`; // every ':' becomes 4 characters
    const name = lockFileName(path);
    expect(name.startsWith('hashed/host-x\\x3ax')).toBe(true);
    expect(name.endsWith(`-${createHash('sha256').update(path).digest('hex')}`)).toBe(true);
  });
});
