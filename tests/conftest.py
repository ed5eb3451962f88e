"""Test setup: without a GPU, Triton kernels run in the interpreter on CPU tensors.

TRITON_INTERPRET must be set before any kernel module is imported, so this
happens here, before ``lslu_kernels`` is imported by any test.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import lslu_kernels as lk  # noqa: E402
from lslu_kernels import _backends  # noqa: E402

KERNEL_BACKENDS = [b for b in lk.available_backends() if b != "reference"]


def backend_device(backend: str) -> torch.device:
    """The device whose tensors ``backend`` is tested on here."""
    serves = _backends.backends()[backend].serves
    return torch.device("cuda" if "cuda" in serves else "cpu")


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_report_header(config):
    return (f"lslu_kernels backends: {lk.available_backends()}; "
            f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}; "
            f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
