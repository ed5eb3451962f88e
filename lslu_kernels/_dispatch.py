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

Eager calls on plain tensors (nothing tracing or transforming them) take a
shorter path to the same kernels (README, "Per-call overhead"): the checks, the
backend choice and the kernels are worked out once per signature of the inputs
(:class:`_Plan`), and an ``autograd.Function`` (or, without grad, the kernels
directly) stands for the custom ops, whose per-call machinery costs several
times ``F.prelu``. The custom ops' implementations share the plans.

A kernel backend provides, per op, two host functions taking the dense tensor
and its ``(outer, C, inner)`` view (see ``_layout``):

    <op>_forward(x, *params, outer, C, inner) -> y
    <op>_backward(grad_output, x, *params, outer, C, inner) -> (grad_x, *grad_params)

A forward with a ``bind(x, params, outer, C, inner)`` attribute (the C++ host)
returns launches for inputs like these, which the plan keeps:
``launches.forward(x, params)`` and ``launches.backward(grad_output, x, params)``.
"""

import math
from collections.abc import Callable

import torch

from . import _backends, _layout, _triton_ops, registry
from .registry import Activation

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_parameter(name: str, pname: str, p, x: torch.Tensor) -> None:
    """Raise a clear exception unless parameter ``pname`` of op ``name`` is a float tensor on x's device."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name}: {pname} must be a torch.Tensor, got {type(p).__name__}")
    if p.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: {pname} must be float16, bfloat16, float32 or float64, got {p.dtype}")
    if p.device != x.device:
        raise ValueError(f"{name}: {pname} is on {p.device} but x is on {x.device}; "
                         "tensors must be on the same device")


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
        check_parameter(name, pname, p, x)
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


# The exact types the eager fast path takes. Anything else (FakeTensor, DTensor, other subclasses,
# functorch's wrappers) goes through the custom ops, whose torch.library machinery serves it.
_PLAIN_TENSORS = frozenset({torch.Tensor, torch.nn.Parameter})

# Per op: what the checks and the backend choice concluded for one signature of the inputs
# (see _signature); filled on a signature's first call. A dict that tests may swap for an empty one.
_PLANS: dict[tuple, "_Plan"] = {}
# Signatures are few in practice (one per layer shape); a workload with ever new shapes only
# pays the checks again, it does not grow memory without bound.
_MAX_PLANS = 1024


def _eager() -> bool:
    """True when nothing traces or transforms this call: not torch.compile or torch.export (which
    must see the custom ops), no JIT trace, no dispatch or torch-function mode, no functorch transform.
    torch.compile folds the first test to a constant, so it never traces the others."""
    return not (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
                or torch._C._is_torch_function_mode_enabled() or torch._C._are_functorch_transforms_active()
                or torch._C._get_tracing_state())


def _signature(tag: object, x, params, channel_dim, backend) -> tuple | None:
    """Everything the checks and the backend choice read, as a dict key; None for inputs that are not
    plain tensors (they take the custom ops' path, which checks them as ever)."""
    if type(x) not in _PLAIN_TENSORS:
        return None
    key = [tag, x.dtype, x.device, x.shape, channel_dim,
           backend if backend is not None else _backends.environment_backend()]
    for p in params:
        if type(p) not in _PLAIN_TENSORS:
            return None
        key += (p.dtype, p.device, p.shape, p.is_contiguous())
    return tuple(key)


class _Plan:
    """What one signature of the inputs needs at each call: all of it depends only on dtypes, shapes,
    devices and the backend asked for, so it is worked out once (SPEC.md section 3's checks included)."""

    __slots__ = ("channel_dim", "backend", "forward", "backward", "view", "empty", "cuda", "copy_params", "bind",
                 "launches", "contiguous_launches")

    def __init__(self, op: Activation, x, params, channel_dim, backend):
        self.channel_dim = _check_inputs(op, x, params, channel_dim)
        self.backend = _backends.resolve(backend, x.device, op.name)
        self.forward = self.backward = None
        if self.backend != "reference":
            self.forward, self.backward = _backends.kernels(self.backend, op.name)
        # (outer, C, inner) of a contiguous x of this shape; other layouts work it out per call.
        self.view = (math.prod(x.shape[: self.channel_dim]), x.shape[self.channel_dim],
                     math.prod(x.shape[self.channel_dim + 1 :]))
        self.empty = x.numel() == 0
        self.cuda = x.is_cuda
        # The kernel backends read contiguous parameters; contiguous ones pass through untouched.
        self.copy_params = not all(p.is_contiguous() for p in params)
        # A backend whose forward has ``bind`` (the C++ host) works out once per (outer, C, inner) what
        # its launches need: a contiguous x's here, another layout's (channels-last) on its first call.
        self.bind = None if self.empty else getattr(self.forward, "bind", None)
        self.contiguous_launches = None if self.bind is None else self.bind(x, params, *self.view)
        self.launches = {self.view: self.contiguous_launches}

    def launches_for(self, x, params, view):
        launches = self.launches.get(view)
        if launches is None:
            launches = self.launches[view] = self.bind(x, params, *view)
        return launches


def _plan(op: Activation, tag: object, x, params, channel_dim, backend) -> _Plan | None:
    """The plan of inputs like these (made on their first call); None for inputs that are not plain tensors.

    ``tag``: one object per ``define``, so that an op defined again (tests do) never meets another's plans.
    """
    key = _signature(tag, x, params, channel_dim, backend)
    if key is None:
        return None
    try:
        plan = _PLANS.get(key)
    except TypeError:  # an unhashable channel_dim or backend: the checks name it
        return None
    if plan is None:
        plan = _Plan(op, x, params, channel_dim, backend)  # raises the clear error of a bad input
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _layout_of(plan: _Plan, x):
    """x served without a copy (or its dense copy) and its (outer, C, inner)."""
    if x.is_contiguous():
        return x, plan.view
    x = _layout.dense(x)
    return x, _layout.channel_view(x, plan.channel_dim)


# Triton and the CUDA extension launch on the current device (and stream), which need not be x's:
# x's GPU is made the current device around each launch.

def _run_forward(plan: _Plan, x, params):
    launches = plan.contiguous_launches
    if launches is None or not x.is_contiguous():
        x, (outer, channels, inner) = _layout_of(plan, x)
        if plan.empty:
            return torch.empty_like(x)
        if plan.bind is None:
            if plan.copy_params:
                params = [p.contiguous() for p in params]
            if plan.cuda:
                with torch.cuda.device(x.device):
                    return plan.forward(x, *params, outer=outer, C=channels, inner=inner)
            return plan.forward(x, *params, outer=outer, C=channels, inner=inner)
        launches = plan.launches_for(x, params, (outer, channels, inner))
    if plan.cuda:
        with torch.cuda.device(x.device):
            return launches.forward(x, params)
    return launches.forward(x, params)


def _run_backward(plan: _Plan, grad_output, x, params):
    launches = plan.contiguous_launches
    if launches is None or not x.is_contiguous():
        x, (outer, channels, inner) = _layout_of(plan, x)
        if plan.empty:
            return (torch.empty_like(x), *(torch.zeros_like(p) for p in params))
        grad_output = _layout.like(grad_output, x)
        if plan.bind is None:
            if plan.copy_params:
                params = [p.contiguous() for p in params]
            if plan.cuda:
                with torch.cuda.device(x.device):
                    return tuple(plan.backward(grad_output, x, *params, outer=outer, C=channels, inner=inner))
            return tuple(plan.backward(grad_output, x, *params, outer=outer, C=channels, inner=inner))
        launches = plan.launches_for(x, params, (outer, channels, inner))
    elif grad_output.dtype != x.dtype or not grad_output.is_contiguous():
        grad_output = _layout.like(grad_output, x)
    if plan.cuda:
        with torch.cuda.device(x.device):
            return launches.backward(grad_output, x, params)
    return launches.backward(grad_output, x, params)


def refuse_double_backward(name: str, backward_op) -> None:
    """Make differentiating ``backward_op`` (a create_graph=True backward) raise a clear error."""
    def no_double_backward(ctx, *grads):
        raise NotImplementedError(f"{name}: double backward (gradients of gradients) is not supported")

    backward_op.register_autograd(no_double_backward, setup_context=lambda ctx, inputs, output: None)


def register_autograd(op: Activation, forward_op, backward_op) -> None:
    """The autograd of ``forward_op(x, *params, *options)`` (a custom op or triton op of ``op``) by
    ``backward_op(grad_output, x, *params, *options)``, whose gradients are (grad_x, *grad_params)."""
    n_tensors = 1 + len(op.params)

    def setup_context(ctx, inputs, output):
        ctx.options = inputs[n_tensors:]
        # Only the input and the parameters are kept (SPEC.md section 3): backward recomputes the rest.
        ctx.save_for_backward(*inputs[:n_tensors])

    def backward(ctx, grad_output):
        needs = ctx.needs_input_grad
        if not any(needs[:n_tensors]):
            return (None,) * len(needs)
        grads = backward_op(grad_output, *ctx.saved_tensors, *ctx.options)
        return (*(g if need else None for g, need in zip(grads, needs)), *(None,) * len(ctx.options))

    forward_op.register_autograd(backward, setup_context=setup_context)
    refuse_double_backward(op.name, backward_op)


def define(op: Activation) -> Callable[..., torch.Tensor]:
    """Register ``op``'s custom ops and return its public function."""
    qualname = f"lslu_kernels::{op.name}"
    param_args = ", ".join(f"Tensor {p}" for p in op.params)
    grad_outputs = ", ".join(["Tensor"] * (1 + len(op.params)))
    n_params = len(op.params)
    tag = object()

    def impl_plan(x, params, channel_dim, backend) -> _Plan:
        """The custom ops' plan: cached as the eager path's (a subclass's inputs get a fresh one)."""
        return _plan(op, tag, x, params, channel_dim, backend) or _Plan(op, x, params, channel_dim, backend)

    def forward_impl(x, *rest):
        params, channel_dim, backend = rest[:n_params], rest[n_params], rest[n_params + 1]
        return _run_forward(impl_plan(x, params, channel_dim, backend), x, params)

    def forward_fake(x, *rest):
        return torch.empty_like(_layout.dense(x))

    def backward_impl(grad_output, x, *rest):
        params, channel_dim, backend = rest[:n_params], rest[n_params], rest[n_params + 1]
        return _run_backward(impl_plan(x, params, channel_dim, backend), grad_output, x, params)

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

    register_autograd(op, forward_op, backward_op)
    if _backends.has_kernels("triton", op.name) and _triton_ops.unsupported() is None:
        _triton_ops.in_use[op.name] = _triton_ops.define(op)[0]

    class EagerFunction(torch.autograd.Function):
        """The eager path's autograd: the custom ops' formula without their per-call machinery."""

        @staticmethod
        def forward(ctx, plan, x, *params):
            ctx.plan = plan
            # Only the input is kept (SPEC.md section 3): backward recomputes the rest.
            ctx.save_for_backward(x, *params)
            return _run_forward(plan, x, params)

        @staticmethod
        def backward(ctx, grad_output):
            x, *params = ctx.saved_tensors
            plan = ctx.plan
            if torch.is_grad_enabled():  # create_graph=True: the backward op, which refuses double backward
                grads = backward_op(grad_output, x, *params, plan.channel_dim, plan.backend)
            else:
                grads = _run_backward(plan, grad_output, x, params)
            needs = ctx.needs_input_grad[1:]
            if False in needs:
                grads = [g if need else None for g, need in zip(grads, needs)]
            return (None, *grads)

    # torch.autograd.Function.apply without its Python wrapper, whose work (functorch's checks and
    # unwrapping) _eager() has already ruled out: it costs as much again as the C++ apply.
    eager_apply = super(torch.autograd.Function, EagerFunction).apply

    def apply(x, *params, channel_dim: int = 1, backend: str | None = None) -> torch.Tensor:
        plan = _plan(op, tag, x, params, channel_dim, backend) if _eager() else None
        if plan is None:  # traced, transformed or not plain tensors: checks, then the custom op
            channel_dim = _check_inputs(op, x, params, channel_dim)
            backend = _backends.resolve(backend, x.device, op.name)
            if backend == "reference":
                return op.reference(x, *params, channel_dim=channel_dim)
            if backend == "triton" and op.name in _triton_ops.in_use:  # compiled graphs launch its kernels
                return _triton_ops.in_use[op.name](x, *params, channel_dim)
            return forward_op(x, *params, channel_dim, backend)
        if plan.backend == "reference":
            return op.reference(x, *params, channel_dim=plan.channel_dim)
        if torch.is_grad_enabled():
            if x.requires_grad:
                return eager_apply(plan, x, *params)
            for p in params:
                if p.requires_grad:
                    return eager_apply(plan, x, *params)
        return _run_forward(plan, x, params)

    apply.forward_op = forward_op
    apply.backward_op = backward_op
    apply.param_names = op.params
    apply.param_channel_axis = op.param_channel_axis
    apply.activation = op
    registry.register(op, apply)
    return apply
