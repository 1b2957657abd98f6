#include "loss/global_select.h"

#include "loss/pool_select.h"
#include "loss/pool_selector.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <vector>

namespace bce {
namespace {

constexpr int kDigitBits = 8;
constexpr int64_t kBins = int64_t{1} << kDigitBits;

// Order-preserving keys as int64: a > b as floats iff key(a) > key(b), NaN above +inf (as topk ranks it), -0 and
// +0 one key (they tie). A non-negative float's bits already order as integers; a negative one's order reversed,
// so its bits other than the sign are flipped. Float32 keys span int32's range, float64 keys int64's.
struct Keys {
  at::Tensor keys;  // int64, flat
  int bits = 32;
};

Keys OrderKeys(const at::Tensor& losses) {
  at::Tensor values = losses.detach().reshape(-1);
  const bool wide = values.scalar_type() == at::kDouble;
  // float16 and bfloat16 widen to float32 exactly, keeping their order.
  if (!wide && values.scalar_type() != at::kFloat) values = values.to(at::kFloat);
  values = at::where(values.eq(0), at::zeros_like(values), values);  // -0 -> +0
  values = at::where(values.isnan(), at::full_like(values, std::numeric_limits<double>::quiet_NaN()).abs(), values);
  values = values.contiguous();
  Keys out;
  out.bits = wide ? 64 : 32;
  const at::Tensor bits = wide ? values.view(at::kLong) : values.view(at::kInt).to(at::kLong);
  const int64_t flip = wide ? std::numeric_limits<int64_t>::max() : int64_t{0x7FFFFFFF};
  out.keys = at::where(bits.lt(0), bits.bitwise_xor(flip), bits);
  return out;
}

class Exchange {
 public:
  Exchange(Collectives& collectives, CommunicationStats* stats) : collectives_(collectives), stats_(stats) {}

  // The elementwise sum over the ranks of a host int64/double vector.
  at::Tensor Sum(at::Tensor host) {
    host = host.contiguous();
    collectives_.AllReduceSum(host);
    if (stats_ != nullptr) {
      stats_->rounds += 1;
      stats_->bytes += host.numel() * static_cast<int64_t>(host.element_size());
    }
    return host;
  }

 private:
  Collectives& collectives_;
  CommunicationStats* stats_;
};

// This rank's selection mask (flat bool) for the global top-k.
struct Selection {
  at::Tensor mask;
  int64_t k = 0;
  int64_t n_valid = 0;
};

Selection SelectGlobal(const Pool& pool, Collectives& collectives, Exchange& exchange, double p) {
  const at::Tensor flat = pool.losses.reshape(-1);
  const at::Tensor valid = pool.ignored.defined() ? pool.ignored.reshape(-1).logical_not()
                                                  : at::ones(flat.sizes(), flat.options().dtype(at::kBool));
  const Keys keys = OrderKeys(flat);
  Selection selection;

  // Round 1: the histogram of the top digit, which also counts the pool over every rank.
  int64_t prefix = 0;  // the key's digits chosen so far (its arithmetic right shift by `shift`)
  int64_t need = 0;    // how many elements with that prefix are still to be taken
  for (int shift = keys.bits - kDigitBits; shift >= 0; shift -= kDigitBits) {
    const bool top = shift == keys.bits - kDigitBits;
    at::Tensor candidates = valid;
    at::Tensor digit;
    if (top) {
      digit = keys.keys.__rshift__(shift).add(kBins / 2);  // signed top digit, shifted into [0, 256)
    } else {
      candidates = valid.logical_and(keys.keys.__rshift__(shift + kDigitBits).eq(prefix));
      digit = keys.keys.__rshift__(shift).bitwise_and(kBins - 1);
    }
    const at::Tensor local = at::bincount(digit.masked_select(candidates), {}, kBins).to(at::kCPU, at::kLong);
    const at::Tensor histogram = exchange.Sum(local.clone());
    const int64_t* counts = histogram.data_ptr<int64_t>();
    if (top) {
      for (int64_t b = 0; b < kBins; ++b) selection.n_valid += counts[b];
      selection.k = KeepCount(p, selection.n_valid);
      need = selection.k;
      if (selection.n_valid == 0) return selection;
      if (selection.k == selection.n_valid) {
        selection.mask = valid;
        return selection;
      }
    }
    int64_t above = 0, bucket = kBins - 1;
    for (; bucket > 0; --bucket) {
      if (above + counts[bucket] >= need) break;
      above += counts[bucket];
    }
    need -= above;
    prefix = top ? bucket - kBins / 2 : prefix * kBins + bucket;
    if (need == counts[bucket]) {
      // The whole bucket is taken: everything at or above this prefix, no ties to settle.
      selection.mask = valid.logical_and(keys.keys.__rshift__(shift).ge(prefix));
      return selection;
    }
  }

  // `prefix` is now the k-th largest key itself; `need` of its ties are taken, in (rank, index) order.
  const at::Tensor above = valid.logical_and(keys.keys.gt(prefix));
  const at::Tensor ties = valid.logical_and(keys.keys.eq(prefix));
  const int64_t local_ties = ties.sum().item<int64_t>();
  at::Tensor per_rank = at::zeros({collectives.world_size()}, at::kLong);
  per_rank[collectives.rank()] = local_ties;
  per_rank = exchange.Sum(per_rank);
  const int64_t* tie_counts = per_rank.data_ptr<int64_t>();
  int64_t before = 0;
  for (int r = 0; r < collectives.rank(); ++r) before += tie_counts[r];
  const int64_t take = std::min(std::max<int64_t>(need - before, 0), local_ties);
  const at::Tensor order = ties.to(at::kLong).cumsum(0);
  selection.mask = above.logical_or(ties.logical_and(order.le(take)));
  return selection;
}

}  // namespace

BootstrappedResult GlobalSelectAndReduce(const at::Tensor& input, const Pool& pool,
                                         const BootstrappedOptionsBase& options, Collectives& collectives,
                                         CommunicationStats* stats) {
  TORCH_CHECK_VALUE(!options.per_sample,
                    "perSample selects within each sample already; the global scope applies to batch selection");
  Exchange exchange(collectives, stats);
  const Selection selection = SelectGlobal(pool, collectives, exchange, options.p);
  BootstrappedResult result;
  result.k = selection.k;
  result.n_valid = selection.n_valid;
  const at::Tensor& losses = pool.losses;
  if (selection.k == 0) {
    result.loss = options.reduction == Reduction::kNone ? losses.mul(0) : ConnectedZero(input);
    return result;
  }
  const at::Tensor flat = losses.reshape(-1);
  const double world = static_cast<double>(collectives.world_size());
  switch (options.reduction) {
    case Reduction::kSelected: result.loss = flat.masked_select(selection.mask); break;
    case Reduction::kNone:
      result.loss = at::where(selection.mask, flat, at::zeros_like(flat)).view(losses.sizes());
      break;
    case Reduction::kSum: result.loss = flat.masked_select(selection.mask).sum().mul(world); break;
    case Reduction::kMean: {
      double denominator = static_cast<double>(selection.k);
      if (pool.denominator_weight.defined()) {
        const at::Tensor local = pool.denominator_weight.detach().reshape(-1).masked_select(selection.mask).sum();
        denominator = exchange.Sum(local.to(at::kCPU, at::kDouble).reshape({1})).item<double>();
      }
      result.loss = flat.masked_select(selection.mask).sum().mul(world / denominator);
      break;
    }
  }
  return result;
}

BootstrappedResult global_bootstrapped_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                     const BootstrappedCrossEntropyOptions& options,
                                                     Collectives& collectives, CommunicationStats* stats) {
  return BootstrappedCrossEntropyWith(input, target, options,
                                      [&](const at::Tensor& x, Pool pool, const BootstrappedOptionsBase& o) {
                                        return GlobalSelectAndReduce(x, pool, o, collectives, stats);
                                      });
}

BootstrappedResult global_bootstrapped_binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                            const BootstrappedBinaryCrossEntropyOptions& options,
                                                            Collectives& collectives, CommunicationStats* stats) {
  return BootstrappedBinaryCrossEntropyWith(input, target, options,
                                            [&](const at::Tensor& x, Pool pool, const BootstrappedOptionsBase& o) {
                                              return GlobalSelectAndReduce(x, pool, o, collectives, stats);
                                            });
}

BootstrappedResult global_bootstrapped_binary_cross_entropy_with_logits(
    const at::Tensor& input, const at::Tensor& target, const BootstrappedBinaryCrossEntropyWithLogitsOptions& options,
    Collectives& collectives, CommunicationStats* stats) {
  return BootstrappedBinaryCrossEntropyWithLogitsWith(
      input, target, options, [&](const at::Tensor& x, Pool pool, const BootstrappedOptionsBase& o) {
        return GlobalSelectAndReduce(x, pool, o, collectives, stats);
      });
}

}  // namespace bce
