/**
 * Argument checks and bookkeeping of the TypeScript facade (lib/loss.ts, lib/schedules.ts, lib/modules.ts) that
 * mutation testing found unasserted: each error names its argument, each accepted edge value gives the hand value,
 * and function reductions free exactly the tensors they should.
 */
import * as bce from '../lib';
import { mulberry32 } from './helpers/prng';
import { keepCount, pixelLosses, randomLogits, topkIndices } from './helpers/reference';

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected an exception');
}

const expectError = (fn: () => unknown, name: string, message: RegExp) => {
  const error = errorOf(fn);
  expect({ name: error.name, message: error.message }).toEqual({ name, message: expect.stringMatching(message) });
};

const logits = randomLogits(mulberry32(31), 2, 3, 6);
const labels = [
  [0, 1, 2, 0, 1, 2],
  [2, 2, 1, 0, 0, 1],
];
const input = bce.tensor(logits.flat(2), { shape: [2, 3, 6], dtype: 'float64' });
const target = bce.tensor(labels.flat(), { shape: [2, 6], dtype: 'int64' });

describe('multi-class argument checks', () => {
  test('a probability target of another shape is a RangeError naming the shape', () => {
    const probabilities = bce.ones([2, 3, 5], { dtype: 'float64' });
    expectError(
      () => bce.bootstrappedCrossEntropy(input, probabilities, 0, 0.5),
      'RangeError',
      /probability target must have the input's shape \[2,3,6\], got \[2,3,5\]/,
    );
  });

  test('labelSmoothing below 0 is refused; exactly 1 is accepted and gives the uniform-target loss', () => {
    expectError(
      () => bce.bootstrappedCrossEntropy(input, target, 0, 0.5, { labelSmoothing: -0.1 }),
      'RangeError',
      /labelSmoothing must be in \[0, 1\], got -0.1/,
    );
    const losses = pixelLosses(logits, labels, { labelSmoothing: 1 }).flat();
    const k = keepCount(0.5, 12);
    const expected =
      topkIndices(
        losses,
        k,
        losses.map(() => true),
      ).reduce((a, i) => a + losses[i], 0) / k;
    expect(bce.bootstrappedCrossEntropy(input, target, 0, 0.5, { labelSmoothing: 1 }).item()).toBeCloseTo(expected, 12);
  });

  test('class weights of shape [C, 1] are refused even though their first size is C', () => {
    expectError(
      () => bce.bootstrappedCrossEntropy(input, target, 0, 0.5, { weight: bce.ones([3, 1], { dtype: 'float64' }) }),
      'RangeError',
      /weight must be a 1-D tensor of length C = 3, got shape \[3,1\]/,
    );
  });
});

describe('binary argument checks', () => {
  const probabilities = bce.tensor([0.2, 0.9, 0.6, 0.4], { dtype: 'float64' });
  const truth = bce.tensor([0, 1, 1, 0], { dtype: 'float64' });

  test('each argument named', () => {
    expectError(
      () => bce.bootstrappedBinaryCrossEntropy(bce.ones([], { dtype: 'float64' }), truth, 0, 0.5),
      'RangeError',
      /input must have at least 1 dimension\(s\), got \[\]/,
    );
    expectError(() => bce.bootstrappedBinaryCrossEntropy([0.5] as never, truth, 0, 0.5), 'TypeError', /^input must/);
    expectError(
      () => bce.bootstrappedBinaryCrossEntropy(probabilities, [1] as never, 0, 0.5),
      'TypeError',
      /^target must/,
    );
    expectError(
      () => bce.bootstrappedBinaryCrossEntropy(probabilities, truth, 0, 0.5, { bogus: 1 } as never),
      'TypeError',
      /^options has no option 'bogus'/,
    );
    expectError(
      () => bce.bootstrappedBinaryCrossEntropy(probabilities, bce.zeros([2, 2], { dtype: 'float64' }), 0, 0.5),
      'RangeError',
      /^target must have the input's shape \[4\], got \[2,2\]$/,
    );
  });
});

describe('function reductions', () => {
  test('the selected losses are freed when the reduction returns a new tensor, kept when it returns them', () => {
    const before = bce.memory().tensors;
    const mean = bce.bootstrappedCrossEntropy(input, target, 0, 0.5, { reduction: (s) => s.mean() });
    // Only the result is alive: the 1-D tensor of selected losses was freed.
    expect(bce.memory().tensors).toBe(before + 1);
    const losses = pixelLosses(logits, labels).flat();
    const chosen = topkIndices(
      losses,
      6,
      losses.map(() => true),
    );
    expect(mean.item()).toBeCloseTo(chosen.reduce((a, i) => a + losses[i], 0) / 6, 12);
    mean.dispose();
    const identity = bce.bootstrappedCrossEntropy(input, target, 0, 0.5, { reduction: (s) => s });
    expect(identity.isDisposed).toBe(false);
    expect(
      Array.from(identity.toArray() as Float64Array)
        .sort((a, b) => a - b)
        .map((v) => Number(v.toFixed(12))),
    ).toEqual(chosen.map((i) => Number(losses[i].toFixed(12))).sort((a, b) => a - b));
    identity.dispose();
    expect(bce.memory().tensors).toBe(before);
  });
});

describe('schedule and effectiveP checks', () => {
  test('negative starts are refused, naming the argument', () => {
    expectError(() => bce.schedules.linear(-1, 5), 'RangeError', /^startWarm must be >= 0, got -1/);
    expectError(() => bce.schedules.step(-2), 'RangeError', /^warmup must be >= 0, got -2/);
  });

  test('a warm-up of null is a TypeError naming warmup; a bad iteration names iteration', () => {
    expectError(() => bce.effectiveP(0.5, 1, null as never), 'TypeError', /^warmup must be a number, a function/);
    expectError(() => bce.effectiveP(0.5, -1), 'RangeError', /^iteration/);
  });

  test('a warm-up returning 0 is refused (p must be in (0, 1])', () => {
    expectError(() => bce.effectiveP(0.5, 1, () => 0), 'RangeError', /warmup returned 0 at iteration 1/);
  });
});

describe('class API state', () => {
  test('loadStateDict: p may be left out; lastP and lastK null, left out or given; each key checked by name', () => {
    const loss = new bce.BootstrappedCrossEntropy(0.25);
    loss.loadStateDict({ iteration: 4 } as never);
    expect(loss.stateDict()).toEqual({ iteration: 4, p: 0.25, lastP: null, lastK: null });
    loss.loadStateDict({ iteration: 5, p: 0.25, lastP: null, lastK: null });
    expect([loss.lastP, loss.lastK]).toEqual([null, null]);
    loss.loadStateDict({ iteration: 6, p: 0.25, lastP: 0.5, lastK: 7 });
    expect(loss.stateDict()).toEqual({ iteration: 6, p: 0.25, lastP: 0.5, lastK: 7 });
    expectError(() => loss.loadStateDict({ iteration: 1, lastP: 2 } as never), 'RangeError', /^state\.lastP/);
    expectError(() => loss.loadStateDict({ iteration: 1, lastK: -1 } as never), 'RangeError', /^state\.lastK/);
    expectError(() => loss.loadStateDict({ iteration: 1, step: 3 } as never), 'TypeError', /^state has no option/);
  });

  test('BootstrappedCE names endWarm when it is not a number', () => {
    expectError(() => new bce.BootstrappedCE({ endWarm: 'late' as never }), 'TypeError', /^endWarm must be/);
  });
});
