"""What every Triton op shares: walking the ``(outer, C, inner)`` view in tiles.

A tile is a ``[BLOCK_O, BLOCK_C, BLOCK_I]`` block of that view. For NCHW the
inner (H*W) axis is contiguous and the tile is mostly ``BLOCK_I``; for
channels-last and ``(B, L, C)`` tensors ``inner == 1`` and the tile spans
channels and rows. For a fixed channel block, the tiles along the other two
axes are numbered ``0 .. n_tiles-1``; the backward kernels give each program a
fixed, strided subset of those tiles, so per-channel sums are reduced in a
fixed order (deterministic) without atomics.
"""

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
                 BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr, INT64: tl.constexpr):
    """Memory offsets and mask of tile ``t`` of channel block ``cb``, and its channel indices."""
    o = (t // n_i_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    i = (t % n_i_blocks) * BLOCK_I + tl.arange(0, BLOCK_I)
    if INT64:
        o = o.to(tl.int64)
        i = i.to(tl.int64)
        c64 = c.to(tl.int64)
    else:
        c64 = c
    offsets = (o[:, None, None] * C + c64[None, :, None]) * inner + i[None, None, :]
    mask = (o < outer)[:, None, None] & (c < C)[None, :, None] & (i < inner)[None, None, :]
    return offsets, mask, c


@triton.jit
def relu(h):
    # NaN stays NaN (as torch.relu); relu'(0) = 0 is decided by the callers' h > 0.
    return tl.where(h < 0, 0.0, h)


@triton.jit
def load_channel(P, c, c_mask, p_stride_c, COMPUTE: tl.constexpr):
    """A ``(C,)`` or shared ``(1,)`` parameter at channels ``c``, shaped to broadcast over a tile."""
    return tl.load(P + c * p_stride_c, mask=c_mask, other=0.0).to(COMPUTE)[None, :, None]


def channel_stride(p: torch.Tensor) -> int:
    """1 for per-channel parameters (channels on axis 0), 0 for shared ones (size 1 there)."""
    return 0 if p.shape[0] == 1 else 1


def compute_type(x: torch.Tensor):
    """The Triton type every element of ``x`` is computed in (SPEC.md section 3)."""
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def tile_config(outer: int, C: int, inner: int, numel: int) -> dict:
    """Tile shape and grid sizes for an ``(outer, C, inner)`` view."""
    block_i = min(triton.next_power_of_2(inner), TILE_ELEMENTS)
    block_c = min(triton.next_power_of_2(C), max(1, TILE_ELEMENTS // block_i))
    block_o = min(triton.next_power_of_2(outer), max(1, TILE_ELEMENTS // (block_i * block_c)))
    n_i_blocks = triton.cdiv(inner, block_i)
    return dict(
        BLOCK_O=block_o, BLOCK_C=block_c, BLOCK_I=block_i,
        n_i_blocks=n_i_blocks,
        n_tiles=triton.cdiv(outer, block_o) * n_i_blocks,
        n_c_blocks=triton.cdiv(C, block_c),
        INT64=numel >= INT64_THRESHOLD,
    )


def reduction_programs(device: torch.device, n_tiles: int, n_c_blocks: int) -> int:
    """Programs per channel block of a backward launch: enough to fill the GPU, at most one per tile.

    The launch is a 1-D grid of ``programs * n_c_blocks`` (CUDA limits the other grid axes to 65535).
    """
    if device.type == "cuda":
        target = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # the interpreter runs programs one after another: fewer is faster
        target = 4
    return max(1, min(n_tiles, target // n_c_blocks))
