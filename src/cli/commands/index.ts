/**
 * The command table: every command's description, in `--help` order, and the flags every command
 * takes. The program builds commander and `--help` from it; options.ts takes the config file's
 * sections (`produce:`, `bench:` …) from it.
 */
import { SUPPORTED_SCHEMES } from '../../drivers/url.js';
import { benchCommand } from './bench.command.js';
import { consumeCommand } from './consume.command.js';
import type { CommandDescription, FlagSpec } from './describe.js';
import { produceCommand } from './produce.command.js';
import { replayDlqCommand } from './replay-dlq.command.js';
import { reportCommand } from './report.command.js';
import { traceCommand } from './trace.command.js';
import { workerCommand } from './worker.command.js';

export const COMMANDS: readonly CommandDescription[] = [
  produceCommand,
  consumeCommand,
  traceCommand,
  workerCommand,
  replayDlqCommand,
  benchCommand,
  reportCommand,
];

/** The commands' names: also the config file's sections. */
export const COMMAND_NAMES: readonly string[] = COMMANDS.map((c) => c.name);

export interface GlobalFlag extends FlagSpec {
  /** May be set at the top of a config file (`broker: kafka://…`). */
  inConfigFile: boolean;
}

/** Flags every command takes (`payq <command> --help` lists them too). */
export const GLOBAL_FLAGS: readonly GlobalFlag[] = [
  { flags: '--broker <url>', help: `broker URL: ${SUPPORTED_SCHEMES.join(', ')} (default $PAYQ_BROKER; README "Brokers and URLs")`, inConfigFile: true },
  { flags: '--json', help: 'machine-readable output on stdout', inConfigFile: true },
  { flags: '-q, --quiet', help: 'only errors on stderr', inConfigFile: true },
  { flags: '-v, --verbose', help: 'more detail on stderr', inConfigFile: true },
  { flags: '--debug', help: 'show stack traces of errors', inConfigFile: true },
  { flags: '--config <file>', help: 'options from a YAML/JSON file (default $PAYQ_CONFIG)', inConfigFile: false },
  {
    flags: '--password-file <file>',
    help: "the broker password for the URL's user, from a file only you can read (or $PAYQ_PASSWORD_FILE, $PAYQ_PASSWORD)",
    inConfigFile: false,
  },
];
