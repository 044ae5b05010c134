import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatUpid, parseUpid, taskLogRelativePath, type Upid } from './upid.js';
import { codeOf } from '../../test/helpers/error-code.js';

const SPEC_EXAMPLE =
  'UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection:store1:root@pam:';

describe('parseUpid', () => {
  it('decodes the example of pbs-formats §11.1', () => {
    // Hex decoded by hand: 0x4F37 = 4·4096 + 15·256 + 3·16 + 7.
    const pid = 4 * 4096 + 15 * 256 + 3 * 16 + 7;
    expect(pid).toBe(20279);
    // 0x0039E469 = 3·16^5 + 9·16^4 + 14·16^3 + 4·16^2 + 6·16 + 9
    const pstart = 3 * 16 ** 5 + 9 * 16 ** 4 + 14 * 16 ** 3 + 4 * 16 ** 2 + 6 * 16 + 9;
    expect(pstart).toBe(3794025);
    // 0x5CA78B83 = 5·16^7 + 12·16^6 + 10·16^5 + 7·16^4 + 8·16^3 + 11·16^2 + 8·16 + 3
    const start =
      5 * 16 ** 7 +
      12 * 16 ** 6 +
      10 * 16 ** 5 +
      7 * 16 ** 4 +
      8 * 16 ** 3 +
      11 * 16 ** 2 +
      8 * 16 +
      3;
    expect(start).toBe(1554484099);

    expect(parseUpid(SPEC_EXAMPLE)).toEqual({
      node: 'elsa',
      pid,
      pstart,
      taskId: 0n,
      startTime: start,
      workerType: 'garbage_collection',
      workerId: 'store1',
      authId: 'root@pam',
    });
  });

  it('formats the example back byte for byte', () => {
    expect(formatUpid(parseUpid(SPEC_EXAMPLE))).toBe(SPEC_EXAMPLE);
  });

  it('puts the task log under tasks/<pstart & 0xFF as two uppercase hex digits>/', () => {
    expect(taskLogRelativePath(SPEC_EXAMPLE)).toBe(`tasks/69/${SPEC_EXAMPLE}`);
    const upid = { ...parseUpid(SPEC_EXAMPLE), pstart: 0x10a };
    expect(taskLogRelativePath(upid)).toBe(`tasks/0A/${formatUpid(upid)}`);
  });

  it('escapes and unescapes the worker ID (§11.1 example)', () => {
    const upid: Upid = {
      node: 'pbs1',
      pid: 1,
      pstart: 2,
      taskId: 3n,
      startTime: 4,
      workerType: 'verificationjob',
      workerId: 'store1:vm/100',
      authId: 'root@pam!tok',
    };
    const text = formatUpid(upid);
    expect(text).toBe(
      'UPID:pbs1:00000001:00000002:00000003:00000004:verificationjob:store1\\x3avm-100:root@pam!tok:',
    );
    expect(parseUpid(text)).toEqual(upid);
  });

  it('omits an absent worker ID and reads an empty one as absent', () => {
    const text = 'UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection::root@pam:';
    const upid = parseUpid(text);
    expect(upid.workerId).toBeUndefined();
    expect('workerId' in upid).toBe(false);
    expect(formatUpid(upid)).toBe(text);
  });

  it('accepts lowercase hex, 9-digit pstart and 16-digit task IDs', () => {
    const upid = parseUpid(
      'UPID:elsa:00004f37:10039e469:ffffffffffffffff:5ca78b83:backup:vm\\x2f100:root@pam:',
    );
    expect(upid.pid).toBe(0x4f37);
    expect(upid.pstart).toBe(0x10039e469);
    expect(upid.taskId).toBe(0xffff_ffff_ffff_ffffn);
    expect(upid.workerId).toBe('vm/100');
    expect(formatUpid(upid)).toBe(
      'UPID:elsa:00004F37:10039E469:FFFFFFFFFFFFFFFF:5CA78B83:backup:vm-100:root@pam:',
    );
  });

  it('rejects malformed UPIDs', () => {
    const bad = [
      SPEC_EXAMPLE.slice(0, -1), // no trailing ':'
      SPEC_EXAMPLE.replace('UPID:', 'upid:'),
      SPEC_EXAMPLE.replace('elsa', '-elsa'),
      SPEC_EXAMPLE.replace('elsa', 'elsa.example'),
      SPEC_EXAMPLE.replace('elsa', ''),
      SPEC_EXAMPLE.replace('00004F37', '4F37'),
      SPEC_EXAMPLE.replace('00004F37', '80000000'), // pid beyond i32
      SPEC_EXAMPLE.replace('0039E469', '0039E46'),
      SPEC_EXAMPLE.replace('0039E469', '00039E4690'),
      SPEC_EXAMPLE.replace(':00000000:', ':0000000:'),
      SPEC_EXAMPLE.replace(':00000000:', ':00000000000000000:'),
      SPEC_EXAMPLE.replace('5CA78B83', '5CA78B8G'),
      SPEC_EXAMPLE.replace('5CA78B83', '105CA78B83'),
      SPEC_EXAMPLE.replace('garbage_collection', ''),
      SPEC_EXAMPLE.replace('garbage_collection', 'garbage collection'),
      SPEC_EXAMPLE.replace('garbage_collection', 'garbage/collection'),
      SPEC_EXAMPLE.replace('store1', 'store 1'),
      SPEC_EXAMPLE.replace('store1', 'store\\x1'),
      SPEC_EXAMPLE.replace('store1', 'store\\xff'), // not UTF-8 once unescaped
      SPEC_EXAMPLE.replace('root@pam', 'root'),
      SPEC_EXAMPLE.replace('root@pam', ''),
      SPEC_EXAMPLE.replace('root@pam', 'root@pam!'),
      `${SPEC_EXAMPLE}x:`,
      '',
    ];
    for (const text of bad)
      expect(
        codeOf(() => parseUpid(text)),
        text,
      ).toBe('INVALID_UPID');
  });

  it('refuses to format fields that would not parse back', () => {
    const base = parseUpid(SPEC_EXAMPLE);
    const bad: Upid[] = [
      { ...base, node: 'a.b' },
      { ...base, pid: -1 },
      { ...base, pid: 0x8000_0000 },
      { ...base, pstart: 0x10_0000_0000 },
      { ...base, taskId: -1n },
      { ...base, taskId: 1n << 64n },
      { ...base, startTime: 0x1_0000_0000 },
      { ...base, startTime: 1.5 },
      { ...base, workerType: 'a:b' },
      { ...base, workerType: 'a/b' },
      { ...base, authId: 'root' },
    ];
    for (const upid of bad)
      expect(
        codeOf(() => formatUpid(upid)),
        JSON.stringify(upid, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)),
      ).toBe('INVALID_UPID');
  });

  it('round-trips generated UPIDs', () => {
    const upidArb = fc.record({
      node: fc.stringMatching(/^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?$/),
      pid: fc.integer({ min: 0, max: 0x7fff_ffff }),
      pstart: fc.bigInt({ min: 0n, max: 0xf_ffff_ffffn }).map(Number),
      taskId: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      startTime: fc.bigInt({ min: 0n, max: 0xffff_ffffn }).map(Number),
      workerType: fc.stringMatching(/^[a-z_-]{1,20}$/),
      workerId: fc.option(fc.string({ unit: 'binary', minLength: 1, maxLength: 30 }), {
        nil: undefined,
      }),
      authId: fc.constantFrom('root@pam', 'backup@pbs', 'root@pam!tok', 'a!b@ldap!x.y'),
    });
    fc.assert(
      fc.property(upidArb, (fields) => {
        const upid: Upid = fields;
        const text = formatUpid(upid);
        const parsed = parseUpid(text);
        // toEqual treats an undefined workerId and a missing one alike.
        expect(parsed).toEqual(fields);
        expect(formatUpid(parsed)).toBe(text);
        expect(taskLogRelativePath(parsed)).toBe(
          `tasks/${(upid.pstart % 256).toString(16).toUpperCase().padStart(2, '0')}/${text}`,
        );
      }),
      { numRuns: 300 },
    );
  });
});
