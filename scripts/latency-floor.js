#!/usr/bin/env node
/**
 * npm run bench:floor — the end-to-end latency a scenario's own handling plans put under any run,
 * before any broker, timer or machine adds to it: for each payment of the seeded stream, the
 * worker's decisions (core/worker-plan.ts: every attempt's processing time and the retry backoffs
 * between them, with the worker's own event ids) summed along the payment's longest branch. A
 * bench run's end-to-end p99 can only be above this one; what it measures beyond it is the
 * pipeline's (and the harness's) own latency.
 *
 * Prints each stage's handling time (p50/p99), the sum of the stages' p99s, the modelled
 * end-to-end percentiles over PAYQ_FLOOR_PAYMENTS payments, and how the p99 of a step of
 * PAYQ_FLOOR_STEP payments varies over PAYQ_FLOOR_SEEDS seeds (as --find-max's steps measure it).
 *
 *   PAYQ_FLOOR_SCENARIO=checkout PAYQ_FLOOR_SEED=1 PAYQ_FLOOR_FAILURES=on PAYQ_FLOOR_PAYMENTS=100000 \
 *   PAYQ_FLOOR_STEP=100,1000 PAYQ_FLOOR_SEEDS=60 PAYQ_FLOOR_SLO_MS=50 npm run bench:floor
 */
import { EventGenerator } from '../dist/events/generator.js';
import { loadScenario } from '../dist/events/scenario.js';
import { childrenOf, planHandling } from '../dist/core/worker-plan.js';

const env = process.env;
const scenario = loadScenario(env.PAYQ_FLOOR_SCENARIO ?? 'checkout');
const seed = Number(env.PAYQ_FLOOR_SEED ?? 1);
const failures = (env.PAYQ_FLOOR_FAILURES ?? 'on') !== 'off';
const payments = Number(env.PAYQ_FLOOR_PAYMENTS ?? 100_000);
const steps = (env.PAYQ_FLOOR_STEP ?? '100,1000').split(',').map(Number);
const seeds = Number(env.PAYQ_FLOOR_SEEDS ?? 60);
const sloMs = Number(env.PAYQ_FLOOR_SLO_MS ?? 50);

/** Each payment's modelled end to end (ms), and each stage's handling times. */
function model(seedValue, count, byStage) {
  const policy = { seed: seedValue, failures, timeScale: 1 };
  const walk = (type, id) => {
    const stage = scenario.stageFor.get(type);
    if (!stage || stage.outcomes.length === 0) return 0;
    const plan = planHandling(stage, id, policy);
    let ms = 0;
    for (const a of plan.attempts) ms += a.processingMs + a.backoffMs;
    byStage?.get(stage.name)?.push(ms) ?? byStage?.set(stage.name, [ms]);
    if (plan.kind !== 'success') return ms;
    let longest = 0;
    for (const child of childrenOf(stage, id, plan.outcome)) longest = Math.max(longest, walk(child.type, child.id));
    return ms + longest;
  };
  const out = [];
  const generator = new EventGenerator({ scenario, seed: seedValue, payments: count, lifecycle: false });
  for (let e = generator.next(); e !== undefined; e = generator.next()) if (e.type === scenario.entry) out.push(walk(e.type, e.id));
  return out;
}

const pct = (values, p) => {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
};
const ms = (x) => `${x.toFixed(1)} ms`;

const byStage = new Map();
const e2e = model(seed, payments, byStage);
console.log(`${scenario.name}: seed ${seed}, ${e2e.length} payments, failures ${failures ? 'on' : 'off'}`);
let sum = 0;
for (const [name, values] of byStage) {
  const p99 = pct(values, 0.99);
  sum += p99;
  console.log(`  ${name}: handling (processing + backoffs) p50 ${ms(pct(values, 0.5))}, p99 ${ms(p99)} (${values.length} events)`);
}
console.log(`  the stages' p99s add up to ${ms(sum)}`);
console.log(`  end to end from the plans: p50 ${ms(pct(e2e, 0.5))}, p90 ${ms(pct(e2e, 0.9))}, p99 ${ms(pct(e2e, 0.99))}, p99.9 ${ms(pct(e2e, 0.999))}`);
for (const n of steps) {
  const p99s = Array.from({ length: seeds }, (_, i) => pct(model(i + 1, n), 0.99));
  const over = p99s.filter((p) => p >= sloMs).length;
  console.log(`  a step of ${n} payments, seeds 1–${seeds}: p99 ${ms(Math.min(...p99s))}–${ms(Math.max(...p99s))} (median ${ms(pct(p99s, 0.5))}), ≥ ${sloMs} ms for ${over}`);
}
