// Arithmetic of the fused kernel: bit casts, Cephes expf and logf (scalar, written to vectorise, and AVX2 + FMA
// versions, with 16-lane AVX-512 copies: the same logf, and a table-based exp for sums), the order-preserving keys
// the selection ranks losses by, and libm log-sum-exp for the rare pixels with non-finite logits.
#pragma once

#include "loss/cpu_dispatch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(BCE_AVX2_PATH)
#include <immintrin.h>
#endif

namespace bce {
namespace fused {

// ---------------------------------------------------------------------------------------------------------------
// Scalar helpers written so that GCC vectorises the loops that call them at -O3 with plain SSE2 (no -march).
// at::vec::Vectorized<float>::exp would be the obvious choice, but without CPU_CAPABILITY_AVX2 (which an addon
// built without -mavx2 does not get) it is a loop over std::exp, i.e. scalar libm.

BCE_ALWAYS_INLINE float BitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

BCE_ALWAYS_INLINE uint32_t FloatToBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// The branches below are integer selects on purpose: a float `x > lo ? x : lo` lets GCC duplicate the constant
// branch, and the loop then no longer vectorises ("control flow in loop").

// exp(x) for x <= 0 (a softmax argument x - max): Cephes expf, about 1 ulp. Below about -87.3 the result is 0
// instead of a denormal; NaN and -inf (only from non-finite logits, handled exactly elsewhere) also give 0.
BCE_ALWAYS_INLINE float ExpOfNonPositive(float x) {
  const float t = x * 1.44269504088896341f;
  // Truncation of the non-positive t - 0.5 rounds t to the nearest integer (NaN and -inf give INT_MIN in practice;
  // either way the result is masked to 0 below).
  int32_t n = static_cast<int32_t>(t - 0.5f);
  const uint32_t in_range = n >= -126 ? 0xffffffffu : 0u;
  n = n >= -126 ? n : -126;
  const float nf = static_cast<float>(n);
  float r = x - nf * 0.693359375f;
  r = r + nf * 2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float mantissa = poly * (r * r) + r + 1.0f;
  const float value = mantissa * BitsToFloat(static_cast<uint32_t>(n + 127) << 23);
  return BitsToFloat(FloatToBits(value) & in_range);
}

// log(x) for a normal x > 0 (a sum of exps, in [1, C]): Cephes logf, about 1 ulp.
BCE_ALWAYS_INLINE float LogOfPositive(float x) {
  const uint32_t bits = FloatToBits(x);
  int32_t exponent = static_cast<int32_t>(bits >> 23) - 126;  // x = m * 2^exponent, m in [0.5, 1)
  float m = BitsToFloat((bits & 0x007fffffu) | 0x3f000000u);
  // Fold m into [sqrt(1/2), sqrt(2)) - 1: below sqrt(1/2), use 2m - 1 and one less in the exponent.
  const int32_t below_sqrt_half = m < 0.707106781186547524f ? 1 : 0;
  exponent -= below_sqrt_half;
  m = (m - 1.0f) + BitsToFloat(FloatToBits(m) & (0u - static_cast<uint32_t>(below_sqrt_half)));
  const float m2 = m * m;
  float poly = 7.0376836292e-2f;
  poly = poly * m - 1.1514610310e-1f;
  poly = poly * m + 1.1676998740e-1f;
  poly = poly * m - 1.2420140846e-1f;
  poly = poly * m + 1.4249322787e-1f;
  poly = poly * m - 1.6668057665e-1f;
  poly = poly * m + 2.0000714765e-1f;
  poly = poly * m - 2.4999993993e-1f;
  poly = poly * m + 3.3333331174e-1f;
  const float e = static_cast<float>(exponent);
  float tail = m * m2 * poly;
  tail += e * -2.12194440e-4f;
  tail += -0.5f * m2;
  return (m + tail) + e * 0.693359375f;
}

// ---------------------------------------------------------------------------------------------------------------
// Order-preserving keys: a > b as floats (NaN above +inf) iff Key(a) > Key(b) as unsigned integers.

// The loss stored for an ignored pixel: its key is 0, below every valid loss (valid NaNs are made canonical).
inline const float kIgnoredLoss = BitsToFloat(0xffffffffu);
inline const float kCanonicalNaN = std::numeric_limits<float>::quiet_NaN();

inline uint32_t Key(float value) {
  const uint32_t bits = FloatToBits(value);
  // Branch-free form of (negative ? ~bits : bits | sign bit), so that loops over keys vectorise.
  return bits ^ (static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31) | 0x80000000u);
}

// Radix select: two 16-bit digits of the 32-bit keys.
constexpr int kDigitBits = 16;
constexpr uint32_t kDigitBuckets = uint32_t{1} << kDigitBits;

// log-sum-exp of one pixel's logits with libm and PyTorch's non-finite behaviour (a NaN logit, or a largest logit
// of +-inf, gives NaN; -inf logits below a finite maximum contribute 0). For the rare pixels the fast path skips.
inline float ExactLogSumExp(const float* logits, int64_t classes, int64_t class_stride) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < classes; ++c) {
    const float x = logits[c * class_stride];
    if (std::isnan(x)) return kCanonicalNaN;
    max_logit = std::max(max_logit, x);
  }
  float sum = 0.0f;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(logits[c * class_stride] - max_logit);
  return max_logit + std::log(sum);
}

#if defined(BCE_AVX2_PATH)
// Key() of 8 floats given as their bits.
BCE_TARGET_AVX2 BCE_ALWAYS_INLINE __m256i Key8(__m256i bits) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  return _mm256_xor_si256(bits, _mm256_or_si256(_mm256_srai_epi32(bits, 31), sign));
}

// exp(x) for x <= 0 on 8 lanes, for a sum of exps that holds exp(0) = 1 (a log-sum-exp around the maximum). Not
// for exps used one by one (softmax values: Exp8OfNonPositive).
//
// x = (8n + j) ln2/8 + r with |r| <= ln2/16, so exp(x) = 2^n * 2^(j/8) * exp(r): 2^(j/8) comes from an 8-entry
// table held in a register (one permute), exp(r) - 1 = r + r^2 (c2 + c3 r) with c2, c3 fitted for the least
// largest relative error on [-ln2/16, ln2/16] (2.6e-8). The FMA unit, which bounds this loop, does 6 operations
// where Cephes expf takes 10 (pass 1 ~25 % faster). What a sum >= 1 sees is the absolute error: at most 0.57 of
// float's ulp at 1 per term (every 3rd float in [-87, 0] against double exp; Cephes expf: 0.42); terms below
// 2^-17 may be off by up to 1.7 ulp of their own, which is far below the sum's rounding.
// - m = 8n + j is rounded by adding 1.5 * 2^23 (the low bits of the sum then hold m): no float-int conversions.
// - r = x - m ln2/8 in one fused multiply-add: the error of ln2/8 in float times |m| shifts a term by at most
//   1e-9 of the sum.
// - Arguments below -87 are clamped, and 2^n is added to the exponent bits instead of multiplied: that changes
//   only terms below 2^-125, which cannot change a sum >= 1 in float.
// Measured and dropped: a 4th-degree polynomial and a two-step reduction (0.45 ulp at 1, 8 operations, ~10 %
// slower pass 1); a second table for 2^(j/8)'s rounding error (0.3 ulp at 1, half the gain lost).
BCE_TARGET_AVX2 BCE_ALWAYS_INLINE __m256 Exp8ForSum(__m256 x) {
  const __m256 round_bias = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23
  const __m256 table = _mm256_setr_ps(1.0f, 1.0905077457427979f, 1.1892070770263672f, 1.2968395948410034f,
                                      1.4142135381698608f, 1.5422108173370361f, 1.6817928552627563f,
                                      1.8340080976486206f);  // 2^(j/8), j = 0..7
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 biased = _mm256_fmadd_ps(x, _mm256_set1_ps(11.541560327111707f), round_bias);  // 8 / ln2
  const __m256 m = _mm256_sub_ps(biased, round_bias);
  const __m256 r = _mm256_fnmadd_ps(m, _mm256_set1_ps(0.08664339756999316f), x);  // ln2 / 8
  const __m256 c = _mm256_fmadd_ps(_mm256_set1_ps(0.1666685789823532f), r, _mm256_set1_ps(0.500064492225647f));
  const __m256 exp_r_minus_1 = _mm256_fmadd_ps(c, _mm256_mul_ps(r, r), r);
  // The permute reads the low 3 bits of each index: j = m mod 8.
  const __m256i m_bits = _mm256_castps_si256(biased);  // low bits: m in two's complement
  const __m256 two_to_j_eighths = _mm256_permutevar8x32_ps(table, m_bits);
  // 2^(j/8) exp(r), in [0.95, 1.92], with one rounding.
  const __m256 mantissa = _mm256_fmadd_ps(two_to_j_eighths, exp_r_minus_1, two_to_j_eighths);
  // n = floor(m / 8) into the exponent field: bits 3.. of m moved to bits 23.., the bits of j cleared.
  const __m256i scale =
      _mm256_and_si256(_mm256_slli_epi32(m_bits, 20), _mm256_set1_epi32(static_cast<int>(0xff800000u)));
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(mantissa), scale));
}

// exp(x) for x <= 0 on 8 lanes, one by one (softmax values): Exp8ForSum's table of 2^(j/8), but each value must
// hold on its own, so r = x - m ln2/8 is taken in two steps (Cody and Waite: ln2/8 split so that m times its high
// part is exact) and exp(r) - 1 from its Taylor polynomial of degree 4; 2^n is multiplied in, so results near the
// bottom of the float range round as floats do, and arguments below -87 give 0, as ExpOfNonPositive does below
// about -87.3. Within 0.9 ulp above that (every 3rd float in [-87, 0] against double exp; Cephes expf: 1.01).
BCE_TARGET_AVX2 BCE_ALWAYS_INLINE __m256 Exp8OfNonPositive(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  const __m256 round_bias = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23
  const __m256 table = _mm256_setr_ps(1.0f, 1.0905077457427979f, 1.1892070770263672f, 1.2968395948410034f,
                                      1.4142135381698608f, 1.5422108173370361f, 1.6817928552627563f,
                                      1.8340080976486206f);  // 2^(j/8), j = 0..7
  x = _mm256_max_ps(x, lowest);
  const __m256 biased = _mm256_fmadd_ps(x, _mm256_set1_ps(11.541560327111707f), round_bias);  // 8 / ln2
  const __m256 m = _mm256_sub_ps(biased, round_bias);
  __m256 r = _mm256_fnmadd_ps(m, _mm256_set1_ps(0.086639404296875f), x);
  r = _mm256_fnmadd_ps(m, _mm256_set1_ps(3.993272912339307e-06f), r);
  __m256 poly = _mm256_set1_ps(1.0f / 24.0f);
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 6.0f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(0.5f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
  const __m256 exp_r_minus_1 = _mm256_mul_ps(poly, r);
  const __m256i m_bits = _mm256_castps_si256(biased);
  const __m256 two_to_j_eighths = _mm256_permutevar8x32_ps(table, m_bits);
  const __m256 mantissa = _mm256_fmadd_ps(two_to_j_eighths, exp_r_minus_1, two_to_j_eighths);
  // 2^n as a float: n = floor(m / 8) >= -126, biased by 127 into the exponent field.
  const __m256i n_bits =
      _mm256_and_si256(_mm256_slli_epi32(m_bits, 20), _mm256_set1_epi32(static_cast<int>(0xff800000u)));
  const __m256 two_to_n = _mm256_castsi256_ps(_mm256_add_epi32(n_bits, _mm256_set1_epi32(127 << 23)));
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(mantissa, two_to_n));
}

BCE_TARGET_AVX2 BCE_ALWAYS_INLINE __m256 Log8OfPositive(__m256 x) {  // LogOfPositive, 8 lanes
  const __m256i bits = _mm256_castps_si256(x);
  __m256i exponent = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126));
  __m256 m = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
  const __m256 below_sqrt_half = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  exponent = _mm256_add_epi32(exponent, _mm256_castps_si256(below_sqrt_half));  // all ones = -1
  m = _mm256_add_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.0f)), _mm256_and_ps(m, below_sqrt_half));
  const __m256 m2 = _mm256_mul_ps(m, m);
  __m256 poly = _mm256_set1_ps(7.0376836292e-2f);
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-1.1514610310e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(1.1676998740e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-1.2420140846e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(1.4249322787e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-1.6668057665e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(2.0000714765e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-2.4999993993e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(3.3333331174e-1f));
  const __m256 e = _mm256_cvtepi32_ps(exponent);
  __m256 tail = _mm256_mul_ps(_mm256_mul_ps(m, m2), poly);
  tail = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), tail);
  tail = _mm256_fmadd_ps(m2, _mm256_set1_ps(-0.5f), tail);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, tail));
}
// ---------------------------------------------------------------------------------------------------------------
// The same four functions on 16 lanes (AVX-512), so that their results equal the 8-lane ones bit for bit (for
// every x <= 0 and NaN: checked over all 2^32 inputs). Two changes, neither of which changes a bit:
// - 2^n is applied with scalef (x * 2^floor(y)), the exact multiplication the 8-lane code does by moving n into the
//   exponent field (the -87 clamp keeps every result normal, the smallest about 1.35 * 2^-126);
// - the rounding adds 1.5 * 2^20 to x / ln2 instead of 1.5 * 2^23 to 8x / ln2, which gives k = m / 8 directly (the
//   argument scalef floors) with the same mantissa bits (the table index j): the two sums differ by a power of two,
//   so they round alike, and k * ln2 equals m * (ln2 / 8) exactly. One multiplication fewer per exp.

BCE_TARGET_AVX512 BCE_ALWAYS_INLINE __m512i Key16(__m512i bits) {
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  return _mm512_xor_si512(bits, _mm512_or_si512(_mm512_srai_epi32(bits, 31), sign));
}

// 2^(j/8), j = 0..7, twice: the 16-lane permute reads the low 4 bits of each index, j = m mod 8 either way.
BCE_TARGET_AVX512 BCE_ALWAYS_INLINE __m512 TwoToEighths16() {
  return _mm512_setr_ps(1.0f, 1.0905077457427979f, 1.1892070770263672f, 1.2968395948410034f, 1.4142135381698608f,
                        1.5422108173370361f, 1.6817928552627563f, 1.8340080976486206f, 1.0f, 1.0905077457427979f,
                        1.1892070770263672f, 1.2968395948410034f, 1.4142135381698608f, 1.5422108173370361f,
                        1.6817928552627563f, 1.8340080976486206f);
}

BCE_TARGET_AVX512 BCE_ALWAYS_INLINE __m512 Exp16ForSum(__m512 x) {  // Exp8ForSum, 16 lanes
  const __m512 round_bias = _mm512_set1_ps(1572864.0f);             // 1.5 * 2^20: multiples of 1/8
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 biased = _mm512_fmadd_ps(x, _mm512_set1_ps(11.541560327111707f / 8), round_bias);  // 1 / ln2
  const __m512 k = _mm512_sub_ps(biased, round_bias);                                             // m / 8
  const __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.08664339756999316f * 8), x);              // ln2
  const __m512 c = _mm512_fmadd_ps(_mm512_set1_ps(0.1666685789823532f), r, _mm512_set1_ps(0.500064492225647f));
  const __m512 exp_r_minus_1 = _mm512_fmadd_ps(c, _mm512_mul_ps(r, r), r);
  const __m512 two_to_j_eighths = _mm512_permutexvar_ps(_mm512_castps_si512(biased), TwoToEighths16());
  const __m512 mantissa = _mm512_fmadd_ps(two_to_j_eighths, exp_r_minus_1, two_to_j_eighths);
  return _mm512_scalef_ps(mantissa, k);  // * 2^floor(m / 8)
}

BCE_TARGET_AVX512 BCE_ALWAYS_INLINE __m512 Exp16OfNonPositive(__m512 x) {  // Exp8OfNonPositive, 16 lanes
  const __m512 lowest = _mm512_set1_ps(-87.0f);
  const __mmask16 in_range = _mm512_cmp_ps_mask(x, lowest, _CMP_NLT_UQ);  // not (x < -87), as the andnot keeps
  const __m512 round_bias = _mm512_set1_ps(1572864.0f);                   // 1.5 * 2^20: multiples of 1/8
  x = _mm512_max_ps(x, lowest);
  const __m512 biased = _mm512_fmadd_ps(x, _mm512_set1_ps(11.541560327111707f / 8), round_bias);  // 1 / ln2
  const __m512 k = _mm512_sub_ps(biased, round_bias);                                             // m / 8
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.086639404296875f * 8), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(3.993272912339307e-06f * 8), r);
  __m512 poly = _mm512_set1_ps(1.0f / 24.0f);
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 6.0f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(0.5f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f));
  const __m512 exp_r_minus_1 = _mm512_mul_ps(poly, r);
  const __m512 two_to_j_eighths = _mm512_permutexvar_ps(_mm512_castps_si512(biased), TwoToEighths16());
  const __m512 mantissa = _mm512_fmadd_ps(two_to_j_eighths, exp_r_minus_1, two_to_j_eighths);
  return _mm512_maskz_scalef_ps(in_range, mantissa, k);
}

BCE_TARGET_AVX512 BCE_ALWAYS_INLINE __m512 Log16OfPositive(__m512 x) {  // Log8OfPositive, 16 lanes
  const __m512i bits = _mm512_castps_si512(x);
  __m512i exponent = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(126));
  __m512 m = _mm512_castsi512_ps(
      _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f000000)));
  const __mmask16 below_sqrt_half = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  exponent = _mm512_mask_sub_epi32(exponent, below_sqrt_half, exponent, _mm512_set1_epi32(1));
  const __m512 m_minus_1 = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
  m = _mm512_mask_add_ps(m_minus_1, below_sqrt_half, m_minus_1, m);  // the 8-lane code adds +0 elsewhere
  const __m512 m2 = _mm512_mul_ps(m, m);
  __m512 poly = _mm512_set1_ps(7.0376836292e-2f);
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(-1.1514610310e-1f));
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(1.1676998740e-1f));
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(-1.2420140846e-1f));
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(1.4249322787e-1f));
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(-1.6668057665e-1f));
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(2.0000714765e-1f));
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(-2.4999993993e-1f));
  poly = _mm512_fmadd_ps(poly, m, _mm512_set1_ps(3.3333331174e-1f));
  const __m512 e = _mm512_cvtepi32_ps(exponent);
  __m512 tail = _mm512_mul_ps(_mm512_mul_ps(m, m2), poly);
  tail = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), tail);
  tail = _mm512_fmadd_ps(m2, _mm512_set1_ps(-0.5f), tail);
  return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), _mm512_add_ps(m, tail));
}
#endif

}  // namespace fused
}  // namespace bce
