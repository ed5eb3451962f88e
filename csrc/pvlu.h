// PVLU per-element math (SPEC.md 1.2), written once for the CUDA and the CPU kernels.
//
//     y = relu(x) + alpha * sin(beta * x)
//
// The kernels load one element's channel parameters (alpha, beta) and call these
// functions per element. sin and cos are accurate over the whole range: for float on the
// device trig.h's trig_sin / trig_sincos (CUDA's sinf/cosf keep their large-argument
// reduction table in local memory; the __sinf/__cosf intrinsics lose accuracy with the
// argument), sin/cos for double; std::sin/std::cos on the host (the CPU kernels' far
// arguments, csrc/cpu/pvlu.cpp).
#pragma once

#include <cmath>
#include <stdexcept>

#include "dtypes.h"
#include "kernel_abi.h"
#include "lslu.h"  // relu, relu_backward
#include "trig.h"

namespace lslu_kernels {

LSLU_HD float pvlu_sin(float v) {
#if defined(__CUDA_ARCH__)
  return trig_sin(v);
#else
  return std::sin(v);
#endif
}

LSLU_HD double pvlu_sin(double v) {
#if defined(__CUDA_ARCH__)
  return sin(v);
#else
  return std::sin(v);
#endif
}

LSLU_HD void pvlu_sincos(float v, float& s, float& c) {
#if defined(__CUDA_ARCH__)
  trig_sincos(v, s, c);
#else
  s = std::sin(v);  // the compiler joins the two into one sincos call
  c = std::cos(v);
#endif
}

LSLU_HD void pvlu_sincos(double v, double& s, double& c) {
#if defined(__CUDA_ARCH__)
  sincos(v, &s, &c);
#else
  s = std::sin(v);
  c = std::cos(v);
#endif
}

// y for one element, from s = sin(beta * x). With alpha = 0 and finite x it equals
// relu(x) exactly: the added term is a (signed) zero, as in the reference.
template <typename acc_t>
LSLU_HD acc_t pvlu_forward_from_sin(acc_t x, acc_t alpha, acc_t s) {
  return relu(x) + alpha * s;
}

// Returns dL/dx for one element with dL/dy = g, from s = sin(beta x) and c = cos(beta x),
// and writes this element's contributions to dL/dalpha and dL/dbeta (the caller sums
// them per channel):
//
//     dL/dx     = g * 1[x > 0] + g * alpha * beta * cos(beta x)   (relu'(0) = 0; a NaN x passes g)
//     dL/dalpha = g * sin(beta x)
//     dL/dbeta  = g * alpha * x * cos(beta x)
//
// alpha * beta is a per-channel product the compiler hoists out of element loops.
template <typename acc_t>
LSLU_HD acc_t pvlu_backward_from_sincos(acc_t x, acc_t g, acc_t alpha, acc_t beta, acc_t s, acc_t c, acc_t& dalpha,
                                        acc_t& dbeta) {
  dalpha = g * s;
  dbeta = g * alpha * x * c;
  return relu_backward(x, g) + g * (alpha * beta * c);
}

// The same with sin and cos computed here (the CUDA kernels; the CPU kernels compute
// them for a whole lane array at once, see csrc/cpu/pvlu.cpp).
template <typename acc_t>
LSLU_HD acc_t pvlu_forward(acc_t x, acc_t alpha, acc_t beta) {
  return pvlu_forward_from_sin(x, alpha, pvlu_sin(beta * x));
}

template <typename acc_t>
LSLU_HD acc_t pvlu_backward(acc_t x, acc_t g, acc_t alpha, acc_t beta, acc_t& dalpha, acc_t& dbeta) {
  acc_t s, c;
  pvlu_sincos(beta * x, s, c);
  return pvlu_backward_from_sincos(x, g, alpha, beta, s, c, dalpha, dbeta);
}

// The op as the C++ engines take it (csrc/cuda/engine.cuh): one (alpha, beta) pair per
// channel, forward, and backward with its two sums per channel (dalpha, dbeta).
template <typename scalar_t>
struct PvluOp {
  using scalar = scalar_t;
  using acc_t = acc_type<scalar_t>;
  static constexpr int kSums = 2;
  // Channels per thread of the rows layout: 16 bytes (alpha, beta and two sums each in registers).
  static constexpr int kRowsPack = int(16 / sizeof(scalar_t));
  // CUDA __launch_bounds__ (engine.cuh): left free, ptxas interleaves the sin and cos (trig.h)
  // of a thread's packs up to ~95 registers forward and ~180 backward (25% and 12.5%
  // occupancy); 3 and 2 blocks per SM cap them at 80 and 128, met without spills
  // (benchmarks/gate_cuda.py).
  static constexpr int kForwardMinBlocksPerSM = 3;
  static constexpr int kBackwardMinBlocksPerSM = 2;

  const acc_t* alpha;  // (channels,)
  const acc_t* beta;
  acc_t* dalpha_partial;  // (partials, channels)
  acc_t* dbeta_partial;

  explicit PvluOp(const KernelArgs& a)
      : alpha(static_cast<const acc_t*>(a.params[0])),
        beta(static_cast<const acc_t*>(a.params[1])),
        dalpha_partial(static_cast<acc_t*>(a.partial[0])),
        dbeta_partial(static_cast<acc_t*>(a.partial[1])) {}

  struct Channel {
    acc_t alpha, beta;
  };

  template <typename index_t>
  LSLU_HD Channel channel(index_t c, index_t /*channels*/) const {
    return Channel{read_only(alpha + c), read_only(beta + c)};
  }

  LSLU_HD acc_t forward(acc_t x, const Channel& p) const { return pvlu_forward(x, p.alpha, p.beta); }

  LSLU_HD acc_t backward(acc_t x, acc_t g, const Channel& p, acc_t (&sums)[kSums]) const {
    acc_t dalpha, dbeta;
    const acc_t dx = pvlu_backward(x, g, p.alpha, p.beta, dalpha, dbeta);
    sums[0] += dalpha;
    sums[1] += dbeta;
    return dx;
  }

  // Where sum k of `channel` in partial row `part` lives (see LsluOp::partial_sum).
  LSLU_HD acc_t& partial_sum(int64_t part, int64_t channels, int64_t channel, int k) const {
    return (k == 0 ? dalpha_partial : dbeta_partial)[part * channels + channel];
  }

  LSLU_HD void write_sum(int64_t part, int64_t channels, int64_t channel, int k, acc_t total) const {
    partial_sum(part, channels, channel, k) = total;
  }
};

}  // namespace lslu_kernels
