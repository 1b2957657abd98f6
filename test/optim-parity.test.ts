/**
 * The optimizers against PyTorch's torch.optim: from the same parameters and the same gradients, one step (and
 * then three) of SGD, Adam and AdamW give the same parameters. PyTorch runs in a child process (the Python whose torch is the
 * version of the addon's LibTorch: test/helpers/torch-python.ts); where none has it, the suite is skipped with the
 * reason printed.
 */
import { spawnSync } from 'child_process';
import * as bce from '../lib';
import { findTorchPython } from './helpers/torch-python';

const found = findTorchPython();
const python = found.path ?? undefined;
if (!python) console.warn(`optimizer parity tests skipped: ${found.reason}`);
const describePy = python ? describe : describe.skip;

const SHAPES = [[3, 4], [5]];
const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const initial = SHAPES.map((s, k) =>
  Array.from({ length: numel(s) }, (_, i) => Math.fround(Math.cos(1.1 * i + k) * 0.7)),
);
const gradient = (step: number) =>
  SHAPES.map((s, k) =>
    Array.from({ length: numel(s) }, (_, i) => Math.fround(Math.sin(0.9 * i + 2.1 * step + k) + 0.05 * step)),
  );

interface Case {
  kind: 'SGD' | 'Adam' | 'AdamW';
  /** PyTorch's keyword names. */
  torch: Record<string, unknown>;
  make(params: bce.Tensor[]): bce.optim.Optimizer;
}

const CASES: [string, Case][] = [
  ['SGD', { kind: 'SGD', torch: { lr: 0.1 }, make: (p) => new bce.optim.SGD(p, { lr: 0.1 }) }],
  [
    'SGD momentum, nesterov, weight decay',
    {
      kind: 'SGD',
      torch: { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.01 },
      make: (p) => new bce.optim.SGD(p, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01 }),
    },
  ],
  [
    'SGD momentum with dampening',
    {
      kind: 'SGD',
      torch: { lr: 0.05, momentum: 0.8, dampening: 0.3 },
      make: (p) => new bce.optim.SGD(p, { lr: 0.05, momentum: 0.8, dampening: 0.3 }),
    },
  ],
  ['Adam', { kind: 'Adam', torch: { lr: 0.01 }, make: (p) => new bce.optim.Adam(p, { lr: 0.01 }) }],
  [
    'Adam betas, eps, weight decay, amsgrad',
    {
      kind: 'Adam',
      torch: { lr: 0.02, betas: [0.8, 0.99], eps: 1e-6, weight_decay: 0.1, amsgrad: true },
      make: (p) => new bce.optim.Adam(p, { lr: 0.02, betas: [0.8, 0.99], eps: 1e-6, weightDecay: 0.1, amsgrad: true }),
    },
  ],
  [
    'AdamW',
    {
      kind: 'AdamW',
      torch: { lr: 0.01, weight_decay: 0.05 },
      make: (p) => new bce.optim.AdamW(p, { lr: 0.01, weightDecay: 0.05 }),
    },
  ],
];

const PYTHON_SCRIPT = `
import json, sys, torch
job = json.load(sys.stdin)
out = {}
for name, case in job["cases"].items():
    params = [torch.tensor(v, dtype=torch.float32).reshape(s).requires_grad_() for v, s in zip(job["initial"], job["shapes"])]
    opt = getattr(torch.optim, case["kind"])(params, **case["torch"])
    trajectory = []
    for step in range(job["steps"]):
        opt.zero_grad()
        for p, g in zip(params, job["grads"][step]):
            p.grad = torch.tensor(g, dtype=torch.float32).reshape(p.shape)
        opt.step()
        trajectory.append([p.detach().reshape(-1).tolist() for p in params])
    out[name] = trajectory
json.dump(out, sys.stdout)
`;

const STEPS = 3;

function runNode(c: Case): number[][][] {
  const params = initial.map((v, k) => bce.tensor(Float32Array.from(v), { shape: SHAPES[k], requiresGrad: true }));
  const optimizer = c.make(params);
  const trajectory: number[][][] = [];
  for (let step = 0; step < STEPS; step++) {
    optimizer.zeroGrad();
    // d/dp sum(p * g) = g: the same gradients PyTorch is given.
    gradient(step).forEach((g, k) =>
      params[k]
        .mul(bce.tensor(Float32Array.from(g), { shape: SHAPES[k] }))
        .sum()
        .backward(),
    );
    optimizer.step();
    trajectory.push(params.map((p) => Array.from(p.toArray() as Float32Array)));
  }
  return trajectory;
}

describePy(`optimizers match torch.optim (PyTorch ${found.torchVersion} via ${python})`, () => {
  let reference: Record<string, number[][][]> = {};

  beforeAll(() => {
    const job = {
      shapes: SHAPES,
      initial,
      grads: Array.from({ length: STEPS }, (_, step) => gradient(step)),
      steps: STEPS,
      cases: Object.fromEntries(CASES.map(([name, c]) => [name, { kind: c.kind, torch: c.torch }])),
    };
    const r = spawnSync(python!, ['-c', PYTHON_SCRIPT], { input: JSON.stringify(job), encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`PyTorch reference failed: ${r.stderr}`);
    reference = JSON.parse(r.stdout);
  });

  test.each(CASES)('%s: one step, then three', (name, c) => {
    const ours = runNode(c);
    const theirs = reference[name];
    for (const step of [0, STEPS - 1]) {
      ours[step].forEach((values, k) => {
        values.forEach((v, i) => {
          const expected = theirs[step][k][i];
          if (Math.abs(v - expected) > 1e-6 + 1e-5 * Math.abs(expected)) {
            throw new Error(`${name}: step ${step + 1}, param ${k}[${i}]: ours ${v}, PyTorch ${expected}`);
          }
        });
      });
    }
    // The step moved the parameters (the comparison is not vacuous).
    const moved = Math.max(...ours[0].flatMap((values, k) => values.map((v, i) => Math.abs(v - initial[k][i]))));
    expect(moved).toBeGreaterThan(1e-4);
  });
});
