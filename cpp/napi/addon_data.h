// Per-environment state of the addon. Each Node environment (the main thread and every worker) gets its own,
// so the addon is context-aware: no static JavaScript references, no state shared across isolates.
#pragma once

#include <napi.h>

#include <cstdint>

namespace bce {

struct AddonData {
  Napi::FunctionReference tensor_constructor;
  int64_t live_tensors = 0;
  int64_t live_bytes = 0;
  int64_t reported_bytes = 0;  // host memory reported to V8 as external (TensorHandle::Reset)
  // Set by the environment's cleanup hook: finalizers that run during teardown must not call into V8.
  bool tearing_down = false;
};

inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace bce
