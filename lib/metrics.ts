/**
 * Segmentation metrics computed where the tensors live: the confusion matrix from predicted and target class
 * maps, and intersection over union from it. Only the small matrix (or the IoU vector) needs to reach the host.
 */
import { INDEX_DTYPES } from './dtype';
import { stack } from './operators';
import { tidy } from './scope';
import { Tensor, checkTensor } from './tensor';
import { checkInteger, checkOptions, optionNames, sameShape } from './validate';

/** Options of `confusionMatrix`. */
export interface ConfusionMatrixOptions {
  /** Target value of pixels left out (PyTorch's `ignore_index`, e.g. 255 or -100). Default: none; every target must then be a class. */
  ignoreIndex?: number;
}

const CONFUSION_OPTIONS = optionNames<ConfusionMatrixOptions>({ ignoreIndex: true });

/**
 * The confusion matrix of `pred` against `target` (class indices of the same shape, int64/int32/uint8):
 * an int64 tensor of shape (numClasses, numClasses) on their device, rows the target class and columns the
 * predicted one, so that entry [t, p] counts the pixels of class t predicted as p. Pixels whose target is
 * `ignoreIndex` are left out. Computed on the device as `bincount(target * numClasses + pred)`; a class index
 * outside [0, numClasses) is refused with a RangeError (one scalar read back to check).
 */
export function confusionMatrix(
  pred: Tensor,
  target: Tensor,
  numClasses: number,
  options?: ConfusionMatrixOptions,
): Tensor {
  const p = checkTensor(pred, 'pred');
  const t = checkTensor(target, 'target');
  for (const [x, name] of [
    [p, 'pred'],
    [t, 'target'],
  ] as const) {
    if (!INDEX_DTYPES.includes(x.dtype)) {
      throw new TypeError(`${name} must hold class indices (int64, int32 or uint8), got ${x.dtype}`);
    }
  }
  if (!sameShape(p.sizes, t.sizes)) {
    throw new RangeError(`pred and target must have the same shape, got [${p.sizes}] and [${t.sizes}]`);
  }
  if (p.device !== t.device)
    throw new TypeError(`pred and target must be on one device, got ${p.device} and ${t.device}`);
  const n = checkInteger(numClasses, 'numClasses', 1);
  // Each pixel's (target, pred) pair becomes one bin of n * n: it must fit in int64 and in one allocation.
  if (n > 2 ** 20) throw new RangeError(`numClasses must be at most ${2 ** 20}, got ${n}`);
  const o = checkOptions<ConfusionMatrixOptions>(options, 'options', CONFUSION_OPTIONS);
  const ignoreIndex = o.ignoreIndex === undefined ? undefined : checkInteger(o.ignoreIndex, 'ignoreIndex');
  return tidy(() => {
    let truth = t.flatten().long();
    let guess = p.flatten().long();
    if (ignoreIndex !== undefined) {
      const keep = truth.ne(ignoreIndex);
      truth = truth.maskedSelect(keep);
      guess = guess.maskedSelect(keep);
    }
    // Out-of-range indices would land in another class's bin: count them (on the device) and refuse.
    const outside = (x: Tensor) =>
      x
        .clamp(0, n - 1)
        .ne(x)
        .countNonzero();
    // Both counts in one read-back (on CUDA, one synchronisation).
    const [badTargets, badPreds] = Array.from(
      stack([outside(truth), outside(guess)]).toArray() as BigInt64Array,
      Number,
    );
    if (badTargets > 0 || badPreds > 0) {
      const where = badTargets > 0 ? `target holds ${badTargets}` : `pred holds ${badPreds}`;
      throw new RangeError(
        `${where} class index(es) outside [0, ${n})` +
          (ignoreIndex === undefined ? '' : ` among the pixels whose target is not ignoreIndex (${ignoreIndex})`),
      );
    }
    // target * n + pred, in int64 (a number operand of an int64 tensor keeps it int64: see lib/operators.ts).
    const bins = truth.mul(n).add(guess);
    return bins.bincount(null, n * n).reshape([n, n]);
  });
}

function checkMatrix(cm: unknown): Tensor {
  const m = checkTensor(cm, 'cm');
  if (m.sizes.length !== 2 || m.sizes[0] !== m.sizes[1]) {
    throw new RangeError(`cm must be a square matrix (numClasses, numClasses), got shape [${m.sizes}]`);
  }
  return m;
}

/**
 * Per-class intersection over union from a confusion matrix (rows target, columns predicted, as
 * `confusionMatrix` makes): IoU[c] = cm[c, c] / (row c + column c - cm[c, c]), a float64 tensor of length
 * numClasses on the matrix's device. A class absent from both the targets and the predictions (union 0) gets NaN,
 * as 0 / 0: it has no IoU, and `meanIou` leaves it out.
 */
export function iou(cm: Tensor): Tensor {
  const m = checkMatrix(cm);
  return tidy(() => {
    const counts = m.double();
    const intersection = counts.diagonal();
    const union = counts
      .sum([1])
      .add(counts.sum([0]))
      .sub(intersection);
    return intersection.div(union);
  });
}

/** Mean IoU over the classes present (those with a non-zero union); NaN when none is. A 0-d float64 tensor. */
export function meanIou(cm: Tensor): Tensor {
  checkMatrix(cm);
  return tidy(() => {
    const perClass = iou(cm);
    return perClass.maskedSelect(perClass.eq(perClass)).mean();
  });
}
