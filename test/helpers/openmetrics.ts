/**
 * A strict reader of the OpenMetrics 1.0 text format, for tests: it throws on anything the
 * format does not allow (a sample before its family's TYPE, interleaved families, a counter
 * sample without _total, buckets that are not cumulative or whose +Inf differs from _count, no
 * closing # EOF, blank lines) and returns every sample by its name and labels.
 */
export interface Family {
  type: string;
  unit?: string;
  help?: string;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'gaugehistogram', 'summary', 'info', 'stateset', 'unknown']);

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  if (!/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(text)) throw new Error(`not a number: ${text}`);
  return Number(text);
}

export function parseOpenMetrics(text: string): Map<string, Family> {
  if (!text.endsWith('# EOF\n')) throw new Error('does not end with "# EOF"');
  const lines = text.slice(0, -'# EOF\n'.length).split('\n');
  if (lines.at(-1) === '') lines.pop();
  const families = new Map<string, Family>();
  let current: string | undefined;
  for (const line of lines) {
    if (line === '') throw new Error('blank line');
    const meta = /^# (TYPE|UNIT|HELP) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/.exec(line);
    if (meta) {
      const [, what, name, rest] = meta;
      if (what === 'TYPE') {
        if (families.has(name!)) throw new Error(`family ${name} appears twice`);
        if (!TYPES.has(rest ?? '')) throw new Error(`unknown type ${rest}`);
        families.set(name!, { type: rest!, samples: [] });
        current = name;
      } else {
        if (name !== current) throw new Error(`${what} for ${name} outside its family`);
        const f = families.get(name!)!;
        if (what === 'UNIT') {
          if (!name!.endsWith(`_${rest}`)) throw new Error(`family ${name} does not end with its unit ${rest}`);
          f.unit = rest;
        } else f.help = rest;
      }
      continue;
    }
    if (line.startsWith('#')) throw new Error(`bad comment line: ${line}`);
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const [, name, , labelText, value] = m;
    if (!current) throw new Error(`sample ${name} before any TYPE`);
    const f = families.get(current)!;
    const suffix = name!.slice(current.length);
    if (!name!.startsWith(current)) throw new Error(`sample ${name} outside its family ${current}`);
    const allowed = f.type === 'counter' ? ['_total', '_created'] : f.type === 'histogram' ? ['_bucket', '_count', '_sum', '_created'] : [''];
    if (!allowed.includes(suffix)) throw new Error(`sample ${name} not allowed in a ${f.type}`);
    const labels: Record<string, string> = {};
    if (labelText) for (const l of labelText.matchAll(LABEL)) labels[l[1]!] = l[2]!;
    f.samples.push({ name: name!, labels, value: parseValue(value!) });
  }
  for (const [name, f] of families) {
    if (f.type !== 'histogram') continue;
    const groups = new Map<string, typeof f.samples>();
    for (const s of f.samples) {
      const { le: _le, ...rest } = s.labels;
      const key = JSON.stringify(rest);
      groups.set(key, [...(groups.get(key) ?? []), s]);
    }
    for (const samples of groups.values()) {
      const buckets = samples.filter((s) => s.name.endsWith('_bucket'));
      const count = samples.find((s) => s.name.endsWith('_count'))?.value;
      let prevLe = -Infinity;
      let prev = 0;
      for (const b of buckets) {
        const le = parseValue(b.labels['le'] ?? '');
        if (!(le > prevLe)) throw new Error(`${name}: le not increasing`);
        if (b.value < prev) throw new Error(`${name}: buckets not cumulative`);
        prevLe = le;
        prev = b.value;
      }
      if (prevLe !== Infinity) throw new Error(`${name}: no +Inf bucket`);
      if (count !== prev) throw new Error(`${name}: _count ${count} differs from the +Inf bucket ${prev}`);
    }
  }
  return families;
}

/** The value of one sample, by name and (a subset of) its labels. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    const s = f.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    if (s) return s.value;
  }
  return undefined;
}
