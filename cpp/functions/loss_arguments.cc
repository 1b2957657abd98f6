#include "functions/loss_arguments.h"

#include "napi/errors.h"
#include "objects/tensor_handle.h"

#include <string>

namespace bce {

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

at::Tensor OptionalTensor(Napi::Env env, const Napi::Value& value, const char* what) {
  return value.IsUndefined() || value.IsNull() ? at::Tensor() : TensorHandle::From(env, value, what);
}

Napi::Float64Array StatsArray(Napi::Env env, const Napi::Value& value, size_t min_length) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      value.As<Napi::TypedArray>().ElementLength() < min_length) {
    ThrowType(env, "stats must be a Float64Array of at least " + std::to_string(min_length) + " elements");
  }
  return value.As<Napi::Float64Array>();
}

}  // namespace bce
