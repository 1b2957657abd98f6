// What the global selection (global_select.h) needs from a process group: its rank, its size and a blocking sum
// over every rank. Plain LibTorch: the loss core knows neither N-API nor c10d; cpp/objects/process_group.cc
// implements it over c10d.
#pragma once

#include <ATen/core/Tensor.h>

namespace bce {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Replaces `tensor` (contiguous) by its elementwise sum over every rank; returns when that is done. Every rank
  // must make the same calls in the same order.
  virtual void AllReduceSum(at::Tensor& tensor) = 0;
};

}  // namespace bce
