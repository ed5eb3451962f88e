// The CPU engine: the work split, the OpenMP loops over it and the lane sums, written once for
// every op (csrc/cpu/<op>.cpp); each op keeps its element loops, compiled once per
// instruction-set level (isa.h).
//
// Determinism: backward work is cut into `partials` fixed parts that depend only on the sizes;
// each part sums its parameter gradients in a fixed order into its own row of the partial
// buffers, so the thread count and the scheduling change nothing in the result.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "../kernel_abi.h"
#include "isa.h"

// For lambdas in work functions: inlined into each level's instance like their caller, so that
// all of a work function is compiled for that level.
#define LSLU_CPU_LAMBDA __attribute__((always_inline))

namespace lslu_kernels {
namespace cpu_engine {

// Elements handled together: the lane loops have this many independent iterations, which the
// compiler turns into vector instructions.
constexpr int64_t kLanes = 16;
// Long rows are cut into chunks of this many elements, so that few long rows still spread
// over every thread.
constexpr int64_t kChunk = 1 << 14;
// At most this many partial rows (and fixed parts) per backward call of the item split.
constexpr int64_t kMaxPartials = 256;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A call's element pointers in scalar_t (parameters and partial sums: through the op's functor).
template <typename scalar_t>
struct Tensors {
  const scalar_t* x;
  scalar_t* y;
  const scalar_t* grad_output;
  scalar_t* grad_input;
  LSLU_CPU_INLINE explicit Tensors(const KernelArgs& args)
      : x(static_cast<const scalar_t*>(args.x)),
        y(static_cast<scalar_t*>(args.y)),
        grad_output(static_cast<const scalar_t*>(args.grad_output)),
        grad_input(static_cast<scalar_t*>(args.grad_input)) {}
};

inline bool empty(const KernelArgs& a) { return a.outer <= 0 || a.channels <= 0 || a.inner <= 0; }

// The range [begin, end) of `n` items that the p-th of `parts` ranges covers.
inline void range_of(int64_t p, int64_t parts, int64_t n, int64_t& begin, int64_t& end) {
  begin = p * n / parts;
  end = (p + 1) * n / parts;
}

// Work items of a call: (row, chunk of the row) for rows of `inner` elements of one channel
// (row = o * channels + c), or whole rows of `channels` elements, one per channel, when
// inner == 1.
inline int64_t chunks_per_row(int64_t inner) { return ceil_div(inner, kChunk); }
inline int64_t work_items(int64_t outer, int64_t channels, int64_t inner) {
  return inner > 1 ? outer * channels * chunks_per_row(inner) : outer;
}

// Backward parts of the item split: one per item, at most kMaxPartials.
inline int64_t item_partials(const KernelArgs& a) {
  return std::max<int64_t>(1, std::min(work_items(a.outer, a.channels, a.inner), kMaxPartials));
}

// Calls chunk(offset, n, c) for each item in [first, last) of the inner > 1 split: n elements
// of channel c from element offset.
template <typename Chunk>
LSLU_CPU_INLINE void for_each_chunk(const KernelArgs& a, int64_t first, int64_t last, Chunk&& chunk) {
  const int64_t chunks = chunks_per_row(a.inner);
  for (int64_t item = first; item < last; ++item) {
    const int64_t row = item / chunks, c = row % a.channels;
    const int64_t begin = (item % chunks) * kChunk, end = std::min(begin + kChunk, a.inner);
    chunk(row * a.inner + begin, end - begin, c);
  }
}

// A work function as the parallel loops below take it: Work<&f>::run(args...) calls f(args...),
// inlined (f is LSLU_CPU_INLINE) into each instruction-set level's instance (isa.h).
template <auto F>
struct Work {
  template <typename... Args>
  static LSLU_CPU_INLINE void run(Args&&... args) {
    F(std::forward<Args>(args)...);
  }
};

// Work::run(extra..., first, last) over `items` items, one contiguous range per thread
// (for forward, which sums nothing: any split gives the same result).
template <typename Work, typename... Extra>
void parallel_ranges(int64_t items, int threads, const Extra&... extra) {
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(items, threads));
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t piece = 0; piece < pieces; ++piece) {
    int64_t first, last;
    range_of(piece, pieces, items, first, last);
    run_at_level<Work>(isa, extra..., first, last);
  }
}

// Work::run(extra..., part) for every one of `parts` fixed parts.
template <typename Work, typename... Extra>
void parallel_parts(int64_t parts, int threads, const Extra&... extra) {
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t part = 0; part < parts; ++part) run_at_level<Work>(isa, extra..., part);
}

// A backward part's partial rows, located through the op's functor (Op::partial_sum, the
// layout the CUDA engine writes through write_sum): sum k of channel c at row[k][c], for the
// ops whose partial rows run over the channels (LSLU, PVLU). Zeroed here: the part adds into them.
template <typename Op>
struct PartialRows {
  using acc_t = typename Op::acc_t;
  acc_t* row[Op::kSums];
  LSLU_CPU_INLINE PartialRows(const Op& op, int64_t part, int64_t channels) {
    for (int k = 0; k < Op::kSums; ++k) {
      row[k] = &op.partial_sum(part, channels, 0, k);
      std::fill(row[k], row[k] + channels, acc_t(0));
    }
  }
};

// A block of COUNT (at most kLanes; 0: `count`, known at run time) consecutive elements in
// acc_t: loaded (converted) into a local array before an op's arithmetic and stored (rounded)
// from one after it. As separate loops over pointers that alias nothing in the block, the
// conversions vectorize at full width and the arithmetic between them stays in registers
// (the rounding loop is kept rolled: the vectorizer turns its NaN branch into a select, which
// the fully unrolled form would keep as 16 scalar branches).
template <int64_t COUNT = kLanes, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void load_lanes(const scalar_t* __restrict__ p, acc_t (&out)[kLanes], int64_t count = COUNT) {
  const int64_t n = COUNT > 0 ? COUNT : count;
  for (int64_t l = 0; l < n; ++l) out[l] = to_acc(p[l]);
}
template <int64_t COUNT = kLanes, typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void store_lanes(const acc_t (&in)[kLanes], scalar_t* __restrict__ p, int64_t count = COUNT) {
  const int64_t n = COUNT > 0 ? COUNT : count;
#pragma GCC unroll 1
  for (int64_t l = 0; l < n; ++l) p[l] = from_acc<scalar_t>(in[l]);
}

// K sums per lane of kLanes; total(k) adds sum k's lanes in index order.
template <typename acc_t, int K>
struct LaneSums {
  acc_t v[K][kLanes] = {};
  LSLU_CPU_INLINE acc_t total(int k) const {
    acc_t sum = 0;
    for (int64_t l = 0; l < kLanes; ++l) sum += v[k][l];
    return sum;
  }
};

}  // namespace cpu_engine
}  // namespace lslu_kernels
