"""LSLU in Triton (SPEC.md 1.1): forward, and a one-pass backward with per-channel theta/omega sums."""

import torch
import triton
import triton.language as tl

from .._layout import sum_partials
from ..reference import compute_dtype
from .common import compute_type, launch_directly, reduction_programs, relu, tile_config, tile_offsets

# Backward programs run this many warps: the tile's values per thread halve against 4 warps.
BACKWARD_WARPS = 8
# The backward's per-stage sums ([S_POW2, channels of a tile], two of them) stay in registers: at most this many
# values each, so tiles of many channels (channels-last, (B, L, C)) take fewer channels and more rows.
STAGE_SUM_ELEMENTS = 1024
# Without a register limit, ptxas fits some of these kernels into 64 registers (sm_80) and spills a few bytes;
# told it may use 96, it uses 72-96 and spills nothing. 96 registers still leave 2 blocks of 8 warps per SM (25%).
BACKWARD_MAX_REGISTERS = 96


@triton.jit
def lslu_stage(h, THETA, OMEGA, s, c, c_mask, p_stride_s, p_stride_c, CHANNEL_AXIS: tl.constexpr):
    """h_{s+1} from h_s: the parameters of row ``s`` (a runtime or constant stage) loaded per channel, as
    vectors (a load shaped like the tile would need a layout conversion through shared memory), then spread
    along the tile's channel axis: 1 for an ``(outer, C, inner)`` tile, 0 for the fused layer's
    ``(C, rows, cols)`` one."""
    theta = tl.load(THETA + s * p_stride_s + c * p_stride_c, mask=c_mask, other=0.0).to(h.dtype)
    omega = tl.load(OMEGA + s * p_stride_s + c * p_stride_c, mask=c_mask, other=0.0).to(h.dtype)
    if CHANNEL_AXIS == 0:
        return theta[:, None, None] * relu(h) + omega[:, None, None]
    else:
        return theta[None, :, None] * relu(h) + omega[None, :, None]


@triton.jit
def lslu_series(x, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, S: tl.constexpr, CHANNEL_AXIS: tl.constexpr):
    """lslu(x) on a tile (channel axis as for :func:`lslu_stage`): S rounds of relu then affine, then relu."""
    h = x
    for s in tl.static_range(S):
        h = lslu_stage(h, THETA, OMEGA, s, c, c_mask, p_stride_s, p_stride_c, CHANNEL_AXIS)
    return relu(h)


@triton.jit
def lslu_series_backward(x, g, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, n_stages, stage, dtheta, domega,
                         CHANNEL_AXIS: tl.constexpr):
    """dL/dx of y = lslu(x) on a tile given g = dL/dy, and the running per-stage sums ``dtheta``/``domega``
    (``[S_POW2, BLOCK_C]``, row ``s`` for stage ``s``; ``stage`` is ``arange(0, S_POW2)``) with this tile's
    added: sums over axis 2, then over the tile's other non-channel axis (masked lanes need g = 0).

    The stages run in loops over the runtime n_stages, not unrolled: each h_s is recomputed from x when it is
    needed (S(S+1)/2 stage evaluations), so registers hold x, g, e and one h whatever S is (unrolled, the
    compiler keeps every h_s of the series live)."""
    h = x
    for s in range(0, n_stages):
        h = lslu_stage(h, THETA, OMEGA, s, c, c_mask, p_stride_s, p_stride_c, CHANNEL_AXIS)
    # e = dL/dh_s, from s = S down to 0. "h <= 0 gives 0" rather than "h > 0 passes": relu'(0) = 0 either
    # way, and a NaN h passes the gradient on, as torch.relu's backward does.
    e = tl.where(h <= 0, 0.0, g)
    for j in range(0, n_stages):
        s = n_stages - 1 - j  # parameter row of stage s + 1
        h_prev = x
        for k in range(0, s):
            h_prev = lslu_stage(h_prev, THETA, OMEGA, k, c, c_mask, p_stride_s, p_stride_c, CHANNEL_AXIS)
        dtheta_s = tl.sum(tl.sum(e * relu(h_prev), axis=2), axis=1 - CHANNEL_AXIS)
        domega_s = tl.sum(tl.sum(e, axis=2), axis=1 - CHANNEL_AXIS)
        dtheta += tl.where(stage[:, None] == s, dtheta_s[None, :], 0.0)
        domega += tl.where(stage[:, None] == s, domega_s[None, :], 0.0)
        theta = tl.load(THETA + s * p_stride_s + c * p_stride_c, mask=c_mask, other=0.0).to(e.dtype)
        if CHANNEL_AXIS == 0:
            e = tl.where(h_prev <= 0, 0.0, e * theta[:, None, None])
        else:
            e = tl.where(h_prev <= 0, 0.0, e * theta[None, :, None])
    return e, dtheta, domega


@triton.jit
def _lslu_forward_kernel(X, Y, THETA, OMEGA, outer, C, inner, n_i_blocks, n_tiles, p_stride_s, p_stride_c,
                         S: tl.constexpr, COMPUTE: tl.constexpr,
                         BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                         INT64: tl.constexpr, RUN_MULTIPLE_C: tl.constexpr, RUN_MULTIPLE_I: tl.constexpr):
    pid = tl.program_id(0)
    offsets, mask, c = tile_offsets(pid % n_tiles, pid // n_tiles, outer, C, inner, n_i_blocks,
                                    BLOCK_O, BLOCK_C, BLOCK_I, INT64,
                                    RUN_MULTIPLE_C, RUN_MULTIPLE_I)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    y = lslu_series(x, THETA, OMEGA, c, c < C, p_stride_s, p_stride_c, S, 1)
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _lslu_backward_kernel(X, DY, DX, THETA, OMEGA, DTHETA_PARTIAL, DOMEGA_PARTIAL,
                          outer, C, inner, n_i_blocks, n_tiles, n_programs, p_stride_s, p_stride_c, n_stages,
                          S_POW2: tl.constexpr, COMPUTE: tl.constexpr,
                          BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                          INT64: tl.constexpr, RUN_MULTIPLE_C: tl.constexpr, RUN_MULTIPLE_I: tl.constexpr):
    pid = tl.program_id(0)
    program = pid % n_programs
    cb = pid // n_programs
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    stage = tl.arange(0, S_POW2)
    # Row s holds this program's running sum of dL/dtheta[s] (dL/domega[s]) for its channels.
    dtheta = tl.zeros([S_POW2, BLOCK_C], dtype=COMPUTE)
    domega = tl.zeros([S_POW2, BLOCK_C], dtype=COMPUTE)
    for t in range(program, n_tiles, n_programs):
        offsets, mask, _ = tile_offsets(t, cb, outer, C, inner, n_i_blocks, BLOCK_O, BLOCK_C, BLOCK_I, INT64,
                                    RUN_MULTIPLE_C, RUN_MULTIPLE_I)
        x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
        g = tl.load(DY + offsets, mask=mask, other=0.0).to(COMPUTE)
        # Masked lanes have g = 0 and add nothing to the sums.
        e, dtheta, domega = lslu_series_backward(x, g, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, n_stages,
                                                 stage, dtheta, domega, 1)
        tl.store(DX + offsets, e.to(DX.dtype.element_ty), mask=mask)
    partial = program * n_stages * C + stage[:, None] * C + c[None, :]
    partial_mask = (stage < n_stages)[:, None] & c_mask[None, :]
    tl.store(DTHETA_PARTIAL + partial, dtheta, mask=partial_mask)
    tl.store(DOMEGA_PARTIAL + partial, domega, mask=partial_mask)


def _param_strides(theta: torch.Tensor) -> tuple[int, int]:
    """(stage stride, channel stride) of a contiguous (S, C) or shared (S, 1) parameter."""
    return theta.shape[1], (0 if theta.shape[1] == 1 else 1)


def lslu_forward(x, theta, omega, *, outer, C, inner, wrap=launch_directly):
    y = torch.empty_like(x)
    cfg = tile_config(outer, C, inner, x.numel())
    p_stride_s, p_stride_c = _param_strides(theta)
    grid = (cfg["n_tiles"] * cfg["n_c_blocks"],)
    wrap(_lslu_forward_kernel)[grid](
        x, y, theta, omega, outer, C, inner, cfg["n_i_blocks"], cfg["n_tiles"], p_stride_s, p_stride_c,
        S=theta.shape[0], COMPUTE=compute_type(x),
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"],
        RUN_MULTIPLE_C=cfg["RUN_MULTIPLE_C"], RUN_MULTIPLE_I=cfg["RUN_MULTIPLE_I"])
    return y


def lslu_backward(grad_output, x, theta, omega, *, outer, C, inner, wrap=launch_directly):
    grad_x = torch.empty_like(x)
    S = theta.shape[0]
    s_pow2 = triton.next_power_of_2(S)
    cfg = tile_config(outer, C, inner, x.numel(), max_block_c=max(1, STAGE_SUM_ELEMENTS // s_pow2))
    n_programs = reduction_programs(x.device, cfg["n_tiles"], cfg["n_c_blocks"])
    partial_dtype = compute_dtype(x)
    dtheta_partial = torch.empty((n_programs, S, C), dtype=partial_dtype, device=x.device)
    domega_partial = torch.empty((n_programs, S, C), dtype=partial_dtype, device=x.device)
    p_stride_s, p_stride_c = _param_strides(theta)
    grid = (n_programs * cfg["n_c_blocks"],)
    wrap(_lslu_backward_kernel)[grid](
        x, grad_output, grad_x, theta, omega, dtheta_partial, domega_partial,
        outer, C, inner, cfg["n_i_blocks"], cfg["n_tiles"], n_programs, p_stride_s, p_stride_c, S,
        S_POW2=s_pow2, COMPUTE=compute_type(x),
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"],
        RUN_MULTIPLE_C=cfg["RUN_MULTIPLE_C"], RUN_MULTIPLE_I=cfg["RUN_MULTIPLE_I"],
        num_warps=BACKWARD_WARPS, maxnreg=BACKWARD_MAX_REGISTERS)
    return grad_x, sum_partials(dtheta_partial, theta), sum_partials(domega_partial, omega)
