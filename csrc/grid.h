// Grid sizes of the CUDA kernels (csrc/cuda), as plain host arithmetic: no CUDA header, so
// that the CPU extension can expose it too (bindings.cpp: wave_blocks_per_column) and the
// tests check it on a machine without a GPU.
//
// Every op splits its dense (outer, channels, inner) view into columns: one channel each
// for inner > 1, one tile of kRowsTileChannels channels each for inner == 1. A block owns
// a strided share of one column, and every block of a launch does about the same work, so
// a launch takes ceil(blocks / wave) waves of `wave` = resident blocks per SM x SMs blocks.
// The blocks per column are chosen so that the last wave is (nearly) full.
#pragma once

#include <algorithm>
#include <cstdint>

namespace lslu_kernels {
namespace grid {

// Channels of one rows-kernel tile (the rows kernels' channel blocks are this wide).
constexpr int64_t kRowsTileChannels = 64;
// A block is given at least this many elements of its column before the grid grows further.
constexpr int64_t kMinElementsPerBlock = 2048;
// Launches of at most this many waves are considered.
constexpr int64_t kMaxWaves = 32;
// A grid fills its waves well enough when at most this many percent of its block slots idle.
constexpr int64_t kIdlePercent = 5;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t columns_of(int64_t channels, int64_t inner) {
  return inner == 1 ? ceil_div(channels, kRowsTileChannels) : channels;
}

// Blocks per column for a device with `multiprocessors` SMs, each holding `resident_blocks`
// blocks of the kernel at once (cudaOccupancyMaxActiveBlocksPerMultiprocessor). Depends on
// nothing else: the backward partials count is this number.
//
// With too little work for one wave, every block gets kMinElementsPerBlock elements. Else
// the smallest count whose grid fills its last wave to within kIdlePercent, over grids of
// 1 to kMaxWaves waves; if none does, the count that idles the fewest slots.
inline int64_t blocks_per_column(int64_t outer, int64_t channels, int64_t inner, int64_t resident_blocks,
                                 int64_t multiprocessors) {
  if (outer <= 0 || channels <= 0 || inner <= 0) return 1;
  const int64_t columns = columns_of(channels, inner);
  const int64_t column_elements = inner == 1 ? outer * std::min(channels, kRowsTileChannels) : outer * inner;
  const int64_t useful = std::max<int64_t>(1, ceil_div(column_elements, kMinElementsPerBlock));
  const int64_t wave = std::max<int64_t>(1, resident_blocks) * std::max<int64_t>(1, multiprocessors);
  if (columns * useful <= wave) return useful;

  int64_t best = 1, best_blocks = columns, best_slots = ceil_div(columns, wave) * wave;
  for (int64_t waves = 1; waves <= kMaxWaves; ++waves) {
    const int64_t per_column = std::max<int64_t>(1, std::min(useful, waves * wave / columns));
    const int64_t blocks = columns * per_column;
    const int64_t slots = ceil_div(blocks, wave) * wave;
    if (blocks * 100 >= slots * (100 - kIdlePercent)) return per_column;
    // blocks / slots > best_blocks / best_slots, in integers.
    if (blocks * best_slots > best_blocks * slots) {
      best = per_column;
      best_blocks = blocks;
      best_slots = slots;
    }
  }
  return best;
}

}  // namespace grid
}  // namespace lslu_kernels
