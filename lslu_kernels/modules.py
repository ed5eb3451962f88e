"""``torch.nn.Module`` wrappers of the activations, their lazy (channel-count-inferring) variants,
and the paper's full LSLU layer."""

import warnings

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from . import functional, fused, registry


@registry.activation_module("lslu", conversion="shared")
class LSLU(nn.Module):
    """Pointwise learnable series linear unit (SPEC.md 1.1): ``S`` stages of relu and affine.

    ``channels=None`` shares ``theta``/``omega`` (shape ``(S, 1)``) over all
    channels, as the paper's official layer does; an int gives them shape
    ``(S, channels)``. Initialised to ``theta = 1, omega = 0``, where the unit
    equals ReLU, so it can replace a ReLU in a pretrained network.

    ``inplace`` is accepted as by every torch and timm activation (timm builds
    ``act_layer(inplace=True)``); the unit always computes out of place, so it
    changes nothing.
    """

    def __init__(self, channels: int | None = None, num_stages: int = 3, *, channel_dim: int = 1,
                 backend: str | None = None, inplace: bool = False, device=None, dtype=None):
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"LSLU: num_stages must be >= 1, got {num_stages}")
        if channels is not None and channels < 1:
            raise ValueError(f"LSLU: channels must be >= 1 or None (shared), got {channels}")
        shape = (num_stages, 1 if channels is None else channels)
        self.channels = channels
        self.channel_dim = channel_dim
        self.backend = backend
        self.inplace = inplace  # accepted, unused: the unit is out of place
        self.theta = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.omega = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """``theta = 1``, ``omega = 0``: the unit is ReLU."""
        self.theta.fill_(1.0)
        self.omega.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.lslu(x, self.theta, self.omega, channel_dim=self.channel_dim, backend=self.backend)

    def extra_repr(self) -> str:
        channels = "shared" if self.channels is None else f"channels={self.channels}"
        return f"{channels}, num_stages={self.theta.shape[0]}, channel_dim={self.channel_dim}"


@registry.activation_module("pvlu", conversion="shared")
class PVLU(nn.Module):
    """Parametric variational linear unit (SPEC.md 1.2): ``relu(x) + alpha * sin(beta * x)``.

    ``channels=None`` shares one ``alpha`` and one ``beta`` (shape ``(1,)``) over all
    channels; an int gives them shape ``(channels,)``. Defaults ``alpha = 0``,
    ``beta = 1``: the unit starts as ReLU exactly, so it can replace the ReLUs of a
    pretrained network for fine-tuning, and ``alpha`` still gets a gradient
    (``sum g * sin(beta * x)``) from the first step (``beta`` moves once ``alpha`` does).
    ``inplace`` is accepted and changes nothing, as for :class:`LSLU`.
    """

    def __init__(self, channels: int | None = None, *, alpha: float = 0.0, beta: float = 1.0, channel_dim: int = 1,
                 backend: str | None = None, inplace: bool = False, device=None, dtype=None):
        super().__init__()
        if channels is not None and channels < 1:
            raise ValueError(f"PVLU: channels must be >= 1 or None (shared), got {channels}")
        shape = (1 if channels is None else channels,)
        self.channels = channels
        self.channel_dim = channel_dim
        self.backend = backend
        self.inplace = inplace  # accepted, unused: the unit is out of place
        self.alpha_init, self.beta_init = float(alpha), float(beta)
        self.alpha = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.beta = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.alpha.fill_(self.alpha_init)
        self.beta.fill_(self.beta_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.pvlu(x, self.alpha, self.beta, channel_dim=self.channel_dim, backend=self.backend)

    def extra_repr(self) -> str:
        channels = "shared" if self.channels is None else f"channels={self.channels}"
        return f"{channels}, channel_dim={self.channel_dim}"


@registry.activation_module("pwlu", conversion="shared", realigned=lambda module: bool(module.realigned))
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
    ``inplace`` is accepted and changes nothing, as for :class:`LSLU`.
    """

    # Smallest standard deviation realignment uses: constant inputs still get N
    # intervals of positive width.
    MIN_STD = 1e-5

    def __init__(self, channels: int | None = None, intervals: int = 16, *, statistics_steps: int = 100,
                 momentum: float = 0.1, sync_statistics: bool = True, channel_dim: int = 1,
                 backend: str | None = None, inplace: bool = False, device=None, dtype=None):
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
        self.sync_statistics = sync_statistics
        self.channel_dim, self.backend = channel_dim, backend
        self.inplace = inplace  # accepted, unused: the unit is out of place
        self.left_bound = nn.Parameter(torch.empty(rows, **factory))
        self.right_bound = nn.Parameter(torch.empty(rows, **factory))
        self.left_slope = nn.Parameter(torch.empty(rows, **factory))
        self.right_slope = nn.Parameter(torch.empty(rows, **factory))
        self.points = nn.Parameter(torch.empty(rows, intervals + 1, **factory))
        self.register_buffer("running_mean", torch.empty(rows, **factory))
        self.register_buffer("running_std", torch.empty(rows, **factory))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("realigned", torch.zeros((), dtype=torch.bool, device=device))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """The state at construction: phase I, fresh statistics, parameters describing ReLU."""
        # Until realignment the table describes ReLU on [-3, 3], the bounds of a standard normal input.
        self.left_bound.fill_(-3.0)
        self.right_bound.fill_(3.0)
        self.left_slope.zero_()
        self.right_slope.fill_(1.0)
        self.running_mean.zero_()
        self.running_std.fill_(1.0)
        self.steps.zero_()
        self.realigned.fill_(False)
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

    @torch.no_grad()
    def _average_statistics_over_processes(self):
        """Under torch.distributed, every process tracked its own batches: realign all from their mean.

        Only on the automatic switch, which every process of the default group reaches at the
        same training step under data parallelism (a collective called by some processes only
        would hang): ``sync_statistics=False`` when the unit does not train on every process.
        """
        if self.sync_statistics and torch.distributed.is_available() and torch.distributed.is_initialized():
            for statistic in (self.running_mean, self.running_std):
                torch.distributed.all_reduce(statistic)
                statistic /= torch.distributed.get_world_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._realigned:
            if not self.training:
                return torch.relu(x)
            self._track(x)
            y = torch.relu(x)
            if self._steps >= self.statistics_steps:
                self._average_statistics_over_processes()
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


# Lazy variants: the channel count is read from the first input (nn.LazyLinear's
# pattern). They are what `convert_activations(..., per_channel=True)` puts in
# place of a ReLU, whose width it cannot know. The parameters materialise on
# the device and with the dtype they carry (given at construction, then moved
# by `.to()` like any parameter), and the module becomes the plain class.


def _channels_of(name: str, x: torch.Tensor, channel_dim: int) -> int:
    if not -x.dim() <= channel_dim < x.dim():
        raise IndexError(f"{name}: channel_dim={channel_dim} is out of range for the first input, "
                         f"which has {x.dim()} axes; the channel count cannot be inferred")
    return x.shape[channel_dim]


@registry.activation_module("lslu", conversion="per_channel")
class LazyLSLU(LazyModuleMixin, LSLU):
    """:class:`LSLU` with per-channel ``theta``/``omega`` whose channel count comes from the first input."""

    cls_to_become = LSLU

    def __init__(self, num_stages: int = 3, *, channel_dim: int = 1, backend: str | None = None,
                 inplace: bool = False, device=None, dtype=None):
        super().__init__(None, num_stages, channel_dim=channel_dim, backend=backend, inplace=inplace, device=device,
                         dtype=dtype)
        self.num_stages = num_stages
        self.theta = UninitializedParameter(device=device, dtype=dtype)
        self.omega = UninitializedParameter(device=device, dtype=dtype)

    def reset_parameters(self):
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, x: torch.Tensor):
        if self.has_uninitialized_params():
            channels = _channels_of("LazyLSLU", x, self.channel_dim)
            self.theta.materialize((self.num_stages, channels))
            self.omega.materialize((self.num_stages, channels))
            self.reset_parameters()
        self.channels = self.theta.shape[1]

    def extra_repr(self) -> str:
        return f"channels=<inferred>, num_stages={self.num_stages}, channel_dim={self.channel_dim}"


@registry.activation_module("pvlu", conversion="per_channel")
class LazyPVLU(LazyModuleMixin, PVLU):
    """:class:`PVLU` with per-channel ``alpha``/``beta`` whose channel count comes from the first input."""

    cls_to_become = PVLU

    def __init__(self, *, alpha: float = 0.0, beta: float = 1.0, channel_dim: int = 1, backend: str | None = None,
                 inplace: bool = False, device=None, dtype=None):
        super().__init__(None, alpha=alpha, beta=beta, channel_dim=channel_dim, backend=backend, inplace=inplace,
                         device=device, dtype=dtype)
        self.alpha = UninitializedParameter(device=device, dtype=dtype)
        self.beta = UninitializedParameter(device=device, dtype=dtype)

    def reset_parameters(self):
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, x: torch.Tensor):
        if self.has_uninitialized_params():
            channels = _channels_of("LazyPVLU", x, self.channel_dim)
            self.alpha.materialize((channels,))
            self.beta.materialize((channels,))
            self.reset_parameters()
        self.channels = self.alpha.shape[0]

    def extra_repr(self) -> str:
        return f"channels=<inferred>, channel_dim={self.channel_dim}"


@registry.activation_module("pwlu", conversion="per_channel")
class LazyPWLU(LazyModuleMixin, PWLU):
    """:class:`PWLU` with per-channel parameters and statistics whose channel count comes from the first input."""

    cls_to_become = PWLU
    _per_channel = ("left_bound", "right_bound", "left_slope", "right_slope", "running_mean", "running_std")

    def __init__(self, intervals: int = 16, *, statistics_steps: int = 100, momentum: float = 0.1,
                 sync_statistics: bool = True, channel_dim: int = 1, backend: str | None = None,
                 inplace: bool = False, device=None, dtype=None):
        super().__init__(None, intervals, statistics_steps=statistics_steps, momentum=momentum,
                         sync_statistics=sync_statistics, channel_dim=channel_dim, backend=backend, inplace=inplace,
                         device=device, dtype=dtype)
        for name in ("left_bound", "right_bound", "left_slope", "right_slope", "points"):
            setattr(self, name, UninitializedParameter(device=device, dtype=dtype))
        for name in ("running_mean", "running_std"):
            setattr(self, name, UninitializedBuffer(device=device, dtype=dtype))

    def reset_parameters(self):
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, x: torch.Tensor):
        if self.has_uninitialized_params():
            channels = _channels_of("LazyPWLU", x, self.channel_dim)
            for name in self._per_channel:
                getattr(self, name).materialize((channels,))
            self.points.materialize((channels, self.intervals + 1))
            self.reset_parameters()
        self.channels = self.points.shape[0]

    def extra_repr(self) -> str:
        return f"channels=<inferred>, intervals={self.intervals}, channel_dim={self.channel_dim}"


# Its series is an LSLU: recorded as one, and kept out of weight decay (its conv and BN are not).
@registry.activation_module("lslu")
class LearnableSerieslinearUnit(nn.Module):
    """The paper's full LSLU layer (SPEC.md 1.1): ``BN(depthwise_conv(lslu(x)))`` on ``(N, C, H, W)`` inputs.

    The official class's name, constructor and conventions: ``dim`` channels,
    ``num_activations`` = ``S`` stages, a depthwise ``(2S+1) x (2S+1)`` convolution
    (``weight``, truncated normal with std 0.02, padding ``S``) and
    ``BatchNorm2d(dim, eps=1e-6)`` (``bn``); ``deploy=True`` builds the folded form
    (``bias`` instead of ``bn``). The series runs through the project's kernels:
    ``shared=True`` has one ``theta``/``omega`` per stage (shape ``(S, 1)``, the
    official layer), ``shared=False`` one per stage and channel (``(S, dim)``).

    :meth:`switch_to_deploy` folds BN into the convolution and keeps the series, so
    eval outputs do not change. Official checkpoints load as they are (see
    :meth:`_load_from_state_dict`); :func:`official_state_dict` writes one back.
    """

    def __init__(self, dim: int, num_activations: int = 3, deploy: bool = False, *, shared: bool = True,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if dim < 1:
            raise ValueError(f"LearnableSerieslinearUnit: dim must be >= 1, got {dim}")
        if num_activations < 1:
            raise ValueError(f"LearnableSerieslinearUnit: num_activations must be >= 1, got {num_activations}")
        factory = dict(device=device, dtype=dtype)
        self.dim, self.num_activations, self.deploy = dim, num_activations, deploy
        self.shared, self.backend = shared, backend
        size = 2 * num_activations + 1
        # randn first, as the official code does, so the same seed draws the same weight on CPU.
        self.weight = nn.Parameter(torch.randn(dim, 1, size, size, **factory))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.theta = nn.Parameter(torch.ones(num_activations, 1 if shared else dim, **factory))
        self.omega = nn.Parameter(torch.zeros(num_activations, 1 if shared else dim, **factory))
        if deploy:
            self.bias = nn.Parameter(torch.zeros(dim, **factory))
        else:
            self.register_parameter("bias", None)
            self.bn = nn.BatchNorm2d(dim, eps=1e-6, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # conv2d would take (C, H, W) as unbatched while the series reads axis 1 as channels
            raise ValueError(f"LearnableSerieslinearUnit: x must be (N, C, H, W), got shape {tuple(x.shape)}")
        # The series and the convolution run as one fused op (lslu_kernels/fused.py; unfused on a
        # backend without it). Deploy form: the folded bias; eval: BN's running statistics folded
        # into the weight and bias the same way; training: BN on the batch statistics, fused too
        # where the backend has the fused kernels, so that backward keeps only x.
        if self.deploy:
            return functional.lslu_dwconv(x, self.theta, self.omega, self.weight, self.bias, backend=self.backend)
        bn = self.bn
        if not bn.training and bn.running_mean is not None:
            weight, bias = self._bn_folded()
            return functional.lslu_dwconv(x, self.theta, self.omega, weight, bias, backend=self.backend)
        backend = fused.fused_backend(self.backend, x.device)
        if backend is not None and x.dim() == 4 and x.shape[1] == self.dim:
            return fused.lslu_dwconv_batch_norm(x, self.theta, self.omega, self.weight, bn, backend)
        return bn(functional.lslu_dwconv(x, self.theta, self.omega, self.weight, backend=self.backend))

    def _bn_folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias of the convolution with eval-mode BN folded in (differentiable)."""
        bn = self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = -bn.running_mean * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        return self.weight * scale.to(self.weight.dtype).reshape(-1, 1, 1, 1), bias.to(self.weight.dtype)

    @torch.no_grad()
    def switch_to_deploy(self):
        """Fold BN (its running statistics and affine) into the convolution's weight and a bias.

        Computed in float64 and rounded once to the weight's dtype. The series is
        kept (the official code drops it: README, "Official checkpoints").
        Does nothing on a layer already in deploy form.
        """
        if self.deploy:
            return
        bn = self.bn
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = self.weight.double() * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias.double() - bn.running_mean.double() * scale
        self.weight.copy_(weight)
        self.bias = nn.Parameter(bias.to(self.weight.dtype))
        del self.bn
        self.deploy = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Accept the official keys: ``alphas``/``biases`` (vectors of length ``dim`` whose first
        ``S`` entries are the stages' theta and omega) become ``theta``/``omega``.

        ``weight``, ``bn.*`` and ``bias`` have the same names and shapes in both.
        With ``shared=False`` each stage's value is given to every channel (the same
        function). An official deploy checkpoint still holds the trained series in
        ``alphas``/``biases``: loaded into a ``deploy=True`` layer it gives the official
        model's output before ``switch_to_deploy``, not the official deploy forward's
        (which drops the series and scales the weight by ``alphas``); a warning says
        so when the two differ.
        """
        keys = {name: prefix + name for name in ("alphas", "biases", "theta", "omega")}
        if keys["alphas"] in state_dict or keys["biases"] in state_dict:
            message = self._official_to_series(state_dict, prefix, keys)
            if message is not None:
                error_msgs.append(message)
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _official_to_series(self, state_dict, prefix, keys) -> str | None:
        """Replace the official keys in ``state_dict`` by ``theta``/``omega``; an error message, or None."""
        stages = self.num_activations
        if keys["alphas"] not in state_dict or keys["biases"] not in state_dict:
            return f"official checkpoint at {prefix!r}: needs both alphas and biases, found only one"
        if keys["theta"] in state_dict or keys["omega"] in state_dict:
            return f"checkpoint at {prefix!r} holds both the official alphas/biases and theta/omega"
        alphas, biases = state_dict.pop(keys["alphas"]), state_dict.pop(keys["biases"])
        for name, t in (("alphas", alphas), ("biases", biases)):
            if tuple(t.shape) != (self.dim,):
                return (f"official {prefix}{name} must have shape ({self.dim},) (dim) to load into "
                        f"LearnableSerieslinearUnit(dim={self.dim}), got {tuple(t.shape)}")
        if self.dim < stages:
            return (f"official {prefix}alphas has {self.dim} entries, fewer than num_activations={stages}: "
                    "the official layer cannot hold that many stages")
        width = 1 if self.shared else self.dim
        state_dict[keys["theta"]] = alphas[:stages].reshape(stages, 1).expand(stages, width)
        state_dict[keys["omega"]] = biases[:stages].reshape(stages, 1).expand(stages, width)
        official_deploy = prefix + "bias" in state_dict and prefix + "bn.weight" not in state_dict
        if official_deploy and not (bool((alphas == 1).all()) and bool((biases[:stages] == 0).all())):
            warnings.warn(f"official deploy checkpoint at {prefix!r}: its series is not the identity (or its "
                          "alphas scale the weight), so the official deploy forward, which drops the series, "
                          "computed something else than this layer, which keeps it and equals the official "
                          "model before switch_to_deploy", stacklevel=4)
        return None

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_activations={self.num_activations}, deploy={self.deploy}, "
                f"shared={self.shared}")


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with each :class:`LearnableSerieslinearUnit`'s series under the official
    names (``alphas``/``biases`` of length ``dim``, stage values first, the rest 1 and 0), so the
    official code loads it.

    ``model.state_dict()`` itself keeps this project's names (``theta``/``omega``): its
    tensors are the module's own, which in-place loaders such as
    ``torch.distributed.checkpoint`` rely on. Raises ``ValueError`` for the layers the
    official form cannot express: ``shared=False``, ``dim < num_activations``, and
    deploy form (the official deploy forward drops the series; export before
    ``switch_to_deploy``).
    """
    state = model.state_dict()
    for name, module in model.named_modules():
        if not isinstance(module, LearnableSerieslinearUnit):
            continue
        prefix = f"{name}." if name else ""
        where = f"LearnableSerieslinearUnit at {name or '<root>'!r}"
        if module.deploy:
            raise ValueError(f"{where} is in deploy form, which the official code cannot express "
                             "(its deploy forward drops the series); export before switch_to_deploy")
        if not module.shared:
            raise ValueError(f"{where} has per-channel theta/omega (shared=False); the official layer "
                             "has one value per stage")
        stages = module.num_activations
        if module.dim < stages:
            raise ValueError(f"{where} has dim={module.dim} < num_activations={stages}; the official "
                             "layer stores the stages in a vector of length dim")
        theta, omega = state.pop(prefix + "theta"), state.pop(prefix + "omega")
        alphas = torch.ones(module.dim, dtype=theta.dtype, device=theta.device)
        biases = torch.zeros(module.dim, dtype=omega.dtype, device=omega.device)
        alphas[:stages], biases[:stages] = theta[:, 0], omega[:, 0]
        state[prefix + "alphas"], state[prefix + "biases"] = alphas, biases
    return state
