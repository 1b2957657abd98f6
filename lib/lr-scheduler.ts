/**
 * Learning-rate schedulers with the semantics of `torch.optim.lr_scheduler`: each sets the optimizer's lr when
 * made (epoch 0) and on every `step()`, which is called after `optimizer.step()`. Like PyTorch's (when stepped
 * without an epoch argument) they compute the next lr from the optimizer's current one (the "chainable" form),
 * with the same floating-point operations, so the lrs match PyTorch's. `getLastLr()` returns `[lr]` (one
 * parameter group, as PyTorch's list).
 *
 *   const opt = new optim.SGD(params, { lr: 0.1 });
 *   const sched = new lrScheduler.PolynomialLR(opt, { totalIters: 1000, power: 0.9 });
 *   for (...) { opt.zeroGrad(); loss.backward(); opt.step(); sched.step(); }
 */
import { Optimizer } from './optim';
import { checkInteger, checkNumber, checkOptions, describe, optionNames } from './validate';

/** What `stateDict()` returns: plain values, enough to continue the schedule exactly after a restart. */
export interface LRSchedulerState {
  /** The number of `step()` calls since the schedule's start (PyTorch's `last_epoch`). */
  lastEpoch: number;
  /** The lr the schedule started from (PyTorch's `base_lrs[0]`). */
  baseLr: number;
  /** The lr set by the last step (`get_last_lr()[0]`). */
  lastLr: number;
  /** PyTorch's `_step_count`: steps including the one made on construction. */
  stepCount: number;
}

const STATE_NAMES = optionNames<LRSchedulerState>({ lastEpoch: true, baseLr: true, lastLr: true, stepCount: true });

/** What every scheduler shares: PyTorch's `LRScheduler` for one parameter group. */
export abstract class LRScheduler {
  readonly optimizer: Optimizer;
  /** PyTorch's `last_epoch`: 0 after construction, then one more per `step()`. */
  protected epoch = -1;
  protected baseLr: number;
  protected stepCount = 0;
  private lastLr: number;

  protected constructor(optimizer: Optimizer) {
    if (!(optimizer instanceof Optimizer))
      throw new TypeError(`optimizer must be an optim optimizer (SGD, Adam, AdamW), got ${describe(optimizer)}`);
    this.optimizer = optimizer;
    this.baseLr = optimizer.lr;
    this.lastLr = optimizer.lr;
  }

  /** Subclasses call this at the end of their constructor: PyTorch's initial step (to epoch 0). */
  protected start(): void {
    this.step();
  }

  /** The next lr from the optimizer's current one, at `this.epoch` (already advanced). */
  protected abstract nextLr(current: number): number;

  /** Advances the schedule by one and sets the optimizer's lr. Call it after `optimizer.step()`. */
  step(): void {
    this.stepCount += 1;
    this.epoch += 1;
    const lr = this.nextLr(this.optimizer.lr);
    this.optimizer.lr = lr;
    this.lastLr = this.optimizer.lr;
  }

  /** The lr the last step set, as a one-element array (PyTorch's `get_last_lr()`). */
  getLastLr(): number[] {
    return [this.lastLr];
  }

  /** The number of steps taken (PyTorch's `last_epoch`). */
  get lastEpoch(): number {
    return this.epoch;
  }

  stateDict(): LRSchedulerState {
    return { lastEpoch: this.epoch, baseLr: this.baseLr, lastLr: this.lastLr, stepCount: this.stepCount };
  }

  /** Restores a `stateDict()`; the optimizer's lr is restored with the optimizer's own state. */
  loadStateDict(state: LRSchedulerState): void {
    const s = checkOptions<LRSchedulerState>(state, 'state', STATE_NAMES);
    const lastEpoch = checkInteger(s.lastEpoch, 'state.lastEpoch', 0);
    const stepCount = checkInteger(s.stepCount, 'state.stepCount', 1);
    const baseLr = checkNumber(s.baseLr, 'state.baseLr');
    const lastLr = checkNumber(s.lastLr, 'state.lastLr');
    this.epoch = lastEpoch;
    this.stepCount = stepCount;
    this.baseLr = baseLr;
    this.lastLr = lastLr;
  }
}

function checkPositiveInteger(value: unknown, name: string): number {
  return checkInteger(value, name, 1);
}

function checkRange(value: unknown, name: string, low: number, high: number, lowOpen: boolean): number {
  const n = checkNumber(value, name);
  if (lowOpen ? !(n > low && n <= high) : !(n >= low && n <= high))
    throw new RangeError(`${name} must be in ${lowOpen ? '(' : '['}${low}, ${high}], got ${n}`);
  return n;
}

/** Options of `StepLR` (`torch.optim.lr_scheduler.StepLR`). */
export interface StepLROptions {
  /** Steps between decays, >= 1. Required. */
  stepSize: number;
  /** Factor of each decay. Default 0.1. */
  gamma?: number;
}

/** Multiplies the lr by `gamma` every `stepSize` steps. */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;

  constructor(optimizer: Optimizer, options: StepLROptions) {
    super(optimizer);
    const o = checkOptions<StepLROptions>(
      options,
      'options',
      optionNames<StepLROptions>({ stepSize: true, gamma: true }),
    );
    this.stepSize = checkPositiveInteger(o.stepSize, 'stepSize');
    this.gamma = o.gamma === undefined ? 0.1 : checkNumber(o.gamma, 'gamma');
    this.start();
  }

  protected nextLr(current: number): number {
    if (this.epoch === 0 || this.epoch % this.stepSize !== 0) return current;
    return current * this.gamma;
  }
}

/** Options of `CosineAnnealingLR` (`torch.optim.lr_scheduler.CosineAnnealingLR`). */
export interface CosineAnnealingLROptions {
  /** Steps of half a cosine period, >= 1. Required. */
  tMax: number;
  /** The lowest lr. Default 0. */
  etaMin?: number;
}

/** Anneals the lr from its start to `etaMin` along a half cosine over `tMax` steps (then back up, as PyTorch). */
export class CosineAnnealingLR extends LRScheduler {
  readonly tMax: number;
  readonly etaMin: number;

  constructor(optimizer: Optimizer, options: CosineAnnealingLROptions) {
    super(optimizer);
    const o = checkOptions<CosineAnnealingLROptions>(
      options,
      'options',
      optionNames<CosineAnnealingLROptions>({ tMax: true, etaMin: true }),
    );
    this.tMax = checkPositiveInteger(o.tMax, 'tMax');
    this.etaMin = o.etaMin === undefined ? 0 : checkNumber(o.etaMin, 'etaMin');
    if (this.etaMin < 0) throw new RangeError(`etaMin must be >= 0, got ${this.etaMin}`);
    this.start();
  }

  protected nextLr(current: number): number {
    const { epoch, tMax, etaMin, baseLr } = this;
    if (epoch === 0) return current;
    if (this.stepCount === 1 && epoch > 0)
      return etaMin + ((baseLr - etaMin) * (1 + Math.cos((epoch * Math.PI) / tMax))) / 2;
    // Python's % of non-negative numbers; (epoch - 1 - tMax) may be negative, where Python's % is floored.
    const k = epoch - 1 - tMax;
    if (((k % (2 * tMax)) + 2 * tMax) % (2 * tMax) === 0)
      return current + ((baseLr - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2;
    return (
      ((1 + Math.cos((Math.PI * epoch) / tMax)) / (1 + Math.cos((Math.PI * (epoch - 1)) / tMax))) * (current - etaMin) +
      etaMin
    );
  }
}

/** Options of `LinearLR` (`torch.optim.lr_scheduler.LinearLR`), a linear warm-up. */
export interface LinearLROptions {
  /** Factor of the lr at the start, in (0, 1]. Default 1/3. */
  startFactor?: number;
  /** Factor of the lr after `totalIters` steps, in [0, 1]. Default 1. */
  endFactor?: number;
  /** Steps to go from startFactor to endFactor. Default 5. */
  totalIters?: number;
}

/** Scales the lr by a factor going linearly from `startFactor` to `endFactor` over `totalIters` steps. */
export class LinearLR extends LRScheduler {
  readonly startFactor: number;
  readonly endFactor: number;
  readonly totalIters: number;

  constructor(optimizer: Optimizer, options?: LinearLROptions) {
    super(optimizer);
    const o = checkOptions<LinearLROptions>(
      options,
      'options',
      optionNames<LinearLROptions>({ startFactor: true, endFactor: true, totalIters: true }),
    );
    this.startFactor = o.startFactor === undefined ? 1 / 3 : checkRange(o.startFactor, 'startFactor', 0, 1, true);
    this.endFactor = o.endFactor === undefined ? 1 : checkRange(o.endFactor, 'endFactor', 0, 1, false);
    this.totalIters = o.totalIters === undefined ? 5 : checkInteger(o.totalIters, 'totalIters', 0);
    this.start();
  }

  protected nextLr(current: number): number {
    const { epoch, startFactor, endFactor, totalIters } = this;
    if (epoch === 0) return current * startFactor;
    if (epoch > totalIters) return current;
    return (
      current * (1 + (endFactor - startFactor) / (totalIters * startFactor + (epoch - 1) * (endFactor - startFactor)))
    );
  }
}

/** Options of `PolynomialLR` (`torch.optim.lr_scheduler.PolynomialLR`). */
export interface PolynomialLROptions {
  /** Steps until the lr reaches 0. Default 5. */
  totalIters?: number;
  /** The polynomial's power; segmentation training uses 0.9 ("poly" policy). Default 1. */
  power?: number;
}

/** `lr = baseLr * (1 - step / totalIters) ^ power` until totalIters, then unchanged. */
export class PolynomialLR extends LRScheduler {
  readonly totalIters: number;
  readonly power: number;

  constructor(optimizer: Optimizer, options?: PolynomialLROptions) {
    super(optimizer);
    const o = checkOptions<PolynomialLROptions>(
      options,
      'options',
      optionNames<PolynomialLROptions>({ totalIters: true, power: true }),
    );
    this.totalIters = o.totalIters === undefined ? 5 : checkPositiveInteger(o.totalIters, 'totalIters');
    this.power = o.power === undefined ? 1 : checkNumber(o.power, 'power');
    this.start();
  }

  protected nextLr(current: number): number {
    const { epoch, totalIters, power } = this;
    if (epoch === 0 || epoch > totalIters) return current;
    const decay = ((1 - epoch / totalIters) / (1 - (epoch - 1) / totalIters)) ** power;
    return current * decay;
  }
}
