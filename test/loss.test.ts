/**
 * Each semantic rule of the loss against values computed independently in JavaScript (test/helpers/reference.ts),
 * in float64 so that agreement is to ~1e-12.
 */
import * as bce from '../lib';
import { mulberry32 } from './helpers/prng';
import { keepCount, maxAbsDiff, pixelLosses, randomLogits, topkIndices, logSoftmax } from './helpers/reference';

const TOL = 1e-12;

/** Builds (N, C, S) float64 logits and (N, S) int64 targets as tensors. */
function make(logits: number[][][], target: number[][], requiresGrad = true) {
  const N = logits.length;
  const C = logits[0].length;
  const S = logits[0][0].length;
  const input = bce.tensor(logits.flat(2), { shape: [N, C, S], dtype: 'float64', requiresGrad });
  const t = bce.tensor(target.flat(), { shape: [N, S], dtype: 'int64' });
  return { input, target: t, N, C, S };
}

function randomTarget(random: () => number, N: number, S: number, C: number, ignoredFraction = 0, ignoreIndex = -100) {
  return Array.from({ length: N }, () =>
    Array.from({ length: S }, () => (random() < ignoredFraction ? ignoreIndex : Math.floor(random() * C))),
  );
}

/** Expected batch-scope result: selection over valid pixels, weighted mean. */
function expectedBatch(losses: number[][], target: number[][], p: number, weight?: number[], ignoreIndex = -100) {
  const flat = losses.flat();
  const labels = target.flat();
  const valid = labels.map((y) => y !== ignoreIndex);
  const n = valid.filter(Boolean).length;
  const k = keepCount(p, n);
  const chosen = topkIndices(flat, k, valid);
  const sum = chosen.reduce((acc, i) => acc + flat[i], 0);
  const denominator = weight ? chosen.reduce((acc, i) => acc + weight[labels[i]], 0) : k;
  return { k, n, chosen, sum, mean: k === 0 ? 0 : sum / denominator };
}

describe('pool and k (rules 1-2)', () => {
  test('ignored pixels stay out of the pool and the count', () => {
    const random = mulberry32(1);
    const logits = randomLogits(random, 2, 4, 10);
    const target = randomTarget(random, 2, 10, 4, 0.3);
    const { input, target: t } = make(logits, target);
    const result = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.3);
    const expected = expectedBatch(pixelLosses(logits, target), target, 0.3);
    expect(result.nValid).toBe(expected.n);
    expect(result.k).toBe(expected.k);
    expect(result.p).toBe(0.3);
    expect(Math.abs(result.loss.item() - expected.mean)).toBeLessThan(TOL);
  });

  test('k is at least 1 when p * nValid < 1', () => {
    const logits = randomLogits(mulberry32(2), 1, 3, 5);
    const target = [[0, 1, 2, 1, 0]];
    const { input, target: t } = make(logits, target);
    const result = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.01);
    expect(result.k).toBe(1);
    const losses = pixelLosses(logits, target)[0];
    expect(Math.abs(result.loss.item() - Math.max(...losses))).toBeLessThan(TOL);
  });

  test('float error does not drop a pixel: p = 0.29 of 100 keeps 29 (Python int() gives 28)', () => {
    const random = mulberry32(3);
    const logits = randomLogits(random, 1, 2, 100);
    const target = randomTarget(random, 1, 100, 2);
    const { input, target: t } = make(logits, target);
    // Why 0.29 (a JavaScript fact, not a check of the addon): truncating 0.29 * 100 gives 28.
    expect(Math.trunc(0.29 * 100)).toBe(28);
    expect(bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.29).k).toBe(29);
    expect(bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.57).k).toBe(57);
    expect(bce.bootstrappedCrossEntropyWithStats(input, t, 0, 1).k).toBe(100);
  });

  test('exactly k elements under ties (never a >= threshold)', () => {
    // Every pixel has the same loss: a threshold would keep all 8.
    const logits = [
      [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
      ],
    ];
    const target = [[0, 0, 0, 0, 0, 0, 0, 0]];
    const { input, target: t } = make(logits, target);
    const result = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.25, { reduction: 'none' });
    expect(result.k).toBe(2);
    const values = Array.from(result.loss.toArray() as Float64Array);
    expect(values.filter((v) => v !== 0)).toHaveLength(2);
    expect(
      Math.abs(bce.bootstrappedCrossEntropy(input, t, 0, 0.25, { reduction: 'sum' }).item() - 2 * Math.log(1 + Math.E)),
    ).toBeLessThan(TOL);
  });

  test('under ties the clearly hardest pixel is selected, and forward and backward select the same pixels', () => {
    // Pixel 5 is the hardest, log(1 + e^2); the other seven tie at log(1 + e). k = 2: pixel 5 and one of the
    // tied (which one is topk's choice, not pinned here), each with its own value and gradient.
    const logits = [
      [
        [0, 0, 0, 0, 0, -1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
      ],
    ];
    const target = [[0, 0, 0, 0, 0, 0, 0, 0]];
    const { input, target: t } = make(logits, target);
    const values = Array.from(
      bce.bootstrappedCrossEntropy(input, t, 0, 0.25, { reduction: 'none' }).toArray() as Float64Array,
    );
    const selected = values.flatMap((v, s) => (v !== 0 ? [s] : []));
    expect(selected).toHaveLength(2);
    expect(selected).toContain(5);
    const tied = selected.find((s) => s !== 5)!;
    expect(Math.abs(values[5] - Math.log(1 + Math.exp(2)))).toBeLessThan(TOL);
    expect(Math.abs(values[tied] - Math.log(1 + Math.E))).toBeLessThan(TOL);
    // 'mean' over k = 2: d/dx_c = (softmax_c - onehot_c) / 2 at the selected pixels, 0 elsewhere.
    bce.bootstrappedCrossEntropy(input, t, 0, 0.25).backward();
    const grad = Array.from(input.grad!.toArray() as Float64Array);
    const q1 = (s: number) => Math.exp(1) / (Math.exp(logits[0][0][s]) + Math.exp(1));
    const expected = new Array(16).fill(0);
    for (const s of selected) {
      expected[s] = -q1(s) / 2;
      expected[8 + s] = q1(s) / 2;
    }
    expect(maxAbsDiff(grad, expected)).toBeLessThan(TOL);
  });
});

describe('reductions (rule 3)', () => {
  const random = mulberry32(4);
  const logits = randomLogits(random, 2, 5, 12);
  const target = randomTarget(random, 2, 12, 5, 0.25);
  const weight = [0.5, 2, 1, 3, 0.25];

  test('weighted mean divides by the selected class weights', () => {
    const { input, target: t } = make(logits, target);
    const w = bce.tensor(weight, { dtype: 'float64' });
    const expected = expectedBatch(pixelLosses(logits, target, { weight }), target, 0.4, weight);
    const result = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.4, { weight: w });
    expect(result.k).toBe(expected.k);
    expect(Math.abs(result.loss.item() - expected.mean)).toBeLessThan(TOL);
  });

  test("'sum', 'none' and a function reduction", () => {
    const { input, target: t } = make(logits, target);
    const losses = pixelLosses(logits, target);
    const expected = expectedBatch(losses, target, 0.4);
    expect(
      Math.abs(bce.bootstrappedCrossEntropy(input, t, 0, 0.4, { reduction: 'sum' }).item() - expected.sum),
    ).toBeLessThan(TOL);

    const none = bce.bootstrappedCrossEntropy(input, t, 0, 0.4, { reduction: 'none' });
    expect(none.shape).toEqual([2, 12]);
    const flat = losses.flat();
    const chosen = new Set(expected.chosen);
    const expectedNone = flat.map((v, i) => (chosen.has(i) ? v : 0));
    expect(maxAbsDiff(none.toArray() as Float64Array, expectedNone)).toBeLessThan(TOL);

    let received: bce.Tensor | undefined;
    const custom = bce.bootstrappedCrossEntropy(input, t, 0, 0.4, {
      reduction: (selected) => {
        received = selected;
        expect(selected.shape).toEqual([expected.k]);
        return selected.sum().mul(2);
      },
    });
    expect(received).toBeDefined();
    expect(Math.abs(custom.item() - 2 * expected.sum)).toBeLessThan(TOL);
  });

  test('at p = 1 the loss equals F.cross_entropy, with weights, ignored pixels and smoothing', () => {
    const { input, target: t } = make(logits, target);
    const w = bce.tensor(weight, { dtype: 'float64' });
    for (const options of [{}, { weight: w }, { labelSmoothing: 0.1 }, { weight: w, labelSmoothing: 0.2 }]) {
      const boot = bce.bootstrappedCrossEntropy(input, t, 0, 1, options).item();
      const plain = bce.crossEntropy(input, t, options).item();
      expect(Math.abs(boot - plain)).toBeLessThan(TOL);
    }
    // And crossEntropy itself against the textbook weighted mean.
    const losses = pixelLosses(logits, target, { weight, labelSmoothing: 0.2 }).flat();
    const labels = target.flat();
    const denominator = labels.reduce((acc, y) => acc + (y === -100 ? 0 : weight[y]), 0);
    const expected = losses.reduce((a, b) => a + b, 0) / denominator;
    expect(Math.abs(bce.crossEntropy(input, t, { weight: w, labelSmoothing: 0.2 }).item() - expected)).toBeLessThan(
      TOL,
    );
  });
});

describe('warm-up (rule 4) and continuity', () => {
  const random = mulberry32(5);
  const logits = randomLogits(random, 2, 3, 16);
  const target = randomTarget(random, 2, 16, 3, 0.2);

  test('continuous where warm-up ends, with weights and ignored pixels', () => {
    const { input, target: t } = make(logits, target);
    const weight = bce.tensor([0.2, 1.5, 3], { dtype: 'float64' });
    for (const options of [{}, { weight }]) {
      const before = bce.bootstrappedCrossEntropy(input, t, 99, 0.25, {
        ...options,
        warmup: bce.schedules.linear(100, 200),
      });
      const at = bce.bootstrappedCrossEntropy(input, t, 100, 0.25, {
        ...options,
        warmup: bce.schedules.linear(100, 200),
      });
      const justAfter = bce.bootstrappedCrossEntropy(input, t, 101, 0.25, {
        ...options,
        warmup: bce.schedules.linear(100, 200),
      });
      const weights = 'weight' in options ? [0.2, 1.5, 3] : undefined;
      const losses = pixelLosses(logits, target, { weight: weights });
      // Before and at startWarm p = 1: the plain weighted mean over every valid pixel (the textbook value, and
      // as a consistency check, the addon's crossEntropy).
      const plain = expectedBatch(losses, target, 1, weights);
      expect(plain.k).toBe(plain.n);
      expect(Math.abs(before.item() - plain.mean)).toBeLessThan(TOL);
      expect(Math.abs(at.item() - plain.mean)).toBeLessThan(TOL);
      expect(Math.abs(bce.crossEntropy(input, t, options).item() - plain.mean)).toBeLessThan(TOL);
      // One iteration into the fall p = 0.25 + 0.75 * (1 - 1/100) = 0.9925: one pixel fewer than the pool.
      const fall = expectedBatch(losses, target, 0.25 + 0.75 * (1 - 1 / 100), weights);
      expect(fall.k).toBe(plain.n - 1);
      expect(Math.abs(justAfter.item() - fall.mean)).toBeLessThan(TOL);
    }
  });

  test('number warm-up and function warm-up', () => {
    const { input, target: t } = make(logits, target);
    expect(bce.bootstrappedCrossEntropyWithStats(input, t, 9, 0.5, { warmup: 10 }).p).toBe(1);
    expect(bce.bootstrappedCrossEntropyWithStats(input, t, 10, 0.5, { warmup: 10 }).p).toBe(0.5);
    const calls: [number, number][] = [];
    const r = bce.bootstrappedCrossEntropyWithStats(input, t, 7, 0.5, {
      warmup: (p, it) => {
        calls.push([p, it]);
        return 0.75;
      },
    });
    expect(calls).toEqual([[0.5, 7]]);
    expect(r.p).toBe(0.75);
    expect(r.k).toBe(keepCount(0.75, r.nValid));
  });
});

describe('no valid element (rule 5)', () => {
  test('all ignored: loss 0 connected to the graph, zero gradients, never NaN', () => {
    const logits = randomLogits(mulberry32(6), 2, 3, 4);
    const target = [
      [-100, -100, -100, -100],
      [-100, -100, -100, -100],
    ];
    const { input, target: t } = make(logits, target);
    for (const reduction of ['mean', 'sum'] as const) {
      const result = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.5, { reduction });
      expect(result.k).toBe(0);
      expect(result.nValid).toBe(0);
      expect(result.loss.item()).toBe(0);
      result.loss.backward();
      expect(Array.from(input.grad!.toArray() as Float64Array).every((g) => g === 0)).toBe(true);
    }
    const none = bce.bootstrappedCrossEntropy(input, t, 0, 0.5, { reduction: 'none' });
    expect(Array.from(none.toArray() as Float64Array)).toEqual(new Array(8).fill(0));
    let called = false;
    const custom = bce.bootstrappedCrossEntropy(input, t, 0, 0.5, { reduction: (s) => ((called = true), s.mean()) });
    expect(called).toBe(false);
    expect(custom.item()).toBe(0);
    // PyTorch's own mean is NaN here; ours differs on purpose.
    expect(Number.isNaN(bce.crossEntropy(input, t).item())).toBe(true);
  });

  test('all ignored even with NaN logits gives 0', () => {
    const input = bce.tensor([NaN, 1, 2, Infinity], { shape: [2, 2], dtype: 'float64', requiresGrad: true });
    const t = bce.tensor([-100, -100], { dtype: 'int64' });
    expect(bce.bootstrappedCrossEntropy(input, t, 0, 0.5).item()).toBe(0);
  });
});

describe('perSample (rule 7)', () => {
  test('k per sample, weighted mean per sample, samples without valid pixels left out', () => {
    const random = mulberry32(7);
    const logits = randomLogits(random, 3, 4, 10);
    const target = randomTarget(random, 3, 10, 4, 0.3);
    target[1] = new Array(10).fill(-100);
    const weight = [1, 2, 0.5, 4];
    const { input, target: t } = make(logits, target);
    const w = bce.tensor(weight, { dtype: 'float64' });
    const losses = pixelLosses(logits, target, { weight });
    const perSample = [0, 2].map((n) => expectedBatch([losses[n]], [target[n]], 0.3, weight));
    const expected = (perSample[0].mean + perSample[1].mean) / 2;
    const result = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.3, { perSample: true, weight: w });
    expect(result.k).toBe(perSample[0].k + perSample[1].k);
    expect(Math.abs(result.loss.item() - expected)).toBeLessThan(TOL);

    const sum = bce.bootstrappedCrossEntropy(input, t, 0, 0.3, { perSample: true, weight: w, reduction: 'sum' });
    expect(Math.abs(sum.item() - (perSample[0].sum + perSample[1].sum))).toBeLessThan(TOL);
  });
});

describe('gradients (rule 6)', () => {
  test('flow only into the selected pixels, with (softmax - onehot) * w / denominator', () => {
    const random = mulberry32(8);
    const logits = randomLogits(random, 1, 3, 6);
    const target = [[0, 2, 1, -100, 2, 0]];
    const weight = [1, 2, 3];
    const { input, target: t } = make(logits, target);
    const loss = bce.bootstrappedCrossEntropy(input, t, 0, 0.5, { weight: bce.tensor(weight, { dtype: 'float64' }) });
    loss.backward();
    const grad = input.grad!.toArray() as Float64Array; // (1, 3, 6), class-major
    const expected = expectedBatch(pixelLosses(logits, target, { weight }), target, 0.5, weight);
    const logp = logSoftmax(logits)[0];
    const denominator = expected.chosen.reduce((acc, s) => acc + weight[target[0][s]], 0);
    for (let s = 0; s < 6; s++) {
      const selected = expected.chosen.includes(s);
      for (let c = 0; c < 3; c++) {
        const y = target[0][s];
        const want = selected ? (weight[y] * (Math.exp(logp[s][c]) - (c === y ? 1 : 0))) / denominator : 0;
        expect(Math.abs(grad[c * 6 + s] - want)).toBeLessThan(TOL);
      }
    }
  });
});

describe('which arguments autograd follows', () => {
  test('no argument needs a gradient: no graph, and the loss still works with autograd later', () => {
    const random = mulberry32(31);
    const logits = randomLogits(random, 1, 3, 6);
    const target = [[0, 2, 1, -100, 2, 0]];
    const { input, target: t } = make(logits, target, false);
    const expected = expectedBatch(pixelLosses(logits, target), target, 0.5);
    for (const impl of ['reference', 'auto'] as const) {
      const loss = bce.bootstrappedCrossEntropy(input, t, 0, 0.5, { impl });
      expect(loss.requiresGrad).toBe(false);
      expect(Math.abs(loss.item() - expected.mean)).toBeLessThan(TOL);
      // Used as a constant in a graph built afterwards: d(loss * a)/da = loss.
      const a = bce.tensor([3], { dtype: 'float64', requiresGrad: true });
      loss.mul(a).sum().backward();
      expect(Math.abs((a.grad!.toArray() as Float64Array)[0] - expected.mean)).toBeLessThan(TOL);
    }
  });

  test('class weights that require grad are refused, as PyTorch refuses them, although the input does not', () => {
    const { input, target: t } = make(randomLogits(mulberry32(32), 1, 3, 6), [[0, 2, 1, -100, 2, 0]], false);
    const w = bce.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
    // LibTorch's nll_loss has no derivative for its weight; skipping autograd here would hide that.
    expect(() => bce.bootstrappedCrossEntropy(input, t, 0, 0.5, { weight: w, impl: 'reference' })).toThrow(
      /not differentiable with respect to argument 'weight'/,
    );
    // float32, where 'auto' would otherwise take the fused kernel: the same answer, not a missing gradient.
    const x32 = bce.randn([1, 3, 4, 4], { requiresGrad: true });
    const y32 = bce.randint(0, 3, [1, 4, 4]);
    const w32 = bce.tensor([1, 2, 3], { requiresGrad: true });
    expect(() => bce.bootstrappedCrossEntropy(x32, y32, 0, 0.5, { weight: w32 })).toThrow(/not differentiable/);
    expect(() => bce.bootstrappedCrossEntropy(x32, y32, 0, 0.5, { weight: w32, impl: 'fused' })).toThrow(
      /impl 'fused' does not apply here/,
    );
  });

  test('probability targets that require grad get -log_softmax / k, the input not requiring it', () => {
    const random = mulberry32(33);
    const logits = randomLogits(random, 1, 3, 4);
    const probs = Array.from({ length: 3 }, () => Array.from({ length: 4 }, () => 1 / 3));
    const input = bce.tensor(logits.flat(2), { shape: [1, 3, 4], dtype: 'float64' });
    const target = bce.tensor(probs.flat(), { shape: [1, 3, 4], dtype: 'float64', requiresGrad: true });
    bce.bootstrappedCrossEntropy(input, target, 0, 1).backward();
    const logp = logSoftmax(logits)[0];
    const grad = target.grad!.toArray() as Float64Array;
    for (let c = 0; c < 3; c++) {
      for (let s = 0; s < 4; s++) expect(Math.abs(grad[c * 4 + s] + logp[s][c] / 4)).toBeLessThan(TOL);
    }
  });
});

describe('probability targets and label smoothing (rule 7)', () => {
  test('probability targets: -sum t log p, mean over k', () => {
    const random = mulberry32(9);
    const logits = randomLogits(random, 2, 3, 5);
    const probs = Array.from({ length: 2 }, () => {
      const raw = Array.from({ length: 3 }, () => Array.from({ length: 5 }, () => random()));
      return raw.map((row, c) => row.map((_, s) => raw[c][s] / (raw[0][s] + raw[1][s] + raw[2][s])));
    });
    const input = bce.tensor(logits.flat(2), { shape: [2, 3, 5], dtype: 'float64' });
    const target = bce.tensor(probs.flat(2), { shape: [2, 3, 5], dtype: 'float64' });
    const logp = logSoftmax(logits);
    const losses = [0, 1].flatMap((n) =>
      [0, 1, 2, 3, 4].map((s) => -[0, 1, 2].reduce((a, c) => a + probs[n][c][s] * logp[n][s][c], 0)),
    );
    const k = keepCount(0.3, 10);
    const top = [...losses].sort((a, b) => b - a).slice(0, k);
    const result = bce.bootstrappedCrossEntropyWithStats(input, target, 0, 0.3);
    expect(result.nValid).toBe(10);
    expect(Math.abs(result.loss.item() - top.reduce((a, b) => a + b, 0) / k)).toBeLessThan(TOL);
    // p = 1: the mean over all 10 pixels, by hand; the addon's crossEntropy agrees (a consistency check).
    const all = losses.reduce((a, b) => a + b, 0) / losses.length;
    expect(Math.abs(bce.bootstrappedCrossEntropy(input, target, 0, 1).item() - all)).toBeLessThan(TOL);
    expect(Math.abs(bce.crossEntropy(input, target).item() - all)).toBeLessThan(TOL);
  });

  test('label smoothing per pixel follows PyTorch', () => {
    const random = mulberry32(10);
    const logits = randomLogits(random, 1, 4, 8);
    const target = randomTarget(random, 1, 8, 4);
    const { input, target: t } = make(logits, target);
    const expected = expectedBatch(pixelLosses(logits, target, { labelSmoothing: 0.1 }), target, 0.5);
    expect(
      Math.abs(bce.bootstrappedCrossEntropy(input, t, 0, 0.5, { labelSmoothing: 0.1 }).item() - expected.mean),
    ).toBeLessThan(TOL);
  });
});

describe('implementations', () => {
  test("'auto' picks the fused CPU kernel for float32 class-index targets, and it agrees with 'reference'", () => {
    const random = mulberry32(15);
    const logits = randomLogits(random, 2, 19, 64);
    const target = randomTarget(random, 2, 64, 19, 0.2);
    const input = bce.tensor(logits.flat(2), { shape: [2, 19, 64], dtype: 'float32', requiresGrad: true });
    const t = bce.tensor(target.flat(), { shape: [2, 64], dtype: 'int64' });
    const fused = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.25);
    expect(fused.fused).toBe(true);
    fused.loss.backward();
    const fusedGrad = Array.from(input.grad!.toArray() as Float32Array);
    input.requiresGrad = false;
    input.requiresGrad = true;
    const reference = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.25, { impl: 'reference' });
    expect(reference.fused).toBe(false);
    expect(reference.k).toBe(fused.k);
    reference.loss.backward();
    const bothGrad = Array.from(input.grad!.toArray() as Float32Array); // accumulated: fused + reference
    const expected = expectedBatch(pixelLosses(logits, target), target, 0.25).mean;
    expect(Math.abs(fused.loss.item() - expected)).toBeLessThan(1e-5 * expected);
    expect(Math.abs(reference.loss.item() - expected)).toBeLessThan(1e-5 * expected);
    expect(
      maxAbsDiff(
        bothGrad,
        fusedGrad.map((g) => 2 * g),
      ),
    ).toBeLessThan(1e-6);
  });
});

describe('shapes and dtypes (rule 8)', () => {
  test('(N, C) inputs and float32; int32 and uint8 label maps', () => {
    const random = mulberry32(11);
    const logits = randomLogits(random, 6, 4, 1);
    const target = randomTarget(random, 6, 1, 4);
    const flatLogits = logits.map((sample) => sample.map((row) => row[0]));
    const input = bce.tensor(flatLogits, { dtype: 'float32' });
    const expected = expectedBatch(pixelLosses(logits, target), target, 0.5).mean;
    for (const dtype of ['int64', 'int32', 'uint8'] as const) {
      const t = bce.tensor(target.flat(), { dtype });
      expect(Math.abs(bce.bootstrappedCrossEntropy(input, t, 0, 0.5).item() - expected)).toBeLessThan(1e-5);
    }
  });
});

describe('binary variants', () => {
  const random = mulberry32(12);
  const probs = Array.from({ length: 12 }, () => 0.02 + 0.96 * random());
  const logits = Array.from({ length: 12 }, () => random() * 6 - 3);
  const gt = Array.from({ length: 12 }, () => (random() < 0.5 ? 0 : 1));
  const weight = Array.from({ length: 12 }, () => 0.5 + random());

  test('on probabilities: every element pooled, mean over k', () => {
    const losses = probs.map((q, i) => -weight[i] * (gt[i] * Math.log(q) + (1 - gt[i]) * Math.log(1 - q)));
    const k = keepCount(0.25, 12);
    const top =
      [...losses]
        .sort((a, b) => b - a)
        .slice(0, k)
        .reduce((a, b) => a + b, 0) / k;
    const input = bce.tensor(probs, { shape: [3, 4], dtype: 'float64' });
    const target = bce.tensor(gt, { shape: [3, 4], dtype: 'float64' });
    const w = bce.tensor(weight, { shape: [3, 4], dtype: 'float64' });
    const r = bce.bootstrappedBinaryCrossEntropyWithStats(input, target, 0, 0.25, { weight: w });
    expect(r.k).toBe(3);
    expect(r.nValid).toBe(12);
    expect(Math.abs(r.loss.item() - top)).toBeLessThan(TOL);
  });

  test('on logits with posWeight', () => {
    const posWeight = [2, 0.5, 1, 3];
    const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
    const losses = logits.map((x, i) => {
      const pw = posWeight[i % 4];
      return -(pw * gt[i] * Math.log(sigmoid(x)) + (1 - gt[i]) * Math.log(1 - sigmoid(x)));
    });
    const k = keepCount(0.5, 12);
    const top =
      [...losses]
        .sort((a, b) => b - a)
        .slice(0, k)
        .reduce((a, b) => a + b, 0) / k;
    const input = bce.tensor(logits, { shape: [3, 4], dtype: 'float64' });
    const target = bce.tensor(gt, { shape: [3, 4], dtype: 'float64' });
    const r = bce.bootstrappedBinaryCrossEntropyWithLogits(input, target, 0, 0.5, {
      posWeight: bce.tensor(posWeight, { dtype: 'float64' }),
    });
    expect(Math.abs(r.item() - top)).toBeLessThan(1e-10);
  });
});

describe('class APIs', () => {
  const random = mulberry32(13);
  const logits = randomLogits(random, 2, 3, 20);
  const target = randomTarget(random, 2, 20, 3);

  test("STCN BootstrappedCE's numbers at iterations 0, 19999, 20000, 45000, 70000, 100000", () => {
    const { input, target: t } = make(logits, target);
    const ce = new bce.BootstrappedCE();
    const losses = pixelLosses(logits, target);
    const expectedP = { 0: 1, 19999: 1, 20000: 1, 45000: 0.575, 70000: 0.15, 100000: 0.15 } as Record<number, number>;
    for (const it of [0, 19999, 20000, 45000, 70000, 100000]) {
      const { loss, p } = ce.forward(input, t, it);
      expect(p).toBeCloseTo(expectedP[it], 12);
      // STCN: mean of topk(int(numel * p)); without ignored pixels and with int == floor here, ours agrees.
      const k = Math.trunc(40 * p);
      const top = losses
        .flat()
        .sort((a, b) => b - a)
        .slice(0, k);
      expect(Math.abs(loss.item() - top.reduce((a, b) => a + b, 0) / k)).toBeLessThan(TOL);
    }
  });

  test('BootstrappedCE with startWarm == endWarm is a step, not a division by zero', () => {
    const { input, target: t } = make(logits, target);
    const ce = new bce.BootstrappedCE({ startWarm: 10, endWarm: 10, topP: 0.5 });
    expect(ce.forward(input, t, 9).p).toBe(1);
    expect(ce.forward(input, t, 10).p).toBe(0.5);
  });

  test('BootstrappedCrossEntropy counts iterations from 0 and resumes from stateDict', () => {
    const { input, target: t } = make(logits, target);
    const options = { warmup: bce.schedules.linear(1, 5) };
    const loss = new bce.BootstrappedCrossEntropy(0.2, options);
    expect(loss.iteration).toBe(0);
    expect(loss.lastP).toBeNull();
    const values: number[] = [];
    for (let i = 0; i < 3; i++) values.push(loss.forward(input, t).item());
    expect(loss.iteration).toBe(3);
    expect(loss.lastP).toBeCloseTo(0.2 + (0.8 * (5 - 2)) / 4, 12);
    expect(loss.lastK).toBe(keepCount(loss.lastP!, 40));
    const state = JSON.parse(JSON.stringify(loss.stateDict()));

    const resumed = new bce.BootstrappedCrossEntropy(0.2, options);
    resumed.loadStateDict(state);
    // Iterations 3 to 6 of linear(1, 5) by hand: p = 0.6, 0.4, 0.2, 0.2; each loss is the mean of the k hardest.
    const losses = pixelLosses(logits, target);
    for (const [it, p] of [
      [3, 0.6],
      [4, 0.4],
      [5, 0.2],
      [6, 0.2],
    ]) {
      expect(resumed.iteration).toBe(it);
      const value = resumed.forward(input, t).item();
      expect(resumed.lastP).toBeCloseTo(p, 12);
      expect(resumed.lastK).toBe(keepCount(p, 40));
      expect(Math.abs(value - expectedBatch(losses, target, resumed.lastP!).mean)).toBeLessThan(TOL);
      // Consistency: the uninterrupted loss gives the same value at the same iteration.
      expect(loss.forward(input, t).item()).toBe(value);
    }
    expect(resumed.lastP).toBe(0.2);
    expect(() => resumed.loadStateDict({ ...state, iteration: -1 })).toThrow(/state.iteration/);
    expect(() => resumed.loadStateDict({ ...state, p: 0.3 })).toThrow(/state.p/);
  });
});

describe('schedules', () => {
  test('step, linear and cosine values', () => {
    const step = bce.schedules.step(10);
    expect([0, 9, 10, 11].map((it) => step.at(0.2, it))).toEqual([1, 1, 0.2, 0.2]);
    const linear = bce.schedules.linear(20000, 70000);
    expect(linear.at(0.15, 45000)).toBeCloseTo(0.575, 12);
    expect(linear.at(0.15, 70000)).toBe(0.15);
    const cosine = bce.schedules.cosine(0, 100);
    expect(cosine.at(0.2, 0)).toBe(1);
    expect(cosine.at(0.2, 50)).toBeCloseTo(0.6, 12);
    expect(cosine.at(0.2, 100)).toBe(0.2);
    expect(bce.effectiveP(0.3, 5, linear)).toBe(1);
    expect(bce.effectiveP(0.3, 5)).toBe(0.3);
  });
});

describe('bad input gives named errors', () => {
  const random = mulberry32(14);
  const handLogits = randomLogits(random, 2, 3, 4);
  const handTarget = randomTarget(random, 2, 4, 3);
  const { input, target } = make(handLogits, handTarget);
  const usable = expectedBatch(pixelLosses(handLogits, handTarget), handTarget, 0.5).mean;
  const errorOf = (fn: () => unknown): Error => {
    try {
      fn();
    } catch (e) {
      return e as Error;
    }
    throw new Error('expected an exception');
  };
  const call = (overrides: Record<string, unknown>) => () =>
    bce.bootstrappedCrossEntropy(
      (overrides.input ?? input) as bce.Tensor,
      (overrides.target ?? target) as bce.Tensor,
      (overrides.iteration ?? 0) as number,
      (overrides.p ?? 0.5) as number,
      overrides.options as never,
    );

  const cases: [string, () => unknown, string, RegExp][] = [
    ['p = 0', call({ p: 0 }), 'RangeError', /p must be in \(0, 1\]/],
    ['p > 1', call({ p: 1.5 }), 'RangeError', /p must be in/],
    ['p NaN', call({ p: NaN }), 'RangeError', /p must be in/],
    ['p a string', call({ p: '0.5' }), 'TypeError', /p must be a number/],
    ['negative iteration', call({ iteration: -1 }), 'RangeError', /iteration/],
    ['fractional iteration', call({ iteration: 1.5 }), 'RangeError', /iteration/],
    ['schedule returning 2', call({ options: { warmup: () => 2 } }), 'RangeError', /warmup returned 2/],
    ['schedule returning NaN', call({ options: { warmup: () => NaN } }), 'RangeError', /warmup returned NaN/],
    ['schedule returning a string', call({ options: { warmup: () => '1' } }), 'RangeError', /warmup returned/],
    ['warmup of a wrong kind', call({ options: { warmup: 'soon' } }), 'TypeError', /warmup must be/],
    ['startWarm > endWarm', () => bce.schedules.linear(10, 5), 'RangeError', /startWarm \(10\) must not be greater/],
    ['input not a tensor', call({ input: [1, 2] }), 'TypeError', /input must be a Tensor/],
    [
      'integer input',
      call({ input: bce.zeros([2, 3, 4], { dtype: 'int64' }) }),
      'TypeError',
      /input must be a floating/,
    ],
    ['1-D input', call({ input: bce.zeros([3]) }), 'RangeError', /input must have shape/],
    [
      'target of the wrong shape',
      call({ target: bce.zeros([2, 5], { dtype: 'int64' }) }),
      'RangeError',
      /target must have shape \[2,4\]/,
    ],
    ['bool target', call({ target: bce.zeros([2, 4], { dtype: 'bool' }) }), 'TypeError', /class indices/],
    [
      'probability target of another dtype',
      call({ target: bce.zeros([2, 3, 4]) }),
      'TypeError',
      /probability target must have the input's dtype/,
    ],
    [
      'weight of the wrong length',
      call({ options: { weight: bce.ones([4], { dtype: 'float64' }) } }),
      'RangeError',
      /weight must be a 1-D tensor of length C = 3/,
    ],
    [
      'weight of the wrong dtype',
      call({ options: { weight: bce.ones([3]) } }),
      'TypeError',
      /weight must have the input's dtype/,
    ],
    ['weight not a tensor', call({ options: { weight: [1, 2, 3] } }), 'TypeError', /weight must be a Tensor/],
    [
      'target out of range',
      call({ target: bce.tensor([0, 1, 2, 3, 0, 1, 2, 0], { shape: [2, 4], dtype: 'int64' }) }),
      'RangeError',
      /outside \[0, 3\)/,
    ],
    [
      'negative target other than ignoreIndex',
      call({ target: bce.tensor([0, 1, 2, -1, 0, 1, 2, 0], { shape: [2, 4], dtype: 'int64' }) }),
      'RangeError',
      /not ignoreIndex/,
    ],
    ['unknown reduction', call({ options: { reduction: 'avg' } }), 'TypeError', /reduction must be one of/],
    [
      'reduction returning a number',
      call({ options: { reduction: () => 3 } }),
      'TypeError',
      /reduction must return a Tensor, got 3/,
    ],
    ['labelSmoothing > 1', call({ options: { labelSmoothing: 2 } }), 'RangeError', /labelSmoothing/],
    ['ignoreIndex fractional', call({ options: { ignoreIndex: 0.5 } }), 'RangeError', /ignoreIndex/],
    ['perSample not boolean', call({ options: { perSample: 1 } }), 'TypeError', /perSample must be a boolean/],
    ['unknown impl', call({ options: { impl: 'fast' } }), 'TypeError', /impl must be one of/],
    ['options not an object', call({ options: 5 }), 'TypeError', /options must be an object/],
    [
      'impl fused with probability targets',
      call({
        input: bce.zeros([2, 3, 4], { dtype: 'float32' }),
        target: bce.zeros([2, 3, 4], { dtype: 'float32' }),
        options: { impl: 'fused' },
      }),
      'Error',
      /impl 'fused' does not apply/,
    ],
    ['impl fused with float64 input', call({ options: { impl: 'fused' } }), 'Error', /impl 'fused' does not apply/],
    ['topP > 1 in BootstrappedCE', () => new bce.BootstrappedCE({ topP: 2 }), 'RangeError', /topP/],
  ];

  test.each(cases)('%s', (_label, fn, name, pattern) => {
    const error = errorOf(fn);
    expect(error.name).toBe(name);
    expect(error.message).toMatch(pattern);
    // The process is still usable: the loss of the valid call is the hand value.
    expect(Math.abs(bce.bootstrappedCrossEntropy(input, target, 0, 0.5).item() - usable)).toBeLessThan(TOL);
  });

  test('an exception thrown by a schedule passes through unchanged', () => {
    const mine = new Error('my schedule failed');
    expect(
      errorOf(
        call({
          options: {
            warmup: () => {
              throw mine;
            },
          },
        }),
      ),
    ).toBe(mine);
  });

  test('a disposed tensor is refused', () => {
    const gone = bce.zeros([2, 3, 4], { dtype: 'float64' });
    gone.dispose();
    expect(errorOf(call({ input: gone })).message).toMatch(/input was disposed/);
  });

  test('tensors on different devices are refused', () => {
    if (bce.cuda.isAvailable()) {
      const onGpu = target.to('cuda');
      expect(errorOf(call({ target: onGpu })).message).toMatch(/target is on cuda/);
    } else {
      console.warn('device-mismatch case skipped: no CUDA device here (covered by test/cuda.test.ts on a GPU)');
      expect(bce.cuda.deviceCount()).toBe(0);
    }
  });
});
