"""LSLU in Triton (SPEC.md 1.1): forward, and a one-pass backward with per-channel theta/omega sums."""

import torch
import triton
import triton.language as tl

from .._layout import sum_partials
from ..reference import compute_dtype
from .common import compute_type, reduction_programs, relu, tile_config, tile_offsets


@triton.jit
def _series(x, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, n_stages: tl.constexpr):
    """h_{n_stages} of the series (h_0 = x), with each stage's parameters loaded per channel."""
    h = x
    for s in tl.static_range(n_stages):
        theta = tl.load(THETA + s * p_stride_s + c * p_stride_c, mask=c_mask, other=0.0).to(x.dtype)
        omega = tl.load(OMEGA + s * p_stride_s + c * p_stride_c, mask=c_mask, other=0.0).to(x.dtype)
        h = theta[None, :, None] * relu(h) + omega[None, :, None]
    return h


@triton.jit
def _lslu_forward_kernel(X, Y, THETA, OMEGA, outer, C, inner, n_i_blocks, n_tiles, p_stride_s, p_stride_c,
                         S: tl.constexpr, COMPUTE: tl.constexpr,
                         BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                         INT64: tl.constexpr):
    pid = tl.program_id(0)
    offsets, mask, c = tile_offsets(pid % n_tiles, pid // n_tiles, outer, C, inner, n_i_blocks,
                                    BLOCK_O, BLOCK_C, BLOCK_I, INT64)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    h = _series(x, THETA, OMEGA, c, c < C, p_stride_s, p_stride_c, S)
    tl.store(Y + offsets, relu(h).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _lslu_backward_kernel(X, DY, DX, THETA, OMEGA, DTHETA_PARTIAL, DOMEGA_PARTIAL,
                          outer, C, inner, n_i_blocks, n_tiles, n_programs, p_stride_s, p_stride_c,
                          S: tl.constexpr, S_POW2: tl.constexpr, COMPUTE: tl.constexpr,
                          BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                          INT64: tl.constexpr):
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
        offsets, mask, _ = tile_offsets(t, cb, outer, C, inner, n_i_blocks, BLOCK_O, BLOCK_C, BLOCK_I, INT64)
        x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
        g = tl.load(DY + offsets, mask=mask, other=0.0).to(COMPUTE)
        # e = dL/dh_s, from s = S down to 0; masked lanes have g = 0 and add nothing.
        # "h <= 0 gives 0" rather than "h > 0 passes": relu'(0) = 0 either way, and a
        # NaN h passes the gradient on, as torch.relu's backward does.
        e = tl.where(_series(x, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, S) <= 0, 0.0, g)
        for s in tl.static_range(S - 1, -1, -1):  # s: parameter row of stage s + 1
            h_prev = _series(x, THETA, OMEGA, c, c_mask, p_stride_s, p_stride_c, s)
            dtheta_s = tl.sum(tl.sum(e * relu(h_prev), axis=2), axis=0)
            domega_s = tl.sum(tl.sum(e, axis=2), axis=0)
            dtheta += tl.where(stage[:, None] == s, dtheta_s[None, :], 0.0)
            domega += tl.where(stage[:, None] == s, domega_s[None, :], 0.0)
            theta = tl.load(THETA + s * p_stride_s + c * p_stride_c, mask=c_mask, other=0.0).to(COMPUTE)
            e = tl.where(h_prev <= 0, 0.0, e * theta[None, :, None])
        tl.store(DX + offsets, e.to(DX.dtype.element_ty), mask=mask)
    partial = program * S * C + stage[:, None] * C + c[None, :]
    partial_mask = (stage < S)[:, None] & c_mask[None, :]
    tl.store(DTHETA_PARTIAL + partial, dtheta, mask=partial_mask)
    tl.store(DOMEGA_PARTIAL + partial, domega, mask=partial_mask)


def _param_strides(theta: torch.Tensor) -> tuple[int, int]:
    """(stage stride, channel stride) of a contiguous (S, C) or shared (S, 1) parameter."""
    return theta.shape[1], (0 if theta.shape[1] == 1 else 1)


def lslu_forward(x, theta, omega, *, outer, C, inner):
    y = torch.empty_like(x)
    cfg = tile_config(outer, C, inner, x.numel())
    p_stride_s, p_stride_c = _param_strides(theta)
    grid = (cfg["n_tiles"] * cfg["n_c_blocks"],)
    _lslu_forward_kernel[grid](
        x, y, theta, omega, outer, C, inner, cfg["n_i_blocks"], cfg["n_tiles"], p_stride_s, p_stride_c,
        S=theta.shape[0], COMPUTE=compute_type(x),
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"])
    return y


def lslu_backward(grad_output, x, theta, omega, *, outer, C, inner):
    grad_x = torch.empty_like(x)
    cfg = tile_config(outer, C, inner, x.numel())
    n_programs = reduction_programs(x.device, cfg["n_tiles"], cfg["n_c_blocks"])
    S = theta.shape[0]
    partial_dtype = compute_dtype(x)
    dtheta_partial = torch.empty((n_programs, S, C), dtype=partial_dtype, device=x.device)
    domega_partial = torch.empty((n_programs, S, C), dtype=partial_dtype, device=x.device)
    p_stride_s, p_stride_c = _param_strides(theta)
    grid = (n_programs * cfg["n_c_blocks"],)
    _lslu_backward_kernel[grid](
        x, grad_output, grad_x, theta, omega, dtheta_partial, domega_partial,
        outer, C, inner, cfg["n_i_blocks"], cfg["n_tiles"], n_programs, p_stride_s, p_stride_c,
        S=S, S_POW2=triton.next_power_of_2(S),
        COMPUTE=compute_type(x),
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"])
    return grad_x, sum_partials(dtheta_partial, theta), sum_partials(domega_partial, omega)
