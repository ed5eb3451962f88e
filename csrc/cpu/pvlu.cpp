// PVLU on CPU tensors: the per-element math of pvlu.h in loops the compiler vectorizes,
// spread over OpenMP threads; the work functions are compiled once per instruction-set
// level and run at the chosen one (isa.h).
//
// sin and cos: libm's sinf/cosf do not vectorize (without -ffast-math and libmvec) and
// cost far more than the rest of the arithmetic, so float arguments (float, half types)
// go through trig.h's branch-free fast_sin / fast_sincos, accurate (absolute error
// < 1.3e-7) for |beta * x| <= 39000. Each loop computes every element that way and
// notes whether any argument was beyond that range (or inf/NaN); only then, which is
// rare, the work is done again with pvlu.h's std::sin/std::cos for those arguments.
// double uses std::sin/std::cos throughout.
//
// Determinism: the backward work is cut into `partials` fixed ranges that depend only
// on the sizes; each range sums its parameter gradients in a fixed order (per lane of
// kLanes, then the lanes in index order; for inner == 1 per channel in row order) into
// its own row of the (partials, channels) buffers, so the thread count and the
// scheduling change nothing in the result.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../pvlu.h"
#include "../switch.h"
#include "engine.h"
#include "isa.h"

namespace lslu_kernels {
namespace {

using namespace cpu_engine;

// ---------------------------------------------------------------------------------------
// sin and cos of float arguments: trig.h's fast_sincos / fast_sin (through pvlu.h), for
// |v| <= kFastTrigMax.

// 1 for arguments beyond fast_sincos's range, which the kernels give to std::sin/std::cos
// (also inf and NaN, whose results fast_sincos would get right: NaN), else 0. On the
// bits, so that the loops that OR it up vectorize. double has no fast path:
// std::sin/std::cos for every element.
LSLU_CPU_INLINE uint32_t far_argument(float v) {
  constexpr uint32_t kMaxBits = 0x47185800u;  // float_bits(kFastTrigMax)
  static_assert(kFastTrigMax == 39000.0f, "kMaxBits is the bits of kFastTrigMax");
  return uint32_t((float_bits(v) & 0x7fffffffu) > kMaxBits);
}
LSLU_CPU_INLINE uint32_t far_argument(double) { return 0; }
using lslu_kernels::fast_sin;  // the float ones (trig.h), next to the double ones here
using lslu_kernels::fast_sincos;
LSLU_CPU_INLINE void fast_sincos(double v, double& s, double& c) { pvlu_sincos(v, s, c); }
LSLU_CPU_INLINE double fast_sin(double v) { return pvlu_sin(v); }

// ---------------------------------------------------------------------------------------
// Element loops.

// Channel parameters of a loop: the same for every element (a row of one channel,
// inner > 1) or one per element (a row of channels, inner == 1).
template <typename acc_t>
struct OneChannel {
  acc_t a, b;
  LSLU_CPU_INLINE acc_t alpha(int64_t) const { return a; }
  LSLU_CPU_INLINE acc_t beta(int64_t) const { return b; }
};
template <typename acc_t>
struct ChannelRow {
  const acc_t* a;
  const acc_t* b;
  LSLU_CPU_INLINE acc_t alpha(int64_t i) const { return a[i]; }
  LSLU_CPU_INLINE acc_t beta(int64_t i) const { return b[i]; }
};

// y of n consecutive elements of one channel (the vectorizer handles the OR reduction of
// `far` in this loop: its trip count is not a small constant, so it is not unrolled first).
template <typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void forward_row(const scalar_t* x, scalar_t* y, int64_t n, const OneChannel<acc_t> p) {
  uint32_t far = 0;
  for (int64_t i = 0; i < n; ++i) {
    const acc_t xi = to_acc(x[i]);
    const acc_t v = p.b * xi;
    far |= far_argument(v);
    y[i] = from_acc<scalar_t>(pvlu_forward_from_sin(xi, p.a, fast_sin(v)));
  }
  if (far) {
    for (int64_t i = 0; i < n; ++i) {
      const acc_t xi = to_acc(x[i]);
      if (far_argument(p.b * xi)) y[i] = from_acc<scalar_t>(pvlu_forward(xi, p.a, p.b));
    }
  }
}

// y of COUNT (at most kLanes; 0: `count`, known at run time) consecutive elements of
// consecutive channels; lane_far[l] notes far arguments (an OR into an array, not a
// reduction, so that the loop vectorizes even when unrolled).
template <int64_t COUNT, bool FAR, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void forward_lanes(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t count,
                                   const ChannelRow<acc_t> p,
                                   uint32_t (&lane_far)[kLanes]) {
  const int64_t n = COUNT > 0 ? COUNT : count;
  for (int64_t l = 0; l < n; ++l) {
    const acc_t xl = to_acc(x[l]);
    const acc_t v = p.beta(l) * xl;
    if (!FAR) lane_far[l] |= far_argument(v);
    y[l] = from_acc<scalar_t>(FAR && far_argument(v) ? pvlu_forward(xl, p.alpha(l), p.beta(l))
                                                     : pvlu_forward_from_sin(xl, p.alpha(l), fast_sin(v)));
  }
}

// y of `rows` rows of `channels` elements, one per channel (inner == 1).
template <bool FAR, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void forward_rows(const scalar_t* x, scalar_t* y, int64_t rows, int64_t channels, const acc_t* alpha,
                                  const acc_t* beta, uint32_t (&lane_far)[kLanes]) {
  const int64_t full = channels / kLanes * kLanes;
  for (int64_t o = 0; o < rows; ++o) {
    const int64_t row = o * channels;
    for (int64_t c = 0; c < full; c += kLanes) {
      forward_lanes<kLanes, FAR>(x + row + c, y + row + c, kLanes, ChannelRow<acc_t>{alpha + c, beta + c}, lane_far);
    }
    if (full < channels) {
      forward_lanes<0, FAR>(x + row + full, y + row + full, channels - full,
                            ChannelRow<acc_t>{alpha + full, beta + full}, lane_far);
    }
  }
}

// grad_input of COUNT (at most kLanes) consecutive elements, and their parameter
// gradient contributions added to lane_dalpha[l], lane_dbeta[l] (l = the element's
// lane). COUNT = 0: `count` elements, known only at run time (the tail of a row).
// FAR = false: fast_sincos for every element, and lane_far[l] notes far arguments (an
// OR into an array, not a reduction, so that the loop still vectorizes); the caller
// redoes the work with FAR = true if any is noted: std::sin/std::cos for far arguments.
template <int64_t COUNT, bool FAR, typename scalar_t, typename Params, typename acc_t>
LSLU_CPU_INLINE void backward_lanes(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                    scalar_t* __restrict__ dx, int64_t count,
                                    const Params p, acc_t (&lane_dalpha)[kLanes], acc_t (&lane_dbeta)[kLanes],
                                    uint32_t (&lane_far)[kLanes]) {
  const int64_t n = COUNT > 0 ? COUNT : count;
  // Full blocks convert through local arrays (engine.h, load_lanes); a tail converts element by
  // element as before: through the arrays, GCC contracts its sums into FMAs differently at the
  // avx2 level, which would change results in the last bit.
  acc_t xs[kLanes], gs[kLanes], dxs[kLanes];
  if (COUNT > 0) {
    load_lanes<COUNT>(x, xs);
    load_lanes<COUNT>(g, gs);
  }
  for (int64_t l = 0; l < n; ++l) {
    const acc_t xl = COUNT > 0 ? xs[l] : to_acc(x[l]), gl = COUNT > 0 ? gs[l] : to_acc(g[l]);
    const acc_t v = p.beta(l) * xl;
    acc_t s, c, dalpha, dbeta;
    if (FAR && far_argument(v)) {
      pvlu_sincos(v, s, c);
    } else {
      fast_sincos(v, s, c);
    }
    if (!FAR) lane_far[l] |= far_argument(v);
    const acc_t dxl = pvlu_backward_from_sincos(xl, gl, p.alpha(l), p.beta(l), s, c, dalpha, dbeta);
    if (COUNT > 0) {
      dxs[l] = dxl;
    } else {
      dx[l] = from_acc<scalar_t>(dxl);
    }
    lane_dalpha[l] += dalpha;
    lane_dbeta[l] += dbeta;
  }
  if (COUNT > 0) store_lanes<COUNT>(dxs, dx);
}

// Backward over `n` consecutive elements of one channel; adds that channel's
// parameter gradient sums to *dalpha_sum / *dbeta_sum: per lane, then the lanes in order.
template <bool FAR, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void backward_row(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t n,
                                  const OneChannel<acc_t> p, acc_t* dalpha_sum, acc_t* dbeta_sum,
                                  uint32_t (&lane_far)[kLanes]) {
  LaneSums<acc_t, 2> lanes;  // dalpha, dbeta
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    backward_lanes<kLanes, FAR>(x + i, g + i, dx + i, kLanes, p, lanes.v[0], lanes.v[1], lane_far);
  }
  if (i < n) backward_lanes<0, FAR>(x + i, g + i, dx + i, n - i, p, lanes.v[0], lanes.v[1], lane_far);
  *dalpha_sum += lanes.total(0);
  *dbeta_sum += lanes.total(1);
}

// One row's tile of COUNT (0: `lanes`) channels of backward_rows below, its sums loaded into
// and stored from local lane arrays.
template <int64_t COUNT, bool FAR, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void backward_rows_tile(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t lanes,
                                        const acc_t* alpha, const acc_t* beta, acc_t* dalpha_sum, acc_t* dbeta_sum,
                                        uint32_t (&lane_far)[kLanes]) {
  const size_t bytes = size_t(COUNT > 0 ? COUNT : lanes) * sizeof(acc_t);
  acc_t lane_dalpha[kLanes], lane_dbeta[kLanes];
  if (COUNT == 0) {
    std::fill(lane_dalpha, lane_dalpha + kLanes, acc_t(0));
    std::fill(lane_dbeta, lane_dbeta + kLanes, acc_t(0));
  }
  std::memcpy(lane_dalpha, dalpha_sum, bytes);
  std::memcpy(lane_dbeta, dbeta_sum, bytes);
  backward_lanes<COUNT, FAR>(x, g, dx, lanes, ChannelRow<acc_t>{alpha, beta}, lane_dalpha, lane_dbeta, lane_far);
  std::memcpy(dalpha_sum, lane_dalpha, bytes);
  std::memcpy(dbeta_sum, lane_dbeta, bytes);
}

// Backward over `rows` rows of `channels` elements, one per channel (inner == 1), row
// o at x + o * channels; adds channel c's sum over the rows, in row order, to
// dalpha_sum[c] / dbeta_sum[c]. The rows are walked in memory order; the sums of each
// tile of kLanes channels go through a local lane array (which the compiler knows
// aliases none of the tensors).
template <bool FAR, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void backward_rows(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t rows, int64_t channels,
                                   const acc_t* alpha, const acc_t* beta, acc_t* dalpha_sum, acc_t* dbeta_sum,
                                   uint32_t (&lane_far)[kLanes]) {
  const int64_t full = channels / kLanes * kLanes;
  for (int64_t o = 0; o < rows; ++o) {
    const int64_t row = o * channels;
    for (int64_t c = 0; c < full; c += kLanes) {
      backward_rows_tile<kLanes, FAR>(x + row + c, g + row + c, dx + row + c, kLanes, alpha + c, beta + c,
                                      dalpha_sum + c, dbeta_sum + c, lane_far);
    }
    if (full < channels) {
      backward_rows_tile<0, FAR>(x + row + full, g + row + full, dx + row + full, channels - full, alpha + full,
                                 beta + full, dalpha_sum + full, dbeta_sum + full, lane_far);
    }
  }
}

// Forward of work items [first, last).
template <typename scalar_t>
LSLU_CPU_INLINE void forward_items(const KernelArgs& a, int64_t first, int64_t last) {
  using acc_t = acc_type<scalar_t>;
  const Tensors<scalar_t> t(a);
  const scalar_t* x = t.x;
  scalar_t* y = t.y;
  const PvluOp<scalar_t> op(a);
  const acc_t *alpha = op.alpha, *beta = op.beta;  // inner == 1: a row's channels, lane by lane
  const int64_t C = a.channels;
  if (a.inner > 1) {
    for_each_chunk(a, first, last, [&](int64_t offset, int64_t n, int64_t c) LSLU_CPU_LAMBDA {
      const auto p = op.channel(c, C);
      forward_row(x + offset, y + offset, n, OneChannel<acc_t>{p.alpha, p.beta});
    });
  } else {
    // inner == 1: items are rows. As in backward_part: fast_sin throughout, then again
    // with std::sin for far arguments if there are any.
    uint32_t lane_far[kLanes] = {};
    forward_rows<false>(x + first * C, y + first * C, last - first, C, alpha, beta, lane_far);
    uint32_t far = 0;
    for (int64_t l = 0; l < kLanes; ++l) far |= lane_far[l];
    if (far) forward_rows<true>(x + first * C, y + first * C, last - first, C, alpha, beta, lane_far);
  }
}

// Backward of work items [first, last): grad_input of their elements, and their
// parameter gradient sums added to dalpha_sum[c] / dbeta_sum[c].
template <bool FAR, typename scalar_t>
LSLU_CPU_INLINE void backward_items(const KernelArgs& a, int64_t first, int64_t last, acc_type<scalar_t>* dalpha_sum,
                                    acc_type<scalar_t>* dbeta_sum, uint32_t (&lane_far)[kLanes]) {
  using acc_t = acc_type<scalar_t>;
  const Tensors<scalar_t> t(a);
  const scalar_t *x = t.x, *g = t.grad_output;
  scalar_t* dx = t.grad_input;
  const PvluOp<scalar_t> op(a);
  const acc_t *alpha = op.alpha, *beta = op.beta;  // inner == 1: a row's channels, lane by lane
  const int64_t C = a.channels;
  if (a.inner > 1) {
    for_each_chunk(a, first, last, [&](int64_t offset, int64_t n, int64_t c) LSLU_CPU_LAMBDA {
      const auto p = op.channel(c, C);
      backward_row<FAR>(x + offset, g + offset, dx + offset, n, OneChannel<acc_t>{p.alpha, p.beta}, dalpha_sum + c,
                        dbeta_sum + c, lane_far);
    });
  } else {
    // inner == 1: items are rows.
    backward_rows<FAR>(x + first * C, g + first * C, dx + first * C, last - first, C, alpha, beta, dalpha_sum,
                       dbeta_sum, lane_far);
  }
}

// Backward of the part-th fixed range of work items, with its parameter gradient sums
// in row `part` of the partial buffers. Computed with fast_sincos throughout; in the
// rare case that some argument is beyond its range, the range is computed again, from
// zeroed sums, with std::sin/std::cos for those arguments. Either way the result
// depends only on the data.
template <typename scalar_t>
LSLU_CPU_INLINE void backward_part(const KernelArgs& a, int64_t part) {
  using acc_t = acc_type<scalar_t>;
  const PartialRows<PvluOp<scalar_t>> sums(PvluOp<scalar_t>(a), part, a.channels);
  acc_t *dalpha_sum = sums.row[0], *dbeta_sum = sums.row[1];  // PvluOp's sums 0 and 1
  int64_t first, last;
  range_of(part, a.partials, work_items(a.outer, a.channels, a.inner), first, last);
  uint32_t lane_far[kLanes] = {};
  backward_items<false, scalar_t>(a, first, last, dalpha_sum, dbeta_sum, lane_far);
  uint32_t far = 0;
  for (int64_t l = 0; l < kLanes; ++l) far |= lane_far[l];
  if (far) {
    std::fill(dalpha_sum, dalpha_sum + a.channels, acc_t(0));
    std::fill(dbeta_sum, dbeta_sum + a.channels, acc_t(0));
    backward_items<true, scalar_t>(a, first, last, dalpha_sum, dbeta_sum, lane_far);
  }
}

void forward(const KernelArgs& a, int threads) {
  LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
    parallel_ranges<Work<&forward_items<scalar_t>>>(work_items(a.outer, a.channels, a.inner), threads, a);
  });
}

void backward(const KernelArgs& a, int threads) {
  // Every part zeroes and fills its own row of the partial buffers.
  LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
    parallel_parts<Work<&backward_part<scalar_t>>>(a.partials, threads, a);
  });
}

}  // namespace

const CpuEntryPoints pvlu_cpu = {&forward, &backward, &item_partials};

}  // namespace lslu_kernels
