// OptimizerHandle: the native object behind optim.SGD / optim.Adam / optim.AdamW, over torch::optim. It holds
// the parameters' tensors themselves (shared with the module or tensors they came from), so step() updates
// them in place. <torch/optim.h> is included only by optimizer_handle.cc.
#pragma once

#include <napi.h>

namespace bce {

// Exports OptimizerHandle: new OptimizerHandle(kind, params, options).
void RegisterOptimizer(Napi::Env env, Napi::Object exports);

}  // namespace bce
