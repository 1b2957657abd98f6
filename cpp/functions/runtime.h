#pragma once
#include <napi.h>
namespace bce {
// Process-level queries and settings: CUDA, threads, LibTorch build information, live-handle memory.
void RegisterRuntime(Napi::Env env, Napi::Object exports);
}  // namespace bce
