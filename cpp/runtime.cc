#include "runtime.h"

#include "addon_data.h"
#include "convert.h"
#include "errors.h"
#include "loss/cpu_dispatch.h"

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if !defined(_WIN32)
#include <dlfcn.h>
#endif

namespace bce {
namespace {

// LibTorch's default CPU allocator takes every buffer from posix_memalign. With glibc before 2.38, memory freed
// after posix_memalign is often not reused (sourceware bug 14581), so a training loop that creates and frees
// tensors of the same sizes grows the heap without bound (about 100 KB per 1x19x64x64 step: gigabytes over a
// long run, although every tensor was freed; see scripts/soak.ts). This allocator takes buffers from plain
// malloc, over-allocated by the alignment, with the malloc pointer stored just below the aligned one: malloc'ed
// chunks are reused, and data == context, so raw_allocate() keeps working.
// BOOTSTRAPPED_CE_CPU_ALLOCATOR=default keeps LibTorch's allocator and glibc's malloc settings.
class AlignedMallocAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kAlignment = 64;  // c10::gAlignment

  // LibTorch 1.x declares allocate() const; 2.3+ declares it non-const and adds a pure copy_data(). Defining
  // both forms without `override` compiles against either: whichever the base declares is the override.
  c10::DataPtr allocate(size_t nbytes) { return AllocateAligned(nbytes); }
  c10::DataPtr allocate(size_t nbytes) const { return AllocateAligned(nbytes); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

 private:
  static c10::DataPtr AllocateAligned(size_t nbytes) {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (nbytes == 0) return {nullptr, nullptr, &Delete, cpu};
    TORCH_CHECK(nbytes <= SIZE_MAX - kAlignment, "CPU allocator: cannot allocate ", nbytes, " bytes");
    void* raw = std::malloc(nbytes + kAlignment);
    TORCH_CHECK(raw != nullptr, "DefaultCPUAllocator: not enough memory: you tried to allocate ", nbytes, " bytes.");
    // malloc returns at least 16-byte alignment, so there are >= 16 bytes below `aligned` for the raw pointer.
    void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(raw) + kAlignment) & ~(kAlignment - 1));
    static_cast<void**>(aligned)[-1] = raw;
    return {aligned, aligned, &Delete, cpu};
  }

  static void Delete(void* aligned) {
    if (aligned != nullptr) std::free(static_cast<void**>(aligned)[-1]);
  }
};

void InstallCpuAllocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* choice = std::getenv("BOOTSTRAPPED_CE_CPU_ALLOCATOR");
    if (choice != nullptr && std::strcmp(choice, "default") == 0) return;
    static AlignedMallocAllocator allocator;
    c10::SetCPUAllocator(&allocator, /*priority=*/1);
#if defined(__GLIBC__)
    // Fixed thresholds instead of glibc's sliding ones: buffers up to 32 MB come from the heap and freed ones are
    // kept for reuse (up to 256 MB of free top-of-heap before trimming), so a training step does not pay fresh
    // page faults for every intermediate tensor (2x19x256x512 forward+backward: 45 -> 26 ms).
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  });
}

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

}  // namespace

void RegisterRuntime(Napi::Env env, Napi::Object exports) {
  InstallCpuAllocator();
  exports.Set("cudaIsAvailable", Napi::Function::New<CudaIsAvailable>(env, "cudaIsAvailable"));
  exports.Set("cudaDeviceCount", Napi::Function::New<CudaDeviceCount>(env, "cudaDeviceCount"));
  exports.Set("setNumThreads", Napi::Function::New<SetNumThreads>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<GetNumThreads>(env, "getNumThreads"));
  exports.Set("info", Napi::Function::New<Info>(env, "info"));
  exports.Set("memory", Napi::Function::New<Memory>(env, "memory"));
}

}  // namespace bce
