// Fused CPU bootstrapped cross-entropy. See fused_ce_cpu.h for what it covers and
// the shared performance notes (shared/notes/performance-notes.md) section 3 for the design.
//
// Data flow for an input viewed as (N, C, S), P = N * S pixels:
//   forward  1. per pixel: max, sum of exp, loss = w[y] * ((max - x[y]) + log(sum)), written to a P-float vector;
//               the valid and out-of-range labels are counted (no separate pass over the labels), and a histogram
//               of the top 16 bits of each valid loss's order-preserving key is kept;
//            2. one pass over the losses sums those above the bucket that holds the k-th largest and lists the
//               pixels inside it; the exact k-th key and the ties are settled on that short list, and ties not
//               taken are overwritten as ignored, so that "selected" is simply Key(loss) >= the k-th key.
//   backward recomputes max and sum of exp for the selected pixels only and writes (softmax - onehot) * scale
//            for them and zeros elsewhere; runs without a selected pixel are zero-filled without reading logits.
// Saved for backward: the input, target and weight (references, no copies) and the loss vector.
// Pools under 65536 pixels skip the histogram and select with nth_element. Work is split over
// at::get_num_threads() std::threads (see ParallelFor for why not at::parallel_for).
// Extra memory: 4P bytes (the loss vector, kept for backward) and the candidate list (8 bytes per pixel in the
// k-th loss's bucket, usually a small fraction); backward the gradient.
// Gradients of 32 MB and more live in blocks that are kept, one at most, for the next backward of the same size
// once freed (GradientBlockCache), so a training loop does not pay the page faults of a fresh gradient each step.
#include "loss/fused_ce_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// Phase times on stderr, for tuning: build with -DBCE_PHASE_TIMING (docs/performance.md says how).
#ifdef BCE_PHASE_TIMING
#include <chrono>
#include <cstdio>
#define BCE_PHASE_START() auto bce_phase_t0 = std::chrono::steady_clock::now()
#define BCE_PHASE(name) do { auto now = std::chrono::steady_clock::now(); \
  std::fprintf(stderr, "  %s %.2f ms\n", name, std::chrono::duration<double, std::milli>(now - bce_phase_t0).count()); \
  bce_phase_t0 = now; } while (0)
#else
#define BCE_PHASE_START() (void)0
#define BCE_PHASE(name) (void)0
#endif

namespace bce {
namespace {

// Pixels per selection block. Blocks are fixed (not per thread) so that ties are taken in pixel order and the
// double sums are added in the same order whatever the thread count.
constexpr int64_t kBlockPixels = int64_t{1} << 16;
// Minimum pixels per parallel task, so that small inputs do not pay for starting threads.
constexpr int64_t kMinPixelsPerTask = 16384;

// Radix select: two 16-bit digits of the 32-bit keys.
constexpr int kDigitBits = 16;
constexpr uint32_t kDigitBuckets = uint32_t{1} << kDigitBits;
// Pools smaller than this select with nth_element instead of histograms.
constexpr int64_t kHistogramSelectMinPixels = int64_t{1} << 16;

// The exp loops are compute-bound. On x86-64 with GCC or Clang they are also compiled for AVX2 + FMA and chosen at
// run time when the CPU has both, so the addon needs no -march flags and still runs on any x86-64. (Not
// target_clones("arch=haswell"): its resolver tests the CPU model, so an AMD Zen 3 gets the default clone.)
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define BCE_AVX2_PATH 1
#define BCE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif
// GCC inlines a function into one compiled for another target only when forced to.
#if defined(__GNUC__)
#define BCE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define BCE_ALWAYS_INLINE inline
#endif

// ---------------------------------------------------------------------------------------------------------------
// Scalar helpers written so that GCC vectorises the loops that call them at -O3 with plain SSE2 (no -march).
// at::vec::Vectorized<float>::exp would be the obvious choice, but without CPU_CAPABILITY_AVX2 (which an addon
// built without -mavx2 does not get) it is a loop over std::exp, i.e. scalar libm.

BCE_ALWAYS_INLINE float BitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

BCE_ALWAYS_INLINE uint32_t FloatToBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// The branches below are integer selects on purpose: a float `x > lo ? x : lo` lets GCC duplicate the constant
// branch, and the loop then no longer vectorises ("control flow in loop").

// exp(x) for x <= 0 (a softmax argument x - max): Cephes expf, about 1 ulp. Below about -87.3 the result is 0
// instead of a denormal; NaN and -inf (only from non-finite logits, handled exactly elsewhere) also give 0.
BCE_ALWAYS_INLINE float ExpOfNonPositive(float x) {
  const float t = x * 1.44269504088896341f;
  // Truncation of the non-positive t - 0.5 rounds t to the nearest integer (NaN and -inf give INT_MIN in practice;
  // either way the result is masked to 0 below).
  int32_t n = static_cast<int32_t>(t - 0.5f);
  const uint32_t in_range = n >= -126 ? 0xffffffffu : 0u;
  n = n >= -126 ? n : -126;
  const float nf = static_cast<float>(n);
  float r = x - nf * 0.693359375f;
  r = r + nf * 2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float mantissa = poly * (r * r) + r + 1.0f;
  const float value = mantissa * BitsToFloat(static_cast<uint32_t>(n + 127) << 23);
  return BitsToFloat(FloatToBits(value) & in_range);
}

// log(x) for a normal x > 0 (a sum of exps, in [1, C]): Cephes logf, about 1 ulp.
BCE_ALWAYS_INLINE float LogOfPositive(float x) {
  const uint32_t bits = FloatToBits(x);
  int32_t exponent = static_cast<int32_t>(bits >> 23) - 126;         // x = m * 2^exponent, m in [0.5, 1)
  float m = BitsToFloat((bits & 0x007fffffu) | 0x3f000000u);
  // Fold m into [sqrt(1/2), sqrt(2)) - 1: below sqrt(1/2), use 2m - 1 and one less in the exponent.
  const int32_t below_sqrt_half = m < 0.707106781186547524f ? 1 : 0;
  exponent -= below_sqrt_half;
  m = (m - 1.0f) + BitsToFloat(FloatToBits(m) & (0u - static_cast<uint32_t>(below_sqrt_half)));
  const float m2 = m * m;
  float poly = 7.0376836292e-2f;
  poly = poly * m - 1.1514610310e-1f;
  poly = poly * m + 1.1676998740e-1f;
  poly = poly * m - 1.2420140846e-1f;
  poly = poly * m + 1.4249322787e-1f;
  poly = poly * m - 1.6668057665e-1f;
  poly = poly * m + 2.0000714765e-1f;
  poly = poly * m - 2.4999993993e-1f;
  poly = poly * m + 3.3333331174e-1f;
  const float e = static_cast<float>(exponent);
  float tail = m * m2 * poly;
  tail += e * -2.12194440e-4f;
  tail += -0.5f * m2;
  return (m + tail) + e * 0.693359375f;
}

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

// ---------------------------------------------------------------------------------------------------------------
// Order-preserving keys: a > b as floats (NaN above +inf) iff Key(a) > Key(b) as unsigned integers.

// The loss stored for an ignored pixel: its key is 0, below every valid loss (valid NaNs are made canonical).
const float kIgnoredLoss = BitsToFloat(0xffffffffu);
const float kCanonicalNaN = std::numeric_limits<float>::quiet_NaN();

inline uint32_t Key(float value) {
  const uint32_t bits = FloatToBits(value);
  // Branch-free form of (negative ? ~bits : bits | sign bit), so that loops over keys vectorise.
  return bits ^ (static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31) | 0x80000000u);
}

// ---------------------------------------------------------------------------------------------------------------
// Layout: the input as (N, C, S) and the runs of pixels the kernels work on.

// Pixels per run for C classes. A run's C x length logits are copied to a scratch block that fits L2, so that the
// exp pass does not re-read them from memory: read in place they would not stay cached, since the C rows of a run
// sit S floats apart, often a power of two such as 2 MiB, and so map to the same cache sets. Long runs matter
// too: a run reads C separate streams, and on the 2-core test VM 16 KiB per stream read 19 x 2 MiB-strided
// streams at ~10 GB/s against ~6 GB/s at 1.25 KiB.
int64_t RunPixelsFor(int64_t classes) {
  constexpr int64_t kScratchFloats = 77824;  // 304 KiB
  const int64_t pixels = (kScratchFloats / classes) / 16 * 16;
  return std::min<int64_t>(std::max<int64_t>(pixels, 16), 4096);
}

// A run of consecutive pixels (in the flat pixel index n * S + s) whose logits sit at fixed strides.
struct PixelRun {
  int64_t first_pixel = 0;
  int64_t length = 0;
  int64_t logit_offset = 0;  // offset of the first pixel's class-0 logit
};

class RunPlan {
 public:
  explicit RunPlan(const at::Tensor& input)
      : samples_(input.size(0)),
        classes_(input.size(1)),
        spatial_(samples_ * classes_ == 0 ? 0 : input.numel() / (samples_ * classes_)),
        run_pixels_(RunPixelsFor(classes_)) {
    if (planar()) {
      // Spatial input: a run stays within one sample; pixels are adjacent, classes S apart.
      runs_per_sample_ = (spatial_ + run_pixels_ - 1) / run_pixels_;
      runs_ = samples_ * runs_per_sample_;
    } else {
      // (N, C) or S == 1: a run spans samples; each pixel's classes are adjacent.
      runs_ = (samples_ + run_pixels_ - 1) / run_pixels_;
    }
  }

  int64_t classes() const { return classes_; }
  int64_t pixels() const { return samples_ * spatial_; }
  int64_t runs() const { return runs_; }
  int64_t run_pixels() const { return run_pixels_; }
  bool planar() const { return spatial_ > 1; }
  int64_t pixel_stride() const { return planar() ? 1 : classes_; }
  int64_t class_stride() const { return planar() ? spatial_ : 1; }
  // Runs per parallel task, so that a task holds at least kMinPixelsPerTask pixels.
  int64_t grain() const { return std::max<int64_t>(1, kMinPixelsPerTask / run_pixels_); }

  PixelRun run(int64_t index) const {
    PixelRun run;
    if (planar()) {
      const int64_t sample = index / runs_per_sample_;
      const int64_t start = (index % runs_per_sample_) * run_pixels_;
      run.first_pixel = sample * spatial_ + start;
      run.length = std::min(run_pixels_, spatial_ - start);
      run.logit_offset = sample * classes_ * spatial_ + start;
    } else {
      run.first_pixel = index * run_pixels_;
      run.length = std::min(run_pixels_, samples_ - run.first_pixel);
      run.logit_offset = run.first_pixel * classes_;
    }
    return run;
  }

 private:
  int64_t samples_;
  int64_t classes_;
  int64_t spatial_;
  int64_t run_pixels_;
  int64_t runs_per_sample_ = 0;
  int64_t runs_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// Per-run softmax statistics.

// Work arrays for one run, allocated once per parallel task.
struct RunScratch {
  explicit RunScratch(const RunPlan& plan)
      : values(plan.classes() * plan.run_pixels()), max_logit(plan.run_pixels()), sum_exp(plan.run_pixels()),
        per_pixel(plan.run_pixels()), selected(plan.run_pixels()), row(plan.run_pixels()) {}
  // Class-major rows of logits: in forward the run's (rows of run.length), in backward the selected pixels' (rows
  // of their count), which backward turns into exps and then gradient values.
  std::vector<float> values;
  std::vector<float> max_logit;
  std::vector<float> sum_exp;
  std::vector<float> per_pixel;   // log(sum_exp) in forward, scale / sum_exp in backward
  std::vector<int32_t> selected;  // backward: the run's selected pixels, as offsets in the run
  std::vector<float> row;         // backward: the gradient row being assembled
};

// Asks for the next run's part of a class row (the `length` floats after this run's), one run ahead: the C rows of
// a run are C separate streams, more than the hardware prefetchers follow. A prefetch never faults, so reading
// past the end of the sample is harmless.
inline void PrefetchNextRun(const float* row, int64_t length) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr int64_t kFloatsPerLine = 16;
  for (int64_t offset = length; offset < 2 * length; offset += kFloatsPerLine) __builtin_prefetch(row + offset);
#else
  (void)row;
  (void)length;
#endif
}

// Copies the run's logits into scratch.values and takes each pixel's maximum; returns whether any logit is NaN.
// kUnitPixelStride makes the pixel stride a compile-time 1 (spatial inputs), so the loops vectorise.
template <bool kUnitPixelStride>
bool GatherAndMax(const float* logits, int64_t length, int64_t classes, int64_t pixel_stride_arg,
                  int64_t class_stride, RunScratch& scratch) {
  const int64_t pixel_stride = kUnitPixelStride ? 1 : pixel_stride_arg;
  float* __restrict max_logit = scratch.max_logit.data();
  uint32_t any_nan = 0;
  for (int64_t c = 0; c < classes; ++c) {
    const float* __restrict row = logits + c * class_stride;
    float* __restrict values = scratch.values.data() + c * length;
    if (kUnitPixelStride) PrefetchNextRun(row, length);
    if (c == 0) {
      for (int64_t j = 0; j < length; ++j) max_logit[j] = row[j * pixel_stride];
    }
    for (int64_t j = 0; j < length; ++j) {
      const float x = row[j * pixel_stride];
      values[j] = x;
      max_logit[j] = x > max_logit[j] ? x : max_logit[j];
      any_nan |= static_cast<uint32_t>(x != x);
    }
  }
  return any_nan != 0;
}

// sum_exp[j] = sum over classes of exp(values - max); with keep_exps the exps replace the values.
BCE_ALWAYS_INLINE void SumExpBody(int64_t length, int64_t classes, bool keep_exps, RunScratch& scratch) {
  const float* __restrict max_logit = scratch.max_logit.data();
  float* __restrict sum_exp = scratch.sum_exp.data();
  for (int64_t j = 0; j < length; ++j) sum_exp[j] = 0.0f;
  for (int64_t c = 0; c < classes; ++c) {
    float* __restrict values = scratch.values.data() + c * length;
    if (keep_exps) {
      for (int64_t j = 0; j < length; ++j) {
        const float e = ExpOfNonPositive(values[j] - max_logit[j]);
        values[j] = e;
        sum_exp[j] += e;
      }
    } else {
      for (int64_t j = 0; j < length; ++j) sum_exp[j] += ExpOfNonPositive(values[j] - max_logit[j]);
    }
  }
}

BCE_ALWAYS_INLINE void LogOfSumsBody(const float* __restrict sums, int64_t length, float* __restrict logs) {
  for (int64_t j = 0; j < length; ++j) logs[j] = LogOfPositive(sums[j]);
}

#if defined(BCE_AVX2_PATH)
BCE_TARGET_AVX2 void SumExpAvx2(int64_t length, int64_t classes, bool keep_exps, RunScratch& scratch) {
  SumExpBody(length, classes, keep_exps, scratch);
}
BCE_TARGET_AVX2 void LogOfSumsAvx2(const float* sums, int64_t length, float* logs) {
  LogOfSumsBody(sums, length, logs);
}
bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

void SumExp(int64_t length, int64_t classes, bool keep_exps, RunScratch& scratch) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return SumExpAvx2(length, classes, keep_exps, scratch);
#endif
  SumExpBody(length, classes, keep_exps, scratch);
}

// logs[j] = log(sums[j]).
void LogOfSums(const float* sums, int64_t length, float* logs) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return LogOfSumsAvx2(sums, length, logs);
#endif
  LogOfSumsBody(sums, length, logs);
}

// Fills the scratch for one run; returns whether any logit is NaN (then callers check pixels one by one).
bool RunSoftmaxStats(const RunPlan& plan, const float* logits, int64_t length, bool keep_exps, RunScratch& scratch) {
  const bool any_nan = plan.planar()
                           ? GatherAndMax<true>(logits, length, plan.classes(), 1, plan.class_stride(), scratch)
                           : GatherAndMax<false>(logits, length, plan.classes(), plan.pixel_stride(),
                                                 plan.class_stride(), scratch);
  SumExp(length, plan.classes(), keep_exps, scratch);
  return any_nan;
}

// Whether pixel j needs the exact path: a NaN logit or a non-finite maximum (the fast exp maps both to 0).
inline bool NeedsExactPath(bool run_has_nan, const RunScratch& scratch, int64_t j) {
  return run_has_nan || !std::isfinite(scratch.max_logit[j]);
}

// log-sum-exp of one pixel's logits with libm and PyTorch's non-finite behaviour (a NaN logit, or a largest logit
// of +-inf, gives NaN; -inf logits below a finite maximum contribute 0). For the rare pixels the fast path skips.
float ExactLogSumExp(const float* logits, int64_t classes, int64_t class_stride) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < classes; ++c) {
    const float x = logits[c * class_stride];
    if (std::isnan(x)) return kCanonicalNaN;
    max_logit = std::max(max_logit, x);
  }
  float sum = 0.0f;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(logits[c * class_stride] - max_logit);
  return max_logit + std::log(sum);
}

// ---------------------------------------------------------------------------------------------------------------
// Forward pass 1: losses, the valid-pixel count and the histogram of the loss keys' top digit.

struct LossInputs {
  const float* logits;
  const int64_t* target;
  const float* weight;  // nullptr when unweighted
  int64_t ignore_index;
};

using Histogram = std::vector<uint64_t>;

// What pass 1 learns besides the losses.
struct LossPassResult {
  Histogram top_histogram;   // of the valid losses' top key digits; empty for small pools
  int64_t valid = 0;         // pixels whose label is not ignore_index and in [0, C)
  int64_t out_of_range = 0;  // pixels whose label is neither ignore_index nor in [0, C): an error for the caller
};

struct PassCounts {
  int64_t valid = 0;
  int64_t out_of_range = 0;
};

// Writes the run's losses (kIgnoredLoss for ignored and out-of-range labels), counts its valid and out-of-range
// labels, and, unless `histogram` is null, counts the valid losses' top key digits into it. Counting here saves
// the separate pass over the labels that the reference path makes (CountPool).
void RunLosses(const RunPlan& plan, const PixelRun& run, const LossInputs& in, RunScratch& scratch, float* losses,
               uint32_t* histogram, PassCounts& counts) {
  const float* logits = in.logits + run.logit_offset;
  const bool run_has_nan = RunSoftmaxStats(plan, logits, run.length, /*keep_exps=*/false, scratch);
  float* __restrict log_sum = scratch.per_pixel.data();
  LogOfSums(scratch.sum_exp.data(), run.length, log_sum);
  const uint64_t classes = static_cast<uint64_t>(plan.classes());
  for (int64_t j = 0; j < run.length; ++j) {
    const int64_t pixel = run.first_pixel + j;
    const int64_t label = in.target[pixel];
    if (label == in.ignore_index || static_cast<uint64_t>(label) >= classes) {
      counts.out_of_range += label == in.ignore_index ? 0 : 1;
      losses[pixel] = kIgnoredLoss;
      continue;
    }
    ++counts.valid;
    const float label_logit = scratch.values[label * run.length + j];
    // (max - x[y]) and log(sum) are both >= 0, so the loss is never a tiny negative number.
    float loss = NeedsExactPath(run_has_nan, scratch, j)
                     ? ExactLogSumExp(logits + j * plan.pixel_stride(), plan.classes(), plan.class_stride()) -
                           label_logit
                     : (scratch.max_logit[j] - label_logit) + log_sum[j];
    if (in.weight != nullptr) loss *= in.weight[label];
    if (std::isnan(loss)) loss = kCanonicalNaN;
    losses[pixel] = loss;
    if (histogram != nullptr) ++histogram[Key(loss) >> kDigitBits];
  }
}

// Writes every pixel's loss and counts the pool; the histogram only when `with_histogram`.
LossPassResult ComputeLosses(const RunPlan& plan, const LossInputs& in, bool with_histogram, float* losses) {
  LossPassResult result;
  result.top_histogram.assign(with_histogram ? kDigitBuckets : 0, 0);
  std::mutex lock;
  ParallelForPieces(0, plan.runs(), plan.grain(), [&](PieceQueue& queue) {
    RunScratch scratch(plan);
    std::vector<uint32_t> local(with_histogram ? kDigitBuckets : 0, 0);
    uint32_t* histogram = with_histogram ? local.data() : nullptr;
    PassCounts counts;
    int64_t begin = 0, end = 0;
    while (queue.Take(&begin, &end)) {
      for (int64_t r = begin; r < end; ++r) RunLosses(plan, plan.run(r), in, scratch, losses, histogram, counts);
    }
    std::lock_guard<std::mutex> guard(lock);
    for (size_t b = 0; b < local.size(); ++b) result.top_histogram[b] += local[b];
    result.valid += counts.valid;
    result.out_of_range += counts.out_of_range;
  });
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Forward pass 2: exactly the k largest losses, their sum, and a loss vector that backward can read the
// selection from.
//
// The k-th largest key is found by two 16-bit digits. Pass 1 gave the histogram of the top digit, so the bucket
// holding the k-th largest is known; one pass over the losses then sums every loss above that bucket (selected
// for sure) and lists the pixels inside it, the candidates (typically a small fraction: a bucket spans 1/128 of
// an octave). The low digit and the ties are settled on the candidates alone. Selection is then simply
// Key(loss) >= threshold key: candidates below the threshold already fail it, and threshold ties that are not
// taken get kIgnoredLoss written over their loss, so backward needs neither a mask nor the tie rule.
//
// Ties are taken in pixel order, and the double sums are formed per fixed block of pixels and added in block
// order, so the result does not depend on the thread count.

struct Selection {
  uint32_t key = 0;  // the k-th largest key: a pixel is selected iff Key(its loss) >= key, after the tie fix-up
  double loss_sum = 0.0;
  double weight_sum = 0.0;  // sum of w[y] over the selected pixels (0 when unweighted)
};

struct BucketPick {
  uint32_t bucket = 0;
  int64_t above = 0;  // elements in higher buckets
};

// The bucket holding the `rank`-th largest element (rank >= 1) of a histogram, walking down from the top.
BucketPick PickBucket(const Histogram& histogram, int64_t rank) {
  int64_t above = 0;
  for (uint32_t b = static_cast<uint32_t>(histogram.size()); b-- > 0;) {
    const int64_t count = static_cast<int64_t>(histogram[b]);
    if (above + count >= rank) return {b, above};
    above += count;
  }
  TORCH_CHECK(false, "fused bootstrapped CE: selection found fewer than ", rank, " valid pixels (internal error)");
  return {};
}

int64_t BlockCount(int64_t pixels) { return (pixels + kBlockPixels - 1) / kBlockPixels; }

inline double WeightOf(const LossInputs& in, int64_t pixel) {
  return in.weight != nullptr ? static_cast<double>(in.weight[in.target[pixel]]) : 0.0;
}

// Settles the candidates (pixels in increasing order whose keys lie in [lowest, highest], `rank` of the k still to
// be chosen among them): finds the threshold key, adds the selected candidates to `selection`, and overwrites the
// threshold ties that are not taken with kIgnoredLoss.
void SettleCandidates(const std::vector<int64_t>& candidates, int64_t rank, float* losses, const LossInputs& in,
                      Selection& selection) {
  TORCH_CHECK(rank >= 1 && static_cast<int64_t>(candidates.size()) >= rank,
              "fused bootstrapped CE: selection found fewer than ", rank, " candidates (internal error)");
  std::vector<uint32_t> keys(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) keys[i] = Key(losses[candidates[i]]);
  std::vector<uint32_t> ranked(keys);
  std::nth_element(ranked.begin(), ranked.begin() + (rank - 1), ranked.end(), std::greater<uint32_t>());
  const uint32_t threshold = ranked[rank - 1];
  int64_t above = 0;
  for (uint32_t key : keys) above += key > threshold ? 1 : 0;
  int64_t ties_to_take = rank - above;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const int64_t pixel = candidates[i];
    bool selected = keys[i] > threshold;
    if (keys[i] == threshold) {
      selected = ties_to_take > 0;
      ties_to_take -= selected ? 1 : 0;
      if (!selected) losses[pixel] = kIgnoredLoss;
    }
    if (selected) {
      selection.loss_sum += static_cast<double>(losses[pixel]);
      selection.weight_sum += WeightOf(in, pixel);
    }
  }
  selection.key = threshold;
}

// Small pools: every valid pixel is a candidate.
Selection SelectByPartition(float* losses, int64_t pixels, int64_t k, const LossInputs& in) {
  std::vector<int64_t> candidates;
  candidates.reserve(pixels);
  for (int64_t i = 0; i < pixels; ++i) {
    if (Key(losses[i]) != 0) candidates.push_back(i);  // 0: ignored pixel
  }
  Selection selection;
  SettleCandidates(candidates, k, losses, in, selection);
  return selection;
}

// What one block of pixels contributes: the sums of its losses above the candidate bucket, and its candidates.
struct BlockPart {
  double loss_sum = 0.0;
  double weight_sum = 0.0;
  std::vector<int64_t> candidates;
};

constexpr int kSumLanes = 8;

// Adds the losses of [begin, end) whose top key digit is above `bucket` (and their weights) into per-lane sums:
// lanes instead of one running sum so that the loop vectorises and the additions do not wait on one another.
// Selects, not branches: about p of the pixels are above, in no predictable order.
void SumAboveBucket(const float* __restrict losses, int64_t begin, int64_t end, uint32_t bucket, const LossInputs& in,
                    double* __restrict loss_lanes, double* __restrict weight_lanes) {
  int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes) {
    for (int lane = 0; lane < kSumLanes; ++lane) {
      const float loss = losses[i + lane];
      // An integer select (a float one would be a branch): the loss itself above the bucket, else +0.
      const uint32_t keep = (Key(loss) >> kDigitBits) > bucket ? 0xffffffffu : 0u;
      loss_lanes[lane] += static_cast<double>(BitsToFloat(FloatToBits(loss) & keep));
    }
  }
  for (; i < end; ++i) loss_lanes[0] += (Key(losses[i]) >> kDigitBits) > bucket ? static_cast<double>(losses[i]) : 0.0;
  if (in.weight == nullptr) return;
  for (i = begin; i < end; ++i) {
    weight_lanes[i % kSumLanes] +=
        (Key(losses[i]) >> kDigitBits) > bucket ? static_cast<double>(in.weight[in.target[i]]) : 0.0;
  }
}

Selection SelectByHistogram(float* losses, int64_t pixels, int64_t k, const Histogram& top_histogram,
                            const LossInputs& in) {
  const BucketPick top = PickBucket(top_histogram, k);
  const uint32_t bucket = top.bucket;
  std::vector<BlockPart> parts(BlockCount(pixels));
  ParallelFor(0, static_cast<int64_t>(parts.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      BlockPart& part = parts[b];
      const int64_t stop = std::min(pixels, (b + 1) * kBlockPixels);
      double loss_lanes[kSumLanes] = {};
      double weight_lanes[kSumLanes] = {};
      SumAboveBucket(losses, b * kBlockPixels, stop, bucket, in, loss_lanes, weight_lanes);
      for (int64_t i = b * kBlockPixels; i < stop; ++i) {
        if ((Key(losses[i]) >> kDigitBits) == bucket) part.candidates.push_back(i);
      }
      for (int lane = 0; lane < kSumLanes; ++lane) {
        part.loss_sum += loss_lanes[lane];
        part.weight_sum += weight_lanes[lane];
      }
    }
  });
  Selection selection;
  std::vector<int64_t> candidates;
  size_t candidate_count = 0;
  for (const BlockPart& part : parts) candidate_count += part.candidates.size();
  candidates.reserve(candidate_count);
  for (BlockPart& part : parts) {
    selection.loss_sum += part.loss_sum;
    selection.weight_sum += part.weight_sum;
    candidates.insert(candidates.end(), part.candidates.begin(), part.candidates.end());
    std::vector<int64_t>().swap(part.candidates);
  }
  SettleCandidates(candidates, k - top.above, losses, in, selection);
  return selection;
}

// Small pools: the histograms (65536 buckets) would cost more than the pool itself.
bool UseHistogramSelect(int64_t pixels) { return pixels >= kHistogramSelectMinPixels; }

Selection SelectTopK(float* losses, int64_t pixels, int64_t k, const Histogram& top_histogram,
                     const LossInputs& in) {
  return UseHistogramSelect(pixels) ? SelectByHistogram(losses, pixels, k, top_histogram, in)
                                    : SelectByPartition(losses, pixels, k, in);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward.

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

// Copies a finished gradient row to dst. The gradient is written once and not read again here, so on x86-64
// aligned rows use non-temporal stores: they skip reading each destination line first (a third less traffic) and
// keep the logits of the next runs in cache. StreamFence() must follow before the task ends.
void WriteRow(const float* __restrict src, int64_t length, float* dst) {
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0) {
    int64_t j = 0;
    for (; j + 4 <= length; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
    for (; j < length; ++j) dst[j] = src[j];
    return;
  }
#endif
  std::memcpy(dst, src, length * sizeof(float));
}

void ZeroRow(int64_t length, float* dst) {
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0) {
    int64_t j = 0;
    for (; j + 4 <= length; j += 4) _mm_stream_ps(dst + j, _mm_setzero_ps());
    for (; j < length; ++j) dst[j] = 0.0f;
    return;
  }
#endif
  std::memset(dst, 0, length * sizeof(float));
}

// Orders the non-temporal stores of this thread before the parallel region ends.
void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

struct GradientInputs {
  LossInputs loss;
  const float* losses;     // forward's loss vector after the tie fix-up
  uint32_t threshold_key;  // selected iff Key(loss) >= threshold_key
  float scale;             // grad_out / denominator
};

void ZeroRun(const RunPlan& plan, const PixelRun& run, float* grad) {
  if (plan.planar()) {
    for (int64_t c = 0; c < plan.classes(); ++c) ZeroRow(run.length, grad + run.logit_offset + c * plan.class_stride());
  } else {
    ZeroRow(run.length * plan.classes(), grad + run.logit_offset);
  }
}

// Lists the run's selected pixels in scratch.selected; returns how many there are.
int64_t ListSelected(const float* losses, uint32_t threshold_key, int64_t length, RunScratch& scratch) {
  int32_t* selected = scratch.selected.data();
  int64_t count = 0;
  for (int64_t j = 0; j < length; ++j) {
    selected[count] = static_cast<int32_t>(j);
    count += Key(losses[j]) >= threshold_key ? 1 : 0;  // branch-free: selection is random at the pixel level
  }
  return count;
}

// Copies the logits of the run's `count` selected pixels into scratch.values (class-major rows of `count`) and
// takes their maxima; returns whether any of them is NaN. Only selected pixels are gathered so that backward
// computes exps for them alone (a quarter of the pixels at p = 0.25); memory traffic is unchanged, since nearly
// every cache line of the run holds a selected pixel.
bool GatherSelectedAndMax(const RunPlan& plan, const float* logits, int64_t run_length, int64_t count,
                          RunScratch& scratch) {
  const int32_t* __restrict selected = scratch.selected.data();
  float* __restrict max_logit = scratch.max_logit.data();
  const int64_t pixel_stride = plan.pixel_stride();
  uint32_t any_nan = 0;
  for (int64_t c = 0; c < plan.classes(); ++c) {
    const float* __restrict row = logits + c * plan.class_stride();
    float* __restrict values = scratch.values.data() + c * count;
    if (plan.planar()) PrefetchNextRun(row, run_length);
    for (int64_t i = 0; i < count; ++i) {
      const float x = row[selected[i] * pixel_stride];
      values[i] = x;
      max_logit[i] = c == 0 || x > max_logit[i] ? x : max_logit[i];
      any_nan |= static_cast<uint32_t>(x != x);
    }
  }
  return any_nan != 0;
}

// The gradient column of one selected pixel with libm, for pixels with non-finite logits, written into the
// scratch (class-major, row length `stride`) in place of its exps.
void ExactPixelGradient(const float* logits, int64_t classes, int64_t class_stride, int64_t label, float scale,
                        float* column, int64_t stride) {
  const float lse = ExactLogSumExp(logits, classes, class_stride);
  for (int64_t c = 0; c < classes; ++c) {
    const float softmax = std::exp(logits[c * class_stride] - lse);
    column[c * stride] = scale * (softmax - (c == label ? 1.0f : 0.0f));
  }
}

// Turns the selected pixels' exps into gradient columns in place: grad = exp * scale / sum - scale * onehot,
// i.e. (exp - sum * onehot) * factor with factor = scale / sum, left in scratch.per_pixel. Pixels on the exact path
// get their final values and factor 1.
void PrepareSelectedColumns(const RunPlan& plan, const PixelRun& run, const GradientInputs& in, int64_t count,
                            bool any_nan, RunScratch& scratch) {
  const int32_t* selected = scratch.selected.data();
  const int64_t* target = in.loss.target + run.first_pixel;
  float* factor = scratch.per_pixel.data();
  float* values = scratch.values.data();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = selected[i];
    const float scale = in.loss.weight != nullptr ? in.scale * in.loss.weight[target[j]] : in.scale;
    if (NeedsExactPath(any_nan, scratch, i)) {
      ExactPixelGradient(in.loss.logits + run.logit_offset + j * plan.pixel_stride(), plan.classes(),
                         plan.class_stride(), target[j], scale, values + i, count);
      factor[i] = 1.0f;
    } else {
      values[target[j] * count + i] -= scratch.sum_exp[i];
      factor[i] = scale / scratch.sum_exp[i];
    }
  }
}

// Writes the run's gradient from the selected pixels' columns: zeros elsewhere.
void WriteRunGradient(const RunPlan& plan, const PixelRun& run, int64_t count, RunScratch& scratch, float* grad) {
  const int32_t* __restrict selected = scratch.selected.data();
  const float* __restrict factor = scratch.per_pixel.data();
  float* run_grad = grad + run.logit_offset;
  if (!plan.planar()) {
    // Each pixel's classes are adjacent: clear the block, then fill in the selected pixels.
    std::memset(run_grad, 0, run.length * plan.classes() * sizeof(float));
    for (int64_t c = 0; c < plan.classes(); ++c) {
      const float* values = scratch.values.data() + c * count;
      for (int64_t i = 0; i < count; ++i) run_grad[selected[i] * plan.classes() + c] = values[i] * factor[i];
    }
    return;
  }
  // Each class row is assembled in L1 and then written in one stream.
  float* __restrict row = scratch.row.data();
  for (int64_t c = 0; c < plan.classes(); ++c) {
    const float* __restrict values = scratch.values.data() + c * count;
    std::memset(row, 0, run.length * sizeof(float));
    for (int64_t i = 0; i < count; ++i) row[selected[i]] = values[i] * factor[i];
    WriteRow(row, run.length, run_grad + c * plan.class_stride());
  }
}

void RunGradient(const RunPlan& plan, const PixelRun& run, const GradientInputs& in, RunScratch& scratch,
                 float* grad) {
  const int64_t count = ListSelected(in.losses + run.first_pixel, in.threshold_key, run.length, scratch);
  if (count == 0) {
    ZeroRun(plan, run, grad);
    return;
  }
  const bool any_nan = GatherSelectedAndMax(plan, in.loss.logits + run.logit_offset, run.length, count, scratch);
  SumExp(count, plan.classes(), /*keep_exps=*/true, scratch);
  PrepareSelectedColumns(plan, run, in, count, any_nan, scratch);
  WriteRunGradient(plan, run, count, scratch, grad);
}

void ComputeGradient(const RunPlan& plan, const GradientInputs& in, float* grad) {
  ParallelForPieces(0, plan.runs(), plan.grain(), [&](PieceQueue& queue) {
    RunScratch scratch(plan);
    int64_t begin = 0, end = 0;
    while (queue.Take(&begin, &end)) {
      for (int64_t r = begin; r < end; ++r) RunGradient(plan, plan.run(r), in, scratch, grad);
    }
    StreamFence();
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The autograd function.

LossInputs LossInputsOf(const at::Tensor& input, const at::Tensor& target, const at::Tensor& weight,
                        int64_t ignore_index) {
  return {input.data_ptr<float>(), target.data_ptr<int64_t>(), weight.defined() ? weight.data_ptr<float>() : nullptr,
          ignore_index};
}

// The autograd node. The forward work (both passes) is done before apply(), because it decides k and may throw
// for out-of-range labels; forward() only records what backward needs and returns the value.
class FusedCrossEntropyFunction : public torch::autograd::Function<FusedCrossEntropyFunction> {
 public:
  // input: contiguous float32 (N, C, ...); target: contiguous int64; weight: contiguous float32 (C) or none (an
  // optional, because apply() cannot take an undefined tensor); losses: pass 2's loss vector; threshold_key: the
  // selection's; value: the loss; denominator: what the selected losses' sum was divided by.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            const c10::optional<at::Tensor>& class_weight, const at::Tensor& losses,
                            int64_t threshold_key, double value, double denominator) {
    ctx->save_for_backward({input, target});
    if (class_weight.has_value()) ctx->saved_data["weight"] = *class_weight;
    ctx->saved_data["losses"] = losses;
    ctx->saved_data["threshold_key"] = threshold_key;
    ctx->saved_data["denominator"] = denominator;
    return at::scalar_tensor(value, input.options());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    // One entry per forward argument; only the input gets a gradient.
    torch::autograd::variable_list grads(7);
    const at::Tensor& grad_output = grad_outputs[0];
    if (!grad_output.defined()) return grads;
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor losses = ctx->saved_data["losses"].toTensor();
    const RunPlan plan(input);
    GradientInputs in;
    const auto weight = ctx->saved_data.find("weight");
    // The loss vector already excludes ignored pixels, so backward needs no ignore_index.
    in.loss = LossInputsOf(input, saved[1], weight == ctx->saved_data.end() ? at::Tensor() : weight->second.toTensor(),
                           /*ignore_index=*/0);
    in.losses = losses.data_ptr<float>();
    in.threshold_key = static_cast<uint32_t>(ctx->saved_data["threshold_key"].toInt());
    in.scale = static_cast<float>(grad_output.item<double>() / ctx->saved_data["denominator"].toDouble());
    BCE_PHASE_START();
    at::Tensor grad_input = EmptyLike(input);
    ComputeGradient(plan, in, grad_input.data_ptr<float>());
    BCE_PHASE("backward");
    grads[0] = grad_input;
    return grads;
  }
};

bool IsFloatCpu(const at::Tensor& tensor) {
  return tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat && tensor.layout() == at::kStrided;
}

}  // namespace

bool FusedApplies(const at::Tensor& input, const at::Tensor& target, const BootstrappedOptions& options) {
  if (options.impl != Impl::kFused && options.impl != Impl::kAuto) return false;
  if (!IsFloatCpu(input) || !input.is_contiguous() || input.dim() < 2 || input.size(1) < 1) return false;
  if (!target.device().is_cpu() || target.scalar_type() != at::kLong) return false;
  if (options.label_smoothing != 0.0 || options.per_sample) return false;
  if (options.reduction != Reduction::kMean && options.reduction != Reduction::kSum) return false;
  if (options.weight.defined() &&
      !(IsFloatCpu(options.weight) && options.weight.dim() == 1 && options.weight.size(0) == input.size(1))) {
    return false;
  }
  // The histograms count in uint32 per task and the kernels index pixels in int64: keep well inside both.
  if (input.numel() / input.size(1) >= (int64_t{1} << 31)) return false;
  return true;
}

BootstrappedResult FusedBootstrappedCrossEntropy(const at::Tensor& input, const at::Tensor& raw_target,
                                                 const BootstrappedOptions& options) {
  const at::Tensor target = raw_target.contiguous();
  const at::Tensor weight = options.weight.defined() ? options.weight.contiguous() : at::Tensor();
  const RunPlan plan(input);
  const LossInputs in = LossInputsOf(input, target, weight, options.ignore_index);
  const int64_t pixels = plan.pixels();

  BCE_PHASE_START();
  // Pass 1. The loss vector is detached data: gradients come from backward, which recomputes the softmax.
  at::Tensor losses = at::empty({pixels}, input.options().requires_grad(false));
  AdviseHugePages(losses.data_ptr(), losses.nbytes());
  float* loss_data = losses.data_ptr<float>();
  const LossPassResult pass = ComputeLosses(plan, in, UseHistogramSelect(pixels), loss_data);
  BCE_PHASE("losses");
  CheckTargetsInRange(pass.out_of_range, plan.classes(), options.ignore_index);

  BootstrappedResult result;
  result.fused = true;
  result.n_valid = pass.valid;
  result.k = KeepCount(options.p, result.n_valid);
  if (result.k == 0) {
    result.loss = ConnectedZero(input);
    return result;
  }
  // Pass 2.
  const Selection selection = SelectTopK(loss_data, pixels, result.k, pass.top_histogram, in);
  BCE_PHASE("select");
  double denominator = 1.0;
  if (options.reduction == Reduction::kMean) {
    denominator = weight.defined() ? selection.weight_sum : static_cast<double>(result.k);
  }
  const c10::optional<at::Tensor> optional_weight = weight.defined() ? c10::optional<at::Tensor>(weight) : c10::nullopt;
  result.loss = FusedCrossEntropyFunction::apply(input, target, optional_weight, losses,
                                                 static_cast<int64_t>(selection.key),
                                                 selection.loss_sum / denominator, denominator);
  return result;
}

}  // namespace bce
