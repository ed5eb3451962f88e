"""``torch.nn.Module`` wrappers of the activations."""

import torch
from torch import nn

from . import functional


class LSLU(nn.Module):
    """Pointwise learnable series linear unit (SPEC.md 1.1): ``S`` stages of relu and affine.

    ``channels=None`` shares ``theta``/``omega`` (shape ``(S, 1)``) over all
    channels, as the paper's official layer does; an int gives them shape
    ``(S, channels)``. Initialised to ``theta = 1, omega = 0``, where the unit
    equals ReLU, so it can replace a ReLU in a pretrained network.
    """

    def __init__(self, channels: int | None = None, num_stages: int = 3, *, channel_dim: int = 1,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"LSLU: num_stages must be >= 1, got {num_stages}")
        if channels is not None and channels < 1:
            raise ValueError(f"LSLU: channels must be >= 1 or None (shared), got {channels}")
        shape = (num_stages, 1 if channels is None else channels)
        self.channels = channels
        self.channel_dim = channel_dim
        self.backend = backend
        self.theta = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))
        self.omega = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.lslu(x, self.theta, self.omega, channel_dim=self.channel_dim, backend=self.backend)

    def extra_repr(self) -> str:
        channels = "shared" if self.channels is None else f"channels={self.channels}"
        return f"{channels}, num_stages={self.theta.shape[0]}, channel_dim={self.channel_dim}"
