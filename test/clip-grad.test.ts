/**
 * clipGradNorm against torch.nn.utils.clip_grad_norm_ run by the Python whose torch is the addon's LibTorch
 * version (same kernels): the total norm and the clipped gradients, for norms 2, 1, 3.5 and inf, clipping and
 * not clipping, with a parameter without gradient and one of another dtype.
 */
import * as bce from '../lib';
import { findTorchPython } from './helpers/torch-python';
import { runPython } from './helpers/torch-pythons';

const torchPython = findTorchPython();

/** Gradient values: reproducible, of varied magnitude. */
function values(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.sin(i * 1.7 + seed) * (1 + ((i * seed) % 5)));
}

const SHAPES: [number[], 'float32' | 'float64'][] = [
  [[3, 4], 'float32'],
  [[5], 'float32'],
  [[2, 2, 2], 'float64'],
];

/** Parameters whose gradients are the values above (gradient of sum(p * w) is w), plus one without gradient. */
function makeParams(): bce.Tensor[] {
  const params = SHAPES.map(([shape, dtype], k) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const p = bce.zeros(shape, { dtype, requiresGrad: true });
    const w = bce.tensor(
      dtype === 'float64' ? new Float64Array(values(n, k + 1)) : new Float32Array(values(n, k + 1)),
      { shape },
    );
    p.mul(w).sum().backward();
    return p;
  });
  params.push(bce.zeros([2], { requiresGrad: true }));
  return params;
}

const CASES: [number, number][] = [
  [2, 1.0],
  [2, 1000],
  [1, 0.5],
  [3.5, 2],
  [Infinity, 0.25],
];

(torchPython.path ? describe : describe.skip)(
  `clipGradNorm against PyTorch${torchPython.path ? '' : ` (skipped: ${torchPython.reason})`}`,
  () => {
    let expected: { norm: number; grads: number[][] }[] = [];
    beforeAll(() => {
      const script = `import json, math, torch
shapes = ${JSON.stringify(SHAPES.map(([s, d]) => [s, d]))}
def values(n, seed): return [math.sin(i * 1.7 + seed) * (1 + ((i * seed) % 5)) for i in range(n)]
out = []
for norm_type, max_norm in ${JSON.stringify(CASES.map(([n, m]) => [n === Infinity ? 'inf' : n, m]))}:
    params = []
    for k, (shape, dtype) in enumerate(shapes):
        dt = getattr(torch, dtype)
        n = math.prod(shape)
        w = torch.tensor(values(n, k + 1), dtype=torch.float64).to(dt).reshape(shape)
        p = torch.zeros(shape, dtype=dt, requires_grad=True)
        (p * w).sum().backward()
        params.append(p)
    params.append(torch.zeros(2, requires_grad=True))
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=float(norm_type))
    out.append({'norm': repr(total.item()), 'grads': [[repr(x) for x in p.grad.double().flatten().tolist()] for p in params[:-1]]})
print(json.dumps(out))`;
      expected = (
        JSON.parse(runPython(torchPython.path as string, script)) as { norm: string; grads: string[][] }[]
      ).map((c) => ({
        norm: Number(c.norm),
        grads: c.grads.map((g) => g.map(Number)),
      }));
    });

    it.each(CASES.map((c, i) => [c[0], c[1], i] as const))('normType %s, maxNorm %s', (normType, maxNorm, index) => {
      const params = makeParams();
      const total = bce.clipGradNorm(params, maxNorm, { normType });
      expect(total.shape).toEqual([]);
      // torch.nn.utils computes the norm with linalg.vector_norm in 2.x and torch.norm in 1.13: same kernels here.
      expect(total.item()).toBe(expected[index].norm);
      params
        .slice(0, -1)
        .forEach((p, k) => expect(Array.from(p.grad!.toArray() as Float32Array)).toEqual(expected[index].grads[k]));
      expect(params[params.length - 1].grad).toBeNull();
    });
  },
);

describe('clipGradNorm', () => {
  it('clips to maxNorm by hand-computed values, and returns 0 without gradients', () => {
    const p = bce.zeros([2], { requiresGrad: true });
    p.mul(bce.tensor(new Float32Array([3, 4])))
      .sum()
      .backward();
    const total = bce.clipGradNorm([p], 1);
    expect(total.item()).toBe(5);
    const g = p.grad!.toArray() as Float32Array;
    expect(g[0]).toBeCloseTo(0.6, 6);
    expect(g[1]).toBeCloseTo(0.8, 6);
    expect(bce.clipGradNorm([bce.zeros([1], { requiresGrad: true })], 1).item()).toBe(0);
  });

  it('refuses bad arguments, and a non-finite norm when asked', () => {
    const p = bce.zeros([1], { requiresGrad: true });
    p.mul(bce.tensor(new Float32Array([Infinity])))
      .sum()
      .backward();
    expect(() => bce.clipGradNorm([p], 1, { errorIfNonfinite: true })).toThrow(/non-finite/);
    expect(Array.from(p.grad!.toArray() as Float32Array)).toEqual([Infinity]);
    expect(() => bce.clipGradNorm(p as unknown as bce.Tensor[], 1)).toThrow(/parameters must be an array/);
    expect(() => bce.clipGradNorm([p], -1)).toThrow(/maxNorm must be >= 0/);
    expect(() => bce.clipGradNorm([p], 1, { normType: 0 })).toThrow(/normType must be > 0/);
    expect(() => bce.clipGradNorm([p], 1, { norm: 2 } as never)).toThrow(/has no option 'norm'/);
  });
});
