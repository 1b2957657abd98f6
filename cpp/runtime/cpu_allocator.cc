#include "runtime/cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace bce {
namespace {

constexpr size_t kAlignment = 64;  // c10::gAlignment

// Buffers under 32 MiB: LibTorch's default CPU allocator takes every buffer from posix_memalign. With glibc before
// 2.38, memory freed after posix_memalign is often not reused (sourceware bug 14581), so a training loop that
// creates and frees tensors of the same sizes grows the heap without bound (about 100 KB per 1x19x64x64 step:
// gigabytes over a long run, although every tensor was freed; see scripts/soak.ts). These come from plain malloc,
// over-allocated by the alignment, with the malloc pointer stored just below the aligned one: malloc'ed chunks are
// reused, and data == context, so raw_allocate() keeps working.
void* MallocAligned(size_t nbytes) {
  TORCH_CHECK(nbytes <= SIZE_MAX - kAlignment, "CPU allocator: cannot allocate ", nbytes, " bytes");
  void* raw = std::malloc(nbytes + kAlignment);
  TORCH_CHECK(raw != nullptr, "DefaultCPUAllocator: not enough memory: you tried to allocate ", nbytes, " bytes.");
  // malloc returns at least 16-byte alignment, so there are >= 16 bytes below `aligned` for the raw pointer.
  void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(raw) + kAlignment) & ~(kAlignment - 1));
  static_cast<void**>(aligned)[-1] = raw;
  return aligned;
}

void FreeMallocAligned(void* aligned) { std::free(static_cast<void**>(aligned)[-1]); }

#if defined(__linux__)
// Buffers of 32 MiB and more: malloc maps each one fresh and unmaps it when freed, so every training step paid
// the first-touch page faults of its large intermediates again (log-softmax, gradients): a fresh 319 MB buffer
// costs ~120 ms of 4 KiB page faults on a 2-core AMD EPYC VM, as much as computing log-softmax into it. These come
// from 2 MiB-aligned mappings with transparent huge pages requested, and freed ones are kept, most recent first,
// for the next request of the same rounded size (a training loop asks for the same sizes every step), up to a
// limit in bytes: a CPU counterpart of the caching allocators GPU frameworks use. cpuBlockCache.empty() and the
// limit (docs/api.md) bound the memory kept idle.
class LargeBlocks {
 public:
  static constexpr size_t kMinBytes = kLargeCpuBlockBytes;
  static constexpr size_t kHugePage = size_t{2} << 20;

  static LargeBlocks& Instance() {
    static LargeBlocks* blocks = new LargeBlocks();  // never destroyed: deleters may run at exit
    return *blocks;
  }

  // A block of at least nbytes (>= kMinBytes), or nullptr when the system has no memory for it.
  void* Take(size_t nbytes) {
    const size_t bytes = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    {
      std::lock_guard<std::mutex> guard(lock_);
      for (auto it = cached_.begin(); it != cached_.end(); ++it) {
        if (it->bytes != bytes) continue;
        void* block = it->block;
        cached_bytes_ -= bytes;
        cached_.erase(it);
        live_.emplace(block, bytes);
        return block;
      }
    }
    void* block = MapAligned(bytes);
    if (block == nullptr) {
      Empty();  // the kept blocks may be what the system is missing
      block = MapAligned(bytes);
      if (block == nullptr) return nullptr;
    }
    std::lock_guard<std::mutex> guard(lock_);
    live_.emplace(block, bytes);
    return block;
  }

  // Takes back a block from Take (false: not one of ours).
  bool Give(void* block) {
    std::vector<Cached> released;
    {
      std::lock_guard<std::mutex> guard(lock_);
      const auto it = live_.find(block);
      if (it == live_.end()) return false;
      const Cached freed{block, it->second};
      live_.erase(it);
      cached_.push_front(freed);
      cached_bytes_ += freed.bytes;
      TrimTo(limit_, &released);
    }
    Unmap(released);
    return true;
  }

  CpuBlockCacheInfo State() {
    std::lock_guard<std::mutex> guard(lock_);
    CpuBlockCacheInfo info;
    info.cached_bytes = cached_bytes_;
    info.blocks = cached_.size();
    info.limit_bytes = limit_;
    return info;
  }

  void SetLimit(size_t bytes) {
    std::vector<Cached> released;
    {
      std::lock_guard<std::mutex> guard(lock_);
      limit_ = bytes;
      TrimTo(limit_, &released);
    }
    Unmap(released);
  }

  void Empty() {
    std::vector<Cached> released;
    {
      std::lock_guard<std::mutex> guard(lock_);
      TrimTo(0, &released);
    }
    Unmap(released);
  }

 private:
  struct Cached {
    void* block;
    size_t bytes;
  };

  LargeBlocks() : limit_(DefaultLimit()) {}

  // 1 GiB, or an eighth of physical memory where that is less: enough for the three 319 MB buffers of a
  // cross_entropy + topk training step at 8x19x512x1024.
  static size_t DefaultLimit() {
    size_t limit = size_t{1} << 30;
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page_size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_size > 0) limit = std::min(limit, static_cast<size_t>(pages) * page_size / 8);
    return limit;
  }

  static void* MapAligned(size_t bytes) {
    const size_t mapped = bytes + kHugePage;
    void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (begin + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
    if (aligned > begin) munmap(raw, aligned - begin);
    const size_t tail = (begin + mapped) - (aligned + bytes);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
#if defined(MADV_HUGEPAGE)
    madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);  // advisory: an error changes nothing
#endif
    return reinterpret_cast<void*>(aligned);
  }

  // Under the lock: moves the least recently freed blocks beyond `limit` to `released`.
  void TrimTo(size_t limit, std::vector<Cached>* released) {
    while (cached_bytes_ > limit) {
      released->push_back(cached_.back());
      cached_bytes_ -= cached_.back().bytes;
      cached_.pop_back();
    }
  }

  // Outside the lock: unmapping a few hundred MB takes milliseconds.
  static void Unmap(const std::vector<Cached>& released) {
    for (const Cached& block : released) munmap(block.block, block.bytes);
  }

  std::mutex lock_;
  std::unordered_map<void*, size_t> live_;  // blocks handed out, with their mapped size
  std::list<Cached> cached_;                // freed blocks, most recently freed first
  size_t cached_bytes_ = 0;
  size_t limit_;
};
#endif

// BOOTSTRAPPED_CE_CPU_ALLOCATOR=default keeps LibTorch's allocator and glibc's malloc settings.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  // LibTorch 1.x declares allocate() const; 2.3+ declares it non-const and adds a pure copy_data(). Defining
  // both forms without `override` compiles against either: whichever the base declares is the override.
  c10::DataPtr allocate(size_t nbytes) { return Allocate(nbytes); }
  c10::DataPtr allocate(size_t nbytes) const { return Allocate(nbytes); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

 private:
  static c10::DataPtr Allocate(size_t nbytes) {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (nbytes == 0) return {nullptr, nullptr, &Delete, cpu};
#if defined(__linux__)
    if (nbytes >= LargeBlocks::kMinBytes) {
      void* block = LargeBlocks::Instance().Take(nbytes);
      TORCH_CHECK(block != nullptr, "DefaultCPUAllocator: not enough memory: you tried to allocate ", nbytes,
                  " bytes.");
      return {block, block, &Delete, cpu};
    }
#endif
    void* data = MallocAligned(nbytes);
    return {data, data, &Delete, cpu};
  }

  static void Delete(void* data) {
    if (data == nullptr) return;
#if defined(__linux__)
    // Large blocks are 2 MiB-aligned; a malloc'ed buffer seldom is, and is not in the table when it is.
    const bool maybe_large = (reinterpret_cast<uintptr_t>(data) & (LargeBlocks::kHugePage - 1)) == 0;
    if (maybe_large && LargeBlocks::Instance().Give(data)) return;
#endif
    FreeMallocAligned(data);
  }
};

bool installed = false;

}  // namespace

void InstallCpuAllocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* choice = std::getenv("BOOTSTRAPPED_CE_CPU_ALLOCATOR");
    if (choice != nullptr && std::strcmp(choice, "default") == 0) return;
    static CachingCpuAllocator allocator;
    c10::SetCPUAllocator(&allocator, /*priority=*/1);
    installed = true;
#if defined(__GLIBC__)
    // Fixed thresholds instead of glibc's sliding ones: buffers up to 32 MB come from the heap and freed ones are
    // kept for reuse (up to 256 MB of free top-of-heap before trimming), so a training step does not pay fresh
    // page faults for every intermediate tensor (2x19x256x512 forward+backward: 45 -> 26 ms).
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  });
}

bool CpuAllocatorInstalled() { return installed; }

CpuBlockCacheInfo CpuBlockCacheState() {
#if defined(__linux__)
  return LargeBlocks::Instance().State();
#else
  return {};
#endif
}

void EmptyCpuBlockCache() {
#if defined(__linux__)
  LargeBlocks::Instance().Empty();
#endif
}

void SetCpuBlockCacheLimit(size_t bytes) {
#if defined(__linux__)
  LargeBlocks::Instance().SetLimit(bytes);
#else
  (void)bytes;
#endif
}

}  // namespace bce
