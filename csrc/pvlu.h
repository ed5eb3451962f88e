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

// Calls Kernel::run<scalar_t>(extra...) for the runtime dtype (PVLU has no other
// compile-time parameter).
template <typename Kernel, typename... Extra>
void dispatch_pvlu(DType dtype, Extra&&... extra) {
  switch (dtype) {
    case DType::Float16: return Kernel::template run<Half>(static_cast<Extra&&>(extra)...);
    case DType::BFloat16: return Kernel::template run<BFloat16>(static_cast<Extra&&>(extra)...);
    case DType::Float32: return Kernel::template run<float>(static_cast<Extra&&>(extra)...);
    case DType::Float64: return Kernel::template run<double>(static_cast<Extra&&>(extra)...);
  }
  throw std::invalid_argument("pvlu: unknown dtype");
}

}  // namespace lslu_kernels
