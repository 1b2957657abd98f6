// ProcessGroupHandle: the native object behind lib/distributed.ts, a c10d process group (TCPStore rendezvous,
// ProcessGroupGloo collectives). Collectives are issued on the JavaScript thread, in call order (every rank must
// issue the same collectives in the same order), and awaited off it, so waiting on other ranks never blocks the
// event loop. Built without Gloo (cmake/FindLibTorch.cmake), only distributedInfo() is exported, with the reason.
#pragma once

#include <napi.h>

#include <memory>

namespace bce {

class Collectives;

// Exports distributedInfo() and, when built with Gloo, ProcessGroupHandle.
void RegisterDistributed(Napi::Env env, Napi::Object exports);

// The live process group behind `value` (a ProcessGroupHandle), for the global losses; a TypeError naming `what`
// when `value` is something else, an Error when the group is not initialised or was destroyed.
std::shared_ptr<Collectives> CollectivesFrom(Napi::Env env, const Napi::Value& value, const char* what);

}  // namespace bce
