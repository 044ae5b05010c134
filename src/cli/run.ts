/**
 * The shared shell of both CLIs: parse with commander, run the action, and turn every failure
 * into a message on stderr plus a documented exit status (docs/cli.md). Commands throw; only
 * this file decides how an error looks and which status it gets.
 */
import { CommanderError, Option, type Command } from 'commander';
import { BurrowError, EXIT } from '../lib/errors.js';
import { OUTPUT_FORMATS, createPrinter, parseOutputFormat, type Printer } from './output.js';

export function outputFormatOption(): Option {
  return new Option('--output-format <format>', 'output format')
    .choices(OUTPUT_FORMATS)
    .default('text');
}

/** The printer for a command whose options include --output-format. */
export function printerFor(options: { outputFormat?: string }): Printer {
  return createPrinter(parseOutputFormat(options.outputFormat ?? 'text'));
}

/** Report an error the way a person can act on it; returns the exit status. */
export function reportError(
  error: unknown,
  stderr: NodeJS.WritableStream = process.stderr,
): number {
  if (error instanceof BurrowError) {
    stderr.write(`Error: ${error.message}\n`);
    if (process.env.BURROW_DEBUG && error.cause !== undefined)
      stderr.write(
        `Caused by: ${error.cause instanceof Error ? (error.cause.stack ?? error.cause.message) : JSON.stringify(error.cause)}\n`,
      );
    return error.exitCode;
  }
  if (error instanceof CommanderError) {
    // commander has already printed its message (and help, for help/version).
    return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  const err = error as NodeJS.ErrnoException | undefined;
  if (err?.code === 'ENOENT') {
    stderr.write(`Error: ${err.message}\n`);
    return EXIT.notFound;
  }
  if (err?.code === 'EACCES' || err?.code === 'EPERM') {
    stderr.write(`Error: ${err.message}\n`);
    return EXIT.denied;
  }
  if (err?.code !== undefined && /^E[A-Z]+$/.test(err.code)) {
    stderr.write(`Error: ${err.message}\n`);
    return EXIT.failure;
  }
  stderr.write(
    `Internal error (please report this): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  return EXIT.failure;
}

/** Configure a program so that usage errors exit with EXIT.usage instead of commander's default 1. */
export function configureProgram(program: Command): Command {
  program.exitOverride().showHelpAfterError('(add --help for usage)').allowExcessArguments(false);
  return program;
}

export async function runProgram(
  program: Command,
  argv: readonly string[] = process.argv,
): Promise<never> {
  let status: number;
  // A reader that goes away (`burrow pxar list x | head`) must not crash a command with an
  // unhandled 'error' event, nor stop a backup half way: later writes are simply dropped.
  for (const stream of [process.stdout, process.stderr])
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
  try {
    await program.parseAsync(argv);
    status = EXIT.ok;
  } catch (error) {
    status = reportError(error);
  }
  process.exitCode = status;
  // Let stdout drain (piped output) before the process ends.
  return new Promise<never>(() => {
    process.stdout.write('', () => process.exit(status));
  });
}
