/**
 * Builds the commander tree and `--help` from the command table (commands/index.ts). A command's
 * schema and run are imported only when it runs, so `payq --help` loads no broker client and no
 * validator; options.ts resolves the options and hands them to the command's run.
 */
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from '../errors.js';
import { payqVersion, type CommandContext } from './context.js';
import { COMMANDS, GLOBAL_FLAGS } from './commands/index.js';
import { helpLine, type FlagSpec } from './commands/describe.js';

/** Commander reducer for repeatable options. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function addFlag(cmd: Command, spec: FlagSpec): void {
  // No default goes to commander: options.ts fills defaults in below the config file and PAYQ_*.
  const option = new Option(spec.flags, helpLine(spec));
  if (spec.repeatable) option.argParser(collect);
  if (spec.hidden) option.hideHelp();
  cmd.addOption(option);
}

// Help goes where it was asked for; commander's own error lines are dropped because main prints
// one `payq: error:` line for every failure.
const commanderOutput = {
  writeOut: (s: string) => process.stdout.write(s),
  writeErr: (s: string) => process.stderr.write(s),
  outputError: () => undefined,
};

export function buildProgram(ctx: CommandContext, done: (work: Promise<void>) => void): Command {
  const program = new Command('payq');
  program.description('Event-driven payment pipelines on message queues: produce, trace, replay and benchmark.').version(payqVersion, '-V, --version');
  for (const spec of GLOBAL_FLAGS) addFlag(program, spec);
  program
    .exitOverride()
    .configureOutput(commanderOutput)
    .addHelpText(
      'after',
      `\nExit codes: 0 ok, 1 internal error, 2 usage/config, 3 broker unreachable/auth/topology,\n` +
        `4 data went wrong (unacknowledged, lost, failed expectations), 5 --assert breached, 130 interrupted.\n\n` +
        `Examples:\n${COMMANDS.map((c) => `  ${c.examples[0]}`).join('\n')}\n`,
    );

  for (const spec of COMMANDS) {
    const cmd = program.command(spec.name).description(spec.summary);
    // `payq produce --help` lists --broker, --json, --config, -q, -v, --debug too.
    cmd.configureHelp({ showGlobalOptions: true });
    for (const flag of spec.flags) addFlag(cmd, flag);
    spec.configure?.(cmd);
    cmd.exitOverride().configureOutput(commanderOutput);
    if (spec.helpAfter) cmd.addHelpText('after', `\n${spec.helpAfter}`);
    cmd.addHelpText('after', `\nExamples:\n${spec.examples.map((e) => `  ${e}`).join('\n')}\n`);
    cmd.action((_opts: unknown, command: Command) => {
      // Only what was typed counts as a flag: defaults, PAYQ_* and the config file are options.ts's.
      const all = command.optsWithGlobals();
      const flags = Object.fromEntries(Object.entries(all).filter(([k]) => command.getOptionValueSourceWithGlobals(k) === 'cli'));
      done(import('./options.js').then((options) => options.runCommand(spec, flags, ctx)));
    });
  }
  return program;
}

/** Turns commander's own parse errors into a UsageError (exit 2); help and version are not errors. */
export function fromCommanderError(err: CommanderError): UsageError | undefined {
  if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return undefined;
  if (err.code === 'commander.help') return new UsageError('a command is required (see the list above)');
  return new UsageError(err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' '), { hint: 'see payq --help' });
}
