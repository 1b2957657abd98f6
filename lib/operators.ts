/**
 * Tensor operators: one entry per operator, each calling one LibTorch operator by its schema name
 * (`aten::argmax`, `aten::max.dim`: PyTorch's native_functions.yaml) through the native `callOperator`, which
 * runs it on the tensors' own device and through autograd. Names and semantics are PyTorch's, camelCase where
 * PyTorch writes snake_case (`log_softmax` → `logSoftmax`).
 *
 * An entry's parameters are the JavaScript argument list (their types become the method's declaration on
 * `Tensor`), its body checks each argument (a TypeError or RangeError naming it) and names the schema. Adding an
 * operator is one entry here and its schema in the native list (cpp/functions/operators.cc), which refuses every
 * operator not listed: test/operators.test.ts checks that the two agree. `Tensor` gets the methods
 * (`TENSOR_METHODS`, installed by lib/tensor.ts); `cat`, `stack` and `where` are also free functions.
 *
 * A JavaScript number passed where PyTorch takes a Scalar acts as a Python int when it is an integer and as a
 * Python float otherwise, so dtype promotion is PyTorch's: `int64.eq(2)` compares integers, `int64.pow(0.5)` is
 * floating.
 */
import { DTYPES, DType, FLOATING_DTYPES } from './dtype';
import type { NativeHandle, NativeResult } from './native';
import { native } from './native';
import type { Tensor } from './tensor';
import { checkBoolean, checkInteger, checkOneOf, describe } from './validate';

/** How a native result becomes a Tensor and an argument is checked as one; bound by lib/tensor.ts (no import
 * cycle: this file needs the Tensor class only at call time). */
interface TensorBinding {
  wrap(handle: NativeHandle): Tensor;
  check(value: unknown, name: string): Tensor;
  isTensor(value: unknown): value is Tensor;
}
let binding: TensorBinding;

/** @internal Called once by lib/tensor.ts. */
export function bindTensor(b: TensorBinding): void {
  binding = b;
}

/** The values and indices of `max(dim)` / `min(dim)` (PyTorch's named tuple). */
export interface ValuesIndices {
  values: Tensor;
  indices: Tensor;
}

// ---- calling ----

type Argument = Tensor | readonly Tensor[] | number | boolean | string | readonly number[] | null | undefined;

function toNative(value: Argument): unknown {
  if (binding.isTensor(value)) return value.handle;
  if (Array.isArray(value)) return value.map((v) => (binding.isTensor(v) ? v.handle : v));
  return value;
}

function callNative(schema: string, args: Argument[]): NativeResult {
  return native.callOperator(schema, args.map(toNative));
}

/** Calls `schema` with checked arguments; its one result is a tensor. */
function op(schema: string, ...args: Argument[]): Tensor {
  return binding.wrap(callNative(schema, args) as NativeHandle);
}

/** Calls a schema that returns (values, indices). */
function opPair(schema: string, ...args: Argument[]): ValuesIndices {
  const [values, indices] = callNative(schema, args) as [NativeHandle, NativeHandle];
  return { values: binding.wrap(values), indices: binding.wrap(indices) };
}

/** Calls an in-place schema (`zero_`, `fill_`): returns `self`, as PyTorch does. */
function opInPlace(schema: string, self: Tensor, ...args: Argument[]): Tensor {
  (callNative(schema, [self, ...args]) as NativeHandle).dispose();
  return self;
}

// ---- argument checks ----

function ndim(t: Tensor): number {
  return t.sizes.length;
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** A dimension of `t`: an integer in [-n, n) where n is its number of dimensions (a 0-d tensor counts as 1, as in
 * PyTorch). `extra` widens the range for operators that insert a dimension (unsqueeze, stack). */
function dimOf(t: Tensor, value: unknown, name: string): number {
  checkInteger(value, name);
  const n = Math.max(ndim(t), 1);
  const d = value as number;
  if (d < -n || d >= n) {
    throw new RangeError(
      `${name} must be in [${-n}, ${n - 1}] for a tensor of ${ndim(t)} dimension(s) (shape ${shapeText(t.sizes)}), got ${d}`,
    );
  }
  return d;
}

/** dimOf, counted from 0 (a negative dim counts from the end). */
function dimIndex(t: Tensor, value: unknown, name: string): number {
  const d = dimOf(t, value, name);
  return d < 0 ? d + Math.max(ndim(t), 1) : d;
}

function optionalDim(t: Tensor, value: unknown, name: string): number | null {
  return value === undefined || value === null ? null : dimOf(t, value, name);
}

function scalar(value: unknown, name: string): number | boolean {
  if (typeof value !== 'number' && typeof value !== 'boolean') {
    throw new TypeError(`${name} must be a number, a boolean or a Tensor, got ${describe(value)}`);
  }
  return value;
}

function tensorArg(value: unknown, name: string): Tensor {
  return binding.check(value, name);
}

function optionalTensor(value: unknown, name: string): Tensor | null {
  return value === undefined || value === null ? null : tensorArg(value, name);
}

function dtypeOf(value: unknown, name: string): DType {
  return checkOneOf(value, name, DTYPES);
}

function needDtype(t: Tensor, name: string, allowed: readonly DType[], what: string): Tensor {
  if (!allowed.includes(t.dtype)) throw new TypeError(`${name} must be ${what}, got ${t.dtype}`);
  return t;
}

const INTEGER_DTYPES: readonly DType[] = ['int64', 'int32', 'uint8'];
const INDEX_DTYPES: readonly DType[] = ['int64', 'int32'];

/** Whether shapes a and b broadcast (PyTorch's rules); a RangeError naming both otherwise. */
function broadcastable(a: Tensor, aName: string, b: Tensor, bName: string): void {
  const x = a.sizes;
  const y = b.sizes;
  for (let i = 1; i <= Math.min(x.length, y.length); i++) {
    const p = x[x.length - i];
    const q = y[y.length - i];
    if (p !== q && p !== 1 && q !== 1) {
      throw new RangeError(
        `${bName} of shape ${shapeText(y)} does not broadcast with ${aName} of shape ${shapeText(x)} (dimension -${i}: ${q} vs ${p})`,
      );
    }
  }
}

/** A tensor or a number operand, checked against self's shape when a tensor. */
function operand(self: Tensor, value: unknown, name: string): Tensor | number | boolean {
  if (typeof value === 'number' || typeof value === 'boolean') return value;
  const t = tensorArg(value, name);
  broadcastable(self, 'self', t, name);
  return t;
}

function tensorList(value: unknown, name: string): Tensor[] {
  if (!Array.isArray(value)) throw new TypeError(`${name} must be an array of Tensors, got ${describe(value)}`);
  if (value.length === 0) throw new RangeError(`${name} must hold at least one Tensor`);
  return value.map((t, i) => tensorArg(t, `${name}[${i}]`));
}

/** cat: every tensor has the first's number of dimensions and sizes except along `dim`. */
function catArgs(tensors: unknown, dim: unknown): [Tensor[], number] {
  const list = tensorList(tensors, 'tensors');
  const first = list[0];
  const d = dimIndex(first, dim, 'dim');
  list.forEach((t, i) => {
    // PyTorch still accepts 1-D empty tensors alongside any others (legacy behaviour); leave those to it.
    if (i === 0 || (ndim(t) === 1 && t.sizes[0] === 0)) return;
    const same = ndim(t) === ndim(first) && t.sizes.every((s, k) => k === d || s === first.sizes[k]);
    if (!same) {
      throw new RangeError(
        `tensors[${i}] of shape ${shapeText(t.sizes)} cannot be concatenated with tensors[0] of shape ${shapeText(first.sizes)} along dim ${d}`,
      );
    }
  });
  return [list, dim as number];
}

function stackArgs(tensors: unknown, dim: unknown): [Tensor[], number] {
  const list = tensorList(tensors, 'tensors');
  const first = list[0];
  list.forEach((t, i) => {
    if (ndim(t) !== ndim(first) || t.sizes.some((s, k) => s !== first.sizes[k])) {
      throw new RangeError(
        `tensors[${i}] of shape ${shapeText(t.sizes)} differs from tensors[0] of shape ${shapeText(first.sizes)}; stack needs equal shapes`,
      );
    }
  });
  checkInteger(dim, 'dim');
  const n = ndim(first) + 1;
  if ((dim as number) < -n || (dim as number) >= n) {
    throw new RangeError(
      `dim must be in [${-n}, ${n - 1}] to stack tensors of ${ndim(first)} dimension(s), got ${dim}`,
    );
  }
  return [list, dim as number];
}

function permutation(self: Tensor, dims: unknown): number[] {
  if (!Array.isArray(dims)) throw new TypeError(`dims must be an array of integers, got ${describe(dims)}`);
  const n = ndim(self);
  if (dims.length !== n) {
    throw new RangeError(`dims must list each of the tensor's ${n} dimension(s) once, got ${dims.length} entries`);
  }
  const seen = new Set<number>();
  return dims.map((d, i) => {
    const k = dimIndex(self, d, `dims[${i}]`);
    if (seen.has(k)) throw new RangeError(`dims[${i}] repeats dimension ${k}; dims must be a permutation`);
    seen.add(k);
    return d as number;
  });
}

function narrowArgs(self: Tensor, dim: unknown, start: unknown, length: unknown): [number, number, number] {
  if (ndim(self) === 0) throw new RangeError('narrow needs a tensor of at least one dimension');
  const d = dimIndex(self, dim, 'dim');
  const size = self.sizes[d];
  checkInteger(start, 'start');
  checkInteger(length, 'length', 0);
  const s = start as number;
  if (s < -size || s > size)
    throw new RangeError(`start must be in [${-size}, ${size}] for dim ${d} of size ${size}, got ${s}`);
  const begin = s < 0 ? s + size : s;
  if (begin + (length as number) > size) {
    throw new RangeError(`start + length (${begin} + ${length}) exceeds dim ${d} of size ${size}`);
  }
  return [dim as number, s, length as number];
}

function selectArgs(self: Tensor, dim: unknown, index: unknown): [number, number] {
  if (ndim(self) === 0) throw new RangeError('select needs a tensor of at least one dimension');
  const d = dimIndex(self, dim, 'dim');
  const size = self.sizes[d];
  checkInteger(index, 'index');
  if ((index as number) < -size || (index as number) >= size) {
    throw new RangeError(`index must be in [${-size}, ${size - 1}] for dim ${d} of size ${size}, got ${index}`);
  }
  return [dim as number, index as number];
}

function flattenArgs(self: Tensor, startDim: unknown, endDim: unknown): [number, number] {
  const s = dimIndex(self, startDim, 'startDim');
  const e = dimIndex(self, endDim, 'endDim');
  if (s > e) throw new RangeError(`startDim (${startDim}) must not come after endDim (${endDim})`);
  return [startDim as number, endDim as number];
}

function maskArg(self: Tensor, mask: unknown): Tensor {
  const m = needDtype(tensorArg(mask, 'mask'), 'mask', ['bool'], 'a bool tensor');
  broadcastable(self, 'self', m, 'mask');
  return m;
}

function indexArg(value: unknown, name: string, maxDims: number): Tensor {
  const t = needDtype(tensorArg(value, name), name, INDEX_DTYPES, 'an int64 or int32 tensor');
  if (ndim(t) > maxDims) throw new RangeError(`${name} must have at most ${maxDims} dimension(s), got ${ndim(t)}`);
  return t;
}

function matmulArgs(self: Tensor, other: unknown): Tensor {
  const o = tensorArg(other, 'other');
  if (ndim(self) === 0 || ndim(o) === 0) {
    throw new RangeError(
      `matmul needs tensors of at least one dimension, got self ${shapeText(self.sizes)} and other ${shapeText(o.sizes)}`,
    );
  }
  if (o.dtype !== self.dtype) throw new TypeError(`other must have self's dtype ${self.dtype}, got ${o.dtype}`);
  const inner = self.sizes[ndim(self) - 1];
  const against = ndim(o) === 1 ? o.sizes[0] : o.sizes[ndim(o) - 2];
  if (inner !== against) {
    throw new RangeError(
      `matmul: self of shape ${shapeText(self.sizes)} and other of shape ${shapeText(o.sizes)} do not match (${inner} vs ${against})`,
    );
  }
  return o;
}

function clampArgs(self: Tensor, min: unknown, max: unknown): Tensor {
  const given = [min, max].filter((v) => v !== undefined && v !== null);
  if (given.length === 0) throw new TypeError('clamp needs min or max (or both), got neither');
  if (given.every((v) => typeof v === 'number')) {
    return op(
      'aten::clamp',
      self,
      min === undefined ? null : (min as number | null),
      max === undefined ? null : (max as number | null),
    );
  }
  if (given.some((v) => typeof v === 'number')) {
    throw new TypeError('min and max must both be numbers or both be Tensors (either may be null)');
  }
  const lo = optionalTensor(min, 'min');
  const hi = optionalTensor(max, 'max');
  if (lo) broadcastable(self, 'self', lo, 'min');
  if (hi) broadcastable(self, 'self', hi, 'max');
  return op('aten::clamp.Tensor', self, lo, hi);
}

/** where(condition, input, other) with each of input and other a tensor or a number. */
export function whereArgs(condition: unknown, input: unknown, other: unknown): Tensor {
  const c = needDtype(tensorArg(condition, 'condition'), 'condition', ['bool'], 'a bool tensor');
  const a = typeof input === 'number' || typeof input === 'boolean' ? input : tensorArg(input, 'input');
  const b = typeof other === 'number' || typeof other === 'boolean' ? other : tensorArg(other, 'other');
  if (typeof a === 'object') broadcastable(c, 'condition', a, 'input');
  if (typeof b === 'object') broadcastable(c, 'condition', b, 'other');
  if (typeof a === 'object' && typeof b === 'object') return op('aten::where.self', c, a, b);
  if (typeof a === 'object') return op('aten::where.ScalarOther', c, a, b as number);
  if (typeof b === 'object') return op('aten::where.ScalarSelf', c, a as number, b);
  return op('aten::where.Scalar', c, a as number, b as number);
}

function comparison(name: string) {
  return (self: Tensor, other: Tensor | number): Tensor => {
    const o = operand(self, other, 'other');
    return typeof o === 'object' ? op(`aten::${name}.Tensor`, self, o) : op(`aten::${name}.Scalar`, self, o);
  };
}

function minMax(name: 'max' | 'min'): MinMaxFunction {
  return ((self: Tensor, dimOrOther?: number | Tensor, keepdim: boolean = false) => {
    if (dimOrOther === undefined) return op(`aten::${name}`, self);
    if (typeof dimOrOther === 'number') {
      return opPair(`aten::${name}.dim`, self, dimOf(self, dimOrOther, 'dim'), checkBoolean(keepdim, 'keepdim'));
    }
    const other = tensorArg(dimOrOther, 'other');
    broadcastable(self, 'self', other, 'other');
    return op(`aten::${name}.other`, self, other);
  }) as MinMaxFunction;
}

/** max / min: of all elements, along a dimension (values and indices), or elementwise against another tensor. */
interface MinMaxFunction {
  (self: Tensor): Tensor;
  (self: Tensor, dim: number, keepdim?: boolean): ValuesIndices;
  (self: Tensor, other: Tensor): Tensor;
}

/** max / min as methods. */
interface MinMaxMethod {
  /** Of all elements: a 0-d tensor. */
  (): Tensor;
  /** Along `dim`: `{ values, indices }` (indices of the first occurrence, int64). */
  (dim: number, keepdim?: boolean): ValuesIndices;
  /** Elementwise against `other` (broadcasting). */
  (other: Tensor): Tensor;
}

/** Operators without arguments refuse any (a misplaced argument would otherwise go unnoticed). */
function noArguments(name: string, extra: unknown[]): void {
  if (extra.length > 0) throw new TypeError(`${name} takes no arguments, got ${extra.length}`);
}

function conversion(name: string, dtype: DType) {
  return (self: Tensor, ...none: []): Tensor => {
    noArguments(name, none);
    return op('aten::to.dtype', self, dtype);
  };
}

function reduceAnyAll(name: 'any' | 'all') {
  return (self: Tensor, dim?: number | null, keepdim = false): Tensor =>
    dim === undefined || dim === null
      ? op(`aten::${name}`, self)
      : op(`aten::${name}.dim`, self, dimOf(self, dim, 'dim'), checkBoolean(keepdim, 'keepdim'));
}

function unary(name: string) {
  return (self: Tensor, ...none: []): Tensor => {
    noArguments(name, none);
    return op(`aten::${name}`, self);
  };
}

// ---- the table ----

// One entry per operator; kept one line per entry (prettier would spread each over many).
// prettier-ignore
export const TENSOR_METHODS = {
  /** Index of the largest value (first occurrence) over all elements (flattened), or along `dim`; int64. */
  argmax: (self: Tensor, dim?: number | null, keepdim = false): Tensor => op('aten::argmax', self, optionalDim(self, dim, 'dim'), checkBoolean(keepdim, 'keepdim')),
  /** Index of the smallest value (first occurrence) over all elements (flattened), or along `dim`; int64. */
  argmin: (self: Tensor, dim?: number | null, keepdim = false): Tensor => op('aten::argmin', self, optionalDim(self, dim, 'dim'), checkBoolean(keepdim, 'keepdim')),
  /** Softmax along `dim`, computed in `dtype` when given (floating input, or a floating `dtype`). */
  softmax: (self: Tensor, dim: number, dtype?: DType): Tensor => op('aten::softmax.int', self, dimOf(self, dim, 'dim'), softmaxDtype(self, dtype)),
  /** Log of the softmax along `dim` (numerically stable), computed in `dtype` when given. */
  logSoftmax: (self: Tensor, dim: number, dtype?: DType): Tensor => op('aten::log_softmax.int', self, dimOf(self, dim, 'dim'), softmaxDtype(self, dtype)),
  /** Elementwise `self == other` (a tensor, broadcasting, or a number): a bool tensor. */
  eq: comparison('eq'),
  /** Elementwise `self != other`: a bool tensor. */
  ne: comparison('ne'),
  /** Elementwise `self < other`: a bool tensor. */
  lt: comparison('lt'),
  /** Elementwise `self <= other`: a bool tensor. */
  le: comparison('le'),
  /** Elementwise `self > other`: a bool tensor. */
  gt: comparison('gt'),
  /** Elementwise `self >= other`: a bool tensor. */
  ge: comparison('ge'),
  /** `self` where `condition` (a bool tensor) holds, `other` (a tensor or a number) elsewhere: PyTorch's `Tensor.where(condition, y)`. */
  where: (self: Tensor, condition: Tensor, other: Tensor | number): Tensor => whereArgs(condition, self, other),
  /** Each element clamped to [min, max]: numbers, or tensors (broadcasting); either bound may be null. */
  clamp: (self: Tensor, min?: number | Tensor | null, max?: number | Tensor | null): Tensor => clampArgs(self, min, max),
  /** Elementwise e^x (integer tensors give floating results, as in PyTorch). */
  exp: unary('exp'),
  /** Elementwise natural logarithm. */
  log: unary('log'),
  /** Elementwise absolute value. */
  abs: unary('abs'),
  /** Elementwise square root. */
  sqrt: unary('sqrt'),
  /** Elementwise negation. */
  neg: unary('neg'),
  /** Elementwise power: `exponent` a tensor (broadcasting) or a number. */
  pow: (self: Tensor, exponent: Tensor | number): Tensor => { const e = operand(self, exponent, 'exponent'); return typeof e === 'object' ? op('aten::pow.Tensor_Tensor', self, e) : op('aten::pow.Tensor_Scalar', self, e); },
  /** Matrix product with PyTorch's rules for 1-D, 2-D and batched operands. */
  matmul: (self: Tensor, other: Tensor): Tensor => op('aten::matmul', self, matmulArgs(self, other)),
  /** A view with the dimensions reordered: `dims` lists each dimension once. */
  permute: (self: Tensor, dims: number[]): Tensor => op('aten::permute', self, permutation(self, dims)),
  /** A view with dimensions `dim0` and `dim1` swapped. */
  transpose: (self: Tensor, dim0: number, dim1: number): Tensor => op('aten::transpose.int', self, dimOf(self, dim0, 'dim0'), dimOf(self, dim1, 'dim1')),
  /** The same values laid out contiguously (the tensor itself when it already is). */
  contiguous: unary('contiguous'),
  /** Dimensions `startDim` to `endDim` merged into one. */
  flatten: (self: Tensor, startDim = 0, endDim = -1): Tensor => op('aten::flatten.using_ints', self, ...flattenArgs(self, startDim, endDim)),
  /** A view of the diagonal of dimensions `dim1` and `dim2` (`offset` above it when positive, below when negative) as the last dimension. */
  diagonal: (self: Tensor, offset = 0, dim1 = 0, dim2 = 1): Tensor => op('aten::diagonal', self, checkInteger(offset, 'offset'), ...diagonalDims(self, dim1, dim2)),
  /** Dimensions of size 1 removed: all of them, or `dim` only (unchanged when its size is not 1). */
  squeeze: (self: Tensor, dim?: number | null): Tensor => (dim === undefined || dim === null ? op('aten::squeeze', self) : op('aten::squeeze.dim', self, dimOf(self, dim, 'dim'))),
  /** A dimension of size 1 inserted at `dim` (in [-ndim-1, ndim]). */
  unsqueeze: (self: Tensor, dim: number): Tensor => op('aten::unsqueeze', self, unsqueezeDim(self, dim)),
  /** A view of `length` entries of `dim` from `start`. */
  narrow: (self: Tensor, dim: number, start: number, length: number): Tensor => op('aten::narrow', self, ...narrowArgs(self, dim, start, length)),
  /** A view of entry `index` of `dim`, which is removed. */
  select: (self: Tensor, dim: number, index: number): Tensor => op('aten::select.int', self, ...selectArgs(self, dim, index)),
  /** The entries of `dim` listed in `index` (a 1-D int64/int32 tensor), copied. */
  indexSelect: (self: Tensor, dim: number, index: Tensor): Tensor => op('aten::index_select', self, dimOf(self, dim, 'dim'), indexArg(index, 'index', 1)),
  /** The elements where `mask` (a bool tensor, broadcasting) holds, as a 1-D tensor. */
  maskedSelect: (self: Tensor, mask: Tensor): Tensor => op('aten::masked_select', self, maskArg(self, mask)),
  /** A copy with `value` (a number or a 0-d tensor) where `mask` holds. */
  maskedFill: (self: Tensor, mask: Tensor, value: number | Tensor): Tensor => (typeof value === 'object' ? op('aten::masked_fill.Tensor', self, maskArg(self, mask), tensorArg(value, 'value')) : op('aten::masked_fill.Scalar', self, maskArg(self, mask), scalar(value, 'value'))),
  /** Values along `dim` picked by `index` (int64, the same number of dimensions as self). */
  gather: (self: Tensor, dim: number, index: Tensor): Tensor => op('aten::gather', self, dimOf(self, dim, 'dim'), gatherIndex(self, index)),
  /** Converted to float32 (a no-op when it already is). */
  float: conversion('float', 'float32'),
  /** Converted to float64. */
  double: conversion('double', 'float64'),
  /** Converted to float16. */
  half: conversion('half', 'float16'),
  /** Converted to int64. */
  long: conversion('long', 'int64'),
  /** Converted to int32. */
  int: conversion('int', 'int32'),
  /** Converted to bool (non-zero is true). */
  bool: conversion('bool', 'bool'),
  /** Occurrences of each value of a 1-D non-negative integer tensor (weighted by `weights` when given); at least `minlength` bins. */
  bincount: (self: Tensor, weights?: Tensor | null, minlength = 0): Tensor => op('aten::bincount', bincountSelf(self), bincountWeights(self, weights), checkInteger(minlength, 'minlength', 0)),
  /** A copy with its own memory (recorded by autograd). */
  clone: unary('clone'),
  /** Fills the tensor with zeros in place; returns it. */
  zero_: (self: Tensor, ...none: []): Tensor => (noArguments('zero_', none), opInPlace('aten::zero_', self)),
  /** Fills the tensor with `value` (a number or a 0-d tensor) in place; returns it. */
  fill_: (self: Tensor, value: number | boolean | Tensor): Tensor => (typeof value === 'object' ? opInPlace('aten::fill_.Tensor', self, fillTensor(value)) : opInPlace('aten::fill_.Scalar', self, scalar(value, 'value'))),
  /** Whether any element is non-zero: over all elements, or along `dim`; a bool tensor. */
  any: reduceAnyAll('any'),
  /** Whether all elements are non-zero: over all elements, or along `dim`; a bool tensor. */
  all: reduceAnyAll('all'),
  /** The number of non-zero elements: over all, along `dim`, or over the dimensions in an array; int64. */
  countNonzero: (self: Tensor, dim?: number | number[] | null): Tensor => (Array.isArray(dim) ? op('aten::count_nonzero.dim_IntList', self, dim.map((d, i) => dimOf(self, d, `dim[${i}]`))) : op('aten::count_nonzero', self, optionalDim(self, dim, 'dim'))),
  /** One-hot encoding of an int64 tensor of class indices: a new last dimension of `numClasses` (-1: the largest value + 1). */
  oneHot: (self: Tensor, numClasses = -1): Tensor => op('aten::one_hot', needDtype(self, 'self', ['int64'], 'an int64 tensor of class indices'), checkInteger(numClasses, 'numClasses', -1)),
};

// Overloaded operators (the result's type depends on the arguments): declared with their overloads.
export const OVERLOADED_METHODS = {
  /** The largest value: of all elements, along `dim` (`{ values, indices }`), or elementwise against `other`. */
  max: minMax('max'),
  /** The smallest value: of all elements, along `dim` (`{ values, indices }`), or elementwise against `other`. */
  min: minMax('min'),
};

function softmaxDtype(self: Tensor, dtype: unknown): DType | null {
  if (dtype === undefined || dtype === null) {
    needDtype(self, 'self', FLOATING_DTYPES, 'a floating-point tensor (or pass a floating dtype)');
    return null;
  }
  const d = dtypeOf(dtype, 'dtype');
  if (!FLOATING_DTYPES.includes(d)) throw new TypeError(`dtype must be a floating-point dtype, got ${d}`);
  return d;
}

function diagonalDims(self: Tensor, dim1: unknown, dim2: unknown): [number, number] {
  if (ndim(self) < 2)
    throw new RangeError(`diagonal needs a tensor of at least 2 dimensions, got shape ${shapeText(self.sizes)}`);
  if (dimIndex(self, dim1, 'dim1') === dimIndex(self, dim2, 'dim2'))
    throw new RangeError(`dim1 and dim2 must differ, got ${dim1} and ${dim2}`);
  return [dim1 as number, dim2 as number];
}

function unsqueezeDim(self: Tensor, dim: unknown): number {
  checkInteger(dim, 'dim');
  const n = ndim(self) + 1;
  if ((dim as number) < -n || (dim as number) >= n) {
    throw new RangeError(`dim must be in [${-n}, ${n - 1}] for a tensor of ${ndim(self)} dimension(s), got ${dim}`);
  }
  return dim as number;
}

function gatherIndex(self: Tensor, index: unknown): Tensor {
  const t = needDtype(tensorArg(index, 'index'), 'index', ['int64'], 'an int64 tensor');
  if (ndim(t) !== ndim(self) && !(ndim(t) <= 1 && ndim(self) <= 1)) {
    throw new RangeError(`index must have self's number of dimensions (${ndim(self)}), got ${ndim(t)}`);
  }
  return t;
}

function bincountSelf(self: Tensor): Tensor {
  needDtype(self, 'self', INTEGER_DTYPES, 'a 1-D tensor of non-negative integers (int64, int32 or uint8)');
  if (ndim(self) !== 1) throw new RangeError(`self must be a 1-D tensor, got shape ${shapeText(self.sizes)}`);
  return self;
}

function bincountWeights(self: Tensor, weights: unknown): Tensor | null {
  const w = optionalTensor(weights, 'weights');
  if (w && (ndim(w) !== 1 || w.sizes[0] !== self.sizes[0])) {
    throw new RangeError(`weights must have self's shape ${shapeText(self.sizes)}, got ${shapeText(w.sizes)}`);
  }
  return w;
}

function fillTensor(value: unknown): Tensor {
  const t = tensorArg(value, 'value');
  if (ndim(t) !== 0) throw new RangeError(`value must be a number or a 0-d tensor, got shape ${shapeText(t.sizes)}`);
  return t;
}

type Method<F> = F extends (self: Tensor, ...args: infer A) => infer R ? (...args: A) => R : never;

/** The operator methods of `Tensor`, typed from the table. */
export type TensorOperatorMethods = { [K in keyof typeof TENSOR_METHODS]: Method<(typeof TENSOR_METHODS)[K]> } & {
  [K in keyof typeof OVERLOADED_METHODS]: MinMaxMethod;
};

/** @internal Installs the operator methods on Tensor.prototype (lib/tensor.ts, once). */
export function installOperatorMethods(prototype: object): void {
  for (const [name, fn] of Object.entries({ ...TENSOR_METHODS, ...OVERLOADED_METHODS })) {
    const call = fn as (self: Tensor, ...args: unknown[]) => unknown;
    // A name Tensor already has (sum, add, ...) would be replaced without a word.
    if (name in prototype)
      throw new Error(`Tensor already has a member '${name}': the operator table must not redefine it`);
    Object.defineProperty(prototype, name, {
      value: {
        [name](this: unknown, ...args: unknown[]) {
          return call(binding.check(this, 'self'), ...args);
        },
      }[name],
      writable: true,
      configurable: true,
    });
  }
}

// ---- free functions ----

/** Concatenation along `dim` (default 0) of tensors of equal shapes except along `dim`. PyTorch's `torch.cat`. */
export function cat(tensors: Tensor[], dim = 0): Tensor {
  return op('aten::cat', ...catArgs(tensors, dim));
}

/** The tensors (of equal shapes) stacked along a new dimension `dim` (default 0). PyTorch's `torch.stack`. */
export function stack(tensors: Tensor[], dim = 0): Tensor {
  return op('aten::stack', ...stackArgs(tensors, dim));
}

/** `input` where `condition` (a bool tensor) holds, `other` elsewhere; either may be a number (broadcasting).
 * PyTorch's `torch.where(condition, input, other)`. */
export function where(condition: Tensor, input: Tensor | number, other: Tensor | number): Tensor {
  return whereArgs(condition, input, other);
}
