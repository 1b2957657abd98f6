/**
 * TorchScript modules from Node: `jit.load(path)` gives a `Module` whose `forward` runs the scripted model and
 * whose `parameters()` share the module's own tensors, so that an optimizer (`optim`) trains it in place.
 * Also `noGrad(fn)`, which runs `fn` with autograd recording off.
 */
import * as fs from 'fs';
import { inspect } from 'util';
import { native, NativeHandle, NativeModule } from './native';
import { Tensor, checkCudaAvailable, checkTensor, noteDeviceMove } from './tensor';
import { checkBoolean, checkDevice, checkOptions, describe, optionNames } from './validate';

/** What `forward` may return: a Tensor, or TorchScript tuples/lists (arrays), dicts (objects) and scalars. */
export type ModuleOutput = Tensor | number | boolean | string | null | ModuleOutput[] | { [key: string]: ModuleOutput };

function wrapOutput(value: unknown): ModuleOutput {
  if (value === null || typeof value !== 'object') return value as ModuleOutput;
  if (Array.isArray(value)) return value.map(wrapOutput);
  if (typeof (value as NativeHandle).isDisposed === 'function') return new Tensor(value as NativeHandle);
  const out: { [key: string]: ModuleOutput } = {};
  // Defined, not assigned: a dict key "__proto__" is a property like any other, not the object's prototype.
  for (const [key, item] of Object.entries(value)) {
    Object.defineProperty(out, key, { value: wrapOutput(item), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Options of `jit.load`. */
export interface LoadOptions {
  /** Where to load parameters and buffers: 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
}

/** A TorchScript module (a `torch.jit.script`ed or traced model saved with `.save()` in Python). */
export class Module {
  /** @internal */
  private readonly native: NativeModule;

  /** @internal Use `jit.load`. */
  constructor(handle: NativeModule) {
    this.native = handle;
  }

  /**
   * Runs the module's `forward` on tensors. A tensor result comes back as a Tensor; tuples and lists as arrays,
   * dicts as objects. The type parameter only narrows the declared type (default Tensor); it is not checked.
   */
  forward<T extends ModuleOutput = Tensor>(...inputs: Tensor[]): T {
    own(this, 'forward').live();
    const handles = inputs.map((input, i) => checkTensor(input, `inputs[${i}]`).handle);
    return wrapOutput(this.native.forward(...handles)) as T;
  }

  /** The trainable parameters (recursively), as Tensors sharing the module's own tensors. */
  parameters(): Tensor[] {
    own(this, 'parameters').live();
    return this.native.parameters().map((handle) => new Tensor(handle));
  }

  /** `[name, tensor]` pairs with PyTorch's dotted names ('conv1.weight'), in the module's order. */
  namedParameters(): [string, Tensor][] {
    own(this, 'namedParameters').live();
    return this.native.namedParameters().map(([name, handle]) => [name, new Tensor(handle)] as [string, Tensor]);
  }

  /**
   * `[name, tensor]` pairs of the buffers (batch-norm running statistics, ...), dotted names as in PyTorch, sharing
   * the module's tensors. A state dict holds them beside the parameters.
   */
  namedBuffers(): [string, Tensor][] {
    this.live();
    return this.native.namedBuffers().map(([name, handle]) => [name, new Tensor(handle)] as [string, Tensor]);
  }

  /** Training mode (dropout, batch-norm statistics), for this module and its children. Returns this. */
  train(on = true): this {
    own(this, 'train').live();
    this.native.train(checkBoolean(on, 'on'));
    return this;
  }

  /** Evaluation mode: `train(false)`. Returns this. */
  eval(): this {
    own(this, 'eval').live();
    this.native.eval();
    return this;
  }

  /** Whether the module is in training mode. */
  get training(): boolean {
    own(this, 'training').live();
    return this.native.isTraining();
  }

  /**
   * Moves parameters and buffers to `device` ('cpu', 'cuda', 'cuda:N') in place; tensors from `parameters()`
   * and optimizers built on them follow. Returns this.
   */
  to(device: string): this {
    own(this, 'to').live();
    checkDevice(device, 'device');
    checkCudaAvailable(device);
    this.native.to(device);
    noteDeviceMove();
    return this;
  }

  /** Saves the module (code and current parameters) as TorchScript, loadable by `jit.load` and `torch.jit.load`. */
  save(path: string): void {
    own(this, 'save').live();
    if (typeof path !== 'string' || path.length === 0)
      throw new TypeError(`path must be a non-empty string, got ${describe(path)}`);
    this.native.save(path);
  }

  /** Frees the module now (its parameters live on while Tensors from `parameters()` hold them). */
  dispose(): void {
    own(this, 'dispose').native.dispose();
  }

  /** What `console.log` shows: the parameter count, the training flag and the parameters' device. */
  [inspect.custom](): string {
    if (this.isDisposed) return 'Module(disposed)';
    const params = this.parameters();
    const count = params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    const devices = [...new Set(params.map((p) => p.device))].join(', ') || 'no parameters';
    params.forEach((p) => p.dispose());
    return `Module(parameters=${params.length} tensors, ${count} values, device=${devices}, training=${this.training})`;
  }

  get isDisposed(): boolean {
    return own(this, 'isDisposed').native.isDisposed();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private live(): void {
    if (this.native.isDisposed()) throw new Error('the module was disposed and can no longer be used');
  }
}

/** `self` as a Module, for a method called on it (a foreign `this` is refused with the method's name). */
function own(self: unknown, method: string): Module {
  if (!(self instanceof Module))
    throw new TypeError(`Module.${method} was called on ${describe(self)}, which is not a Module`);
  return self;
}

/** Loads a TorchScript module saved by PyTorch (`torch.jit.save`) or by `Module.save`. */
export function load(path: string, options?: LoadOptions): Module {
  if (typeof path !== 'string' || path.length === 0)
    throw new TypeError(`path must be a non-empty string, got ${describe(path)}`);
  const o = checkOptions<LoadOptions>(options, 'options', optionNames<LoadOptions>({ device: true }));
  const device = o.device === undefined ? 'cpu' : checkDevice(o.device, 'device');
  checkCudaAvailable(device);
  if (!fs.existsSync(path)) throw new Error(`path: no such file '${path}'`);
  if (fs.statSync(path).isDirectory()) {
    throw new TypeError(`path '${path}' is a directory: jit.load needs a TorchScript file (saved by torch.jit.save)`);
  }
  return new Module(native.ModuleHandle.load(path, device));
}

/**
 * Runs `fn` with autograd recording off (PyTorch's `torch.no_grad()`) and returns its result. The previous mode
 * is restored however `fn` ends, including when it throws. `fn` must be synchronous.
 */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`fn must be a function, got ${describe(fn)}`);
  const result = native.noGrad(fn);
  if (result !== null && typeof (result as { then?: unknown })?.then === 'function') {
    throw new TypeError(
      'noGrad(fn) needs a synchronous fn: it returned a Promise, whose work would run with gradients on',
    );
  }
  return result;
}

/** Whether autograd currently records operations (false inside `noGrad`). */
export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}
