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

#include "loss/cpu_dispatch.h"

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
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
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

// Pixels per run: the unit of work handed to threads (runs are cut into blocks of kBlockLanes inside).
constexpr int64_t kRunPixels = 4096;

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
        run_pixels_(kRunPixels) {
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
// Inputs of the passes.

struct LossInputs {
  const float* logits;
  const int64_t* target;
  const float* weight;  // nullptr when unweighted
  int64_t ignore_index;
};

// Pass 1's counts of the labels.
struct PassCounts {
  int64_t valid = 0;         // not ignore_index and in [0, C)
  int64_t out_of_range = 0;  // neither ignore_index nor in [0, C)
};

// ---------------------------------------------------------------------------------------------------------------
// Blocks: both passes work on blocks of kBlockLanes consecutive pixels, one 64-byte cache line of each class row
// of a spatial input. A block's C x 16 logits are loaded once from memory into a small class-major array that
// stays in L1 (1.2 KB for 19 classes), then max, exp and the loss or gradient are computed on it lane by lane:
// loops of 16 that vectorise. (Reading a class row of a longer run twice would hit memory twice: the C rows sit
// S floats apart, often a power of two, and map to the same cache sets.) Measured on the 2-core VM at
// 8x19x512x1024: the forward pass at ~12 GB/s, against ~6 GB/s when whole runs were copied to an L2 scratch first.

constexpr int kBlockLanes = 16;
// How far ahead, in floats, each class row is prefetched: two cache lines, i.e. two blocks. The C rows are C
// separate streams, more than the hardware prefetchers follow well. (0 to 16 lines ahead measured within noise
// of one another on the test VM; two was the best of them.)
constexpr int64_t kPrefetchFloats = 32;

// Pass 1's working arrays for one block, one set per thread; lanes past the block's pixel count hold harmless
// values (logits 0).
struct BlockScratch {
  explicit BlockScratch(int64_t classes) : values(classes * kBlockLanes) {}
  std::vector<float> values;  // class-major logits: values[c * kBlockLanes + lane]
  float max_logit[kBlockLanes];
  float sum_exp[kBlockLanes];
  float per_lane[kBlockLanes];  // log(sum_exp)
};

// Whether lane needs the exact path: a NaN logit in the block or a non-finite maximum (the fast exp maps both to 0).
inline bool NeedsExactPath(bool block_has_nan, const BlockScratch& scratch, int lane) {
  return block_has_nan || !std::isfinite(scratch.max_logit[lane]);
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

// The per-pixel step of pass 1 for one block, one lane at a time: loss = w[y] * ((max - x[y]) + log(sum)), or
// kIgnoredLoss for ignored and out-of-range labels (counted); the valid losses' top key digits go into
// `histogram` unless it is null. Pixels with non-finite logits take libm (NeedsExactPath).
void ScalarPixelLosses(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                       const LossInputs& in, bool block_has_nan, const BlockScratch& scratch, float* losses,
                       uint32_t* histogram, PassCounts& counts) {
  const uint64_t classes = static_cast<uint64_t>(plan.classes());
  for (int64_t lane = 0; lane < count; ++lane) {
    const int64_t pixel = first_pixel + lane;
    const int64_t label = in.target[pixel];
    if (label == in.ignore_index || static_cast<uint64_t>(label) >= classes) {
      counts.out_of_range += label == in.ignore_index ? 0 : 1;
      losses[pixel] = kIgnoredLoss;
      continue;
    }
    ++counts.valid;
    const float label_logit = scratch.values[label * kBlockLanes + lane];
    // (max - x[y]) and log(sum) are both >= 0, so the loss is never a tiny negative number.
    float loss = NeedsExactPath(block_has_nan, scratch, static_cast<int>(lane))
                     ? ExactLogSumExp(logits + lane * plan.pixel_stride(), plan.classes(), plan.class_stride()) -
                           label_logit
                     : (scratch.max_logit[lane] - label_logit) + scratch.per_lane[lane];
    if (in.weight != nullptr) loss *= in.weight[label];
    if (std::isnan(loss)) loss = kCanonicalNaN;
    losses[pixel] = loss;
    if (histogram != nullptr) ++histogram[Key(loss) >> kDigitBits];
  }
}

// Block math, written once as plain loops (GenericBlockMath, any CPU; also the partial blocks at the end of a run)
// and once with AVX2 + FMA intrinsics (Avx2BlockMath, full blocks of spatial inputs, chosen at run time): GCC
// does not vectorise the plain loops well once it unrolls the 16 lanes. Both compute the same formulas (Cephes
// expf and logf, ~1 ulp) in the same order.

struct GenericBlockMath {
  // Loads `count` pixels' logits (count <= kBlockLanes; the other lanes get 0) into scratch.values and takes each
  // lane's maximum; returns whether any loaded logit is NaN.
  static BCE_ALWAYS_INLINE bool Load(const float* logits, int64_t count, int64_t classes, int64_t pixel_stride,
                                     int64_t class_stride, BlockScratch& scratch) {
    float* __restrict values = scratch.values.data();
    float* __restrict max_logit = scratch.max_logit;
    // -inf, not class 0's logits, so that the loop has no first-class branch. A NaN logit is not taken by the
    // maximum but flags the block, whose pixels then all take the exact path.
    for (int lane = 0; lane < kBlockLanes; ++lane) max_logit[lane] = -std::numeric_limits<float>::infinity();
    uint32_t any_nan = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const float* __restrict row = logits + c * class_stride;
      float* __restrict out = values + c * kBlockLanes;
#if defined(__GNUC__) || defined(__clang__)
      if (pixel_stride == 1) __builtin_prefetch(row + kPrefetchFloats);  // never faults
#endif
      for (int lane = 0; lane < kBlockLanes; ++lane) {
        const float x = lane < count ? row[lane * pixel_stride] : 0.0f;
        out[lane] = x;
        max_logit[lane] = x > max_logit[lane] ? x : max_logit[lane];
        any_nan |= static_cast<uint32_t>(x != x);
      }
    }
    return any_nan != 0;
  }

  // sum_exp[lane] = sum over classes of exp(values - max); with keep_exps the exps replace the values.
  static BCE_ALWAYS_INLINE void SumExps(int64_t classes, bool keep_exps, BlockScratch& scratch) {
    float* __restrict values = scratch.values.data();
    float sums[kBlockLanes] = {};
    for (int64_t c = 0; c < classes; ++c) {
      float* __restrict row = values + c * kBlockLanes;
      for (int lane = 0; lane < kBlockLanes; ++lane) {
        const float e = ExpOfNonPositive(row[lane] - scratch.max_logit[lane]);
        if (keep_exps) row[lane] = e;
        sums[lane] += e;
      }
    }
    for (int lane = 0; lane < kBlockLanes; ++lane) scratch.sum_exp[lane] = sums[lane];
  }

  // per_lane = log(sum_exp).
  static BCE_ALWAYS_INLINE void LogOfSums(BlockScratch& scratch) {
    for (int lane = 0; lane < kBlockLanes; ++lane) scratch.per_lane[lane] = LogOfPositive(scratch.sum_exp[lane]);
  }

  static BCE_ALWAYS_INLINE void PixelLosses(const RunPlan& plan, const float* logits, int64_t first_pixel,
                                            int64_t count, const LossInputs& in, bool block_has_nan,
                                            const BlockScratch& scratch, float* losses, uint32_t* histogram,
                                            PassCounts& counts) {
    ScalarPixelLosses(plan, logits, first_pixel, count, in, block_has_nan, scratch, losses, histogram, counts);
  }
};

#if defined(BCE_AVX2_PATH)
BCE_TARGET_AVX2 BCE_ALWAYS_INLINE __m256 Exp8OfNonPositive(__m256 x) {  // ExpOfNonPositive, 8 lanes
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
  __m256i n = _mm256_cvttps_epi32(_mm256_sub_ps(t, _mm256_set1_ps(0.5f)));
  const __m256i in_range = _mm256_cmpgt_epi32(n, _mm256_set1_epi32(-127));
  n = _mm256_max_epi32(n, _mm256_set1_epi32(-126));
  const __m256 nf = _mm256_cvtepi32_ps(n);
  __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fmadd_ps(nf, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 poly = _mm256_set1_ps(1.9875691500e-4f);
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.3981999507e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(8.3334519073e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(4.1665795894e-2f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.6666665459e-1f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 mantissa = _mm256_add_ps(_mm256_fmadd_ps(poly, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
  return _mm256_and_ps(_mm256_mul_ps(mantissa, scale), _mm256_castsi256_ps(in_range));
}

BCE_TARGET_AVX2 BCE_ALWAYS_INLINE __m256 Log8OfPositive(__m256 x) {  // LogOfPositive, 8 lanes
  const __m256i bits = _mm256_castps_si256(x);
  __m256i exponent = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126));
  __m256 m = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
  const __m256 below_sqrt_half = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  exponent = _mm256_add_epi32(exponent, _mm256_castps_si256(below_sqrt_half));  // all ones = -1
  m = _mm256_add_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.0f)), _mm256_and_ps(m, below_sqrt_half));
  const __m256 m2 = _mm256_mul_ps(m, m);
  __m256 poly = _mm256_set1_ps(7.0376836292e-2f);
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-1.1514610310e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(1.1676998740e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-1.2420140846e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(1.4249322787e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-1.6668057665e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(2.0000714765e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(-2.4999993993e-1f));
  poly = _mm256_fmadd_ps(poly, m, _mm256_set1_ps(3.3333331174e-1f));
  const __m256 e = _mm256_cvtepi32_ps(exponent);
  __m256 tail = _mm256_mul_ps(_mm256_mul_ps(m, m2), poly);
  tail = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), tail);
  tail = _mm256_fmadd_ps(m2, _mm256_set1_ps(-0.5f), tail);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, tail));
}

// The same operations on full blocks of spatial inputs (count == kBlockLanes, pixel stride 1). Not forced inline:
// the block functions that call them are compiled for the default target, into which GCC inlines no AVX2 code.
struct Avx2BlockMath {
  static BCE_TARGET_AVX2 bool Load(const float* logits, int64_t /*count*/, int64_t classes,
                                                     int64_t /*pixel_stride*/, int64_t class_stride,
                                                     BlockScratch& scratch) {
    float* values = scratch.values.data();
    __m256 max0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 max1 = max0;
    __m256 nan = _mm256_setzero_ps();
    for (int64_t c = 0; c < classes; ++c) {
      const float* row = logits + c * class_stride;
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats), _MM_HINT_T0);  // never faults
      const __m256 x0 = _mm256_loadu_ps(row);
      const __m256 x1 = _mm256_loadu_ps(row + 8);
      _mm256_storeu_ps(values + c * kBlockLanes, x0);
      _mm256_storeu_ps(values + c * kBlockLanes + 8, x1);
      // max(x, m) keeps m when x is NaN, as the generic x > m ? x : m does.
      max0 = _mm256_max_ps(x0, max0);
      max1 = _mm256_max_ps(x1, max1);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(x0, x1, _CMP_UNORD_Q));
    }
    _mm256_storeu_ps(scratch.max_logit, max0);
    _mm256_storeu_ps(scratch.max_logit + 8, max1);
    return _mm256_movemask_ps(nan) != 0;
  }

  static BCE_TARGET_AVX2 void SumExps(int64_t classes, bool keep_exps, BlockScratch& scratch) {
    float* values = scratch.values.data();
    const __m256 max0 = _mm256_loadu_ps(scratch.max_logit);
    const __m256 max1 = _mm256_loadu_ps(scratch.max_logit + 8);
    __m256 sum0 = _mm256_setzero_ps();
    __m256 sum1 = _mm256_setzero_ps();
    for (int64_t c = 0; c < classes; ++c) {
      float* row = values + c * kBlockLanes;
      const __m256 e0 = Exp8OfNonPositive(_mm256_sub_ps(_mm256_loadu_ps(row), max0));
      const __m256 e1 = Exp8OfNonPositive(_mm256_sub_ps(_mm256_loadu_ps(row + 8), max1));
      if (keep_exps) {
        _mm256_storeu_ps(row, e0);
        _mm256_storeu_ps(row + 8, e1);
      }
      sum0 = _mm256_add_ps(sum0, e0);
      sum1 = _mm256_add_ps(sum1, e1);
    }
    _mm256_storeu_ps(scratch.sum_exp, sum0);
    _mm256_storeu_ps(scratch.sum_exp + 8, sum1);
  }

  static BCE_TARGET_AVX2 void LogOfSums(BlockScratch& scratch) {
    _mm256_storeu_ps(scratch.per_lane, Log8OfPositive(_mm256_loadu_ps(scratch.sum_exp)));
    _mm256_storeu_ps(scratch.per_lane + 8, Log8OfPositive(_mm256_loadu_ps(scratch.sum_exp + 8)));
  }

  // ScalarPixelLosses on 16 lanes at once (labels compared as int64, the label's logit and weight gathered);
  // blocks with a non-finite logit or maximum go to ScalarPixelLosses.
  static BCE_TARGET_AVX2 void PixelLosses(const RunPlan& plan, const float* logits, int64_t first_pixel,
                                          int64_t count, const LossInputs& in, bool block_has_nan,
                                          const BlockScratch& scratch, float* losses, uint32_t* histogram,
                                          PassCounts& counts) {
    const __m256 max0 = _mm256_loadu_ps(scratch.max_logit);
    const __m256 max1 = _mm256_loadu_ps(scratch.max_logit + 8);
    // max - max is NaN exactly when the maximum is +-inf (or NaN).
    const __m256 max_not_finite = _mm256_cmp_ps(_mm256_sub_ps(max0, max0), _mm256_sub_ps(max1, max1), _CMP_UNORD_Q);
    if (block_has_nan || _mm256_movemask_ps(max_not_finite) != 0) {
      return ScalarPixelLosses(plan, logits, first_pixel, count, in, block_has_nan, scratch, losses, histogram,
                               counts);
    }
    const int64_t* target = in.target + first_pixel;
    const __m256i ignore = _mm256_set1_epi64x(in.ignore_index);
    const __m256i classes = _mm256_set1_epi64x(plan.classes());
    const __m256i minus_one = _mm256_set1_epi64x(-1);
    uint32_t valid_bits = 0;
    uint32_t out_of_range_bits = 0;
    alignas(32) uint32_t keys[kBlockLanes];
    for (int half = 0; half < 2; ++half) {
      // Eight int64 labels -> masks, then eight int32 labels (the low halves; only valid ones are used).
      __m256i valid64[2];
      __m256i labels64[2];
      for (int quarter = 0; quarter < 2; ++quarter) {
        const __m256i label = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(target + half * 8 + quarter * 4));
        const __m256i ignored = _mm256_cmpeq_epi64(label, ignore);
        const __m256i in_range =
            _mm256_and_si256(_mm256_cmpgt_epi64(label, minus_one), _mm256_cmpgt_epi64(classes, label));
        valid64[quarter] = _mm256_andnot_si256(ignored, in_range);
        const __m256i out_of_range = _mm256_andnot_si256(ignored, _mm256_xor_si256(in_range, minus_one));
        out_of_range_bits |= static_cast<uint32_t>(_mm256_movemask_pd(_mm256_castsi256_pd(out_of_range)))
                             << (half * 8 + quarter * 4);
        labels64[quarter] = label;
      }
      // Low dword of each int64 lane, in order: [a0 a1 a2 a3 b0 b1 b2 b3].
      const __m256i pick_low = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
      const __m256i label32 = _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(labels64[0], pick_low),
                                                        _mm256_permutevar8x32_epi32(labels64[1], pick_low), 0x20);
      const __m256i valid32 = _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(valid64[0], pick_low),
                                                        _mm256_permutevar8x32_epi32(valid64[1], pick_low), 0x20);
      const __m256 valid = _mm256_castsi256_ps(valid32);
      valid_bits |= static_cast<uint32_t>(_mm256_movemask_ps(valid)) << (half * 8);
      // values[label * 16 + lane]: the label's logit, loaded only for valid lanes.
      const __m256i lane = _mm256_setr_epi32(half * 8, half * 8 + 1, half * 8 + 2, half * 8 + 3, half * 8 + 4,
                                             half * 8 + 5, half * 8 + 6, half * 8 + 7);
      const __m256i index = _mm256_add_epi32(_mm256_slli_epi32(label32, 4), lane);
      const __m256 label_logit =
          _mm256_mask_i32gather_ps(_mm256_setzero_ps(), scratch.values.data(), index, valid, 4);
      const __m256 max = half == 0 ? max0 : max1;
      __m256 loss = _mm256_add_ps(_mm256_sub_ps(max, label_logit), _mm256_loadu_ps(scratch.per_lane + half * 8));
      if (in.weight != nullptr) {
        loss = _mm256_mul_ps(loss, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), in.weight, label32, valid, 4));
      }
      // NaN (0 * inf weights) made canonical, then kIgnoredLoss where not valid.
      loss = _mm256_blendv_ps(loss, _mm256_set1_ps(kCanonicalNaN), _mm256_cmp_ps(loss, loss, _CMP_UNORD_Q));
      loss = _mm256_blendv_ps(_mm256_set1_ps(kIgnoredLoss), loss, valid);
      _mm256_storeu_ps(losses + first_pixel + half * 8, loss);
      // Key(loss) >> 16, as Key() computes it.
      const __m256i bits = _mm256_castps_si256(loss);
      const __m256i flip =
          _mm256_or_si256(_mm256_srai_epi32(bits, 31), _mm256_set1_epi32(static_cast<int>(0x80000000u)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(keys + half * 8),
                         _mm256_srli_epi32(_mm256_xor_si256(bits, flip), kDigitBits));
    }
    counts.valid += __builtin_popcount(valid_bits);
    counts.out_of_range += __builtin_popcount(out_of_range_bits);
    if (histogram != nullptr) {
      for (uint32_t bits = valid_bits; bits != 0; bits &= bits - 1) ++histogram[keys[__builtin_ctz(bits)]];
    }
  }
};
#endif

// ---------------------------------------------------------------------------------------------------------------
// Forward pass 1: losses, the valid-pixel count and the histogram of the loss keys' top digit.

using Histogram = std::vector<uint64_t>;

// What pass 1 learns besides the losses.
struct LossPassResult {
  Histogram top_histogram;   // of the valid losses' top key digits; empty for small pools
  int64_t valid = 0;         // pixels whose label is not ignore_index and in [0, C)
  int64_t out_of_range = 0;  // pixels whose label is neither ignore_index nor in [0, C): an error for the caller
};

// One block's losses (kIgnoredLoss for ignored and out-of-range labels), its valid and out-of-range labels, and,
// unless `histogram` is null, the valid losses' top key digits. Counting here saves the separate pass over the
// labels that the reference path makes (CountPool).
template <class Math>
BCE_ALWAYS_INLINE void BlockLosses(const RunPlan& plan, const float* logits, int64_t first_pixel, int64_t count,
                                   const LossInputs& in, BlockScratch& scratch, float* losses, uint32_t* histogram,
                                   PassCounts& counts) {
  const bool block_has_nan =
      Math::Load(logits, count, plan.classes(), plan.pixel_stride(), plan.class_stride(), scratch);
  Math::SumExps(plan.classes(), /*keep_exps=*/false, scratch);
  Math::LogOfSums(scratch);
  Math::PixelLosses(plan, logits, first_pixel, count, in, block_has_nan, scratch, losses, histogram, counts);
}

// FullMath computes the full blocks of spatial inputs; GenericBlockMath the others.
template <class FullMath>
BCE_ALWAYS_INLINE void RunLossesBody(const RunPlan& plan, const PixelRun& run, const LossInputs& in,
                                     BlockScratch& scratch, float* losses, uint32_t* histogram, PassCounts& counts) {
  // A plain loop, not a lambda: a lambda would not inherit the AVX2 target of RunLossesAvx2.
  for (int64_t start = 0; start < run.length; start += kBlockLanes) {
    const int64_t count = std::min<int64_t>(kBlockLanes, run.length - start);
    const float* logits = in.logits + run.logit_offset + start * plan.pixel_stride();
    const int64_t first_pixel = run.first_pixel + start;
    if (plan.planar() && count == kBlockLanes) {
      BlockLosses<FullMath>(plan, logits, first_pixel, count, in, scratch, losses, histogram, counts);
    } else {
      BlockLosses<GenericBlockMath>(plan, logits, first_pixel, count, in, scratch, losses, histogram, counts);
    }
  }
}

#if defined(BCE_AVX2_PATH)
BCE_TARGET_AVX2 void RunLossesAvx2(const RunPlan& plan, const PixelRun& run, const LossInputs& in,
                                   BlockScratch& scratch, float* losses, uint32_t* histogram, PassCounts& counts) {
  RunLossesBody<Avx2BlockMath>(plan, run, in, scratch, losses, histogram, counts);
}
#endif

// Writes the run's losses and counts (see BlockLosses).
void RunLosses(const RunPlan& plan, const PixelRun& run, const LossInputs& in, BlockScratch& scratch, float* losses,
               uint32_t* histogram, PassCounts& counts) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return RunLossesAvx2(plan, run, in, scratch, losses, histogram, counts);
#endif
  RunLossesBody<GenericBlockMath>(plan, run, in, scratch, losses, histogram, counts);
}

// Writes every pixel's loss and counts the pool; the histogram only when `with_histogram`.
LossPassResult ComputeLosses(const RunPlan& plan, const LossInputs& in, bool with_histogram, float* losses) {
  LossPassResult result;
  result.top_histogram.assign(with_histogram ? kDigitBuckets : 0, 0);
  std::mutex lock;
  ParallelForPieces(0, plan.runs(), plan.grain(), [&](PieceQueue& queue) {
    BlockScratch scratch(plan.classes());
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

// One block of pass 2: adds the losses of [begin, end) whose top key digit is above `bucket` (and their weights)
// into the part's sums, and lists the pixels whose top digit equals it. The sums run in kSumLanes lanes, so that
// the loop vectorises and the additions do not wait on one another; selects, not branches (about p of the pixels
// are above, in no predictable order); the rare candidates are looked for lane by lane only in groups that have
// one.
BCE_ALWAYS_INLINE void SumAboveBucketBody(const float* __restrict losses, int64_t begin, int64_t end,
                                          uint32_t bucket, const LossInputs& in, BlockPart& part) {
  double loss_lanes[kSumLanes] = {};
  double weight_lanes[kSumLanes] = {};
  int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes) {
    uint32_t in_bucket = 0;
    for (int lane = 0; lane < kSumLanes; ++lane) {
      const float loss = losses[i + lane];
      const uint32_t digit = Key(loss) >> kDigitBits;
      // An integer select (a float one would be a branch): the loss itself above the bucket, else +0.
      const uint32_t keep = digit > bucket ? 0xffffffffu : 0u;
      loss_lanes[lane] += static_cast<double>(BitsToFloat(FloatToBits(loss) & keep));
      in_bucket |= digit == bucket ? 1u : 0u;
    }
    if (in_bucket != 0) {
      for (int lane = 0; lane < kSumLanes; ++lane) {
        if ((Key(losses[i + lane]) >> kDigitBits) == bucket) part.candidates.push_back(i + lane);
      }
    }
  }
  for (; i < end; ++i) {
    const uint32_t digit = Key(losses[i]) >> kDigitBits;
    loss_lanes[0] += digit > bucket ? static_cast<double>(losses[i]) : 0.0;
    if (digit == bucket) part.candidates.push_back(i);
  }
  if (in.weight != nullptr) {
    for (i = begin; i < end; ++i) {
      weight_lanes[i % kSumLanes] +=
          (Key(losses[i]) >> kDigitBits) > bucket ? static_cast<double>(in.weight[in.target[i]]) : 0.0;
    }
  }
  for (int lane = 0; lane < kSumLanes; ++lane) {
    part.loss_sum += loss_lanes[lane];
    part.weight_sum += weight_lanes[lane];
  }
}

#if defined(BCE_AVX2_PATH)
// SumAboveBucketBody with intrinsics (GCC vectorises the plain loop poorly once it holds the candidate test): the
// same lanes, so the same sums, bit for bit. Weighted pools take the plain loop.
BCE_TARGET_AVX2 void SumAboveBucketAvx2(const float* losses, int64_t begin, int64_t end, uint32_t bucket,
                                        const LossInputs& in, BlockPart& part) {
  if (in.weight != nullptr) return SumAboveBucketBody(losses, begin, end, bucket, in, part);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i bucket8 = _mm256_set1_epi32(static_cast<int>(bucket));
  __m256d low = _mm256_setzero_pd();   // lanes 0-3
  __m256d high = _mm256_setzero_pd();  // lanes 4-7
  int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(losses + i));
    const __m256i digit =
        _mm256_srli_epi32(_mm256_xor_si256(bits, _mm256_or_si256(_mm256_srai_epi32(bits, 31), sign)), kDigitBits);
    const __m256 kept = _mm256_castsi256_ps(_mm256_and_si256(bits, _mm256_cmpgt_epi32(digit, bucket8)));
    low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(kept)));
    high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(kept, 1)));
    const int in_bucket = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(digit, bucket8)));
    for (int mask = in_bucket; mask != 0; mask &= mask - 1) part.candidates.push_back(i + __builtin_ctz(mask));
  }
  double lanes[kSumLanes];
  _mm256_storeu_pd(lanes, low);
  _mm256_storeu_pd(lanes + 4, high);
  for (; i < end; ++i) {
    const uint32_t digit = Key(losses[i]) >> kDigitBits;
    lanes[0] += digit > bucket ? static_cast<double>(losses[i]) : 0.0;
    if (digit == bucket) part.candidates.push_back(i);
  }
  for (int lane = 0; lane < kSumLanes; ++lane) part.loss_sum += lanes[lane];
}
#endif

void SumAboveBucket(const float* losses, int64_t begin, int64_t end, uint32_t bucket, const LossInputs& in,
                    BlockPart& part) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return SumAboveBucketAvx2(losses, begin, end, bucket, in, part);
#endif
  SumAboveBucketBody(losses, begin, end, bucket, in, part);
}

Selection SelectByHistogram(float* losses, int64_t pixels, int64_t k, const Histogram& top_histogram,
                            const LossInputs& in) {
  const BucketPick top = PickBucket(top_histogram, k);
  const uint32_t bucket = top.bucket;
  std::vector<BlockPart> parts(BlockCount(pixels));
  ParallelFor(0, static_cast<int64_t>(parts.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      SumAboveBucket(losses, b * kBlockPixels, std::min(pixels, (b + 1) * kBlockPixels), bucket, in, parts[b]);
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

struct GradientInputs {
  LossInputs loss;
  const float* losses;     // forward's loss vector after the tie fix-up
  uint32_t threshold_key;  // selected iff Key(loss) >= threshold_key
  float scale;             // grad_out / denominator
};

// Backward works on chunks of kChunkPixels consecutive pixels of a run: it lists the chunk's selected pixels,
// copies their logits into a compact class-major array (ChunkScratch::values, rows of kChunkPixels), turns them
// into gradient values there (exps for the selected pixels only, a quarter of them at p = 0.25), and writes each
// class row of the chunk back in place, zeros between. The compact array (19 KB for 19 classes) stays in L1.
constexpr int64_t kChunkPixels = 256;

struct ChunkScratch {
  // +8 floats per row: the AVX2 compaction stores whole 8-float vectors past the last selected pixel.
  explicit ChunkScratch(int64_t classes) : values(classes * kRowStride) {}
  static constexpr int64_t kRowStride = kChunkPixels + 8;
  std::vector<float> values;         // values[c * kRowStride + i] for the chunk's i-th selected pixel
  float max_logit[kChunkPixels];
  float sum_exp[kChunkPixels];
  float factor[kChunkPixels];        // scale * w[y] / sum_exp, or 1 for pixels on the exact path
  int32_t offset[kChunkPixels + 8];  // the i-th selected pixel's offset in the chunk (+8: whole-vector stores)
  uint8_t half_mask[kChunkPixels / 8];  // selected pixels of each 8 consecutive ones, bit j for pixel j
};

// Lists the chunk's selected pixels (offset, half_mask); returns how many there are.
BCE_ALWAYS_INLINE int64_t ListSelected(const float* __restrict losses, int64_t length, uint32_t threshold_key,
                                       ChunkScratch& scratch) {
  int64_t count = 0;
  for (int64_t half = 0; half * 8 < kChunkPixels; ++half) scratch.half_mask[half] = 0;
  for (int64_t j = 0; j < length; ++j) {
    const bool selected = Key(losses[j]) >= threshold_key;
    scratch.offset[count] = static_cast<int32_t>(j);
    count += selected ? 1 : 0;  // branch-free: selection is random at the pixel level
    scratch.half_mask[j >> 3] |= static_cast<uint8_t>((selected ? 1u : 0u) << (j & 7));
  }
  return count;
}

// Copying the selected pixels' logits in and the gradient rows out: plain loops (GenericChunkCopy, any input),
// and AVX2 permutes on whole cache lines (Avx2ChunkCopy, spatial inputs whose chunk is whole 16-pixel blocks).
// Gather returns whether any logit of the chunk, selected or not, is NaN or infinite (x - x is then NaN).
struct GenericChunkCopy {
  static BCE_ALWAYS_INLINE int64_t List(const float* losses, int64_t length, uint32_t threshold_key,
                                        ChunkScratch& scratch) {
    return ListSelected(losses, length, threshold_key, scratch);
  }

  static BCE_ALWAYS_INLINE bool Gather(const RunPlan& plan, const float* logits, int64_t length, int64_t count,
                                       ChunkScratch& scratch) {
    uint32_t non_finite = 0;
    for (int64_t c = 0; c < plan.classes(); ++c) {
      const float* __restrict row = logits + c * plan.class_stride();
      float* __restrict out = scratch.values.data() + c * ChunkScratch::kRowStride;
      for (int64_t i = 0; i < count; ++i) out[i] = row[scratch.offset[i] * plan.pixel_stride()];
      for (int64_t j = 0; j < length; ++j) {
        const float x = row[j * plan.pixel_stride()];
        non_finite |= static_cast<uint32_t>((x - x) != (x - x));
      }
    }
    return non_finite != 0;
  }

  static BCE_ALWAYS_INLINE void Scatter(const RunPlan& plan, int64_t length, int64_t count, const ChunkScratch& scratch,
                                        float* grad) {
    for (int64_t c = 0; c < plan.classes(); ++c) {
      float* __restrict row = grad + c * plan.class_stride();
      const float* __restrict in = scratch.values.data() + c * ChunkScratch::kRowStride;
      for (int64_t j = 0; j < length; ++j) row[j * plan.pixel_stride()] = 0.0f;
      for (int64_t i = 0; i < count; ++i) row[scratch.offset[i] * plan.pixel_stride()] = in[i];
    }
  }
};

#if defined(BCE_AVX2_PATH)
// For each 8-bit mask m: kCompress[m] lists the set lanes first (permutevar8x32 indices that pack them), and
// kExpand[m][lane] is the rank of `lane` among the set lanes (the indices that unpack them).
struct PermuteTables {
  int32_t compress[256][8];
  int32_t expand[256][8];
  PermuteTables() {
    for (int m = 0; m < 256; ++m) {
      int rank = 0;
      for (int lane = 0; lane < 8; ++lane) {
        compress[m][lane] = 0;
        expand[m][lane] = 0;
      }
      for (int lane = 0; lane < 8; ++lane) {
        if (m & (1 << lane)) {
          compress[m][rank] = lane;
          expand[m][lane] = rank;
          ++rank;
        }
      }
    }
  }
};
const PermuteTables& Permutes() {
  static const PermuteTables tables;
  return tables;
}

struct Avx2ChunkCopy {
  // ListSelected, eight pixels at a time: the keys compared as unsigned (signed after flipping the top bit), the
  // selected offsets packed with the compress table.
  static BCE_TARGET_AVX2 int64_t List(const float* losses, int64_t length, uint32_t threshold_key,
                                      ChunkScratch& scratch) {
    const PermuteTables& tables = Permutes();
    const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i threshold = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(threshold_key)), sign);
    int64_t count = 0;
    for (int64_t j = 0; j < length; j += 8) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(losses + j));
      const __m256i key = _mm256_xor_si256(bits, _mm256_or_si256(_mm256_srai_epi32(bits, 31), sign));
      // key >= threshold (unsigned) <=> !(threshold > key) on the sign-flipped values.
      const __m256i below = _mm256_cmpgt_epi32(threshold, _mm256_xor_si256(key, sign));
      const int mask = ~_mm256_movemask_ps(_mm256_castsi256_ps(below)) & 0xff;
      scratch.half_mask[j >> 3] = static_cast<uint8_t>(mask);
      const __m256i lanes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.compress[mask]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(scratch.offset + count),
                          _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int>(j))));
      count += __builtin_popcount(mask);
    }
    return count;
  }

  // Block by block, as the forward pass reads: each 16-pixel block takes one line of every class row (vector
  // loads, with the forward pass's prefetch), and the selected lanes are packed. (Row by row over the chunk was
  // ~10 % slower on the test VM: each row then restarts a short stream.)
  static BCE_TARGET_AVX2 bool Gather(const RunPlan& plan, const float* logits, int64_t length, int64_t /*count*/,
                                     ChunkScratch& scratch) {
    const PermuteTables& tables = Permutes();
    const int64_t classes = plan.classes();
    const int64_t class_stride = plan.class_stride();
    float* values = scratch.values.data();
    __m256 non_finite = _mm256_setzero_ps();
    int64_t position = 0;
    for (int64_t start = 0; start < length; start += kBlockLanes) {
      const int low = scratch.half_mask[start / 8];
      const int high = scratch.half_mask[start / 8 + 1];
      const int low_count = __builtin_popcount(low);
      const int high_count = __builtin_popcount(high);
      const __m256i pack_low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.compress[low]));
      const __m256i pack_high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.compress[high]));
      for (int64_t c = 0; c < classes; ++c) {
        const float* row = logits + c * class_stride + start;
        _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats), _MM_HINT_T0);  // never faults
        const __m256 low_logits = _mm256_loadu_ps(row);
        const __m256 high_logits = _mm256_loadu_ps(row + 8);
        const __m256 low_zero = _mm256_sub_ps(low_logits, low_logits);  // NaN for NaN and +-inf
        non_finite = _mm256_or_ps(non_finite, _mm256_cmp_ps(low_zero, _mm256_sub_ps(high_logits, high_logits),
                                                             _CMP_UNORD_Q));
        float* out = values + c * ChunkScratch::kRowStride + position;
        _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(low_logits, pack_low));
        _mm256_storeu_ps(out + low_count, _mm256_permutevar8x32_ps(high_logits, pack_high));
      }
      position += low_count + high_count;
    }
    return _mm256_movemask_ps(non_finite) != 0;
  }

  // Block by block too: each block's line of every class row is assembled in registers and written with
  // non-temporal stores when aligned (the gradient is not read again here, so the stores skip reading each
  // destination line first).
  static BCE_TARGET_AVX2 void Scatter(const RunPlan& plan, int64_t length, int64_t /*count*/,
                                      const ChunkScratch& scratch, float* grad) {
    const PermuteTables& tables = Permutes();
    const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const int64_t classes = plan.classes();
    const int64_t class_stride = plan.class_stride();
    const bool aligned = (reinterpret_cast<uintptr_t>(grad) & 31) == 0 && (class_stride % 8) == 0;
    const float* values = scratch.values.data();
    int64_t position = 0;
    for (int64_t start = 0; start < length; start += kBlockLanes) {
      const int low = scratch.half_mask[start / 8];
      const int high = scratch.half_mask[start / 8 + 1];
      const int low_count = __builtin_popcount(low);
      const __m256i unpack_low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.expand[low]));
      const __m256i unpack_high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tables.expand[high]));
      const __m256 keep_low = _mm256_castsi256_ps(
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(low), lane_bits), lane_bits));
      const __m256 keep_high = _mm256_castsi256_ps(
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(high), lane_bits), lane_bits));
      for (int64_t c = 0; c < classes; ++c) {
        const float* in = values + c * ChunkScratch::kRowStride + position;
        // Lanes outside the masks read stale floats that the masks then clear.
        const __m256 out_low = _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(in), unpack_low), keep_low);
        const __m256 out_high =
            _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(in + low_count), unpack_high), keep_high);
        float* row = grad + c * class_stride + start;
        if (aligned) {
          _mm256_stream_ps(row, out_low);
          _mm256_stream_ps(row + 8, out_high);
        } else {
          _mm256_storeu_ps(row, out_low);
          _mm256_storeu_ps(row + 8, out_high);
        }
      }
      position += low_count + __builtin_popcount(high);
    }
  }
};
#endif

// The gradient column of one selected pixel with libm, for pixels with non-finite logits, written into the
// chunk's values in place of its exps (column i); its factor becomes 1.
void ExactPixelGradient(const float* logits, int64_t classes, int64_t class_stride, int64_t label, float scale,
                        int64_t i, ChunkScratch& scratch) {
  const float lse = ExactLogSumExp(logits, classes, class_stride);
  for (int64_t c = 0; c < classes; ++c) {
    const float softmax = std::exp(logits[c * class_stride] - lse);
    scratch.values[c * ChunkScratch::kRowStride + i] = scale * (softmax - (c == label ? 1.0f : 0.0f));
  }
  scratch.factor[i] = 1.0f;
}

// Turns the compacted logits of the chunk's `count` selected pixels into gradient values:
// (softmax - onehot) * scale * w[y] = (exp - sum * onehot) * factor, with factor = scale * w[y] / sum.
BCE_ALWAYS_INLINE void SelectedGradients(const RunPlan& plan, const float* logits, int64_t first_pixel,
                                         int64_t count, const GradientInputs& in, ChunkScratch& scratch) {
  const int64_t classes = plan.classes();
  constexpr int64_t stride = ChunkScratch::kRowStride;
  float* __restrict values = scratch.values.data();
  float* __restrict max_logit = scratch.max_logit;
  float* __restrict sum_exp = scratch.sum_exp;
  float* __restrict factor = scratch.factor;
  // Loops over the selected pixels: they vectorise.
  for (int64_t i = 0; i < count; ++i) max_logit[i] = -std::numeric_limits<float>::infinity();
  uint32_t any_nan = 0;
  for (int64_t c = 0; c < classes; ++c) {
    const float* __restrict row = values + c * stride;
    for (int64_t i = 0; i < count; ++i) {
      const float x = row[i];
      max_logit[i] = x > max_logit[i] ? x : max_logit[i];
      any_nan |= static_cast<uint32_t>(x != x);
    }
  }
  for (int64_t i = 0; i < count; ++i) sum_exp[i] = 0.0f;
  for (int64_t c = 0; c < classes; ++c) {
    float* __restrict row = values + c * stride;
    for (int64_t i = 0; i < count; ++i) {
      const float e = ExpOfNonPositive(row[i] - max_logit[i]);
      row[i] = e;
      sum_exp[i] += e;
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    const int64_t pixel = first_pixel + scratch.offset[i];
    const int64_t label = in.loss.target[pixel];
    const float scale = in.loss.weight != nullptr ? in.scale * in.loss.weight[label] : in.scale;
    // A NaN logit or a non-finite maximum: the fast exp maps both to 0, so this pixel takes libm.
    if (any_nan != 0 || !std::isfinite(max_logit[i])) {
      ExactPixelGradient(logits + scratch.offset[i] * plan.pixel_stride(), classes, plan.class_stride(), label,
                         scale, i, scratch);
      continue;
    }
    values[label * stride + i] -= sum_exp[i];
    factor[i] = scale / sum_exp[i];
  }
  for (int64_t c = 0; c < classes; ++c) {
    float* __restrict row = values + c * stride;
    for (int64_t i = 0; i < count; ++i) row[i] *= factor[i];
  }
}

// Orders the non-temporal stores of this thread before the parallel region ends, or before
// plain stores to the same lines.
void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// PyTorch's gradient for a pixel that is not selected (ignored, or not among the k) is 0 * (its softmax), which
// is NaN when its log-softmax is NaN: a NaN or +inf logit, or every logit -inf. Those columns get NaN here too,
// for parity (the reference path and PyTorch give the same). Only chunks with a non-finite logit come here.
void UnselectedNaNColumns(const RunPlan& plan, const float* logits, int64_t length, const float* losses,
                          uint32_t threshold_key, float* grad) {
  StreamFence();  // the chunk's non-temporal stores land before these plain ones
  for (int64_t j = 0; j < length; ++j) {
    if (Key(losses[j]) >= threshold_key) continue;  // selected: its column is already right
    const float* column = logits + j * plan.pixel_stride();
    if (!std::isnan(ExactLogSumExp(column, plan.classes(), plan.class_stride()))) continue;
    for (int64_t c = 0; c < plan.classes(); ++c) {
      grad[j * plan.pixel_stride() + c * plan.class_stride()] = kCanonicalNaN;
    }
  }
}

// Copy: how full chunks of spatial inputs are gathered and scattered; GenericChunkCopy does the others.
template <class Copy>
BCE_ALWAYS_INLINE void RunGradientBody(const RunPlan& plan, const PixelRun& run, const GradientInputs& in,
                                       ChunkScratch& scratch, float* grad) {
  // A plain loop, not a lambda: a lambda would not inherit the AVX2 target of RunGradientAvx2.
  for (int64_t start = 0; start < run.length; start += kChunkPixels) {
    const int64_t length = std::min<int64_t>(kChunkPixels, run.length - start);
    const int64_t offset = run.logit_offset + start * plan.pixel_stride();
    const int64_t first_pixel = run.first_pixel + start;
    const float* logits = in.loss.logits + offset;
    const bool whole_lines = plan.planar() && length % kBlockLanes == 0;
    const int64_t count = whole_lines ? Copy::List(in.losses + first_pixel, length, in.threshold_key, scratch)
                                      : GenericChunkCopy::List(in.losses + first_pixel, length, in.threshold_key,
                                                               scratch);
    // Every logit is read, selected or not, so that unselected pixels with non-finite logits are found.
    const bool non_finite = whole_lines ? Copy::Gather(plan, logits, length, count, scratch)
                                        : GenericChunkCopy::Gather(plan, logits, length, count, scratch);
    if (count > 0) SelectedGradients(plan, logits, first_pixel, count, in, scratch);
    if (whole_lines) {
      Copy::Scatter(plan, length, count, scratch, grad + offset);
    } else {
      GenericChunkCopy::Scatter(plan, length, count, scratch, grad + offset);
    }
    if (non_finite) {
      UnselectedNaNColumns(plan, logits, length, in.losses + first_pixel, in.threshold_key, grad + offset);
    }
  }
}

#if defined(BCE_AVX2_PATH)
BCE_TARGET_AVX2 void RunGradientAvx2(const RunPlan& plan, const PixelRun& run, const GradientInputs& in,
                                     ChunkScratch& scratch, float* grad) {
  RunGradientBody<Avx2ChunkCopy>(plan, run, in, scratch, grad);
}
#endif

// Writes the run's gradient: (softmax - onehot) * w[y] * scale for selected pixels, zeros elsewhere.
void RunGradient(const RunPlan& plan, const PixelRun& run, const GradientInputs& in, ChunkScratch& scratch,
                 float* grad) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return RunGradientAvx2(plan, run, in, scratch, grad);
#endif
  RunGradientBody<GenericChunkCopy>(plan, run, in, scratch, grad);
}

void ComputeGradient(const RunPlan& plan, const GradientInputs& in, float* grad) {
  ParallelForPieces(0, plan.runs(), plan.grain(), [&](PieceQueue& queue) {
    ChunkScratch scratch(plan.classes());
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
  BCE_PHASE("autograd node");
  return result;
}

}  // namespace bce
