/** The class APIs: a loss that counts its own iterations, and the STCN-style BootstrappedCE. */
import {
  BOOTSTRAPPED_CROSS_ENTROPY_OPTIONS,
  BootstrappedCrossEntropyOptions,
  bootstrappedCrossEntropyWithStats,
} from './loss';
import { schedules, WarmupSchedule } from './schedules';
import { Tensor } from './tensor';
import { checkFraction, checkInteger, checkNumber, checkOptions, describe, optionNames } from './validate';

/** What `stateDict()` returns: plain JSON, enough to continue the schedule exactly after a restart. */
export interface BootstrappedCrossEntropyState {
  /** The iteration the next forward() call uses. */
  iteration: number;
  p: number;
  lastP: number | null;
  lastK: number | null;
}

/**
 * Bootstrapped cross-entropy that counts its own iterations, like the PyTorch module form of the functional
 * `bootstrapped_cross_entropy` (a `_WeightedLoss` subclass that counts its calls): the first forward() is
 * iteration 0, the next 1, ...
 */
export class BootstrappedCrossEntropy {
  readonly p: number;
  readonly options: Readonly<BootstrappedCrossEntropyOptions>;
  private nextIteration = 0;
  private lastEffectiveP: number | null = null;
  private lastKept: number | null = null;

  constructor(p: number, options?: BootstrappedCrossEntropyOptions) {
    this.p = checkFraction(p, 'p');
    this.options = Object.freeze({
      ...checkOptions<BootstrappedCrossEntropyOptions>(options, 'options', BOOTSTRAPPED_CROSS_ENTROPY_OPTIONS),
    });
  }

  /** The iteration the next forward() call uses (the number of calls so far). */
  get iteration(): number {
    return this.nextIteration;
  }

  /** The effective p of the last forward() call, or null before the first. */
  get lastP(): number | null {
    return this.lastEffectiveP;
  }

  /** The number of elements the last forward() call selected, or null before the first. */
  get lastK(): number | null {
    return this.lastKept;
  }

  forward(input: Tensor, target: Tensor): Tensor {
    const result = bootstrappedCrossEntropyWithStats(input, target, this.nextIteration, this.p, this.options);
    this.nextIteration += 1;
    this.lastEffectiveP = result.p;
    this.lastKept = result.k;
    return result.loss;
  }

  stateDict(): BootstrappedCrossEntropyState {
    return { iteration: this.nextIteration, p: this.p, lastP: this.lastEffectiveP, lastK: this.lastKept };
  }

  loadStateDict(state: BootstrappedCrossEntropyState): void {
    const s = checkOptions<BootstrappedCrossEntropyState>(state, 'state', STATE_NAMES);
    const iteration = checkInteger(s.iteration, 'state.iteration', 0);
    if (s.p !== undefined && s.p !== this.p) {
      throw new RangeError(`state.p (${describe(s.p)}) differs from this loss's p (${this.p})`);
    }
    const lastP = s.lastP === undefined || s.lastP === null ? null : checkFraction(s.lastP, 'state.lastP');
    const lastK = s.lastK === undefined || s.lastK === null ? null : checkInteger(s.lastK, 'state.lastK', 0);
    this.nextIteration = iteration;
    this.lastEffectiveP = lastP;
    this.lastKept = lastK;
  }
}

const STATE_NAMES = optionNames<BootstrappedCrossEntropyState>({ iteration: true, p: true, lastP: true, lastK: true });

/** Options of the STCN-style `BootstrappedCE`. */
export interface BootstrappedCEOptions extends Omit<BootstrappedCrossEntropyOptions, 'warmup'> {
  /** Iteration where p starts to fall from 1. Default 20000. */
  startWarm?: number;
  /** Iteration from which p = topP. Default 70000. */
  endWarm?: number;
  /** Fraction kept after warm-up. Default 0.15. */
  topP?: number;
}

/**
 * STCN's `BootstrappedCE(start_warm, end_warm, top_p)`: `forward(input, target, it)` returns the loss and
 * the p used. Plain mean cross-entropy before startWarm, p falling linearly to topP by endWarm. Unlike the
 * original, ignored pixels stay out of the pool, k is at least 1 and startWarm == endWarm is a step.
 */
const BOOTSTRAPPED_CE_OPTIONS = optionNames<BootstrappedCEOptions>({
  startWarm: true,
  endWarm: true,
  topP: true,
  reduction: true,
  perSample: true,
  checkFinite: true,
  weight: true,
  ignoreIndex: true,
  labelSmoothing: true,
  impl: true,
  scope: true,
  group: true,
});

export class BootstrappedCE {
  readonly startWarm: number;
  readonly endWarm: number;
  readonly topP: number;
  private readonly schedule: WarmupSchedule;
  private readonly lossOptions: BootstrappedCrossEntropyOptions;

  constructor(options?: BootstrappedCEOptions) {
    const {
      startWarm = 20000,
      endWarm = 70000,
      topP = 0.15,
      ...rest
    } = checkOptions<BootstrappedCEOptions>(options, 'options', BOOTSTRAPPED_CE_OPTIONS);
    this.startWarm = checkNumber(startWarm, 'startWarm');
    this.endWarm = checkNumber(endWarm, 'endWarm');
    this.topP = checkFraction(topP, 'topP');
    this.schedule = schedules.linear(this.startWarm, this.endWarm);
    this.lossOptions = { ...rest, warmup: this.schedule };
  }

  forward(input: Tensor, target: Tensor, it: number): { loss: Tensor; p: number } {
    const result = bootstrappedCrossEntropyWithStats(input, target, it, this.topP, this.lossOptions);
    return { loss: result.loss, p: result.p };
  }
}
