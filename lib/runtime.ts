/** Process-level queries and settings: CUDA, threads, build information, memory of live tensors. */
import { native, nativeBinaryPath } from './native';
import { checkInteger } from './validate';

export const cuda = {
  /** True when this LibTorch was built with CUDA and a GPU is visible. */
  isAvailable(): boolean {
    return native.cudaIsAvailable();
  },
  /** Number of visible CUDA devices (0 without CUDA). */
  deviceCount(): number {
    return native.cudaDeviceCount();
  },
};

/** Sets the number of threads LibTorch uses for intra-op parallelism (process-wide). */
export function setNumThreads(threads: number): void {
  checkInteger(threads, 'threads', 1);
  if (threads > 4096) throw new RangeError(`threads must be at most 4096, got ${threads}`);
  native.setNumThreads(threads);
}

export function getNumThreads(): number {
  return native.getNumThreads();
}

export interface BuildInfo {
  /** LibTorch version the addon was compiled against, e.g. "1.13.0". */
  libtorchVersion: string;
  /** Whether that LibTorch has CUDA support. */
  cudaBuild: boolean;
  /** The LibTorch CMake folder used at build time. */
  builtAgainst: string;
  /** The LibTorch CPU library the dynamic loader actually loaded. */
  loadedFrom: string;
  /** The addon binary. */
  binary: string;
  napiVersion: number;
  /** LibTorch's own description of its threading backend. */
  parallelInfo: string;
  /**
   * Which CPU kernels the fused loss runs: 'avx2' (x86-64 with AVX2 and FMA) or 'baseline' (portable loops: other
   * CPUs, or `BOOTSTRAPPED_CE_CPU_KERNELS=baseline` in the environment).
   */
  cpuKernels: 'avx2' | 'baseline';
}

/** Which LibTorch is in use and where it came from. */
export function info(): BuildInfo {
  return { ...native.info(), binary: nativeBinaryPath };
}

export interface MemoryInfo {
  /** Live tensor handles of this thread (not yet disposed or garbage-collected). */
  tensors: number;
  /** Bytes of the elements those handles view. */
  bytes: number;
  /**
   * Host bytes reported to V8 as external memory, so that its garbage collector runs in step with native memory:
   * each CPU storage once (a handle on a tensor that shares its storage, such as `detach()` or a view, reports
   * nothing).
   */
  reportedBytes: number;
}

/** Live tensor handles of this thread and the bytes they view. */
export function memory(): MemoryInfo {
  return native.memory();
}
