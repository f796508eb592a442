import { WORKER_DEFAULTS } from '../../core/defaults.js';
import { CONNECTION_FLAGS, DEFAULT_SCENARIO, METRICS_FLAGS, procsFlag, type CommandDescription } from './describe.js';

export const workerCommand: CommandDescription = {
  name: 'worker',
  summary: "run a scenario's handler stages: consume, process, fail and retry, emit the next events, dead-letter",
  examples: [
    'payq worker --broker kafka://127.0.0.1:9092 --scenario checkout',
    'payq worker --broker amqp://guest:guest@127.0.0.1:5672 --stage payment-service --stage capture-service',
    'payq worker --broker kafka://127.0.0.1:9092 --failures off --time-scale 0 --idle-timeout 5s --json   # CI: end when idle',
    'payq worker --broker kafka://127.0.0.1:9092 --scenario ./my-pipeline.yaml --seed 7 --duration 10m',
  ],
  flags: [
    ...METRICS_FLAGS,
    { flags: '--scenario <name|file>', help: 'built-in scenario name or YAML/JSON file', default: DEFAULT_SCENARIO },
    { flags: '--stage <name>', help: 'run only this stage (repeatable, or comma-separated); default: every stage', repeatable: true },
    { flags: '--prefetch <n>', help: 'unacknowledged messages per stage at once (default {default})', default: WORKER_DEFAULTS.prefetch },
    { flags: '--seed <n>', help: 'seed of the decisions: processing times, failures, outcomes (default {default})', default: WORKER_DEFAULTS.seed },
    {
      flags: '--failures <on|off>',
      help: "off: no stage fails (every failure rate 0), e.g. for DLQ drills' baselines (default {default})",
      default: WORKER_DEFAULTS.failures ? 'on' : 'off',
    },
    { flags: '--time-scale <x>', help: 'multiply the sampled processing times; 0 never waits (default {default})', default: WORKER_DEFAULTS.timeScale },
    { flags: '--duration <time>', help: 'stop after this long (exit 0), e.g. 10m' },
    { flags: '--idle-timeout <time>', help: 'stop once no message arrived for this long (exit 0), e.g. 5s: lets CI finish' },
    { flags: '--partitions <n>', help: 'partitions of the topics the worker creates (Kafka; default {default})', default: WORKER_DEFAULTS.partitions },
    procsFlag('running the stages in their groups (they share the messages)'),
    ...CONNECTION_FLAGS,
  ],
  helpAfter:
    'Each stage consumes its destination in the group payq-worker.<scenario>.<stage> (run several workers to share the load),\n' +
    'acks an input only after the broker confirmed the events it emitted, and dead-letters to <destination>.dlq with\n' +
    'payq-dlq-reason (undecodable, unexpected-type, permanent-failure, retries-exhausted) and provenance headers.\n' +
    'Decisions are seeded per event: a redelivered event is handled the same way and emits the same event ids.\n' +
    'Runs until Ctrl-C (drains in-flight work, prints the statistics, exit 130), --duration or --idle-timeout (exit 0).\n' +
    'memory:// lives inside one process, so a worker process cannot use it: payq bench runs its workers in-process.',
  load: () => import('./worker.js'),
};
