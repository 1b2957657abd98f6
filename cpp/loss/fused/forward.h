// Pass 1 of the fused kernel: every pixel's loss, the pool's counts and the histogram of the losses' top key
// digits.
#pragma once

#include "loss/fused/layout.h"

#include <cstdint>
#include <vector>

namespace bce {
namespace fused {

using Histogram = std::vector<uint64_t>;

// What pass 1 learns besides the losses.
struct LossPassResult {
  Histogram top_histogram;   // of the valid losses' top key digits; empty for small pools
  int64_t valid = 0;         // pixels whose label is not ignore_index and in [0, C)
  int64_t out_of_range = 0;  // pixels whose label is neither ignore_index nor in [0, C): an error for the caller
  // Pixels whose logits may be non-finite (NaN, or a maximum of +-inf; see PassCounts). When 0, every logit is
  // finite or -inf below a finite maximum, and backward can skip looking for NaN gradient columns.
  int64_t non_finite = 0;
};

// Writes every pixel's loss into `losses` (kIgnoredLoss for ignored and out-of-range labels) and counts the
// pool; the histogram only when `with_histogram`.
LossPassResult ComputeLosses(const RunPlan& plan, const LossInputs& in, bool with_histogram, float* losses);

}  // namespace fused
}  // namespace bce
