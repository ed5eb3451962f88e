// PWLU CUDA kernels (SPEC.md 1.3 and 3): forward, and a one-pass backward that writes
// grad_input and per-block partial sums of the parameter gradients.
//
// Every tensor is walked as a dense (outer, channels, inner) array (launch.h), with the
// layouts and conventions of lslu.cu:
// - "channel" kernels, inner > 1 (NCHW): a block owns one channel and a strided subset of
//   its (o, i) elements, walked in 16-byte packs along i when aligned.
// - "rows" kernels, inner == 1 (channels-last, (B, L, C)): a block owns a tile of up to 64
//   channels (threadIdx.x -> CV consecutive channels, coalesced) and a strided subset of
//   the rows (threadIdx.y).
// The table reads of an element come after its interval is clamped (pwlu.h), through the
// read-only cache.
//
// Backward sums without atomics, in a fixed order: each thread keeps, for each of its
// channels, a private column of N + 5 sums in shared memory (N + 1 bins of dL/dpoints,
// then the four scalar parameters, which live in registers until the end). Columns are
// interleaved (row r of column c at r * columns + c), so a warp's read-modify-writes of
// its lanes' bins never conflict whatever bins they hit, and no two threads ever write
// the same address. At the end the block adds the columns of each channel in a fixed
// order (channel kernels: lanes in order, then a shuffle tree; rows kernels: threadIdx.y
// in order) and writes one partial row per block. The block is sized so that the columns
// take at most kSumsBytes (48 KiB, no opt-in needed): 256 threads up to N = 43 in float32,
// 160 at N = 64; 64 threads at N = 64 in float64.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "dtypes.h"
#include "cuda/common.cuh"
#include "launch.h"
#include "pwlu.h"

namespace lslu_kernels {
namespace {

using namespace cuda_common;

// Shared memory for the backward sums of one block.
constexpr int kSumsBytes = 48 * 1024;
// Sums per column besides the N + 1 bins: left_bound, right_bound, left_slope, right_slope.
constexpr int kScalarSums = 4;

void check_intervals(int intervals) {
  if (intervals < 1 || intervals > kPwluMaxIntervals) {
    throw std::invalid_argument("pwlu: the cuda backend serves 1 to " + std::to_string(kPwluMaxIntervals) +
                                " intervals, got N = " + std::to_string(intervals));
  }
}

// Elements per pack of the channel kernels: 16 bytes, all in one channel.
template <typename scalar_t>
constexpr int channel_pack() {
  return int(16 / sizeof(scalar_t));
}

// Channels per thread of the rows kernels: 16 bytes of elements, at most 4 channels (each
// keeps 7 parameters in registers, and in backward its own column of sums).
template <typename scalar_t>
constexpr int rows_pack() {
  return int(16 / sizeof(scalar_t)) < 4 ? int(16 / sizeof(scalar_t)) : 4;
}

// The parameters as the kernels receive them (launch.h: contiguous, compute type).
template <typename acc_t>
struct Params {
  const acc_t* points;  // (channels, intervals + 1)
  const acc_t* left_bound;
  const acc_t* right_bound;
  const acc_t* left_slope;
  const acc_t* right_slope;
  int intervals;
};

template <typename acc_t>
__device__ __forceinline__ PwluChannel<acc_t> load_channel(const Params<acc_t>& prm, int64_t channel) {
  return pwlu_channel(__ldg(prm.left_bound + channel), __ldg(prm.right_bound + channel),
                      __ldg(prm.left_slope + channel), __ldg(prm.right_slope + channel),
                      prm.points + channel * (prm.intervals + 1), prm.intervals);
}

template <typename acc_t>
__device__ __forceinline__ acc_t forward_element(acc_t x, const PwluChannel<acc_t>& p, const acc_t* row,
                                                 int intervals) {
  const PwluLocation<acc_t> at = pwlu_locate(x, p, intervals);  // 0 <= at.idx < intervals
  return pwlu_forward_at(x, p, at, __ldg(row + at.idx), __ldg(row + at.idx + 1));
}

template <typename acc_t>
__device__ __forceinline__ acc_t backward_element(acc_t x, acc_t g, const PwluChannel<acc_t>& p, const acc_t* row,
                                                  int intervals, acc_t inv_intervals, PwluGrad<acc_t>& d) {
  const PwluLocation<acc_t> at = pwlu_locate(x, p, intervals);
  return pwlu_backward_at(x, g, p, at, __ldg(row + at.idx), __ldg(row + at.idx + 1), intervals, inv_intervals, d);
}

template <typename acc_t>
__device__ __forceinline__ acc_t pwlu_warp_sum_down(acc_t v) {
  // Lane 0 receives the whole warp, in a fixed order.
  for (int offset = 16; offset >= 1; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// The block's column sums: row r of column c at sums[r * columns + c].
template <typename acc_t>
__device__ __forceinline__ acc_t* column_sums() {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return reinterpret_cast<acc_t*>(shared_bytes);
}

// Adds one element's contributions to a column (whose row 0 is at `column`).
template <typename acc_t>
__device__ __forceinline__ void add_to_column(acc_t* column, int columns, const PwluGrad<acc_t>& d,
                                              acc_t (&scalars)[kScalarSums]) {
  column[d.bin * columns] += d.lower;
  column[(d.bin + 1) * columns] += d.upper;
  scalars[0] += d.left_bound;
  scalars[1] += d.right_bound;
  scalars[2] += d.left_slope;
  scalars[3] += d.right_slope;
}

// Where row r (< N + 1: a bin, else a scalar parameter) of a channel's block total goes.
template <typename acc_t>
__device__ __forceinline__ void write_partial(acc_t* __restrict__ dpoints_partial, acc_t* __restrict__ dscalars_partial,
                                              int64_t partial, int64_t channels, int64_t channel, int intervals, int r,
                                              acc_t total) {
  if (r <= intervals) {
    dpoints_partial[(partial * channels + channel) * (intervals + 1) + r] = total;
  } else {
    dscalars_partial[(partial * kScalarSums + (r - intervals - 1)) * channels + channel] = total;
  }
}

// ---------------------------------------------------------------------------------------
// Channel kernels (inner > 1). Block b: channel b / blocks_per_channel, chunk
// b % blocks_per_channel; the chunk's threads take packs chunk * blockDim + t, then every
// blocks_per_channel * blockDim packs, of the channel's outer * inner / VEC packs.

template <typename scalar_t, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    pwlu_forward_channel_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                Params<acc_type<scalar_t>> prm, index_t outer, index_t channels, index_t inner,
                                index_t blocks_per_channel) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const index_t channel = index_t(blockIdx.x) / blocks_per_channel;
  const index_t chunk = index_t(blockIdx.x) % blocks_per_channel;
  const PwluChannel<acc_t> p = load_channel(prm, channel);
  const acc_t* row = prm.points + int64_t(channel) * (prm.intervals + 1);

  const index_t inner_packs = inner / VEC;
  const index_t packs = outer * inner_packs;
  const index_t step = blocks_per_channel * index_t(blockDim.x);
  for (index_t first = chunk * index_t(blockDim.x) + index_t(threadIdx.x); first < packs; first += kUnroll * step) {
    pack_t xs[kUnroll];
    index_t offsets[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t k = first + u * step;
      if (k < packs) {
        const index_t o = k / inner_packs;
        offsets[u] = (o * channels + channel) * inner + (k - o * inner_packs) * VEC;
        xs[u] = *reinterpret_cast<const pack_t*>(x + offsets[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (first + u * step < packs) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          out.v[j] = from_acc<scalar_t>(forward_element(to_acc(xs[u].v[j]), p, row, prm.intervals));
        }
        store_pack(y + offsets[u], out);
      }
    }
  }
}

// Dynamic shared memory: (N + 5) * blockDim.x sums.
template <typename scalar_t, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    pwlu_backward_channel_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad_output,
                                 scalar_t* __restrict__ grad_input, Params<acc_type<scalar_t>> prm,
                                 acc_type<scalar_t>* __restrict__ dpoints_partial,
                                 acc_type<scalar_t>* __restrict__ dscalars_partial, index_t outer, index_t channels,
                                 index_t inner, index_t partials) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const int N = prm.intervals;
  const int sum_rows = N + 1 + kScalarSums;
  const int columns = blockDim.x;
  const index_t channel = index_t(blockIdx.x) / partials;
  const index_t partial = index_t(blockIdx.x) % partials;
  const PwluChannel<acc_t> p = load_channel(prm, channel);
  const acc_t* row = prm.points + int64_t(channel) * (N + 1);
  const acc_t inv_intervals = acc_t(1) / acc_t(N);

  acc_t* sums = column_sums<acc_t>();
  acc_t* column = sums + threadIdx.x;  // this thread's own column: no other thread touches it
  for (int r = 0; r <= N; ++r) column[r * columns] = acc_t(0);
  acc_t scalars[kScalarSums] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};

  const index_t inner_packs = inner / VEC;
  const index_t packs = outer * inner_packs;
  const index_t step = partials * index_t(blockDim.x);
  for (index_t first = partial * index_t(blockDim.x) + index_t(threadIdx.x); first < packs; first += kUnroll * step) {
    pack_t xs[kUnroll], gs[kUnroll];
    index_t offsets[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t k = first + u * step;
      if (k < packs) {
        const index_t o = k / inner_packs;
        offsets[u] = (o * channels + channel) * inner + (k - o * inner_packs) * VEC;
        xs[u] = *reinterpret_cast<const pack_t*>(x + offsets[u]);
        gs[u] = *reinterpret_cast<const pack_t*>(grad_output + offsets[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (first + u * step < packs) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          PwluGrad<acc_t> d;
          out.v[j] = from_acc<scalar_t>(
              backward_element(to_acc(xs[u].v[j]), to_acc(gs[u].v[j]), p, row, N, inv_intervals, d));
          add_to_column(column, columns, d, scalars);
        }
        store_pack(grad_input + offsets[u], out);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kScalarSums; ++k) column[(N + 1 + k) * columns] = scalars[k];
  __syncthreads();

  // Row r of the block total: warp r % warps adds it, lane l the columns l, l + 32, ... in
  // order, then the lanes in shuffle order.
  const int lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  for (int r = threadIdx.x / 32; r < sum_rows; r += warps) {
    acc_t total = acc_t(0);
    for (int c = lane; c < columns; c += 32) total += sums[r * columns + c];
    total = pwlu_warp_sum_down(total);
    if (lane == 0) write_partial(dpoints_partial, dscalars_partial, int64_t(partial), int64_t(channels),
                                 int64_t(channel), N, r, total);
  }
}

// ---------------------------------------------------------------------------------------
// Rows kernels (inner == 1). Block b: channel tile b / blocks_per_tile, chunk
// b % blocks_per_tile; thread (tx, ty) owns channels tile * tile_width + tx * CV + [0, CV)
// and rows chunk * blockDim.y + ty, then every blocks_per_tile * blockDim.y rows. With
// CV > 1, channels % CV == 0.

template <typename scalar_t, int CV, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    pwlu_forward_rows_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, Params<acc_type<scalar_t>> prm,
                             index_t rows, index_t channels, index_t blocks_per_tile) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, CV>;
  const index_t tile = index_t(blockIdx.x) / blocks_per_tile;
  const index_t chunk = index_t(blockIdx.x) % blocks_per_tile;
  const index_t first_channel = tile * index_t(blockDim.x * CV) + index_t(threadIdx.x) * CV;
  if (first_channel >= channels) return;  // no reduction follows in forward
  PwluChannel<acc_t> p[CV];
  const acc_t* row_of[CV];
#pragma unroll
  for (int j = 0; j < CV; ++j) {
    p[j] = load_channel(prm, int64_t(first_channel) + j);
    row_of[j] = prm.points + (int64_t(first_channel) + j) * (prm.intervals + 1);
  }

  const index_t step = blocks_per_tile * index_t(blockDim.y);
  for (index_t first = chunk * index_t(blockDim.y) + index_t(threadIdx.y); first < rows; first += kUnroll * step) {
    pack_t xs[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t r = first + u * step;
      if (r < rows) xs[u] = *reinterpret_cast<const pack_t*>(x + r * channels + first_channel);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t r = first + u * step;
      if (r < rows) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < CV; ++j) {
          out.v[j] = from_acc<scalar_t>(forward_element(to_acc(xs[u].v[j]), p[j], row_of[j], prm.intervals));
        }
        store_pack(y + r * channels + first_channel, out);
      }
    }
  }
}

// Dynamic shared memory: (N + 5) * CV * blockDim.x * blockDim.y sums; the column of channel
// j of thread t = ty * blockDim.x + tx is j * threads + t.
template <typename scalar_t, int CV, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    pwlu_backward_rows_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad_output,
                              scalar_t* __restrict__ grad_input, Params<acc_type<scalar_t>> prm,
                              acc_type<scalar_t>* __restrict__ dpoints_partial,
                              acc_type<scalar_t>* __restrict__ dscalars_partial, index_t rows, index_t channels,
                              index_t partials) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, CV>;
  const int N = prm.intervals;
  const int sum_rows = N + 1 + kScalarSums;
  const int threads = blockDim.x * blockDim.y;
  const int columns = threads * CV;
  const int thread = threadIdx.y * blockDim.x + threadIdx.x;
  const int tile_width = blockDim.x * CV;
  const index_t tile = index_t(blockIdx.x) / partials;
  const index_t partial = index_t(blockIdx.x) % partials;
  const index_t first_channel = tile * index_t(tile_width) + index_t(threadIdx.x) * CV;
  // Threads past the last channel keep zero sums: every thread takes part in the reduction.
  const bool active = first_channel < channels;
  const acc_t inv_intervals = acc_t(1) / acc_t(N);

  acc_t* sums = column_sums<acc_t>();
  PwluChannel<acc_t> p[CV];
  const acc_t* row_of[CV];
  acc_t scalars[CV][kScalarSums];
#pragma unroll
  for (int j = 0; j < CV; ++j) {
    acc_t* column = sums + j * threads + thread;
    for (int r = 0; r <= N; ++r) column[r * columns] = acc_t(0);
#pragma unroll
    for (int k = 0; k < kScalarSums; ++k) scalars[j][k] = acc_t(0);
    const int64_t channel = active ? int64_t(first_channel) + j : 0;
    p[j] = load_channel(prm, channel);
    row_of[j] = prm.points + channel * (N + 1);
  }

  const index_t step = partials * index_t(blockDim.y);
  const index_t start = active ? partial * index_t(blockDim.y) + index_t(threadIdx.y) : rows;
  for (index_t first = start; first < rows; first += kUnroll * step) {
    pack_t xs[kUnroll], gs[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t r = first + u * step;
      if (r < rows) {
        xs[u] = *reinterpret_cast<const pack_t*>(x + r * channels + first_channel);
        gs[u] = *reinterpret_cast<const pack_t*>(grad_output + r * channels + first_channel);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t r = first + u * step;
      if (r < rows) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < CV; ++j) {
          PwluGrad<acc_t> d;
          out.v[j] = from_acc<scalar_t>(
              backward_element(to_acc(xs[u].v[j]), to_acc(gs[u].v[j]), p[j], row_of[j], N, inv_intervals, d));
          add_to_column(sums + j * threads + thread, columns, d, scalars[j]);
        }
        store_pack(grad_input + r * channels + first_channel, out);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < CV; ++j) {
#pragma unroll
    for (int k = 0; k < kScalarSums; ++k) sums[(N + 1 + k) * columns + j * threads + thread] = scalars[j][k];
  }
  __syncthreads();

  // Output o = (row r, channel j of column tx): the sum over ty, in order. tx varies
  // fastest over o, so that consecutive threads read consecutive addresses.
  const int outputs = sum_rows * tile_width;
  for (int o = thread; o < outputs; o += threads) {
    const int tx = o % blockDim.x;
    const int j = (o / blockDim.x) % CV;
    const int r = o / tile_width;
    const int64_t channel = int64_t(tile) * tile_width + tx * CV + j;
    if (channel < int64_t(channels)) {
      acc_t total = acc_t(0);
      for (int ty = 0; ty < int(blockDim.y); ++ty) total += sums[r * columns + j * threads + ty * blockDim.x + tx];
      write_partial(dpoints_partial, dscalars_partial, int64_t(partial), int64_t(channels), channel, N, r, total);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Launchers: pick the layout, the pack width (vector loads only when every pointer is
// aligned to the pack and no pack straddles a channel), the block size and the index type.

template <typename scalar_t>
Params<acc_type<scalar_t>> params_of(const PwluArgs& a) {
  using acc_t = acc_type<scalar_t>;
  return Params<acc_t>{static_cast<const acc_t*>(a.points),     static_cast<const acc_t*>(a.left_bound),
                       static_cast<const acc_t*>(a.right_bound), static_cast<const acc_t*>(a.left_slope),
                       static_cast<const acc_t*>(a.right_slope), a.intervals};
}


// Columns of backward sums that fit kSumsBytes.
template <typename scalar_t>
int sum_columns(int intervals) {
  return kSumsBytes / int((intervals + 1 + kScalarSums) * sizeof(acc_type<scalar_t>));
}

template <typename scalar_t>
size_t sums_bytes(int intervals, int columns) {
  return size_t(intervals + 1 + kScalarSums) * size_t(columns) * sizeof(acc_type<scalar_t>);
}

// Backward channel-kernel threads: as forward, but at most sum_columns.
template <typename scalar_t>
int backward_channel_threads(int64_t packs_per_channel, int intervals) {
  const int by_memory = sum_columns<scalar_t>(intervals) / 32 * 32;
  if (by_memory < 32) throw std::invalid_argument("pwlu: too many intervals for the cuda backward");
  return std::min(channel_block_threads(packs_per_channel), by_memory);
}

// Block shape of the rows kernels: tile_width / CV threads across a tile of
// min(64, next_pow2(channels)) channels, the rest of `threads` down the rows.
dim3 pwlu_rows_block(int64_t channels, int channels_per_thread, int threads) {
  const int tile_width = int(std::min<int64_t>(kRowsTileChannels, next_pow2(channels)));
  const int across = std::max(1, tile_width / channels_per_thread);
  return dim3(unsigned(across), unsigned(std::max(1, threads / across)));
}

// Backward rows-kernel block: as forward, with threads * CV columns of sums at most
// sum_columns (threads a multiple of 32 and of the threads across a tile).
template <typename scalar_t>
dim3 backward_rows_block(int64_t channels, int channels_per_thread, int intervals) {
  const dim3 widest = pwlu_rows_block(channels, channels_per_thread, kThreads);
  const int multiple = std::max(32, int(widest.x));
  const int by_memory = sum_columns<scalar_t>(intervals) / channels_per_thread / multiple * multiple;
  if (by_memory < multiple) throw std::invalid_argument("pwlu: too many intervals for the cuda backward");
  return pwlu_rows_block(channels, channels_per_thread, std::min(kThreads, by_memory));
}


template <typename scalar_t, int VEC>
void launch_forward_channel(const PwluArgs& a, cudaStream_t stream) {
  const int threads = channel_block_threads(a.outer * (a.inner / VEC));
  auto* kernel32 = pwlu_forward_channel_kernel<scalar_t, VEC, int32_t>;
  auto* kernel64 = pwlu_forward_channel_kernel<scalar_t, VEC, int64_t>;
  const ForwardGrid g = forward_grid(kernel32, kernel64, threads, a.outer, a.channels, a.inner, a.force_int64);
  const int64_t blocks = a.channels * g.blocks_per_column;
  check_grid(blocks);
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* y = static_cast<scalar_t*>(a.y);
  if (g.int64_indices) {
    kernel64<<<unsigned(blocks), threads, 0, stream>>>(x, y, params_of<scalar_t>(a), a.outer, a.channels, a.inner,
                                                       g.blocks_per_column);
  } else {
    kernel32<<<unsigned(blocks), threads, 0, stream>>>(x, y, params_of<scalar_t>(a), int32_t(a.outer),
                                                       int32_t(a.channels), int32_t(a.inner),
                                                       int32_t(g.blocks_per_column));
  }
  check_launch("pwlu_forward_channel_kernel");
}

template <typename scalar_t, int VEC>
void launch_backward_channel(const PwluArgs& a, cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  const int threads = backward_channel_threads<scalar_t>(a.outer * (a.inner / VEC), a.intervals);
  const size_t shared = sums_bytes<scalar_t>(a.intervals, threads);
  const int64_t blocks = a.channels * a.partials;
  check_grid(blocks);
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* g = static_cast<const scalar_t*>(a.grad_output);
  auto* dx = static_cast<scalar_t*>(a.grad_input);
  auto* dpoints = static_cast<acc_t*>(a.dpoints_partial);
  auto* dscalars = static_cast<acc_t*>(a.dscalars_partial);
  if (needs_int64(a.outer * a.channels * a.inner, blocks * threads, a.force_int64)) {
    pwlu_backward_channel_kernel<scalar_t, VEC, int64_t><<<unsigned(blocks), threads, shared, stream>>>(
        x, g, dx, params_of<scalar_t>(a), dpoints, dscalars, a.outer, a.channels, a.inner, a.partials);
  } else {
    pwlu_backward_channel_kernel<scalar_t, VEC, int32_t><<<unsigned(blocks), threads, shared, stream>>>(
        x, g, dx, params_of<scalar_t>(a), dpoints, dscalars, int32_t(a.outer), int32_t(a.channels),
        int32_t(a.inner), int32_t(a.partials));
  }
  check_launch("pwlu_backward_channel_kernel");
}

template <typename scalar_t, int CV>
void launch_forward_rows(const PwluArgs& a, cudaStream_t stream) {
  const dim3 block = pwlu_rows_block(a.channels, CV, kThreads);
  auto* kernel32 = pwlu_forward_rows_kernel<scalar_t, CV, int32_t>;
  auto* kernel64 = pwlu_forward_rows_kernel<scalar_t, CV, int64_t>;
  const ForwardGrid g =
      forward_grid(kernel32, kernel64, int(block.x * block.y), a.outer, a.channels, 1, a.force_int64);
  const int64_t blocks = rows_tiles(a.channels, block, CV) * g.blocks_per_column;
  check_grid(blocks);
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* y = static_cast<scalar_t*>(a.y);
  if (g.int64_indices) {
    kernel64<<<unsigned(blocks), block, 0, stream>>>(x, y, params_of<scalar_t>(a), a.outer, a.channels,
                                                     g.blocks_per_column);
  } else {
    kernel32<<<unsigned(blocks), block, 0, stream>>>(x, y, params_of<scalar_t>(a), int32_t(a.outer),
                                                     int32_t(a.channels), int32_t(g.blocks_per_column));
  }
  check_launch("pwlu_forward_rows_kernel");
}

template <typename scalar_t, int CV>
void launch_backward_rows(const PwluArgs& a, cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  const dim3 block = backward_rows_block<scalar_t>(a.channels, CV, a.intervals);
  const int threads = int(block.x * block.y);
  const size_t shared = sums_bytes<scalar_t>(a.intervals, threads * CV);
  const int64_t blocks = rows_tiles(a.channels, block, CV) * a.partials;
  check_grid(blocks);
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* g = static_cast<const scalar_t*>(a.grad_output);
  auto* dx = static_cast<scalar_t*>(a.grad_input);
  auto* dpoints = static_cast<acc_t*>(a.dpoints_partial);
  auto* dscalars = static_cast<acc_t*>(a.dscalars_partial);
  if (needs_int64(a.outer * a.channels, blocks * threads, a.force_int64)) {
    pwlu_backward_rows_kernel<scalar_t, CV, int64_t><<<unsigned(blocks), block, shared, stream>>>(
        x, g, dx, params_of<scalar_t>(a), dpoints, dscalars, a.outer, a.channels, a.partials);
  } else {
    pwlu_backward_rows_kernel<scalar_t, CV, int32_t><<<unsigned(blocks), block, shared, stream>>>(
        x, g, dx, params_of<scalar_t>(a), dpoints, dscalars, int32_t(a.outer), int32_t(a.channels),
        int32_t(a.partials));
  }
  check_launch("pwlu_backward_rows_kernel");
}

template <typename scalar_t>
void forward_typed(const PwluArgs& a, cudaStream_t stream) {
  if (a.inner > 1) {
    constexpr int kVec = channel_pack<scalar_t>();
    if (a.inner % kVec == 0 && aligned_to(a.x, 16) && aligned_to(a.y, 16)) {
      launch_forward_channel<scalar_t, kVec>(a, stream);
    } else {
      launch_forward_channel<scalar_t, 1>(a, stream);
    }
  } else {
    constexpr int kCv = rows_pack<scalar_t>();
    constexpr size_t kPackBytes = kCv * sizeof(scalar_t);
    if (a.channels % kCv == 0 && aligned_to(a.x, kPackBytes) && aligned_to(a.y, kPackBytes)) {
      launch_forward_rows<scalar_t, kCv>(a, stream);
    } else {
      launch_forward_rows<scalar_t, 1>(a, stream);
    }
  }
}

template <typename scalar_t>
void backward_typed(const PwluArgs& a, cudaStream_t stream) {
  if (a.partials < 1) throw std::invalid_argument("pwlu: partials must be at least 1");
  if (a.inner > 1) {
    constexpr int kVec = channel_pack<scalar_t>();
    if (a.inner % kVec == 0 && aligned_to(a.x, 16) && aligned_to(a.grad_output, 16) && aligned_to(a.grad_input, 16)) {
      launch_backward_channel<scalar_t, kVec>(a, stream);
    } else {
      launch_backward_channel<scalar_t, 1>(a, stream);
    }
  } else {
    constexpr int kCv = rows_pack<scalar_t>();
    constexpr size_t kPackBytes = kCv * sizeof(scalar_t);
    if (a.channels % kCv == 0 && aligned_to(a.x, kPackBytes) && aligned_to(a.grad_output, kPackBytes) &&
        aligned_to(a.grad_input, kPackBytes)) {
      launch_backward_rows<scalar_t, kCv>(a, stream);
    } else {
      launch_backward_rows<scalar_t, 1>(a, stream);
    }
  }
}

// Backward blocks that one multiprocessor holds at once, for the int32 instantiation of the
// kernel that these sizes select with aligned pointers (as in lslu.cu: the partials count
// rests on it, so it depends on the sizes alone).
template <typename scalar_t>
int backward_resident_blocks(int64_t outer, int64_t channels, int64_t inner, int intervals) {
  if (inner > 1) {
    constexpr int kVec = channel_pack<scalar_t>();
    if (inner % kVec == 0) {
      const int threads = backward_channel_threads<scalar_t>(outer * (inner / kVec), intervals);
      return resident_blocks(pwlu_backward_channel_kernel<scalar_t, kVec, int32_t>, threads,
                             sums_bytes<scalar_t>(intervals, threads));
    }
    const int threads = backward_channel_threads<scalar_t>(outer * inner, intervals);
    return resident_blocks(pwlu_backward_channel_kernel<scalar_t, 1, int32_t>, threads,
                           sums_bytes<scalar_t>(intervals, threads));
  }
  constexpr int kCv = rows_pack<scalar_t>();
  if (channels % kCv == 0) {
    const dim3 block = backward_rows_block<scalar_t>(channels, kCv, intervals);
    const int threads = int(block.x * block.y);
    return resident_blocks(pwlu_backward_rows_kernel<scalar_t, kCv, int32_t>, threads,
                           sums_bytes<scalar_t>(intervals, threads * kCv));
  }
  const dim3 block = backward_rows_block<scalar_t>(channels, 1, intervals);
  const int threads = int(block.x * block.y);
  return resident_blocks(pwlu_backward_rows_kernel<scalar_t, 1, int32_t>, threads,
                         sums_bytes<scalar_t>(intervals, threads));
}

template <template <typename> class Kernel, typename... Extra>
auto dispatch_dtype(DType dtype, Extra&&... extra) {
  switch (dtype) {
    case DType::Float16: return Kernel<Half>::run(std::forward<Extra>(extra)...);
    case DType::BFloat16: return Kernel<BFloat16>::run(std::forward<Extra>(extra)...);
    case DType::Float32: return Kernel<float>::run(std::forward<Extra>(extra)...);
    case DType::Float64: return Kernel<double>::run(std::forward<Extra>(extra)...);
  }
  throw std::invalid_argument("pwlu: unknown dtype");
}

template <typename scalar_t>
struct Forward {
  static void run(const PwluArgs& a, cudaStream_t stream) { forward_typed<scalar_t>(a, stream); }
};
template <typename scalar_t>
struct Backward {
  static void run(const PwluArgs& a, cudaStream_t stream) { backward_typed<scalar_t>(a, stream); }
};
template <typename scalar_t>
struct Resident {
  static int run(int64_t outer, int64_t channels, int64_t inner, int intervals) {
    return backward_resident_blocks<scalar_t>(outer, channels, inner, intervals);
  }
};

bool empty(const PwluArgs& a) { return a.outer <= 0 || a.channels <= 0 || a.inner <= 0; }

// Backward of an empty tensor still writes every partial entry (launch.h): zeros.
void zero_partials(const PwluArgs& a, cudaStream_t stream) {
  if (a.partials <= 0 || a.channels <= 0) return;
  const size_t acc_bytes = a.dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  const size_t rows = size_t(a.partials) * size_t(a.channels);
  const std::pair<void*, size_t> buffers[] = {{a.dpoints_partial, rows * size_t(a.intervals + 1) * acc_bytes},
                                              {a.dscalars_partial, rows * kScalarSums * acc_bytes}};
  for (const auto& [buffer, bytes] : buffers) {
    const cudaError_t err = cudaMemsetAsync(buffer, 0, bytes, stream);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("lslu_kernels: zeroing the pwlu partial sums failed: ") +
                               cudaGetErrorString(err));
    }
  }
}

}  // namespace

int64_t pwlu_backward_partials_cuda(DType dtype, int64_t outer, int64_t channels, int64_t inner, int intervals,
                                    int multiprocessors) {
  check_intervals(intervals);
  if (outer <= 0 || channels <= 0 || inner <= 0) return 1;
  const int resident = dispatch_dtype<Resident>(dtype, outer, channels, inner, intervals);
  return grid::blocks_per_column(outer, channels, inner, resident, multiprocessors);
}

void pwlu_forward_cuda(const PwluArgs& args, void* stream) {
  check_intervals(args.intervals);
  if (empty(args)) return;
  dispatch_dtype<Forward>(args.dtype, args, static_cast<cudaStream_t>(stream));
}

void pwlu_backward_cuda(const PwluArgs& args, void* stream) {
  check_intervals(args.intervals);
  if (empty(args)) return zero_partials(args, static_cast<cudaStream_t>(stream));
  dispatch_dtype<Backward>(args.dtype, args, static_cast<cudaStream_t>(stream));
}

}  // namespace lslu_kernels
