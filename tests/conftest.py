"""Test setup: without a GPU, Triton kernels run in the interpreter on CPU tensors.

TRITON_INTERPRET must be set before any kernel module is imported, so this
happens here, before ``lslu_kernels`` is imported by any test.
"""

import contextlib
import importlib
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import lslu_kernels as lk  # noqa: E402
from lslu_kernels import _backends  # noqa: E402

KERNEL_BACKENDS = [b for b in lk.available_backends() if b != "reference"]

# The cpu backend's instruction-set levels that this machine runs (csrc/cpu/isa.h), lowest first.
CPU_ISAS = list(importlib.import_module("lslu_kernels._C_cpu").supported_isas()) if "cpu" in KERNEL_BACKENDS else []


@contextlib.contextmanager
def cpu_isa(name: str):
    """Runs the cpu backend's kernels at level ``name`` inside the block."""
    extension = importlib.import_module("lslu_kernels._C_cpu")
    before = extension.isa()
    extension.set_isa(name)
    try:
        yield
    finally:
        extension.set_isa(before)


# Every kernel backend, the cpu one at each level: a CPU model runs the code of its best level
# only, so a machine that has several tests each of them here ("cpu-avx2", ...).
_BACKEND_LEVELS = [(b, None) for b in KERNEL_BACKENDS if b != "cpu"] + [("cpu", isa) for isa in CPU_ISAS]


def backend_device(backend: str) -> torch.device:
    """The device whose tensors ``backend`` is tested on here."""
    serves = _backends.backends()[backend].serves
    return torch.device("cuda" if "cuda" in serves else "cpu")


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request) -> str:
    return request.param


@pytest.fixture(params=_BACKEND_LEVELS, ids=[b if isa is None else f"{b}-{isa}" for b, isa in _BACKEND_LEVELS])
def kernel_backend_each_level(request) -> str:
    """As ``kernel_backend``, with the cpu backend once per instruction-set level (for the parity checks)."""
    backend, isa = request.param
    with cpu_isa(isa) if isa is not None else contextlib.nullcontext():
        yield backend


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed"
    return f"{triton.__version__} ({os.path.dirname(triton.__file__)})"


def pytest_report_header(config):
    return (f"lslu_kernels backends: {lk.available_backends()}; "
            f"triton {_triton_version()}; TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}; "
            f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}; "
            f"cpu backend levels: {CPU_ISAS}")
