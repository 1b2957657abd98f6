// Pass 2 of the fused kernel: exactly the k largest losses and their sum.
#pragma once

#include "loss/fused/forward.h"
#include "loss/fused/layout.h"

#include <cstdint>

namespace bce {
namespace fused {

struct Selection {
  uint32_t key = 0;  // the k-th largest key: a pixel is selected iff Key(its loss) >= key, after the tie fix-up
  double loss_sum = 0.0;
  double weight_sum = 0.0;  // sum of w[y] over the selected pixels (0 when unweighted)
};

// Pools smaller than this select with nth_element instead of histograms.
constexpr int64_t kHistogramSelectMinPixels = int64_t{1} << 16;

// Small pools: the histograms (65536 buckets) would cost more than the pool itself.
inline bool UseHistogramSelect(int64_t pixels) { return pixels >= kHistogramSelectMinPixels; }

// Selects exactly k of the valid pixels (losses from pass 1, top_histogram from pass 1 when UseHistogramSelect),
// sums them, and overwrites the threshold ties that are not taken with kIgnoredLoss (see selection.cc).
Selection SelectTopK(float* losses, int64_t pixels, int64_t k, const Histogram& top_histogram, const LossInputs& in);

}  // namespace fused
}  // namespace bce
