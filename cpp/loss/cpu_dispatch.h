// Run-time choice of AVX2 code in an addon compiled for the baseline CPU.
//
// The hot CPU loops are also compiled for AVX2 + FMA (functions marked BCE_TARGET_AVX2) and chosen at run time
// when the CPU has both (CpuHasAvx2), so the addon needs no -march flags and still runs on any x86-64. Not
// target_clones("arch=haswell"): its resolver tests the CPU model, so an AMD Zen 3 would get the default clone.
// BOOTSTRAPPED_CE_CPU_KERNELS=baseline (read once, at the first use) turns the AVX2 code off, so that the portable
// loops, which CPUs without AVX2 and non-x86 CPUs run, can be tested and compared on any machine.
#pragma once

#include <cstdlib>
#include <cstring>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define BCE_AVX2_PATH 1
#define BCE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

// GCC inlines a function into one compiled for another target only when forced to.
#if defined(__GNUC__)
#define BCE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define BCE_ALWAYS_INLINE inline
#endif

namespace bce {

inline bool BaselineKernelsRequested() {
  const char* kernels = std::getenv("BOOTSTRAPPED_CE_CPU_KERNELS");
  return kernels != nullptr && std::strcmp(kernels, "baseline") == 0;
}

#if defined(BCE_AVX2_PATH)
inline bool CpuHasAvx2() {
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !BaselineKernelsRequested();
  return has;
}
#endif

// "avx2" or "baseline": which CPU kernels this process runs.
inline const char* CpuKernels() {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return "avx2";
#endif
  return "baseline";
}

}  // namespace bce
