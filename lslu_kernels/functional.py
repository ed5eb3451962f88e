"""The public activation functions: each one is its description handed to the dispatch layer.

Each ``define(Activation(...))`` here is the op's one description: the dispatch
layer, the recorder, the optimizer groups, the conversion, the plots and the
benchmarks read it from ``registry`` (README, "Adding an activation").
"""

import torch

from . import reference
from ._dispatch import Activation, define


def _check_lslu_params(theta, omega):
    if theta.shape != omega.shape:
        raise ValueError(f"lslu: theta and omega must have the same shape (S, C) or (S, 1), "
                         f"got {tuple(theta.shape)} and {tuple(omega.shape)}")
    if theta.shape[0] < 1:
        raise ValueError("lslu: theta and omega need at least one stage (S >= 1), got S = 0")


def _lslu_benchmark_params(stages):
    def make(channels, device):  # a little away from the identity
        return [1.0 + 0.1 * torch.randn(stages, channels, device=device),
                0.1 * torch.randn(stages, channels, device=device)]
    return make


lslu = define(Activation(
    name="lslu",
    params=("theta", "omega"),
    param_ndims=(2, 2),
    param_channel_axis=(1, 1),
    reference=reference.lslu,
    check_params=_check_lslu_params,
    trajectory_panels=(("θ (theta)", ("theta",)), ("ω (omega)", ("omega",))),
    benchmarks=(("S=1", _lslu_benchmark_params(1)), ("S=3", _lslu_benchmark_params(3))),
))
lslu.__doc__ = """Learnable series linear unit (SPEC.md 1.1).

    lslu(x, theta, omega, *, channel_dim=1, backend=None)

``theta`` and ``omega`` have shape ``(S, C)`` (per channel, ``C =
x.shape[channel_dim]``) or ``(S, 1)`` (shared by all channels). ``backend``
is one of :func:`lslu_kernels.available_backends`; ``None`` takes the fastest
for ``x``'s device, or ``$LSLU_KERNELS_BACKEND`` when set.
"""


def _check_pvlu_params(alpha, beta):
    if alpha.shape != beta.shape:
        raise ValueError(f"pvlu: alpha and beta must have the same shape (C,) or (1,), "
                         f"got {tuple(alpha.shape)} and {tuple(beta.shape)}")


def _pvlu_benchmark_params(channels, device):
    return [0.1 * torch.randn(channels, device=device), 1.0 + 0.1 * torch.randn(channels, device=device)]


pvlu = define(Activation(
    name="pvlu",
    params=("alpha", "beta"),
    param_ndims=(1, 1),
    param_channel_axis=(0, 0),
    reference=reference.pvlu,
    check_params=_check_pvlu_params,
    trajectory_panels=(("α (alpha)", ("alpha",)), ("β (beta)", ("beta",))),
    benchmarks=(("", _pvlu_benchmark_params),),
))
pvlu.__doc__ = """Parametric variational linear unit (SPEC.md 1.2): ``relu(x) + alpha * sin(beta * x)``.

    pvlu(x, alpha, beta, *, channel_dim=1, backend=None)

``alpha`` and ``beta`` have shape ``(C,)`` or ``(1,)`` (shared). With
``alpha = 0`` it is exactly ReLU and ``alpha`` still gets a gradient.
"""


def _check_pwlu_params(points, left_bound, right_bound, left_slope, right_slope):
    if points.shape[1] < 2:
        raise ValueError(f"pwlu: points must have shape (C, N+1) with N >= 1 intervals, got {tuple(points.shape)}")


def _pwlu_curve_range(params):
    """The bounds of every channel, a quarter of their span wider on each side."""
    left, right = min(params["left_bound"]), max(params["right_bound"])
    margin = 0.25 * (right - left)
    return left - margin, right + margin


def _pwlu_knots(params):
    """The table's N + 1 points at their knots, per channel."""
    points = torch.tensor(params["points"], dtype=torch.float64)
    left, right = (torch.tensor(params[p], dtype=torch.float64)[:, None] for p in ("left_bound", "right_bound"))
    return left + (right - left) * torch.linspace(0, 1, points.shape[1], dtype=torch.float64), points


def _pwlu_benchmark_params(intervals):
    def make(channels, device):  # realigned on a standard normal input, then perturbed
        knots = torch.linspace(-3, 3, intervals + 1, device=device)
        points = torch.relu(knots).expand(channels, -1) + 0.05 * torch.randn(channels, intervals + 1, device=device)
        return [points, torch.full((channels,), -3.0, device=device), torch.full((channels,), 3.0, device=device),
                0.05 * torch.randn(channels, device=device), 1.0 + 0.05 * torch.randn(channels, device=device)]
    return make


pwlu = define(Activation(
    name="pwlu",
    params=("points", "left_bound", "right_bound", "left_slope", "right_slope"),
    param_ndims=(2, 1, 1, 1, 1),
    param_channel_axis=(0, 0, 0, 0, 0),
    reference=reference.pwlu,
    check_params=_check_pwlu_params,
    # The table of points is too many lines as trajectories: its knots are marked on the curve.
    trajectory_panels=(("bounds B_L, B_R", ("left_bound", "right_bound")),
                       ("slopes K_L, K_R", ("left_slope", "right_slope"))),
    curve_range=_pwlu_curve_range,
    curve_marks=_pwlu_knots,
    benchmarks=(("N=16", _pwlu_benchmark_params(16)),),
))
pwlu.__doc__ = """Piecewise linear unit (SPEC.md 1.3): ``N`` equal intervals between the bounds, linear beyond.

    pwlu(x, points, left_bound, right_bound, left_slope, right_slope, *, channel_dim=1, backend=None)

``points`` has shape ``(C, N+1)`` (or ``(1, N+1)`` shared); the bounds and
slopes ``(C,)`` (or ``(1,)``). See :func:`lslu_kernels.reference.pwlu` for the
rules at crossed bounds, NaN and infinities.
"""


# The paper's full layer without its BN, fused (lslu_kernels/fused.py): not an activation, so not
# registered with the activations' registry.
from .fused import lslu_dwconv  # noqa: E402  (fused imports _dispatch like the definitions above)
