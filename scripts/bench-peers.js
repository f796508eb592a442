/**
 * What bench-produce.js and bench-consume.js share: the peers' jars and tools, CPU accounting,
 * the alternating rounds and the tables.
 *
 * CPU: a child process's user+sys comes from /proc: the whole child (every JVM thread, start-up
 * included) from this process's cutime + cstime (added when a child is reaped; the sides run one
 * at a time), and a 50 ms timeline of /proc/<pid>/stat for the part spent in the run itself; an
 * in-process bare loop's is process.cpuUsage() around the loop. The broker's is its PID's utime +
 * stime (Kafka's java, RabbitMQ's beam.smp). "The run" is the side's measured time for the events
 * (count / its events/s): the end of the child's life, its start-up left out. Both sides' CPU as %
 * of one core over the run, and client CPU µs per event (over the run, and with start-up).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BIN = path.join(ROOT, 'bin/payq.js');
export const COUNT = Number(process.env.PAYQ_BENCH_COUNT ?? 200_000);
export const REPEAT = Number(process.env.PAYQ_BENCH_REPEAT ?? 3);
if (!Number.isInteger(COUNT) || COUNT < 1 || !Number.isInteger(REPEAT) || REPEAT < 1) {
  console.error('bench: PAYQ_BENCH_COUNT and PAYQ_BENCH_REPEAT must be whole numbers of at least 1');
  process.exit(2);
}
export const URLS = {
  kafka: process.env.PAYQ_TEST_KAFKA ?? 'kafka://127.0.0.1:9092',
  amqp: process.env.PAYQ_TEST_AMQP ?? 'amqp://guest:guest@127.0.0.1:5672',
};
export const kafkaHostPort = (url) => url.replace(/^kafka:\/\//, '').split(/[/?]/)[0];

const PEERS_DIR = path.join(ROOT, 'scripts/peers');
const TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export function hasCommand(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * The classpath of a peer's jars (scripts/peers/<name>.pom.xml → scripts/peers/target/lib/<name>),
 * fetched with Maven from Maven Central the first time. { missing: why } when that can't be done.
 */
export function peerClasspath(name) {
  if (!hasCommand('java')) return { missing: 'java not found' };
  const lib = path.join(PEERS_DIR, 'target/lib', name);
  const ready = () => fs.existsSync(lib) && fs.readdirSync(lib).some((f) => f.endsWith('.jar'));
  if (!ready()) {
    if (!hasCommand('mvn')) return { missing: 'Maven (mvn) not found to fetch its jars' };
    console.error(`${name}: fetching the jars with Maven (once)…`);
    const r = spawnSync('mvn', ['-q', '-B', '-f', `${name}.pom.xml`, 'dependency:copy-dependencies', `-DoutputDirectory=target/lib/${name}`, '-DincludeScope=runtime'], {
      cwd: PEERS_DIR,
      encoding: 'utf8',
    });
    if (r.status !== 0 || !ready()) {
      fs.rmSync(lib, { recursive: true, force: true });
      return { missing: `mvn could not fetch the jars: ${(r.stdout + r.stderr).trim().split('\n').slice(-1)[0] ?? ''}` };
    }
  }
  return { classpath: `${lib}/*` };
}

function statTicks(file, fields) {
  try {
    const text = fs.readFileSync(file, 'utf8');
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state): field n is rest[n - 3].
    return fields.reduce((sum, n) => sum + Number(rest[n - 3]), 0);
  } catch {
    return undefined;
  }
}

/** CPU seconds of the reaped children of this process (cutime + cstime). */
const childrenCpuS = () => statTicks('/proc/self/stat', [16, 17]) / TICKS;
/** CPU seconds of a running process (utime + stime), undefined when it is gone. */
function pidCpuS(pid) {
  const ticks = pid === undefined ? undefined : statTicks(`/proc/${pid}/stat`, [14, 15]);
  return ticks === undefined ? undefined : ticks / TICKS;
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** Kafka's java (scripts/brokers.sh's PID file, else a kafka.Kafka process) or RabbitMQ's beam.smp. */
export function brokerPid(broker) {
  if (broker !== 'kafka' && broker !== 'amqp') return undefined;
  if (broker === 'kafka') {
    try {
      const pid = fs.readFileSync(path.join(process.env.PAYQ_STATE_DIR ?? '/tmp/payq-brokers', 'kafka.pid'), 'utf8').trim();
      if (cmdline(pid).includes('kafka.Kafka')) return pid;
    } catch {
      // not started by brokers.sh: look for it
    }
  }
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const c = cmdline(pid);
    if (broker === 'kafka' ? /\bkafka\.Kafka\b/.test(c) : c.includes('beam.smp') && c.includes('rabbit')) return pid;
  }
  return undefined;
}

/**
 * Interrupted (Ctrl-C, SIGTERM): stop the running child and delete what the run created before
 * exiting. The broker's side builders register their cleanup here as soon as they create anything.
 */
let interruptCleanup;
let runningChild;
export function onInterrupt(cleanup) {
  interruptCleanup = cleanup;
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping; deleting the topics, queues and groups this run created…`);
    runningChild?.kill('SIGTERM');
    const cleanup = interruptCleanup;
    interruptCleanup = undefined;
    Promise.resolve()
      .then(() => cleanup?.())
      .catch(() => undefined)
      .finally(() => process.exit(130));
  });
}

/** CPU seconds spent in the last `seconds` of a timeline of [t, cpu] samples ending at total. */
function inLast(samples, endT, total, seconds) {
  const from = endT - seconds;
  if (samples.length === 0 || from <= samples[0][0]) return total;
  let i = samples.length - 1;
  while (i > 0 && samples[i][0] > from) i--;
  const [t0, c0] = samples[i];
  const [t1, c1] = samples[i + 1] ?? [endT, total];
  const at = c0 + ((c1 - c0) * (from - t0)) / Math.max(t1 - t0, 1e-9);
  return Math.max(0, total - at);
}

/**
 * Runs a command to its end (one at a time: the whole CPU comes from cutime). stdin: a file path
 * or undefined; stdout is kept unless `discard` (or only its lines counted: `countLines`). The child's and the broker's CPU are also sampled
 * every 50 ms, so that the CPU of the run itself (the last `seconds` of the child's life: its
 * measured send or receive time, start-up left out) can be told apart from start-up.
 */
export function runChild(cmd, args, { broker, stdinFile, discard = false, countLines = false, env } = {}) {
  return new Promise((resolve, reject) => {
    const bpid = brokerPid(broker);
    const cpu0 = childrenCpuS();
    const b0 = pidCpuS(bpid);
    const t0 = performance.now();
    const stdin = stdinFile ? fs.openSync(stdinFile, 'r') : 'ignore';
    const child = spawn(cmd, args, { stdio: [stdin, discard ? 'ignore' : 'pipe', 'pipe'], env: { ...process.env, CI: 'true', ...env } });
    if (typeof stdin === 'number') fs.closeSync(stdin);
    runningChild = child;
    const own = [];
    const brk = [];
    const sample = setInterval(() => {
      const t = (performance.now() - t0) / 1000;
      const c = pidCpuS(child.pid);
      if (c !== undefined) own.push([t, c]);
      const b = pidCpuS(bpid);
      if (b !== undefined && b0 !== undefined) brk.push([t, b - b0]);
    }, 50);
    let stdout = '';
    let stderr = '';
    let lines = 0;
    if (countLines) {
      child.stdout.on('data', (d) => {
        for (let i = d.indexOf(10); i !== -1; i = d.indexOf(10, i + 1)) lines++;
      });
    } else child.stdout?.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr = (stderr + d).slice(-20_000)));
    child.on('error', (err) => {
      clearInterval(sample);
      reject(err);
    });
    child.on('close', (status) => {
      clearInterval(sample);
      runningChild = undefined;
      const wallS = (performance.now() - t0) / 1000;
      const b1 = pidCpuS(bpid);
      const cpuS = childrenCpuS() - cpu0;
      const brokerCpuS = b0 === undefined || b1 === undefined ? undefined : b1 - b0;
      resolve({
        status,
        stdout,
        stderr,
        lines,
        wallS,
        cpuS,
        brokerCpuS,
        cpuInLast: (seconds) => inLast(own, wallS, cpuS, seconds),
        brokerCpuInLast: (seconds) => (brokerCpuS === undefined ? undefined : inLast(brk, wallS, brokerCpuS, seconds)),
      });
    });
  });
}

/** Runs `fn` in this process and measures it; fn resolves to the events it moved. */
export async function inProcess(broker, fn) {
  const bpid = brokerPid(broker);
  const b0 = pidCpuS(bpid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const events = await fn();
  const wallS = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const b1 = pidCpuS(bpid);
  const cpuS = (c.user + c.system) / 1e6;
  const brokerCpuS = b0 === undefined || b1 === undefined ? undefined : b1 - b0;
  return { eventsPerS: events / wallS, wallS, cpuS, brokerCpuS, cpuInLast: () => cpuS, brokerCpuInLast: () => brokerCpuS };
}

/**
 * sides: [{ name, prepare?(), run(round) → { eventsPerS, wallS, cpuS, brokerCpuS }, skip? }].
 * REPEAT rounds, each running every side once; the order rotates by one each round so no side
 * always runs right after the same neighbour. A side that throws is reported and dropped.
 */
export async function alternate(sides, count) {
  const results = new Map(sides.map((s) => [s.name, s.skip ? { skip: s.skip } : { runs: [] }]));
  const active = sides.filter((s) => !s.skip);
  for (let round = 0; round < REPEAT; round++) {
    const order = active.map((_, i) => active[(i + round) % active.length]);
    for (const side of order) {
      const res = results.get(side.name);
      if (res.error) continue;
      try {
        const r = await side.run(round);
        res.runs.push(r);
        console.error(`  round ${round + 1}/${REPEAT} ${side.name}: ${Math.round(r.eventsPerS).toLocaleString('en-US')} events/s`);
      } catch (err) {
        res.error = err instanceof Error ? err.message : String(err);
        console.error(`  round ${round + 1}/${REPEAT} ${side.name}: failed: ${res.error}`);
      }
    }
  }
  const rows = [];
  for (const s of sides) {
    const res = results.get(s.name);
    if (res.skip || res.error || res.runs.length === 0) {
      rows.push({ side: s.name, note: s.note, skipped: res.skip ?? res.error ?? 'no run' });
      continue;
    }
    // The run: the side's measured time for `count` events (count / its events/s), at most its wall time.
    const run = res.runs.map((r) => {
      const runS = Math.min(count / r.eventsPerS, r.wallS);
      return { runS, cpuS: r.cpuInLast(runS), brokerCpuS: r.brokerCpuInLast(runS), wholeCpuS: r.cpuS, wallS: r.wallS };
    });
    const rates = res.runs.map((r) => r.eventsPerS);
    const cpuPct = run.map((r) => (r.cpuS / r.runS) * 100);
    const brokerPct = run.filter((r) => r.brokerCpuS !== undefined).map((r) => (r.brokerCpuS / r.runS) * 100);
    const usPerEvent = run.map((r) => (r.cpuS * 1e6) / count);
    const wholeUsPerEvent = run.map((r) => (r.wholeCpuS * 1e6) / count);
    rows.push({
      side: s.name,
      note: s.note,
      runs: res.runs.length,
      events_per_s: Math.round(median(rates)),
      events_per_s_min: Math.round(Math.min(...rates)),
      events_per_s_max: Math.round(Math.max(...rates)),
      client_cpu_pct: Math.round(median(cpuPct)),
      broker_cpu_pct: brokerPct.length ? Math.round(median(brokerPct)) : null,
      client_cpu_us_per_event: Math.round(median(usPerEvent) * 10) / 10,
      client_cpu_us_per_event_with_startup: Math.round(median(wholeUsPerEvent) * 10) / 10,
      wall_s: Math.round(median(run.map((r) => r.wallS)) * 100) / 100,
    });
  }
  const payq = rows.find((r) => r.side.startsWith('payq') && r.events_per_s);
  for (const r of rows) if (r.events_per_s && payq) r.ratio_payq_to_side = Math.round((payq.events_per_s / r.events_per_s) * 100) / 100;
  return rows;
}

export const CPU_NOTE =
  '\nCPU as % of one core over the run (count / events/s, the end of a process\'s life: start-up left out); µs CPU/event likewise (with start-up in the JSON); in-process bare loops: the loop alone. ' +
  'The broker\'s CPU includes whatever else uses it meanwhile.';

/** Deletes Kafka topics, one by one if the whole request fails (say, one of them was never created). */
export async function deleteTopics(admin, topics) {
  if (topics.length === 0) return;
  await admin.deleteTopics({ topics }).catch(async () => {
    for (const topic of topics) await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  });
}

const fmt = (n) => (n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US'));

export function printTable(title, rows) {
  const header = ['side', 'events/s', 'min–max', 'client CPU', 'broker CPU', 'µs CPU/event', 'payq/side'];
  const body = rows.map((r) =>
    r.skipped
      ? [r.side, r.skipped, '', '', '', '', '']
      : [
          r.side,
          fmt(r.events_per_s),
          `${fmt(r.events_per_s_min)}–${fmt(r.events_per_s_max)}`,
          `${r.client_cpu_pct}%`,
          r.broker_cpu_pct === null ? '–' : `${r.broker_cpu_pct}%`,
          r.client_cpu_us_per_event.toFixed(1),
          r.ratio_payq_to_side?.toFixed(2) ?? '',
        ],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...body.filter((b) => b[2] !== '' || i === 0).map((b) => String(b[i]).length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  console.log(`\n${title}`);
  console.log(line(header));
  for (const b of body) console.log(b[2] === '' ? `${String(b[0]).padEnd(widths[0])}  ${b[1]}` : line(b));
  for (const r of rows) if (r.note && !r.skipped) console.log(`  ${r.side}: ${r.note}`);
}

/** The last number after `label` in text (e.g. a tool's closing summary line). */
export function lastNumberAfter(text, label) {
  const re = new RegExp(`${label}\\s*:?\\s*([0-9][0-9.,]*)`, 'g');
  let m;
  let last;
  while ((m = re.exec(text)) !== null) last = m[1];
  return last === undefined ? undefined : Number(last.replaceAll(',', ''));
}
