"""Inductor's code for a model using every op through the Triton backend's triton ops, generated without a GPU.

    python tests/compile_codegen.py OUT.json     # run by tests/test_compile.py, in a process of its own

Without ``TRITON_INTERPRET`` (which tests/conftest.py sets, hence a process of its own) the kernels are
``JITFunction`` objects that ``torch.library.wrap_triton`` traces. The triton backend is made to serve CPU
tensors and its triton ops are put in use; a stand-in driver reports an sm_90 target; Inductor then
generates the forward and backward code (``torch._inductor.utils.get_code``: generated, never compiled
or run) of ``torch.compile(fullgraph=True)`` over the model at batch 2 and batch 3. Then the model is
exported (``torch.export``, and ONNX with its output from ONNX Runtime beside the reference backend's).
"""

import json
import pathlib
import sys

import torch
from ops import OPS

import lslu_kernels as lk
from lslu_kernels import _backends, _triton_ops, registry


class _TargetDriver:
    """Stands in for Triton's CUDA driver while Inductor generates code: reports sm_90, launches nothing."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def is_active(self):
        return True


def generate_code(out: str):
    """In a process without TRITON_INTERPRET: the triton backend made to serve CPU tensors, its triton ops in
    use, and Inductor's code for forward and backward of the model (generated, never compiled or run)."""
    from torch._inductor.utils import get_code
    from triton.runtime import driver

    driver.set_active(_TargetDriver())
    _backends._BACKENDS["triton"] = _backends.Backend("triton", frozenset({"cpu"}), frozenset())
    for op in OPS:
        _triton_ops.in_use[op.name] = _triton_ops.define(registry.activation(op.name))[0]
    pwlu = lk.PWLU(8, backend="triton")
    pwlu.realign()  # phase II: the PWLU op (phase I is ReLU)
    model = torch.nn.Sequential(lk.LSLU(8, backend="triton"), lk.PVLU(8, backend="triton"), pwlu,
                                lk.LearnableSerieslinearUnit(8, backend="triton"))
    compiled = torch.compile(model, fullgraph=True)
    with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):  # both graphs now
        codes = get_code(lambda: [compiled(torch.randn(batch, 8, 6, 5)) for batch in (2, 3)])
    result = {"codes": codes}
    from torch._library.triton import get_triton_kernels_for_op  # the kernels the AOTAutograd cache key hashes
    result["kernels_of_ops"] = {name: [k.__name__ for k in get_triton_kernels_for_op(f"lslu_kernels::{name}")]
                                for op in OPS for name in (f"{op.name}_triton", f"{op.name}_triton_backward")}
    # torch.export keeps the triton ops as ops (no kernel in the program); ONNX translates them as the custom ops.
    model.eval()
    x = torch.randn(2, 8, 6, 5)
    program = torch.export.export(model, (x,))
    result["exported_ops"] = sorted({str(n.target) for n in program.graph.nodes if "lslu_kernels" in str(n.target)})
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        result["onnx"] = None
    else:
        y = torch.onnx.export(model, (x,), dynamo=True, verbose=False)(x)[0]
        for module in model.modules():
            if hasattr(module, "backend"):
                module.backend = "reference"
        result["onnx"] = [y.tolist(), model(x).tolist()]
    pathlib.Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    generate_code(sys.argv[1])
