/**
 * The operator table and the native list agree, and the operators behave as PyTorch's do beyond values (those
 * are in operators-parity.test.ts): views share memory, in-place operators return their tensor, results stay on
 * the inputs' device, autograd recording follows noGrad, and every operator has its row in docs/api.md.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as bce from '../lib';
import { native } from '../lib/native';
import { OVERLOADED_METHODS, TENSOR_METHODS } from '../lib/operators';

const cudaReason = bce.cuda.isAvailable() ? '' : 'CUDA is not available in this LibTorch build or machine';
if (cudaReason) console.warn(`operator CUDA test skipped: ${cudaReason}`);
const itCuda = cudaReason ? it.skip : it;

/** One valid call of each operator and each of its overloads. */
function everyOverload(x: bce.Tensor, device = 'cpu'): bce.Tensor[] {
  const l = bce.tensor([0, 2, 1, 2], { dtype: 'int64', device });
  const b = x.gt(0);
  const out: (bce.Tensor | bce.ValuesIndices)[] = [
    x.argmax(),
    x.argmin(1),
    x.max(),
    x.max(1),
    x.max(x),
    x.min(),
    x.min(0),
    x.min(x),
    x.softmax(1),
    x.logSoftmax(0),
    x.eq(x),
    x.eq(1),
    x.ne(x),
    x.ne(1),
    x.lt(x),
    x.lt(1),
    x.le(x),
    x.le(1),
    x.gt(x),
    x.gt(1),
    x.ge(x),
    x.ge(1),
    bce.where(b, x, x),
    bce.where(b, 1, x),
    bce.where(b, x, 1),
    bce.where(b, 1, 0),
    x.where(b, 0),
    x.clamp(0, 1),
    x.clamp(x, null),
    x.exp(),
    x.log(),
    x.abs(),
    x.sqrt(),
    x.neg(),
    x.pow(x),
    x.pow(2),
    x.matmul(x.transpose(0, 1)),
    x.permute([1, 0]),
    x.contiguous(),
    x.flatten(),
    x.diagonal(),
    x.squeeze(),
    x.squeeze(0),
    x.unsqueeze(0),
    bce.cat([x, x]),
    bce.stack([x, x]),
    x.narrow(1, 0, 2),
    x.select(0, 1),
    x.indexSelect(1, l.narrow(0, 0, 2)),
    x.maskedSelect(b),
    x.maskedFill(b, 0),
    x.maskedFill(b, bce.tensor(0, { device })),
    x.float(),
    l.bincount(),
    x.clone(),
    x.clone().zero_(),
    x.clone().fill_(1),
    x.clone().fill_(bce.tensor(2, { device })),
    x.any(),
    x.any(0),
    x.all(),
    x.all(0),
    x.countNonzero(),
    x.countNonzero([0]),
    x.gather(1, l.reshape([2, 2])),
    l.oneHot(),
  ];
  return out.flatMap((r) => (bce.isTensor(r) ? [r] : [r.values, r.indices]));
}

describe('operators', () => {
  it('use exactly the schemas the native side lists (and each of them)', () => {
    const used = new Set<string>();
    const original = native.callOperator;
    native.callOperator = (schema, args) => {
      used.add(schema);
      return original(schema, args);
    };
    try {
      bce.tidy(() => {
        everyOverload(bce.randn([2, 3]).abs().add(0.1));
      });
    } finally {
      native.callOperator = original;
    }
    expect([...used].sort()).toEqual([...native.operatorNames()].sort());
  });

  it('return views that share memory, and in-place operators return their tensor', () => {
    bce.tidy(() => {
      const x = bce.zeros([2, 3]);
      const row = x.narrow(0, 1, 1);
      expect(row.fill_(7)).toBe(row);
      x.transpose(0, 1).select(0, 0).fill_(3);
      expect(Array.from(x.toArray() as Float32Array)).toEqual([3, 0, 0, 3, 7, 7]);
      const copy = x.clone();
      copy.zero_();
      expect(x.sum().item()).toBe(20);
    });
  });

  it('record autograd unless under noGrad', () => {
    bce.tidy(() => {
      const x = bce.randn([2, 3], { requiresGrad: true });
      expect(x.softmax(1).requiresGrad).toBe(true);
      expect(x.argmax(1).requiresGrad).toBe(false);
      bce.noGrad(() => expect(x.softmax(1).requiresGrad).toBe(false));
    });
  });

  it('are tracked by tidy (no tensor left behind)', () => {
    const before = bce.memory().tensors;
    bce.tidy(() => {
      expect(everyOverload(bce.randn([2, 3]).abs().add(0.1)).length).toBe(68);
    });
    expect(bce.memory().tensors).toBe(before);
  });

  itCuda('keep results on the inputs device (CUDA)', () => {
    bce.tidy(() => {
      const x = bce.randn([2, 3], { device: 'cuda' }).abs().add(0.1);
      for (const r of everyOverload(x, 'cuda')) expect(r.device).toBe('cuda:0');
    });
  });

  it('each have a row in docs/api.md', () => {
    const api = fs.readFileSync(path.join(__dirname, '..', 'docs', 'api.md'), 'utf8');
    const names = [...Object.keys(TENSOR_METHODS), ...Object.keys(OVERLOADED_METHODS), 'cat', 'stack', 'where'];
    expect(names.filter((n) => !api.includes(`\`${n}(`))).toEqual([]);
    for (const n of ['confusionMatrix', 'iou', 'meanIou']) expect(api).toContain(`\`${n}(`);
  });
});
