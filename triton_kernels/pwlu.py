"""PWLU in Triton (SPEC.md 1.3): forward, and a one-pass backward with per-channel parameter sums.

Every element follows ``reference.pwlu``'s rules: regions tested in the order left (``x < B_L``),
right (``x >= B_R``), inside; ``u = (x - B_L) / d`` with ``d = (B_R - B_L) / N`` computed as the
reference does, with IEEE-rounded divisions (Triton's float32 ``/`` is not, on NVIDIA GPUs), so that
inputs on or near an interval edge pick the same interval; the interval index is made finite
(NaN gives 0) and clamped to ``[0, N-1]`` before any table address is formed; outside the bounds
the width is 1, so crossed bounds (``B_R <= B_L``) never divide by a width ``<= 0``.

The backward mirrors what autograd computes through the reference's ``torch.where`` branches,
including the IEEE products of a zero gradient with an infinite or NaN value (``dK_L`` gets
``0 * (x - B_L) = NaN`` from an input ``+inf``, as the reference's does). The gradient of the
``N+1`` points is a per-channel scatter-add done without atomics: for each interval ``j`` in turn, a
tile sums the contributions of its elements whose interval is ``j`` (a fixed-order reduction in the
tile's own layout, so the element loads stay 128 bits wide and no ``[tile, bins]`` selection is ever
held in registers); each program keeps its ``[channels, bins]`` sums in registers and writes them once.

Both kernels receive ``C`` and ``inner`` as counts of ``PACK_C`` / ``PACK_I`` blocks (the largest
power of two, at most 16 bytes of elements, dividing the axis contiguous in memory): the compiler then
knows that every row or channel map starts on a pack boundary and uses 128-bit loads and stores where
the shape and the base address allow them (the JIT only marks integers divisible by 16). Every tile
is a ``[BLOCK_O, BLOCK_C, BLOCK_I]`` block of the ``(outer, C, inner)`` view flattened to 1-D in
memory order, the per-channel values broadcast onto it: the table reads (addresses of no known order)
then take the element loads' layout under both Triton 3.6 and 3.9 (in 2-D and 3-D the two releases
order such reads' threads differently, and 3.6 converts layouts through shared memory and spills). In
rows of 8-element (16-bit) packs the backward splits each pack after its 128-bit loads into its low and
its high 4 channels, processes the two halves one after the other, and joins them again for the 128-bit
store: a thread then holds four channels' parameters and eight table addresses at a time (eight and
sixteen need more than 128 registers).
"""

import torch
import triton
import triton.language as tl

from .._layout import sum_partials
from ..reference import compute_dtype
from .common import channel_stride, compute_type, launch_directly, reduction_programs, tile_config

# Tiles on a GPU. Forward: at most TILE_ELEMENTS_GPU elements in FORWARD_WARPS warps. Backward: one
# pack (at most 16 bytes of elements) per thread of BACKWARD_WARPS warps, and per-program
# [channels, N_POW2] sums of at most POINTS_SUM_ELEMENTS values; every tile halved for float64 (two
# registers per value). Tiles along rows of channels (channels-last, (B, L, C)) span at most
# *_ROW_CHANNELS channels: every thread keeps the parameters of its channels in registers. With these
# sm_80 and sm_90 compile without spilling at <= 128 registers (25% occupancy); the 16-bit rows backward
# fits only with each 8-channel pack in two halves and half the channels per tile (see the kernel).
TILE_ELEMENTS_GPU = 2048
POINTS_SUM_ELEMENTS = 2048
FORWARD_ROW_CHANNELS = 64
BACKWARD_ROW_CHANNELS = 64
FORWARD_WARPS = 4
# ptxas would take up to ~165 registers for 16-bit tiles (18.8% occupancy at 4 warps); 128 fits 4 blocks per SM.
FORWARD_MAX_REGISTERS = 128
BACKWARD_WARPS = 8
BACKWARD_MAX_REGISTERS = 128
# The interpreter runs one NumPy operation per tile and interval: fewer, larger tiles are faster.
TILE_ELEMENTS_INTERPRETED = 2**17


@triton.jit
def _div_rn(a, b, COMPUTE: tl.constexpr):
    """``a / b`` rounded to nearest, as PyTorch divides (float32 ``/`` is ``div.full.f32`` on NVIDIA GPUs)."""
    if COMPUTE == tl.float32:
        return tl.div_rn(a, b)
    else:
        return a / b


@triton.jit
def _tile(t, cb, outer, C, inner, n_i_blocks,
          BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr, INT64: tl.constexpr):
    """Offsets and mask of tile ``t`` of channel block ``cb``: a ``[BLOCK_O, BLOCK_C, BLOCK_I]`` block
    of the ``(outer, C, inner)`` view, flattened to 1-D in memory order.

    Flat, because the table reads' addresses have no known order: for those, Triton 3.6 and 3.9 pick
    different thread orders in 2-D and 3-D (and with them layout conversions through shared memory),
    while in 1-D both give every access of the tile's shape the element loads' layout.
    """
    e = tl.arange(0, BLOCK_O * BLOCK_C * BLOCK_I)
    o = (t // n_i_blocks) * BLOCK_O + e // (BLOCK_C * BLOCK_I)
    c = cb * BLOCK_C + (e // BLOCK_I) % BLOCK_C
    i = (t % n_i_blocks) * BLOCK_I + e % BLOCK_I
    if INT64:
        o = o.to(tl.int64)
        i = i.to(tl.int64)
    offsets = (o * C + c) * inner + i
    mask = (o < outer) & (c < C) & (i < inner)
    return offsets, mask


@triton.jit
def _spread(v, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr):
    """A ``[BLOCK_C]`` per-channel vector as the elements of a flat tile see it (broadcast, no copies)."""
    return tl.reshape(tl.broadcast_to(v[None, :, None], [BLOCK_O, BLOCK_C, BLOCK_I]), [BLOCK_O * BLOCK_C * BLOCK_I])


@triton.jit
def _channel_sum(v, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr):
    """Per-channel sums ``[BLOCK_C, 1]`` of a flat tile's values, in a fixed order."""
    return tl.sum(tl.sum(tl.reshape(v, [BLOCK_O, BLOCK_C, BLOCK_I]), axis=2), axis=0)[:, None]


@triton.jit
def _channel_params(POINTS, LB, RB, LS, RS, c, c_mask, p_stride_c, N: tl.constexpr, COMPUTE: tl.constexpr):
    """Per-channel ``[channels]`` vectors of channels ``c``: B_L, B_R, K_L, K_R, Y[0], Y[N], the interval
    width d and the table rows. (Written out rather than through helpers: each call of a jit function
    costs the interpreter as much as many NumPy operations.)"""
    bl = tl.load(LB + c * p_stride_c, mask=c_mask, other=0.0).to(COMPUTE)
    br = tl.load(RB + c * p_stride_c, mask=c_mask, other=0.0).to(COMPUTE)
    kl = tl.load(LS + c * p_stride_c, mask=c_mask, other=0.0).to(COMPUTE)
    kr = tl.load(RS + c * p_stride_c, mask=c_mask, other=0.0).to(COMPUTE)
    # Table row of each channel (0 when shared); channels past C read row 0, so no address leaves the table.
    rows = tl.where(c_mask, c, 0) * (p_stride_c * (N + 1))
    y_first = tl.load(POINTS + rows).to(COMPUTE)
    y_last = tl.load(POINTS + rows + N).to(COMPUTE)
    d = _div_rn(br - bl, tl.full(br.shape, N, COMPUTE), COMPUTE)
    return bl, br, kl, kr, y_first, y_last, d, rows


@triton.jit
def _locate(x, bl, br, d, N: tl.constexpr, COMPUTE: tl.constexpr):
    """Region of each element, and inside the bounds its interval ``k`` (int32), ``u`` and ``t = u - k``.

    Outside the bounds (and for crossed bounds) the width is 1 and ``u = 0``, as in the reference;
    a NaN input is inside with ``k = 0``.
    """
    left = x < bl
    at_or_right = x >= br
    right = at_or_right & (x >= bl)  # right of B_R and not left of B_L (left wins for crossed bounds)
    inside = (left | at_or_right) == 0
    width = tl.where(inside, d, 1.0)
    u = tl.where(inside, _div_rn(x - bl, width, COMPUTE), 0.0)
    k = tl.floor(u)
    k = tl.where(k != k, 0.0, k)  # NaN: interval 0, before k becomes an index
    k = tl.where(k < 0.0, 0.0, tl.where(k > N - 1, N - 1.0, k))
    return left, right, inside, width, u, k.to(tl.int32), u - k


@triton.jit
def _pwlu_forward_kernel(X, Y, POINTS, LB, RB, LS, RS, outer, C_packs, inner_packs, n_i_blocks, n_tiles, p_stride_c,
                         N: tl.constexpr, COMPUTE: tl.constexpr, PACK_C: tl.constexpr, PACK_I: tl.constexpr,
                         BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr, INT64: tl.constexpr):
    C = C_packs * PACK_C
    inner = inner_packs * PACK_I
    pid = tl.program_id(0)
    cb = pid // n_tiles
    offsets, mask = _tile(pid % n_tiles, cb, outer, C, inner, n_i_blocks, BLOCK_O, BLOCK_C, BLOCK_I, INT64)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    bl, br, kl, kr, y_first, y_last, d, rows = _channel_params(POINTS, LB, RB, LS, RS, c, c < C, p_stride_c,
                                                               N, COMPUTE)
    bl, br, d, rows = (_spread(bl, BLOCK_O, BLOCK_C, BLOCK_I), _spread(br, BLOCK_O, BLOCK_C, BLOCK_I),
                       _spread(d, BLOCK_O, BLOCK_C, BLOCK_I), _spread(rows, BLOCK_O, BLOCK_C, BLOCK_I))
    x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    left, right, inside, width, u, k, t = _locate(x, bl, br, d, N, COMPUTE)
    # k is in [0, N-1]: both reads stay in the channel's row.
    at_k = POINTS + (rows + k)
    y_k = tl.load(at_k, mask=mask & inside, other=0.0).to(COMPUTE)
    y_k1 = tl.load(at_k + 1, mask=mask & inside, other=0.0).to(COMPUTE)
    y_inside = (1 - t) * y_k + t * y_k1
    y_left = _spread(y_first, BLOCK_O, BLOCK_C, BLOCK_I) + (x - bl) * _spread(kl, BLOCK_O, BLOCK_C, BLOCK_I)
    y_right = _spread(y_last, BLOCK_O, BLOCK_C, BLOCK_I) + (x - br) * _spread(kr, BLOCK_O, BLOCK_C, BLOCK_I)
    y = tl.where(left, y_left, tl.where(right, y_right, y_inside))
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _backward_elements(x, g, mask, c, c_mask, sums, bins, POINTS, LB, RB, LS, RS, p_stride_c,
                       N: tl.constexpr, COMPUTE: tl.constexpr,
                       BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                       PER_ELEMENT: tl.constexpr):
    """``dx`` of a flat ``[BLOCK_O, BLOCK_C, BLOCK_I]`` tile's elements of channels ``c`` (``[BLOCK_C]``, or
    with PER_ELEMENT the channel of each element), ``sums`` with their gradients of B_L, B_R, K_L and K_R
    added, and what :func:`_scatter_intervals` adds to the points'."""
    # Loaded per tile (cache hits) rather than kept: they would stay live through the interval loop.
    bl, br, kl, kr, _, _, d, rows = _channel_params(POINTS, LB, RB, LS, RS, c, c_mask, p_stride_c, N, COMPUTE)
    if not PER_ELEMENT:
        bl, br, kl, kr, d, rows = (
            _spread(bl, BLOCK_O, BLOCK_C, BLOCK_I), _spread(br, BLOCK_O, BLOCK_C, BLOCK_I),
            _spread(kl, BLOCK_O, BLOCK_C, BLOCK_I), _spread(kr, BLOCK_O, BLOCK_C, BLOCK_I),
            _spread(d, BLOCK_O, BLOCK_C, BLOCK_I), _spread(rows, BLOCK_O, BLOCK_C, BLOCK_I))
    left, right, inside, width, u, k, t = _locate(x, bl, br, d, N, COMPUTE)
    at_k = POINTS + (rows + k)  # one address per element: Y[k + 1] is at an immediate offset from it
    y_k = tl.load(at_k, mask=mask & inside, other=0.0).to(COMPUTE)
    y_k1 = tl.load(at_k + 1, mask=mask & inside, other=0.0).to(COMPUTE)
    # The gradient reaching each branch of the reference's torch.where (0 in the other branches;
    # masked lanes have g = 0 and x = 0 and add nothing).
    g_left = tl.where(left, g, 0.0)
    g_right = tl.where(right, g, 0.0)
    g_inside = tl.where(inside, g, 0.0)
    slope = _div_rn(y_k1 - y_k, width, COMPUTE)  # K_k inside; finite elsewhere (width 1)
    g_slope = g_inside * slope
    g_slope_u = g_slope * u / N
    dx = g_left * kl + g_right * kr + g_slope
    # Products with x - B (not selections): a zero gradient times an infinite or NaN x is NaN, as in autograd.
    dlb = _channel_sum(g_slope_u - g_left * kl - g_slope, BLOCK_O, BLOCK_C, BLOCK_I)
    drb = _channel_sum(-(g_right * kr) - g_slope_u, BLOCK_O, BLOCK_C, BLOCK_I)
    dls = _channel_sum(g_left * (x - bl), BLOCK_O, BLOCK_C, BLOCK_I)
    drs = _channel_sum(g_right * (x - br), BLOCK_O, BLOCK_C, BLOCK_I)
    sums += (tl.where(bins == N + 1, dlb, 0.0) + tl.where(bins == N + 2, drb, 0.0)
             + tl.where(bins == N + 3, dls, 0.0) + tl.where(bins == N + 4, drs, 0.0))
    # Scatter-add into bins k and k + 1 (by _scatter_intervals, called apart so that dx can be stored first):
    # (1 - t) and t of the inside gradient, the left gradient to Y[0] (k = 0 there) and the right one
    # to Y[N] (as bin k + 1 with k = N - 1).
    k = tl.where(right, N - 1, k)
    to_k = g_left + g_inside * (1 - t)
    to_k1 = g_right + g_inside * t
    return dx, sums, k, to_k, to_k1


@triton.jit
def _scatter_intervals(k, to_k, to_k1, sums, bins,
                       BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr):
    """``sums`` with ``to_k`` added in bin ``k`` and ``to_k1`` in bin ``k + 1``, per channel of a flat tile.

    One interval at a time, summed over the tile in its own layout (a [tile, bins] selection would give
    the element loads its layout, one element per thread); only the intervals that the tile's elements
    fall in (masked lanes add 0 wherever they fall).
    """
    for j in range(tl.min(k), tl.max(k) + 1):
        at_j = k == j
        to_j = _channel_sum(tl.where(at_j, to_k, 0.0), BLOCK_O, BLOCK_C, BLOCK_I)
        to_j1 = _channel_sum(tl.where(at_j, to_k1, 0.0), BLOCK_O, BLOCK_C, BLOCK_I)
        sums += tl.where(bins == j, to_j, 0.0) + tl.where(bins == j + 1, to_j1, 0.0)
    return sums


@triton.jit
def _pwlu_backward_kernel(X, DY, DX, POINTS, LB, RB, LS, RS,
                          SUMS_PARTIAL,
                          outer, C_packs, inner_packs, n_i_blocks, n_tiles, n_programs, p_stride_c,
                          N: tl.constexpr, N_POW2: tl.constexpr, COMPUTE: tl.constexpr,
                          PACK_C: tl.constexpr, PACK_I: tl.constexpr,
                          BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                          INT64: tl.constexpr, HALVES: tl.constexpr, PART_C: tl.constexpr):
    C = C_packs * PACK_C
    inner = inner_packs * PACK_I
    pid = tl.program_id(0)
    program = pid % n_programs
    cb = pid // n_programs
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    # With HALVES (rows of 8-element packs), the low and the high 4 channels of each 128-bit pack are
    # processed one after the other: a thread then holds 4 channels' parameters and 8 table addresses
    # at a time, not 8 and 16 (sm_80/sm_90 need more than 128 registers for those without spilling).
    if HALVES:  # channel 8 q + 4 h + l of the tile is channel 4 q + l of half h
        j = tl.arange(0, PART_C)
        c_a = cb * BLOCK_C + 8 * (j // 4) + j % 4
        c_b = c_a + 4
        # The channel of each element of a half, written so that the compiler sees its runs of 4: a half's
        # parameters are read per element (a thread's 4 elements of a half are 4 channels of one row: no
        # more values than per channel), 4 channels wide, and Triton gives the table reads, accesses of
        # the same shape, that layout (with per-channel parameters it picks one element per thread).
        m = tl.arange(0, BLOCK_O * PART_C)
        c_a_elements = cb * BLOCK_C + 8 * ((m // 4) % (PART_C // 4)) + m % 4
        c_b_elements = c_a_elements + 4
    else:
        c_a = c
        c_b = c
    bins = tl.arange(0, N_POW2)[None, :]
    # This program's running sums for its channels (channels c_a, and c_b with HALVES): dL/dY[c, 0..N]
    # in bins 0..N, then dL/dB_L, dL/dB_R, dL/dK_L and dL/dK_R in bins N+1..N+4 (one accumulator spread
    # over the threads, not four more [channels] vectors held by every thread of a channel).
    sums_a = tl.zeros([PART_C, N_POW2], dtype=COMPUTE)
    sums_b = tl.zeros([PART_C, N_POW2], dtype=COMPUTE)
    for tile in range(program, n_tiles, n_programs):
        offsets, mask = _tile(tile, cb, outer, C, inner, n_i_blocks, BLOCK_O, BLOCK_C, BLOCK_I, INT64)
        x = tl.load(X + offsets, mask=mask, other=0.0)
        g = tl.load(DY + offsets, mask=mask, other=0.0)
        if HALVES:  # (BLOCK_I == 1: each pack of 8 channels in its low and its high 4)
            x_a, x_b = tl.split(tl.permute(tl.reshape(x, [BLOCK_O * BLOCK_C // 8, 2, 4]), (0, 2, 1)))
            g_a, g_b = tl.split(tl.permute(tl.reshape(g, [BLOCK_O * BLOCK_C // 8, 2, 4]), (0, 2, 1)))
            mask_a, mask_b = tl.split(tl.permute(tl.reshape(mask, [BLOCK_O * BLOCK_C // 8, 2, 4]), (0, 2, 1)))
            dx_a, sums_a, k, to_k, to_k1 = _backward_elements(
                tl.reshape(x_a, [BLOCK_O * PART_C]).to(COMPUTE), tl.reshape(g_a, [BLOCK_O * PART_C]).to(COMPUTE),
                tl.reshape(mask_a, [BLOCK_O * PART_C]), c_a_elements, c_a_elements < C, sums_a, bins,
                POINTS, LB, RB, LS, RS, p_stride_c, N, COMPUTE, BLOCK_O, PART_C, 1, True)
            sums_a = _scatter_intervals(k, to_k, to_k1, sums_a, bins, BLOCK_O, PART_C, 1)
            dx_b, sums_b, k, to_k, to_k1 = _backward_elements(
                tl.reshape(x_b, [BLOCK_O * PART_C]).to(COMPUTE), tl.reshape(g_b, [BLOCK_O * PART_C]).to(COMPUTE),
                tl.reshape(mask_b, [BLOCK_O * PART_C]), c_b_elements, c_b_elements < C, sums_b, bins,
                POINTS, LB, RB, LS, RS, p_stride_c, N, COMPUTE, BLOCK_O, PART_C, 1, True)
            dx_a = tl.reshape(dx_a.to(DX.dtype.element_ty), [BLOCK_O * BLOCK_C // 8, 4])
            dx_b = tl.reshape(dx_b.to(DX.dtype.element_ty), [BLOCK_O * BLOCK_C // 8, 4])
            dx = tl.reshape(tl.permute(tl.join(dx_a, dx_b), (0, 2, 1)), [BLOCK_O * BLOCK_C])
            tl.store(DX + offsets, dx, mask=mask)
            sums_b = _scatter_intervals(k, to_k, to_k1, sums_b, bins, BLOCK_O, PART_C, 1)
        else:
            dx, sums_a, k, to_k, to_k1 = _backward_elements(
                x.to(COMPUTE), g.to(COMPUTE), mask, c_a, c_a < C, sums_a, bins,
                POINTS, LB, RB, LS, RS, p_stride_c, N, COMPUTE, BLOCK_O, BLOCK_C, BLOCK_I, False)
            tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=mask)
            sums_a = _scatter_intervals(k, to_k, to_k1, sums_a, bins, BLOCK_O, BLOCK_C, BLOCK_I)
    # (programs, N + 5, C) workspace: bins along the middle axis, channels last.
    partial = program * (N + 5) * C + bins * C
    tl.store(SUMS_PARTIAL + partial + c_a[:, None], sums_a, mask=(c_a < C)[:, None] & (bins < N + 5))
    if HALVES:
        tl.store(SUMS_PARTIAL + partial + c_b[:, None], sums_b, mask=(c_b < C)[:, None] & (bins < N + 5))


def _pack(n: int, x: torch.Tensor) -> int:
    """The largest power of two, at most 16 bytes of ``x``'s elements, that divides ``n``."""
    pack = 16 // x.element_size()
    while n % pack:
        pack //= 2
    return pack


def _packs(x: torch.Tensor, C: int, inner: int) -> dict:
    """``C`` and ``inner`` as counts of ``PACK_C`` / ``PACK_I`` blocks (the axis contiguous in memory packs)."""
    pack_i = _pack(inner, x)
    pack_c = _pack(C, x) if inner == 1 else 1
    return dict(C_packs=C // pack_c, inner_packs=inner // pack_i, PACK_C=pack_c, PACK_I=pack_i)


def _sized_tile_config(outer: int, C: int, inner: int, numel: int, max_elements: int, max_channels: int) -> dict:
    """Tile shape and grid sizes, as :func:`tile_config` chooses them, within ``max_elements``
    elements and ``max_channels`` channels: the axis contiguous in memory first, then channels, then rows."""
    block_i = min(triton.next_power_of_2(inner), max_elements)
    block_c = min(triton.next_power_of_2(C), max_channels, max(1, max_elements // block_i))
    block_o = min(triton.next_power_of_2(outer), max(1, max_elements // (block_i * block_c)))
    n_i_blocks = triton.cdiv(inner, block_i)
    return dict(BLOCK_O=block_o, BLOCK_C=block_c, BLOCK_I=block_i, n_i_blocks=n_i_blocks,
                n_tiles=triton.cdiv(outer, block_o) * n_i_blocks, n_c_blocks=triton.cdiv(C, block_c),
                INT64=tile_config(outer, C, inner, numel)["INT64"])


def _on_gpu(x: torch.Tensor) -> bool:
    return x.device.type == "cuda"


def _forward_tile_config(x: torch.Tensor, outer: int, C: int, inner: int) -> dict:
    if not _on_gpu(x):
        return tile_config(outer, C, inner, x.numel())
    words = 2 if x.dtype == torch.float64 else 1  # registers per value
    # 16-bit tiles hold twice the elements per pack: half the tile keeps them at two packs per thread.
    elements = TILE_ELEMENTS_GPU // words // (2 if x.element_size() == 2 else 1)
    return _sized_tile_config(outer, C, inner, x.numel(), elements, FORWARD_ROW_CHANNELS // words)


def _backward_tile_config(x: torch.Tensor, outer: int, C: int, inner: int, n_pow2: int, per_thread: int) -> dict:
    """``per_thread``: elements per thread, a pack (at most 16 bytes) or half of one."""
    if not _on_gpu(x):
        return _sized_tile_config(outer, C, inner, x.numel(), TILE_ELEMENTS_INTERPRETED, triton.next_power_of_2(C))
    words = 2 if x.dtype == torch.float64 else 1
    max_channels = max(1, min(BACKWARD_ROW_CHANNELS, POINTS_SUM_ELEMENTS // n_pow2) // words)
    if inner == 1 and per_thread == 8:  # 16-bit rows in halves: half the per-program sums, or they spill at 128 registers
        max_channels = max(1, max_channels // 2)
    elements = 32 * BACKWARD_WARPS * per_thread
    return _sized_tile_config(outer, C, inner, x.numel(), elements, max_channels)


def pwlu_forward(x, points, left_bound, right_bound, left_slope, right_slope, *, outer, C, inner, wrap=launch_directly):
    y = torch.empty_like(x)
    cfg = _forward_tile_config(x, outer, C, inner)
    packs = _packs(x, C, inner)
    grid = (cfg["n_tiles"] * cfg["n_c_blocks"],)
    wrap(_pwlu_forward_kernel)[grid](
        x, y, points, left_bound, right_bound, left_slope, right_slope,
        outer, packs["C_packs"], packs["inner_packs"], cfg["n_i_blocks"], cfg["n_tiles"], channel_stride(left_bound),
        N=points.shape[1] - 1, COMPUTE=compute_type(x), PACK_C=packs["PACK_C"], PACK_I=packs["PACK_I"],
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"],
        num_warps=FORWARD_WARPS, maxnreg=FORWARD_MAX_REGISTERS)
    return y


def pwlu_backward(grad_output, x, points, left_bound, right_bound, left_slope, right_slope, *, outer, C, inner, wrap=launch_directly):
    grad_x = torch.empty_like(x)
    intervals = points.shape[1] - 1
    n_pow2 = triton.next_power_of_2(intervals + 5)  # bins 0..N and the four per-channel sums
    packs = _packs(x, C, inner)
    # Where x or grad_output does not start 16-byte aligned, no element access can be 128 bits wide: half a
    # pack per thread then (Triton 3.6 spills a few bytes for 16-bit types with a whole pack of scalar
    # accesses). PyTorch's allocator starts storage 16-byte aligned: the storage offset decides.
    aligned = all(t.storage_offset() * t.element_size() % 16 == 0 for t in (x, grad_output))
    per_thread = max(1, packs["PACK_C"] * packs["PACK_I"] // (1 if aligned else 2))
    cfg = _backward_tile_config(x, outer, C, inner, n_pow2, per_thread)
    # Rows of 8-element (16-bit) packs: each pack in two halves, one after the other (see the kernel).
    halves = inner == 1 and per_thread == 8 and cfg["BLOCK_C"] >= 8
    n_programs = reduction_programs(x.device, cfg["n_tiles"], cfg["n_c_blocks"])
    sums_partial = torch.empty((n_programs, intervals + 5, C), dtype=compute_dtype(x), device=x.device)
    grid = (n_programs * cfg["n_c_blocks"],)
    wrap(_pwlu_backward_kernel)[grid](
        x, grad_output, grad_x, points, left_bound, right_bound, left_slope, right_slope,
        sums_partial,
        outer, packs["C_packs"], packs["inner_packs"], cfg["n_i_blocks"], cfg["n_tiles"], n_programs,
        channel_stride(left_bound),
        N=intervals, N_POW2=n_pow2, COMPUTE=compute_type(x), PACK_C=packs["PACK_C"], PACK_I=packs["PACK_I"],
        BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"], BLOCK_I=cfg["BLOCK_I"], INT64=cfg["INT64"],
        HALVES=halves, PART_C=cfg["BLOCK_C"] // 2 if halves else cfg["BLOCK_C"],
        num_warps=BACKWARD_WARPS, maxnreg=BACKWARD_MAX_REGISTERS)
    # sum_partials takes channels on the last axis: points transposed to (N + 1, C), and back.
    grad_points = sum_partials(sums_partial[:, :intervals + 1], points.t()).t().contiguous()
    dlb, drb, dls, drs = (sums_partial[:, intervals + 1 + i] for i in range(4))
    return (grad_x, grad_points, sum_partials(dlb, left_bound), sum_partials(drb, right_bound),
            sum_partials(dls, left_slope), sum_partials(drs, right_slope))
