"""pytest-benchmark microbenchmarks of the hot paths, run on demand (not part of the default test command):

    pip install -e ".[bench]" && python -m pytest benchmarks/test_micro.py
    python -m pytest benchmarks/test_micro.py --benchmark-compare   # against a saved run (--benchmark-autosave)

Per op and kernel backend of this machine's device: the forward and the
forward+backward of one activation-sized tensor (ResNet stage 1 at batch 16),
and the forward of a 64-element tensor, where the time is all dispatch overhead
(validation, backend choice, custom-op call) rather than memory traffic.
"""

import pytest
import torch
from run import OPS, Case, Provider, kernel_backends

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = kernel_backends(DEVICE)
SHAPES = {"resnet-stage1": (16, 64, 56, 56), "tiny": (1, 4, 4, 4)}


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(params=OPS, ids=lambda op: op.label.replace(" ", ""))
def op(request):
    return request.param


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_forward(benchmark, op, backend, shape):
    case = Case(op, SHAPES[shape], "nchw", "float32")
    x, *params = case.make_inputs(Provider(backend, op.fn), DEVICE)
    benchmark.group = f"forward {shape}"

    def forward():
        with torch.no_grad():
            op.fn(x, *params, backend=backend)
        _sync()
    benchmark(forward)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_backward(benchmark, op, backend):
    case = Case(op, SHAPES["resnet-stage1"], "nchw", "float32")
    inputs = case.make_inputs(Provider(backend, op.fn), DEVICE)
    grad_output = torch.randn_like(inputs[0])
    benchmark.group = "forward+backward resnet-stage1"

    def step():
        torch.autograd.grad(op.fn(*inputs, backend=backend), inputs, grad_output)
        _sync()
    benchmark(step)
