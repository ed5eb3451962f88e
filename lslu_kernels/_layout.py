"""How a tensor's memory is walked by every kernel backend.

Each kernel sees ``x`` as a dense ``(outer, C, inner)`` array in memory order,
where ``C`` is the channel axis: ``inner`` is the product of the sizes of the
axes stored inside the channel axis, ``outer`` of those stored outside it.
NCHW gives ``(N, C, H*W)``, channels-last gives ``(N*H*W, C, 1)``, a
``(B, L, C)`` tensor with ``channel_dim=-1`` gives ``(B*L, C, 1)``. Any tensor
whose elements are dense and non-overlapping in some axis order is served as
it is; only other strides (slices with gaps, expanded axes) are copied first.
"""

import math

import torch

# Kept importable from here for the kernel backends that still do; it belongs to _numerics.
from ._numerics import sum_partials  # noqa: F401


def _memory_order(x: torch.Tensor) -> list[int]:
    """Axes of ``x`` from outermost to innermost in memory (ties keep axis order)."""
    return sorted(range(x.dim()), key=lambda d: (-x.stride(d), d))


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its memory is dense and non-overlapping, else a contiguous copy."""
    if x.is_contiguous() or x.permute(_memory_order(x)).is_contiguous():
        return x
    return x.contiguous()


def channel_view(x: torch.Tensor, channel_dim: int) -> tuple[int, int, int]:
    """``(outer, C, inner)`` of a tensor already passed through :func:`dense`.

    ``channel_dim`` must be non-negative.
    """
    if x.is_contiguous():
        order = list(range(x.dim()))
    else:
        order = _memory_order(x)
    position = order.index(channel_dim)
    outer = math.prod(x.shape[d] for d in order[:position])
    inner = math.prod(x.shape[d] for d in order[position + 1 :])
    return outer, x.shape[channel_dim], inner


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with the dtype and strides of ``ref`` (copied only when they differ).

    Backward kernels walk ``grad_output`` with ``x``'s layout; autograd may hand
    over any strides (an expanded gradient of ``y.sum()``, say).
    """
    if t.dtype == ref.dtype and t.stride() == ref.stride():
        return t
    return torch.empty_like(ref).copy_(t)
