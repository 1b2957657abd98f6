#include "loss/pool_select.h"

#include "loss/cpu_dispatch.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <tuple>

namespace bce {

int64_t PoolCounts::total() const {
  int64_t sum = 0;
  for (int64_t n : valid) sum += n;
  return sum;
}

namespace {

// Valid labels (not ignore_index) and, among them, those outside [0, classes) in [begin, end). One unsigned
// compare covers both ends of the range; the loop vectorises (with AVX2, where the CPU has it: 64-bit compares).
BCE_ALWAYS_INLINE void CountLabelsBody(const int64_t* __restrict begin, const int64_t* end, int64_t ignore_index,
                                       int64_t classes, int64_t* valid, int64_t* out_of_range) {
  int64_t counted = 0, outside = 0;
  const uint64_t limit = static_cast<uint64_t>(classes);
  for (const int64_t* y = begin; y != end; ++y) {
    const int64_t is_valid = *y != ignore_index ? 1 : 0;
    counted += is_valid;
    outside += is_valid & (static_cast<uint64_t>(*y) >= limit ? 1 : 0);
  }
  *valid = counted;
  *out_of_range = outside;
}

#if defined(BCE_AVX2_PATH)
BCE_TARGET_AVX2 void CountLabelsAvx2(const int64_t* begin, const int64_t* end, int64_t ignore_index, int64_t classes,
                                     int64_t* valid, int64_t* out_of_range) {
  CountLabelsBody(begin, end, ignore_index, classes, valid, out_of_range);
}
#endif

void CountLabels(const int64_t* begin, const int64_t* end, int64_t ignore_index, int64_t classes, int64_t* valid,
                 int64_t* out_of_range) {
#if defined(BCE_AVX2_PATH)
  if (CpuHasAvx2()) return CountLabelsAvx2(begin, end, ignore_index, classes, valid, out_of_range);
#endif
  CountLabelsBody(begin, end, ignore_index, classes, valid, out_of_range);
}

PoolCounts CountOnHost(const at::Tensor& target, int64_t ignore_index, int64_t classes, bool per_sample) {
  const at::Tensor labels = target.contiguous();
  const int64_t* data = labels.data_ptr<int64_t>();
  const int64_t rows = per_sample && labels.dim() > 0 ? labels.size(0) : 1;
  const int64_t per_row = rows == 0 ? 0 : labels.numel() / rows;
  PoolCounts counts;
  counts.valid.assign(rows, 0);
  for (int64_t row = 0; row < rows; ++row) {
    int64_t out_of_range = 0;
    CountLabels(data + row * per_row, data + (row + 1) * per_row, ignore_index, classes, &counts.valid[row],
                &out_of_range);
    counts.out_of_range += out_of_range;
  }
  return counts;
}

PoolCounts CountOnDevice(const at::Tensor& target, int64_t ignore_index, int64_t classes, bool per_sample) {
  const at::Tensor valid = target.ne(ignore_index);
  const at::Tensor out_of_range = valid.logical_and(target.lt(0).logical_or(target.ge(classes))).sum();
  const int64_t rows = target.dim() > 0 ? target.size(0) : 0;
  at::Tensor valid_counts = per_sample && target.dim() > 0
                                ? valid.reshape({rows, rows == 0 ? 0 : target.numel() / rows}).sum(1)
                                : valid.sum().reshape({1});
  // The only synchronisation with the device: a handful of integers.
  const at::Tensor host = at::cat({valid_counts, out_of_range.reshape({1})}).to(at::kCPU, at::kLong);
  const int64_t* data = host.data_ptr<int64_t>();
  PoolCounts counts;
  counts.valid.assign(data, data + host.numel() - 1);
  counts.out_of_range = data[host.numel() - 1];
  return counts;
}

}  // namespace

PoolCounts CountPool(const at::Tensor& target, int64_t ignore_index, int64_t classes, bool per_sample) {
  // On the host a plain loop beats a dozen tensor ops; elsewhere the labels stay on their device.
  return target.device().is_cpu() ? CountOnHost(target, ignore_index, classes, per_sample)
                                  : CountOnDevice(target, ignore_index, classes, per_sample);
}

void CheckTargetsInRange(int64_t out_of_range, int64_t classes, int64_t ignore_index) {
  TORCH_CHECK_INDEX(out_of_range == 0, "target holds ", out_of_range, " class index(es) outside [0, ", classes,
                    ") that are not ignoreIndex (", ignore_index, ")");
}

Pool PoolOf(const at::Tensor& losses) {
  Pool pool;
  pool.losses = losses;
  pool.counts_from_shape = true;
  return pool;
}

at::Tensor ConnectedZero(const at::Tensor& like) {
  // Summing an empty slice gives an exact 0 with a grad_fn, whatever values `like` holds.
  return like.reshape(-1).narrow(0, 0, 0).sum();
}

namespace {

// Counts for a pool whose elements are all valid: known from the shape alone.
PoolCounts ShapeCounts(const at::Tensor& losses, bool per_sample) {
  PoolCounts counts;
  if (per_sample && losses.dim() > 0) {
    const int64_t samples = losses.size(0);
    const int64_t per = samples == 0 ? 0 : losses.numel() / samples;
    counts.valid.assign(samples, per);
  } else {
    counts.valid.assign(1, losses.numel());
  }
  return counts;
}

// Ranking values: the detached losses with ignored elements pushed below every valid one.
at::Tensor RankingValues(const Pool& pool) {
  at::Tensor ranked = pool.losses.detach();
  if (pool.ignored.defined()) ranked = ranked.masked_fill(pool.ignored, -std::numeric_limits<double>::infinity());
  return ranked;
}

BootstrappedResult BatchScope(const at::Tensor& input, const Pool& pool, const BootstrappedOptionsBase& options) {
  BootstrappedResult result;
  result.n_valid = pool.counts.total();
  result.k = KeepCount(options.p, result.n_valid);
  const at::Tensor& losses = pool.losses;

  if (result.k == 0) {
    // Nothing to select: a connected zero (for kSelected too: the caller's reduction is not consulted).
    result.loss = options.reduction == Reduction::kNone ? losses.mul(0) : ConnectedZero(input);
    return result;
  }

  const at::Tensor flat = losses.reshape(-1);
  if (result.k == result.n_valid && options.reduction != Reduction::kSelected) {
    // Everything valid is selected (warm-up, p = 1): no ranking needed. Ignored elements already hold 0.
    switch (options.reduction) {
      case Reduction::kNone: result.loss = losses; break;
      case Reduction::kSum: result.loss = losses.sum(); break;
      default:
        result.loss = pool.denominator_weight.defined() ? losses.sum() / pool.denominator_weight.sum()
                                                        : losses.sum() / static_cast<double>(result.k);
    }
    return result;
  }

  // Ignored elements rank below every valid one (k <= n_valid, so none is selected). The values come from topk
  // itself, so gradients reach the selected elements exactly as autograd through topk does.
  const at::Tensor ranked = pool.ignored.defined()
                                ? flat.masked_fill(pool.ignored.reshape(-1), -std::numeric_limits<double>::infinity())
                                : flat;
  at::Tensor selected, index;
  std::tie(selected, index) = ranked.topk(result.k, 0, /*largest=*/true, /*sorted=*/false);
  switch (options.reduction) {
    case Reduction::kSelected: result.loss = selected; break;
    case Reduction::kSum: result.loss = selected.sum(); break;
    case Reduction::kNone:
      result.loss = at::zeros_like(flat).index_copy(0, index, selected).view(losses.sizes());
      break;
    case Reduction::kMean:
      result.loss = pool.denominator_weight.defined()
                        ? selected.sum() / pool.denominator_weight.reshape(-1).index_select(0, index).sum()
                        : selected.mean();
      break;
  }
  return result;
}

BootstrappedResult SampleScope(const at::Tensor& input, const Pool& pool, const BootstrappedOptionsBase& options) {
  BootstrappedResult result;
  const at::Tensor& losses = pool.losses;
  const int64_t samples = losses.size(0);
  const int64_t per_row = samples == 0 ? 0 : losses.numel() / samples;
  std::vector<int64_t> keep(samples);
  int64_t max_keep = 0, with_valid = 0;
  for (int64_t i = 0; i < samples; ++i) {
    keep[i] = KeepCount(options.p, pool.counts.valid[i]);
    max_keep = std::max(max_keep, keep[i]);
    with_valid += keep[i] > 0 ? 1 : 0;
    result.k += keep[i];
  }
  result.n_valid = pool.counts.total();
  if (max_keep == 0) {
    // Nothing to select: a connected zero (for kSelected too: the caller's reduction is not consulted).
    result.loss = options.reduction == Reduction::kNone ? losses.mul(0) : ConnectedZero(input);
    return result;
  }

  const at::Tensor rows = losses.reshape({samples, per_row});
  // Sorted, so that each row's first keep[i] entries are its keep[i] hardest valid elements.
  const at::Tensor index = std::get<1>(RankingValues(pool).reshape({samples, per_row}).topk(max_keep, 1, true, true));
  const at::Tensor keep_count = at::tensor(keep, at::kLong).to(losses.device(), /*non_blocking=*/true);
  const at::Tensor kept = at::arange(max_keep, keep_count.options()).unsqueeze(0).lt(keep_count.unsqueeze(1));
  const at::Tensor gathered = rows.gather(1, index);
  const at::Tensor selected = at::where(kept, gathered, at::zeros_like(gathered));

  switch (options.reduction) {
    case Reduction::kSelected: {
      // Each row's first keep[i] entries, row after row. The positions are known here, so the result's size does
      // not depend on device data (masked_select would wait for a CUDA device to count the mask).
      std::vector<int64_t> positions;
      positions.reserve(static_cast<size_t>(result.k));
      for (int64_t i = 0; i < samples; ++i) {
        for (int64_t j = 0; j < keep[i]; ++j) positions.push_back(i * max_keep + j);
      }
      const at::Tensor where = at::tensor(positions, at::kLong).to(losses.device(), /*non_blocking=*/true);
      result.loss = gathered.reshape(-1).index_select(0, where);
      break;
    }
    case Reduction::kSum: result.loss = selected.sum(); break;
    case Reduction::kNone: result.loss = at::zeros_like(rows).scatter(1, index, selected).view(losses.sizes()); break;
    case Reduction::kMean: {
      at::Tensor denominator;
      if (pool.denominator_weight.defined()) {
        const at::Tensor w = pool.denominator_weight.reshape({samples, per_row}).gather(1, index);
        denominator = at::where(kept, w, at::zeros_like(w)).sum(1);
      } else {
        denominator = keep_count.to(losses.scalar_type());
      }
      const at::Tensor has = keep_count.gt(0);
      const at::Tensor safe = at::where(has, denominator, at::ones_like(denominator));
      const at::Tensor per_sample = at::where(has, selected.sum(1) / safe, at::zeros_like(denominator));
      result.loss = per_sample.sum() / static_cast<double>(with_valid);
      break;
    }
  }
  return result;
}

}  // namespace

BootstrappedResult SelectAndReduce(const at::Tensor& input, Pool pool, const BootstrappedOptionsBase& options) {
  if (pool.counts_from_shape) pool.counts = ShapeCounts(pool.losses, options.per_sample);
  return options.per_sample && pool.losses.dim() > 0 ? SampleScope(input, pool, options)
                                                     : BatchScope(input, pool, options);
}

}  // namespace bce
