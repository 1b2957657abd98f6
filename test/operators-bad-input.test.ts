/**
 * Bad arguments for every tensor operator: each row is a call, the error class it must raise and a fragment of
 * the message naming the argument. Rows marked 'LibTorch' are refused by LibTorch itself: neither its wording nor
 * the class (an Error, or a RangeError for its index errors) is pinned, as both differ between versions; only that
 * it is a clean JavaScript error and the process goes on. After every row a valid operator call must still succeed, and
 * the rows leave no tensor behind.
 */
import * as bce from '../lib';
import { native } from '../lib/native';
import { TENSOR_METHODS, OVERLOADED_METHODS } from '../lib/operators';

const { tensor, zeros, randn, cat, stack, where, tidy, memory } = bce;

interface Row {
  call: string;
  /** 'passes': a call that looks wrong but is valid in PyTorch too. */
  name: 'TypeError' | 'RangeError' | 'Error' | 'LibTorch' | 'passes';
  /** A fragment the message must contain; omitted for LibTorch's own errors (wording differs between versions). */
  message?: string;
  run: () => unknown;
}

let x: bce.Tensor; // float32 [2, 3]
let l: bce.Tensor; // int64 [4]
let b: bce.Tensor; // bool [2, 3]
function fixtures(): void {
  x = randn([2, 3], { requiresGrad: true });
  l = tensor([0, 2, 1, 2], { dtype: 'int64' });
  b = x.gt(0);
}
function disposeFixtures(): void {
  x.grad?.dispose();
  for (const t of [x, l, b]) t.dispose();
}
const raw = native.callOperator as (...args: unknown[]) => unknown;

// One line per row, for reading (prettier would spread each over several).
// prettier-ignore
const rows: Row[] = [
  // ---- argmax / argmin / max / min ----
  { call: 'x.argmax(2)', name: 'RangeError', message: 'dim must be in [-2, 1] for a tensor of 2 dimension(s) (shape [2, 3]), got 2', run: () => x.argmax(2) },
  { call: "x.argmax('1')", name: 'TypeError', message: 'dim must be an integer, got "1"', run: () => x.argmax('1' as never) },
  { call: 'x.argmax(0.5)', name: 'RangeError', message: 'dim must be a safe integer, got 0.5', run: () => x.argmax(0.5) },
  { call: "x.argmax(0, 'yes')", name: 'TypeError', message: 'keepdim must be a boolean', run: () => x.argmax(0, 'yes' as never) },
  { call: 'x.argmin(-3)', name: 'RangeError', message: 'dim must be in [-2, 1]', run: () => x.argmin(-3) },
  { call: 'zeros([0]).argmax()', name: 'LibTorch', run: () => zeros([0]).argmax() },
  { call: 'x.max(5)', name: 'RangeError', message: 'dim must be in [-2, 1]', run: () => x.max(5) },
  { call: "x.max('a')", name: 'TypeError', message: 'other must be a Tensor, got "a"', run: () => x.max('a' as never) },
  { call: 'x.max(randn([4]))', name: 'RangeError', message: 'other of shape [4] does not broadcast with self of shape [2, 3]', run: () => x.max(randn([4])) },
  { call: 'x.min(0, 1)', name: 'TypeError', message: 'keepdim must be a boolean, got 1', run: () => x.min(0, 1 as never) },
  { call: 'zeros([0]).min()', name: 'LibTorch', run: () => zeros([0]).min() },
  // ---- softmax ----
  { call: 'x.softmax()', name: 'TypeError', message: 'dim must be an integer, got undefined', run: () => (x.softmax as () => unknown)() },
  { call: 'x.softmax(2)', name: 'RangeError', message: 'dim must be in [-2, 1]', run: () => x.softmax(2) },
  { call: 'l.softmax(0)', name: 'TypeError', message: 'self must be a floating-point tensor (or pass a floating dtype), got int64', run: () => l.softmax(0) },
  { call: "x.softmax(1, 'int64')", name: 'TypeError', message: 'dtype must be a floating-point dtype, got int64', run: () => x.softmax(1, 'int64') },
  { call: "x.logSoftmax(1, 'float128')", name: 'TypeError', message: "dtype must be one of 'float32'", run: () => x.logSoftmax(1, 'float128' as never) },
  // ---- comparisons ----
  { call: "x.eq('1')", name: 'TypeError', message: 'other must be a Tensor, got "1"', run: () => x.eq('1' as never) },
  { call: 'x.ne(randn([2, 4]))', name: 'RangeError', message: 'other of shape [2, 4] does not broadcast with self of shape [2, 3]', run: () => x.ne(randn([2, 4])) },
  { call: 'x.lt(null)', name: 'TypeError', message: 'other must be a Tensor, got null', run: () => x.lt(null as never) },
  { call: 'x.le({})', name: 'TypeError', message: 'other must be a Tensor', run: () => x.le({} as never) },
  { call: 'x.gt(10n)', name: 'TypeError', message: 'other must be a Tensor, got 10n', run: () => x.gt(10n as never) },
  { call: 'x.ge(disposed)', name: 'Error', message: 'other was disposed and can no longer be used', run: () => { const t = randn([3]); t.dispose(); return x.ge(t); } },
  // ---- where ----
  { call: 'where(x, x, x)', name: 'TypeError', message: 'condition must be a bool tensor, got float32', run: () => where(x, x, x) },
  { call: "where(b, x, '0')", name: 'TypeError', message: 'other must be a Tensor, got "0"', run: () => where(b, x, '0' as never) },
  { call: 'where(b, randn([4]), 0)', name: 'RangeError', message: 'input of shape [4] does not broadcast with condition of shape [2, 3]', run: () => where(b, randn([4]), 0) },
  { call: 'x.where(l, 0)', name: 'TypeError', message: 'condition must be a bool tensor, got int64', run: () => x.where(l, 0) },
  // ---- clamp ----
  { call: 'x.clamp()', name: 'TypeError', message: 'clamp needs min or max (or both), got neither', run: () => x.clamp() },
  { call: 'x.clamp(0, randn([3]))', name: 'TypeError', message: 'min and max must both be numbers or both be Tensors', run: () => x.clamp(0, randn([3])) },
  { call: "x.clamp('0')", name: 'TypeError', message: 'min must be a Tensor, got "0"', run: () => x.clamp('0' as never) },
  { call: 'x.clamp(randn([5]))', name: 'RangeError', message: 'min of shape [5] does not broadcast with self of shape [2, 3]', run: () => x.clamp(randn([5])) },
  // ---- unary ----
  { call: 'b.neg()', name: 'LibTorch', run: () => b.neg() },
  { call: 'x.exp.call({})', name: 'TypeError', message: 'self must be a Tensor, got an object (Object)', run: () => x.exp.call({} as never) },
  { call: 'x.log() after x.dispose()', name: 'Error', message: 'self was disposed and can no longer be used', run: () => { const t = randn([2]); t.dispose(); return t.log(); } },
  { call: 'x.exp(1)', name: 'TypeError', message: 'exp takes no arguments, got 1', run: () => (x.exp as (a: unknown) => unknown)(1) },
  { call: 'x.sqrt(2)', name: 'TypeError', message: 'sqrt takes no arguments, got 1', run: () => (x.sqrt as (a: unknown) => unknown)(2) },
  { call: 'x.clone({})', name: 'TypeError', message: 'clone takes no arguments, got 1', run: () => (x.clone as (a: unknown) => unknown)({}) },
  { call: 'x.zero_(0)', name: 'TypeError', message: 'zero_ takes no arguments, got 1', run: () => (x.zero_ as (a: unknown) => unknown)(0) },
  { call: 'x.abs(1)', name: 'TypeError', message: 'abs takes no arguments, got 1', run: () => (x.abs as (a: unknown) => unknown)(1) },
  // ---- pow, matmul ----
  { call: "x.pow('2')", name: 'TypeError', message: 'exponent must be a Tensor, got "2"', run: () => x.pow('2' as never) },
  { call: 'x.pow(randn([4]))', name: 'RangeError', message: 'exponent of shape [4] does not broadcast', run: () => x.pow(randn([4])) },
  { call: 'x.matmul(randn([2, 3]))', name: 'RangeError', message: 'matmul: self of shape [2, 3] and other of shape [2, 3] do not match (3 vs 2)', run: () => x.matmul(randn([2, 3])) },
  { call: 'x.matmul(tensor(1))', name: 'RangeError', message: 'matmul needs tensors of at least one dimension', run: () => x.matmul(tensor(1)) },
  { call: "x.matmul(randn([3], { dtype: 'float64' }))", name: 'TypeError', message: "other must have self's dtype float32, got float64", run: () => x.matmul(randn([3], { dtype: 'float64' })) },
  { call: 'x.matmul([1, 2, 3])', name: 'TypeError', message: 'other must be a Tensor, got an array', run: () => x.matmul([1, 2, 3] as never) },
  // ---- shapes and views ----
  { call: 'x.permute([0])', name: 'RangeError', message: "dims must list each of the tensor's 2 dimension(s) once, got 1 entries", run: () => x.permute([0]) },
  { call: 'x.permute([0, -2])', name: 'RangeError', message: 'dims[1] repeats dimension 0; dims must be a permutation', run: () => x.permute([0, -2]) },
  { call: 'x.permute(1, 0)', name: 'TypeError', message: 'dims must be an array of integers, got 1', run: () => (x.permute as (...a: unknown[]) => unknown)(1, 0) },
  { call: 'x.transpose(0, 2)', name: 'RangeError', message: 'dim1 must be in [-2, 1]', run: () => x.transpose(0, 2) },
  { call: 'x.transpose(0)', name: 'TypeError', message: 'dim1 must be an integer, got undefined', run: () => (x.transpose as (a: number) => unknown)(0) },
  { call: 'x.contiguous(1)', name: 'TypeError', message: 'contiguous takes no arguments, got 1', run: () => (x.contiguous as (a: unknown) => unknown)(1) },
  { call: 'x.flatten(1, 0)', name: 'RangeError', message: 'startDim (1) must not come after endDim (0)', run: () => x.flatten(1, 0) },
  { call: 'x.flatten(3)', name: 'RangeError', message: 'startDim must be in [-2, 1]', run: () => x.flatten(3) },
  { call: 'x.squeeze(2)', name: 'RangeError', message: 'dim must be in [-2, 1]', run: () => x.squeeze(2) },
  { call: 'x.unsqueeze(3)', name: 'RangeError', message: 'dim must be in [-3, 2] for a tensor of 2 dimension(s), got 3', run: () => x.unsqueeze(3) },
  { call: 'x.unsqueeze(NaN)', name: 'RangeError', message: 'dim must be a safe integer, got NaN', run: () => x.unsqueeze(NaN) },
  { call: 'x.diagonal(0, 1, 1)', name: 'RangeError', message: 'dim1 and dim2 must differ, got 1 and 1', run: () => x.diagonal(0, 1, 1) },
  { call: 'l.diagonal()', name: 'RangeError', message: 'diagonal needs a tensor of at least 2 dimensions, got shape [4]', run: () => l.diagonal() },
  // ---- cat, stack ----
  { call: 'cat([])', name: 'RangeError', message: 'tensors must hold at least one Tensor', run: () => cat([]) },
  { call: 'cat(x)', name: 'TypeError', message: 'tensors must be an array of Tensors, got an object (Tensor)', run: () => cat(x as never) },
  { call: 'cat([x, 1])', name: 'TypeError', message: 'tensors[1] must be a Tensor, got 1', run: () => cat([x, 1 as never]) },
  { call: 'cat([x, randn([2, 4])], 0)', name: 'RangeError', message: 'tensors[1] of shape [2, 4] cannot be concatenated with tensors[0] of shape [2, 3] along dim 0', run: () => cat([x, randn([2, 4])], 0) },
  { call: 'cat([x, x], 2)', name: 'RangeError', message: 'dim must be in [-2, 1]', run: () => cat([x, x], 2) },
  { call: "cat([x, x.double()])", name: 'passes', run: () => cat([x, x.double()]) },
  { call: 'stack([x, randn([3, 2])])', name: 'RangeError', message: 'tensors[1] of shape [3, 2] differs from tensors[0] of shape [2, 3]; stack needs equal shapes', run: () => stack([x, randn([3, 2])]) },
  { call: 'stack([x, x], 3)', name: 'RangeError', message: 'dim must be in [-3, 2] to stack tensors of 2 dimension(s), got 3', run: () => stack([x, x], 3) },
  // ---- slicing and indexing ----
  { call: 'x.narrow(1, 2, 2)', name: 'RangeError', message: 'start + length (2 + 2) exceeds dim 1 of size 3', run: () => x.narrow(1, 2, 2) },
  { call: 'x.narrow(1, -4, 1)', name: 'RangeError', message: 'start must be in [-3, 3] for dim 1 of size 3, got -4', run: () => x.narrow(1, -4, 1) },
  { call: 'x.narrow(0, 0, -1)', name: 'RangeError', message: 'length must be an integer >= 0, got -1', run: () => x.narrow(0, 0, -1) },
  { call: 'tensor(1).narrow(0, 0, 1)', name: 'RangeError', message: 'narrow needs a tensor of at least one dimension', run: () => tensor(1).narrow(0, 0, 1) },
  { call: 'x.select(0, 2)', name: 'RangeError', message: 'index must be in [-2, 1] for dim 0 of size 2, got 2', run: () => x.select(0, 2) },
  { call: 'tensor(1).select(0, 0)', name: 'RangeError', message: 'select needs a tensor of at least one dimension', run: () => tensor(1).select(0, 0) },
  { call: 'x.indexSelect(1, x)', name: 'TypeError', message: 'index must be an int64 or int32 tensor, got float32', run: () => x.indexSelect(1, x) },
  { call: "x.indexSelect(1, l.reshape([2, 2]))", name: 'RangeError', message: 'index must have at most 1 dimension(s), got 2', run: () => x.indexSelect(1, l.reshape([2, 2])) },
  { call: 'x.indexSelect(1, tensor([5]) as int64)', name: 'LibTorch', run: () => x.indexSelect(1, tensor([5], { dtype: 'int64' })) },
  { call: 'x.maskedSelect(l)', name: 'TypeError', message: 'mask must be a bool tensor, got int64', run: () => x.maskedSelect(l) },
  { call: "x.maskedSelect(tensor([true, false]))", name: 'RangeError', message: 'mask of shape [2] does not broadcast with self of shape [2, 3]', run: () => x.maskedSelect(tensor([true, false])) },
  { call: "x.maskedFill(b, 'x')", name: 'TypeError', message: 'value must be a number, a boolean or a Tensor, got "x"', run: () => x.maskedFill(b, 'x' as never) },
  { call: 'x.maskedFill(b, randn([2]))', name: 'LibTorch', run: () => x.maskedFill(b, randn([2])) },
  { call: 'x.gather(1, l)', name: 'RangeError', message: "index must have self's number of dimensions (2), got 1", run: () => x.gather(1, l) },
  { call: 'x.gather(1, x)', name: 'TypeError', message: 'index must be an int64 tensor, got float32', run: () => x.gather(1, x) },
  { call: 'x.gather(1, index holding 3)', name: 'LibTorch', run: () => x.gather(1, tensor([[0], [3]], { dtype: 'int64' })) },
  // ---- conversions, bincount, in-place, reductions, oneHot ----
  { call: 'x.float(1)', name: 'TypeError', message: 'float takes no arguments, got 1', run: () => (x.float as (a: unknown) => unknown)(1) },
  { call: "x.double('x')", name: 'TypeError', message: 'double takes no arguments, got 1', run: () => (x.double as (a: unknown) => unknown)('x') },
  { call: "x.half('float16')", name: 'TypeError', message: 'half takes no arguments, got 1', run: () => (x.half as (a: unknown) => unknown)('float16') },
  { call: 'x.long(true)', name: 'TypeError', message: 'long takes no arguments, got 1', run: () => (x.long as (a: unknown) => unknown)(true) },
  { call: 'x.int(1, 2)', name: 'TypeError', message: 'int takes no arguments, got 2', run: () => (x.int as (a: unknown, b: unknown) => unknown)(1, 2) },
  { call: 'x.bool(null)', name: 'TypeError', message: 'bool takes no arguments, got 1', run: () => (x.bool as (a: unknown) => unknown)(null) },
  { call: 'x.bincount()', name: 'TypeError', message: 'self must be a 1-D tensor of non-negative integers (int64, int32 or uint8), got float32', run: () => x.bincount() },
  { call: 'l.reshape([2, 2]).bincount()', name: 'RangeError', message: 'self must be a 1-D tensor, got shape [2, 2]', run: () => l.reshape([2, 2]).bincount() },
  { call: 'l.bincount(randn([3]))', name: 'RangeError', message: "weights must have self's shape [4], got [3]", run: () => l.bincount(randn([3])) },
  { call: 'l.bincount(null, -1)', name: 'RangeError', message: 'minlength must be an integer >= 0, got -1', run: () => l.bincount(null, -1) },
  { call: 'tensor([-1]).long().bincount()', name: 'LibTorch', run: () => tensor([-1], { dtype: 'int64' }).bincount() },
  { call: 'x.zero_() (a leaf that requires grad)', name: 'LibTorch', run: () => x.zero_() },
  { call: "x.fill_('1')", name: 'TypeError', message: 'value must be a number, a boolean or a Tensor, got "1"', run: () => x.fill_('1' as never) },
  { call: 'x.detach().fill_(randn([2]))', name: 'RangeError', message: 'value must be a number or a 0-d tensor, got shape [2]', run: () => x.detach().fill_(randn([2])) },
  { call: 'x.any(2)', name: 'RangeError', message: 'dim must be in [-2, 1]', run: () => x.any(2) },
  { call: "x.all(0, 'no')", name: 'TypeError', message: 'keepdim must be a boolean', run: () => x.all(0, 'no' as never) },
  { call: 'x.countNonzero([0, 5])', name: 'RangeError', message: 'dim[1] must be in [-2, 1]', run: () => x.countNonzero([0, 5]) },
  { call: "x.countNonzero('0')", name: 'TypeError', message: 'dim must be an integer, got "0"', run: () => x.countNonzero('0' as never) },
  { call: 'x.oneHot(3)', name: 'TypeError', message: 'self must be an int64 tensor of class indices, got float32', run: () => x.oneHot(3) },
  { call: 'l.oneHot(-2)', name: 'RangeError', message: 'numClasses must be an integer >= -1, got -2', run: () => l.oneHot(-2) },
  { call: 'l.oneHot(2) (class 2 present)', name: 'LibTorch', run: () => l.oneHot(2) },
  // ---- the native entry point itself, past the facade ----
  { call: "native.callOperator('aten::_local_scalar_dense', [x])", name: 'TypeError', message: "schema 'aten::_local_scalar_dense' is not an operator this addon exposes", run: () => raw('aten::_local_scalar_dense', [x.handle]) },
  { call: "native.callOperator('aten::argmax')", name: 'TypeError', message: 'args must be an array', run: () => raw('aten::argmax') },
  { call: 'native.callOperator(1, [])', name: 'TypeError', message: 'schema must be a string', run: () => raw(1, []) },
  { call: "native.callOperator('aten::argmax', [])", name: 'TypeError', message: 'aten::argmax: self is required', run: () => raw('aten::argmax', []) },
  { call: "native.callOperator('aten::argmax', [x, 0, false, 1])", name: 'RangeError', message: 'aten::argmax takes at most 3 arguments, got 4', run: () => raw('aten::argmax', [x.handle, 0, false, 1]) },
  { call: "native.callOperator('aten::argmax', [{}, 0])", name: 'TypeError', message: 'aten::argmax: self must be a Tensor', run: () => raw('aten::argmax', [{}, 0]) },
  { call: "native.callOperator('aten::argmax', [x, 1.5])", name: 'RangeError', message: 'aten::argmax: dim must be a safe integer', run: () => raw('aten::argmax', [x.handle, 1.5]) },
  { call: "native.callOperator('aten::contiguous', [x, 2])", name: 'TypeError', message: 'aten::contiguous: memory_format: arguments of type MemoryFormat cannot be given from JavaScript', run: () => raw('aten::contiguous', [x.handle, 2]) },
  { call: "native.callOperator('aten::to.dtype', [x, 'complex'])", name: 'TypeError', message: "aten::to.dtype: dtype must be one of 'float32'", run: () => raw('aten::to.dtype', [x.handle, 'complex']) },
  { call: "native.callOperator('aten::permute', [x, new Array(65).fill(0)])", name: 'RangeError', message: 'aten::permute: dims may have at most 64 entries', run: () => raw('aten::permute', [x.handle, new Array(65).fill(0)]) },
  { call: "native.callOperator('aten::cat', [[x, 'y']])", name: 'TypeError', message: 'aten::cat: tensors[1] must be a Tensor', run: () => raw('aten::cat', [[x.handle, 'y']]) },
  { call: "native.callOperator('aten::clamp', [x, '1'])", name: 'TypeError', message: 'aten::clamp: min must be a number or a boolean', run: () => raw('aten::clamp', [x.handle, '1']) },
  { call: "native.callOperator('aten::argmax', [x, 5])", name: 'LibTorch', run: () => raw('aten::argmax', [x.handle, 5]) },
];

function outcome(run: () => unknown): unknown {
  try {
    tidy(() => {
      run();
      return undefined;
    });
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('operators: bad arguments', () => {
  let baseline = 0;
  beforeAll(() => {
    baseline = memory().tensors;
  });
  beforeEach(fixtures);
  afterEach(disposeFixtures);

  it.each(rows.map((row, i) => [i + 1, row.call, row] as const))('%i. %s', (_i, _call, row) => {
    const before = memory().tensors;
    const error = outcome(row.run) as Error | undefined;
    if ((row.name as string) === 'passes') {
      // Mixed dtypes are promoted as PyTorch does: not an error.
      expect(error).toBeUndefined();
      return;
    }
    expect(error).toBeDefined();
    if (row.name === 'LibTorch') expect(['Error', 'RangeError', 'TypeError']).toContain(error!.name);
    else expect(error!.name).toBe(row.name);
    if (row.message !== undefined) expect(error!.message).toContain(row.message);
    // The operators still work.
    tidy(() => expect(x.detach().argmax().item()).toBeGreaterThanOrEqual(0));
    expect(memory().tensors).toBe(before);
  });

  it('has a row for every operator', () => {
    const names = [...Object.keys(TENSOR_METHODS), ...Object.keys(OVERLOADED_METHODS), 'cat', 'stack', 'where'];
    const calls = rows.map((r) => r.call).join('\n');
    const missing: string[] = names.filter((n) => !new RegExp(`\\b${n}\\(`).test(calls));
    expect(missing).toEqual([]);
  });

  it('leaves no tensor behind', () => {
    // Only this test's fixtures (x, l, b) are alive.
    expect(memory().tensors).toBe(baseline + 3);
  });
});
