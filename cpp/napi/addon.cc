// Module entry point. Everything per-environment lives in AddonData, so the addon loads in the main thread
// and in any number of worker threads.
#include <napi.h>

#include "functions/autograd.h"
#include "functions/clip_grad.h"
#include "functions/factories.h"
#include "functions/global_losses.h"
#include "functions/losses.h"
#include "functions/operators.h"
#include "functions/runtime.h"
#include "functions/serialize.h"
#include "napi/addon_data.h"
#include "objects/module_handle.h"
#include "objects/optimizer_handle.h"
#include "objects/process_group.h"
#include "objects/tensor_handle.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new bce::AddonData();
  env.SetInstanceData<bce::AddonData>(data);
  // Runs before the environment frees its objects: from then on finalizers must not call into V8.
  env.AddCleanupHook([data] { data->tearing_down = true; });

  Napi::Function tensor = bce::TensorHandle::Define(env);
  data->tensor_constructor = Napi::Persistent(tensor);
  exports.Set("TensorHandle", tensor);
  bce::RegisterFactories(env, exports);
  bce::RegisterAutograd(env, exports);
  bce::RegisterRuntime(env, exports);
  bce::RegisterLoss(env, exports);
  bce::RegisterOperators(env, exports);
  bce::RegisterJit(env, exports);
  bce::RegisterOptimizer(env, exports);
  bce::RegisterSerialize(env, exports);
  bce::RegisterClipGrad(env, exports);
  bce::RegisterDistributed(env, exports);
  bce::RegisterGlobalLoss(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(bootstrapped_ce, Init)
