/**
 * Warm-up schedules: the effective fraction p of the pool kept at a given iteration. Pure functions of the
 * iteration, so that training resumed from a checkpoint continues the schedule exactly.
 */
import { checkFraction, checkInteger, checkNumber, describe } from './validate';

export interface WarmupSchedule {
  readonly kind: 'step' | 'linear' | 'cosine';
  /** Iteration where p starts to fall from 1. */
  readonly startWarm: number;
  /** Iteration from which p equals its target. */
  readonly endWarm: number;
  /** The effective p at `iteration` for target fraction `p`. */
  at(p: number, iteration: number): number;
}

/**
 * A function `(p, iteration) => effective p`, as the `warmup` callable of the functional PyTorch
 * `bootstrapped_cross_entropy` takes it.
 */
export type WarmupFunction = (p: number, iteration: number) => number;

/**
 * Warm-up: a number `w` (p = 1 while iteration < w, then p; the integer warm-up of the functional PyTorch
 * `bootstrapped_cross_entropy`), a function
 * `(p, iteration) => p`, or a schedule from `schedules`.
 */
export type Warmup = number | WarmupFunction | WarmupSchedule;

function checkRange(startWarm: unknown, endWarm: unknown, startName = 'startWarm'): [number, number] {
  const start = checkNumber(startWarm, startName);
  // Stryker disable next-line ConditionalExpression: equivalent: step() passes one value twice, so its end is never
  // checked after its start passed.
  const end = checkNumber(endWarm, startName === 'startWarm' ? 'endWarm' : startName);
  if (start < 0) throw new RangeError(`${startName} must be >= 0, got ${start}`);
  if (start > end) throw new RangeError(`startWarm (${start}) must not be greater than endWarm (${end})`);
  return [start, end];
}

/** Falls from 1 to p between startWarm and endWarm with `shape(t)`, t in [0, 1]; a step when they are equal. */
function falling(
  kind: WarmupSchedule['kind'],
  start: number,
  end: number,
  shape: (t: number) => number,
): WarmupSchedule {
  return Object.freeze({
    kind,
    startWarm: start,
    endWarm: end,
    at(p: number, iteration: number): number {
      if (iteration < start) return 1;
      if (iteration >= end) return p;
      return p + (1 - p) * shape((iteration - start) / (end - start));
    },
  });
}

export const schedules = {
  /** p = 1 while iteration < warmup, then p. */
  step(warmup: number): WarmupSchedule {
    const [start] = checkRange(warmup, warmup, 'warmup');
    return falling('step', start, start, () => 0);
  },
  /** STCN's schedule: 1 until startWarm, linear down to p at endWarm, then p. startWarm == endWarm is a step. */
  linear(startWarm: number, endWarm: number): WarmupSchedule {
    const [start, end] = checkRange(startWarm, endWarm);
    return falling('linear', start, end, (t) => 1 - t);
  },
  /** Like linear, with a half-cosine fall: gentle at both ends. */
  cosine(startWarm: number, endWarm: number): WarmupSchedule {
    const [start, end] = checkRange(startWarm, endWarm);
    return falling('cosine', start, end, (t) => 0.5 * (1 + Math.cos(Math.PI * t)));
  },
};

function isSchedule(value: unknown): value is WarmupSchedule {
  return typeof value === 'object' && value !== null && typeof (value as WarmupSchedule).at === 'function';
}

/**
 * The fraction of the pool kept at `iteration`: `p` after warm-up, 1 before. Checks every argument and what a
 * custom warm-up returns; an exception thrown by a custom warm-up passes through unchanged.
 */
export function effectiveP(p: number, iteration: number, warmup?: Warmup): number {
  checkFraction(p, 'p');
  checkInteger(iteration, 'iteration', 0);
  let value: unknown;
  if (warmup === undefined) {
    value = p;
  } else if (typeof warmup === 'number') {
    if (Number.isNaN(warmup)) throw new RangeError('warmup must be a number of iterations, got NaN');
    value = iteration < warmup ? 1 : p;
  } else if (typeof warmup === 'function') {
    value = warmup(p, iteration);
  } else if (isSchedule(warmup)) {
    value = warmup.at(p, iteration);
  } else {
    throw new TypeError(
      `warmup must be a number, a function (p, iteration) => p or a schedule, got ${describe(warmup)}`,
    );
  }
  if (typeof value !== 'number' || !(value > 0 && value <= 1)) {
    throw new RangeError(`warmup returned ${describe(value)} at iteration ${iteration}; expected a number in (0, 1]`);
  }
  return value;
}
