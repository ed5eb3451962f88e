"""The paper's full layer fused in Triton (SPEC.md 1.1): ``y = depthwise_conv2d(lslu(x), weight, padding S) + bias``.

The kernel is ``K x K`` with ``K = 2S + 1``. A program owns an output tile ``[BLOCK_C, OUT_H, OUT_W]`` of one
image: it loads the input tile with its halo, ``[BLOCK_C, HALO_H, HALO_W]``, once, applies the series to every
element of it once, zeroes what lies outside the image (the convolution pads ``lslu(x)``, not ``x``), and forms
the ``K * K`` taps from that activated tile in registers: ``tl.gather`` along the rows picks the tile's rows
shifted by ``ky`` (``K`` gathers), and along the columns of that the columns shifted by ``kx`` (``K * K``).
Triton has no register shifts; the gathers go through shared memory where the shift crosses warps.
Neighbouring tiles overlap by their halos, so an element of ``x`` is read (from L2 after the first) and put
through the series once per tile whose halo holds it: ``HALO_H * HALO_W / (OUT_H * OUT_W)`` times on average,
never once per tap (9 to 289 times). With power-of-two tiles that is about 4 (5.2 over a 56x56 image whose
last tiles are partial; 1.3-2.6 for 14x14 and S = 1); output tiles of ``HALO - 2S`` rows/columns (masked
lanes) would bring it to 1.3-2.

One kernel serves NCHW and channels-last: the tile walks ``x`` through its element strides, and Triton's
specialization of a stride equal to 1 tells it which tile axis is contiguous (the image row for NCHW, the
channels for channels-last). For 128-bit accesses along NCHW rows the halo starts ``PAD_W`` columns left of
the output tile, ``S`` rounded up to a whole 16-byte vector, when the row length allows aligned vectors.

The backward is one kernel over the same tiles: the input gradient is the series' backward of the transposed
convolution of ``grad_y`` (the forward's taps on the ``grad_y`` halo with the kernel flipped), with the series
recomputed from ``x`` (only ``x`` is saved). Each tile writes its own partial sums (``grad_weight`` per tap and
channel, ``grad_theta``/``grad_omega`` per stage and channel, ``grad_bias`` per channel), summed afterwards
over the tiles in a fixed order: no atomics, bitwise the same from run to run whatever the grid's scheduling.
"""

import math

import torch
import triton
import triton.language as tl

from .._numerics import compute_dtype, sum_partials
from .common import INT64_THRESHOLD, compute_type
from .lslu import lslu_series, lslu_series_backward

# Most elements of the activated input tile (its halo included) a program holds: with the row-shifted tile,
# the accumulator and a tap, about 4x this in registers at 4 warps (8 warps for the larger tiles).
HALO_ELEMENTS = 2048
# Channels-last tiles hold one 16-byte vector of channels; their halos need at least 2S + 1 rows and columns.
CHANNELS_LAST_HALO_ELEMENTS = 8192
MAX_STAGES = 8
# Unbounded, ptxas gives the backward 168-255 registers (two halo tiles and the tap loops); 128 still leaves
# 25% occupancy at any warp count.
BACKWARD_MAX_REGISTERS = 128


def _prev_pow2(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


@triton.jit
def _tile_geometry(pid, C, H, W, n_tiles_h, n_tiles_w, n_c_blocks,
                   BLOCK_C: tl.constexpr, OUT_H: tl.constexpr, OUT_W: tl.constexpr,
                   HALO_H: tl.constexpr, HALO_W: tl.constexpr, S: tl.constexpr, PAD_W: tl.constexpr):
    """Program ``pid``'s image, channels and the rows/columns of its output tile and of its halo tile.

    Programs are numbered (image, channel block, tile row, tile column), the tile column fastest; ``tile`` is
    the program's tile within its image, (tile row, tile column), which names its row of partial sums.
    """
    tw = pid % n_tiles_w
    th = (pid // n_tiles_w) % n_tiles_h
    cb = (pid // (n_tiles_w * n_tiles_h)) % n_c_blocks
    n = pid // (n_tiles_w * n_tiles_h * n_c_blocks)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = th * OUT_H + tl.arange(0, OUT_H)
    cols = tw * OUT_W + tl.arange(0, OUT_W)
    halo_rows = th * OUT_H - S + tl.arange(0, HALO_H)
    halo_cols = tw * OUT_W - PAD_W + tl.arange(0, HALO_W)
    return n, c, rows, cols, halo_rows, halo_cols, th * n_tiles_w + tw


@triton.jit
def _offsets(n, c, rows, cols, C, H, W, stride_n, stride_c, stride_h, stride_w,
             INT64: tl.constexpr, RUN_MULTIPLE_W: tl.constexpr, RUN_MULTIPLE_C: tl.constexpr):
    """Element offsets and in-image mask of the ``[channels, rows, cols]`` block of image ``n``.

    ``RUN_MULTIPLE_W`` (NCHW) / ``RUN_MULTIPLE_C`` (channels-last): the host's hint that the contiguous runs
    (image rows / channel vectors) start at multiples of that many elements and the mask is constant over
    such groups; Triton's launch only tells the compiler whether an integer is a multiple of 16.
    """
    if INT64:
        n = n.to(tl.int64)
        c_off = c.to(tl.int64)
        r_off = rows.to(tl.int64)
        w_off = cols.to(tl.int64)
    else:
        c_off = c
        r_off = rows
        w_off = cols
    c_mask = c < C
    w_mask = (cols >= 0) & (cols < W)
    outside = n * stride_n + c_off[:, None, None] * stride_c + r_off[None, :, None] * stride_h
    if RUN_MULTIPLE_W > 1:
        outside = tl.multiple_of(outside, [1, 1, RUN_MULTIPLE_W])
        w_mask = tl.max_constancy(w_mask, [RUN_MULTIPLE_W])
    within = w_off[None, None, :] * stride_w
    if RUN_MULTIPLE_C > 1:
        within = tl.multiple_of(within, [RUN_MULTIPLE_C, 1, 1])
        c_mask = tl.max_constancy(c_mask, [RUN_MULTIPLE_C])
    mask = c_mask[:, None, None] & ((rows >= 0) & (rows < H))[None, :, None] & w_mask[None, None, :]
    return outside + within, mask


@triton.jit
def _shift_rows(src, ky, BLOCK_C: tl.constexpr, OUT_H: tl.constexpr, HALO_H: tl.constexpr, HALO_W: tl.constexpr):
    """Rows ``ky .. ky + OUT_H - 1`` of the halo tile ``src``: the output rows shifted by ``ky - S``.

    Indices past the halo (only for output rows past the image, which are masked) are clamped into it.
    """
    r = tl.minimum(tl.arange(0, OUT_H) + ky, HALO_H - 1)
    return tl.gather(src, tl.broadcast_to(r[None, :, None], (BLOCK_C, OUT_H, HALO_W)), 1)


@triton.jit
def _shift_cols(rows, kx, S: tl.constexpr, PAD_W: tl.constexpr, BLOCK_C: tl.constexpr, OUT_H: tl.constexpr,
                OUT_W: tl.constexpr, HALO_W: tl.constexpr):
    """The columns of ``rows`` (a row-shifted halo tile) under the output columns shifted by ``kx - S``."""
    q = tl.minimum(tl.arange(0, OUT_W) + (PAD_W - S + kx), HALO_W - 1)
    return tl.gather(rows, tl.broadcast_to(q[None, None, :], (BLOCK_C, OUT_H, OUT_W)), 2)


@triton.jit
def _convolve(src, WEIGHT, c, c_mask, FLIP: tl.constexpr, S: tl.constexpr, PAD_W: tl.constexpr,
              BLOCK_C: tl.constexpr, OUT_H: tl.constexpr, OUT_W: tl.constexpr,
              HALO_H: tl.constexpr, HALO_W: tl.constexpr):
    """``sum_{ky,kx} weight[c, ky, kx] * src[c, i + ky - S, j + kx - S]`` on the output tile, from the halo tile.

    ``FLIP``: the transposed convolution (the weight read at (K-1-ky, K-1-kx) for the shift (ky, kx)).
    """
    K: tl.constexpr = 2 * S + 1
    acc = tl.zeros([BLOCK_C, OUT_H, OUT_W], dtype=src.dtype)
    # Kernel rows in a runtime loop, the columns unrolled: K gathers of code, not K * K (which at K = 17
    # takes the compiler minutes per kernel).
    for ky in range(0, K):
        rows = _shift_rows(src, ky, BLOCK_C, OUT_H, HALO_H, HALO_W)
        if FLIP:
            w_row = WEIGHT + c * (K * K) + (K - 1 - ky) * K
        else:
            w_row = WEIGHT + c * (K * K) + ky * K
        for kx in tl.static_range(K):
            tap = _shift_cols(rows, kx, S, PAD_W, BLOCK_C, OUT_H, OUT_W, HALO_W)
            if FLIP:
                w = tl.load(w_row + (K - 1 - kx), mask=c_mask, other=0.0).to(src.dtype)
            else:
                w = tl.load(w_row + kx, mask=c_mask, other=0.0).to(src.dtype)
            acc += w[:, None, None] * tap
    return acc


@triton.jit
def _lslu_dwconv_forward_kernel(
        X, Y, THETA, OMEGA, WEIGHT, BIAS,
        C, H, W, stride_n, stride_c, stride_h, stride_w, n_tiles_h, n_tiles_w, n_c_blocks,
        p_stride_s, p_stride_c,
        S: tl.constexpr, HAS_BIAS: tl.constexpr, COMPUTE: tl.constexpr,
        BLOCK_C: tl.constexpr, OUT_H: tl.constexpr, OUT_W: tl.constexpr,
        HALO_H: tl.constexpr, HALO_W: tl.constexpr, PAD_W: tl.constexpr,
        INT64: tl.constexpr, RUN_MULTIPLE_W: tl.constexpr, RUN_MULTIPLE_C: tl.constexpr):
    n, c, rows, cols, halo_rows, halo_cols, _ = _tile_geometry(
        tl.program_id(0), C, H, W, n_tiles_h, n_tiles_w, n_c_blocks,
        BLOCK_C, OUT_H, OUT_W, HALO_H, HALO_W, S, PAD_W)
    c_mask = c < C
    offsets, mask = _offsets(n, c, halo_rows, halo_cols, C, H, W, stride_n, stride_c, stride_h, stride_w,
                             INT64, RUN_MULTIPLE_W, RUN_MULTIPLE_C)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    # The convolution's zero padding is of lslu(x): outside the image the activation is 0, not lslu(0).
    a = tl.where(mask, lslu_series(x, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, S, 0), 0.0)
    acc = _convolve(a, WEIGHT, c, c_mask, False, S, PAD_W, BLOCK_C, OUT_H, OUT_W, HALO_H, HALO_W)
    if HAS_BIAS:
        acc += tl.load(BIAS + c, mask=c_mask, other=0.0).to(COMPUTE)[:, None, None]
    out_offsets, out_mask = _offsets(n, c, rows, cols, C, H, W, stride_n, stride_c, stride_h, stride_w,
                                     INT64, RUN_MULTIPLE_W, RUN_MULTIPLE_C)
    tl.store(Y + out_offsets, acc.to(Y.dtype.element_ty), mask=out_mask)


@triton.jit
def _lslu_dwconv_backward_kernel(
        X, DY, DX, THETA, OMEGA, WEIGHT, DWEIGHT_PARTIAL, DTHETA_PARTIAL, DOMEGA_PARTIAL, DBIAS_PARTIAL,
        C, H, W, stride_n, stride_c, stride_h, stride_w, n_tiles_h, n_tiles_w, n_c_blocks,
        p_stride_s, p_stride_c, n_stages,
        S: tl.constexpr, S_POW2: tl.constexpr, COMPUTE: tl.constexpr,
        BLOCK_C: tl.constexpr, OUT_H: tl.constexpr, OUT_W: tl.constexpr,
        HALO_H: tl.constexpr, HALO_W: tl.constexpr, PAD_W: tl.constexpr,
        INT64: tl.constexpr, RUN_MULTIPLE_W: tl.constexpr, RUN_MULTIPLE_C: tl.constexpr):
    K: tl.constexpr = 2 * S + 1
    n, c, rows, cols, halo_rows, halo_cols, tile = _tile_geometry(
        tl.program_id(0), C, H, W, n_tiles_h, n_tiles_w, n_c_blocks,
        BLOCK_C, OUT_H, OUT_W, HALO_H, HALO_W, S, PAD_W)
    c_mask = c < C
    # This program's row of partial sums: (image, tile); the channel block picks the columns.
    partial_row = n * (n_tiles_h * n_tiles_w) + tile
    if INT64:
        partial_row = partial_row.to(tl.int64)
    halo_offsets, halo_mask = _offsets(n, c, halo_rows, halo_cols, C, H, W, stride_n, stride_c, stride_h,
                                       stride_w, INT64, RUN_MULTIPLE_W, RUN_MULTIPLE_C)
    offsets, mask = _offsets(n, c, rows, cols, C, H, W, stride_n, stride_c, stride_h, stride_w,
                             INT64, RUN_MULTIPLE_W, RUN_MULTIPLE_C)
    g = tl.load(DY + offsets, mask=mask, other=0.0).to(COMPUTE)
    tl.store(DBIAS_PARTIAL + partial_row * C + c, tl.sum(tl.sum(g, axis=2), axis=1), mask=c_mask)

    # grad_weight[c, ky, kx] = sum over the tile of g * a shifted by (ky - S, kx - S), a = lslu(x) on the halo.
    x_halo = tl.load(X + halo_offsets, mask=halo_mask, other=0.0).to(COMPUTE)
    a = tl.where(halo_mask, lslu_series(x_halo, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, S, 0), 0.0)
    for ky in range(0, K):
        rows_a = _shift_rows(a, ky, BLOCK_C, OUT_H, HALO_H, HALO_W)
        for kx in tl.static_range(K):
            tap = _shift_cols(rows_a, kx, S, PAD_W, BLOCK_C, OUT_H, OUT_W, HALO_W)
            dw = tl.sum(tl.sum(g * tap, axis=2), axis=1)
            tl.store(DWEIGHT_PARTIAL + (partial_row * (K * K) + ky * K + kx) * C + c, dw, mask=c_mask)

    # dL/da on the tile: the transposed convolution of grad_y (its halo) with the kernel.
    g_halo = tl.load(DY + halo_offsets, mask=halo_mask, other=0.0).to(COMPUTE)
    da = _convolve(g_halo, WEIGHT, c, c_mask, True, S, PAD_W, BLOCK_C, OUT_H, OUT_W, HALO_H, HALO_W)
    # Positions past the image have neighbours in it: their dL/da must not reach the stage sums.
    da = tl.where(mask, da, 0.0)

    # The series' backward on the tile, as the pointwise LSLU backward's.
    x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    stage = tl.arange(0, S_POW2)
    dtheta = tl.zeros([S_POW2, BLOCK_C], dtype=COMPUTE)
    domega = tl.zeros([S_POW2, BLOCK_C], dtype=COMPUTE)
    e, dtheta, domega = lslu_series_backward(x, da, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, n_stages,
                                             stage, dtheta, domega, 0)
    tl.store(DX + offsets, e.to(DX.dtype.element_ty), mask=mask)
    partial = partial_row * (n_stages * C) + stage[:, None] * C + c[None, :]
    partial_mask = (stage < n_stages)[:, None] & c_mask[None, :]
    tl.store(DTHETA_PARTIAL + partial, dtheta, mask=partial_mask)
    tl.store(DOMEGA_PARTIAL + partial, domega, mask=partial_mask)


def tile_config(x: torch.Tensor, stages: int) -> dict:
    """Tile shapes, halo, grid and hints for ``x`` (N, C, H, W) and ``stages`` = S.

    NCHW: one channel per tile, the output tile up to 32 columns (and as many rows as keep the halo tile within
    ``HALO_ELEMENTS``); its halo starts ``PAD_W`` columns to the left, S rounded up to a 16-byte vector when the
    row length is a multiple of one (so that the halo's loads are aligned vectors too). Channels-last: a
    16-byte vector of channels per tile and a square spatial tile. Output tiles are powers of two; the halo
    tile is the next power of two holding the output tile's rows/columns (those in the image) and the halo.
    """
    N, C, H, W = x.shape
    vector = max(1, 16 // x.element_size())
    channels_last = not x.is_contiguous()  # dense in one of the two (checked by the host functions)
    S = stages
    if channels_last:
        block_c = min(triton.next_power_of_2(C), vector)
        pad_w = S
        budget = CHANNELS_LAST_HALO_ELEMENTS // block_c
        side = max(triton.next_power_of_2(2 * S + 2), _prev_pow2(int(math.isqrt(budget))))
        out_h = min(_prev_pow2(side - 2 * S), triton.next_power_of_2(H))
        out_w = min(_prev_pow2(side - 2 * S), triton.next_power_of_2(W))
        run_multiple_w, run_multiple_c = 1, min(math.gcd(C, 16), block_c)
    else:
        block_c = 1
        pad_w = -(-S // vector) * vector if W % vector == 0 else S
        out_w = min(32, triton.next_power_of_2(W))
        halo_w = triton.next_power_of_2(min(out_w, W) + pad_w + S)
        out_w = min(_prev_pow2(halo_w - pad_w - S), triton.next_power_of_2(W))
        rows_budget = max(triton.next_power_of_2(2 * S + 2), HALO_ELEMENTS // halo_w)
        out_h = min(_prev_pow2(rows_budget - 2 * S), triton.next_power_of_2(H))
        run_multiple_w, run_multiple_c = min(math.gcd(W, 16), out_w), 1
    halo_h = triton.next_power_of_2(min(out_h, H) + 2 * S)
    halo_w = triton.next_power_of_2(min(out_w, W) + pad_w + S)
    n_tiles_h, n_tiles_w, n_c_blocks = triton.cdiv(H, out_h), triton.cdiv(W, out_w), triton.cdiv(C, block_c)
    halo_elements = block_c * halo_h * halo_w
    # Warps: as many as give each thread at least one 16-byte vector of the output tile (its stores are then
    # 128 bits wide); the large channels-last halos take 8 or 16, about 16 halo elements per thread.
    out_vectors = block_c * out_h * out_w // vector
    most_warps = 16 if halo_elements > 4096 else 8 if halo_elements > 2048 else 4
    num_warps = max(1, min(most_warps, out_vectors // 32))
    return dict(
        BLOCK_C=block_c, OUT_H=out_h, OUT_W=out_w, HALO_H=halo_h, HALO_W=halo_w, PAD_W=pad_w,
        n_tiles_h=n_tiles_h, n_tiles_w=n_tiles_w, n_c_blocks=n_c_blocks,
        channels_last=channels_last, programs=N * n_c_blocks * n_tiles_h * n_tiles_w,
        # The weight's partial sums (a row of K*K per tile and channel) can outgrow a small-image x.
        INT64=max(x.numel(), N * n_tiles_h * n_tiles_w * (2 * S + 1) ** 2 * C) >= INT64_THRESHOLD,
        RUN_MULTIPLE_W=run_multiple_w, RUN_MULTIPLE_C=run_multiple_c,
        num_warps=num_warps,
    )


def _param_strides(theta: torch.Tensor) -> tuple[int, int]:
    """(stage stride, channel stride) of a contiguous (S, C) or shared (S, 1) parameter."""
    return theta.shape[1], (0 if theta.shape[1] == 1 else 1)


def _check(x, theta, omega, weight, stages):
    if x.dim() != 4:
        raise ValueError(f"lslu_dwconv: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"lslu_dwconv: x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        raise ValueError("lslu_dwconv: x must be contiguous or channels-last contiguous")
    S = theta.shape[0]
    if stages != S or not 1 <= S <= MAX_STAGES:
        raise ValueError(f"lslu_dwconv: stages must equal theta's rows and lie in 1..{MAX_STAGES}, "
                         f"got stages = {stages}, theta {tuple(theta.shape)}")
    C = x.shape[1]
    K = 2 * S + 1
    if tuple(weight.shape) != (C, 1, K, K) or not weight.is_contiguous():
        raise ValueError(f"lslu_dwconv: weight must be contiguous (C, 1, 2S+1, 2S+1) = ({C}, 1, {K}, {K}), "
                         f"got {tuple(weight.shape)}")
    if theta.shape != omega.shape or theta.shape[1] not in (1, C) or not theta.is_contiguous() \
            or not omega.is_contiguous():
        raise ValueError(f"lslu_dwconv: theta and omega must be contiguous (S, C) or (S, 1), "
                         f"got {tuple(theta.shape)} and {tuple(omega.shape)}")


def _launch_args(x, cfg):
    """Shape, element strides and tile counts. The strides are those of x's memory format, not x.stride():
    a size-1 axis may have any stride, and the hints take the row (NCHW) or pixel (channels-last) strides
    to be multiples of the run."""
    N, C, H, W = x.shape
    strides = (H * W * C, 1, W * C, C) if cfg["channels_last"] else (C * H * W, H * W, W, 1)
    return (C, H, W, *strides, cfg["n_tiles_h"], cfg["n_tiles_w"], cfg["n_c_blocks"])


def _tile_constexprs(cfg):
    return {k: cfg[k] for k in ("BLOCK_C", "OUT_H", "OUT_W", "HALO_H", "HALO_W", "PAD_W", "INT64",
                                "RUN_MULTIPLE_W", "RUN_MULTIPLE_C")}


def forward(x, theta, omega, weight, bias, stages):
    """``depthwise_conv2d(lslu(x; theta, omega), weight, padding=S, groups=C) + bias`` in one kernel.

    x: (N, C, H, W), contiguous or channels-last; theta, omega: (S, C) or (S, 1) in the compute dtype;
    weight: (C, 1, 2S+1, 2S+1) contiguous in x's dtype; bias: (C,) or None; stages: S (1..8).
    Returns y with x's shape, dtype and memory format.
    """
    _check(x, theta, omega, weight, stages)
    if bias is not None and (tuple(bias.shape) != (x.shape[1],) or not bias.is_contiguous()):
        raise ValueError(f"lslu_dwconv: bias must be None or contiguous ({x.shape[1]},), got {tuple(bias.shape)}")
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    cfg = tile_config(x, stages)
    p_stride_s, p_stride_c = _param_strides(theta)
    _lslu_dwconv_forward_kernel[(cfg["programs"],)](
        x, y, theta, omega, weight, bias if bias is not None else weight,
        *_launch_args(x, cfg), p_stride_s, p_stride_c,
        S=stages, HAS_BIAS=bias is not None, COMPUTE=compute_type(x), **_tile_constexprs(cfg),
        num_warps=cfg["num_warps"])
    return y


def backward(grad_y, x, theta, omega, weight, stages):
    """Gradients of :func:`forward`: ``(grad_x, grad_theta, grad_omega, grad_weight, grad_bias)``.

    grad_y is walked with x's strides (copied to them when it has others); grad_x has x's memory format,
    grad_theta/grad_omega theta's shape and dtype, grad_weight weight's; grad_bias is (C,) in weight's dtype
    (the caller drops it when the layer has no bias). The series is recomputed from x.
    """
    _check(x, theta, omega, weight, stages)
    if grad_y.shape != x.shape:
        raise ValueError(f"lslu_dwconv: grad_y has shape {tuple(grad_y.shape)}, x {tuple(x.shape)}")
    if grad_y.dtype != x.dtype or grad_y.stride() != x.stride():
        grad_y = torch.empty_like(x).copy_(grad_y)
    N, C, H, W = x.shape
    K = 2 * stages + 1
    grad_x = torch.empty_like(x)
    partial_dtype = compute_dtype(x)
    if x.numel() == 0:
        zeros = lambda p: torch.zeros_like(p)  # noqa: E731
        return grad_x, zeros(theta), zeros(omega), zeros(weight), torch.zeros(C, dtype=weight.dtype,
                                                                              device=x.device)
    cfg = tile_config(x, stages)
    rows = N * cfg["n_tiles_h"] * cfg["n_tiles_w"]
    dweight_partial = torch.empty((rows, K * K, C), dtype=partial_dtype, device=x.device)
    dtheta_partial = torch.empty((rows, stages, C), dtype=partial_dtype, device=x.device)
    domega_partial = torch.empty((rows, stages, C), dtype=partial_dtype, device=x.device)
    dbias_partial = torch.empty((rows, C), dtype=partial_dtype, device=x.device)
    p_stride_s, p_stride_c = _param_strides(theta)
    _lslu_dwconv_backward_kernel[(cfg["programs"],)](
        x, grad_y, grad_x, theta, omega, weight, dweight_partial, dtheta_partial, domega_partial, dbias_partial,
        *_launch_args(x, cfg), p_stride_s, p_stride_c, stages,
        S=stages, S_POW2=triton.next_power_of_2(stages), COMPUTE=compute_type(x), **_tile_constexprs(cfg),
        num_warps=cfg["num_warps"], maxnreg=BACKWARD_MAX_REGISTERS)
    grad_weight = dweight_partial.sum(0).t().reshape(C, 1, K, K).to(weight.dtype)
    grad_bias = dbias_partial.sum(0).to(weight.dtype)
    return grad_x, sum_partials(dtheta_partial, theta), sum_partials(domega_partial, omega), grad_weight, grad_bias
