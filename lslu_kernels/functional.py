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
