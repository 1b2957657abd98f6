// Readers of the loss bindings' positional arguments, shared by losses.cc (one process) and global_losses.cc
// (the selection over every rank), so that both accept and refuse the same values with the same words.
#pragma once

#include "loss/bootstrapped_ce.h"

#include <napi.h>

#include <ATen/core/Tensor.h>

#include <cstddef>

namespace bce {

// 'mean', 'sum', 'none' or 'selected' (lib/loss.ts passes 'selected' for a function reduction).
Reduction ParseReduction(Napi::Env env, const Napi::Value& value);

// 'auto', 'fused' or 'reference'.
Impl ParseImpl(Napi::Env env, const Napi::Value& value);

// A tensor, or an undefined tensor for undefined or null.
at::Tensor OptionalTensor(Napi::Env env, const Napi::Value& value, const char* what);

// The Float64Array the caller passes for the call's statistics, of at least `min_length` elements.
Napi::Float64Array StatsArray(Napi::Env env, const Napi::Value& value, size_t min_length);

}  // namespace bce
