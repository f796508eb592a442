import { AMQP_URL, brokerAvailable } from '../helpers/brokers.js';
import { defineDriverConformance } from './driver-suite.js';

defineDriverConformance('rabbitmq', AMQP_URL, { skip: !(await brokerAvailable(AMQP_URL)) });
