/**
 * The hard edges: inputs and states that used to abort the process, give silently wrong results or fail with an
 * unclear message. Each must now end in a clear error naming what is wrong, or in the right answer.
 *
 * The TorchScript fixtures (modules returning sparse, nested, MKL-DNN, complex, quantized and int8 tensors, one
 * with sparse gradients, a dict with a "__proto__" key, an in-place mul_) and PyTorch's gradient for a fixed case
 * are made at test time by test/helpers/hardening-fixtures.py with the Python whose torch matches the addon's
 * LibTorch.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import * as bce from '../lib';
import { findTorchPython } from './helpers/torch-python';

const root = path.join(__dirname, '..');
const python = findTorchPython();
const describeWithTorch = python.path ? describe : describe.skip;
if (!python.path) {
  console.warn(`hardening: the TorchScript cases are skipped: no Python with the addon's torch (${python.reason})`);
}

let fixtures = '';
beforeAll(() => {
  if (!python.path) return;
  fixtures = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-hardening-'));
  const made = spawnSync(python.path, [path.join(__dirname, 'helpers', 'hardening-fixtures.py'), fixtures], {
    encoding: 'utf8',
    timeout: 180_000,
  });
  if (made.status !== 0) throw new Error(`hardening-fixtures.py failed: ${made.stderr}`);
}, 200_000);

afterAll(() => {
  if (fixtures) fs.rmSync(fixtures, { recursive: true, force: true });
});

const fixture = (name: string): string => path.join(fixtures, name);

/** The same logits (2, 3, 4, 4) and targets (2, 4, 4) as hardening-fixtures.py builds, exact in float32. */
function fixedCase(): { logits: bce.Tensor; target: bce.Tensor } {
  const logits = Float32Array.from({ length: 96 }, (_, i) => ((i * i * 17 + 3 * i) % 97) / 16 - 3);
  const target = Int32Array.from({ length: 32 }, (_, i) => (i * 7) % 3);
  return {
    logits: bce.tensor(logits, { shape: [2, 3, 4, 4], requiresGrad: true }),
    target: bce.tensor(target, { shape: [2, 4, 4], dtype: 'int64' }),
  };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

describeWithTorch('unsupported tensors from a TorchScript module are refused by name, never abort', () => {
  // Each case is what used to abort the process (LibTorch threw outside the error guard): run in a child.
  let lines = new Map<string, { name?: string; message?: string; value?: string }>();
  let child: ReturnType<typeof spawnSync>;
  beforeAll(() => {
    child = spawnSync(
      process.execPath,
      [require.resolve('ts-node/dist/bin.js'), '--transpile-only', 'test/helpers/hardening-child.ts', fixtures],
      { cwd: root, encoding: 'utf8', timeout: 180_000 },
    );
    lines = new Map(
      String(child.stdout)
        .split('\n')
        .filter((l) => l.startsWith('CASE '))
        .map((l) => {
          const json = l.indexOf(' {');
          return [l.slice(5, json), JSON.parse(l.slice(json + 1))];
        }),
    );
  }, 200_000);

  test('the child process ends normally (no abort)', () => {
    expect({ status: child.status, signal: child.signal }).toEqual({ status: 0, signal: null });
  });

  test.each([
    ['sparse toArray', 'a tensor of layout Sparse'],
    ['nested shape', 'a nested tensor'],
    ['nested into the loss', 'a nested tensor'],
    ['mkldnn toArray', 'a tensor of layout Mkldnn'],
    ['complex item', 'a tensor of dtype torch.complex64'],
    ['quantized toArray', 'a tensor of dtype torch.quint8'],
    ['int8 toArray', 'a tensor of dtype torch.int8'],
    ['raw sparse', 'a tensor of layout Sparse'],
    ['sparse grad toArray', 'a tensor of layout Sparse', 'grad'],
    ['raw complex', 'a tensor of dtype torch.complex64'],
  ])('%s: TypeError naming where it came from and what it is', (name, what, source = "forward's output") => {
    expect(lines.get(name)).toEqual({
      name: 'TypeError',
      message: expect.stringContaining(`${source} is ${what}, which this package does not support`),
    });
  });
});

describeWithTorch('a TorchScript dict output with a "__proto__" key', () => {
  test('keeps it as an own property; the prototype stays Object.prototype', () => {
    const model = bce.jit.load(fixture('proto_dict.pt'));
    const x = bce.tensor([1, 2, 3]);
    const out = model.forward<{ [key: string]: bce.ModuleOutput }>(x);
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.keys(out).sort()).toEqual(['__proto__', 'a']);
    const proto = Object.getOwnPropertyDescriptor(out, '__proto__')?.value as bce.Tensor;
    expect(bce.isTensor(proto)).toBe(true);
    expect(Array.from(proto.toArray() as Float32Array)).toEqual([1, 2, 3]);
    expect(Array.from((out.a as bce.Tensor).toArray() as Float32Array)).toEqual([2, 4, 6]);
  });
});

describeWithTorch('the fused loss and tensors changed in place between forward and backward', () => {
  let torchResult: { loss: number; grad: number[] };
  beforeAll(() => {
    torchResult = JSON.parse(fs.readFileSync(fixture('gradient.json'), 'utf8'));
  });

  test('unmodified: the fused loss and gradient match PyTorch', () => {
    const { logits, target } = fixedCase();
    const result = bce.bootstrappedCrossEntropyWithStats(logits, target, 0, 0.5, { impl: 'fused' });
    expect(result.fused).toBe(true);
    expect(Math.abs(result.loss.item() - torchResult.loss)).toBeLessThan(1e-6);
    result.loss.backward();
    expect(maxAbsDiff(logits.grad!.toArray() as Float32Array, torchResult.grad)).toBeLessThan(1e-6);
  });

  test('an optimizer step on the logits before backward() raises, naming what happened', () => {
    const { logits, target } = fixedCase();
    const loss = bce.bootstrappedCrossEntropy(logits, target, 0, 0.5, { impl: 'fused' });
    const opt = new bce.optim.SGD([logits], { lr: 1 });
    logits.mul(logits).sum().backward(); // a gradient of 2x, so the step negates the logits
    opt.step();
    opt.zeroGrad();
    expect(() => loss.backward()).toThrow(/changed in place after the forward/);
  });

  test('an in-place mul_ (in a TorchScript module) on the logits before backward() raises', () => {
    const { logits: leaf, target } = fixedCase();
    const logits = leaf.mul(1); // a non-leaf: in-place on a leaf that requires grad is refused by LibTorch
    const loss = bce.bootstrappedCrossEntropy(logits, target, 0, 0.5, { impl: 'fused' });
    bce.jit.load(fixture('inplace_mul.pt')).forward(logits);
    expect(() => loss.backward()).toThrow(/changed in place after the forward/);
  });

  test('an optimizer step also stops a saved builtin op (mul) from giving the gradient of old values', () => {
    const x = bce.tensor([1, 2, 3], { requiresGrad: true });
    const square = x.mul(x).sum(); // saves x
    const opt = new bce.optim.SGD([x], { lr: 0.1 });
    x.sum().backward();
    opt.step();
    expect(() => square.backward()).toThrow(/changed in place after the forward/);
  });

  test('a step skips parameters without a gradient, so their saved graphs stay usable', () => {
    const a = bce.tensor([1, 2], { requiresGrad: true });
    const b = bce.tensor([3, 4], { requiresGrad: true });
    const square = b.mul(b).sum();
    const opt = new bce.optim.SGD([a, b], { lr: 0.1 });
    a.sum().backward();
    opt.step();
    square.backward();
    expect(Array.from(b.grad!.toArray() as Float32Array)).toEqual([6, 8]); // 2b, b unchanged
  });
});

describe('optimizers refuse a parameter given twice', () => {
  test('through two handles on the same tensor (parameters() called twice)', () => {
    const model = bce.jit.load(path.join(root, 'models', 'segnet.pt'));
    const first = model.parameters();
    const again = model.parameters();
    expect(first[0]).not.toBe(again[0]);
    expect(() => new bce.optim.Adam([...first, again[2]])).toThrow(
      expect.objectContaining({
        name: 'RangeError',
        message: expect.stringContaining(`params[${first.length}] is the same tensor as params[2]`),
      }),
    );
    // Distinct tensors that share memory are distinct parameters, as in PyTorch.
    expect(() => new bce.optim.SGD([first[0], first[1]], { lr: 0.1 })).not.toThrow();
  });
});

describe('requiresGrad = false on a non-leaf', () => {
  test('is refused (PyTorch refuses it too); on a leaf it clears the flag', () => {
    const x = bce.tensor([1, 2], { requiresGrad: true });
    const y = x.mul(2);
    expect(() => {
      y.requiresGrad = false;
    }).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringContaining('non-leaf') }));
    expect(y.requiresGrad).toBe(true);
    y.requiresGrad = true; // already true: allowed, as in PyTorch
    x.requiresGrad = false;
    expect(x.requiresGrad).toBe(false);
  });
});

describe('setNumThreads is process-wide', () => {
  // A worker loads the native binary directly (no TypeScript to compile) and answers getNumThreads/setNumThreads.
  const WORKER = `
const { parentPort, workerData } = require('worker_threads');
const addon = require(workerData.binary);
parentPort.on('message', (m) => {
  if (m.set) addon.setNumThreads(m.set);
  parentPort.postMessage(addon.getNumThreads());
});`;

  test('a count set in the main thread reaches a worker, and one set in a worker reaches the main thread', async () => {
    const before = bce.getNumThreads();
    const worker = new Worker(WORKER, { eval: true, workerData: { binary: bce.info().binary } });
    const ask = (message: { set?: number }) =>
      new Promise<number>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.postMessage(message);
      });
    try {
      const started = await ask({});
      bce.setNumThreads(started === 3 ? 2 : 3);
      const mainSet = bce.getNumThreads();
      expect(await ask({})).toBe(mainSet);
      await ask({ set: 5 });
      expect(bce.getNumThreads()).toBe(5);
    } finally {
      await worker.terminate();
      bce.setNumThreads(before);
    }
  });
});

describe('clear messages', () => {
  test('holes in arrays name the missing element', () => {
    // [a, , c] written out: the linter refuses array literals with holes.
    const holey = (...values: number[]): number[] => {
      const array = values.slice();
      delete array[1];
      return array;
    };
    expect(() => bce.tensor(holey(1, 2, 3))).toThrow(/data\[1\] is missing: the array has a hole there/);
    expect(() => bce.tensor([[1, 2], holey(3, 4)])).toThrow(/data\[1\]\[1\] is missing/);
    expect(() => bce.zeros(holey(2, 2, 3))).toThrow(/shape\[1\] is missing/);
    expect(() => bce.ones([2, 3]).reshape(holey(3, 1, 2))).toThrow(/shape\[1\] is missing/);
    expect(() => bce.ones([2, 3]).sum(holey(0, 0, 1))).toThrow(/dim\[1\] is missing/);
    // Before: forEach passed over the hole ("shape [3] holds 3 elements but data has 2", or the native
    // "shape must be an integer").
  });

  test("to('float128') says it is neither a dtype nor a device, listing both", () => {
    expect(() => bce.ones([1]).to('float128')).toThrow(
      expect.objectContaining({
        name: 'TypeError',
        message: expect.stringMatching(/"float128" is neither a dtype \('float32'.*'bool'\) nor a device \('cpu'/),
      }),
    );
  });

  test('jit.load of a directory says it is a directory', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-dir-'));
    try {
      expect(() => bce.jit.load(dir)).toThrow(
        expect.objectContaining({ name: 'TypeError', message: expect.stringContaining('is a directory') }),
      );
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  test('a method called on a foreign this names the class', () => {
    const proto = bce.Tensor.prototype;
    expect(() => proto.sum.call({} as never)).toThrow(
      /^Tensor\.sum was called on an object \(Object\), which is not a Tensor$/,
    );
    expect(() => Object.getOwnPropertyDescriptor(proto, 'dtype')!.get!.call(null)).toThrow(
      /Tensor\.dtype was called on null/,
    );
    expect(() => Object.getOwnPropertyDescriptor(proto, 'shape')!.get!.call(undefined)).toThrow(
      /Tensor\.shape was called on undefined/,
    );
    expect(() => proto.toArray.call(Object.create(proto))).toThrow(/Tensor\.toArray was called on .*not a Tensor/);
    expect(() => new bce.Tensor({} as never)).toThrow(
      expect.objectContaining({
        name: 'TypeError',
        message: expect.stringContaining('new Tensor() takes a native tensor handle'),
      }),
    );
    expect(() => bce.jit.Module.prototype.forward.call({} as never)).toThrow(
      /Module\.forward was called on .*not a Module/,
    );
    expect(() => bce.optim.SGD.prototype.step.call({} as never)).toThrow(
      /Optimizer\.step was called on .*not an Optimizer/,
    );
  });

  test('loadStateDict refuses an amsgrad Adam state without maxExpAvgSq, naming the key and the index', () => {
    const p = [bce.tensor([1, 2], { requiresGrad: true }), bce.tensor([3], { requiresGrad: true })];
    const opt = new bce.optim.Adam(p, { amsgrad: true });
    p.forEach((t) => t.mul(t).sum().backward());
    opt.step();
    const state = opt.stateDict();
    delete state.state[1]!.maxExpAvgSq;
    const fresh = new bce.optim.Adam(
      p.map((t) => t.detach()),
      { amsgrad: true },
    );
    expect(() => fresh.loadStateDict(state)).toThrow(
      expect.objectContaining({
        name: 'TypeError',
        message: expect.stringContaining('stateDict.state[1].maxExpAvgSq must be a Tensor'),
      }),
    );
    // Without amsgrad the key is optional.
    const plain = new bce.optim.Adam(p.map((t) => t.detach()));
    expect(() => plain.loadStateDict({ ...state, options: { ...state.options, amsgrad: false } })).not.toThrow();
  });
});
