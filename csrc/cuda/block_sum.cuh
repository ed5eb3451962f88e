// Fixed-order block sums of K per-thread sums (no atomics), so that partial sums are bitwise
// reproducible: the default sum policy of the CUDA engine (engine.cuh). PWLU brings its own
// (shared-memory bins, csrc/cuda/pwlu.cu).
#pragma once

#include "cuda/common.cuh"

namespace lslu_kernels {
namespace cuda_common {

// 1-D blocks (channel layout): each warp in shuffle order, then the warps in index order;
// thread k < K calls write(k, total of sum k).
template <int K, typename acc_t, typename Write>
__device__ __forceinline__ void block_sum_1d(acc_t (&v)[K], Write write) {
  __shared__ acc_t warp_sums[kWarps][K];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_sum_down(v[k], 1);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) warp_sums[warp][k] = v[k];
  }
  __syncthreads();
  if (threadIdx.x < K) {
    const int warps = blockDim.x / 32;
    acc_t total = acc_t(0);
    for (int w = 0; w < warps; ++w) total += warp_sums[w][threadIdx.x];
    write(int(threadIdx.x), total);
  }
}

// Rows blocks: thread (tx, ty) holds sums v[j][k] of channel tx * CPT + j of the tile; the
// block sums over ty, two sums at a time (bounded shared memory). When a row of the block is
// narrower than a warp, a warp holds 32 / blockDim.x rows: shuffles sum them first, leaving
// the sums in lanes < blockDim.x. Then every `span` consecutive threads form one group of
// rows, whose sums shared memory collects, and thread t < tile width adds channel t's groups
// in index order: write(t, k, total).
template <int K, int CPT, typename acc_t, typename Write>
__device__ __forceinline__ void block_sum_rows(acc_t (&v)[CPT][K], Write write) {
  constexpr int kBatch = 2;
  static_assert(K % kBatch == 0, "the rows block sum takes the sums two at a time");
  __shared__ acc_t group_sums[kBatch][kWarps][grid::kRowsTileChannels];
  const int tile_width = blockDim.x * CPT;
  const int thread = threadIdx.y * blockDim.x + threadIdx.x;
  const int span = blockDim.x < 32 ? 32 : blockDim.x;
  const int group = thread / span;
  const int groups = (blockDim.x * blockDim.y) / span;
  const bool holds_group_sum = thread % span < int(blockDim.x);
#pragma unroll
  for (int k0 = 0; k0 < K; k0 += kBatch) {
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const acc_t sum = warp_sum_down(v[j][k0 + b], blockDim.x);
        if (holds_group_sum) group_sums[b][group][threadIdx.x * CPT + j] = sum;
      }
    }
    __syncthreads();
    if (thread < tile_width) {
      acc_t totals[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) totals[b] = acc_t(0);
      for (int g = 0; g < groups; ++g) {
#pragma unroll
        for (int b = 0; b < kBatch; ++b) totals[b] += group_sums[b][g][thread];
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) write(thread, k0 + b, totals[b]);
    }
    if (k0 + kBatch < K) __syncthreads();  // the next batch overwrites group_sums
  }
}

// The default sum policy: K sums per channel of a thread in registers, summed by the block
// sums above. Slot j is what the op's backward adds element contributions of channel j to.
template <typename acc_t, int K, int CPT>
struct RegisterSums {
  acc_t v[CPT][K];

  template <typename Op, typename Walk>
  __device__ __forceinline__ RegisterSums(const Op&, const Walk&) {
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
#pragma unroll
      for (int k = 0; k < K; ++k) v[j][k] = acc_t(0);
    }
  }
  __device__ __forceinline__ acc_t (&operator[](int j))[K] { return v[j]; }

  template <typename Op>
  static size_t shared_bytes(const Op&, int /*columns*/) { return 0; }
  template <typename Op>
  static int64_t max_columns(const Op&) { return kUnboundedColumns; }

  template <typename Op, typename Walk>
  __device__ __forceinline__ void finish(const Op& op, const Walk& w) {
    const int64_t channels = int64_t(w.channels), part = int64_t(w.part);
    if constexpr (Walk::kRows) {
      const int64_t first = w.first_written();
      block_sum_rows<K, CPT>(v, [&](int t, int k, acc_t total) {
        if (first + t < channels) op.write_sum(part, channels, first + t, k, total);
      });
    } else {
      block_sum_1d<K>(v[0], [&](int k, acc_t total) { op.write_sum(part, channels, w.first_written(), k, total); });
    }
  }
};

}  // namespace cuda_common
}  // namespace lslu_kernels
