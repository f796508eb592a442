import { BENCH_DEFAULTS, WORKER_DEFAULTS } from '../../core/defaults.js';
import { UsageError } from '../../errors.js';
import { CONNECTION_FLAGS, DEFAULT_SCENARIO, durationText, METRICS_FLAGS, procsFlag, type CommandDescription } from './describe.js';

export const benchCommand: CommandDescription = {
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
  flags: [
    ...METRICS_FLAGS,
    { flags: '--scenario <name|file>', help: 'built-in scenario name or YAML/JSON file', default: DEFAULT_SCENARIO },
    // Not filled in: --count excludes it.
    { flags: '--duration <time>', help: 'measured time after the warm-up (default {default})', shownDefault: durationText(BENCH_DEFAULTS.durationMs) },
    { flags: '--count <n>', help: 'measured payments after the warm-up, instead of --duration' },
    { flags: '--warmup <time>', help: 'run this long first, excluded from every figure (0 for none)', default: durationText(BENCH_DEFAULTS.warmupMs) },
    { flags: '--rate <n>', help: 'payments per second over all producers, open loop (latency from intended send times); default flat out' },
    { flags: '--producers <n>', help: 'producer loops sharing the stream (each at rate/n)', default: BENCH_DEFAULTS.producers },
    { flags: '--consumers <n>', help: "deliveries each stage works on at once (the stage's prefetch)", default: BENCH_DEFAULTS.consumers },
    procsFlag('running shard k/n of the producers and every stage; the tracer stays in this thread'),
    { flags: '--seed <n>', help: 'generator and worker decisions seed (default random, in the report)' },
    { flags: '--time-scale <x>', help: "multiply the scenario's processing times; 0 never waits", default: WORKER_DEFAULTS.timeScale },
    { flags: '--failures <on|off>', help: 'off: no stage fails', default: WORKER_DEFAULTS.failures ? 'on' : 'off' },
    { flags: '--max-backlog <n>', help: 'flat out: events sent but not yet consumed, at most (default max(1000, 2 × consumers × stages))' },
    { flags: '--drain-timeout <time>', help: 'after producing, wait at most this long for the pipeline to finish', default: durationText(BENCH_DEFAULTS.drainTimeoutMs) },
    { flags: '--assert <expr>', help: "fail with exit 5 unless EXPR holds, e.g. 'p99_ms<250', loss==0, 'throughput>=1000', 'apt_ms<=20' (repeatable)", repeatable: true },
    { flags: '--markdown <file>', help: 'write the report as markdown (for $GITHUB_STEP_SUMMARY)' },
    { flags: '--html <file>', help: 'write the report as one self-contained HTML file with charts (opens offline)' },
    { flags: '--run-id <id>', help: 'run id stamped on the measured events (default random; required with --role)' },
    { flags: '--shard <i/N>', help: 'with --role producer or tracer: shard i of N (producer: of the seeded stream, at rate/N; tracer: of the payments)' },
    { flags: '--role <part>', help: 'run one part of the pipeline: producer, worker or tracer (default {default}, in this process)', default: 'all' },
    {
      flags: '--idle-timeout <time>',
      help: "worker and tracer parts: end once the run's events stopped coming for this long",
      default: durationText(BENCH_DEFAULTS.idleTimeoutMs),
    },
    {
      flags: '--start-timeout <time>',
      help: 'worker and tracer parts: give up when no event of the run arrived within this long',
      default: durationText(BENCH_DEFAULTS.startTimeoutMs),
    },
    { flags: '--partitions <n>', help: 'partitions of the Kafka topics bench creates (default {default})', default: WORKER_DEFAULTS.partitions },
    { flags: '--find-max', help: 'capacity search: the highest --rate whose step meets every --assert (steps of --duration each)' },
    { flags: '--min-rate <n>', help: "with --find-max: the first step's rate (payments/s)", default: 10 },
    { flags: '--max-rate <n>', help: 'with --find-max: never step above this rate (payments/s)' },
    { flags: '--precision <pct>', help: 'with --find-max: stop when the passing and failing rates are this close', default: '5%' },
    { flags: '--max-duration <time>', help: "with --find-max: the whole search's time budget", default: '10m' },
    { flags: '--size <bytes>', help: 'pad each produced body to at least this many bytes', default: 0, hidden: true },
    ...CONNECTION_FLAGS,
  ],
  configure(cmd) {
    cmd.allowExcessArguments(true).hook('preAction', (command) => {
      // `--json FILE`: the global --json is a flag, so the file arrives as an argument.
      if (command.args.length > 1) throw new UsageError(`unexpected arguments: ${command.args.join(' ')}`, { hint: 'see payq bench --help' });
      if (command.args.length === 1) command.setOptionValueWithSource('jsonFile', command.args[0], 'cli');
    });
  },
  helpAfter:
    'Output: the report as a table on stderr; --json FILE writes it as JSON (payq.report/v1), --json alone prints it on stdout.\n' +
    'Assertions: KEY OP NUMBER, OP one of < <= > >= == !=; KEY a dotted report path (latency.publish.p99_ms,\n' +
    'handlers.payment-service.t_ms) or an alias: p50_ms p90_ms p99_ms p999_ms max_ms (end to end), throughput, payments_per_s,\n' +
    'mb_per_s, publish_p99_ms, lost, duplicates, out_of_order, dead_lettered, stuck, apt_ms, loss, availability. NUMBER may end in % or k.\n' +
    'Exit 0 ok, 4 when acknowledged events were lost or sends not acknowledged, 5 when an --assert is breached, 130 on Ctrl-C.\n' +
    'Without --broker (or PAYQ_BROKER) bench runs on memory://, in this process.\n' +
    'Several machines: start --role tracer and --role worker (as many as you like) first, then --role producer, all with\n' +
    'the same --broker, --scenario and --run-id, each with --json FILE; payq report --merge FILE... gives the whole run.',
  load: () => import('./bench.js'),
};
