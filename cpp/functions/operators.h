#pragma once
#include <napi.h>
namespace bce {
// callOperator(schema, args): one generic entry point to LibTorch's operators through the dispatcher, for the
// operators lib/operators.ts exposes (and only those: see kOperators in operators.cc). operatorNames() lists them.
void RegisterOperators(Napi::Env env, Napi::Object exports);
}  // namespace bce
