/**
 * The native binding, declared once: every function and class the addon (cpp/napi/addon.cc) exports, with the
 * methods of its native classes. The rest of lib/ calls the addon only through `native`, typed here; loader.ts
 * finds and loads the binary.
 */
import { loadAddon } from './loader';

/** Methods of the native TensorHandle (cpp/objects/tensor_handle.cc). */
export interface NativeHandle {
  shape(): number[];
  dtype(): string;
  device(): string;
  numel(): number;
  requiresGrad(): boolean;
  setRequiresGrad(flag: boolean): void;
  grad(): NativeHandle | null;
  toArray(): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
  item(): number | boolean;
  to(target: string): NativeHandle;
  detach(): NativeHandle;
  reshape(shape: number[]): NativeHandle;
  sum(dim?: number[], keepdim?: boolean): NativeHandle;
  mean(dim?: number[], keepdim?: boolean): NativeHandle;
  add(other: NativeHandle | number): NativeHandle;
  sub(other: NativeHandle | number): NativeHandle;
  mul(other: NativeHandle | number): NativeHandle;
  div(other: NativeHandle | number): NativeHandle;
  backward(gradient?: NativeHandle, retainGraph?: boolean): void;
  /** Equal for two handles on the same tensor (the same TensorImpl) while it lives. */
  identity(): bigint;
  dispose(): void;
  isDisposed(): boolean;
}

/** What `callOperator` returns: a tensor, a number, a boolean, null (an undefined tensor or None), or an array of
 * these when the operator returns several values or a list. */
export type NativeResult = NativeHandle | number | boolean | null | NativeResult[];

/** Methods of the native ModuleHandle (cpp/objects/module_handle.cc): a loaded TorchScript module. */
export interface NativeModule {
  /** Returns a TensorHandle, or TorchScript tuples/lists (arrays), dicts (objects) and scalars holding them. */
  forward(...inputs: NativeHandle[]): unknown;
  parameters(): NativeHandle[];
  namedParameters(): [string, NativeHandle][];
  /** The module's buffers (e.g. batch-norm running statistics), recursively, named as in `named_buffers()`. */
  namedBuffers(): [string, NativeHandle][];
  train(on: boolean): void;
  eval(): void;
  isTraining(): boolean;
  to(device: string): void;
  save(path: string): void;
  dispose(): void;
  isDisposed(): boolean;
}

/** The optimizers OptimizerHandle implements (`torch::optim::SGD`, `Adam`, `AdamW`). */
export type NativeOptimizerKind = 'sgd' | 'adam' | 'adamw';

/** An SGD OptimizerHandle's hyperparameters, named like `torch.optim.SGD`'s keywords. */
export interface NativeSGDOptions {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

/** An Adam or AdamW OptimizerHandle's hyperparameters, named like `torch.optim.Adam`'s keywords. */
export interface NativeAdamOptions {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  amsgrad: boolean;
}

/** What an OptimizerHandle takes for its hyperparameters: the ones given are set, the others keep their value. */
export type NativeOptimizerSettings = Partial<NativeSGDOptions> | Partial<NativeAdamOptions>;

/**
 * One parameter's optimizer state: `step` (Adam, AdamW) and tensors by name (`momentumBuffer`, `expAvg`,
 * `expAvgSq`, `maxExpAvgSq`); null before the parameter's first step.
 */
export type NativeParamState = Record<string, NativeHandle | number> | null;

/** Methods of the native OptimizerHandle (cpp/objects/optimizer_handle.cc). */
export interface NativeOptimizer {
  step(): void;
  zeroGrad(setToNone: boolean): void;
  options(): NativeSGDOptions | NativeAdamOptions;
  setOptions(options: NativeOptimizerSettings): void;
  state(): NativeParamState[];
  loadState(state: NativeParamState[]): void;
  size(): number;
}

/** The reductions the native losses take: 'selected' returns the 1-D tensor of selected losses. */
export type NativeReduction = 'mean' | 'sum' | 'none' | 'selected';

/** A native loss's result with the statistics it wrote into the caller's Float64Array. */
export interface NativeLossResult {
  loss: NativeHandle;
  k: number;
  nValid: number;
  fused: boolean;
}

/** Methods of the native ProcessGroupHandle (cpp/objects/process_group.cc); `wait` false returns a Promise. */
export interface NativeProcessGroup {
  init(rank: number, worldSize: number, masterAddr: string, masterPort: number, timeoutMs: number): Promise<void>;
  allReduce(tensor: NativeHandle, op: string, wait: boolean): Promise<void> | void;
  broadcast(tensor: NativeHandle, src: number, wait: boolean): Promise<void> | void;
  allGather(tensor: NativeHandle, wait: boolean): Promise<NativeHandle[]> | NativeHandle[];
  barrier(wait: boolean): Promise<void> | void;
  averageGradients(params: NativeHandle[], bucketBytes: number, wait: boolean): Promise<void> | void;
  broadcastTensors(tensors: NativeHandle[], src: number, bucketBytes: number, wait: boolean): Promise<void> | void;
  destroy(): void;
}

/** The addon's exports (cpp/napi/addon.cc). */
export interface NativeAddon {
  /**
   * The tensor class. The factories and operations make tensors; `new TensorHandle()` from JavaScript gives an
   * empty handle holding no tensor, whose methods throw (the fuzzer passes one as a bad argument).
   */
  TensorHandle: { new (): NativeHandle; prototype: NativeHandle };
  /** Bumps autograd's version count of each live handle whose tensor has a gradient (after an optimizer step). */
  markUpdatedInPlace(params: NativeHandle[]): void;
  fromData(data: ArrayBufferView, shape: number[], dtype: string, device: string): NativeHandle;
  zeros(shape: number[], dtype: string, device: string): NativeHandle;
  ones(shape: number[], dtype: string, device: string): NativeHandle;
  randn(shape: number[], dtype: string, device: string): NativeHandle;
  randint(low: number, high: number, shape: number[], dtype: string, device: string): NativeHandle;
  manualSeed(seed: number): void;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  setNumThreads(threads: number): void;
  getNumThreads(): number;
  info(): {
    libtorchVersion: string;
    cudaBuild: boolean;
    cxx11Abi: boolean;
    cxxStandard: string;
    builtAgainst: string;
    loadedFrom: string;
    napiVersion: number;
    parallelInfo: string;
    cpuKernels: 'avx512' | 'avx2' | 'baseline';
  };
  memory(): { tensors: number; bytes: number; reportedBytes: number };
  cpuBlockCacheInfo(): { enabled: boolean; bytes: number; blocks: number; limit: number };
  emptyCpuBlockCache(): void;
  setCpuBlockCacheLimit(bytes: number): void;
  // The losses take positional options (cheaper to read natively than an object: cpp/functions/losses.cc) and write
  // [k, nValid, fused (1 or 0)] into `stats`.
  bootstrappedCrossEntropy(
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    p: number,
    ignoreIndex: number,
    labelSmoothing: number,
    reduction: NativeReduction,
    perSample: boolean,
    impl: 'auto' | 'fused' | 'reference',
    stats: Float64Array,
  ): NativeHandle;
  bootstrappedBinaryCrossEntropy(
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    posWeight: NativeHandle | undefined,
    p: number,
    reduction: NativeReduction,
    perSample: boolean,
    withLogits: boolean,
    stats: Float64Array,
  ): NativeHandle;
  /**
   * Calls a LibTorch operator by schema name and overload ('aten::argmax', 'aten::max.dim') through the dispatcher
   * (cpp/functions/operators.cc), with `args` in the schema's order (omitted or undefined ones take the schema's
   * defaults). Only the operators `operatorNames()` lists can be called.
   */
  callOperator(schema: string, args: unknown[]): NativeResult;
  /** The schemas `callOperator` accepts (those it lists that this LibTorch has). */
  operatorNames(): string[];
  crossEntropy(
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    ignoreIndex: number,
    labelSmoothing: number,
    reduction: 'mean' | 'sum' | 'none',
  ): NativeHandle;
  /** TorchScript modules: `load` reads a module saved by `torch.jit.save` onto a device ('cpu' by default). */
  ModuleHandle: { load(path: string, device?: string): NativeModule; prototype: NativeModule };
  /** Runs `fn` with autograd recording off (`torch::NoGradGuard`), returning its result. */
  noGrad<T>(fn: () => T): T;
  isGradEnabled(): boolean;
  OptimizerHandle: {
    new (kind: NativeOptimizerKind, params: NativeHandle[], options: NativeOptimizerSettings): NativeOptimizer;
    prototype: NativeOptimizer;
  };
  // Distributed training (cpp/objects/process_group.cc); ProcessGroupHandle exists only in builds with Gloo.
  distributedInfo(): { available: boolean; reason: string; backends: string[] };
  ProcessGroupHandle?: new () => NativeProcessGroup;
  // The bootstrapped losses with the selection over every rank; stats gets [k, nValid, fused, bytes, rounds].
  globalBootstrappedCrossEntropy(
    group: NativeProcessGroup,
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    p: number,
    ignoreIndex: number,
    labelSmoothing: number,
    reduction: NativeReduction,
    stats: Float64Array,
  ): NativeHandle;
  globalBootstrappedBinaryCrossEntropy(
    group: NativeProcessGroup,
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    posWeight: NativeHandle | undefined,
    p: number,
    reduction: NativeReduction,
    withLogits: boolean,
    stats: Float64Array,
  ): NativeHandle;
  // cpp/functions/serialize.cc: PyTorch's file format. `value` holds TensorHandles, numbers, bigints, strings,
  // booleans, null, arrays, plain objects and Maps; loadObject returns the same kinds (no Maps: dicts are objects).
  saveObject(path: string, value: unknown): void;
  loadObject(path: string, device?: string): unknown;
  copyTensors(targets: NativeHandle[], sources: NativeHandle[]): void;
  // cpp/functions/clip_grad.cc: torch.nn.utils.clip_grad_norm_; returns the total norm.
  clipGradNorm(params: NativeHandle[], maxNorm: number, normType: number, errorIfNonfinite: boolean): NativeHandle;
}

const loaded = loadAddon();

/** The native addon of this environment (main thread or worker). */
export const native: NativeAddon = loaded.addon;
/** The file it was loaded from. */
export const nativeBinaryPath: string = loaded.file;
