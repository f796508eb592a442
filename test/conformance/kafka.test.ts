import { brokerAvailable, KAFKA_URL } from '../helpers/brokers.js';
import { defineDriverConformance } from './driver-suite.js';

// Kafka has no redelivered flag: a new consumer resuming from the committed offset cannot know
// that a message was handed to a subscription that closed without acking it.
defineDriverConformance('kafka', KAFKA_URL, { skip: !(await brokerAvailable(KAFKA_URL)), flagsReturnedMessages: false });
