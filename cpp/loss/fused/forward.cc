#include "loss/fused/forward.h"

#include "loss/cpu_dispatch.h"
#include "loss/fused/math.h"
#include "loss/fused/parallel.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

namespace bce {
namespace fused {
namespace {

// Pass 1's working arrays for one block, one set per thread; lanes past the block's pixel count hold harmless
// values (logits 0).
struct BlockScratch {
  explicit BlockScratch(int64_t classes) : values(classes * kBlockLanes) {}
  std::vector<float> values;  // class-major logits: values[c * kBlockLanes + lane]
  float max_logit[kBlockLanes];
  float sum_exp[kBlockLanes];
  float per_lane[kBlockLanes];  // log(sum_exp)
};

// Whether lane needs the exact path: a NaN logit in the block or a non-finite maximum (the fast exp maps both to 0).
inline bool NeedsExactPath(bool block_has_nan, const BlockScratch& scratch, int lane) {
  return block_has_nan || !std::isfinite(scratch.max_logit[lane]);
}

// The per-pixel step of pass 1 for one block, one lane at a time: loss = w[y] * ((max - x[y]) + log(sum)), or
// kIgnoredLoss for ignored and out-of-range labels (counted); the valid losses' top key digits go into
// `histogram` unless it is null. Pixels with non-finite logits take libm (NeedsExactPath).
void ScalarPixelLosses(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                       const LossInputs& in, bool block_has_nan, const BlockScratch& scratch, float* losses,
                       uint32_t* histogram, PassCounts& counts) {
  const uint64_t classes = static_cast<uint64_t>(plan.classes());
  for (int64_t lane = 0; lane < count; ++lane) {
    const int64_t pixel = first_pixel + lane;
    const int64_t label = in.target[pixel];
    const bool exact = NeedsExactPath(block_has_nan, scratch, static_cast<int>(lane));
    counts.non_finite += exact ? 1 : 0;  // ignored pixels too: their gradient column may be NaN (backward.cc)
    if (label == in.ignore_index || static_cast<uint64_t>(label) >= classes) {
      counts.out_of_range += label == in.ignore_index ? 0 : 1;
      losses[pixel] = kIgnoredLoss;
      continue;
    }
    ++counts.valid;
    const float label_logit = scratch.values[label * kBlockLanes + lane];
    // (max - x[y]) and log(sum) are both >= 0, so the loss is never a tiny negative number.
    float loss =
        exact ? ExactLogSumExp(logits + lane * plan.pixel_stride(), plan.classes(), plan.class_stride()) - label_logit
              : (scratch.max_logit[lane] - label_logit) + scratch.per_lane[lane];
    if (in.weight != nullptr) loss *= in.weight[label];
    if (std::isnan(loss)) loss = kCanonicalNaN;
    losses[pixel] = loss;
    if (histogram != nullptr) ++histogram[Key(loss) >> kDigitBits];
  }
}

// Block math, written once as plain loops (GenericBlockMath, any CPU; also the partial blocks at the end of a run)
// and once with AVX2 + FMA intrinsics (Avx2BlockMath, full blocks of spatial inputs, chosen at run time; and its
// 16-lane copy Avx512BlockMath, bit for bit the same results): GCC does not vectorise the plain loops well once it
// unrolls the 16 lanes. Both take logs with Cephes logf (~1 ulp);
// the plain loops sum Cephes expf's exps, the AVX2 code a cheaper table-based exp of the same accuracy
// (Exp8ForSum), so the two agree to about an ulp of the sum, not bit for bit (test/fused.test.ts compares them).

struct GenericBlockMath {
  // Loads `count` pixels' logits (count <= kBlockLanes; the other lanes get 0) into scratch.values and takes each
  // lane's maximum; returns whether any loaded logit is NaN.
  static BCE_ALWAYS_INLINE bool Load(const float* logits, int64_t count, int64_t classes, int64_t pixel_stride,
                                     int64_t class_stride, BlockScratch& scratch) {
    float* __restrict values = scratch.values.data();
    float* __restrict max_logit = scratch.max_logit;
    // -inf, not class 0's logits, so that the loop has no first-class branch. A NaN logit is not taken by the
    // maximum but flags the block, whose pixels then all take the exact path.
    for (int lane = 0; lane < kBlockLanes; ++lane) max_logit[lane] = -std::numeric_limits<float>::infinity();
    uint32_t any_nan = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const float* __restrict row = logits + c * class_stride;
      float* __restrict out = values + c * kBlockLanes;
#if defined(__GNUC__) || defined(__clang__)
      if (pixel_stride == 1) __builtin_prefetch(row + kPrefetchFloats, 0, 2);  // into L2, as below; never faults
#endif
      for (int lane = 0; lane < kBlockLanes; ++lane) {
        const float x = lane < count ? row[lane * pixel_stride] : 0.0f;
        out[lane] = x;
        max_logit[lane] = x > max_logit[lane] ? x : max_logit[lane];
        any_nan |= static_cast<uint32_t>(x != x);
      }
    }
    return any_nan != 0;
  }

  // sum_exp[lane] = sum over classes of exp(values - max).
  static BCE_ALWAYS_INLINE void SumExps(int64_t classes, BlockScratch& scratch) {
    float* __restrict values = scratch.values.data();
    float sums[kBlockLanes] = {};
    for (int64_t c = 0; c < classes; ++c) {
      float* __restrict row = values + c * kBlockLanes;
      for (int lane = 0; lane < kBlockLanes; ++lane) {
        sums[lane] += ExpOfNonPositive(row[lane] - scratch.max_logit[lane]);
      }
    }
    for (int lane = 0; lane < kBlockLanes; ++lane) scratch.sum_exp[lane] = sums[lane];
  }

  // per_lane = log(sum_exp).
  static BCE_ALWAYS_INLINE void LogOfSums(BlockScratch& scratch) {
    for (int lane = 0; lane < kBlockLanes; ++lane) scratch.per_lane[lane] = LogOfPositive(scratch.sum_exp[lane]);
  }

  static BCE_ALWAYS_INLINE void PixelLosses(const RunPlan& plan, const float* logits, int64_t first_pixel,
                                            int64_t count, const LossInputs& in, bool block_has_nan,
                                            const BlockScratch& scratch, float* losses, uint32_t* histogram,
                                            PassCounts& counts) {
    ScalarPixelLosses(plan, logits, first_pixel, count, in, block_has_nan, scratch, losses, histogram, counts);
  }
};

#if defined(BCE_AVX2_PATH)
// The same operations on full blocks of spatial inputs (count == kBlockLanes, pixel stride 1). Not forced inline:
// the block functions that call them are compiled for the default target, into which GCC inlines no AVX2 code.
struct Avx2BlockMath {
  static BCE_TARGET_AVX2 bool Load(const float* logits, int64_t /*count*/, int64_t classes, int64_t /*pixel_stride*/,
                                   int64_t class_stride, BlockScratch& scratch) {
    float* values = scratch.values.data();
    __m256 max0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 max1 = max0;
    __m256 nan = _mm256_setzero_ps();
    for (int64_t c = 0; c < classes; ++c) {
      const float* row = logits + c * class_stride;
      // Into L2, not L1: the C rows of a block are one row stride apart, so their lines fall in one L1 set
      // (more rows than ways), and lines prefetched into L1 were evicted before use (pass 1 ~8 % faster so).
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats), _MM_HINT_T1);  // never faults
      const __m256 x0 = _mm256_loadu_ps(row);
      const __m256 x1 = _mm256_loadu_ps(row + 8);
      _mm256_storeu_ps(values + c * kBlockLanes, x0);
      _mm256_storeu_ps(values + c * kBlockLanes + 8, x1);
      // max(x, m) keeps m when x is NaN, as the generic x > m ? x : m does.
      max0 = _mm256_max_ps(x0, max0);
      max1 = _mm256_max_ps(x1, max1);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(x0, x1, _CMP_UNORD_Q));
    }
    _mm256_storeu_ps(scratch.max_logit, max0);
    _mm256_storeu_ps(scratch.max_logit + 8, max1);
    return _mm256_movemask_ps(nan) != 0;
  }

  // The sums with Exp8ForSum (as accurate as Cephes expf's for a sum, not bit for bit). One 8-lane half at a time:
  // with both halves in one loop the two accumulators and maxima did not fit in the 16 registers beside the exp's
  // constants, and GCC kept them in memory, on the loop's dependency chain.
  static BCE_TARGET_AVX2 void SumExps(int64_t classes, BlockScratch& scratch) {
    const float* values = scratch.values.data();
    for (int half = 0; half < 2; ++half) {
      const __m256 max = _mm256_loadu_ps(scratch.max_logit + half * 8);
      __m256 sum = _mm256_setzero_ps();
      for (int64_t c = 0; c < classes; ++c) {
        const __m256 x = _mm256_loadu_ps(values + c * kBlockLanes + half * 8);
        sum = _mm256_add_ps(sum, Exp8ForSum(_mm256_sub_ps(x, max)));
      }
      _mm256_storeu_ps(scratch.sum_exp + half * 8, sum);
    }
  }

  static BCE_TARGET_AVX2 void LogOfSums(BlockScratch& scratch) {
    _mm256_storeu_ps(scratch.per_lane, Log8OfPositive(_mm256_loadu_ps(scratch.sum_exp)));
    _mm256_storeu_ps(scratch.per_lane + 8, Log8OfPositive(_mm256_loadu_ps(scratch.sum_exp + 8)));
  }

  // ScalarPixelLosses on 16 lanes at once (labels compared as int64, the label's logit and weight gathered);
  // blocks with a non-finite logit or maximum go to ScalarPixelLosses.
  static BCE_TARGET_AVX2 void PixelLosses(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                                          const LossInputs& in, bool block_has_nan, const BlockScratch& scratch,
                                          float* losses, uint32_t* histogram, PassCounts& counts) {
    const __m256 max0 = _mm256_loadu_ps(scratch.max_logit);
    const __m256 max1 = _mm256_loadu_ps(scratch.max_logit + 8);
    // max - max is NaN exactly when the maximum is +-inf (or NaN).
    const __m256 max_not_finite = _mm256_cmp_ps(_mm256_sub_ps(max0, max0), _mm256_sub_ps(max1, max1), _CMP_UNORD_Q);
    if (block_has_nan || _mm256_movemask_ps(max_not_finite) != 0) {
      return ScalarPixelLosses(plan, logits, first_pixel, count, in, block_has_nan, scratch, losses, histogram, counts);
    }
    const int64_t* target = in.target + first_pixel;
    const __m256i ignore = _mm256_set1_epi64x(in.ignore_index);
    const __m256i classes = _mm256_set1_epi64x(plan.classes());
    const __m256i minus_one = _mm256_set1_epi64x(-1);
    uint32_t valid_bits = 0;
    uint32_t out_of_range_bits = 0;
    alignas(32) uint32_t keys[kBlockLanes];
    for (int half = 0; half < 2; ++half) {
      // Eight int64 labels -> masks, then eight int32 labels (the low halves; only valid ones are used).
      __m256i valid64[2];
      __m256i labels64[2];
      for (int quarter = 0; quarter < 2; ++quarter) {
        const __m256i label = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(target + half * 8 + quarter * 4));
        const __m256i ignored = _mm256_cmpeq_epi64(label, ignore);
        const __m256i in_range =
            _mm256_and_si256(_mm256_cmpgt_epi64(label, minus_one), _mm256_cmpgt_epi64(classes, label));
        valid64[quarter] = _mm256_andnot_si256(ignored, in_range);
        const __m256i out_of_range = _mm256_andnot_si256(ignored, _mm256_xor_si256(in_range, minus_one));
        out_of_range_bits |= static_cast<uint32_t>(_mm256_movemask_pd(_mm256_castsi256_pd(out_of_range)))
                             << (half * 8 + quarter * 4);
        labels64[quarter] = label;
      }
      // Low dword of each int64 lane, in order: [a0 a1 a2 a3 b0 b1 b2 b3].
      const __m256i pick_low = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
      const __m256i label32 = _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(labels64[0], pick_low),
                                                        _mm256_permutevar8x32_epi32(labels64[1], pick_low), 0x20);
      const __m256i valid32 = _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(valid64[0], pick_low),
                                                        _mm256_permutevar8x32_epi32(valid64[1], pick_low), 0x20);
      const __m256 valid = _mm256_castsi256_ps(valid32);
      valid_bits |= static_cast<uint32_t>(_mm256_movemask_ps(valid)) << (half * 8);
      // values[label * 16 + lane]: the label's logit, loaded only for valid lanes.
      const __m256i lane = _mm256_setr_epi32(half * 8, half * 8 + 1, half * 8 + 2, half * 8 + 3, half * 8 + 4,
                                             half * 8 + 5, half * 8 + 6, half * 8 + 7);
      const __m256i index = _mm256_add_epi32(_mm256_slli_epi32(label32, 4), lane);
      const __m256 label_logit = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), scratch.values.data(), index, valid, 4);
      const __m256 max = half == 0 ? max0 : max1;
      __m256 loss = _mm256_add_ps(_mm256_sub_ps(max, label_logit), _mm256_loadu_ps(scratch.per_lane + half * 8));
      if (in.weight != nullptr) {
        loss = _mm256_mul_ps(loss, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), in.weight, label32, valid, 4));
      }
      // NaN (0 * inf weights) made canonical, then kIgnoredLoss where not valid.
      loss = _mm256_blendv_ps(loss, _mm256_set1_ps(kCanonicalNaN), _mm256_cmp_ps(loss, loss, _CMP_UNORD_Q));
      loss = _mm256_blendv_ps(_mm256_set1_ps(kIgnoredLoss), loss, valid);
      _mm256_storeu_ps(losses + first_pixel + half * 8, loss);
      _mm256_store_si256(reinterpret_cast<__m256i*>(keys + half * 8),
                         _mm256_srli_epi32(Key8(_mm256_castps_si256(loss)), kDigitBits));
    }
    counts.valid += __builtin_popcount(valid_bits);
    counts.out_of_range += __builtin_popcount(out_of_range_bits);
    if (histogram != nullptr) {
      for (uint32_t bits = valid_bits; bits != 0; bits &= bits - 1) ++histogram[keys[__builtin_ctz(bits)]];
    }
  }
};

// Avx2BlockMath with one 16-lane register per class row of the block (AVX-512): the same operations in the same
// order on each lane, so the losses, counts and histogram equal the AVX2 code's bit for bit, in about half the
// instructions. (The FMA pipes bound the sums; on CPUs that split 512-bit operations in two, the gain is the
// instructions not issued.)
struct Avx512BlockMath {
  static BCE_TARGET_AVX512 bool Load(const float* logits, int64_t /*count*/, int64_t classes, int64_t /*pixel_stride*/,
                                     int64_t class_stride, BlockScratch& scratch) {
    float* values = scratch.values.data();
    __m512 max = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __mmask16 nan = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const float* row = logits + c * class_stride;
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats), _MM_HINT_T1);  // as Avx2BlockMath
      const __m512 x = _mm512_loadu_ps(row);
      _mm512_storeu_ps(values + c * kBlockLanes, x);
      max = _mm512_max_ps(x, max);  // keeps max where x is NaN
      nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    }
    _mm512_storeu_ps(scratch.max_logit, max);
    return nan != 0;
  }

  static BCE_TARGET_AVX512 void SumExps(int64_t classes, BlockScratch& scratch) {
    const float* values = scratch.values.data();
    const __m512 max = _mm512_loadu_ps(scratch.max_logit);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < classes; ++c) {
      sum = _mm512_add_ps(sum, Exp16ForSum(_mm512_sub_ps(_mm512_loadu_ps(values + c * kBlockLanes), max)));
    }
    _mm512_storeu_ps(scratch.sum_exp, sum);
  }

  static BCE_TARGET_AVX512 void LogOfSums(BlockScratch& scratch) {
    _mm512_storeu_ps(scratch.per_lane, Log16OfPositive(_mm512_loadu_ps(scratch.sum_exp)));
  }

  static BCE_TARGET_AVX512 void PixelLosses(const RunPlan& plan, const float* logits, int64_t first_pixel,
                                            int64_t count, const LossInputs& in, bool block_has_nan,
                                            const BlockScratch& scratch, float* losses, uint32_t* histogram,
                                            PassCounts& counts) {
    const __m512 max = _mm512_loadu_ps(scratch.max_logit);
    // max - max is NaN exactly when the maximum is +-inf (or NaN).
    const __m512 max_zero = _mm512_sub_ps(max, max);
    if (block_has_nan || _mm512_cmp_ps_mask(max_zero, max_zero, _CMP_UNORD_Q) != 0) {
      return ScalarPixelLosses(plan, logits, first_pixel, count, in, block_has_nan, scratch, losses, histogram, counts);
    }
    const int64_t* target = in.target + first_pixel;
    const __m512i ignore = _mm512_set1_epi64(in.ignore_index);
    const __m512i classes = _mm512_set1_epi64(plan.classes());
    const __m512i minus_one = _mm512_set1_epi64(-1);
    __mmask16 valid = 0;
    __mmask16 out_of_range = 0;
    __m256i label32[2];
    for (int eighth = 0; eighth < 2; ++eighth) {
      const __m512i label = _mm512_loadu_si512(target + eighth * 8);
      const __mmask8 ignored = _mm512_cmpeq_epi64_mask(label, ignore);
      const __mmask8 in_range = _mm512_cmpgt_epi64_mask(label, minus_one) & _mm512_cmpgt_epi64_mask(classes, label);
      valid |= static_cast<__mmask16>(static_cast<__mmask8>(~ignored & in_range)) << (eighth * 8);
      out_of_range |= static_cast<__mmask16>(static_cast<__mmask8>(~ignored & ~in_range)) << (eighth * 8);
      label32[eighth] = _mm512_cvtepi64_epi32(label);  // the low halves; only valid ones are used
    }
    const __m512i labels = _mm512_inserti64x4(_mm512_castsi256_si512(label32[0]), label32[1], 1);
    // values[label * 16 + lane]: the label's logit, loaded only for valid lanes.
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i index = _mm512_add_epi32(_mm512_slli_epi32(labels, 4), lane);
    const __m512 label_logit = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, index, scratch.values.data(), 4);
    __m512 loss = _mm512_add_ps(_mm512_sub_ps(max, label_logit), _mm512_loadu_ps(scratch.per_lane));
    if (in.weight != nullptr) {
      loss = _mm512_mul_ps(loss, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, labels, in.weight, 4));
    }
    // NaN (0 * inf weights) made canonical, then kIgnoredLoss where not valid.
    loss = _mm512_mask_mov_ps(loss, _mm512_cmp_ps_mask(loss, loss, _CMP_UNORD_Q), _mm512_set1_ps(kCanonicalNaN));
    loss = _mm512_mask_mov_ps(_mm512_set1_ps(kIgnoredLoss), valid, loss);
    _mm512_storeu_ps(losses + first_pixel, loss);
    counts.valid += __builtin_popcount(valid);
    counts.out_of_range += __builtin_popcount(out_of_range);
    if (histogram != nullptr) {
      alignas(64) uint32_t keys[kBlockLanes];
      _mm512_store_si512(keys, _mm512_srli_epi32(Key16(_mm512_castps_si512(loss)), kDigitBits));
      for (uint32_t bits = valid; bits != 0; bits &= bits - 1) ++histogram[keys[__builtin_ctz(bits)]];
    }
  }
};
#endif

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Forward pass 1: losses, the valid-pixel count and the histogram of the loss keys' top digit.

// One block's losses (kIgnoredLoss for ignored and out-of-range labels), its valid and out-of-range labels, and,
// unless `histogram` is null, the valid losses' top key digits. Counting here saves the separate pass over the
// labels that the reference path makes (CountPool).
template <class Math>
BCE_ALWAYS_INLINE void BlockLosses(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                                   const LossInputs& in, BlockScratch& scratch, float* losses, uint32_t* histogram,
                                   PassCounts& counts) {
  const bool block_has_nan =
      Math::Load(logits, count, plan.classes(), plan.pixel_stride(), plan.class_stride(), scratch);
  Math::SumExps(plan.classes(), scratch);
  Math::LogOfSums(scratch);
  Math::PixelLosses(plan, logits, first_pixel, count, in, block_has_nan, scratch, losses, histogram, counts);
}

// FullMath computes the full blocks of spatial inputs; GenericBlockMath the others.
template <class FullMath>
BCE_ALWAYS_INLINE void RunLossesBody(const RunPlan& plan, const PixelRun& run, const LossInputs& in,
                                     BlockScratch& scratch, float* losses, uint32_t* histogram, PassCounts& counts) {
  // A plain loop, not a lambda: a lambda would not inherit the AVX2 target of RunLossesAvx2.
  for (int64_t start = 0; start < run.length; start += kBlockLanes) {
    const int64_t count = std::min<int64_t>(kBlockLanes, run.length - start);
    const float* logits = in.logits + run.logit_offset + start * plan.pixel_stride();
    const int64_t first_pixel = run.first_pixel + start;
    if (plan.planar() && count == kBlockLanes) {
      BlockLosses<FullMath>(plan, logits, first_pixel, count, in, scratch, losses, histogram, counts);
    } else {
      BlockLosses<GenericBlockMath>(plan, logits, first_pixel, count, in, scratch, losses, histogram, counts);
    }
  }
}

#if defined(BCE_AVX2_PATH)
BCE_TARGET_AVX512 void RunLossesAvx512(const RunPlan& plan, const PixelRun& run, const LossInputs& in,
                                       BlockScratch& scratch, float* losses, uint32_t* histogram, PassCounts& counts) {
  RunLossesBody<Avx512BlockMath>(plan, run, in, scratch, losses, histogram, counts);
}

BCE_TARGET_AVX2 void RunLossesAvx2(const RunPlan& plan, const PixelRun& run, const LossInputs& in,
                                   BlockScratch& scratch, float* losses, uint32_t* histogram, PassCounts& counts) {
  RunLossesBody<Avx2BlockMath>(plan, run, in, scratch, losses, histogram, counts);
}
#endif

// Writes the run's losses and counts (see BlockLosses).
void RunLosses(const RunPlan& plan, const PixelRun& run, const LossInputs& in, BlockScratch& scratch, float* losses,
               uint32_t* histogram, PassCounts& counts) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx512()) return RunLossesAvx512(plan, run, in, scratch, losses, histogram, counts);
  if (CpuHasAvx2()) return RunLossesAvx2(plan, run, in, scratch, losses, histogram, counts);
#endif
  RunLossesBody<GenericBlockMath>(plan, run, in, scratch, losses, histogram, counts);
}

// Writes every pixel's loss and counts the pool; the histogram only when `with_histogram`.
LossPassResult ComputeLosses(const RunPlan& plan, const LossInputs& in, bool with_histogram, float* losses) {
  LossPassResult result;
  result.top_histogram.assign(with_histogram ? kDigitBuckets : 0, 0);
  std::mutex lock;
  ParallelForPieces(0, plan.runs(), plan.grain(), [&](PieceQueue& queue) {
    BlockScratch scratch(plan.classes());
    std::vector<uint32_t> local(with_histogram ? kDigitBuckets : 0, 0);
    uint32_t* histogram = with_histogram ? local.data() : nullptr;
    PassCounts counts;
    int64_t begin = 0, end = 0;
    while (queue.Take(&begin, &end)) {
      for (int64_t r = begin; r < end; ++r) RunLosses(plan, plan.run(r), in, scratch, losses, histogram, counts);
    }
    std::lock_guard<std::mutex> guard(lock);
    for (size_t b = 0; b < local.size(); ++b) result.top_histogram[b] += local[b];
    result.valid += counts.valid;
    result.out_of_range += counts.out_of_range;
    result.non_finite += counts.non_finite;
  });
  return result;
}

}  // namespace fused
}  // namespace bce
