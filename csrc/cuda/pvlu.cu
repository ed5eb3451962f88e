// PVLU on CUDA (SPEC.md 1.2 and 3): the engine (engine.cuh) with PvluOp (pvlu.h), one instance
// per dtype. sin and cos are pvlu.h's, accurate over the whole range (nvcc is not given
// --use_fast_math, so they are not the __sinf intrinsics).
#include "cuda/engine.cuh"
#include "pvlu.h"

namespace lslu_kernels {
namespace {

struct PvluVisit {
  template <typename Body>
  static void visit(const KernelArgs& a, Body&& body) {
    LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] { body(PvluOp<scalar_t>(a)); });
  }
};

}  // namespace

const CudaEntryPoints pvlu_cuda = cuda_engine::EntryPoints<PvluVisit>::table();

// The kernel whose attributes cuda_device_support (device.cu) asks for.
const void* pvlu_probe_kernel_cuda() {
  return reinterpret_cast<const void*>(
      &cuda_engine::forward_kernel<PvluOp<float>, ChannelWalk<4, int32_t>>);
}

}  // namespace lslu_kernels
