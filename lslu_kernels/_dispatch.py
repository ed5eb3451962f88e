"""The dispatch layer, written once for every activation.

An activation is described by :class:`~lslu_kernels.registry.Activation` (its
name, its parameters and where their channel axis is, its reference function,
and the facts the recorder, plots and benchmarks read). :func:`define` turns the
description into the public function: it validates the inputs (SPEC.md section
3), picks the backend, and for kernel backends calls two ``torch.library``
custom ops, ``lslu_kernels::<name>`` and ``lslu_kernels::<name>_backward``, with
fake implementations and registered autograd, so ``torch.compile`` traces them
without graph breaks. The reference backend is called directly: it is the
oracle and stays independent of this layer.

A kernel backend provides, per op, two host functions taking the dense tensor
and its ``(outer, C, inner)`` view (see ``_layout``):

    <op>_forward(x, *params, outer, C, inner) -> y
    <op>_backward(grad_output, x, *params, outer, C, inner) -> (grad_x, *grad_params)
"""

import contextlib
from collections.abc import Callable

import torch

from . import _backends, _layout, _triton_ops, registry
from .registry import Activation

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_inputs(op: Activation, x, params, channel_dim: int) -> int:
    """Raise a clear exception for any bad input; return ``channel_dim`` made non-negative."""
    name = op.name
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name}: x must have at least one axis (the channel axis), got a 0-d tensor")
    if not isinstance(channel_dim, int) or not -x.dim() <= channel_dim < x.dim():
        raise IndexError(f"{name}: channel_dim={channel_dim!r} is out of range for x with {x.dim()} axes "
                         f"(expected an int in [{-x.dim()}, {x.dim() - 1}])")
    channel_dim %= x.dim()
    channels = x.shape[channel_dim]
    shared_sizes = set()
    for pname, p, ndim, axis in zip(op.params, params, op.param_ndims, op.param_channel_axis):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}: {pname} must be a torch.Tensor, got {type(p).__name__}")
        if p.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: {pname} must be float16, bfloat16, float32 or float64, got {p.dtype}")
        if p.device != x.device:
            raise ValueError(f"{name}: {pname} is on {p.device} but x is on {x.device}; "
                             "tensors must be on the same device")
        if p.dim() != ndim or p.shape[axis] not in (channels, 1):
            expected = ["C" if a == axis else "..." for a in range(ndim)]
            raise ValueError(f"{name}: {pname} must have shape ({', '.join(expected)}) with C = {channels} "
                             f"(x.shape[{channel_dim}]) or 1 (shared), got {tuple(p.shape)}")
        shared_sizes.add(p.shape[axis])
    if len(shared_sizes) > 1:
        shapes = ", ".join(f"{n} {tuple(p.shape)}" for n, p in zip(op.params, params))
        raise ValueError(f"{name}: parameters must be all per-channel or all shared, got {shapes}")
    if op.check_params is not None:
        op.check_params(*params)
    return channel_dim


def _on_device(x: torch.Tensor):
    """x's GPU as the current device while its kernels launch: Triton and the CUDA extension launch on
    the current device (and stream), which need not be x's."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def define(op: Activation) -> Callable[..., torch.Tensor]:
    """Register ``op``'s custom ops and return its public function."""
    qualname = f"lslu_kernels::{op.name}"
    param_args = ", ".join(f"Tensor {p}" for p in op.params)
    grad_outputs = ", ".join(["Tensor"] * (1 + len(op.params)))
    n_params = len(op.params)

    def forward_impl(x, *rest):
        params, channel_dim, backend = rest[:n_params], rest[n_params], rest[n_params + 1]
        x = _layout.dense(x)
        if x.numel() == 0:
            return torch.empty_like(x)
        forward, _ = _backends.kernels(backend, op.name)
        outer, channels, inner = _layout.channel_view(x, channel_dim)
        with _on_device(x):
            return forward(x, *(p.contiguous() for p in params), outer=outer, C=channels, inner=inner)

    def forward_fake(x, *rest):
        return torch.empty_like(_layout.dense(x))

    def backward_impl(grad_output, x, *rest):
        params, channel_dim, backend = rest[:n_params], rest[n_params], rest[n_params + 1]
        x = _layout.dense(x)
        if x.numel() == 0:
            return (torch.empty_like(x), *(torch.zeros_like(p) for p in params))
        _, backward = _backends.kernels(backend, op.name)
        outer, channels, inner = _layout.channel_view(x, channel_dim)
        with _on_device(x):
            grads = backward(_layout.like(grad_output, x), x, *(p.contiguous() for p in params),
                             outer=outer, C=channels, inner=inner)
        return tuple(grads)

    def backward_fake(grad_output, x, *rest):
        params = rest[:n_params]
        return (torch.empty_like(_layout.dense(x)), *(torch.empty_like(p) for p in params))

    forward_op = torch.library.custom_op(
        qualname, forward_impl, mutates_args=(),
        schema=f"(Tensor x, {param_args}, int channel_dim, str backend) -> Tensor")
    forward_op.register_fake(forward_fake)
    backward_op = torch.library.custom_op(
        f"{qualname}_backward", backward_impl, mutates_args=(),
        schema=f"(Tensor grad_output, Tensor x, {param_args}, int channel_dim, str backend) -> ({grad_outputs})")
    backward_op.register_fake(backward_fake)

    def setup_context(ctx, inputs, output):
        x, *params = inputs[: 1 + n_params]
        ctx.channel_dim, ctx.backend = inputs[1 + n_params :]
        # Only the input is kept (SPEC.md section 3): backward recomputes the rest.
        ctx.save_for_backward(x, *params)

    def autograd_backward(ctx, grad_output):
        x, *params = ctx.saved_tensors
        if not any(ctx.needs_input_grad[: 1 + n_params]):
            return (None,) * (3 + n_params)
        grads = backward_op(grad_output, x, *params, ctx.channel_dim, ctx.backend)
        grads = [g if need else None for g, need in zip(grads, ctx.needs_input_grad)]
        return (*grads, None, None)

    forward_op.register_autograd(autograd_backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        raise NotImplementedError(f"{op.name}: double backward (gradients of gradients) is not supported")

    backward_op.register_autograd(no_double_backward, setup_context=lambda ctx, inputs, output: None)
    if _backends.has_kernels("triton", op.name) and _triton_ops.unsupported() is None:
        _triton_ops.in_use[op.name] = _triton_ops.define(op)[0]

    def apply(x, *params, channel_dim: int = 1, backend: str | None = None) -> torch.Tensor:
        channel_dim = _check_inputs(op, x, params, channel_dim)
        backend = _backends.resolve(backend, x.device, op.name)
        if backend == "reference":
            return op.reference(x, *params, channel_dim=channel_dim)
        if backend == "triton" and op.name in _triton_ops.in_use:  # compiled graphs launch its kernels
            return _triton_ops.in_use[op.name](x, *params, channel_dim)
        return forward_op(x, *params, channel_dim, backend)

    apply.forward_op = forward_op
    apply.backward_op = backward_op
    apply.param_names = op.params
    apply.param_channel_axis = op.param_channel_axis
    apply.activation = op
    registry.register(op, apply)
    return apply
