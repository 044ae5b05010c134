import { describe, expect, it } from 'vitest';
import { codeOf } from '../../../test/helpers/error-code.js';
import { hashPassword, isShaCryptHash, shaCrypt, verifyPassword } from './sha-crypt.js';

// The test vectors published with Drepper's "Unix crypt using SHA-256 and SHA-512"
// specification (also what glibc's crypt() returns for them). The last one asks for 10 rounds:
// the specification raises it to the minimum of 1000 and says so in the output.
const SHA256_VECTORS: Array<[string, string, string]> = [
  ['$5$saltstring', 'Hello world!', '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'],
  [
    '$5$rounds=10000$saltstringsaltstring',
    'Hello world!',
    '$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA',
  ],
  [
    '$5$rounds=5000$toolongsaltstring',
    'This is just a test',
    '$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5',
  ],
  [
    '$5$rounds=1400$anotherlongsaltstring',
    'a very much longer text to encrypt.  This one even stretches over morethan one line.',
    '$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1',
  ],
  [
    '$5$rounds=77777$short',
    'we have a short salt string but not a short password',
    '$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/',
  ],
  [
    '$5$rounds=123456$asaltof16chars..',
    'a short string',
    '$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD',
  ],
  [
    '$5$rounds=10$roundstoolow',
    'the minimum number is still observed',
    '$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC',
  ],
];

const SHA512_VECTORS: Array<[string, string, string]> = [
  [
    '$6$saltstring',
    'Hello world!',
    '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1',
  ],
  [
    '$6$rounds=10000$saltstringsaltstring',
    'Hello world!',
    '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.',
  ],
  [
    '$6$rounds=5000$toolongsaltstring',
    'This is just a test',
    '$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0',
  ],
  [
    '$6$rounds=1400$anotherlongsaltstring',
    'a very much longer text to encrypt.  This one even stretches over morethan one line.',
    '$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1',
  ],
  [
    '$6$rounds=77777$short',
    'we have a short salt string but not a short password',
    '$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0',
  ],
  [
    '$6$rounds=123456$asaltof16chars..',
    'a short string',
    '$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1',
  ],
  [
    '$6$rounds=10$roundstoolow',
    'the minimum number is still observed',
    '$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.',
  ],
];

describe('shaCrypt: the specification test vectors', () => {
  it.each(SHA256_VECTORS)('SHA-256 %s', (setting, password, expected) => {
    expect(shaCrypt(password, setting)).toBe(expected);
  });

  it.each(SHA512_VECTORS)('SHA-512 %s', (setting, password, expected) => {
    expect(shaCrypt(password, setting)).toBe(expected);
  });

  it('a whole stored hash works as the setting (its hash part is ignored)', () => {
    const [, password, expected] = SHA512_VECTORS[0] as [string, string, string];
    expect(shaCrypt(password, expected)).toBe(expected);
    expect(shaCrypt(password, expected.replace(/\$[^$]+$/, '$garbage'))).toBe(expected);
  });

  it('refuses other schemes', () => {
    for (const setting of ['$1$salt', '$2b$10$abc', '$y$j9T$salt', 'plain', '']) {
      expect(codeOf(() => shaCrypt('x', setting))).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('verifyPassword', () => {
  it('accepts the vectors and rejects other passwords', () => {
    for (const [, password, hash] of [
      ...SHA256_VECTORS.slice(0, 2),
      ...SHA512_VECTORS.slice(0, 2),
    ]) {
      expect(verifyPassword(password, hash)).toBe(true);
      expect(verifyPassword(`${password} `, hash)).toBe(false);
      expect(verifyPassword('', hash)).toBe(false);
    }
  });

  it('never matches malformed or unsupported hashes', () => {
    for (const stored of ['', '!', '*', '$6$salt', '$6$salt$', '$1$abc$def', 'x'.repeat(100)]) {
      expect(verifyPassword('', stored)).toBe(false);
      expect(verifyPassword('x', stored)).toBe(false);
    }
    // A hash with a character outside crypt's alphabet cannot have come from crypt.
    expect(isShaCryptHash('$6$salt$abc!')).toBe(false);
  });

  it('a truncated hash does not match', () => {
    const [, password, hash] = SHA512_VECTORS[0] as [string, string, string];
    expect(verifyPassword(password, hash.slice(0, -1))).toBe(false);
  });
});

describe('hashPassword', () => {
  it('writes $6$ with a random 16-character salt and the default rounds', () => {
    const a = hashPassword('secret password');
    const b = hashPassword('secret password');
    expect(a).toMatch(/^\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}$/);
    expect(a).not.toBe(b);
    expect(verifyPassword('secret password', a)).toBe(true);
    expect(verifyPassword('secret password', b)).toBe(true);
    expect(verifyPassword('secret passwore', a)).toBe(false);
  });

  it('takes a rounds option, written into the hash', () => {
    const hash = hashPassword('pw', { rounds: 1000 });
    expect(hash).toMatch(/^\$6\$rounds=1000\$/);
    expect(verifyPassword('pw', hash)).toBe(true);
  });

  it('handles non-ASCII passwords as UTF-8', () => {
    const hash = hashPassword('pässwörd ✓');
    expect(verifyPassword('pässwörd ✓', hash)).toBe(true);
    expect(verifyPassword('passwort ✓', hash)).toBe(false);
  });
});
