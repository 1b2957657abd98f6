import * as fs from 'fs';
import * as path from 'path';
import { inspect } from 'util';
import * as bce from '../lib';
import { native as nativeBinding } from '../lib/native';

describe('tensor round trips', () => {
  const cases: [bce.DType, ArrayLike<number | bigint>, string][] = [
    ['float32', [1.5, -2.25, 3, 0], 'Float32Array'],
    ['float64', [1e-300, -2.5, Math.PI, 1e300], 'Float64Array'],
    ['float16', [1.5, -2, 65504, 0.25], 'Float32Array'],
    ['bfloat16', [1.5, -2, 256, 0.5], 'Float32Array'],
    ['int32', [1, -2, 2147483647, -2147483648], 'Int32Array'],
    ['int64', [1, -2, 2 ** 40, -(2 ** 50)], 'BigInt64Array'],
    ['uint8', [0, 1, 200, 255], 'Uint8Array'],
    ['bool', [1, 0, 1, 1], 'Uint8Array'],
  ];

  test.each(cases)('%s from a number array keeps its values and shape', (dtype, values, arrayType) => {
    const t = bce.tensor(Array.from(values as ArrayLike<number>), { dtype, shape: [2, 2] });
    expect(t.dtype).toBe(dtype);
    expect(t.shape).toEqual([2, 2]);
    expect(t.numel).toBe(4);
    expect(t.device).toBe('cpu');
    const out = t.toArray();
    expect(out.constructor.name).toBe(arrayType);
    const expected = Array.from(values as ArrayLike<number>).map((v) =>
      arrayType === 'BigInt64Array' ? BigInt(v) : v,
    );
    expect(Array.from(out as ArrayLike<number>)).toEqual(expected);
    t.dispose();
  });

  test('typed arrays set the default dtype and are copied', () => {
    const source = new Float64Array([1, 2, 3]);
    const t = bce.tensor(source);
    source[0] = 100;
    expect(t.dtype).toBe('float64');
    expect(Array.from(t.toArray() as Float64Array)).toEqual([1, 2, 3]);
    expect(bce.tensor(new BigInt64Array([5n, -7n])).dtype).toBe('int64');
    expect(bce.tensor(new Int32Array([5])).dtype).toBe('int32');
    expect(bce.tensor(new Uint8Array([5])).dtype).toBe('uint8');
  });

  test('a view into a larger buffer copies only its elements', () => {
    const buffer = new Float32Array([9, 9, 1, 2, 3, 9]);
    const view = new Float32Array(buffer.buffer, 8, 3);
    expect(Array.from(bce.tensor(view).toArray() as Float32Array)).toEqual([1, 2, 3]);
  });

  test('nested arrays infer the shape; booleans infer bool', () => {
    const t = bce.tensor([
      [[1], [2]],
      [[3], [4]],
      [[5], [6]],
    ]);
    expect(t.shape).toEqual([3, 2, 1]);
    expect(t.dtype).toBe('float32');
    expect(bce.tensor([true, false]).dtype).toBe('bool');
    expect(bce.tensor(7).shape).toEqual([]);
    expect(bce.tensor(7).item()).toBe(7);
  });

  test.each(['float32', 'float64', 'int64', 'bool'] as bce.DType[])(
    'shapes with 0 elements round-trip (%s)',
    (dtype) => {
      const t = bce.tensor([], { dtype, shape: [0, 3] });
      expect(t.shape).toEqual([0, 3]);
      expect(t.numel).toBe(0);
      expect(t.toArray().length).toBe(0);
      expect(bce.zeros([2, 0, 4], { dtype }).toArray().length).toBe(0);
    },
  );

  test('integer dtypes take every value they hold, exactly, up to the ends of their range', () => {
    const valuesOf = (t: bce.Tensor) => Array.from(t.toArray() as ArrayLike<number | bigint>);
    expect(valuesOf(bce.tensor([0, 255], { dtype: 'uint8' }))).toEqual([0, 255]);
    expect(valuesOf(bce.tensor([-(2 ** 31), 2 ** 31 - 1], { dtype: 'int32' }))).toEqual([-(2 ** 31), 2 ** 31 - 1]);
    // The largest doubles below 2**63 are integers int64 holds exactly.
    const below = 2 ** 63 - 1024;
    expect(valuesOf(bce.tensor([-(2 ** 63), below, 2 ** 53 + 2], { dtype: 'int64' }))).toEqual([
      -(2n ** 63n),
      BigInt(below),
      2n ** 53n + 2n,
    ]);
    expect(() => bce.tensor([2 ** 63], { dtype: 'int64' })).toThrow(RangeError);
    expect(valuesOf(bce.tensor(new Float32Array([3, 7]), { dtype: 'uint8' }))).toEqual([3, 7]);
  });

  test('factories', () => {
    expect(Array.from(bce.zeros([2, 2]).toArray() as Float32Array)).toEqual([0, 0, 0, 0]);
    expect(Array.from(bce.ones([3], { dtype: 'float64' }).toArray() as Float64Array)).toEqual([1, 1, 1]);
    const r = bce.randint(3, 7, [1000]).toArray() as BigInt64Array;
    expect(r.every((v) => v >= 3n && v < 7n)).toBe(true);
    expect(new Set(Array.from(r)).size).toBe(4);
  });

  test('randn is reproducible under manualSeed', () => {
    bce.manualSeed(1234);
    const a = bce.randn([64]).toArray();
    bce.manualSeed(1234);
    const b = bce.randn([64]).toArray();
    bce.manualSeed(4321);
    const c = bce.randn([64]).toArray();
    expect(Array.from(a as Float32Array)).toEqual(Array.from(b as Float32Array));
    expect(Array.from(a as Float32Array)).not.toEqual(Array.from(c as Float32Array));
    const values = Array.from(a as Float32Array);
    const mean = values.reduce((s, v) => s + v, 0) / values.length;
    expect(Math.abs(mean)).toBeLessThan(0.5);
  });

  test('arithmetic with tensors and scalars, reductions, reshape, to, detach', () => {
    const x = bce.tensor([1, 2, 3, 4], { shape: [2, 2], dtype: 'float64' });
    const y = bce.tensor([10, 20, 30, 40], { shape: [2, 2], dtype: 'float64' });
    expect(Array.from(x.add(y).toArray() as Float64Array)).toEqual([11, 22, 33, 44]);
    expect(Array.from(y.sub(x).toArray() as Float64Array)).toEqual([9, 18, 27, 36]);
    expect(Array.from(x.mul(2).toArray() as Float64Array)).toEqual([2, 4, 6, 8]);
    expect(Array.from(y.div(x).toArray() as Float64Array)).toEqual([10, 10, 10, 10]);
    expect(x.add(0.5).sum().item()).toBe(12);
    expect(x.mean().item()).toBe(2.5);
    expect(Array.from(x.sum([0]).toArray() as Float64Array)).toEqual([4, 6]);
    expect(x.sum([1], true).shape).toEqual([2, 1]);
    expect(x.reshape([4, 1]).shape).toEqual([4, 1]);
    expect(x.reshape([-1]).shape).toEqual([4]);
    expect(x.to('float32').dtype).toBe('float32');
    expect(x.to('cpu').device).toBe('cpu');
    expect(Array.from(x.to('int64').toArray() as BigInt64Array)).toEqual([1n, 2n, 3n, 4n]);
  });

  test('autograd: x*x summed gives grad 2x', () => {
    const values = [0.5, -1.25, 3, 7.5, -0.125, 2];
    const x = bce.tensor(values, { dtype: 'float64', requiresGrad: true });
    expect(x.requiresGrad).toBe(true);
    expect(x.grad).toBeNull();
    x.mul(x).sum().backward();
    expect(Array.from(x.grad!.toArray() as Float64Array)).toEqual(values.map((v) => 2 * v));
    const d = x.detach();
    expect(d.requiresGrad).toBe(false);
    x.requiresGrad = false;
    expect(x.requiresGrad).toBe(false);
  });

  test('backward({ retainGraph }) goes through the same graph twice; without it the second call says how', () => {
    const values = [0.5, -1.25, 3];
    const x = bce.tensor(values, { dtype: 'float64', requiresGrad: true });
    // x * x keeps x for its backward: the second pass needs the retained graph.
    const y = x.mul(x).sum();
    y.backward({ retainGraph: true });
    y.backward();
    expect(Array.from(x.grad!.toArray() as Float64Array)).toEqual(values.map((v) => 4 * v));
    // With an explicit gradient as well: d(sum(3 * x * x))/dx = 6x per pass, two passes.
    const x2 = bce.tensor(values, { dtype: 'float64', requiresGrad: true });
    const z = x2.mul(x2).mul(3);
    const ones = bce.ones([3], { dtype: 'float64' });
    z.backward(ones, { retainGraph: true });
    z.backward(ones);
    expect(Array.from(x2.grad!.toArray() as Float64Array)).toEqual(values.map((v) => 12 * v));
    // A third pass through y: its saved tensors are gone; the message names the option of this API.
    expect(() => y.backward()).toThrow(/\{ retainGraph: true \}/);
    expect(() => y.backward({ retain_graph: true } as never)).toThrow(/did you mean 'retainGraph'/);
    expect(() => y.backward({ retainGraph: 1 } as never)).toThrow(TypeError);
  });

  test('backward with an explicit gradient', () => {
    const x = bce.tensor([1, 2, 3], { requiresGrad: true });
    x.mul(3).backward(bce.tensor([1, 10, 100]));
    expect(Array.from(x.grad!.toArray() as Float32Array)).toEqual([3, 30, 300]);
  });

  test('a tensor is recognised by its tag, not instanceof', () => {
    const t = bce.zeros([1]);
    expect(bce.isTensor(t)).toBe(true);
    expect(bce.isTensor({ handle: {} })).toBe(false);
    expect(bce.isTensor(null)).toBe(false);
    // A structurally identical object without the tag is refused.
    const fake = Object.create(Object.getPrototypeOf(t));
    expect(bce.isTensor(fake)).toBe(false);
  });

  test('info() names the LibTorch in use', () => {
    const info = bce.info();
    expect(info.libtorchVersion).toMatch(/^\d+\.\d+/);
    expect(typeof info.cudaBuild).toBe('boolean');
    expect(info.binary).toMatch(/bootstrapped_ce\.node$/);
    // A CUDA build is one whose library folder holds libtorch_cuda.
    const libDir = path.dirname(info.loadedFrom);
    expect(info.cudaBuild).toBe(fs.readdirSync(libDir).some((name) => /^libtorch_cuda\./.test(name)));
    // The standard LibTorch's headers ask for: C++20 from 2.x's newest releases on, C++17 for 1.13.
    expect(info.cxxStandard).toBe(/^1\./.test(info.libtorchVersion) ? 'C++17' : 'C++20');
    if (process.platform === 'linux') {
      // The ABI of the LibTorch loaded: its exported C++ names carry the cxx11 ABI tag under the C++11 ABI.
      const c10 = fs.readdirSync(libDir).find((name) => /^libc10\.so/.test(name)) as string;
      const text = fs.readFileSync(path.join(libDir, c10)).toString('latin1');
      expect(info.cxx11Abi).toBe(/B5cxx11|St7__cxx11/.test(text));
    }
    expect(bce.cuda.deviceCount()).toBeGreaterThanOrEqual(0);
    expect(bce.cuda.isAvailable()).toBe(bce.cuda.deviceCount() > 0);
  });

  test('setNumThreads / getNumThreads', () => {
    const before = bce.getNumThreads();
    bce.setNumThreads(1);
    expect(bce.getNumThreads()).toBe(1);
    bce.setNumThreads(before);
    expect(bce.getNumThreads()).toBe(before);
  });
});

describe('memory', () => {
  test('memory() returns to its start after dispose()', () => {
    const start = bce.memory();
    const a = bce.zeros([100, 10]);
    const b = bce.ones([50], { dtype: 'float64' });
    expect(bce.memory().tensors).toBe(start.tensors + 2);
    expect(bce.memory().bytes).toBe(start.bytes + 100 * 10 * 4 + 50 * 8);
    a.dispose();
    b.dispose();
    b.dispose(); // twice does nothing
    expect(bce.memory()).toEqual(start);
    expect(a.isDisposed).toBe(true);
  });

  test('host memory is reported to V8 once per storage: a detach or a reshape adds nothing', () => {
    const external = () => bce.memory().reportedBytes;
    const mb = 2 ** 20;
    const start = external();
    const x = bce.zeros([4, mb / 4]); // 4 MiB of float32
    expect(external() - start).toBe(4 * mb);
    const leaf = x.detach();
    const view = x.reshape([mb]);
    expect(external() - start).toBe(4 * mb);
    // memory().bytes still counts each handle's view in full.
    expect(bce.memory().bytes).toBeGreaterThanOrEqual(12 * mb);
    x.dispose();
    expect(external() - start).toBe(0);
    leaf.dispose();
    view.dispose();
    expect(external() - start).toBe(0);
  });

  test('tidy() disposes everything made inside except what it returns', () => {
    const start = bce.memory();
    const kept = bce.tidy(() => {
      const x = bce.ones([10]);
      const y = x.mul(2).add(1);
      const z = y.sum();
      return { z, list: [y] };
    });
    expect(bce.memory().tensors).toBe(start.tensors + 2);
    expect(kept.z.item()).toBe(30);
    kept.z.dispose();
    kept.list[0].dispose();
    expect(bce.memory()).toEqual(start);
  });

  test('nested tidy moves returned tensors to the outer scope', () => {
    const start = bce.memory();
    bce.tidy(() => {
      const inner = bce.tidy(() => bce.zeros([3]).add(1));
      expect(inner.isDisposed).toBe(false);
      return undefined;
    });
    expect(bce.memory()).toEqual(start);
  });

  test('tidy() disposes on exceptions and refuses async functions', () => {
    const start = bce.memory();
    expect(() =>
      bce.tidy(() => {
        bce.zeros([4]);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(bce.memory()).toEqual(start);
    expect(() => bce.tidy((async () => bce.zeros([1])) as unknown as () => bce.Tensor)).toThrow(/synchronous/);
    expect(bce.memory()).toEqual(start);
  });
});

describe('bad arguments give named errors', () => {
  const named = (fn: () => unknown, name: string, pattern: RegExp) => {
    let error: Error | undefined;
    try {
      fn();
    } catch (e) {
      error = e as Error;
    }
    expect(error).toBeDefined();
    expect(error!.name).toBe(name);
    expect(error!.message).toMatch(pattern);
  };

  test.each([
    ['string data', () => bce.tensor('abc' as never), 'TypeError', /data must be/],
    ['ragged arrays', () => bce.tensor([[1, 2], [3]]), 'RangeError', /rectangular/],
    ['non-numeric element', () => bce.tensor([1, 'x'] as never), 'TypeError', /data\[1\]/],
    ['shape mismatch', () => bce.tensor([1, 2, 3], { shape: [2, 2] }), 'RangeError', /shape/],
    ['unknown dtype', () => bce.zeros([2], { dtype: 'float8' as never }), 'TypeError', /dtype must be one of/],
    ['bad device', () => bce.zeros([2], { device: 'gpu' }), 'TypeError', /device must be/],
    ['negative size', () => bce.zeros([-1]), 'RangeError', /shape\[0\]/],
    ['fractional size', () => bce.zeros([1.5]), 'RangeError', /shape\[0\]/],
    ['NaN size', () => bce.zeros([NaN]), 'RangeError', /shape\[0\]/],
    ['shape not an array', () => bce.zeros(3 as never), 'TypeError', /shape must be an array/],
    ['enormous size', () => bce.zeros([2 ** 40, 2 ** 40]), 'RangeError', /2\^53/],
    ['fractional int data', () => bce.tensor([1.5], { dtype: 'int64' }), 'RangeError', /not an integer/],
    ['requiresGrad on int', () => bce.zeros([2], { dtype: 'int64', requiresGrad: true }), 'TypeError', /floating/],
    ['randint high <= low', () => bce.randint(5, 5, [2]), 'RangeError', /high/],
    ['manualSeed negative', () => bce.manualSeed(-1), 'RangeError', /seed/],
    ['setNumThreads 0', () => bce.setNumThreads(0), 'RangeError', /threads/],
    ['item on many', () => bce.zeros([2]).item(), 'RangeError', /exactly one element/],
    ['add a string', () => bce.zeros([2]).add('1' as never), 'TypeError', /other must be a Tensor/],
    ['tidy without a function', () => bce.tidy(3 as never), 'TypeError', /fn must be a function/],
    ['options not an object', () => bce.zeros([2], 'float32' as never), 'TypeError', /options must be an object/],
  ])('%s', (_label, fn, name, pattern) => named(fn, name, pattern));

  test('unallocatable tensors fail with an error, and the process goes on', () => {
    named(
      () => bce.zeros([2 ** 26, 2 ** 26]),
      'RangeError',
      /zeros: shape \[67108864,67108864\].*could not be allocated/,
    );
    expect(bce.ones([2]).sum().item()).toBe(2);
  });

  test('LibTorch errors carry its message', () => {
    named(() => bce.zeros([2, 3]).add(bce.zeros([4])), 'Error', /size of tensor a \(3\) must match/);
    named(() => bce.zeros([2]).sum().backward(), 'Error', /does not require grad/);
  });

  test('using a disposed tensor throws; disposing twice does nothing', () => {
    const t = bce.zeros([2]);
    t.dispose();
    t.dispose();
    named(() => t.sum(), 'Error', /disposed/);
    named(() => bce.ones([2]).add(t), 'Error', /other was disposed/);
  });

  test('shape, dtype and device throw after dispose, although the facade caches them', () => {
    const t = bce.zeros([2, 3]);
    expect([t.shape, t.dtype, t.device]).toEqual([[2, 3], 'float32', 'cpu']);
    t.dispose();
    named(() => t.shape, 'Error', /^the tensor was disposed and can no longer be used$/);
    named(() => t.dtype, 'Error', /^the tensor was disposed/);
    named(() => t.device, 'Error', /^the tensor was disposed/);
    // The cached sizes are not handed out: changing the returned shape changes nothing.
    const u = bce.zeros([4]);
    u.shape.push(7);
    expect(u.shape).toEqual([4]);
  });

  test('a handle freed behind the facade is refused natively, naming the argument', () => {
    const x = bce.randn([2, 3]);
    const y = bce.tensor([0, 2], { dtype: 'int64' });
    // Shape, dtype and device cached by a first call, so the facade's checks pass on what it remembers.
    bce.crossEntropy(x, y).dispose();
    // A second Tensor on the same native handle: disposing it frees the handle that x still holds.
    const alias = new bce.Tensor(x.handle);
    alias.dispose();
    expect(x.isDisposed).toBe(true);
    named(() => bce.crossEntropy(x, y), 'Error', /^input was disposed and can no longer be used$/);
    named(() => bce.crossEntropy(bce.randn([2, 3]), y, { weight: alias }), 'Error', /weight was disposed/);
  });

  test('CUDA requested without CUDA gives a clear error', () => {
    if (bce.cuda.isAvailable()) {
      console.warn('skipped: a GPU is present, so CUDA requests succeed');
      return;
    }
    named(() => bce.zeros([2], { device: 'cuda' }), 'Error', /CUDA is not available/);
    named(() => bce.zeros([2]).to('cuda:0'), 'Error', /CUDA is not available/);
  });
});

describe('native methods refuse receivers of the wrong kind', () => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- calls native methods with wrong receivers on purpose
  const raw = nativeBinding as Record<string, any>;
  const named = (fn: () => unknown, pattern: RegExp) => {
    let error: Error | undefined;
    try {
      fn();
    } catch (e) {
      error = e as Error;
    }
    expect(error?.name).toBe('TypeError');
    expect(error?.message).toMatch(pattern);
  };

  test('a tensor method called on another native object, or a plain one, throws instead of crashing', () => {
    const tensor = bce.ones([2]).handle as unknown as Record<string, (...a: unknown[]) => unknown>;
    const optimizer = new raw.OptimizerHandle('sgd', [bce.ones([2], { requiresGrad: true }).handle], {
      lr: 0.1,
      momentum: 0,
      weightDecay: 0,
      nesterov: false,
      dampening: 0,
    });
    named(() => tensor.sum.call(optimizer), /wrong kind/);
    named(() => tensor.sum.call({}), /wrong kind/);
    named(() => optimizer.step.call(tensor), /wrong kind/);
    named(() => raw.ModuleHandle.prototype.forward.call(tensor), /wrong kind/);
    named(() => raw.ModuleHandle.load.call(raw.TensorHandle, 'models/segnet.pt'), /ModuleHandle class/);
    named(() => raw.ModuleHandle.load.call(undefined, 'models/segnet.pt'), /ModuleHandle class/);
    expect(bce.ones([3]).sum().item()).toBe(3);
  });

  test('data in a SharedArrayBuffer is refused', () => {
    const shared = new Float32Array(new SharedArrayBuffer(8));
    expect(() => bce.tensor(shared)).toThrow(/SharedArrayBuffer/);
  });
});

describe('inspection (console.log)', () => {
  test('a tensor shows shape, dtype, device, requiresGrad and its values', () => {
    const t = bce.tensor(
      [
        [1.5, 2],
        [3, 4.123456789],
      ],
      { requiresGrad: true },
    );
    expect(inspect(t)).toBe('Tensor(shape=[2, 2], dtype=float32, device=cpu, requiresGrad=true) [1.5, 2, 3, 4.1235]');
    const ints = bce.tensor(
      Array.from({ length: 10 }, (_, i) => i * 3),
      { dtype: 'int64' },
    );
    expect(inspect(ints)).toBe('Tensor(shape=[10], dtype=int64, device=cpu) [0, 3, 6, 9, 12, 15, ..., 24, 27]');
    expect(inspect(bce.zeros([400, 400]))).toBe(
      'Tensor(shape=[400, 400], dtype=float32, device=cpu) (160000 elements)',
    );
    expect(inspect({ nested: bce.tensor([true, false]) })).toContain(
      'Tensor(shape=[2], dtype=bool, device=cpu) [1, 0]',
    );
    t.dispose();
    expect(inspect(t)).toBe('Tensor(disposed)');
  });

  test('a module and an optimizer show what they hold', () => {
    const module = bce.jit.load('models/segnet.pt');
    const params = module.parameters();
    const values = params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    expect(inspect(module)).toBe(
      `Module(parameters=${params.length} tensors, ${values} values, device=cpu, training=true)`,
    );
    const sgd = new bce.optim.SGD(params, { lr: 0.5, momentum: 0.9 });
    expect(inspect(sgd)).toBe(
      `SGD(lr=0.5, momentum=0.9, dampening=0, weightDecay=0, nesterov=false, params=${params.length})`,
    );
  });
});
