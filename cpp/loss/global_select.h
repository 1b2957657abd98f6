// Global bootstrapped selection: the hardest k of the valid elements of every rank's batch together, as if one
// process had the concatenated batch, with communication that does not grow with the pixel count.
//
//  * k = clamp(floor(p * n_valid + 1e-9), 1, n_valid), n_valid summed over the ranks (bootstrapped_ce.h's rule).
//  * The selected set is one process's top-k on the batches concatenated in rank order, ties taken in
//    (rank, element index) order.
//  * The k-th largest loss is found by a radix select over order-preserving integer keys of the losses (8-bit
//    digits: 4 rounds for float32 and narrower, 8 for float64), each round one all-reduce of a 256-bin
//    histogram. A round ends early when the whole bucket is taken. Ties at the k-th key cost one all-reduce of
//    the per-rank tie counts; weighted 'mean' one more for the selected weight sum.
//  * Each rank's 'mean' and 'sum' are scaled so that their average over the ranks (what data-parallel training
//    does with gradients) is the single-process loss: 'mean' = world_size * local selected sum / global selected
//    weight, 'sum' = world_size * local selected sum. 'none' and 'selected' hold the local selected losses.
#pragma once

#include "loss/bootstrapped_ce.h"
#include "loss/collectives.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace bce {

struct Pool;

// What a call exchanged: all-reduce calls and the bytes each rank contributed to them.
struct CommunicationStats {
  int64_t rounds = 0;
  int64_t bytes = 0;
};

BootstrappedResult GlobalSelectAndReduce(const at::Tensor& input, const Pool& pool,
                                         const BootstrappedOptionsBase& options, Collectives& collectives,
                                         CommunicationStats* stats);

// The losses of bootstrapped_ce.h with the global selection (never the fused
// kernel, which selects within one process).
BootstrappedResult global_bootstrapped_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                     const BootstrappedCrossEntropyOptions& options,
                                                     Collectives& collectives, CommunicationStats* stats);
BootstrappedResult global_bootstrapped_binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                            const BootstrappedBinaryCrossEntropyOptions& options,
                                                            Collectives& collectives, CommunicationStats* stats);
BootstrappedResult global_bootstrapped_binary_cross_entropy_with_logits(
    const at::Tensor& input, const at::Tensor& target, const BootstrappedBinaryCrossEntropyWithLogitsOptions& options,
    Collectives& collectives, CommunicationStats* stats);

}  // namespace bce
