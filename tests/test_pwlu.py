"""PWLU-specific properties (SPEC.md 1.3); what every op must do is in test_activations.py."""

import pytest
import torch
from conftest import KERNEL_BACKENDS, backend_device
from ops import pwlu_params
from parity import check_parity

import lslu_kernels as lk


def _exact_params(channels, intervals, dtype=torch.float64):
    """Bounds -2 and 2: every knot B_L + k d is exact in binary, so inputs can sit exactly on them."""
    points = torch.randn(channels, intervals + 1, dtype=torch.float64)
    left, right = torch.full((channels,), -2.0), torch.full((channels,), 2.0)
    slopes = torch.randn(channels, dtype=torch.float64), torch.randn(channels, dtype=torch.float64)
    return [t.to(dtype) for t in (points, left, right, *slopes)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("intervals", [1, 16, 64])
def test_inputs_on_interval_edges_bounds_and_far_outside(kernel_backend_each_level, intervals, dtype):
    kernel_backend = kernel_backend_each_level
    device = backend_device(kernel_backend)
    knots = -2.0 + 4.0 * torch.arange(intervals + 1, dtype=torch.float64) / intervals
    just_off = torch.cat([torch.nextafter(knots, knots - 1), torch.nextafter(knots, knots + 1)])
    far = torch.tensor([-1e30, -1e6, -3.0, 3.0, 1e6, 1e30], dtype=torch.float64)
    values = torch.cat([knots, just_off, far])
    x = values[:, None].expand(-1, 3).contiguous().to(dtype)  # 3 channels along axis 1
    params = _exact_params(3, intervals, dtype=torch.float32 if dtype == torch.bfloat16 else dtype)
    check_parity(lk.pwlu, x.to(device), [p.to(device) for p in params], 1, kernel_backend,
                 f"pwlu N={intervals} edges {dtype}")


@pytest.mark.parametrize("backend", lk.available_backends())
def test_crossed_bounds_give_no_nan(backend):
    device = backend_device(backend) if backend != "reference" else torch.device("cpu")
    points, left, right, left_slope, right_slope = pwlu_params(4, "N16_crossed", device=device)
    equal = [points, left, left.clone(), left_slope, right_slope]  # B_R == B_L
    for params in ([points, left, right, left_slope, right_slope], equal):
        x = (3 * torch.randn(5, 4, 7, device=device)).requires_grad_()
        leaves = [p.clone().requires_grad_() for p in params]
        y = lk.pwlu(x, *leaves, backend=backend)
        y.backward(torch.randn_like(y))
        for name, t in zip(("output", "grad_input", *lk.pwlu.param_names), (y, x.grad, *(p.grad for p in leaves))):
            assert torch.isfinite(t).all(), f"{name} has NaN or inf with crossed bounds"


@pytest.mark.parametrize("backend", lk.available_backends())
def test_nan_input_gives_nan_output_only_there(backend):
    device = backend_device(backend) if backend != "reference" else torch.device("cpu")
    x = torch.randn(4, 3, 5, device=device)
    x[1, 2, 3] = float("nan")
    y = lk.pwlu(x, *pwlu_params(3, "N16", device=device), backend=backend)
    assert y[1, 2, 3].isnan(), "NaN input did not give NaN"
    y[1, 2, 3] = 0
    assert torch.isfinite(y).all(), "NaN leaked into other outputs"


def _fill_statistics(module, batches, means, stds, channel_dim=1):
    for _ in range(batches):
        x = torch.randn(64, len(means), 8) * stds[None, :, None] + means[None, :, None]
        if channel_dim == -1:
            x = x.transpose(1, 2).contiguous()
        y = module(x)
    return x, y


def test_phase_one_is_relu_and_realignment_sets_what_the_paper_says():
    means, stds = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.5, 3.0])
    module = lk.PWLU(3, intervals=8, statistics_steps=60)
    x, y = _fill_statistics(module, 59, means, stds)
    assert torch.equal(y, torch.relu(x)), "phase I is not relu"
    assert not module.realigned and "phase=I (59/60 steps)" in repr(module)
    _fill_statistics(module, 1, means, stds)
    assert module.realigned, "no realignment after statistics_steps training forwards"
    # Momentum 0.1 from (0, 1): after 60 steps the statistics are within a few percent.
    torch.testing.assert_close(module.running_mean, means, atol=0.1, rtol=0, msg="running mean")
    torch.testing.assert_close(module.running_std, stds, atol=0.1, rtol=0.05, msg="running std")
    mean, std = module.running_mean, module.running_std
    torch.testing.assert_close(module.left_bound.data, mean - 3 * std, msg="B_L = mean - 3 std")
    torch.testing.assert_close(module.right_bound.data, mean + 3 * std, msg="B_R = mean + 3 std")
    assert torch.equal(module.left_slope.data, torch.zeros(3)), "K_L = 0"
    assert torch.equal(module.right_slope.data, torch.ones(3)), "K_R = 1"
    knots = (mean - 3 * std)[:, None] + torch.arange(9) * (6 * std / 8)[:, None]
    torch.testing.assert_close(module.points.data, torch.relu(knots), msg="points on relu")
    # Right after realignment the unit is relu at every knot and beyond the bounds.
    probe = torch.cat([knots.T, (mean - 10 * std)[None], (mean + 10 * std)[None]])
    torch.testing.assert_close(module(probe), torch.relu(probe), msg="realigned unit at the knots")


def test_shared_statistics_and_channels_last_axis():
    module = lk.PWLU(intervals=4, statistics_steps=1, momentum=1.0, channel_dim=-1)
    x = torch.randn(32, 8, 5) * 2 + 1
    module(x)
    torch.testing.assert_close(module.running_mean, x.mean().reshape(1), msg="shared mean")
    torch.testing.assert_close(module.running_std, x.std(unbiased=False).reshape(1), msg="shared std")
    assert module.left_bound.shape == (1,) and module.points.shape == (1, 5)


def test_training_after_realignment_changes_all_five_parameter_groups():
    torch.manual_seed(0)
    module = lk.PWLU(4, intervals=16, statistics_steps=5)
    _fill_statistics(module, 5, torch.zeros(4), torch.ones(4))
    assert module.realigned
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    for _ in range(5):
        x = 4 * torch.randn(64, 4, 8)  # wide enough to reach both sides of the bounds
        loss = (module(x) - torch.tanh(x)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, p in module.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change in training"


def test_state_dict_keeps_phase_and_statistics():
    module = lk.PWLU(3, intervals=4, statistics_steps=3)
    _fill_statistics(module, 2, torch.zeros(3), torch.ones(3))
    fresh = lk.PWLU(3, intervals=4, statistics_steps=3)
    fresh.load_state_dict(module.state_dict())
    assert fresh._steps == 2 and not fresh.realigned
    _fill_statistics(fresh, 1, torch.zeros(3), torch.ones(3))
    assert fresh.realigned, "phase I did not resume where the state_dict left it"
    reloaded = lk.PWLU(3, intervals=4, statistics_steps=3)
    reloaded.load_state_dict(fresh.state_dict())
    x = torch.randn(2, 3, 4)
    assert reloaded._realigned and torch.equal(reloaded(x), fresh(x)), "phase II lost in the state_dict round trip"


def test_realign_by_hand_and_bad_arguments():
    module = lk.PWLU(2, intervals=4)
    module.realign()  # from the initial statistics: mean 0, std 1
    assert module.realigned
    torch.testing.assert_close(module.left_bound.data, torch.full((2,), -3.0))
    for kwargs, pattern in [(dict(channels=0), "channels must be >= 1"), (dict(intervals=0), "intervals must be"),
                            (dict(statistics_steps=0), "statistics_steps must be")]:
        with pytest.raises(ValueError, match=pattern):
            lk.PWLU(**kwargs)


@pytest.mark.skipif(not KERNEL_BACKENDS, reason="no kernel backend")
def test_torch_compile_module_in_both_phases():
    torch._dynamo.reset()
    module = lk.PWLU(3, intervals=8, statistics_steps=2)
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randn(4, 3, 5)
    for _ in range(2):
        assert torch.equal(compiled(x), torch.relu(x))
    assert module.realigned
    torch.testing.assert_close(compiled(x), module(x), msg="compiled phase II")


@pytest.mark.parametrize("backend", [b for b in ("cpu", "cuda") if b in KERNEL_BACKENDS])
def test_cpp_backends_name_their_interval_limit(backend):
    device = backend_device(backend)
    x = torch.randn(2, 3, 4, device=device)
    with pytest.raises(ValueError, match=r"serve 1 to 64 intervals, got N = 65 .*the triton and reference"):
        lk.pwlu(x, *pwlu_params(3, "N65", device=device), backend=backend)
