"""The paper's full layer fused: ``depthwise_conv2d(lslu(x), weight, padding S) + bias`` in one op.

    lslu_dwconv(x, theta, omega, weight, bias=None, *, backend=None)

``x`` ``(N, C, H, W)``; ``theta``/``omega`` ``(S, C)`` or ``(S, 1)``; ``weight``
``(C, 1, 2S+1, 2S+1)`` (the depthwise kernel of ``LearnableSerieslinearUnit``);
``bias`` ``(C,)`` or None. The output has ``x``'s dtype and memory format.

A backend with a fused kernel for it keeps, in ``<backend>``'s kernel package, a module
``lslu_dwconv`` with two host functions (``lslu_kernels/cpp_kernels/lslu_dwconv.py`` for
``cpu``, ``triton_kernels/lslu_dwconv.py`` for ``triton``):

    forward(x, theta, omega, weight, bias, stages) -> y
    backward(grad_y, x, theta, omega, weight, stages)
        -> (grad_x, grad_theta, grad_omega, grad_weight, grad_bias)

with ``x`` NCHW-contiguous or channels-last, ``theta``/``omega`` in the compute dtype,
``weight`` contiguous. They run as the ``torch.library`` custom ops
``lslu_kernels::lslu_dwconv`` and ``lslu_kernels::lslu_dwconv_backward`` (fake kernels and
autograd registered, so ``torch.compile`` traces them whole); forward saves only ``x`` (and the
tiny parameters) for backward, which recomputes the series. A backend without the fused kernel
(``cuda`` today) runs the unfused path, its ``lslu`` then ``F.conv2d``; ``reference`` runs
``reference.lslu_dwconv``.
"""

import importlib
import importlib.util
import pathlib

import torch
import torch.nn.functional as F

from . import _backends, _dispatch, _layout, reference, registry
from ._numerics import compute_dtype

NAME = "lslu_dwconv"
# Where each backend keeps its fused host functions (module attributes forward / backward).
_HOSTS = {"cpu": "lslu_kernels.cpp_kernels.lslu_dwconv", "triton": "lslu_kernels.triton_kernels.lslu_dwconv"}


def _host_exists(module: str) -> bool:
    """Whether the host module's file is there, without importing its package (Triton's imports Triton)."""
    package, name = module.rsplit(".", 1)
    spec = importlib.util.find_spec(package)  # imports the package's parent only
    return spec is not None and any((pathlib.Path(folder) / f"{name}.py").exists()
                                    for folder in spec.submodule_search_locations or ())


# Looked up once, at import: torch.compile then traces the choice as a dict lookup.
_HAS_FUSED = {backend: _host_exists(module) for backend, module in _HOSTS.items()}


def has_fused(backend: str) -> bool:
    """Whether ``backend`` has the fused kernels (else the op runs its unfused path)."""
    return _HAS_FUSED.get(backend, False)


def _host(backend: str):
    return importlib.import_module(_HOSTS[backend])


def _check_inputs(x, theta, omega, weight, bias):
    """A clear exception for any bad input (SPEC.md section 3): x, theta and omega as ``lk.lslu`` checks
    them (its messages name ``lslu``), then the convolution's weight and bias."""
    if isinstance(x, torch.Tensor) and x.dim() != 4:
        raise ValueError(f"{NAME}: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    _dispatch._check_inputs(registry.activation("lslu"), x, (theta, omega), 1)
    C = x.shape[1]
    _dispatch.check_parameter(NAME, "weight", weight, x)
    if bias is not None:
        _dispatch.check_parameter(NAME, "bias", bias, x)
    S = theta.shape[0]
    K = 2 * S + 1
    if tuple(weight.shape) != (C, 1, K, K):
        raise ValueError(f"{NAME}: weight must have shape (C, 1, 2S+1, 2S+1) = ({C}, 1, {K}, {K}) for C = {C} "
                         f"and S = {S} stages, got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"{NAME}: bias must have shape (C,) = ({C},) or be None, got {tuple(bias.shape)}")


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` when it is NCHW-contiguous or channels-last (the layouts the kernels walk), else a copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _forward_impl(x, theta, omega, weight, bias, backend):
    x = _dense(x)
    if x.numel() == 0:
        return torch.empty_like(x)
    dtype = compute_dtype(x)
    return _host(backend).forward(x, theta.to(dtype), omega.to(dtype), weight.contiguous(),
                                  None if bias is None else bias.contiguous(), theta.shape[0])


def _forward_fake(x, theta, omega, weight, bias, backend):
    return torch.empty_like(_dense(x))


def _backward_impl(grad_y, x, theta, omega, weight, backend):
    x = _dense(x)
    if x.numel() == 0:
        return (torch.empty_like(x), torch.zeros_like(theta), torch.zeros_like(omega), torch.zeros_like(weight),
                torch.zeros(x.shape[1], dtype=weight.dtype, device=x.device))
    dtype = compute_dtype(x)
    grads = _host(backend).backward(_layout.like(grad_y, x), x, theta.to(dtype), omega.to(dtype),
                                    weight.contiguous(), theta.shape[0])
    grad_x, grad_theta, grad_omega, grad_weight, grad_bias = grads
    if grad_bias is None:  # a host may leave it out (the op asks for it only when there is a bias)
        grad_bias = grad_y.sum((0, 2, 3), dtype=dtype)
    return (grad_x, grad_theta.to(theta.dtype), grad_omega.to(omega.dtype), grad_weight.to(weight.dtype),
            grad_bias.to(weight.dtype))


def _backward_fake(grad_y, x, theta, omega, weight, backend):
    return (torch.empty_like(_dense(x)), torch.empty_like(theta), torch.empty_like(omega), torch.empty_like(weight),
            weight.new_empty(x.shape[1]))


forward_op = torch.library.custom_op(
    f"lslu_kernels::{NAME}", _forward_impl, mutates_args=(),
    schema="(Tensor x, Tensor theta, Tensor omega, Tensor weight, Tensor? bias, str backend) -> Tensor")
forward_op.register_fake(_forward_fake)
backward_op = torch.library.custom_op(
    f"lslu_kernels::{NAME}_backward", _backward_impl, mutates_args=(),
    schema="(Tensor grad_y, Tensor x, Tensor theta, Tensor omega, Tensor weight, str backend) "
           "-> (Tensor, Tensor, Tensor, Tensor, Tensor)")
backward_op.register_fake(_backward_fake)


def _setup_context(ctx, inputs, output):
    x, theta, omega, weight, bias, backend = inputs
    ctx.backend = backend
    ctx.bias_dtype = None if bias is None else bias.dtype
    # Only the input and the (tiny) parameters are kept: backward recomputes the series.
    ctx.save_for_backward(x, theta, omega, weight)


def _autograd_backward(ctx, grad_y):
    x, theta, omega, weight = ctx.saved_tensors
    if not any(ctx.needs_input_grad[:5]):
        return (None,) * 6
    grads = backward_op(grad_y, x, theta, omega, weight, ctx.backend)
    grad_x, grad_theta, grad_omega, grad_weight, grad_bias = grads
    grad_bias = None if ctx.bias_dtype is None else grad_bias.to(ctx.bias_dtype)
    grads = (grad_x, grad_theta, grad_omega, grad_weight, grad_bias)
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None)


forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)
_dispatch.refuse_double_backward(NAME, backward_op)


def _direct(*tensors) -> bool:
    """Whether the host functions may run without the custom ops' dispatch, which costs about 75 us a call
    (measured on the 2-core CPU machine: a sixth of a small layer's deploy forward): when nothing traces or
    transforms the call (``_dispatch._eager``, as the activations' fast path), on plain tensors, with no
    gradient to record (the ops' autograd is then not needed)."""
    if not _dispatch._eager():
        return False
    grad = torch.is_grad_enabled()
    return all(t is None or (type(t) in _dispatch._PLAIN_TENSORS and not (grad and t.requires_grad))
               for t in tensors)


def _fused_forward(x, theta, omega, weight, bias, backend):
    """``forward_op``, or its implementation directly where :func:`_direct` allows."""
    if _direct(x, theta, omega, weight, bias):
        return _forward_impl(x, theta, omega, weight, bias, backend)
    return forward_op(x, theta, omega, weight, bias, backend)


def _fused_backward(grad_y, x, theta, omega, weight, backend):
    """``backward_op``, or its implementation directly where :func:`_direct` allows."""
    if _direct(grad_y, x, theta, omega, weight):
        return _backward_impl(grad_y, x, theta, omega, weight, backend)
    return backward_op(grad_y, x, theta, omega, weight, backend)


def unfused(x, theta, omega, weight, bias=None, *, backend=None):
    """The same result, unfused: the series by ``lk.lslu`` on ``backend``, then PyTorch's depthwise convolution."""
    from .functional import lslu  # functional imports this module

    r = lslu(x, theta, omega, channel_dim=1, backend=backend)
    return F.conv2d(r, weight, bias, padding=theta.shape[0], groups=x.shape[1])


def lslu_dwconv(x, theta, omega, weight, bias=None, *, backend: str | None = None) -> torch.Tensor:
    """``depthwise_conv2d(lslu(x, theta, omega), weight, bias, padding=S)`` fused (module docstring)."""
    _check_inputs(x, theta, omega, weight, bias)
    backend = _backends.resolve(backend, x.device, NAME)
    if backend == "reference":
        return reference.lslu_dwconv(x, theta, omega, weight, bias)
    if not has_fused(backend):
        return unfused(x, theta, omega, weight, bias, backend=backend)
    return _fused_forward(x, theta, omega, weight, bias, backend)


def fused_backend(backend: str | None, device: torch.device) -> str | None:
    """The backend ``lslu_dwconv`` resolves to when it has the fused kernels; None when it runs unfused."""
    resolved = _backends.resolve(backend, device, NAME)
    return resolved if has_fused(resolved) else None


class _ConvBatchNorm(torch.autograd.Function):
    """``batch_norm(lslu_dwconv(x), batch statistics)``, keeping only ``x`` (and per-channel values) for backward.

    Forward: the fused op, then ATen's batch norm (statistics and affine map; it updates the running
    statistics it is given, as ``nn.BatchNorm2d`` does). Backward recomputes the fused output (the
    conv output is not kept), takes the gradient through ATen's batch norm backward, then through the
    fused op's backward.
    """

    @staticmethod
    def forward(ctx, x, theta, omega, weight, gamma, beta, running_mean, running_var, momentum, eps, backend):
        y = _fused_forward(x, theta, omega, weight, None, backend)
        out, mean, invstd = torch.ops.aten.native_batch_norm(y, gamma, beta, running_mean, running_var, True,
                                                             momentum, eps)
        ctx.backend, ctx.eps = backend, eps
        ctx.affine = (gamma is not None, beta is not None)
        ctx.save_for_backward(x, theta, omega, weight, gamma, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, theta, omega, weight, gamma, mean, invstd = ctx.saved_tensors
        y = _fused_forward(x, theta, omega, weight, None, ctx.backend)  # recomputed: not kept
        grad_y, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            _layout.like(grad_out, y), y, gamma, None, None, mean, invstd, True, ctx.eps, [True, *ctx.affine])
        grad_x, grad_theta, grad_omega, grad_weight, _ = _fused_backward(grad_y, x, theta, omega, weight,
                                                                         ctx.backend)
        return grad_x, grad_theta, grad_omega, grad_weight, grad_gamma, grad_beta, None, None, None, None, None


def lslu_dwconv_batch_norm(x, theta, omega, weight, bn: torch.nn.BatchNorm2d, backend: str) -> torch.Tensor:
    """``bn(lslu_dwconv(x, theta, omega, weight))`` with batch statistics (``bn`` training, or without
    running statistics), on a backend with the fused kernels; updates ``bn``'s running statistics as
    ``bn`` itself does. Saves only ``x`` and per-channel values for backward."""
    _check_inputs(x, theta, omega, weight, None)
    update = bn.training and bn.track_running_stats
    momentum = 0.0
    if update:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return _ConvBatchNorm.apply(x, theta, omega, weight, bn.weight, bn.bias, bn.running_mean if update else None,
                                bn.running_var if update else None, momentum, bn.eps, backend)
