// The paper's full layer fused on CPU tensors: y = depthwise_conv2d(lslu(x), weight, padding S) + bias
// with a (2S+1) x (2S+1) kernel per channel (SPEC.md 1.1), forward and backward.
//
// Forward reads x once and writes y once. A piece of work is one buffer: the (n, c) planes of a group
// of consecutive batch entries of an NCHW tensor side by side (or (n, block of LANES channels) planes
// of a channels-last one), zero-padded, in the compute type: (H + 2S) rows of pitch Wp (whole
// vectors). It applies the series to every input element once, into that thread-local buffer (the
// rows copied in by a few inline vector moves; NCHW buffers keep their zeros from one use to the
// next, so only the planes' values are written), then sums the taps over the buffer in register
// blocks of 7 output rows by up to 3 vectors (tap_block: each input vector loaded once per kernel
// column for all the block's rows it feeds, that column's weights in registers), and copies the
// planes' outputs out. The conv output has the buffer's row pitch; its padding columns are computed
// from zeros and dropped, which keeps the blocks free of edge cases. The vectors are those of the
// level the code runs at (run_native: 64 bytes at AVX-512, 32 at AVX2, 16 at the baseline).
//
// Backward saves nothing from forward: it recomputes the series from x, takes dL/dr (r = lslu(x))
// through the transposed convolution (the same taps over the padded grad_output, flipped), and
// applies lslu.h's backward per element (x read from x itself for NCHW). dL/dweight and dL/dbias are
// summed per vector lane in register blocks as the taps (weight_sums: one sweep per kernel column).
// Parameter gradients (weight, bias, theta, omega) are summed per fixed part of the batch (parts: a
// fixed split of N that depends on the sizes alone), each part in a fixed order into its own row of
// the partial buffers; Python sums the rows in order, so the thread count changes nothing in the
// result.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../lslu.h"
#include "../switch.h"
#include "engine.h"
#include "isa.h"

// The vectors below stay inside always-inline functions of one instruction-set level each: no
// function passes them, so the ABI note GCC gives for them does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// The tap blocks' loops unrolled whole (up to 2 * 8 + 4 rows): LSLU_UNROLL's 16 leaves S = 8's
// loops partly rolled, and GCC's code for that gave wrong sums (measured).
#if defined(__clang__)
#define LSLU_UNROLL_ALL _Pragma("unroll")
#else
#define LSLU_UNROLL_ALL _Pragma("GCC unroll 32")
#endif

namespace lslu_kernels {
namespace {

using namespace cpu_engine;

// A vector of VB bytes of the compute type (GCC's vector extension), one register of the level the
// code runs at (VB: 64 AVX-512, 32 AVX2, 16 baseline; run_native below). The tap sums are written with
// it: GCC unrolls their short fixed-count loops before its loop vectorizer sees them, and the code it
// made of them was scalar (measured); a vector wider than the level's registers was built through the
// stack (64-byte vectors at AVX2: 5x slower, measured).
template <typename acc_t, int VB>
struct Vec {
  typedef acc_t type __attribute__((vector_size(VB)));
  static constexpr int kLanes = int(VB / sizeof(acc_t));
  static LSLU_CPU_INLINE type load(const acc_t* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static LSLU_CPU_INLINE void store(acc_t* p, type v) { std::memcpy(p, &v, sizeof(v)); }
};

// dst[i] = src[i] for i < n, inline in vectors of VB bytes (or smaller ones for short rows), the last
// one overlapping the one before (the same values again): a row of 14 to 56 values costs a few
// vector moves, where a memcpy call per row cost a third of a small layer's forward (measured).
template <int VB, typename T>
LSLU_CPU_INLINE void copy_row(T* dst, const T* src, int64_t n) {
  if (VB > 16 && n < int64_t(VB / sizeof(T))) return copy_row<(VB > 16 ? VB / 2 : 16)>(dst, src, n);
  using V = Vec<T, VB>;
  if (n < V::kLanes) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    return;
  }
  for (int64_t i = 0; i + V::kLanes < n; i += V::kLanes) {
    V::store(dst + i, V::load(src + i));
    __asm__("" : "+r"(dst));  // hides the copy from GCC, which made the loop a memcpy call again
  }
  V::store(dst + n - V::kLanes, V::load(src + n - V::kLanes));
}

// Vectors per tile of the tap sums: independent sums, enough to keep the FMA units busy.
constexpr int kTileVectors = 8;
// At most this many batch parts (rows of the partial buffers) in backward.
constexpr int64_t kMaxBatchParts = 8;
// Values per buffer at the most (32 KiB of float): planes are put side by side up to it.
constexpr int64_t kBufferValues = 8192;

// VB: the bytes of the level's vector registers (Vec).
template <typename scalar_t, int STAGES, int LANES, int VB = 64>
struct Fused {
  using acc_t = acc_type<scalar_t>;
  static constexpr int K = 2 * STAGES + 1;
  static constexpr int kTaps = K * K;
  using V = Vec<acc_t, VB>;
  using vec = typename V::type;
  static constexpr int kTileValues = kTileVectors * V::kLanes;  // LANES divides it
  static constexpr int kTilePixels = kTileValues / LANES;
  static_assert(kTileValues % LANES == 0 && (LANES == 1 || LANES % V::kLanes == 0), "lanes fill whole vectors");

  // The buffer of one piece of work: `planes` planes of the same channels (consecutive batch entries)
  // side by side, each H x W pixels of LANES values: S zero rows above and below, S zero columns
  // before the first plane and after each one. Small planes side by side waste fewer tap sums on
  // padding columns than one by one.
  struct Plane {
    int64_t H, W, planes, Wp, pixels;  // pixels: the padded ones and the slack the tap reads reach
    int64_t offsets[kTaps];            // tap (ki, kj) reads the buffer at output pixel + ki * Wp + kj
    // Wp: rows of whole vectors (for weight_sums; the tap sums compute whole vectors anyway), the
    // columns past the last plane's padding zero too.
    LSLU_CPU_INLINE Plane(int64_t height, int64_t width, int64_t count)
        : H(height), W(width), planes(count),
          Wp(ceil_div(STAGES + count * (width + STAGES), int64_t(kPixelsPerVector)) * kPixelsPerVector) {
      // The tap blocks and weight_sums read up to blocked_rows() + 2S rows and 2S pixels past a row.
      pixels = (blocked_rows() + 2 * STAGES) * Wp + 2 * STAGES + V::kLanes;
      for (int ki = 0; ki < K; ++ki) {
        for (int kj = 0; kj < K; ++kj) offsets[ki * K + kj] = ki * Wp + kj;
      }
    }
    // Plane k's first column in output pixels (in the buffer: one more S).
    LSLU_CPU_INLINE int64_t column(int64_t k) const { return k * (W + STAGES); }
    // Rows of the tap blocks: H rounded up to whole blocks.
    LSLU_CPU_INLINE int64_t blocked_rows() const { return ceil_div(H, int64_t(kBlockRows)) * kBlockRows; }
    // Output pixels the tap sums write: whole blocks (of whole vectors).
    LSLU_CPU_INLINE int64_t tap_pixels() const { return blocked_rows() * Wp; }
  };

  // Planes per buffer: the fewest groups of at most as many as keep one buffer within kBufferValues
  // values, of equal sizes (but the last): the buffers' layout then seldom changes from one use to the
  // next, so their zeros stay (fill). From the sizes alone (backward's summation order depends on it).
  static LSLU_CPU_INLINE int64_t group_planes(const DwconvArgs& a) {
    const int64_t fit = (kBufferValues / ((a.height + 2 * STAGES) * LANES) - STAGES) / (a.width + STAGES);
    const int64_t most = std::max<int64_t>(1, std::min(fit, a.batch));
    return ceil_div(a.batch, ceil_div(a.batch, most));
  }

  // Where one plane's elements are in memory: element (h, w, lane) at base + h * row + w * pixel + lane
  // (NCHW: lanes 1, pixel 1; channels-last: pixel C, lanes contiguous).
  struct Place {
    int64_t base, row, pixel;
    int64_t c0;   // the first lane's channel
    int lanes;    // real lanes
  };

  // NCHW planes are (n, c), channels-last ones (n, block of LANES channels).
  static LSLU_CPU_INLINE Place place(const DwconvArgs& a, int64_t n, int64_t block) {
    const int64_t C = a.channels, HW = a.height * a.width;
    if (!a.channels_last) return Place{(n * C + block) * HW, a.width, 1, block, 1};
    const int64_t c0 = block * LANES;
    return Place{n * HW * C + c0, a.width * C, C, c0, int(std::min<int64_t>(LANES, C - c0))};
  }
  static LSLU_CPU_INLINE int64_t blocks(const DwconvArgs& a) {
    return a.channels_last ? ceil_div(a.channels, LANES) : a.channels;
  }

  // The tap sums in register blocks: kBlockRows output rows (pitch Wp) by T vectors of columns. Each
  // input vector is loaded once per kernel column kj and feeds every output row of the block it
  // reaches (row j takes it with kernel row i - j), with that column's K weights held in registers:
  // per multiply-add a fraction of a load instead of one (the loads, many of them across cache
  // lines, bound the one-tap-at-a-time loop). Each output sums bias, then the taps column by
  // column (kj), each column's rows in order (ki): a fixed order, the same for every output.
  static constexpr int kVectorsPerPixel = LANES > V::kLanes ? LANES / V::kLanes : 1;
  // Pixels of one vector (or more): 7 rows, which divide the usual plane sizes (7 to 112: no rows
  // computed past H); else 4. Rows x vectors sums + K weights (x kVectorsPerPixel) in the
  // registers: AVX-512's 32 hold 7 x 3 (7 x 2 from S = 4 on); AVX2's 16 hold 7 x 1 (the weights
  // partly read from memory from S = 4 on). A block column holds whole pixels.
  static constexpr int kBlockRows = kVectorsPerPixel == 1 ? 7 : 4;
  static constexpr int kBlockVectors =
      kVectorsPerPixel > 1 ? kVectorsPerPixel : VB == 64 ? (STAGES <= 3 ? 3 : 2) : 1;
  static constexpr int kPixelsPerVector = LANES < V::kLanes ? V::kLanes / LANES : 1;
  static_assert(kBlockVectors % kVectorsPerPixel == 0, "a block column holds whole pixels");

  // The block of rows at flat value `q` (a row's start plus whole pixels), T vectors wide.
  template <int T>
  static LSLU_CPU_INLINE void tap_block(int64_t Wp, const acc_t* in, const acc_t* w, const acc_t* bias_tile,
                                        acc_t* out, int64_t q) {
    constexpr int R = kBlockRows, W = kVectorsPerPixel;
    const int64_t row = Wp * LANES;
    vec acc[R][T];
    LSLU_UNROLL_ALL
    for (int j = 0; j < R; ++j) {
      LSLU_UNROLL_ALL
      for (int v = 0; v < T; ++v) acc[j][v] = V::load(bias_tile + v * V::kLanes);
    }
    for (int kj = 0; kj < K; ++kj) {
      vec wk[K][W];  // kernel column kj; W vectors per tap when a pixel spans W vectors
      LSLU_UNROLL_ALL
      for (int ki = 0; ki < K; ++ki) {
        LSLU_UNROLL_ALL
        for (int u = 0; u < W; ++u) {
          if (LANES == 1) {
            wk[ki][u] = vec{} + w[ki * K + kj];
          } else {
            wk[ki][u] = V::load(w + (ki * K + kj) * LANES + u * V::kLanes);
          }
        }
      }
      const acc_t* src = in + q + kj * LANES;
      LSLU_UNROLL_ALL
      for (int v = 0; v < T; ++v) {
        LSLU_UNROLL_ALL
        for (int i = 0; i < R + K - 1; ++i) {
          const vec xv = V::load(src + i * row + v * V::kLanes);
          LSLU_UNROLL_ALL
          for (int j = 0; j < R; ++j) {
            if (i - j >= 0 && i - j < K) acc[j][v] += wk[i - j][v % W] * xv;
          }
        }
      }
    }
    LSLU_UNROLL_ALL
    for (int j = 0; j < R; ++j) {
      LSLU_UNROLL_ALL
      for (int v = 0; v < T; ++v) V::store(out + q + j * row + v * V::kLanes, acc[j][v]);
    }
  }

  // out[q] = bias + sum_t w[t] * in[q + offsets[t]] (LANES values per pixel) for the output pixels
  // q < blocked_rows() * Wp (rows past H and columns past Wp, up to whole vectors, are computed from
  // the buffer's zeros and dropped).
  static LSLU_CPU_INLINE void taps(const Plane& p, const acc_t* in, const acc_t* w, const acc_t* bias,
                                   acc_t* out) {
    constexpr int T = kBlockVectors;
    acc_t bias_tile[T * V::kLanes];  // the widest block's
    for (int i = 0; i < T * V::kLanes; ++i) bias_tile[i] = bias[i % LANES];
    const int64_t row_vectors = ceil_div(p.Wp * LANES, int64_t(V::kLanes));
    for (int64_t h0 = 0; h0 < p.blocked_rows(); h0 += kBlockRows) {
      const int64_t q0 = h0 * p.Wp * LANES;
      int64_t c = 0;
      for (; c + T <= row_vectors; c += T) tap_block<T>(p.Wp, in, w, bias_tile, out, q0 + c * V::kLanes);
      // The row's last vectors, fewer than T: only where a vector holds whole pixels (else T and the
      // row hold whole pixels, and none are left).
      if constexpr (kVectorsPerPixel == 1 && T > 1) {
        const int64_t rest = row_vectors - c, q = q0 + c * V::kLanes;
        if (rest == 1) tap_block<1>(p.Wp, in, w, bias_tile, out, q);
        if constexpr (T > 2) {
          if (rest == 2) tap_block<2>(p.Wp, in, w, bias_tile, out, q);
        }
      }
    }
  }

  // Sums of backward per vector lane over the output pixels (rows h < H of pitch Wp, whole vectors):
  // dw[t] += g[q] * r[q + offsets[t]] for every tap t, db += g[q]; dw: kTaps x kAccValues values, db
  // kAccValues (kAccValues: the values of a pixel's vectors, LANES or one vector). One sweep over the
  // rows per kernel column kj, in blocks of kBlockRows rows by one pixel's vectors: the block's g
  // vectors in registers, each r vector loaded once for the K taps (ki, kj) it meets (row j takes it
  // with ki = i - j), as tap_block: a fraction of a load per multiply-add, where a sweep per tap took
  // two. Each sum adds its terms in a fixed order (kj's sweep: rows, then vectors, then block rows).
  // Rows past H (up to whole blocks) read the zero padding of g and add nothing.
  static constexpr int kAccValues = kVectorsPerPixel * V::kLanes;
  static LSLU_CPU_INLINE void weight_sums(const Plane& p, const acc_t* gz, const acc_t* r, acc_t* dw, acc_t* db) {
    constexpr int R = kBlockRows, W = kVectorsPerPixel;
    const int64_t row = p.Wp * LANES;  // whole vectors (Plane)
    for (int kj = 0; kj < K; ++kj) {
      vec acc[K][W], dbv[W];
      LSLU_UNROLL_ALL
      for (int ki = 0; ki < K; ++ki) {
        LSLU_UNROLL_ALL
        for (int u = 0; u < W; ++u) acc[ki][u] = V::load(dw + (ki * K + kj) * kAccValues + u * V::kLanes);
      }
      LSLU_UNROLL_ALL
      for (int u = 0; u < W; ++u) dbv[u] = V::load(db + u * V::kLanes);
      for (int64_t h0 = 0; h0 < p.blocked_rows(); h0 += R) {
        for (int64_t c = 0; c < row; c += W * V::kLanes) {
          const int64_t q = h0 * row + c;
          vec gv[R][W];
          LSLU_UNROLL_ALL
          for (int j = 0; j < R; ++j) {
            LSLU_UNROLL_ALL
            for (int u = 0; u < W; ++u) gv[j][u] = V::load(gz + q + j * row + u * V::kLanes);
          }
          if (kj == 0) {
            LSLU_UNROLL_ALL
            for (int j = 0; j < R; ++j) {
              LSLU_UNROLL_ALL
              for (int u = 0; u < W; ++u) dbv[u] += gv[j][u];
            }
          }
          const acc_t* src = r + q + kj * LANES;
          LSLU_UNROLL_ALL
          for (int i = 0; i < R + K - 1; ++i) {
            LSLU_UNROLL_ALL
            for (int u = 0; u < W; ++u) {
              const vec xv = V::load(src + i * row + u * V::kLanes);
              LSLU_UNROLL_ALL
              for (int j = 0; j < R; ++j) {
                if (i - j >= 0 && i - j < K) acc[i - j][u] += gv[j][u] * xv;
              }
            }
          }
        }
      }
      LSLU_UNROLL_ALL
      for (int ki = 0; ki < K; ++ki) {
        LSLU_UNROLL_ALL
        for (int u = 0; u < W; ++u) V::store(dw + (ki * K + kj) * kAccValues + u * V::kLanes, acc[ki][u]);
      }
      LSLU_UNROLL_ALL
      for (int u = 0; u < W; ++u) V::store(db + u * V::kLanes, dbv[u]);
    }
  }

  // The series parameters of the block's lanes (lanes past `lanes` get theta 1, omega 0).
  struct Params {
    acc_t theta[STAGES][LANES], omega[STAGES][LANES];
    LSLU_CPU_INLINE Params(const acc_t* theta_all, const acc_t* omega_all, int64_t C, const Place& at) {
      for (int s = 0; s < STAGES; ++s) {
        for (int l = 0; l < LANES; ++l) {
          theta[s][l] = l < at.lanes ? theta_all[s * C + at.c0 + l] : acc_t(1);
          omega[s][l] = l < at.lanes ? omega_all[s * C + at.c0 + l] : acc_t(0);
        }
      }
    }
    LSLU_CPU_INLINE void lane(int l, acc_t (&th)[STAGES], acc_t (&om)[STAGES]) const {
      LSLU_UNROLL
      for (int s = 0; s < STAGES; ++s) {
        th[s] = theta[s][l];
        om[s] = omega[s][l];
      }
    }
  };

  // Buffer `buf` for the planes of batch entries n0, n0 + 1, ... of `block`: value(v, lane) of each
  // element v of `src` (in the compute type) at its place, 0 everywhere else (padding, lanes past the
  // real ones, slack). NCHW planes: the zeros are written only when `zeroed` is false (the buffer's
  // last use had another plane count: the pitch alone does not tell, as whole vectors can hold one
  // more plane, whose values would stay), as they stay at the same places from one use to the next;
  // the planes go through `plane` (H x W values): value() over a whole plane is one long vector
  // loop, where a row of a small plane (W < a vector) would be a scalar one. Channels-last planes:
  // every value is written.
  // The values of fill() that are the elements themselves.
  struct Same {
    LSLU_CPU_INLINE acc_t operator()(acc_t v, int) const { return v; }
  };
  template <typename Value>
  static LSLU_CPU_INLINE void fill(const Plane& p, const DwconvArgs& a, const scalar_t* src, int64_t n0,
                                   int64_t block, acc_t* buf, acc_t* plane, bool zeroed, Value&& value) {
    const int64_t row_values = p.Wp * LANES;
    if (LANES == 1) {
      if (!zeroed) std::fill(buf, buf + p.pixels, acc_t(0));
      // `Same` values of the compute type: the rows copied straight from src.
      constexpr bool straight = std::is_same<std::decay_t<Value>, Same>::value && std::is_same<scalar_t, acc_t>::value;
      for (int64_t k = 0; k < p.planes; ++k) {
        const scalar_t* in = src + place(a, n0 + k, block).base;
        if (!straight) {
          for (int64_t i = 0; i < p.H * p.W; ++i) plane[i] = value(to_acc(in[i]), 0);
        }
        const acc_t* rows = straight ? reinterpret_cast<const acc_t*>(in) : plane;
        for (int64_t h = 0; h < p.H; ++h) {
          copy_row<VB>(buf + (h + STAGES) * row_values + STAGES + p.column(k), rows + h * p.W, p.W);
        }
      }
      return;
    }
    std::fill(buf, buf + STAGES * row_values, acc_t(0));
    for (int64_t h = 0; h < p.H; ++h) {
      acc_t* row = buf + (h + STAGES) * row_values;
      std::fill(row, row + STAGES * LANES, acc_t(0));
      for (int64_t k = 0; k < p.planes; ++k) {
        const Place at = place(a, n0 + k, block);
        const scalar_t* in = src + at.base + h * at.row;
        acc_t* dst = row + (STAGES + p.column(k)) * LANES;
        for (int64_t w = 0; w < p.W; ++w) {
          for (int l = 0; l < at.lanes; ++l) dst[w * LANES + l] = value(to_acc(in[w * at.pixel + l]), l);
          for (int l = at.lanes; l < LANES; ++l) dst[w * LANES + l] = acc_t(0);
        }
        std::fill(dst + p.W * LANES, dst + (p.W + STAGES) * LANES, acc_t(0));
      }
    }
    std::fill(buf + (p.H + STAGES) * row_values, buf + p.pixels * LANES, acc_t(0));
  }

  // The weight of the block's lanes as (taps, LANES), flipped (tap t takes tap K*K-1-t) for the
  // transposed convolution; lanes past `lanes` are 0.
  static LSLU_CPU_INLINE void load_weight(const acc_t* weight, const Place& at, bool flip, acc_t* w) {
    for (int t = 0; t < kTaps; ++t) {
      const int from = flip ? kTaps - 1 - t : t;
      for (int l = 0; l < LANES; ++l) w[t * LANES + l] = l < at.lanes ? weight[(at.c0 + l) * kTaps + from] : acc_t(0);
    }
  }

  // Forward of items [first, last): item (block, group of group_planes batch entries), group fastest.
  static LSLU_CPU_INLINE void forward(const DwconvArgs& a, int64_t first, int64_t last) {
    const scalar_t* x = static_cast<const scalar_t*>(a.x);
    scalar_t* y = static_cast<scalar_t*>(a.y);
    const acc_t *theta = static_cast<const acc_t*>(a.theta), *omega = static_cast<const acc_t*>(a.omega);
    const acc_t *weight = static_cast<const acc_t*>(a.weight), *bias_all = static_cast<const acc_t*>(a.bias);
    const int64_t group = group_planes(a), groups = ceil_div(a.batch, group);
    const Plane largest(a.height, a.width, group);
    std::vector<acc_t> r(largest.pixels * LANES), out(largest.tap_pixels() * LANES), w(kTaps * LANES),
        plane(LANES == 1 ? a.height * a.width : 0);
    acc_t bias[LANES];
    int64_t zeroed_planes = 0;  // the plane count of the layout whose zeros buffer r holds (0: none yet)
    for (int64_t item = first; item < last; ++item) {
      const int64_t block = item / groups, n0 = item % groups * group;
      const Plane p(a.height, a.width, std::min(group, a.batch - n0));
      const bool zeroed = p.planes == zeroed_planes;
      zeroed_planes = p.planes;
      const Place lanes = place(a, 0, block);
      const Params pr(theta, omega, a.channels, lanes);
      for (int l = 0; l < LANES; ++l) {
        bias[l] = bias_all != nullptr && l < lanes.lanes ? bias_all[lanes.c0 + l] : acc_t(0);
      }
      load_weight(weight, lanes, false, w.data());
      fill(p, a, x, n0, block, r.data(), plane.data(), zeroed, [&](acc_t v, int l) LSLU_CPU_LAMBDA {
        acc_t th[STAGES], om[STAGES];
        pr.lane(l, th, om);
        return lslu_forward<STAGES>(v, th, om);
      });
      taps(p, r.data(), w.data(), bias, out.data());
      for (int64_t k = 0; k < p.planes; ++k) {
        const Place at = place(a, n0 + k, block);
        for (int64_t h = 0; h < p.H; ++h) {
          const acc_t* src = out.data() + (h * p.Wp + p.column(k)) * LANES;
          scalar_t* dst = y + at.base + h * at.row;
          if (LANES == 1 && std::is_same<scalar_t, acc_t>::value) {
            copy_row<VB>(reinterpret_cast<acc_t*>(dst), src, p.W);
          } else if (LANES == 1) {
            for (int64_t wi = 0; wi < p.W; ++wi) dst[wi] = from_acc<scalar_t>(src[wi]);
          } else {
            for (int64_t wi = 0; wi < p.W; ++wi) {
              for (int l = 0; l < at.lanes; ++l) dst[wi * at.pixel + l] = from_acc<scalar_t>(src[wi * LANES + l]);
            }
          }
        }
      }
    }
  }

  // Backward of items [first, last): item (part, block), part slowest: the part's batch range,
  // group_planes planes at a time, with the item's sums in row `part` of the partial buffers. The
  // buffers serve every item of the range (allocated and zeroed once, not per item).
  static LSLU_CPU_INLINE void backward(const DwconvArgs& a, int64_t first, int64_t last) {
    const scalar_t *x = static_cast<const scalar_t*>(a.x), *g = static_cast<const scalar_t*>(a.grad_output);
    scalar_t* dx = static_cast<scalar_t*>(a.grad_input);
    const acc_t *theta = static_cast<const acc_t*>(a.theta), *omega = static_cast<const acc_t*>(a.omega);
    const acc_t* weight = static_cast<const acc_t*>(a.weight);
    const int64_t C = a.channels, nblocks = blocks(a);
    const int64_t group = group_planes(a);
    const Plane largest(a.height, a.width, group);
    // xs: x in the buffer layout, for channels-last planes only (NCHW rows are read from x itself).
    std::vector<acc_t> r(largest.pixels * LANES), xs(LANES == 1 ? 0 : largest.pixels * LANES),
        gp(largest.pixels * LANES), gr(largest.tap_pixels() * LANES), w(kTaps * LANES),
        plane(LANES == 1 ? a.height * a.width : 0);
    const acc_t zero[LANES] = {};
    acc_t dx_tile[kTileValues];
    // Sums per tile value (pixel of a tile, lane), added up over the tile's pixels at the end, in order.
    std::vector<acc_t> dw_sum(kTaps * kAccValues), db_sum(kAccValues);
    std::vector<acc_t> dth_sum(STAGES * kTileValues), dom_sum(STAGES * kTileValues);
    int64_t zeroed_planes = 0;  // the plane count of the layout whose zeros the buffers hold (0: none yet)
    for (int64_t item = first; item < last; ++item) {
      const int64_t part = item / nblocks, block = item % nblocks;
      int64_t n_first, n_last;
      range_of(part, a.partials, a.batch, n_first, n_last);
      for (auto* sums : {&dw_sum, &db_sum, &dth_sum, &dom_sum}) std::fill(sums->begin(), sums->end(), acc_t(0));
      const Place lanes = place(a, 0, block);
      const Params pr(theta, omega, C, lanes);
      load_weight(weight, lanes, true, w.data());
      const Same same;
      for (int64_t n0 = n_first; n0 < n_last; n0 += group) {
        const Plane p(a.height, a.width, std::min(group, n_last - n0));
        const bool zeroed = p.planes == zeroed_planes;
        zeroed_planes = p.planes;
        fill(p, a, x, n0, block, r.data(), plane.data(), zeroed, [&](acc_t v, int l) LSLU_CPU_LAMBDA {
          acc_t th[STAGES], om[STAGES];
          pr.lane(l, th, om);
          return lslu_forward<STAGES>(v, th, om);
        });
        if (LANES != 1) fill(p, a, x, n0, block, xs.data(), plane.data(), zeroed, same);
        fill(p, a, g, n0, block, gp.data(), plane.data(), zeroed, same);
        // dL/dr: the transposed convolution, the flipped taps over the padded grad_output.
        taps(p, gp.data(), w.data(), zero, gr.data());
        // dL/dx and the series' sums, per element; lanes past the real ones have x = 0 and dL/dr = 0
        // and add nothing.
        for (int64_t k = 0; k < p.planes; ++k) {
          const Place at = place(a, n0 + k, block);
          for (int64_t h = 0; h < p.H; ++h) {
            const acc_t* grr = gr.data() + (h * p.Wp + p.column(k)) * LANES;
            scalar_t* dst = dx + at.base + h * at.row;
            for (int64_t w0 = 0; w0 < p.W; w0 += kTilePixels) {  // the row by tiles: sums per tile value
              const int64_t m = std::min<int64_t>(kTilePixels, p.W - w0);
              const acc_t* gt = grr + w0 * LANES;
              // Element loops without a branch or a strided store, so that they vectorize; the
              // stores follow.
              if (LANES == 1) {
                const scalar_t* xt = x + at.base + h * at.row + w0;
                acc_t th[STAGES], om[STAGES];
                pr.lane(0, th, om);
                for (int64_t i = 0; i < m; ++i) {
                  acc_t dth[STAGES], dom[STAGES];
                  dx_tile[i] = lslu_backward<STAGES>(to_acc(xt[i]), gt[i], th, om, dth, dom);
                  LSLU_UNROLL
                  for (int s = 0; s < STAGES; ++s) {
                    dth_sum[s * kTileValues + i] += dth[s];
                    dom_sum[s * kTileValues + i] += dom[s];
                  }
                }
                if (std::is_same<scalar_t, acc_t>::value) {
                  copy_row<VB>(reinterpret_cast<acc_t*>(dst + w0), dx_tile, m);
                } else {
                  for (int64_t i = 0; i < m; ++i) dst[w0 + i] = from_acc<scalar_t>(dx_tile[i]);
                }
              } else {
                const acc_t* xt = xs.data() + ((h + STAGES) * p.Wp + STAGES + p.column(k) + w0) * LANES;
                for (int64_t i = 0; i < m; ++i) {
                  for (int l = 0; l < LANES; ++l) {
                    acc_t th[STAGES], om[STAGES], dth[STAGES], dom[STAGES];
                    pr.lane(l, th, om);
                    const int64_t v = i * LANES + l;
                    dx_tile[v] = lslu_backward<STAGES>(xt[v], gt[v], th, om, dth, dom);
                    LSLU_UNROLL
                    for (int s = 0; s < STAGES; ++s) {
                      dth_sum[s * kTileValues + v] += dth[s];
                      dom_sum[s * kTileValues + v] += dom[s];
                    }
                  }
                }
                for (int64_t i = 0; i < m; ++i) {
                  for (int l = 0; l < at.lanes; ++l) dst[(w0 + i) * at.pixel + l] = from_acc<scalar_t>(dx_tile[i * LANES + l]);
                }
              }
            }
          }
        }
        // dL/dweight[t] = sum over output pixels of grad_output * r at the tap's offset; the padded
        // grad_output read from (S, S) is grad_output at pitch Wp with zero padding columns.
        weight_sums(p, gp.data() + (STAGES * p.Wp + STAGES) * LANES, r.data(), dw_sum.data(), db_sum.data());
      }
      // This item's row of the partial buffers: its lanes' totals over the tile pixels, in order.
      acc_t* dth_out = static_cast<acc_t*>(a.grad_theta_partial) + part * STAGES * C;
      acc_t* dom_out = static_cast<acc_t*>(a.grad_omega_partial) + part * STAGES * C;
      acc_t* dw_out = static_cast<acc_t*>(a.grad_weight_partial) + part * C * kTaps;
      acc_t* db_out = static_cast<acc_t*>(a.grad_bias_partial) + part * C;
      acc_t totals[LANES];
      for (int s = 0; s < STAGES; ++s) {
        lane_totals<kTileValues>(dth_sum.data() + s * kTileValues, totals);
        for (int l = 0; l < lanes.lanes; ++l) dth_out[s * C + lanes.c0 + l] = totals[l];
        lane_totals<kTileValues>(dom_sum.data() + s * kTileValues, totals);
        for (int l = 0; l < lanes.lanes; ++l) dom_out[s * C + lanes.c0 + l] = totals[l];
      }
      for (int t = 0; t < kTaps; ++t) {
        lane_totals<kAccValues>(dw_sum.data() + t * kAccValues, totals);
        for (int l = 0; l < lanes.lanes; ++l) dw_out[(lanes.c0 + l) * kTaps + t] = totals[l];
      }
      lane_totals<kAccValues>(db_sum.data(), totals);
      for (int l = 0; l < lanes.lanes; ++l) db_out[lanes.c0 + l] = totals[l];
    }
  }

  // totals[l] = the sum over the N / LANES pixels of sums[pixel * LANES + l] (a tile's or a vector's),
  // in a fixed order: halving them, the second half added to the first (vector adds, not one long
  // chain of scalar ones).
  template <int N>
  static LSLU_CPU_INLINE void lane_totals(const acc_t* sums, acc_t (&totals)[LANES]) {
    acc_t t[N];
    std::memcpy(t, sums, sizeof(t));
    for (int n = N / 2; n >= LANES; n /= 2) {
      for (int i = 0; i < n; ++i) t[i] += t[i + n];
    }
    for (int l = 0; l < LANES; ++l) totals[l] = t[l];
  }

  // Backward's batch parts: as many as leave each part one buffer of planes side by side, at most
  // kMaxBatchParts; from the sizes alone.
  static LSLU_CPU_INLINE int64_t batch_parts(const DwconvArgs& a) {
    return std::max<int64_t>(1, std::min(ceil_div(a.batch, group_planes(a)), kMaxBatchParts));
  }
};

// Channels-last planes take 64 bytes of channels per pixel (NCHW planes one channel).
template <typename scalar_t>
constexpr int kChannelsLastLanes = int(64 / sizeof(scalar_t));

template <typename Body>
void dispatch(const DwconvArgs& a, Body&& body) {
  LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
    LSLU_STAGES_SWITCH(a.stages, STAGES, [&] {
      if (a.channels_last) {
        body(Fused<scalar_t, STAGES, kChannelsLastLanes<scalar_t>>{});
      } else {
        body(Fused<scalar_t, STAGES, 1>{});
      }
    });
  });
}

// The work of Fused<scalar_t, STAGES, LANES, VB> (F: its VB = 64 instance, which the sizes come from)
// at VB = the vector bytes of each level.
template <typename F>
struct ForwardWork;
template <typename scalar_t, int STAGES, int LANES>
struct ForwardWork<Fused<scalar_t, STAGES, LANES>> {
  template <int VB>
  struct At {
    static LSLU_CPU_INLINE void run(const DwconvArgs& a, int64_t first, int64_t last) {
      Fused<scalar_t, STAGES, LANES, VB>::forward(a, first, last);
    }
  };
};
template <typename F>
struct BackwardWork;
template <typename scalar_t, int STAGES, int LANES>
struct BackwardWork<Fused<scalar_t, STAGES, LANES>> {
  template <int VB>
  struct At {
    static LSLU_CPU_INLINE void run(const DwconvArgs& a, int64_t first, int64_t last) {
      Fused<scalar_t, STAGES, LANES, VB>::backward(a, first, last);
    }
  };
};

// isa.h's run_at_level with the level's vector bytes: Work<VB>::run(args...) compiled for the level.
template <template <int> class Work, typename... Args>
void run_native(CpuIsa isa, const Args&... args) {
#if defined(LSLU_CPU_X86_LEVELS)
  if (isa == CpuIsa::Avx512) return run_avx512<Work<64>>(args...);
  if (isa == CpuIsa::Avx2) return run_avx2<Work<32>>(args...);
#endif
  run_baseline<Work<16>>(args...);
}

// engine.h's parallel_ranges through run_native (backward too: its items are fixed parts, each with
// its own row of the partial buffers, so any split of them gives the same result).
template <template <int> class Work>
void parallel_ranges_native(int64_t items, int threads, const DwconvArgs& a) {
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(items, threads));
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t piece = 0; piece < pieces; ++piece) {
    int64_t first, last;
    range_of(piece, pieces, items, first, last);
    run_native<Work>(isa, a, first, last);
  }
}

bool no_work(const DwconvArgs& a) { return a.batch <= 0 || a.channels <= 0 || a.height <= 0 || a.width <= 0; }

void forward(const DwconvArgs& a, int threads) {
  if (no_work(a)) return;
  dispatch(a, [&](auto f) {
    using F = decltype(f);
    parallel_ranges_native<ForwardWork<F>::template At>(F::blocks(a) * ceil_div(a.batch, F::group_planes(a)), threads, a);
  });
}

int64_t backward_partials(const DwconvArgs& a) {
  int64_t parts = 1;
  if (!no_work(a)) dispatch(a, [&](auto f) { parts = decltype(f)::batch_parts(a); });
  return parts;
}

void backward(const DwconvArgs& a, int threads) {
  if (no_work(a)) return;
  dispatch(a, [&](auto f) {
    using F = decltype(f);
    parallel_ranges_native<BackwardWork<F>::template At>(a.partials * F::blocks(a), threads, a);
  });
}

}  // namespace

const CpuDwconvEntryPoints lslu_dwconv_cpu = {&forward, &backward, &backward_partials};

}  // namespace lslu_kernels
