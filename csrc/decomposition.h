// How the CUDA engine (csrc/cuda/engine.cuh) cuts the dense (outer, channels, inner) view into
// blocks and threads: which packs of elements each (block, thread) visits and which partial
// row each block writes. Plain __host__ __device__ arithmetic with no CUDA header, so that the
// CPU extension enumerates the very same code in a test (bindings.cpp: decomposition_visits,
// tests/test_decomposition.py).
//
// Two layouts:
// - channel (inner > 1, NCHW): a block owns one channel (its column) and a strided share of
//   that channel's outer * inner / PACK packs, PACK consecutive elements along `inner`; the
//   thread's channel never changes, so its parameters and sums stay in registers.
// - rows (inner == 1, channels-last, (B, L, C)): a block owns a tile of up to kRowsTileChannels
//   channels (threadIdx.x -> PACK consecutive channels, coalesced) and a strided share of the
//   rows (threadIdx.y); again each thread's channels never change.
// Block b serves column b / blocks_per_column and writes row b % blocks_per_column (its part)
// of the partial buffers for the channels of its column.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "dtypes.h"
#include "grid.h"

namespace lslu_kernels {

// Threads of every block at most (a multiple of 32: the block sums shuffle full warps).
constexpr int kThreads = 256;
// Packs each thread loads before computing on them: keeps several loads in flight.
constexpr int kUnroll = 4;

// Sizes a kernel receives, in its index type.
template <typename index_t>
struct WalkSizes {
  index_t outer, channels, inner, blocks_per_column;
};

// A thread's packs in the channel layout: items k = begin, begin + step, ... < end of the
// column's outer * inner / PACK packs, visited kUnroll at a time (item(first, u)).
template <int PACK, typename index_t>
struct ChannelWalk {
  static constexpr bool kRows = false;
  static constexpr int kPack = PACK;
  static constexpr int kChannelsPerThread = 1;
  using index_type = index_t;
  index_t channels, inner, inner_packs;
  index_t column, part;
  index_t begin, end, step;

  LSLU_HD ChannelWalk(const WalkSizes<index_t>& s, unsigned block, unsigned tx, unsigned /*ty*/, unsigned bdx,
                      unsigned /*bdy*/)
      : channels(s.channels), inner(s.inner), inner_packs(s.inner / PACK) {
    column = index_t(block) / s.blocks_per_column;
    part = index_t(block) % s.blocks_per_column;
    end = s.outer * inner_packs;
    step = s.blocks_per_column * index_t(bdx);
    begin = part * index_t(bdx) + index_t(tx);
  }
  LSLU_HD bool active() const { return true; }
  // The channel of element j of a pack.
  LSLU_HD index_t channel(int /*j*/) const { return column; }
  LSLU_HD index_t item(index_t first, int u) const { return first + u * step; }
  // Element offset of pack k.
  LSLU_HD index_t offset(index_t k) const {
    const index_t o = k / inner_packs;
    return (o * channels + column) * inner + (k - o * inner_packs) * PACK;
  }
  // The channels whose partial entries this block writes: [first_written, first_written + written).
  LSLU_HD int64_t first_written() const { return int64_t(column); }
  LSLU_HD int64_t written(unsigned /*bdx*/) const { return 1; }
};

// A thread's packs in the rows layout: rows begin, begin + step, ... < end, each a pack of
// PACK consecutive channels from first_channel (channels % PACK == 0 when PACK > 1).
template <int PACK, typename index_t>
struct RowsWalk {
  static constexpr bool kRows = true;
  static constexpr int kPack = PACK;
  static constexpr int kChannelsPerThread = PACK;
  using index_type = index_t;
  index_t channels, tile, part, first_channel;
  index_t begin, end, step;
  int tile_width;

  LSLU_HD RowsWalk(const WalkSizes<index_t>& s, unsigned block, unsigned tx, unsigned ty, unsigned bdx,
                   unsigned bdy)
      : channels(s.channels), tile_width(int(bdx) * PACK) {
    tile = index_t(block) / s.blocks_per_column;
    part = index_t(block) % s.blocks_per_column;
    first_channel = tile * index_t(tile_width) + index_t(tx) * PACK;
    end = s.outer;
    step = s.blocks_per_column * index_t(bdy);
    // Threads past the last channel visit nothing (and, in backward, sum zeros).
    begin = active() ? part * index_t(bdy) + index_t(ty) : end;
  }
  LSLU_HD bool active() const { return first_channel < channels; }
  LSLU_HD index_t channel(int j) const { return first_channel + j; }
  LSLU_HD index_t item(index_t first, int u) const { return first + u * step; }
  LSLU_HD index_t offset(index_t row) const { return row * channels + first_channel; }
  LSLU_HD int64_t first_written() const { return int64_t(tile) * tile_width; }
  LSLU_HD int64_t written(unsigned /*bdx*/) const {
    return std::min<int64_t>(tile_width, int64_t(channels) - first_written());
  }
};

// ---- block shapes and grids (host) ----

struct BlockShape {
  int x, y;
  int threads() const { return x * y; }
};

inline int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// At most `max_columns` threads * channels per thread: PWLU's backward keeps a column of sums
// in shared memory per thread and channel (csrc/cuda/pwlu.cu); unbounded otherwise.
constexpr int64_t kUnboundedColumns = int64_t(1) << 40;

// Channel layout: fewer than kThreads threads when a channel has few packs.
inline BlockShape channel_block(int64_t packs_per_channel, int64_t max_columns) {
  const int64_t by_memory = std::min<int64_t>(kThreads, max_columns / 32 * 32);
  if (by_memory < 32) throw std::invalid_argument("lslu_kernels: the sums of one block do not fit shared memory");
  const int64_t wanted = std::max<int64_t>(32, grid::ceil_div(packs_per_channel, 32) * 32);
  return BlockShape{int(std::min(wanted, by_memory)), 1};
}

// Rows layout: tile_width / PACK threads across a tile of min(64, next_pow2(channels))
// channels, the rest of the threads (a multiple of 32 and of the threads across) down the rows.
inline BlockShape rows_block(int64_t channels, int pack, int64_t max_columns) {
  const int tile_width = int(std::min<int64_t>(grid::kRowsTileChannels, next_pow2(channels)));
  const int across = std::max(1, tile_width / pack);
  const int64_t multiple = std::max(32, across);
  const int64_t by_memory = max_columns / pack / multiple * multiple;
  if (by_memory < multiple) throw std::invalid_argument("lslu_kernels: the sums of one block do not fit shared memory");
  const int threads = int(std::min<int64_t>(kThreads, by_memory));
  return BlockShape{across, std::max(1, threads / across)};
}

inline BlockShape block_shape(bool rows, int pack, int64_t outer, int64_t channels, int64_t inner,
                              int64_t max_columns) {
  return rows ? rows_block(channels, pack, max_columns) : channel_block(outer * (inner / pack), max_columns);
}

// Columns of a grid: channels, or tiles of block.x * pack channels.
inline int64_t grid_columns(bool rows, int pack, int64_t channels, BlockShape block) {
  return rows ? grid::ceil_div(channels, int64_t(block.x) * pack) : channels;
}

// int32 indices are enough when every loop counter, which may run up to kUnroll grid strides
// past the end, stays below 2^31. `force` (KernelArgs::force_int64) runs the int64
// instantiation on any size, so that small tests reach it.
inline bool needs_int64(int64_t numel, int64_t grid_threads, bool force) {
  return force || numel + kUnroll * grid_threads >= (int64_t(1) << 31);
}

}  // namespace lslu_kernels
