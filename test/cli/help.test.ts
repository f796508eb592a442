import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { COMMANDS, GLOBAL_FLAGS } from '../../src/cli/commands/index.js';
import { helpLine } from '../../src/cli/commands/describe.js';

const GLOBAL = ['--broker', '--json', '--config', '--quiet', '--verbose', '--debug', '--password-file'];
/** commander wraps help lines at the terminal's width: compare the words. */
const words = (text: string) => text.replace(/\s+/g, ' ');

describe('payq <command> --help', () => {
  it('knows the seven commands', () => {
    expect(COMMANDS.map((c) => c.name)).toEqual(['produce', 'consume', 'trace', 'worker', 'replay-dlq', 'bench', 'report']);
  });

  it.each(COMMANDS.map((c) => c.name))('%s --help lists the global flags and every scheme', async (command) => {
    const r = await runCli([command, '--help']);
    expect(r.code).toBe(0);
    for (const flag of GLOBAL) expect(r.stdout, `${command} --help: ${flag}`).toContain(flag);
    for (const scheme of ['memory://', 'kafka://', 'kafkas://', 'amqp://', 'amqps://', 'nats://', 'zmq://']) expect(r.stdout).toContain(scheme);
    expect(r.stdout).toContain('Examples:');
  });

  it.each(COMMANDS)('$name --help shows every flag of its description, with the default it is given', async (description) => {
    const r = await runCli([description.name, '--help']);
    expect(r.code).toBe(0);
    const text = words(r.stdout);
    for (const spec of [...description.flags, ...GLOBAL_FLAGS]) {
      const long = /--[a-z0-9-]+/.exec(spec.flags)![0];
      if (spec.hidden) {
        expect(text, `${description.name} --help hides ${long}`).not.toContain(`${long} `);
        continue;
      }
      expect(text, `${description.name} --help: ${long}`).toContain(words(helpLine(spec)));
      const shown = spec.default ?? spec.shownDefault;
      if (shown !== undefined && !spec.quietDefault) expect(words(helpLine(spec))).toContain(String(shown));
    }
    for (const example of description.examples) expect(text).toContain(words(example));
  });
});

describe('what --help loads', () => {
  const dir = 'src/cli/commands';
  /** The modules an import statement runs (type-only imports run nothing). */
  const imports = (file: string) => [...readFileSync(file, 'utf8').matchAll(/^import (?!type )[^;]*? from '([^']+)';/gm)].map((m) => m[1]!);

  it('the program and the command table import no validator, no config reader and no run', () => {
    const eager = ['src/cli/program.ts', `${dir}/index.ts`, `${dir}/describe.ts`, ...readdirSync(dir).filter((f) => f.endsWith('.command.ts')).map((f) => `${dir}/${f}`)];
    for (const file of eager) {
      for (const spec of imports(file)) {
        expect(spec, `${file} imports ${spec}`).not.toMatch(/^(zod|yaml)$|\/options\.js$|\/core\/(?!defaults\.js$)/);
        // Beside the descriptions: only each other (a command's schema and run are loaded by its load()).
        if (file.startsWith(dir)) expect(spec, `${file} imports ${spec}`).not.toMatch(/^\.\/(?!describe\.js$|[a-z-]+\.command\.js$)/);
      }
    }
  });

  it('no command imports the program', () => {
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) expect(imports(`${dir}/${file}`), file).not.toContain('../program.js');
  });
});
