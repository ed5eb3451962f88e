// PVLU CUDA kernels (SPEC.md 1.2 and 3): forward, and a one-pass backward that writes
// grad_input and per-block partial sums of dL/dalpha and dL/dbeta.
//
// The structure is that of csrc/cuda/lslu.cu, with one (alpha, beta) pair per channel in
// place of the stage series. Every tensor is walked as a dense (outer, channels, inner)
// array (launch.h). Two layouts get their own kernels:
// - "channel" kernels, inner > 1 (NCHW): a block owns one channel and a strided subset of
//   that channel's (o, i) elements, walked in packs of VEC elements along i; the thread's
//   channel never changes, so its parameters and sums stay in registers.
// - "rows" kernels, inner == 1 (channels-last, (B, L, C)): a block owns a tile of up to 64
//   channels (threadIdx.x -> CV consecutive channels, coalesced) and a strided subset of
//   the rows (threadIdx.y); again each thread's channels never change.
// Backward reduces each block's sums in a fixed order (warp shuffles, then shared memory
// read in a fixed order; no atomics), so partial sums are bitwise reproducible. Partial
// buffers are (partials, channels); every entry is written.
//
// sin and cos are pvlu.h's: trig.h's trig_sin / trig_sincos for float (accurate over the
// whole range, in registers only), sin / sincos for double.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "dtypes.h"
#include "cuda/common.cuh"
#include "launch.h"
#include "pvlu.h"

namespace lslu_kernels {
namespace {

using namespace cuda_common;

// ---------------------------------------------------------------------------------------
// Launch geometry and helpers: the same as csrc/cuda/lslu.cu (see there).

// Elements per pack: 16 bytes (channel kernels: along one channel's row; rows kernels:
// CV consecutive channels of a thread, whose alpha, beta and two sums stay in registers).
template <typename scalar_t>
constexpr int pack_16_bytes() {
  return int(16 / sizeof(scalar_t));
}


// ---------------------------------------------------------------------------------------
// Channel kernels (inner > 1). Block b: channel b / blocks_per_channel, chunk
// b % blocks_per_channel; the chunk's threads take packs chunk * blockDim + t, then every
// blocks_per_channel * blockDim packs, of the channel's outer * inner / VEC packs.

// Blocks per SM that the kernels' __launch_bounds__ ask for, in place of kMinBlocksPerSM
// (one): left that free, ptxas interleaves the sin and cos (trig.h) of a thread's kUnroll
// packs up to ~95 registers forward and ~180 backward (25% and 12.5% occupancy); these
// cap them at 80 and 128 registers, which it meets without spilling (benchmarks/gate_cuda.py).
constexpr int kForwardMinBlocksPerSM = 3;
constexpr int kBackwardMinBlocksPerSM = 2;

template <typename scalar_t, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocksPerSM)
    pvlu_forward_channel_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                const acc_type<scalar_t>* __restrict__ alpha,
                                const acc_type<scalar_t>* __restrict__ beta, index_t outer, index_t channels,
                                index_t inner, index_t blocks_per_channel) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const index_t channel = index_t(blockIdx.x) / blocks_per_channel;
  const index_t chunk = index_t(blockIdx.x) % blocks_per_channel;
  const acc_t a = __ldg(alpha + channel), b = __ldg(beta + channel);

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
        for (int j = 0; j < VEC; ++j) out.v[j] = from_acc<scalar_t>(pvlu_forward(to_acc(xs[u].v[j]), a, b));
        store_pack(y + offsets[u], out);
      }
    }
  }
}

template <typename scalar_t, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocksPerSM)
    pvlu_backward_channel_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad_output,
                                 scalar_t* __restrict__ grad_input, const acc_type<scalar_t>* __restrict__ alpha,
                                 const acc_type<scalar_t>* __restrict__ beta,
                                 acc_type<scalar_t>* __restrict__ dalpha_partial,
                                 acc_type<scalar_t>* __restrict__ dbeta_partial, index_t outer, index_t channels,
                                 index_t inner, index_t partials) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const index_t channel = index_t(blockIdx.x) / partials;
  const index_t partial = index_t(blockIdx.x) % partials;
  const acc_t a = __ldg(alpha + channel), b = __ldg(beta + channel);
  acc_t da = acc_t(0), db = acc_t(0);  // this thread's sums over its elements

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
          acc_t element_da, element_db;
          out.v[j] = from_acc<scalar_t>(
              pvlu_backward(to_acc(xs[u].v[j]), to_acc(gs[u].v[j]), a, b, element_da, element_db));
          da += element_da;
          db += element_db;
        }
        store_pack(grad_input + offsets[u], out);
      }
    }
  }

  // Block sum: each warp in shuffle order, then the warps in index order.
  __shared__ acc_t warp_sums[kWarps][2];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  da = warp_sum_down(da, 1);
  db = warp_sum_down(db, 1);
  if (lane == 0) {
    warp_sums[warp][0] = da;
    warp_sums[warp][1] = db;
  }
  __syncthreads();
  if (threadIdx.x < 2) {
    const int warps = blockDim.x / 32;
    acc_t total = acc_t(0);
    for (int w = 0; w < warps; ++w) total += warp_sums[w][threadIdx.x];
    acc_t* out = threadIdx.x == 0 ? dalpha_partial : dbeta_partial;
    out[int64_t(partial) * int64_t(channels) + channel] = total;
  }
}

// ---------------------------------------------------------------------------------------
// Rows kernels (inner == 1). blockDim = (tile_width / CV, kThreads / that). Block b:
// channel tile b / blocks_per_tile, chunk b % blocks_per_tile; thread (tx, ty) owns
// channels tile * tile_width + tx * CV + [0, CV) and rows chunk * blockDim.y + ty, then
// every blocks_per_tile * blockDim.y rows. With CV > 1, channels % CV == 0.

template <typename scalar_t, int CV, typename index_t>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocksPerSM)
    pvlu_forward_rows_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                             const acc_type<scalar_t>* __restrict__ alpha,
                             const acc_type<scalar_t>* __restrict__ beta, index_t rows, index_t channels,
                             index_t blocks_per_tile) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, CV>;
  const index_t tile = index_t(blockIdx.x) / blocks_per_tile;
  const index_t chunk = index_t(blockIdx.x) % blocks_per_tile;
  const index_t first_channel = tile * index_t(blockDim.x * CV) + index_t(threadIdx.x) * CV;
  if (first_channel >= channels) return;  // no reduction follows in forward
  acc_t a[CV], b[CV];
#pragma unroll
  for (int j = 0; j < CV; ++j) {
    a[j] = __ldg(alpha + first_channel + j);
    b[j] = __ldg(beta + first_channel + j);
  }

  const index_t step = blocks_per_tile * index_t(blockDim.y);
  for (index_t first = chunk * index_t(blockDim.y) + index_t(threadIdx.y); first < rows; first += kUnroll * step) {
    pack_t xs[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t row = first + u * step;
      if (row < rows) xs[u] = *reinterpret_cast<const pack_t*>(x + row * channels + first_channel);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t row = first + u * step;
      if (row < rows) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < CV; ++j) out.v[j] = from_acc<scalar_t>(pvlu_forward(to_acc(xs[u].v[j]), a[j], b[j]));
        store_pack(y + row * channels + first_channel, out);
      }
    }
  }
}

template <typename scalar_t, int CV, typename index_t>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocksPerSM)
    pvlu_backward_rows_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad_output,
                              scalar_t* __restrict__ grad_input, const acc_type<scalar_t>* __restrict__ alpha,
                              const acc_type<scalar_t>* __restrict__ beta,
                              acc_type<scalar_t>* __restrict__ dalpha_partial,
                              acc_type<scalar_t>* __restrict__ dbeta_partial, index_t rows, index_t channels,
                              index_t partials) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, CV>;
  const int tile_width = blockDim.x * CV;
  const index_t tile = index_t(blockIdx.x) / partials;
  const index_t partial = index_t(blockIdx.x) % partials;
  const index_t first_channel = tile * index_t(tile_width) + index_t(threadIdx.x) * CV;
  // Threads past the last channel keep zero sums: every thread takes part in the reduction.
  const bool active = first_channel < channels;
  acc_t a[CV], b[CV];
  acc_t da[CV], db[CV];  // this thread's sums over its rows, per channel
#pragma unroll
  for (int j = 0; j < CV; ++j) {
    a[j] = b[j] = da[j] = db[j] = acc_t(0);
    if (active) {
      a[j] = __ldg(alpha + first_channel + j);
      b[j] = __ldg(beta + first_channel + j);
    }
  }

  const index_t step = partials * index_t(blockDim.y);
  const index_t start = active ? partial * index_t(blockDim.y) + index_t(threadIdx.y) : rows;
  for (index_t first = start; first < rows; first += kUnroll * step) {
    pack_t xs[kUnroll], gs[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t row = first + u * step;
      if (row < rows) {
        xs[u] = *reinterpret_cast<const pack_t*>(x + row * channels + first_channel);
        gs[u] = *reinterpret_cast<const pack_t*>(grad_output + row * channels + first_channel);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t row = first + u * step;
      if (row < rows) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < CV; ++j) {
          acc_t element_da, element_db;
          out.v[j] = from_acc<scalar_t>(
              pvlu_backward(to_acc(xs[u].v[j]), to_acc(gs[u].v[j]), a[j], b[j], element_da, element_db));
          da[j] += element_da;
          db[j] += element_db;
        }
        store_pack(grad_input + row * channels + first_channel, out);
      }
    }
  }

  // Block sum over threadIdx.y. When a row of the block is narrower than a warp, a warp
  // holds 32 / blockDim.x rows: shuffles sum them first, leaving the sums in lanes <
  // blockDim.x. Then every `span` consecutive threads form one group of rows, whose sums
  // shared memory collects, and thread t < tile_width adds channel t's groups in index order.
  constexpr int kGroups = kThreads / 32;
  __shared__ acc_t group_sums[2][kGroups][kRowsTileChannels];
  const int thread = threadIdx.y * blockDim.x + threadIdx.x;
  const int span = blockDim.x < 32 ? 32 : blockDim.x;
  const int group = thread / span;
  const int groups = (blockDim.x * blockDim.y) / span;
  const bool holds_group_sum = thread % span < int(blockDim.x);
#pragma unroll
  for (int j = 0; j < CV; ++j) {
    const acc_t alpha_sum = warp_sum_down(da[j], blockDim.x);
    const acc_t beta_sum = warp_sum_down(db[j], blockDim.x);
    if (holds_group_sum) {
      group_sums[0][group][threadIdx.x * CV + j] = alpha_sum;
      group_sums[1][group][threadIdx.x * CV + j] = beta_sum;
    }
  }
  __syncthreads();
  if (thread < tile_width) {
    const int64_t channel = int64_t(tile) * tile_width + thread;
    if (channel < int64_t(channels)) {
      acc_t alpha_total = acc_t(0), beta_total = acc_t(0);
      for (int g = 0; g < groups; ++g) {
        alpha_total += group_sums[0][g][thread];
        beta_total += group_sums[1][g][thread];
      }
      const int64_t at = int64_t(partial) * int64_t(channels) + channel;
      dalpha_partial[at] = alpha_total;
      dbeta_partial[at] = beta_total;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Launchers: pick the layout, the pack width (vector loads only when every pointer is
// aligned to the pack and no pack straddles a channel) and the index type.

template <typename scalar_t>
const scalar_t* as_elements(const void* p) {
  return static_cast<const scalar_t*>(p);
}
template <typename scalar_t>
scalar_t* as_elements(void* p) {
  return static_cast<scalar_t*>(p);
}
template <typename scalar_t>
const acc_type<scalar_t>* as_params(const void* p) {
  return static_cast<const acc_type<scalar_t>*>(p);
}
template <typename scalar_t>
acc_type<scalar_t>* as_partials(void* p) {
  return static_cast<acc_type<scalar_t>*>(p);
}

template <typename scalar_t, int VEC>
void launch_forward_channel(const PvluArgs& a, cudaStream_t stream) {
  const int threads = channel_block_threads(a.outer * (a.inner / VEC));
  auto* kernel32 = pvlu_forward_channel_kernel<scalar_t, VEC, int32_t>;
  auto* kernel64 = pvlu_forward_channel_kernel<scalar_t, VEC, int64_t>;
  const ForwardGrid g = forward_grid(kernel32, kernel64, threads, a.outer, a.channels, a.inner, a.force_int64);
  const int64_t blocks = a.channels * g.blocks_per_column;
  check_grid(blocks);
  if (g.int64_indices) {
    kernel64<<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.alpha),
        as_params<scalar_t>(a.beta), a.outer, a.channels, a.inner, g.blocks_per_column);
  } else {
    kernel32<<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.alpha),
        as_params<scalar_t>(a.beta), int32_t(a.outer), int32_t(a.channels), int32_t(a.inner),
        int32_t(g.blocks_per_column));
  }
  check_launch("pvlu_forward_channel_kernel");
}

template <typename scalar_t, int VEC>
void launch_backward_channel(const PvluArgs& a, cudaStream_t stream) {
  const int threads = channel_block_threads(a.outer * (a.inner / VEC));
  const int64_t blocks = a.channels * a.partials;
  check_grid(blocks);
  const int64_t numel = a.outer * a.channels * a.inner;
  if (needs_int64(numel, blocks * threads, a.force_int64)) {
    pvlu_backward_channel_kernel<scalar_t, VEC, int64_t><<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.alpha), as_params<scalar_t>(a.beta), as_partials<scalar_t>(a.dalpha_partial),
        as_partials<scalar_t>(a.dbeta_partial), a.outer, a.channels, a.inner, a.partials);
  } else {
    pvlu_backward_channel_kernel<scalar_t, VEC, int32_t><<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.alpha), as_params<scalar_t>(a.beta), as_partials<scalar_t>(a.dalpha_partial),
        as_partials<scalar_t>(a.dbeta_partial), int32_t(a.outer), int32_t(a.channels), int32_t(a.inner),
        int32_t(a.partials));
  }
  check_launch("pvlu_backward_channel_kernel");
}

template <typename scalar_t, int CV>
void launch_forward_rows(const PvluArgs& a, cudaStream_t stream) {
  const dim3 block = rows_block(a.channels, CV);
  auto* kernel32 = pvlu_forward_rows_kernel<scalar_t, CV, int32_t>;
  auto* kernel64 = pvlu_forward_rows_kernel<scalar_t, CV, int64_t>;
  const ForwardGrid g = forward_grid(kernel32, kernel64, kThreads, a.outer, a.channels, 1, a.force_int64);
  const int64_t blocks = rows_tiles(a.channels, block, CV) * g.blocks_per_column;
  check_grid(blocks);
  if (g.int64_indices) {
    kernel64<<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.alpha),
        as_params<scalar_t>(a.beta), a.outer, a.channels, g.blocks_per_column);
  } else {
    kernel32<<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.alpha),
        as_params<scalar_t>(a.beta), int32_t(a.outer), int32_t(a.channels), int32_t(g.blocks_per_column));
  }
  check_launch("pvlu_forward_rows_kernel");
}

template <typename scalar_t, int CV>
void launch_backward_rows(const PvluArgs& a, cudaStream_t stream) {
  const dim3 block = rows_block(a.channels, CV);
  const int64_t blocks = rows_tiles(a.channels, block, CV) * a.partials;
  check_grid(blocks);
  const int64_t numel = a.outer * a.channels;
  if (needs_int64(numel, blocks * kThreads, a.force_int64)) {
    pvlu_backward_rows_kernel<scalar_t, CV, int64_t><<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.alpha), as_params<scalar_t>(a.beta), as_partials<scalar_t>(a.dalpha_partial),
        as_partials<scalar_t>(a.dbeta_partial), a.outer, a.channels, a.partials);
  } else {
    pvlu_backward_rows_kernel<scalar_t, CV, int32_t><<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.alpha), as_params<scalar_t>(a.beta), as_partials<scalar_t>(a.dalpha_partial),
        as_partials<scalar_t>(a.dbeta_partial), int32_t(a.outer), int32_t(a.channels), int32_t(a.partials));
  }
  check_launch("pvlu_backward_rows_kernel");
}

template <typename scalar_t>
void forward_typed(const PvluArgs& a, cudaStream_t stream) {
  constexpr int kVec = pack_16_bytes<scalar_t>();
  if (a.inner > 1) {
    const bool vectorized = a.inner % kVec == 0 && aligned_to(a.x, 16) && aligned_to(a.y, 16);
    if (vectorized) {
      launch_forward_channel<scalar_t, kVec>(a, stream);
    } else {
      launch_forward_channel<scalar_t, 1>(a, stream);
    }
  } else {
    const bool vectorized = a.channels % kVec == 0 && aligned_to(a.x, 16) && aligned_to(a.y, 16);
    if (vectorized) {
      launch_forward_rows<scalar_t, kVec>(a, stream);
    } else {
      launch_forward_rows<scalar_t, 1>(a, stream);
    }
  }
}

template <typename scalar_t>
void backward_typed(const PvluArgs& a, cudaStream_t stream) {
  if (a.partials < 1) throw std::invalid_argument("lslu_kernels: partials must be at least 1");
  constexpr int kVec = pack_16_bytes<scalar_t>();
  const bool aligned = aligned_to(a.x, 16) && aligned_to(a.grad_output, 16) && aligned_to(a.grad_input, 16);
  if (a.inner > 1) {
    if (aligned && a.inner % kVec == 0) {
      launch_backward_channel<scalar_t, kVec>(a, stream);
    } else {
      launch_backward_channel<scalar_t, 1>(a, stream);
    }
  } else {
    if (aligned && a.channels % kVec == 0) {
      launch_backward_rows<scalar_t, kVec>(a, stream);
    } else {
      launch_backward_rows<scalar_t, 1>(a, stream);
    }
  }
}

// Backward blocks that one multiprocessor holds at once, for the int32 instantiation of the
// kernel that these sizes select with aligned pointers (as in lslu.cu: the partials count
// rests on it, so it depends on the sizes alone).
template <typename scalar_t>
int backward_resident_blocks(int64_t outer, int64_t channels, int64_t inner) {
  constexpr int kVec = pack_16_bytes<scalar_t>();
  if (inner > 1) {
    if (inner % kVec == 0) {
      return resident_blocks(pvlu_backward_channel_kernel<scalar_t, kVec, int32_t>,
                             channel_block_threads(outer * (inner / kVec)), 0);
    }
    return resident_blocks(pvlu_backward_channel_kernel<scalar_t, 1, int32_t>, channel_block_threads(outer * inner), 0);
  }
  if (channels % kVec == 0) return resident_blocks(pvlu_backward_rows_kernel<scalar_t, kVec, int32_t>, kThreads, 0);
  return resident_blocks(pvlu_backward_rows_kernel<scalar_t, 1, int32_t>, kThreads, 0);
}

// Entry points for dispatch_pvlu (pvlu.h): one instantiation per dtype.
struct Forward {
  template <typename scalar_t>
  static void run(const PvluArgs& a, cudaStream_t stream) { forward_typed<scalar_t>(a, stream); }
};
struct Backward {
  template <typename scalar_t>
  static void run(const PvluArgs& a, cudaStream_t stream) { backward_typed<scalar_t>(a, stream); }
};
struct Resident {
  template <typename scalar_t>
  static void run(int64_t outer, int64_t channels, int64_t inner, int* blocks) {
    *blocks = backward_resident_blocks<scalar_t>(outer, channels, inner);
  }
};

int64_t element_count(const PvluArgs& a) {
  if (a.outer <= 0 || a.channels <= 0 || a.inner <= 0) return 0;
  return a.outer * a.channels * a.inner;
}

// Backward of an empty tensor still writes every partial entry (launch.h): zeros.
void zero_partials(const PvluArgs& a, cudaStream_t stream) {
  if (a.partials <= 0 || a.channels <= 0) return;
  const size_t bytes =
      size_t(a.partials) * size_t(a.channels) * (a.dtype == DType::Float64 ? sizeof(double) : sizeof(float));
  for (void* partial : {a.dalpha_partial, a.dbeta_partial}) {
    const cudaError_t err = cudaMemsetAsync(partial, 0, bytes, stream);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("lslu_kernels: zeroing the partial sums failed: ") +
                               cudaGetErrorString(err));
    }
  }
}

}  // namespace

int64_t pvlu_backward_partials_cuda(DType dtype, int64_t outer, int64_t channels, int64_t inner, int multiprocessors) {
  if (outer <= 0 || channels <= 0 || inner <= 0) return 1;
  int resident = 1;
  dispatch_pvlu<Resident>(dtype, outer, channels, inner, &resident);
  return grid::blocks_per_column(outer, channels, inner, resident, multiprocessors);
}

// The kernel whose attributes cuda_device_support (device.cu) asks for.
const void* pvlu_probe_kernel_cuda() {
  return reinterpret_cast<const void*>(&pvlu_forward_channel_kernel<float, 4, int32_t>);
}

void pvlu_forward_cuda(const PvluArgs& args, void* stream) {
  if (element_count(args) == 0) return;
  dispatch_pvlu<Forward>(args.dtype, args, static_cast<cudaStream_t>(stream));
}

void pvlu_backward_cuda(const PvluArgs& args, void* stream) {
  if (element_count(args) == 0) return zero_partials(args, static_cast<cudaStream_t>(stream));
  dispatch_pvlu<Backward>(args.dtype, args, static_cast<cudaStream_t>(stream));
}

}  // namespace lslu_kernels
