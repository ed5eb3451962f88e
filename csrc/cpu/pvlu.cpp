// PVLU on CPU tensors: the per-element math of pvlu.h in lane loops, spread over
// OpenMP threads.
//
// Determinism: the work is cut into `partials` fixed ranges that depend only on
// the sizes; each range sums its parameter gradients in a fixed order into its
// own row of the (partials, channels) buffers, so the thread count and the
// scheduling change nothing in the result.
#include <algorithm>
#include <cstdint>

#include "../launch.h"
#include "../pvlu.h"

namespace lslu_kernels {
namespace {

// Elements of a row handled together: per-lane sums in local arrays of this many
// entries (a fixed summation order that does not depend on the data).
constexpr int64_t kLanes = 16;
// At most this many partial rows (and fixed work ranges) per backward call.
constexpr int64_t kMaxPartials = 256;
// Long rows are cut into chunks of this many elements, so that few long rows
// still spread over every thread.
constexpr int64_t kChunk = 1 << 14;

// Work items of a call: (row, chunk of the row) for rows of `inner` elements of
// one channel, or whole rows of `channels` elements when inner == 1.
inline int64_t chunks_per_row(int64_t inner) { return (inner + kChunk - 1) / kChunk; }
inline int64_t work_items(int64_t outer, int64_t channels, int64_t inner) {
  return inner > 1 ? outer * channels * chunks_per_row(inner) : outer;
}

// The range [begin, end) of `n` items that the p-th of `parts` ranges covers.
inline void range_of(int64_t p, int64_t parts, int64_t n, int64_t& begin, int64_t& end) {
  begin = p * n / parts;
  end = (p + 1) * n / parts;
}

template <typename scalar_t>
void forward(const PvluArgs& a, int threads) {
  using acc_t = acc_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* y = static_cast<scalar_t*>(a.y);
  const auto* alpha = static_cast<const acc_t*>(a.alpha);
  const auto* beta = static_cast<const acc_t*>(a.beta);
  const int64_t C = a.channels;
  if (a.inner > 1) {
    // Items are (row, chunk of the row); row = o * C + c has one channel.
    const int64_t chunks = chunks_per_row(a.inner);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t item = 0; item < work_items(a.outer, C, a.inner); ++item) {
      const int64_t row = item / chunks, c = row % C;
      const int64_t begin = (item % chunks) * kChunk, end = std::min(begin + kChunk, a.inner);
      const acc_t al = alpha[c], be = beta[c];
      const scalar_t* xr = x + row * a.inner;
      scalar_t* yr = y + row * a.inner;
      for (int64_t i = begin; i < end; ++i) yr[i] = from_acc<scalar_t>(pvlu_forward(to_acc(xr[i]), al, be));
    }
  } else {
    // inner == 1: rows of C elements, one per channel.
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t o = 0; o < a.outer; ++o) {
      const scalar_t* xr = x + o * C;
      scalar_t* yr = y + o * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = from_acc<scalar_t>(pvlu_forward(to_acc(xr[c]), alpha[c], beta[c]));
    }
  }
}

// Backward over `n` consecutive elements of one channel; adds that channel's
// parameter gradient sums to *dalpha_sum / *dbeta_sum (in a fixed order).
template <typename scalar_t, typename acc_t>
void backward_row(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t n, acc_t alpha, acc_t beta,
                  acc_t* dalpha_sum, acc_t* dbeta_sum) {
  acc_t lane_dalpha[kLanes] = {}, lane_dbeta[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      acc_t dalpha, dbeta;
      dx[i + l] = from_acc<scalar_t>(pvlu_backward(to_acc(x[i + l]), to_acc(g[i + l]), alpha, beta, dalpha, dbeta));
      lane_dalpha[l] += dalpha;
      lane_dbeta[l] += dbeta;
    }
  }
  for (int64_t l = 0; i < n; ++i, ++l) {  // the tail, one element per lane
    acc_t dalpha, dbeta;
    dx[i] = from_acc<scalar_t>(pvlu_backward(to_acc(x[i]), to_acc(g[i]), alpha, beta, dalpha, dbeta));
    lane_dalpha[l] += dalpha;
    lane_dbeta[l] += dbeta;
  }
  acc_t sum_alpha = 0, sum_beta = 0;
  for (int64_t l = 0; l < kLanes; ++l) {
    sum_alpha += lane_dalpha[l];
    sum_beta += lane_dbeta[l];
  }
  *dalpha_sum += sum_alpha;
  *dbeta_sum += sum_beta;
}

// Backward over one row of `channels` elements, one per channel; adds channel c's
// contributions to dalpha_sum[c] / dbeta_sum[c].
template <typename scalar_t, typename acc_t>
void backward_channels(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t channels, const acc_t* alpha,
                       const acc_t* beta, acc_t* dalpha_sum, acc_t* dbeta_sum) {
  for (int64_t c = 0; c < channels; ++c) {
    acc_t dalpha, dbeta;
    dx[c] = from_acc<scalar_t>(pvlu_backward(to_acc(x[c]), to_acc(g[c]), alpha[c], beta[c], dalpha, dbeta));
    dalpha_sum[c] += dalpha;
    dbeta_sum[c] += dbeta;
  }
}

template <typename scalar_t>
void backward(const PvluArgs& a, int threads) {
  using acc_t = acc_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* g = static_cast<const scalar_t*>(a.grad_output);
  auto* dx = static_cast<scalar_t*>(a.grad_input);
  const auto* alpha = static_cast<const acc_t*>(a.alpha);
  const auto* beta = static_cast<const acc_t*>(a.beta);
  auto* dalpha_partial = static_cast<acc_t*>(a.dalpha_partial);
  auto* dbeta_partial = static_cast<acc_t*>(a.dbeta_partial);
  const int64_t C = a.channels;
  std::fill(dalpha_partial, dalpha_partial + a.partials * C, acc_t(0));
  std::fill(dbeta_partial, dbeta_partial + a.partials * C, acc_t(0));
  if (a.inner > 1) {
    // Items are (row, chunk of the row); row = o * C + c has one channel.
    const int64_t chunks = chunks_per_row(a.inner);
    const int64_t items = work_items(a.outer, C, a.inner);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t part = 0; part < a.partials; ++part) {
      int64_t first, last;
      range_of(part, a.partials, items, first, last);
      for (int64_t item = first; item < last; ++item) {
        const int64_t row = item / chunks, c = row % C;
        const int64_t begin = (item % chunks) * kChunk, end = std::min(begin + kChunk, a.inner);
        const int64_t offset = row * a.inner + begin;
        backward_row(x + offset, g + offset, dx + offset, end - begin, alpha[c], beta[c],
                     dalpha_partial + part * C + c, dbeta_partial + part * C + c);
      }
    }
  } else {
    // inner == 1: each range is a run of rows; per-channel sums run along the row.
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t part = 0; part < a.partials; ++part) {
      int64_t first, last;
      range_of(part, a.partials, a.outer, first, last);
      for (int64_t o = first; o < last; ++o) {
        backward_channels(x + o * C, g + o * C, dx + o * C, C, alpha, beta, dalpha_partial + part * C,
                          dbeta_partial + part * C);
      }
    }
  }
}

struct Forward {
  template <typename scalar_t>
  static void run(const PvluArgs& args, int threads) { forward<scalar_t>(args, threads); }
};
struct Backward {
  template <typename scalar_t>
  static void run(const PvluArgs& args, int threads) { backward<scalar_t>(args, threads); }
};

}  // namespace

int64_t pvlu_backward_partials_cpu(int64_t outer, int64_t channels, int64_t inner) {
  return std::max<int64_t>(1, std::min(work_items(outer, channels, inner), kMaxPartials));
}

void pvlu_forward_cpu(const PvluArgs& args, int threads) { dispatch_pvlu<Forward>(args.dtype, args, threads); }

void pvlu_backward_cpu(const PvluArgs& args, int threads) { dispatch_pvlu<Backward>(args.dtype, args, threads); }

}  // namespace lslu_kernels
