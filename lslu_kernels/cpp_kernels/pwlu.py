"""PWLU on the C++ backends (SPEC.md 1.3): kernels in csrc/cpu/pwlu.cpp and csrc/cuda/pwlu.cu."""

import torch

from .._layout import sum_partials
from ..reference import compute_dtype
from . import compute_params, device_guard, dtype_name, extension, forcing_int64, launch_arg, multiprocessors


def _intervals(ext, points) -> int:
    intervals = points.shape[1] - 1
    if intervals > ext.max_pwlu_intervals:
        raise ValueError(f"pwlu: the cpu and cuda backends serve 1 to {ext.max_pwlu_intervals} intervals, got "
                         f"N = {intervals} (points of shape {tuple(points.shape)}); the triton and reference "
                         f"backends serve any N")
    return intervals


def _params(x, C, points, left_bound, right_bound, left_slope, right_slope):
    """The parameters per channel in the compute dtype: points (C, N+1), the others (C,)."""
    table = points.to(compute_dtype(x)).expand(C, points.shape[1]).contiguous()
    return (table, *compute_params(x, C, left_bound, right_bound, left_slope, right_slope))


def pwlu_forward(x, points, left_bound, right_bound, left_slope, right_slope, *, outer, C, inner):
    ext = extension(x.device)
    intervals = _intervals(ext, points)
    params = _params(x, C, points, left_bound, right_bound, left_slope, right_slope)
    y = torch.empty_like(x)
    with device_guard(x.device):
        ext.pwlu_forward(x.data_ptr(), y.data_ptr(), *(p.data_ptr() for p in params), dtype=dtype_name(x),
                         outer=outer, channels=C, inner=inner, intervals=intervals, launch=launch_arg(x),
                         force_int64=forcing_int64())
    return y


def pwlu_backward(grad_output, x, points, left_bound, right_bound, left_slope, right_slope, *, outer, C, inner):
    ext = extension(x.device)
    intervals = _intervals(ext, points)
    params = _params(x, C, points, left_bound, right_bound, left_slope, right_slope)
    grad_x = torch.empty_like(x)
    with device_guard(x.device):
        partials = ext.pwlu_backward_partials(dtype_name(x), outer, C, inner, intervals, multiprocessors(x.device))
        # Every entry is written by the kernels.
        dpoints_partial = torch.empty((partials, C, intervals + 1), dtype=params[0].dtype, device=x.device)
        dscalars_partial = torch.empty((partials, 4, C), dtype=params[0].dtype, device=x.device)
        ext.pwlu_backward(grad_output.data_ptr(), x.data_ptr(), grad_x.data_ptr(), *(p.data_ptr() for p in params),
                          dpoints_partial.data_ptr(), dscalars_partial.data_ptr(), dtype=dtype_name(x), outer=outer,
                          channels=C, inner=inner, intervals=intervals, partials=partials,
                          launch=launch_arg(x), force_int64=forcing_int64())
    # points' channel axis is its first: sum_partials wants it last.
    grad_points = sum_partials(dpoints_partial.transpose(1, 2), points.t()).t().contiguous()
    scalars = (left_bound, right_bound, left_slope, right_slope)
    return (grad_x, grad_points, *(sum_partials(dscalars_partial[:, k], p) for k, p in enumerate(scalars)))
