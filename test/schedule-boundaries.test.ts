/**
 * Every warm-up schedule evaluated at its boundaries (start - 1, start, start + 1, end - 1, end, end + 1), through
 * effectiveP and through the loss itself (its p and k), against values computed by hand here. A schedule that
 * reaches its target one iteration early or late fails.
 */
import * as bce from '../lib';

const P = 0.2;
const START = 10;
const END = 20;
const BOUNDARIES = [START - 1, START, START + 1, END - 1, END, END + 1];

/** Hand-computed p at each boundary. */
const linear = (it: number) => (it < START ? 1 : it >= END ? P : P + (1 - P) * (1 - (it - START) / (END - START)));
const cosine = (it: number) =>
  it < START ? 1 : it >= END ? P : P + (1 - P) * 0.5 * (1 + Math.cos((Math.PI * (it - START)) / (END - START)));
const step = (it: number) => (it < START ? 1 : P);

// The hand values written out, so that the formulas above are themselves checked.
const EXPECTED: Record<string, number[]> = {
  linear: [1, 1, 0.92, 0.28, 0.2, 0.2],
  cosine: [1, 1, 0.2 + 0.4 * (1 + Math.cos(0.1 * Math.PI)), 0.2 + 0.4 * (1 + Math.cos(0.9 * Math.PI)), 0.2, 0.2],
  step: [1, 0.2, 0.2, 0.2, 0.2, 0.2],
};

const KINDS: [string, bce.Warmup, (it: number) => number][] = [
  ['linear', bce.schedules.linear(START, END), linear],
  ['cosine', bce.schedules.cosine(START, END), cosine],
  ['step', bce.schedules.step(START), step],
  ['a number of iterations', START, step],
];

/** 100 pixels, 3 classes: k = max(1, floor(p * 100)) pixels are kept. */
const input = bce.randn([1, 3, 10, 10], { dtype: 'float64' });
const target = bce.randint(0, 3, [1, 10, 10]);

describe.each(KINDS)('warm-up %s', (name, warmup, hand) => {
  const expected = EXPECTED[name] ?? EXPECTED.step;

  // A check of this test's own data (the formula against the written values), not of the addon.
  test('test data: the hand formula matches the written values', () => {
    expect(BOUNDARIES.map(hand).map((v) => Number(v.toFixed(12)))).toEqual(expected.map((v) => Number(v.toFixed(12))));
  });

  test.each(BOUNDARIES.map((it, i) => [it, i] as const))('iteration %i', (it, i) => {
    expect(bce.effectiveP(P, it, warmup)).toBeCloseTo(expected[i], 12);
    const result = bce.bootstrappedCrossEntropyWithStats(input, target, it, P, { warmup });
    expect(result.p).toBeCloseTo(expected[i], 12);
    expect(result.k).toBe(Math.max(1, Math.floor(expected[i] * 100 + 1e-9)));
  });
});

describe("STCN's BootstrappedCE (linear from startWarm to endWarm)", () => {
  const criterion = new bce.BootstrappedCE({ startWarm: START, endWarm: END, topP: P });
  test.each(BOUNDARIES.map((it, i) => [it, i] as const))('iteration %i', (it, i) => {
    expect(criterion.forward(input, target, it).p).toBeCloseTo(EXPECTED.linear[i], 12);
  });
});

describe('BootstrappedCrossEntropy counts its own iterations through the boundaries', () => {
  test('p at each call, the first call being iteration 0', () => {
    const loss = new bce.BootstrappedCrossEntropy(P, { warmup: bce.schedules.linear(START, END) });
    const seen: number[] = [];
    for (let it = 0; it <= END + 1; it++) {
      loss.forward(input, target);
      seen.push(loss.stateDict().lastP as number);
    }
    BOUNDARIES.forEach((it, i) => expect(seen[it]).toBeCloseTo(EXPECTED.linear[i], 12));
  });
});
