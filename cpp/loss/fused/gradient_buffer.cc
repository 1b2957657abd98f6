#include "loss/fused/gradient_buffer.h"

#include "runtime/cpu_allocator.h"

#include <ATen/ATen.h>

#include <cstdint>

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

// The gradient buffer: uninitialised, every element is written by ComputeGradient. Gradients of 32 MiB and more
// come from the addon's CPU allocator as blocks advised when they were mapped and kept for reuse once freed
// (runtime/cpu_allocator.cc), so a reused block needs no system call. The advice covers smaller ones from the malloc
// heap, and buffers from LibTorch's own allocator (BOOTSTRAPPED_CE_CPU_ALLOCATOR=default).
at::Tensor EmptyLike(const at::Tensor& input) {
  at::Tensor buffer = at::empty(input.sizes(), input.options());
  if (!CpuAllocatorInstalled() || buffer.nbytes() < kLargeCpuBlockBytes) {
    AdviseHugePages(buffer.data_ptr(), buffer.nbytes());
  }
  return buffer;
}

}  // namespace fused
}  // namespace bce
