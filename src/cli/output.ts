/**
 * How commands print. Every command produces data first and renders it second, so text for
 * people and `--output-format json|json-pretty` for scripts come from the same value.
 */
import { BurrowError } from '../lib/errors.js';
import { formatSnapshot, namespaceToString, type BackupDir } from '../types/backup.js';

export const OUTPUT_FORMATS = ['text', 'json', 'json-pretty'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export function parseOutputFormat(value: string): OutputFormat {
  if ((OUTPUT_FORMATS as readonly string[]).includes(value)) return value as OutputFormat;
  throw new BurrowError(
    'INVALID_ARGUMENT',
    `--output-format must be one of ${OUTPUT_FORMATS.join(', ')}, got ${JSON.stringify(value)}`,
  );
}

/** JSON with Uint8Array fields shown as hex and bigints as numbers or strings, so any result can be printed. */
export function toJsonText(value: unknown, pretty: boolean): string {
  return JSON.stringify(
    value,
    (_key, v: unknown) => {
      if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
      if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
      return v;
    },
    pretty ? 2 : undefined,
  );
}

export interface Printer {
  readonly format: OutputFormat;
  /** Print a result: `text` renders it for people, JSON formats print the value itself. */
  result<T>(value: T, renderText: (value: T) => string): void;
  /** A line for people only (progress, notes); goes to stderr in JSON mode so stdout stays parseable. */
  info(line: string): void;
}

export function createPrinter(
  format: OutputFormat,
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Printer {
  return {
    format,
    result(value, renderText) {
      const text =
        format === 'text' ? renderText(value) : toJsonText(value, format === 'json-pretty');
      out.write(text.endsWith('\n') ? text : `${text}\n`);
    },
    info(line) {
      (format === 'text' ? out : err).write(`${line}\n`);
    },
  };
}

/** Align "key: value" rows for text output. */
export function renderKeyValues(
  rows: ReadonlyArray<readonly [string, string | number | boolean]>,
): string {
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${`${k}:`.padEnd(width + 2)}${String(v)}`).join('\n');
}

/** 1536 → "1.50 KiB": sizes for people, binary units as PBS shows them. */
export function humanBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(2)} ${units[unit]}`;
}

/** Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), the form PBS uses for backup times. */
export function formatEpoch(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export interface TableColumn<T> {
  readonly header: string;
  readonly value: (row: T) => string | number | boolean;
  /** Numbers read best right-aligned; text left-aligned (the default). */
  readonly align?: 'left' | 'right';
}

/**
 * An aligned table for text output: a header line, then one line per row, columns separated by
 * two spaces. Trailing spaces are trimmed so the output diffs cleanly. An empty list prints
 * `(empty)` in place of rows, so a person sees the command ran.
 */
export function renderTable<T>(columns: ReadonlyArray<TableColumn<T>>, rows: readonly T[]): string {
  const cells = rows.map((row) => columns.map((c) => String(c.value(row))));
  const widths = columns.map((c, i) =>
    Math.max(c.header.length, ...cells.map((line) => (line[i] ?? '').length)),
  );
  const line = (values: readonly string[]): string =>
    values
      .map((v, i) => {
        const width = widths[i] ?? 0;
        return columns[i]?.align === 'right' ? v.padStart(width) : v.padEnd(width);
      })
      .join('  ')
      .trimEnd();
  const out = [line(columns.map((c) => c.header))];
  if (cells.length === 0) out.push('(empty)');
  else for (const values of cells) out.push(line(values));
  return out.join('\n');
}

/** How PBS's API names a snapshot in list replies: path, namespace (omitted at the root), type, id, time. */
export interface SnapshotIdentity {
  snapshot: string;
  ns?: string;
  'backup-type': string;
  'backup-id': string;
  'backup-time': number;
}

export function snapshotIdentity(dir: BackupDir): SnapshotIdentity {
  const ns = namespaceToString(dir.group.ns);
  return {
    snapshot: formatSnapshot(dir),
    ...(ns === '' ? {} : { ns }),
    'backup-type': dir.group.type,
    'backup-id': dir.group.id,
    'backup-time': dir.time,
  };
}
