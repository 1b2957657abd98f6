/**
 * Segmentation metrics: confusionMatrix, iou and meanIou against values computed by hand, and against a plain
 * Python loop over the pixels (the Python of the addon's torch version: test/helpers/torch-python.ts; skipped
 * with the reason where there is none).
 */
import { spawnSync } from 'child_process';
import * as bce from '../lib';
import { findTorchPython } from './helpers/torch-python';

const found = findTorchPython();
const python = found.path ?? undefined;
if (!python) console.warn(`metrics reference tests skipped: ${found.reason}`);
const describePy = python ? describe : describe.skip;
const cudaReason = bce.cuda.isAvailable() ? '' : 'CUDA is not available in this LibTorch build or machine';
if (cudaReason) console.warn(`metrics CUDA test skipped: ${cudaReason}`);
const itCuda = cudaReason ? it.skip : it;

const long = (data: number[], shape?: number[]) => bce.tensor(data, { dtype: 'int64', shape });
const numbers = (t: bce.Tensor) => Array.from(t.toArray() as ArrayLike<number | bigint>, Number);

describe('confusionMatrix and iou by hand', () => {
  // Pixels (target, pred): (0,0) (1,1) (2,1) (2,2) (255 ignored) (1,0).
  const pred = [0, 1, 1, 2, 2, 0];
  const target = [0, 1, 2, 2, 255, 1];

  it('counts rows = target, columns = prediction, leaving ignoreIndex out', () => {
    bce.tidy(() => {
      const cm = bce.confusionMatrix(long(pred), long(target), 3, { ignoreIndex: 255 });
      expect(cm.dtype).toBe('int64');
      expect(cm.shape).toEqual([3, 3]);
      expect(numbers(cm)).toEqual([1, 0, 0, 1, 1, 0, 0, 1, 1]);
    });
  });

  it('gives per-class IoU = TP / (TP + FP + FN) and their mean', () => {
    bce.tidy(() => {
      const cm = bce.confusionMatrix(long(pred), long(target), 3, { ignoreIndex: 255 });
      // class 0: TP 1, FN 0, FP 1 (a 1 predicted as 0) -> 1/2; class 1: TP 1, FN 1, FP 1 -> 1/3; class 2: 1/2.
      const perClass = bce.iou(cm);
      expect(perClass.dtype).toBe('float64');
      expect(numbers(perClass)).toEqual([1 / 2, 1 / 3, 1 / 2]);
      expect(bce.meanIou(cm).item()).toBeCloseTo((1 / 2 + 1 / 3 + 1 / 2) / 3, 15);
    });
  });

  it('takes images of any shape and int32/uint8 class maps', () => {
    bce.tidy(() => {
      const p = bce.tensor([0, 1, 1, 1, 0, 0, 1, 1], { dtype: 'uint8', shape: [2, 2, 2] });
      const t = bce.tensor([0, 1, 0, 1, 0, 1, 1, 1], { dtype: 'int32', shape: [2, 2, 2] });
      expect(numbers(bce.confusionMatrix(p, t, 2))).toEqual([2, 1, 1, 4]);
    });
  });

  it('gives NaN for a class absent from targets and predictions, which the mean leaves out', () => {
    bce.tidy(() => {
      const cm = bce.confusionMatrix(long([0, 0, 2]), long([0, 2, 2]), 4);
      const perClass = numbers(bce.iou(cm));
      expect(perClass[0]).toBe(1 / 2);
      expect(perClass[1]).toBeNaN();
      expect(perClass[2]).toBe(1 / 2);
      expect(perClass[3]).toBeNaN();
      expect(bce.meanIou(cm).item()).toBe(1 / 2);
      expect(bce.meanIou(bce.zeros([2, 2], { dtype: 'int64' })).item()).toBeNaN();
    });
  });

  it('refuses bad arguments naming them', () => {
    bce.tidy(() => {
      const p = long([0, 1]);
      expect(() => bce.confusionMatrix(p, long([0, 3]), 3)).toThrow(
        new RangeError('target holds 1 class index(es) outside [0, 3)'),
      );
      expect(() => bce.confusionMatrix(long([0, -1, -1]), long([0, 255, 1]), 3, { ignoreIndex: 255 })).toThrow(
        'pred holds 1 class index(es) outside [0, 3) among the pixels whose target is not ignoreIndex (255)',
      );
      expect(() => bce.confusionMatrix(bce.tensor([0, 1]), p, 3)).toThrow(
        new TypeError('pred must hold class indices (int64, int32 or uint8), got float32'),
      );
      expect(() => bce.confusionMatrix(p, long([0, 1, 2]), 3)).toThrow(RangeError);
      expect(() => bce.confusionMatrix(p, p, 0)).toThrow('numClasses must be an integer >= 1, got 0');
      expect(() => bce.confusionMatrix(p, p, 3, { ignore_index: 1 } as never)).toThrow("did you mean 'ignoreIndex'?");
      expect(() => bce.confusionMatrix([0, 1] as never, p, 3)).toThrow('pred must be a Tensor, got an array');
      expect(() => bce.iou(long([1, 2, 3]))).toThrow(
        'cm must be a square matrix (numClasses, numClasses), got shape [3]',
      );
    });
  });

  it('leaves no tensor behind', () => {
    const [p, t] = [long(pred), long(target)];
    const before = bce.memory().tensors;
    const cm = bce.confusionMatrix(p, t, 3, { ignoreIndex: 255 });
    const perClass = bce.iou(cm);
    const mean = bce.meanIou(cm);
    expect(bce.memory().tensors).toBe(before + 3);
    for (const x of [cm, perClass, mean]) x.dispose();
    expect(bce.memory().tensors).toBe(before);
    p.dispose();
    t.dispose();
  });

  itCuda('computes on the device of its inputs (CUDA)', () => {
    bce.tidy(() => {
      const cm = bce.confusionMatrix(long(pred).to('cuda'), long(target).to('cuda'), 3, { ignoreIndex: 255 });
      expect(cm.device).toBe('cuda:0');
      expect(numbers(cm)).toEqual([1, 0, 0, 1, 1, 0, 0, 1, 1]);
      expect(bce.iou(cm).device).toBe('cuda:0');
    });
  });
});

describePy('confusionMatrix and iou against a Python loop over the pixels', () => {
  it('agrees on a random 2 x 24 x 24 segmentation with 6 classes and ignored pixels', () => {
    const n = 6;
    const count = 2 * 24 * 24;
    let state = 7;
    const next = () => {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      return state / 2 ** 31;
    };
    // Class 4 never appears in either map: its IoU is NaN on both sides.
    const draw = () => [0, 1, 1, 2, 3, 5, 5][Math.floor(next() * 7)];
    const target = Array.from({ length: count }, () => (next() < 0.1 ? 255 : draw()));
    const pred = target.map((t) => (next() < 0.6 && t !== 255 ? t : draw()));
    const script = `
import json, math, sys
job = json.load(sys.stdin)
n = job['n']
cm = [[0] * n for _ in range(n)]
for t, p in zip(job['target'], job['pred']):
    if t != 255:
        cm[t][p] += 1
iou = []
for c in range(n):
    union = sum(cm[c]) + sum(row[c] for row in cm) - cm[c][c]
    iou.append(cm[c][c] / union if union else 'nan')
present = [v for v in iou if v != 'nan']
json.dump({'cm': cm, 'iou': iou, 'mean': sum(present) / len(present)}, sys.stdout)
`;
    const r = spawnSync(python!, ['-c', script], { input: JSON.stringify({ n, target, pred }), encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    const expected = JSON.parse(r.stdout) as { cm: number[][]; iou: (number | 'nan')[]; mean: number };
    bce.tidy(() => {
      const cm = bce.confusionMatrix(long(pred, [2, 24, 24]), long(target, [2, 24, 24]), n, { ignoreIndex: 255 });
      expect(numbers(cm)).toEqual(expected.cm.flat());
      const perClass = numbers(bce.iou(cm));
      perClass.forEach((v, c) => {
        const e = expected.iou[c];
        if (e === 'nan') expect(v).toBeNaN();
        else expect(v).toBeCloseTo(e, 14);
      });
      expect(expected.iou[4]).toBe('nan');
      expect(bce.meanIou(cm).item()).toBeCloseTo(expected.mean, 14);
    });
  });
});
