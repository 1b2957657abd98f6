/**
 * Optimizers over LibTorch's `torch::optim`: `SGD`, `Adam` and `AdamW`, with PyTorch's update rules and
 * defaults. They update the parameters' tensors in place (e.g. a `jit.Module`'s `parameters()`).
 *
 *   const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
 *   opt.zeroGrad(); loss.backward(); opt.step();
 */
import { inspect } from 'util';
import { isFloating } from './dtype';
import { native, NativeHandle, NativeOptimizer, NativeOptimizerKind, NativeOptimizerSettings } from './native';
import { Tensor, checkTensor, isTensor } from './tensor';
import { checkBoolean, checkInteger, checkNumber, checkOptions, describe, optionNames, sameShape } from './validate';

/** Options of `SGD` (PyTorch's `torch.optim.SGD`). */
export interface SGDOptions {
  /** Learning rate, > 0. Required. */
  lr: number;
  /** Momentum factor, >= 0. Default 0. */
  momentum?: number;
  /** Dampening of the momentum, >= 0. Default 0. */
  dampening?: number;
  /** L2 penalty added to the gradient, >= 0. Default 0. */
  weightDecay?: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0). Default false. */
  nesterov?: boolean;
}

/** Options of `Adam` and `AdamW` (PyTorch's `torch.optim.Adam` / `AdamW`). */
export interface AdamOptions {
  /** Learning rate, > 0. Default 1e-3. */
  lr?: number;
  /** Decay rates of the first and second moment averages, each in [0, 1). Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Added to the denominator for numerical stability, > 0. Default 1e-8. */
  eps?: number;
  /**
   * Weight decay, >= 0. Adam: an L2 penalty added to the gradient (default 0). AdamW: decoupled decay,
   * `param *= 1 - lr * weightDecay` before the update (default 1e-2).
   */
  weightDecay?: number;
  /** Use the AMSGrad variant (keeps the maximum of the second moment). Default false. */
  amsgrad?: boolean;
}

/** The state of one parameter. SGD with momentum: `momentumBuffer`; Adam/AdamW: `step`, `expAvg`, `expAvgSq`. */
export interface ParamState {
  /** SGD: the momentum buffer. */
  momentumBuffer?: Tensor;
  /** Adam/AdamW: the number of steps taken for this parameter. */
  step?: number;
  /** Adam/AdamW: running average of the gradient. */
  expAvg?: Tensor;
  /** Adam/AdamW: running average of the squared gradient. */
  expAvgSq?: Tensor;
  /** Adam/AdamW with amsgrad: running maximum of expAvgSq. */
  maxExpAvgSq?: Tensor;
}

/**
 * An optimizer's state: its kind, its hyperparameters and one entry per parameter (null before the first
 * step), in the order of the parameters. The tensors are copies (on the parameters' device): save them with
 * `toArray()` and rebuild them with `tensor(...)` for a checkpoint on disk.
 */
export interface OptimizerStateDict {
  kind: NativeOptimizerKind;
  options: Required<SGDOptions> | Required<AdamOptions>;
  state: (ParamState | null)[];
}

const SGD_OPTIONS = optionNames<SGDOptions>({
  lr: true,
  momentum: true,
  dampening: true,
  weightDecay: true,
  nesterov: true,
});
const ADAM_OPTIONS = optionNames<AdamOptions>({ lr: true, betas: true, eps: true, weightDecay: true, amsgrad: true });
const STATE_DICT_NAMES = optionNames<OptimizerStateDict>({ kind: true, options: true, state: true });
const PARAM_STATE_NAMES = optionNames<ParamState>({
  momentumBuffer: true,
  step: true,
  expAvg: true,
  expAvgSq: true,
  maxExpAvgSq: true,
});

function checkParams(params: unknown): Tensor[] {
  if (
    params === null ||
    typeof params !== 'object' ||
    typeof (params as Iterable<unknown>)[Symbol.iterator] !== 'function'
  ) {
    throw new TypeError(`params must be an array of Tensors (e.g. module.parameters()), got ${describe(params)}`);
  }
  const list = Array.from(params as Iterable<unknown>);
  if (list.length === 0) throw new RangeError('params must hold at least one Tensor, got an empty list');
  // Keyed by the native tensor, not the handle: two handles on one parameter (module.parameters() called twice)
  // are the same tensor, which would share its state and be updated twice per step (PyTorch refuses this too).
  const seen = new Map<bigint, number>();
  return list.map((p, i) => {
    const t = checkTensor(p, `params[${i}]`);
    if (!isFloating(t.dtype)) throw new TypeError(`params[${i}] must be a floating-point tensor, got ${t.dtype}`);
    const identity = t.handle.identity();
    const first = seen.get(identity);
    if (first !== undefined) {
      throw new RangeError(
        `params[${i}] is the same tensor as params[${first}] (a duplicate parameter, perhaps through another handle on it); pass each parameter once`,
      );
    }
    seen.set(identity, i);
    return t;
  });
}

function checkNonNegative(value: unknown, name: string): number {
  const n = checkNumber(value, name);
  if (n < 0) throw new RangeError(`${name} must be >= 0, got ${n}`);
  return n;
}

function checkPositive(value: unknown, name: string): number {
  const n = checkNumber(value, name);
  if (!(n > 0)) throw new RangeError(`${name} must be > 0, got ${n}`);
  return n;
}

function checkBetas(value: unknown): [number, number] {
  if (!Array.isArray(value) || value.length !== 2)
    throw new TypeError(`betas must be an array [beta1, beta2], got ${describe(value)}`);
  return value.map((b, i) => {
    const n = checkNumber(b, `betas[${i}]`);
    if (n < 0 || n >= 1) throw new RangeError(`betas[${i}] must be in [0, 1), got ${n}`);
    return n;
  }) as [number, number];
}

function checkSGDOptions(options: unknown, all: boolean): Partial<Required<SGDOptions>> {
  const o = checkOptions<SGDOptions>(options, 'options', SGD_OPTIONS);
  const out: Partial<Required<SGDOptions>> = {};
  // A restored lr may be 0 (the end of a schedule); a new optimizer needs lr > 0.
  if (all || o.lr !== undefined) out.lr = all ? checkPositive(o.lr, 'lr') : checkNonNegative(o.lr, 'lr');
  if (all || o.momentum !== undefined)
    out.momentum = o.momentum === undefined ? 0 : checkNonNegative(o.momentum, 'momentum');
  if (all || o.dampening !== undefined)
    out.dampening = o.dampening === undefined ? 0 : checkNonNegative(o.dampening, 'dampening');
  if (all || o.weightDecay !== undefined)
    out.weightDecay = o.weightDecay === undefined ? 0 : checkNonNegative(o.weightDecay, 'weightDecay');
  if (all || o.nesterov !== undefined)
    out.nesterov = o.nesterov === undefined ? false : checkBoolean(o.nesterov, 'nesterov');
  return out;
}

function checkAdamOptions(options: unknown, all: boolean, defaultWeightDecay: number): Partial<Required<AdamOptions>> {
  const o = checkOptions<AdamOptions>(options, 'options', ADAM_OPTIONS);
  const out: Partial<Required<AdamOptions>> = {};
  if (all || o.lr !== undefined)
    out.lr = o.lr === undefined ? 1e-3 : all ? checkPositive(o.lr, 'lr') : checkNonNegative(o.lr, 'lr');
  if (all || o.betas !== undefined) out.betas = o.betas === undefined ? [0.9, 0.999] : checkBetas(o.betas);
  if (all || o.eps !== undefined) out.eps = o.eps === undefined ? 1e-8 : checkPositive(o.eps, 'eps');
  if (all || o.weightDecay !== undefined) {
    out.weightDecay = o.weightDecay === undefined ? defaultWeightDecay : checkNonNegative(o.weightDecay, 'weightDecay');
  }
  if (all || o.amsgrad !== undefined)
    out.amsgrad = o.amsgrad === undefined ? false : checkBoolean(o.amsgrad, 'amsgrad');
  return out;
}

/** `self` as an Optimizer, for a method called on it (a foreign `this` is refused with the method's name). */
function own(self: unknown, method: string): Optimizer {
  if (!(self instanceof Optimizer)) {
    throw new TypeError(`Optimizer.${method} was called on ${describe(self)}, which is not an Optimizer`);
  }
  return self;
}

const STATE_TENSORS = ['momentumBuffer', 'expAvg', 'expAvgSq', 'maxExpAvgSq'] as const;

/** What SGD, Adam and AdamW share. */
export abstract class Optimizer {
  /** @internal */
  protected readonly native: NativeOptimizer;
  /** The parameters, in the order of the state dict's entries. */
  readonly params: readonly Tensor[];
  /** @internal */
  protected abstract readonly kind: NativeOptimizerKind;

  /** @internal */
  protected constructor(kind: NativeOptimizerKind, params: Tensor[], options: NativeOptimizerSettings) {
    this.params = Object.freeze(params.slice());
    this.native = new native.OptimizerHandle(
      kind,
      params.map((p) => p.handle),
      options,
    );
  }

  /** What `console.log` shows: the kind, its hyperparameters and the parameter count. */
  [inspect.custom](): string {
    const name = { sgd: 'SGD', adam: 'Adam', adamw: 'AdamW' }[this.kind] ?? this.kind;
    const options = Object.entries(this.options).map(([k, v]) => `${k}=${Array.isArray(v) ? `[${v.join(', ')}]` : v}`);
    return `${name}(${options.join(', ')}, params=${this.params.length})`;
  }

  /** Updates every parameter from its gradient (parameters without a gradient are skipped). */
  step(): void {
    own(this, 'step').native.step();
    // LibTorch's C++ SGD leaves autograd's version count as it was (cpp/functions/autograd.cc): bumped here, a graph
    // that saved a parameter before this step fails in backward() as in PyTorch instead of giving gradients of old
    // values.
    native.markUpdatedInPlace(this.params.map((p) => p.handle));
  }

  /**
   * Clears the gradients before the next backward. `setToNone` (default true, as in PyTorch 2) drops them, so
   * `param.grad` is null; false zeroes them in place.
   */
  zeroGrad(setToNone = true): void {
    own(this, 'zeroGrad').native.zeroGrad(checkBoolean(setToNone, 'setToNone'));
  }

  /**
   * The learning rate; settable (>= 0, as PyTorch allows: a schedule may end at 0), e.g. by a scheduler from
   * `lrScheduler` between steps.
   */
  get lr(): number {
    return own(this, 'lr').native.options().lr;
  }

  set lr(value: number) {
    own(this, 'lr').native.setOptions({ lr: checkNonNegative(value, 'lr') });
  }

  /** The hyperparameters in effect. */
  get options(): Required<SGDOptions> | Required<AdamOptions> {
    return own(this, 'options').native.options();
  }

  /** A snapshot of the hyperparameters and the per-parameter state (copies), for `loadStateDict`. */
  stateDict(): OptimizerStateDict {
    const state = own(this, 'stateDict')
      .native.state()
      .map((entry) => {
        if (entry === null) return null;
        const out: ParamState = {};
        if (typeof entry.step === 'number') out.step = entry.step;
        for (const key of STATE_TENSORS)
          if (entry[key] !== undefined) out[key] = new Tensor(entry[key] as NativeHandle);
        return out;
      });
    return { kind: this.kind, options: this.options, state };
  }

  /**
   * Restores hyperparameters and state from `stateDict` (of an optimizer of the same kind over parameters of
   * the same shapes, in the same order); the next `step()` is then the one an uninterrupted run would take.
   * The tensors are copied.
   */
  loadStateDict(stateDict: OptimizerStateDict): void {
    own(this, 'loadStateDict');
    const sd = checkOptions<OptimizerStateDict>(stateDict, 'stateDict', STATE_DICT_NAMES);
    if (sd.kind !== this.kind)
      throw new TypeError(`stateDict.kind is ${describe(sd.kind)} but this optimizer is '${this.kind}'`);
    const options = this.kind === 'sgd' ? checkSGDOptions(sd.options, false) : checkAdamOptions(sd.options, false, 0);
    if (!Array.isArray(sd.state)) throw new TypeError(`stateDict.state must be an array, got ${describe(sd.state)}`);
    if (sd.state.length !== this.params.length) {
      throw new RangeError(
        `stateDict.state has ${sd.state.length} entries but this optimizer has ${this.params.length} parameters`,
      );
    }
    // amsgrad as it will be after the load: its step reads maxExpAvgSq, which LibTorch would find missing only then.
    const amsgrad = this.kind !== 'sgd' && ((options as AdamOptions).amsgrad ?? (this.options as AdamOptions).amsgrad);
    const entries = sd.state.map((entry, i) => {
      if (entry === null || entry === undefined) return null;
      const e = checkOptions<ParamState>(entry, `stateDict.state[${i}]`, PARAM_STATE_NAMES);
      const out: Record<string, NativeHandle | number> = {};
      if (this.kind !== 'sgd') {
        out.step = checkInteger(e.step, `stateDict.state[${i}].step`, 0);
        for (const key of ['expAvg', 'expAvgSq'] as const) {
          if (!isTensor(e[key]))
            throw new TypeError(`stateDict.state[${i}].${key} must be a Tensor, got ${describe(e[key])}`);
        }
        if (amsgrad && !isTensor(e.maxExpAvgSq)) {
          throw new TypeError(
            `stateDict.state[${i}].maxExpAvgSq must be a Tensor (amsgrad is on: its step needs the running maximum), got ${describe(e.maxExpAvgSq)}`,
          );
        }
      }
      for (const key of STATE_TENSORS) {
        if (e[key] === undefined) continue;
        const t = checkTensor(e[key], `stateDict.state[${i}].${key}`);
        const shape = this.params[i].shape;
        if (!sameShape(t.shape, shape)) {
          throw new RangeError(
            `stateDict.state[${i}].${key} has shape [${t.shape}] but params[${i}] has shape [${shape}]`,
          );
        }
        out[key] = t.handle;
      }
      return out;
    });
    this.native.loadState(entries);
    this.native.setOptions(options);
  }
}

/** Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay (`torch.optim.SGD`). */
export class SGD extends Optimizer {
  protected readonly kind = 'sgd' as const;

  constructor(params: Iterable<Tensor>, options: SGDOptions) {
    const checkedParams = checkParams(params);
    if (options === undefined) throw new TypeError('options must be an object with at least { lr }, got undefined');
    const o = checkSGDOptions(options, true) as Required<SGDOptions>;
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0)) {
      throw new RangeError('nesterov needs momentum > 0 and dampening 0');
    }
    super('sgd', checkedParams, { ...o });
  }
}

/** Adam (`torch.optim.Adam`): weight decay as an L2 penalty on the gradient. */
export class Adam extends Optimizer {
  protected readonly kind = 'adam' as const;

  constructor(params: Iterable<Tensor>, options?: AdamOptions) {
    const checkedParams = checkParams(params);
    super('adam', checkedParams, { ...checkAdamOptions(options, true, 0) });
  }
}

/** AdamW (`torch.optim.AdamW`): Adam with decoupled weight decay (default 1e-2). */
export class AdamW extends Optimizer {
  protected readonly kind = 'adamw' as const;

  constructor(params: Iterable<Tensor>, options?: AdamOptions) {
    const checkedParams = checkParams(params);
    super('adamw', checkedParams, { ...checkAdamOptions(options, true, 1e-2) });
  }
}
