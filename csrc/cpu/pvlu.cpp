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

#include "../launch.h"
#include "../pvlu.h"
#include "isa.h"

namespace lslu_kernels {
namespace {

// Elements handled together: the lane loops below have this many independent
// iterations, which the compiler turns into vector instructions.
constexpr int64_t kLanes = 16;
// At most this many partial rows (and fixed work ranges) per backward call.
constexpr int64_t kMaxPartials = 256;
// Long rows are cut into chunks of this many elements, so that few long rows
// still spread over every thread.
constexpr int64_t kChunk = 1 << 14;

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
LSLU_CPU_INLINE void forward_lanes(const scalar_t* x, scalar_t* y, int64_t count, const ChannelRow<acc_t> p,
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
LSLU_CPU_INLINE void backward_lanes(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t count,
                                    const Params p, acc_t (&lane_dalpha)[kLanes], acc_t (&lane_dbeta)[kLanes],
                                    uint32_t (&lane_far)[kLanes]) {
  const int64_t n = COUNT > 0 ? COUNT : count;
  for (int64_t l = 0; l < n; ++l) {
    const acc_t xl = to_acc(x[l]), gl = to_acc(g[l]);
    const acc_t v = p.beta(l) * xl;
    acc_t s, c, dalpha, dbeta;
    if (FAR && far_argument(v)) {
      pvlu_sincos(v, s, c);
    } else {
      fast_sincos(v, s, c);
    }
    if (!FAR) lane_far[l] |= far_argument(v);
    dx[l] = from_acc<scalar_t>(pvlu_backward_from_sincos(xl, gl, p.alpha(l), p.beta(l), s, c, dalpha, dbeta));
    lane_dalpha[l] += dalpha;
    lane_dbeta[l] += dbeta;
  }
}

// Backward over `n` consecutive elements of one channel; adds that channel's
// parameter gradient sums to *dalpha_sum / *dbeta_sum: per lane, then the lanes in order.
template <bool FAR, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void backward_row(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t n,
                                  const OneChannel<acc_t> p, acc_t* dalpha_sum, acc_t* dbeta_sum,
                                  uint32_t (&lane_far)[kLanes]) {
  acc_t lane_dalpha[kLanes] = {}, lane_dbeta[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    backward_lanes<kLanes, FAR>(x + i, g + i, dx + i, kLanes, p, lane_dalpha, lane_dbeta, lane_far);
  }
  if (i < n) backward_lanes<0, FAR>(x + i, g + i, dx + i, n - i, p, lane_dalpha, lane_dbeta, lane_far);
  acc_t sum_alpha = 0, sum_beta = 0;
  for (int64_t l = 0; l < kLanes; ++l) {
    sum_alpha += lane_dalpha[l];
    sum_beta += lane_dbeta[l];
  }
  *dalpha_sum += sum_alpha;
  *dbeta_sum += sum_beta;
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
      acc_t lane_dalpha[kLanes], lane_dbeta[kLanes];
      std::memcpy(lane_dalpha, dalpha_sum + c, sizeof(lane_dalpha));
      std::memcpy(lane_dbeta, dbeta_sum + c, sizeof(lane_dbeta));
      backward_lanes<kLanes, FAR>(x + row + c, g + row + c, dx + row + c, kLanes,
                                  ChannelRow<acc_t>{alpha + c, beta + c}, lane_dalpha, lane_dbeta, lane_far);
      std::memcpy(dalpha_sum + c, lane_dalpha, sizeof(lane_dalpha));
      std::memcpy(dbeta_sum + c, lane_dbeta, sizeof(lane_dbeta));
    }
    if (full < channels) {
      const int64_t lanes = channels - full;
      acc_t lane_dalpha[kLanes] = {}, lane_dbeta[kLanes] = {};
      std::memcpy(lane_dalpha, dalpha_sum + full, lanes * sizeof(acc_t));
      std::memcpy(lane_dbeta, dbeta_sum + full, lanes * sizeof(acc_t));
      backward_lanes<0, FAR>(x + row + full, g + row + full, dx + row + full, lanes,
                             ChannelRow<acc_t>{alpha + full, beta + full}, lane_dalpha, lane_dbeta, lane_far);
      std::memcpy(dalpha_sum + full, lane_dalpha, lanes * sizeof(acc_t));
      std::memcpy(dbeta_sum + full, lane_dbeta, lanes * sizeof(acc_t));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Work split.

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

// Forward of work items [first, last).
template <typename scalar_t>
LSLU_CPU_INLINE void forward_items(const PvluArgs& a, int64_t first, int64_t last) {
  using acc_t = acc_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* y = static_cast<scalar_t*>(a.y);
  const auto* alpha = static_cast<const acc_t*>(a.alpha);
  const auto* beta = static_cast<const acc_t*>(a.beta);
  const int64_t C = a.channels;
  if (a.inner > 1) {
    // row = o * C + c has one channel.
    const int64_t chunks = chunks_per_row(a.inner);
    for (int64_t item = first; item < last; ++item) {
      const int64_t row = item / chunks, c = row % C;
      const int64_t begin = (item % chunks) * kChunk, end = std::min(begin + kChunk, a.inner);
      const int64_t offset = row * a.inner + begin;
      forward_row(x + offset, y + offset, end - begin, OneChannel<acc_t>{alpha[c], beta[c]});
    }
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
LSLU_CPU_INLINE void backward_items(const PvluArgs& a, int64_t first, int64_t last, acc_type<scalar_t>* dalpha_sum,
                                    acc_type<scalar_t>* dbeta_sum, uint32_t (&lane_far)[kLanes]) {
  using acc_t = acc_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* g = static_cast<const scalar_t*>(a.grad_output);
  auto* dx = static_cast<scalar_t*>(a.grad_input);
  const auto* alpha = static_cast<const acc_t*>(a.alpha);
  const auto* beta = static_cast<const acc_t*>(a.beta);
  const int64_t C = a.channels;
  if (a.inner > 1) {
    // Items are (row, chunk of the row); row = o * C + c has one channel.
    const int64_t chunks = chunks_per_row(a.inner);
    for (int64_t item = first; item < last; ++item) {
      const int64_t row = item / chunks, c = row % C;
      const int64_t begin = (item % chunks) * kChunk, end = std::min(begin + kChunk, a.inner);
      const int64_t offset = row * a.inner + begin;
      backward_row<FAR>(x + offset, g + offset, dx + offset, end - begin, OneChannel<acc_t>{alpha[c], beta[c]},
                        dalpha_sum + c, dbeta_sum + c, lane_far);
    }
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
LSLU_CPU_INLINE void backward_part(const PvluArgs& a, int64_t part) {
  using acc_t = acc_type<scalar_t>;
  acc_t* dalpha_sum = static_cast<acc_t*>(a.dalpha_partial) + part * a.channels;
  acc_t* dbeta_sum = static_cast<acc_t*>(a.dbeta_partial) + part * a.channels;
  int64_t first, last;
  range_of(part, a.partials, work_items(a.outer, a.channels, a.inner), first, last);
  uint32_t lane_far[kLanes] = {};
  std::fill(dalpha_sum, dalpha_sum + a.channels, acc_t(0));
  std::fill(dbeta_sum, dbeta_sum + a.channels, acc_t(0));
  backward_items<false, scalar_t>(a, first, last, dalpha_sum, dbeta_sum, lane_far);
  uint32_t far = 0;
  for (int64_t l = 0; l < kLanes; ++l) far |= lane_far[l];
  if (far) {
    std::fill(dalpha_sum, dalpha_sum + a.channels, acc_t(0));
    std::fill(dbeta_sum, dbeta_sum + a.channels, acc_t(0));
    backward_items<true, scalar_t>(a, first, last, dalpha_sum, dbeta_sum, lane_far);
  }
}

// The work functions, compiled once per instruction-set level (isa.h).
template <typename scalar_t>
struct ForwardItems {
  static LSLU_CPU_INLINE void run(const PvluArgs& a, int64_t first, int64_t last) {
    forward_items<scalar_t>(a, first, last);
  }
};
template <typename scalar_t>
struct BackwardPart {
  static LSLU_CPU_INLINE void run(const PvluArgs& a, int64_t part) { backward_part<scalar_t>(a, part); }
};

template <typename scalar_t>
void forward(const PvluArgs& a, int threads) {
  // One contiguous range of items per thread (forward sums nothing: any split gives the same y).
  const int64_t items = work_items(a.outer, a.channels, a.inner);
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(items, threads));
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t piece = 0; piece < pieces; ++piece) {
    int64_t first, last;
    range_of(piece, pieces, items, first, last);
    run_at_level<ForwardItems<scalar_t>>(isa, a, first, last);
  }
}

template <typename scalar_t>
void backward(const PvluArgs& a, int threads) {
  // Every part zeroes and fills its own row of the partial buffers.
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t part = 0; part < a.partials; ++part) run_at_level<BackwardPart<scalar_t>>(isa, a, part);
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
