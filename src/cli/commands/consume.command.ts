import { DEFAULT_START_TIMEOUT_MS } from '../../core/defaults.js';
import { DEFAULT_DECODE, DEFAULT_TIME_FIELD } from '../../events/decode.js';
import { CONNECTION_FLAGS, DEFAULT_SCENARIO, durationText, procsFlag, READ_MODE_FLAGS, type CommandDescription } from './describe.js';

export const consumeCommand: CommandDescription = {
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
  flags: [
    { flags: '--topic <name>', help: 'destination to read (repeatable, or comma-separated); default: every destination of the scenario', repeatable: true },
    { flags: '--scenario <name|file>', help: 'whose destinations to read when no --topic is given', default: DEFAULT_SCENARIO },
    {
      flags: '--group <name>',
      help:
        'join this consumer group and TAKE the messages (on RabbitMQ: compete with the queue’s other consumers, e.g. the workers). ' +
        'Without it consume is a tap: it observes and takes nothing from anyone',
    },
    {
      flags: '--from-beginning',
      help:
        'read what the destinations already hold: Kafka history (a tap, or a new group); on RabbitMQ only with --group ' +
        '(a queue holds what no one acked, and --group reads it anyway); a RabbitMQ tap sees new messages only',
    },
    ...READ_MODE_FLAGS,
    {
      flags: '--start-timeout <time>',
      help: 'wait this long for a missing destination, then exit 3 naming it (consume never creates it)',
      default: durationText(DEFAULT_START_TIMEOUT_MS),
    },
    { flags: '--type <types>', help: 'print only events of these types (comma-separated, repeatable); the others are still read', repeatable: true },
    { flags: '--limit <n>', help: 'stop after printing n events (exit 0); messages delivered beyond it are given back, not acked' },
    { flags: '--idle-timeout <time>', help: 'stop after this long without a message (exit 0), e.g. 3s: lets CI finish' },
    { flags: '--with-meta', help: 'NDJSON: wrap each body as {destination,key,partition,offset,redelivered,headers,event}' },
    { flags: '--type-field <path>', help: 'body field with the event type, for events payq did not write (wins over headers)', shownDefault: DEFAULT_DECODE.typeField },
    {
      flags: '--correlate <paths>',
      help: 'body field with the payment/correlation id, for events payq did not write; per destination: orders=data.order_id,payments=data.order.id',
      shownDefault: DEFAULT_DECODE.correlate,
    },
    { flags: '--time-field <path>', help: 'body field with the event\'s business time (ISO 8601, epoch s or ms), for events payq did not write', shownDefault: DEFAULT_TIME_FIELD },
    { flags: '--prefetch <n>', help: 'unacked messages held at once (default 500, at most --limit)', hidden: true },
    procsFlag('each a member of the --group (they share its messages; --limit is the whole run’s)'),
    ...CONNECTION_FLAGS,
  ],
  helpAfter:
    'Output: one line per message on stdout. NDJSON when stdout is not a terminal (or with --json): the body as it is.\n' +
    'A body that is not JSON is never dropped: it prints as {"destination","problem","raw","encoding"} and a warning goes to stderr.\n' +
    'Each message is acked only after its line was written. The summary (consumed, printed, by type) goes to stderr.\n' +
    'memory:// lives inside one process and cannot be consumed from another: use kafka:// or amqp://, or payq bench.',
  load: () => import('./consume.js'),
};
