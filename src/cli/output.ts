/**
 * The only place that writes to the terminal. Data goes to stdout, exactly as given: events,
 * NDJSON and reports are never rewritten (README "Brokers and URLs": secrets are redacted by
 * structure, where a URL is printed or a client error is mapped). Everything for humans goes to
 * stderr, coloured only when stderr is a TTY; as a last safety net a `scheme://user:pass@` in such
 * a line is shown as `scheme://user:***@` (URL structure only, never a search for a password).
 */
import { Chalk, type ChalkInstance } from 'chalk';
import { redactUrlsIn as redact } from '../secrets.js';

export type Verbosity = 'quiet' | 'normal' | 'verbose';

export interface OutputStreams {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export class Output {
  readonly color: ChalkInstance;
  readonly interactive: boolean;

  constructor(
    private readonly streams: OutputStreams,
    readonly verbosity: Verbosity,
    readonly debug: boolean,
  ) {
    const tty = streams.stderr.isTTY === true && process.env['CI'] !== 'true';
    const noColor = process.env['NO_COLOR'] !== undefined && process.env['NO_COLOR'] !== '';
    this.color = new Chalk({ level: tty && !noColor ? 1 : 0 });
    this.interactive = tty;
  }

  get stderr(): NodeJS.WritableStream {
    return this.streams.stderr;
  }

  /** Machine output: one chunk of data on stdout. */
  data(text: string): void {
    this.streams.stdout.write(text);
  }

  /** Writes data (text, or its UTF-8 bytes) and resolves once the stream took it (large NDJSON outputs). */
  dataAsync(text: string | Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.streams.stdout.write(text, (err) => (err ? reject(err) : resolve()));
    });
  }

  info(text: string): void {
    if (this.verbosity !== 'quiet') this.streams.stderr.write(`${redact(text)}\n`);
  }

  verbose(text: string): void {
    if (this.verbosity === 'verbose') this.streams.stderr.write(`${this.color.dim(redact(text))}\n`);
  }

  warn(text: string): void {
    this.streams.stderr.write(`${this.color.yellow('warning:')} ${redact(text)}\n`);
  }

  /** The one-line error every failure ends with. */
  error(text: string): void {
    this.streams.stderr.write(`${this.color.red('payq: error:')} ${redact(text)}\n`);
  }

  /** Diagnostics for --debug (stack traces); drivers scrubbed their client errors already. */
  diagnostic(text: string): void {
    this.streams.stderr.write(`${redact(text)}\n`);
  }

  /** Raw text to stderr (tables), unless quiet. */
  block(text: string): void {
    if (this.verbosity !== 'quiet') this.streams.stderr.write(`${redact(text)}\n`);
  }
}
