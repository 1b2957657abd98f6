// Gradient clipping as torch.nn.utils.clip_grad_norm_: the norm of the per-gradient norms, and every gradient
// scaled in place by min(1, maxNorm / (norm + 1e-6)). All on the gradients' device: the coefficient stays a
// tensor, so nothing is copied to the host and no CUDA synchronisation happens (unless errorIfNonfinite asks).
#include "functions/clip_grad.h"

#include "napi/convert.h"
#include "napi/errors.h"
#include "objects/tensor_handle.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <string>
#include <vector>

namespace bce {
namespace {

// clipGradNorm(params: TensorHandle[], maxNorm: number, normType: number, errorIfNonfinite: boolean) -> total norm
Napi::Value ClipGradNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) ThrowType(env, "parameters must be an array of Tensors");
  const Napi::Array array = info[0].As<Napi::Array>();
  const double max_norm = ParseNumber(env, info[1], "maxNorm");
  const double norm_type = ParseNumber(env, info[2], "normType");
  const bool error_if_nonfinite = ParseBool(env, info[3], "errorIfNonfinite");
  std::vector<at::Tensor> grads;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    const std::string what = "parameters[" + std::to_string(i) + "]";
    const at::Tensor param = TensorHandle::From(env, array.Get(i), what.c_str());
    if (param.grad().defined()) grads.push_back(param.grad());
  }
  at::Tensor total = Guard(env, [&] {
    at::NoGradGuard no_grad;
    if (grads.empty()) return at::zeros({}, at::kFloat);
    const c10::Device device = grads[0].device();
    std::vector<at::Tensor> norms;
    norms.reserve(grads.size());
    for (const at::Tensor& g : grads) norms.push_back(at::linalg_vector_norm(g, norm_type).to(device));
    at::Tensor norm = at::linalg_vector_norm(at::stack(norms), norm_type);
    if (error_if_nonfinite && !std::isfinite(norm.item<double>())) {
      throw std::runtime_error("the total norm of order " + std::to_string(norm_type) +
                               " of the gradients is non-finite, so it cannot be clipped (errorIfNonfinite)");
    }
    const at::Tensor coefficient = at::clamp_max(max_norm / (norm + 1e-6), 1.0);
    for (at::Tensor& g : grads) g.mul_(coefficient.to(g.device()));
    return norm;
  });
  return TensorHandle::Wrap(env, total);
}

}  // namespace

void RegisterClipGrad(Napi::Env env, Napi::Object exports) {
  exports.Set("clipGradNorm", Napi::Function::New<ClipGradNorm>(env, "clipGradNorm"));
}

}  // namespace bce
