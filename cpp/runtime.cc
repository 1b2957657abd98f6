#include "runtime.h"

#include "addon_data.h"
#include "convert.h"
#include "errors.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#if !defined(_WIN32)
#include <dlfcn.h>
#endif

namespace bce {
namespace {

Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), Guard(info.Env(), [] { return torch::cuda::is_available(); }));
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(),
                           static_cast<double>(Guard(info.Env(), [] { return torch::cuda::device_count(); })));
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t threads = ParseInteger(env, info[0], "threads");
  if (threads < 1 || threads > 4096) ThrowRange(env, "threads must be an integer from 1 to 4096");
  Guard(env, [&] { at::set_num_threads(static_cast<int>(threads)); });
  return env.Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::get_num_threads());
}

// The file LibTorch's CPU library was loaded from, as the dynamic loader resolved it.
std::string LoadedFrom() {
#if !defined(_WIN32)
  Dl_info dl;
  if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &dl) != 0 && dl.dli_fname != nullptr) {
    return dl.dli_fname;
  }
#endif
  return "";
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("libtorchVersion", TORCH_VERSION);
  result.Set("cudaBuild", Napi::Boolean::New(env, BCE_TORCH_CUDA != 0));
  result.Set("builtAgainst", BCE_TORCH_DIR);
  result.Set("loadedFrom", LoadedFrom());
  result.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  result.Set("parallelInfo", Guard(env, [] { return at::get_parallel_info(); }));
  return result;
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const AddonData& data = GetAddonData(env);
  Napi::Object result = Napi::Object::New(env);
  result.Set("tensors", Napi::Number::New(env, static_cast<double>(data.live_tensors)));
  result.Set("bytes", Napi::Number::New(env, static_cast<double>(data.live_bytes)));
  return result;
}

}  // namespace

void RegisterRuntime(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaIsAvailable", Napi::Function::New<CudaIsAvailable>(env, "cudaIsAvailable"));
  exports.Set("cudaDeviceCount", Napi::Function::New<CudaDeviceCount>(env, "cudaDeviceCount"));
  exports.Set("setNumThreads", Napi::Function::New<SetNumThreads>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<GetNumThreads>(env, "getNumThreads"));
  exports.Set("info", Napi::Function::New<Info>(env, "info"));
  exports.Set("memory", Napi::Function::New<Memory>(env, "memory"));
}

}  // namespace bce
