// First, before anything loads kafkajs: the driver's record codec takes kafkajs' place only then
// (src/drivers/kafka/record-codec.ts), so that the suite runs on the codec payq runs on.
import { installLeanRecordCodec } from '../../src/drivers/kafka/record-codec.js';
import { describe, expect, it } from 'vitest';
import { brokerAvailable, KAFKA_URL } from '../helpers/brokers.js';
import { defineDriverConformance } from './driver-suite.js';

describe('kafka conformance setup', () => {
  it("runs on payq's record codec (unless PAYQ_KAFKA_RECORD_CODEC=kafkajs asks for kafkajs' own)", () => {
    expect(installLeanRecordCodec()).toBe(process.env['PAYQ_KAFKA_RECORD_CODEC'] !== 'kafkajs');
  });
});

// Kafka has no redelivered flag: a new consumer resuming from the committed offset cannot know
// that a message was handed to a subscription that closed without acking it.
defineDriverConformance('kafka', KAFKA_URL, { skip: !(await brokerAvailable(KAFKA_URL)), flagsReturnedMessages: false });
