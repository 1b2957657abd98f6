#include "runtime/threads.h"

#include <ATen/Parallel.h>

#include <atomic>

namespace bce {
namespace {

// 0: never set. Each thread remembers the value it last applied, so a change is applied once per thread.
std::atomic<int> process_threads{0};
thread_local int applied_threads = 0;

}  // namespace

void SetProcessNumThreads(int threads) {
  at::set_num_threads(threads);
  applied_threads = threads;
  process_threads.store(threads, std::memory_order_relaxed);
}

void ApplyProcessNumThreads() {
  const int wanted = process_threads.load(std::memory_order_relaxed);
  if (wanted == 0 || wanted == applied_threads) return;
  at::set_num_threads(wanted);
  applied_threads = wanted;
}

}  // namespace bce
