/** A long-running CLI process (trace, worker) that a test starts, waits on, and stops. */
import { spawn, type ChildProcess } from 'node:child_process';
import { BIN } from './cli.js';

export interface Background {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves when stderr contains `text` (or rejects after `timeoutMs`). */
  waitForStderr(text: string | RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): Background {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, CI: 'true', NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      resolve(code);
      // A process that ended without printing what is awaited fails the wait now, not at its timeout.
      for (const w of waiters.splice(0)) w();
    }),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    // A guard against a hang, not a timing check: a loaded machine can take long to start a reader.
    waitForStderr(text, timeoutMs = 90_000) {
      const found = () => (typeof text === 'string' ? err.includes(text) : text.test(err));
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${String(text)} on stderr: ${err}`)), timeoutMs);
        const check = () => {
          if (found()) {
            clearTimeout(timer);
            resolve();
          } else if (child.exitCode !== null) {
            clearTimeout(timer);
            reject(new Error(`process exited (${child.exitCode}) before ${String(text)}: ${err}`));
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}
