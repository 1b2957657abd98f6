/**
 * Training from Node: TorchScript modules (jit.load, forward, parameters, train/eval, save/load), noGrad, and
 * the optimizers' behaviour (the loss falls, state dicts resume exactly, arguments are checked). Numerical
 * parity of the optimizers with PyTorch is in optim-parity.test.ts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as bce from '../lib';

const MODEL = path.join(__dirname, '..', 'models', 'segnet.pt');

function tmpFile(name: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bce-train-')), name);
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function values(t: bce.Tensor): Float32Array {
  return t.toArray() as Float32Array;
}

/** A fixed small batch: images with a bright square whose pixels are class 1, the rest class 0 or 2 (a stripe). */
function fixedBatch(n = 2, size = 32): { images: bce.Tensor; labels: bce.Tensor } {
  const plane = size * size;
  const images = new Float32Array(n * 3 * plane);
  const labels = new Int32Array(n * plane);
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const i = y * size + x;
        let cls = 0;
        if (x >= 8 + b * 4 && x < 20 + b * 4 && y >= 6 && y < 18) cls = 1;
        if (y === 24 + b) cls = 2;
        labels[b * plane + i] = cls;
        const colour = [
          [-0.3, -0.3, -0.3],
          [0.4, -0.1, -0.2],
          [-0.1, 0.1, 0.5],
        ][cls];
        for (let c = 0; c < 3; c++) images[(b * 3 + c) * plane + i] = colour[c] + 0.05 * Math.sin(i * (c + 1));
      }
    }
  }
  return {
    images: bce.tensor(images, { shape: [n, 3, size, size] }),
    labels: bce.tensor(labels, { shape: [n, size, size] }),
  };
}

describe('jit.load and Module', () => {
  test('loads the committed network and runs forward to N x C x H x W logits', () => {
    const model = bce.jit.load(MODEL);
    const out = model.forward(bce.zeros([2, 3, 64, 64]));
    expect(out.shape).toEqual([2, 5, 64, 64]);
    expect(out.dtype).toBe('float32');
    expect(out.requiresGrad).toBe(true);
  });

  test('namedParameters have PyTorch names and share tensors with parameters()', () => {
    const model = bce.jit.load(MODEL);
    const named = model.namedParameters();
    expect(named.map(([name]) => name)).toEqual([
      'conv1.weight',
      'conv1.bias',
      'conv2.weight',
      'conv2.bias',
      'conv3.weight',
      'conv3.bias',
      'head.weight',
      'head.bias',
    ]);
    expect(named[0][1].shape).toEqual([16, 3, 3, 3]);
    const params = model.parameters();
    expect(params).toHaveLength(8);
    expect(params.every((p) => p.requiresGrad)).toBe(true);
    expect(maxDiff(values(params[7]), values(named[7][1]))).toBe(0);
  });

  test('train() / eval() toggle the mode', () => {
    const model = bce.jit.load(MODEL);
    expect(model.training).toBe(true);
    expect(model.eval().training).toBe(false);
    expect(model.train().training).toBe(true);
    expect(model.train(false).training).toBe(false);
  });

  test('to(cpu) keeps the parameters; to(cuda) without CUDA is a clear error', () => {
    const model = bce.jit.load(MODEL);
    const before = values(model.parameters()[0]);
    model.to('cpu');
    expect(maxDiff(values(model.parameters()[0]), before)).toBe(0);
    if (!bce.cuda.isAvailable()) expect(() => model.to('cuda')).toThrow(/CUDA is not available/);
    expect(() => model.to('gpu')).toThrow(TypeError);
  });

  test('save / load round trip gives the same outputs, including trained parameters', () => {
    const model = bce.jit.load(MODEL);
    const { images, labels } = fixedBatch();
    const optimizer = new bce.optim.Adam(model.parameters(), { lr: 1e-2 });
    for (let i = 0; i < 3; i++) {
      const loss = bce.crossEntropy(model.forward(images), labels);
      optimizer.zeroGrad();
      loss.backward();
      optimizer.step();
    }
    model.eval();
    const expected = bce.noGrad(() => values(model.forward(images)));
    const file = tmpFile('trained.pt');
    model.save(file);
    const loaded = bce.jit.load(file).eval();
    const actual = bce.noGrad(() => values(loaded.forward(images)));
    expect(maxDiff(actual, expected)).toBe(0);
    // ... and it differs from the untrained file, so the round trip carried the trained weights.
    const fresh = bce.noGrad(() => values(bce.jit.load(MODEL).eval().forward(images)));
    expect(maxDiff(fresh, expected)).toBeGreaterThan(1e-4);
  });

  test('bad arguments name the argument', () => {
    expect(() => bce.jit.load(42 as unknown as string)).toThrow(
      new TypeError('path must be a non-empty string, got 42'),
    );
    expect(() => bce.jit.load(MODEL, { device: 'tpu' })).toThrow(/device must be/);
    expect(() => bce.jit.load(MODEL, 'cpu' as unknown as bce.LoadOptions)).toThrow(/options must be an object/);
    expect(() => bce.jit.load('/no/such/model.pt')).toThrow(/no such file/);
    const notAModel = tmpFile('not-a-model.pt');
    fs.writeFileSync(notAModel, 'hello');
    expect(() => bce.jit.load(notAModel)).toThrow(/zip archive/i);
    const model = bce.jit.load(MODEL);
    expect(() => model.forward('x' as unknown as bce.Tensor)).toThrow(/inputs\[0\] must be a Tensor/);
    expect(() => model.forward(bce.zeros([1, 4, 8, 8]))).toThrow(/channels/); // LibTorch's shape error, as an exception
    expect(() => model.train('yes' as unknown as boolean)).toThrow(/on must be a boolean/);
    expect(() => model.save('')).toThrow(TypeError);
    model.dispose();
    expect(model.isDisposed).toBe(true);
    expect(() => model.forward(bce.zeros([1, 3, 8, 8]))).toThrow(/disposed/);
  });
});

describe('noGrad', () => {
  test('turns recording off inside and restores it after', () => {
    const x = bce.ones([3], { requiresGrad: true });
    expect(bce.isGradEnabled()).toBe(true);
    const y = bce.noGrad(() => {
      expect(bce.isGradEnabled()).toBe(false);
      expect(bce.noGrad(() => bce.isGradEnabled())).toBe(false); // nested
      expect(bce.isGradEnabled()).toBe(false);
      return x.mul(2);
    });
    expect(y.requiresGrad).toBe(false);
    expect(bce.isGradEnabled()).toBe(true);
  });

  test('restores the mode when fn throws, and the exception passes through unchanged', () => {
    const error = new RangeError('from the callback');
    expect(() =>
      bce.noGrad(() => {
        throw error;
      }),
    ).toThrow(error);
    expect(bce.isGradEnabled()).toBe(true);
    expect(bce.ones([2], { requiresGrad: true }).mul(2).requiresGrad).toBe(true);
  });

  test('refuses a non-function and an async fn', () => {
    expect(() => bce.noGrad(3 as unknown as () => void)).toThrow(new TypeError('fn must be a function, got 3'));
    expect(() => bce.noGrad(async () => 1)).toThrow(/synchronous/);
    expect(bce.isGradEnabled()).toBe(true);
  });
});

describe('training', () => {
  test('the loss falls over 50 iterations (bootstrapped cross-entropy, Adam)', () => {
    bce.setNumThreads(2);
    const model = bce.jit.load(MODEL);
    const optimizer = new bce.optim.Adam(model.parameters(), { lr: 1e-2 });
    const { images, labels } = fixedBatch();
    const losses: number[] = [];
    for (let iteration = 0; iteration < 50; iteration++) {
      losses.push(
        bce.tidy(() => {
          const loss = bce.bootstrappedCrossEntropy(model.forward(images), labels, iteration, 0.3, { warmup: 5 });
          optimizer.zeroGrad();
          loss.backward();
          optimizer.step();
          return loss.item();
        }),
      );
    }
    const first = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(last).toBeLessThan(0.5 * first);
  });

  test('SGD with momentum also lowers the loss, and updates the module in place', () => {
    const model = bce.jit.load(MODEL);
    const optimizer = new bce.optim.SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
    const { images, labels } = fixedBatch();
    const lossAt = () => bce.noGrad(() => bce.crossEntropy(model.forward(images), labels).item());
    const before = lossAt();
    for (let i = 0; i < 20; i++) {
      bce.tidy(() => {
        const loss = bce.crossEntropy(model.forward(images), labels);
        optimizer.zeroGrad();
        loss.backward();
        optimizer.step();
      });
    }
    expect(lossAt()).toBeLessThan(before);
  });

  test('zeroGrad drops gradients (default) or zeroes them in place', () => {
    const p = bce.ones([4], { requiresGrad: true });
    const optimizer = new bce.optim.SGD([p], { lr: 0.1 });
    p.mul(3).sum().backward();
    expect(Array.from(values(p.grad!))).toEqual([3, 3, 3, 3]);
    optimizer.zeroGrad(false);
    expect(Array.from(values(p.grad!))).toEqual([0, 0, 0, 0]);
    optimizer.zeroGrad();
    expect(p.grad).toBeNull();
    optimizer.step(); // no gradient: nothing to do
    expect(Array.from(values(p))).toEqual([1, 1, 1, 1]);
  });

  test('lr is readable and settable', () => {
    const p = bce.ones([2], { requiresGrad: true });
    const optimizer = new bce.optim.SGD([p], { lr: 0.5 });
    expect(optimizer.lr).toBe(0.5);
    optimizer.lr = 0.25;
    expect(optimizer.lr).toBe(0.25);
    p.sum().backward();
    optimizer.step();
    expect(Array.from(values(p))).toEqual([0.75, 0.75]);
    expect(() => {
      optimizer.lr = -1;
    }).toThrow(RangeError);
    expect(new bce.optim.Adam([p]).lr).toBe(1e-3);
    expect(new bce.optim.AdamW([p]).options).toMatchObject({ weightDecay: 1e-2, betas: [0.9, 0.999], eps: 1e-8 });
  });

  const grads = (step: number, n: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(0.7 * i + 1.3 * step) + 0.1 * step);

  function run(make: (p: bce.Tensor[]) => bce.optim.Optimizer, steps: number, resumeAt?: number): Float32Array {
    const init = Float32Array.from({ length: 12 }, (_, i) => Math.cos(i) * 0.5);
    const p = bce.tensor(init, { shape: [3, 4], requiresGrad: true });
    let optimizer = make([p]);
    for (let step = 0; step < steps; step++) {
      if (step === resumeAt) {
        const saved = optimizer.stateDict();
        optimizer = make([p]);
        optimizer.lr = 123; // overwritten by loadStateDict
        optimizer.loadStateDict(saved);
      }
      optimizer.zeroGrad();
      p.mul(bce.tensor(grads(step, 12), { shape: [3, 4] }))
        .sum()
        .backward();
      optimizer.step();
    }
    return values(p);
  }

  test.each([
    [
      'SGD with momentum',
      (p: bce.Tensor[]) => new bce.optim.SGD(p, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 }),
    ],
    ['Adam', (p: bce.Tensor[]) => new bce.optim.Adam(p, { lr: 0.01, weightDecay: 0.1 })],
    ['AdamW with amsgrad', (p: bce.Tensor[]) => new bce.optim.AdamW(p, { lr: 0.01, amsgrad: true })],
  ])('%s: stateDict / loadStateDict resume exactly where an uninterrupted run goes', (_, make) => {
    const uninterrupted = run(make, 5);
    const resumed = run(make, 5, 3);
    expect(maxDiff(resumed, uninterrupted)).toBe(0);
    // Without the state, the trajectory differs (so the test can fail).
    const p = bce.tensor(
      Float32Array.from({ length: 12 }, (_, i) => Math.cos(i) * 0.5),
      { shape: [3, 4], requiresGrad: true },
    );
    expect(make([p]).stateDict().state).toEqual([null]);
  });

  test('stateDict holds copies and the step count', () => {
    const p = bce.ones([2], { requiresGrad: true });
    const optimizer = new bce.optim.Adam([p], { lr: 0.1 });
    for (let i = 0; i < 2; i++) {
      optimizer.zeroGrad();
      p.sum().backward();
      optimizer.step();
    }
    const sd = optimizer.stateDict();
    expect(sd.kind).toBe('adam');
    expect(sd.options.lr).toBe(0.1);
    expect(sd.state[0]!.step).toBe(2);
    const expAvg = values(sd.state[0]!.expAvg!);
    expect(expAvg[0]).toBeCloseTo(1 - 0.9 ** 2, 6);
    optimizer.step();
    expect(maxDiff(values(sd.state[0]!.expAvg!), expAvg)).toBe(0); // not aliased
  });

  test('bad arguments name the argument', () => {
    const p = bce.ones([2], { requiresGrad: true });
    expect(() => new bce.optim.SGD([p], undefined as unknown as bce.SGDOptions)).toThrow(TypeError);
    expect(() => new bce.optim.SGD([p], {} as bce.SGDOptions)).toThrow(
      new TypeError('lr must be a number, got undefined'),
    );
    expect(() => new bce.optim.SGD([p], { lr: 0 })).toThrow(new RangeError('lr must be > 0, got 0'));
    expect(() => new bce.optim.SGD([p], { lr: 0.1, momentum: -1 })).toThrow(/momentum must be >= 0/);
    expect(() => new bce.optim.SGD([p], { lr: 0.1, nesterov: true })).toThrow(/nesterov needs momentum/);
    expect(() => new bce.optim.SGD([], { lr: 0.1 })).toThrow(RangeError);
    expect(() => new bce.optim.SGD('p' as unknown as bce.Tensor[], { lr: 0.1 })).toThrow(
      /params must be an array of Tensors/,
    );
    expect(() => new bce.optim.SGD([p, 3] as unknown as bce.Tensor[], { lr: 0.1 })).toThrow(
      /params\[1\] must be a Tensor/,
    );
    expect(() => new bce.optim.SGD([bce.ones([2], { dtype: 'int64' })], { lr: 0.1 })).toThrow(
      /params\[0\] must be a floating-point/,
    );
    expect(() => new bce.optim.Adam([p], { betas: [0.9, 1] })).toThrow(
      new RangeError('betas[1] must be in [0, 1), got 1'),
    );
    expect(() => new bce.optim.Adam([p], { betas: 0.9 as unknown as [number, number] })).toThrow(
      /betas must be an array/,
    );
    expect(() => new bce.optim.Adam([p], { eps: 0 })).toThrow(/eps must be > 0/);
    expect(() => new bce.optim.AdamW([p], { amsgrad: 1 as unknown as boolean })).toThrow(/amsgrad must be a boolean/);
    const adam = new bce.optim.Adam([p]);
    expect(() => adam.zeroGrad('no' as unknown as boolean)).toThrow(/setToNone must be a boolean/);
    const sgdState = new bce.optim.SGD([p], { lr: 0.1 }).stateDict();
    expect(() => adam.loadStateDict(sgdState)).toThrow(/stateDict.kind/);
    const q = bce.ones([3], { requiresGrad: true });
    const other = new bce.optim.Adam([q]);
    q.sum().backward();
    other.step();
    expect(() => adam.loadStateDict(other.stateDict())).toThrow(/has shape \[3\] but params\[0\] has shape \[2\]/);
    expect(() => adam.loadStateDict({ ...other.stateDict(), state: [] })).toThrow(/has 0 entries/);
  });
});
