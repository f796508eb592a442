/** Live progress: a spinner on a TTY, nothing at all otherwise (CI logs stay clean). */
import type { Output } from './output.js';

export interface Progress {
  update(text: string): void;
  stop(): void;
}

const silent: Progress = { update() {}, stop() {} };

export async function startProgress(out: Output, text: string): Promise<Progress> {
  if (!out.interactive || out.verbosity === 'quiet') return silent;
  const { default: ora } = await import('ora');
  const spinner = ora({ text, stream: out.stderr, discardStdin: false }).start();
  return {
    update: (t) => {
      spinner.text = t;
    },
    stop: () => spinner.stop(),
  };
}
