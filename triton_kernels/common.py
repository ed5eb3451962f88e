"""What every Triton op shares: walking the ``(outer, C, inner)`` view in tiles.

A tile is a ``[BLOCK_O, BLOCK_C, BLOCK_I]`` block of that view. For NCHW the
inner (H*W) axis is contiguous and the tile is mostly ``BLOCK_I``; for
channels-last and ``(B, L, C)`` tensors ``inner == 1`` and the tile spans
channels and rows. For a fixed channel block, the tiles along the other two
axes are numbered ``0 .. n_tiles-1``; the backward kernels give each program a
fixed, strided subset of those tiles, so per-channel sums are reduced in a
fixed order (deterministic) without atomics.
"""

import math

import torch
import triton
import triton.language as tl

# Elements per tile: large enough to keep many loads in flight per program.
TILE_ELEMENTS = 2048
# Backward programs per streaming multiprocessor (each loops over many tiles).
PROGRAMS_PER_SM = 4
# Tensors this large index memory with int64 (int32 offsets would wrap).
INT64_THRESHOLD = 2**31


@triton.jit
def tile_offsets(t, cb, outer, C, inner, n_i_blocks,
                 BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr, INT64: tl.constexpr,
                 RUN_MULTIPLE_C: tl.constexpr = 1, RUN_MULTIPLE_I: tl.constexpr = 1):
    """Memory offsets and mask of tile ``t`` of channel block ``cb``, and its channel indices.

    ``RUN_MULTIPLE_C`` / ``RUN_MULTIPLE_I``: ``tile_config``'s hints that the contiguous runs along the
    channel / inner axis start at multiples of that many elements and that the mask is constant over
    such groups (Triton's launch tells the compiler only whether an integer is a multiple of 16: without
    the hint, a 14x14 map or C = 100 gets scalar accesses).
    """
    o = (t // n_i_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    i = (t % n_i_blocks) * BLOCK_I + tl.arange(0, BLOCK_I)
    if INT64:
        o = o.to(tl.int64)
        i = i.to(tl.int64)
        c64 = c.to(tl.int64)
    else:
        c64 = c
    # The hints go on operations that survive constant folding (with inner == 1, "* inner + i" folds away).
    channel_rows = o[:, None, None] * C + c64[None, :, None]
    c_mask = c < C
    i_mask = i < inner
    if RUN_MULTIPLE_C > 1 and BLOCK_C >= RUN_MULTIPLE_C:  # tiles start at multiples of BLOCK_C channels
        channel_rows = tl.multiple_of(channel_rows, [1, RUN_MULTIPLE_C, 1])
        c_mask = tl.max_constancy(c_mask, [RUN_MULTIPLE_C])
    offsets = channel_rows * inner + i[None, None, :]
    if RUN_MULTIPLE_I > 1 and BLOCK_I >= RUN_MULTIPLE_I:
        offsets = tl.multiple_of(offsets, [1, 1, RUN_MULTIPLE_I])
        i_mask = tl.max_constancy(i_mask, [RUN_MULTIPLE_I])
    mask = (o < outer)[:, None, None] & c_mask[None, :, None] & i_mask[None, None, :]
    return offsets, mask, c


@triton.jit
def relu(h):
    # NaN stays NaN (as torch.relu); relu'(0) = 0 is decided by the callers' h > 0.
    return tl.where(h < 0, 0.0, h)


@triton.jit
def load_channel(P, c, c_mask, p_stride_c, COMPUTE: tl.constexpr):
    """A ``(C,)`` or shared ``(1,)`` parameter at channels ``c``, shaped to broadcast over a tile."""
    return tl.load(P + c * p_stride_c, mask=c_mask, other=0.0).to(COMPUTE)[None, :, None]


def launch_directly(kernel):
    """How a host function launches ``kernel`` unless told otherwise: as it is. ``lslu_kernels._triton_ops``
    passes ``torch.library.wrap_triton`` instead, so that a traced call records each launch in the graph."""
    return kernel


def channel_stride(p: torch.Tensor) -> int:
    """1 for per-channel parameters (channels on axis 0), 0 for shared ones (size 1 there)."""
    return 0 if p.shape[0] == 1 else 1


def compute_type(x: torch.Tensor):
    """The Triton type every element of ``x`` is computed in (SPEC.md section 3)."""
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def tile_config(outer: int, C: int, inner: int, numel: int, max_block_c: int = TILE_ELEMENTS) -> dict:
    """Tile shape and grid sizes for an ``(outer, C, inner)`` view, with at most ``max_block_c`` channels per tile.

    ``RUN_MULTIPLE_C`` / ``RUN_MULTIPLE_I`` (for :func:`tile_offsets`): the largest power of two up to 16
    dividing the length of the contiguous runs, ``C`` when channels are innermost, else ``inner``.
    """
    block_i = min(triton.next_power_of_2(inner), TILE_ELEMENTS)
    block_c = min(triton.next_power_of_2(C), max(1, TILE_ELEMENTS // block_i), max_block_c)
    block_o = min(triton.next_power_of_2(outer), max(1, TILE_ELEMENTS // (block_i * block_c)))
    n_i_blocks = triton.cdiv(inner, block_i)
    return dict(
        BLOCK_O=block_o, BLOCK_C=block_c, BLOCK_I=block_i,
        n_i_blocks=n_i_blocks,
        n_tiles=triton.cdiv(outer, block_o) * n_i_blocks,
        n_c_blocks=triton.cdiv(C, block_c),
        INT64=numel >= INT64_THRESHOLD,
        RUN_MULTIPLE_C=math.gcd(C, 16) if inner == 1 else 1,
        RUN_MULTIPLE_I=math.gcd(inner, 16) if inner > 1 else 1,
    )


# CUDA device index -> its multiprocessor count, asked once per device (not at each backward).
_MULTIPROCESSORS: dict[int, int] = {}


def reduction_programs(device: torch.device, n_tiles: int, n_c_blocks: int) -> int:
    """Programs per channel block of a backward launch: enough to fill the GPU, at most one per tile.

    The launch is a 1-D grid of ``programs * n_c_blocks`` (CUDA limits the other grid axes to 65535).
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in _MULTIPROCESSORS:
            _MULTIPROCESSORS[index] = torch.cuda.get_device_properties(index).multi_processor_count
        target = PROGRAMS_PER_SM * _MULTIPROCESSORS[index]
    else:  # the interpreter runs programs one after another: fewer is faster
        target = 4
    return max(1, min(n_tiles, target // n_c_blocks))
