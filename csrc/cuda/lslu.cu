// LSLU CUDA kernels (SPEC.md 1.1 and 3): forward, and a one-pass backward that writes
// grad_input and per-block partial sums of dL/dtheta and dL/domega.
//
// Every tensor is walked as a dense (outer, channels, inner) array (launch.h). Two layouts
// get their own kernels:
// - "channel" kernels, inner > 1 (NCHW): a block owns one channel and a strided subset of
//   that channel's (o, i) elements, walked in packs of VEC elements along i; the thread's
//   channel never changes, so its parameters and sums stay in registers.
// - "rows" kernels, inner == 1 (channels-last, (B, L, C)): a block owns a tile of up to 64
//   channels (threadIdx.x -> CV consecutive channels, coalesced) and a strided subset of
//   the rows (threadIdx.y); again each thread's channels never change.
// Backward reduces each block's sums in a fixed order (warp shuffles, then shared memory
// read in a fixed order; no atomics), so partial sums are bitwise reproducible.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "dispatch.h"
#include "dtypes.h"
#include "cuda/common.cuh"
#include "launch.h"
#include "lslu.h"

namespace lslu_kernels {
namespace {

using namespace cuda_common;

// Elements per pack of the channel kernels: 16 bytes, all in one channel.
template <typename scalar_t>
constexpr int channel_pack() {
  return int(16 / sizeof(scalar_t));
}

// Channels per thread of the rows kernels: at most 16 bytes of elements, and at most 64
// bytes of parameters per stage series (a thread keeps CV * STAGES values of theta, omega
// and, in backward, of both sums in registers).
template <typename scalar_t, int STAGES>
constexpr int rows_pack() {
  const int by_bytes = int(16 / sizeof(scalar_t));
  const int by_registers = int(64 / (STAGES * sizeof(acc_type<scalar_t>)));
  const int limit = by_bytes < by_registers ? by_bytes : by_registers;
  int pack = 1;
  while (pack * 2 <= limit) pack *= 2;
  return pack;
}

template <int STAGES, typename acc_t>
__device__ __forceinline__ void load_params(const acc_t* __restrict__ theta, const acc_t* __restrict__ omega,
                                            int64_t channels, int64_t channel, acc_t (&th)[STAGES],
                                            acc_t (&om)[STAGES]) {
#pragma unroll
  for (int s = 0; s < STAGES; ++s) {
    th[s] = __ldg(theta + s * channels + channel);
    om[s] = __ldg(omega + s * channels + channel);
  }
}


// ---------------------------------------------------------------------------------------
// Channel kernels (inner > 1). Block b: channel b / blocks_per_channel, chunk
// b % blocks_per_channel; the chunk's threads take packs chunk * blockDim + t, then every
// blocks_per_channel * blockDim packs, of the channel's outer * inner / VEC packs.

template <typename scalar_t, int STAGES, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    lslu_forward_channel_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                const acc_type<scalar_t>* __restrict__ theta,
                                const acc_type<scalar_t>* __restrict__ omega, index_t outer,
                                index_t channels, index_t inner, index_t blocks_per_channel) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const index_t channel = index_t(blockIdx.x) / blocks_per_channel;
  const index_t chunk = index_t(blockIdx.x) % blocks_per_channel;
  acc_t th[STAGES], om[STAGES];
  load_params<STAGES>(theta, omega, channels, channel, th, om);

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
        for (int j = 0; j < VEC; ++j) out.v[j] = from_acc<scalar_t>(lslu_forward<STAGES>(to_acc(xs[u].v[j]), th, om));
        store_pack(y + offsets[u], out);
      }
    }
  }
}

template <typename scalar_t, int STAGES, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    lslu_backward_channel_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad_output,
                                 scalar_t* __restrict__ grad_input, const acc_type<scalar_t>* __restrict__ theta,
                                 const acc_type<scalar_t>* __restrict__ omega,
                                 acc_type<scalar_t>* __restrict__ dtheta_partial,
                                 acc_type<scalar_t>* __restrict__ domega_partial, index_t outer, index_t channels,
                                 index_t inner, index_t partials) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const index_t channel = index_t(blockIdx.x) / partials;
  const index_t partial = index_t(blockIdx.x) % partials;
  acc_t th[STAGES], om[STAGES];
  load_params<STAGES>(theta, omega, channels, channel, th, om);
  acc_t dth[STAGES], dom[STAGES];  // this thread's sums over its elements
#pragma unroll
  for (int s = 0; s < STAGES; ++s) dth[s] = dom[s] = acc_t(0);

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
          acc_t element_dth[STAGES], element_dom[STAGES];
          out.v[j] = from_acc<scalar_t>(
              lslu_backward<STAGES>(to_acc(xs[u].v[j]), to_acc(gs[u].v[j]), th, om, element_dth, element_dom));
#pragma unroll
          for (int s = 0; s < STAGES; ++s) {
            dth[s] += element_dth[s];
            dom[s] += element_dom[s];
          }
        }
        store_pack(grad_input + offsets[u], out);
      }
    }
  }

  // Block sum: each warp in shuffle order, then the warps in index order.
  __shared__ acc_t warp_sums[kWarps][2 * STAGES];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int s = 0; s < STAGES; ++s) {
    dth[s] = warp_sum_down(dth[s], 1);
    dom[s] = warp_sum_down(dom[s], 1);
  }
  if (lane == 0) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      warp_sums[warp][s] = dth[s];
      warp_sums[warp][STAGES + s] = dom[s];
    }
  }
  __syncthreads();
  if (threadIdx.x < 2 * STAGES) {
    const int warps = blockDim.x / 32;
    acc_t total = acc_t(0);
    for (int w = 0; w < warps; ++w) total += warp_sums[w][threadIdx.x];
    const int stage = threadIdx.x % STAGES;
    acc_t* out = threadIdx.x < STAGES ? dtheta_partial : domega_partial;
    out[(int64_t(partial) * STAGES + stage) * int64_t(channels) + channel] = total;
  }
}

// ---------------------------------------------------------------------------------------
// Rows kernels (inner == 1). blockDim = (tile_width / CV, kThreads / that). Block b:
// channel tile b / blocks_per_tile, chunk b % blocks_per_tile; thread (tx, ty) owns
// channels tile * tile_width + tx * CV + [0, CV) and rows chunk * blockDim.y + ty, then
// every blocks_per_tile * blockDim.y rows. With CV > 1, channels % CV == 0.

template <typename scalar_t, int STAGES, int CV, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    lslu_forward_rows_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                             const acc_type<scalar_t>* __restrict__ theta,
                             const acc_type<scalar_t>* __restrict__ omega, index_t rows,
                             index_t channels, index_t blocks_per_tile) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, CV>;
  const index_t tile = index_t(blockIdx.x) / blocks_per_tile;
  const index_t chunk = index_t(blockIdx.x) % blocks_per_tile;
  const index_t first_channel = tile * index_t(blockDim.x * CV) + index_t(threadIdx.x) * CV;
  if (first_channel >= channels) return;  // no reduction follows in forward
  acc_t th[CV][STAGES], om[CV][STAGES];
#pragma unroll
  for (int j = 0; j < CV; ++j) load_params<STAGES>(theta, omega, channels, first_channel + j, th[j], om[j]);

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
        for (int j = 0; j < CV; ++j) out.v[j] = from_acc<scalar_t>(lslu_forward<STAGES>(to_acc(xs[u].v[j]), th[j], om[j]));
        store_pack(y + row * channels + first_channel, out);
      }
    }
  }
}

template <typename scalar_t, int STAGES, int CV, typename index_t>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    lslu_backward_rows_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad_output,
                              scalar_t* __restrict__ grad_input, const acc_type<scalar_t>* __restrict__ theta,
                              const acc_type<scalar_t>* __restrict__ omega,
                              acc_type<scalar_t>* __restrict__ dtheta_partial,
                              acc_type<scalar_t>* __restrict__ domega_partial, index_t rows, index_t channels,
                              index_t partials) {
  using acc_t = acc_type<scalar_t>;
  using pack_t = Pack<scalar_t, CV>;
  const int tile_width = blockDim.x * CV;
  const index_t tile = index_t(blockIdx.x) / partials;
  const index_t partial = index_t(blockIdx.x) % partials;
  const index_t first_channel = tile * index_t(tile_width) + index_t(threadIdx.x) * CV;
  // Threads past the last channel keep zero sums: every thread takes part in the reduction.
  const bool active = first_channel < channels;
  acc_t th[CV][STAGES], om[CV][STAGES];
  acc_t dth[CV][STAGES], dom[CV][STAGES];  // this thread's sums over its rows, per channel
#pragma unroll
  for (int j = 0; j < CV; ++j) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) th[j][s] = om[j][s] = dth[j][s] = dom[j][s] = acc_t(0);
    if (active) load_params<STAGES>(theta, omega, channels, first_channel + j, th[j], om[j]);
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
          acc_t element_dth[STAGES], element_dom[STAGES];
          out.v[j] = from_acc<scalar_t>(lslu_backward<STAGES>(to_acc(xs[u].v[j]), to_acc(gs[u].v[j]), th[j], om[j],
                                                               element_dth, element_dom));
#pragma unroll
          for (int s = 0; s < STAGES; ++s) {
            dth[j][s] += element_dth[s];
            dom[j][s] += element_dom[s];
          }
        }
        store_pack(grad_input + row * channels + first_channel, out);
      }
    }
  }

  // Block sum over threadIdx.y, one stage at a time (bounded shared memory). When a row of
  // the block is narrower than a warp, a warp holds 32 / blockDim.x rows: shuffles sum them
  // first, leaving the sums in lanes < blockDim.x. Then every `span` consecutive threads
  // form one group of rows, whose sums shared memory collects, and thread t < tile_width
  // adds channel t's groups in index order.
  constexpr int kGroups = kThreads / 32;
  __shared__ acc_t group_sums[2][kGroups][kRowsTileChannels];
  const int thread = threadIdx.y * blockDim.x + threadIdx.x;
  const int span = blockDim.x < 32 ? 32 : blockDim.x;
  const int group = thread / span;
  const int groups = (blockDim.x * blockDim.y) / span;
  const bool holds_group_sum = thread % span < int(blockDim.x);
#pragma unroll
  for (int s = 0; s < STAGES; ++s) {
#pragma unroll
    for (int j = 0; j < CV; ++j) {
      const acc_t theta_sum = warp_sum_down(dth[j][s], blockDim.x);
      const acc_t omega_sum = warp_sum_down(dom[j][s], blockDim.x);
      if (holds_group_sum) {
        group_sums[0][group][threadIdx.x * CV + j] = theta_sum;
        group_sums[1][group][threadIdx.x * CV + j] = omega_sum;
      }
    }
    __syncthreads();
    if (thread < tile_width) {
      const int64_t channel = int64_t(tile) * tile_width + thread;
      if (channel < int64_t(channels)) {
        acc_t theta_total = acc_t(0), omega_total = acc_t(0);
        for (int g = 0; g < groups; ++g) {
          theta_total += group_sums[0][g][thread];
          omega_total += group_sums[1][g][thread];
        }
        const int64_t at = (int64_t(partial) * STAGES + s) * int64_t(channels) + channel;
        dtheta_partial[at] = theta_total;
        domega_partial[at] = omega_total;
      }
    }
    __syncthreads();  // the next stage overwrites group_sums
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

template <typename scalar_t, int STAGES, int VEC>
void launch_forward_channel(const LsluArgs& a, cudaStream_t stream) {
  const int threads = channel_block_threads(a.outer * (a.inner / VEC));
  auto* kernel32 = lslu_forward_channel_kernel<scalar_t, STAGES, VEC, int32_t>;
  auto* kernel64 = lslu_forward_channel_kernel<scalar_t, STAGES, VEC, int64_t>;
  const ForwardGrid g = forward_grid(kernel32, kernel64, threads, a.outer, a.channels, a.inner, a.force_int64);
  const int64_t blocks = a.channels * g.blocks_per_column;
  check_grid(blocks);
  if (g.int64_indices) {
    kernel64<<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.theta),
        as_params<scalar_t>(a.omega), a.outer, a.channels, a.inner, g.blocks_per_column);
  } else {
    kernel32<<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.theta),
        as_params<scalar_t>(a.omega), int32_t(a.outer), int32_t(a.channels), int32_t(a.inner),
        int32_t(g.blocks_per_column));
  }
  check_launch("lslu_forward_channel_kernel");
}

template <typename scalar_t, int STAGES, int VEC>
void launch_backward_channel(const LsluArgs& a, cudaStream_t stream) {
  const int threads = channel_block_threads(a.outer * (a.inner / VEC));
  const int64_t blocks = a.channels * a.partials;
  check_grid(blocks);
  const int64_t numel = a.outer * a.channels * a.inner;
  using acc_t = acc_type<scalar_t>;
  if (needs_int64(numel, blocks * threads, a.force_int64)) {
    lslu_backward_channel_kernel<scalar_t, STAGES, VEC, int64_t><<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.theta), as_params<scalar_t>(a.omega), static_cast<acc_t*>(a.dtheta_partial),
        static_cast<acc_t*>(a.domega_partial), a.outer, a.channels, a.inner, a.partials);
  } else {
    lslu_backward_channel_kernel<scalar_t, STAGES, VEC, int32_t><<<unsigned(blocks), threads, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.theta), as_params<scalar_t>(a.omega), static_cast<acc_t*>(a.dtheta_partial),
        static_cast<acc_t*>(a.domega_partial), int32_t(a.outer), int32_t(a.channels), int32_t(a.inner),
        int32_t(a.partials));
  }
  check_launch("lslu_backward_channel_kernel");
}

template <typename scalar_t, int STAGES, int CV>
void launch_forward_rows(const LsluArgs& a, cudaStream_t stream) {
  const dim3 block = rows_block(a.channels, CV);
  auto* kernel32 = lslu_forward_rows_kernel<scalar_t, STAGES, CV, int32_t>;
  auto* kernel64 = lslu_forward_rows_kernel<scalar_t, STAGES, CV, int64_t>;
  const ForwardGrid g = forward_grid(kernel32, kernel64, kThreads, a.outer, a.channels, 1, a.force_int64);
  const int64_t blocks = rows_tiles(a.channels, block, CV) * g.blocks_per_column;
  check_grid(blocks);
  if (g.int64_indices) {
    kernel64<<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.theta),
        as_params<scalar_t>(a.omega), a.outer, a.channels, g.blocks_per_column);
  } else {
    kernel32<<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.y), as_params<scalar_t>(a.theta),
        as_params<scalar_t>(a.omega), int32_t(a.outer), int32_t(a.channels), int32_t(g.blocks_per_column));
  }
  check_launch("lslu_forward_rows_kernel");
}

template <typename scalar_t, int STAGES, int CV>
void launch_backward_rows(const LsluArgs& a, cudaStream_t stream) {
  const dim3 block = rows_block(a.channels, CV);
  const int64_t blocks = rows_tiles(a.channels, block, CV) * a.partials;
  check_grid(blocks);
  const int64_t numel = a.outer * a.channels;
  using acc_t = acc_type<scalar_t>;
  if (needs_int64(numel, blocks * kThreads, a.force_int64)) {
    lslu_backward_rows_kernel<scalar_t, STAGES, CV, int64_t><<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.theta), as_params<scalar_t>(a.omega), static_cast<acc_t*>(a.dtheta_partial),
        static_cast<acc_t*>(a.domega_partial), a.outer, a.channels, a.partials);
  } else {
    lslu_backward_rows_kernel<scalar_t, STAGES, CV, int32_t><<<unsigned(blocks), block, 0, stream>>>(
        as_elements<scalar_t>(a.x), as_elements<scalar_t>(a.grad_output), as_elements<scalar_t>(a.grad_input),
        as_params<scalar_t>(a.theta), as_params<scalar_t>(a.omega), static_cast<acc_t*>(a.dtheta_partial),
        static_cast<acc_t*>(a.domega_partial), int32_t(a.outer), int32_t(a.channels), int32_t(a.partials));
  }
  check_launch("lslu_backward_rows_kernel");
}

template <typename scalar_t, int STAGES>
void forward_typed(const LsluArgs& a, cudaStream_t stream) {
  if (a.inner > 1) {
    constexpr int kVec = channel_pack<scalar_t>();
    const bool vectorized = a.inner % kVec == 0 && aligned_to(a.x, 16) && aligned_to(a.y, 16);
    if (vectorized) {
      launch_forward_channel<scalar_t, STAGES, kVec>(a, stream);
    } else {
      launch_forward_channel<scalar_t, STAGES, 1>(a, stream);
    }
  } else {
    constexpr int kCv = rows_pack<scalar_t, STAGES>();
    constexpr size_t kPackBytes = kCv * sizeof(scalar_t);
    const bool vectorized =
        kCv > 1 && a.channels % kCv == 0 && aligned_to(a.x, kPackBytes) && aligned_to(a.y, kPackBytes);
    if (vectorized) {
      launch_forward_rows<scalar_t, STAGES, kCv>(a, stream);
    } else {
      launch_forward_rows<scalar_t, STAGES, 1>(a, stream);
    }
  }
}

template <typename scalar_t, int STAGES>
void backward_typed(const LsluArgs& a, cudaStream_t stream) {
  if (a.partials < 1) throw std::invalid_argument("lslu_kernels: partials must be at least 1");
  if (a.inner > 1) {
    constexpr int kVec = channel_pack<scalar_t>();
    const bool vectorized = a.inner % kVec == 0 && aligned_to(a.x, 16) && aligned_to(a.grad_output, 16) &&
                            aligned_to(a.grad_input, 16);
    if (vectorized) {
      launch_backward_channel<scalar_t, STAGES, kVec>(a, stream);
    } else {
      launch_backward_channel<scalar_t, STAGES, 1>(a, stream);
    }
  } else {
    constexpr int kCv = rows_pack<scalar_t, STAGES>();
    constexpr size_t kPackBytes = kCv * sizeof(scalar_t);
    const bool vectorized = kCv > 1 && a.channels % kCv == 0 && aligned_to(a.x, kPackBytes) &&
                            aligned_to(a.grad_output, kPackBytes) && aligned_to(a.grad_input, kPackBytes);
    if (vectorized) {
      launch_backward_rows<scalar_t, STAGES, kCv>(a, stream);
    } else {
      launch_backward_rows<scalar_t, STAGES, 1>(a, stream);
    }
  }
}

// Backward blocks that one multiprocessor holds at once, for the int32 instantiation of the
// kernel that these sizes select with aligned pointers (the packed one where the sizes
// allow). The partials count rests on it, so it depends on the sizes alone, never on the
// pointers' alignment or the index type: those take the same count and summation order.
template <typename scalar_t, int STAGES>
int backward_resident_blocks(const LsluArgs& a) {
  if (a.inner > 1) {
    constexpr int kVec = channel_pack<scalar_t>();
    if (a.inner % kVec == 0) {
      return resident_blocks(lslu_backward_channel_kernel<scalar_t, STAGES, kVec, int32_t>,
                             channel_block_threads(a.outer * (a.inner / kVec)), 0);
    }
    return resident_blocks(lslu_backward_channel_kernel<scalar_t, STAGES, 1, int32_t>,
                           channel_block_threads(a.outer * a.inner), 0);
  }
  constexpr int kCv = rows_pack<scalar_t, STAGES>();
  if (kCv > 1 && a.channels % kCv == 0) {
    return resident_blocks(lslu_backward_rows_kernel<scalar_t, STAGES, kCv, int32_t>, kThreads, 0);
  }
  return resident_blocks(lslu_backward_rows_kernel<scalar_t, STAGES, 1, int32_t>, kThreads, 0);
}

// Entry points for dispatch_lslu (dispatch.h): one instantiation per stage count and dtype.
struct Forward {
  template <int STAGES, typename scalar_t>
  static void run(const LsluArgs& a, cudaStream_t stream) { forward_typed<scalar_t, STAGES>(a, stream); }
};
struct Backward {
  template <int STAGES, typename scalar_t>
  static void run(const LsluArgs& a, cudaStream_t stream) { backward_typed<scalar_t, STAGES>(a, stream); }
};
struct Resident {
  template <int STAGES, typename scalar_t>
  static void run(const LsluArgs& a, int* blocks) { *blocks = backward_resident_blocks<scalar_t, STAGES>(a); }
};

int64_t element_count(const LsluArgs& a) {
  if (a.outer <= 0 || a.channels <= 0 || a.inner <= 0) return 0;
  return a.outer * a.channels * a.inner;
}

// Backward of an empty tensor still writes every partial entry (launch.h): zeros.
void zero_partials(const LsluArgs& a, cudaStream_t stream) {
  if (a.partials <= 0 || a.stages <= 0 || a.channels <= 0) return;
  const size_t bytes = size_t(a.partials) * size_t(a.stages) * size_t(a.channels) *
                       (a.dtype == DType::Float64 ? sizeof(double) : sizeof(float));
  for (void* partial : {a.dtheta_partial, a.domega_partial}) {
    const cudaError_t err = cudaMemsetAsync(partial, 0, bytes, stream);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("lslu_kernels: zeroing the partial sums failed: ") +
                               cudaGetErrorString(err));
    }
  }
}

}  // namespace

int64_t lslu_backward_partials_cuda(DType dtype, int stages, int64_t outer, int64_t channels, int64_t inner,
                                    int multiprocessors) {
  if (outer <= 0 || channels <= 0 || inner <= 0) return 1;
  LsluArgs sizes{};
  sizes.dtype = dtype;
  sizes.stages = stages;
  sizes.outer = outer;
  sizes.channels = channels;
  sizes.inner = inner;
  int resident = 1;
  dispatch_lslu<Resident>(sizes, &resident);
  return grid::blocks_per_column(outer, channels, inner, resident, multiprocessors);
}

void lslu_forward_cuda(const LsluArgs& args, void* stream) {
  if (element_count(args) == 0) return;
  dispatch_lslu<Forward>(args, static_cast<cudaStream_t>(stream));
}

void lslu_backward_cuda(const LsluArgs& args, void* stream) {
  if (element_count(args) == 0) return zero_partials(args, static_cast<cudaStream_t>(stream));
  dispatch_lslu<Backward>(args, static_cast<cudaStream_t>(stream));
}

}  // namespace lslu_kernels
