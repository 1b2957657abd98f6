#pragma once
#include <napi.h>
namespace bce {
// Checkpoints in PyTorch's format: saveObject(path, value), loadObject(path, device?), copyTensors(targets, sources).
void RegisterSerialize(Napi::Env env, Napi::Object exports);
}  // namespace bce
