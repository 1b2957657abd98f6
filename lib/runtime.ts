/**
 * Process-level queries and settings: CUDA, threads, build information, memory of live tensors, the cache of large
 * CPU blocks.
 */
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
  /**
   * Whether the addon uses libstdc++'s C++11 ABI (`_GLIBCXX_USE_CXX11_ABI=1`), as the LibTorch it was built against
   * must: Debian's LibTorch and PyPI's torch from 2.7 on use it, older PyPI wheels do not.
   */
  cxx11Abi: boolean;
  /** The C++ standard the addon was compiled as, the one LibTorch's headers ask for: 'C++17' (1.13) or 'C++20' (2.x). */
  cxxStandard: string;
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
   * Which CPU kernels the fused loss runs: 'avx512' (x86-64 with AVX-512 F, DQ, BW and VL), 'avx2' (AVX2 and FMA)
   * or 'baseline' (portable loops: other CPUs). `BOOTSTRAPPED_CE_CPU_KERNELS=avx2` or `=baseline` in the environment
   * caps the choice.
   */
  cpuKernels: 'avx512' | 'avx2' | 'baseline';
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

export interface CpuBlockCacheInfo {
  /**
   * Whether the addon's CPU allocator is in use (it is unless BOOTSTRAPPED_CE_CPU_ALLOCATOR=default was set before
   * the addon loaded, and only on Linux does it keep blocks).
   */
  enabled: boolean;
  /** Bytes of freed large blocks kept for reuse. */
  bytes: number;
  /** How many blocks that is. */
  blocks: number;
  /** The most it keeps, in bytes; the least recently freed blocks beyond it go back to the system. */
  limit: number;
}

/**
 * The cache of large CPU blocks (process-wide, every thread): CPU tensors of 32 MiB and more take their memory from
 * blocks kept when earlier tensors of the same rounded size were freed, so that a training loop does not pay the
 * page faults of fresh memory for its large intermediates every step. Idle memory is at most `limit` (default
 * 1 GiB, or an eighth of physical memory where that is less).
 */
export const cpuBlockCache = {
  /** What the cache holds now. */
  info(): CpuBlockCacheInfo {
    return native.cpuBlockCacheInfo();
  },
  /** Returns every kept block to the system (tensors in use are not affected). */
  empty(): void {
    native.emptyCpuBlockCache();
  },
  /** Sets the most the cache keeps, in bytes (0: keep nothing); blocks beyond it go back to the system now. */
  setLimit(bytes: number): void {
    checkInteger(bytes, 'bytes', 0);
    native.setCpuBlockCacheLimit(bytes);
  },
};
