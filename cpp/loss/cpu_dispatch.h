// Run-time choice of AVX2 code in an addon compiled for the baseline CPU.
//
// The hot CPU loops are also compiled for AVX2 + FMA (functions marked BCE_TARGET_AVX2) and chosen at run time
// when the CPU has both (CpuHasAvx2), so the addon needs no -march flags and still runs on any x86-64. Not
// target_clones("arch=haswell"): its resolver tests the CPU model, so an AMD Zen 3 would get the default clone.
#pragma once

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

#if defined(BCE_AVX2_PATH)
inline bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

}  // namespace bce
