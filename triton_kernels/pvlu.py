"""PVLU in Triton (SPEC.md 1.2): forward, and a one-pass backward with per-channel alpha/beta sums.

``tl.sin`` / ``tl.cos`` lower to libdevice's accurate ``__nv_sinf`` / ``__nv_sin`` (and cosines), with
the full argument reduction for large arguments, not to the approximate ``sin.approx.f32``
(``__sinf``); the interpreter uses NumPy's.
"""

import torch
import triton
import triton.language as tl

from .._layout import sum_partials
from ..reference import compute_dtype
from .common import (
    channel_stride,
    compute_type,
    launch_directly,
    load_channel,
    reduction_programs,
    relu,
    tile_config,
    tile_offsets,
)

# Backward programs run this many warps: sin and cos of each element (libdevice's accurate ones) and the tile's
# values spill with 4 warps (16 elements per thread) in channels-last and (B, L, C) tiles.
BACKWARD_WARPS = 8
# Without a register limit, Triton 3.6's ptxas fits NCHW tiles into 80 registers and spills 8-12 bytes around
# the calls of libdevice's sin/cos reduction; told it may use 128 (25% occupancy at 8 warps), it spills nothing
# (and Triton 3.9's takes fewer registers than without the limit).
BACKWARD_MAX_REGISTERS = 128
# Without a register limit, ptxas fits the forward kernel into 56 registers and spills a few bytes (sm_80, sm_90);
# told it may use 96, it spills nothing (4 warps at 96 registers: 5 blocks per SM, 31%).
FORWARD_MAX_REGISTERS = 96


@triton.jit
def _pvlu_forward_kernel(X, Y, ALPHA, BETA, outer, C, inner, n_i_blocks, n_tiles, p_stride_c,
                         COMPUTE: tl.constexpr,
                         BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                         INT64: tl.constexpr, RUN_MULTIPLE_C: tl.constexpr, RUN_MULTIPLE_I: tl.constexpr):
    pid = tl.program_id(0)
    offsets, mask, c = tile_offsets(pid % n_tiles, pid // n_tiles, outer, C, inner, n_i_blocks,
                                    BLOCK_O, BLOCK_C, BLOCK_I, INT64,
                                    RUN_MULTIPLE_C, RUN_MULTIPLE_I)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    alpha = load_channel(ALPHA, c, c < C, p_stride_c, COMPUTE)
    beta = load_channel(BETA, c, c < C, p_stride_c, COMPUTE)
    y = relu(x) + alpha * tl.sin(beta * x)
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _pvlu_backward_kernel(X, DY, DX, ALPHA, BETA, DALPHA_PARTIAL, DBETA_PARTIAL,
                          outer, C, inner, n_i_blocks, n_tiles, n_programs, p_stride_c,
                          COMPUTE: tl.constexpr,
                          BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                          INT64: tl.constexpr, RUN_MULTIPLE_C: tl.constexpr, RUN_MULTIPLE_I: tl.constexpr):
    pid = tl.program_id(0)
    program = pid % n_programs
    cb = pid // n_programs
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    alpha = load_channel(ALPHA, c, c_mask, p_stride_c, COMPUTE)
    beta = load_channel(BETA, c, c_mask, p_stride_c, COMPUTE)
    # This program's running sums of dL/dalpha and dL/dbeta for its channels.
    dalpha = tl.zeros([BLOCK_C], dtype=COMPUTE)
    dbeta = tl.zeros([BLOCK_C], dtype=COMPUTE)
    for t in range(program, n_tiles, n_programs):
        offsets, mask, _ = tile_offsets(t, cb, outer, C, inner, n_i_blocks, BLOCK_O, BLOCK_C, BLOCK_I, INT64,
                                    RUN_MULTIPLE_C, RUN_MULTIPLE_I)
        x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
        g = tl.load(DY + offsets, mask=mask, other=0.0).to(COMPUTE)
        # Masked lanes have x = 0 and g = 0 and add nothing.
        bx = beta * x
        sin_bx = tl.sin(bx)
        g_cos_bx = g * tl.cos(bx)
        # relu'(0) = 0, and a NaN x passes the gradient on, as torch.relu's backward does.
        dx = tl.where(x <= 0, 0.0, g) + g_cos_bx * alpha * beta
        tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=mask)
        dalpha += tl.sum(tl.sum(g * sin_bx, axis=2), axis=0)
        dbeta += tl.sum(tl.sum(g_cos_bx * alpha * x, axis=2), axis=0)
    partial = program * C + c
    tl.store(DALPHA_PARTIAL + partial, dalpha, mask=c_mask)
    tl.store(DBETA_PARTIAL + partial, dbeta, mask=c_mask)


def pvlu_forward(x, alpha, beta, *, outer, C, inner, wrap=launch_directly):
    y = torch.empty_like(x)
    cfg = tile_config(outer, C, inner, x.numel())
    grid = (cfg["n_tiles"] * cfg["n_c_blocks"],)
    wrap(_pvlu_forward_kernel)[grid](
        x, y, alpha, beta, outer, C, inner, cfg["n_i_blocks"], cfg["n_tiles"], channel_stride(alpha),
        COMPUTE=compute_type(x),
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"],
        RUN_MULTIPLE_C=cfg["RUN_MULTIPLE_C"], RUN_MULTIPLE_I=cfg["RUN_MULTIPLE_I"],
        maxnreg=FORWARD_MAX_REGISTERS)
    return y


def pvlu_backward(grad_output, x, alpha, beta, *, outer, C, inner, wrap=launch_directly):
    grad_x = torch.empty_like(x)
    cfg = tile_config(outer, C, inner, x.numel())
    n_programs = reduction_programs(x.device, cfg["n_tiles"], cfg["n_c_blocks"])
    partial_dtype = compute_dtype(x)
    dalpha_partial = torch.empty((n_programs, C), dtype=partial_dtype, device=x.device)
    dbeta_partial = torch.empty((n_programs, C), dtype=partial_dtype, device=x.device)
    grid = (n_programs * cfg["n_c_blocks"],)
    wrap(_pvlu_backward_kernel)[grid](
        x, grad_output, grad_x, alpha, beta, dalpha_partial, dbeta_partial,
        outer, C, inner, cfg["n_i_blocks"], cfg["n_tiles"], n_programs, channel_stride(alpha),
        COMPUTE=compute_type(x),
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"],
        RUN_MULTIPLE_C=cfg["RUN_MULTIPLE_C"], RUN_MULTIPLE_I=cfg["RUN_MULTIPLE_I"],
        num_warps=BACKWARD_WARPS, maxnreg=BACKWARD_MAX_REGISTERS)
    return grad_x, sum_partials(dalpha_partial, alpha), sum_partials(dbeta_partial, beta)
