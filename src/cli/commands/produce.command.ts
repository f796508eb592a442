import { CONNECTION_FLAGS, DEFAULT_SCENARIO, METRICS_FLAGS, procsFlag, type CommandDescription } from './describe.js';

/** Payments produced when neither --count nor --duration is given. */
export const DEFAULT_COUNT = 1000;

export const produceCommand: CommandDescription = {
  name: 'produce',
  summary: 'send seeded synthetic payment events (or your NDJSON) to a destination',
  examples: [
    'payq produce --broker memory:// --count 100000 --seed 42 --json',
    'payq produce --broker kafka://127.0.0.1:9092 --count 100000 --rate 2000',
    'payq produce --broker amqp://guest:guest@127.0.0.1:5672 --lifecycle --count 1000 --topic payments',
    'payq produce --dry-run --count 5 --seed 7            # events as NDJSON, nothing sent',
    'payq produce --broker kafka://127.0.0.1:9092 --from-file events.ndjson --topic orders',
  ],
  flags: [
    ...METRICS_FLAGS,
    { flags: '--topic <name>', help: 'destination: Kafka topic, RabbitMQ queue (declared if missing); default: the scenario entry stage' },
    { flags: '--count <n>', help: `payments to generate (default ${DEFAULT_COUNT} unless --duration); with --from-file: send the first n events` },
    { flags: '--duration <time>', help: 'keep producing this long, e.g. 30s, 5m' },
    { flags: '--rate <n>', help: 'events per second, open loop (sends at their intended times); default flat out' },
    { flags: '--seed <n>', help: 'seed for byte-identical streams (default: random, printed in the summary)' },
    { flags: '--scenario <name|file>', help: 'built-in scenario name or YAML/JSON file', default: DEFAULT_SCENARIO },
    { flags: '--lifecycle', help: "every event of each payment, in order, interleaved across payments (default: each payment's entry event)" },
    { flags: '--from-file <file>', help: "send your own events: NDJSON, one JSON object per line; '-' reads stdin" },
    { flags: '--type-field <path>', help: 'with --from-file: body field holding the event type', default: 'event' },
    { flags: '--skip-lines <n>', help: 'with --from-file: skip the first n lines (sent by an earlier run that stopped at a bad line)' },
    { flags: '--size <bytes>', help: 'pad each body to at least this many bytes', default: 0, quietDefault: true },
    { flags: '--partitions <n>', help: 'partitions when the topic is created (Kafka)', default: 6, quietDefault: true },
    { flags: '--dry-run', help: 'print the events as NDJSON on stdout and send nothing' },
    { flags: '--run-id <id>', help: 'run id stamped on every event (default: random)' },
    { flags: '--shard <i/N>', help: "send shard i of N of the seeded stream: the payments at positions ≡ i-1 mod N (--count and --rate are the whole stream's)" },
    procsFlag('sending shard k/n of the stream'),
    { flags: '--batch-size <n>', help: 'events per send batch (default: the driver’s)', hidden: true },
    { flags: '--max-in-flight <n>', help: 'batches in flight (default: the driver’s)', hidden: true },
    ...CONNECTION_FLAGS,
  ],
  load: () => import('./produce.js'),
};
