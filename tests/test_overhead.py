"""The eager hot path (issue 13), checked by counting, not timing.

After the first call of a signature of the inputs (dtypes, shapes, devices, backend asked for), a
call of any op on any kernel backend, in forward (with and without grad) and in backward:

- imports nothing (no ``import`` statement or ``importlib.import_module`` in the project's code);
- asks no device property and does not run the checks, the backend choice or the extension's
  partials query again (they depend only on the signature);
- hands contiguous per-channel parameters of the compute dtype to the kernels as they are: the
  same storage reaches the kernel, and no copy or conversion is made of a parameter.

The timed side is ``benchmarks/overhead.py``.
"""

import builtins
import importlib
import sys

import pytest
import torch

from lslu_kernels import _backends, _dispatch, cpp_kernels

from conftest import backend_device
from ops import OPS

PROJECT = ("lslu_kernels", "triton_kernels")


def _ours(module_name: str | None) -> bool:
    return (module_name or "").split(".")[0] in PROJECT


def _inputs(op, backend):
    device = backend_device(backend)
    x = torch.randn(3, 5, 7, device=device, requires_grad=True)
    params = [torch.nn.Parameter(p) for p in op.make_params(5, op.variants[0], device=device)]
    return x, params, torch.randn(3, 5, 7, device=device)


def _calls(op, backend, x, params, grad_output):
    """The hot path in each mode: forward and backward with grad, then forward under no_grad."""
    y = op.fn(x, *params, backend=backend)
    torch.autograd.grad(y, (x, *params), grad_output)
    with torch.no_grad():
        op.fn(x, *params, backend=backend)


@pytest.fixture
def fresh_plans(monkeypatch):
    """An empty plan cache, so that spies installed before the first call are bound into the plans."""
    monkeypatch.setattr(_dispatch, "_PLANS", {})


@pytest.mark.parametrize("op", OPS, ids=str)
def test_hot_path_imports_nothing(monkeypatch, kernel_backend, op):
    x, params, grad_output = _inputs(op, kernel_backend)
    _calls(op, kernel_backend, x, params, grad_output)  # the signature's first call fills the caches
    imports = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def counting_import(name, globals=None, *args, **kwargs):
        if _ours((globals or {}).get("__name__")):
            imports.append(f"import {name}")
        return real_import(name, globals, *args, **kwargs)

    def counting_import_module(name, *args, **kwargs):
        if _ours(sys._getframe(1).f_globals.get("__name__")):
            imports.append(f"importlib.import_module({name!r})")
        return real_import_module(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", counting_import)
    monkeypatch.setattr(importlib, "import_module", counting_import_module)
    _calls(op, kernel_backend, x, params, grad_output)
    monkeypatch.undo()
    assert imports == [], f"{op.name} on {kernel_backend}: the hot path imported {imports}"


# What is asked once per signature (or per device) and never on the hot path.
_DEVICE_QUERIES = [(torch.cuda, name) for name in ("get_device_properties", "get_device_capability",
                                                   "get_device_name", "device_count", "is_available",
                                                   "mem_get_info")]
_ONCE_PER_SIGNATURE = [(_dispatch, "_check_inputs"), (_backends, "resolve"), (_backends, "device_problem"),
                       (_backends, "kernels"), (cpp_kernels, "multiprocessors")]


class _CountingExtension:
    """An extension module whose functions count their calls, by name."""

    def __init__(self, module, counts):
        self._module, self._counts = module, counts

    def __getattr__(self, name):
        target = getattr(self._module, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            self._counts[name] = self._counts.get(name, 0) + 1
            return target(*args, **kwargs)

        return call


@pytest.mark.parametrize("op", OPS, ids=str)
def test_hot_path_asks_nothing_twice(monkeypatch, fresh_plans, kernel_backend, op):
    """No device property, check, backend choice or partials query after the signature's first call."""
    counts = {}

    def counting(owner, name):
        target = getattr(owner, name)

        def call(*args, **kwargs):
            if _ours(sys._getframe(1).f_globals.get("__name__")):  # not torch's own calls
                counts[name] = counts.get(name, 0) + 1
            return target(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)

    for owner, name in _DEVICE_QUERIES + _ONCE_PER_SIGNATURE:
        counting(owner, name)
    real_extension = cpp_kernels.extension
    monkeypatch.setattr(cpp_kernels, "extension", lambda device: _CountingExtension(real_extension(device), counts))
    x, params, grad_output = _inputs(op, kernel_backend)
    _calls(op, kernel_backend, x, params, grad_output)
    assert counts.get("_check_inputs"), "the spies see nothing: the first call should have run the checks"
    counts.clear()
    _calls(op, kernel_backend, x, params, grad_output)
    kernels = (f"{op.name}_forward", f"{op.name}_backward")
    asked = {name: n for name, n in counts.items() if name not in kernels}
    assert asked == {}, f"{op.name} on {kernel_backend}: the hot path asked again {asked}"
    if kernel_backend in cpp_kernels.EXTENSIONS:  # the spy does see the kernel calls themselves
        assert counts.get(f"{op.name}_forward") == 2 and counts.get(f"{op.name}_backward") == 1, counts


# Every Tensor method that copies or converts (or, expand, makes the view the old host copied from).
_COPYING_METHODS = ("contiguous", "to", "expand", "expand_as", "clone", "copy_", "float", "double", "half",
                    "bfloat16", "type")


@pytest.mark.parametrize("op", OPS, ids=str)
def test_hot_path_hands_parameters_over_as_they_are(monkeypatch, fresh_plans, kernel_backend, op):
    x, params, grad_output = _inputs(op, kernel_backend)
    addresses = [p.data_ptr() for p in params]
    seen = []  # (what, the parameters' addresses the kernels were given)
    if kernel_backend in cpp_kernels.EXTENSIONS:
        real_extension = cpp_kernels.extension

        class Recording(_CountingExtension):
            def __getattr__(self, name):
                target = getattr(self._module, name)
                if name not in (f"{op.name}_forward", f"{op.name}_backward"):
                    return target

                def call(*args, **kwargs):
                    seen.append((name, list(args[3 if name.endswith("backward") else 2])))
                    return target(*args, **kwargs)

                return call

        monkeypatch.setattr(cpp_kernels, "extension", lambda device: Recording(real_extension(device), {}))
    else:
        real_kernels = _backends.kernels

        def spying(backend, op_name):
            forward, backward = real_kernels(backend, op_name)

            def spy_forward(x, *ps, **kwargs):
                seen.append(("forward", [p.data_ptr() for p in ps]))
                return forward(x, *ps, **kwargs)

            def spy_backward(grad_output, x, *ps, **kwargs):
                seen.append(("backward", [p.data_ptr() for p in ps]))
                return backward(grad_output, x, *ps, **kwargs)

            return spy_forward, spy_backward

        monkeypatch.setattr(_backends, "kernels", spying)
    _calls(op, kernel_backend, x, params, grad_output)  # the signature's first call
    seen.clear()

    copies = []
    for method in _COPYING_METHODS:
        real = getattr(torch.Tensor, method)

        def spy(self, *args, _real=real, _method=method, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__")
            if _ours(caller) and any(self is p for p in params):
                copies.append(f"{caller}: {op.fn.param_names[[p is self for p in params].index(True)]}.{_method}()")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, spy)
    _calls(op, kernel_backend, x, params, grad_output)
    monkeypatch.undo()
    assert copies == [], f"{op.name} on {kernel_backend}: the hot path copied or converted parameters: {copies}"
    assert len(seen) == 3, f"{op.name} on {kernel_backend}: expected 2 forward and 1 backward kernel calls, {seen}"
    for what, given in seen:
        assert given == addresses, (f"{op.name} on {kernel_backend}: {what} got parameters at {given}, "
                                    f"not the parameters' own storage {addresses}")


class _Activation(torch.nn.Module):
    def __init__(self, op, params, backend):
        super().__init__()
        self.op, self.backend = op, backend
        self.params = torch.nn.ParameterList(params)

    def forward(self, x):
        return self.op.fn(x, *self.params, backend=self.backend)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_traced_calls_take_the_custom_ops(kernel_backend, op):
    """torch.compile and torch.export see lslu_kernels::<op>, not the eager path's autograd.Function."""
    x, params, _ = _inputs(op, kernel_backend)
    model = _Activation(op, params, kernel_backend)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=recording_backend, fullgraph=True)(x)
    compiled = {str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"}
    assert f"lslu_kernels.{op.name}.default" in compiled, f"{op.name}: torch.compile traced {compiled}"
    exported = torch.export.export(model, (x.detach(),))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert f"lslu_kernels.{op.name}.default" in targets, f"{op.name}: torch.export traced {targets}"
