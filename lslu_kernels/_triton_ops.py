"""The Triton backend as ``torch.library.triton_op`` ops, so that compiled graphs launch its kernels themselves.

The ``lslu_kernels::<op>`` custom ops (``_dispatch``) are opaque to ``torch.compile``: the generated code
calls them back in Python (this project's dispatch, the host function, Triton's launcher) on every call.
``lslu_kernels::<op>_triton`` and ``<op>_triton_backward``, defined here with ``torch.library.triton_op``,
run the same host functions (``triton_kernels/<op>.py``) with every launch passed through
``torch.library.wrap_triton``: tracing (fake tensors, AOT autograd) records each launch as a node of the
graph, and Inductor's generated code launches the kernels itself, with no Python frame of this project
per call (and CUDA graphs, ``mode="reduce-overhead"``, capture the launches). An eager call runs the host
function with the kernels launched directly, as the custom op does; the fake kernel is the host function
traced on fake tensors (``triton_op`` registers it), and autograd is registered as for the custom ops.

The dispatch layer uses these ops for the ``triton`` backend where :func:`unsupported` says nothing:
torch has ``triton_op`` and ``wrap_triton`` (torch 2.6 and later), and the backend compiles its kernels
for a GPU. Under ``TRITON_INTERPRET=1`` the kernels are ``InterpretedFunction`` objects, which
``wrap_triton`` passes through untraced (a traced call would run them on fake tensors), so the
interpreter keeps the custom ops.

Inductor compiles the kernels of a compiled graph itself, with the launch's ``num_warps`` but without its
``maxnreg`` (torch 2.13 passes no register cap for user kernels): the same code, maybe other register counts.
"""

import contextlib
import importlib
import inspect

import torch

from . import _backends, _layout
from .registry import Activation

# op name -> its (forward, backward) triton ops, once defined.
_DEFINED: dict[str, tuple] = {}
# op name -> the forward triton op that the dispatch layer calls for backend "triton" (the custom op otherwise).
in_use: dict[str, object] = {}


def unsupported(library=torch.library) -> str | None:
    """Why the ``triton`` backend keeps the opaque custom ops here; None when it uses the triton ops."""
    missing = [name for name in ("triton_op", "wrap_triton") if not hasattr(library, name)]
    if missing:
        return (f"torch {torch.__version__} has no torch.library.{' or '.join(missing)} (torch 2.6 added them); "
                "compiled graphs call the Triton backend's custom ops")
    triton = _backends.backends()["triton"]
    if _backends.triton_interpreter_on():
        return "TRITON_INTERPRET=1: torch.compile does not trace interpreted Triton kernels"
    if not triton.available:
        return f"the triton backend is not available: {triton.missing}"
    return None


def _typed(fn, names: list[str], annotations: list, returns):
    """``fn(*args)`` with the signature ``names: annotations -> returns``, from which triton_op infers the schema."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fn.__signature__ = inspect.Signature([inspect.Parameter(n, kind, annotation=a) for n, a in zip(names, annotations)],
                                         return_annotation=returns)
    return fn


def _sizes(x: torch.Tensor, channel_dim: int) -> tuple[int, int, int]:
    """``(outer, C, inner)`` as ints: traced with dynamic shapes, the host function's tile arithmetic
    (powers of two, gcds) on symbolic sizes would grow without bound; the graph specializes on them instead,
    as the kernels' constexprs do."""
    return tuple(int(n) for n in _layout.channel_view(x, channel_dim))


def _on_device(x: torch.Tensor):
    """x's GPU as the current device while its kernels launch (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def define(op: Activation):
    """Define ``lslu_kernels::<op>_triton`` and ``<op>_triton_backward`` (once per process); return both.

    Defined wherever torch has ``triton_op`` (the tests also define them where :func:`unsupported`
    keeps the custom ops in use); :data:`in_use` says whether the dispatch layer calls them.
    """
    if op.name in _DEFINED:
        return _DEFINED[op.name]
    wrap = torch.library.wrap_triton
    kernels = importlib.import_module(f"lslu_kernels.triton_kernels.{op.name}")
    host_forward, host_backward = getattr(kernels, f"{op.name}_forward"), getattr(kernels, f"{op.name}_backward")
    n_params = len(op.params)
    Tensor = torch.Tensor

    def forward(x, *rest):
        params, channel_dim = rest[:n_params], rest[n_params]
        x = _layout.dense(x)
        if x.numel() == 0:
            return torch.empty_like(x)
        outer, channels, inner = _sizes(x, channel_dim)
        with _on_device(x):
            return host_forward(x, *(p.contiguous() for p in params), outer=outer, C=channels, inner=inner,
                                wrap=wrap)

    def backward(grad_output, x, *rest):
        params, channel_dim = rest[:n_params], rest[n_params]
        x = _layout.dense(x)
        if x.numel() == 0:
            return (torch.empty_like(x), *(torch.zeros_like(p) for p in params))
        outer, channels, inner = _sizes(x, channel_dim)
        with _on_device(x):
            grads = host_backward(_layout.like(grad_output, x), x, *(p.contiguous() for p in params),
                                  outer=outer, C=channels, inner=inner, wrap=wrap)
        return tuple(grads)

    names = ["x", *op.params, "channel_dim"]
    types = [Tensor] * (1 + n_params) + [int]
    forward_op = torch.library.triton_op(f"lslu_kernels::{op.name}_triton", _typed(forward, names, types, Tensor),
                                         mutates_args=())
    backward_op = torch.library.triton_op(
        f"lslu_kernels::{op.name}_triton_backward",
        _typed(backward, ["grad_output", *names], [Tensor, *types], tuple[(Tensor,) * (1 + n_params)]),
        mutates_args=())

    # triton_op finds a function's kernels in its source (wrap_triton(<kernel>) calls) for the AOTAutograd cache
    # key; these functions pass wrap_triton on to the host functions, so their kernels are named here.
    kernels_of_op = getattr(torch._library.triton, "triton_ops_to_kernels", None)
    if kernels_of_op is not None:
        jitted = [f for f in vars(kernels).values() if isinstance(f, importlib.import_module("triton").JITFunction)]
        for defined in (forward_op, backward_op):
            kernels_of_op[defined._qualname] = jitted
    from ._dispatch import register_autograd  # (_dispatch imports this module)

    register_autograd(op, forward_op, backward_op)
    _DEFINED[op.name] = forward_op, backward_op
    return forward_op, backward_op
