// sin and cos of float arguments, written once for the CUDA and the CPU kernels, with no
// local memory: every intermediate is a scalar, and the one table (the bits of 2/pi) is
// constant (__constant__ on the device), read at a computed index.
//
// Two families, which share the polynomials' coefficients:
// - fast_sincos / fast_sin: for |v| <= kFastTrigMax, branch-free and written for the CPU
//   vectorizer (csrc/cpu/pvlu.cpp); absolute error < 1.3e-7, but the relative error grows
//   near the zeros of sin and cos (the float reduction loses ~1e-13 absolutely).
// - trig_sincos / trig_sin: accurate over the whole float range, relative to the result:
//   a Cody-Waite reduction with fused multiply-adds for |v| <= kTrigCodyWaiteMax, else a
//   Payne-Hanek reduction in 64-bit integers; inf and NaN give NaN. Over every float, at most 1.55 ulp (sin) and 1.54 ulp
//   (cos) from the exact value (CUDA documents 2 ulp for its sinf/cosf); the CUDA kernels'
//   pvlu_sin / pvlu_sincos (pvlu.h). Every multiply-add is an explicit fmaf and no other
//   a * b + c is left for a compiler to contract, so the host build (tests/test_trig.py,
//   through _C_cpu.trig_sincos / trig_sin) computes bit for bit what the device computes.
#pragma once

#include <cmath>
#include <cstdint>

#include "dtypes.h"

namespace lslu_kernels {

// a * b + c: FUSED rounds once (fmaf); otherwise as the compiler evaluates a * b + c
// (the CPU kernels: contracted into an FMA at their AVX levels, see cpu/isa.h).
template <bool FUSED>
LSLU_HD float mul_add(float a, float b, float c) {
  if constexpr (FUSED) {
    return fmaf(a, b, c);
  } else {
    return a * b + c;
  }
}

// Minimax polynomials on [-pi/4, pi/4] (Cephes sinf/cosf coefficients), z = r * r:
//     sin(r) = r + r * z * (kSin0 + kSin1 z + kSin2 z^2),
//     cos(r) = 1 - z / 2 + z * z * (kCos0 + kCos1 z + kCos2 z^2).
constexpr float kSin0 = -1.6666654611e-1f, kSin1 = 8.3321608736e-3f, kSin2 = -1.9515295891e-4f;
constexpr float kCos0 = 4.166664568298827e-2f, kCos1 = -1.388731625493765e-3f, kCos2 = 2.443315711809948e-5f;

template <bool FUSED>
LSLU_HD float sin_tail(float z) {
  return mul_add<FUSED>(mul_add<FUSED>(kSin2, z, kSin1), z, kSin0);
}
template <bool FUSED>
LSLU_HD float cos_tail(float z) {
  return mul_add<FUSED>(mul_add<FUSED>(kCos2, z, kCos1), z, kCos0);
}

// (sin v, cos v) from (sin r, cos r), v = r + quadrant * pi/2 (only quadrant mod 4 counts):
// 0: (sin_r, cos_r); 1: (cos_r, -sin_r); 2: (-sin_r, -cos_r); 3: (-cos_r, sin_r). Selects and
// bit operations, so that it vectorizes.
LSLU_HD void rotate_quadrant(float sin_r, float cos_r, uint32_t quadrant, float& s, float& c) {
  const uint32_t swap = 0u - (quadrant & 1u);  // all ones for odd quadrants
  const uint32_t sin_bits = float_bits(sin_r), cos_bits = float_bits(cos_r);
  const uint32_t s_bits = (cos_bits & swap) | (sin_bits & ~swap);
  const uint32_t c_bits = (sin_bits & swap) | (cos_bits & ~swap);
  s = bits_float(s_bits ^ ((quadrant & 2u) << 30));
  c = bits_float(c_bits ^ (((quadrant + 1u) & 2u) << 30));
}

// Adding it to t (|t| < 2^22) rounds t to an integer, whose low bits end the mantissa.
constexpr float kRoundToInteger = 0x1.8p23f;
constexpr float kTwoOverPi = 0x1.45f306p-1f;

// ---------------------------------------------------------------------------------------
// The CPU kernels' fast path.
//
// Cody-Waite reduction by pi/2 in float: q = nearest integer to v * 2/pi, then
// r = v - q * pi/2 with pi/2 split into four floats, the first three with at most 9
// significant bits, so that q * part is exact for |q| < 2^15 (|v| <= kFastTrigMax) and
// the subtractions lose nothing that matters: the absolute error of r stays below
// ~1e-13 over the whole range, far below the rounding of the float argument beta * x
// itself. Then the polynomials and the quadrant's swap and signs.

// |v| up to which fast_sincos and fast_sin serve (checked: every float in [-8, 8] and
// [38000, 39000], 2e8 random ones in between, against double sin/cos).
constexpr float kFastTrigMax = 39000.0f;

LSLU_HD void fast_sincos(float v, float& s, float& c) {
  constexpr float kPio2A = 0x1.92p+0f, kPio2B = 0x1.fbp-12f, kPio2C = 0x1.51p-22f, kPio2D = 0x1.0b4612p-34f;
  const float shifted = v * kTwoOverPi + kRoundToInteger;
  const float q = shifted - kRoundToInteger;
  float r = v - q * kPio2A;
  r = r - q * kPio2B;
  r = r - q * kPio2C;
  r = r - q * kPio2D;
  const float z = r * r;
  const float sin_r = sin_tail<false>(z) * z * r + r;
  const float cos_r = cos_tail<false>(z) * z * z - 0.5f * z + 1.0f;
  rotate_quadrant(sin_r, cos_r, float_bits(shifted), s, c);  // the low bits of the mantissa are q mod 4
}

// sin(v) alone (forward), for |v| <= kFastTrigMax: the same reduction by pi instead of
// pi/2 (|q| < 2^14, the four parts of pi with at most 9 significant bits but the last),
// r in [-pi/2, pi/2], one odd polynomial (minimax for the relative error on [-pi/2, pi/2],
// ~2 ulp) and the sign (-1)^q. About half the work of fast_sincos.
LSLU_HD float fast_sin(float v) {
  constexpr float kOneOverPi = 0x1.45f306p-2f;
  constexpr float kPiA = 0x1.92p+1f, kPiB = 0x1.fbp-11f, kPiC = 0x1.51p-21f, kPiD = 0x1.0b4612p-33f;
  const float shifted = v * kOneOverPi + kRoundToInteger;
  const float q = shifted - kRoundToInteger;
  const uint32_t sign = float_bits(shifted) << 31;  // q odd: sin(v) = -sin(r)
  float r = v - q * kPiA;
  r = r - q * kPiB;
  r = r - q * kPiC;
  r = r - q * kPiD;
  const float z = r * r;
  const float p = (((0x1.5db774p-19f * z - 0x1.9f6f9p-13f) * z + 0x1.110ed2p-7f) * z - 0x1.55554cp-3f) * z;
  return bits_float(float_bits(p * r + r) ^ sign);
}

// ---------------------------------------------------------------------------------------
// The accurate functions.

// 2/pi in binary, 32 bits a word, after one word of zeros: word i + 1 holds bits
// 32 i + 1 ... 32 i + 32 after the point. Enough for every finite float (and inf/NaN,
// whose result is NaN anyway).
#define LSLU_TWO_OVER_PI_WORDS \
  0x00000000u, 0xa2f9836eu, 0x4e441529u, 0xfc2757d1u, 0xf534ddc0u, 0xdb629599u, 0x3c439041u, 0xfe5163abu
#if defined(__CUDACC__)
static __constant__ uint32_t kTwoOverPiWordsDevice[8] = {LSLU_TWO_OVER_PI_WORDS};
#endif
static constexpr uint32_t kTwoOverPiWordsHost[8] = {LSLU_TWO_OVER_PI_WORDS};
#undef LSLU_TWO_OVER_PI_WORDS

LSLU_HD uint64_t two_over_pi_pair(uint32_t i) {  // words i and i + 1 as one 64-bit integer
#if defined(__CUDA_ARCH__)
  return (uint64_t(kTwoOverPiWordsDevice[i]) << 32) | kTwoOverPiWordsDevice[i + 1];
#else
  return (uint64_t(kTwoOverPiWordsHost[i]) << 32) | kTwoOverPiWordsHost[i + 1];
#endif
}

// |v| up to which the Cody-Waite reduction serves: |q| < 2^17, so that v - q * kPio2Hi is
// exact and q times the error of the three-float pi/2 (~1e-23) stays far below the
// rounding of r even for the floats nearest to multiples of pi/2 (tests/test_trig.py).
constexpr float kTrigCodyWaiteMax = 131072.0f;

// r, with v = r + quadrant * pi/2 + (a multiple of 2 pi) and |r| <= ~pi/4, for
// |v| <= kTrigCodyWaiteMax. pi/2 = kPio2Hi + kPio2Mid + kPio2Lo + ~1e-23 (each the float
// nearest to what is left); the first fmaf is exact, the next two round once each.
LSLU_HD float reduce_cody_waite(float v, uint32_t& quadrant) {
  constexpr float kPio2Hi = 0x1.921fb6p+0f, kPio2Mid = -0x1.777a5cp-25f, kPio2Lo = -0x1.ee59dap-50f;
  const float shifted = fmaf(v, kTwoOverPi, kRoundToInteger);
  const float q = shifted - kRoundToInteger;
  quadrant = float_bits(shifted);
  float r = fmaf(-q, kPio2Hi, v);
  r = fmaf(-q, kPio2Mid, r);
  r = fmaf(-q, kPio2Lo, r);
  return v == 0.0f ? v : r;  // -0: q = 0 and the +0 products above would make it +0
}

// The same for any v (Payne-Hanek): |v| = m * 2^e with a 24-bit integer m, and
// |v| * 2/pi mod 4 = m * (the bits of 2/pi from 2^(1-e) on) mod 4, as a 2.62 fixed-point
// number: 96 bits of 2/pi (from a computed word index and shift) times m, keeping bits
// 32-95 of the 120-bit product (the bits of 2/pi further on, and the 32 dropped product
// bits, change it by < 2^-61). Its nearest integer is the quadrant, the rest times pi/2
// is r, in double (2^-53 relative) before rounding to float. inf and NaN give r = NaN.
LSLU_HD float reduce_payne_hanek(float v, uint32_t& quadrant) {
  const uint32_t bits = float_bits(v);
  const uint32_t exponent = (bits >> 23) & 0xffu;
  const uint64_t m = (bits & 0x7fffffu) | 0x800000u;  // with the hidden bit: |v| > 2^17 here
  // |v| = m * 2^e, e = exponent - 150. The window starts at the bit of 2/pi worth 2^(1-e)
  // (those worth 2^(2-e) and more add multiples of 4): bit e - 1 after the point, so
  // e + 31 = exponent - 120 table bits come before it.
  const uint32_t skip = exponent - 120u;  // >= 24 for |v| > 2^17, <= 135 for inf/NaN
  const uint32_t word = skip >> 5, shift = skip & 31u;
  const uint64_t head = two_over_pi_pair(word), tail = two_over_pi_pair(word + 2);
  const uint64_t window_hi = (head << shift) | ((tail >> 1) >> (63u - shift));  // window bits 0-63
  const uint64_t window_lo = (tail << shift) >> 32;                             // window bits 64-95
  const uint64_t turns = m * window_hi + ((m * window_lo) >> 32);  // mod 2^64: the multiples of 4 go
  const uint64_t q = (turns + (uint64_t(1) << 61)) >> 62;
  const int64_t rest = int64_t(turns - (q << 62));  // in [-2^61, 2^61)
  const double r = double(rest) * 0x1.921fb54442d18p-62;  // * pi/2 / 2^62
  const bool negative = (bits >> 31) != 0;
  quadrant = negative ? 0u - uint32_t(q) : uint32_t(q);
  const float magnitude = exponent == 0xffu ? v - v : float(r);
  return negative ? -magnitude : magnitude;
}

LSLU_HD float reduce_quarter_turns(float v, uint32_t& quadrant) {
  return fabsf(v) <= kTrigCodyWaiteMax ? reduce_cody_waite(v, quadrant) : reduce_payne_hanek(v, quadrant);
}

// sin(v) for quadrant q of v, cos(v) for q + 1, from r (z = r * r): one polynomial, its
// coefficients chosen by q's parity (even: sin(r), odd: cos(r)), then the sign of q's half
// turn; for sin and cos it runs twice. The 0 added for sin turns a -0 product into +0, so
// that sin(-0) = -0 + -0 = -0.
LSLU_HD float sin_of_quadrant(float r, float z, uint32_t q) {
  const bool odd = (q & 1u) != 0;
  float p = fmaf(odd ? kCos2 : kSin2, z, odd ? kCos1 : kSin1);
  p = fmaf(p, z, odd ? kCos0 : kSin0);
  p = fmaf(p, z, odd ? -0.5f : 0.0f);
  const float value = odd ? fmaf(p, z, 1.0f) : fmaf(p, r, r);
  return bits_float(float_bits(value) ^ ((q & 2u) << 30));
}

LSLU_HD void trig_sincos(float v, float& s, float& c) {
  uint32_t quadrant;
  const float r = reduce_quarter_turns(v, quadrant);
  const float z = r * r;
  s = sin_of_quadrant(r, z, quadrant);
  c = sin_of_quadrant(r, z, quadrant + 1u);
}

LSLU_HD float trig_sin(float v) {
  uint32_t quadrant;
  const float r = reduce_quarter_turns(v, quadrant);
  return sin_of_quadrant(r, r * r, quadrant);
}

}  // namespace lslu_kernels
