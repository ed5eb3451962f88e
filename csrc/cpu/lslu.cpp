// LSLU on CPU tensors: the per-element math of lslu.h in loops the compiler vectorizes,
// spread over OpenMP threads; the work functions are compiled once per instruction-set
// level and run at the chosen one (isa.h).
//
// Determinism: the work is cut into `partials` fixed ranges that depend only on
// the sizes; each range sums its parameter gradients in a fixed order into its
// own row of the partial buffers, so the thread count and the scheduling change
// nothing in the result.
#include <algorithm>

#include "../lslu.h"
#include "../switch.h"
#include "engine.h"
#include "isa.h"

namespace lslu_kernels {
namespace {

using namespace cpu_engine;

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

// Forward of work items [first, last).
template <int STAGES, typename scalar_t>
LSLU_CPU_INLINE void forward_items(const KernelArgs& a, int64_t first, int64_t last) {
  using acc_t = acc_type<scalar_t>;
  const Tensors<scalar_t> t(a);
  const scalar_t* x = t.x;
  scalar_t* y = t.y;
  const acc_t *theta = t.param(0), *omega = t.param(1);
  const int64_t C = a.channels;
  if (a.inner > 1) {
    for_each_chunk(a, first, last, [&](int64_t offset, int64_t n, int64_t c) LSLU_CPU_LAMBDA {
      const ChannelParams<STAGES, acc_t> p(theta, omega, C, c);
      const scalar_t* xr = x + offset;
      scalar_t* yr = y + offset;
      for (int64_t i = 0; i < n; ++i) {
        yr[i] = from_acc<scalar_t>(lslu_forward<STAGES>(to_acc(xr[i]), p.theta, p.omega));
      }
    });
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
  LaneSums<acc_t, STAGES> lane_dtheta, lane_domega;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      acc_t dtheta[STAGES], domega[STAGES];
      dx[i + l] = from_acc<scalar_t>(
          lslu_backward<STAGES>(to_acc(x[i + l]), to_acc(g[i + l]), p.theta, p.omega, dtheta, domega));
      for (int s = 0; s < STAGES; ++s) {
        lane_dtheta.v[s][l] += dtheta[s];
        lane_domega.v[s][l] += domega[s];
      }
    }
  }
  for (int64_t l = 0; i < n; ++i, ++l) {  // the tail, one element per lane
    acc_t dtheta[STAGES], domega[STAGES];
    dx[i] = from_acc<scalar_t>(lslu_backward<STAGES>(to_acc(x[i]), to_acc(g[i]), p.theta, p.omega, dtheta, domega));
    for (int s = 0; s < STAGES; ++s) {
      lane_dtheta.v[s][l] += dtheta[s];
      lane_domega.v[s][l] += domega[s];
    }
  }
  for (int s = 0; s < STAGES; ++s) {
    dtheta_sum[s * sum_stride] += lane_dtheta.total(s);
    domega_sum[s * sum_stride] += lane_domega.total(s);
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
LSLU_CPU_INLINE void backward_part(const KernelArgs& a, int64_t part) {
  using acc_t = acc_type<scalar_t>;
  const Tensors<scalar_t> t(a);
  const scalar_t *x = t.x, *g = t.grad_output;
  scalar_t* dx = t.grad_input;
  const acc_t *theta = t.param(0), *omega = t.param(1);
  const int64_t C = a.channels;
  const int64_t partial_size = int64_t(STAGES) * C;
  acc_t* dtheta_sum = t.partial(0) + part * partial_size;
  acc_t* domega_sum = t.partial(1) + part * partial_size;
  std::fill(dtheta_sum, dtheta_sum + partial_size, acc_t(0));
  std::fill(domega_sum, domega_sum + partial_size, acc_t(0));
  int64_t first, last;
  range_of(part, a.partials, work_items(a.outer, C, a.inner), first, last);
  if (a.inner > 1) {
    for_each_chunk(a, first, last, [&](int64_t offset, int64_t n, int64_t c) LSLU_CPU_LAMBDA {
      const ChannelParams<STAGES, acc_t> p(theta, omega, C, c);
      backward_row<STAGES>(x + offset, g + offset, dx + offset, n, p, dtheta_sum + c, domega_sum + c, C);
    });
  } else {
    // inner == 1: items are rows; per-channel sums run along the row.
    for (int64_t o = first; o < last; ++o) {
      backward_channels<STAGES>(x + o * C, g + o * C, dx + o * C, C, theta, omega, dtheta_sum, domega_sum);
    }
  }
}

void forward(const KernelArgs& a, int threads) {
  LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
    LSLU_STAGES_SWITCH(a.size, STAGES, [&] {
      parallel_ranges<Work<&forward_items<STAGES, scalar_t>>>(work_items(a.outer, a.channels, a.inner), threads, a);
    });
  });
}

void backward(const KernelArgs& a, int threads) {
  LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
    LSLU_STAGES_SWITCH(a.size, STAGES, [&] {
      parallel_parts<Work<&backward_part<STAGES, scalar_t>>>(a.partials, threads, a);
    });
  });
}

}  // namespace

const CpuEntryPoints lslu_cpu = {&forward, &backward, &item_partials};

}  // namespace lslu_kernels
