#pragma once

#include <napi.h>

namespace bce {

// Exports the bootstrapped losses with the selection over every rank of a process group (loss/global_select.h).
void RegisterGlobalLoss(Napi::Env env, Napi::Object exports);

}  // namespace bce
