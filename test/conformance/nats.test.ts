import { brokerAvailable, NATS_URL } from '../helpers/brokers.js';
import { defineDriverConformance } from './driver-suite.js';

defineDriverConformance('nats', NATS_URL, { skip: !(await brokerAvailable(NATS_URL)) });
