// The selection half of the loss, shared by every variant: given per-element losses and their pool, keep the
// k hardest and reduce them. See bootstrapped_ce.h for the rules.
#pragma once

#include "loss/bootstrapped_ce.h"

#include <ATen/core/Tensor.h>

#include <vector>

namespace bce {

struct PoolCounts {
  // Batch scope: one entry. Per-sample scope: one entry per sample.
  std::vector<int64_t> valid;
  int64_t out_of_range = 0;
  int64_t total() const;
};

// Counts valid targets (target != ignore_index, an int64 tensor) and out-of-range ones: on CPU in one pass over
// the labels, on other devices with tensor ops and a single read back to the host.
PoolCounts CountPool(const at::Tensor& target, int64_t ignore_index, int64_t classes, bool per_sample);

// A clear error (c10::IndexError) for class indices outside [0, C), instead of nll_loss's (a device-side assert
// on CUDA).
void CheckTargetsInRange(int64_t out_of_range, int64_t classes, int64_t ignore_index);

struct Pool {
  at::Tensor losses;               // per element, differentiable
  at::Tensor ignored;              // bool, shaped like losses; undefined when no element is ignored
  at::Tensor denominator_weight;   // w[y] per element for the weighted mean; undefined means 1 per element
  PoolCounts counts;               // filled by PoolOf when every element is valid
  bool counts_from_shape = false;  // every element valid: counts follow from the shape
};

// A pool in which every element is valid (probability targets, binary losses).
Pool PoolOf(const at::Tensor& losses);

BootstrappedResult SelectAndReduce(const at::Tensor& input, Pool pool, const BootstrappedOptionsBase& options);

// Zero of the input's dtype and device that is still part of its autograd graph (gradients all zero), even
// when the input holds NaN or Inf.
at::Tensor ConnectedZero(const at::Tensor& like);

}  // namespace bce
