"""PVLU on the C++ backends (SPEC.md 1.2): kernels in csrc/cpu/pvlu.cpp and csrc/cuda/pvlu.cu."""

import torch

from .._layout import sum_partials
from . import compute_params, device_guard, dtype_name, extension, forcing_int64, launch_arg, multiprocessors


def pvlu_forward(x, alpha, beta, *, outer, C, inner):
    ext = extension(x.device)
    alpha_c, beta_c = compute_params(x, C, alpha, beta)
    y = torch.empty_like(x)
    with device_guard(x.device):
        ext.pvlu_forward(x.data_ptr(), y.data_ptr(), alpha_c.data_ptr(), beta_c.data_ptr(), dtype=dtype_name(x),
                         outer=outer, channels=C, inner=inner, launch=launch_arg(x),
                         force_int64=forcing_int64())
    return y


def pvlu_backward(grad_output, x, alpha, beta, *, outer, C, inner):
    ext = extension(x.device)
    alpha_c, beta_c = compute_params(x, C, alpha, beta)
    grad_x = torch.empty_like(x)
    with device_guard(x.device):
        partials = ext.pvlu_backward_partials(dtype_name(x), outer, C, inner, multiprocessors(x.device))
        dalpha_partial = torch.empty((partials, C), dtype=alpha_c.dtype, device=x.device)
        dbeta_partial = torch.empty((partials, C), dtype=alpha_c.dtype, device=x.device)
        ext.pvlu_backward(grad_output.data_ptr(), x.data_ptr(), grad_x.data_ptr(), alpha_c.data_ptr(),
                          beta_c.data_ptr(), dalpha_partial.data_ptr(), dbeta_partial.data_ptr(),
                          dtype=dtype_name(x), outer=outer, channels=C, inner=inner, partials=partials,
                          launch=launch_arg(x), force_int64=forcing_int64())
    return grad_x, sum_partials(dalpha_partial, alpha), sum_partials(dbeta_partial, beta)
