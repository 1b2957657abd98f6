/**
 * NaN and Infinity in the logits behave as in PyTorch: they propagate into the loss (a NaN or infinite per-pixel
 * loss is the largest there is, so the hardest-k selection always keeps it), they stay out of the loss when the
 * pixel is ignored, and `checkFinite: true` turns a non-finite loss into a RangeError. docs/errors.md describes
 * the same rules.
 */
import {
  Tensor,
  bootstrappedBinaryCrossEntropyWithLogits,
  bootstrappedCrossEntropy,
  bootstrappedCrossEntropyWithStats,
  crossEntropy,
  memory,
  tensor,
  tidy,
} from '../lib';

const IMPLS = ['reference', 'fused', 'auto'] as const;

/** Cross-entropy of one pixel by hand: logsumexp(logits) - logits[target]. */
function ce(logits: number[], target: number): number {
  const m = Math.max(...logits);
  return m + Math.log(logits.reduce((s, v) => s + Math.exp(v - m), 0)) - logits[target];
}

/** (N, C) logits and class targets. */
function batch(logits: number[][], targets: number[]): { input: Tensor; target: Tensor } {
  return {
    input: tensor(logits, { requiresGrad: true }),
    target: tensor(BigInt64Array.from(targets.map(BigInt)), { shape: [targets.length] }),
  };
}

const FINITE = [
  [2, 0, -1],
  [0.5, 0.5, 0],
  [-1, 3, 0],
  [0, 0, 0],
];
const TARGETS = [0, 1, 2, 1];

function withRow(row: number, values: number[]): number[][] {
  return FINITE.map((r, i) => (i === row ? values : r.slice()));
}

let baseline = 0;
beforeAll(() => {
  baseline = memory().tensors;
});
afterEach(() => {
  expect(memory().tensors).toBe(baseline);
});

describe.each(IMPLS)('impl %s', (impl) => {
  const loss = (logits: number[][], targets: number[], p: number, extra: object = {}): number =>
    tidy(() => {
      const { input, target } = batch(logits, targets);
      return bootstrappedCrossEntropy(input, target, 0, p, { impl, ...extra }).item();
    });

  it('finite logits: the mean of the hardest k by hand', () => {
    const losses = FINITE.map((r, i) => ce(r, TARGETS[i])).sort((a, b) => b - a);
    expect(loss(FINITE, TARGETS, 0.5)).toBeCloseTo((losses[0] + losses[1]) / 2, 5);
  });

  it('NaN in a pixel makes the loss NaN, whatever p (a NaN loss is always selected)', () => {
    // Pixel 3 has the smallest finite loss, so a finite-only selection at p = 0.25 would never pick it.
    const logits = withRow(3, [0, NaN, 0]);
    expect(loss(logits, TARGETS, 1)).toBeNaN();
    expect(loss(logits, TARGETS, 0.25)).toBeNaN();
  });

  it('NaN in an ignored pixel stays out of the loss', () => {
    const logits = withRow(3, [NaN, NaN, NaN]);
    const targets = [0, 1, 2, -100];
    const losses = [0, 1, 2].map((i) => ce(FINITE[i], targets[i])).sort((a, b) => b - a);
    // pool of 3, p = 2/3 -> k = 2
    expect(loss(logits, targets, 2 / 3)).toBeCloseTo((losses[0] + losses[1]) / 2, 5);
  });

  it('+Infinity in any logit of a pixel gives NaN (log_softmax subtracts the max: inf - inf), as in PyTorch', () => {
    expect(loss(withRow(1, [Infinity, 0.5, 0]), TARGETS, 0.25)).toBeNaN();
    expect(loss(withRow(0, [Infinity, 0, -1]), TARGETS, 1)).toBeNaN();
  });

  it('-Infinity in a non-target logit is harmless: exp(-inf) = 0', () => {
    const logits = withRow(0, [2, -Infinity, -1]);
    const losses = logits.map((r, i) => ce(r, TARGETS[i]));
    expect(loss(logits, TARGETS, 1)).toBeCloseTo(losses.reduce((a, b) => a + b) / 4, 5);
  });

  it('-Infinity in the target logit gives an infinite loss', () => {
    expect(loss(withRow(2, [-1, 3, -Infinity]), TARGETS, 0.25)).toBe(Infinity);
  });

  it('checkFinite: true throws a RangeError for NaN and for Infinity, not for finite losses', () => {
    const attempt = (logits: number[][]): unknown => {
      try {
        loss(logits, TARGETS, 0.5, { checkFinite: true });
        return undefined;
      } catch (error) {
        return error;
      }
    };
    expect(attempt(FINITE)).toBeUndefined();
    const nan = attempt(withRow(3, [0, NaN, 0])) as Error;
    expect({ name: nan?.name, message: nan?.message }).toEqual({
      name: 'RangeError',
      message: 'the loss is not finite (NaN); checkFinite is on',
    });
    const inf = attempt(withRow(2, [-1, 3, -Infinity])) as Error;
    expect({ name: inf?.name, message: inf?.message }).toEqual({
      name: 'RangeError',
      message: 'the loss is not finite (Infinity); checkFinite is on',
    });
  });
});

describe('other paths', () => {
  it("reduction 'none' keeps the NaN in its pixel only; checkFinite sums it", () => {
    tidy(() => {
      const { input, target } = batch(withRow(2, [NaN, 0, 0]), TARGETS);
      const perPixel = Array.from(
        bootstrappedCrossEntropy(input, target, 0, 1, { reduction: 'none' }).toArray() as Float32Array,
      );
      expect(perPixel[2]).toBeNaN();
      [0, 1, 3].forEach((i) => expect(perPixel[i]).toBeCloseTo(ce(FINITE[i], TARGETS[i]), 5));
      expect(() => bootstrappedCrossEntropy(input, target, 0, 1, { reduction: 'none', checkFinite: true })).toThrow(
        'the loss is not finite (NaN); checkFinite is on',
      );
    });
  });

  it('a function reduction sees the NaN among the selected losses', () => {
    tidy(() => {
      const { input, target } = batch(withRow(3, [0, NaN, 0]), TARGETS);
      let seen: number[] = [];
      const result = bootstrappedCrossEntropyWithStats(input, target, 0, 0.25, {
        reduction: (selected) => {
          seen = Array.from(selected.toArray() as Float32Array);
          return selected.sum();
        },
      });
      expect(result.k).toBe(1);
      expect(seen).toHaveLength(1);
      expect(seen[0]).toBeNaN();
      expect(result.loss.item()).toBeNaN();
    });
  });

  it('NaN reaches the gradient of the NaN pixel, as in PyTorch', () => {
    tidy(() => {
      const { input, target } = batch(withRow(1, [NaN, 0, 0]), TARGETS);
      bootstrappedCrossEntropy(input, target, 0, 1).backward();
      const grad = Array.from(input.grad!.toArray() as Float32Array);
      expect(grad.slice(3, 6).every(Number.isNaN)).toBe(true);
      expect(grad.slice(0, 3).every(Number.isFinite)).toBe(true);
    });
  });

  it('crossEntropy (p = 1, PyTorch F.cross_entropy) propagates NaN too', () => {
    tidy(() => {
      const { input, target } = batch(withRow(0, [NaN, 0, 0]), TARGETS);
      expect(crossEntropy(input, target).item()).toBeNaN();
    });
  });

  it('binary with logits: NaN propagates; +Infinity gives NaN even with target 1, as LibTorch 1.13 does', () => {
    tidy(() => {
      const target = tensor([1, 0, 1, 0]);
      const nan = bootstrappedBinaryCrossEntropyWithLogits(tensor([0.5, NaN, -1, 2]), target, 0, 0.25);
      expect(nan.item()).toBeNaN();
      // LibTorch 1.13 computes (1 - t) * x + max(-x, 0) + log(exp(-max) + exp(-x - max)): 0 * inf = NaN for
      // x = +inf, t = 1, although the mathematical limit is 0. -inf with t = 0 likewise.
      const inf = bootstrappedBinaryCrossEntropyWithLogits(tensor([Infinity, -Infinity, 1, 0]), target, 0, 1, {
        reduction: 'none',
      });
      const values = Array.from(inf.toArray() as Float32Array);
      expect(values[0]).toBeNaN();
      expect(Number.isFinite(values[2]) && Number.isFinite(values[3])).toBe(true);
      expect(() =>
        bootstrappedBinaryCrossEntropyWithLogits(tensor([0.5, NaN, -1, 2]), target, 0, 0.25, { checkFinite: true }),
      ).toThrow('the loss is not finite (NaN); checkFinite is on');
    });
  });
});
