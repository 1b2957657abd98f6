#pragma once
#include <napi.h>
namespace bce {
// The loss functions as seen from JavaScript. The TypeScript facade has already checked the arguments'
// types and ranges; this layer converts them and calls the LibTorch code once.
void RegisterLoss(Napi::Env env, Napi::Object exports);
}  // namespace bce
