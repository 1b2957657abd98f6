// ModuleHandle: the native object behind a JavaScript jit.Module. It owns one TorchScript module
// (torch::jit::Module) loaded from a file; its parameters are handed out as TensorHandles that share the
// module's tensors, so an optimizer built on them trains the module in place. Also registers noGrad(fn).
// <torch/script.h> is included only by module_handle.cc.
#pragma once

#include <napi.h>

namespace bce {

// Exports ModuleHandle (with the static load(path, device?)), noGrad(fn) and isGradEnabled().
void RegisterJit(Napi::Env env, Napi::Object exports);

}  // namespace bce
