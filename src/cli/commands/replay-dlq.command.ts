import { REPLAY_DEFAULTS } from '../../core/defaults.js';
import { DEFAULT_DECODE } from '../../events/decode.js';
import { CONNECTION_FLAGS, DEFAULT_SCENARIO, durationText, type CommandDescription } from './describe.js';

export const replayDlqCommand: CommandDescription = {
  name: 'replay-dlq',
  summary: 'put dead-lettered messages back where they came from: confirmed before removed, loop-guarded, --dry-run first',
  examples: [
    'payq replay-dlq --broker amqp://guest:guest@127.0.0.1:5672 --dlq payments.dlq --dry-run',
    'payq replay-dlq --broker kafka://127.0.0.1:9092 --dry-run --json | jq .rows      # every DLQ of the checkout pipeline',
    'payq replay-dlq --broker kafka://127.0.0.1:9092 --filter type=payment_authorized --filter reason=^permanent --since 2h',
    'payq replay-dlq --broker amqp://guest:guest@127.0.0.1:5672 --dlq orders-dead --to orders --limit 100 --rate 50',
    'payq replay-dlq --broker kafka://127.0.0.1:9092 --dlq connect-dlq --park-unresolved',
  ],
  flags: [
    { flags: '--dlq <name>', help: "DLQ to read (repeatable, or comma-separated); default: every existing DLQ of the scenario's pipeline", repeatable: true },
    { flags: '--scenario <name|file>', help: 'whose DLQs to read when no --dlq is given', default: DEFAULT_SCENARIO },
    { flags: '--to <dest>', help: 'send every message here instead of the origin its headers name (it must exist)' },
    { flags: '--dry-run', help: 'change nothing: a table by origin, reason and event type (--json lists each message); messages go back in order' },
    { flags: '--filter <key=value>', help: 'only these: type=a,b · reason=REGEX · payment=ID,… · origin=DEST (repeatable; all must match)', repeatable: true },
    { flags: '--since <time>', help: 'only messages dead-lettered at or after this ISO time, or this long ago (2h)' },
    { flags: '--until <time>', help: 'only messages dead-lettered before this ISO time, or this long ago' },
    { flags: '--limit <n>', help: 'replay (or park) at most n messages, then stop' },
    { flags: '--rate <n>', help: 'republish at most n messages per second' },
    { flags: '--max-replays <n>', help: 'a message replayed this often already goes to <origin>.parked instead (default {default})', default: REPLAY_DEFAULTS.maxReplays },
    { flags: '--park-unresolved', help: 'park what cannot be replayed (no origin, unreadable body, missing origin) instead of leaving it in the DLQ' },
    { flags: '--max-bytes <n>', help: "bodies larger than this stay in the DLQ (default {default}, Kafka's default limit)", default: REPLAY_DEFAULTS.maxBytes },
    {
      flags: '--idle-timeout <time>',
      help: 'end once no message arrived for this long: the DLQ is drained (default {default})',
      default: durationText(REPLAY_DEFAULTS.idleTimeoutMs),
    },
    { flags: '--type-field <path>', help: 'body field with the event type, for events payq did not write', default: DEFAULT_DECODE.typeField },
    { flags: '--correlate <path>', help: 'body field with the payment/correlation id, for events payq did not write', default: DEFAULT_DECODE.correlate },
    { flags: '--group <name>', help: 'consumer group reading the DLQs (default {default})', default: REPLAY_DEFAULTS.group, hidden: true },
    { flags: '--window <n>', help: 'messages held unacked at once (default {default})', default: REPLAY_DEFAULTS.window, hidden: true },
    ...CONNECTION_FLAGS,
  ],
  helpAfter:
    'Origin, first found: payq-original-destination (payq worker); RabbitMQ x-death, x-last-death-queue, x-first-death-queue\n' +
    '(the queue, never the exchange); Kafka Connect __connect.errors.topic; Spring kafka_dlt-original-topic; --to overrides.\n' +
    'Each message is republished with the same body, event id and headers (minus the dead-letter ones), payq-replay-count + 1,\n' +
    'and acked on the DLQ only after the broker confirmed the republish: a crash loses nothing, at worst a duplicate.\n' +
    'Left in the DLQ, one warning line each: no origin, a body that is not a UTF-8 JSON object, larger than --max-bytes, or an\n' +
    'origin that does not exist (never created). On Kafka a message left behind is copied to the end of its DLQ partition.\n' +
    'Exit 0 when everything selected was replayed or parked; 4 when messages were left or failed; 130 on Ctrl-C.',
  load: () => import('./replay-dlq.js'),
};
