/**
 * Merging reports (`payq report --merge`, README "payq report"): exact, from the raw counts and
 * the encoded histograms, and never counting a part twice.
 *
 * A part is what one bench process measured. Its report carries the run's `run_id` (shared by the
 * parts of one run through `--run-id`) and its own random `part_id`; a merged report lists the
 * parts it covers in `parts`. A report written before part ids existed is identified by a hash of
 * its measurements (every count and histogram, not the settings): a file and its copy, however
 * formatted, are the same part. So merging refuses a part that is already in another input — the
 * same file twice, a file and its copy, a merged report and one of its parts — whatever the flags,
 * and refuses reports of different runs, brokers or scenarios unless `allowMixed` says otherwise.
 */
import { createHash } from 'node:crypto';
import { UsageError } from '../errors.js';
import { createLatencyHistogram, type LatencyHistogram } from './histogram.js';
import { buildReport, reportData, type Report, type RunData, type StageData } from './report.js';
import { mergeTimeSeries } from './timeseries.js';

/** A new histogram holding every sample of `hs` (none of them changes). */
export function mergeHistograms(hs: LatencyHistogram[]): LatencyHistogram {
  const out = createLatencyHistogram();
  for (const h of hs) out.add(h);
  return out;
}

const copyHistogram = (h: LatencyHistogram): LatencyHistogram => mergeHistograms([h]);

function copyStage(st: StageData): StageData {
  return { ...st, processing: copyHistogram(st.processing), wall: copyHistogram(st.wall), delivery: copyHistogram(st.delivery) };
}

/** A deep copy of run data: merging adds into it and never changes its inputs. */
function copyData(d: RunData): RunData {
  const stages: Record<string, StageData> = {};
  for (const [name, st] of Object.entries(d.stages)) stages[name] = copyStage(st);
  return {
    ...d,
    producers: { ...d.producers },
    stages,
    sink: { ...d.sink, delivery: copyHistogram(d.sink.delivery) },
    events: { ...d.events },
    payments: { ...d.payments, by_class: { ...d.payments.by_class } },
    dlq_by_reason: { ...d.dlq_by_reason },
    windows: { ...d.windows },
    ...(d.connection ? { connection: { ...d.connection } } : {}),
    latency: {
      publish: copyHistogram(d.latency.publish),
      publish_delay: d.latency.publish_delay && copyHistogram(d.latency.publish_delay),
      publish_from_intended: d.latency.publish_from_intended && copyHistogram(d.latency.publish_from_intended),
      end_to_end: copyHistogram(d.latency.end_to_end),
    },
    errors: [...d.errors],
  };
}

function addCounts<T extends object>(into: T, from: T): void {
  const i = into as Record<string, number>;
  for (const [k, v] of Object.entries(from as Record<string, number | undefined>)) if (v !== undefined) i[k] = (i[k] ?? 0) + v;
}

function addOptional(into: LatencyHistogram | undefined, from: LatencyHistogram | undefined): LatencyHistogram | undefined {
  if (from === undefined) return into;
  if (into === undefined) return copyHistogram(from);
  into.add(from);
  return into;
}

/** Adds `p` into `out`. */
function addData(out: RunData, p: RunData): void {
  out.elapsed_s = Math.max(out.elapsed_s, p.elapsed_s);
  addCounts(out.producers, p.producers);
  for (const [name, st] of Object.entries(p.stages)) {
    const into = out.stages[name];
    if (!into) {
      out.stages[name] = copyStage(st);
      continue;
    }
    const { processing, wall, delivery, ...counts } = st;
    const { processing: ip, wall: iw, delivery: id, ...intoCounts } = into;
    addCounts(intoCounts, counts);
    ip.add(processing);
    iw.add(wall);
    id.add(delivery);
    out.stages[name] = { ...intoCounts, processing: ip, wall: iw, delivery: id };
  }
  if (out.sink.destination !== p.sink.destination && p.sink.consumed > 0 && out.sink.consumed === 0) out.sink.destination = p.sink.destination;
  out.sink.consumed += p.sink.consumed;
  out.sink.bytes += p.sink.bytes;
  out.sink.delivery.add(p.sink.delivery);
  addCounts(out.events, p.events);
  const { by_class, ...paymentCounts } = p.payments;
  const { by_class: intoByClass, ...intoPaymentCounts } = out.payments;
  addCounts(intoPaymentCounts, paymentCounts);
  addCounts(intoByClass, by_class);
  out.payments = { ...intoPaymentCounts, by_class: intoByClass };
  addCounts(out.dlq_by_reason, p.dlq_by_reason);
  addCounts(out.windows, p.windows);
  if (p.connection) {
    // Each part has its own link: reconnects add up, the longest outage is the run's, and one
    // part whose broker was gone makes the run's.
    const into = out.connection ?? { reconnects: 0, down_ms: 0 };
    out.connection = {
      reconnects: into.reconnects + p.connection.reconnects,
      down_ms: Math.max(into.down_ms, p.connection.down_ms),
      broker_gone: (into.broker_gone ?? false) || (p.connection.broker_gone ?? false),
    };
  }
  out.latency.publish.add(p.latency.publish);
  out.latency.publish_delay = addOptional(out.latency.publish_delay, p.latency.publish_delay);
  out.latency.publish_from_intended = addOptional(out.latency.publish_from_intended, p.latency.publish_from_intended);
  out.latency.end_to_end.add(p.latency.end_to_end);
  for (const e of p.errors) if (!out.errors.includes(e) && out.errors.length < 10) out.errors.push(e);
}

/**
 * Adds run data: counts add, histograms add, the window is the longest one (the reports are
 * taken to cover the same time, as the machines of one run do), and windows add.
 */
export function mergeData(parts: RunData[]): RunData {
  if (parts.length === 0) throw new RangeError('nothing to merge');
  const [first, ...rest] = parts;
  const out = copyData(first!);
  for (const p of rest) addData(out, p);
  // Series line up on epoch seconds: rates add per point, each point's histogram merges.
  const series = mergeTimeSeries(parts.map((p) => p.timeseries));
  if (series) out.timeseries = series;
  else delete out.timeseries;
  return out;
}

// ------------------------------------------------------------------------------------------------
// Identity

/** JSON with object keys sorted, so a hash does not depend on how a file was formatted. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The identity of a report without part_id: a hash of its measurements (not its settings). */
function measurementsHash(r: Report): string {
  const { elapsed_s, handlers, events, producers, sink, payments, dlq, windows, histograms } = r;
  const text = canonical({ elapsed_s, handlers, events, producers, sink, payments, dlq, windows, histograms });
  return `sha256:${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
}

/** The ids of the parts a report covers: its parts, its part_id, or the hash of its measurements. */
export function reportParts(r: Report): string[] {
  if (r.parts !== undefined) return [...r.parts];
  return [r.part_id ?? measurementsHash(r)];
}

// ------------------------------------------------------------------------------------------------

export interface NamedReport {
  report: Report;
  /** Where it came from (a file name), for messages. */
  origin: string;
}

export interface MergeOptions {
  /** Merge reports of different runs, brokers or scenarios (each difference becomes a warning). */
  allowMixed?: boolean;
}

export interface MergeResult {
  report: Report;
  /** What --allow-mixed let through, one sentence each. */
  warnings: string[];
  /** What was merged: N parts of run X on broker B, scenario S. */
  summary: string;
}

const distinct = <T>(values: T[]): T[] => [...new Set(values)];
const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function partLabel(id: string): string {
  return id.startsWith('sha256:') ? 'the same measurements (same counts and histograms)' : `part ${id}`;
}

/** Refuses a part that two inputs cover: it would be counted twice. */
function refuseDuplicates(inputs: NamedReport[]): void {
  const seen = new Map<string, NamedReport>();
  for (const input of inputs) {
    for (const id of reportParts(input.report)) {
      const earlier = seen.get(id);
      if (earlier !== undefined) {
        const inMerged = (x: NamedReport) => (x.report.parts !== undefined ? ` (merged from ${plural(x.report.parts.length, 'part')})` : '');
        const what =
          earlier === input
            ? `covers ${partLabel(id)} twice`
            : earlier.origin === input.origin
              ? `is given twice`
              : `and ${earlier.origin}${inMerged(earlier)} both have ${partLabel(id)} of run ${input.report.run_id}`;
        throw new UsageError(`cannot merge: ${input.origin}${earlier.origin === input.origin ? '' : inMerged(input)} ${what}; merging would count it twice`, {
          hint: 'give each part of a run once',
        });
      }
      seen.set(id, input);
    }
  }
}

interface Dimension {
  what: string;
  values: string[];
  pick: (r: Report) => string;
}

function differences(inputs: NamedReport[]): Dimension[] {
  const dims: Array<[string, (r: Report) => string]> = [
    ['runs', (r) => r.run_id],
    ['brokers', (r) => r.settings.broker],
    ['scenarios', (r) => r.settings.scenario],
  ];
  return dims
    .map(([what, pick]) => ({ what, pick, values: distinct(inputs.map((i) => pick(i.report))) }))
    .filter((d) => d.values.length > 1);
}

/**
 * Merges reports exactly (from their raw counts and histograms), refusing any part given twice
 * and, unless allowed, reports of different runs, brokers or scenarios. The settings are the
 * first report's (differing brokers and scenarios listed); the run id is kept when all agree.
 */
export function mergeNamedReports(inputs: NamedReport[], options: MergeOptions = {}): MergeResult {
  if (inputs.length === 0) throw new RangeError('nothing to merge');
  refuseDuplicates(inputs);
  const mixed = differences(inputs);
  if (mixed.length > 0 && !options.allowMixed) {
    const label = { runs: 'run', brokers: 'broker', scenarios: 'scenario' } as Record<string, string>;
    const describe = (i: NamedReport) => `${i.origin}: ${mixed.map((d) => `${label[d.what]} ${d.pick(i.report)}`).join(', ')}`;
    // One input per distinct combination, at most three.
    const shown = [...new Map(inputs.map((i) => [mixed.map((d) => d.pick(i.report)).join('\0'), i])).values()].slice(0, 3);
    const sides = shown.map(describe).join(' · ');
    throw new UsageError(`cannot merge reports of different ${mixed.map((d) => d.what).join(' and ')} (${sides})`, {
      hint: 'merge the parts of one run, or add --allow-mixed to merge them anyway',
    });
  }
  const warnings = mixed.map((d) => `merging reports of different ${d.what}: ${d.values.join(', ')}`);
  const reports = inputs.map((i) => i.report);
  const first = reports[0]!;
  const data = mergeData(reports.map(reportData));
  const runIds = distinct(reports.map((r) => r.run_id));
  const brokers = distinct(reports.map((r) => r.settings.broker));
  const scenarios = distinct(reports.map((r) => r.settings.scenario));
  const parts = reports.flatMap(reportParts);
  const report = buildReport(data, {
    run_id: runIds.join('+'),
    role: 'merged',
    merged_from: reports.reduce((n, r) => n + r.merged_from, 0),
    parts,
    settings: { ...first.settings, broker: brokers.join(', '), scenario: scenarios.join(', ') },
  });
  const summary =
    `merged ${plural(parts.length, 'part')} from ${plural(inputs.length, 'report')}: ` +
    `${runIds.length === 1 ? 'run' : 'runs'} ${runIds.join(', ')} · ${brokers.join(', ')} · ` +
    `${scenarios.length === 1 ? 'scenario' : 'scenarios'} ${scenarios.join(', ')}`;
  return { report, warnings, summary };
}

/** `mergeNamedReports` for reports without names (numbered in messages). */
export function mergeReports(reports: Report[], options: MergeOptions = {}): Report {
  return mergeNamedReports(
    reports.map((report, i) => ({ report, origin: `report ${i + 1}` })),
    options,
  ).report;
}
