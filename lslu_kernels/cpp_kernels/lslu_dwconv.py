"""Host of the fused full layer on the ``cpu`` backend (``csrc/cpu/lslu_dwconv.cpp``).

Same arguments as the Triton backend's ``triton_kernels/lslu_dwconv.py``, so the op
(``lslu_kernels/fused.py``) calls either:

    forward(x, theta, omega, weight, bias, stages) -> y
    backward(grad_y, x, theta, omega, weight, stages) -> (grad_x, grad_theta, grad_omega, grad_weight, grad_bias)

``x`` is ``(N, C, H, W)``, NCHW-contiguous or channels-last (``y`` and ``grad_x`` in its layout);
``theta``/``omega`` ``(S, 1)`` or ``(S, C)`` and ``weight`` ``(C, 1, 2S+1, 2S+1)`` in the compute
dtype; ``bias`` ``(C,)`` or None. ``grad_bias`` is the sum of ``grad_y`` per channel (the op drops
it when there is no bias). ``threads`` (default: as the other CPU ops) changes nothing in the result.
"""

import torch

from .._numerics import compute_dtype, sum_partials
from . import cpu_threads, dtype_name, extension


def _sizes(x: torch.Tensor, stages: int) -> dict:
    N, C, H, W = x.shape
    return dict(dtype=dtype_name(x), batch=N, channels=C, height=H, width=W, stages=stages,
                channels_last=not x.is_contiguous())


def _kernel_params(x, theta, omega, weight):
    C, dtype = x.shape[1], compute_dtype(x)
    return [p.to(dtype).expand(p.shape[0], C).contiguous() for p in (theta, omega)] + [
        weight.to(dtype).contiguous()]


def _threads(x, threads):
    return cpu_threads(x.numel()) if threads is None else threads


def forward(x, theta, omega, weight, bias, stages, *, threads=None):
    theta_k, omega_k, weight_k = _kernel_params(x, theta, omega, weight)
    bias_k = None if bias is None else bias.to(compute_dtype(x)).contiguous()
    y = torch.empty_like(x)
    extension(x.device).lslu_dwconv_forward(
        x.data_ptr(), y.data_ptr(), theta_k.data_ptr(), omega_k.data_ptr(), weight_k.data_ptr(),
        0 if bias_k is None else bias_k.data_ptr(), **_sizes(x, stages), threads=_threads(x, threads))
    return y


def backward(grad_y, x, theta, omega, weight, stages, *, threads=None):
    ext = extension(x.device)
    theta_k, omega_k, weight_k = _kernel_params(x, theta, omega, weight)
    N, C = x.shape[:2]
    taps = weight.shape[-2] * weight.shape[-1]
    partials = ext.lslu_dwconv_backward_partials(**_sizes(x, stages))
    dtype = theta_k.dtype
    # Every entry is written by the kernel.
    partial = [torch.empty(shape, dtype=dtype) for shape in
               ((partials, stages, C), (partials, stages, C), (partials, C, taps), (partials, C))]
    grad_x = torch.empty_like(x)
    ext.lslu_dwconv_backward(
        grad_y.data_ptr(), x.data_ptr(), grad_x.data_ptr(), theta_k.data_ptr(), omega_k.data_ptr(),
        weight_k.data_ptr(), [b.data_ptr() for b in partial], **_sizes(x, stages), partials=partials,
        threads=_threads(x, threads))
    grad_theta = sum_partials(partial[0], theta)
    grad_omega = sum_partials(partial[1], omega)
    grad_weight = partial[2].sum(0).reshape(weight.shape).to(weight.dtype)
    grad_bias = partial[3].sum(0)
    return grad_x, grad_theta, grad_omega, grad_weight, grad_bias
