import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  nodeNameFromHostname,
  ownProcessStartTime,
  parseProcStatStartTime,
  processRunning,
  readProcessStartTime,
} from './proc.js';

/** Fields 3..52 of a stat line, with field N holding the value N·10 (field 22 → 220). */
const TAIL = Array.from({ length: 50 }, (_, i) => (i === 0 ? 'S' : String((i + 3) * 10))).join(' ');

describe('parseProcStatStartTime', () => {
  it('takes field 22 of a plain line', () => {
    expect(parseProcStatStartTime(`1234 (node) ${TAIL}\n`)).toBe(220);
  });

  it('counts fields after the last ")" when the command name has spaces and parentheses', () => {
    expect(parseProcStatStartTime(`1234 (a) b (c) d) ${TAIL}\n`)).toBe(220);
    expect(parseProcStatStartTime(`1234 ()) ) ${TAIL}`)).toBe(220);
  });

  it('refuses lines that are too short or not numeric there', () => {
    expect(parseProcStatStartTime('1234 (x) S 1 2 3')).toBeUndefined();
    expect(parseProcStatStartTime('no parenthesis at all')).toBeUndefined();
    expect(parseProcStatStartTime(`1234 (x) ${TAIL.replace(' 220 ', ' x20 ')}`)).toBeUndefined();
  });
});

describe('process start time', () => {
  it('matches field 22 of /proc/self/stat as read here independently', () => {
    const stat = readFileSync(`/proc/${process.pid}/stat`, 'latin1');
    const afterComm = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    // afterComm[0] is field 3 (state), so field 22 sits at index 19.
    const expected = Number(afterComm[19]);
    expect(ownProcessStartTime()).toBe(expected);
    expect(readProcessStartTime(process.pid)).toBe(expected);
  });

  it('tells a live process from a gone or recycled one', () => {
    const own = ownProcessStartTime();
    expect(processRunning(process.pid, own)).toBe(true);
    expect(processRunning(process.pid, own + 1)).toBe(false);
    // Above the largest pid_max Linux allows (2^22), so no process can have it.
    expect(processRunning(0x7fff_fff0, 1)).toBe(false);
    expect(processRunning(0, own)).toBe(false);
    expect(readProcessStartTime(0x7fff_fff0)).toBeUndefined();
  });
});

describe('nodeNameFromHostname', () => {
  it('keeps the host name up to the first dot', () => {
    expect(nodeNameFromHostname('pbs.example.com')).toBe('pbs');
    expect(nodeNameFromHostname('elsa')).toBe('elsa');
    expect(nodeNameFromHostname('node-1.lan')).toBe('node-1');
  });

  it('repairs labels that the UPID node pattern refuses', () => {
    expect(nodeNameFromHostname('my_host.lan')).toBe('my-host');
    expect(nodeNameFromHostname('-edge-')).toBe('edge');
    expect(nodeNameFromHostname('')).toBe('localhost');
    expect(nodeNameFromHostname('.hidden')).toBe('localhost');
  });
});
