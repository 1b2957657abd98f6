/**
 * bootstrapped-ce: PyTorch's bootstrapped (hardest top-k) cross-entropy for Node.js, on LibTorch.
 */
export { DTYPES } from './dtype';
export type { DType, TypedArray } from './dtype';
export { Tensor, isTensor, tensor, zeros, ones, randn, randint, manualSeed } from './tensor';
export type { TensorOptions, TensorDataOptions, NestedArray, BackwardOptions } from './tensor';
export { cat, stack, where } from './operators';
export type { ValuesIndices, TensorOperatorMethods } from './operators';
export { confusionMatrix, iou, meanIou } from './metrics';
export type { ConfusionMatrixOptions } from './metrics';
export { tidy, trainStep } from './scope';
export { setMemoryWarningThreshold } from './memory-watch';
export { cuda, setNumThreads, getNumThreads, info, memory, cpuBlockCache } from './runtime';
export type { BuildInfo, MemoryInfo, CpuBlockCacheInfo } from './runtime';
export { schedules, effectiveP } from './schedules';
export type { Warmup, WarmupFunction, WarmupSchedule } from './schedules';
export {
  bootstrappedCrossEntropy,
  bootstrappedCrossEntropyWithStats,
  bootstrappedBinaryCrossEntropy,
  bootstrappedBinaryCrossEntropyWithStats,
  bootstrappedBinaryCrossEntropyWithLogits,
  bootstrappedBinaryCrossEntropyWithLogitsStats,
  crossEntropy,
} from './loss';
export type {
  Reduction,
  Impl,
  CrossEntropyOptions,
  BootstrappedCommonOptions,
  BootstrappedCrossEntropyOptions,
  BootstrappedBinaryOptions,
  BootstrappedBinaryWithLogitsOptions,
  BootstrappedResult,
  Scope,
} from './loss';
export { BootstrappedCrossEntropy, BootstrappedCE } from './modules';
export type { BootstrappedCrossEntropyState, BootstrappedCEOptions } from './modules';
export * as jit from './jit';
export { Module, noGrad, isGradEnabled } from './jit';
export type { LoadOptions, ModuleOutput } from './jit';
export * as optim from './optim';
export type { SGDOptions, AdamOptions, ParamState, OptimizerStateDict } from './optim';
export { save, load, saveCheckpoint, loadCheckpoint } from './checkpoint';
export type {
  Saveable,
  Loaded,
  TorchLoadOptions,
  Stateful,
  CheckpointParts,
  CheckpointTargets,
  LoadedCheckpoint,
} from './checkpoint';
export * as lrScheduler from './lr-scheduler';
export type {
  LRSchedulerState,
  StepLROptions,
  CosineAnnealingLROptions,
  LinearLROptions,
  PolynomialLROptions,
} from './lr-scheduler';
export { clipGradNorm } from './clip-grad';
export type { ClipGradNormOptions } from './clip-grad';
export * as distributed from './distributed';
export type { Backend, ReduceOp, InitProcessGroupOptions, ProcessGroup } from './distributed';
export { DistributedDataParallel } from './data-parallel';
export type { DataParallelOptions } from './data-parallel';
