/**
 * Loads the native addon. Order: an explicit binary (`BOOTSTRAPPED_CE_BINARY`), then a local build found by
 * `bindings` (build/Release). Every failure is collected and reported in one actionable message.
 */
import * as fs from 'fs';
import * as path from 'path';
import bindings from 'bindings';

/** The package root (one level above lib/ or dist/). */
export const packageRoot = path.resolve(__dirname, '..');

/** Methods of the native TensorHandle (cpp/tensor_handle.cc). */
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
  backward(gradient?: NativeHandle): void;
  dispose(): void;
  isDisposed(): boolean;
}

/** Options as the native loss functions take them (cpp/loss_binding.cc); the facade fills every field. */
export interface NativeLossOptions {
  p: number;
  weight?: NativeHandle;
  posWeight?: NativeHandle;
  ignoreIndex: number;
  labelSmoothing: number;
  reduction: 'mean' | 'sum' | 'none' | 'selected';
  perSample: boolean;
  impl: 'auto' | 'fused' | 'reference';
}

export interface NativeLossResult {
  loss: NativeHandle;
  k: number;
  nValid: number;
  fused: boolean;
}

export interface NativeAddon {
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
    builtAgainst: string;
    loadedFrom: string;
    napiVersion: number;
    parallelInfo: string;
  };
  memory(): { tensors: number; bytes: number };
  bootstrappedCrossEntropy(input: NativeHandle, target: NativeHandle, options: NativeLossOptions): NativeLossResult;
  bootstrappedBinaryCrossEntropy(
    input: NativeHandle,
    target: NativeHandle,
    options: NativeLossOptions,
    withLogits: boolean,
  ): NativeLossResult;
  crossEntropy(input: NativeHandle, target: NativeHandle, options: NativeLossOptions): NativeHandle;
}

const BINARY_NAME = 'bootstrapped_ce.node';

function describeFailure(tried: string[], errors: string[]): string {
  const lines = [
    'bootstrapped-ce: could not load the native addon.',
    'Tried:',
    ...tried.map((file, i) => `  - ${file}: ${errors[i]}`),
    'Possible solutions:',
    '  - Build it: `npm rebuild bootstrapped-ce` (needs cmake, a C++17 compiler and LibTorch).',
    '  - Install LibTorch: `sudo apt-get install libtorch-dev` on Debian/Ubuntu, or set LIBTORCH to an unpacked',
    '    LibTorch or to the `torch` folder of a PyTorch install, then rebuild.',
    '  - If a LibTorch shared library (e.g. libtorch_cpu.so) is reported missing, the LibTorch the addon was built',
    '    against has moved or been removed: reinstall it, or rebuild against the one you have.',
    '  - Point BOOTSTRAPPED_CE_BINARY at a built bootstrapped_ce.node.',
  ];
  return lines.join('\n');
}

function load(): { addon: NativeAddon; file: string } {
  const tried: string[] = [];
  const errors: string[] = [];
  const explicit = process.env.BOOTSTRAPPED_CE_BINARY;
  if (explicit) {
    const file = path.resolve(explicit);
    tried.push(`${file} (BOOTSTRAPPED_CE_BINARY)`);
    try {
      return { addon: require(file) as NativeAddon, file };
    } catch (error) {
      errors.push(firstLine(error));
    }
  }
  // A local build: build/Release, build/Debug and the other places `bindings` knows.
  tried.push(`local build of ${BINARY_NAME} (build/Release, build/Debug, ...)`);
  try {
    const addon = bindings({ bindings: BINARY_NAME, module_root: packageRoot }) as NativeAddon;
    return { addon, file: localBuildPath() };
  } catch (error) {
    errors.push(firstLine(error));
  }
  throw new Error(describeFailure(tried, errors));
}

function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error).split('\n')[0];
}

function localBuildPath(): string {
  for (const folder of ['build/Release', 'build/Debug', 'build']) {
    const file = path.join(packageRoot, folder, BINARY_NAME);
    if (fs.existsSync(file)) return file;
  }
  return BINARY_NAME;
}

const loaded = load();

/** The native addon of this environment (main thread or worker). */
export const native: NativeAddon = loaded.addon;
/** The file it was loaded from. */
export const nativeBinaryPath: string = loaded.file;
