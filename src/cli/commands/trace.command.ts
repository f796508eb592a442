import { DEFAULT_START_TIMEOUT_MS } from '../../core/defaults.js';
import { DEFAULT_DECODE, DEFAULT_TIME_FIELD } from '../../events/decode.js';
import { CONNECTION_FLAGS, DEFAULT_SCENARIO, durationText, METRICS_FLAGS, READ_MODE_FLAGS, type CommandDescription } from './describe.js';

/**
 * With --expect and no --idle-timeout, trace ends after this long without events once every payment
 * it saw is judged; while one is still open, after --within + 1 s without events (if longer).
 */
export const EXPECT_IDLE_TIMEOUT_MS = 5_000;

export const traceCommand: CommandDescription = {
  name: 'trace',
  summary: 'follow payments across the pipeline: timelines, latency, completeness; --expect for CI',
  examples: [
    "payq trace --broker kafka://127.0.0.1:9092 --expect 'order_placed,order_completed|payment_declined' --within 60s",
    'payq trace --broker kafka://127.0.0.1:9092 --from-beginning --idle-timeout 10s --json',
    'payq trace --broker amqp://guest:guest@127.0.0.1:5672 --payment pay_7de73dd98817dded',
    'payq trace --broker kafka://127.0.0.1:9092 --topic orders --type-field event --correlate data.order_id --from-beginning --idle-timeout 5s',
    'payq trace --broker kafka://127.0.0.1:9092 --topic orders --topic payments --correlate orders=data.order_id,payments=data.order.id --time-field data.at',
  ],
  flags: [
    ...METRICS_FLAGS,
    { flags: '--scenario <name|file>', help: 'the pipeline to follow (default {default}, unless --topic is given)', shownDefault: DEFAULT_SCENARIO },
    { flags: '--topic <name>', help: 'a destination to tap instead of the scenario\'s (repeatable)', repeatable: true },
    { flags: '--from-beginning', help: 'read history too (Kafka; RabbitMQ taps see new messages only)' },
    { flags: '--stuck-after <time>', help: 'a payment with no new event for this long is stuck', default: '30s' },
    { flags: '--expect <types>', help: 'event types every payment must reach (comma-separated; A|B: either); exit 4 when one does not' },
    { flags: '--within <time>', help: 'with --expect: measured from the payment\'s start, on its events\' publish times' },
    { flags: '--payment <id>', help: 'print the timeline of this payment' },
    { flags: '--run-id <id>', help: 'only events of this run (payq-run-id)' },
    { flags: '--shard <i/N>', help: "trace shard i of N of the payments (Kafka: partitions ≡ i-1 mod N; elsewhere by a hash of the payment id); shards' figures add up" },
    { flags: '--idle-timeout <time>', help: 'end after this long without events (default with --expect: {default})', shownDefault: durationText(EXPECT_IDLE_TIMEOUT_MS) },
    {
      flags: '--start-timeout <time>',
      help: 'wait this long for missing destinations (then exit 3 naming them; trace never creates them) and, with --idle-timeout, for the first event',
      default: durationText(DEFAULT_START_TIMEOUT_MS),
    },
    { flags: '--group <name>', help: 'read as a member of this group, TAKING the messages (on RabbitMQ: compete with the queue’s consumers); default: a tap, taking nothing' },
    ...READ_MODE_FLAGS,
    { flags: '--duration <time>', help: 'end after this long' },
    { flags: '--type-field <path>', help: 'body field with the event type, for events payq did not write', shownDefault: DEFAULT_DECODE.typeField },
    {
      flags: '--correlate <paths>',
      help: 'body field that ties a payment\'s events together; per destination: orders=data.order_id,payments=data.order.id',
      shownDefault: DEFAULT_DECODE.correlate,
    },
    {
      flags: '--time-field <path>',
      help: 'body field with the event\'s business time (ISO 8601, epoch s or ms), shown in --payment timelines',
      shownDefault: DEFAULT_TIME_FIELD,
    },
    { flags: '--until-finished <n>', help: 'end once this many payments finished', hidden: true },
    ...CONNECTION_FLAGS,
  ],
  load: () => import('./trace.js'),
};
