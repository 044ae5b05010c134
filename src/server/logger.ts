/**
 * The daemon's log: pino, one JSON object per line on stderr, so a service manager (journald)
 * keeps it and tools can filter by field. Levels are pino's; BURROW_LOG_LEVEL picks one.
 * Worker tasks have their own logs (src/tasks); this is the process log (start, listen, requests,
 * errors, shutdown).
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { BurrowError } from '../lib/errors.js';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';

export interface LoggerOptions {
  /** Default: $BURROW_LOG_LEVEL, else `info`. */
  level?: string;
  /** Where the lines go; default stderr (fd 2, written synchronously so no line is lost at exit). */
  destination?: DestinationStream | NodeJS.WritableStream;
  env?: NodeJS.ProcessEnv;
}

export function parseLogLevel(text: string, source = 'log level'): LogLevel {
  const level = text.trim().toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(level)) return level as LogLevel;
  throw new BurrowError(
    'INVALID_ARGUMENT',
    `${source} must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(text)}`,
    { details: { value: text } },
  );
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const env = options.env ?? process.env;
  const level =
    options.level !== undefined
      ? parseLogLevel(options.level)
      : env.BURROW_LOG_LEVEL !== undefined && env.BURROW_LOG_LEVEL !== ''
        ? parseLogLevel(env.BURROW_LOG_LEVEL, 'BURROW_LOG_LEVEL')
        : DEFAULT_LOG_LEVEL;
  const destination = options.destination ?? pino.destination({ dest: 2, sync: true });
  return pino(
    {
      name: 'burrow',
      level,
      // Level names and ISO times: still one JSON object per line, but readable without a tool.
      formatters: { level: (label) => ({ level: label }) },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: pino.stdSerializers.err },
    },
    destination,
  );
}
