// Device helpers of the CUDA engine (engine.cuh, block_sum.cuh): packs and their stores,
// warp sums, errors and occupancy queries.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "dtypes.h"
#include "decomposition.h"
#include "grid.h"

namespace lslu_kernels {
namespace cuda_common {

// The minimum resident blocks per SM of every kernel's __launch_bounds__. Without one, ptxas
// trims some instances to the registers of an occupancy step (64, 80, 128) and spills 8-24
// bytes to the stack to fit; with 1 it keeps their values in registers. The grids are sized
// from the occupancy that results (grid.h), whatever it is.
constexpr int kMinBlocksPerSM = 1;
constexpr int kWarps = kThreads / 32;

inline bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("lslu_kernels: launching ") + kernel + " failed: " + cudaGetErrorString(err));
  }
}

inline int current_multiprocessors() {
  int device = 0;
  int multiprocessors = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    const cudaError_t err = cudaGetLastError();  // also clears it
    throw std::runtime_error(std::string("lslu_kernels: cannot query the CUDA device: ") + cudaGetErrorString(err));
  }
  return std::max(1, multiprocessors);
}

// Blocks of `kernel` that one multiprocessor of the current device holds at once, for
// blocks of `threads` threads and `shared` bytes of dynamic shared memory.
template <typename Kernel>
int resident_blocks(Kernel* kernel, int threads, size_t shared) {
  int blocks = 0;
  const cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, shared);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clears it
    throw std::runtime_error(std::string("lslu_kernels: cannot query the occupancy of a kernel: ") +
                             cudaGetErrorString(err));
  }
  return std::max(1, blocks);
}

// N consecutive elements moved by one load or store of N * sizeof(scalar_t) bytes.
template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) Pack {
  scalar_t v[N];
};

// Stores a pack as one store of its full width. nvcc splits a plain assignment of the pack
// struct (and of a uint4 made from it) into one store per element in the int64
// instantiations of the rows kernels: their PTX had four st.global.f32 where the int32 ones
// have st.global.v4.f32 (and two 16-bit stores for 4-byte packs). The store is therefore
// written out in PTX, for every pack of 4, 8 or 16 bytes.
template <typename scalar_t, int N>
__device__ __forceinline__ void store_pack(scalar_t* dst, const Pack<scalar_t, N>& pack) {
  constexpr size_t kBytes = sizeof(scalar_t) * N;
  if constexpr (kBytes == 16) {
    uint32_t w[4];
    memcpy(w, &pack, kBytes);
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
                 : "memory");
  } else if constexpr (kBytes == 8) {
    uint32_t w[2];
    memcpy(w, &pack, kBytes);
    asm volatile("st.global.v2.b32 [%0], {%1, %2};" ::"l"(dst), "r"(w[0]), "r"(w[1]) : "memory");
  } else if constexpr (kBytes == 4) {
    uint32_t w;
    memcpy(&w, &pack, kBytes);
    asm volatile("st.global.b32 [%0], %1;" ::"l"(dst), "r"(w) : "memory");
  } else {
    *reinterpret_cast<Pack<scalar_t, N>*>(dst) = pack;
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum_down(acc_t v, int lowest_offset) {
  // Lane l receives lanes l, l + lowest_offset, ... (fixed order); lane 0 the whole warp for 1.
  for (int offset = 16; offset >= lowest_offset; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace cuda_common
}  // namespace lslu_kernels
