"""LSLU: every kernel backend against the float64 reference (SPEC.md 1.1 and 3)."""

import pytest
import torch
from conftest import KERNEL_BACKENDS, backend_device
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import assert_elementwise, assert_reduction

import lslu_kernels as lk
from lslu_kernels import reference

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _contiguous(t):
    return t


def _channels_last(t):
    return t.to(memory_format=torch.channels_last)


def _every_other_column(t):  # not dense: the dispatch layer copies it
    return t[..., ::2]


def _storage_offset(t):  # dense, but starts one row into its storage
    return t[1:]


# (id, shape before the layout change, channel_dim, layout change)
LAYOUTS = [
    ("nchw", (2, 5, 7, 3), 1, _contiguous),
    ("channels_last", (2, 5, 7, 3), 1, _channels_last),
    ("channels_last_wide", (1, 67, 3, 5), 1, _channels_last),
    ("blc", (3, 11, 13), -1, _contiguous),
    ("chw", (13, 4, 5), 0, _contiguous),
    ("vector", (17,), 0, _contiguous),
    ("single_element", (1,), 0, _contiguous),
    ("one_channel", (7, 1), 1, _contiguous),
    ("many_rows", (16, 33, 2, 3), 1, _contiguous),  # more rows than the cpu backend's 256 partials
    ("channels_last_many_rows", (8, 5, 9, 7), 1, _channels_last),
    ("long_rows", (1, 2, 3 * 2**14 + 5), 1, _contiguous),  # rows longer than the cpu backend's chunks
    ("strided", (2, 3, 5, 8), 1, _every_other_column),
    ("storage_offset", (4, 6, 5), 1, _storage_offset),
]


def make_params(num_stages, channels, *, shared=False, omega_zero=False, dtype=torch.float32, device="cpu"):
    """theta of both signs away from 0, omega of both signs (or exactly 0)."""
    shape = (num_stages, 1 if shared else channels)
    sign = torch.where(torch.rand(shape, dtype=torch.float64) < 0.3, -1.0, 1.0)
    theta = (0.25 + 1.5 * torch.rand(shape, dtype=torch.float64)) * sign
    omega = torch.zeros(shape, dtype=torch.float64) if omega_zero else 0.5 * torch.randn(shape, dtype=torch.float64)
    return theta.to(device, dtype), omega.to(device, dtype)


def forward_backward(x, params, grad_output, **kwargs):
    """Output and gradients of lslu at (x, *params), all leaves of a fresh graph."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, *params)]
    y = lk.lslu(*leaves, **kwargs)
    y.backward(grad_output)
    return y.detach(), [t.grad for t in leaves]


def reference_float64(x, params, grad_output, channel_dim):
    as64 = [t.detach().to(torch.float64) for t in (x, *params)]
    return forward_backward(as64[0], as64[1:], grad_output.to(torch.float64),
                            channel_dim=channel_dim, backend="reference")


def check_parity(x, params, channel_dim, backend, label):
    grad_output = torch.randn(x.shape, dtype=torch.float64).to(x.device, x.dtype)
    y, grads = forward_backward(x, params, grad_output, channel_dim=channel_dim, backend=backend)
    y_ref, grads_ref = reference_float64(x, params, grad_output, channel_dim)
    assert_elementwise(y, y_ref, x.dtype, f"{label}: output")
    assert_elementwise(grads[0], grads_ref[0], x.dtype, f"{label}: grad_input")
    for name, p, g, g_ref in zip(("theta", "omega"), params, grads[1:], grads_ref[1:]):
        assert_reduction(g, g_ref, x.dtype, p.dtype, f"{label}: grad_{name}")
    return y


@pytest.mark.parametrize("num_stages", [1, 3])
@pytest.mark.parametrize("omega_zero", [False, True], ids=["omega_random", "omega_zero"])
@pytest.mark.parametrize("shared", [False, True], ids=["per_channel", "shared"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS, ids=[case[0] for case in LAYOUTS])
def test_parity(kernel_backend, layout, dtype, shared, omega_zero, num_stages):
    name, shape, channel_dim, change_layout = layout
    device = backend_device(kernel_backend)
    x = change_layout((2 * torch.randn(shape, dtype=torch.float64)).to(device, dtype))
    # Half-type activations come with float32 parameters (mixed precision).
    param_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    params = make_params(num_stages, x.shape[channel_dim], shared=shared, omega_zero=omega_zero,
                         dtype=param_dtype, device=device)
    y = check_parity(x, params, channel_dim, kernel_backend, f"{kernel_backend} {name} {dtype}")
    expected = torch.empty_like(x) if x.is_contiguous() or name != "strided" else torch.empty(x.shape)
    assert y.stride() == expected.stride(), f"output strides {y.stride()} for input strides {x.stride()}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_parameters(kernel_backend, dtype):
    """Parameters in a half type: computed in float32 all the same, gradients rounded to their dtype."""
    device = backend_device(kernel_backend)
    x = torch.randn(3, 6, 5, device=device, dtype=dtype)
    params = make_params(3, 6, dtype=dtype, device=device)
    grad_output = torch.randn_like(x)
    y, grads = forward_backward(x, params, grad_output, backend=kernel_backend)
    y32, grads32 = forward_backward(x, [p.float() for p in params], grad_output, backend=kernel_backend)
    assert torch.equal(y, y32), "output differs from the one with float32 copies of the parameters"
    for name, g, g32 in zip(("grad_input", "grad_theta", "grad_omega"), grads, grads32):
        assert g.dtype == dtype or name == "grad_input", f"{name}: dtype {g.dtype}"
        assert torch.equal(g, g32.to(g.dtype)), f"{name} differs from float32 parameters' result rounded"


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), data=st.data())
def test_parity_random_shapes(shape, data):
    """Any shape, any channel axis, contiguous float32 (hypothesis)."""
    for backend in KERNEL_BACKENDS:
        channel_dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="channel_dim")
        num_stages = data.draw(st.integers(1, 4), label="num_stages")
        device = backend_device(backend)
        x = torch.randn(shape, device=device)
        params = make_params(num_stages, shape[channel_dim], device=device)
        check_parity(x, params, channel_dim, backend, f"{backend} {shape} channel_dim={channel_dim}")


def test_identity_at_init(kernel_backend):
    """theta = 1, omega = 0 is exactly relu, and relu'(0) = 0."""
    device = backend_device(kernel_backend)
    x = torch.tensor([[-2.0, -0.0, 0.0, 1e-30, 3.0]], device=device).requires_grad_()
    module = lk.LSLU(backend=kernel_backend).to(device)
    y = module(x)
    assert torch.equal(y, torch.relu(x.detach())), f"output {y}"
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]], device=device)), f"grad_input {x.grad}"


@pytest.mark.parametrize("shared", [False, True], ids=["per_channel", "shared"])
def test_nan_and_inf_propagate_as_in_the_reference(kernel_backend, shared):
    """NaN and inf inputs give the reference's outputs and gradients (NaN where it has NaN)."""
    device = backend_device(kernel_backend)
    x = torch.tensor([[float("nan"), 1.0, -1.0, float("inf"), -float("inf"), 0.5]] * 3, dtype=torch.float64)
    params = make_params(2, 6, shared=shared, dtype=torch.float64)
    if not shared:  # a channel with only finite inputs: its gradients must stay finite
        params[0][:, 5] = 1.0
        params[1][:, 5] = 0.5
    check_parity(x.to(device), [p.to(device) for p in params], 1, kernel_backend, "NaN and inf inputs")


# Small shapes: gradcheck runs one backward per output element.
GRADCHECK_LAYOUTS = [
    ("nchw", (2, 3, 2, 3), 1, _contiguous),
    ("channels_last", (2, 3, 2, 3), 1, _channels_last),
    ("blc", (2, 3, 5), -1, _contiguous),
]


@pytest.mark.parametrize("layout", GRADCHECK_LAYOUTS, ids=[case[0] for case in GRADCHECK_LAYOUTS])
@pytest.mark.parametrize("shared", [False, True], ids=["per_channel", "shared"])
def test_gradcheck(kernel_backend, layout, shared):
    name, shape, channel_dim, change_layout = layout
    device = backend_device(kernel_backend)
    x = change_layout(torch.randn(shape, dtype=torch.float64, device=device)).requires_grad_()
    theta, omega = (p.requires_grad_() for p in make_params(
        3, x.shape[channel_dim], shared=shared, dtype=torch.float64, device=device))
    assert torch.autograd.gradcheck(
        lambda *inputs: lk.lslu(*inputs, channel_dim=channel_dim, backend=kernel_backend), (x, theta, omega))


@pytest.mark.parametrize("shared", [False, True], ids=["per_channel", "shared"])
def test_backward_is_deterministic(kernel_backend, shared):
    device = backend_device(kernel_backend)
    x = torch.randn(4, 33, 10, 10, device=device).to(memory_format=torch.channels_last)
    params = make_params(3, 33, shared=shared, device=device)
    grad_output = torch.randn_like(x)
    _, first = forward_backward(x, params, grad_output, backend=kernel_backend)
    _, second = forward_backward(x, params, grad_output, backend=kernel_backend)
    for name, a, b in zip(("grad_input", "grad_theta", "grad_omega"), first, second):
        assert torch.equal(a, b), f"{name} differs between two identical backward calls"


def test_int64_indexing_path(kernel_backend, monkeypatch):
    """The int64-offset code path (taken above 2**31 elements) computes the same values."""
    if kernel_backend != "triton":
        pytest.skip("triton-specific switch")
    from lslu_kernels.triton_kernels import common
    monkeypatch.setattr(common, "INT64_THRESHOLD", 0)
    device = backend_device(kernel_backend)
    x = torch.randn(3, 7, 5, device=device).to(torch.float64)
    check_parity(x, make_params(2, 7, dtype=torch.float64, device=device), 1, kernel_backend, "int64 offsets")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU with ~20 GB free")
def test_more_than_2_31_elements(kernel_backend):
    device = backend_device(kernel_backend)
    x = torch.randn(2, 2**30 + 3, device=device, dtype=torch.bfloat16)
    theta, omega = make_params(3, 2, device=device)
    y = lk.lslu(x, theta, omega, backend=kernel_backend)
    for part in (slice(0, 4096), slice(2**30 - 4096, 2**30 + 3)):
        assert_elementwise(y[:, part], reference.lslu(x[:, part].double(), theta.double(), omega.double()),
                           x.dtype, f"output columns {part}")


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(kernel_backend, requires_grad):
    device = backend_device(kernel_backend)
    for x, channel_dim in [(torch.randn(2, 5, 3, 4, device=device), 1),
                           (torch.randn(2, 5, 3, 4, device=device).to(memory_format=torch.channels_last), 1),
                           (torch.randn(3, 4, 6, device=device, dtype=torch.float16), 2)]:
        theta, omega = make_params(3, x.shape[channel_dim], device=device)
        args = (x.requires_grad_(requires_grad), theta.requires_grad_(requires_grad),
                omega.requires_grad_(requires_grad), channel_dim, kernel_backend)
        torch.library.opcheck(lk.lslu.forward_op, args)
        # Autograd runs the backward op on tensors that do not require grad
        # (double backward is not supported and says so).
        grad_output = torch.randn_like(x)
        detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(lk.lslu.backward_op, (grad_output, *detached))


def test_torch_compile_fullgraph(kernel_backend):
    """A small CNN using the module compiles without graph breaks and matches eager."""
    device = backend_device(kernel_backend)
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), lk.LSLU(8, backend=kernel_backend),
        torch.nn.Conv2d(8, 4, 1), lk.LSLU(backend=kernel_backend)).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 3, 6, 5, device=device)
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_eager = model(x)
    y_eager.square().sum().backward()
    torch.testing.assert_close(y, y_eager, rtol=1e-5, atol=1e-6, msg="compiled output")
    for (name, p), g in zip(model.named_parameters(), compiled_grads):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6, msg=f"compiled grad of {name}")


def test_module(kernel_backend):
    device = backend_device(kernel_backend)
    module = lk.LSLU(5, num_stages=2, channel_dim=-1, backend=kernel_backend).to(device)
    assert module.theta.shape == (2, 5) and module.omega.shape == (2, 5)
    assert torch.equal(module.theta, torch.ones(2, 5, device=device))
    assert torch.equal(module.omega, torch.zeros(2, 5, device=device))
    assert "channels=5, num_stages=2" in repr(module)
    shared = lk.LSLU()
    assert shared.theta.shape == (3, 1)
    loaded = lk.LSLU(5, num_stages=2, channel_dim=-1)
    loaded.load_state_dict(module.state_dict())
    x = torch.randn(4, 5, device=device)
    assert torch.equal(loaded.to(device)(x), module(x))


def test_cpu_result_does_not_depend_on_the_thread_count():
    if "cpu" not in KERNEL_BACKENDS:
        pytest.skip("cpu backend not built")
    x = torch.randn(6, 37, 11, 13)
    params = make_params(3, 37)
    grad_output = torch.randn_like(x)
    threads = torch.get_num_threads()
    try:
        for layout_x in (x, x.to(memory_format=torch.channels_last)):
            results = []
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                results.append(forward_backward(layout_x, params, grad_output, backend="cpu"))
            for n, (y, grads) in zip((2, 3), results[1:]):
                assert torch.equal(y, results[0][0]), f"output with {n} threads differs from 1 thread"
                for name, a, b in zip(("grad_input", "grad_theta", "grad_omega"), grads, results[0][1]):
                    assert torch.equal(a, b), f"{name} with {n} threads differs from 1 thread"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", [b for b in ("cpu", "cuda") if b in KERNEL_BACKENDS])
def test_cpp_backends_name_their_stage_limit(backend):
    device = backend_device(backend)
    x = torch.randn(2, 3, 4, device=device)
    theta, omega = make_params(9, 3, device=device)
    with pytest.raises(ValueError, match=r"serve 1 to 8 stages, got S = 9; the triton and reference"):
        lk.lslu(x, theta, omega, backend=backend)
