import { accessSync, constants, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, ThresholdError, UsageError } from '../../errors.js';
import { checkAssertionKeys, evaluateAssertions, parseAssertion, reportKeys } from '../../metrics/assert.js';
import { compareReports } from '../../metrics/compare.js';
import { mergeNamedReports } from '../../metrics/merge.js';
import { parseReport, type Report } from '../../metrics/report.js';
import type { Output } from '../output.js';
import { flagSchema, listSchema } from '../options.js';
import type { CommandContext } from '../context.js';
import { renderHtmlReport } from '../html-report.js';
import { assertionLines, benchReportMarkdown, benchReportText, comparisonMarkdown, comparisonTable } from '../render.js';

const percent = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : /^\s*\d+(\.\d+)?%?\s*$/.test(v) ? Number(v.replace('%', '')) : NaN;
  if (!(n >= 0) || !Number.isFinite(n)) {
    ctx.addIssue({ code: 'custom', message: `must be a percentage such as 10 or 10% (got '${v}')` });
    return z.NEVER;
  }
  return n;
});

export const schema = z.strictObject({
  json: flagSchema.default(false),
  files: listSchema.default([]),
  merge: flagSchema.default(false),
  allowMixed: flagSchema.default(false),
  compare: z.string().min(1).optional(),
  failOnRegression: percent.optional(),
  threshold: percent,
  markdown: z.string().min(1).optional(),
  html: z.string().min(1).optional(),
  assert: listSchema.default([]),
});

function readReport(file: string): Report {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  return parseReport(text, file);
}

export async function run(o: z.output<typeof schema>, ctx: CommandContext): Promise<void> {
  const out = ctx.out;
  if (o.files.length === 0) throw new UsageError('no report files given', { hint: 'payq report FILE... (reports written by payq bench --json FILE)' });
  if (o.failOnRegression !== undefined && o.compare === undefined) throw new UsageError('--fail-on-regression goes with --compare BASELINE');
  if (o.files.length > 1 && !o.merge && o.compare !== undefined) throw new UsageError('--compare takes one report (or --merge several into one)');
  if (o.allowMixed && !o.merge) throw new UsageError('--allow-mixed goes with --merge');
  const assertions = o.assert.map(parseAssertion);
  if (o.markdown !== undefined) checkWritable(o.markdown, '--markdown');
  if (o.html !== undefined) checkWritable(o.html, '--html');

  const loaded = o.files.map(readReport);
  let reports = loaded;
  let origins = o.files;
  if (o.merge) {
    const merged = mergeNamedReports(
      loaded.map((report, i) => ({ report, origin: o.files[i]! })),
      { allowMixed: o.allowMixed },
    );
    for (const w of merged.warnings) out.warn(w);
    out.info(merged.summary);
    reports = [merged.report];
    origins = ['the merged report'];
  }
  // A key the report does not have is a mistake in the command, not a breach.
  reports.forEach((r, i) => checkAssertionKeys(assertions, reportKeys(r, origins[i]!)));
  const baseline = o.compare === undefined ? undefined : readReport(o.compare);
  const threshold = o.failOnRegression ?? o.threshold;
  const comparison = baseline ? compareReports(reports[0]!, baseline, threshold) : undefined;
  const outcomes = reports.map((r) => evaluateAssertions(r, assertions));

  if (o.json) {
    // A report stays a valid payq.report/v1 document; a comparison is a document of its own.
    const data = comparison
      ? { schema: 'payq.comparison/v1', baseline: o.compare, threshold_pct: threshold, rows: comparison, report: reports[0] }
      : reports.length === 1
        ? reports[0]
        : reports;
    out.data(`${JSON.stringify(data, null, 2)}\n`);
  } else {
    reports.forEach((r, i) => {
      if (reports.length > 1) out.block(out.color.bold(`\n${o.files[i]}`));
      out.block(benchReportText(r, out.color));
      if (outcomes[i]!.length > 0) out.block(assertionLines(outcomes[i]!, out.color));
    });
    if (comparison) out.block(`${out.color.bold(`compared with ${o.compare}`)} (regression: worse by more than ${threshold}%)\n${comparisonTable(comparison, out.color)}`);
  }
  if (o.markdown !== undefined) {
    const parts = reports.map((r, i) => benchReportMarkdown(r, outcomes[i]));
    if (comparison) parts.push(`#### Compared with \`${o.compare}\`\n\n${comparisonMarkdown(comparison)}\n`);
    writeOutput(o.markdown, parts.join('\n'));
  }

  if (o.html !== undefined) {
    const names = o.merge ? [`merged (${o.files.length} reports)`] : o.files;
    writeOutput(
      o.html,
      renderHtmlReport({
        reports: reports.map((report, i) => ({ name: names[i]!, report })),
        baseline: baseline && comparison ? { name: o.compare!, report: baseline, rows: comparison, thresholdPct: threshold } : undefined,
        outcomes,
      }),
    );
  }

  const breaches = outcomes.flat().filter((x) => !x.passed);
  const regressions = comparison?.filter((r) => r.regression) ?? [];
  if (o.failOnRegression !== undefined && regressions.length > 0) {
    throw new ThresholdError(`${regressions.length} regressions worse than ${o.failOnRegression}% against ${o.compare}: ${regressions.map((r) => r.label).join(', ')}`);
  }
  if (breaches.length > 0) throw new ThresholdError(`${breaches.length} --assert breached: ${breaches.map((b) => b.assertion.text).join(', ')}`);
}

/**
 * Refuses, before anything runs, an output file that cannot be written: its folder missing, not a
 * folder or not writable, or the file itself a folder or read-only.
 */
export function checkWritable(file: string, flag: string): void {
  const dir = path.dirname(path.resolve(file));
  const code = (err: unknown) => (err as NodeJS.ErrnoException).code;
  try {
    if (!statSync(dir).isDirectory()) throw new UsageError(`${flag} ${file}: ${dir} is not a folder`);
    accessSync(dir, constants.W_OK);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${flag} ${file}: ${code(err) === 'ENOENT' ? `the folder ${dir} does not exist` : `cannot write into ${dir} (${code(err) ?? (err as Error).message})`}`);
  }
  try {
    if (statSync(file).isDirectory()) throw new UsageError(`${flag} ${file}: is a folder, not a file`);
    accessSync(file, constants.W_OK);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    if (code(err) !== 'ENOENT') throw new UsageError(`${flag} ${file}: cannot write it (${code(err) ?? (err as Error).message})`);
  }
}

/**
 * Writes an output file at the end of a run; when that fails anyway (checkWritable passed, then
 * the folder went), the text goes to `fallback` instead of being lost, and the error is returned
 * for the caller to end with once everything else is reported.
 */
export function saveOutput(file: string, text: string, out: Output, fallback: 'stdout' | 'stderr'): ConfigError | undefined {
  try {
    writeOutput(file, text);
    return undefined;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    out.warn(`${err.message}; its content follows on ${fallback} instead`);
    if (fallback === 'stdout') out.data(text.endsWith('\n') ? text : `${text}\n`);
    else out.diagnostic(text);
    return new ConfigError(`${err.message} (its content went to ${fallback})`, { cause: err });
  }
}

/** Files get what stdout would, unchanged (the broker URL in a report is already redacted). */
export function writeOutput(file: string, text: string): void {
  try {
    writeFileSync(file, text);
  } catch (err) {
    throw new ConfigError(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}
