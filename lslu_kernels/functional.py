"""The public activation functions: each one is its description handed to the dispatch layer.

Adding an activation: its reference in ``reference.py``, its kernels in
``triton_kernels/<name>.py`` (``<name>_forward`` / ``<name>_backward``), and
one ``define(Activation(...))`` here.
"""

from . import reference
from ._dispatch import Activation, define


def _check_lslu_params(theta, omega):
    if theta.shape != omega.shape:
        raise ValueError(f"lslu: theta and omega must have the same shape (S, C) or (S, 1), "
                         f"got {tuple(theta.shape)} and {tuple(omega.shape)}")
    if theta.shape[0] < 1:
        raise ValueError("lslu: theta and omega need at least one stage (S >= 1), got S = 0")


lslu = define(Activation(
    name="lslu",
    params=("theta", "omega"),
    param_ndims=(2, 2),
    param_channel_axis=(1, 1),
    reference=reference.lslu,
    check_params=_check_lslu_params,
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


pvlu = define(Activation(
    name="pvlu",
    params=("alpha", "beta"),
    param_ndims=(1, 1),
    param_channel_axis=(0, 0),
    reference=reference.pvlu,
    check_params=_check_pvlu_params,
))
pvlu.__doc__ = """Parametric variational linear unit (SPEC.md 1.2): ``relu(x) + alpha * sin(beta * x)``.

    pvlu(x, alpha, beta, *, channel_dim=1, backend=None)

``alpha`` and ``beta`` have shape ``(C,)`` or ``(1,)`` (shared). With
``alpha = 0`` it is exactly ReLU and ``alpha`` still gets a gradient.
"""


def _check_pwlu_params(points, left_bound, right_bound, left_slope, right_slope):
    if points.shape[1] < 2:
        raise ValueError(f"pwlu: points must have shape (C, N+1) with N >= 1 intervals, got {tuple(points.shape)}")


pwlu = define(Activation(
    name="pwlu",
    params=("points", "left_bound", "right_bound", "left_slope", "right_slope"),
    param_ndims=(2, 1, 1, 1, 1),
    param_channel_axis=(0, 0, 0, 0, 0),
    reference=reference.pwlu,
    check_params=_check_pwlu_params,
))
pwlu.__doc__ = """Piecewise linear unit (SPEC.md 1.3): ``N`` equal intervals between the bounds, linear beyond.

    pwlu(x, points, left_bound, right_bound, left_slope, right_slope, *, channel_dim=1, backend=None)

``points`` has shape ``(C, N+1)`` (or ``(1, N+1)`` shared); the bounds and
slopes ``(C,)`` (or ``(1,)``). See :func:`lslu_kernels.reference.pwlu` for the
rules at crossed bounds, NaN and infinities.
"""
