/**
 * The command's stop as drivers keep it (common.ts DriverStop, types.ts DriverOptions.signal):
 * starting work gives up at the stop, work in flight only after the grace, and retry() starts no
 * attempt after it. Work that never settles stands for a broker that does not answer.
 */
import { describe, expect, it } from 'vitest';
import { DriverStop } from '../../src/drivers/common.js';
import { retry } from '../../src/drivers/retry.js';
import { ExitCode, InterruptedError } from '../../src/errors.js';

const never = () => new Promise<never>(() => undefined);
const after = <T>(ms: number, value: T) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

describe('DriverStop', () => {
  it('starting work: as it is without a stop; InterruptedError (exit 130) at the stop, however long the work would wait', async () => {
    expect(await new DriverStop(undefined, 'kafka x').starting(Promise.resolve(1), 'connecting')).toBe(1);
    const controller = new AbortController();
    const stop = new DriverStop(controller.signal, 'kafka x', 50);
    expect(await stop.starting(Promise.resolve(2), 'connecting')).toBe(2);
    const pending = stop.starting(never(), 'subscribing to t');
    controller.abort();
    const err = await pending.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect((err as InterruptedError).exitCode).toBe(ExitCode.interrupted);
    expect((err as Error).message).toBe('interrupted while subscribing to t (kafka x)');
    // Once stopped, starting work is refused before it waits at all.
    await expect(stop.starting(never(), 'declaring t')).rejects.toBeInstanceOf(InterruptedError);
  });

  it('work in flight: finishes when it does within the grace, is given up after it', async () => {
    const controller = new AbortController();
    const stop = new DriverStop(controller.signal, 'kafka x', 200);
    const answered = stop.inFlight(after(20, 'acked'), () => new Error('gave up'));
    const silent = stop.inFlight(never(), () => new Error('gave up'));
    controller.abort();
    expect(stop.isStopped).toBe(true);
    expect(await answered).toBe('acked');
    await expect(silent).rejects.toThrow('gave up');
  });

  it('retry() with its signal starts no attempt after the stop and ends with the InterruptedError', async () => {
    const controller = new AbortController();
    const stop = new DriverStop(controller.signal, 'kafka x', 50);
    let attempts = 0;
    const retrying = retry(
      async () => {
        attempts++;
        if (attempts === 2) controller.abort();
        throw new Error('broker away');
      },
      { backoff: { initialMs: 1, maxMs: 1 }, signal: stop.signal },
    );
    await expect(retrying).rejects.toBeInstanceOf(InterruptedError);
    expect(attempts).toBe(2);
  });

  it("retry()'s stop: the attempt a send makes after the stop still goes, a failed one is not tried again, a wait ends at once", async () => {
    const controller = new AbortController();
    const stop = new DriverStop(controller.signal, 'kafka x', 50);
    controller.abort();
    // Stopped before the first attempt: it still runs (in-flight work drains while the broker answers).
    expect(await retry(async () => 'acked', { backoff: { initialMs: 1, maxMs: 1 }, stop: stop.signal })).toBe('acked');
    let attempts = 0;
    await expect(
      retry(
        async () => {
          attempts++;
          throw new Error('broker away');
        },
        { backoff: { initialMs: 1, maxMs: 1 }, stop: stop.signal },
      ),
    ).rejects.toThrow('broker away');
    expect(attempts).toBe(1);
    // A long wait between attempts under way at the stop ends with the attempt's own error.
    const later = new AbortController();
    const waiting = retry(
      async () => {
        throw new Error('still away');
      },
      { backoff: { initialMs: 60_000, maxMs: 60_000 }, stop: new DriverStop(later.signal, 'kafka x', 50).signal },
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    later.abort();
    await expect(waiting).rejects.toThrow('still away');
  });
});
