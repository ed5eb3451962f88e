// Launch geometry and helpers shared by the CUDA kernels of every op (csrc/cuda/<op>.cu).
//
// Every op walks the dense (outer, channels, inner) view with the same two kernel
// families: "channel" kernels for inner > 1 (a block owns one channel) and "rows"
// kernels for inner == 1 (a block owns a tile of channels); see csrc/cuda/lslu.cu.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "dtypes.h"
#include "grid.h"

namespace lslu_kernels {
namespace cuda_common {

// Threads of every block (a multiple of 32: the reductions shuffle full warps).
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// The minimum resident blocks per SM of every kernel's __launch_bounds__. Without one, ptxas
// trims some instances to the registers of an occupancy step (64, 80, 128) and spills 8-24
// bytes to the stack to fit; with 1 it keeps their values in registers. The grids are sized
// from the occupancy that results (grid.h), whatever it is.
constexpr int kMinBlocksPerSM = 1;
// Channels of one rows-kernel tile (the rows kernels' channel blocks are this wide).
constexpr int kRowsTileChannels = int(grid::kRowsTileChannels);
// Packs each thread loads before computing on them: keeps several loads in flight.
constexpr int kUnroll = 4;
using grid::ceil_div;

inline int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

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

// int32 indices are enough when every loop counter, which may run up to kUnroll grid
// strides past the end, stays below 2^31. `force` (LsluArgs::force_int64 and its twins)
// runs the int64 instantiation on any size, so that small tests reach it.
inline bool needs_int64(int64_t numel, int64_t grid_threads, bool force) {
  return force || numel + kUnroll * grid_threads >= (int64_t(1) << 31);
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

// The forward grid of a kernel with an int32 and an int64 instantiation: blocks per column
// in whole waves of the instantiation that runs (grid.h), and which one that is.
struct ForwardGrid {
  int64_t blocks_per_column;
  bool int64_indices;
};

template <typename Kernel32, typename Kernel64>
ForwardGrid forward_grid(Kernel32* kernel32, Kernel64* kernel64, int threads, int64_t outer, int64_t channels,
                         int64_t inner, bool force_int64) {
  const int multiprocessors = current_multiprocessors();
  const int64_t columns = grid::columns_of(channels, inner);
  const int64_t numel = outer * channels * inner;
  ForwardGrid g{grid::blocks_per_column(outer, channels, inner, resident_blocks(kernel32, threads, 0), multiprocessors),
                false};
  g.int64_indices = needs_int64(numel, columns * g.blocks_per_column * threads, force_int64);
  if (g.int64_indices) {
    // Sized again for the int64 instantiation; int64 indices stay right for any grid.
    g.blocks_per_column =
        grid::blocks_per_column(outer, channels, inner, resident_blocks(kernel64, threads, 0), multiprocessors);
  }
  return g;
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

inline void check_grid(int64_t blocks) {
  // Callers always have at least one block; the 1-D grid limit is 2^31 - 1.
  if (blocks < 1 || blocks > int64_t(INT32_MAX)) {
    throw std::runtime_error("lslu_kernels: tensor too large for one CUDA grid (" + std::to_string(blocks) +
                             " blocks)");
  }
}

// Threads of a channel-kernel block: fewer than kThreads when a channel has few packs.
inline int channel_block_threads(int64_t packs_per_channel) {
  return int(std::min<int64_t>(kThreads, std::max<int64_t>(32, ceil_div(packs_per_channel, 32) * 32)));
}

// Block shape of the rows kernels: tile_width / CV threads across a tile of
// min(64, next_pow2(channels)) channels, the rest of kThreads down the rows.
inline dim3 rows_block(int64_t channels, int channels_per_thread) {
  const int tile_width = int(std::min<int64_t>(kRowsTileChannels, next_pow2(channels)));
  const int across = std::max(1, tile_width / channels_per_thread);
  return dim3(unsigned(across), unsigned(kThreads / across));
}

inline int64_t rows_tiles(int64_t channels, dim3 block, int channels_per_thread) {
  return ceil_div(channels, int64_t(block.x) * channels_per_thread);
}

}  // namespace cuda_common
}  // namespace lslu_kernels
