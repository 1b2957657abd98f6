/**
 * Gradient clipping: `clipGradNorm` as PyTorch's `torch.nn.utils.clip_grad_norm_`. Runs on the gradients' device
 * (cpp/functions/clip_grad.cc): the gradients are never copied to the host.
 */
import { native } from './native';
import { Tensor, checkTensor } from './tensor';
import { checkBoolean, checkNumber, checkOptions, describe, optionNames } from './validate';

/** Options of `clipGradNorm`. */
export interface ClipGradNormOptions {
  /** Order of the norm: a number > 0, or Infinity for the largest absolute value. Default 2. */
  normType?: number;
  /**
   * Throw an Error, leaving the gradients unchanged, when the total norm is NaN or infinite (this reads the norm
   * on the host: a CUDA synchronisation). Default false: the gradients are then scaled by a NaN or 0 factor, as
   * PyTorch does.
   */
  errorIfNonfinite?: boolean;
}

const OPTIONS = optionNames<ClipGradNormOptions>({ normType: true, errorIfNonfinite: true });

/**
 * Scales the gradients of `parameters` in place so that their total norm (the norm of the per-gradient norms)
 * is at most `maxNorm`: each is multiplied by `min(1, maxNorm / (totalNorm + 1e-6))`. Parameters without a
 * gradient are skipped. Returns the total norm before clipping, a 0-dimensional Tensor on the gradients' device
 * (a float32 0 when no parameter has a gradient), as PyTorch's `clip_grad_norm_`.
 */
export function clipGradNorm(parameters: Iterable<Tensor>, maxNorm: number, options?: ClipGradNormOptions): Tensor {
  if (
    parameters === null ||
    typeof parameters !== 'object' ||
    typeof (parameters as Iterable<unknown>)[Symbol.iterator] !== 'function'
  ) {
    throw new TypeError(`parameters must be an array of Tensors, got ${describe(parameters)}`);
  }
  const params = Array.from(parameters as Iterable<unknown>).map((p, i) => checkTensor(p, `parameters[${i}]`));
  const max = checkNumber(maxNorm, 'maxNorm');
  if (!(max >= 0)) throw new RangeError(`maxNorm must be >= 0, got ${max}`);
  const o = checkOptions<ClipGradNormOptions>(options, 'options', OPTIONS);
  const normType = o.normType === undefined ? 2 : o.normType;
  if (typeof normType !== 'number') throw new TypeError(`normType must be a number, got ${describe(normType)}`);
  if (!(normType > 0)) throw new RangeError(`normType must be > 0 (or Infinity), got ${normType}`);
  const errorIfNonfinite =
    o.errorIfNonfinite === undefined ? false : checkBoolean(o.errorIfNonfinite, 'errorIfNonfinite');
  return new Tensor(
    native.clipGradNorm(
      params.map((p) => p.handle),
      max,
      normType,
      errorIfNonfinite,
    ),
  );
}
