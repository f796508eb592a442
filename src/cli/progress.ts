/**
 * Live progress: a one-line spinner on a TTY, nothing at all otherwise (CI logs stay clean).
 *
 * It must never hang or flood, whatever the terminal reports (0 columns, 1, none, 100,000):
 * `update` only stores the text; a timer redraws at most RENDERS_PER_S times a second, and each
 * redraw is one line — carriage return, the text cut to the width, clear to the end of line —
 * so the output is bounded by time, never by how often the work reports or by the terminal's
 * size. (ora, used before, divided by the column count: 0 columns looped for ever.)
 */
import type { Output } from './output.js';

export interface Progress {
  update(text: string): void;
  stop(): void;
}

/** What a progress line is drawn on: stderr when it is a TTY. */
export interface ProgressStream {
  write(text: string): unknown;
  columns?: number | undefined;
}

const silent: Progress = { update() {}, stop() {} };

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
export const RENDERS_PER_S = 8;
/** A terminal that says it has no width (0, undefined, not a number) is taken as this wide. */
const ASSUMED_COLUMNS = 80;
/** Narrower than this, a progress line cannot say anything: none is drawn. */
export const MIN_COLUMNS = 20;
/** Wider than this, a progress line is cut anyway: it is one short line. */
const MAX_COLUMNS = 200;

/** The width to draw in, or undefined when the terminal is too narrow for a progress line. */
export function progressWidth(columns: number | undefined): number | undefined {
  if (columns === undefined || !Number.isFinite(columns) || columns <= 0) return ASSUMED_COLUMNS;
  if (columns < MIN_COLUMNS) return undefined;
  return Math.min(Math.floor(columns), MAX_COLUMNS);
}

/** The text on one line, at most `width - 1` characters (the last column would wrap on some terminals). */
export function fitLine(text: string, width: number): string {
  const chars = [...text.replace(/[\r\n\t]+/g, ' ')];
  if (chars.length <= width - 1) return chars.join('');
  return `${chars.slice(0, width - 2).join('')}…`;
}

/** A spinner on `stream`, redrawn by a timer; `intervalMs` is for tests. */
export function createProgress(stream: ProgressStream, text: string, intervalMs = 1000 / RENDERS_PER_S): Progress {
  let current = text;
  let frame = 0;
  let drawn = false;
  const render = () => {
    const width = progressWidth(stream.columns);
    if (width === undefined) {
      if (drawn) stream.write('\r\x1b[K');
      drawn = false;
      return;
    }
    stream.write(`\r${fitLine(`${FRAMES[frame]} ${current}`, width)}\x1b[K`);
    frame = (frame + 1) % FRAMES.length;
    drawn = true;
  };
  render();
  const timer = setInterval(render, intervalMs);
  // Progress never keeps the process alive.
  timer.unref();
  let stopped = false;
  return {
    update: (t) => {
      current = t;
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      if (drawn) stream.write('\r\x1b[K');
    },
  };
}

export async function startProgress(out: Output, text: string): Promise<Progress> {
  if (!out.interactive || out.verbosity === 'quiet') return silent;
  return createProgress(out.stderr as NodeJS.WritableStream & ProgressStream, text);
}
