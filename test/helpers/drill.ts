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
