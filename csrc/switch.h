// From runtime values to the compile-time ones of a template instance: dtype, LSLU stage count,
// index type. Each switch runs its last argument, a lambda, with the chosen value as a type
// or a constant in scope:
//
//   LSLU_DTYPE_SWITCH(args.dtype, scalar_t, [&] {
//     LSLU_STAGES_SWITCH(args.size, STAGES, [&] { run<scalar_t, STAGES>(args); });
//   });
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "dtypes.h"
#include "kernel_abi.h"

#define LSLU_DTYPE_SWITCH(DTYPE, TYPE, ...)                                          \
  [&] {                                                                              \
    switch (DTYPE) {                                                                 \
      case ::lslu_kernels::DType::Float16: {                                         \
        using TYPE = ::lslu_kernels::Half;                                           \
        return __VA_ARGS__();                                                        \
      }                                                                              \
      case ::lslu_kernels::DType::BFloat16: {                                        \
        using TYPE = ::lslu_kernels::BFloat16;                                       \
        return __VA_ARGS__();                                                        \
      }                                                                              \
      case ::lslu_kernels::DType::Float32: {                                         \
        using TYPE = float;                                                          \
        return __VA_ARGS__();                                                        \
      }                                                                              \
      case ::lslu_kernels::DType::Float64: {                                         \
        using TYPE = double;                                                         \
        return __VA_ARGS__();                                                        \
      }                                                                              \
    }                                                                                \
    throw std::invalid_argument("lslu_kernels: unknown dtype");                      \
  }()

#define LSLU_STAGES_CASE(N, CONST, ...) \
  case N: {                             \
    constexpr int CONST = N;            \
    return __VA_ARGS__();               \
  }

#define LSLU_STAGES_SWITCH(STAGES, CONST, ...)                                                              \
  [&] {                                                                                                     \
    static_assert(::lslu_kernels::kLsluMaxStages == 8, "one case per stage count below");                   \
    switch (STAGES) {                                                                                       \
      LSLU_STAGES_CASE(1, CONST, __VA_ARGS__)                                                               \
      LSLU_STAGES_CASE(2, CONST, __VA_ARGS__)                                                               \
      LSLU_STAGES_CASE(3, CONST, __VA_ARGS__)                                                               \
      LSLU_STAGES_CASE(4, CONST, __VA_ARGS__)                                                               \
      LSLU_STAGES_CASE(5, CONST, __VA_ARGS__)                                                               \
      LSLU_STAGES_CASE(6, CONST, __VA_ARGS__)                                                               \
      LSLU_STAGES_CASE(7, CONST, __VA_ARGS__)                                                               \
      LSLU_STAGES_CASE(8, CONST, __VA_ARGS__)                                                               \
    }                                                                                                       \
    throw std::invalid_argument("lslu: the C++ backends serve 1 to " +                                      \
                                std::to_string(::lslu_kernels::kLsluMaxStages) + " stages, got " +          \
                                std::to_string(STAGES));                                                    \
  }()

#define LSLU_INDEX_SWITCH(INT64, TYPE, ...) \
  [&] {                                     \
    if (INT64) {                            \
      using TYPE = int64_t;                 \
      return __VA_ARGS__();                 \
    }                                       \
    using TYPE = int32_t;                   \
    return __VA_ARGS__();                   \
  }()
