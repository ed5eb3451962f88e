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


class PVLU(nn.Module):
    """Parametric variational linear unit (SPEC.md 1.2): ``relu(x) + alpha * sin(beta * x)``.

    ``channels=None`` shares one ``alpha`` and one ``beta`` (shape ``(1,)``) over all
    channels; an int gives them shape ``(channels,)``. Defaults ``alpha = 0``,
    ``beta = 1``: the unit starts as ReLU exactly, so it can replace the ReLUs of a
    pretrained network for fine-tuning, and ``alpha`` still gets a gradient
    (``sum g * sin(beta * x)``) from the first step (``beta`` moves once ``alpha`` does).
    """

    def __init__(self, channels: int | None = None, *, alpha: float = 0.0, beta: float = 1.0, channel_dim: int = 1,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if channels is not None and channels < 1:
            raise ValueError(f"PVLU: channels must be >= 1 or None (shared), got {channels}")
        shape = (1 if channels is None else channels,)
        self.channels = channels
        self.channel_dim = channel_dim
        self.backend = backend
        self.alpha = nn.Parameter(torch.full(shape, float(alpha), device=device, dtype=dtype))
        self.beta = nn.Parameter(torch.full(shape, float(beta), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.pvlu(x, self.alpha, self.beta, channel_dim=self.channel_dim, backend=self.backend)

    def extra_repr(self) -> str:
        channels = "shared" if self.channels is None else f"channels={self.channels}"
        return f"{channels}, channel_dim={self.channel_dim}"


class PWLU(nn.Module):
    """Piecewise linear unit (SPEC.md 1.3) with the paper's two training phases.

    Phase I (the first ``statistics_steps`` training forwards): the unit is ReLU
    and tracks the running mean and standard deviation of its input (momentum
    0.1 toward each batch's value; per channel when ``channels`` is given, else
    over all elements). Then :meth:`realign` sets ``B_L = mean - 3 std``,
    ``B_R = mean + 3 std``, slopes ``K_L = 0`` and ``K_R = 1`` and the points on
    ReLU, and phase II trains all five parameter groups. ``realign()`` may also
    be called by hand at any time. The phase, the step count and the statistics
    are buffers, so they survive ``state_dict`` round trips.

    Defaults: ``intervals=16`` as in the paper; ``statistics_steps=100`` (a few
    hundred batches are enough for momentum-0.1 statistics to settle; the paper
    ties phase I to a share of training, so set it for your schedule).
    """

    # Smallest standard deviation realignment uses: constant inputs still get N
    # intervals of positive width.
    MIN_STD = 1e-5

    def __init__(self, channels: int | None = None, intervals: int = 16, *, statistics_steps: int = 100,
                 momentum: float = 0.1, channel_dim: int = 1, backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if channels is not None and channels < 1:
            raise ValueError(f"PWLU: channels must be >= 1 or None (shared), got {channels}")
        if intervals < 1:
            raise ValueError(f"PWLU: intervals must be >= 1, got {intervals}")
        if statistics_steps < 1:
            raise ValueError(f"PWLU: statistics_steps must be >= 1, got {statistics_steps}")
        rows = 1 if channels is None else channels
        factory = dict(device=device, dtype=dtype)
        self.channels, self.intervals = channels, intervals
        self.statistics_steps, self.momentum = statistics_steps, momentum
        self.channel_dim, self.backend = channel_dim, backend
        # Until realignment these describe ReLU on [-3, 3], the bounds of a standard normal input.
        self.left_bound = nn.Parameter(torch.full((rows,), -3.0, **factory))
        self.right_bound = nn.Parameter(torch.full((rows,), 3.0, **factory))
        self.left_slope = nn.Parameter(torch.zeros(rows, **factory))
        self.right_slope = nn.Parameter(torch.ones(rows, **factory))
        self.points = nn.Parameter(torch.empty(rows, intervals + 1, **factory))
        self.register_buffer("running_mean", torch.zeros(rows, **factory))
        self.register_buffer("running_std", torch.ones(rows, **factory))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("realigned", torch.zeros((), dtype=torch.bool, device=device))
        # Python mirrors of the two buffers above: forward branches on them without
        # reading a tensor, so torch.compile traces it without a graph break.
        self._steps, self._realigned = 0, False
        self._set_points_on_relu()

    @torch.no_grad()
    def _set_points_on_relu(self):
        width = (self.right_bound - self.left_bound) / self.intervals
        knots = self.left_bound[:, None] + torch.arange(self.intervals + 1, device=width.device) * width[:, None]
        self.points.copy_(torch.relu(knots))

    @torch.no_grad()
    def realign(self):
        """Bounds at mean ± 3 std of the tracked statistics, slopes 0 and 1, points on ReLU; phase II starts."""
        std = self.running_std.clamp_min(self.MIN_STD)
        self.left_bound.copy_(self.running_mean - 3 * std)
        self.right_bound.copy_(self.running_mean + 3 * std)
        self.left_slope.zero_()
        self.right_slope.fill_(1.0)
        self._set_points_on_relu()
        self.realigned.fill_(True)
        self._realigned = True

    @torch.no_grad()
    def _track(self, x: torch.Tensor):
        dim = self.channel_dim % x.dim()
        xs = x.detach().float()
        if self.channels is None:
            mean, std = xs.mean().reshape(1), xs.std(unbiased=False).reshape(1)
        else:
            others = [d for d in range(x.dim()) if d != dim]
            mean, std = xs.mean(dim=others), xs.std(dim=others, unbiased=False)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
        self.running_std.lerp_(std.to(self.running_std.dtype), self.momentum)
        self.steps.add_(1)
        self._steps += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._realigned:
            if not self.training:
                return torch.relu(x)
            self._track(x)
            y = torch.relu(x)
            if self._steps >= self.statistics_steps:
                self.realign()
            return y
        return functional.pwlu(x, self.points, self.left_bound, self.right_bound, self.left_slope,
                               self.right_slope, channel_dim=self.channel_dim, backend=self.backend)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._steps, self._realigned = int(self.steps), bool(self.realigned)

    def extra_repr(self) -> str:
        channels = "shared" if self.channels is None else f"channels={self.channels}"
        phase = "II (realigned)" if self._realigned else f"I ({self._steps}/{self.statistics_steps} steps)"
        return f"{channels}, intervals={self.intervals}, channel_dim={self.channel_dim}, phase={phase}"
