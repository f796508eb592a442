/** Numbers and counts in messages read as a person writes them (src/text.ts). */
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/events/scenario.js';
import { countOf, formatNumber } from '../../src/text.js';

describe('countOf', () => {
  it.each([
    [0, 'message', undefined, '0 messages'],
    [1, 'message', undefined, '1 message'],
    [2, 'event', undefined, '2 events'],
    [1234, 'payment', undefined, '1,234 payments'],
    [1, 'send or dead letter', 'sends or dead letters', '1 send or dead letter'],
    [3, 'send or dead letter', 'sends or dead letters', '3 sends or dead letters'],
  ])('%d %s', (n, singular, plural, text) => {
    expect(countOf(n, singular, plural)).toBe(text);
  });
});

describe('formatNumber', () => {
  it.each([
    [0.1 + 0.2 + 0.9, '1.2'],
    [0.1 + 0.2, '0.3'],
    [1 / 3, '0.333333'],
    [2, '2'],
    [1234567.5, '1234568'],
    [0.000012345678, '0.0000123457'],
  ])('%s → %s', (n, text) => {
    expect(formatNumber(n)).toBe(text);
  });
});

function scenario(emits: number[], failures = '{ transient: 0, permanent: 0 }'): string {
  return [
    'name: sums',
    'entry: order_placed',
    'stages:',
    '  - name: pay',
    '    input: [order_placed]',
    `    failures: ${failures}`,
    '    emits:',
    ...emits.map((p, i) => `      - { event: e${i}, p: ${p} }`),
  ].join('\n');
}

describe('scenario probability messages have no float noise', () => {
  it.each([
    [[0.1, 0.2, 0.9], /probabilities add up to 1\.2, more than 1$/],
    [[0.7, 0.7], /probabilities add up to 1\.4, more than 1$/],
    [[0.1, 0.2], /probabilities add up to 0\.3; they must add up to 1$/],
    [[0.1, 0.2, 0.3, 0.3], /probabilities add up to 0\.9; they must add up to 1$/],
  ])('%j', (emits, pattern) => {
    expect(() => parseScenario(scenario(emits), 'sums.yaml')).toThrow(pattern);
  });

  it('transient + permanent over 1 says the sum', () => {
    expect(() => parseScenario(scenario([1], '{ transient: 0.7, permanent: 0.6 }'), 'sums.yaml')).toThrow(/transient \+ permanent is 1\.3, more than 1$/);
  });
});

describe('no count is printed with a fixed plural', () => {
  it('src has no `${formatCount(n)} messages`-style template: countOf agrees with the count', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const files = (readdirSync('src', { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => `src/${f}`);
    // A count, then a fixed plural noun (not a unit such as events/s). `a · b · c events` lists share one noun.
    const fixedPlural = /(?<!· )\$\{(?:formatCount|[\w.]+\.toLocaleString)\((?:[^()]|\([^()]*\))*\)\} ?(messages|events|payments|lines|destinations|reports|stages|handlers|sends)\b(?!\/)/;
    const found = files.flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .map((line, i) => `${f}:${i + 1}: ${line.trim()}`)
        .filter((line) => fixedPlural.test(line)),
    );
    expect(found).toEqual([]);
  });
});
