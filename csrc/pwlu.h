// PWLU per-element math (SPEC.md 1.3), written once for the CUDA and the CPU kernels.
//
// Follows lslu_kernels/reference.py::pwlu operation for operation, so that a kernel and
// the reference in the same dtype pick the same region and interval for every input:
// - regions in the order x < B_L (left), else x >= B_R (right), else inside; with crossed
//   bounds (B_R <= B_L) every number is left or right, and the interval width (<= 0)
//   only ever reaches values that are selected away;
// - d = (B_R - B_L) / N, u = (x - B_L) / d, idx = clamp(floor(u), 0, N - 1) with NaN -> 0,
//   computed before any table read, so every read is in range (a NaN input takes the
//   inside formula with idx 0 and gives NaN);
// - y = (1 - t) * Y[idx] + t * Y[idx + 1] with t = u - idx inside, the lines beyond.
// The gradients are those autograd takes through the reference; in particular the slope
// gradients are g_region * (x - bound) with g_region = 0 outside the region, so that an
// infinite or NaN input gives NaN there (0 * inf), exactly as in the reference.
#pragma once

#include "dtypes.h"
#include "kernel_abi.h"

namespace lslu_kernels {

// One channel's parameters as the per-element functions use them.
template <typename acc_t>
struct PwluChannel {
  acc_t left_bound, right_bound, left_slope, right_slope;
  acc_t width;        // (right_bound - left_bound) / intervals
  acc_t first, last;  // points[0], points[intervals]
};

template <typename acc_t>
LSLU_HD PwluChannel<acc_t> pwlu_channel(acc_t left_bound, acc_t right_bound, acc_t left_slope, acc_t right_slope,
                                        const acc_t* points, int intervals) {
  PwluChannel<acc_t> p;
  p.left_bound = left_bound;
  p.right_bound = right_bound;
  p.left_slope = left_slope;
  p.right_slope = right_slope;
  p.width = (right_bound - left_bound) / acc_t(intervals);
  p.first = points[0];
  p.last = points[intervals];
  return p;
}

// clamp(floor(u), 0, intervals - 1), NaN -> 0. Clamping first and truncating then is the
// same for every u (truncation is floor on [0, intervals - 1]) and needs no floor call,
// so that the CPU loops vectorize; the clamp keeps the conversion in range.
template <typename acc_t>
LSLU_HD int pwlu_interval(acc_t u, int intervals) {
  const acc_t top = acc_t(intervals - 1);
  acc_t clamped = u >= acc_t(0) ? u : acc_t(0);  // NaN fails the comparison
  clamped = clamped <= top ? clamped : top;
  return int(clamped);
}

// Where x falls: u = (x - B_L) / d and its interval, the only inputs of the table reads
// (points[idx] and points[idx + 1]). The kernels locate, read the two points, then call the
// *_at functions; the CPU loops do the three steps for blocks of elements, so that only the
// reads are scalar.
template <typename acc_t>
struct PwluLocation {
  acc_t u;
  int idx;
};

template <typename acc_t>
LSLU_HD PwluLocation<acc_t> pwlu_locate(acc_t x, const PwluChannel<acc_t>& p, int intervals) {
  PwluLocation<acc_t> at;
  at.u = (x - p.left_bound) / p.width;
  at.idx = pwlu_interval(at.u, intervals);
  return at;
}

// y at x, with lower = points[at.idx] and upper = points[at.idx + 1].
template <typename acc_t>
LSLU_HD acc_t pwlu_forward_at(acc_t x, const PwluChannel<acc_t>& p, PwluLocation<acc_t> at, acc_t lower,
                              acc_t upper) {
  const bool left = x < p.left_bound;
  const bool right = x >= p.right_bound;
  const acc_t t = at.u - acc_t(at.idx);
  const acc_t y_inside = (acc_t(1) - t) * lower + t * upper;
  const acc_t y_left = p.first + (x - p.left_bound) * p.left_slope;
  const acc_t y_right = p.last + (x - p.right_bound) * p.right_slope;
  return left ? y_left : (right ? y_right : y_inside);
}

// y at x; `points` is this channel's row of intervals + 1 values.
template <typename acc_t>
LSLU_HD acc_t pwlu_forward(acc_t x, const PwluChannel<acc_t>& p, const acc_t* points, int intervals) {
  const PwluLocation<acc_t> at = pwlu_locate(x, p, intervals);
  return pwlu_forward_at(x, p, at, points[at.idx], points[at.idx + 1]);
}

// One element's contributions to the parameter gradients (the caller sums them per channel):
// dL/dpoints[bin] += lower and dL/dpoints[bin + 1] += upper (0 <= bin < intervals), and
// the four per-channel parameters.
template <typename acc_t>
struct PwluGrad {
  int bin;
  acc_t lower, upper;
  acc_t left_bound, right_bound, left_slope, right_slope;
};

// Returns dL/dx for one element with dL/dy = g and writes its contributions to `d`;
// lower = points[at.idx], upper = points[at.idx + 1], inv_intervals = 1 / intervals.
template <typename acc_t>
LSLU_HD acc_t pwlu_backward_at(acc_t x, acc_t g, const PwluChannel<acc_t>& p, PwluLocation<acc_t> at, acc_t lower,
                               acc_t upper, int intervals, acc_t inv_intervals, PwluGrad<acc_t>& d) {
  const bool left = x < p.left_bound;
  const bool right = !left && x >= p.right_bound;  // left wins where crossed bounds overlap
  const bool inside = !left && !right;
  const acc_t t = at.u - acc_t(at.idx);
  const acc_t g_slope = g * ((upper - lower) / p.width);  // g * K_idx
  const acc_t fraction = at.u * inv_intervals;         // u / N
  // Outside its region a term is selected away, never multiplied by 0: u, t and K_idx may
  // be infinite or NaN there (crossed bounds).
  d.bin = left ? 0 : (right ? intervals - 1 : at.idx);
  d.lower = left ? g : (inside ? g * (acc_t(1) - t) : acc_t(0));
  d.upper = right ? g : (inside ? g * t : acc_t(0));
  d.left_bound = left ? -(g * p.left_slope) : (inside ? -g_slope * (acc_t(1) - fraction) : acc_t(0));
  d.right_bound = right ? -(g * p.right_slope) : (inside ? -g_slope * fraction : acc_t(0));
  d.left_slope = (left ? g : acc_t(0)) * (x - p.left_bound);
  d.right_slope = (right ? g : acc_t(0)) * (x - p.right_bound);
  return left ? g * p.left_slope : (right ? g * p.right_slope : g_slope);
}

template <typename acc_t>
LSLU_HD acc_t pwlu_backward(acc_t x, acc_t g, const PwluChannel<acc_t>& p, const acc_t* points, int intervals,
                            acc_t inv_intervals, PwluGrad<acc_t>& d) {
  const PwluLocation<acc_t> at = pwlu_locate(x, p, intervals);
  return pwlu_backward_at(x, g, p, at, points[at.idx], points[at.idx + 1], intervals, inv_intervals, d);
}

// The op as the CUDA engine takes it (csrc/cuda/engine.cuh): per-channel parameters and table
// row, forward, backward, and where its N + 5 sums per channel go (the N + 1 points bins, then
// left_bound, right_bound, left_slope, right_slope). Its sum policy, bins in shared memory,
// is csrc/cuda/pwlu.cu's.
template <typename scalar_t>
struct PwluOp {
  using scalar = scalar_t;
  using acc_t = acc_type<scalar_t>;
  static constexpr int kScalarSums = 4;
  // Channels per thread of the rows layout: 16 bytes of elements, at most 4 channels (each
  // keeps 7 parameters in registers, and in backward its own column of sums).
  static constexpr int kRowsPack = int(16 / sizeof(scalar_t)) < 4 ? int(16 / sizeof(scalar_t)) : 4;

  const acc_t* points;  // (channels, intervals + 1)
  const acc_t* left_bound;  // (channels,), and the three below
  const acc_t* right_bound;
  const acc_t* left_slope;
  const acc_t* right_slope;
  acc_t* dpoints_partial;   // (partials, channels, intervals + 1)
  acc_t* dscalars_partial;  // (partials, 4, channels)
  int intervals;
  acc_t inv_intervals;  // 1 / intervals

  explicit PwluOp(const KernelArgs& a)
      : points(static_cast<const acc_t*>(a.params[0])),
        left_bound(static_cast<const acc_t*>(a.params[1])),
        right_bound(static_cast<const acc_t*>(a.params[2])),
        left_slope(static_cast<const acc_t*>(a.params[3])),
        right_slope(static_cast<const acc_t*>(a.params[4])),
        dpoints_partial(static_cast<acc_t*>(a.partial[0])),
        dscalars_partial(static_cast<acc_t*>(a.partial[1])),
        intervals(a.size),
        inv_intervals(acc_t(1) / acc_t(a.size)) {}

  LSLU_HD int sum_count() const { return intervals + 1 + kScalarSums; }

  struct Channel {
    PwluChannel<acc_t> p;
    const acc_t* row;  // the channel's intervals + 1 points
  };

  template <typename index_t>
  LSLU_HD Channel channel(index_t c, index_t /*channels*/) const {
    const acc_t* row = points + int64_t(c) * (intervals + 1);
    return Channel{pwlu_channel(read_only(left_bound + c), read_only(right_bound + c), read_only(left_slope + c),
                                read_only(right_slope + c), row, intervals),
                   row};
  }

  // The table reads come after the interval is clamped (0 <= at.idx < intervals).
  LSLU_HD acc_t forward(acc_t x, const Channel& c) const {
    const PwluLocation<acc_t> at = pwlu_locate(x, c.p, intervals);
    return pwlu_forward_at(x, c.p, at, read_only(c.row + at.idx), read_only(c.row + at.idx + 1));
  }

  // Adds the element's contributions (PwluGrad) to `sums`, the sum policy's slot.
  template <typename Slot>
  LSLU_HD acc_t backward(acc_t x, acc_t g, const Channel& c, Slot& sums) const {
    const PwluLocation<acc_t> at = pwlu_locate(x, c.p, intervals);
    PwluGrad<acc_t> d;
    const acc_t dx = pwlu_backward_at(x, g, c.p, at, read_only(c.row + at.idx), read_only(c.row + at.idx + 1),
                                      intervals, inv_intervals, d);
    sums.add(d);
    return dx;
  }

  // Sum r < N + 1 is a bin, else a scalar parameter.
  LSLU_HD void write_sum(int64_t part, int64_t channels, int64_t channel, int r, acc_t total) const {
    if (r <= intervals) {
      dpoints_partial[(part * channels + channel) * (intervals + 1) + r] = total;
    } else {
      dscalars_partial[(part * kScalarSums + (r - intervals - 1)) * channels + channel] = total;
    }
  }
};

}  // namespace lslu_kernels
