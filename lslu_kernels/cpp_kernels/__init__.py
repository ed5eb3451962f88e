"""Host side of the hand-written C++ backends: ``cpu`` (``_C_cpu``) and ``cuda`` (``_C_cuda``).

The extensions take raw addresses and sizes (see ``csrc/launch.h``); the host
function of each op here allocates the outputs, hands the parameters over in
the compute dtype, and picks the extension by the tensors' device.
"""

import contextlib
import importlib

import torch

from ..reference import compute_dtype

EXTENSIONS = {"cpu": "lslu_kernels._C_cpu", "cuda": "lslu_kernels._C_cuda"}

# True: the CUDA kernels index in int64 on every size, as they must from 2^31 elements on
# (the Triton backend's INT64_THRESHOLD does the same for it), so that tests reach those
# instantiations on small tensors. Read at each call. The CPU kernels always index in int64.
FORCE_INT64 = False


def forcing_int64() -> bool:
    """FORCE_INT64 as it is now (a test may have set it since the import)."""
    return bool(FORCE_INT64)


def extension(device: torch.device):
    return importlib.import_module(EXTENSIONS[device.type])


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


# Elements per CPU thread at the least (PyTorch's own grain size): waking threads for
# less work costs more than it saves, most of all on a busy machine.
CPU_GRAIN = 32768


def launch_arg(x: torch.Tensor) -> int:
    """What the extension launches with for ``x``: the current CUDA stream, or the CPU thread count.

    The CPU result does not depend on the thread count, so small tensors run on fewer threads.
    """
    if x.device.type == "cuda":
        return torch.cuda.current_stream(x.device).cuda_stream
    return max(1, min(torch.get_num_threads(), x.numel() // CPU_GRAIN))


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
