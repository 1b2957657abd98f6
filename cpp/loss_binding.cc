#include "loss_binding.h"

#include "convert.h"
#include "errors.h"
#include "loss/bootstrapped_ce.h"
#include "tensor_handle.h"

namespace bce {
namespace {

Reduction ParseReduction(Napi::Env env, const Napi::Value& value) {
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (name == "mean") return Reduction::kMean;
  if (name == "sum") return Reduction::kSum;
  if (name == "none") return Reduction::kNone;
  if (name == "selected") return Reduction::kSelected;
  ThrowType(env, "reduction must be 'mean', 'sum', 'none' or a function");
}

Impl ParseImpl(Napi::Env env, const Napi::Value& value) {
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (name == "auto") return Impl::kAuto;
  if (name == "fused") return Impl::kFused;
  if (name == "reference") return Impl::kReference;
  ThrowType(env, "impl must be 'auto', 'fused' or 'reference'");
}

// { p, weight?, posWeight?, ignoreIndex, labelSmoothing, reduction, perSample, impl }
BootstrappedOptions ParseOptions(Napi::Env env, const Napi::Value& value) {
  if (!value.IsObject()) ThrowType(env, "options must be an object");
  const Napi::Object object = value.As<Napi::Object>();
  BootstrappedOptions options;
  options.p = ParseNumber(env, object.Get("p"), "p");
  const Napi::Value weight = object.Get("weight");
  if (!weight.IsUndefined() && !weight.IsNull()) options.weight = TensorHandle::From(env, weight, "weight");
  const Napi::Value pos_weight = object.Get("posWeight");
  if (!pos_weight.IsUndefined() && !pos_weight.IsNull()) {
    options.pos_weight = TensorHandle::From(env, pos_weight, "posWeight");
  }
  options.ignore_index = ParseInteger(env, object.Get("ignoreIndex"), "ignoreIndex");
  options.label_smoothing = ParseNumber(env, object.Get("labelSmoothing"), "labelSmoothing");
  options.reduction = ParseReduction(env, object.Get("reduction"));
  options.per_sample = ParseBool(env, object.Get("perSample"), "perSample");
  options.impl = ParseImpl(env, object.Get("impl"));
  return options;
}

Napi::Value ResultToObject(Napi::Env env, BootstrappedResult result) {
  Napi::Object object = Napi::Object::New(env);
  object.Set("loss", TensorHandle::Wrap(env, std::move(result.loss)));
  object.Set("k", Napi::Number::New(env, static_cast<double>(result.k)));
  object.Set("nValid", Napi::Number::New(env, static_cast<double>(result.n_valid)));
  object.Set("fused", Napi::Boolean::New(env, result.fused));
  return object;
}

// bootstrappedCrossEntropy(input, target, options) -> { loss, k, nValid, fused }
Napi::Value BootstrappedCrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& input = TensorHandle::From(env, info[0], "input");
  const at::Tensor& target = TensorHandle::From(env, info[1], "target");
  const BootstrappedOptions options = ParseOptions(env, info[2]);
  return ResultToObject(env, Guard(env, [&] { return bootstrapped_cross_entropy(input, target, options); }));
}

// bootstrappedBinaryCrossEntropy(input, target, options, withLogits) -> { loss, k, nValid, fused }
Napi::Value BootstrappedBinaryCrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& input = TensorHandle::From(env, info[0], "input");
  const at::Tensor& target = TensorHandle::From(env, info[1], "target");
  const BootstrappedOptions options = ParseOptions(env, info[2]);
  const bool with_logits = ParseBool(env, info[3], "withLogits");
  return ResultToObject(
      env, Guard(env, [&] { return bootstrapped_binary_cross_entropy(input, target, options, with_logits); }));
}

// crossEntropy(input, target, options) -> Tensor
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& input = TensorHandle::From(env, info[0], "input");
  const at::Tensor& target = TensorHandle::From(env, info[1], "target");
  const BootstrappedOptions options = ParseOptions(env, info[2]);
  return TensorHandle::Wrap(env, Guard(env, [&] { return cross_entropy(input, target, options); }));
}

}  // namespace

void RegisterLoss(Napi::Env env, Napi::Object exports) {
  exports.Set("bootstrappedCrossEntropy", Napi::Function::New<BootstrappedCrossEntropy>(env, "bootstrappedCrossEntropy"));
  exports.Set("bootstrappedBinaryCrossEntropy",
              Napi::Function::New<BootstrappedBinaryCrossEntropy>(env, "bootstrappedBinaryCrossEntropy"));
  exports.Set("crossEntropy", Napi::Function::New<CrossEntropy>(env, "crossEntropy"));
}

}  // namespace bce
