// LSLU per-element math (SPEC.md 1.1), written once for the CUDA and the CPU kernels.
//
// The kernels load one element's channel parameters into arrays of STAGES values
// and call these functions per element; STAGES is a template parameter so that
// the stage loops unroll and the series stays in registers.
#pragma once

#include "dtypes.h"

namespace lslu_kernels {

// The C++ backends compile one kernel per stage count up to this many stages.
constexpr int kLsluMaxStages = 8;

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

}  // namespace lslu_kernels
