/**
 * Bad input table: each row is a call with a bad argument, the error class it must raise and a fragment of the
 * message that names the argument. After every row a valid training step must still succeed.
 *
 * docs/errors.md holds the same table (between the BAD-INPUT-TABLE markers), generated from this file:
 *   UPDATE_ERRORS_DOC=1 npx jest --runInBand test/bad-input.test.ts
 * Without UPDATE_ERRORS_DOC the last test fails when the document and this table disagree.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as bce from '../lib';
import { native } from '../lib/native';
import { keepCount, pixelLosses, topkIndices } from './helpers/reference';

const {
  tensor,
  zeros,
  ones,
  randn,
  randint,
  manualSeed,
  setNumThreads,
  cpuBlockCache,
  tidy,
  schedules,
  memory,
  bootstrappedCrossEntropy,
  bootstrappedCrossEntropyWithStats,
  bootstrappedBinaryCrossEntropy,
  bootstrappedBinaryCrossEntropyWithLogits,
  crossEntropy,
  BootstrappedCrossEntropy,
  BootstrappedCE,
} = bce;

type ErrorName = 'TypeError' | 'RangeError' | 'Error' | 'passes through';

interface Row {
  /** The call, as written in the table. */
  call: string;
  /** What is wrong with it. */
  what: string;
  name: ErrorName;
  /** A fragment the message must contain (names the argument). */
  message: string;
  run: () => unknown;
}

class CustomScheduleError extends Error {
  constructor() {
    super('schedule exploded');
    this.name = 'CustomScheduleError';
  }
}
const thrownBySchedule = new CustomScheduleError();
const thrownByReduction = new Error('reduction exploded');

/** `values` with a hole at index 1 ([a, , c]; the linter refuses such literals). */
function withHole(values: number[]): number[] {
  const array = values.slice();
  delete array[1];
  return array;
}

// Fixtures: valid except for the one thing each row breaks. Recreated before each row.
let x: bce.Tensor;
let y: bce.Tensor;
function fixtures(): void {
  x = randn([2, 3, 4, 4], { requiresGrad: true });
  y = randint(0, 3, [2, 4, 4]);
}
function disposeFixtures(): void {
  if (!x.isDisposed) x.grad?.dispose();
  x.dispose();
  y.dispose();
}
const step = (options?: bce.BootstrappedCrossEntropyOptions) => bootstrappedCrossEntropy(x, y, 0, 0.5, options);

/** What step() must return, computed in JavaScript from the fixtures' values (test/helpers/reference.ts). */
function handLoss(input: bce.Tensor, target: bce.Tensor): number {
  const [N, C, H, W] = input.shape;
  const values = input.toArray() as Float32Array;
  const labels = target.toArray() as BigInt64Array;
  const logits = Array.from({ length: N }, (_, n) =>
    Array.from({ length: C }, (_, c) => Array.from(values.subarray((n * C + c) * H * W, (n * C + c + 1) * H * W))),
  );
  const classes = Array.from({ length: N }, (_, n) => Array.from(labels.subarray(n * H * W, (n + 1) * H * W), Number));
  const losses = pixelLosses(logits, classes).flat();
  const k = keepCount(0.5, losses.length);
  return (
    topkIndices(
      losses,
      k,
      losses.map(() => true),
    ).reduce((a, i) => a + losses[i], 0) / k
  );
}

// A table, one row per case: kept one line per row for reading (prettier would spread each over ten).
// prettier-ignore
const rows: Row[] = [
  // ---- tensor factories ----
  { call: "tensor('abc')", what: 'data of the wrong type', name: 'TypeError', message: 'data must be a typed array', run: () => tensor('abc' as never) },
  { call: 'tensor(new Int16Array(3))', what: 'unsupported typed array', name: 'TypeError', message: 'data must be a Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array or nested arrays, got an Int16Array', run: () => tensor(new Int16Array(3) as never) },
  { call: "tensor([1, 'a'])", what: 'a string element', name: 'TypeError', message: 'data[1] must be a number or boolean', run: () => tensor([1, 'a'] as never) },
  { call: 'tensor([[1, 2], [3]])', what: 'ragged nested arrays', name: 'RangeError', message: 'data[1] must be an array of length 2', run: () => tensor([[1, 2], [3]]) },
  { call: 'tensor([1, , 3])', what: 'a hole in the data', name: 'TypeError', message: 'data[1] is missing: the array has a hole there', run: () => tensor(withHole([1, 2, 3])) },
  { call: 'tensor([1, 2, 3], { shape: [2, 2] })', what: 'shape does not match the data', name: 'RangeError', message: 'shape [2,2] holds 4 elements but data has 3', run: () => tensor([1, 2, 3], { shape: [2, 2] }) },
  { call: "tensor([1.5], { dtype: 'int64' })", what: 'fractional value for an integer dtype', name: 'RangeError', message: 'dtype int64 needs integers', run: () => tensor([1.5], { dtype: 'int64' }) },
  { call: "tensor([300], { dtype: 'uint8' })", what: 'a value uint8 cannot hold (would wrap to 44)', name: 'RangeError', message: 'data (flattened)[0] is 300, outside the range of uint8 [0, 255]', run: () => tensor([300], { dtype: 'uint8' }) },
  { call: "tensor([2 ** 31], { dtype: 'int32' })", what: 'a value int32 cannot hold', name: 'RangeError', message: 'data (flattened)[0] is 2147483648, outside the range of int32', run: () => tensor([2 ** 31], { dtype: 'int32' }) },
  { call: "tensor([1, 1e20], { dtype: 'int64' })", what: 'a value int64 cannot hold', name: 'RangeError', message: 'data (flattened)[1] is 100000000000000000000, outside the range of int64', run: () => tensor([1, 1e20], { dtype: 'int64' }) },
  { call: "tensor([NaN], { dtype: 'int64' })", what: 'NaN as an integer', name: 'RangeError', message: 'data (flattened)[0] is NaN, which is not an integer', run: () => tensor([NaN], { dtype: 'int64' }) },
  { call: "tensor(new Float64Array([1, -1]), { dtype: 'uint8' })", what: 'a typed array converted to a dtype that cannot hold it', name: 'RangeError', message: 'data[1] is -1, outside the range of uint8', run: () => tensor(new Float64Array([1, -1]), { dtype: 'uint8' }) },
  { call: "tensor(new BigInt64Array([2n ** 40n]), { dtype: 'int32' })", what: 'int64 data too large for int32', name: 'RangeError', message: 'data[0] is 1099511627776, outside the range of int32', run: () => tensor(new BigInt64Array([2n ** 40n]), { dtype: 'int32' }) },
  { call: "tensor([1], { dtype: 'float128' })", what: 'unknown dtype', name: 'TypeError', message: 'dtype must be one of', run: () => tensor([1], { dtype: 'float128' as never }) },
  { call: "tensor([1], 'cpu')", what: 'options not an object', name: 'TypeError', message: 'options must be an object', run: () => tensor([1], 'cpu' as never) },
  { call: "zeros('3')", what: 'shape not an array', name: 'TypeError', message: 'shape must be an array', run: () => zeros('3' as never) },
  { call: "zeros([2, '3'])", what: 'a string size', name: 'TypeError', message: 'shape[1] must be an integer', run: () => zeros([2, '3'] as never) },
  { call: 'zeros([2, NaN])', what: 'NaN size', name: 'RangeError', message: 'shape[1] must be a non-negative integer, got NaN', run: () => zeros([2, NaN]) },
  { call: 'zeros([Infinity])', what: 'infinite size', name: 'RangeError', message: 'shape[0] must be a non-negative integer, got Infinity', run: () => zeros([Infinity]) },
  { call: 'zeros([-1])', what: 'negative size', name: 'RangeError', message: 'shape[0] must be a non-negative integer, got -1', run: () => zeros([-1]) },
  { call: 'zeros([1.5])', what: 'fractional size', name: 'RangeError', message: 'shape[0] must be a non-negative integer, got 1.5', run: () => zeros([1.5]) },
  { call: 'zeros([2, , 3])', what: 'a hole in the shape', name: 'TypeError', message: 'shape[1] is missing: the array has a hole there', run: () => zeros(withHole([2, 2, 3])) },
  { call: 'zeros(new Array(17).fill(1))', what: 'too many dimensions', name: 'RangeError', message: 'shape may have at most 16 dimensions', run: () => zeros(new Array(17).fill(1)) },
  { call: 'zeros([2 ** 40, 2 ** 40])', what: 'enormous size (more than 2^53 elements)', name: 'RangeError', message: 'shape describes more than 2^53 elements', run: () => zeros([2 ** 40, 2 ** 40]) },
  { call: 'ones([2 ** 24, 2 ** 24])', what: 'an allocation that cannot succeed (1 PiB)', name: 'RangeError', message: 'ones: shape [16777216,16777216] of float32 needs 1125899906842624 bytes, which could not be allocated (out of memory)', run: () => ones([2 ** 24, 2 ** 24]) },
  { call: "zeros([2], { device: 'cuda' })", what: 'CUDA on a machine without it', name: 'Error', message: "device 'cuda' requested, but CUDA is not available", run: () => zeros([2], { device: 'cuda' }) },
  { call: "zeros([2], { device: 'tpu' })", what: 'unknown device', name: 'TypeError', message: "device must be 'cpu', 'cuda' or 'cuda:N'", run: () => zeros([2], { device: 'tpu' }) },
  { call: "zeros([2], { requiresGrad: 'yes' })", what: 'requiresGrad not a boolean', name: 'TypeError', message: 'requiresGrad must be a boolean', run: () => zeros([2], { requiresGrad: 'yes' as never }) },
  { call: "zeros([2], { dtype: 'int64', requiresGrad: true })", what: 'requiresGrad on an integer dtype', name: 'TypeError', message: 'requiresGrad needs a floating-point dtype', run: () => zeros([2], { dtype: 'int64', requiresGrad: true }) },
  { call: "randn([2], { dtype: 'int32' })", what: 'randn of an integer dtype', name: 'TypeError', message: 'randn needs a floating-point dtype', run: () => randn([2], { dtype: 'int32' }) },
  { call: 'randint(5, 5, [2])', what: 'empty range', name: 'RangeError', message: 'high must be greater than low', run: () => randint(5, 5, [2]) },
  { call: 'randint(0.5, 3, [2])', what: 'fractional bound', name: 'RangeError', message: 'low must be a safe integer', run: () => randint(0.5, 3, [2]) },
  { call: 'manualSeed(-1)', what: 'negative seed', name: 'RangeError', message: 'seed must be an integer >= 0', run: () => manualSeed(-1) },
  { call: "manualSeed('1')", what: 'seed of the wrong type', name: 'TypeError', message: 'seed must be an integer', run: () => manualSeed('1' as never) },
  { call: 'setNumThreads(0)', what: 'zero threads', name: 'RangeError', message: 'threads must be an integer >= 1', run: () => setNumThreads(0) },
  { call: 'setNumThreads(1e6)', what: 'too many threads', name: 'RangeError', message: 'threads must be at most 4096', run: () => setNumThreads(1e6) },
  { call: 'cpuBlockCache.setLimit(-1)', what: 'negative cache limit', name: 'RangeError', message: 'bytes must be an integer >= 0', run: () => cpuBlockCache.setLimit(-1) },
  { call: "cpuBlockCache.setLimit('1GB')", what: 'cache limit of the wrong type', name: 'TypeError', message: 'bytes must be an integer', run: () => cpuBlockCache.setLimit('1GB' as never) },
  // ---- Tensor methods ----
  { call: "t.to('cuda')", what: 'CUDA on a machine without it', name: 'Error', message: "device 'cuda' requested, but CUDA is not available", run: () => x.to('cuda') },
  { call: "t.to('cuda:x')", what: 'malformed device', name: 'TypeError', message: "device must be 'cpu', 'cuda' or 'cuda:N'", run: () => x.to('cuda:x') },
  { call: "t.to('float128')", what: 'neither a dtype nor a device', name: 'TypeError', message: 'to: target "float128" is neither a dtype', run: () => x.to('float128') },
  { call: 't.item() (32 elements)', what: 'item of a non-scalar', name: 'RangeError', message: 'item() needs a tensor with exactly one element', run: () => y.item() },
  { call: 't.reshape([5])', what: 'incompatible shape', name: 'Error', message: "shape '[5]' is invalid for input of size 96", run: () => x.reshape([5]) },
  { call: 't.sum([7])', what: 'dimension out of range', name: 'RangeError', message: 'Dimension out of range', run: () => x.sum([7]) },
  { call: "t.add('1')", what: 'operand of the wrong type', name: 'TypeError', message: 'other must be a Tensor', run: () => x.add('1' as never) },
  { call: 't.add(randn([5]))', what: 'operands of mismatched shapes', name: 'Error', message: 'must match the size of tensor b', run: () => x.add(randn([5])) },
  { call: 't.requiresGrad = 1', what: 'requiresGrad not a boolean', name: 'TypeError', message: 'requiresGrad must be a boolean', run: () => { x.requiresGrad = 1 as never; } },
  { call: 'randint(...).requiresGrad = true', what: 'requiresGrad on an integer tensor', name: 'TypeError', message: 'requiresGrad needs a floating-point tensor', run: () => { y.requiresGrad = true; } },
  { call: 't.mul(2).requiresGrad = false', what: 'requiresGrad = false on a non-leaf', name: 'TypeError', message: 'requiresGrad = false needs a leaf tensor; this one is a non-leaf', run: () => { x.mul(2).requiresGrad = false; } },
  { call: 'Tensor.prototype.sum.call({})', what: 'a method called on something else', name: 'TypeError', message: 'Tensor.sum was called on an object (Object), which is not a Tensor', run: () => bce.Tensor.prototype.sum.call({} as never) },
  { call: 'new Tensor({})', what: 'a Tensor made from something else', name: 'TypeError', message: 'new Tensor() takes a native tensor handle', run: () => new bce.Tensor({} as never) },
  { call: 't.backward() (96 elements)', what: 'backward from a non-scalar', name: 'Error', message: 'grad can be implicitly created only for scalar outputs', run: () => x.mul(2).backward() },
  { call: 'randn([1]).backward()', what: 'backward without requiresGrad', name: 'Error', message: 'does not require grad', run: () => randn([1]).backward() },
  { call: 't.shape after t.dispose()', what: 'disposed tensor', name: 'Error', message: 'the tensor was disposed and can no longer be used', run: () => { const t = randn([2]); t.dispose(); return t.shape; } },
  // ---- losses ----
  { call: "bootstrappedCrossEntropy('x', y, 0, 0.5)", what: 'input not a tensor', name: 'TypeError', message: 'input must be a Tensor, got "x"', run: () => bootstrappedCrossEntropy('x' as never, y, 0, 0.5) },
  { call: 'bootstrappedCrossEntropy(x, [0, 1], 0, 0.5)', what: 'target not a tensor', name: 'TypeError', message: 'target must be a Tensor, got an array', run: () => bootstrappedCrossEntropy(x, [0, 1] as never, 0, 0.5) },
  { call: 'bootstrappedCrossEntropy({ ...x }, y, 0, 0.5)', what: 'a copy of a tensor (no type tag)', name: 'TypeError', message: 'input must be a Tensor', run: () => bootstrappedCrossEntropy({ ...x } as never, y, 0, 0.5) },
  { call: 'bootstrappedCrossEntropy(disposed, y, 0, 0.5)', what: 'disposed input', name: 'Error', message: 'input was disposed and can no longer be used', run: () => { x.dispose(); return step(); } },
  { call: 'bootstrappedCrossEntropy(x, disposed, 0, 0.5)', what: 'disposed target', name: 'Error', message: 'target was disposed and can no longer be used', run: () => { y.dispose(); return step(); } },
  { call: 'bootstrappedCrossEntropy(x, y, -1, 0.5)', what: 'negative iteration', name: 'RangeError', message: 'iteration must be an integer >= 0, got -1', run: () => bootstrappedCrossEntropy(x, y, -1, 0.5) },
  { call: 'bootstrappedCrossEntropy(x, y, 1.5, 0.5)', what: 'fractional iteration', name: 'RangeError', message: 'iteration must be a safe integer, got 1.5', run: () => bootstrappedCrossEntropy(x, y, 1.5, 0.5) },
  { call: "bootstrappedCrossEntropy(x, y, '1', 0.5)", what: 'iteration of the wrong type', name: 'TypeError', message: 'iteration must be an integer, got "1"', run: () => bootstrappedCrossEntropy(x, y, '1' as never, 0.5) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, NaN)', what: 'NaN p', name: 'RangeError', message: 'p must be in (0, 1], got NaN', run: () => bootstrappedCrossEntropy(x, y, 0, NaN) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, Infinity)', what: 'infinite p', name: 'RangeError', message: 'p must be in (0, 1], got Infinity', run: () => bootstrappedCrossEntropy(x, y, 0, Infinity) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0)', what: 'p = 0', name: 'RangeError', message: 'p must be in (0, 1], got 0', run: () => bootstrappedCrossEntropy(x, y, 0, 0) },
  { call: "bootstrappedCrossEntropy(x, y, 0, '0.5')", what: 'p of the wrong type', name: 'TypeError', message: 'p must be a number in (0, 1]', run: () => bootstrappedCrossEntropy(x, y, 0, '0.5' as never) },
  { call: "bootstrappedCrossEntropy(zeros([2, 3], { dtype: 'int64' }), ...)", what: 'integer input', name: 'TypeError', message: 'input must be a floating-point tensor, got int64', run: () => bootstrappedCrossEntropy(zeros([2, 3], { dtype: 'int64' }), randint(0, 3, [2]), 0, 0.5) },
  { call: 'bootstrappedCrossEntropy(randn([3]), ...)', what: 'input with one dimension', name: 'RangeError', message: 'input must have shape (N, C) or (N, C, d1, ...), got [3]', run: () => bootstrappedCrossEntropy(randn([3]), randint(0, 3, [3]), 0, 0.5) },
  { call: 'bootstrappedCrossEntropy(x, randint(0, 3, [2, 4, 5]), 0, 0.5)', what: 'mismatched target shape', name: 'RangeError', message: 'target must have shape [2,4,4] for input of shape [2,3,4,4], got [2,4,5]', run: () => bootstrappedCrossEntropy(x, randint(0, 3, [2, 4, 5]), 0, 0.5) },
  { call: "bootstrappedCrossEntropy(x, randn([2, 3, 4, 4], { dtype: 'float64' }), 0, 0.5)", what: 'probability target of another dtype', name: 'TypeError', message: "probability target must have the input's dtype float32, got float64", run: () => bootstrappedCrossEntropy(x, randn([2, 3, 4, 4], { dtype: 'float64' }), 0, 0.5) },
  { call: "bootstrappedCrossEntropy(x, zeros([2, 4, 4], { dtype: 'bool' }), 0, 0.5)", what: 'boolean target', name: 'TypeError', message: 'target must hold class indices (int64, int32 or uint8) or probabilities, got bool', run: () => bootstrappedCrossEntropy(x, zeros([2, 4, 4], { dtype: 'bool' }), 0, 0.5) },
  { call: 'bootstrappedCrossEntropy(x, target holding 7, 0, 0.5)', what: 'target class out of range (C = 3)', name: 'RangeError', message: 'target holds 1 class index(es) outside [0, 3) that are not ignoreIndex (-100)', run: () => bootstrappedCrossEntropy(x, tensor(new BigInt64Array(32).map((_, i) => (i === 5 ? 7n : 0n)), { shape: [2, 4, 4] }), 0, 0.5) },
  { call: 'bootstrappedCrossEntropy(x, target holding -5, 0, 0.5)', what: 'negative target (not ignoreIndex)', name: 'RangeError', message: 'target holds 1 class index(es) outside [0, 3) that are not ignoreIndex (-100)', run: () => bootstrappedCrossEntropy(x, tensor(new BigInt64Array(32).map((_, i) => (i === 0 ? -5n : 1n)), { shape: [2, 4, 4] }), 0, 0.5) },
  { call: 'crossEntropy(x, target holding 3)', what: 'target class out of range in crossEntropy', name: 'RangeError', message: 'target holds 1 class index(es) outside [0, 3) that are not ignoreIndex (-100)', run: () => crossEntropy(x, tensor(new BigInt64Array(32).map((_, i) => (i === 31 ? 3n : 0n)), { shape: [2, 4, 4] })) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { weight: ones([4]) })', what: 'weight of the wrong length', name: 'RangeError', message: 'weight must be a 1-D tensor of length C = 3, got shape [4]', run: () => step({ weight: ones([4]) }) },
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { weight: ones([3], { dtype: 'float64' }) })", what: 'weight of another dtype', name: 'TypeError', message: "weight must have the input's dtype float32, got float64", run: () => step({ weight: ones([3], { dtype: 'float64' }) }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { weight: [1, 1, 1] })', what: 'weight not a tensor', name: 'TypeError', message: 'weight must be a Tensor, got an array', run: () => step({ weight: [1, 1, 1] as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { ignoreIndex: 1.5 })', what: 'fractional ignoreIndex', name: 'RangeError', message: 'ignoreIndex must be a safe integer, got 1.5', run: () => step({ ignoreIndex: 1.5 }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { labelSmoothing: 2 })', what: 'labelSmoothing out of range', name: 'RangeError', message: 'labelSmoothing must be in [0, 1], got 2', run: () => step({ labelSmoothing: 2 }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { labelSmoothing: NaN })', what: 'NaN labelSmoothing', name: 'RangeError', message: 'labelSmoothing must be a finite number, got NaN', run: () => step({ labelSmoothing: NaN }) },
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { reduction: 'avg' })", what: 'unknown reduction', name: 'TypeError', message: "reduction must be one of 'mean', 'sum', 'none', got \"avg\"", run: () => step({ reduction: 'avg' as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { reduction: (s) => 42 })', what: 'a reduction that returns a non-tensor', name: 'TypeError', message: 'reduction must return a Tensor, got 42', run: () => step({ reduction: () => 42 as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { reduction: () => { throw e } })', what: 'a reduction that throws', name: 'passes through', message: 'reduction exploded', run: () => step({ reduction: () => { throw thrownByReduction; } }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { warmup: () => { throw e } })', what: 'a warm-up schedule that throws', name: 'passes through', message: 'schedule exploded', run: () => step({ warmup: () => { throw thrownBySchedule; } }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { warmup: () => NaN })', what: 'a schedule returning NaN', name: 'RangeError', message: 'warmup returned NaN at iteration 0; expected a number in (0, 1]', run: () => step({ warmup: () => NaN }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { warmup: () => 2 })', what: 'a schedule returning more than 1', name: 'RangeError', message: 'warmup returned 2 at iteration 0', run: () => step({ warmup: () => 2 }) },
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { warmup: () => '0.5' })", what: 'a schedule returning a string', name: 'RangeError', message: 'warmup returned "0.5" at iteration 0', run: () => step({ warmup: () => '0.5' as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { warmup: { at: () => undefined } })', what: 'a schedule object returning undefined', name: 'RangeError', message: 'warmup returned undefined at iteration 0', run: () => step({ warmup: { at: () => undefined } as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { warmup: {} })', what: 'warmup of the wrong type', name: 'TypeError', message: 'warmup must be a number, a function (p, iteration) => p or a schedule', run: () => step({ warmup: {} as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { warmup: NaN })', what: 'NaN warmup', name: 'RangeError', message: 'warmup must be a number of iterations, got NaN', run: () => step({ warmup: NaN }) },
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { impl: 'gpu' })", what: 'unknown impl', name: 'TypeError', message: "impl must be one of 'auto', 'fused', 'reference'", run: () => step({ impl: 'gpu' as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { perSample: 1 })', what: 'perSample not a boolean', name: 'TypeError', message: 'perSample must be a boolean, got 1', run: () => step({ perSample: 1 as never }) },
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { checkFinite: 'yes' })", what: 'checkFinite not a boolean', name: 'TypeError', message: 'checkFinite must be a boolean', run: () => step({ checkFinite: 'yes' as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, 5)', what: 'options not an object', name: 'TypeError', message: 'options must be an object, got 5', run: () => bootstrappedCrossEntropy(x, y, 0, 0.5, 5 as never) },
  { call: 'bootstrappedCrossEntropyWithStats(x, y, 0, 0.5, { checkFinite: true }) with NaN logits', what: 'non-finite loss under checkFinite', name: 'RangeError', message: 'the loss is not finite (NaN); checkFinite is on', run: () => bootstrappedCrossEntropyWithStats(x.mul(NaN), y, 0, 1, { checkFinite: true }) },
  { call: "crossEntropy(x, y, { reduction: 'selected' })", what: 'reduction crossEntropy does not have', name: 'TypeError', message: "reduction must be one of 'mean', 'sum', 'none'", run: () => crossEntropy(x, y, { reduction: 'selected' as never }) },
  { call: "bootstrappedBinaryCrossEntropy(p, target of float64, 0, 0.5)", what: 'binary target of another dtype', name: 'TypeError', message: "target must have the input's dtype float32, got float64", run: () => bootstrappedBinaryCrossEntropy(ones([4]).mul(0.5), zeros([4], { dtype: 'float64' }), 0, 0.5) },
  { call: 'bootstrappedBinaryCrossEntropy(p, zeros([5]), 0, 0.5)', what: 'binary target of another shape', name: 'RangeError', message: "target must have the input's shape [4], got [5]", run: () => bootstrappedBinaryCrossEntropy(ones([4]).mul(0.5), zeros([5]), 0, 0.5) },
  { call: 'bootstrappedBinaryCrossEntropy(ones([4]).mul(3), zeros([4]), 0, 0.5)', what: 'probabilities outside [0, 1]', name: 'Error', message: 'all elements of input should be between 0 and 1', run: () => bootstrappedBinaryCrossEntropy(ones([4]).mul(3), zeros([4]), 0, 0.5) },
  { call: 'bootstrappedBinaryCrossEntropy(p, t, 0, 0.5, { posWeight })', what: 'posWeight without logits', name: 'TypeError', message: 'posWeight applies to bootstrappedBinaryCrossEntropyWithLogits only', run: () => bootstrappedBinaryCrossEntropy(ones([4]).mul(0.5), zeros([4]), 0, 0.5, { posWeight: ones([4]) } as never) },
  { call: "bootstrappedBinaryCrossEntropyWithLogits(x, t, 0, 0.5, { weight: ones([4], { dtype: 'int32' }) })", what: 'integer element weights', name: 'TypeError', message: 'weight must be a floating-point tensor, got int32', run: () => bootstrappedBinaryCrossEntropyWithLogits(randn([4]), zeros([4]), 0, 0.5, { weight: ones([4], { dtype: 'int32' }) }) },
  { call: 'bootstrappedBinaryCrossEntropyWithLogits(x, t, 0, 0.5, { posWeight: randn([3]) })', what: 'posWeight not broadcastable', name: 'Error', message: 'must match the size of tensor b', run: () => bootstrappedBinaryCrossEntropyWithLogits(randn([4]), zeros([4]), 0, 0.5, { posWeight: randn([3]) }) },
  // ---- classes, schedules, tidy ----
  { call: 'new BootstrappedCrossEntropy(1.5)', what: 'p above 1', name: 'RangeError', message: 'p must be in (0, 1], got 1.5', run: () => new BootstrappedCrossEntropy(1.5) },
  { call: 'new BootstrappedCE({ topP: 0 })', what: 'topP = 0', name: 'RangeError', message: 'topP must be in (0, 1], got 0', run: () => new BootstrappedCE({ topP: 0 }) },
  { call: "new BootstrappedCE({ startWarm: '1' })", what: 'startWarm of the wrong type', name: 'TypeError', message: 'startWarm must be a number', run: () => new BootstrappedCE({ startWarm: '1' as never }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { ignore_index: 255 })', what: "Python's snake_case option name", name: 'TypeError', message: "options has no option 'ignore_index' (did you mean 'ignoreIndex'?)", run: () => bootstrappedCrossEntropy(x, y, 0, 0.5, { ignore_index: 255 } as never) },
  { call: 'crossEntropy(x, y, { label_smoothing: 0.1 })', what: "Python's snake_case option name", name: 'TypeError', message: "options has no option 'label_smoothing' (did you mean 'labelSmoothing'?)", run: () => crossEntropy(x, y, { label_smoothing: 0.1 } as never) },
  { call: 'new BootstrappedCE({ top_p: 0.5 })', what: "STCN's Python keyword", name: 'TypeError', message: "options has no option 'top_p' (did you mean 'topP'?)", run: () => new BootstrappedCE({ top_p: 0.5 } as never) },
  { call: 'new BootstrappedCrossEntropy(0.5, { warmpu: 10 })', what: 'misspelt option', name: 'TypeError', message: "options has no option 'warmpu' (did you mean 'warmup'?)", run: () => new BootstrappedCrossEntropy(0.5, { warmpu: 10 } as never) },
  { call: "zeros([2], { dtpye: 'int64' })", what: 'misspelt tensor option', name: 'TypeError', message: "options has no option 'dtpye' (did you mean 'dtype'?)", run: () => zeros([2], { dtpye: 'int64' } as never) },
  { call: 'optim.SGD(params, { learningRate: 0.1 })', what: 'an option SGD does not have', name: 'TypeError', message: "options has no option 'learningRate'; its options are 'lr', 'momentum', 'dampening', 'weightDecay', 'nesterov'", run: () => new bce.optim.SGD([randn([2], { requiresGrad: true })], { learningRate: 0.1 } as never) },
  { call: 'optim.SGD([...m.parameters(), m.parameters()[0]], { lr })', what: 'a parameter twice, through two handles', name: 'RangeError', message: 'params[8] is the same tensor as params[0]', run: () => { const m = bce.jit.load('models/segnet.pt'); return new bce.optim.SGD([...m.parameters(), m.parameters()[0]], { lr: 0.1 }); } },
  { call: 'adam.loadStateDict(amsgrad state without maxExpAvgSq)', what: 'amsgrad state missing its running maximum', name: 'TypeError', message: 'stateDict.state[0].maxExpAvgSq must be a Tensor (amsgrad is on', run: () => new bce.optim.Adam([randn([2], { requiresGrad: true })], { amsgrad: true }).loadStateDict({ kind: 'adam', options: { amsgrad: true }, state: [{ step: 1, expAvg: zeros([2]), expAvgSq: zeros([2]) }] } as never) },
  { call: "jit.load(file, { devcie: 'cpu' })", what: 'misspelt load option', name: 'TypeError', message: "options has no option 'devcie' (did you mean 'device'?)", run: () => bce.jit.load('models/segnet.pt', { devcie: 'cpu' } as never) },
  { call: "jit.load('models')", what: 'a directory', name: 'TypeError', message: "path 'models' is a directory", run: () => bce.jit.load('models') },
  { call: 'new BootstrappedCrossEntropy(0.5).loadStateDict({ iteration: -1 })', what: 'negative iteration in a state', name: 'RangeError', message: 'state.iteration must be an integer >= 0', run: () => new BootstrappedCrossEntropy(0.5).loadStateDict({ iteration: -1 } as never) },
  { call: 'schedules.linear(10, 5)', what: 'startWarm after endWarm', name: 'RangeError', message: 'startWarm (10) must not be greater than endWarm (5)', run: () => schedules.linear(10, 5) },
  { call: 'schedules.cosine(0, Infinity)', what: 'infinite endWarm', name: 'RangeError', message: 'endWarm must be a finite number, got Infinity', run: () => schedules.cosine(0, Infinity) },
  { call: "tidy('f')", what: 'tidy of a non-function', name: 'TypeError', message: 'fn must be a function, got "f"', run: () => tidy('f' as never) },
  { call: 'tidy(async () => x)', what: 'tidy of an async function', name: 'TypeError', message: 'tidy(fn) needs a synchronous fn: it returned a Promise', run: () => tidy(async () => 1) },
  // ---- the raw addon, bypassing the facade's checks ----
  { call: 'native.zeros([-1], "float32", "cpu")', what: 'negative size past the facade', name: 'RangeError', message: 'shape must hold non-negative sizes', run: () => native.zeros([-1], 'float32', 'cpu') },
  { call: 'native.zeros([2], "float32", "cuda")', what: 'CUDA past the facade', name: 'Error', message: "device 'cuda' requested, but CUDA is not available", run: () => native.zeros([2], 'float32', 'cuda') },
  { call: 'native.setCpuBlockCacheLimit(-1)', what: 'negative cache limit past the facade', name: 'RangeError', message: 'bytes must be a whole number >= 0', run: () => native.setCpuBlockCacheLimit(-1) },
  { call: 'native.bootstrappedCrossEntropy({}, y, ...)', what: 'a plain object as a handle', name: 'TypeError', message: 'input must be a Tensor', run: () => (native.bootstrappedCrossEntropy as (...args: unknown[]) => unknown)({}, y.handle) },
  { call: 'native.bootstrappedCrossEntropy(x, y) (options missing)', what: 'a raw native call without its options', name: 'TypeError', message: 'p must be a number', run: () => (native.bootstrappedCrossEntropy as (...args: unknown[]) => unknown)(x.handle, y.handle) },
  { call: "native.bootstrappedCrossEntropy(x, y, undefined, 0.5, -100, 0, 'mean', false, 'auto', [])", what: 'stats not a Float64Array', name: 'TypeError', message: 'stats must be a Float64Array of at least 3 elements', run: () => (native.bootstrappedCrossEntropy as (...args: unknown[]) => unknown)(x.handle, y.handle, undefined, 0.5, -100, 0, 'mean', false, 'auto', []) },  // ---- distributed (no process group in this process) ----
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { scope: 'world' })", what: 'unknown scope', name: 'TypeError', message: "scope must be one of 'process', 'global'", run: () => bootstrappedCrossEntropy(x, y, 0, 0.5, { scope: 'world' as never }) },
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { scope: 'global' })", what: 'global scope before initProcessGroup', name: 'Error', message: 'no process group: await distributed.initProcessGroup() first', run: () => bootstrappedCrossEntropy(x, y, 0, 0.5, { scope: 'global' }) },
  { call: "bootstrappedCrossEntropy(x, y, 0, 0.5, { scope: 'global', perSample: true })", what: 'global scope with perSample', name: 'TypeError', message: "scope 'global' selects over the whole batch; perSample already selects within each sample", run: () => bootstrappedCrossEntropy(x, y, 0, 0.5, { scope: 'global', perSample: true }) },
  { call: 'bootstrappedCrossEntropy(x, y, 0, 0.5, { group: {} })', what: 'a group without scope global', name: 'TypeError', message: "group applies to scope 'global' only", run: () => bootstrappedCrossEntropy(x, y, 0, 0.5, { group: {} as never }) },
  { call: 'native.globalBootstrappedCrossEntropy({}, x, y, ...)', what: 'a plain object as a process group', name: 'TypeError', message: 'group must be a process group', run: () => (native.globalBootstrappedCrossEntropy as (...args: unknown[]) => unknown)({}, x.handle, y.handle) },
];

function outcome(run: () => unknown): { error?: unknown } {
  try {
    tidy(() => {
      run();
      return undefined;
    });
    return {};
  } catch (error) {
    return { error };
  }
}

/** The messages the rows actually produced, for the document. */
const actual = new Map<number, { name: string; message: string }>();

describe('bad input table', () => {
  let baseline = 0;
  beforeAll(() => {
    baseline = memory().tensors;
  });
  beforeEach(fixtures);
  afterEach(disposeFixtures);

  it('has at least 40 rows', () => {
    expect(rows.length).toBeGreaterThanOrEqual(40);
  });

  it.each(rows.map((row, i) => [i + 1, row.call, row] as const))('%i. %s', (i, _call, row) => {
    const { error } = outcome(row.run);
    expect(error).toBeDefined();
    const e = error as Error;
    if (row.name === 'passes through') {
      // The very object the callback threw, unchanged.
      expect(e === thrownBySchedule || e === thrownByReduction).toBe(true);
      expect(e.message).toBe(row.message);
    } else {
      // error.name, not instanceof: errors made natively belong to the main realm, not jest's.
      expect({ name: e.name, message: e.message }).toEqual({
        name: row.name,
        message: expect.stringContaining(row.message),
      });
    }
    actual.set(i, { name: e.name, message: e.message.split('\n')[0] });

    // The process is still usable: a valid training step succeeds.
    disposeFixtures();
    fixtures();
    const loss = step();
    loss.backward();
    expect(Math.abs(loss.item() - handLoss(x, y))).toBeLessThan(1e-5);
    const grad = x.grad;
    expect(grad?.shape).toEqual([2, 3, 4, 4]);
    grad?.dispose();
    loss.dispose();
  });

  it('leaves no tensor behind', () => {
    disposeFixtures();
    fixtures();
    // x and y of this test are the only live tensors besides the baseline.
    expect(memory().tensors).toBe(baseline + 2);
  });

  it('matches the table in docs/errors.md', () => {
    const table = renderTable();
    const file = path.join(__dirname, '..', 'docs', 'errors.md');
    const doc = fs.readFileSync(file, 'utf8');
    const begin = '<!-- BAD-INPUT-TABLE:BEGIN (generated by test/bad-input.test.ts) -->';
    const end = '<!-- BAD-INPUT-TABLE:END -->';
    const start = doc.indexOf(begin);
    const stop = doc.indexOf(end);
    expect(start).toBeGreaterThanOrEqual(0);
    expect(stop).toBeGreaterThan(start);
    const current = doc.slice(start + begin.length, stop).trim();
    if (process.env.UPDATE_ERRORS_DOC) {
      fs.writeFileSync(file, `${doc.slice(0, start + begin.length)}\n${table}\n${doc.slice(stop)}`);
    } else {
      expect(current).toBe(table);
    }
  });
});

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function renderTable(): string {
  const lines = ['| # | call | what is wrong | error | message |', '|---|---|---|---|---|'];
  rows.forEach((row, index) => {
    const seen = actual.get(index + 1);
    const name = row.name === 'passes through' ? 'the thrown error, unchanged' : `\`${row.name}\``;
    const message = seen ? seen.message : row.message;
    lines.push(`| ${index + 1} | \`${cell(row.call)}\` | ${cell(row.what)} | ${name} | ${cell(message)} |`);
  });
  return lines.join('\n');
}
