// The fused CPU path of the bootstrapped cross-entropy: one custom autograd function that computes the per-pixel
// losses, selects exactly the k hardest with a radix select on the float bits, reduces them, and in backward
// writes (softmax - onehot) * scale for the selected pixels and zeros elsewhere. It never materialises
// log-probabilities and never sorts. Same semantics as the reference path (bootstrapped_ce.h); it covers the
// common case only: see FusedApplies. Limitation: the gradient it returns is not itself differentiable
// (no double backward).
#pragma once

#include "loss/bootstrapped_ce.h"
#include "loss/pool_select.h"

#include <ATen/core/Tensor.h>

namespace bce {

// Whether the fused path handles this call: impl kFused or kAuto; a contiguous float32 CPU input of dim >= 2 with
// fewer than 2^31 pixels; int64 class-index targets; no label smoothing; batch scope; reduction kMean or kSum;
// no class weights or float32 CPU class weights of length C. kAuto takes it whenever it applies: measured faster
// than the reference path from 1x19x32x32 up.
bool FusedApplies(const at::Tensor& input, const at::Tensor& target, const BootstrappedCrossEntropyOptions& options);

// The loss when FusedApplies holds. target: int64 class indices; the kernel counts the pool itself and throws
// c10::IndexError, as CheckTargetsInRange does, for labels outside [0, C) that are not ignore_index.
BootstrappedResult FusedBootstrappedCrossEntropy(const at::Tensor& input, const at::Tensor& target,
                                                 const BootstrappedCrossEntropyOptions& options);

}  // namespace bce
