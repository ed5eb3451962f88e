// Launch geometry and helpers shared by the CUDA kernels of every op (csrc/cuda/<op>.cu).
//
// Every op walks the dense (outer, channels, inner) view with the same two kernel
// families: "channel" kernels for inner > 1 (a block owns one channel) and "rows"
// kernels for inner == 1 (a block owns a tile of channels); see csrc/cuda/lslu.cu.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "dtypes.h"

namespace lslu_kernels {
namespace cuda_common {

// Threads of every block (a multiple of 32: the reductions shuffle full warps).
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Channels of one rows-kernel tile (the rows kernels' channel blocks are this wide).
constexpr int kRowsTileChannels = 64;
// Packs each thread loads before computing on them: keeps several loads in flight.
constexpr int kUnroll = 4;
// Backward blocks per SM in total (they loop over many elements each); forward uses more
// because its blocks need fewer registers.
constexpr int64_t kBackwardBlocksPerSM = 4;
constexpr int64_t kForwardBlocksPerSM = 8;
// A block is given at least this many elements of its column before the grid grows further.
constexpr int64_t kMinElementsPerBlock = 2048;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

// Blocks per column (one channel for inner > 1, one 64-channel tile for inner == 1) so that
// the whole grid has about target_blocks blocks, but each block gets enough elements.
// Depends only on the sizes and target_blocks: the backward partials count comes from here.
inline int64_t blocks_per_column(int64_t outer, int64_t channels, int64_t inner, int64_t target_blocks) {
  if (outer <= 0 || channels <= 0 || inner <= 0) return 1;
  const bool rows_layout = inner == 1;
  const int64_t columns = rows_layout ? ceil_div(channels, kRowsTileChannels) : channels;
  const int64_t column_elements = rows_layout ? outer * std::min<int64_t>(channels, kRowsTileChannels) : outer * inner;
  const int64_t wanted = ceil_div(target_blocks, columns);
  const int64_t useful = ceil_div(column_elements, kMinElementsPerBlock);
  return std::max<int64_t>(1, std::min(wanted, useful));
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
// strides past the end, stays below 2^31.
inline bool needs_int64(int64_t numel, int64_t grid_threads) {
  return numel + kUnroll * grid_threads >= (int64_t(1) << 31);
}

// N consecutive elements moved by one load or store of N * sizeof(scalar_t) bytes.
template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) Pack {
  scalar_t v[N];
};

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
