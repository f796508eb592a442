/**
 * What every command is handed: where to write, the Ctrl-C signal, the environment and stdin, and
 * payq's own version. Commands import this, never the program that dispatches to them.
 */
import { readFileSync } from 'node:fs';
import type { Output } from './output.js';

export interface CommandContext {
  out: Output;
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
  stdin: NodeJS.ReadableStream;
}

export const payqVersion: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
