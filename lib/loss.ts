/**
 * The functional API: bootstrapped cross-entropy (multi-class and binary) and plain cross-entropy.
 * Data path: argument checks here, one native call (cpp/functions/losses.cc), LibTorch (cpp/loss/).
 */
import { DType, INDEX_DTYPES, isFloating } from './dtype';
import { ProcessGroup, groupOrDefault } from './distributed';
import { native, NativeHandle, NativeLossResult, NativeReduction } from './native';
import { Warmup, effectiveP } from './schedules';
import { Tensor, checkTensor, isTensor } from './tensor';
import {
  checkBoolean,
  checkInteger,
  checkNumber,
  checkOneOf,
  checkOptions,
  describe,
  optionNames,
  sameShape,
} from './validate';

/** How the selected losses are reduced: a name, or a function of the 1-D tensor of selected losses. */
export type Reduction = 'mean' | 'sum' | 'none' | ((selected: Tensor) => Tensor);

/** Which implementation computes the loss. 'auto' picks the fused CPU kernel where it applies. */
export type Impl = 'auto' | 'fused' | 'reference';

/** Options of `crossEntropy` (PyTorch's `F.cross_entropy`). */
export interface CrossEntropyOptions {
  /** Class weights, a 1-D tensor of length C with the input's dtype and device. */
  weight?: Tensor;
  /** Targets equal to this are ignored (class-index targets only). Default -100, as in PyTorch. */
  ignoreIndex?: number;
  /** Label smoothing in [0, 1], PyTorch's semantics. Default 0. */
  labelSmoothing?: number;
  /** 'mean' (default), 'sum' or 'none'. */
  reduction?: 'mean' | 'sum' | 'none';
}

const COMMON_OPTIONS = {
  warmup: true,
  reduction: true,
  perSample: true,
  checkFinite: true,
  scope: true,
  group: true,
} as const;
/** The option names of each loss: anything else is refused (validate.ts, checkOptions). */
const CROSS_ENTROPY_OPTIONS = optionNames<CrossEntropyOptions>({
  weight: true,
  ignoreIndex: true,
  labelSmoothing: true,
  reduction: true,
});
export const BOOTSTRAPPED_CROSS_ENTROPY_OPTIONS = optionNames<BootstrappedCrossEntropyOptions>({
  ...COMMON_OPTIONS,
  weight: true,
  ignoreIndex: true,
  labelSmoothing: true,
  impl: true,
});
// posWeight is known to both binary forms, so that the one without logits can say it applies to the other only.
const BOOTSTRAPPED_BINARY_OPTIONS = optionNames<BootstrappedBinaryWithLogitsOptions>({
  ...COMMON_OPTIONS,
  weight: true,
  posWeight: true,
});

/** Options of the bootstrapped losses' common part. */
export interface BootstrappedCommonOptions {
  /** Warm-up: p = 1 before it ends. A number of iterations, a function (p, iteration) => p, or a schedule. */
  warmup?: Warmup;
  /**
   * 'mean' (default): sum of the selected losses / sum of their class weights (k when unweighted).
   * 'sum'; 'none': shaped like the target, unselected and ignored elements 0; or a function receiving the
   * 1-D tensor of selected losses and returning a Tensor.
   */
  reduction?: Reduction;
  /** Select the hardest p within each sample (then average over samples) instead of over the whole batch. */
  perSample?: boolean;
  /** Throw a RangeError when the loss is not finite (reads the loss back to the host). Default false. */
  checkFinite?: boolean;
  /**
   * Which batch the hardest p is taken from. 'process' (default): this process's batch. 'global': every rank's
   * batch together (distributed training): the selected set is one process's top-k on the ranks' batches
   * concatenated in rank order, ties taken in (rank, element index) order; 'mean' and 'sum' are scaled so that
   * their average over the ranks (what gradient averaging does) is that single-process loss. Blocks until every
   * rank of the group makes the same call. Not with perSample; never the fused kernel.
   */
  scope?: Scope;
  /** The process group of scope 'global'. Default: the one `distributed.initProcessGroup` made. */
  group?: ProcessGroup;
}

/** Where the selection happens: this process's batch, or every rank's (distributed training). */
export type Scope = 'process' | 'global';

/** Options of `bootstrappedCrossEntropy`. */
export interface BootstrappedCrossEntropyOptions extends BootstrappedCommonOptions {
  /** Class weights, a 1-D tensor of length C with the input's dtype and device. */
  weight?: Tensor;
  /** Targets equal to this are left out of the pool. Default -100, as in PyTorch. */
  ignoreIndex?: number;
  /** Label smoothing in [0, 1], PyTorch's semantics. Default 0. */
  labelSmoothing?: number;
  /** 'auto' (default), 'fused' (CPU float32 class-index targets, batch scope, 'mean'/'sum') or 'reference'. */
  impl?: Impl;
}

/** Options of `bootstrappedBinaryCrossEntropy`. */
export interface BootstrappedBinaryOptions extends BootstrappedCommonOptions {
  /** Per-element weights, broadcastable to the input. */
  weight?: Tensor;
}

/** Options of `bootstrappedBinaryCrossEntropyWithLogits`. */
export interface BootstrappedBinaryWithLogitsOptions extends BootstrappedBinaryOptions {
  /** Weight of positive examples, broadcastable to the input (PyTorch's pos_weight). */
  posWeight?: Tensor;
}

/** The loss with what produced it. */
export interface BootstrappedResult {
  loss: Tensor;
  /** The effective fraction kept at this iteration. */
  p: number;
  /** Elements selected (summed over samples with perSample). */
  k: number;
  /** Elements in the pool (targets other than ignoreIndex). */
  nValid: number;
  /** Whether the fused CPU kernel computed it. */
  fused: boolean;
  /** Scope 'global' only: what the selection exchanged with the other ranks in this call. */
  communication?: {
    /** Bytes this rank contributed to the all-reduces. */
    bytes: number;
    /** All-reduce calls. */
    rounds: number;
  };
}

const REDUCTIONS = ['mean', 'sum', 'none'] as const;

function checkReduction(value: unknown): Reduction {
  if (value === undefined) return 'mean';
  if (typeof value === 'function') return value as Reduction;
  return checkOneOf(value, 'reduction', REDUCTIONS);
}

// Stryker disable all: telling devices apart needs a second device; test/cuda.test.ts covers this on a GPU machine.
function checkSameDevice(tensor: Tensor, input: Tensor, name: string): void {
  if (tensor.device !== input.device) {
    throw new TypeError(`${name} is on ${tensor.device} but input is on ${input.device}; move them to one device`);
  }
}
// Stryker restore all

function checkFloatingInput(input: Tensor, minDims: number): void {
  if (!isFloating(input.dtype)) throw new TypeError(`input must be a floating-point tensor, got ${input.dtype}`);
  if (input.sizes.length < minDims) {
    throw new RangeError(
      minDims === 2
        ? `input must have shape (N, C) or (N, C, d1, ...), got [${input.shape}]`
        : `input must have at least ${minDims} dimension(s), got [${input.shape}]`,
    );
  }
}

/** Checks input, target and the cross-entropy options shared by the bootstrapped and plain versions. */
function checkCrossEntropyArgs(
  input: unknown,
  target: unknown,
  o: Partial<BootstrappedCrossEntropyOptions>,
): { input: Tensor; target: Tensor; native: { weight?: NativeHandle; ignoreIndex: number; labelSmoothing: number } } {
  const x = checkTensor(input, 'input');
  const t = checkTensor(target, 'target');
  checkFloatingInput(x, 2);
  // Stryker disable next-line StringLiteral: the name shows only with a second device (test/cuda.test.ts).
  checkSameDevice(t, x, 'target');
  const shape = x.sizes;
  if (isFloating(t.dtype)) {
    if (t.dtype !== x.dtype)
      throw new TypeError(`probability target must have the input's dtype ${x.dtype}, got ${t.dtype}`);
    if (!sameShape(t.sizes, shape)) {
      throw new RangeError(`probability target must have the input's shape [${shape}], got [${t.shape}]`);
    }
  } else {
    if (!INDEX_DTYPES.includes(t.dtype)) {
      throw new TypeError(`target must hold class indices (int64, int32 or uint8) or probabilities, got ${t.dtype}`);
    }
    const expected = [shape[0], ...shape.slice(2)];
    if (!sameShape(t.sizes, expected)) {
      throw new RangeError(`target must have shape [${expected}] for input of shape [${shape}], got [${t.shape}]`);
    }
  }
  const ignoreIndex = o.ignoreIndex === undefined ? -100 : checkInteger(o.ignoreIndex, 'ignoreIndex');
  const labelSmoothing = o.labelSmoothing === undefined ? 0 : checkNumber(o.labelSmoothing, 'labelSmoothing');
  if (labelSmoothing < 0 || labelSmoothing > 1)
    throw new RangeError(`labelSmoothing must be in [0, 1], got ${labelSmoothing}`);
  let weight;
  if (o.weight !== undefined) {
    const w = checkTensor(o.weight, 'weight');
    if (w.sizes.length !== 1 || w.sizes[0] !== shape[1]) {
      throw new RangeError(`weight must be a 1-D tensor of length C = ${shape[1]}, got shape [${w.shape}]`);
    }
    if (w.dtype !== x.dtype) throw new TypeError(`weight must have the input's dtype ${x.dtype}, got ${w.dtype}`);
    // Stryker disable next-line StringLiteral: the name shows only with a second device (test/cuda.test.ts).
    checkSameDevice(w, x, 'weight');
    weight = w.handle;
  }
  return { input: x, target: t, native: { weight, ignoreIndex, labelSmoothing } };
}

function checkIteration(iteration: unknown): number {
  return checkInteger(iteration, 'iteration', 0);
}

// The native losses write [k, nValid, fused] here (one array per module instance, so per thread); it is read
// right after each call, before anything else can run.
const stats = new Float64Array(5);

function withStats(loss: NativeHandle): NativeLossResult {
  return { loss, k: stats[0], nValid: stats[1], fused: stats[2] === 1 };
}

/** withStats for the global losses, which also write [bytes, rounds]. */
function withCommunication(
  loss: NativeHandle,
): NativeLossResult & { communication: { bytes: number; rounds: number } } {
  return { ...withStats(loss), communication: { bytes: stats[3], rounds: stats[4] } };
}

/** Runs the native loss; applies a function reduction and checkFinite. */
function finish(
  run: (reduction: NativeReduction) => NativeLossResult & { communication?: { bytes: number; rounds: number } },
  reduction: Reduction,
  p: number,
  checkFinite: boolean,
): BootstrappedResult {
  const result = run(typeof reduction === 'function' ? 'selected' : reduction);
  let loss = new Tensor(result.loss);
  if (typeof reduction === 'function' && result.k > 0) {
    const selected = loss;
    let reduced: unknown;
    try {
      reduced = reduction(selected);
    } finally {
      // The reduced loss keeps what it needs through the autograd graph; the handle itself is ours to free.
      if (reduced !== selected) selected.dispose();
    }
    if (!isTensor(reduced)) throw new TypeError(`reduction must return a Tensor, got ${describe(reduced)}`);
    loss = reduced;
  }
  if (checkFinite) {
    const total = finiteCheckValue(loss);
    if (!Number.isFinite(total)) {
      loss.dispose();
      throw new RangeError(`the loss is not finite (${total}); checkFinite is on`);
    }
  }
  const out: BootstrappedResult = { loss, p, k: result.k, nValid: result.nValid, fused: result.fused };
  if (result.communication !== undefined) out.communication = result.communication;
  return out;
}

/** One number that is finite exactly when every element of `loss` is (NaN and Inf survive a sum). */
function finiteCheckValue(loss: Tensor): number {
  // Stryker disable next-line ConditionalExpression: equivalent, a shortcut: the sum of one element is that element.
  if (loss.numel === 1) return loss.item();
  const detached = loss.detach();
  const sum = detached.sum();
  const value = sum.item();
  sum.dispose();
  detached.dispose();
  return value;
}

function commonOptions(o: Partial<BootstrappedCommonOptions>): {
  reduction: Reduction;
  perSample: boolean;
  checkFinite: boolean;
  group: ProcessGroup | undefined;
} {
  const perSample = o.perSample === undefined ? false : checkBoolean(o.perSample, 'perSample');
  const scope = o.scope === undefined ? 'process' : checkOneOf(o.scope, 'scope', ['process', 'global'] as const);
  if (scope === 'process' && o.group !== undefined) throw new TypeError("group applies to scope 'global' only");
  if (scope === 'global' && perSample) {
    throw new TypeError("scope 'global' selects over the whole batch; perSample already selects within each sample");
  }
  return {
    reduction: checkReduction(o.reduction),
    perSample,
    checkFinite: o.checkFinite === undefined ? false : checkBoolean(o.checkFinite, 'checkFinite'),
    group: scope === 'global' ? groupOrDefault(o.group) : undefined,
  };
}

/**
 * Bootstrapped cross-entropy with its diagnostics: the loss, the effective p, k and the pool size.
 * See `bootstrappedCrossEntropy`.
 */
export function bootstrappedCrossEntropyWithStats(
  input: Tensor,
  target: Tensor,
  iteration: number,
  p: number,
  options?: BootstrappedCrossEntropyOptions,
): BootstrappedResult {
  const o = checkOptions<BootstrappedCrossEntropyOptions>(options, 'options', BOOTSTRAPPED_CROSS_ENTROPY_OPTIONS);
  const args = checkCrossEntropyArgs(input, target, o);
  const { reduction, perSample, checkFinite, group } = commonOptions(o);
  const impl = o.impl === undefined ? 'auto' : checkOneOf(o.impl, 'impl', ['auto', 'fused', 'reference'] as const);
  if (group !== undefined && impl === 'fused')
    throw new TypeError("impl 'fused' selects within one process: not with scope 'global'");
  const thisP = effectiveP(p, checkIteration(iteration), o.warmup);
  if (group !== undefined) {
    return finish(
      (nativeReduction) =>
        withCommunication(
          native.globalBootstrappedCrossEntropy(
            group.live(),
            args.input.handle,
            args.target.handle,
            args.native.weight,
            thisP,
            args.native.ignoreIndex,
            args.native.labelSmoothing,
            nativeReduction,
            stats,
          ),
        ),
      reduction,
      thisP,
      checkFinite,
    );
  }
  return finish(
    (nativeReduction) =>
      withStats(
        native.bootstrappedCrossEntropy(
          args.input.handle,
          args.target.handle,
          args.native.weight,
          thisP,
          args.native.ignoreIndex,
          args.native.labelSmoothing,
          nativeReduction,
          perSample,
          impl,
          stats,
        ),
      ),
    reduction,
    thisP,
    checkFinite,
  );
}

/**
 * Bootstrapped cross-entropy: the mean (by default) cross-entropy of the hardest `p` fraction of valid
 * pixels, after an optional warm-up during which p = 1.
 *
 * @param input logits (N, C) or (N, C, d1, ...), floating point
 * @param target class indices (N) or (N, d1, ...) (int64, int32 or uint8), or class probabilities shaped like input
 * @param iteration the training iteration (a non-negative integer), for the warm-up
 * @param p the fraction of the pool to keep after warm-up, in (0, 1]
 */
export function bootstrappedCrossEntropy(
  input: Tensor,
  target: Tensor,
  iteration: number,
  p: number,
  options?: BootstrappedCrossEntropyOptions,
): Tensor {
  return bootstrappedCrossEntropyWithStats(input, target, iteration, p, options).loss;
}

function binary(
  input: unknown,
  target: unknown,
  iteration: unknown,
  p: number,
  options: unknown,
  withLogits: boolean,
): BootstrappedResult {
  const o = checkOptions<BootstrappedBinaryWithLogitsOptions>(options, 'options', BOOTSTRAPPED_BINARY_OPTIONS);
  const x = checkTensor(input, 'input');
  const t = checkTensor(target, 'target');
  checkFloatingInput(x, 1);
  // Stryker disable next-line StringLiteral: the name shows only with a second device (test/cuda.test.ts).
  checkSameDevice(t, x, 'target');
  if (t.dtype !== x.dtype) throw new TypeError(`target must have the input's dtype ${x.dtype}, got ${t.dtype}`);
  if (!sameShape(t.sizes, x.sizes))
    throw new RangeError(`target must have the input's shape [${x.shape}], got [${t.shape}]`);
  const extra = (name: 'weight' | 'posWeight') => {
    if (o[name] === undefined) return undefined;
    const w = checkTensor(o[name], name);
    if (!isFloating(w.dtype)) throw new TypeError(`${name} must be a floating-point tensor, got ${w.dtype}`);
    checkSameDevice(w, x, name);
    return w.handle;
  };
  const weight = extra('weight');
  if (!withLogits && o.posWeight !== undefined) {
    throw new TypeError('posWeight applies to bootstrappedBinaryCrossEntropyWithLogits only');
  }
  const posWeight = withLogits ? extra('posWeight') : undefined;
  const { reduction, perSample, checkFinite, group } = commonOptions(o);
  const thisP = effectiveP(p, checkIteration(iteration), o.warmup);
  if (group !== undefined) {
    return finish(
      (nativeReduction) =>
        withCommunication(
          native.globalBootstrappedBinaryCrossEntropy(
            group.live(),
            x.handle,
            t.handle,
            weight,
            posWeight,
            thisP,
            nativeReduction,
            withLogits,
            stats,
          ),
        ),
      reduction,
      thisP,
      checkFinite,
    );
  }
  return finish(
    (nativeReduction) =>
      withStats(
        native.bootstrappedBinaryCrossEntropy(
          x.handle,
          t.handle,
          weight,
          posWeight,
          thisP,
          nativeReduction,
          perSample,
          withLogits,
          stats,
        ),
      ),
    reduction,
    thisP,
    checkFinite,
  );
}

/** Bootstrapped binary cross-entropy on probabilities (PyTorch's `F.binary_cross_entropy`), with diagnostics. */
export function bootstrappedBinaryCrossEntropyWithStats(
  input: Tensor,
  target: Tensor,
  iteration: number,
  p: number,
  options?: BootstrappedBinaryOptions,
): BootstrappedResult {
  return binary(input, target, iteration, p, options, false);
}

/**
 * Bootstrapped binary cross-entropy on probabilities in [0, 1] (PyTorch's `F.binary_cross_entropy(mask, gt)`):
 * the pool is every element; 'mean' divides by k.
 */
export function bootstrappedBinaryCrossEntropy(
  input: Tensor,
  target: Tensor,
  iteration: number,
  p: number,
  options?: BootstrappedBinaryOptions,
): Tensor {
  return binary(input, target, iteration, p, options, false).loss;
}

/** Bootstrapped binary cross-entropy on logits (`F.binary_cross_entropy_with_logits`), with diagnostics. */
export function bootstrappedBinaryCrossEntropyWithLogitsStats(
  input: Tensor,
  target: Tensor,
  iteration: number,
  p: number,
  options?: BootstrappedBinaryWithLogitsOptions,
): BootstrappedResult {
  return binary(input, target, iteration, p, options, true);
}

/** Bootstrapped binary cross-entropy on logits (PyTorch's `F.binary_cross_entropy_with_logits`, with posWeight). */
export function bootstrappedBinaryCrossEntropyWithLogits(
  input: Tensor,
  target: Tensor,
  iteration: number,
  p: number,
  options?: BootstrappedBinaryWithLogitsOptions,
): Tensor {
  return binary(input, target, iteration, p, options, true).loss;
}

/** Plain cross-entropy, exactly PyTorch's `F.cross_entropy` with the same options. */
export function crossEntropy(input: Tensor, target: Tensor, options?: CrossEntropyOptions): Tensor {
  const o = checkOptions<CrossEntropyOptions>(options, 'options', CROSS_ENTROPY_OPTIONS);
  const args = checkCrossEntropyArgs(input, target, o);
  const reduction = o.reduction === undefined ? 'mean' : checkOneOf(o.reduction, 'reduction', REDUCTIONS);
  return new Tensor(
    native.crossEntropy(
      args.input.handle,
      args.target.handle,
      args.native.weight,
      args.native.ignoreIndex,
      args.native.labelSmoothing,
      reduction,
    ),
  );
}

export type { DType };
