#include "loss/fused/gradient_buffer.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <mutex>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace bce {
namespace fused {

// Asks for transparent huge pages on a large fresh buffer before it is first written: a fresh 300 MB buffer
// otherwise costs ~230 ms of 4 KiB page faults (performance-notes section 6). Advisory; errors are ignored.
void AdviseHugePages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

namespace {

#if defined(__linux__)
// Gradients at least this large come from GradientBlockCache; smaller ones from the CPU allocator, whose malloc
// heap already reuses freed memory (runtime.cc: malloc serves blocks up to 32 MB from the heap).
constexpr size_t kCachedGradientMinBytes = size_t{32} << 20;

// Keeps the last freed large gradient block for the next backward of the same size. A fresh gradient is mapped
// by malloc and unmapped when freed, so every training step paid its first-touch page faults again: ~35 ms for
// 319 MB even with huge pages, and 200-380 ms on the steps where the VM hands the process memory it has not
// touched before (measured on the 2-core test VM; every huge page was granted). Holds at most one block, so
// idle memory is at most one gradient, as with a caching allocator; the block is a 2 MiB-aligned mapping so that
// huge pages cover all of it.
class GradientBlockCache {
 public:
  static GradientBlockCache& Instance() {
    static GradientBlockCache* cache = new GradientBlockCache();  // never destroyed: deleters may run at exit
    return *cache;
  }

  // A block of `bytes` (a multiple of 2 MiB), or nullptr when mmap fails.
  void* Take(size_t bytes) {
    void* stale = nullptr;
    size_t stale_bytes = 0;
    {
      std::lock_guard<std::mutex> guard(lock_);
      if (block_ != nullptr && bytes_ == bytes) {
        void* reused = block_;
        block_ = nullptr;
        return reused;
      }
      std::swap(stale, block_);
      stale_bytes = bytes_;
    }
    if (stale != nullptr) munmap(stale, stale_bytes);  // a different size: free it before mapping the new one
    return MapAligned(bytes);
  }

  void Give(void* block, size_t bytes) {
    {
      std::lock_guard<std::mutex> guard(lock_);
      if (block_ == nullptr) {
        block_ = block;
        bytes_ = bytes;
        return;
      }
    }
    munmap(block, bytes);
  }

 private:
  static constexpr size_t kHugePage = size_t{2} << 20;

  static void* MapAligned(size_t bytes) {
    const size_t mapped = bytes + kHugePage;
    void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (begin + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
    if (aligned > begin) munmap(raw, aligned - begin);
    const size_t tail = (begin + mapped) - (aligned + bytes);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
    AdviseHugePages(reinterpret_cast<void*>(aligned), bytes);
    return reinterpret_cast<void*>(aligned);
  }

  std::mutex lock_;
  void* block_ = nullptr;
  size_t bytes_ = 0;
};

// An uninitialised tensor shaped like `input` in a cached block, or undefined when none can be had.
at::Tensor CachedEmptyLike(const at::Tensor& input) {
  const size_t huge_page = size_t{2} << 20;
  const size_t bytes = (input.nbytes() + huge_page - 1) / huge_page * huge_page;
  void* block = GradientBlockCache::Instance().Take(bytes);
  if (block == nullptr) return at::Tensor();
  return at::from_blob(
      block, input.sizes(), [bytes](void* data) { GradientBlockCache::Instance().Give(data, bytes); },
      input.options());
}
#endif

}  // namespace

// The gradient buffer: uninitialised, every element is written by ComputeGradient.
at::Tensor EmptyLike(const at::Tensor& input) {
#if defined(__linux__)
  if (input.nbytes() >= kCachedGradientMinBytes) {
    at::Tensor cached = CachedEmptyLike(input);
    if (cached.defined()) return cached;
  }
#endif
  at::Tensor buffer = at::empty(input.sizes(), input.options());
  AdviseHugePages(buffer.data_ptr(), buffer.nbytes());
  return buffer;
}

}  // namespace fused
}  // namespace bce
