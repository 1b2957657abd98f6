// The gradient buffer of the fused backward, and huge-page advice for large fresh buffers.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>

namespace bce {
namespace fused {

// Asks for transparent huge pages on a large fresh buffer before it is first written (Linux; advisory).
void AdviseHugePages(void* data, size_t bytes);

// An uninitialised tensor shaped like `input`, with huge pages requested (see gradient_buffer.cc).
at::Tensor EmptyLike(const at::Tensor& input);

}  // namespace fused
}  // namespace bce
