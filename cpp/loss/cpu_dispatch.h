// Run-time choice of AVX2 and AVX-512 code in an addon compiled for the baseline CPU.
//
// The hot CPU loops are also compiled for AVX2 + FMA (functions marked BCE_TARGET_AVX2) and, for the fused kernel,
// for AVX-512 (BCE_TARGET_AVX512: F, DQ, BW and VL, the x86-64-v4 set), and the widest the CPU supports is chosen
// at run time, so the addon needs no -march flags and still runs on any x86-64. Not
// target_clones("arch=haswell"): its resolver tests the CPU model, so an AMD Zen 3 would get the default clone.
// BOOTSTRAPPED_CE_CPU_KERNELS (read once, at the first use) caps the choice: "avx2" leaves the AVX-512 code out,
// "baseline" the AVX2 code too, so that the narrower loops (which other CPUs run) can be tested and compared on any
// machine. The AVX-512 kernels compute exactly what the AVX2 ones do, 16 lanes at a time (test/fused.test.ts
// compares the two bit for bit).
#pragma once

#include <cstdlib>
#include <cstring>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define BCE_AVX2_PATH 1
#define BCE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define BCE_TARGET_AVX512 __attribute__((target("avx2,fma,avx512f,avx512dq,avx512bw,avx512vl")))
// GCC 12 warns inside its own AVX-512 headers wherever their intrinsics are inlined (GCC bug 105593, "__Y may be
// used uninitialized"); the pragma has to be in force where the headers are first read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
#endif

// GCC inlines a function into one compiled for another target only when forced to.
#if defined(__GNUC__)
#define BCE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define BCE_ALWAYS_INLINE inline
#endif

namespace bce {

enum class CpuKernelLevel { kBaseline, kAvx2, kAvx512 };

// The widest kernels BOOTSTRAPPED_CE_CPU_KERNELS allows (any other value, or none, allows all; lib/loader.ts warns
// about other values when the package loads).
inline CpuKernelLevel RequestedKernelLevel() {
  const char* kernels = std::getenv("BOOTSTRAPPED_CE_CPU_KERNELS");
  if (kernels != nullptr && std::strcmp(kernels, "baseline") == 0) return CpuKernelLevel::kBaseline;
  if (kernels != nullptr && std::strcmp(kernels, "avx2") == 0) return CpuKernelLevel::kAvx2;
  return CpuKernelLevel::kAvx512;
}

inline CpuKernelLevel CpuKernelsInUse() {
  static const CpuKernelLevel level = [] {
    const CpuKernelLevel requested = RequestedKernelLevel();
#if defined(BCE_AVX2_PATH)
    // __builtin_cpu_supports also checks that the OS saves the AVX and AVX-512 registers (XGETBV).
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (avx512 && requested == CpuKernelLevel::kAvx512) return CpuKernelLevel::kAvx512;
    if (avx2 && requested != CpuKernelLevel::kBaseline) return CpuKernelLevel::kAvx2;
#endif
    (void)requested;
    return CpuKernelLevel::kBaseline;
  }();
  return level;
}

#if defined(BCE_AVX2_PATH)
inline bool CpuHasAvx2() { return CpuKernelsInUse() != CpuKernelLevel::kBaseline; }
inline bool CpuHasAvx512() { return CpuKernelsInUse() == CpuKernelLevel::kAvx512; }
#endif

// "avx512", "avx2" or "baseline": which CPU kernels this process runs.
inline const char* CpuKernels() {
  switch (CpuKernelsInUse()) {
    case CpuKernelLevel::kAvx512: return "avx512";
    case CpuKernelLevel::kAvx2: return "avx2";
    case CpuKernelLevel::kBaseline: break;
  }
  return "baseline";
}

}  // namespace bce
