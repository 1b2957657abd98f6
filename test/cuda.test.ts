/**
 * CUDA: tensors to and from the GPU, the loss and its backward on the device equal to the CPU result, float16 and
 * bfloat16 inputs, and an out-of-range target reported as a RangeError (no device-side assert).
 *
 * Skipped, with the reason printed, where the addon sees no GPU (a CPU LibTorch, or no device). With
 * BCE_TEST_CUDA=1 (scripts/gpu-check sets it) a missing GPU fails the suite instead of skipping it.
 */
import * as path from 'path';
import * as bce from '../lib';
import { pixelLosses } from './helpers/reference';

const available = bce.cuda.isAvailable();
const required = process.env.BCE_TEST_CUDA === '1';
const why = bce.info().cudaBuild
  ? 'this LibTorch has CUDA, but no GPU is visible'
  : `this LibTorch (${bce.info().libtorchVersion}) is a CPU build`;
if (!available && !required) console.warn(`CUDA tests skipped: ${why}. scripts/gpu-check runs them on a GPU machine.`);

describe('CUDA requirement (BCE_TEST_CUDA=1)', () => {
  (required ? test : test.skip)('a GPU is visible', () => {
    if (!available) throw new Error(`BCE_TEST_CUDA=1, but CUDA is not available: ${why}`);
    expect(bce.cuda.deviceCount()).toBeGreaterThan(0);
  });
});

const describeCuda = available ? describe : describe.skip;

/** Max |a - b| over two arrays. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(Number(a[i]) - Number(b[i])));
  return worst;
}

/** Loss and input gradient on a device, the data given on the host. */
function lossAndGrad(
  logits: Float32Array,
  shape: number[],
  target: Int32Array,
  device: string,
  dtype: bce.DType,
  options: bce.BootstrappedCrossEntropyOptions = {},
): { loss: number; grad: Float32Array | Float64Array } {
  const input = bce.tensor(logits, { shape, dtype, device, requiresGrad: true });
  const t = bce.tensor(target, { dtype: 'int64', device, shape: [shape[0], ...shape.slice(2)] });
  const loss = bce.bootstrappedCrossEntropy(input, t, 100, 0.25, options);
  expect(loss.device).toMatch(/^cuda|^cpu/);
  loss.backward();
  const grad = input.grad as bce.Tensor;
  expect(grad.device).toBe(input.device);
  return { loss: loss.to('cpu').to('float64').item(), grad: grad.to('cpu').to('float32').toArray() as Float32Array };
}

function data(n: number, c: number, h: number, w: number, seed: number): { logits: Float32Array; target: Int32Array } {
  let s = seed >>> 0;
  const next = () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  const logits = Float32Array.from({ length: n * c * h * w }, () => (next() - 0.5) * 8);
  const target = Int32Array.from({ length: n * h * w }, () => (next() < 0.05 ? -100 : Math.floor(next() * c)));
  return { logits, target };
}

describeCuda('CUDA', () => {
  test('tensors round-trip through the GPU', () => {
    const values = Float32Array.from([1.5, -2.25, 3, 0, 7, -8]);
    const onGpu = bce.tensor(values, { shape: [2, 3], device: 'cuda' });
    expect(onGpu.device).toMatch(/^cuda/);
    expect(Array.from(onGpu.toArray() as Float32Array)).toEqual(Array.from(values));
    const back = bce
      .tensor(values, { shape: [2, 3] })
      .to('cuda')
      .to('cpu');
    expect(back.device).toBe('cpu');
    expect(Array.from(back.toArray() as Float32Array)).toEqual(Array.from(values));
    const ints = bce.tensor(BigInt64Array.from([1n, -2n, 2n ** 40n]), { device: 'cuda:0' });
    expect(Array.from(ints.toArray() as BigInt64Array)).toEqual([1n, -2n, 2n ** 40n]);
    expect(bce.zeros([4], { device: 'cuda' }).sum().item()).toBe(0);
  });

  test.each([
    ['float32', 1e-5],
    ['float64', 1e-10],
  ] as const)('loss and backward on cuda equal the CPU result (%s)', (dtype, tol) => {
    const shape = [2, 5, 8, 8];
    const { logits, target } = data(2, 5, 8, 8, 11);
    const cpu = lossAndGrad(logits, shape, target, 'cpu', dtype, { impl: 'reference' });
    const gpu = lossAndGrad(logits, shape, target, 'cuda', dtype);
    expect(Math.abs(gpu.loss - cpu.loss)).toBeLessThan(tol * Math.max(1, Math.abs(cpu.loss)));
    expect(maxDiff(gpu.grad, cpu.grad)).toBeLessThan(tol);
  });

  test('class weights, label smoothing and per-sample selection on cuda equal the CPU result', () => {
    const shape = [3, 4, 6, 6];
    const { logits, target } = data(3, 4, 6, 6, 5);
    const weight = (device: string) => bce.tensor([1, 2, 0.5, 1.5], { device });
    const opts = (device: string): bce.BootstrappedCrossEntropyOptions => ({
      weight: weight(device),
      labelSmoothing: 0.1,
      perSample: true,
    });
    const cpu = lossAndGrad(logits, shape, target, 'cpu', 'float32', opts('cpu'));
    const gpu = lossAndGrad(logits, shape, target, 'cuda', 'float32', opts('cuda'));
    expect(Math.abs(gpu.loss - cpu.loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(cpu.loss)));
    expect(maxDiff(gpu.grad, cpu.grad)).toBeLessThan(1e-5);
  });

  test.each([
    ['float16', 1e-2],
    ['bfloat16', 5e-2],
  ] as const)('%s inputs on cuda: the loss keeps the dtype and is close to float32', (dtype, tol) => {
    const shape = [2, 3, 4, 4];
    const { logits, target } = data(2, 3, 4, 4, 3);
    const input = bce.tensor(logits, { shape, dtype, device: 'cuda', requiresGrad: true });
    const t = bce.tensor(target, { dtype: 'int64', device: 'cuda', shape: [2, 4, 4] });
    const loss = bce.bootstrappedCrossEntropy(input, t, 100, 0.25);
    expect(loss.dtype).toBe(dtype);
    loss.backward();
    expect((input.grad as bce.Tensor).dtype).toBe(dtype);
    const ref = lossAndGrad(logits, shape, target, 'cuda', 'float32');
    const value = loss.to('cpu').to('float32').item();
    expect(Math.abs(value - ref.loss)).toBeLessThan(tol * Math.max(1, Math.abs(ref.loss)));
  });

  test('an out-of-range target on cuda is a RangeError, and the device stays usable', () => {
    const input = bce.randn([4, 3], { device: 'cuda' });
    const bad = bce.tensor([0, 1, 3, 2], { dtype: 'int64', device: 'cuda' });
    let error: unknown;
    try {
      bce.bootstrappedCrossEntropy(input, bad, 100, 0.5).to('cpu').item();
    } catch (e) {
      error = e;
    }
    expect((error as Error)?.name).toBe('RangeError');
    expect((error as Error).message).toMatch(/outside \[0, 3\)/);
    const negative = bce.tensor([0, -5, 1, 2], { dtype: 'int64', device: 'cuda' });
    expect(() => bce.bootstrappedCrossEntropy(input, negative, 100, 0.5)).toThrow(/outside/);
    // No device-side assert happened: the CUDA context still works.
    const ok = bce.tensor([0, 1, 2, -100], { dtype: 'int64', device: 'cuda' });
    // k = floor(0.5 * 3) = 1 of the three valid rows: the largest of their losses, computed here from the logits.
    const x = input.to('cpu').toArray() as Float32Array;
    const rows = [0, 1, 2].map((n) => [[x[3 * n]], [x[3 * n + 1]], [x[3 * n + 2]]]);
    const losses = pixelLosses(rows, [[0], [1], [2]]).flat();
    const value = bce.bootstrappedCrossEntropy(input, ok, 100, 0.5).to('cpu').item();
    expect(Math.abs(value - Math.max(...losses))).toBeLessThan(1e-5);
  });

  test('a module moved in place: its parameters report the new device (the facade caches devices)', () => {
    const model = bce.jit.load(path.join(__dirname, '..', 'models', 'segnet.pt'));
    const params = model.parameters();
    expect(params[0].device).toBe('cpu');
    model.to('cuda');
    expect(params[0].device).toMatch(/^cuda/);
    model.to('cpu');
    expect(params[0].device).toBe('cpu');
  });

  test('input and target on different devices are refused', () => {
    const input = bce.randn([4, 3], { device: 'cuda' });
    const target = bce.tensor([0, 1, 2, 1], { dtype: 'int64' });
    expect(() => bce.bootstrappedCrossEntropy(input, target, 100, 0.5)).toThrow(/on cpu but input is on cuda/);
  });
});
