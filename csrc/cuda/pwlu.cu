// PWLU on CUDA (SPEC.md 1.3 and 3): the engine (engine.cuh) with PwluOp (pwlu.h) and the sum
// policy below, one instance per dtype.
//
// Backward sums without atomics, in a fixed order: each thread keeps, for each of its
// channels, a private column of N + 5 sums in shared memory (N + 1 bins of dL/dpoints, then
// the four scalar parameters, which live in registers until the end). Columns are
// interleaved (row r of column c at r * columns + c), so a warp's read-modify-writes of its
// lanes' bins never conflict whatever bins they hit, and no two threads ever write the same
// address. At the end the block adds the columns of each channel in a fixed order (channel
// layout: lanes in order, then a shuffle tree; rows layout: threadIdx.y in order) and writes
// one partial row per block. The block is sized so that the columns take at most kSumsBytes
// (48 KiB, no opt-in needed): 256 threads up to N = 43 in float32, 160 at N = 64; 64 threads
// at N = 64 in float64.
#include <string>

#include "cuda/engine.cuh"
#include "pwlu.h"

namespace lslu_kernels {
namespace {

using namespace cuda_common;

// Shared memory for the backward sums of one block.
constexpr int kSumsBytes = 48 * 1024;

// The block's column sums: row r of column c at sums[r * columns + c].
template <typename acc_t>
__device__ __forceinline__ acc_t* column_sums() {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return reinterpret_cast<acc_t*>(shared_bytes);
}

template <typename acc_t, int CPT>
struct PwluBinSums {
  static constexpr int kScalarSums = 4;
  // Channel j of thread t: column j * threads + t, bins in shared memory, scalars in registers.
  struct Slot {
    acc_t* column;
    int columns;
    acc_t scalars[kScalarSums];
    __device__ __forceinline__ void add(const PwluGrad<acc_t>& d) {
      column[d.bin * columns] += d.lower;
      column[(d.bin + 1) * columns] += d.upper;
      scalars[0] += d.left_bound;
      scalars[1] += d.right_bound;
      scalars[2] += d.left_slope;
      scalars[3] += d.right_slope;
    }
  };
  Slot slot[CPT];
  acc_t* sums;
  int threads, thread, columns, bins;

  template <typename Op, typename Walk>
  __device__ __forceinline__ PwluBinSums(const Op& op, const Walk&)
      : sums(column_sums<acc_t>()),
        threads(blockDim.x * blockDim.y),
        thread(threadIdx.y * blockDim.x + threadIdx.x),
        columns(threads * CPT),
        bins(op.intervals + 1) {
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
      slot[j].column = sums + j * threads + thread;
      slot[j].columns = columns;
      for (int r = 0; r < bins; ++r) slot[j].column[r * columns] = acc_t(0);
#pragma unroll
      for (int k = 0; k < kScalarSums; ++k) slot[j].scalars[k] = acc_t(0);
    }
  }
  __device__ __forceinline__ Slot& operator[](int j) { return slot[j]; }

  template <typename Op>
  static size_t shared_bytes(const Op& op, int columns) {
    return size_t(op.sum_count()) * size_t(columns) * sizeof(acc_t);
  }
  // Columns of backward sums that fit kSumsBytes.
  template <typename Op>
  static int64_t max_columns(const Op& op) {
    return kSumsBytes / int64_t(op.sum_count() * sizeof(acc_t));
  }

  template <typename Op, typename Walk>
  __device__ __forceinline__ void finish(const Op& op, const Walk& w) {
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
#pragma unroll
      for (int k = 0; k < kScalarSums; ++k) slot[j].column[(bins + k) * columns] = slot[j].scalars[k];
    }
    __syncthreads();
    const int sum_rows = op.sum_count();
    const int64_t channels = int64_t(w.channels), part = int64_t(w.part);
    if constexpr (Walk::kRows) {
      // Output o = (row r, channel j of column tx): the sum over ty, in order. tx varies
      // fastest over o, so that consecutive threads read consecutive addresses.
      const int tile_width = blockDim.x * CPT;
      const int outputs = sum_rows * tile_width;
      for (int o = thread; o < outputs; o += threads) {
        const int tx = o % blockDim.x;
        const int j = (o / blockDim.x) % CPT;
        const int r = o / tile_width;
        const int64_t channel = w.first_written() + tx * CPT + j;
        if (channel < channels) {
          acc_t total = acc_t(0);
          for (int ty = 0; ty < int(blockDim.y); ++ty) total += sums[r * columns + j * threads + ty * blockDim.x + tx];
          op.write_sum(part, channels, channel, r, total);
        }
      }
    } else {
      // Row r of the block total: warp r % warps adds it, lane l the columns l, l + 32, ... in
      // order, then the lanes in shuffle order.
      const int lane = threadIdx.x % 32;
      const int warps = blockDim.x / 32;
      for (int r = threadIdx.x / 32; r < sum_rows; r += warps) {
        acc_t total = acc_t(0);
        for (int c = lane; c < columns; c += 32) total += sums[r * columns + c];
        total = warp_sum_down(total, 1);
        if (lane == 0) op.write_sum(part, channels, w.first_written(), r, total);
      }
    }
  }
};

template <typename scalar_t>
struct PwluCudaOp : PwluOp<scalar_t> {
  using PwluOp<scalar_t>::PwluOp;
  template <int CPT>
  using Sums = PwluBinSums<acc_type<scalar_t>, CPT>;
};

struct PwluVisit {
  template <typename Body>
  static void visit(const KernelArgs& a, Body&& body) {
    if (a.size < 1 || a.size > kPwluMaxIntervals) {
      throw std::invalid_argument("pwlu: the cuda backend serves 1 to " + std::to_string(kPwluMaxIntervals) +
                                  " intervals, got N = " + std::to_string(a.size));
    }
    LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] { body(PwluCudaOp<scalar_t>(a)); });
  }
};

}  // namespace

const CudaEntryPoints pwlu_cuda = cuda_engine::EntryPoints<PwluVisit>::table();

}  // namespace lslu_kernels
