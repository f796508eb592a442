import { defineDriverConformance } from './driver-suite.js';

defineDriverConformance('memory', 'memory://conformance');
