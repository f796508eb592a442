/** What the failure drills check the same way on every broker. */

/**
 * The payments that entered and did not end: an independent reader's verdict, from the entry
 * events and the sink's events (each a payment id and an event type).
 */
export function unfinishedPayments(entered: ReadonlyArray<{ payment: string }>, ended: ReadonlyArray<{ payment: string; event: string }>): {
  unfinished: string[];
  refundsOpen: string[];
} {
  const finishedBy = new Map<string, Set<string>>();
  for (const e of ended) (finishedBy.get(e.payment) ?? finishedBy.set(e.payment, new Set()).get(e.payment)!).add(e.event);
  const unfinished = entered
    .filter((e) => {
      const events = finishedBy.get(e.payment);
      return !events || !(events.has('payment_declined') || events.has('order_completed'));
    })
    .map((e) => e.payment);
  // Refunds requested are completed too.
  const refundsAsked = new Set(ended.filter((e) => e.event === 'refund_requested').map((e) => e.payment));
  const refundsOpen = [...refundsAsked].filter((pay) => !finishedBy.get(pay)!.has('refund_completed'));
  return { unfinished, refundsOpen };
}

/** What a drill is handed to take part in the one outage its file's drills share. */
export interface OutageHooks {
  /**
   * The drill is set up and its runs are under way: the broker may be killed now. `duringOutage`
   * is called once the broker process is gone (from the restart's own callback); what it throws
   * fails this drill. Resolves with the outage in ms (kill → broker answering) once the broker
   * answers again; rejects if the restart failed.
   */
  midFlight(duringOutage?: () => void): Promise<number>;
  /**
   * Resolves once every other drill is mid-flight (or failed, or waits here too): for a drill
   * whose run is bounded in time (bench's --duration), so that it starts just before the kill.
   */
  othersMidFlight(): Promise<void>;
}

/** One drill: its set-up, `midFlight`, then its checks after the restart; resolves with its figures. */
export type OutageDrill<T> = (hooks: OutageHooks) => Promise<T>;

/**
 * Runs every drill at once and restarts the broker once for all of them: each drill prepares in
 * parallel and says when it is mid-flight; once every drill is (or has already failed), `restart`
 * kills the broker, calls `onKilled` (which runs the drills' during-outage steps) and resolves
 * with the outage; then every drill goes on with its checks, concurrently.
 *
 * `outcomes` holds each drill's promise, for its own test to await (a failure is that test's
 * error; the promises never count as unhandled rejections). `restarted` resolves with the outage
 * once the restart is over, or rejects with the restart's error: a hook awaits it.
 */
export function acrossOneRestart<K extends string, T>(
  drills: Record<K, OutageDrill<T>>,
  restart: (onKilled: () => void) => Promise<number>,
): { outcomes: Record<K, Promise<T>>; restarted: Promise<number> } {
  let resolveOver!: (ms: number) => void;
  let rejectOver!: (err: unknown) => void;
  const over = new Promise<number>((resolve, reject) => {
    resolveOver = resolve;
    rejectOver = reject;
  });
  over.catch(() => undefined);
  const duringOutage: (() => void)[] = [];
  const ready: Promise<void>[] = [];
  const outcomes = {} as Record<K, Promise<T>>;
  const names = Object.keys(drills) as K[];
  // Drills mid-flight, failed or waiting for the others; and who waits for the others.
  const settled = new Set<K>();
  const waiting = new Map<K, () => void>();
  const recheck = () => {
    for (const [name, go] of waiting) {
      if (names.every((other) => other === name || settled.has(other) || waiting.has(other))) {
        waiting.delete(name);
        go();
      }
    }
  };
  for (const name of names) {
    let markReady!: () => void;
    const isReady = new Promise<void>((resolve) => (markReady = resolve));
    void isReady.then(() => {
      settled.add(name);
      recheck();
    });
    let midFlightCalled = false;
    let duringError: { error: unknown } | undefined;
    const hooks: OutageHooks = {
      midFlight(during) {
        if (midFlightCalled) throw new Error(`drill ${name}: midFlight called twice`);
        midFlightCalled = true;
        if (during) {
          duringOutage.push(() => {
            try {
              during();
            } catch (error) {
              duringError = { error };
            }
          });
        }
        markReady();
        return over.then((ms) => {
          if (duringError) throw duringError.error;
          return ms;
        });
      },
      othersMidFlight() {
        return new Promise<void>((resolve) => {
          waiting.set(name, resolve);
          recheck();
        });
      },
    };
    const outcome = Promise.resolve().then(() => drills[name](hooks));
    // A copy with a no-op catch: a drill that fails before its test awaits it is not unhandled.
    outcome.catch(() => undefined);
    outcomes[name] = outcome;
    // A drill that ended (failed) before it was mid-flight is not waited for.
    const ended = () => {
      settled.add(name);
      recheck();
    };
    void outcome.then(ended, ended);
    ready.push(Promise.race([isReady, outcome.then(noop, noop)]));
  }
  const restarted = (async () => {
    await Promise.all(ready);
    try {
      const ms = await restart(() => {
        for (const step of duringOutage) step();
      });
      resolveOver(ms);
      return ms;
    } catch (err) {
      rejectOver(err);
      throw err;
    }
  })();
  restarted.catch(() => undefined);
  return { outcomes, restarted };
}

function noop(): void {}
