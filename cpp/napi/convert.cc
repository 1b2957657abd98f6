#include "napi/convert.h"

#include "napi/errors.h"

#include <torch/cuda.h>

#include <cmath>
#include <utility>

namespace bce {
namespace {

const std::pair<const char*, c10::ScalarType> kDtypes[] = {
    {"float32", c10::ScalarType::Float},     {"float64", c10::ScalarType::Double}, {"float16", c10::ScalarType::Half},
    {"bfloat16", c10::ScalarType::BFloat16}, {"int32", c10::ScalarType::Int},      {"int64", c10::ScalarType::Long},
    {"uint8", c10::ScalarType::Byte},        {"bool", c10::ScalarType::Bool},
};

constexpr double kMaxSafeInteger = 9007199254740991.0;

}  // namespace

c10::ScalarType ParseDtype(Napi::Env env, const Napi::Value& value, const char* what) {
  if (value.IsString()) {
    const std::string name = value.As<Napi::String>().Utf8Value();
    for (const auto& entry : kDtypes) {
      if (name == entry.first) return entry.second;
    }
  }
  ThrowType(env, std::string(what) +
                     " must be one of 'float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64', 'uint8', 'bool'");
}

std::string DtypeName(c10::ScalarType type) {
  for (const auto& entry : kDtypes) {
    if (entry.second == type) return entry.first;
  }
  return c10::toString(type);
}

bool IsDtypeName(const std::string& name) {
  for (const auto& entry : kDtypes) {
    if (name == entry.first) return true;
  }
  return false;
}

namespace {

// A CUDA device on a machine without one is refused here in our words: LibTorch's own message differs between
// a CPU build ("Could not run 'aten::empty...' with arguments from the 'CUDA' backend") and a CUDA build without
// a driver ("Found no NVIDIA driver"), and between versions.
c10::Device CheckedCudaDevice(Napi::Env env, const std::string& name, c10::DeviceIndex index) {
  if (!torch::cuda::is_available()) {
    throw Napi::Error::New(env, "device '" + name + "' requested, but CUDA is not available: this LibTorch build " +
                                    "has no CUDA support or no GPU is visible");
  }
  return c10::Device(c10::DeviceType::CUDA, index);
}

}  // namespace

c10::Device ParseDevice(Napi::Env env, const Napi::Value& value, const char* what) {
  if (value.IsString()) {
    const std::string name = value.As<Napi::String>().Utf8Value();
    if (name == "cpu") return c10::Device(c10::DeviceType::CPU);
    if (name == "cuda") return CheckedCudaDevice(env, name, -1);
    if (name.rfind("cuda:", 0) == 0 && name.size() > 5 && name.size() < 9) {
      int index = 0;
      for (size_t i = 5; i < name.size(); ++i) {
        if (name[i] < '0' || name[i] > '9') ThrowType(env, std::string(what) + " must be 'cpu', 'cuda' or 'cuda:N'");
        index = index * 10 + (name[i] - '0');
      }
      if (index > 127) ThrowRange(env, std::string(what) + ": CUDA device index out of range");
      return CheckedCudaDevice(env, name, static_cast<c10::DeviceIndex>(index));
    }
  }
  ThrowType(env, std::string(what) + " must be 'cpu', 'cuda' or 'cuda:N'");
}

std::string DeviceName(const c10::Device& device) { return device.str(); }

double ParseNumber(Napi::Env env, const Napi::Value& value, const char* what) {
  if (!value.IsNumber()) ThrowType(env, std::string(what) + " must be a number");
  return value.As<Napi::Number>().DoubleValue();
}

int64_t ParseInteger(Napi::Env env, const Napi::Value& value, const char* what) {
  if (!value.IsNumber()) ThrowType(env, std::string(what) + " must be an integer");
  const double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::floor(number) != number || std::fabs(number) > kMaxSafeInteger) {
    ThrowRange(env, std::string(what) + " must be a safe integer");
  }
  return static_cast<int64_t>(number);
}

bool ParseBool(Napi::Env env, const Napi::Value& value, const char* what) {
  if (!value.IsBoolean()) ThrowType(env, std::string(what) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

std::vector<int64_t> ParseIntegerArray(Napi::Env env, const Napi::Value& value, const char* what) {
  if (!value.IsArray()) ThrowType(env, std::string(what) + " must be an array of integers");
  const Napi::Array array = value.As<Napi::Array>();
  const uint32_t length = array.Length();
  if (length > 16) ThrowRange(env, std::string(what) + " may have at most 16 entries");
  std::vector<int64_t> values;
  values.reserve(length);
  for (uint32_t i = 0; i < length; ++i) values.push_back(ParseInteger(env, array.Get(i), what));
  return values;
}

std::vector<int64_t> ParseShape(Napi::Env env, const Napi::Value& value, const char* what) {
  std::vector<int64_t> shape = ParseIntegerArray(env, value, what);
  for (int64_t size : shape) {
    if (size < 0) ThrowRange(env, std::string(what) + " must hold non-negative sizes");
  }
  return shape;
}

Napi::Array ShapeToArray(Napi::Env env, c10::IntArrayRef shape) {
  Napi::Array array = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    array.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  }
  return array;
}

}  // namespace bce
