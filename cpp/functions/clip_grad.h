#pragma once
#include <napi.h>
namespace bce {
// clipGradNorm(params, maxNorm, normType, errorIfNonfinite): torch.nn.utils.clip_grad_norm_.
void RegisterClipGrad(Napi::Env env, Napi::Object exports);
}  // namespace bce
