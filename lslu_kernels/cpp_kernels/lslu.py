"""LSLU on the C++ backends (SPEC.md 1.1): kernels in csrc/cpu/lslu.cpp and csrc/cuda/lslu.cu."""

import torch

from .._layout import sum_partials
from . import compute_params, device_guard, dtype_name, extension, forcing_int64, launch_arg, multiprocessors


def _check_stages(ext, theta):
    if theta.shape[0] > ext.max_lslu_stages:
        raise ValueError(f"lslu: the cpu and cuda backends serve 1 to {ext.max_lslu_stages} stages, got "
                         f"S = {theta.shape[0]}; the triton and reference backends serve any S")


def lslu_forward(x, theta, omega, *, outer, C, inner):
    ext = extension(x.device)
    _check_stages(ext, theta)
    theta_c, omega_c = compute_params(x, C, theta, omega)
    y = torch.empty_like(x)
    with device_guard(x.device):
        ext.lslu_forward(x.data_ptr(), y.data_ptr(), theta_c.data_ptr(), omega_c.data_ptr(), dtype=dtype_name(x),
                         outer=outer, channels=C, inner=inner, stages=theta.shape[0],
                         launch=launch_arg(x), force_int64=forcing_int64())
    return y


def lslu_backward(grad_output, x, theta, omega, *, outer, C, inner):
    ext = extension(x.device)
    _check_stages(ext, theta)
    theta_c, omega_c = compute_params(x, C, theta, omega)
    grad_x = torch.empty_like(x)
    S = theta.shape[0]
    with device_guard(x.device):
        partials = ext.lslu_backward_partials(dtype_name(x), outer, C, inner, S, multiprocessors(x.device))
        dtheta_partial = torch.empty((partials, S, C), dtype=theta_c.dtype, device=x.device)
        domega_partial = torch.empty((partials, S, C), dtype=theta_c.dtype, device=x.device)
        ext.lslu_backward(grad_output.data_ptr(), x.data_ptr(), grad_x.data_ptr(), theta_c.data_ptr(),
                          omega_c.data_ptr(), dtheta_partial.data_ptr(), domega_partial.data_ptr(),
                          dtype=dtype_name(x), outer=outer, channels=C, inner=inner, stages=S,
                          partials=partials, launch=launch_arg(x), force_int64=forcing_int64())
    return grad_x, sum_partials(dtheta_partial, theta), sum_partials(domega_partial, omega)
