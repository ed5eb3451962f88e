// PWLU on CPU tensors: the per-element math of pwlu.h in loops spread over OpenMP threads;
// the work functions are compiled once per instruction-set level and run at the chosen one
// (isa.h).
//
// Backward is cut into units that depend only on the sizes (never on the thread count):
// - inner > 1 (NCHW): a unit is one channel and one of `partials` equal ranges of that
//   channel's outer * inner elements; it writes row (part, channel) of the partial buffers.
// - inner == 1 (channels-last, (B, L, C)): a unit is a tile of up to kTileChannels
//   channels and one of `partials` ranges of rows; it writes rows (part, tile's channels).
// Each unit sums in element order into local arrays and then writes every entry it owns,
// so every entry of the partial buffers is written exactly once and the result is the
// same for any thread count and schedule.
//
// The per-element work runs on blocks of kLanes elements: one loop computes the outputs
// and the contributions (vectorizable, but for the table reads), a second adds the
// contributions to the points bins. Along a channel, element l of each block adds into
// its own copy l of the bins, so consecutive elements, which often share a bin, never wait
// on each other's read-modify-write; the copies are summed in a fixed order at the end.
// The four scalar parameter gradients are compensated (Kahan) sums (see kahan_add; this
// relies on the default floating-point semantics: no -ffast-math).
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../pwlu.h"
#include "../switch.h"
#include "engine.h"
#include "isa.h"

namespace lslu_kernels {
namespace {

using namespace cpu_engine;

// Backward: about this many units per call when the sizes allow, each of at least
// kMinUnitElements elements.
constexpr int64_t kTargetUnits = 128;
constexpr int64_t kMinUnitElements = 1 << 14;
// Channels of one backward unit in the inner == 1 layout.
constexpr int64_t kTileChannels = 64;
constexpr int kBins = kPwluMaxIntervals + 1;
// Backward sums run in two levels: over runs of this many elements of a channel (rows of
// the inner == 1 layout), then over the runs.
constexpr int64_t kFlushElements = 1024;
constexpr int64_t kFlushRows = 64;

// Backward columns: channels (inner > 1) or tiles of kTileChannels channels (inner == 1).
int64_t backward_columns(int64_t channels, int64_t inner) {
  return inner > 1 ? channels : ceil_div(channels, kTileChannels);
}

void check_intervals(int intervals) {
  if (intervals < 1 || intervals > kPwluMaxIntervals) {
    throw std::invalid_argument("pwlu: the cpu backend serves 1 to " + std::to_string(kPwluMaxIntervals) +
                                " intervals, got N = " + std::to_string(intervals));
  }
}

// Every channel's parameters, for the layouts that change channel from element to element.
template <typename acc_t>
struct ChannelArrays {
  const acc_t *left_bound, *right_bound, *left_slope, *right_slope;
  std::vector<acc_t> width, first, last;

  explicit ChannelArrays(const KernelArgs& a)
      : left_bound(static_cast<const acc_t*>(a.params[1])),
        right_bound(static_cast<const acc_t*>(a.params[2])),
        left_slope(static_cast<const acc_t*>(a.params[3])),
        right_slope(static_cast<const acc_t*>(a.params[4])),
        width(a.channels),
        first(a.channels),
        last(a.channels) {
    const PwluOp<acc_t> op(a);  // acc_t: float or double, PwluOp's own compute type
    for (int64_t c = 0; c < a.channels; ++c) {
      const PwluChannel<acc_t> p = op.channel(c, a.channels).p;
      width[c] = p.width;
      first[c] = p.first;
      last[c] = p.last;
    }
  }

  LSLU_CPU_INLINE PwluChannel<acc_t> operator[](int64_t c) const {
    return PwluChannel<acc_t>{left_bound[c], right_bound[c], left_slope[c], right_slope[c],
                              width[c],      first[c],       last[c]};
  }
};

// Where `n` consecutive elements fall (u, idx) and the two points around each (lower, upper):
// locating vectorizes, only the table reads are scalar. channel_of(l) gives element l's
// parameters, row_of(l) its row of points.
template <typename acc_t, typename scalar_t, typename ChannelOf, typename RowOf>
LSLU_CPU_INLINE void locate_lanes(const scalar_t* x, int64_t n, ChannelOf channel_of, RowOf row_of, int intervals,
                                  acc_t (&u)[kLanes], int (&idx)[kLanes], acc_t (&lower)[kLanes],
                                  acc_t (&upper)[kLanes]) {
  for (int64_t l = 0; l < n; ++l) {
    const PwluLocation<acc_t> at = pwlu_locate(to_acc(x[l]), channel_of(l), intervals);
    u[l] = at.u;
    idx[l] = at.idx;
  }
  for (int64_t l = 0; l < n; ++l) {
    const acc_t* row = row_of(l);
    lower[l] = row[idx[l]];
    upper[l] = row[idx[l] + 1];
  }
}

// Forward over `lanes` <= kLanes consecutive elements (see locate_lanes). FULL: lanes ==
// kLanes, a constant trip count (no remainder loops; x is read twice rather than copied,
// which the compiler would turn into a memcpy call).
template <bool FULL, typename acc_t, typename scalar_t, typename ChannelOf, typename RowOf>
LSLU_CPU_INLINE void forward_lanes(const scalar_t* x, scalar_t* y, int64_t lanes, ChannelOf channel_of, RowOf row_of,
                                   int intervals) {
  const int64_t n = FULL ? kLanes : lanes;
  acc_t u[kLanes], lower[kLanes], upper[kLanes];
  int idx[kLanes];
  locate_lanes(x, n, channel_of, row_of, intervals, u, idx, lower, upper);
  for (int64_t l = 0; l < n; ++l) {
    y[l] = from_acc<scalar_t>(
        pwlu_forward_at(to_acc(x[l]), channel_of(l), PwluLocation<acc_t>{u[l], idx[l]}, lower[l], upper[l]));
  }
}

template <typename acc_t, typename scalar_t, typename ChannelOf, typename RowOf>
LSLU_CPU_INLINE void forward_block(const scalar_t* x, scalar_t* y, int64_t lanes, ChannelOf channel_of, RowOf row_of,
                                   int intervals) {
  if (lanes == kLanes) {
    forward_lanes<true, acc_t>(x, y, lanes, channel_of, row_of, intervals);
  } else {
    forward_lanes<false, acc_t>(x, y, lanes, channel_of, row_of, intervals);
  }
}

// Forward of work items [first, last): (row, chunk of the row) for inner > 1, rows for
// inner == 1 (whose channels' parameters come in `params`).
template <typename scalar_t>
LSLU_CPU_INLINE void forward_items(const KernelArgs& a, const ChannelArrays<acc_type<scalar_t>>* params, int64_t first,
                                   int64_t last) {
  using acc_t = acc_type<scalar_t>;
  const Tensors<scalar_t> t(a);
  const scalar_t* x = t.x;
  scalar_t* y = t.y;
  const PwluOp<scalar_t> op(a);
  const acc_t* points = op.points;
  const int64_t C = a.channels;
  const int N = a.size;
  if (a.inner > 1) {
    for_each_chunk(a, first, last, [&](int64_t offset, int64_t n, int64_t c) LSLU_CPU_LAMBDA {
      const auto channel = op.channel(c, C);
      const PwluChannel<acc_t> p = channel.p;
      const acc_t* table = channel.row;
      const auto channel_of = [p](int64_t) { return p; };  // by value: loads from p would stop if-conversion
      const auto row_of = [&](int64_t) { return table; };
      for (int64_t i = 0; i < n; i += kLanes) {
        forward_block<acc_t>(x + offset + i, y + offset + i, std::min(kLanes, n - i), channel_of, row_of, N);
      }
    });
  } else {
    // inner == 1: rows of C elements, one per channel.
    for (int64_t o = first; o < last; ++o) {
      for (int64_t c = 0; c < C; c += kLanes) {
        const auto channel_of = [&](int64_t l) { return (*params)[c + l]; };
        const auto row_of = [&](int64_t l) { return points + (c + l) * (N + 1); };
        forward_block<acc_t>(x + o * C + c, y + o * C + c, std::min(kLanes, C - c), channel_of, row_of, N);
      }
    }
  }
}

// Compensated (Kahan) addition of v to sum: the true sum is sum - comp. The scalar
// parameter gradients are sums whose terms largely cancel (both signs of g, and of slopes),
// so that plain float32 sums would lose digits of the (small) result to their (large)
// running partial sums; compensated, the error stays near one rounding of the result.
template <typename acc_t>
LSLU_CPU_INLINE void kahan_add(acc_t& sum, acc_t& comp, acc_t v) {
  const acc_t y = v - comp;
  const acc_t t = sum + y;
  comp = (t - sum) - y;
  sum = t;
}

// Backward over `lanes` <= kLanes consecutive elements (see forward_lanes): writes dx,
// adds element l's four scalar contributions to the compensated sums (sums, comps)[k *
// sums_stride + l] and returns its points contributions in bin, lower, upper.
template <bool FULL, typename scalar_t, typename acc_t, typename ChannelOf, typename RowOf>
LSLU_CPU_INLINE void backward_lanes(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t lanes,
                                    ChannelOf channel_of, RowOf row_of, int intervals, acc_t inv_intervals, acc_t* sums,
                                    acc_t* comps, int64_t sums_stride, int (&bin)[kLanes], acc_t (&lower)[kLanes],
                                    acc_t (&upper)[kLanes]) {
  const int64_t n = FULL ? kLanes : lanes;
  acc_t u[kLanes], point_lower[kLanes], point_upper[kLanes];
  int idx[kLanes];
  locate_lanes(x, n, channel_of, row_of, intervals, u, idx, point_lower, point_upper);
  acc_t scalars[4][kLanes];  // local first: stores to dx could alias sums, which stops the vectorizer
  for (int64_t l = 0; l < n; ++l) {
    PwluGrad<acc_t> d;
    dx[l] = from_acc<scalar_t>(pwlu_backward_at(to_acc(x[l]), to_acc(g[l]), channel_of(l),
                                                PwluLocation<acc_t>{u[l], idx[l]}, point_lower[l], point_upper[l],
                                                intervals, inv_intervals, d));
    bin[l] = d.bin;
    lower[l] = d.lower;
    upper[l] = d.upper;
    scalars[0][l] = d.left_bound;
    scalars[1][l] = d.right_bound;
    scalars[2][l] = d.left_slope;
    scalars[3][l] = d.right_slope;
  }
  for (int k = 0; k < 4; ++k) {
    for (int64_t l = 0; l < n; ++l) kahan_add(sums[k * sums_stride + l], comps[k * sums_stride + l], scalars[k][l]);
  }
}

template <typename scalar_t, typename acc_t, typename ChannelOf, typename RowOf>
LSLU_CPU_INLINE void backward_block(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t lanes,
                                    ChannelOf channel_of, RowOf row_of, int intervals, acc_t inv_intervals, acc_t* sums,
                                    acc_t* comps, int64_t sums_stride, int (&bin)[kLanes], acc_t (&lower)[kLanes],
                                    acc_t (&upper)[kLanes]) {
  if (lanes == kLanes) {
    backward_lanes<true>(x, g, dx, lanes, channel_of, row_of, intervals, inv_intervals, sums, comps, sums_stride, bin,
                         lower, upper);
  } else {
    backward_lanes<false>(x, g, dx, lanes, channel_of, row_of, intervals, inv_intervals, sums, comps, sums_stride, bin,
                          lower, upper);
  }
}

// Sums of one channel's contributions: points bins over a run of at most kFlushElements
// elements, kLanes copies of each (see the top of the file), which flush() adds lane by
// lane to the unit's totals (two levels keep float32 sums accurate over long units); the
// scalar parameters' compensated sums over the whole unit, one per lane.
template <typename acc_t>
struct LaneBins {
  int bins_used;    // intervals + 1
  int64_t lanes;    // bins[0, lanes) are in use (zeroed when first needed: short rows use few)
  acc_t bins[kLanes][kBins];
  acc_t scalars[4][kLanes], comps[4][kLanes];

  LSLU_CPU_INLINE explicit LaneBins(int intervals) : bins_used(intervals + 1), lanes(0) {
    for (int k = 0; k < 4; ++k) {
      std::fill(scalars[k], scalars[k] + kLanes, acc_t(0));
      std::fill(comps[k], comps[k] + kLanes, acc_t(0));
    }
  }

  // Makes lanes [0, n) ready for use.
  LSLU_CPU_INLINE void use(int64_t n) {
    for (; lanes < std::min(n, kLanes); ++lanes) std::fill(bins[lanes], bins[lanes] + bins_used, acc_t(0));
  }

  LSLU_CPU_INLINE void flush(acc_t* total_bins) {
    for (int b = 0; b < bins_used; ++b) {
      acc_t sum = 0;
      for (int64_t l = 0; l < lanes; ++l) sum += bins[l][b];
      total_bins[b] += sum;
    }
    lanes = 0;
  }

  // Scalar parameter k's sum over the lanes (compensated, in lane order).
  LSLU_CPU_INLINE acc_t scalar_total(int k) const {
    acc_t sum = 0, comp = 0;
    for (int64_t l = 0; l < kLanes; ++l) kahan_add(sum, comp, scalars[k][l] - comps[k][l]);
    return sum - comp;
  }
};

// Backward over n consecutive elements of one channel.
template <typename scalar_t, typename acc_t>
LSLU_CPU_INLINE void backward_segment(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t n,
                                      const PwluChannel<acc_t>& p, const acc_t* table, int intervals,
                                      acc_t inv_intervals, LaneBins<acc_t>& sums) {
  const auto channel_of = [p](int64_t) { return p; };  // by value: loads from p would stop if-conversion
  const auto row_of = [&](int64_t) { return table; };
  sums.use(n);
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t lanes = std::min(kLanes, n - i);
    int bin[kLanes];
    acc_t lower[kLanes], upper[kLanes];
    backward_block(x + i, g + i, dx + i, lanes, channel_of, row_of, intervals, inv_intervals, &sums.scalars[0][0],
                   &sums.comps[0][0], kLanes, bin, lower, upper);
    for (int64_t l = 0; l < lanes; ++l) {
      sums.bins[l][bin[l]] += lower[l];
      sums.bins[l][bin[l] + 1] += upper[l];
    }
  }
}

// Backward unit of the inner > 1 layout: channel c, elements [begin, end) of the
// channel's (o, i) elements in memory order.
template <typename scalar_t>
LSLU_CPU_INLINE void backward_channel_unit(const KernelArgs& a, int64_t c, int64_t part, int64_t begin, int64_t end) {
  using acc_t = acc_type<scalar_t>;
  const int N = a.size;
  const int64_t C = a.channels, inner = a.inner;
  const Tensors<scalar_t> t(a);
  const scalar_t *x = t.x, *g = t.grad_output;
  scalar_t* dx = t.grad_input;
  const PwluOp<scalar_t> op(a);
  const auto channel = op.channel(c, C);
  const PwluChannel<acc_t> p = channel.p;
  const acc_t* table = channel.row;
  const acc_t inv_intervals = op.inv_intervals;
  LaneBins<acc_t> sums(N);
  acc_t total_bins[kBins] = {};
  int64_t pending = 0;  // elements in `sums`
  for (int64_t k = begin; k < end;) {
    const int64_t o = k / inner, i = k % inner;
    const int64_t n = std::min({inner - i, end - k, kFlushElements - pending});
    const int64_t offset = (o * C + c) * inner + i;
    backward_segment(x + offset, g + offset, dx + offset, n, p, table, N, inv_intervals, sums);
    k += n;
    pending += n;
    if (pending == kFlushElements || k == end) {
      sums.flush(total_bins);
      pending = 0;
    }
  }
  for (int r = 0; r <= N; ++r) op.write_sum(part, C, c, r, total_bins[r]);
  for (int k = 0; k < 4; ++k) op.write_sum(part, C, c, N + 1 + k, sums.scalar_total(k));
}

// Backward unit of the inner == 1 layout: channels [c0, c0 + width) of rows [first, last).
// Consecutive elements belong to different channels, so each channel keeps one set of bins.
template <typename scalar_t>
LSLU_CPU_INLINE void backward_rows_unit(const KernelArgs& a, const ChannelArrays<acc_type<scalar_t>>& params,
                                        int64_t c0, int64_t width, int64_t part, int64_t first, int64_t last) {
  using acc_t = acc_type<scalar_t>;
  const int N = a.size;
  const int64_t C = a.channels;
  const Tensors<scalar_t> t(a);
  const scalar_t *x = t.x, *g = t.grad_output;
  scalar_t* dx = t.grad_input;
  const PwluOp<scalar_t> op(a);
  const acc_t* points = op.points + c0 * (N + 1);
  const acc_t inv_intervals = op.inv_intervals;
  // Bins summed over runs of kFlushRows rows, added to the totals after each run.
  std::vector<acc_t> bins(width * (N + 1), acc_t(0)), total_bins(width * (N + 1), acc_t(0));
  acc_t scalars[4][kTileChannels] = {}, comps[4][kTileChannels] = {};  // compensated sums
  for (int64_t run = first; run < last; run += kFlushRows) {
    const int64_t run_end = std::min(last, run + kFlushRows);
    for (int64_t o = run; o < run_end; ++o) {
      const int64_t offset = o * C + c0;
      for (int64_t c = 0; c < width; c += kLanes) {
        const int64_t lanes = std::min(kLanes, width - c);
        const auto channel_of = [&](int64_t l) { return params[c0 + c + l]; };
        const auto row_of = [&](int64_t l) { return points + (c + l) * (N + 1); };
        int bin[kLanes];
        acc_t lower[kLanes], upper[kLanes];
        backward_block(x + offset + c, g + offset + c, dx + offset + c, lanes, channel_of, row_of, N, inv_intervals,
                       &scalars[0][c], &comps[0][c], kTileChannels, bin, lower, upper);
        for (int64_t l = 0; l < lanes; ++l) {
          acc_t* channel_bins = bins.data() + (c + l) * (N + 1);
          channel_bins[bin[l]] += lower[l];
          channel_bins[bin[l] + 1] += upper[l];
        }
      }
    }
    for (size_t i = 0; i < bins.size(); ++i) total_bins[i] += bins[i];
    std::fill(bins.begin(), bins.end(), acc_t(0));
  }
  for (int64_t c = 0; c < width; ++c) {
    for (int r = 0; r <= N; ++r) op.write_sum(part, C, c0 + c, r, total_bins[c * (N + 1) + r]);
    for (int k = 0; k < 4; ++k) op.write_sum(part, C, c0 + c, N + 1 + k, scalars[k][c] - comps[k][c]);
  }
}

// Backward unit `unit` of `units` (see the top of the file); `params` for inner == 1.
template <typename scalar_t>
LSLU_CPU_INLINE void backward_unit(const KernelArgs& a, const ChannelArrays<acc_type<scalar_t>>* params, int64_t unit) {
  const int64_t parts = a.partials;
  if (a.inner > 1) {
    const int64_t c = unit / parts, part = unit % parts;
    int64_t begin, end;
    range_of(part, parts, a.outer * a.inner, begin, end);
    backward_channel_unit<scalar_t>(a, c, part, begin, end);
  } else {
    const int64_t tile = unit / parts, part = unit % parts;
    const int64_t c0 = tile * kTileChannels;
    int64_t first, last;
    range_of(part, parts, a.outer, first, last);
    backward_rows_unit<scalar_t>(a, *params, c0, std::min(kTileChannels, a.channels - c0), part, first, last);
  }
}

// Every channel's parameters for the inner == 1 layout, null otherwise.
template <typename acc_t>
std::unique_ptr<ChannelArrays<acc_t>> rows_params(const KernelArgs& a) {
  return a.inner == 1 ? std::make_unique<ChannelArrays<acc_t>>(a) : nullptr;
}

void forward(const KernelArgs& a, int threads) {
  check_intervals(a.size);
  if (empty(a)) return;
  LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
    const auto params = rows_params<acc_type<scalar_t>>(a);
    parallel_ranges<Work<&forward_items<scalar_t>>>(work_items(a.outer, a.channels, a.inner), threads, a,
                                                    params.get());
  });
}

void backward(const KernelArgs& args, int threads) {
  check_intervals(args.size);
  if (args.partials < 1) throw std::invalid_argument("pwlu: partials must be at least 1");
  KernelArgs a = args;
  // No elements: units of no rows write every partial entry, zeros.
  if (empty(a)) a.outer = 0, a.inner = 1;
  LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
    const auto params = rows_params<acc_type<scalar_t>>(a);
    const int64_t units = backward_columns(a.channels, a.inner) * a.partials;
    parallel_parts<Work<&backward_unit<scalar_t>>>(units, threads, a, params.get());
  });
}

int64_t backward_partials(const KernelArgs& a) {
  if (empty(a)) return 1;
  const int64_t columns = backward_columns(a.channels, a.inner);
  const int64_t column_elements = a.inner > 1 ? a.outer * a.inner : a.outer * std::min(a.channels, kTileChannels);
  return std::max<int64_t>(1, std::min(ceil_div(kTargetUnits, columns), ceil_div(column_elements, kMinUnitElements)));
}

}  // namespace

const CpuEntryPoints pwlu_cpu = {&forward, &backward, &backward_partials};

}  // namespace lslu_kernels
