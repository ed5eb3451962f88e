"""How the tests make parameters for each activation: one entry per op.

Adding an op to the generic tests (test_activations.py) means adding its
:class:`OpCase` here. ``variants`` name parameter sets that matter for the op
(numbers of stages, exact zeros, table sizes); ``make_params`` returns the
parameters in call order, per channel or shared.
"""

import dataclasses
from collections.abc import Callable

import torch

import lslu_kernels as lk


@dataclasses.dataclass(frozen=True)
class OpCase:
    name: str
    fn: Callable[..., torch.Tensor]
    # make_params(channels, variant, *, shared, dtype, device) -> [param, ...]
    make_params: Callable[..., list[torch.Tensor]]
    variants: tuple[str, ...]
    # make_x(shape, params, channel_dim) -> float64 input for the parity tests.
    make_x: Callable[..., torch.Tensor] = lambda shape, params, channel_dim: randn_x(shape)
    # grad_input_scale(x, params, grad_output, channel_dim) -> float64 magnitude of the terms that the
    # input gradient sums per element, for ops where they can cancel (parity.check_parity); None: no sum.
    grad_input_scale: Callable[..., torch.Tensor] | None = None

    def __str__(self):
        return self.name


def randn_x(shape):
    return 2 * torch.randn(shape, dtype=torch.float64)


def _signs(shape):
    return torch.where(torch.rand(shape, dtype=torch.float64) < 0.3, -1.0, 1.0)


def lslu_params(channels, variant, *, shared=False, dtype=torch.float32, device="cpu"):
    """theta of both signs away from 0, omega of both signs (or exactly 0). Variants: S<n>[_omega_zero]."""
    stages = int(variant.split("_")[0][1:])
    shape = (stages, 1 if shared else channels)
    theta = (0.25 + 1.5 * torch.rand(shape, dtype=torch.float64)) * _signs(shape)
    omega = torch.zeros(shape, dtype=torch.float64) if variant.endswith("omega_zero") \
        else 0.5 * torch.randn(shape, dtype=torch.float64)
    return [theta.to(device, dtype), omega.to(device, dtype)]


def pvlu_params(channels, variant, *, shared=False, dtype=torch.float32, device="cpu"):
    """alpha of both signs (or exactly 0: ReLU), beta of both signs between 0.5 and 3."""
    shape = (1 if shared else channels,)
    alpha = torch.zeros(shape, dtype=torch.float64) if variant == "alpha_zero" \
        else 0.5 * torch.randn(shape, dtype=torch.float64)
    beta = (0.5 + 2.5 * torch.rand(shape, dtype=torch.float64)) * _signs(shape)
    return [alpha.to(device, dtype), beta.to(device, dtype)]


def pwlu_params(channels, variant, *, shared=False, dtype=torch.float32, device="cpu"):
    """Bounds around [-2, 2] (so inputs ~ 2 * randn land in all three regions), random points and slopes.

    Variants: N<n> (random table), N<n>_realigned (the state right after realignment:
    points on relu, slopes 0 and 1), N<n>_crossed (B_R < B_L).
    """
    intervals = int(variant.split("_")[0][1:])
    rows = 1 if shared else channels
    left = -2.0 + 0.5 * torch.rand(rows, dtype=torch.float64)
    right = 2.0 + 0.5 * torch.rand(rows, dtype=torch.float64)
    if variant.endswith("crossed"):
        left, right = right, left
    if variant.endswith("realigned"):
        knots = left[:, None] + torch.arange(intervals + 1, dtype=torch.float64) * ((right - left) / intervals)[:, None]
        points = torch.relu(knots)
        left_slope, right_slope = torch.zeros(rows, dtype=torch.float64), torch.ones(rows, dtype=torch.float64)
    else:
        points = torch.randn(rows, intervals + 1, dtype=torch.float64)
        left_slope = 0.5 * torch.randn(rows, dtype=torch.float64)
        right_slope = 1 + 0.5 * torch.randn(rows, dtype=torch.float64)
    return [t.to(device, dtype) for t in (points, left, right, left_slope, right_slope)]


def pwlu_x(shape, params, channel_dim):
    """2 * randn, kept 1e-3 intervals away from every knot of the table.

    At a knot the slope jumps: an input that a float32 kernel and the float64
    reference place on either side of it (a rounding apart) would differ by the
    jump, which says nothing about either. Exact knots are tested in test_pwlu.py.
    """
    x = randn_x(shape)
    points, left, right = (p.detach().cpu().double() for p in params[:3])
    view = [1] * len(shape)
    view[channel_dim] = -1
    left, right = left.reshape(view), right.reshape(view)
    width = (right - left).abs() / (points.shape[1] - 1)
    u = (x - left) / width
    near = (u - u.round()).abs() < 1e-3
    return torch.where(near, x + 2e-3 * width, x)


def _along(p, x, channel_dim):
    """Parameter ``p`` ((C,) or (1,)) as float64, shaped to broadcast along ``x``'s channel axis."""
    view = [1] * x.dim()
    view[channel_dim] = -1
    return p.detach().cpu().double().reshape(view)


def pvlu_grad_input_scale(x, params, grad_output, channel_dim):
    """|g| * (1 + |alpha * beta|): dL/dx = g * (1[x > 0] + alpha * beta * cos(beta * x)) cancels to ~0
    where alpha * beta * cos(beta * x) ~ -1, and float32 rounds at the size of those terms."""
    alpha, beta = (_along(p, x, channel_dim) for p in params)
    return grad_output.detach().cpu().double().abs() * (1 + (alpha * beta).abs())


OPS = [
    OpCase("lslu", lk.lslu, lslu_params, ("S1", "S3", "S3_omega_zero")),
    OpCase("pvlu", lk.pvlu, pvlu_params, ("random", "alpha_zero"), grad_input_scale=pvlu_grad_input_scale),
    OpCase("pwlu", lk.pwlu, pwlu_params, ("N16", "N1", "N64_realigned", "N16_crossed"), pwlu_x),
]
