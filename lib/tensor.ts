/**
 * Tensor: a JavaScript handle on a torch::Tensor living on the CPU or a CUDA device. Memory is freed by
 * `dispose()` or, failing that, by the garbage collector. Tensors are recognised by a type tag (`isTensor`),
 * never by instanceof, so that tensors cross jest realms and duplicate copies of this module.
 */
import { inspect, types } from 'util';
import { DTYPES, DType, TypedArray, checkIntegerValues, dtypeOfTypedArray, isFloating } from './dtype';
import { native, NativeHandle } from './native';
import { bindTensor, installOperatorMethods, TensorOperatorMethods } from './operators';
import { noteTensorCreated } from './memory-watch';
import { track } from './scope';
import {
  checkBoolean,
  DEVICE_PATTERN,
  checkDevice,
  checkInteger,
  checkOneOf,
  checkOptions,
  checkShape,
  describe,
  optionNames,
} from './validate';

const TENSOR_TAG = Symbol.for('bootstrapped-ce.Tensor');

/** True for a Tensor of this package (any copy of it). */
export function isTensor(value: unknown): value is Tensor {
  return typeof value === 'object' && value !== null && (value as { [TENSOR_TAG]?: unknown })[TENSOR_TAG] === true;
}

/** Checks that `value` is a live Tensor; names the argument otherwise. */
export function checkTensor(value: unknown, name: string): Tensor {
  if (!isTensor(value)) {
    if (looksCloned(value)) {
      throw new TypeError(
        `${name} must be a Tensor, got a copy of one without its native tensor (structured clone or postMessage to ` +
          'another thread): tensors cannot cross threads; send tensor.toArray() and tensor.shape and rebuild it there',
      );
    }
    throw new TypeError(`${name} must be a Tensor, got ${describe(value)}`);
  }
  // The facade's own flag, not a native call: this check runs for every argument of every loss call. A handle
  // freed some other way is still refused natively (TensorHandle::From names the argument too).
  if (value.disposedHere) throw new Error(`${name} was disposed and can no longer be used`);
  return value;
}

// Moving a module's parameters in place (jit Module.to) changes the device under existing handles: it bumps
// this count, which invalidates every tensor's cached device.
let deviceMoves = 0;

// The cached properties say what the native getters would (cpp/objects/tensor_handle.cc).
function throwDisposed(): never {
  throw new Error('the tensor was disposed and can no longer be used');
}

/** @internal Called after an in-place device move (jit Module.to). */
export function noteDeviceMove(): void {
  deviceMoves += 1;
}

/** A Tensor that went through the structured clone algorithm: its `handle` is left as an empty plain object. */
function looksCloned(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const handle = (value as { handle?: unknown }).handle;
  return (
    typeof handle === 'object' &&
    handle !== null &&
    Object.getPrototypeOf(handle) === Object.prototype &&
    Object.keys(handle).length === 0
  );
}

/**
 * `self` as a Tensor, for a method or getter called on it: `Tensor.prototype.sum.call({})` and the like are
 * refused with the method's name instead of failing on a missing field inside.
 */
function own(self: unknown, method: string): Tensor {
  if (!isTensor(self)) throw new TypeError(`Tensor.${method} was called on ${describe(self)}, which is not a Tensor`);
  return self;
}

/** `array[i]`, refusing a hole (`[1, , 3]`: an index the array skips, which forEach and map pass over). */
function checkPresent<T>(array: readonly T[], i: number, name: string): T {
  if (!(i in array)) throw new TypeError(`${name}[${i}] is missing: the array has a hole there (e.g. [1, , 3])`);
  return array[i];
}

/** Whether `value` looks like a native tensor handle (the addon itself checks its type tag on every call). */
function isNativeHandle(value: unknown): value is NativeHandle {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as NativeHandle).isDisposed === 'function' &&
    typeof (value as NativeHandle).identity === 'function'
  );
}

/** A scalar or a tensor operand. */
function operand(other: unknown, name: string): NativeHandle | number {
  if (typeof other === 'number') return other;
  return checkTensor(other, name).handle;
}

// The operator methods (argmax, softmax, eq, cat, ...): declared from the table in lib/operators.ts, which makes
// them; installed on the prototype below.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging, @typescript-eslint/no-empty-object-type -- the methods are installed from the table at load
export interface Tensor extends TensorOperatorMethods {}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- see the interface above
export class Tensor {
  /** @internal The native handle (cpp/objects/tensor_handle.cc). */
  readonly handle: NativeHandle;

  /** @internal Use the factories (`tensor`, `zeros`, ...) to make tensors. */
  constructor(handle: NativeHandle) {
    // By shape, not instanceof: a second copy of the addon in the same thread defines its own TensorHandle class.
    if (!isNativeHandle(handle)) {
      throw new TypeError(
        `new Tensor() takes a native tensor handle, got ${describe(handle)}: make tensors with tensor(), zeros(), ones(), randn() or randint()`,
      );
    }
    this.handle = handle;
    // Non-enumerable: a spread copy ({ ...t }) does not carry it.
    Object.defineProperty(this, TENSOR_TAG, { value: true });
    track(this);
    noteTensorCreated();
  }

  // A handle's shape and dtype never change (no in-place resizing or casting is exposed), so they are read from
  // the native side once: argument checks ask for them on every loss call. The device is cached until the next
  // in-place move (Module.to moves parameters under the same handles: noteDeviceMove). Private fields: a
  // structured clone of a tensor (postMessage) carries none of them.
  #shape?: number[];
  #dtype?: DType;
  #device?: string;
  #deviceAt = -1;
  #disposed = false;

  /** @internal Whether dispose() was called on this object. */
  get disposedHere(): boolean {
    return own(this, 'disposedHere').#disposed;
  }

  /** Sizes of each dimension. */
  get shape(): number[] {
    return own(this, 'shape').sizes.slice();
  }

  /** @internal The cached sizes themselves, not a copy: for argument checks, which never modify them. */
  get sizes(): readonly number[] {
    const self = own(this, 'shape');
    if (self.#disposed) throwDisposed();
    return (self.#shape ??= self.handle.shape());
  }

  get dtype(): DType {
    const self = own(this, 'dtype');
    if (self.#disposed) throwDisposed();
    return (self.#dtype ??= self.handle.dtype() as DType);
  }

  /** 'cpu', 'cuda:0', ... */
  get device(): string {
    const self = own(this, 'device');
    if (self.#disposed) throwDisposed();
    if (self.#deviceAt !== deviceMoves) {
      self.#device = self.handle.device();
      self.#deviceAt = deviceMoves;
    }
    return self.#device as string;
  }

  /** Number of elements. */
  get numel(): number {
    return own(this, 'numel').handle.numel();
  }

  /** Whether autograd records operations on this tensor (floating dtypes only). */
  get requiresGrad(): boolean {
    return own(this, 'requiresGrad').handle.requiresGrad();
  }

  set requiresGrad(flag: boolean) {
    own(this, 'requiresGrad');
    checkBoolean(flag, 'requiresGrad');
    if (flag && !isFloating(this.dtype)) {
      throw new TypeError(`requiresGrad needs a floating-point tensor, this one is ${this.dtype}`);
    }
    this.handle.setRequiresGrad(flag);
  }

  /** The gradient accumulated by `backward()`, or null. A new handle on the same memory. */
  get grad(): Tensor | null {
    const grad = own(this, 'grad').handle.grad();
    return grad === null ? null : new Tensor(grad);
  }

  get isDisposed(): boolean {
    return own(this, 'isDisposed').handle.isDisposed();
  }

  /** A copy of the elements on the host, in row-major order. float16/bfloat16 come back as Float32Array,
   * int64 as BigInt64Array, bool as Uint8Array. */
  toArray(): TypedArray {
    return own(this, 'toArray').handle.toArray();
  }

  /** The value of a one-element tensor as a number (a boolean for bool tensors). */
  item(): number {
    own(this, 'item');
    if (this.numel !== 1)
      throw new RangeError(`item() needs a tensor with exactly one element, this one has ${this.numel}`);
    return this.handle.item() as number;
  }

  /** A copy on another device ('cpu', 'cuda', 'cuda:N') or converted to another dtype. */
  to(target: string): Tensor {
    own(this, 'to');
    if (typeof target !== 'string')
      throw new TypeError(`to: target must be a device or a dtype name, got ${describe(target)}`);
    if ((DTYPES as readonly string[]).includes(target)) return new Tensor(this.handle.to(target));
    // A malformed device ('cuda:x') is named as one; anything else may have been meant as either.
    if (/^(cpu|cuda)/.test(target)) checkDevice(target, 'device');
    if (!DEVICE_PATTERN.test(target)) {
      throw new TypeError(
        `to: target ${describe(target)} is neither a dtype (${DTYPES.map((d) => `'${d}'`).join(', ')}) nor a device ('cpu', 'cuda', 'cuda:N')`,
      );
    }
    checkCudaAvailable(target);
    return new Tensor(this.handle.to(target));
  }

  /** The same data, cut from the autograd graph. */
  detach(): Tensor {
    return new Tensor(own(this, 'detach').handle.detach());
  }

  /** Same elements, new shape (one size may be -1). */
  reshape(shape: number[]): Tensor {
    own(this, 'reshape');
    if (!Array.isArray(shape)) throw new TypeError(`shape must be an array of integers, got ${describe(shape)}`);
    for (let i = 0; i < shape.length; i++) checkInteger(checkPresent(shape, i, 'shape'), `shape[${i}]`, -1);
    return new Tensor(this.handle.reshape(shape));
  }

  /** Sum of all elements, or over the dimensions `dim`. */
  sum(dim?: number[], keepdim = false): Tensor {
    return new Tensor(own(this, 'sum').handle.sum(...reductionArgs(dim, keepdim)));
  }

  /** Mean of all elements, or over the dimensions `dim`. */
  mean(dim?: number[], keepdim = false): Tensor {
    return new Tensor(own(this, 'mean').handle.mean(...reductionArgs(dim, keepdim)));
  }

  add(other: Tensor | number): Tensor {
    return new Tensor(own(this, 'add').handle.add(operand(other, 'other')));
  }

  sub(other: Tensor | number): Tensor {
    return new Tensor(own(this, 'sub').handle.sub(operand(other, 'other')));
  }

  mul(other: Tensor | number): Tensor {
    return new Tensor(own(this, 'mul').handle.mul(operand(other, 'other')));
  }

  div(other: Tensor | number): Tensor {
    return new Tensor(own(this, 'div').handle.div(operand(other, 'other')));
  }

  /**
   * Backpropagates from this tensor (a scalar, unless `gradient` of the same shape is given), as PyTorch's
   * `backward(gradient, retain_graph)`: `backward()`, `backward(gradient)`, `backward({ retainGraph: true })` or
   * `backward(gradient, { retainGraph: true })`.
   */
  backward(gradient?: Tensor | BackwardOptions, options?: BackwardOptions): void {
    own(this, 'backward');
    let opts = options;
    let grad: Tensor | undefined;
    if (
      gradient !== undefined &&
      !isTensor(gradient) &&
      options === undefined &&
      typeof gradient === 'object' &&
      gradient !== null
    ) {
      opts = gradient as BackwardOptions;
    } else if (gradient !== undefined) {
      grad = checkTensor(gradient, 'gradient');
    }
    const o = checkOptions<BackwardOptions>(opts, 'options', BACKWARD_OPTIONS);
    const retainGraph = o.retainGraph === undefined ? false : checkBoolean(o.retainGraph, 'retainGraph');
    try {
      this.handle.backward(grad?.handle, retainGraph);
    } catch (error) {
      // LibTorch's hint names Python's keyword (retain_graph=True): name the option this API has.
      // (Not instanceof Error: errors made natively belong to the main realm, which may not be the caller's.)
      if (/retain_graph/.test(String((error as Error | undefined)?.message))) {
        throw new Error(
          'backward() through a graph whose saved tensors a previous backward() already freed: pass ' +
            '{ retainGraph: true } to the first backward() to go through the same graph again',
        );
      }
      // LibTorch's version check: a tensor the graph saved (e.g. the logits, which the fused loss reads again in
      // backward) was changed in place after the forward; its gradient would be that of other values.
      if (/modified by an inplace operation/.test(String((error as Error | undefined)?.message))) {
        throw new Error(
          'backward(): a tensor this graph saved was changed in place after the forward (an optimizer step on it, ' +
            'or an in-place operation such as a TorchScript mul_), so its gradient would be wrong: compute the ' +
            `forward again after the change. (LibTorch: ${String((error as Error).message).split('\n')[0]})`,
        );
      }
      throw error;
    }
  }

  /** Frees the native tensor now. Safe to call twice; using the tensor afterwards throws. */
  dispose(): void {
    own(this, 'dispose').handle.dispose();
    this.#disposed = true;
  }

  [Symbol.dispose](): void {
    own(this, 'dispose').dispose();
  }

  toString(): string {
    own(this, 'toString');
    return this.isDisposed
      ? 'Tensor(disposed)'
      : `Tensor(shape=[${this.shape}], dtype=${this.dtype}, device=${this.device})`;
  }

  /**
   * What `console.log` and `util.inspect` show, as PyTorch's repr: shape, dtype, device, requiresGrad and a
   * preview of the values (the first and last few; none above PREVIEW_LIMIT elements, which would copy a large
   * tensor to the host just to print six numbers).
   */
  [inspect.custom](): string {
    own(this, 'inspect');
    if (this.isDisposed) return 'Tensor(disposed)';
    const head = `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}${this.requiresGrad ? ', requiresGrad=true' : ''})`;
    const numel = this.shape.reduce((a, b) => a * b, 1);
    if (numel > PREVIEW_LIMIT) return `${head} (${numel} elements)`;
    const values = Array.from(this.toArray() as ArrayLike<number | bigint>);
    const show = (v: number | bigint) =>
      typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toPrecision(5))) : String(v);
    const shown =
      values.length <= 8 ? values.map(show) : [...values.slice(0, 6).map(show), '...', ...values.slice(-2).map(show)];
    return `${head} [${shown.join(', ')}]`;
  }
}

bindTensor({ wrap: (handle) => new Tensor(handle), check: checkTensor, isTensor });
installOperatorMethods(Tensor.prototype);

/** The most elements `inspect` copies to the host for its preview. */
const PREVIEW_LIMIT = 100_000;

function reductionArgs(dim: number[] | undefined, keepdim: boolean): [number[]?, boolean?] {
  if (dim === undefined) return [];
  if (!Array.isArray(dim)) throw new TypeError(`dim must be an array of integers, got ${describe(dim)}`);
  for (let i = 0; i < dim.length; i++) checkInteger(checkPresent(dim, i, 'dim'), `dim[${i}]`);
  return [dim, checkBoolean(keepdim, 'keepdim')];
}

/** Refuses a CUDA device clearly when this LibTorch has none, instead of LibTorch's lower-level error. */
export function checkCudaAvailable(device: string): void {
  if (device.startsWith('cuda') && !native.cudaIsAvailable()) {
    throw new Error(
      `device '${device}' requested, but CUDA is not available: this LibTorch build has no CUDA support or no GPU ` +
        'is visible. Build against a CUDA LibTorch (see README, "Building against another LibTorch").',
    );
  }
}

/** Options of `Tensor.backward`. */
export interface BackwardOptions {
  /** Keep the graph's saved tensors so that another `backward()` can go through it (PyTorch's `retain_graph`). Default false. */
  retainGraph?: boolean;
}

const BACKWARD_OPTIONS = optionNames<BackwardOptions>({ retainGraph: true });

/** Options of the tensor factories. */
export interface TensorOptions {
  /** Element type. Default: float32 (for typed arrays: the array's own type). */
  dtype?: DType;
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /** Record operations for autograd (floating dtypes only). Default false. */
  requiresGrad?: boolean;
}

export interface TensorDataOptions extends TensorOptions {
  /** Shape of the result; default: inferred from nested arrays, or [length] for a typed array. */
  shape?: number[];
}

/** Nested arrays of numbers (or booleans), as PyTorch's `torch.tensor` takes them. */
export type NestedArray = number | boolean | NestedArray[];

interface Resolved {
  dtype: DType;
  device: string;
  requiresGrad: boolean;
}

const TENSOR_OPTIONS = optionNames<TensorDataOptions>({ dtype: true, device: true, requiresGrad: true, shape: true });

function resolveOptions(options: unknown, defaultDtype: DType): Resolved {
  const o = checkOptions<TensorDataOptions>(options, 'options', TENSOR_OPTIONS);
  const dtype = o.dtype === undefined ? defaultDtype : checkOneOf(o.dtype, 'dtype', DTYPES);
  const device = o.device === undefined ? 'cpu' : checkDevice(o.device, 'device');
  const requiresGrad = o.requiresGrad === undefined ? false : checkBoolean(o.requiresGrad, 'requiresGrad');
  if (requiresGrad && !isFloating(dtype))
    throw new TypeError(`requiresGrad needs a floating-point dtype, got ${dtype}`);
  checkCudaAvailable(device);
  return { dtype, device, requiresGrad };
}

function finish(handle: NativeHandle, requiresGrad: boolean): Tensor {
  if (requiresGrad) handle.setRequiresGrad(true);
  return new Tensor(handle);
}

/** Flattens nested arrays into values and a shape, checking that they are rectangular. */
function flatten(data: NestedArray): { values: (number | boolean)[]; shape: number[]; booleans: boolean } {
  const shape: number[] = [];
  for (let level: NestedArray = data; Array.isArray(level); level = level[0]) {
    shape.push(level.length);
    if (level.length === 0) break;
  }
  const values: (number | boolean)[] = [];
  let booleans = true;
  const walk = (node: NestedArray, depth: number, where: string): void => {
    if (depth === shape.length) {
      if (typeof node === 'number') booleans = false;
      else if (typeof node !== 'boolean')
        throw new TypeError(`data${where} must be a number or boolean, got ${describe(node)}`);
      values.push(node);
      return;
    }
    if (!Array.isArray(node) || node.length !== shape[depth]) {
      throw new RangeError(
        `data${where} must be an array of length ${shape[depth]} (nested arrays must be rectangular)`,
      );
    }
    for (let i = 0; i < node.length; i++) walk(checkPresent(node, i, `data${where}`), depth + 1, `${where}[${i}]`);
  };
  walk(data, 0, '');
  return { values, shape, booleans: booleans && values.length > 0 };
}

/**
 * A tensor from a typed array (Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array) or from
 * (nested) arrays of numbers or booleans. The data is copied.
 */
export function tensor(data: TypedArray | NestedArray, options?: TensorDataOptions): Tensor {
  const shapeOption = checkOptions<TensorDataOptions>(options, 'options', TENSOR_OPTIONS).shape;
  if (ArrayBuffer.isView(data)) {
    if (types.isSharedArrayBuffer(data.buffer)) {
      throw new TypeError(
        'data must not live in a SharedArrayBuffer (another thread could change it while it is copied); copy it into a plain typed array first',
      );
    }
    const source = dtypeOfTypedArray(data);
    if (source === undefined) {
      throw new TypeError(
        `data must be a Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array or nested arrays, got ${describe(data)}`,
      );
    }
    const { dtype, device, requiresGrad } = resolveOptions(options, source);
    const length = (data as TypedArray).length;
    const shape = shapeOption === undefined ? [length] : checkShape(shapeOption, 'shape');
    checkElementCount(shape, length);
    if (dtype !== source) checkIntegerValues(data as ArrayLike<number | bigint>, dtype, 'data');
    return finish(native.fromData(data, shape, dtype, device), requiresGrad);
  }
  if (typeof data !== 'number' && typeof data !== 'boolean' && !Array.isArray(data)) {
    throw new TypeError(`data must be a typed array, a number or nested arrays of numbers, got ${describe(data)}`);
  }
  const { values, shape: inferred, booleans } = flatten(data);
  const { dtype, device, requiresGrad } = resolveOptions(options, booleans ? 'bool' : 'float32');
  const shape = shapeOption === undefined ? inferred : checkShape(shapeOption, 'shape');
  checkElementCount(shape, values.length);
  const numbers = Float64Array.from(values, Number);
  checkIntegerValues(numbers, dtype, 'data (flattened)');
  return finish(native.fromData(numbers, shape, dtype, device), requiresGrad);
}

function checkElementCount(shape: number[], length: number): void {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== length) throw new RangeError(`shape [${shape}] holds ${count} elements but data has ${length}`);
}

function factory(name: 'zeros' | 'ones' | 'randn') {
  return (shape: number[], options?: TensorOptions): Tensor => {
    const checked = checkShape(shape, 'shape');
    const { dtype, device, requiresGrad } = resolveOptions(options, 'float32');
    if (name === 'randn' && !isFloating(dtype)) throw new TypeError(`randn needs a floating-point dtype, got ${dtype}`);
    return finish(native[name](checked, dtype, device), requiresGrad);
  };
}

/** A tensor of zeros. */
export const zeros = factory('zeros');
/** A tensor of ones. */
export const ones = factory('ones');
/** Samples of the standard normal distribution (reproducible under `manualSeed`). */
export const randn = factory('randn');

/** Random integers in [low, high). Default dtype int64. */
export function randint(low: number, high: number, shape: number[], options?: TensorOptions): Tensor {
  checkInteger(low, 'low');
  checkInteger(high, 'high');
  if (high <= low) throw new RangeError(`high must be greater than low, got low=${low}, high=${high}`);
  const checked = checkShape(shape, 'shape');
  const { dtype, device, requiresGrad } = resolveOptions(options, 'int64');
  return finish(native.randint(low, high, checked, dtype, device), requiresGrad);
}

/** Sets the PRNG seed of LibTorch's random generators (process-wide). */
export function manualSeed(seed: number): void {
  checkInteger(seed, 'seed', 0);
  native.manualSeed(seed);
}
