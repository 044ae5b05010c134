import { describe, expect, it } from 'vitest';
import {
  finalLogText,
  finalStateOfLog,
  parseStatusText,
  parseTaskListLine,
  renderTaskListLine,
  stateFromLogTail,
  statusText,
  type TaskState,
} from './task-state.js';

const UPID = 'UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection:store1:root@pam:';
// 0x5CA78B83 (the spec example's start time) = 1554484099.
const T = 1554484099;

describe('status texts', () => {
  it('spells each state as PBS shows it', () => {
    expect(statusText({ kind: 'ok', endtime: T })).toBe('OK');
    expect(statusText({ kind: 'warning', count: 3, endtime: T })).toBe('WARNINGS: 3');
    expect(statusText({ kind: 'error', message: 'disk full', endtime: T })).toBe('disk full');
    expect(statusText({ kind: 'unknown', endtime: T })).toBe('unknown');
    expect(finalLogText({ kind: 'ok', endtime: T })).toBe('OK');
    expect(finalLogText({ kind: 'warning', count: 2, endtime: T })).toBe('WARNINGS: 2');
    expect(finalLogText({ kind: 'error', message: 'disk full', endtime: T })).toBe(
      'ERROR: disk full',
    );
  });

  it('parses them back, with or without the ERROR: prefix', () => {
    expect(parseStatusText(T, 'OK')).toEqual({ kind: 'ok', endtime: T });
    expect(parseStatusText(T, 'unknown')).toEqual({ kind: 'unknown', endtime: T });
    expect(parseStatusText(T, 'WARNINGS: 12')).toEqual({ kind: 'warning', count: 12, endtime: T });
    expect(parseStatusText(T, 'ERROR: boom')).toEqual({
      kind: 'error',
      message: 'boom',
      endtime: T,
    });
    expect(parseStatusText(T, 'boom: bang')).toEqual({
      kind: 'error',
      message: 'boom: bang',
      endtime: T,
    });
    expect(parseStatusText(T, '')).toBeUndefined();
    expect(parseStatusText(T, 'WARNINGS: many')).toBeUndefined();
  });
});

describe('task list lines', () => {
  it('renders running and ended tasks with an 8-digit uppercase hex end time', () => {
    expect(renderTaskListLine({ upid: UPID })).toBe(`${UPID}\n`);
    expect(renderTaskListLine({ upid: UPID, state: { kind: 'ok', endtime: T } })).toBe(
      `${UPID} 5CA78B83 OK\n`,
    );
    expect(
      renderTaskListLine({ upid: UPID, state: { kind: 'warning', count: 1, endtime: 255 } }),
    ).toBe(`${UPID} 000000FF WARNINGS: 1\n`);
    expect(
      renderTaskListLine({
        upid: UPID,
        state: { kind: 'error', message: 'chunk store full', endtime: T },
      }),
    ).toBe(`${UPID} 5CA78B83 chunk store full\n`);
  });

  it('parses them back, status with spaces included', () => {
    expect(parseTaskListLine(UPID)).toEqual({ upid: UPID });
    expect(parseTaskListLine(`${UPID} 5CA78B83 WARNINGS: 4`)).toEqual({
      upid: UPID,
      state: { kind: 'warning', count: 4, endtime: T },
    });
    expect(parseTaskListLine(`${UPID} 5ca78b83 could not read a b c`)).toEqual({
      upid: UPID,
      state: { kind: 'error', message: 'could not read a b c', endtime: T },
    });
    const states: TaskState[] = [
      { kind: 'ok', endtime: 0 },
      { kind: 'unknown', endtime: 0xffffffff },
      { kind: 'error', message: 'x y', endtime: 7 },
    ];
    for (const state of states) {
      expect(parseTaskListLine(renderTaskListLine({ upid: UPID, state }).trimEnd())).toEqual({
        upid: UPID,
        state,
      });
    }
  });

  it('refuses other shapes', () => {
    expect(parseTaskListLine('')).toBeUndefined();
    expect(parseTaskListLine(`${UPID} 5CA78B83`)).toBeUndefined();
    expect(parseTaskListLine(`${UPID} 5CA78B83 `)).toBeUndefined();
    expect(parseTaskListLine(`${UPID} xyz OK`)).toBeUndefined();
    expect(parseTaskListLine(`${UPID} 5CA78B83 WARNINGS: x`)).toBeUndefined();
  });
});

describe('state from a task log', () => {
  const at = (offset: number, text: string): string =>
    `${new Date((T + offset) * 1000).toISOString().slice(0, 19)}+00:00: ${text}`;

  it('reads the final line', () => {
    expect(stateFromLogTail(`${at(0, 'start')}\n${at(5, 'TASK OK')}\n`, T)).toEqual({
      kind: 'ok',
      endtime: T + 5,
    });
    expect(stateFromLogTail(`${at(9, 'TASK WARNINGS: 2')}\n`, T)).toEqual({
      kind: 'warning',
      count: 2,
      endtime: T + 9,
    });
    expect(stateFromLogTail(`${at(1, 'TASK ERROR: no space left')}\n\n`, T)).toEqual({
      kind: 'error',
      message: 'no space left',
      endtime: T + 1,
    });
    expect(finalStateOfLog(`${at(1, 'TASK unknown')}`)).toEqual({
      kind: 'unknown',
      endtime: T + 1,
    });
  });

  it('gives unknown with the last timestamp when the final line is missing', () => {
    expect(stateFromLogTail(`${at(0, 'a')}\n${at(7, 'b')}\n`, T)).toEqual({
      kind: 'unknown',
      endtime: T + 7,
    });
    // A TASK line that is not the last line does not count; neither does a torn last line.
    expect(stateFromLogTail(`${at(3, 'TASK OK')}\n${at(4, 'more')}\n2019-04-05T1`, T)).toEqual({
      kind: 'unknown',
      endtime: T + 4,
    });
    expect(finalStateOfLog(`${at(3, 'TASK OK')}\n${at(4, 'more')}\n`)).toBeUndefined();
  });

  it('falls back to the start time when no line has a timestamp', () => {
    expect(stateFromLogTail('', T)).toEqual({ kind: 'unknown', endtime: T });
    expect(stateFromLogTail('garbage\nTASK OK\n', T)).toEqual({ kind: 'unknown', endtime: T });
  });
});
