#include "functions/runtime.h"

#include "loss/cpu_dispatch.h"
#include "napi/addon_data.h"
#include "napi/convert.h"
#include "napi/errors.h"
#include "runtime/cpu_allocator.h"
#include "runtime/threads.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

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
  // Process-wide: every thread applies it on its next call into the addon (runtime/threads.h).
  SetProcessNumThreads(static_cast<int>(threads));
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

// libstdc++'s dual ABI: the addon and LibTorch must agree (pip wheels use the new ABI from PyTorch 2.7 on, older
// wheels the old one, Debian the new one); LibTorch's CMake config sets the macro when it differs from the default.
bool Cxx11Abi() {
#if defined(_GLIBCXX_USE_CXX11_ABI)
  return _GLIBCXX_USE_CXX11_ABI != 0;
#else
  return false;  // not libstdc++ (libc++, MSVC): no dual ABI
#endif
}

// The C++ standard the addon was compiled as: the one LibTorch's headers ask for (C++17 for 1.13, C++20 for
// recent 2.x).
std::string CxxStandard() {
  const long version = __cplusplus;
  if (version > 202002L) return "C++23";
  if (version >= 202002L) return "C++20";
  if (version >= 201703L) return "C++17";
  return "C++14";
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("libtorchVersion", TORCH_VERSION);
  result.Set("cudaBuild", Napi::Boolean::New(env, BCE_TORCH_CUDA != 0));
  result.Set("cxx11Abi", Napi::Boolean::New(env, Cxx11Abi()));
  result.Set("cxxStandard", CxxStandard());
  result.Set("builtAgainst", BCE_TORCH_DIR);
  result.Set("loadedFrom", LoadedFrom());
  result.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  result.Set("parallelInfo", Guard(env, [] { return at::get_parallel_info(); }));
  result.Set("cpuKernels", CpuKernels());
  return result;
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const AddonData& data = GetAddonData(env);
  Napi::Object result = Napi::Object::New(env);
  result.Set("tensors", Napi::Number::New(env, static_cast<double>(data.live_tensors)));
  result.Set("bytes", Napi::Number::New(env, static_cast<double>(data.live_bytes)));
  result.Set("reportedBytes", Napi::Number::New(env, static_cast<double>(data.reported_bytes)));
  return result;
}

// Process-wide, unlike memory(): the allocator is shared by every thread.
Napi::Value GetCpuBlockCacheInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuBlockCacheInfo cache = CpuBlockCacheState();
  Napi::Object result = Napi::Object::New(env);
  result.Set("enabled", Napi::Boolean::New(env, CpuAllocatorInstalled()));
  result.Set("bytes", Napi::Number::New(env, static_cast<double>(cache.cached_bytes)));
  result.Set("blocks", Napi::Number::New(env, static_cast<double>(cache.blocks)));
  result.Set("limit", Napi::Number::New(env, static_cast<double>(cache.limit_bytes)));
  return result;
}

Napi::Value ReleaseCpuBlockCache(const Napi::CallbackInfo& info) {
  EmptyCpuBlockCache();
  return info.Env().Undefined();
}

// The JS facade checked the argument; this keeps a raw call from wrapping a negative number.
Napi::Value ChangeCpuBlockCacheLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t bytes = ParseInteger(env, info[0], "bytes");
  if (bytes < 0) ThrowRange(env, "bytes must be a whole number >= 0");
  SetCpuBlockCacheLimit(static_cast<size_t>(bytes));
  return env.Undefined();
}

}  // namespace

void RegisterRuntime(Napi::Env env, Napi::Object exports) {
  InstallCpuAllocator();
  exports.Set("cudaIsAvailable", Napi::Function::New<Guarded<CudaIsAvailable>>(env, "cudaIsAvailable"));
  exports.Set("cudaDeviceCount", Napi::Function::New<Guarded<CudaDeviceCount>>(env, "cudaDeviceCount"));
  exports.Set("setNumThreads", Napi::Function::New<Guarded<SetNumThreads>>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<Guarded<GetNumThreads>>(env, "getNumThreads"));
  exports.Set("info", Napi::Function::New<Guarded<Info>>(env, "info"));
  exports.Set("memory", Napi::Function::New<Guarded<Memory>>(env, "memory"));
  exports.Set("cpuBlockCacheInfo", Napi::Function::New<Guarded<GetCpuBlockCacheInfo>>(env, "cpuBlockCacheInfo"));
  exports.Set("emptyCpuBlockCache", Napi::Function::New<Guarded<ReleaseCpuBlockCache>>(env, "emptyCpuBlockCache"));
  exports.Set("setCpuBlockCacheLimit",
              Napi::Function::New<Guarded<ChangeCpuBlockCacheLimit>>(env, "setCpuBlockCacheLimit"));
}

}  // namespace bce
