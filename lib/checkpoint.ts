/**
 * Checkpoints in PyTorch's own file format: `save(value, path)` writes what `torch.save` writes, so Python's
 * `torch.load` reads it (with `weights_only=True` too), and `load(path)` reads files of `torch.save`. Loading runs
 * nothing from the file (as `torch.load(weights_only=True)`): only tensors, numbers, strings, booleans, None,
 * lists, tuples and dicts are read; any other object is refused with an Error, as are damaged files.
 *
 * `saveCheckpoint` / `loadCheckpoint` store and restore a whole training state in one call: a module's parameters
 * and buffers, an optimizer's state, a loss's and a scheduler's state, the iteration and anything extra.
 */
import { native, NativeHandle } from './native';
import { Module } from './jit';
import { AdamW, Optimizer, OptimizerStateDict, ParamState, SGD } from './optim';
import { Tensor, checkTensor, isTensor } from './tensor';
import { checkDevice, checkOptions, describe, optionNames } from './validate';

/** What `save` writes: Tensors, numbers, bigints, strings, booleans, null, arrays, plain objects and Maps. */
export type Saveable =
  | Tensor
  | number
  | bigint
  | string
  | boolean
  | null
  | Saveable[]
  | { [key: string]: Saveable }
  | Map<string | number, Saveable>;

/** What `load` returns: Python lists and tuples become arrays, dicts plain objects (integer keys as strings). */
export type Loaded = Tensor | number | bigint | string | boolean | null | Loaded[] | { [key: string]: Loaded };

/** Options of `load`. */
export interface TorchLoadOptions {
  /**
   * Where every tensor goes ('cpu', 'cuda', 'cuda:N'), as `torch.load`'s `map_location`. Default: the device
   * each tensor was saved from.
   */
  device?: string;
}

function checkPath(path: unknown): string {
  if (typeof path !== 'string' || path.length === 0)
    throw new TypeError(`path must be a non-empty string, got ${describe(path)}`);
  return path;
}

function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === null || Object.getPrototypeOf(proto) === null;
}

/** The value with every Tensor replaced by its native handle, checked on the way (path names where). */
function toNative(value: unknown, where: string, open: Set<object>): unknown {
  if (value === null || ['number', 'bigint', 'string', 'boolean'].includes(typeof value)) return value;
  if (value === undefined) throw new TypeError(`${where} is undefined: save null, or leave the key out`);
  if (isTensor(value)) return checkTensor(value, where).handle;
  if (typeof value !== 'object') {
    throw new TypeError(
      `${where} cannot be saved (${describe(value)}): save Tensors, numbers, strings, booleans, null, arrays, objects or Maps`,
    );
  }
  if (open.has(value))
    throw new TypeError(`${where} refers back to an object that contains it: cycles cannot be saved`);
  open.add(value);
  try {
    if (Array.isArray(value)) return value.map((item, i) => toNative(item, `${where}[${i}]`, open));
    if (value instanceof Map || Object.prototype.toString.call(value) === '[object Map]') {
      const out = new Map<unknown, unknown>();
      for (const [key, item] of value as Map<unknown, unknown>) {
        if (typeof key !== 'string' && !Number.isSafeInteger(key)) {
          throw new TypeError(`${where}: a Map key must be a string or an integer, got ${describe(key)}`);
        }
        out.set(key, toNative(item, `${where}.get(${JSON.stringify(key)})`, open));
      }
      return out;
    }
    if (!isPlainObject(value)) {
      throw new TypeError(
        `${where} cannot be saved (${describe(value)}): only plain objects, arrays and Maps hold values; ` +
          'for a module, optimizer or loss use saveCheckpoint or their stateDict()',
      );
    }
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      Object.defineProperty(out, key, {
        value: toNative(item, `${where}.${key}`, open),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  } finally {
    open.delete(value);
  }
}

function isHandle(value: unknown): value is NativeHandle {
  return (
    typeof (value as NativeHandle).isDisposed === 'function' && typeof (value as NativeHandle).dtype === 'function'
  );
}

function fromNative(value: unknown): Loaded {
  if (value === null || typeof value !== 'object') return value as Loaded;
  if (Array.isArray(value)) return value.map(fromNative);
  if (isHandle(value)) return new Tensor(value);
  for (const key of Object.keys(value)) {
    (value as Record<string, unknown>)[key] = fromNative((value as Record<string, unknown>)[key]);
  }
  return value as Loaded;
}

/**
 * Writes `value` to `path` in PyTorch's format (a zip of a pickle and the tensors' bytes), as `torch.save` does.
 * Tensors keep their dtype, shape, device and values exactly, and `requiresGrad` (as `torch.save` keeps it);
 * views are saved as compact copies (two tensors sharing memory are saved as two). A whole number becomes a
 * Python int, any other number a float. The file appears complete or not at all (written aside, then renamed).
 */
export function save(value: Saveable, path: string): void {
  checkPath(path);
  native.saveObject(path, toNative(value, 'value', new Set()));
}

/**
 * Reads a file written by `save` or by Python's `torch.save` (the zip format, PyTorch >= 1.6). Loading runs
 * nothing from the file: objects other than tensors, numbers, strings, booleans, None, lists, tuples and dicts
 * are refused with an Error naming them, as are truncated or corrupted files (every entry's CRC-32 is checked).
 * Tensor element types read: float32, float64, float16, bfloat16, int32, int64, uint8 and bool.
 */
export function load<T extends Loaded = Loaded>(path: string, options?: TorchLoadOptions): T {
  checkPath(path);
  const o = checkOptions<TorchLoadOptions>(options, 'options', optionNames<TorchLoadOptions>({ device: true }));
  const device = o.device === undefined ? undefined : checkDevice(o.device, 'device');
  return fromNative(native.loadObject(path, device)) as T;
}

// ---------------------------------------------------------------------------------------------------------------
// One-call training checkpoints.

/** Anything with PyTorch's state-dict pair: a loss (`BootstrappedCrossEntropy`), a scheduler (`lrScheduler`). */
export interface Stateful {
  stateDict(): object;
  loadStateDict(state: never): void;
}

/** What `saveCheckpoint` stores; every part is optional. */
export interface CheckpointParts {
  /** Its parameters and buffers, under `model_state_dict` with PyTorch's dotted names. */
  module?: Module;
  /** Its state under `optimizer_state_dict`, with PyTorch's keys (`state`, `param_groups`, `exp_avg`, ...). */
  optimizer?: Optimizer;
  /** Its `stateDict()` under `loss_state_dict` (the iteration of a `BootstrappedCrossEntropy`). */
  loss?: Stateful;
  /** Its `stateDict()` under `scheduler_state_dict`. */
  scheduler?: Stateful;
  /** Stored under `iteration`. */
  iteration?: number;
  /** Anything `save` takes, stored under `extra`. */
  extra?: Saveable;
}

/** What `loadCheckpoint` restores into (in place); the parts it names must be in the file. */
export interface CheckpointTargets {
  module?: Module;
  optimizer?: Optimizer;
  loss?: Stateful;
  scheduler?: Stateful;
}

/** What `loadCheckpoint` returns besides restoring the targets. */
export interface LoadedCheckpoint {
  /** The stored iteration, or null when none was stored. */
  iteration: number | null;
  /** The stored `extra`, or null. */
  extra: Loaded;
}

const PARTS = optionNames<CheckpointParts>({
  module: true,
  optimizer: true,
  loss: true,
  scheduler: true,
  iteration: true,
  extra: true,
});
const TARGETS = optionNames<CheckpointTargets>({ module: true, optimizer: true, loss: true, scheduler: true });

/** PyTorch's names of the optimizer state and hyperparameters. */
const STATE_KEYS: Record<keyof ParamState, string> = {
  step: 'step',
  momentumBuffer: 'momentum_buffer',
  expAvg: 'exp_avg',
  expAvgSq: 'exp_avg_sq',
  maxExpAvgSq: 'max_exp_avg_sq',
};
const OPTION_KEYS: Record<string, string> = {
  lr: 'lr',
  momentum: 'momentum',
  dampening: 'dampening',
  weightDecay: 'weight_decay',
  nesterov: 'nesterov',
  betas: 'betas',
  eps: 'eps',
  amsgrad: 'amsgrad',
};

function checkModule(value: unknown, name: string): Module {
  if (!(value instanceof Module)) throw new TypeError(`${name} must be a jit.Module, got ${describe(value)}`);
  return value;
}

function checkOptimizer(value: unknown, name: string): Optimizer {
  if (!(value instanceof Optimizer)) throw new TypeError(`${name} must be an optim optimizer, got ${describe(value)}`);
  return value;
}

function checkStateful(value: unknown, name: string): Stateful {
  const s = value as Stateful;
  if (typeof s?.stateDict !== 'function' || typeof s?.loadStateDict !== 'function')
    throw new TypeError(`${name} must have stateDict() and loadStateDict(), got ${describe(value)}`);
  return s;
}

function moduleTensors(module: Module): [string, Tensor][] {
  return [...module.namedParameters(), ...module.namedBuffers()];
}

/** The optimizer's state as PyTorch's `optimizer.state_dict()` lays it out (one parameter group). */
function optimizerToTorch(optimizer: Optimizer): Record<string, Saveable> {
  const sd = optimizer.stateDict();
  const state = new Map<number, Saveable>();
  sd.state.forEach((entry, i) => {
    if (entry === null) return;
    const out: Record<string, Saveable> = {};
    for (const [key, value] of Object.entries(entry) as [keyof ParamState, Tensor | number][]) {
      out[STATE_KEYS[key]] = value;
    }
    state.set(i, out);
  });
  const group: Record<string, Saveable> = {};
  for (const [key, value] of Object.entries(sd.options)) group[OPTION_KEYS[key] ?? key] = value as Saveable;
  group.params = sd.state.map((_, i) => i);
  return { state, param_groups: [group], kind: sd.kind };
}

/** The kind of an optimizer (a state dict saved by PyTorch does not say it: the target's is taken). */
function kindOf(optimizer: Optimizer): OptimizerStateDict['kind'] {
  if (optimizer instanceof SGD) return 'sgd';
  return optimizer instanceof AdamW ? 'adamw' : 'adam';
}

function optimizerFromTorch(saved: Loaded, where: string, target: Optimizer): OptimizerStateDict {
  const sd = saved as {
    state?: Record<string, Record<string, Loaded>>;
    param_groups?: Record<string, Loaded>[];
    kind?: string;
  };
  if (typeof sd !== 'object' || sd === null || !Array.isArray(sd.param_groups) || sd.param_groups.length !== 1)
    throw new TypeError(`${where} is not an optimizer state with one parameter group`);
  const group = sd.param_groups[0];
  const options: Record<string, Loaded> = {};
  for (const [key, torchKey] of Object.entries(OPTION_KEYS)) if (torchKey in group) options[key] = group[torchKey];
  const count = Array.isArray(group.params) ? group.params.length : 0;
  const state: (ParamState | null)[] = [];
  for (let i = 0; i < count; i++) {
    const entry = sd.state?.[String(i)];
    if (entry === undefined) {
      state.push(null);
      continue;
    }
    const out: Record<string, unknown> = {};
    for (const [key, torchKey] of Object.entries(STATE_KEYS)) {
      if (torchKey in entry)
        out[key] = key === 'step' && isTensor(entry[torchKey]) ? (entry[torchKey] as Tensor).item() : entry[torchKey];
    }
    state.push(out as ParamState);
  }
  return {
    kind: (sd.kind ?? kindOf(target)) as OptimizerStateDict['kind'],
    options: options as unknown as OptimizerStateDict['options'],
    state,
  };
}

/**
 * Saves a training state in one file, itself a plain dict that `torch.load` reads: `model_state_dict`
 * (parameters and buffers by dotted name), `optimizer_state_dict`, `loss_state_dict`, `scheduler_state_dict`,
 * `iteration` and `extra`, for the parts given. The random number generator's state is not saved.
 */
export function saveCheckpoint(path: string, parts: CheckpointParts): void {
  checkPath(path);
  const p = checkOptions<CheckpointParts>(parts, 'parts', PARTS);
  const out: Record<string, Saveable> = {};
  const owned: Tensor[] = [];
  try {
    if (p.module !== undefined) {
      const tensors = moduleTensors(checkModule(p.module, 'parts.module'));
      owned.push(...tensors.map(([, t]) => t));
      out.model_state_dict = Object.fromEntries(tensors);
    }
    if (p.optimizer !== undefined)
      out.optimizer_state_dict = optimizerToTorch(checkOptimizer(p.optimizer, 'parts.optimizer'));
    if (p.loss !== undefined) out.loss_state_dict = checkStateful(p.loss, 'parts.loss').stateDict() as Saveable;
    if (p.scheduler !== undefined)
      out.scheduler_state_dict = checkStateful(p.scheduler, 'parts.scheduler').stateDict() as Saveable;
    if (p.iteration !== undefined) {
      if (!Number.isSafeInteger(p.iteration) || p.iteration < 0)
        throw new RangeError(`parts.iteration must be an integer >= 0, got ${describe(p.iteration)}`);
      out.iteration = p.iteration;
    }
    if (p.extra !== undefined) out.extra = p.extra;
    save(out, path);
  } finally {
    owned.forEach((t) => t.dispose());
  }
}

function disposeAll(value: Loaded): void {
  if (isTensor(value)) value.dispose();
  else if (Array.isArray(value)) value.forEach(disposeAll);
  else if (value !== null && typeof value === 'object') Object.values(value).forEach(disposeAll);
}

/**
 * Restores what `saveCheckpoint` stored into the targets given, in place: the module's parameters and buffers
 * (every name must match, as `load_state_dict(strict=True)`), the optimizer's state, the loss's and the
 * scheduler's. Training then continues exactly as it would have without the interruption. Returns the stored
 * iteration and extra.
 */
export function loadCheckpoint(path: string, targets: CheckpointTargets, options?: TorchLoadOptions): LoadedCheckpoint {
  checkPath(path);
  const t = checkOptions<CheckpointTargets>(targets, 'targets', TARGETS);
  const module = t.module === undefined ? undefined : checkModule(t.module, 'targets.module');
  const optimizer = t.optimizer === undefined ? undefined : checkOptimizer(t.optimizer, 'targets.optimizer');
  const loss = t.loss === undefined ? undefined : checkStateful(t.loss, 'targets.loss');
  const scheduler = t.scheduler === undefined ? undefined : checkStateful(t.scheduler, 'targets.scheduler');
  const saved = load(path, options);
  if (saved === null || typeof saved !== 'object' || Array.isArray(saved) || isTensor(saved)) {
    disposeAll(saved);
    throw new TypeError(`'${path}' does not hold a checkpoint dict`);
  }
  const part = (key: string, needed: boolean): Loaded => {
    if (needed && !(key in saved)) throw new RangeError(`'${path}' has no ${key}`);
    return saved[key];
  };
  try {
    if (module) {
      const stored = part('model_state_dict', true) as Record<string, Loaded>;
      const live = moduleTensors(module);
      const names = new Set(live.map(([name]) => name));
      const missing = [...names].filter((name) => !isTensor(stored[name]));
      const unexpected = Object.keys(stored).filter((name) => !names.has(name));
      if (missing.length || unexpected.length) {
        live.forEach(([, tensor]) => tensor.dispose());
        throw new RangeError(
          `model_state_dict of '${path}' does not match the module: missing [${missing.join(', ')}], ` +
            `unexpected [${unexpected.join(', ')}]`,
        );
      }
      try {
        native.copyTensors(
          live.map(([, tensor]) => tensor.handle),
          live.map(([name]) => (stored[name] as Tensor).handle),
        );
      } finally {
        live.forEach(([, tensor]) => tensor.dispose());
      }
    }
    if (optimizer)
      optimizer.loadStateDict(
        optimizerFromTorch(part('optimizer_state_dict', true), 'optimizer_state_dict', optimizer),
      );
    if (loss) loss.loadStateDict(part('loss_state_dict', true) as never);
    if (scheduler) scheduler.loadStateDict(part('scheduler_state_dict', true) as never);
    const iteration = saved.iteration;
    return {
      iteration: typeof iteration === 'number' ? iteration : null,
      extra: 'extra' in saved ? saved.extra : null,
    };
  } finally {
    for (const key of ['model_state_dict', 'optimizer_state_dict']) if (key in saved) disposeAll(saved[key]);
  }
}
