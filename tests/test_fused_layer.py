"""The paper's full layer fused (``lk.functional.lslu_dwconv``, ``lslu_kernels/fused.py``) and
``LearnableSerieslinearUnit`` on it: against the unfused reference (``reference.lslu`` then
``F.conv2d``), every gradient labelled, on the backends with the fused kernels."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from conftest import CPU_ISAS, cpu_isa
from parity import assert_elementwise, assert_reduction

import lslu_kernels as lk
from lslu_kernels import fused, reference

def _fused_on_cpu(backend: str) -> bool:
    return (backend in lk.available_backends() and fused.has_fused(backend)
            and "cpu" in (lk._backends.backends()[backend].serves or ()))


def _fused_on_gpu(backend: str) -> bool:
    return (torch.cuda.is_available() and fused.has_fused(backend)
            and lk._backends.backends()[backend].serves_device("cuda")
            and lk._backends.device_problem(backend, torch.device("cuda")) is None)


# On the CPU the Triton kernels run under the interpreter, far too slowly for this file's sizes: their own
# tests (tests/test_fused_triton.py) call the host functions; test_triton_through_the_op below checks
# the op's use of them. On a GPU (the GPU check's test step) every test of a backend also runs the Triton
# kernels compiled, on CUDA tensors (DEVICES: the tests make their tensors and modules on that device).
FUSED_BACKENDS = [b for b in ("cpu",) if _fused_on_cpu(b)] + [b for b in ("triton",) if _fused_on_gpu(b)]
DEVICES = {"triton": "cuda"}


@pytest.fixture(autouse=True)
def _on_the_backends_device(request):
    """Factory functions (torch.randn, modules' parameters) make tensors on the device of the test's backend."""
    params = getattr(request.node, "callspec", None)
    backend = params.params.get("backend") if params is not None else None
    with torch.device(DEVICES.get(backend, "cpu")):
        yield


GRAD_NAMES = ("x", "theta", "omega", "weight", "bias")


def _inputs(shape, stages, shared, dtype=torch.float64, bias=True, channels_last=False):
    N, C, H, W = shape
    x = torch.randn(shape, dtype=torch.float64)
    width = 1 if shared else C
    theta = 1.0 + 0.3 * torch.randn(stages, width, dtype=torch.float64)
    omega = 0.2 * torch.randn(stages, width, dtype=torch.float64)
    K = 2 * stages + 1
    weight = torch.randn(C, 1, K, K, dtype=torch.float64) / K
    b = torch.randn(C, dtype=torch.float64) if bias else None
    x = x.to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    params = [t.to(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype) for t in (theta, omega, weight)]
    return x, params, None if b is None else b.to(params[0].dtype)


def _run(fn, x, params, bias, grad_y, **kwargs):
    leaves = [t.detach().requires_grad_() for t in (x, *params)]
    b = None if bias is None else bias.detach().requires_grad_()
    y = fn(*leaves, b, **kwargs)
    y.backward(grad_y)
    grads = [t.grad for t in leaves] + [None if b is None else b.grad]
    return y.detach(), grads


def _reference64(x, params, bias, grad_y):
    as64 = [t.detach().to(torch.float64) for t in (x, *params)]
    b = None if bias is None else bias.detach().to(torch.float64)
    return _run(reference.lslu_dwconv, as64[0], as64[1:], b, grad_y.to(torch.float64))


def _check(backend, x, params, bias, label):
    grad_y = torch.randn(x.shape, dtype=torch.float64).to(x.dtype)
    y, grads = _run(lk.functional.lslu_dwconv, x, params, bias, grad_y, backend=backend)
    y_ref, grads_ref = _reference64(x, params, bias, grad_y)
    assert_elementwise(y, y_ref, x.dtype, f"{label}: output")
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last), f"{label}: output not channels-last"
        assert grads[0].is_contiguous(memory_format=torch.channels_last), f"{label}: grad_x not channels-last"
    assert_elementwise(grads[0], grads_ref[0], x.dtype, f"{label}: grad_x")
    for name, p, g, g_ref in zip(GRAD_NAMES[1:], (*params, bias), grads[1:], grads_ref[1:]):
        if p is None:
            assert g is None, f"{label}: grad_{name} without {name}"
            continue
        assert_reduction(g, g_ref, x.dtype, p.dtype, f"{label}: grad_{name}")
    return y


# (N, C, H, W) with S: ones, primes, planes smaller than the kernel, N = 1, C = 1.
SHAPES = [
    ((2, 5, 7, 3), 1),
    ((1, 1, 1, 1), 1),
    ((1, 1, 1, 1), 3),
    ((3, 7, 2, 5), 3),  # H, W < 2S + 1
    ((1, 3, 11, 13), 2),
    ((2, 1, 5, 17), 4),
    ((5, 19, 6, 4), 1),  # channels-last: a block of 16 float channels and a partial one
    ((2, 37, 3, 3), 2),  # channels-last half types: 32-channel blocks and a partial one
    ((9, 2, 4, 6), 1),   # small planes: the whole batch side by side in one buffer
    ((9, 2, 60, 70), 1),  # large planes: one per buffer, 9 batch entries in backward's 8 parts
]


@pytest.mark.skipif(not _fused_on_cpu("triton"), reason="the Triton backend does not serve CPU tensors here")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_channel"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_triton_through_the_op(shared, channels_last, bias):
    for shape, stages in (((2, 5, 7, 3), 1), ((3, 7, 2, 5), 3)):
        x, params, b = _inputs(shape, stages, shared, bias=bias, channels_last=channels_last)
        _check("triton", x, params, b, f"triton {shape} S={stages} shared={shared} cl={channels_last} bias={bias}")


@pytest.mark.skipif(not FUSED_BACKENDS, reason="no backend with the fused kernels serves CPU tensors")
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_channel"])
@pytest.mark.parametrize("shape,stages", SHAPES, ids=[f"{s}-S{k}" for s, k in SHAPES])
def test_parity_float64(backend, shape, stages, shared, channels_last):
    x, params, bias = _inputs(shape, stages, shared, channels_last=channels_last)
    _check(backend, x, params, bias, f"{backend} {shape} S={stages} shared={shared} cl={channels_last}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("stages", range(1, 9))
def test_every_stage_count(backend, stages):
    for channels_last in (False, True):
        x, params, bias = _inputs((2, 3, 5, 6), stages, shared=False, channels_last=channels_last)
        _check(backend, x, params, bias, f"{backend} S={stages} cl={channels_last}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_dtypes(backend, dtype, channels_last):
    for shape, stages in (((2, 5, 7, 3), 1), ((3, 37, 9, 8), 3)):
        x, params, bias = _inputs(shape, stages, shared=True, dtype=dtype, channels_last=channels_last)
        y = _check(backend, x, params, bias, f"{backend} {dtype} {shape} S={stages} cl={channels_last}")
        assert y.dtype == dtype


# Plane groups of unequal sizes whose buffer rows round up to the same pitch (backward's batch parts
# of 2 and 3 planes, 3 planes per buffer): a buffer's zeros are reused only for the same plane count,
# else the values of the larger group's last plane stay in the smaller one's padding (found wrong
# weight and bias gradients, 12% off in float32, before the fix).
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_unequal_plane_groups(backend, dtype):
    for shape in ((10, 2, 1100, 1), (10, 1, 500, 3)):
        x, params, bias = _inputs(shape, 1, shared=False, dtype=dtype)
        _check(backend, x, params, bias, f"{backend} {dtype} {shape} unequal plane groups")


@pytest.mark.skipif("cpu" not in FUSED_BACKENDS or len(CPU_ISAS) < 2, reason="one cpu instruction-set level")
@pytest.mark.parametrize("isa", CPU_ISAS)
def test_cpu_levels(isa):
    with cpu_isa(isa):
        for channels_last in (False, True):
            for dtype in (torch.float64, torch.float32, torch.bfloat16):
                x, params, bias = _inputs((3, 21, 6, 7), 2, shared=False, dtype=dtype, channels_last=channels_last)
                _check("cpu", x, params, bias, f"cpu at {isa} {dtype} cl={channels_last}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_without_bias_and_mixed_dtypes(backend):
    x, params, _ = _inputs((2, 4, 5, 5), 2, shared=True, dtype=torch.bfloat16)
    _check(backend, x, params, None, f"{backend} no bias")
    params = [p.double() for p in params]  # float64 parameters with bfloat16 x: gradients in float64
    _check(backend, x, params, torch.randn(4, dtype=torch.float64), f"{backend} float64 params")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_non_dense_input_is_copied(backend):
    x, params, bias = _inputs((2, 3, 6, 10), 1, shared=True)
    _check(backend, x[..., ::2], params, bias, f"{backend} strided")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_channel"])
def test_gradcheck(backend, shared, channels_last):
    for shape, stages in (((2, 3, 4, 5), 1), ((1, 2, 3, 3), 2)):
        x, params, bias = _inputs(shape, stages, shared, channels_last=channels_last)
        leaves = [t.requires_grad_() for t in (x, *params, bias)]
        assert torch.autograd.gradcheck(
            lambda *a: lk.functional.lslu_dwconv(*a, backend=backend), leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bitwise_deterministic(backend, channels_last):
    x, params, bias = _inputs((9, 20, 13, 11), 3, shared=False, dtype=torch.float32, channels_last=channels_last)
    grad_y = torch.randn(x.shape).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    first = _run(lk.functional.lslu_dwconv, x, params, bias, grad_y, backend=backend)
    second = _run(lk.functional.lslu_dwconv, x, params, bias, grad_y, backend=backend)
    for a, b, name in zip([first[0], *first[1]], [second[0], *second[1]], ("y", *GRAD_NAMES)):
        assert torch.equal(a, b), f"{backend}: {name} differs from run to run"


@pytest.mark.skipif("cpu" not in FUSED_BACKENDS, reason="no cpu backend")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_cpu_thread_count_changes_nothing(channels_last):
    host = importlib.import_module("lslu_kernels.cpp_kernels.lslu_dwconv")
    # large planes: backward sums in 8 parts of the 9 batch entries; small NCHW ones: in one
    # (channels-last buffers hold 64 bytes of channels per pixel: the small planes take one each too)
    for shape, parts in (((9, 3, 64, 64), 8), ((9, 20, 13, 11), 8 if channels_last else 1)):
        sizes = dict(dtype="float32", batch=shape[0], channels=shape[1], height=shape[2], width=shape[3], stages=3,
                     channels_last=channels_last)
        assert host.extension(torch.device("cpu")).lslu_dwconv_backward_partials(**sizes) == parts
        _check_threads(host, shape, channels_last)


def _check_threads(host, shape, channels_last):
    x, (theta, omega, weight), bias = _inputs(shape, 3, shared=False, dtype=torch.float32,
                                             channels_last=channels_last)
    g = torch.randn(x.shape).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    results = [(host.forward(x, theta, omega, weight, bias, 3, threads=t),
                *host.backward(g, x, theta, omega, weight, 3, threads=t)) for t in (1, 2, 3, 7)]
    for t, other in zip((2, 3, 7), results[1:]):
        for a, b, name in zip(results[0], other, ("y", *GRAD_NAMES)):
            assert torch.equal(a, b), f"{shape}: {name} with {t} threads differs from 1 thread"


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_empty(backend):
    x, params, bias = _inputs((0, 3, 4, 4), 1, shared=True)
    leaves = [t.requires_grad_() for t in (x, *params, bias)]
    y = lk.functional.lslu_dwconv(*leaves, backend=backend)
    assert y.shape == x.shape
    y.sum().backward()
    for name, t in zip(GRAD_NAMES, leaves):
        assert t.grad is not None and t.grad.shape == t.shape and not t.grad.any(), f"grad_{name} of an empty batch"


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_compile_fullgraph(backend):
    x, params, bias = _inputs((2, 6, 5, 7), 2, shared=False, dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: lk.functional.lslu_dwconv(*a, backend=backend), fullgraph=True)
    grad_y = torch.randn(x.shape)
    y_eager, g_eager = _run(lambda *a: lk.functional.lslu_dwconv(*a, backend=backend), x, params, bias, grad_y)
    y_comp, g_comp = _run(compiled, x, params, bias, grad_y)
    assert torch.equal(y_eager, y_comp), "compiled output"
    for name, a, b in zip(GRAD_NAMES, g_eager, g_comp):
        assert torch.equal(a, b), f"compiled grad_{name}"


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_opcheck(backend, channels_last):
    x, params, bias = _inputs((2, 5, 4, 6), 1, shared=True, dtype=torch.float32, channels_last=channels_last)
    leaves = [t.requires_grad_() for t in (x, *params, bias)]
    torch.library.opcheck(fused.forward_op, (*leaves, backend))
    torch.library.opcheck(fused.forward_op, (*leaves[:4], None, backend))
    grad_y = torch.randn(x.shape).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.library.opcheck(fused.backward_op, (grad_y, x.detach(), *(p.detach() for p in params), backend))


def test_bad_inputs():
    x, (theta, omega, weight), bias = _inputs((2, 4, 5, 5), 2, shared=False, dtype=torch.float32)
    call = lk.functional.lslu_dwconv
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\)"):
        call(x[0], theta, omega, weight, bias)
    with pytest.raises(TypeError, match="x must be float16"):
        call(x.to(torch.int32), theta, omega, weight, bias)
    with pytest.raises(ValueError, match="weight must have shape"):
        call(x, theta, omega, weight[:, :, :3, :3], bias)
    with pytest.raises(ValueError, match="weight must have shape"):
        call(x, theta, omega, weight[:3], bias)
    with pytest.raises(ValueError, match="bias must have shape"):
        call(x, theta, omega, weight, bias[:3])
    with pytest.raises(ValueError, match="theta and omega must have the same shape"):
        call(x, theta, omega[:1], weight, bias)
    with pytest.raises(ValueError, match="all per-channel or all shared"):
        call(x, theta, omega[:, :1], weight, bias)
    with pytest.raises(ValueError, match="theta must have shape"):
        call(x, theta[:, :3], omega[:, :3], weight, bias)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        call(x, theta, omega, 1.0, bias)
    with pytest.raises(ValueError, match="same device"):
        call(x, theta.to("meta"), omega, weight, bias)
    with pytest.raises(ValueError, match="unknown backend"):
        call(x, theta, omega, weight, bias, backend="nope")


@pytest.mark.skipif("cpu" not in FUSED_BACKENDS, reason="no cpu backend")
def test_cpu_stage_limit():
    x, (theta, omega, weight), bias = _inputs((1, 2, 3, 3), 9, shared=True, dtype=torch.float32)
    with pytest.raises(ValueError, match="1 to 8 stages"):
        lk.functional.lslu_dwconv(x, theta, omega, weight, bias, backend="cpu")


# ---- the layer ----

def _unfused_layer(layer, x):
    """The layer's math unfused: reference series, PyTorch's depthwise convolution, BN."""
    r = reference.lslu(x, layer.theta, layer.omega)
    y = F.conv2d(r, layer.weight, layer.bias, padding=layer.num_activations, groups=layer.dim)
    return y if layer.deploy else layer.bn(y)


def _layer_pair(dim, stages, shared, backend, deploy=False):
    layer = lk.LearnableSerieslinearUnit(dim, stages, deploy=deploy, shared=shared, backend=backend,
                                         dtype=torch.float64)
    with torch.no_grad():
        layer.theta.copy_(1 + 0.3 * torch.randn_like(layer.theta))
        layer.omega.copy_(0.2 * torch.randn_like(layer.omega))
        layer.weight.normal_(0, 0.1)
        if deploy:
            layer.bias.normal_()
        else:
            layer.bn.weight.normal_(1, 0.2)
            layer.bn.bias.normal_()
            layer.bn.running_mean.normal_()
            layer.bn.running_var.uniform_(0.5, 2)
    other = lk.LearnableSerieslinearUnit(dim, stages, deploy=deploy, shared=shared, dtype=torch.float64)
    other.load_state_dict(layer.state_dict())
    return layer, other


def _layer_grads(layer, x, grad, forward):
    x = x.detach().requires_grad_()
    y = forward(x)
    y.backward(grad)
    return y.detach(), {"x": x.grad, **{n: p.grad for n, p in layer.named_parameters()}}


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("form", ["train", "eval", "deploy"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_channel"])
def test_layer_forms(backend, form, channels_last, shared):
    layer, other = _layer_pair(6, 2, shared, backend, deploy=form == "deploy")
    if form == "eval":
        layer.eval()
        other.eval()
    x = torch.randn(3, 6, 7, 5, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    grad = torch.randn(x.shape, dtype=torch.float64)
    y, grads = _layer_grads(layer, x, grad, layer)
    y_ref, grads_ref = _layer_grads(other, x, grad, lambda t: _unfused_layer(other, t))
    label = f"{backend} {form} shared={shared} cl={channels_last}"
    assert_elementwise(y, y_ref, torch.float64, f"{label}: output")
    for name, g_ref in grads_ref.items():
        if name == "x":
            assert_elementwise(grads[name], g_ref, torch.float64, f"{label}: grad_x")
        else:
            assert_reduction(grads[name], g_ref, torch.float64, torch.float64, f"{label}: grad_{name}")
    if form == "train":
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            a, b = getattr(layer.bn, name), getattr(other.bn, name)
            assert torch.allclose(a, b, rtol=1e-12, atol=0), f"{label}: bn.{name}"


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_layer_training_keeps_only_x(backend):
    """The fused training form saves x (and per-channel values) for backward, not the conv output."""
    layer = lk.LearnableSerieslinearUnit(8, 3, backend=backend)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    big = [t for t in saved if t.numel() >= x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr(), [tuple(t.shape) for t in big]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_layer_switch_to_deploy_and_compile(backend):
    layer, _ = _layer_pair(5, 3, True, backend)
    layer.eval()
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        before = layer(x)
        layer.switch_to_deploy()
        after = layer(x)
        torch._dynamo.reset()
        compiled = torch.compile(layer, fullgraph=True)(x)
    assert_elementwise(after, before, torch.float64, "deploy form vs eval form")
    assert torch.equal(compiled, after), "compiled deploy layer"



@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_layer_training_compiled(backend):
    layer, other = _layer_pair(4, 2, False, backend)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    grad = torch.randn(x.shape, dtype=torch.float64)
    torch._dynamo.reset()
    y, grads = _layer_grads(layer, x, grad, torch.compile(layer, fullgraph=True))
    y_ref, grads_ref = _layer_grads(other, x, grad, other)
    assert_elementwise(y, y_ref, torch.float64, "compiled training form: output")
    for name, g_ref in grads_ref.items():
        assert_elementwise(grads[name], g_ref, torch.float64, f"compiled training form: grad_{name}")
    assert torch.equal(layer.bn.running_mean, other.bn.running_mean), "compiled training form: running_mean"


@pytest.mark.skipif("cpu" not in FUSED_BACKENDS, reason="the benchmark times the cpu backend")
def test_layer_benchmark_smoke():
    """benchmarks/layer.py runs end to end: every provider and mode gives a row (timings are not checked)."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        layer_benchmark = importlib.import_module("layer")
    finally:
        sys.path.pop(0)
    torch._dynamo.reset()
    rows = layer_benchmark.run(smoke=True, min_time=0)
    assert {(r["mode"], r["provider"]) for r in rows} == {
        (m, p) for m in layer_benchmark.TARGETS for p in ("fused", "unfused", "eager", "torch.compile")}, \
        "on the CPU: the four providers in both modes (the copy of x only on a GPU)"
    assert all(r["median_ms"] > 0 for r in rows)
    fused_step = next(r for r in rows if (r["mode"], r["provider"]) == ("training step", "fused"))
    assert fused_step["saved_mb"] <= fused_step["x_mb"] + fused_step["params_mb"] + 0.01
    assert len(layer_benchmark.target_lines(rows)) == 3
