import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createActivityDisplay, formatDuration, renderActivity } from './activity-display.js';

function sink(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  let out = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  Object.assign(stream, { isTTY, columns: 120 });
  return { stream, text: () => out };
}

describe('activity display', () => {
  it('renders a bar, sizes, rate and ETA when the total is known', () => {
    const line = renderActivity(
      { bytes: 512 * 1024 * 1024, totalBytes: 1024 * 1024 * 1024, entries: 7 },
      2,
    );
    expect(line).toContain(' 50%');
    expect(line).toContain('512.00 MiB of 1.00 GiB');
    expect(line).toContain('7 entries');
    expect(line).toContain('256.00 MiB/s');
    expect(line).toContain('ETA 2s');
  });

  it('shows only the running figures without a total, and shortens long paths from the left', () => {
    const line = renderActivity(
      { bytes: 2048, entries: 1, path: `/${'x'.repeat(200)}/end` },
      1,
      80,
    );
    expect(line).not.toContain('%');
    expect(line.length).toBeLessThanOrEqual(80);
    expect(line.endsWith('/end')).toBe(true);
    expect(line).toContain('…');
  });

  it('formats durations for people', () => {
    expect(formatDuration(5)).toBe('5s');
    expect(formatDuration(65)).toBe('1m05s');
    expect(formatDuration(3 * 3600 + 60)).toBe('3h01m');
  });

  it('writes nothing but warning lines when not on a terminal', () => {
    const { stream, text } = sink(false);
    const display = createActivityDisplay(stream, false);
    display.update({ bytes: 1, entries: 1 });
    display.line('warning: x');
    display.stop();
    expect(text()).toBe('warning: x\n');
  });

  it('redraws one line in place on a terminal and clears it at the end', () => {
    const { stream, text } = sink(true);
    let t = 0;
    const display = createActivityDisplay(stream, true, () => t);
    t = 1000;
    display.update({ bytes: 100, entries: 2 });
    display.line('warning: y');
    display.stop();
    const out = text();
    expect(out).toContain('\r\x1b[2K');
    expect(out).toContain('2 entries');
    expect(out).toContain('warning: y\n');
    expect(out.endsWith('\r\x1b[2K')).toBe(true);
  });
});
