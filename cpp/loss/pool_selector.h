// The losses' selection step as a parameter: bootstrapped_ce.cc builds the pool (per-element losses, ignored
// mask, class weights) and hands it to a selector, SelectAndReduce for one process or the global selection
// (global_select.h) for data-parallel training.
#pragma once

#include "loss/bootstrapped_ce.h"
#include "loss/pool_select.h"

#include <functional>

namespace bce {

using PoolSelector =
    std::function<BootstrappedResult(const at::Tensor& input, Pool pool, const BootstrappedOptionsBase& options)>;

// The losses of bootstrapped_ce.h with `select` in place of SelectAndReduce; the fused kernel, which selects by
// itself, is never used.
BootstrappedResult BootstrappedCrossEntropyWith(const at::Tensor& input, const at::Tensor& target,
                                                const BootstrappedCrossEntropyOptions& options,
                                                const PoolSelector& select);
BootstrappedResult BootstrappedBinaryCrossEntropyWith(const at::Tensor& input, const at::Tensor& target,
                                                      const BootstrappedBinaryCrossEntropyOptions& options,
                                                      const PoolSelector& select);
BootstrappedResult BootstrappedBinaryCrossEntropyWithLogitsWith(
    const at::Tensor& input, const at::Tensor& target, const BootstrappedBinaryCrossEntropyWithLogitsOptions& options,
    const PoolSelector& select);

}  // namespace bce
