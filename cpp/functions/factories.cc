// Tensor factories: from JavaScript data, zeros/ones/randn/randint, and the global seed.
#include "functions/factories.h"

#include "napi/convert.h"
#include "napi/errors.h"
#include "objects/tensor_handle.h"

#include <ATen/ATen.h>

#include <limits>
#include <string>

namespace bce {
namespace {

// The number of elements, or -1 when it does not fit in int64 (shapes from direct callers of the addon).
int64_t Product(const std::vector<int64_t>& shape) {
  int64_t product = 1;
  for (int64_t size : shape) {
    if (size != 0 && product > std::numeric_limits<int64_t>::max() / size) return -1;
    product *= size;
  }
  return product;
}

double ProductDouble(const std::vector<int64_t>& shape) {
  double product = 1;
  for (int64_t size : shape) product *= static_cast<double>(size);
  return product;
}

// The dtype of the elements a JavaScript typed array holds.
c10::ScalarType SourceDtype(Napi::Env env, const Napi::TypedArray& array) {
  switch (array.TypedArrayType()) {
    case napi_float32_array: return at::kFloat;
    case napi_float64_array: return at::kDouble;
    case napi_int32_array: return at::kInt;
    case napi_bigint64_array: return at::kLong;
    case napi_uint8_array: return at::kByte;
    default: ThrowType(env, "data must be a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array");
  }
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i > 0 ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

// Runs a factory; an allocation LibTorch cannot satisfy becomes a RangeError naming the shape, instead of the
// allocator's "[enforce fail at alloc_cpu.cpp]" message.
template <typename Fn>
at::Tensor Allocate(Napi::Env env, const char* what, const std::vector<int64_t>& shape, c10::ScalarType dtype,
                    Fn&& fn) {
  return Guard(env, [&] {
    try {
      return fn();
    } catch (const c10::Error& e) {
      const std::string message = e.what_without_backtrace();
      if (message.find("allocate") == std::string::npos) throw;
    } catch (const std::bad_alloc&) {
    }
    const double bytes = ProductDouble(shape) * static_cast<double>(c10::elementSize(dtype));
    throw Napi::RangeError::New(env, std::string(what) + ": shape " + ShapeText(shape) + " of " + DtypeName(dtype) +
                                         " needs " + std::to_string(bytes).substr(0, std::to_string(bytes).find('.')) +
                                         " bytes, which could not be allocated (out of memory)");
  });
}

at::TensorOptions Options(Napi::Env env, const Napi::Value& dtype, const Napi::Value& device) {
  return at::TensorOptions().dtype(ParseDtype(env, dtype, "dtype")).device(ParseDevice(env, device, "device"));
}

// fromData(data: TypedArray, shape: number[], dtype: string, device: string)
Napi::Value FromData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) ThrowType(env, "data must be a typed array");
  const Napi::TypedArray array = info[0].As<Napi::TypedArray>();
  const c10::ScalarType source = SourceDtype(env, array);
  const std::vector<int64_t> shape = ParseShape(env, info[1], "shape");
  const c10::ScalarType dtype = ParseDtype(env, info[2], "dtype");
  const c10::Device device = ParseDevice(env, info[3], "device");
  if (Product(shape) != static_cast<int64_t>(array.ElementLength())) {
    ThrowRange(env,
               "shape does not match the number of elements in data (" + std::to_string(array.ElementLength()) + ")");
  }
  void* data = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  at::Tensor tensor = Guard(env, [&] {
    // Copy while the JavaScript memory is pinned by this synchronous call, then convert and move.
    at::Tensor host = array.ElementLength() == 0
                          ? at::empty(shape, at::TensorOptions().dtype(source))
                          : at::from_blob(data, shape, at::TensorOptions().dtype(source)).clone();
    return host.to(device, dtype);
  });
  return TensorHandle::Wrap(env, tensor);
}

Napi::Value Zeros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<int64_t> shape = ParseShape(env, info[0], "shape");
  const at::TensorOptions options = Options(env, info[1], info[2]);
  return TensorHandle::Wrap(
      env, Allocate(env, "zeros", shape, options.dtype().toScalarType(), [&] { return at::zeros(shape, options); }));
}

Napi::Value Ones(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<int64_t> shape = ParseShape(env, info[0], "shape");
  const at::TensorOptions options = Options(env, info[1], info[2]);
  return TensorHandle::Wrap(
      env, Allocate(env, "ones", shape, options.dtype().toScalarType(), [&] { return at::ones(shape, options); }));
}

Napi::Value Randn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<int64_t> shape = ParseShape(env, info[0], "shape");
  const at::TensorOptions options = Options(env, info[1], info[2]);
  return TensorHandle::Wrap(
      env, Allocate(env, "randn", shape, options.dtype().toScalarType(), [&] { return at::randn(shape, options); }));
}

// randint(low, high, shape, dtype, device): integers in [low, high).
Napi::Value Randint(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t low = ParseInteger(env, info[0], "low");
  const int64_t high = ParseInteger(env, info[1], "high");
  const std::vector<int64_t> shape = ParseShape(env, info[2], "shape");
  const at::TensorOptions options = Options(env, info[3], info[4]);
  if (high <= low) ThrowRange(env, "randint: high must be greater than low");
  return TensorHandle::Wrap(env, Allocate(env, "randint", shape, options.dtype().toScalarType(),
                                          [&] { return at::randint(low, high, shape, options); }));
}

Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t seed = ParseInteger(env, info[0], "seed");
  Guard(env, [&] { at::manual_seed(static_cast<uint64_t>(seed)); });
  return env.Undefined();
}

}  // namespace

void RegisterFactories(Napi::Env env, Napi::Object exports) {
  exports.Set("fromData", Napi::Function::New<Guarded<FromData>>(env, "fromData"));
  exports.Set("zeros", Napi::Function::New<Guarded<Zeros>>(env, "zeros"));
  exports.Set("ones", Napi::Function::New<Guarded<Ones>>(env, "ones"));
  exports.Set("randn", Napi::Function::New<Guarded<Randn>>(env, "randn"));
  exports.Set("randint", Napi::Function::New<Guarded<Randint>>(env, "randint"));
  exports.Set("manualSeed", Napi::Function::New<Guarded<ManualSeed>>(env, "manualSeed"));
}

}  // namespace bce
