// What the CUDA extension can do on one device (kernel_abi.h: CudaDeviceSupport), asked once per
// device by lslu_kernels/_backends.py before it makes `cuda` a default backend there.
//
// The driver may be missing or older than the runtime this extension links statically, and
// the fatbin may hold no image or PTX for the device's compute capability: each case is a
// failed call here, reported in `error`, never thrown. Those errors are not sticky; the last
// call clears the error state they leave, so that later launches do not report them.

#include <cuda_runtime.h>

#include "kernel_abi.h"

namespace lslu_kernels {

CudaDeviceSupport cuda_device_support(int device) {
  CudaDeviceSupport support;
  // Keeps the first error: the later calls usually fail because of it.
  const auto succeeded = [&support](cudaError_t err) {
    if (err != cudaSuccess && support.error.empty()) support.error = cudaGetErrorString(err);
    return err == cudaSuccess;
  };
  succeeded(cudaDriverGetVersion(&support.driver_version));
  succeeded(cudaRuntimeGetVersion(&support.runtime_version));
  int major = 0, minor = 0;
  if (succeeded(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) &&
      succeeded(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device))) {
    support.compute_capability = major * 10 + minor;
  }
  int current = 0;
  if (support.error.empty() && succeeded(cudaGetDevice(&current))) {
    // cudaFuncGetAttributes asks the current device; the caller's current device is restored.
    if (current == device || succeeded(cudaSetDevice(device))) {
      cudaFuncAttributes attributes{};
      support.image_ok = succeeded(cudaFuncGetAttributes(&attributes, pvlu_probe_kernel_cuda()));
      if (current != device) cudaSetDevice(current);
    }
  }
  cudaGetLastError();  // clears the error state of the calls that failed
  return support;
}

}  // namespace lslu_kernels
