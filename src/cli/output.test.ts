import { describe, expect, it } from 'vitest';
import { formatEpoch, humanBytes, renderTable } from './output.js';

describe('formatEpoch', () => {
  it('prints UTC with a Z and whole seconds', () => {
    expect(formatEpoch(0)).toBe('1970-01-01T00:00:00Z');
    // 2024-01-01T00:00:00Z is 1704067200 (19723 days after the epoch).
    expect(formatEpoch(1_704_067_200)).toBe('2024-01-01T00:00:00Z');
    expect(formatEpoch(1_704_067_200 + 86_399)).toBe('2024-01-01T23:59:59Z');
  });
});

describe('renderTable', () => {
  const columns = [
    { header: 'name', value: (r: { name: string; size: number }) => r.name },
    {
      header: 'size',
      value: (r: { name: string; size: number }) => r.size,
      align: 'right' as const,
    },
    { header: 'note', value: () => '' },
  ];

  it('aligns columns to the widest cell and trims trailing blanks', () => {
    const text = renderTable(columns, [
      { name: 'a', size: 1536 },
      { name: 'longer-name', size: 7 },
    ]);
    expect(text).toBe(
      ['name         size  note', 'a            1536', 'longer-name     7'].join('\n'),
    );
  });

  it('says (empty) for no rows', () => {
    expect(renderTable(columns, [])).toBe('name  size  note\n(empty)');
  });
});

describe('humanBytes', () => {
  it('uses binary units', () => {
    expect(humanBytes(1023)).toBe('1023 B');
    expect(humanBytes(1536)).toBe('1.50 KiB');
    expect(humanBytes(3 * 1024 * 1024)).toBe('3.00 MiB');
  });
});
