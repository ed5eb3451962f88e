// The per-channel elementwise engine of the CUDA backend, written once for every op.
//
// An op is a small functor beside its per-element math (csrc/lslu.h, pvlu.h, pwlu.h):
//
//   struct Op {
//     using scalar = ...;                      // the element type; acc_t = acc_type<scalar>
//     static constexpr int kSums;              // backward sums per channel (register sums)
//     static constexpr int kRowsPack;          // channels per thread of the rows layout
//     struct Channel;                          // one channel's parameters, in registers
//     Channel channel(index_t c, index_t channels) const;
//     acc_t forward(acc_t x, const Channel&) const;
//     acc_t backward(acc_t x, acc_t g, const Channel&, Slot& sums) const;  // adds to sums
//     void write_sum(int64_t part, int64_t channels, int64_t channel, int k, acc_t total) const;
//     template <int CPT> using Sums = ...;     // optional: a sum policy other than RegisterSums
//   };
//
// The engine owns the rest: the layout (channel: inner > 1, rows: inner == 1) and the
// decomposition of csrc/decomposition.h, the pack width (16 bytes where the sizes and every
// pointer's alignment allow it, else single elements), the index type (int32 where it is
// enough, KernelArgs::force_int64), the grid (whole waves from the occupancy, grid.h), the
// launch check and empty tensors; and the backward's fixed-order block sums (block_sum.cuh,
// or the op's own policy).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/block_sum.cuh"
#include "cuda/common.cuh"
#include "decomposition.h"
#include "grid.h"
#include "kernel_abi.h"
#include "switch.h"

namespace lslu_kernels {
namespace cuda_engine {

using namespace cuda_common;

// The op's sum policy: Op::Sums<CPT> where it names one, else RegisterSums of Op::kSums.
template <typename Op, int CPT, typename = void>
struct SumsOf {
  using type = RegisterSums<acc_type<typename Op::scalar>, Op::kSums, CPT>;
};
template <typename Op, int CPT>
struct SumsOf<Op, CPT, std::void_t<typename Op::template Sums<CPT>>> {
  using type = typename Op::template Sums<CPT>;
};

// The op's minimum resident blocks per SM for __launch_bounds__: Op::kForwardMinBlocksPerSM and
// Op::kBackwardMinBlocksPerSM where it names them, else kMinBlocksPerSM.
template <typename Op, typename = void>
struct MinBlocksOf {
  static constexpr int forward = kMinBlocksPerSM, backward = kMinBlocksPerSM;
};
template <typename Op>
struct MinBlocksOf<Op, std::void_t<decltype(Op::kForwardMinBlocksPerSM + Op::kBackwardMinBlocksPerSM)>> {
  static constexpr int forward = Op::kForwardMinBlocksPerSM, backward = Op::kBackwardMinBlocksPerSM;
};

// ---- the kernels: one forward and one backward for every op, layout, pack and index type ----

// Walks the thread's packs kUnroll at a time, so that several loads are in flight: load(u,
// offset) for each pack of a group, then compute(u, offset) for each.
// The rows layout computes an offset again rather than keep it (a multiply-add, where the
// channel layout's takes a division): fewer registers.
template <typename Walk, typename Load, typename Compute>
__device__ __forceinline__ void for_each_pack(const Walk& w, Load&& load, Compute&& compute) {
  using index_t = typename Walk::index_type;
  for (index_t first = w.begin; first < w.end; first += kUnroll * w.step) {
    index_t offsets[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t k = w.item(first, u);
      if (k < w.end) {
        offsets[u] = w.offset(k);
        load(u, offsets[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const index_t k = w.item(first, u);
      if (k < w.end) compute(u, Walk::kRows ? w.offset(k) : offsets[u]);
    }
  }
}

template <typename Op, typename Walk>
__global__ void __launch_bounds__(kThreads, MinBlocksOf<Op>::forward)
    forward_kernel(const Op op, const typename Op::scalar* __restrict__ x, typename Op::scalar* __restrict__ y,
                   const WalkSizes<typename Walk::index_type> sizes) {
  using scalar_t = typename Op::scalar;
  using pack_t = Pack<scalar_t, Walk::kPack>;
  constexpr int CPT = Walk::kChannelsPerThread;
  const Walk w(sizes, blockIdx.x, threadIdx.x, threadIdx.y, blockDim.x, blockDim.y);
  if (!w.active()) return;  // no reduction follows in forward
  typename Op::Channel p[CPT];
#pragma unroll
  for (int j = 0; j < CPT; ++j) p[j] = op.channel(w.channel(j), sizes.channels);
  pack_t xs[kUnroll];
  for_each_pack(
      w, [&](int u, auto offset) { xs[u] = *reinterpret_cast<const pack_t*>(x + offset); },
      [&](int u, auto offset) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < Walk::kPack; ++j) out.v[j] = from_acc<scalar_t>(op.forward(to_acc(xs[u].v[j]), p[j % CPT]));
        store_pack(y + offset, out);
      });
}

template <typename Op, typename Walk>
__global__ void __launch_bounds__(kThreads, MinBlocksOf<Op>::backward)
    backward_kernel(const Op op, const typename Op::scalar* __restrict__ x,
                    const typename Op::scalar* __restrict__ grad_output, typename Op::scalar* __restrict__ grad_input,
                    const WalkSizes<typename Walk::index_type> sizes) {
  using scalar_t = typename Op::scalar;
  using index_t = typename Walk::index_type;
  using pack_t = Pack<scalar_t, Walk::kPack>;
  constexpr int CPT = Walk::kChannelsPerThread;
  const Walk w(sizes, blockIdx.x, threadIdx.x, threadIdx.y, blockDim.x, blockDim.y);
  // Every thread takes part in the block sum; one past the last channel reads channel 0's
  // parameters and visits nothing.
  typename Op::Channel p[CPT];
#pragma unroll
  for (int j = 0; j < CPT; ++j) p[j] = op.channel(w.active() ? w.channel(j) : index_t(0), sizes.channels);
  typename SumsOf<Op, CPT>::type sums(op, w);
  pack_t xs[kUnroll], gs[kUnroll];
  for_each_pack(
      w,
      [&](int u, auto offset) {
        xs[u] = *reinterpret_cast<const pack_t*>(x + offset);
        gs[u] = *reinterpret_cast<const pack_t*>(grad_output + offset);
      },
      [&](int u, auto offset) {
        pack_t out;
#pragma unroll
        for (int j = 0; j < Walk::kPack; ++j) {
          out.v[j] = from_acc<scalar_t>(op.backward(to_acc(xs[u].v[j]), to_acc(gs[u].v[j]), p[j % CPT], sums[j % CPT]));
        }
        store_pack(grad_input + offset, out);
      });
  sums.finish(op, w);
}

// ---- launchers ----

inline bool empty(const KernelArgs& a) { return a.outer <= 0 || a.channels <= 0 || a.inner <= 0; }

template <typename Op, int CPT>
using SumsType = typename SumsOf<Op, CPT>::type;

// What one launch of one layout and pack runs with.
template <typename Op, bool ROWS, int PACK>
struct Launch {
  static constexpr int kPack = PACK;
  static constexpr int kChannelsPerThread = ROWS ? PACK : 1;
  template <typename index_t>
  using Walk = std::conditional_t<ROWS, RowsWalk<PACK, index_t>, ChannelWalk<PACK, index_t>>;
  template <typename index_t>
  static constexpr auto forward_kernel_of() { return &forward_kernel<Op, Walk<index_t>>; }
  template <typename index_t>
  static constexpr auto backward_kernel_of() { return &backward_kernel<Op, Walk<index_t>>; }

  static BlockShape forward_block(const KernelArgs& a) {
    return block_shape(ROWS, PACK, a.outer, a.channels, a.inner, kUnboundedColumns);
  }
  static BlockShape backward_block(const Op& op, const KernelArgs& a) {
    return block_shape(ROWS, PACK, a.outer, a.channels, a.inner, SumsType<Op, kChannelsPerThread>::max_columns(op));
  }
  static size_t backward_shared(const Op& op, BlockShape block) {
    return SumsType<Op, kChannelsPerThread>::shared_bytes(op, block.threads() * kChannelsPerThread);
  }
};

template <typename index_t>
WalkSizes<index_t> walk_sizes(const KernelArgs& a, int64_t blocks_per_column) {
  return WalkSizes<index_t>{index_t(a.outer), index_t(a.channels), index_t(a.inner), index_t(blocks_per_column)};
}

inline unsigned grid_blocks(int64_t blocks) {
  // The 1-D grid limit is 2^31 - 1.
  if (blocks < 1 || blocks > int64_t(INT32_MAX)) {
    throw std::runtime_error("lslu_kernels: tensor too large for one CUDA grid (" + std::to_string(blocks) +
                             " blocks)");
  }
  return unsigned(blocks);
}

template <typename L, typename Op>
void launch_forward(const Op& op, const KernelArgs& a, cudaStream_t stream) {
  using scalar_t = typename Op::scalar;
  const BlockShape block = L::forward_block(a);
  const int multiprocessors = current_multiprocessors();
  const bool rows = a.inner == 1;
  const int64_t columns = grid_columns(rows, L::kPack, a.channels, block);
  const auto per_column = [&](auto* kernel) {
    return grid::blocks_per_column(a.outer, a.channels, a.inner, resident_blocks(kernel, block.threads(), 0),
                                   multiprocessors);
  };
  int64_t blocks_per_column = per_column(L::template forward_kernel_of<int32_t>());
  const bool int64 = needs_int64(a.outer * a.channels * a.inner, columns * blocks_per_column * block.threads(),
                                 a.force_int64);
  // Sized again for the int64 instantiation; int64 indices stay right for any grid.
  if (int64) blocks_per_column = per_column(L::template forward_kernel_of<int64_t>());
  const unsigned blocks = grid_blocks(columns * blocks_per_column);
  LSLU_INDEX_SWITCH(int64, index_t, [&] {
    L::template forward_kernel_of<index_t>()<<<blocks, dim3(block.x, block.y), 0, stream>>>(
        op, static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.y),
        walk_sizes<index_t>(a, blocks_per_column));
  });
  check_launch("forward_kernel");
}

template <typename L, typename Op>
void launch_backward(const Op& op, const KernelArgs& a, cudaStream_t stream) {
  using scalar_t = typename Op::scalar;
  const BlockShape block = L::backward_block(op, a);
  const size_t shared = L::backward_shared(op, block);
  const int64_t columns = grid_columns(a.inner == 1, L::kPack, a.channels, block);
  const unsigned blocks = grid_blocks(columns * a.partials);
  LSLU_INDEX_SWITCH(needs_int64(a.outer * a.channels * a.inner, int64_t(blocks) * block.threads(), a.force_int64),
                    index_t, [&] {
    L::template backward_kernel_of<index_t>()<<<blocks, dim3(block.x, block.y), shared, stream>>>(
        op, static_cast<const scalar_t*>(a.x), static_cast<const scalar_t*>(a.grad_output),
        static_cast<scalar_t*>(a.grad_input), walk_sizes<index_t>(a, a.partials));
  });
  check_launch("backward_kernel");
}

// Calls body.template operator()<Launch<Op, rows, pack>>() for the layout and pack these sizes
// and (where `pointers` is not null) these pointers' alignment allow.
template <typename Op, typename Body>
auto with_launch(const KernelArgs& a, std::initializer_list<const void*> pointers, Body body) {
  using scalar_t = typename Op::scalar;
  constexpr int kChannelPack = int(16 / sizeof(scalar_t));
  constexpr int kRowsPack = Op::kRowsPack;
  const auto aligned = [&](size_t bytes) {
    for (const void* p : pointers) {
      if (!aligned_to(p, bytes)) return false;
    }
    return true;
  };
  if (a.inner > 1) {
    if (a.inner % kChannelPack == 0 && aligned(16)) return body(Launch<Op, false, kChannelPack>{});
    return body(Launch<Op, false, 1>{});
  }
  if (kRowsPack > 1 && a.channels % kRowsPack == 0 && aligned(kRowsPack * sizeof(scalar_t))) {
    return body(Launch<Op, true, kRowsPack>{});
  }
  return body(Launch<Op, true, 1>{});
}

template <typename Op>
void forward(const Op& op, const KernelArgs& a, void* stream) {
  if (empty(a)) return;
  with_launch<Op>(a, {a.x, a.y}, [&](auto launch) {
    launch_forward<decltype(launch)>(op, a, static_cast<cudaStream_t>(stream));
  });
}

template <typename Op>
void backward(const Op& op, const KernelArgs& args, void* stream) {
  if (args.partials < 1) throw std::invalid_argument("lslu_kernels: partials must be at least 1");
  if (args.channels <= 0) return;
  KernelArgs a = args;
  // No elements: the blocks of a rows launch with no rows write every partial entry, zeros.
  if (empty(a)) a.outer = 0, a.inner = 1;
  with_launch<Op>(a, {a.x, a.grad_output, a.grad_input}, [&](auto launch) {
    launch_backward<decltype(launch)>(op, a, static_cast<cudaStream_t>(stream));
  });
}

// Backward blocks per column for these sizes: from the occupancy of the int32 instance of the
// kernel that they select with aligned pointers (the packed one where the sizes allow). It
// depends on the sizes alone, never on the pointers' alignment or the index type: those take
// the same count. (Not the same summation order: a packed and a single-element launch give a
// thread different elements, so an input at an address that is not 16-byte aligned may round
// its parameter-gradient sums differently from an aligned copy; each is bitwise reproducible.)
template <typename Op>
int64_t backward_partials(const Op& op, const KernelArgs& a, int multiprocessors) {
  if (empty(a)) return 1;
  return with_launch<Op>(a, {}, [&](auto launch) {
    using L = decltype(launch);
    const BlockShape block = L::backward_block(op, a);
    const int resident =
        resident_blocks(L::template backward_kernel_of<int32_t>(), block.threads(), L::backward_shared(op, block));
    return grid::blocks_per_column(a.outer, a.channels, a.inner, resident, multiprocessors);
  });
}

// The entry points of an op (kernel_abi.h). Visit::visit(args, body) calls body(op) with the
// op instance for args' dtype and size.
template <typename Visit>
struct EntryPoints {
  static void forward(const KernelArgs& a, void* stream) {
    Visit::visit(a, [&](const auto& op) { cuda_engine::forward(op, a, stream); });
  }
  static void backward(const KernelArgs& a, void* stream) {
    Visit::visit(a, [&](const auto& op) { cuda_engine::backward(op, a, stream); });
  }
  static int64_t backward_partials(const KernelArgs& a, int multiprocessors) {
    int64_t partials = 1;
    Visit::visit(a, [&](const auto& op) { partials = cuda_engine::backward_partials(op, a, multiprocessors); });
    return partials;
  }
  static constexpr CudaEntryPoints table() { return {&forward, &backward, &backward_partials}; }
};

}  // namespace cuda_engine
}  // namespace lslu_kernels
