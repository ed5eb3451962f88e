// LSLU on CPU tensors: the per-element math of lslu.h in loops the compiler vectorizes,
// spread over OpenMP threads; the work functions are compiled once per instruction-set
// level and run at the chosen one (isa.h).
//
// Determinism: the work is cut into `partials` fixed ranges that depend only on
// the sizes; each range sums its parameter gradients in a fixed order into its
// own row of the partial buffers, so the thread count and the scheduling change
// nothing in the result.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "../launch.h"
#include "../dispatch.h"
#include "../lslu.h"
#include "isa.h"

namespace lslu_kernels {
namespace {

// Elements of a row handled together: the lane loops below have this many
// independent iterations, which the compiler turns into vector instructions.
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

// One channel's parameters, from the (stages, channels) arrays.
template <int STAGES, typename acc_t>
struct ChannelParams {
  acc_t theta[STAGES], omega[STAGES];
  LSLU_CPU_INLINE ChannelParams(const acc_t* theta_all, const acc_t* omega_all, int64_t channels, int64_t c) {
    // Unrolled: as a loop, the compiler makes it a memcpy, which stops the vectorizer.
    LSLU_UNROLL
    for (int s = 0; s < STAGES; ++s) {
      theta[s] = theta_all[s * channels + c];
      omega[s] = omega_all[s * channels + c];
    }
  }
};

// The range [begin, end) of `n` items that the p-th of `parts` ranges covers.
inline void range_of(int64_t p, int64_t parts, int64_t n, int64_t& begin, int64_t& end) {
  begin = p * n / parts;
  end = (p + 1) * n / parts;
}

// Forward of work items [first, last).
template <int STAGES, typename scalar_t>
LSLU_CPU_INLINE void forward_items(const LsluArgs& a, int64_t first, int64_t last) {
  using acc_t = acc_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* y = static_cast<scalar_t*>(a.y);
  const auto* theta = static_cast<const acc_t*>(a.theta);
  const auto* omega = static_cast<const acc_t*>(a.omega);
  const int64_t C = a.channels;
  if (a.inner > 1) {
    // Items are (row, chunk of the row); row = o * C + c has one channel.
    const int64_t chunks = chunks_per_row(a.inner);
    for (int64_t item = first; item < last; ++item) {
      const int64_t row = item / chunks;
      const int64_t begin = (item % chunks) * kChunk, end = std::min(begin + kChunk, a.inner);
      const ChannelParams<STAGES, acc_t> p(theta, omega, C, row % C);
      const scalar_t* xr = x + row * a.inner;
      scalar_t* yr = y + row * a.inner;
      for (int64_t i = begin; i < end; ++i) {
        yr[i] = from_acc<scalar_t>(lslu_forward<STAGES>(to_acc(xr[i]), p.theta, p.omega));
      }
    }
  } else {
    // inner == 1: items are rows of C elements, one per channel.
    for (int64_t o = first; o < last; ++o) {
      const scalar_t* xr = x + o * C;
      scalar_t* yr = y + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const ChannelParams<STAGES, acc_t> p(theta, omega, C, c);
        yr[c] = from_acc<scalar_t>(lslu_forward<STAGES>(to_acc(xr[c]), p.theta, p.omega));
      }
    }
  }
}

// Backward over `n` consecutive elements of one channel; adds that channel's
// parameter gradient sums to dtheta_sum / domega_sum (in a fixed order).
template <int STAGES, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void backward_row(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t n,
                                  const ChannelParams<STAGES, acc_t> p, acc_t* dtheta_sum, acc_t* domega_sum,
                                  int64_t sum_stride) {
  acc_t lane_dtheta[STAGES][kLanes] = {}, lane_domega[STAGES][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      acc_t dtheta[STAGES], domega[STAGES];
      dx[i + l] = from_acc<scalar_t>(
          lslu_backward<STAGES>(to_acc(x[i + l]), to_acc(g[i + l]), p.theta, p.omega, dtheta, domega));
      for (int s = 0; s < STAGES; ++s) {
        lane_dtheta[s][l] += dtheta[s];
        lane_domega[s][l] += domega[s];
      }
    }
  }
  for (int64_t l = 0; i < n; ++i, ++l) {  // the tail, one element per lane
    acc_t dtheta[STAGES], domega[STAGES];
    dx[i] = from_acc<scalar_t>(lslu_backward<STAGES>(to_acc(x[i]), to_acc(g[i]), p.theta, p.omega, dtheta, domega));
    for (int s = 0; s < STAGES; ++s) {
      lane_dtheta[s][l] += dtheta[s];
      lane_domega[s][l] += domega[s];
    }
  }
  for (int s = 0; s < STAGES; ++s) {
    acc_t sum_theta = 0, sum_omega = 0;
    for (int64_t l = 0; l < kLanes; ++l) {
      sum_theta += lane_dtheta[s][l];
      sum_omega += lane_domega[s][l];
    }
    dtheta_sum[s * sum_stride] += sum_theta;
    domega_sum[s * sum_stride] += sum_omega;
  }
}

// Backward over one row of `channels` elements, one per channel; adds each
// channel's contributions to dtheta_sum / domega_sum (stage s of channel c at
// s * channels + c). Lanes of kLanes channels first collect the contributions
// in local arrays, so that both loops are plain vector loops.
template <int STAGES, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void backward_channels(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t channels,
                                       const acc_t* theta, const acc_t* omega, acc_t* dtheta_sum, acc_t* domega_sum) {
  for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
    const int64_t lanes = std::min(kLanes, channels - c0);
    acc_t lane_dtheta[STAGES][kLanes], lane_domega[STAGES][kLanes];
    for (int64_t l = 0; l < lanes; ++l) {
      const ChannelParams<STAGES, acc_t> p(theta, omega, channels, c0 + l);
      acc_t dtheta[STAGES], domega[STAGES];
      dx[c0 + l] = from_acc<scalar_t>(
          lslu_backward<STAGES>(to_acc(x[c0 + l]), to_acc(g[c0 + l]), p.theta, p.omega, dtheta, domega));
      LSLU_UNROLL
      for (int s = 0; s < STAGES; ++s) {
        lane_dtheta[s][l] = dtheta[s];
        lane_domega[s][l] = domega[s];
      }
    }
    for (int s = 0; s < STAGES; ++s) {
      for (int64_t l = 0; l < lanes; ++l) {
        dtheta_sum[s * channels + c0 + l] += lane_dtheta[s][l];
        domega_sum[s * channels + c0 + l] += lane_domega[s][l];
      }
    }
  }
}

// Backward of the part-th of `partials` fixed ranges of work items, with its parameter
// gradient sums in row `part` of the partial buffers (zeroed here first).
template <int STAGES, typename scalar_t>
LSLU_CPU_INLINE void backward_part(const LsluArgs& a, int64_t part) {
  using acc_t = acc_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* g = static_cast<const scalar_t*>(a.grad_output);
  auto* dx = static_cast<scalar_t*>(a.grad_input);
  const auto* theta = static_cast<const acc_t*>(a.theta);
  const auto* omega = static_cast<const acc_t*>(a.omega);
  const int64_t C = a.channels;
  const int64_t partial_size = int64_t(STAGES) * C;
  acc_t* dtheta_sum = static_cast<acc_t*>(a.dtheta_partial) + part * partial_size;
  acc_t* domega_sum = static_cast<acc_t*>(a.domega_partial) + part * partial_size;
  std::fill(dtheta_sum, dtheta_sum + partial_size, acc_t(0));
  std::fill(domega_sum, domega_sum + partial_size, acc_t(0));
  int64_t first, last;
  range_of(part, a.partials, work_items(a.outer, C, a.inner), first, last);
  if (a.inner > 1) {
    // Items are (row, chunk of the row); row = o * C + c has one channel.
    const int64_t chunks = chunks_per_row(a.inner);
    for (int64_t item = first; item < last; ++item) {
      const int64_t row = item / chunks, c = row % C;
      const int64_t begin = (item % chunks) * kChunk, end = std::min(begin + kChunk, a.inner);
      const int64_t offset = row * a.inner + begin;
      const ChannelParams<STAGES, acc_t> p(theta, omega, C, c);
      backward_row<STAGES>(x + offset, g + offset, dx + offset, end - begin, p, dtheta_sum + c, domega_sum + c, C);
    }
  } else {
    // inner == 1: items are rows; per-channel sums run along the row.
    for (int64_t o = first; o < last; ++o) {
      backward_channels<STAGES>(x + o * C, g + o * C, dx + o * C, C, theta, omega, dtheta_sum, domega_sum);
    }
  }
}

// The work functions, compiled once per instruction-set level (isa.h).
template <int STAGES, typename scalar_t>
struct ForwardItems {
  static LSLU_CPU_INLINE void run(const LsluArgs& a, int64_t first, int64_t last) {
    forward_items<STAGES, scalar_t>(a, first, last);
  }
};
template <int STAGES, typename scalar_t>
struct BackwardPart {
  static LSLU_CPU_INLINE void run(const LsluArgs& a, int64_t part) { backward_part<STAGES, scalar_t>(a, part); }
};

template <int STAGES, typename scalar_t>
void forward(const LsluArgs& a, int threads) {
  // One contiguous range of items per thread (forward sums nothing: any split gives the same y).
  const int64_t items = work_items(a.outer, a.channels, a.inner);
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(items, threads));
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t piece = 0; piece < pieces; ++piece) {
    int64_t first, last;
    range_of(piece, pieces, items, first, last);
    run_at_level<ForwardItems<STAGES, scalar_t>>(isa, a, first, last);
  }
}

template <int STAGES, typename scalar_t>
void backward(const LsluArgs& a, int threads) {
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t part = 0; part < a.partials; ++part) run_at_level<BackwardPart<STAGES, scalar_t>>(isa, a, part);
}

struct Forward {
  template <int STAGES, typename scalar_t>
  static void run(const LsluArgs& args, int threads) { forward<STAGES, scalar_t>(args, threads); }
};
struct Backward {
  template <int STAGES, typename scalar_t>
  static void run(const LsluArgs& args, int threads) { backward<STAGES, scalar_t>(args, threads); }
};

}  // namespace

int64_t lslu_backward_partials_cpu(int64_t outer, int64_t channels, int64_t inner) {
  return std::max<int64_t>(1, std::min(work_items(outer, channels, inner), kMaxPartials));
}

void lslu_forward_cpu(const LsluArgs& args, int threads) { dispatch_lslu<Forward>(args, threads); }

void lslu_backward_cpu(const LsluArgs& args, int threads) { dispatch_lslu<Backward>(args, threads); }

}  // namespace lslu_kernels
