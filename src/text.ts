/**
 * Numbers and counts in messages, for humans: one place decides how they read, so no message
 * says "1 messages" or "add up to 1.2000000000000002".
 */

/** `1,234` (en-US grouping), the way every count is printed. */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/**
 * `1 message`, `2 messages`, `1,000 events`: the count and the noun in agreement. The plural is
 * the noun + `s` unless given (`countOf(n, 'entry', 'entries')`).
 */
export function countOf(n: number, singular: string, plural = `${singular}s`): string {
  return `${formatCount(n)} ${n === 1 ? singular : plural}`;
}

/**
 * A computed number as a person would write it: 6 significant digits (more for a larger whole
 * part), no float noise (0.3 + 0.9 → `1.2`, not 1.2000000000000002), integers as they are.
 */
export function formatNumber(n: number): string {
  if (!Number.isFinite(n) || Number.isInteger(n)) return String(n);
  // The whole part is never rounded away: 1234567.5 → 1234568, not 1234570.
  const wholeDigits = Math.floor(Math.log10(Math.abs(n))) + 1;
  return String(Number(n.toPrecision(Math.min(21, Math.max(6, wholeDigits)))));
}
