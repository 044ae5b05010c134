/**
 * The timestamps of task log lines (pbs-formats §11.2): RFC 3339 in the local time zone with a
 * numeric `±HH:MM` offset. PBS writes `+00:00` rather than `Z` for UTC, and its reader accepts
 * both spellings, so we do the same.
 */

const pad = (value: number, width: number): string => String(value).padStart(width, '0');

/** `YYYY-MM-DDTHH:MM:SS±HH:MM` for epoch seconds, in the process's local time zone (TZ). */
export function formatLocalRfc3339(epochSeconds: number): string {
  const date = new Date(epochSeconds * 1000);
  // getTimezoneOffset is "UTC minus local" in minutes; historic zones can have odd seconds,
  // which PBS drops too (it divides the offset in seconds down to whole minutes).
  const offsetSeconds = Math.round(-date.getTimezoneOffset() * 60);
  const sign = offsetSeconds < 0 ? '-' : '+';
  const minutes = Math.trunc(Math.abs(offsetSeconds) / 60);
  return (
    `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1, 2)}-${pad(date.getDate(), 2)}` +
    `T${pad(date.getHours(), 2)}:${pad(date.getMinutes(), 2)}:${pad(date.getSeconds(), 2)}` +
    `${sign}${pad(Math.trunc(minutes / 60), 2)}:${pad(minutes % 60, 2)}`
  );
}

const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:(Z)|([+-])(\d{2}):(\d{2}))$/;

/**
 * Epoch seconds of `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM` (the two shapes PBS reads),
 * or undefined when the text is not such a timestamp or a field is out of range.
 */
export function parseRfc3339(text: string): number | undefined {
  const match = RFC3339_RE.exec(text);
  if (match === null) return undefined;
  const [, y, mo, d, h, mi, s, zulu, sign, oh, om] = match;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return undefined;
  }
  // Date.UTC maps years 0..99 to 1900..1999; setUTCFullYear does not.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, 0);
  let epoch = Math.floor(date.getTime() / 1000);
  if (zulu === undefined) {
    const offsetHours = Number(oh);
    const offsetMinutes = Number(om);
    if (offsetHours > 23 || offsetMinutes > 59) return undefined;
    const offset = offsetHours * 3600 + offsetMinutes * 60;
    epoch = sign === '+' ? epoch - offset : epoch + offset;
  }
  return epoch;
}
