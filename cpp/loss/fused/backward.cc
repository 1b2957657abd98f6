#include "loss/fused/backward.h"

#include "loss/cpu_dispatch.h"
#include "loss/fused/math.h"
#include "loss/fused/parallel.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace bce {
namespace fused {
namespace {

// Backward works on chunks of kChunkPixels consecutive pixels of a run: it lists the chunk's selected pixels,
// copies their logits into a compact class-major array (ChunkScratch::values, rows of kChunkPixels), turns them
// into gradient values there (exps for the selected pixels only, a quarter of them at p = 0.25), and writes each
// class row of the chunk back in place, zeros between. The compact array (19 KB for 19 classes) stays in L1.
constexpr int64_t kChunkPixels = 256;

struct ChunkScratch {
  // +8 floats per row: the AVX2 compaction stores whole 8-float vectors past the last selected pixel.
  explicit ChunkScratch(int64_t classes) : values(classes * kRowStride) {}
  static constexpr int64_t kRowStride = kChunkPixels + 8;
  std::vector<float> values;  // values[c * kRowStride + i] for the chunk's i-th selected pixel
  float max_logit[kChunkPixels];
  float sum_exp[kChunkPixels];
  // scale * w[y] / sum_exp, or 1 for pixels on the exact path (+8: whole-vector loads past the last one)
  float factor[kChunkPixels + 8] = {};
  int32_t offset[kChunkPixels + 16];    // the i-th selected pixel's offset in the chunk (+16: whole-vector stores)
  uint8_t half_mask[kChunkPixels / 8];  // selected pixels of each 8 consecutive ones, bit j for pixel j
};

// Lists the chunk's selected pixels (offset, half_mask); returns how many there are.
BCE_ALWAYS_INLINE int64_t ListSelected(const float* __restrict losses, int64_t length, uint32_t threshold_key,
                                       ChunkScratch& scratch) {
  int64_t count = 0;
  for (int64_t half = 0; half * 8 < kChunkPixels; ++half) scratch.half_mask[half] = 0;
  for (int64_t j = 0; j < length; ++j) {
    const bool selected = Key(losses[j]) >= threshold_key;
    scratch.offset[count] = static_cast<int32_t>(j);
    count += selected ? 1 : 0;  // branch-free: selection is random at the pixel level
    scratch.half_mask[j >> 3] |= static_cast<uint8_t>((selected ? 1u : 0u) << (j & 7));
  }
  return count;
}

// The gradient column of one selected pixel with libm, for pixels with non-finite logits, written into the
// chunk's values in place of its exps (column i); its factor becomes 1.
void ExactPixelGradient(const float* logits, int64_t classes, int64_t class_stride, int64_t label, float scale,
                        int64_t i, ChunkScratch& scratch) {
  const float lse = ExactLogSumExp(logits, classes, class_stride);
  for (int64_t c = 0; c < classes; ++c) {
    const float softmax = std::exp(logits[c * class_stride] - lse);
    scratch.values[c * ChunkScratch::kRowStride + i] = scale * (softmax - (c == label ? 1.0f : 0.0f));
  }
  scratch.factor[i] = 1.0f;
}

// Turns the compacted logits of the chunk's `count` selected pixels into gradient values:
// (softmax - onehot) * scale * w[y] = (exp - sum * onehot) * factor, with factor = scale * w[y] / sum.
BCE_ALWAYS_INLINE void SelectedGradients(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                                         const GradientInputs& in, ChunkScratch& scratch) {
  const int64_t classes = plan.classes();
  constexpr int64_t stride = ChunkScratch::kRowStride;
  float* __restrict values = scratch.values.data();
  float* __restrict max_logit = scratch.max_logit;
  float* __restrict sum_exp = scratch.sum_exp;
  float* __restrict factor = scratch.factor;
  // Loops over the selected pixels: they vectorise.
  for (int64_t i = 0; i < count; ++i) max_logit[i] = -std::numeric_limits<float>::infinity();
  uint32_t any_nan = 0;
  for (int64_t c = 0; c < classes; ++c) {
    const float* __restrict row = values + c * stride;
    for (int64_t i = 0; i < count; ++i) {
      const float x = row[i];
      max_logit[i] = x > max_logit[i] ? x : max_logit[i];
      any_nan |= static_cast<uint32_t>(x != x);
    }
  }
  for (int64_t i = 0; i < count; ++i) sum_exp[i] = 0.0f;
  for (int64_t c = 0; c < classes; ++c) {
    float* __restrict row = values + c * stride;
    for (int64_t i = 0; i < count; ++i) {
      const float e = ExpOfNonPositive(row[i] - max_logit[i]);
      row[i] = e;
      sum_exp[i] += e;
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    const int64_t pixel = first_pixel + scratch.offset[i];
    const int64_t label = in.loss.target[pixel];
    const float scale = in.loss.weight != nullptr ? in.scale * in.loss.weight[label] : in.scale;
    // A NaN logit or a non-finite maximum: the fast exp maps both to 0, so this pixel takes libm.
    if (any_nan != 0 || !std::isfinite(max_logit[i])) {
      ExactPixelGradient(logits + scratch.offset[i] * plan.pixel_stride(), classes, plan.class_stride(), label, scale,
                         i, scratch);
      continue;
    }
    values[label * stride + i] -= sum_exp[i];
    factor[i] = scale / sum_exp[i];
  }
  for (int64_t c = 0; c < classes; ++c) {
    float* __restrict row = values + c * stride;
    for (int64_t i = 0; i < count; ++i) row[i] *= factor[i];
  }
}

// The scalar step of the vector Gradients between the exps and the scaling, for the chunk's selected pixels i to
// i + lanes - 1, whose sums of exps are in `sums`: the label's exp becomes exp - sum, and factor = scale * w[y] /
// sum; the pixels flagged in `exact` (bit per lane) take libm instead.
BCE_ALWAYS_INLINE void LabelsAndFactors(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t i,
                                        int64_t lanes, uint32_t exact, const float* sums, const GradientInputs& in,
                                        ChunkScratch& scratch) {
  float* values = scratch.values.data();
  for (int64_t lane = 0; lane < lanes; ++lane) {
    const int64_t j = i + lane;
    const int64_t pixel = first_pixel + scratch.offset[j];
    const int64_t label = in.loss.target[pixel];
    const float scale = in.loss.weight != nullptr ? in.scale * in.loss.weight[label] : in.scale;
    if ((exact >> lane) & 1) {
      ExactPixelGradient(logits + scratch.offset[j] * plan.pixel_stride(), plan.classes(), plan.class_stride(), label,
                         scale, j, scratch);
      continue;
    }
    values[label * ChunkScratch::kRowStride + j] -= sums[lane];
    scratch.factor[j] = scale / sums[lane];
  }
}

// Copying the selected pixels' logits in and the gradient rows out: plain loops (GenericChunkCopy, any input),
// and AVX2 permutes on whole cache lines (Avx2ChunkCopy, spatial inputs whose chunk is whole 16-pixel blocks).
// Gather returns whether any logit of the chunk, selected or not, is NaN or infinite (x - x is then NaN).
struct GenericChunkCopy {
  static BCE_ALWAYS_INLINE int64_t List(const float* losses, int64_t length, uint32_t threshold_key,
                                        ChunkScratch& scratch) {
    return ListSelected(losses, length, threshold_key, scratch);
  }

  static BCE_ALWAYS_INLINE bool Gather(const RunPlan& plan, const float* logits, int64_t length, int64_t count,
                                       bool check_finite, ChunkScratch& scratch) {
    uint32_t non_finite = 0;
    for (int64_t c = 0; c < plan.classes(); ++c) {
      const float* __restrict row = logits + c * plan.class_stride();
      float* __restrict out = scratch.values.data() + c * ChunkScratch::kRowStride;
      for (int64_t i = 0; i < count; ++i) out[i] = row[scratch.offset[i] * plan.pixel_stride()];
      if (!check_finite) continue;
      for (int64_t j = 0; j < length; ++j) {
        const float x = row[j * plan.pixel_stride()];
        non_finite |= static_cast<uint32_t>((x - x) != (x - x));
      }
    }
    return non_finite != 0;
  }

  static BCE_ALWAYS_INLINE void Gradients(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                                          const GradientInputs& in, ChunkScratch& scratch) {
    SelectedGradients(plan, logits, first_pixel, count, in, scratch);
  }

  static BCE_ALWAYS_INLINE void Scatter(const RunPlan& plan, int64_t length, int64_t count, const ChunkScratch& scratch,
                                        float* grad) {
    for (int64_t c = 0; c < plan.classes(); ++c) {
      float* __restrict row = grad + c * plan.class_stride();
      const float* __restrict in = scratch.values.data() + c * ChunkScratch::kRowStride;
      for (int64_t j = 0; j < length; ++j) row[j * plan.pixel_stride()] = 0.0f;
      for (int64_t i = 0; i < count; ++i) row[scratch.offset[i] * plan.pixel_stride()] = in[i];
    }
  }
};

#if defined(BCE_AVX2_PATH)
// For each 8-bit mask m: kCompress[m] lists the set lanes first (permutevar8x32 indices that pack them), and
// kExpand[m][lane] is the rank of `lane` among the set lanes (the indices that unpack them).
struct PermuteTables {
  int32_t compress[256][8];
  int32_t expand[256][8];
  PermuteTables() {
    for (int m = 0; m < 256; ++m) {
      int rank = 0;
      for (int lane = 0; lane < 8; ++lane) {
        compress[m][lane] = 0;
        expand[m][lane] = 0;
      }
      for (int lane = 0; lane < 8; ++lane) {
        if (m & (1 << lane)) {
          compress[m][rank] = lane;
          expand[m][lane] = rank;
          ++rank;
        }
      }
    }
  }
};
const PermuteTables& Permutes() {
  static const PermuteTables tables;
  return tables;
}

struct Avx2ChunkCopy {
  // ListSelected, eight pixels at a time: the keys compared as unsigned (signed after flipping the top bit), the
  // selected offsets packed with the compress table.
  static BCE_TARGET_AVX2 int64_t List(const float* losses, int64_t length, uint32_t threshold_key,
                                      ChunkScratch& scratch) {
    const PermuteTables& tables = Permutes();
    const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i threshold = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(threshold_key)), sign);
    int64_t count = 0;
    for (int64_t j = 0; j < length; j += 8) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(losses + j));
      const __m256i key = Key8(bits);
      // key >= threshold (unsigned) <=> !(threshold > key) on the sign-flipped values.
      const __m256i below = _mm256_cmpgt_epi32(threshold, _mm256_xor_si256(key, sign));
      const int mask = ~_mm256_movemask_ps(_mm256_castsi256_ps(below)) & 0xff;
      scratch.half_mask[j >> 3] = static_cast<uint8_t>(mask);
      const __m256i lanes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.compress[mask]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(scratch.offset + count),
                          _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int>(j))));
      count += __builtin_popcount(mask);
    }
    return count;
  }

  // Block by block, as the forward pass reads: each 16-pixel block takes one line of every class row (vector
  // loads, with the forward pass's prefetch), and the selected lanes are packed. (Row by row over the chunk was
  // ~10 % slower on a 2-core AMD EPYC: each row then restarts a short stream.) The look for non-finite logits is left
  // out when pass 1 found none (GradientInputs::all_finite): a third of the loop's instructions; and then blocks
  // without a selected pixel are not read at all. With random logits nearly every block holds one (1 % do not at
  // p = 0.25), but in real label maps the hard pixels cluster (boundaries, hard regions): on logits whose hard
  // pixels lie in bands, backward at 8x19x512x1024 took 20.4 ms instead of 24.5.
  static BCE_TARGET_AVX2 bool Gather(const RunPlan& plan, const float* logits, int64_t length, int64_t /*count*/,
                                     bool check_finite, ChunkScratch& scratch) {
    return check_finite ? GatherLines<true>(plan, logits, length, scratch)
                        : GatherLines<false>(plan, logits, length, scratch);
  }

  template <bool kCheckFinite>
  static BCE_TARGET_AVX2 bool GatherLines(const RunPlan& plan, const float* logits, int64_t length,
                                          ChunkScratch& scratch) {
    const PermuteTables& tables = Permutes();
    const int64_t classes = plan.classes();
    const int64_t class_stride = plan.class_stride();
    float* values = scratch.values.data();
    __m256 non_finite = _mm256_setzero_ps();
    int64_t position = 0;
    for (int64_t start = 0; start < length; start += kBlockLanes) {
      const int low = scratch.half_mask[start / 8];
      const int high = scratch.half_mask[start / 8 + 1];
      const int low_count = __builtin_popcount(low);
      const int high_count = __builtin_popcount(high);
      if (!kCheckFinite && (low | high) == 0) continue;  // no selected pixel: nothing to load (see Gather)
      const __m256i pack_low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.compress[low]));
      const __m256i pack_high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.compress[high]));
      for (int64_t c = 0; c < classes; ++c) {
        const float* row = logits + c * class_stride + start;
        _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats), _MM_HINT_T0);  // never faults
        const __m256 low_logits = _mm256_loadu_ps(row);
        const __m256 high_logits = _mm256_loadu_ps(row + 8);
        if (kCheckFinite) {
          const __m256 low_zero = _mm256_sub_ps(low_logits, low_logits);  // NaN for NaN and +-inf
          non_finite =
              _mm256_or_ps(non_finite, _mm256_cmp_ps(low_zero, _mm256_sub_ps(high_logits, high_logits), _CMP_UNORD_Q));
        }
        float* out = values + c * ChunkScratch::kRowStride + position;
        _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(low_logits, pack_low));
        _mm256_storeu_ps(out + low_count, _mm256_permutevar8x32_ps(high_logits, pack_high));
      }
      position += low_count + high_count;
    }
    return _mm256_movemask_ps(non_finite) != 0;
  }

  // SelectedGradients eight selected pixels at a time, with Exp8OfNonPositive and no scalar remainder: the rows
  // have room for a whole vector past the last selected pixel, and what is computed there is never read.
  static BCE_TARGET_AVX2 void Gradients(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                                        const GradientInputs& in, ChunkScratch& scratch) {
    const int64_t classes = plan.classes();
    constexpr int64_t stride = ChunkScratch::kRowStride;
    float* values = scratch.values.data();
    const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t i = 0; i < count; i += 8) {
      const int64_t lanes = std::min<int64_t>(8, count - i);
      __m256 max = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      __m256 nan = _mm256_setzero_ps();
      for (int64_t c = 0; c < classes; ++c) {
        const __m256 x = _mm256_loadu_ps(values + c * stride + i);
        max = _mm256_max_ps(x, max);  // keeps max where x is NaN, as the plain loop does
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
      }
      __m256 sum = _mm256_setzero_ps();
      for (int64_t c = 0; c < classes; ++c) {
        float* row = values + c * stride + i;
        const __m256 e = Exp8OfNonPositive(_mm256_sub_ps(_mm256_loadu_ps(row), max));
        _mm256_storeu_ps(row, e);
        sum = _mm256_add_ps(sum, e);
      }
      // Pixels with a NaN logit or a non-finite maximum take libm (only when pass 1 saw such logits; the lanes
      // past `count` hold stale floats and are left out).
      const __m256 live =
          _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(lanes)), lane_index));
      const __m256 max_not_finite = _mm256_cmp_ps(_mm256_sub_ps(max, max), _mm256_setzero_ps(), _CMP_UNORD_Q);
      const int exact = _mm256_movemask_ps(_mm256_and_ps(live, _mm256_or_ps(nan, max_not_finite)));
      alignas(32) float sums[8];
      _mm256_store_ps(sums, sum);
      LabelsAndFactors(plan, logits, first_pixel, i, lanes, static_cast<uint32_t>(exact), sums, in, scratch);
      const __m256 factor = _mm256_loadu_ps(scratch.factor + i);
      for (int64_t c = 0; c < classes; ++c) {
        float* row = values + c * stride + i;
        _mm256_storeu_ps(row, _mm256_mul_ps(_mm256_loadu_ps(row), factor));
      }
    }
  }

  // Block by block too: each block's line of every class row is assembled in registers and written with
  // non-temporal stores when aligned (the gradient is not read again here, so the stores skip reading each
  // destination line first).
  static BCE_TARGET_AVX2 void Scatter(const RunPlan& plan, int64_t length, int64_t /*count*/,
                                      const ChunkScratch& scratch, float* grad) {
    const PermuteTables& tables = Permutes();
    const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const int64_t classes = plan.classes();
    const int64_t class_stride = plan.class_stride();
    const bool aligned = (reinterpret_cast<uintptr_t>(grad) & 31) == 0 && (class_stride % 8) == 0;
    const float* values = scratch.values.data();
    int64_t position = 0;
    for (int64_t start = 0; start < length; start += kBlockLanes) {
      const int low = scratch.half_mask[start / 8];
      const int high = scratch.half_mask[start / 8 + 1];
      const int low_count = __builtin_popcount(low);
      const __m256i unpack_low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.expand[low]));
      const __m256i unpack_high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.expand[high]));
      const __m256 keep_low =
          _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(low), lane_bits), lane_bits));
      const __m256 keep_high =
          _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(high), lane_bits), lane_bits));
      for (int64_t c = 0; c < classes; ++c) {
        const float* in = values + c * ChunkScratch::kRowStride + position;
        // Lanes outside the masks read stale floats that the masks then clear.
        const __m256 out_low = _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(in), unpack_low), keep_low);
        const __m256 out_high =
            _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(in + low_count), unpack_high), keep_high);
        float* row = grad + c * class_stride + start;
        if (aligned) {
          _mm256_stream_ps(row, out_low);
          _mm256_stream_ps(row + 8, out_high);
        } else {
          _mm256_storeu_ps(row, out_low);
          _mm256_storeu_ps(row + 8, out_high);
        }
      }
      position += low_count + __builtin_popcount(high);
    }
  }
};

// Avx2ChunkCopy with 16-lane registers (AVX-512): a block's selected lanes are packed and unpacked by compress and
// expand instead of permute tables, each line is written with one 64-byte non-temporal store, and the gradients
// take 16 selected pixels at a time with the same arithmetic, so the values equal the AVX2 code's bit for bit.
struct Avx512ChunkCopy {
  static BCE_TARGET_AVX512 int64_t List(const float* losses, int64_t length, uint32_t threshold_key,
                                        ChunkScratch& scratch) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i threshold = _mm512_set1_epi32(static_cast<int>(threshold_key));
    int64_t count = 0;
    for (int64_t j = 0; j < length; j += kBlockLanes) {
      const __m512i key = Key16(_mm512_loadu_si512(losses + j));
      const __mmask16 selected = _mm512_cmpge_epu32_mask(key, threshold);
      scratch.half_mask[j >> 3] = static_cast<uint8_t>(selected);
      scratch.half_mask[(j >> 3) + 1] = static_cast<uint8_t>(selected >> 8);
      // Whole-vector store: offset has room for 16 past the last selected pixel.
      _mm512_storeu_si512(
          scratch.offset + count,
          _mm512_maskz_compress_epi32(selected, _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(j)))));
      count += __builtin_popcount(selected);
    }
    return count;
  }

  static BCE_TARGET_AVX512 bool Gather(const RunPlan& plan, const float* logits, int64_t length, int64_t /*count*/,
                                       bool check_finite, ChunkScratch& scratch) {
    return check_finite ? GatherLines<true>(plan, logits, length, scratch)
                        : GatherLines<false>(plan, logits, length, scratch);
  }

  template <bool kCheckFinite>
  static BCE_TARGET_AVX512 bool GatherLines(const RunPlan& plan, const float* logits, int64_t length,
                                            ChunkScratch& scratch) {
    const int64_t classes = plan.classes();
    const int64_t class_stride = plan.class_stride();
    float* values = scratch.values.data();
    __mmask16 non_finite = 0;
    int64_t position = 0;
    for (int64_t start = 0; start < length; start += kBlockLanes) {
      const __mmask16 selected = BlockMask(scratch, start);
      if (!kCheckFinite && selected == 0) continue;  // no selected pixel: nothing to load (see Avx2ChunkCopy)
      for (int64_t c = 0; c < classes; ++c) {
        const float* row = logits + c * class_stride + start;
        _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats), _MM_HINT_T0);  // never faults
        const __m512 x = _mm512_loadu_ps(row);
        if (kCheckFinite) non_finite |= _mm512_fpclass_ps_mask(x, 0x99);  // NaN (quiet, signalling), +-inf
        _mm512_storeu_ps(values + c * ChunkScratch::kRowStride + position, _mm512_maskz_compress_ps(selected, x));
      }
      position += __builtin_popcount(selected);
    }
    return non_finite != 0;
  }

  // Avx2ChunkCopy::Gradients, 16 selected pixels at a time.
  static BCE_TARGET_AVX512 void Gradients(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                                          const GradientInputs& in, ChunkScratch& scratch) {
    const int64_t classes = plan.classes();
    constexpr int64_t stride = ChunkScratch::kRowStride;
    float* values = scratch.values.data();
    for (int64_t i = 0; i < count; i += 16) {
      const int64_t lanes = std::min<int64_t>(16, count - i);
      __m512 max = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      __mmask16 nan = 0;
      for (int64_t c = 0; c < classes; ++c) {
        const __m512 x = _mm512_loadu_ps(values + c * stride + i);
        max = _mm512_max_ps(x, max);
        nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
      }
      __m512 sum = _mm512_setzero_ps();
      for (int64_t c = 0; c < classes; ++c) {
        float* row = values + c * stride + i;
        const __m512 e = Exp16OfNonPositive(_mm512_sub_ps(_mm512_loadu_ps(row), max));
        _mm512_storeu_ps(row, e);
        sum = _mm512_add_ps(sum, e);
      }
      const __m512 max_zero = _mm512_sub_ps(max, max);
      const __mmask16 live = static_cast<__mmask16>((uint32_t{1} << lanes) - 1);
      const uint32_t exact = live & (nan | _mm512_cmp_ps_mask(max_zero, max_zero, _CMP_UNORD_Q));
      alignas(64) float sums[16];
      _mm512_store_ps(sums, sum);
      LabelsAndFactors(plan, logits, first_pixel, i, lanes, exact, sums, in, scratch);
      const __m512 factor = _mm512_loadu_ps(scratch.factor + i);
      for (int64_t c = 0; c < classes; ++c) {
        float* row = values + c * stride + i;
        _mm512_storeu_ps(row, _mm512_mul_ps(_mm512_loadu_ps(row), factor));
      }
    }
  }

  static BCE_TARGET_AVX512 void Scatter(const RunPlan& plan, int64_t length, int64_t /*count*/,
                                        const ChunkScratch& scratch, float* grad) {
    const int64_t classes = plan.classes();
    const int64_t class_stride = plan.class_stride();
    // Whole lines when the rows are 64-byte aligned; else two 32-byte halves, or plain stores.
    const uintptr_t address = reinterpret_cast<uintptr_t>(grad);
    const bool lines = (address & 63) == 0 && (class_stride % 16) == 0;
    const bool halves = (address & 31) == 0 && (class_stride % 8) == 0;
    const float* values = scratch.values.data();
    int64_t position = 0;
    for (int64_t start = 0; start < length; start += kBlockLanes) {
      const __mmask16 selected = BlockMask(scratch, start);
      for (int64_t c = 0; c < classes; ++c) {
        // Lanes not selected are zero.
        const __m512 out =
            _mm512_maskz_expand_ps(selected, _mm512_loadu_ps(values + c * ChunkScratch::kRowStride + position));
        float* row = grad + c * class_stride + start;
        if (lines) {
          _mm512_stream_ps(row, out);
        } else if (halves) {
          _mm256_stream_ps(row, _mm512_castps512_ps256(out));
          _mm256_stream_ps(row + 8, _mm512_extractf32x8_ps(out, 1));
        } else {
          _mm512_storeu_ps(row, out);
        }
      }
      position += __builtin_popcount(selected);
    }
  }

  // The selected lanes of the block of 16 pixels at `start` (a multiple of 16).
  static BCE_TARGET_AVX512 __mmask16 BlockMask(const ChunkScratch& scratch, int64_t start) {
    return static_cast<__mmask16>(scratch.half_mask[start / 8] | (scratch.half_mask[start / 8 + 1] << 8));
  }
};
#endif

// Orders the non-temporal stores of this thread before the parallel region ends, or before
// plain stores to the same lines.
void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// PyTorch's gradient for a pixel that is not selected (ignored, or not among the k) is 0 * (its softmax), which
// is NaN when its log-softmax is NaN: a NaN or +inf logit, or every logit -inf. Those columns get NaN here too,
// for parity (the reference path and PyTorch give the same). Only chunks with a non-finite logit come here.
void UnselectedNaNColumns(const RunPlan& plan, const float* logits, int64_t length, const float* losses,
                          uint32_t threshold_key, float* grad) {
  StreamFence();  // the chunk's non-temporal stores land before these plain ones
  for (int64_t j = 0; j < length; ++j) {
    if (Key(losses[j]) >= threshold_key) continue;  // selected: its column is already right
    const float* column = logits + j * plan.pixel_stride();
    if (!std::isnan(ExactLogSumExp(column, plan.classes(), plan.class_stride()))) continue;
    for (int64_t c = 0; c < plan.classes(); ++c) {
      grad[j * plan.pixel_stride() + c * plan.class_stride()] = kCanonicalNaN;
    }
  }
}

// Asks for the next chunk's logit lines (into L2) before the gradient arithmetic, which reads and writes only the
// chunk's scratch: memory is otherwise idle while it runs. Backward at 8x19x512x1024, 2 threads, calls alternated in
// one process: 3-7 % faster in each of 7 runs. Spatial inputs whose next chunk is whole lines of the same run only;
// only the lines Gather will load: those of blocks with a selected pixel, unless every line is read
// (`every_line`: the look for non-finite logits).
BCE_ALWAYS_INLINE void PrefetchNextChunk(const RunPlan& plan, const PixelRun& run, int64_t start, const float* logits,
                                         const GradientInputs& in, int64_t next_pixel, bool every_line) {
  if (start + 2 * kChunkPixels > run.length) return;
  const float* next = logits + kChunkPixels;
  const float* losses = in.losses + next_pixel;
  for (int64_t line = 0; line < kChunkPixels; line += kBlockLanes) {
    if (!every_line) {
      uint32_t selected = 0;
      for (int64_t j = 0; j < kBlockLanes; ++j) selected |= Key(losses[line + j]) >= in.threshold_key ? 1u : 0u;
      if (selected == 0) continue;
    }
    for (int64_t c = 0; c < plan.classes(); ++c) {
#if defined(__GNUC__) || defined(__clang__)
      __builtin_prefetch(next + c * plan.class_stride() + line, 0, 2);  // never faults
#endif
    }
  }
}

// Copy: how full chunks of spatial inputs are gathered and scattered; GenericChunkCopy does the others.
template <class Copy>
BCE_ALWAYS_INLINE void RunGradientBody(const RunPlan& plan, const PixelRun& run, const GradientInputs& in,
                                       ChunkScratch& scratch, float* grad) {
  // A plain loop, not a lambda: a lambda would not inherit the AVX2 target of RunGradientAvx2.
  for (int64_t start = 0; start < run.length; start += kChunkPixels) {
    const int64_t length = std::min<int64_t>(kChunkPixels, run.length - start);
    const int64_t offset = run.logit_offset + start * plan.pixel_stride();
    const int64_t first_pixel = run.first_pixel + start;
    const float* logits = in.loss.logits + offset;
    const bool whole_lines = plan.planar() && length % kBlockLanes == 0;
    const int64_t count = whole_lines
                              ? Copy::List(in.losses + first_pixel, length, in.threshold_key, scratch)
                              : GenericChunkCopy::List(in.losses + first_pixel, length, in.threshold_key, scratch);
    // Every logit is read, selected or not, so that unselected pixels with non-finite logits are found (unless pass
    // 1 saw none).
    const bool check_finite = !in.all_finite;
    const bool non_finite = whole_lines ? Copy::Gather(plan, logits, length, count, check_finite, scratch)
                                        : GenericChunkCopy::Gather(plan, logits, length, count, check_finite, scratch);
    if (whole_lines) PrefetchNextChunk(plan, run, start, logits, in, first_pixel + kChunkPixels, check_finite);
    if (count > 0) Copy::Gradients(plan, logits, first_pixel, count, in, scratch);
    if (whole_lines) {
      Copy::Scatter(plan, length, count, scratch, grad + offset);
    } else {
      GenericChunkCopy::Scatter(plan, length, count, scratch, grad + offset);
    }
    if (non_finite) {
      UnselectedNaNColumns(plan, logits, length, in.losses + first_pixel, in.threshold_key, grad + offset);
    }
  }
}

#if defined(BCE_AVX2_PATH)
BCE_TARGET_AVX512 void RunGradientAvx512(const RunPlan& plan, const PixelRun& run, const GradientInputs& in,
                                         ChunkScratch& scratch, float* grad) {
  RunGradientBody<Avx512ChunkCopy>(plan, run, in, scratch, grad);
}

BCE_TARGET_AVX2 void RunGradientAvx2(const RunPlan& plan, const PixelRun& run, const GradientInputs& in,
                                     ChunkScratch& scratch, float* grad) {
  RunGradientBody<Avx2ChunkCopy>(plan, run, in, scratch, grad);
}
#endif

// Writes the run's gradient: (softmax - onehot) * w[y] * scale for selected pixels, zeros elsewhere.
void RunGradient(const RunPlan& plan, const PixelRun& run, const GradientInputs& in, ChunkScratch& scratch,
                 float* grad) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx512()) return RunGradientAvx512(plan, run, in, scratch, grad);
  if (CpuHasAvx2()) return RunGradientAvx2(plan, run, in, scratch, grad);
#endif
  RunGradientBody<GenericChunkCopy>(plan, run, in, scratch, grad);
}

}  // namespace

void ComputeGradient(const RunPlan& plan, const GradientInputs& in, float* grad) {
  ParallelForPieces(0, plan.runs(), plan.grain(), [&](PieceQueue& queue) {
    ChunkScratch scratch(plan.classes());
    int64_t begin = 0, end = 0;
    while (queue.Take(&begin, &end)) {
      for (int64_t r = begin; r < end; ++r) RunGradient(plan, plan.run(r), in, scratch, grad);
    }
    StreamFence();
  });
}

}  // namespace fused
}  // namespace bce
