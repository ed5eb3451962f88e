// The kernel ABI: what the bindings (bindings.cpp) pass to the kernels of each backend, raw
// pointers, sizes and the dtype, never torch tensors (see dtypes.h for why), and the entry
// points every op has on each device.
//
// Every kernel walks its tensors as a dense (outer, channels, inner) array in memory order
// (lslu_kernels/_layout.py); parameters are contiguous in the compute type (float32, float64
// for float64 inputs), per channel (shared parameters are expanded to every channel by the
// caller). Backward writes per-channel partial sums of the parameter gradients into
// `partials` rows of its partial buffers, every entry, which Python sums over the first axis
// in a fixed order. Per op (lslu_kernels/cpp_kernels/__init__.py allocates them):
//
//   op    size        params                                        partial buffers
//   lslu  stages S    theta, omega: (S, C)                          dtheta, domega: (P, S, C)
//   pvlu  0           alpha, beta: (C,)                             dalpha, dbeta: (P, C)
//   pwlu  intervals N points: (C, N + 1); left_bound, right_bound,  dpoints: (P, C, N + 1);
//                     left_slope, right_slope: (C,)                 dscalars: (P, 4, C), the four in that order
//
// force_int64: the CUDA kernels index in int64 even where int32 would do (tests reach the
// int64 instantiations on small tensors with it); the CPU kernels always index in int64 and
// ignore it.
#pragma once

#include <cstdint>
#include <string>

#include "dtypes.h"

namespace lslu_kernels {

constexpr int kMaxParams = 5;
constexpr int kMaxPartialBuffers = 2;

struct KernelArgs {
  DType dtype;
  int64_t outer, channels, inner;
  int size;  // the op's compile-time-like size: LSLU's stages, PWLU's intervals, 0 for PVLU
  const void* params[kMaxParams];
  // forward
  const void* x;
  void* y;
  // backward (also reads x)
  const void* grad_output;
  void* grad_input;
  void* partial[kMaxPartialBuffers];
  int64_t partials;
  bool force_int64;
};

// One op's entry points on the CPU: `threads` OpenMP threads; results do not depend on it.
// The partials count depends on the sizes alone.
struct CpuEntryPoints {
  void (*forward)(const KernelArgs& args, int threads);
  void (*backward)(const KernelArgs& args, int threads);
  int64_t (*backward_partials)(const KernelArgs& sizes);
};

// One op's entry points on CUDA: launched on `stream` (a cudaStream_t) of the current device.
// The partials count is the backward blocks per column (grid.h) for the kernel these sizes
// select on the current device, so it depends on the dtype and size as well.
struct CudaEntryPoints {
  void (*forward)(const KernelArgs& args, void* stream);
  void (*backward)(const KernelArgs& args, void* stream);
  int64_t (*backward_partials)(const KernelArgs& sizes, int multiprocessors);
};

// The C++ backends compile one kernel per stage count up to this many stages (lslu.h).
constexpr int kLsluMaxStages = 8;
// They serve 1 to this many PWLU intervals N (the CUDA backward keeps N + 5 sums per thread
// in shared memory).
constexpr int kPwluMaxIntervals = 64;

extern const CpuEntryPoints lslu_cpu, pvlu_cpu, pwlu_cpu;  // csrc/cpu/<op>.cpp

// The paper's full layer fused (csrc/cpu/lslu_dwconv.cpp): y = depthwise_conv2d(lslu(x), weight,
// padding S) + bias on an (N, C, H, W) tensor, NCHW-contiguous or channels-last (y in x's layout).
// theta, omega: (S, C); weight: (C, 2S+1, 2S+1); bias: (C,) or null; all in the compute type.
// Backward writes every entry of its `partials` rows: grad_theta, grad_omega (P, S, C),
// grad_weight (P, C, 2S+1, 2S+1), grad_bias (P, C); Python sums them over the first axis in order.
struct DwconvArgs {
  DType dtype;
  int64_t batch, channels, height, width;
  int stages;  // S: the kernel is (2S+1) x (2S+1), the padding S
  bool channels_last;
  const void* theta;
  const void* omega;
  const void* weight;
  const void* bias;
  // forward
  const void* x;
  void* y;
  // backward (also reads x)
  const void* grad_output;
  void* grad_input;
  void* grad_theta_partial;
  void* grad_omega_partial;
  void* grad_weight_partial;
  void* grad_bias_partial;
  int64_t partials;
};

struct CpuDwconvEntryPoints {
  void (*forward)(const DwconvArgs& args, int threads);
  void (*backward)(const DwconvArgs& args, int threads);
  int64_t (*backward_partials)(const DwconvArgs& sizes);  // from the sizes alone
};

extern const CpuDwconvEntryPoints lslu_dwconv_cpu;
extern const CudaEntryPoints lslu_cuda, pvlu_cuda, pwlu_cuda;  // csrc/cuda/<op>.cu

// ---- the device (csrc/cuda/device.cu) ----

// What the CUDA extension can do on one device. Never throws: a call that fails leaves its
// CUDA error string in `error` (the first one; "" when every call succeeded) and the
// fields it would have filled at 0 / false.
struct CudaDeviceSupport {
  int driver_version = 0;      // cudaDriverGetVersion: 0 without a driver
  int runtime_version = 0;     // cudaRuntimeGetVersion: the runtime the extension links
  int compute_capability = 0;  // major * 10 + minor
  bool image_ok = false;       // cudaFuncGetAttributes of one of the kernels succeeded there
  std::string error;
};

CudaDeviceSupport cuda_device_support(int device);

// One kernel of the extension (csrc/cuda/pvlu.cu), as cudaFuncGetAttributes takes it.
const void* pvlu_probe_kernel_cuda();

}  // namespace lslu_kernels
