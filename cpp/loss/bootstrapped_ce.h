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

// Options, one struct per loss as in PyTorch's C++ API (torch/nn/options/loss.h), each field named and defaulted
// like the Python keyword. Plain fields with defaults rather than TORCH_ARG's chained setters: on the shared base
// those setters would return the base, so a chain could not go on to the loss's own fields.

// What every bootstrapped loss shares: how much of the pool it keeps and how it reduces what it kept.
struct BootstrappedOptionsBase {
  // The effective fraction of the pool to keep, in (0, 1], after any warm-up schedule.
  double p = 1.0;
  Reduction reduction = Reduction::kMean;
  // Select and average per sample instead of over the batch (see per_sample above).
  bool per_sample = false;
};

// bootstrapped_cross_entropy: F.cross_entropy's keywords, and which implementation computes it.
struct BootstrappedCrossEntropyOptions : BootstrappedOptionsBase {
  // Class weights, shape (C).
  at::Tensor weight;
  // Class-index targets only: elements with this target are outside the pool.
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  // kAuto takes the fused CPU kernel where it applies (see FusedApplies); kFused where it does not is an error.
  Impl impl = Impl::kAuto;
};

// bootstrapped_binary_cross_entropy: F.binary_cross_entropy's keywords.
struct BootstrappedBinaryCrossEntropyOptions : BootstrappedOptionsBase {
  // Per-element weights, broadcastable to the input.
  at::Tensor weight;
};

// bootstrapped_binary_cross_entropy_with_logits: F.binary_cross_entropy_with_logits's keywords.
struct BootstrappedBinaryCrossEntropyWithLogitsOptions : BootstrappedOptionsBase {
  // Per-element weights, broadcastable to the input.
  at::Tensor weight;
  // Weight of positive examples, broadcastable to the input.
  at::Tensor pos_weight;
};

// cross_entropy: F.cross_entropy's keywords. No selection: every valid element counts.
struct CrossEntropyOptions {
  // Class weights, shape (C).
  at::Tensor weight;
  // Class-index targets only: elements with this target do not count.
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  // kMean, kSum or kNone (kSelected is a bootstrapped reduction only).
  Reduction reduction = Reduction::kMean;
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
                                              const BootstrappedCrossEntropyOptions& options);

// input: probabilities in [0, 1]; target shaped like the input.
BootstrappedResult bootstrapped_binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                     const BootstrappedBinaryCrossEntropyOptions& options);

// input: logits; target shaped like the input.
BootstrappedResult bootstrapped_binary_cross_entropy_with_logits(
    const at::Tensor& input, const at::Tensor& target, const BootstrappedBinaryCrossEntropyWithLogitsOptions& options);

// Plain F.cross_entropy (no selection), with the same checks on the target as the bootstrapped form.
at::Tensor cross_entropy(const at::Tensor& input, const at::Tensor& target, const CrossEntropyOptions& options);

// k for a pool of n elements at fraction p.
int64_t KeepCount(double p, int64_t n);

}  // namespace bce
