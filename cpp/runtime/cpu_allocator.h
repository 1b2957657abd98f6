// The CPU allocator the addon installs into LibTorch (process-wide), and its cache of large blocks.
#pragma once

#include <cstddef>

namespace bce {

// CPU buffers of at least this many bytes come from the cache of large blocks (Linux).
constexpr size_t kLargeCpuBlockBytes = size_t{32} << 20;

// Installs the allocator once per process, unless BOOTSTRAPPED_CE_CPU_ALLOCATOR=default (see cpu_allocator.cc).
void InstallCpuAllocator();

// Whether InstallCpuAllocator replaced LibTorch's allocator.
bool CpuAllocatorInstalled();

struct CpuBlockCacheInfo {
  size_t cached_bytes = 0;  // freed large blocks kept for reuse
  size_t blocks = 0;        // how many
  size_t limit_bytes = 0;   // the most it keeps
};

CpuBlockCacheInfo CpuBlockCacheState();

// Returns every kept block to the system.
void EmptyCpuBlockCache();

// Sets the most the cache keeps (0: keep nothing), returning blocks beyond it to the system.
void SetCpuBlockCacheLimit(size_t bytes);

}  // namespace bce
