// Fused CPU bootstrapped cross-entropy: the autograd node and the entry point. See fused_ce_cpu.h for what it
// covers and docs/performance.md for the design and its measurements. The
// passes live beside it in cpp/loss/fused/, for an input viewed as (N, C, S), P = N * S pixels:
//   forward.cc          pass 1: per pixel max, sum of exp and loss = w[y] * ((max - x[y]) + log(sum)), into a
//                       P-float vector; the valid and out-of-range labels are counted (no separate pass over the
//                       labels), and a histogram of the top 16 bits of each valid loss's order-preserving key kept;
//   selection.cc        pass 2: one pass over the losses sums those above the bucket that holds the k-th largest
//                       and lists the pixels inside it; the k-th key and the ties are settled on that short list,
//                       and ties not taken are overwritten as ignored, so "selected" is Key(loss) >= the k-th key;
//   backward.cc         reads every logit once more, recomputes softmax for the selected pixels only and writes
//                       (softmax - onehot) * scale for them and zeros elsewhere;
//   gradient_buffer.cc  the gradient's memory (huge pages requested; large blocks are reused by
//                       runtime/cpu_allocator.cc);
//   layout.h, math.h, parallel.h: runs and blocks of pixels, exp/log/keys, threads.
// Saved for backward: the input, target and weight (references, no copies) and the loss vector. Pools under
// 65536 pixels select with nth_element instead of the histogram. Work is split over at::get_num_threads()
// std::threads (see ParallelFor for why not at::parallel_for). Extra memory: 4P bytes (the loss vector, kept for
// backward) and the candidate list (8 bytes per pixel in the k-th loss's bucket, usually a small fraction);
// backward the gradient.
#include "loss/fused/fused_ce_cpu.h"

#include "loss/fused/backward.h"
#include "loss/fused/forward.h"
#include "loss/fused/gradient_buffer.h"
#include "loss/fused/layout.h"
#include "loss/fused/selection.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <cstdint>
#include <optional>

// Phase times on stderr, for tuning: build with -DBCE_PHASE_TIMING (docs/performance.md says how).
#ifdef BCE_PHASE_TIMING
#include <chrono>
#include <cstdio>
#define BCE_PHASE_START() auto bce_phase_t0 = std::chrono::steady_clock::now()
#define BCE_PHASE(name)                                                                  \
  do {                                                                                   \
    auto now = std::chrono::steady_clock::now();                                         \
    std::fprintf(stderr, "  %s %.2f ms\n", name,                                         \
                 std::chrono::duration<double, std::milli>(now - bce_phase_t0).count()); \
    bce_phase_t0 = now;                                                                  \
  } while (0)
#else
#define BCE_PHASE_START() (void)0
#define BCE_PHASE(name) (void)0
#endif
namespace bce {

// The kernel's passes, in cpp/loss/fused/.
using fused::AdviseHugePages;
using fused::ComputeGradient;
using fused::ComputeLosses;
using fused::EmptyLike;
using fused::GradientInputs;
using fused::LossInputs;
using fused::LossPassResult;
using fused::RunPlan;
using fused::Selection;
using fused::SelectTopK;
using fused::UseHistogramSelect;

namespace {

// ---------------------------------------------------------------------------------------------------------------
// The autograd function.

LossInputs LossInputsOf(const at::Tensor& input, const at::Tensor& target, const at::Tensor& weight,
                        int64_t ignore_index) {
  return {input.data_ptr<float>(), target.data_ptr<int64_t>(), weight.defined() ? weight.data_ptr<float>() : nullptr,
          ignore_index};
}

// The optional tensor type autograd's custom Functions recognise as an argument: LibTorch 1.x knows only its own
// c10::optional; 2.x made that a deprecated alias of std::optional, the name used there.
#if TORCH_VERSION_MAJOR >= 2
using OptionalTensor = std::optional<at::Tensor>;
#else
using OptionalTensor = c10::optional<at::Tensor>;
#endif

// The autograd node. The forward work (both passes) is done before apply(), because it decides k and may throw
// for out-of-range labels; forward() only records what backward needs and returns the value.
class FusedCrossEntropyFunction : public torch::autograd::Function<FusedCrossEntropyFunction> {
 public:
  // input: contiguous float32 (N, C, ...); target: contiguous int64; weight: contiguous float32 (C) or none (an
  // optional, because apply() cannot take an undefined tensor); losses: pass 2's loss vector; threshold_key: the
  // selection's; value: the loss; denominator: what the selected losses' sum was divided by; all_finite: pass 1
  // saw no NaN logit and no non-finite maximum (autograd's version check keeps that true until backward).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            const OptionalTensor& class_weight, const at::Tensor& losses, int64_t threshold_key,
                            double value, double denominator, bool all_finite) {
    ctx->save_for_backward({input, target});
    if (class_weight.has_value()) ctx->saved_data["weight"] = *class_weight;
    ctx->saved_data["losses"] = losses;
    ctx->saved_data["threshold_key"] = threshold_key;
    ctx->saved_data["denominator"] = denominator;
    ctx->saved_data["all_finite"] = all_finite;
    return at::scalar_tensor(value, input.options());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    // One entry per forward argument; only the input gets a gradient.
    torch::autograd::variable_list grads(8);
    const at::Tensor& grad_output = grad_outputs[0];
    if (!grad_output.defined()) return grads;
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor losses = ctx->saved_data["losses"].toTensor();
    const RunPlan plan(input);
    GradientInputs in;
    const auto weight = ctx->saved_data.find("weight");
    // The loss vector already excludes ignored pixels, so backward needs no ignore_index.
    in.loss = LossInputsOf(input, saved[1], weight == ctx->saved_data.end() ? at::Tensor() : weight->second.toTensor(),
                           /*ignore_index=*/0);
    in.losses = losses.data_ptr<float>();
    in.threshold_key = static_cast<uint32_t>(ctx->saved_data["threshold_key"].toInt());
    in.scale = static_cast<float>(grad_output.item<double>() / ctx->saved_data["denominator"].toDouble());
    in.all_finite = ctx->saved_data["all_finite"].toBool();
    BCE_PHASE_START();
    at::Tensor grad_input = EmptyLike(input);
    ComputeGradient(plan, in, grad_input.data_ptr<float>());
    BCE_PHASE("backward");
    grads[0] = grad_input;
    return grads;
  }
};

bool IsFloatCpu(const at::Tensor& tensor) {
  return tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat && tensor.layout() == at::kStrided;
}

}  // namespace

bool FusedApplies(const at::Tensor& input, const at::Tensor& target, const BootstrappedCrossEntropyOptions& options) {
  if (options.impl != Impl::kFused && options.impl != Impl::kAuto) return false;
  if (!IsFloatCpu(input) || !input.is_contiguous() || input.dim() < 2 || input.size(1) < 1) return false;
  if (!target.device().is_cpu() || target.scalar_type() != at::kLong) return false;
  if (options.label_smoothing != 0.0 || options.per_sample) return false;
  if (options.reduction != Reduction::kMean && options.reduction != Reduction::kSum) return false;
  if (options.weight.defined() &&
      !(IsFloatCpu(options.weight) && options.weight.dim() == 1 && options.weight.size(0) == input.size(1))) {
    return false;
  }
  // LibTorch's nll_loss has no derivative for its weight and says so; the fused kernel would silently give none.
  if (options.weight.defined() && options.weight.requires_grad()) return false;
  // The histograms count in uint32 per task and the kernels index pixels in int64: keep well inside both.
  if (input.numel() / input.size(1) >= (int64_t{1} << 31)) return false;
  return true;
}

BootstrappedResult FusedBootstrappedCrossEntropy(const at::Tensor& input, const at::Tensor& raw_target,
                                                 const BootstrappedCrossEntropyOptions& options) {
  const at::Tensor target = raw_target.contiguous();
  const at::Tensor weight = options.weight.defined() ? options.weight.contiguous() : at::Tensor();
  const RunPlan plan(input);
  const LossInputs in = LossInputsOf(input, target, weight, options.ignore_index);
  const int64_t pixels = plan.pixels();

  BCE_PHASE_START();
  // Pass 1. The loss vector is detached data: gradients come from backward, which recomputes the softmax.
  at::Tensor losses = at::empty({pixels}, input.options().requires_grad(false));
  AdviseHugePages(losses.data_ptr(), losses.nbytes());
  float* loss_data = losses.data_ptr<float>();
  const LossPassResult pass = ComputeLosses(plan, in, UseHistogramSelect(pixels), loss_data);
  BCE_PHASE("losses");
  CheckTargetsInRange(pass.out_of_range, plan.classes(), options.ignore_index);

  BootstrappedResult result;
  result.fused = true;
  result.n_valid = pass.valid;
  result.k = KeepCount(options.p, result.n_valid);
  if (result.k == 0) {
    result.loss = ConnectedZero(input);
    return result;
  }
  // Pass 2.
  const Selection selection = SelectTopK(loss_data, pixels, result.k, pass.top_histogram, in);
  BCE_PHASE("select");
  double denominator = 1.0;
  if (options.reduction == Reduction::kMean) {
    denominator = weight.defined() ? selection.weight_sum : static_cast<double>(result.k);
  }
  const OptionalTensor optional_weight = weight.defined() ? OptionalTensor(weight) : OptionalTensor();
  result.loss =
      FusedCrossEntropyFunction::apply(input, target, optional_weight, losses, static_cast<int64_t>(selection.key),
                                       selection.loss_sum / denominator, denominator, pass.non_finite == 0);
  BCE_PHASE("autograd node");
  return result;
}

}  // namespace bce
