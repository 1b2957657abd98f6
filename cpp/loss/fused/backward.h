// Backward of the fused kernel: (softmax - onehot) * w[y] * scale for the selected pixels, zeros elsewhere.
#pragma once

#include "loss/fused/layout.h"

#include <cstdint>

namespace bce {
namespace fused {

struct GradientInputs {
  LossInputs loss;
  const float* losses;     // forward's loss vector after the tie fix-up
  uint32_t threshold_key;  // selected iff Key(loss) >= threshold_key
  float scale;             // grad_out / denominator
  // Pass 1 found no NaN logit and no non-finite maximum: no pixel needs the exact path or a NaN column.
  bool all_finite;
};

// Writes the whole gradient (every element) into `grad`, laid out like the input.
void ComputeGradient(const RunPlan& plan, const GradientInputs& in, float* grad);

}  // namespace fused
}  // namespace bce
