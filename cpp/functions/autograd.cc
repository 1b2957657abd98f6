#include "functions/autograd.h"

#include "napi/errors.h"
#include "objects/tensor_handle.h"

#include <ATen/ATen.h>

namespace bce {
namespace {

// markUpdatedInPlace(params: TensorHandle[]): tells autograd that each parameter with a gradient (those an
// optimizer step updates) was changed in place. LibTorch's C++ SGD updates through .data(), which leaves the
// version counter as it was (its Adam and AdamW bump it; once more does no harm), so a graph that saved a parameter
// before the step (a retained graph, a loss computed before the step and backpropagated after) would get gradients
// of values that no longer exist without a word; with the count bumped, its backward() fails as in PyTorch.
Napi::Value MarkUpdatedInPlace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) ThrowType(env, "params must be an array of Tensors");
  const Napi::Array array = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    // A handle disposed since is passed over (the optimizer keeps its own reference to the tensor, but this
    // function has no other way to it).
    const at::Tensor param = TensorHandle::Peek(array.Get(i));
    if (param.defined() && param.grad().defined()) param.unsafeGetTensorImpl()->bump_version();
  }
  return env.Undefined();
}

}  // namespace

void RegisterAutograd(Napi::Env env, Napi::Object exports) {
  exports.Set("markUpdatedInPlace", Napi::Function::New<Guarded<MarkUpdatedInPlace>>(env, "markUpdatedInPlace"));
}

}  // namespace bce
