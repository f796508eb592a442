import type { CommandDescription } from './describe.js';

export const reportCommand: CommandDescription = {
  name: 'report',
  summary: 'render saved bench reports; --merge them exactly (from their histograms); --compare with a baseline',
  examples: [
    'payq report report.json',
    'payq report --merge producer.json worker-a.json worker-b.json tracer.json --json > merged.json',
    'payq report report.json --compare baseline.json --fail-on-regression 10',
    "payq report report.json --assert 'p99_ms<250' --markdown summary.md",
    'payq report report.json --compare baseline.json --html report.html',
  ],
  flags: [
    { flags: '--merge', help: 'combine the reports into one: counts and histograms add, percentiles recomputed' },
    { flags: '--allow-mixed', help: 'with --merge: also merge reports of different runs, brokers or scenarios (a warning each)' },
    { flags: '--compare <baseline>', help: 'show each headline figure against this baseline report, with regressions flagged' },
    { flags: '--fail-on-regression <pct>', help: 'with --compare: exit 5 when a figure got worse by more than pct percent' },
    { flags: '--threshold <pct>', help: 'with --compare: how much worse counts as a regression in the table (default {default})', default: 5 },
    { flags: '--assert <expr>', help: 'as payq bench --assert, on the (merged) report; exit 5 when breached (repeatable)', repeatable: true },
    { flags: '--markdown <file>', help: 'write the rendering as markdown' },
    { flags: '--html <file>', help: 'write the rendering as one self-contained HTML file with charts (opens offline)' },
  ],
  configure(cmd) {
    cmd
      .usage('[options] FILE...')
      .allowExcessArguments(true)
      .hook('preAction', (command) => {
        command.setOptionValueWithSource('files', [...command.args], 'cli');
      });
  },
  load: () => import('./report.js'),
};
