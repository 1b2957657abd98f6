// How the fused kernel walks an input: (N, C, S) cut into runs of pixels (the unit handed to threads) and runs
// cut into blocks of 16 pixels (the unit the arithmetic works on); and the inputs both passes read.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

namespace bce {
namespace fused {

// Minimum pixels per parallel task, so that small inputs do not pay for starting threads.
constexpr int64_t kMinPixelsPerTask = 16384;

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
  int64_t non_finite = 0;    // pixels, of any label, in a block with a NaN logit or with a non-finite maximum
};

// ---------------------------------------------------------------------------------------------------------------
// Blocks: both passes read a spatial input in blocks of kBlockLanes consecutive pixels, one 64-byte cache line of
// each class row. Pass 1 loads a block's C x 16 logits once into a small class-major array that stays in L1 (1.2 KB
// for 19 classes) and computes max, exp and the loss on it 8 lanes at a time; backward packs the selected lanes of
// the same lines (backward.cc). (Reading a class row of a longer run twice would hit memory twice: the C rows sit
// S floats apart, often a power of two, and map to the same cache sets.) Measured on the 2-core VM at
// 8x19x512x1024, 2 threads: pass 1 in 33-40 ms, against 47-56 ms when whole 4096-pixel runs were first copied to
// an L2 scratch.

constexpr int kBlockLanes = 16;
// How far ahead, in floats, each class row is prefetched: two cache lines, i.e. two blocks. The C rows are C
// separate streams, more than the hardware prefetchers follow well. (0 to 16 lines ahead measured within noise
// of one another on a 2-core AMD EPYC without AVX-512; two was the best.)
constexpr int64_t kPrefetchFloats = 32;

}  // namespace fused
}  // namespace bce
