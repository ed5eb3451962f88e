"""Host side of the hand-written C++ backends: ``cpu`` (``_C_cpu``) and ``cuda`` (``_C_cuda``), every op.

The extensions take raw addresses and sizes (``csrc/kernel_abi.h``) with the same three functions
per op (``csrc/bindings.cpp``). The host here, written once, allocates the outputs and the partial
buffers, hands the parameters over in the compute dtype, picks the extension by the tensors'
device and sums the partials; each op's row of ``OPS`` says what differs: its ``size`` (LSLU's
stages, PWLU's intervals), its parameters' layout and its partial buffers.
"""

import contextlib
import dataclasses
import functools
import importlib
from typing import Callable

import torch

from .._numerics import compute_dtype, sum_partials

EXTENSIONS = {"cpu": "lslu_kernels._C_cpu", "cuda": "lslu_kernels._C_cuda"}

# True: the CUDA kernels index in int64 on every size, as they must from 2^31 elements on
# (the Triton backend's INT64_THRESHOLD does the same for it), so that tests reach those
# instantiations on small tensors. Read at each call. The CPU kernels always index in int64.
FORCE_INT64 = False

# Elements per CPU thread at the least (PyTorch's own grain size): waking threads for
# less work costs more than it saves, most of all on a busy machine.
CPU_GRAIN = 32768


def forcing_int64() -> bool:
    """FORCE_INT64 as it is now (a test may have set it since the import)."""
    return bool(FORCE_INT64)


def extension(device: torch.device):
    return importlib.import_module(EXTENSIONS[device.type])


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def exec_arg(x: torch.Tensor) -> dict:
    """Where the extension runs for ``x``: ``stream``, the current CUDA stream, or ``threads``, the CPU threads.

    The CPU result does not depend on the thread count, so small tensors run on fewer threads.
    """
    if x.device.type == "cuda":
        return {"stream": torch.cuda.current_stream(x.device).cuda_stream}
    return {"threads": max(1, min(torch.get_num_threads(), x.numel() // CPU_GRAIN))}


def multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


def compute_params(x: torch.Tensor, channels: int, *params: torch.Tensor) -> list[torch.Tensor]:
    """The parameters as contiguous per-channel tensors of the compute dtype.

    Shared parameters (channel axis of size 1, the last) are expanded to every
    channel, so the kernels know one layout; parameters are tiny, the copy costs nothing.
    """
    return [p.to(compute_dtype(x)).expand(*p.shape[:-1], channels).contiguous() for p in params]


def device_guard(device: torch.device):
    """Makes ``device`` the current CUDA device while a kernel is launched on it."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# ---- what differs per op ----

def _lslu_size(ext, theta, omega) -> int:
    if theta.shape[0] > ext.max_lslu_stages:
        raise ValueError(f"lslu: the cpu and cuda backends serve 1 to {ext.max_lslu_stages} stages, got "
                         f"S = {theta.shape[0]}; the triton and reference backends serve any S")
    return theta.shape[0]


def _pwlu_size(ext, points, *scalars) -> int:
    intervals = points.shape[1] - 1
    if intervals > ext.max_pwlu_intervals:
        raise ValueError(f"pwlu: the cpu and cuda backends serve 1 to {ext.max_pwlu_intervals} intervals, got "
                         f"N = {intervals} (points of shape {tuple(points.shape)}); the triton and reference "
                         f"backends serve any N")
    return intervals


def _pwlu_params(x, C, points, *scalars):
    """points as (C, N+1), the others (C,), all in the compute dtype."""
    table = points.to(compute_dtype(x)).expand(C, points.shape[1]).contiguous()
    return [table, *compute_params(x, C, *scalars)]


def _pwlu_grads(partial, points, *scalars):
    dpoints, dscalars = partial
    # points' channel axis is its first: sum_partials wants it last.
    grad_points = sum_partials(dpoints.transpose(1, 2), points.t()).t().contiguous()
    return (grad_points, *(sum_partials(dscalars[:, k], p) for k, p in enumerate(scalars)))


@dataclasses.dataclass(frozen=True)
class CppOp:
    """One op's facts for the host: see the table in csrc/kernel_abi.h."""

    name: str
    # (extension, *params) -> the kernels' size argument, checked against the extension's limits.
    size: Callable
    # (partials, C, size) -> the shapes of the partial buffers.
    partial_shapes: Callable
    # (x, C, *params) -> the parameters as the kernels take them.
    params: Callable = compute_params
    # (partial buffers, *params) -> the parameter gradients.
    grads: Callable = lambda partial, *params: tuple(sum_partials(b, p) for b, p in zip(partial, params))


OPS = {op.name: op for op in (
    CppOp("lslu", size=_lslu_size, partial_shapes=lambda P, C, S: [(P, S, C), (P, S, C)]),
    CppOp("pvlu", size=lambda ext, alpha, beta: 0, partial_shapes=lambda P, C, _: [(P, C), (P, C)]),
    CppOp("pwlu", size=_pwlu_size, partial_shapes=lambda P, C, N: [(P, C, N + 1), (P, 4, C)],
          params=_pwlu_params, grads=_pwlu_grads),
)}


def _sizes(x, outer, C, inner, size):
    return dict(dtype=dtype_name(x), outer=outer, channels=C, inner=inner, size=size)


def forward(op: str, x, *params, outer, C, inner):
    spec = OPS[op]
    ext = extension(x.device)
    size = spec.size(ext, *params)
    kernel_params = spec.params(x, C, *params)
    y = torch.empty_like(x)
    with device_guard(x.device):
        getattr(ext, f"{op}_forward")(x.data_ptr(), y.data_ptr(), [p.data_ptr() for p in kernel_params],
                                      **_sizes(x, outer, C, inner, size), **exec_arg(x),
                                      force_int64=forcing_int64())
    return y


def backward(op: str, grad_output, x, *params, outer, C, inner):
    spec = OPS[op]
    ext = extension(x.device)
    size = spec.size(ext, *params)
    kernel_params = spec.params(x, C, *params)
    grad_x = torch.empty_like(x)
    sizes = _sizes(x, outer, C, inner, size)
    with device_guard(x.device):
        partials = getattr(ext, f"{op}_backward_partials")(**sizes, multiprocessors=multiprocessors(x.device))
        # Every entry is written by the kernels.
        partial = [torch.empty(shape, dtype=kernel_params[0].dtype, device=x.device)
                   for shape in spec.partial_shapes(partials, C, size)]
        getattr(ext, f"{op}_backward")(grad_output.data_ptr(), x.data_ptr(), grad_x.data_ptr(),
                                       [p.data_ptr() for p in kernel_params], [b.data_ptr() for b in partial],
                                       **sizes, partials=partials, **exec_arg(x), force_int64=forcing_int64())
    return (grad_x, *spec.grads(partial, *params))


def kernels(op: str):
    """The ``(forward, backward)`` host functions of ``op`` on the C++ backends."""
    return functools.partial(forward, op), functools.partial(backward, op)
