"""LSLU-specific properties (SPEC.md 1.1); what every op must do is in test_activations.py."""

import parity
import pytest
import torch
from conftest import KERNEL_BACKENDS, backend_device
from ops import lslu_params

import lslu_kernels as lk


def make_params(num_stages, channels, *, shared=False, dtype=torch.float32, device="cpu"):
    return lslu_params(channels, f"S{num_stages}", shared=shared, dtype=dtype, device=device)


def forward_backward(x, params, grad_output, **kwargs):
    return parity.forward_backward(lk.lslu, x, params, grad_output, **kwargs)


def test_identity_at_init(kernel_backend):
    """theta = 1, omega = 0 is exactly relu, and relu'(0) = 0."""
    device = backend_device(kernel_backend)
    x = torch.tensor([[-2.0, -0.0, 0.0, 1e-30, 3.0]], device=device).requires_grad_()
    module = lk.LSLU(backend=kernel_backend).to(device)
    y = module(x)
    assert torch.equal(y, torch.relu(x.detach())), f"output {y}"
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]], device=device)), f"grad_input {x.grad}"


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


@pytest.mark.parametrize("backend", [b for b in ("cpu", "cuda") if b in KERNEL_BACKENDS])
def test_cpp_backends_name_their_stage_limit(backend):
    device = backend_device(backend)
    x = torch.randn(2, 3, 4, device=device)
    theta, omega = make_params(9, 3, device=device)
    with pytest.raises(ValueError, match=r"serve 1 to 8 stages, got S = 9; the triton and reference"):
        lk.lslu(x, theta, omega, backend=backend)
