// Conversions between JavaScript values and LibTorch's small types: dtype names, devices, shapes.
#pragma once

#include <napi.h>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bce {

// "float32" -> kFloat, ...; throws a TypeError naming `what` for an unknown name.
c10::ScalarType ParseDtype(Napi::Env env, const Napi::Value& value, const char* what);
std::string DtypeName(c10::ScalarType type);
bool IsDtypeName(const std::string& name);

// "cpu", "cuda", "cuda:1"; throws a TypeError naming `what` otherwise.
c10::Device ParseDevice(Napi::Env env, const Napi::Value& value, const char* what);
std::string DeviceName(const c10::Device& device);

// An array of at most 16 safe integers (shapes, dimension lists); throws naming `what` otherwise.
std::vector<int64_t> ParseIntegerArray(Napi::Env env, const Napi::Value& value, const char* what);

// An array of non-negative safe integers; throws naming `what` otherwise.
std::vector<int64_t> ParseShape(Napi::Env env, const Napi::Value& value, const char* what);
Napi::Array ShapeToArray(Napi::Env env, c10::IntArrayRef shape);

double ParseNumber(Napi::Env env, const Napi::Value& value, const char* what);
int64_t ParseInteger(Napi::Env env, const Napi::Value& value, const char* what);
bool ParseBool(Napi::Env env, const Napi::Value& value, const char* what);

}  // namespace bce
