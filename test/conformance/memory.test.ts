import { defineDriverConformance } from './driver-suite.js';

// The consumer-groups case subscribes a second group from the beginning after the first one read
// everything: the memory broker keeps what its groups have read only when asked to (retain=N).
defineDriverConformance('memory', 'memory://conformance?retain=100000');
