// The intra-op thread count as one process-wide setting. LibTorch's at::set_num_threads is per calling thread
// under OpenMP (it sets the calling thread's omp_set_num_threads value; Debian's and PyPI's Linux builds use
// OpenMP): a count set in the main thread did not reach a worker_thread, nor the reverse. The count set here
// is applied to each thread on its next call into the addon.
#pragma once

namespace bce {

// Records `threads` (>= 1) for every thread and applies it to the calling thread now.
void SetProcessNumThreads(int threads);

// Applies the recorded count to the calling thread if it has not applied it yet (cheap: two loads when it has).
// Nothing when no count was ever set: each thread then keeps LibTorch's default.
void ApplyProcessNumThreads();

}  // namespace bce
