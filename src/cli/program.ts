/**
 * The command table. Each command declares its flags here (so `--help` needs nothing else) and
 * is imported only when it runs, so `payq --help` loads no broker client and no validator.
 */
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from '../errors.js';
import { SUPPORTED_SCHEMES } from '../drivers/url.js';
import { payqVersion, type CommandContext } from './context.js';


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
      metricsFlags(cmd);
      cmd
        .option('--topic <name>', 'destination: Kafka topic, RabbitMQ queue (declared if missing); default: the scenario entry stage')
        .option('--count <n>', 'payments to generate (default 1000 unless --duration); with --from-file: send the first n events')
        .option('--duration <time>', 'keep producing this long, e.g. 30s, 5m')
        .option('--rate <n>', 'events per second, open loop (sends at their intended times); default flat out')
        .option('--seed <n>', 'seed for byte-identical streams (default: random, printed in the summary)')
        .option('--scenario <name|file>', 'built-in scenario name or YAML/JSON file', 'checkout')
        .option('--lifecycle', "every event of each payment, in order, interleaved across payments (default: each payment's entry event)")
        .option('--from-file <file>', "send your own events: NDJSON, one JSON object per line; '-' reads stdin")
        .option('--type-field <path>', 'with --from-file: body field holding the event type', 'event')
        .option('--skip-lines <n>', 'with --from-file: skip the first n lines (sent by an earlier run that stopped at a bad line)')
        .option('--size <bytes>', 'pad each body to at least this many bytes')
        .option('--partitions <n>', 'partitions when the topic is created (Kafka)')
        .option('--dry-run', 'print the events as NDJSON on stdout and send nothing')
        .option('--run-id <id>', 'run id stamped on every event (default: random)')
        .option('--shard <i/N>', 'send shard i of N of the seeded stream: the payments at positions ≡ i-1 mod N (--count and --rate are the whole stream\'s)')
        .option('--procs <n|auto>', 'producer threads, each with its own client and shard k/n of the stream; auto = one per core (default 1)')
        .addOption(new Option('--batch-size <n>', 'events per send batch (default: the driver’s)').hideHelp())
        .addOption(new Option('--max-in-flight <n>', 'batches in flight (default: the driver’s)').hideHelp());
    },
    load: () => import('./commands/produce.js'),
  },
  {
    name: 'consume',
    summary: 'read and print events: pretty on a terminal, NDJSON otherwise; ends by itself with --limit or --idle-timeout',
    examples: [
      'payq consume --broker kafka://127.0.0.1:9092 --topic checkout.orders --from-beginning --idle-timeout 5s --json',
      'payq consume --broker kafka://127.0.0.1:9092                      # watch every destination of the pipeline (a tap)',
      'payq consume --broker kafka://127.0.0.1:9092 --topic orders --group audit --from-beginning --limit 100',
      'payq consume --broker amqp://guest:guest@127.0.0.1:5672 --type payment_captured,refund_completed',
      'payq consume --broker kafka://127.0.0.1:9092 --topic orders --with-meta --limit 1 | jq .headers',
      'payq consume --broker kafka://127.0.0.1:9092 --topic legacy --type-field event --correlate data.order_id --from-beginning --idle-timeout 3s',
    ],
    configure(cmd) {
      cmd
        .option('--topic <name>', "destination to read (repeatable, or comma-separated); default: every destination of the scenario", collect)
        .option('--scenario <name|file>', 'whose destinations to read when no --topic is given', 'checkout')
        .option(
          '--group <name>',
          'join this consumer group and TAKE the messages (on RabbitMQ: compete with the queue’s other consumers, e.g. the workers). ' +
            'Without it consume is a tap: it observes and takes nothing from anyone',
        )
        .option(
          '--from-beginning',
          'read what the destinations already hold: Kafka history (a tap, or a new group); on RabbitMQ only with --group ' +
            '(a queue holds what no one acked, and --group reads it anyway); a RabbitMQ tap sees new messages only',
        )
        .option('--requeue', 'with --group, on a queue: hold every message read and hand it back when done (each seen once; the queue keeps it, flagged redelivered)')
        .option('--exchange <name>', 'RabbitMQ: tap this exchange of yours (a queue of its own bound with --binding), taking nothing')
        .option('--binding <key>', 'RabbitMQ, with --exchange: the binding key (e.g. # for everything)')
        .option('--stream-offset <offset>', 'RabbitMQ stream queue: read it from first, last, next, an offset or an ISO time, taking nothing')
        .option('--start-timeout <time>', 'wait this long for a missing destination, then exit 3 naming it (consume never creates it)', '60s')
        .option('--type <types>', 'print only events of these types (comma-separated, repeatable); the others are still read', collect)
        .option('--limit <n>', 'stop after printing n events (exit 0); messages delivered beyond it are given back, not acked')
        .option('--idle-timeout <time>', 'stop after this long without a message (exit 0), e.g. 3s: lets CI finish')
        .option('--with-meta', 'NDJSON: wrap each body as {destination,key,partition,offset,redelivered,headers,event}')
        .option('--type-field <path>', 'body field with the event type, for events payq did not write (wins over headers)', 'event')
        .option('--correlate <paths>', 'body field with the payment/correlation id, for events payq did not write; per destination: orders=data.order_id,payments=data.order.id', 'payment_id')
        .option('--time-field <path>', 'body field with the event\'s business time (ISO 8601, epoch s or ms), for events payq did not write', 'occurred_at')
        .addOption(new Option('--prefetch <n>', 'unacked messages held at once (default 500, at most --limit)').hideHelp());
      cmd.addHelpText(
        'after',
        '\nOutput: one line per message on stdout. NDJSON when stdout is not a terminal (or with --json): the body as it is.\n' +
          'A body that is not JSON is never dropped: it prints as {"destination","problem","raw","encoding"} and a warning goes to stderr.\n' +
          'Each message is acked only after its line was written. The summary (consumed, printed, by type) goes to stderr.\n' +
          'memory:// lives inside one process and cannot be consumed from another: use kafka:// or amqp://, or payq bench.',
      );
    },
    load: () => import('./commands/consume.js'),
  },
  {
    name: 'trace',
    summary: 'follow payments across the pipeline: timelines, latency, completeness; --expect for CI',
    examples: [
      "payq trace --broker kafka://127.0.0.1:9092 --expect 'order_placed,order_completed|payment_declined' --within 60s",
      'payq trace --broker kafka://127.0.0.1:9092 --from-beginning --idle-timeout 10s --json',
      'payq trace --broker amqp://guest:guest@127.0.0.1:5672 --payment pay_7de73dd98817dded',
      'payq trace --broker kafka://127.0.0.1:9092 --topic orders --type-field event --correlate data.order_id --from-beginning --idle-timeout 5s',
      'payq trace --broker kafka://127.0.0.1:9092 --topic orders --topic payments --correlate orders=data.order_id,payments=data.order.id --time-field data.at',
    ],
    configure(cmd) {
      metricsFlags(cmd);
      cmd
        .option('--scenario <name|file>', 'the pipeline to follow (default checkout, unless --topic is given)')
        .option('--topic <name>', 'a destination to tap instead of the scenario\'s (repeatable)', collect)
        .option('--from-beginning', 'read history too (Kafka; RabbitMQ taps see new messages only)')
        .option('--stuck-after <time>', 'a payment with no new event for this long is stuck', '30s')
        .option('--expect <types>', 'event types every payment must reach (comma-separated; A|B: either); exit 4 when one does not')
        .option('--within <time>', 'with --expect: measured from the payment\'s start, on its events\' publish times')
        .option('--payment <id>', 'print the timeline of this payment')
        .option('--run-id <id>', 'only events of this run (payq-run-id)')
        .option('--idle-timeout <time>', 'end after this long without events (default with --expect: 5s)')
        .option('--start-timeout <time>', 'wait this long for missing destinations (then exit 3 naming them; trace never creates them) and, with --idle-timeout, for the first event', '60s')
        .option('--group <name>', 'read as a member of this group, TAKING the messages (on RabbitMQ: compete with the queue’s consumers); default: a tap, taking nothing')
        .option('--requeue', 'with --group, on a queue: hold every message read and hand it back when done (each seen once; the queue keeps it, flagged redelivered)')
        .option('--exchange <name>', 'RabbitMQ: tap this exchange of yours (a queue of its own bound with --binding), taking nothing')
        .option('--binding <key>', 'RabbitMQ, with --exchange: the binding key (e.g. # for everything)')
        .option('--stream-offset <offset>', 'RabbitMQ stream queue: read it from first, last, next, an offset or an ISO time, taking nothing')
        .option('--duration <time>', 'end after this long')
        .option('--shard <i/N>', 'trace shard i of N of the payments (Kafka: partitions ≡ i-1 mod N; elsewhere by a hash of the payment id); shards\' figures add up')
        .option('--type-field <path>', 'body field with the event type, for events payq did not write', 'event')
        .option('--correlate <paths>', 'body field that ties a payment\'s events together; per destination: orders=data.order_id,payments=data.order.id', 'payment_id')
        .option('--time-field <path>', 'body field with the event\'s business time (ISO 8601, epoch s or ms), shown in --payment timelines', 'occurred_at')
        .addOption(new Option('--until-finished <n>', 'end once this many payments finished').hideHelp());
    },
    load: () => import('./commands/trace.js'),
  },
  {
    name: 'worker',
    summary: "run a scenario's handler stages: consume, process, fail and retry, emit the next events, dead-letter",
    examples: [
      'payq worker --broker kafka://127.0.0.1:9092 --scenario checkout',
      'payq worker --broker amqp://guest:guest@127.0.0.1:5672 --stage payment-service --stage capture-service',
      'payq worker --broker kafka://127.0.0.1:9092 --failures off --time-scale 0 --idle-timeout 5s --json   # CI: end when idle',
      'payq worker --broker kafka://127.0.0.1:9092 --scenario ./my-pipeline.yaml --seed 7 --duration 10m',
    ],
    configure(cmd) {
      metricsFlags(cmd);
      cmd
        .option('--scenario <name|file>', 'built-in scenario name or YAML/JSON file', 'checkout')
        .option('--stage <name>', 'run only this stage (repeatable, or comma-separated); default: every stage', collect)
        .option('--prefetch <n>', 'unacknowledged messages per stage at once (default 64)')
        .option('--seed <n>', 'seed of the decisions: processing times, failures, outcomes (default 0)')
        .option('--failures <on|off>', "off: no stage fails (every failure rate 0), e.g. for DLQ drills' baselines (default on)")
        .option('--time-scale <x>', 'multiply the sampled processing times; 0 never waits (default 1)')
        .option('--duration <time>', 'stop after this long (exit 0), e.g. 10m')
        .option('--idle-timeout <time>', 'stop once no message arrived for this long (exit 0), e.g. 5s: lets CI finish')
        .option('--partitions <n>', 'partitions of the topics the worker creates (Kafka; default 6)');
      cmd.addHelpText(
        'after',
        '\nEach stage consumes its destination in the group payq-worker.<scenario>.<stage> (run several workers to share the load),\n' +
          'acks an input only after the broker confirmed the events it emitted, and dead-letters to <destination>.dlq with\n' +
          'payq-dlq-reason (undecodable, unexpected-type, permanent-failure, retries-exhausted) and provenance headers.\n' +
          'Decisions are seeded per event: a redelivered event is handled the same way and emits the same event ids.\n' +
          'Runs until Ctrl-C (drains in-flight work, prints the statistics, exit 130), --duration or --idle-timeout (exit 0).\n' +
          'memory:// lives inside one process, so a worker process cannot use it: payq bench runs its workers in-process.',
      );
    },
    load: () => import('./commands/worker.js'),
  },
  {
    name: 'replay-dlq',
    summary: 'put dead-lettered messages back where they came from: confirmed before removed, loop-guarded, --dry-run first',
    examples: [
      'payq replay-dlq --broker amqp://guest:guest@127.0.0.1:5672 --dlq payments.dlq --dry-run',
      'payq replay-dlq --broker kafka://127.0.0.1:9092 --dry-run --json | jq .rows      # every DLQ of the checkout pipeline',
      'payq replay-dlq --broker kafka://127.0.0.1:9092 --filter type=payment_authorized --filter reason=^permanent --since 2h',
      'payq replay-dlq --broker amqp://guest:guest@127.0.0.1:5672 --dlq orders-dead --to orders --limit 100 --rate 50',
      'payq replay-dlq --broker kafka://127.0.0.1:9092 --dlq connect-dlq --park-unresolved',
    ],
    configure(cmd) {
      cmd
        .option('--dlq <name>', "DLQ to read (repeatable, or comma-separated); default: every existing DLQ of the scenario's pipeline", collect)
        .option('--scenario <name|file>', 'whose DLQs to read when no --dlq is given', 'checkout')
        .option('--to <dest>', 'send every message here instead of the origin its headers name (it must exist)')
        .option('--dry-run', 'change nothing: a table by origin, reason and event type (--json lists each message); messages go back in order')
        .option('--filter <key=value>', 'only these: type=a,b · reason=REGEX · payment=ID,… · origin=DEST (repeatable; all must match)', collect)
        .option('--since <time>', 'only messages dead-lettered at or after this ISO time, or this long ago (2h)')
        .option('--until <time>', 'only messages dead-lettered before this ISO time, or this long ago')
        .option('--limit <n>', 'replay (or park) at most n messages, then stop')
        .option('--rate <n>', 'republish at most n messages per second')
        .option('--max-replays <n>', 'a message replayed this often already goes to <origin>.parked instead (default 3)')
        .option('--park-unresolved', 'park what cannot be replayed (no origin, unreadable body, missing origin) instead of leaving it in the DLQ')
        .option('--max-bytes <n>', 'bodies larger than this stay in the DLQ (default 1048576, Kafka\'s default limit)')
        .option('--idle-timeout <time>', 'end once no message arrived for this long: the DLQ is drained (default 3s)')
        .option('--type-field <path>', 'body field with the event type, for events payq did not write', 'event')
        .option('--correlate <path>', 'body field with the payment/correlation id, for events payq did not write', 'payment_id')
        .addOption(new Option('--group <name>', 'consumer group reading the DLQs (default payq-replay)').hideHelp())
        .addOption(new Option('--window <n>', 'messages held unacked at once (default 10000)').hideHelp());
      cmd.addHelpText(
        'after',
        '\nOrigin, first found: payq-original-destination (payq worker); RabbitMQ x-death, x-last-death-queue, x-first-death-queue\n' +
          '(the queue, never the exchange); Kafka Connect __connect.errors.topic; Spring kafka_dlt-original-topic; --to overrides.\n' +
          'Each message is republished with the same body, event id and headers (minus the dead-letter ones), payq-replay-count + 1,\n' +
          'and acked on the DLQ only after the broker confirmed the republish: a crash loses nothing, at worst a duplicate.\n' +
          'Left in the DLQ, one warning line each: no origin, a body that is not a UTF-8 JSON object, larger than --max-bytes, or an\n' +
          'origin that does not exist (never created). On Kafka a message left behind is copied to the end of its DLQ partition.\n' +
          'Exit 0 when everything selected was replayed or parked; 4 when messages were left or failed; 130 on Ctrl-C.',
      );
    },
    load: () => import('./commands/replay-dlq.js'),
  },
  {
    name: 'bench',
    summary: 'the whole pipeline in one run: producers, workers and a tracer; APT, throughput, latency, loss, availability; --assert for CI',
    examples: [
      'payq bench                                            # checkout on memory://, 10 s after a 2 s warm-up',
      "payq bench --broker kafka://127.0.0.1:9092 --rate 2000 --duration 60s --assert 'p99_ms<250' --assert loss==0",
      'payq bench --broker amqp://guest:guest@127.0.0.1:5672 --count 10000 --json report.json --markdown summary.md',
      "payq bench --time-scale 0 --failures off --duration 30s --assert 'throughput>=20k'   # the harness ceiling",
      "payq bench --broker kafka://127.0.0.1:9092 --find-max --assert 'p99_ms<250' --assert loss==0 --duration 20s --json capacity.json",
      'payq bench --scenario ./my-pipeline.yaml --producers 4 --consumers 200 --warmup 10s',
    ],
    configure(cmd) {
      metricsFlags(cmd);
      cmd
        .option('--scenario <name|file>', 'built-in scenario name or YAML/JSON file', 'checkout')
        .option('--duration <time>', 'measured time after the warm-up (default 10s)')
        .option('--count <n>', 'measured payments after the warm-up, instead of --duration')
        .option('--warmup <time>', 'run this long first, excluded from every figure (0 for none)', '2s')
        .option('--rate <n>', 'payments per second over all producers, open loop (latency from intended send times); default flat out')
        .option('--producers <n>', 'producer loops sharing the stream (each at rate/n)', '1')
        .option('--consumers <n>', "deliveries each stage works on at once (the stage's prefetch)", '64')
        .option('--seed <n>', 'generator and worker decisions seed (default random, in the report)')
        .option('--time-scale <x>', 'multiply the scenario\'s processing times; 0 never waits', '1')
        .option('--failures <on|off>', 'off: no stage fails', 'on')
        .option('--max-backlog <n>', 'flat out: events sent but not yet consumed, at most (default max(1000, 2 × consumers × stages))')
        .option('--drain-timeout <time>', 'after producing, wait at most this long for the pipeline to finish', '30s')
        .option('--assert <expr>', "fail with exit 5 unless EXPR holds, e.g. 'p99_ms<250', loss==0, 'throughput>=1000', 'apt_ms<=20' (repeatable)", collect)
        .option('--markdown <file>', 'write the report as markdown (for $GITHUB_STEP_SUMMARY)')
        .option('--html <file>', 'write the report as one self-contained HTML file with charts (opens offline)')
        .option('--run-id <id>', 'run id stamped on the measured events (default random; required with --role)')
        .option('--role <part>', 'run one part of the pipeline: producer, worker or tracer (default all, in this process)')
        .option('--shard <i/N>', 'with --role producer or tracer: shard i of N (producer: of the seeded stream, at rate/N; tracer: of the payments)')
        .option('--idle-timeout <time>', 'worker and tracer parts: end once the run\'s events stopped coming for this long', '10s')
        .option('--start-timeout <time>', 'worker and tracer parts: give up when no event of the run arrived within this long', '5m')
        .option('--partitions <n>', 'partitions of the Kafka topics bench creates (default 6)')
        .option('--find-max', 'capacity search: the highest --rate whose step meets every --assert (steps of --duration each)')
        .option('--min-rate <n>', 'with --find-max: the first step\'s rate (payments/s)', '10')
        .option('--max-rate <n>', 'with --find-max: never step above this rate (payments/s)')
        .option('--precision <pct>', 'with --find-max: stop when the passing and failing rates are this close', '5%')
        .option('--max-duration <time>', 'with --find-max: the whole search\'s time budget', '10m')
        .addOption(new Option('--size <bytes>', 'pad each produced body to at least this many bytes').hideHelp())
        .allowExcessArguments(true)
        .hook('preAction', (command) => {
          // `--json FILE`: the global --json is a flag, so the file arrives as an argument.
          if (command.args.length > 1) throw new UsageError(`unexpected arguments: ${command.args.join(' ')}`, { hint: 'see payq bench --help' });
          if (command.args.length === 1) command.setOptionValueWithSource('jsonFile', command.args[0], 'cli');
        });
      cmd.addHelpText(
        'after',
        '\nOutput: the report as a table on stderr; --json FILE writes it as JSON (payq.report/v1), --json alone prints it on stdout.\n' +
          'Assertions: KEY OP NUMBER, OP one of < <= > >= == !=; KEY a dotted report path (latency.publish.p99_ms,\n' +
          'handlers.payment-service.t_ms) or an alias: p50_ms p90_ms p99_ms p999_ms max_ms (end to end), throughput, payments_per_s,\n' +
          'mb_per_s, publish_p99_ms, lost, duplicates, out_of_order, dead_lettered, stuck, apt_ms, loss, availability. NUMBER may end in % or k.\n' +
          'Exit 0 ok, 4 when acknowledged events were lost or sends not acknowledged, 5 when an --assert is breached, 130 on Ctrl-C.\n' +
          'Without --broker (or PAYQ_BROKER) bench runs on memory://, in this process.\n' +
          'Several machines: start --role tracer and --role worker (as many as you like) first, then --role producer, all with\n' +
          'the same --broker, --scenario and --run-id, each with --json FILE; payq report --merge FILE... gives the whole run.',
      );
    },
    load: () => import('./commands/bench.js'),
  },
  {
    name: 'report',
    summary: 'render saved bench reports; --merge them exactly (from their histograms); --compare with a baseline',
    examples: [
      'payq report report.json',
      'payq report --merge producer.json worker-a.json worker-b.json tracer.json --json > merged.json',
      'payq report report.json --compare baseline.json --fail-on-regression 10',
      "payq report report.json --assert 'p99_ms<250' --markdown summary.md",
      'payq report report.json --compare baseline.json --html report.html',
    ],
    configure(cmd) {
      cmd
        .usage('[options] FILE...')
        .option('--merge', 'combine the reports into one: counts and histograms add, percentiles recomputed')
        .option('--allow-mixed', 'with --merge: also merge reports of different runs, brokers or scenarios (a warning each)')
        .option('--compare <baseline>', 'show each headline figure against this baseline report, with regressions flagged')
        .option('--fail-on-regression <pct>', 'with --compare: exit 5 when a figure got worse by more than pct percent')
        .option('--threshold <pct>', 'with --compare: how much worse counts as a regression in the table (default 5)')
        .option('--assert <expr>', 'as payq bench --assert, on the (merged) report; exit 5 when breached (repeatable)', collect)
        .option('--markdown <file>', 'write the rendering as markdown')
        .option('--html <file>', 'write the rendering as one self-contained HTML file with charts (opens offline)')
        .allowExcessArguments(true)
        .hook('preAction', (command) => {
          command.setOptionValueWithSource('files', [...command.args], 'cli');
        });
    },
    load: () => import('./commands/report.js'),
  },
];

/** `--metrics-port`, `--metrics-host`, `--metrics-linger`: the same three on every command that serves live metrics. */
function metricsFlags(cmd: Command): Command {
  return cmd
    .option('--metrics-port <n>', 'serve live OpenMetrics on http://127.0.0.1:N/metrics while running (0: any free port)')
    .option('--metrics-host <addr>', 'with --metrics-port: the address to listen on', '127.0.0.1')
    .option('--metrics-linger <time>', 'with --metrics-port: keep serving the final figures this long after the end', '0s');
}

/** Commander reducer for repeatable options. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
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
  program
    .description('Event-driven payment pipelines on message queues: produce, trace, replay and benchmark.')
    .version(payqVersion, '-V, --version')
    .option('--broker <url>', `broker URL: ${SUPPORTED_SCHEMES.join(', ')} (default $PAYQ_BROKER; README "Brokers and URLs")`)
    .option('--json', 'machine-readable output on stdout')
    .option('-q, --quiet', 'only errors on stderr')
    .option('-v, --verbose', 'more detail on stderr')
    .option('--debug', 'show stack traces of errors')
    .option('--config <file>', 'options from a YAML/JSON file (default $PAYQ_CONFIG)')
    .option('--password-file <file>', "the broker password for the URL's user, from a file only you can read (or $PAYQ_PASSWORD_FILE, $PAYQ_PASSWORD)")
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
    // `payq produce --help` lists --broker, --json, --config, -q, -v, --debug too.
    cmd.configureHelp({ showGlobalOptions: true });
    spec.configure(cmd);
    cmd.exitOverride().configureOutput(commanderOutput);
    cmd.addHelpText('after', `\nExamples:\n${spec.examples.map((e) => `  ${e}`).join('\n')}\n`);
    cmd.action((_opts: unknown, command: Command) => {
      // Only what was typed counts as a flag: commander's displayed defaults must not override
      // the environment or a config file (the schemas hold the same defaults).
      const all = command.optsWithGlobals();
      const flags = Object.fromEntries(Object.entries(all).filter(([k]) => command.getOptionValueSourceWithGlobals(k) === 'cli'));
      done(spec.load().then((mod) => mod.run(flags, ctx)));
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
