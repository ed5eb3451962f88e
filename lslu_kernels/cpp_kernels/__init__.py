"""Host side of the hand-written C++ backends: ``cpu`` (``_C_cpu``) and ``cuda`` (``_C_cuda``), every op.

The extensions take raw addresses and sizes (``csrc/kernel_abi.h``) with the same three functions
per op (``csrc/bindings.cpp``). The host here, written once, allocates the outputs and the partial
buffers, hands the parameters over in the compute dtype, picks the extension by the tensors'
device and sums the partials; each op's row of ``OPS`` says what differs: its ``size`` (LSLU's
stages, PWLU's intervals), its parameters' layout and its partial buffers.
"""

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


def cpu_threads(numel: int) -> int:
    """CPU threads for a call over ``numel`` elements (the result does not depend on it)."""
    return max(1, min(torch.get_num_threads(), numel // CPU_GRAIN))


def forcing_int64() -> bool:
    """FORCE_INT64 as it is now (a test may have set it since the import)."""
    return bool(FORCE_INT64)


# Device type -> the loaded extension module, imported on first use (not at each call).
_EXTENSIONS: dict[str, object] = {}


def extension(device: torch.device):
    ext = _EXTENSIONS.get(device.type)
    if ext is None:
        ext = _EXTENSIONS[device.type] = importlib.import_module(EXTENSIONS[device.type])
    return ext


_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32",
                torch.float64: "float64"}


def dtype_name(t: torch.Tensor) -> str:
    return _DTYPE_NAMES[t.dtype]


# CUDA device index -> its multiprocessor count, asked once per device.
_MULTIPROCESSORS: dict[int, int] = {}


def multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    index = device.index if device.index is not None else torch.cuda.current_device()
    count = _MULTIPROCESSORS.get(index)
    if count is None:
        count = _MULTIPROCESSORS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return count


def _kernel_param(p: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """``p`` as a contiguous tensor of ``shape`` and ``dtype``: itself when it is one already."""
    if p.dtype == dtype and p.shape == shape and p.is_contiguous():
        return p
    return p.to(dtype).expand(shape).contiguous()


def compute_params(x: torch.Tensor, channels: int, *params: torch.Tensor) -> list[torch.Tensor]:
    """The parameters as contiguous per-channel tensors of the compute dtype.

    Shared parameters (channel axis of size 1, the last) are expanded to every
    channel, so the kernels know one layout; parameters are tiny, the copy costs nothing.
    Parameters that are already so (per channel, contiguous, of the compute dtype) pass through as they are.
    """
    dtype = compute_dtype(x)
    return [_kernel_param(p, dtype, (*p.shape[:-1], channels)) for p in params]


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
    return [_kernel_param(points, compute_dtype(x), (C, points.shape[1])), *compute_params(x, C, *scalars)]


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

    @property
    def entry_points(self) -> tuple[str, str, str]:
        """The extension's functions of this op: forward, backward, backward_partials."""
        return f"{self.name}_forward", f"{self.name}_backward", f"{self.name}_backward_partials"


OPS = {op.name: op for op in (
    CppOp("lslu", size=_lslu_size, partial_shapes=lambda P, C, S: [(P, S, C), (P, S, C)]),
    CppOp("pvlu", size=lambda ext, alpha, beta: 0, partial_shapes=lambda P, C, _: [(P, C), (P, C)]),
    CppOp("pwlu", size=_pwlu_size, partial_shapes=lambda P, C, N: [(P, C, N + 1), (P, 4, C)],
          params=_pwlu_params, grads=_pwlu_grads),
)}

class Launches:
    """The forward and backward launches of one op for inputs like the ones it was made from.

    Everything that depends only on x's dtype, device and ``(outer, C, inner)`` and on the
    parameters' dtypes, shapes and contiguity is worked out once, here: the extension's entry points,
    the size check, the kernels' size arguments, whether the parameters reach the kernels as they are
    (contiguous, per channel, of the compute dtype: no copy) and the backward's partial buffers.
    What may change between calls is read at each one: the CUDA stream, the CPU thread count (above
    one thread's grain of work) and ``FORCE_INT64``. The dispatch layer makes x's GPU the current device
    around each call (the extension launches there).
    """

    def __init__(self, spec: CppOp, x: torch.Tensor, params, outer: int, C: int, inner: int):
        self.spec, self.channels, self.device = spec, C, x.device
        ext = extension(x.device)
        self.size = spec.size(ext, *params)  # raises the clear error of a size the extension does not serve
        self.forward_kernel, self.backward_kernel, self.partials_kernel = (getattr(ext, name)
                                                                          for name in spec.entry_points)
        self.sizes = dict(dtype=dtype_name(x), outer=outer, channels=C, inner=inner, size=self.size)
        # The kernels' arguments after the addresses, in the bindings' order (csrc/bindings.cpp): passed
        # by position, as pybind11 spends over a microsecond matching keyword arguments.
        self.size_args = tuple(self.sizes.values())
        self.numel = outer * C * inner
        self.cuda = x.is_cuda
        # CPU work below two threads' grain runs on one thread whatever torch's thread count.
        self.fixed_exec = None if self.cuda or self.numel >= 2 * CPU_GRAIN else 1
        self.params_as_they_are = all(p is q for p, q in zip(params, spec.params(x, C, *params)))
        self.partial_shapes = None  # on the first backward: a forward-only use never asks

    def exec_arg(self) -> int:
        """Where the extension runs: the current CUDA stream, or the number of CPU threads."""
        if self.fixed_exec is not None:
            return self.fixed_exec
        if self.cuda:
            return torch.cuda.current_stream(self.device).cuda_stream
        return cpu_threads(self.numel)

    def kernel_params(self, x, params):
        return params if self.params_as_they_are else self.spec.params(x, self.channels, *params)

    def forward(self, x, params):
        kernel_params = self.kernel_params(x, params)
        y = torch.empty_like(x)
        self.forward_kernel(x.data_ptr(), y.data_ptr(), [p.data_ptr() for p in kernel_params], *self.size_args,
                            self.exec_arg(), forcing_int64())
        return y

    def backward(self, grad_output, x, params):
        kernel_params = self.kernel_params(x, params)
        if self.partial_shapes is None:
            self.partials = self.partials_kernel(**self.sizes, multiprocessors=multiprocessors(self.device))
            self.partial_shapes = self.spec.partial_shapes(self.partials, self.channels, self.size)
        grad_x = torch.empty_like(x)
        # Every entry is written by the kernels.
        partial = [torch.empty(shape, dtype=kernel_params[0].dtype, device=x.device) for shape in self.partial_shapes]
        self.backward_kernel(grad_output.data_ptr(), x.data_ptr(), grad_x.data_ptr(),
                             [p.data_ptr() for p in kernel_params], [b.data_ptr() for b in partial], *self.size_args,
                             self.partials, self.exec_arg(), forcing_int64())
        return (grad_x, *self.spec.grads(partial, *params))


def forward(spec: CppOp, x, *params, outer, C, inner):
    return Launches(spec, x, params, outer, C, inner).forward(x, params)


def backward(spec: CppOp, grad_output, x, *params, outer, C, inner):
    return Launches(spec, x, params, outer, C, inner).backward(grad_output, x, params)


def kernels(op: str):
    """The ``(forward, backward)`` host functions of ``op`` on the C++ backends.

    ``forward.bind(x, params, outer, C, inner)`` returns the :class:`Launches` for inputs like these,
    which the dispatch layer keeps per signature of the inputs.
    """
    spec = OPS[op]
    host_forward, host_backward = functools.partial(forward, spec), functools.partial(backward, spec)
    host_forward.bind = functools.partial(Launches, spec)
    return host_forward, host_backward
