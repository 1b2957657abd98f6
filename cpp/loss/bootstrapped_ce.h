// Bootstrapped (hardest top-k) cross-entropy in plain LibTorch. Knows nothing of Node.
//
// Semantics (README "Semantics" lists the same rules):
//  * The pool is the valid elements: target != ignore_index for class-index targets; every element for
//    probability targets and for the binary losses.
//  * k = clamp(floor(p * n_valid + 1e-9), 1, n_valid): never 0, and p = 1 keeps exactly n_valid.
//  * Exactly k elements are selected with topk (never a `>= kth` threshold, which keeps more under ties).
//  * 'mean' divides the sum of the selected (weighted) losses by the sum of the selected elements' class
//    weights w[y] (k when unweighted, and for probability targets and the binary losses). At p = 1 this is
//    exactly PyTorch's reduction='mean', so the loss is continuous where warm-up ends.
//  * No valid element: a zero that is still part of the autograd graph (gradients all zero), never NaN.
//  * per_sample: k_i from each sample's own valid count, a weighted mean per sample, then the average over the
//    samples that have valid elements.
//  * Gradients reach only the selected elements, as autograd through topk does.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace bce {

enum class Reduction {
  kMean,
  kSum,
  kNone,      // shaped like the pool (the target, for class indices); unselected and ignored elements are 0
  kSelected,  // the 1-D tensor of selected losses, for a caller-supplied reduction
};

enum class Impl { kAuto, kFused, kReference };

struct BootstrappedOptions {
  // The effective fraction of the pool to keep, in (0, 1], after any warm-up schedule.
  double p = 1.0;
  // Class weights (C) for cross-entropy; per-element weights (broadcastable to the input) for the binary losses.
  at::Tensor weight;
  // Binary with logits only: weight of positive examples, broadcastable to the input.
  at::Tensor pos_weight;
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Reduction reduction = Reduction::kMean;
  bool per_sample = false;
  Impl impl = Impl::kAuto;
};

struct BootstrappedResult {
  at::Tensor loss;
  int64_t k = 0;        // elements selected (summed over samples with per_sample)
  int64_t n_valid = 0;  // elements in the pool
  bool fused = false;   // whether the fused CPU kernel computed it
};

// input (N, C) or (N, C, d1, ...); target: class indices (N) / (N, d1, ...) of an integer dtype, or class
// probabilities shaped like the input.
BootstrappedResult bootstrapped_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                              const BootstrappedOptions& options);

// input: probabilities (binary_cross_entropy) or logits (with_logits); target shaped like the input.
BootstrappedResult bootstrapped_binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                     const BootstrappedOptions& options, bool with_logits);

// Plain F.cross_entropy with the same options (reduction kMean, kSum or kNone).
at::Tensor cross_entropy(const at::Tensor& input, const at::Tensor& target, const BootstrappedOptions& options);

// k for a pool of n elements at fraction p.
int64_t KeepCount(double p, int64_t n);

}  // namespace bce
