/**
 * The command table. Each command declares its flags here (so `--help` needs nothing else) and
 * is imported only when it runs, so `payq --help` loads no broker client and no validator.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from '../errors.js';
import type { Output } from './output.js';

export interface CommandContext {
  out: Output;
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
  stdin: NodeJS.ReadableStream;
}

export interface CommandModule {
  run(flags: Record<string, unknown>, ctx: CommandContext): Promise<void>;
}

interface CommandSpec {
  name: string;
  summary: string;
  examples: string[];
  configure(cmd: Command): void;
  load(): Promise<CommandModule>;
}

export const payqVersion: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

const commands: CommandSpec[] = [
  {
    name: 'produce',
    summary: 'send seeded synthetic payment events (or your NDJSON) to a destination',
    examples: [
      'payq produce --broker memory:// --count 100000 --seed 42 --json',
      'payq produce --broker kafka://127.0.0.1:9092 --count 100000 --rate 2000',
      'payq produce --broker amqp://guest:guest@127.0.0.1:5672 --lifecycle --count 1000 --topic payments',
      'payq produce --dry-run --count 5 --seed 7            # events as NDJSON, nothing sent',
      'payq produce --broker kafka://127.0.0.1:9092 --from-file events.ndjson --topic orders',
    ],
    configure(cmd) {
      cmd
        .option('--topic <name>', 'destination: Kafka topic, RabbitMQ queue (declared if missing); default: the scenario entry stage')
        .option('--count <n>', 'payments to generate (default 1000 unless --duration)')
        .option('--duration <time>', 'keep producing this long, e.g. 30s, 5m')
        .option('--rate <n>', 'events per second, open loop (sends at their intended times); default flat out')
        .option('--seed <n>', 'seed for byte-identical streams (default: random, printed in the summary)')
        .option('--scenario <name|file>', 'built-in scenario name or YAML/JSON file', 'checkout')
        .option('--lifecycle', "every event of each payment, in order, interleaved across payments (default: each payment's entry event)")
        .option('--from-file <file>', "send your own events: NDJSON, one JSON object per line; '-' reads stdin")
        .option('--type-field <path>', 'with --from-file: body field holding the event type', 'event')
        .option('--size <bytes>', 'pad each body to at least this many bytes')
        .option('--partitions <n>', 'partitions when the topic is created (Kafka)')
        .option('--dry-run', 'print the events as NDJSON on stdout and send nothing')
        .option('--run-id <id>', 'run id stamped on every event (default: random)')
        .addOption(new Option('--batch-size <n>', 'events per send batch (default: the driver’s)').hideHelp())
        .addOption(new Option('--max-in-flight <n>', 'batches in flight (default: the driver’s)').hideHelp());
    },
    load: () => import('./commands/produce.js'),
  },
];

// Help goes where it was asked for; commander's own error lines are dropped because main prints
// one `payq: error:` line for every failure.
const commanderOutput = {
  writeOut: (s: string) => process.stdout.write(s),
  writeErr: (s: string) => process.stderr.write(s),
  outputError: () => undefined,
};

export function buildProgram(ctx: CommandContext, done: (work: Promise<void>) => void): Command {
  const program = new Command('payq');
  program
    .description('Event-driven payment pipelines on message queues: produce, trace, replay and benchmark.')
    .version(payqVersion, '-V, --version')
    .option('--broker <url>', 'broker URL: memory://, kafka://host:port, amqp://user:pass@host:port/vhost (default $PAYQ_BROKER)')
    .option('--json', 'machine-readable output on stdout')
    .option('-q, --quiet', 'only errors on stderr')
    .option('-v, --verbose', 'more detail on stderr')
    .option('--debug', 'show stack traces of errors')
    .option('--config <file>', 'options from a YAML/JSON file (default $PAYQ_CONFIG)')
    .exitOverride()
    .configureOutput(commanderOutput)
    .addHelpText(
      'after',
      `\nExit codes: 0 ok, 1 internal error, 2 usage/config, 3 broker unreachable/auth/topology,\n` +
        `4 data went wrong (unacknowledged, lost, failed expectations), 5 --assert breached, 130 interrupted.\n\n` +
        `Examples:\n${commands.map((c) => `  ${c.examples[0]}`).join('\n')}\n`,
    );

  for (const spec of commands) {
    const cmd = program.command(spec.name).description(spec.summary);
    spec.configure(cmd);
    cmd.exitOverride().configureOutput(commanderOutput);
    cmd.addHelpText('after', `\nExamples:\n${spec.examples.map((e) => `  ${e}`).join('\n')}\n`);
    cmd.action((_opts: unknown, command: Command) => {
      done(spec.load().then((mod) => mod.run(command.optsWithGlobals(), ctx)));
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
