// LSLU per-element math (SPEC.md 1.1), written once for the CUDA and the CPU kernels.
//
// The kernels load one element's channel parameters into arrays of STAGES values
// and call these functions per element; STAGES is a template parameter so that
// the stage loops unroll and the series stays in registers.
#pragma once

#include "dtypes.h"
#include "kernel_abi.h"

namespace lslu_kernels {

// relu that keeps NaN (as torch.relu).
template <typename acc_t>
LSLU_HD acc_t relu(acc_t h) {
  return h < acc_t(0) ? acc_t(0) : h;
}

// dL/dh from dL/dr = g through r = relu(h): relu'(0) = 0 (strict); a NaN h passes g
// on, as torch.relu's backward does.
template <typename acc_t>
LSLU_HD acc_t relu_backward(acc_t h, acc_t g) {
  return h <= acc_t(0) ? acc_t(0) : g;
}

// y = r_S: h_0 = x, h_s = theta[s-1] * relu(h_{s-1}) + omega[s-1].
template <int STAGES, typename acc_t>
LSLU_HD acc_t lslu_forward(acc_t x, const acc_t (&theta)[STAGES], const acc_t (&omega)[STAGES]) {
  acc_t h = x;
LSLU_UNROLL
  for (int s = 0; s < STAGES; ++s) h = theta[s] * relu(h) + omega[s];
  return relu(h);
}

// Returns dL/dx for one element with dL/dy = g, and writes this element's
// contributions to dL/dtheta[s] and dL/domega[s] (the caller sums them per channel).
template <int STAGES, typename acc_t>
LSLU_HD acc_t lslu_backward(acc_t x, acc_t g, const acc_t (&theta)[STAGES], const acc_t (&omega)[STAGES],
                            acc_t (&dtheta)[STAGES], acc_t (&domega)[STAGES]) {
  acc_t h[STAGES + 1];  // recomputed from x: backward keeps nothing but x
  h[0] = x;
LSLU_UNROLL
  for (int s = 0; s < STAGES; ++s) h[s + 1] = theta[s] * relu(h[s]) + omega[s];
  acc_t e = relu_backward(h[STAGES], g);  // e = dL/dh_s, from s = S down to 0
LSLU_UNROLL
  for (int s = STAGES - 1; s >= 0; --s) {
    dtheta[s] = e * relu(h[s]);
    domega[s] = e;
    e = relu_backward(h[s], e * theta[s]);
  }
  return e;
}

// The op as the C++ engines take it (csrc/cuda/engine.cuh): per-channel parameters, forward,
// and backward with its 2 * STAGES sums per channel (dtheta_s at 2s, domega_s at 2s + 1).
template <typename scalar_t, int STAGES>
struct LsluOp {
  using scalar = scalar_t;
  using acc_t = acc_type<scalar_t>;
  static constexpr int kSums = 2 * STAGES;
  // Channels per thread of the rows layout: at most 16 bytes of elements, and at most 64 bytes
  // of parameters per stage series (a thread keeps kRowsPack * STAGES values of theta, omega
  // and, in backward, of both sums in registers).
  static constexpr int kRowsPack = [] {
    const int by_bytes = int(16 / sizeof(scalar_t));
    const int by_registers = int(64 / (STAGES * sizeof(acc_t)));
    const int limit = by_bytes < by_registers ? by_bytes : by_registers;
    int pack = 1;
    while (pack * 2 <= limit) pack *= 2;
    return pack;
  }();

  const acc_t* theta;  // (STAGES, channels)
  const acc_t* omega;
  acc_t* dtheta_partial;  // (partials, STAGES, channels)
  acc_t* domega_partial;

  explicit LsluOp(const KernelArgs& a)
      : theta(static_cast<const acc_t*>(a.params[0])),
        omega(static_cast<const acc_t*>(a.params[1])),
        dtheta_partial(static_cast<acc_t*>(a.partial[0])),
        domega_partial(static_cast<acc_t*>(a.partial[1])) {}

  struct Channel {
    acc_t theta[STAGES], omega[STAGES];
  };

  template <typename index_t>
  LSLU_HD Channel channel(index_t c, index_t channels) const {
    Channel p;
LSLU_UNROLL
    for (int s = 0; s < STAGES; ++s) {
      p.theta[s] = read_only(theta + int64_t(s) * channels + c);  // int64: no overflow whatever index_t
      p.omega[s] = read_only(omega + int64_t(s) * channels + c);
    }
    return p;
  }

  LSLU_HD acc_t forward(acc_t x, const Channel& p) const { return lslu_forward<STAGES>(x, p.theta, p.omega); }

  LSLU_HD acc_t backward(acc_t x, acc_t g, const Channel& p, acc_t (&sums)[kSums]) const {
    acc_t dtheta[STAGES], domega[STAGES];
    const acc_t dx = lslu_backward<STAGES>(x, g, p.theta, p.omega, dtheta, domega);
LSLU_UNROLL
    for (int s = 0; s < STAGES; ++s) {
      sums[2 * s] += dtheta[s];
      sums[2 * s + 1] += domega[s];
    }
    return dx;
  }

  // Where sum k of `channel` in partial row `part` lives: the CUDA engine writes each once
  // (write_sum), the CPU engine adds a part's sums into it (cpu/engine.h, PartialRows).
  LSLU_HD acc_t& partial_sum(int64_t part, int64_t channels, int64_t channel, int k) const {
    acc_t* out = k % 2 == 0 ? dtheta_partial : domega_partial;
    return out[(part * STAGES + k / 2) * channels + channel];
  }

  LSLU_HD void write_sum(int64_t part, int64_t channels, int64_t channel, int k, acc_t total) const {
    partial_sum(part, channels, channel, k) = total;
  }
};

}  // namespace lslu_kernels
