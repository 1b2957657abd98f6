/**
 * Float32 cases the targeted suites did not reach before (found by mutation testing): label smoothing in float32
 * (which must not take the fused kernel), the fused kernel's weighted 'mean' with class-0 pixels selected, a
 * perSample 'mean' with a sample that has no valid pixel, and the fused kernel with every pixel ignored. Each
 * loss and gradient against values computed by hand in float64 JavaScript (test/helpers/reference.ts).
 */
import * as bce from '../lib';
import { mulberry32 } from './helpers/prng';
import { keepCount, pixelLosses, randomLogits, topkIndices } from './helpers/reference';

const IGNORE = 255;

/** Softmax of pixel s of sample n. */
function softmax(logits: number[][][], n: number, s: number): number[] {
  const column = logits[n].map((row) => row[s]);
  const max = Math.max(...column);
  const e = column.map((x) => Math.exp(x - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

/** Gradient of one pixel's loss: (1 - e) w_y (q - onehot_y) + (e / C) sum_j w_j (q - onehot_j). */
function pixelGradient(q: number[], y: number, w: number[], smoothing: number): number[] {
  const C = q.length;
  const wSum = w.reduce((a, b) => a + b, 0);
  return q.map((qc, c) => (1 - smoothing) * w[y] * (qc - (c === y ? 1 : 0)) + (smoothing / C) * (qc * wSum - w[c]));
}

/** Logits [n][c][s] as an (N, C, S) float32 tensor that requires grad. */
function input(logits: number[][][]): bce.Tensor {
  const N = logits.length;
  const C = logits[0].length;
  const S = logits[0][0].length;
  return bce.tensor(new Float32Array(logits.flat(2)), { shape: [N, C, S], requiresGrad: true });
}

/** The float32-rounded logits, so the hand values start from exactly what the addon sees. */
const rounded = (logits: number[][][]) => logits.map((a) => a.map((b) => b.map((x) => Math.fround(x))));

/**
 * The input gradient, (N, C, S) flattened: each selected pixel [n, s] gets its pixelGradient divided by its
 * denominator; every other element is 0.
 */
function handGradient(
  logits: number[][][],
  target: number[][],
  selected: { n: number; s: number; denominator: number }[],
  weight: number[],
  smoothing: number,
): Float64Array {
  const [N, C, S] = [logits.length, logits[0].length, logits[0][0].length];
  const grad = new Float64Array(N * C * S);
  for (const { n, s, denominator } of selected) {
    pixelGradient(softmax(logits, n, s), target[n][s], weight, smoothing).forEach(
      (g, c) => (grad[(n * C + c) * S + s] = g / denominator),
    );
  }
  return grad;
}

/** Batch-wide flat pixel indices (n * S + s) as pixels, all with one denominator. */
const pixels = (indices: number[], S: number, denominator: number) =>
  indices.map((i) => ({ n: Math.floor(i / S), s: i % S, denominator }));

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThan(tolerance);
}

test('label smoothing in float32: the reference path, the right loss and gradient; impl fused refuses it', () => {
  const random = mulberry32(11);
  const [N, C, S] = [2, 4, 50];
  const logits = rounded(randomLogits(random, N, C, S));
  const target = Array.from({ length: N }, () => Array.from({ length: S }, () => Math.floor(random() * C)));
  const e = 0.1;
  const p = 0.4;
  const losses = pixelLosses(logits, target, { labelSmoothing: e }).flat();
  const k = keepCount(p, N * S);
  const chosen = topkIndices(
    losses,
    k,
    losses.map(() => true),
  );
  const x = input(logits);
  const y = bce.tensor(new BigInt64Array(target.flat().map(BigInt)), { shape: [N, S] });
  const result = bce.bootstrappedCrossEntropyWithStats(x, y, 0, p, { labelSmoothing: e });
  expect(result.fused).toBe(false);
  expect(result.k).toBe(k);
  expect(result.loss.item()).toBeCloseTo(chosen.reduce((a, i) => a + losses[i], 0) / k, 5);
  result.loss.backward();
  const grad = handGradient(logits, target, pixels(chosen, S, k), new Array(C).fill(1), e);
  expectClose(x.grad!.toArray() as Float32Array, grad, 1e-6);
  expect(() => bce.bootstrappedCrossEntropy(x, y, 0, p, { labelSmoothing: e, impl: 'fused' })).toThrow(
    /labelSmoothing 0/,
  );
});

test("the fused kernel's weighted 'mean': divided by the selected weight sum, class 0 among the selected", () => {
  const random = mulberry32(12);
  const [N, C, S] = [2, 4, 300];
  const logits = rounded(randomLogits(random, N, C, S));
  const target = Array.from({ length: N }, () =>
    Array.from({ length: S }, () => (random() < 0.1 ? IGNORE : Math.floor(random() * C))),
  );
  // Class 0's pixels made hard, so that many are selected (a sign error in class 0's gradient must show).
  target.forEach((row, n) => row.forEach((t, s) => t === 0 && (logits[n][0][s] = Math.fround(logits[n][0][s] - 4))));
  const weight = [1.5, 0.5, 1, 3];
  const p = 0.3;
  const losses = pixelLosses(logits, target, { weight, ignoreIndex: IGNORE }).flat();
  const eligible = target.flat().map((t) => t !== IGNORE);
  const k = keepCount(p, eligible.filter(Boolean).length);
  const chosen = topkIndices(losses, k, eligible);
  const flatTarget = target.flat();
  expect(chosen.filter((i) => flatTarget[i] === 0).length).toBeGreaterThan(10);
  const weightSum = chosen.reduce((a, i) => a + weight[flatTarget[i]], 0);
  expect(Math.abs(weightSum / k - 1)).toBeGreaterThan(0.1); // so that dividing by k instead would show
  const x = input(logits);
  const y = bce.tensor(new BigInt64Array(flatTarget.map(BigInt)), { shape: [N, S] });
  const w = bce.tensor(new Float32Array(weight));
  const result = bce.bootstrappedCrossEntropyWithStats(x, y, 0, p, { weight: w, ignoreIndex: IGNORE, impl: 'fused' });
  expect(result.fused).toBe(true);
  expect(result.k).toBe(k);
  // Dividing by k instead of the weight sum would be visibly off (the selected weights average well above 1).
  expect(result.loss.item()).toBeCloseTo(chosen.reduce((a, i) => a + losses[i], 0) / weightSum, 5);
  result.loss.backward();
  const grad = handGradient(logits, target, pixels(chosen, S, weightSum), weight, 0);
  expectClose(x.grad!.toArray() as Float32Array, grad, 1e-6);
});

test("perSample 'mean' in float32 with a sample that has no valid pixel: averaged over the other samples", () => {
  const random = mulberry32(13);
  const [N, C, S] = [3, 3, 40];
  const logits = rounded(randomLogits(random, N, C, S));
  const target = Array.from({ length: N }, (_, n) =>
    Array.from({ length: S }, () => (n === 1 ? IGNORE : Math.floor(random() * C))),
  );
  const p = 0.25;
  const x = input(logits);
  const y = bce.tensor(new BigInt64Array(target.flat().map(BigInt)), { shape: [N, S] });
  const result = bce.bootstrappedCrossEntropyWithStats(x, y, 0, p, { perSample: true, ignoreIndex: IGNORE });
  const validSamples = [0, 2];
  const selected: { n: number; s: number; denominator: number }[] = [];
  let expected = 0;
  for (const n of validSamples) {
    const losses = pixelLosses([logits[n]], [target[n]], { ignoreIndex: IGNORE })[0];
    const k = keepCount(p, S);
    const chosen = topkIndices(
      losses,
      k,
      losses.map(() => true),
    );
    expected += chosen.reduce((a, s) => a + losses[s], 0) / k / validSamples.length;
    for (const s of chosen) selected.push({ n, s, denominator: k * validSamples.length });
  }
  expect(result.loss.item()).toBeCloseTo(expected, 5);
  result.loss.backward();
  expectClose(x.grad!.toArray() as Float32Array, handGradient(logits, target, selected, [1, 1, 1], 0), 1e-6);
});

test('the fused kernel with every pixel ignored: loss 0, connected to the graph, gradient all zeros', () => {
  const logits = rounded(randomLogits(mulberry32(14), 2, 3, 20));
  const x = input(logits);
  const y = bce.tensor(new BigInt64Array(40).fill(BigInt(IGNORE)), { shape: [2, 20] });
  for (const reduction of ['mean', 'sum'] as const) {
    const result = bce.bootstrappedCrossEntropyWithStats(x, y, 0, 0.5, {
      ignoreIndex: IGNORE,
      impl: 'fused',
      reduction,
    });
    expect(result.nValid).toBe(0);
    expect(result.loss.item()).toBe(0);
    expect(result.loss.requiresGrad).toBe(true);
    result.loss.backward();
    expect(Array.from(x.grad!.toArray() as Float32Array).every((g) => g === 0)).toBe(true);
  }
});

test("the fused kernel's backward scales by the upstream gradient: loss.mul(3) triples every gradient", () => {
  const random = mulberry32(15);
  const [N, C, S] = [2, 3, 40];
  const logits = rounded(randomLogits(random, N, C, S));
  const target = Array.from({ length: N }, () => Array.from({ length: S }, () => Math.floor(random() * C)));
  const p = 0.25;
  const losses = pixelLosses(logits, target).flat();
  const k = keepCount(p, N * S);
  const chosen = topkIndices(
    losses,
    k,
    losses.map(() => true),
  );
  const x = input(logits);
  const y = bce.tensor(new BigInt64Array(target.flat().map(BigInt)), { shape: [N, S] });
  const result = bce.bootstrappedCrossEntropyWithStats(x, y, 0, p, { impl: 'fused', reduction: 'sum' });
  expect(result.fused).toBe(true);
  expect(result.loss.item()).toBeCloseTo(
    chosen.reduce((a, i) => a + losses[i], 0),
    4,
  );
  result.loss.mul(3).backward();
  // 'sum': each selected pixel's gradient times the upstream 3 (a denominator of 1/3).
  const grad = handGradient(logits, target, pixels(chosen, S, 1 / 3), [1, 1, 1], 0);
  expectClose(x.grad!.toArray() as Float32Array, grad, 1e-5);
});

test('the fused histogram selection when the k-th loss ends its bucket: exactly the k hard pixels, weighted or not', () => {
  // 2^16 pixels take the histogram path; the first k = 2^14 are hard (logits [0, 5], label 0) and all fall in one
  // bucket, whose last element is then the k-th largest; the others are easy (logits [5, 0]).
  const S = 1 << 16;
  const k = 1 << 14;
  const values = new Float32Array(2 * S);
  for (let s = 0; s < S; s++) {
    values[s] = s < k ? 0 : 5;
    values[S + s] = s < k ? 5 : 0;
  }
  const y = bce.zeros([1, S], { dtype: 'int64' });
  // Weighted, every selected pixel has class 0's weight: the same mean and gradient, w / (k w) = 1 / k.
  for (const weight of [undefined, bce.tensor(new Float32Array([2, 0.5]))]) {
    const x = bce.tensor(values, { shape: [1, 2, S], requiresGrad: true });
    const result = bce.bootstrappedCrossEntropyWithStats(x, y, 0, 0.25, { impl: 'fused', weight });
    expect([result.fused, result.k]).toEqual([true, k]);
    const hard = Math.log(1 + Math.exp(5));
    expect(result.loss.item()).toBeCloseTo(hard, 4);
    result.loss.backward();
    const grad = x.grad!.toArray() as Float32Array;
    // d/dx = (softmax - onehot) / k on the hard pixels, 0 on the easy ones.
    const q1 = Math.exp(5) / (1 + Math.exp(5));
    expect(Math.abs(grad[0] + q1 / k)).toBeLessThan(1e-9);
    expect(Math.abs(grad[S + k - 1] - q1 / k)).toBeLessThan(1e-9);
    expect(grad.subarray(k, S).every((g) => g === 0) && grad.subarray(S + k, 2 * S).every((g) => g === 0)).toBe(true);
  }
});
