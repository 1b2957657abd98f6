#include "loss/fused/selection.h"

#include "loss/cpu_dispatch.h"
#include "loss/fused/math.h"
#include "loss/fused/parallel.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace bce {
namespace fused {
namespace {

// Pixels per selection block. Blocks are fixed (not per thread) so that ties are taken in pixel order and the
// double sums are added in the same order whatever the thread count.
constexpr int64_t kBlockPixels = int64_t{1} << 16;

// ---------------------------------------------------------------------------------------------------------------
// Forward pass 2: exactly the k largest losses, their sum, and a loss vector that backward can read the
// selection from.
//
// Pass 1 gave the histogram of the keys' top 16 bits, so the bucket holding the k-th largest key is known; one
// pass over the losses then sums every loss above that bucket (selected for sure) and lists the pixels inside it,
// the candidates (typically a small fraction: a bucket spans 1/128 of an octave). The exact k-th key
// (nth_element) and the ties are settled on the candidates alone. Selection is then simply
// Key(loss) >= threshold key: candidates below the threshold already fail it, and threshold ties that are not
// taken get kIgnoredLoss written over their loss, so backward needs neither a mask nor the tie rule.
//
// Ties are taken in pixel order, and the double sums are formed per fixed block of pixels and added in block
// order, so the result does not depend on the thread count.

struct BucketPick {
  uint32_t bucket = 0;
  int64_t above = 0;  // elements in higher buckets
};

// The bucket holding the `rank`-th largest element (rank >= 1) of a histogram, walking down from the top.
BucketPick PickBucket(const Histogram& histogram, int64_t rank) {
  int64_t above = 0;
  for (uint32_t b = static_cast<uint32_t>(histogram.size()); b-- > 0;) {
    const int64_t count = static_cast<int64_t>(histogram[b]);
    if (above + count >= rank) return {b, above};
    above += count;
  }
  TORCH_CHECK(false, "fused bootstrapped CE: selection found fewer than ", rank, " valid pixels (internal error)");
  return {};
}

int64_t BlockCount(int64_t pixels) { return (pixels + kBlockPixels - 1) / kBlockPixels; }

inline double WeightOf(const LossInputs& in, int64_t pixel) {
  return in.weight != nullptr ? static_cast<double>(in.weight[in.target[pixel]]) : 0.0;
}

// Settles the candidates (pixel indices in increasing order, among which `rank` of the k are still to be
// chosen): finds the threshold key, adds the selected candidates to `selection`, and overwrites the threshold ties
// that are not taken with kIgnoredLoss.
void SettleCandidates(const std::vector<int64_t>& candidates, int64_t rank, float* losses, const LossInputs& in,
                      Selection& selection) {
  TORCH_CHECK(rank >= 1 && static_cast<int64_t>(candidates.size()) >= rank,
              "fused bootstrapped CE: selection found fewer than ", rank, " candidates (internal error)");
  std::vector<uint32_t> keys(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) keys[i] = Key(losses[candidates[i]]);
  std::vector<uint32_t> ranked(keys);
  std::nth_element(ranked.begin(), ranked.begin() + (rank - 1), ranked.end(), std::greater<uint32_t>());
  const uint32_t threshold = ranked[rank - 1];
  int64_t above = 0;
  for (uint32_t key : keys) above += key > threshold ? 1 : 0;
  int64_t ties_to_take = rank - above;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const int64_t pixel = candidates[i];
    bool selected = keys[i] > threshold;
    if (keys[i] == threshold) {
      selected = ties_to_take > 0;
      ties_to_take -= selected ? 1 : 0;
      if (!selected) losses[pixel] = kIgnoredLoss;
    }
    if (selected) {
      selection.loss_sum += static_cast<double>(losses[pixel]);
      selection.weight_sum += WeightOf(in, pixel);
    }
  }
  selection.key = threshold;
}

// Small pools: every valid pixel is a candidate.
Selection SelectByPartition(float* losses, int64_t pixels, int64_t k, const LossInputs& in) {
  std::vector<int64_t> candidates;
  candidates.reserve(pixels);
  for (int64_t i = 0; i < pixels; ++i) {
    if (Key(losses[i]) != 0) candidates.push_back(i);  // 0: ignored pixel
  }
  Selection selection;
  SettleCandidates(candidates, k, losses, in, selection);
  return selection;
}

// What one block of pixels contributes: the sums of its losses above the candidate bucket, and its candidates.
struct BlockPart {
  double loss_sum = 0.0;
  double weight_sum = 0.0;
  std::vector<int64_t> candidates;
};

constexpr int kSumLanes = 8;

// One block of pass 2: adds the losses of [begin, end) whose top key digit is above `bucket` (and their weights)
// into the part's sums, and lists the pixels whose top digit equals it. The sums run in kSumLanes lanes, so that
// the loop vectorises and the additions do not wait on one another; selects, not branches (about p of the pixels
// are above, in no predictable order); the rare candidates are looked for lane by lane only in groups that have
// one.
BCE_ALWAYS_INLINE void SumAboveBucketBody(const float* __restrict losses, int64_t begin, int64_t end, uint32_t bucket,
                                          const LossInputs& in, BlockPart& part) {
  double loss_lanes[kSumLanes] = {};
  double weight_lanes[kSumLanes] = {};
  int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes) {
    uint32_t in_bucket = 0;
    for (int lane = 0; lane < kSumLanes; ++lane) {
      const float loss = losses[i + lane];
      const uint32_t digit = Key(loss) >> kDigitBits;
      // An integer select (a float one would be a branch): the loss itself above the bucket, else +0.
      const uint32_t keep = digit > bucket ? 0xffffffffu : 0u;
      loss_lanes[lane] += static_cast<double>(BitsToFloat(FloatToBits(loss) & keep));
      in_bucket |= digit == bucket ? 1u : 0u;
    }
    if (in_bucket != 0) {
      for (int lane = 0; lane < kSumLanes; ++lane) {
        if ((Key(losses[i + lane]) >> kDigitBits) == bucket) part.candidates.push_back(i + lane);
      }
    }
  }
  for (; i < end; ++i) {
    const uint32_t digit = Key(losses[i]) >> kDigitBits;
    loss_lanes[0] += digit > bucket ? static_cast<double>(losses[i]) : 0.0;
    if (digit == bucket) part.candidates.push_back(i);
  }
  if (in.weight != nullptr) {
    for (i = begin; i < end; ++i) {
      weight_lanes[i % kSumLanes] +=
          (Key(losses[i]) >> kDigitBits) > bucket ? static_cast<double>(in.weight[in.target[i]]) : 0.0;
    }
  }
  for (int lane = 0; lane < kSumLanes; ++lane) {
    part.loss_sum += loss_lanes[lane];
    part.weight_sum += weight_lanes[lane];
  }
}

#if defined(BCE_AVX2_PATH)
// SumAboveBucketBody with intrinsics (GCC vectorises the plain loop poorly once it holds the candidate test): the
// same lanes, so the same sums, bit for bit. Weighted pools take the plain loop.
BCE_TARGET_AVX2 void SumAboveBucketAvx2(const float* losses, int64_t begin, int64_t end, uint32_t bucket,
                                        const LossInputs& in, BlockPart& part) {
  if (in.weight != nullptr) return SumAboveBucketBody(losses, begin, end, bucket, in, part);
  const __m256i bucket8 = _mm256_set1_epi32(static_cast<int>(bucket));
  __m256d low = _mm256_setzero_pd();   // lanes 0-3
  __m256d high = _mm256_setzero_pd();  // lanes 4-7
  int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(losses + i));
    const __m256i digit = _mm256_srli_epi32(Key8(bits), kDigitBits);
    const __m256 kept = _mm256_castsi256_ps(_mm256_and_si256(bits, _mm256_cmpgt_epi32(digit, bucket8)));
    low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(kept)));
    high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(kept, 1)));
    const int in_bucket = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(digit, bucket8)));
    for (int mask = in_bucket; mask != 0; mask &= mask - 1) part.candidates.push_back(i + __builtin_ctz(mask));
  }
  double lanes[kSumLanes];
  _mm256_storeu_pd(lanes, low);
  _mm256_storeu_pd(lanes + 4, high);
  for (; i < end; ++i) {
    const uint32_t digit = Key(losses[i]) >> kDigitBits;
    lanes[0] += digit > bucket ? static_cast<double>(losses[i]) : 0.0;
    if (digit == bucket) part.candidates.push_back(i);
  }
  for (int lane = 0; lane < kSumLanes; ++lane) part.loss_sum += lanes[lane];
}
#endif

void SumAboveBucket(const float* losses, int64_t begin, int64_t end, uint32_t bucket, const LossInputs& in,
                    BlockPart& part) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return SumAboveBucketAvx2(losses, begin, end, bucket, in, part);
#endif
  SumAboveBucketBody(losses, begin, end, bucket, in, part);
}

Selection SelectByHistogram(float* losses, int64_t pixels, int64_t k, const Histogram& top_histogram,
                            const LossInputs& in) {
  const BucketPick top = PickBucket(top_histogram, k);
  const uint32_t bucket = top.bucket;
  std::vector<BlockPart> parts(BlockCount(pixels));
  ParallelFor(0, static_cast<int64_t>(parts.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      SumAboveBucket(losses, b * kBlockPixels, std::min(pixels, (b + 1) * kBlockPixels), bucket, in, parts[b]);
    }
  });
  Selection selection;
  std::vector<int64_t> candidates;
  size_t candidate_count = 0;
  for (const BlockPart& part : parts) candidate_count += part.candidates.size();
  candidates.reserve(candidate_count);
  for (BlockPart& part : parts) {
    selection.loss_sum += part.loss_sum;
    selection.weight_sum += part.weight_sum;
    candidates.insert(candidates.end(), part.candidates.begin(), part.candidates.end());
    std::vector<int64_t>().swap(part.candidates);
  }
  SettleCandidates(candidates, k - top.above, losses, in, selection);
  return selection;
}

}  // namespace

Selection SelectTopK(float* losses, int64_t pixels, int64_t k, const Histogram& top_histogram, const LossInputs& in) {
  return UseHistogramSelect(pixels) ? SelectByHistogram(losses, pixels, k, top_histogram, in)
                                    : SelectByPartition(losses, pixels, k, in);
}

}  // namespace fused
}  // namespace bce
