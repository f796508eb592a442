import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { loadScenario, parseScenario } from '../../src/events/scenario.js';

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('scenarios', () => {
  it('loads the built-in checkout with its stages and destinations', () => {
    const s = loadScenario('checkout');
    expect(s.entry).toBe('order_placed');
    expect(s.stages.map((st) => st.name)).toEqual(['payment-service', 'capture-service', 'fulfilment-service', 'refund-service']);
    expect(s.destinationFor('order_placed')).toBe('checkout.orders');
    expect(s.destinationFor('order_completed')).toBe('checkout.events');
    expect(s.destinations).toContain('checkout.events');
  });

  it('names the unknown key and its line', () => {
    const err = errorOf(() => loadScenario('fixtures/bad/scenario-unknown-key.yaml'));
    expect(err.message).toMatch(/scenario-unknown-key\.yaml:4: stages\[0\]: Unrecognized key.*retries/);
  });

  it('rejects probabilities above 1 with the line of the stage', () => {
    const err = errorOf(() => loadScenario('fixtures/bad/scenario-bad-probability.yaml'));
    expect(err.message).toMatch(/:7: stages\[0\]\.emits: probabilities add up to 1\.2/);
  });

  it('reports YAML syntax errors with a line', () => {
    expect(errorOf(() => loadScenario('fixtures/bad/scenario-not-yaml.yaml')).message).toMatch(/scenario-not-yaml\.yaml:\d+: /);
  });

  it('reads JSON files and rejects unknown currencies', () => {
    expect(errorOf(() => loadScenario('fixtures/bad/scenario-bad-currency.json')).message).toMatch(/'XYZ' is not an ISO 4217 code/);
  });

  it('rejects a missing file or unknown built-in in one sentence', () => {
    expect(errorOf(() => loadScenario('no-such-scenario')).message).toMatch(/neither a built-in .* nor a file/);
  });

  it('rejects an entry no stage consumes and an input claimed twice', () => {
    expect(errorOf(() => parseScenario('name: x\nentry: a\nstages:\n  - { name: s, input: [b] }\n', 'inline')).message).toMatch(
      /inline:2: entry: no stage takes 'a'/,
    );
    const twice = 'name: x\nentry: a\nstages:\n  - { name: s, input: [a] }\n  - { name: t, input: [a] }\n';
    expect(errorOf(() => parseScenario(twice, 'inline')).message).toMatch(/already the input of stage 's'/);
  });

  it('fills defaults for destinations, failures and retries', () => {
    const s = parseScenario('name: mini\nentry: a\nstages:\n  - { name: s, input: [a], emits: [{ event: b, p: 1 }] }\n', 'inline');
    expect(s.stages[0]!.destination).toBe('mini.s');
    expect(s.stages[0]!.retry.max_attempts).toBe(3);
    expect(s.sink).toBe('mini.events');
  });
});
