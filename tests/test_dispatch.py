"""The shared dispatch layer: input validation and the backend choice rules (SPEC.md sections 2 and 3)."""

import re

import pytest
import torch

import lslu_kernels as lk
from lslu_kernels import _backends


def _lslu_args(shape=(2, 4, 3), stages=2, channels=4):
    return torch.randn(shape), torch.ones(stages, channels), torch.zeros(stages, channels)


@pytest.mark.parametrize("backend", lk.available_backends())
@pytest.mark.parametrize(
    "change, error, pattern",
    [
        (lambda x, th, om: (x.to(torch.int32), th, om), TypeError, r"x must be float16.*torch\.int32"),
        (lambda x, th, om: (x.bool(), th, om), TypeError, r"x must be float.*torch\.bool"),
        (lambda x, th, om: (x.tolist(), th, om), TypeError, r"x must be a torch\.Tensor, got list"),
        (lambda x, th, om: (x[0, 0, 0], th, om), ValueError, r"0-d tensor"),
        (lambda x, th, om: (x, th.long(), om), TypeError, r"theta must be float.*torch\.int64"),
        (lambda x, th, om: (x, th[:, :3], om[:, :3]), ValueError, r"theta must have shape \(\.\.\., C\) with C = 4"),
        (lambda x, th, om: (x, th[0], om[0]), ValueError, r"theta must have shape.*got \(4,\)"),
        (lambda x, th, om: (x, th, om[:1]), ValueError, r"theta and omega must have the same shape"),
        (lambda x, th, om: (x, th, om[:, :1]), ValueError, r"all per-channel or all shared"),
        (lambda x, th, om: (x, th[:0], om[:0]), ValueError, r"at least one stage"),
        (lambda x, th, om: (x, th.to("meta"), om), ValueError, r"theta is on meta but x is on cpu"),
    ],
    ids=["int_x", "bool_x", "list_x", "scalar_x", "int_theta", "wrong_C", "theta_1d", "S_mismatch",
         "shared_mixed", "no_stages", "devices_differ"],
)
def test_bad_input_is_named(backend, change, error, pattern):
    x, theta, omega = change(*_lslu_args())
    with pytest.raises(error, match=pattern):
        lk.lslu(x, theta, omega, backend=backend)


@pytest.mark.parametrize("channel_dim", [3, -4, 1.0, None])
def test_channel_dim_out_of_range(channel_dim):
    x, theta, omega = _lslu_args()
    with pytest.raises(IndexError, match=re.escape(f"channel_dim={channel_dim!r} is out of range")):
        lk.lslu(x, theta, omega, channel_dim=channel_dim)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorrt'; known backends: cuda, triton, cpu, reference"):
        lk.lslu(*_lslu_args(), backend="tensorrt")


def test_unavailable_backend_says_why_and_what_is_available():
    missing = [b for b in _backends.backends().values() if not b.available]
    if not missing:
        pytest.skip("every backend is available here")
    with pytest.raises(RuntimeError, match=rf"'{missing[0].name}' is not available: .*Available: .*reference"):
        lk.lslu(*_lslu_args(), backend=missing[0].name)


def test_backend_that_does_not_serve_the_device():
    x, theta, omega = (t.to("meta") for t in _lslu_args())
    for name in lk.available_backends():
        if name != "reference":
            with pytest.raises(RuntimeError, match=rf"'{name}' does not serve meta tensors\. Available: "):
                lk.lslu(x, theta, omega, backend=name)


def test_default_is_the_fastest_backend_serving_the_device(monkeypatch):
    monkeypatch.delenv(_backends.ENV_VAR, raising=False)
    expected = next(b.name for b in _backends.backends().values()
                    if b.available and (b.default_for is None or "cpu" in b.default_for))
    assert _backends.resolve(None, torch.device("cpu"), "lslu") == expected
    # The Triton interpreter serves CPU tensors for testing but is never a default.
    assert expected != "triton"


def test_environment_variable_overrides_the_default(monkeypatch):
    x, theta, omega = _lslu_args()
    for name in lk.available_backends():
        monkeypatch.setenv(_backends.ENV_VAR, name)
        assert _backends.resolve(None, x.device, "lslu") == name
    monkeypatch.setenv(_backends.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match=r"unknown \$LSLU_KERNELS_BACKEND 'nonsense'"):
        lk.lslu(x, theta, omega)
    # An explicit backend argument wins over the environment.
    assert torch.equal(lk.lslu(x, theta, omega, backend="reference"), torch.relu(x))


def test_available_backends_always_include_the_reference():
    names = lk.available_backends()
    assert names[-1] == "reference"
    assert set(names) <= set(_backends.BACKEND_NAMES)


@pytest.mark.parametrize("backend", lk.available_backends())
def test_empty_input_gives_empty_output(backend):
    for shape in [(0, 4, 3), (2, 4, 0)]:
        x = torch.randn(shape, requires_grad=True)
        theta = torch.ones(2, 4, requires_grad=True)
        omega = torch.zeros(2, 4, requires_grad=True)
        y = lk.lslu(x, theta, omega, backend=backend)
        assert y.shape == x.shape and y.dtype == x.dtype
        y.sum().backward()
        assert x.grad.shape == x.shape
        assert torch.equal(theta.grad, torch.zeros_like(theta)), "grad_theta of an empty input"
        assert torch.equal(omega.grad, torch.zeros_like(omega)), "grad_omega of an empty input"


# --- The cuda backend serves only GPUs it can run on (SPEC.md section 2), with the probe's answers injected.

GOOD_GPU = dict(driver_version=13000, runtime_version=13000, compute_capability=90, image_ok=True, error="")
NO_IMAGE = dict(driver_version=13000, runtime_version=13000, compute_capability=75, image_ok=False,
                error="no kernel image is available for execution on the device")
OLD_DRIVER = dict(driver_version=12040, runtime_version=13000, compute_capability=90, image_ok=False,
                  error="CUDA driver version is insufficient for CUDA runtime version")


@pytest.mark.parametrize("answer, pattern", [
    (GOOD_GPU, None),
    (dict(GOOD_GPU, driver_version=13020), None),  # a newer driver runs an older runtime
    (dict(GOOD_GPU, runtime_version=13010), None),  # minor-version compatibility within CUDA 13
    (NO_IMAGE, r"no kernel image that loads on this GPU \(compute capability 7\.5; CUDA says: no kernel image"),
    (OLD_DRIVER, r"the driver supports CUDA 12\.4, older than the CUDA 13\.0 runtime"),
    (dict(GOOD_GPU, driver_version=12080, image_ok=True), r"driver supports CUDA 12\.8, older than the CUDA 13\.0"),
    (dict(GOOD_GPU, driver_version=0, image_ok=False, error="no CUDA-capable device is detected"),
     r"no CUDA driver answered \(no CUDA-capable device is detected\)"),
    (dict(GOOD_GPU, error="out of memory"), r"CUDA says: out of memory"),
], ids=["good", "newer_driver", "minor_compat", "no_image", "old_driver", "old_driver_image_ok", "no_driver",
        "error"])
def test_cuda_support_rule(answer, pattern):
    problem = _backends.cuda_support_problem(answer)
    if pattern is None:
        assert problem is None, problem
    else:
        assert problem is not None and re.search(pattern, problem), problem


@pytest.fixture
def gpu_machine(monkeypatch):
    """A process that sees GPUs with the given probe answers, and cuda and triton built for them.

    Returns the list of device indices the extension was asked about (each must be asked once).
    """
    asked = []

    def install(answers):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(answers))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(_backends, "_CUDA_DEVICE_PROBLEMS", {})
        monkeypatch.setattr(_backends, "_ask_cuda_extension", lambda i: asked.append(i) or answers[i])
        gpu = frozenset({"cuda"})
        fake = {"cuda": _backends.Backend("cuda", gpu, gpu), "triton": _backends.Backend("triton", gpu, gpu),
                "cpu": _backends.Backend("cpu", frozenset({"cpu"}), frozenset({"cpu"})),
                "reference": _backends.Backend("reference", None, None)}
        monkeypatch.setattr(_backends, "_BACKENDS", fake)
        monkeypatch.delenv(_backends.ENV_VAR, raising=False)
        return asked

    return install


def test_cuda_is_the_default_only_where_it_runs(gpu_machine):
    asked = gpu_machine([GOOD_GPU, NO_IMAGE])
    assert _backends.resolve(None, torch.device("cuda", 0), "lslu") == "cuda"
    assert _backends.resolve(None, torch.device("cuda", 1), "lslu") == "triton", "a GPU without an image: triton"
    assert _backends.resolve(None, torch.device("cuda"), "lslu") == "cuda", "the current device is cuda:0"
    assert _backends.resolve(None, torch.device("cpu"), "lslu") == "cpu"
    for _ in range(3):
        _backends.resolve(None, torch.device("cuda", 1), "lslu")
    assert sorted(asked) == [0, 1], f"the extension is asked once per device, was asked about {asked}"
    assert lk.available_backends() == ["cuda", "triton", "cpu", "reference"], "cuda runs on cuda:0"
    assert lk.unavailable_backends() == {}


def test_explicit_cuda_on_a_gpu_it_cannot_run_on_says_why(gpu_machine, monkeypatch):
    gpu_machine([GOOD_GPU, NO_IMAGE])
    x = torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match=r"lslu: backend 'cuda' cannot run on cuda:1: the extension has no "
                                           r"kernel image .*compute capability 7\.5.*Available: cuda \(cuda\), triton"):
        _backends.resolve("cuda", x, "lslu")
    monkeypatch.setenv(_backends.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match=r"\$LSLU_KERNELS_BACKEND 'cuda' cannot run on cuda:1"):
        _backends.resolve(None, x, "lslu")
    assert _backends.resolve(None, torch.device("cuda", 0), "lslu") == "cuda"


def test_cuda_that_runs_on_no_gpu_is_not_available(gpu_machine):
    gpu_machine([OLD_DRIVER, OLD_DRIVER])
    assert lk.available_backends() == ["triton", "cpu", "reference"]
    reasons = lk.unavailable_backends()
    assert list(reasons) == ["cuda"]
    assert re.fullmatch(r"cuda:0: the driver supports CUDA 12\.4.*; cuda:1: the driver supports CUDA 12\.4.*",
                        reasons["cuda"]), reasons["cuda"]
    assert _backends.resolve(None, torch.device("cuda", 0), "pvlu") == "triton"
    with pytest.raises(RuntimeError, match=r"'cuda' cannot run on cuda:0: the driver supports CUDA 12\.4.*"
                                           r"Available: triton \(cuda\), cpu \(cpu\), reference"):
        _backends.resolve("cuda", torch.device("cuda", 0), "pvlu")


def test_a_failing_cuda_probe_falls_back_to_triton(gpu_machine, monkeypatch):
    gpu_machine([GOOD_GPU])

    def broken(index):
        raise AttributeError("module 'lslu_kernels._C_cuda' has no attribute 'device_support'")

    monkeypatch.setattr(_backends, "_ask_cuda_extension", broken)
    assert _backends.resolve(None, torch.device("cuda", 0), "pwlu") == "triton"
    assert "device probe failed (module 'lslu_kernels._C_cuda' has no attribute" in lk.unavailable_backends()["cuda"]


@pytest.mark.parametrize("version, available", [
    (_backends.OLDEST_TRITON, True), ("3.9.0", True), ("4.0.0", True), ("3.10.0+git5f3e", True),
    ("3.5.1", False), ("3.1.0", False), ("2.3.1", False)])
def test_triton_older_than_the_oldest_tested_is_not_used(monkeypatch, version, available):
    import triton

    monkeypatch.setattr(triton, "__version__", version)
    probed = _backends._probe_triton()
    assert probed.available == available, probed.missing
    if not available:
        assert probed.missing == (f"triton {version} is older than {_backends.OLDEST_TRITON}, the oldest release "
                                  f"this project tests (pip install 'triton>={_backends.OLDEST_TRITON}')")
