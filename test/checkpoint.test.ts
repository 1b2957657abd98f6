/**
 * Checkpoints in PyTorch's format: save/load round trips in Node; files written by Node loaded by each torch
 * Python available (Debian's 1.13, PyPI's 2.x: torch.load with weights_only=True where the version can), files
 * written by torch.save loaded by Node, all compared value for value; refusal of code and damaged files (fuzz in a
 * child process); one-call training checkpoints that resume bit for bit.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as bce from '../lib';
import { Desc, PY_DESCRIBE, asNodeSees, describeLoaded, describeSaved, fromPython } from './helpers/torch-describe';
import { findTorchPython } from './helpers/torch-python';
import { listTorchPythons, runPython } from './helpers/torch-pythons';

const root = path.join(__dirname, '..');
const MODEL = path.join(root, 'models', 'segnet.pt');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-ckpt-'));
const pythons = listTorchPythons();
// Crafting hostile files needs only Python's standard library (zipfile, pickle).
const STDLIB_PYTHON = pythons.find((p) => p.torchVersion)?.path ?? 'python3';

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Every dtype, odd shapes (0-dim, empty), edge values, requiresGrad, and nested containers of every kind. */
function sample(): { value: bce.Saveable; floats: boolean } {
  const grad = bce.tensor(new Float32Array([1.5, -2, 3.25, 0]), { shape: [2, 2] });
  grad.requiresGrad = true;
  const value = {
    f32: bce.tensor(new Float32Array([0, -0, 1e-38, 3.4e38, -1.5, NaN, Infinity, -Infinity]), { shape: [2, 4] }),
    f64: bce.tensor(new Float64Array([Math.PI, -Number.MIN_VALUE, 1e308]), { shape: [3] }),
    f16: bce.tensor(new Float32Array([0.5, -65504, 1 / 1024]), { shape: [3], dtype: 'float16' }),
    bf16: bce.tensor(new Float32Array([1, -3.140625, 1e30]), { shape: [1, 3], dtype: 'bfloat16' }),
    i32: bce.tensor(new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0]), { shape: [3] }),
    i64: bce.tensor(new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 7n]), { shape: [3, 1] }),
    u8: bce.tensor(new Uint8Array([0, 255, 17]), { shape: [3] }),
    bool: bce.tensor(new Uint8Array([1, 0, 1, 1]), { shape: [2, 2], dtype: 'bool' }),
    scalar: bce.tensor(new Float32Array([42]), { shape: [] }),
    empty: bce.tensor(new Float32Array([]), { shape: [0, 3] }),
    grad,
    nested: { list: [1, 'two', true, null, [2 ** 40, -7]], deeper: { x: { y: 'z' } } },
    ints: new Map<string | number, bce.Saveable>([
      [0, 'zero'],
      [12, -1],
      ['name', 'ünïcødé ✓'],
    ]),
    big: 2n ** 62n,
  };
  return { value, floats: false };
}

const floatsToo = { lr: 0.1, negZero: -0, tiny: 5e-324, ratio: 1 / 3, half: 2.5 };

describe('save / load in Node', () => {
  it('round-trips every dtype, shape and value exactly, with requiresGrad', () => {
    const { value } = sample();
    const file = path.join(dir, 'roundtrip.pt');
    bce.save({ ...(value as object), ...floatsToo }, file);
    const back = bce.load(file);
    const expected = asNodeSees(describeSaved({ ...(value as object), ...floatsToo }));
    expect(describeLoaded(back)).toEqual(expected);
    expect((back as Record<string, bce.Tensor>).grad.requiresGrad).toBe(true);
    expect((back as Record<string, bce.Tensor>).f32.requiresGrad).toBe(false);
  });

  it('refuses what it cannot save, naming where', () => {
    const file = path.join(dir, 'bad.pt');
    expect(() => bce.save({ a: { b: undefined } } as unknown as bce.Saveable, file)).toThrow(
      /value\.a\.b is undefined/,
    );
    expect(() => bce.save({ f: () => 1 } as unknown as bce.Saveable, file)).toThrow(TypeError);
    expect(() => bce.save({ d: new Date() } as unknown as bce.Saveable, file)).toThrow(/value\.d cannot be saved/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => bce.save(cyclic as bce.Saveable, file)).toThrow(/cycles cannot be saved/);
    const disposed = bce.zeros([1]);
    disposed.dispose();
    expect(() => bce.save({ t: disposed }, file)).toThrow(/disposed/);
    expect(() => bce.save({}, '' as string)).toThrow(/path must be a non-empty string/);
    expect(() => bce.load(path.join(dir, 'missing.pt'))).toThrow(/cannot open/);
    expect(() => bce.load(file, { device: 'tpu' })).toThrow(/device must be/);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('keeps a "__proto__" key as data, not as the prototype', () => {
    const file = path.join(dir, 'proto.pt');
    const value = JSON.parse('{"__proto__": {"polluted": true}, "x": 1}') as bce.Saveable;
    bce.save(value, file);
    const back = bce.load(file) as Record<string, unknown>;
    // Had "__proto__" been assigned, it would have replaced the prototype and `polluted` would be inherited.
    expect(Object.prototype.hasOwnProperty.call(back, '__proto__')).toBe(true);
    expect(back.polluted).toBeUndefined();
    expect(Object.keys(back)).toEqual(['__proto__', 'x']);
    expect(describeLoaded(back.__proto__ as bce.Loaded)).toEqual({ dict: [[{ str: 'polluted' }, { bool: true }]] });
  });
});

describe.each(pythons)('with $label Python', (py) => {
  const skip = py.torchVersion === undefined;
  const major = Number(/^(\d+)/.exec(py.torchVersion ?? '0')?.[1]);
  (skip ? it.skip : it)(`Node's file loads in torch.load${skip ? ` (skipped: ${py.reason})` : ''}`, () => {
    const { value } = sample();
    // torch 1.13's weights_only unpickler has no float opcode (BINFLOAT), not even for torch.save's own files:
    // there a file with float numbers loads with weights_only=False, and one without with weights_only=True.
    const withFloats = { ...(value as object), ...floatsToo };
    const fileA = path.join(dir, `node-${py.label}-a.pt`);
    const fileB = path.join(dir, `node-${py.label}-b.pt`);
    bce.save(withFloats, fileA);
    bce.save(value, fileB);
    const script = `${PY_DESCRIBE}\nprint(json.dumps([desc(load(sys.argv[1], sys.argv[2] == '1')), desc(load(sys.argv[3], True))]))`;
    const out = JSON.parse(runPython(py.path, script, [fileA, major >= 2 ? '1' : '0', fileB])) as unknown[];
    expect(fromPython(out[0])).toEqual(describeSaved(withFloats));
    expect(fromPython(out[1])).toEqual(describeSaved(value));
  });

  (skip ? it.skip : it)("torch.save's file loads in Node", () => {
    const file = path.join(dir, `torch-${py.label}.pt`);
    const script = `${PY_DESCRIBE}
torch.manual_seed(0)
lin = torch.nn.Linear(3, 2)
base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
obj = {
  'state_dict': lin.state_dict(),                      # an OrderedDict with _metadata (BUILD)
  'param': torch.nn.Parameter(torch.tensor([1.0, 2.0])),  # _rebuild_parameter
  'view': base[1:, 1:3],                              # a view: offset and strides into a shared storage
  'transposed': base.t(),                             # non-contiguous
  'dtypes': [torch.tensor([1, 2], dtype=d) for d in (torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool)],
  'int_keys': {0: 'a', 1: (2, 3.5)},
  'scalars': [True, None, -3, 2 ** 62, 'x', 1.25],
}
torch.save(obj, sys.argv[1])
print(json.dumps(desc(obj)))`;
    const expected = asNodeSees(fromPython(JSON.parse(runPython(py.path, script, [file]))));
    const loaded = bce.load(file);
    expect(describeLoaded(loaded)).toEqual(expected);
  });

  (skip ? it.skip : it)('a training checkpoint is a dict torch.load reads with PyTorch state-dict keys', () => {
    const model = bce.jit.load(MODEL);
    const opt = new bce.optim.Adam(model.parameters(), { lr: 0.01 });
    const loss = new bce.BootstrappedCrossEntropy(0.25);
    const file = path.join(dir, `train-${py.label}.pt`);
    bce.saveCheckpoint(file, { module: model, optimizer: opt, loss, iteration: 3, extra: { note: 'hi' } });
    const script = `import sys, json, torch
ck = torch.load(sys.argv[1], weights_only=${major >= 2 ? 'True' : 'False'})
print(json.dumps({'keys': sorted(ck), 'model': sorted(ck['model_state_dict']), 'groups': sorted(ck['optimizer_state_dict']['param_groups'][0]),
  'iteration': ck['iteration'], 'extra': ck['extra'], 'loss': ck['loss_state_dict']}))`;
    const out = JSON.parse(runPython(py.path, script, [file]));
    expect(out.keys).toEqual(['extra', 'iteration', 'loss_state_dict', 'model_state_dict', 'optimizer_state_dict']);
    expect(out.model).toEqual(
      model
        .namedParameters()
        .map(([name]) => name)
        .sort(),
    );
    expect(out.groups).toEqual(['amsgrad', 'betas', 'eps', 'lr', 'params', 'weight_decay']);
    expect(out.iteration).toBe(3);
    expect(out.extra).toEqual({ note: 'hi' });
    expect(out.loss).toEqual({ iteration: 0, p: 0.25, lastP: null, lastK: null });
  });
});

/** Writes a zip (stored or deflated entries) with Python's standard library. */
function craftZip(file: string, entries: Record<string, string>, deflate = false): void {
  const script = `import sys, zipfile, json, base64
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED if sys.argv[3] == '1' else zipfile.ZIP_STORED) as z:
    for name, data in json.loads(sys.argv[2]).items():
        z.writestr(name, base64.b64decode(data))`;
  const encoded = Object.fromEntries(
    Object.entries(entries).map(([k, v]) => [k, Buffer.from(v, 'latin1').toString('base64')]),
  );
  runPython(STDLIB_PYTHON, script, [file, JSON.stringify(encoded), deflate ? '1' : '0']);
}

describe('hostile and damaged files', () => {
  it('refuses a pickle that names os.system, and runs nothing', () => {
    const marker = path.join(dir, 'pwned');
    const file = path.join(dir, 'system.pt');
    // protocol 2: GLOBAL posix.system, ('touch <marker>',), REDUCE, STOP (what pickling os.system makes on Linux).
    craftZip(file, {
      'archive/data.pkl': `\x80\x02cposix\nsystem\nX${le32(`touch ${marker}`.length)}touch ${marker}\x85R.`,
    });
    expect(() => bce.load(file)).toThrow(/refused: its pickle names 'posix\.system'.*nothing from the file is run/);
    const builtins = path.join(dir, 'eval.pt');
    craftZip(builtins, { 'archive/data.pkl': '\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.' });
    expect(() => bce.load(builtins)).toThrow(/builtins\.eval/);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('refuses compressed entries (a zip bomb) before inflating anything', () => {
    const file = path.join(dir, 'bomb.pt');
    craftZip(file, { 'archive/data.pkl': '\x80\x02}.', 'archive/data/0': '\0'.repeat(4096) }, true);
    expect(() => bce.load(file)).toThrow(/compressed/);
  });

  it('refuses a record whose declared size is huge, without allocating it', () => {
    const file = path.join(dir, 'huge.pt');
    bce.save({ t: bce.zeros([4]) }, file);
    const bytes = fs.readFileSync(file);
    // The central directory entry of archive/data/0: set its compressed and uncompressed sizes to ~4 GiB.
    const name = Buffer.from('/data/0');
    let at = -1;
    for (
      let i = bytes.indexOf(Buffer.from([0x50, 0x4b, 1, 2]));
      i >= 0;
      i = bytes.indexOf(Buffer.from([0x50, 0x4b, 1, 2]), i + 1)
    ) {
      const nameLength = bytes.readUInt16LE(i + 28);
      if (
        bytes
          .subarray(i + 46, i + 46 + nameLength)
          .toString()
          .endsWith(name.toString())
      )
        at = i;
    }
    expect(at).toBeGreaterThan(0);
    bytes.writeUInt32LE(0xfffffff0, at + 20);
    bytes.writeUInt32LE(0xfffffff0, at + 24);
    fs.writeFileSync(file, bytes);
    expect(() => bce.load(file)).toThrow(/outside the file|past the end|not the/);
  });

  it('refuses files of other formats with the reason', () => {
    const text = path.join(dir, 'text.pt');
    fs.writeFileSync(text, 'not a checkpoint at all');
    expect(() => bce.load(text)).toThrow(/not a PyTorch file of the zip format/);
    expect(() => bce.load(MODEL)).toThrow(/refused|__torch__|constants/);
  });

  it('survives truncations at 400 offsets and 1,500 flipped bytes in a child process', () => {
    const file = path.join(dir, 'fuzz-source.pt');
    const { value } = sample();
    bce.save(value, file);
    const child = spawnSync(
      process.execPath,
      [
        require.resolve('ts-node/dist/bin.js'),
        '--transpile-only',
        'test/helpers/checkpoint-fuzz-child.ts',
        file,
        dir,
        '20261203',
        '1500',
      ],
      { cwd: root, encoding: 'utf8', timeout: 110_000, maxBuffer: 16 * 2 ** 20 },
    );
    const line = child.stdout.split('\n').find((l) => l.startsWith('CKFUZZ '));
    if (!line || child.status !== 0)
      console.log(child.status, child.signal, child.stdout.slice(-3000), child.stderr.slice(-3000));
    expect({ status: child.status, signal: child.signal }).toEqual({ status: 0, signal: null });
    const report = JSON.parse((line as string).slice(7));
    console.log(`checkpoint fuzz: ${JSON.stringify(report)}`);
    expect(report.loads).toBeGreaterThanOrEqual(1800);
    expect(report.nonErrorThrows).toBe(0);
    expect(report.emptyMessages).toBe(0);
    // A damaged copy that loads (the flip hit padding or a timestamp) loads the original values, never others.
    expect(report.returnedDifferent).toBe(0);
    // Every truncation fails (the central directory is at the end); most flips are caught by the CRC-32 checks.
    expect(report.threw).toBeGreaterThan(report.loads * 0.5);
  });
});

function le32(n: number): string {
  return String.fromCharCode(n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255);
}

describe('saveCheckpoint / loadCheckpoint', () => {
  /** A batch that differs per step (seeded by the step), so that resuming at the wrong step would show. */
  function batch(step: number, n = 2, size = 16): { images: bce.Tensor; labels: bce.Tensor } {
    const plane = size * size;
    const images = new Float32Array(n * 3 * plane);
    const labels = new Int32Array(n * plane);
    for (let i = 0; i < labels.length; i++) labels[i] = (i * 7 + step * 3 + (i >> 4)) % 3;
    for (let i = 0; i < images.length; i++) images[i] = Math.sin(i * 0.37 + step) * 0.5;
    return {
      images: bce.tensor(images, { shape: [n, 3, size, size] }),
      labels: bce.tensor(labels, { shape: [n, size, size] }),
    };
  }

  interface Run {
    module: bce.Module;
    optimizer: bce.optim.Optimizer;
    loss: bce.BootstrappedCrossEntropy;
    scheduler: bce.lrScheduler.LRScheduler;
  }

  function fresh(): Run {
    const model = bce.jit.load(MODEL);
    const optimizer = new bce.optim.Adam(model.parameters(), { lr: 1e-2 });
    const loss = new bce.BootstrappedCrossEntropy(0.3, { warmup: bce.schedules.linear(1, 4) });
    const scheduler = new bce.lrScheduler.PolynomialLR(optimizer, { totalIters: 10, power: 0.9 });
    return { module: model, optimizer, loss, scheduler };
  }

  /** Trains `count` steps from `start`; returns the losses (and the lr of each step). */
  function train(run: Run, start: number, count: number): number[] {
    const out: number[] = [];
    for (let step = start; step < start + count; step++) {
      bce.tidy(() => {
        const { images, labels } = batch(step);
        const loss = run.loss.forward(run.module.forward(images), labels);
        run.optimizer.zeroGrad();
        loss.backward();
        bce.clipGradNorm(run.module.parameters(), 1.0);
        run.optimizer.step();
        run.scheduler.step();
        out.push(loss.item(), run.optimizer.lr);
      });
    }
    return out;
  }

  const params = (model: bce.Module) => model.parameters().map((p) => Array.from(p.toArray() as Float32Array));

  it('resumes bit for bit: N steps, checkpoint, M more equals load + M', () => {
    const file = path.join(dir, 'resume.pt');
    const a = fresh();
    train(a, 0, 3);
    bce.saveCheckpoint(file, { ...a, iteration: 3, extra: { run: 'a' } });
    const continued = train(a, 3, 4);

    const b = fresh();
    const restored = bce.loadCheckpoint(file, b);
    expect(restored).toEqual({ iteration: 3, extra: { run: 'a' } });
    expect(b.loss.iteration).toBe(3);
    expect(b.scheduler.lastEpoch).toBe(3);
    const resumed = train(b, restored.iteration as number, 4);
    expect(resumed).toEqual(continued);
    expect(params(b.module)).toEqual(params(a.module));
    // And the comparison can fail: a run that did not restore the optimizer differs.
    const c = fresh();
    bce.loadCheckpoint(file, { module: c.module, loss: c.loss, scheduler: c.scheduler });
    expect(train(c, 3, 4)).not.toEqual(continued);
  });

  it('refuses a checkpoint that does not fit the module, or misses a part', () => {
    const file = path.join(dir, 'partial.pt');
    const a = fresh();
    bce.saveCheckpoint(file, { loss: a.loss });
    expect(() => bce.loadCheckpoint(file, { module: a.module })).toThrow(/has no model_state_dict/);
    bce.save({ model_state_dict: { 'not.a.param': bce.zeros([1]) } }, file);
    expect(() => bce.loadCheckpoint(file, { module: a.module })).toThrow(
      /missing \[.*\], unexpected \[not\.a\.param\]/,
    );
    expect(() => bce.saveCheckpoint(file, { module: {} as bce.Module })).toThrow(/parts\.module must be a jit\.Module/);
    expect(() => bce.saveCheckpoint(file, { iteration: -1 })).toThrow(/iteration must be an integer >= 0/);
    expect(() => bce.saveCheckpoint(file, { modle: a.module } as unknown as bce.CheckpointParts)).toThrow(/modle/);
  });
});

describe('buffers, and PyTorch loading the state dicts', () => {
  const matching = findTorchPython();
  const modelFile = path.join(dir, 'bn.pt');
  const DEFINE = `import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))`;

  (matching.path ? it : it.skip)(
    `stores buffers (batch-norm statistics) that load_state_dict(strict=True) accepts${matching.path ? '' : ` (skipped: ${matching.reason})`}`,
    () => {
      runPython(matching.path as string, `${DEFINE}\nimport sys\ntorch.jit.script(net).save(sys.argv[1])`, [modelFile]);
      const model = bce.jit.load(modelFile).train();
      expect(model.namedBuffers().map(([name]) => name)).toEqual([
        '1.running_mean',
        '1.running_var',
        '1.num_batches_tracked',
      ]);
      const opt = new bce.optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
      for (let i = 0; i < 2; i++) {
        bce.tidy(() => {
          const out = model.forward(bce.randn([2, 3, 8, 8])) as bce.Tensor;
          opt.zeroGrad();
          out.mul(out).mean().backward();
          opt.step();
        });
      }
      const file = path.join(dir, 'bn-checkpoint.pt');
      bce.saveCheckpoint(file, { module: model, optimizer: opt, iteration: 2 });

      const fresh = bce.jit.load(modelFile);
      const freshOpt = new bce.optim.SGD(fresh.parameters(), { lr: 0.1, momentum: 0.9 });
      bce.loadCheckpoint(file, { module: fresh, optimizer: freshOpt });
      const dump = (m: bce.Module) =>
        [...m.namedParameters(), ...m.namedBuffers()].map(([name, t]) => [name, t.dtype, describeLoaded(t)]);
      expect(dump(fresh)).toEqual(dump(model));
      expect(fresh.namedBuffers()[2][1].item()).toBe(2); // num_batches_tracked, int64

      for (const py of pythons.filter((p) => p.torchVersion)) {
        const major = Number(/^(\d+)/.exec(py.torchVersion as string)?.[1]);
        const script = `${DEFINE}
import sys, json
ck = torch.load(sys.argv[1], weights_only=${major >= 2 ? 'True' : 'False'})
result = net.load_state_dict(ck['model_state_dict'], strict=True)
opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
opt.load_state_dict(ck['optimizer_state_dict'])
print(json.dumps({'missing': list(result.missing_keys), 'unexpected': list(result.unexpected_keys),
  'lr': opt.param_groups[0]['lr'], 'momentum_states': sum(1 for s in opt.state.values() if 'momentum_buffer' in s),
  'tracked': int(net[1].num_batches_tracked)}))`;
        const out = JSON.parse(runPython(py.path, script, [file]));
        expect({ python: py.label, ...out }).toEqual({
          python: py.label,
          missing: [],
          unexpected: [],
          lr: 0.1,
          momentum_states: 6,
          tracked: 2,
        });
      }
    },
  );
});

describe.each(pythons)("a checkpoint made by $label Python's torch.save", (py) => {
  const matching = findTorchPython();
  const skip = py.torchVersion === undefined || !matching.path;
  (skip ? it.skip : it)(
    `restores a module and an SGD optimizer${skip ? ` (skipped: ${py.reason ?? matching.reason})` : ''}`,
    () => {
      const modelFile = path.join(dir, 'bn.pt');
      if (!fs.existsSync(modelFile)) {
        runPython(
          matching.path as string,
          `import sys, torch\ntorch.manual_seed(0)\nnet = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))\ntorch.jit.script(net).save(sys.argv[1])`,
          [modelFile],
        );
      }
      const file = path.join(dir, `python-${py.label}-checkpoint.pt`);
      const script = `${PY_DESCRIBE}
torch.manual_seed(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
for _ in range(2):
    out = net(torch.randn(2, 3, 8, 8))
    opt.zero_grad(); (out * out).mean().backward(); opt.step()
torch.save({'model_state_dict': net.state_dict(), 'optimizer_state_dict': opt.state_dict(), 'iteration': 2}, sys.argv[1])
print(json.dumps({'model': [[k, desc(v)] for k, v in net.state_dict().items()],
  'momentum': [desc(opt.state[p]['momentum_buffer']) for p in net.parameters()]}))`;
      const expected = JSON.parse(runPython(py.path, script, [file])) as {
        model: [string, unknown][];
        momentum: unknown[];
      };
      const model = bce.jit.load(modelFile);
      const optimizer = new bce.optim.SGD(model.parameters(), { lr: 0.5 });
      expect(bce.loadCheckpoint(file, { module: model, optimizer })).toEqual({ iteration: 2, extra: null });
      const live = [...model.namedParameters(), ...model.namedBuffers()];
      // state_dict() holds detached tensors; the module's own parameters require grad: values are compared.
      const values = (d: Desc) => ({ ...(d as object), requiresGrad: undefined });
      const byName = new Map(live.map(([name, t]) => [name, values(describeLoaded(t))]));
      for (const [name, desc] of expected.model)
        expect([name, byName.get(name)]).toEqual([name, values(fromPython(desc))]);
      expect(optimizer.options).toEqual({ lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 1e-4, nesterov: false });
      const state = optimizer.stateDict().state;
      expect(state.map((s) => describeLoaded(s?.momentumBuffer ?? null))).toEqual(expected.momentum.map(fromPython));
    },
  );
});
