import { describe, expect, it } from 'vitest';
import { LinkMonitor } from '../../src/drivers/common.js';

describe('LinkMonitor', () => {
  it('counts reconnects after losses and times every outage, the current one included', () => {
    let now = 1000;
    const link = new LinkMonitor(60_000, () => now);
    expect(link.status()).toEqual({ connected: false, reconnects: 0, downMs: 0, gone: false });
    link.restored();
    expect(link.status()).toEqual({ connected: true, reconnects: 0, downMs: 0, gone: false });
    now = 2000;
    link.lost();
    link.lost(); // said twice: one outage
    now = 2500;
    expect(link.status()).toEqual({ connected: false, reconnects: 0, downMs: 500, gone: false });
    now = 3200;
    link.restored();
    link.restored(); // said twice: one reconnect
    expect(link.status()).toEqual({ connected: true, reconnects: 1, downMs: 1200, gone: false });
    now = 5000;
    link.lost();
    now = 5300;
    link.restored();
    expect(link.status()).toEqual({ connected: true, reconnects: 2, downMs: 1500, gone: false });
  });

  it('is gone once one outage outlasts the reconnect timeout, and stays gone; outages within it add up without', () => {
    let now = 0;
    const link = new LinkMonitor(3_000, () => now);
    link.restored();
    // Two outages of 2 s: 4 s down in all, neither longer than the timeout.
    for (const at of [1_000, 10_000]) {
      now = at;
      link.lost();
      now = at + 2_000;
      expect(link.status().gone).toBe(false);
      link.restored();
    }
    expect(link.status()).toEqual({ connected: true, reconnects: 2, downMs: 4_000, gone: false });
    now = 20_000;
    link.lost();
    now = 23_000;
    expect(link.status().gone).toBe(false); // exactly the timeout: not past it
    now = 23_001;
    expect(link.status()).toEqual({ connected: false, reconnects: 2, downMs: 7_001, gone: true });
    // A connection that works again later does not undo it: the driver had given up by then.
    now = 30_000;
    link.restored();
    expect(link.status()).toMatchObject({ connected: true, gone: true });
  });

  it('is gone when the outage that just ended outlasted the timeout, though no one looked meanwhile', () => {
    let now = 0;
    const link = new LinkMonitor(1_000, () => now);
    link.restored();
    link.lost();
    now = 5_000;
    link.restored();
    expect(link.status()).toEqual({ connected: true, reconnects: 1, downMs: 5_000, gone: true });
  });

  it('an outage before the first connection is no outage: never connected is not gone', () => {
    let now = 0;
    const link = new LinkMonitor(1_000, () => now);
    link.lost();
    now = 10_000;
    expect(link.status()).toEqual({ connected: false, reconnects: 0, downMs: 0, gone: false });
  });
});
