// What the bindings pass to the kernels of each backend: raw pointers, sizes and
// the dtype, never torch tensors (see dtypes.h for why).
//
// Every kernel walks its tensors as a dense (outer, channels, inner) array in
// memory order (lslu_kernels/_layout.py); parameters are contiguous in the
// compute type (float32, float64 for float64 inputs), shape (stages, channels)
// (shared parameters are expanded to every channel by the caller). Backward writes per-channel partial sums of the
// parameter gradients into (partials, stages, channels) buffers, every entry,
// which Python sums over the first axis in a fixed order.
//
// force_int64: the CUDA kernels index in int64 even where int32 would do (tests reach the
// int64 instantiations on small tensors with it); the CPU kernels always index in int64
// and ignore it.
#pragma once

#include <cstdint>
#include <string>

#include "dtypes.h"

namespace lslu_kernels {

struct LsluArgs {
  DType dtype;
  int64_t outer, channels, inner;
  int stages;
  const void* theta;
  const void* omega;
  // forward
  const void* x;
  void* y;
  // backward (also reads x)
  const void* grad_output;
  void* grad_input;
  void* dtheta_partial;
  void* domega_partial;
  int64_t partials;
  bool force_int64;
};

// CPU (csrc/cpu): `threads` OpenMP threads; results do not depend on it.
int64_t lslu_backward_partials_cpu(int64_t outer, int64_t channels, int64_t inner);
void lslu_forward_cpu(const LsluArgs& args, int threads);
void lslu_backward_cpu(const LsluArgs& args, int threads);

// CUDA (csrc/cuda): launched on `stream` (a cudaStream_t) of the current device.
// The CUDA partials count is the backward blocks per column (grid.h) for the kernel these
// sizes select on the current device, so it depends on the dtype and stages as well.
int64_t lslu_backward_partials_cuda(DType dtype, int stages, int64_t outer, int64_t channels, int64_t inner,
                                    int multiprocessors);
void lslu_forward_cuda(const LsluArgs& args, void* stream);
void lslu_backward_cuda(const LsluArgs& args, void* stream);

// ---- pvlu (SPEC.md 1.2) ----

// alpha, beta: (channels,) in the compute type. Backward writes (partials, channels)
// partial sums of dL/dalpha and dL/dbeta, every entry.
struct PvluArgs {
  DType dtype;
  int64_t outer, channels, inner;
  const void* alpha;
  const void* beta;
  // forward
  const void* x;
  void* y;
  // backward (also reads x)
  const void* grad_output;
  void* grad_input;
  void* dalpha_partial;
  void* dbeta_partial;
  int64_t partials;
  bool force_int64;
};

int64_t pvlu_backward_partials_cpu(int64_t outer, int64_t channels, int64_t inner);
void pvlu_forward_cpu(const PvluArgs& args, int threads);
void pvlu_backward_cpu(const PvluArgs& args, int threads);

int64_t pvlu_backward_partials_cuda(DType dtype, int64_t outer, int64_t channels, int64_t inner, int multiprocessors);
void pvlu_forward_cuda(const PvluArgs& args, void* stream);
void pvlu_backward_cuda(const PvluArgs& args, void* stream);

// ---- pwlu (SPEC.md 1.3) ----

// The C++ backends serve 1 to this many intervals N (the CUDA backward keeps N + 5 sums per
// thread in shared memory).
constexpr int kPwluMaxIntervals = 64;

// points: (channels, intervals + 1); the bounds and slopes: (channels,); all contiguous in
// the compute type. Backward writes, every entry, partial sums (partials, channels,
// intervals + 1) of dL/dpoints and (partials, 4, channels) of dL/d(left_bound,
// right_bound, left_slope, right_slope), in that order.
struct PwluArgs {
  DType dtype;
  int64_t outer, channels, inner;
  int intervals;
  const void* points;
  const void* left_bound;
  const void* right_bound;
  const void* left_slope;
  const void* right_slope;
  // forward
  const void* x;
  void* y;
  // backward (also reads x)
  const void* grad_output;
  void* grad_input;
  void* dpoints_partial;
  void* dscalars_partial;
  int64_t partials;
  bool force_int64;
};

int64_t pwlu_backward_partials_cpu(int64_t outer, int64_t channels, int64_t inner);
void pwlu_forward_cpu(const PwluArgs& args, int threads);
void pwlu_backward_cpu(const PwluArgs& args, int threads);

// The CUDA partials count depends on the block size, hence on the dtype and intervals.
int64_t pwlu_backward_partials_cuda(DType dtype, int64_t outer, int64_t channels, int64_t inner, int intervals,
                                    int multiprocessors);
void pwlu_forward_cuda(const PwluArgs& args, void* stream);
void pwlu_backward_cuda(const PwluArgs& args, void* stream);

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
