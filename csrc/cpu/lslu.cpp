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

// Forward of work items [first, last).
template <int STAGES, typename scalar_t>
LSLU_CPU_INLINE void forward_items(const KernelArgs& a, int64_t first, int64_t last) {
  const Tensors<scalar_t> t(a);
  const scalar_t* x = t.x;
  scalar_t* y = t.y;
  const LsluOp<scalar_t, STAGES> op(a);
  const int64_t C = a.channels;
  if (a.inner > 1) {
    for_each_chunk(a, first, last, [&](int64_t offset, int64_t n, int64_t c) LSLU_CPU_LAMBDA {
      const auto p = op.channel(c, C);
      const scalar_t* __restrict__ xr = x + offset;
      scalar_t* __restrict__ yr = y + offset;
      for (int64_t i = 0; i < n; ++i) {
        yr[i] = from_acc<scalar_t>(lslu_forward<STAGES>(to_acc(xr[i]), p.theta, p.omega));
      }
    });
  } else {
    // inner == 1: items are rows of C elements, one per channel.
    for (int64_t o = first; o < last; ++o) {
      const scalar_t* __restrict__ xr = x + o * C;
      scalar_t* __restrict__ yr = y + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const auto p = op.channel(c, C);
        yr[c] = from_acc<scalar_t>(lslu_forward<STAGES>(to_acc(xr[c]), p.theta, p.omega));
      }
    }
  }
}

// Backward over `n` consecutive elements of channel c; adds that channel's parameter
// gradient sums to its entries of `sums` (in a fixed order).
template <int STAGES, typename scalar_t, typename acc_t = acc_type<scalar_t>>
LSLU_CPU_INLINE void backward_row(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                  scalar_t* __restrict__ dx, int64_t n,
                                  const typename LsluOp<scalar_t, STAGES>::Channel p,
                                  const PartialRows<LsluOp<scalar_t, STAGES>>& sums, int64_t c) {
  LaneSums<acc_t, STAGES> lane_dtheta, lane_domega;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    acc_t xs[kLanes], gs[kLanes], dxs[kLanes];
    load_lanes(x + i, xs);
    load_lanes(g + i, gs);
    for (int64_t l = 0; l < kLanes; ++l) {
      acc_t dtheta[STAGES], domega[STAGES];
      dxs[l] = lslu_backward<STAGES>(xs[l], gs[l], p.theta, p.omega, dtheta, domega);
      for (int s = 0; s < STAGES; ++s) {
        lane_dtheta.v[s][l] += dtheta[s];
        lane_domega.v[s][l] += domega[s];
      }
    }
    store_lanes(dxs, dx + i);
  }
  for (int64_t l = 0; i < n; ++i, ++l) {  // the tail, one element per lane
    acc_t dtheta[STAGES], domega[STAGES];
    dx[i] = from_acc<scalar_t>(lslu_backward<STAGES>(to_acc(x[i]), to_acc(g[i]), p.theta, p.omega, dtheta, domega));
    for (int s = 0; s < STAGES; ++s) {
      lane_dtheta.v[s][l] += dtheta[s];
      lane_domega.v[s][l] += domega[s];
    }
  }
  for (int s = 0; s < STAGES; ++s) {  // LsluOp's sums: dtheta_s at 2s, domega_s at 2s + 1
    sums.row[2 * s][c] += lane_dtheta.total(s);
    sums.row[2 * s + 1][c] += lane_domega.total(s);
  }
}

// Backward over one row of `channels` elements, one per channel; adds each
// channel's contributions to its entries of `sums`. Lanes of kLanes channels first
// collect the contributions in local arrays, so that both loops are plain vector loops.
template <int STAGES, typename scalar_t, typename acc_t = acc_type<scalar_t>>
LSLU_CPU_INLINE void backward_channels(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                       scalar_t* __restrict__ dx, int64_t channels,
                                       const LsluOp<scalar_t, STAGES>& op,
                                       const PartialRows<LsluOp<scalar_t, STAGES>>& sums) {
  for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
    const int64_t lanes = std::min(kLanes, channels - c0);
    acc_t lane_dtheta[STAGES][kLanes], lane_domega[STAGES][kLanes];
    for (int64_t l = 0; l < lanes; ++l) {
      const auto p = op.channel(c0 + l, channels);
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
      acc_t* dtheta_sum = sums.row[2 * s] + c0;
      acc_t* domega_sum = sums.row[2 * s + 1] + c0;
      for (int64_t l = 0; l < lanes; ++l) {
        dtheta_sum[l] += lane_dtheta[s][l];
        domega_sum[l] += lane_domega[s][l];
      }
    }
  }
}

// Backward of the part-th of `partials` fixed ranges of work items, with its parameter
// gradient sums in row `part` of the partial buffers (zeroed here first).
template <int STAGES, typename scalar_t>
LSLU_CPU_INLINE void backward_part(const KernelArgs& a, int64_t part) {
  const Tensors<scalar_t> t(a);
  const scalar_t *x = t.x, *g = t.grad_output;
  scalar_t* dx = t.grad_input;
  const LsluOp<scalar_t, STAGES> op(a);
  const int64_t C = a.channels;
  const PartialRows<LsluOp<scalar_t, STAGES>> sums(op, part, C);
  int64_t first, last;
  range_of(part, a.partials, work_items(a.outer, C, a.inner), first, last);
  if (a.inner > 1) {
    for_each_chunk(a, first, last, [&](int64_t offset, int64_t n, int64_t c) LSLU_CPU_LAMBDA {
      backward_row<STAGES>(x + offset, g + offset, dx + offset, n, op.channel(c, C), sums, c);
    });
  } else {
    // inner == 1: items are rows; per-channel sums run along the row.
    for (int64_t o = first; o < last; ++o) backward_channels<STAGES>(x + o * C, g + o * C, dx + o * C, C, op, sums);
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
