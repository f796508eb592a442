/**
 * The CLI entry: parses argv, runs one command, and turns its outcome into an exit code. This is
 * the only module that calls process.exit.
 */
import { CommanderError } from 'commander';
import { ExitCode, InternalError, isPayqError, messageOf, type PayqError } from '../errors.js';
import { Output, type Verbosity } from './output.js';
import type { CommandContext } from './context.js';
import { buildProgram, fromCommanderError } from './program.js';

function verbosityFrom(argv: string[]): Verbosity {
  if (argv.includes('-q') || argv.includes('--quiet')) return 'quiet';
  if (argv.includes('-v') || argv.includes('--verbose')) return 'verbose';
  return 'normal';
}

function isClosedPipe(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'EPIPE';
}

function report(err: unknown, out: Output): ExitCode {
  // `payq … | head`: the reader has what it wanted; that is not a failure.
  if (isClosedPipe(err)) return ExitCode.ok;
  let error: PayqError;
  if (err instanceof CommanderError) {
    const usage = fromCommanderError(err);
    if (!usage) return ExitCode.ok;
    error = usage;
  } else if (isPayqError(err)) {
    error = err;
  } else {
    error = new InternalError(`internal error: ${messageOf(err)}`, {
      cause: err,
      hint: 'this is a bug in payq; please report it with the output of the same command run with --debug',
    });
  }
  out.error(error.hint ? `${error.message} (${error.hint})` : error.message);
  if (out.debug) {
    const detail = error instanceof InternalError && error.cause instanceof Error ? error.cause : error;
    out.diagnostic(detail.stack ?? '');
    if (detail.cause instanceof Error) out.diagnostic(`caused by: ${detail.cause.stack ?? detail.cause.message}`);
  }
  return error.exitCode;
}

async function main(argv: string[]): Promise<ExitCode> {
  const args = argv.slice(2);
  const out = new Output({ stdout: process.stdout, stderr: process.stderr }, verbosityFrom(args), args.includes('--debug'));
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = () => {
    interrupts++;
    if (interrupts === 1) {
      out.info('interrupted: finishing in-flight work (press Ctrl-C again to stop at once)');
      controller.abort();
    } else {
      process.exit(ExitCode.interrupted);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A closed stdout (`payq … | head -1`) is the reader's normal end, not an interrupt: it must
  // not abort the command as Ctrl-C does (which reports "interrupted", exit 130). The write that
  // failed rejects where it was awaited (consume gives that batch back unacked and ends, exit 0);
  // this listener only keeps the stream's 'error' event from crashing the process with a stack
  // trace (any other write error also rejects the write that awaited it).
  process.stdout.on('error', () => undefined);

  const ctx: CommandContext = { out, signal: controller.signal, env: process.env, stdin: process.stdin };
  let work: Promise<void> | undefined;
  try {
    const program = buildProgram(ctx, (w) => {
      work = w;
    });
    await program.parseAsync(argv);
    if (work) await work;
    return ExitCode.ok;
  } catch (err) {
    return report(err, out);
  }
}

const code = await main(process.argv);
// Let stdout drain (a pipe may still hold data) before exiting; broker clients may hold timers
// that would otherwise keep the process alive.
process.stdout.write('', () => process.exit(code));
