// Threads for the fused kernel's passes.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace bce {
namespace fused {

// ---------------------------------------------------------------------------------------------------------------
// Threads.

// Runs body(chunk_begin, chunk_end) over [begin, end) split into at most at::get_num_threads() chunks of at least
// `grain`. Not at::parallel_for: its parallel branch is inline code under #ifdef _OPENMP, and the addon is not
// compiled with -fopenmp, so here it would always run serially. The body must not call ATen operators. The first
// exception thrown by a chunk is rethrown after every chunk has finished.
template <class Body>
void ParallelFor(int64_t begin, int64_t end, int64_t grain, const Body& body) {
  if (begin >= end) return;
  const int64_t range = end - begin;
  const int64_t by_grain = (range + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1);
  const int64_t tasks = std::min<int64_t>(std::max(at::get_num_threads(), 1), by_grain);
  if (tasks <= 1) {
    body(begin, end);
    return;
  }
  const int64_t chunk = (range + tasks - 1) / tasks;
  std::exception_ptr error;
  std::mutex error_lock;
  auto run_task = [&](int64_t task) {
    try {
      const int64_t task_begin = begin + task * chunk;
      if (task_begin < end) body(task_begin, std::min(end, task_begin + chunk));
    } catch (...) {
      std::lock_guard<std::mutex> guard(error_lock);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(tasks - 1);
  for (int64_t task = 1; task < tasks; ++task) {
    try {
      workers.emplace_back(run_task, task);
    } catch (const std::system_error&) {
      run_task(task);  // no thread to be had: run it here
    }
  }
  run_task(0);
  for (std::thread& worker : workers) worker.join();
  if (error) std::rethrow_exception(error);
}

// Consecutive pieces of [begin, end), handed out in order to whichever worker asks next.
class PieceQueue {
 public:
  PieceQueue(int64_t begin, int64_t end, int64_t piece)
      : next_(begin), end_(end), piece_(std::max<int64_t>(piece, 1)) {}

  // The next piece not yet taken; false when none is left.
  bool Take(int64_t* piece_begin, int64_t* piece_end) {
    const int64_t taken = next_.fetch_add(piece_);
    if (taken >= end_) return false;
    *piece_begin = taken;
    *piece_end = std::min(end_, taken + piece_);
    return true;
  }

 private:
  std::atomic<int64_t> next_;
  int64_t end_;
  int64_t piece_;
};

// Like ParallelFor over [begin, end) with `grain`, but the range is cut into pieces of `grain` that the workers
// take as they free up: each worker runs worker(queue) and loops on queue.Take(), keeping its scratch across
// pieces. A static split makes the whole call wait for its slowest thread, and on a 2-core machine any other
// process running slows one of them.
template <class Worker>
void ParallelForPieces(int64_t begin, int64_t end, int64_t grain, const Worker& worker) {
  if (begin >= end) return;
  PieceQueue queue(begin, end, grain);
  const int64_t pieces = (end - begin + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1);
  const int64_t workers = std::min<int64_t>(std::max(at::get_num_threads(), 1), pieces);
  ParallelFor(0, workers, 1, [&](int64_t, int64_t) { worker(queue); });
}

}  // namespace fused
}  // namespace bce
