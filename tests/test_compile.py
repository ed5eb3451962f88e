"""The Triton backend's ``torch.library.triton_op`` ops (lslu_kernels/_triton_ops.py): which ops the dispatch
layer calls, and what torch.compile makes of them.

On a CPU: the choice (triton ops where torch has ``triton_op`` and the kernels compile for a GPU, the opaque
custom ops under older torch and under ``TRITON_INTERPRET=1``); eager calls of the triton ops give the custom
ops' bits and pass ``opcheck``'s eager tests; and, in a process without the interpreter (the kernels are then
real ``JITFunction`` objects) with a stand-in driver that reports an sm_90 target, ``torch.compile(fullgraph=True)``
of a model using every op and the full layer traces without a graph break and Inductor's generated code launches
every forward and backward kernel itself (``<kernel>.run(...)`` in the wrapper, no call of an
``lslu_kernels`` op), again after a change of batch size (tests/compile_codegen.py). That code is generated,
not run: running it, the fake-tensor and AOT parts of ``opcheck``, and CUDA graphs (``mode="reduce-overhead"``)
need a GPU (``test_opcheck_on_the_gpu`` here; ``benchmarks/gpu_driver.py compiled`` in the GPU check).
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest
import torch
from conftest import backend_device
from ops import OPS
from parity import assert_elementwise, forward_backward
from torch.utils._python_dispatch import TorchDispatchMode

from lslu_kernels import _backends, _dispatch, _triton_ops, registry

ROOT = pathlib.Path(__file__).resolve().parent.parent
HAS_TRITON_OP = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")
TRITON = _backends.backends()["triton"]
needs_triton = pytest.mark.skipif(not (HAS_TRITON_OP and TRITON.available),
                                  reason="needs torch.library.triton_op and the triton backend")
# Kernels of each op, as the generated code names them (<kernel>_<n>.run).
KERNELS = {op.name: (f"_{op.name}_forward_kernel", f"_{op.name}_backward_kernel") for op in OPS}


def test_triton_ops_in_use_where_supported():
    """The dispatch layer calls the triton ops exactly where ``unsupported`` has no reason against them."""
    reason = _triton_ops.unsupported()
    triton_ops = {a.name for a in registry.activations() if _backends.has_kernels("triton", a.name)}
    if reason is None:
        assert set(_triton_ops.in_use) == triton_ops
    else:
        assert _triton_ops.in_use == {}, reason
    if _backends.triton_interpreter_on():
        assert reason is not None and "TRITON_INTERPRET=1" in reason


def test_torch_without_triton_op_keeps_the_custom_ops():
    """torch 2.5's torch.library (the oldest torch the wheel is checked against) has neither name."""
    torch_2_5 = types.SimpleNamespace(custom_op=torch.library.custom_op, register_fake=torch.library.register_fake)
    reason = _triton_ops.unsupported(torch_2_5)
    assert reason is not None and "torch.library.triton_op or wrap_triton" in reason, reason
    only_triton_op = types.SimpleNamespace(triton_op=object())
    assert "torch.library.wrap_triton (torch 2.6" in _triton_ops.unsupported(only_triton_op)


class _OpsCalled(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def triton_ops():
    """Every op's triton ops, defined here if the dispatch layer does not use them (eager calls only:
    under the interpreter their fake kernels would run interpreted kernels on fake tensors)."""
    if not HAS_TRITON_OP or not TRITON.available:
        pytest.skip(f"needs torch.library.triton_op and the triton backend: {_triton_ops.unsupported()}")
    return {op.name: _triton_ops.define(registry.activation(op.name)) for op in OPS}


@pytest.mark.parametrize("op", OPS, ids=str)
def test_triton_op_gives_the_custom_ops_bits(triton_ops, op, monkeypatch):
    """Through the public function, forward and backward, per channel and shared, NCHW and channels-last
    (on the path that traced code takes: the eager fast path calls the host functions without either op)."""
    device = backend_device("triton")
    monkeypatch.setattr(_dispatch, "_eager", lambda: False)
    for shared in (False, True):
        params = op.make_params(7, op.variants[0], shared=shared, device=device)
        for x in (torch.randn(3, 7, 5, 4, device=device),
                  torch.randn(3, 7, 5, 4, device=device).to(memory_format=torch.channels_last)):
            grad_output = torch.randn_like(x)
            monkeypatch.setattr(_triton_ops, "in_use", {})
            custom = forward_backward(op.fn, x, params, grad_output, backend="triton")
            monkeypatch.setattr(_triton_ops, "in_use", {op.name: triton_ops[op.name][0]})
            with _OpsCalled() as called:
                triton = forward_backward(op.fn, x, params, grad_output, backend="triton")
            assert {f"lslu_kernels::{op.name}_triton", f"lslu_kernels::{op.name}_triton_backward"} <= called.names, \
                called.names
            assert f"lslu_kernels::{op.name}" not in called.names, called.names
            label = f"{'shared' if shared else 'per channel'} {'nchw' if x.is_contiguous() else 'channels-last'}"
            assert torch.equal(triton[0], custom[0]), f"{op.name} {label}: output"
            for name, a, b in zip(("input", *op.fn.param_names), triton[1], custom[1]):
                assert torch.equal(a, b), f"{op.name} {label}: grad_{name}"


@pytest.mark.parametrize("op", OPS, ids=str)
def test_triton_op_opcheck_eager_parts(triton_ops, op):
    """opcheck's eager tests (schema, autograd registration); the fake-tensor and AOT tests trace the
    host function, which a CPU can only do without the interpreter (the code generation test below)."""
    device = backend_device("triton")
    forward, backward = triton_ops[op.name]
    utils = ("test_schema", "test_autograd_registration")
    x = torch.randn(2, 5, 3, 4, device=device)
    params = op.make_params(5, op.variants[0], device=device)
    torch.library.opcheck(forward, (x.requires_grad_(), *(p.requires_grad_() for p in params), 1), test_utils=utils)
    torch.library.opcheck(backward, (torch.randn_like(x), x.detach(), *(p.detach() for p in params), 1),
                          test_utils=utils)


@pytest.mark.skipif(not _triton_ops.in_use or not torch.cuda.is_available(),
                    reason="the triton ops' fake kernels and AOT dispatch run the kernels on a GPU")
@pytest.mark.parametrize("op", OPS, ids=str)
def test_opcheck_on_the_gpu(op):
    forward, backward = _triton_ops.define(registry.activation(op.name))
    for x, channel_dim in [(torch.randn(2, 5, 3, 4, device="cuda"), 1),
                           (torch.randn(2, 5, 3, 4, device="cuda").to(memory_format=torch.channels_last), 1),
                           (torch.randn(3, 4, 6, device="cuda", dtype=torch.float16), 2)]:
        params = [p.requires_grad_() for p in op.make_params(x.shape[channel_dim], op.variants[0], device="cuda")]
        torch.library.opcheck(forward, (x.requires_grad_(), *params, channel_dim))
        torch.library.opcheck(backward, (torch.randn_like(x), x.detach(), *(p.detach() for p in params), channel_dim))


def _graphs(codes: list[str]) -> list[tuple[str, str]]:
    """(AOT ID, wrapper code) of each graph Inductor generated."""
    out = []
    for code in codes:
        found = re.search(r"# AOT ID: \['(\w+)'\]", code)
        if found:
            out.append((found.group(1), code))
    return out


@pytest.mark.skipif(not HAS_TRITON_OP, reason=f"torch {torch.__version__} has no torch.library.triton_op")
def test_inductor_launches_the_triton_kernels_itself(tmp_path):
    """Generated code (forward and backward) of a model using every op and the full layer, in a process without
    the interpreter: each kernel launched by the wrapper, no lslu_kernels op called, no graph break."""
    pytest.importorskip("triton.backends.compiler", reason="the stand-in driver reports a Triton GPUTarget")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
               TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), TRITON_CACHE_DIR=str(tmp_path / "triton"),
               TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")
    out = tmp_path / "codes.json"
    proc = subprocess.run([sys.executable, "tests/compile_codegen.py", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    result = json.loads(out.read_text())
    graphs = _graphs(result["codes"])
    # Two compilations (batch 2, then 3: the sizes are specialized), each a forward and a backward graph.
    assert sorted(name for name, _ in graphs) == ["0_backward", "0_forward", "1_backward", "1_forward"], \
        [name for name, _ in graphs]
    for name, code in graphs:
        launched = re.findall(r"^\s+(_\w+_kernel)_\d+\.run\(", code, flags=re.M)
        direction = 0 if name.endswith("forward") else 1
        expected = sorted(KERNELS[op][direction] for op in ("lslu", "pvlu", "pwlu"))
        assert sorted(launched) == expected, f"{name}: launches {launched}"
        for kernel in set(launched):
            assert f"async_compile.triton('{kernel}'" in code, f"{name}: {kernel}'s source is not in the code"
        # The full layer's fused op (lslu_kernels/fused.py) is still a custom op, called back (not yet a triton_op).
        called_back = set(re.findall(r"torch\.ops\.lslu_kernels\.(\w+)", code))
        assert called_back <= {"lslu_dwconv", "lslu_dwconv_backward"}, f"{name} calls lslu_kernels ops back: {called_back}"
    batch = re.compile(r"_lslu_forward_kernel_\d+\.run\(\w+, \w+, \w+, \w+, (\d+),")
    assert [batch.search(code).group(1) for name, code in graphs if name.endswith("forward")] == ["2", "3"]
    for name, kernels in result["kernels_of_ops"].items():
        op = name.split("_")[0]
        assert set(KERNELS[op]) <= set(kernels), f"{name}: torch knows its kernels as {kernels}"
    # torch.export keeps the triton ops (README, "torch.export programs keep the custom ops"), ONNX translates them.
    assert [op for op in result["exported_ops"] if "dwconv" not in op] == \
        [f"lslu_kernels.{op}_triton.default" for op in ("lslu", "pvlu", "pwlu")], \
        result["exported_ops"]
    if result["onnx"] is not None:
        onnx_y, reference_y = (torch.tensor(y) for y in result["onnx"])
        assert_elementwise(onnx_y, reference_y.double(), torch.float32, "ONNX Runtime output of the triton ops")
