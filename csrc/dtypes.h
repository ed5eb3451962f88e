// Element types of the C++ backends and their conversions to and from the compute type.
//
// Shared by the CUDA kernels (nvcc) and the CPU kernels (the host C++ compiler):
// no torch header is included anywhere under csrc/, so the CUDA sources compile
// on a machine whose torch is a CPU build. Half types are 16-bit storage
// structs; arithmetic is float32 for them and for float32, float64 for float64.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define LSLU_HD __host__ __device__ __forceinline__
#define LSLU_UNROLL _Pragma("unroll")
#else
#define LSLU_HD inline __attribute__((always_inline))
#define LSLU_UNROLL _Pragma("GCC unroll 16")
#endif

namespace lslu_kernels {

struct alignas(2) Half {
  uint16_t bits;
};
struct alignas(2) BFloat16 {
  uint16_t bits;
};

// The type every element is computed in.
template <typename scalar_t>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type = typename Acc<scalar_t>::type;

LSLU_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

LSLU_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

LSLU_HD float to_acc(float v) { return v; }
LSLU_HD double to_acc(double v) { return v; }

LSLU_HD float to_acc(BFloat16 v) { return bits_float(uint32_t(v.bits) << 16); }

LSLU_HD float to_acc(Half v) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(v.bits));
#else
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t rest = v.bits & 0x7fffu;
  if (rest >= 0x7c00u) return bits_float(sign | 0x7f800000u | ((rest & 0x3ffu) << 13));  // inf, NaN
  if (rest >= 0x0400u) return bits_float(sign | ((rest << 13) + (112u << 23)));         // normal
  const float magnitude = float(rest) * 5.9604644775390625e-8f;                        // subnormal: rest * 2^-24
  return sign ? -magnitude : magnitude;
#endif
}

// Conversions back round to nearest, ties to even, as torch's casts do.
template <typename scalar_t>
LSLU_HD scalar_t from_acc(acc_type<scalar_t> v);

template <>
LSLU_HD float from_acc<float>(float v) { return v; }
template <>
LSLU_HD double from_acc<double>(double v) { return v; }

template <>
LSLU_HD BFloat16 from_acc<BFloat16>(float v) {
  const uint32_t u = float_bits(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{uint16_t((u >> 16) | 0x40u)};  // NaN stays quiet NaN
  return BFloat16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

template <>
LSLU_HD Half from_acc<Half>(float v) {
#if defined(__CUDA_ARCH__)
  return Half{__half_as_ushort(__float2half_rn(v))};
#else
  const uint32_t u = float_bits(v);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return Half{uint16_t(sign | 0x7e00u)};  // NaN
  if (magnitude >= 0x477ff000u) return Half{uint16_t(sign | 0x7c00u)};  // rounds to inf (>= 65520)
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): adding 0.5 leaves |v| rounded to a
    // multiple of 2^-24 (one subnormal half step) in the low mantissa bits.
    const uint32_t sum = float_bits(bits_float(magnitude) + 0.5f);
    return Half{uint16_t(sign | (sum - 0x3f000000u))};
  }
  const uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u) - (112u << 23);
  return Half{uint16_t(sign | (rounded >> 13))};
#endif
}

// A read of a parameter that no kernel writes: through the read-only data cache on the device.
template <typename T>
LSLU_HD T read_only(const T* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}

// The dtype names the Python side passes (torch's names without "torch.").
enum class DType { Float16, BFloat16, Float32, Float64 };

}  // namespace lslu_kernels
