// Native functions that talk to autograd directly.
#pragma once

#include <napi.h>

namespace bce {

void RegisterAutograd(Napi::Env env, Napi::Object exports);

}  // namespace bce
