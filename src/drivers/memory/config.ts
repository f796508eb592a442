/**
 * What a `memory://[name]` URL may hold (README "Brokers and URLs"); memory-driver.ts reads the
 * values.
 */
import type { DriverUrlSpec } from '../url.js';

export const MEMORY_URL_SPEC: DriverUrlSpec = {
  scheme: 'memory',
  sharedAcrossProcesses: false,
  schemes: [{ name: 'memory', tls: false, defaultPort: 0 }],
  hosts: { min: 0, max: 1 },
  credentials: false,
  path: 'with the host part, the name of the in-process broker instance',
  params: [
    { name: 'maxBacklog', type: 'integer', min: 0, meaning: 'a send waits while a group lags more than N messages (default 200000; 0 disables)' },
    { name: 'maxMessageBytes', type: 'integer', min: 1, meaning: 'the largest accepted message (default 1 MiB)' },
    { name: 'retain', type: 'integer', min: 0, meaning: 'messages kept after every group read them, for groups joining later (default 0)' },
    { name: 'maxLength', type: 'integer', min: 0, meaning: 'the most messages a destination keeps, read or not (default: no limit)' },
  ],
};
