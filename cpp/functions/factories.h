#pragma once
#include <napi.h>
namespace bce {
void RegisterFactories(Napi::Env env, Napi::Object exports);
}
