import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  formatAuthid,
  formatUserid,
  isToken,
  isValidAuthid,
  mayActAsOwner,
  parseAuthid,
  parseUserid,
  userOf,
} from './auth.js';
import { codeOf } from '../../test/helpers/error-code.js';

describe('Userid', () => {
  it('parses the spec examples', () => {
    expect(parseUserid('root@pam')).toEqual({ name: 'root', realm: 'pam' });
    expect(parseUserid('backup-user@pbs')).toEqual({ name: 'backup-user', realm: 'pbs' });
  });

  it('splits at the last @', () => {
    expect(parseUserid('john@example.com@ldap')).toEqual({
      name: 'john@example.com',
      realm: 'ldap',
    });
  });

  it('accepts realms of 2..32 characters and IDs of 3..64', () => {
    expect(parseUserid('a@ad')).toEqual({ name: 'a', realm: 'ad' });
    expect(parseUserid(`u@${'r'.repeat(32)}`).realm).toHaveLength(32);
    expect(parseUserid(`${'n'.repeat(60)}@pam`).name).toHaveLength(60);
    expect(parseUserid('ü@pbs').name).toBe('ü');
  });

  it('rejects bad user IDs', () => {
    const bad = [
      'root',
      '@pam',
      'root@',
      'a@b',
      `u@${'r'.repeat(33)}`,
      `${'n'.repeat(61)}@pam`, // 65 characters
      'ro ot@pam',
      'ro:ot@pam',
      'ro/ot@pam',
      'ro\tot@pam',
      'ro\u0001ot@pam',
      'ro\u2003ot@pam', // em space: Unicode whitespace
      'root@p am',
      'root@-pam',
      'root@pam!tok', // a token is not a user ID
      '',
    ];
    for (const text of bad)
      expect(
        codeOf(() => parseUserid(text)),
        JSON.stringify(text),
      ).toBe('INVALID_USERID');
  });

  it('formats back', () => {
    expect(formatUserid({ name: 'root', realm: 'pam' })).toBe('root@pam');
  });
});

describe('Authid', () => {
  it('parses users and tokens', () => {
    expect(parseAuthid('root@pam')).toEqual({ name: 'root', realm: 'pam' });
    const token = parseAuthid('root@pam!mytoken');
    expect(token).toEqual({ name: 'root', realm: 'pam', tokenName: 'mytoken' });
    expect(isToken(token)).toBe(true);
    expect(isToken(parseAuthid('root@pam'))).toBe(false);
    expect(userOf(token)).toEqual({ name: 'root', realm: 'pam' });
    expect(formatAuthid(token)).toBe('root@pam!mytoken');
  });

  it('uses only a ! after the last @ as the token separator', () => {
    expect(parseAuthid('a!b@pam')).toEqual({ name: 'a!b', realm: 'pam' });
    expect(parseAuthid('a!b@pam!t')).toEqual({ name: 'a!b', realm: 'pam', tokenName: 't' });
  });

  it('rejects bad auth IDs', () => {
    const bad = [
      'root@pam!',
      'root@pam!to ken',
      'root@pam!-tok',
      'root@pam!t!',
      'root@pa!m!tok', // realm "pa!m" is not a safe ID
      'root',
      `root@pam!${'t'.repeat(56)}`, // 65 characters
      'a@',
      '',
    ];
    for (const text of bad)
      expect(
        codeOf(() => parseAuthid(text)),
        text,
      ).toBe('INVALID_AUTHID');
    expect(isValidAuthid('root@pam!x')).toBe(true);
    expect(isValidAuthid('root@pam!')).toBe(false);
  });

  it('applies the owner rule of §6.5', () => {
    const user = parseAuthid('root@pam');
    const token = parseAuthid('root@pam!tok');
    expect(mayActAsOwner(user, user)).toBe(true);
    expect(mayActAsOwner(token, token)).toBe(true);
    expect(mayActAsOwner(user, token)).toBe(true); // the user may write to its token's group
    expect(mayActAsOwner(token, user)).toBe(false); // but not the other way round
    expect(mayActAsOwner(parseAuthid('root@pam!other'), token)).toBe(false);
    expect(mayActAsOwner(parseAuthid('root@pbs'), token)).toBe(false);
  });

  it('round-trips generated auth IDs', () => {
    const name = fc
      .string({ minLength: 1, maxLength: 12, unit: 'binary' })
      .filter((s) => /^[^\p{White_Space}:/@\p{Cc}]+$/u.test(s));
    const safe = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{1,10}$/);
    fc.assert(
      fc.property(name, safe, fc.option(safe, { nil: undefined }), (n, realm, tokenName) => {
        const auth = tokenName === undefined ? { name: n, realm } : { name: n, realm, tokenName };
        const text = formatAuthid(auth);
        fc.pre(text.length >= 3);
        expect(parseAuthid(text)).toEqual(auth);
      }),
      { numRuns: 300 },
    );
  });
});
