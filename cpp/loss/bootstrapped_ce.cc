#include "loss/bootstrapped_ce.h"

#include "loss/fused/fused_ce_cpu.h"
#include "loss/pool_select.h"
#include "loss/pool_selector.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/nn/functional/loss.h>

#include <initializer_list>
#include <optional>
#include <string>

namespace bce {
namespace F = torch::nn::functional;

namespace {

// When no argument needs a gradient, the ops below go straight to their kernels, skipping autograd's dispatch
// layer: the result is the same (no graph would be recorded), and at small sizes that layer is a few microseconds
// of a ~35 us call. Unlike InferenceMode, the results are ordinary tensors that later autograd code may use.
class NoAutogradUnlessNeeded {
 public:
  NoAutogradUnlessNeeded(std::initializer_list<const at::Tensor*> arguments) {
    for (const at::Tensor* argument : arguments) {
      if (argument->defined() && argument->requires_grad()) return;
    }
    below_autograd_.emplace();
  }

 private:
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd_;
};

// Integer class indices as int64 (what LibTorch's nll_loss wants); uint8 and int32 label maps are accepted.
at::Tensor IndexTarget(const at::Tensor& target) {
  return target.scalar_type() == at::kLong ? target : target.to(at::kLong);
}

void CheckShapes(const at::Tensor& input, const at::Tensor& target, bool probabilities) {
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()), "input must be a floating-point tensor, got ",
                   input.scalar_type());
  TORCH_CHECK_VALUE(input.dim() >= 2, "input must have shape (N, C) or (N, C, d1, ...), got ", input.sizes());
  TORCH_CHECK(input.device() == target.device(), "input and target must be on the same device, got ", input.device(),
              " and ", target.device());
  if (probabilities) {
    TORCH_CHECK_VALUE(target.sizes() == input.sizes(), "probability target must have the input's shape ", input.sizes(),
                      ", got ", target.sizes());
    return;
  }
  TORCH_CHECK_TYPE(at::isIntegralType(target.scalar_type(), /*includeBool=*/false),
                   "target must hold class indices (an integer dtype) or class probabilities (the input's "
                   "floating dtype), got ",
                   target.scalar_type());
  std::vector<int64_t> expected(input.sizes().begin(), input.sizes().end());
  expected.erase(expected.begin() + 1);
  TORCH_CHECK_VALUE(target.sizes().vec() == expected, "target must have shape ", at::IntArrayRef(expected),
                    " for input of shape ", input.sizes(), ", got ", target.sizes());
}

// LibTorch's options for the per-element losses (reduction 'none') of either cross-entropy options struct.
template <typename Options>
F::CrossEntropyFuncOptions PerElementOptions(const Options& options, bool probabilities) {
  F::CrossEntropyFuncOptions ce;
  if (options.weight.defined()) ce.weight(options.weight);
  if (!probabilities) ce.ignore_index(options.ignore_index);
  ce.label_smoothing(options.label_smoothing);
  ce.reduction(torch::kNone);
  return ce;
}

// The checks both binary losses share.
void CheckBinaryArguments(const at::Tensor& input, const at::Tensor& target, double p) {
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()) && at::isFloatingType(target.scalar_type()),
                   "input and target must be floating-point tensors");
  TORCH_CHECK_VALUE(input.sizes() == target.sizes(), "target must have the input's shape ", input.sizes(), ", got ",
                    target.sizes());
  TORCH_CHECK_VALUE(input.dim() >= 1, "input must have at least one dimension");
  TORCH_CHECK(input.device() == target.device(), "input and target must be on the same device");
  TORCH_CHECK_VALUE(p > 0.0 && p <= 1.0, "p must be in (0, 1], got ", p);
}

// An explicit request for the fused kernel where it does not apply is an error, never a silent fallback.
void RefuseFused(const BootstrappedCrossEntropyOptions& options) {
  TORCH_CHECK(options.impl != Impl::kFused,
              "impl 'fused' does not apply here: it needs a contiguous float32 CPU "
              "input with fewer than 2^31 pixels, class-index targets, labelSmoothing 0, perSample false, "
              "reduction 'mean' or 'sum', and no class weights or float32 CPU class weights of length C that do not "
              "require grad");
}

}  // namespace

int64_t KeepCount(double p, int64_t n) {
  if (n <= 0) return 0;
  int64_t k = static_cast<int64_t>(std::floor(p * static_cast<double>(n) + 1e-9));
  return std::min(std::max<int64_t>(k, 1), n);
}

BootstrappedResult bootstrapped_cross_entropy(const at::Tensor& input, const at::Tensor& raw_target,
                                              const BootstrappedCrossEntropyOptions& options) {
  return BootstrappedCrossEntropyWith(input, raw_target, options, nullptr);
}

BootstrappedResult BootstrappedCrossEntropyWith(const at::Tensor& input, const at::Tensor& raw_target,
                                                const BootstrappedCrossEntropyOptions& options,
                                                const PoolSelector& select) {
  // No selector: this process's own selection, the fused kernel where it applies.
  const auto SelectAndReduce = [&select](const at::Tensor& x, Pool pool, const BootstrappedOptionsBase& o) {
    return select ? select(x, std::move(pool), o) : bce::SelectAndReduce(x, std::move(pool), o);
  };
  const NoAutogradUnlessNeeded no_autograd({&input, &raw_target, &options.weight});
  const bool probabilities = at::isFloatingType(raw_target.scalar_type());
  CheckShapes(input, raw_target, probabilities);
  TORCH_CHECK_VALUE(options.p > 0.0 && options.p <= 1.0, "p must be in (0, 1], got ", options.p);
  const int64_t classes = input.size(1);

  if (probabilities) {
    RefuseFused(options);
    // Every element is valid; k is known without touching the device.
    at::Tensor losses = F::cross_entropy(input, raw_target, PerElementOptions(options, true));
    return SelectAndReduce(input, PoolOf(losses), options);
  }

  const at::Tensor target = IndexTarget(raw_target);
  // The fused kernel counts the pool (and range-checks the labels) in its own first pass.
  if (!select && FusedApplies(input, target, options)) return FusedBootstrappedCrossEntropy(input, target, options);
  RefuseFused(options);
  // One host read: the valid counts, plus the count of out-of-range targets, so that a bad target is a
  // clear error instead of a device-side assert on CUDA.
  const PoolCounts counts = CountPool(target, options.ignore_index, classes, options.per_sample);
  CheckTargetsInRange(counts.out_of_range, classes, options.ignore_index);

  at::Tensor losses = F::cross_entropy(input, target, PerElementOptions(options, false));
  Pool pool = PoolOf(losses);
  pool.counts = counts;
  pool.counts_from_shape = false;
  // The mask is only needed when something is ignored (ignored losses are 0 and must not be ranked).
  if (counts.total() < target.numel()) pool.ignored = target.eq(options.ignore_index);
  if (options.weight.defined()) {
    // w[y] per element (0 where ignored): the denominator of the weighted mean, as in PyTorch.
    at::Tensor labels = pool.ignored.defined() ? target.masked_fill(pool.ignored, 0) : target;
    pool.denominator_weight = options.weight.index_select(0, labels.reshape(-1)).view(target.sizes());
    if (pool.ignored.defined()) pool.denominator_weight = pool.denominator_weight.masked_fill(pool.ignored, 0);
  }
  return SelectAndReduce(input, pool, options);
}

BootstrappedResult bootstrapped_binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                     const BootstrappedBinaryCrossEntropyOptions& options) {
  return BootstrappedBinaryCrossEntropyWith(input, target, options, nullptr);
}

BootstrappedResult BootstrappedBinaryCrossEntropyWith(const at::Tensor& input, const at::Tensor& target,
                                                      const BootstrappedBinaryCrossEntropyOptions& options,
                                                      const PoolSelector& select) {
  const auto SelectAndReduce = [&select](const at::Tensor& x, Pool pool, const BootstrappedOptionsBase& o) {
    return select ? select(x, std::move(pool), o) : bce::SelectAndReduce(x, std::move(pool), o);
  };
  const NoAutogradUnlessNeeded no_autograd({&input, &target, &options.weight});
  CheckBinaryArguments(input, target, options.p);
  if (!input.device().is_cpu()) {
    // On CPU LibTorch checks this itself; on CUDA it would be a device-side assert.
    const int64_t outside = input.detach().ge(0).logical_and(input.detach().le(1)).logical_not().sum().item<int64_t>();
    TORCH_CHECK_INDEX(outside == 0, "input holds ", outside,
                      " value(s) outside [0, 1]; "
                      "use bootstrappedBinaryCrossEntropyWithLogits for logits");
  }
  F::BinaryCrossEntropyFuncOptions bce;
  if (options.weight.defined()) bce.weight(options.weight);
  const at::Tensor losses = F::binary_cross_entropy(input, target, bce.reduction(torch::kNone));
  return SelectAndReduce(input, PoolOf(losses), options);
}

BootstrappedResult bootstrapped_binary_cross_entropy_with_logits(
    const at::Tensor& input, const at::Tensor& target, const BootstrappedBinaryCrossEntropyWithLogitsOptions& options) {
  return BootstrappedBinaryCrossEntropyWithLogitsWith(input, target, options, nullptr);
}

BootstrappedResult BootstrappedBinaryCrossEntropyWithLogitsWith(
    const at::Tensor& input, const at::Tensor& target, const BootstrappedBinaryCrossEntropyWithLogitsOptions& options,
    const PoolSelector& select) {
  const auto SelectAndReduce = [&select](const at::Tensor& x, Pool pool, const BootstrappedOptionsBase& o) {
    return select ? select(x, std::move(pool), o) : bce::SelectAndReduce(x, std::move(pool), o);
  };
  const NoAutogradUnlessNeeded no_autograd({&input, &target, &options.weight, &options.pos_weight});
  CheckBinaryArguments(input, target, options.p);
  F::BinaryCrossEntropyWithLogitsFuncOptions bce;
  if (options.weight.defined()) bce.weight(options.weight);
  if (options.pos_weight.defined()) bce.pos_weight(options.pos_weight);
  const at::Tensor losses = F::binary_cross_entropy_with_logits(input, target, bce.reduction(torch::kNone));
  return SelectAndReduce(input, PoolOf(losses), options);
}

at::Tensor cross_entropy(const at::Tensor& input, const at::Tensor& raw_target, const CrossEntropyOptions& options) {
  const NoAutogradUnlessNeeded no_autograd({&input, &raw_target, &options.weight});
  const bool probabilities = at::isFloatingType(raw_target.scalar_type());
  CheckShapes(input, raw_target, probabilities);
  F::CrossEntropyFuncOptions ce = PerElementOptions(options, probabilities);
  // 'selected' means the selected losses, and the plain loss selects nothing: refused rather than read as 'mean'.
  TORCH_CHECK_VALUE(options.reduction != Reduction::kSelected,
                    "reduction 'selected' applies to the bootstrapped losses only");
  switch (options.reduction) {
    case Reduction::kSum: ce.reduction(torch::kSum); break;
    case Reduction::kNone: ce.reduction(torch::kNone); break;
    default: ce.reduction(torch::kMean); break;
  }
  if (probabilities) return F::cross_entropy(input, raw_target, ce);
  const at::Tensor target = IndexTarget(raw_target);
  const PoolCounts counts = CountPool(target, options.ignore_index, input.size(1), false);
  CheckTargetsInRange(counts.out_of_range, input.size(1), options.ignore_index);
  return F::cross_entropy(input, target, ce);
}

}  // namespace bce
