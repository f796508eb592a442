import type { ProcessingConfig } from './scenario.js';
import type { Prng } from './prng.js';

/** Draws a processing time in milliseconds (never negative) from a stage's distribution. */
export function sampleMs(config: ProcessingConfig, prng: Prng): number {
  switch (config.distribution) {
    case 'constant':
      return config.ms;
    case 'uniform':
      return config.min_ms + prng.next() * (config.max_ms - config.min_ms);
    case 'normal':
      return Math.max(0, config.mean_ms + prng.normal() * config.stddev_ms);
    case 'lognormal':
      return config.median_ms * Math.exp(config.sigma * prng.normal());
    case 'exponential':
      return -config.mean_ms * Math.log(1 - prng.next());
  }
}

/** The distribution's mean, for documentation and checks. */
export function meanMs(config: ProcessingConfig): number {
  switch (config.distribution) {
    case 'constant':
      return config.ms;
    case 'uniform':
      return (config.min_ms + config.max_ms) / 2;
    case 'normal':
      return config.mean_ms;
    case 'lognormal':
      return config.median_ms * Math.exp((config.sigma * config.sigma) / 2);
    case 'exponential':
      return config.mean_ms;
  }
}
