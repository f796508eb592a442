import { describe, expect, it } from 'vitest';
import { LinkMonitor } from '../../src/drivers/common.js';

describe('LinkMonitor', () => {
  it('counts reconnects after losses and times every outage, the current one included', () => {
    let now = 1000;
    const link = new LinkMonitor(() => now);
    expect(link.status()).toEqual({ connected: false, reconnects: 0, downMs: 0 });
    link.restored();
    expect(link.status()).toEqual({ connected: true, reconnects: 0, downMs: 0 });
    now = 2000;
    link.lost();
    link.lost(); // said twice: one outage
    now = 2500;
    expect(link.status()).toEqual({ connected: false, reconnects: 0, downMs: 500 });
    now = 3200;
    link.restored();
    link.restored(); // said twice: one reconnect
    expect(link.status()).toEqual({ connected: true, reconnects: 1, downMs: 1200 });
    now = 5000;
    link.lost();
    now = 5300;
    link.restored();
    expect(link.status()).toEqual({ connected: true, reconnects: 2, downMs: 1500 });
  });
});
