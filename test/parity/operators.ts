/**
 * The tensor operator parity cases: each case runs an operator here and the same expression in PyTorch on the same
 * inputs, and compares shapes, dtypes and values, and the gradients of the inputs that require them (backward from
 * the sum of the result weighted by fixed weights). All cases go to one Python process. Used by
 * test/operators-parity.test.ts and by `npm run parity` (scripts/parity/run.ts).
 */
import { spawnSync } from 'child_process';
import * as bce from '../../lib';

type DType = bce.DType;

interface Input {
  data: number[];
  shape: number[];
  dtype: DType;
  grad?: boolean;
}

/** Deterministic data: a smooth pseudo-random pattern, with repeated values (ties) in integer dtypes. */
function values(shape: number[], dtype: DType, seed: number): number[] {
  const count = shape.reduce((a, b) => a * b, 1);
  return Array.from({ length: count }, (_, i) => {
    const v = Math.sin(1.7 * i + 0.9 * seed) * 2.5;
    if (dtype === 'bool') return v > 0 ? 1 : 0;
    if (dtype === 'int64' || dtype === 'int32' || dtype === 'uint8') return Math.abs(Math.round(v)) % 4;
    return Math.fround(v);
  });
}

const f32 = (shape: number[], seed = 0, grad = false): Input => ({
  data: values(shape, 'float32', seed),
  shape,
  dtype: 'float32',
  grad,
});
const typed = (shape: number[], dtype: DType, seed = 0): Input => ({ data: values(shape, dtype, seed), shape, dtype });
const exact = (data: number[], shape: number[], dtype: DType): Input => ({ data, shape, dtype });

type Result = bce.Tensor | bce.ValuesIndices;

export interface Case {
  inputs: Record<string, Input>;
  js: (t: Record<string, bce.Tensor>) => Result;
  /** The same in PyTorch, with the inputs as Python variables of the same names. */
  py: string;
}

const X = f32([3, 4]);
const XG = f32([3, 4], 0, true);

// prettier-ignore
export const OPERATOR_CASES: Record<string, Case> = {
  'argmax (all)': { inputs: { x: X }, js: ({ x }) => x.argmax(), py: 'x.argmax()' },
  'argmax dim 1': { inputs: { x: X }, js: ({ x }) => x.argmax(1), py: 'x.argmax(1)' },
  'argmax dim -1 keepdim': { inputs: { x: f32([2, 3, 4]) }, js: ({ x }) => x.argmax(-1, true), py: 'x.argmax(-1, keepdim=True)' },
  'argmax ties (int64, first occurrence)': { inputs: { x: typed([4, 5], 'int64') }, js: ({ x }) => x.argmax(1), py: 'x.argmax(1)' },
  'argmin dim 0': { inputs: { x: X }, js: ({ x }) => x.argmin(0), py: 'x.argmin(0)' },
  'max (all)': { inputs: { x: XG }, js: ({ x }) => x.max(), py: 'x.max()' },
  'max dim 1': { inputs: { x: XG }, js: ({ x }) => x.max(1), py: 'x.max(1)' },
  'max dim 0 keepdim': { inputs: { x: X }, js: ({ x }) => x.max(0, true), py: 'x.max(0, keepdim=True)' },
  'max other (broadcast)': { inputs: { x: XG, y: f32([4], 1, true) }, js: ({ x, y }) => x.max(y), py: 'x.max(y)' },
  'min (all, int32)': { inputs: { x: typed([3, 4], 'int32', 2) }, js: ({ x }) => x.min(), py: 'x.min()' },
  'min dim -1': { inputs: { x: XG }, js: ({ x }) => x.min(-1), py: 'x.min(-1)' },
  'min other': { inputs: { x: X, y: f32([3, 1], 3) }, js: ({ x, y }) => x.min(y), py: 'x.min(y)' },
  'softmax dim 1': { inputs: { x: XG }, js: ({ x }) => x.softmax(1), py: 'x.softmax(1)' },
  'softmax dim 0 as float64': { inputs: { x: XG }, js: ({ x }) => x.softmax(0, 'float64'), py: 'x.softmax(0, dtype=torch.float64)' },
  'logSoftmax dim -1': { inputs: { x: f32([2, 3, 5], 4, true) }, js: ({ x }) => x.logSoftmax(-1), py: 'x.log_softmax(-1)' },
  'eq tensor (broadcast)': { inputs: { x: typed([3, 4], 'int64'), y: typed([4], 'int64', 1) }, js: ({ x, y }) => x.eq(y), py: 'x.eq(y)' },
  'eq integer number': { inputs: { x: typed([3, 4], 'int64') }, js: ({ x }) => x.eq(2), py: 'x.eq(2)' },
  'ne number': { inputs: { x: X }, js: ({ x }) => x.ne(0.5), py: 'x.ne(0.5)' },
  'lt tensor': { inputs: { x: X, y: f32([3, 1], 1) }, js: ({ x, y }) => x.lt(y), py: 'x.lt(y)' },
  'le number (int tensor, fractional number)': { inputs: { x: typed([3, 4], 'int32') }, js: ({ x }) => x.le(1.5), py: 'x.le(1.5)' },
  'gt number': { inputs: { x: X }, js: ({ x }) => x.gt(0), py: 'x.gt(0)' },
  'ge tensor': { inputs: { x: X, y: f32([4], 2) }, js: ({ x, y }) => x.ge(y), py: 'x.ge(y)' },
  'where tensors (broadcast)': { inputs: { c: typed([3, 4], 'bool'), x: XG, y: f32([4], 5, true) }, js: ({ c, x, y }) => bce.where(c, x, y), py: 'torch.where(c, x, y)' },
  'where tensor, number': { inputs: { c: typed([3, 4], 'bool'), x: XG }, js: ({ c, x }) => bce.where(c, x, 0), py: 'torch.where(c, x, 0.0)' },
  'where number, tensor': { inputs: { c: typed([3, 4], 'bool'), y: X }, js: ({ c, y }) => bce.where(c, -1.5, y), py: 'torch.where(c, -1.5, y)' },
  'where numbers': { inputs: { c: typed([3, 4], 'bool') }, js: ({ c }) => bce.where(c, 1, 0), py: 'torch.where(c, 1, 0)' },
  'Tensor.where(condition, other)': { inputs: { c: typed([3, 4], 'bool'), x: X, y: f32([3, 4], 6) }, js: ({ c, x, y }) => x.where(c, y), py: 'x.where(c, y)' },
  'clamp numbers': { inputs: { x: XG }, js: ({ x }) => x.clamp(-0.5, 0.75), py: 'x.clamp(-0.5, 0.75)' },
  'clamp max only': { inputs: { x: XG }, js: ({ x }) => x.clamp(null, 0), py: 'x.clamp(max=0)' },
  'clamp int64 by integers': { inputs: { x: typed([3, 4], 'int64') }, js: ({ x }) => x.clamp(1, 2), py: 'x.clamp(1, 2)' },
  'clamp tensors': { inputs: { x: XG, lo: f32([4], 7), hi: f32([3, 1], 8) }, js: ({ x, lo, hi }) => x.clamp(lo, hi), py: 'x.clamp(lo, hi)' },
  exp: { inputs: { x: XG }, js: ({ x }) => x.exp(), py: 'x.exp()' },
  'exp of int64 (floating result)': { inputs: { x: typed([5], 'int64') }, js: ({ x }) => x.exp(), py: 'x.exp()' },
  'log (NaN for negatives)': { inputs: { x: X }, js: ({ x }) => x.log(), py: 'x.log()' },
  'log of positives': { inputs: { x: XG }, js: ({ x }) => x.abs().add(0.1).log(), py: '(x.abs() + 0.1).log()' },
  abs: { inputs: { x: XG }, js: ({ x }) => x.abs(), py: 'x.abs()' },
  sqrt: { inputs: { x: XG }, js: ({ x }) => x.abs().add(0.5).sqrt(), py: '(x.abs() + 0.5).sqrt()' },
  neg: { inputs: { x: XG }, js: ({ x }) => x.neg(), py: 'x.neg()' },
  'pow number': { inputs: { x: XG }, js: ({ x }) => x.pow(2), py: 'x.pow(2)' },
  'pow fractional number': { inputs: { x: XG }, js: ({ x }) => x.abs().pow(0.5), py: 'x.abs().pow(0.5)' },
  'pow int64 by an integer stays int64': { inputs: { x: typed([6], 'int64') }, js: ({ x }) => x.pow(3), py: 'x.pow(3)' },
  'pow tensor (broadcast)': { inputs: { x: f32([3, 4], 9, true), e: f32([4], 10, true) }, js: ({ x, e }) => x.abs().add(0.5).pow(e), py: '(x.abs() + 0.5).pow(e)' },
  'matmul 2-D': { inputs: { a: XG, b: f32([4, 2], 11, true) }, js: ({ a, b }) => a.matmul(b), py: 'a.matmul(b)' },
  'matmul batched by 2-D': { inputs: { a: f32([2, 3, 4], 12, true), b: f32([4, 5], 13, true) }, js: ({ a, b }) => a.matmul(b), py: 'a.matmul(b)' },
  'matmul 1-D by 1-D': { inputs: { a: f32([4], 14, true), b: f32([4], 15) }, js: ({ a, b }) => a.matmul(b), py: 'a.matmul(b)' },
  'matmul 2-D by 1-D': { inputs: { a: XG, b: f32([4], 16) }, js: ({ a, b }) => a.matmul(b), py: 'a.matmul(b)' },
  permute: { inputs: { x: f32([2, 3, 4], 17, true) }, js: ({ x }) => x.permute([2, 0, 1]), py: 'x.permute(2, 0, 1)' },
  'permute negative dims': { inputs: { x: f32([2, 3, 4], 17) }, js: ({ x }) => x.permute([-1, 1, 0]), py: 'x.permute(-1, 1, 0)' },
  transpose: { inputs: { x: XG }, js: ({ x }) => x.transpose(0, 1), py: 'x.transpose(0, 1)' },
  'contiguous after transpose': { inputs: { x: X }, js: ({ x }) => x.transpose(0, 1).contiguous(), py: 'x.transpose(0, 1).contiguous()' },
  'flatten (all)': { inputs: { x: f32([2, 3, 4], 18, true) }, js: ({ x }) => x.flatten(), py: 'x.flatten()' },
  'flatten 1..2': { inputs: { x: f32([2, 3, 4, 2], 18) }, js: ({ x }) => x.flatten(1, 2), py: 'x.flatten(1, 2)' },
  'squeeze (all)': { inputs: { x: f32([1, 3, 1, 2], 19) }, js: ({ x }) => x.squeeze(), py: 'x.squeeze()' },
  'squeeze dim 2': { inputs: { x: f32([1, 3, 1, 2], 19) }, js: ({ x }) => x.squeeze(2), py: 'x.squeeze(2)' },
  'squeeze a dim of size 3 (no-op)': { inputs: { x: f32([1, 3, 1, 2], 19) }, js: ({ x }) => x.squeeze(1), py: 'x.squeeze(1)' },
  'unsqueeze -1': { inputs: { x: XG }, js: ({ x }) => x.unsqueeze(-1), py: 'x.unsqueeze(-1)' },
  'unsqueeze 0': { inputs: { x: X }, js: ({ x }) => x.unsqueeze(0), py: 'x.unsqueeze(0)' },
  'cat dim 0': { inputs: { x: XG, y: f32([2, 4], 20, true) }, js: ({ x, y }) => bce.cat([x, y]), py: 'torch.cat([x, y])' },
  'cat dim -1': { inputs: { x: X, y: f32([3, 2], 21) }, js: ({ x, y }) => bce.cat([x, y], -1), py: 'torch.cat([x, y], -1)' },
  'stack dim 1': { inputs: { x: XG, y: f32([3, 4], 22, true) }, js: ({ x, y }) => bce.stack([x, y], 1), py: 'torch.stack([x, y], 1)' },
  'stack dim -1 (new last)': { inputs: { x: X, y: f32([3, 4], 23) }, js: ({ x, y }) => bce.stack([x, y], -1), py: 'torch.stack([x, y], -1)' },
  narrow: { inputs: { x: XG }, js: ({ x }) => x.narrow(1, 1, 2), py: 'x.narrow(1, 1, 2)' },
  'narrow negative start': { inputs: { x: X }, js: ({ x }) => x.narrow(0, -2, 2), py: 'x.narrow(0, -2, 2)' },
  select: { inputs: { x: XG }, js: ({ x }) => x.select(1, -1), py: 'x.select(1, -1)' },
  indexSelect: { inputs: { x: XG, i: exact([2, 0, 2], [3], 'int64') }, js: ({ x, i }) => x.indexSelect(1, i), py: 'x.index_select(1, i)' },
  maskedSelect: { inputs: { x: XG, m: typed([3, 4], 'bool', 3) }, js: ({ x, m }) => x.maskedSelect(m), py: 'x.masked_select(m)' },
  'maskedSelect broadcast mask': { inputs: { x: X, m: typed([4], 'bool', 4) }, js: ({ x, m }) => x.maskedSelect(m), py: 'x.masked_select(m)' },
  'maskedFill number': { inputs: { x: XG, m: typed([3, 4], 'bool', 5) }, js: ({ x, m }) => x.maskedFill(m, -7), py: 'x.masked_fill(m, -7)' },
  gather: { inputs: { x: XG, i: exact([0, 3, 1, 1, 2, 0], [3, 2], 'int64') }, js: ({ x, i }) => x.gather(1, i), py: 'x.gather(1, i)' },
  'float of int64': { inputs: { x: typed([5], 'int64') }, js: ({ x }) => x.float(), py: 'x.float()' },
  'double': { inputs: { x: X }, js: ({ x }) => x.double(), py: 'x.double()' },
  'half (rounded to float16)': { inputs: { x: X }, js: ({ x }) => x.half(), py: 'x.half()' },
  'long (truncates)': { inputs: { x: X }, js: ({ x }) => x.long(), py: 'x.long()' },
  'int': { inputs: { x: X }, js: ({ x }) => x.int(), py: 'x.int()' },
  'bool': { inputs: { x: typed([6], 'int64') }, js: ({ x }) => x.bool(), py: 'x.bool()' },
  'float with gradient': { inputs: { x: f32([4], 24, true) }, js: ({ x }) => x.double().float(), py: 'x.double().float()' },
  bincount: { inputs: { x: exact([0, 1, 1, 3, 1, 0], [6], 'int64') }, js: ({ x }) => x.bincount(), py: 'x.bincount()' },
  'bincount weights, minlength': { inputs: { x: exact([0, 1, 1, 3], [4], 'int32'), w: f32([4], 25) }, js: ({ x, w }) => x.bincount(w, 6), py: 'x.bincount(w, minlength=6)' },
  clone: { inputs: { x: XG }, js: ({ x }) => x.clone(), py: 'x.clone()' },
  'zero_ of a clone': { inputs: { x: X }, js: ({ x }) => x.clone().zero_(), py: 'x.clone().zero_()' },
  'fill_ number': { inputs: { x: typed([2, 3], 'int64') }, js: ({ x }) => x.clone().fill_(5), py: 'x.clone().fill_(5)' },
  'fill_ 0-d tensor': { inputs: { x: X, v: exact([2.5], [], 'float32') }, js: ({ x, v }) => x.clone().fill_(v), py: 'x.clone().fill_(v)' },
  'any (all)': { inputs: { x: typed([3, 4], 'bool', 6) }, js: ({ x }) => x.any(), py: 'x.any()' },
  'any dim 1': { inputs: { x: typed([3, 4], 'int64', 7) }, js: ({ x }) => x.any(1), py: 'x.any(1)' },
  'all (all)': { inputs: { x: typed([3, 4], 'bool', 8) }, js: ({ x }) => x.all(), py: 'x.all()' },
  'all dim 0 keepdim': { inputs: { x: typed([3, 4], 'bool', 9) }, js: ({ x }) => x.all(0, true), py: 'x.all(0, keepdim=True)' },
  'countNonzero (all)': { inputs: { x: typed([3, 4], 'int64', 10) }, js: ({ x }) => x.countNonzero(), py: 'x.count_nonzero()' },
  'countNonzero dim': { inputs: { x: typed([3, 4], 'int64', 10) }, js: ({ x }) => x.countNonzero(0), py: 'x.count_nonzero(0)' },
  'countNonzero dims': { inputs: { x: typed([2, 3, 4], 'int64', 11) }, js: ({ x }) => x.countNonzero([0, 2]), py: 'x.count_nonzero([0, 2])' },
  oneHot: { inputs: { x: exact([0, 2, 1, 3], [2, 2], 'int64') }, js: ({ x }) => x.oneHot(5), py: 'torch.nn.functional.one_hot(x, 5)' },
  'oneHot inferred classes': { inputs: { x: exact([0, 2, 1], [3], 'int64') }, js: ({ x }) => x.oneHot(), py: 'torch.nn.functional.one_hot(x)' },
  diagonal: { inputs: { x: f32([4, 4], 26, true) }, js: ({ x }) => x.diagonal(), py: 'x.diagonal()' },
  'diagonal offset 1, dims 1 and 2': { inputs: { x: f32([2, 3, 4], 27) }, js: ({ x }) => x.diagonal(1, 1, 2), py: 'x.diagonal(1, 1, 2)' },
  'int64 times an integer stays int64': { inputs: { x: typed([5], 'int64') }, js: ({ x }) => x.mul(3).add(1), py: 'x * 3 + 1' },
  'a chain: softmax, gather, log, mean': { inputs: { x: f32([4, 5], 28, true), i: exact([1, 0, 4, 2], [4, 1], 'int64') }, js: ({ x, i }) => x.softmax(1).gather(1, i).log().mean(), py: 'x.softmax(1).gather(1, i).log().mean()' },
};

/** JSON cannot carry NaN or infinities: both sides write them as strings. */
type Encoded = number | string;
const decode = (v: Encoded): number =>
  typeof v === 'number' ? v : Number(v === 'nan' ? NaN : v === 'inf' ? Infinity : -Infinity);

interface Encoding {
  shape: number[];
  dtype: string;
  values: Encoded[];
}
export interface Reference {
  outputs: Encoding[];
  grads: Record<string, Encoding | null>;
}

const PYTHON_SCRIPT = `
import json, math, sys, torch
DT = {'float32': torch.float32, 'float64': torch.float64, 'float16': torch.float16, 'int32': torch.int32,
      'int64': torch.int64, 'uint8': torch.uint8, 'bool': torch.bool}
def enc_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return 'nan' if math.isnan(v) else ('inf' if v > 0 else '-inf')
    return v
def enc(t):
    t = t.detach()
    values = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    values = values.to(torch.int64) if t.dtype == torch.bool else values
    return {'shape': list(t.shape), 'dtype': str(t.dtype).replace('torch.', ''),
            'values': [enc_value(v) for v in values.reshape(-1).tolist()]}
def weights(n):
    return torch.tensor([math.cos(0.37 * i + 0.2) for i in range(n)], dtype=torch.float64)
out = {}
for name, case in json.load(sys.stdin).items():
    env = {'torch': torch}
    for k, spec in case['inputs'].items():
        env[k] = torch.tensor(spec['data'], dtype=DT[spec['dtype']]).reshape(spec['shape'])
        if spec.get('grad'):
            env[k].requires_grad_()
    r = eval(case['py'], env)
    outputs = [r] if isinstance(r, torch.Tensor) else [r.values, r.indices]
    grads = {}
    first = outputs[0]
    if first.requires_grad:
        (first * weights(first.numel()).to(first.dtype).reshape(first.shape)).sum().backward()
        for k, spec in case['inputs'].items():
            if spec.get('grad'):
                grads[k] = enc(env[k].grad) if env[k].grad is not None else None
    out[name] = {'outputs': [enc(o) for o in outputs], 'grads': grads}
json.dump(out, sys.stdout)
`;

/** The fixed weights of the backward pass (the same formula as the Python side). */
function weightsFor(t: bce.Tensor): bce.Tensor {
  const w = Array.from({ length: t.numel }, (_, i) => Math.cos(0.37 * i + 0.2));
  return bce.tensor(Float64Array.from(w), { shape: t.shape }).to(t.dtype);
}

function encode(t: bce.Tensor): Encoding {
  const array = t.toArray();
  const values = Array.from(array as ArrayLike<number | bigint>, (v) => Number(v));
  return { shape: t.shape, dtype: t.dtype, values };
}

/** Runs every case in PyTorch (one process) and returns the reference results by case name. */
export function runOperatorReference(python: string): Record<string, Reference> {
  const job = Object.fromEntries(
    Object.entries(OPERATOR_CASES).map(([name, c]) => [name, { inputs: c.inputs, py: c.py }]),
  );
  const r = spawnSync(python, ['-c', PYTHON_SCRIPT], { input: JSON.stringify(job), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`PyTorch reference failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, Reference>;
}

/** Tolerance on |ours - PyTorch| <= tolerance * (1 + |PyTorch|), by dtype. */
function toleranceOf(dtype: string): number {
  return dtype === 'float16' ? 1e-3 : dtype === 'float32' ? 1e-6 : 1e-12;
}

/**
 * Compares one tensor with PyTorch's: the failures (shape, dtype, values out of tolerance) and the largest
 * error |ours - PyTorch| / (1 + |PyTorch|) over its values.
 */
function compare(where: string, ours: Encoding, theirs: Encoding): { failures: string[]; worstError: number } {
  if (ours.shape.join(',') !== theirs.shape.join(',')) {
    return { failures: [`${where}: shape [${ours.shape}], PyTorch [${theirs.shape}]`], worstError: Infinity };
  }
  if (ours.dtype !== theirs.dtype) {
    return { failures: [`${where}: dtype ${ours.dtype}, PyTorch ${theirs.dtype}`], worstError: Infinity };
  }
  const tolerance = toleranceOf(ours.dtype);
  const failures: string[] = [];
  let worstError = 0;
  ours.values.forEach((v, i) => {
    const expected = decode(theirs.values[i]);
    const a = decode(v);
    if (Number.isNaN(expected) || Number.isNaN(a)) {
      if (Number.isNaN(expected) !== Number.isNaN(a)) failures.push(`${where}[${i}]: ours ${a}, PyTorch ${expected}`);
      return;
    }
    const error = a === expected ? 0 : Math.abs(a - expected) / (1 + Math.abs(expected));
    worstError = Math.max(worstError, error);
    if (!(error <= tolerance)) failures.push(`${where}[${i}]: ours ${a}, PyTorch ${expected}`);
  });
  return { failures, worstError };
}

/** The outcome of one operator case. */
export interface OperatorReport {
  name: string;
  /** Empty when the case matches PyTorch. */
  failures: string[];
  /** Largest |ours - PyTorch| / (1 + |PyTorch|) over outputs and gradients (0 when bit-identical). */
  worstError: number;
  /** Whether gradients were compared. */
  withGrads: boolean;
}

/** Runs case `name` here and compares it with PyTorch's results. */
export function checkOperatorCase(name: string, theirs: Reference): OperatorReport {
  const c = OPERATOR_CASES[name];
  const report: OperatorReport = { name, failures: [], worstError: 0, withGrads: false };
  const add = (r: { failures: string[]; worstError: number }): void => {
    report.failures.push(...r.failures);
    report.worstError = Math.max(report.worstError, r.worstError);
  };
  bce.tidy(() => {
    const inputs = Object.fromEntries(
      Object.entries(c.inputs).map(([k, spec]) => [
        k,
        bce.tensor(spec.data, { shape: spec.shape, dtype: spec.dtype, requiresGrad: spec.grad === true }),
      ]),
    );
    const result = c.js(inputs);
    const outputs = bce.isTensor(result) ? [result] : [result.values, result.indices];
    if (outputs.length !== theirs.outputs.length) {
      report.failures.push(`${name}: ${outputs.length} outputs, PyTorch ${theirs.outputs.length}`);
      return;
    }
    outputs.forEach((o, k) => add(compare(`${name} output ${k}`, encode(o), theirs.outputs[k])));
    const gradNames = Object.keys(theirs.grads);
    const expectGrad = Object.values(c.inputs).some((spec) => spec.grad);
    // A case with inputs that require grad has a differentiable result in PyTorch, and so here.
    if (outputs[0].requiresGrad !== (expectGrad && gradNames.length > 0)) {
      report.failures.push(`${name}: requiresGrad ${outputs[0].requiresGrad}, PyTorch ${!outputs[0].requiresGrad}`);
      return;
    }
    if (gradNames.length === 0) return;
    report.withGrads = true;
    outputs[0].mul(weightsFor(outputs[0])).sum().backward();
    for (const k of gradNames) {
      const expected = theirs.grads[k];
      const grad = inputs[k].grad;
      if (expected === null) {
        if (grad !== null) report.failures.push(`${name} grad of ${k}: a gradient, PyTorch none`);
      } else if (grad === null) {
        report.failures.push(`${name} grad of ${k}: no gradient, PyTorch has one`);
      } else {
        add(compare(`${name} grad of ${k}`, encode(grad), expected));
      }
    }
  });
  return report;
}
